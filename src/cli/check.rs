//! `ironbridge check`: token, scopes, read probes and the source.

use super::Exit;
use std::path::Path;

/// Runs the check.
pub async fn run(_config: &Path) -> anyhow::Result<Exit> {
    anyhow::bail!("check is not available in this build yet")
}
