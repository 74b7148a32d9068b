//! The acquire transaction: load the snapshot the rules ask for, call
//! [`locksmith_core::decide`], write the decision. Also whom to wake after a
//! change. No lock rule lives here. The caller holds the key locks of the
//! request (see [`crate::conn::Tx::lock`]).

use std::collections::HashSet;

use locksmith_core::decide::{self, Decision, Need, Outcome, Queued, Snapshot, Step};
use locksmith_core::store::{GrantedLock, Ticket};
use locksmith_core::{
    AcquireRequest, Attempt, EventKind, Fence, Grant, HeldLock, Hold, Key, Scope, StoreError,
};
use serde_json::json;

use crate::Ctx;
use crate::conn::{Fail, Tx};
use crate::queue;
use crate::rows::{self, NewEvent, apply_endings, holds_touching, record};
use locksmith_host::life::observe;

/// The holds bearing on each of `claims`, each once.
fn holds_of(
    tx: &mut Tx<'_>,
    claims: impl IntoIterator<Item = (Key, Scope)>,
) -> Result<Vec<Hold>, Fail> {
    let mut seen: HashSet<(Key, Fence)> = HashSet::new();
    let mut done: HashSet<(Key, Scope)> = HashSet::new();
    let mut out = Vec::new();
    for (key, scope) in claims {
        if !done.insert((key.clone(), scope)) {
            continue;
        }
        for h in holds_touching(tx, &key, scope)? {
            if seen.insert((h.lock.key.clone(), h.lock.fence)) {
                out.push(h);
            }
        }
    }
    Ok(out)
}

/// Loads what the rules need for `req`, asking again until they decide.
fn decide(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    ticket: Option<&Ticket>,
) -> Result<(Snapshot, Decision, Option<locksmith_core::Mono>), Fail> {
    let mut snap = Snapshot::default();
    let mut since = None;
    if let Some(seq) = ticket.and_then(|t| t.seq)
        && let Some((alive_until, joined)) = queue::own(tx, seq)?
    {
        snap.own = Some((seq, alive_until));
        since = Some(joined);
    }
    if let Some(rid) = &req.request_id {
        let rows = rows::load_holds(
            tx,
            "request_id = $1 AND owner = $2 ORDER BY fence",
            &[rid, &req.holder.owner],
        )?;
        snap.replay = observe(rows, ctx.host);
    }
    let claims = req.keys.iter().map(|k| (k.clone(), req.scope));
    snap.holds = observe(holds_of(tx, claims)?, ctx.host);
    for key in &req.keys {
        queue::touching(tx, ctx, key, req.scope, &mut snap.queue)?;
    }
    loop {
        match decide::decide(&snap, req, ticket.is_some(), ctx.now, ctx.policy())? {
            Step::Need(Need::Waiting) => {
                tx.lock_graph(ctx.ns)?;
                snap.waiting = Some(queue::all(tx, ctx)?);
            }
            Step::Need(Need::WaiterHolds) => {
                let waiting = snap.waiting.as_deref().unwrap_or_default();
                let claims: Vec<_> = waiting.iter().map(|q| (q.key.clone(), q.scope)).collect();
                let holds = holds_of(tx, claims)?;
                snap.waiter_holds = Some(holds.into_iter().map(|h| h.lock).collect());
            }
            Step::Done(d) => return Ok((snap, d, since)),
        }
    }
}

/// One acquire attempt inside the caller's transaction. The inner result
/// carries a refusal that must still be committed (its history event).
pub(crate) fn run(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    mut ticket: Option<&mut Ticket>,
) -> Result<Result<Attempt, StoreError>, Fail> {
    let now = ctx.now;
    let (snap, decision, since) = decide(tx, ctx, req, ticket.as_deref())?;
    // How long a queued request waited, kept with its grant for `stats`.
    let waited = match decision.outcome {
        Outcome::Grant => since.map(|s| now.mono.since(s)),
        _ => None,
    };
    apply_endings(tx, now, &snap.holds, decision.end)?;
    for seq in decision.drop {
        queue::drop_entry(tx, seq)?;
    }
    match decision.outcome {
        Outcome::Replay => Ok(Ok(Attempt::Granted(decide::replayed_grant(
            &snap.replay,
            req,
            now,
        )))),
        Outcome::Grant => Ok(Ok(Attempt::Granted(grant(tx, ctx, req, waited)?))),
        Outcome::Busy(blocked) => Ok(Ok(Attempt::Blocked(blocked))),
        Outcome::Queue { seq, blocked } => {
            let ticket = ticket
                .as_deref_mut()
                .expect("the rules queue only a request that waits");
            let alive_until = now.mono.plus(decide::QUEUE_PLACE);
            let seq = match seq {
                Some(seq) => {
                    queue::refresh(tx, seq, alive_until)?;
                    seq
                }
                None => queue::enqueue(tx, ctx, req, &ticket.wake, alive_until)?,
            };
            ticket.seq = Some(seq);
            Ok(Ok(Attempt::Blocked(blocked)))
        }
        Outcome::Deadlock { key, cycle } => {
            if let Some(t) = ticket {
                t.seq = None;
            }
            record(
                tx,
                now,
                NewEvent {
                    key: key.as_str(),
                    kind: EventKind::DeadlockRefused,
                    owner: &req.holder.owner,
                    task: req.holder.task.as_deref(),
                    fence: None,
                    grant: None,
                    reason: None,
                    detail: Some(json!({ "cycle": cycle })),
                },
            )?;
            Ok(Err(StoreError::Deadlock { key, cycle }))
        }
    }
}

/// Writes the holds and their events, in one statement.
///
/// The fences come from the store's sequence, drawn (with the key locks, in
/// [`crate::conn::Tx::lock`]) while this transaction holds the locks of
/// every key it conflicts with: a conflicting grant committed before drew
/// its numbers before ours, and one that comes after cannot draw until we
/// commit.
fn grant(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    waited: Option<std::time::Duration>,
) -> Result<Grant, Fail> {
    let detail = waited.map(|w| json!({ "waited_ms": w.as_millis() as u64 }).to_string());
    let now = ctx.now;
    let n = req.keys.len() as i64;
    let fences: Vec<i64> = ctx.fences.iter().copied().take(req.keys.len()).collect();
    let Some(&first) = fences.first().filter(|_| fences.len() == req.keys.len()) else {
        return Err(Fail::Store(StoreError::backend(
            "no fences were drawn for this grant",
        )));
    };
    let handle = locksmith_host::new_handle(first);
    let secret = handle.secret().to_string();
    let expires = req.ttl.map(|t| now.mono.plus(t));
    let h = &req.holder;
    let metadata = h.metadata.as_ref().map(|m| m.to_string());
    let keys: Vec<&str> = req.keys.iter().map(|k| k.as_str()).collect();
    tx.exec(
        "WITH g AS (SELECT * FROM unnest($3::text[], $7::int8[]) AS g(key, fence)),
         h AS (INSERT INTO holds (grant_id, secret, key, mode, slots, scope, fence, owner, task,
                metadata, hostname, boot_id, pid, pid_start, acquired_mono, acquired_wall,
                seen_mono, expires_mono, ttl_ms, max_hold_ms, request_id, bind_pid, bind_start,
                bind_file, grant_keys, stale_after_ms)
             SELECT $1, $2, g.key, $4, $5, $6, g.fence, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                $15, $17, $18, $19, $20, $21, $22, $23, $24, $25 FROM g)
         INSERT INTO events (at_wall, key, kind, owner, task, fence, grant_id, reason, detail)
         SELECT $16, g.key, 'acquired', $8, $9, g.fence, $1, NULL, $26 FROM g",
        &[
            &first,
            &secret,
            &keys,
            &req.mode.name(),
            &req.mode.limit().map(i64::from),
            &req.scope.name(),
            &fences,
            &h.owner,
            &h.task,
            &metadata,
            &h.hostname,
            &h.boot_id,
            &(h.pid as i64),
            &h.pid_start.map(|s| s as i64),
            &(now.mono.0 as i64),
            &(now.wall.0 as i64),
            &expires.map(|e| e.0 as i64),
            &req.ttl.map(|t| t.as_millis() as i64),
            &req.max_hold.map(|t| t.as_millis() as i64),
            &req.request_id,
            &req.bind.as_ref().map(|b| b.pid as i64),
            &req.bind.as_ref().and_then(|b| b.start).map(|s| s as i64),
            &req.bind.as_ref().and_then(|b| b.life_file.clone()),
            &(n as i32),
            &(ctx.opts.stale_after.as_millis() as i64),
            &detail,
        ],
    )?;
    let locks = req
        .keys
        .iter()
        .zip(&fences)
        .map(|(key, fence)| GrantedLock {
            key: key.clone(),
            fence: Fence(*fence as u64),
            expires_at: expires.map(|e| locksmith_core::view::wall_at(now, e)),
        })
        .collect();
    Ok(Grant {
        grant: first,
        handle,
        owner: h.owner.clone(),
        locks,
        ttl: req.ttl,
        replayed: false,
    })
}

/// The wake addresses of queued requests that a change on each of `keys`
/// may have made grantable (the rules decide which); entries that no longer
/// count are removed on the way.
pub(crate) fn wake_list(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    keys: impl IntoIterator<Item = (Key, Scope)>,
) -> Result<Vec<String>, Fail> {
    let mut wakes = Vec::new();
    let mut done = HashSet::new();
    for (key, scope) in keys {
        if !done.insert((key.clone(), scope)) {
            continue;
        }
        let mut entries: Vec<Queued> = Vec::new();
        queue::touching(tx, ctx, &key, scope, &mut entries)?;
        if entries.is_empty() {
            continue;
        }
        let claims: Vec<_> = entries.iter().map(|e| (e.key.clone(), e.scope)).collect();
        let holds: Vec<HeldLock> = holds_of(tx, claims)?.into_iter().map(|h| h.lock).collect();
        let (found, drop) = decide::grantable(&entries, &holds, ctx.now.mono);
        for seq in drop {
            queue::drop_entry(tx, seq)?;
        }
        for w in found {
            if !wakes.contains(&w) {
                wakes.push(w);
            }
        }
    }
    Ok(wakes)
}
