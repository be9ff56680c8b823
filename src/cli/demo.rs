//! `ironbridge demo`: the main job end to end with no external service. It starts an embedded
//! `ironclad-sim`, writes a configuration for the bundled sample directory (LDIF) and mapping
//! into a temporary directory, then runs what an operator would: `check`, the dry-run `plan`,
//! `apply`, and a second `plan` that shows zero changes.
//!
//! What does not live here: any behaviour of its own; every step is the real command.

use super::Exit;
use crate::check::scopes;
use crate::sim::{SimClient, SimConfig};
use rand::distr::{Alphanumeric, SampleString as _};
use std::path::Path;

const DIRECTORY: &str = include_str!("../../examples/sample/directory.ldif");
const MAPPING: &str = include_str!("../../examples/sample/mapping.toml");

/// Writes the demo configuration for a simulator at `base_url` into `dir`; returns its path.
pub fn write_demo_config(
    dir: &Path,
    base_url: &str,
    secret: &str,
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::write(dir.join("directory.ldif"), DIRECTORY)?;
    std::fs::write(dir.join("mapping.toml"), MAPPING)?;
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, secret)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600))?;
    }
    let config = format!(
        r#"version = 1

[ironclad]
base_url = "{base_url}"

[ironclad.auth]
method = "client_credentials"
client_id = "ironbridge-demo"
client_secret = {{ file = "client-secret" }}

[ironclad.acting_user]
email = "admin@example.com"

[source]
kind = "ldif"
path = "directory.ldif"

[mapping]
file = "mapping.toml"

[policy]
remove_users = "deactivate"
"#
    );
    let path = dir.join("ironbridge.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Runs the demo.
pub async fn run() -> anyhow::Result<Exit> {
    let dir = tempfile::tempdir()?;
    let secret = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let all = [
        scopes::READ_USERS,
        scopes::CREATE_USERS,
        scopes::UPDATE_USERS,
        scopes::DELETE_USERS,
        scopes::READ_GROUPS,
        scopes::CREATE_GROUPS,
        scopes::UPDATE_GROUPS,
        scopes::DELETE_GROUPS,
        scopes::READ_SCHEMAS,
    ];
    let sim = crate::sim::spawn(SimConfig {
        clients: vec![SimClient {
            id: "ironbridge-demo".into(),
            secret: secret.clone(),
            scopes: all.iter().map(|s| s.to_string()).collect(),
        }],
        admin_email: Some("admin@example.com".into()),
        ..SimConfig::default()
    })?;
    let config = write_demo_config(dir.path(), &sim.base_url, &secret)?;
    println!("ironbridge demo: embedded ironclad-sim at {}", sim.base_url);
    println!(
        "configuration: {} (temporary: removed when the demo ends; examples/ironbridge.toml is \
         the annotated one to start from)\n",
        config.display()
    );

    println!("== 1. ironbridge check\n");
    let c = super::check::run(&config).await?;
    if c != Exit::Ok {
        anyhow::bail!("check failed");
    }
    println!("\n== 2. ironbridge plan (dry run: nothing is written)\n");
    let p = super::run::plan(&config, None, None, crate::report::Format::Text).await?;
    println!("(exit code {})", p as u8);
    println!("\n== 3. ironbridge apply\n");
    let a = super::run::apply(super::run::ApplyArgs {
        config: config.clone(),
        yes: true,
        ..Default::default()
    })
    .await?;
    println!("(exit code {})", a as u8);
    println!("\n== 4. ironbridge plan again: a converged tenant plans zero changes\n");
    let p2 = super::run::plan(&config, None, None, crate::report::Format::Text).await?;
    println!("(exit code {})", p2 as u8);
    let _ = sim.shutdown().await;
    Ok(if a == Exit::Ok && p2 == Exit::Ok {
        Exit::Ok
    } else {
        Exit::Error
    })
}
