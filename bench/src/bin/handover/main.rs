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

mod analyse;
mod timed;
mod worker;

use analyse::*;
use timed::*;
use worker::*;

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
                f.from_queue,
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
