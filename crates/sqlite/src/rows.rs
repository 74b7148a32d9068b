//! Conversions between table rows and domain values, and the event writer.

use std::time::Duration;

use locksmith_core::flow::NewEvent;
use locksmith_core::{
    Binding, Fence, HeldLock, Hold, Holder, Key, Mode, Mono, Now, ReleaseReason, Scope, StoreError,
    Wall,
};
pub(crate) use locksmith_host::life::{HostFacts, observe};
use rusqlite::{Connection, Row, params};

use crate::open::map_err;

/// `SELECT` of the columns of `holds` in the order [`hold_from_row`] reads
/// them, with the condition given (a literal, `?1`, `?2` for arguments).
/// The text is fixed at compile time, so the hot loads neither format it
/// nor hash a new string for the statement cache on every call.
macro_rules! holds_where {
    ($cond:expr) => {
        concat!(
            "SELECT fence, grant_id, secret, key, mode, slots, scope, fence, owner, task, metadata, \
             hostname, boot_id, pid, pid_start, acquired_mono, acquired_wall, seen_mono, expires_mono, \
             ttl_ms, max_hold_ms, request_id, renew_logged, bind_pid, bind_start, bind_file, grant_keys, \
             stale_after_ms, uid FROM holds WHERE ",
            $cond
        )
    };
}
pub(crate) use holds_where;

fn ms(v: Option<i64>) -> Option<Duration> {
    v.map(|m| Duration::from_millis(m.max(0) as u64))
}

fn bad_row(what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("invalid {what} in the lock database").into(),
    )
}

/// Decodes one `holds` row; its liveness is left unknown (see [`observe`]).
pub(crate) fn hold_from_row(r: &Row<'_>) -> rusqlite::Result<Hold> {
    let key: String = r.get(3)?;
    let mode: String = r.get(4)?;
    let slots: Option<u32> = r.get(5)?;
    let scope: String = r.get(6)?;
    let metadata: Option<String> = r.get(10)?;
    Ok(Hold {
        secret: r.get(2)?,
        renew_logged: Mono(r.get::<_, i64>(22)?.max(0) as u64),
        grant_keys: r.get(26)?,
        alive: None,
        uid: r.get(28)?,
        lock: HeldLock {
            grant: r.get(1)?,
            key: Key::stored(key).map_err(|_| bad_row("key"))?,
            mode: Mode::from_parts(&mode, slots).ok_or_else(|| bad_row("mode"))?,
            scope: Scope::from_name(&scope).ok_or_else(|| bad_row("scope"))?,
            fence: Fence(r.get::<_, i64>(7)? as u64),
            holder: Holder {
                owner: r.get(8)?,
                task: r.get(9)?,
                metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
                hostname: r.get(11)?,
                boot_id: r.get(12)?,
                pid: r.get(13)?,
                pid_start: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
            },
            acquired: Mono(r.get::<_, i64>(15)?.max(0) as u64),
            acquired_wall: Wall(r.get::<_, i64>(16)? as u64),
            last_seen: Mono(r.get::<_, i64>(17)?.max(0) as u64),
            expires: r.get::<_, Option<i64>>(18)?.map(|v| Mono(v.max(0) as u64)),
            ttl: ms(r.get(19)?),
            max_hold: ms(r.get(20)?),
            request_id: r.get(21)?,
            bind: match r.get::<_, Option<u32>>(23)? {
                Some(pid) => Some(Binding {
                    pid,
                    start: r.get::<_, Option<i64>>(24)?.map(|v| v as u64),
                    life_file: r.get(25)?,
                }),
                None => None,
            },
            stale_after: ms(r.get(27)?),
        },
    })
}

/// Loads the holds `sql` selects (a [`holds_where!`] query).
pub(crate) fn load_holds(
    tx: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Hold>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).map_err(map_err)?;
    let rows = stmt
        .query_map(args, hold_from_row)
        .map_err(map_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err)?;
    Ok(rows)
}

/// True when `sql` (a query of one row at most) finds a row.
pub(crate) fn exists(tx: &Connection, sql: &str) -> Result<bool, StoreError> {
    use rusqlite::OptionalExtension;
    let found: Option<i64> = tx
        .prepare_cached(sql)
        .map_err(map_err)?
        .query_row([], |r| r.get(0))
        .optional()
        .map_err(map_err)?;
    Ok(found.is_some())
}

/// Every hold that could bear on `key` with `scope`: the key itself, tree
/// holds on its ancestors, and (for a tree claim) every hold below it.
pub(crate) fn holds_touching(
    tx: &Connection,
    key: &Key,
    scope: Scope,
) -> Result<Vec<Hold>, StoreError> {
    let mut out = load_holds(tx, holds_where!("key = ?1"), [key.as_str()])?;
    let ancestors = key.ancestors();
    // Some hold is a tree: one probe of the small `holds_of_trees` index,
    // empty in most stores.
    if !ancestors.is_empty() && exists(tx, "SELECT 1 FROM holds WHERE scope = 'tree' LIMIT 1")? {
        for anc in ancestors {
            out.extend(load_holds(
                tx,
                holds_where!("key = ?1 AND scope = 'tree'"),
                [anc],
            )?);
        }
    }
    if scope == Scope::Tree {
        let (lo, hi) = key.descendant_range();
        out.extend(load_holds(
            tx,
            holds_where!("key >= ?1 AND key < ?2"),
            [lo, hi],
        )?);
    }
    Ok(out)
}

/// Writes one history line with the next id.
pub(crate) fn record(tx: &Connection, now: Now, e: NewEvent<'_>) -> Result<(), StoreError> {
    record_as(tx, now, None, e)
}

/// Writes one history line with id `id` (an `acquired` event: its fence),
/// or the next id.
pub(crate) fn record_as(
    tx: &Connection,
    now: Now,
    id: Option<i64>,
    e: NewEvent<'_>,
) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO events (at_wall, key, kind, owner, task, fence, grant_id, reason, detail, id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(map_err)?;
    stmt.execute(params![
        now.wall.0 as i64,
        e.key,
        e.kind.name(),
        e.owner,
        e.task,
        e.fence.map(|f| f.0 as i64),
        e.grant,
        e.reason.map(|r| r.name()),
        e.detail.map(|d| d.to_string()),
        id,
    ])
    .map_err(map_err)?;
    Ok(())
}

/// Deletes a hold and records how it ended (the event kind follows from the
/// reason). A holder proven dead also loses its life file.
pub(crate) fn end_hold(
    tx: &Connection,
    now: Now,
    lock: &HeldLock,
    reason: ReleaseReason,
    detail: Option<serde_json::Value>,
) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM holds WHERE key = ?1 AND fence = ?2")
        .map_err(map_err)?
        .execute(params![lock.key.as_str(), lock.fence.0 as i64])
        .map_err(map_err)?;
    if reason == ReleaseReason::DeadProcess
        && let Some(b) = &lock.bind
    {
        locksmith_host::life::remove_dead(b);
    }
    let mut e = NewEvent::about(lock, reason.event_kind(), Some(reason));
    e.detail = detail;
    record(tx, now, e)
}
