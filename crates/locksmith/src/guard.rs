//! A held lock: renewed in the background, released on drop, and loud when
//! it is lost.

use std::sync::Arc;

use locksmith_core::store::{Proof, Release, Target};
use locksmith_core::{Fence, Grant, Key, LeaseHandle, ReleaseReason, Store, StoreError};
use tokio::sync::watch;

use crate::renewer::{Renewer, State};

/// A granted lock (or set of locks). Dropping it releases them.
pub struct Guard {
    store: Arc<dyn Store>,
    grant: Grant,
    state: watch::Receiver<State>,
    renewer: Arc<Renewer>,
    renewal: Option<u64>,
    released: bool,
}

impl Guard {
    /// Takes charge of a grant made through the store directly: renews it
    /// in the background (when it has a lease) and releases it on drop.
    pub fn start(store: Arc<dyn Store>, grant: Grant) -> Guard {
        let renewer = Renewer::spawn(store.clone());
        Guard::with_renewer(store, grant, renewer)
    }

    pub(crate) fn with_renewer(
        store: Arc<dyn Store>,
        grant: Grant,
        renewer: Arc<Renewer>,
    ) -> Guard {
        let (tx, rx) = watch::channel(State::Held);
        let renewal = grant.ttl.map(|ttl| renewer.add(target(&grant), ttl, tx));
        Guard {
            store,
            grant,
            state: rx,
            renewer,
            renewal,
            released: false,
        }
    }

    /// Why the last background renewal failed, while renewals fail (the
    /// store unreachable, a full disk): the lock is still held until its
    /// lease runs out, and [`Guard::lost`] says when that happens.
    pub fn renew_error(&self) -> Option<String> {
        self.renewal.and_then(|id| self.renewer.failing(id))
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
        matches!(*self.state.borrow(), State::Lost(Some(r)) if r.by_holder())
    }

    /// True once a renewal found the lock gone, or when nine tenths of the
    /// lease have passed since the last good renewal on this process's own
    /// clock: the client's deadline runs out before the store's, so a stuck
    /// renewal (a store that does not answer) is never taken for "held".
    pub fn is_lost(&self) -> bool {
        if matches!(*self.state.borrow(), State::Lost(_)) {
            return true;
        }
        match (self.renewal, self.grant.ttl) {
            (Some(id), Some(ttl)) => self
                .renewer
                .last_good(id)
                .is_none_or(|t| t.elapsed() >= ttl * 9 / 10),
            _ => false,
        }
    }
    /// Resolves when the lock is lost, with the reason when the store knows it,
    /// or with `lease_expired` when the client's own deadline passes (as in
    /// [`Guard::is_lost`]). Never resolves while the lock is held. Needs a
    /// Tokio runtime with its timer enabled (the default of `#[tokio::main]`).
    pub async fn lost(&self) -> Option<ReleaseReason> {
        let mut rx = self.state.clone();
        loop {
            if let State::Lost(r) = &*rx.borrow_and_update() {
                return *r;
            }
            if self.is_lost() {
                return Some(ReleaseReason::LeaseExpired);
            }
            let deadline = match (self.renewal, self.grant.ttl) {
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
        if let Some(id) = self.renewal.take() {
            self.renewer.remove(id);
        }
        self.released = true;
        self.grant.clone()
    }

    fn finish(&mut self, reason: ReleaseReason) -> Result<Release, StoreError> {
        if let Some(id) = self.renewal.take() {
            self.renewer.remove(id);
        }
        self.released = true;
        self.store.release_grant(&target(&self.grant), reason)
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
