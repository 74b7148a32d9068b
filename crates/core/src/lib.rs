//! The lock model and rules of locksmith, with no I/O of their own: keys,
//! modes, scopes, leases, fences, reasons, events, the pure decision rules,
//! the [`Store`](store::Store) trait every backend implements, and the
//! acquire loop that front ends share.

pub mod key;
pub mod model;
pub mod rules;
pub mod store;
pub mod sweep;
pub mod sys;
pub mod time;
pub mod wait;

pub use key::{Key, KeyError};
pub use model::{
    Binding, Event, EventKind, Fence, Health, HeldLock, Holder, LeaseHandle, Mode, ReleaseReason,
    Scope,
};
pub use store::{
    AcquireRequest, Attempt, Blocked, Grant, GrantedLock, KeyStatus, LockInfo, Proof, Release,
    Renewal, Stats, Store, StoreError, Takeover, Target, WaiterInfo,
};
pub use time::{Clock, ManualClock, Mono, Now, SystemClock, Wall};
pub use wait::{AcquireError, WaitPolicy};

impl Holder {
    /// A holder for this process, with host facts filled in.
    pub fn this_process(owner: impl Into<String>) -> Holder {
        // Read once per process: these do not change while it runs (the pid
        // is checked, for a forked child).
        static FACTS: std::sync::OnceLock<(u32, String, String, Option<u64>)> =
            std::sync::OnceLock::new();
        let pid = std::process::id();
        let facts = FACTS.get_or_init(|| {
            (
                pid,
                sys::hostname(),
                sys::boot_id(),
                sys::process_start(pid),
            )
        });
        let pid_start = if facts.0 == pid {
            facts.3
        } else {
            sys::process_start(pid)
        };
        Holder {
            owner: owner.into(),
            task: None,
            metadata: None,
            hostname: facts.1.clone(),
            boot_id: facts.2.clone(),
            pid,
            pid_start,
        }
    }
}

/// The default owner name: `$LOCKSMITH_OWNER`, else `user@host`.
pub fn default_owner() -> String {
    static USER_AT_HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    match std::env::var("LOCKSMITH_OWNER") {
        Ok(o) if !o.trim().is_empty() => o,
        _ => USER_AT_HOST
            .get_or_init(|| format!("{}@{}", sys::username(), sys::hostname()))
            .clone(),
    }
}
