//! `scale`: acquires many distinct keys through the store API (no release,
//! no lease), then reports the acquire rate as the table grows, the file size
//! per key, and how long `status` and `list --prefix` take at that size
//! (library, and the CLI when `target/release/locksmith` exists).
//!
//! ```text
//! scale [KEYS=1000000] [--secs 1800] [--runs 20] [--dir DIR]
//! ```
//!
//! Keys are `scale/p{i/1000}/k{i}`, so every prefix `scale/pN/` holds 1000 keys.

use std::path::{Path, PathBuf};
use std::process::Command;

use locksmith_bench::{
    Args, Machine, WorkDir, file_size, fmt_ns, fmt_rate, median_of, mono_ns, table,
};
use locksmith_core::ProcessBinder;
use locksmith_core::store::ListFilter;
use locksmith_core::{AcquireRequest, Attempt, Key, Store};
use locksmith_sqlite::{Options, SqliteStore};

fn key(i: u64) -> String {
    format!("scale/p{}/k{i}", i / 1000)
}

/// Timings of the read paths at one table size.
struct Reads {
    held: u64,
    status_ns: u64,
    status_free_ns: u64,
    list_prefix_ns: u64,
    list_prefix_rows: usize,
    list_limit_ns: u64,
}

fn reads(store: &SqliteStore, held: u64, runs: usize) -> Reads {
    let page = held / 1000 / 2;
    let probe = Key::new(key(page * 1000 + 500)).expect("valid key");
    let free = Key::new(format!("scale/p{page}/free")).expect("valid key");
    let (status_ns, st) = median_of(runs, || store.status(&probe).expect("status"));
    assert!(!st.free, "the probed key should be held");
    let (status_free_ns, _) = median_of(runs, || store.status(&free).expect("status"));
    let prefix = ListFilter {
        prefix: Some(format!("scale/p{page}/")),
        ..Default::default()
    };
    let (list_prefix_ns, rows) = median_of(runs, || store.list(&prefix).expect("list").len());
    let limit = ListFilter {
        limit: 100,
        ..Default::default()
    };
    let (list_limit_ns, _) = median_of(runs, || store.list(&limit).expect("list").len());
    Reads {
        held,
        status_ns,
        status_free_ns,
        list_prefix_ns,
        list_prefix_rows: rows,
        list_limit_ns,
    }
}

/// The CLI next to this binary (`target/release/locksmith`), or in the
/// current folder's `target/release`.
fn find_cli() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("locksmith")));
    [beside, Some(PathBuf::from("target/release/locksmith"))]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
}

/// Median wall time of a CLI command over `runs` runs, or why it failed.
fn time_cli(cli: &Path, home: &Path, args: &[&str], runs: usize) -> Result<(u64, usize), String> {
    let mut times = Vec::new();
    let mut lines = 0;
    let out_path = home.join("cli-stdout");
    let err_path = home.join("cli-stderr");
    for _ in 0..runs {
        let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
        let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
        let t = mono_ns();
        let mut child = Command::new(cli)
            .args(args)
            .env("LOCKSMITH_HOME", home)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| e.to_string())?;
        // Bounded: a CLI run that takes over 60 s is killed and reported.
        let status = loop {
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                break st;
            }
            if mono_ns() - t > 60_000_000_000 {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`locksmith {}` took over 60 s", args.join(" ")));
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        };
        times.push(mono_ns() - t);
        if !status.success() {
            return Err(format!(
                "`locksmith {}` exited with {status}: {}",
                args.join(" "),
                std::fs::read_to_string(&err_path)
                    .unwrap_or_default()
                    .trim()
            ));
        }
        lines = std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .count();
    }
    Ok((locksmith_bench::Summary::of(&mut times).p50, lines))
}

fn main() {
    let args = Args::parse();
    let n: u64 = args
        .positional
        .first()
        .map(|s| s.replace('_', "").parse().expect("KEYS is a whole number"))
        .unwrap_or(1_000_000)
        .max(2000);
    let secs = args.num("secs", 1800);
    let runs = args.num("runs", 20).max(1) as usize;
    let work = WorkDir::new(&args, "locksmith-scale-").expect("cannot create the work folder");
    let machine = Machine::current(work.path());
    let db = work.path().join("locksmith.db");
    let store = SqliteStore::open(&db, Options::default()).expect("open the store");
    let mut req = AcquireRequest::exclusive(
        vec![Key::new("scale/start").expect("valid key")],
        locksmith::host::this_process("scale-bench"),
    );

    let chunk = (n / 10).max(1);
    let started = mono_ns();
    let deadline = started + secs * 1_000_000_000;
    let mut chunk_start = started;
    let mut chunks: Vec<(u64, u64, f64)> = Vec::new();
    let mut small: Option<Reads> = None;
    let mut done = 0u64;
    let mut acquire_ns: u64 = 0;
    for i in 0..n {
        req.keys[0] = Key::new(key(i)).expect("valid key");
        let t = mono_ns();
        match store.acquire(&req, None).expect("acquire") {
            Attempt::Granted(_) => {}
            Attempt::Blocked(b) => panic!("{} was not free: {b:?}", req.keys[0]),
        }
        acquire_ns += mono_ns() - t;
        done = i + 1;
        if done == 2000 {
            // The read paths on a small table, to compare with the full one.
            small = Some(reads(&store, done, runs));
        }
        if done.is_multiple_of(chunk) || done == n {
            let now = mono_ns();
            let lo = chunks.last().map_or(0, |c| c.1);
            let rate = (done - lo) as f64 / ((now - chunk_start) as f64 / 1e9);
            eprintln!(
                "{done:>9} keys  {} keys/s in the last chunk",
                fmt_rate(rate)
            );
            chunks.push((lo, done, rate));
            chunk_start = now;
        }
        if mono_ns() >= deadline {
            eprintln!("stopped by the {secs} s time bound after {done} keys");
            break;
        }
    }
    let total_ns = mono_ns() - started;
    drop(store);

    // Sizes after a checkpoint, and where the bytes are.
    let conn = rusqlite::Connection::open(&db).expect("open for checkpoint");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let (db_bytes, wal_bytes) = (file_size(&db), file_size(&wal));
    let by_object: Vec<(String, i64)> = conn
        .prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .unwrap_or_default();
    drop(conn);

    let t = mono_ns();
    let store = SqliteStore::open(&db, Options::default()).expect("reopen the store");
    let open_ns = mono_ns() - t;
    let big = reads(&store, done, runs);
    // The library binds its locks to the holder process by default; a listing
    // then checks each holder's life file. 1000 such locks, listed and probed.
    req.bind = Some(store.bind_current_process().expect("bind"));
    for i in 0..1000 {
        req.keys[0] = Key::new(format!("scale/bound/k{i}")).expect("valid key");
        store.acquire(&req, None).expect("acquire a bound key");
    }
    let bound = ListFilter {
        prefix: Some("scale/bound/".into()),
        ..Default::default()
    };
    let (bound_list_ns, bound_rows) = median_of(runs, || store.list(&bound).expect("list").len());
    let probe_bound = Key::new("scale/bound/k500").expect("valid key");
    let (bound_status_ns, _) = median_of(runs, || store.status(&probe_bound).expect("status"));
    drop(store);

    let page = done / 1000 / 2;
    let probe = key(page * 1000 + 500);
    let prefix = format!("scale/p{page}/");
    let cli = find_cli();
    let cli_rows: Result<Vec<Vec<String>>, String> = match &cli {
        None => Err(
            "skipped: target/release/locksmith does not exist yet (build the CLI to time it)"
                .into(),
        ),
        Some(cli) => {
            let cmds: [Vec<&str>; 2] = [vec!["status", &probe], vec!["list", "--prefix", &prefix]];
            cmds.iter()
                .map(|c| {
                    time_cli(cli, work.path(), c, runs.min(20)).map(|(ns, lines)| {
                        vec![
                            format!("`LOCKSMITH_HOME=<dir> locksmith {}`", c.join(" ")),
                            fmt_ns(ns),
                            lines.to_string(),
                        ]
                    })
                })
                .collect()
        }
    };

    println!("## scale: {done} distinct keys through the store API\n");
    println!("Command: `{}`\n", locksmith_bench::command_line());
    println!("{}", machine.table());
    println!(
        "Keys `scale/p{{i/1000}}/k{{i}}`, exclusive, no lease, never released; one `Store::acquire` \
         (one transaction) per key.\n"
    );
    let rows = vec![
        vec!["keys acquired".into(), done.to_string()],
        vec!["total time".into(), fmt_ns(total_ns)],
        vec![
            "overall rate".into(),
            format!("{} keys/s", fmt_rate(done as f64 / (total_ns as f64 / 1e9))),
        ],
        vec!["mean acquire".into(), fmt_ns(acquire_ns / done.max(1))],
        vec![
            "db file after checkpoint".into(),
            format!("{:.1} MiB", db_bytes as f64 / 1048576.0),
        ],
        vec!["wal file after checkpoint".into(), format!("{wal_bytes} B")],
        vec![
            "bytes per key (db + wal)".into(),
            format!("{:.0}", (db_bytes + wal_bytes) as f64 / done.max(1) as f64),
        ],
        vec!["store open at this size".into(), fmt_ns(open_ns)],
    ];
    println!("{}", table(&["scale", "value"], &rows));
    let rows: Vec<Vec<String>> = chunks
        .iter()
        .map(|(lo, hi, rate)| vec![format!("{lo}–{hi}"), fmt_rate(*rate)])
        .collect();
    println!("Acquire rate as the table grows:\n");
    println!("{}", table(&["keys", "keys/s"], &rows));
    let rows: Vec<Vec<String>> = by_object
        .iter()
        .take(10)
        .map(|(name, bytes)| {
            vec![
                name.clone(),
                format!("{:.1} MiB", *bytes as f64 / 1048576.0),
                format!("{:.0}", *bytes as f64 / done.max(1) as f64),
            ]
        })
        .collect();
    println!("Space by table or index (dbstat):\n");
    println!("{}", table(&["object", "size", "bytes per key"], &rows));
    let read_rows = |r: &Reads| {
        vec![
            vec![
                format!("status (held key), {} held", r.held),
                fmt_ns(r.status_ns),
            ],
            vec![
                format!("status (free key), {} held", r.held),
                fmt_ns(r.status_free_ns),
            ],
            vec![
                format!(
                    "list --prefix scale/pN/ ({} rows), {} held",
                    r.list_prefix_rows, r.held
                ),
                fmt_ns(r.list_prefix_ns),
            ],
            vec![
                format!("list --limit 100, {} held", r.held),
                fmt_ns(r.list_limit_ns),
            ],
        ]
    };
    let mut rows = Vec::new();
    if let Some(s) = &small {
        rows.extend(read_rows(s));
    }
    rows.extend(read_rows(&big));
    rows.push(vec![
        format!(
            "status (held key bound to a live process), {} held",
            big.held + 1000
        ),
        fmt_ns(bound_status_ns),
    ]);
    rows.push(vec![
        format!(
            "list --prefix scale/bound/ ({bound_rows} rows bound to a live process), {} held",
            big.held + 1000
        ),
        fmt_ns(bound_list_ns),
    ]);
    println!("Read paths through the store API (median of {runs} runs):\n");
    println!("{}", table(&["call", "median"], &rows));
    match cli_rows {
        Ok(rows) => {
            println!(
                "CLI, each run a new process (median of {} runs):\n",
                runs.min(20)
            );
            println!("{}", table(&["command", "median", "output lines"], &rows));
        }
        Err(note) => println!("CLI: {note}\n"),
    }
    let slow = |ns: u64| ns > 10_000_000;
    println!(
        "Bar (status and list stay fast): status {} → {}, list --prefix {} → {} from {} to {} keys: {}.",
        small.as_ref().map_or("-".into(), |s| fmt_ns(s.status_ns)),
        fmt_ns(big.status_ns),
        small
            .as_ref()
            .map_or("-".into(), |s| fmt_ns(s.list_prefix_ns)),
        fmt_ns(big.list_prefix_ns),
        small.as_ref().map_or(0, |s| s.held),
        big.held,
        if slow(big.status_ns) || slow(big.list_prefix_ns) {
            "NOT met (over 10 ms)"
        } else {
            "met (both under 10 ms)"
        }
    );
}
