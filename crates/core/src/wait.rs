//! The acquire loop shared by every front end: one attempt for fail-fast,
//! or a queued wait that sleeps until a releaser wakes it, a holder's lease
//! runs out, or its deadline passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::store::{
    AcquireRequest, Attempt, Blocked, Grant, LeaveReason, Store, StoreError, Waiter,
};

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

/// Longest sleep between two attempts of a waiter when nobody wakes it; the
/// queue entry stays alive for three of these.
pub const REFRESH: Duration = Duration::from_millis(1000);
/// How often a sleeping waiter looks at its cancel flag.
const CANCEL_CHECK: Duration = Duration::from_millis(50);

/// Acquires per `policy`. `on_blocked` is called after every blocked attempt
/// with what is in the way and how long the request has waited.
pub fn acquire(
    store: &dyn Store,
    req: &AcquireRequest,
    policy: WaitPolicy,
    cancel: &AtomicBool,
    on_blocked: &mut dyn FnMut(&Blocked, Duration),
) -> Result<Grant, AcquireError> {
    let deadline = match policy {
        WaitPolicy::FailFast => {
            return match store.acquire(req, None)? {
                Attempt::Granted(g) => Ok(g),
                Attempt::Blocked(b) => Err(AcquireError::Busy(b)),
            };
        }
        WaitPolicy::For(d) => Some(Instant::now() + d),
        WaitPolicy::Forever => None,
    };
    let started = Instant::now();
    let mut waiter = Waiter {
        wake: store.wake_source()?,
        seq: None,
    };
    loop {
        let blocked = match store.acquire(req, Some(&mut waiter)) {
            Ok(Attempt::Granted(g)) => return Ok(g),
            Ok(Attempt::Blocked(b)) => b,
            Err(e) => {
                if waiter.seq.is_some() {
                    let _ = store.leave_queue(&waiter, LeaveReason::Cancelled);
                }
                return Err(e.into());
            }
        };
        on_blocked(&blocked, started.elapsed());
        waiter.wake.watch(&blocked.watch);
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            store.leave_queue(&waiter, LeaveReason::TimedOut)?;
            return Err(AcquireError::TimedOut(blocked));
        }
        let mut sleep = REFRESH;
        if let Some(d) = deadline {
            sleep = sleep.min(d - now);
        }
        if let Some(at) = blocked.retry_at {
            let until = at.since(store.now().mono);
            sleep = sleep.min(until + Duration::from_millis(1));
        }
        let wake_by = Instant::now() + sleep;
        loop {
            if cancel.load(Ordering::Relaxed) {
                store.leave_queue(&waiter, LeaveReason::Cancelled)?;
                return Err(AcquireError::Cancelled);
            }
            let left = wake_by.saturating_duration_since(Instant::now());
            if left.is_zero() || waiter.wake.wait(left.min(CANCEL_CHECK)) {
                break;
            }
        }
    }
}
