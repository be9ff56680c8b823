//! Client-side pacing per rate-limit bucket, so that a steady run never receives a 429.
//!
//! Each bucket is a GCRA limiter (`governor`) at `limit × headroom` requests per minute with a
//! burst of **one**. Why burst one: Ironclad (and the simulator) count requests per fixed
//! window. A GCRA limiter that allows a burst `B` on top of rate `R` can put `R·W + B` requests
//! into one window `W` (a full burst just before a boundary, then the steady rate); with `B = 1`
//! requests are spaced at least `1/R` apart, so any window of length `W` holds at most
//! `ceil(R·W)` of them, which is below the limit whenever `headroom ≤ 1`. The headroom (default
//! 0.95) absorbs what the client cannot control: network jitter bunching requests on arrival.
//!
//! A 429 that arrives anyway slows its bucket down: the rate is halved (at most once per
//! second, down to one eighth) and restored step by step (doubling) after a quiet period, and a
//! `Retry-After` pauses the whole bucket until then, so requests queued behind the one that was
//! refused do not walk into the same wall.
//!
//! Each bucket also has a FIFO gate: a request holds it from the moment it starts waiting for
//! its slot until it holds a concurrency permit and is about to send (see [`Paced`]). So a
//! request never sits on one of the shared concurrency permits while it waits for its bucket
//! (a slow PATCH/DELETE bucket cannot starve the fast buckets), and the next request of the
//! bucket cannot be granted its slot before the previous one is on its way, which bounds how
//! much a wait for a permit can bunch sends: any server window sees at most one request more
//! than the limiter's `ceil(R·W)`, which the headroom covers.
//!
//! What does not live here: the per-request retry delay (see [`super::retry`]) and the
//! concurrency limit (a semaphore in [`super::http`]). [`ironclad_bucket`] is the only
//! Ironclad-specific piece: other SCIM servers get no pacer, or their own classifier.

use crate::config::RateLimits;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
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

/// Lowest fraction of the configured rate a bucket slows down to after 429s.
const MIN_FACTOR: f64 = 0.125;
/// Consecutive 429s closer together than this halve the rate only once.
const SLOWDOWN_GAP: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct BucketState {
    limiter: Arc<DefaultDirectRateLimiter>,
    /// Fraction of the configured rate in force (1.0 normally).
    factor: f64,
    /// When the factor may next be doubled back up.
    restore_at: Option<Instant>,
    /// Last time the factor was halved.
    last_slowdown: Option<Instant>,
    /// No request of this bucket starts before this instant (a `Retry-After`).
    paused_until: Option<Instant>,
}

#[derive(Debug)]
struct Bucket {
    name: &'static str,
    /// The FIFO gate (tokio's mutex queues waiters fairly).
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Requests per minute aimed at, headroom already applied.
    per_minute: f64,
    /// std `Mutex`: held only to read or swap the state, never across an `.await`.
    state: Mutex<BucketState>,
}

fn limiter(per_minute: f64) -> Arc<DefaultDirectRateLimiter> {
    let per_minute = per_minute.max(0.01);
    let period = Duration::from_secs_f64(60.0 / per_minute).max(Duration::from_nanos(1));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(quota))
}

/// A granted slot: how long the request waited for it, and the bucket's gate, held until the
/// request has its concurrency permit.
#[derive(Debug)]
pub struct Paced {
    /// Time spent waiting for the gate and the slot.
    pub waited: Duration,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// Per-bucket pacing. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Pacer {
    buckets: Vec<Bucket>,
    recovery: Duration,
}

impl Pacer {
    /// A pacer with the given (bucket, requests per minute) limits, each aimed at
    /// `limit × headroom`.
    pub fn new(limits: &[(&'static str, u32)], headroom: f64) -> Self {
        let headroom = headroom.clamp(0.01, 1.0);
        let buckets = limits
            .iter()
            .map(|(name, limit)| {
                let per_minute = f64::from(*limit) * headroom;
                Bucket {
                    name,
                    gate: Arc::new(tokio::sync::Mutex::new(())),
                    per_minute,
                    state: Mutex::new(BucketState {
                        limiter: limiter(per_minute),
                        factor: 1.0,
                        restore_at: None,
                        last_slowdown: None,
                        paused_until: None,
                    }),
                }
            })
            .collect();
        Pacer {
            buckets,
            recovery: Duration::from_secs(60),
        }
    }

    /// Ironclad's four buckets with the configured limits.
    pub fn ironclad(limits: &RateLimits) -> Self {
        Pacer::new(
            &[
                (USERS_READ_WRITE, limits.users_read_write),
                (USERS_PATCH_DELETE, limits.users_patch_delete),
                (GROUPS, limits.groups),
                (OTHER, limits.other),
            ],
            limits.headroom,
        )
    }

    /// How long a slowed bucket stays at its reduced rate before each doubling back up
    /// (default 60 s: one documented rate-limit window).
    pub fn with_recovery(mut self, d: Duration) -> Self {
        self.recovery = d;
        self
    }

    fn bucket(&self, name: &str) -> Option<&Bucket> {
        self.buckets.iter().find(|b| b.name == name)
    }

    /// The rate currently aimed at in a bucket, requests per minute (`None`: unknown bucket).
    pub fn current_rate(&self, name: &str) -> Option<f64> {
        let b = self.bucket(name)?;
        let st = b.state.lock().ok()?;
        Some(b.per_minute * st.factor)
    }

    /// Waits until a request in `bucket` may start. Keep the returned [`Paced`] until the
    /// request holds its concurrency permit, then drop it. Unknown buckets are not paced.
    pub async fn acquire(&self, bucket: &str) -> Paced {
        let Some(b) = self.bucket(bucket) else {
            return Paced {
                waited: Duration::ZERO,
                _gate: None,
            };
        };
        let start = Instant::now();
        let gate = b.gate.clone().lock_owned().await;
        let done = |start: Instant| Paced {
            waited: start.elapsed(),
            _gate: Some(gate),
        };
        loop {
            let (lim, pause) = {
                let Ok(mut st) = b.state.lock() else {
                    return done(start);
                };
                let now = Instant::now();
                if let Some(at) = st.restore_at {
                    if now >= at {
                        st.factor = (st.factor * 2.0).min(1.0);
                        st.limiter = limiter(b.per_minute * st.factor);
                        st.restore_at = (st.factor < 1.0).then(|| now + self.recovery);
                        tracing::info!(
                            bucket = b.name,
                            rate_per_minute = b.per_minute * st.factor,
                            "pacing: bucket speeding back up"
                        );
                    }
                }
                let pause = st
                    .paused_until
                    .and_then(|t| t.checked_duration_since(now))
                    .filter(|d| !d.is_zero());
                (st.limiter.clone(), pause)
            };
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
                continue;
            }
            lim.until_ready().await;
            // A 429 may have paused the bucket while this request waited for its slot.
            let paused = b
                .state
                .lock()
                .ok()
                .and_then(|st| st.paused_until)
                .is_some_and(|t| t > Instant::now());
            if !paused {
                return done(start);
            }
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
            st.limiter = limiter(b.per_minute * st.factor);
            st.last_slowdown = Some(now);
            tracing::warn!(
                bucket = b.name,
                rate_per_minute = b.per_minute * st.factor,
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

    /// The property the pacer exists for: a fixed-window counter never sees more than its
    /// limit in any window, wherever the windows start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steady_run_never_exceeds_a_fixed_window_limit() {
        // 1200/min = 20/s; windows of 100 ms hold at most 2 at the full limit.
        let pacer = Arc::new(Pacer::new(&[("b", 1200)], 0.95));
        let started = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..8 {
            let p = pacer.clone();
            handles.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..6 {
                    let slot = p.acquire("b").await;
                    times.push(started.elapsed());
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
        let window = Duration::from_secs(1);
        let limit = 20;
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|u| **u < *t + window).count();
            assert!(
                in_window <= limit,
                "{in_window} requests in 1 s starting at {t:?}"
            );
        }
        // 48 requests at 19/s take about 2.5 s: the pacer did pace.
        assert!(
            times.last().unwrap() >= &Duration::from_millis(2300),
            "{times:?}"
        );
    }

    #[tokio::test]
    async fn a_429_halves_the_rate_once_per_gap_and_pauses_for_retry_after() {
        let pacer = Pacer::new(&[("b", 600)], 1.0).with_recovery(Duration::from_millis(200));
        assert_eq!(pacer.current_rate("b"), Some(600.0));
        pacer.throttled("b", Some(Duration::from_millis(300)));
        pacer.throttled("b", None);
        assert_eq!(pacer.current_rate("b"), Some(300.0));
        let waited = pacer.acquire("b").await.waited;
        assert!(waited >= Duration::from_millis(280), "{waited:?}");
        // After the recovery period the rate doubles back.
        tokio::time::sleep(Duration::from_millis(250)).await;
        pacer.acquire("b").await;
        assert_eq!(pacer.current_rate("b"), Some(600.0));
    }

    #[tokio::test]
    async fn unknown_buckets_are_not_paced() {
        let pacer = Pacer::new(&[("b", 1)], 1.0);
        assert_eq!(pacer.acquire("nope").await.waited, Duration::ZERO);
        assert_eq!(pacer.current_rate("nope"), None);
    }
}
