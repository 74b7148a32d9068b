//! The conformance cases: what every store must do, written against
//! `&dyn Store` only. Each case takes a factory and builds its own fresh
//! store; time moves only through the harness's [`ManualClock`](locksmith_core::ManualClock).

use std::time::Duration;

use locksmith_core::Clock;
use locksmith_core::decide::REFRESH;
use locksmith_core::store::{HistoryFilter, LeaveReason, ListFilter, Release, Renewal};
use locksmith_core::{
    AcquireRequest, Attempt, EventKind, Health, Mode, ReleaseReason, Scope, StoreError, Takeover,
};
use serde_json::json;

use crate::{Factory, Harness, by_handle, by_owner, key, request, secs};

const SHARED: Mode = Mode::Shared;

fn shared(owner: &str, keys: &[&str]) -> AcquireRequest {
    AcquireRequest {
        mode: SHARED,
        ..request(owner, keys)
    }
}

fn sem(owner: &str, k: &str, limit: u32) -> AcquireRequest {
    AcquireRequest {
        mode: Mode::Semaphore { limit },
        ..request(owner, &[k])
    }
}

fn tree(owner: &str, k: &str) -> AcquireRequest {
    AcquireRequest {
        scope: Scope::Tree,
        ..request(owner, &[k])
    }
}

fn leased(owner: &str, k: &str, ttl: Duration) -> AcquireRequest {
    AcquireRequest {
        ttl: Some(ttl),
        ..request(owner, &[k])
    }
}

fn fence(g: &locksmith_core::Grant) -> u64 {
    g.locks[0].fence.0
}

fn owners(b: &locksmith_core::Blocked) -> Vec<String> {
    let mut o: Vec<String> = b.holders.iter().map(|h| h.owner.clone()).collect();
    o.sort();
    o
}

/// Ending events (those with a reason) of `key`, as `(kind, reason, fence)`.
fn endings(h: &Harness, k: &str) -> Vec<(EventKind, ReleaseReason, Option<u64>)> {
    h.history_of(k)
        .into_iter()
        .filter_map(|e| e.reason.map(|r| (e.kind, r, e.fence.map(|f| f.0))))
        .collect()
}

fn released(r: Result<Release, StoreError>) -> (String, u64, Duration) {
    match r {
        Ok(Release::Released {
            key,
            fence,
            held_for,
        }) => (key.to_string(), fence.0, held_for),
        other => panic!("expected Released, got {other:?}"),
    }
}

fn renewed(r: Result<Renewal, StoreError>) -> Vec<locksmith_core::GrantedLock> {
    match r {
        Ok(Renewal::Renewed { locks }) => locks,
        other => panic!("expected Renewed, got {other:?}"),
    }
}

fn lost(r: Result<Renewal, StoreError>) -> Option<ReleaseReason> {
    match r {
        Ok(Renewal::Lost { reason, .. }) => reason,
        other => panic!("expected Lost, got {other:?}"),
    }
}

mod modes;
mod queue;
mod takeover;
mod tenure;
mod views;

pub use modes::*;
pub use queue::*;
pub use takeover::*;
pub use tenure::*;
pub use views::*;
