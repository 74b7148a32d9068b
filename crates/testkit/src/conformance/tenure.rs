//! Leases, `max_hold`, renewals and releases: how a tenure lasts and ends.

use super::*;

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

/// A handle names its own grant: used for another key it is refused (not
/// the holder, where someone else holds that key) and nothing changes; it is
/// not taken for a lock that has ended.
pub fn a_handle_of_another_lock_is_refused(make: Factory<'_>) {
    let h = make();
    let a = h.grant(&request("a", &["k1"]));
    let b = h.grant(&request("b", &["k2"]));
    assert!(matches!(
        h.store
            .release(&by_handle("k2", &a), ReleaseReason::Completed),
        Err(StoreError::NotHolder { .. })
    ));
    assert!(matches!(
        h.store.renew(&by_handle("k2", &a), None),
        Err(StoreError::NotHolder { .. })
    ));
    assert!(matches!(
        h.store
            .release(&by_handle("free", &a), ReleaseReason::Completed),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(h.holder_fences("k2"), vec![fence(&b)]);
    assert_eq!(h.holder_fences("k1"), vec![fence(&a)]);
    // A key the grant did hold and released stays "not held", not refused.
    let m = h.grant(&request("c", &["m1", "m2"]));
    released(
        h.store
            .release(&by_handle("m1", &m), ReleaseReason::Completed),
    );
    assert!(matches!(
        h.store
            .release(&by_handle("m1", &m), ReleaseReason::Completed),
        Ok(Release::NotHeld { .. })
    ));
}
