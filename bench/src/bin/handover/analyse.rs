//! The parent's reading of the runs: latencies, fairness, and the store's own history replayed for FIFO.

use super::*;

/// What one contender measured.
pub(super) struct Report {
    pub(super) kind: Kind,
    pub(super) grants: usize,
    pub(super) span_ns: u64,
    pub(super) handover: Summary,
    /// The releaser's release call, for measured hand-overs.
    pub(super) release_call: Summary,
    /// From the release call's return to the next grant.
    pub(super) after_release: Summary,
    pub(super) overlaps: usize,
    pub(super) longest_run: usize,
    pub(super) regrants: usize,
    pub(super) overtakes: usize,
    pub(super) overtakes_1ms: usize,
    pub(super) per_proc: Vec<usize>,
    /// Blocked attempts of the next holder: mean over hand-overs ≤ 2 ms and
    /// over slower ones, with their counts (core wait loop only).
    pub(super) attempts: Option<[(usize, f64); 2]>,
    /// Release return → woken, woken → granted attempt starts, granted
    /// attempt (core variant only; hand-overs where the next holder was woken).
    pub(super) steps: Option<[Summary; 3]>,
    /// Queue-order check on the store's own history (locksmith only).
    pub(super) store_fifo: Option<StoreFifo>,
    pub(super) notes: Vec<String>,
}

/// Grants checked against the queue order the store itself recorded.
pub(super) type StoreFifo = locksmith_bench::QueueReplay;

/// Replays the store's history of `key` for its queue order.
pub(super) fn store_fifo(db: &Path, key: &str) -> Result<StoreFifo, String> {
    use locksmith_core::Store;
    use locksmith_core::store::HistoryFilter;
    let store =
        locksmith_sqlite::SqliteStore::open(db, Default::default()).map_err(|e| e.to_string())?;
    let mut events = store
        .history(&HistoryFilter {
            key: Some(key.into()),
            limit: 10_000_000,
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    events.reverse();
    Ok(StoreFifo::of(events))
}

/// Whether process `q` was waiting at instant `t`: its first tenure granted
/// after `t` had started waiting by `t`.
pub(super) fn waiting_at(by_proc: &[Vec<Rec>], q: usize, t: u64) -> bool {
    let recs = &by_proc[q];
    let i = recs.partition_point(|r| r.grant <= t);
    recs.get(i).is_some_and(|r| r.wait <= t)
}

pub(super) fn analyse(
    kind: Kind,
    mut recs: Vec<Rec>,
    procs: usize,
    store_fifo: Option<StoreFifo>,
    notes: Vec<String>,
) -> Report {
    recs.sort_by_key(|r| r.grant);
    let mut by_proc: Vec<Vec<Rec>> = vec![Vec::new(); procs];
    for r in &recs {
        by_proc[r.proc].push(*r);
    }
    let (mut lat, mut call, mut after) = (Vec::new(), Vec::new(), Vec::new());
    let mut attempts = [(0usize, 0u64); 2];
    let (mut to_woke, mut to_attempt, mut in_attempt) = (Vec::new(), Vec::new(), Vec::new());
    let (mut overlaps, mut longest, mut run, mut regrants) = (0, 0, 0, 0);
    let (mut overtakes, mut overtakes_1ms) = (0, 0);
    for (i, r) in recs.iter().enumerate() {
        if i == 0 {
            run = 1;
        } else {
            let prev = &recs[i - 1];
            if r.grant < prev.release {
                overlaps += 1;
            }
            if r.proc != prev.proc && r.wait <= prev.release {
                lat.push(r.grant.saturating_sub(prev.release));
                call.push(prev.released.saturating_sub(prev.release));
                after.push(r.grant.saturating_sub(prev.released));
                let slow = (r.grant.saturating_sub(prev.release) > 2_000_000) as usize;
                attempts[slow].0 += 1;
                attempts[slow].1 += r.blocked;
                if r.woke >= prev.released && r.attempt >= r.woke {
                    to_woke.push(r.woke - prev.released);
                    to_attempt.push(r.attempt - r.woke);
                    in_attempt.push(r.grant.saturating_sub(r.attempt));
                }
            }
            let others_wait =
                (0..procs).any(|q| q != r.proc && waiting_at(&by_proc, q, prev.release));
            if r.proc == prev.proc && others_wait {
                regrants += 1;
                run += 1;
            } else {
                run = 1;
            }
        }
        longest = longest.max(run);
        // An overtake: another process began waiting before this one and was
        // still waiting when this one was granted.
        for (q, qrecs) in by_proc.iter().enumerate() {
            if q == r.proc {
                continue;
            }
            let j = qrecs.partition_point(|x| x.grant <= r.grant);
            if let Some(x) = qrecs.get(j) {
                if x.wait < r.wait {
                    overtakes += 1;
                }
                if x.wait + 1_000_000 < r.wait {
                    overtakes_1ms += 1;
                }
            }
        }
    }
    let span_ns = match (recs.first(), recs.last()) {
        (Some(a), Some(b)) => b.release - a.grant,
        _ => 0,
    };
    Report {
        kind,
        grants: recs.len(),
        span_ns,
        handover: Summary::of(&mut lat),
        release_call: Summary::of(&mut call),
        after_release: Summary::of(&mut after),
        overlaps,
        longest_run: longest,
        regrants,
        overtakes,
        overtakes_1ms,
        per_proc: by_proc.iter().map(Vec::len).collect(),
        attempts: (kind == Kind::Core)
            .then(|| attempts.map(|(n, b)| (n, b as f64 / n.max(1) as f64))),
        steps: (kind == Kind::Core && !to_woke.is_empty()).then(|| {
            [
                Summary::of(&mut to_woke),
                Summary::of(&mut to_attempt),
                Summary::of(&mut in_attempt),
            ]
        }),
        store_fifo,
        notes,
    }
}
