//! The rules of `locksmith-core` against the reference model with no store
//! at all: the random walk drives `decide` and the rules of holding through
//! the in-memory driver (`locksmith_testkit::memory`).

use std::sync::Arc;

use locksmith_core::ManualClock;
use locksmith_testkit::Harness;
use locksmith_testkit::memory::{MemoryStore, NoWake};

fn harness() -> Harness {
    let clock = ManualClock::new();
    Harness::new(
        Arc::new(MemoryStore::new(clock.clone())),
        Arc::new(NoWake),
        clock,
    )
}

#[test]
fn random_walk_over_the_bare_rules() {
    let mut seen = locksmith_testkit::walk::Coverage::default();
    for seed in 0..200 {
        seen.add(&locksmith_testkit::walk::random_walk(&harness, seed, 200));
    }
    for what in [
        "granted",
        "granted_after_queueing",
        "granted_over_an_ended_lease",
        "blocked",
        "blocked_by_waiters_only",
        "queued",
        "queued_again_after_lapsing",
        "deadlock_on_joining",
        "invalid",
        "limit_mismatch",
        "renewed",
        "renew_lost",
        "released",
        "release_not_held",
        "left_queue",
    ] {
        assert!(seen.get(what) > 0, "no walk reached {what}: {seen:?}");
    }
}
