//! The write gate next to the database: every write transaction of every
//! process first takes an exclusive kernel lock on one file, so contended
//! writers queue in the kernel instead of sleeping in SQLite's busy handler.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use locksmith_core::StoreError;

/// The write gate next to the database (`locksmith.db-gate`): every write
/// transaction of every process first takes an exclusive `flock` on it. The
/// kernel wakes the next writer as soon as the lock is released (and drops
/// it if its holder dies), so contended writers neither spin nor sleep. The
/// gate only orders writers; SQLite's own locking still guards the data, so
/// a writer that cannot open the gate simply goes without it.
/// It gets the database file's mode (a shared store's group may use it).
pub(crate) fn gate(db: &Path) -> Option<fs::File> {
    use std::os::unix::fs::PermissionsExt;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(crate::open::beside(db, "-gate"))
        .ok()?;
    if let (Ok(db), Ok(gate)) = (fs::metadata(db), file.metadata()) {
        let want = db.permissions().mode() & 0o660;
        if gate.permissions().mode() & 0o777 != want {
            let _ = file.set_permissions(fs::Permissions::from_mode(want));
        }
    }
    Some(file)
}

/// Holds the gate until dropped.
pub(crate) struct GateGuard<'a>(Option<&'a fs::File>);

impl<'a> GateGuard<'a> {
    /// Takes the gate, giving up after `timeout`. The lock is asked for
    /// without blocking and retried after short pauses (a few yields, then sleeps
    /// of at most 100 µs), so a writer whose holder was stopped mid-transaction
    /// (Ctrl-Z, a paused container) gets a clear `Busy` instead of hanging.
    pub(crate) fn lock(file: &'a fs::File, timeout: Duration) -> Result<GateGuard<'a>, StoreError> {
        use rustix::fs::{FlockOperation, flock};
        let started = Instant::now();
        let mut tries = 0u32;
        loop {
            match flock(file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(GateGuard(Some(file))),
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {}
                // The gate only orders writers; without it SQLite still guards the data.
                Err(_) => return Ok(GateGuard(None)),
            }
            if started.elapsed() >= timeout {
                return Err(StoreError::Busy(format!(
                    "another process has held the lock database's write gate for over {}; it may be stopped (Ctrl-Z, a paused container). Resume or end it and try again",
                    locksmith_core::time::format_duration(timeout)
                )));
            }
            tries += 1;
            if tries < 4 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(u64::from(tries.min(100))));
            }
        }
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.0 {
            let _ = rustix::fs::flock(f, rustix::fs::FlockOperation::Unlock);
        }
    }
}
