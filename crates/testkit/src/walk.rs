//! A seeded random walk over a store, checked step by step against a small
//! reference model written here from the specification (not from the rules
//! module): random acquires (every mode, key and tree scope, with and without
//! leases and `max_hold`), queue joins and retries, renewals, releases,
//! leaving the queue and time passing.
//!
//! After every step the walk checks that no two conflicting locks are live,
//! that fences rise strictly, that the queue is served in order (a request is
//! never granted while an earlier conflicting live waiter is queued), that an
//! ended lease is free, that a wait closing a cycle is refused and no other,
//! and that `list` and `waiters` show exactly what the model holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use locksmith_core::Clock;
use locksmith_core::store::{ListFilter, Proof, Release, Renewal, Target};

use crate::Waiter;
use locksmith_core::decide::REFRESH;
use locksmith_core::{
    AcquireRequest, Attempt, Grant, Key, Mode, Mono, ReleaseReason, Scope, StoreError, Takeover,
};

use crate::{Factory, Harness, holder, key};

/// A small xorshift64* generator: the same seed gives the same walk.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        Rng((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// True with `percent` in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    /// One element of `xs`.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const ACTORS: [&str; 4] = ["a0", "a1", "a2", "a3"];
const KEYS: [&str; 6] = ["r", "r/x", "r/x/1", "r/y", "r/xy", "s"];

/// What a lock or a waiting request occupies.
#[derive(Clone, Debug, PartialEq)]
struct MClaim {
    key: Key,
    mode: Mode,
    scope: Scope,
}

fn at_or_below(k: &Key, top: &Key) -> bool {
    let (k, top) = (k.as_str(), top.as_str());
    k == top || (k.starts_with(top) && k[top.len()..].starts_with('/'))
}

/// Do two claims cover a common key?
fn overlap(a: &MClaim, b: &MClaim) -> bool {
    a.key == b.key
        || (a.scope == Scope::Tree && at_or_below(&b.key, &a.key))
        || (b.scope == Scope::Tree && at_or_below(&a.key, &b.key))
}

/// Who stands in the way of `want` among `occupied`: any overlapping claim,
/// except shared with shared, and slots of one semaphore (same key, same
/// limit) while fewer than `limit` are taken. `Err` on a slot-count mismatch.
fn in_the_way<T: Copy>(want: &MClaim, occupied: &[(&MClaim, T)]) -> Result<Vec<T>, ()> {
    let mut out = Vec::new();
    let mut slots = Vec::new();
    for (c, id) in occupied {
        if !overlap(want, c) {
            continue;
        }
        match (want.mode, c.mode) {
            (Mode::Shared, Mode::Shared) => {}
            (Mode::Semaphore { limit: a }, Mode::Semaphore { limit: b }) if want.key == c.key => {
                if a != b {
                    return Err(());
                }
                slots.push(*id);
            }
            _ => out.push(*id),
        }
    }
    if let Mode::Semaphore { limit } = want.mode
        && slots.len() >= limit as usize
    {
        out.extend(slots);
    }
    Ok(out)
}

/// A tenure the model knows of.
#[derive(Clone, Debug)]
struct MHold {
    actor: usize,
    grant: i64,
    fence: u64,
    claim: MClaim,
    acquired: Mono,
    expires: Option<Mono>,
    ttl: Option<Duration>,
    max_hold: Option<Duration>,
    /// Ended and observed (released, or answered lost / not held), with the
    /// reasons the history may give.
    gone: Option<Vec<ReleaseReason>>,
}

impl MHold {
    /// The reasons its end may be recorded with, if it has ended by time.
    /// The store ends it lazily at some instant between its end and `now`.
    fn time_ended(&self, now: Mono) -> Option<Vec<ReleaseReason>> {
        let cap = self.max_hold.map(|m| self.acquired.plus(m));
        let first = match (cap, self.expires) {
            (Some(c), Some(e)) => c.min(e),
            (c, e) => c.or(e)?,
        };
        if now < first {
            return None;
        }
        if cap == Some(first) {
            return Some(vec![ReleaseReason::MaxHold]);
        }
        let mut r = vec![ReleaseReason::LeaseExpired];
        if cap.is_some_and(|c| now >= c) {
            r.push(ReleaseReason::MaxHold);
        }
        Some(r)
    }
    fn live(&self, now: Mono) -> bool {
        self.gone.is_none() && self.time_ended(now).is_none()
    }
}

/// A queued request the model knows of.
#[derive(Clone, Debug)]
struct MWaiter {
    actor: usize,
    order: u64,
    priority: i32,
    claims: Vec<MClaim>,
    alive_until: Mono,
}

impl MWaiter {
    fn place(&self) -> (i32, u64) {
        (self.priority, self.order)
    }
}

/// Served before: higher priority, then earlier arrival.
fn ahead(a: (i32, u64), b: (i32, u64)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Hold(usize),
    Wait(usize),
}

struct Actor {
    grants: Vec<Grant>,
    pending: Option<(AcquireRequest, Waiter)>,
}

/// What the model expects of one acquire attempt.
enum Expect {
    Invalid,
    Mismatch,
    Grant,
    /// Blocked: fences of the holders in the way, the waiters in the way.
    Blocked(BTreeSet<u64>, BTreeSet<usize>),
}

/// How often each kind of outcome happened in a walk, to tell that the walk
/// reached the interesting cases (`granted`, `queued`, `deadlock`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage(pub BTreeMap<&'static str, usize>);

impl Coverage {
    /// Adds another walk's counts.
    pub fn add(&mut self, other: &Coverage) {
        for (k, v) in &other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }
    /// How often `what` happened.
    pub fn get(&self, what: &str) -> usize {
        self.0.get(what).copied().unwrap_or(0)
    }
}

struct Walk<'h> {
    h: &'h Harness,
    seen: Coverage,
    rng: Rng,
    seed: u64,
    step: usize,
    holds: Vec<MHold>,
    waiters: Vec<MWaiter>,
    actors: Vec<Actor>,
    next_order: u64,
    last_fence: u64,
    trace: Vec<String>,
}

/// Runs `steps` random steps on a fresh store from `make`, checking every
/// step against the reference model; panics with the seed and the last
/// steps on the first difference. Returns what the walk ran into.
pub fn random_walk(make: Factory<'_>, seed: u64, steps: usize) -> Coverage {
    let h = make();
    let mut w = Walk {
        h: &h,
        seen: Coverage::default(),
        rng: Rng::new(seed),
        seed,
        step: 0,
        holds: Vec::new(),
        waiters: Vec::new(),
        actors: ACTORS
            .iter()
            .map(|_| Actor {
                grants: Vec::new(),
                pending: None,
            })
            .collect(),
        next_order: 0,
        last_fence: 0,
        trace: Vec::new(),
    };
    for step in 0..steps {
        w.step = step;
        w.one_step();
        w.check_views();
    }
    w.seen
}

impl Walk<'_> {
    fn now(&self) -> Mono {
        self.h.clock.now().mono
    }

    fn saw(&mut self, what: &'static str) {
        *self.seen.0.entry(what).or_default() += 1;
    }

    fn note(&mut self, text: String) {
        self.trace
            .push(format!("#{} t+{}ms {text}", self.step, self.h.clock_ms()));
    }

    #[track_caller]
    fn fail(&self, what: String) -> ! {
        let mut t = String::new();
        for line in self.trace.iter().rev().take(40).rev() {
            let _ = writeln!(t, "  {line}");
        }
        panic!(
            "random walk seed {} step {}: {what}\nlast steps:\n{t}model holds: {:#?}\nmodel waiters: {:#?}",
            self.seed,
            self.step,
            self.holds
                .iter()
                .filter(|x| x.live(self.now()))
                .collect::<Vec<_>>(),
            self.waiters
                .iter()
                .filter(|x| self.now() < x.alive_until)
                .collect::<Vec<_>>(),
        );
    }

    fn one_step(&mut self) {
        let a = self.rng.below(ACTORS.len());
        let roll = self.rng.below(100);
        let has_grants = !self.actors[a].grants.is_empty();
        if self.actors[a].pending.is_some() {
            match roll {
                0..45 => self.retry(a),
                45..55 => self.leave(a),
                55..75 if has_grants => self.renew(a),
                55..90 if has_grants => self.release(a),
                _ => self.advance(),
            }
        } else {
            match roll {
                0..30 => self.acquire(a, false),
                30..50 => self.acquire(a, true),
                50..70 if has_grants => self.renew(a),
                50..90 if has_grants => self.release(a),
                50..90 => self.acquire(a, false),
                _ => self.advance(),
            }
        }
    }

    fn advance(&mut self) {
        let d = *self.rng.pick(&[
            Duration::from_millis(50),
            Duration::from_millis(250),
            Duration::from_millis(700),
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(4),
        ]);
        self.h.advance(d);
        self.note(format!("advance {d:?}"));
    }

    fn random_request(&mut self, a: usize) -> AcquireRequest {
        let n = if self.rng.chance(15) { 2 } else { 1 };
        let keys: Vec<Key> = (0..n).map(|_| key(self.rng.pick::<&str>(&KEYS))).collect();
        let mode = match self.rng.below(100) {
            0..40 => Mode::Exclusive,
            40..70 => Mode::Shared,
            70..95 => Mode::Semaphore { limit: 2 },
            _ => Mode::Semaphore { limit: 3 },
        };
        let scope = if self.rng.chance(25) {
            Scope::Tree
        } else {
            Scope::Key
        };
        let ttl = *self.rng.pick(&[
            None,
            None,
            Some(Duration::from_millis(500)),
            Some(Duration::from_secs(1)),
            Some(Duration::from_secs(3)),
        ]);
        let max_hold = if self.rng.chance(15) {
            Some(Duration::from_secs(2))
        } else {
            None
        };
        AcquireRequest {
            keys,
            mode,
            scope,
            holder: holder(ACTORS[a]),
            ttl,
            max_hold,
            priority: if self.rng.chance(20) { 1 } else { 0 },
            takeover: Takeover::None,
            request_id: None,
            bind: None,
        }
    }

    fn claims(req: &AcquireRequest) -> Vec<MClaim> {
        req.keys
            .iter()
            .map(|k| MClaim {
                key: k.clone(),
                mode: req.mode,
                scope: req.scope,
            })
            .collect()
    }

    /// `a`'s live queue entry, if any.
    fn my_entry(&self, a: usize) -> Option<&MWaiter> {
        let now = self.now();
        self.waiters
            .iter()
            .find(|w| w.actor == a && now < w.alive_until)
    }

    /// What stops `claims` at place `me` (excluding `a`'s own entry): holders
    /// (holds only, as a store reports them) and earlier waiters (counted
    /// together with the holders, so a semaphore slot a waiter is due is taken).
    fn blockers_of(
        &self,
        a: usize,
        claims: &[MClaim],
        me: (i32, u64),
    ) -> Result<(BTreeSet<usize>, BTreeSet<usize>), ()> {
        let now = self.now();
        let live: Vec<(&MClaim, Who)> = self
            .holds
            .iter()
            .enumerate()
            .filter(|(_, x)| x.live(now))
            .map(|(i, x)| (&x.claim, Who::Hold(i)))
            .collect();
        let mut both = live.clone();
        for (i, w) in self.waiters.iter().enumerate() {
            if w.actor != a && now < w.alive_until && ahead(w.place(), me) {
                both.extend(w.claims.iter().map(|c| (c, Who::Wait(i))));
            }
        }
        let (mut hb, mut wb) = (BTreeSet::new(), BTreeSet::new());
        for c in claims {
            for who in in_the_way(c, &live)? {
                if let Who::Hold(i) = who {
                    hb.insert(i);
                }
            }
            for who in in_the_way(c, &both)? {
                if let Who::Wait(i) = who {
                    wb.insert(i);
                }
            }
        }
        Ok((hb, wb))
    }

    fn expect(&self, a: usize, req: &AcquireRequest, me: (i32, u64)) -> Expect {
        let claims = Self::claims(req);
        for (i, x) in claims.iter().enumerate() {
            if claims[i + 1..].iter().any(|y| overlap(x, y)) {
                return Expect::Invalid;
            }
        }
        match self.blockers_of(a, &claims, me) {
            Err(()) => Expect::Mismatch,
            Ok((hb, wb)) if hb.is_empty() && wb.is_empty() => Expect::Grant,
            Ok((hb, wb)) => Expect::Blocked(hb.iter().map(|&i| self.holds[i].fence).collect(), wb),
        }
    }

    /// The waits-for graph of owners (actor indexes) as the model sees it,
    /// with `a`'s own edges given.
    fn cycle_through(
        &self,
        a: usize,
        mine: BTreeSet<usize>,
    ) -> (Option<Vec<usize>>, BTreeMap<usize, BTreeSet<usize>>) {
        let now = self.now();
        let mut g: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        g.insert(a, mine);
        for w in &self.waiters {
            if w.actor == a || now >= w.alive_until {
                continue;
            }
            let Ok((hb, wb)) = self.blockers_of_entry(w) else {
                continue;
            };
            let e = g.entry(w.actor).or_default();
            e.extend(hb.iter().map(|&i| self.holds[i].actor));
            e.extend(wb.iter().map(|&i| self.waiters[i].actor));
        }
        // Depth-first search for a way back to `a`, ignoring self-edges.
        let mut stack = vec![(a, vec![a])];
        let mut seen = BTreeSet::from([a]);
        while let Some((n, path)) = stack.pop() {
            for &m in g.get(&n).into_iter().flatten() {
                if m == n {
                    continue;
                }
                if m == a {
                    let mut p = path.clone();
                    p.push(a);
                    return (Some(p), g);
                }
                if seen.insert(m) {
                    let mut p = path.clone();
                    p.push(m);
                    stack.push((m, p));
                }
            }
        }
        (None, g)
    }

    fn blockers_of_entry(&self, w: &MWaiter) -> Result<(BTreeSet<usize>, BTreeSet<usize>), ()> {
        self.blockers_of(w.actor, &w.claims, w.place())
    }

    fn describe(req: &AcquireRequest) -> String {
        let keys: Vec<&str> = req.keys.iter().map(Key::as_str).collect();
        format!(
            "{} {keys:?} {} {} ttl={:?} max={:?} prio={}",
            req.holder.owner,
            req.mode,
            req.scope.name(),
            req.ttl,
            req.max_hold,
            req.priority
        )
    }

    fn acquire(&mut self, a: usize, queue: bool) {
        let req = self.random_request(a);
        self.note(format!(
            "{} {}",
            if queue { "queue" } else { "acquire" },
            Self::describe(&req)
        ));
        if queue {
            let waiter = self.h.waiter();
            self.actors[a].pending = Some((req, waiter));
            self.retry(a);
        } else {
            let me = (req.priority, u64::MAX);
            let expect = self.expect(a, &req, me);
            let got = self.h.store.acquire(&req, None);
            self.settle(a, &req, expect, got, None);
        }
    }

    fn retry(&mut self, a: usize) {
        let (req, mut waiter) = self.actors[a].pending.take().expect("pending request");
        let existing = self.my_entry(a).map(|w| w.order);
        let me = (req.priority, existing.unwrap_or(u64::MAX));
        self.note(format!(
            "attempt (queued={existing:?}) {}",
            Self::describe(&req)
        ));
        let expect = self.expect(a, &req, me);
        let got = self.h.store.acquire(&req, Some(&mut waiter));
        let keep = self.settle(a, &req, expect, got, Some((existing, &mut waiter)));
        if keep {
            self.actors[a].pending = Some((req, waiter));
        } else if waiter.seq.is_some() {
            // As the wait loop does after an error or a grant: leaving is harmless.
            self.h
                .store
                .leave_queue(&waiter, locksmith_core::store::LeaveReason::Cancelled)
                .unwrap_or_else(|e| self.fail(format!("leave_queue failed: {e}")));
            self.waiters.retain(|w| w.actor != a);
        }
    }

    /// Compares one acquire answer with the model and applies it. Returns
    /// true when the request stays queued.
    fn settle(
        &mut self,
        a: usize,
        req: &AcquireRequest,
        expect: Expect,
        got: Result<Attempt, StoreError>,
        queued: Option<(Option<u64>, &mut Waiter)>,
    ) -> bool {
        let now = self.now();
        match (expect, got) {
            (Expect::Invalid, Err(StoreError::Invalid(_))) => {
                self.saw("invalid");
                false
            }
            (Expect::Mismatch, Err(StoreError::LimitMismatch(_))) => {
                self.saw("limit_mismatch");
                false
            }
            (Expect::Grant, Ok(Attempt::Granted(g))) => {
                self.saw("granted");
                if queued.is_some() {
                    self.saw("granted_after_queueing");
                }
                if self.holds.iter().any(|x| {
                    x.gone.is_none()
                        && x.time_ended(now).is_some()
                        && req.keys.iter().any(|k| {
                            let c = MClaim { key: k.clone(), mode: Mode::Exclusive, scope: req.scope };
                            overlap(&c, &x.claim)
                        })
                }) {
                    self.saw("granted_over_an_ended_lease");
                }
                self.note(format!("  granted {:?}", g.locks.iter().map(|l| l.fence.0).collect::<Vec<_>>()));
                if g.locks.len() != req.keys.len() || g.locks.iter().zip(&req.keys).any(|(l, k)| &l.key != k) {
                    self.fail(format!("grant keys {:?} differ from the request {:?}", g.locks, req.keys));
                }
                for l in &g.locks {
                    if l.fence.0 <= self.last_fence {
                        self.fail(format!("fence {} issued after {}", l.fence.0, self.last_fence));
                    }
                    self.last_fence = l.fence.0;
                    self.holds.push(MHold {
                        actor: a,
                        grant: g.grant,
                        fence: l.fence.0,
                        claim: MClaim {
                            key: l.key.clone(),
                            mode: req.mode,
                            scope: req.scope,
                        },
                        acquired: now,
                        expires: req.ttl.map(|t| now.plus(t)),
                        ttl: req.ttl,
                        max_hold: req.max_hold,
                        gone: None,
                    });
                }
                self.waiters.retain(|w| w.actor != a);
                self.actors[a].grants.push(g);
                false
            }
            (Expect::Blocked(hb, wb), Ok(Attempt::Blocked(b))) => {
                let got_hb: BTreeSet<u64> = b.holders.iter().map(|i| i.fence.0).collect();
                if got_hb != hb {
                    self.fail(format!("holders in the way: store says {got_hb:?}, model {hb:?}"));
                }
                if b.waiters_ahead != wb.len() {
                    self.fail(format!(
                        "waiters in the way: store says {}, model {:?}",
                        b.waiters_ahead,
                        wb.iter().map(|&i| &self.waiters[i]).collect::<Vec<_>>()
                    ));
                }
                self.saw("blocked");
                if b.holders.is_empty() {
                    self.saw("blocked_by_waiters_only");
                }
                let Some((existing, waiter)) = queued else {
                    if b.position.is_some() {
                        self.fail(format!("a fail-fast attempt got a queue place: {b:?}"));
                    }
                    return false;
                };
                // Would this wait close a cycle?
                let mine: BTreeSet<usize> = hb
                    .iter()
                    .map(|f| self.holds.iter().find(|x| x.fence == *f).unwrap().actor)
                    .chain(wb.iter().map(|&i| self.waiters[i].actor))
                    .collect();
                let (cycle, _) = self.cycle_through(a, mine);
                if let Some(c) = cycle {
                    self.fail(format!("the wait closes the cycle {c:?} but the store queued it: {b:?}"));
                }
                if existing.is_none() && self.waiters.iter().any(|w| w.actor == a) {
                    self.saw("queued_again_after_lapsing");
                }
                self.saw("queued");
                // A lapsed place is given up: the request queues again at the back.
                let order = match existing {
                    Some(o) => o,
                    None => {
                        self.next_order += 1;
                        self.next_order
                    }
                };
                let alive_until = now.plus(REFRESH * 3);
                let claims = Self::claims(req);
                self.waiters.retain(|w| w.actor != a);
                self.waiters.push(MWaiter {
                    actor: a,
                    order,
                    priority: req.priority,
                    claims: claims.clone(),
                    alive_until,
                });
                let me = (req.priority, order);
                let before = self
                    .waiters
                    .iter()
                    .filter(|w| {
                        w.actor != a
                            && now < w.alive_until
                            && ahead(w.place(), me)
                            && w.claims.iter().any(|x| claims.iter().any(|y| overlap(x, y)))
                    })
                    .count();
                if b.position != Some(before + 1) {
                    self.fail(format!("queue place: store says {:?}, model {}", b.position, before + 1));
                }
                if waiter.seq.is_none() {
                    self.fail("a queued attempt left the waiter without a place".into());
                }
                self.note(format!("  queued at {:?}, {} ahead", b.position, wb.len()));
                true
            }
            (Expect::Blocked(hb, wb), Err(StoreError::Deadlock { key: k, cycle })) if queued.is_some() => {
                let mine: BTreeSet<usize> = hb
                    .iter()
                    .map(|f| self.holds.iter().find(|x| x.fence == *f).unwrap().actor)
                    .chain(wb.iter().map(|&i| self.waiters[i].actor))
                    .collect();
                let (model, g) = self.cycle_through(a, mine);
                let Some(_) = model else {
                    self.fail(format!("deadlock refused on {k} with cycle {cycle:?}, but the model sees none: {g:?}"));
                };
                let idx: Vec<Option<usize>> = cycle.iter().map(|o| ACTORS.iter().position(|x| x == o)).collect();
                let valid = idx.first() == Some(&Some(a))
                    && idx.last() == Some(&Some(a))
                    && idx.windows(2).all(|p| match (p[0], p[1]) {
                        (Some(x), Some(y)) => g.get(&x).is_some_and(|s| s.contains(&y)),
                        _ => false,
                    });
                if !valid {
                    self.fail(format!("deadlock cycle {cycle:?} is not a path of the model's graph {g:?}"));
                }
                if !req.keys.contains(&k) {
                    self.fail(format!("deadlock names key {k}, not one of the request"));
                }
                self.note(format!("  deadlock refused {cycle:?}"));
                self.saw(if existing_of(&queued) { "deadlock_after_joining" } else { "deadlock_on_joining" });
                self.waiters.retain(|w| w.actor != a);
                false
            }
            (Expect::Invalid, got) => self.fail(format!("expected an invalid-request error, got {got:?}")),
            (Expect::Mismatch, got) => self.fail(format!("expected a limit mismatch, got {got:?}")),
            (Expect::Grant, got) => self.fail(format!("expected a grant, got {got:?}")),
            (Expect::Blocked(hb, wb), Ok(Attempt::Granted(g))) => self.fail(format!(
                "granted {:?} although blocked by holders {hb:?} and earlier waiters {:?} (FIFO / conflict violated)",
                g.locks,
                wb.iter().map(|&i| &self.waiters[i]).collect::<Vec<_>>()
            )),
            (Expect::Blocked(..), got) => self.fail(format!("expected blocked, got {got:?}")),
        }
    }

    fn leave(&mut self, a: usize) {
        self.saw("left_queue");
        let (_, waiter) = self.actors[a].pending.take().expect("pending");
        let why = if self.rng.chance(50) {
            locksmith_core::store::LeaveReason::TimedOut
        } else {
            locksmith_core::store::LeaveReason::Cancelled
        };
        self.note(format!("{} leaves the queue ({why:?})", ACTORS[a]));
        self.h
            .store
            .leave_queue(&waiter, why)
            .unwrap_or_else(|e| self.fail(format!("leave_queue failed: {e}")));
        self.waiters.retain(|w| w.actor != a);
    }

    /// Picks one of `a`'s grants and one of its keys: `(grant index, key)`.
    fn pick_lock(&mut self, a: usize) -> (usize, Key) {
        let n = self.actors[a].grants.len();
        let gi = n - 1 - self.rng.below(n.min(4));
        let g = &self.actors[a].grants[gi];
        let k = g.locks[self.rng.below(g.locks.len())].key.clone();
        (gi, k)
    }

    fn hold_index(&self, grant: i64, k: &Key) -> usize {
        self.holds
            .iter()
            .position(|x| x.grant == grant && &x.claim.key == k)
            .expect("model hold of a grant")
    }

    /// What the history should say about a tenure that is over, or `None` while it is live.
    fn end_reasons(&self, i: usize) -> Option<Vec<ReleaseReason>> {
        let x = &self.holds[i];
        x.gone.clone().or_else(|| x.time_ended(self.now()))
    }

    fn renew(&mut self, a: usize) {
        let now = self.now();
        let (gi, k) = self.pick_lock(a);
        let grant = self.actors[a].grants[gi].clone();
        let ttl = *self.rng.pick(&[
            None,
            None,
            Some(Duration::from_secs(1)),
            Some(Duration::from_secs(3)),
        ]);
        let i = self.hold_index(grant.grant, &k);
        let mine_on_key: Vec<usize> = (0..self.holds.len())
            .filter(|&j| {
                self.holds[j].actor == a && self.holds[j].claim.key == k && self.holds[j].live(now)
            })
            .collect();
        let by_owner = self.rng.chance(20) && !mine_on_key.is_empty();
        let (target, renewed_rows): (Target, Vec<usize>) = if by_owner {
            let t = Target {
                key: k.clone(),
                by: Proof::Owner(ACTORS[a].into()),
            };
            (t, mine_on_key)
        } else {
            let t = Target {
                key: k.clone(),
                by: Proof::Handle(grant.handle.clone()),
            };
            let rows = (0..self.holds.len())
                .filter(|&j| self.holds[j].grant == grant.grant && self.holds[j].live(now))
                .collect();
            (t, rows)
        };
        self.note(format!(
            "renew {} {k} by {} ttl={ttl:?}",
            ACTORS[a],
            if by_owner { "owner" } else { "handle" }
        ));
        let got = self.h.store.renew(&target, ttl);
        let ended = if by_owner { None } else { self.end_reasons(i) };
        match (ended, got) {
            (None, Ok(Renewal::Renewed { locks })) => {
                let got: BTreeSet<u64> = locks.iter().map(|l| l.fence.0).collect();
                let want: BTreeSet<u64> =
                    renewed_rows.iter().map(|&j| self.holds[j].fence).collect();
                if got != want {
                    self.fail(format!("renewed fences {got:?}, model {want:?}"));
                }
                self.saw("renewed");
                for j in renewed_rows {
                    let x = &mut self.holds[j];
                    x.ttl = ttl.or(x.ttl);
                    x.expires = x.ttl.map(|t| now.plus(t));
                }
            }
            (Some(reasons), Ok(Renewal::Lost { key: lk, reason })) => {
                if lk != k || !reason.is_some_and(|r| reasons.contains(&r)) {
                    self.fail(format!(
                        "lost {lk} with {reason:?}, model expects one of {reasons:?}"
                    ));
                }
                self.saw("renew_lost");
                self.mark_grant_ended(grant.grant);
            }
            (want, got) => self.fail(format!(
                "renew: model expects end reasons {want:?}, store answered {got:?}"
            )),
        }
    }

    /// The store ends every lapsed tenure of a grant it touches.
    fn mark_grant_ended(&mut self, grant: i64) {
        let now = self.now();
        for x in self
            .holds
            .iter_mut()
            .filter(|x| x.grant == grant && x.gone.is_none())
        {
            if let Some(r) = x.time_ended(now) {
                x.gone = Some(r);
            }
        }
    }

    fn release(&mut self, a: usize) {
        let now = self.now();
        let (gi, k) = self.pick_lock(a);
        let grant = self.actors[a].grants[gi].clone();
        let i = self.hold_index(grant.grant, &k);
        let reason = if self.rng.chance(25) {
            ReleaseReason::Failed
        } else {
            ReleaseReason::Completed
        };
        // By owner only when the key has exactly this one tenure of `a` that
        // is not known to be over, and it is live.
        let unended: Vec<usize> = (0..self.holds.len())
            .filter(|&j| {
                self.holds[j].actor == a
                    && self.holds[j].claim.key == k
                    && self.holds[j].gone.is_none()
            })
            .collect();
        let by_owner = self.rng.chance(25) && unended == [i] && self.holds[i].live(now);
        let target = Target {
            key: k.clone(),
            by: if by_owner {
                Proof::Owner(ACTORS[a].into())
            } else {
                Proof::Handle(grant.handle.clone())
            },
        };
        self.note(format!(
            "release {} {k} fence {} by {} ({reason})",
            ACTORS[a],
            self.holds[i].fence,
            if by_owner { "owner" } else { "handle" }
        ));
        let got = self.h.store.release(&target, reason);
        match (self.end_reasons(i), got) {
            (
                None,
                Ok(Release::Released {
                    key: rk,
                    fence,
                    held_for,
                }),
            ) => {
                let x = &self.holds[i];
                if rk != k || fence.0 != x.fence || held_for != now.since(x.acquired) {
                    self.fail(format!(
                        "released {rk} fence {fence} after {held_for:?}; model {x:?}"
                    ));
                }
                self.saw("released");
                self.holds[i].gone = Some(vec![reason]);
            }
            (Some(reasons), Ok(Release::NotHeld { key: rk, reason: r })) => {
                if rk != k || !r.is_some_and(|r| reasons.contains(&r)) {
                    self.fail(format!(
                        "not held {rk} with {r:?}, model expects one of {reasons:?}"
                    ));
                }
                self.saw("release_not_held");
                if self.holds[i].gone.is_none() {
                    self.holds[i].gone = Some(reasons);
                }
            }
            (want, got) => self.fail(format!(
                "release: model expects end reasons {want:?}, store answered {got:?}"
            )),
        }
        // Forget old tenures the actor will not ask about again.
        let grants = &mut self.actors[a].grants;
        if grants.len() > 6 {
            let old = grants.remove(0);
            self.holds
                .retain(|x| x.grant != old.grant || x.gone.is_none());
            if self.holds.iter().any(|x| x.grant == old.grant) {
                self.actors[a].grants.insert(0, old);
            }
        }
    }

    fn check_views(&mut self) {
        let now = self.now();
        let listed = self
            .h
            .store
            .list(&ListFilter::default())
            .unwrap_or_else(|e| self.fail(format!("list failed: {e}")));
        let live: Vec<_> = listed
            .iter()
            .filter(|i| i.health != locksmith_core::Health::Expired)
            .collect();
        let got: BTreeSet<(u64, String, String)> = live
            .iter()
            .map(|i| (i.fence.0, i.key.to_string(), i.owner.clone()))
            .collect();
        let want: BTreeSet<(u64, String, String)> = self
            .holds
            .iter()
            .filter(|x| x.live(now))
            .map(|x| {
                (
                    x.fence,
                    x.claim.key.to_string(),
                    ACTORS[x.actor].to_string(),
                )
            })
            .collect();
        if got != want {
            self.fail(format!("live locks: store lists {got:?}, model {want:?}"));
        }
        // Never two conflicting live holders.
        let claims: Vec<(MClaim, u64)> = live
            .iter()
            .map(|i| {
                (
                    MClaim {
                        key: i.key.clone(),
                        mode: i.mode,
                        scope: i.scope,
                    },
                    i.fence.0,
                )
            })
            .collect();
        for (c, f) in &claims {
            let others: Vec<(&MClaim, u64)> = claims
                .iter()
                .filter(|(_, g)| g != f)
                .map(|(c, g)| (c, *g))
                .collect();
            match in_the_way(c, &others) {
                Ok(v) if v.is_empty() => {}
                other => self.fail(format!(
                    "live lock {f} on {} conflicts with {other:?}",
                    c.key
                )),
            }
        }
        // The queue, per key, in order.
        let ws = self
            .h
            .store
            .waiters(&ListFilter::default())
            .unwrap_or_else(|e| self.fail(format!("waiters failed: {e}")));
        let got: BTreeSet<(String, String, usize)> = ws
            .iter()
            .map(|w| (w.key.to_string(), w.owner.clone(), w.position))
            .collect();
        let mut by_key: BTreeMap<String, Vec<&MWaiter>> = BTreeMap::new();
        for w in self.waiters.iter().filter(|w| now < w.alive_until) {
            for c in &w.claims {
                by_key.entry(c.key.to_string()).or_default().push(w);
            }
        }
        let mut want = BTreeSet::new();
        for (k, mut v) in by_key {
            v.sort_by(|x, y| y.priority.cmp(&x.priority).then(x.order.cmp(&y.order)));
            for (p, w) in v.iter().enumerate() {
                want.insert((k.clone(), ACTORS[w.actor].to_string(), p + 1));
            }
        }
        if got != want {
            self.fail(format!("queue: store lists {got:?}, model {want:?}"));
        }
    }
}

/// True when the attempt was made from a place already in the queue.
fn existing_of(queued: &Option<(Option<u64>, &mut Waiter)>) -> bool {
    matches!(queued, Some((Some(_), _)))
}

impl Harness {
    fn clock_ms(&self) -> u64 {
        self.clock.now().mono.0 / 1000
    }
}
