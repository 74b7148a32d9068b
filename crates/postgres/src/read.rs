//! Read-only views: one key's status, listings, the queue, history,
//! counters; and the history retention.

use std::collections::BTreeMap;

use locksmith_core::store::{HistoryFilter, KeyStatus, ListFilter, LockInfo, Stats, WaiterInfo};
use locksmith_core::view::lock_info;
use locksmith_core::{Event, EventKind, Fence, Health, Hold, Key, Mono, Scope, Wall};
use locksmith_host::life::observe;

use crate::Ctx;
use crate::conn::{Arg, Fail, Tx};
use crate::queue;
use crate::rows::{holds_touching, load_holds};

/// Upper bound for a prefix range scan: every key starting with `p` sorts below it.
fn prefix_end(p: &str) -> String {
    format!("{p}{}", char::MAX)
}

/// The public view of a loaded hold at the transaction's instant.
fn view(h: &Hold, ctx: &Ctx<'_>) -> LockInfo {
    lock_info(&h.lock, h.alive, ctx.now, ctx.opts.stale_after)
}

/// Clauses and their arguments, numbered as they are added.
#[derive(Default)]
struct Filter {
    clauses: Vec<String>,
    args: Vec<Box<dyn Arg>>,
}

impl Filter {
    /// Adds `sql`, where `$` stands for the next argument.
    fn add(&mut self, sql: &str, arg: impl Arg + 'static) {
        self.args.push(Box::new(arg));
        self.clauses
            .push(sql.replace('$', &format!("${}", self.args.len())));
    }
    fn sql(&self) -> String {
        match self.clauses.is_empty() {
            true => "TRUE".into(),
            false => self.clauses.join(" AND "),
        }
    }
    fn args(&self) -> Vec<&dyn Arg> {
        self.args.iter().map(|a| &**a).collect()
    }
}

pub(crate) fn status(tx: &mut Tx<'_>, ctx: &Ctx<'_>, key: &Key) -> Result<KeyStatus, Fail> {
    let holders: Vec<LockInfo> = observe(holds_touching(tx, key, Scope::Key)?, ctx.host)
        .iter()
        .map(|r| view(r, ctx))
        .collect();
    let waiters = waiters(tx, ctx, &ListFilter::default())?;
    Ok(locksmith_core::view::key_status(key, holders, waiters))
}

pub(crate) fn list(tx: &mut Tx<'_>, ctx: &Ctx<'_>, f: &ListFilter) -> Result<Vec<LockInfo>, Fail> {
    let mut w = Filter::default();
    if let Some(o) = &f.owner {
        w.add("owner = $", o.clone());
    }
    if let Some(p) = &f.prefix {
        w.add("key >= $", p.clone());
        w.add("key < $", prefix_end(p));
    }
    if let Some(g) = f.grant {
        w.add("grant_id = $", g);
    }
    if f.unhealthy {
        // Only rows that can be unhealthy leave the database, where health
        // is decided: ended, silent for `stale_after`, or bound to a process.
        let now = ctx.now.mono.0 as i64;
        let stale = ctx.opts.stale_after.as_millis() as i64;
        w.args.push(Box::new(now));
        w.args.push(Box::new(stale));
        let (n, d) = (w.args.len() - 1, w.args.len());
        w.clauses.push(format!(
            "(expires_mono <= ${n} OR acquired_mono + max_hold_ms * 1000 <= ${n}
              OR (expires_mono IS NULL AND seen_mono + coalesce(stale_after_ms, ${d}) * 1000 <= ${n})
              OR bind_pid IS NOT NULL)"
        ));
    }
    let limit = match f.limit == 0 || f.unhealthy {
        true => String::new(),
        false => format!(" LIMIT {}", f.limit),
    };
    let sql = format!("{} ORDER BY key, fence{limit}", w.sql());
    let mut out: Vec<LockInfo> = observe(load_holds(tx, &sql, &w.args())?, ctx.host)
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
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    f: &ListFilter,
) -> Result<Vec<WaiterInfo>, Fail> {
    let sql = format!(
        "SELECT {}, q.task, q.hostname, q.since_mono, q.since_wall
         FROM queue_keys k JOIN queue q ON q.seq = k.seq ORDER BY k.key, k.seq",
        queue::COLUMNS
    );
    let extra = queue::NEXT_COLUMN;
    let mut found: Vec<((i32, i64), WaiterInfo)> = Vec::new();
    for r in tx.rows(&sql, &[])? {
        let q = queue::decode(&r, ctx)?;
        if !q.counts(ctx.now.mono) {
            continue;
        }
        let since: i64 = r.try_get(extra + 2)?;
        let pid: i64 = r.try_get(9)?;
        let info = WaiterInfo {
            key: q.key.clone(),
            position: 0,
            mode: q.mode,
            scope: q.scope,
            priority: q.priority,
            owner: q.owner,
            task: r.try_get(extra)?,
            hostname: r.try_get(extra + 1)?,
            pid: pid as u32,
            since: Wall(r.try_get::<_, i64>(extra + 3)? as u64),
            waited: ctx.now.mono.since(Mono(since.max(0) as u64)),
        };
        found.push(((q.priority, q.seq), info));
    }
    Ok(locksmith_core::view::waiter_list(found, f))
}

/// Where the events after id `after` stand (see `PgStore::history`).
pub(crate) enum Run {
    /// There are none.
    Nothing,
    /// Every id after `after` follows it without a gap, up to this one:
    /// they are all final.
    Upto(i64),
    /// An id is missing (it may still commit), or there were too many to
    /// look at in one read.
    Gap,
}

/// Reads the ids after `after` (at most a page of them) to tell whether
/// they all follow it without a gap. A filtered reader moves on only with
/// the events it gets: were it answered up to a gap with none of its own,
/// it would ask again from the same place for ever.
pub(crate) fn run_end(tx: &mut Tx<'_>, after: i64) -> Result<Run, Fail> {
    const PAGE: usize = 10_000;
    let ids = tx.rows(
        &format!("SELECT id FROM events WHERE id > $1 ORDER BY id LIMIT {PAGE}"),
        &[&after],
    )?;
    let mut end = None;
    for (r, want) in ids.iter().zip(after + 1..) {
        let id: i64 = r.try_get(0)?;
        if id != want {
            return Ok(Run::Gap);
        }
        end = Some(id);
    }
    Ok(match end {
        None => Run::Nothing,
        Some(_) if ids.len() == PAGE => Run::Gap,
        Some(end) => Run::Upto(end),
    })
}

/// The events `f` asks for, newest first; none above id `upto`.
pub(crate) fn history(
    tx: &mut Tx<'_>,
    f: &HistoryFilter,
    upto: Option<i64>,
) -> Result<Vec<Event>, Fail> {
    let mut w = Filter::default();
    if let Some(k) = &f.key {
        if f.prefix {
            w.add("key >= $", k.clone());
            w.add("key < $", prefix_end(k));
        } else {
            w.add("key = $", k.clone());
        }
    }
    if let Some(o) = &f.owner {
        w.add("owner = $", o.clone());
    }
    if let Some(kind) = f.kind {
        w.add("kind = $", kind.name().to_string());
    }
    if let Some(after) = f.after {
        w.add("id > $", after);
    }
    if let Some(upto) = upto {
        w.add("id <= $", upto);
    }
    let limit = match f.limit {
        0 => String::new(),
        n => format!(" LIMIT {n}"),
    };
    let sql = format!(
        "SELECT id, at_wall, key, kind, owner, task, fence, grant_id, reason, detail FROM events
         WHERE {} ORDER BY id DESC{limit}",
        w.sql()
    );
    let mut out = Vec::new();
    for r in tx.rows(&sql, &w.args())? {
        let kind: String = r.try_get(3)?;
        let reason: Option<String> = r.try_get(8)?;
        let detail: Option<String> = r.try_get(9)?;
        out.push(Event {
            id: r.try_get(0)?,
            at: Wall(r.try_get::<_, i64>(1)? as u64),
            key: r.try_get(2)?,
            kind: EventKind::from_name(&kind).unwrap_or(EventKind::Released),
            owner: r.try_get(4)?,
            task: r.try_get(5)?,
            fence: r.try_get::<_, Option<i64>>(6)?.map(|f| Fence(f as u64)),
            grant: r.try_get(7)?,
            reason: reason.and_then(|r| r.parse().ok()),
            detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
        });
    }
    Ok(out)
}

pub(crate) fn stats(tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Result<Stats, Fail> {
    let mut group = |sql: &str| -> Result<BTreeMap<String, u64>, Fail> {
        tx.rows(sql, &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)? as u64)))
            .collect()
    };
    let events = group("SELECT kind, count(*) FROM events GROUP BY kind")?;
    let releases =
        group("SELECT reason, count(*) FROM events WHERE reason IS NOT NULL GROUP BY reason")?;
    let unhealthy = list(
        tx,
        ctx,
        &ListFilter {
            unhealthy: true,
            ..Default::default()
        },
    )?
    .len() as u64;
    let first = tx.opt("SELECT at_wall FROM events ORDER BY id LIMIT 1", &[])?;
    let history_since = match first {
        Some(r) => Some(Wall(r.try_get::<_, i64>(0)? as u64)),
        None => None,
    };
    // Ended tenures still in the table (nobody touched them since) are not held.
    let held: i64 = tx
        .one(
            "SELECT count(*) FROM holds WHERE (expires_mono IS NULL OR expires_mono > $1)
               AND (max_hold_ms IS NULL OR acquired_mono + max_hold_ms * 1000 > $1)",
            &[&(ctx.now.mono.0 as i64)],
        )?
        .try_get(0)?;
    let waiting =
        locksmith_core::view::requests_waiting(&waiters(tx, ctx, &ListFilter::default())?);
    let last_fence: i64 = tx
        .one(
            "SELECT coalesce(greatest(
                 (SELECT max(fence) FROM events WHERE kind = 'acquired'),
                 (SELECT max(fence) FROM holds)), 0)",
            &[],
        )?
        .try_get(0)?;
    Ok(Stats {
        held: held as u64,
        waiting,
        unhealthy,
        events,
        releases,
        last_fence: last_fence as u64,
        history_since,
        waits: waits(tx)?,
        success_rate: success_rate(tx)?,
    })
}

/// Waiting times recorded with grants (`waited_ms` in the detail).
fn waits(tx: &mut Tx<'_>) -> Result<locksmith_core::WaitStats, Fail> {
    let r = tx.one(
        "SELECT count(w), avg(w)::float8, max(w),
                percentile_disc(0.99) WITHIN GROUP (ORDER BY w)
           FROM (SELECT (detail::jsonb ->> 'waited_ms')::int8 AS w FROM events
                  WHERE kind = 'acquired' AND detail IS NOT NULL) AS x
          WHERE w IS NOT NULL",
        &[],
    )?;
    let count: i64 = r.try_get(0)?;
    let avg: Option<f64> = r.try_get(1)?;
    let max: Option<i64> = r.try_get(2)?;
    let p99: Option<i64> = r.try_get(3)?;
    Ok(locksmith_core::WaitStats {
        count: count as u64,
        avg_ms: avg,
        p99_ms: p99.map(|v| v.max(0) as u64),
        max_ms: max.map(|v| v.max(0) as u64),
    })
}

/// Granted ÷ (granted + timed out + deadlocks refused) in the kept history.
fn success_rate(tx: &mut Tx<'_>) -> Result<Option<f64>, Fail> {
    let r = tx.one(
        "SELECT count(*) FILTER (WHERE kind = 'acquired'),
                count(*) FILTER (WHERE kind IN ('wait_timed_out', 'deadlock_refused'))
           FROM events WHERE kind IN ('acquired', 'wait_timed_out', 'deadlock_refused')",
        &[],
    )?;
    let (good, bad): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
    Ok(match good + bad {
        0 => None,
        all => Some(good as f64 / all as f64),
    })
}

/// Deletes history older than the store's retention (recorded in `meta`,
/// lengthened to the caller's when the caller asks for more), oldest first,
/// at most 10 000 events per call. Age is judged from the earlier of the
/// database's clock and the newest event.
pub(crate) fn prune_history(tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Result<usize, Fail> {
    let asked = ctx.opts.history_retention.as_millis().min(i64::MAX as u128) as i64;
    let keep: i64 = tx
        .one(
            "INSERT INTO meta (k, v) VALUES ('history_retention_ms', $1::int8::text)
             ON CONFLICT (k) DO UPDATE SET v = greatest(meta.v::int8, excluded.v::int8)::text
             RETURNING v::int8",
            &[&asked],
        )?
        .try_get(0)?;
    let Some(newest) = tx.opt("SELECT at_wall FROM events ORDER BY id DESC LIMIT 1", &[])? else {
        return Ok(0);
    };
    let newest: i64 = newest.try_get(0)?;
    let cutoff = (ctx.now.wall.0 as i64).min(newest).saturating_sub(keep);
    let n: i64 = tx
        .one(
            "WITH d AS (DELETE FROM events WHERE id IN
                 (SELECT id FROM events ORDER BY id LIMIT 10000) AND at_wall < $1 RETURNING 1)
             SELECT count(*) FROM d",
            &[&cutoff],
        )?
        .try_get(0)?;
    Ok(n as usize)
}
