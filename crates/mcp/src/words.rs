//! Short sentences about locks, written for a model to act on.

use locksmith_core::store::{Blocked, KeyStatus, LockInfo, WaiterInfo};
use locksmith_core::time::format_duration;
use locksmith_core::{Health, Scope};

pub use locksmith_core::view::ordinal;

/// "agent-3 (task 42) for 12m, lease 3m left" (or "you", for the session's own).
pub fn holder(l: &LockInfo, mine: bool) -> String {
    let who = if mine {
        format!("you ({})", l.owner)
    } else {
        l.owner.clone()
    };
    let task = l
        .task
        .as_ref()
        .map(|t| format!(" for task {t}"))
        .unwrap_or_default();
    let lease = match l.expires_in {
        Some(left) => format!(", lease {} left", format_duration(left)),
        None => ", no lease".to_string(),
    };
    let health = match l.health {
        Health::Healthy => String::new(),
        Health::Stale => format!(
            "; STALE (no sign of life for {}): strategy steal-stale can take it",
            format_duration(l.since_seen)
        ),
        Health::Dead => "; its process is DEAD: the next acquire frees it".to_string(),
        Health::Expired => "; its lease EXPIRED: the next acquire frees it".to_string(),
    };
    let tree = if l.scope == Scope::Tree {
        format!(" (tree lock on {})", l.key)
    } else {
        String::new()
    };
    format!(
        "{who}{task}{tree} for {}{lease}{health}",
        format_duration(l.held_for)
    )
}

/// What stands in the way of a request.
pub fn blocked(b: &Blocked, mine: &[i64]) -> String {
    let mut s = match b.holders.as_slice() {
        [] => format!("{} earlier waiter(s) are ahead", b.waiters_ahead),
        [h] => format!("held by {}", holder(h, mine.contains(&h.grant))),
        [h, rest @ ..] => format!(
            "held by {} and {} more",
            holder(h, mine.contains(&h.grant)),
            rest.len()
        ),
    };
    if let Some(p) = b.position {
        s.push_str(&format!("; you are {} in the queue", ordinal(p)));
    }
    s
}

/// One key's status in a sentence.
pub fn status(st: &KeyStatus, mine: &[i64]) -> String {
    let mut s = if st.free {
        format!("{} is free", st.key)
    } else {
        let hs: Vec<String> = st
            .holders
            .iter()
            .map(|h| holder(h, mine.contains(&h.grant)))
            .collect();
        format!("{} is held by {}", st.key, hs.join("; and by "))
    };
    if !st.waiters.is_empty() {
        s.push_str(&format!(
            "; {} waiting ({})",
            st.waiters.len(),
            waiters(&st.waiters)
        ));
    }
    s
}

/// "1st bob for task 7, 2nd carol".
pub fn waiters(ws: &[WaiterInfo]) -> String {
    ws.iter().take(5).map(waiter).collect::<Vec<_>>().join(", ")
}

/// "2nd bob for task 7".
pub fn waiter(w: &WaiterInfo) -> String {
    let task = w
        .task
        .as_ref()
        .map(|t| format!(" for task {t}"))
        .unwrap_or_default();
    format!("{} {}{task}", ordinal(w.position), w.owner)
}
