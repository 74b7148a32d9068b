//! The queue tables: one decoder for queue rows, the loaders the rules ask
//! for, and the writes that join, refresh and leave the queue.

use crate::Ctx;
use crate::conn::{Arg, Fail, Stmt, Tx};
use crate::rows::Cells;
use locksmith_core::decide::Queued;
use locksmith_core::flow::{Parked, QueueEntry};
use locksmith_core::{Key, Mode, Mono, Scope, StoreError};
use locksmith_host::life::waiter_gone;

/// Columns every queue query selects first, in the order [`decode`] reads
/// them (from `queue q` joined to `queue_keys k`); a query may select more
/// after them.
pub(crate) const COLUMNS: &str = "q.seq, q.priority, q.mode, q.slots, q.owner, q.wake, k.key, \
     k.scope, q.boot_id || chr(31) || q.hostname, q.pid, q.pid_start, q.alive_until";

/// The number of columns in [`COLUMNS`].
pub(crate) const NEXT_COLUMN: usize = 12;

/// Decodes one queue row (one key of a queued request) with the facts this
/// host has about its process. A malformed row is reported as corrupt.
pub(crate) fn decode(r: &(impl Cells + ?Sized), ctx: &Ctx<'_>) -> Result<Queued, Fail> {
    let seq = r.num(0)?;
    let mode = r.string(2)?;
    let slots = r.int(3)?;
    let key = r.string(6)?;
    let scope = r.string(7)?;
    let (Some(mode), Some(scope), Ok(key)) = (
        Mode::from_parts(&mode, slots.map(|s| s as u32)),
        Scope::from_name(&scope),
        Key::stored(key),
    ) else {
        return Err(Fail::Store(StoreError::corrupt(format!(
            "queue entry {seq} of the lock tables is malformed; nothing was changed. Were they edited by hand? Delete that row from the queue table"
        ))));
    };
    let machine = r.string(8)?;
    let pid = r.num(9)?;
    let pid_start = r.int(10)?;
    let alive_until = Mono(r.num(11)?.max(0) as u64);
    let wake = r.string(5)?;
    // Only an entry that has not lapsed needs its process looked at.
    let gone = alive_until > ctx.now.mono
        && waiter_gone(
            ctx.host,
            ctx.waker,
            &machine,
            &wake,
            pid as u32,
            pid_start.map(|s| s as u64),
        );
    Ok(Queued {
        seq,
        priority: r.num(1)? as i32,
        mode,
        owner: r.string(4)?,
        wake,
        key,
        scope,
        alive_until,
        gone,
    })
}

/// Queue entries that bear on `key` with `scope`: on the key itself, tree
/// entries on its ancestors, and (for a tree) entries below it. Appended to
/// `out`; lapsed and gone entries are included, for the rules to drop.
pub(crate) fn touching(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    key: &Key,
    scope: Scope,
    out: &mut Vec<Queued>,
) -> Result<(), Fail> {
    if ctx.queue_empty {
        return Ok(());
    }
    out.extend(touching_query(key, scope, |sql, args| {
        tx.load(sql, args, |r| decode(r, ctx))
    })?);
    Ok(())
}

/// Answers `f` applied to the statement and arguments of [`touching`].
pub(crate) fn touching_query<T>(
    key: &Key,
    scope: Scope,
    f: impl FnOnce(&str, &[&dyn Arg]) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let ancestors: Vec<&str> = key.ancestors();
    let (lo, hi) = match scope {
        Scope::Tree => key.descendant_range(),
        Scope::Key => (String::new(), String::new()),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM queue_keys k JOIN queue q ON q.seq = k.seq
          WHERE k.key = $1 OR (k.key = ANY($2) AND k.scope = 'tree') OR (k.key >= $3 AND k.key < $4)
          ORDER BY k.key <> $1, array_position($2, k.key), k.key, k.seq"
    );
    f(&sql, &[&key.as_str(), &ancestors, &lo, &hi])
}

/// The statement of [`own`] for `seq`, as a read sent ahead.
pub(crate) fn own_stmt(seq: i64) -> Result<Stmt, Fail> {
    Stmt::new(OWN, &[&seq])
}

const OWN: &str = "SELECT alive_until, since_mono FROM queue WHERE seq = $1";

/// Every queue entry, one per key of each request (with the statements
/// kept before it, such as the graph lock, in one round trip).
pub(crate) fn all(tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Result<Vec<Queued>, Fail> {
    let sql = format!("SELECT {COLUMNS} FROM queue_keys k JOIN queue q ON q.seq = k.seq");
    tx.load(&sql, &[], |r| decode(r, ctx))
}

/// The caller's own entry `seq`: the instant its place lapses, and when it
/// joined the queue.
pub(crate) fn own(tx: &mut Tx<'_>, seq: i64) -> Result<Option<(Mono, Mono)>, Fail> {
    let mono = |r: &dyn Cells, i| Ok::<_, Fail>(Mono(r.num(i)?.max(0) as u64));
    let places = tx.load(OWN, &[&seq], |r| Ok((mono(r, 0)?, mono(r, 1)?)))?;
    Ok(places.into_iter().next())
}

/// Removes queue entry `seq` (its keys go with it).
pub(crate) fn drop_entry(tx: &mut Tx<'_>, seq: i64) -> Result<(), Fail> {
    tx.exec("DELETE FROM queue WHERE seq = $1", &[&seq])
}

/// Keeps entry `seq` alive until `alive_until`.
pub(crate) fn refresh(tx: &mut Tx<'_>, seq: i64, alive_until: Mono) -> Result<(), Fail> {
    tx.exec(
        "UPDATE queue SET alive_until = $2 WHERE seq = $1",
        &[&seq, &(alive_until.0 as i64)],
    )
}

/// Adds a request at the back of the queue; returns its seq. With `keep`
/// it is kept whole for a hand-over, with a new claim, also returned.
pub(crate) fn enqueue(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    req: &locksmith_core::AcquireRequest,
    wake: &str,
    alive_until: Mono,
    keep: bool,
) -> Result<(i64, Option<String>), Fail> {
    let h = &req.holder;
    let keys: Vec<&str> = req.keys.iter().map(|k| k.as_str()).collect();
    let kept = locksmith_host::life::kept_for_handover(req, keep, ctx.opts.stale_after)
        .map_err(Fail::Store)?;
    let row = tx.one(
        "WITH q AS (
           INSERT INTO queue (priority, mode, slots, scope, owner, task, hostname, boot_id, pid,
               pid_start, since_mono, since_wall, alive_until, wake, request, claim, uid,
               stale_after_ms)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $16, $17, $18,
               $19)
           RETURNING seq),
         k AS (INSERT INTO queue_keys (key, seq, scope)
           SELECT key, (SELECT seq FROM q), $4 FROM unnest($15::text[]) AS key)
         SELECT seq FROM q",
        &[
            &req.priority,
            &req.mode.name(),
            &req.mode.limit().map(i64::from),
            &req.scope.name(),
            &h.owner,
            &h.task,
            &h.hostname,
            &h.boot_id,
            &(h.pid as i64),
            &h.pid_start.map(|s| s as i64),
            &(ctx.now.mono.0 as i64),
            &(ctx.now.wall.0 as i64),
            &(alive_until.0 as i64),
            &wake,
            &keys,
            &kept.as_ref().map(|k| k.request.as_str()),
            &kept.as_ref().map(|k| k.claim.as_str()),
            &kept.as_ref().and(ctx.host.uid_on(h)).map(i64::from),
            &kept.as_ref().map(|k| k.stale_after_ms),
        ],
    )?;
    let seq: i64 = row.try_get(0)?;
    Ok((seq, kept.map(|k| k.claim)))
}

/// The request of entry `seq` as it joined, when it was kept for a
/// hand-over, with whether its waiter is proven alive here now: on this
/// machine, with its wake socket bound.
pub(crate) fn parked(tx: &mut Tx<'_>, ctx: &Ctx<'_>, seq: i64) -> Result<Option<Parked>, Fail> {
    type Kept = (
        Option<String>,
        Option<String>,
        String,
        String,
        Option<i64>,
        Option<i64>,
    );
    let rows: Vec<Kept> = tx.load(
        "SELECT request, claim, wake, boot_id || chr(31) || hostname, uid, stale_after_ms
           FROM queue WHERE seq = $1",
        &[&seq],
        |r| {
            Ok((
                r.text(0)?,
                r.text(1)?,
                r.string(2)?,
                r.string(3)?,
                r.int(4)?,
                r.int(5)?,
            ))
        },
    )?;
    let Some((Some(request), Some(claim), wake, machine, uid, stale_after)) =
        rows.into_iter().next()
    else {
        return Ok(None);
    };
    let kept = locksmith_host::life::Kept {
        request,
        claim,
        wake,
        machine,
        uid: uid.and_then(|u| u32::try_from(u).ok()),
        stale_after_ms: stale_after,
    };
    Ok(locksmith_host::life::parked(ctx.host, ctx.waker, kept))
}

/// Who queued entry `seq`, and its keys; `None` when it is gone.
pub(crate) fn entry(tx: &mut Tx<'_>, seq: i64) -> Result<Option<QueueEntry>, Fail> {
    let rows = tx.rows(
        "SELECT q.owner, q.task, k.key, k.scope FROM queue q JOIN queue_keys k ON k.seq = q.seq
          WHERE q.seq = $1 ORDER BY k.key",
        &[&seq],
    )?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut entry = QueueEntry {
        owner: first.try_get(0)?,
        task: first.try_get(1)?,
        keys: Vec::with_capacity(rows.len()),
    };
    for r in &rows {
        let (k, s): (String, String) = (r.try_get(2)?, r.try_get(3)?);
        if let (Ok(k), Some(s)) = (Key::stored(k), Scope::from_name(&s)) {
            entry.keys.push((k, s));
        }
    }
    Ok(Some(entry))
}
