//! What a store offers beside the [`Store`](crate::store::Store) trait, to
//! the processes near it: wake-ups (how a waiter learns that it may be its
//! turn) and process binding (locks freed when their process dies).
//!
//! Each store brings its own wake-ups (abstract Unix sockets and inotify on
//! one machine, LISTEN/NOTIFY on PostgreSQL, a long poll over HTTP). A
//! wake-up is only a hint: a waiter that misses one re-checks on a timer.

use std::time::Duration;

use crate::model::Binding;
use crate::store::StoreError;

/// Where one waiting request is told that it may be its turn.
pub trait WakeSource: Send {
    /// The address a releaser notifies, stored with the queue entry.
    fn address(&self) -> &str;
    /// Blocks until notified or `timeout` passes; true when notified.
    fn wait(&mut self, timeout: Duration) -> bool;
    /// Also wake when one of these holders dies (life-file paths from
    /// [`crate::store::Blocked::watch`]); sources without such proofs ignore it.
    fn watch(&mut self, _targets: &[String]) {}
    /// The message of the last wake-up that carried one (see [`wake_with`]),
    /// taken; sources that carry none answer `None`.
    fn message(&mut self) -> Option<String> {
        None
    }
}

/// Separates a wake address from the message a wake-up carries.
const MESSAGE: char = '\u{1f}';

/// A wake-up of `address` that carries `message` for the waiter (a
/// hand-over's grant, see [`crate::flow::handed`]), as one entry of the
/// wake lists the store calls answer.
pub fn wake_with(address: &str, message: &str) -> String {
    format!("{address}{MESSAGE}{message}")
}

/// The address of a wake list entry, and its message if it carries one.
pub fn split_wake(wake: &str) -> (&str, Option<&str>) {
    match wake.split_once(MESSAGE) {
        Some((address, message)) => (address, Some(message)),
        None => (wake, None),
    }
}

/// Makes wake sources for the waiters of one store.
pub trait Notifier: Send + Sync + 'static {
    /// A new place to be woken at, for one waiting request.
    fn wake_source(&self) -> Result<Box<dyn WakeSource>, StoreError>;
    /// Where this process is told that the store ended one of its locks
    /// for it (forced, stolen, swept; see
    /// [`crate::flow::Tables::holder_address`]); `None` where the store
    /// tells no one and holders learn at their next renewal.
    fn holder_address(&self) -> Option<String> {
        None
    }
}

/// Binds locks to the calling process where the store can prove its death
/// at once (on the same machine); a remote store has no such capability.
pub trait ProcessBinder: Send + Sync + 'static {
    /// A binding of the calling process.
    fn bind_current_process(&self) -> Result<Binding, StoreError>;
}
