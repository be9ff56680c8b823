//! `ironbridge demo`: the quick start on an embedded simulator and the bundled sample directory.

use super::Exit;

/// Runs the demo.
pub async fn run() -> anyhow::Result<Exit> {
    anyhow::bail!("demo is not available in this build yet")
}
