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
