//! The store conformance suite of locksmith: a [`Harness`] around any
//! [`Store`], the cases every store must pass ([`conformance`], one `#[test]`
//! each through [`conformance_tests!`]), and a seeded random walk checked
//! against a small reference model ([`walk`]).
//!
//! A store crate runs everything with a factory that builds a fresh store on
//! a [`ManualClock`]:
//!
//! ```ignore
//! fn harness() -> locksmith_testkit::Harness { /* open a fresh store */ }
//! locksmith_testkit::conformance_tests!(harness);
//! ```

pub mod conformance;
pub mod disk;
pub mod handover;
pub mod memory;
pub mod pg;
mod pytest;
pub mod walk;

pub use pytest::pytest;

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use locksmith_core::store::{HistoryFilter, ListFilter, Proof, Target};
use locksmith_core::{
    AcquireRequest, Attempt, Blocked, Event, Grant, Holder, Key, ManualClock, Notifier, Store,
    StoreError, Ticket, WakeSource,
};

/// A waiter's queue ticket, as the conformance cases hold it.
pub type Waiter = Ticket;

/// A fresh store on a hand-driven clock.
pub struct Harness {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// Its wake-ups.
    pub notifier: Arc<dyn Notifier>,
    /// Wake sources of the waiters made so far, kept alive with the harness.
    wakes: Mutex<Vec<Box<dyn WakeSource>>>,
    /// The clock the store reads; [`ManualClock::advance`] moves it.
    pub clock: ManualClock,
    /// Whatever must outlive the store (a temporary folder). Fields drop in
    /// order, so these go after the store.
    pub keep: Vec<Box<dyn Any>>,
}

/// A factory of fresh harnesses, one per case.
pub type Factory<'a> = &'a dyn Fn() -> Harness;

/// One conformance case.
pub type Case = fn(Factory<'_>);

impl Harness {
    /// A harness over `store` and its wake-ups; the store must read `clock`.
    pub fn new(store: Arc<dyn Store>, notifier: Arc<dyn Notifier>, clock: ManualClock) -> Harness {
        Harness {
            store,
            notifier,
            wakes: Mutex::new(Vec::new()),
            clock,
            keep: Vec::new(),
        }
    }

    /// Keeps `thing` alive as long as the store.
    pub fn keeping(mut self, thing: impl Any) -> Harness {
        self.keep.push(Box::new(thing));
        self
    }

    /// Moves the store's clock forward.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// One fail-fast attempt that must be granted.
    #[track_caller]
    pub fn grant(&self, req: &AcquireRequest) -> Grant {
        match self.store.acquire(req, None) {
            Ok(Attempt::Granted(g)) => g,
            other => panic!(
                "expected a grant of {:?} to {}, got {other:?}",
                keys_of(req),
                req.holder.owner
            ),
        }
    }

    /// One fail-fast attempt that must be blocked.
    #[track_caller]
    pub fn blocked(&self, req: &AcquireRequest) -> Blocked {
        match self.store.acquire(req, None) {
            Ok(Attempt::Blocked(b)) => b,
            other => panic!(
                "expected {:?} for {} to be blocked, got {other:?}",
                keys_of(req),
                req.holder.owner
            ),
        }
    }

    /// A new waiter (not yet queued).
    pub fn waiter(&self) -> Waiter {
        let source = self.notifier.wake_source().expect("wake source");
        let ticket = Ticket {
            seq: None,
            wake: source.address().to_string(),
            claim: None,
        };
        self.wakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
        ticket
    }

    /// Joins the queue: the attempt must be blocked and queued.
    #[track_caller]
    pub fn queue(&self, req: &AcquireRequest) -> (Waiter, Blocked) {
        let mut w = self.waiter();
        let b = self.retry_blocked(req, &mut w);
        (w, b)
    }

    /// One queued attempt.
    pub fn attempt(&self, req: &AcquireRequest, w: &mut Waiter) -> Result<Attempt, StoreError> {
        self.store.acquire(req, Some(w))
    }

    /// One queued attempt that must be blocked, with a queue place.
    #[track_caller]
    pub fn retry_blocked(&self, req: &AcquireRequest, w: &mut Waiter) -> Blocked {
        match self.attempt(req, w) {
            Ok(Attempt::Blocked(b)) => {
                assert!(
                    b.position.is_some(),
                    "a queued attempt reports its place: {b:?}"
                );
                assert!(
                    w.seq.is_some(),
                    "a queued attempt gets a place in the queue"
                );
                b
            }
            other => panic!(
                "expected {:?} for {} to wait, got {other:?}",
                keys_of(req),
                req.holder.owner
            ),
        }
    }

    /// One queued attempt that must be granted.
    #[track_caller]
    pub fn retry_granted(&self, req: &AcquireRequest, w: &mut Waiter) -> Grant {
        match self.attempt(req, w) {
            Ok(Attempt::Granted(g)) => g,
            other => panic!(
                "expected {:?} for {} to be granted, got {other:?}",
                keys_of(req),
                req.holder.owner
            ),
        }
    }

    /// Every event of `key`, oldest first.
    pub fn history_of(&self, key: &str) -> Vec<Event> {
        let mut ev = self
            .store
            .history(&HistoryFilter {
                key: Some(key.to_string()),
                limit: 10_000,
                ..Default::default()
            })
            .expect("history");
        ev.reverse();
        ev
    }

    /// Every event, oldest first.
    pub fn history_all(&self) -> Vec<Event> {
        let mut ev = self
            .store
            .history(&HistoryFilter {
                limit: 100_000,
                ..Default::default()
            })
            .expect("history");
        ev.reverse();
        ev
    }

    /// Fences of the locks held on or covering `key`, in the store's order.
    pub fn holder_fences(&self, key: &str) -> Vec<u64> {
        let st = self.store.status(&self::key(key)).expect("status");
        st.holders.iter().map(|h| h.fence.0).collect()
    }

    /// Every held lock.
    pub fn list_all(&self) -> Vec<locksmith_core::LockInfo> {
        self.store.list(&ListFilter::default()).expect("list")
    }
}

fn keys_of(req: &AcquireRequest) -> Vec<&str> {
    req.keys.iter().map(Key::as_str).collect()
}

/// A valid key; panics on a bad one.
#[track_caller]
pub fn key(s: &str) -> Key {
    Key::new(s).expect("valid key")
}

/// A holder named `owner` for this process.
pub fn holder(owner: &str) -> Holder {
    locksmith_host::this_process(owner)
}

/// An exclusive, key-scoped, lease-less request of `keys` by `owner`;
/// change fields with struct update syntax.
pub fn request(owner: &str, keys: &[&str]) -> AcquireRequest {
    AcquireRequest::exclusive(keys.iter().map(|k| key(k)).collect(), holder(owner))
}

/// Renew or release `key` with the grant's handle.
pub fn by_handle(key: &str, g: &Grant) -> Target {
    Target {
        key: self::key(key),
        by: Proof::Handle(g.handle.clone()),
    }
}

/// Renew or release `key` as `owner` (local trust mode).
pub fn by_owner(key: &str, owner: &str) -> Target {
    Target {
        key: self::key(key),
        by: Proof::Owner(owner.to_string()),
    }
}

/// Whole seconds.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs every conformance case, each on a fresh harness from `make`.
pub fn run_all(make: Factory<'_>) {
    for (name, case) in CASES {
        eprintln!("conformance: {name}");
        case(make);
    }
}

/// Expands to one `#[test]` per conformance case for the given factory: an
/// expression usable as `&dyn Fn() -> Harness` (a function name or a closure).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@list tests ($make));
    };
    (@list $how:ident $args:tt) => {
        $crate::conformance_tests!(@$how $args
            exclusive_grant_and_conflict
            shared_readers_together_writer_blocked
            semaphore_slots_and_limit_mismatch
            tree_conflicts_with_descendants_and_ancestors
            fences_strictly_increase
            expired_lease_is_free
            max_hold_ends_a_tenure
            renew_extends_the_lease
            renew_of_an_ended_lock_is_lost
            release_by_handle_and_by_owner
            release_by_the_wrong_owner_is_refused
            release_twice_is_fine
            a_handle_of_another_lock_is_refused
            release_reason_failed_is_recorded
            multi_key_is_all_or_nothing
            fifo_queued_waiter_blocks_newcomer
            reader_does_not_barge_past_a_queued_writer
            semaphore_waiter_is_not_passed_by_a_newcomer
            priority_orders_the_queue
            queue_positions_are_reported
            deadlock_is_refused_and_named
            deadlock_closed_after_joining_is_refused
            lapsed_waiter_closes_no_cycle
            lapsed_waiter_queues_again
            steal_stale_takes_only_stale_locks
            force_and_force_release_record_forced
            request_id_replay_returns_the_same_grant
            request_id_of_an_ended_grant_is_not_replayed
            views_status_list_waiters_history_stats
            leave_queue_records_why
            malformed_requests_are_refused
        );
    };
    (@tests ($make:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case(&$make);
            }
        )*
    };
    (@table () $($case:ident)*) => {
        /// Every conformance case, by name.
        pub const CASES: &[(&str, $crate::Case)] = &[$((stringify!($case), $crate::conformance::$case)),*];
    };
}

conformance_tests!(@list table ());
