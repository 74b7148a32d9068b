//! How a held lock is shown to people and scripts at a given instant.

use std::time::Duration;

use crate::model::HeldLock;
use crate::rules;
use crate::store::LockInfo;
use crate::time::{Mono, Now, Wall};

/// The public view of a held lock at `now`. `alive` is what the host knows
/// of its bound process (`Some(false)`: proven gone).
pub fn lock_info(
    lock: &HeldLock,
    alive: Option<bool>,
    now: Now,
    stale_after: Duration,
) -> LockInfo {
    LockInfo {
        key: lock.key.clone(),
        mode: lock.mode,
        scope: lock.scope,
        fence: lock.fence,
        grant: lock.grant,
        owner: lock.holder.owner.clone(),
        task: lock.holder.task.clone(),
        metadata: lock.holder.metadata.clone(),
        hostname: lock.holder.hostname.clone(),
        pid: lock.holder.pid,
        acquired_at: lock.acquired_wall,
        held_for: now.mono.since(lock.acquired),
        since_seen: now.mono.since(lock.last_seen),
        expires_at: lock.expires.map(|e| wall_at(now, e)),
        expires_in: lock.expires.map(|e| e.since(now.mono)),
        ttl: lock.ttl,
        max_hold: lock.max_hold,
        health: rules::health(lock, now.mono, stale_after, alive),
    }
}

/// The wall time that corresponds to monotonic instant `at`, for display.
pub fn wall_at(now: Now, at: Mono) -> Wall {
    if at >= now.mono {
        Wall(now.wall.0 + at.since(now.mono).as_millis() as u64)
    } else {
        Wall(
            now.wall
                .0
                .saturating_sub(now.mono.since(at).as_millis() as u64),
        )
    }
}
