//! The body of the `ldap_read` example (see `examples/ldap_read/main.rs`), kept apart so
//! that variants (another allocator, another runtime) can share it when measuring.

use ironbridge::source::ldap::LdapSource;
use ironbridge::source::SourceConfig;
use serde::Deserialize;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

#[derive(Deserialize)]
struct File {
    source: SourceConfig,
}

/// Reads the snapshot named by the first argument and prints it as JSON.
#[tokio::main]
pub async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: ldap_read CONFIG.toml");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let file: File = match toml::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let SourceConfig::Ldap(cfg) = file.source else {
        eprintln!("{path}: [source] kind is not \"ldap\"");
        return ExitCode::from(2);
    };
    let base = Path::new(&path).parent().unwrap_or(Path::new("."));
    let source = match LdapSource::open(&cfg, base) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let snapshot = match source.read_snapshot().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    if let Err(e) = serde_json::to_writer(&mut out, &snapshot).and_then(|()| {
        out.write_all(b"\n").map_err(serde_json::Error::io)?;
        out.flush().map_err(serde_json::Error::io)
    }) {
        eprintln!("error writing the snapshot: {e}");
        return ExitCode::from(1);
    }
    // The process ends here: returning the memory piece by piece would only cost time.
    std::mem::forget(snapshot);
    ExitCode::SUCCESS
}
