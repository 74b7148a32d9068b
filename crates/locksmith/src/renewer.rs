//! One background thread per client renews the leases of all its guards,
//! each at a third of its lease, and reports a lock lost when a renewal
//! says so or when the lease could have run out since the last good one
//! (measured on this process's monotonic clock).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use locksmith_core::store::{Renewal, Target};
use locksmith_core::{ReleaseReason, Store};
use tokio::sync::watch;

/// What a guard's renewal reports.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum State {
    Held,
    Lost(Option<ReleaseReason>),
}

struct Entry {
    target: Target,
    ttl: Duration,
    last_good: Instant,
    state: watch::Sender<State>,
}

enum Command {
    Add(u64, Entry),
    Remove(u64),
}

/// The handle guards use to register with the renewal thread.
pub(crate) struct Renewer {
    commands: mpsc::Sender<Command>,
    next_id: AtomicU64,
}

impl Renewer {
    /// Starts the thread; it ends when the last handle is dropped.
    pub(crate) fn spawn(store: Arc<dyn Store>) -> Arc<Renewer> {
        let (commands, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("locksmith-renew".into())
            .spawn(move || run(&*store, &incoming))
            .expect("cannot start the lease renewal thread");
        Arc::new(Renewer {
            commands,
            next_id: AtomicU64::new(1),
        })
    }

    /// Renews `target` every `ttl / 3` until removed; returns its id.
    pub(crate) fn add(&self, target: Target, ttl: Duration, state: watch::Sender<State>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            target,
            ttl,
            last_good: Instant::now(),
            state,
        };
        let _ = self.commands.send(Command::Add(id, entry));
        id
    }

    /// Stops renewing `id`.
    pub(crate) fn remove(&self, id: u64) {
        let _ = self.commands.send(Command::Remove(id));
    }
}

fn every(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(30))
}

fn run(store: &dyn Store, incoming: &mpsc::Receiver<Command>) {
    let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut entries: HashMap<u64, Entry> = HashMap::new();
    loop {
        let wait = due
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        match incoming.recv_timeout(wait) {
            Ok(Command::Add(id, e)) => {
                due.push(Reverse((Instant::now() + every(e.ttl), id)));
                entries.insert(id, e);
            }
            Ok(Command::Remove(id)) => {
                entries.remove(&id);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while let Some(Reverse((at, id))) = due.peek().copied() {
            if at > Instant::now() {
                break;
            }
            due.pop();
            let Some(e) = entries.get_mut(&id) else {
                continue;
            };
            if renew(store, e) {
                due.push(Reverse((Instant::now() + every(e.ttl), id)));
            } else {
                entries.remove(&id);
            }
        }
    }
}

/// One renewal; false once the lock is lost.
fn renew(store: &dyn Store, e: &mut Entry) -> bool {
    // The client's own deadline: after a pause (SIGSTOP, a suspended VM) the
    // lease may have run out on the store's clock; say so before anything
    // else is done under a lock that may now belong to another.
    if e.last_good.elapsed() >= e.ttl {
        let _ = e.state.send(State::Lost(Some(ReleaseReason::LeaseExpired)));
        if let Ok(Renewal::Lost { reason, .. }) = store.renew(&e.target, None) {
            let _ = e.state.send(State::Lost(reason));
        }
        return false;
    }
    let started = Instant::now();
    match store.renew(&e.target, None) {
        Ok(Renewal::Renewed { .. }) => {
            e.last_good = started;
            true
        }
        Ok(Renewal::Lost { reason, .. }) => {
            let _ = e.state.send(State::Lost(reason));
            false
        }
        // A failed renewal is retried at the next turn; the deadline above
        // decides when it is too late.
        Err(_) => true,
    }
}
