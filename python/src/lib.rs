//! `locksmith._native`: the Rust library under the `locksmith` Python
//! package (python/locksmith). It stays thin: it turns Python arguments into
//! library requests, waits and renews without the GIL, and raises the
//! package's exceptions with the details of the outcome. The `with`
//! statement, asyncio and the `lost` event live in Python.
//!
//! Fork safety: a client, a lock or the loss watcher used in a process
//! forked from the one that made it never touches the parent's store
//! connection, threads or locks: the client reopens its store, and a lock
//! inherited from the parent is left to the parent (never released by the
//! child).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use locksmith::config::Config;
use locksmith::core::store::{HistoryFilter, ListFilter, Release, Renewal};
use locksmith::core::time::{duration_from_secs, parse_duration};
use locksmith::core::{Code, EventKind, Key, StoreError};
use locksmith::{Client, Error, Guard, LostWatch, StoreUrl};
use pyo3::prelude::*;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The package's exception for `e`, with its code and details.
fn raise(py: Python<'_>, e: Error) -> PyErr {
    let code = e.code();
    let details = match &e {
        Error::Busy(b) | Error::TimedOut(b) => serde_json::to_value(b).ok(),
        Error::Store(StoreError::Deadlock { key, cycle }) => {
            Some(serde_json::json!({ "key": key.as_str(), "cycle": cycle }))
        }
        Error::Store(StoreError::Newer { key, fence, seen }) => {
            Some(serde_json::json!({ "key": key.as_str(), "fence": fence.0, "seen": seen.0 }))
        }
        _ => None,
    };
    let class = match code {
        Code::Busy => "LockBusy",
        Code::WaitTimedOut => "WaitTimedOut",
        Code::Deadlock => "DeadlockRefused",
        Code::NotHolder => "NotHolder",
        Code::Lost => "LockLost",
        Code::Invalid => "InvalidRequest",
        Code::Cancelled => "WaitCancelled",
        Code::Unauthorized => "Unauthorized",
        Code::Forbidden => "Forbidden",
        _ => "StoreError",
    };
    exception(py, class, &e.to_string(), code.name(), details)
}

fn exception(
    py: Python<'_>,
    class: &str,
    message: &str,
    code: &str,
    details: Option<serde_json::Value>,
) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let exc = py
            .import("locksmith.errors")?
            .getattr(class)?
            .call1((message,))?;
        exc.setattr("code", code)?;
        if let Some(d) = details {
            let value = py.import("json")?.call_method1("loads", (d.to_string(),))?;
            exc.call_method1("_details", (value,))?;
        }
        Ok(PyErr::from_value(exc))
    })();
    made.unwrap_or_else(|e| e)
}

fn invalid(py: Python<'_>, message: String) -> PyErr {
    exception(py, "InvalidRequest", &message, Code::Invalid.name(), None)
}

/// A duration as Python gives it: seconds, or text such as `30s`.
#[derive(FromPyObject)]
enum Span {
    Secs(f64),
    Text(String),
}

fn span(py: Python<'_>, what: &str, s: Span) -> PyResult<Duration> {
    match s {
        Span::Secs(secs) => duration_from_secs(what, secs),
        Span::Text(t) => parse_duration(&t).map_err(|e| format!("{what}: {e}")),
    }
    .map_err(|m| invalid(py, m))
}

fn key(py: Python<'_>, k: &str) -> PyResult<Key> {
    Key::new(k).map_err(|e| raise(py, Error::Store(e.into())))
}

fn json(py: Python<'_>, v: &impl serde::Serialize) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| invalid(py, e.to_string()))
}

/// One process's loss watcher: a small runtime whose tasks wait for locks
/// to be lost, and the channel that hands each loss to Python.
struct Watcher {
    pid: u32,
    runtime: tokio::runtime::Runtime,
    tx: mpsc::Sender<(u64, Option<String>)>,
    rx: Mutex<mpsc::Receiver<(u64, Option<String>)>>,
}

static WATCHER: Mutex<Option<Arc<Watcher>>> = Mutex::new(None);

/// This process's watcher; a forked child gets one of its own (the parent's
/// threads are not in the child, so its runtime is left untouched).
fn watcher() -> PyResult<Arc<Watcher>> {
    let mut w = lock(&WATCHER);
    let pid = std::process::id();
    if let Some(found) = w.as_ref().filter(|w| w.pid == pid) {
        return Ok(found.clone());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("locksmith-watch")
        .enable_time()
        .build()
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
    let (tx, rx) = mpsc::channel();
    let fresh = Arc::new(Watcher {
        pid,
        runtime,
        tx,
        rx: Mutex::new(rx),
    });
    if let Some(old) = w.replace(fresh.clone()) {
        std::mem::forget(old);
    }
    Ok(fresh)
}

/// Waits up to `timeout` seconds for a lock of this process to be lost, or
/// released: `(lock id, reason)`, or `None` when nothing happened.
#[pyfunction]
fn next_lost(py: Python<'_>, timeout: f64) -> PyResult<Option<(u64, Option<String>)>> {
    let w = watcher()?;
    let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX);
    Ok(py.detach(|| lock(&w.rx).recv_timeout(timeout).ok()))
}

/// Stops a wait from another thread (asyncio cancels through it).
#[pyclass(frozen, module = "locksmith._native")]
struct CancelToken {
    flag: Arc<AtomicBool>,
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        CancelToken {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }
    /// Asks the wait to stop; it leaves the queue.
    fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }
    /// True once cancelled.
    #[getter]
    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// A store, opened as the command line opens it.
#[pyclass(frozen, module = "locksmith._native", name = "Client")]
struct NativeClient {
    /// A server: waits are long polls, and a busy answer is counted there.
    remote: bool,
    url: Option<String>,
    token: Option<String>,
    owner: Option<String>,
    /// The process that opened `client`, and the client.
    opened: Mutex<(u32, Client)>,
}

struct Opened {
    client: Client,
    owner: Option<String>,
    remote: bool,
}

fn open(url: Option<&str>, token: Option<String>) -> Result<Opened, Error> {
    let cfg = Config::load(None).map_err(|e| Error::Config(format!("{e:#}")))?;
    let client = Client::configured(&cfg, url, token)?;
    let effective = match url {
        Some(u) => u.to_string(),
        None => cfg.server().unwrap_or_else(|| cfg.store()),
    };
    Ok(Opened {
        client,
        owner: cfg.owner_set(),
        remote: StoreUrl::parse(&effective)? == StoreUrl::Server,
    })
}

impl NativeClient {
    /// The client of this process: reopened after a fork, leaving the
    /// parent's connection alone (closing it could drop the parent's locks
    /// on the file).
    fn client(&self, py: Python<'_>) -> PyResult<Client> {
        let mut o = lock(&self.opened);
        let pid = std::process::id();
        if o.0 != pid {
            let (url, token) = (self.url.clone(), self.token.clone());
            let fresh = py
                .detach(|| open(url.as_deref(), token))
                .map_err(|e| raise(py, e))?;
            std::mem::forget(std::mem::replace(&mut o.1, fresh.client));
            o.0 = pid;
        }
        Ok(o.1.clone())
    }
}

impl NativeClient {
    /// One store call without the GIL, its answer as JSON.
    fn read<T: serde::Serialize + Send>(
        &self,
        py: Python<'_>,
        call: impl FnOnce(&dyn locksmith::core::Store) -> Result<T, StoreError> + Send,
    ) -> PyResult<String> {
        let client = self.client(py)?;
        let answer = py
            .detach(|| call(&**client.store()))
            .map_err(|e| raise(py, e.into()))?;
        json(py, &answer)
    }
}

fn reason_name(r: Option<locksmith::ReleaseReason>) -> Option<String> {
    r.map(|r| r.name().to_string())
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (url=None, token=None))]
    fn new(py: Python<'_>, url: Option<String>, token: Option<String>) -> PyResult<Self> {
        let o = py
            .detach(|| open(url.as_deref(), token.clone()))
            .map_err(|e| raise(py, e))?;
        Ok(NativeClient {
            remote: o.remote,
            url,
            token,
            owner: o.owner,
            opened: Mutex::new((std::process::id(), o.client)),
        })
    }

    /// Acquires `keys` (all or none). `wait`: `None` waits until granted,
    /// 0 fails at once. A wait stops when `cancel` is cancelled, and, when
    /// `main` (the caller is Python's main thread, where signal handlers
    /// run), on a signal such as Ctrl-C; it leaves the queue either way.
    #[pyo3(signature = (keys, ttl, wait, shared, limit, tree, priority, task, metadata, owner, steal_stale, request_id, bind, cancel, main))]
    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        ttl: Option<Span>,
        wait: Option<Span>,
        shared: bool,
        limit: Option<u32>,
        tree: bool,
        priority: i32,
        task: Option<String>,
        metadata: Option<String>,
        owner: Option<String>,
        steal_stale: bool,
        request_id: Option<String>,
        bind: bool,
        cancel: Option<Py<CancelToken>>,
        main: bool,
    ) -> PyResult<NativeLock> {
        let Some((first, rest)) = keys.split_first() else {
            return Err(invalid(py, "no key given: name at least one key".into()));
        };
        let client = self.client(py)?;
        let mut b = client.lock(first);
        for k in rest {
            b = b.and(k);
        }
        b = match ttl {
            Some(t) => b.ttl(span(py, "ttl", t)?),
            None => b.no_lease(),
        };
        let waits = match wait {
            None => {
                b = b.wait_forever();
                true
            }
            Some(w) => {
                let w = span(py, "wait", w)?;
                b = b.wait(w);
                !w.is_zero()
            }
        };
        match (shared, limit) {
            (true, Some(_)) => {
                return Err(invalid(
                    py,
                    "shared and limit exclude each other: shared is many readers, limit is N holders of a semaphore".into(),
                ));
            }
            (true, None) => b = b.shared(),
            (false, Some(n)) => b = b.limit(n),
            (false, None) => {}
        }
        if tree {
            b = b.tree();
        }
        b = b.priority(priority);
        if let Some(t) = &task {
            b = b.task(t);
        }
        if let Some(m) = metadata {
            let value: serde_json::Value = serde_json::from_str(&m)
                .map_err(|e| invalid(py, format!("metadata is not JSON: {e}")))?;
            b = b.metadata(value);
        }
        if let Some(o) = owner.as_ref().or(self.owner.as_ref()) {
            b = b.owner(o);
        }
        if steal_stale {
            b = b.steal_stale();
        }
        if let Some(id) = &request_id {
            b = b.request_id(id);
        }
        if !bind {
            b = b.unbound();
        }
        let flag = match &cancel {
            Some(c) => c.get().flag.clone(),
            None => Arc::new(AtomicBool::new(false)),
        };
        if waits && main {
            // The main thread waits on a helper thread so that it can take
            // signals. A lock that is free now is taken without one: a
            // fail-fast try first (not through a server, where a busy
            // answer is counted, nor with a request id, whose first answer
            // is the one kept).
            if !self.remote && request_id.is_none() {
                let now = b.clone().wait(Duration::ZERO);
                match py.detach(|| now.acquire_until(&flag)) {
                    Ok(g) => return NativeLock::new(g),
                    Err(Error::Busy(_)) => {}
                    Err(e) => return Err(raise(py, e)),
                }
            }
            return NativeLock::new(wait_for(py, b, flag)?);
        }
        let guard = py
            .detach(|| b.acquire_until(&flag))
            .map_err(|e| raise(py, e))?;
        NativeLock::new(guard)
    }

    /// Holders and queue of one key, as JSON.
    fn status(&self, py: Python<'_>, key: &str) -> PyResult<String> {
        let key = self::key(py, key)?;
        self.read(py, move |store| store.status(&key))
    }

    /// Held locks, key order, as JSON.
    #[pyo3(signature = (prefix, owner, stale, limit))]
    fn list(
        &self,
        py: Python<'_>,
        prefix: Option<String>,
        owner: Option<String>,
        stale: bool,
        limit: usize,
    ) -> PyResult<String> {
        let filter = ListFilter {
            owner,
            prefix,
            unhealthy: stale,
            grant: None,
            limit,
        };
        self.read(py, move |store| store.list(&filter))
    }

    /// Queued requests, key then queue order, as JSON.
    #[pyo3(signature = (prefix, owner, limit))]
    fn waiters(
        &self,
        py: Python<'_>,
        prefix: Option<String>,
        owner: Option<String>,
        limit: usize,
    ) -> PyResult<String> {
        let filter = ListFilter {
            owner,
            prefix,
            limit,
            ..ListFilter::default()
        };
        self.read(py, move |store| store.waiters(&filter))
    }

    /// History, newest first, as JSON.
    #[pyo3(signature = (key, prefix, owner, event, after, limit))]
    #[allow(clippy::too_many_arguments)]
    fn history(
        &self,
        py: Python<'_>,
        key: Option<String>,
        prefix: bool,
        owner: Option<String>,
        event: Option<String>,
        after: Option<i64>,
        limit: usize,
    ) -> PyResult<String> {
        let kind = event
            .as_deref()
            .map(EventKind::parse)
            .transpose()
            .map_err(|e| invalid(py, e))?;
        let filter = HistoryFilter {
            key,
            prefix,
            owner,
            kind,
            after,
            limit,
        };
        self.read(py, move |store| store.history(&filter))
    }

    /// The counters of `locksmith stats`, as JSON.
    fn stats(&self, py: Python<'_>) -> PyResult<String> {
        self.read(py, |store| store.stats())
    }

    /// Ends every tenure on `key` (admin); with `fence`, only while no newer
    /// tenure holds it. The ended locks, as JSON.
    #[pyo3(signature = (key, reason, fence, by))]
    fn force_release(
        &self,
        py: Python<'_>,
        key: &str,
        reason: &str,
        fence: Option<u64>,
        by: Option<String>,
    ) -> PyResult<String> {
        let key = self::key(py, key)?;
        let by = by.or_else(|| self.owner.clone());
        self.read(py, move |store| {
            store.force_release_seen(&key, reason, by.as_deref(), fence.map(locksmith::Fence))
        })
    }
}

/// Waits on a thread of its own so that the caller's thread can take
/// signals: Ctrl-C stops the wait (the request leaves the queue; a grant
/// that raced it is released) and raises `KeyboardInterrupt`.
fn wait_for(py: Python<'_>, b: locksmith::LockBuilder, flag: Arc<AtomicBool>) -> PyResult<Guard> {
    let (tx, rx) = mpsc::channel();
    let rx = Mutex::new(rx);
    let waiting = flag.clone();
    std::thread::Builder::new()
        .name("locksmith-wait".into())
        .spawn(move || {
            let _ = tx.send(b.acquire_until(&waiting));
        })
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
    loop {
        match py.detach(|| lock(&rx).recv_timeout(Duration::from_millis(50))) {
            Ok(r) => return r.map_err(|e| raise(py, e)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(signal) = py.check_signals() {
                    flag.store(true, Ordering::SeqCst);
                    // A grant that came meanwhile is released by its drop.
                    drop(py.detach(|| lock(&rx).recv()));
                    return Err(signal);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "the waiting thread ended without an answer",
                ));
            }
        }
    }
}

static NEXT_LOCK: AtomicU64 = AtomicU64::new(1);

/// A held lock; Python's `Lock` wraps it.
#[pyclass(frozen, module = "locksmith._native", name = "Lock")]
struct NativeLock {
    id: u64,
    /// The process that acquired it: only that one may release it.
    pid: u32,
    guard: Mutex<Option<Guard>>,
    keys: Vec<String>,
    fences: Vec<u64>,
    grant: i64,
    owner: String,
    ttl: Option<f64>,
    expires: Mutex<Vec<Option<f64>>>,
    watch: LostWatch,
    /// The watcher's task for this lock: stopped when the holder releases,
    /// so that a release never wakes Python's watcher thread.
    watching: tokio::task::AbortHandle,
}

fn expiries(g: &Guard) -> Vec<Option<f64>> {
    g.grant()
        .locks
        .iter()
        .map(|l| l.expires_at.map(|w| w.0 as f64 / 1e3))
        .collect()
}

impl NativeLock {
    fn new(guard: Guard) -> PyResult<NativeLock> {
        let id = NEXT_LOCK.fetch_add(1, Ordering::Relaxed);
        let grant = guard.grant();
        let watch = guard.watch();
        let w = watcher()?;
        let (tx, mine) = (w.tx.clone(), watch.clone());
        let watching = w
            .runtime
            .spawn(async move {
                let reason = mine.lost().await;
                let _ = tx.send((id, reason_name(reason)));
            })
            .abort_handle();
        Ok(NativeLock {
            id,
            pid: std::process::id(),
            keys: grant.locks.iter().map(|l| l.key.to_string()).collect(),
            fences: grant.locks.iter().map(|l| l.fence.0).collect(),
            grant: grant.grant,
            owner: grant.owner.clone(),
            ttl: grant.ttl.map(|t| t.as_secs_f64()),
            expires: Mutex::new(expiries(&guard)),
            guard: Mutex::new(Some(guard)),
            watch,
            watching,
        })
    }

    fn lost(py: Python<'_>, key: &str, reason: Option<String>) -> PyErr {
        let why = reason.as_deref().unwrap_or("unknown");
        exception(
            py,
            "LockLost",
            &format!("lost {key}: its tenure ended ({why})"),
            Code::Lost.name(),
            Some(serde_json::json!({ "key": key, "reason": reason })),
        )
    }
}

impl Drop for NativeLock {
    fn drop(&mut self) {
        if self.pid == std::process::id() {
            self.watching.abort();
            return;
        }
        // A copy inherited through fork belongs to the parent: never release
        // it here, and leave the parent's runtime (not running here) alone.
        if let Some(g) = lock(&self.guard).take() {
            std::mem::forget(g);
        }
    }
}

#[pymethods]
impl NativeLock {
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }
    #[getter]
    fn keys(&self) -> Vec<String> {
        self.keys.clone()
    }
    #[getter]
    fn fences(&self) -> Vec<u64> {
        self.fences.clone()
    }
    #[getter]
    fn grant(&self) -> i64 {
        self.grant
    }
    #[getter]
    fn owner(&self) -> String {
        self.owner.clone()
    }
    #[getter]
    fn ttl(&self) -> Option<f64> {
        self.ttl
    }
    /// Lease deadlines (Unix seconds, store time), per key.
    #[getter]
    fn expires(&self) -> Vec<Option<f64>> {
        lock(&self.expires).clone()
    }
    /// True once the lock is lost or released.
    fn is_lost(&self) -> bool {
        self.watch.is_lost()
    }
    /// Why the background renewals fail, while they do.
    fn renew_error(&self) -> Option<String> {
        lock(&self.guard).as_ref().and_then(|g| g.renew_error())
    }

    /// Renews now; raises `LockLost` when the lock is gone.
    fn renew(&self, py: Python<'_>) -> PyResult<()> {
        if self.pid != std::process::id() {
            return Err(invalid(
                py,
                "this lock belongs to the process that acquired it, not to a forked child".into(),
            ));
        }
        let answer = py.detach(|| {
            let mut g = lock(&self.guard);
            g.as_mut().map(|g| g.renew().map(|r| (r, expiries(g))))
        });
        match answer {
            None => Err(NativeLock::lost(py, &self.keys[0], Some("released".into()))),
            Some(Err(e)) => Err(raise(py, e.into())),
            Some(Ok((Renewal::Renewed { .. }, expires))) => {
                *lock(&self.expires) = expires;
                Ok(())
            }
            Some(Ok((Renewal::Lost { key, reason }, _))) => {
                Err(NativeLock::lost(py, key.as_str(), reason_name(reason)))
            }
        }
    }

    /// Releases with `reason` (completed, failed or exited). Answers
    /// `None` when released now or before, or `(key, reason)` when the
    /// lock had been lost meanwhile.
    fn release(&self, py: Python<'_>, reason: &str) -> PyResult<Option<(String, Option<String>)>> {
        if self.pid != std::process::id() {
            return Err(invalid(
                py,
                "this lock belongs to the process that acquired it, not to a forked child".into(),
            ));
        }
        if !matches!(reason, "completed" | "failed" | "exited") {
            return Err(invalid(
                py,
                format!(
                    "release reason {reason:?}: a holder releases with completed, failed or exited"
                ),
            ));
        }
        let Some(g) = lock(&self.guard).take() else {
            return Ok(None);
        };
        self.watching.abort();
        let done = py.detach(|| match reason {
            "failed" => g.release_failed(),
            "exited" => g.release_exited(),
            _ => g.release(),
        });
        match done.map_err(|e| raise(py, e.into()))? {
            Release::NotHeld { key, reason, .. } => {
                Ok(Some((key.to_string(), reason_name(reason))))
            }
            _ => Ok(None),
        }
    }
}

/// The native part of the `locksmith` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeClient>()?;
    m.add_class::<NativeLock>()?;
    m.add_class::<CancelToken>()?;
    m.add_function(wrap_pyfunction!(next_lost, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
