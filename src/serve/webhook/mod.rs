//! Webhook receivers for identity providers: Okta event hooks ([`okta`]), Microsoft Graph
//! change notifications ([`graph`]) and a generic HMAC-signed webhook ([`generic`]).
//!
//! Every request goes through the same gate before a provider looks at it: a per-provider rate
//! limit (`governor`), a body size limit, a content-type check. Each provider then verifies
//! (secrets compared in constant time), names the people concerned, and hands them to the
//! [`Debouncer`], which collects events for the debounce window and enqueues one targeted run.
//! Nothing reconciles inline: a handler answers as soon as its events are queued.
//!
//! Rejections are logged with provider, verdict and reason, never with a header value or the
//! body. Every request counts in `ironbridge_webhook_requests_total{provider,verdict}`.
//!
//! What does not live here: running (the [`Runner`]).

pub mod generic;
pub mod graph;
pub mod okta;

use super::metrics::Metrics;
use super::runner::{JobSpec, Runner, Scope};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;

/// Compares two secrets in constant time (their SHA-256 digests, so the length is not leaked
/// either).
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// A per-provider rate limiter.
pub fn limiter(rate: crate::config::serve::Rate) -> DefaultDirectRateLimiter {
    let per = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(per);
    RateLimiter::direct(Quota::per_second(per).allow_burst(burst))
}

/// Ids seen recently (Okta event uuids, generic-webhook signatures): at-least-once delivery is
/// de-duplicated and replays refused. Entries expire after `ttl`; the set is bounded.
#[derive(Debug)]
pub struct Seen {
    ttl: Duration,
    cap: usize,
    /// A std `Mutex`: held for one lookup or insert, never across an `.await`.
    map: Mutex<HashMap<String, Instant>>,
}

impl Seen {
    /// Remembers ids for `ttl`, at most `cap` of them.
    pub fn new(ttl: Duration, cap: usize) -> Seen {
        Seen {
            ttl,
            cap: cap.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Records `id`; false when it was already seen within the ttl.
    pub fn first_time(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut m = match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(t) = m.get(id) {
            if now.duration_since(*t) < self.ttl {
                return false;
            }
        }
        if m.len() >= self.cap {
            let ttl = self.ttl;
            m.retain(|_, t| now.duration_since(*t) < ttl);
            if m.len() >= self.cap {
                // Still full of live ids: forget the oldest.
                if let Some(oldest) = m.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                    m.remove(&oldest);
                }
            }
        }
        m.insert(id.to_string(), now);
        true
    }
}

/// Collects webhook events for the debounce window, then enqueues one targeted run for
/// everyone they named (a full run if any event could not tell who).
pub struct Debouncer {
    window: Duration,
    runner: Arc<Runner>,
    dry_run: bool,
    /// A std `Mutex`: held only to merge, never across an `.await`.
    pending: Mutex<Option<(Scope, BTreeSet<&'static str>)>>,
}

impl std::fmt::Debug for Debouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debouncer")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Debouncer {
    /// A debouncer feeding `runner`.
    pub fn new(window: Duration, runner: Arc<Runner>, dry_run: bool) -> Arc<Debouncer> {
        Arc::new(Debouncer {
            window,
            runner,
            dry_run,
            pending: Mutex::new(None),
        })
    }

    /// Adds an event's people; the first event of a window starts its timer.
    pub fn add(self: &Arc<Self>, provider: &'static str, scope: Scope) {
        let mut g = match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match g.as_mut() {
            Some((s, providers)) => {
                s.merge(scope);
                providers.insert(provider);
            }
            None => {
                *g = Some((scope, BTreeSet::from([provider])));
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(me.window).await;
                    me.flush();
                });
            }
        }
    }

    fn flush(&self) {
        let taken = match self.pending.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        let Some((scope, providers)) = taken else {
            return;
        };
        let trigger = if providers.len() == 1 {
            format!(
                "webhook:{}",
                providers.iter().next().copied().unwrap_or("?")
            )
        } else {
            "webhook".to_string()
        };
        let people = match &scope {
            Scope::Full => None,
            Scope::People(p) => Some(p.len()),
        };
        match self.runner.submit_coalescing(JobSpec {
            scope,
            dry_run: self.dry_run,
            trigger: trigger.clone(),
            allow_removals: 0,
        }) {
            Some(id) => {
                tracing::info!(run_id = %id, trigger = %trigger, people, "webhook events queued")
            }
            None => tracing::warn!("webhook events dropped: the server is stopping"),
        }
    }
}

/// Shared state of the webhook handlers.
pub struct Hooks {
    /// Where accepted events go.
    pub debouncer: Arc<Debouncer>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Largest body.
    pub body_limit: usize,
    /// Okta settings and state.
    pub okta: Option<okta::Okta>,
    /// Graph settings and state.
    pub graph: Option<graph::Graph>,
    /// Generic webhook settings and state.
    pub generic: Option<generic::Generic>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("okta", &self.okta.is_some())
            .field("graph", &self.graph.is_some())
            .field("generic", &self.generic.is_some())
            .finish()
    }
}

/// A refused request: the status and a short reason (never a secret).
#[derive(Debug)]
pub struct Reject {
    /// HTTP status.
    pub status: StatusCode,
    /// Metric verdict (`unauthorized`, `too_large`, ...).
    pub verdict: &'static str,
    /// What was wrong, for the log and the caller.
    pub reason: String,
}

impl Reject {
    /// A rejection.
    pub fn new(status: StatusCode, verdict: &'static str, reason: impl Into<String>) -> Reject {
        Reject {
            status,
            verdict,
            reason: reason.into(),
        }
    }
}

impl Hooks {
    /// Logs and counts a rejection and turns it into a response.
    pub fn refuse(&self, provider: &'static str, r: Reject) -> Response {
        self.metrics.webhook(provider, r.verdict);
        tracing::warn!(provider, verdict = r.verdict, status = r.status.as_u16(), reason = %r.reason, "webhook request refused");
        let mut resp = (
            r.status,
            axum::Json(serde_json::json!({ "error": r.reason })),
        )
            .into_response();
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        resp
    }

    /// Counts an accepted request.
    pub fn accepted(&self, provider: &'static str, verdict: &'static str) {
        self.metrics.webhook(provider, verdict);
    }
}

/// The common gate: rate limit, then the body within the size limit, then (when `json`) a JSON
/// content type.
pub async fn gate(
    limiter: &DefaultDirectRateLimiter,
    limit: usize,
    headers: &HeaderMap,
    body: Body,
    json: bool,
) -> Result<Bytes, Reject> {
    if limiter.check().is_err() {
        return Err(Reject::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this provider; retry later",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    if json && !is_json(headers) {
        return Err(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            "Content-Type must be application/json",
        ));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(limit))
}

fn too_large(limit: usize) -> Reject {
    Reject::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is larger than {limit} bytes"),
    )
}

/// Whether the request says its body is JSON (`application/json`, any parameters).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"ab", b"abc"));
        assert!(!secret_eq(b"", b"abc"));
    }

    #[test]
    fn seen_dedupes_within_ttl_and_stays_bounded() {
        let s = Seen::new(Duration::from_secs(60), 3);
        assert!(s.first_time("a"));
        assert!(!s.first_time("a"));
        for id in ["b", "c", "d", "e"] {
            assert!(s.first_time(id));
        }
        assert!(s.map.lock().unwrap().len() <= 3);
    }

    #[tokio::test]
    async fn gate_limits_rate_then_size_then_content_type() {
        let l = limiter(crate::config::serve::Rate {
            per_second: 1,
            burst: 2,
        });
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let ok = gate(&l, 16, &h, Body::from("{}"), true).await.unwrap();
        assert_eq!(&ok[..], b"{}");
        // Too large without a Content-Length: cut while reading.
        let big = gate(&l, 16, &h, Body::from("x".repeat(17)), true).await;
        assert_eq!(big.unwrap_err().verdict, "too_large");
        // The burst is spent.
        let r = gate(&l, 16, &h, Body::from("{}"), true).await;
        assert_eq!(r.unwrap_err().status, StatusCode::TOO_MANY_REQUESTS);
        let l = limiter(crate::config::serve::Rate {
            per_second: 10,
            burst: 10,
        });
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let r = gate(&l, 16, &h, Body::from("{}"), true).await;
        assert_eq!(r.unwrap_err().verdict, "bad_content_type");
        h.insert(header::CONTENT_LENGTH, "17".parse().unwrap());
        let r = gate(&l, 16, &h, Body::from("{}"), true).await;
        assert_eq!(r.unwrap_err().verdict, "too_large");
    }

    #[test]
    fn json_content_type_with_parameters() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json(&h));
    }
}
