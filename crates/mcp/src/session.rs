//! What one agent session holds and waits for.
//!
//! Held grants are renewed by the client's renewal thread (one for the
//! session) and released with `exited` when the session ends. A queued
//! request waits on a thread of its own, so that its place is kept (and
//! refreshed) between two tool calls; a call joins that wait for at most
//! [`Settings::call_wait`]. A place that no call comes back for within
//! [`Settings::keep_place`] is given up (`wait_cancelled`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use locksmith::Guard;
use locksmith::wait::{leave, wait_turn};
use locksmith_core::store::{AcquireError, LeaveReason, Proof, Release, Renewal, Target};
use locksmith_core::{AcquireRequest, Attempt, Blocked, Code, Grant, Key, ReleaseReason, Ticket};
use tokio::sync::watch;

/// How `locksmith mcp` serves its session.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Owner of every lock of the session; `None`: the client's name from
    /// the MCP handshake plus a session id (`claude-code#3f9a1c`).
    pub owner: Option<String>,
    /// The longest one tool call waits before it answers `waiting` (and
    /// keeps the place): below the tool-call timeouts of common clients.
    pub call_wait: Duration,
    /// Lease of the session's locks, renewed while the session lives.
    pub ttl: Duration,
    /// How long a queue place is kept for a call that has not come back.
    pub keep_place: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            owner: None,
            call_wait: Duration::from_secs(20),
            ttl: Duration::from_secs(60),
            keep_place: Duration::from_secs(60),
        }
    }
}

/// At most this many queued requests per session.
const MAX_WAITS: usize = 32;

/// A failure as the outcome table names it, in words for the model.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Its code.
    pub code: Code,
    /// What happened and what to do.
    pub message: String,
    /// What was in the way, for busy and timed-out answers.
    pub blocked: Option<Blocked>,
}

impl Outcome {
    /// An outcome without a blocker.
    pub fn new(code: Code, message: impl Into<String>) -> Outcome {
        Outcome {
            code,
            message: message.into(),
            blocked: None,
        }
    }
}

impl From<locksmith_core::StoreError> for Outcome {
    fn from(e: locksmith_core::StoreError) -> Outcome {
        Outcome::new(e.code(), e.to_string())
    }
}

impl From<locksmith_core::KeyError> for Outcome {
    fn from(e: locksmith_core::KeyError) -> Outcome {
        Outcome::new(Code::Invalid, e.to_string())
    }
}

/// A grant of this session.
pub struct Held {
    /// The grant as the store answered it.
    pub grant: Grant,
    /// Renews it and releases it on drop; `None` for a lock that outlives
    /// the session (only its lease or a release ends it).
    pub guard: Option<Guard>,
    /// The request id it was asked with.
    pub request_id: Option<String>,
}

impl Held {
    /// True when the grant has one of `keys` (every grant, for none).
    fn names_any(&self, keys: &[Key]) -> bool {
        keys.is_empty() || self.grant.locks.iter().any(|l| keys.contains(&l.key))
    }
}

/// Where a queued request stands.
#[derive(Clone, Debug)]
pub enum WaitState {
    /// Queued; what was in the way at the last attempt.
    Waiting(Option<Blocked>),
    /// Granted (and held by the session).
    Granted(Grant),
    /// Ended without a grant.
    Ended(Outcome),
}

/// What a queued request asks for, to tell a repeated request id from
/// another request: keys (in any order), mode, scope, and whether its
/// grant ends with the session.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    keys: Vec<Key>,
    mode: locksmith_core::Mode,
    scope: locksmith_core::Scope,
    /// The grant ends with the session.
    pub bound: bool,
}

impl Shape {
    /// The shape of `req`.
    pub fn of(req: &AcquireRequest, bound: bool) -> Shape {
        let mut keys = req.keys.clone();
        keys.sort();
        Shape {
            keys,
            mode: req.mode,
            scope: req.scope,
            bound,
        }
    }
}

/// A queued request of the session.
pub struct Pending {
    /// What it asks for.
    pub shape: Shape,
    /// Set once a call has answered its grant.
    pub collected: AtomicBool,
    /// Its state, for the calls that join the wait.
    pub state: watch::Sender<WaitState>,
    /// Set to give up the place.
    pub cancel: AtomicBool,
    /// When a call last asked about it (or when it finished).
    touched: Mutex<Instant>,
    /// Calls waiting on it now.
    callers: AtomicUsize,
    /// When the wait began.
    pub started: Instant,
    /// When the wait ends, if ever.
    pub deadline: Option<Instant>,
}

impl Pending {
    fn touch(&self) {
        *lock(&self.touched) = Instant::now();
    }
    fn idle(&self) -> Duration {
        lock(&self.touched).elapsed()
    }
}

/// A call waiting on a queued request; counted so that the watchdog never
/// gives up a place while a call is waiting on it.
pub struct Joined(pub Arc<Pending>);

impl Drop for Joined {
    fn drop(&mut self) {
        self.0.touch();
        self.0.callers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One agent session.
pub struct Session {
    /// The store, its wake-ups and the process binding.
    pub client: locksmith::Client,
    /// How the session is served.
    pub settings: Settings,
    /// Short random id of this session.
    pub id: String,
    owner: OnceLock<String>,
    held: Mutex<Vec<Held>>,
    waits: Mutex<HashMap<String, Arc<Pending>>>,
    ended: AtomicBool,
    next_request: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// A new session over `client`.
    pub fn new(client: locksmith::Client, settings: Settings) -> Session {
        Session {
            client,
            settings,
            id: locksmith::host::random_hex(3),
            owner: OnceLock::new(),
            held: Mutex::new(Vec::new()),
            waits: Mutex::new(HashMap::new()),
            ended: AtomicBool::new(false),
            next_request: AtomicU64::new(1),
        }
    }

    /// The owner of the session's locks, fixed at the first call: the
    /// configured owner, else `client#session`.
    pub fn owner(&self, client_name: Option<&str>) -> &str {
        self.owner.get_or_init(|| match &self.settings.owner {
            Some(o) => o.clone(),
            None => {
                let name: String = client_name
                    .unwrap_or("agent")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect();
                let name = if name.trim().is_empty() {
                    "agent"
                } else {
                    name.trim()
                };
                format!("{name}#{}", self.id)
            }
        })
    }

    /// The owner, once fixed.
    pub fn owner_now(&self) -> Option<&str> {
        self.owner.get().map(|s| s.as_str())
    }

    /// A request id for a wait that was given none.
    pub fn new_request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.id)
    }

    /// Takes charge of a grant. A grant the session holds already (a
    /// repeated request id) is not taken twice.
    pub fn hold(&self, grant: Grant, renew: bool, request_id: Option<String>) {
        self.hold_unless(grant, renew, request_id, &AtomicBool::new(false));
    }

    /// Takes charge of a grant unless `given_up` is set (checked under the
    /// lock that releases take, so a grant racing a release or a given-up
    /// place is released here, never kept unseen). False when released.
    pub fn hold_unless(
        &self,
        grant: Grant,
        renew: bool,
        request_id: Option<String>,
        given_up: &AtomicBool,
    ) -> bool {
        let mut held = lock(&self.held);
        if held.iter().any(|h| h.grant.grant == grant.grant) {
            return true;
        }
        let ended = self.ended.load(Ordering::SeqCst) && renew;
        if ended || given_up.load(Ordering::SeqCst) {
            // Nobody will use it: the session ended, or its place was given up.
            drop(held);
            let why = if ended {
                ReleaseReason::Exited
            } else {
                ReleaseReason::Completed
            };
            let _ = self.client.store().release_grant(&target(&grant), why);
            return false;
        }
        let guard = renew.then(|| self.client.adopt(grant.clone()));
        held.push(Held {
            grant,
            guard,
            request_id,
        });
        true
    }

    /// True while the session holds grant `grant`.
    pub fn holds(&self, grant: i64) -> bool {
        lock(&self.held).iter().any(|h| h.grant.grant == grant)
    }

    /// The session's grant made for `request_id`, if any, and whether it
    /// ends with the session.
    pub fn held_for_request(&self, request_id: &str) -> Option<(Grant, bool)> {
        let store_id = self.store_request_id(request_id);
        lock(&self.held)
            .iter()
            .find(|h| h.request_id.as_deref() == Some(store_id.as_str()))
            .map(|h| (h.grant.clone(), h.guard.is_some()))
    }

    /// The request id sent to the store for the agent's `request_id`: the
    /// session's own, so that another session of the same owner reusing
    /// an id never takes over this session's grant.
    pub fn store_request_id(&self, request_id: &str) -> String {
        format!("{}:{request_id}", self.id)
    }

    /// Grant ids of the session, for marking "you" in listings.
    pub fn grant_ids(&self) -> Vec<i64> {
        lock(&self.held).iter().map(|h| h.grant.grant).collect()
    }

    /// Grants of the session that `pick` chooses, taken out of the session.
    fn take(&self, pick: impl Fn(&Held) -> bool) -> Vec<Held> {
        let mut held = lock(&self.held);
        let (out, keep): (Vec<Held>, Vec<Held>) = held.drain(..).partition(pick);
        *held = keep;
        out
    }

    /// Releases the session's grants that have one of `keys` (every grant
    /// when `keys` is empty), whole; answers one entry per key of each.
    pub fn release(
        &self,
        keys: &[Key],
        reason: ReleaseReason,
    ) -> Vec<(Key, Result<Release, Outcome>)> {
        self.release_where(reason, |h| h.names_any(keys))
    }

    /// Releases the grants `pick` chooses. A grant whose release fails
    /// (the store unreachable) stays the session's, renewed as before.
    fn release_where(
        &self,
        reason: ReleaseReason,
        pick: impl Fn(&Held) -> bool,
    ) -> Vec<(Key, Result<Release, Outcome>)> {
        let mut out = Vec::new();
        for h in self.take(pick) {
            let grant = h.grant.clone();
            let renewed = h.guard.is_some();
            let answer = match h.guard {
                Some(g) => match reason {
                    ReleaseReason::Failed => g.release_failed(),
                    ReleaseReason::Exited => g.release_exited(),
                    _ => g.release(),
                },
                None => self.client.store().release_grant(&target(&grant), reason),
            };
            match answer {
                Ok(first) => {
                    self.forget_wait_of(grant.grant);
                    // The other keys of the grant ended with the first.
                    for (i, l) in grant.locks.iter().enumerate() {
                        let each = match (&first, i) {
                            (_, 0) => first.clone(),
                            (Release::Released { .. }, _) => Release::Released {
                                key: l.key.clone(),
                                fence: l.fence,
                                held_for: Duration::ZERO,
                            },
                            (Release::NotHeld { reason, .. }, _) => Release::NotHeld {
                                key: l.key.clone(),
                                reason: *reason,
                            },
                        };
                        out.push((l.key.clone(), Ok(each)));
                    }
                }
                Err(e) => {
                    let o = Outcome::from(e);
                    lock(&self.held).push(Held {
                        guard: renewed.then(|| self.client.adopt(grant.clone())),
                        grant: grant.clone(),
                        request_id: h.request_id,
                    });
                    for l in &grant.locks {
                        out.push((l.key.clone(), Err(o.clone())));
                    }
                }
            }
        }
        out
    }

    /// Forgets the finished wait whose grant ended, so that its request id
    /// no longer answers "granted".
    fn forget_wait_of(&self, grant: i64) {
        lock(&self.waits).retain(
            |_, p| !matches!(&*p.state.borrow(), WaitState::Granted(g) if g.grant == grant),
        );
    }

    /// Renews the session's grants (all, or those with one of `keys`) now.
    /// A grant found lost leaves the session.
    pub fn renew(&self, keys: &[Key]) -> Vec<(Grant, Result<Renewal, Outcome>)> {
        let grants: Vec<Grant> = lock(&self.held)
            .iter()
            .filter(|h| h.names_any(keys))
            .map(|h| h.grant.clone())
            .collect();
        let mut out = Vec::new();
        for g in grants {
            let answer = self.client.store().renew(&target(&g), g.ttl);
            if let Ok(Renewal::Lost { .. }) = &answer {
                self.forget(g.grant);
            }
            out.push((g, answer.map_err(Outcome::from)));
        }
        out
    }

    /// Grants the session believed held that are lost (forced, stolen,
    /// expired while renewals failed): each with the store's reason. They
    /// leave the session, so each loss is told once.
    pub fn losses(&self) -> Vec<(Grant, Option<ReleaseReason>)> {
        let lost: Vec<Grant> = lock(&self.held)
            .iter()
            .filter(|h| h.guard.as_ref().is_some_and(|g| g.is_lost()))
            .map(|h| h.grant.clone())
            .collect();
        let mut out = Vec::new();
        for g in lost {
            let reason = match self.client.store().renew(&target(&g), g.ttl) {
                Ok(Renewal::Lost { reason, .. }) => reason,
                // Renewals failed but the store still has it: not lost yet.
                Ok(Renewal::Renewed { .. }) => continue,
                // The store cannot say now: ask again at the next call.
                Err(_) => continue,
            };
            self.forget(g.grant);
            out.push((g, reason));
        }
        out
    }

    /// Drops a grant the store no longer has from the session: its
    /// renewals stop, and nothing is released.
    fn forget(&self, grant: i64) {
        for h in self.take(|h| h.grant.grant == grant) {
            if let Some(g) = h.guard {
                g.disarm();
            }
        }
        self.forget_wait_of(grant);
    }

    /// The queued request `request_id`, joined by one more call.
    pub fn join(&self, request_id: &str) -> Option<Joined> {
        let waits = lock(&self.waits);
        let p = waits.get(request_id)?.clone();
        p.callers.fetch_add(1, Ordering::SeqCst);
        p.touch();
        Some(Joined(p))
    }

    /// Queues `req` on a thread of its own, waiting until `deadline`, and
    /// joins it.
    pub fn start_wait(
        self: &Arc<Self>,
        request_id: String,
        req: AcquireRequest,
        deadline: Option<Instant>,
        renew: bool,
    ) -> Result<Joined, Outcome> {
        let mut waits = lock(&self.waits);
        let queued = waits
            .values()
            .filter(|p| matches!(*p.state.borrow(), WaitState::Waiting(_)))
            .count();
        if queued >= MAX_WAITS {
            return Err(Outcome::new(
                Code::TooMany,
                format!(
                    "this session already waits for {queued} requests; release or let some end first"
                ),
            ));
        }
        let (tx, _) = watch::channel(WaitState::Waiting(None));
        let pending = Arc::new(Pending {
            shape: Shape::of(&req, renew),
            collected: AtomicBool::new(false),
            state: tx,
            cancel: AtomicBool::new(false),
            touched: Mutex::new(Instant::now()),
            callers: AtomicUsize::new(1),
            started: Instant::now(),
            deadline,
        });
        waits.insert(request_id.clone(), pending.clone());
        drop(waits);
        let session = self.clone();
        let p = pending.clone();
        let started = std::thread::Builder::new()
            .name("locksmith-wait".into())
            .spawn(move || session.wait(p, req, renew));
        if let Err(e) = started {
            lock(&self.waits).remove(&request_id);
            return Err(Outcome::new(
                Code::StoreError,
                format!("cannot start a wait: {e}"),
            ));
        }
        Ok(Joined(pending))
    }

    /// The body of a queued request's thread.
    fn wait(&self, p: Arc<Pending>, req: AcquireRequest, renew: bool) {
        let store = self.client.store().clone();
        let state = match self.client.notifier().wake_source() {
            Err(e) => WaitState::Ended(e.into()),
            Ok(mut wake) => {
                let mut ticket = Ticket {
                    seq: None,
                    wake: wake.address().to_string(),
                    claim: None,
                };
                let mut seen = |b: &Blocked| {
                    p.state.send_replace(WaitState::Waiting(Some(b.clone())));
                };
                match wait_turn(
                    &*store,
                    &mut *wake,
                    &req,
                    &mut ticket,
                    p.deadline,
                    &p.cancel,
                    &mut seen,
                ) {
                    Ok(Attempt::Granted(g)) => {
                        if self.hold_unless(g.clone(), renew, req.request_id.clone(), &p.cancel) {
                            WaitState::Granted(g)
                        } else {
                            WaitState::Ended(Outcome::new(
                                Code::Cancelled,
                                "the place in the queue was given up (no call came back for it in time, or its keys were released); a grant that came at that moment was released again",
                            ))
                        }
                    }
                    Ok(Attempt::Blocked(b)) => {
                        let _ = leave(&*store, &ticket, LeaveReason::TimedOut);
                        WaitState::Ended(Outcome {
                            code: Code::WaitTimedOut,
                            message: "the wait timed out; the place in the queue is given up"
                                .into(),
                            blocked: Some(b),
                        })
                    }
                    Err(AcquireError::Cancelled) => WaitState::Ended(Outcome::new(
                        Code::Cancelled,
                        "the place in the queue was given up: no call came back for it in time, or it was released",
                    )),
                    Err(AcquireError::Store(e)) => WaitState::Ended(e.into()),
                    Err(e) => WaitState::Ended(Outcome::new(e.code(), e.to_string())),
                }
            }
        };
        p.touch();
        p.state.send_replace(state);
    }

    /// Gives up the queued requests of the session for one of `keys` (all
    /// when empty); returns how many.
    pub fn cancel_waits(&self, keys: &[Key]) -> usize {
        let waits = lock(&self.waits);
        let mut n = 0;
        for p in waits.values() {
            let waiting = matches!(*p.state.borrow(), WaitState::Waiting(_));
            if waiting && (keys.is_empty() || p.shape.keys.iter().any(|k| keys.contains(k))) {
                p.cancel.store(true, Ordering::SeqCst);
                n += 1;
            }
        }
        n
    }

    /// Gives up places nobody came back for, and forgets finished waits
    /// once their answer had time to be fetched. Runs until aborted. A
    /// grant made for a place nobody came back for is released again
    /// (reason `completed`): the agent never learned that it holds it.
    pub async fn watch(self: Arc<Self>) {
        let keep = self.settings.keep_place;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut unclaimed = Vec::new();
            lock(&self.waits).retain(|_, p| {
                let idle = p.callers.load(Ordering::SeqCst) == 0 && p.idle() >= keep;
                match &*p.state.borrow() {
                    WaitState::Waiting(_) => {
                        if idle {
                            p.cancel.store(true, Ordering::SeqCst);
                        }
                        true
                    }
                    WaitState::Granted(g) if idle && !p.collected.load(Ordering::SeqCst) => {
                        unclaimed.push(g.grant);
                        false
                    }
                    _ => !idle,
                }
            });
            if !unclaimed.is_empty() {
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    me.release_where(ReleaseReason::Completed, |h| {
                        unclaimed.contains(&h.grant.grant)
                    })
                })
                .await;
            }
        }
    }

    /// The session is over: its waits leave their queues and its locks are
    /// released with `exited` (locks that outlive the session stay).
    pub async fn end(self: Arc<Self>) {
        self.ended.store(true, Ordering::SeqCst);
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            me.cancel_waits(&[]);
            me.release_where(ReleaseReason::Exited, |h| h.guard.is_some());
            // Give the wait threads a moment to leave their queues.
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until
                && lock(&me.waits)
                    .values()
                    .any(|p| matches!(*p.state.borrow(), WaitState::Waiting(_)))
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await;
    }
}

/// The proof of holding a grant: its handle.
pub fn target(grant: &Grant) -> Target {
    Target {
        key: grant.locks[0].key.clone(),
        by: Proof::Handle(grant.handle.clone()),
    }
}
