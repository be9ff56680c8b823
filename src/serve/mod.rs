//! `ironbridge serve`: the long-running form. One process reconciles on a schedule, reacts to
//! identity-provider webhooks, and can be watched and driven over HTTP. Every trigger ends in
//! the same [`Engine`] through one [`Runner`] (single flight, store run lock), and all of them
//! share one state store.
//!
//! # Layout
//! - [`runner`]: the single-flight run queue, the store lock, stop handling.
//! - [`scheduler`]: cron / interval with jitter in an explicit time zone.
//! - [`webhook`]: Okta, Microsoft Graph and generic signed webhooks, with the common gate
//!   (rate limit, size, content type) and the debounce.
//! - [`admin`]: the bearer-token admin API under `/v1` and its OpenAPI document.
//! - [`metrics`]: the Prometheus series.
//! - this file: the router (`/healthz`, `/readyz`, `/metrics` and the above), start-up and
//!   graceful stop.
//!
//! Stop (SIGTERM/SIGINT): the listener stops accepting, the scheduler stops, a run in flight is
//! told to stop before its writes begin or, if already writing, given `shutdown_grace_secs` to
//! finish; past that it is recorded as interrupted. The process exits within about the grace
//! time plus five seconds.
//!
//! What does not live here: the reconciliation ([`crate::reconcile`]) and argument parsing
//! ([`crate::cli`]).

pub mod admin;
pub mod metrics;
pub mod runner;
pub mod scheduler;
pub mod webhook;

use crate::config::serve::ServeConfig;
use crate::config::Config;
use crate::reconcile::engine::{Engine, EngineError};
use crate::store::Store;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics::Metrics;
use runner::{Executor, Runner, RunnerSettings};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the server could not start or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine could not be opened (mapping, source, store, client).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
}

/// What the HTTP handlers share.
#[derive(Clone)]
struct App {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    runner: Arc<Runner>,
}

/// Everything a server needs, assembled; [`Server::run`] serves it.
pub struct Server {
    serve: ServeConfig,
    runner: Arc<Runner>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn scheduler::Clock>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.serve.listen)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the engine for `cfg` and assembles a server around it.
    pub fn open(cfg: Config) -> Result<Server, ServeError> {
        let serve = cfg.serve.clone();
        let engine = Engine::open(cfg)?;
        let store = engine.store.clone();
        let metrics = Arc::new(Metrics::new(Some(engine.client.clone())));
        Ok(Server::with_executor(
            serve,
            Arc::new(engine),
            store,
            metrics,
        ))
    }

    /// A server over any executor (tests use a scripted one).
    pub fn with_executor(
        serve: ServeConfig,
        exec: Arc<dyn Executor>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Server {
        let runner = Runner::new(
            exec,
            store.clone(),
            metrics.clone(),
            RunnerSettings {
                dry_run: serve.dry_run,
                grace: serve.shutdown_grace,
                lock_stale: serve.lock_stale,
            },
        );
        Server {
            serve,
            runner,
            store,
            metrics,
            clock: Arc::new(scheduler::SystemClock),
        }
    }

    /// Replaces the wall clock the scheduler reads (tests use paused tokio time).
    pub fn with_clock(mut self, clock: Arc<dyn scheduler::Clock>) -> Server {
        self.clock = clock;
        self
    }

    /// The runner (tests and benchmarks look at its queue).
    pub fn runner(&self) -> &Arc<Runner> {
        &self.runner
    }

    /// The router: health, metrics, the webhooks and admin API that are configured.
    fn router(&self) -> Router {
        let s = &self.serve;
        let debouncer = webhook::Debouncer::new(s.debounce, self.runner.clone(), s.dry_run);
        let hooks = Arc::new(webhook::Hooks {
            debouncer,
            metrics: self.metrics.clone(),
            body_limit: s.body_limit,
            okta: s.okta.clone().map(webhook::okta::Okta::new),
            graph: s.graph.clone().map(webhook::graph::Graph::new),
            generic: s.generic.clone().map(webhook::generic::Generic::new),
        });
        let mut hook_routes = Router::new();
        if hooks.okta.is_some() {
            hook_routes = hook_routes.route(
                "/webhooks/okta",
                get(webhook::okta::verify).post(webhook::okta::deliver),
            );
        }
        if hooks.graph.is_some() {
            hook_routes = hook_routes.route(
                "/webhooks/graph",
                axum::routing::post(webhook::graph::deliver),
            );
        }
        if hooks.generic.is_some() {
            hook_routes = hook_routes.route(
                "/webhooks/generic",
                axum::routing::post(webhook::generic::deliver),
            );
        }
        let hook_routes = hook_routes
            .with_state(hooks)
            // The handlers enforce the limit themselves (to count and log it); this is the
            // backstop for anything else.
            .layer(DefaultBodyLimit::max(s.body_limit));
        let app = App {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            runner: self.runner.clone(),
        };
        let mut router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(app)
            .merge(hook_routes);
        if let Some(token) = &s.admin_token {
            router = router.merge(admin::router(token.clone(), self.runner.clone()));
        } else {
            tracing::info!("admin API off: no [serve.admin] token configured");
        }
        router.layer(DefaultBodyLimit::max(s.body_limit))
    }

    /// Serves on `listener` until `shutdown` completes, then stops gracefully (see the module
    /// documentation). Returns when everything has stopped.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (tx, rx) = watch::channel(false);
        let worker = self
            .runner
            .spawn_worker(rx.clone())
            .map_err(ServeError::Http)?;
        let sched = self.serve.schedule.clone().map(|s| {
            tokio::spawn(scheduler::run(
                s,
                self.clock.clone(),
                self.runner.clone(),
                self.serve.dry_run,
                rx.clone(),
            ))
        });
        let router = self.router();
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(listen = %addr, "ironbridge serve listening");
        let signal_tx = tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("stop requested: no new work accepted");
            let _ = signal_tx.send(true);
        });
        let mut rx_http = rx.clone();
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            runner::stopped(&mut rx_http).await;
        });
        // Bounded: connections still open after the grace time are cut.
        let bound = self.serve.shutdown_grace + Duration::from_secs(5);
        let mut rx_bound = rx.clone();
        let http = tokio::select! {
            r = server => r.map_err(ServeError::Http),
            _ = async {
                runner::stopped(&mut rx_bound).await;
                tokio::time::sleep(bound).await;
            } => {
                tracing::warn!("open connections cut after the grace time");
                Ok(())
            }
        };
        let _ = tx.send(true);
        if tokio::time::timeout(bound, worker).await.is_err() {
            tracing::error!("the runner did not stop in time");
        }
        if let Some(s) = sched {
            s.abort();
        }
        tracing::info!("ironbridge serve stopped");
        http
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<App>) -> Response {
    let runs = match app.store.runs(20) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "ready": false, "reason": format!("state store: {e}") })),
            )
                .into_response()
        }
    };
    let finished: Vec<&str> = runs
        .iter()
        .map(|r| r.outcome.as_str())
        .filter(|o| !matches!(*o, "running" | "skipped"))
        .take(3)
        .collect();
    if finished.len() == 3 && finished.iter().all(|o| *o == "failed") {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": "the last 3 runs failed; see GET /v1/runs and the logs" })),
        )
            .into_response();
    }
    Json(json!({
        "ready": true,
        "running": app.runner.busy(),
        "waiting_for_lock": app.runner.waiting_for_lock(),
    }))
    .into_response()
}

async fn metrics_text(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn signals() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `ironbridge serve --config FILE`: loads, binds and serves until a signal.
pub async fn main(cfg: Config) -> Result<(), ServeError> {
    let addr = cfg.serve.listen;
    let server = Server::open(cfg)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind {
            addr: addr.to_string(),
            source: e,
        })?;
    server.run(listener, signals()).await
}

/// `ironbridge health --url URL`: true when the URL answers 2xx within `timeout` (the
/// container's HEALTHCHECK; the runtime image has no curl).
pub async fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let r = client.get(url).send().await.map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", r.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::runner::tests::fake;
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    fn server(dir: &std::path::Path, serve: ServeConfig) -> (Server, Arc<Store>) {
        let (exec, runner, store) = fake(dir, Duration::from_millis(10));
        drop(runner);
        let s = Server::with_executor(serve, exec, store.clone(), Arc::new(Metrics::new(None)));
        (s, store)
    }

    async fn status(r: &Router, uri: &str) -> StatusCode {
        r.clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn admin_api_and_webhooks_are_off_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = server(dir.path(), ServeConfig::default());
        let r = s.router();
        assert_eq!(status(&r, "/healthz").await, StatusCode::OK);
        assert_eq!(status(&r, "/v1/runs").await, StatusCode::NOT_FOUND);
        assert_eq!(status(&r, "/v1/openapi.json").await, StatusCode::NOT_FOUND);
        assert_eq!(status(&r, "/webhooks/okta").await, StatusCode::NOT_FOUND);
        let with_token = ServeConfig {
            admin_token: Some(crate::config::Secret::new("t")),
            ..ServeConfig::default()
        };
        let (s, _) = server(dir.path(), with_token);
        let r = s.router();
        assert_eq!(status(&r, "/v1/runs").await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&r, "/v1/openapi.json").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn readyz_fails_after_three_failed_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (s, store) = server(dir.path(), ServeConfig::default());
        let r = s.router();
        assert_eq!(status(&r, "/readyz").await, StatusCode::OK);
        let t0 = chrono::Utc::now();
        for i in 0..3 {
            let id = format!("r{i}");
            let t = t0 + chrono::Duration::seconds(i);
            store.start_run(&id, "schedule", "apply", t).unwrap();
            store
                .finish_run(&id, "failed", &json!({"error": "x"}), t)
                .unwrap();
        }
        // A skipped run in between does not count either way.
        store
            .record_skipped(
                "s",
                "schedule",
                "apply",
                "busy",
                t0 + chrono::Duration::seconds(5),
            )
            .unwrap();
        assert_eq!(status(&r, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        let t = t0 + chrono::Duration::seconds(10);
        store.start_run("ok", "schedule", "apply", t).unwrap();
        store.finish_run("ok", "succeeded", &json!({}), t).unwrap();
        assert_eq!(status(&r, "/readyz").await, StatusCode::OK);
    }
}
