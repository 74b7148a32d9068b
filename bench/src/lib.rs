//! Shared helpers of the locksmith benchmarks: clocks, latency summaries,
//! Markdown tables, the machine description, argument parsing, and the two
//! peers every benchmark compares against (the plain SQLite table recipe and
//! flock(2)).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds on `CLOCK_MONOTONIC`: one clock for every process of the
/// machine (until reboot), so timestamps of different processes compare.
pub fn mono_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds since the Unix epoch (the plain recipe's lease clock).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The machine a benchmark ran on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Online CPUs (`nproc`).
    pub nproc: usize,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Filesystem type of the benchmark folder.
    pub fs: String,
    /// The source revision measured (git HEAD and uncommitted files).
    pub revision: String,
}

impl Machine {
    /// Describes this machine; `dir` is where the benchmark writes its files.
    pub fn current(dir: &Path) -> Machine {
        let nproc = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let uts = rustix::system::uname();
        let kernel = uts.release().to_string_lossy().into_owned();
        Machine {
            nproc,
            cpu,
            kernel,
            fs: fs_name(dir),
            revision: revision(),
        }
    }

    /// One line: `nproc N, CPU X, kernel K`.
    pub fn line(&self) -> String {
        format!(
            "nproc {}, CPU {}, kernel {}",
            self.nproc, self.cpu, self.kernel
        )
    }

    /// The machine as a two-column Markdown table.
    pub fn table(&self) -> String {
        table(
            &["machine", ""],
            &[
                vec!["nproc".into(), self.nproc.to_string()],
                vec!["CPU".into(), self.cpu.clone()],
                vec!["kernel".into(), self.kernel.clone()],
                vec!["bench folder filesystem".into(), self.fs.clone()],
                vec!["source".into(), self.revision.clone()],
            ],
        )
    }
}

/// The git revision of the workspace this benchmark was built from, with the
/// library files changed since (read at run time, without touching the index).
pub fn revision() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("--no-optional-locks")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let Some(head) = git(&["rev-parse", "--short=10", "HEAD"]).map(|h| h.trim().to_string()) else {
        return "unknown (no git)".into();
    };
    let changed: Vec<String> = git(&["status", "--porcelain", "--", "crates"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.get(3..).map(str::to_string))
        .collect();
    match changed.len() {
        0 => format!("git {head}, crates/ clean"),
        _ => format!("git {head} + uncommitted: {}", changed.join(", ")),
    }
}

/// The first line `PROGRAM ARGS` prints (empty when it cannot run), e.g.
/// its version.
pub fn first_line(program: &Path, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// A short name for the filesystem holding `dir` (from `statfs`).
pub fn fs_name(dir: &Path) -> String {
    match rustix::fs::statfs(dir) {
        Ok(st) => match st.f_type {
            0xEF53 => "ext4".into(),
            0x0102_1994 => "tmpfs".into(),
            0x5846_5342 => "xfs".into(),
            0x9123_683E => "btrfs".into(),
            0x794C_7630 => "overlayfs".into(),
            m => format!("magic {m:#x}"),
        },
        Err(e) => format!("unknown ({e})"),
    }
}

/// The command line of this process, as it was typed (program path kept).
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// A Markdown table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out
}

/// Human text for a duration in nanoseconds: `850 ns`, `12.3 µs`, `1.20 ms`, `2.50 s`.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..100_000 => format!("{:.1} µs", ns as f64 / 1e3),
        100_000..1_000_000 => format!("{:.0} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// A rate with a sensible number of digits.
pub fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 100.0 {
        format!("{per_sec:.0}")
    } else {
        format!("{per_sec:.1}")
    }
}

/// The value at quantile `q` (0..=1) of sorted samples, nearest rank; 0 when empty.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p99 and max of a set of latencies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median, ns.
    pub p50: u64,
    /// 99th percentile, ns.
    pub p99: u64,
    /// Largest, ns.
    pub max: u64,
}

impl Summary {
    /// Summarises samples (sorted in place).
    pub fn of(samples: &mut [u64]) -> Summary {
        samples.sort_unstable();
        Summary {
            count: samples.len(),
            p50: quantile(samples, 0.50),
            p99: quantile(samples, 0.99),
            max: samples.last().copied().unwrap_or(0),
        }
    }
}

/// The median of a few timed runs of `f`, in ns, and the last result.
pub fn median_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (u64, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = mono_ns();
        let v = f();
        times.push(mono_ns() - t);
        last = Some(v);
    }
    (Summary::of(&mut times).p50, last.expect("at least one run"))
}

/// Command-line arguments: positionals and `--name value` / `--name=value` options.
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// Arguments that are not options, in order.
    pub positional: Vec<String>,
    /// Options by name (without the dashes).
    pub options: HashMap<String, String>,
}

impl Args {
    /// Parses this process's arguments (after the program name).
    pub fn parse() -> Args {
        Args::from(std::env::args().skip(1))
    }

    /// Parses the given arguments.
    pub fn from(args: impl IntoIterator<Item = String>) -> Args {
        let mut out = Args::default();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            match a.strip_prefix("--") {
                Some(opt) => match opt.split_once('=') {
                    Some((k, v)) => {
                        out.options.insert(k.into(), v.into());
                    }
                    None => {
                        let v = it.next().unwrap_or_default();
                        out.options.insert(opt.into(), v);
                    }
                },
                None => out.positional.push(a),
            }
        }
        out
    }

    /// A numeric option, or `default`; exits with a message when malformed.
    pub fn num(&self, name: &str, default: u64) -> u64 {
        match self.options.get(name) {
            None => default,
            Some(v) => v.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("--{name} takes a whole number, got {v:?}");
                std::process::exit(2)
            }),
        }
    }

    /// A text option.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }
}

/// A working folder: `--dir DIR` when given (kept), else a fresh temporary
/// folder under `/tmp` (removed on drop).
pub enum WorkDir {
    /// Removed when dropped.
    Temp(tempfile::TempDir),
    /// Given by the user; kept.
    Kept(std::path::PathBuf),
}

impl WorkDir {
    /// Creates the folder as asked by `--dir`.
    pub fn new(args: &Args, prefix: &str) -> std::io::Result<WorkDir> {
        match args.text("dir") {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                Ok(WorkDir::Kept(d.into()))
            }
            None => Ok(WorkDir::Temp(
                tempfile::Builder::new().prefix(prefix).tempdir()?,
            )),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(t) => t.path(),
            WorkDir::Kept(p) => p,
        }
    }
}

/// Bytes of a file, 0 when missing.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The plain SQLite table recipe that teams write by hand: one row per held
/// key, an upsert that only takes an expired row, a delete to release. Each
/// statement is its own autocommit transaction.
pub mod recipe {
    use std::path::Path;
    use std::time::Duration;

    use rusqlite::{Connection, params};

    /// Opens (creating the table if needed) with WAL, `synchronous=NORMAL`
    /// and a 5 s busy timeout.
    pub fn open(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_millis(5000))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS locks(key TEXT PRIMARY KEY, owner TEXT, expires INTEGER);",
        )?;
        Ok(conn)
    }

    /// Takes `key` for `owner` until `expires` (ms) if it is free or expired
    /// at `now` (ms); true when taken.
    pub fn acquire(
        conn: &Connection,
        key: &str,
        owner: &str,
        now: i64,
        expires: i64,
    ) -> rusqlite::Result<bool> {
        let n = conn
            .prepare_cached(
                "INSERT INTO locks (key, owner, expires) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
                 WHERE locks.expires < ?4",
            )?
            .execute(params![key, owner, expires, now])?;
        Ok(n == 1)
    }

    /// Releases `key` if `owner` holds it; true when it did.
    pub fn release(conn: &Connection, key: &str, owner: &str) -> rusqlite::Result<bool> {
        let n = conn
            .prepare_cached("DELETE FROM locks WHERE key = ?1 AND owner = ?2")?
            .execute(params![key, owner])?;
        Ok(n == 1)
    }
}

/// The opening of a one-page report: title, exact command, machine.
pub fn report_header(title: &str) -> String {
    format!(
        "## {title}\n\n- run: `{}`\n- machine: {}\n",
        std::env::args().collect::<Vec<_>>().join(" "),
        Machine::current(Path::new("/tmp")).line()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        let s = Summary::of(&mut v);
        assert_eq!((s.p50, s.p99, s.max, s.count), (50, 99, 100, 100));
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[7], 0.99), 7);
    }

    #[test]
    fn args_take_both_option_forms() {
        let a = Args::from([
            "100".to_string(),
            "--secs".into(),
            "3".into(),
            "--dir=/x".into(),
        ]);
        assert_eq!(a.positional, vec!["100"]);
        assert_eq!(a.num("secs", 9), 3);
        assert_eq!(a.text("dir"), Some("/x"));
        assert_eq!(a.num("other", 9), 9);
    }

    #[test]
    fn recipe_takes_only_free_or_expired_rows() {
        let dir = tempfile::tempdir().unwrap();
        let c = recipe::open(&dir.path().join("r.db")).unwrap();
        assert!(recipe::acquire(&c, "k", "a", 100, 200).unwrap());
        assert!(!recipe::acquire(&c, "k", "b", 150, 250).unwrap());
        assert!(recipe::acquire(&c, "k", "b", 201, 300).unwrap());
        assert!(!recipe::release(&c, "k", "a").unwrap());
        assert!(recipe::release(&c, "k", "b").unwrap());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_ns(850), "850 ns");
        assert_eq!(fmt_ns(12_345), "12.3 µs");
        assert_eq!(fmt_ns(1_200_000), "1.20 ms");
    }
}

/// Grants checked against the queue order a store recorded in its own
/// history: every `waiting` event joins the tail of a queue, every
/// `acquired` event must go to its head (or to a newcomer only when nobody
/// waits).
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueReplay {
    /// `waiting` events (requests that joined the queue).
    pub queued: usize,
    /// `acquired` events.
    pub grants: usize,
    /// Grants to a queued request.
    pub from_queue: usize,
    /// Grants to a queued request that was not the head of the queue.
    pub out_of_order: usize,
    /// Grants to a request that never queued while others were queued.
    pub barged: usize,
    /// Longest run of grants to one owner.
    pub longest_run: usize,
    /// Releases followed by a grant to another owner.
    pub handovers: usize,
    /// Of those, how often the releaser's own new queue entry was committed
    /// between the release and the next grant (its transaction ran first).
    pub requeued_between: usize,
}

impl QueueReplay {
    /// Replays `events`, oldest first.
    pub fn of(events: impl IntoIterator<Item = locksmith_core::Event>) -> QueueReplay {
        use locksmith_core::EventKind;
        let mut queue: std::collections::VecDeque<String> = Default::default();
        let mut f = QueueReplay::default();
        let mut released_by: Option<(String, bool)> = None;
        let (mut last, mut run) = (None::<String>, 0);
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
                    f.grants += 1;
                    if let Some((o, between)) = released_by.take()
                        && o != e.owner
                    {
                        f.handovers += 1;
                        f.requeued_between += between as usize;
                    }
                    match queue.iter().position(|o| *o == e.owner) {
                        Some(i) => {
                            f.from_queue += 1;
                            if i != 0 {
                                f.out_of_order += 1;
                            }
                            queue.remove(i);
                        }
                        None if !queue.is_empty() => f.barged += 1,
                        None => {}
                    }
                    run = if last.as_deref() == Some(e.owner.as_str()) {
                        run + 1
                    } else {
                        1
                    };
                    f.longest_run = f.longest_run.max(run);
                    last = Some(e.owner);
                }
                _ => {}
            }
        }
        f
    }

    /// Every grant went to the head of the queue (or to a newcomer when nobody waited).
    pub fn strict(&self) -> bool {
        self.out_of_order == 0 && self.barged == 0 && self.grants > 0
    }
}
