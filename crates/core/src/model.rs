//! The lock model: modes, scopes, fences, lease handles, holders, reasons and
//! events, as every store and front end speaks of them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::key::Key;
use crate::time::{Mono, Wall};

/// A fencing token: strictly greater than every token the store issued before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Fence(pub u64);

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a lock shares its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Mode {
    /// One holder, no other (default).
    Exclusive,
    /// Many readers, no writer.
    Shared,
    /// Up to `limit` holders of the same key.
    Semaphore {
        /// Number of slots.
        limit: u32,
    },
}

impl Mode {
    /// Stable name: `exclusive`, `shared` or `semaphore`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
            Mode::Semaphore { .. } => "semaphore",
        }
    }
    /// The slot count of a semaphore, `None` otherwise.
    pub fn limit(self) -> Option<u32> {
        match self {
            Mode::Semaphore { limit } => Some(limit),
            _ => None,
        }
    }
    /// Rebuilds a mode from its stored name and limit.
    pub fn from_parts(name: &str, limit: Option<u32>) -> Option<Mode> {
        match (name, limit) {
            ("exclusive", _) => Some(Mode::Exclusive),
            ("shared", _) => Some(Mode::Shared),
            ("semaphore", Some(limit)) if limit > 0 => Some(Mode::Semaphore { limit }),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Semaphore { limit } => write!(f, "semaphore/{limit}"),
            m => f.write_str(m.name()),
        }
    }
}

/// What a lock covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only its own key (default).
    #[default]
    Key,
    /// Its key and every key below it.
    Tree,
}

impl Scope {
    /// Stable name: `key` or `tree`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::Tree => "tree",
        }
    }
    /// Parses a stored name.
    pub fn from_name(s: &str) -> Option<Scope> {
        match s {
            "key" => Some(Scope::Key),
            "tree" => Some(Scope::Tree),
            _ => None,
        }
    }
}

/// A secret lease handle returned with every grant: `lh1.<grant id>.<secret>`.
///
/// The grant id is public (it appears in history as `grant`); the secret part
/// is what proves ownership. Handles never appear in logs, listings or history.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct LeaseHandle(String);

impl LeaseHandle {
    /// The handle of grant `grant` with the secret a store kept for it.
    pub fn from_parts(grant: i64, secret: &str) -> LeaseHandle {
        LeaseHandle(format!("lh1.{grant}.{secret}"))
    }
    /// The secret part, for a store to keep and compare.
    pub fn secret(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or_default()
    }
    /// Wraps text given by a user; [`LeaseHandle::grant`] tells if it is well formed.
    pub fn from_text(text: impl Into<String>) -> LeaseHandle {
        LeaseHandle(text.into())
    }
    /// The public grant id inside the handle, if the handle is well formed.
    pub fn grant(&self) -> Option<i64> {
        let mut parts = self.0.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("lh1"), Some(id), Some(secret), None) if secret.len() == 32 => id.parse().ok(),
            _ => None,
        }
    }
    /// The full secret text, for the one place that must show it (a grant).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LeaseHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseHandle(<redacted>)")
    }
}

/// Who holds (or waits for) a lock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Holder {
    /// Free text: agent, session or worker name.
    pub owner: String,
    /// Optional task id.
    pub task: Option<String>,
    /// Optional JSON object, at most [`MAX_METADATA_BYTES`] when encoded.
    pub metadata: Option<serde_json::Value>,
    /// Host name of the holding process.
    pub hostname: String,
    /// Boot id of that host (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Start time of that process in clock ticks since boot, to tell a reused pid apart.
    pub pid_start: Option<u64>,
}

/// What ties a lock to a live process on this machine: when the process is
/// gone the lock is freed (`dead_process`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Binding {
    /// The bound process.
    pub pid: u32,
    /// Its start time in clock ticks since boot, so a reused pid does not count.
    pub start: Option<u64>,
    /// A file the process holds an exclusive kernel lock on for its whole
    /// life; the kernel drops the lock when the process dies, which is the
    /// proof of death. `None` binds by pid and start time alone.
    pub life_file: Option<String>,
}

/// Largest metadata object accepted, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Why a tenure ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// Explicit release (the default).
    Completed,
    /// Released by a holder reporting failure.
    Failed,
    /// The holding process ended without releasing.
    Exited,
    /// The lease ran out without renewal.
    LeaseExpired,
    /// The bound process is dead.
    DeadProcess,
    /// No sign of life for `stale_after`.
    StaleTimeout,
    /// The tenure passed its `max_hold`.
    MaxHold,
    /// The task hook said the task is done.
    TaskCompleted,
    /// An administrator force-released it.
    Forced,
    /// Taken over by `--steal-stale`.
    Stolen,
}

impl ReleaseReason {
    /// Every reason, in documentation order.
    pub const ALL: [ReleaseReason; 10] = [
        ReleaseReason::Completed,
        ReleaseReason::Failed,
        ReleaseReason::Exited,
        ReleaseReason::LeaseExpired,
        ReleaseReason::DeadProcess,
        ReleaseReason::StaleTimeout,
        ReleaseReason::MaxHold,
        ReleaseReason::TaskCompleted,
        ReleaseReason::Forced,
        ReleaseReason::Stolen,
    ];
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ReleaseReason::Completed => "completed",
            ReleaseReason::Failed => "failed",
            ReleaseReason::Exited => "exited",
            ReleaseReason::LeaseExpired => "lease_expired",
            ReleaseReason::DeadProcess => "dead_process",
            ReleaseReason::StaleTimeout => "stale_timeout",
            ReleaseReason::MaxHold => "max_hold",
            ReleaseReason::TaskCompleted => "task_completed",
            ReleaseReason::Forced => "forced",
            ReleaseReason::Stolen => "stolen",
        }
    }
}

impl ReleaseReason {
    /// The history event that records a tenure ending for this reason.
    pub fn event_kind(self) -> EventKind {
        match self {
            ReleaseReason::Completed | ReleaseReason::Failed => EventKind::Released,
            ReleaseReason::LeaseExpired | ReleaseReason::MaxHold => EventKind::Expired,
            ReleaseReason::Forced => EventKind::Forced,
            ReleaseReason::Stolen => EventKind::Stolen,
            ReleaseReason::Exited
            | ReleaseReason::DeadProcess
            | ReleaseReason::StaleTimeout
            | ReleaseReason::TaskCompleted => EventKind::Reaped,
        }
    }
    /// True for the reasons a holder gives itself (not a loss).
    pub fn by_holder(self) -> bool {
        matches!(self, ReleaseReason::Completed | ReleaseReason::Failed)
    }
}

impl fmt::Display for ReleaseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReleaseReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReleaseReason::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = ReleaseReason::ALL.iter().map(|r| r.name()).collect();
                format!("unknown reason {s:?}; one of: {}", names.join(", "))
            })
    }
}

/// What happened, as recorded in the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A lock was granted.
    Acquired,
    /// A lease was renewed (sampled: at most one a minute per grant).
    Renewed,
    /// A holder released a lock.
    Released,
    /// A lease or `max_hold` ran out and the lock was freed.
    Expired,
    /// The sweeper freed a lock (dead, stale, task completed).
    Reaped,
    /// An administrator force-released a lock.
    Forced,
    /// `--steal-stale` took a lock over.
    Stolen,
    /// A request joined the queue.
    Waiting,
    /// A waiter gave up at its deadline.
    WaitTimedOut,
    /// A waiter left the queue before its deadline.
    WaitCancelled,
    /// A wait was refused because it would close a cycle.
    DeadlockRefused,
}

impl EventKind {
    /// Every kind, in documentation order.
    pub const ALL: [EventKind; 11] = [
        EventKind::Acquired,
        EventKind::Renewed,
        EventKind::Released,
        EventKind::Expired,
        EventKind::Reaped,
        EventKind::Forced,
        EventKind::Stolen,
        EventKind::Waiting,
        EventKind::WaitTimedOut,
        EventKind::WaitCancelled,
        EventKind::DeadlockRefused,
    ];
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Acquired => "acquired",
            EventKind::Renewed => "renewed",
            EventKind::Released => "released",
            EventKind::Expired => "expired",
            EventKind::Reaped => "reaped",
            EventKind::Forced => "forced",
            EventKind::Stolen => "stolen",
            EventKind::Waiting => "waiting",
            EventKind::WaitTimedOut => "wait_timed_out",
            EventKind::WaitCancelled => "wait_cancelled",
            EventKind::DeadlockRefused => "deadlock_refused",
        }
    }
    /// Parses a stored name.
    pub fn from_name(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == s)
    }
    /// A kind asked for by a person or a client: the message of a refusal
    /// names every kind.
    pub fn parse(s: &str) -> Result<EventKind, String> {
        EventKind::from_name(s).ok_or_else(|| {
            let names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
            format!(
                "unknown event kind {s:?}; the kinds are {}",
                names.join(", ")
            )
        })
    }
}

/// One line of the audit history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Position in the history, increasing.
    pub id: i64,
    /// Store time, for display.
    pub at: Wall,
    /// The lock's key.
    pub key: String,
    /// What happened.
    pub kind: EventKind,
    /// Owner of the holder or waiter concerned.
    pub owner: String,
    /// Task of the holder, if any.
    pub task: Option<String>,
    /// Fence of the tenure concerned, if any.
    pub fence: Option<Fence>,
    /// Public id of the grant concerned, if any.
    pub grant: Option<i64>,
    /// Why a tenure ended, for ending events.
    pub reason: Option<ReleaseReason>,
    /// Further facts (a forced release's text, a refused cycle, a queue place).
    pub detail: Option<serde_json::Value>,
}

/// One held tenure as the rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldLock {
    /// Public id of the grant this tenure belongs to (several keys share one).
    pub grant: i64,
    /// The key.
    pub key: Key,
    /// Its mode.
    pub mode: Mode,
    /// Its scope.
    pub scope: Scope,
    /// Its fence.
    pub fence: Fence,
    /// Its holder.
    pub holder: Holder,
    /// When it was granted (monotonic).
    pub acquired: Mono,
    /// When it was granted (wall, display).
    pub acquired_wall: Wall,
    /// Last sign of life: grant or renewal.
    pub last_seen: Mono,
    /// Lease deadline, `None` without a lease.
    pub expires: Option<Mono>,
    /// The lease length, renewed with.
    pub ttl: Option<Duration>,
    /// Cap on the tenure.
    pub max_hold: Option<Duration>,
    /// Idempotency id of the request that made it.
    pub request_id: Option<String>,
    /// The process this tenure is bound to, if any.
    pub bind: Option<Binding>,
    /// How long it may stay silent without a lease before it is stale, as
    /// recorded when it was granted; `None`: the reading store's setting.
    pub stale_after: Option<Duration>,
}

/// A held tenure as a store loaded it: the lock, what only the store keeps
/// (the handle's secret, the grant's size, when a renewal was last recorded),
/// and what the host could tell about its bound process.
#[derive(Clone, PartialEq)]
pub struct Hold {
    /// The tenure.
    pub lock: HeldLock,
    /// The secret part of the grant's lease handle.
    pub secret: String,
    /// How many keys the grant had when it was made.
    pub grant_keys: u32,
    /// When a `renewed` event was last recorded for it.
    pub renew_logged: Mono,
    /// Whether its bound process lives: `Some(false)` on proof of death,
    /// `Some(true)` when proven alive, `None` when unbound or unknowable here.
    pub alive: Option<bool>,
    /// The OS user (uid) of the process that took the grant, as the store
    /// saw it; `None` for a grant recorded before uids were.
    pub uid: Option<u32>,
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("lock", &self.lock)
            .field("grant_keys", &self.grant_keys)
            .field("alive", &self.alive)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

/// A lock's health as shown by `status` and `list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Renewed in time, recent sign of life.
    Healthy,
    /// No sign of life for `stale_after`; `--steal-stale` may take it.
    Stale,
    /// The holder process is gone.
    Dead,
    /// Its lease or `max_hold` ran out; the next acquire frees it.
    Expired,
}

impl Health {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Stale => "stale",
            Health::Dead => "dead",
            Health::Expired => "expired",
        }
    }
}

/// Whether two secrets are equal, compared in time that does not depend on
/// where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}
