//! The Rust library against a server: waiting, renewing over HTTP, and
//! `lost()` on the server's word or on the guard's own deadline.

use std::time::{Duration, Instant};

use locksmith::Client;
use locksmith_core::store::ListFilter;
use locksmith_core::{Key, ReleaseReason, Store};
use locksmith_server::Settings;

use crate::common::Server;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_guard_renews_over_http_and_hears_that_it_was_forced() {
    let server = Server::start_real(Settings::default());
    let client = Client::open(&server.url).unwrap();
    let guard = client
        .lock("lib/k")
        .ttl(Duration::from_millis(900))
        .acquire_blocking()
        .unwrap();
    // Held past several leases: the guard renews.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(!guard.is_lost());
    let held = server.client().list(&ListFilter::default()).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].fence, guard.fence());
    server
        .client()
        .force_release(&Key::new("lib/k").unwrap(), "test")
        .unwrap();
    let reason = runtime()
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), guard.lost()).await });
    assert_eq!(
        reason.expect("lost() resolved"),
        Some(ReleaseReason::Forced)
    );
}

#[test]
fn a_guard_whose_server_is_gone_is_lost_by_its_own_deadline() {
    let mut server = Server::start_real(Settings::default());
    let client = Client::open(&server.url).unwrap();
    let guard = client
        .lock("lib/gone")
        .ttl(Duration::from_millis(1500))
        .acquire_blocking()
        .unwrap();
    server.stop().unwrap();
    let started = Instant::now();
    let reason = runtime()
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), guard.lost()).await });
    assert!(reason.is_ok(), "lost() resolved");
    // The lease was 1.5 s: lost by the guard's own deadline, not at some later retry.
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn waiting_through_the_library_is_woken_by_the_release() {
    let server = Server::start_real(Settings::default());
    let client = Client::open(&server.url).unwrap();
    let first = client.lock("lib/w").acquire_blocking().unwrap();
    let url = server.url.clone();
    let waiter = std::thread::spawn(move || {
        let c = Client::open(&url).unwrap();
        let g = c
            .lock("lib/w")
            .wait(Duration::from_secs(20))
            .acquire_blocking()
            .unwrap();
        (Instant::now(), g.fence())
    });
    std::thread::sleep(Duration::from_millis(1300));
    let released = Instant::now();
    let first_fence = first.fence();
    first.release().unwrap();
    let (granted, fence) = waiter.join().unwrap();
    assert!(fence > first_fence);
    assert!(granted >= released);
}
