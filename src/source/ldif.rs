//! The LDIF file source (RFC 2849 content records). To be built.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[source] kind = "ldif"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdifSourceConfig {
    /// Path of the LDIF file, relative to the configuration file.
    pub path: PathBuf,
}

impl LdifSourceConfig {
    /// Checks the configuration without reading the file.
    pub fn validate(&self, _base: &Path) -> Result<(), String> {
        Ok(())
    }
}

/// An LDIF problem, naming file and line.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct LdifError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}
