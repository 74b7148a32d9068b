//! After every step: `list` and `waiters` must show exactly what the model holds.

use super::*;

impl Walk<'_> {
    pub(super) fn check_views(&mut self) {
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
