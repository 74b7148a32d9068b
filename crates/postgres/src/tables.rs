//! The PostgreSQL store's tables inside one transaction, as the steps of
//! every call ([`locksmith_core::flow`]) see them: loads with the liveness
//! this host can tell, and the writes the rules decide. The transaction
//! holds the key locks of its claims already; the other keys of a grant
//! named by a handle, the keys of a queue entry that leaves, and the
//! waiters' graph are locked here when needed.

use std::time::Duration;

use locksmith_core::decide::{Policy, Queued};
use locksmith_core::flow::{self, NewEvent, Parked, QueueEntry};
use locksmith_core::tenure::{self, Extension, Ledger};
use locksmith_core::{
    AcquireRequest, Fence, Grant, HeldLock, Hold, Holder, Key, Mono, Now, ReleaseReason, Scope,
    StoreError, Target,
};
use locksmith_host::life::observe;

use crate::Ctx;
use crate::conn::{Arg, Fail, Tx};
use crate::queue;
use crate::rows::{self, load_holds};

/// One transaction of the PostgreSQL store.
pub(crate) struct Tables<'t, 'c> {
    pub tx: &'t mut Tx<'c>,
    pub ctx: &'t Ctx<'t>,
}

impl Tables<'_, '_> {
    /// A failure as the store reports it (a database error keeps its
    /// source, so that a transaction PostgreSQL rolled back runs again).
    fn fail(&self, e: Fail) -> StoreError {
        e.into_store(self.tx.shown())
    }

    fn load(&mut self, where_sql: &str, args: &[&dyn Arg]) -> Result<Vec<Hold>, StoreError> {
        load_holds(self.tx, where_sql, args).map_err(|e| self.fail(e))
    }

    fn named(&mut self, target: &Target) -> Result<Vec<Hold>, StoreError> {
        let named = tenure::named(target)?;
        rows::named(&named, |w, a| load_holds(self.tx, w, a)).map_err(|e| self.fail(e))
    }
}

impl Ledger for Tables<'_, '_> {
    fn caller_uid(&self, holder: &Holder) -> Option<u32> {
        self.ctx.host.uid_on(holder)
    }

    fn holders_of(&mut self, key: &Key) -> Result<Vec<String>, StoreError> {
        Ok(self
            .load("key = $1 ORDER BY fence", &[&key.as_str()])?
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
        let row = self.tx.opt(
            "SELECT reason FROM events WHERE key = $1 AND reason IS NOT NULL
               AND (grant_id = $2 OR owner = $3) ORDER BY id DESC LIMIT 1",
            &[&key.as_str(), &grant, &owner],
        );
        let reason: Option<String> = match row.map_err(|e| self.fail(e))? {
            Some(r) => r.try_get(0).map_err(|e| self.fail(e.into()))?,
            None => None,
        };
        Ok(reason.and_then(|r| r.parse().ok()))
    }

    fn taken_from_grant(&mut self, grant: i64) -> Result<Option<(Key, ReleaseReason)>, StoreError> {
        let row = self.tx.opt(
            "SELECT key, reason FROM events WHERE grant_id = $1 AND reason IS NOT NULL
               AND reason NOT IN ('completed', 'failed') ORDER BY id DESC LIMIT 1",
            &[&grant],
        );
        let Some(r) = row.map_err(|e| self.fail(e))? else {
            return Ok(None);
        };
        let (key, reason): (String, String) = (
            r.try_get(0).map_err(|e| self.fail(e.into()))?,
            r.try_get(1).map_err(|e| self.fail(e.into()))?,
        );
        Ok(Key::stored(key).ok().zip(reason.parse().ok()))
    }

    fn keys_of_grant(&mut self, grant: i64) -> Result<Vec<Key>, StoreError> {
        Ok(self
            .load("grant_id = $1 ORDER BY fence", &[&grant])?
            .into_iter()
            .map(|h| h.lock.key)
            .collect())
    }
}

impl flow::Tables for Tables<'_, '_> {
    fn now(&self) -> Now {
        self.ctx.now
    }

    fn policy(&self) -> Policy {
        self.ctx.policy()
    }

    fn holds_touching(&mut self, key: &Key, scope: Scope) -> Result<Vec<Hold>, StoreError> {
        let rows = rows::holds_touching(self.tx, key, scope).map_err(|e| self.fail(e))?;
        Ok(observe(rows, self.ctx.host))
    }

    fn locks_touching(&mut self, key: &Key, scope: Scope) -> Result<Vec<HeldLock>, StoreError> {
        let holds = rows::holds_touching(self.tx, key, scope).map_err(|e| self.fail(e))?;
        Ok(holds.into_iter().map(|h| h.lock).collect())
    }

    fn holds_of_request(&mut self, request_id: &str, owner: &str) -> Result<Vec<Hold>, StoreError> {
        let rows = rows::of_request(request_id, owner, |w, a| load_holds(self.tx, w, a))
            .map_err(|e| self.fail(e))?;
        Ok(observe(rows, self.ctx.host))
    }

    /// The transaction holds the target key's lock; the grant's other keys
    /// are locked here, and the holds read again under those locks (a
    /// grant's keys never change, but holds of them may end meanwhile).
    fn holds_named(&mut self, target: &Target) -> Result<Vec<Hold>, StoreError> {
        let rows = self.named(target)?;
        let more: Vec<(Key, Scope)> = rows
            .iter()
            .filter(|r| r.lock.key != target.key)
            .map(|r| (r.lock.key.clone(), r.lock.scope))
            .collect();
        if more.is_empty() {
            return Ok(rows);
        }
        let ns = self.ctx.ns;
        self.tx.lock_more(ns, &more);
        self.named(target)
    }

    fn holds_on(&mut self, key: &Key) -> Result<Vec<Hold>, StoreError> {
        let rows = self.load("key = $1 ORDER BY fence", &[&key.as_str()])?;
        Ok(observe(rows, self.ctx.host))
    }

    fn hold(&mut self, key: &Key, fence: Fence) -> Result<Option<Hold>, StoreError> {
        let rows = self.load(
            "key = $1 AND fence = $2",
            &[&key.as_str(), &(fence.0 as i64)],
        )?;
        Ok(observe(rows, self.ctx.host).pop())
    }

    fn queue_touching(
        &mut self,
        key: &Key,
        scope: Scope,
        out: &mut Vec<Queued>,
    ) -> Result<(), StoreError> {
        queue::touching(self.tx, self.ctx, key, scope, out).map_err(|e| self.fail(e))
    }

    /// Takes the waiters' graph lock first (see [`Tx::lock_graph`]).
    fn queue_all(&mut self) -> Result<Vec<Queued>, StoreError> {
        let ns = self.ctx.ns;
        self.tx.lock_graph(ns).map_err(|e| self.fail(e))?;
        queue::all(self.tx, self.ctx).map_err(|e| self.fail(e))
    }

    fn queue_own(&mut self, seq: i64) -> Result<Option<(Mono, Mono)>, StoreError> {
        queue::own(self.tx, seq).map_err(|e| self.fail(e))
    }

    /// Locks the entry's keys (read first; the entry can only go away
    /// meanwhile) and reads it again under them.
    fn queue_entry(&mut self, seq: i64) -> Result<Option<QueueEntry>, StoreError> {
        let Some(entry) = queue::entry(self.tx, seq).map_err(|e| self.fail(e))? else {
            return Ok(None);
        };
        let ns = self.ctx.ns;
        self.tx.lock_more(ns, &entry.keys);
        queue::entry(self.tx, seq).map_err(|e| self.fail(e))
    }

    fn drop_entry(&mut self, seq: i64) -> Result<(), StoreError> {
        queue::drop_entry(self.tx, seq).map_err(|e| self.fail(e))
    }

    fn refresh_entry(&mut self, seq: i64, until: Mono) -> Result<(), StoreError> {
        queue::refresh(self.tx, seq, until).map_err(|e| self.fail(e))
    }

    fn enqueue(
        &mut self,
        req: &AcquireRequest,
        wake: &str,
        until: Mono,
        keep: bool,
    ) -> Result<(i64, Option<String>), StoreError> {
        queue::enqueue(self.tx, self.ctx, req, wake, until, keep).map_err(|e| self.fail(e))
    }

    /// Only a request whose key locks this transaction holds already: a
    /// hand-over takes no lock out of the one order. The loads of the
    /// hand-over that follows (its place, the holds of its keys, its
    /// fences) go in one round trip.
    fn parked(&mut self, seq: i64) -> Result<Option<Parked>, StoreError> {
        let Some(parked) = queue::parked(self.tx, self.ctx, seq).map_err(|e| self.fail(e))? else {
            return Ok(None);
        };
        let claims: Vec<(Key, Scope)> = parked
            .req
            .keys
            .iter()
            .map(|k| (k.clone(), parked.req.scope))
            .collect();
        if !self.tx.covers(&claims) {
            return Ok(None);
        }
        if parked.alive {
            let n = parked.req.keys.len();
            let ahead = || -> Result<Vec<crate::conn::Stmt>, Fail> {
                let mut reads = vec![queue::own_stmt(seq)?];
                for (key, scope) in &claims {
                    reads.push(rows::touching(key, *scope, rows::select)?);
                }
                reads.push(crate::conn::fences_stmt(n)?);
                Ok(reads)
            };
            let sent = ahead().and_then(|reads| self.tx.fetch_ahead(reads));
            sent.and_then(|()| self.tx.keep_fences(n))
                .map_err(|e| self.fail(e))?;
        }
        Ok(Some(parked))
    }

    /// Locks the keys of the holds found (read first; they can only end
    /// meanwhile) and reads them again under those locks.
    fn holds_of_ticket(&mut self, seq: i64) -> Result<Vec<Hold>, StoreError> {
        let found = self.load("ticket = $1 ORDER BY fence", &[&seq])?;
        if found.is_empty() {
            return Ok(found);
        }
        let claims: Vec<(Key, Scope)> = found
            .iter()
            .map(|h| (h.lock.key.clone(), h.lock.scope))
            .collect();
        if self.tx.covers(&claims) {
            return Ok(found);
        }
        let ns = self.ctx.ns;
        self.tx.lock_more(ns, &claims);
        self.load("ticket = $1 ORDER BY fence", &[&seq])
    }

    fn write_grant(
        &mut self,
        req: &AcquireRequest,
        waited: Option<Duration>,
        to: Option<(i64, &Parked)>,
    ) -> Result<Grant, StoreError> {
        crate::acquire::grant(self.tx, self.ctx, req, waited, to).map_err(|e| self.fail(e))
    }

    fn extend(&mut self, ext: &Extension) -> Result<(), StoreError> {
        let now = self.ctx.now;
        self.tx
            .exec_prepared(
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
            )
            .map_err(|e| self.fail(e))
    }

    fn end_hold(
        &mut self,
        lock: &HeldLock,
        reason: ReleaseReason,
        detail: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        let now = self.ctx.now;
        rows::end_hold(self.tx, now, lock, reason, detail).map_err(|e| self.fail(e))
    }

    fn record(&mut self, event: NewEvent<'_>) -> Result<(), StoreError> {
        let now = self.ctx.now;
        rows::record(self.tx, now, event).map_err(|e| self.fail(e))
    }

    /// On any machine: the listener of each one hands the address to its
    /// own holders (see [`crate::listen`]).
    fn holder_address(&self, holder: &Holder) -> Option<String> {
        Some(locksmith_host::wake::holder_address(
            self.ctx.store_id,
            holder.pid,
            holder.pid_start,
        ))
    }
}
