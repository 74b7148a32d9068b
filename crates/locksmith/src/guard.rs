//! A held lock: renewed in the background, released on drop, and loud when
//! it is lost.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use locksmith_core::store::{Proof, Release, Renewal, Target};
use locksmith_core::{Fence, Grant, Key, LeaseHandle, ReleaseReason, Store, StoreError};
use tokio::sync::watch;

/// What the renewal thread reports.
#[derive(Clone, Debug, PartialEq)]
enum State {
    Held,
    Lost(Option<ReleaseReason>),
}

/// A granted lock (or set of locks). Dropping it releases them.
pub struct Guard {
    store: Arc<dyn Store>,
    grant: Grant,
    state: watch::Receiver<State>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
    released: bool,
}

impl Guard {
    /// Takes charge of a grant made through the store directly: renews it
    /// in the background (when it has a lease) and releases it on drop.
    pub fn start(store: Arc<dyn Store>, grant: Grant) -> Guard {
        let (tx, rx) = watch::channel(State::Held);
        let (stop, stopped) = mpsc::channel();
        let renewer = grant.ttl.map(|ttl| {
            let store = store.clone();
            let target = target(&grant);
            std::thread::Builder::new()
                .name("locksmith-renew".into())
                .spawn(move || renew_loop(&*store, &target, ttl, &stopped, &tx))
                .expect("cannot start the lease renewal thread")
        });
        Guard {
            store,
            grant,
            state: rx,
            stop: Some(stop),
            renewer,
            released: false,
        }
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
    /// True once a renewal found the lock gone or the lease ran out unrenewed.
    pub fn is_lost(&self) -> bool {
        matches!(*self.state.borrow(), State::Lost(_))
    }
    /// Resolves when the lock is lost, with the reason when the store knows it.
    /// Never resolves while the lock is held.
    pub async fn lost(&self) -> Option<ReleaseReason> {
        let mut rx = self.state.clone();
        loop {
            if let State::Lost(r) = &*rx.borrow_and_update() {
                return *r;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Releases with reason `completed` and reports what happened.
    pub fn release(mut self) -> Result<Release, StoreError> {
        self.finish(ReleaseReason::Completed)
    }
    /// Releases with reason `failed`.
    pub fn release_failed(mut self) -> Result<Release, StoreError> {
        self.finish(ReleaseReason::Failed)
    }

    fn finish(&mut self, reason: ReleaseReason) -> Result<Release, StoreError> {
        self.stop.take();
        if let Some(r) = self.renewer.take() {
            let _ = r.join();
        }
        self.released = true;
        let mut first = None;
        for lock in &self.grant.locks {
            let t = Target {
                key: lock.key.clone(),
                by: Proof::Handle(self.grant.handle.clone()),
            };
            let r = self.store.release(&t, reason)?;
            first.get_or_insert(r);
        }
        Ok(first.expect("a grant has at least one key"))
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

/// Renews at a third of the lease. A failed renewal is retried; once the
/// lease could have run out since the last good one (on this process's own
/// monotonic clock), the lock is reported lost.
fn renew_loop(
    store: &dyn Store,
    target: &Target,
    ttl: Duration,
    stopped: &mpsc::Receiver<()>,
    state: &watch::Sender<State>,
) {
    let every = (ttl / 3).max(Duration::from_millis(30));
    let mut last_good = Instant::now();
    loop {
        match stopped.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        // The client's own deadline: after a pause (SIGSTOP, a suspended VM)
        // the lease may have run out on the store's clock; say so before
        // anything else is done under a lock that may belong to another.
        if last_good.elapsed() >= ttl {
            let _ = state.send(State::Lost(Some(ReleaseReason::LeaseExpired)));
            if let Ok(Renewal::Lost { reason, .. }) = store.renew(target, None) {
                let _ = state.send(State::Lost(reason));
            }
            return;
        }
        let started = Instant::now();
        match store.renew(target, None) {
            Ok(Renewal::Renewed { .. }) => last_good = started,
            Ok(Renewal::Lost { reason, .. }) => {
                let _ = state.send(State::Lost(reason));
                return;
            }
            Err(_) if last_good.elapsed() >= ttl => {
                let _ = state.send(State::Lost(Some(ReleaseReason::LeaseExpired)));
                return;
            }
            Err(_) => {}
        }
    }
}
