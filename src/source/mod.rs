//! Directory sources: each reads one complete snapshot of people and groups into
//! [`crate::model`]. A read that fails part-way is an error, never a partial snapshot: this is
//! what later stops a broken source from driving removals. The one exception is asked for
//! explicitly ([`Source::read_allowing_partial`], behind `policy.writes_on_incomplete_source`):
//! when the *users* listing is cut short by the server (an LDAP size or time limit, a SCIM page
//! that keeps failing) after the groups were read completely, the people read so far come back
//! with the reason, and the planner then removes nobody.
//!
//! Layout: [`ldif`] (RFC 2849 files), [`ldap`] (OpenLDAP, 389/FreeIPA, Active Directory),
//! [`scim`] (any SCIM 2.0 server). What does not live here: deciding who belongs in Ironclad
//! (mapping, reconciliation).

pub mod ldap;
pub mod ldif;
pub mod scim;

use crate::model::Snapshot;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::path::Path;

/// The `[source]` section of the configuration file; `kind` selects the variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// An LDIF export (RFC 2849 content records).
    Ldif(ldif::LdifSourceConfig),
    /// An LDAP directory.
    Ldap(ldap::LdapSourceConfig),
    /// A SCIM 2.0 server.
    Scim(scim::ScimSourceConfig),
}

impl SourceConfig {
    /// Checks what can be checked without contacting the source. `base` is the configuration
    /// file's directory. The message names the key at fault.
    pub fn validate(&self, base: &Path) -> Result<(), String> {
        match self {
            SourceConfig::Ldif(c) => c.validate(base),
            SourceConfig::Ldap(c) => c.validate(base),
            SourceConfig::Scim(c) => c.validate(base),
        }
    }
}

/// Why a source read failed. No partial snapshot ever accompanies it.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An LDIF file problem.
    #[error(transparent)]
    Ldif(#[from] ldif::LdifError),
    /// An LDAP problem.
    #[error(transparent)]
    Ldap(#[from] ldap::LdapError),
    /// A SCIM source problem.
    #[error(transparent)]
    Scim(#[from] scim::ScimSourceError),
}

/// A read that may have been cut short.
#[derive(Debug)]
pub struct Read {
    /// What was read: every entry in it is whole, but when `cut_short` is set some users are
    /// missing.
    pub snapshot: Snapshot,
    /// Why the users listing ended early, when it did.
    pub cut_short: Option<SourceError>,
}

/// A read that must be complete: what a source read, or the error that cut it short.
pub(crate) fn whole<E>(read: (Snapshot, Option<E>)) -> Result<Snapshot, E> {
    match read {
        (_, Some(e)) => Err(e),
        (snapshot, None) => Ok(snapshot),
    }
}

/// A read that may be partial, as a source's own reader returns it, in the common form.
pub(crate) fn partial<E: Into<SourceError>>((snapshot, cut): (Snapshot, Option<E>)) -> Read {
    Read {
        snapshot,
        cut_short: cut.map(Into::into),
    }
}

/// Something that yields complete snapshots.
pub trait Source: Send + Sync {
    /// A description for logs and reports (URL or path; never a secret).
    fn describe(&self) -> String;
    /// Reads one complete snapshot, or fails.
    fn read(&self) -> BoxFuture<'_, Result<Snapshot, SourceError>>;
    /// Like [`Source::read`], except that a users listing the server cut short after some
    /// users came back gives those users (and the complete groups) with the reason, instead of
    /// an error. Sources that cannot be cut short that way (an LDIF file) read completely.
    fn read_allowing_partial(&self) -> BoxFuture<'_, Result<Read, SourceError>> {
        Box::pin(async move {
            Ok(Read {
                snapshot: self.read().await?,
                cut_short: None,
            })
        })
    }
}

/// Opens the configured source (reads secrets, parses URLs; no I/O against the server yet).
/// `base` is the configuration file's directory.
pub fn open(cfg: &SourceConfig, base: &Path) -> Result<Box<dyn Source>, SourceError> {
    Ok(match cfg {
        SourceConfig::Ldif(c) => Box::new(ldif::LdifSource::open(c.clone(), base)?),
        SourceConfig::Ldap(c) => Box::new(ldap::LdapSource::open(c, base)?),
        SourceConfig::Scim(c) => Box::new(scim::ScimSource::open(c.clone(), base)?),
    })
}
