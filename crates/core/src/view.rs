//! How a held lock is shown to people and scripts at a given instant.

use std::time::Duration;

use crate::key::Key;
use crate::model::{Health, HeldLock, Scope};
use crate::rules;
use crate::store::{KeyStatus, ListFilter, LockInfo, WaiterInfo};
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

/// One key's status from the locks bearing on it and every queued request:
/// the waiters on the key or on a tree above it, and whether it is free
/// (nothing holds it but tenures already over).
pub fn key_status(key: &Key, holders: Vec<LockInfo>, all_waiters: Vec<WaiterInfo>) -> KeyStatus {
    let waiters = all_waiters
        .into_iter()
        .filter(|w| &w.key == key || (w.scope == Scope::Tree && key.is_at_or_below(&w.key)))
        .collect();
    KeyStatus {
        key: key.clone(),
        free: holders.iter().all(|h| h.health == Health::Expired),
        holders,
        waiters,
    }
}

/// Numbers the waiters of each key in queue order (1 = next), keys in
/// order. Each waiter comes with its place `(priority, arrival)`.
pub fn number_waiters(mut waiters: Vec<((i32, i64), WaiterInfo)>) -> Vec<WaiterInfo> {
    waiters.sort_by(|a, b| a.1.key.cmp(&b.1.key).then(rules::queue_order(a.0, b.0)));
    let mut out: Vec<WaiterInfo> = Vec::with_capacity(waiters.len());
    for (_, mut w) in waiters {
        w.position = match out.last() {
            Some(prev) if prev.key == w.key => prev.position + 1,
            _ => 1,
        };
        out.push(w);
    }
    out
}

/// The waiters a listing shows: numbered as [`number_waiters`], then only
/// those `filter` asks for (owner, key prefix), at most `filter.limit`.
pub fn waiter_list(waiters: Vec<((i32, i64), WaiterInfo)>, filter: &ListFilter) -> Vec<WaiterInfo> {
    let mut out: Vec<WaiterInfo> = number_waiters(waiters)
        .into_iter()
        .filter(|w| {
            filter.owner.as_ref().is_none_or(|o| &w.owner == o)
                && filter
                    .prefix
                    .as_ref()
                    .is_none_or(|p| w.key.as_str().starts_with(p.as_str()))
        })
        .collect();
    if filter.limit > 0 {
        out.truncate(filter.limit);
    }
    out
}

/// How many requests wait: a request of several keys is listed once per
/// key, with the same owner and start.
pub fn requests_waiting(waiters: &[WaiterInfo]) -> u64 {
    waiters
        .iter()
        .map(|w| (&w.owner, w.since))
        .collect::<std::collections::HashSet<_>>()
        .len() as u64
}

/// A queue place in words: "1st", "2nd", "3rd", "4th", "11th", "21st".
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, x) if x != 11 => "st",
        (2, x) if x != 12 => "nd",
        (3, x) if x != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::ordinal;

    #[test]
    fn ordinals() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101]
            .iter()
            .map(|n| ordinal(*n))
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"
            ]
        );
    }
}
