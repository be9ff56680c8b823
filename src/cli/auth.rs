//! `ironbridge auth login`: the OAuth Authorization Code flow on a loopback listener.

use super::Exit;
use std::path::Path;

/// Runs the login flow.
pub async fn login(_config: &Path, _timeout: u64) -> anyhow::Result<Exit> {
    anyhow::bail!("auth login is not available in this build yet")
}
