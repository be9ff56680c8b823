//! [`ClientStats`]: counters the client keeps for the metrics layer (requests by bucket and
//! status, 429s, retries, time spent waiting for pacing, token fetches). Cheap to update from
//! many tasks; read with [`ClientStats::snapshot`].
//!
//! What does not live here: exporting them (Prometheus text, the admin API).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Live counters. Shared behind an `Arc` by the request layer, the pacer and the token cache.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// (bucket, status) -> count; status 0 means no answer (transport error). A std `Mutex`
    /// is right here: it is held for one map update and never across an `.await`.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    throttled: AtomicU64,
    retries: AtomicU64,
    pacing_wait_micros: AtomicU64,
    token_fetches: AtomicU64,
    unauthorized_refreshes: AtomicU64,
    recovered_creates: AtomicU64,
    duplicates_dropped: AtomicU64,
}

/// A point-in-time copy of [`ClientStats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Requests by (bucket, status); status 0 is a transport error.
    pub requests: BTreeMap<(String, u16), u64>,
    /// 429 answers received.
    pub throttled: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Total time requests waited for their bucket's pacing, seconds.
    pub pacing_wait_secs: f64,
    /// Tokens fetched from the OAuth endpoint.
    pub token_fetches: u64,
    /// Token refreshes caused by a 401.
    pub unauthorized_refreshes: u64,
    /// Creates whose answer was lost but whose resource was found by a lookup.
    pub recovered_creates: u64,
    /// Duplicate resources dropped while paging.
    pub duplicates_dropped: u64,
}

impl StatsSnapshot {
    /// Total requests with the given status, all buckets.
    pub fn with_status(&self, status: u16) -> u64 {
        self.requests
            .iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }
    /// Total requests in a bucket, all statuses.
    pub fn in_bucket(&self, bucket: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((b, _), _)| b == bucket)
            .map(|(_, n)| n)
            .sum()
    }
}

impl ClientStats {
    /// Counts one attempt's outcome.
    pub fn record_request(&self, bucket: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((bucket.to_string(), status)).or_insert(0) += 1;
        }
        if status == 429 {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// Counts a retry.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds pacing wait time.
    pub fn record_pacing_wait(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.pacing_wait_micros.fetch_add(micros, Ordering::Relaxed);
    }
    /// Counts a token fetch.
    pub fn record_token_fetch(&self) {
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a refresh caused by a 401.
    pub fn record_unauthorized_refresh(&self) {
        self.unauthorized_refreshes.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a create resolved by lookup.
    pub fn record_recovered_create(&self) {
        self.recovered_creates.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts duplicates dropped while paging.
    pub fn record_duplicates(&self, n: u64) {
        self.duplicates_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.lock().map(|m| m.clone()).unwrap_or_default(),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            pacing_wait_secs: self.pacing_wait_micros.load(Ordering::Relaxed) as f64 / 1e6,
            token_fetches: self.token_fetches.load(Ordering::Relaxed),
            unauthorized_refreshes: self.unauthorized_refreshes.load(Ordering::Relaxed),
            recovered_creates: self.recovered_creates.load(Ordering::Relaxed),
            duplicates_dropped: self.duplicates_dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_bucket_and_status() {
        let s = ClientStats::default();
        s.record_request("users_read_write", 200);
        s.record_request("users_read_write", 200);
        s.record_request("groups", 429);
        s.record_pacing_wait(Duration::from_millis(1500));
        let snap = s.snapshot();
        assert_eq!(snap.with_status(200), 2);
        assert_eq!(snap.in_bucket("groups"), 1);
        assert_eq!(snap.throttled, 1);
        assert!((snap.pacing_wait_secs - 1.5).abs() < 1e-9);
    }
}
