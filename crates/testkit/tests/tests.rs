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
    locksmith_testkit::walk::walk_seeds(&harness, 0..200);
}
