//! `ironbridge mapping validate|test`: thin wrappers over [`crate::mapping::cli`], adding the
//! inputs that need a source (an LDIF entry file, or a live source through `--config --id`).

use super::{Exit, MappingCommand};
use crate::config::Config;
use crate::mapping::cli::{self, EntryInput};
use crate::model::Snapshot;
use std::path::Path;

fn code(c: i32) -> Exit {
    match c {
        0 => Exit::Ok,
        2 => Exit::Pending,
        _ => Exit::Error,
    }
}

/// Runs a mapping subcommand.
pub async fn run(command: MappingCommand) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    let now = chrono::Utc::now();
    match command {
        MappingCommand::Validate { files } => Ok(code(cli::validate(&files, &mut out))),
        MappingCommand::Test {
            file,
            entry: Some(entry),
            ..
        } => {
            let is_ldif = entry
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("ldif"));
            if !is_ldif {
                return Ok(code(cli::test(
                    &file,
                    EntryInput::Json(entry),
                    None,
                    now,
                    &mut out,
                )));
            }
            let snap = ldif_snapshot(&entry)?;
            let Some(first) = snap.users.first().cloned() else {
                anyhow::bail!(
                    "{}: no person entry (inetOrgPerson, person, user) in the file",
                    entry.display()
                );
            };
            Ok(code(cli::test(
                &file,
                EntryInput::Entry(first),
                Some(&snap),
                now,
                &mut out,
            )))
        }
        MappingCommand::Test {
            file,
            config: Some(config),
            id: Some(id),
            ..
        } => {
            let cfg = Config::load(&config)?;
            let snap = super::source::read(&cfg).await?;
            let Some(entry) = snap
                .users
                .iter()
                .find(|e| e.id == id || e.locator.eq_ignore_ascii_case(&id))
                .cloned()
            else {
                anyhow::bail!(
                    "no user with id or DN {id:?} in the source ({} users read)",
                    snap.users.len()
                );
            };
            Ok(code(cli::test(
                &file,
                EntryInput::Entry(entry),
                Some(&snap),
                now,
                &mut out,
            )))
        }
        MappingCommand::Test { .. } => {
            anyhow::bail!("give --entry FILE, or --config FILE with --id SOURCE_ID")
        }
    }
}

/// Reads an LDIF file as a one-off source (default selection rules).
fn ldif_snapshot(path: &Path) -> anyhow::Result<Snapshot> {
    let text = format!("path = {:?}\n", path.display().to_string());
    let cfg: crate::source::ldif::LdifSourceConfig = toml::from_str(&text)?;
    let src = crate::source::ldif::LdifSource::open(cfg, Path::new("."))?;
    Ok(src.read_blocking()?)
}
