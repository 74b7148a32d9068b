//! The sweeper's rules: which held locks to end and why. The sweeper only
//! cleans up and keeps the listing honest; correctness never depends on it,
//! because an acquire already treats expired and dead holders as free.

use serde::Serialize;

use crate::Key;
use crate::model::{Fence, Health, ReleaseReason};
use crate::store::{ListFilter, LockInfo, Store, StoreError};

/// One lock the sweeper ended (or, in a dry run, would end).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepAction {
    /// The key.
    pub key: Key,
    /// Fence of the tenure.
    pub fence: Fence,
    /// Its owner.
    pub owner: String,
    /// Its task.
    pub task: Option<String>,
    /// Why.
    pub reason: ReleaseReason,
    /// False in a dry run.
    pub applied: bool,
}

/// The rule that ends `lock` now, if any, from its health alone.
pub fn reason_for(lock: &LockInfo) -> Option<ReleaseReason> {
    match lock.health {
        Health::Expired if lock.max_hold.is_some_and(|m| lock.held_for >= m) => {
            Some(ReleaseReason::MaxHold)
        }
        Health::Expired => Some(ReleaseReason::LeaseExpired),
        Health::Dead => Some(ReleaseReason::DeadProcess),
        Health::Stale => Some(ReleaseReason::StaleTimeout),
        Health::Healthy => None,
    }
}

/// One pass over the held locks. `task_done(task)` answers whether a task
/// is finished (the task hook); it is asked only for healthy locks with a
/// task. Without a hook only the locks that can be unhealthy are read. Each end is a second look inside the store ([`Store::reap`]), so a
/// lock renewed since the scan is kept.
pub fn sweep(
    store: &dyn Store,
    dry_run: bool,
    mut task_done: Option<&mut dyn FnMut(&str) -> bool>,
) -> Result<Vec<SweepAction>, StoreError> {
    let filter = ListFilter {
        unhealthy: task_done.is_none(),
        ..ListFilter::default()
    };
    let mut actions = Vec::new();
    for lock in store.list(&filter)? {
        let reason = match (reason_for(&lock), &lock.task, task_done.as_mut()) {
            (Some(r), _, _) => r,
            (None, Some(t), Some(done)) => match done(t) {
                true => ReleaseReason::TaskCompleted,
                false => continue,
            },
            _ => continue,
        };
        let applied = !dry_run && store.reap(&lock.key, lock.fence, reason)?;
        if dry_run || applied {
            actions.push(SweepAction {
                key: lock.key,
                fence: lock.fence,
                owner: lock.owner,
                task: lock.task,
                reason,
                applied,
            });
        }
    }
    if !dry_run {
        store.prune_history()?;
    }
    Ok(actions)
}
