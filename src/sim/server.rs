//! The HTTP side of the simulator: the axum router, the middleware that logs every request and
//! applies faults and rate limits, and the connection loop.
//!
//! # Dropping a connection without a response
//! axum's own `serve` gives a handler no way to close its connection without answering. So the
//! simulator runs the accept loop itself with hyper's HTTP/1 connection builder: each connection
//! task owns a [`ConnKill`] (a [`Notify`]) that is also put into every request's extensions. To
//! drop, the middleware notifies it and then never completes (a pending future), so hyper has
//! nothing to write; the connection task, which selects between the connection future and the
//! notification, wakes on the notification and drops the connection future, which closes the
//! socket. The client sees the connection closed with no response, before or after the request
//! was applied, exactly as a network failure would look.
//!
//! Shutdown: stop accepting, let in-flight connections finish (graceful, at most 5 s), then save
//! the state if asked.
//!
//! What does not live here: the handlers ([`super::scim`], [`super::oauth`],
//! [`super::introspect`]).

use super::error::ScimError;
use super::faults::{DropWhen, Injected, Plan};
use super::ratelimit::Bucket;
use super::{introspect, lock, oauth, scim, Sim, SimError};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{SecondsFormat, Utc};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

/// Largest request body accepted (a PUT of a group with 100,000 members fits).
const BODY_LIMIT: usize = 256 * 1024 * 1024;

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Closes the connection a request arrived on (see the module docs).
#[derive(Debug, Clone)]
pub struct ConnKill(Arc<Notify>);

/// The router with every endpoint, the body limit and the tracking middleware.
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/authorize", get(oauth::authorize))
        .route("/oauth/userinfo", get(oauth::userinfo))
        .route(
            "/scim/v2/Users",
            get(scim::list_users).post(scim::create_user),
        )
        .route("/scim/v2/Users/.search", post(scim::search_not_implemented))
        .route(
            "/scim/v2/Users/{id}",
            get(scim::get_user)
                .put(scim::put_user)
                .patch(scim::patch_user)
                .delete(scim::delete_user),
        )
        .route(
            "/scim/v2/Groups",
            get(scim::list_groups).post(scim::create_group),
        )
        .route(
            "/scim/v2/Groups/.search",
            post(scim::search_not_implemented),
        )
        .route(
            "/scim/v2/Groups/{id}",
            get(scim::get_group)
                .put(scim::put_group)
                .patch(scim::patch_group)
                .delete(scim::delete_group),
        )
        .route("/scim/v2/Schemas", get(scim::list_schemas))
        .route("/scim/v2/Schemas/{id}", get(scim::get_schema))
        .route("/scim/v2/ResourceTypes", get(scim::list_resource_types))
        .route("/scim/v2/ResourceTypes/{id}", get(scim::get_resource_type))
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(scim::service_provider_config),
        )
        .route("/scim/v2/.search", post(scim::search_not_implemented))
        .route(
            "/_sim/requests",
            get(introspect::get_requests).delete(introspect::clear_requests),
        )
        .route("/_sim/reset-requests", post(introspect::clear_requests))
        .route("/_sim/state", get(introspect::get_state))
        .route(
            "/_sim/faults",
            get(introspect::get_faults).post(introspect::set_faults),
        )
        .route("/_sim/revoke-tokens", post(introspect::revoke_tokens))
        .fallback(scim::not_found_fallback)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(sim.clone(), track))
        .with_state(sim)
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Logs every request; for SCIM requests applies the fault plan and the rate limits.
async fn track(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let bucket = Bucket::classify(&method, req.uri().path());
    let time = now();
    let kill = req.extensions().get::<ConnKill>().cloned();
    let is_scim = req.uri().path().starts_with("/scim/");
    let record = |status: u16, fault: Option<&'static str>| {
        lock(&sim.log).push(
            method.as_str(),
            &path,
            status,
            bucket.name(),
            time.clone(),
            fault,
        );
    };

    let mut plan = Plan::default();
    if is_scim {
        plan = lock(&sim.faults).plan(&method);
        if !plan.latency.is_zero() {
            tokio::time::sleep(plan.latency).await;
        }
        if let Some(injected) = plan.immediate.take() {
            let (resp, label) = match injected {
                Injected::Burst { retry_after } => (
                    ScimError::too_many("Too many requests (injected burst)", retry_after)
                        .into_response(),
                    "burst_429",
                ),
                Injected::Error {
                    status,
                    retry_after,
                } => {
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    let mut e = ScimError::new(status, "Injected fault");
                    if matches!(status.as_u16(), 429 | 503) {
                        e.retry_after = retry_after;
                    }
                    (e.into_response(), "error")
                }
            };
            record(resp.status().as_u16(), Some(label));
            return resp;
        }
        if plan.drop == Some(DropWhen::Before) {
            record(0, Some("drop"));
            return drop_connection(kill).await;
        }
        if let Some(limiter) = &sim.limiter {
            let checked = lock(limiter).check(bucket, tokio::time::Instant::now());
            if let Err(l) = checked {
                let resp = ScimError::too_many(
                    format!(
                        "Rate limit exceeded: {} requests per {} s for {}",
                        l.limit,
                        l.window.as_secs_f64(),
                        bucket.name()
                    ),
                    Some(l.retry_after_secs.to_string()),
                )
                .into_response();
                record(429, Some("rate_limited"));
                return resp;
            }
        }
    }

    let resp = next.run(req).await;
    // Logged as soon as the request is applied: a client that gives up while the answer is
    // delayed (`latency_after_ms`) still finds its request in the log.
    let drop_after = plan.drop == Some(DropWhen::After);
    if drop_after {
        record(0, Some("drop_after_apply"));
    } else {
        record(resp.status().as_u16(), None);
    }
    if !plan.latency_after.is_zero() {
        tokio::time::sleep(plan.latency_after).await;
    }
    if drop_after {
        return drop_connection(kill).await;
    }
    resp
}

/// Closes the request's connection without a response: signals the connection task and never
/// completes.
async fn drop_connection(kill: Option<ConnKill>) -> Response {
    match kill {
        Some(k) => {
            k.0.notify_one();
            std::future::pending::<Response>().await
        }
        // Only reachable if the router is served by something other than [`run`].
        None => ScimError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection drop requested, but this server cannot drop connections",
        )
        .into_response(),
    }
}

/// Accepts connections until `shutdown` completes, then drains and saves.
pub async fn run(
    listener: TcpListener,
    sim: Arc<Sim>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    let app = router(sim.clone());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, keep serving.
                        tracing::warn!(error = %e, "ironclad-sim: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let kill = Arc::new(Notify::new());
                let per_request = ConnKill(kill.clone());
                let app = app.clone();
                let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(per_request.clone());
                    app.clone().oneshot(req)
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    tokio::select! {
                        result = conn => {
                            if let Err(e) = result {
                                tracing::debug!(error = %e, "ironclad-sim: connection ended with an error");
                            }
                        }
                        // Dropping the connection future here closes the socket unanswered.
                        () = kill.notified() => {}
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("ironclad-sim: connections still open after the shutdown grace period");
        }
    }
    sim.save()
}
