//! The server over real sockets: the conformance suite and the random walk
//! through `HttpStore` → `locksmith serve` → the embedded store (and the
//! suite again with PostgreSQL behind the server), and what only a server
//! has (long polls, disconnects, limits, hosts).

mod auth;
mod common;
mod events;
mod http;
mod library;

use locksmith_testkit::Harness;

fn harness() -> Harness {
    common::Server::start_manual().harness()
}

locksmith_testkit::conformance_tests!(harness);

/// The same cases through a server over PostgreSQL.
mod over_postgres {
    use locksmith_testkit::Harness;

    fn harness() -> Harness {
        crate::common::Server::start_postgres_manual().harness()
    }

    locksmith_testkit::conformance_tests!(harness);

    #[test]
    fn random_walk_seeds_0_to_20() {
        locksmith_testkit::walk::walk_seeds(&harness, 0..20);
    }
}

#[test]
fn random_walk_seeds_0_to_20() {
    locksmith_testkit::walk::walk_seeds(&harness, 0..20);
}

#[test]
fn random_walk_seeds_20_to_40() {
    locksmith_testkit::walk::walk_seeds(&harness, 20..40);
}
