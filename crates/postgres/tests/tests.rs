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
