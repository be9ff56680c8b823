//! `ironclad-sim`: an HTTP simulator of Ironclad CLM's OAuth 2.0 and SCIM 2.0 APIs, faithful to
//! Ironclad's documented behaviour, so that tests passing against it mean something.
//!
//! Start it in-process with [`spawn`] (tests) or [`serve`] (your own listener and shutdown
//! future), or as the `ironclad-sim` binary ([`cli_main`]). Every URL lives under the base URL:
//! OAuth under `/oauth`, SCIM under `/scim/v2`, and the simulator's own test API under `/_sim`
//! (request log, full state, fault injection, token revocation). `docs/simulator.md` describes
//! the command line, the `/_sim` API and the fault JSON.
//!
//! # Layout
//! - [`server`]: router, request-tracking middleware (log, faults, rate limits), the connection
//!   loop that can drop a connection without answering.
//! - [`oauth`]: `/oauth/token`, `/oauth/authorize`, `/oauth/userinfo`, bearer-token checks.
//! - [`scim`]: the SCIM endpoints and Ironclad's authorisation rules (scopes, acting user).
//! - [`schema`]: the schemas served and enforced (validation, `invalidValue` details).
//! - [`store`]: users and groups in memory, rendering, paging, seed/save format.
//! - [`filter`]: evaluation of `scim_v2`'s parsed filters. [`patch`]: SCIM PATCH.
//! - [`ratelimit`]: the documented per-bucket limits. [`faults`]: injected failures.
//! - [`introspect`]: `/_sim/*` and the request log. [`cli`]: the command line.
//! - [`error`]: the error bodies the simulator answers with.
//!
//! State lives behind std [`Mutex`]es: every critical section is short and synchronous, and no
//! lock is ever held across an `.await` (the crate denies `await_holding_lock`).
//!
//! What does not live here: the product's own Ironclad client (`crate::ironclad`).

pub mod cli;
pub mod error;
pub mod faults;
pub mod filter;
pub mod introspect;
pub mod oauth;
pub mod patch;
pub mod ratelimit;
pub mod schema;
pub mod scim;
pub mod server;
pub mod store;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use cli::cli_main;

/// An OAuth client registered with the simulator.
#[derive(Clone, PartialEq, Eq)]
pub struct SimClient {
    /// `client_id`.
    pub id: String,
    /// `client_secret` (never printed by `Debug`).
    pub secret: String,
    /// Scopes the client is registered with, e.g. `scim.users.readUsers`.
    pub scopes: Vec<String>,
}

impl fmt::Debug for SimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimClient")
            .field("id", &self.id)
            .field("secret", &"***")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// A static SCIM bearer token (Ironclad's "SCIM token"); it needs no acting user.
#[derive(Clone, PartialEq, Eq)]
pub struct SimToken {
    /// The token (never printed by `Debug`).
    pub token: String,
    /// Its scopes.
    pub scopes: Vec<String>,
}

impl fmt::Debug for SimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimToken")
            .field("token", &"***")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Registered OAuth clients.
    pub clients: Vec<SimClient>,
    /// Static SCIM tokens.
    pub tokens: Vec<SimToken>,
    /// Creates this admin user at start (unless the seed has it); usable as the acting user and
    /// the user who consents at `/oauth/authorize`.
    pub admin_email: Option<String>,
    /// `None`: no rate limiting. `Some(F)`: the documented per-minute limits in windows of
    /// 60/F seconds (F=60 gives the documented numbers per second).
    pub rate_limit_scale: Option<f64>,
    /// Lifetime of issued access tokens (`expires_in`). Default 3600 s.
    pub token_ttl: Duration,
    /// Load users and groups from this JSON file at start.
    pub seed: Option<PathBuf>,
    /// Save users and groups to this JSON file on shutdown.
    pub save: Option<PathBuf>,
    /// The company has no SAML configuration: a password is required on create, with
    /// Ironclad's rules (16+ characters, lower, upper, digit, special).
    pub no_saml: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            clients: Vec::new(),
            tokens: Vec::new(),
            admin_email: None,
            rate_limit_scale: None,
            token_ttl: Duration::from_secs(3600),
            seed: None,
            save: None,
            no_saml: false,
        }
    }
}

/// Why the simulator could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O failure, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The seed file is unreadable or invalid.
    #[error("seed file {path}: {message}")]
    Seed {
        /// The file.
        path: String,
        /// What is wrong (with the index of the bad resource).
        message: String,
    },
    /// The state could not be saved.
    #[error("cannot save state to {path}: {message}")]
    Save {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Invalid configuration (command line).
    #[error("{0}")]
    Config(String),
}

/// The shared state of one running simulator.
pub struct Sim {
    /// The configuration it was started with.
    pub(crate) config: SimConfig,
    /// Static tokens by value.
    pub(crate) static_tokens: HashMap<String, Vec<String>>,
    /// `http://host:port` of the listener (used when a request has no `Host`, and for saving).
    pub(crate) base_url: String,
    /// `saml` by default, `local` without SAML: the provider of users created through SCIM.
    pub(crate) provider: &'static str,
    /// Users and groups. A std mutex: sections are short and never span an `.await`.
    pub(crate) store: Mutex<store::Store>,
    /// Issued tokens and codes.
    pub(crate) oauth: Mutex<oauth::OAuthState>,
    /// The fault set and its RNG.
    pub(crate) faults: Mutex<faults::FaultState>,
    /// Rate-limit counters, when rate limiting is on.
    pub(crate) limiter: Option<Mutex<ratelimit::RateLimiter>>,
    /// Every request.
    pub(crate) log: Mutex<introspect::RequestLog>,
}

impl fmt::Debug for Sim {
    /// Names the simulator only: the state holds tokens, which must never be printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering the data if a previous holder panicked (a test tool should keep
/// answering rather than cascade the failure).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sim {
    /// Builds the state: loads the seed, creates the admin user.
    fn build(config: SimConfig, base_url: String) -> Result<Sim, SimError> {
        let provider = if config.no_saml { "local" } else { "saml" };
        let mut store = match &config.seed {
            None => store::Store::new(),
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| SimError::Seed {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
                let doc: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| SimError::Seed {
                        path: shown.clone(),
                        message: e.to_string(),
                    })?;
                store::Store::from_json(&doc, provider).map_err(|message| SimError::Seed {
                    path: shown,
                    message,
                })?
            }
        };
        if let Some(email) = &config.admin_email {
            if store.user_by_name(email).is_none() {
                let body = serde_json::json!({
                    "userName": email,
                    "name": {"givenName": "Admin", "familyName": "User"},
                    "emails": [{"value": email, "type": "work", "primary": true}],
                    "active": true,
                });
                let body = body.as_object().cloned().unwrap_or_default();
                let rec = store::Record::new(store::new_id(), body, Some(provider.to_string()));
                store
                    .insert_user(rec)
                    .map_err(|e| SimError::Config(format!("admin user: {}", e.detail)))?;
            }
        }
        let static_tokens = config
            .tokens
            .iter()
            .map(|t| (t.token.clone(), t.scopes.clone()))
            .collect();
        let limiter = config
            .rate_limit_scale
            .map(|f| Mutex::new(ratelimit::RateLimiter::new(f)));
        Ok(Sim {
            static_tokens,
            base_url,
            provider,
            store: Mutex::new(store),
            oauth: Mutex::new(oauth::OAuthState::default()),
            faults: Mutex::new(faults::FaultState::default()),
            limiter,
            log: Mutex::new(introspect::RequestLog::default()),
            config,
        })
    }

    /// Writes the state to `config.save`, if set (atomically: temp file, then rename).
    fn save(&self) -> Result<(), SimError> {
        let Some(path) = &self.config.save else {
            return Ok(());
        };
        let doc = lock(&self.store).to_json(&self.base_url);
        let shown = path.display().to_string();
        let err = |e: &dyn fmt::Display| SimError::Save {
            path: shown.clone(),
            message: e.to_string(),
        };
        let text = serde_json::to_string_pretty(&doc).map_err(|e| err(&e))?;
        let tmp = path.with_extension("tmp-save");
        std::fs::write(&tmp, text).map_err(|e| err(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| err(&e))?;
        Ok(())
    }
}

fn base_of(listener: &tokio::net::TcpListener) -> Result<String, SimError> {
    let addr = listener.local_addr().map_err(|source| SimError::Io {
        what: "cannot read the listening address".into(),
        source,
    })?;
    Ok(format!("http://{addr}"))
}

/// Serves the simulator on `listener` until `shutdown` completes, then saves the state (if
/// `config.save` is set).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    let sim = Arc::new(Sim::build(config, base_of(&listener)?)?);
    server::run(listener, sim, shutdown).await
}

/// A simulator running in the background of the current tokio runtime.
#[derive(Debug)]
pub struct SimHandle {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), SimError>>>,
}

impl SimHandle {
    /// `{base_url}/scim/v2`.
    pub fn scim_url(&self) -> String {
        format!("{}/scim/v2", self.base_url)
    }

    /// `{base_url}/oauth`.
    pub fn oauth_url(&self) -> String {
        format!("{}/oauth", self.base_url)
    }

    /// Stops accepting, drains in-flight requests, saves the state if configured, and returns
    /// the outcome.
    pub async fn shutdown(mut self) -> Result<(), SimError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.map_err(|e| SimError::Io {
                what: "the simulator task failed".into(),
                source: std::io::Error::other(e.to_string()),
            })?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    /// Asks the simulator to stop (without waiting for it).
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a simulator on 127.0.0.1 on a free port, in the current tokio runtime (call it from
/// inside one). Seed errors are returned at once.
pub fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    let addr = "127.0.0.1:0";
    let std_listener = std::net::TcpListener::bind(addr).map_err(|source| SimError::Bind {
        addr: addr.into(),
        source,
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|source| SimError::Io {
            what: "cannot make the listener non-blocking".into(),
            source,
        })?;
    let listener =
        tokio::net::TcpListener::from_std(std_listener).map_err(|source| SimError::Io {
            what: "cannot register the listener with tokio (is a runtime running?)".into(),
            source,
        })?;
    let base_url = base_of(&listener)?;
    let sim = Arc::new(Sim::build(config, base_url.clone())?);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::run(listener, sim, async move {
        let _ = stopped.await;
    }));
    Ok(SimHandle {
        base_url,
        stop: Some(stop),
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let c = SimConfig {
            clients: vec![SimClient {
                id: "c".into(),
                secret: "hunter2".into(),
                scopes: vec![],
            }],
            tokens: vec![SimToken {
                token: "tok-secret".into(),
                scopes: vec![],
            }],
            ..SimConfig::default()
        };
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && !s.contains("tok-secret"), "{s}");
    }

    #[test]
    fn admin_user_is_created_once() {
        let cfg = SimConfig {
            admin_email: Some("admin@example.com".into()),
            ..SimConfig::default()
        };
        let sim = Sim::build(cfg, "http://x".into()).unwrap();
        let store = lock(&sim.store);
        assert_eq!(store.records(schema::Kind::User).len(), 1);
        assert!(store.user_by_name("ADMIN@example.com").is_some());
    }
}
