//! The LDAP source: OpenLDAP, 389 Directory Server, FreeIPA and Active Directory (or Samba AD),
//! read into one complete [`crate::model::Snapshot`] or an error. The connection and the
//! decoding of answers are our own; `ldap3` parses filters and encodes requests.
//!
//! Layout:
//! - `config`: the `[source] kind = "ldap"` shape, flavour defaults, offline validation;
//! - `conn`: TCP/TLS/bind and the paged search loop;
//! - `wire`: LDAP messages encoded and decoded (entries as slices of the receive buffer);
//! - `entry`: wire entries to model entries, AD text forms, ranged attributes, DN normalisation;
//! - `read`: one full read with bounded restarts and membership resolution;
//! - `error`: [`LdapError`].
//!
//! Public API: [`LdapSourceConfig`], [`LdapSource::open`], the [`Source`] impl
//! (`read`), [`LdapSource::check`] for `ironbridge check`.
//!
//! What does not live here: mapping attributes to Ironclad users (the mapping layer converts
//! `userAccountControl`, FILETIME and generalized-time values), or nested-group flattening
//! ([`crate::model::Snapshot::flattened_members`]).

mod config;
mod conn;
mod entry;
mod error;
mod read;
mod wire;

pub use config::{
    Flavour, GroupsConfig, LdapSourceConfig, Membership, ReferencePolicy, ScopeConfig, UsersConfig,
    AD_MAX_PAGE_SIZE,
};
pub use entry::{guid_text, normalize_dn, sid_text};
pub use error::{ad_bind_detail, LdapError, SearchKind};

use crate::model::Snapshot;
use crate::source::{Source, SourceError};
use conn::{Bind, Search, Settings, Tls};
use futures::future::BoxFuture;
use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// An opened LDAP source: configuration checked, secret read, TLS trust prepared. No
/// connection is held between reads.
#[derive(Clone)]
pub struct LdapSource {
    cfg: LdapSourceConfig,
    settings: Settings,
}

impl fmt::Debug for LdapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapSource")
            .field("url", &self.cfg.url)
            .field("bind", &self.settings.bind.who())
            .finish_non_exhaustive()
    }
}

impl LdapSource {
    /// Validates `cfg`, reads the bind password from its environment variable or file and
    /// loads the CA file. `base` is the configuration file's directory. Does not connect.
    pub fn open(cfg: &LdapSourceConfig, base: &Path) -> Result<LdapSource, LdapError> {
        cfg.validate(base).map_err(LdapError::Config)?;
        let bind = match (&cfg.bind_dn, &cfg.bind_password) {
            (Some(dn), Some(pw)) => Bind::Simple {
                dn: dn.clone(),
                password: pw.resolve(base)?,
            },
            _ => Bind::Anonymous,
        };
        let tls = if !cfg.uses_tls() {
            Tls::None
        } else if cfg.tls_insecure_skip_verify {
            Tls::Insecure(conn::insecure_tls_config().map_err(|e| tls_setup_error(cfg, &e))?)
        } else {
            let ca = cfg.ca_file.as_ref().map(|ca| {
                if ca.is_absolute() {
                    ca.clone()
                } else {
                    base.join(ca)
                }
            });
            Tls::Verify {
                config: verified_tls_config(cfg, ca.as_deref())?,
                with_ca_file: ca.is_some(),
            }
        };
        let settings = Settings {
            url: cfg.url.clone(),
            starttls: cfg.starttls,
            tls,
            connect_timeout: Duration::from_secs(cfg.connect_timeout_secs),
            bind,
            page_size: cfg.page_size,
            time_limit_secs: cfg.time_limit_secs,
            references: cfg.reference_policy(),
        };
        Ok(LdapSource {
            cfg: cfg.clone(),
            settings,
        })
    }

    /// The configuration this source was opened with.
    pub fn config(&self) -> &LdapSourceConfig {
        &self.cfg
    }

    /// Reads one complete snapshot (the same as [`Source::read`], with the LDAP error type).
    ///
    /// The read runs as a task of its own on the runtime, so that the thread that waits for
    /// the sockets is the one that decodes what they bring (from a `block_on` caller, every
    /// packet would otherwise cost a wake-up of another thread). The task is aborted if this
    /// future is dropped.
    pub async fn read_snapshot(&self) -> Result<Snapshot, LdapError> {
        crate::source::whole(self.read_snapshot_with(false).await?)
    }

    /// A read in which, with `allow_partial`, a users search ended by the server's size or
    /// time limit gives the users read so far and the limit's error beside them.
    pub async fn read_snapshot_with(
        &self,
        allow_partial: bool,
    ) -> Result<(Snapshot, Option<LdapError>), LdapError> {
        let me = self.clone();
        let task = AbortOnDrop(tokio::spawn(async move {
            read::read_snapshot(&me, allow_partial).await
        }));
        match task.join().await {
            Ok(result) => result,
            Err(e) => Err(LdapError::Protocol {
                url: self.cfg.url.clone(),
                reason: format!("the read task failed: {e}"),
            }),
        }
    }

    /// For `ironbridge check`: connects, binds, checks that each base DN exists and counts
    /// what each search returns (paged, reading no attributes). One attempt, no restarts.
    pub async fn check(&self) -> Result<LdapCheck, LdapError> {
        self.warn_if_insecure();
        let mut conn = conn::open(&self.settings, true).await?;
        let mut searches = Vec::new();
        let no_attrs = vec!["1.1".to_string()];
        let mut specs = vec![(
            SearchKind::Users,
            self.cfg.users.base_dn.clone(),
            self.cfg.users.scope,
            self.cfg.users_filter().to_string(),
        )];
        if let Some(g) = &self.cfg.groups {
            specs.push((
                SearchKind::Groups,
                g.base_dn.clone(),
                g.scope,
                self.cfg.groups_filter().unwrap_or_default().to_string(),
            ));
        }
        for (kind, base_dn, scope, filter) in specs {
            let exists = Search {
                kind,
                base: &base_dn,
                scope: ldap3::Scope::Base,
                filter: "(objectClass=*)",
                attrs: &no_attrs,
                paged: false,
            };
            conn.search(&exists, |_| Ok(())).await?;
            let count = Search {
                kind,
                base: &base_dn,
                scope: scope.to_ldap(),
                filter: &filter,
                attrs: &no_attrs,
                paged: true,
            };
            let entries = conn.search(&count, |_| Ok(())).await?;
            searches.push(SearchCount {
                kind,
                base_dn,
                scope,
                filter,
                entries,
            });
        }
        conn.close().await;
        Ok(LdapCheck {
            url: self.cfg.url.clone(),
            security: self.security(),
            bound_as: self.settings.bind.who(),
            searches,
        })
    }

    fn security(&self) -> String {
        let how = if self.cfg.starttls {
            "StartTLS"
        } else if self.cfg.uses_tls() {
            "TLS (ldaps)"
        } else {
            return "no TLS".to_string();
        };
        match &self.settings.tls {
            Tls::Insecure(_) => {
                format!("{how}, certificate NOT verified (tls_insecure_skip_verify)")
            }
            Tls::Verify {
                with_ca_file: true, ..
            } => format!("{how}, certificate verified (system store + ca_file)"),
            _ => format!("{how}, certificate verified (system store)"),
        }
    }

    fn warn_if_insecure(&self) {
        if matches!(self.settings.tls, Tls::Insecure(_)) {
            tracing::warn!(
                url = %self.cfg.url,
                "TLS certificate verification is disabled (tls_insecure_skip_verify = true): anyone on the network path can impersonate the directory and read the bind password"
            );
        }
    }

    fn describe_url(&self) -> String {
        self.cfg.url.clone()
    }
}

impl Source for LdapSource {
    fn describe(&self) -> String {
        self.describe_url()
    }

    fn read(&self) -> BoxFuture<'_, Result<Snapshot, SourceError>> {
        Box::pin(async move { Ok(self.read_snapshot().await?) })
    }

    fn read_allowing_partial(&self) -> BoxFuture<'_, Result<super::Read, SourceError>> {
        Box::pin(async move { Ok(super::partial(self.read_snapshot_with(true).await?)) })
    }
}

/// A task handle that aborts the task when dropped before it finished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What `ironbridge check` learns about an LDAP source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapCheck {
    /// The server URL.
    pub url: String,
    /// How the connection was secured, in words.
    pub security: String,
    /// The bind DN, or `anonymous`.
    pub bound_as: String,
    /// One line per configured search (users, then groups).
    pub searches: Vec<SearchCount>,
}

/// How many entries one configured search returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCount {
    /// Users or groups.
    pub kind: SearchKind,
    /// The base DN (it exists: `check` fails otherwise).
    pub base_dn: String,
    /// The scope.
    pub scope: ScopeConfig,
    /// The filter in effect.
    pub filter: String,
    /// Entries returned.
    pub entries: usize,
}

impl LdapCheck {
    /// The report as lines (the first names server, security and bind; one per search).
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_string).collect()
    }
}

impl fmt::Display for LdapCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "LDAP {} ({}): bound as {}",
            self.url, self.security, self.bound_as
        )?;
        for s in &self.searches {
            let what = match s.kind {
                SearchKind::Users => "users",
                SearchKind::Groups => "groups",
                _ => "entries",
            };
            writeln!(
                f,
                "  {what}: {} under {:?} (scope {}, filter {})",
                s.entries,
                s.base_dn,
                s.scope.as_str(),
                s.filter
            )?;
        }
        Ok(())
    }
}

fn tls_setup_error(cfg: &LdapSourceConfig, e: &rustls::Error) -> LdapError {
    LdapError::Tls {
        url: cfg.url.clone(),
        reason: format!("TLS setup failed: {e}"),
    }
}

/// A TLS client configuration trusting the system store plus the certificates in `ca_file`
/// when given. Built once per source: reading the system store is not free.
fn verified_tls_config(
    cfg: &LdapSourceConfig,
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, LdapError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let ca_err = |reason: String| LdapError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        let mut added = 0usize;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ca_err(format!("not a PEM certificate file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ca_err(format!("unusable certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_err("holds no PEM certificate".into()));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(conn::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_setup_error(cfg, &e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
