//! The lock model and rules of locksmith, pure: keys, modes, scopes, leases,
//! fences, reasons, events; the acquire decision ([`decide`]) and the rules of
//! holding ([`tenure`]); the [`Store`] and
//! [`Notifier`] traits every backend implements; and the one
//! table of outcomes ([`outcome`]). Nothing here reads a clock, a file, the
//! environment or a random source: time is always an argument.

pub mod decide;
pub mod flow;
pub mod key;
pub mod local;
pub mod model;
pub mod outcome;
pub mod rules;
pub mod store;
pub mod sweep;
pub mod tenure;
pub mod time;
pub mod validate;
pub mod view;
pub mod wire;

pub use key::{Key, KeyError};
pub use local::{Notifier, ProcessBinder, WakeSource};
pub use model::{
    Binding, Event, EventKind, Fence, Health, HeldLock, Hold, Holder, LeaseHandle, Mode,
    ReleaseReason, Scope,
};
pub use outcome::{Code, exit};
pub use store::AcquireError;
pub use store::{
    AcquireRequest, Attempt, Blocked, Grant, GrantedLock, KeyStatus, LockInfo, Proof, Release,
    Renewal, Stats, Store, StoreError, Takeover, Target, Ticket, WaitPolicy, WaitStats, WaiterInfo,
};
pub use time::{Clock, ManualClock, Mono, Now, Wall};
