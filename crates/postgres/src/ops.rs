//! Renew, release, force-release and reap: load the holds a request names,
//! ask the rules of holding ([`locksmith_core::tenure`]), write the answer,
//! and name whoever the change may let in. The caller holds the key locks.

use std::time::Duration;

use locksmith_core::tenure::{self, Ledger, Named, Reap};
use locksmith_core::{
    Hold, Key, LockInfo, Release, ReleaseReason, Renewal, Scope, StoreError, Target, validate,
};
use locksmith_host::life::observe;
use serde_json::json;

use crate::Ctx;
use crate::acquire::wake_list;
use crate::conn::{Fail, Tx, map_err};
use crate::rows::{NewEvent, apply_endings, end_hold, load_holds, record};

/// What the history and tables answer about ended tenures.
struct History<'t, 'c>(&'t mut Tx<'c>);

impl History<'_, '_> {
    fn store(&self, e: Fail) -> StoreError {
        match e {
            Fail::Store(e) => e,
            Fail::Db(e) | Fail::Commit(e) => map_err(e, self.0.shown()),
        }
    }
}

impl Ledger for History<'_, '_> {
    fn holders_of(&mut self, key: &Key) -> Result<Vec<String>, StoreError> {
        let rows = load_holds(self.0, "key = $1 ORDER BY fence", &[&key.as_str()]);
        Ok(rows
            .map_err(|e| self.store(e))?
            .into_iter()
            .map(|h| h.lock.holder.owner)
            .collect())
    }

    fn why_ended(
        &mut self,
        key: &Key,
        grant: Option<i64>,
        owner: Option<&str>,
    ) -> Result<Option<ReleaseReason>, StoreError> {
        let row = self.0.opt(
            "SELECT reason FROM events WHERE key = $1 AND reason IS NOT NULL
               AND (grant_id = $2 OR owner = $3) ORDER BY id DESC LIMIT 1",
            &[&key.as_str(), &grant, &owner],
        );
        let reason: Option<String> = match row.map_err(|e| self.store(e))? {
            Some(r) => r.try_get(0).map_err(|e| self.store(e.into()))?,
            None => None,
        };
        Ok(reason.and_then(|r| r.parse().ok()))
    }

    fn taken_from_grant(&mut self, grant: i64) -> Result<Option<(Key, ReleaseReason)>, StoreError> {
        let row = self.0.opt(
            "SELECT key, reason FROM events WHERE grant_id = $1 AND reason IS NOT NULL
               AND reason NOT IN ('completed', 'failed') ORDER BY id DESC LIMIT 1",
            &[&grant],
        );
        let Some(r) = row.map_err(|e| self.store(e))? else {
            return Ok(None);
        };
        let (key, reason): (String, String) = (
            r.try_get(0).map_err(|e| self.store(e.into()))?,
            r.try_get(1).map_err(|e| self.store(e.into()))?,
        );
        Ok(Key::new(key).ok().zip(reason.parse().ok()))
    }

    fn keys_of_grant(&mut self, grant: i64) -> Result<Vec<Key>, StoreError> {
        let rows = load_holds(self.0, "grant_id = $1 ORDER BY fence", &[&grant]);
        Ok(rows
            .map_err(|e| self.store(e))?
            .into_iter()
            .map(|h| h.lock.key)
            .collect())
    }
}

/// The holds a target names.
fn named(tx: &mut Tx<'_>, target: &Target) -> Result<Vec<Hold>, Fail> {
    match tenure::named(target)? {
        Named::Grant(grant, key) => load_holds(
            tx,
            "(key = $1 AND grant_id = $2) OR (grant_id = $2 AND grant_keys > 1) ORDER BY fence",
            &[&key.as_str(), &grant],
        ),
        Named::Owner(key, owner) => load_holds(
            tx,
            "key = $1 AND owner = $2 ORDER BY fence",
            &[&key.as_str(), &owner],
        ),
    }
}

/// The holds a target names, once the transaction also holds the key
/// locks of the grant's other keys (it holds the target key's already).
/// A grant's keys never change; holds of them may only end meanwhile, so
/// they are read again under the locks.
fn named_locked(tx: &mut Tx<'_>, ctx: &Ctx<'_>, target: &Target) -> Result<Vec<Hold>, Fail> {
    let rows = named(tx, target)?;
    let more: Vec<(Key, Scope)> = rows
        .iter()
        .filter(|r| r.lock.key != target.key)
        .map(|r| (r.lock.key.clone(), r.lock.scope))
        .collect();
    if more.is_empty() {
        return Ok(rows);
    }
    tx.lock_more(ctx.ns, &more)?;
    named(tx, target)
}

/// Extends every lock of the caller's grant.
pub(crate) fn renew(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    target: &Target,
    ttl: Option<Duration>,
) -> Result<Renewal, Fail> {
    let now = ctx.now;
    let rows = named_locked(tx, ctx, target)?;
    let plan = tenure::renew(target, rows.clone(), ttl, now, &mut History(&mut *tx))?;
    apply_endings(tx, now, &rows, plan.end)?;
    for ext in &plan.extend {
        tx.exec(
            "UPDATE holds SET seen_mono = $2, expires_mono = $3, ttl_ms = $4,
                renew_logged = CASE WHEN $5 THEN $2 ELSE renew_logged END
             WHERE key = $6 AND fence = $1",
            &[
                &(ext.fence.0 as i64),
                &(now.mono.0 as i64),
                &ext.expires.map(|e| e.0 as i64),
                &ext.ttl.map(|t| t.as_millis() as i64),
                &ext.log,
                &ext.key.as_str(),
            ],
        )?;
        if ext.log
            && let Some(row) = rows
                .iter()
                .find(|r| r.lock.key == ext.key && r.lock.fence == ext.fence)
        {
            record(
                tx,
                now,
                NewEvent::about(&row.lock, locksmith_core::EventKind::Renewed, None),
            )?;
        }
    }
    Ok(plan.answer)
}

/// Ends the caller's tenure of the key, or of the whole grant.
pub(crate) fn release(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    target: &Target,
    reason: ReleaseReason,
    whole_grant: bool,
) -> Result<(Release, Vec<String>), Fail> {
    let rows = named_locked(tx, ctx, target)?;
    let plan = tenure::release(
        target,
        rows.clone(),
        reason,
        whole_grant,
        ctx.now,
        &mut History(&mut *tx),
    )?;
    let freed: Vec<_> = plan.end.iter().map(|e| (e.key.clone(), e.scope)).collect();
    apply_endings(tx, ctx.now, &rows, plan.end)?;
    Ok((plan.answer, wake_list(tx, ctx, freed)?))
}

/// Ends every tenure on `key` (admin) and records the text given.
pub(crate) fn force_release(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    key: &Key,
    why: &str,
    by: Option<&str>,
    seen: Option<locksmith_core::Fence>,
) -> Result<(Vec<LockInfo>, Vec<String>), Fail> {
    validate::force(why, by)?;
    let rows = observe(
        load_holds(tx, "key = $1 ORDER BY fence", &[&key.as_str()])?,
        ctx.host,
    );
    tenure::force_seen(key, rows.iter().map(|r| r.lock.fence), seen)?;
    let mut ended = Vec::new();
    for row in &rows {
        ended.push(locksmith_core::view::lock_info(
            &row.lock,
            row.alive,
            ctx.now,
            ctx.opts.stale_after,
        ));
        end_hold(
            tx,
            ctx.now,
            &row.lock,
            ReleaseReason::Forced,
            Some(match by {
                Some(by) => json!({ "reason": why, "by": by }),
                None => json!({ "reason": why }),
            }),
        )?;
    }
    let freed = rows.first().map(|r| (key.clone(), r.lock.scope));
    Ok((ended, wake_list(tx, ctx, freed)?))
}

/// The sweeper's second look for a batch: ends each tenure if it is still
/// held and its rule still holds now. A renewal between the sweeper's scan
/// and this transaction saves the lock.
pub(crate) fn reap(
    tx: &mut Tx<'_>,
    ctx: &Ctx<'_>,
    batch: &[Reap],
) -> Result<(Vec<bool>, Vec<String>), Fail> {
    let mut out = Vec::with_capacity(batch.len());
    let mut freed = Vec::new();
    for r in batch {
        let rows = load_holds(
            tx,
            "key = $1 AND fence = $2",
            &[&r.key.as_str(), &(r.fence.0 as i64)],
        )?;
        let Some(row) = observe(rows, ctx.host).pop() else {
            out.push(false);
            continue;
        };
        if !tenure::still_due(&row, r.reason, ctx.now, ctx.opts.stale_after)? {
            out.push(false);
            continue;
        }
        end_hold(tx, ctx.now, &row.lock, r.reason, None)?;
        freed.push((r.key.clone(), row.lock.scope));
        out.push(true);
    }
    Ok((out, wake_list(tx, ctx, freed)?))
}
