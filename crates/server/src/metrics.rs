//! Prometheus metrics (`GET /metrics`), named `locksmith_*`: what the
//! server did since it started, and gauges read from the store at scrape.

use std::sync::Mutex;
use std::time::Duration;

use locksmith_core::Stats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

/// The counters, histograms and gauges of one server.
pub struct Metrics {
    registry: Registry,
    acquisitions: Family<Labels, Counter>,
    releases: Family<Labels, Counter>,
    renewals: Family<Labels, Counter>,
    sweeps: Family<Labels, Counter>,
    ended: Family<Labels, Gauge>,
    forced: Counter,
    wait: Histogram,
    hold: Histogram,
    held: Gauge,
    waiting: Gauge,
    unhealthy: Gauge,
    last_fence: Gauge,
    success: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Calls per commit of the thread of store calls.
    pub(crate) group: Histogram,
    /// Serialises encoding: the registry is read by one scrape at a time.
    encode: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let acquisitions = Family::<Labels, Counter>::default();
        let releases = Family::<Labels, Counter>::default();
        let renewals = Family::<Labels, Counter>::default();
        let sweeps = Family::<Labels, Counter>::default();
        let ended = Family::<Labels, Gauge>::default();
        let success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let forced = Counter::default();
        let wait = Histogram::new(exponential_buckets(0.0005, 2.0, 22));
        let hold = Histogram::new(exponential_buckets(0.01, 2.0, 24));
        let group = Histogram::new(exponential_buckets(1.0, 2.0, 7));
        let (held, waiting, unhealthy, last_fence) = (
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
        );
        registry.register(
            "locksmith_acquisitions",
            "Acquire requests answered, by outcome (granted, busy, wait_timed_out, deadlock, ...)",
            acquisitions.clone(),
        );
        registry.register(
            "locksmith_releases",
            "Tenures ended through this server, by reason",
            releases.clone(),
        );
        registry.register(
            "locksmith_renewals",
            "Renew requests, by outcome (renewed, lost)",
            renewals.clone(),
        );
        registry.register(
            "locksmith_sweeps",
            "Locks ended by the sweeper, by rule",
            sweeps.clone(),
        );
        registry.register(
            "locksmith_history_ended",
            "Tenures ended in the kept history of the store (all servers), by reason: stolen, forced, lease_expired, ...",
            ended.clone(),
        );
        registry.register(
            "locksmith_forced_releases",
            "Locks ended by an administrator",
            forced.clone(),
        );
        registry.register(
            "locksmith_wait_seconds",
            "Time a granted request waited in one long poll",
            wait.clone(),
        );
        registry.register(
            "locksmith_hold_seconds",
            "Time a released lock was held",
            hold.clone(),
        );
        registry.register(
            "locksmith_store_calls_per_commit",
            "Calls the embedded store's thread of calls committed at once (queued while one ran)",
            group.clone(),
        );
        registry.register("locksmith_held_locks", "Locks held now", held.clone());
        registry.register("locksmith_waiters", "Requests queued now", waiting.clone());
        registry.register(
            "locksmith_unhealthy_locks",
            "Held locks that are stale, expired or dead",
            unhealthy.clone(),
        );
        registry.register(
            "locksmith_success_ratio",
            "Granted ÷ (granted + waits timed out + deadlocks refused) in the kept history",
            success.clone(),
        );
        registry.register(
            "locksmith_last_fence",
            "The last fencing token issued",
            last_fence.clone(),
        );
        Metrics {
            registry,
            acquisitions,
            releases,
            renewals,
            sweeps,
            ended,
            forced,
            wait,
            hold,
            held,
            waiting,
            unhealthy,
            last_fence,
            success,
            group,
            encode: Mutex::new(()),
        }
    }

    /// An acquire answered with `outcome` after waiting `waited`.
    pub fn acquired(&self, outcome: &str, waited: Duration) {
        self.acquisitions
            .get_or_create(&label("outcome", outcome))
            .inc();
        if outcome == "granted" {
            self.wait.observe(waited.as_secs_f64());
        }
    }
    /// A tenure ended with `reason` after `held`.
    pub fn released(&self, reason: &str, held: Option<Duration>) {
        self.releases.get_or_create(&label("reason", reason)).inc();
        if let Some(h) = held {
            self.hold.observe(h.as_secs_f64());
        }
    }
    /// A renew answered with `outcome`.
    pub fn renewed(&self, outcome: &str) {
        self.renewals
            .get_or_create(&label("outcome", outcome))
            .inc();
    }
    /// Locks ended by an administrator.
    pub fn forced(&self, n: usize) {
        self.forced.inc_by(n as u64);
    }
    /// A lock ended by the sweeper under `rule`.
    pub fn swept(&self, rule: &str) {
        self.sweeps.get_or_create(&label("rule", rule)).inc();
    }

    /// The text exposition, with the gauges set from `stats`.
    pub fn render(&self, stats: Option<&Stats>) -> String {
        let _one = self.encode.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stats {
            self.held.set(s.held as i64);
            self.waiting.set(s.waiting as i64);
            self.unhealthy.set(s.unhealthy as i64);
            self.last_fence.set(s.last_fence as i64);
            if let Some(r) = s.success_rate {
                self.success.set(r);
            }
            for (reason, n) in &s.releases {
                self.ended
                    .get_or_create(&label("reason", reason))
                    .set(*n as i64);
            }
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
