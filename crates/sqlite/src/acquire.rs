//! The acquire transaction: free what has ended, apply the takeover
//! strategy, check holders and earlier waiters with the pure rules, then grant
//! or queue. Also leaving the queue, and finding whom to wake after a change.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use locksmith_core::model::MAX_METADATA_BYTES;
use locksmith_core::rules::{self, Claim};
use locksmith_core::store::{Blocked, GrantedLock, LeaveReason, Waiter};
use locksmith_core::wait::REFRESH;
use locksmith_core::{
    AcquireRequest, Attempt, EventKind, Fence, Grant, Health, Key, LeaseHandle, Mode,
    ReleaseReason, Scope, StoreError, Takeover, sys,
};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::json;

use crate::Ctx;
use crate::open::map_err;
use crate::rows::{self, HoldRow, NewEvent, end_hold, holds_touching, lock_info, record};

/// Most keys one request may name.
pub const MAX_KEYS: usize = 64;
const MAX_TEXT: usize = 256;

/// Longest lease or `max_hold` accepted: deadlines stay far inside the
/// store's 63-bit microsecond clock.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A lease must be at least 100 ms and at most [`MAX_DURATION`].
pub(crate) fn check_ttl(ttl: Option<Duration>) -> Result<(), StoreError> {
    match ttl {
        Some(t) if t.as_millis() < 100 => {
            Err(StoreError::Invalid("--ttl must be at least 100ms".into()))
        }
        Some(t) if t > MAX_DURATION => {
            Err(StoreError::Invalid("--ttl may be at most 100 years".into()))
        }
        _ => Ok(()),
    }
}

/// Refuses malformed requests before any transaction starts.
pub(crate) fn validate(req: &AcquireRequest) -> Result<(), StoreError> {
    let invalid = |m: String| Err(StoreError::Invalid(m));
    if req.keys.is_empty() {
        return invalid("no key given: name at least one key".into());
    }
    if req.keys.len() > MAX_KEYS {
        return invalid(format!(
            "{} keys in one request; the limit is {MAX_KEYS}",
            req.keys.len()
        ));
    }
    for (i, a) in req.keys.iter().enumerate() {
        for b in &req.keys[i + 1..] {
            let (ca, cb) = (claim(a, req.mode, req.scope), claim(b, req.mode, req.scope));
            if rules::overlaps(&ca, &cb) {
                return invalid(format!(
                    "keys {a} and {b} overlap in one request; name each lock once"
                ));
            }
        }
    }
    if let Mode::Semaphore { limit: 0 } = req.mode {
        return invalid("--limit must be at least 1".into());
    }
    if req.holder.owner.trim().is_empty() || req.holder.owner.len() > MAX_TEXT {
        return invalid(format!("the owner name must be 1 to {MAX_TEXT} bytes"));
    }
    for (what, v) in [("task", &req.holder.task), ("request id", &req.request_id)] {
        if v.as_ref()
            .is_some_and(|t| t.is_empty() || t.len() > MAX_TEXT)
        {
            return invalid(format!("the {what} must be 1 to {MAX_TEXT} bytes"));
        }
    }
    if let Some(meta) = &req.holder.metadata {
        if !meta.is_object() {
            return invalid("metadata must be a JSON object".into());
        }
        let size = meta.to_string().len();
        if size > MAX_METADATA_BYTES {
            return invalid(format!(
                "metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}"
            ));
        }
    }
    check_ttl(req.ttl)?;
    if req.max_hold.is_some_and(|m| m > MAX_DURATION) {
        return invalid("--max-hold may be at most 100 years".into());
    }
    if let Takeover::Force { reason } = &req.takeover
        && reason.trim().is_empty()
    {
        return invalid("--force needs --reason: say why the holder is pushed out".into());
    }
    Ok(())
}

fn claim(key: &Key, mode: Mode, scope: Scope) -> Claim<'_> {
    Claim { key, mode, scope }
}

/// A queued request as loaded for one of its keys.
#[derive(Clone, Debug)]
pub(crate) struct Queued {
    pub seq: i64,
    pub priority: i32,
    pub mode: Mode,
    pub owner: String,
    pub wake: String,
    /// The key (and its scope) through which it was found.
    pub key: Key,
    pub scope: Scope,
}

impl Queued {
    fn claim(&self) -> Claim<'_> {
        claim(&self.key, self.mode, self.scope)
    }
    fn place(&self) -> (i32, i64) {
        (self.priority, self.seq)
    }
}

/// True when a queue entry no longer counts: it stopped refreshing its place,
/// or its process is gone. `machine` is the entry's boot id and host name
/// joined by U+001F: only on the same kernel *and* host name (not another
/// container sharing the kernel) are its pid and wake socket comparable.
pub(crate) fn entry_gone(
    ctx: &Ctx<'_>,
    machine: &str,
    pid: u32,
    pid_start: Option<i64>,
    alive_until: i64,
    wake: &str,
) -> bool {
    if alive_until <= ctx.now.mono.0 as i64 {
        return true;
    }
    // A bound wake socket proves its waiter alive for one syscall; only
    // when it is not there do we look the process up (it may live in
    // another network namespace, where its socket cannot be seen).
    machine == ctx.host.machine
        && !ctx.waker.bound(wake)
        && sys::process_alive(pid, pid_start.map(|s| s as u64)) == Some(false)
}

/// Removes queue entry `seq` (its keys go with it).
fn drop_entry(tx: &Transaction<'_>, seq: i64) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")
        .map_err(map_err)?
        .execute([seq])
        .map_err(map_err)?;
    Ok(())
}

/// The holds on `key` (with `scope`) whose tenure has not ended by itself.
fn standing_holds(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    key: &Key,
    scope: Scope,
) -> Result<Vec<HoldRow>, StoreError> {
    let mut holds = holds_touching(tx, key, scope)?;
    holds.retain(|h| rules::ended(&h.lock, ctx.now.mono).is_none());
    Ok(holds)
}

/// Live queue entries that could bear on `key` with `scope`, in queue order.
/// Entries whose process is gone or that stopped refreshing are removed.
pub(crate) fn queue_touching(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    key: &Key,
    scope: Scope,
) -> Result<Vec<Queued>, StoreError> {
    // Most transactions meet an empty queue: one probe instead of one per key.
    let any: Option<i64> = tx
        .prepare_cached("SELECT seq FROM queue LIMIT 1")
        .map_err(map_err)?
        .query_row([], |r| r.get(0))
        .optional()
        .map_err(map_err)?;
    if any.is_none() {
        return Ok(Vec::new());
    }
    let mut found: Vec<(String, i64, String)> = Vec::new();
    let mut by_key = |sql: &str, a: &str, b: Option<&str>| -> Result<(), StoreError> {
        let mut stmt = tx.prepare_cached(sql).map_err(map_err)?;
        let f = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?));
        let rows = match b {
            None => stmt.query_map([a], f),
            Some(b) => stmt.query_map([a, b], f),
        }
        .map_err(map_err)?;
        for row in rows {
            found.push(row.map_err(map_err)?);
        }
        Ok(())
    };
    by_key(
        "SELECT key, seq, scope FROM queue_keys WHERE key = ?1",
        key.as_str(),
        None,
    )?;
    for anc in key.ancestors() {
        by_key(
            "SELECT key, seq, scope FROM queue_keys WHERE key = ?1 AND scope = 'tree'",
            anc,
            None,
        )?;
    }
    if scope == Scope::Tree {
        let (lo, hi) = key.descendant_range();
        by_key(
            "SELECT key, seq, scope FROM queue_keys WHERE key >= ?1 AND key < ?2",
            &lo,
            Some(&hi),
        )?;
    }
    let mut out = Vec::with_capacity(found.len());
    for (k, seq, sc) in found {
        let row = tx
            .prepare_cached(
                "SELECT priority, mode, slots, owner, boot_id || char(31) || hostname, pid,
                        pid_start, alive_until, wake
                 FROM queue WHERE seq = ?1",
            )
            .map_err(map_err)?
            .query_row([seq], |r| {
                Ok((
                    r.get::<_, i32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<u32>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, u32>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })
            .optional()
            .map_err(map_err)?;
        let Some((priority, mode, slots, owner, boot, pid, pid_start, alive_until, wake)) = row
        else {
            continue;
        };
        if entry_gone(ctx, &boot, pid, pid_start, alive_until, &wake) {
            drop_entry(tx, seq)?;
            continue;
        }
        let (Some(mode), Some(scope), Ok(key)) = (
            Mode::from_parts(&mode, slots),
            Scope::from_name(&sc),
            Key::new(k),
        ) else {
            return Err(StoreError::Corrupt(format!(
                "queue entry {seq} of the lock database is malformed"
            )));
        };
        out.push(Queued {
            seq,
            priority,
            mode,
            owner,
            wake,
            key,
            scope,
        });
    }
    out.sort_by(|a, b| rules::queue_order(a.place(), b.place()));
    out.dedup_by_key(|q| (q.seq, q.key.clone()));
    Ok(out)
}

/// Loads the holds bearing on every key of the request, frees those that
/// have ended, and returns the rest (each once).
fn live_holds(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    keys: &[Key],
    scope: Scope,
) -> Result<Vec<HoldRow>, StoreError> {
    let mut seen = HashSet::new();
    let mut live = Vec::new();
    for key in keys {
        for row in holds_touching(tx, key, scope)? {
            if !seen.insert(row.id) {
                continue;
            }
            match rules::ended(&row.lock, ctx.now.mono) {
                Some(reason) => end_hold(tx, ctx.now, &row, reason, None)?,
                None if rows::process_alive(&row.lock, ctx.host) == Some(false) => {
                    end_hold(tx, ctx.now, &row, ReleaseReason::DeadProcess, None)?;
                }
                None => live.push(row),
            }
        }
    }
    Ok(live)
}

/// Holds that stop `req` from being granted, each once.
fn hold_blockers<'h>(
    req: &AcquireRequest,
    holds: &'h [HoldRow],
) -> Result<Vec<&'h HoldRow>, StoreError> {
    let mut out: Vec<&HoldRow> = Vec::new();
    for key in &req.keys {
        for b in rules::blockers(&claim(key, req.mode, req.scope), holds, |h| h.lock.claim())? {
            if !out.iter().any(|o| o.id == b.id) {
                out.push(b);
            }
        }
    }
    Ok(out)
}

/// A claim in the way of a request: a held lock or an earlier waiter.
enum InWay<'h, 'q> {
    Held(&'h HoldRow),
    Queued(&'q Queued),
}

/// The earlier waiters in the way of `c`, counted together with the live
/// holds: a semaphore slot an earlier waiter is due is not free for `c`.
fn queued_in_way<'q>(
    c: &Claim<'_>,
    holds: &[&HoldRow],
    earlier: &'q [Queued],
) -> Result<Vec<&'q Queued>, rules::LimitMismatch> {
    let both: Vec<InWay<'_, 'q>> = holds
        .iter()
        .map(|h| InWay::Held(h))
        .chain(earlier.iter().map(InWay::Queued))
        .collect();
    let in_way = rules::blockers(c, &both, |x| match x {
        InWay::Held(h) => h.lock.claim(),
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

/// Earlier queued requests that `req` may not pass, and all entries touching it.
fn waiters_ahead(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    holds: &[&HoldRow],
    me: (i32, i64),
) -> Result<(Vec<Queued>, Vec<Queued>), StoreError> {
    let mut ahead: Vec<Queued> = Vec::new();
    let mut touching: Vec<Queued> = Vec::new();
    for key in &req.keys {
        let entries = queue_touching(tx, ctx, key, req.scope)?;
        let earlier: Vec<Queued> = entries
            .into_iter()
            .filter(|q| q.seq != me.1)
            .inspect(|q| touching.push(q.clone()))
            .filter(|q| rules::is_ahead(q.place(), me))
            .collect();
        for q in queued_in_way(&claim(key, req.mode, req.scope), holds, &earlier)? {
            if !ahead.iter().any(|a| a.seq == q.seq) {
                ahead.push(q.clone());
            }
        }
    }
    Ok((ahead, touching))
}

/// One acquire attempt inside the caller's transaction. The inner result
/// carries a refusal that must still be committed (its history event).
pub(crate) fn run(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    queue: Option<&mut Waiter>,
) -> Result<Result<Attempt, StoreError>, StoreError> {
    let now = ctx.now;
    let my_seq = match queue.as_ref().and_then(|w| w.seq) {
        Some(seq) => own_entry(tx, ctx, seq)?,
        None => None,
    };
    if let Some(rid) = &req.request_id
        && let Some(g) = replay(tx, ctx, req, rid)?
    {
        return Ok(Ok(Attempt::Granted(g)));
    }
    let holds = live_holds(tx, ctx, &req.keys, req.scope)?;
    let mut blockers = hold_blockers(req, &holds)?;
    let mut taken_over: HashSet<i64> = HashSet::new();
    let forced = matches!(req.takeover, Takeover::Force { .. });
    let me = (req.priority, my_seq.unwrap_or(i64::MAX));
    match &req.takeover {
        Takeover::Force { reason } => {
            for b in blockers.drain(..) {
                let detail = json!({ "reason": reason, "by": req.holder.owner });
                end_hold(tx, now, b, ReleaseReason::Forced, Some(detail))?;
            }
        }
        Takeover::StealStale if !blockers.is_empty() => {
            let all_stale = blockers.iter().all(|b| {
                rows::lock_info(&b.lock, now, ctx.opts.stale_after, ctx.host).health
                    != Health::Healthy
            });
            // Steal only when the request is then granted in this same
            // transaction: earlier waiters may still be in its way.
            let taking: HashSet<i64> = blockers.iter().map(|b| b.id).collect();
            let standing: Vec<&HoldRow> =
                holds.iter().filter(|h| !taking.contains(&h.id)).collect();
            if all_stale && waiters_ahead(tx, ctx, req, &standing, me)?.0.is_empty() {
                for b in blockers.drain(..) {
                    taken_over.insert(b.id);
                    let detail = json!({ "by": req.holder.owner });
                    end_hold(tx, now, b, ReleaseReason::Stolen, Some(detail))?;
                }
            }
        }
        _ => {}
    }
    let standing: Vec<&HoldRow> = holds
        .iter()
        .filter(|h| !taken_over.contains(&h.id))
        .collect();
    let (ahead, touching) = if forced {
        (Vec::new(), Vec::new())
    } else {
        waiters_ahead(tx, ctx, req, &standing, me)?
    };
    if blockers.is_empty() && ahead.is_empty() {
        if let Some(seq) = my_seq {
            drop_entry(tx, seq)?;
        }
        let grant = grant(tx, ctx, req)?;
        return Ok(Ok(Attempt::Granted(grant)));
    }
    let retry_at = blockers
        .iter()
        .filter_map(|b| rules::ends_at(&b.lock))
        .min();
    let mut blocked = Blocked {
        holders: blockers
            .iter()
            .map(|b| lock_info(&b.lock, now, ctx.opts.stale_after, ctx.host))
            .collect(),
        waiters_ahead: ahead.len(),
        position: None,
        retry_at,
        watch: blockers
            .iter()
            .filter_map(|b| b.lock.bind.as_ref()?.life_file.clone())
            .collect(),
    };
    let Some(waiter) = queue else {
        return Ok(Ok(Attempt::Blocked(blocked)));
    };
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
    let cycle = if my_seq.is_none() || any_waiting(tx, ctx, &waits_for, &req.holder.owner)? {
        find_deadlock(tx, ctx, &req.holder.owner, waits_for, my_seq)?
    } else {
        None
    };
    if let Some(cycle) = cycle {
        if let Some(seq) = my_seq {
            drop_entry(tx, seq)?;
        }
        waiter.seq = None;
        let key = req.keys[0].clone();
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
        return Ok(Err(StoreError::Deadlock { key, cycle }));
    }
    let alive_until = now.mono.plus(REFRESH * 3).0 as i64;
    let seq = match my_seq {
        Some(seq) => {
            tx.execute(
                "UPDATE queue SET alive_until = ?2 WHERE seq = ?1",
                params![seq, alive_until],
            )
            .map_err(map_err)?;
            seq
        }
        None => enqueue(tx, ctx, req, waiter.wake.address(), alive_until)?,
    };
    waiter.seq = Some(seq);
    let mut places: HashSet<i64> = touching
        .iter()
        .filter(|q| rules::is_ahead(q.place(), (req.priority, seq)))
        .map(|q| q.seq)
        .collect();
    places.remove(&seq);
    blocked.position = Some(places.len() + 1);
    Ok(Ok(Attempt::Blocked(blocked)))
}

/// The caller's own queue place `seq`, if it still counts. A place that
/// lapsed (its waiter stopped refreshing it, so others no longer saw it and
/// may have passed) or was removed is given up: the request queues again at
/// the back, visibly, instead of waiting on a place nobody else sees.
fn own_entry(tx: &Transaction<'_>, ctx: &Ctx<'_>, seq: i64) -> Result<Option<i64>, StoreError> {
    let alive_until: Option<i64> = tx
        .query_row("SELECT alive_until FROM queue WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .optional()
        .map_err(map_err)?;
    match alive_until {
        Some(t) if t > ctx.now.mono.0 as i64 => Ok(Some(seq)),
        Some(_) => {
            drop_entry(tx, seq)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

fn enqueue(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    wake: &str,
    alive_until: i64,
) -> Result<i64, StoreError> {
    let h = &req.holder;
    tx.prepare_cached(
        "INSERT INTO queue (priority, mode, slots, scope, owner, task, hostname, boot_id, pid,
            pid_start, since_mono, since_wall, alive_until, wake)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .map_err(map_err)?
    .execute(params![
        req.priority,
        req.mode.name(),
        req.mode.limit(),
        req.scope.name(),
        h.owner,
        h.task,
        h.hostname,
        h.boot_id,
        h.pid,
        h.pid_start.map(|s| s as i64),
        ctx.now.mono.0 as i64,
        ctx.now.wall.0 as i64,
        alive_until,
        wake,
    ])
    .map_err(map_err)?;
    let seq = tx.last_insert_rowid();
    for key in &req.keys {
        tx.prepare_cached("INSERT INTO queue_keys (key, seq, scope) VALUES (?1, ?2, ?3)")
            .map_err(map_err)?
            .execute(params![key.as_str(), seq, req.scope.name()])
            .map_err(map_err)?;
    }
    record(
        tx,
        ctx.now,
        NewEvent {
            key: req.keys[0].as_str(),
            kind: EventKind::Waiting,
            owner: &h.owner,
            task: h.task.as_deref(),
            fence: None,
            grant: None,
            reason: None,
            detail: (req.keys.len() > 1).then(|| json!({ "keys": req.keys })),
        },
    )?;
    Ok(seq)
}

/// Issues fences, writes the holds and their events.
fn grant(tx: &Transaction<'_>, ctx: &Ctx<'_>, req: &AcquireRequest) -> Result<Grant, StoreError> {
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
    let handle = LeaseHandle::generate(first);
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
                bind_file, grant_keys)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                ?15, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
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
                detail: None,
            },
        )?;
        locks.push(GrantedLock {
            key: key.clone(),
            fence: Fence(fence as u64),
            expires_at: expires.map(|e| rows::wall_at(now, e)),
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

/// The grant made earlier for the same request id and owner, if still held.
/// A grant that has ended (lease or `max_hold` run out, holder dead) is not
/// answered as if it were live: the request is then served anew.
fn replay(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    rid: &str,
) -> Result<Option<Grant>, StoreError> {
    let rows = rows::load_holds(
        tx,
        "request_id = ?1 AND owner = ?2 ORDER BY fence",
        params![rid, req.holder.owner],
    )?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let ended = |r: &HoldRow| {
        rules::ended(&r.lock, ctx.now.mono).is_some()
            || rows::process_alive(&r.lock, ctx.host) == Some(false)
    };
    if rows.iter().any(ended) {
        return Ok(None);
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
    let handle = LeaseHandle::from_parts(first.lock.grant, &first.secret);
    Ok(Some(Grant {
        grant: first.lock.grant,
        handle,
        owner: first.lock.holder.owner.clone(),
        locks: req
            .keys
            .iter()
            .filter_map(|k| rows.iter().find(|r| &r.lock.key == k))
            .map(|r| GrantedLock {
                key: r.lock.key.clone(),
                fence: r.lock.fence,
                expires_at: r.lock.expires.map(|e| rows::wall_at(ctx.now, e)),
            })
            .collect(),
        ttl: first.lock.ttl,
        replayed: true,
    }))
}

/// True when one of `owners` (other than `me`) has a queue entry that counts.
fn any_waiting(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    owners: &HashSet<String>,
    me: &str,
) -> Result<bool, StoreError> {
    Ok(live_queue(tx, ctx)?
        .iter()
        .any(|q| q.owner != me && owners.contains(&q.owner)))
}

/// Builds the waits-for graph of owners from the live queue and looks for a
/// path from the requester back to itself. One read of the queue and one of
/// the holds per distinct key; the graph itself is built in memory.
fn find_deadlock(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    me: &str,
    my_edges: HashSet<String>,
    my_seq: Option<i64>,
) -> Result<Option<Vec<String>>, StoreError> {
    let entries = live_queue(tx, ctx)?;
    let mut holds_of: HashMap<(Key, Scope), Vec<HoldRow>> = HashMap::new();
    let mut graph: HashMap<String, HashSet<String>> = HashMap::new();
    graph.insert(me.to_string(), my_edges);
    for e in &entries {
        if Some(e.seq) == my_seq || e.owner == me {
            continue;
        }
        let holds = match holds_of.entry((e.key.clone(), e.scope)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(standing_holds(tx, ctx, &e.key, e.scope)?)
            }
        };
        let c = e.claim();
        let edges = graph.entry(e.owner.clone()).or_default();
        for b in rules::blockers(&c, holds, |h| h.lock.claim()).unwrap_or_default() {
            edges.insert(b.lock.holder.owner.clone());
        }
        let earlier: Vec<Queued> = entries
            .iter()
            .filter(|q| {
                q.seq != e.seq
                    && rules::is_ahead(q.place(), e.place())
                    && rules::overlaps(&q.claim(), &c)
            })
            .cloned()
            .collect();
        let holds: Vec<&HoldRow> = holds.iter().collect();
        for q in queued_in_way(&c, &holds, &earlier).unwrap_or_default() {
            edges.insert(q.owner.clone());
        }
    }
    Ok(rules::find_cycle(me, |o| {
        graph
            .get(o)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }))
}

/// Every queue entry that still counts, one per key of each request.
fn live_queue(tx: &Transaction<'_>, ctx: &Ctx<'_>) -> Result<Vec<Queued>, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT q.seq, q.owner, q.priority, q.mode, q.slots, k.key, k.scope,
                    q.boot_id || char(31) || q.hostname, q.pid, q.pid_start, q.alive_until, q.wake
             FROM queue q JOIN queue_keys k ON k.seq = q.seq",
        )
        .map_err(map_err)?;
    let mut rows = stmt.query([]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        let boot: String = r.get(7).map_err(map_err)?;
        let wake: String = r.get(11).map_err(map_err)?;
        if entry_gone(
            ctx,
            &boot,
            r.get(8).map_err(map_err)?,
            r.get(9).map_err(map_err)?,
            r.get(10).map_err(map_err)?,
            &wake,
        ) {
            continue;
        }
        let mode: String = r.get(3).map_err(map_err)?;
        let key: String = r.get(5).map_err(map_err)?;
        let scope: String = r.get(6).map_err(map_err)?;
        let (Some(mode), Some(scope), Ok(key)) = (
            Mode::from_parts(&mode, r.get(4).map_err(map_err)?),
            Scope::from_name(&scope),
            Key::new(key),
        ) else {
            continue;
        };
        out.push(Queued {
            seq: r.get(0).map_err(map_err)?,
            priority: r.get(2).map_err(map_err)?,
            mode,
            owner: r.get(1).map_err(map_err)?,
            wake,
            key,
            scope,
        });
    }
    Ok(out)
}

/// Removes a queued request that gave up and records why; wakes those behind it.
pub(crate) fn leave(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    seq: i64,
    why: LeaveReason,
) -> Result<Vec<String>, StoreError> {
    let entry: Option<(String, Option<String>)> = tx
        .query_row("SELECT owner, task FROM queue WHERE seq = ?1", [seq], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(map_err)?;
    let Some((owner, task)) = entry else {
        return Ok(Vec::new());
    };
    let keys: Vec<(String, String)> = tx
        .prepare_cached("SELECT key, scope FROM queue_keys WHERE seq = ?1")
        .map_err(map_err)?
        .query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    drop_entry(tx, seq)?;
    let kind = match why {
        LeaveReason::TimedOut => EventKind::WaitTimedOut,
        LeaveReason::Cancelled => EventKind::WaitCancelled,
    };
    let mut wakes = Vec::new();
    for (i, (key, scope)) in keys.iter().enumerate() {
        if i == 0 {
            record(
                tx,
                ctx.now,
                NewEvent {
                    key,
                    kind,
                    owner: &owner,
                    task: task.as_deref(),
                    fence: None,
                    grant: None,
                    reason: None,
                    detail: None,
                },
            )?;
        }
        if let (Ok(key), Some(scope)) = (Key::new(key.clone()), Scope::from_name(scope)) {
            wakes.extend(wake_list(tx, ctx, &key, scope)?);
        }
    }
    Ok(wakes)
}

/// The wake addresses of queued requests that a change on `key` may have
/// made grantable: each entry, in queue order, with no live holder and no
/// earlier entry in its way. A wrong guess costs the waiter one attempt.
pub(crate) fn wake_list(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    key: &Key,
    scope: Scope,
) -> Result<Vec<String>, StoreError> {
    let entries = queue_touching(tx, ctx, key, scope)?;
    let mut wakes = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let holds = standing_holds(tx, ctx, &e.key, e.scope)?;
        let c = e.claim();
        let held = rules::blockers(&c, &holds, |h| h.lock.claim()).unwrap_or_default();
        let queued = rules::blockers(&c, &entries[..i], Queued::claim).unwrap_or_default();
        if held.is_empty() && queued.is_empty() && !wakes.contains(&e.wake) {
            wakes.push(e.wake.clone());
        }
    }
    Ok(wakes)
}
