//! Taking over: steal-stale, force, and request id replay.

use super::*;

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
    // Forcing with the fence of an older tenure than the one holding now ends nothing.
    let held = h.list_all();
    let newest = held
        .iter()
        .filter(|l| l.key == key("r"))
        .map(|l| l.fence)
        .max()
        .unwrap();
    let older = locksmith_core::Fence(newest.0 - 1);
    match h
        .store
        .force_release_seen(&key("r"), "maintenance", Some("admin-1"), Some(older))
    {
        Err(StoreError::Newer { fence, seen, .. }) => assert_eq!((fence, seen), (newest, older)),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.list_all(), held, "nothing was ended");
    let ended = h
        .store
        .force_release_seen(&key("r"), "maintenance", Some("admin-1"), Some(newest))
        .unwrap();
    let mut who: Vec<&str> = ended.iter().map(|i| i.owner.as_str()).collect();
    who.sort();
    assert_eq!(who, ["s1", "s2"]);
    assert!(h.store.status(&key("r")).unwrap().free);
    let forced: Vec<_> = endings(&h, "r").into_iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(forced, [(EventKind::Forced, ReleaseReason::Forced); 2]);
    // Who forced is recorded with why.
    for e in h
        .history_of("r")
        .iter()
        .filter(|e| e.kind == EventKind::Forced)
    {
        let detail = e.detail.as_ref().map(|d| d.to_string()).unwrap_or_default();
        assert!(
            detail.contains("admin-1") && detail.contains("maintenance"),
            "{detail}"
        );
    }
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
    // The same id and keys with another lease or mode is another request: refused.
    for other in [
        AcquireRequest {
            ttl: Some(secs(60)),
            ..req.clone()
        },
        AcquireRequest {
            mode: locksmith_core::Mode::Shared,
            ..req.clone()
        },
    ] {
        let r = h.store.acquire(&other, None);
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    }
    assert_eq!(h.list_all().len(), 2, "nothing changed");
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
