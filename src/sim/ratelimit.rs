//! Ironclad's documented rate limits, per bucket, as fixed windows.
//!
//! | bucket | requests | limit per window |
//! |---|---|---|
//! | `users_read_write` | GET, PUT, POST on /scim/v2/Users | 600 |
//! | `users_patch_delete` | PATCH, DELETE on /scim/v2/Users | 50 |
//! | `groups` | all of /scim/v2/Groups | 600 |
//! | `other` | every other SCIM request | 800 |
//!
//! The documented limits are per minute; `--rate-limit-scale F` shortens the window to 60/F
//! seconds with the same counts, so F=60 gives the documented numbers per second and keeps tests
//! fast. A request over the limit is answered 429 with `Retry-After` = whole seconds until the
//! window resets (at least 1). OAuth and `/_sim` requests are not limited.
//!
//! Hand-written rather than `governor` on purpose: governor implements GCRA (a smooth token
//! bucket), whereas a fixed window is both what "N per minute" most plainly means and what makes
//! `Retry-After` ("until the window resets") exact. The state is a handful of counters.
//!
//! What does not live here: deciding a request's bucket for logging ([`Bucket::classify`] is
//! shared with the request log) and injected 429 bursts ([`super::faults`]).

use axum::http::Method;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// The bucket a request is counted in (and logged with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// GET, PUT, POST on Users: 600/min.
    UsersReadWrite,
    /// PATCH, DELETE on Users: 50/min.
    UsersPatchDelete,
    /// All of Groups: 600/min.
    Groups,
    /// Every other SCIM request: 800/min.
    Other,
    /// The OAuth endpoints (not limited).
    Oauth,
    /// The simulator's own `/_sim` API (not limited).
    Sim,
}

impl Bucket {
    /// The bucket of a request.
    pub fn classify(method: &Method, path: &str) -> Bucket {
        if path.starts_with("/_sim") {
            return Bucket::Sim;
        }
        if path.starts_with("/oauth") {
            return Bucket::Oauth;
        }
        let rest = path.strip_prefix("/scim/v2").unwrap_or("");
        let segment = rest.trim_start_matches('/').split('/').next().unwrap_or("");
        match segment {
            "Users" if *method == Method::PATCH || *method == Method::DELETE => {
                Bucket::UsersPatchDelete
            }
            "Users" => Bucket::UsersReadWrite,
            "Groups" => Bucket::Groups,
            _ => Bucket::Other,
        }
    }

    /// Snake-case name, as in the request log.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::UsersReadWrite => "users_read_write",
            Bucket::UsersPatchDelete => "users_patch_delete",
            Bucket::Groups => "groups",
            Bucket::Other => "other",
            Bucket::Oauth => "oauth",
            Bucket::Sim => "sim",
        }
    }

    /// Documented requests per minute; `None` for unlimited buckets.
    pub fn per_minute(self) -> Option<u32> {
        match self {
            Bucket::UsersReadWrite => Some(600),
            Bucket::UsersPatchDelete => Some(50),
            Bucket::Groups => Some(600),
            Bucket::Other => Some(800),
            Bucket::Oauth | Bucket::Sim => None,
        }
    }

    fn index(self) -> Option<usize> {
        match self {
            Bucket::UsersReadWrite => Some(0),
            Bucket::UsersPatchDelete => Some(1),
            Bucket::Groups => Some(2),
            Bucket::Other => Some(3),
            Bucket::Oauth | Bucket::Sim => None,
        }
    }
}

/// Fixed-window counters for the four limited buckets.
#[derive(Debug)]
pub struct RateLimiter {
    window: Duration,
    start: Instant,
    /// (window number, requests admitted in it) per bucket.
    counters: [(u64, u32); 4],
}

/// A refusal: the limit that was hit and how long until the window resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Requests allowed per window.
    pub limit: u32,
    /// Whole seconds until the window resets, at least 1.
    pub retry_after_secs: u64,
    /// The window length.
    pub window: Duration,
}

impl RateLimiter {
    /// Windows of 60/`scale` seconds. A non-positive or non-finite scale is treated as 1.
    pub fn new(scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        let window = Duration::from_secs_f64((60.0 / scale).max(0.001));
        RateLimiter {
            window,
            start: Instant::now(),
            counters: [(0, 0); 4],
        }
    }

    /// Admits or refuses one request at `now`.
    pub fn check(&mut self, bucket: Bucket, now: Instant) -> Result<(), Limited> {
        let (Some(i), Some(limit)) = (bucket.index(), bucket.per_minute()) else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let window = self.window.as_nanos().max(1);
        let win = elapsed / window;
        let c = &mut self.counters[i];
        if u128::from(c.0) != win {
            *c = (u64::try_from(win).unwrap_or(u64::MAX), 0);
        }
        if c.1 < limit {
            c.1 += 1;
            return Ok(());
        }
        let left = window * (win + 1) - elapsed;
        let secs = u64::try_from(left.div_ceil(1_000_000_000)).unwrap_or(u64::MAX);
        Err(Limited {
            limit,
            retry_after_secs: secs.max(1),
            window: self.window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        let c = |m: Method, p: &str| Bucket::classify(&m, p).name();
        assert_eq!(c(Method::GET, "/scim/v2/Users"), "users_read_write");
        assert_eq!(c(Method::POST, "/scim/v2/Users"), "users_read_write");
        assert_eq!(c(Method::PUT, "/scim/v2/Users/1"), "users_read_write");
        assert_eq!(c(Method::PATCH, "/scim/v2/Users/1"), "users_patch_delete");
        assert_eq!(c(Method::DELETE, "/scim/v2/Users/1"), "users_patch_delete");
        assert_eq!(c(Method::DELETE, "/scim/v2/Groups/1"), "groups");
        assert_eq!(c(Method::GET, "/scim/v2/Schemas"), "other");
        assert_eq!(c(Method::POST, "/oauth/token"), "oauth");
        assert_eq!(c(Method::GET, "/_sim/state"), "sim");
    }

    #[test]
    fn fixed_windows() {
        let mut rl = RateLimiter::new(60.0); // 1 s windows
        let t0 = rl.start;
        for _ in 0..50 {
            rl.check(Bucket::UsersPatchDelete, t0).unwrap();
        }
        let e = rl
            .check(Bucket::UsersPatchDelete, t0 + Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(e.limit, 50);
        assert_eq!(e.retry_after_secs, 1);
        // Other buckets are independent.
        rl.check(Bucket::UsersReadWrite, t0).unwrap();
        // The next window admits again.
        rl.check(Bucket::UsersPatchDelete, t0 + Duration::from_millis(1000))
            .unwrap();
        // Unlimited buckets.
        for _ in 0..10_000 {
            rl.check(Bucket::Oauth, t0).unwrap();
        }
    }

    #[test]
    fn retry_after_counts_down() {
        let mut rl = RateLimiter::new(1.0); // 60 s windows
        let t0 = rl.start;
        for _ in 0..50 {
            rl.check(Bucket::UsersPatchDelete, t0).unwrap();
        }
        let e = rl
            .check(Bucket::UsersPatchDelete, t0 + Duration::from_millis(10_500))
            .unwrap_err();
        assert_eq!(e.retry_after_secs, 50);
    }
}
