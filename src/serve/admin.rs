//! The admin API under `/v1`, on only when `[serve.admin] token` is configured. Every request
//! but `/v1/openapi.json` needs `Authorization: Bearer <token>`, compared in constant time.
//!
//! - `POST /v1/runs`: queue a run (`{"people": [...]}` for a targeted one, `"dry_run": true`
//!   for a plan, `"allow_removals": N`); answers 202 with the run id at once.
//! - `GET /v1/runs?limit=N`: the latest runs, newest first.
//! - `GET /v1/runs/{id}`: the run's record and its plan report; `?format=json` gives the plan
//!   report (`ironbridge.plan/v1`) alone, `?format=html` the single-file HTML report.
//! - `GET /v1/plan`: a fresh dry run (queued like any run), answered when it ends.
//! - `GET /v1/openapi.json`: the OpenAPI 3 description of all of the above.
//!
//! What does not live here: running (the [`Runner`]) or rendering reports ([`crate::report`]).

use super::runner::{JobSpec, Runner, Scope};
use super::webhook::secret_eq;
use crate::config::Secret;
use crate::reconcile::Plan;
use crate::report::{self, Format};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The OpenAPI document served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Admin API state.
pub struct Admin {
    token: Secret,
    runner: Arc<Runner>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// The `/v1` routes (to be merged into the server's router).
pub fn router(token: Secret, runner: Arc<Runner>) -> Router {
    let state = Arc::new(Admin { token, runner });
    let protected = Router::new()
        .route("/v1/runs", post(create_run).get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/plan", get(plan))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state);
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .merge(protected)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn auth(State(a): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(t) if secret_eq(t.as_bytes(), a.token.expose().as_bytes()) => next.run(req).await,
        Some(_) => {
            tracing::warn!(path = %req.uri().path(), "admin API: wrong bearer token");
            let mut r = error(StatusCode::UNAUTHORIZED, "wrong bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            r
        }
        None => {
            tracing::warn!(path = %req.uri().path(), "admin API: no bearer token");
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer <token>",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI.to_string(),
    )
        .into_response()
}

/// `POST /v1/runs` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    #[serde(default)]
    people: Option<Vec<String>>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    allow_removals: usize,
}

async fn create_run(State(a): State<Arc<Admin>>, headers: HeaderMap, body: String) -> Response {
    let req: RunRequest = if body.trim().is_empty() {
        RunRequest::default()
    } else {
        if !super::webhook::is_json(&headers) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            );
        }
        match serde_json::from_str(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
        }
    };
    let scope = match req.people {
        None => Scope::Full,
        Some(p) => {
            let set: BTreeSet<String> = p
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if set.is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "people[] names nobody; leave it out for a full run",
                );
            }
            Scope::People(set)
        }
    };
    let Some(id) = a.runner.submit(JobSpec {
        scope,
        dry_run: req.dry_run,
        trigger: "api".into(),
        allow_removals: req.allow_removals,
    }) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    tracing::info!(run_id = %id, "admin API: run queued");
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/runs/{id}"))],
        Json(json!({ "run_id": id, "status": "queued" })),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
}

async fn list_runs(State(a): State<Arc<Admin>>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    match a.runner.store().runs(limit) {
        Ok(runs) => Json(json!({ "runs": runs })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct FormatQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    people: Option<String>,
}

fn render(plan: &Plan, format: Option<&str>) -> Response {
    let (fmt, ctype) = match format {
        Some("html") => (Format::Html, "text/html; charset=utf-8"),
        _ => (Format::Json, "application/json"),
    };
    match report::render(plan, fmt, false) {
        Ok(t) => ([(header::CONTENT_TYPE, ctype)], t).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn get_run(
    State(a): State<Arc<Admin>>,
    Path(id): Path<String>,
    Query(q): Query<FormatQuery>,
) -> Response {
    let store = a.runner.store();
    let record = match store.run(&id) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let Some(record) = record else {
        return match a.runner.status(&id) {
            Some(s) => Json(json!({ "run": { "id": id, "outcome": s } })).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        };
    };
    let plan: Option<Plan> = match store.plan(&id) {
        Ok(Some(v)) => serde_json::from_value(v).ok(),
        Ok(None) => None,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match (q.format.as_deref(), &plan) {
        (Some("html") | Some("json"), Some(p)) => render(p, q.format.as_deref()),
        (Some("html") | Some("json"), None) => error(
            StatusCode::NOT_FOUND,
            format!("run {id} has no plan (outcome {})", record.outcome),
        ),
        (Some(other), _) => error(
            StatusCode::BAD_REQUEST,
            format!("unknown format {other}; use json or html"),
        ),
        (None, _) => {
            let report: Value = plan
                .as_ref()
                .and_then(|p| report::render(p, Format::Json, false).ok())
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            Json(json!({ "run": record, "report": report })).into_response()
        }
    }
}

async fn plan(State(a): State<Arc<Admin>>, Query(q): Query<FormatQuery>) -> Response {
    if let Some(f) = q.format.as_deref() {
        if f != "json" && f != "html" {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown format {f}; use json or html"),
            );
        }
    }
    let scope = match q.people.as_deref() {
        None => Scope::Full,
        Some(p) => Scope::People(
            p.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ),
    };
    let Some((id, rx)) = a.runner.submit_and_wait(JobSpec {
        scope,
        dry_run: true,
        trigger: "api".into(),
        allow_removals: 0,
    }) else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    match rx.await {
        Ok(f) => match f.plan {
            Some(p) => {
                let mut r = render(&p, q.format.as_deref());
                if let Ok(v) = header::HeaderValue::from_str(&f.run_id) {
                    r.headers_mut().insert("x-ironbridge-run-id", v);
                }
                r
            }
            None => error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "run {id} made no plan (outcome {}); see GET /v1/runs/{id}",
                    f.outcome
                ),
            ),
        },
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("run {id} did not run: the server is stopping"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_is_json_and_documents_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for p in [
            "/v1/runs",
            "/v1/runs/{id}",
            "/v1/plan",
            "/v1/openapi.json",
            "/healthz",
            "/readyz",
            "/metrics",
            "/webhooks/okta",
            "/webhooks/graph",
            "/webhooks/generic",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p} undocumented");
        }
        assert!(doc["paths"]["/v1/runs"].get("post").is_some());
        assert!(doc["paths"]["/v1/runs"].get("get").is_some());
        assert!(doc["paths"]["/webhooks/okta"].get("get").is_some());
    }
}
