//! The conformance cases: what every store must do, written against
//! `&dyn Store` only. Each case takes a factory and builds its own fresh
//! store; time moves only through the harness's [`ManualClock`](locksmith_core::ManualClock).

use std::time::Duration;

use locksmith_core::Clock;
use locksmith_core::decide::REFRESH;
use locksmith_core::store::{HistoryFilter, LeaveReason, ListFilter, Release, Renewal};
use locksmith_core::{
    AcquireRequest, Attempt, EventKind, Health, Mode, ReleaseReason, Scope, StoreError, Takeover,
};
use serde_json::json;

use crate::{Factory, Harness, by_handle, by_owner, key, request, secs};

const SHARED: Mode = Mode::Shared;

fn shared(owner: &str, keys: &[&str]) -> AcquireRequest {
    AcquireRequest {
        mode: SHARED,
        ..request(owner, keys)
    }
}

fn sem(owner: &str, k: &str, limit: u32) -> AcquireRequest {
    AcquireRequest {
        mode: Mode::Semaphore { limit },
        ..request(owner, &[k])
    }
}

fn tree(owner: &str, k: &str) -> AcquireRequest {
    AcquireRequest {
        scope: Scope::Tree,
        ..request(owner, &[k])
    }
}

fn leased(owner: &str, k: &str, ttl: Duration) -> AcquireRequest {
    AcquireRequest {
        ttl: Some(ttl),
        ..request(owner, &[k])
    }
}

fn fence(g: &locksmith_core::Grant) -> u64 {
    g.locks[0].fence.0
}

fn owners(b: &locksmith_core::Blocked) -> Vec<String> {
    let mut o: Vec<String> = b.holders.iter().map(|h| h.owner.clone()).collect();
    o.sort();
    o
}

/// Ending events (those with a reason) of `key`, as `(kind, reason, fence)`.
fn endings(h: &Harness, k: &str) -> Vec<(EventKind, ReleaseReason, Option<u64>)> {
    h.history_of(k)
        .into_iter()
        .filter_map(|e| e.reason.map(|r| (e.kind, r, e.fence.map(|f| f.0))))
        .collect()
}

fn released(r: Result<Release, StoreError>) -> (String, u64, Duration) {
    match r {
        Ok(Release::Released {
            key,
            fence,
            held_for,
        }) => (key.to_string(), fence.0, held_for),
        other => panic!("expected Released, got {other:?}"),
    }
}

fn renewed(r: Result<Renewal, StoreError>) -> Vec<locksmith_core::GrantedLock> {
    match r {
        Ok(Renewal::Renewed { locks }) => locks,
        other => panic!("expected Renewed, got {other:?}"),
    }
}

fn lost(r: Result<Renewal, StoreError>) -> Option<ReleaseReason> {
    match r {
        Ok(Renewal::Lost { reason, .. }) => reason,
        other => panic!("expected Lost, got {other:?}"),
    }
}

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

/// An expired lease is free to the next acquire, with no sweeper; the history says why.
pub fn expired_lease_is_free(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&leased("a", "k", secs(10)));
    let deadline = a.locks[0]
        .expires_at
        .expect("a leased grant has a deadline");
    let t0 = h.clock.now().wall.0;
    assert_eq!(deadline.0, t0 + 10_000);
    let b = h.blocked(&request("b", &["k"]));
    assert!(
        b.retry_after.is_some(),
        "a blocked attempt says when the lease in the way runs out"
    );
    h.advance(secs(9));
    h.blocked(&request("b", &["k"]));
    let info = &h.list_all()[0];
    assert_eq!(info.health, Health::Healthy);
    assert_eq!(info.expires_in, Some(secs(1)));
    h.advance(secs(1) + Duration::from_millis(1));
    let st = h.store.status(&key("k")).unwrap();
    assert!(st.free, "an expired lease does not hold its key: {st:?}");
    assert!(st.holders.iter().all(|i| i.health == Health::Expired));
    let g = h.grant(&request("b", &["k"]));
    assert!(fence(&g) > fence(&a));
    assert_eq!(
        endings(&h, "k"),
        [(
            EventKind::Expired,
            ReleaseReason::LeaseExpired,
            Some(fence(&a))
        )]
    );
    let kinds: Vec<EventKind> = h.history_of("k").iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Acquired, EventKind::Expired, EventKind::Acquired]
    );
    // Tree and multi-key requests also see through an expired lease.
    h.grant(&leased("c", "t/1", secs(5)));
    h.grant(&leased("c", "u", secs(5)));
    h.advance(secs(6));
    h.grant(&tree("d", "t"));
    h.grant(&request("d", &["u", "v"]));
}

/// `max_hold` ends a tenure however often it is renewed.
pub fn max_hold_ends_a_tenure(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&AcquireRequest {
        max_hold: Some(secs(60)),
        ..request("a", &["k"])
    });
    h.advance(secs(30));
    renewed(h.store.renew(&by_handle("k", &a), None));
    h.blocked(&request("b", &["k"]));
    h.advance(secs(31));
    let b = h.grant(&request("b", &["k"]));
    assert_eq!(
        endings(&h, "k"),
        [(EventKind::Expired, ReleaseReason::MaxHold, Some(fence(&a)))]
    );
    assert_eq!(
        lost(h.store.renew(&by_handle("k", &a), None)),
        Some(ReleaseReason::MaxHold)
    );
    assert_eq!(h.holder_fences("k"), [fence(&b)]);

    // With a lease renewed in time, the cap still ends it.
    let c = h.grant(&AcquireRequest {
        ttl: Some(secs(20)),
        max_hold: Some(secs(50)),
        ..request("c", &["m"])
    });
    for _ in 0..3 {
        h.advance(secs(15));
        renewed(h.store.renew(&by_handle("m", &c), None));
    }
    h.advance(secs(5));
    assert_eq!(
        lost(h.store.renew(&by_handle("m", &c), None)),
        Some(ReleaseReason::MaxHold)
    );
    h.grant(&request("d", &["m"]));
}

/// Renew moves the deadline forward, optionally to a new length, for every key of the grant.
pub fn renew_extends_the_lease(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&leased("a", "k", secs(10)));
    h.advance(secs(8));
    let locks = renewed(h.store.renew(&by_handle("k", &a), None));
    let now = h.clock.now().wall.0;
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].fence, a.locks[0].fence, "renewing keeps the fence");
    assert_eq!(locks[0].expires_at.map(|w| w.0), Some(now + 10_000));
    h.advance(secs(8));
    h.blocked(&request("b", &["k"]));
    let locks = renewed(h.store.renew(&by_owner("k", "a"), Some(secs(30))));
    assert_eq!(
        locks[0].expires_at.map(|w| w.0),
        Some(h.clock.now().wall.0 + 30_000)
    );
    h.advance(secs(25));
    h.blocked(&request("b", &["k"]));
    let info = &h.list_all()[0];
    assert_eq!(info.ttl, Some(secs(30)));
    assert_eq!(info.expires_in, Some(secs(5)));
    assert_eq!(info.since_seen, secs(25));
    assert_eq!(info.held_for, secs(41));
    // A renew by someone else's owner name or handle is refused and changes nothing.
    assert!(matches!(
        h.store.renew(&by_owner("k", "b"), None),
        Err(StoreError::NotHolder { .. })
    ));
    let forged =
        locksmith_core::LeaseHandle::from_text(format!("lh1.{}.{}", a.grant, "0".repeat(32)));
    let t = locksmith_core::store::Target {
        key: key("k"),
        by: locksmith_core::store::Proof::Handle(forged),
    };
    assert!(matches!(
        h.store.renew(&t, None),
        Err(StoreError::NotHolder { .. })
    ));
    assert_eq!(
        h.list_all()
            .iter()
            .find(|i| i.key == key("k"))
            .unwrap()
            .expires_in,
        Some(secs(5))
    );

    // One renew covers every lock of the grant.
    let m = h.grant(&AcquireRequest {
        ttl: Some(secs(10)),
        ..request("m", &["m1", "m2"])
    });
    h.advance(secs(9));
    let locks = renewed(h.store.renew(&by_handle("m1", &m), None));
    let mut keys: Vec<&str> = locks.iter().map(|l| l.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["m1", "m2"]);
    h.advance(secs(9));
    h.blocked(&request("x", &["m2"]));
}

/// A renew of a lock no longer held answers `lost` with the reason.
pub fn renew_of_an_ended_lock_is_lost(make: Factory<'_>) {
    let h = make();
    // Expired, nobody took it since.
    let a = h.grant(&leased("a", "k1", secs(5)));
    h.advance(secs(6));
    assert_eq!(
        lost(h.store.renew(&by_handle("k1", &a), None)),
        Some(ReleaseReason::LeaseExpired)
    );
    assert!(h.store.status(&key("k1")).unwrap().holders.is_empty());
    // Expired and taken over by the next acquire.
    let a = h.grant(&leased("a", "k2", secs(5)));
    h.advance(secs(6));
    h.grant(&request("b", &["k2"]));
    assert_eq!(
        lost(h.store.renew(&by_handle("k2", &a), None)),
        Some(ReleaseReason::LeaseExpired)
    );
    assert_eq!(
        lost(h.store.renew(&by_owner("k2", "a"), None)),
        Some(ReleaseReason::LeaseExpired)
    );
    // Force-released by an administrator.
    let a = h.grant(&request("a", &["k3"]));
    let ended = h.store.force_release(&key("k3"), "stuck job").unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(
        lost(h.store.renew(&by_handle("k3", &a), None)),
        Some(ReleaseReason::Forced)
    );
    // Forced out by a takeover.
    let a = h.grant(&leased("a", "k4", secs(60)));
    h.grant(&AcquireRequest {
        takeover: Takeover::Force {
            reason: "deploy".into(),
        },
        ..request("b", &["k4"])
    });
    assert_eq!(
        lost(h.store.renew(&by_handle("k4", &a), None)),
        Some(ReleaseReason::Forced)
    );
    // Released.
    let a = h.grant(&request("a", &["k5"]));
    released(
        h.store
            .release(&by_handle("k5", &a), ReleaseReason::Completed),
    );
    assert_eq!(
        lost(h.store.renew(&by_handle("k5", &a), None)),
        Some(ReleaseReason::Completed)
    );
}

/// Release with the handle or the owner name ends the tenure and frees the key.
pub fn release_by_handle_and_by_owner(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k"]));
    h.advance(secs(7));
    let (k, f, held_for) = released(
        h.store
            .release(&by_handle("k", &a), ReleaseReason::Completed),
    );
    assert_eq!((k.as_str(), f, held_for), ("k", fence(&a), secs(7)));
    assert!(h.store.status(&key("k")).unwrap().free);
    let b = h.grant(&request("b", &["k"]));
    let (_, f, _) = released(
        h.store
            .release(&by_owner("k", "b"), ReleaseReason::Completed),
    );
    assert_eq!(f, fence(&b));
    assert!(h.list_all().is_empty());
    assert_eq!(
        endings(&h, "k"),
        [
            (
                EventKind::Released,
                ReleaseReason::Completed,
                Some(fence(&a))
            ),
            (
                EventKind::Released,
                ReleaseReason::Completed,
                Some(fence(&b))
            ),
        ]
    );
    // Releasing one key of a multi-key grant keeps the others.
    let m = h.grant(&request("m", &["m1", "m2"]));
    released(
        h.store
            .release(&by_handle("m1", &m), ReleaseReason::Completed),
    );
    h.grant(&request("x", &["m1"]));
    h.blocked(&request("x", &["m2"]));
}

/// A different owner (or a wrong handle) is refused and the lock is unchanged.
pub fn release_by_the_wrong_owner_is_refused(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&leased("a", "k", secs(30)));
    let before = h.list_all();
    match h
        .store
        .release(&by_owner("k", "intruder"), ReleaseReason::Completed)
    {
        Err(StoreError::NotHolder { key: k, holders }) => {
            assert_eq!(k, key("k"));
            assert!(holders.contains('a'), "{holders}");
        }
        other => panic!("expected NotHolder, got {other:?}"),
    }
    // Another grant's handle does not release this key either.
    let other = h.grant(&request("b", &["other"]));
    let r = h
        .store
        .release(&by_handle("k", &other), ReleaseReason::Completed);
    assert!(
        matches!(
            r,
            Ok(Release::NotHeld { .. }) | Err(StoreError::NotHolder { .. })
        ),
        "{r:?}"
    );
    // A forged secret is refused.
    let forged =
        locksmith_core::LeaseHandle::from_text(format!("lh1.{}.{}", a.grant, "f".repeat(32)));
    let t = locksmith_core::store::Target {
        key: key("k"),
        by: locksmith_core::store::Proof::Handle(forged),
    };
    assert!(matches!(
        h.store.release(&t, ReleaseReason::Completed),
        Err(StoreError::NotHolder { .. })
    ));
    // A malformed handle is refused.
    let bad = locksmith_core::store::Target {
        key: key("k"),
        by: locksmith_core::store::Proof::Handle(locksmith_core::LeaseHandle::from_text(
            "nonsense",
        )),
    };
    assert!(h.store.release(&bad, ReleaseReason::Completed).is_err());
    let after: Vec<_> = h
        .list_all()
        .into_iter()
        .filter(|i| i.key == key("k"))
        .collect();
    assert_eq!(after, before, "the lock is unchanged");
    assert!(endings(&h, "k").is_empty());
    released(
        h.store
            .release(&by_handle("k", &a), ReleaseReason::Completed),
    );
}

/// Releasing twice, or releasing what was never held, is not an error.
pub fn release_twice_is_fine(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k"]));
    released(
        h.store
            .release(&by_handle("k", &a), ReleaseReason::Completed),
    );
    match h
        .store
        .release(&by_handle("k", &a), ReleaseReason::Completed)
    {
        Ok(Release::NotHeld { key: k, reason }) => {
            assert_eq!(k, key("k"));
            assert_eq!(reason, Some(ReleaseReason::Completed));
        }
        other => panic!("expected NotHeld, got {other:?}"),
    }
    assert!(matches!(
        h.store
            .release(&by_owner("k", "a"), ReleaseReason::Completed),
        Ok(Release::NotHeld { .. })
    ));
    assert!(matches!(
        h.store
            .release(&by_owner("never", "nobody"), ReleaseReason::Completed),
        Ok(Release::NotHeld { reason: None, .. })
    ));
    // Twice by handle while someone else holds the key now: still not an error, and theirs stays.
    let b = h.grant(&request("b", &["k"]));
    assert!(matches!(
        h.store
            .release(&by_handle("k", &a), ReleaseReason::Completed),
        Ok(Release::NotHeld { .. })
    ));
    assert_eq!(h.holder_fences("k"), [fence(&b)]);
    // The same by owner name: the second release is not refused as someone else's.
    h.grant(&request("d", &["o"]));
    released(
        h.store
            .release(&by_owner("o", "d"), ReleaseReason::Completed),
    );
    let e = h.grant(&request("e", &["o"]));
    match h
        .store
        .release(&by_owner("o", "d"), ReleaseReason::Completed)
    {
        Ok(Release::NotHeld { reason, .. }) => assert_eq!(reason, Some(ReleaseReason::Completed)),
        other => panic!("releasing twice by owner name: expected NotHeld, got {other:?}"),
    }
    assert_eq!(h.holder_fences("o"), [fence(&e)]);
    // A lease that ran out: releasing it is not an error and says why it ended.
    let c = h.grant(&leased("c", "e", secs(5)));
    h.advance(secs(6));
    match h
        .store
        .release(&by_handle("e", &c), ReleaseReason::Completed)
    {
        Ok(Release::NotHeld { reason, .. }) => {
            assert_eq!(reason, Some(ReleaseReason::LeaseExpired))
        }
        other => panic!("expected NotHeld, got {other:?}"),
    }
}

/// `--reason failed` is recorded as such.
pub fn release_reason_failed_is_recorded(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["job"]));
    released(
        h.store
            .release(&by_handle("job", &a), ReleaseReason::Failed),
    );
    assert_eq!(
        endings(&h, "job"),
        [(EventKind::Released, ReleaseReason::Failed, Some(fence(&a)))]
    );
    let stats = h.store.stats().unwrap();
    assert_eq!(stats.releases.get("failed"), Some(&1));
    assert_eq!(
        lost(h.store.renew(&by_handle("job", &a), None)),
        Some(ReleaseReason::Failed)
    );
}

/// Several keys: all or none, never a partial set.
pub fn multi_key_is_all_or_nothing(make: Factory<'_>) {
    let h = make();
    let b = h.grant(&request("b", &["k2"]));
    let blk = h.blocked(&request("a", &["k1", "k2", "k3"]));
    assert_eq!(owners(&blk), ["b"]);
    for k in ["k1", "k3"] {
        assert!(
            h.store.status(&key(k)).unwrap().free,
            "{k} was not granted partially"
        );
    }
    assert_eq!(h.list_all().len(), 1);
    assert!(
        h.history_all().iter().all(|e| e.owner != "a"),
        "nothing recorded for a"
    );
    // Through a tree too.
    h.grant(&request("c", &["t/deep/x"]));
    let blk = h.blocked(&AcquireRequest {
        scope: Scope::Tree,
        ..request("a", &["s", "t"])
    });
    assert_eq!(owners(&blk), ["c"]);
    assert!(h.store.status(&key("s")).unwrap().free);
    released(
        h.store
            .release(&by_handle("k2", &b), ReleaseReason::Completed),
    );
    let g = h.grant(&request("a", &["k1", "k2", "k3"]));
    let fences: Vec<u64> = g.locks.iter().map(|l| l.fence.0).collect();
    assert!(fences.windows(2).all(|w| w[1] > w[0]), "{fences:?}");
    assert_eq!(
        g.locks.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
        ["k1", "k2", "k3"]
    );
    assert!(
        g.locks
            .iter()
            .all(|l| g.handle.grant() == Some(g.grant) && l.fence.0 >= g.grant as u64)
    );
}

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

/// `steal-stale` takes a lock over only when every holder in the way is stale.
pub fn steal_stale_takes_only_stale_locks(make: Factory<'_>) {
    let h = make();
    let steal = |owner: &str, k: &str| AcquireRequest {
        takeover: Takeover::StealStale,
        ..request(owner, &[k])
    };
    let a = h.grant(&request("a", &["k"]));
    let blk = h.blocked(&steal("b", "k"));
    assert_eq!(owners(&blk), ["a"], "a healthy holder is not stolen from");
    assert!(endings(&h, "k").is_empty());
    // Let it go stale: no sign of life for the store's stale_after.
    let mut waited = Duration::ZERO;
    while h.list_all()[0].health != Health::Stale {
        assert!(waited < secs(7 * 86_400), "never went stale");
        h.advance(secs(60));
        waited += secs(60);
    }
    h.blocked(&request("b", &["k"]));
    let g = h.grant(&steal("b", "k"));
    assert!(fence(&g) > fence(&a));
    assert_eq!(
        endings(&h, "k"),
        [(EventKind::Stolen, ReleaseReason::Stolen, Some(fence(&a)))]
    );
    assert_eq!(
        lost(h.store.renew(&by_handle("k", &a), None)),
        Some(ReleaseReason::Stolen)
    );
    // A renewal keeps a lock fresh, so it is not stolen.
    let c = h.grant(&request("c", &["m"]));
    h.advance(waited - secs(60));
    renewed(h.store.renew(&by_handle("m", &c), None));
    h.advance(waited - secs(60));
    h.blocked(&steal("d", "m"));
    // An expired lease is simply free.
    h.grant(&leased("e", "x", secs(5)));
    h.advance(secs(6));
    h.grant(&steal("f", "x"));
}

/// `force` and `force-release` end the holders in the way and record `forced`.
pub fn force_and_force_release_record_forced(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&leased("a", "k", secs(600)));
    let force = |owner: &str, why: &str| AcquireRequest {
        takeover: Takeover::Force { reason: why.into() },
        ..request(owner, &["k"])
    };
    assert!(matches!(
        h.store.acquire(&force("b", " "), None),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(h.holder_fences("k"), [fence(&a)]);
    let b = h.grant(&force("b", "deploy stuck"));
    assert!(fence(&b) > fence(&a));
    assert_eq!(
        endings(&h, "k"),
        [(EventKind::Forced, ReleaseReason::Forced, Some(fence(&a)))]
    );
    let ev = h
        .history_of("k")
        .into_iter()
        .find(|e| e.kind == EventKind::Forced)
        .unwrap();
    assert_eq!(ev.owner, "a", "the event names the holder pushed out");
    assert!(ev.detail.unwrap().to_string().contains("deploy stuck"));
    assert_eq!(
        lost(h.store.renew(&by_handle("k", &a), None)),
        Some(ReleaseReason::Forced)
    );
    // force-release ends every holder of the key.
    assert!(matches!(
        h.store.force_release(&key("k"), ""),
        Err(StoreError::Invalid(_))
    ));
    h.grant(&shared("s1", &["r"]));
    h.grant(&shared("s2", &["r"]));
    let ended = h.store.force_release(&key("r"), "maintenance").unwrap();
    let mut who: Vec<&str> = ended.iter().map(|i| i.owner.as_str()).collect();
    who.sort();
    assert_eq!(who, ["s1", "s2"]);
    assert!(h.store.status(&key("r")).unwrap().free);
    let forced: Vec<_> = endings(&h, "r").into_iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(forced, [(EventKind::Forced, ReleaseReason::Forced); 2]);
    assert!(
        h.store
            .force_release(&key("free"), "nothing")
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.store.stats().unwrap().releases.get("forced"), Some(&3));
}

/// A repeated request id returns the same grant instead of a second holder.
pub fn request_id_replay_returns_the_same_grant(make: Factory<'_>) {
    let h = make();
    let req = AcquireRequest {
        request_id: Some("req-1".into()),
        ttl: Some(secs(30)),
        ..request("a", &["k1", "k2"])
    };
    let g1 = h.grant(&req);
    let g2 = h.grant(&req);
    assert!(g2.replayed);
    assert_eq!(g2.grant, g1.grant);
    assert_eq!(g2.handle.expose(), g1.handle.expose());
    assert_eq!(g2.locks, g1.locks);
    assert_eq!(g2.ttl, g1.ttl);
    assert_eq!(h.list_all().len(), 2, "no second holder");
    assert_eq!(
        h.history_all()
            .iter()
            .filter(|e| e.kind == EventKind::Acquired)
            .count(),
        2
    );
    // The same id from another owner is another request.
    let other = h.blocked(&AcquireRequest {
        request_id: Some("req-1".into()),
        ..request("b", &["k1"])
    });
    assert_eq!(owners(&other), ["a"]);
    // The same id for other keys is refused.
    let r = h.store.acquire(
        &AcquireRequest {
            request_id: Some("req-1".into()),
            ..request("a", &["k3"])
        },
        None,
    );
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    // After release the id makes a new grant.
    for k in ["k1", "k2"] {
        released(
            h.store
                .release(&by_handle(k, &g1), ReleaseReason::Completed),
        );
    }
    let g3 = h.grant(&req);
    assert!(!g3.replayed);
    assert!(fence(&g3) > g1.locks[1].fence.0);
}

/// A repeat of a request whose grant has ended is not answered with the dead grant.
pub fn request_id_of_an_ended_grant_is_not_replayed(make: Factory<'_>) {
    let h = make();
    let req = AcquireRequest {
        request_id: Some("req-9".into()),
        ttl: Some(secs(5)),
        ..request("a", &["k"])
    };
    let g1 = h.grant(&req);
    h.advance(secs(6));
    match h.store.acquire(&req, None) {
        Ok(Attempt::Granted(g)) => {
            assert!(!g.replayed, "the old grant's lease ran out: {g:?}");
            assert!(fence(&g) > fence(&g1));
            renewed(h.store.renew(&by_handle("k", &g), None));
        }
        other => panic!("expected a new grant, got {other:?}"),
    }
    assert_eq!(
        endings(&h, "k"),
        [(
            EventKind::Expired,
            ReleaseReason::LeaseExpired,
            Some(fence(&g1))
        )]
    );
}

/// status, list, waiters, history and stats show what is going on, never a handle.
pub fn views_status_list_waiters_history_stats(make: Factory<'_>) {
    let h = make();
    let meta = json!({ "pr": 42 });
    let a = h.grant(&AcquireRequest {
        ttl: Some(secs(30)),
        max_hold: Some(secs(3600)),
        holder: locksmith_core::Holder {
            task: Some("task-7".into()),
            metadata: Some(meta.clone()),
            ..crate::holder("agent-1")
        },
        ..request("agent-1", &["repo/acme"])
    });
    h.advance(secs(4));
    let st = h.store.status(&key("repo/acme")).unwrap();
    assert!(!st.free);
    assert_eq!(st.key, key("repo/acme"));
    let i = &st.holders[0];
    assert_eq!(i.owner, "agent-1");
    assert_eq!(i.task.as_deref(), Some("task-7"));
    assert_eq!(i.metadata, Some(meta));
    assert_eq!(i.fence, a.locks[0].fence);
    assert_eq!(i.grant, a.grant);
    assert_eq!(i.mode, Mode::Exclusive);
    assert_eq!(i.scope, Scope::Key);
    assert_eq!(i.pid, std::process::id());
    assert_eq!(i.held_for, secs(4));
    assert_eq!(i.expires_in, Some(secs(26)));
    assert_eq!(i.expires_at, a.locks[0].expires_at);
    assert_eq!(i.ttl, Some(secs(30)));
    assert_eq!(i.max_hold, Some(secs(3600)));
    assert_eq!(i.health, Health::Healthy);
    assert!(h.store.status(&key("repo/other")).unwrap().free);

    h.grant(&shared("agent-2", &["repo/beta"]));
    h.grant(&shared("agent-3", &["repo/beta"]));
    h.grant(&request("agent-2", &["task/1"]));
    let (_w, _) = h.queue(&request("agent-9", &["repo/acme"]));
    let keys = |f: ListFilter| -> Vec<(String, String)> {
        h.store
            .list(&f)
            .unwrap()
            .into_iter()
            .map(|i| (i.key.to_string(), i.owner))
            .collect()
    };
    assert_eq!(
        keys(ListFilter::default()),
        [
            ("repo/acme".into(), "agent-1".into()),
            ("repo/beta".into(), "agent-2".into()),
            ("repo/beta".into(), "agent-3".into()),
            ("task/1".into(), "agent-2".into()),
        ]
    );
    assert_eq!(
        keys(ListFilter {
            owner: Some("agent-2".into()),
            ..Default::default()
        }),
        [
            ("repo/beta".into(), "agent-2".into()),
            ("task/1".into(), "agent-2".into())
        ]
    );
    assert_eq!(
        keys(ListFilter {
            prefix: Some("task/".into()),
            ..Default::default()
        }),
        [("task/1".into(), "agent-2".into())]
    );
    assert_eq!(
        keys(ListFilter {
            limit: 2,
            ..Default::default()
        })
        .len(),
        2
    );
    assert!(
        keys(ListFilter {
            unhealthy: true,
            ..Default::default()
        })
        .is_empty()
    );
    h.advance(secs(27));
    assert_eq!(
        keys(ListFilter {
            unhealthy: true,
            ..Default::default()
        }),
        [("repo/acme".into(), "agent-1".into())],
        "the lapsed lease shows as unhealthy"
    );
    assert_eq!(h.list_all()[0].health, Health::Expired);

    let ws = h.store.waiters(&ListFilter::default()).unwrap();
    assert_eq!(ws.len(), 0, "the waiter did not refresh for 27 s: gone");
    let (_w, _) = h.queue(&request("agent-9", &["task/1"]));
    let ws = h.store.waiters(&ListFilter::default()).unwrap();
    assert_eq!(ws.len(), 1);
    assert_eq!(
        (ws[0].owner.as_str(), ws[0].key.as_str(), ws[0].position),
        ("agent-9", "task/1", 1)
    );
    assert!(
        h.store
            .waiters(&ListFilter {
                owner: Some("agent-1".into()),
                ..Default::default()
            })
            .unwrap()
            .is_empty()
    );

    let ev = h
        .store
        .history(&HistoryFilter {
            key: Some("repo/beta".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ev.len(), 2);
    assert!(ev[0].id > ev[1].id, "newest first");
    assert!(
        ev.iter()
            .all(|e| e.kind == EventKind::Acquired && e.fence.is_some() && e.grant.is_some())
    );
    let ev = h
        .store
        .history(&HistoryFilter {
            key: Some("repo/".into()),
            prefix: true,
            owner: Some("agent-3".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].owner, "agent-3");
    let ev = h
        .store
        .history(&HistoryFilter {
            kind: Some(EventKind::Waiting),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ev.len(), 2);
    let all = h.history_all();
    let after = h
        .store
        .history(&HistoryFilter {
            after: Some(all[2].id),
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, all.last().unwrap().id);
    assert!(
        all.windows(2)
            .all(|w| w[1].id > w[0].id && w[1].at >= w[0].at)
    );
    let secret = a.handle.expose().rsplit('.').next().unwrap().to_string();
    let dump = format!(
        "{all:?} {:?} {:?}",
        h.list_all(),
        h.store.status(&key("repo/acme")).unwrap()
    );
    assert!(!dump.contains(&secret), "a lease handle leaked into a view");
    assert!(!serde_json::to_string(&all).unwrap().contains(&secret));

    let stats = h.store.stats().unwrap();
    // The expired lease is listed (unhealthy) until someone frees it, but it
    // is no longer held: anyone may take it.
    assert_eq!(h.list_all().len(), 4);
    assert_eq!(stats.held, 3);
    assert_eq!(stats.waiting, 1);
    assert_eq!(stats.unhealthy, 1);
    assert_eq!(stats.events.get("acquired"), Some(&4));
    assert_eq!(stats.events.get("waiting"), Some(&2));
    let max_fence = h.list_all().iter().map(|i| i.fence.0).max().unwrap();
    assert_eq!(stats.last_fence, max_fence);
    assert!(stats.history_since.is_some());
}

/// Leaving the queue records `wait_timed_out` or `wait_cancelled` and frees the place.
pub fn leave_queue_records_why(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k"]));
    let (w1, _) = h.queue(&request("w1", &["k"]));
    let (w2, _) = h.queue(&request("w2", &["k"]));
    let w3_req = request("w3", &["k"]);
    let (mut w3, b) = h.queue(&w3_req);
    assert_eq!(b.position, Some(3));
    h.store.leave_queue(&w1, LeaveReason::TimedOut).unwrap();
    h.store.leave_queue(&w2, LeaveReason::Cancelled).unwrap();
    // Leaving twice, or without a place, is harmless.
    h.store.leave_queue(&w1, LeaveReason::TimedOut).unwrap();
    h.store
        .leave_queue(&h.waiter(), LeaveReason::Cancelled)
        .unwrap();
    let kinds: Vec<(EventKind, String)> = h
        .history_of("k")
        .into_iter()
        .filter(|e| e.kind != EventKind::Acquired)
        .map(|e| (e.kind, e.owner))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Waiting, "w1".into()),
            (EventKind::Waiting, "w2".into()),
            (EventKind::Waiting, "w3".into()),
            (EventKind::WaitTimedOut, "w1".into()),
            (EventKind::WaitCancelled, "w2".into()),
        ]
    );
    let ws = h.store.waiters(&ListFilter::default()).unwrap();
    assert_eq!(
        ws.iter()
            .map(|w| (w.owner.as_str(), w.position))
            .collect::<Vec<_>>(),
        [("w3", 1)]
    );
    released(
        h.store
            .release(&by_handle("k", &a), ReleaseReason::Completed),
    );
    assert_eq!(h.retry_granted(&w3_req, &mut w3).owner, "w3");
    assert!(h.store.waiters(&ListFilter::default()).unwrap().is_empty());
}

/// Malformed requests are refused before anything changes.
pub fn malformed_requests_are_refused(make: Factory<'_>) {
    let h = make();
    let bad = [
        AcquireRequest {
            keys: vec![],
            ..request("a", &[])
        },
        request("a", &["k", "k"]),
        AcquireRequest {
            scope: Scope::Tree,
            ..request("a", &["p", "p/q"])
        },
        request("", &["k"]),
        AcquireRequest {
            holder: locksmith_core::Holder {
                metadata: Some(json!([1, 2])),
                ..crate::holder("a")
            },
            ..request("a", &["k"])
        },
        AcquireRequest {
            holder: locksmith_core::Holder {
                metadata: Some(json!({ "blob": "x".repeat(20_000) })),
                ..crate::holder("a")
            },
            ..request("a", &["k"])
        },
    ];
    for req in &bad {
        let r = h.store.acquire(req, None);
        assert!(
            matches!(r, Err(StoreError::Invalid(_))),
            "{:?}: {r:?}",
            req.keys
        );
    }
    assert!(h.list_all().is_empty());
    assert!(h.history_all().is_empty());
    // Overlapping keys in one request are fine when neither is a tree.
    h.grant(&request("a", &["p", "p/q"]));
}
