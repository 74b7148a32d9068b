//! Modes, scopes and fences: who may hold a key together, and the order of fences.

use super::*;

/// Exclusive: one holder; any other request on the key waits, also from the same owner.
pub fn exclusive_grant_and_conflict(make: Factory<'_>) {
    let h = make();
    let g = h.grant(&request("a", &["k"]));
    assert_eq!(g.owner, "a");
    assert!(!g.replayed);
    assert_eq!(g.locks.len(), 1);
    assert_eq!(g.locks[0].key, key("k"));
    assert!(g.locks[0].fence.0 > 0);
    assert_eq!(
        g.handle.grant(),
        Some(g.grant),
        "the handle names its grant"
    );
    assert_eq!(g.locks[0].expires_at, None, "no lease, no deadline");

    for req in [
        request("b", &["k"]),
        shared("b", &["k"]),
        sem("b", "k", 2),
        request("a", &["k"]),
    ] {
        let b = h.blocked(&req);
        assert_eq!(owners(&b), ["a"], "{:?}", req.mode);
        assert_eq!(b.holders[0].fence, g.locks[0].fence);
        assert_eq!(b.waiters_ahead, 0);
        assert_eq!(b.position, None, "a fail-fast attempt is not queued");
    }
    assert_eq!(h.holder_fences("k"), [fence(&g)], "refusals change nothing");
    h.grant(&request("b", &["k2"]));
    released(
        h.store
            .release(&by_handle("k", &g), ReleaseReason::Completed),
    );
    h.grant(&request("b", &["k"]));
}

/// Shared: readers hold together; a writer waits for every reader.
pub fn shared_readers_together_writer_blocked(make: Factory<'_>) {
    let h = make();
    let r1 = h.grant(&shared("r1", &["db"]));
    let r2 = h.grant(&shared("r2", &["db"]));
    assert!(fence(&r2) > fence(&r1));
    assert_eq!(owners(&h.blocked(&request("w", &["db"]))), ["r1", "r2"]);
    assert_eq!(owners(&h.blocked(&sem("s", "db", 2))), ["r1", "r2"]);
    assert_eq!(owners(&h.blocked(&tree("w", "db"))), ["r1", "r2"]);
    released(
        h.store
            .release(&by_handle("db", &r1), ReleaseReason::Completed),
    );
    assert_eq!(owners(&h.blocked(&request("w", &["db"]))), ["r2"]);
    released(
        h.store
            .release(&by_owner("db", "r2"), ReleaseReason::Completed),
    );
    h.grant(&request("w", &["db"]));
    assert_eq!(owners(&h.blocked(&shared("r3", &["db"]))), ["w"]);
}

/// Semaphore: up to N holders of the same key; another slot count is an error.
pub fn semaphore_slots_and_limit_mismatch(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&sem("a", "pool", 2));
    match h.store.acquire(&sem("x", "pool", 3), None) {
        Err(StoreError::LimitMismatch(m)) => {
            assert_eq!((m.held, m.asked), (2, 3));
        }
        other => panic!("expected a limit mismatch, got {other:?}"),
    }
    let b = h.grant(&sem("b", "pool", 2));
    assert!(fence(&b) > fence(&a));
    let blk = h.blocked(&sem("c", "pool", 2));
    assert_eq!(
        owners(&blk),
        ["a", "b"],
        "a full semaphore: every slot holder is in the way"
    );
    assert!(matches!(
        h.store.acquire(&sem("c", "pool", 3), None),
        Err(StoreError::LimitMismatch(_))
    ));
    assert!(matches!(
        h.store.acquire(&sem("c", "pool", 1), None),
        Err(StoreError::LimitMismatch(_))
    ));
    assert_eq!(owners(&h.blocked(&request("c", &["pool"]))), ["a", "b"]);
    assert_eq!(owners(&h.blocked(&shared("c", &["pool"]))), ["a", "b"]);
    assert!(matches!(
        h.store.acquire(&sem("c", "pool", 0), None),
        Err(StoreError::Invalid(_))
    ));
    released(
        h.store
            .release(&by_handle("pool", &a), ReleaseReason::Completed),
    );
    let c = h.grant(&sem("c", "pool", 2));
    assert!(fence(&c) > fence(&b));
    // Other keys are other semaphores.
    h.grant(&sem("d", "pool2", 3));
    assert_eq!(h.list_all().len(), 3);
}

/// Tree scope covers every key below; siblings sharing a text prefix are unrelated.
pub fn tree_conflicts_with_descendants_and_ancestors(make: Factory<'_>) {
    let h = make();
    let t = h.grant(&tree("a", "r/x"));
    for req in [
        request("b", &["r/x"]),
        request("b", &["r/x/1"]),
        request("b", &["r/x/1/2"]),
        shared("b", &["r/x/1"]),
        tree("b", "r"),
        tree("b", "r/x/1"),
    ] {
        let blk = h.blocked(&req);
        assert_eq!(owners(&blk), ["a"], "{:?} {:?}", req.keys, req.scope);
        assert_eq!(blk.holders[0].fence, t.locks[0].fence);
    }
    for k in ["r", "r/xy", "r/y", "rr/x", "x"] {
        h.grant(&request("b", &[k]));
    }
    // Held keys below stop a tree above them.
    h.grant(&request("c", &["s/a/b"]));
    for k in ["s", "s/a", "s/a/b"] {
        assert_eq!(owners(&h.blocked(&tree("d", k))), ["c"], "{k}");
    }
    for k in ["s/ab", "s/a/bc", "s/a/b/c"] {
        h.grant(&tree("d", k));
    }
    // Shared trees and shared keys below them go together.
    h.grant(&AcquireRequest {
        mode: SHARED,
        ..tree("e", "u")
    });
    h.grant(&shared("f", &["u/v"]));
    assert_eq!(owners(&h.blocked(&request("g", &["u/v/w"]))), ["e"]);
    assert_eq!(owners(&h.blocked(&tree("g", "u/v"))), ["e", "f"]);
    // Status of a key shows the tree lock covering it.
    let st = h.store.status(&key("r/x/1")).unwrap();
    assert!(!st.free);
    assert_eq!(
        st.holders
            .iter()
            .map(|i| i.owner.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(st.holders[0].scope, Scope::Tree);
}

/// Fences rise strictly across keys, grants, multi-key grants and releases.
pub fn fences_strictly_increase(make: Factory<'_>) {
    let h = make();
    let mut seen: Vec<u64> = Vec::new();
    let mut push = |f: u64| {
        if let Some(last) = seen.last() {
            assert!(f > *last, "fence {f} after {last}");
        }
        seen.push(f);
    };
    for i in 0..5 {
        let g = h.grant(&request("a", &["f1"]));
        push(fence(&g));
        let g2 = h.grant(&shared(&format!("o{i}"), &["f2"]));
        push(fence(&g2));
        released(
            h.store
                .release(&by_handle("f1", &g), ReleaseReason::Completed),
        );
        let m = h.grant(&request("m", &["m1", "m2", "m3"]));
        assert_eq!(
            m.locks.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
            ["m1", "m2", "m3"]
        );
        for l in &m.locks {
            push(l.fence.0);
        }
        for k in ["m1", "m2", "m3"] {
            released(h.store.release(&by_handle(k, &m), ReleaseReason::Completed));
        }
        h.advance(Duration::from_millis(1));
    }
    let stats = h.store.stats().unwrap();
    assert_eq!(stats.last_fence, *seen.last().unwrap());
}
