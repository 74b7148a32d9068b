//! locksmith: locks and leases for processes, agents and machines.
//!
//! ```no_run
//! # async fn demo() -> Result<(), locksmith::Error> {
//! use std::time::Duration;
//! let client = locksmith::Client::open("sqlite:///tmp/locksmith-demo/locksmith.db")?;
//! let guard = client
//!     .lock("repo/acme")
//!     .ttl(Duration::from_secs(30))
//!     .wait(Duration::from_secs(10))
//!     .acquire()
//!     .await?;
//! // Pass the fence to the resource so it can refuse a late writer.
//! println!("holding repo/acme with fence {}", guard.fence());
//! // The lease is renewed in the background; dropping the guard releases it.
//! drop(guard);
//! # Ok(())
//! # }
//! ```
//!
//! For code without an async runtime, [`LockBuilder::acquire_blocking`] does
//! the same and returns the same [`Guard`].

mod client;
pub mod config;
mod guard;
mod renewer;
pub mod sweep;
pub mod wait;

pub use client::{Client, LockBuilder, StoreUrl, default_home, postgres_options};
pub use guard::{Guard, LostWatch};
pub use locksmith_core as core;
pub use locksmith_core::{Fence, Key, LeaseHandle, ReleaseReason};
pub use locksmith_host as host;
pub use locksmith_postgres as postgres;
pub use locksmith_postgres::PgStore;
pub use locksmith_remote as remote;
pub use locksmith_sqlite::{Durability, Options, SqliteStore};

use locksmith_core::store::Blocked;
use locksmith_core::{AcquireError, StoreError};

/// Everything the library can report; [`Error::code`] gives its stable code.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL the library cannot open.
    #[error("{0}")]
    Url(String),
    /// Fail-fast and the lock was busy.
    #[error("busy: {}", describe(.0))]
    Busy(Blocked),
    /// The wait deadline passed.
    #[error("timed out waiting: {}", describe(.0))]
    TimedOut(Blocked),
    /// The wait was cancelled.
    #[error("wait cancelled")]
    Cancelled,
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration (file or environment) is invalid.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The stable code of this outcome (see [`locksmith_core::outcome`]).
    pub fn code(&self) -> locksmith_core::Code {
        match self {
            Error::Url(_) | Error::Config(_) => locksmith_core::Code::Invalid,
            Error::Busy(_) => locksmith_core::Code::Busy,
            Error::TimedOut(_) => locksmith_core::Code::WaitTimedOut,
            Error::Cancelled => locksmith_core::Code::Cancelled,
            Error::Store(e) => e.code(),
        }
    }
}

fn describe(b: &Blocked) -> String {
    match b.holders.first() {
        Some(h) => format!("{} is held by {} (fence {})", h.key, h.owner, h.fence),
        None => format!("{} earlier waiter(s) are ahead", b.waiters_ahead),
    }
}

impl From<AcquireError> for Error {
    fn from(e: AcquireError) -> Self {
        match e {
            AcquireError::Busy(b) => Error::Busy(b),
            AcquireError::TimedOut(b) => Error::TimedOut(b),
            AcquireError::Cancelled => Error::Cancelled,
            AcquireError::Store(s) => Error::Store(s),
            other => Error::Store(locksmith_core::StoreError::backend(other.to_string())),
        }
    }
}
