//! Errors the simulator answers with on the wire: SCIM error bodies
//! (`urn:ietf:params:scim:api:messages:2.0:Error`, `status` as a string), Ironclad's 401 body
//! (`{"code": "UNAUTHORIZED", "message": ...}`) and OAuth token errors
//! (`{"error": ..., "error_description": ...}`).
//!
//! What does not live here: [`super::SimError`], the start-up/shutdown error of the simulator
//! process itself.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The media type of every SCIM response.
pub const SCIM_JSON: &str = "application/scim+json";

/// A SCIM error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// HTTP status.
    pub status: StatusCode,
    /// RFC 7644 §3.12 `scimType`, when one applies.
    pub scim_type: Option<&'static str>,
    /// Human-readable detail.
    pub detail: String,
    /// `Retry-After` value for 429 answers.
    pub retry_after: Option<String>,
}

impl ScimError {
    /// An error without a `scimType`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type: None,
            detail: detail.into(),
            retry_after: None,
        }
    }
    fn typed(status: StatusCode, scim_type: &'static str, detail: impl Into<String>) -> Self {
        ScimError {
            scim_type: Some(scim_type),
            ..ScimError::new(status, detail)
        }
    }
    /// 400 `invalidValue`.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::typed(StatusCode::BAD_REQUEST, "invalidValue", detail)
    }
    /// 400 `invalidSyntax`.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::typed(StatusCode::BAD_REQUEST, "invalidSyntax", detail)
    }
    /// 400 `invalidFilter`.
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::typed(StatusCode::BAD_REQUEST, "invalidFilter", detail)
    }
    /// 400 `invalidPath`.
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::typed(StatusCode::BAD_REQUEST, "invalidPath", detail)
    }
    /// 400 `noTarget`.
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::typed(StatusCode::BAD_REQUEST, "noTarget", detail)
    }
    /// 400 `mutability`.
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::typed(StatusCode::BAD_REQUEST, "mutability", detail)
    }
    /// 409 `uniqueness`.
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::typed(StatusCode::CONFLICT, "uniqueness", detail)
    }
    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    /// 403 (a missing scope, an unusable acting user).
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }
    /// 429 with an optional `Retry-After`.
    pub fn too_many(detail: impl Into<String>, retry_after: Option<String>) -> Self {
        ScimError {
            retry_after,
            ..ScimError::new(StatusCode::TOO_MANY_REQUESTS, detail)
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut v = json!({
            "schemas": [super::schema::ERROR],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let (Some(t), Some(m)) = (self.scim_type, v.as_object_mut()) {
            m.insert("scimType".into(), json!(t));
        }
        v
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut resp = scim_json(self.status, &self.body());
        if let Some(ra) = self.retry_after.as_deref() {
            if let Ok(v) = HeaderValue::from_str(ra) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// A JSON response with the SCIM media type.
pub fn scim_json(status: StatusCode, body: &Value) -> Response {
    scim_text(status, body.to_string())
}

/// A response with the SCIM media type whose body is JSON text already.
pub fn scim_text(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    resp
}

/// A plain JSON response.
pub fn plain_json(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Ironclad's answer to an expired, invalid or revoked token.
pub fn unauthorized(message: &str) -> Response {
    let mut resp = plain_json(
        StatusCode::UNAUTHORIZED,
        &json!({"code": "UNAUTHORIZED", "message": message}),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ironclad-sim\""),
    );
    resp
}

/// Why a SCIM request was refused before or while being handled (kept small, unlike a
/// whole [`Response`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// 401 `{"code": "UNAUTHORIZED", "message": ...}`.
    Unauthorized(&'static str),
    /// A SCIM error body.
    Scim(ScimError),
}

impl From<ScimError> for Fail {
    fn from(e: ScimError) -> Self {
        Fail::Scim(e)
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        match self {
            Fail::Unauthorized(m) => unauthorized(m),
            Fail::Scim(e) => e.into_response(),
        }
    }
}

/// An OAuth token-endpoint error (RFC 6749 §5.2 body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status (400, 401 or 403 as Ironclad documents).
    pub status: StatusCode,
    /// `invalid_request`, `invalid_scope`, `invalid_client`, `unauthorized_client`,
    /// `invalid_grant`.
    pub error: &'static str,
    /// Human-readable description.
    pub description: String,
}

impl OAuthError {
    /// 400 `invalid_request`.
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::make(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    /// 400 `invalid_scope`.
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::make(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }
    /// 401 `invalid_client`.
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::make(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }
    /// 403 `unauthorized_client`.
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::make(StatusCode::FORBIDDEN, "unauthorized_client", d)
    }
    /// 403 `invalid_grant`.
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::make(StatusCode::FORBIDDEN, "invalid_grant", d)
    }
    fn make(status: StatusCode, error: &'static str, d: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: d.into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = plain_json(
            self.status,
            &json!({"error": self.error, "error_description": self.description}),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ironclad-sim\""),
            );
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scim_error_body_has_string_status() {
        let b = ScimError::invalid_value("x").body();
        assert_eq!(b["status"], "400");
        assert_eq!(b["scimType"], "invalidValue");
        assert_eq!(b["schemas"][0], super::super::schema::ERROR);
        assert!(ScimError::not_found("x").body().get("scimType").is_none());
    }
}
