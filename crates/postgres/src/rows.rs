//! Conversions between table rows and domain values, and the event writer.

use std::time::Duration;

use locksmith_core::flow::NewEvent;
use locksmith_core::{
    Binding, Fence, HeldLock, Hold, Holder, Key, Mode, Mono, Now, ReleaseReason, Scope, StoreError,
    Wall,
};
use postgres::Row;

use crate::conn::{Arg, Fail, Tx};

/// Columns of `holds` in the order [`hold_from_row`] reads them.
pub(crate) const HOLD_COLUMNS: &str = "fence, grant_id, secret, key, mode, slots, scope, owner, task, \
     metadata, hostname, boot_id, pid, pid_start, acquired_mono, acquired_wall, seen_mono, \
     expires_mono, ttl_ms, max_hold_ms, request_id, renew_logged, bind_pid, bind_start, bind_file, \
     grant_keys, stale_after_ms, uid";

fn ms(v: Option<i64>) -> Option<Duration> {
    v.map(|m| Duration::from_millis(m.max(0) as u64))
}

fn mono(v: i64) -> Mono {
    Mono(v.max(0) as u64)
}

/// A row that does not decode: the store's tables were changed by hand.
pub(crate) fn bad_row(what: &str) -> Fail {
    Fail::Store(StoreError::corrupt(format!(
        "invalid {what} in the lock tables; nothing was changed. Were they edited by hand? Inspect the store's schema"
    )))
}

/// Decodes one `holds` row; its liveness is left unknown (see
/// [`locksmith_host::life::observe`]).
pub(crate) fn hold_from_row(r: &Row) -> Result<Hold, Fail> {
    let key: String = r.try_get(3)?;
    let mode: String = r.try_get(4)?;
    let slots: Option<i64> = r.try_get(5)?;
    let scope: String = r.try_get(6)?;
    let metadata: Option<String> = r.try_get(9)?;
    let pid: i64 = r.try_get(12)?;
    Ok(Hold {
        secret: r.try_get(2)?,
        renew_logged: mono(r.try_get(21)?),
        grant_keys: r.try_get::<_, i32>(25)?.max(1) as u32,
        alive: None,
        uid: r.try_get::<_, Option<i64>>(27)?.map(|u| u as u32),
        lock: HeldLock {
            grant: r.try_get(1)?,
            key: Key::stored(key).map_err(|_| bad_row("key"))?,
            mode: Mode::from_parts(&mode, slots.map(|s| s as u32))
                .ok_or_else(|| bad_row("mode"))?,
            scope: Scope::from_name(&scope).ok_or_else(|| bad_row("scope"))?,
            fence: Fence(r.try_get::<_, i64>(0)? as u64),
            holder: Holder {
                owner: r.try_get(7)?,
                task: r.try_get(8)?,
                metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
                hostname: r.try_get(10)?,
                boot_id: r.try_get(11)?,
                pid: pid as u32,
                pid_start: r.try_get::<_, Option<i64>>(13)?.map(|v| v as u64),
            },
            acquired: mono(r.try_get(14)?),
            acquired_wall: Wall(r.try_get::<_, i64>(15)? as u64),
            last_seen: mono(r.try_get(16)?),
            expires: r.try_get::<_, Option<i64>>(17)?.map(mono),
            ttl: ms(r.try_get(18)?),
            max_hold: ms(r.try_get(19)?),
            request_id: r.try_get(20)?,
            bind: match r.try_get::<_, Option<i64>>(22)? {
                Some(pid) => Some(Binding {
                    pid: pid as u32,
                    start: r.try_get::<_, Option<i64>>(23)?.map(|v| v as u64),
                    life_file: r.try_get(24)?,
                }),
                None => None,
            },
            stale_after: ms(r.try_get(26)?),
        },
    })
}

/// Loads the holds matching `where_sql` (which may use `$1`, `$2`, …).
pub(crate) fn load_holds(
    tx: &mut Tx<'_>,
    where_sql: &str,
    args: &[&dyn Arg],
) -> Result<Vec<Hold>, Fail> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE {where_sql}");
    tx.rows(&sql, args)?.iter().map(hold_from_row).collect()
}

/// Every hold that could bear on `key` with `scope`: the key itself, tree
/// holds on its ancestors, and (for a tree claim) every hold below it; in
/// one statement.
pub(crate) fn holds_touching(tx: &mut Tx<'_>, key: &Key, scope: Scope) -> Result<Vec<Hold>, Fail> {
    let ancestors: Vec<&str> = key.ancestors();
    let (lo, hi) = match scope {
        Scope::Tree => key.descendant_range(),
        // An empty range.
        Scope::Key => (String::new(), String::new()),
    };
    load_holds(
        tx,
        // In the order of the embedded store: the key, its ancestors from
        // the root down, then the keys below it.
        "key = $1 OR (key = ANY($2) AND scope = 'tree') OR (key >= $3 AND key < $4)
         ORDER BY key <> $1, array_position($2, key), key, fence",
        &[&key.as_str(), &ancestors, &lo, &hi],
    )
}

pub(crate) fn record(tx: &mut Tx<'_>, now: Now, e: NewEvent<'_>) -> Result<(), Fail> {
    tx.exec(
        "INSERT INTO events (at_wall, key, kind, owner, task, fence, grant_id, reason, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &(now.wall.0 as i64),
            &e.key,
            &e.kind.name(),
            &e.owner,
            &e.task,
            &e.fence.map(|f| f.0 as i64),
            &e.grant,
            &e.reason.map(|r| r.name()),
            &e.detail.map(|d| d.to_string()),
        ],
    )
}

/// Deletes a hold and records how it ended (the event kind follows from the
/// reason). A holder proven dead also loses its life file.
pub(crate) fn end_hold(
    tx: &mut Tx<'_>,
    now: Now,
    lock: &HeldLock,
    reason: ReleaseReason,
    detail: Option<serde_json::Value>,
) -> Result<(), Fail> {
    tx.exec(
        "DELETE FROM holds WHERE key = $1 AND fence = $2",
        &[&lock.key.as_str(), &(lock.fence.0 as i64)],
    )?;
    if reason == ReleaseReason::DeadProcess
        && let Some(b) = &lock.bind
    {
        locksmith_host::life::remove_dead(b);
    }
    let mut e = NewEvent::about(lock, reason.event_kind(), Some(reason));
    e.detail = detail;
    record(tx, now, e)
}
