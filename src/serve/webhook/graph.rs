//! Microsoft Graph change notifications at `/webhooks/graph` (used as both the notification
//! and the lifecycle notification URL).
//!
//! - Validation: a request carrying `?validationToken=...` is answered 200 with the token as
//!   `text/plain`, nothing else done.
//! - Notifications: `{"value": [...]}`; every item's `clientState` must equal the configured
//!   secret (constant-time), else the whole request is refused. A user resource
//!   (`Users/{id}`, `resourceData.id`, and `userPrincipalName`/`mail` when the subscription
//!   includes resource data) names that person; anything else, and every lifecycle
//!   notification (`reauthorizationRequired`, `missed`, `subscriptionRemoved`), asks for a full
//!   run, since data may have been missed. Answered 202.
//!
//! What does not live here: renewing or reauthorizing subscriptions (the operator's or the
//! IdP tooling's job; a `reauthorizationRequired` is logged as a warning).

use super::{gate, secret_eq, Hooks, Reject};
use crate::config::serve::GraphHook;
use crate::serve::runner::Scope;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::DefaultDirectRateLimiter;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

const PROVIDER: &str = "graph";

/// Graph settings and state.
pub struct Graph {
    cfg: GraphHook,
    limiter: DefaultDirectRateLimiter,
}

impl Graph {
    /// From the configuration.
    pub fn new(cfg: GraphHook) -> Graph {
        Graph {
            limiter: super::limiter(cfg.rate),
            cfg,
        }
    }
}

/// What a notification batch asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    /// People named.
    pub people: BTreeSet<String>,
    /// Something could not be attributed, or data may be missed.
    pub full: bool,
    /// Lifecycle events seen.
    pub lifecycle: Vec<String>,
}

/// Checks every `clientState` and maps the batch.
pub fn map_notifications(body: &Value, client_state: &str) -> Result<Mapped, Reject> {
    let items = body
        .get("value")
        .and_then(Value::as_array)
        .ok_or_else(|| Reject::new(StatusCode::BAD_REQUEST, "bad_body", "no value[] array"))?;
    let mut m = Mapped::default();
    for n in items {
        let cs = n.get("clientState").and_then(Value::as_str).unwrap_or("");
        if !secret_eq(cs.as_bytes(), client_state.as_bytes()) {
            return Err(Reject::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a notification's clientState does not match",
            ));
        }
        if let Some(ev) = n.get("lifecycleEvent").and_then(Value::as_str) {
            m.lifecycle.push(ev.to_string());
            m.full = true;
            continue;
        }
        let resource = n.get("resource").and_then(Value::as_str).unwrap_or("");
        let lower = resource.to_ascii_lowercase();
        let is_user = lower.starts_with("users/") || lower.starts_with("/users/");
        let data = n.get("resourceData");
        let data_is_user = data
            .and_then(|d| d.get("@odata.type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("#microsoft.graph.user"));
        if !(is_user || data_is_user) {
            m.full = true;
            continue;
        }
        let mut named = false;
        if let Some(d) = data {
            for k in ["id", "userPrincipalName", "mail"] {
                if let Some(v) = d.get(k).and_then(Value::as_str) {
                    if !v.trim().is_empty() {
                        m.people.insert(v.trim().to_string());
                        named = true;
                    }
                }
            }
        }
        if !named {
            if let Some(id) = resource.trim_start_matches('/').split('/').nth(1) {
                if !id.is_empty() {
                    m.people.insert(id.to_string());
                    named = true;
                }
            }
        }
        if !named {
            m.full = true;
        }
    }
    Ok(m)
}

/// `POST /webhooks/graph`: validation or notifications.
pub async fn deliver(
    State(h): State<Arc<Hooks>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(g) = &h.graph else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(token) = q.get("validationToken") {
        if g.limiter.check().is_err() {
            return h.refuse(
                PROVIDER,
                Reject::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests",
                ),
            );
        }
        if token.len() > 4096 {
            return h.refuse(
                PROVIDER,
                Reject::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "validationToken too long",
                ),
            );
        }
        h.accepted(PROVIDER, "verified");
        tracing::info!(provider = PROVIDER, "subscription validation answered");
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            token.clone(),
        )
            .into_response();
    }
    let bytes = match gate(&g.limiter, h.body_limit, &headers, body, true).await {
        Ok(b) => b,
        Err(r) => return h.refuse(PROVIDER, r),
    };
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
    let m = match map_notifications(&json, g.cfg.client_state.expose()) {
        Ok(m) => m,
        Err(r) => return h.refuse(PROVIDER, r),
    };
    for ev in &m.lifecycle {
        if ev == "reauthorizationRequired" || ev == "subscriptionRemoved" {
            tracing::warn!(provider = PROVIDER, event = %ev, "the Graph subscription needs attention (reauthorize or recreate it); a full run covers anything missed");
        }
    }
    if m.full {
        h.debouncer.add(PROVIDER, Scope::Full);
    } else if !m.people.is_empty() {
        h.debouncer.add(PROVIDER, Scope::People(m.people.clone()));
    }
    let queued = m.full || !m.people.is_empty();
    h.accepted(PROVIDER, if queued { "accepted" } else { "ignored" });
    tracing::info!(
        provider = PROVIDER,
        people = m.people.len(),
        full = m.full,
        lifecycle = m.lifecycle.len(),
        "change notifications accepted"
    );
    StatusCode::ACCEPTED.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn users_are_named_lifecycle_means_full_and_client_state_is_checked() {
        let body = json!({"value": [
            {"clientState": "cs", "changeType": "updated", "resource": "Users/abc",
             "resourceData": {"@odata.type": "#Microsoft.Graph.User", "id": "abc"}},
            {"clientState": "cs", "changeType": "updated", "resource": "Users/def"},
        ]});
        let m = map_notifications(&body, "cs").unwrap();
        assert_eq!(m.people.len(), 2);
        assert!(!m.full);
        let life = json!({"value": [{"clientState": "cs", "lifecycleEvent": "missed"}]});
        let m = map_notifications(&life, "cs").unwrap();
        assert!(m.full);
        assert_eq!(m.lifecycle, vec!["missed".to_string()]);
        let groups = json!({"value": [{"clientState": "cs", "resource": "Groups/g1"}]});
        assert!(map_notifications(&groups, "cs").unwrap().full);
        let forged = json!({"value": [
            {"clientState": "cs", "resource": "Users/a"},
            {"clientState": "nope", "resource": "Users/b"}]});
        assert_eq!(
            map_notifications(&forged, "cs").unwrap_err().verdict,
            "unauthorized"
        );
    }
}
