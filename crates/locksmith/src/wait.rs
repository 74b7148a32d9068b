//! The blocking acquire loop that front ends share: one attempt for
//! fail-fast, or a queued wait that sleeps until a releaser wakes it, a
//! holder's lease runs out, or its deadline passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use locksmith_core::decide::REFRESH;
use locksmith_core::store::{AcquireError, LeaveReason};
use locksmith_core::{
    AcquireRequest, Attempt, Blocked, Grant, Notifier, Store, StoreError, Ticket, WaitPolicy,
    WakeSource,
};

/// How often a sleeping waiter looks at its cancel flag.
const CANCEL_CHECK: Duration = Duration::from_millis(50);

/// Acquires per `policy`, woken by `notifier` while waiting. `on_blocked`
/// is called after every blocked attempt with what is in the way and how
/// long the request has waited.
pub fn acquire(
    store: &dyn Store,
    notifier: &dyn Notifier,
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
    let mut wake = notifier.wake_source()?;
    let mut ticket = Ticket {
        seq: None,
        wake: wake.address().to_string(),
        claim: None,
    };
    let started = Instant::now();
    let mut on_blocked = |b: &Blocked| on_blocked(b, started.elapsed());
    match wait_turn(
        store,
        &mut *wake,
        req,
        &mut ticket,
        deadline,
        cancel,
        &mut on_blocked,
    )? {
        Attempt::Granted(g) => Ok(g),
        Attempt::Blocked(b) => {
            leave(store, &ticket, LeaveReason::TimedOut)?;
            Err(AcquireError::TimedOut(b))
        }
    }
}

/// Leaves the queue, trying twice more after short pauses when the store
/// fails: a grant a releaser made for the place meanwhile (a hand-over) is
/// given back only by a leave that gets through.
pub fn leave(store: &dyn Store, ticket: &Ticket, why: LeaveReason) -> Result<(), StoreError> {
    let mut failed = None;
    for pause_ms in [0, 50, 250] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        match store.leave_queue(ticket, why) {
            Ok(()) => return Ok(()),
            Err(e) => failed = Some(e),
        }
    }
    Err(failed.unwrap_or_else(|| StoreError::backend("leaving the queue failed")))
}

/// Waits in the queue for the turn of `req` until it is granted or `until`
/// passes. At `until` the last blocked answer is returned and the ticket
/// **keeps** its place, so that a caller that polls (a server's long poll)
/// can come back with it; a caller whose own deadline it was leaves the
/// queue. A cancel or a store failure leaves the queue here.
pub fn wait_turn(
    store: &dyn Store,
    wake: &mut dyn WakeSource,
    req: &AcquireRequest,
    ticket: &mut Ticket,
    until: Option<Instant>,
    cancel: &AtomicBool,
    on_blocked: &mut dyn FnMut(&Blocked),
) -> Result<Attempt, AcquireError> {
    loop {
        let attempted = Instant::now();
        let hold = until.map_or(REFRESH, |d| {
            d.saturating_duration_since(attempted).min(REFRESH)
        });
        let blocked = match store.acquire_within(req, ticket, hold) {
            Ok(Attempt::Granted(g)) => return Ok(Attempt::Granted(g)),
            Ok(Attempt::Blocked(b)) => b,
            Err(e) => {
                if ticket.seq.is_some() {
                    let _ = leave(store, ticket, LeaveReason::Cancelled);
                }
                return Err(e.into());
            }
        };
        on_blocked(&blocked);
        wake.watch(&blocked.watch);
        let now = Instant::now();
        if until.is_some_and(|d| now >= d) {
            return Ok(Attempt::Blocked(blocked));
        }
        let mut sleep = REFRESH;
        if let Some(d) = until {
            sleep = sleep.min(d - now);
        }
        if let Some(after) = blocked.retry_after {
            let until = (attempted + after).saturating_duration_since(now);
            sleep = sleep.min(until + Duration::from_millis(1));
        }
        let wake_by = Instant::now() + sleep;
        loop {
            if cancel.load(Ordering::Relaxed) {
                leave(store, ticket, LeaveReason::Cancelled)?;
                return Err(AcquireError::Cancelled);
            }
            let left = wake_by.saturating_duration_since(Instant::now());
            if left.is_zero() || wake.wait(left.min(CANCEL_CHECK)) {
                break;
            }
        }
        // A releaser that granted this place in its own transaction (a
        // hand-over) said so with the wake-up: nothing to ask the store.
        if let Some(message) = wake.message()
            && let Some(grant) = locksmith_core::flow::handed(req, ticket, &message)
        {
            return Ok(Attempt::Granted(grant));
        }
    }
}
