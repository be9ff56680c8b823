//! The Ironclad CLM client: OAuth tokens, SCIM requests, paging, retries and per-bucket pacing.
//! It translates between HTTP and the project's types; it never decides what should happen.
//!
//! # Layout
//! - [`IroncladClient`] (here): built from [`IroncladConfig`]; Users, Groups and Schemas
//!   methods live in [`users`] and [`groups`].
//! - [`http`]: the shared request layer (retries, pacing, concurrency, typed errors), free of
//!   Ironclad specifics so the SCIM source reuses it.
//! - [`oauth`]: the token cache, granted scopes, authorization-code helpers.
//! - [`pacing`]: per-bucket rate limiting; [`retry`]: backoff arithmetic; [`paging`]: listing;
//!   [`filter`]: filter construction with escaping; [`types`]: resource wrappers;
//!   [`stats`]: counters for metrics; [`error`]: [`IroncladError`].
//!
//! What does not live here: mapping directory entries to users, planning, applying a plan.

pub mod error;
pub mod filter;
pub mod groups;
pub mod http;
pub mod oauth;
pub mod pacing;
pub mod paging;
pub mod retry;
pub mod stats;
pub mod types;
pub mod users;

pub use error::{HttpError, IroncladError, TransportKind};
pub use oauth::{
    authorize_url, exchange_code, store_refresh_token, GrantedScopes, ScopeSource, TokenCache,
    TokenResponse,
};
pub use pacing::Pacer;
pub use paging::{ListOptions, ListSummary};
pub use stats::{ClientStats, StatsSnapshot};
pub use types::{Member, PatchKind, PatchOp, ScimGroup, ScimUser};

use crate::config::IroncladConfig;
use http::{build_reqwest, ApiRequest, HttpSettings, ScimHttp};
use serde_json::Value;
use std::sync::Arc;

/// The Ironclad client. Cheap to share behind an `Arc`; every method may run concurrently
/// (bounded by `max_concurrency` and paced per bucket).
#[derive(Debug)]
pub struct IroncladClient {
    http: ScimHttp,
    tokens: Arc<TokenCache>,
    pacer: Arc<Pacer>,
    page_size: u32,
    stats: Arc<ClientStats>,
}

impl IroncladClient {
    /// Builds the client: HTTP (rustls, timeouts, extra CA), token cache, pacer with the
    /// configured per-bucket limits. Makes no request.
    pub fn new(cfg: &IroncladConfig) -> Result<Self, IroncladError> {
        Self::with_pacer(cfg, Pacer::ironclad(&cfg.rate_limits))
    }

    /// Like [`IroncladClient::new`] with a given pacer (tests tune its recovery period).
    pub fn with_pacer(cfg: &IroncladConfig, pacer: Pacer) -> Result<Self, IroncladError> {
        let stats = Arc::new(ClientStats::default());
        let client = build_reqwest(
            cfg.connect_timeout,
            cfg.request_timeout,
            cfg.ca_pem.as_deref(),
        )?;
        let tokens = Arc::new(TokenCache::new(cfg, client.clone(), stats.clone())?);
        let pacer = Arc::new(pacer);
        let http = ScimHttp::new(
            HttpSettings {
                base_url: cfg.scim_url.clone(),
                max_concurrency: cfg.max_concurrency,
                retry: cfg.retry,
            },
            client,
            tokens.clone(),
            Some(pacer.clone()),
            pacing::ironclad_bucket,
            stats.clone(),
        );
        Ok(IroncladClient {
            http,
            tokens,
            pacer,
            page_size: cfg.page_size.clamp(1, 1000),
            stats,
        })
    }

    /// The request layer (for requests this client has no method for).
    pub fn http(&self) -> &ScimHttp {
        &self.http
    }

    /// The process is stopping: every write not yet sent is given up from now on (see
    /// [`IroncladError::Stopped`]).
    pub fn stop_writes(&self) {
        self.http.stop_writes();
    }

    /// The counters (requests by bucket and status, 429s, retries, pacing waits...).
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The live counters, for a metrics exporter.
    pub fn stats_handle(&self) -> Arc<ClientStats> {
        self.stats.clone()
    }

    /// The pacer (current per-bucket rates).
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// The scopes the token carries (token response `scope`, else `/oauth/userinfo`).
    pub async fn granted_scopes(&self) -> Result<GrantedScopes, IroncladError> {
        self.tokens.granted_scopes().await
    }

    /// Page size used for listings.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The paging options of a listing (page size, filter).
    pub fn list_options(&self, filter: Option<String>) -> ListOptions {
        ListOptions {
            filter,
            page_size: self.page_size,
            ..Default::default()
        }
    }

    /// `GET /Schemas`: every schema the server describes.
    pub async fn schemas(&self) -> Result<Vec<Value>, IroncladError> {
        let resp = self.http.send(&ApiRequest::get("/Schemas")).await?;
        Ok(match resp.body {
            Some(Value::Array(a)) => a,
            Some(mut v) => match v.get_mut("Resources").map(Value::take) {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            },
            None => Vec::new(),
        })
    }

    /// `GET /Schemas/{id}`; `None` on 404.
    pub async fn schema(&self, id: &str) -> Result<Option<Value>, IroncladError> {
        let req = ApiRequest::get(format!("/Schemas/{}", http::segment(id)));
        match self.http.send(&req).await {
            Ok(r) => Ok(r.body),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}
