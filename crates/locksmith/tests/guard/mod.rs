//! The library guard: fences, background renewal, release on drop, and a
//! loud `lost()` when the lock is taken away.

use std::time::Duration;

use locksmith::{Client, Error, ReleaseReason};

fn client(dir: &tempfile::TempDir) -> Client {
    Client::open(&format!("sqlite://{}/locksmith.db", dir.path().display())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_holds_renews_and_releases_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let a = client(&dir);
    let b = client(&dir);
    let guard = a
        .lock("lib/k")
        .ttl(Duration::from_millis(300))
        .acquire()
        .await
        .unwrap();
    assert!(guard.fence().0 > 0);
    // Well past the lease: only the background renewal keeps it held.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!guard.is_lost());
    match b.lock("lib/k").acquire().await {
        Err(Error::Busy(blocked)) => assert_eq!(blocked.holders[0].fence, guard.fence()),
        other => panic!("expected busy, got {:?}", other.map(|g| g.fence())),
    }
    let fence = guard.fence();
    drop(guard);
    let next = b.lock("lib/k").acquire().await.unwrap();
    assert!(next.fence() > fence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_resolves_when_the_lock_is_forced_away() {
    let dir = tempfile::tempdir().unwrap();
    let a = client(&dir);
    let guard = a
        .lock("lib/lost")
        .ttl(Duration::from_millis(300))
        .acquire()
        .await
        .unwrap();
    let key = locksmith::Key::new("lib/lost").unwrap();
    a.store().force_release(&key, "test").unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("lost() resolved");
    assert_eq!(reason, Some(ReleaseReason::Forced));
    assert!(guard.is_lost());
}

#[test]
fn blocking_wrapper_and_several_keys() {
    let dir = tempfile::tempdir().unwrap();
    let a = client(&dir);
    let g = a.lock("multi/1").and("multi/2").acquire_blocking().unwrap();
    let fences = g.fences();
    assert_eq!(fences.len(), 2);
    assert!(fences[1].1 > fences[0].1);
    assert!(matches!(
        a.lock("multi/2").owner("other").acquire_blocking(),
        Err(Error::Busy(_))
    ));
    g.release().unwrap();
    let waited = a
        .lock("multi/2")
        .wait(Duration::from_millis(100))
        .acquire_blocking()
        .unwrap();
    assert!(waited.fence() > fences[1].1);
}

#[test]
fn unknown_url_schemes_list_the_accepted_ones() {
    let err = Client::open("redis://localhost").err().expect("refused");
    assert!(err.to_string().contains("sqlite:///"), "{err}");
}

#[test]
fn a_renewal_stuck_in_the_store_counts_as_lost_before_the_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let a = client(&dir);
    let guard = a
        .lock("lib/stuck")
        .ttl(Duration::from_millis(500))
        .acquire_blocking()
        .unwrap();
    // Play a writer stopped mid-transaction: every renewal now waits at the gate.
    let gate = std::fs::File::open(dir.path().join("locksmith.db-gate")).unwrap();
    rustix::fs::flock(&gate, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let started = std::time::Instant::now();
    while !guard.is_lost() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never reported lost"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reported on the client's own deadline: nine tenths of the lease.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    drop(gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_acquire_future_leaves_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let a = client(&dir);
    let _held = a.lock("lib/drop").acquire().await.unwrap();
    let b = client(&dir);
    let waiting = b
        .lock("lib/drop")
        .owner("impatient")
        .wait(Duration::from_secs(30))
        .acquire();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), waiting)
            .await
            .is_err()
    );
    let filter = locksmith::core::store::ListFilter::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !a.store().waiters(&filter).unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped request stayed queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let f = locksmith::core::store::HistoryFilter {
        kind: Some(locksmith::core::EventKind::WaitCancelled),
        ..Default::default()
    };
    assert_eq!(a.store().history(&f).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_resolves_on_the_clients_own_deadline_while_a_renewal_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let a = client(&dir);
    let guard = a
        .lock("lib/stuck-async")
        .ttl(Duration::from_millis(500))
        .acquire()
        .await
        .unwrap();
    let gate = std::fs::File::open(dir.path().join("locksmith.db-gate")).unwrap();
    rustix::fs::flock(&gate, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let started = std::time::Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("lost() resolved");
    assert_eq!(reason, Some(ReleaseReason::LeaseExpired));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    drop(gate);
}

/// Waits (bounded) until `guard` is lost; how long it took.
fn lost_within(guard: &locksmith::Guard, limit: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if guard.is_lost() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// A holder learns that its lock was forced away or swept within moments,
/// not at its next renewal (20 s away with a 60 s lease): the store tells
/// the holding process. A forged message is only a hint and loses nothing.
fn told_at_once(url: &str) {
    let holder = Client::open(url).unwrap();
    let admin = Client::open(url).unwrap();
    let guard = holder
        .lock("told/forced")
        .ttl(Duration::from_secs(60))
        .acquire_blocking()
        .unwrap();

    // Anyone on the machine can send to the address: the holder asks the
    // store, which says the lock is still held.
    let address = holder
        .notifier()
        .holder_address()
        .expect("a holder address");
    let forger = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let to =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            address.as_bytes(),
        )
        .unwrap();
    // An empty datagram, which must not stop the listening, and a flood
    // (coalesced into a round of renewals every 20 ms).
    let _ = forger.send_to_addr(b"", &to);
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..1000 {
        let _ = forger.send_to_addr(b"lost", &to);
    }
    assert_eq!(lost_within(&guard, Duration::from_millis(300)), None);
    assert!(guard.lost_reason().is_none());

    let key = locksmith::Key::new("told/forced").unwrap();
    admin.store().force_release(&key, "test").unwrap();
    assert!(
        lost_within(&guard, Duration::from_secs(5)).is_some(),
        "the holder was not told that its lock was forced away"
    );
    assert_eq!(guard.lost_reason(), Some(ReleaseReason::Forced));

    // Swept at its cap: the sweeper's ending is told too.
    let capped = holder
        .lock("told/capped")
        .ttl(Duration::from_secs(60))
        .max_hold(Duration::from_millis(200))
        .acquire_blocking()
        .unwrap();
    std::thread::sleep(Duration::from_millis(250));
    let swept = locksmith::sweep::sweep(&**admin.store(), false, None).unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert!(
        lost_within(&capped, Duration::from_secs(5)).is_some(),
        "the holder was not told that its lock was swept"
    );
    assert_eq!(capped.lost_reason(), Some(ReleaseReason::MaxHold));
}

#[test]
fn a_holder_is_told_at_once_when_its_lock_is_forced_or_swept() {
    let dir = tempfile::tempdir().unwrap();
    told_at_once(&format!("sqlite://{}/locksmith.db", dir.path().display()));
}

#[test]
fn a_holder_is_told_at_once_when_its_lock_is_forced_or_swept_on_postgres() {
    told_at_once(&locksmith_testkit::pg::PgServer::shared().fresh_schema_url());
}
