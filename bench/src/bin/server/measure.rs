//! The two measurements, each with client threads that share one clock:
//! acquire+release pairs on each client's own key, and hand-overs of one
//! key between waiting clients.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use locksmith_bench::{Summary, mono_ns};

use super::peers;
use super::services::Endpoint;

/// Limits of one pairs cell.
#[derive(Clone, Copy, Debug)]
pub(super) struct PairsPlan {
    /// Client threads.
    pub(super) clients: usize,
    /// Warm-up per client before the clock starts.
    pub(super) warmup: Duration,
    /// Warm-up pairs per client at most.
    pub(super) warmup_pairs: u64,
    /// Measured time.
    pub(super) secs: Duration,
    /// Measured pairs, all clients together, at most.
    pub(super) max_pairs: u64,
}

/// What one pairs cell measured.
#[derive(Clone, Debug, Default)]
pub(super) struct Pairs {
    /// Pairs completed.
    pub(super) pairs: u64,
    /// From the first client's start to the last client's end.
    pub(super) elapsed: Duration,
    /// Latency per pair.
    pub(super) latency: Summary,
    /// Every pair's latency, ns (sorted).
    pub(super) samples: Vec<u64>,
    /// Failed pairs.
    pub(super) errors: u64,
    /// The first failure.
    pub(super) first_error: Option<String>,
}

impl Pairs {
    /// Pairs per second.
    pub(super) fn rate(&self) -> f64 {
        self.pairs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One acquire and one release, on the client's own key.
fn pair(c: &mut dyn peers::Locker) -> Result<(), String> {
    c.acquire(None)?;
    c.release()
}

/// Runs one pairs cell: every client a thread with its own connection and
/// its own key, warmed up, then started together.
pub(super) fn pairs(endpoint: &Endpoint, plan: PairsPlan) -> Result<Pairs, String> {
    let budget = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(plan.clients + 1));
    let cap = plan.secs + plan.warmup + Duration::from_secs(10);
    let mut threads = Vec::new();
    for c in 0..plan.clients {
        let (budget, start, endpoint) = (budget.clone(), start.clone(), endpoint.clone());
        threads.push(std::thread::spawn(move || {
            let name = format!("bench/c{c}");
            let client = peers::connect(
                &endpoint,
                &name,
                1000 + c as i64,
                &format!("pairs-c{c}"),
                cap,
            );
            let client = client.and_then(|mut cl| {
                let until = Instant::now() + plan.warmup;
                for _ in 0..plan.warmup_pairs {
                    if Instant::now() >= until {
                        break;
                    }
                    pair(cl.as_mut()).map_err(|e| format!("warm-up: {e}"))?;
                }
                Ok(cl)
            });
            start.wait();
            let mut client = client?;
            let began = Instant::now();
            let deadline = began + plan.secs;
            let mut lat = Vec::with_capacity(1 << 16);
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                if budget.fetch_add(1, Ordering::Relaxed) >= plan.max_pairs {
                    break;
                }
                let t = Instant::now();
                if t >= deadline {
                    break;
                }
                match pair(client.as_mut()) {
                    Ok(()) => lat.push(t.elapsed().as_nanos() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        // A broken connection would fail at once, again and again.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            Ok::<_, String>((lat, errors, first_error, began, Instant::now()))
        }));
    }
    start.wait();
    let mut all = Vec::new();
    let mut out = Pairs::default();
    let mut span: Option<(Instant, Instant)> = None;
    for t in threads {
        let (lat, errors, first_error, began, ended) = t
            .join()
            .map_err(|_| "a client thread panicked".to_string())??;
        all.extend(lat);
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
        span = Some(span.map_or((began, ended), |(s, e)| (s.min(began), e.max(ended))));
    }
    out.pairs = all.len() as u64;
    out.elapsed = span.map_or(Duration::ZERO, |(s, e)| e - s);
    out.latency = Summary::of(&mut all);
    out.samples = all;
    Ok(out)
}

/// One tenure of the hand-over key as its client saw it (CLOCK_MONOTONIC ns).
#[derive(Clone, Copy, Debug)]
struct Tenure {
    /// The client.
    client: usize,
    /// Its acquire call started.
    wait: u64,
    /// Its acquire call returned the grant.
    grant: u64,
    /// Its release call started.
    release: u64,
}

/// Limits of one hand-over run.
#[derive(Clone, Copy, Debug)]
pub(super) struct HandoverPlan {
    /// Client threads on the one key.
    pub(super) clients: usize,
    /// Hand-overs wanted (grants − 1).
    pub(super) handovers: u64,
    /// Time cap of the whole run.
    pub(super) cap: Duration,
}

/// What one hand-over run measured.
#[derive(Clone, Debug, Default)]
pub(super) struct Handover {
    /// Grants counted (the first `handovers + 1` by grant time).
    pub(super) grants: usize,
    /// First grant to last counted grant.
    pub(super) span: Duration,
    /// Release call start → next holder's grant, when the next holder is another client.
    pub(super) latency: Summary,
    /// Every hand-over's latency, ns (sorted).
    pub(super) samples: Vec<u64>,
    /// Grants to the client that had just released.
    pub(super) regrants: usize,
    /// Longest run of grants to one client.
    pub(super) longest_run: usize,
    /// Grants to a client while another had been waiting longer.
    pub(super) overtakes: usize,
    /// Of those, where the other had started waiting over 1 ms earlier.
    pub(super) overtakes_1ms: usize,
    /// Grants while another client held the lock (should be 0).
    pub(super) overlaps: usize,
    /// Grants per client.
    pub(super) per_client: Vec<usize>,
    /// Failed calls.
    pub(super) errors: u64,
    /// The first failure.
    pub(super) first_error: Option<String>,
    /// True when the time cap ended the run before the count.
    pub(super) capped: bool,
}

/// The hand-over key's name and number.
pub(super) const HANDOVER_KEY: (&str, i64) = ("k", 42);

/// Runs the hand-over: each client loops acquire (waiting) → release with
/// no hold, until `handovers + 1` grants happened or the cap passed.
pub(super) fn handover(endpoint: &Endpoint, plan: HandoverPlan) -> Result<Handover, String> {
    let grants = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(plan.clients + 1));
    let target = plan.handovers + 1;
    let began = Instant::now();
    let deadline = began + 2 * plan.cap + Duration::from_secs(10);
    let mut threads = Vec::new();
    for c in 0..plan.clients {
        let (grants, held, overlaps, start, endpoint) = (
            grants.clone(),
            held.clone(),
            overlaps.clone(),
            start.clone(),
            endpoint.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let client = peers::connect(
                &endpoint,
                HANDOVER_KEY.0,
                HANDOVER_KEY.1,
                &format!("handover-c{c}"),
                plan.cap,
            );
            start.wait();
            let mut client = client?;
            let until = Instant::now() + plan.cap;
            let mut tenures = Vec::new();
            let (mut errors, mut first_error) = (0u64, None::<String>);
            // Bounded by the shared count and the cap (and 2 × target per client).
            for _ in 0..2 * target {
                if grants.load(Ordering::Relaxed) >= target || Instant::now() >= until {
                    break;
                }
                let wait = mono_ns();
                if let Err(e) = client.acquire(Some(until)) {
                    errors += 1;
                    first_error.get_or_insert(e);
                    break;
                }
                let grant = mono_ns();
                if held.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::Relaxed);
                }
                grants.fetch_add(1, Ordering::Relaxed);
                held.store(false, Ordering::SeqCst);
                let release = mono_ns();
                tenures.push(Tenure {
                    client: c,
                    wait,
                    grant,
                    release,
                });
                if let Err(e) = client.release() {
                    errors += 1;
                    first_error.get_or_insert(e);
                    break;
                }
            }
            Ok::<_, String>((tenures, errors, first_error))
        }));
    }
    start.wait();
    let mut all = Vec::new();
    let mut out = Handover {
        per_client: vec![0; plan.clients],
        ..Handover::default()
    };
    for t in threads {
        // The threads end by themselves at the cap; this only reports a
        // thread that did not.
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !t.is_finished() {
            return Err("a client thread did not stop at the time cap".into());
        }
        let (tenures, errors, first_error) = t
            .join()
            .map_err(|_| "a client thread panicked".to_string())??;
        all.extend(tenures);
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    out.overlaps = overlaps.load(Ordering::Relaxed) as usize;
    all.sort_by_key(|t| t.grant);
    out.capped = (all.len() as u64) < target;
    analyse(&all, target as usize, &mut out);
    Ok(out)
}

/// Hand-over latencies, runs and order of the first `count` tenures.
fn analyse(all: &[Tenure], count: usize, out: &mut Handover) {
    let counted = &all[..all.len().min(count)];
    out.grants = counted.len();
    if let (Some(f), Some(l)) = (counted.first(), counted.last()) {
        out.span = Duration::from_nanos(l.grant - f.grant);
    }
    // Each client's tenures in grant order, to tell who waited when.
    let mut by_client: Vec<Vec<Tenure>> = vec![Vec::new(); out.per_client.len()];
    for t in all {
        by_client[t.client].push(*t);
    }
    let waiting_since = |q: usize, at: u64| -> Option<u64> {
        let ts = &by_client[q];
        let i = ts.partition_point(|t| t.grant <= at);
        ts.get(i).filter(|t| t.wait <= at).map(|t| t.wait)
    };
    let mut lat = Vec::new();
    let mut run = 1;
    out.longest_run = usize::from(!counted.is_empty());
    for t in counted {
        out.per_client[t.client] += 1;
    }
    for w in counted.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.client == b.client {
            out.regrants += 1;
            run += 1;
            out.longest_run = out.longest_run.max(run);
            continue;
        }
        run = 1;
        lat.push(b.grant.saturating_sub(a.release));
        // Who else was waiting when the holder released, and since when.
        let earliest = (0..by_client.len())
            .filter(|&q| q != a.client && q != b.client)
            .filter_map(|q| waiting_since(q, a.release))
            .min();
        if let Some(e) = earliest
            && e < b.wait
        {
            out.overtakes += 1;
            if b.wait - e > 1_000_000 {
                out.overtakes_1ms += 1;
            }
        }
    }
    out.latency = Summary::of(&mut lat);
    out.samples = lat;
}

/// The order of grants checked against the queue the locksmith store recorded.
pub(super) type StoreFifo = locksmith_bench::QueueReplay;

/// Replays the history of the hand-over key that a locksmith server kept.
pub(super) fn store_fifo(url: &str) -> Result<StoreFifo, String> {
    use locksmith_core::Store as _;
    use locksmith_core::store::HistoryFilter;
    let store = locksmith::remote::HttpStore::open(url, None).map_err(|e| e.to_string())?;
    let mut events = store
        .history(&HistoryFilter {
            key: Some(HANDOVER_KEY.0.into()),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    events.reverse();
    Ok(StoreFifo::of(events))
}
