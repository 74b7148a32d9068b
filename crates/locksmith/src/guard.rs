//! A held lock: renewed in the background, released on drop, and loud when
//! it is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use locksmith_core::store::{Proof, Release, Renewal, Target};
use locksmith_core::{Fence, Grant, Key, LeaseHandle, ReleaseReason, Store, StoreError};
use tokio::sync::watch;

use crate::renewer::{Renewer, State};

/// A granted lock (or set of locks). Dropping it releases them.
pub struct Guard {
    store: Arc<dyn Store>,
    grant: Grant,
    watch: LostWatch,
    /// The sender of a grant without a lease (the renewal thread holds the
    /// others').
    unrenewed: Option<watch::Sender<State>>,
    /// The renewal of a leased grant, until the guard stops it (the
    /// renewal thread is the watch's).
    renewal: Option<u64>,
    released: bool,
}

/// Tells, apart from the guard, when its lock is lost: for a front end
/// that waits for the loss on a thread or task of its own while the guard
/// is used elsewhere. Cheap to clone. Once the guard is released (or
/// dropped) the watch reports that too, with the holder's reason
/// (`completed`, `failed` or `exited`: see [`ReleaseReason::by_holder`]).
#[derive(Clone)]
pub struct LostWatch {
    state: watch::Receiver<State>,
    renewer: Arc<Renewer>,
    renewal: Option<u64>,
    ttl: Option<Duration>,
}

impl Guard {
    /// Takes charge of a grant made through the store directly: renews it
    /// in the background (when it has a lease) and releases it on drop.
    /// Without the store's notifier it learns of a loss at its next
    /// renewal; [`crate::Client::adopt`] learns at once where the store
    /// tells holders.
    pub fn start(store: Arc<dyn Store>, grant: Grant) -> Guard {
        let renewer = Renewer::spawn(store.clone(), None);
        Guard::with_renewer(store, grant, renewer)
    }

    pub(crate) fn with_renewer(
        store: Arc<dyn Store>,
        grant: Grant,
        renewer: Arc<Renewer>,
    ) -> Guard {
        let (tx, rx) = watch::channel(State::Held);
        let (renewal, unrenewed) = match grant.ttl {
            Some(ttl) => (Some(renewer.add(target(&grant), ttl, tx)), None),
            None => (None, Some(tx)),
        };
        Guard {
            store,
            watch: LostWatch {
                state: rx,
                renewer,
                renewal,
                ttl: grant.ttl,
            },
            grant,
            unrenewed,
            renewal,
            released: false,
        }
    }

    /// A watch on the loss of this guard's lock, usable apart from it.
    pub fn watch(&self) -> LostWatch {
        self.watch.clone()
    }

    /// Renews every lock of the guard now (the background renewal goes on
    /// as well). On `Renewed` the guard's deadlines move; on `Lost` the
    /// guard reports the loss like a failed background renewal.
    pub fn renew(&mut self) -> Result<Renewal, StoreError> {
        let started = Instant::now();
        let answer = self.store.renew(&target(&self.grant), None)?;
        match &answer {
            Renewal::Renewed { locks } => {
                if let Some(id) = self.renewal {
                    self.watch.renewer.renewed(id, started);
                }
                for mine in &mut self.grant.locks {
                    if let Some(new) = locks.iter().find(|l| l.key == mine.key) {
                        mine.expires_at = new.expires_at;
                    }
                }
            }
            Renewal::Lost { reason, .. } => self.stop(Some(State::Lost(*reason))),
        }
        Ok(answer)
    }

    /// Stops the renewals, telling the watchers `last` when given.
    fn stop(&mut self, last: Option<State>) {
        if let Some(id) = self.renewal.take() {
            self.watch.renewer.remove(id, last);
        } else if let (Some(tx), Some(state)) = (&self.unrenewed, last) {
            let _ = tx.send(state);
        }
    }

    /// Why the last background renewal failed, while renewals fail (the
    /// store unreachable, a full disk): the lock is still held until its
    /// lease runs out, and [`Guard::lost`] says when that happens.
    pub fn renew_error(&self) -> Option<String> {
        self.renewal.and_then(|id| self.watch.renewer.failing(id))
    }

    /// Fencing token of the first key.
    pub fn fence(&self) -> Fence {
        self.grant.locks[0].fence
    }
    /// Every key with its fence, in request order.
    pub fn fences(&self) -> Vec<(Key, Fence)> {
        self.grant
            .locks
            .iter()
            .map(|l| (l.key.clone(), l.fence))
            .collect()
    }
    /// The lease handle (a secret: do not log it).
    pub fn handle(&self) -> &LeaseHandle {
        &self.grant.handle
    }
    /// The grant as the store answered it.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }
    /// True when the lock was released through its handle by someone who
    /// had it (its reason is `completed` or `failed`): given up, not lost.
    /// `locksmith run` uses this for a command that released its own lock.
    pub fn given_up(&self) -> bool {
        self.watch.given_up()
    }

    /// True once a renewal found the lock gone, or when nine tenths of the
    /// lease have passed since the last good renewal on this process's own
    /// clock: the client's deadline runs out before the store's, so a stuck
    /// renewal (a store that does not answer) is never taken for "held".
    pub fn is_lost(&self) -> bool {
        self.watch.is_lost()
    }
    /// Why the lock was lost, once [`Guard::is_lost`]: the store's reason
    /// when it gave one (`forced`, `stolen`, …), else `lease_expired` (the
    /// client's own deadline passed, or the history no longer knows).
    pub fn lost_reason(&self) -> Option<ReleaseReason> {
        self.watch.lost_reason()
    }
    /// Resolves when the lock is lost, with the reason when the store knows it,
    /// or with `lease_expired` when the client's own deadline passes (as in
    /// [`Guard::is_lost`]). Never resolves while the lock is held. Needs a
    /// Tokio runtime with its timer enabled (the default of `#[tokio::main]`).
    pub async fn lost(&self) -> Option<ReleaseReason> {
        self.watch.lost().await
    }

    /// Releases with reason `completed` and reports what happened: `NotHeld`
    /// (with the reason) when any key had been lost meanwhile.
    pub fn release(mut self) -> Result<Release, StoreError> {
        self.finish(ReleaseReason::Completed)
    }
    /// Releases with reason `failed`.
    pub fn release_failed(mut self) -> Result<Release, StoreError> {
        self.finish(ReleaseReason::Failed)
    }
    /// Releases with reason `exited`: for a front end that held the lock
    /// for a session that ended without releasing it.
    pub fn release_exited(mut self) -> Result<Release, StoreError> {
        self.finish(ReleaseReason::Exited)
    }

    /// Stops renewing without releasing, for a grant the store has ended
    /// already (lost): dropping the guard would send a release for nothing.
    pub fn disarm(mut self) -> Grant {
        self.stop(None);
        self.released = true;
        self.grant.clone()
    }

    fn finish(&mut self, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.stop(Some(State::Lost(Some(reason))));
        self.released = true;
        self.store.release_grant(&target(&self.grant), reason)
    }
}

impl LostWatch {
    /// As [`Guard::given_up`].
    pub fn given_up(&self) -> bool {
        matches!(*self.state.borrow(), State::Lost(Some(r)) if r.by_holder())
    }

    /// As [`Guard::is_lost`]; also true once the guard was released.
    pub fn is_lost(&self) -> bool {
        if matches!(*self.state.borrow(), State::Lost(_)) {
            return true;
        }
        match (self.renewal, self.ttl) {
            (Some(id), Some(ttl)) => self
                .renewer
                .last_good(id)
                .is_none_or(|t| t.elapsed() >= ttl * 9 / 10),
            _ => false,
        }
    }

    /// As [`Guard::lost_reason`]; the holder's own reason once released.
    pub fn lost_reason(&self) -> Option<ReleaseReason> {
        match *self.state.borrow() {
            State::Lost(r) => Some(r.unwrap_or(ReleaseReason::LeaseExpired)),
            State::Held => self.is_lost().then_some(ReleaseReason::LeaseExpired),
        }
    }

    /// As [`Guard::lost`]; also resolves once the guard was released, with
    /// the holder's reason.
    pub async fn lost(&self) -> Option<ReleaseReason> {
        let mut rx = self.state.clone();
        loop {
            if let State::Lost(r) = &*rx.borrow_and_update() {
                return *r;
            }
            if self.is_lost() {
                return Some(ReleaseReason::LeaseExpired);
            }
            let deadline = match (self.renewal, self.ttl) {
                (Some(id), Some(ttl)) => self.renewer.last_good(id).map(|t| t + ttl * 9 / 10),
                _ => None,
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        changed = rx.changed() => {
                            if changed.is_err() {
                                tokio::time::sleep_until(at.into()).await;
                            }
                        }
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.finish(ReleaseReason::Completed);
        }
    }
}

fn target(grant: &Grant) -> Target {
    Target {
        key: grant.locks[0].key.clone(),
        by: Proof::Handle(grant.handle.clone()),
    }
}
