//! Client-side pacing per rate-limit bucket, so that a steady run never receives a 429.
//!
//! Each bucket is a sliding-window budget: at most `limit × headroom` requests may be
//! *outstanding* within any window of the bucket's length (Ironclad documents one minute). A
//! request counts from the moment it is granted until one window after its response arrived.
//! Its arrival at the server lies somewhere between those two instants, so whatever network
//! jitter does, any server window of that length (fixed or sliding, wherever it starts) sees at
//! most `limit × headroom` of this client's requests. Within that budget requests go at once:
//! a small run (a webhook's handful of people) is never spread over seconds, and a large run
//! sends a window's budget, then one request for each that ages out, which is the server's own
//! bound. The headroom (default 0.95) leaves room for other clients of the same account and for
//! clock differences.
//!
//! No limiter crate offers this: `governor` (GCRA) spaces requests at a steady rate, which
//! delays a small burst by up to a window for nothing, or, given a burst allowance, can put
//! `rate × window + burst` requests into one server window. The counting here is a deque of
//! response times and an in-flight count per bucket.
//!
//! A 429 that arrives anyway slows its bucket down: the budget is halved (at most once per
//! second, down to one eighth) and restored step by step (doubling) after a quiet period, and a
//! `Retry-After` pauses the whole bucket until then, so requests queued behind the one that was
//! refused do not walk into the same wall.
//!
//! Each bucket also has a FIFO gate: a request holds it from the moment it starts waiting for
//! its slot until it holds a concurrency permit and is about to send (see [`Paced`]). So a
//! request never sits on one of the shared concurrency permits while it waits for its bucket
//! (a slow PATCH/DELETE bucket cannot starve the fast buckets), and requests of one bucket are
//! granted in the order they asked.
//!
//! What does not live here: the per-request retry delay (see [`super::retry`]) and the
//! concurrency limit (a semaphore in [`super::http`]). [`ironclad_bucket`] is the only
//! Ironclad-specific piece: other SCIM servers get no pacer, or their own classifier.

use crate::config::RateLimits;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Maps a request (method, path relative to the SCIM base) to its bucket name.
pub type Classifier = fn(&reqwest::Method, &str) -> &'static str;

/// Ironclad's bucket for GET, PUT, POST on /Users.
pub const USERS_READ_WRITE: &str = "users_read_write";
/// Ironclad's bucket for PATCH, DELETE on /Users.
pub const USERS_PATCH_DELETE: &str = "users_patch_delete";
/// Ironclad's bucket for all of /Groups.
pub const GROUPS: &str = "groups";
/// Ironclad's bucket for everything else.
pub const OTHER: &str = "other";

/// Ironclad's documented bucket of a request. `path` is relative to the SCIM base
/// (`/Users/abc`), with or without a query string.
pub fn ironclad_bucket(method: &reqwest::Method, path: &str) -> &'static str {
    let p = path.split('?').next().unwrap_or("");
    let first = p.trim_start_matches('/').split('/').next().unwrap_or("");
    if first.eq_ignore_ascii_case("Users") {
        if *method == reqwest::Method::PATCH || *method == reqwest::Method::DELETE {
            USERS_PATCH_DELETE
        } else {
            USERS_READ_WRITE
        }
    } else if first.eq_ignore_ascii_case("Groups") {
        GROUPS
    } else {
        OTHER
    }
}

/// Every request in one bucket.
pub fn single_bucket(_: &reqwest::Method, _: &str) -> &'static str {
    "all"
}

/// Lowest fraction of the configured budget a bucket slows down to after 429s.
const MIN_FACTOR: f64 = 0.125;
/// Consecutive 429s closer together than this halve the budget only once.
const SLOWDOWN_GAP: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct BucketState {
    /// Fraction of the configured budget in force (1.0 normally).
    factor: f64,
    /// When the factor may next be doubled back up.
    restore_at: Option<Instant>,
    /// Last time the factor was halved.
    last_slowdown: Option<Instant>,
    /// No request of this bucket starts before this instant (a `Retry-After`).
    paused_until: Option<Instant>,
    /// Requests granted whose response has not arrived yet.
    in_flight: usize,
    /// When the responses of recent requests arrived, oldest first (pruned to one window).
    answered: VecDeque<Instant>,
}

#[derive(Debug)]
struct Bucket {
    name: &'static str,
    /// The FIFO gate (tokio's mutex queues waiters fairly).
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Requests per window aimed at, headroom already applied.
    budget: f64,
    /// The server's window length.
    window: Duration,
    /// std `Mutex`: held only to read or change the state, never across an `.await`.
    state: Mutex<BucketState>,
    /// Woken when a request of this bucket is answered.
    answered: tokio::sync::Notify,
}

impl Bucket {
    fn cap(&self, st: &BucketState) -> usize {
        ((self.budget * st.factor).floor() as usize).max(1)
    }
}

/// A granted slot: how long the request waited for it, the bucket's gate (held until the
/// request has its concurrency permit: call [`Paced::release_gate`]) and the request's place in
/// the window budget, which is given back one window after the value is dropped. Keep it until
/// the response has arrived.
#[derive(Debug)]
pub struct Paced {
    /// Time spent waiting for the gate and the slot.
    pub waited: Duration,
    gate: Option<tokio::sync::OwnedMutexGuard<()>>,
    bucket: Option<Arc<Bucket>>,
}

impl Paced {
    /// Lets the next request of the bucket be considered (the request is about to send).
    pub fn release_gate(&mut self) {
        self.gate = None;
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        if let Some(b) = self.bucket.take() {
            if let Ok(mut st) = b.state.lock() {
                st.in_flight = st.in_flight.saturating_sub(1);
                st.answered.push_back(Instant::now());
            }
            b.answered.notify_waiters();
        }
    }
}

/// Per-bucket pacing. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Pacer {
    buckets: Vec<Arc<Bucket>>,
    recovery: Duration,
}

/// What a request waiting for its bucket does next.
enum Next {
    Go,
    Sleep(Duration),
    WaitForAnswer,
}

impl Pacer {
    /// A pacer with the given (bucket, requests per window) limits, each aimed at
    /// `limit × headroom`.
    pub fn new(limits: &[(&'static str, u32)], headroom: f64, window: Duration) -> Self {
        let headroom = headroom.clamp(0.01, 1.0);
        let window = window.max(Duration::from_millis(1));
        let buckets = limits
            .iter()
            .map(|(name, limit)| {
                Arc::new(Bucket {
                    name,
                    gate: Arc::new(tokio::sync::Mutex::new(())),
                    budget: f64::from(*limit) * headroom,
                    window,
                    state: Mutex::new(BucketState {
                        factor: 1.0,
                        restore_at: None,
                        last_slowdown: None,
                        paused_until: None,
                        in_flight: 0,
                        answered: VecDeque::new(),
                    }),
                    answered: tokio::sync::Notify::new(),
                })
            })
            .collect();
        Pacer {
            buckets,
            recovery: window,
        }
    }

    /// Ironclad's four buckets with the configured limits and window.
    pub fn ironclad(limits: &RateLimits) -> Self {
        Pacer::new(
            &[
                (USERS_READ_WRITE, limits.users_read_write),
                (USERS_PATCH_DELETE, limits.users_patch_delete),
                (GROUPS, limits.groups),
                (OTHER, limits.other),
            ],
            limits.headroom,
            limits.window,
        )
    }

    /// How long a slowed bucket stays at its reduced budget before each doubling back up
    /// (default: one window).
    pub fn with_recovery(mut self, d: Duration) -> Self {
        self.recovery = d;
        self
    }

    fn bucket(&self, name: &str) -> Option<&Arc<Bucket>> {
        self.buckets.iter().find(|b| b.name == name)
    }

    /// The budget currently aimed at in a bucket, in requests per minute (`None`: unknown
    /// bucket).
    pub fn current_rate(&self, name: &str) -> Option<f64> {
        let b = self.bucket(name)?;
        let st = b.state.lock().ok()?;
        Some(b.budget * st.factor * 60.0 / b.window.as_secs_f64())
    }

    /// Waits until a request in `bucket` may start. Call [`Paced::release_gate`] once the
    /// request holds its concurrency permit, and drop the value when its response has arrived.
    /// Unknown buckets are not paced.
    pub async fn acquire(&self, bucket: &str) -> Paced {
        let Some(b) = self.bucket(bucket) else {
            return Paced {
                waited: Duration::ZERO,
                gate: None,
                bucket: None,
            };
        };
        let start = Instant::now();
        let gate = b.gate.clone().lock_owned().await;
        loop {
            // Registered before the state is read, so an answer in between is not missed.
            let answered = b.answered.notified();
            let next = match b.state.lock() {
                Ok(mut st) => self.next(b, &mut st),
                Err(_) => Next::Go,
            };
            match next {
                Next::Go => {
                    return Paced {
                        waited: start.elapsed(),
                        gate: Some(gate),
                        bucket: Some(b.clone()),
                    }
                }
                Next::Sleep(d) => tokio::time::sleep(d).await,
                Next::WaitForAnswer => answered.await,
            }
        }
    }

    /// Decides for the request at the head of the bucket's queue; on `Go` it is counted.
    fn next(&self, b: &Bucket, st: &mut BucketState) -> Next {
        let now = Instant::now();
        if let Some(at) = st.restore_at {
            if now >= at {
                st.factor = (st.factor * 2.0).min(1.0);
                st.restore_at = (st.factor < 1.0).then(|| now + self.recovery);
                tracing::info!(
                    bucket = b.name,
                    requests_per_window = b.budget * st.factor,
                    "pacing: bucket speeding back up"
                );
            }
        }
        if let Some(p) = st
            .paused_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
        {
            return Next::Sleep(p);
        }
        while st
            .answered
            .front()
            .is_some_and(|t| now.duration_since(*t) >= b.window)
        {
            st.answered.pop_front();
        }
        if st.in_flight + st.answered.len() < b.cap(st) {
            st.in_flight += 1;
            return Next::Go;
        }
        match st.answered.front() {
            Some(t) => Next::Sleep((*t + b.window).saturating_duration_since(now)),
            None => Next::WaitForAnswer,
        }
    }

    /// A request in `bucket` got a 429: slow the bucket down and, with a `Retry-After`, pause it.
    pub fn throttled(&self, bucket: &str, retry_after: Option<Duration>) {
        let Some(b) = self.bucket(bucket) else {
            return;
        };
        let Ok(mut st) = b.state.lock() else {
            return;
        };
        let now = Instant::now();
        if let Some(d) = retry_after {
            let until = now + d;
            if st.paused_until.is_none_or(|t| t < until) {
                st.paused_until = Some(until);
            }
        }
        let recent = st
            .last_slowdown
            .is_some_and(|t| now.duration_since(t) < SLOWDOWN_GAP);
        if !recent && st.factor > MIN_FACTOR {
            st.factor = (st.factor / 2.0).max(MIN_FACTOR);
            st.last_slowdown = Some(now);
            tracing::warn!(
                bucket = b.name,
                requests_per_window = b.budget * st.factor,
                "pacing: 429 received, bucket slowed down"
            );
        }
        st.restore_at = Some(now + self.recovery);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;

    #[test]
    fn ironclad_buckets_follow_the_documented_table() {
        assert_eq!(ironclad_bucket(&Method::GET, "/Users"), USERS_READ_WRITE);
        assert_eq!(ironclad_bucket(&Method::POST, "/Users"), USERS_READ_WRITE);
        assert_eq!(ironclad_bucket(&Method::PUT, "/Users/1"), USERS_READ_WRITE);
        assert_eq!(
            ironclad_bucket(&Method::GET, "/Users?filter=x"),
            USERS_READ_WRITE
        );
        assert_eq!(
            ironclad_bucket(&Method::PATCH, "/Users/1"),
            USERS_PATCH_DELETE
        );
        assert_eq!(
            ironclad_bucket(&Method::DELETE, "/Users/1"),
            USERS_PATCH_DELETE
        );
        assert_eq!(ironclad_bucket(&Method::PATCH, "/Groups/1"), GROUPS);
        assert_eq!(ironclad_bucket(&Method::GET, "/Groups"), GROUPS);
        assert_eq!(ironclad_bucket(&Method::GET, "/Schemas"), OTHER);
        assert_eq!(ironclad_bucket(&Method::GET, "/UsersX"), OTHER);
    }

    /// Runs `tasks × each` requests through bucket "b", each answered `latency` after it is
    /// granted; returns the grant times.
    async fn grants(
        pacer: Arc<Pacer>,
        tasks: usize,
        each: usize,
        latency: Duration,
    ) -> Vec<Duration> {
        let started = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let p = pacer.clone();
            handles.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..each {
                    let mut slot = p.acquire("b").await;
                    times.push(started.elapsed());
                    slot.release_gate();
                    tokio::time::sleep(latency).await;
                    drop(slot);
                }
                times
            }));
        }
        let mut times = Vec::new();
        for h in handles {
            times.extend(h.await.unwrap());
        }
        times.sort();
        times
    }

    /// The property the pacer exists for: a window counter never sees more than its limit in
    /// any window, wherever the windows start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_never_exceeds_the_limit_in_any_window() {
        // 20 per 300 ms window, aimed at 19.
        let window = Duration::from_millis(300);
        let pacer = Arc::new(Pacer::new(&[("b", 20)], 0.95, window));
        let times = grants(pacer, 8, 6, Duration::from_millis(5)).await;
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|u| **u < *t + window).count();
            assert!(
                in_window <= 19,
                "{in_window} requests in a window from {t:?}"
            );
        }
        // 48 requests at 19 a window need three windows: the pacer did pace...
        assert!(times[47] >= 2 * window, "{times:?}");
        // ...and a window's budget went at once rather than spread over the window.
        assert!(times[18] < window / 3, "{times:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_counts_until_one_window_after_its_answer() {
        // Two per 200 ms window; each answer takes 150 ms. The third request may go only once
        // the first answer is a window old (150 + 200 ms), not one window after it was sent.
        let window = Duration::from_millis(200);
        let pacer = Arc::new(Pacer::new(&[("b", 2)], 1.0, window));
        let times = grants(pacer, 3, 1, Duration::from_millis(150)).await;
        assert!(times[1] < Duration::from_millis(50), "{times:?}");
        assert!(times[2] >= Duration::from_millis(340), "{times:?}");
    }

    #[tokio::test]
    async fn a_429_halves_the_budget_once_per_gap_and_pauses_for_retry_after() {
        let pacer = Pacer::new(&[("b", 600)], 1.0, Duration::from_secs(60))
            .with_recovery(Duration::from_millis(200));
        assert_eq!(pacer.current_rate("b"), Some(600.0));
        pacer.throttled("b", Some(Duration::from_millis(300)));
        pacer.throttled("b", None);
        assert_eq!(pacer.current_rate("b"), Some(300.0));
        let waited = pacer.acquire("b").await.waited;
        assert!(waited >= Duration::from_millis(280), "{waited:?}");
        // After the recovery period the budget doubles back.
        tokio::time::sleep(Duration::from_millis(250)).await;
        drop(pacer.acquire("b").await);
        assert_eq!(pacer.current_rate("b"), Some(600.0));
    }

    #[tokio::test]
    async fn unknown_buckets_are_not_paced() {
        let pacer = Pacer::new(&[("b", 1)], 1.0, Duration::from_secs(60));
        assert_eq!(pacer.acquire("nope").await.waited, Duration::ZERO);
        assert_eq!(pacer.current_rate("nope"), None);
    }
}
