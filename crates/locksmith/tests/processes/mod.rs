//! Many real processes on one store (the embedded file, and PostgreSQL: a
//! server the tests start, also behind PgBouncer): a stress run in mixed
//! modes with a witness that proves no two conflicting holders overlapped,
//! and a crash run that SIGKILLs processes while they acquire and release.
//!
//! Workers are this test binary started again on the ignored `worker` test,
//! told what to do through the environment.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use locksmith::Client;

const LOG: &str = "LOCKSMITH_TEST_LOG";
const STORE: &str = "LOCKSMITH_TEST_STORE";
const CYCLES: &str = "LOCKSMITH_TEST_CYCLES";
const SEED: &str = "LOCKSMITH_TEST_SEED";
const TTL_MS: &str = "LOCKSMITH_TEST_TTL_MS";
const PLAN: &str = "LOCKSMITH_TEST_PLAN";

fn mono_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// (key, mode, tree) choices of the stress plan.
const STRESS: &[(&str, &str, bool)] = &[
    ("stress/x", "exclusive", false),
    ("stress/s", "shared", false),
    ("stress/s", "shared", false),
    ("stress/s", "exclusive", false),
    ("stress/sem", "semaphore", false),
    ("stress/t", "exclusive", true),
    ("stress/t/a", "exclusive", false),
    ("stress/t/a", "exclusive", false),
];

fn append(log: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    // One write per line: O_APPEND keeps lines whole and in order.
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// Replaces the witness in one step (write aside, then rename): a holder
/// SIGKILLed while writing never leaves a truncated, empty witness behind.
fn write_whole(path: &Path, text: &str) {
    let aside = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The witness of an exclusive key: a file that must read `free` on entry.
/// Whether process `pid` still runs (a zombie does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// On entry the witness must read `free`, or name a holder that is dead
/// (SIGKILLed while holding: the crash test frees its lock on proof of death).
fn witness_enter(path: &Path, me: &str) {
    let seen = std::fs::read_to_string(path).unwrap_or_else(|_| "free".into());
    if seen != "free" {
        let pid: u32 = seen
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        assert!(
            pid != 0 && !running(pid),
            "witness {} held by live {seen} on entry of {me}",
            path.display()
        );
    }
    write_whole(path, me);
}

fn witness_exit(path: &Path, me: &str) {
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        me,
        "witness {} changed under {me}",
        path.display()
    );
    write_whole(path, "free");
}

#[test]
#[ignore = "run by the process tests as a child"]
fn worker() {
    let Ok(log) = std::env::var(LOG) else { return };
    let log = PathBuf::from(log);
    let store = std::env::var(STORE).unwrap();
    let cycles: u64 = std::env::var(CYCLES).unwrap().parse().unwrap();
    let mut rng = Rng(std::env::var(SEED).unwrap().parse().unwrap());
    let ttl = Duration::from_millis(std::env::var(TTL_MS).unwrap().parse().unwrap());
    let plan = std::env::var(PLAN).unwrap();
    let client = Client::open(&store).unwrap();
    let pid = std::process::id();
    if plan == "hold" {
        // Hold one lock (process-bound by default, long lease) until killed.
        let _guard = client
            .lock("held/k")
            .ttl(Duration::from_secs(120))
            .acquire_blocking()
            .unwrap();
        append(&log, "held");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let dir = log.parent().unwrap().to_path_buf();
    if plan == "outage" {
        outage_worker(&client, &log, &dir, cycles, ttl);
        return;
    }
    for _ in 0..cycles {
        let (key, mode, tree) = if plan == "stress" {
            STRESS[rng.below(STRESS.len() as u64) as usize]
        } else {
            ("crash/k", "exclusive", false)
        };
        let mut b = client
            .lock(key)
            .ttl(ttl)
            .wait(Duration::from_secs(60))
            .owner(&format!("w{pid}"));
        b = match mode {
            "shared" => b.shared(),
            "semaphore" => b.limit(2),
            _ => b,
        };
        if tree {
            b = b.tree();
        }
        let guard = b.acquire_blocking().unwrap();
        let fence = guard.fence();
        append(
            &log,
            &format!("enter {key} {mode} {tree} {fence} {pid} {}", mono_ns()),
        );
        let me = format!("{pid}/{fence}");
        let witness = (mode == "exclusive").then(|| dir.join(key.replace('/', "_")));
        if let Some(w) = &witness {
            witness_enter(w, &me);
        }
        // Crash runs hold longer, so that kills land inside tenures too.
        let work = if plan == "crash" {
            500 + rng.below(3000)
        } else {
            rng.below(300)
        };
        let until = Instant::now() + Duration::from_micros(work);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        if let Some(w) = &witness {
            witness_exit(w, &me);
        }
        append(
            &log,
            &format!("exit {key} {mode} {tree} {fence} {pid} {}", mono_ns()),
        );
        guard.release().unwrap();
    }
}

/// One key, exclusive, until `dir/stop` appears; a store failure (the
/// server is down) is written to `dir/errors` and the worker tries again.
fn outage_worker(client: &Client, log: &Path, dir: &Path, cycles: u64, ttl: Duration) {
    let pid = std::process::id();
    let witness = dir.join("outage_k");
    for _ in 0..cycles {
        if dir.join("stop").exists() {
            return;
        }
        let got = client
            .lock("outage/k")
            .ttl(ttl)
            .wait(Duration::from_secs(30))
            .owner(&format!("w{pid}"))
            .acquire_blocking();
        let guard = match got {
            Ok(g) => g,
            Err(e) => {
                append(&dir.join("errors"), &format!("{pid} {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let fence = guard.fence();
        append(
            log,
            &format!("enter outage/k exclusive false {fence} {pid} {}", mono_ns()),
        );
        let me = format!("{pid}/{fence}");
        witness_enter(&witness, &me);
        std::thread::sleep(Duration::from_millis(2));
        witness_exit(&witness, &me);
        append(
            log,
            &format!("exit outage/k exclusive false {fence} {pid} {}", mono_ns()),
        );
        // A release lost to the outage leaves the lock to its lease.
        let _ = guard.release();
    }
}

fn spawn_worker(log: &Path, store: &str, cycles: u64, seed: u64, ttl_ms: u64, plan: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "processes::worker",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(LOG, log)
        .env(STORE, store)
        .env(CYCLES, cycles.to_string())
        .env(SEED, seed.to_string())
        .env(TTL_MS, ttl_ms.to_string())
        .env(PLAN, plan)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for every worker; each must have succeeded.
fn wait_all(workers: Vec<Child>) {
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[derive(Debug, Clone)]
struct Line {
    enter: bool,
    key: String,
    mode: String,
    tree: bool,
    fence: u64,
    pid: u32,
    at_ns: u128,
}

fn read_log(log: &Path) -> Vec<Line> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Line {
                enter: f[0] == "enter",
                key: f[1].into(),
                mode: f[2].into(),
                tree: f[3] == "true",
                fence: f[4].parse().unwrap(),
                pid: f[5].parse().unwrap(),
                at_ns: f[6].parse().unwrap(),
            }
        })
        .collect()
}

/// An independent oracle: may `new` be held while `old` is?
fn compatible(new: &Line, old: &Line) -> bool {
    let covers =
        |t: &Line, k: &str| t.key == k || (t.tree && k.starts_with(&format!("{}/", t.key)));
    if !(covers(new, &old.key) || covers(old, &new.key)) {
        return true;
    }
    (new.mode == "shared" && old.mode == "shared")
        || (new.mode == "semaphore" && old.mode == "semaphore" && new.key == old.key)
}

/// The embedded store in `dir`, created once so that the workers do not
/// all race to make it.
fn sqlite_store(dir: &Path) -> String {
    let url = format!("sqlite://{}", dir.join("locksmith.db").display());
    drop(Client::open(&url).unwrap());
    url
}

/// A fresh schema on the test server. The workers race to create it: that
/// first connection of many processes at once is part of the test.
fn postgres_store() -> String {
    locksmith_testkit::pg::PgServer::shared().fresh_schema_url()
}

#[test]
fn eight_processes_never_overlap_and_fences_rise() {
    let dir = tempfile::tempdir().unwrap();
    stress(dir.path(), &sqlite_store(dir.path()));
}

#[test]
fn eight_processes_never_overlap_and_fences_rise_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    stress(dir.path(), &postgres_store());
}

#[test]
fn eight_processes_never_overlap_and_fences_rise_through_pgbouncer() {
    let dir = tempfile::tempdir().unwrap();
    let bouncer = locksmith_testkit::pg::Bouncer::start(locksmith_testkit::pg::PgServer::shared())
        .expect("start PgBouncer in transaction mode");
    stress(dir.path(), &bouncer.fresh_schema_url());
}

fn stress(dir: &Path, store: &str) {
    let log = dir.join("log");
    let workers: Vec<Child> = (0..8)
        .map(|i| spawn_worker(&log, store, 250, 0x9E37_79B9 + i * 7919, 30_000, "stress"))
        .collect();
    wait_all(workers);
    let lines = read_log(&log);
    assert_eq!(
        lines.len(),
        8 * 250 * 2,
        "every cycle logged enter and exit"
    );
    let mut active: Vec<Line> = Vec::new();
    let mut last_fence: HashMap<String, u64> = HashMap::new();
    let mut fences = HashSet::new();
    let mut max_sem = 0;
    for l in &lines {
        if l.enter {
            for a in &active {
                assert!(compatible(l, a), "overlap: {l:?} entered while {a:?} held");
            }
            assert!(fences.insert(l.fence), "fence {} issued twice", l.fence);
            if l.mode == "exclusive" {
                let prev = last_fence.insert(l.key.clone(), l.fence).unwrap_or(0);
                assert!(
                    l.fence > prev,
                    "fence of {} went from {prev} to {}",
                    l.key,
                    l.fence
                );
            }
            active.push(l.clone());
            max_sem = max_sem.max(active.iter().filter(|a| a.mode == "semaphore").count());
        } else {
            let i = active
                .iter()
                .position(|a| a.fence == l.fence)
                .expect("exit without enter");
            active.remove(i);
        }
    }
    assert!(max_sem <= 2, "semaphore of 2 had {max_sem} holders");
    assert!(active.is_empty());
}

#[test]
fn sigkill_during_acquire_and_release_never_grants_twice() {
    let dir = tempfile::tempdir().unwrap();
    crash(dir.path(), &sqlite_store(dir.path()));
}

#[test]
fn sigkill_during_acquire_and_release_never_grants_twice_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    crash(dir.path(), &postgres_store());
}

fn crash(dir: &Path, store: &str) {
    let log = dir.join("log");
    let ttl_ms = 400;
    let mut rng = Rng(0xDEAD_BEEF);
    let mut workers: Vec<Child> = (0..8)
        .map(|i| spawn_worker(&log, store, 100_000, 11 + i, ttl_ms, "crash"))
        .collect();
    // pid -> when it was killed, on the system-wide monotonic clock.
    let mut killed: HashMap<u32, u128> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Each kill waits for two more grants than the one before it: progress
    // is checked after every kill (a dead holder must not block the others
    // for good), and a loaded machine only makes the rounds slower.
    let mut enters_seen = 0;
    for round in 0..12u64 {
        assert!(Instant::now() < deadline, "crash test ran out of time");
        std::thread::sleep(Duration::from_millis(40 + rng.below(120)));
        loop {
            let enters = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("enter "))
                .count();
            if enters >= enters_seen + 2 {
                enters_seen = enters;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no new grant before round {round}: {enters} grants in all"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let i = rng.below(workers.len() as u64) as usize;
        let mut victim = workers.remove(i);
        if let Ok(Some(status)) = victim.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = victim.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("a worker ended by itself ({status}): {err}");
        }
        let pid = victim.id();
        killed.insert(pid, mono_ns());
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        victim.wait().unwrap();
        workers.push(spawn_worker(
            &log,
            store,
            100_000,
            1000 + round,
            ttl_ms,
            "crash",
        ));
    }
    for mut w in workers {
        killed.insert(w.id(), mono_ns());
        let _ = w.kill();
        let _ = w.wait();
    }
    // The store opens cleanly and the lock comes back once the dead leases end.
    let client = Client::open(store).unwrap();
    let guard = client
        .lock("crash/k")
        .wait(Duration::from_secs(10))
        .acquire_blocking()
        .unwrap();
    let lines = read_log(&log);
    let enters: Vec<&Line> = lines.iter().filter(|l| l.enter).collect();
    assert!(
        enters.len() > 20,
        "the workers made progress ({} grants)",
        enters.len()
    );
    let max_logged = enters.iter().map(|l| l.fence).max().unwrap();
    assert!(
        guard.fence().0 > max_logged,
        "fences keep rising after the crashes"
    );
    // Replay: a new holder enters only after the previous one exited or,
    // if the previous one was killed holding it, after the kill (the lock is
    // process-bound, so proof of death frees it before its lease ends).
    let mut holder: Option<&Line> = None;
    let mut fence = 0;
    for l in &lines {
        if l.enter {
            assert!(l.fence > fence, "fence went backwards at {l:?}");
            fence = l.fence;
            if let Some(prev) = holder {
                let died = killed
                    .get(&prev.pid)
                    .unwrap_or_else(|| panic!("{l:?} entered while live {prev:?} held the lock"));
                assert!(l.at_ns > *died, "{l:?} entered before {prev:?} was killed");
            }
            holder = Some(l);
        } else {
            assert_eq!(
                holder.map(|h| h.fence),
                Some(l.fence),
                "exit of a tenure that was not current: {l:?}"
            );
            holder = None;
        }
    }
    guard.release().unwrap();
}

#[test]
fn a_killed_library_holder_frees_its_lock_for_a_waiter_at_once() {
    let dir = tempfile::tempdir().unwrap();
    killed_holder(dir.path(), &sqlite_store(dir.path()));
}

#[test]
fn a_killed_library_holder_frees_its_lock_for_a_waiter_at_once_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let store = postgres_store();
    drop(Client::open(&store).unwrap());
    killed_holder(dir.path(), &store);
}

fn killed_holder(dir: &Path, store: &str) {
    let log = dir.join("log");
    let mut holder = spawn_worker(&log, store, 1, 1, 120_000, "hold");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&log).unwrap_or_default().trim() != "held" {
        assert!(Instant::now() < deadline, "the holder never got the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let waiter = {
        let url = store.to_string();
        std::thread::spawn(move || {
            let client = Client::open(&url).unwrap();
            let g = client
                .lock("held/k")
                .owner("waiter")
                .wait(Duration::from_secs(30))
                .acquire_blocking()
                .unwrap();
            (Instant::now(), g.fence())
        })
    };
    // Let the waiter queue and start watching the holder.
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(holder.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    holder.wait().unwrap();
    let (granted_at, _) = waiter.join().unwrap();
    let took = granted_at.duration_since(killed);
    // No sweeper runs and the lease had two minutes left: only the proof of death frees it.
    assert!(
        took < Duration::from_millis(500),
        "the waiter got the lock {took:?} after the kill"
    );
    let client = Client::open(store).unwrap();
    let f = locksmith::core::store::HistoryFilter {
        key: Some("held/k".into()),
        kind: Some(locksmith::core::EventKind::Reaped),
        ..Default::default()
    };
    assert_eq!(
        client.store().history(&f).unwrap()[0].reason,
        Some(locksmith::ReleaseReason::DeadProcess)
    );
}

/// PostgreSQL stopped with `pg_ctl stop -m immediate` in the middle of a
/// run and started again: the workers get a clear error while it is down
/// and carry on after; no two holders overlap, fences never go back, and
/// every grant a worker was told of is in the store's history.
#[test]
fn postgres_stopped_immediately_mid_run_loses_no_grant_and_overlaps_nothing() {
    use locksmith::core::store::HistoryFilter;
    let server = locksmith_testkit::pg::PgServer::start(&[]).expect("a server of its own");
    let store = format!("{}?schema=outage", server.url);
    drop(Client::open(&store).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let workers: Vec<Child> = (0..6)
        .map(|i| spawn_worker(&log, &store, 1_000_000, i, 3_000, "outage"))
        .collect();
    let count = || read_log(&log).iter().filter(|l| l.enter).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() < 50 {
        assert!(Instant::now() < deadline, "the workers made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.crash().expect("pg_ctl stop -m immediate");
    std::thread::sleep(Duration::from_millis(1500));
    let before_restart = count();
    server.restart().expect("start the server again");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count() < before_restart + 50 {
        assert!(Instant::now() < deadline, "no progress after the restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(dir.path().join("stop"), "").unwrap();
    wait_all(workers);
    let errors = std::fs::read_to_string(dir.path().join("errors")).unwrap_or_default();
    assert!(!errors.is_empty(), "the outage was noticed");
    eprintln!("errors the workers saw:\n{errors}");
    for line in errors.lines() {
        // A grant whose commit reply was lost with the connection is held
        // (unknown to its worker) until its lease ends; meanwhile that
        // worker's next request may close a cycle through it, refused.
        assert!(
            line.contains("PostgreSQL") || line.contains("deadlock refused on outage/k"),
            "an error that does not say what failed: {line}"
        );
    }
    let lines = read_log(&log);
    let mut holder: Option<&Line> = None;
    let mut fence = 0;
    for l in &lines {
        if l.enter {
            assert!(holder.is_none(), "{l:?} entered while {holder:?} held");
            assert!(l.fence > fence, "fence went back at {l:?}");
            fence = l.fence;
            holder = Some(l);
        } else {
            assert_eq!(holder.map(|h| h.fence), Some(l.fence));
            holder = None;
        }
    }
    let client = Client::open(&store).unwrap();
    let acquired: HashSet<u64> = client
        .store()
        .history(&HistoryFilter {
            key: Some("outage/k".into()),
            kind: Some(locksmith::core::EventKind::Acquired),
            ..Default::default()
        })
        .unwrap()
        .iter()
        .filter_map(|e| e.fence.map(|f| f.0))
        .collect();
    for l in lines.iter().filter(|l| l.enter) {
        assert!(
            acquired.contains(&l.fence),
            "grant {} was told to a worker and lost",
            l.fence
        );
    }
}
