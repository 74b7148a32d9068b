//! The sweeper's rules: which held locks to end and why. The sweeper only
//! cleans up and keeps the listing honest; correctness never depends on it,
//! because an acquire already treats expired and dead holders as free. The
//! sweep loop itself runs with its caller (the library, the CLI, a server).

use serde::Serialize;

use crate::Key;
use crate::model::{Fence, Health, ReleaseReason};
use crate::store::LockInfo;

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
