//! The write of a grant: the holds and their `acquired` events, with the
//! fences drawn under the key locks. The steps of an acquire are
//! [`locksmith_core::flow::acquire`].

use locksmith_core::flow::Parked;
use locksmith_core::store::GrantedLock;
use locksmith_core::{AcquireRequest, Fence, Grant, StoreError};
use serde_json::json;

use crate::Ctx;
use crate::conn::{Fail, Tx};

/// Writes the holds and their events, in one statement; `to` names the
/// queue entry of a hand-over, whose fences are drawn here (the releaser's
/// transaction holds the locks of its keys, see [`Tx::covers`]).
///
/// The fences come from the store's sequence, drawn (with the key locks, in
/// [`crate::conn::Tx::lock`]) while this transaction holds the locks of
/// every key it conflicts with: a conflicting grant committed before drew
/// its numbers before ours, and one that comes after cannot draw until we
/// commit.
pub(crate) fn grant(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    req: &AcquireRequest,
    waited: Option<std::time::Duration>,
    to: Option<(i64, &Parked)>,
) -> Result<Grant, Fail> {
    let detail = waited.map(|w| json!({ "waited_ms": w.as_millis() as u64 }).to_string());
    let now = ctx.now;
    let n = req.keys.len() as i64;
    let fences: Vec<i64> = match &to {
        Some(_) => tx.draw_fences(req.keys.len())?,
        None => ctx.fences.iter().copied().take(req.keys.len()).collect(),
    };
    let Some(&first) = fences.first().filter(|_| fences.len() == req.keys.len()) else {
        return Err(Fail::Store(StoreError::backend(
            "no fences were drawn for this grant",
        )));
    };
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
        Some((seq, to)) => (Some(*seq), to.uid.map(i64::from)),
        None => (None, Some(i64::from(ctx.host.uid))),
    };
    let expires = req.ttl.map(|t| now.mono.plus(t));
    let h = &req.holder;
    let metadata = h.metadata.as_ref().map(|m| m.to_string());
    let keys: Vec<&str> = req.keys.iter().map(|k| k.as_str()).collect();
    tx.exec_prepared(
        "WITH g AS (SELECT * FROM unnest($3::text[], $7::int8[]) AS g(key, fence)),
         h AS (INSERT INTO holds (grant_id, secret, key, mode, slots, scope, fence, owner, task,
                metadata, hostname, boot_id, pid, pid_start, acquired_mono, acquired_wall,
                seen_mono, expires_mono, ttl_ms, max_hold_ms, request_id, bind_pid, bind_start,
                bind_file, grant_keys, stale_after_ms, uid, ticket)
             SELECT $1, $2, g.key, $4, $5, $6, g.fence, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                $15, $17, $18, $19, $20, $21, $22, $23, $24, $25, $27, $28 FROM g)
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
            &(stale_after.as_millis() as i64),
            &detail,
            &uid,
            &ticket,
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
