//! Read-only views: one key's status, listings, the queue, history, counters.

use std::collections::BTreeMap;

use locksmith_core::store::{HistoryFilter, KeyStatus, ListFilter, LockInfo, Stats, WaiterInfo};
use locksmith_core::{Event, EventKind, Fence, Health, Key, Mode, Scope, StoreError, Wall, rules};
use rusqlite::{Transaction, params_from_iter, types::Value};

use crate::Ctx;
use crate::open::map_err;
use crate::rows::{holds_touching, load_holds, lock_info};

/// Upper bound for a prefix range scan: every key starting with `p` sorts below it.
fn prefix_end(p: &str) -> String {
    format!("{p}{}", char::MAX)
}

pub(crate) fn status(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    key: &Key,
) -> Result<KeyStatus, StoreError> {
    let holders: Vec<LockInfo> = holds_touching(tx, key, Scope::Key)?
        .iter()
        .map(|r| lock_info(&r.lock, ctx.now, ctx.opts.stale_after, ctx.host))
        .collect();
    let waiters = waiters(
        tx,
        ctx,
        &ListFilter {
            prefix: None,
            ..Default::default()
        },
    )?
    .into_iter()
    .filter(|w| &w.key == key || (w.scope == Scope::Tree && key.is_at_or_below(&w.key)))
    .collect();
    let free = holders.iter().all(|h| h.health == Health::Expired);
    Ok(KeyStatus {
        key: key.clone(),
        free,
        holders,
        waiters,
    })
}

pub(crate) fn list(
    tx: &Transaction<'_>,
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
    if f.unhealthy {
        // Only rows that can be unhealthy reach Rust, where health is decided:
        // ended, silent for `stale_after`, or bound to a process (checked there).
        let now = ctx.now.mono.0 as i64;
        let stale_before = now - ctx.opts.stale_after.as_micros().min(i64::MAX as u128) as i64;
        args.push(Value::Integer(now));
        args.push(Value::Integer(stale_before));
        let (n, st) = (args.len() - 1, args.len());
        clauses.push(format!(
            "(expires_mono <= ?{n} OR acquired_mono + max_hold_ms * 1000 <= ?{n}
              OR seen_mono <= ?{st} OR bind_pid IS NOT NULL)"
        ));
    }
    let limit = if f.limit == 0 || f.unhealthy {
        -1
    } else {
        f.limit as i64
    };
    let sql = format!(
        "{} ORDER BY key, fence LIMIT {limit}",
        clauses.join(" AND ")
    );
    let mut out: Vec<LockInfo> = load_holds(tx, &sql, params_from_iter(args))?
        .iter()
        .map(|r| lock_info(&r.lock, ctx.now, ctx.opts.stale_after, ctx.host))
        .filter(|i| !f.unhealthy || i.health != Health::Healthy)
        .collect();
    if f.limit > 0 {
        out.truncate(f.limit);
    }
    Ok(out)
}

pub(crate) fn waiters(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    f: &ListFilter,
) -> Result<Vec<WaiterInfo>, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT k.key, k.scope, q.seq, q.priority, q.mode, q.slots, q.owner, q.task, q.hostname,
                    q.boot_id || char(31) || q.hostname, q.pid, q.pid_start, q.since_mono,
                    q.since_wall, q.alive_until, q.wake
             FROM queue_keys k JOIN queue q ON q.seq = k.seq ORDER BY k.key",
        )
        .map_err(map_err)?;
    let mut rows = stmt.query([]).map_err(map_err)?;
    let mut by_key: BTreeMap<String, Vec<(i32, i64, WaiterInfo)>> = BTreeMap::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        let key: String = r.get(0).map_err(map_err)?;
        let boot: String = r.get(9).map_err(map_err)?;
        let pid: u32 = r.get(10).map_err(map_err)?;
        let pid_start: Option<i64> = r.get(11).map_err(map_err)?;
        let alive_until: i64 = r.get(14).map_err(map_err)?;
        let wake: String = r.get(15).map_err(map_err)?;
        if crate::acquire::entry_gone(ctx, &boot, pid, pid_start, alive_until, &wake) {
            continue;
        }
        let mode: String = r.get(4).map_err(map_err)?;
        let scope: String = r.get(1).map_err(map_err)?;
        let since: i64 = r.get(12).map_err(map_err)?;
        let (Ok(k), Some(mode), Some(scope)) = (
            Key::new(key.clone()),
            Mode::from_parts(&mode, r.get(5).map_err(map_err)?),
            Scope::from_name(&scope),
        ) else {
            return Err(StoreError::Corrupt(
                "a queue entry of the lock database is malformed".into(),
            ));
        };
        let priority: i32 = r.get(3).map_err(map_err)?;
        let seq: i64 = r.get(2).map_err(map_err)?;
        let info = WaiterInfo {
            key: k,
            position: 0,
            mode,
            scope,
            priority,
            owner: r.get(6).map_err(map_err)?,
            task: r.get(7).map_err(map_err)?,
            hostname: r.get(8).map_err(map_err)?,
            pid,
            since: Wall(r.get::<_, i64>(13).map_err(map_err)? as u64),
            waited: ctx
                .now
                .mono
                .since(locksmith_core::Mono(since.max(0) as u64)),
        };
        by_key.entry(key).or_default().push((priority, seq, info));
    }
    let mut out = Vec::new();
    for (_, mut entries) in by_key {
        entries.sort_by(|a, b| rules::queue_order((a.0, a.1), (b.0, b.1)));
        for (i, (_, _, mut w)) in entries.into_iter().enumerate() {
            w.position = i + 1;
            let keep = f.owner.as_ref().is_none_or(|o| &w.owner == o)
                && f.prefix
                    .as_ref()
                    .is_none_or(|p| w.key.as_str().starts_with(p.as_str()));
            if keep {
                out.push(w);
            }
        }
    }
    if f.limit > 0 {
        out.truncate(f.limit);
    }
    Ok(out)
}

pub(crate) fn history(tx: &Transaction<'_>, f: &HistoryFilter) -> Result<Vec<Event>, StoreError> {
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
    let limit = if f.limit == 0 { 100 } else { f.limit };
    let sql = format!(
        "SELECT id, at_wall, key, kind, owner, task, fence, grant_id, reason, detail FROM events
         WHERE {} ORDER BY id DESC LIMIT {limit}",
        clauses.join(" AND ")
    );
    let mut stmt = tx.prepare(&sql).map_err(map_err)?;
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

pub(crate) fn stats(tx: &Transaction<'_>, ctx: &Ctx<'_>) -> Result<Stats, StoreError> {
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
        waiting: waiters(tx, ctx, &ListFilter::default())?
            .iter()
            .map(|w| (w.owner.clone(), w.since))
            .collect::<std::collections::HashSet<_>>()
            .len() as u64,
        unhealthy,
        events: group("SELECT kind, count(*) FROM events GROUP BY kind")?,
        releases: group(
            "SELECT reason, count(*) FROM events WHERE reason IS NOT NULL GROUP BY reason",
        )?,
        last_fence: count("SELECT v FROM meta WHERE k = 'fence'")?,
        history_since: first.map(|w| Wall(w as u64)),
    })
}
