//! The JSON bodies of the HTTP API (`locksmith serve`), shared by the
//! server and the HTTP store so that both sides read one definition.
//!
//! Durations are whole milliseconds (`*_ms`), times are [`Wall`](crate::time::Wall)
//! milliseconds since the Unix epoch. Every refusal is a [`Problem`]
//! (`application/problem+json`) whose `code` comes from the outcome table.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::key::Key;
use crate::model::{Holder, LeaseHandle, Mode, ReleaseReason, Scope};
use crate::outcome::Code;
use crate::rules::LimitMismatch;
use crate::store::{AcquireRequest, Blocked, Grant, GrantedLock, StoreError, Takeover, WaitPolicy};

/// What to do with holders in the way, as named in the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Answer at once when busy (the default without `wait_ms`).
    #[default]
    FailFast,
    /// Wait for the turn, up to `wait_ms` or for ever with `wait_forever`.
    Wait,
    /// Take the lock over if every holder in the way is stale, expired or dead.
    StealStale,
    /// End every holder in the way (admin); needs `reason`.
    Force,
}

/// `POST /v1/grants`: one request for one or more keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// The keys, granted all together or not at all.
    pub keys: Vec<String>,
    /// `exclusive` (default), `shared` or `semaphore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Slots of a semaphore (`mode` may then be left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// `key` (default) or `tree`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// Who asks.
    pub owner: String,
    /// Task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// A JSON object shown with the lock (at most 16 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Host of the caller, for display (default: the caller's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Boot id of the caller's host, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Process id of the caller, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Start time of that process, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// Lease length; without it the lock is held until released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Cap on the tenure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hold_ms: Option<u64>,
    /// Queue priority, higher first.
    #[serde(default)]
    pub priority: i32,
    /// What to do with holders in the way (default: `wait` when the request
    /// waits, else `fail-fast`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Why, for `force` (recorded in the history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Idempotency id: a repeat with the same body returns the same grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// How long to wait in all (the server answers `waiting` earlier when
    /// its long-poll cap comes first; poll again with the `ticket`).
    #[serde(default)]
    pub wait_ms: u64,
    /// Wait until granted (long polls, each capped by the server).
    #[serde(default)]
    pub wait_forever: bool,
    /// The queue place from an earlier `waiting` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Join the queue even without waiting now: the answer is `waiting`
    /// with a ticket instead of `busy`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queue: bool,
}

impl AcquireBody {
    /// The body of `req`, waiting per `wait`.
    pub fn new(req: &AcquireRequest, wait: WaitPolicy) -> AcquireBody {
        let (wait_ms, wait_forever) = match wait {
            WaitPolicy::FailFast => (0, false),
            WaitPolicy::For(d) => (millis(d).max(1), false),
            WaitPolicy::Forever => (0, true),
        };
        let (strategy, reason) = match &req.takeover {
            Takeover::None if wait == WaitPolicy::FailFast => (Strategy::FailFast, None),
            Takeover::None => (Strategy::Wait, None),
            Takeover::StealStale => (Strategy::StealStale, None),
            Takeover::Force { reason } => (Strategy::Force, Some(reason.clone())),
        };
        AcquireBody {
            keys: req.keys.iter().map(|k| k.to_string()).collect(),
            mode: Some(req.mode.name().to_string()),
            limit: req.mode.limit(),
            scope: Some(req.scope),
            owner: req.holder.owner.clone(),
            task: req.holder.task.clone(),
            metadata: req.holder.metadata.clone(),
            hostname: Some(req.holder.hostname.clone()),
            boot_id: Some(req.holder.boot_id.clone()),
            pid: Some(req.holder.pid),
            pid_start: req.holder.pid_start,
            ttl_ms: req.ttl.map(millis),
            max_hold_ms: req.max_hold.map(millis),
            priority: req.priority,
            strategy: Some(strategy),
            reason,
            request_id: req.request_id.clone(),
            wait_ms,
            wait_forever,
            ticket: None,
            queue: false,
        }
    }

    /// The request and its wait policy; `peer` names the caller's host when
    /// the body does not. Refuses what no store could accept.
    pub fn request(&self, peer: &str) -> Result<(AcquireRequest, WaitPolicy), StoreError> {
        if self.keys.is_empty() {
            return Err(StoreError::Invalid(
                "no keys: name at least one key, such as repo/acme".into(),
            ));
        }
        let keys = self
            .keys
            .iter()
            .map(|k| Key::new(k.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let mode_name = match (self.mode.as_deref(), self.limit) {
            (Some(m), _) => m,
            (None, Some(_)) => "semaphore",
            (None, None) => "exclusive",
        };
        let mode = Mode::from_parts(mode_name, self.limit).ok_or_else(|| {
            StoreError::Invalid(format!(
                "mode {mode_name:?} with limit {:?}: the modes are exclusive, shared, and semaphore with a limit of at least 1",
                self.limit
            ))
        })?;
        let wait = match (self.wait_forever, self.wait_ms) {
            (true, 0) => WaitPolicy::Forever,
            (true, _) => {
                return Err(StoreError::Invalid(
                    "wait_ms and wait_forever together: give one of them".into(),
                ));
            }
            (false, 0) => WaitPolicy::FailFast,
            (false, ms) => WaitPolicy::For(Duration::from_millis(ms)),
        };
        let strategy = self.strategy.unwrap_or(match wait {
            WaitPolicy::FailFast => Strategy::FailFast,
            _ => Strategy::Wait,
        });
        let takeover = match strategy {
            Strategy::FailFast if wait != WaitPolicy::FailFast => {
                return Err(StoreError::Invalid(
                    "strategy fail-fast with a wait: drop wait_ms/wait_forever or use strategy wait"
                        .into(),
                ));
            }
            Strategy::FailFast | Strategy::Wait => Takeover::None,
            Strategy::StealStale => Takeover::StealStale,
            Strategy::Force => Takeover::Force {
                reason: self.reason.clone().unwrap_or_default(),
            },
        };
        if self.reason.is_some() && strategy != Strategy::Force {
            return Err(StoreError::Invalid(
                "reason is for strategy force only".into(),
            ));
        }
        let holder = Holder {
            owner: self.owner.clone(),
            task: self.task.clone(),
            metadata: self.metadata.clone(),
            hostname: self.hostname.clone().unwrap_or_else(|| peer.to_string()),
            boot_id: self.boot_id.clone().unwrap_or_default(),
            pid: self.pid.unwrap_or(0),
            pid_start: self.pid_start,
        };
        let req = AcquireRequest {
            keys,
            mode,
            scope: self.scope.unwrap_or_default(),
            holder,
            ttl: self.ttl_ms.map(Duration::from_millis),
            max_hold: self.max_hold_ms.map(Duration::from_millis),
            priority: self.priority,
            takeover,
            request_id: self.request_id.clone(),
            bind: None,
        };
        Ok((req, wait))
    }
}

/// `200` to `POST /v1/grants`: granted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantBody {
    /// Public id of the grant.
    pub grant: i64,
    /// The secret that renews and releases it; shown only here.
    pub handle: String,
    /// Owner.
    pub owner: String,
    /// One entry per key, in request order.
    pub locks: Vec<GrantedLock>,
    /// Lease length.
    pub ttl_ms: Option<u64>,
    /// True when this answers a repeated request id.
    pub replayed: bool,
}

impl From<&Grant> for GrantBody {
    fn from(g: &Grant) -> GrantBody {
        GrantBody {
            grant: g.grant,
            handle: g.handle.expose().to_string(),
            owner: g.owner.clone(),
            locks: g.locks.clone(),
            ttl_ms: g.ttl.map(millis),
            replayed: g.replayed,
        }
    }
}

impl From<GrantBody> for Grant {
    fn from(b: GrantBody) -> Grant {
        Grant {
            grant: b.grant,
            handle: LeaseHandle::from_text(b.handle),
            owner: b.owner,
            locks: b.locks,
            ttl: b.ttl_ms.map(Duration::from_millis),
            replayed: b.replayed,
        }
    }
}

/// `202` to `POST /v1/grants`: queued; poll again with `ticket`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitingBody {
    /// The queue place, to send back with the next poll (and to leave the queue).
    pub ticket: String,
    /// What is in the way and the place in the queue.
    #[serde(flatten)]
    pub blocked: Blocked,
}

/// Body of the renew routes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// Which key of the grant the answer is about (grant routes; default:
    /// the grant's first held key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The lease handle of the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// The holder's owner name, instead of the handle (by key only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// A new lease length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// Body of the release routes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    /// Which key of the grant the answer is about (grant routes; default:
    /// the grant's first held key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The lease handle of the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// The holder's owner name, instead of the handle (by key only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `completed` (default), `failed`, or `exited` (the holder's session
    /// ended without releasing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReleaseReason>,
}

/// Body of `POST /v1/locks/{key}/force-release`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ForceBody {
    /// Why, recorded in the history (required).
    pub reason: String,
    /// Who forces, recorded with the reason. With tokens the server records
    /// the token's name instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// End the holders only while this is the newest fence on the key, so
    /// that an administrator never ends a newer holder than the one seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}

/// Body of `POST /v1/queue/leave`: a waiter that gives up between polls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaveBody {
    /// The ticket of the last `waiting` answer.
    pub ticket: String,
    /// True when its deadline passed (recorded as wait_timed_out), false
    /// when it gave up (wait_cancelled).
    #[serde(default)]
    pub timed_out: bool,
}

/// An `application/problem+json` body (RFC 9457) with a stable `code`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:locksmith:<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// The stable code of the outcome table.
    pub code: String,
    /// What went wrong and what to do.
    pub detail: String,
    /// Facts of this kind of problem (`key`, `cycle`, `holders`, `blocked`, `limit`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Problem {
    /// A problem of `code` with its detail.
    pub fn new(code: Code, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:locksmith:{}", code.name()),
            title: title(code).to_string(),
            status: code.http_status(),
            code: code.name().to_string(),
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// Adds a fact.
    pub fn with(mut self, name: &str, value: impl Serialize) -> Problem {
        self.extra.insert(
            name.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// The problem that tells a client about `e`.
    pub fn from_store(e: &StoreError) -> Problem {
        let p = Problem::new(e.code(), e.to_string());
        match e {
            StoreError::Deadlock { key, cycle } => p.with("key", key).with("cycle", cycle),
            StoreError::NotHolder { key, holders } => p.with("key", key).with("holders", holders),
            StoreError::OtherUser { key, owner, .. } => p.with("key", key).with("holders", owner),
            StoreError::LimitMismatch(m) => p.with("limit", [m.held, m.asked]),
            StoreError::Newer { key, fence, seen } => {
                p.with("key", key).with("fence", fence).with("seen", seen)
            }
            _ => p,
        }
    }

    /// The stable code, when the server sent a known one.
    pub fn code(&self) -> Option<Code> {
        Code::from_name(&self.code)
    }

    /// The store error a client raises for this problem. Codes that are
    /// answers rather than errors (busy, lost) become `Backend` here; the
    /// client reads them before it gets this far.
    pub fn into_store_error(self) -> StoreError {
        let text = |name: &str| {
            self.extra
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        match self.code() {
            Some(Code::Deadlock) => {
                let key = text("key").and_then(|k| Key::new(k).ok());
                let cycle: Option<Vec<String>> = self
                    .extra
                    .get("cycle")
                    .and_then(|c| serde_json::from_value(c.clone()).ok());
                match (key, cycle) {
                    (Some(key), Some(cycle)) => StoreError::Deadlock { key, cycle },
                    _ => StoreError::backend(self.detail),
                }
            }
            Some(Code::NotHolder) => {
                match (text("key").and_then(|k| Key::new(k).ok()), text("holders")) {
                    (Some(key), Some(holders)) => StoreError::NotHolder { key, holders },
                    _ => StoreError::backend(self.detail),
                }
            }
            Some(Code::TooLarge) => StoreError::Invalid(self.detail),
            Some(Code::Busy) => {
                let key = text("key").and_then(|k| Key::new(k).ok());
                let fence = |name: &str| {
                    self.extra
                        .get(name)
                        .and_then(Value::as_u64)
                        .map(crate::model::Fence)
                };
                match (key, fence("fence"), fence("seen")) {
                    (Some(key), Some(fence), Some(seen)) => StoreError::Newer { key, fence, seen },
                    _ => StoreError::backend(self.detail),
                }
            }
            Some(Code::Invalid) => match self
                .extra
                .get("limit")
                .and_then(|l| serde_json::from_value::<[u32; 2]>(l.clone()).ok())
            {
                Some([held, asked]) => StoreError::LimitMismatch(LimitMismatch { held, asked }),
                None => StoreError::Invalid(self.detail),
            },
            Some(Code::Unusable) => StoreError::Unusable(self.detail),
            Some(Code::Corrupt) => StoreError::corrupt(self.detail),
            Some(Code::Unavailable) => StoreError::Busy(self.detail),
            Some(code @ (Code::Unauthorized | Code::Forbidden | Code::TooMany)) => {
                StoreError::Refused {
                    code,
                    message: self.detail,
                }
            }
            _ => StoreError::backend(format!(
                "the server answered {}: {}",
                self.code, self.detail
            )),
        }
    }
}

/// The short title of each code.
pub fn title(code: Code) -> &'static str {
    match code {
        Code::Busy => "The lock is held",
        Code::WaitTimedOut => "The wait timed out",
        Code::Deadlock => "Waiting would close a deadlock",
        Code::NotHolder => "Not the holder",
        Code::Lost => "The lock was lost",
        Code::Invalid => "Invalid request",
        Code::Cancelled => "The wait was cancelled",
        Code::Corrupt => "The store is damaged",
        Code::Unusable => "The store cannot be used",
        Code::Unavailable => "The store is unavailable",
        Code::Unauthorized => "No valid token",
        Code::Forbidden => "Not allowed for this token",
        Code::TooLarge => "Request too large",
        Code::TooMany => "Too many requests",
        _ => "The store failed",
    }
}

/// Whole milliseconds of `d`.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
