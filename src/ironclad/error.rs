//! [`IroncladError`]: everything that can go wrong talking to Ironclad (or any SCIM 2.0 server
//! through [`super::http`]). HTTP errors (the server answered with an error status) are kept
//! apart from transport errors (no usable answer: connect, timeout, broken body) and from OAuth
//! token errors, because retry logic and users treat them differently.
//!
//! No variant ever carries a token, a client secret or a request body: messages hold the method,
//! the path (without its query string, which may carry filter values), the HTTP status, SCIM's
//! `scimType` and `detail`, and the request id sent as `x-request-id`.
//!
//! What does not live here: deciding whether to retry (see [`super::retry`]).

use std::fmt;
use std::time::Duration;

/// Which kind of transport failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The TCP/TLS connection could not be made: the request was never sent.
    Connect,
    /// No complete answer within the request timeout. The request may have been processed.
    Timeout,
    /// The connection broke while sending or before the answer arrived. The request may have
    /// been processed.
    Connection,
    /// The answer's body could not be read.
    Body,
}

impl TransportKind {
    fn label(self) -> &'static str {
        match self {
            TransportKind::Connect => "connect",
            TransportKind::Timeout => "timeout",
            TransportKind::Connection => "connection",
            TransportKind::Body => "body",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "could not connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Connection => "connection lost",
            TransportKind::Body => "could not read the response body",
        })
    }
}

/// An error answer from the server: HTTP status, SCIM `scimType` and `detail`, method, path
/// and request id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{method} {path}: HTTP {status}{}{} (request {request_id})",
    scim_type.as_deref().map(|t| format!(" {t}")).unwrap_or_default(),
    detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct HttpError {
    /// HTTP method.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// HTTP status code.
    pub status: u16,
    /// SCIM `scimType` (`uniqueness`, `invalidValue`, `invalidFilter`...), when given.
    pub scim_type: Option<String>,
    /// SCIM `detail` (or Ironclad's `message`), when given.
    pub detail: Option<String>,
    /// The `x-request-id` this client sent.
    pub request_id: String,
    /// The server's `Retry-After`, when given (429, 503).
    pub retry_after: Option<Duration>,
}

/// An error from the Ironclad client.
#[derive(Debug, thiserror::Error)]
pub enum IroncladError {
    /// The server answered with an error status (details boxed: they are large and rare).
    #[error("{0}")]
    Http(Box<HttpError>),
    /// No usable answer arrived.
    #[error("{method} {path}: {kind} (request {request_id}): {message}")]
    Transport {
        /// HTTP method.
        method: String,
        /// Request path without the query string.
        path: String,
        /// What went wrong.
        kind: TransportKind,
        /// The underlying error, with any URL removed.
        message: String,
        /// The `x-request-id` this client sent.
        request_id: String,
    },
    /// The server answered 2xx with a body that is not what SCIM promises.
    #[error("{method} {path}: unexpected response body (request {request_id}): {message}")]
    Decode {
        /// HTTP method.
        method: String,
        /// Request path without the query string.
        path: String,
        /// What was wrong with it.
        message: String,
        /// The `x-request-id` this client sent.
        request_id: String,
    },
    /// The OAuth token endpoint refused (`error` / `error_description` from its body).
    #[error("OAuth {endpoint} refused{}: {error}{}",
        status.map(|s| format!(" with HTTP {s}")).unwrap_or_default(),
        description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Token {
        /// Which endpoint: `token` or `userinfo`.
        endpoint: &'static str,
        /// HTTP status, if an answer arrived.
        status: Option<u16>,
        /// OAuth `error` code (`invalid_client`, `invalid_grant`...).
        error: String,
        /// OAuth `error_description`.
        description: Option<String>,
    },
    /// The OAuth endpoint could not be reached or answered garbage.
    #[error("OAuth {endpoint}: {kind}: {message}")]
    TokenTransport {
        /// Which endpoint: `token` or `userinfo`.
        endpoint: &'static str,
        /// What went wrong.
        kind: TransportKind,
        /// The underlying error, with any URL removed.
        message: String,
    },
    /// The stored refresh token could not be read or written.
    #[error("refresh token file {path}: {message}")]
    RefreshTokenFile {
        /// The file.
        path: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// The client could not be set up (bad CA certificate, bad URL, wrong auth method).
    #[error("Ironclad client setup: {0}")]
    Setup(String),
    /// A paged listing could not be completed consistently.
    #[error("listing {path}: {message}")]
    Paging {
        /// The listed path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A write not sent because the process is stopping (it was waiting for its bucket, a
    /// connection slot or a retry when the stop came).
    #[error("not sent: the process is stopping")]
    Stopped,
    /// Retries were exhausted; `last` is the final failure.
    #[error("{last} (gave up after {attempts} attempts in {elapsed_secs:.1}s)")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// Time spent, seconds.
        elapsed_secs: f64,
        /// The last failure.
        #[source]
        last: Box<IroncladError>,
    },
}

impl IroncladError {
    /// The error underneath any [`IroncladError::Exhausted`] wrapper.
    pub fn root(&self) -> &IroncladError {
        match self {
            IroncladError::Exhausted { last, .. } => last.root(),
            other => other,
        }
    }

    /// The HTTP status, for HTTP errors.
    pub fn status(&self) -> Option<u16> {
        match self.root() {
            IroncladError::Http(h) => Some(h.status),
            IroncladError::Token { status, .. } => *status,
            _ => None,
        }
    }

    /// The `x-request-id` of the request that failed, for errors that reached the wire.
    pub fn request_id(&self) -> Option<&str> {
        match self.root() {
            IroncladError::Http(h) => Some(&h.request_id),
            IroncladError::Transport { request_id, .. }
            | IroncladError::Decode { request_id, .. } => Some(request_id),
            _ => None,
        }
    }

    /// SCIM `scimType`, for HTTP errors that carry one.
    pub fn scim_type(&self) -> Option<&str> {
        match self.root() {
            IroncladError::Http(h) => h.scim_type.as_deref(),
            _ => None,
        }
    }

    /// The HTTP error details, for HTTP errors.
    pub fn http(&self) -> Option<&HttpError> {
        match self.root() {
            IroncladError::Http(h) => Some(h),
            _ => None,
        }
    }

    /// Whether this is a 404 answer.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404) && matches!(self.root(), IroncladError::Http(_))
    }

    /// Whether the server said a missing scope or permission forbids this (403).
    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(403) && matches!(self.root(), IroncladError::Http(_))
    }

    /// Whether the request may have been processed although no answer arrived: a timeout or a
    /// connection lost after sending.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self.root(),
            IroncladError::Transport {
                kind: TransportKind::Timeout | TransportKind::Connection | TransportKind::Body,
                ..
            }
        )
    }

    /// A short, bounded label for metrics: `http_404`, `http_429`, `transport_timeout`,
    /// `token_invalid_client`...
    pub fn metric_label(&self) -> String {
        match self.root() {
            IroncladError::Http(h) => format!("http_{}", h.status),
            IroncladError::Transport { kind, .. } => format!("transport_{}", kind.label()),
            IroncladError::Decode { .. } => "decode".to_string(),
            IroncladError::Token { error, .. } => {
                // OAuth error codes are a small documented set; anything else is folded.
                let known = [
                    "invalid_request",
                    "invalid_client",
                    "invalid_grant",
                    "unauthorized_client",
                    "unsupported_grant_type",
                    "invalid_scope",
                ];
                if known.contains(&error.as_str()) {
                    format!("token_{error}")
                } else {
                    "token_other".to_string()
                }
            }
            IroncladError::TokenTransport { kind, .. } => {
                format!("token_transport_{}", kind.label())
            }
            IroncladError::RefreshTokenFile { .. } => "refresh_token_file".to_string(),
            IroncladError::Setup(_) => "setup".to_string(),
            IroncladError::Paging { .. } => "paging".to_string(),
            IroncladError::Stopped => "stopped".to_string(),
            IroncladError::Exhausted { .. } => "exhausted".to_string(),
        }
    }
}

/// Classifies a reqwest error into a transport kind. `is_connect` comes first: a connect error
/// (even a connect timeout) means nothing was sent.
pub(crate) fn transport_kind(e: &reqwest::Error) -> TransportKind {
    if e.is_connect() {
        TransportKind::Connect
    } else if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_body() || e.is_decode() {
        TransportKind::Body
    } else {
        TransportKind::Connection
    }
}

/// The error's text without its URL (which could carry query values), followed by its
/// sources' texts.
pub(crate) fn transport_message(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// Caps text taken from a server's answer so one bad response cannot flood a log line.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> IroncladError {
        IroncladError::Http(Box::new(HttpError {
            method: "POST".into(),
            path: "/Users".into(),
            status,
            scim_type: Some("uniqueness".into()),
            detail: Some("userName exists".into()),
            request_id: "r-1".into(),
            retry_after: None,
        }))
    }

    #[test]
    fn http_error_text_names_method_path_status_type_detail_and_request() {
        assert_eq!(
            http(409).to_string(),
            "POST /Users: HTTP 409 uniqueness: userName exists (request r-1)"
        );
        assert_eq!(http(409).metric_label(), "http_409");
    }

    #[test]
    fn exhausted_delegates_to_the_last_error() {
        let e = IroncladError::Exhausted {
            attempts: 3,
            elapsed_secs: 1.25,
            last: Box::new(http(404)),
        };
        assert!(e.is_not_found());
        assert_eq!(e.metric_label(), "http_404");
        assert!(
            e.to_string()
                .ends_with("(gave up after 3 attempts in 1.2s)"),
            "{e}"
        );
    }

    #[test]
    fn token_error_labels_are_bounded() {
        let e = IroncladError::Token {
            endpoint: "token",
            status: Some(401),
            error: "invalid_client".into(),
            description: Some("bad secret".into()),
        };
        assert_eq!(e.metric_label(), "token_invalid_client");
        assert_eq!(
            e.to_string(),
            "OAuth token refused with HTTP 401: invalid_client (bad secret)"
        );
        let e = IroncladError::Token {
            endpoint: "token",
            status: Some(400),
            error: "whatever-the-server-says".into(),
            description: None,
        };
        assert_eq!(e.metric_label(), "token_other");
    }

    #[test]
    fn transport_timeout_is_outcome_unknown_but_connect_is_not() {
        let t = |kind| IroncladError::Transport {
            method: "POST".into(),
            path: "/Users".into(),
            kind,
            message: "x".into(),
            request_id: "r".into(),
        };
        assert!(t(TransportKind::Timeout).outcome_unknown());
        assert!(t(TransportKind::Connection).outcome_unknown());
        assert!(!t(TransportKind::Connect).outcome_unknown());
        assert_eq!(
            t(TransportKind::Timeout).metric_label(),
            "transport_timeout"
        );
    }

    #[test]
    fn clip_bounds_text() {
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
