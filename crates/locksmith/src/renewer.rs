//! One background thread per client renews the leases of all its guards,
//! each at a third of its lease, and reports a lock lost when a renewal
//! says so or when the lease could have run out since the last good one
//! (measured on this process's monotonic clock).
//!
//! Guards register and leave through a shared table; the thread is woken
//! only when a new lease is due before the time it already sleeps to, so
//! taking and dropping guards costs no thread switch.
//!
//! A store that can tell holders when it ends their locks (forced, stolen,
//! swept) tells this process at its holder address. One listener per store
//! address and process (the address is the process's, not the client's)
//! makes every renewal thread of that store renew at once, so a loss is
//! known within milliseconds instead of at the next renewal.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use locksmith_core::store::{Renewal, Target};
use locksmith_core::{ReleaseReason, Store};
use locksmith_host::wake::Inbox;
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
    /// When it is renewed next: a slot of the schedule with another time
    /// was replaced (by a renewal brought forward) and is skipped.
    next: Instant,
    /// Told while its renewal was under way: that renewal may have been
    /// answered before the store ended the lock, so another follows at once.
    told: bool,
    last_good: Instant,
    /// Why the last renewal failed, while renewals fail.
    failing: Option<String>,
    state: watch::Sender<State>,
}

#[derive(Default)]
struct Table {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: HashMap<u64, Entry>,
    /// When the thread wakes next by itself; `None` while it has nothing due.
    sleeps_until: Option<Instant>,
    next_id: u64,
    closed: bool,
    /// When the store last told this process that it ended a lock: a
    /// guard added soon after renews at once (the message may have been
    /// about its grant, before the guard was there to be renewed).
    last_told: Option<Instant>,
}

struct Shared {
    table: Mutex<Table>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings every renewal forward to now: the store said it ended a lock
    /// of this process, and only a renewal tells which one and why.
    fn renew_all_now(&self) {
        let mut t = self.lock();
        let now = Instant::now();
        t.last_told = Some(now);
        let Table { due, entries, .. } = &mut *t;
        for (id, e) in entries.iter_mut() {
            e.told = true;
            if e.next > now {
                e.next = now;
                due.push(Reverse((now, *id)));
            }
        }
        // Each renewal brought forward leaves its old slot behind until its
        // time; keep the schedule to about one slot per guard.
        if due.len() > 2 * entries.len() + 16 {
            *due = entries
                .iter()
                .map(|(id, e)| Reverse((e.next, *id)))
                .collect();
        }
        self.changed.notify_one();
    }
}

/// The renewal threads of one holder address in this process.
type Told = Arc<Mutex<Vec<Weak<Shared>>>>;

/// Listeners by holder address: one per store and process.
static LISTENERS: OnceLock<Mutex<HashMap<String, (Inbox, Told)>>> = OnceLock::new();

fn listeners() -> MutexGuard<'static, HashMap<String, (Inbox, Told)>> {
    LISTENERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Adds `shared` to the renewals told at `address`, listening there first
/// if no one in this process does; false when the address cannot be
/// listened at (the renewals keep their own schedule).
fn listen(address: &str, shared: &Arc<Shared>) -> bool {
    let mut all = listeners();
    if let Some((_, told)) = all.get(address) {
        told.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(shared));
        return true;
    }
    let told: Told = Arc::new(Mutex::new(vec![Arc::downgrade(shared)]));
    let renewals = told.clone();
    let inbox = Inbox::listen(address, move || {
        let live: Vec<Arc<Shared>> = renewals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for s in live {
            s.renew_all_now();
        }
    });
    match inbox {
        Ok(inbox) => {
            all.insert(address.to_string(), (inbox, told));
            true
        }
        Err(_) => false,
    }
}

/// Removes `shared` from the renewals told at `address`; the last one out
/// stops the listener (under the lock of [`LISTENERS`], so that a new one
/// can bind the address as soon as it is free).
fn unlisten(address: &str, shared: &Arc<Shared>) {
    let mut all = listeners();
    let empty = match all.get(address) {
        Some((_, told)) => {
            let mut told = told.lock().unwrap_or_else(|p| p.into_inner());
            told.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(shared)));
            told.is_empty()
        }
        None => false,
    };
    if empty {
        // Dropping the inbox joins its thread, which takes no lock of ours.
        all.remove(address);
    }
}

/// The handle guards use to register with the renewal thread; the thread
/// ends when the last handle is dropped.
pub(crate) struct Renewer {
    shared: Arc<Shared>,
    /// The holder address it is told at, while listened at.
    told_at: Option<String>,
}

impl Renewer {
    /// Starts the thread; when the store tells holders at `told_at`, the
    /// renewals are brought forward whenever it does.
    pub(crate) fn spawn(store: Arc<dyn Store>, told_at: Option<String>) -> Arc<Renewer> {
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::default()),
            changed: Condvar::new(),
        });
        let thread_shared = shared.clone();
        // The thread does not keep the store open: its guards do. When the
        // last of them is gone, the store closes at once (a command's store
        // is then closed before it exits, not whenever this thread ends).
        let store = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("locksmith-renew".into())
            .spawn(move || run(&store, &thread_shared))
            .expect("cannot start the lease renewal thread");
        let told_at = told_at.filter(|a| listen(a, &shared));
        Arc::new(Renewer { shared, told_at })
    }

    /// Renews `target` every `ttl / 3` until removed; returns its id.
    pub(crate) fn add(&self, target: Target, ttl: Duration, state: watch::Sender<State>) -> u64 {
        let mut t = self.shared.lock();
        t.next_id += 1;
        let id = t.next_id;
        let recently_told = t
            .last_told
            .is_some_and(|told| told.elapsed() < Duration::from_secs(1));
        let at = Instant::now()
            + if recently_told {
                Duration::ZERO
            } else {
                every(ttl)
            };
        t.due.push(Reverse((at, id)));
        let last_good = Instant::now();
        t.entries.insert(
            id,
            Entry {
                target,
                ttl,
                next: at,
                told: false,
                last_good,
                failing: None,
                state,
            },
        );
        if t.sleeps_until.is_none_or(|s| at < s) {
            self.shared.changed.notify_one();
        }
        id
    }

    /// When the lease of `id` was last renewed (or granted), while renewed.
    pub(crate) fn last_good(&self, id: u64) -> Option<Instant> {
        self.shared.lock().entries.get(&id).map(|e| e.last_good)
    }

    /// Why the last renewal of `id` failed, while its renewals fail.
    pub(crate) fn failing(&self, id: u64) -> Option<String> {
        self.shared
            .lock()
            .entries
            .get(&id)
            .and_then(|e| e.failing.clone())
    }

    /// Stops renewing `id` (its slot in the schedule is skipped when due),
    /// telling its watchers `last` first when given.
    pub(crate) fn remove(&self, id: u64, last: Option<State>) {
        if let Some(e) = self.shared.lock().entries.remove(&id)
            && let Some(state) = last
        {
            let _ = e.state.send(state);
        }
    }

    /// Records a renewal made outside the thread (a guard's own `renew`).
    pub(crate) fn renewed(&self, id: u64, at: Instant) {
        if let Some(e) = self.shared.lock().entries.get_mut(&id) {
            e.last_good = e.last_good.max(at);
            e.failing = None;
        }
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        if let Some(address) = &self.told_at {
            unlisten(address, &self.shared);
        }
        self.shared.lock().closed = true;
        self.shared.changed.notify_one();
    }
}

fn every(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(30))
}

fn run(store: &Weak<dyn Store>, shared: &Shared) {
    let mut t = shared.lock();
    loop {
        if t.closed {
            return;
        }
        let now = Instant::now();
        let mut work = Vec::new();
        while let Some(Reverse((at, id))) = t.due.peek().copied() {
            if at > now {
                break;
            }
            t.due.pop();
            if let Some(e) = t.entries.get_mut(&id)
                && e.next == at
            {
                e.told = false;
                work.push((id, e.target.clone(), e.ttl, e.last_good, e.state.clone()));
            }
        }
        if !work.is_empty() {
            // Renew without holding the table: guards come and go meanwhile.
            drop(t);
            let Some(store) = store.upgrade() else {
                return;
            };
            let outcomes: Vec<_> = work
                .into_iter()
                .map(|(id, target, ttl, last_good, state)| {
                    (id, ttl, renew(&*store, &target, ttl, last_good, &state))
                })
                .collect();
            drop(store);
            t = shared.lock();
            for (id, ttl, outcome) in outcomes {
                let Table { due, entries, .. } = &mut *t;
                match outcome {
                    Some((good, failing)) => {
                        if let Some(e) = entries.get_mut(&id) {
                            e.last_good = good;
                            e.failing = failing;
                            // Told meanwhile: this answer may predate the loss.
                            let wait = if e.told { Duration::ZERO } else { every(ttl) };
                            e.next = Instant::now() + wait;
                            due.push(Reverse((e.next, id)));
                        }
                    }
                    None => {
                        entries.remove(&id);
                    }
                }
            }
            continue;
        }
        t.sleeps_until = t.due.peek().map(|Reverse((at, _))| *at);
        t = match t.sleeps_until {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                shared
                    .changed
                    .wait_timeout(t, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => shared.changed.wait(t).unwrap_or_else(|p| p.into_inner()),
        };
        t.sleeps_until = None;
    }
}

/// One renewal: `Some((time of the last good renewal, why it failed if it
/// did))` while held, `None` once the lock is lost.
fn renew(
    store: &dyn Store,
    target: &Target,
    ttl: Duration,
    last_good: Instant,
    state: &watch::Sender<State>,
) -> Option<(Instant, Option<String>)> {
    // The client's own deadline: after a pause (SIGSTOP, a suspended VM) the
    // lease may have run out on the store's clock; say so before anything
    // else is done under a lock that may now belong to another.
    if last_good.elapsed() >= ttl {
        let _ = state.send(State::Lost(Some(ReleaseReason::LeaseExpired)));
        if let Ok(Renewal::Lost { reason, .. }) = store.renew(target, None) {
            let _ = state.send(State::Lost(reason));
        }
        return None;
    }
    let started = Instant::now();
    match store.renew(target, None) {
        Ok(Renewal::Renewed { .. }) => Some((started, None)),
        Ok(Renewal::Lost { reason, .. }) => {
            let _ = state.send(State::Lost(reason));
            None
        }
        // A failed renewal is retried at the next turn; the deadline above
        // decides when it is too late.
        Err(e) => Some((last_good, Some(e.to_string()))),
    }
}
