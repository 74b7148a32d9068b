//! The narrow interface every store implements, in domain types, and the
//! requests, answers and errors that cross it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::key::{Key, KeyError};
use crate::model::{
    Binding, Event, EventKind, Fence, Health, Holder, LeaseHandle, Mode, ReleaseReason, Scope,
};
use crate::outcome::Code;
use crate::rules::LimitMismatch;
use crate::tenure::Reap;
use crate::time::Wall;

/// What to do with holders in the way.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Takeover {
    /// Respect them (default).
    #[default]
    None,
    /// Take the lock over if every holder in the way is stale, expired or dead.
    StealStale,
    /// End every holder in the way (admin); the text is recorded.
    Force {
        /// Why, recorded in the history.
        reason: String,
    },
}

/// One request for one or more keys, granted all together or not at all.
/// A queued request is kept whole (as JSON) where the store can grant it
/// in a releaser's transaction (see [`crate::flow::wake_list`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// The keys, at least one.
    pub keys: Vec<Key>,
    /// Mode for every key.
    pub mode: Mode,
    /// Scope for every key.
    pub scope: Scope,
    /// Who asks.
    pub holder: Holder,
    /// Lease length; `None` holds until released (with `stale_after` as backstop).
    pub ttl: Option<Duration>,
    /// Cap on the tenure.
    pub max_hold: Option<Duration>,
    /// Queue priority, higher first.
    pub priority: i32,
    /// What to do with holders in the way.
    pub takeover: Takeover,
    /// Idempotency id: a repeat of a granted request returns the same grant.
    pub request_id: Option<String>,
    /// Bind the locks to a live process: freed when it dies.
    pub bind: Option<Binding>,
}

impl AcquireRequest {
    /// The plainest request: exclusive, key scope, no lease, no cap,
    /// priority 0, no takeover, no request id, not bound to a process.
    /// Change fields with struct update syntax.
    pub fn exclusive(keys: Vec<Key>, holder: Holder) -> AcquireRequest {
        AcquireRequest {
            keys,
            mode: Mode::Exclusive,
            scope: Scope::Key,
            holder,
            ttl: None,
            max_hold: None,
            priority: 0,
            takeover: Takeover::None,
            request_id: None,
            bind: None,
        }
    }
}

/// One key of a grant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantedLock {
    /// The key.
    pub key: Key,
    /// Its fencing token.
    pub fence: Fence,
    /// When the lease runs out (store time, display); `None` without a lease.
    pub expires_at: Option<Wall>,
}

/// A successful acquire.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// Public id of the grant.
    pub grant: i64,
    /// The secret that renews and releases it.
    pub handle: LeaseHandle,
    /// The holder's owner name.
    pub owner: String,
    /// One entry per key, in request order.
    pub locks: Vec<GrantedLock>,
    /// The lease length, if any.
    pub ttl: Option<Duration>,
    /// True when this answers a repeated `request_id`.
    pub replayed: bool,
}

/// Why a request was not granted now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Blocked {
    /// The locks in the way (may be empty when only earlier waiters are).
    pub holders: Vec<LockInfo>,
    /// Earlier waiters in the way.
    pub waiters_ahead: usize,
    /// 1-based place in the queue, when the request is queued.
    pub position: Option<usize>,
    /// How soon a holder in the way runs out by itself, if one does.
    #[serde(with = "opt_duration_ms", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub retry_after: Option<Duration>,
    /// Proofs of life of process-bound holders in the way, for the waiter's
    /// wake source to watch (see [`crate::local::WakeSource::watch`]); local to one host.
    #[serde(skip)]
    pub watch: Vec<String>,
}

/// The answer to one acquire attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// Granted.
    Granted(Grant),
    /// Not now.
    Blocked(Blocked),
}

/// A request's place in the queue across its attempts: plain data, so that
/// it can cross a network. The first queued attempt fills in `seq`; later
/// attempts with the same ticket keep the place.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ticket {
    /// Arrival number given by the store, `None` before the first queued attempt.
    pub seq: Option<i64>,
    /// Where a releaser wakes the waiter (see [`crate::local::WakeSource`]);
    /// empty where the transport wakes its waiters by itself.
    pub wake: String,
    /// The secret of the grant a releaser may make for this place in its
    /// own transaction (a hand-over), given by the store when the request
    /// joins the queue; the waiter's next attempt answers that grant. `None`
    /// where the store does not hand over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("seq", &self.seq)
            .field("wake", &self.wake)
            .field("claim", &self.claim.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Which tenure a renew or release is about.
#[derive(Clone, Debug)]
pub struct Target {
    /// The key.
    pub key: Key,
    /// How the caller proves it is the holder.
    pub by: Proof,
}

/// Proof of holding.
#[derive(Clone, Debug)]
pub enum Proof {
    /// The lease handle of the grant.
    Handle(LeaseHandle),
    /// The owner name (local trust mode).
    Owner(String),
}

/// The answer to a renew.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Renewal {
    /// Extended: every lock of the grant, with its new deadline.
    Renewed {
        /// The renewed locks.
        locks: Vec<GrantedLock>,
    },
    /// The lock is no longer held by the caller.
    Lost {
        /// The key.
        key: Key,
        /// Why the tenure ended, when the history knows.
        reason: Option<ReleaseReason>,
    },
}

/// The answer to a release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Release {
    /// The caller's tenure ended now.
    Released {
        /// The key.
        key: Key,
        /// Fence of the ended tenure.
        fence: Fence,
        /// How long it was held.
        #[serde(with = "duration_ms")]
        #[cfg_attr(feature = "openapi", schema(value_type = u64))]
        held_for: Duration,
    },
    /// Nothing of the caller's was held (released twice, or already ended).
    NotHeld {
        /// The key.
        key: Key,
        /// Why the tenure ended, when the history knows.
        reason: Option<ReleaseReason>,
    },
}

/// A held lock as shown to people and scripts. Never carries the handle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockInfo {
    /// The key.
    pub key: Key,
    /// Mode (`mode`, and `limit` for a semaphore).
    #[serde(flatten)]
    pub mode: Mode,
    /// Scope.
    pub scope: Scope,
    /// Fence of this tenure.
    pub fence: Fence,
    /// Public grant id.
    pub grant: i64,
    /// Owner.
    pub owner: String,
    /// Task.
    pub task: Option<String>,
    /// Metadata.
    pub metadata: Option<serde_json::Value>,
    /// Host of the holder.
    pub hostname: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Granted at (wall).
    pub acquired_at: Wall,
    /// Held for so long.
    #[serde(with = "duration_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub held_for: Duration,
    /// Time since the last sign of life.
    #[serde(with = "duration_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub since_seen: Duration,
    /// Lease deadline (wall, display), if leased.
    pub expires_at: Option<Wall>,
    /// Lease time left, if leased.
    #[serde(with = "opt_duration_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub expires_in: Option<Duration>,
    /// Lease length.
    #[serde(with = "opt_duration_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub ttl: Option<Duration>,
    /// Cap on the tenure.
    #[serde(with = "opt_duration_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub max_hold: Option<Duration>,
    /// Health now.
    pub health: Health,
}

/// A queued request as shown to people and scripts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaiterInfo {
    /// The key (one entry per key of a multi-key request).
    pub key: Key,
    /// 1-based place among the waiters of this key.
    pub position: usize,
    /// Mode asked for (`mode`, and `limit` for a semaphore).
    #[serde(flatten)]
    pub mode: Mode,
    /// Scope asked for.
    pub scope: Scope,
    /// Priority.
    pub priority: i32,
    /// Owner.
    pub owner: String,
    /// Task.
    pub task: Option<String>,
    /// Host of the waiter.
    pub hostname: String,
    /// Process id of the waiter.
    pub pid: u32,
    /// Waiting since (wall).
    pub since: Wall,
    /// Waiting for so long.
    #[serde(with = "duration_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub waited: Duration,
}

/// Everything about one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyStatus {
    /// The key.
    pub key: Key,
    /// True when nothing holds or covers it.
    pub free: bool,
    /// Locks held on it, or covering it (tree locks on its ancestors).
    pub holders: Vec<LockInfo>,
    /// Its queue, in order.
    pub waiters: Vec<WaiterInfo>,
}

/// Filters for `list`.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this owner.
    pub owner: Option<String>,
    /// Only keys starting with this text.
    pub prefix: Option<String>,
    /// Only locks that are not healthy.
    pub unhealthy: bool,
    /// Only the locks of this grant.
    pub grant: Option<i64>,
    /// At most this many rows (0: no limit).
    pub limit: usize,
}

/// Filters for `history`.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    /// Only this key, or keys below it when `prefix` is set.
    pub key: Option<String>,
    /// Treat `key` as a prefix.
    pub prefix: bool,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only this kind.
    pub kind: Option<EventKind>,
    /// Only events with an id above this.
    pub after: Option<i64>,
    /// At most this many, newest first (0: all).
    pub limit: usize,
}

/// Counters for `stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    /// Locks held now.
    pub held: u64,
    /// Requests queued now.
    pub waiting: u64,
    /// Held locks that are not healthy.
    pub unhealthy: u64,
    /// Events in the kept history, by kind.
    pub events: std::collections::BTreeMap<String, u64>,
    /// Ended tenures in the kept history, by reason.
    pub releases: std::collections::BTreeMap<String, u64>,
    /// The last fence issued.
    pub last_fence: u64,
    /// Oldest kept event (wall).
    pub history_since: Option<Wall>,
    /// How long granted requests waited in the queue, in the kept history.
    #[serde(default)]
    pub waits: WaitStats,
    /// Granted ÷ (granted + waits timed out + deadlocks refused), in the
    /// kept history; `None` before the first of them. Fail-fast refusals
    /// leave no history and are not counted (the server's metrics count them).
    #[serde(default)]
    pub success_rate: Option<f64>,
}

/// Waiting times of granted requests that waited in the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitStats {
    /// How many granted requests had waited.
    pub count: u64,
    /// Their average wait, milliseconds.
    pub avg_ms: Option<f64>,
    /// The 99th percentile, milliseconds.
    pub p99_ms: Option<u64>,
    /// The longest, milliseconds.
    pub max_ms: Option<u64>,
}

/// Why a waiter left the queue without a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// Its deadline passed.
    TimedOut,
    /// The caller gave up (signal, drop).
    Cancelled,
}

/// The source of a store failure, kept for logs and `{:#}` chains.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in a store. [`StoreError::code`] gives the
/// stable machine code of the outcome table ([`crate::outcome`]).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A key was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A request was malformed.
    #[error("{0}")]
    Invalid(String),
    /// A semaphore's slot count did not match.
    #[error(transparent)]
    LimitMismatch(#[from] LimitMismatch),
    /// Waiting would close a cycle of waiters.
    #[error("deadlock refused on {key}: waiting would close the cycle {}", cycle.join(" -> "))]
    Deadlock {
        /// The key asked for.
        key: Key,
        /// The owners in the cycle, first and last the requester.
        cycle: Vec<String>,
    },
    /// A forced release named the fence it saw, and a newer tenure holds the key.
    #[error(
        "{key} is held by a newer tenure (fence {fence}) than the one you saw (fence {seen}); nothing was ended. Look again before forcing"
    )]
    Newer {
        /// The key.
        key: Key,
        /// The newest fence on the key now.
        fence: Fence,
        /// The fence the caller saw.
        seen: Fence,
    },
    /// The caller is not the holder.
    #[error(
        "not the holder: {key} is held by {holders}; prove holding with the lease handle or the holder's owner name"
    )]
    NotHolder {
        /// The key.
        key: Key,
        /// Who holds it.
        holders: String,
    },
    /// A lock named by its owner was taken by another OS user: by owner
    /// name, only that user (or root) may release or renew it.
    #[error(
        "not the holder: {key} is held by {owner} as another OS user (uid {uid}); by owner name only that user or root may release or renew it. Use the lease handle (--handle, LOCKSMITH_HANDLE, or --handle - to read it from standard input); nothing was changed"
    )]
    OtherUser {
        /// The key.
        key: Key,
        /// The owner name given.
        owner: String,
        /// The OS user that holds it.
        uid: u32,
    },
    /// The store cannot be used as it is (foreign, newer, on a network filesystem).
    #[error("{0}")]
    Unusable(String),
    /// The store's data is damaged.
    #[error("{message}")]
    Corrupt {
        /// What is damaged and what to do.
        message: String,
        /// The failure underneath, if any.
        #[source]
        source: Option<Source>,
    },
    /// The store stayed busy longer than its timeout, or cannot be reached.
    #[error("{0}")]
    Busy(String),
    /// A server refused the request for a reason of its own (no valid
    /// token, a role that does not permit it, too many requests).
    #[error("{message}")]
    Refused {
        /// The outcome code the server gave.
        code: Code,
        /// What went wrong and what to do.
        message: String,
    },
    /// An I/O or database failure.
    #[error("{message}")]
    Backend {
        /// What failed and what to do.
        message: String,
        /// The failure underneath, if any.
        #[source]
        source: Option<Source>,
    },
}

impl StoreError {
    /// An I/O or database failure without a further source.
    pub fn backend(message: impl Into<String>) -> StoreError {
        StoreError::Backend {
            message: message.into(),
            source: None,
        }
    }
    /// An I/O or database failure caused by `source`.
    pub fn backend_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Backend {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
    /// Damaged data, without a further source.
    pub fn corrupt(message: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            message: message.into(),
            source: None,
        }
    }
    /// The stable code of this outcome.
    pub fn code(&self) -> Code {
        match self {
            StoreError::Key(_) | StoreError::Invalid(_) | StoreError::LimitMismatch(_) => {
                Code::Invalid
            }
            StoreError::Deadlock { .. } => Code::Deadlock,
            StoreError::Newer { .. } => Code::Busy,
            StoreError::NotHolder { .. } | StoreError::OtherUser { .. } => Code::NotHolder,
            StoreError::Unusable(_) => Code::Unusable,
            StoreError::Corrupt { .. } => Code::Corrupt,
            StoreError::Busy(_) => Code::Unavailable,
            StoreError::Refused { code, .. } => *code,
            StoreError::Backend { .. } => Code::StoreError,
        }
    }
}

/// How long to wait for a busy lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WaitPolicy {
    /// Fail at once (default).
    #[default]
    FailFast,
    /// Wait up to this long.
    For(Duration),
    /// Wait until granted or cancelled.
    Forever,
}

impl WaitPolicy {
    /// Parses `0`, a duration such as `10s`, or `forever`.
    pub fn parse(text: &str) -> Result<WaitPolicy, String> {
        match text.trim() {
            "forever" => Ok(WaitPolicy::Forever),
            t => match crate::time::parse_duration(t)? {
                d if d.is_zero() => Ok(WaitPolicy::FailFast),
                d => Ok(WaitPolicy::For(d)),
            },
        }
    }
}

/// Why an acquire ended without a grant.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// Fail-fast and the lock was busy.
    #[error("busy")]
    Busy(Blocked),
    /// The wait deadline passed.
    #[error("timed out waiting")]
    TimedOut(Blocked),
    /// The caller cancelled the wait.
    #[error("wait cancelled")]
    Cancelled,
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AcquireError {
    /// The stable code of this outcome.
    pub fn code(&self) -> Code {
        match self {
            AcquireError::Busy(_) => Code::Busy,
            AcquireError::TimedOut(_) => Code::WaitTimedOut,
            AcquireError::Cancelled => Code::Cancelled,
            AcquireError::Store(e) => e.code(),
        }
    }
}

thread_local! {
    static ON_ASYNC_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `call`, which makes store calls right on a worker thread of a
/// multi-threaded Tokio runtime (as `locksmith serve` makes a lone call).
/// A store that has to wait long in it (for another process) first hands
/// the worker's other tasks to another thread; see [`on_async_worker`].
pub fn call_on_async_worker<T>(call: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON_ASYNC_WORKER.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(ON_ASYNC_WORKER.with(|c| c.replace(true)));
    call()
}

/// Whether this thread's store calls run inside [`call_on_async_worker`]:
/// elsewhere a store's waits simply block the thread.
pub fn on_async_worker() -> bool {
    ON_ASYNC_WORKER.with(|c| c.get())
}

/// A lock store: the one seam between the rules and their persistence.
///
/// Every write happens in one transaction on the store's own clock: the
/// store loads what the rules need, asks them ([`crate::decide`],
/// [`crate::tenure`]) and writes their answer. Everything that crosses this
/// trait is plain data, so that a network can carry it. Wake-ups
/// ([`crate::local::Notifier`]) and process binding stay beside it, with the
/// host that has them.
pub trait Store: Send + Sync + 'static {
    /// One attempt. With `queue`, a blocked request joins (or keeps its
    /// place in) the queue, the ticket records the place, and a wait that
    /// would close a cycle is refused.
    fn acquire(
        &self,
        req: &AcquireRequest,
        queue: Option<&mut Ticket>,
    ) -> Result<Attempt, StoreError>;
    /// One queued attempt that may wait inside the store for its turn, up
    /// to `hold`: a server answers a long poll as soon as the request is
    /// granted. The ticket keeps its place when `hold` passes. Stores whose
    /// waiters are woken through a [`crate::local::Notifier`] answer at
    /// once (the default).
    fn acquire_within(
        &self,
        req: &AcquireRequest,
        queue: &mut Ticket,
        hold: Duration,
    ) -> Result<Attempt, StoreError> {
        let _ = hold;
        self.acquire(req, Some(queue))
    }
    /// Removes a queued request that gives up, and records why.
    fn leave_queue(&self, ticket: &Ticket, why: LeaveReason) -> Result<(), StoreError>;
    /// Extends the lease of every lock of the grant (by handle) or of the
    /// owner's lock on the key; `ttl` replaces the lease length.
    fn renew(&self, target: &Target, ttl: Option<Duration>) -> Result<Renewal, StoreError>;
    /// Ends the caller's tenure of the key.
    fn release(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError>;
    /// Ends every tenure of the grant named by the target's handle, in one
    /// call. Answers `NotHeld` (with the reason) when any key had been lost.
    fn release_grant(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError>;
    /// Ends every tenure on the key (admin); returns what was ended.
    fn force_release(&self, key: &Key, why: &str) -> Result<Vec<LockInfo>, StoreError> {
        self.force_release_seen(key, why, None, None)
    }
    /// Like [`Store::force_release`], but with `seen` (the newest fence the
    /// administrator saw on the key) only while no newer tenure holds the
    /// key; otherwise nothing is ended and the answer is
    /// [`StoreError::Newer`]. Checked and ended in one transaction. `by`
    /// names who forced it, recorded with the reason.
    fn force_release_seen(
        &self,
        key: &Key,
        why: &str,
        by: Option<&str>,
        seen: Option<Fence>,
    ) -> Result<Vec<LockInfo>, StoreError>;
    /// Holders and queue of one key.
    fn status(&self, key: &Key) -> Result<KeyStatus, StoreError>;
    /// Held locks, key order.
    fn list(&self, filter: &ListFilter) -> Result<Vec<LockInfo>, StoreError>;
    /// Queued requests, key then queue order.
    fn waiters(&self, filter: &ListFilter) -> Result<Vec<WaiterInfo>, StoreError>;
    /// History, newest first.
    fn history(&self, filter: &HistoryFilter) -> Result<Vec<Event>, StoreError>;
    /// Counters.
    fn stats(&self) -> Result<Stats, StoreError>;
    /// The sweeper's second look, for a batch: ends each tenure if it is
    /// still held and its rule still holds now; answers which were ended.
    fn reap(&self, batch: &[Reap]) -> Result<Vec<bool>, StoreError>;
    /// Drops history older than the retention; returns how many events went.
    fn prune_history(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// Runs `calls`, which call this store from this thread, so that their
    /// writes commit at once (a group commit). Each call still stands or
    /// falls alone: one that fails changes nothing. Their answers hold only
    /// if this answers `Ok`; on an error none of their writes was kept.
    /// Stores without it run the calls one by one, each its own commit.
    fn together(&self, calls: &mut dyn FnMut()) -> Result<(), StoreError> {
        calls();
        Ok(())
    }
}

/// Serde helpers: durations as whole milliseconds.
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    /// Writes milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    /// Reads milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Serde helpers: optional durations as whole milliseconds.
pub mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    /// Writes milliseconds or null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    /// Reads milliseconds or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
