//! `history` and `stats`: the audit trail and its counters.

use locksmith_core::EventKind;
use locksmith_core::store::HistoryFilter;

use crate::output::{json, table};
use crate::{Ctx, Failure};
use locksmith_core::Code;

/// Show the audit history, newest first.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this key (or keys below it with --prefix).
    #[arg(value_name = "KEY")]
    key: Option<String>,
    /// Treat KEY as a prefix.
    #[arg(long)]
    prefix: bool,
    /// Only this owner.
    #[arg(long)]
    owner: Option<String>,
    /// Only this kind of event (acquired, released, expired, forced, stolen, waiting, ...).
    #[arg(long)]
    kind: Option<String>,
    /// At most this many events, newest first (0: all).
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

/// Show counters: held locks, waiters, events by kind, releases by reason.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {}

/// Runs `history`.
pub fn history(ctx: &Ctx, a: Args) -> Result<(), Failure> {
    let kind = a
        .kind
        .as_deref()
        .map(|k| {
            EventKind::parse(k).map_err(|e| Failure::new(Code::Invalid, format!("--kind: {e}")))
        })
        .transpose()?;
    let filter = HistoryFilter {
        key: a.key,
        prefix: a.prefix,
        owner: a.owner,
        kind,
        after: None,
        limit: a.limit,
    };
    let events = ctx.store()?.history(&filter)?;
    if ctx.json {
        json(&events);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.at.rfc3339(),
                e.kind.name().to_string(),
                e.key.clone(),
                e.owner.clone(),
                e.fence.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
                e.reason
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.detail.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["TIME", "EVENT", "KEY", "OWNER", "FENCE", "REASON", "DETAIL"],
        &rows,
    );
    Ok(())
}

/// Runs `stats`.
pub fn stats(ctx: &Ctx, _a: StatsArgs) -> Result<(), Failure> {
    let s = ctx.store()?.stats()?;
    if ctx.json {
        json(&s);
        return Ok(());
    }
    out!("held locks      {}", s.held);
    out!("waiting         {}", s.waiting);
    out!("not healthy     {}", s.unhealthy);
    out!("last fence      {}", s.last_fence);
    if let Some(since) = s.history_since {
        out!("history since   {}", since.rfc3339());
    }
    let acquired = s.events.get("acquired").copied().unwrap_or(0);
    let refused = s.events.get("wait_timed_out").copied().unwrap_or(0)
        + s.events.get("deadlock_refused").copied().unwrap_or(0);
    out!("acquisitions    {acquired}");
    out!("timeouts+refusals {refused}");
    if let Some(rate) = s.success_rate {
        out!(
            "success rate    {:.1} % (granted of granted, timed out and deadlocked)",
            rate * 100.0
        );
    }
    let w = &s.waits;
    if w.count > 0 {
        out!(
            "waited          {} requests: average {:.0} ms, p99 {} ms, max {} ms",
            w.count,
            w.avg_ms.unwrap_or(0.0),
            w.p99_ms.unwrap_or(0),
            w.max_ms.unwrap_or(0)
        );
    }
    out!();
    table(
        &["EVENT", "COUNT"],
        &s.events
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect::<Vec<_>>(),
    );
    out!();
    table(
        &["ENDED BY", "COUNT"],
        &s.releases
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect::<Vec<_>>(),
    );
    Ok(())
}
