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

mod acquire;
mod tenure;
mod views;

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

/// Walks every seed; the walks together must reach every kind of outcome.
pub fn walk_seeds(make: Factory<'_>, seeds: std::ops::Range<u64>) {
    let mut seen = Coverage::default();
    for seed in seeds {
        seen.add(&random_walk(make, seed, 200));
    }
    for what in [
        "granted",
        "granted_after_queueing",
        "granted_over_an_ended_lease",
        "blocked",
        "blocked_by_waiters_only",
        "queued",
        "queued_again_after_lapsing",
        "deadlock_on_joining",
        "invalid",
        "limit_mismatch",
        "renewed",
        "renew_lost",
        "released",
        "release_not_held",
        "left_queue",
    ] {
        assert!(seen.get(what) > 0, "no walk reached {what}: {seen:?}");
    }
    eprintln!("{seen:?}");
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
