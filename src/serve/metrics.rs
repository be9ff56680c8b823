//! Prometheus metrics of the server (`/metrics`, OpenMetrics text format through the
//! `prometheus-client` crate): runs by trigger and outcome, changes applied by action, removals
//! held by the safety rules, Ironclad requests by bucket and status with 429s, retries and the
//! time spent waiting for rate limits (copied from the client's own counters at scrape time),
//! source read duration and size, webhook requests by provider and verdict, and the time of the
//! last successful run.
//!
//! What does not live here: deciding what a verdict or an outcome is (the webhook handlers and
//! the runner report them).

use crate::ironclad::IroncladClient;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

type Labels = Vec<(&'static str, String)>;

/// Every series the server exports.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    changes: Family<Labels, Counter>,
    removals_held: Gauge,
    requests: Family<Labels, Counter>,
    throttled: Counter,
    retries: Counter,
    rate_wait: Counter<f64, AtomicU64>,
    source_seconds: Gauge<f64, AtomicU64>,
    source_entries: Gauge,
    webhooks: Family<Labels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    client: Option<Arc<IroncladClient>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The registry, reading the Ironclad client's counters at each scrape when given.
    pub fn new(client: Option<Arc<IroncladClient>>) -> Metrics {
        let mut registry = Registry::with_prefix("ironbridge");
        let m = Metrics {
            runs: Family::default(),
            changes: Family::default(),
            removals_held: Gauge::default(),
            requests: Family::default(),
            throttled: Counter::default(),
            retries: Counter::default(),
            rate_wait: Counter::default(),
            source_seconds: Gauge::default(),
            source_entries: Gauge::default(),
            webhooks: Family::default(),
            last_success: Gauge::default(),
            client,
            registry: Registry::default(),
        };
        registry.register(
            "runs",
            "Reconciliation runs by trigger and outcome (skipped: due while another ran)",
            m.runs.clone(),
        );
        registry.register(
            "changes",
            "Writes applied to Ironclad by action",
            m.changes.clone(),
        );
        registry.register(
            "removals_held",
            "Removals held back by the safety rules in the last run",
            m.removals_held.clone(),
        );
        registry.register(
            "ironclad_requests",
            "Requests to Ironclad by rate-limit bucket and HTTP status (0: no answer)",
            m.requests.clone(),
        );
        registry.register(
            "ironclad_throttled",
            "429 answers from Ironclad",
            m.throttled.clone(),
        );
        registry.register(
            "ironclad_retries",
            "Ironclad request attempts beyond the first",
            m.retries.clone(),
        );
        registry.register(
            "ironclad_rate_limit_wait_seconds",
            "Seconds requests waited for their rate-limit bucket",
            m.rate_wait.clone(),
        );
        registry.register(
            "source_read_seconds",
            "Seconds the last run spent reading the source and evaluating the mapping",
            m.source_seconds.clone(),
        );
        registry.register(
            "source_entries",
            "Users and groups the last source read returned",
            m.source_entries.clone(),
        );
        registry.register(
            "webhook_requests",
            "Webhook requests by provider and verdict",
            m.webhooks.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time the last successful run finished",
            m.last_success.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a run's outcome.
    pub fn run(&self, trigger: &str, outcome: &str) {
        self.runs
            .get_or_create(&vec![
                ("trigger", trigger.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        if outcome == "succeeded" {
            self.last_success
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
    }

    /// Counts applied writes of one action.
    pub fn changes(&self, action: &str, n: u64) {
        self.changes
            .get_or_create(&vec![("action", action.to_string())])
            .inc_by(n);
    }

    /// The removals the last run held back.
    pub fn removals_held(&self, n: usize) {
        self.removals_held.set(n as i64);
    }

    /// The last source read.
    pub fn source_read(&self, seconds: f64, entries: Option<usize>) {
        self.source_seconds.set(seconds);
        if let Some(e) = entries {
            self.source_entries.set(e as i64);
        }
    }

    /// Counts one webhook request's verdict.
    pub fn webhook(&self, provider: &str, verdict: &str) {
        self.webhooks
            .get_or_create(&vec![
                ("provider", provider.to_string()),
                ("verdict", verdict.to_string()),
            ])
            .inc();
    }

    /// How many webhook requests got a verdict (tests and benchmarks).
    pub fn webhook_count(&self, provider: &str, verdict: &str) -> u64 {
        self.webhooks
            .get(&vec![
                ("provider", provider.to_string()),
                ("verdict", verdict.to_string()),
            ])
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// Copies the client's cumulative counters into the exported ones (by difference, so the
    /// exported series stay monotonic counters).
    fn sync_client(&self) {
        let Some(client) = &self.client else { return };
        let s = client.stats();
        for ((bucket, status), n) in &s.requests {
            let c = self.requests.get_or_create(&vec![
                ("bucket", bucket.clone()),
                ("status", status.to_string()),
            ]);
            let have = c.get();
            if *n > have {
                c.inc_by(n - have);
            }
        }
        let sync = |c: &Counter, n: u64| {
            let have = c.get();
            if n > have {
                c.inc_by(n - have);
            }
        };
        sync(&self.throttled, s.throttled);
        sync(&self.retries, s.retries);
        let have = self.rate_wait.get();
        if s.pacing_wait_secs > have {
            self.rate_wait.inc_by(s.pacing_wait_secs - have);
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        self.sync_client();
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_and_labelled() {
        let m = Metrics::new(None);
        m.run("schedule", "succeeded");
        m.run("schedule", "skipped");
        m.changes("create", 3);
        m.webhook("okta", "accepted");
        m.removals_held(2);
        let t = m.render();
        assert!(
            t.contains("ironbridge_runs_total{trigger=\"schedule\",outcome=\"skipped\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("ironbridge_changes_total{action=\"create\"} 3"),
            "{t}"
        );
        assert!(t.contains("ironbridge_removals_held 2"), "{t}");
        assert!(
            t.contains(
                "ironbridge_webhook_requests_total{provider=\"okta\",verdict=\"accepted\"} 1"
            ),
            "{t}"
        );
        assert!(
            t.contains("ironbridge_last_success_timestamp_seconds"),
            "{t}"
        );
        assert_eq!(m.webhook_count("okta", "accepted"), 1);
    }
}
