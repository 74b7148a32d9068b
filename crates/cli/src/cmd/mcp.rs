//! `locksmith mcp`: the lock tools for an AI coding agent, over stdio.

use locksmith_core::Code;
use locksmith_core::time::parse_duration;

use crate::{Ctx, Failure};

/// Serve the lock tools to one AI agent session over stdio (Model Context
/// Protocol).
///
/// Configure it in the agent as {"command": "locksmith", "args": ["mcp"]}.
/// Tools: acquire, release, renew, status, list, history; resources:
/// locksmith://locks and locksmith://locks/KEY. The session's locks are
/// renewed while it lives and end with it: on the embedded store (and on
/// PostgreSQL, for holders on this machine) at once when this process dies,
/// on a server when their lease runs out. The store is --store or
/// $LOCKSMITH_STORE, a server --server. Owner:
/// $LOCKSMITH_OWNER, else the agent's name plus a session id. See
/// docs/agents.md.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Lease of the session's locks, renewed while the session lives; on
    /// a server, how long the locks of a killed session stay.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    ttl: String,
    /// Longest wait inside one tool call; longer waits answer "waiting"
    /// and keep the queue place for the next call.
    #[arg(long, value_name = "DURATION", default_value = "20s")]
    call_wait: String,
    /// How long a queue place is kept for a call that does not come back.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    keep_place: String,
}

/// Runs `mcp`.
pub fn run(ctx: &Ctx, a: Args) -> Result<(), Failure> {
    let invalid = |flag: &str, e: String| Failure::new(Code::Invalid, format!("--{flag}: {e}"));
    let positive = |flag: &str, v: &str| {
        let d = parse_duration(v).map_err(|e| invalid(flag, e))?;
        if d.is_zero() {
            return Err(invalid(flag, "must be more than 0".into()));
        }
        Ok(d)
    };
    let settings = locksmith_mcp::Settings {
        owner: ctx.config.owner_set(),
        ttl: positive("ttl", &a.ttl)?,
        call_wait: positive("call-wait", &a.call_wait)?,
        keep_place: positive("keep-place", &a.keep_place)?,
    };
    locksmith_core::validate::check_ttl(Some(settings.ttl))?;
    let opened = match (&ctx.server, &ctx.store) {
        (Some(_), Some(_)) => {
            return Err(Failure::new(
                Code::Invalid,
                "give --server or --store, not both",
            ));
        }
        _ => ctx.store()?,
    };
    let client = opened.client();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::error(format!("cannot start the runtime: {e}")))?;
    rt.block_on(locksmith_mcp::serve_stdio(client, settings))
        .map_err(|e| Failure::error(format!("{e:#}")))
}
