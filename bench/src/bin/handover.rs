//! `handover`: several OS processes contend for ONE key, waiting forever;
//! measures the time from one holder's release to the next holder's grant,
//! and how fair the order of grants is. Three peers run the same protocol:
//! `locksmith` (the library, `wait_forever`), `core` (the same request through
//! `locksmith::wait::acquire` and `Guard::start`, on a store wrapper that
//! also notes when a waiter is woken and when its granted attempt starts), and
//! `flock` (blocking `LOCK_EX` on one file).
//!
//! ```text
//! handover [--handovers 2000] [--procs 8] [--hold-us 100] [--secs 60] [--ttl-ms 30000] [--dir DIR]
//!          [--peers locksmith,core,flock]
//! ```
//!
//! The benchmark starts `--procs` copies of itself as workers (hidden first
//! argument `__worker`). Each worker loops: note the time it starts waiting,
//! acquire, note the grant time, bump a shared counter (a file, protected by
//! the lock itself), hold for `--hold-us`, note the release time, release.
//! Times are `CLOCK_MONOTONIC` nanoseconds, one clock for every process.
//! The run ends once the counter reaches `--handovers` + 1 grants or after
//! `--secs`. Each worker writes its records to a file that the parent merges.
//! For locksmith the parent also replays the store's own history to check
//! that every grant went to the head of the queue.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use locksmith_bench::{Args, Machine, Summary, WorkDir, fmt_ns, fmt_rate, mono_ns, table};
use locksmith_core::store::{
    HistoryFilter, KeyStatus, LeaveReason, ListFilter, LockInfo, Release, Renewal, Stats, Target,
    Ticket, WaiterInfo,
};
use locksmith_core::tenure::Reap;
use locksmith_core::{
    AcquireRequest, Attempt, Event, Key, Notifier, ProcessBinder, ReleaseReason, Store, StoreError,
    WakeSource,
};
use rustix::fs::{FlockOperation, flock};

/// The two contenders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Locksmith,
    Core,
    Flock,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Locksmith => "locksmith",
            Kind::Core => "core",
            Kind::Flock => "flock",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Locksmith => "locksmith library (wait_forever, ttl 30s)",
            Kind::Core => "locksmith core wait loop (wait::acquire + Guard, ttl 30s, bound, timed)",
            Kind::Flock => "flock(2) blocking LOCK_EX",
        }
    }
    fn from_tag(t: &str) -> Kind {
        match t {
            "locksmith" => Kind::Locksmith,
            "core" => Kind::Core,
            "flock" => Kind::Flock,
            other => panic!("unknown worker kind {other}"),
        }
    }
}

/// One tenure as a worker saw it.
#[derive(Clone, Copy, Debug)]
struct Rec {
    proc: usize,
    /// Started waiting.
    wait: u64,
    /// Granted.
    grant: u64,
    /// About to release.
    release: u64,
    /// The release call returned.
    released: u64,
    /// Blocked attempts before the grant (core wait loop only).
    blocked: u64,
    /// Last wake-up before the grant (core variant; 0 when none).
    woke: u64,
    /// Start of the granted attempt (core variant; 0 otherwise).
    attempt: u64,
}

/// Worker settings, passed on the command line.
struct WorkerCfg {
    kind: Kind,
    id: usize,
    dir: PathBuf,
    total: u64,
    hold: Duration,
    deadline: u64,
    ttl: Duration,
}

/// The shared grant counter, read and written only by the lock holder.
struct Counter(File);

impl Counter {
    fn get(&self) -> u64 {
        let mut b = [0u8; 8];
        self.0.read_exact_at(&mut b, 0).expect("read the counter");
        u64::from_le_bytes(b)
    }
    fn set(&self, v: u64) {
        self.0
            .write_all_at(&v.to_le_bytes(), 0)
            .expect("write the counter");
    }
    /// Called by the holder: true when this tenure counts, false when the run is over.
    fn take_turn(&self, total: u64, deadline: u64) -> bool {
        let n = self.get();
        if n >= total {
            return false;
        }
        if mono_ns() >= deadline {
            self.set(total);
            return false;
        }
        self.set(n + 1);
        true
    }
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A store that notes when each acquire attempt starts and when a waiter
/// was last woken, so the core variant can split a hand-over into its steps.
struct Timed {
    inner: Arc<locksmith_sqlite::SqliteStore>,
    attempt: Arc<AtomicU64>,
}

/// The notifier of [`Timed`]: its wake sources note when a wait ends by a wake-up.
struct TimedNotifier {
    inner: locksmith_sqlite::SqliteNotifier,
    woke: Arc<AtomicU64>,
}

impl Notifier for TimedNotifier {
    fn wake_source(&self) -> Result<Box<dyn WakeSource>, StoreError> {
        Ok(Box::new(TimedWake {
            inner: self.inner.wake_source()?,
            woke: self.woke.clone(),
        }))
    }
}

/// The wake source of [`Timed`]: notes the time a wait ends by a wake-up.
struct TimedWake {
    inner: Box<dyn WakeSource>,
    woke: Arc<AtomicU64>,
}

impl WakeSource for TimedWake {
    fn address(&self) -> &str {
        self.inner.address()
    }
    fn wait(&mut self, timeout: Duration) -> bool {
        let woken = self.inner.wait(timeout);
        if woken {
            self.woke.store(mono_ns(), Ordering::Relaxed);
        }
        woken
    }
    fn watch(&mut self, targets: &[String]) {
        self.inner.watch(targets)
    }
}

impl Store for Timed {
    fn acquire(
        &self,
        req: &AcquireRequest,
        queue: Option<&mut Ticket>,
    ) -> Result<Attempt, StoreError> {
        self.attempt.store(mono_ns(), Ordering::Relaxed);
        self.inner.acquire(req, queue)
    }
    fn leave_queue(&self, ticket: &Ticket, why: LeaveReason) -> Result<(), StoreError> {
        self.inner.leave_queue(ticket, why)
    }
    fn renew(&self, target: &Target, ttl: Option<Duration>) -> Result<Renewal, StoreError> {
        self.inner.renew(target, ttl)
    }
    fn release(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.inner.release(target, reason)
    }
    fn release_grant(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.inner.release_grant(target, reason)
    }
    fn force_release(&self, key: &Key, why: &str) -> Result<Vec<LockInfo>, StoreError> {
        self.inner.force_release(key, why)
    }
    fn status(&self, key: &Key) -> Result<KeyStatus, StoreError> {
        self.inner.status(key)
    }
    fn list(&self, filter: &ListFilter) -> Result<Vec<LockInfo>, StoreError> {
        self.inner.list(filter)
    }
    fn waiters(&self, filter: &ListFilter) -> Result<Vec<WaiterInfo>, StoreError> {
        self.inner.waiters(filter)
    }
    fn history(&self, filter: &HistoryFilter) -> Result<Vec<Event>, StoreError> {
        self.inner.history(filter)
    }
    fn stats(&self) -> Result<Stats, StoreError> {
        self.inner.stats()
    }
    fn reap(&self, batch: &[Reap]) -> Result<Vec<bool>, StoreError> {
        self.inner.reap(batch)
    }
}

/// The binding the library makes for this process (its life file).
fn bind_self(_client: &locksmith::Client, dir: &Path) -> Result<locksmith_core::Binding, String> {
    locksmith_sqlite::SqliteStore::open(&dir.join("locksmith.db"), Default::default())
        .and_then(|s| s.bind_current_process())
        .map_err(|e| e.to_string())
}

fn owner_name(id: usize) -> String {
    format!("worker-{id}")
}

fn worker(cfg: WorkerCfg) -> Result<(), String> {
    let counter = Counter(open_rw(&cfg.dir.join("counter")));
    let url = format!("sqlite://{}", cfg.dir.join("locksmith.db").display());
    let (attempt_at, woke_at) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = match cfg.kind {
        Kind::Locksmith => Some(locksmith::Client::open(&url).map_err(|e| e.to_string())?),
        Kind::Core => {
            let inner = Arc::new(
                locksmith_sqlite::SqliteStore::open(
                    &cfg.dir.join("locksmith.db"),
                    Default::default(),
                )
                .map_err(|e| e.to_string())?,
            );
            let notifier = Arc::new(TimedNotifier {
                inner: inner.notifier(),
                woke: woke_at.clone(),
            });
            Some(locksmith::Client::from_parts(
                Arc::new(Timed {
                    inner: inner.clone(),
                    attempt: attempt_at.clone(),
                }),
                notifier,
                Some(inner),
            ))
        }
        Kind::Flock => None,
    };
    // The core variant builds the same request as the library, once.
    let core_req = match (&client, cfg.kind) {
        (Some(c), Kind::Core) => Some(locksmith_core::AcquireRequest {
            keys: vec![locksmith_core::Key::new("handover/k").map_err(|e| e.to_string())?],
            mode: locksmith_core::Mode::Exclusive,
            scope: locksmith_core::Scope::Key,
            holder: locksmith::host::this_process(owner_name(cfg.id)),
            ttl: Some(cfg.ttl),
            max_hold: None,
            priority: 0,
            takeover: locksmith_core::Takeover::None,
            request_id: None,
            bind: Some(bind_self(c, &cfg.dir)?),
        }),
        _ => None,
    };
    let lockfile = open_rw(&cfg.dir.join("flock.lock"));
    let owner = owner_name(cfg.id);
    std::fs::write(cfg.dir.join(format!("ready-{}", cfg.id)), b"").map_err(|e| e.to_string())?;
    while !cfg.dir.join("go").exists() {
        if mono_ns() >= cfg.deadline {
            return Err("never told to go".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut recs: Vec<[u64; 7]> = Vec::with_capacity(cfg.total as usize);
    // Bounded by the shared counter (each counted tenure bumps it) and by the deadline.
    while (recs.len() as u64) < cfg.total {
        let wait = mono_ns();
        let mut blocked = 0u64;
        match &client {
            Some(client) => {
                let guard = match &core_req {
                    Some(req) => {
                        let cancel = std::sync::atomic::AtomicBool::new(false);
                        let grant = locksmith::wait::acquire(
                            &**client.store(),
                            &**client.notifier(),
                            req,
                            locksmith_core::WaitPolicy::Forever,
                            &cancel,
                            &mut |_, _| blocked += 1,
                        )
                        .map_err(|e| e.to_string())?;
                        locksmith::Guard::start(client.store().clone(), grant)
                    }
                    None => client
                        .lock("handover/k")
                        .owner(&owner)
                        .ttl(cfg.ttl)
                        .wait_forever()
                        .acquire_blocking()
                        .map_err(|e| e.to_string())?,
                };
                let grant = mono_ns();
                let (woke, attempt) = match cfg.kind {
                    Kind::Core => (
                        woke_at.load(Ordering::Relaxed),
                        attempt_at.load(Ordering::Relaxed),
                    ),
                    _ => (0, 0),
                };
                // A wake-up from an earlier acquisition does not count.
                let woke = if woke < wait { 0 } else { woke };
                let counts = counter.take_turn(cfg.total, cfg.deadline);
                if counts && !cfg.hold.is_zero() {
                    std::thread::sleep(cfg.hold);
                }
                let release = mono_ns();
                guard.release().map_err(|e| e.to_string())?;
                let released = mono_ns();
                if !counts {
                    break;
                }
                recs.push([wait, grant, release, released, blocked, woke, attempt]);
            }
            None => {
                flock(&lockfile, FlockOperation::LockExclusive).map_err(|e| e.to_string())?;
                let grant = mono_ns();
                let counts = counter.take_turn(cfg.total, cfg.deadline);
                if counts && !cfg.hold.is_zero() {
                    std::thread::sleep(cfg.hold);
                }
                let release = mono_ns();
                flock(&lockfile, FlockOperation::Unlock).map_err(|e| e.to_string())?;
                let released = mono_ns();
                if !counts {
                    break;
                }
                recs.push([wait, grant, release, released, blocked, 0, 0]);
            }
        }
    }
    let mut out = String::with_capacity(recs.len() * 64);
    for r in recs {
        let line: Vec<String> = r.iter().map(u64::to_string).collect();
        out.push_str(&line.join(" "));
        out.push('\n');
    }
    std::fs::write(cfg.dir.join(format!("recs-{}", cfg.id)), out).map_err(|e| e.to_string())
}

fn worker_main(a: &[String]) {
    let get = |i: usize| a.get(i).cloned().unwrap_or_default();
    let num = |i: usize| -> u64 { get(i).parse().expect("worker argument") };
    let cfg = WorkerCfg {
        kind: Kind::from_tag(&get(0)),
        id: num(1) as usize,
        dir: PathBuf::from(get(2)),
        total: num(3),
        hold: Duration::from_micros(num(4)),
        deadline: num(5),
        ttl: Duration::from_millis(num(6)),
    };
    let id = cfg.id;
    if let Err(e) = worker(cfg) {
        eprintln!("worker {id}: {e}");
        std::process::exit(1);
    }
}

/// What one contender measured.
struct Report {
    kind: Kind,
    grants: usize,
    span_ns: u64,
    handover: Summary,
    /// The releaser's release call, for measured hand-overs.
    release_call: Summary,
    /// From the release call's return to the next grant.
    after_release: Summary,
    overlaps: usize,
    longest_run: usize,
    regrants: usize,
    overtakes: usize,
    overtakes_1ms: usize,
    per_proc: Vec<usize>,
    /// Blocked attempts of the next holder: mean over hand-overs ≤ 2 ms and
    /// over slower ones, with their counts (core wait loop only).
    attempts: Option<[(usize, f64); 2]>,
    /// Release return → woken, woken → granted attempt starts, granted
    /// attempt (core variant only; hand-overs where the next holder was woken).
    steps: Option<[Summary; 3]>,
    /// Queue-order check on the store's own history (locksmith only).
    store_fifo: Option<StoreFifo>,
    notes: Vec<String>,
}

/// Grants checked against the queue order the store itself recorded.
#[derive(Clone, Copy, Debug, Default)]
struct StoreFifo {
    /// `waiting` events (requests that joined the queue).
    queued: usize,
    /// Grants to a queued request.
    grants_from_queue: usize,
    /// Grants to a queued request that was not the head of the queue.
    out_of_order: usize,
    /// Grants to a request that never queued while the queue was not empty.
    barged: usize,
    /// Releases followed by a grant to another request.
    handovers: usize,
    /// Of those, how often the releaser's own new queue entry was committed
    /// between the release and the next grant (its transaction ran first).
    requeued_between: usize,
}

/// Replays the store's history of `key`: every `waiting` event joins the
/// tail of a queue, every `acquired` event must go to the head of it (or to
/// a newcomer only when nobody waits).
fn store_fifo(db: &Path, key: &str) -> Result<StoreFifo, String> {
    use locksmith_core::store::HistoryFilter;
    use locksmith_core::{EventKind, Store};
    let store =
        locksmith_sqlite::SqliteStore::open(db, Default::default()).map_err(|e| e.to_string())?;
    let mut events = store
        .history(&HistoryFilter {
            key: Some(key.into()),
            limit: 10_000_000,
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    events.reverse();
    let mut queue: std::collections::VecDeque<String> = Default::default();
    let mut f = StoreFifo::default();
    let mut released_by: Option<(String, bool)> = None;
    for e in events {
        match e.kind {
            EventKind::Released => released_by = Some((e.owner.clone(), false)),
            EventKind::Waiting => {
                if let Some((o, between)) = &mut released_by
                    && *o == e.owner
                {
                    *between = true;
                }
                f.queued += 1;
                queue.push_back(e.owner);
            }
            EventKind::WaitCancelled | EventKind::WaitTimedOut => {
                if let Some(i) = queue.iter().position(|o| *o == e.owner) {
                    queue.remove(i);
                }
            }
            EventKind::Acquired => {
                if let Some((o, between)) = released_by.take()
                    && o != e.owner
                {
                    f.handovers += 1;
                    f.requeued_between += between as usize;
                }
                match queue.iter().position(|o| *o == e.owner) {
                    Some(i) => {
                        f.grants_from_queue += 1;
                        if i != 0 {
                            f.out_of_order += 1;
                        }
                        queue.remove(i);
                    }
                    None if !queue.is_empty() => f.barged += 1,
                    None => {}
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

/// Whether process `q` was waiting at instant `t`: its first tenure granted
/// after `t` had started waiting by `t`.
fn waiting_at(by_proc: &[Vec<Rec>], q: usize, t: u64) -> bool {
    let recs = &by_proc[q];
    let i = recs.partition_point(|r| r.grant <= t);
    recs.get(i).is_some_and(|r| r.wait <= t)
}

fn analyse(
    kind: Kind,
    mut recs: Vec<Rec>,
    procs: usize,
    store_fifo: Option<StoreFifo>,
    notes: Vec<String>,
) -> Report {
    recs.sort_by_key(|r| r.grant);
    let mut by_proc: Vec<Vec<Rec>> = vec![Vec::new(); procs];
    for r in &recs {
        by_proc[r.proc].push(*r);
    }
    let (mut lat, mut call, mut after) = (Vec::new(), Vec::new(), Vec::new());
    let mut attempts = [(0usize, 0u64); 2];
    let (mut to_woke, mut to_attempt, mut in_attempt) = (Vec::new(), Vec::new(), Vec::new());
    let (mut overlaps, mut longest, mut run, mut regrants) = (0, 0, 0, 0);
    let (mut overtakes, mut overtakes_1ms) = (0, 0);
    for (i, r) in recs.iter().enumerate() {
        if i == 0 {
            run = 1;
        } else {
            let prev = &recs[i - 1];
            if r.grant < prev.release {
                overlaps += 1;
            }
            if r.proc != prev.proc && r.wait <= prev.release {
                lat.push(r.grant.saturating_sub(prev.release));
                call.push(prev.released.saturating_sub(prev.release));
                after.push(r.grant.saturating_sub(prev.released));
                let slow = (r.grant.saturating_sub(prev.release) > 2_000_000) as usize;
                attempts[slow].0 += 1;
                attempts[slow].1 += r.blocked;
                if r.woke >= prev.released && r.attempt >= r.woke {
                    to_woke.push(r.woke - prev.released);
                    to_attempt.push(r.attempt - r.woke);
                    in_attempt.push(r.grant.saturating_sub(r.attempt));
                }
            }
            let others_wait =
                (0..procs).any(|q| q != r.proc && waiting_at(&by_proc, q, prev.release));
            if r.proc == prev.proc && others_wait {
                regrants += 1;
                run += 1;
            } else {
                run = 1;
            }
        }
        longest = longest.max(run);
        // An overtake: another process began waiting before this one and was
        // still waiting when this one was granted.
        for (q, qrecs) in by_proc.iter().enumerate() {
            if q == r.proc {
                continue;
            }
            let j = qrecs.partition_point(|x| x.grant <= r.grant);
            if let Some(x) = qrecs.get(j) {
                if x.wait < r.wait {
                    overtakes += 1;
                }
                if x.wait + 1_000_000 < r.wait {
                    overtakes_1ms += 1;
                }
            }
        }
    }
    let span_ns = match (recs.first(), recs.last()) {
        (Some(a), Some(b)) => b.release - a.grant,
        _ => 0,
    };
    Report {
        kind,
        grants: recs.len(),
        span_ns,
        handover: Summary::of(&mut lat),
        release_call: Summary::of(&mut call),
        after_release: Summary::of(&mut after),
        overlaps,
        longest_run: longest,
        regrants,
        overtakes,
        overtakes_1ms,
        per_proc: by_proc.iter().map(Vec::len).collect(),
        attempts: (kind == Kind::Core)
            .then(|| attempts.map(|(n, b)| (n, b as f64 / n.max(1) as f64))),
        steps: (kind == Kind::Core && !to_woke.is_empty()).then(|| {
            [
                Summary::of(&mut to_woke),
                Summary::of(&mut to_attempt),
                Summary::of(&mut in_attempt),
            ]
        }),
        store_fifo,
        notes,
    }
}

fn wait_children(children: &mut [Child], until: u64, notes: &mut Vec<String>) {
    loop {
        let running = children
            .iter_mut()
            .map(|c| c.try_wait())
            .filter(|s| matches!(s, Ok(None)))
            .count();
        if running == 0 {
            return;
        }
        if mono_ns() >= until {
            notes.push(format!(
                "{running} worker(s) did not finish in time and were killed"
            ));
            for c in children.iter_mut() {
                if matches!(c.try_wait(), Ok(None)) {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn contend(kind: Kind, args: &Args, root: &Path) -> Result<Report, String> {
    let procs = args.num("procs", 8).max(2) as usize;
    let total = args.num("handovers", 2000) + 1;
    let hold_us = args.num("hold-us", 100);
    let secs = args.num("secs", 60);
    let ttl_ms = args.num("ttl-ms", 30_000);
    let dir = root.join(kind.tag());
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("counter"), 0u64.to_le_bytes()).map_err(|e| e.to_string())?;
    if kind != Kind::Flock {
        // Create the store once, before eight processes open it together.
        locksmith_sqlite::SqliteStore::open(&dir.join("locksmith.db"), Default::default())
            .map_err(|e| e.to_string())?;
    }
    let deadline = mono_ns() + secs * 1_000_000_000;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    for id in 0..procs {
        let err = File::create(dir.join(format!("stderr-{id}"))).map_err(|e| e.to_string())?;
        let child = Command::new(&exe)
            .args([
                "__worker".to_string(),
                kind.tag().into(),
                id.to_string(),
                dir.display().to_string(),
                total.to_string(),
                hold_us.to_string(),
                deadline.to_string(),
                ttl_ms.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        children.push(child);
    }
    let mut notes = Vec::new();
    // Start together: every worker has opened its store before the first grant.
    while (0..procs).any(|id| !dir.join(format!("ready-{id}")).exists()) {
        if mono_ns() >= deadline
            || children
                .iter_mut()
                .any(|c| matches!(c.try_wait(), Ok(Some(_))))
        {
            notes.push("not every worker became ready".into());
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    File::create(dir.join("go")).map_err(|e| e.to_string())?;
    wait_children(&mut children, deadline + 15_000_000_000, &mut notes);
    let mut recs = Vec::new();
    for id in 0..procs {
        let err = std::fs::read_to_string(dir.join(format!("stderr-{id}"))).unwrap_or_default();
        if !err.trim().is_empty() {
            notes.push(format!("worker {id}: {}", err.trim()));
        }
        let text = std::fs::read_to_string(dir.join(format!("recs-{id}"))).unwrap_or_default();
        for line in text.lines() {
            let v: Vec<u64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
            if let [wait, grant, release, released, blocked, woke, attempt] = v[..] {
                recs.push(Rec {
                    proc: id,
                    wait,
                    grant,
                    release,
                    released,
                    blocked,
                    woke,
                    attempt,
                });
            }
        }
    }
    if mono_ns() >= deadline {
        notes.push(format!("stopped by the {secs} s time bound"));
    }
    let fifo = match kind {
        Kind::Locksmith | Kind::Core => match store_fifo(&dir.join("locksmith.db"), "handover/k") {
            Ok(f) => Some(f),
            Err(e) => {
                notes.push(format!("cannot read the store's history: {e}"));
                None
            }
        },
        Kind::Flock => None,
    };
    Ok(analyse(kind, recs, procs, fifo, notes))
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("__worker") {
        worker_main(&argv[2..]);
        return;
    }
    let args = Args::parse();
    let work = WorkDir::new(&args, "locksmith-handover-").expect("cannot create the work folder");
    let machine = Machine::current(work.path());
    let procs = args.num("procs", 8);
    let hold_us = args.num("hold-us", 100);
    let mut reports = Vec::new();
    let chosen = args
        .text("peers")
        .map(|v| v.split(',').map(str::trim).collect::<Vec<_>>());
    let kinds = [Kind::Locksmith, Kind::Core, Kind::Flock]
        .into_iter()
        .filter(|k| chosen.as_ref().is_none_or(|c| c.contains(&k.tag())));
    for kind in kinds {
        match contend(kind, &args, work.path()) {
            Ok(r) => {
                eprintln!(
                    "{:<42} {} hand-overs  p50 {}  p99 {}  max {}",
                    kind.name(),
                    r.handover.count,
                    fmt_ns(r.handover.p50),
                    fmt_ns(r.handover.p99),
                    fmt_ns(r.handover.max)
                );
                reports.push(r);
            }
            Err(e) => eprintln!("{}: {e}", kind.name()),
        }
    }

    println!("## handover: {procs} processes, one key, wait forever\n");
    println!("Command: `{}`\n", locksmith_bench::command_line());
    println!("{}", machine.table());
    println!(
        "Each holder holds for {hold_us} µs (sleep). Hand-over latency = next holder's grant − previous \
         holder's release (CLOCK_MONOTONIC, across processes), counted only when the next holder is \
         another process that was already waiting at the release.\n"
    );
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.kind.name().into(),
                r.grants.to_string(),
                r.handover.count.to_string(),
                fmt_ns(r.handover.p50),
                fmt_ns(r.handover.p99),
                fmt_ns(r.handover.max),
                format!(
                    "{} / {}",
                    fmt_ns(r.release_call.p50),
                    fmt_ns(r.release_call.p99)
                ),
                format!(
                    "{} / {}",
                    fmt_ns(r.after_release.p50),
                    fmt_ns(r.after_release.p99)
                ),
                fmt_rate(r.grants as f64 / (r.span_ns.max(1) as f64 / 1e9)),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "peer",
                "grants",
                "hand-overs measured",
                "p50",
                "p99",
                "max",
                "of which: release call (p50 / p99)",
                "release return → grant (p50 / p99)",
                "grants/s",
            ],
            &rows
        )
    );
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.kind.name().into(),
                r.longest_run.to_string(),
                r.regrants.to_string(),
                format!("{} / {}", r.overtakes, r.overtakes_1ms),
                r.per_proc
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                r.overlaps.to_string(),
            ]
        })
        .collect();
    println!("Fairness:\n");
    println!(
        "{}",
        table(
            &[
                "peer",
                "longest run of one process while others wait",
                "re-grants to the releaser while others wait",
                "overtakes (any / by ≥ 1 ms)",
                "grants per process",
                "overlapping tenures",
            ],
            &rows
        )
    );
    println!(
        "An overtake is a grant while another process that began waiting earlier still waits \
         (client-side timestamps; \"by ≥ 1 ms\" ignores the race between noting the time and joining the queue). \
         Strict FIFO means 0 overtakes and runs of 1.\n"
    );
    for r in &reports {
        for n in &r.notes {
            println!("Note ({}): {n}\n", r.kind.tag());
        }
        if let Some([fast, slow]) = r.attempts {
            println!(
                "Blocked attempts before the grant ({}): {:.2} on average for the {} hand-overs ≤ 2 ms, \
                 {:.2} for the {} slower ones (1 = queued once, woken once, granted).\n",
                r.kind.tag(),
                fast.1,
                fast.0,
                slow.1,
                slow.0
            );
        }
        if let Some(steps) = r.steps {
            let cell = |s: &Summary| vec![fmt_ns(s.p50), fmt_ns(s.p99), fmt_ns(s.max)];
            let mut rows = Vec::new();
            for (name, s) in [
                (
                    "release returned → waiter woken (wake-up delivered and scheduled)",
                    &steps[0],
                ),
                ("waiter woken → its attempt starts", &steps[1]),
                (
                    "the granted attempt (`Store::acquire`, incl. waiting for the write lock)",
                    &steps[2],
                ),
            ] {
                let mut row = vec![name.to_string()];
                row.extend(cell(s));
                rows.push(row);
            }
            println!(
                "Where the time goes after the release call returns ({}, {} hand-overs where the next holder was woken):\n",
                r.kind.tag(),
                steps[0].count
            );
            println!("{}", table(&["step", "p50", "p99", "max"], &rows));
        }
        if let Some(f) = r.store_fifo {
            println!(
                "Queue order by the store's own history ({}): {} requests joined the queue, {} grants \
                 went to queued requests, {} of them not to the head of the queue, {} grants went to a \
                 request that had not queued while others were queued. In {} of {} hand-overs the \
                 releaser's own new queue entry was committed between the release and the next grant \
                 (its transaction took the write lock first).\n",
                r.kind.tag(),
                f.queued,
                f.grants_from_queue,
                f.out_of_order,
                f.barged,
                f.requeued_between,
                f.handovers
            );
            let fifo = f.out_of_order == 0 && f.barged == 0;
            let p99 = r.handover.p99;
            let verdict = |limit: u64| match p99 <= limit && fifo {
                true => "met",
                false => "NOT met",
            };
            println!(
                "Bar (locksmith): first bar p99 ≤ 2 ms with strict FIFO: {}; goal p99 ≤ 200 µs: {} \
                 (p99 {}, {}).\n",
                verdict(2_000_000),
                verdict(200_000),
                fmt_ns(p99),
                if fifo {
                    "strict FIFO held in the store's queue"
                } else {
                    "FIFO broken"
                }
            );
        }
    }
    let _ = std::io::stdout().flush();
}
