//! `locksmith watch`: lock events as they happen, one line each (or one
//! JSON object per line), from the embedded store or a server's stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use locksmith::remote::Watched;
use locksmith_core::Event;
use locksmith_core::store::HistoryFilter;
use serde_json::json;

use crate::{Ctx, Failure, Opened};

/// How often the embedded store's history is read for new events.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Follow lock events live: acquired, released, expired, forced, waiting, ...
///
/// Against a server this follows its event stream (resuming after the last
/// event if the connection breaks); on the embedded store it reads the
/// history as it grows. Stops on SIGINT/SIGTERM, or after --count events.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only keys starting with this text.
    #[arg(long)]
    prefix: Option<String>,
    /// Start after this event id (from `history --json`) instead of now.
    #[arg(long, value_name = "ID")]
    after: Option<i64>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    count: Option<usize>,
}

fn line(ctx: &Ctx, e: &Event) {
    if ctx.json {
        crate::output::json(e);
        return;
    }
    out!(
        "{}  {:<16} {}  owner {}{}{}",
        e.at.rfc3339(),
        e.kind.name(),
        e.key,
        e.owner,
        e.fence.map(|f| format!("  fence {f}")).unwrap_or_default(),
        e.reason
            .map(|r| format!("  reason {r}"))
            .unwrap_or_default(),
    );
}

/// Runs `watch`.
pub fn run(ctx: &Ctx, a: Args) -> Result<(), Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let mut left = a.count;
    let mut show = |item: Watched| -> bool {
        match item {
            Watched::Event(e) => {
                line(ctx, &e);
                if let Some(n) = left.as_mut() {
                    *n -= 1;
                }
            }
            Watched::Reset(why) => {
                if ctx.json {
                    crate::output::json(&json!({ "reset": why }));
                } else {
                    err!(
                        "locksmith: events were missed ({why}); read the state again with `locksmith list`"
                    );
                }
            }
        }
        left != Some(0) && !stop.load(Ordering::Relaxed) && !crate::output::stdout_failed()
    };
    if a.count == Some(0) {
        return Ok(());
    }
    match ctx.store()? {
        Opened::Remote(http) => {
            // The stream blocks in a read between events (keep-alives come
            // every 15 s): a signal ends the process from here at once.
            // Lines are printed whole, so none is cut.
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::process::exit(0);
            });
            Ok(http.watch(a.prefix.as_deref(), a.after, &mut show)?)
        }
        store => {
            let mut last = match a.after {
                Some(id) => id,
                None => store
                    .history(&HistoryFilter {
                        limit: 1,
                        ..HistoryFilter::default()
                    })?
                    .first()
                    .map_or(0, |e| e.id),
            };
            loop {
                // Every event, filtered here: the place moves on past
                // events of other keys too.
                let mut fresh = store.history(&HistoryFilter {
                    after: Some(last),
                    ..HistoryFilter::default()
                })?;
                fresh.reverse();
                for e in fresh {
                    last = e.id;
                    if a.prefix.as_deref().is_some_and(|p| !e.key.starts_with(p)) {
                        continue;
                    }
                    if !show(Watched::Event(e)) {
                        return Ok(());
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(LOOK_EVERY);
            }
        }
    }
}
