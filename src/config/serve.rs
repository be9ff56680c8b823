//! The `[serve]` section: how `ironbridge serve` listens, when it reconciles on its own (cron or
//! interval, in an explicit time zone), which identity-provider webhooks it accepts and with
//! which secrets, and the admin API token. File structs (`*File`) mirror the TOML exactly;
//! [`ServeConfig`] is the validated form with every secret resolved.
//!
//! What does not live here: the server itself ([`crate::serve`]).

use super::{ConfigError, Locator, Secret, SecretRef};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// `[serve]`: the long-running process.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    /// Address the HTTP server binds. Default `127.0.0.1:8080`.
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// Plan only, never write (a staging instance). Default false.
    #[serde(default)]
    pub dry_run: bool,
    /// Seconds a stop (SIGTERM/SIGINT) waits for the run in flight before recording it as
    /// interrupted. Default 20.
    #[serde(default)]
    pub shutdown_grace_secs: Option<u64>,
    /// Seconds after which another instance's run lock without heartbeat is taken over.
    /// Default 120.
    #[serde(default)]
    pub lock_stale_secs: Option<u64>,
    /// Milliseconds webhook events are collected before one targeted run. Default 2000.
    #[serde(default)]
    pub debounce_ms: Option<u64>,
    /// Largest webhook request body, bytes. Default 1048576 (1 MiB).
    #[serde(default)]
    pub body_limit_bytes: Option<usize>,
    /// Scheduled reconciliation.
    #[serde(default)]
    pub schedule: Option<ScheduleFile>,
    /// The admin API.
    #[serde(default)]
    pub admin: Option<AdminFile>,
    /// Identity-provider webhooks.
    #[serde(default)]
    pub webhooks: WebhooksFile,
}

/// `[serve.schedule]`: `cron`, `interval_secs`, or both (runs at whichever comes first).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// A cron expression: five fields (minute hour day-of-month month day-of-week), or six with
    /// seconds first; `@hourly`-style aliases work.
    #[serde(default)]
    pub cron: Option<Spanned<String>>,
    /// Or: run every this many seconds.
    #[serde(default)]
    pub interval_secs: Option<Spanned<u64>>,
    /// Add a random delay of up to this many seconds to each run (spreads instances). Default 0.
    #[serde(default)]
    pub jitter_secs: Option<u64>,
    /// IANA time zone the cron expression is read in (`UTC`, `Europe/Madrid`). Required with
    /// `cron`, so that the schedule never depends on the host's zone.
    #[serde(default)]
    pub time_zone: Option<Spanned<String>>,
    /// Reconcile once as soon as the server starts. Default false.
    #[serde(default)]
    pub run_on_start: bool,
}

/// `[serve.admin]`: the admin API is off without this section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// The bearer token: `{ env = "VAR" }` or `{ file = "path" }`.
    pub token: Spanned<SecretRef>,
}

/// `[serve.webhooks]`: each provider is off unless its table is present.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksFile {
    /// Okta event hooks at `/webhooks/okta`.
    #[serde(default)]
    pub okta: Option<OktaFile>,
    /// Microsoft Graph change notifications at `/webhooks/graph`.
    #[serde(default)]
    pub graph: Option<GraphFile>,
    /// The generic signed webhook at `/webhooks/generic`.
    #[serde(default)]
    pub generic: Option<GenericFile>,
}

/// `[serve.webhooks.okta]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaFile {
    /// The header value Okta sends (the event hook's authentication secret).
    pub secret: Spanned<SecretRef>,
    /// The header Okta sends it in. Default `Authorization`.
    #[serde(default)]
    pub header: Option<String>,
    /// Requests per second accepted from this provider. Default 50.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    /// Burst above the rate. Default 100.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[serve.webhooks.graph]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFile {
    /// The `clientState` given when the subscription was created.
    pub client_state: Spanned<SecretRef>,
    /// Requests per second accepted from this provider. Default 50.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    /// Burst above the rate. Default 100.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[serve.webhooks.generic]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericFile {
    /// The HMAC-SHA256 key.
    pub secret: Spanned<SecretRef>,
    /// Header carrying the hex signature (optionally `sha256=`-prefixed). Default
    /// `X-Ironbridge-Signature`.
    #[serde(default)]
    pub signature_header: Option<String>,
    /// Header carrying the Unix timestamp (seconds). Default `X-Ironbridge-Timestamp`.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// Largest accepted clock difference, seconds. Default 300.
    #[serde(default)]
    pub tolerance_secs: Option<u64>,
    /// Requests per second accepted from this provider. Default 50.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    /// Burst above the rate. Default 100.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// The validated `[serve]` section.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Bind address.
    pub listen: SocketAddr,
    /// Plan only.
    pub dry_run: bool,
    /// How long a stop waits for the run in flight.
    pub shutdown_grace: Duration,
    /// When another instance's lock counts as abandoned.
    pub lock_stale: Duration,
    /// Webhook debounce window.
    pub debounce: Duration,
    /// Largest webhook body.
    pub body_limit: usize,
    /// The schedule, if any.
    pub schedule: Option<Schedule>,
    /// Admin API bearer token (the API is off without one).
    pub admin_token: Option<Secret>,
    /// Okta event hooks.
    pub okta: Option<OktaHook>,
    /// Microsoft Graph change notifications.
    pub graph: Option<GraphHook>,
    /// Generic signed webhook.
    pub generic: Option<GenericHook>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dry_run: false,
            shutdown_grace: Duration::from_secs(20),
            lock_stale: Duration::from_secs(120),
            debounce: Duration::from_millis(2000),
            body_limit: 1024 * 1024,
            schedule: None,
            admin_token: None,
            okta: None,
            graph: None,
            generic: None,
        }
    }
}

/// When scheduled runs happen.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Cron or interval.
    pub when: When,
    /// Largest random delay added to each run.
    pub jitter: Duration,
    /// The zone cron expressions are read in.
    pub time_zone: chrono_tz::Tz,
    /// Run once at start-up.
    pub run_on_start: bool,
}

/// A cron expression, a fixed interval, or both.
#[derive(Debug, Clone)]
pub enum When {
    /// A parsed cron expression.
    Cron(Box<croner::Cron>),
    /// Every this long.
    Interval(Duration),
    /// At every cron occurrence, and never longer than the interval after the previous
    /// scheduled run (whichever comes first).
    Both(Box<croner::Cron>, Duration),
}

/// A per-provider request rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second.
    pub per_second: u32,
    /// Burst.
    pub burst: u32,
}

/// Okta event hook settings.
#[derive(Debug, Clone)]
pub struct OktaHook {
    /// The expected header value.
    pub secret: Secret,
    /// The header name (lower case).
    pub header: String,
    /// Rate limit.
    pub rate: Rate,
}

/// Graph change-notification settings.
#[derive(Debug, Clone)]
pub struct GraphHook {
    /// The expected `clientState`.
    pub client_state: Secret,
    /// Rate limit.
    pub rate: Rate,
}

/// Generic signed webhook settings.
#[derive(Debug, Clone)]
pub struct GenericHook {
    /// HMAC key.
    pub secret: Secret,
    /// Signature header (lower case).
    pub signature_header: String,
    /// Timestamp header (lower case).
    pub timestamp_header: String,
    /// Accepted clock difference.
    pub tolerance: Duration,
    /// Rate limit.
    pub rate: Rate,
}

fn rate(per_second: Option<u32>, burst: Option<u32>) -> Rate {
    let per_second = per_second.unwrap_or(50).max(1);
    Rate {
        per_second,
        burst: burst.unwrap_or(per_second * 2).max(1),
    }
}

fn secret(
    loc: &Locator<'_>,
    base: &Path,
    key: &str,
    r: &Spanned<SecretRef>,
) -> Result<Secret, ConfigError> {
    r.get_ref()
        .resolve(base)
        .map_err(|e| loc.at(r.span(), key, e.to_string()))
}

/// Validates `[serve]`, reading its secrets. `base` is the configuration file's directory.
pub fn validate(
    loc: &Locator<'_>,
    base: &Path,
    f: Option<ServeFile>,
) -> Result<ServeConfig, ConfigError> {
    let Some(f) = f else {
        return Ok(ServeConfig::default());
    };
    let d = ServeConfig::default();
    let listen = match &f.listen {
        None => d.listen,
        Some(l) => l.get_ref().parse().map_err(|_| {
            loc.at(
                l.span(),
                "serve.listen",
                "not an address:port such as 127.0.0.1:8080 or 0.0.0.0:8080",
            )
        })?,
    };
    let schedule = match f.schedule {
        None => None,
        Some(s) => Some(validate_schedule(loc, s)?),
    };
    let admin_token = match &f.admin {
        None => None,
        Some(a) => Some(secret(loc, base, "serve.admin.token", &a.token)?),
    };
    let okta = match &f.webhooks.okta {
        None => None,
        Some(o) => Some(OktaHook {
            secret: secret(loc, base, "serve.webhooks.okta.secret", &o.secret)?,
            header: o
                .header
                .clone()
                .unwrap_or_else(|| "authorization".into())
                .to_ascii_lowercase(),
            rate: rate(o.rate_per_second, o.burst),
        }),
    };
    let graph = match &f.webhooks.graph {
        None => None,
        Some(g) => Some(GraphHook {
            client_state: secret(
                loc,
                base,
                "serve.webhooks.graph.client_state",
                &g.client_state,
            )?,
            rate: rate(g.rate_per_second, g.burst),
        }),
    };
    let generic = match &f.webhooks.generic {
        None => None,
        Some(g) => Some(GenericHook {
            secret: secret(loc, base, "serve.webhooks.generic.secret", &g.secret)?,
            signature_header: g
                .signature_header
                .clone()
                .unwrap_or_else(|| "x-ironbridge-signature".into())
                .to_ascii_lowercase(),
            timestamp_header: g
                .timestamp_header
                .clone()
                .unwrap_or_else(|| "x-ironbridge-timestamp".into())
                .to_ascii_lowercase(),
            tolerance: Duration::from_secs(g.tolerance_secs.unwrap_or(300).max(1)),
            rate: rate(g.rate_per_second, g.burst),
        }),
    };
    Ok(ServeConfig {
        listen,
        dry_run: f.dry_run,
        shutdown_grace: f
            .shutdown_grace_secs
            .map(Duration::from_secs)
            .unwrap_or(d.shutdown_grace),
        lock_stale: f
            .lock_stale_secs
            .map(|s| Duration::from_secs(s.max(5)))
            .unwrap_or(d.lock_stale),
        debounce: f
            .debounce_ms
            .map(Duration::from_millis)
            .unwrap_or(d.debounce),
        body_limit: f.body_limit_bytes.unwrap_or(d.body_limit).max(1024),
        schedule,
        admin_token,
        okta,
        graph,
        generic,
    })
}

fn validate_schedule(loc: &Locator<'_>, s: ScheduleFile) -> Result<Schedule, ConfigError> {
    let tz = match &s.time_zone {
        None => None,
        Some(t) => Some(t.get_ref().parse::<chrono_tz::Tz>().map_err(|_| {
            loc.at(
                t.span(),
                "serve.schedule.time_zone",
                format!(
                    "unknown time zone `{}`; use an IANA name such as UTC or Europe/Madrid",
                    t.get_ref()
                ),
            )
        })?),
    };
    let cron = match &s.cron {
        None => None,
        Some(c) => {
            let cron: croner::Cron =
                c.get_ref()
                    .trim()
                    .parse()
                    .map_err(|e: croner::errors::CronError| {
                        loc.at(
                            c.span(),
                            "serve.schedule.cron",
                            format!("not a cron expression: {e}"),
                        )
                    })?;
            if tz.is_none() {
                return Err(loc.at(
                    c.span(),
                    "serve.schedule.time_zone",
                    "missing: a cron schedule needs an explicit time_zone (\"UTC\", \"Europe/Madrid\", ...)",
                ));
            }
            Some(Box::new(cron))
        }
    };
    let interval = match &s.interval_secs {
        None => None,
        Some(i) if *i.get_ref() == 0 => {
            return Err(loc.at(
                i.span(),
                "serve.schedule.interval_secs",
                "must be at least 1",
            ))
        }
        Some(i) => Some(Duration::from_secs(*i.get_ref())),
    };
    let when = match (cron, interval) {
        (Some(c), None) => When::Cron(c),
        (None, Some(i)) => When::Interval(i),
        (Some(c), Some(i)) => When::Both(c, i),
        (None, None) => {
            return Err(loc.at(
                0..0,
                "serve.schedule",
                "give cron = \"...\" (with time_zone), interval_secs = N, or both",
            ))
        }
    };
    Ok(Schedule {
        when,
        jitter: Duration::from_secs(s.jitter_secs.unwrap_or(0)),
        time_zone: tz.unwrap_or(chrono_tz::UTC),
        run_on_start: s.run_on_start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ServeConfig, ConfigError> {
        let loc = Locator {
            file: "t.toml",
            text,
        };
        let f: ServeFile = toml::from_str(text).map_err(|e| loc.from_toml(&e))?;
        validate(&loc, Path::new("/"), Some(f))
    }

    #[test]
    fn defaults_and_cron_with_zone() {
        let c =
            load("[schedule]\ncron = \"*/5 * * * *\"\ntime_zone = \"Europe/Madrid\"\n").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.debounce, Duration::from_secs(2));
        assert_eq!(c.body_limit, 1 << 20);
        let s = c.schedule.unwrap();
        assert_eq!(s.time_zone, chrono_tz::Europe::Madrid);
        assert!(matches!(s.when, When::Cron(_)));
    }

    #[test]
    fn cron_without_zone_is_refused_with_its_line() {
        let e = load("listen = \"127.0.0.1:9\"\n[schedule]\ncron = \"0 * * * *\"\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (3, "serve.schedule.time_zone"),
            "{e}"
        );
    }

    #[test]
    fn bad_cron_zone_and_address_are_located() {
        let e = load("[schedule]\ncron = \"61 * * * *\"\ntime_zone = \"UTC\"\n").unwrap_err();
        assert_eq!(e.key, "serve.schedule.cron", "{e}");
        let e = load("[schedule]\ninterval_secs = 60\ntime_zone = \"Mars/Base\"\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (3, "serve.schedule.time_zone"),
            "{e}"
        );
        let e = load("listen = \"localhost\"\n").unwrap_err();
        assert_eq!(e.key, "serve.listen", "{e}");
    }

    #[test]
    fn inline_webhook_secret_is_refused_without_echo() {
        let e = load("[webhooks.okta]\nsecret = \"hunter2\"\n").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
