//! The SCIM 2.0 source. To be built.

use serde::Deserialize;
use std::path::Path;

/// `[source] kind = "scim"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimSourceConfig {
    /// Base URL of the SCIM server.
    pub url: String,
}

impl ScimSourceConfig {
    /// Checks the configuration without connecting.
    pub fn validate(&self, _base: &Path) -> Result<(), String> {
        Ok(())
    }
}

/// A SCIM source problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScimSourceError(pub String);
