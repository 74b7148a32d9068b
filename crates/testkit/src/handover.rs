//! Hand-over: a release grants the head of the queue in its own
//! transaction when the waiter's locks would be bound to a process proven
//! alive on this host (see `locksmith_core::flow::wake_list`). For the
//! stores that hand over (embedded and PostgreSQL); a server's waiters are
//! not bound, so it never does.

use locksmith_core::ReleaseReason;

use crate::{Factory, Harness, by_handle, request};

/// `request`, bound to this (live) process.
pub fn bound(owner: &str, keys: &[&str]) -> locksmith_core::AcquireRequest {
    let req = request(owner, keys);
    locksmith_core::AcquireRequest {
        bind: Some(locksmith_core::Binding {
            pid: req.holder.pid,
            start: req.holder.pid_start,
            life_file: None,
        }),
        ..req
    }
}

/// Owner and fence of each holder of `key`.
pub fn holders_of(h: &Harness, key: &str) -> Vec<(String, u64)> {
    h.store
        .status(&crate::key(key))
        .unwrap()
        .holders
        .into_iter()
        .map(|l| (l.owner, l.fence.0))
        .collect()
}

/// A hand-over case on a fresh harness from `make`.
pub fn a_release_grants_the_head_of_the_queue_in_its_own_transaction(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k"]));
    let w_req = bound("w", &["k"]);
    let (mut w, _) = h.queue(&w_req);
    assert!(
        w.claim.is_some(),
        "the store keeps the request for a hand-over"
    );
    h.store
        .release(&by_handle("k", &a), ReleaseReason::Completed)
        .unwrap();
    // Granted before the waiter did anything: no newcomer can come between.
    let held = holders_of(&h, "k");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0, "w");
    let newcomer = h.blocked(&request("n", &["k"]));
    assert_eq!(newcomer.holders[0].owner, "w");
    let acquired = h
        .history_of("k")
        .into_iter()
        .rfind(|e| e.kind == locksmith_core::EventKind::Acquired)
        .unwrap();
    assert_eq!(acquired.owner, "w");
    assert!(acquired.detail.unwrap()["waited_ms"].is_u64());
    // The waiter's next attempt answers that grant as its own.
    let g = h.retry_granted(&w_req, &mut w);
    assert!(!g.replayed);
    assert_eq!(g.locks[0].fence.0, held[0].1);
    assert_eq!(g.grant, acquired.grant.unwrap());
    // Its handle is the grant's: it renews and releases.
    assert!(matches!(
        h.store.renew(&by_handle("k", &g), None).unwrap(),
        locksmith_core::Renewal::Renewed { .. }
    ));
    assert!(matches!(
        h.store
            .release(&by_handle("k", &g), ReleaseReason::Completed)
            .unwrap(),
        locksmith_core::Release::Released { .. }
    ));
    assert!(holders_of(&h, "k").is_empty());
}

/// A hand-over case on a fresh harness from `make`.
pub fn an_unbound_request_or_a_waiter_not_proven_alive_is_woken_not_handed_the_lock(
    make: Factory<'_>,
) {
    let h = make();
    // Not bound to a process: a dead waiter would keep the lock until its
    // lease, so it is only woken.
    let a = h.grant(&request("a", &["k"]));
    let (mut w, _) = h.queue(&request("w", &["k"]));
    h.store
        .release(&by_handle("k", &a), ReleaseReason::Completed)
        .unwrap();
    assert!(holders_of(&h, "k").is_empty());
    h.retry_granted(&request("w", &["k"]), &mut w);
    // Bound, but its wake socket is not bound: not proven alive.
    let b = h.grant(&request("b", &["j"]));
    let mut ghost = locksmith_core::Ticket {
        seq: None,
        wake: "@locksmith-test-nobody-listens".into(),
        claim: None,
    };
    h.retry_blocked(&bound("ghost", &["j"]), &mut ghost);
    h.store
        .release(&by_handle("j", &b), ReleaseReason::Completed)
        .unwrap();
    assert!(holders_of(&h, "j").is_empty());
}

/// A hand-over case on a fresh harness from `make`.
pub fn a_waiter_that_gives_up_after_its_hand_over_gives_the_lock_to_the_next(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k"]));
    let (w1, _) = h.queue(&bound("w1", &["k"]));
    let (mut w2, _) = h.queue(&bound("w2", &["k"]));
    h.store
        .release(&by_handle("k", &a), ReleaseReason::Completed)
        .unwrap();
    assert_eq!(holders_of(&h, "k")[0].0, "w1");
    // w1's deadline passed as it was granted: leaving gives the grant
    // back, and w2 is handed the lock in the same transaction.
    h.store
        .leave_queue(&w1, locksmith_core::store::LeaveReason::TimedOut)
        .unwrap();
    assert_eq!(holders_of(&h, "k")[0].0, "w2");
    let history = h.history_of("k");
    let released = history
        .iter()
        .find(|e| e.owner == "w1" && e.kind == locksmith_core::EventKind::Released)
        .expect("w1's grant was released");
    assert_eq!(released.reason, Some(ReleaseReason::Completed));
    assert_eq!(released.detail.as_ref().unwrap()["given_back"], true);
    // The history says why w1 did not keep it, as for any leave.
    assert!(
        history
            .iter()
            .any(|e| e.owner == "w1" && e.kind == locksmith_core::EventKind::WaitTimedOut),
        "{history:?}"
    );
    let g = h.retry_granted(&bound("w2", &["k"]), &mut w2);
    assert_eq!(g.owner, "w2");
}

/// A hand-over case on a fresh harness from `make`.
pub fn a_ticket_with_another_claim_picks_up_nothing(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k"]));
    let (w, _) = h.queue(&bound("w", &["k"]));
    h.store
        .release(&by_handle("k", &a), ReleaseReason::Completed)
        .unwrap();
    let forged = locksmith_core::Ticket {
        seq: w.seq,
        claim: Some("0".repeat(32)),
        ..h.waiter()
    };
    // Leaving with it gives nothing back.
    h.store
        .leave_queue(&forged, locksmith_core::store::LeaveReason::Cancelled)
        .unwrap();
    assert_eq!(holders_of(&h, "k")[0].0, "w");
    // Nor does an attempt answer the grant: it queues behind it.
    let mut forged = forged;
    match h.attempt(&bound("w", &["k"]), &mut forged).unwrap() {
        locksmith_core::Attempt::Blocked(b) => assert_eq!(b.holders[0].owner, "w"),
        other => panic!("a forged claim got {other:?}"),
    }
}

/// A hand-over case on a fresh harness from `make`.
pub fn a_waiter_bound_to_another_process_is_woken_not_handed_the_lock(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k"]));
    // Bound to a child process (as `acquire --pid` binds to the shell),
    // while this process waits: were it handed the lock and then died
    // before reading it, the lock would stay with the child, and nobody
    // would have its handle.
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep runs");
    let pid = child.id();
    let req = locksmith_core::AcquireRequest {
        bind: Some(locksmith_core::Binding {
            pid,
            start: locksmith_host::sys::process_start(pid),
            life_file: None,
        }),
        ..request("w", &["k"])
    };
    let (mut w, _) = h.queue(&req);
    h.store
        .release(&by_handle("k", &a), ReleaseReason::Completed)
        .unwrap();
    assert!(holders_of(&h, "k").is_empty(), "only woken");
    let g = h.retry_granted(&req, &mut w);
    assert_eq!(g.owner, "w");
    let _ = child.kill();
    let _ = child.wait();
}

/// Expands to one `#[test]` per hand-over case for the given factory.
#[macro_export]
macro_rules! handover_tests {
    ($make:expr) => {
        mod handover {
            #[test]
            fn a_release_grants_the_head_of_the_queue_in_its_own_transaction() {
                $crate::handover::a_release_grants_the_head_of_the_queue_in_its_own_transaction(&super::harness_for_handover());
            }
            #[test]
            fn an_unbound_request_or_a_waiter_not_proven_alive_is_woken_not_handed_the_lock() {
                $crate::handover::an_unbound_request_or_a_waiter_not_proven_alive_is_woken_not_handed_the_lock(&super::harness_for_handover());
            }
            #[test]
            fn a_waiter_that_gives_up_after_its_hand_over_gives_the_lock_to_the_next() {
                $crate::handover::a_waiter_that_gives_up_after_its_hand_over_gives_the_lock_to_the_next(&super::harness_for_handover());
            }
            #[test]
            fn a_waiter_bound_to_another_process_is_woken_not_handed_the_lock() {
                $crate::handover::a_waiter_bound_to_another_process_is_woken_not_handed_the_lock(
                    &super::harness_for_handover(),
                );
            }
            #[test]
            fn a_ticket_with_another_claim_picks_up_nothing() {
                $crate::handover::a_ticket_with_another_claim_picks_up_nothing(&super::harness_for_handover());
            }
        }
        fn harness_for_handover() -> impl Fn() -> $crate::Harness {
            $make
        }
    };
}
