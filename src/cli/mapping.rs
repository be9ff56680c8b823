//! `ironbridge mapping validate|test`.

use super::{Exit, MappingCommand};

/// Runs a mapping subcommand.
pub async fn run(_command: MappingCommand) -> anyhow::Result<Exit> {
    anyhow::bail!("mapping commands are not available in this build yet")
}
