//! `ironbridge source dump`.

use super::{DumpFormat, Exit};
use std::path::Path;

/// Dumps the source.
pub async fn dump(
    _config: &Path,
    _format: DumpFormat,
    _limit: Option<usize>,
) -> anyhow::Result<Exit> {
    anyhow::bail!("source dump is not available in this build yet")
}
