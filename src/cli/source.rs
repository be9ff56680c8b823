//! `ironbridge source dump`, and the source half of `ironbridge check`.

use super::{DumpFormat, Exit};
use crate::config::Config;
use crate::source::SourceConfig;
use std::path::Path;

/// Dumps the source.
pub async fn dump(
    _config: &Path,
    _format: DumpFormat,
    _limit: Option<usize>,
) -> anyhow::Result<Exit> {
    anyhow::bail!("source dump is not available in this build yet")
}

/// Checks the source for `ironbridge check`: returns lines to print.
pub async fn check_source(_source: &SourceConfig, _cfg: &Config) -> anyhow::Result<Vec<String>> {
    Ok(vec!["source: not checked in this build yet".to_string()])
}
