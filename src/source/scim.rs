//! The SCIM 2.0 source: reads people (`GET /Users`) and groups (`GET /Groups`, with members)
//! from any SCIM 2.0 server into the project's model, through the shared request layer
//! ([`crate::ironclad::http`]: retries with full jitter and `Retry-After`, typed errors).
//!
//! What lives here: the `[source] kind = "scim"` configuration, OAuth client-credentials
//! tokens for the source, the paged listing with `sortBy`, and the flattening of a SCIM
//! resource into [`Attributes`] named by SCIM paths:
//! - simple attributes keep their name (`userName`, `active`, `externalId`); sub-attributes
//!   of complex ones are dotted (`name.givenName`, `meta.location`);
//! - extension schemas are prefixed by their URN and a colon
//!   (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`,
//!   `...:User:manager.value`);
//! - a multi-valued complex attribute (`emails`, `phoneNumbers`, `addresses`...) gives `emails`
//!   (every `value`, the primary one first), `emails.work` (values whose `type` is `work`),
//!   `emails.primary` (the value marked primary, else the first), and `emails.display`,
//!   `addresses.locality`, `addresses.work.locality`... for other sub-attributes;
//! - booleans are `true` / `false`, numbers their JSON text.
//!
//! A read is complete or it is an error: any page that still fails after retries fails the
//! whole read, and nothing read before it is returned. What does not live here: the request
//! layer itself, and deciding who belongs in Ironclad (the mapping).

use crate::config::{RetryPolicy, Secret, SecretRef};
use crate::ironclad::error::{transport_kind, transport_message, TransportKind};
use crate::ironclad::http::{
    bearer_header, build_reqwest, ApiRequest, AuthProvider, Credentials, HttpSettings, ScimHttp,
    StaticAuth,
};
use crate::ironclad::retry::{parse_retry_after, Schedule};
use crate::ironclad::IroncladError;
use crate::model::{Attributes, Entry, Group, Snapshot};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// `[source] kind = "scim"`: a SCIM 2.0 server to read people and groups from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimSourceConfig {
    /// Base URL of the SCIM API, under which `/Users` and `/Groups` live, e.g.
    /// `https://idp.example.com/scim/v2`.
    pub url: String,
    /// How to authenticate.
    pub auth: ScimAuthConfig,
    /// Resources per page (`count`), 1..=1000. Default 100.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// A SCIM filter for `/Users`, e.g. `active eq true`. Default: none (everyone).
    #[serde(default)]
    pub users_filter: Option<String>,
    /// A SCIM filter for `/Groups`. Default: none (every group).
    #[serde(default)]
    pub groups_filter: Option<String>,
    /// Read `/Groups` at all. Default true; set false for servers without groups.
    #[serde(default = "yes")]
    pub read_groups: bool,
    /// Sent as `sortBy` on every list request, e.g. `id` or `meta.created`, for servers whose
    /// listing order is not stable between requests (paging over an unstable order can skip
    /// resources). Default: none.
    #[serde(default)]
    pub sort_by: Option<String>,
    /// PEM file with extra CA certificates to trust, relative to the configuration file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Connect timeout, seconds. Default 10.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Per-request timeout, seconds. Default 30.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Retries of failed requests (429, 5xx, connection problems).
    #[serde(default)]
    pub retry: ScimRetryConfig,
}

/// `[source.auth]` for a SCIM source.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScimAuthConfig {
    /// A static bearer token.
    BearerToken {
        /// The token: `{ env = "VAR" }` or `{ file = "path" }`.
        token: SecretRef,
    },
    /// OAuth 2.0 client credentials (client authenticated with HTTP Basic).
    ClientCredentials {
        /// The token endpoint, e.g. `https://idp.example.com/oauth2/token`.
        token_url: String,
        /// The client id (not a secret).
        client_id: String,
        /// The client secret: `{ env = "VAR" }` or `{ file = "path" }`.
        client_secret: SecretRef,
        /// Scopes to request. Default: none (the client's default scopes).
        #[serde(default)]
        scopes: Vec<String>,
    },
    /// No authentication (a server on a trusted network).
    None,
}

/// `[source.retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimRetryConfig {
    /// Attempts per request, including the first. Default 5.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First backoff ceiling, milliseconds (full jitter below it). Default 500.
    #[serde(default = "default_base_delay")]
    pub base_delay_ms: u64,
    /// Largest backoff ceiling, milliseconds. Default 10000.
    #[serde(default = "default_max_delay")]
    pub max_delay_ms: u64,
    /// Give up retrying one request after this many seconds. Default 120.
    #[serde(default = "default_max_elapsed")]
    pub max_elapsed_secs: u64,
}

impl Default for ScimRetryConfig {
    fn default() -> Self {
        ScimRetryConfig {
            max_attempts: default_attempts(),
            base_delay_ms: default_base_delay(),
            max_delay_ms: default_max_delay(),
            max_elapsed_secs: default_max_elapsed(),
        }
    }
}

impl ScimRetryConfig {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            base_delay: Duration::from_millis(self.base_delay_ms),
            max_delay: Duration::from_millis(self.max_delay_ms.max(self.base_delay_ms)),
            max_elapsed: Duration::from_secs(self.max_elapsed_secs),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_page_size() -> u32 {
    100
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    30
}
fn default_attempts() -> u32 {
    5
}
fn default_base_delay() -> u64 {
    500
}
fn default_max_delay() -> u64 {
    10_000
}
fn default_max_elapsed() -> u64 {
    120
}

/// Parses an http(s) URL without credentials, query or fragment.
fn parse_base_url(key: &str, s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s.trim().trim_end_matches('/'))
        .map_err(|e| format!("{key}: not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{key}: must be an http:// or https:// URL"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "{key}: must not carry credentials; use source.auth with a secret from env or file"
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{key}: must not have a query or fragment"));
    }
    Ok(u)
}

impl ScimSourceConfig {
    /// Checks the configuration without connecting or reading secrets. The message names the
    /// key at fault.
    pub fn validate(&self, base: &Path) -> Result<(), String> {
        parse_base_url("source.url", &self.url)?;
        if !(1..=1000).contains(&self.page_size) {
            return Err(format!(
                "source.page_size: {} is out of range; use 1..=1000",
                self.page_size
            ));
        }
        if self.connect_timeout_secs == 0 || self.request_timeout_secs == 0 {
            return Err(
                "source.connect_timeout_secs / request_timeout_secs: must be at least 1".into(),
            );
        }
        if self.retry.max_attempts == 0 {
            return Err("source.retry.max_attempts: must be at least 1".into());
        }
        for (key, f) in [
            ("source.users_filter", &self.users_filter),
            ("source.groups_filter", &self.groups_filter),
            ("source.sort_by", &self.sort_by),
        ] {
            if f.as_deref().is_some_and(|f| f.trim().is_empty()) {
                return Err(format!("{key}: empty; remove the key instead"));
            }
        }
        if let Some(ca) = &self.ca_file {
            let p = resolve(base, ca);
            if !p.is_file() {
                return Err(format!(
                    "source.ca_file: {} is not a readable file",
                    p.display()
                ));
            }
        }
        match &self.auth {
            ScimAuthConfig::BearerToken { token } => token
                .check_shape()
                .map_err(|e| format!("source.auth.token: {e}")),
            ScimAuthConfig::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                ..
            } => {
                parse_base_url("source.auth.token_url", token_url)?;
                if client_id.trim().is_empty() {
                    return Err("source.auth.client_id: empty".into());
                }
                client_secret
                    .check_shape()
                    .map_err(|e| format!("source.auth.client_secret: {e}"))
            }
            ScimAuthConfig::None => Ok(()),
        }
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a SCIM source read failed. Never carries a token or a secret: HTTP errors hold the
/// method, the URL path (no query string), the status and SCIM's `scimType` and `detail`.
#[derive(Debug, thiserror::Error)]
pub enum ScimSourceError {
    /// The source could not be set up (a secret could not be read, bad URL or CA file).
    #[error("SCIM source setup: {0}")]
    Setup(String),
    /// The server answered with an error status.
    #[error("SCIM source: {method} {path}: HTTP {status}{}{}{}{}",
        scim_type.as_deref().map(|t| format!(" {t}")).unwrap_or_default(),
        detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default(),
        attempts_text(*attempts),
        hint_for(*status, scim_type.as_deref()))]
    Http {
        /// HTTP method.
        method: String,
        /// URL path, without the query string (e.g. `/scim/v2/Users`).
        path: String,
        /// HTTP status.
        status: u16,
        /// SCIM `scimType`, when given (`invalidFilter`...).
        scim_type: Option<String>,
        /// SCIM `detail`, when given.
        detail: Option<String>,
        /// Attempts made (1 when the error is not retried).
        attempts: u32,
    },
    /// No usable answer: could not connect, timed out, connection lost.
    #[error("SCIM source: {method} {path}: {kind}{}: {message}", attempts_text(*attempts))]
    Transport {
        /// HTTP method.
        method: String,
        /// URL path, without the query string.
        path: String,
        /// What went wrong.
        kind: TransportKind,
        /// The underlying error (URLs removed).
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The OAuth token endpoint refused or could not be reached.
    #[error("SCIM source: OAuth token request failed: {0}")]
    Token(String),
    /// A 2xx answer that is not what SCIM promises (not JSON, resource without `id`...).
    #[error("SCIM source: {method} {path}: unexpected response: {message}")]
    BadResponse {
        /// HTTP method.
        method: String,
        /// URL path, without the query string.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// Paging could not be completed consistently.
    #[error("SCIM source: listing {path}: {message}")]
    Paging {
        /// URL path of the collection.
        path: String,
        /// What went wrong.
        message: String,
    },
}

fn attempts_text(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}

fn hint_for(status: u16, scim_type: Option<&str>) -> &'static str {
    match (status, scim_type) {
        (401, _) => " — the server refused the credentials: check [source.auth]",
        (403, _) => " — the credentials may not list this resource type",
        (404, _) => {
            " — check source.url: it must be the SCIM base that /Users and /Groups live under"
        }
        (400, Some("invalidFilter")) => " — check source.users_filter / source.groups_filter",
        _ => "",
    }
}

impl ScimSourceError {
    /// Converts a request-layer error; `prefix` is the base URL's path (`/scim/v2`), so the
    /// error names the full URL path.
    fn from_client(prefix: &str, e: IroncladError) -> Self {
        let attempts = match &e {
            IroncladError::Exhausted { attempts, .. } => *attempts,
            _ => 1,
        };
        let full = |p: &str| format!("{prefix}{p}");
        match e.root() {
            IroncladError::Http(h) => ScimSourceError::Http {
                method: h.method.clone(),
                path: full(&h.path),
                status: h.status,
                scim_type: h.scim_type.clone(),
                detail: h.detail.clone(),
                attempts,
            },
            IroncladError::Transport {
                method,
                path,
                kind,
                message,
                ..
            } => ScimSourceError::Transport {
                method: method.clone(),
                path: full(path),
                kind: *kind,
                message: message.clone(),
                attempts,
            },
            IroncladError::Decode {
                method,
                path,
                message,
                ..
            } => ScimSourceError::BadResponse {
                method: method.clone(),
                path: full(path),
                message: message.clone(),
            },
            IroncladError::Paging { path, message } => ScimSourceError::Paging {
                path: full(path),
                message: message.clone(),
            },
            t @ (IroncladError::Token { .. } | IroncladError::TokenTransport { .. }) => {
                ScimSourceError::Token(t.to_string())
            }
            other => ScimSourceError::Setup(other.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OAuth client credentials
// ---------------------------------------------------------------------------------------------

/// A cached access token.
struct Cached {
    header: reqwest::header::HeaderValue,
    refresh_at: Option<Instant>,
    generation: u64,
}

/// Client-credentials tokens for the source: fetched on first use, refreshed a little before
/// they expire and once after a 401. One fetch at a time.
struct ClientCredentials {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    secret: Secret,
    scopes: Vec<String>,
    retry: RetryPolicy,
    /// std `RwLock`: never held across an `.await`.
    current: RwLock<Option<Arc<Cached>>>,
    flight: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

impl ClientCredentials {
    fn cached(&self) -> Option<Arc<Cached>> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    async fn token(&self, stale: Option<u64>) -> Result<Arc<Cached>, IroncladError> {
        let usable = |c: &Cached| {
            stale.is_none_or(|g| c.generation != g)
                && c.refresh_at.is_none_or(|t| Instant::now() < t)
        };
        if let Some(c) = self.cached().filter(|c| usable(c)) {
            return Ok(c);
        }
        let _flight = self.flight.lock().await;
        if let Some(c) = self.cached().filter(|c| usable(c)) {
            return Ok(c);
        }
        let started = Instant::now();
        let (token, expires_in) = self.fetch().await?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let refresh_at = expires_in.map(|s| {
            let life = Duration::from_secs(s);
            started + life.saturating_sub((life / 10).min(Duration::from_secs(60)))
        });
        let c = Arc::new(Cached {
            header: bearer_header(&token)?,
            refresh_at,
            generation,
        });
        if let Ok(mut w) = self.current.write() {
            *w = Some(c.clone());
        }
        tracing::info!(generation, expires_in, "SCIM source: OAuth token obtained");
        Ok(c)
    }

    /// One token request, retried on 429, 5xx and transport failures.
    async fn fetch(&self) -> Result<(Secret, Option<u64>), IroncladError> {
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !self.scopes.is_empty() {
            form.push(("scope", self.scopes.join(" ")));
        }
        let mut schedule = Schedule::new(self.retry);
        loop {
            schedule.attempt();
            let sent = self
                .http
                .post(&self.token_url)
                .basic_auth(&self.client_id, Some(self.secret.expose()))
                .header(reqwest::header::ACCEPT, "application/json")
                .form(&form)
                .send()
                .await;
            let (err, retry_after) = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                    let bytes = resp.bytes().await.unwrap_or_default();
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let text = |k: &str| {
                        body.get(k)
                            .and_then(Value::as_str)
                            .map(|s| s.chars().take(300).collect::<String>())
                    };
                    if (200..300).contains(&status) {
                        let token = text("access_token").filter(|t| !t.is_empty()).ok_or(
                            IroncladError::Token {
                                endpoint: "token",
                                status: Some(status),
                                error: "invalid_response".into(),
                                description: Some("no access_token in the answer".into()),
                            },
                        )?;
                        let expires_in = match body.get("expires_in") {
                            Some(Value::Number(n)) => n.as_u64(),
                            Some(Value::String(s)) => s.trim().parse().ok(),
                            _ => None,
                        };
                        // The token itself is not in `text`'s output anywhere else.
                        return Ok((Secret::new(token), expires_in));
                    }
                    let err = IroncladError::Token {
                        endpoint: "token",
                        status: Some(status),
                        error: text("error").unwrap_or_else(|| "unexpected_response".into()),
                        description: text("error_description"),
                    };
                    if status != 429 && status < 500 {
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(e) => (
                    IroncladError::TokenTransport {
                        endpoint: "token",
                        kind: transport_kind(&e),
                        message: transport_message(e),
                    },
                    None,
                ),
            };
            match schedule.next_delay(retry_after) {
                Some(d) => {
                    tracing::warn!(error = %err, delay_ms = d.as_millis() as u64, "SCIM source: token request failed; retrying");
                    tokio::time::sleep(d).await;
                }
                None => return Err(err),
            }
        }
    }
}

impl AuthProvider for ClientCredentials {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, IroncladError>> {
        Box::pin(async move {
            let c = self.token(None).await?;
            Ok(Credentials {
                headers: vec![(reqwest::header::AUTHORIZATION, c.header.clone())],
                generation: c.generation,
            })
        })
    }

    fn unauthorized(&self, generation: u64) -> BoxFuture<'_, Result<bool, IroncladError>> {
        Box::pin(async move {
            self.token(Some(generation)).await?;
            Ok(true)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The source
// ---------------------------------------------------------------------------------------------

/// Reads a SCIM 2.0 server into snapshots.
#[derive(Debug)]
pub struct ScimSource {
    cfg: ScimSourceConfig,
    base: url::Url,
    http: ScimHttp,
}

impl ScimSource {
    /// A source for `cfg`: secrets are read now (relative secret files and `ca_file` against
    /// `base`, the configuration file's directory). Makes no request.
    pub fn open(cfg: ScimSourceConfig, base: &Path) -> Result<ScimSource, ScimSourceError> {
        cfg.validate(base).map_err(ScimSourceError::Setup)?;
        let url = parse_base_url("source.url", &cfg.url).map_err(ScimSourceError::Setup)?;
        let ca_pem = match &cfg.ca_file {
            Some(p) => {
                let p = resolve(base, p);
                Some(std::fs::read(&p).map_err(|e| {
                    ScimSourceError::Setup(format!("source.ca_file {}: {e}", p.display()))
                })?)
            }
            None => None,
        };
        let retry = cfg.retry.policy();
        let client = build_reqwest(
            Duration::from_secs(cfg.connect_timeout_secs),
            Duration::from_secs(cfg.request_timeout_secs),
            ca_pem.as_deref(),
        )
        .map_err(|e| ScimSourceError::Setup(e.to_string()))?;
        let auth: Arc<dyn AuthProvider> = match &cfg.auth {
            ScimAuthConfig::BearerToken { token } => {
                let t = token
                    .resolve(base)
                    .map_err(|e| ScimSourceError::Setup(format!("source.auth.token: {e}")))?;
                Arc::new(StaticAuth::bearer(&t).map_err(|e| ScimSourceError::Setup(e.to_string()))?)
            }
            ScimAuthConfig::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scopes,
            } => {
                let secret = client_secret.resolve(base).map_err(|e| {
                    ScimSourceError::Setup(format!("source.auth.client_secret: {e}"))
                })?;
                let token_url = parse_base_url("source.auth.token_url", token_url)
                    .map_err(ScimSourceError::Setup)?;
                Arc::new(ClientCredentials {
                    http: client.clone(),
                    token_url: token_url.to_string(),
                    client_id: client_id.clone(),
                    secret,
                    scopes: scopes.clone(),
                    retry,
                    current: RwLock::new(None),
                    flight: tokio::sync::Mutex::new(()),
                    generation: AtomicU64::new(0),
                })
            }
            ScimAuthConfig::None => Arc::new(StaticAuth::none()),
        };
        let http = ScimHttp::new(
            HttpSettings {
                base_url: url.clone(),
                // Pages are read one after the other.
                max_concurrency: 1,
                retry,
            },
            client,
            auth,
            None,
            crate::ironclad::pacing::single_bucket,
            Arc::new(crate::ironclad::stats::ClientStats::default()),
        );
        Ok(ScimSource {
            cfg,
            base: url,
            http,
        })
    }

    /// The base URL's path (`/scim/v2`), prefixed to request paths in errors.
    fn prefix(&self) -> &str {
        self.base.path().trim_end_matches('/')
    }

    fn locator(&self, kind: &str, id: &str, resource: &Map<String, Value>) -> String {
        resource
            .get("meta")
            .and_then(|m| m.get("location"))
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "{}/{kind}/{}",
                    self.base.as_str().trim_end_matches('/'),
                    crate::ironclad::http::segment(id)
                )
            })
    }

    /// Lists `/{kind}` completely, handing each new resource (de-duplicated by `id`) to
    /// `each`. Pages are requested with `startIndex`/`count` (and `sortBy`, `filter` when
    /// configured). When `totalResults` changes during a pass, one more full pass is made and
    /// merged by id, so a resource shifted across a page boundary is not missed.
    async fn list<F>(
        &self,
        kind: &str,
        filter: Option<&str>,
        mut each: F,
    ) -> Result<(), ScimSourceError>
    where
        F: FnMut(String, Map<String, Value>),
    {
        let path = format!("/{kind}");
        let full = format!("{}{path}", self.prefix());
        let page_size = u64::from(self.cfg.page_size.max(1));
        let mut seen: HashSet<String> = HashSet::new();
        let mut duplicates = 0usize;
        let mut last_total: Option<u64> = None;
        for pass in 1..=2 {
            let mut start: u64 = 1;
            let mut first_total: Option<u64> = None;
            let mut changed = false;
            let mut max_total = 0u64;
            let mut pages = 0u64;
            loop {
                pages += 1;
                // Bounds a server that keeps shifting or ignores startIndex.
                if pages > 10 + 3 * max_total.div_ceil(page_size) {
                    return Err(ScimSourceError::Paging {
                        path: full.clone(),
                        message: format!(
                            "gave up after {pages} pages: the collection kept changing, or the \
                             server ignores startIndex"
                        ),
                    });
                }
                let mut req = ApiRequest::get(path.clone())
                    .query("startIndex", start.to_string())
                    .query("count", page_size.to_string());
                if let Some(s) = &self.cfg.sort_by {
                    req = req.query("sortBy", s.clone());
                }
                if let Some(f) = filter {
                    req = req.query("filter", f.to_string());
                }
                let resp = self
                    .http
                    .send(&req)
                    .await
                    .map_err(|e| ScimSourceError::from_client(self.prefix(), e))?;
                let bad = |m: String| ScimSourceError::BadResponse {
                    method: "GET".into(),
                    path: full.clone(),
                    message: m,
                };
                let mut body = match resp.body {
                    Some(Value::Object(o)) => o,
                    _ => return Err(bad("a list response must be a JSON object".into())),
                };
                let total = body.get("totalResults").and_then(Value::as_u64);
                if total.is_some() {
                    last_total = total;
                }
                if let Some(t) = total {
                    max_total = max_total.max(t);
                    match first_total {
                        None => first_total = Some(t),
                        Some(f) if f != t => changed = true,
                        _ => {}
                    }
                }
                let key = body
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case("Resources"))
                    .cloned();
                let resources = match key.and_then(|k| body.remove(&k)) {
                    Some(Value::Array(a)) => a,
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => return Err(bad("`Resources` is not an array".into())),
                };
                let n = resources.len() as u64;
                if n == 0 {
                    if total.is_some_and(|t| t >= start) {
                        // Resources should be here: deletions moved them before the cursor.
                        changed = true;
                    }
                    break;
                }
                for r in resources {
                    let Value::Object(obj) = r else {
                        return Err(bad(format!("a resource in {kind} is not a JSON object")));
                    };
                    let id = match obj.get("id") {
                        Some(Value::String(s)) if !s.is_empty() => s.clone(),
                        _ => return Err(bad(format!("a resource in {kind} has no `id`"))),
                    };
                    if seen.insert(id.clone()) {
                        each(id, obj);
                    } else if pass == 1 {
                        duplicates += 1;
                    }
                }
                start += n;
                if total.is_some_and(|t| start > t) {
                    break;
                }
            }
            if pass == 1 && duplicates > 0 {
                changed = true;
            }
            if !changed {
                break;
            }
            if pass == 1 {
                tracing::warn!(
                    path = %full,
                    duplicates,
                    "SCIM source: the collection changed while it was read (totalResults shifted); reading it once more and merging by id"
                );
            } else {
                tracing::warn!(path = %full, "SCIM source: the collection was still changing during the second pass");
            }
        }
        if duplicates > 0 {
            tracing::info!(path = %full, duplicates, "SCIM source: dropped duplicate resources");
        }
        // Fewer distinct resources than the server says it has: pages overlapped (a server
        // that ignores startIndex, or an order that is not stable: set source.sort_by).
        if let Some(t) = last_total.filter(|&t| (seen.len() as u64) < t) {
            return Err(ScimSourceError::Paging {
                path: full,
                message: format!(
                    "the server reports {t} resources but only {} distinct ones came back; its \
                     listing order may not be stable (set source.sort_by, e.g. \"id\") or it \
                     ignores startIndex",
                    seen.len()
                ),
            });
        }
        Ok(())
    }

    /// Reads users and then groups. Complete or an error.
    pub async fn read_snapshot(&self) -> Result<Snapshot, ScimSourceError> {
        super::whole(self.read_snapshot_with(false).await?)
    }

    /// Reads users and then groups. With `allow_partial`, a users listing that fails after at
    /// least one user came back (a page that kept failing after the retries, a paging error)
    /// keeps those users, reads the groups, and returns the listing's error beside them.
    pub async fn read_snapshot_with(
        &self,
        allow_partial: bool,
    ) -> Result<(Snapshot, Option<ScimSourceError>), ScimSourceError> {
        let read_at = chrono::Utc::now();
        let mut users = Vec::new();
        let listed = self
            .list("Users", self.cfg.users_filter.as_deref(), |id, obj| {
                let locator = self.locator("Users", &id, &obj);
                users.push(Entry {
                    attrs: flatten_resource(&obj, &[]),
                    id,
                    locator,
                });
            })
            .await;
        let cut_short = match listed {
            Ok(()) => None,
            Err(e) if allow_partial && !users.is_empty() => {
                tracing::warn!(
                    users = users.len(),
                    error = %e,
                    "SCIM source: the users listing was cut short; the users read are kept (policy.writes_on_incomplete_source) and nobody is removed"
                );
                Some(e)
            }
            Err(e) => return Err(e),
        };
        let mut groups = Vec::new();
        let mut raw_members: Vec<Vec<String>> = Vec::new();
        if self.cfg.read_groups {
            self.list("Groups", self.cfg.groups_filter.as_deref(), |id, obj| {
                let locator = self.locator("Groups", &id, &obj);
                let members = obj
                    .get("members")
                    .and_then(Value::as_array)
                    .map(|ms| {
                        ms.iter()
                            .filter_map(|m| m.get("value").and_then(Value::as_str))
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                raw_members.push(members);
                groups.push(Group {
                    entry: Entry {
                        attrs: flatten_resource(&obj, &["members"]),
                        id,
                        locator,
                    },
                    members: Vec::new(),
                });
            })
            .await?;
        }
        let known: HashSet<&str> = users
            .iter()
            .map(|u| u.id.as_str())
            .chain(groups.iter().map(|g| g.entry.id.as_str()))
            .collect();
        let mut resolved = Vec::with_capacity(groups.len());
        let mut dropped = 0usize;
        for (g, raw) in groups.iter().zip(raw_members) {
            let mut set = BTreeSet::new();
            for m in raw {
                if m != g.entry.id && known.contains(m.as_str()) {
                    set.insert(m);
                } else {
                    dropped += 1;
                }
            }
            resolved.push(set.into_iter().collect::<Vec<_>>());
        }
        for (g, m) in groups.iter_mut().zip(resolved) {
            g.members = m;
        }
        if dropped > 0 {
            tracing::debug!(
                count = dropped,
                "SCIM source: group members that are not among the users and groups read were left out"
            );
        }
        Ok((
            Snapshot {
                source: self.describe_url(),
                read_at,
                users,
                groups,
            },
            cut_short,
        ))
    }

    fn describe_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }
}

impl super::Source for ScimSource {
    fn describe(&self) -> String {
        format!("scim {}", self.describe_url())
    }

    fn read(&self) -> BoxFuture<'_, Result<Snapshot, super::SourceError>> {
        Box::pin(async move { self.read_snapshot().await.map_err(super::SourceError::from) })
    }

    fn read_allowing_partial(&self) -> BoxFuture<'_, Result<super::Read, super::SourceError>> {
        Box::pin(async move { Ok(super::partial(self.read_snapshot_with(true).await?)) })
    }
}

// ---------------------------------------------------------------------------------------------
// Flattening
// ---------------------------------------------------------------------------------------------

/// Flattens a SCIM resource into attributes named by SCIM paths (see the module docs). `skip`
/// names top-level attributes left out (a group's `members`, resolved separately).
pub fn flatten_resource(obj: &Map<String, Value>, skip: &[&str]) -> Attributes {
    let mut out = Attributes::new();
    for (k, v) in obj {
        if skip.iter().any(|s| s.eq_ignore_ascii_case(k)) {
            continue;
        }
        if k.starts_with("urn:") {
            if let Value::Object(ext) = v {
                // Extension schema: `urn:...:User:department`, `urn:...:User:manager.value`.
                for (sub, sv) in ext {
                    flatten_value(&format!("{k}:{sub}"), sv, &mut out);
                }
                continue;
            }
        }
        flatten_value(k, v, &mut out);
    }
    out
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn flatten_value(name: &str, v: &Value, out: &mut Attributes) {
    match v {
        Value::Null => {}
        Value::Object(o) => {
            for (sub, sv) in o {
                flatten_value(&format!("{name}.{sub}"), sv, out);
            }
        }
        Value::Array(items) => flatten_multi(name, items, out),
        other => {
            if let Some(t) = scalar_text(other) {
                out.push(name, t);
            }
        }
    }
}

/// A multi-valued attribute: scalars as values; complex values by `value`, by `type`, primary.
fn flatten_multi(name: &str, items: &[Value], out: &mut Attributes) {
    let primary = items
        .iter()
        .position(|i| i.get("primary").and_then(Value::as_bool) == Some(true))
        .unwrap_or(0);
    // The primary item first, then the others in order.
    let order = std::iter::once(primary).chain((0..items.len()).filter(|&i| i != primary));
    for idx in order {
        let Some(item) = items.get(idx) else { continue };
        let Value::Object(o) = item else {
            flatten_value(name, item, out);
            continue;
        };
        let typ = o
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && !t.contains('.'));
        let mut tags: Vec<String> = vec![name.to_string()];
        if let Some(t) = typ {
            if !t.eq_ignore_ascii_case("primary") {
                tags.push(format!("{name}.{t}"));
            }
        }
        if idx == primary {
            tags.push(format!("{name}.primary"));
        }
        for (ti, tag) in tags.iter().enumerate() {
            for (sub, sv) in o {
                if sub == "primary" || (ti > 0 && sub == "type") {
                    continue;
                }
                let n = if sub == "value" {
                    tag.clone()
                } else {
                    format!("{tag}.{sub}")
                };
                flatten_value(&n, sv, out);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flat(v: Value) -> Attributes {
        match v {
            Value::Object(o) => flatten_resource(&o, &["members"]),
            _ => panic!(),
        }
    }

    fn texts(a: &Attributes, n: &str) -> Vec<String> {
        a.get(n).iter().map(|v| v.as_text().into_owned()).collect()
    }

    #[test]
    fn flattening_uses_scim_paths() {
        let a = flat(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "u1",
            "userName": "zoe",
            "active": true,
            "name": {"givenName": "Zoë", "familyName": "Ångström"},
            "emails": [
                {"value": "home@x", "type": "home"},
                {"value": "work@x", "type": "work", "primary": true}
            ],
            "addresses": [{"type": "work", "locality": "Stockholm", "country": "SE"}],
            "nickName": null,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "Legal",
                "employeeNumber": 42,
                "manager": {"value": "u0", "displayName": "Boss"}
            },
            "meta": {"location": "http://h/v2/Users/u1"},
            "members": [{"value": "x"}]
        }));
        assert_eq!(texts(&a, "userName"), ["zoe"]);
        assert_eq!(texts(&a, "active"), ["true"]);
        assert_eq!(texts(&a, "name.givenName"), ["Zoë"]);
        assert_eq!(texts(&a, "emails"), ["work@x", "home@x"]);
        assert_eq!(texts(&a, "emails.work"), ["work@x"]);
        assert_eq!(texts(&a, "emails.home"), ["home@x"]);
        assert_eq!(texts(&a, "emails.primary"), ["work@x"]);
        assert_eq!(texts(&a, "emails.type"), ["work", "home"]);
        assert_eq!(texts(&a, "addresses.locality"), ["Stockholm"]);
        assert_eq!(texts(&a, "addresses.work.country"), ["SE"]);
        assert_eq!(texts(&a, "addresses.primary.country"), ["SE"]);
        let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        assert_eq!(texts(&a, &format!("{ent}:department")), ["Legal"]);
        assert_eq!(texts(&a, &format!("{ent}:employeeNumber")), ["42"]);
        assert_eq!(texts(&a, &format!("{ent}:manager.value")), ["u0"]);
        assert_eq!(texts(&a, "meta.location"), ["http://h/v2/Users/u1"]);
        assert!(!a.has("nickName"));
        assert!(!a.has("members"));
        assert_eq!(texts(&a, "schemas").len(), 1);
    }

    #[test]
    fn no_primary_means_first_is_primary() {
        let a = flat(json!({"emails": [{"value": "a@x"}, {"value": "b@x"}]}));
        assert_eq!(texts(&a, "emails.primary"), ["a@x"]);
        assert_eq!(texts(&a, "emails"), ["a@x", "b@x"]);
    }

    fn cfg(text: &str) -> ScimSourceConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn validate_names_the_key() {
        let base = Path::new(".");
        let ok = "url = \"http://127.0.0.1:1/v2\"\n[auth]\nmethod = \"bearer_token\"\ntoken = { env = \"T\" }\n";
        cfg(ok).validate(base).unwrap();
        let c = cfg(ok);
        assert_eq!(c.page_size, 100);
        assert_eq!(c.retry.max_attempts, 5);
        let e = cfg(&ok.replace("http://127", "ftp://127"))
            .validate(base)
            .unwrap_err();
        assert!(e.starts_with("source.url"), "{e}");
        let e = cfg(&ok.replace("http://", "http://u:p@"))
            .validate(base)
            .unwrap_err();
        assert!(e.contains("credentials"), "{e}");
        let e = cfg(&format!("page_size = 0\n{ok}"))
            .validate(base)
            .unwrap_err();
        assert!(e.starts_with("source.page_size"), "{e}");
        let e = cfg(&ok.replace("{ env = \"T\" }", "{ env = \"T\", file = \"f\" }"))
            .validate(base)
            .unwrap_err();
        assert!(e.starts_with("source.auth.token"), "{e}");
        assert!(toml::from_str::<ScimSourceConfig>(&format!("bogus = 1\n{ok}")).is_err());
        assert!(toml::from_str::<ScimSourceConfig>(
            "url = \"http://h/v2\"\n[auth]\nmethod = \"bearer_token\"\ntoken = \"inline\"\n"
        )
        .is_err());
        let cc = "url = \"http://h/v2\"\n[auth]\nmethod = \"client_credentials\"\ntoken_url = \"http://h/token\"\nclient_id = \"c\"\nclient_secret = { env = \"S\" }\nscopes = [\"scim.read\"]\n";
        cfg(cc).validate(base).unwrap();
    }

    #[test]
    fn errors_name_method_path_status_and_never_tokens() {
        let e = ScimSourceError::Http {
            method: "GET".into(),
            path: "/v2/Users".into(),
            status: 401,
            scim_type: None,
            detail: Some("Authorization failure".into()),
            attempts: 1,
        };
        let s = e.to_string();
        assert!(
            s.contains("GET /v2/Users: HTTP 401: Authorization failure"),
            "{s}"
        );
        assert!(s.contains("[source.auth]"), "{s}");
    }

    /// A fake SCIM server for paging edge cases: `/v2/Users` over a list of ids that a hook
    /// may change after each page; `/v2/Groups` empty.
    mod fake {
        use axum::extract::{Query, State};
        use axum::http::StatusCode;
        use axum::routing::get;
        use axum::{Json, Router};
        use serde_json::{json, Value};
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};

        pub type Hook = dyn Fn(u32, &mut Vec<String>) + Send + Sync;

        #[derive(Clone)]
        pub struct Fake {
            pub items: Arc<Mutex<Vec<String>>>,
            pub pages: Arc<Mutex<u32>>,
            pub hook: Arc<Hook>,
            /// Answer 503 from this page on.
            pub fail_from: Option<u32>,
            /// Ignore startIndex (always serve the first page).
            pub ignore_start: bool,
            /// One group "g1" whose members are these ids; `None`: no groups.
            pub group_members: Option<Vec<String>>,
            /// Answer 503 to every groups request.
            pub groups_fail: bool,
        }

        async fn groups(State(f): State<Fake>) -> (StatusCode, Json<Value>) {
            if f.groups_fail {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"status": "503", "detail": "down for maintenance"})),
                );
            }
            let resources: Vec<Value> = f
                .group_members
                .iter()
                .map(|m| {
                    let members: Vec<Value> = m.iter().map(|id| json!({"value": id})).collect();
                    json!({"id": "g1", "displayName": "Everyone", "members": members})
                })
                .collect();
            let total = resources.len();
            (
                StatusCode::OK,
                Json(json!({"totalResults": total, "startIndex": 1, "Resources": resources})),
            )
        }

        async fn users(
            State(f): State<Fake>,
            Query(q): Query<HashMap<String, String>>,
        ) -> (StatusCode, Json<Value>) {
            let start: usize = q["startIndex"].parse().unwrap();
            let count: usize = q["count"].parse().unwrap();
            let mut n = f.pages.lock().unwrap();
            *n += 1;
            if f.fail_from.is_some_and(|k| *n >= k) {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"status": "503", "detail": "down for maintenance"})),
                );
            }
            let mut items = f.items.lock().unwrap();
            let start = if f.ignore_start { 1 } else { start };
            let page: Vec<Value> = items
                .iter()
                .skip(start - 1)
                .take(count)
                .map(|id| json!({"id": id, "userName": id}))
                .collect();
            let total = items.len();
            (f.hook)(*n, &mut items);
            (
                StatusCode::OK,
                Json(json!({"totalResults": total, "startIndex": start, "Resources": page})),
            )
        }

        pub async fn serve(f: Fake) -> String {
            let app = Router::new()
                .route("/v2/Users", get(users))
                .route("/v2/Groups", get(groups))
                .with_state(f);
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
            format!("http://{addr}/v2")
        }
    }

    async fn fake_source(f: fake::Fake) -> ScimSource {
        let url = fake::serve(f).await;
        let c = cfg(&format!(
            "url = \"{url}\"\npage_size = 10\n[auth]\nmethod = \"none\"\n\
             [retry]\nmax_attempts = 3\nbase_delay_ms = 1\nmax_delay_ms = 5\n"
        ));
        ScimSource::open(c, Path::new(".")).unwrap()
    }

    fn fake(n: usize, hook: impl Fn(u32, &mut Vec<String>) + Send + Sync + 'static) -> fake::Fake {
        fake::Fake {
            items: std::sync::Arc::new(std::sync::Mutex::new(
                (0..n).map(|i| format!("u{i:03}")).collect(),
            )),
            pages: Default::default(),
            hook: std::sync::Arc::new(hook),
            fail_from: None,
            ignore_start: false,
            group_members: None,
            groups_fail: false,
        }
    }

    #[tokio::test]
    async fn insertion_while_paging_is_deduplicated_and_nothing_is_missed() {
        // After the first page, a new user sorts first: every later one shifts right by one.
        let f = fake(35, |page, items| {
            if page == 1 {
                items.insert(0, "a-new".into());
            }
        });
        let src = fake_source(f.clone()).await;
        let snap = src.read_snapshot().await.unwrap();
        let ids: BTreeSet<&str> = snap.users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(snap.users.len(), 36, "no duplicates");
        assert_eq!(ids.len(), 36);
        assert!(
            ids.contains("a-new"),
            "the second pass picks up the insertion"
        );
    }

    #[tokio::test]
    async fn deletion_while_paging_triggers_a_second_pass() {
        // After the first page, u000 is deleted: u010 shifts onto page 1 and would be skipped.
        let f = fake(35, |page, items| {
            if page == 1 {
                items.remove(0);
            }
        });
        let src = fake_source(f).await;
        let snap = src.read_snapshot().await.unwrap();
        let ids: BTreeSet<&str> = snap.users.iter().map(|u| u.id.as_str()).collect();
        assert!(ids.contains("u010"), "the shifted user is not skipped");
        assert_eq!(ids.len(), 35);
    }

    #[tokio::test]
    async fn a_page_failing_after_retries_fails_the_read() {
        let mut f = fake(35, |_, _| {});
        f.fail_from = Some(3);
        let src = fake_source(f.clone()).await;
        let err = src.read_snapshot().await.unwrap_err();
        assert!(
            matches!(
                err,
                ScimSourceError::Http {
                    status: 503,
                    attempts: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("GET /v2/Users: HTTP 503"), "{err}");
        assert_eq!(*f.pages.lock().unwrap(), 2 + 3);
    }

    #[tokio::test]
    async fn a_partial_read_keeps_the_users_before_the_failing_page() {
        let mut f = fake(35, |_, _| {});
        f.fail_from = Some(3);
        // The group has members on both sides of the cut.
        f.group_members = Some(vec!["u001".into(), "u015".into(), "u025".into()]);
        let src = fake_source(f.clone()).await;
        let (snap, cut) = src.read_snapshot_with(true).await.unwrap();
        assert_eq!(snap.users.len(), 20, "two pages of ten");
        assert!(
            matches!(cut, Some(ScimSourceError::Http { status: 503, .. })),
            "{cut:?}"
        );
        // The groups are read after the cut, with the members read kept.
        assert_eq!(snap.groups.len(), 1);
        assert_eq!(snap.groups[0].members, vec!["u001", "u015"]);
        // Without asking for a partial read, the same failure is an error and no snapshot.
        let mut f2 = fake(35, |_, _| {});
        f2.fail_from = Some(3);
        let src = fake_source(f2).await;
        assert!(matches!(
            src.read_snapshot().await,
            Err(ScimSourceError::Http { status: 503, .. })
        ));
        // The groups failing as well: no partial snapshot (memberships would be missing).
        let mut f = fake(35, |_, _| {});
        f.fail_from = Some(3);
        f.groups_fail = true;
        let src = fake_source(f).await;
        assert!(matches!(
            src.read_snapshot_with(true).await,
            Err(ScimSourceError::Http { status: 503, .. })
        ));
        // Failing from the first page: nothing was read, so it is an error even then.
        let mut f = fake(35, |_, _| {});
        f.fail_from = Some(1);
        let src = fake_source(f).await;
        assert!(matches!(
            src.read_snapshot_with(true).await,
            Err(ScimSourceError::Http { status: 503, .. })
        ));
    }

    #[tokio::test]
    async fn a_server_ignoring_start_index_is_a_paging_error() {
        let mut f = fake(35, |_, _| {});
        f.ignore_start = true;
        let src = fake_source(f).await;
        let err = src.read_snapshot().await.unwrap_err();
        assert!(matches!(err, ScimSourceError::Paging { .. }), "{err}");
    }
}
