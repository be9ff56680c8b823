//! The `ironbridge` command line: argument parsing (clap), logging set-up, and dispatch to one
//! function per subcommand. Each subcommand returns an [`Exit`] code a script can rely on:
//! 0 success or nothing to do, 2 changes pending or held back, 1 error.
//!
//! What does not live here: the work itself (configuration, clients, sources, mapping); the
//! subcommands only call into those modules and print.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Nothing to do, or everything done.
    Ok = 0,
    /// An error.
    Error = 1,
    /// Changes pending (dry run), or some held back or refused.
    Pending = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// ironbridge: keeps Ironclad CLM users and groups in step with a directory.
#[derive(Debug, Parser)]
#[command(name = "ironbridge", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing syntax, e.g. `info`, `ironbridge=debug`). Default `info`, or
    /// the IRONBRIDGE_LOG environment variable.
    #[arg(long, global = true, env = "IRONBRIDGE_LOG")]
    pub log: Option<String>,
    /// Log format: `auto` (human on a terminal, JSON otherwise), `text` or `json`.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON lines otherwise.
    Auto,
    /// Human-readable.
    Text,
    /// JSON lines.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the quick start: an embedded simulator, the bundled sample directory, every step.
    Demo,
    /// Check the connection: token, granted scopes, read access, and the source.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// OAuth Authorization Code login.
    Auth {
        /// What to do.
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Look at the directory source.
    Source {
        /// What to do.
        #[command(subcommand)]
        command: SourceCommand,
    },
    /// The dry run: what would change, attribute by attribute. Writes nothing to Ironclad.
    Plan {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Save the plan (JSON) to apply later, exactly, with `apply --plan`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the report to this file (the terminal still gets the table); `-` writes it to
        /// standard output instead of the table.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value_t = crate::report::Format::Text)]
        format: crate::report::Format,
    },
    /// Apply a fresh plan, or a saved plan exactly.
    Apply {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// A saved plan (from `plan --out`); objects changed since are refused by name.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Only these people (source id, userName, email or DN); repeatable.
        #[arg(long = "only", value_name = "ID")]
        only: Vec<String>,
        /// Release the removals held by the safety threshold when there are at most N of them
        /// (all or none: with more than N, every one stays held). N is the count the plan's
        /// note gives.
        #[arg(long, default_value_t = 0, value_name = "N")]
        allow_removals: usize,
        /// Apply without showing the plan and asking first. Without it, apply shows the
        /// plan and asks on a terminal, and refuses to run without one.
        #[arg(long)]
        yes: bool,
    },
    /// One person, every step shown: source read, scope rules, mapping, match, action.
    Preview {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Source id, DN, userName or email.
        #[arg(long)]
        user: String,
    },
    /// Validate and try mapping files.
    Mapping {
        /// What to do.
        #[command(subcommand)]
        command: MappingCommand,
    },
    /// Run as a service: scheduled runs, IdP webhooks, admin API, /healthz, /readyz, /metrics.
    Serve {
        /// The configuration file (its `[serve]` section).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Probe a URL: exit 0 when it answers 2xx (the container HEALTHCHECK).
    Health {
        /// The URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

/// `auth` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Print the authorize URL, receive the redirect on the loopback listener, store the
    /// refresh token.
    Login {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Seconds to wait for the browser's redirect.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// `source` subcommands.
#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Print what the source sees, in ironbridge's model.
    Dump {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DumpFormat::Json)]
        format: DumpFormat,
        /// Print at most this many users and groups each.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// `source dump` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DumpFormat {
    /// One JSON document.
    Json,
    /// LDIF content records.
    Ldif,
}

/// `mapping` subcommands.
#[derive(Debug, Subcommand)]
pub enum MappingCommand {
    /// Check mapping files; exit 0 or precise errors.
    Validate {
        /// Mapping files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the Ironclad user an entry becomes, and which rule decided its scope.
    Test {
        /// The mapping file.
        file: PathBuf,
        /// An entry as LDIF or JSON.
        #[arg(long, conflicts_with_all = ["config", "id"])]
        entry: Option<PathBuf>,
        /// A configuration whose source is read to find `--id`.
        #[arg(long, requires = "id")]
        config: Option<PathBuf>,
        /// The source id of the entry to test.
        #[arg(long, requires = "config")]
        id: Option<String>,
    },
}

/// Entry point of the `ironbridge` binary.
pub fn main() -> ExitCode {
    // Usage errors exit 1 like every other error: 2 means "changes pending" here, and a
    // script must not read a mistyped flag as a plan with changes.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Error.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    init_tracing(cli.log.as_deref(), cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Error.into();
        }
    };
    let exit = runtime.block_on(run(cli));
    // Every command has written its output, and closed its state store, when `run` returns.
    // The process ends here without tearing down the runtime or waiting for what commands
    // left to be freed on other threads: at 100,000 people that teardown took 30-40 ms of a
    // run's wall time and changed nothing. `exit` still flushes standard output.
    std::process::exit(exit as i32)
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Exit {
    let result = match cli.command {
        Command::Demo => demo::run().await,
        Command::Check { config } => check::run(&config).await,
        Command::Auth {
            command: AuthCommand::Login { config, timeout },
        } => auth::login(&config, timeout).await,
        Command::Source {
            command:
                SourceCommand::Dump {
                    config,
                    format,
                    limit,
                },
        } => source::dump(&config, format, limit).await,
        Command::Mapping { command } => mapping::run(command).await,
        Command::Plan {
            config,
            out,
            report,
            format,
        } => run::plan(&config, out.as_deref(), report.as_deref(), format).await,
        Command::Apply {
            config,
            plan,
            only,
            allow_removals,
            yes,
        } => {
            run::apply(run::ApplyArgs {
                config,
                plan,
                only,
                allow_removals,
                yes,
            })
            .await
        }
        Command::Preview { config, user } => run::preview(&config, &user).await,
        Command::Serve { config } => serve(&config).await,
        Command::Health { url, timeout } => {
            match crate::serve::probe(&url, std::time::Duration::from_secs(timeout)).await {
                Ok(()) => Ok(Exit::Ok),
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    Ok(Exit::Error)
                }
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Error
        }
    }
}

async fn serve(config: &std::path::Path) -> anyhow::Result<Exit> {
    let cfg = crate::config::Config::load(config)?;
    crate::serve::main(cfg).await?;
    Ok(Exit::Ok)
}

fn init_tracing(filter: Option<&str>, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter.unwrap_or("info"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::reconcile::progress::LogWriter);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

mod auth;
mod check;
mod demo;
mod mapping;
mod run;
mod source;
