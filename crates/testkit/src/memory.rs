//! The rules of `locksmith-core` driven directly, with no store at all: the
//! state lives in memory, and every change is the snapshot → decide → write
//! cycle a real store runs, minus the persistence. The random walk drives it
//! against its reference model, so a disagreement between the model and a
//! real store can be told apart from one between the model and the rules.
//!
//! It keeps no history listing and no counters; reads that need them answer
//! with an error.

use std::sync::Mutex;
use std::time::Duration;

use locksmith_core::decide::{self, Need, Outcome, Policy, Queued, Snapshot, Step};
use locksmith_core::rules::{self, Claim};
use locksmith_core::store::{
    GrantedLock, HistoryFilter, KeyStatus, LeaveReason, ListFilter, Release, Renewal, Stats,
    Target, Ticket, WaiterInfo,
};
use locksmith_core::tenure::{self, Ledger, Named, Reap};
use locksmith_core::view::{lock_info, wall_at};
use locksmith_core::{
    AcquireRequest, Attempt, Clock, Event, Fence, Grant, HeldLock, Hold, Key, LeaseHandle,
    LockInfo, ManualClock, Mono, Notifier, ReleaseReason, Store, StoreError, WakeSource, validate,
};

/// How a tenure ended, as a history would tell it.
#[derive(Clone, Debug)]
struct Ended {
    key: Key,
    grant: i64,
    owner: String,
    reason: ReleaseReason,
}

#[derive(Default)]
struct State {
    holds: Vec<Hold>,
    /// One entry per key of each queued request.
    queue: Vec<Queued>,
    ended: Vec<Ended>,
    fence: u64,
    next_seq: i64,
}

/// The rules over in-memory state, on a hand-driven clock.
pub struct MemoryStore {
    state: Mutex<State>,
    clock: ManualClock,
    policy: Policy,
}

impl MemoryStore {
    /// An empty store reading `clock`; locks go stale after 30 minutes.
    pub fn new(clock: ManualClock) -> MemoryStore {
        MemoryStore {
            state: Mutex::new(State::default()),
            clock,
            policy: Policy {
                stale_after: Duration::from_secs(30 * 60),
            },
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Wake-ups of the memory store: none; waiters re-check on their timer.
pub struct NoWake;

impl Notifier for NoWake {
    fn wake_source(&self) -> Result<Box<dyn WakeSource>, StoreError> {
        Ok(Box::new(NoWakeSource))
    }
}

struct NoWakeSource;

impl WakeSource for NoWakeSource {
    fn address(&self) -> &str {
        "memory"
    }
    fn wait(&mut self, timeout: Duration) -> bool {
        std::thread::sleep(timeout);
        false
    }
}

fn overlaps(a: Claim<'_>, b: Claim<'_>) -> bool {
    rules::overlaps(&a, &b)
}

impl State {
    fn holds_touching(&self, key: &Key, scope: locksmith_core::Scope) -> Vec<Hold> {
        let want = Claim {
            key,
            mode: locksmith_core::Mode::Exclusive,
            scope,
        };
        self.holds
            .iter()
            .filter(|h| overlaps(want, h.lock.claim()))
            .cloned()
            .collect()
    }

    fn queue_touching(&self, key: &Key, scope: locksmith_core::Scope) -> Vec<Queued> {
        let want = Claim {
            key,
            mode: locksmith_core::Mode::Exclusive,
            scope,
        };
        self.queue
            .iter()
            .filter(|e| overlaps(want, e.claim()))
            .cloned()
            .collect()
    }

    fn end(&mut self, key: &Key, fence: Fence, reason: ReleaseReason) {
        if let Some(i) = self
            .holds
            .iter()
            .position(|h| &h.lock.key == key && h.lock.fence == fence)
        {
            let h = self.holds.remove(i);
            self.ended.push(Ended {
                key: h.lock.key,
                grant: h.lock.grant,
                owner: h.lock.holder.owner,
                reason,
            });
        }
    }

    fn drop_entry(&mut self, seq: i64) {
        self.queue.retain(|e| e.seq != seq);
    }

    fn named(&self, target: &Target) -> Result<Vec<Hold>, StoreError> {
        Ok(match tenure::named(target)? {
            Named::Grant(g, _) => self
                .holds
                .iter()
                .filter(|h| h.lock.grant == g)
                .cloned()
                .collect(),
            Named::Owner(k, o) => self
                .holds
                .iter()
                .filter(|h| h.lock.key == k && h.lock.holder.owner == o)
                .cloned()
                .collect(),
        })
    }
}

impl Ledger for &State {
    fn holders_of(&mut self, key: &Key) -> Result<Vec<String>, StoreError> {
        Ok(self
            .holds
            .iter()
            .filter(|h| &h.lock.key == key)
            .map(|h| h.lock.holder.owner.clone())
            .collect())
    }
    fn why_ended(
        &mut self,
        key: &Key,
        grant: Option<i64>,
        owner: Option<&str>,
    ) -> Result<Option<ReleaseReason>, StoreError> {
        Ok(self
            .ended
            .iter()
            .rev()
            .find(|e| &e.key == key && (Some(e.grant) == grant || Some(e.owner.as_str()) == owner))
            .map(|e| e.reason))
    }
    fn keys_of_grant(&mut self, grant: i64) -> Result<Vec<Key>, StoreError> {
        Ok(self
            .holds
            .iter()
            .filter(|h| h.lock.grant == grant)
            .map(|h| h.lock.key.clone())
            .collect())
    }
    fn taken_from_grant(&mut self, grant: i64) -> Result<Option<(Key, ReleaseReason)>, StoreError> {
        Ok(self
            .ended
            .iter()
            .rev()
            .find(|e| e.grant == grant && !e.reason.by_holder())
            .map(|e| (e.key.clone(), e.reason)))
    }
}

impl Store for MemoryStore {
    fn acquire(
        &self,
        req: &AcquireRequest,
        queue: Option<&mut Ticket>,
    ) -> Result<Attempt, StoreError> {
        validate::request(req)?;
        let now = self.clock.now();
        let mut st = self.state();
        let mut snap = Snapshot {
            own: queue.as_ref().and_then(|t| t.seq).and_then(|seq| {
                st.queue
                    .iter()
                    .find(|e| e.seq == seq)
                    .map(|e| (seq, e.alive_until))
            }),
            ..Snapshot::default()
        };
        if let Some(rid) = &req.request_id {
            snap.replay = st
                .holds
                .iter()
                .filter(|h| {
                    h.lock.request_id.as_ref() == Some(rid)
                        && h.lock.holder.owner == req.holder.owner
                })
                .cloned()
                .collect();
        }
        for key in &req.keys {
            for h in st.holds_touching(key, req.scope) {
                if !snap.holds.contains(&h) {
                    snap.holds.push(h);
                }
            }
            snap.queue.extend(st.queue_touching(key, req.scope));
        }
        let decision = loop {
            match decide::decide(&snap, req, queue.is_some(), now, self.policy)? {
                Step::Need(Need::Waiting) => {
                    snap.waiting = Some(st.queue.clone());
                }
                Step::Need(Need::WaiterHolds) => {
                    snap.waiter_holds = Some(st.holds.iter().map(|h| h.lock.clone()).collect());
                }
                Step::Done(d) => break d,
            }
        };
        for e in &decision.end {
            st.end(&e.key, e.fence, e.reason);
        }
        for seq in &decision.drop {
            st.drop_entry(*seq);
        }
        match decision.outcome {
            Outcome::Replay => Ok(Attempt::Granted(decide::replayed_grant(
                &snap.replay,
                req,
                now,
            ))),
            Outcome::Grant => {
                let first = (st.fence + 1).max(now.wall.micros());
                st.fence = first + req.keys.len() as u64 - 1;
                let grant = first as i64;
                let secret = format!("{:032x}", grant);
                let expires = req.ttl.map(|t| now.mono.plus(t));
                let mut locks = Vec::new();
                for (i, key) in req.keys.iter().enumerate() {
                    let fence = Fence(first + i as u64);
                    st.holds.push(Hold {
                        lock: HeldLock {
                            grant,
                            key: key.clone(),
                            mode: req.mode,
                            scope: req.scope,
                            fence,
                            holder: req.holder.clone(),
                            acquired: now.mono,
                            acquired_wall: now.wall,
                            last_seen: now.mono,
                            expires,
                            ttl: req.ttl,
                            max_hold: req.max_hold,
                            request_id: req.request_id.clone(),
                            bind: req.bind.clone(),
                            stale_after: Some(self.policy.stale_after),
                        },
                        secret: secret.clone(),
                        grant_keys: req.keys.len() as u32,
                        renew_logged: Mono(0),
                        alive: None,
                        uid: None,
                    });
                    locks.push(GrantedLock {
                        key: key.clone(),
                        fence,
                        expires_at: expires.map(|e| wall_at(now, e)),
                    });
                }
                Ok(Attempt::Granted(Grant {
                    grant,
                    handle: LeaseHandle::from_parts(grant, &secret),
                    owner: req.holder.owner.clone(),
                    locks,
                    ttl: req.ttl,
                    replayed: false,
                }))
            }
            Outcome::Busy(b) => Ok(Attempt::Blocked(b)),
            Outcome::Queue { seq, blocked } => {
                let ticket = queue.expect("the rules queue only a request that waits");
                let alive_until = now.mono.plus(decide::QUEUE_PLACE);
                let seq = match seq {
                    Some(seq) => {
                        for e in st.queue.iter_mut().filter(|e| e.seq == seq) {
                            e.alive_until = alive_until;
                        }
                        seq
                    }
                    None => {
                        st.next_seq += 1;
                        let seq = st.next_seq;
                        for key in &req.keys {
                            st.queue.push(Queued {
                                seq,
                                priority: req.priority,
                                mode: req.mode,
                                owner: req.holder.owner.clone(),
                                wake: ticket.wake.clone(),
                                key: key.clone(),
                                scope: req.scope,
                                alive_until,
                                gone: false,
                            });
                        }
                        seq
                    }
                };
                ticket.seq = Some(seq);
                Ok(Attempt::Blocked(blocked))
            }
            Outcome::Deadlock { key, cycle } => {
                if let Some(t) = queue {
                    t.seq = None;
                }
                Err(StoreError::Deadlock { key, cycle })
            }
        }
    }

    fn leave_queue(&self, ticket: &Ticket, _why: LeaveReason) -> Result<(), StoreError> {
        if let Some(seq) = ticket.seq {
            self.state().drop_entry(seq);
        }
        Ok(())
    }

    fn renew(&self, target: &Target, ttl: Option<Duration>) -> Result<Renewal, StoreError> {
        let now = self.clock.now();
        let mut st = self.state();
        let rows = st.named(target)?;
        let plan = tenure::renew(target, rows, ttl, now, &mut &*st)?;
        for e in &plan.end {
            st.end(&e.key, e.fence, e.reason);
        }
        for ext in &plan.extend {
            for h in st
                .holds
                .iter_mut()
                .filter(|h| h.lock.key == ext.key && h.lock.fence == ext.fence)
            {
                h.lock.last_seen = now.mono;
                h.lock.expires = ext.expires;
                h.lock.ttl = ext.ttl;
                if ext.log {
                    h.renew_logged = now.mono;
                }
            }
        }
        Ok(plan.answer)
    }

    fn release(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.release_with(target, reason, false)
    }

    fn release_grant(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.release_with(target, reason, true)
    }

    fn force_release_seen(
        &self,
        key: &Key,
        why: &str,
        by: Option<&str>,
        seen: Option<locksmith_core::Fence>,
    ) -> Result<Vec<LockInfo>, StoreError> {
        validate::force(why, by)?;
        let now = self.clock.now();
        let mut st = self.state();
        let rows: Vec<Hold> = st
            .holds
            .iter()
            .filter(|h| &h.lock.key == key)
            .cloned()
            .collect();
        tenure::force_seen(key, rows.iter().map(|r| r.lock.fence), seen)?;
        for h in &rows {
            st.end(&h.lock.key, h.lock.fence, ReleaseReason::Forced);
        }
        Ok(rows
            .iter()
            .map(|h| lock_info(&h.lock, h.alive, now, self.policy.stale_after))
            .collect())
    }

    fn status(&self, key: &Key) -> Result<KeyStatus, StoreError> {
        let now = self.clock.now();
        let st = self.state();
        let holders: Vec<LockInfo> = st
            .holds_touching(key, locksmith_core::Scope::Key)
            .iter()
            .map(|h| lock_info(&h.lock, h.alive, now, self.policy.stale_after))
            .collect();
        Ok(KeyStatus {
            key: key.clone(),
            free: holders
                .iter()
                .all(|h| h.health == locksmith_core::Health::Expired),
            holders,
            waiters: Vec::new(),
        })
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<LockInfo>, StoreError> {
        let now = self.clock.now();
        let st = self.state();
        let mut out: Vec<LockInfo> = st
            .holds
            .iter()
            .map(|h| lock_info(&h.lock, h.alive, now, self.policy.stale_after))
            .filter(|i| filter.owner.as_ref().is_none_or(|o| &i.owner == o))
            .filter(|i| {
                filter
                    .prefix
                    .as_ref()
                    .is_none_or(|p| i.key.as_str().starts_with(p.as_str()))
            })
            .filter(|i| !filter.unhealthy || i.health != locksmith_core::Health::Healthy)
            .filter(|i| filter.grant.is_none_or(|g| i.grant == g))
            .collect();
        out.sort_by(|a, b| (&a.key, a.fence).cmp(&(&b.key, b.fence)));
        Ok(out)
    }

    fn waiters(&self, _filter: &ListFilter) -> Result<Vec<WaiterInfo>, StoreError> {
        let now = self.clock.now();
        let st = self.state();
        let found = st
            .queue
            .iter()
            .filter(|e| e.counts(now.mono))
            .map(|e| {
                let q = e;
                let info = WaiterInfo {
                    key: q.key.clone(),
                    position: 0,
                    mode: q.mode,
                    scope: q.scope,
                    priority: q.priority,
                    owner: q.owner.clone(),
                    task: None,
                    hostname: String::new(),
                    pid: 0,
                    since: now.wall,
                    waited: Duration::ZERO,
                };
                (q.place(), info)
            })
            .collect();
        Ok(locksmith_core::view::number_waiters(found))
    }

    fn history(&self, _filter: &HistoryFilter) -> Result<Vec<Event>, StoreError> {
        Err(StoreError::backend(
            "the in-memory rules driver keeps no history listing",
        ))
    }

    fn stats(&self) -> Result<Stats, StoreError> {
        Err(StoreError::backend(
            "the in-memory rules driver keeps no counters",
        ))
    }

    fn reap(&self, batch: &[Reap]) -> Result<Vec<bool>, StoreError> {
        let now = self.clock.now();
        let mut st = self.state();
        let mut out = Vec::new();
        for r in batch {
            let hold = st
                .holds
                .iter()
                .find(|h| h.lock.key == r.key && h.lock.fence == r.fence)
                .cloned();
            let due = match &hold {
                Some(h) => tenure::still_due(h, r.reason, now, self.policy.stale_after)?,
                None => false,
            };
            if due {
                st.end(&r.key, r.fence, r.reason);
            }
            out.push(due);
        }
        Ok(out)
    }
}

impl MemoryStore {
    fn release_with(
        &self,
        target: &Target,
        reason: ReleaseReason,
        whole_grant: bool,
    ) -> Result<Release, StoreError> {
        let now = self.clock.now();
        let mut st = self.state();
        let rows = st.named(target)?;
        let plan = tenure::release(target, rows, reason, whole_grant, now, &mut &*st)?;
        for e in &plan.end {
            st.end(&e.key, e.fence, e.reason);
        }
        Ok(plan.answer)
    }
}
