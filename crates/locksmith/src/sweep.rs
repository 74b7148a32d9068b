//! One pass of the sweeper over a store: list the locks that can be
//! unhealthy, choose the rule for each ([`locksmith_core::sweep::reason_for`]),
//! and end them in one batch, each with a second look inside the store
//! ([`Store::reap`]) so that a lock renewed since the scan is kept.

use locksmith_core::store::ListFilter;
use locksmith_core::sweep::{SweepAction, reason_for};
use locksmith_core::tenure::Reap;
use locksmith_core::{ReleaseReason, Store, StoreError};

/// One pass over the held locks. `task_done(task)` answers whether a task
/// is finished (the task hook); it is asked only for healthy locks with a
/// task. Without a hook only the locks that can be unhealthy are read.
pub fn sweep(
    store: &dyn Store,
    dry_run: bool,
    mut task_done: Option<&mut dyn FnMut(&str) -> bool>,
) -> Result<Vec<SweepAction>, StoreError> {
    let filter = ListFilter {
        unhealthy: task_done.is_none(),
        ..ListFilter::default()
    };
    let mut due = Vec::new();
    for lock in store.list(&filter)? {
        let reason = match (reason_for(&lock), &lock.task, task_done.as_mut()) {
            (Some(r), _, _) => r,
            (None, Some(t), Some(done)) => match done(t) {
                true => ReleaseReason::TaskCompleted,
                false => continue,
            },
            _ => continue,
        };
        due.push(SweepAction {
            key: lock.key,
            fence: lock.fence,
            owner: lock.owner,
            task: lock.task,
            reason,
            applied: false,
        });
    }
    if dry_run {
        return Ok(due);
    }
    let batch: Vec<Reap> = due
        .iter()
        .map(|a| Reap {
            key: a.key.clone(),
            fence: a.fence,
            reason: a.reason,
        })
        .collect();
    let ended = if batch.is_empty() {
        Vec::new()
    } else {
        store.reap(&batch)?
    };
    store.prune_history()?;
    Ok(due
        .into_iter()
        .zip(ended)
        .filter(|(_, ended)| *ended)
        .map(|(a, _)| SweepAction { applied: true, ..a })
        .collect())
}
