//! A real server on a loopback port, over a fresh embedded store (or a
//! fresh PostgreSQL schema), on its own runtime thread; stopped (as by
//! SIGTERM) when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use locksmith_core::{Clock, ManualClock, Notifier, Store};
use locksmith_postgres::{Options as PgOptions, PgStore};
use locksmith_remote::HttpStore;
use locksmith_server::{Settings, State, StoreCalls};
use locksmith_sqlite::{Options, SqliteStore};
use locksmith_testkit::Harness;
use tempfile::TempDir;

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub url: String,
    pub state: Arc<State>,
    /// The store behind the server, and its wake-ups.
    pub store: Arc<dyn Store>,
    pub notifier: Arc<dyn Notifier>,
    pub clock: Option<ManualClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    dir: TempDir,
}

/// The settings of a server on a hand-driven clock: no sweeper, the test
/// does what time does (a sweeper pass that ran late, after the clock was
/// moved, pruned the history a test was about to prune itself).
fn hand_driven() -> Settings {
    Settings {
        sweep_every: Duration::ZERO,
        ..Settings::default()
    }
}

impl Server {
    /// A server whose store reads a hand-driven clock.
    pub fn start_manual() -> Server {
        let clock = ManualClock::new();
        Server::start(Some(clock), hand_driven())
    }

    /// A server on the system clock with `settings`.
    #[allow(dead_code)]
    pub fn start_real(settings: Settings) -> Server {
        Server::start(None, settings)
    }

    /// A server over a fresh schema of the tests' PostgreSQL, on a
    /// hand-driven clock.
    #[allow(dead_code)]
    pub fn start_postgres_manual() -> Server {
        let clock = ManualClock::new();
        let url = locksmith_testkit::pg::PgServer::shared().fresh_schema_url();
        let c: Arc<dyn Clock> = Arc::new(clock.clone());
        let pg = PgStore::open_with_clock(&url, PgOptions::default(), c)
            .expect("open a fresh PostgreSQL store");
        let pg = Arc::new(pg);
        let notifier: Arc<dyn Notifier> = Arc::new(pg.notifier());
        let dir = tempfile::tempdir().expect("temp dir");
        Server::serve(pg, notifier, Some(clock), hand_driven(), dir)
    }

    fn start(clock: Option<ManualClock>, settings: Settings) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("locksmith.db");
        let sqlite = match &clock {
            Some(c) => {
                let c: Arc<dyn Clock> = Arc::new(c.clone());
                SqliteStore::open_with_clock(&path, Options::default(), c)
            }
            None => SqliteStore::open(&path, Options::default()),
        }
        .expect("open a fresh store");
        let sqlite = Arc::new(sqlite);
        let notifier: Arc<dyn Notifier> = Arc::new(sqlite.notifier());
        // As `locksmith serve` runs the embedded store.
        let settings = Settings {
            store_calls: StoreCalls::OneThread,
            ..settings
        };
        Server::serve(sqlite, notifier, clock, settings, dir)
    }

    fn serve(
        store: Arc<dyn Store>,
        notifier: Arc<dyn Notifier>,
        clock: Option<ManualClock>,
        settings: Settings,
        dir: TempDir,
    ) -> Server {
        let state = State::new(store.clone(), notifier.clone(), settings).expect("server state");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            rt.block_on(locksmith_server::serve(listener, st, async move {
                let _ = stopped.await;
            }))
        });
        Server {
            addr,
            url: format!("http://{addr}"),
            state,
            store,
            notifier,
            clock,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        }
    }

    /// The folder of the server's embedded store.
    #[allow(dead_code)]
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A client store of this server.
    pub fn client(&self) -> HttpStore {
        HttpStore::open(&self.url, None).expect("client")
    }

    /// The conformance harness: the client store, the embedded store's
    /// wake-ups (waiters in the suite keep theirs alive), the clock.
    pub fn harness(self) -> Harness {
        let store = Arc::new(self.client());
        let notifier = self.notifier.clone();
        let clock = self.clock.clone().expect("a server on a manual clock");
        Harness::new(store, notifier, clock).keeping(self)
    }

    /// Stops the server as SIGTERM does and waits for it.
    pub fn stop(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread"),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Waits up to `limit` for `cond`.
#[allow(dead_code)]
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}
