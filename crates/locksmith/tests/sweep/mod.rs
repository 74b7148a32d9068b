//! Process binding and the sweeper on a real store file: every sweeper rule
//! with the time given by a manual clock, a dry run that changes nothing, a
//! pid whose start time does not match, and a sweeper racing live holders.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use locksmith::core::store::{ListFilter, Proof, Release, Renewal, Target};
use locksmith::core::{
    AcquireRequest, Attempt, Binding, Health, Holder, ManualClock, Notifier, ProcessBinder,
    ReleaseReason, Store, Takeover,
};
use locksmith::host::{SystemClock, sys, this_process};
use locksmith::sweep::sweep;
use locksmith::{Key, Options};
use locksmith_sqlite::SqliteStore;

fn store(dir: &tempfile::TempDir, clock: Arc<dyn locksmith::core::Clock>) -> SqliteStore {
    let opts = Options {
        stale_after: Duration::from_secs(600),
        ..Options::default()
    };
    SqliteStore::open_with_clock(&dir.path().join("locksmith.db"), opts, clock).unwrap()
}

fn req(key: &str, owner: &str) -> AcquireRequest {
    AcquireRequest::exclusive(vec![Key::new(key).unwrap()], this_process(owner))
}

fn granted(s: &dyn Store, r: &AcquireRequest) -> locksmith::core::Grant {
    match s.acquire(r, None).unwrap() {
        Attempt::Granted(g) => g,
        Attempt::Blocked(b) => panic!("blocked by {:?}", b.holders),
    }
}

fn last_reason(s: &dyn Store, key: &str) -> Option<ReleaseReason> {
    let f = locksmith::core::store::HistoryFilter {
        key: Some(key.into()),
        limit: 1,
        ..Default::default()
    };
    s.history(&f).unwrap()[0].reason
}

#[test]
fn every_sweeper_rule_with_a_manual_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let s = store(&dir, Arc::new(clock.clone()));
    granted(
        &s,
        &AcquireRequest {
            ttl: Some(Duration::from_secs(10)),
            ..req("lease", "a")
        },
    );
    granted(
        &s,
        &AcquireRequest {
            max_hold: Some(Duration::from_secs(20)),
            ttl: Some(Duration::from_secs(60)),
            ..req("capped", "a")
        },
    );
    granted(&s, &req("quiet", "a"));
    granted(
        &s,
        &AcquireRequest {
            holder: Holder {
                task: Some("T-done".into()),
                ..this_process("a")
            },
            ..req("task", "a")
        },
    );
    granted(
        &s,
        &AcquireRequest {
            holder: Holder {
                task: Some("T-open".into()),
                ..this_process("a")
            },
            ..req("busy-task", "a")
        },
    );
    let mut hook = |t: &str| t == "T-done";

    // Nothing is due yet, except the finished task.
    let first = sweep(&s, false, Some(&mut hook)).unwrap();
    assert_eq!(
        first
            .iter()
            .map(|a| (a.key.as_str(), a.reason))
            .collect::<Vec<_>>(),
        vec![("task", ReleaseReason::TaskCompleted)]
    );

    clock.advance(Duration::from_secs(11));
    let dry = sweep(&s, true, Some(&mut hook)).unwrap();
    assert_eq!(dry.len(), 1);
    assert!(!dry[0].applied);
    assert_eq!(
        s.list(&ListFilter::default()).unwrap().len(),
        4,
        "a dry run changes nothing"
    );
    let second = sweep(&s, false, Some(&mut hook)).unwrap();
    assert_eq!(
        second
            .iter()
            .map(|a| (a.key.as_str(), a.reason))
            .collect::<Vec<_>>(),
        vec![("lease", ReleaseReason::LeaseExpired)]
    );

    clock.advance(Duration::from_secs(10));
    let third = sweep(&s, false, Some(&mut hook)).unwrap();
    assert_eq!(
        third
            .iter()
            .map(|a| (a.key.as_str(), a.reason))
            .collect::<Vec<_>>(),
        vec![("capped", ReleaseReason::MaxHold)]
    );

    clock.advance(Duration::from_secs(600));
    let fourth = sweep(&s, false, Some(&mut hook)).unwrap();
    let mut keys: Vec<_> = fourth.iter().map(|a| (a.key.as_str(), a.reason)).collect();
    keys.sort_by_key(|k| k.0);
    assert_eq!(
        keys,
        vec![
            ("busy-task", ReleaseReason::StaleTimeout),
            ("quiet", ReleaseReason::StaleTimeout)
        ]
    );
    for (key, reason) in [
        ("lease", "lease_expired"),
        ("capped", "max_hold"),
        ("quiet", "stale_timeout"),
        ("task", "task_completed"),
    ] {
        assert_eq!(
            last_reason(&s, key).map(|r| r.to_string()).as_deref(),
            Some(reason),
            "{key}"
        );
    }
    assert!(s.list(&ListFilter::default()).unwrap().is_empty());
}

#[test]
fn a_dead_bound_process_is_swept_and_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir, Arc::new(SystemClock));
    let mut child = Command::new("sleep")
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let bind = Binding {
        pid,
        start: sys::process_start(pid),
        life_file: None,
    };
    granted(
        &s,
        &AcquireRequest {
            bind: Some(bind),
            ..req("bound", "a")
        },
    );
    granted(
        &s,
        &AcquireRequest {
            bind: Some(s.bind_current_process().unwrap()),
            ..req("me", "a")
        },
    );
    assert!(
        sweep(&s, false, None).unwrap().is_empty(),
        "both processes live"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        s.status(&Key::new("bound").unwrap()).unwrap().holders[0].health,
        Health::Dead
    );
    let swept = sweep(&s, false, None).unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(
        (swept[0].key.as_str(), swept[0].reason),
        ("bound", ReleaseReason::DeadProcess)
    );
    assert_eq!(
        s.list(&ListFilter::default()).unwrap().len(),
        1,
        "this process's lock stays"
    );
}

#[test]
fn a_reused_pid_does_not_keep_a_dead_holders_lock() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir, Arc::new(SystemClock));
    // This process is alive, but with another start time it stands for an
    // earlier process that had the same pid: the recorded start decides.
    let me = std::process::id();
    let start = sys::process_start(me).unwrap();
    let stale = Binding {
        pid: me,
        start: Some(start.saturating_sub(1000)),
        life_file: None,
    };
    granted(
        &s,
        &AcquireRequest {
            bind: Some(stale),
            ttl: Some(Duration::from_secs(300)),
            ..req("reused", "old")
        },
    );
    let g = granted(&s, &req("reused", "new"));
    assert_eq!(
        g.owner, "new",
        "the lock of the dead holder was freed at once"
    );
    let f = locksmith::core::store::HistoryFilter {
        key: Some("reused".into()),
        kind: Some(locksmith::core::EventKind::Reaped),
        ..Default::default()
    };
    assert_eq!(
        s.history(&f).unwrap()[0].reason,
        Some(ReleaseReason::DeadProcess)
    );
}

#[test]
fn a_sweeper_racing_live_holders_never_frees_a_live_lock() {
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let path = dir.path().join("locksmith.db");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = SqliteStore::open(&path, Options::default()).unwrap();
            let mut passes = 0;
            while !stop.load(Ordering::SeqCst) {
                let ended = sweep(&s, false, None).unwrap();
                assert!(ended.is_empty(), "the sweeper ended a live lock: {ended:?}");
                passes += 1;
            }
            passes
        })
    };
    let holders: Vec<_> = (0..4)
        .map(|i| {
            let path = dir.path().join("locksmith.db");
            std::thread::spawn(move || {
                let s = SqliteStore::open(&path, Options::default()).unwrap();
                for n in 0..150 {
                    let key = format!("race/{}", n % 3);
                    let r = AcquireRequest {
                        ttl: Some(Duration::from_secs(5)),
                        bind: Some(s.bind_current_process().unwrap()),
                        ..req(&key, &format!("h{i}"))
                    };
                    let Attempt::Granted(g) = s.acquire(&r, None).unwrap() else {
                        continue;
                    };
                    let t = Target {
                        key: Key::new(key.as_str()).unwrap(),
                        by: Proof::Handle(g.handle.clone()),
                    };
                    assert!(matches!(
                        s.renew(&t, None).unwrap(),
                        Renewal::Renewed { .. }
                    ));
                    assert!(matches!(
                        s.release(&t, ReleaseReason::Completed).unwrap(),
                        Release::Released { .. }
                    ));
                }
            })
        })
        .collect();
    for h in holders {
        h.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    assert!(sweeper.join().unwrap() > 0);
}

#[test]
fn another_hosts_binding_is_left_to_its_lease_and_an_earlier_boots_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir, Arc::new(SystemClock));
    // A pid that does not exist here: judged by pid, both would look dead.
    let gone = Binding {
        pid: u32::MAX - 11,
        start: Some(1),
        life_file: None,
    };
    let elsewhere = Holder {
        hostname: "another-host".into(),
        boot_id: "another-boot".into(),
        ..this_process("remote")
    };
    granted(
        &s,
        &AcquireRequest {
            holder: elsewhere,
            bind: Some(gone.clone()),
            ttl: Some(Duration::from_secs(60)),
            ..req("remote/k", "remote")
        },
    );
    assert!(
        matches!(
            s.acquire(&req("remote/k", "local"), None).unwrap(),
            Attempt::Blocked(_)
        ),
        "only its lease may end another host's lock"
    );
    assert_eq!(
        s.status(&Key::new("remote/k").unwrap()).unwrap().holders[0].health,
        Health::Healthy
    );

    let before_reboot = Holder {
        boot_id: "an-earlier-boot".into(),
        ..this_process("old")
    };
    granted(
        &s,
        &AcquireRequest {
            holder: before_reboot,
            bind: Some(gone),
            ..req("rebooted/k", "old")
        },
    );
    let g = granted(&s, &req("rebooted/k", "new"));
    assert_eq!(
        g.owner, "new",
        "a process of an earlier boot of this host is gone"
    );
}

#[test]
fn a_container_sharing_the_kernel_is_not_judged_by_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir, Arc::new(SystemClock));
    // Same boot id (same kernel), another host name: another pid namespace,
    // where this pid means nothing here.
    let gone_here = Binding {
        pid: u32::MAX - 11,
        start: Some(1),
        life_file: None,
    };
    let container = Holder {
        hostname: "a-container".into(),
        ..this_process("boxed")
    };
    granted(
        &s,
        &AcquireRequest {
            holder: container,
            bind: Some(gone_here),
            ..req("boxed/k", "boxed")
        },
    );
    assert!(matches!(
        s.acquire(&req("boxed/k", "host"), None).unwrap(),
        Attempt::Blocked(_)
    ));
    assert!(sweep(&s, false, None).unwrap().is_empty());
}

#[test]
fn steal_stale_does_not_steal_for_a_request_that_earlier_waiters_block() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let s = store(&dir, Arc::new(clock.clone()));
    granted(&s, &req("steal/k", "h"));
    let wake = s.notifier().wake_source().unwrap();
    let mut w = locksmith::core::Ticket {
        seq: None,
        wake: wake.address().to_string(),
        claim: None,
    };
    assert!(matches!(
        s.acquire(&req("steal/k", "w"), Some(&mut w)).unwrap(),
        Attempt::Blocked(_)
    ));
    clock.advance(Duration::from_secs(601));
    let thief = AcquireRequest {
        takeover: Takeover::StealStale,
        ..req("steal/k", "t")
    };
    // Keep the waiter's place alive across the jump of the manual clock.
    assert!(matches!(
        s.acquire(&req("steal/k", "w"), Some(&mut w)).unwrap(),
        Attempt::Blocked(_)
    ));
    assert!(matches!(
        s.acquire(&thief, None).unwrap(),
        Attempt::Blocked(_)
    ));
    let st = s.status(&Key::new("steal/k").unwrap()).unwrap();
    assert_eq!(
        st.holders[0].owner, "h",
        "nothing was stolen for a request that is not granted"
    );
    let f = locksmith::core::store::HistoryFilter {
        kind: Some(locksmith::core::EventKind::Stolen),
        ..Default::default()
    };
    assert!(s.history(&f).unwrap().is_empty());
}
