//! `status KEY` and `list`: who holds what, how healthy, and who waits.

use locksmith_core::Scope;
use locksmith_core::store::{ListFilter, LockInfo, WaiterInfo};
use locksmith_core::time::format_duration;

use crate::output::{json, table};
use crate::{Ctx, Failure};
use locksmith::config::show_duration;

/// Show who holds a key and who waits for it.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    target: super::KeyArg,
}

/// List held locks (or, with --waiting, the queue).
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this owner.
    #[arg(long)]
    owner: Option<String>,
    /// Only keys starting with this text.
    #[arg(long)]
    prefix: Option<String>,
    /// Only locks that are stale, expired or dead.
    #[arg(long)]
    stale: bool,
    /// Show queued requests with their place instead of held locks.
    #[arg(long)]
    waiting: bool,
    /// At most this many rows (0: all).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

fn mode(l: &LockInfo) -> String {
    let tree = if l.scope == Scope::Tree { "+tree" } else { "" };
    format!("{}{tree}", l.mode)
}

fn lock_rows(locks: &[LockInfo]) -> Vec<Vec<String>> {
    locks
        .iter()
        .map(|l| {
            vec![
                l.key.to_string(),
                mode(l),
                l.owner.clone(),
                l.task.clone().unwrap_or_else(|| "-".into()),
                format!("{}:{}", l.hostname, l.pid),
                l.fence.to_string(),
                format_duration(l.held_for),
                show_duration(l.expires_in),
                format_duration(l.since_seen),
                l.health.name().to_string(),
            ]
        })
        .collect()
}

const LOCK_HEADER: [&str; 10] = [
    "KEY",
    "MODE",
    "OWNER",
    "TASK",
    "HOST:PID",
    "FENCE",
    "HELD",
    "LEASE LEFT",
    "LAST SEEN",
    "STATE",
];

fn waiter_rows(ws: &[WaiterInfo]) -> Vec<Vec<String>> {
    ws.iter()
        .map(|w| {
            vec![
                w.key.to_string(),
                w.position.to_string(),
                w.owner.clone(),
                w.task.clone().unwrap_or_else(|| "-".into()),
                format!(
                    "{}{}",
                    w.mode,
                    if w.scope == Scope::Tree { "+tree" } else { "" }
                ),
                w.priority.to_string(),
                format_duration(w.waited),
            ]
        })
        .collect()
}

const WAITER_HEADER: [&str; 7] = [
    "KEY", "PLACE", "OWNER", "TASK", "MODE", "PRIORITY", "WAITING",
];

/// Runs `status`.
pub fn status(ctx: &Ctx, a: StatusArgs) -> Result<(), Failure> {
    let key = a.target.key()?;
    let st = ctx.store()?.status(&key)?;
    if ctx.json {
        json(&st);
        return Ok(());
    }
    if st.holders.is_empty() {
        out!("{key} is free");
    } else {
        table(&LOCK_HEADER, &lock_rows(&st.holders));
    }
    if !st.waiters.is_empty() {
        out!();
        table(&WAITER_HEADER, &waiter_rows(&st.waiters));
    }
    Ok(())
}

/// Runs `list`.
pub fn list(ctx: &Ctx, a: ListArgs) -> Result<(), Failure> {
    let filtered = a.owner.is_some() || a.prefix.is_some() || a.stale;
    let filter = ListFilter {
        owner: a.owner,
        prefix: a.prefix,
        unhealthy: a.stale,
        limit: a.limit,
        ..ListFilter::default()
    };
    let store = ctx.store()?;
    if a.waiting {
        let ws = store.waiters(&filter)?;
        if ctx.json {
            json(&ws);
        } else if ws.is_empty() && filtered {
            out!("no waiters match");
        } else if ws.is_empty() {
            out!("nobody is waiting");
        } else {
            table(&WAITER_HEADER, &waiter_rows(&ws));
        }
        return Ok(());
    }
    let locks = store.list(&filter)?;
    if ctx.json {
        json(&locks);
    } else if locks.is_empty() && filtered {
        out!("no locks match");
    } else if locks.is_empty() {
        out!("no locks held");
    } else {
        table(&LOCK_HEADER, &lock_rows(&locks));
    }
    Ok(())
}
