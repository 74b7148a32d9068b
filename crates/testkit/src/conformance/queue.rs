//! The fair queue: first come first served, no barging, priorities, places, deadlocks and lapsed waiters.

use super::*;

/// FIFO: a queued waiter blocks a newcomer even when the holder is gone.
pub fn fifo_queued_waiter_blocks_newcomer(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k"]));
    let w_req = request("w", &["k"]);
    let (mut w, blk) = h.queue(&w_req);
    assert_eq!(blk.position, Some(1));
    assert_eq!(owners(&blk), ["a"]);
    released(
        h.store
            .release(&by_handle("k", &a), ReleaseReason::Completed),
    );
    let n = h.blocked(&request("n", &["k"]));
    assert!(n.holders.is_empty(), "{n:?}");
    assert_eq!(n.waiters_ahead, 1);
    // A newcomer with its own queue place lands behind.
    let n_req = request("n", &["k"]);
    let (mut nw, nb) = h.queue(&n_req);
    assert_eq!(nb.position, Some(2));
    let g = h.retry_granted(&w_req, &mut w);
    assert_eq!(g.owner, "w");
    let nb = h.retry_blocked(&n_req, &mut nw);
    assert_eq!(nb.position, Some(1));
    assert_eq!(nb.waiters_ahead, 0);
    released(
        h.store
            .release(&by_handle("k", &g), ReleaseReason::Completed),
    );
    h.blocked(&request("late", &["k"]));
    h.retry_granted(&n_req, &mut nw);
    // A waiter on a tree above blocks newcomers below it.
    h.grant(&request("x", &["p/q"]));
    let t_req = tree("t", "p");
    let (mut tw, _) = h.queue(&t_req);
    released(
        h.store
            .release(&by_owner("p/q", "x"), ReleaseReason::Completed),
    );
    assert_eq!(h.blocked(&request("y", &["p/r"])).waiters_ahead, 1);
    h.retry_granted(&t_req, &mut tw);
}

/// A reader may not barge past an earlier queued writer, although it fits with the readers holding.
pub fn reader_does_not_barge_past_a_queued_writer(make: Factory<'_>) {
    let h = make();
    let r1 = h.grant(&shared("r1", &["db"]));
    let w_req = request("w", &["db"]);
    let (mut w, _) = h.queue(&w_req);
    let r2 = h.blocked(&shared("r2", &["db"]));
    assert_eq!(r2.waiters_ahead, 1);
    assert!(
        r2.holders.is_empty(),
        "the reader is compatible with the holders: {r2:?}"
    );
    released(
        h.store
            .release(&by_handle("db", &r1), ReleaseReason::Completed),
    );
    h.retry_granted(&w_req, &mut w);
}

/// A semaphore waiter keeps its slot against newcomers once a slot frees up.
pub fn semaphore_waiter_is_not_passed_by_a_newcomer(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&sem("a", "pool", 2));
    h.grant(&sem("b", "pool", 2));
    let w_req = sem("w", "pool", 2);
    let (mut w, _) = h.queue(&w_req);
    released(
        h.store
            .release(&by_handle("pool", &a), ReleaseReason::Completed),
    );
    // One slot is free and w is first in line for it.
    let n = h.blocked(&sem("n", "pool", 2));
    assert_eq!(n.waiters_ahead, 1, "{n:?}");
    let g = h.retry_granted(&w_req, &mut w);
    assert_eq!(g.owner, "w");
    assert_eq!(h.list_all().len(), 2);
}

/// Priority orders the queue: higher first, then arrival.
pub fn priority_orders_the_queue(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k"]));
    let low_req = request("low", &["k"]);
    let high_req = AcquireRequest {
        priority: 5,
        ..request("high", &["k"])
    };
    let (mut low, b) = h.queue(&low_req);
    assert_eq!(b.position, Some(1));
    let (mut high, b) = h.queue(&high_req);
    assert_eq!(b.position, Some(1), "a higher priority goes first");
    assert_eq!(h.retry_blocked(&low_req, &mut low).position, Some(2));
    let ws = h.store.waiters(&ListFilter::default()).unwrap();
    let order: Vec<(&str, usize, i32)> = ws
        .iter()
        .map(|w| (w.owner.as_str(), w.position, w.priority))
        .collect();
    assert_eq!(order, [("high", 1, 5), ("low", 2, 0)]);
    released(
        h.store
            .release(&by_handle("k", &a), ReleaseReason::Completed),
    );
    let b = h.retry_blocked(&low_req, &mut low);
    assert_eq!(b.waiters_ahead, 1);
    h.retry_granted(&high_req, &mut high);
    // A newcomer of higher priority than every waiter is not held back by them.
    let mid = h.blocked(&AcquireRequest {
        priority: 1,
        ..request("mid", &["k"])
    });
    assert_eq!(mid.waiters_ahead, 0);
    assert_eq!(owners(&mid), ["high"]);
}

/// Waiters see their place; leaving moves the others up.
pub fn queue_positions_are_reported(make: Factory<'_>) {
    let h = make();
    h.grant(&request("a", &["k"]));
    let reqs: Vec<AcquireRequest> = ["w1", "w2", "w3"]
        .iter()
        .map(|o| request(o, &["k"]))
        .collect();
    let mut ws = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let (w, b) = h.queue(r);
        assert_eq!(b.position, Some(i + 1));
        assert_eq!(b.waiters_ahead, i);
        ws.push(w);
    }
    let st = h.store.status(&key("k")).unwrap();
    let places: Vec<(&str, usize)> = st
        .waiters
        .iter()
        .map(|w| (w.owner.as_str(), w.position))
        .collect();
    assert_eq!(places, [("w1", 1), ("w2", 2), ("w3", 3)]);
    assert_eq!(st.waiters[0].mode, Mode::Exclusive);
    h.store.leave_queue(&ws[0], LeaveReason::Cancelled).unwrap();
    assert_eq!(h.retry_blocked(&reqs[2], &mut ws[2]).position, Some(2));
    assert_eq!(h.retry_blocked(&reqs[1], &mut ws[1]).position, Some(1));
    // Waiters on a tree above count for keys below, and show in their status.
    let t_req = tree("t", "k2");
    h.grant(&request("b", &["k2/x"]));
    let (_tw, _) = h.queue(&t_req);
    let (_w, b) = h.queue(&request("u", &["k2/x"]));
    assert_eq!(b.position, Some(2));
    let st = h.store.status(&key("k2/x")).unwrap();
    let owners: Vec<&str> = st.waiters.iter().map(|w| w.owner.as_str()).collect();
    assert!(owners.contains(&"t") && owners.contains(&"u"), "{owners:?}");
}

/// A wait that would close a cycle fails at once, names the cycle and is recorded.
pub fn deadlock_is_refused_and_named(make: Factory<'_>) {
    let h = make();
    h.grant(&request("A", &["k1"]));
    h.grant(&request("B", &["k2"]));
    let a_req = request("A", &["k2"]);
    let (_aw, _) = h.queue(&a_req);
    let mut bw = h.waiter();
    match h.attempt(&request("B", &["k1"]), &mut bw) {
        Err(e @ StoreError::Deadlock { .. }) => {
            let text = e.to_string();
            let StoreError::Deadlock { key: k, cycle } = e else {
                unreachable!()
            };
            assert_eq!(k, key("k1"));
            assert_eq!(cycle, ["B", "A", "B"]);
            assert!(text.contains("B -> A -> B"), "{text}");
        }
        other => panic!("expected a deadlock refusal, got {other:?}"),
    }
    let ws = h.store.waiters(&ListFilter::default()).unwrap();
    assert_eq!(
        ws.iter().map(|w| w.owner.as_str()).collect::<Vec<_>>(),
        ["A"],
        "B was not queued"
    );
    let ev: Vec<_> = h
        .history_all()
        .into_iter()
        .filter(|e| e.kind == EventKind::DeadlockRefused)
        .collect();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].key.as_str(), ev[0].owner.as_str()), ("k1", "B"));
    assert_eq!(ev[0].detail, Some(json!({ "cycle": ["B", "A", "B"] })));
    // Fail-fast never waits, so it is never refused as a deadlock.
    h.blocked(&request("B", &["k1"]));
    // Three parties.
    h.grant(&request("C", &["k3"]));
    let (_bw2, _) = h.queue(&request("B", &["k3"]));
    let mut cw = h.waiter();
    match h.attempt(&request("C", &["k1"]), &mut cw) {
        Err(StoreError::Deadlock { cycle, .. }) => assert_eq!(cycle, ["C", "A", "B", "C"]),
        other => panic!("expected a deadlock refusal, got {other:?}"),
    }
    // Without a cycle a wait is fine.
    let (_dw, _) = h.queue(&request("D", &["k1"]));
}

/// A cycle can also close after a request joined the queue: a request of
/// higher priority queues ahead of a waiter whose lock it needs, or is
/// granted a lock a waiter wants. The next attempt of a request on the
/// cycle is refused.
pub fn deadlock_closed_after_joining_is_refused(make: Factory<'_>) {
    let h = make();
    // Y holds k1 and waits for k2 (held by Z). X, of higher priority, wants
    // k1 and k2: it queues ahead of Y on k2 and waits for Y's k1.
    h.grant(&request("Y", &["k1"]));
    h.grant(&request("Z", &["k2"]));
    let y_req = request("Y", &["k2"]);
    let (mut yw, _) = h.queue(&y_req);
    let x_req = AcquireRequest {
        priority: 5,
        ..request("X", &["k1", "k2"])
    };
    let (mut xw, _) = h.queue(&x_req);
    // Now X waits for Y (k1) and Y waits for X (queued ahead of it on k2).
    match h.attempt(&x_req, &mut xw) {
        Err(StoreError::Deadlock { cycle, .. }) => assert_eq!(cycle, ["X", "Y", "X"]),
        other => panic!("X and Y wait for each other; expected a refusal, got {other:?}"),
    }
    assert_eq!(xw.seq, None, "the refused request left the queue");
    h.retry_blocked(&y_req, &mut yw);

    // B holds m2 and A waits for it; B waits for m1. A, of higher priority,
    // is then granted m1: B now waits for A while A waits for B.
    let h = make();
    h.grant(&request("B", &["m2"]));
    let c = h.grant(&request("C", &["m1"]));
    let (_aw, _) = h.queue(&request("A", &["m2"]));
    let b_req = request("B", &["m1"]);
    let (mut bw, _) = h.queue(&b_req);
    released(
        h.store
            .release(&by_handle("m1", &c), ReleaseReason::Completed),
    );
    h.grant(&AcquireRequest {
        priority: 5,
        ..request("A", &["m1"])
    });
    match h.attempt(&b_req, &mut bw) {
        Err(StoreError::Deadlock { cycle, .. }) => assert_eq!(cycle, ["B", "A", "B"]),
        other => panic!("A and B wait for each other; expected a refusal, got {other:?}"),
    }
    let refused = h
        .history_all()
        .into_iter()
        .filter(|e| e.kind == EventKind::DeadlockRefused)
        .count();
    assert_eq!(refused, 1);
}

/// A waiter that stopped refreshing its place is gone: it cannot close a cycle.
pub fn lapsed_waiter_closes_no_cycle(make: Factory<'_>) {
    let h = make();
    h.grant(&request("A", &["k1"]));
    h.grant(&request("B", &["k2"]));
    let (_aw, _) = h.queue(&request("A", &["k2"]));
    h.advance(REFRESH * 10);
    assert!(
        h.store.waiters(&ListFilter::default()).unwrap().is_empty(),
        "a waiter that stopped refreshing is not listed"
    );
    let mut bw = h.waiter();
    match h.attempt(&request("B", &["k1"]), &mut bw) {
        Ok(Attempt::Blocked(b)) => assert_eq!(b.position, Some(1)),
        other => panic!("A no longer waits, so B's wait closes no cycle; got {other:?}"),
    }
}

/// A waiter whose place lapsed and comes back is queued again, visibly, at the back.
pub fn lapsed_waiter_queues_again(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k"]));
    let w_req = request("w", &["k"]);
    let (mut w, _) = h.queue(&w_req);
    h.advance(REFRESH * 10);
    // Another waiter arrives while w's place has lapsed.
    let n_req = request("n", &["k"]);
    let (mut n, nb) = h.queue(&n_req);
    assert_eq!(nb.position, Some(1));
    // w comes back: it must be in the queue again, behind n.
    let wb = h.retry_blocked(&w_req, &mut w);
    let ws = h.store.waiters(&ListFilter::default()).unwrap();
    let listed: Vec<(&str, usize)> = ws.iter().map(|x| (x.owner.as_str(), x.position)).collect();
    assert_eq!(listed, [("n", 1), ("w", 2)], "w reported {wb:?}");
    assert_eq!(wb.position, Some(2));
    released(
        h.store
            .release(&by_handle("k", &a), ReleaseReason::Completed),
    );
    assert_eq!(h.retry_blocked(&w_req, &mut w).waiters_ahead, 1);
    h.retry_granted(&n_req, &mut n);
}
