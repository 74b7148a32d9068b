//! `command`: the whole-command cost of taking and dropping one lock from a
//! shell: `locksmith run -l k -- true` beside `flock(1)`, Python's
//! `filelock` and `portalocker`, and `python3 -c pass` (the interpreter's own
//! start-up), and the lock taken and dropped by two commands (`locksmith
//! acquire k` then `locksmith release k`) beside two `flock(1)` commands,
//! measured in one run, round-robin.
//!
//! ```text
//! command [--runs 200] [--warmup 5] [--max-secs 900]
//!         [--locksmith PATH] [--python PATH] [--dir DIR]
//! ```
//!
//! Every command is run `--warmup` times, then `--runs` times, sequentially,
//! interleaved round-robin (the starting command rotates every round) so
//! that drift of the machine touches every command alike. The whole
//! measurement stops after `--max-secs` even if the runs are not done; the
//! report says how many were made. `--locksmith` defaults to the `locksmith`
//! binary beside this one (`target/release/locksmith`), `--python` to the
//! interpreter `python3` resolves to (a pyenv shim is looked through, so that
//! its shell start-up is not counted).

use locksmith_bench::{quantile, report_header};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Options from the command line.
struct Opts {
    runs: usize,
    warmup: usize,
    max_secs: u64,
    locksmith: Option<PathBuf>,
    python: Option<PathBuf>,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        runs: 200,
        warmup: 5,
        max_secs: 900,
        locksmith: None,
        python: None,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--runs" | "-n" => o.runs = num(&value("--runs")?)?,
            "--warmup" => o.warmup = num(&value("--warmup")?)?,
            "--max-secs" => o.max_secs = num(&value("--max-secs")?)? as u64,
            "--locksmith" => o.locksmith = Some(value("--locksmith")?.into()),
            "--python" => o.python = Some(value("--python")?.into()),
            "--dir" => o.dir = Some(value("--dir")?.into()),
            "-h" | "--help" => {
                return Err("usage: command [--runs 200] [--warmup 5] [--max-secs 900] \
                     [--locksmith PATH] [--python PATH] [--dir DIR]"
                    .into());
            }
            n if n.parse::<usize>().is_ok() => o.runs = num(n)?,
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(o)
}

fn num(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

/// One command, or a sequence of commands, under measurement.
struct Subject {
    name: &'static str,
    shown: String,
    /// Each command: program and arguments, run one after the other.
    steps: Vec<(PathBuf, Vec<String>)>,
    env: Vec<(String, String)>,
    samples: Vec<u64>,
}

impl Subject {
    /// A subject of one command.
    fn one(
        name: &'static str,
        shown: String,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Subject {
        Subject {
            name,
            shown,
            steps: vec![(program, args)],
            env,
            samples: Vec::new(),
        }
    }

    fn command(&self, step: usize) -> Command {
        let (program, args) = &self.steps[step];
        let mut c = Command::new(program);
        c.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Runs the commands once, in order; the wall time from the first
    /// spawn to the last reaped, in ns.
    fn time_once(&self) -> Result<u64, String> {
        let t0 = Instant::now();
        for step in 0..self.steps.len() {
            let status = self
                .command(step)
                .status()
                .map_err(|e| format!("{}: cannot start: {e}", self.name))?;
            if !status.success() {
                // Once more with the output kept, to say why.
                let out = self.command(step).stderr(Stdio::piped()).output();
                let why = out
                    .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                    .unwrap_or_default();
                return Err(format!("{}: exited with {status}: {why}", self.name));
            }
        }
        Ok(t0.elapsed().as_nanos() as u64)
    }
}

fn ms(ns: f64) -> String {
    format!("{:.2} ms", ns / 1e6)
}

fn mean(s: &[u64]) -> f64 {
    if s.is_empty() {
        0.0
    } else {
        s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64
    }
}

/// The interpreter `python3` really runs (through a pyenv shim, if any).
fn real_python() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !p.is_empty()).then(|| PathBuf::from(p))
}

fn has_module(python: &Path, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn module_version(python: &Path, module: &str) -> String {
    Command::new(python)
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version({module:?}))"),
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match bench(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("command: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(o: &Opts) -> Result<(), String> {
    let tmp = match &o.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("locksmith-command-")
            .tempdir_in(d),
        None => tempfile::Builder::new()
            .prefix("locksmith-command-")
            .tempdir_in("/tmp"),
    }
    .map_err(|e| format!("cannot make a temporary folder: {e}"))?;
    let dir = tmp.path().to_path_buf();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
    let locksmith = match &o.locksmith {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this binary: {e}"))?
            .with_file_name("locksmith"),
    };
    if !locksmith.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p locksmith-cli",
            locksmith.display()
        ));
    }
    let home_s = home.to_string_lossy().into_owned();
    let home_env = vec![("LOCKSMITH_HOME".to_string(), home_s.clone())];
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut subjects = vec![
        Subject::one(
            "locksmith run",
            format!(
                "LOCKSMITH_HOME={home_s} {} run -l k -- true",
                locksmith.display()
            ),
            locksmith.clone(),
            words(&["run", "-l", "k", "--", "true"]),
            home_env.clone(),
        ),
        // Taken by one command and dropped by another (a lock that outlives
        // its command: no lease, released by owner name).
        Subject {
            name: "locksmith acquire + release",
            shown: format!(
                "LOCKSMITH_HOME={home_s} {l} acquire k2; … {l} release k2",
                l = locksmith.display()
            ),
            steps: vec![
                (locksmith.clone(), words(&["acquire", "k2"])),
                (locksmith.clone(), words(&["release", "k2"])),
            ],
            env: home_env,
            samples: Vec::new(),
        },
    ];
    let mut notes = Vec::new();
    let flock_lock = dir.join("k").to_string_lossy().into_owned();
    match which("flock") {
        Some(flock) => {
            subjects.push(Subject::one(
                "flock(1)",
                format!("{} {flock_lock} true", flock.display()),
                flock.clone(),
                vec![flock_lock.clone(), "true".into()],
                vec![],
            ));
            let step = (flock.clone(), vec![flock_lock.clone(), "true".into()]);
            subjects.push(Subject {
                name: "flock(1) twice",
                shown: format!(
                    "{f} {flock_lock} true; {f} {flock_lock} true",
                    f = flock.display()
                ),
                steps: vec![step.clone(), step],
                env: vec![],
                samples: Vec::new(),
            });
        }
        None => notes.push("flock(1) not found on PATH: skipped (util-linux)".to_string()),
    }
    let python = o.python.clone().or_else(real_python);
    match &python {
        None => notes.push("python3 not found: the Python commands are skipped".to_string()),
        Some(py) => {
            for (name, module, file, code) in [
                (
                    "python filelock",
                    "filelock",
                    "k.filelock",
                    "import filelock; l = filelock.FileLock(PATH); l.acquire(); l.release()",
                ),
                (
                    "python portalocker",
                    "portalocker",
                    "k.portalocker",
                    "import portalocker; l = portalocker.Lock(PATH); l.acquire(); l.release()",
                ),
            ] {
                if !has_module(py, module) {
                    notes.push(format!(
                        "{module} cannot be imported by {}: skipped (pip install {module})",
                        py.display()
                    ));
                    continue;
                }
                let p = dir.join(file).to_string_lossy().into_owned();
                let code = code.replace("PATH", &format!("{p:?}"));
                notes.push(format!(
                    "{module} {} under {}",
                    module_version(py, module),
                    py.display()
                ));
                subjects.push(Subject::one(
                    name,
                    format!("{} -c '{code}'", py.display()),
                    py.clone(),
                    vec!["-c".into(), code],
                    vec![],
                ));
            }
            subjects.push(Subject::one(
                "python -c pass",
                format!("{} -c pass", py.display()),
                py.clone(),
                vec!["-c".into(), "pass".into()],
                vec![],
            ));
        }
    }

    // The store is created by one run before anything is measured.
    subjects[0].time_once()?;
    for s in &subjects {
        for _ in 0..o.warmup {
            s.time_once()?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(o.max_secs);
    let started = Instant::now();
    let mut rounds = 0;
    let k = subjects.len();
    while rounds < o.runs && Instant::now() < deadline {
        for j in 0..k {
            let s = &mut subjects[(rounds + j) % k];
            let ns = s.time_once()?;
            s.samples.push(ns);
        }
        rounds += 1;
    }
    let took = started.elapsed();

    let mut out = report_header("command: whole-command cost of one lock/unlock");
    let _ = writeln!(
        out,
        "- {rounds} rounds of {k} commands (of {} asked) after {} warm-ups each, round-robin, {:.1} s",
        o.runs,
        o.warmup,
        took.as_secs_f64()
    );
    if rounds < o.runs {
        let _ = writeln!(
            out,
            "- stopped by --max-secs {} before all runs",
            o.max_secs
        );
    }
    let _ = writeln!(
        out,
        "- locksmith: {}",
        locksmith_bench::first_line(&locksmith, &["--version"])
    );
    if let Some(f) = which("flock") {
        let _ = writeln!(
            out,
            "- flock(1): {}",
            locksmith_bench::first_line(&f, &["--version"])
        );
    }
    for n in &notes {
        let _ = writeln!(out, "- {n}");
    }
    let _ = writeln!(out, "\nCommands, exactly:\n");
    for s in &subjects {
        let _ = writeln!(out, "- {}: `{}`", s.name, s.shown);
    }
    let _ = writeln!(
        out,
        "\n| command | runs | mean | p50 | p99 | min | max |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let mut stats = Vec::new();
    for s in &subjects {
        let mut v = s.samples.clone();
        v.sort_unstable();
        let m = mean(&v);
        let (p50, p99) = (quantile(&v, 0.50), quantile(&v, 0.99));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            v.len(),
            ms(m),
            ms(p50 as f64),
            ms(p99 as f64),
            ms(v.first().copied().unwrap_or(0) as f64),
            ms(v.last().copied().unwrap_or(0) as f64)
        );
        stats.push((s.name, m, p50 as f64, p99 as f64));
    }
    let find = |n: &str| stats.iter().find(|s| s.0 == n).copied();
    let verdict = |x: f64| {
        if x <= 1.5 {
            "goal (≤ 1.5×) met"
        } else if x <= 3.0 {
            "first bar (≤ 3×) met, goal (≤ 1.5×) not"
        } else {
            "first bar (≤ 3×) NOT met"
        }
    };
    for (ours, peer) in [
        ("locksmith run", "flock(1)"),
        ("locksmith acquire + release", "flock(1) twice"),
    ] {
        if let (Some(l), Some(f)) = (find(ours), find(peer)) {
            let r = (l.1 / f.1, l.2 / f.2, l.3 / f.3);
            let _ = writeln!(
                out,
                "\n{ours} / {peer}: mean {:.2}×, p50 {:.2}×, p99 {:.2}×\n\
                 - by the mean: {}\n- by p50: {}",
                r.0,
                r.1,
                r.2,
                verdict(r.0),
                verdict(r.1)
            );
        }
    }
    if let Some(b) = find("python -c pass") {
        for n in ["python filelock", "python portalocker"] {
            if let Some(s) = find(n) {
                let _ = writeln!(
                    out,
                    "- {n} minus the interpreter start-up: mean {}, p50 {}",
                    ms(s.1 - b.1),
                    ms(s.2 - b.2)
                );
            }
        }
        if let Some(l) = find("locksmith run") {
            let _ = writeln!(
                out,
                "- locksmith run / python -c pass: mean {:.2}×, p50 {:.2}×",
                l.1 / b.1,
                l.2 / b.2
            );
        }
    }
    print!("{out}");
    Ok(())
}

/// A program on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
