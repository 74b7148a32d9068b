//! `postgres`: the PostgreSQL store against the plain PostgreSQL table
//! recipe and `pg_advisory_lock`, in one run against one server that the
//! benchmark starts (`initdb` into a temporary folder, PostgreSQL's default
//! durability: `fsync=on`, `synchronous_commit=on`), or the server of
//! `LOCKSMITH_TEST_PG_URL`.
//!
//! ```text
//! postgres [--secs 3] [--max-pairs 20000] [--clients 1,16]
//!          [--handovers 1000] [--procs 8] [--hold-us 100]
//!          [--scale 1000000] [--batch 64] [--sections pairs,handover,scale]
//! ```
//!
//! - `pairs`: acquire + release pairs per second and the latency of a pair.
//!   Every client is a thread with a connection of its own (for locksmith: a
//!   store handle with one connection) and cycles over its own 100 keys, so
//!   clients contend only for the server. The recipe is `INSERT … ON
//!   CONFLICT (key) DO UPDATE … WHERE expires < now()` and `DELETE`,
//!   prepared; the advisory peer is `pg_advisory_lock` + `pg_advisory_unlock`
//!   on a session per client.
//! - `handover`: `--procs` processes (this program again, `__worker`) on one
//!   key, waiting forever; the time from a holder's release to the next
//!   holder's grant, and the order of grants: locksmith's replayed from its
//!   own history (every grant to the head of the queue?), and for both peers
//!   grants that passed a process that had been waiting longer.
//! - `scale`: `--scale` held keys taken by 16 clients in grants of `--batch`
//!   keys; the rate, the bytes per key (tables and indexes), and the time of
//!   `status` of one key and of `list --prefix` over 100 keys.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use locksmith_bench::{
    Args, Machine, QueueReplay, Summary, WorkDir, fmt_ns, fmt_rate, median_of, mono_ns, table,
};
use locksmith_core::store::{HistoryFilter, ListFilter, Proof, Target};
use locksmith_core::{AcquireRequest, Attempt, EventKind, Key, ReleaseReason, Store};
use locksmith_postgres::{Options, PgStore};
use locksmith_testkit::pg::PgServer;

fn main() {
    let args = Args::parse();
    if args.positional.first().map(String::as_str) == Some("__worker") {
        if let Err(e) = worker(&args) {
            eprintln!("worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run(&args) {
        eprintln!("postgres: {e}");
        std::process::exit(1);
    }
}

/// The server, and its URL with a schema.
struct Server {
    _own: Option<PgServer>,
    url: String,
    version: String,
}

fn server() -> Result<Server, String> {
    let own = match std::env::var("LOCKSMITH_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => None,
        // PostgreSQL's defaults (the tests' own server runs without fsync).
        _ => Some(PgServer::start(&["fsync=on", "synchronous_commit=on"])?),
    };
    let base = match &own {
        Some(s) => s.url.clone(),
        None => std::env::var("LOCKSMITH_TEST_PG_URL").unwrap_or_default(),
    };
    let mut c = postgres::Client::connect(&base, postgres::NoTls).map_err(|e| e.to_string())?;
    let version: String = c
        .query_one("SHOW server_version", &[])
        .and_then(|r| r.try_get(0))
        .map_err(|e| e.to_string())?;
    Ok(Server {
        _own: own,
        url: base,
        version,
    })
}

fn schema_url(base: &str, schema: &str) -> String {
    format!("{base}?schema={schema}")
}

fn run(args: &Args) -> Result<(), String> {
    let sections = args
        .text("sections")
        .unwrap_or("pairs,handover,scale")
        .to_string();
    let work = WorkDir::new(args, "locksmith-bench-pg").map_err(|e| e.to_string())?;
    let srv = server()?;
    println!("## postgres: the PostgreSQL store against the table recipe and pg_advisory_lock\n");
    println!(
        "- run: `{}`",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!("- machine: {}", Machine::current(work.path()).line());
    println!(
        "- PostgreSQL {} on 127.0.0.1, started by the benchmark with its default durability (fsync, synchronous_commit on)\n",
        srv.version
    );
    if sections.contains("pairs") {
        pairs(args, &srv.url)?;
    }
    if sections.contains("handover") {
        handover(args, &srv.url, work.path())?;
    }
    if sections.contains("scale") {
        scale(args, &srv.url)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- pairs

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Peer {
    Locksmith,
    Recipe,
    Advisory,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Locksmith => "locksmith PostgreSQL store (ttl 30s, fences, history)",
            Peer::Recipe => "table recipe (INSERT … ON CONFLICT … WHERE expires < now() / DELETE)",
            Peer::Advisory => "pg_advisory_lock / pg_advisory_unlock (session)",
        }
    }
}

/// One client's pairs: a closure that takes and releases key `i`.
type Pair = Box<dyn FnMut(usize) -> Result<(), String> + Send>;

fn client(peer: Peer, url: &str, id: usize) -> Result<Pair, String> {
    match peer {
        Peer::Locksmith => {
            let store = PgStore::open(
                &schema_url(url, "bench_pairs"),
                Options {
                    pool_size: 1,
                    ..Options::default()
                },
            )
            .map_err(|e| e.to_string())?;
            let holder = locksmith_core::Holder {
                owner: format!("c{id}"),
                ..locksmith::host::this_process(format!("c{id}"))
            };
            let keys: Vec<Key> = (0..100)
                .map(|i| Key::new(format!("pairs/c{id}/k{i}")).unwrap())
                .collect();
            Ok(Box::new(move |i| {
                let key = keys[i % keys.len()].clone();
                let req = AcquireRequest {
                    ttl: Some(Duration::from_secs(30)),
                    ..AcquireRequest::exclusive(vec![key.clone()], holder.clone())
                };
                let g = match store.acquire(&req, None).map_err(|e| e.to_string())? {
                    Attempt::Granted(g) => g,
                    Attempt::Blocked(_) => return Err("blocked".into()),
                };
                store
                    .release(
                        &Target {
                            key,
                            by: Proof::Handle(g.handle),
                        },
                        ReleaseReason::Completed,
                    )
                    .map_err(|e| e.to_string())?;
                Ok(())
            }))
        }
        Peer::Recipe => {
            let mut c =
                postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
            let take = c
                .prepare(
                    "INSERT INTO bench_recipe (key, owner, expires) VALUES ($1, $2, now() + interval '30 seconds')
                     ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
                     WHERE bench_recipe.expires < now()",
                )
                .map_err(|e| e.to_string())?;
            let give = c
                .prepare("DELETE FROM bench_recipe WHERE key = $1 AND owner = $2")
                .map_err(|e| e.to_string())?;
            let owner = format!("c{id}");
            let keys: Vec<String> = (0..100).map(|i| format!("pairs/c{id}/k{i}")).collect();
            Ok(Box::new(move |i| {
                let key = &keys[i % keys.len()];
                let n = c
                    .execute(&take, &[key, &owner])
                    .map_err(|e| e.to_string())?;
                if n != 1 {
                    return Err("not taken".into());
                }
                let n = c
                    .execute(&give, &[key, &owner])
                    .map_err(|e| e.to_string())?;
                if n != 1 {
                    return Err("not released".into());
                }
                Ok(())
            }))
        }
        Peer::Advisory => {
            let mut c =
                postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
            let lock = c
                .prepare("SELECT pg_advisory_lock($1)")
                .map_err(|e| e.to_string())?;
            let unlock = c
                .prepare("SELECT pg_advisory_unlock($1)")
                .map_err(|e| e.to_string())?;
            Ok(Box::new(move |i| {
                let k = (id * 1000 + i % 100) as i64;
                c.query(&lock, &[&k]).map_err(|e| e.to_string())?;
                let ok: bool = c
                    .query_one(&unlock, &[&k])
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| e.to_string())?;
                if !ok {
                    return Err("not unlocked".into());
                }
                Ok(())
            }))
        }
    }
}

struct PairsRun {
    peer: Peer,
    clients: usize,
    pairs: u64,
    elapsed: Duration,
    latency: Summary,
}

fn pairs_once(
    peer: Peer,
    url: &str,
    clients: usize,
    secs: u64,
    max: u64,
) -> Result<PairsRun, String> {
    let per_client = (max / clients as u64).max(1);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut threads = Vec::new();
    for id in 0..clients {
        let mut pair = client(peer, url, id)?;
        let barrier = barrier.clone();
        threads.push(std::thread::spawn(move || -> Result<Vec<u64>, String> {
            barrier.wait();
            let until = Instant::now() + Duration::from_secs(secs);
            let mut lat = Vec::new();
            for i in 0..per_client as usize {
                if Instant::now() >= until {
                    break;
                }
                let t = mono_ns();
                pair(i)?;
                lat.push(mono_ns() - t);
            }
            Ok(lat)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| "a client panicked")??);
    }
    let elapsed = start.elapsed();
    Ok(PairsRun {
        peer,
        clients,
        pairs: all.len() as u64,
        elapsed,
        latency: Summary::of(&mut all),
    })
}

fn pairs(args: &Args, url: &str) -> Result<(), String> {
    let secs = args.num("secs", 3);
    let max = args.num("max-pairs", 20_000);
    let clients: Vec<usize> = args
        .text("clients")
        .unwrap_or("1,16")
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    {
        let mut c = postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
        c.batch_execute(
            "DROP TABLE IF EXISTS bench_recipe;
             CREATE TABLE bench_recipe (key text PRIMARY KEY, owner text NOT NULL, expires timestamptz NOT NULL)",
        )
        .map_err(|e| e.to_string())?;
        // Create the store's schema once, before the clients race.
        drop(
            PgStore::open(&schema_url(url, "bench_pairs"), Options::default())
                .map_err(|e| e.to_string())?,
        );
    }
    println!("### Acquire + release pairs\n");
    let mut rows = Vec::new();
    let mut rates = std::collections::HashMap::new();
    for &n in &clients {
        for peer in [Peer::Locksmith, Peer::Recipe, Peer::Advisory] {
            let r = pairs_once(peer, url, n, secs, max)?;
            let rate = r.pairs as f64 / r.elapsed.as_secs_f64();
            rates.insert((peer, n), rate);
            rows.push(vec![
                r.peer.name().to_string(),
                r.clients.to_string(),
                r.pairs.to_string(),
                fmt_rate(rate),
                fmt_ns(r.latency.p50),
                fmt_ns(r.latency.p99),
            ]);
        }
    }
    println!(
        "{}",
        table(
            &["peer", "clients", "pairs", "pairs/s", "p50", "p99"],
            &rows
        )
    );
    let mut ratio_rows = Vec::new();
    for &n in &clients {
        let l = rates[&(Peer::Locksmith, n)];
        ratio_rows.push(vec![
            n.to_string(),
            format!("{:.2}×", l / rates[&(Peer::Recipe, n)]),
            format!("{:.2}×", l / rates[&(Peer::Advisory, n)]),
        ]);
    }
    println!(
        "{}",
        table(
            &["clients", "locksmith ÷ recipe", "locksmith ÷ advisory"],
            &ratio_rows
        )
    );
    Ok(())
}

// ---------------------------------------------------------------- handover

/// One grant a worker saw: when it began waiting, was granted, released.
#[derive(Clone, Copy, Debug)]
struct Rec {
    proc: usize,
    wait: u64,
    grant: u64,
    release: u64,
}

fn worker(args: &Args) -> Result<(), String> {
    let kind = args.text("kind").ok_or("--kind")?.to_string();
    let url = args.text("url").ok_or("--url")?.to_string();
    let dir = PathBuf::from(args.text("dir").ok_or("--dir")?);
    let id = args.num("id", 0) as usize;
    let target = args.num("handovers", 1000);
    let hold = Duration::from_micros(args.num("hold-us", 100));
    let counter = dir.join(format!("{kind}.counter"));
    let mut recs = Vec::new();
    let bump = || -> Result<u64, String> {
        let n: u64 = std::fs::read_to_string(&counter)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0);
        std::fs::write(&counter, (n + 1).to_string()).map_err(|e| e.to_string())?;
        Ok(n + 1)
    };
    let spin = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    };
    // One protocol for both peers: take (waiting as long as it takes),
    // count, hold, give back; until the shared counter passes the target.
    let mut round = |take: &mut dyn FnMut() -> Result<(), String>,
                     give: &mut dyn FnMut() -> Result<(), String>|
     -> Result<bool, String> {
        let wait = mono_ns();
        take()?;
        let grant = mono_ns();
        let n = bump()?;
        spin(hold);
        let release = mono_ns();
        give()?;
        recs.push(Rec {
            proc: id,
            wait,
            grant,
            release,
        });
        Ok(n > target)
    };
    match kind.as_str() {
        "locksmith" => {
            let client = locksmith::Client::open(&url).map_err(|e| e.to_string())?;
            let held = std::cell::RefCell::new(None);
            let mut take = || {
                let g = client
                    .lock("handover/k")
                    .owner(&format!("p{id}"))
                    .ttl(Duration::from_secs(30))
                    .wait_forever()
                    .acquire_blocking()
                    .map_err(|e| e.to_string())?;
                *held.borrow_mut() = Some(g);
                Ok(())
            };
            let mut give = || match held.borrow_mut().take() {
                Some(g) => g.release().map(|_| ()).map_err(|e| e.to_string()),
                None => Err("nothing held".to_string()),
            };
            while !round(&mut take, &mut give)? {}
        }
        _ => {
            let c = std::cell::RefCell::new(
                postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?,
            );
            let run = |sql: &str| {
                c.borrow_mut()
                    .execute(sql, &[])
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            let mut take = || run("SELECT pg_advisory_lock(4242)");
            let mut give = || run("SELECT pg_advisory_unlock(4242)");
            while !round(&mut take, &mut give)? {}
        }
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{kind}.{id}.recs")))
        .map_err(|e| e.to_string())?;
    for r in recs {
        writeln!(f, "{} {} {} {}", r.proc, r.wait, r.grant, r.release)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn spawn(kind: &str, url: &str, dir: &Path, id: usize, args: &Args) -> Result<Child, String> {
    Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["__worker", "--kind", kind, "--url", url])
        .arg("--dir")
        .arg(dir)
        .args([
            "--id",
            &id.to_string(),
            "--handovers",
            &args.num("handovers", 1000).to_string(),
            "--hold-us",
            &args.num("hold-us", 100).to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())
}

struct Handover {
    grants: usize,
    latency: Summary,
    /// Grants that went to a process while another had been waiting longer.
    passed: usize,
    per_proc: (usize, usize),
}

fn handover_once(kind: &str, url: &str, dir: &Path, args: &Args) -> Result<Handover, String> {
    let procs = args.num("procs", 8) as usize;
    let workers: Vec<Child> = (0..procs)
        .map(|i| spawn(kind, url, dir, i, args))
        .collect::<Result<_, _>>()?;
    for w in workers {
        let out = w.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "{kind} worker failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let mut recs = Vec::new();
    for i in 0..procs {
        let text =
            std::fs::read_to_string(dir.join(format!("{kind}.{i}.recs"))).unwrap_or_default();
        for l in text.lines() {
            let f: Vec<u64> = l.split(' ').filter_map(|x| x.parse().ok()).collect();
            recs.push(Rec {
                proc: f[0] as usize,
                wait: f[1],
                grant: f[2],
                release: f[3],
            });
        }
    }
    recs.sort_by_key(|r| r.grant);
    // The start-up of the processes is not a hand-over: from the time every
    // process had asked once.
    let all_asked = (0..procs)
        .filter_map(|p| recs.iter().filter(|r| r.proc == p).map(|r| r.wait).min())
        .max()
        .unwrap_or(0);
    let mut lat = Vec::new();
    let mut passed = 0;
    for (i, pair) in recs.windows(2).enumerate() {
        let (prev, next) = (pair[0], pair[1]);
        if prev.grant < all_asked || next.proc == prev.proc {
            continue;
        }
        lat.push(next.grant.saturating_sub(prev.release));
        // Someone else who began waiting before `next` did, and was still
        // waiting when `next` was granted.
        let earlier_waiting = recs[i + 2..]
            .iter()
            .any(|r| r.proc != next.proc && r.wait < next.wait && r.grant > next.grant);
        passed += earlier_waiting as usize;
    }
    let mut counts = vec![0usize; procs];
    for r in &recs {
        counts[r.proc] += 1;
    }
    Ok(Handover {
        grants: recs.len(),
        latency: Summary::of(&mut lat),
        passed,
        per_proc: (
            counts.iter().copied().min().unwrap_or(0),
            counts.iter().copied().max().unwrap_or(0),
        ),
    })
}

fn handover(args: &Args, base: &str, dir: &Path) -> Result<(), String> {
    let url = schema_url(base, "bench_handover");
    drop(PgStore::open(&url, Options::default()).map_err(|e| e.to_string())?);
    let mut rows = Vec::new();
    let mut replay = None;
    for (kind, name, url) in [
        (
            "locksmith",
            "locksmith (library, wait forever)",
            url.as_str(),
        ),
        ("advisory", "pg_advisory_lock (blocks in the server)", base),
    ] {
        let h = handover_once(kind, url, dir, args)?;
        rows.push(vec![
            name.to_string(),
            args.num("procs", 8).to_string(),
            h.grants.to_string(),
            fmt_ns(h.latency.p50),
            fmt_ns(h.latency.p99),
            fmt_ns(h.latency.max),
            h.passed.to_string(),
            format!("{}–{}", h.per_proc.0, h.per_proc.1),
        ]);
        if kind == "locksmith" {
            let store = PgStore::open(url, Options::default()).map_err(|e| e.to_string())?;
            let mut events = store
                .history(&HistoryFilter {
                    key: Some("handover/k".into()),
                    ..HistoryFilter::default()
                })
                .map_err(|e| e.to_string())?;
            events.reverse();
            replay = Some(QueueReplay::of(events));
        }
    }
    println!(
        "### Hand-over: {} processes on one key\n",
        args.num("procs", 8)
    );
    println!(
        "{}",
        table(
            &[
                "peer",
                "processes",
                "grants",
                "hand-over p50",
                "p99",
                "max",
                "grants past a longer waiter",
                "grants per process",
            ],
            &rows
        )
    );
    if let Some(q) = replay {
        println!(
            "locksmith's own history: {} grants, {} from the queue, {} out of queue order, {} to a newcomer while others waited; strict FIFO: {}\n",
            q.grants,
            q.from_queue,
            q.out_of_order,
            q.barged,
            if q.strict() { "yes" } else { "no" }
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- scale

fn scale(args: &Args, base: &str) -> Result<(), String> {
    let total = args.num("scale", 1_000_000) as usize;
    let batch = args.num("batch", 64).max(1) as usize;
    let clients = 16usize;
    let url = schema_url(base, "bench_scale");
    {
        let mut c = postgres::Client::connect(base, postgres::NoTls).map_err(|e| e.to_string())?;
        c.batch_execute("DROP SCHEMA IF EXISTS bench_scale CASCADE")
            .map_err(|e| e.to_string())?;
    }
    drop(PgStore::open(&url, Options::default()).map_err(|e| e.to_string())?);
    let per_client = total / clients;
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let store = PgStore::open(
                    &url,
                    Options {
                        pool_size: 1,
                        ..Options::default()
                    },
                )
                .map_err(|e| e.to_string())?;
                let holder = locksmith::host::this_process(format!("s{c}"));
                let mut i = 0;
                while i < per_client {
                    let n = batch.min(per_client - i);
                    let keys = (i..i + n)
                        .map(|k| Key::new(format!("scale/{c:02}/{k:06}")).unwrap())
                        .collect();
                    let req = AcquireRequest::exclusive(keys, holder.clone());
                    match store.acquire(&req, None).map_err(|e| e.to_string())? {
                        Attempt::Granted(_) => {}
                        Attempt::Blocked(_) => return Err("blocked".into()),
                    }
                    i += n;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a client panicked")??;
    }
    let took = started.elapsed();
    let held = per_client * clients;
    let mut c = postgres::Client::connect(base, postgres::NoTls).map_err(|e| e.to_string())?;
    let mut size = |rel: &str| -> Result<i64, String> {
        c.query_one(
            "SELECT pg_total_relation_size($1::text::regclass)",
            &[&format!("bench_scale.{rel}")],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| e.to_string())
    };
    let holds = size("holds")?;
    let events = size("events")?;
    let store = PgStore::open(&url, Options::default()).map_err(|e| e.to_string())?;
    let key = Key::new(format!("scale/07/{:06}", per_client / 2)).unwrap();
    let (status_ns, st) = median_of(21, || store.status(&key));
    let st = st.map_err(|e| e.to_string())?;
    if st.holders.len() != 1 {
        return Err("status did not find the held key".into());
    }
    // 100 keys when each client holds at least 200.
    let prefix = format!("scale/03/{:04}", per_client / 200);
    let (list_ns, listed) = median_of(21, || {
        store.list(&ListFilter {
            prefix: Some(prefix.clone()),
            ..ListFilter::default()
        })
    });
    let listed = listed.map_err(|e| e.to_string())?.len();
    let acquired = store
        .stats()
        .map_err(|e| e.to_string())?
        .events
        .get(EventKind::Acquired.name())
        .copied()
        .unwrap_or(0);
    println!("### {held} held keys\n");
    println!(
        "{}",
        table(
            &["what", "value"],
            &[
                vec![
                    format!("taking them ({clients} clients, grants of {batch} keys)"),
                    format!(
                        "{} ({} keys/s)",
                        fmt_ns(took.as_nanos() as u64),
                        fmt_rate(held as f64 / took.as_secs_f64())
                    ),
                ],
                vec![
                    "holds table with indexes, per key".into(),
                    format!("{} B", holds / held as i64)
                ],
                vec![
                    "history (one `acquired` event per key), per key".into(),
                    format!("{} B", events / held as i64)
                ],
                vec![
                    "`status` of one key (median of 21)".into(),
                    fmt_ns(status_ns)
                ],
                vec![
                    format!("`list --prefix` over {listed} keys (median of 21)"),
                    fmt_ns(list_ns)
                ],
                vec!["acquired events recorded".into(), acquired.to_string()],
            ]
        )
    );
    Ok(())
}
