//! `told`: how soon a holder knows that its lock was forced away by
//! another client, on the embedded store and (with `--postgres URL`) on
//! PostgreSQL.
//!
//! ```text
//! told [--reps 200] [--ttl-secs 60] [--postgres own|URL] [--dir DIR]
//! ```
//!
//! `--postgres own` starts a PostgreSQL server of its own (`initdb` into a
//! temporary folder, PostgreSQL's default durability) and stops it at the end.
//!
//! Each repetition takes a lock with a `--ttl-secs` lease through one
//! client, reads `CLOCK_MONOTONIC`, force-releases the key through a second
//! client (its own store handle, as another process would have), and polls
//! `Guard::is_lost` every 50 µs until it is true; the latency is the time
//! from just before the force-release call to the first poll that saw the
//! loss, so it includes the force-release transaction. Repetitions are
//! 25 ms apart: a process is told at most once per 20 ms. A repetition that
//! takes longer than a third of the lease would have been found by the
//! renewal, not by being told: the run reports how many did.

use std::process::ExitCode;
use std::time::Duration;

use locksmith::Client;
use locksmith_bench::{Args, Summary, WorkDir, fmt_ns, mono_ns, report_header};
use locksmith_testkit::pg::PgServer;

fn measure(url: &str, reps: u64, ttl: Duration) -> Result<(Summary, usize), String> {
    let holder = Client::open(url).map_err(|e| e.to_string())?;
    let admin = Client::open(url).map_err(|e| e.to_string())?;
    let key = locksmith::Key::new("told/k").map_err(|e| e.to_string())?;
    let renewal = ttl / 3;
    let mut samples = Vec::with_capacity(reps as usize);
    let mut late = 0;
    for _ in 0..reps {
        let guard = holder
            .lock("told/k")
            .ttl(ttl)
            .acquire_blocking()
            .map_err(|e| e.to_string())?;
        let start = mono_ns();
        admin
            .store()
            .force_release(&key, "benchmark")
            .map_err(|e| e.to_string())?;
        while !guard.is_lost() {
            if Duration::from_nanos(mono_ns() - start) > renewal + Duration::from_secs(1) {
                return Err("a forced holder did not learn of it, even by renewing".into());
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let took = mono_ns() - start;
        if Duration::from_nanos(took) >= renewal {
            late += 1;
        }
        samples.push(took);
        drop(guard);
        // A process is told at most once per 20 ms (a burst becomes one
        // round of renewals): space the repetitions beyond that.
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok((Summary::of(&mut samples), late))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let reps = args.num("reps", 200).max(1);
    let ttl = Duration::from_secs(args.num("ttl-secs", 60).max(1));
    let dir = match WorkDir::new(&args, "locksmith-told-") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("told: cannot make a working folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stores = vec![(
        "embedded".to_string(),
        format!("sqlite://{}/locksmith.db", dir.path().display()),
    )];
    let mut _own = None;
    match args.text("postgres") {
        Some("own") => match PgServer::start(&["fsync=on", "synchronous_commit=on"]) {
            Ok(server) => {
                stores.push(("postgres".to_string(), server.fresh_schema_url()));
                _own = Some(server);
            }
            Err(e) => {
                eprintln!("told: cannot start PostgreSQL: {e}");
                return ExitCode::FAILURE;
            }
        },
        Some(url) => stores.push(("postgres".to_string(), url.to_string())),
        None => {}
    }
    println!(
        "{}",
        report_header("Told: force-release to a holder's loss")
    );
    println!("| store | reps | p50 | p99 | max | later than the renewal |");
    println!("|---|---|---|---|---|---|");
    for (name, url) in stores {
        match measure(&url, reps, ttl) {
            Ok((s, late)) => println!(
                "| {name} | {} | {} | {} | {} | {late} (renewal every {:?}) |",
                s.count,
                fmt_ns(s.p50),
                fmt_ns(s.p99),
                fmt_ns(s.max),
                ttl / 3
            ),
            Err(e) => {
                eprintln!("told: {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
