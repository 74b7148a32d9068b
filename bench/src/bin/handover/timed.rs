//! A store wrapper that notes when an attempt starts and when a waiter is woken.

use super::*;

/// A store that notes when each acquire attempt starts and when a waiter
/// was last woken, so the core variant can split a hand-over into its steps.
pub(super) struct Timed {
    pub(super) inner: Arc<locksmith_sqlite::SqliteStore>,
    pub(super) attempt: Arc<AtomicU64>,
}

/// The notifier of [`Timed`]: its wake sources note when a wait ends by a wake-up.
pub(super) struct TimedNotifier {
    pub(super) inner: locksmith_sqlite::SqliteNotifier,
    pub(super) woke: Arc<AtomicU64>,
}

impl Notifier for TimedNotifier {
    fn wake_source(&self) -> Result<Box<dyn WakeSource>, StoreError> {
        Ok(Box::new(TimedWake {
            inner: self.inner.wake_source()?,
            woke: self.woke.clone(),
        }))
    }
}

/// The wake source of [`Timed`]: notes the time a wait ends by a wake-up.
pub(super) struct TimedWake {
    pub(super) inner: Box<dyn WakeSource>,
    pub(super) woke: Arc<AtomicU64>,
}

impl WakeSource for TimedWake {
    fn address(&self) -> &str {
        self.inner.address()
    }
    fn wait(&mut self, timeout: Duration) -> bool {
        let woken = self.inner.wait(timeout);
        if woken {
            self.woke.store(mono_ns(), Ordering::Relaxed);
        }
        woken
    }
    fn watch(&mut self, targets: &[String]) {
        self.inner.watch(targets)
    }
    fn message(&mut self) -> Option<String> {
        self.inner.message()
    }
}

impl Store for Timed {
    fn acquire(
        &self,
        req: &AcquireRequest,
        queue: Option<&mut Ticket>,
    ) -> Result<Attempt, StoreError> {
        self.attempt.store(mono_ns(), Ordering::Relaxed);
        self.inner.acquire(req, queue)
    }
    fn leave_queue(&self, ticket: &Ticket, why: LeaveReason) -> Result<(), StoreError> {
        self.inner.leave_queue(ticket, why)
    }
    fn renew(&self, target: &Target, ttl: Option<Duration>) -> Result<Renewal, StoreError> {
        self.inner.renew(target, ttl)
    }
    fn release(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.inner.release(target, reason)
    }
    fn release_grant(&self, target: &Target, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.inner.release_grant(target, reason)
    }
    fn force_release_seen(
        &self,
        key: &Key,
        why: &str,
        by: Option<&str>,
        seen: Option<locksmith_core::Fence>,
    ) -> Result<Vec<LockInfo>, StoreError> {
        self.inner.force_release_seen(key, why, by, seen)
    }
    fn status(&self, key: &Key) -> Result<KeyStatus, StoreError> {
        self.inner.status(key)
    }
    fn list(&self, filter: &ListFilter) -> Result<Vec<LockInfo>, StoreError> {
        self.inner.list(filter)
    }
    fn waiters(&self, filter: &ListFilter) -> Result<Vec<WaiterInfo>, StoreError> {
        self.inner.waiters(filter)
    }
    fn history(&self, filter: &HistoryFilter) -> Result<Vec<Event>, StoreError> {
        self.inner.history(filter)
    }
    fn stats(&self) -> Result<Stats, StoreError> {
        self.inner.stats()
    }
    fn reap(&self, batch: &[Reap]) -> Result<Vec<bool>, StoreError> {
        self.inner.reap(batch)
    }
}
