//! The `ironclad-sim` command line: argument parsing into a [`SimConfig`], start-up, the
//! readiness line (`ironclad-sim listening on http://HOST:PORT` on stdout, which scripts and
//! tests wait for) and shutdown on Ctrl-C or SIGTERM.
//!
//! Client secrets and tokens given on the command line are never printed or logged.
//! What does not live here: the simulator itself ([`super::serve`]).

use super::{scim, server, Sim, SimClient, SimConfig, SimError, SimToken};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Command-line arguments of `ironclad-sim`.
#[derive(Parser)]
#[command(
    name = "ironclad-sim",
    version,
    about = "A simulator of Ironclad CLM's OAuth and SCIM APIs, for tests and demos"
)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the readiness line shows the real one).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub listen: String,
    /// An OAuth client: ID:SECRET:SCOPE[,SCOPE...] (repeatable).
    #[arg(long = "client", value_name = "ID:SECRET:SCOPES")]
    pub clients: Vec<String>,
    /// A static SCIM token: TOKEN:SCOPE[,SCOPE...] (repeatable; needs no acting user).
    #[arg(long = "token", value_name = "TOKEN:SCOPES")]
    pub tokens: Vec<String>,
    /// Create this admin user at start (usable as the acting user, x-as-user-email).
    #[arg(long, value_name = "EMAIL")]
    pub admin_email: Option<String>,
    /// Enable rate limits: the documented per-minute limits in windows of 60/F seconds
    /// (F=60: the documented numbers per second). Without it, no rate limiting.
    #[arg(long, value_name = "F")]
    pub rate_limit_scale: Option<f64>,
    /// Load users and groups from this JSON file ({"users": [...], "groups": [...]}).
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// Save users and groups to this JSON file on shutdown.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub token_ttl: u64,
    /// The company has no SAML: a password is required on create (16+ characters with lower,
    /// upper, digit and special character).
    #[arg(long)]
    pub no_saml: bool,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("listen", &self.listen)
            .field("clients", &self.clients.len())
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

fn scopes(list: &str) -> Vec<String> {
    list.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn warn_unknown(scopes: &[String], what: &str) {
    for s in scopes {
        if !scim::ALL_SCOPES.contains(&s.as_str()) {
            eprintln!(
                "ironclad-sim: warning: {what} has scope {s:?}, which no SCIM operation needs"
            );
        }
    }
}

/// `ID:SECRET:SCOPES`. The id ends at the first colon and the scopes start after the last one,
/// so a secret may contain colons.
pub fn parse_client(s: &str) -> Result<SimClient, SimError> {
    let bad = || {
        SimError::Config(
            "--client must look like ID:SECRET:SCOPE[,SCOPE...] (the value is not shown)".into(),
        )
    };
    let (id, rest) = s.split_once(':').ok_or_else(bad)?;
    let (secret, list) = rest.rsplit_once(':').ok_or_else(bad)?;
    if id.is_empty() || secret.is_empty() {
        return Err(bad());
    }
    Ok(SimClient {
        id: id.to_string(),
        secret: secret.to_string(),
        scopes: scopes(list),
    })
}

/// `TOKEN:SCOPES` (the token ends at the last colon).
pub fn parse_token(s: &str) -> Result<SimToken, SimError> {
    let bad = || {
        SimError::Config(
            "--token must look like TOKEN:SCOPE[,SCOPE...] (the value is not shown)".into(),
        )
    };
    let (token, list) = s.rsplit_once(':').ok_or_else(bad)?;
    if token.is_empty() {
        return Err(bad());
    }
    Ok(SimToken {
        token: token.to_string(),
        scopes: scopes(list),
    })
}

impl Args {
    /// The configuration these arguments describe.
    pub fn to_config(&self) -> Result<SimConfig, SimError> {
        let clients = self
            .clients
            .iter()
            .map(|c| parse_client(c))
            .collect::<Result<Vec<_>, _>>()?;
        for c in &clients {
            warn_unknown(&c.scopes, &format!("client {}", c.id));
        }
        let tokens = self
            .tokens
            .iter()
            .map(|t| parse_token(t))
            .collect::<Result<Vec<_>, _>>()?;
        for t in &tokens {
            warn_unknown(&t.scopes, "a --token");
        }
        if let Some(f) = self.rate_limit_scale {
            if !(f.is_finite() && f > 0.0) {
                return Err(SimError::Config(format!(
                    "--rate-limit-scale must be a positive number, got {f}"
                )));
            }
        }
        if self.token_ttl == 0 {
            return Err(SimError::Config("--token-ttl must be at least 1".into()));
        }
        Ok(SimConfig {
            clients,
            tokens,
            admin_email: self.admin_email.clone(),
            rate_limit_scale: self.rate_limit_scale,
            token_ttl: Duration::from_secs(self.token_ttl),
            seed: self.seed.clone(),
            save: self.save.clone(),
            no_saml: self.no_saml,
        })
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

async fn run(args: Args) -> Result<(), SimError> {
    let config = args.to_config()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: args.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Io {
        what: "cannot read the listening address".into(),
        source,
    })?;
    let base = format!("http://{addr}");
    let sim = Arc::new(Sim::build(config, base.clone())?);
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ironclad-sim listening on {base}");
        let _ = out.flush();
    }
    server::run(listener, sim, shutdown_signal()).await
}

/// Entry point of the `ironclad-sim` binary: exit 0 after a clean shutdown, 1 on a runtime
/// failure, 2 on bad arguments.
pub fn cli_main() -> ExitCode {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IRONCLAD_SIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ironclad-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ SimError::Config(_)) => {
            eprintln!("ironclad-sim: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("ironclad-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_token_syntax() {
        let c = parse_client("app:se:cr:et:scim.users.readUsers,scim.groups.readGroups").unwrap();
        assert_eq!(c.id, "app");
        assert_eq!(c.secret, "se:cr:et");
        assert_eq!(
            c.scopes,
            vec!["scim.users.readUsers", "scim.groups.readGroups"]
        );
        assert!(parse_client("app:secret").is_err());
        let e = parse_client("nosecret").unwrap_err().to_string();
        assert!(!e.contains("nosecret"));
        let t = parse_token("tok:scim.users.readUsers").unwrap();
        assert_eq!(t.token, "tok");
        assert!(parse_token("tok").is_err());
    }

    #[test]
    fn args_to_config() {
        let a = Args::parse_from([
            "ironclad-sim",
            "--listen",
            "127.0.0.1:0",
            "--client",
            "c:s:scim.users.readUsers",
            "--token",
            "t:scim.users.readUsers",
            "--rate-limit-scale",
            "60",
            "--token-ttl",
            "5",
            "--no-saml",
        ]);
        let c = a.to_config().unwrap();
        assert_eq!(c.clients.len(), 1);
        assert_eq!(c.rate_limit_scale, Some(60.0));
        assert_eq!(c.token_ttl, Duration::from_secs(5));
        assert!(c.no_saml);
        assert!(!format!("{a:?}").contains("c:s:"));
    }
}
