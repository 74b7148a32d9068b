//! The SQLite store against the shared conformance suite and random walk,
//! plus what only a file store has: refusing foreign or damaged files
//! without touching them, network filesystems, and fences across reopening.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use locksmith_core::store::ListFilter;
use locksmith_core::{ManualClock, ReleaseReason, Store, StoreError};
use locksmith_sqlite::{FsKind, Options, SqliteStore, classify_fs};
use locksmith_testkit::{Harness, by_handle, by_owner, request};
use tempfile::TempDir;

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("locksmith.db")
}

fn open(path: &Path, clock: &ManualClock) -> Result<SqliteStore, StoreError> {
    SqliteStore::open_with_clock(path, Options::default(), Arc::new(clock.clone()))
}

/// A fresh store in its own temporary folder, which the harness keeps alive.
fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new();
    let store = open(&db_path(&dir), &clock).expect("open a fresh store");
    let notifier = Arc::new(store.notifier());
    Harness::new(Arc::new(store), notifier, clock).keeping(dir)
}

locksmith_testkit::conformance_tests!(harness);

#[test]
fn run_all_covers_every_case() {
    assert!(locksmith_testkit::CASES.len() >= 25);
    let mut names: Vec<&str> = locksmith_testkit::CASES.iter().map(|c| c.0).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), locksmith_testkit::CASES.len());
}

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

/// Replays one seed, for debugging: `LOCKSMITH_WALK_SEED=53 cargo test -p
/// locksmith-sqlite --test tests one_walk_seed_from_env -- --nocapture`.
#[test]
fn one_walk_seed_from_env() {
    if let Some(seed) = std::env::var("LOCKSMITH_WALK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        locksmith_testkit::walk::random_walk(&harness, seed, 200);
    }
}

fn is_refusal(e: &StoreError) -> bool {
    matches!(e, StoreError::Unusable(_) | StoreError::Corrupt { .. })
}

/// The folder holds nothing but the given file (no journal, WAL or shm left behind).
fn only_file(dir: &TempDir, name: &str) {
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [name], "files left in the folder");
}

#[test]
fn a_non_sqlite_file_is_refused_and_left_unchanged() {
    for content in [
        b"{\"locks\": []}\n".to_vec(),
        b"short".to_vec(),
        vec![0u8; 8192],
        b"SQLite format 2\0 and then some more bytes".to_vec(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        fs::write(&path, &content).unwrap();
        let clock = ManualClock::new();
        match open(&path, &clock) {
            Err(e @ StoreError::Unusable(_)) => {
                let msg = e.to_string();
                assert!(msg.contains("not a locksmith database"), "{msg}");
                assert!(msg.contains(&path.display().to_string()), "{msg}");
            }
            Err(other) => panic!("expected Unusable, got {other:?}"),
            Ok(_) => panic!("a non-SQLite file was opened as a store"),
        }
        assert_eq!(fs::read(&path).unwrap(), content, "the file was changed");
        only_file(&dir, "locksmith.db");
    }
}

#[test]
fn a_foreign_sqlite_file_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
             INSERT INTO notes (body) VALUES ('keep me'), ('and me');",
        )
        .unwrap();
    }
    let before = fs::read(&path).unwrap();
    let clock = ManualClock::new();
    match open(&path, &clock) {
        Err(e @ StoreError::Unusable(_)) => {
            assert!(e.to_string().contains("another program"), "{e}");
        }
        Err(other) => panic!("expected Unusable, got {other:?}"),
        Ok(_) => panic!("a foreign SQLite file was opened as a store"),
    }
    assert_eq!(fs::read(&path).unwrap(), before, "the file was changed");
    only_file(&dir, "locksmith.db");
    // Another program's application id is refused too, even with no tables.
    let path2 = dir.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&path2).unwrap();
        c.execute_batch("PRAGMA application_id = 1234; CREATE TABLE t (x); DROP TABLE t;")
            .unwrap();
    }
    let before = fs::read(&path2).unwrap();
    assert!(matches!(open(&path2, &clock), Err(StoreError::Unusable(_))));
    assert_eq!(fs::read(&path2).unwrap(), before);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = ManualClock::new();
    drop(open(&path, &clock).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA user_version = 99;").unwrap();
    }
    let before = fs::read(&path).unwrap();
    match open(&path, &clock) {
        Err(e @ StoreError::Unusable(_)) => {
            assert!(e.to_string().contains("newer locksmith"), "{e}")
        }
        other => panic!("expected Unusable, got {:?}", other.err()),
    }
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn a_store_of_schema_5_gains_uids_and_keeps_its_locks_releasable_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = ManualClock::new();
    let store = open(&path, &clock).unwrap();
    let req = request("old-worker", &["old/k"]);
    assert!(matches!(
        store.acquire(&req, None).unwrap(),
        locksmith_core::Attempt::Granted(_)
    ));
    drop(store);
    // The tables as schema 5 left them: no uid column, and none of the
    // hand-over's (schema 7).
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "DROP INDEX holds_by_ticket; ALTER TABLE holds DROP COLUMN ticket;
             ALTER TABLE queue DROP COLUMN request; ALTER TABLE queue DROP COLUMN claim;
             ALTER TABLE queue DROP COLUMN uid; ALTER TABLE queue DROP COLUMN stale_after_ms;
             ALTER TABLE holds DROP COLUMN uid; PRAGMA user_version = 5;",
        )
        .unwrap();
    }
    let store = open(&path, &clock).unwrap();
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 7);
    // A lock taken before uids were recorded is not checked by user.
    let released = store
        .release(&by_owner("old/k", "old-worker"), ReleaseReason::Completed)
        .unwrap();
    assert!(
        matches!(released, locksmith_core::Release::Released { .. }),
        "{released:?}"
    );
    // A new one records this process's user.
    store.acquire(&req, None).unwrap();
    let uid: Option<i64> = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT uid FROM holds WHERE key = 'old/k'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(uid, Some(i64::from(rustix::process::geteuid().as_raw())));
}

/// Fills a store with enough history to span many pages, closes it, and
/// returns the file's size.
fn filled_store(path: &Path, clock: &ManualClock) -> u64 {
    let store = open(path, clock).unwrap();
    for i in 0..600 {
        let k = format!("fill/key-{i:04}/with/a/fairly/long/name/to/take/room");
        let req = request(&format!("owner-{i}"), &[&k]);
        let g = match store.acquire(&req, None).unwrap() {
            locksmith_core::Attempt::Granted(g) => g,
            other => panic!("{other:?}"),
        };
        if i % 3 != 0 {
            store
                .release(&by_handle(&k, &g), ReleaseReason::Completed)
                .unwrap();
        }
    }
    drop(store);
    fs::metadata(path).unwrap().len()
}

/// Every operation a user would run next; returns the first error, if any.
fn use_store(store: &SqliteStore) -> Option<StoreError> {
    let reads: [&dyn Fn() -> Result<(), StoreError>; 4] = [
        &|| store.stats().map(|_| ()),
        &|| store.list(&ListFilter::default()).map(|_| ()),
        &|| {
            store
                .history(&locksmith_core::store::HistoryFilter {
                    limit: 100_000,
                    ..Default::default()
                })
                .map(|_| ())
        },
        &|| store.waiters(&ListFilter::default()).map(|_| ()),
    ];
    for r in reads {
        if let Err(e) = r() {
            return Some(e);
        }
    }
    for i in 0..600 {
        let k = format!("fill/key-{i:04}/with/a/fairly/long/name/to/take/room");
        if let Err(e) = store.acquire(&request("after", &[&k]), None) {
            return Some(e);
        }
    }
    None
}

#[test]
fn a_truncated_store_is_refused_and_left_as_it_is() {
    for cut in [TruncateTo::HalfPages, TruncateTo::MidPage] {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let clock = ManualClock::new();
        let size = filled_store(&path, &clock);
        let keep = match cut {
            TruncateTo::HalfPages => size / 4096 / 2 * 4096,
            TruncateTo::MidPage => size - 1000,
        };
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..keep as usize]).unwrap();
        let err = match open(&path, &clock) {
            Err(e) => e,
            Ok(store) => use_store(&store).expect("a truncated store went unnoticed"),
        };
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "{cut:?}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("cut short") && msg.contains("Move the file away"),
            "{msg}"
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            &bytes[..keep as usize],
            "left as it was"
        );
    }
}

/// How a test cuts a store file short.
#[derive(Debug, Clone, Copy)]
enum TruncateTo {
    /// To half of its pages.
    HalfPages,
    /// In the middle of its last page.
    MidPage,
}

#[test]
fn a_corrupted_store_gives_a_clear_error_and_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = ManualClock::new();
    let size = filled_store(&path, &clock);
    let page = 4096u64;
    assert!(
        size >= 20 * page,
        "the store should span many pages, it has {size} bytes"
    );
    // Overwrite the middle pages (not the header page) with garbage.
    let mut bytes = fs::read(&path).unwrap();
    let (from, to) = ((size / page / 3) * page, (size / page * 2 / 3) * page);
    let mut x: u32 = 0x1234_5678;
    for b in &mut bytes[from as usize..to as usize] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    fs::write(&path, &bytes).unwrap();
    let garbage = bytes[from as usize..to as usize].to_vec();

    let err = match open(&path, &clock) {
        Err(e) => e,
        Ok(store) => use_store(&store).expect("a damaged store went unnoticed"),
    };
    assert!(
        is_refusal(&err),
        "expected Corrupt or Unusable, got {err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("damaged") || msg.contains("not a locksmith"),
        "{msg}"
    );
    let after = fs::read(&path).unwrap();
    assert!(after.len() as u64 >= to, "the damaged file was truncated");
    assert_eq!(
        &after[from as usize..to as usize],
        &garbage[..],
        "the damaged pages were overwritten"
    );
}

#[test]
fn a_truncated_store_is_refused_or_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = ManualClock::new();
    let size = filled_store(&path, &clock);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..(size / 2) as usize]).unwrap();
    let err = match open(&path, &clock) {
        Err(e) => e,
        Ok(store) => use_store(&store).expect("a truncated store went unnoticed"),
    };
    assert!(
        is_refusal(&err),
        "expected Corrupt or Unusable, got {err:?}"
    );
}

#[test]
fn network_filesystems_are_classified() {
    assert_eq!(classify_fs(0x6969), FsKind::Network("NFS"));
    assert!(matches!(classify_fs(0xFF53_4D42), FsKind::Network(_)));
    assert!(matches!(classify_fs(0x517B), FsKind::Network(_)));
    assert_eq!(classify_fs(0xEF53), FsKind::Local, "ext4");
    assert_eq!(classify_fs(0x0102_1994), FsKind::Local, "tmpfs");
    assert_eq!(classify_fs(0x9123_683E), FsKind::Local, "btrfs");
}

#[test]
fn reopening_keeps_fences_rising() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut last = 0;
    for round in 0..4 {
        // A fresh clock each time: the wall clock may even be the same as before.
        let clock = ManualClock::new();
        let store = open(&path, &clock).unwrap();
        for i in 0..3 {
            let g = match store
                .acquire(&request("a", &[&format!("k{i}")]), None)
                .unwrap()
            {
                locksmith_core::Attempt::Granted(g) => g,
                other => panic!("round {round}: {other:?}"),
            };
            assert!(
                g.locks[0].fence.0 > last,
                "round {round}: fence {} after {last}",
                g.locks[0].fence
            );
            last = g.locks[0].fence.0;
            store
                .release(&by_handle(&format!("k{i}"), &g), ReleaseReason::Completed)
                .unwrap();
        }
        assert_eq!(store.stats().unwrap().last_fence, last);
    }
}

#[test]
fn a_fence_is_the_id_of_its_acquired_event_and_writes_no_counter() {
    use locksmith_core::store::HistoryFilter;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = ManualClock::new();
    let store = open(&path, &clock).unwrap();
    let counter = || -> i64 {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row("SELECT v FROM meta WHERE k = 'fence'", [], |r| r.get(0))
            .unwrap()
    };
    let before = counter();
    let g = match store.acquire(&request("a", &["x", "y"]), None).unwrap() {
        locksmith_core::Attempt::Granted(g) => g,
        other => panic!("expected a grant, got {other:?}"),
    };
    let fences: Vec<u64> = g.locks.iter().map(|l| l.fence.0).collect();
    assert_eq!(fences[1], fences[0] + 1, "a grant's fences are consecutive");
    store
        .release_grant(&by_handle("x", &g), ReleaseReason::Completed)
        .unwrap();
    let history = store
        .history(&HistoryFilter {
            limit: 100,
            ..HistoryFilter::default()
        })
        .unwrap();
    let acquired: Vec<(i64, Option<u64>)> = history
        .iter()
        .filter(|e| e.kind == locksmith_core::EventKind::Acquired)
        .map(|e| (e.id, e.fence.map(|f| f.0)))
        .collect();
    assert_eq!(acquired.len(), 2);
    for (id, fence) in acquired {
        assert_eq!(Some(id as u64), fence);
    }
    // The release's events come after, and the next fence is above them.
    let newest = history.iter().map(|e| e.id).max().unwrap();
    assert!(newest > fences[1] as i64);
    let next = match store.acquire(&request("a", &["x"]), None).unwrap() {
        locksmith_core::Attempt::Granted(g) => g.locks[0].fence.0,
        other => panic!("expected a grant, got {other:?}"),
    };
    assert!(next > newest as u64);
    assert_eq!(counter(), before, "a grant wrote the old counter row");
    assert_eq!(store.stats().unwrap().last_fence, next);
}

#[test]
fn the_probe_for_tree_holds_reads_their_index_not_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = ManualClock::new();
    drop(open(&path, &clock).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    let plan: Vec<String> = c
        .prepare("EXPLAIN QUERY PLAN SELECT 1 FROM holds WHERE scope = 'tree' LIMIT 1")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|p| p.contains("holds_of_trees")),
        "plan: {plan:?}"
    );
}

#[test]
fn a_held_lock_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = ManualClock::new();
    let g = {
        let store = open(&path, &clock).unwrap();
        match store.acquire(&request("a", &["k"]), None).unwrap() {
            locksmith_core::Attempt::Granted(g) => g,
            other => panic!("{other:?}"),
        }
    };
    let store = open(&path, &clock).unwrap();
    assert!(matches!(
        store.acquire(&request("b", &["k"]), None).unwrap(),
        locksmith_core::Attempt::Blocked(_)
    ));
    assert!(matches!(
        store
            .release(&by_handle("k", &g), ReleaseReason::Completed)
            .unwrap(),
        locksmith_core::store::Release::Released { .. }
    ));
}

#[test]
fn two_handles_on_one_file_see_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = ManualClock::new();
    let s1 = open(&path, &clock).unwrap();
    let s2 = open(&path, &clock).unwrap();
    let g = match s1.acquire(&request("a", &["k"]), None).unwrap() {
        locksmith_core::Attempt::Granted(g) => g,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        s2.acquire(&request("b", &["k"]), None).unwrap(),
        locksmith_core::Attempt::Blocked(_)
    ));
    s2.release(&by_handle("k", &g), ReleaseReason::Completed)
        .unwrap();
    let g2 = match s2.acquire(&request("b", &["k"]), None).unwrap() {
        locksmith_core::Attempt::Granted(g) => g,
        other => panic!("{other:?}"),
    };
    assert!(g2.locks[0].fence > g.locks[0].fence);
}

#[test]
fn the_database_and_its_wal_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let path = db_path(&dir);
    let store = open(&path, &clock).unwrap();
    // A grant writes a lease handle into the WAL.
    let r = request("a", &["private/k"]);
    assert!(matches!(
        store.acquire(&r, None).unwrap(),
        locksmith_core::Attempt::Granted(_)
    ));
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let meta = fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            file.display()
        );
    }
    drop(store);
}

/// What counts as stale is recorded with the lock when it is granted: a
/// caller with a shorter `stale_after` cannot declare a lock abandoned and
/// steal it, and a `stale_after` below a minute is refused.
#[test]
fn staleness_is_the_lock_holders_setting_not_the_takers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let with = |stale_after: std::time::Duration| {
        let opts = Options {
            stale_after,
            ..Options::default()
        };
        SqliteStore::open_with_clock(&db_path(&dir), opts, Arc::new(clock.clone()))
    };
    let holder = with(std::time::Duration::from_secs(600)).unwrap();
    let taker = with(std::time::Duration::from_secs(60)).unwrap();
    let held = match holder.acquire(&request("h", &["quiet"]), None).unwrap() {
        locksmith_core::Attempt::Granted(g) => g,
        other => panic!("expected a grant, got {other:?}"),
    };
    let steal = locksmith_core::AcquireRequest {
        takeover: locksmith_core::Takeover::StealStale,
        ..request("t", &["quiet"])
    };
    clock.advance(std::time::Duration::from_secs(120));
    let unhealthy = ListFilter {
        unhealthy: true,
        ..ListFilter::default()
    };
    assert!(taker.list(&unhealthy).unwrap().is_empty(), "not stale yet");
    assert!(matches!(
        taker.acquire(&steal, None).unwrap(),
        locksmith_core::Attempt::Blocked(_)
    ));
    clock.advance(std::time::Duration::from_secs(481));
    assert_eq!(
        taker.list(&unhealthy).unwrap().len(),
        1,
        "stale at 10 minutes"
    );
    assert!(matches!(
        taker.acquire(&steal, None).unwrap(),
        locksmith_core::Attempt::Granted(_)
    ));
    assert_eq!(held.owner, "h");
    for short in [0, 1, 59] {
        let refused = with(std::time::Duration::from_secs(short));
        assert!(
            matches!(refused, Err(StoreError::Invalid(ref m)) if m.contains("at least 1m")),
            "stale_after {short}s: {:?}",
            refused.err()
        );
    }
}

/// Readers never delete history, a caller cannot shorten the store's
/// retention, and a clock set ahead cannot age recent events; only events
/// older than the retention, next to newer ones, are pruned.
#[test]
fn history_is_pruned_only_by_the_stores_retention_and_never_by_readers() {
    use locksmith_core::store::HistoryFilter;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let clock = ManualClock::new();
    let store = open(&path, &clock).unwrap();
    for k in ["a", "b", "c"] {
        let g = match store.acquire(&request("h", &[k]), None).unwrap() {
            locksmith_core::Attempt::Granted(g) => g,
            other => panic!("expected a grant, got {other:?}"),
        };
        store
            .release(&by_handle(k, &g), ReleaseReason::Completed)
            .unwrap();
    }
    let all = HistoryFilter {
        limit: 1000,
        ..HistoryFilter::default()
    };
    let kept = store.history(&all).unwrap().len();
    assert_eq!(kept, 6);
    let day = std::time::Duration::from_secs(86_400);
    // A reader whose clock is 31 days ahead, asking for the shortest retention.
    let ahead = ManualClock::new();
    ahead.advance(day * 31);
    let short = Options {
        history_retention: std::time::Duration::from_secs(3600),
        ..Options::default()
    };
    let reader = SqliteStore::open_with_clock(&path, short, Arc::new(ahead.clone())).unwrap();
    reader.status(&locksmith_testkit::key("a")).unwrap();
    assert_eq!(
        reader.history(&all).unwrap().len(),
        kept,
        "a read deleted history"
    );
    assert_eq!(
        reader.prune_history().unwrap(),
        0,
        "a jumped clock aged recent events"
    );
    assert_eq!(store.history(&all).unwrap().len(), kept);
    // 31 days later on the store's own clock, with a newer event: the old go.
    clock.advance(day * 31);
    store.acquire(&request("h", &["d"]), None).unwrap();
    assert_eq!(store.prune_history().unwrap(), kept);
    let left = store.history(&all).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, "d");
    // A retention below an hour is refused.
    let tiny = Options {
        history_retention: std::time::Duration::from_secs(1),
        ..Options::default()
    };
    assert!(matches!(
        SqliteStore::open_with_clock(&path, tiny, Arc::new(clock.clone())),
        Err(StoreError::Invalid(_))
    ));
}

locksmith_testkit::handover_tests!(harness);

#[test]
fn calls_made_together_commit_at_once_and_a_failed_group_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let store = open(&db_path(&dir), &clock).unwrap();
    // Another connection, as another process has.
    let other = open(&db_path(&dir), &clock).unwrap();
    let held = |s: &SqliteStore, k: &str| {
        !s.status(&locksmith_testkit::key(k))
            .unwrap()
            .holders
            .is_empty()
    };
    let mut seen_inside = Vec::new();
    store
        .together(&mut || {
            store.acquire(&request("A", &["g/1"]), None).unwrap();
            // A refusal is an answer like any other; it changes nothing.
            let busy = store.acquire(&request("B", &["g/1"]), None).unwrap();
            assert!(matches!(busy, locksmith_core::Attempt::Blocked(_)));
            store.acquire(&request("B", &["g/2"]), None).unwrap();
            // The calls see each other's writes; the other connection sees
            // none of them before the commit.
            seen_inside = vec![held(&store, "g/2"), held(&other, "g/1")];
        })
        .unwrap();
    assert_eq!(seen_inside, [true, false]);
    assert!(held(&other, "g/1") && held(&other, "g/2"), "all committed");

    // A group that fails partway (here a panic) keeps none of its writes.
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.together(&mut || {
            store.acquire(&request("C", &["g/3"]), None).unwrap();
            panic!("the group breaks off");
        })
    }));
    assert!(failed.is_err());
    assert!(!held(&store, "g/3") && !held(&other, "g/3"), "rolled back");
    // And the store goes on, alone or in a group.
    store.acquire(&request("C", &["g/3"]), None).unwrap();
    store
        .together(&mut || {
            store.acquire(&request("D", &["g/4"]), None).unwrap();
        })
        .unwrap();
    assert!(held(&other, "g/3") && held(&other, "g/4"));
}

#[test]
fn a_group_that_meets_a_full_disk_keeps_none_of_its_calls() {
    let Some(disk) = locksmith_testkit::disk::SmallDisk::mount() else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let clock = ManualClock::new();
    let store = open(&disk.path().join("locksmith.db"), &clock).unwrap();
    store.acquire(&request("A", &["kept"]), None).unwrap();
    let fill = disk.fill();
    let mut answers = Vec::new();
    let group = store.together(&mut || {
        for i in 0..20 {
            answers.push(store.acquire(&request("B", &[&format!("full/{i}")]), None));
        }
    });
    let e = group.expect_err("the group cannot be written");
    assert!(e.to_string().contains("is full"), "{e}");
    fs::remove_file(&fill).unwrap();
    // None of the group was kept, whatever its calls answered on the way;
    // what was held before still is.
    let held: Vec<String> = store
        .list(&ListFilter::default())
        .unwrap()
        .into_iter()
        .map(|l| l.key.to_string())
        .collect();
    assert_eq!(held, ["kept"], "{answers:?}");
    store
        .together(&mut || {
            store.acquire(&request("B", &["after"]), None).unwrap();
        })
        .unwrap();
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 2);
}
