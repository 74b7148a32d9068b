//! The walk's renew and release steps, checked against the model's tenures.

use super::*;

impl Walk<'_> {
    /// Picks one of `a`'s grants and one of its keys: `(grant index, key)`.
    pub(super) fn pick_lock(&mut self, a: usize) -> (usize, Key) {
        let n = self.actors[a].grants.len();
        let gi = n - 1 - self.rng.below(n.min(4));
        let g = &self.actors[a].grants[gi];
        let k = g.locks[self.rng.below(g.locks.len())].key.clone();
        (gi, k)
    }

    pub(super) fn hold_index(&self, grant: i64, k: &Key) -> usize {
        self.holds
            .iter()
            .position(|x| x.grant == grant && &x.claim.key == k)
            .expect("model hold of a grant")
    }

    /// What the history should say about a tenure that is over, or `None` while it is live.
    pub(super) fn end_reasons(&self, i: usize) -> Option<Vec<ReleaseReason>> {
        let x = &self.holds[i];
        x.gone.clone().or_else(|| x.time_ended(self.now()))
    }

    pub(super) fn renew(&mut self, a: usize) {
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
    pub(super) fn mark_grant_ended(&mut self, grant: i64) {
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

    pub(super) fn release(&mut self, a: usize) {
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
}
