//! `release`, `renew` and `force-release`: ending or extending a tenure,
//! proven by lease handle or (local trust) owner name.

use locksmith_core::store::{Proof, Release, Renewal, Target};
use locksmith_core::time::{format_duration, parse_duration};
use locksmith_core::{LeaseHandle, ReleaseReason};

use crate::output::json;
use crate::{Ctx, Failure};
use locksmith_core::Code;

/// Release a lock you hold (releasing twice is not an error).
#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    #[command(flatten)]
    target: super::KeyArg,
    #[command(flatten)]
    proof: ProofArgs,
    /// completed (default) or failed.
    #[arg(long, default_value = "completed", value_parser = ["completed", "failed"])]
    reason: String,
}

/// Extend a lease (or, without a lease, record a sign of life).
#[derive(clap::Args, Debug)]
pub struct RenewArgs {
    #[command(flatten)]
    target: super::KeyArg,
    #[command(flatten)]
    proof: ProofArgs,
    /// New lease length (default: the one it was granted with).
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
}

/// Admin: end every tenure on a key (recorded as `forced`).
#[derive(clap::Args, Debug)]
pub struct ForceArgs {
    #[command(flatten)]
    target: super::KeyArg,
    /// Why (required; recorded in the history).
    #[arg(long)]
    reason: String,
    /// The fence of the holder you mean to end (from status or list): if a
    /// newer tenure holds the key by now, nothing is ended (exit 3).
    #[arg(long, value_name = "FENCE")]
    fence: Option<u64>,
}

/// How the caller proves it holds the lock.
#[derive(clap::Args, Debug)]
pub struct ProofArgs {
    /// Owner name (default: $LOCKSMITH_OWNER, else user@host). By name, only
    /// the OS user that took the lock (or root) may release or renew it;
    /// anyone else needs the handle.
    #[arg(long, conflicts_with = "handle")]
    owner: Option<String>,
    /// The lease handle printed by acquire; `-` reads it from standard input
    /// (so that `ps` does not show it). Without --handle and --owner, a
    /// command started by `locksmith run` proves its own keys with the
    /// $LOCKSMITH_HANDLE that run gave it.
    #[arg(long)]
    handle: Option<String>,
}

/// The handle `locksmith run` gave its command, when `key` is one of the
/// command's keys (`$LOCKSMITH_KEYS`, one per line).
fn handle_from_run(key: &locksmith_core::Key) -> Option<String> {
    let handle = std::env::var("LOCKSMITH_HANDLE").ok()?;
    let keys = std::env::var("LOCKSMITH_KEYS").ok()?;
    keys.lines()
        .any(|k| locksmith_core::Key::new(k).is_ok_and(|k| &k == key))
        .then_some(handle)
}

fn target(ctx: &Ctx, arg: &super::KeyArg, p: &ProofArgs) -> Result<Target, Failure> {
    let key = arg.key()?;
    let handle = match p.handle.as_deref() {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| {
                Failure::new(
                    Code::Invalid,
                    format!("--handle -: cannot read the handle from standard input: {e}"),
                )
            })?;
            Some(line.trim().to_string())
        }
        Some(h) => Some(h.to_string()),
        None if p.owner.is_none() => handle_from_run(&key),
        None => None,
    };
    let by = match (&handle, &p.owner) {
        (Some(h), _) => {
            let h = LeaseHandle::from_text(h.clone());
            if h.grant().is_none() {
                return Err(Failure::new(
                    Code::Invalid,
                    "malformed --handle: expected lh1.<grant>.<secret> as printed by acquire",
                ));
            }
            Proof::Handle(h)
        }
        (None, Some(o)) => Proof::Owner(o.clone()),
        (None, None) => Proof::Owner(ctx.config.owner()),
    };
    Ok(Target { key, by })
}

fn reason_text(r: Option<ReleaseReason>) -> String {
    r.map(|r| r.to_string())
        .unwrap_or_else(|| "no record of it".into())
}

/// Runs `release`.
pub fn release(ctx: &Ctx, a: ReleaseArgs) -> Result<(), Failure> {
    let t = target(ctx, &a.target, &a.proof)?;
    let reason: ReleaseReason = a
        .reason
        .parse()
        .map_err(|e: String| Failure::new(Code::Invalid, e))?;
    let out = ctx.store()?.release(&t, reason)?;
    if ctx.json {
        json(&out);
        return Ok(());
    }
    match out {
        Release::Released {
            key,
            fence,
            held_for,
        } => {
            out!(
                "released {key} fence {fence} after {} ({reason})",
                format_duration(held_for)
            )
        }
        Release::NotHeld { key, reason } => {
            out!(
                "{key} was not held by you (already ended: {})",
                reason_text(reason)
            )
        }
    }
    Ok(())
}

/// Runs `renew`.
pub fn renew(ctx: &Ctx, a: RenewArgs) -> Result<(), Failure> {
    let t = target(ctx, &a.target, &a.proof)?;
    let ttl = a
        .ttl
        .as_deref()
        .map(|v| parse_duration(v).map_err(|e| Failure::new(Code::Invalid, format!("--ttl: {e}"))))
        .transpose()?;
    // A renewal by hand waits as long as any command for the server.
    let store = match ctx.store()? {
        crate::Opened::Remote(h) => {
            crate::Opened::Remote(h.with_renew_timeout(std::time::Duration::from_secs(10)))
        }
        local => local,
    };
    let out = store.renew(&t, ttl)?;
    if let Renewal::Lost { key, reason } = &out {
        let mut f = Failure::new(
            Code::Lost,
            format!(
                "lost: {key} is no longer held by you ({})",
                reason_text(*reason)
            ),
        );
        f.extra = Some(serde_json::json!({ "key": key, "reason": reason }));
        return Err(f);
    }
    if ctx.json {
        json(&out);
        return Ok(());
    }
    if let Renewal::Renewed { locks } = out {
        for l in locks {
            match l.expires_at {
                Some(e) => out!("renewed {} fence {} until {}", l.key, l.fence, e.rfc3339()),
                None => out!(
                    "renewed {} fence {} (no lease; sign of life recorded)",
                    l.key,
                    l.fence
                ),
            }
        }
    }
    Ok(())
}

/// Runs `force-release`.
pub fn force(ctx: &Ctx, a: ForceArgs) -> Result<(), Failure> {
    let key = a.target.key()?;
    let seen = a.fence.map(locksmith_core::Fence);
    let by = ctx.config.owner();
    let ended = ctx
        .store()?
        .force_release_seen(&key, &a.reason, Some(&by), seen)?;
    if ctx.json {
        json(&serde_json::json!({ "key": key, "ended": ended }));
        return Ok(());
    }
    if ended.is_empty() {
        out!("{key} was not held; nothing changed");
    }
    for l in ended {
        out!(
            "force-released {} fence {} held by {} for {}",
            l.key,
            l.fence,
            l.owner,
            format_duration(l.held_for)
        );
    }
    Ok(())
}
