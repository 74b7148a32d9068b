//! Waits that may last: for another process's write at the gate, or for
//! the connection while another thread's call waits there.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `wait`, which may block for long (seconds, behind a stopped
/// process). On a worker thread of a multi-threaded Tokio runtime, where
/// `locksmith serve` runs a lone call right where its request arrived, the
/// worker first hands its other tasks and the runtime's I/O to another
/// thread, so that no other request waits with it; anywhere else (a plain
/// thread, a blocking thread) `wait` just runs. The hand-over costs two
/// wake-ups of other threads, so only a call that has to wait pays it.
pub(crate) fn long<T>(wait: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}
