//! Opening a store from a URL and building lock requests.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use locksmith_core::{
    AcquireRequest, Binding, Grant, Key, Mode, Notifier, ProcessBinder, Scope, Store, Takeover,
    WaitPolicy,
};
use locksmith_host::{default_owner, this_process};
use locksmith_postgres::PgStore;
use locksmith_sqlite::{Options, SqliteStore};

use crate::Error;
use crate::guard::Guard;
use crate::renewer::Renewer;
use crate::wait;

/// Lease length of library guards when none is given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// `$LOCKSMITH_HOME`, else `$XDG_STATE_HOME/locksmith`, else `~/.local/state/locksmith`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("LOCKSMITH_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("locksmith");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/locksmith")
}

/// Where a store URL points, read the same way by every front end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded file: `sqlite:///path/to/locksmith.db`, or `None` for
    /// `sqlite:` (the default file of the home folder).
    Sqlite(Option<PathBuf>),
    /// A PostgreSQL store: `postgres://…` or `postgresql://…`.
    Postgres,
    /// A locksmith server: `http://…` or `https://…`.
    Server,
}

impl StoreUrl {
    /// Reads `url`; an unknown scheme is an error that names the accepted ones.
    pub fn parse(url: &str) -> Result<StoreUrl, Error> {
        match url.split_once(':') {
            Some(("sqlite", rest)) => {
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                Ok(StoreUrl::Sqlite(
                    (!rest.is_empty()).then(|| PathBuf::from(rest)),
                ))
            }
            Some(("postgres" | "postgresql", _)) => Ok(StoreUrl::Postgres),
            Some(("http" | "https", _)) => Ok(StoreUrl::Server),
            _ => Err(Error::Url(format!(
                "cannot open {:?}: the accepted stores are sqlite:///path/to/locksmith.db (sqlite: for the default file), postgres://USER:PASSWORD@HOST/DATABASE and http://HOST:PORT for a locksmith server",
                locksmith_postgres::redact(url)
            ))),
        }
    }
}

/// The PostgreSQL store's settings that the store options give.
pub fn postgres_options(opts: &Options) -> locksmith_postgres::Options {
    locksmith_postgres::Options {
        stale_after: opts.stale_after,
        history_retention: opts.history_retention,
        ..Default::default()
    }
}

/// A handle on one lock store; cheap to clone.
#[derive(Clone)]
pub struct Client {
    store: Arc<dyn Store>,
    notifier: Arc<dyn Notifier>,
    binder: Option<Arc<dyn ProcessBinder>>,
    /// One renewal thread for all guards of this client, started with the first lease.
    renewer: Arc<OnceLock<Arc<Renewer>>>,
}

impl Client {
    /// Opens a store by URL: `sqlite:///path/to/locksmith.db`, `sqlite:`
    /// for the default file (`$LOCKSMITH_HOME/locksmith.db`),
    /// `postgres://USER:PASSWORD@HOST/DATABASE` (options: `schema=`,
    /// `listen=off`, and PostgreSQL's own), or
    /// `http://HOST:PORT` for a locksmith server (token from `$LOCKSMITH_TOKEN`).
    pub fn open(url: &str) -> Result<Client, Error> {
        Client::open_with(url, Options::default())
    }

    /// Opens with explicit store options.
    pub fn open_with(url: &str, opts: Options) -> Result<Client, Error> {
        let path = match StoreUrl::parse(url)? {
            StoreUrl::Sqlite(path) => path.unwrap_or_else(|| default_home().join("locksmith.db")),
            StoreUrl::Server => {
                let token = std::env::var("LOCKSMITH_TOKEN").ok();
                return Client::remote(url, token);
            }
            StoreUrl::Postgres => {
                let pg = PgStore::open(url, postgres_options(&opts))?;
                return Ok(Client::postgres(Arc::new(pg)));
            }
        };
        Ok(Client::sqlite(Arc::new(SqliteStore::open(&path, opts)?)))
    }

    /// Opens the store the command line would use: `url` when given, else
    /// the configuration's `server` (`$LOCKSMITH_SERVER`), else its `store`
    /// (`$LOCKSMITH_STORE`, `sqlite:` by default), with the store options of
    /// `$LOCKSMITH_HOME/locksmith.toml` and the environment. A server gets
    /// `token`, else the configuration's (`$LOCKSMITH_TOKEN`).
    pub fn configured(
        cfg: &crate::config::Config,
        url: Option<&str>,
        token: Option<String>,
    ) -> Result<Client, Error> {
        let config_err = |e: anyhow::Error| Error::Config(format!("{e:#}"));
        let url = match url {
            Some(u) => u.to_string(),
            None => cfg.server().unwrap_or_else(|| cfg.store()),
        };
        match StoreUrl::parse(&url)? {
            StoreUrl::Sqlite(path) => {
                let path = path.unwrap_or_else(|| cfg.db_path());
                let opts = cfg.options().map_err(config_err)?;
                Ok(Client::sqlite(Arc::new(SqliteStore::open(&path, opts)?)))
            }
            StoreUrl::Postgres => {
                let opts = cfg.postgres_options().map_err(config_err)?;
                Ok(Client::postgres(Arc::new(PgStore::open(&url, opts)?)))
            }
            StoreUrl::Server => Client::remote(&url, token.or_else(|| cfg.token())),
        }
    }

    /// A client of the locksmith server at `url` (`http://HOST:PORT`),
    /// sending `token` as its bearer token. Waiting is a long poll; the
    /// guards renew over HTTP and report a lock lost on the server's word or
    /// on their own deadline while the server cannot be reached.
    pub fn remote(url: &str, token: Option<String>) -> Result<Client, Error> {
        let store = locksmith_remote::HttpStore::open(url, token)?;
        Ok(Client::from_parts(
            Arc::new(store),
            Arc::new(locksmith_remote::RemoteNotifier),
            None,
        ))
    }

    /// Wraps an opened embedded store, with its wake-ups and process binding.
    pub fn sqlite(store: Arc<SqliteStore>) -> Client {
        let notifier = Arc::new(store.notifier());
        Client::from_parts(store.clone(), notifier, Some(store))
    }

    /// Wraps an opened PostgreSQL store, with its wake-ups and the binding
    /// of this process (proven dead on this machine; elsewhere its lease ends).
    pub fn postgres(store: Arc<PgStore>) -> Client {
        let notifier = Arc::new(store.notifier());
        Client::from_parts(store.clone(), notifier, Some(store))
    }

    /// Wraps a store with the wake-ups of its waiters and, where the store
    /// can prove a process dead, the binder of this process's locks.
    pub fn from_parts(
        store: Arc<dyn Store>,
        notifier: Arc<dyn Notifier>,
        binder: Option<Arc<dyn ProcessBinder>>,
    ) -> Client {
        Client {
            store,
            notifier,
            binder,
            renewer: Arc::new(OnceLock::new()),
        }
    }

    /// The wake-ups of this store's waiters.
    pub fn notifier(&self) -> &Arc<dyn Notifier> {
        &self.notifier
    }

    /// The store behind this client.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The binding of this process, for requests built by hand: with it a
    /// lock is freed the moment this process dies. `None` where the store
    /// cannot watch this machine's processes (a server): there the lease
    /// alone ends the lock of a dead process.
    pub fn binding(&self) -> Result<Option<Binding>, Error> {
        match &self.binder {
            Some(b) => Ok(Some(b.bind_current_process()?)),
            None => Ok(None),
        }
    }

    /// Takes charge of a grant made through [`Client::store`] directly:
    /// renews it on this client's renewal thread (when it has a lease) and
    /// releases it when the guard is dropped.
    pub fn adopt(&self, grant: Grant) -> Guard {
        Guard::with_renewer(self.store.clone(), grant, self.renewer())
    }

    /// Starts this client's renewal thread and, where the store tells
    /// holders that it ended their locks, its listener, if not yet done:
    /// call it before acquiring, and a lock is told of a loss from the
    /// moment it is granted ([`LockBuilder`] does; [`Client::adopt`] does
    /// it too, after the grant).
    pub fn prepare_guards(&self) {
        self.renewer();
    }

    fn renewer(&self) -> Arc<Renewer> {
        self.renewer
            .get_or_init(|| Renewer::spawn(self.store.clone(), self.notifier.holder_address()))
            .clone()
    }

    /// Starts a request for `key`.
    pub fn lock(&self, key: &str) -> LockBuilder {
        LockBuilder {
            client: self.clone(),
            keys: vec![key.to_string()],
            mode: Mode::Exclusive,
            scope: Scope::Key,
            ttl: Some(DEFAULT_TTL),
            wait: WaitPolicy::FailFast,
            owner: None,
            task: None,
            metadata: None,
            priority: 0,
            max_hold: None,
            request_id: None,
            bind: true,
            takeover: Takeover::None,
        }
    }
}

/// A lock request being built; finish with [`LockBuilder::acquire`].
#[derive(Clone)]
pub struct LockBuilder {
    client: Client,
    keys: Vec<String>,
    mode: Mode,
    scope: Scope,
    ttl: Option<Duration>,
    wait: WaitPolicy,
    owner: Option<String>,
    task: Option<String>,
    metadata: Option<serde_json::Value>,
    priority: i32,
    max_hold: Option<Duration>,
    request_id: Option<String>,
    bind: bool,
    takeover: Takeover,
}

impl LockBuilder {
    /// Adds another key: all keys are granted together or not at all.
    pub fn and(mut self, key: &str) -> Self {
        self.keys.push(key.to_string());
        self
    }
    /// Lease length (default 30 s); the guard renews at a third of it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// No lease: the lock lasts until released, or until this process is
    /// proven dead when bound to it (a server cannot watch processes: there
    /// only a release or the store's `stale_after` ends it).
    pub fn no_lease(mut self) -> Self {
        self.ttl = None;
        self
    }
    /// Waits up to `d` for a busy lock (default: fail at once).
    pub fn wait(mut self, d: Duration) -> Self {
        self.wait = if d.is_zero() {
            WaitPolicy::FailFast
        } else {
            WaitPolicy::For(d)
        };
        self
    }
    /// Waits until granted.
    pub fn wait_forever(mut self) -> Self {
        self.wait = WaitPolicy::Forever;
        self
    }
    /// Shared (reader) mode.
    pub fn shared(mut self) -> Self {
        self.mode = Mode::Shared;
        self
    }
    /// Semaphore of `n` slots.
    pub fn limit(mut self, n: u32) -> Self {
        self.mode = Mode::Semaphore { limit: n };
        self
    }
    /// Tree scope: also covers every key below.
    pub fn tree(mut self) -> Self {
        self.scope = Scope::Tree;
        self
    }
    /// Owner name (default `$LOCKSMITH_OWNER`, else user@host).
    pub fn owner(mut self, owner: &str) -> Self {
        self.owner = Some(owner.to_string());
        self
    }
    /// Task id.
    pub fn task(mut self, task: &str) -> Self {
        self.task = Some(task.to_string());
        self
    }
    /// Metadata object shown with the lock.
    pub fn metadata(mut self, m: serde_json::Value) -> Self {
        self.metadata = Some(m);
        self
    }
    /// Queue priority, higher first.
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }
    /// Cap on the tenure.
    pub fn max_hold(mut self, d: Duration) -> Self {
        self.max_hold = Some(d);
        self
    }
    /// Do not bind the lock to this process: only the lease (and release)
    /// ends it. By default a guard's locks are freed the moment this process
    /// dies, whatever the lease has left.
    pub fn unbound(mut self) -> Self {
        self.bind = false;
        self
    }
    /// Takes the lock over when every holder in the way is stale, expired
    /// or dead (their tenures end as `stolen`); live holders are respected.
    pub fn steal_stale(mut self) -> Self {
        self.takeover = Takeover::StealStale;
        self
    }
    /// Idempotency id for retries.
    pub fn request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_string());
        self
    }

    fn request(&self) -> Result<AcquireRequest, Error> {
        let keys = self
            .keys
            .iter()
            .map(|k| Key::new(k.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(locksmith_core::StoreError::from)?;
        let mut holder = this_process(self.owner.clone().unwrap_or_else(default_owner));
        holder.task = self.task.clone();
        holder.metadata = self.metadata.clone();
        Ok(AcquireRequest {
            keys,
            mode: self.mode,
            scope: self.scope,
            holder,
            ttl: self.ttl,
            max_hold: self.max_hold,
            priority: self.priority,
            takeover: self.takeover.clone(),
            request_id: self.request_id.clone(),
            bind: match (&self.client.binder, self.bind) {
                (Some(b), true) => Some(b.bind_current_process()?),
                _ => None,
            },
        })
    }

    /// Acquires without an async runtime, blocking the thread while waiting.
    pub fn acquire_blocking(self) -> Result<Guard, Error> {
        self.acquire_until(&AtomicBool::new(false))
    }

    /// Acquires without an async runtime; stops waiting (and leaves the
    /// queue) once `cancel` is set, answering [`Error::Cancelled`]. For
    /// front ends that wait on a thread of their own (Python, a UI).
    pub fn acquire_until(self, cancel: &AtomicBool) -> Result<Guard, Error> {
        let req = self.request()?;
        if req.ttl.is_some() {
            self.client.prepare_guards();
        }
        let grant = wait::acquire(
            &*self.client.store,
            &*self.client.notifier,
            &req,
            self.wait,
            cancel,
            &mut |_, _| {},
        )?;
        Ok(self.client.adopt(grant))
    }

    /// Acquires; waiting happens on a blocking thread of the runtime.
    /// Dropping the future (a timeout, a `select!`) cancels the wait: the
    /// request leaves the queue, and a grant that races the drop is released.
    pub async fn acquire(self) -> Result<Guard, Error> {
        /// Sets the flag when the future is dropped before it finished.
        struct CancelOnDrop(Arc<AtomicBool>, bool);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                if self.1 {
                    self.0.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let mut on_drop = CancelOnDrop(cancel.clone(), true);
        let result = tokio::task::spawn_blocking(move || self.acquire_until(&cancel))
            .await
            .map_err(|e| {
                Error::Store(locksmith_core::StoreError::backend_from(
                    "the acquire task failed",
                    e,
                ))
            })?;
        on_drop.1 = false;
        result
    }
}
