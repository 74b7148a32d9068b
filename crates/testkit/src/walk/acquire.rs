//! The walk's acquire steps: fail-fast and queued attempts, retries, and what the model expects of each answer.

use super::*;

impl Walk<'_> {
    pub(super) fn acquire(&mut self, a: usize, queue: bool) {
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

    pub(super) fn retry(&mut self, a: usize) {
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
    pub(super) fn settle(
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

    pub(super) fn leave(&mut self, a: usize) {
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
}
