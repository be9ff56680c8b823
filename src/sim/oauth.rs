//! Ironclad's OAuth 2.0 endpoints as the simulator serves them, and bearer-token checks for the
//! SCIM API.
//!
//! - `POST /oauth/token`: grants `client_credentials`, `authorization_code`, `refresh_token`;
//!   client authentication by HTTP Basic or `client_id`/`client_secret` in the body (not both);
//!   requested scopes must be a subset of the client's (`invalid_scope`). Errors as documented:
//!   400 `invalid_request`/`invalid_scope`, 401 `invalid_client`, 403
//!   `unauthorized_client`/`invalid_grant`. The client-credentials grant issues no refresh token.
//! - `GET /oauth/authorize`: the user consents at once; 302 to `redirect_uri` with `code` and
//!   `state`. The consenting user is `login_hint` if it names a user, else the admin user.
//! - `GET /oauth/userinfo`: the token's identity and its `scopes` array.
//!
//! Simulator choices where Ironclad documents nothing: an unsupported `grant_type` is
//! `invalid_request`; a client registered with no scope at all is `unauthorized_client`;
//! authorization codes live 10 minutes and are single-use; refresh tokens do not rotate and
//! survive `/_sim/revoke-tokens` unless asked (`{"refresh_tokens": true}`).
//!
//! Tokens are random, never logged, and compared as whole strings.
//! What does not live here: which scope each SCIM operation needs ([`super::scim`]).

use super::error::{plain_json, Fail, OAuthError};
use super::{lock, Sim};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long an authorization code may be exchanged.
const CODE_TTL: Duration = Duration::from_secs(600);

/// Who a token acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The client itself (client-credentials grant): SCIM calls must name an acting user.
    Client,
    /// A user who consented (authorization-code grant).
    User {
        /// The user's id, if the consenting user exists in the store.
        user_id: Option<String>,
        /// The user's email (userName).
        email: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct AccessToken {
    client_id: String,
    scopes: Vec<String>,
    identity: Identity,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct RefreshGrant {
    client_id: String,
    scopes: Vec<String>,
    identity: Identity,
}

#[derive(Debug, Clone)]
struct AuthCode {
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    identity: Identity,
    expires: Instant,
}

/// Issued tokens and codes.
#[derive(Debug, Default)]
pub struct OAuthState {
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshGrant>,
    codes: HashMap<String, AuthCode>,
}

impl OAuthState {
    /// Invalidates every issued access token (and refresh tokens if asked). Returns how many
    /// tokens were revoked.
    pub fn revoke_all(&mut self, refresh_tokens: bool) -> usize {
        let mut n = self.access.len();
        self.access.clear();
        if refresh_tokens {
            n += self.refresh.len();
            self.refresh.clear();
        }
        n
    }
}

/// The authenticated caller of a SCIM request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A static SCIM token (`--token`).
    Static {
        /// Its scopes.
        scopes: Vec<String>,
    },
    /// An OAuth access token.
    OAuth {
        /// The client it was issued to.
        client_id: String,
        /// Granted scopes.
        scopes: Vec<String>,
        /// Who it acts for.
        identity: Identity,
    },
}

impl Principal {
    /// Granted scopes.
    pub fn scopes(&self) -> &[String] {
        match self {
            Principal::Static { scopes } | Principal::OAuth { scopes, .. } => scopes,
        }
    }
    /// Client-credentials tokens must name an acting user on every SCIM call.
    pub fn needs_acting_user(&self) -> bool {
        matches!(
            self,
            Principal::OAuth {
                identity: Identity::Client,
                ..
            }
        )
    }
}

fn random_token(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Checks a request's bearer token: 401 `{"code": "UNAUTHORIZED"}` when missing, unknown,
/// expired or revoked.
pub fn authenticate(sim: &Sim, headers: &HeaderMap) -> Result<Principal, Fail> {
    let Some(token) = bearer(headers) else {
        return Err(Fail::Unauthorized("Missing bearer token"));
    };
    if let Some(scopes) = sim.static_tokens.get(token) {
        return Ok(Principal::Static {
            scopes: scopes.clone(),
        });
    }
    let mut oauth = lock(&sim.oauth);
    match oauth.access.get(token) {
        None => Err(Fail::Unauthorized("Invalid or revoked token")),
        Some(t) if t.expires <= Instant::now() => {
            oauth.access.remove(token);
            Err(Fail::Unauthorized("Token expired"))
        }
        Some(t) => Ok(Principal::OAuth {
            client_id: t.client_id.clone(),
            scopes: t.scopes.clone(),
            identity: t.identity.clone(),
        }),
    }
}

/// Request parameters from a form or JSON body.
fn params(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if json_body {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| OAuthError::invalid_request(format!("malformed JSON body: {e}")))?;
        let Value::Object(m) = v else {
            return Err(OAuthError::invalid_request(
                "the body must be a JSON object",
            ));
        };
        return Ok(m
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect());
    }
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k} appears more than once"
            )));
        }
    }
    Ok(out)
}

/// The client's credentials from Basic auth or the body (exactly one of them).
fn client_credentials(
    headers: &HeaderMap,
    p: &HashMap<String, String>,
) -> Result<(String, String), OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
        .map(|(_, b)| b.trim().to_string());
    let body_id = p.get("client_id").filter(|s| !s.is_empty());
    match (basic, body_id) {
        (Some(_), Some(_)) if p.contains_key("client_secret") => Err(OAuthError::invalid_request(
            "use one client authentication method, not two",
        )),
        (Some(b), _) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|_| OAuthError::invalid_client("malformed Basic credentials"))?;
            let text = String::from_utf8(raw)
                .map_err(|_| OAuthError::invalid_client("malformed Basic credentials"))?;
            let (id, secret) = text
                .split_once(':')
                .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            Ok((id.to_string(), secret.to_string()))
        }
        (None, Some(id)) => Ok((
            id.clone(),
            p.get("client_secret").cloned().unwrap_or_default(),
        )),
        (None, None) => Err(OAuthError::invalid_client(
            "client authentication is required (HTTP Basic or client_id/client_secret)",
        )),
    }
}

fn parse_scopes(s: Option<&String>) -> Option<Vec<String>> {
    s.map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
}

/// `requested` if it is a subset of `allowed`, else `invalid_scope` naming the extras.
fn narrow(requested: Option<Vec<String>>, allowed: &[String]) -> Result<Vec<String>, OAuthError> {
    let Some(req) = requested else {
        return Ok(allowed.to_vec());
    };
    let extra: Vec<&str> = req
        .iter()
        .filter(|s| !allowed.contains(s))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        return Err(OAuthError::invalid_scope(format!(
            "scope not granted to this client: {}",
            extra.join(" ")
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for s in req {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// `POST /oauth/token`.
pub async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    match token_inner(&sim, &headers, &body) {
        Ok(v) => {
            let mut r = plain_json(StatusCode::OK, &v);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => e.into_response(),
    }
}

fn token_inner(sim: &Sim, headers: &HeaderMap, body: &[u8]) -> Result<Value, OAuthError> {
    let p = params(headers, body)?;
    let (client_id, secret) = client_credentials(headers, &p)?;
    let client = sim
        .config
        .clients
        .iter()
        .find(|c| c.id == client_id && c.secret == secret)
        .ok_or_else(|| OAuthError::invalid_client("unknown client or wrong secret"))?;
    let grant = p
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if client.scopes.is_empty() {
        return Err(OAuthError::unauthorized_client(
            "this client is not registered for any scope",
        ));
    }
    let ttl = sim.config.token_ttl;
    let now = Instant::now();
    let mut oauth = lock(&sim.oauth);
    oauth.access.retain(|_, t| t.expires > now);
    oauth.codes.retain(|_, c| c.expires > now);
    let (scopes, identity, refresh) = match grant.as_str() {
        "client_credentials" => {
            let scopes = narrow(parse_scopes(p.get("scope")), &client.scopes)?;
            (scopes, Identity::Client, None)
        }
        "authorization_code" => {
            let code = p
                .get("code")
                .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
            let grant = oauth
                .codes
                .remove(code)
                .ok_or_else(|| OAuthError::invalid_grant("unknown, used or expired code"))?;
            if grant.client_id != client.id {
                return Err(OAuthError::invalid_grant(
                    "the code was issued to another client",
                ));
            }
            if p.get("redirect_uri") != Some(&grant.redirect_uri) {
                return Err(OAuthError::invalid_grant(
                    "redirect_uri does not match the authorization request",
                ));
            }
            let rt = random_token("sim_rt_");
            oauth.refresh.insert(
                rt.clone(),
                RefreshGrant {
                    client_id: client.id.clone(),
                    scopes: grant.scopes.clone(),
                    identity: grant.identity.clone(),
                },
            );
            (grant.scopes, grant.identity, Some(rt))
        }
        "refresh_token" => {
            let rt = p
                .get("refresh_token")
                .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
            let g = oauth
                .refresh
                .get(rt)
                .ok_or_else(|| OAuthError::invalid_grant("unknown or revoked refresh token"))?;
            if g.client_id != client.id {
                return Err(OAuthError::invalid_grant(
                    "the refresh token was issued to another client",
                ));
            }
            let scopes = narrow(parse_scopes(p.get("scope")), &g.scopes)?;
            (scopes, g.identity.clone(), Some(rt.clone()))
        }
        other => {
            return Err(OAuthError::invalid_request(format!(
                "unsupported grant_type {other:?}"
            )))
        }
    };
    let access = random_token("sim_at_");
    oauth.access.insert(
        access.clone(),
        AccessToken {
            client_id: client.id.clone(),
            scopes: scopes.clone(),
            identity,
            expires: now + ttl,
        },
    );
    let mut out = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs().max(1),
        "scope": scopes.join(" "),
    });
    if let (Some(rt), Some(m)) = (refresh, out.as_object_mut()) {
        m.insert("refresh_token".into(), json!(rt));
    }
    Ok(out)
}

/// `GET /oauth/authorize`: consents at once and redirects with `code` and `state`.
pub async fn authorize(State(sim): State<Arc<Sim>>, uri: Uri) -> Response {
    let q: HashMap<String, String> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let bad = |e: OAuthError| e.into_response();
    let Some(client) = q
        .get("client_id")
        .and_then(|id| sim.config.clients.iter().find(|c| &c.id == id))
    else {
        return bad(OAuthError::invalid_client("unknown client_id"));
    };
    let Some(redirect) = q.get("redirect_uri") else {
        return bad(OAuthError::invalid_request("redirect_uri is required"));
    };
    let Ok(mut target) = url::Url::parse(redirect) else {
        return bad(OAuthError::invalid_request("redirect_uri is not a URL"));
    };
    let state = q.get("state").cloned();
    let outcome = if q.get("response_type").map(String::as_str) != Some("code") {
        Err(OAuthError::invalid_request("response_type must be code"))
    } else if client.scopes.is_empty() {
        Err(OAuthError::unauthorized_client(
            "this client is not registered for any scope",
        ))
    } else {
        narrow(parse_scopes(q.get("scope")), &client.scopes)
    };
    {
        let mut pairs = target.query_pairs_mut();
        match outcome {
            Ok(scopes) => {
                let identity = consenting_user(&sim, q.get("login_hint"));
                let code = random_token("sim_code_");
                lock(&sim.oauth).codes.insert(
                    code.clone(),
                    AuthCode {
                        client_id: client.id.clone(),
                        redirect_uri: redirect.clone(),
                        scopes,
                        identity,
                        expires: Instant::now() + CODE_TTL,
                    },
                );
                pairs.append_pair("code", &code);
            }
            Err(e) => {
                pairs.append_pair("error", e.error);
                pairs.append_pair("error_description", &e.description);
            }
        }
        if let Some(s) = &state {
            pairs.append_pair("state", s);
        }
    }
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(target.as_str()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn consenting_user(sim: &Sim, hint: Option<&String>) -> Identity {
    let store = lock(&sim.store);
    let by_name = |n: &str| {
        store.user_by_name(n).map(|r| Identity::User {
            user_id: Some(r.id.clone()),
            email: r.user_name().map(str::to_string),
        })
    };
    hint.and_then(|h| by_name(h))
        .or_else(|| sim.config.admin_email.as_deref().and_then(by_name))
        .unwrap_or(Identity::User {
            user_id: None,
            email: sim.config.admin_email.clone(),
        })
}

/// `GET /oauth/userinfo`.
pub async fn userinfo(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let p = match authenticate(&sim, &headers) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let body = match &p {
        Principal::Static { scopes } => json!({
            "sub": "scim-token", "token_type": "scim", "scopes": scopes,
        }),
        Principal::OAuth {
            client_id,
            scopes,
            identity: Identity::Client,
        } => json!({
            "sub": client_id, "client_id": client_id, "token_type": "client", "scopes": scopes,
        }),
        Principal::OAuth {
            client_id,
            scopes,
            identity: Identity::User { user_id, email },
        } => json!({
            "sub": user_id, "email": email, "client_id": client_id, "token_type": "user",
            "scopes": scopes,
        }),
    };
    plain_json(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_subset() {
        let allowed = vec!["a".to_string(), "b".to_string()];
        assert_eq!(narrow(None, &allowed).unwrap(), allowed);
        assert_eq!(
            narrow(Some(vec!["b".into(), "b".into()]), &allowed).unwrap(),
            vec!["b".to_string()]
        );
        let e = narrow(Some(vec!["c".into()]), &allowed).unwrap_err();
        assert_eq!(e.error, "invalid_scope");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn client_auth_methods() {
        let mut h = HeaderMap::new();
        let mut p = HashMap::new();
        assert_eq!(
            client_credentials(&h, &p).unwrap_err().error,
            "invalid_client"
        );
        p.insert("client_id".to_string(), "c".to_string());
        p.insert("client_secret".to_string(), "s".to_string());
        assert_eq!(
            client_credentials(&h, &p).unwrap(),
            ("c".to_string(), "s".to_string())
        );
        let b = base64::engine::general_purpose::STANDARD.encode("c2:s2");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {b}")).unwrap(),
        );
        assert_eq!(
            client_credentials(&h, &p).unwrap_err().error,
            "invalid_request"
        );
        p.clear();
        assert_eq!(
            client_credentials(&h, &p).unwrap(),
            ("c2".to_string(), "s2".to_string())
        );
    }
}
