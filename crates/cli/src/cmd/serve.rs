//! `locksmith serve`: the HTTP API, the sweeper and the metrics over the
//! store, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use locksmith_core::Code;
use locksmith_core::time::parse_duration;
use locksmith_server::{DEFAULT_PORT, Settings, State, StoreCalls};

use crate::{Ctx, Failure};

/// Serve the HTTP API over the store (with the sweeper inside).
///
/// Prints `listening on http://ADDR` (the bound address, also for port 0)
/// as its first line, then logs to stderr. SIGTERM or SIGINT: stop taking
/// requests, answer every waiter, finish the requests in flight, exit 0.
/// The API is described in docs/http.md.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value_t = format!("127.0.0.1:{DEFAULT_PORT}"))]
    listen: String,
    /// Listen on an address other than loopback without tokens: anyone who
    /// can reach it may take, release and force-release every lock.
    #[arg(long)]
    insecure: bool,
    /// Token file (default: $LOCKSMITH_HOME/tokens.json; see `locksmith
    /// token`). With tokens every request but /healthz and /readyz needs one;
    /// SIGHUP reads the file again.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Also accept requests for this host name (Host header); IP addresses
    /// and localhost are always accepted. Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_host: Vec<String>,
    /// Longest single long poll before the answer `waiting` (the client
    /// polls again with its ticket and keeps its place).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    poll_cap: String,
    /// How often the sweeper runs; 0 turns it off.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    sweep_interval: String,
    /// Log lines as text or json.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Least level logged: info logs starts, stops, forced releases, the
    /// sweeper and failures; debug also every grant and release.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug"])]
    log_level: String,
}

/// Runs `serve`.
pub fn run(ctx: &Ctx, a: Args) -> Result<(), Failure> {
    let invalid = |flag: &str, e: String| Failure::new(Code::Invalid, format!("--{flag}: {e}"));
    let addr: SocketAddr = a.listen.parse().map_err(|e| {
        invalid(
            "listen",
            format!("{:?} is not HOST:PORT with an IP address ({e})", a.listen),
        )
    })?;
    let token_file = super::token::path(ctx, a.tokens.as_ref());
    let has_tokens = !locksmith_server::tokens::Tokens::load(&token_file)
        .map_err(Failure::error)?
        .is_empty();
    if !addr.ip().is_loopback() && !has_tokens && !a.insecure {
        return Err(Failure::new(
            Code::Invalid,
            format!(
                "--listen {addr} is reachable from other machines, and no tokens are configured in {}; create some with `locksmith token create`, or pass --insecure to accept that anyone who can reach it may take, release and force-release every lock, or listen on 127.0.0.1",
                token_file.display()
            ),
        ));
    }
    let poll_cap = parse_duration(&a.poll_cap).map_err(|e| invalid("poll-cap", e))?;
    if poll_cap.is_zero() {
        return Err(invalid("poll-cap", "must be more than 0".into()));
    }
    let sweep_every =
        parse_duration(&a.sweep_interval).map_err(|e| invalid("sweep-interval", e))?;
    // The server keeps its locks in the store; --server is for its clients.
    let store = ctx.local()?;
    let shown = ctx.store_shown();
    // What a commit survives: told at the start, since with `normal` a
    // power loss here may undo the newest grants while holders on other
    // machines keep working (docs/http.md, "Durability").
    let durability = match &store {
        crate::Opened::Local(s) => s.durability().name(),
        _ => "the database's",
    };
    init_logs(&a.log_format, &a.log_level);
    let settings = Settings {
        poll_cap,
        sweep_every,
        allowed_hosts: a.allow_host.clone(),
        tokens: Some(token_file),
        store_shown: ctx.store_shown(),
        // The embedded store has one connection: its calls run one at a
        // time anyway, fastest on one thread; PostgreSQL's overlap.
        store_calls: match store {
            crate::Opened::Local(_) => StoreCalls::OneThread,
            _ => StoreCalls::Parallel,
        },
        ..Settings::default()
    };
    let notifier = store.notifier();
    let state = State::new(store.shared(), notifier, settings).map_err(Failure::error)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::error(format!("cannot start the server runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::error(format!("cannot listen on {addr}: {e}")))?;
        let stop = locksmith_server::signals()
            .map_err(|e| Failure::error(format!("cannot install the signal handlers: {e}")))?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| Failure::error(format!("cannot install the signal handlers: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Failure::error(format!("cannot read the bound address: {e}")))?;
        out!("listening on http://{bound}");
        tracing::info!(
            event = "listening",
            address = %bound,
            store = %shown,
            durability,
            tokens = state.has_tokens(),
            insecure = a.insecure,
            "serving"
        );
        let reloading = state.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match reloading.reload_tokens() {
                    Ok(n) => tracing::info!(event = "tokens_reloaded", tokens = n, "tokens reloaded"),
                    Err(e) => tracing::error!(event = "tokens_reload_failed", error = %e, "kept the tokens in force"),
                }
            }
        });
        locksmith_server::serve(listener, state, stop)
            .await
            .map_err(|e| Failure::error(format!("the server failed: {e}")))
    })
}

fn init_logs(format: &str, level: &str) {
    let level = match level {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = match format {
        "json" => builder.json().flatten_event(true).try_init(),
        _ => builder.try_init(),
    };
}
