//! The PostgreSQL store against the shared conformance suite and random
//! walk, on a real server started by the tests (`initdb` into a temporary
//! folder) or the one of `LOCKSMITH_TEST_PG_URL`; each store in a schema
//! of its own.

use std::sync::Arc;

use locksmith_core::ManualClock;
use locksmith_postgres::{Options, PgStore};
use locksmith_testkit::Harness;
use locksmith_testkit::pg::PgServer;

/// A fresh store in a fresh schema, on a hand-driven clock.
fn harness() -> Harness {
    let url = PgServer::shared().fresh_schema_url();
    let clock = ManualClock::new();
    let store = PgStore::open_with_clock(&url, Options::default(), Arc::new(clock.clone()))
        .expect("open a fresh store");
    let notifier = Arc::new(store.notifier());
    Harness::new(Arc::new(store), notifier, clock)
}

locksmith_testkit::conformance_tests!(harness);

#[test]
fn random_walk_seeds_0_to_50() {
    locksmith_testkit::walk::walk_seeds(&harness, 0..50);
}

#[test]
fn random_walk_seeds_50_to_100() {
    locksmith_testkit::walk::walk_seeds(&harness, 50..100);
}

#[test]
fn random_walk_seeds_100_to_150() {
    locksmith_testkit::walk::walk_seeds(&harness, 100..150);
}

#[test]
fn random_walk_seeds_150_to_200() {
    locksmith_testkit::walk::walk_seeds(&harness, 150..200);
}

/// The process's listening connection hands a notification from another
/// machine to the waiter it names, and comes back when the server drops it.
#[test]
fn the_listener_wakes_waiters_and_reconnects_when_dropped() {
    use std::time::{Duration, Instant};
    let server = PgServer::shared();
    let store = PgStore::open(&server.fresh_schema_url(), Options::default()).unwrap();
    let mut wake = locksmith_core::Notifier::wake_source(&store.notifier()).unwrap();
    let listening = || {
        server
            .psql(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'locksmith-listen'
                  AND query ILIKE 'LISTEN%'",
            )
            .unwrap()
    };
    let until = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("the listener", &|| !listening().is_empty());
    let notify = |address: &str| {
        // A machine tag that is not this machine's: only the listener can
        // bring it here.
        server
            .psql(&format!("NOTIFY locksmith, 'feedf00d {address}'"))
            .unwrap();
    };
    notify(wake.address());
    assert!(
        wake.wait(Duration::from_secs(2)),
        "woken through the listener"
    );

    let first = listening();
    server
        .psql(&format!("SELECT pg_terminate_backend({first})"))
        .unwrap();
    until("the listener to come back", &|| {
        let now = listening();
        !now.is_empty() && now != first
    });
    notify(wake.address());
    assert!(
        wake.wait(Duration::from_secs(2)),
        "woken after the reconnect"
    );
}

/// A reader that follows the history with `after` (as the event stream,
/// `watch` and a resumed client do) sees every event, although many
/// writers draw event ids in one order and commit in another.
#[test]
fn following_the_history_misses_no_event_of_concurrent_writers() {
    use locksmith_core::store::HistoryFilter;
    use locksmith_core::{Attempt, ReleaseReason, Store};
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    let url = PgServer::shared().fresh_schema_url();
    let store = Arc::new(PgStore::open(&url, Options::default()).unwrap());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                let key = format!("follow/{w}");
                let until = Instant::now() + Duration::from_secs(3);
                for _ in 0..400 {
                    if Instant::now() > until {
                        break;
                    }
                    let req = locksmith_testkit::request(&format!("w{w}"), &[&key]);
                    let Attempt::Granted(g) = store.acquire(&req, None).unwrap() else {
                        panic!("{key} is only ever taken by writer {w}");
                    };
                    store
                        .release(
                            &locksmith_testkit::by_handle(&key, &g),
                            ReleaseReason::Completed,
                        )
                        .unwrap();
                }
            })
        })
        .collect::<Vec<_>>();
    // Two followers: one of every event, one through a filter (which
    // matches every event here).
    let (mut seen, mut seen_filtered) = (BTreeSet::new(), BTreeSet::new());
    let (mut last, mut last_filtered) = (0, 0);
    let follow = |filtered: bool, last: &mut i64, seen: &mut BTreeSet<i64>| {
        let page = store
            .history(&HistoryFilter {
                after: Some(*last),
                key: filtered.then(|| "follow/".to_string()),
                prefix: filtered,
                ..HistoryFilter::default()
            })
            .unwrap();
        for e in page {
            seen.insert(e.id);
            *last = (*last).max(e.id);
        }
    };
    while !writers.iter().all(|w| w.is_finished()) {
        follow(false, &mut last, &mut seen);
        follow(true, &mut last_filtered, &mut seen_filtered);
    }
    for w in writers {
        w.join().unwrap();
    }
    follow(false, &mut last, &mut seen);
    follow(true, &mut last_filtered, &mut seen_filtered);
    assert_eq!(
        seen, seen_filtered,
        "the filtered follower saw other events"
    );
    let all: BTreeSet<i64> = store
        .history(&HistoryFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let missed: Vec<_> = all.difference(&seen).collect();
    assert!(all.len() > 100, "the writers wrote {} events", all.len());
    assert!(
        missed.is_empty(),
        "missed {} of {} events: {missed:?}",
        missed.len(),
        all.len()
    );
}

/// An id drawn and never used (a transaction rolled back) leaves a gap for
/// good: a reader that follows the history goes past it.
#[test]
fn following_the_history_goes_past_an_id_never_used() {
    use locksmith_core::Store;
    use locksmith_core::store::HistoryFilter;

    let server = PgServer::shared();
    let url = server.fresh_schema_url();
    let schema = url.rsplit("schema=").next().unwrap().to_string();
    let store = PgStore::open(&url, Options::default()).unwrap();
    let acquire = |key: &str| {
        let req = locksmith_testkit::request("gap", &[key]);
        store.acquire(&req, None).unwrap();
    };
    let newest = || {
        store
            .history(&HistoryFilter {
                limit: 1,
                ..HistoryFilter::default()
            })
            .unwrap()[0]
            .id
    };
    acquire("gap/a");
    let before = newest();
    acquire("other/x");
    server
        .psql(&format!("SELECT nextval('{schema}.events_id_seq')"))
        .unwrap();
    acquire("gap/b");
    let after = newest();
    assert_eq!(after, before + 3, "one id was skipped");
    let follow = |from: i64, prefix: Option<&str>| -> Vec<i64> {
        store
            .history(&HistoryFilter {
                after: Some(from),
                key: prefix.map(str::to_string),
                prefix: prefix.is_some(),
                ..HistoryFilter::default()
            })
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect()
    };
    // Up to the gap at once, then past it.
    assert_eq!(follow(before, None), [before + 1]);
    assert_eq!(follow(before + 1, None), [after]);
    // A follower of gap/ alone moves on only with its own events: it gets
    // past the other key's event and the gap in one read.
    assert_eq!(follow(before, Some("gap/")), [after]);
}

locksmith_testkit::handover_tests!(harness);

/// Text with backslashes and quotes comes back as it went in, also from a
/// server whose sessions read `'\'` the old way
/// (`standard_conforming_strings` off).
#[test]
fn backslashes_and_quotes_survive_any_string_setting() {
    use locksmith_core::Store;
    use locksmith_testkit::{key, request};
    let server = PgServer::shared();
    for url in [
        server.fresh_schema_url(),
        // No listener of its own: one per server is what the listener's
        // test counts on.
        format!(
            "{}&options=-c%20standard_conforming_strings%3Doff&listen=off",
            server.fresh_schema_url()
        ),
    ] {
        let store = PgStore::open(&url, Options::default()).unwrap();
        let owner = r"agent\1 'quoted' \\ end\";
        let task = r"C:\work\'x'";
        let metadata = serde_json::json!({ "path": r#"a\b"c'd"#, "n": "\\n" });
        let mut req = request(owner, &["text/k"]);
        req.holder.task = Some(task.to_string());
        req.holder.metadata = Some(metadata.clone());
        let granted = store.acquire(&req, None).unwrap();
        assert!(
            matches!(granted, locksmith_core::Attempt::Granted(_)),
            "{url}: {granted:?}"
        );
        let st = store.status(&key("text/k")).unwrap();
        let h = &st.holders[0];
        assert_eq!(h.owner, owner, "{url}");
        assert_eq!(h.task.as_deref(), Some(task), "{url}");
        assert_eq!(h.metadata.as_ref(), Some(&metadata), "{url}");
    }
}

/// A request of 64 keys in separate trees, 26 levels deep, needs more key
/// locks (one per key and per ancestor) than one SQL select list takes.
#[test]
fn a_request_with_more_locks_than_one_select_takes_is_granted() {
    use locksmith_core::Store;
    use locksmith_testkit::{by_handle, request};
    let store = PgStore::open(&PgServer::shared().fresh_schema_url(), Options::default()).unwrap();
    let deep = |i: usize| {
        let mut k = format!("t{i}");
        for level in 0..25 {
            k.push_str(&format!("/{}", (b'a' + level as u8) as char));
        }
        k
    };
    let keys: Vec<String> = (0..64).map(deep).collect();
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let attempt = store.acquire(&request("deep", &names), None).unwrap();
    let locksmith_core::Attempt::Granted(grant) = attempt else {
        panic!("not granted: {attempt:?}");
    };
    assert_eq!(grant.locks.len(), 64);
    let released = store
        .release_grant(
            &by_handle(&keys[0], &grant),
            locksmith_core::ReleaseReason::Completed,
        )
        .unwrap();
    assert!(
        matches!(released, locksmith_core::Release::Released { .. }),
        "{released:?}"
    );
    let left = store.list(&Default::default()).unwrap();
    assert!(left.is_empty(), "still held: {}", left.len());
}
