//! Fault injection for tests, set through `POST /_sim/faults` and off by default.
//!
//! Faults apply to SCIM requests only (paths under `/scim/v2`), optionally only to some methods.
//! For each request the simulator draws a [`Plan`]: added latency before handling, an injected
//! 429 from a burst, an injected error status, a dropped connection (before or after the request
//! was applied), added latency after applying (a timeout after the write committed). Draws come
//! from a seedable RNG so a test can make them reproducible.
//!
//! What does not live here: carrying the plan out (the request middleware in [`super`]) and the
//! real rate limits ([`super::ratelimit`]).

use axum::http::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The fault set (every field optional in JSON; `POST /_sim/faults` replaces the whole set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Fraction (0..=1) of SCIM requests answered with `error_status` instead of being handled.
    pub error_rate: f64,
    /// The status injected errors carry (default 503).
    pub error_status: u16,
    /// Delay before handling, in milliseconds.
    pub latency_ms: u64,
    /// Delay after the request was applied, before the response (simulates a client timeout
    /// after the write committed).
    pub latency_after_ms: u64,
    /// Fraction (0..=1) of SCIM requests whose connection is closed without a response.
    pub drop_rate: f64,
    /// Drop after applying the request instead of before.
    pub drop_after_apply: bool,
    /// The next N SCIM requests (of the selected methods) are answered 429.
    pub burst_429: u32,
    /// `Retry-After` sent with injected 429s (seconds or an HTTP date); none if unset.
    pub retry_after: Option<String>,
    /// Restrict faults to these methods (e.g. `["POST"]`); all methods if unset.
    pub methods: Option<Vec<String>>,
    /// Seed for the fault RNG (reproducible draws).
    pub seed: Option<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_status: 503,
            latency_ms: 0,
            latency_after_ms: 0,
            drop_rate: 0.0,
            drop_after_apply: false,
            burst_429: 0,
            retry_after: None,
            methods: None,
            seed: None,
        }
    }
}

impl Faults {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        if !(400..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be a 4xx or 5xx status, got {}",
                self.error_status
            ));
        }
        if let Some(ra) = &self.retry_after {
            if axum::http::HeaderValue::from_str(ra).is_err() {
                return Err("retry_after is not a valid header value".into());
            }
        }
        if let Some(ms) = &self.methods {
            for m in ms {
                if Method::from_bytes(m.as_bytes()).is_err() {
                    return Err(format!("methods: {m:?} is not an HTTP method"));
                }
            }
        }
        Ok(())
    }

    fn applies_to(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(ms) => ms.iter().any(|m| m.eq_ignore_ascii_case(method.as_str())),
        }
    }
}

/// What to do to one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Sleep before handling.
    pub latency: Duration,
    /// Sleep after applying, before answering.
    pub latency_after: Duration,
    /// Answer at once with this instead of handling.
    pub immediate: Option<Injected>,
    /// Close the connection without a response.
    pub drop: Option<DropWhen>,
}

/// An injected answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Injected {
    /// A 429 from `burst_429`.
    Burst {
        /// `Retry-After`, if configured.
        retry_after: Option<String>,
    },
    /// An error from `error_rate`.
    Error {
        /// Its status.
        status: u16,
        /// `Retry-After`, if configured (sent with 429 and 503).
        retry_after: Option<String>,
    },
}

/// When a dropped connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropWhen {
    /// Before the request is applied: nothing changed.
    Before,
    /// After the request is applied: the change committed, the client never hears of it.
    After,
}

/// The current faults and their RNG.
#[derive(Debug)]
pub struct FaultState {
    faults: Faults,
    rng: StdRng,
}

impl Default for FaultState {
    fn default() -> Self {
        FaultState {
            faults: Faults::default(),
            rng: StdRng::from_os_rng(),
        }
    }
}

impl FaultState {
    /// The current set (with the burst count still to come).
    pub fn current(&self) -> &Faults {
        &self.faults
    }

    /// Replaces the set.
    pub fn set(&mut self, faults: Faults) {
        self.rng = match faults.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        self.faults = faults;
    }

    /// Draws the plan for one SCIM request.
    pub fn plan(&mut self, method: &Method) -> Plan {
        let f = &mut self.faults;
        if !f.applies_to(method) {
            return Plan::default();
        }
        let mut plan = Plan {
            latency: Duration::from_millis(f.latency_ms),
            latency_after: Duration::from_millis(f.latency_after_ms),
            ..Plan::default()
        };
        if f.burst_429 > 0 {
            f.burst_429 -= 1;
            plan.immediate = Some(Injected::Burst {
                retry_after: f.retry_after.clone(),
            });
            return plan;
        }
        if f.error_rate > 0.0 && self.rng.random_bool(f.error_rate) {
            plan.immediate = Some(Injected::Error {
                status: f.error_status,
                retry_after: f.retry_after.clone(),
            });
            return plan;
        }
        if f.drop_rate > 0.0 && self.rng.random_bool(f.drop_rate) {
            plan.drop = Some(if f.drop_after_apply {
                DropWhen::After
            } else {
                DropWhen::Before
            });
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_do_nothing() {
        let mut s = FaultState::default();
        for _ in 0..100 {
            assert_eq!(s.plan(&Method::GET), Plan::default());
        }
    }

    #[test]
    fn burst_then_normal() {
        let mut s = FaultState::default();
        let f: Faults =
            serde_json::from_str(r#"{"burst_429": 2, "retry_after": "3", "methods": ["POST"]}"#)
                .unwrap();
        f.validate().unwrap();
        s.set(f);
        assert_eq!(s.plan(&Method::GET), Plan::default());
        for _ in 0..2 {
            assert!(matches!(
                s.plan(&Method::POST).immediate,
                Some(Injected::Burst { retry_after: Some(ref r) }) if r == "3"
            ));
        }
        assert_eq!(s.plan(&Method::POST), Plan::default());
        assert_eq!(s.current().burst_429, 0);
    }

    #[test]
    fn seeded_rates_are_reproducible() {
        let draw = || {
            let mut s = FaultState::default();
            s.set(serde_json::from_str(r#"{"error_rate": 0.5, "seed": 7}"#).unwrap());
            (0..200)
                .map(|_| s.plan(&Method::GET).immediate.is_some())
                .collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw());
        let errors = a.iter().filter(|x| **x).count();
        assert!((60..140).contains(&errors), "{errors}");
    }

    #[test]
    fn validation() {
        let bad = |j: &str| {
            serde_json::from_str::<Faults>(j)
                .map_err(|e| e.to_string())
                .and_then(|f| f.validate())
                .is_err()
        };
        assert!(bad(r#"{"error_rate": 2}"#));
        assert!(bad(r#"{"error_status": 200}"#));
        assert!(bad(r#"{"typo": 1}"#));
        assert!(!bad(r#"{"drop_rate": 1, "drop_after_apply": true}"#));
    }
}
