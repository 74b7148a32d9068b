//! The arguments of the tools: their JSON schemas, and the descriptions a
//! model reads for each field.

use std::time::Duration;

use locksmith_core::Code;
use locksmith_core::time::parse_duration;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::session::Outcome;

/// A duration: seconds as a number, or text such as "90s", "5m", "1h".
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Dur {
    /// Seconds.
    Seconds(f64),
    /// "30s", "5m", "2h", "forever" (waits only), "0".
    Text(String),
}

impl Dur {
    pub fn text(&self) -> String {
        match self {
            Dur::Seconds(s) => format!("{s}s"),
            Dur::Text(t) => t.clone(),
        }
    }
    /// `None` for "forever".
    pub fn parse(&self, what: &str) -> Result<Option<Duration>, Outcome> {
        let bad = |e: String| Outcome::new(Code::Invalid, format!("{what}: {e}"));
        match self {
            Dur::Seconds(s) if s.is_finite() && *s >= 0.0 && *s < 1e9 => {
                Ok(Some(Duration::from_secs_f64(*s)))
            }
            Dur::Seconds(s) => Err(bad(format!("{s} is not a number of seconds"))),
            Dur::Text(t) if t.trim() == "forever" => Ok(None),
            Dur::Text(t) => parse_duration(t.trim()).map(Some).map_err(bad),
        }
    }
}

/// What to do when a key is held.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Answer `busy` at once.
    FailFast,
    /// Queue fairly until granted or `wait` runs out (default `forever`).
    Wait,
    /// Take the lock over when its holder is stale, expired or dead
    /// (recorded as `stolen`); otherwise like fail-fast, or wait with `wait`.
    StealStale,
}

/// Arguments of `acquire`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AcquireArgs {
    /// Keys to lock, e.g. ["repo/acme"], ["task/42"] or an absolute folder
    /// path. All are granted together or none.
    pub keys: Vec<String>,
    /// How long to wait for a busy key: 0 (default: answer at once), "30s",
    /// "10m", or "forever". A wait longer than one call answers `waiting`
    /// with your place; call acquire again with the same request_id.
    pub wait: Option<Dur>,
    /// fail-fast (default without wait), wait (default with wait), or
    /// steal-stale (take over a lock whose holder is stale, expired or dead).
    pub strategy: Option<Strategy>,
    /// Lease length, e.g. "2m" (default 60s, set by `locksmith mcp --ttl`).
    /// It is renewed automatically while this session lives. With
    /// outlive_session it is not renewed, and without a ttl such a lock is
    /// held until released.
    pub ttl: Option<Dur>,
    /// Shared (reader) lock: many readers, no writer.
    #[serde(default)]
    pub shared: bool,
    /// Semaphore: up to this many holders of the key.
    pub limit: Option<u32>,
    /// Tree lock: also covers every key below (lock a whole folder).
    #[serde(default)]
    pub tree: bool,
    /// The task you work on, shown to others (e.g. "42" or "fix login bug").
    pub task: Option<String>,
    /// Facts shown with the lock (a JSON object, at most 16 KiB).
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// Your id for this request: repeating it returns the same grant, and
    /// keeps your queue place across calls.
    pub request_id: Option<String>,
    /// Queue priority, higher first (default 0).
    pub priority: Option<i32>,
    /// Keep the lock after this session ends (default false): it then ends
    /// only by release or by its ttl (held until released without one).
    #[serde(default)]
    pub outlive_session: bool,
}

/// Arguments of `release`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReleaseArgs {
    /// Keys to release. A grant of several keys is released whole. Queued
    /// requests of this session for these keys leave the queue.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Release every lock this session holds (instead of keys).
    #[serde(default)]
    pub all: bool,
    /// "completed" (default) or "failed": recorded in the history.
    pub reason: Option<ReleaseWhy>,
}

/// Why a holder releases.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseWhy {
    /// The work is done.
    Completed,
    /// The work failed.
    Failed,
}

/// Arguments of `renew`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RenewArgs {
    /// Keys to renew (default: every lock of this session).
    #[serde(default)]
    pub keys: Vec<String>,
}

/// Arguments of `status`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatusArgs {
    /// The key, e.g. "repo/acme".
    pub key: String,
}

/// Arguments of `list`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    /// Only keys starting with this text, e.g. "task/".
    pub prefix: Option<String>,
    /// Only locks of this owner.
    pub owner: Option<String>,
    /// Only locks whose holder is stale, dead or expired.
    #[serde(default)]
    pub stale: bool,
    /// Show queued requests (who waits for what) instead of held locks.
    #[serde(default)]
    pub waiting: bool,
    /// Only this session's locks.
    #[serde(default)]
    pub mine: bool,
    /// At most this many rows (default 100).
    pub limit: Option<usize>,
}

/// Arguments of `history`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct HistoryArgs {
    /// Only this key (or, with prefix, keys starting with it).
    pub key: Option<String>,
    /// Treat key as a prefix.
    #[serde(default)]
    pub prefix: bool,
    /// Only events of this owner.
    pub owner: Option<String>,
    /// At most this many events, newest first (default 20).
    pub limit: Option<usize>,
}
