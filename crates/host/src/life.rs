//! Proof of life for process-bound locks.
//!
//! A process that binds locks to itself creates
//! `holders/<boot>-<pid>-<start>.life` in the folder its store names (next to
//! the embedded store's file; the CLI's home folder for PostgreSQL), mode
//! 0640, and keeps a write lock on it (an open file description lock, see
//! `ofd.rs`) for its whole life. The kernel drops that lock the moment the
//! process dies, however it dies, so any other process can tell a dead
//! holder from a live one at once by asking what is locked, without locking
//! anything. A write lock needs the file open for writing, which only its
//! owner can do: a reader of the folder (a member of a shared store's group)
//! cannot keep a dead holder's lock to make it look alive. Life files
//! without `.life`, made by earlier versions, carry an exclusive `flock`
//! and are judged by asking for a shared one; a `.life` file carries one
//! too, for earlier versions still running during an upgrade. Where the
//! file is gone, pid and process start time decide (never the pid alone).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::sys;
use locksmith_core::rules::{self, LifeFile, ProcessProbe};
use locksmith_core::{Binding, Hold, StoreError};
use rustix::fs::{FlockOperation, flock};

/// Life files this process holds, by folder; kept open until exit.
static HELD: OnceLock<Mutex<HashMap<PathBuf, (File, Binding)>>> = OnceLock::new();

/// The binding of the calling process, creating its life file in `dir` once.
pub fn bind_self(dir: &Path, boot_id: &str) -> Result<Binding, StoreError> {
    let pid = std::process::id();
    let held = HELD.get_or_init(|| Mutex::new(HashMap::new()));
    let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
    // A forked child has another pid and needs a life file of its own.
    if let Some((_, bound)) = held.get(dir)
        && bound.pid == pid
    {
        return Ok(bound.clone());
    }
    // std opens with O_CLOEXEC: a child we exec does not inherit the proof.
    let (bound, file) = make_life_file(dir, boot_id, "", false)?;
    held.insert(dir.to_path_buf(), (file, bound.clone()));
    Ok(bound)
}

/// The probes of this host: life files and `/proc`.
pub struct HostProbe;

impl ProcessProbe for HostProbe {
    fn life_file(&self, path: &str) -> LifeFile {
        match File::open(path) {
            Ok(f) if path.ends_with(LIFE) => match crate::ofd::probe(&f) {
                Ok(crate::ofd::Found::Writer) => LifeFile::Held,
                // Read locks are not the holder's: it holds a write lock.
                Ok(_) => LifeFile::Free,
                Err(_) => LifeFile::Unreadable,
            },
            Ok(f) => match flock(&f, FlockOperation::NonBlockingLockShared) {
                Ok(()) => LifeFile::Free,
                Err(_) => LifeFile::Held,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LifeFile::Missing,
            Err(_) => LifeFile::Unreadable,
        }
    }
    fn process(&self, pid: u32, start: Option<u64>) -> Option<bool> {
        sys::process_alive(pid, start)
    }
}

/// The ending of the life files judged by their write lock.
const LIFE: &str = ".life";

/// True when the life file at `path` proves its process gone.
pub fn proves_death(path: &str) -> bool {
    HostProbe.life_file(path) == LifeFile::Free
}

/// Removes the life file of a process proven dead.
pub fn remove_dead(b: &Binding) {
    if let Some(path) = &b.life_file
        && proves_death(path)
    {
        let _ = std::fs::remove_file(path);
    }
}

/// How old a life file must be before a free one is removed: a process
/// that is creating its file has not taken its lock yet.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the life files in `dir/holders` that prove their process gone
/// (no kernel lock on them any more) and are older than a minute: the files
/// of processes killed while they waited, which no tenure's end removes. A
/// tenure bound to a removed file is still judged by pid and start time.
/// Answers how many went.
pub fn tidy(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("holders")) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let settled = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= SETTLED);
        if settled && proves_death(&path.to_string_lossy()) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A proof of life shared with the processes this one starts: a new life
/// file whose descriptor is inherited across exec (no close-on-exec), so the
/// kernel lock, and with it the locks bound to it, lasts until the last
/// process of the tree has exited, as with flock(1). The caller keeps the
/// returned file open for as long as it runs and removes the path at the end.
pub fn bind_tree(dir: &Path, boot_id: &str) -> Result<(Binding, File), StoreError> {
    make_life_file(dir, boot_id, "-tree", true)
}

/// True when the folder `dir` is shared by a group: group-writable and not
/// world-writable (`chmod 2770`, as a shared store's folder is made).
pub fn shared(dir: &Path) -> bool {
    shared_mode(mode_of(dir))
}

fn shared_mode(mode: u32) -> bool {
    mode & 0o070 == 0o070 && mode & 0o002 == 0
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0, |m| m.permissions().mode())
}

/// Gives `holders/` the mode its store folder calls for: only its owner
/// may enter a private store's (no other user can open a life file there,
/// let alone keep its lock to make a dead holder look alive); a shared
/// store's is open to the group (and keeps the folder's setgid bit, so
/// every file in it belongs to the group), sticky, so that a member can
/// neither remove nor replace another's life file. Changed only by its
/// owner.
fn fit_holders_mode(dir: &Path, folder: &Path) {
    let mode = mode_of(dir);
    let want = if shared_mode(mode) {
        0o1770 | mode & 0o2000
    } else {
        0o700
    };
    if mode_of(folder) & 0o7777 != want {
        let _ = std::fs::set_permissions(folder, std::fs::Permissions::from_mode(want));
    }
}

/// Creates `holders/<boot>-<pid>-<start><suffix>.life` in `dir`, readable
/// by its owner's group, and takes a write lock on it; `inherited` leaves
/// the descriptor open across exec.
fn make_life_file(
    dir: &Path,
    boot_id: &str,
    suffix: &str,
    inherited: bool,
) -> Result<(Binding, File), StoreError> {
    let pid = std::process::id();
    let start = sys::process_start(pid);
    let folder = dir.join("holders");
    std::fs::create_dir_all(&folder).map_err(|e| {
        StoreError::backend_from(format!("cannot create {}: {e}", folder.display()), e)
    })?;
    fit_holders_mode(dir, &folder);
    let path = folder.join(format!(
        "{boot_id}-{pid}-{}{suffix}{LIFE}",
        start.unwrap_or(0)
    ));
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::backend(format!(
            "cannot {what} the life file {}: {e}",
            path.display()
        ))
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| fail("create", &e))?;
    // Whatever the umask: others of a shared store's group read it to ask
    // whether it is locked; nobody else writes it.
    file.set_permissions(std::fs::Permissions::from_mode(0o640))
        .map_err(|e| fail("set the mode of", &e))?;
    crate::ofd::lock_write(&file).map_err(|e| fail("lock", &e))?;
    // Also the flock that earlier versions look for, so that one still
    // running during an upgrade does not judge this holder dead; this
    // version never asks it of a `.life` file, so a reader of the group
    // that holds a flock on it first only costs that courtesy.
    let _ = flock(&file, FlockOperation::NonBlockingLockExclusive);
    if inherited {
        rustix::io::fcntl_setfd(&file, rustix::io::FdFlags::empty())
            .map_err(|e| fail("share", &e))?;
    }
    let bound = Binding {
        pid,
        start,
        life_file: Some(path.to_string_lossy().into_owned()),
    };
    Ok((bound, file))
}

/// Facts about the machine a store runs on.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// The boot id and host name, as the rules judge bindings.
    pub machine_id: rules::Machine,
    /// `boot_id` and `hostname` joined by U+001F, as queue queries return them.
    pub machine: String,
    /// The effective OS user of this process, recorded with each grant.
    pub uid: u32,
}

impl HostFacts {
    /// This process's OS user, when `holder` ran on this machine (same
    /// host name, in this boot or an earlier one): a uid means nothing on
    /// another machine.
    pub fn uid_on(&self, holder: &locksmith_core::Holder) -> Option<u32> {
        (holder.hostname == self.machine_id.hostname).then_some(self.uid)
    }

    /// The facts of this machine.
    pub fn current() -> HostFacts {
        let (boot_id, hostname) = (sys::boot_id(), sys::hostname());
        HostFacts {
            machine: format!("{boot_id}\u{1f}{hostname}"),
            uid: rustix::process::geteuid().as_raw(),
            machine_id: rules::Machine { boot_id, hostname },
        }
    }
}

/// Fills in what this host can tell about each hold's bound process.
pub fn observe(mut holds: Vec<Hold>, host: &HostFacts) -> Vec<Hold> {
    for h in &mut holds {
        h.alive = rules::bound_alive(&h.lock, &host.machine_id, &HostProbe);
    }
    holds
}

/// What a store writes with a queue entry it keeps for a hand-over.
pub struct Keeping {
    /// The request, as JSON.
    pub request: String,
    /// A new claim (see [`locksmith_core::Ticket::claim`]).
    pub claim: String,
    /// The waiter's `stale_after`, in ms.
    pub stale_after_ms: i64,
}

/// What to keep with a queue entry of `req` when `keep` (see
/// [`locksmith_core::flow::may_hand_over`]): the request, a new claim and
/// the waiter's `stale_after`; `None` otherwise.
pub fn kept_for_handover(
    req: &locksmith_core::AcquireRequest,
    keep: bool,
    stale_after: std::time::Duration,
) -> Result<Option<Keeping>, StoreError> {
    if !keep {
        return Ok(None);
    }
    let request = serde_json::to_string(req)
        .map_err(|e| StoreError::backend(format!("cannot keep the queued request: {e}")))?;
    Ok(Some(Keeping {
        request,
        claim: crate::random_hex(16),
        stale_after_ms: stale_after.as_millis() as i64,
    }))
}

/// The columns a store keeps of a queue entry for a hand-over.
pub struct Kept {
    /// The request, as JSON.
    pub request: String,
    /// Its claim.
    pub claim: String,
    /// Its wake address.
    pub wake: String,
    /// Its machine: boot id, char 31, host name.
    pub machine: String,
    /// The OS user of the waiting process.
    pub uid: Option<u32>,
    /// The waiter's `stale_after`, in ms.
    pub stale_after_ms: Option<i64>,
}

/// A queue entry kept for a hand-over (see [`locksmith_core::flow::Parked`]),
/// with whether its waiting process is proven alive here now (on this
/// machine, its wake socket bound). `None` when the request cannot be read
/// (written by another build): its waiter is woken to try itself.
pub fn parked(
    host: &HostFacts,
    waker: &crate::wake::Waker,
    kept: Kept,
) -> Option<locksmith_core::flow::Parked> {
    let req = serde_json::from_str(&kept.request).ok()?;
    let alive = kept.machine == host.machine && waker.bound(&kept.wake);
    Some(locksmith_core::flow::Parked {
        req,
        wake: kept.wake,
        claim: kept.claim,
        uid: kept.uid,
        stale_after: kept
            .stale_after_ms
            .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
        alive,
    })
}

/// Whether a queued request recorded by `machine` for process `pid` no
/// longer waits. Only on this machine (same kernel *and* host name, not
/// another container sharing the kernel), where pids and wake sockets are
/// comparable, and only when its wake socket is gone (a bound socket proves
/// the waiter alive for one syscall): then its process is dead, or it is
/// this very process, whose waiters keep their sockets for as long as they
/// wait (an entry it could not take back while the store was unreachable).
pub fn waiter_gone(
    host: &HostFacts,
    waker: &crate::wake::Waker,
    machine: &str,
    wake: &str,
    pid: u32,
    start: Option<u64>,
) -> bool {
    machine == host.machine
        && !waker.bound(wake)
        && (pid == std::process::id() || sys::process_alive(pid, start) == Some(false))
}
