//! The acquire decision, whole: which tenures end and why, then grant, queue
//! (with the place), or refuse (busy, deadlock with its cycle). Also request
//! id replay and which waiters a change may have made grantable.
//!
//! A store loads a [`Snapshot`] inside its write transaction, calls
//! [`decide`], and writes the [`Decision`]. When the answer needs more of the
//! queue than the snapshot holds (the deadlock search), [`decide`] says so
//! with [`Step::Need`]; the store loads it into the snapshot and asks again.
//! Nothing here reads a clock, a file or a database.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::key::Key;
use crate::model::{Fence, HeldLock, Hold, Mode, ReleaseReason, Scope};
use crate::rules::{self, Claim, LimitMismatch};
use crate::store::{AcquireRequest, Blocked, StoreError, Takeover};
use crate::time::{Mono, Now};
use crate::view::lock_info;

/// Longest sleep between two attempts of a waiter that nobody wakes.
pub const REFRESH: Duration = Duration::from_millis(1000);
/// How long a queue place lasts without a refresh: three of [`REFRESH`].
/// A waiter that stops refreshing (its process is stopped or gone) no
/// longer holds others back.
pub const QUEUE_PLACE: Duration = Duration::from_millis(3000);

/// A queued request as loaded for one of its keys (a request of several
/// keys appears once per key).
#[derive(Clone, Debug, PartialEq)]
pub struct Queued {
    /// Its ticket: the arrival number.
    pub seq: i64,
    /// Its priority, higher first.
    pub priority: i32,
    /// The mode asked for.
    pub mode: Mode,
    /// Who waits.
    pub owner: String,
    /// Where it is woken.
    pub wake: String,
    /// The key through which it was found.
    pub key: Key,
    /// The scope asked for.
    pub scope: Scope,
    /// Its place lapses at this instant unless the waiter refreshes it.
    pub alive_until: Mono,
    /// The host proved its waiting process gone (a fact the store gathers).
    pub gone: bool,
}

impl Queued {
    /// What this entry occupies.
    pub fn claim(&self) -> Claim<'_> {
        Claim {
            key: &self.key,
            mode: self.mode,
            scope: self.scope,
        }
    }
    /// Its place in queue order.
    pub fn place(&self) -> (i32, i64) {
        (self.priority, self.seq)
    }
    /// True while the entry counts: refreshed in time and its process not gone.
    pub fn counts(&self, now: Mono) -> bool {
        self.alive_until > now && !self.gone
    }
}

/// What a store loaded for one acquire attempt.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every hold that bears on a key of the request (see
    /// [`rules::overlaps`]), each once, with its liveness fact.
    pub holds: Vec<Hold>,
    /// The queue entries that bear on a key of the request, including
    /// lapsed or gone ones (they are dropped).
    pub queue: Vec<Queued>,
    /// The caller's own ticket as the store has it: its seq and lapse time.
    pub own: Option<(i64, Mono)>,
    /// With a request id: the holds made earlier under it by this owner.
    pub replay: Vec<Hold>,
    /// Every queue entry, once [`Need::Waiting`] was answered.
    pub waiting: Option<Vec<Queued>>,
    /// The holds bearing on any key of `waiting`, each once, once
    /// [`Need::WaiterHolds`] was answered.
    pub waiter_holds: Option<Vec<HeldLock>>,
}

/// More of the store that the decision needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Every queue entry ([`Snapshot::waiting`]).
    Waiting,
    /// The holds bearing on the keys of every queue entry ([`Snapshot::waiter_holds`]).
    WaiterHolds,
}

/// One step of a decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Load this into the snapshot and decide again.
    Need(Need),
    /// The answer.
    Done(Decision),
}

/// A tenure to end, and how to record it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    /// Its key.
    pub key: Key,
    /// Its scope (whom its end may unblock).
    pub scope: Scope,
    /// Its fence (with the key, names the hold).
    pub fence: Fence,
    /// Why it ends.
    pub reason: ReleaseReason,
    /// Further facts for the history (who forced it, and why).
    pub detail: Option<serde_json::Value>,
}

/// What the store writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Tenures to end first, in order.
    pub end: Vec<Ending>,
    /// Queue entries to remove (lapsed, gone, granted, refused).
    pub drop: Vec<i64>,
    /// Then this.
    pub outcome: Outcome,
}

/// The answer to an acquire attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A repeat of a live grant's request id: answer with the holds in
    /// [`Snapshot::replay`].
    Replay,
    /// Grant: issue fences and write one hold per key.
    Grant,
    /// Not now, and the request does not wait.
    Busy(Blocked),
    /// Not now: keep the ticket `seq` (refreshing its place) or, with
    /// `None`, join the queue at the back.
    Queue {
        /// The caller's ticket to keep.
        seq: Option<i64>,
        /// What is in the way, with the 1-based place filled in.
        blocked: Blocked,
    },
    /// Waiting would close a cycle: refuse, and record it.
    Deadlock {
        /// The key asked for (the first of the request).
        key: Key,
        /// The owners in the cycle, first and last the requester.
        cycle: Vec<String>,
    },
}

/// Settings of the store that the rules read.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// A lock with no sign of life for this long is stale.
    pub stale_after: Duration,
}

/// Decides one acquire attempt. `queueing` is true when a blocked request
/// waits (joins or keeps its place in the queue).
pub fn decide(
    snap: &Snapshot,
    req: &AcquireRequest,
    queueing: bool,
    now: Now,
    policy: Policy,
) -> Result<Step, StoreError> {
    let mono = now.mono;
    let mut end = Vec::new();
    let mut drop = Vec::new();
    // A place that lapsed (its waiter stopped refreshing it, so others no
    // longer saw it and may have passed) is given up: the request queues
    // again at the back, visibly, instead of waiting on a place nobody sees.
    let my_seq = match snap.own {
        Some((seq, alive_until)) if alive_until > mono => Some(seq),
        Some((seq, _)) => {
            drop.push(seq);
            None
        }
        None => None,
    };
    if let Some(rid) = &req.request_id
        && replayable(&snap.replay, req, rid, mono)?
    {
        return Ok(Step::Done(Decision {
            end,
            drop,
            outcome: Outcome::Replay,
        }));
    }
    // Tenures over by themselves, or whose process is gone, are freed.
    let mut live: Vec<&Hold> = Vec::new();
    for h in &snap.holds {
        match rules::ended(&h.lock, mono) {
            Some(reason) => end.push(ending(&h.lock, reason, None)),
            None if h.alive == Some(false) => {
                end.push(ending(&h.lock, ReleaseReason::DeadProcess, None));
            }
            None => live.push(h),
        }
    }
    let mut blockers = hold_blockers(req, &live)?;
    // The queue entries in play: those that still count, in queue order.
    let mut touching: Vec<&Queued> = Vec::new();
    for q in &snap.queue {
        if !q.counts(mono) {
            if !drop.contains(&q.seq) {
                drop.push(q.seq);
            }
        } else if Some(q.seq) != my_seq {
            touching.push(q);
        }
    }
    touching.sort_by(|a, b| rules::queue_order(a.place(), b.place()));
    touching.dedup_by(|a, b| a.seq == b.seq && a.key == b.key);
    let me = (req.priority, my_seq.unwrap_or(i64::MAX));
    let forced = matches!(req.takeover, Takeover::Force { .. });
    match &req.takeover {
        Takeover::Force { reason } => {
            for b in blockers.drain(..) {
                let detail = json!({ "reason": reason, "by": req.holder.owner });
                end.push(ending(&b.lock, ReleaseReason::Forced, Some(detail)));
            }
        }
        Takeover::StealStale if !blockers.is_empty() => {
            let all_stale = blockers.iter().all(|b| {
                rules::health(&b.lock, mono, policy.stale_after, b.alive)
                    != crate::model::Health::Healthy
            });
            // Steal only when the request is then granted in this same
            // transaction: earlier waiters may still be in its way.
            let standing: Vec<&Hold> = live
                .iter()
                .copied()
                .filter(|h| !blockers.iter().any(|b| same(b, h)))
                .collect();
            if all_stale && waiters_ahead(req, &standing, &touching, me)?.is_empty() {
                for b in blockers.drain(..) {
                    let detail = json!({ "by": req.holder.owner });
                    end.push(ending(&b.lock, ReleaseReason::Stolen, Some(detail)));
                    live.retain(|h| !same(h, b));
                }
            }
        }
        _ => {}
    }
    let ahead = if forced {
        Vec::new()
    } else {
        waiters_ahead(req, &live, &touching, me)?
    };
    if blockers.is_empty() && ahead.is_empty() {
        drop.extend(my_seq);
        return Ok(Step::Done(Decision {
            end,
            drop,
            outcome: Outcome::Grant,
        }));
    }
    let retry_after = blockers
        .iter()
        .filter_map(|b| rules::ends_at(&b.lock))
        .min()
        .map(|at| at.since(mono));
    let mut blocked = Blocked {
        holders: blockers
            .iter()
            .map(|b| lock_info(&b.lock, b.alive, now, policy.stale_after))
            .collect(),
        waiters_ahead: ahead.len(),
        position: None,
        retry_after,
        watch: blockers
            .iter()
            .filter_map(|b| b.lock.bind.as_ref()?.life_file.clone())
            .collect(),
    };
    if !queueing {
        return Ok(Step::Done(Decision {
            end,
            drop,
            outcome: Outcome::Busy(blocked),
        }));
    }
    let me_owner = req.holder.owner.as_str();
    let mut waits_for: HashSet<String> = blockers
        .iter()
        .map(|b| b.lock.holder.owner.clone())
        .collect();
    waits_for.extend(ahead.iter().map(|q| q.owner.clone()));
    // A cycle through this request needs one of the owners it waits for to
    // be waiting itself. Check when the request joins the queue, and on a
    // later attempt only when that holds: a cycle can also close after the
    // join (a request of higher priority queues ahead of a waiter, or is
    // granted a lock a waiter wants), but a wake-up on a busy key whose
    // holders wait for nothing costs no graph walk.
    let Some(waiting) = &snap.waiting else {
        return Ok(Step::Need(Need::Waiting));
    };
    let waiting: Vec<&Queued> = waiting.iter().filter(|q| q.counts(mono)).collect();
    let check = my_seq.is_none()
        || waiting
            .iter()
            .any(|q| q.owner != me_owner && waits_for.contains(&q.owner));
    if check {
        let Some(holds) = &snap.waiter_holds else {
            return Ok(Step::Need(Need::WaiterHolds));
        };
        if let Some(cycle) = find_deadlock(me_owner, waits_for, my_seq, &waiting, holds, mono) {
            drop.extend(my_seq);
            return Ok(Step::Done(Decision {
                end,
                drop,
                outcome: Outcome::Deadlock {
                    key: req.keys[0].clone(),
                    cycle,
                },
            }));
        }
    }
    let places: HashSet<i64> = touching
        .iter()
        .filter(|q| rules::is_ahead(q.place(), me))
        .map(|q| q.seq)
        .collect();
    blocked.position = Some(places.len() + 1);
    Ok(Step::Done(Decision {
        end,
        drop,
        outcome: Outcome::Queue {
            seq: my_seq,
            blocked,
        },
    }))
}

fn same(a: &Hold, b: &Hold) -> bool {
    a.lock.fence == b.lock.fence && a.lock.key == b.lock.key
}

fn ending(lock: &HeldLock, reason: ReleaseReason, detail: Option<serde_json::Value>) -> Ending {
    Ending {
        key: lock.key.clone(),
        scope: lock.scope,
        fence: lock.fence,
        reason,
        detail,
    }
}

fn claim(key: &Key, mode: Mode, scope: Scope) -> Claim<'_> {
    Claim { key, mode, scope }
}

/// True when the holds made earlier under request id `rid` are a live grant
/// of the same request (keys, mode, scope, owner, lease): the request is
/// answered with that grant again. The same id with another request is
/// refused. A grant that has ended (lease or `max_hold` run out, holder
/// dead) is not answered as if it were live: the request is then served anew.
fn replayable(
    rows: &[Hold],
    req: &AcquireRequest,
    rid: &str,
    now: Mono,
) -> Result<bool, StoreError> {
    if rows.is_empty()
        || rows
            .iter()
            .any(|r| rules::ended(&r.lock, now).is_some() || r.alive == Some(false))
    {
        return Ok(false);
    }
    let mut held: Vec<&Key> = rows.iter().map(|r| &r.lock.key).collect();
    let mut asked: Vec<&Key> = req.keys.iter().collect();
    held.sort();
    asked.sort();
    if held != asked {
        return Err(StoreError::Invalid(format!(
            "request id {rid} was already used by {} for other keys; use a new request id",
            req.holder.owner
        )));
    }
    let first = &rows[0].lock;
    if first.mode != req.mode
        || first.scope != req.scope
        || first.holder.owner != req.holder.owner
        || first.ttl != req.ttl
    {
        return Err(StoreError::Invalid(format!(
            "request id {rid} was already used for another request (its owner, mode, scope or lease differ); a retry repeats the same request, anything else needs a new request id"
        )));
    }
    Ok(true)
}

/// Holds that stop `req` from being granted, each once.
fn hold_blockers<'h>(
    req: &AcquireRequest,
    holds: &[&'h Hold],
) -> Result<Vec<&'h Hold>, LimitMismatch> {
    let mut out: Vec<&Hold> = Vec::new();
    for key in &req.keys {
        for b in rules::blockers(&claim(key, req.mode, req.scope), holds, |h| h.lock.claim())? {
            if !out.iter().any(|o| same(o, b)) {
                out.push(b);
            }
        }
    }
    Ok(out)
}

/// A claim in the way of a request: a held lock or an earlier waiter.
enum InWay<'h, 'q> {
    Held(&'h HeldLock),
    Queued(&'q Queued),
}

/// The earlier waiters in the way of `c`, counted together with the live
/// holds: a semaphore slot an earlier waiter is due is not free for `c`.
fn queued_in_way<'q>(
    c: &Claim<'_>,
    holds: &[&HeldLock],
    earlier: &[&'q Queued],
) -> Result<Vec<&'q Queued>, LimitMismatch> {
    let both: Vec<InWay<'_, 'q>> = holds
        .iter()
        .map(|h| InWay::Held(h))
        .chain(earlier.iter().map(|q| InWay::Queued(q)))
        .collect();
    let in_way = rules::blockers(c, &both, |x| match x {
        InWay::Held(h) => h.claim(),
        InWay::Queued(q) => q.claim(),
    })?;
    Ok(in_way
        .into_iter()
        .filter_map(|x| match x {
            InWay::Queued(q) => Some(*q),
            InWay::Held(_) => None,
        })
        .collect())
}

/// Earlier queued requests that `req` may not pass, each once.
fn waiters_ahead<'q>(
    req: &AcquireRequest,
    holds: &[&Hold],
    touching: &[&'q Queued],
    me: (i32, i64),
) -> Result<Vec<&'q Queued>, LimitMismatch> {
    let held: Vec<&HeldLock> = holds.iter().map(|h| &h.lock).collect();
    let mut ahead: Vec<&Queued> = Vec::new();
    for key in &req.keys {
        let c = claim(key, req.mode, req.scope);
        let earlier: Vec<&Queued> = touching
            .iter()
            .copied()
            .filter(|q| rules::overlaps(&q.claim(), &c) && rules::is_ahead(q.place(), me))
            .collect();
        for q in queued_in_way(&c, &held, &earlier)? {
            if !ahead.iter().any(|a| a.seq == q.seq) {
                ahead.push(q);
            }
        }
    }
    Ok(ahead)
}

/// Builds the waits-for graph of owners from the live queue and looks for a
/// path from the requester back to itself.
fn find_deadlock(
    me: &str,
    my_edges: HashSet<String>,
    my_seq: Option<i64>,
    entries: &[&Queued],
    holds: &[HeldLock],
    now: Mono,
) -> Option<Vec<String>> {
    use std::collections::HashMap;
    let standing: Vec<&HeldLock> = holds
        .iter()
        .filter(|h| rules::ended(h, now).is_none())
        .collect();
    let mut graph: HashMap<String, HashSet<String>> = HashMap::new();
    graph.insert(me.to_string(), my_edges);
    for e in entries {
        if Some(e.seq) == my_seq || e.owner == me {
            continue;
        }
        let c = e.claim();
        let edges = graph.entry(e.owner.clone()).or_default();
        for b in rules::blockers(&c, &standing, |h| h.claim()).unwrap_or_default() {
            edges.insert(b.holder.owner.clone());
        }
        let earlier: Vec<&Queued> = entries
            .iter()
            .copied()
            .filter(|q| {
                q.seq != e.seq
                    && rules::is_ahead(q.place(), e.place())
                    && rules::overlaps(&q.claim(), &c)
            })
            .collect();
        for q in queued_in_way(&c, &standing, &earlier).unwrap_or_default() {
            edges.insert(q.owner.clone());
        }
    }
    rules::find_cycle(me, |o| {
        graph
            .get(o)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    })
}

/// The waiters that a change on some key may have made grantable, from the
/// queue entries bearing on that key (`entries`, as loaded) and the holds
/// bearing on their keys: each entry, in queue order, with no live holder
/// and no earlier entry in its way. Returns their seqs with their wake
/// addresses, each entry once, and the entries that no longer count (to
/// drop). A wrong guess costs the waiter one attempt.
pub fn grantable(
    entries: &[Queued],
    holds: &[HeldLock],
    now: Mono,
) -> (Vec<(i64, String)>, Vec<i64>) {
    let mut drop = Vec::new();
    let mut live: Vec<&Queued> = Vec::new();
    for q in entries {
        if q.counts(now) {
            live.push(q);
        } else if !drop.contains(&q.seq) {
            drop.push(q.seq);
        }
    }
    live.sort_by(|a, b| rules::queue_order(a.place(), b.place()));
    live.dedup_by(|a, b| a.seq == b.seq && a.key == b.key);
    let standing: Vec<&HeldLock> = holds
        .iter()
        .filter(|h| rules::ended(h, now).is_none())
        .collect();
    let mut found: Vec<(i64, String)> = Vec::new();
    for (i, e) in live.iter().enumerate() {
        let c = e.claim();
        let held = rules::blockers(&c, &standing, |h| h.claim()).unwrap_or_default();
        let queued = rules::blockers(&c, &live[..i], |q| q.claim()).unwrap_or_default();
        if held.is_empty() && queued.is_empty() && !found.iter().any(|(s, _)| *s == e.seq) {
            found.push((e.seq, e.wake.clone()));
        }
    }
    (found, drop)
}

/// The grant answered again for a replayed request id: the holds loaded in
/// [`Snapshot::replay`], in the request's key order.
pub fn replayed_grant(rows: &[Hold], req: &AcquireRequest, now: Now) -> crate::store::Grant {
    let first = &rows[0];
    crate::store::Grant {
        grant: first.lock.grant,
        handle: crate::model::LeaseHandle::from_parts(first.lock.grant, &first.secret),
        owner: first.lock.holder.owner.clone(),
        locks: req
            .keys
            .iter()
            .filter_map(|k| rows.iter().find(|r| &r.lock.key == k))
            .map(|r| crate::store::GrantedLock {
                key: r.lock.key.clone(),
                fence: r.lock.fence,
                expires_at: r.lock.expires.map(|e| crate::view::wall_at(now, e)),
            })
            .collect(),
        ttl: first.lock.ttl,
        replayed: true,
    }
}
