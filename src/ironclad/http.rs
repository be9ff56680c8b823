//! The shared SCIM request layer: one base URL, an [`AuthProvider`], optional per-bucket
//! [`Pacer`], a concurrency limit, retries and typed errors. Nothing here is specific to
//! Ironclad, so the SCIM *source* reads any SCIM 2.0 server through the same layer (with a
//! [`StaticAuth`] and no pacer).
//!
//! One request goes: bucket pacing -> semaphore permit -> credentials -> send with a fresh
//! `x-request-id` -> classify the answer:
//! - 2xx: done. 401: ask the auth provider to refresh once, then try again at once.
//! - 429 (any method; the server did not process it), 5xx (except 501/505), connect errors,
//!   timeouts and lost connections: retried with full-jitter backoff or the server's
//!   `Retry-After`, within the [`RetryPolicy`]'s attempts and total time. A 429 also slows its
//!   bucket down.
//! - A POST whose outcome is unknown (timeout, lost connection or 5xx after it was sent) is
//!   never repeated blindly: [`ScimHttp::send_create`] runs the caller's lookup first and
//!   returns what it finds; only when the lookup finds nothing is the POST sent again. Plain
//!   [`ScimHttp::send`] never repeats a POST with an unknown outcome.
//!
//! Order within one attempt: the bucket's pacing slot (holding only that bucket's gate), then a
//! concurrency permit, then the gate is released and the request sent. Waiting for a slow
//! bucket never occupies a shared permit, and a bucket's next slot is not granted before the
//! previous request has its permit, so a queue on the permits cannot bunch one bucket's sends
//! (see [`super::pacing`]).
//!
//! What does not live here: tokens (see [`super::oauth`]), paging (see [`super::paging`]),
//! resource shapes (see [`super::types`]).

use super::error::{
    clip, transport_kind, transport_message, HttpError, IroncladError, TransportKind,
};
use super::pacing::{Classifier, Pacer};
use super::retry::{parse_retry_after, Schedule};
use super::stats::ClientStats;
use crate::config::{RetryPolicy, Secret};
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

/// The media type SCIM speaks.
pub const SCIM_JSON: &str = "application/scim+json";

/// Builds the HTTP client every request (SCIM and OAuth) goes through: rustls, the given
/// timeouts, and the extra CA certificates (PEM, one or more) when given.
pub fn build_reqwest(
    connect_timeout: Duration,
    request_timeout: Duration,
    ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, IroncladError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .user_agent(concat!("ironbridge/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| IroncladError::Setup(format!("extra CA certificate: {e}")))?;
        if certs.is_empty() {
            return Err(IroncladError::Setup(
                "extra CA certificate file holds no PEM certificate".into(),
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| IroncladError::Setup(format!("HTTP client: {}", transport_message(e))))
}

/// Percent-encodes one path segment (a resource id): everything but `A-Z a-z 0-9 * - . _`.
pub fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Encodes query pairs with `%20` for spaces (not `+`, which some servers take literally).
fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", segment(k), segment(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Headers that authenticate a request, and which credential generation they belong to (so a
/// 401 can say which token it refused).
#[derive(Clone)]
pub struct Credentials {
    /// Headers to add (`Authorization` is marked sensitive and never printed).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Increases each time the provider gets a new token.
    pub generation: u64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Credentials")
            .field("headers", &names)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Supplies credentials for requests and reacts to a 401.
pub trait AuthProvider: Send + Sync {
    /// Headers for the next request, fetching or refreshing a token when needed.
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, IroncladError>>;
    /// The server answered 401 to credentials of `generation`. Returns whether retrying with
    /// new credentials makes sense (a static token cannot be refreshed: `false`).
    fn unauthorized(&self, generation: u64) -> BoxFuture<'_, Result<bool, IroncladError>>;
}

/// Fixed credentials: a static bearer token, or none.
#[derive(Debug, Clone, Default)]
pub struct StaticAuth {
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// A bearer `Authorization` header value, marked sensitive.
pub fn bearer_header(token: &Secret) -> Result<HeaderValue, IroncladError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        IroncladError::Setup("the token holds characters not allowed in an HTTP header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

impl StaticAuth {
    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: &Secret) -> Result<Self, IroncladError> {
        Ok(StaticAuth {
            headers: vec![(AUTHORIZATION, bearer_header(token)?)],
        })
    }
    /// No authentication.
    pub fn none() -> Self {
        StaticAuth::default()
    }
    /// Adds a header to every request (e.g. an acting-user header).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl AuthProvider for StaticAuth {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, IroncladError>> {
        Box::pin(async move {
            Ok(Credentials {
                headers: self.headers.clone(),
                generation: 0,
            })
        })
    }
    fn unauthorized(&self, _generation: u64) -> BoxFuture<'_, Result<bool, IroncladError>> {
        Box::pin(async { Ok(false) })
    }
}

/// One SCIM request: method, path relative to the base URL (segments already encoded, see
/// [`segment`]), query pairs (encoded here) and an optional JSON body.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path relative to the base, starting with `/`: `/Users`, `/Users/abc`.
    pub path: String,
    /// Query pairs, unencoded.
    pub query: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Value>,
}

impl ApiRequest {
    /// A request without query or body.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        ApiRequest {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
        }
    }
    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    /// `DELETE path`.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }
    /// `method path` with a JSON body.
    pub fn with_body(method: Method, path: impl Into<String>, body: Value) -> Self {
        let mut r = Self::new(method, path);
        r.body = Some(body);
        r
    }
    /// Adds a query pair.
    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_string(), value.into()));
        self
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status (2xx). A create resolved by lookup reports 200.
    pub status: u16,
    /// The JSON body, `None` when empty (204).
    pub body: Option<Value>,
    /// The `x-request-id` of the attempt that produced it.
    pub request_id: String,
    /// True when a create's answer was lost and the resource was found by lookup instead.
    pub recovered: bool,
}

/// A 2xx answer with its body undecoded.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status (2xx).
    pub status: u16,
    /// The body as received (empty for 204), not copied out of the client's buffer.
    pub bytes: bytes::Bytes,
    /// The `x-request-id` of the attempt that produced it.
    pub request_id: String,
}

/// Settings of the request layer.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Base URL: `https://na1.ironcladapp.com/scim/v2`.
    pub base_url: url::Url,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Retry policy.
    pub retry: RetryPolicy,
}

/// A lookup run after a POST with an unknown outcome: `Some(resource)` if it exists.
pub type Lookup<'a> =
    &'a (dyn Fn() -> BoxFuture<'a, Result<Option<Value>, IroncladError>> + Send + Sync);

/// The raw result of one attempt that got an answer.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    bytes: bytes::Bytes,
    generation: u64,
}

/// The shared request layer. A clone shares the connection pool, credentials, pacer, permits
/// and counters (a listing reads its next page on a task of its own with one).
#[derive(Clone)]
pub struct ScimHttp {
    client: reqwest::Client,
    base: String,
    auth: Arc<dyn AuthProvider>,
    pacer: Option<Arc<Pacer>>,
    classify: Classifier,
    permits: Arc<Semaphore>,
    retry: RetryPolicy,
    stats: Arc<ClientStats>,
    stop: Arc<StopWrites>,
}

/// Set once the process is stopping: writes not yet on the wire (waiting for their bucket, a
/// connection slot or a retry) are given up with [`IroncladError::Stopped`] instead of sent.
/// Reads go on, and a write whose earlier attempt may have been applied is still settled.
#[derive(Debug, Default)]
struct StopWrites {
    stopped: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl StopWrites {
    fn is_set(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once the stop is set.
    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for ScimHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimHttp")
            .field("base", &self.base)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ScimHttp {
    /// A request layer over `client` (see [`build_reqwest`]). `classify` names each request's
    /// bucket for pacing and statistics.
    pub fn new(
        settings: HttpSettings,
        client: reqwest::Client,
        auth: Arc<dyn AuthProvider>,
        pacer: Option<Arc<Pacer>>,
        classify: Classifier,
        stats: Arc<ClientStats>,
    ) -> Self {
        ScimHttp {
            client,
            base: settings.base_url.as_str().trim_end_matches('/').to_string(),
            auth,
            pacer,
            classify,
            permits: Arc::new(Semaphore::new(settings.max_concurrency.max(1))),
            retry: settings.retry,
            stats,
            stop: Arc::new(StopWrites::default()),
        }
    }

    /// Gives up every write not yet sent, from now on (see [`IroncladError::Stopped`]).
    pub fn stop_writes(&self) {
        self.stop
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop.notify.notify_waiters();
    }

    /// The counters this layer updates.
    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request with retries. A POST whose outcome is unknown is not repeated: its
    /// error is returned ([`IroncladError::outcome_unknown`] is true).
    pub async fn send(&self, req: &ApiRequest) -> Result<ApiResponse, IroncladError> {
        let got = self.run(req, None).await?;
        got.decoded(req)
    }

    /// Like [`ScimHttp::send`], answering with the body's bytes undecoded (a listing parses
    /// its pages into its own forms, without JSON trees).
    pub async fn send_raw(&self, req: &ApiRequest) -> Result<RawResponse, IroncladError> {
        let got = self.run(req, None).await?;
        let bytes = match got.body {
            Body::Bytes(b) => b,
            Body::Value(None) => bytes::Bytes::new(),
            Body::Value(Some(v)) => serde_json::to_vec(&v).unwrap_or_default().into(),
        };
        Ok(RawResponse {
            status: got.status,
            bytes,
            request_id: got.request_id,
        })
    }

    /// Sends a create (POST). When an attempt's outcome is unknown, `lookup` is run before any
    /// retry; a resource it finds is returned as the result (`recovered: true`). A 409 on a
    /// retry after an unknown outcome is resolved by the same lookup.
    pub async fn send_create(
        &self,
        req: &ApiRequest,
        lookup: Lookup<'_>,
    ) -> Result<ApiResponse, IroncladError> {
        let got = self.run(req, Some(lookup)).await?;
        got.decoded(req)
    }

    async fn run(
        &self,
        req: &ApiRequest,
        lookup: Option<Lookup<'_>>,
    ) -> Result<Got, IroncladError> {
        let bucket = (self.classify)(&req.method, &req.path);
        let repeatable = req.method != Method::POST;
        let mut schedule = Schedule::new(self.retry);
        let mut refreshed = false;
        let mut maybe_applied_before = false;
        loop {
            schedule.attempt();
            let request_id = uuid::Uuid::new_v4().to_string();
            let span = tracing::info_span!(
                "scim_request",
                method = %req.method,
                path = %req.path,
                bucket,
                request_id = %request_id,
                attempt = schedule.attempts(),
            );
            let started = Instant::now();
            let answer = self
                .attempt(req, bucket, &request_id, !maybe_applied_before)
                .instrument(span.clone())
                .await;
            let (err, retry_after, maybe_applied) = match answer {
                Ok(a) => {
                    let _g = span.enter();
                    tracing::debug!(
                        status = a.status,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "answer"
                    );
                    if (200..300).contains(&a.status) {
                        return Ok(Got {
                            status: a.status,
                            body: Body::Bytes(a.bytes),
                            request_id,
                            recovered: false,
                        });
                    }
                    let err = http_error(req, &request_id, &a);
                    match a.status {
                        401 if !refreshed => {
                            refreshed = true;
                            if self.auth.unauthorized(a.generation).await? {
                                self.stats.record_unauthorized_refresh();
                                tracing::info!("401: credentials refreshed, trying once more");
                                schedule.forget_attempt();
                                continue;
                            }
                            return Err(err);
                        }
                        429 => {
                            if let Some(p) = &self.pacer {
                                p.throttled(bucket, a.retry_after);
                            }
                            schedule.throttled();
                            (err, a.retry_after, false)
                        }
                        s if s >= 500 && s != 501 && s != 505 => (err, a.retry_after, true),
                        404 if maybe_applied_before && req.method == Method::DELETE => {
                            // An earlier attempt probably deleted it; the goal is reached.
                            tracing::info!("404 after an unknown outcome: already deleted");
                            return Ok(Got {
                                status: 204,
                                body: Body::Value(None),
                                request_id,
                                recovered: true,
                            });
                        }
                        409 if maybe_applied_before => {
                            if let Some(found) = self.resolve(lookup).await {
                                return Ok(recovered(found, request_id));
                            }
                            return Err(err);
                        }
                        _ => return Err(err),
                    }
                }
                // Only transport failures are worth another attempt here; token errors were
                // already retried by the token cache, and setup or encoding errors will not change.
                Err(e @ IroncladError::Transport { .. }) => {
                    let maybe_applied = e.outcome_unknown();
                    (e, None, maybe_applied)
                }
                Err(e) => return Err(e),
            };

            if maybe_applied && !repeatable {
                let Some(found) = lookup else {
                    tracing::warn!(error = %err, "POST outcome unknown; not repeating it");
                    return Err(err);
                };
                match found().await {
                    Ok(Some(v)) => {
                        self.stats.record_recovered_create();
                        tracing::info!(
                            request_id = %request_id,
                            "POST outcome unknown; the resource exists, using it"
                        );
                        return Ok(recovered(v, request_id));
                    }
                    Ok(None) => {
                        tracing::info!(request_id = %request_id, "POST outcome unknown; lookup found nothing, so it is safe to send again");
                    }
                    Err(le) => {
                        tracing::warn!(error = %le, "POST outcome unknown and the lookup failed; not repeating it");
                        return Err(err);
                    }
                }
            }
            maybe_applied_before |= maybe_applied;

            match schedule.next_delay(retry_after) {
                Some(delay) => {
                    self.stats.record_retry();
                    tracing::warn!(
                        parent: &span,
                        reason = %err.metric_label(),
                        delay_ms = delay.as_millis() as u64,
                        "retrying"
                    );
                    // A write waiting to be tried again is given up at a stop, unless an
                    // earlier attempt may have been applied (the retry settles it).
                    if req.method != Method::GET && !maybe_applied_before {
                        tokio::select! {
                            biased;
                            _ = self.stop.wait() => return Err(IroncladError::Stopped),
                            _ = tokio::time::sleep(delay) => {}
                        }
                    } else {
                        tokio::time::sleep(delay).await;
                    }
                }
                None => {
                    tracing::warn!(parent: &span, error = %err, attempts = schedule.attempts(), "giving up");
                    if schedule.attempts() <= 1 {
                        return Err(err);
                    }
                    return Err(IroncladError::Exhausted {
                        attempts: schedule.attempts(),
                        elapsed_secs: schedule.elapsed().as_secs_f64(),
                        last: Box::new(err),
                    });
                }
            }
        }
    }

    /// Runs the lookup after a 409; `None` if there is none or it finds nothing or fails.
    async fn resolve(&self, lookup: Option<Lookup<'_>>) -> Option<Value> {
        let f = lookup?;
        match f().await {
            Ok(Some(v)) => {
                self.stats.record_recovered_create();
                tracing::info!("409 after an unknown outcome: the earlier attempt created it");
                Some(v)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "lookup after 409 failed");
                None
            }
        }
    }

    fn url(&self, req: &ApiRequest) -> String {
        let mut u = format!("{}{}", self.base, req.path);
        if !req.query.is_empty() {
            u.push('?');
            u.push_str(&encode_query(&req.query));
        }
        u
    }

    /// One attempt: permit, pacing, credentials, send, read the whole body.
    async fn attempt(
        &self,
        req: &ApiRequest,
        bucket: &'static str,
        request_id: &str,
        stoppable: bool,
    ) -> Result<Answer, IroncladError> {
        // Pacing first (holding only the bucket's gate), then a permit, then release the gate:
        // see the module docs of `pacing` for why this order neither starves other buckets nor
        // bunches sends.
        let queued = async {
            let paced = match &self.pacer {
                Some(p) => Some(p.acquire(bucket).await),
                None => None,
            };
            let permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| IroncladError::Setup("request layer shut down".into()))?;
            Ok::<_, IroncladError>((paced, permit))
        };
        // A write still waiting when the process stops is not sent (both waits are
        // cancellation-safe: nothing is counted until they return).
        // A repeat of a write that may already have been applied is still sent: it settles it.
        let writes = stoppable && req.method != Method::GET;
        if writes && self.stop.is_set() {
            return Err(IroncladError::Stopped);
        }
        let (paced, _permit) = tokio::select! {
            biased;
            _ = self.stop.wait(), if writes => return Err(IroncladError::Stopped),
            q = queued => q?,
        };
        // The gate goes now; the slot itself is kept until the response has arrived (it is
        // dropped when this function returns), which is what the window budget counts.
        let mut paced = paced;
        if let Some(paced) = &mut paced {
            if !paced.waited.is_zero() {
                self.stats.record_pacing_wait(paced.waited);
            }
            paced.release_gate();
        }
        let creds = self.auth.credentials().await?;
        let mut headers = HeaderMap::new();
        for (k, v) in creds.headers {
            headers.insert(k, v);
        }
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/scim+json, application/json"),
        );
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert(HeaderName::from_static("x-request-id"), v);
        }
        let mut rb = self
            .client
            .request(req.method.clone(), self.url(req))
            .headers(headers);
        if let Some(body) = &req.body {
            let bytes = serde_json::to_vec(body).map_err(|e| IroncladError::Decode {
                method: req.method.to_string(),
                path: req.path.clone(),
                message: format!("request body: {e}"),
                request_id: request_id.to_string(),
            })?;
            rb = rb
                .header(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON))
                .body(bytes);
        }
        let transport = |e: reqwest::Error| IroncladError::Transport {
            method: req.method.to_string(),
            path: req.path.clone(),
            kind: transport_kind(&e),
            message: transport_message(e),
            request_id: request_id.to_string(),
        };
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                self.stats.record_request(bucket, 0);
                return Err(transport(e));
            }
        };
        let status = resp.status().as_u16();
        self.stats.record_request(bucket, status);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = resp.bytes().await.map_err(|e| {
            let mut err = transport(e);
            if let IroncladError::Transport { kind, .. } = &mut err {
                if *kind == TransportKind::Connection {
                    *kind = TransportKind::Body;
                }
            }
            err
        })?;
        Ok(Answer {
            status,
            retry_after,
            bytes,
            generation: creds.generation,
        })
    }
}

fn recovered(v: Value, request_id: String) -> Got {
    Got {
        status: 200,
        body: Body::Value(Some(v)),
        request_id,
        recovered: true,
    }
}

/// A 2xx answer before its body is decoded.
struct Got {
    status: u16,
    body: Body,
    request_id: String,
    recovered: bool,
}

/// A body as received, or a resource found by lookup.
enum Body {
    Bytes(bytes::Bytes),
    Value(Option<Value>),
}

impl Got {
    fn decoded(self, req: &ApiRequest) -> Result<ApiResponse, IroncladError> {
        let body = match self.body {
            Body::Bytes(b) => decode_body(req, &self.request_id, &b)?,
            Body::Value(v) => v,
        };
        Ok(ApiResponse {
            status: self.status,
            body,
            request_id: self.request_id,
            recovered: self.recovered,
        })
    }
}

fn decode_body(
    req: &ApiRequest,
    request_id: &str,
    bytes: &[u8],
) -> Result<Option<Value>, IroncladError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| IroncladError::Decode {
            method: req.method.to_string(),
            path: req.path.clone(),
            message: format!("not JSON: {e}"),
            request_id: request_id.to_string(),
        })
}

/// Builds the typed error of a non-2xx answer from SCIM's error body (`scimType`, `detail`) or
/// Ironclad's `{code, message}`.
fn http_error(req: &ApiRequest, request_id: &str, a: &Answer) -> IroncladError {
    let body: Option<Value> = serde_json::from_slice(&a.bytes).ok();
    let text = |k: &str| {
        body.as_ref()
            .and_then(|b| b.get(k))
            .and_then(Value::as_str)
            .map(|s| clip(s, 500))
    };
    let scim_type = text("scimType");
    let detail = text("detail")
        .or_else(|| text("message"))
        .or_else(|| text("error_description"))
        .or_else(|| {
            if body.is_none() && !a.bytes.is_empty() {
                Some(clip(String::from_utf8_lossy(&a.bytes).trim(), 200))
            } else {
                None
            }
        });
    IroncladError::Http(Box::new(HttpError {
        method: req.method.to_string(),
        path: req.path.clone(),
        status: a.status,
        scim_type,
        detail,
        request_id: request_id.to_string(),
        retry_after: a.retry_after,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::ironclad::pacing::single_bucket;
    use crate::ironclad::Pacer;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxHeaders, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Json, Router};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A scripted fake: answers the n-th request with the n-th scripted response (the last one
    /// repeats) and records what it was sent.
    #[derive(Clone, Default)]
    struct Fake {
        script: Arc<Mutex<Vec<Step>>>,
        seen: Arc<Mutex<Vec<Seen>>>,
        hits: Arc<AtomicUsize>,
    }

    /// (method, URI, x-request-id) of one request the fake received.
    type Seen = (String, String, Option<String>);

    #[derive(Clone)]
    enum Step {
        Status(u16, Option<&'static str>, Value),
        Sleep(Duration, u16, Value),
    }

    async fn handle(State(f): State<Fake>, req: axum::extract::Request) -> Response {
        let n = f.hits.fetch_add(1, Ordering::SeqCst);
        let rid = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        f.seen
            .lock()
            .unwrap()
            .push((req.method().to_string(), req.uri().to_string(), rid));
        let step = {
            let s = f.script.lock().unwrap();
            s.get(n).or(s.last()).cloned().unwrap()
        };
        match step {
            Step::Status(code, ra, body) => {
                let mut h = AxHeaders::new();
                if let Some(ra) = ra {
                    h.insert("retry-after", ra.parse().unwrap());
                }
                (StatusCode::from_u16(code).unwrap(), h, Json(body)).into_response()
            }
            Step::Sleep(d, code, body) => {
                tokio::time::sleep(d).await;
                (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
            }
        }
    }

    async fn serve(steps: Vec<Step>) -> (Fake, String) {
        let fake = Fake {
            script: Arc::new(Mutex::new(steps)),
            ..Default::default()
        };
        let app = Router::new()
            .route(
                "/{*rest}",
                get(handle)
                    .post(handle)
                    .delete(handle)
                    .patch(handle)
                    .put(handle),
            )
            .with_state(fake.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (fake, format!("http://{addr}/scim/v2"))
    }

    fn layer(base: &str, timeout: Duration) -> ScimHttp {
        let client = build_reqwest(Duration::from_secs(2), timeout, None).unwrap();
        ScimHttp::new(
            HttpSettings {
                base_url: url::Url::parse(base).unwrap(),
                max_concurrency: 4,
                retry: RetryPolicy {
                    max_attempts: 4,
                    base_delay: Duration::from_millis(10),
                    max_delay: Duration::from_millis(50),
                    max_elapsed: Duration::from_secs(10),
                },
            },
            client,
            Arc::new(StaticAuth::bearer(&Secret::new("t0k")).unwrap()),
            None,
            single_bucket,
            Arc::new(ClientStats::default()),
        )
    }

    fn ok() -> Step {
        Step::Status(200, None, serde_json::json!({"id": "1"}))
    }

    #[tokio::test]
    async fn retries_5xx_then_succeeds_with_a_new_request_id_each_time() {
        let (fake, base) = serve(vec![
            Step::Status(503, None, serde_json::json!({})),
            Step::Status(500, None, serde_json::json!({})),
            ok(),
        ])
        .await;
        let h = layer(&base, Duration::from_secs(2));
        let r = h.send(&ApiRequest::get("/Users/1")).await.unwrap();
        assert_eq!(r.body.unwrap()["id"], "1");
        let seen = fake.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        let ids: std::collections::HashSet<_> = seen.iter().map(|s| s.2.clone().unwrap()).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(h.stats().snapshot().retries, 2);
    }

    #[tokio::test]
    async fn honours_retry_after_seconds() {
        let (_fake, base) = serve(vec![
            Step::Status(429, Some("1"), serde_json::json!({"detail": "slow down"})),
            ok(),
        ])
        .await;
        let h = layer(&base, Duration::from_secs(2));
        let t = Instant::now();
        h.send(&ApiRequest::get("/Users/1")).await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(990),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(h.stats().snapshot().throttled, 1);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_with_the_last_http_error() {
        let (fake, base) = serve(vec![Step::Status(
            502,
            None,
            serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "502", "detail": "bad gateway"}),
        )])
        .await;
        let h = layer(&base, Duration::from_secs(2));
        let e = h.send(&ApiRequest::get("/Users/1")).await.unwrap_err();
        assert_eq!(fake.hits.load(Ordering::SeqCst), 4);
        assert_eq!(e.status(), Some(502));
        assert!(e.to_string().contains("bad gateway"), "{e}");
        assert!(e.to_string().contains("gave up after 4 attempts"), "{e}");
        assert!(!e.to_string().contains("t0k"));
    }

    #[tokio::test]
    async fn client_errors_are_not_retried_and_carry_scim_fields() {
        let (fake, base) = serve(vec![Step::Status(
            400,
            None,
            serde_json::json!({"status": "400", "scimType": "invalidFilter", "detail": "unknown attribute"}),
        )])
        .await;
        let h = layer(&base, Duration::from_secs(2));
        let e = h
            .send(&ApiRequest::get("/Users").query("filter", "x eq \"y\""))
            .await
            .unwrap_err();
        assert_eq!(fake.hits.load(Ordering::SeqCst), 1);
        assert_eq!(e.scim_type(), Some("invalidFilter"));
        match &e {
            IroncladError::Http(h) => {
                assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/Users"));
            }
            other => panic!("{other:?}"),
        }
        // The query went out with %20 for spaces and the quotes encoded.
        let uri = fake.seen.lock().unwrap()[0].1.clone();
        assert_eq!(uri, "/scim/v2/Users?filter=x%20eq%20%22y%22");
    }

    #[tokio::test]
    async fn a_post_timing_out_is_never_repeated_without_a_lookup() {
        let (fake, base) = serve(vec![Step::Sleep(
            Duration::from_millis(600),
            201,
            serde_json::json!({"id": "1"}),
        )])
        .await;
        let h = layer(&base, Duration::from_millis(200));
        let req =
            ApiRequest::with_body(Method::POST, "/Users", serde_json::json!({"userName": "a"}));
        let e = h.send(&req).await.unwrap_err();
        assert!(e.outcome_unknown(), "{e:?}");
        assert_eq!(fake.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_post_timing_out_is_resolved_by_lookup() {
        let (fake, base) = serve(vec![Step::Sleep(
            Duration::from_millis(600),
            201,
            serde_json::json!({"id": "1"}),
        )])
        .await;
        let h = layer(&base, Duration::from_millis(200));
        let req =
            ApiRequest::with_body(Method::POST, "/Users", serde_json::json!({"userName": "a"}));
        let lookups = AtomicUsize::new(0);
        let lookup = || -> BoxFuture<'_, Result<Option<Value>, IroncladError>> {
            lookups.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(Some(serde_json::json!({"id": "found"}))) })
        };
        let r = h.send_create(&req, &lookup).await.unwrap();
        assert!(r.recovered);
        assert_eq!(r.body.unwrap()["id"], "found");
        assert_eq!(fake.hits.load(Ordering::SeqCst), 1);
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_post_whose_lookup_finds_nothing_is_sent_again() {
        let (fake, base) = serve(vec![
            Step::Sleep(
                Duration::from_millis(600),
                201,
                serde_json::json!({"id": "lost"}),
            ),
            Step::Status(201, None, serde_json::json!({"id": "2"})),
        ])
        .await;
        let h = layer(&base, Duration::from_millis(200));
        let req =
            ApiRequest::with_body(Method::POST, "/Users", serde_json::json!({"userName": "a"}));
        let lookup = || -> BoxFuture<'_, Result<Option<Value>, IroncladError>> {
            Box::pin(async { Ok(None) })
        };
        let r = h.send_create(&req, &lookup).await.unwrap();
        assert!(!r.recovered);
        assert_eq!(r.status, 201);
        assert_eq!(fake.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_429_on_post_is_retried_without_lookup() {
        let (fake, base) = serve(vec![
            Step::Status(429, Some("0"), serde_json::json!({})),
            Step::Status(201, None, serde_json::json!({"id": "2"})),
        ])
        .await;
        let h = layer(&base, Duration::from_secs(2));
        let req = ApiRequest::with_body(Method::POST, "/Users", serde_json::json!({}));
        let lookup = || -> BoxFuture<'_, Result<Option<Value>, IroncladError>> {
            Box::pin(async { panic!("no lookup after a 429") })
        };
        assert_eq!(h.send_create(&req, &lookup).await.unwrap().status, 201);
        assert_eq!(fake.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_delete_answered_404_after_a_502_counts_as_done() {
        let (fake, base) = serve(vec![
            Step::Status(502, None, serde_json::json!({})),
            Step::Status(404, None, serde_json::json!({"detail": "no such user"})),
        ])
        .await;
        let h = layer(&base, Duration::from_secs(2));
        let r = h.send(&ApiRequest::delete("/Users/1")).await.unwrap();
        assert!(r.recovered);
        assert_eq!(fake.hits.load(Ordering::SeqCst), 2);
        // Without an earlier doubtful attempt, a 404 stays an error.
        let (_fake, base) = serve(vec![Step::Status(404, None, serde_json::json!({}))]).await;
        let e = layer(&base, Duration::from_secs(2))
            .send(&ApiRequest::delete("/Users/1"))
            .await
            .unwrap_err();
        assert!(e.is_not_found());
    }

    #[tokio::test]
    async fn connect_errors_are_transport_errors_not_http_errors() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let h = layer(
            &format!("http://127.0.0.1:{port}/scim/v2"),
            Duration::from_secs(1),
        );
        let e = h.send(&ApiRequest::get("/Users")).await.unwrap_err();
        match e.root() {
            IroncladError::Transport { kind, .. } => assert_eq!(*kind, TransportKind::Connect),
            other => panic!("{other:?}"),
        }
        assert!(!e.outcome_unknown());
        assert_eq!(e.metric_label(), "transport_connect");
    }

    #[tokio::test]
    async fn static_auth_does_not_retry_a_401() {
        let (fake, base) = serve(vec![Step::Status(
            401,
            None,
            serde_json::json!({"code": "UNAUTHORIZED", "message": "token revoked"}),
        )])
        .await;
        let h = layer(&base, Duration::from_secs(1));
        let e = h.send(&ApiRequest::get("/Users")).await.unwrap_err();
        assert_eq!(e.status(), Some(401));
        assert!(e.to_string().contains("token revoked"));
        assert_eq!(fake.hits.load(Ordering::SeqCst), 1);
    }

    fn slow_or_fast(_: &Method, path: &str) -> &'static str {
        if path.starts_with("/slow") {
            "slow"
        } else {
            "fast"
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_bucket_does_not_starve_a_fast_one() {
        let (_fake, base) = serve(vec![ok()]).await;
        let pacer = Arc::new(Pacer::new(
            &[("slow", 1), ("fast", 60_000)],
            1.0,
            Duration::from_secs(60),
        ));
        let h = Arc::new(ScimHttp::new(
            HttpSettings {
                base_url: url::Url::parse(&base).unwrap(),
                max_concurrency: 2,
                retry: RetryPolicy::default(),
            },
            build_reqwest(Duration::from_secs(2), Duration::from_secs(5), None).unwrap(),
            Arc::new(StaticAuth::none()),
            Some(pacer),
            slow_or_fast,
            Arc::new(ClientStats::default()),
        ));
        // Five requests in a bucket of one a minute queue up first...
        let mut slow = Vec::new();
        for _ in 0..5 {
            let h = h.clone();
            slow.push(tokio::spawn(async move {
                h.send(&ApiRequest::get("/slow")).await.unwrap();
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...and twenty fast ones still go through at once, with only two permits.
        let t = Instant::now();
        for _ in 0..20 {
            h.send(&ApiRequest::get("/fast")).await.unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_millis(800),
            "{:?}",
            t.elapsed()
        );
        for s in slow {
            s.abort();
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_a_setup_error() {
        let e = build_reqwest(
            Duration::from_secs(1),
            Duration::from_secs(1),
            Some(b"not a certificate"),
        )
        .unwrap_err();
        assert_eq!(e.metric_label(), "setup");
        assert!(e.to_string().contains("CA certificate"), "{e}");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("a b/c+d"), "a%20b%2Fc%2Bd");
        assert_eq!(segment("2819c223-7f76"), "2819c223-7f76");
    }
}
