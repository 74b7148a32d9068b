//! The rules of holding: proving the caller holds a lock, renewing it,
//! releasing it, answering `lost` with the reason when it is not held any
//! more, an administrator's force-release, and the sweeper's second look
//! before it ends a lock.
//!
//! A store loads the holds a [`Target`] names, calls these functions, and
//! writes what they answer. What only its history knows (why a tenure ended)
//! it answers through [`Ledger`].

use std::time::Duration;

use crate::decide::Ending;
use crate::key::Key;
use crate::model::{Fence, Health, Hold, ReleaseReason};
use crate::rules;
use crate::store::{GrantedLock, Proof, Release, Renewal, StoreError, Target};
use crate::time::{Mono, Now};
use crate::view::{lock_info, wall_at};

/// A renewal writes a `renewed` event at most this often per tenure.
pub const RENEW_EVENT_EVERY: Duration = Duration::from_secs(60);

/// What a store's history and tables answer about tenures that ended.
pub trait Ledger {
    /// The owners holding `key` now.
    fn holders_of(&mut self, key: &Key) -> Result<Vec<String>, StoreError>;
    /// Why the newest tenure of `key` by grant `grant` (or by `owner`)
    /// ended, if the history knows.
    fn why_ended(
        &mut self,
        key: &Key,
        grant: Option<i64>,
        owner: Option<&str>,
    ) -> Result<Option<ReleaseReason>, StoreError>;
    /// The newest key of grant `grant` that was taken from its holder (not
    /// released by it), and why.
    fn taken_from_grant(&mut self, grant: i64) -> Result<Option<(Key, ReleaseReason)>, StoreError>;
    /// The keys grant `grant` holds now, on any key (asked only on the rare
    /// path of a handle used for a key its grant does not hold).
    fn keys_of_grant(&mut self, grant: i64) -> Result<Vec<Key>, StoreError>;
    /// The OS user (uid) of the calling process, where the store can tell
    /// (a local store: the process it runs in) and the caller runs on the
    /// machine of `holder` (a uid means nothing on another machine); `None`
    /// checks no user.
    fn caller_uid(&self, holder: &crate::model::Holder) -> Option<u32> {
        let _ = holder;
        None
    }
}

/// What the holds named by a target are, as the store should load them.
#[derive(Clone, Debug, PartialEq)]
pub enum Named {
    /// Every hold of grant `grant` (the handle's grant id): the one on `key`
    /// and, for a grant of several keys, the others.
    Grant(i64, Key),
    /// The holds of `key` by `owner`.
    Owner(Key, String),
}

/// A force-release that names the fence its administrator saw ends
/// nothing while a newer tenure holds the key (`held`: the fences held on
/// it now), so that a newer holder than the one seen is never pushed out.
pub fn force_seen(
    key: &Key,
    held: impl IntoIterator<Item = Fence>,
    seen: Option<Fence>,
) -> Result<(), StoreError> {
    match (seen, held.into_iter().max()) {
        (Some(seen), Some(newest)) if newest > seen => Err(StoreError::Newer {
            key: key.clone(),
            fence: newest,
            seen,
        }),
        _ => Ok(()),
    }
}

/// Which holds to load for `target`; a malformed handle is refused.
pub fn named(target: &Target) -> Result<Named, StoreError> {
    match &target.by {
        Proof::Handle(h) => h
            .grant()
            .map(|g| Named::Grant(g, target.key.clone()))
            .ok_or_else(|| {
                StoreError::Invalid(
                    "malformed lease handle: expected lh1.<grant>.<secret> as printed by acquire"
                        .into(),
                )
            }),
        Proof::Owner(o) => Ok(Named::Owner(target.key.clone(), o.clone())),
    }
}

/// Checks the proof against the loaded holds: a handle whose secret does
/// not match is refused as not the holder; an owner name is refused to an
/// OS user other than the one that took the grant (root excepted), which
/// must use the handle.
fn prove(target: &Target, rows: &[Hold], ledger: &mut dyn Ledger) -> Result<(), StoreError> {
    match &target.by {
        Proof::Handle(h)
            if rows
                .iter()
                .any(|r| !crate::model::same_secret(&r.secret, h.secret())) =>
        {
            Err(not_holder(&target.key, ledger)?)
        }
        Proof::Owner(owner) => match other_user(rows, &*ledger) {
            Some(uid) => Err(StoreError::OtherUser {
                key: target.key.clone(),
                owner: owner.clone(),
                uid,
            }),
            None => Ok(()),
        },
        Proof::Handle(_) => Ok(()),
    }
}

/// The uid of a hold in `rows` taken by an OS user other than the caller,
/// on the caller's machine (root may act for any user; unknown uids, and
/// holds of other machines, are not checked).
fn other_user(rows: &[Hold], ledger: &dyn Ledger) -> Option<u32> {
    rows.iter().find_map(|r| {
        let caller = ledger.caller_uid(&r.lock.holder).filter(|&c| c != 0)?;
        r.uid.filter(|&u| u != caller)
    })
}

fn not_holder(key: &Key, ledger: &mut dyn Ledger) -> Result<StoreError, StoreError> {
    let holders = ledger.holders_of(key)?;
    Ok(StoreError::NotHolder {
        key: key.clone(),
        holders: if holders.is_empty() {
            "nobody".into()
        } else {
            holders.join(", ")
        },
    })
}

/// A handle of a live grant that never held `key` names another lock:
/// refused, rather than answered as if that lock had ended.
fn other_lock(target: &Target, rows: &[Hold], ledger: &mut dyn Ledger) -> Result<(), StoreError> {
    let Proof::Handle(h) = &target.by else {
        return Ok(());
    };
    let Some(grant) = h.grant() else {
        return Ok(());
    };
    if rows.iter().any(|r| r.lock.key == target.key)
        || ledger.why_ended(&target.key, Some(grant), None)?.is_some()
    {
        return Ok(());
    }
    let keys: Vec<Key> = match rows.is_empty() {
        false => rows.iter().map(|r| r.lock.key.clone()).collect(),
        true => ledger.keys_of_grant(grant)?,
    };
    if keys.is_empty() {
        return Ok(());
    }
    if !ledger.holders_of(&target.key)?.is_empty() {
        return Err(not_holder(&target.key, ledger)?);
    }
    let names: Vec<&str> = keys.iter().map(Key::as_str).collect();
    Err(StoreError::Invalid(format!(
        "this lease handle is for {}, not {}; nothing was changed",
        names.join(", "),
        target.key
    )))
}

/// The caller holds nothing on the key: why its tenure ended, from the
/// history. An owner whose own tenure ended (released twice, expired,
/// forced) is told so; an owner who never held the key, while another does,
/// is refused.
fn no_longer_held(
    target: &Target,
    ledger: &mut dyn Ledger,
) -> Result<Option<ReleaseReason>, StoreError> {
    let (grant, owner) = match &target.by {
        Proof::Handle(h) => (h.grant(), None),
        Proof::Owner(o) => (None, Some(o.as_str())),
    };
    let reason = ledger.why_ended(&target.key, grant, owner)?;
    if owner.is_some() && reason.is_none() && !ledger.holders_of(&target.key)?.is_empty() {
        return Err(not_holder(&target.key, ledger)?);
    }
    Ok(reason)
}

fn ending(h: &Hold, reason: ReleaseReason) -> Ending {
    Ending {
        key: h.lock.key.clone(),
        scope: h.lock.scope,
        fence: h.lock.fence,
        reason,
        detail: None,
    }
}

/// One tenure extended by a renewal.
#[derive(Clone, Debug, PartialEq)]
pub struct Extension {
    /// Its key.
    pub key: Key,
    /// Its fence.
    pub fence: Fence,
    /// The new lease deadline.
    pub expires: Option<Mono>,
    /// The lease length from now on.
    pub ttl: Option<Duration>,
    /// Record a `renewed` event (sampled, see [`RENEW_EVENT_EVERY`]).
    pub log: bool,
}

/// What a renewal writes and answers.
#[derive(Clone, Debug, PartialEq)]
pub struct RenewPlan {
    /// Tenures found over by themselves, to end first.
    pub end: Vec<Ending>,
    /// Tenures to extend.
    pub extend: Vec<Extension>,
    /// The answer.
    pub answer: Renewal,
}

/// Renews every lock the target names. `rows` are the holds loaded for
/// [`named`]; `ttl` replaces the lease length.
pub fn renew(
    target: &Target,
    rows: Vec<Hold>,
    ttl: Option<Duration>,
    now: Now,
    ledger: &mut dyn Ledger,
) -> Result<RenewPlan, StoreError> {
    crate::validate::check_ttl(ttl)?;
    prove(target, &rows, ledger)?;
    other_lock(target, &rows, ledger)?;
    let mut end = Vec::new();
    let mut live = Vec::new();
    for row in rows {
        match rules::ended(&row.lock, now.mono) {
            Some(reason) => end.push(ending(&row, reason)),
            None => live.push(row),
        }
    }
    let lost = |key: Key, reason: Option<ReleaseReason>, end: Vec<Ending>| RenewPlan {
        end,
        extend: Vec::new(),
        answer: Renewal::Lost { key, reason },
    };
    if !live.iter().any(|r| r.lock.key == target.key) {
        // Ended just now (found over by itself), or earlier: the history says why.
        let reason = match end.iter().rev().find(|e| e.key == target.key) {
            Some(e) => Some(e.reason),
            None => no_longer_held(target, ledger)?,
        };
        return Ok(lost(target.key.clone(), reason, end));
    }
    // A grant of several keys is held only while all of them are: losing
    // any one (forced, expired, reaped) is losing the grant.
    // (Only a handle names the whole grant; an owner names one key.)
    if let Proof::Handle(_) = target.by
        && let Some(first) = live.first()
        && (live.len() as u32) < first.grant_keys
    {
        let taken = match end.last() {
            Some(e) => Some((e.key.clone(), e.reason)),
            None => ledger.taken_from_grant(first.lock.grant)?,
        };
        if let Some((key, reason)) = taken {
            return Ok(lost(key, Some(reason), end));
        }
    }
    let mut extend = Vec::new();
    let mut locks = Vec::new();
    for row in &live {
        let ttl = ttl.or(row.lock.ttl);
        let expires = ttl.map(|t| now.mono.plus(t));
        extend.push(Extension {
            key: row.lock.key.clone(),
            fence: row.lock.fence,
            expires,
            ttl,
            log: now.mono.since(row.renew_logged) >= RENEW_EVENT_EVERY,
        });
        locks.push(GrantedLock {
            key: row.lock.key.clone(),
            fence: row.lock.fence,
            expires_at: expires.map(|e| wall_at(now, e)),
        });
    }
    Ok(RenewPlan {
        end,
        extend,
        answer: Renewal::Renewed { locks },
    })
}

/// What a release writes and answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleasePlan {
    /// Tenures to end, in order.
    pub end: Vec<Ending>,
    /// The answer.
    pub answer: Release,
}

/// Ends the caller's tenure of the target's key, or with `whole_grant`
/// every tenure of the handle's grant. `rows` are the holds loaded for
/// [`named`]. A tenure that ended by itself is recorded as such, not as
/// released, and answered as not held.
pub fn release(
    target: &Target,
    rows: Vec<Hold>,
    reason: ReleaseReason,
    whole_grant: bool,
    now: Now,
    ledger: &mut dyn Ledger,
) -> Result<ReleasePlan, StoreError> {
    prove(target, &rows, ledger)?;
    other_lock(target, &rows, ledger)?;
    let mine: Vec<Hold> = if whole_grant {
        rows
    } else {
        rows.into_iter()
            .filter(|r| r.lock.key == target.key)
            .collect()
    };
    if !whole_grant && mine.len() > 1 {
        return Err(StoreError::Invalid(format!(
            "{} holds {} {} times (a shared lock taken by several processes); release by lease handle to say which",
            mine[0].lock.holder.owner,
            target.key,
            mine.len()
        )));
    }
    if mine.is_empty() {
        let reason = no_longer_held(target, ledger)?;
        return Ok(ReleasePlan {
            end: Vec::new(),
            answer: Release::NotHeld {
                key: target.key.clone(),
                reason,
            },
        });
    }
    let mut end = Vec::new();
    let mut answer = None;
    for row in &mine {
        match rules::ended(&row.lock, now.mono) {
            Some(ended) => {
                end.push(ending(row, ended));
                // Report a key that was no longer held before one that was.
                answer = Some(Release::NotHeld {
                    key: row.lock.key.clone(),
                    reason: Some(ended),
                });
            }
            None => {
                end.push(ending(row, reason));
                answer.get_or_insert(Release::Released {
                    key: row.lock.key.clone(),
                    fence: row.lock.fence,
                    held_for: now.mono.since(row.lock.acquired),
                });
            }
        }
    }
    let mut answer = answer.expect("at least one hold");
    // A whole grant missing a key that was taken from it was lost.
    if whole_grant
        && matches!(answer, Release::Released { .. })
        && (mine.len() as u32) < mine[0].grant_keys
        && let Some((key, reason)) = ledger.taken_from_grant(mine[0].lock.grant)?
    {
        answer = Release::NotHeld {
            key,
            reason: Some(reason),
        };
    }
    Ok(ReleasePlan { end, answer })
}

/// One lock the sweeper means to end: its tenure and the rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reap {
    /// The key.
    pub key: Key,
    /// The tenure's fence.
    pub fence: Fence,
    /// The rule that ends it.
    pub reason: ReleaseReason,
}

/// The sweeper's second look, inside the store's transaction: true when
/// `reason` still holds for the loaded hold now. A renewal between the
/// sweeper's scan and this look saves the lock.
pub fn still_due(
    hold: &Hold,
    reason: ReleaseReason,
    now: Now,
    stale_after: Duration,
) -> Result<bool, StoreError> {
    Ok(match reason {
        ReleaseReason::LeaseExpired | ReleaseReason::MaxHold => {
            rules::ended(&hold.lock, now.mono) == Some(reason)
        }
        ReleaseReason::DeadProcess => hold.alive == Some(false),
        ReleaseReason::StaleTimeout => {
            lock_info(&hold.lock, hold.alive, now, stale_after).health == Health::Stale
        }
        ReleaseReason::TaskCompleted => true,
        other => {
            return Err(StoreError::Invalid(format!(
                "{other} is not a reason the sweeper ends locks for"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Holder, Mode, Scope};
    use crate::time::{Mono, Wall};

    /// A ledger of one transaction whose caller runs as `caller`.
    struct Caller(Option<u32>);

    impl Ledger for Caller {
        fn holders_of(&mut self, _: &Key) -> Result<Vec<String>, StoreError> {
            Ok(vec!["worker".into()])
        }
        fn why_ended(
            &mut self,
            _: &Key,
            _: Option<i64>,
            _: Option<&str>,
        ) -> Result<Option<ReleaseReason>, StoreError> {
            Ok(None)
        }
        fn taken_from_grant(&mut self, _: i64) -> Result<Option<(Key, ReleaseReason)>, StoreError> {
            Ok(None)
        }
        fn keys_of_grant(&mut self, _: i64) -> Result<Vec<Key>, StoreError> {
            Ok(Vec::new())
        }
        fn caller_uid(&self, holder: &Holder) -> Option<u32> {
            self.0.filter(|_| holder.hostname == "host")
        }
    }

    /// A hold of `team/a` by owner `worker` on host `host`, taken as `uid`.
    fn held_by(uid: Option<u32>) -> Hold {
        let mut lock = crate::rules::tests::held("team/a", Mode::Exclusive, Scope::Key, 7);
        lock.holder.owner = "worker".into();
        Hold {
            lock,
            secret: "s".into(),
            grant_keys: 1,
            renew_logged: Mono(0),
            alive: None,
            uid,
        }
    }

    fn release_as(rows: Vec<Hold>, caller: Option<u32>) -> Result<ReleasePlan, StoreError> {
        let target = Target {
            key: Key::new("team/a").unwrap(),
            by: Proof::Owner("worker".into()),
        };
        release(
            &target,
            rows,
            ReleaseReason::Completed,
            false,
            NOW,
            &mut Caller(caller),
        )
    }

    const NOW: Now = Now {
        mono: Mono(1),
        wall: Wall(1),
    };

    #[test]
    fn by_owner_name_only_the_same_os_user_or_root_ends_a_lock() {
        for (held, caller) in [
            (Some(1000), Some(1000)),
            (Some(1000), Some(0)),
            (None, Some(1000)),
            (Some(1000), None),
        ] {
            let plan = release_as(vec![held_by(held)], caller).unwrap();
            assert_eq!(plan.end.len(), 1, "{held:?} by {caller:?}");
        }
        match release_as(vec![held_by(Some(1000))], Some(1001)) {
            Err(StoreError::OtherUser {
                uid: 1000, owner, ..
            }) => assert_eq!(owner, "worker"),
            other => panic!("another user by name: {other:?}"),
        }
        let target = Target {
            key: Key::new("team/a").unwrap(),
            by: Proof::Owner("worker".into()),
        };
        let renewed = renew(
            &target,
            vec![held_by(Some(1000))],
            None,
            NOW,
            &mut Caller(Some(1001)),
        );
        assert!(
            matches!(renewed, Err(StoreError::OtherUser { .. })),
            "{renewed:?}"
        );
        // A uid of another machine is another numbering: not checked.
        let mut elsewhere = held_by(Some(1000));
        elsewhere.lock.holder.hostname = "other".into();
        let plan = release_as(vec![elsewhere], Some(1001)).unwrap();
        assert_eq!(plan.end.len(), 1);
    }
}
