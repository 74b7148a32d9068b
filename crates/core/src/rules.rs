//! The lock rules, pure: which claims conflict, when a tenure has ended, how
//! healthy it is, who is ahead in the queue, and whether a wait closes a cycle.
//! Every function takes the current instant as an argument; nothing here
//! reads a clock, a file or a database.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::key::Key;
use crate::model::{Health, HeldLock, Mode, ReleaseReason, Scope};
use crate::time::Mono;

/// What a held lock or a queued request occupies.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// Its key.
    pub key: &'a Key,
    /// Its mode.
    pub mode: Mode,
    /// Its scope.
    pub scope: Scope,
}

/// True when the two claims cover a common key: the same key, or one is a
/// tree claim on an ancestor of the other's key.
pub fn overlaps(a: &Claim, b: &Claim) -> bool {
    a.key == b.key
        || (a.scope == Scope::Tree && b.key.is_at_or_below(a.key))
        || (b.scope == Scope::Tree && a.key.is_at_or_below(b.key))
}

/// A semaphore asked for with another slot count than the one its key is held with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the key is held as a semaphore of {held} slots but this request asks for {asked}; use --limit {held}"
)]
pub struct LimitMismatch {
    /// Slots of the held semaphore.
    pub held: u32,
    /// Slots asked for.
    pub asked: u32,
}

/// The members of `occupied` that stop `want` from being granted now.
///
/// Two overlapping claims are compatible only when both are shared, or both
/// are slots of the same semaphore on the same key; a semaphore blocks once
/// its slots are all taken, and then every slot holder is a blocker.
pub fn blockers<'o, T>(
    want: &Claim,
    occupied: &'o [T],
    claim_of: impl Fn(&T) -> Claim<'_>,
) -> Result<Vec<&'o T>, LimitMismatch> {
    let mut out = Vec::new();
    let mut slots = Vec::new();
    for item in occupied {
        let have = claim_of(item);
        if !overlaps(want, &have) {
            continue;
        }
        match (want.mode, have.mode) {
            (Mode::Shared, Mode::Shared) => {}
            (Mode::Semaphore { limit: asked }, Mode::Semaphore { limit: held })
                if want.key == have.key =>
            {
                if asked != held {
                    return Err(LimitMismatch { held, asked });
                }
                slots.push(item);
            }
            _ => out.push(item),
        }
    }
    if let Mode::Semaphore { limit } = want.mode
        && slots.len() >= limit as usize
    {
        out.extend(slots);
    }
    Ok(out)
}

/// Why a tenure is over at `now` without anyone releasing it, if it is:
/// its lease ran out, or it passed its `max_hold`. Acquirers treat such a
/// lock as free; no sweeper is needed for that.
pub fn ended(lock: &HeldLock, now: Mono) -> Option<ReleaseReason> {
    if let Some(max) = lock.max_hold
        && now >= lock.acquired.plus(max)
    {
        return Some(ReleaseReason::MaxHold);
    }
    match lock.expires {
        Some(deadline) if now >= deadline => Some(ReleaseReason::LeaseExpired),
        _ => None,
    }
}

/// When the tenure ends by itself (lease or `max_hold`, whichever first),
/// if it does: a waiter blocked by it re-checks then.
pub fn ends_at(lock: &HeldLock) -> Option<Mono> {
    let cap = lock.max_hold.map(|m| lock.acquired.plus(m));
    match (lock.expires, cap) {
        (Some(e), Some(c)) => Some(e.min(c)),
        (e, c) => e.or(c),
    }
}

impl HeldLock {
    /// What this tenure occupies.
    pub fn claim(&self) -> Claim<'_> {
        Claim {
            key: &self.key,
            mode: self.mode,
            scope: self.scope,
        }
    }
}

/// The health shown for a held lock. `process_alive` is `Some(false)` when the
/// holder process is known to be gone. `stale_after` applies to a lock that
/// recorded no threshold of its own when it was granted.
pub fn health(
    lock: &HeldLock,
    now: Mono,
    stale_after: Duration,
    process_alive: Option<bool>,
) -> Health {
    if ended(lock, now).is_some() {
        Health::Expired
    } else if process_alive == Some(false) {
        Health::Dead
    } else if lock.expires.is_none()
        && now >= lock.last_seen.plus(lock.stale_after.unwrap_or(stale_after))
        && process_alive != Some(true)
    {
        // Staleness is the backstop of locks without a lease: a running
        // lease is its own sign of life (it ends by itself when renewals
        // stop), and so is a bound process proven alive.
        Health::Stale
    } else {
        Health::Healthy
    }
}

/// Where a store runs, as process bindings are judged: a kernel (boot id)
/// and a host name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The kernel's boot id.
    pub boot_id: String,
    /// The host name.
    pub hostname: String,
}

/// What a life file says of its process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifeFile {
    /// Its kernel lock is held: the process lives.
    Held,
    /// Its kernel lock is free: the process is gone.
    Free,
    /// There is no such file: ask the pid.
    Missing,
    /// It cannot be read: no proof either way.
    Unreadable,
}

/// What a host can probe about a bound process.
pub trait ProcessProbe {
    /// The proof of its life file.
    fn life_file(&self, path: &str) -> LifeFile;
    /// Whether process `pid` runs and started at `start`; `None` when unknown.
    fn process(&self, pid: u32, start: Option<u64>) -> Option<bool>;
}

/// Whether a lock's bound process is alive (`Some(true)`) or proven gone
/// (`Some(false)`), judged from `here`. `None` for a lock not bound to a
/// process, and for one held from another host, which only its lease can
/// end. A binding made on this host under an earlier boot id is dead: the
/// machine restarted since. On the same kernel its life file is proof either
/// way; its pid and start time only on the same host name too (another
/// container has another pid space). Never the pid alone.
pub fn bound_alive(lock: &HeldLock, here: &Machine, probe: &dyn ProcessProbe) -> Option<bool> {
    let bind = lock.bind.as_ref()?;
    let same_host = lock.holder.hostname == here.hostname;
    if lock.holder.boot_id != here.boot_id {
        return same_host.then_some(false);
    }
    if let Some(path) = &bind.life_file {
        match probe.life_file(path) {
            LifeFile::Held => return Some(true),
            LifeFile::Free => return Some(false),
            LifeFile::Unreadable => return None,
            LifeFile::Missing => {}
        }
    }
    if !same_host {
        return None;
    }
    probe.process(bind.pid, bind.start)
}

/// Queue order: higher priority first, then first come first served.
/// Each side is `(priority, arrival sequence)`.
pub fn queue_order(a: (i32, i64), b: (i32, i64)) -> Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(&b.1))
}

/// True when `other` is served before `me` in the queue.
pub fn is_ahead(other: (i32, i64), me: (i32, i64)) -> bool {
    queue_order(other, me) == Ordering::Less
}

/// Searches the waits-for graph from `start` for a path back to `start`.
///
/// `edges(owner)` lists the owners that `owner` currently waits for. Returns
/// the cycle as owners, `start` first and last (`a → b → a`). Self-edges are
/// ignored: an owner name may be shared by independent workers, and one of
/// them releasing frees the other.
pub fn find_cycle(start: &str, mut edges: impl FnMut(&str) -> Vec<String>) -> Option<Vec<String>> {
    let mut parent: HashMap<String, String> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::from([start.to_string()]);
    let mut stack = vec![start.to_string()];
    while let Some(node) = stack.pop() {
        for next in edges(&node) {
            if next == node {
                continue;
            }
            if next == start {
                let mut path = vec![node.clone()];
                let mut cur = node;
                while let Some(p) = parent.get(&cur) {
                    path.push(p.clone());
                    cur = p.clone();
                }
                path.reverse();
                path.push(start.to_string());
                return Some(path);
            }
            if seen.insert(next.clone()) {
                parent.insert(next.clone(), node.clone());
                stack.push(next);
            }
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests;
