//! The embedded store of locksmith: one SQLite file shared by every process
//! on the machine.
//!
//! Every write loads what the pure rules of `locksmith-core` need inside one
//! `BEGIN IMMEDIATE` transaction, asks them, and writes their answer, so
//! concurrent processes see one order of grants. The file is in WAL mode;
//! schema changes are numbered migrations applied on open. Waiters are woken
//! through abstract Unix datagram sockets ([`SqliteNotifier`]), with a timed
//! re-check as the fallback; locks are bound to processes by life files
//! ([`ProcessBinder`]).

mod acquire;
mod gate;
mod open;
mod queue;
mod read;
mod retention;
mod rows;
mod tables;
mod wait;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
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
    Binding, Clock, Event, Key, Notifier, Now, ProcessBinder, ReleaseReason, Store, StoreError,
    WakeSource, validate,
};
use locksmith_host::SystemClock;
use parking_lot::{ReentrantMutex, ReentrantMutexGuard};
use rusqlite::Connection;

use tables::Tables;

pub use open::{FsKind, classify_fs};

/// How hard the store pushes commits to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a power loss may roll back the last commits. Every
    /// holder on this machine dies with it, and fences stay unique (see
    /// `docs/architecture.md`), so this is the default.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is on disk before it is answered.
    Full,
}

impl Durability {
    /// The setting's value as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Normal => "normal",
            Durability::Full => "full",
        }
    }
}

/// Settings of the embedded store.
#[derive(Clone, Debug)]
pub struct Options {
    /// A lock with no sign of life for this long is stale.
    pub stale_after: Duration,
    /// History older than this is dropped.
    pub history_retention: Duration,
    /// Commit durability.
    pub durability: Durability,
    /// How long a write waits for another process's transaction.
    pub busy_timeout: Duration,
    /// Allow a file on a network filesystem (unsafe locking).
    pub allow_network_fs: bool,
    /// Opened by a short-lived process (one command of the CLI): when it
    /// closes the store, a short write-ahead log (up to 512 KiB) is left in
    /// place instead of being checkpointed, so that a command does not pay
    /// for the checkpoint's fsyncs and for removing the files the next
    /// command makes again; a longer log is checkpointed as usual, so that
    /// the next command, which reads the whole log when it opens the store,
    /// starts quickly (see `docs/benchmarks.md`). Nothing is less durable:
    /// every commit is in the log either way.
    pub short_lived: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stale_after: Duration::from_secs(30 * 60),
            history_retention: Duration::from_secs(30 * 86_400),
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(30),
            allow_network_fs: false,
            short_lived: false,
        }
    }
}

/// The embedded store over one SQLite file.
pub struct SqliteStore {
    conn: ReentrantMutex<Held>,
    clock: Arc<dyn Clock>,
    opts: Options,
    path: PathBuf,
    store_id: String,
    host: rows::HostFacts,
    waker: locksmith_host::wake::Waker,
    gate: Option<gate::Gate>,
}

/// Wake-ups for the waiters of one SQLite store: an abstract Unix datagram
/// socket per waiting request, plus inotify on the life files of
/// process-bound holders in its way.
#[derive(Clone, Debug)]
pub struct SqliteNotifier {
    store_id: String,
}

impl Notifier for SqliteNotifier {
    fn wake_source(&self) -> Result<Box<dyn WakeSource>, StoreError> {
        Ok(Box::new(locksmith_host::wake::WakeSocket::bind(
            &self.store_id,
        )?))
    }

    fn holder_address(&self) -> Option<String> {
        Some(locksmith_host::wake::own_holder_address(&self.store_id))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` on the machine clock.
    pub fn open(path: &Path, opts: Options) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_clock(path, opts, Arc::new(SystemClock))
    }

    /// Opens with a given clock (tests drive a [`locksmith_core::ManualClock`]).
    pub fn open_with_clock(
        path: &Path,
        opts: Options,
        clock: Arc<dyn Clock>,
    ) -> Result<SqliteStore, StoreError> {
        validate::stale_after(opts.stale_after)?;
        validate::history_retention(opts.history_retention)?;
        let host = rows::HostFacts::current();
        let (conn, store_id) =
            open::open(path, &opts, &host, clock.now()).map_err(|e| open::explain_full(e, path))?;
        let store = SqliteStore {
            conn: ReentrantMutex::new(Held {
                db: conn,
                together: RefCell::new(None),
            }),
            clock,
            opts,
            path: path.to_path_buf(),
            store_id,
            host,
            waker: locksmith_host::wake::Waker::new(),
            gate: gate::gate(path),
        };
        Ok(store)
    }

    /// A binding that lasts while this process *or any process it starts*
    /// lives (the life file's descriptor is inherited). Keep the returned
    /// file open, and remove the binding's file when done. Used by
    /// `locksmith run`, so that a command's own children keep its locks.
    pub fn bind_process_tree(&self) -> Result<(Binding, std::fs::File), StoreError> {
        let dir = open::folder(&self.path);
        locksmith_host::life::bind_tree(dir, &self.host.machine_id.boot_id)
    }

    /// Wake-ups for this store's waiters.
    pub fn notifier(&self) -> SqliteNotifier {
        SqliteNotifier {
            store_id: self.store_id.clone(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What a commit of this store survives.
    pub fn durability(&self) -> Durability {
        self.opts.durability
    }

    /// The connection; another thread's call may hold it, waiting at the
    /// gate behind another process, so a wait for it is a [`wait::long`].
    /// The thread that holds it may take it again (calls made inside
    /// [`Store::together`]).
    fn conn(&self) -> ReentrantMutexGuard<'_, Held> {
        match self.conn.try_lock() {
            Some(c) => c,
            None => wait::long(|| self.conn.lock()),
        }
    }

    /// Runs `f` in one immediate (write) transaction and commits it, then
    /// wakes the waiters it named.
    fn write<T>(
        &self,
        f: impl FnOnce(&Connection, &Ctx<'_>) -> Result<(T, Vec<String>), StoreError>,
    ) -> Result<T, StoreError> {
        self.write_inner(f)
            .map_err(|e| open::explain_full(e, &self.path))
    }

    fn write_inner<T>(
        &self,
        f: impl FnOnce(&Connection, &Ctx<'_>) -> Result<(T, Vec<String>), StoreError>,
    ) -> Result<T, StoreError> {
        let held = self.conn();
        if held.together.borrow().is_some() {
            // Inside a group commit: this call's writes stand or fall alone
            // within it, and its wake-ups wait for the commit. After an
            // error that made SQLite roll the whole group back (a full
            // disk, say), a savepoint would be a transaction of its own:
            // the rest of the group is refused instead.
            if held.db.is_autocommit() {
                return Err(group_lost());
            }
            let call = Savepoint::begin(&held.db)?;
            let (out, wakes) = f(&held.db, &self.ctx())?;
            call.release()?;
            if let Some(w) = held.together.borrow_mut().as_mut() {
                w.extend(wakes);
            }
            return Ok(out);
        }
        self.transaction(held, |h| f(&h.db, &self.ctx()))
    }

    /// Runs `body` in one immediate (write) transaction on the connection
    /// `held` and commits it, then wakes the waiters it named. Writers
    /// queue at the gate (this process's turn, then the kernel's lock)
    /// instead of sleeping in SQLite's busy handler, whose back-off sets
    /// the tail latency under contention.
    fn transaction<T>(
        &self,
        held: ReentrantMutexGuard<'_, Held>,
        body: impl FnOnce(&Held) -> Result<(T, Vec<String>), StoreError>,
    ) -> Result<T, StoreError> {
        let gate = match &self.gate {
            Some(g) => Some(g.enter(self.opts.busy_timeout)?),
            None => None,
        };
        let tx = Txn::begin(&held.db, "BEGIN IMMEDIATE")?;
        let (out, wakes) = body(&held)?;
        tx.commit()?;
        drop(gate);
        drop(held);
        for address in wakes {
            self.waker.wake(&address);
        }
        Ok(out)
    }

    /// [`Store::together`]: one write transaction around `calls`, each
    /// write in it a savepoint; the wake-ups they name go out after the
    /// commit.
    fn write_together(&self, calls: &mut dyn FnMut()) -> Result<(), StoreError> {
        let held = self.conn();
        if held.together.borrow().is_some() {
            calls();
            return Ok(());
        }
        self.transaction(held, |h| {
            *h.together.borrow_mut() = Some(Vec::new());
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(calls));
            let wakes = h.together.borrow_mut().take().unwrap_or_default();
            // A panic unwinds through the transaction, which rolls it back.
            if let Err(panic) = ran {
                std::panic::resume_unwind(panic);
            }
            if h.db.is_autocommit() {
                return Err(group_lost());
            }
            Ok(((), wakes))
        })
    }

    /// What a transaction knows besides the database, read at its start.
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            now: self.clock.now(),
            store_id: &self.store_id,
            opts: &self.opts,
            host: &self.host,
            waker: &self.waker,
        }
    }

    /// Runs `f` in a read transaction.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection, &Ctx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let held = self.conn();
        // Inside a group commit the reads see its writes so far.
        let _tx = if held.together.borrow().is_some() {
            None
        } else {
            Some(Txn::begin(&held.db, "BEGIN").map_err(|e| open::explain_full(e, &self.path))?)
        };
        let ctx = self.ctx();
        f(&held.db, &ctx).map_err(|e| open::explain_full(e, &self.path))
    }
}

/// The error of a group commit that SQLite rolled back by itself.
fn group_lost() -> StoreError {
    StoreError::backend(
        "the database undid a group of calls after an error in one of them; none of the group was kept",
    )
}

/// The connection and, during a group commit ([`Store::together`]), the
/// wake-ups its calls named so far.
struct Held {
    db: Connection,
    together: RefCell<Option<Vec<String>>>,
}

/// One call's writes inside a group commit: undone if dropped unreleased
/// (the call failed or panicked), so that the others still commit.
struct Savepoint<'c>(Option<&'c Connection>);

impl<'c> Savepoint<'c> {
    fn begin(conn: &'c Connection) -> Result<Savepoint<'c>, StoreError> {
        Txn::run(conn, "SAVEPOINT call")?;
        Ok(Savepoint(Some(conn)))
    }

    /// Keeps the call's writes in the group; if that fails, the drop
    /// undoes them.
    fn release(mut self) -> Result<(), StoreError> {
        if let Some(conn) = self.0 {
            Txn::run(conn, "RELEASE call")?;
            self.0 = None;
        }
        Ok(())
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.0 {
            let _ = Txn::run(conn, "ROLLBACK TO call");
            let _ = Txn::run(conn, "RELEASE call");
        }
    }
}

/// One transaction, begun and committed by cached statements (rusqlite's
/// `Transaction` compiles `BEGIN` and `COMMIT` anew every time, a
/// measurable part of a short write); rolled back if dropped unfinished.
struct Txn<'c>(&'c Connection);

impl<'c> Txn<'c> {
    fn begin(conn: &'c Connection, begin: &str) -> Result<Txn<'c>, StoreError> {
        Txn::run(conn, begin)?;
        Ok(Txn(conn))
    }

    fn run(conn: &Connection, sql: &str) -> Result<(), StoreError> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(open::map_err)
    }

    /// Commits; on failure the transaction is rolled back (by the drop).
    fn commit(self) -> Result<(), StoreError> {
        Txn::run(self.0, "COMMIT")
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = Txn::run(self.0, "ROLLBACK");
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if self.opts.short_lived {
            open::before_close(&self.conn().db, &self.path);
        }
    }
}

/// What one transaction knows besides the database.
pub(crate) struct Ctx<'a> {
    pub now: Now,
    pub store_id: &'a str,
    pub opts: &'a Options,
    pub host: &'a rows::HostFacts,
    pub waker: &'a locksmith_host::wake::Waker,
}

impl Ctx<'_> {
    /// The store settings the rules read.
    pub fn policy(&self) -> Policy {
        Policy {
            stale_after: self.opts.stale_after,
        }
    }
}

impl ProcessBinder for SqliteStore {
    /// A binding of the calling process whose death any other process on
    /// this machine can prove at once (its life file, kept open until exit).
    fn bind_current_process(&self) -> Result<Binding, StoreError> {
        let dir = open::folder(&self.path);
        locksmith_host::life::bind_self(dir, &self.host.machine_id.boot_id)
    }
}

impl Store for SqliteStore {
    fn acquire(
        &self,
        req: &AcquireRequest,
        queue: Option<&mut Ticket>,
    ) -> Result<Attempt, StoreError> {
        validate::request(req)?;
        // A waiter whose place a releaser granted (a hand-over) picks its
        // grant up with a read, without the write lock.
        if queue.as_ref().is_some_and(|t| t.claim.is_some())
            && let Some(grant) = self
                .read(|tx, ctx| flow::picked_up(&mut Tables { tx, ctx }, req, queue.as_deref()))?
        {
            return Ok(Attempt::Granted(grant));
        }
        // An acquire never frees capacity for others (what it ends by itself,
        // waiters find by their own re-check), so it wakes no waiter; it
        // tells the holders it took locks from.
        self.write(|tx, ctx| flow::acquire(&mut Tables { tx, ctx }, req, queue))?
    }

    fn leave_queue(&self, ticket: &Ticket, why: LeaveReason) -> Result<(), StoreError> {
        if ticket.seq.is_none() {
            return Ok(());
        }
        self.write(|tx, ctx| Ok(((), flow::leave_queue(&mut Tables { tx, ctx }, ticket, why)?)))
    }

    fn renew(&self, target: &Target, ttl: Option<Duration>) -> Result<Renewal, StoreError> {
        self.write(|tx, ctx| {
            let renewal = flow::renew(&mut Tables { tx, ctx }, target, ttl)?;
            Ok((renewal, Vec::new()))
        })
    }

    fn release(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.write(|tx, ctx| flow::release(&mut Tables { tx, ctx }, target, reason, false))
    }

    fn release_grant(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.write(|tx, ctx| flow::release(&mut Tables { tx, ctx }, target, reason, true))
    }

    fn force_release_seen(
        &self,
        key: &Key,
        why: &str,
        by: Option<&str>,
        seen: Option<locksmith_core::Fence>,
    ) -> Result<Vec<LockInfo>, StoreError> {
        self.write(|tx, ctx| flow::force_release(&mut Tables { tx, ctx }, key, why, by, seen))
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

    fn history(&self, filter: &HistoryFilter) -> Result<Vec<Event>, StoreError> {
        self.read(|tx, _| read::history(tx, filter))
    }

    fn stats(&self) -> Result<Stats, StoreError> {
        self.read(read::stats)
    }

    fn reap(&self, batch: &[Reap]) -> Result<Vec<bool>, StoreError> {
        self.write(|tx, ctx| flow::reap(&mut Tables { tx, ctx }, batch))
    }

    /// Also removes the life files of processes proven dead (see `locksmith_host::life::tidy`).
    fn prune_history(&self) -> Result<usize, StoreError> {
        let pruned = self
            .write(|tx, ctx| Ok((retention::prune_history(tx, ctx.now, ctx.opts)?, Vec::new())))?;
        locksmith_host::life::tidy(open::folder(&self.path));
        Ok(pruned)
    }

    fn together(&self, calls: &mut dyn FnMut()) -> Result<(), StoreError> {
        self.write_together(calls)
            .map_err(|e| open::explain_full(e, &self.path))
    }
}
