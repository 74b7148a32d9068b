//! `locksmith acquire`: take one or more locks, failing fast or waiting in
//! the fair queue, and print the grant (fence and lease handle).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use locksmith::wait;
use locksmith_core::store::Blocked;
use locksmith_core::time::{format_duration, parse_duration};
use locksmith_core::{
    AcquireError, AcquireRequest, Binding, Grant, Notifier, Store, Takeover, WaitPolicy,
};
use serde_json::json;

use crate::output::{holder, ordinal};
use crate::{Ctx, Failure};
use locksmith_core::Code;

/// Take one or more locks (all or none) and print the grant.
///
/// Prints the fence and the lease handle; keep the handle to renew or
/// release (or release by owner name). Without --ttl the lock is held until
/// released, with `stale_after` as the backstop.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keys to lock, e.g. repo/acme or task/42. All are granted together or none.
    #[arg(value_name = "KEY")]
    keys: Vec<String>,
    /// Lock a directory by its canonical path (symlinks and .. resolved); repeatable.
    #[arg(long, value_name = "DIR")]
    path: Vec<PathBuf>,
    /// Owner name (default: $LOCKSMITH_OWNER, else user@host).
    #[arg(long)]
    owner: Option<String>,
    /// Task id shown with the lock.
    #[arg(long)]
    task: Option<String>,
    /// Metadata shown with the lock, as key=value; repeatable.
    #[arg(long, value_name = "K=V")]
    meta: Vec<String>,
    /// Lease: the lock ends unless renewed within this time (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// How long to wait for a busy lock: 0 (fail fast), a duration, or forever.
    #[arg(long, value_name = "DURATION|forever", default_value = "0")]
    wait: String,
    #[command(flatten)]
    mode: super::ModeArgs,
    /// Queue priority: higher is served first (default 0).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// End the tenure after this long, renewed or not.
    #[arg(long, value_name = "DURATION")]
    max_hold: Option<String>,
    /// Take the lock over if its holder is stale, expired or dead (reason `stolen`).
    #[arg(long, conflicts_with = "force")]
    steal_stale: bool,
    /// Admin: end every holder in the way (reason `forced`); needs --reason.
    #[arg(long, requires = "reason")]
    force: bool,
    /// Why --force was needed (recorded in the history).
    #[arg(long)]
    reason: Option<String>,
    /// Idempotency id: repeating the request returns the same grant.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Bind the lock to a running process (e.g. the calling shell: --pid $$):
    /// it is freed once that process ends (checked by pid and start time).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
}

fn duration(flag: &str, v: &Option<String>) -> Result<Option<Duration>, Failure> {
    v.as_deref()
        .map(|t| {
            parse_duration(t).map_err(|e| Failure::new(Code::Invalid, format!("--{flag}: {e}")))
        })
        .transpose()
}

/// Builds the request from the arguments.
fn request(ctx: &Ctx, a: &Args) -> Result<AcquireRequest, Failure> {
    let keys = super::keys(&a.keys, &a.path)?;
    if keys.is_empty() {
        return Err(Failure::new(
            Code::Invalid,
            "name at least one KEY or --path DIR",
        ));
    }
    let mut meta = serde_json::Map::new();
    for kv in &a.meta {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            Failure::new(Code::Invalid, format!("--meta {kv:?}: expected key=value"))
        })?;
        meta.insert(k.to_string(), json!(v));
    }
    let mut h = super::holder(ctx, a.owner.as_ref(), a.task.as_ref());
    h.metadata = (!meta.is_empty()).then_some(serde_json::Value::Object(meta));
    if a.reason.is_some() && !a.force {
        return Err(Failure::new(Code::Invalid, "--reason goes with --force"));
    }
    let bind = a.pid.map(bind_pid).transpose()?;
    // Bound to another process, the lock is that process's: show its pid.
    if let Some(b) = &bind {
        h.pid = b.pid;
        h.pid_start = b.start;
    }
    Ok(AcquireRequest {
        keys,
        mode: a.mode.mode(),
        scope: a.mode.scope(),
        holder: h,
        ttl: duration("ttl", &a.ttl)?,
        max_hold: duration("max-hold", &a.max_hold)?,
        priority: a.priority,
        takeover: match (a.force, a.steal_stale) {
            (true, _) => Takeover::Force {
                reason: a.reason.clone().unwrap_or_default(),
            },
            (_, true) => Takeover::StealStale,
            _ => Takeover::None,
        },
        request_id: a.request_id.clone(),
        bind,
    })
}

/// A binding to another running process, by pid and start time.
fn bind_pid(pid: u32) -> Result<Binding, Failure> {
    let start = locksmith::host::sys::process_start(pid).ok_or_else(|| {
        Failure::new(
            Code::Invalid,
            format!("--pid {pid}: no such process is running"),
        )
    })?;
    Ok(Binding {
        pid,
        start: Some(start),
        life_file: None,
    })
}

/// "held by agent-3 (task 42) for 3m12s, fence 17, 2nd in queue".
fn blocked_text(b: &Blocked) -> String {
    let mut s = match b.holders.first() {
        Some(h) if b.holders.len() > 1 => {
            format!("held by {} and {} more", holder(h), b.holders.len() - 1)
        }
        Some(h) => format!("held by {}", holder(h)),
        None => format!("{} earlier waiter(s) ahead", b.waiters_ahead),
    };
    if let Some(p) = b.position {
        s.push_str(&format!(", {} in queue", ordinal(p)));
    }
    s
}

/// Acquires per `policy`, showing one live status line while waiting on a
/// terminal, and turns every way of not getting the lock into its exit code
/// (3 busy, 4 timed out, 130 cancelled by a signal).
pub fn wait_for_grant(
    ctx: &Ctx,
    store: &dyn Store,
    notifier: &dyn Notifier,
    req: &AcquireRequest,
    policy: WaitPolicy,
    wait_text: &str,
    cancel: &AtomicBool,
) -> Result<Grant, Failure> {
    let names: Vec<&str> = req.keys.iter().map(|k| k.as_str()).collect();
    let what = names.join(", ");
    let live = std::io::stderr().is_terminal() && !ctx.json;
    let mut shown = false;
    let mut on_blocked = |b: &Blocked, waited: Duration| {
        if live {
            err_part!(
                "\r\x1b[2Kwaiting for {what} ({}) — {}",
                format_duration(waited),
                blocked_text(b)
            );
            let _ = std::io::stderr().flush();
            shown = true;
        }
    };
    let result = wait::acquire(store, notifier, req, policy, cancel, &mut on_blocked);
    if shown {
        err_part!("\r\x1b[2K");
    }
    match result {
        Ok(g) => Ok(g),
        Err(AcquireError::Busy(b)) => {
            let mut f = Failure::new(
                Code::Busy,
                format!(
                    "busy: {what} is {}; wait with --wait 30s or --wait forever",
                    blocked_text(&b)
                ),
            );
            f.extra = Some(json!({ "holders": b.holders, "waiters_ahead": b.waiters_ahead }));
            Err(f)
        }
        Err(AcquireError::TimedOut(b)) => {
            let mut f = Failure::new(
                Code::WaitTimedOut,
                format!(
                    "timed out after {wait_text} waiting for {what}: {}",
                    blocked_text(&b)
                ),
            );
            f.extra = Some(json!({ "holders": b.holders, "position": b.position }));
            Err(f)
        }
        Err(AcquireError::Cancelled) => Err(Failure::new(
            Code::Cancelled,
            format!("stopped waiting for {what}; left the queue"),
        )),
        Err(AcquireError::Store(e)) => Err(e.into()),
        Err(other) => Err(Failure::new(other.code(), other.to_string())),
    }
}

/// Runs `acquire`.
pub fn run(ctx: &Ctx, a: Args) -> Result<(), Failure> {
    let req = request(ctx, &a)?;
    let policy = WaitPolicy::parse(&a.wait)
        .map_err(|e| Failure::new(Code::Invalid, format!("--wait: {e}")))?;
    let store = ctx.store()?;
    if req.bind.is_some() && matches!(store, crate::Opened::Remote(_)) {
        return Err(Failure::new(
            Code::Invalid,
            "--pid binds a lock to a process on this machine, which a server cannot watch; with --server give the lock a lease (--ttl) instead",
        ));
    }
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        let _ = signal_hook::flag::register(sig, cancel.clone());
    }
    let grant = wait_for_grant(
        ctx,
        &*store,
        &*store.notifier(),
        &req,
        policy,
        &a.wait,
        &cancel,
    )?;
    let expires = |l: &locksmith_core::GrantedLock| l.expires_at.map(|w| w.rfc3339());
    if ctx.json {
        // Times in JSON are milliseconds since the Unix epoch, as in
        // `list`, `status`, `renew` and the HTTP API.
        let lock = |l: &locksmith_core::GrantedLock| {
            json!({
                "key": l.key, "fence": l.fence, "handle": grant.handle.expose(), "owner": grant.owner,
                "expires_at": l.expires_at.map(|w| w.0), "grant": grant.grant,
                "ttl_ms": grant.ttl.map(|t| t.as_millis() as u64), "replayed": grant.replayed,
            })
        };
        if grant.locks.len() == 1 {
            crate::output::json(&lock(&grant.locks[0]));
        } else {
            crate::output::json(&json!({
                "locks": grant.locks.iter().map(lock).collect::<Vec<_>>(),
                "handle": grant.handle.expose(), "owner": grant.owner, "grant": grant.grant,
            }));
        }
        return answered(&*store, &grant);
    }
    for l in &grant.locks {
        let lease = match (grant.ttl, expires(l)) {
            (Some(t), Some(e)) => format!("lease {} until {e}", format_duration(t)),
            _ => "held until released".to_string(),
        };
        out!("acquired {} fence {} ({lease})", l.key, l.fence);
    }
    out!("handle {}", grant.handle.expose());
    if grant.replayed {
        out!("(repeated request id: this is the grant made earlier)");
    }
    answered(&*store, &grant)
}

/// A grant whose answer could not be written (stdout closed or full) is
/// released at once as `failed`: nobody received its handle, and a lock
/// nobody knows it holds would only wait for its lease or `stale_after`.
fn answered(store: &dyn Store, grant: &Grant) -> Result<(), Failure> {
    if !crate::output::stdout_failed() {
        return Ok(());
    }
    let target = locksmith_core::Target {
        key: grant.locks[0].key.clone(),
        by: locksmith_core::Proof::Handle(grant.handle.clone()),
    };
    let released = store.release_grant(&target, locksmith_core::ReleaseReason::Failed);
    Err(Failure::error(match released {
        Ok(_) => "could not write the grant to stdout (closed or full), so nobody has its handle: the lock was released again (reason failed)".to_string(),
        Err(e) => format!(
            "could not write the grant to stdout (closed or full), and releasing it failed too ({e}); it ends with its lease or stale_after"
        ),
    }))
}
