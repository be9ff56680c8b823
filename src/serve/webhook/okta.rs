//! Okta event hooks at `/webhooks/okta`.
//!
//! - `GET` with `x-okta-verification-challenge`: the one-time verification, answered with
//!   `{"verification": "<value>"}` (after the same secret check as deliveries, since Okta sends
//!   the configured header on both).
//! - `POST`: a batch under `data.events[]`. The configured header's value is compared with the
//!   secret in constant time. User lifecycle, account/profile and group or application
//!   membership events name the users in their `target` (by `alternateId`, the Okta login, usually
//!   the email, and the Okta id); a relevant event without a user target asks for a full run.
//!   Delivery is at least once: events are de-duplicated by `uuid` for 24 hours.
//!
//! What does not live here: the common gate and debounce ([`super`]).

use super::{gate, secret_eq, Hooks, Reject, Seen};
use crate::config::serve::OktaHook;
use crate::serve::runner::Scope;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::DefaultDirectRateLimiter;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const PROVIDER: &str = "okta";

/// Okta settings and state.
pub struct Okta {
    cfg: OktaHook,
    limiter: DefaultDirectRateLimiter,
    seen: Seen,
}

impl Okta {
    /// From the configuration.
    pub fn new(cfg: OktaHook) -> Okta {
        Okta {
            limiter: super::limiter(cfg.rate),
            cfg,
            seen: Seen::new(Duration::from_secs(24 * 3600), 100_000),
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> Result<(), Reject> {
        let given = headers
            .get(self.cfg.header.as_str())
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if secret_eq(given, self.cfg.secret.expose().as_bytes()) {
            Ok(())
        } else {
            Err(Reject::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("missing or wrong {} header", self.cfg.header),
            ))
        }
    }
}

/// Whether an event type concerns who is in Ironclad or what they look like.
pub fn relevant(event_type: &str) -> bool {
    event_type.starts_with("user.lifecycle.")
        || event_type.starts_with("user.account.")
        || event_type.starts_with("group.user_membership.")
        || event_type.starts_with("application.user_membership.")
        || event_type == "user.identity_provider.profile_update"
}

/// What a batch asks for: the people, whether any event needs a full run, and counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    /// People named: each target's id and login, as either may be what the source knows.
    pub people: BTreeSet<String>,
    /// The users targeted (one per target, by its id or login): the count answered.
    pub targets: BTreeSet<String>,
    /// Some event could not tell who.
    pub full: bool,
    /// Events dropped as duplicates.
    pub duplicates: usize,
    /// Events ignored (irrelevant types).
    pub ignored: usize,
}

/// Maps a delivery body to people. `first_time` de-duplicates by event uuid.
pub fn map_events(body: &Value, first_time: impl Fn(&str) -> bool) -> Result<Mapped, String> {
    let events = body
        .pointer("/data/events")
        .and_then(Value::as_array)
        .ok_or("no data.events[] array")?;
    let mut m = Mapped::default();
    for e in events {
        let ty = e.get("eventType").and_then(Value::as_str).unwrap_or("");
        if let Some(uuid) = e.get("uuid").and_then(Value::as_str) {
            if !first_time(uuid) {
                m.duplicates += 1;
                continue;
            }
        }
        if !relevant(ty) {
            m.ignored += 1;
            continue;
        }
        let mut named = false;
        for t in e
            .get("target")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if t.get("type").and_then(Value::as_str) != Some("User") {
                continue;
            }
            let mut key = None;
            for k in ["alternateId", "id"] {
                if let Some(v) = t.get(k).and_then(Value::as_str) {
                    if !v.trim().is_empty() {
                        m.people.insert(v.trim().to_string());
                        key = Some(v.trim().to_string());
                        named = true;
                    }
                }
            }
            m.targets.extend(key);
        }
        if !named {
            m.full = true;
        }
    }
    Ok(m)
}

/// `GET /webhooks/okta`: the verification challenge.
pub async fn verify(State(h): State<Arc<Hooks>>, headers: HeaderMap) -> Response {
    let Some(o) = &h.okta else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if o.limiter.check().is_err() {
        return h.refuse(
            PROVIDER,
            Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests",
            ),
        );
    }
    if let Err(r) = o.authorized(&headers) {
        return h.refuse(PROVIDER, r);
    }
    let Some(challenge) = headers
        .get("x-okta-verification-challenge")
        .and_then(|v| v.to_str().ok())
    else {
        return h.refuse(
            PROVIDER,
            Reject::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "no x-okta-verification-challenge header",
            ),
        );
    };
    h.accepted(PROVIDER, "verified");
    tracing::info!(provider = PROVIDER, "event hook verification answered");
    axum::Json(serde_json::json!({ "verification": challenge })).into_response()
}

/// `POST /webhooks/okta`: a delivery.
pub async fn deliver(State(h): State<Arc<Hooks>>, headers: HeaderMap, body: Body) -> Response {
    let Some(o) = &h.okta else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes = match gate(&o.limiter, h.body_limit, &headers, body, true).await {
        Ok(b) => b,
        Err(r) => return h.refuse(PROVIDER, r),
    };
    if let Err(r) = o.authorized(&headers) {
        return h.refuse(PROVIDER, r);
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
    let mapped = match map_events(&json, |id| o.seen.first_time(id)) {
        Ok(m) => m,
        Err(e) => {
            return h.refuse(
                PROVIDER,
                Reject::new(StatusCode::BAD_REQUEST, "bad_body", e),
            )
        }
    };
    let queued = mapped.full || !mapped.people.is_empty();
    if mapped.full {
        h.debouncer.add(PROVIDER, Scope::Full);
    } else if !mapped.people.is_empty() {
        h.debouncer
            .add(PROVIDER, Scope::People(mapped.people.clone()));
    }
    h.accepted(PROVIDER, if queued { "accepted" } else { "ignored" });
    tracing::info!(
        provider = PROVIDER,
        people = mapped.targets.len(),
        full = mapped.full,
        duplicates = mapped.duplicates,
        ignored = mapped.ignored,
        "event hook delivery accepted"
    );
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({
            "queued": queued,
            "people": mapped.targets.len(),
            "full_run": mapped.full,
            "duplicates": mapped.duplicates,
            "ignored": mapped.ignored,
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_map_to_targets_dedupe_and_fall_back_to_full() {
        let seen = Seen::new(Duration::from_secs(60), 100);
        let body = json!({"data": {"events": [
            {"uuid": "u1", "eventType": "user.account.update_profile",
             "target": [{"type": "User", "alternateId": "ana@example.com", "id": "00u1"}]},
            {"uuid": "u1", "eventType": "user.account.update_profile",
             "target": [{"type": "User", "alternateId": "dup@example.com"}]},
            {"uuid": "u2", "eventType": "group.user_membership.add",
             "target": [{"type": "User", "alternateId": "bo@example.com"}, {"type": "UserGroup", "id": "g"}]},
            {"uuid": "u3", "eventType": "user.session.start",
             "target": [{"type": "User", "alternateId": "x@example.com"}]},
        ]}});
        let m = map_events(&body, |id| seen.first_time(id)).unwrap();
        assert_eq!(
            m.people,
            ["00u1", "ana@example.com", "bo@example.com"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        assert_eq!((m.full, m.duplicates, m.ignored), (false, 1, 1));
        let body = json!({"data": {"events": [{"uuid": "u9", "eventType": "user.lifecycle.create", "target": []}]}});
        assert!(map_events(&body, |id| seen.first_time(id)).unwrap().full);
        assert!(map_events(&json!({"x": 1}), |_| true).is_err());
    }
}
