//! The write gate next to the database: every write transaction of every
//! process first takes an exclusive kernel lock on one file, so contended
//! writers queue in the kernel instead of sleeping in SQLite's busy handler.
//! The writers of one process first take their turn among themselves, so
//! that only one of them at a time asks the kernel.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use locksmith_core::StoreError;

/// The write gate of one database, for one store handle.
pub(crate) struct Gate {
    file: fs::File,
    here: Arc<Turns>,
}

/// The turns of the writers of this process at one gate: every store
/// handle on the same gate file shares one. A writer that waits here
/// sleeps until the turn is free, where a writer that asks the kernel's
/// lock finds it taken and has to poll. A freed turn goes to whichever
/// writer takes it first, not to the one that waited longest: handing it
/// over in order measured a third fewer pairs per second with 16 threads
/// (docs/benchmarks.md, "One turn per process at the write gate").
#[derive(Default)]
struct Turns {
    taken: Mutex<bool>,
    freed: Condvar,
}

/// The turns of every gate this process has open, by the gate file's
/// device and inode.
type AllTurns = Mutex<HashMap<(u64, u64), Weak<Turns>>>;

/// The turns of the gate `file`, shared with every other handle on it.
fn turns_of(file: &fs::File) -> Arc<Turns> {
    use std::os::unix::fs::MetadataExt;
    static ALL: OnceLock<AllTurns> = OnceLock::new();
    let Ok(meta) = file.metadata() else {
        return Arc::default();
    };
    let mut all = ALL
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    all.retain(|_, t| t.strong_count() > 0);
    let id = (meta.dev(), meta.ino());
    if let Some(t) = all.get(&id).and_then(Weak::upgrade) {
        return t;
    }
    let t = Arc::<Turns>::default();
    all.insert(id, Arc::downgrade(&t));
    t
}

/// The write gate next to the database (`locksmith.db-gate`): every write
/// transaction of every process first takes an exclusive `flock` on it,
/// which the kernel drops if its holder dies. Contended writers of one
/// process wait for their turn asleep ([`Turns`]); the one whose turn it is
/// asks for the lock without blocking and retries after short pauses. The
/// gate only orders writers; SQLite's own locking still guards the data, so
/// a writer that cannot open the gate simply goes without it.
/// It gets the database file's mode (a shared store's group may use it).
pub(crate) fn gate(db: &Path) -> Option<Gate> {
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
    let here = turns_of(&file);
    Some(Gate { file, here })
}

impl Gate {
    /// Takes this process's turn, then the kernel's lock, giving up after
    /// `timeout` in all.
    pub(crate) fn enter(&self, timeout: Duration) -> Result<GateGuard<'_>, StoreError> {
        let started = Instant::now();
        {
            let mut taken = self.here.taken.lock().unwrap_or_else(|p| p.into_inner());
            if *taken {
                let waited;
                (taken, waited) = crate::wait::long(|| {
                    self.here
                        .freed
                        .wait_timeout_while(taken, timeout, |t| *t)
                        .unwrap_or_else(|p| p.into_inner())
                });
                if waited.timed_out() && *taken {
                    return Err(busy(timeout));
                }
            }
            *taken = true;
        }
        let turn = Turn(&self.here);
        let left = timeout.saturating_sub(started.elapsed());
        let locked = flock_within(&self.file, left)?;
        Ok(GateGuard {
            file: locked.then_some(&self.file),
            _turn: turn,
        })
    }
}

/// This process's turn at a gate, given to the next writer when dropped.
struct Turn<'a>(&'a Turns);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.taken.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.0.freed.notify_one();
    }
}

fn busy(timeout: Duration) -> StoreError {
    StoreError::Busy(format!(
        "the lock database's write gate has been held for over {} by another writer; a process using the database may be stopped (Ctrl-Z, a paused container). Resume or end it and try again",
        locksmith_core::time::format_duration(timeout)
    ))
}

/// Holds the gate until dropped: the kernel's lock, then this process's
/// turn, are given back.
pub(crate) struct GateGuard<'a> {
    file: Option<&'a fs::File>,
    _turn: Turn<'a>,
}

/// Takes the kernel's lock on the gate `file`, giving up after `timeout`;
/// false when the gate cannot be used (it only orders writers: without it
/// SQLite still guards the data). The lock is asked for without blocking and
/// retried after short pauses (a few yields, then sleeps of at most 100 µs),
/// so a writer whose holder was stopped mid-transaction (Ctrl-Z, a paused
/// container) gets a clear `Busy` instead of hanging.
fn flock_within(file: &fs::File, timeout: Duration) -> Result<bool, StoreError> {
    if let Some(locked) = try_flock(file) {
        return Ok(locked);
    }
    crate::wait::long(|| {
        let started = Instant::now();
        let mut tries = 0u32;
        loop {
            if started.elapsed() >= timeout {
                return Err(busy(timeout));
            }
            tries += 1;
            if tries < 4 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(u64::from(tries.min(100))));
            }
            if let Some(locked) = try_flock(file) {
                return Ok(locked);
            }
        }
    })
}

/// One try at the kernel's lock on the gate: `Some(true)` taken,
/// `Some(false)` the gate cannot be used, `None` another holds it.
fn try_flock(file: &fs::File) -> Option<bool> {
    use rustix::fs::{FlockOperation, flock};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Some(true),
        Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => None,
        Err(_) => Some(false),
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.file {
            let _ = rustix::fs::flock(f, rustix::fs::FlockOperation::Unlock);
        }
        // Then `_turn` is dropped: the next writer of this process goes.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(50);

    #[test]
    fn the_writers_of_one_process_take_turns_at_one_gate() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("locksmith.db");
        let (a, b) = (gate(&db).unwrap(), gate(&db).unwrap());
        let other = gate(&dir.path().join("other.db")).unwrap();
        assert!(Arc::ptr_eq(&a.here, &b.here), "one gate, one line");
        assert!(!Arc::ptr_eq(&a.here, &other.here));

        let held = a.enter(SHORT).unwrap();
        let refused = b.enter(SHORT).err().expect("the turn is taken");
        assert!(matches!(refused, StoreError::Busy(_)), "{refused:?}");
        other.enter(SHORT).expect("another database's gate is free");
        drop(held);
        b.enter(SHORT).expect("the turn was given back");
    }

    #[test]
    fn a_writer_that_cannot_get_the_kernel_lock_gives_its_turn_back() {
        use rustix::fs::{FlockOperation, flock};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("locksmith.db");
        let (a, b) = (gate(&db).unwrap(), gate(&db).unwrap());
        // Another open file description, as another process would have.
        let elsewhere = fs::File::open(crate::open::beside(&db, "-gate")).unwrap();
        flock(&elsewhere, FlockOperation::LockExclusive).unwrap();
        let refused = a.enter(SHORT).err().expect("the kernel's lock is taken");
        let StoreError::Busy(msg) = refused else {
            panic!("{refused:?}")
        };
        assert!(msg.contains("write gate"), "{msg}");
        flock(&elsewhere, FlockOperation::Unlock).unwrap();
        b.enter(SHORT)
            .expect("the refused writer left no turn behind");
    }
}
