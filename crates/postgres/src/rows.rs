//! Conversions between table rows and domain values, and the event writer.

use std::time::Duration;

use locksmith_core::flow::NewEvent;
use locksmith_core::tenure::Named;
use locksmith_core::{
    Binding, Fence, HeldLock, Hold, Holder, Key, Mode, Mono, Now, ReleaseReason, Scope, StoreError,
    Wall,
};
use postgres::{Row, SimpleQueryRow};

use crate::conn::{Arg, Fail, Stmt, Tx};

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

/// The cells of a row: a typed row of the extended protocol, or a text
/// row of a read sent ahead in a simple query.
pub(crate) trait Cells {
    /// A number (`int4` or `int8`), or `NULL`.
    fn int(&self, i: usize) -> Result<Option<i64>, Fail>;
    /// Text, or `NULL`.
    fn text(&self, i: usize) -> Result<Option<String>, Fail>;
    /// A number that may not be `NULL`.
    fn num(&self, i: usize) -> Result<i64, Fail> {
        self.int(i)?.ok_or_else(|| bad_row("number"))
    }
    /// Text that may not be `NULL`.
    fn string(&self, i: usize) -> Result<String, Fail> {
        self.text(i)?.ok_or_else(|| bad_row("text"))
    }
}

impl Cells for Row {
    fn int(&self, i: usize) -> Result<Option<i64>, Fail> {
        Ok(match self.columns()[i].type_() {
            &postgres::types::Type::INT4 => self.try_get::<_, Option<i32>>(i)?.map(i64::from),
            _ => self.try_get(i)?,
        })
    }
    fn text(&self, i: usize) -> Result<Option<String>, Fail> {
        Ok(self.try_get(i)?)
    }
}

/// A row of a read sent ahead (see [`Tx::load`]): its columns, as
/// text.
pub(crate) struct Ahead<'r>(pub &'r SimpleQueryRow);

impl Cells for Ahead<'_> {
    fn int(&self, i: usize) -> Result<Option<i64>, Fail> {
        match self.0.try_get(i)? {
            Some(v) => v.parse().map(Some).map_err(|_| bad_row("number")),
            None => Ok(None),
        }
    }
    fn text(&self, i: usize) -> Result<Option<String>, Fail> {
        Ok(self.0.try_get(i)?.map(str::to_string))
    }
}

/// Decodes one `holds` row; its liveness is left unknown (see
/// [`locksmith_host::life::observe`]).
pub(crate) fn hold_from_row(r: &(impl Cells + ?Sized)) -> Result<Hold, Fail> {
    let key = r.string(3)?;
    let mode = r.string(4)?;
    let slots = r.int(5)?;
    let scope = r.string(6)?;
    let metadata = r.text(9)?;
    let pid = r.num(12)?;
    Ok(Hold {
        secret: r.string(2)?,
        renew_logged: mono(r.num(21)?),
        grant_keys: r.num(25)?.max(1) as u32,
        alive: None,
        uid: r.int(27)?.map(|u| u as u32),
        lock: HeldLock {
            grant: r.num(1)?,
            key: Key::stored(key).map_err(|_| bad_row("key"))?,
            mode: Mode::from_parts(&mode, slots.map(|s| s as u32))
                .ok_or_else(|| bad_row("mode"))?,
            scope: Scope::from_name(&scope).ok_or_else(|| bad_row("scope"))?,
            fence: Fence(r.num(0)? as u64),
            holder: Holder {
                owner: r.string(7)?,
                task: r.text(8)?,
                metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
                hostname: r.string(10)?,
                boot_id: r.string(11)?,
                pid: pid as u32,
                pid_start: r.int(13)?.map(|v| v as u64),
            },
            acquired: mono(r.num(14)?),
            acquired_wall: Wall(r.num(15)? as u64),
            last_seen: mono(r.num(16)?),
            expires: r.int(17)?.map(mono),
            ttl: ms(r.int(18)?),
            max_hold: ms(r.int(19)?),
            request_id: r.text(20)?,
            bind: match r.int(22)? {
                Some(pid) => Some(Binding {
                    pid: pid as u32,
                    start: r.int(23)?.map(|v| v as u64),
                    life_file: r.text(24)?,
                }),
                None => None,
            },
            stale_after: ms(r.int(26)?),
        },
    })
}

/// The `SELECT` of the holds matching `where_sql`, with its arguments, as
/// [`Tx::lock`] sends a read ahead and [`load_holds`] finds it.
pub(crate) fn select(where_sql: &str, args: &[&dyn Arg]) -> Result<Stmt, Fail> {
    Stmt::new(
        format!("SELECT {HOLD_COLUMNS} FROM holds WHERE {where_sql}"),
        args,
    )
}

/// Loads the holds matching `where_sql` (which may use `$1`, `$2`, …):
/// from the rows sent ahead when the same read was, else in a round trip.
pub(crate) fn load_holds(
    tx: &mut Tx<'_>,
    where_sql: &str,
    args: &[&dyn Arg],
) -> Result<Vec<Hold>, Fail> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE {where_sql}");
    tx.load(&sql, args, |r| hold_from_row(r))
}

/// Answers `f` applied to the condition and arguments of every hold that
/// could bear on `key` with `scope`: the key itself, tree holds on its
/// ancestors, and (for a tree claim) every hold below it; in one statement.
pub(crate) fn touching<T>(
    key: &Key,
    scope: Scope,
    f: impl FnOnce(&str, &[&dyn Arg]) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let ancestors: Vec<&str> = key.ancestors();
    let (lo, hi) = match scope {
        Scope::Tree => key.descendant_range(),
        // An empty range.
        Scope::Key => (String::new(), String::new()),
    };
    f(
        // In the order of the embedded store: the key, its ancestors from
        // the root down, then the keys below it.
        "key = $1 OR (key = ANY($2) AND scope = 'tree') OR (key >= $3 AND key < $4)
         ORDER BY key <> $1, array_position($2, key), key, fence",
        &[&key.as_str(), &ancestors, &lo, &hi],
    )
}

/// Every hold that could bear on `key` with `scope` (see [`touching`]).
pub(crate) fn holds_touching(tx: &mut Tx<'_>, key: &Key, scope: Scope) -> Result<Vec<Hold>, Fail> {
    touching(key, scope, |w, a| load_holds(tx, w, a))
}

/// Answers `f` applied to the condition and arguments of the holds a
/// renew or release names.
pub(crate) fn named<T>(
    named: &Named,
    f: impl FnOnce(&str, &[&dyn Arg]) -> Result<T, Fail>,
) -> Result<T, Fail> {
    match named {
        Named::Grant(grant, key) => f(
            "(key = $1 AND grant_id = $2) OR (grant_id = $2 AND grant_keys > 1) ORDER BY fence",
            &[&key.as_str(), grant],
        ),
        Named::Owner(key, owner) => f(
            "key = $1 AND owner = $2 ORDER BY fence",
            &[&key.as_str(), &owner.as_str()],
        ),
    }
}

/// Answers `f` applied to the condition and arguments of the holds granted
/// under `request_id` to `owner`.
pub(crate) fn of_request<T>(
    request_id: &str,
    owner: &str,
    f: impl FnOnce(&str, &[&dyn Arg]) -> Result<T, Fail>,
) -> Result<T, Fail> {
    f(
        "request_id = $1 AND owner = $2 ORDER BY fence",
        &[&request_id, &owner],
    )
}

pub(crate) fn record(tx: &mut Tx<'_>, now: Now, e: NewEvent<'_>) -> Result<(), Fail> {
    tx.exec_prepared(
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
    tx.exec_prepared(
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
