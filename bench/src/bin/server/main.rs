//! `server`: `locksmith serve` against Redis, PostgreSQL advisory locks and
//! etcd, each server started here on 127.0.0.1 with its data in a fresh
//! folder under /tmp, and stopped (killed if need be) at the end.
//!
//! ```text
//! server [--seconds 3] [--warmup-ms 500] [--clients 1,16] [--max-pairs 1000000] [--rounds 3]
//!        [--handovers 400] [--handover-clients 8] [--handover-secs 20]
//!        [--peers locksmith,locksmith-full,redis,redis-fsync,pg-advisory,etcd]
//!        [--locksmith PATH] [--redis-server PATH] [--etcd PATH] [--pg-bin DIR] [--pg-user postgres]
//! ```
//!
//! Every server runs for the whole benchmark and the peers take turns, one
//! cell at a time, for `--rounds` rounds, so that a slow spell of the
//! machine falls on all of them alike. Two measurements per server:
//!
//! 1. acquire+release pairs per second and the latency of a pair, with 1
//!    and 16 clients (threads, each with its own connection and its own
//!    key), `--seconds` per cell after a warm-up, or `--max-pairs`;
//! 2. hand-over: `--handover-clients` clients on ONE key, each looping
//!    acquire (waiting) → release with no hold, until `--handovers` grants
//!    have followed the first or `--handover-secs` passed; the latency runs from the holder's
//!    release call start to the next holder's grant (threads of one process
//!    read one clock). For locksmith the server's own history of the key is
//!    replayed afterwards to check that every grant went to the head of the
//!    queue.
//!
//! Prints Markdown: the command, the machine, the servers and their
//! versions, a table per measurement, the ratios and the bars.

use std::path::{Path, PathBuf};
use std::time::Duration;

use locksmith_bench::{Args, Machine, Summary, command_line, fmt_ns, fmt_rate, table};

mod measure;
mod peers;
mod services;

use measure::{Handover, HandoverPlan, Pairs, PairsPlan, StoreFifo};
use services::{Endpoint, Service};

/// The servers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// `locksmith serve` through `HttpStore`, store defaults.
    Locksmith,
    /// The same with `durability = full`: every commit fsynced before its
    /// answer, as Redis with `appendfsync always`.
    LocksmithFull,
    /// Redis without persistence.
    Redis,
    /// Redis with `appendfsync always`.
    RedisFsync,
    /// PostgreSQL session advisory locks.
    PgAdvisory,
    /// etcd v3 `Lock`.
    Etcd,
}

impl Peer {
    /// Every peer, in report order.
    const ALL: [Peer; 6] = [
        Peer::Locksmith,
        Peer::LocksmithFull,
        Peer::Redis,
        Peer::RedisFsync,
        Peer::PgAdvisory,
        Peer::Etcd,
    ];

    /// The name given to `--peers`.
    fn tag(self) -> &'static str {
        match self {
            Peer::Locksmith => "locksmith",
            Peer::LocksmithFull => "locksmith-full",
            Peer::Redis => "redis",
            Peer::RedisFsync => "redis-fsync",
            Peer::PgAdvisory => "pg-advisory",
            Peer::Etcd => "etcd",
        }
    }

    /// What one acquire and one release are.
    fn calls(self) -> &'static str {
        match self {
            Peer::Locksmith | Peer::LocksmithFull => {
                "`HttpStore::acquire` (lease 30 s) + `release_grant`"
            }
            Peer::Redis | Peer::RedisFsync => {
                "`SET k token NX PX 30000` + `EVALSHA` compare-and-delete (if GET == token then DEL)"
            }
            Peer::PgAdvisory => "`SELECT pg_advisory_lock($1)` + `SELECT pg_advisory_unlock($1)`",
            Peer::Etcd => {
                "`POST /v3/lock/lock` on the client's lease (TTL 30 s, granted once) + `POST /v3/lock/unlock`"
            }
        }
    }

    /// How the server ran.
    fn setup(self) -> &'static str {
        match self {
            Peer::Locksmith => {
                "`locksmith serve --listen 127.0.0.1:0`, fresh `$LOCKSMITH_HOME`, store defaults (WAL, `synchronous=NORMAL`: a commit is not fsynced before its answer)"
            }
            Peer::LocksmithFull => {
                "as `locksmith`, with `LOCKSMITH_DURABILITY=full` (WAL, `synchronous=FULL`: every commit fsynced before its answer)"
            }
            Peer::Redis => "`redis-server --save \"\" --appendonly no` (no persistence)",
            Peer::RedisFsync => {
                "`redis-server --save \"\" --appendonly yes --appendfsync always` (fsync before each answer)"
            }
            Peer::PgAdvisory => {
                "`initdb -A trust` + `postgres -c listen_addresses=127.0.0.1`, default settings (`fsync=on`, `synchronous_commit=on`)"
            }
            Peer::Etcd => {
                "one member, `--data-dir` in /tmp, client and peer URLs on 127.0.0.1, default settings; JSON gateway over HTTP/1.1"
            }
        }
    }

    /// How a hand-over waiter waits.
    fn waits(self) -> &'static str {
        match self {
            Peer::Locksmith | Peer::LocksmithFull => {
                "`locksmith::wait::acquire`: long poll, answered at the grant"
            }
            Peer::Redis | Peer::RedisFsync => {
                "`SET NX` again every 1 ms (as Redis lock libraries wait)"
            }
            Peer::PgAdvisory => "blocks in `pg_advisory_lock`",
            Peer::Etcd => "blocks in `Lock`",
        }
    }
}

/// Where the server programs are.
struct Programs {
    /// `locksmith`.
    locksmith: PathBuf,
    /// `redis-server`.
    redis: PathBuf,
    /// `etcd`.
    etcd: PathBuf,
    /// The folder with `initdb` and `postgres`.
    pg_bin: PathBuf,
    /// The user PostgreSQL runs as when this runs as root.
    pg_user: String,
}

impl Programs {
    /// From the options, with defaults next to this program and in /usr.
    fn new(args: &Args) -> Programs {
        let here = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let path =
            |opt: &str, default: PathBuf| args.text(opt).map(PathBuf::from).unwrap_or(default);
        Programs {
            locksmith: path("locksmith", here.join("locksmith")),
            redis: path("redis-server", "/usr/bin/redis-server".into()),
            etcd: path("etcd", "/usr/bin/etcd".into()),
            pg_bin: path(
                "pg-bin",
                locksmith_testkit::pg::bindir()
                    .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into()),
            ),
            pg_user: args.text("pg-user").unwrap_or("postgres").to_string(),
        }
    }

    /// The program of a peer's server.
    fn program(&self, peer: Peer) -> PathBuf {
        match peer {
            Peer::Locksmith | Peer::LocksmithFull => self.locksmith.clone(),
            Peer::Redis | Peer::RedisFsync => self.redis.clone(),
            Peer::PgAdvisory => self.pg_bin.join("postgres"),
            Peer::Etcd => self.etcd.clone(),
        }
    }

    /// Starts a peer's server and waits until it answers.
    fn start(&self, peer: Peer) -> Result<Service, String> {
        match peer {
            Peer::Locksmith => services::locksmith(&self.locksmith, false),
            Peer::LocksmithFull => services::locksmith(&self.locksmith, true),
            Peer::Redis => services::redis(&self.redis, false),
            Peer::RedisFsync => services::redis(&self.redis, true),
            Peer::PgAdvisory => services::postgres(&self.pg_bin, &self.pg_user),
            Peer::Etcd => services::etcd(&self.etcd),
        }
    }
}

/// Everything measured of one peer.
struct Outcome {
    /// The peer.
    peer: Peer,
    /// Pairs cells: client count, each round's result or failure.
    pairs: Vec<(usize, Vec<Result<Pairs, String>>)>,
    /// Each round's hand-over run.
    handovers: Vec<Result<Handover, String>>,
    /// The store's queue order over every hand-over round (locksmith only).
    fifo: Option<Result<StoreFifo, String>>,
}

impl Outcome {
    /// The measured rounds of the pairs cell with `n` clients.
    fn cell(&self, n: usize) -> Vec<&Pairs> {
        self.pairs
            .iter()
            .filter(|(c, _)| *c == n)
            .flat_map(|(_, rounds)| rounds.iter().filter_map(|r| r.as_ref().ok()))
            .collect()
    }

    /// Failures of the pairs cell with `n` clients.
    fn cell_failures(&self, n: usize) -> Vec<&String> {
        self.pairs
            .iter()
            .filter(|(c, _)| *c == n)
            .flat_map(|(_, rounds)| rounds.iter().filter_map(|r| r.as_ref().err()))
            .collect()
    }

    /// Median pairs/s of the rounds with `n` clients.
    fn median_rate(&self, n: usize) -> Option<f64> {
        let mut rates: Vec<f64> = self
            .cell(n)
            .iter()
            .filter(|p| p.pairs > 0)
            .map(|p| p.rate())
            .collect();
        rates.sort_by(f64::total_cmp);
        median(&rates)
    }

    /// The hand-over rounds that ran.
    fn handovers(&self) -> Vec<&Handover> {
        self.handovers
            .iter()
            .filter_map(|h| h.as_ref().ok())
            .collect()
    }
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `a ÷ b` as text.
fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

/// `met` or `not met`.
fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "not met" }
}

/// Exits with a message for a malformed option.
fn bad(msg: String) -> ! {
    eprintln!("{msg}");
    std::process::exit(2)
}

fn main() {
    let args = Args::parse();
    let secs = Duration::from_secs(args.num("seconds", 3).max(1));
    let warmup = Duration::from_millis(args.num("warmup-ms", 500));
    let max_pairs = args.num("max-pairs", 1_000_000).max(1);
    let rounds = args.num("rounds", 3).clamp(1, 20) as usize;
    let clients: Vec<usize> = args
        .text("clients")
        .unwrap_or("1,16")
        .split(',')
        .map(|c| match c.trim().parse() {
            Ok(n) if (1..=256).contains(&n) => n,
            _ => bad(format!(
                "--clients takes numbers from 1 to 256 like 1,16, got {c:?}"
            )),
        })
        .collect();
    let peers: Vec<Peer> = match args.text("peers") {
        None => Peer::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|t| {
                Peer::ALL
                    .into_iter()
                    .find(|p| p.tag() == t.trim())
                    .unwrap_or_else(|| {
                        bad(format!(
                            "unknown peer {t:?}; the peers are {}",
                            Peer::ALL.map(Peer::tag).join(",")
                        ))
                    })
            })
            .collect(),
    };
    let handover = HandoverPlan {
        clients: args.num("handover-clients", 8).clamp(2, 64) as usize,
        handovers: args.num("handovers", 400).max(1),
        cap: Duration::from_secs(args.num("handover-secs", 20).max(1)),
    };
    let plan = PairsPlan {
        clients: 1,
        warmup,
        warmup_pairs: 20_000,
        secs,
        max_pairs,
    };
    let programs = Programs::new(&args);
    let machine = Machine::current(Path::new("/tmp"));

    // Every server runs for the whole benchmark, so that the rounds can
    // take turns between the peers and a slow spell of the machine falls
    // on all of them alike.
    let mut running: Vec<(Peer, Service)> = Vec::new();
    let mut failures = Vec::new();
    for &peer in &peers {
        eprintln!("starting {}", peer.tag());
        match programs.start(peer) {
            Ok(s) => running.push((peer, s)),
            Err(e) => {
                eprintln!("{} did not start: {e}", peer.tag());
                failures.push((peer, e));
            }
        }
    }
    let mut outcomes: Vec<Outcome> = running
        .iter()
        .map(|(peer, _)| Outcome {
            peer: *peer,
            pairs: clients.iter().map(|&n| (n, Vec::new())).collect(),
            handovers: Vec::new(),
            fifo: None,
        })
        .collect();
    for round in 1..=rounds {
        for (ci, &n) in clients.iter().enumerate() {
            for ((peer, service), out) in running.iter().zip(outcomes.iter_mut()) {
                let got = measure::pairs(&service.endpoint, PairsPlan { clients: n, ..plan })
                    .map_err(|e| format!("{e} (server log: {})", service.log_tail()));
                match &got {
                    Ok(p) => eprintln!(
                        "round {round} {:<12} clients={n:<3} {:>8} pairs/s  p50 {:>9}  p99 {:>9}  errors {}",
                        peer.tag(),
                        fmt_rate(p.rate()),
                        fmt_ns(p.latency.p50),
                        fmt_ns(p.latency.p99),
                        p.errors
                    ),
                    Err(e) => {
                        eprintln!("round {round} {} with {n} clients failed: {e}", peer.tag())
                    }
                }
                out.pairs[ci].1.push(got);
            }
        }
    }
    for round in 1..=rounds {
        for ((peer, service), out) in running.iter().zip(outcomes.iter_mut()) {
            let got = measure::handover(&service.endpoint, handover);
            match &got {
                Ok(h) => eprintln!(
                    "round {round} {:<12} hand-over: {} grants, p50 {} p99 {} max {}, same client again {}, overtaken {}",
                    peer.tag(),
                    h.grants,
                    fmt_ns(h.latency.p50),
                    fmt_ns(h.latency.p99),
                    fmt_ns(h.latency.max),
                    h.regrants,
                    h.overtakes
                ),
                Err(e) => eprintln!("round {round} {} hand-over failed: {e}", peer.tag()),
            }
            out.handovers.push(got);
        }
    }
    for ((_, service), out) in running.iter().zip(outcomes.iter_mut()) {
        if let Endpoint::Locksmith(url) = &service.endpoint {
            out.fifo = Some(measure::store_fifo(url));
        }
    }
    drop(running);

    report(&Report {
        machine: &machine,
        programs: &programs,
        peers: &peers,
        clients: &clients,
        rounds,
        plan,
        handover,
        outcomes: &outcomes,
        failures: &failures,
    });
}

/// What the report is made of.
struct Report<'a> {
    /// The machine.
    machine: &'a Machine,
    /// The server programs.
    programs: &'a Programs,
    /// The peers asked for.
    peers: &'a [Peer],
    /// The client counts of the pairs cells.
    clients: &'a [usize],
    /// Rounds of every measurement.
    rounds: usize,
    /// Limits of a pairs cell.
    plan: PairsPlan,
    /// Limits of the hand-over.
    handover: HandoverPlan,
    /// What was measured.
    outcomes: &'a [Outcome],
    /// Servers that did not start.
    failures: &'a [(Peer, String)],
}

/// Prints the Markdown report.
fn report(r: &Report<'_>) {
    println!("## server: locksmith serve against Redis, PostgreSQL and etcd\n");
    println!("Command: `{}`\n", command_line());
    println!("{}", r.machine.table());
    let servers: Vec<Vec<String>> = r
        .peers
        .iter()
        .map(|&p| {
            vec![
                format!("`{}`", p.tag()),
                p.setup().to_string(),
                p.calls().to_string(),
                services::version(&r.programs.program(p)),
            ]
        })
        .collect();
    println!(
        "Each server was started by this program on 127.0.0.1 (free ports, data in a fresh folder \
         under /tmp) and ran for the whole benchmark; the peers took turns, one cell at a time, \
         for {} rounds. Clients are threads of this process, each with its own connection.\n",
        r.rounds
    );
    println!(
        "{}",
        table(
            &["peer", "server", "acquire + release", "version"],
            &servers
        )
    );
    for (p, e) in r.failures {
        println!("**{} did not start:** {e}\n", p.tag());
    }

    println!("### Acquire + release pairs\n");
    println!(
        "Every client on its own key; {} ms warm-up per client, then {} s or {} pairs (all clients \
         together), whichever first; {} rounds per cell. pairs/s: median of the rounds (lowest–highest); \
         latencies over every pair of every round.\n",
        r.plan.warmup.as_millis(),
        r.plan.secs.as_secs(),
        r.plan.max_pairs,
        r.rounds
    );
    let mut rows = Vec::new();
    for &n in r.clients {
        for o in r.outcomes {
            let cell = o.cell(n);
            let failed = o.cell_failures(n);
            if cell.is_empty() {
                rows.push(vec![
                    format!("`{}`", o.peer.tag()),
                    n.to_string(),
                    format!(
                        "failed: {}",
                        failed.first().map_or("no round ran", |e| e.as_str())
                    ),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
                continue;
            }
            let mut rates: Vec<f64> = cell.iter().map(|p| p.rate()).collect();
            rates.sort_by(f64::total_cmp);
            let mut all: Vec<u64> = cell
                .iter()
                .flat_map(|p| p.samples.iter().copied())
                .collect();
            let lat = Summary::of(&mut all);
            let errors: u64 = cell.iter().map(|p| p.errors).sum();
            let first = cell.iter().find_map(|p| p.first_error.as_ref());
            rows.push(vec![
                format!("`{}`", o.peer.tag()),
                n.to_string(),
                cell.iter().map(|p| p.pairs).sum::<u64>().to_string(),
                format!(
                    "{} ({}–{})",
                    fmt_rate(median(&rates).unwrap_or(0.0)),
                    fmt_rate(rates[0]),
                    fmt_rate(rates[rates.len() - 1])
                ),
                fmt_ns(lat.p50),
                fmt_ns(lat.p99),
                fmt_ns(lat.max),
                match (first, failed.len()) {
                    (None, 0) => errors.to_string(),
                    (Some(e), 0) => format!("{errors} ({e})"),
                    (_, f) => format!("{errors}; {f} round(s) failed: {}", failed[0]),
                },
            ]);
        }
    }
    println!(
        "{}",
        table(
            &[
                "peer", "clients", "pairs", "pairs/s", "p50", "p99", "max", "errors"
            ],
            &rows
        )
    );

    let h = r.handover;
    println!("### Hand-over: {} clients on one key\n", h.clients);
    println!(
        "Each client loops acquire (waiting) → release with no hold, until {} grants have followed \
         the first (to another client or back to the same) or {} s; {} rounds. Latency: from the holder's release call start to the next holder's grant \
         returning, counted when the next holder is another client; p50, p99 and max over every \
         round, then the p99 of each round. \"Overtaken\": the grant went to a client while another \
         had been waiting longer (in brackets: by over 1 ms); waiting is counted from the client's \
         call, so a request still on its way to the server counts as waiting.\n",
        h.handovers,
        h.cap.as_secs(),
        r.rounds
    );
    let rows: Vec<Vec<String>> = r
        .outcomes
        .iter()
        .map(|o| {
            let mut row = vec![format!("`{}`", o.peer.tag()), o.peer.waits().to_string()];
            let ran = o.handovers();
            if ran.is_empty() {
                let e = o
                    .handovers
                    .iter()
                    .find_map(|h| h.as_ref().err())
                    .map_or("no round ran", |e| e.as_str());
                row.push(format!("failed: {e}"));
                row.extend(std::iter::repeat_n("-".to_string(), 9));
                return row;
            }
            let mut all: Vec<u64> = ran.iter().flat_map(|x| x.samples.iter().copied()).collect();
            let lat = Summary::of(&mut all);
            let failed = o.handovers.iter().filter(|h| h.is_err()).count();
            let errors: u64 = ran.iter().map(|x| x.errors).sum();
            let first = ran.iter().find_map(|x| x.first_error.as_ref());
            row.extend([
                format!(
                    "{}{}",
                    lat.count,
                    if ran.iter().any(|x| x.capped) {
                        " (time cap)"
                    } else {
                        ""
                    }
                ),
                fmt_ns(lat.p50),
                fmt_ns(lat.p99),
                fmt_ns(lat.max),
                ran.iter()
                    .map(|x| fmt_ns(x.latency.p99))
                    .collect::<Vec<_>>()
                    .join(", "),
                ran.iter().map(|x| x.regrants).sum::<usize>().to_string(),
                ran.iter()
                    .map(|x| x.longest_run)
                    .max()
                    .unwrap_or(0)
                    .to_string(),
                format!(
                    "{} ({})",
                    ran.iter().map(|x| x.overtakes).sum::<usize>(),
                    ran.iter().map(|x| x.overtakes_1ms).sum::<usize>()
                ),
                ran.iter().map(|x| x.overlaps).sum::<usize>().to_string(),
                match (first, failed) {
                    (None, 0) => errors.to_string(),
                    (Some(e), 0) => format!("{errors} ({e})"),
                    (_, f) => format!("{errors}; {f} round(s) failed"),
                },
            ]);
            row
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "peer",
                "how a waiter waits",
                "hand-overs",
                "p50",
                "p99",
                "max",
                "p99 per round",
                "same client again",
                "longest run",
                "overtaken (> 1 ms)",
                "overlaps",
                "errors"
            ],
            &rows
        )
    );
    // The store's own record of each locksmith peer's queue order.
    for o in r.outcomes {
        match &o.fifo {
            Some(Ok(f)) => println!(
                "`{}`: the server's own history of the key over every round, replayed: {} requests \
                 joined the queue, {} grants, {} of them to a queued request, {} not to the head of \
                 the queue, {} to a newcomer while others waited; longest run of one owner {}. \
                 Strict FIFO: **{}**.\n",
                o.peer.tag(),
                f.queued,
                f.grants,
                f.from_queue,
                f.out_of_order,
                f.barged,
                f.longest_run,
                if f.strict() { "yes" } else { "no" }
            ),
            Some(Err(e)) => println!("`{}`: its history could not be read: {e}\n", o.peer.tag()),
            None => {}
        }
    }

    let find = |peer: Peer| r.outcomes.iter().find(|o| o.peer == peer);
    let mine_peers: Vec<&Outcome> = [Peer::Locksmith, Peer::LocksmithFull]
        .into_iter()
        .filter_map(find)
        .collect();
    // Ratio of the medians, and the lowest and highest ratio of one round
    // to the same round of the peer.
    let ratios = |mine: &Outcome, n: usize, peer: Peer| -> Option<(f64, f64, f64)> {
        let theirs = find(peer)?;
        let m = mine.median_rate(n)? / theirs.median_rate(n)?;
        let mut per_round: Vec<f64> = mine
            .pairs
            .iter()
            .zip(&theirs.pairs)
            .filter(|((a, _), (b, _))| *a == n && *b == n)
            .flat_map(|((_, x), (_, y))| x.iter().zip(y))
            .filter_map(|(x, y)| match (x, y) {
                (Ok(x), Ok(y)) if x.pairs > 0 && y.pairs > 0 => Some(x.rate() / y.rate()),
                _ => None,
            })
            .collect();
        per_round.sort_by(f64::total_cmp);
        Some((m, *per_round.first()?, *per_round.last()?))
    };
    println!("### Ratios and bars\n");
    println!(
        "A locksmith peer's median pairs/s ÷ the other peer's median pairs/s; in brackets the lowest \
         and highest ratio of one round to the same round of the other peer.\n"
    );
    let mut rows = Vec::new();
    for mine in &mine_peers {
        for &n in r.clients {
            let Some(rate) = mine.median_rate(n) else {
                continue;
            };
            let mut row = vec![
                format!("`{}`", mine.peer.tag()),
                n.to_string(),
                fmt_rate(rate),
            ];
            for peer in [Peer::Redis, Peer::RedisFsync, Peer::PgAdvisory, Peer::Etcd] {
                row.push(ratios(mine, n, peer).map_or("-".into(), |(m, lo, hi)| {
                    format!("{} ({:.2}–{:.2})", ratio(m), lo, hi)
                }));
            }
            rows.push(row);
        }
    }
    println!(
        "{}",
        table(
            &[
                "peer",
                "clients",
                "pairs/s",
                "÷ redis",
                "÷ redis-fsync",
                "÷ pg-advisory",
                "÷ etcd"
            ],
            &rows
        )
    );
    // The goal against Redis with `appendfsync always` is "while durable":
    // only `locksmith-full` fsyncs every commit before its answer.
    let mut bars = Vec::new();
    for mine in &mine_peers {
        let tag = mine.peer.tag();
        let durable = mine.peer == Peer::LocksmithFull;
        for &n in r.clients {
            if let Some((x, lo, hi)) = ratios(mine, n, Peer::RedisFsync) {
                bars.push(vec![
                    format!("pairs/s, {n} client(s): {tag} ÷ redis-fsync"),
                    format!("{} ({lo:.2}–{hi:.2})", ratio(x)),
                    format!("≥ 0.5×: {}", met(x >= 0.5)),
                    match durable {
                        true => format!("≥ 1.0× while durable: {}", met(x >= 1.0)),
                        false => "– (not durable; judged on `locksmith-full`)".into(),
                    },
                ]);
            }
            if let Some((x, lo, hi)) = ratios(mine, n, Peer::Etcd) {
                bars.push(vec![
                    format!("pairs/s, {n} client(s): {tag} ÷ etcd"),
                    format!("{} ({lo:.2}–{hi:.2})", ratio(x)),
                    format!("≥ 5×: {}", met(x >= 5.0)),
                    "–".into(),
                ]);
            }
        }
        let ran = mine.handovers();
        let mut all: Vec<u64> = ran.iter().flat_map(|x| x.samples.iter().copied()).collect();
        let lat = Summary::of(&mut all);
        if lat.count > 0 {
            let strict = matches!(&mine.fifo, Some(Ok(f)) if f.strict());
            bars.push(vec![
                format!("hand-over p99, {} clients, strict FIFO: {tag}", h.clients),
                format!(
                    "{} (rounds: {}), strict FIFO {}",
                    fmt_ns(lat.p99),
                    ran.iter()
                        .map(|x| fmt_ns(x.latency.p99))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if strict { "yes" } else { "no" }
                ),
                format!(
                    "≤ 2 ms with strict FIFO: {}",
                    met(lat.p99 <= 2_000_000 && strict)
                ),
                format!("< 1 ms: {}", met(lat.p99 < 1_000_000 && strict)),
            ]);
        }
    }
    println!("{}", table(&["measure", "measured", "bar", "goal"], &bars));
}
