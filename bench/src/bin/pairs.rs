//! `pairs`: acquire+release pairs per second and latency per pair, for the
//! locksmith library, the locksmith store API, the plain SQLite table recipe
//! and flock(2), with 1 and 16 concurrent clients, side by side in one run.
//!
//! ```text
//! pairs [--secs 3] [--max-pairs 20000] [--clients 1,16] [--keys 100] [--dir DIR]
//!       [--variants library,store-ttl,store,recipe,flock-open,flock-keep]
//! ```
//!
//! Every client is a thread with its own connection (or its own file
//! descriptors) and cycles over its own 100 keys, so clients never contend
//! for a key, only for the database. A configuration stops after `--secs`
//! seconds or `--max-pairs` pairs (over all clients), whichever comes first.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use locksmith_bench::{Args, Machine, Summary, WorkDir, fmt_ns, fmt_rate, recipe, table, wall_ms};
use locksmith_core::ProcessBinder;
use locksmith_core::store::{Proof, Release, Target};
use locksmith_core::{AcquireRequest, Attempt, Key, Mode, ReleaseReason, Scope, Store, Takeover};
use locksmith_sqlite::{Options, SqliteStore};
use rustix::fs::{FlockOperation, flock};

/// The things measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Library,
    StoreTtl,
    StoreNoTtl,
    Recipe,
    FlockOpen,
    FlockKeep,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::Library,
        Variant::StoreTtl,
        Variant::StoreNoTtl,
        Variant::Recipe,
        Variant::FlockOpen,
        Variant::FlockKeep,
    ];

    fn tag(self) -> &'static str {
        match self {
            Variant::Library => "library",
            Variant::StoreTtl => "store-ttl",
            Variant::StoreNoTtl => "store",
            Variant::Recipe => "recipe",
            Variant::FlockOpen => "flock-open",
            Variant::FlockKeep => "flock-keep",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Library => "locksmith library (Guard, defaults: ttl 30s, bound)",
            Variant::StoreTtl => "locksmith store API (ttl 30s, bound)",
            Variant::StoreNoTtl => "locksmith store API (no ttl, unbound)",
            Variant::Recipe => "plain SQLite recipe",
            Variant::FlockOpen => "flock(2), open+close per pair",
            Variant::FlockKeep => "flock(2), fds kept open",
        }
    }
}

/// What one configuration measured.
struct Outcome {
    variant: Variant,
    clients: usize,
    pairs: u64,
    elapsed: Duration,
    latency: Summary,
    errors: u64,
    first_error: Option<String>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.pairs as f64 / self.elapsed.as_secs_f64()
    }
}

type Pair = Box<dyn FnMut(usize) -> Result<(), String>>;

/// Builds, inside the client's own thread, the closure doing pair number `i`.
fn client(variant: Variant, dir: &Path, c: usize, keys: usize) -> Result<Pair, String> {
    let db = dir.join("locksmith.db");
    let names: Vec<String> = (0..keys).map(|k| format!("bench/c{c}/k{k}")).collect();
    let owner = format!("bench-c{c}");
    match variant {
        Variant::Library => {
            let url = format!("sqlite://{}", db.display());
            let client = locksmith::Client::open(&url).map_err(|e| e.to_string())?;
            Ok(Box::new(move |i| {
                let guard = client
                    .lock(&names[i % names.len()])
                    .owner(&owner)
                    .acquire_blocking()
                    .map_err(|e| e.to_string())?;
                match guard.release().map_err(|e| e.to_string())? {
                    Release::Released { .. } => Ok(()),
                    other => Err(format!("release answered {other:?}")),
                }
            }))
        }
        Variant::StoreTtl | Variant::StoreNoTtl => {
            let store = SqliteStore::open(&db, Options::default()).map_err(|e| e.to_string())?;
            // The same request as the library's (ttl 30 s, bound to this
            // process), built once; or the plainest one (no lease, unbound).
            let like_library = variant == Variant::StoreTtl;
            let ttl = like_library.then_some(Duration::from_secs(30));
            let bind = match like_library {
                true => Some(store.bind_current_process().map_err(|e| e.to_string())?),
                false => None,
            };
            let holder = locksmith::host::this_process(owner);
            let reqs: Vec<AcquireRequest> = names
                .iter()
                .map(|n| AcquireRequest {
                    keys: vec![Key::new(n.as_str()).expect("valid key")],
                    mode: Mode::Exclusive,
                    scope: Scope::Key,
                    holder: holder.clone(),
                    ttl,
                    max_hold: None,
                    priority: 0,
                    takeover: Takeover::None,
                    request_id: None,
                    bind: bind.clone(),
                })
                .collect();
            Ok(Box::new(move |i| {
                let req = &reqs[i % reqs.len()];
                let grant = match store.acquire(req, None).map_err(|e| e.to_string())? {
                    Attempt::Granted(g) => g,
                    Attempt::Blocked(b) => return Err(format!("blocked: {b:?}")),
                };
                let target = Target {
                    key: req.keys[0].clone(),
                    by: Proof::Handle(grant.handle),
                };
                match store
                    .release(&target, ReleaseReason::Completed)
                    .map_err(|e| e.to_string())?
                {
                    Release::Released { .. } => Ok(()),
                    other => Err(format!("release answered {other:?}")),
                }
            }))
        }
        Variant::Recipe => {
            let conn = recipe::open(&dir.join("recipe.db")).map_err(|e| e.to_string())?;
            Ok(Box::new(move |i| {
                let key = &names[i % names.len()];
                let now = wall_ms();
                if !recipe::acquire(&conn, key, &owner, now, now + 30_000)
                    .map_err(|e| e.to_string())?
                {
                    return Err(format!("{key} was not free"));
                }
                if !recipe::release(&conn, key, &owner).map_err(|e| e.to_string())? {
                    return Err(format!("{key} was not held"));
                }
                Ok(())
            }))
        }
        Variant::FlockOpen => {
            let paths: Vec<PathBuf> = (0..keys)
                .map(|k| dir.join(format!("c{c}-k{k}.lock")))
                .collect();
            Ok(Box::new(move |i| {
                let f = open_lock_file(&paths[i % paths.len()])?;
                flock(&f, FlockOperation::LockExclusive).map_err(|e| e.to_string())?;
                flock(&f, FlockOperation::Unlock).map_err(|e| e.to_string())?;
                drop(f);
                Ok(())
            }))
        }
        Variant::FlockKeep => {
            let files: Vec<File> = (0..keys)
                .map(|k| open_lock_file(&dir.join(format!("c{c}-k{k}.lock"))))
                .collect::<Result<_, _>>()?;
            Ok(Box::new(move |i| {
                let f = &files[i % files.len()];
                flock(f, FlockOperation::LockExclusive).map_err(|e| e.to_string())?;
                flock(f, FlockOperation::Unlock).map_err(|e| e.to_string())
            }))
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Creates the database files once, before the clients open them together.
fn prepare(variant: Variant, dir: &Path) -> Result<(), String> {
    match variant {
        Variant::Library | Variant::StoreTtl | Variant::StoreNoTtl => {
            SqliteStore::open(&dir.join("locksmith.db"), Options::default())
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Variant::Recipe => recipe::open(&dir.join("recipe.db"))
            .map(drop)
            .map_err(|e| e.to_string()),
        Variant::FlockOpen | Variant::FlockKeep => Ok(()),
    }
}

fn run(
    variant: Variant,
    clients: usize,
    keys: usize,
    secs: Duration,
    max_pairs: u64,
    dir: &Path,
) -> Result<Outcome, String> {
    prepare(variant, dir)?;
    let budget = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(clients + 1));
    let mut threads = Vec::new();
    for c in 0..clients {
        let (budget, start, dir) = (budget.clone(), start.clone(), dir.to_path_buf());
        threads.push(std::thread::spawn(move || {
            let pair = client(variant, &dir, c, keys);
            start.wait();
            let mut pair = pair?;
            let began = Instant::now();
            let deadline = began + secs;
            let mut lat = Vec::with_capacity(max_pairs as usize / clients + 1);
            let (mut errors, mut first_error) = (0u64, None);
            for i in 0.. {
                if budget.fetch_add(1, Ordering::Relaxed) >= max_pairs {
                    break;
                }
                let t = Instant::now();
                if t >= deadline {
                    break;
                }
                match pair(i) {
                    Ok(()) => lat.push(t.elapsed().as_nanos() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            Ok::<_, String>((lat, errors, first_error, began, Instant::now()))
        }));
    }
    start.wait();
    let mut all = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    let (mut first_start, mut last_end): (Option<Instant>, Option<Instant>) = (None, None);
    for t in threads {
        let (lat, e, fe, began, ended) = t
            .join()
            .map_err(|_| "a client thread panicked".to_string())??;
        all.extend(lat);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
        first_start = Some(first_start.map_or(began, |s| s.min(began)));
        last_end = Some(last_end.map_or(ended, |s| s.max(ended)));
    }
    // The span from the first client's start to the last client's end.
    let elapsed = match (first_start, last_end) {
        (Some(s), Some(e)) => e - s,
        _ => Duration::ZERO,
    };
    Ok(Outcome {
        variant,
        clients,
        pairs: all.len() as u64,
        elapsed,
        latency: Summary::of(&mut all),
        errors,
        first_error,
    })
}

/// Medians (ns, 2000 runs each) of the steps the library adds per pair on
/// top of the store calls: the renewal thread a guard starts and joins, the
/// holder facts, and the process binding.
fn library_parts(dir: &Path) -> Vec<Vec<String>> {
    use locksmith_bench::median_of;
    let store = match SqliteStore::open(&dir.join("parts.db"), Options::default()) {
        Ok(s) => s,
        Err(e) => return vec![vec![format!("cannot open a store: {e}"), "-".into()]],
    };
    let (thread_ns, _) = median_of(2000, || {
        // What a guard does: a thread parked in recv_timeout, stopped by
        // dropping the sender, then joined.
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _ = stopped.recv_timeout(Duration::from_secs(10));
        });
        drop(stop);
        t.join().expect("join");
    });
    let (holder_ns, _) = median_of(2000, || locksmith::host::this_process("parts"));
    let (bind_ns, _) = median_of(2000, || store.bind_current_process().map(|b| b.pid > 0));
    let (key_ns, _) = median_of(2000, || Key::new("bench/c0/k42").is_ok());
    // What an async store trait would add to every short-lived CLI command:
    // a runtime to drive the future, built and dropped once per process.
    let (runtime_ns, _) = median_of(2000, || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(async { 1 }))
            .is_ok()
    });
    let probe = locksmith_core::AcquireRequest::exclusive(
        vec![Key::new("bench/parts/probe").expect("valid key")],
        locksmith::host::this_process("parts"),
    );
    let (call_ns, _) = median_of(2000, || {
        if let Ok(locksmith_core::Attempt::Granted(g)) = store.acquire(&probe, None) {
            let t = Target {
                key: g.locks[0].key.clone(),
                by: Proof::Handle(g.handle.clone()),
            };
            let _ = store.release(&t, locksmith_core::ReleaseReason::Completed);
        }
    });
    vec![
        vec![
            "spawn + stop + join of a renewal thread".into(),
            locksmith_bench::fmt_ns(thread_ns),
        ],
        vec![
            "`locksmith_host::this_process`".into(),
            locksmith_bench::fmt_ns(holder_ns),
        ],
        vec![
            "`ProcessBinder::bind_current_process`".into(),
            locksmith_bench::fmt_ns(bind_ns),
        ],
        vec!["`Key::new`".into(), locksmith_bench::fmt_ns(key_ns)],
        vec![
            "current-thread Tokio runtime: build + `block_on` + drop".into(),
            locksmith_bench::fmt_ns(runtime_ns),
        ],
        vec![
            "sync `Store::acquire` + `Store::release`, one pair".into(),
            locksmith_bench::fmt_ns(call_ns),
        ],
    ]
}

fn ratio(a: &Outcome, b: &Outcome) -> String {
    format!("{:.2}×", a.rate() / b.rate())
}

fn main() {
    let args = Args::parse();
    let secs = Duration::from_secs(args.num("secs", 3));
    let max_pairs = args.num("max-pairs", 20_000);
    let keys = args.num("keys", 100).max(1) as usize;
    let clients: Vec<usize> = args
        .text("clients")
        .unwrap_or("1,16")
        .split(',')
        .map(|c| c.trim().parse().expect("--clients takes numbers like 1,16"))
        .collect();
    let chosen = args
        .text("variants")
        .map(|v| v.split(',').map(str::trim).collect::<Vec<_>>());
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| chosen.as_ref().is_none_or(|c| c.contains(&v.tag())))
        .collect();
    let work = WorkDir::new(&args, "locksmith-pairs-").expect("cannot create the work folder");
    let machine = Machine::current(work.path());

    let mut outcomes = Vec::new();
    for &n in &clients {
        for &v in &variants {
            let dir = work.path().join(format!("{v:?}-{n}"));
            std::fs::create_dir_all(&dir).expect("cannot create a run folder");
            match run(v, n, keys, secs, max_pairs, &dir) {
                Ok(o) => {
                    eprintln!(
                        "{:<45} clients={n:<3} {:>8} pairs/s  p50 {:>9}  p99 {:>9}",
                        v.name(),
                        fmt_rate(o.rate()),
                        fmt_ns(o.latency.p50),
                        fmt_ns(o.latency.p99)
                    );
                    outcomes.push(o);
                }
                Err(e) => eprintln!("{} with {n} clients failed: {e}", v.name()),
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    println!("## pairs: acquire+release\n");
    println!("Command: `{}`\n", locksmith_bench::command_line());
    println!("{}", machine.table());
    println!(
        "Bound per configuration: {} s or {max_pairs} pairs (all clients together), whichever first; \
         each client cycles over its own {keys} keys.\n",
        secs.as_secs()
    );
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.variant.name().to_string(),
                o.clients.to_string(),
                o.pairs.to_string(),
                format!("{:.3}", o.elapsed.as_secs_f64()),
                fmt_rate(o.rate()),
                fmt_ns(o.latency.p50),
                fmt_ns(o.latency.p99),
                fmt_ns(o.latency.max),
                match &o.first_error {
                    None => o.errors.to_string(),
                    Some(e) => format!("{} ({e})", o.errors),
                },
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "variant", "clients", "pairs", "secs", "pairs/s", "p50", "p99", "max", "errors"
            ],
            &rows
        )
    );

    let find = |v: Variant, n: usize| outcomes.iter().find(|o| o.variant == v && o.clients == n);
    let mut ratios = Vec::new();
    for &n in &clients {
        for mine in [Variant::Library, Variant::StoreTtl, Variant::StoreNoTtl] {
            let Some(m) = find(mine, n) else { continue };
            let cell = |peer: Variant| find(peer, n).map(|p| ratio(m, p)).unwrap_or("-".into());
            ratios.push(vec![
                mine.name().to_string(),
                n.to_string(),
                cell(Variant::Recipe),
                cell(Variant::FlockOpen),
                cell(Variant::FlockKeep),
            ]);
        }
    }
    println!("Throughput ratios (pairs/s of the locksmith variant ÷ pairs/s of the peer):\n");
    println!(
        "{}",
        table(
            &[
                "locksmith variant",
                "clients",
                "÷ recipe",
                "÷ flock open+close",
                "÷ flock fds kept"
            ],
            &ratios
        )
    );
    if let (Some(l), Some(r)) = (find(Variant::Library, 1), find(Variant::Recipe, 1)) {
        let x = l.rate() / r.rate();
        println!(
            "Bar (1 client, library ÷ recipe = {x:.2}×): first bar ≥ 0.5× {}; goal ≥ 1.0× {}.",
            if x >= 0.5 { "met" } else { "NOT met" },
            if x >= 1.0 { "met" } else { "NOT met" }
        );
    }
    if variants.contains(&Variant::Library) {
        let dir = work.path().join("parts");
        if std::fs::create_dir_all(&dir).is_ok() {
            println!(
                "\nWhat the library adds per pair besides the store calls (median of 2000, one thread):\n"
            );
            println!("{}", table(&["step", "median"], &library_parts(&dir)));
        }
    }
}
