//! The simulator's own API under `/_sim/` (no authentication: it is a test tool), and the
//! request log it exposes.
//!
//! - `GET /_sim/requests[?since=SEQ]`: every request so far (`seq`, `method`, `path` with query,
//!   `status`, `bucket`, `time`, and `fault` when one was injected); a dropped connection is
//!   logged with status 0.
//! - `DELETE /_sim/requests` or `POST /_sim/reset-requests`: clear the log (`seq` keeps counting).
//! - `GET /_sim/state`: every user and group, rendered as SCIM JSON (the seed/save format).
//! - `GET /_sim/faults`, `POST /_sim/faults`: read or replace the fault set.
//! - `POST /_sim/revoke-tokens`: every issued OAuth access token becomes invalid
//!   (`{"refresh_tokens": true}` revokes refresh tokens too).
//!
//! What does not live here: recording requests (the middleware in [`super::server`]).

use super::error::plain_json;
use super::faults::Faults;
use super::{lock, Sim};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;

/// At most this many entries are kept (the oldest are dropped first).
const LOG_CAP: usize = 2_000_000;

/// One logged request.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// Increasing sequence number (never reused, even after a clear).
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Path with query string.
    pub path: String,
    /// Response status; 0 when the connection was dropped without a response.
    pub status: u16,
    /// Rate-limit bucket: `users_read_write`, `users_patch_delete`, `groups`, `other`, `oauth`,
    /// `sim`.
    pub bucket: &'static str,
    /// When the request arrived (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The injected fault or limit, if any: `burst_429`, `error`, `drop`, `drop_after_apply`,
    /// `rate_limited`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<&'static str>,
}

/// The request log.
#[derive(Debug, Default)]
pub struct RequestLog {
    next: u64,
    entries: VecDeque<LogEntry>,
}

impl RequestLog {
    /// Records a request; returns its sequence number.
    pub fn push(
        &mut self,
        method: &str,
        path: &str,
        status: u16,
        bucket: &'static str,
        time: String,
        fault: Option<&'static str>,
    ) -> u64 {
        self.next += 1;
        if self.entries.len() >= LOG_CAP {
            self.entries.pop_front();
        }
        self.entries.push_back(LogEntry {
            seq: self.next,
            method: method.to_string(),
            path: path.to_string(),
            status,
            bucket,
            time,
            fault,
        });
        self.next
    }

    /// Entries after `since`.
    pub fn since(&self, since: u64) -> Vec<LogEntry> {
        self.entries
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect()
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// `GET /_sim/requests`.
pub async fn get_requests(State(sim): State<Arc<Sim>>, uri: Uri) -> Response {
    let since = uri
        .query()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "since")
                .and_then(|(_, v)| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let entries = lock(&sim.log).since(since);
    plain_json(StatusCode::OK, &json!(entries))
}

/// `DELETE /_sim/requests`, `POST /_sim/reset-requests`.
pub async fn clear_requests(State(sim): State<Arc<Sim>>) -> Response {
    lock(&sim.log).clear();
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /_sim/state`.
pub async fn get_state(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let base = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_else(|| sim.base_url.clone());
    let v = lock(&sim.store).to_json(&base);
    plain_json(StatusCode::OK, &v)
}

/// `GET /_sim/faults`.
pub async fn get_faults(State(sim): State<Arc<Sim>>) -> Response {
    let f = lock(&sim.faults).current().clone();
    plain_json(StatusCode::OK, &json!(f))
}

/// `POST /_sim/faults`: replaces the fault set (an empty object turns faults off).
pub async fn set_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let parsed: Result<Faults, String> = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Faults::default())
    } else {
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    match parsed.and_then(|f| f.validate().map(|()| f)) {
        Ok(f) => {
            lock(&sim.faults).set(f.clone());
            plain_json(StatusCode::OK, &json!(f))
        }
        Err(e) => plain_json(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("bad fault set: {e}")}),
        ),
    }
}

/// `POST /_sim/revoke-tokens`.
pub async fn revoke_tokens(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let refresh = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("refresh_tokens").and_then(Value::as_bool))
        .unwrap_or(false);
    let n = lock(&sim.oauth).revoke_all(refresh);
    plain_json(StatusCode::OK, &json!({"revoked": n}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sequence_survives_clear() {
        let mut l = RequestLog::default();
        l.push("GET", "/a", 200, "other", "t".into(), None);
        l.push("GET", "/b", 200, "other", "t".into(), None);
        assert_eq!(l.since(1).len(), 1);
        l.clear();
        assert!(l.since(0).is_empty());
        assert_eq!(l.push("GET", "/c", 200, "other", "t".into(), None), 3);
    }
}
