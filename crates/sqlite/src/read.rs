//! Read-only views: one key's status, listings, the queue, history, counters.

use std::collections::BTreeMap;

use locksmith_core::store::{HistoryFilter, KeyStatus, ListFilter, LockInfo, Stats, WaiterInfo};
use locksmith_core::view::lock_info;
use locksmith_core::{Event, EventKind, Fence, Health, Hold, Key, Scope, StoreError, Wall};
use rusqlite::{Connection, OptionalExtension, params_from_iter, types::Value};

use crate::Ctx;
use crate::open::map_err;
use crate::queue;
use crate::rows::{holds_touching, holds_where, load_holds, observe};

/// Upper bound for a prefix range scan: every key starting with `p` sorts below it.
fn prefix_end(p: &str) -> String {
    format!("{p}{}", char::MAX)
}

/// The public view of a loaded hold at the transaction's instant.
fn view(h: &Hold, ctx: &Ctx<'_>) -> LockInfo {
    lock_info(&h.lock, h.alive, ctx.now, ctx.opts.stale_after)
}

pub(crate) fn status(tx: &Connection, ctx: &Ctx<'_>, key: &Key) -> Result<KeyStatus, StoreError> {
    let holders: Vec<LockInfo> = observe(holds_touching(tx, key, Scope::Key)?, ctx.host)
        .iter()
        .map(|r| view(r, ctx))
        .collect();
    let waiters = waiters(tx, ctx, &ListFilter::default())?;
    Ok(locksmith_core::view::key_status(key, holders, waiters))
}

pub(crate) fn list(
    tx: &Connection,
    ctx: &Ctx<'_>,
    f: &ListFilter,
) -> Result<Vec<LockInfo>, StoreError> {
    let mut clauses = vec!["1".to_string()];
    let mut args: Vec<Value> = Vec::new();
    if let Some(o) = &f.owner {
        args.push(Value::Text(o.clone()));
        clauses.push(format!("owner = ?{}", args.len()));
    }
    if let Some(p) = &f.prefix {
        args.push(Value::Text(p.clone()));
        args.push(Value::Text(prefix_end(p)));
        clauses.push(format!(
            "key >= ?{} AND key < ?{}",
            args.len() - 1,
            args.len()
        ));
    }
    if let Some(g) = f.grant {
        args.push(Value::Integer(g));
        clauses.push(format!("grant_id = ?{}", args.len()));
    }
    if f.unhealthy {
        // Only rows that can be unhealthy reach Rust, where health is decided:
        // ended, silent for `stale_after`, or bound to a process (checked there).
        let now = ctx.now.mono.0 as i64;
        args.push(Value::Integer(now));
        args.push(Value::Integer(ctx.opts.stale_after.as_millis() as i64));
        let (n, d) = (args.len() - 1, args.len());
        clauses.push(format!(
            "(expires_mono <= ?{n} OR acquired_mono + max_hold_ms * 1000 <= ?{n}
              OR (expires_mono IS NULL AND seen_mono + coalesce(stale_after_ms, ?{d}) * 1000 <= ?{n})
              OR bind_pid IS NOT NULL)"
        ));
    }
    let limit = if f.limit == 0 || f.unhealthy {
        -1
    } else {
        f.limit as i64
    };
    let sql = format!(
        "{}{} ORDER BY key, fence LIMIT {limit}",
        holds_where!(""),
        clauses.join(" AND ")
    );
    let mut out: Vec<LockInfo> = observe(load_holds(tx, &sql, params_from_iter(args))?, ctx.host)
        .iter()
        .map(|r| view(r, ctx))
        .filter(|i| !f.unhealthy || i.health != Health::Healthy)
        .collect();
    if f.limit > 0 {
        out.truncate(f.limit);
    }
    Ok(out)
}

pub(crate) fn waiters(
    tx: &Connection,
    ctx: &Ctx<'_>,
    f: &ListFilter,
) -> Result<Vec<WaiterInfo>, StoreError> {
    let sql = format!(
        "SELECT {}, q.task, q.hostname, q.since_mono, q.since_wall
         FROM queue_keys k JOIN queue q ON q.seq = k.seq ORDER BY k.key",
        queue::COLUMNS
    );
    let mut stmt = tx.prepare_cached(&sql).map_err(map_err)?;
    let mut rows = stmt.query([]).map_err(map_err)?;
    let mut found: Vec<((i32, i64), WaiterInfo)> = Vec::new();
    let extra = queue::NEXT_COLUMN;
    while let Some(r) = rows.next().map_err(map_err)? {
        let q = queue::decode(r, ctx)?;
        if !q.counts(ctx.now.mono) {
            continue;
        }
        let since: i64 = r.get(extra + 2).map_err(map_err)?;
        let info = WaiterInfo {
            key: q.key.clone(),
            position: 0,
            mode: q.mode,
            scope: q.scope,
            priority: q.priority,
            owner: q.owner,
            task: r.get(extra).map_err(map_err)?,
            hostname: r.get(extra + 1).map_err(map_err)?,
            pid: r.get(9).map_err(map_err)?,
            since: Wall(r.get::<_, i64>(extra + 3).map_err(map_err)? as u64),
            waited: ctx
                .now
                .mono
                .since(locksmith_core::Mono(since.max(0) as u64)),
        };
        found.push(((q.priority, q.seq), info));
    }
    Ok(locksmith_core::view::waiter_list(found, f))
}

pub(crate) fn history(tx: &Connection, f: &HistoryFilter) -> Result<Vec<Event>, StoreError> {
    let mut clauses = vec!["1".to_string()];
    let mut args: Vec<Value> = Vec::new();
    if let Some(k) = &f.key {
        args.push(Value::Text(k.clone()));
        if f.prefix {
            args.push(Value::Text(prefix_end(k)));
            clauses.push(format!(
                "key >= ?{} AND key < ?{}",
                args.len() - 1,
                args.len()
            ));
        } else {
            clauses.push(format!("key = ?{}", args.len()));
        }
    }
    if let Some(o) = &f.owner {
        args.push(Value::Text(o.clone()));
        clauses.push(format!("owner = ?{}", args.len()));
    }
    if let Some(kind) = f.kind {
        args.push(Value::Text(kind.name().into()));
        clauses.push(format!("kind = ?{}", args.len()));
    }
    if let Some(after) = f.after {
        args.push(Value::Integer(after));
        clauses.push(format!("id > ?{}", args.len()));
    }
    let limit = if f.limit == 0 { -1 } else { f.limit as i64 };
    let sql = format!(
        "SELECT id, at_wall, key, kind, owner, task, fence, grant_id, reason, detail FROM events
         WHERE {} ORDER BY id DESC LIMIT {limit}",
        clauses.join(" AND ")
    );
    // The same shapes recur (the server's event pump asks for `id > ?`
    // again and again): kept prepared.
    let mut stmt = tx.prepare_cached(&sql).map_err(map_err)?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| {
            let kind: String = r.get(3)?;
            let reason: Option<String> = r.get(8)?;
            let detail: Option<String> = r.get(9)?;
            Ok(Event {
                id: r.get(0)?,
                at: Wall(r.get::<_, i64>(1)? as u64),
                key: r.get(2)?,
                kind: EventKind::from_name(&kind).unwrap_or(EventKind::Released),
                owner: r.get(4)?,
                task: r.get(5)?,
                fence: r.get::<_, Option<i64>>(6)?.map(|f| Fence(f as u64)),
                grant: r.get(7)?,
                reason: reason.and_then(|r| r.parse().ok()),
                detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })
        .map_err(map_err)?;
    rows.collect::<Result<_, _>>().map_err(map_err)
}

pub(crate) fn stats(tx: &Connection, ctx: &Ctx<'_>) -> Result<Stats, StoreError> {
    let count = |sql: &str| -> Result<u64, StoreError> {
        tx.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|v| v as u64)
            .map_err(map_err)
    };
    let group = |sql: &str| -> Result<BTreeMap<String, u64>, StoreError> {
        let mut stmt = tx.prepare(sql).map_err(map_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(map_err)?;
        rows.collect::<Result<_, _>>().map_err(map_err)
    };
    let unhealthy = list(
        tx,
        ctx,
        &ListFilter {
            unhealthy: true,
            ..Default::default()
        },
    )?
    .len() as u64;
    let first: Option<i64> = tx
        .query_row("SELECT at_wall FROM events ORDER BY id LIMIT 1", [], |r| {
            r.get(0)
        })
        .ok();
    Ok(Stats {
        // Ended tenures still in the table (nobody touched them since) are not held.
        held: tx
            .query_row(
                "SELECT count(*) FROM holds WHERE (expires_mono IS NULL OR expires_mono > ?1)
                   AND (max_hold_ms IS NULL OR acquired_mono + max_hold_ms * 1000 > ?1)",
                [ctx.now.mono.0 as i64],
                |r| r.get::<_, i64>(0),
            )
            .map_err(map_err)? as u64,
        waiting: locksmith_core::view::requests_waiting(&waiters(tx, ctx, &ListFilter::default())?),
        unhealthy,
        events: group("SELECT kind, count(*) FROM events GROUP BY kind")?,
        releases: group(
            "SELECT reason, count(*) FROM events WHERE reason IS NOT NULL GROUP BY reason",
        )?,
        // Fences are the ids of `acquired` events, above a floor in `meta`.
        last_fence: count(
            "SELECT max(v, coalesce((SELECT id FROM events WHERE kind = 'acquired'
                                       ORDER BY id DESC LIMIT 1), 0))
             FROM meta WHERE k = 'fence'",
        )?,
        history_since: first.map(|w| Wall(w as u64)),
        waits: waits(tx)?,
        success_rate: success_rate(tx)?,
    })
}

/// Waiting times recorded with grants (`waited_ms` in the detail).
fn waits(tx: &Connection) -> Result<locksmith_core::WaitStats, StoreError> {
    const WAITED: &str = "json_extract(detail, '$.waited_ms')";
    let (count, avg, max): (i64, Option<f64>, Option<i64>) = tx
        .query_row(
            &format!(
                "SELECT count(*), avg(w), max(w) FROM (SELECT {WAITED} AS w FROM events
                  WHERE kind = 'acquired' AND detail IS NOT NULL AND {WAITED} IS NOT NULL)"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(map_err)?;
    let p99: Option<i64> = match count {
        0 => None,
        n => tx
            .query_row(
                &format!(
                    "SELECT w FROM (SELECT {WAITED} AS w FROM events
                      WHERE kind = 'acquired' AND detail IS NOT NULL AND {WAITED} IS NOT NULL)
                     ORDER BY w LIMIT 1 OFFSET ?1"
                ),
                [((n as f64 * 0.99).ceil() as i64 - 1).clamp(0, n - 1)],
                |r| r.get(0),
            )
            .optional()
            .map_err(map_err)?,
    };
    Ok(locksmith_core::WaitStats {
        count: count as u64,
        avg_ms: avg,
        p99_ms: p99.map(|v| v.max(0) as u64),
        max_ms: max.map(|v| v.max(0) as u64),
    })
}

/// Granted ÷ (granted + timed out + deadlocks refused) in the kept history.
fn success_rate(tx: &Connection) -> Result<Option<f64>, StoreError> {
    let (good, bad): (i64, i64) = tx
        .query_row(
            "SELECT count(*) FILTER (WHERE kind = 'acquired'),
                    count(*) FILTER (WHERE kind IN ('wait_timed_out', 'deadlock_refused'))
               FROM events WHERE kind IN ('acquired', 'wait_timed_out', 'deadlock_refused')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(map_err)?;
    Ok(match good + bad {
        0 => None,
        all => Some(good as f64 / all as f64),
    })
}
