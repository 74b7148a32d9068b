//! Waits that may last: for another process's write at the gate or in
//! SQLite's busy handler, or for the connection while another thread's
//! call waits there.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `wait`, which may block for long (seconds, behind a stopped
/// process). In a call made right on a worker thread of a multi-threaded
/// Tokio runtime ([`locksmith_core::store::call_on_async_worker`], as
/// `locksmith serve` makes a lone call), the worker first hands its other
/// tasks and the runtime's I/O to another thread, so that no other request
/// waits with it; anywhere else `wait` just runs. The hand-over costs two
/// wake-ups of other threads, so only a call that has to wait pays it.
pub(crate) fn long<T>(wait: impl FnOnce() -> T) -> T {
    let worker = locksmith_core::store::on_async_worker()
        && Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if worker {
        tokio::task::block_in_place(wait)
    } else {
        wait()
    }
}
