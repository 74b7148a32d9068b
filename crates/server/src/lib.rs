//! `locksmith serve`: the HTTP API (`/v1`) over any lock store, with
//! long-poll waiting, Prometheus metrics and the sweeper.
//!
//! The server is a thin front end: every answer comes from the
//! [`Store`] behind it; this crate turns requests into store calls (on
//! blocking threads, or on one thread of their own for the embedded store:
//! see [`StoreCalls`]) and store answers into JSON.
//!
//! ```text
//! settings ──► State ──► router(state) ──► serve(listener, shutdown)
//!                │
//!                └── Arc<dyn Store> + Notifier (wake-ups of long polls)
//! ```

mod api;
mod calls;
mod dashboard;
mod error;
mod events;
mod guard;
mod metrics;
pub mod openapi;
mod poll;
mod sweeper;
pub mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use locksmith_core::{Notifier, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use calls::StoreCalls;
pub use error::ApiError;
pub use metrics::Metrics;

/// The default port of `locksmith serve` (`127.0.0.1:7420`).
pub const DEFAULT_PORT: u16 = 7420;

/// What a server allows and how it behaves.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The longest a single long poll is held before the server answers
    /// `waiting` (the client polls again with its ticket).
    pub poll_cap: Duration,
    /// How often the sweeper runs; zero turns it off.
    pub sweep_every: Duration,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Most keys in one request.
    pub max_keys: usize,
    /// Most requests of one owner waiting at once (long polls and kept places).
    pub max_waiters_per_owner: usize,
    /// Most long polls held at once on this server, whoever asks: each
    /// holds a blocking thread, and store calls need some left.
    pub max_polls: usize,
    /// Host names a request may name in its `Host` header, besides
    /// loopback names and the listening address.
    pub allowed_hosts: Vec<String>,
    /// How often an idle event stream gets a keep-alive comment.
    pub keep_alive: Duration,
    /// The token file; without one (or with an empty one) every caller is
    /// trusted, which `serve` allows on loopback only.
    pub tokens: Option<PathBuf>,
    /// The store as shown to people (a URL without its password), for the
    /// dashboard's server strip and `/v1/info`.
    pub store_shown: String,
    /// Where store calls run: [`StoreCalls::OneThread`] for the embedded
    /// store (one connection), [`StoreCalls::Parallel`] (the default) for a
    /// store with many.
    pub store_calls: StoreCalls,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            poll_cap: Duration::from_secs(30),
            sweep_every: Duration::from_secs(10),
            max_body: 64 * 1024,
            max_keys: 64,
            max_waiters_per_owner: 64,
            max_polls: 256,
            allowed_hosts: Vec::new(),
            tokens: None,
            keep_alive: Duration::from_secs(15),
            store_shown: String::new(),
            store_calls: StoreCalls::default(),
        }
    }
}

/// Everything the handlers share.
pub struct State {
    pub(crate) store: Arc<dyn Store>,
    calls: calls::Calls,
    pub(crate) notifier: Arc<dyn Notifier>,
    pub(crate) settings: Settings,
    pub(crate) metrics: Metrics,
    pub(crate) parked: poll::Parked,
    pub(crate) tokens: RwLock<tokens::Tokens>,
    pub(crate) feed: events::Feed,
    /// Becomes true when the server starts to stop.
    pub(crate) stopping: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
}

impl State {
    /// A server over `store`, whose long polls are woken by `notifier`;
    /// refuses a token file that cannot be read.
    pub fn new(
        store: Arc<dyn Store>,
        notifier: Arc<dyn Notifier>,
        settings: Settings,
    ) -> Result<Arc<State>, String> {
        let (stop, stopping) = watch::channel(false);
        let tokens = match &settings.tokens {
            Some(p) => tokens::Tokens::load(p)?,
            None => tokens::Tokens::default(),
        };
        let metrics = Metrics::new();
        Ok(Arc::new(State {
            calls: calls::Calls::new(settings.store_calls, store.clone(), metrics.group.clone())?,
            tokens: RwLock::new(tokens),
            feed: events::Feed::default(),
            store,
            notifier,
            settings,
            metrics,
            parked: poll::Parked::default(),
            stopping,
            stop,
        }))
    }

    /// Runs `f` on the store where store calls run (see [`StoreCalls`]).
    pub(crate) async fn store_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        self.calls.run(move || f(&*store)).await
    }

    /// Reads the token file again (SIGHUP); keeps the old tokens when the
    /// file cannot be read. Answers how many tokens are in force.
    pub fn reload_tokens(&self) -> Result<usize, String> {
        let Some(path) = &self.settings.tokens else {
            return Ok(0);
        };
        let fresh = tokens::Tokens::load(path)?;
        let n = fresh.entries().len();
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(n)
    }

    /// True when tokens are configured.
    pub fn has_tokens(&self) -> bool {
        !self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The metrics of this server.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The routes of the API.
pub fn router(state: Arc<State>) -> axum::Router {
    api::router(state)
}

/// Serves `router(state)` on `listener` until `shutdown` completes, runs
/// the sweeper meanwhile, then stops: no new connections, every waiting
/// long poll is answered (`unavailable`, it leaves the queue), requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sweeper = tokio::spawn(sweeper::run(state.clone()));
    let pump = tokio::spawn(events::pump(state.clone()));
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let stop = state.stop.clone();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                event = "stopping",
                "stopping: answering waiters, finishing requests"
            );
            let _ = stop.send(true);
        })
        .await;
    sweeper.abort();
    pump.abort();
    state.parked.clear();
    tracing::info!(event = "stopped", "stopped");
    result
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called (inside a runtime), so that a signal sent as soon as the server
/// says it listens is not lost.
pub fn signals() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
