//! The write of a grant: fences from the store's counter, the holds and
//! their `acquired` events. The steps of an acquire are
//! [`locksmith_core::flow::acquire`].

use locksmith_core::flow::{NewEvent, Parked};
use locksmith_core::store::GrantedLock;
use locksmith_core::{AcquireRequest, EventKind, Fence, Grant, StoreError};
use rusqlite::{Connection, params};

use crate::Ctx;
use crate::open::map_err;
use crate::rows::record_as;

/// Issues fences, writes the holds and their events; `to` names the queue
/// entry of a hand-over.
pub(crate) fn grant(
    tx: &Connection,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    waited: Option<std::time::Duration>,
    to: Option<(i64, &Parked)>,
) -> Result<Grant, StoreError> {
    let detail = waited.map(|w| serde_json::json!({ "waited_ms": w.as_millis() as u64 }));
    let now = ctx.now;
    let n = req.keys.len() as i64;
    // A fence is the id of its `acquired` event: above every event id
    // (so above every fence issued, and in the order of the history),
    // above the floor kept in `meta` (where a prune that empties the
    // history leaves the last id), and at least the wall clock in
    // microseconds, so that a crash that loses the last commits cannot hand
    // out a number again: the clock has moved past every number issued
    // before. No counter row is written: a grant writes its hold and its
    // history, nothing else.
    let last: i64 = tx
        .prepare_cached(
            "SELECT max(coalesce((SELECT max(id) FROM events), 0),
                        (SELECT v FROM meta WHERE k = 'fence'))",
        )
        .map_err(map_err)?
        .query_row([], |r| r.get(0))
        .map_err(map_err)?;
    let first = (last + 1).max(now.wall.micros() as i64);
    let handle = match &to {
        Some((_, to)) => locksmith_core::LeaseHandle::from_parts(first, &to.claim),
        None => locksmith_host::new_handle(first),
    };
    let secret = handle.secret().to_string();
    // A hand-over records the waiter's setting, as its own grant would.
    let stale_after = to
        .and_then(|(_, p)| p.stale_after)
        .unwrap_or(ctx.opts.stale_after);
    let (ticket, uid) = match &to {
        Some((seq, to)) => (Some(*seq), to.uid),
        None => (None, Some(ctx.host.uid)),
    };
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
                bind_file, grant_keys, stale_after_ms, uid, ticket)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                ?15, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)",
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
            stale_after.as_millis() as i64,
            uid,
            ticket,
        ])
        .map_err(map_err)?;
        record_as(
            tx,
            now,
            Some(fence),
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
