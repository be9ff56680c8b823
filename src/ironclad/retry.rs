//! Retry arithmetic: exponential backoff with full jitter, `Retry-After` parsing (seconds or an
//! HTTP date), and the bounded schedule of one request's attempts.
//!
//! What does not live here: which failures are retried and how an unknown POST outcome is
//! resolved (see [`super::http`]), and bucket-wide slow-downs after a 429 (see
//! [`super::pacing`]).
//!
//! Why the delay is computed here rather than with `backon`: backon's exponential backoff adds
//! jitter *on top of* the current delay (`delay + random(0, delay)`), which is "equal-ish"
//! jitter, not the full jitter Ironclad's guidance and AWS's analysis recommend
//! (`random(0, min(cap, base * 2^n))`), and backon cannot substitute a server's `Retry-After`
//! for one step. Full jitter is one line, so it is written out and unit-tested.

use crate::config::RetryPolicy;
use rand::Rng as _;
use std::time::{Duration, Instant, SystemTime};

/// The ceiling of the `n`th retry's delay (n = 0 for the first retry):
/// `min(max_delay, base_delay * 2^n)`.
pub fn backoff_ceiling(policy: &RetryPolicy, n: u32) -> Duration {
    let factor = 2u32.saturating_pow(n.min(31));
    policy
        .base_delay
        .checked_mul(factor)
        .unwrap_or(policy.max_delay)
        .min(policy.max_delay)
}

/// Full jitter: a uniformly random delay in `[0, backoff_ceiling(n)]`.
pub fn full_jitter(policy: &RetryPolicy, n: u32) -> Duration {
    let cap = backoff_ceiling(policy, n);
    let micros = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
    if micros == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::rng().random_range(0..=micros))
}

/// Parses a `Retry-After` value: delay-seconds (an integer; a decimal is accepted too) or an
/// HTTP date, relative to `now`. A date in the past means "now" (zero). Garbage is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Duration::try_from_secs_f64(secs).ok();
        }
        return None;
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// One request's retry budget: attempts so far and time since the first attempt.
#[derive(Debug)]
pub struct Schedule {
    policy: RetryPolicy,
    started: Instant,
    attempts: u32,
    throttled: u32,
}

/// The most 429 answers one request waits out before it gives up, whatever time is left:
/// a server that keeps refusing with `Retry-After: 0` must not be called in a tight loop.
pub const MAX_THROTTLED: u32 = 100;

impl Schedule {
    /// Starts a schedule; call [`Schedule::attempt`] before each try.
    pub fn new(policy: RetryPolicy) -> Self {
        Schedule {
            policy,
            started: Instant::now(),
            attempts: 0,
            throttled: 0,
        }
    }

    /// Records that an attempt is being made.
    pub fn attempt(&mut self) {
        self.attempts += 1;
    }

    /// Takes back the last attempt (a 401 answered by refreshing the token is not a failure of
    /// the request itself).
    pub fn forget_attempt(&mut self) {
        self.attempts = self.attempts.saturating_sub(1);
    }

    /// Takes back the last attempt because it was answered 429: the server did not process
    /// the request and said when to come back, so waiting it out is not a failure and does not
    /// use up `max_attempts`. Such waits are bounded by `max_elapsed` and [`MAX_THROTTLED`].
    pub fn throttled(&mut self) {
        self.attempts = self.attempts.saturating_sub(1);
        self.throttled += 1;
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time since the schedule started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The delay before the next attempt, or `None` when the budget (attempts or total time)
    /// does not allow one. A server's `Retry-After` replaces the jittered delay: the server knows
    /// when its window reopens, and waiting less only earns another 429.
    pub fn next_delay(&self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempts >= self.policy.max_attempts || self.throttled > MAX_THROTTLED {
            return None;
        }
        let tries = self.attempts + self.throttled;
        let delay = match retry_after {
            Some(d) => d,
            None => full_jitter(&self.policy, tries.saturating_sub(1)),
        };
        if self.elapsed() + delay > self.policy.max_elapsed {
            return None;
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_elapsed: Duration::from_secs(60),
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = policy();
        let c: Vec<u128> = (0..6).map(|n| backoff_ceiling(&p, n).as_millis()).collect();
        assert_eq!(c, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_ceiling(&p, 200), Duration::from_millis(1000));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling_and_spreads() {
        let p = policy();
        for n in 0..6 {
            let cap = backoff_ceiling(&p, n);
            let samples: Vec<Duration> = (0..500).map(|_| full_jitter(&p, n)).collect();
            assert!(samples.iter().all(|d| *d <= cap));
            // Full jitter reaches into the lower half of the range too (equal jitter never does).
            assert!(samples.iter().any(|d| *d < cap / 4), "n={n}");
            assert!(samples.iter().any(|d| *d > cap / 2), "n={n}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn schedule_is_bounded_by_attempts() {
        let mut s = Schedule::new(policy());
        for _ in 0..5 {
            s.attempt();
        }
        assert_eq!(s.next_delay(None), None);
        let mut s = Schedule::new(policy());
        s.attempt();
        assert!(s.next_delay(None).unwrap() <= Duration::from_millis(100));
        assert_eq!(
            s.next_delay(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn answers_429_do_not_use_up_attempts_but_are_bounded() {
        let mut s = Schedule::new(policy());
        // Twenty 429s with a Retry-After, more than max_attempts (5): each still gets its wait.
        for _ in 0..20 {
            s.attempt();
            s.throttled();
            assert_eq!(
                s.next_delay(Some(Duration::from_secs(1))),
                Some(Duration::from_secs(1))
            );
        }
        // Failures still count: four more tries and the fifth attempt is the last.
        for _ in 0..4 {
            s.attempt();
            assert!(s.next_delay(None).is_some());
        }
        s.attempt();
        assert_eq!(s.next_delay(None), None);
        // A server that never stops answering 429 is given up on after MAX_THROTTLED waits.
        let mut s = Schedule::new(policy());
        for _ in 0..=MAX_THROTTLED {
            s.attempt();
            s.throttled();
        }
        assert_eq!(s.next_delay(Some(Duration::ZERO)), None);
    }

    #[test]
    fn schedule_is_bounded_by_total_time() {
        let mut p = policy();
        p.max_elapsed = Duration::from_secs(2);
        let mut s = Schedule::new(p);
        s.attempt();
        assert_eq!(s.next_delay(Some(Duration::from_secs(5))), None);
        assert!(s.next_delay(Some(Duration::from_secs(1))).is_some());
    }
}
