//! Renew, release and force-release: proving the caller holds the lock,
//! answering `lost` with the reason when it does not any more.

use std::time::Duration;

use locksmith_core::store::{GrantedLock, LockInfo, Proof, Release, Renewal, Target};
use locksmith_core::{EventKind, Fence, Health, Key, ReleaseReason, StoreError, rules};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::json;

use crate::Ctx;
use crate::acquire::wake_list;
use crate::open::map_err;
use crate::rows::{self, HoldRow, NewEvent, end_hold, load_holds, lock_info, record};

/// A renewal writes a `renewed` event at most this often per grant.
const RENEW_EVENT_EVERY: Duration = Duration::from_secs(60);

/// Why the caller's last tenure of `key` ended, from the history.
fn ended_reason(
    tx: &Transaction<'_>,
    key: &Key,
    grant: Option<i64>,
    owner: Option<&str>,
) -> Result<Option<ReleaseReason>, StoreError> {
    let reason: Option<String> = tx
        .prepare_cached(
            "SELECT reason FROM events WHERE key = ?1 AND reason IS NOT NULL
               AND (grant_id = ?2 OR owner = ?3) ORDER BY id DESC LIMIT 1",
        )
        .map_err(map_err)?
        .query_row(params![key.as_str(), grant, owner], |r| r.get(0))
        .optional()
        .map_err(map_err)?;
    Ok(reason.and_then(|r| r.parse().ok()))
}

/// The newest key of a grant that was taken from its holder (not released
/// by it), and why.
fn lost_key_of_grant(
    tx: &Transaction<'_>,
    grant: i64,
) -> Result<Option<(Key, ReleaseReason)>, StoreError> {
    let row: Option<(String, String)> = tx
        .query_row(
            "SELECT key, reason FROM events WHERE grant_id = ?1 AND reason IS NOT NULL
               AND reason NOT IN ('completed', 'failed') ORDER BY id DESC LIMIT 1",
            [grant],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(map_err)?;
    Ok(row.and_then(|(key, reason)| Some((Key::new(key).ok()?, reason.parse().ok()?))))
}

/// The caller's holds named by `target`: `Ok(rows)` (possibly empty when
/// nothing of the caller's is held), or `NotHolder` when the key is held by
/// someone else and the proof does not match.
fn caller_holds(
    tx: &Transaction<'_>,
    target: &Target,
) -> Result<(Vec<HoldRow>, Option<i64>), StoreError> {
    match &target.by {
        Proof::Handle(h) => {
            let grant = h.grant().ok_or_else(|| {
                StoreError::Invalid(
                    "malformed lease handle: expected lh1.<grant>.<secret> as printed by acquire"
                        .into(),
                )
            })?;
            let secret = h.secret();
            // The named key's row, and the other keys of a multi-key grant.
            let mut rows = load_holds(
                tx,
                "key = ?1 AND grant_id = ?2",
                params![target.key.as_str(), grant],
            )?;
            for other in load_holds(tx, "grant_id = ?1 AND grant_keys > 1", [grant])? {
                if !rows.iter().any(|r| r.id == other.id) {
                    rows.push(other);
                }
            }
            if rows.iter().any(|r| r.secret != secret) {
                return Err(not_holder(tx, &target.key)?);
            }
            Ok((rows, Some(grant)))
        }
        Proof::Owner(owner) => {
            let rows = load_holds(
                tx,
                "key = ?1 AND owner = ?2",
                params![target.key.as_str(), owner],
            )?;
            Ok((rows, None))
        }
    }
}

fn not_holder(tx: &Transaction<'_>, key: &Key) -> Result<StoreError, StoreError> {
    let holders: Vec<String> = load_holds(tx, "key = ?1", [key.as_str()])?
        .into_iter()
        .map(|r| r.lock.holder.owner)
        .collect();
    Ok(StoreError::NotHolder {
        key: key.clone(),
        holders: if holders.is_empty() {
            "nobody".into()
        } else {
            holders.join(", ")
        },
    })
}

/// The caller holds nothing on the key: why its tenure ended, from the
/// history. An owner whose own tenure ended (released twice, expired,
/// forced) is told so; an owner who never held the key, while another does,
/// is refused.
fn no_longer_held(
    tx: &Transaction<'_>,
    target: &Target,
    grant: Option<i64>,
) -> Result<Option<ReleaseReason>, StoreError> {
    let reason = ended_reason(tx, &target.key, grant, owner_of(target))?;
    if let Proof::Owner(_) = target.by
        && reason.is_none()
        && !load_holds(tx, "key = ?1", [target.key.as_str()])?.is_empty()
    {
        return Err(not_holder(tx, &target.key)?);
    }
    Ok(reason)
}

fn owner_of(target: &Target) -> Option<&str> {
    match &target.by {
        Proof::Owner(o) => Some(o),
        Proof::Handle(_) => None,
    }
}

/// Extends every lock of the caller's grant.
pub(crate) fn renew(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    target: &Target,
    ttl: Option<Duration>,
) -> Result<Renewal, StoreError> {
    let now = ctx.now;
    crate::acquire::check_ttl(ttl)?;
    let (rows, grant) = caller_holds(tx, target)?;
    let mut live = Vec::new();
    for row in rows {
        match rules::ended(&row.lock, now.mono) {
            Some(reason) => end_hold(tx, now, &row, reason, None)?,
            None => live.push(row),
        }
    }
    if !live.iter().any(|r| r.lock.key == target.key) {
        return Ok(Renewal::Lost {
            key: target.key.clone(),
            reason: no_longer_held(tx, target, grant)?,
        });
    }
    // A grant of several keys is held only while all of them are: losing
    // any one (forced, expired, reaped) is losing the grant.
    // (Only a handle names the whole grant; an owner names one key.)
    if let Proof::Handle(_) = target.by
        && let Some(first) = live.first()
        && (live.len() as i64) < first.grant_keys
        && let Some((key, reason)) = lost_key_of_grant(tx, first.lock.grant)?
    {
        return Ok(Renewal::Lost {
            key,
            reason: Some(reason),
        });
    }
    let mut locks = Vec::new();
    for row in &live {
        let ttl = ttl.or(row.lock.ttl);
        let expires = ttl.map(|t| now.mono.plus(t));
        let log = now.mono.0 as i64 - row.renew_logged >= RENEW_EVENT_EVERY.as_micros() as i64;
        tx.prepare_cached(
            "UPDATE holds SET seen_mono = ?2, expires_mono = ?3, ttl_ms = ?4,
                renew_logged = CASE WHEN ?5 THEN ?2 ELSE renew_logged END
             WHERE key = ?6 AND fence = ?1",
        )
        .map_err(map_err)?
        .execute(params![
            row.id,
            now.mono.0 as i64,
            expires.map(|e| e.0 as i64),
            ttl.map(|t| t.as_millis() as i64),
            log,
            row.lock.key.as_str()
        ])
        .map_err(map_err)?;
        if log {
            record(
                tx,
                now,
                NewEvent::about(&row.lock, EventKind::Renewed, None),
            )?;
        }
        locks.push(GrantedLock {
            key: row.lock.key.clone(),
            fence: row.lock.fence,
            expires_at: expires.map(|e| rows::wall_at(now, e)),
        });
    }
    Ok(Renewal::Renewed { locks })
}

/// Ends the caller's tenure of the key.
pub(crate) fn release(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    target: &Target,
    reason: ReleaseReason,
) -> Result<(Release, Vec<String>), StoreError> {
    let now = ctx.now;
    let (rows, grant) = caller_holds(tx, target)?;
    let mine: Vec<HoldRow> = rows
        .into_iter()
        .filter(|r| r.lock.key == target.key)
        .collect();
    let row = match mine.as_slice() {
        [] => {
            let reason = no_longer_held(tx, target, grant)?;
            return Ok((
                Release::NotHeld {
                    key: target.key.clone(),
                    reason,
                },
                Vec::new(),
            ));
        }
        [one] => one,
        many => {
            return Err(StoreError::Invalid(format!(
                "{} holds {} {} times (a shared lock taken by several processes); release with --handle to say which",
                many[0].lock.holder.owner,
                target.key,
                many.len()
            )));
        }
    };
    // A tenure that ended by itself is recorded as such, not as released.
    let (why, out) = match rules::ended(&row.lock, now.mono) {
        Some(ended) => (
            ended,
            Release::NotHeld {
                key: target.key.clone(),
                reason: Some(ended),
            },
        ),
        None => (
            reason,
            Release::Released {
                key: row.lock.key.clone(),
                fence: row.lock.fence,
                held_for: now.mono.since(row.lock.acquired),
            },
        ),
    };
    end_hold(tx, now, row, why, None)?;
    Ok((out, wake_list(tx, ctx, &row.lock.key, row.lock.scope)?))
}

/// Ends every tenure on `key` (admin) and records the text given.
pub(crate) fn force_release(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    key: &Key,
    why: &str,
) -> Result<(Vec<LockInfo>, Vec<String>), StoreError> {
    if why.trim().is_empty() {
        return Err(StoreError::Invalid(
            "force-release needs --reason: say why the holder is pushed out".into(),
        ));
    }
    let rows = load_holds(tx, "key = ?1", [key.as_str()])?;
    let mut ended = Vec::new();
    for row in &rows {
        ended.push(lock_info(
            &row.lock,
            ctx.now,
            ctx.opts.stale_after,
            ctx.host,
        ));
        end_hold(
            tx,
            ctx.now,
            row,
            ReleaseReason::Forced,
            Some(json!({ "reason": why })),
        )?;
    }
    let wakes = match rows.first() {
        Some(r) => wake_list(tx, ctx, key, r.lock.scope)?,
        None => Vec::new(),
    };
    Ok((ended, wakes))
}

/// The sweeper's second look: ends tenure `fence` of `key` if it is still
/// held and `reason` still holds now. A renewal between the sweeper's scan
/// and this transaction saves the lock.
pub(crate) fn reap(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    key: &Key,
    fence: Fence,
    reason: ReleaseReason,
) -> Result<(bool, Vec<String>), StoreError> {
    let rows = load_holds(
        tx,
        "key = ?1 AND fence = ?2",
        params![key.as_str(), fence.0 as i64],
    )?;
    let Some(row) = rows.first() else {
        return Ok((false, Vec::new()));
    };
    let still = match reason {
        ReleaseReason::LeaseExpired | ReleaseReason::MaxHold => {
            rules::ended(&row.lock, ctx.now.mono) == Some(reason)
        }
        ReleaseReason::DeadProcess => rows::process_alive(&row.lock, ctx.host) == Some(false),
        ReleaseReason::StaleTimeout => {
            lock_info(&row.lock, ctx.now, ctx.opts.stale_after, ctx.host).health == Health::Stale
        }
        ReleaseReason::TaskCompleted => true,
        other => {
            return Err(StoreError::Invalid(format!(
                "{other} is not a reason the sweeper ends locks for"
            )));
        }
    };
    if !still {
        return Ok((false, Vec::new()));
    }
    end_hold(tx, ctx.now, row, reason, None)?;
    Ok((true, wake_list(tx, ctx, key, row.lock.scope)?))
}
