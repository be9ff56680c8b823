//! The LDAP source. To be built.

use serde::Deserialize;
use std::path::Path;

/// `[source] kind = "ldap"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSourceConfig {
    /// `ldap://`, `ldaps://` URL.
    pub url: String,
}

impl LdapSourceConfig {
    /// Checks the configuration without connecting.
    pub fn validate(&self, _base: &Path) -> Result<(), String> {
        Ok(())
    }
}

/// An LDAP problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LdapError(pub String);
