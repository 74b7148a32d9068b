//! The acquire transaction: load the snapshot the rules ask for, call
//! [`locksmith_core::decide`], write the decision. Also whom to wake after a
//! change. No lock rule lives here.

use std::collections::HashSet;

use locksmith_core::decide::{self, Decision, Need, Outcome, Queued, Snapshot, Step};
use locksmith_core::store::{GrantedLock, Ticket};
use locksmith_core::{
    AcquireRequest, Attempt, EventKind, Fence, Grant, HeldLock, Hold, Key, Scope, StoreError,
};
use rusqlite::{Transaction, params};
use serde_json::json;

use crate::Ctx;
use crate::open::map_err;
use crate::queue;
use crate::rows::{self, NewEvent, apply_endings, holds_touching, observe, record};

/// The holds bearing on each of `claims`, each once.
fn holds_of(
    tx: &Transaction<'_>,
    claims: impl IntoIterator<Item = (Key, Scope)>,
) -> Result<Vec<Hold>, StoreError> {
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
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    ticket: Option<&Ticket>,
) -> Result<(Snapshot, Decision), StoreError> {
    let mut snap = Snapshot::default();
    if let Some(seq) = ticket.and_then(|t| t.seq) {
        snap.own = queue::own(tx, seq)?;
    }
    if let Some(rid) = &req.request_id {
        let rows = rows::load_holds(
            tx,
            "request_id = ?1 AND owner = ?2 ORDER BY fence",
            params![rid, req.holder.owner],
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
            Step::Need(Need::Waiting) => snap.waiting = Some(queue::all(tx, ctx)?),
            Step::Need(Need::WaiterHolds) => {
                let waiting = snap.waiting.as_deref().unwrap_or_default();
                let claims = waiting.iter().map(|q| (q.key.clone(), q.scope));
                let holds = holds_of(tx, claims)?;
                snap.waiter_holds = Some(holds.into_iter().map(|h| h.lock).collect());
            }
            Step::Done(d) => return Ok((snap, d)),
        }
    }
}

/// One acquire attempt inside the caller's transaction. The inner result
/// carries a refusal that must still be committed (its history event).
pub(crate) fn run(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    mut ticket: Option<&mut Ticket>,
) -> Result<Result<Attempt, StoreError>, StoreError> {
    let now = ctx.now;
    let (snap, decision) = decide(tx, ctx, req, ticket.as_deref())?;
    // How long a queued request waited, kept with its grant for `stats`;
    // read before its queue entry goes.
    let waited = match (&decision.outcome, snap.own) {
        (Outcome::Grant, Some((seq, _))) => {
            queue::since(tx, seq)?.map(|since| now.mono.since(since))
        }
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

/// Issues fences, writes the holds and their events.
fn grant(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    waited: Option<std::time::Duration>,
) -> Result<Grant, StoreError> {
    let detail = waited.map(|w| serde_json::json!({ "waited_ms": w.as_millis() as u64 }));
    let now = ctx.now;
    let n = req.keys.len() as i64;
    // Fences follow the wall clock in microseconds when it is ahead of the
    // counter, so a crash that loses the last commits cannot hand out a
    // number again: the clock has moved past every number issued before.
    let last: i64 = tx
        .prepare_cached(
            "UPDATE meta SET v = max(v + ?2, ?1 + ?2 - 1) WHERE k = 'fence' RETURNING v",
        )
        .map_err(map_err)?
        .query_row(params![now.wall.micros() as i64, n], |r| r.get(0))
        .map_err(map_err)?;
    let first = last - n + 1;
    let handle = locksmith_host::new_handle(first);
    let secret = handle.secret().to_string();
    let expires = req.ttl.map(|t| now.mono.plus(t));
    let h = &req.holder;
    let metadata = h.metadata.as_ref().map(|m| m.to_string());
    let mut locks = Vec::with_capacity(req.keys.len());
    for (i, key) in req.keys.iter().enumerate() {
        let fence = first + i as i64;
        tx.prepare_cached(
            "INSERT INTO holds (grant_id, secret, key, mode, slots, scope, fence, owner, task,
                metadata, hostname, boot_id, pid, pid_start, acquired_mono, acquired_wall,
                seen_mono, expires_mono, ttl_ms, max_hold_ms, request_id, bind_pid, bind_start,
                bind_file, grant_keys, stale_after_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                ?15, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
        )
        .map_err(map_err)?
        .execute(params![
            first,
            secret,
            key.as_str(),
            req.mode.name(),
            req.mode.limit(),
            req.scope.name(),
            fence,
            h.owner,
            h.task,
            metadata,
            h.hostname,
            h.boot_id,
            h.pid,
            h.pid_start.map(|s| s as i64),
            now.mono.0 as i64,
            now.wall.0 as i64,
            expires.map(|e| e.0 as i64),
            req.ttl.map(|t| t.as_millis() as i64),
            req.max_hold.map(|t| t.as_millis() as i64),
            req.request_id,
            req.bind.as_ref().map(|b| b.pid),
            req.bind.as_ref().and_then(|b| b.start).map(|s| s as i64),
            req.bind.as_ref().and_then(|b| b.life_file.clone()),
            n,
            ctx.opts.stale_after.as_millis() as i64,
        ])
        .map_err(map_err)?;
        record(
            tx,
            now,
            NewEvent {
                key: key.as_str(),
                kind: EventKind::Acquired,
                owner: &h.owner,
                task: h.task.as_deref(),
                fence: Some(Fence(fence as u64)),
                grant: Some(first),
                reason: None,
                detail: detail.clone(),
            },
        )?;
        locks.push(GrantedLock {
            key: key.clone(),
            fence: Fence(fence as u64),
            expires_at: expires.map(|e| locksmith_core::view::wall_at(now, e)),
        });
    }
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
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    keys: impl IntoIterator<Item = (Key, Scope)>,
) -> Result<Vec<String>, StoreError> {
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
        let holds: Vec<HeldLock> = holds_of(tx, entries.iter().map(|e| (e.key.clone(), e.scope)))?
            .into_iter()
            .map(|h| h.lock)
            .collect();
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
