//! The configuration file: a versioned TOML document (`version = 1`), parsed with unknown keys
//! rejected into file structs (`*File`), then validated into [`Config`] with every secret read
//! from its environment variable or file. Every error names the file, line, column and key.
//!
//! What lives here: the `[ironclad]` connection section and the `[policy]` section, the loader
//! and its error type. What does not: the `[source]` section's own shape (in
//! [`crate::source::SourceConfig`]) and the clients that use the values.

pub mod secret;
pub mod serve;

pub use secret::{Secret, SecretError, SecretRef};

use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The only configuration format version this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// A configuration problem, located in its file: `FILE:LINE:COLUMN: KEY: MESSAGE`.
///
/// A problem with no position in the file (`line` 0: the file cannot be read, a check on the
/// whole file) is written without a fake one: `FILE: KEY: MESSAGE`, leaving out `KEY` when it
/// is `-` and `FILE` when the message already names it (`cannot read FILE: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: String,
    /// 1-based line; 0 when the problem has no position in the file.
    pub line: usize,
    /// 1-based column (0 with `line` 0).
    pub column: usize,
    /// Dotted key the problem is about (`ironclad.auth.client_secret`), or `-` for syntax.
    pub key: String,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ConfigError {
            file,
            line,
            column,
            key,
            message,
        } = self;
        if *line > 0 {
            return write!(f, "{file}:{line}:{column}: {key}: {message}");
        }
        let names_file = !file.is_empty()
            && (message.starts_with(&format!("{file}: "))
                || message.contains(&format!(" {file}: ")));
        if !names_file {
            write!(f, "{file}: ")?;
        }
        if key != "-" {
            write!(f, "{key}: ")?;
        }
        f.write_str(message)
    }
}

impl std::error::Error for ConfigError {}

/// Turns a byte offset in `text` into a 1-based (line, column).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Locates errors in one configuration text.
#[derive(Debug, Clone)]
pub struct Locator<'a> {
    /// File name as the user gave it.
    pub file: &'a str,
    /// The file's text.
    pub text: &'a str,
}

impl Locator<'_> {
    /// An error at a byte span. The empty span at offset 0 stands for "no span known": the
    /// error is then placed where `key` is written (see [`Locator::at_key`]).
    pub fn at(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        if span == (0..0) {
            return self.at_key(key, message);
        }
        self.at_offset(span.start, key, message)
    }

    /// An error about a dotted key (`source.path`), placed at the key's value in the text.
    /// A key that is not written (a missing one) is placed at the header of the nearest table
    /// above it that is, and at the start of the file when there is none.
    pub fn at_key(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let offset = DeTable::parse(self.text)
            .ok()
            .and_then(|doc| written_span(doc.get_ref(), key))
            .map_or(0, |s| s.start);
        self.at_offset(offset, key, message)
    }

    fn at_offset(&self, offset: usize, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, offset);
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Converts a TOML/serde error (syntax, unknown or missing key, wrong type) into a located
    /// error naming the dotted key it is about.
    pub fn from_toml(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim().to_string();
        let (offset, key) = match e.span() {
            None => (0, "-".to_string()),
            Some(span) => match DeTable::parse(self.text) {
                Ok(doc) => locate(doc.get_ref(), span, &message),
                // Not valid TOML: the text around the offset is all there is to go on.
                Err(_) => (span.start, key_at(self.text, span.start)),
            },
        };
        self.at_offset(offset, &key, message)
    }
}

/// Best-effort dotted key at a byte offset of text that is not valid TOML: the nearest
/// `[table]` header at or above the offset's line plus the key written on that line.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let mut table = String::new();
    for l in text[..line_start].lines().chain(std::iter::once(line)) {
        let t = l.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let key = line.split('=').next().unwrap_or("").trim();
    let key = if key.starts_with('[') || key.is_empty() {
        ""
    } else {
        key
    };
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "-".to_string(),
        (true, false) => key.to_string(),
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// `prefix.name`, or `name` at the top level.
fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The name quoted after `lead` in a serde message (`unknown field `base_dn`, expected ...`).
fn quoted_after<'m>(message: &'m str, lead: &str) -> Option<&'m str> {
    message.strip_prefix(lead)?.split('`').next()
}

/// A key or value of a parsed document that an error's span falls within.
struct Hit<'a, 'i> {
    /// Dotted key (`source`, `scope.rules[0]`).
    key: String,
    /// Its span in the text (a table's is its `[header]` or inline `{ ... }`).
    span: Range<usize>,
    /// The table, when the hit is a table's value.
    table: Option<&'a DeTable<'i>>,
}

/// Where a deserialisation error lies in the parsed document: the offset to report and the
/// dotted key. serde reports an unknown key at the key itself, but a missing key at its table,
/// and everything inside a table it read whole (the `kind`-tagged `[source]`) at that table,
/// naming the key only in the message: the key is then looked up in that table (and in the
/// tables below it), and a missing one is reported at the table's header.
fn locate(doc: &DeTable<'_>, span: Range<usize>, message: &str) -> (usize, String) {
    let mut best = None;
    // An empty span is the document itself (a key missing at the top level).
    if !span.is_empty() {
        narrowest_in_table(doc, &span, "", &mut best);
    }
    let (key, table) = match &best {
        Some(h) => (h.key.clone(), h.table),
        None => (String::new(), Some(doc)),
    };
    let unknown = quoted_after(message, "unknown field `");
    let missing = quoted_after(message, "missing field `");
    let (offset, key) = match (table, unknown, missing) {
        (Some(t), Some(name), _) => match find_key(t, &key, name) {
            Some((k, at)) => (at.start, k),
            None => (span.start, key),
        },
        (Some(_), None, Some(name)) => (span.start, join_key(&key, name)),
        _ => (span.start, key),
    };
    (offset, if key.is_empty() { "-".into() } else { key })
}

/// Finds, below `table`, the narrowest key or value whose span holds `span` (the later one on
/// a tie: a value over its key, an array element over its array).
fn narrowest_in_table<'a, 'i>(
    table: &'a DeTable<'i>,
    span: &Range<usize>,
    prefix: &str,
    best: &mut Option<Hit<'a, 'i>>,
) {
    for (k, v) in table.iter() {
        let key = join_key(prefix, k.get_ref());
        consider(best, &key, k.span(), None, span);
        narrowest_in_value(v, span, &key, best);
    }
}

fn narrowest_in_value<'a, 'i>(
    v: &'a Spanned<DeValue<'i>>,
    span: &Range<usize>,
    key: &str,
    best: &mut Option<Hit<'a, 'i>>,
) {
    match v.get_ref() {
        DeValue::Table(t) => {
            consider(best, key, v.span(), Some(t), span);
            narrowest_in_table(t, span, key, best);
        }
        DeValue::Array(a) => {
            consider(best, key, v.span(), None, span);
            for (i, e) in a.iter().enumerate() {
                narrowest_in_value(e, span, &format!("{key}[{i}]"), best);
            }
        }
        _ => consider(best, key, v.span(), None, span),
    }
}

fn consider<'a, 'i>(
    best: &mut Option<Hit<'a, 'i>>,
    key: &str,
    node: Range<usize>,
    table: Option<&'a DeTable<'i>>,
    span: &Range<usize>,
) {
    let holds = node.start <= span.start && span.end <= node.end;
    let narrower = best.as_ref().is_none_or(|b| node.len() <= b.span.len());
    if holds && narrower {
        *best = Some(Hit {
            key: key.to_string(),
            span: node,
            table,
        });
    }
}

/// The key `name` in `table` (whose dotted key is `prefix`), or failing that in the tables
/// below it, the shallowest first: its dotted key and the span of the key.
fn find_key(table: &DeTable<'_>, prefix: &str, name: &str) -> Option<(String, Range<usize>)> {
    let mut level = vec![(prefix.to_string(), table)];
    while !level.is_empty() {
        let mut next = Vec::new();
        for (key, t) in level {
            if let Some((k, _)) = t.get_key_value(name) {
                return Some((join_key(&key, name), k.span()));
            }
            for (k, v) in t.iter() {
                let key = join_key(&key, k.get_ref());
                match v.get_ref() {
                    DeValue::Table(sub) => next.push((key, sub)),
                    DeValue::Array(a) => {
                        for (i, e) in a.iter().enumerate() {
                            if let DeValue::Table(sub) = e.get_ref() {
                                next.push((format!("{key}[{i}]"), sub));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        level = next;
    }
    None
}

/// The span of the dotted key's value (`source.path`), or, when it is not written, of the
/// nearest table above it that is; `None` when not even its first part is written.
fn written_span(doc: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
    let mut table = Some(doc);
    let mut found = None;
    for part in key.split('.') {
        let Some(v) = table.and_then(|t| t.get(part)) else {
            break;
        };
        found = Some(v.span());
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    found
}

/// Splits a source's validation message (`path: x is not a readable file`) into the dotted key
/// it names, under `source.`, and the rest; a message naming no key is about `source`.
fn source_key(message: &str) -> (String, &str) {
    let is_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    match message.split_once(": ") {
        Some((k, rest)) if is_key(k) => {
            let key = if k == "source" || k.starts_with("source.") {
                k.to_string()
            } else {
                format!("source.{k}")
            };
            (key, rest)
        }
        _ => ("source".to_string(), message),
    }
}

/// `[source]` is read through a `kind`-tagged enum, which serde reads whole before choosing the
/// variant: anything wrong inside it comes back placed at the `[source]` header, without the
/// key (a wrong type, a key of a sub-table). Reading the section again straight into the
/// variant's own type places it. Any other error is returned as it is.
fn placed_source_error(text: &str, e: toml::de::Error) -> toml::de::Error {
    use crate::source::{ldap::LdapSourceConfig, ldif::LdifSourceConfig, scim::ScimSourceConfig};
    let Ok(doc) = DeTable::parse(text) else {
        return e;
    };
    let Some(source) = doc.get_ref().get("source") else {
        return e;
    };
    let DeValue::Table(table) = source.get_ref() else {
        return e;
    };
    if e.span() != Some(source.span()) {
        return e;
    }
    let mut table = table.clone();
    let Some(kind) = table.remove("kind") else {
        return e;
    };
    let de = toml::de::ValueDeserializer::from(Spanned::new(source.span(), DeValue::Table(table)));
    // The variants of `crate::source::SourceConfig`; an unlisted kind keeps serde's error.
    let again = match kind.get_ref().as_str() {
        Some("ldif") => LdifSourceConfig::deserialize(de).err(),
        Some("ldap") => LdapSourceConfig::deserialize(de).err(),
        Some("scim") => ScimSourceConfig::deserialize(de).err(),
        _ => None,
    };
    again.unwrap_or(e)
}

// ---------------------------------------------------------------------------------------------
// File structs: exactly what may be written in the file.
// ---------------------------------------------------------------------------------------------

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Format version; must be 1.
    pub version: Spanned<u32>,
    /// Connection to Ironclad.
    pub ironclad: IroncladFile,
    /// The directory to read people and groups from.
    #[serde(default)]
    pub source: Option<Spanned<crate::source::SourceConfig>>,
    /// What the bridge is allowed to do (used by `check` to say which scopes are needed).
    #[serde(default)]
    pub policy: PolicyFile,
    /// The mapping file.
    #[serde(default)]
    pub mapping: Option<MappingRefFile>,
    /// Where state is kept.
    #[serde(default)]
    pub state: StateFile,
    /// `ironbridge serve`: listener, schedule, webhooks, admin API.
    #[serde(default)]
    pub serve: Option<serve::ServeFile>,
}

/// `[mapping]`: which mapping file turns source entries into Ironclad users.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRefFile {
    /// Path of the mapping file, relative to the configuration file.
    pub file: Spanned<PathBuf>,
}

/// `[state]`: the state store and audit log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// SQLite state store. Default `ironbridge-state.db` beside the configuration file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Audit log, JSON lines appended per write (intent and outcome). Default
    /// `ironbridge-audit.jsonl` beside the configuration file.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
}

/// `[ironclad]`: where Ironclad is and how to authenticate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IroncladFile {
    /// `na1`, `eu1` or `demo`. Exactly one of `region` and `base_url`.
    #[serde(default)]
    pub region: Option<Spanned<String>>,
    /// Explicit base URL (a proxy, the simulator): SCIM is under `{base_url}/scim/v2`, OAuth
    /// under `{base_url}/oauth`.
    #[serde(default)]
    pub base_url: Option<Spanned<String>>,
    /// How to get a token.
    pub auth: AuthFile,
    /// The acting user sent as `x-as-user-email` / `x-as-user-id` with client-credentials tokens.
    #[serde(default)]
    pub acting_user: Option<Spanned<ActingUserFile>>,
    /// PEM file with extra CA certificates to trust (a TLS-inspecting proxy).
    #[serde(default)]
    pub ca_file: Option<Spanned<PathBuf>>,
    /// Users and groups per list page (1..=1000). Default 1000.
    #[serde(default)]
    pub page_size: Option<Spanned<u32>>,
    /// Requests in flight at once. Default 16.
    #[serde(default)]
    pub max_concurrency: Option<Spanned<u32>>,
    /// Connect timeout, seconds. Default 10.
    #[serde(default)]
    pub connect_timeout_secs: Option<u64>,
    /// Per-request timeout, seconds. Default 30.
    #[serde(default)]
    pub request_timeout_secs: Option<u64>,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryFile,
    /// Requests per minute per Ironclad rate-limit bucket. Defaults: the documented limits.
    #[serde(default)]
    pub rate_limits: RateLimitsFile,
}

/// `[ironclad.auth]`: `method` selects client credentials, authorization code or a static
/// bearer token; the other keys are checked against the method during validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// `client_credentials`, `authorization_code` or `bearer_token`.
    pub method: Spanned<String>,
    /// The OAuth client id (not a secret). OAuth methods only.
    #[serde(default)]
    pub client_id: Option<Spanned<String>>,
    /// The client secret: `{ env = "VAR" }` or `{ file = "path" }`. OAuth methods only.
    #[serde(default)]
    pub client_secret: Option<Spanned<SecretRef>>,
    /// Scopes to request (OAuth; empty means the client's registered set), or the scopes a
    /// static token is known to carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Loopback redirect URI registered with the client (authorization_code). Default
    /// `http://127.0.0.1:8765/callback`.
    #[serde(default)]
    pub redirect_uri: Option<Spanned<String>>,
    /// Where `auth login` stores the refresh token, mode 0600 (authorization_code). Default
    /// `ironbridge-refresh-token` beside the configuration file.
    #[serde(default)]
    pub refresh_token_file: Option<Spanned<PathBuf>>,
    /// The static token: `{ env = "VAR" }` or `{ file = "path" }` (bearer_token).
    #[serde(default)]
    pub token: Option<Spanned<SecretRef>>,
}

/// `[ironclad.acting_user]`: exactly one of `email` or `id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActingUserFile {
    /// Sent as `x-as-user-email`.
    #[serde(default)]
    pub email: Option<String>,
    /// Sent as `x-as-user-id`.
    #[serde(default)]
    pub id: Option<String>,
}

/// `[ironclad.retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Attempts per request including the first. Default 6.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// First backoff ceiling, milliseconds. Default 500.
    #[serde(default)]
    pub base_delay_ms: Option<u64>,
    /// Largest backoff ceiling, milliseconds. Default 30000.
    #[serde(default)]
    pub max_delay_ms: Option<u64>,
    /// Give up retrying one request after this many seconds. Default 300.
    #[serde(default)]
    pub max_elapsed_secs: Option<u64>,
}

/// `[ironclad.rate_limits]`, requests per window (one minute unless `window_secs` says otherwise).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsFile {
    /// GET, PUT, POST on /Users. Default 600.
    #[serde(default)]
    pub users_read_write: Option<u32>,
    /// PATCH, DELETE on /Users. Default 50.
    #[serde(default)]
    pub users_patch_delete: Option<u32>,
    /// Everything on /Groups. Default 600.
    #[serde(default)]
    pub groups: Option<u32>,
    /// Everything else. Default 800.
    #[serde(default)]
    pub other: Option<u32>,
    /// Fraction of each limit the client aims at, leaving room for other clients of the
    /// account. Default 0.95.
    #[serde(default)]
    pub headroom: Option<f64>,
    /// The server's window, in seconds, over which each limit counts. Default 60.
    #[serde(default)]
    pub window_secs: Option<Spanned<f64>>,
}

/// `[policy]`: what the bridge is configured to do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Create joiners. Default true.
    #[serde(default = "yes")]
    pub create_users: bool,
    /// Update movers. Default true.
    #[serde(default = "yes")]
    pub update_users: bool,
    /// How leavers are removed: `delete`, `deactivate` or `keep`. Default `delete`.
    #[serde(default)]
    pub remove_users: RemoveMode,
    /// Push groups and their membership. Default true.
    #[serde(default = "yes")]
    pub manage_groups: bool,
    /// Most removals one run may make, as a count. Default 50.
    #[serde(default)]
    pub max_removals: Option<usize>,
    /// Most removals one run may make, as a percentage of managed users (0..=100). Default 10.
    #[serde(default)]
    pub max_removal_percent: Option<Spanned<f64>>,
    /// Runs in a row a person must be missing or out of scope before removal. Default 0.
    #[serde(default)]
    pub grace_runs: Option<u32>,
    /// Hours a person must be missing or out of scope before removal. Default none.
    #[serde(default)]
    pub grace_hours: Option<u32>,
    /// Consecutive failed runs after which a user is quarantined. Default 3.
    #[serde(default)]
    pub quarantine_after: Option<u32>,
    /// When the source's users listing is cut short (an LDAP size or time limit, a SCIM page
    /// that keeps failing), still create and update the people read. Nobody is removed either
    /// way. Default false: the run plans nothing for users.
    #[serde(default)]
    pub writes_on_incomplete_source: bool,
    /// Which requests carry updates and deactivations: `balanced` (PUT and PATCH, split so
    /// both rate-limit buckets finish together) or `patch` (PATCH only). Default `balanced`.
    #[serde(default)]
    pub write_method: WriteMethod,
    /// Compare every linked user attribute by attribute on every run. Default false: a user
    /// whose desired state and Ironclad `meta.lastModified` are both unchanged since a run
    /// found them equal is not compared again.
    #[serde(default)]
    pub full_compare: bool,
    /// Seconds after the listing of Ironclad's users from which each PUT first re-reads its
    /// user (a GET), so that the whole user it writes back is current. Default 60; 0: always.
    #[serde(default)]
    pub put_reread_after_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

impl Default for PolicyFile {
    fn default() -> Self {
        PolicyFile {
            create_users: true,
            update_users: true,
            remove_users: RemoveMode::Delete,
            manage_groups: true,
            max_removals: None,
            max_removal_percent: None,
            grace_runs: None,
            grace_hours: None,
            quarantine_after: None,
            writes_on_incomplete_source: false,
            write_method: WriteMethod::Balanced,
            full_compare: false,
            put_reread_after_secs: None,
        }
    }
}

/// Which requests carry updates and deactivations.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMethod {
    /// PUT (the whole user as read, managed attributes replaced) and PATCH (only what
    /// changed), in the proportion that finishes both rate-limit buckets together.
    #[default]
    Balanced,
    /// PATCH only, as identity providers do: slower under Ironclad's limits (PATCH shares the
    /// 50/min bucket with DELETE), never rewrites a whole user.
    Patch,
}

/// How a leaver is removed.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveMode {
    /// DELETE /Users/{id}.
    #[default]
    Delete,
    /// `active: false` (Ironclad removes the user).
    Deactivate,
    /// Either, request by request: DELETE (the PATCH/DELETE bucket) or PUT `active: false`
    /// (the PUT/POST bucket), in the proportion that finishes the batch soonest. With only one
    /// of `deleteUsers` and `updateUsers` granted, the one granted.
    DeleteOrDeactivate,
    /// Leave leavers in place.
    Keep,
}

// ---------------------------------------------------------------------------------------------
// Validated configuration.
// ---------------------------------------------------------------------------------------------

/// A validated configuration with every secret resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path of the file it came from.
    pub path: PathBuf,
    /// The Ironclad connection.
    pub ironclad: IroncladConfig,
    /// The directory source, when configured.
    pub source: Option<crate::source::SourceConfig>,
    /// What the bridge does.
    pub policy: Policy,
    /// Safety settings.
    pub safety: Safety,
    /// The mapping file, when configured.
    pub mapping: Option<PathBuf>,
    /// The state store.
    pub state_path: PathBuf,
    /// The audit log (JSON lines).
    pub audit_log: PathBuf,
    /// `ironbridge serve` settings (defaults when the section is absent).
    pub serve: serve::ServeConfig,
}

/// Safety settings from `[policy]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Safety {
    /// Most removals per run (count).
    pub max_removals: usize,
    /// Most removals per run (percent of managed users).
    pub max_removal_percent: f64,
    /// Runs missing before removal.
    pub grace_runs: u32,
    /// Time missing before removal.
    pub grace_period: Option<chrono::Duration>,
    /// Failed runs before quarantine.
    pub quarantine_after: u32,
    /// Create and update the people read when the users listing was cut short.
    pub writes_on_incomplete_source: bool,
}

/// What the bridge does, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Create joiners.
    pub create_users: bool,
    /// Update movers.
    pub update_users: bool,
    /// How leavers go.
    pub remove_users: RemoveMode,
    /// Push groups and membership.
    pub manage_groups: bool,
    /// Which requests carry updates and deactivations.
    pub write_method: WriteMethod,
    /// Compare every linked user on every run (no shortcut for users known converged).
    pub full_compare: bool,
    /// Seconds after Ironclad's users were read from which a PUT re-reads its user first.
    pub put_reread_after_secs: u64,
}

/// Ironclad regions with published hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// North America production.
    Na1,
    /// Europe production.
    Eu1,
    /// Demo / sandbox.
    Demo,
}

impl Region {
    /// The region's host base URL.
    pub fn base_url(self) -> &'static str {
        match self {
            Region::Na1 => "https://na1.ironcladapp.com",
            Region::Eu1 => "https://eu1.ironcladapp.com",
            Region::Demo => "https://demo.ironcladapp.com",
        }
    }
}

/// The connection to Ironclad, validated.
#[derive(Debug, Clone)]
pub struct IroncladConfig {
    /// Base URL of SCIM, e.g. `https://na1.ironcladapp.com/scim/v2` (no trailing slash).
    pub scim_url: url::Url,
    /// Base URL of OAuth, e.g. `https://na1.ironcladapp.com/oauth` (no trailing slash).
    pub oauth_url: url::Url,
    /// How to authenticate.
    pub auth: Auth,
    /// The acting user header, if any.
    pub acting_user: Option<ActingUser>,
    /// Extra CA certificates (PEM bytes).
    pub ca_pem: Option<Vec<u8>>,
    /// List page size.
    pub page_size: u32,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Pacing per bucket.
    pub rate_limits: RateLimits,
}

/// Validated authentication.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Client credentials grant.
    ClientCredentials {
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: Secret,
        /// Requested scopes (empty: the client's registered set).
        scopes: Vec<String>,
    },
    /// Authorization code + refresh token.
    AuthorizationCode {
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: Secret,
        /// Requested scopes.
        scopes: Vec<String>,
        /// Loopback redirect URI.
        redirect_uri: String,
        /// Refresh token file.
        refresh_token_file: PathBuf,
    },
    /// Static bearer token.
    BearerToken {
        /// The token.
        token: Secret,
        /// Scopes it is known to carry.
        scopes: Vec<String>,
    },
}

/// The acting user header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActingUser {
    /// `x-as-user-email`.
    Email(String),
    /// `x-as-user-id`.
    Id(String),
}

/// Retry policy for Ironclad requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts including the first.
    pub max_attempts: u32,
    /// First backoff ceiling.
    pub base_delay: Duration,
    /// Largest backoff ceiling.
    pub max_delay: Duration,
    /// Total time budget for one request's retries.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// Requests per window per bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// GET, PUT, POST on /Users.
    pub users_read_write: u32,
    /// PATCH, DELETE on /Users.
    pub users_patch_delete: u32,
    /// All of /Groups.
    pub groups: u32,
    /// Everything else.
    pub other: u32,
    /// Fraction of each limit aimed at.
    pub headroom: f64,
    /// The window the limits count over (Ironclad: one minute).
    pub window: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            users_read_write: 600,
            users_patch_delete: 50,
            groups: 600,
            other: 800,
            headroom: 0.95,
            window: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Reads, parses and validates a configuration file, resolving secrets.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            message: format!("cannot read {file}: {e}"),
            file,
            line: 0,
            column: 0,
            key: "-".into(),
        })?;
        Self::from_text(path, &text)
    }

    /// Parses and validates configuration text that came from `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let loc = Locator { file: &file, text };
        let parsed: ConfigFile =
            toml::from_str(text).map_err(|e| loc.from_toml(&placed_source_error(text, e)))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if *parsed.version.get_ref() != CONFIG_VERSION {
            return Err(loc.at(
                parsed.version.span(),
                "version",
                format!(
                    "unsupported version {}; this build reads version {CONFIG_VERSION}",
                    parsed.version.get_ref()
                ),
            ));
        }
        let ironclad = validate_ironclad(&loc, &base, parsed.ironclad)?;
        let source = match parsed.source {
            Some(s) => {
                let src = s.into_inner();
                src.validate(&base).map_err(|m| {
                    let (key, message) = source_key(&m);
                    loc.at_key(&key, message)
                })?;
                Some(src)
            }
            None => None,
        };
        let p = parsed.policy;
        if let Some(pct) = &p.max_removal_percent {
            if !(0.0..=100.0).contains(pct.get_ref()) {
                return Err(loc.at(
                    pct.span(),
                    "policy.max_removal_percent",
                    "must be between 0 and 100",
                ));
            }
        }
        let serve = serve::validate(&loc, &base, parsed.serve)?;
        let rel = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let mapping = match parsed.mapping {
            Some(m) => {
                let span = m.file.span();
                let file = rel(m.file.into_inner());
                if !file.is_file() {
                    return Err(loc.at(
                        span,
                        "mapping.file",
                        format!("{} does not exist", file.display()),
                    ));
                }
                Some(file)
            }
            None => None,
        };
        Ok(Config {
            path: path.to_path_buf(),
            ironclad,
            source,
            policy: Policy {
                create_users: p.create_users,
                update_users: p.update_users,
                remove_users: p.remove_users,
                manage_groups: p.manage_groups,
                write_method: p.write_method,
                full_compare: p.full_compare,
                put_reread_after_secs: p.put_reread_after_secs.unwrap_or(60),
            },
            safety: Safety {
                max_removals: p.max_removals.unwrap_or(50),
                max_removal_percent: p.max_removal_percent.map_or(10.0, Spanned::into_inner),
                grace_runs: p.grace_runs.unwrap_or(0),
                grace_period: p.grace_hours.map(|h| chrono::Duration::hours(i64::from(h))),
                quarantine_after: p.quarantine_after.unwrap_or(3).max(1),
                writes_on_incomplete_source: p.writes_on_incomplete_source,
            },
            mapping,
            state_path: rel(parsed
                .state
                .path
                .unwrap_or_else(|| PathBuf::from("ironbridge-state.db"))),
            audit_log: rel(parsed
                .state
                .audit_log
                .unwrap_or_else(|| PathBuf::from("ironbridge-audit.jsonl"))),
            serve,
        })
    }
}

fn resolve_secret(
    loc: &Locator<'_>,
    base: &Path,
    key: &str,
    r: &Spanned<SecretRef>,
) -> Result<Secret, ConfigError> {
    r.get_ref()
        .resolve(base)
        .map_err(|e| loc.at(r.span(), key, e.to_string()))
}

fn validate_auth(loc: &Locator<'_>, base: &Path, a: AuthFile) -> Result<Auth, ConfigError> {
    let method = a.method.get_ref().as_str();
    let method_span = a.method.span();
    let oauth = matches!(method, "client_credentials" | "authorization_code");
    if !oauth && method != "bearer_token" {
        return Err(loc.at(
            method_span,
            "ironclad.auth.method",
            format!("unknown method `{method}`; use client_credentials, authorization_code or bearer_token"),
        ));
    }
    // Keys that do not belong to the method are mistakes worth naming.
    let stray: [(&str, Option<std::ops::Range<usize>>, bool); 5] = [
        ("client_id", a.client_id.as_ref().map(|v| v.span()), oauth),
        (
            "client_secret",
            a.client_secret.as_ref().map(|v| v.span()),
            oauth,
        ),
        (
            "redirect_uri",
            a.redirect_uri.as_ref().map(|v| v.span()),
            method == "authorization_code",
        ),
        (
            "refresh_token_file",
            a.refresh_token_file.as_ref().map(|v| v.span()),
            method == "authorization_code",
        ),
        (
            "token",
            a.token.as_ref().map(|v| v.span()),
            method == "bearer_token",
        ),
    ];
    for (key, span, allowed) in stray {
        if let (Some(span), false) = (span, allowed) {
            return Err(loc.at(
                span,
                &format!("ironclad.auth.{key}"),
                format!("not used with method `{method}`"),
            ));
        }
    }
    if method == "bearer_token" {
        let token = a.token.as_ref().ok_or_else(|| {
            loc.at(
                method_span.clone(),
                "ironclad.auth.token",
                "missing: token = { env = \"VAR\" } or { file = \"path\" }",
            )
        })?;
        return Ok(Auth::BearerToken {
            token: resolve_secret(loc, base, "ironclad.auth.token", token)?,
            scopes: a.scopes,
        });
    }
    let client_id = a
        .client_id
        .as_ref()
        .map(|c| c.get_ref().trim().to_string())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| loc.at(method_span.clone(), "ironclad.auth.client_id", "missing"))?;
    let secret_ref = a.client_secret.as_ref().ok_or_else(|| {
        loc.at(
            method_span.clone(),
            "ironclad.auth.client_secret",
            "missing: client_secret = { env = \"VAR\" } or { file = \"path\" }",
        )
    })?;
    let client_secret = resolve_secret(loc, base, "ironclad.auth.client_secret", secret_ref)?;
    if method == "client_credentials" {
        return Ok(Auth::ClientCredentials {
            client_id,
            client_secret,
            scopes: a.scopes,
        });
    }
    let (redirect_uri, span) = match &a.redirect_uri {
        Some(r) => (r.get_ref().clone(), r.span()),
        None => ("http://127.0.0.1:8765/callback".to_string(), method_span),
    };
    let ru = url::Url::parse(&redirect_uri)
        .map_err(|e| loc.at(span.clone(), "ironclad.auth.redirect_uri", e.to_string()))?;
    if ru.scheme() != "http"
        || !matches!(
            ru.host_str(),
            Some("127.0.0.1") | Some("localhost") | Some("[::1]")
        )
    {
        return Err(loc.at(
            span,
            "ironclad.auth.redirect_uri",
            "must be a loopback http:// URL (127.0.0.1 or localhost) so `auth login` can receive it",
        ));
    }
    let file = a
        .refresh_token_file
        .map(|f| f.into_inner())
        .unwrap_or_else(|| PathBuf::from("ironbridge-refresh-token"));
    let file = if file.is_absolute() {
        file
    } else {
        base.join(file)
    };
    Ok(Auth::AuthorizationCode {
        client_id,
        client_secret,
        scopes: a.scopes,
        redirect_uri,
        refresh_token_file: file,
    })
}

fn validate_ironclad(
    loc: &Locator<'_>,
    base: &Path,
    f: IroncladFile,
) -> Result<IroncladConfig, ConfigError> {
    let (root_key, root_span) = match (&f.region, &f.base_url) {
        (None, Some(u)) => ("ironclad.base_url", u.span()),
        (Some(r), _) => ("ironclad.region", r.span()),
        (None, None) => ("ironclad.region", 0..0),
    };
    let root = match (&f.region, &f.base_url) {
        (Some(r), None) => {
            let region = match r.get_ref().to_ascii_lowercase().as_str() {
                "na1" => Region::Na1,
                "eu1" => Region::Eu1,
                "demo" => Region::Demo,
                other => {
                    return Err(loc.at(
                        r.span(),
                        "ironclad.region",
                        format!(
                        "unknown region `{other}`; use na1, eu1 or demo, or set base_url instead"
                    ),
                    ))
                }
            };
            url::Url::parse(region.base_url())
                .map_err(|e| loc.at(r.span(), "ironclad.region", e.to_string()))?
        }
        (None, Some(u)) => {
            let parsed = url::Url::parse(u.get_ref().trim_end_matches('/'))
                .map_err(|e| loc.at(u.span(), "ironclad.base_url", format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(loc.at(
                    u.span(),
                    "ironclad.base_url",
                    "must be an http:// or https:// URL",
                ));
            }
            parsed
        }
        (Some(r), Some(_)) => {
            return Err(loc.at(
                r.span(),
                "ironclad.region",
                "give either region or base_url, not both",
            ))
        }
        (None, None) => {
            // Not written: placed at the [ironclad] header.
            return Err(loc.at_key(
                "ironclad.region",
                "missing: set region (na1, eu1, demo) or base_url",
            ));
        }
    };
    let join = |suffix: &str| -> Result<url::Url, ConfigError> {
        let s = format!("{}/{}", root.as_str().trim_end_matches('/'), suffix);
        url::Url::parse(&s).map_err(|e| loc.at(root_span.clone(), root_key, e.to_string()))
    };
    let scim_url = join("scim/v2")?;
    let oauth_url = join("oauth")?;

    let auth_span = f.auth.method.span();
    let auth = validate_auth(loc, base, f.auth)?;

    let acting_user = match f.acting_user {
        None => None,
        Some(a) => {
            let span = a.span();
            match a.into_inner() {
                ActingUserFile {
                    email: Some(e),
                    id: None,
                } if e.contains('@') => Some(ActingUser::Email(e)),
                ActingUserFile {
                    email: Some(_),
                    id: None,
                } => {
                    return Err(loc.at(span, "ironclad.acting_user.email", "not an email address"))
                }
                ActingUserFile {
                    email: None,
                    id: Some(i),
                } if !i.trim().is_empty() => Some(ActingUser::Id(i)),
                _ => {
                    return Err(loc.at(
                        span,
                        "ironclad.acting_user",
                        "give exactly one of `email` or `id`",
                    ))
                }
            }
        }
    };
    if matches!(auth, Auth::ClientCredentials { .. }) && acting_user.is_none() {
        return Err(loc.at(
            auth_span,
            "ironclad.acting_user",
            "client_credentials tokens must name an acting user: add [ironclad.acting_user] email = \"admin@...\"",
        ));
    }

    let ca_pem = match f.ca_file {
        None => None,
        Some(p) => {
            let span = p.span();
            let p = p.into_inner();
            let p = if p.is_absolute() { p } else { base.join(p) };
            Some(std::fs::read(&p).map_err(|e| {
                loc.at(
                    span.clone(),
                    "ironclad.ca_file",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?)
        }
    };
    let page_size = match f.page_size {
        None => 1000,
        Some(p) if (1..=1000).contains(p.get_ref()) => *p.get_ref(),
        Some(p) => {
            return Err(loc.at(
                p.span(),
                "ironclad.page_size",
                "must be between 1 and 1000 (Ironclad's maximum)",
            ))
        }
    };
    let max_concurrency = match f.max_concurrency {
        None => 16,
        Some(c) if (1..=256).contains(c.get_ref()) => *c.get_ref() as usize,
        Some(c) => {
            return Err(loc.at(
                c.span(),
                "ironclad.max_concurrency",
                "must be between 1 and 256",
            ))
        }
    };
    let d = RetryPolicy::default();
    let retry = RetryPolicy {
        max_attempts: f.retry.max_attempts.unwrap_or(d.max_attempts).max(1),
        base_delay: f
            .retry
            .base_delay_ms
            .map(Duration::from_millis)
            .unwrap_or(d.base_delay),
        max_delay: f
            .retry
            .max_delay_ms
            .map(Duration::from_millis)
            .unwrap_or(d.max_delay),
        max_elapsed: f
            .retry
            .max_elapsed_secs
            .map(Duration::from_secs)
            .unwrap_or(d.max_elapsed),
    };
    let r = RateLimits::default();
    let rl = &f.rate_limits;
    let rate_limits = RateLimits {
        users_read_write: rl.users_read_write.unwrap_or(r.users_read_write).max(1),
        users_patch_delete: rl.users_patch_delete.unwrap_or(r.users_patch_delete).max(1),
        groups: rl.groups.unwrap_or(r.groups).max(1),
        other: rl.other.unwrap_or(r.other).max(1),
        headroom: rl.headroom.unwrap_or(r.headroom).clamp(0.1, 1.0),
        window: match &rl.window_secs {
            None => r.window,
            Some(w) if w.get_ref().is_finite() && (0.001..=86_400.0).contains(w.get_ref()) => {
                Duration::from_secs_f64(*w.get_ref())
            }
            Some(w) => {
                return Err(loc.at(
                    w.span(),
                    "ironclad.rate_limits.window_secs",
                    "must be between 0.001 and 86400 seconds",
                ))
            }
        },
    };
    Ok(IroncladConfig {
        scim_url,
        oauth_url,
        auth,
        acting_user,
        ca_pem,
        page_size,
        max_concurrency,
        connect_timeout: Duration::from_secs(f.connect_timeout_secs.unwrap_or(10).max(1)),
        request_timeout: Duration::from_secs(f.request_timeout_secs.unwrap_or(30).max(1)),
        retry,
        rate_limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_text(Path::new("/tmp/ironbridge.toml"), text)
    }

    const GOOD: &str = r#"
version = 1
[ironclad]
base_url = "http://127.0.0.1:9"
[ironclad.auth]
method = "bearer_token"
token = { env = "IB_TEST_TOKEN_GOOD" }
"#;

    #[test]
    fn good_bearer_config_loads() {
        std::env::set_var("IB_TEST_TOKEN_GOOD", "tok");
        let c = load(GOOD).unwrap();
        assert_eq!(c.ironclad.scim_url.as_str(), "http://127.0.0.1:9/scim/v2");
        assert_eq!(c.ironclad.oauth_url.as_str(), "http://127.0.0.1:9/oauth");
        assert_eq!(c.ironclad.page_size, 1000);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = "version = 1\n[ironclad]\nregion = \"na1\"\nfoo = 1\n[ironclad.auth]\nmethod = \"bearer_token\"\ntoken = { env = \"X\" }\n";
        let e = load(text).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert_eq!(e.key, "ironclad.foo", "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn bad_region_is_located() {
        let text = "version = 1\n[ironclad]\nregion = \"mars\"\n[ironclad.auth]\nmethod = \"bearer_token\"\ntoken = { env = \"X\" }\n";
        let e = load(text).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "ironclad.region"), "{e}");
    }

    #[test]
    fn missing_secret_env_is_located_and_not_leaky() {
        let text = "version = 1\n[ironclad]\nregion = \"na1\"\n[ironclad.auth]\nmethod = \"bearer_token\"\ntoken = { env = \"IB_TEST_DEFINITELY_UNSET\" }\n";
        let e = load(text).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (6, "ironclad.auth.token"), "{e}");
        assert!(e.message.contains("IB_TEST_DEFINITELY_UNSET"));
    }

    #[test]
    fn inline_secret_is_refused() {
        let text = "version = 1\n[ironclad]\nregion = \"na1\"\n[ironclad.auth]\nmethod = \"bearer_token\"\ntoken = \"abc\"\n";
        let e = load(text).unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        assert!(!e.to_string().contains("abc\""), "{e}");
    }

    #[test]
    fn client_credentials_needs_acting_user() {
        std::env::set_var("IB_TEST_CS", "s");
        let text = "version = 1\n[ironclad]\nregion = \"demo\"\n[ironclad.auth]\nmethod = \"client_credentials\"\nclient_id = \"c\"\nclient_secret = { env = \"IB_TEST_CS\" }\n";
        let e = load(text).unwrap_err();
        assert_eq!(e.key, "ironclad.acting_user", "{e}");
    }

    /// GOOD (lines 1-7, with its leading blank line) followed by `rest`, from line 8 on.
    fn good_with(rest: &str) -> String {
        std::env::set_var("IB_TEST_TOKEN_GOOD", "tok");
        format!("{GOOD}{rest}")
    }

    /// An LDIF file that exists, for `[source] path`.
    fn ldif_file() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.ldif");
        std::fs::write(&path, "").unwrap();
        let path = path.display().to_string();
        (dir, path)
    }

    #[test]
    fn unknown_source_key_names_the_key_and_its_line() {
        let (_dir, ldif) = ldif_file();
        let e = load(&good_with(&format!(
            "[source]\nkind = \"ldif\"\nbase_dn = \"dc=x\"\npath = \"{ldif}\"\n"
        )))
        .unwrap_err();
        assert_eq!(
            (e.line, e.column, e.key.as_str()),
            (10, 1, "source.base_dn"),
            "{e}"
        );
        assert!(e.message.contains("unknown field `base_dn`"), "{e}");
        // In a sub-table of the section too.
        let e = load(&good_with(&format!(
            "[source]\nkind = \"ldif\"\npath = \"{ldif}\"\n[source.users]\nbse = \"dc=x\"\n"
        )))
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (12, "source.users.bse"), "{e}");
    }

    #[test]
    fn missing_source_key_is_named_at_its_table() {
        let e = load(&good_with("[source]\nkind = \"ldif\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (8, "source.path"), "{e}");
        assert!(e.message.contains("missing field `path`"), "{e}");
        let e = load(&good_with("[source]\npath = \"x.ldif\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (8, "source.kind"), "{e}");
        // A sub-table's missing key is named at the sub-table's header.
        let e = load(&good_with(
            "[source]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1\"\nanonymous = true\n[source.users]\nfilter = \"(uid=*)\"\n",
        ))
        .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (12, "source.users.base_dn"),
            "{e}"
        );
        // A tagged sub-table inside the tagged section.
        let e = load(&good_with(
            "[source]\nkind = \"scim\"\nurl = \"https://idp.example.com/scim/v2\"\n[source.auth]\nmethod = \"bearer_token\"\ntokn = { env = \"X\" }\n",
        ))
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (13, "source.auth.tokn"), "{e}");
    }

    #[test]
    fn wrong_source_values_are_located() {
        let e = load(&good_with("[source]\nkind = \"ldif\"\npath = 5\n")).unwrap_err();
        assert_eq!(
            (e.line, e.column, e.key.as_str()),
            (10, 8, "source.path"),
            "{e}"
        );
        let e = load(&good_with("[source]\nkind = \"csv\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (9, "source.kind"), "{e}");
        // An inline table.
        let text = GOOD.replace(
            "version = 1\n",
            "version = 1\nsource = { kind = \"ldif\", pth = \"x\" }\n",
        );
        let e = load(&text).unwrap_err();
        assert_eq!(
            (e.line, e.column, e.key.as_str()),
            (3, 27, "source.pth"),
            "{e}"
        );
    }

    #[test]
    fn source_validation_names_the_key_once_at_its_line() {
        let e = load(&good_with(
            "[source]\nkind = \"ldif\"\npath = \"ib-test-definitely-missing.ldif\"\n",
        ))
        .unwrap_err();
        assert_eq!(
            (e.line, e.column, e.key.as_str()),
            (10, 8, "source.path"),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "/tmp/ironbridge.toml:10:8: source.path: /tmp/ib-test-definitely-missing.ldif is not a readable file"
        );
        // LDAP names its keys without the section: they are put under `source.`.
        let e = load(&good_with(
            "[source]\nkind = \"ldap\"\nanonymous = true\nurl = \"ldap://\"\n[source.users]\nbase_dn = \"dc=x\"\n",
        ))
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (11, "source.url"), "{e}");
        assert!(e.message.starts_with("no host"), "{e}");
        // A key that is not written: the section's header.
        let e = load(&good_with(
            "[source]\nkind = \"ldap\"\nurl = \"ldap://h\"\n[source.users]\nbase_dn = \"dc=x\"\n",
        ))
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (8, "source.bind_dn"), "{e}");
    }

    #[test]
    fn policy_values_are_located() {
        let e = load(&good_with(
            "[policy]\ncreate_users = true\nmax_removal_percent = 150\n",
        ))
        .unwrap_err();
        assert_eq!(
            (e.line, e.column, e.key.as_str()),
            (10, 23, "policy.max_removal_percent"),
            "{e}"
        );
        let c = load(&good_with("[policy]\nmax_removal_percent = 25\n")).unwrap();
        assert_eq!(c.safety.max_removal_percent, 25.0);
        let c = load(&good_with("")).unwrap();
        assert_eq!(c.safety.max_removal_percent, 10.0);
    }

    #[test]
    fn ironclad_problems_without_a_value_are_located() {
        std::env::set_var("IB_TEST_TOKEN_GOOD", "tok");
        let e = load(&GOOD.replace(
            "base_url = \"http://127.0.0.1:9\"",
            "base_url = \"http://127.0.0.1:9\"\nca_file = \"ib-test-missing.pem\"",
        ))
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (5, "ironclad.ca_file"), "{e}");
        assert!(e.message.contains("ib-test-missing.pem"), "{e}");
        let e =
            load(&GOOD.replace("base_url = \"http://127.0.0.1:9\"", "page_size = 10")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "ironclad.region"), "{e}");
        // A top-level table that is not there at all.
        let e = load("version = 1\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (1, "ironclad"), "{e}");
    }

    #[test]
    fn syntax_errors_on_a_header_name_that_table() {
        let e = load("version = 1\n[ironclad]\nregion = \"na1\"\n[source\nkind = 1\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (4, "source"), "{e}");
    }

    #[test]
    fn unreadable_file_has_no_fake_position() {
        let e = Config::load(Path::new("/tmp/ib-test-no-such-config.toml")).unwrap_err();
        assert_eq!((e.line, e.column), (0, 0), "{e}");
        assert!(
            e.to_string()
                .starts_with("cannot read /tmp/ib-test-no-such-config.toml: "),
            "{e}"
        );
        // Without a position, a message that does not name the file still gets it, once.
        let e = ConfigError {
            file: "m.toml".into(),
            line: 0,
            column: 0,
            key: "groups.dns".into(),
            message: "group `x` is not in the source snapshot".into(),
        };
        assert_eq!(
            e.to_string(),
            "m.toml: groups.dns: group `x` is not in the source snapshot"
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
