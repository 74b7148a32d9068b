//! The steps of every store call, once for all stores: what to load, in
//! which order, which rule to ask ([`crate::decide`], [`crate::tenure`]),
//! and what to write. A store implements [`Tables`] over its own
//! transaction (the SQL of its database, the facts of its host) and runs
//! these functions inside it; no store sequences a call by itself.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::decide::{self, Decision, Need, Outcome, Policy, Queued, Snapshot, Step};
use crate::key::Key;
use crate::model::{EventKind, Fence, HeldLock, Hold, Holder, ReleaseReason, Scope};
use crate::store::{
    AcquireRequest, Attempt, Grant, LeaveReason, LockInfo, Release, Renewal, StoreError, Target,
    Ticket,
};
use crate::tenure::{self, Extension, Ledger, Reap};
use crate::time::{Mono, Now};
use crate::validate;

/// One history line, as a store writes it.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    /// The key (the first key of a request of several).
    pub key: &'a str,
    /// What happened.
    pub kind: EventKind,
    /// Who.
    pub owner: &'a str,
    /// The task, if any.
    pub task: Option<&'a str>,
    /// The fence of the tenure, if it is about one.
    pub fence: Option<Fence>,
    /// The grant, if it is about one.
    pub grant: Option<i64>,
    /// Why a tenure ended.
    pub reason: Option<ReleaseReason>,
    /// More, as JSON.
    pub detail: Option<serde_json::Value>,
}

impl<'a> NewEvent<'a> {
    /// An event about a held tenure.
    pub fn about(lock: &'a HeldLock, kind: EventKind, reason: Option<ReleaseReason>) -> Self {
        NewEvent {
            key: lock.key.as_str(),
            kind,
            owner: &lock.holder.owner,
            task: lock.holder.task.as_deref(),
            fence: Some(lock.fence),
            grant: Some(lock.grant),
            reason,
            detail: None,
        }
    }
}

/// A store's tables inside one transaction, in domain terms: the loads the
/// rules ask for (holds with the liveness this host can tell) and the
/// writes they decide.
pub trait Tables: Ledger {
    /// The instant of the transaction.
    fn now(&self) -> Now;
    /// The store settings the rules read.
    fn policy(&self) -> Policy;
    /// Every hold that could bear on `key` with `scope` (the key, tree holds
    /// on its ancestors, and for a tree every hold below it), with what this
    /// host can tell about its holder's liveness.
    fn holds_touching(&mut self, key: &Key, scope: Scope) -> Result<Vec<Hold>, StoreError>;
    /// The same locks, without looking at their holders.
    fn locks_touching(&mut self, key: &Key, scope: Scope) -> Result<Vec<HeldLock>, StoreError>;
    /// The holds granted under `request_id` to `owner`, fence order.
    fn holds_of_request(&mut self, request_id: &str, owner: &str) -> Result<Vec<Hold>, StoreError>;
    /// The holds a renew or release names (see [`tenure::named`]), fence
    /// order, with whatever the store must hold to change them.
    fn holds_named(&mut self, target: &Target) -> Result<Vec<Hold>, StoreError>;
    /// The holds on exactly `key`, fence order.
    fn holds_on(&mut self, key: &Key) -> Result<Vec<Hold>, StoreError>;
    /// The hold of `key` with `fence`, if it is still there.
    fn hold(&mut self, key: &Key, fence: Fence) -> Result<Option<Hold>, StoreError>;
    /// Queue entries that bear on `key` with `scope`, appended to `out`.
    fn queue_touching(
        &mut self,
        key: &Key,
        scope: Scope,
        out: &mut Vec<Queued>,
    ) -> Result<(), StoreError>;
    /// Every queue entry, for the deadlock search.
    fn queue_all(&mut self) -> Result<Vec<Queued>, StoreError>;
    /// The caller's own entry `seq`: when its place lapses, when it joined.
    fn queue_own(&mut self, seq: i64) -> Result<Option<(Mono, Mono)>, StoreError>;
    /// Who queued entry `seq`, and its keys (with whatever the store must
    /// hold to change them); `None` when it is gone.
    fn queue_entry(&mut self, seq: i64) -> Result<Option<QueueEntry>, StoreError>;
    /// Removes queue entry `seq`.
    fn drop_entry(&mut self, seq: i64) -> Result<(), StoreError>;
    /// Keeps entry `seq` alive until `until`.
    fn refresh_entry(&mut self, seq: i64, until: Mono) -> Result<(), StoreError>;
    /// Adds `req` at the back of the queue; its seq. With `keep` the request
    /// is kept whole for a hand-over (see [`may_hand_over`]), with a new
    /// claim (see [`Ticket::claim`]), which is answered too.
    fn enqueue(
        &mut self,
        req: &AcquireRequest,
        wake: &str,
        until: Mono,
        keep: bool,
    ) -> Result<(i64, Option<String>), StoreError>;
    /// The request of queue entry `seq` as it joined, where the store kept
    /// it for a hand-over, with whether its waiter is proven alive on this
    /// host now; `None` otherwise (the waiter is then woken to try itself).
    fn parked(&mut self, seq: i64) -> Result<Option<Parked>, StoreError>;
    /// The holds a hand-over granted to queue entry `seq`.
    fn holds_of_ticket(&mut self, seq: i64) -> Result<Vec<Hold>, StoreError>;
    /// Issues fences and writes the holds of `req` with their `acquired`
    /// events (`waited`: how long it waited in the queue). `to` is the
    /// queue entry of a hand-over and what it kept: the holds then carry
    /// its claim as their secret, the waiter's uid and `stale_after`, and
    /// the entry, for the waiter to find them.
    fn write_grant(
        &mut self,
        req: &AcquireRequest,
        waited: Option<Duration>,
        to: Option<(i64, &Parked)>,
    ) -> Result<Grant, StoreError>;
    /// Extends one tenure as a renewal decided.
    fn extend(&mut self, ext: &Extension) -> Result<(), StoreError>;
    /// Deletes a hold and records how it ended.
    fn end_hold(
        &mut self,
        lock: &HeldLock,
        reason: ReleaseReason,
        detail: Option<serde_json::Value>,
    ) -> Result<(), StoreError>;
    /// Writes one history line.
    fn record(&mut self, event: NewEvent<'_>) -> Result<(), StoreError>;
    /// Where the process of `holder` is told that one of its locks was
    /// ended by someone else (forced, stolen, swept), so that it stops
    /// before its next renewal would find out; `None` where the store
    /// cannot reach it. A hint, sent after commit like a waiter's wake-up.
    fn holder_address(&self, holder: &Holder) -> Option<String>;
}

/// A queued request kept whole for a hand-over ([`Tables::parked`]).
#[derive(Clone)]
pub struct Parked {
    /// The request as it joined.
    pub req: AcquireRequest,
    /// Where its waiter is woken.
    pub wake: String,
    /// The secret its grant gets (see [`Ticket::claim`]).
    pub claim: String,
    /// The OS user of the waiting process, as the store saw it join.
    pub uid: Option<u32>,
    /// The `stale_after` its grant records: the waiter's setting when it
    /// joined (`None` where not kept: the store's).
    pub stale_after: Option<Duration>,
    /// The waiting process is proven alive on this host now (a fact the
    /// store gathers: its wake socket is bound).
    pub alive: bool,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("req", &self.req)
            .field("wake", &self.wake)
            .field("uid", &self.uid)
            .field("stale_after", &self.stale_after)
            .field("alive", &self.alive)
            .finish_non_exhaustive()
    }
}

/// A queued request as [`leave_queue`] needs it.
#[derive(Clone, Debug)]
pub struct QueueEntry {
    /// Who asked.
    pub owner: String,
    /// Its task.
    pub task: Option<String>,
    /// Each key with its scope.
    pub keys: Vec<(Key, Scope)>,
}

/// What `load` answers for each of `claims`, each hold once.
fn each_once<T>(
    claims: impl IntoIterator<Item = (Key, Scope)>,
    mut load: impl FnMut(&Key, Scope) -> Result<Vec<T>, StoreError>,
    id: impl Fn(&T) -> (Key, Fence),
) -> Result<Vec<T>, StoreError> {
    let mut seen: HashSet<(Key, Fence)> = HashSet::new();
    let mut done: HashSet<(Key, Scope)> = HashSet::new();
    let mut out = Vec::new();
    for (key, scope) in claims {
        if !done.insert((key.clone(), scope)) {
            continue;
        }
        for h in load(&key, scope)? {
            if seen.insert(id(&h)) {
                out.push(h);
            }
        }
    }
    Ok(out)
}

/// The holds bearing on each of `claims`, with their holders' liveness.
fn holds_of(
    t: &mut dyn Tables,
    claims: impl IntoIterator<Item = (Key, Scope)>,
) -> Result<Vec<Hold>, StoreError> {
    each_once(
        claims,
        |k, s| t.holds_touching(k, s),
        |h| (h.lock.key.clone(), h.lock.fence),
    )
}

/// The locks bearing on each of `claims`, without looking at their holders
/// (the deadlock search and the choice of whom to wake need no more).
fn locks_of(
    t: &mut dyn Tables,
    claims: impl IntoIterator<Item = (Key, Scope)>,
) -> Result<Vec<HeldLock>, StoreError> {
    each_once(
        claims,
        |k, s| t.locks_touching(k, s),
        |l| (l.key.clone(), l.fence),
    )
}

/// Loads what the rules need for `req`, asking again until they decide;
/// also answers when the caller's queue entry joined.
fn decide(
    t: &mut dyn Tables,
    req: &AcquireRequest,
    ticket: Option<&Ticket>,
) -> Result<(Snapshot, Decision, Option<Mono>), StoreError> {
    decide_with(t, req, ticket, None)
}

/// [`decide`], with the queue entries bearing on the request already
/// loaded (`queue`) when the caller has them.
fn decide_with(
    t: &mut dyn Tables,
    req: &AcquireRequest,
    ticket: Option<&Ticket>,
    queue: Option<Vec<Queued>>,
) -> Result<(Snapshot, Decision, Option<Mono>), StoreError> {
    let mut snap = Snapshot::default();
    let mut joined = None;
    if let Some(seq) = ticket.and_then(|t| t.seq)
        && let Some((alive_until, since)) = t.queue_own(seq)?
    {
        snap.own = Some((seq, alive_until));
        joined = Some(since);
    }
    if let Some(rid) = &req.request_id {
        snap.replay = t.holds_of_request(rid, &req.holder.owner)?;
    }
    let claims = req.keys.iter().map(|k| (k.clone(), req.scope));
    snap.holds = holds_of(t, claims)?;
    match queue {
        Some(queue) => snap.queue = queue,
        None => {
            for key in &req.keys {
                t.queue_touching(key, req.scope, &mut snap.queue)?;
            }
        }
    }
    loop {
        match decide::decide(&snap, req, ticket.is_some(), t.now(), t.policy())? {
            Step::Need(Need::Waiting) => snap.waiting = Some(t.queue_all()?),
            Step::Need(Need::WaiterHolds) => {
                let waiting = snap.waiting.as_deref().unwrap_or_default();
                let claims: Vec<_> = waiting.iter().map(|q| (q.key.clone(), q.scope)).collect();
                snap.waiter_holds = Some(locks_of(t, claims)?);
            }
            Step::Done(d) => return Ok((snap, d, joined)),
        }
    }
}

/// Writes the endings the rules decided, each about one of `holds`;
/// answers where to tell the holders that lost their lock.
fn apply_endings(
    t: &mut dyn Tables,
    holds: &[Hold],
    endings: Vec<decide::Ending>,
) -> Result<Vec<String>, StoreError> {
    let mut told = Vec::new();
    for e in endings {
        let Some(h) = holds
            .iter()
            .find(|h| h.lock.key == e.key && h.lock.fence == e.fence)
        else {
            continue;
        };
        t.end_hold(&h.lock, e.reason, e.detail)?;
        tell(t, &mut told, &h.lock, e.reason);
    }
    Ok(told)
}

/// Adds the address of the holder of `lock` to `told` when it did not end
/// the tenure itself.
fn tell(t: &dyn Tables, told: &mut Vec<String>, lock: &HeldLock, reason: ReleaseReason) {
    if reason.by_holder() {
        return;
    }
    if let Some(address) = t.holder_address(&lock.holder)
        && !told.contains(&address)
    {
        told.push(address);
    }
}

/// One acquire attempt inside the store's transaction, and where to tell
/// the holders it took locks from (see [`Tables::holder_address`]). The
/// inner result carries a refusal that must still be committed (its
/// history event).
pub fn acquire(
    t: &mut dyn Tables,
    req: &AcquireRequest,
    ticket: Option<&mut Ticket>,
) -> Result<(Result<Attempt, StoreError>, Vec<String>), StoreError> {
    let mut told = Vec::new();
    let attempt = attempt(t, req, ticket, &mut told)?;
    Ok((attempt, told))
}

/// [`acquire`], with the holders to tell written to `told`.
fn attempt(
    t: &mut dyn Tables,
    req: &AcquireRequest,
    mut ticket: Option<&mut Ticket>,
    told: &mut Vec<String>,
) -> Result<Result<Attempt, StoreError>, StoreError> {
    if let Some(grant) = picked_up(t, req, ticket.as_deref())? {
        return Ok(Ok(Attempt::Granted(grant)));
    }
    let now = t.now();
    let (snap, decision, joined) = decide(t, req, ticket.as_deref())?;
    // How long a queued request waited, kept with its grant for `stats`.
    let waited = match decision.outcome {
        Outcome::Grant => joined.map(|j| now.mono.since(j)),
        _ => None,
    };
    *told = apply_endings(t, &snap.holds, decision.end)?;
    for seq in decision.drop {
        t.drop_entry(seq)?;
    }
    match decision.outcome {
        Outcome::Replay => Ok(Ok(Attempt::Granted(decide::replayed_grant(
            &snap.replay,
            req,
            now,
        )))),
        Outcome::Grant => Ok(Ok(Attempt::Granted(t.write_grant(req, waited, None)?))),
        Outcome::Busy(blocked) => Ok(Ok(Attempt::Blocked(blocked))),
        Outcome::Queue { seq, blocked } => {
            let ticket = ticket
                .as_deref_mut()
                .expect("the rules queue only a request that waits");
            let alive_until = now.mono.plus(decide::QUEUE_PLACE);
            let seq = match seq {
                Some(seq) => {
                    t.refresh_entry(seq, alive_until)?;
                    seq
                }
                None => {
                    let (seq, claim) =
                        t.enqueue(req, &ticket.wake, alive_until, may_hand_over(req))?;
                    ticket.claim = claim;
                    t.record(NewEvent {
                        key: req.keys[0].as_str(),
                        kind: EventKind::Waiting,
                        owner: &req.holder.owner,
                        task: req.holder.task.as_deref(),
                        fence: None,
                        grant: None,
                        reason: None,
                        detail: (req.keys.len() > 1).then(|| json!({ "keys": req.keys })),
                    })?;
                    seq
                }
            };
            ticket.seq = Some(seq);
            Ok(Ok(Attempt::Blocked(blocked)))
        }
        Outcome::Deadlock { key, cycle } => {
            if let Some(t) = ticket {
                t.seq = None;
            }
            t.record(NewEvent {
                key: key.as_str(),
                kind: EventKind::DeadlockRefused,
                owner: &req.holder.owner,
                task: req.holder.task.as_deref(),
                fence: None,
                grant: None,
                reason: None,
                detail: Some(json!({ "cycle": cycle })),
            })?;
            Ok(Err(StoreError::Deadlock { key, cycle }))
        }
    }
}

/// The holds a releaser granted to the place of `ticket` (a hand-over, see
/// [`wake_list`]): those of its entry whose secret is its claim; none when
/// the ticket has no place or no claim.
fn ticket_holds(t: &mut dyn Tables, ticket: &Ticket) -> Result<Vec<Hold>, StoreError> {
    let (Some(seq), Some(claim)) = (ticket.seq, ticket.claim.as_deref()) else {
        return Ok(Vec::new());
    };
    Ok(t.holds_of_ticket(seq)?
        .into_iter()
        .filter(|h| crate::model::same_secret(&h.secret, claim))
        .collect())
}

/// The grant a releaser made for the place of `ticket` (a hand-over, see
/// [`wake_list`]): the holds of its entry whose secret is its claim,
/// answered as the waiter's own; `None` when there is none.
pub fn picked_up(
    t: &mut dyn Tables,
    req: &AcquireRequest,
    ticket: Option<&Ticket>,
) -> Result<Option<Grant>, StoreError> {
    let Some(ticket) = ticket else {
        return Ok(None);
    };
    let rows = ticket_holds(t, ticket)?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Grant {
        replayed: false,
        ..decide::replayed_grant(&rows, req, t.now())
    }))
}

/// Removes a queued request that gives up, records why, and answers whom
/// its leaving may let in. A grant a releaser made for the place meanwhile
/// (a hand-over) is given back: released as `completed`, `given_back`.
pub fn leave_queue(
    t: &mut dyn Tables,
    ticket: &Ticket,
    why: LeaveReason,
) -> Result<Vec<String>, StoreError> {
    let Some(seq) = ticket.seq else {
        return Ok(Vec::new());
    };
    let (owner, task, keys, given) = match t.queue_entry(seq)? {
        Some(entry) => {
            t.drop_entry(seq)?;
            (entry.owner, entry.task, entry.keys, Vec::new())
        }
        None => {
            let given = ticket_holds(t, ticket)?;
            let Some(first) = given.first() else {
                return Ok(Vec::new());
            };
            let holder = &first.lock.holder;
            let keys = given
                .iter()
                .map(|h| (h.lock.key.clone(), h.lock.scope))
                .collect();
            (holder.owner.clone(), holder.task.clone(), keys, given)
        }
    };
    if let Some((key, _)) = keys.first() {
        t.record(NewEvent {
            key: key.as_str(),
            kind: match why {
                LeaveReason::TimedOut => EventKind::WaitTimedOut,
                LeaveReason::Cancelled => EventKind::WaitCancelled,
            },
            owner: &owner,
            task: task.as_deref(),
            fence: None,
            grant: None,
            reason: None,
            detail: None,
        })?;
    }
    for h in &given {
        let detail = json!({ "given_back": true });
        t.end_hold(&h.lock, ReleaseReason::Completed, Some(detail))?;
    }
    wake_list(t, keys)
}

/// The wake addresses of queued requests that a change on each of `keys`
/// may have made grantable (the rules decide which); entries that no longer
/// count are removed on the way. Each such request that the store kept
/// whole, whose locks would be bound to a process proven alive on this host,
/// is granted here, in the releaser's transaction (a hand-over): its waiter
/// is then woken only to pick its grant up, with no write of its own, so no
/// newcomer can take the write lock between the release and the grant. A
/// request that could not prove its waiter alive is woken to try itself,
/// so a dead waiter is never handed a lock it would keep until its lease.
pub fn wake_list(
    t: &mut dyn Tables,
    keys: impl IntoIterator<Item = (Key, Scope)>,
) -> Result<Vec<String>, StoreError> {
    let mut wakes = Vec::new();
    let mut done = HashSet::new();
    for (key, scope) in keys {
        if !done.insert((key.clone(), scope)) {
            continue;
        }
        let mut entries: Vec<Queued> = Vec::new();
        t.queue_touching(&key, scope, &mut entries)?;
        if entries.is_empty() {
            continue;
        }
        let claims: Vec<_> = entries.iter().map(|e| (e.key.clone(), e.scope)).collect();
        let holds = locks_of(t, claims)?;
        let (found, drop) = decide::grantable(&entries, &holds, t.now().mono);
        for seq in drop {
            t.drop_entry(seq)?;
        }
        for (seq, wake) in found {
            if !hand_over(t, seq, (&key, scope, &entries), &mut wakes)? && !wakes.contains(&wake) {
                wakes.push(wake);
            }
        }
    }
    Ok(wakes)
}

/// Whether a release may grant `req` in its own transaction (see
/// [`wake_list`]): its locks are bound to the waiting process itself. Were
/// they bound to another one (`acquire --pid`), a waiter that died before
/// it read its grant would leave a lock nobody has the handle of, for as
/// long as that one lives; an unbound one would keep it until its lease.
pub fn may_hand_over(req: &AcquireRequest) -> bool {
    let holder = &req.holder;
    req.bind
        .as_ref()
        .is_some_and(|b| b.pid == holder.pid && b.start == holder.pid_start)
}

/// Grants queue entry `seq` in this transaction when [`wake_list`] may (see
/// there) and the rules grant its request now, as they would its own
/// attempt; adds where to tell holders it ended (dead, expired) to `wakes`,
/// and the waiter's wake-up with its grant (see [`handed`]). True when it
/// granted.
fn hand_over(
    t: &mut dyn Tables,
    seq: i64,
    (key, scope, entries): (&Key, Scope, &[Queued]),
    wakes: &mut Vec<String>,
) -> Result<bool, StoreError> {
    let Some(parked) = t.parked(seq)? else {
        return Ok(false);
    };
    if !parked.alive || !may_hand_over(&parked.req) {
        return Ok(false);
    }
    let ticket = Ticket {
        seq: Some(seq),
        wake: parked.wake.clone(),
        claim: Some(parked.claim.clone()),
    };
    // The entries loaded for `key` are the request's own when it asks for
    // just that key with that scope, and nothing has changed them since.
    let loaded =
        (parked.req.keys == [key.clone()] && parked.req.scope == scope).then(|| entries.to_vec());
    let (snap, decision, joined) = decide_with(t, &parked.req, Some(&ticket), loaded)?;
    if decision.outcome != Outcome::Grant {
        return Ok(false);
    }
    let waited = joined.map(|j| t.now().mono.since(j));
    for address in apply_endings(t, &snap.holds, decision.end)? {
        if !wakes.contains(&address) {
            wakes.push(address);
        }
    }
    for seq in decision.drop {
        t.drop_entry(seq)?;
    }
    let grant = t.write_grant(&parked.req, waited, Some((seq, &parked)))?;
    wakes.push(match handed_message(seq, &parked.claim, &grant) {
        Some(message) => crate::local::wake_with(&parked.wake, &message),
        None => parked.wake,
    });
    Ok(true)
}

/// The longest message a hand-over's wake-up carries; a grant of many keys
/// goes without (its waiter reads it from the store).
const MAX_MESSAGE: usize = 480;

/// The message that tells a waiter the grant a releaser made for its place
/// (see [`handed`]); `None` when too long for one wake-up.
pub fn handed_message(seq: i64, claim: &str, grant: &Grant) -> Option<String> {
    let fences: Vec<String> = grant.locks.iter().map(|l| l.fence.0.to_string()).collect();
    let expires = grant
        .locks
        .first()
        .and_then(|l| l.expires_at)
        .map_or("-".to_string(), |w| w.0.to_string());
    // A last word, so that a message cut short is not read as another.
    let m = format!(
        "h1 {seq} {claim} {} {expires} {} .",
        grant.grant,
        fences.join(",")
    );
    (m.len() <= MAX_MESSAGE).then_some(m)
}

/// The grant of `req` that a releaser's wake-up message tells of (see
/// [`wake_list`]), when it is for the place of `ticket`: its seq, and its
/// claim, which only the store and the waiter know. The waiter then needs
/// no store call at all; a wake-up without it, or lost, costs one read
/// ([`picked_up`]).
pub fn handed(req: &AcquireRequest, ticket: &Ticket, message: &str) -> Option<Grant> {
    let mut parts = message.split(' ');
    if parts.next()? != "h1" {
        return None;
    }
    let seq: i64 = parts.next()?.parse().ok()?;
    let claim = parts.next()?;
    if ticket.seq != Some(seq) || !crate::model::same_secret(claim, ticket.claim.as_deref()?) {
        return None;
    }
    let grant: i64 = parts.next()?.parse().ok()?;
    let expires_at = match parts.next()? {
        "-" => None,
        w => Some(crate::time::Wall(w.parse().ok()?)),
    };
    let fences: Vec<u64> = parts
        .next()?
        .split(',')
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fences.len() != req.keys.len() || parts.next() != Some(".") || parts.next().is_some() {
        return None;
    }
    Some(Grant {
        grant,
        handle: crate::model::LeaseHandle::from_parts(grant, claim),
        owner: req.holder.owner.clone(),
        locks: req
            .keys
            .iter()
            .zip(fences)
            .map(|(key, fence)| crate::store::GrantedLock {
                key: key.clone(),
                fence: Fence(fence),
                expires_at,
            })
            .collect(),
        ttl: req.ttl,
        replayed: false,
    })
}

/// Extends every lock of the caller's grant (or the owner's lock).
pub fn renew(
    t: &mut dyn Tables,
    target: &Target,
    ttl: Option<Duration>,
) -> Result<Renewal, StoreError> {
    let now = t.now();
    let rows = t.holds_named(target)?;
    let plan = tenure::renew(target, rows.clone(), ttl, now, t)?;
    // Only the caller's own grant ends here, and the answer tells it.
    apply_endings(t, &rows, plan.end)?;
    for ext in &plan.extend {
        t.extend(ext)?;
        if ext.log
            && let Some(row) = rows
                .iter()
                .find(|r| r.lock.key == ext.key && r.lock.fence == ext.fence)
        {
            t.record(NewEvent::about(&row.lock, EventKind::Renewed, None))?;
        }
    }
    Ok(plan.answer)
}

/// Ends the caller's tenure of the key, or of the whole grant; answers
/// whom to wake.
pub fn release(
    t: &mut dyn Tables,
    target: &Target,
    reason: ReleaseReason,
    whole_grant: bool,
) -> Result<(Release, Vec<String>), StoreError> {
    let rows = t.holds_named(target)?;
    let plan = tenure::release(target, rows.clone(), reason, whole_grant, t.now(), t)?;
    let freed: Vec<_> = plan.end.iter().map(|e| (e.key.clone(), e.scope)).collect();
    // Only the caller's own holds end here: it is not told of them.
    apply_endings(t, &rows, plan.end)?;
    Ok((plan.answer, wake_list(t, freed)?))
}

/// Ends every tenure on `key` (admin), only while no tenure newer than
/// `seen` holds it, and records the text given; answers what was ended and
/// whom to wake or tell.
pub fn force_release(
    t: &mut dyn Tables,
    key: &Key,
    why: &str,
    by: Option<&str>,
    seen: Option<Fence>,
) -> Result<(Vec<LockInfo>, Vec<String>), StoreError> {
    validate::force(why, by)?;
    let rows = t.holds_on(key)?;
    tenure::force_seen(key, rows.iter().map(|r| r.lock.fence), seen)?;
    let (now, stale_after) = (t.now(), t.policy().stale_after);
    let mut ended = Vec::new();
    let mut told = Vec::new();
    for row in &rows {
        ended.push(crate::view::lock_info(
            &row.lock,
            row.alive,
            now,
            stale_after,
        ));
        let detail = match by {
            Some(by) => json!({ "reason": why, "by": by }),
            None => json!({ "reason": why }),
        };
        t.end_hold(&row.lock, ReleaseReason::Forced, Some(detail))?;
        tell(t, &mut told, &row.lock, ReleaseReason::Forced);
    }
    let freed = rows.first().map(|r| (key.clone(), r.lock.scope));
    told.extend(wake_list(t, freed)?);
    Ok((ended, told))
}

/// The sweeper's second look for a batch: ends each tenure if it is still
/// held and its rule still holds now (a renewal since the sweeper's scan
/// saves the lock); answers which were ended and whom to wake or tell.
pub fn reap(t: &mut dyn Tables, batch: &[Reap]) -> Result<(Vec<bool>, Vec<String>), StoreError> {
    let mut out = Vec::with_capacity(batch.len());
    let mut freed = Vec::new();
    let mut told = Vec::new();
    let (now, stale_after) = (t.now(), t.policy().stale_after);
    for r in batch {
        let Some(row) = t.hold(&r.key, r.fence)? else {
            out.push(false);
            continue;
        };
        if !tenure::still_due(&row, r.reason, now, stale_after)? {
            out.push(false);
            continue;
        }
        t.end_hold(&row.lock, r.reason, None)?;
        tell(t, &mut told, &row.lock, r.reason);
        freed.push((r.key.clone(), row.lock.scope));
        out.push(true);
    }
    told.extend(wake_list(t, freed)?);
    Ok((out, told))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GrantedLock;
    use crate::time::Wall;

    fn request() -> AcquireRequest {
        let lock = crate::rules::tests::held("a", crate::model::Mode::Exclusive, Scope::Key, 1);
        AcquireRequest {
            ttl: Some(Duration::from_secs(30)),
            ..AcquireRequest::exclusive(
                vec![Key::new("a").unwrap(), Key::new("b").unwrap()],
                lock.holder,
            )
        }
    }

    fn ticket(claim: &str) -> Ticket {
        Ticket {
            seq: Some(7),
            wake: "w".into(),
            claim: Some(claim.into()),
        }
    }

    #[test]
    fn a_hand_over_message_is_the_grant_only_for_its_own_place() {
        let req = request();
        let grant = Grant {
            grant: 100,
            handle: crate::model::LeaseHandle::from_parts(100, "c0ffee"),
            owner: req.holder.owner.clone(),
            locks: vec![
                GrantedLock {
                    key: req.keys[0].clone(),
                    fence: Fence(100),
                    expires_at: Some(Wall(1_700_000_030_000)),
                },
                GrantedLock {
                    key: req.keys[1].clone(),
                    fence: Fence(101),
                    expires_at: Some(Wall(1_700_000_030_000)),
                },
            ],
            ttl: req.ttl,
            replayed: false,
        };
        let m = handed_message(7, "c0ffee", &grant).unwrap();
        assert_eq!(handed(&req, &ticket("c0ffee"), &m), Some(grant.clone()));
        // Another place's claim, another seq, no claim: not this waiter's.
        assert_eq!(handed(&req, &ticket("c0ffef"), &m), None);
        let other_seq = Ticket {
            seq: Some(8),
            ..ticket("c0ffee")
        };
        assert_eq!(handed(&req, &other_seq, &m), None);
        let no_claim = Ticket {
            claim: None,
            ..ticket("c0ffee")
        };
        assert_eq!(handed(&req, &no_claim, &m), None);
        // A plain wake-up, a cut or padded message, a fence short.
        for bad in [
            "w".to_string(),
            m[..m.len() - 2].to_string(),
            format!("{m} 1"),
            "h1 7 c0ffee 100 - 100 .".to_string(),
        ] {
            assert_eq!(handed(&req, &ticket("c0ffee"), &bad), None, "{bad}");
        }
        // Too long for one wake-up: none is made (the waiter reads instead).
        let many = Grant {
            locks: (0..200).map(|_| grant.locks[0].clone()).collect(),
            ..grant.clone()
        };
        assert_eq!(handed_message(7, "c0ffee", &many), None);
    }
}
