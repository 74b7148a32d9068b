//! The sweeper inside `serve` (§6): a pass every `sweep_every`, logged as
//! `locksmith sweep` logs, counted in the metrics.

use std::sync::Arc;

use crate::State;
use crate::poll::blocking;

/// Runs passes until the task is aborted.
pub(crate) async fn run(st: Arc<State>) {
    let every = st.settings.sweep_every;
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = st.store.clone();
        match blocking(move || locksmith::sweep::sweep(&*store, false, None)).await {
            Ok(Ok(actions)) => {
                for a in &actions {
                    st.metrics.swept(a.reason.name());
                    tracing::info!(
                        event = "reaped",
                        key = %a.key,
                        fence = a.fence.0,
                        owner = %a.owner,
                        task = a.task.as_deref().unwrap_or(""),
                        reason = a.reason.name(),
                        "sweeper ended a lock"
                    );
                }
            }
            Ok(Err(e)) => tracing::error!(event = "pass_failed", error = %e, "sweep pass failed"),
            Err(e) => {
                tracing::error!(event = "pass_failed", error = %e.problem.detail, "sweep pass failed")
            }
        }
    }
}
