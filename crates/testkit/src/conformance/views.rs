//! What people and scripts read (status, list, waiters, history, stats), leaving the queue, and refused requests.

use super::*;

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
            grant: Some(a.grant),
            ..Default::default()
        }),
        [("repo/acme".into(), "agent-1".into())]
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
        // Control characters in names shown on terminals and pages.
        request("agent\u{1b}[2J", &["k"]),
        AcquireRequest {
            holder: locksmith_core::Holder {
                task: Some("42\nfake line".into()),
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
