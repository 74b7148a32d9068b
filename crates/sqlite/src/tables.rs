//! The embedded store's tables inside one transaction, as the steps of
//! every call ([`locksmith_core::flow`]) see them: loads with the liveness
//! this host can tell, and the writes the rules decide.

use std::time::Duration;

use locksmith_core::decide::{Policy, Queued};
use locksmith_core::flow::{self, NewEvent, Parked, QueueEntry};
use locksmith_core::tenure::{self, Extension, Ledger, Named};
use locksmith_core::{
    AcquireRequest, Fence, Grant, HeldLock, Hold, Holder, Key, Mono, Now, ReleaseReason, Scope,
    StoreError, Target,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::Ctx;
use crate::open::map_err;
use crate::queue;
use crate::rows::{self, holds_where, load_holds, observe};

/// One transaction of the embedded store.
pub(crate) struct Tables<'t> {
    pub tx: &'t Connection,
    pub ctx: &'t Ctx<'t>,
}

impl Ledger for Tables<'_> {
    fn caller_uid(&self, holder: &Holder) -> Option<u32> {
        self.ctx.host.uid_on(holder)
    }

    fn holders_of(&mut self, key: &Key) -> Result<Vec<String>, StoreError> {
        Ok(
            load_holds(self.tx, holds_where!("key = ?1"), [key.as_str()])?
                .into_iter()
                .map(|h| h.lock.holder.owner)
                .collect(),
        )
    }

    fn why_ended(
        &mut self,
        key: &Key,
        grant: Option<i64>,
        owner: Option<&str>,
    ) -> Result<Option<ReleaseReason>, StoreError> {
        let reason: Option<String> = self
            .tx
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

    fn taken_from_grant(&mut self, grant: i64) -> Result<Option<(Key, ReleaseReason)>, StoreError> {
        let row: Option<(String, String)> = self
            .tx
            .prepare_cached(
                "SELECT key, reason FROM events WHERE grant_id = ?1 AND reason IS NOT NULL
                   AND reason NOT IN ('completed', 'failed') ORDER BY id DESC LIMIT 1",
            )
            .map_err(map_err)?
            .query_row([grant], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(map_err)?;
        Ok(row.and_then(|(key, reason)| Some((Key::stored(key).ok()?, reason.parse().ok()?))))
    }

    fn keys_of_grant(&mut self, grant: i64) -> Result<Vec<Key>, StoreError> {
        // A scan: there is no index on grant_id for single-key grants, and
        // this is asked only when a handle is used for a key it does not hold.
        Ok(load_holds(self.tx, holds_where!("grant_id = ?1"), [grant])?
            .into_iter()
            .map(|h| h.lock.key)
            .collect())
    }
}

impl flow::Tables for Tables<'_> {
    fn now(&self) -> Now {
        self.ctx.now
    }

    fn policy(&self) -> Policy {
        self.ctx.policy()
    }

    fn holds_touching(&mut self, key: &Key, scope: Scope) -> Result<Vec<Hold>, StoreError> {
        Ok(observe(
            rows::holds_touching(self.tx, key, scope)?,
            self.ctx.host,
        ))
    }

    fn locks_touching(&mut self, key: &Key, scope: Scope) -> Result<Vec<HeldLock>, StoreError> {
        let holds = rows::holds_touching(self.tx, key, scope)?;
        Ok(holds.into_iter().map(|h| h.lock).collect())
    }

    fn holds_of_request(&mut self, request_id: &str, owner: &str) -> Result<Vec<Hold>, StoreError> {
        let rows = load_holds(
            self.tx,
            holds_where!("request_id = ?1 AND owner = ?2 ORDER BY fence"),
            params![request_id, owner],
        )?;
        Ok(observe(rows, self.ctx.host))
    }

    fn holds_named(&mut self, target: &Target) -> Result<Vec<Hold>, StoreError> {
        match tenure::named(target)? {
            Named::Grant(grant, key) => {
                // By primary key, and by the partial index of multi-key
                // grants: no scan of the table.
                let mut rows = load_holds(
                    self.tx,
                    holds_where!("key = ?1 AND grant_id = ?2"),
                    params![key.as_str(), grant],
                )?;
                // A single-key grant found by its key has no other rows.
                if rows.iter().any(|r| r.grant_keys == 1) {
                    return Ok(rows);
                }
                for other in load_holds(
                    self.tx,
                    holds_where!("grant_id = ?1 AND grant_keys > 1"),
                    [grant],
                )? {
                    if !rows.iter().any(|r| r.lock.fence == other.lock.fence) {
                        rows.push(other);
                    }
                }
                rows.sort_by_key(|r| r.lock.fence);
                Ok(rows)
            }
            Named::Owner(key, owner) => load_holds(
                self.tx,
                holds_where!("key = ?1 AND owner = ?2"),
                params![key.as_str(), owner],
            ),
        }
    }

    fn holds_on(&mut self, key: &Key) -> Result<Vec<Hold>, StoreError> {
        Ok(observe(
            load_holds(self.tx, holds_where!("key = ?1"), [key.as_str()])?,
            self.ctx.host,
        ))
    }

    fn hold(&mut self, key: &Key, fence: Fence) -> Result<Option<Hold>, StoreError> {
        let rows = load_holds(
            self.tx,
            holds_where!("key = ?1 AND fence = ?2"),
            params![key.as_str(), fence.0 as i64],
        )?;
        Ok(observe(rows, self.ctx.host).pop())
    }

    fn queue_touching(
        &mut self,
        key: &Key,
        scope: Scope,
        out: &mut Vec<Queued>,
    ) -> Result<(), StoreError> {
        queue::touching(self.tx, self.ctx, key, scope, out)
    }

    fn queue_all(&mut self) -> Result<Vec<Queued>, StoreError> {
        queue::all(self.tx, self.ctx)
    }

    fn queue_own(&mut self, seq: i64) -> Result<Option<(Mono, Mono)>, StoreError> {
        queue::own(self.tx, seq)
    }

    fn queue_entry(&mut self, seq: i64) -> Result<Option<QueueEntry>, StoreError> {
        queue::entry(self.tx, seq)
    }

    fn drop_entry(&mut self, seq: i64) -> Result<(), StoreError> {
        queue::drop_entry(self.tx, seq)
    }

    fn refresh_entry(&mut self, seq: i64, until: Mono) -> Result<(), StoreError> {
        queue::refresh(self.tx, seq, until)
    }

    fn enqueue(
        &mut self,
        req: &AcquireRequest,
        wake: &str,
        until: Mono,
        keep: bool,
    ) -> Result<(i64, Option<String>), StoreError> {
        queue::enqueue(self.tx, self.ctx, req, wake, until, keep)
    }

    fn parked(&mut self, seq: i64) -> Result<Option<Parked>, StoreError> {
        queue::parked(self.tx, self.ctx, seq)
    }

    fn holds_of_ticket(&mut self, seq: i64) -> Result<Vec<Hold>, StoreError> {
        load_holds(self.tx, holds_where!("ticket = ?1 ORDER BY fence"), [seq])
    }

    fn write_grant(
        &mut self,
        req: &AcquireRequest,
        waited: Option<Duration>,
        to: Option<(i64, &Parked)>,
    ) -> Result<Grant, StoreError> {
        crate::acquire::grant(self.tx, self.ctx, req, waited, to)
    }

    fn extend(&mut self, ext: &Extension) -> Result<(), StoreError> {
        let now = self.ctx.now;
        self.tx
            .prepare_cached(
                "UPDATE holds SET seen_mono = ?2, expires_mono = ?3, ttl_ms = ?4,
                    renew_logged = CASE WHEN ?5 THEN ?2 ELSE renew_logged END
                 WHERE key = ?6 AND fence = ?1",
            )
            .map_err(map_err)?
            .execute(params![
                ext.fence.0 as i64,
                now.mono.0 as i64,
                ext.expires.map(|e| e.0 as i64),
                ext.ttl.map(|t| t.as_millis() as i64),
                ext.log,
                ext.key.as_str()
            ])
            .map_err(map_err)?;
        Ok(())
    }

    fn end_hold(
        &mut self,
        lock: &HeldLock,
        reason: ReleaseReason,
        detail: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        rows::end_hold(self.tx, self.ctx.now, lock, reason, detail)
    }

    fn record(&mut self, event: NewEvent<'_>) -> Result<(), StoreError> {
        rows::record(self.tx, self.ctx.now, event)
    }

    /// Holders of an earlier boot are gone: only this boot's are told.
    fn holder_address(&self, holder: &Holder) -> Option<String> {
        (holder.boot_id == self.ctx.host.machine_id.boot_id).then(|| {
            locksmith_host::wake::holder_address(self.ctx.store_id, holder.pid, holder.pid_start)
        })
    }
}
