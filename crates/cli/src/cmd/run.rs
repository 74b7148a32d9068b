//! `locksmith run`: run a command under locks. Acquire all keys or none,
//! start the command with the fences in its environment, renew while it
//! runs, forward signals to its process group, stop it if a lock is lost,
//! release with `completed` or `failed`, and exit with its status.
//!
//! The command is started with a parent-death signal armed between fork and
//! exec, so the kernel kills it if `run` dies; the locks themselves are bound
//! to `run`'s process, so a SIGKILL of `run` frees them at once and stops the
//! command.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use locksmith_core::time::parse_duration;
use locksmith_core::{AcquireRequest, Store, Takeover, WaitPolicy};
use rustix::process::{Pid, Signal};
use signal_hook::consts::{SIGCONT, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTSTP};

use crate::{Ctx, Failure};
use locksmith_core::Code;

/// Run a command while holding locks; release them when it ends.
///
/// CMD gets LOCKSMITH_KEYS and LOCKSMITH_FENCE (one line per key, in the
/// order given) and LOCKSMITH_HANDLE. SIGINT, SIGTERM, SIGHUP and SIGQUIT are
/// forwarded to CMD's process group; Ctrl-Z (SIGTSTP) suspends it with run
/// and SIGCONT resumes both. If a lock is lost while CMD runs, CMD's
/// group gets SIGTERM, then SIGKILL after --grace, and run exits 7. A lock
/// forced away, stolen or swept by another process is known at once (the
/// store tells run), not at the next renewal.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A key to hold while CMD runs; repeat for several (all or none).
    #[arg(short = 'l', long = "lock", value_name = "KEY")]
    keys: Vec<String>,
    /// Lock a directory by its canonical path; repeatable.
    #[arg(long, value_name = "DIR")]
    path: Vec<PathBuf>,
    /// Lease length, renewed in the background at a third of it.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    ttl: String,
    /// How long to wait for busy locks: 0 (fail fast), a duration, or forever.
    #[arg(long, value_name = "DURATION|forever", default_value = "0")]
    wait: String,
    #[command(flatten)]
    mode: super::ModeArgs,
    /// Owner name (default: $LOCKSMITH_OWNER, else user@host).
    #[arg(long)]
    owner: Option<String>,
    /// Task id shown with the locks.
    #[arg(long)]
    task: Option<String>,
    /// Queue priority, higher first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// What to do to CMD when a lock is lost: term (SIGTERM, then SIGKILL
    /// after --grace), kill (SIGKILL at once) or ignore (warn and go on).
    #[arg(long, value_name = "ACTION", default_value = "term", value_parser = ["term", "kill", "ignore"])]
    on_lost: String,
    /// Time between SIGTERM and SIGKILL when a lock is lost.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    grace: String,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Exit status of a shell for a process ended by `status`.
fn shell_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        _ => 1,
    }
}

fn signal_group(pgid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(p, sig);
    }
}

/// The proof of life shared with CMD's tree; its file is removed when `run`
/// is done (the descriptor itself closes when the last process holding it
/// exits).
struct LifeFile {
    path: Option<PathBuf>,
    _file: std::fs::File,
}

impl Drop for LifeFile {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

enum Event {
    Exited(ExitStatus),
}

/// Runs `run`.
pub fn run(ctx: &Ctx, a: Args) -> Result<(), Failure> {
    let keys = super::keys(&a.keys, &a.path)?;
    if keys.is_empty() {
        return Err(Failure::new(
            Code::Invalid,
            "name at least one lock with -l KEY (or --path DIR)",
        ));
    }
    let invalid = |flag: &str, e: String| Failure::new(Code::Invalid, format!("--{flag}: {e}"));
    let ttl = parse_duration(&a.ttl).map_err(|e| invalid("ttl", e))?;
    let grace = parse_duration(&a.grace).map_err(|e| invalid("grace", e))?;
    let policy = WaitPolicy::parse(&a.wait).map_err(|e| invalid("wait", e))?;
    let opened = ctx.store()?;
    // Bound to this process and everything CMD starts: a SIGKILL of run frees
    // the locks only once CMD's whole tree is gone (its descendants inherit
    // the life file, as with flock(1)). A server cannot watch a process on
    // this machine: there the lease alone ends a lock whose run was killed.
    let (bind, _life) = match &opened {
        crate::Opened::Local(_) | crate::Opened::Postgres(_) => {
            let (bind, file) = match &opened {
                crate::Opened::Local(s) => s.bind_process_tree()?,
                crate::Opened::Postgres(s) => s.bind_process_tree()?,
                crate::Opened::Remote(_) => unreachable!("matched above"),
            };
            let life = LifeFile {
                path: bind.life_file.clone().map(PathBuf::from),
                _file: file,
            };
            (Some(bind), Some(life))
        }
        crate::Opened::Remote(_) => (None, None),
    };
    let notifier = opened.notifier();
    let store: Arc<dyn Store> = opened.shared();
    let holder = super::holder(ctx, a.owner.as_ref(), a.task.as_ref());
    let req = AcquireRequest {
        keys,
        mode: a.mode.mode(),
        scope: a.mode.scope(),
        holder,
        ttl: Some(ttl),
        max_hold: None,
        priority: a.priority,
        takeover: Takeover::None,
        request_id: None,
        bind,
    };

    // Signals: while waiting they stop the wait; once CMD runs they go to its group.
    let cancel = Arc::new(AtomicBool::new(false));
    let last_signal = Arc::new(AtomicI32::new(0));
    let child_group = Arc::new(AtomicI32::new(0));
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGCONT])
            .map_err(|e| Failure::error(format!("cannot install signal handlers: {e}")))?;
    {
        let (cancel, last_signal, child_group) =
            (cancel.clone(), last_signal.clone(), child_group.clone());
        std::thread::spawn(move || {
            for sig in signals.forever() {
                // Ctrl-Z suspends CMD's group with run, and `fg` resumes both
                // (CMD's own group is not the terminal's foreground group).
                if sig == SIGTSTP || sig == SIGCONT {
                    let pgid = child_group.load(Ordering::SeqCst);
                    if pgid > 0 {
                        let forward = if sig == SIGTSTP {
                            Signal::TSTP
                        } else {
                            Signal::CONT
                        };
                        signal_group(pgid, forward);
                    }
                    if sig == SIGTSTP {
                        let _ =
                            rustix::process::kill_process(rustix::process::getpid(), Signal::STOP);
                    }
                    continue;
                }
                last_signal.store(sig, Ordering::SeqCst);
                let pgid = child_group.load(Ordering::SeqCst);
                if pgid > 0 {
                    signal_group(pgid, Signal::from_named_raw(sig).unwrap_or(Signal::TERM));
                } else {
                    cancel.store(true, Ordering::SeqCst);
                }
            }
        });
    }

    // Renewed by a client of the store, which also listens for the store
    // telling this process that it ended the lock (forced, stolen, swept),
    // from before the grant on.
    let client = locksmith::Client::from_parts(store.clone(), notifier.clone(), None);
    client.prepare_guards();
    let what: Vec<String> = req.keys.iter().map(|k| k.to_string()).collect();
    let what = what.join(", ");
    let grant = match super::acquire::wait_for_grant(
        ctx, &*store, &*notifier, &req, policy, &a.wait, &cancel,
    ) {
        Ok(g) => g,
        // A signal stopped the wait: exit as a shell does for that signal.
        Err(f) if f.kind == Code::Cancelled.name() => {
            let sig = last_signal.load(Ordering::SeqCst);
            return Err(Failure::status(
                128u8.wrapping_add(sig as u8),
                "cancelled",
                format!("stopped waiting for {what} (signal {sig}); CMD was not started"),
            ));
        }
        Err(f) => return Err(f),
    };
    let keys_env: Vec<String> = grant.locks.iter().map(|l| l.key.to_string()).collect();
    let fences_env: Vec<String> = grant.locks.iter().map(|l| l.fence.to_string()).collect();
    let handle = grant.handle.expose().to_string();
    let guard = client.adopt(grant);
    // A signal that came while waiting stops run even if the same attempt
    // was granted: CMD is not started.
    let sig = last_signal.load(Ordering::SeqCst);
    if cancel.load(Ordering::SeqCst) && sig > 0 {
        let _ = guard.release_failed();
        return Err(Failure::status(
            128u8.wrapping_add(sig as u8),
            "cancelled",
            format!("stopped by signal {sig} as {what} was granted; CMD was not started"),
        ));
    }

    let mut cmd = Command::new(&a.command[0]);
    cmd.args(&a.command[1..])
        .env("LOCKSMITH_KEYS", keys_env.join("\n"))
        .env("LOCKSMITH_FENCE", fences_env.join("\n"))
        .env("LOCKSMITH_HANDLE", handle)
        .process_group(0);
    let mut child = match spawn_tied(&mut cmd) {
        Ok(child) => child,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let _ = guard.release_failed();
            return Err(Failure::status(
                code,
                "exec_failed",
                format!("cannot run {:?}: {e}", a.command[0]),
            ));
        }
    };
    let pgid = child.id() as i32;
    child_group.store(pgid, Ordering::SeqCst);
    // A signal that came between the grant and the spawn is not lost.
    if let Some(sig) = Signal::from_named_raw(last_signal.swap(0, Ordering::SeqCst)) {
        signal_group(pgid, sig);
    }
    let (events, incoming) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = events.send(Event::Exited(status));
        }
    });

    let mut lost_at: Option<Instant> = None;
    let mut killed = false;
    // Renewals that fail are said once, and their recovery too.
    let mut renew_failing = false;
    let status = loop {
        match incoming.recv_timeout(Duration::from_millis(20)) {
            Ok(Event::Exited(status)) => break status,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Failure::error("lost track of CMD"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        match guard.renew_error() {
            Some(e) if !renew_failing && lost_at.is_none() => {
                renew_failing = true;
                err!(
                    "locksmith: renewing the lock on {what} failed: {e}; retrying until the lease runs out, then CMD is stopped"
                );
            }
            None if renew_failing && !guard.is_lost() => {
                renew_failing = false;
                err!("locksmith: renewing the lock on {what} works again");
            }
            _ => {}
        }
        if lost_at.is_none() && guard.is_lost() && !guard.given_up() {
            lost_at = Some(Instant::now());
            let why = guard
                .lost_reason()
                .unwrap_or(locksmith_core::ReleaseReason::LeaseExpired);
            err!(
                "locksmith: lock on {what} lost ({why}) while CMD runs; on-lost action: {}",
                a.on_lost
            );
            match a.on_lost.as_str() {
                "term" => signal_group(pgid, Signal::TERM),
                "kill" => {
                    signal_group(pgid, Signal::KILL);
                    killed = true;
                }
                _ => {}
            }
        }
        if let Some(t) = lost_at
            && a.on_lost == "term"
            && !killed
            && t.elapsed() >= grace
        {
            signal_group(pgid, Signal::KILL);
            killed = true;
        }
    };
    let code = shell_code(status);
    // Lost while CMD ran but found out only now (CMD ended before the next
    // renewal): still a lost lock, never a silent success.
    let lost_late = lost_at.is_none() && guard.is_lost() && !guard.given_up();
    if lost_late {
        drop(guard);
        return Err(Failure::new(
            Code::Lost,
            format!("the lock on {what} was lost while CMD ran (CMD exited {code})"),
        ));
    }
    if lost_at.is_some() {
        drop(guard);
        if a.on_lost == "ignore" {
            return Err(Failure::new(
                Code::Lost,
                format!("the lock on {what} was lost while CMD ran (CMD exited {code})"),
            ));
        }
        return Err(Failure::new(
            Code::Lost,
            format!("the lock on {what} was lost; CMD was stopped"),
        ));
    }
    let released = if status.success() {
        guard.release()
    } else {
        guard.release_failed()
    };
    match released {
        // CMD released its lock itself (through LOCKSMITH_HANDLE): its call.
        Ok(locksmith_core::Release::NotHeld {
            reason: Some(r), ..
        }) if r.by_holder() => {}
        Ok(locksmith_core::Release::NotHeld { reason, .. }) => {
            let why = reason
                .map(|r| r.to_string())
                .unwrap_or_else(|| "no record of it".into());
            return Err(Failure::new(
                Code::Lost,
                format!("the lock on {what} was lost while CMD ran ({why}; CMD exited {code})"),
            ));
        }
        Ok(locksmith_core::Release::Released { .. }) => {}
        Err(e) => err!("locksmith: CMD finished but the release failed: {e}"),
    }
    if code == 0 {
        Ok(())
    } else {
        Err(Failure::status(code, "command_failed", String::new()))
    }
}

/// Starts `cmd` armed to be killed by the kernel when this process dies.
///
/// The one `unsafe` of the workspace: `pre_exec` runs in the forked child
/// before exec, where only async-signal-safe calls are allowed. It makes two
/// system calls (prctl and getppid), allocates nothing and takes no lock.
#[allow(unsafe_code)]
fn spawn_tied(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let parent = rustix::process::getpid();
    // SAFETY: see above; the closure only issues raw system calls.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                // run died before the signal was armed: do not start unprotected.
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
