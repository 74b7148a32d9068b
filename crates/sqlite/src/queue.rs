//! The queue tables: one decoder for queue rows, the loaders the rules ask
//! for, and the writes that join, refresh and leave the queue.

use locksmith_core::decide::Queued;
use locksmith_core::flow::{Parked, QueueEntry};
use locksmith_core::{Key, Mode, Mono, Scope, StoreError};
use locksmith_host::life::waiter_gone;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::Ctx;
use crate::open::map_err;

/// Columns every queue query selects first, in the order [`decode`] reads
/// them (from `queue q` joined to `queue_keys k`); a query may select more
/// after them.
pub(crate) const COLUMNS: &str = "q.seq, q.priority, q.mode, q.slots, q.owner, q.wake, k.key, \
     k.scope, q.boot_id || char(31) || q.hostname, q.pid, q.pid_start, q.alive_until";

/// [`COLUMNS`] of one entry `?1` through one of its keys, given as `?2` and
/// its scope as `?3`.
const ENTRY: &str = "SELECT q.seq, q.priority, q.mode, q.slots, q.owner, q.wake, ?2, ?3, \
     q.boot_id || char(31) || q.hostname, q.pid, q.pid_start, q.alive_until FROM queue q WHERE q.seq = ?1";

/// The number of columns in [`COLUMNS`].
pub(crate) const NEXT_COLUMN: usize = 12;

/// Decodes one queue row (one key of a queued request) with the facts this
/// host has about its process. A malformed row is reported as corrupt.
pub(crate) fn decode(r: &Row<'_>, ctx: &Ctx<'_>) -> Result<Queued, StoreError> {
    let seq: i64 = r.get(0).map_err(map_err)?;
    let mode: String = r.get(2).map_err(map_err)?;
    let key: String = r.get(6).map_err(map_err)?;
    let scope: String = r.get(7).map_err(map_err)?;
    let (Some(mode), Some(scope), Ok(key)) = (
        Mode::from_parts(&mode, r.get(3).map_err(map_err)?),
        Scope::from_name(&scope),
        Key::stored(key),
    ) else {
        return Err(StoreError::corrupt(format!(
            "queue entry {seq} of the lock database is malformed; nothing was changed. Move the file away (keep it for inspection) and run again to start a new one"
        )));
    };
    let machine: String = r.get(8).map_err(map_err)?;
    let pid: u32 = r.get(9).map_err(map_err)?;
    let pid_start: Option<i64> = r.get(10).map_err(map_err)?;
    let alive_until = Mono(r.get::<_, i64>(11).map_err(map_err)?.max(0) as u64);
    let wake: String = r.get(5).map_err(map_err)?;
    // Only an entry that has not lapsed needs its process looked at.
    let gone = alive_until > ctx.now.mono
        && waiter_gone(
            ctx.host,
            ctx.waker,
            &machine,
            &wake,
            pid,
            pid_start.map(|s| s as u64),
        );
    Ok(Queued {
        seq,
        priority: r.get(1).map_err(map_err)?,
        mode,
        owner: r.get(4).map_err(map_err)?,
        wake,
        key,
        scope,
        alive_until,
        gone,
    })
}

/// `key, seq, scope` of the `queue_keys` rows matching a condition (fixed text).
macro_rules! keys_where {
    ($cond:expr) => {
        concat!("SELECT key, seq, scope FROM queue_keys WHERE ", $cond)
    };
}

/// Appends the entries of the keys `sql` selects (a [`keys_where!`] query).
///
/// Two steps instead of a join: SQLite marks the bound key of a join as
/// one that may change the plan and prepares such a statement again on
/// every call, which cost more than the lookups it saves (measured with
/// `queue_costs`).
fn query(
    tx: &Connection,
    ctx: &Ctx<'_>,
    sql: &str,
    args: impl rusqlite::Params,
    out: &mut Vec<Queued>,
) -> Result<(), StoreError> {
    let found: Vec<(String, i64, String)> = tx
        .prepare_cached(sql)
        .map_err(map_err)?
        .query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    let mut stmt = tx.prepare_cached(ENTRY).map_err(map_err)?;
    for (key, seq, scope) in found {
        let mut rows = stmt.query(params![seq, key, scope]).map_err(map_err)?;
        if let Some(r) = rows.next().map_err(map_err)? {
            out.push(decode(r, ctx)?);
        }
    }
    Ok(())
}

/// Queue entries that bear on `key` with `scope`: on the key itself, tree
/// entries on its ancestors, and (for a tree) entries below it. Appended to
/// `out`; lapsed and gone entries are included, for the rules to drop.
pub(crate) fn touching(
    tx: &Connection,
    ctx: &Ctx<'_>,
    key: &Key,
    scope: Scope,
    out: &mut Vec<Queued>,
) -> Result<(), StoreError> {
    // Most transactions find the queue empty: one probe instead of a
    // query per key.
    if !crate::rows::exists(tx, "SELECT 1 FROM queue LIMIT 1")? {
        return Ok(());
    }
    query(tx, ctx, keys_where!("key = ?1"), [key.as_str()], out)?;
    for anc in key.ancestors() {
        query(
            tx,
            ctx,
            keys_where!("key = ?1 AND scope = 'tree'"),
            [anc],
            out,
        )?;
    }
    if scope == Scope::Tree {
        let (lo, hi) = key.descendant_range();
        query(
            tx,
            ctx,
            keys_where!("key >= ?1 AND key < ?2"),
            [lo, hi],
            out,
        )?;
    }
    Ok(())
}

/// Every queue entry, one per key of each request.
pub(crate) fn all(tx: &Connection, ctx: &Ctx<'_>) -> Result<Vec<Queued>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM queue_keys k JOIN queue q ON q.seq = k.seq");
    let mut stmt = tx.prepare_cached(&sql).map_err(map_err)?;
    let mut rows = stmt.query([]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(decode(r, ctx)?);
    }
    Ok(out)
}

/// The caller's own entry `seq`: the instant its place lapses, and when it
/// joined the queue.
pub(crate) fn own(tx: &Connection, seq: i64) -> Result<Option<(Mono, Mono)>, StoreError> {
    let row: Option<(i64, i64)> = tx
        .prepare_cached("SELECT alive_until, since_mono FROM queue WHERE seq = ?1")
        .map_err(map_err)?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(map_err)?;
    Ok(row.map(|(a, s)| (Mono(a.max(0) as u64), Mono(s.max(0) as u64))))
}

/// Removes queue entry `seq` (its keys go with it).
pub(crate) fn drop_entry(tx: &Connection, seq: i64) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")
        .map_err(map_err)?
        .execute([seq])
        .map_err(map_err)?;
    Ok(())
}

/// Keeps entry `seq` alive until `alive_until`.
pub(crate) fn refresh(tx: &Connection, seq: i64, alive_until: Mono) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE queue SET alive_until = ?2 WHERE seq = ?1")
        .map_err(map_err)?
        .execute(params![seq, alive_until.0 as i64])
        .map_err(map_err)?;
    Ok(())
}

/// Adds a request at the back of the queue; returns its seq. With `keep`
/// it is kept whole for a hand-over, with a new claim, also returned.
pub(crate) fn enqueue(
    tx: &Connection,
    ctx: &Ctx<'_>,
    req: &locksmith_core::AcquireRequest,
    wake: &str,
    alive_until: Mono,
    keep: bool,
) -> Result<(i64, Option<String>), StoreError> {
    let h = &req.holder;
    let kept = locksmith_host::life::kept_for_handover(req, keep, ctx.opts.stale_after)?;
    tx.prepare_cached(
        "INSERT INTO queue (priority, mode, slots, scope, owner, task, hostname, boot_id, pid,
            pid_start, since_mono, since_wall, alive_until, wake, request, claim, uid,
            stale_after_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
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
        alive_until.0 as i64,
        wake,
        kept.as_ref().map(|k| &k.request),
        kept.as_ref().map(|k| &k.claim),
        kept.as_ref().and(ctx.host.uid_on(h)),
        kept.as_ref().map(|k| k.stale_after_ms),
    ])
    .map_err(map_err)?;
    let seq = tx.last_insert_rowid();
    for key in &req.keys {
        tx.prepare_cached("INSERT INTO queue_keys (key, seq, scope) VALUES (?1, ?2, ?3)")
            .map_err(map_err)?
            .execute(params![key.as_str(), seq, req.scope.name()])
            .map_err(map_err)?;
    }
    Ok((seq, kept.map(|k| k.claim)))
}

/// The request of entry `seq` as it joined, when it was kept for a
/// hand-over, with whether its waiter is proven alive here now: on this
/// machine, with its wake socket bound.
pub(crate) fn parked(
    tx: &Connection,
    ctx: &Ctx<'_>,
    seq: i64,
) -> Result<Option<Parked>, StoreError> {
    type Row = (
        Option<String>,
        Option<String>,
        String,
        String,
        Option<u32>,
        Option<i64>,
    );
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT request, claim, wake, boot_id || char(31) || hostname, uid, stale_after_ms
               FROM queue WHERE seq = ?1",
        )
        .map_err(map_err)?
        .query_row([seq], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()
        .map_err(map_err)?;
    let Some((Some(request), Some(claim), wake, machine, uid, stale_after)) = row else {
        return Ok(None);
    };
    let kept = locksmith_host::life::Kept {
        request,
        claim,
        wake,
        machine,
        uid,
        stale_after_ms: stale_after,
    };
    Ok(locksmith_host::life::parked(ctx.host, ctx.waker, kept))
}

/// Who queued entry `seq`, and its keys; `None` when it is gone.
pub(crate) fn entry(tx: &Connection, seq: i64) -> Result<Option<QueueEntry>, StoreError> {
    let who: Option<(String, Option<String>)> = tx
        .query_row("SELECT owner, task FROM queue WHERE seq = ?1", [seq], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(map_err)?;
    let Some((owner, task)) = who else {
        return Ok(None);
    };
    let keys: Vec<(String, String)> = tx
        .prepare_cached("SELECT key, scope FROM queue_keys WHERE seq = ?1")
        .map_err(map_err)?
        .query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    Ok(Some(QueueEntry {
        owner,
        task,
        keys: keys
            .into_iter()
            .filter_map(|(k, s)| Some((Key::stored(k).ok()?, Scope::from_name(&s)?)))
            .collect(),
    }))
}
