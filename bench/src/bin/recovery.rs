//! `recovery`: how soon a waiter holds a lock after its holder is killed
//! with SIGKILL, for locksmith's library, for `locksmith run` / `locksmith
//! acquire`, and for flock(2).
//!
//! ```text
//! recovery [--reps 30] [--max-secs 600] [--locksmith PATH] [--dir DIR]
//!          [--variants library,cli,flock]
//! ```
//!
//! Each repetition starts a holder process and waits until it holds the
//! lock, starts a waiter process and waits until it is queued (listed by
//! `Store::waiters` for locksmith, shown blocked in `/proc/locks` for
//! flock(2)) plus 50 ms, reads `CLOCK_MONOTONIC`, and sends SIGKILL to the
//! holder. The latency ends:
//!
//! - `library`, `flock`: when the waiter's acquire returned, as read on the
//!   same clock by the waiter right after the call (it prints it);
//! - `cli`: when the `locksmith acquire --wait 30s` process has exited, as
//!   seen by the parent polling a pidfd of it (so its exit is included; it
//!   must exit 0); the holder is
//!   `locksmith run -l rec/k -- sleep 60`.
//!
//! The workers are this same binary started with the hidden first argument
//! `__worker`. Every wait is bounded; the whole run stops after `--max-secs`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use locksmith::Client;
use locksmith_bench::{mono_ns, quantile, report_header};
use locksmith_core::Key;
use locksmith_core::store::ListFilter;
use rustix::fs::{FlockOperation, flock};
use rustix::process::{Pid, Signal};

/// The key every variant fights over.
const KEY: &str = "rec/k";
/// How long to wait for a worker to get ready.
const READY: Duration = Duration::from_secs(10);
/// How long a waiter may take once its holder is dead.
const RECOVER: Duration = Duration::from_secs(35);
/// Settle time after the waiter is seen queued.
const SETTLE: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Library,
    Cli,
    Flock,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Library => "library",
            Variant::Cli => "cli",
            Variant::Flock => "flock",
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Variant::Library => {
                "locksmith library: holder `lock(\"rec/k\").ttl(60s).acquire_blocking()`, \
                 waiter `.wait(30s).acquire_blocking()`; kill → waiter's acquire returned"
            }
            Variant::Cli => {
                "locksmith CLI: holder `locksmith run -l rec/k -- sleep 60`, waiter \
                 `locksmith acquire rec/k --wait 30s`; kill → waiter process exited 0 (pidfd readable)"
            }
            Variant::Flock => {
                "flock(2): holder `flock(LOCK_EX)` on a file, waiter blocked in \
                 `flock(LOCK_EX)`; kill → waiter's flock returned"
            }
        }
    }
}

struct Opts {
    reps: usize,
    max_secs: u64,
    locksmith: Option<PathBuf>,
    dir: Option<PathBuf>,
    variants: Vec<Variant>,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        reps: 30,
        max_secs: 600,
        locksmith: None,
        dir: None,
        variants: vec![Variant::Library, Variant::Cli, Variant::Flock],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--reps" | "-n" => o.reps = num(&value("--reps")?)?,
            "--max-secs" => o.max_secs = num(&value("--max-secs")?)? as u64,
            "--locksmith" => o.locksmith = Some(value("--locksmith")?.into()),
            "--dir" => o.dir = Some(value("--dir")?.into()),
            "--variants" => {
                o.variants = value("--variants")?
                    .split(',')
                    .map(|v| match v.trim() {
                        "library" => Ok(Variant::Library),
                        "cli" => Ok(Variant::Cli),
                        "flock" => Ok(Variant::Flock),
                        other => Err(format!("unknown variant {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: recovery [--reps 30] [--max-secs 600] [--locksmith PATH] \
                     [--dir DIR] [--variants library,cli,flock]"
                        .into(),
                );
            }
            n if n.parse::<usize>().is_ok() => o.reps = num(n)?,
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    Ok(o)
}

fn num(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__worker") {
        return match worker(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("error {e}");
                eprintln!("recovery worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let o = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match bench(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recovery: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- workers

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The holder sleeps this long at most; the parent kills it much sooner.
const HOLD: Duration = Duration::from_secs(60);

fn worker(args: &[String]) -> Result<(), String> {
    let arg = |i: usize| args.get(i).cloned().ok_or("missing worker argument");
    match args.first().map(String::as_str) {
        Some("lib-hold") => {
            let client = Client::open(&arg(1)?).map_err(|e| e.to_string())?;
            let _guard = client
                .lock(KEY)
                .ttl(Duration::from_secs(60))
                .acquire_blocking()
                .map_err(|e| e.to_string())?;
            say("ready");
            std::thread::sleep(HOLD);
            Ok(())
        }
        Some("lib-wait") => {
            let client = Client::open(&arg(1)?).map_err(|e| e.to_string())?;
            say("waiting");
            let guard = client
                .lock(KEY)
                .wait(Duration::from_secs(30))
                .acquire_blocking();
            let t = mono_ns();
            let guard = guard.map_err(|e| e.to_string())?;
            say(&format!("acquired {t}"));
            guard.release().map_err(|e| e.to_string())?;
            Ok(())
        }
        Some("flock-hold") => {
            let f = open_lock_file(Path::new(&arg(1)?))?;
            flock(&f, FlockOperation::LockExclusive).map_err(|e| e.to_string())?;
            say("ready");
            std::thread::sleep(HOLD);
            Ok(())
        }
        Some("flock-wait") => {
            let f = open_lock_file(Path::new(&arg(1)?))?;
            say("waiting");
            let r = flock(&f, FlockOperation::LockExclusive);
            let t = mono_ns();
            r.map_err(|e| e.to_string())?;
            say(&format!("acquired {t}"));
            Ok(())
        }
        other => Err(format!("unknown worker {other:?}")),
    }
}

fn open_lock_file(p: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .map_err(|e| format!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------- parent

/// A child process whose stdout lines arrive on a channel.
struct Proc {
    child: Child,
    lines: Option<Receiver<String>>,
}

impl Proc {
    fn spawn(mut cmd: Command, read_lines: bool) -> Result<Proc, String> {
        cmd.stdin(Stdio::null()).stderr(Stdio::inherit());
        cmd.stdout(if read_lines {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let lines = child.stdout.take().map(|out| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
            });
            rx
        });
        Ok(Proc { child, lines })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line, which must start with `word`.
    fn expect(&self, word: &str, within: Duration) -> Result<String, String> {
        let rx = self.lines.as_ref().ok_or("no output to read")?;
        match rx.recv_timeout(within) {
            Ok(l) if l.starts_with(word) => Ok(l),
            Ok(l) => Err(format!("expected {word:?}, got {l:?}")),
            Err(_) => Err(format!("no {word:?} within {within:?}")),
        }
    }

    fn kill(&self) {
        if let Some(p) = Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(p, Signal::KILL);
        }
    }

    /// Waits up to `within` for the process to end; kills it past that.
    fn reap(mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= until {
                self.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `cond` every 2 ms until true or `within` passes.
fn poll_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Err(format!("{what}: not seen within {within:?}"))
}

/// True when `/proc/locks` shows `pid` blocked waiting for a FLOCK.
fn flock_blocked(pid: u32) -> bool {
    std::fs::read_to_string("/proc/locks").is_ok_and(|s| {
        s.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"->")
                && f.get(2) == Some(&"FLOCK")
                && f.get(5) == Some(&pid.to_string().as_str())
        })
    })
}

struct Env {
    dir: PathBuf,
    url: String,
    home: PathBuf,
    locksmith: PathBuf,
    me: PathBuf,
    client: Client,
}

impl Env {
    fn worker(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.me);
        c.arg("__worker").args(args);
        c
    }

    fn queued(&self, pid: u32) -> bool {
        self.client
            .store()
            .waiters(&ListFilter::default())
            .is_ok_and(|w| w.iter().any(|w| w.pid == pid && w.key.as_str() == KEY))
    }

    fn held_by(&self, pid: u32) -> bool {
        self.client
            .store()
            .list(&ListFilter::default())
            .is_ok_and(|l| l.iter().any(|l| l.pid == pid && l.key.as_str() == KEY))
    }

    fn key_free(&self) -> bool {
        Key::new(KEY)
            .ok()
            .and_then(|k| self.client.store().status(&k).ok())
            .is_some_and(|s| s.free && s.waiters.is_empty())
    }
}

/// One repetition; the latency in ns.
fn once(env: &Env, v: Variant) -> Result<u64, String> {
    match v {
        Variant::Library => {
            let url = env.url.as_str();
            let holder = Proc::spawn(env.worker(&["lib-hold", url]), true)?;
            holder.expect("ready", READY)?;
            let waiter = Proc::spawn(env.worker(&["lib-wait", url]), true)?;
            waiter.expect("waiting", READY)?;
            let pid = waiter.pid();
            let took = kill_and_time(holder, waiter, "library", "waiter queued", || {
                env.queued(pid)
            })?;
            poll_until(READY, "key free again", || env.key_free())?;
            Ok(took)
        }
        Variant::Flock => {
            let file = env.dir.join("flock.lock");
            let file = file.to_string_lossy();
            let holder = Proc::spawn(env.worker(&["flock-hold", &file]), true)?;
            holder.expect("ready", READY)?;
            let waiter = Proc::spawn(env.worker(&["flock-wait", &file]), true)?;
            waiter.expect("waiting", READY)?;
            let pid = waiter.pid();
            kill_and_time(holder, waiter, "flock", "waiter blocked in flock", || {
                flock_blocked(pid)
            })
        }
        Variant::Cli => {
            let cli = |args: &[&str]| {
                let mut c = Command::new(&env.locksmith);
                c.args(args).env("LOCKSMITH_HOME", &env.home);
                c
            };
            let holder = Proc::spawn(cli(&["run", "-l", KEY, "--", "sleep", "60"]), false)?;
            poll_until(READY, "run holding", || env.held_by(holder.pid()))?;
            let waiter = Proc::spawn(cli(&["acquire", KEY, "--wait", "30s"]), false)?;
            poll_until(READY, "acquire queued", || env.queued(waiter.pid()))?;
            // The pidfd turns readable the moment the process has exited.
            let pid = Pid::from_raw(waiter.pid() as i32).ok_or("bad pid")?;
            let exited = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                .map_err(|e| format!("pidfd_open: {e}"))?;
            std::thread::sleep(SETTLE);
            let t0 = mono_ns();
            holder.kill();
            let ts = rustix::event::Timespec {
                tv_sec: RECOVER.as_secs() as i64,
                tv_nsec: 0,
            };
            let mut fds = [rustix::event::PollFd::new(
                &exited,
                rustix::event::PollFlags::IN,
            )];
            let n = rustix::event::poll(&mut fds, Some(&ts)).map_err(|e| format!("poll: {e}"))?;
            let t1 = mono_ns();
            if n == 0 {
                return Err("locksmith acquire did not end in time".into());
            }
            holder.reap(READY);
            if waiter.reap(READY).is_none_or(|s| !s.success()) {
                return Err("locksmith acquire did not exit 0".into());
            }
            // The waiter's lock is unbound and has no lease: end it here.
            let key = Key::new(KEY).map_err(|e| e.to_string())?;
            env.client
                .store()
                .force_release(&key, "recovery bench: next repetition")
                .map_err(|e| e.to_string())?;
            poll_until(READY, "key free again", || env.key_free())?;
            Ok(t1.saturating_sub(t0))
        }
    }
}

/// Once `waiting()` holds (plus a settle time), SIGKILLs `holder` and returns
/// the time until `waiter` reports its acquire (its own clock stamp).
fn kill_and_time(
    holder: Proc,
    waiter: Proc,
    name: &str,
    what: &str,
    waiting: impl FnMut() -> bool,
) -> Result<u64, String> {
    poll_until(READY, what, waiting)?;
    std::thread::sleep(SETTLE);
    let t0 = mono_ns();
    holder.kill();
    let line = waiter.expect("acquired", RECOVER)?;
    let t1 = stamp(&line)?;
    holder.reap(READY);
    if waiter.reap(READY).is_none_or(|s| !s.success()) {
        return Err(format!("the {name} waiter did not end cleanly"));
    }
    Ok(t1.saturating_sub(t0))
}

fn stamp(line: &str) -> Result<u64, String> {
    line.split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("bad line {line:?}"))
}

fn ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

fn bench(o: &Opts) -> Result<(), String> {
    let tmp = tempfile::Builder::new()
        .prefix("locksmith-recovery-")
        .tempdir_in(o.dir.clone().unwrap_or_else(std::env::temp_dir))
        .map_err(|e| format!("cannot make a temporary folder: {e}"))?;
    let dir = tmp.path().to_path_buf();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let locksmith = o
        .locksmith
        .clone()
        .unwrap_or_else(|| me.with_file_name("locksmith"));
    if o.variants.contains(&Variant::Cli) && !locksmith.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p locksmith-cli",
            locksmith.display()
        ));
    }
    let db = home.join("locksmith.db");
    let url = format!("sqlite://{}", db.display());
    let client = Client::open(&url).map_err(|e| e.to_string())?;
    let env = Env {
        dir,
        url,
        home,
        locksmith,
        me,
        client,
    };

    let deadline = Instant::now() + Duration::from_secs(o.max_secs);
    let started = Instant::now();
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); o.variants.len()];
    // One untimed repetition of each variant first (page cache, store pages).
    for &v in &o.variants {
        once(&env, v).map_err(|e| format!("{} (warm-up): {e}", v.name()))?;
    }
    let mut rounds = 0;
    // Variants interleave, so drift touches them alike.
    while rounds < o.reps && Instant::now() < deadline {
        for (i, &v) in o.variants.iter().enumerate() {
            let ns = once(&env, v).map_err(|e| format!("{}: {e}", v.name()))?;
            samples[i].push(ns);
        }
        rounds += 1;
    }
    let took = started.elapsed();

    let mut out = report_header("recovery: SIGKILL of the holder → waiter holds");
    let _ = writeln!(
        out,
        "- {rounds} repetitions per variant (of {} asked) after one warm-up each, interleaved, {:.1} s",
        o.reps,
        took.as_secs_f64()
    );
    if rounds < o.reps {
        let _ = writeln!(out, "- stopped by --max-secs {} early", o.max_secs);
    }
    let _ = writeln!(
        out,
        "- the waiter is seen queued (store) or blocked (/proc/locks), then {} ms pass before the kill",
        SETTLE.as_millis()
    );
    for &v in &o.variants {
        let _ = writeln!(out, "- {}: {}", v.name(), v.describe());
    }
    let flock_at = o.variants.iter().position(|&v| v == Variant::Flock);
    let sorted: Vec<Vec<u64>> = samples
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.sort_unstable();
            s
        })
        .collect();
    let peer = flock_at.map(|i| (quantile(&sorted[i], 0.5), quantile(&sorted[i], 0.99)));
    let _ = writeln!(
        out,
        "\n| variant | n | min | p50 | p99 | max | p50 / flock(2) | p99 / flock(2) |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (i, &v) in o.variants.iter().enumerate() {
        let s = &sorted[i];
        let (p50, p99) = (quantile(s, 0.5), quantile(s, 0.99));
        let ratio = |a: u64, b: u64| {
            if b == 0 {
                "-".to_string()
            } else {
                format!("{:.1}×", a as f64 / b as f64)
            }
        };
        let (r50, r99) = match peer {
            Some((f50, f99)) => (ratio(p50, f50), ratio(p99, f99)),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {r50} | {r99} |",
            v.name(),
            s.len(),
            ms(s.first().copied().unwrap_or(0)),
            ms(p50),
            ms(p99),
            ms(s.last().copied().unwrap_or(0)),
        );
    }
    let _ = writeln!(
        out,
        "\nBars (first ≤ 50 ms, goal ≤ 5 ms), judged on p99 and max:\n"
    );
    for (i, &v) in o.variants.iter().enumerate() {
        let s = &sorted[i];
        let p99 = quantile(s, 0.99);
        let max = s.last().copied().unwrap_or(0);
        let verdict = |x: u64| {
            if x <= 5_000_000 {
                "goal met"
            } else if x <= 50_000_000 {
                "first bar met, goal not"
            } else {
                "first bar NOT met"
            }
        };
        let _ = writeln!(
            out,
            "- {}: p99 {} ({}), max {} ({})",
            v.name(),
            ms(p99),
            verdict(p99),
            ms(max),
            verdict(max)
        );
    }
    let _ = writeln!(
        out,
        "\nRaw samples (ms), in order:\n\n```text\n{}```",
        o.variants
            .iter()
            .zip(&samples)
            .map(|(v, s)| format!(
                "{}: {}\n",
                v.name(),
                s.iter()
                    .map(|x| format!("{:.2}", *x as f64 / 1e6))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
            .collect::<String>()
    );
    print!("{out}");
    Ok(())
}
