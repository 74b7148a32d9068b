//! Long polls: a waiting `POST /v1/grants` is held on a blocking thread
//! until the request is granted, its wait ends, the server's poll cap
//! passes (then the answer is `waiting` with a ticket and the place is
//! kept), the client goes away (it leaves the queue), or the server stops.
//!
//! Between two polls of one request its wake source stays here, parked
//! under the ticket, so that a release in between still wakes the next
//! poll at once. A ticket is honoured only for the owner it was given to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use locksmith::wait::wait_turn;
use locksmith_core::decide::QUEUE_PLACE;
use locksmith_core::store::{AcquireError, LeaveReason};
use locksmith_core::{
    AcquireRequest, Attempt, Blocked, Code, Grant, Ticket, WaitPolicy, WakeSource,
};

use crate::State;
use crate::error::ApiError;

/// How a long poll ended.
pub(crate) enum Answer {
    /// Granted.
    Granted(Grant),
    /// Still queued: poll again with this ticket (`seq.secret`).
    Waiting(String, Blocked),
}

/// A wake source between two polls.
struct Spot {
    secret: String,
    owner: String,
    /// The request id of the request, when it had one.
    request_id: Option<String>,
    wake: Box<dyn WakeSource>,
    since: Instant,
}

/// Wake sources of queued requests between polls, and the number of
/// requests of each owner waiting now.
#[derive(Default)]
pub(crate) struct Parked {
    spots: Mutex<HashMap<i64, Spot>>,
    active: Mutex<HashMap<String, usize>>,
}

impl Parked {
    /// The parked wake source of a ticket (`seq.secret`), when the ticket
    /// was given here (and to `owner`, when named).
    pub(crate) fn take(
        &self,
        ticket: &str,
        owner: Option<&str>,
    ) -> Option<(i64, Box<dyn WakeSource>)> {
        let (seq, secret) = ticket.split_once('.')?;
        let seq: i64 = seq.parse().ok()?;
        let mut spots = self.spots.lock().unwrap_or_else(|p| p.into_inner());
        match spots.get(&seq) {
            Some(s) if same(&s.secret, secret) && owner.is_none_or(|o| o == s.owner) => {
                spots.remove(&seq).map(|s| (seq, s.wake))
            }
            _ => None,
        }
    }

    /// The parked place of the request `request_id` of `owner`, for a
    /// client that polls again with its request id instead of the ticket.
    fn take_request(&self, owner: &str, request_id: &str) -> Option<(i64, Box<dyn WakeSource>)> {
        let mut spots = self.spots.lock().unwrap_or_else(|p| p.into_inner());
        let seq = spots
            .iter()
            .find(|(_, s)| s.owner == owner && s.request_id.as_deref() == Some(request_id))
            .map(|(seq, _)| *seq)?;
        spots.remove(&seq).map(|s| (seq, s.wake))
    }

    /// Keeps the wake source of a queued request between two polls; returns its ticket.
    fn park(
        &self,
        seq: i64,
        owner: &str,
        request_id: Option<String>,
        wake: Box<dyn WakeSource>,
    ) -> String {
        let secret = locksmith::host::random_hex(12);
        let ticket = format!("{seq}.{secret}");
        let mut spots = self.spots.lock().unwrap_or_else(|p| p.into_inner());
        // A place not polled again within its lapse time is gone in the store too.
        spots.retain(|_, s| s.since.elapsed() < QUEUE_PLACE * 2);
        spots.insert(
            seq,
            Spot {
                secret,
                owner: owner.to_string(),
                request_id,
                wake,
                since: Instant::now(),
            },
        );
        ticket
    }

    /// Requests of `owner` waiting now: in a poll, or parked between polls.
    fn waiting_of(&self, owner: &str) -> usize {
        let active = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(owner)
            .copied()
            .unwrap_or(0);
        let parked = self
            .spots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.owner == owner && s.since.elapsed() < QUEUE_PLACE * 2)
            .count();
        active + parked
    }

    /// Long polls held now, of every owner.
    fn polls(&self) -> usize {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    fn enter(&self, owner: &str) {
        *self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(owner.to_string())
            .or_default() += 1;
    }

    fn leave(&self, owner: &str) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = active.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                active.remove(owner);
            }
        }
    }

    /// Drops every parked wake source (the server stops).
    pub(crate) fn clear(&self) {
        self.spots.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Counts a poll as waiting while it lives, and cancels its wait when the
/// handler is dropped (the client went away).
struct InFlight<'a> {
    parked: &'a Parked,
    owner: String,
    cancel: Arc<AtomicBool>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.parked.leave(&self.owner);
    }
}

/// Acquires `req`: one attempt when it does not wait, else one long poll.
/// `keep_place` keeps the queue place when the poll ends unanswered even
/// at the request's own deadline (the client leaves the queue itself).
pub(crate) async fn acquire(
    st: &Arc<State>,
    req: AcquireRequest,
    wait: WaitPolicy,
    keep_place: bool,
    ticket: Option<&str>,
) -> Result<Answer, ApiError> {
    if wait == WaitPolicy::FailFast && !keep_place && ticket.is_none() {
        let attempt = st
            .store_call(move |store| store.acquire(&req, None))
            .await??;
        return match attempt {
            Attempt::Granted(g) => Ok(Answer::Granted(g)),
            Attempt::Blocked(b) => Err(AcquireError::Busy(b).into()),
        };
    }
    let cap = st.settings.poll_cap;
    let (poll_for, last) = match wait {
        WaitPolicy::FailFast => (std::time::Duration::ZERO, false),
        WaitPolicy::For(d) if d <= cap => (d, !keep_place),
        WaitPolicy::For(_) | WaitPolicy::Forever => (cap, false),
    };
    // Each long poll holds a blocking thread: past the cap, refuse before
    // touching the request's parked place, which stays for its next poll.
    if st.parked.polls() >= st.settings.max_polls {
        return Err(ApiError::new(
            Code::TooMany,
            format!(
                "this server holds {} waiting requests, the most it allows at once; try again shortly",
                st.settings.max_polls
            ),
        )
        .retry_after(1));
    }
    let owner = req.holder.owner.clone();
    // A ticket is honoured only where it was parked here, for this owner; a
    // request id finds the place of the same owner's request with that id.
    let request_id = req.request_id.clone();
    let parked = match (ticket, &request_id) {
        (Some(t), _) => st.parked.take(t, Some(&owner)),
        (None, Some(rid)) => st.parked.take_request(&owner, rid),
        (None, None) => None,
    };
    let (seq, wake) = match parked {
        Some((seq, w)) => (Some(seq), w),
        None => {
            if st.parked.waiting_of(&owner) >= st.settings.max_waiters_per_owner {
                return Err(ApiError::new(
                    Code::TooMany,
                    format!(
                        "owner {owner:?} already has {} requests waiting, the most this server allows; let some finish or give up",
                        st.settings.max_waiters_per_owner
                    ),
                ));
            }
            let notifier = st.notifier.clone();
            (None, blocking(move || notifier.wake_source()).await??)
        }
    };
    // No claim: a request through a server is never bound to a process,
    // so no release hands it the lock (see `flow::may_hand_over`).
    let mut t = Ticket {
        seq,
        wake: wake.address().to_string(),
        claim: None,
    };
    st.parked.enter(&owner);
    let flight = InFlight {
        parked: &st.parked,
        owner: owner.clone(),
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let store = st.store.clone();
    let cancel = flight.cancel.clone();
    let mut wake = wake;
    let task = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + poll_for;
        let r = wait_turn(
            &*store,
            &mut *wake,
            &req,
            &mut t,
            Some(until),
            &cancel,
            &mut |_| {},
        );
        let r = match r {
            Ok(Attempt::Blocked(b)) if last => store
                .leave_queue(&t, LeaveReason::TimedOut)
                .map_err(AcquireError::from)
                .and(Err(AcquireError::TimedOut(b))),
            other => other,
        };
        (r, wake, t)
    });
    let mut stopping = st.stopping.clone();
    tokio::pin!(task);
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let joined = tokio::select! {
        j = &mut task => j,
        () = stopped => {
            flight.cancel.store(true, Ordering::Relaxed);
            task.await
        }
    };
    let (r, wake, t) = joined
        .map_err(|e| ApiError::new(Code::StoreError, format!("the waiting task failed: {e}")))?;
    drop(flight);
    match r? {
        Attempt::Granted(g) => Ok(Answer::Granted(g)),
        Attempt::Blocked(b) => match t.seq {
            Some(seq) => Ok(Answer::Waiting(
                st.parked.park(seq, &owner, request_id, wake),
                b,
            )),
            None => Err(AcquireError::Busy(b).into()),
        },
    }
}

/// Runs a store call on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(Code::StoreError, format!("the store task failed: {e}")))
}

/// Compares two secrets in time that does not depend on where they differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
