//! The generic signed webhook at `/webhooks/generic`, for any system that can sign a request.
//!
//! The sender puts the Unix time (seconds) in the timestamp header and
//! `hex(HMAC-SHA256(secret, "<timestamp>." + body))` in the signature header (optionally as
//! `sha256=<hex>`). Refused: a signature that does not verify (checked in constant time), a
//! timestamp more than the tolerance (default 5 minutes) away from now, and a signature already
//! accepted within the tolerance (a replay). The body is JSON:
//! `{"people": ["<source id | userName | email>", ...]}` or `{"full": true}`.
//!
//! What does not live here: the common gate and debounce ([`super`]).

use super::{gate, Hooks, Reject, Seen};
use crate::config::serve::GenericHook;
use crate::serve::runner::Scope;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::DefaultDirectRateLimiter;
use hmac::{KeyInit as _, Mac as _};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

const PROVIDER: &str = "generic";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Generic webhook settings and state.
pub struct Generic {
    cfg: GenericHook,
    limiter: DefaultDirectRateLimiter,
    seen: Seen,
}

impl Generic {
    /// From the configuration.
    pub fn new(cfg: GenericHook) -> Generic {
        Generic {
            limiter: super::limiter(cfg.rate),
            seen: Seen::new(cfg.tolerance * 2, 200_000),
            cfg,
        }
    }
}

/// The signature a sender computes (hex).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Verifies signature and timestamp; returns the normalised signature (the replay key).
pub fn verify(
    cfg: &GenericHook,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<String, Reject> {
    let unauthorized = |why: &str| Reject::new(StatusCode::UNAUTHORIZED, "unauthorized", why);
    let ts = headers
        .get(cfg.timestamp_header.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| unauthorized("missing timestamp header"))?;
    let sig = headers
        .get(cfg.signature_header.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| unauthorized("missing signature header"))?;
    let sig = sig
        .strip_prefix("sha256=")
        .unwrap_or(sig)
        .to_ascii_lowercase();
    let raw = hex::decode(&sig).map_err(|_| unauthorized("the signature is not hex"))?;
    let mut mac = HmacSha256::new_from_slice(cfg.secret.expose().as_bytes())
        .map_err(|_| unauthorized("unusable key"))?;
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&raw)
        .map_err(|_| unauthorized("the signature does not verify"))?;
    let t: i64 = ts
        .parse()
        .map_err(|_| unauthorized("the timestamp is not Unix seconds"))?;
    let tolerance = i64::try_from(cfg.tolerance.as_secs()).unwrap_or(i64::MAX);
    if (now_unix - t).abs() > tolerance {
        return Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            "stale",
            format!("the timestamp is more than {tolerance} s from now"),
        ));
    }
    Ok(sig)
}

/// Reads the body: the people named, or a full run.
pub fn scope_of(body: &Value) -> Result<Scope, String> {
    if body.get("full").and_then(Value::as_bool) == Some(true) {
        return Ok(Scope::Full);
    }
    let people: BTreeSet<String> = body
        .get("people")
        .and_then(Value::as_array)
        .ok_or("expected {\"people\": [...]} or {\"full\": true}")?
        .iter()
        .filter_map(Value::as_str)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if people.is_empty() {
        return Err("people[] names nobody".into());
    }
    Ok(Scope::People(people))
}

/// `POST /webhooks/generic`.
pub async fn deliver(State(h): State<Arc<Hooks>>, headers: HeaderMap, body: Body) -> Response {
    let Some(g) = &h.generic else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes = match gate(&g.limiter, h.body_limit, &headers, body, true).await {
        Ok(b) => b,
        Err(r) => return h.refuse(PROVIDER, r),
    };
    let sig = match verify(&g.cfg, &headers, &bytes, chrono::Utc::now().timestamp()) {
        Ok(s) => s,
        Err(r) => return h.refuse(PROVIDER, r),
    };
    if !g.seen.first_time(&sig) {
        return h.refuse(
            PROVIDER,
            Reject::new(
                StatusCode::CONFLICT,
                "replay",
                "this signed request was already accepted",
            ),
        );
    }
    let json: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return h.refuse(
                PROVIDER,
                Reject::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("not JSON: {e}"),
                ),
            )
        }
    };
    let scope = match scope_of(&json) {
        Ok(s) => s,
        Err(e) => {
            return h.refuse(
                PROVIDER,
                Reject::new(StatusCode::BAD_REQUEST, "bad_body", e),
            )
        }
    };
    let people = match &scope {
        Scope::Full => None,
        Scope::People(p) => Some(p.len()),
    };
    h.debouncer.add(PROVIDER, scope);
    h.accepted(PROVIDER, "accepted");
    tracing::info!(provider = PROVIDER, people, "signed webhook accepted");
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "queued": true })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::serve::Rate;
    use crate::config::Secret;
    use std::time::Duration;

    fn cfg() -> GenericHook {
        GenericHook {
            secret: Secret::new("k3y"),
            signature_header: "x-sig".into(),
            timestamp_header: "x-ts".into(),
            tolerance: Duration::from_secs(300),
            rate: Rate {
                per_second: 10,
                burst: 10,
            },
        }
    }

    fn headers(ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-ts", ts.parse().unwrap());
        h.insert("x-sig", sig.parse().unwrap());
        h
    }

    #[test]
    fn good_forged_and_stale_signatures() {
        let body = br#"{"people":["a"]}"#;
        let now = 1_800_000_000;
        let ts = now.to_string();
        let sig = sign(b"k3y", &ts, body);
        assert!(verify(&cfg(), &headers(&ts, &format!("sha256={sig}")), body, now).is_ok());
        let forged = sign(b"other", &ts, body);
        assert_eq!(
            verify(&cfg(), &headers(&ts, &forged), body, now)
                .unwrap_err()
                .verdict,
            "unauthorized"
        );
        // The same signature over another body.
        assert!(verify(&cfg(), &headers(&ts, &sig), br#"{"full":true}"#, now).is_err());
        let old = (now - 301).to_string();
        let sig_old = sign(b"k3y", &old, body);
        assert_eq!(
            verify(&cfg(), &headers(&old, &sig_old), body, now)
                .unwrap_err()
                .verdict,
            "stale"
        );
    }

    #[test]
    fn bodies_name_people_or_ask_full() {
        assert_eq!(
            scope_of(&serde_json::json!({"full": true})).unwrap(),
            Scope::Full
        );
        assert!(matches!(
            scope_of(&serde_json::json!({"people": ["a", " "]})).unwrap(),
            Scope::People(p) if p.len() == 1
        ));
        assert!(scope_of(&serde_json::json!({"people": []})).is_err());
        assert!(scope_of(&serde_json::json!({})).is_err());
    }
}
