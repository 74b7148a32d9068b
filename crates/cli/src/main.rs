//! `locksmith`: the command line over the lock store. One module per
//! subcommand under `cmd/`; this file parses, dispatches and turns every
//! outcome into a documented exit code.

/// `println!` that never panics: a closed stdout is recorded instead
/// (see [`output::stdout_failed`]).
macro_rules! out {
    () => { $crate::output::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that never panics: a closed stderr loses the message only.
macro_rules! err {
    ($($arg:tt)*) => { $crate::output::write_err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics.
macro_rules! err_part {
    ($($arg:tt)*) => { $crate::output::write_err(format_args!($($arg)*)) };
}

mod cmd;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use locksmith::config;
use locksmith_core::{Code, StoreError, exit};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (store unreadable, disk full, ...)
  2  usage or invalid input (bad key, bad duration, wrong limit)
  3  busy: the lock is held and --wait was 0 (the default)
  4  wait timed out
  5  deadlock refused: waiting would close a cycle
  6  not the holder: another owner holds the lock
  7  lock lost (renew of a lock that is no longer held; run whose lock was lost)
  8  not allowed: the server refused the token, or its role does not permit it
  130 acquire interrupted while waiting (SIGINT/SIGTERM/SIGHUP); the queue
      place is given up. `run` exits with CMD's status, or 128 + signal

Environment: LOCKSMITH_HOME (store folder), LOCKSMITH_OWNER (default owner),
LOCKSMITH_SERVER (a server instead of the embedded store), LOCKSMITH_TOKEN,
LOCKSMITH_<SETTING> for every setting of `locksmith config`.";

/// Locks and leases for processes, agents and machines.
///
/// Locks live in one SQLite file ($LOCKSMITH_HOME/locksmith.db) shared by
/// every process on this machine. Every grant carries a fencing token that
/// only grows. Leases (--ttl) end by themselves unless renewed; locks without
/// a lease are held until released, with `stale_after` as the backstop.
#[derive(Parser, Debug)]
#[command(name = "locksmith", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    /// Print JSON instead of tables (errors too, on stdout).
    #[arg(long, global = true)]
    json: bool,
    /// Config file (default: $LOCKSMITH_HOME/locksmith.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Use the locksmith server at URL (http://HOST:PORT) instead of the
    /// embedded store; its token comes from $LOCKSMITH_TOKEN, else the
    /// config file's `token`.
    #[arg(long, global = true, value_name = "URL", env = "LOCKSMITH_SERVER")]
    server: Option<String>,
    /// The store: `sqlite:` (the embedded file of $LOCKSMITH_HOME, the
    /// default), `sqlite:///path/to/locksmith.db`, or
    /// `postgres://USER:PASSWORD@HOST/DATABASE` (add `?schema=NAME`, and
    /// `listen=off&prepare=off` behind PgBouncer). Also $LOCKSMITH_STORE or `store` in
    /// locksmith.toml.
    #[arg(long, global = true, value_name = "URL")]
    store: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Acquire(cmd::acquire::Args),
    Run(cmd::run::Args),
    Release(cmd::release::ReleaseArgs),
    Renew(cmd::release::RenewArgs),
    Status(cmd::status::StatusArgs),
    List(cmd::status::ListArgs),
    History(cmd::history::Args),
    ForceRelease(cmd::release::ForceArgs),
    Stats(cmd::history::StatsArgs),
    Sweep(cmd::sweep::Args),
    Serve(cmd::serve::Args),
    Token(cmd::token::Args),
    Watch(cmd::watch::Args),
    Mcp(cmd::mcp::Args),
    Config(cmd::config::Args),
}

/// A command's failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit status.
    pub code: u8,
    /// Machine-readable code for `--json` (see `locksmith_core::outcome`).
    pub kind: &'static str,
    /// What went wrong and what to do.
    pub message: String,
    /// Extra JSON fields.
    pub extra: Option<serde_json::Value>,
}

impl Failure {
    /// A failure with its code from the outcome table.
    pub fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure::status(code.exit_status(), code.name(), message)
    }
    /// A failure outside the table: an error of the command line itself.
    pub fn error(message: impl Into<String>) -> Failure {
        Failure::status(exit::ERROR, "error", message)
    }
    /// A failure that exits with a status of its own (`run` passes CMD's on).
    pub fn status(code: u8, kind: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            code,
            kind,
            message: message.into(),
            extra: None,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        // The library's words, with the advice that only the command line can give.
        let message = match &e {
            StoreError::NotHolder { .. } => format!("{e} (--handle, or the right --owner)"),
            StoreError::LimitMismatch(m) => format!("{e}; pass --limit {}", m.held),
            _ => e.to_string(),
        };
        let mut f = Failure::new(e.code(), message);
        if let StoreError::Deadlock { cycle, .. } = &e {
            f.extra = Some(serde_json::json!({ "cycle": cycle }));
        }
        f
    }
}

impl From<locksmith_core::KeyError> for Failure {
    fn from(e: locksmith_core::KeyError) -> Failure {
        Failure::new(Code::Invalid, e.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::error(format!("{e:#}"))
    }
}

/// What every command gets.
pub struct Ctx {
    /// `--json`.
    pub json: bool,
    /// Effective configuration.
    pub config: config::Config,
    /// `--server` / `$LOCKSMITH_SERVER`.
    pub server: Option<String>,
    /// `--store`, which overrides the configuration's `store`.
    pub store: Option<String>,
    /// The command ends soon after its work (all but `serve`, `sweep`,
    /// `watch` and `mcp`): the embedded store is opened for a short life.
    pub short_lived: bool,
}

/// The store of a command: the embedded file, PostgreSQL, or a server.
pub enum Opened {
    /// The embedded SQLite store.
    Local(Box<locksmith::SqliteStore>),
    /// A PostgreSQL store.
    Postgres(Box<locksmith::PgStore>),
    /// A locksmith server.
    Remote(locksmith::remote::HttpStore),
}

impl std::ops::Deref for Opened {
    type Target = dyn locksmith_core::Store;
    fn deref(&self) -> &Self::Target {
        match self {
            Opened::Local(s) => &**s,
            Opened::Postgres(s) => &**s,
            Opened::Remote(r) => r,
        }
    }
}

impl Opened {
    /// The wake-ups of this store's waiters.
    pub fn notifier(&self) -> std::sync::Arc<dyn locksmith_core::Notifier> {
        match self {
            Opened::Local(s) => std::sync::Arc::new(s.notifier()),
            Opened::Postgres(s) => std::sync::Arc::new(s.notifier()),
            Opened::Remote(_) => std::sync::Arc::new(locksmith::remote::RemoteNotifier),
        }
    }
    /// A library client over the store: with its wake-ups, and on the
    /// embedded store and PostgreSQL the binding of this process.
    pub fn client(self) -> locksmith::Client {
        match self {
            Opened::Local(s) => locksmith::Client::sqlite(std::sync::Arc::from(s)),
            Opened::Postgres(s) => locksmith::Client::postgres(std::sync::Arc::from(s)),
            Opened::Remote(r) => locksmith::Client::from_parts(
                std::sync::Arc::new(r),
                std::sync::Arc::new(locksmith::remote::RemoteNotifier),
                None,
            ),
        }
    }
    /// The store, shared.
    pub fn shared(self) -> std::sync::Arc<dyn locksmith_core::Store> {
        match self {
            Opened::Local(s) => std::sync::Arc::from(s as Box<dyn locksmith_core::Store>),
            Opened::Postgres(s) => std::sync::Arc::from(s as Box<dyn locksmith_core::Store>),
            Opened::Remote(r) => std::sync::Arc::new(r),
        }
    }
}

impl Ctx {
    /// Opens the store: the server of `--server`, else the store of
    /// `--store` or the configuration.
    pub fn store(&self) -> Result<Opened, Failure> {
        if let Some(url) = &self.server {
            // `token`: $LOCKSMITH_TOKEN, else the config file's.
            return Ok(Opened::Remote(locksmith::remote::HttpStore::open(
                url,
                self.config.token(),
            )?));
        }
        self.local()
    }
    /// The store URL: `--store`, else the configuration's `store`.
    pub fn store_url(&self) -> String {
        self.store.clone().unwrap_or_else(|| self.config.store())
    }
    /// The store URL without its password, for messages and logs.
    pub fn store_shown(&self) -> String {
        locksmith::postgres::redact(&self.store_url())
    }
    /// Opens the store of `--store` or the configuration, whatever
    /// `--server` says.
    pub fn local(&self) -> Result<Opened, Failure> {
        let url = self.store_url();
        let mut opts = self.config.options()?;
        opts.short_lived = self.short_lived;
        let parsed =
            locksmith::StoreUrl::parse(&url).map_err(|e| Failure::new(e.code(), e.to_string()))?;
        match parsed {
            locksmith::StoreUrl::Sqlite(path) => {
                let path = path.unwrap_or_else(|| self.config.db_path());
                Ok(Opened::Local(Box::new(locksmith::SqliteStore::open(
                    &path, opts,
                )?)))
            }
            locksmith::StoreUrl::Postgres => {
                let pg = self.config.postgres_options()?;
                Ok(Opened::Postgres(Box::new(locksmith::PgStore::open(
                    &url, pg,
                )?)))
            }
            locksmith::StoreUrl::Server => Err(Failure::new(
                Code::Invalid,
                format!(
                    "store {:?} is a server: give it with --server (or LOCKSMITH_SERVER); the store of a command is sqlite: (the embedded file), sqlite:///path/to/locksmith.db or postgres://USER:PASSWORD@HOST/DATABASE",
                    self.store_shown()
                ),
            )),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // With --json, a usage error is JSON too (help and version are not errors).
        Err(e)
            if std::env::args().any(|a| a == "--json")
                && !matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) =>
        {
            let f = Failure::new(Code::Invalid, e.kind().to_string());
            out!(
                "{}",
                serde_json::json!({
                    "error": f.kind,
                    "message": e.to_string().trim(),
                    "exit_code": f.code,
                })
            );
            return ExitCode::from(f.code);
        }
        Err(e) => e.exit(),
    };
    let json = cli.json;
    let server = cli.server.filter(|s| !s.is_empty());
    let store = cli.store.filter(|s| !s.is_empty());
    let short_lived = !matches!(
        cli.command,
        Command::Serve(_) | Command::Sweep(_) | Command::Watch(_) | Command::Mcp(_)
    );
    let result = config::Config::load(cli.config.as_deref())
        .map_err(|e| Failure::new(Code::Invalid, format!("{e:#}")))
        .and_then(|config| {
            let server = server.or_else(|| config.server());
            let ctx = Ctx {
                json,
                config,
                server,
                store,
                short_lived,
            };
            match cli.command {
                Command::Acquire(a) => cmd::acquire::run(&ctx, a),
                Command::Run(a) => cmd::run::run(&ctx, a),
                Command::Release(a) => cmd::release::release(&ctx, a),
                Command::Renew(a) => cmd::release::renew(&ctx, a),
                Command::Status(a) => cmd::status::status(&ctx, a),
                Command::List(a) => cmd::status::list(&ctx, a),
                Command::History(a) => cmd::history::history(&ctx, a),
                Command::ForceRelease(a) => cmd::release::force(&ctx, a),
                Command::Stats(a) => cmd::history::stats(&ctx, a),
                Command::Sweep(a) => cmd::sweep::run(&ctx, a),
                Command::Serve(a) => cmd::serve::run(&ctx, a),
                Command::Token(a) => cmd::token::run(&ctx, a),
                Command::Watch(a) => cmd::watch::run(&ctx, a),
                Command::Mcp(a) => cmd::mcp::run(&ctx, a),
                Command::Config(a) => cmd::config::run(&ctx, a),
            }
        });
    // Output that could not be written is a failure, never a panic.
    let result = result.and_then(|()| match output::stdout_failed() {
        true => Err(Failure::error(
            "could not write the output to stdout (closed or full)",
        )),
        false => Ok(()),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json {
                let mut body = serde_json::json!({ "error": f.kind, "message": f.message, "exit_code": f.code });
                if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
                    (f.extra, body.as_object_mut())
                {
                    obj.extend(extra);
                }
                out!("{body}");
            } else if !f.message.is_empty() {
                err!("locksmith: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
