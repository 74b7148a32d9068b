//! The PostgreSQL store of locksmith: many machines, one set of locks.
//!
//! Every write is one READ COMMITTED transaction that first takes
//! transaction-scoped advisory locks on the keys it touches (exclusive on
//! each key, shared on its ancestors, always in one order), then reads the
//! database's clock, loads what the pure rules of `locksmith-core` need,
//! asks them, and writes their answer. Nothing lives in a session: the
//! locks end with the transaction, so a pooler in transaction mode works,
//! and a client that dies mid-transaction leaves nothing behind. Fences
//! come from one sequence drawn under those locks. Waiters are woken by
//! `NOTIFY` (a hint: a dedicated listening connection reconnects when
//! dropped, and every waiter looks again at least once a second) and, on
//! the same machine, by the wake sockets of the embedded store.
//! `docs/architecture.md` argues each choice.

mod acquire;
mod conn;
mod listen;
mod queue;
mod read;
mod rows;
mod schema;
mod tables;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use locksmith_core::decide::Policy;
use locksmith_core::flow;
use locksmith_core::store::{
    AcquireRequest, Attempt, HistoryFilter, KeyStatus, LeaveReason, ListFilter, LockInfo, Release,
    Renewal, Stats, Target, Ticket, WaiterInfo,
};
use locksmith_core::tenure::Reap;
use locksmith_core::{
    Binding, Clock, Event, Key, Notifier, Now, ProcessBinder, ReleaseReason, Scope, Store,
    StoreError, WakeSource, validate,
};
use locksmith_host::life::{self, HostFacts};
use locksmith_host::wake::{WakeSocket, Waker};

pub use conn::redact;
use conn::{Fail, Pool, Tx};
use tables::Tables;

/// Settings of the PostgreSQL store.
#[derive(Clone, Debug)]
pub struct Options {
    /// A lock with no sign of life for this long is stale.
    pub stale_after: Duration,
    /// History older than this is dropped.
    pub history_retention: Duration,
    /// How long connecting may take before the store is reported unreachable.
    pub connect_timeout: Duration,
    /// Connections this process keeps at most.
    pub pool_size: usize,
    /// Where this machine's life files of process-bound locks live
    /// (default: `$XDG_RUNTIME_DIR/locksmith`, else a folder of the user in
    /// the temporary directory).
    pub life_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stale_after: Duration::from_secs(30 * 60),
            history_retention: Duration::from_secs(30 * 86_400),
            connect_timeout: Duration::from_secs(5),
            pool_size: 16,
            life_dir: None,
        }
    }
}

/// The store over one PostgreSQL database (one schema of it).
pub struct PgStore {
    pool: Pool,
    /// `None`: the database's clock (`clock_timestamp()`), the default.
    clock: Option<Arc<dyn Clock>>,
    opts: Options,
    /// The first half of every advisory lock id of this store.
    ns: i32,
    store_id: String,
    host: HostFacts,
    /// This machine's tag in notifications.
    tag: String,
    waker: Waker,
}

/// What one transaction knows besides the database.
pub(crate) struct Ctx<'a> {
    pub now: Now,
    pub store_id: &'a str,
    pub opts: &'a Options,
    pub host: &'a HostFacts,
    pub waker: &'a Waker,
    pub ns: i32,
    /// Fences drawn under the key locks, for a grant.
    pub fences: Vec<i64>,
    /// Nothing was queued when the key locks were taken.
    pub queue_empty: bool,
}

impl Ctx<'_> {
    /// The store settings the rules read.
    pub fn policy(&self) -> Policy {
        Policy {
            stale_after: self.opts.stale_after,
        }
    }
}

/// Wake-ups for the waiters of one PostgreSQL store: a wake socket per
/// waiting request (woken directly from this machine, and through this
/// process's listening connection from others), with the inotify watch on
/// the life files of process-bound holders in its way.
#[derive(Clone, Debug)]
pub struct PgNotifier {
    store_id: String,
}

impl Notifier for PgNotifier {
    fn wake_source(&self) -> Result<Box<dyn WakeSource>, StoreError> {
        Ok(Box::new(WakeSocket::bind(&self.store_id)?))
    }

    fn holder_address(&self) -> Option<String> {
        Some(locksmith_host::wake::own_holder_address(&self.store_id))
    }
}

impl PgStore {
    /// Connects to the store at `url` (`postgres://…`), creating or
    /// migrating its schema, on the database's clock.
    pub fn open(url: &str, opts: Options) -> Result<PgStore, StoreError> {
        PgStore::open_inner(url, opts, None)
    }

    /// Connects with a given clock instead of the database's (tests drive
    /// a [`locksmith_core::ManualClock`]).
    pub fn open_with_clock(
        url: &str,
        opts: Options,
        clock: Arc<dyn Clock>,
    ) -> Result<PgStore, StoreError> {
        PgStore::open_inner(url, opts, Some(clock))
    }

    fn open_inner(
        url: &str,
        opts: Options,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<PgStore, StoreError> {
        validate::stale_after(opts.stale_after)?;
        validate::history_retention(opts.history_retention)?;
        let target = conn::parse(url, opts.connect_timeout)?;
        let ns = conn::lock_id(&format!("locksmith schema {}", target.schema));
        let listen = target.listen;
        let pool = Pool::new(target, opts.pool_size, opts.connect_timeout);
        let store_id = schema::migrate(&pool, ns, &opts)?;
        let host = HostFacts::current();
        let tag = listen::tag(&host.machine);
        if listen {
            listen::ensure(pool.target(), &tag);
        }
        Ok(PgStore {
            pool,
            clock,
            opts,
            ns,
            store_id,
            host,
            tag,
            waker: Waker::new(),
        })
    }

    /// The URL of the store, without its password.
    pub fn shown(&self) -> &str {
        &self.pool.target().shown
    }

    /// Wake-ups for this store's waiters.
    pub fn notifier(&self) -> PgNotifier {
        PgNotifier {
            store_id: self.store_id.clone(),
        }
    }

    /// A binding that lasts while this process *or any process it starts*
    /// lives (see the embedded store's `bind_process_tree`).
    pub fn bind_process_tree(&self) -> Result<(Binding, std::fs::File), StoreError> {
        life::bind_tree(&self.life_dir(), &self.host.machine_id.boot_id)
    }

    fn life_dir(&self) -> PathBuf {
        self.opts.life_dir.clone().unwrap_or_else(|| {
            match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
                Some(d) => PathBuf::from(d).join("locksmith"),
                None => std::env::temp_dir()
                    .join(format!("locksmith-{}", locksmith_host::sys::username())),
            }
        })
    }

    /// Ends the caller's tenure of the key, or with `whole_grant` every
    /// lock of its grant.
    fn release_of(
        &self,
        target: &Target,
        reason: ReleaseReason,
        whole_grant: bool,
    ) -> Result<Release, StoreError> {
        self.write_ahead(
            &on_key(&target.key),
            0,
            &self.named_load(target)?,
            |tx, ctx| {
                let t = &mut Tables { tx, ctx };
                Ok(flow::release(t, target, reason, whole_grant)?)
            },
        )
    }

    /// [`named_load`], as the store reports a failure.
    fn named_load(&self, target: &Target) -> Result<Vec<conn::Stmt>, StoreError> {
        named_load(target).map_err(|e| e.into_store(self.shown()))
    }

    /// The highest event id below which every event is final (see
    /// `EVENTS_LOCK` in `conn.rs`).
    fn events_horizon(&self) -> Result<i64, StoreError> {
        self.pool.run(false, |tx| tx.events_horizon(self.ns))
    }

    fn ctx(&self, locked: conn::Locked) -> Ctx<'_> {
        Ctx {
            now: self.clock.as_ref().map_or(locked.now, |c| c.now()),
            store_id: &self.store_id,
            opts: &self.opts,
            host: &self.host,
            waker: &self.waker,
            ns: self.ns,
            fences: locked.fences,
            queue_empty: locked.queue_empty,
        }
    }

    /// Runs `f` in one write transaction holding the key locks of `claims`
    /// and `fences` fences drawn under them; commits it, and wakes the
    /// waiters it named: by NOTIFY inside the transaction (sent on commit),
    /// and directly on this machine after it.
    fn write<T>(
        &self,
        claims: &[(Key, Scope)],
        fences: usize,
        f: impl FnMut(&mut Tx<'_>, &Ctx<'_>) -> Result<(T, Vec<String>), Fail>,
    ) -> Result<T, StoreError> {
        self.write_ahead(claims, fences, &[], f)
    }

    /// [`PgStore::write`], with the reads `ahead` (see [`rows::select`])
    /// sent with the key locks: the loads the call makes first cost no
    /// round trip of their own.
    fn write_ahead<T>(
        &self,
        claims: &[(Key, Scope)],
        fences: usize,
        ahead: &[conn::Stmt],
        mut f: impl FnMut(&mut Tx<'_>, &Ctx<'_>) -> Result<(T, Vec<String>), Fail>,
    ) -> Result<T, StoreError> {
        let (out, wakes) = self.pool.run(false, |tx| {
            let locked = tx.lock(self.ns, claims, fences, ahead.to_vec())?;
            let ctx = self.ctx(locked);
            let (out, wakes) = f(tx, &ctx)?;
            if !wakes.is_empty() {
                listen::notify(tx, &self.tag, &wakes)?;
            }
            Ok((out, wakes))
        })?;
        for address in wakes {
            self.waker.wake(&address);
        }
        Ok(out)
    }

    /// Runs `f` in a read-only snapshot.
    fn read<T>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>, &Ctx<'_>) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        self.pool.run(true, |tx| {
            let now = tx.now()?;
            let ctx = self.ctx(conn::Locked {
                now,
                fences: Vec::new(),
                queue_empty: false,
            });
            f(tx, &ctx)
        })
    }
}

impl ProcessBinder for PgStore {
    /// A binding of the calling process whose death any other process on
    /// this machine can prove at once (its life file); on other machines
    /// the lock ends with its lease.
    fn bind_current_process(&self) -> Result<Binding, StoreError> {
        life::bind_self(&self.life_dir(), &self.host.machine_id.boot_id)
    }
}

/// The loads an acquire makes first (see [`PgStore::write_ahead`]): a
/// waiter's own queue entry `seq`, the holds of each claim and those of its
/// request id, and the queue entries of each claim.
fn loads_of(
    req: &AcquireRequest,
    claims: &[(Key, Scope)],
    seq: Option<i64>,
) -> Result<Vec<conn::Stmt>, Fail> {
    let mut out = Vec::new();
    if let Some(seq) = seq {
        out.push(queue::own_stmt(seq)?);
    }
    if let Some(rid) = &req.request_id {
        out.push(rows::of_request(rid, &req.holder.owner, rows::select)?);
    }
    for (key, scope) in claims {
        for stmt in [
            rows::touching(key, *scope, rows::select)?,
            queue::touching_query(key, *scope, |s, a| conn::Stmt::new(s, a))?,
        ] {
            if !out.contains(&stmt) {
                out.push(stmt);
            }
        }
    }
    Ok(out)
}

/// The load a renew or release makes first: the holds its target names
/// (none for a malformed handle, which the rules refuse).
fn named_load(target: &Target) -> Result<Vec<conn::Stmt>, Fail> {
    match locksmith_core::tenure::named(target) {
        Ok(named) => Ok(vec![rows::named(&named, rows::select)?]),
        Err(_) => Ok(Vec::new()),
    }
}

/// The claims of a request: each key with its scope.
fn claims_of(req: &AcquireRequest) -> Vec<(Key, Scope)> {
    req.keys.iter().map(|k| (k.clone(), req.scope)).collect()
}

/// The claim of a call about one key (the other keys of its grant are
/// locked when they are found).
fn on_key(key: &Key) -> [(Key, Scope); 1] {
    [(key.clone(), Scope::Key)]
}

impl Store for PgStore {
    fn acquire(
        &self,
        req: &AcquireRequest,
        queue: Option<&mut Ticket>,
    ) -> Result<Attempt, StoreError> {
        validate::request(req)?;
        let claims = claims_of(req);
        let start = queue.as_ref().map(|t| (**t).clone());
        let mut kept: Option<Ticket> = None;
        // Fences are drawn with the locks, in the same round trip; a request
        // that is not granted leaves a gap, never a number used twice.
        let seq = queue.as_ref().and_then(|t| t.seq);
        let ahead = loads_of(req, &claims, seq).map_err(|e| e.into_store(self.shown()))?;
        let result = self.write_ahead(&claims, req.keys.len(), &ahead, |tx, ctx| {
            // A transaction run again starts from the ticket as given.
            let mut ticket = start.clone();
            let out = flow::acquire(&mut Tables { tx, ctx }, req, ticket.as_mut())?;
            kept = ticket;
            Ok(out)
        })?;
        if let (Some(t), Some(k)) = (queue, kept) {
            *t = k;
        }
        result
    }

    /// The entry's keys are locked when it is found.
    fn leave_queue(&self, ticket: &Ticket, why: LeaveReason) -> Result<(), StoreError> {
        if ticket.seq.is_none() {
            return Ok(());
        }
        self.write(&[], 0, |tx, ctx| {
            Ok(((), flow::leave_queue(&mut Tables { tx, ctx }, ticket, why)?))
        })
    }

    fn renew(&self, target: &Target, ttl: Option<Duration>) -> Result<Renewal, StoreError> {
        self.write_ahead(
            &on_key(&target.key),
            0,
            &self.named_load(target)?,
            |tx, ctx| {
                let renewal = flow::renew(&mut Tables { tx, ctx }, target, ttl)?;
                Ok((renewal, Vec::new()))
            },
        )
    }

    fn release(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.release_of(target, reason, false)
    }

    fn release_grant(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.release_of(target, reason, true)
    }

    fn force_release_seen(
        &self,
        key: &Key,
        why: &str,
        by: Option<&str>,
        seen: Option<locksmith_core::Fence>,
    ) -> Result<Vec<LockInfo>, StoreError> {
        self.write(&on_key(key), 0, |tx, ctx| {
            Ok(flow::force_release(
                &mut Tables { tx, ctx },
                key,
                why,
                by,
                seen,
            )?)
        })
    }

    fn status(&self, key: &Key) -> Result<KeyStatus, StoreError> {
        self.read(|tx, ctx| read::status(tx, ctx, key))
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<LockInfo>, StoreError> {
        self.read(|tx, ctx| read::list(tx, ctx, filter))
    }

    fn waiters(&self, filter: &ListFilter) -> Result<Vec<WaiterInfo>, StoreError> {
        self.read(|tx, ctx| read::waiters(tx, ctx, filter))
    }

    /// Following the history (`after`) never skips an event of a
    /// transaction that commits late (see `EVENTS_LOCK` in `conn.rs`): the ids
    /// that follow `after` without a gap are final and returned at once;
    /// when the next id is missing, the ids up to the horizon are.
    fn history(&self, filter: &HistoryFilter) -> Result<Vec<Event>, StoreError> {
        let unfiltered = filter.key.is_none() && filter.owner.is_none() && filter.kind.is_none();
        let Some(after) = filter.after else {
            // The newest event alone is where a follower starts: only a
            // final one, so that no smaller id commits behind the start.
            let upto = match unfiltered && filter.limit == 1 {
                true => Some(self.events_horizon()?),
                false => None,
            };
            return self.read(|tx, _| read::history(tx, filter, upto));
        };
        if unfiltered && filter.limit == 0 {
            let mut events = self.read(|tx, _| read::history(tx, filter, None))?;
            // Newest first: the run without a gap is at the end.
            let run = events
                .iter()
                .rev()
                .zip(after + 1..)
                .take_while(|(e, id)| e.id == *id)
                .count();
            if run > 0 || events.is_empty() {
                events.drain(..events.len() - run);
                return Ok(events);
            }
        } else {
            // With a filter the ids of every event tell where the run ends.
            let found = self.read(|tx, _| match read::run_end(tx, after)? {
                read::Run::Nothing => Ok(Some(Vec::new())),
                read::Run::Upto(end) => read::history(tx, filter, Some(end)).map(Some),
                read::Run::Gap => Ok(None),
            })?;
            if let Some(events) = found {
                return Ok(events);
            }
        }
        let upto = self.events_horizon()?;
        self.read(|tx, _| read::history(tx, filter, Some(upto)))
    }

    fn stats(&self) -> Result<Stats, StoreError> {
        self.read(read::stats)
    }

    fn reap(&self, batch: &[Reap]) -> Result<Vec<bool>, StoreError> {
        let claims: Vec<(Key, Scope)> = batch.iter().map(|r| (r.key.clone(), Scope::Key)).collect();
        self.write(&claims, 0, |tx, ctx| {
            Ok(flow::reap(&mut Tables { tx, ctx }, batch)?)
        })
    }

    /// Also removes this machine's life files of processes proven dead.
    fn prune_history(&self) -> Result<usize, StoreError> {
        let pruned = self.write(&[], 0, |tx, ctx| {
            Ok((read::prune_history(tx, ctx)?, Vec::new()))
        })?;
        life::tidy(&self.life_dir());
        Ok(pruned)
    }
}
