//! OAuth for Ironclad: the [`TokenCache`] (client-credentials grant, refresh-token grant for an
//! authorization-code client, or a static bearer token), the granted scopes, and the
//! authorization-code helpers `ironbridge auth login` uses ([`authorize_url`],
//! [`exchange_code`], [`store_refresh_token`]).
//!
//! The cache holds one token and hands it to every request. It refreshes a little before
//! `expires_in` runs out (a tenth of the lifetime, at most a minute), and only one refresh is
//! ever in flight: callers that find the token stale queue on one async mutex, and all but the
//! first find a fresh token when they get it. A 401 refreshes once per token generation, so a
//! burst of 401s for the same revoked token costs one token request. Token issuance is rate
//! limited per client by Ironclad; nothing here fetches a token per call.
//!
//! Tokens and secrets live in [`Secret`] or in `HeaderValue`s marked sensitive; no log line or
//! error ever holds one.
//!
//! What does not live here: the loopback listener of `auth login` (CLI), SCIM requests (see
//! [`super::http`]).

use super::error::{clip, transport_kind, transport_message, IroncladError, TransportKind};
use super::http::{bearer_header, build_reqwest, AuthProvider, Credentials};
use super::retry::Schedule;
use super::stats::ClientStats;
use crate::config::{ActingUser, Auth, IroncladConfig, RetryPolicy, Secret};
use futures::future::BoxFuture;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A token endpoint's successful answer.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: Secret,
    /// `token_type` (normally `Bearer`).
    pub token_type: Option<String>,
    /// Lifetime in seconds, when given.
    pub expires_in: Option<u64>,
    /// Granted scopes, space separated, when given.
    pub scope: Option<String>,
    /// A (possibly rotated) refresh token, when given.
    pub refresh_token: Option<Secret>,
}

impl TokenResponse {
    fn from_json(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let expires_in = match v.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
            Some(Value::String(t)) => t.trim().parse().ok(),
            _ => None,
        };
        Some(TokenResponse {
            access_token: Secret::new(s("access_token").filter(|t| !t.is_empty())?),
            token_type: s("token_type"),
            expires_in,
            scope: s("scope"),
            refresh_token: s("refresh_token")
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        })
    }

    /// The granted scopes as a list (empty when `scope` was absent).
    pub fn scopes(&self) -> Vec<String> {
        split_scopes(self.scope.as_deref().unwrap_or(""))
    }
}

fn split_scopes(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Where the granted scopes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeSource {
    /// The token response's `scope`.
    TokenResponse,
    /// `GET {oauth}/userinfo`'s `scopes`.
    Userinfo,
    /// The configuration (a static token whose server offers no userinfo).
    Configured,
}

/// The scopes the current token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedScopes {
    /// Scope names, e.g. `scim.users.readUsers`, sorted.
    pub scopes: Vec<String>,
    /// Where they came from.
    pub source: ScopeSource,
}

impl GrantedScopes {
    /// Whether a scope is granted.
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// The cached token.
struct Cached {
    header: HeaderValue,
    /// When to refresh; `None`: never (static token, or no `expires_in`).
    refresh_at: Option<Instant>,
    scopes: Option<Vec<String>>,
    generation: u64,
}

/// The acting-user header for a configuration, if one is configured.
pub fn acting_user_header(
    acting: Option<&ActingUser>,
) -> Result<Option<(HeaderName, HeaderValue)>, IroncladError> {
    let Some(a) = acting else { return Ok(None) };
    let (name, value) = match a {
        ActingUser::Email(e) => ("x-as-user-email", e.as_str()),
        ActingUser::Id(i) => ("x-as-user-id", i.as_str()),
    };
    let v = HeaderValue::from_str(value).map_err(|_| {
        IroncladError::Setup(format!("acting user `{value}` is not a valid header value"))
    })?;
    Ok(Some((HeaderName::from_static(name), v)))
}

/// How long before expiry a token is refreshed: a tenth of its lifetime, at most a minute.
fn refresh_margin(expires_in: Duration) -> Duration {
    (expires_in / 10).min(Duration::from_secs(60))
}

/// Caches Ironclad tokens and supplies them (with the acting-user header) to requests.
pub struct TokenCache {
    http: reqwest::Client,
    token_url: String,
    userinfo_url: String,
    auth: Auth,
    acting: Option<(HeaderName, HeaderValue)>,
    retry: RetryPolicy,
    /// std `RwLock`: read on every request (fast path), written only after a fetch; never held
    /// across an `.await`.
    current: RwLock<Option<Arc<Cached>>>,
    /// The single flight: whoever holds it is the one fetching a token.
    refresh_lock: tokio::sync::Mutex<()>,
    /// The refresh token in use (authorization-code clients), read from its file once.
    refresh_token: Mutex<Option<Secret>>,
    generation: AtomicU64,
    stats: Arc<ClientStats>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache for the configured auth method, using `http` (see [`build_reqwest`]).
    pub fn new(
        cfg: &IroncladConfig,
        http: reqwest::Client,
        stats: Arc<ClientStats>,
    ) -> Result<Self, IroncladError> {
        let oauth = cfg.oauth_url.as_str().trim_end_matches('/');
        let cache = TokenCache {
            http,
            token_url: format!("{oauth}/token"),
            userinfo_url: format!("{oauth}/userinfo"),
            auth: cfg.auth.clone(),
            acting: acting_user_header(cfg.acting_user.as_ref())?,
            retry: cfg.retry,
            current: RwLock::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
            refresh_token: Mutex::new(None),
            generation: AtomicU64::new(0),
            stats,
        };
        if let Auth::BearerToken { token, .. } = &cfg.auth {
            cache.store(Cached {
                header: bearer_header(token)?,
                refresh_at: None,
                scopes: None,
                generation: 0,
            });
        }
        Ok(cache)
    }

    fn store(&self, c: Cached) -> Arc<Cached> {
        let c = Arc::new(c);
        if let Ok(mut w) = self.current.write() {
            *w = Some(c.clone());
        }
        c
    }

    fn cached(&self) -> Option<Arc<Cached>> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    fn fresh(c: &Cached) -> bool {
        c.refresh_at.is_none_or(|t| Instant::now() < t)
    }

    /// The current token, fetching one if there is none or it is due for refresh. With
    /// `stale = Some(g)`, a token of generation `g` was refused (401) and must be replaced.
    async fn token(&self, stale: Option<u64>) -> Result<Arc<Cached>, IroncladError> {
        if stale.is_none() {
            if let Some(c) = self.cached().filter(|c| Self::fresh(c)) {
                return Ok(c);
            }
        }
        let _flight = self.refresh_lock.lock().await;
        // Someone else may have refreshed while this caller waited for the lock.
        if let Some(c) = self.cached() {
            let replaced = stale.is_some_and(|g| c.generation != g);
            if (stale.is_none() && Self::fresh(&c)) || replaced {
                return Ok(c);
            }
        }
        if matches!(self.auth, Auth::BearerToken { .. }) {
            return self
                .cached()
                .ok_or_else(|| IroncladError::Setup("no static token".into()));
        }
        let started = Instant::now();
        let resp = self.fetch().await?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let refresh_at = resp.expires_in.map(|s| {
            let life = Duration::from_secs(s);
            started + life.saturating_sub(refresh_margin(life))
        });
        tracing::info!(
            generation,
            expires_in = resp.expires_in,
            "OAuth token obtained"
        );
        Ok(self.store(Cached {
            header: bearer_header(&resp.access_token)?,
            refresh_at,
            scopes: resp.scope.as_deref().map(split_scopes),
            generation,
        }))
    }

    /// One token request (with retries for 429, 5xx and transport failures).
    async fn fetch(&self) -> Result<TokenResponse, IroncladError> {
        let (client_id, secret, form): (&str, &Secret, Vec<(&str, String)>) = match &self.auth {
            Auth::ClientCredentials {
                client_id,
                client_secret,
                scopes,
            } => {
                let mut form = vec![("grant_type", "client_credentials".to_string())];
                if !scopes.is_empty() {
                    form.push(("scope", scopes.join(" ")));
                }
                (client_id, client_secret, form)
            }
            Auth::AuthorizationCode {
                client_id,
                client_secret,
                refresh_token_file,
                ..
            } => {
                let rt = self.refresh_token_value(refresh_token_file)?;
                let form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", rt.expose().to_string()),
                ];
                (client_id, client_secret, form)
            }
            Auth::BearerToken { .. } => {
                return Err(IroncladError::Setup(
                    "a static token is never fetched".into(),
                ))
            }
        };
        let resp = token_request(
            &self.http,
            &self.token_url,
            client_id,
            secret,
            &form,
            self.retry,
            &self.stats,
        )
        .await?;
        if let (
            Auth::AuthorizationCode {
                refresh_token_file, ..
            },
            Some(new_rt),
        ) = (&self.auth, &resp.refresh_token)
        {
            let changed = self
                .refresh_token
                .lock()
                .map(|g| g.as_ref() != Some(new_rt))
                .unwrap_or(true);
            if changed {
                store_refresh_token(refresh_token_file, new_rt)?;
                if let Ok(mut g) = self.refresh_token.lock() {
                    *g = Some(new_rt.clone());
                }
                tracing::info!(file = %refresh_token_file.display(), "rotated refresh token saved");
            }
        }
        Ok(resp)
    }

    fn refresh_token_value(&self, file: &Path) -> Result<Secret, IroncladError> {
        if let Some(rt) = self.refresh_token.lock().ok().and_then(|g| g.clone()) {
            return Ok(rt);
        }
        let text = std::fs::read_to_string(file).map_err(|e| IroncladError::RefreshTokenFile {
            path: file.display().to_string(),
            message: format!("{e}; run `ironbridge auth login` to store one"),
        })?;
        let t = text.trim();
        if t.is_empty() {
            return Err(IroncladError::RefreshTokenFile {
                path: file.display().to_string(),
                message: "empty; run `ironbridge auth login` to store one".into(),
            });
        }
        let s = Secret::new(t);
        if let Ok(mut g) = self.refresh_token.lock() {
            *g = Some(s.clone());
        }
        Ok(s)
    }

    /// The scopes the token carries: the token response's `scope`, else `GET {oauth}/userinfo`
    /// (`scopes`), else (static tokens only) the configured list.
    pub async fn granted_scopes(&self) -> Result<GrantedScopes, IroncladError> {
        let tok = self.token(None).await?;
        if let Some(s) = &tok.scopes {
            let mut scopes = s.clone();
            scopes.sort();
            return Ok(GrantedScopes {
                scopes,
                source: ScopeSource::TokenResponse,
            });
        }
        match self.userinfo(&tok).await {
            Ok(mut scopes) => {
                scopes.sort();
                Ok(GrantedScopes {
                    scopes,
                    source: ScopeSource::Userinfo,
                })
            }
            Err(e) => match &self.auth {
                Auth::BearerToken { scopes, .. } if !scopes.is_empty() => {
                    tracing::info!(error = %e, "userinfo unavailable; using the configured scopes");
                    let mut scopes = scopes.clone();
                    scopes.sort();
                    Ok(GrantedScopes {
                        scopes,
                        source: ScopeSource::Configured,
                    })
                }
                _ => Err(e),
            },
        }
    }

    async fn userinfo(&self, tok: &Cached) -> Result<Vec<String>, IroncladError> {
        let mut rb = self
            .http
            .get(&self.userinfo_url)
            .header(AUTHORIZATION, tok.header.clone());
        if let Some((k, v)) = &self.acting {
            rb = rb.header(k, v);
        }
        let resp = rb.send().await.map_err(|e| IroncladError::TokenTransport {
            endpoint: "userinfo",
            kind: transport_kind(&e),
            message: transport_message(e),
        })?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| IroncladError::TokenTransport {
                endpoint: "userinfo",
                kind: TransportKind::Body,
                message: transport_message(e),
            })?;
        if !(200..300).contains(&status) {
            return Err(oauth_error("userinfo", status, &body));
        }
        match body.get("scopes").or_else(|| body.get("scope")) {
            Some(Value::Array(a)) => Ok(a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()),
            Some(Value::String(s)) => Ok(split_scopes(s)),
            _ => Err(IroncladError::Token {
                endpoint: "userinfo",
                status: Some(status),
                error: "no_scopes".into(),
                description: Some("the answer has no `scopes`".into()),
            }),
        }
    }
}

impl AuthProvider for TokenCache {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, IroncladError>> {
        Box::pin(async move {
            let tok = self.token(None).await?;
            let mut headers = vec![(AUTHORIZATION, tok.header.clone())];
            if let Some(h) = &self.acting {
                headers.push(h.clone());
            }
            Ok(Credentials {
                headers,
                generation: tok.generation,
            })
        })
    }

    fn unauthorized(&self, generation: u64) -> BoxFuture<'_, Result<bool, IroncladError>> {
        Box::pin(async move {
            if matches!(self.auth, Auth::BearerToken { .. }) {
                return Ok(false);
            }
            self.token(Some(generation)).await?;
            Ok(true)
        })
    }
}

fn oauth_error(endpoint: &'static str, status: u16, body: &Value) -> IroncladError {
    let s = |k: &str| body.get(k).and_then(Value::as_str).map(|t| clip(t, 300));
    IroncladError::Token {
        endpoint,
        status: Some(status),
        error: s("error")
            .or_else(|| s("code"))
            .unwrap_or_else(|| "unexpected_response".to_string()),
        description: s("error_description")
            .or_else(|| s("message"))
            .or_else(|| s("detail")),
    }
}

/// POSTs a token request with HTTP Basic client authentication, retrying 429, 5xx and
/// transport failures within `retry`.
async fn token_request(
    http: &reqwest::Client,
    url: &str,
    client_id: &str,
    secret: &Secret,
    form: &[(&str, String)],
    retry: RetryPolicy,
    stats: &ClientStats,
) -> Result<TokenResponse, IroncladError> {
    let mut schedule = Schedule::new(retry);
    loop {
        schedule.attempt();
        stats.record_token_fetch();
        let sent = http
            .post(url)
            .basic_auth(client_id, Some(secret.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await;
        let (err, retry_after) = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| super::retry::parse_retry_after(v, std::time::SystemTime::now()));
                let bytes = resp.bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                if (200..300).contains(&status) {
                    return TokenResponse::from_json(&body).ok_or(IroncladError::Token {
                        endpoint: "token",
                        status: Some(status),
                        error: "invalid_response".into(),
                        description: Some("no access_token in the answer".into()),
                    });
                }
                let err = oauth_error("token", status, &body);
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
                tracing::warn!(error = %err, delay_ms = d.as_millis() as u64, "token request failed; retrying");
                tokio::time::sleep(d).await;
            }
            None => return Err(err),
        }
    }
}

fn code_client(cfg: &IroncladConfig) -> Result<(&str, &Secret, &[String]), IroncladError> {
    match &cfg.auth {
        Auth::AuthorizationCode {
            client_id,
            client_secret,
            scopes,
            ..
        } => Ok((client_id, client_secret, scopes)),
        _ => Err(IroncladError::Setup(
            "`auth login` needs [ironclad.auth] method = \"authorization_code\"".into(),
        )),
    }
}

/// The URL a person opens to consent:
/// `{oauth}/authorize?response_type=code&client_id=..&redirect_uri=..&scope=..&state=..`.
pub fn authorize_url(cfg: &IroncladConfig, state: &str) -> Result<url::Url, IroncladError> {
    let (client_id, _, scopes) = code_client(cfg)?;
    let Auth::AuthorizationCode { redirect_uri, .. } = &cfg.auth else {
        return Err(IroncladError::Setup(
            "not an authorization-code client".into(),
        ));
    };
    let base = format!("{}/authorize", cfg.oauth_url.as_str().trim_end_matches('/'));
    let mut u = url::Url::parse(&base).map_err(|e| IroncladError::Setup(format!("{base}: {e}")))?;
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri);
        if !scopes.is_empty() {
            q.append_pair("scope", &scopes.join(" "));
        }
        q.append_pair("state", state);
    }
    Ok(u)
}

/// Exchanges an authorization code for tokens (`grant_type=authorization_code`). The caller
/// stores `refresh_token` with [`store_refresh_token`].
pub async fn exchange_code(
    cfg: &IroncladConfig,
    code: &str,
    redirect_uri: &str,
) -> Result<TokenResponse, IroncladError> {
    let (client_id, secret, _) = code_client(cfg)?;
    let http = build_reqwest(
        cfg.connect_timeout,
        cfg.request_timeout,
        cfg.ca_pem.as_deref(),
    )?;
    let url = format!("{}/token", cfg.oauth_url.as_str().trim_end_matches('/'));
    let form = [
        ("grant_type", "authorization_code".to_string()),
        ("code", code.to_string()),
        ("redirect_uri", redirect_uri.to_string()),
    ];
    // A code is single-use: one attempt only for anything but a connect failure.
    let once = RetryPolicy {
        max_attempts: 1,
        ..cfg.retry
    };
    token_request(
        &http,
        &url,
        client_id,
        secret,
        &form,
        once,
        &ClientStats::default(),
    )
    .await
}

/// Writes a refresh token to `path`, readable and writable by its owner only (0600), replacing
/// the file atomically (a temporary file in the same directory, then a rename).
pub fn store_refresh_token(path: &Path, token: &Secret) -> Result<(), IroncladError> {
    use std::io::Write as _;
    let err = |m: String| IroncladError::RefreshTokenFile {
        path: path.display().to_string(),
        message: m,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| err("not a file path".into()))?
        .to_string_lossy()
        .to_string();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        f.write_all(token.expose().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("cannot write: {e}"))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::RateLimits;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::{Form, Json, Router};
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    #[derive(Clone, Default)]
    struct TokenFake {
        fetches: Arc<AtomicUsize>,
        forms: Arc<Mutex<Vec<HashMap<String, String>>>>,
        auth: Arc<Mutex<Vec<String>>>,
        expires_in: u64,
        scope: Option<&'static str>,
        rotate: bool,
        delay_ms: u64,
    }

    async fn token(
        State(f): State<TokenFake>,
        headers: HeaderMap,
        Form(form): Form<HashMap<String, String>>,
    ) -> impl IntoResponse {
        let n = f.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
        f.auth.lock().unwrap().push(
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
        );
        f.forms.lock().unwrap().push(form.clone());
        if form.get("refresh_token").map(String::as_str) == Some("bad") {
            return (
                StatusCode::FORBIDDEN,
                Json(
                    serde_json::json!({"error": "invalid_grant", "error_description": "refresh token revoked"}),
                ),
            );
        }
        let mut body = serde_json::json!({
            "access_token": format!("at-{n}"),
            "token_type": "Bearer",
            "expires_in": f.expires_in,
        });
        if let Some(s) = f.scope {
            body["scope"] = s.into();
        }
        if f.rotate {
            body["refresh_token"] = format!("rt-{n}").into();
        }
        (StatusCode::OK, Json(body))
    }

    async fn userinfo(headers: HeaderMap) -> impl IntoResponse {
        let ok = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "));
        if !ok {
            return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({})));
        }
        (
            StatusCode::OK,
            Json(
                serde_json::json!({"sub": "x", "scopes": ["scim.users.readUsers", "scim.groups.readGroups"]}),
            ),
        )
    }

    async fn serve(f: TokenFake) -> String {
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/oauth/userinfo", get(userinfo))
            .with_state(f);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn cfg(base: &str, auth: Auth) -> IroncladConfig {
        IroncladConfig {
            scim_url: url::Url::parse(&format!("{base}/scim/v2")).unwrap(),
            oauth_url: url::Url::parse(&format!("{base}/oauth")).unwrap(),
            auth,
            acting_user: Some(ActingUser::Email("admin@example.com".into())),
            ca_pem: None,
            page_size: 1000,
            max_concurrency: 8,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
                max_elapsed: Duration::from_secs(5),
            },
            rate_limits: RateLimits::default(),
        }
    }

    fn cc() -> Auth {
        Auth::ClientCredentials {
            client_id: "cid".into(),
            client_secret: Secret::new("s3cret"),
            scopes: vec!["scim.users.readUsers".into()],
        }
    }

    fn cache(c: &IroncladConfig) -> TokenCache {
        let http = build_reqwest(c.connect_timeout, c.request_timeout, None).unwrap();
        TokenCache::new(c, http, Arc::new(ClientStats::default())).unwrap()
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let fake = TokenFake {
            expires_in: 3600,
            delay_ms: 100,
            ..Default::default()
        };
        let base = serve(fake.clone()).await;
        let tc = Arc::new(cache(&cfg(&base, cc())));
        let mut hs = Vec::new();
        for _ in 0..20 {
            let tc = tc.clone();
            hs.push(tokio::spawn(async move { tc.credentials().await.unwrap() }));
        }
        for h in hs {
            let c = h.await.unwrap();
            assert_eq!(c.generation, 1);
            let names: Vec<_> = c
                .headers
                .iter()
                .map(|(n, _)| n.as_str().to_string())
                .collect();
            assert!(names.contains(&"x-as-user-email".to_string()));
        }
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
        // Basic client authentication, scopes requested.
        let auth = fake.auth.lock().unwrap()[0].clone();
        use base64::Engine as _;
        assert_eq!(
            auth,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("cid:s3cret")
            )
        );
        let form = fake.forms.lock().unwrap()[0].clone();
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["scope"], "scim.users.readUsers");
    }

    #[tokio::test]
    async fn a_token_is_refreshed_shortly_before_it_expires() {
        let fake = TokenFake {
            expires_in: 1,
            ..Default::default()
        };
        let base = serve(fake.clone()).await;
        let tc = cache(&cfg(&base, cc()));
        assert_eq!(tc.credentials().await.unwrap().generation, 1);
        assert_eq!(tc.credentials().await.unwrap().generation, 1);
        // Refresh is due at 0.9 s of a 1 s lifetime.
        tokio::time::sleep(Duration::from_millis(950)).await;
        assert_eq!(tc.credentials().await.unwrap().generation, 2);
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn many_401s_for_one_token_cause_one_refresh() {
        let fake = TokenFake {
            expires_in: 3600,
            delay_ms: 50,
            ..Default::default()
        };
        let base = serve(fake.clone()).await;
        let tc = Arc::new(cache(&cfg(&base, cc())));
        let g = tc.credentials().await.unwrap().generation;
        let mut hs = Vec::new();
        for _ in 0..10 {
            let tc = tc.clone();
            hs.push(tokio::spawn(
                async move { tc.unauthorized(g).await.unwrap() },
            ));
        }
        for h in hs {
            assert!(h.await.unwrap());
        }
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2);
        assert_eq!(tc.credentials().await.unwrap().generation, g + 1);
    }

    #[tokio::test]
    async fn scopes_come_from_the_token_response_else_userinfo() {
        let fake = TokenFake {
            expires_in: 3600,
            scope: Some("scim.users.updateUsers scim.users.readUsers"),
            ..Default::default()
        };
        let base = serve(fake).await;
        let s = cache(&cfg(&base, cc())).granted_scopes().await.unwrap();
        assert_eq!(s.source, ScopeSource::TokenResponse);
        assert_eq!(
            s.scopes,
            vec!["scim.users.readUsers", "scim.users.updateUsers"]
        );

        let base = serve(TokenFake {
            expires_in: 3600,
            ..Default::default()
        })
        .await;
        let s = cache(&cfg(&base, cc())).granted_scopes().await.unwrap();
        assert_eq!(s.source, ScopeSource::Userinfo);
        assert!(s.has("scim.groups.readGroups"));
    }

    #[tokio::test]
    async fn static_token_never_fetches_and_does_not_retry_401() {
        let fake = TokenFake::default();
        let base = serve(fake.clone()).await;
        let tc = cache(&cfg(
            &base,
            Auth::BearerToken {
                token: Secret::new("static"),
                scopes: vec![],
            },
        ));
        let c = tc.credentials().await.unwrap();
        assert!(c.headers[0].1.is_sensitive());
        assert!(!tc.unauthorized(c.generation).await.unwrap());
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 0);
        assert_eq!(
            tc.granted_scopes().await.unwrap().source,
            ScopeSource::Userinfo
        );
    }

    fn code_auth(file: PathBuf) -> Auth {
        Auth::AuthorizationCode {
            client_id: "cid".into(),
            client_secret: Secret::new("s3cret"),
            scopes: vec![
                "scim.users.readUsers".into(),
                "scim.users.updateUsers".into(),
            ],
            redirect_uri: "http://127.0.0.1:8765/callback".into(),
            refresh_token_file: file,
        }
    }

    #[tokio::test]
    async fn refresh_token_grant_saves_a_rotated_token_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rt");
        store_refresh_token(&file, &Secret::new("rt-0")).unwrap();
        let fake = TokenFake {
            expires_in: 3600,
            rotate: true,
            ..Default::default()
        };
        let base = serve(fake.clone()).await;
        let tc = cache(&cfg(&base, code_auth(file.clone())));
        tc.credentials().await.unwrap();
        let form = fake.forms.lock().unwrap()[0].clone();
        assert_eq!(form["grant_type"], "refresh_token");
        assert_eq!(form["refresh_token"], "rt-0");
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "rt-1");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // The next refresh uses the rotated token.
        let g = tc.credentials().await.unwrap().generation;
        tc.unauthorized(g).await.unwrap();
        assert_eq!(fake.forms.lock().unwrap()[1]["refresh_token"], "rt-1");
    }

    #[tokio::test]
    async fn a_revoked_refresh_token_is_a_token_error_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rt");
        store_refresh_token(&file, &Secret::new("bad")).unwrap();
        let base = serve(TokenFake::default()).await;
        let tc = cache(&cfg(&base, code_auth(file)));
        let e = tc.credentials().await.unwrap_err();
        assert_eq!(e.metric_label(), "token_invalid_grant");
        assert_eq!(e.status(), Some(403));
        let text = format!("{e} {e:?}");
        assert!(text.contains("refresh token revoked"), "{text}");
        assert!(
            !text.contains("s3cret") && !text.contains("\"bad\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_missing_refresh_token_file_says_what_to_do() {
        let base = serve(TokenFake::default()).await;
        let tc = cache(&cfg(&base, code_auth("/nonexistent/ironbridge-rt".into())));
        let e = tc.credentials().await.unwrap_err();
        assert!(e.to_string().contains("ironbridge auth login"), "{e}");
    }

    #[tokio::test]
    async fn authorization_code_exchange_and_authorize_url() {
        let fake = TokenFake {
            expires_in: 60,
            rotate: true,
            ..Default::default()
        };
        let base = serve(fake.clone()).await;
        let c = cfg(&base, code_auth("/tmp/unused".into()));
        let u = authorize_url(&c, "st4te").unwrap();
        let q: HashMap<String, String> = u.query_pairs().into_owned().collect();
        assert_eq!(u.path(), "/oauth/authorize");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["state"], "st4te");
        assert_eq!(q["scope"], "scim.users.readUsers scim.users.updateUsers");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:8765/callback");
        let t = exchange_code(&c, "the-code", "http://127.0.0.1:8765/callback")
            .await
            .unwrap();
        assert_eq!(t.refresh_token.unwrap().expose(), "rt-1");
        let form = fake.forms.lock().unwrap()[0].clone();
        assert_eq!(form["grant_type"], "authorization_code");
        assert_eq!(form["code"], "the-code");
        assert!(authorize_url(&cfg(&base, cc()), "s").is_err());
    }

    #[test]
    fn token_response_parsing_and_debug_hide_the_token() {
        let t = TokenResponse::from_json(&serde_json::json!({
            "access_token": "abc", "expires_in": "30", "scope": "a b"
        }))
        .unwrap();
        assert_eq!(t.expires_in, Some(30));
        assert_eq!(t.scopes(), vec!["a", "b"]);
        assert!(!format!("{t:?}").contains("abc"));
        assert!(TokenResponse::from_json(&serde_json::json!({"token_type": "Bearer"})).is_none());
    }

    #[test]
    fn refresh_margin_is_a_tenth_capped_at_a_minute() {
        assert_eq!(
            refresh_margin(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }
}
