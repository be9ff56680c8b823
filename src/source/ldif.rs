//! The LDIF file source: reads an RFC 2849 export of content records (what `slapcat`,
//! `ldapsearch -LLL` or `ldifde` write) into the same model the LDAP source yields.
//!
//! What lives here: the streaming parser ([`LdifReader`], [`parse_ldif`]), the conversion of a
//! record into an [`Entry`] (stable id, `objectGUID`/`objectSid` text forms), the selection of
//! users and groups by `objectClass` and base DN, and the resolution of member DNs to ids.
//! What does not: deciding who belongs in Ironclad (the mapping does that) and talking to a
//! live directory (see [`super::ldap`]).
//!
//! Parsing rules, in short (the user-facing version is in `docs/sources.md`):
//! - `version: 1` is optional and only allowed before the first record; comments (`#`) and
//!   folded lines (a line starting with one space continues the previous one, comments
//!   included) are understood; LF and CRLF line ends are both accepted.
//! - `attr: value`, `attr:: base64` (decoded; bytes that are not UTF-8 become
//!   [`Value::Binary`]); `dn::` base64 DNs. `attr:< URL` values and change records
//!   (`changetype:`, `control:`) are refused with an error naming the line.
//! - Attribute options stay part of the attribute name (`cn;lang-en` is its own attribute, as
//!   an LDAP server returns it), except the `;binary` transfer option, which is dropped
//!   (`userCertificate;binary` becomes `userCertificate`).
//! - Password attributes (`userPassword`, `unicodePwd`, ...) are never kept.
//! - Every problem is an [`LdifError`] naming `file:line`; a malformed file gives no records at
//!   all, so a broken export can never look like an empty directory.

use crate::model::{Attributes, Entry, Group, Snapshot, Value};
use base64::Engine as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// `[source] kind = "ldif"`: an LDIF export read as the directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdifSourceConfig {
    /// Path of the LDIF file, relative to the configuration file's directory.
    pub path: PathBuf,
    /// Which entries are people. Default: see [`LdifUsersConfig`].
    #[serde(default)]
    pub users: LdifUsersConfig,
    /// Which entries are groups and how membership is written. Default: see
    /// [`LdifGroupsConfig`].
    #[serde(default)]
    pub groups: LdifGroupsConfig,
    /// The attribute holding each entry's stable id. Default `entryUUID` (what `slapcat` and
    /// `ldapsearch ... '*' '+'` export). `objectGUID` (Active Directory) is rendered in the
    /// canonical GUID text form AD tools show (mixed-endian, lower case), `objectSid` as
    /// `S-1-5-...`; any other binary value as base64.
    #[serde(default = "default_id_attribute")]
    pub id_attribute: String,
    /// What to do with an entry that lacks `id_attribute`: `dn` (default) uses its normalised
    /// DN (lower case, no spaces around `,` and `=`) as the id and logs a warning with the
    /// count; `error` refuses the file, naming the entry's line. Choose `error` once your
    /// exports carry the id attribute, so a rename can never look like a leaver plus a joiner.
    #[serde(default)]
    pub id_fallback: IdFallback,
}

/// `[source.users]` for an LDIF source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdifUsersConfig {
    /// An entry is a person when it has one of these object classes (case-insensitive).
    /// Default `["inetOrgPerson", "person", "user", "organizationalPerson"]`.
    #[serde(default = "default_user_classes")]
    pub object_classes: Vec<String>,
    /// ...unless it also has one of these. Default `["computer"]` (Active Directory computer
    /// accounts are `user` objects too).
    #[serde(default = "default_user_excluded_classes")]
    pub exclude_object_classes: Vec<String>,
    /// Only entries at or below this DN. Default: anywhere in the file.
    #[serde(default)]
    pub base: Option<String>,
}

impl Default for LdifUsersConfig {
    fn default() -> Self {
        LdifUsersConfig {
            object_classes: default_user_classes(),
            exclude_object_classes: default_user_excluded_classes(),
            base: None,
        }
    }
}

/// `[source.groups]` for an LDIF source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdifGroupsConfig {
    /// An entry is a group when it has one of these object classes (case-insensitive). Default
    /// `["groupOfNames", "groupOfUniqueNames", "posixGroup", "group"]`; `[]` reads no groups.
    #[serde(default = "default_group_classes")]
    pub object_classes: Vec<String>,
    /// Only entries at or below this DN. Default: anywhere in the file.
    #[serde(default)]
    pub base: Option<String>,
    /// Where membership is written; several may be combined. Default
    /// `["member", "uniqueMember"]`. `memberUid` values are matched against the people's `uid`;
    /// `memberOf` is read from the people (and from groups, for nesting).
    #[serde(default = "default_membership")]
    pub membership: Vec<Membership>,
}

impl Default for LdifGroupsConfig {
    fn default() -> Self {
        LdifGroupsConfig {
            object_classes: default_group_classes(),
            base: None,
            membership: default_membership(),
        }
    }
}

/// An attribute that carries group membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Membership {
    /// `member` on the group: member DNs (groupOfNames, AD `group`).
    #[serde(rename = "member")]
    Member,
    /// `uniqueMember` on the group: member DNs with an optional `#'...'B` uid suffix.
    #[serde(rename = "uniqueMember")]
    UniqueMember,
    /// `memberUid` on the group (posixGroup): the members' `uid` values.
    #[serde(rename = "memberUid")]
    MemberUid,
    /// `memberOf` on the members: the DNs of the groups they belong to.
    #[serde(rename = "memberOf")]
    MemberOf,
}

impl Membership {
    fn attribute(self) -> &'static str {
        match self {
            Membership::Member => "member",
            Membership::UniqueMember => "uniqueMember",
            Membership::MemberUid => "memberUid",
            Membership::MemberOf => "memberOf",
        }
    }
}

/// What to do with an entry that lacks the id attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdFallback {
    /// Use the normalised DN as the id (and log a warning with the count).
    #[default]
    Dn,
    /// Refuse the file.
    Error,
}

fn default_id_attribute() -> String {
    "entryUUID".into()
}
fn default_user_classes() -> Vec<String> {
    ["inetOrgPerson", "person", "user", "organizationalPerson"]
        .map(String::from)
        .to_vec()
}
fn default_user_excluded_classes() -> Vec<String> {
    vec!["computer".into()]
}
fn default_group_classes() -> Vec<String> {
    ["groupOfNames", "groupOfUniqueNames", "posixGroup", "group"]
        .map(String::from)
        .to_vec()
}
fn default_membership() -> Vec<Membership> {
    vec![Membership::Member, Membership::UniqueMember]
}

impl LdifSourceConfig {
    /// The file's path, resolved against `base` (the configuration file's directory).
    pub fn resolved_path(&self, base: &Path) -> PathBuf {
        if self.path.is_absolute() {
            self.path.clone()
        } else {
            base.join(&self.path)
        }
    }

    /// Checks the configuration without reading the file (it must exist, though). The message
    /// names the key at fault.
    pub fn validate(&self, base: &Path) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("source.path: empty; give the LDIF file's path".into());
        }
        let path = self.resolved_path(base);
        if !path.is_file() {
            return Err(format!(
                "source.path: {} is not a readable file",
                path.display()
            ));
        }
        if !valid_attribute_name(&self.id_attribute) || self.id_attribute.contains(';') {
            return Err(format!(
                "source.id_attribute: `{}` is not an attribute name",
                self.id_attribute
            ));
        }
        if self.users.object_classes.is_empty() {
            return Err("source.users.object_classes: empty; name at least one class".into());
        }
        for (key, base_dn) in [
            ("source.users.base", &self.users.base),
            ("source.groups.base", &self.groups.base),
        ] {
            if let Some(dn) = base_dn {
                if !dn.trim().is_empty() && !looks_like_dn(dn) {
                    return Err(format!(
                        "{key}: `{dn}` is not a DN (expected e.g. ou=people,dc=example,dc=com)"
                    ));
                }
            }
        }
        if !self.groups.object_classes.is_empty() && self.groups.membership.is_empty() {
            return Err(
                "source.groups.membership: empty; name member, uniqueMember, memberUid or memberOf"
                    .into(),
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An LDIF problem, naming file and line. No records accompany it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_error(.file, *.line, .message))]
pub struct LdifError {
    /// The file, as given.
    pub file: String,
    /// 1-based line; 0 when the problem is the file as a whole (cannot be opened).
    pub line: usize,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

fn render_error(file: &str, line: usize, message: &str) -> String {
    if line == 0 {
        format!("{file}: {message}")
    } else {
        format!("{file}:{line}: {message}")
    }
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

/// One content record: a DN and its attributes, with the line its `dn:` is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdifRecord {
    /// The DN as written (base64 DNs decoded).
    pub dn: String,
    /// 1-based line of the `dn:` line.
    pub line: usize,
    /// The attributes (names case-insensitive; password attributes left out).
    pub attrs: Attributes,
}

/// A logical line: folded continuations joined, comments dropped.
enum Logical {
    /// An empty line (record separator) at this line number.
    Blank,
    /// `attr: value` text starting at this line number.
    Text(usize, String),
}

/// A streaming LDIF reader: yields content records one at a time from any [`BufRead`], so
/// memory holds one record plus the DNs seen (for the duplicate check).
pub struct LdifReader<R> {
    input: R,
    file: String,
    /// Physical lines consumed so far.
    line_no: usize,
    /// One physical line of look-ahead (folding needs it).
    peeked: Option<(usize, String)>,
    eof: bool,
    /// Whether a record (or the version line) has been read: `version:` is only allowed first.
    started: bool,
    /// Normalised DN -> line, for duplicate DNs.
    seen: HashMap<String, usize>,
    /// Set after the first error: the reader yields nothing more.
    failed: bool,
    buf: Vec<u8>,
    /// Whether input must end with a line end (see [`LdifReader::whole_file`]).
    whole_file: bool,
}

impl<R: BufRead> LdifReader<R> {
    /// A reader over `input`; `file` names it in errors.
    pub fn new(input: R, file: &str) -> Self {
        LdifReader {
            input,
            file: file.to_string(),
            line_no: 0,
            peeked: None,
            eof: false,
            started: false,
            seen: HashMap::new(),
            failed: false,
            buf: Vec::new(),
            whole_file: false,
        }
    }

    /// Reads a directory export, where a last line without a line end means the file was cut
    /// short (a copy or a transfer that stopped): that is an error rather than a directory
    /// with its last person incomplete and everyone after it gone. (`mapping test --entry`
    /// reads hand-written entries, which need not end with a line end.)
    pub fn whole_file(mut self) -> Self {
        self.whole_file = true;
        self
    }

    fn err(&self, line: usize, message: impl Into<String>) -> LdifError {
        LdifError {
            file: self.file.clone(),
            line,
            message: message.into(),
        }
    }

    /// The next physical line without its line end (LF or CRLF).
    fn read_physical(&mut self) -> Result<Option<(usize, String)>, LdifError> {
        if let Some(p) = self.peeked.take() {
            return Ok(Some(p));
        }
        if self.eof {
            return Ok(None);
        }
        self.buf.clear();
        let n = self
            .input
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| self.err(self.line_no + 1, format!("cannot read: {e}")))?;
        if n == 0 {
            self.eof = true;
            return Ok(None);
        }
        self.line_no += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        } else {
            self.eof = true;
            if self.whole_file {
                return Err(self.err(
                    self.line_no,
                    "the file ends in the middle of this line, without a line end: it looks cut \
                     short, so nothing was read (a complete export ends with a line end)",
                ));
            }
        }
        let text = std::str::from_utf8(&self.buf)
            .map_err(|_| {
                self.err(
                    self.line_no,
                    "not UTF-8 text; write non-text values in base64 (`attr:: ...`)",
                )
            })?
            .to_string();
        Ok(Some((self.line_no, text)))
    }

    fn peek_physical(&mut self) -> Result<Option<&(usize, String)>, LdifError> {
        if self.peeked.is_none() {
            self.peeked = self.read_physical()?;
        }
        Ok(self.peeked.as_ref())
    }

    /// The next logical line, or `None` at the end of the input.
    fn read_logical(&mut self) -> Result<Option<Logical>, LdifError> {
        loop {
            let Some((n, line)) = self.read_physical()? else {
                return Ok(None);
            };
            if line.is_empty() {
                return Ok(Some(Logical::Blank));
            }
            if line.starts_with(' ') {
                return Err(self.err(
                    n,
                    "a line starting with a space continues the previous line, but there is none \
                     (the line before is empty or this is the first line)",
                ));
            }
            let mut text = line;
            while let Some((_, next)) = self.peek_physical()? {
                let Some(rest) = next.strip_prefix(' ') else {
                    break;
                };
                text.push_str(rest);
                self.peeked = None;
            }
            if text.starts_with('#') {
                continue;
            }
            return Ok(Some(Logical::Text(n, text)));
        }
    }

    /// The next record, `Ok(None)` at the end of the input. After an error, always `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<LdifRecord>, LdifError> {
        if self.failed {
            return Ok(None);
        }
        let r = self.next_record_inner();
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn next_record_inner(&mut self) -> Result<Option<LdifRecord>, LdifError> {
        // Skip separators, handle the optional version line.
        let (dn_line, first) = loop {
            match self.read_logical()? {
                None => return Ok(None),
                Some(Logical::Blank) => continue,
                Some(Logical::Text(n, text)) => {
                    let parsed = parse_line(&text).map_err(|m| self.err(n, m))?;
                    if !self.started && parsed.0.eq_ignore_ascii_case("version") {
                        self.started = true;
                        match &parsed.1 {
                            Spec::Text(v) if v.trim() == "1" => continue,
                            _ => {
                                return Err(self
                                    .err(n, "unsupported LDIF version; only `version: 1` exists"))
                            }
                        }
                    }
                    self.started = true;
                    break (n, parsed);
                }
            }
        };
        let (name, spec) = first;
        if !name.eq_ignore_ascii_case("dn") {
            return Err(self.err(
                dn_line,
                format!(
                    "record without dn: a record must start with `dn:`, found `{name}:` \
                     (is a blank line missing or misplaced?)"
                ),
            ));
        }
        let dn = match spec {
            Spec::Text(s) => s,
            Spec::Binary(b) => String::from_utf8(b)
                .map_err(|_| self.err(dn_line, "the base64 DN (`dn::`) is not UTF-8 text"))?,
            Spec::Url => return Err(self.err(dn_line, "a DN cannot be a URL (`dn:<`)")),
        };
        let dn = dn.trim().to_string();
        if !dn.is_empty() && !looks_like_dn(&dn) {
            return Err(self.err(
                dn_line,
                "the DN is not `attr=value,...` (e.g. uid=ada,ou=people,dc=example,dc=com)",
            ));
        }
        let key = normalize_dn(&dn);
        if let Some(prev) = self.seen.get(&key) {
            return Err(self.err(
                dn_line,
                format!("duplicate dn `{dn}`: already used by the record at line {prev}"),
            ));
        }
        self.seen.insert(key, dn_line);

        let mut attrs = Attributes::new();
        loop {
            let (n, text) = match self.read_logical()? {
                None | Some(Logical::Blank) => break,
                Some(Logical::Text(n, text)) => (n, text),
            };
            let (name, spec) = parse_line(&text).map_err(|m| self.err(n, m))?;
            if name.eq_ignore_ascii_case("changetype") || name.eq_ignore_ascii_case("control") {
                return Err(self.err(
                    n,
                    format!(
                        "change records (`{name}:`) are not supported: this source reads content \
                         records only; export the directory with slapcat or `ldapsearch -LLL`"
                    ),
                ));
            }
            if name.eq_ignore_ascii_case("dn") {
                return Err(self.err(
                    n,
                    "a second `dn:` inside one record; separate records with a blank line",
                ));
            }
            let value = match spec {
                Spec::Text(s) => Value::text(s),
                Spec::Binary(b) => match String::from_utf8(b) {
                    Ok(s) => Value::text(s),
                    Err(e) => Value::binary(e.into_bytes()),
                },
                Spec::Url => {
                    return Err(self.err(
                        n,
                        format!(
                            "URL values (`{name}:< URL`) are not supported: write the value \
                             inline or in base64 (`{name}:: ...`)"
                        ),
                    ))
                }
            };
            let name = strip_binary_option(&name);
            if crate::model::is_secret_attribute(&name) {
                continue;
            }
            attrs.push(&name, value);
        }
        Ok(Some(LdifRecord {
            dn,
            line: dn_line,
            attrs,
        }))
    }
}

impl<R: BufRead> Iterator for LdifReader<R> {
    type Item = Result<LdifRecord, LdifError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// The value part of an `attr...` line.
enum Spec {
    Text(String),
    Binary(Vec<u8>),
    Url,
}

/// Splits `attr: value`, `attr:: base64`, `attr:< url`. The error message never quotes the
/// value (it may be a secret).
fn parse_line(text: &str) -> Result<(String, Spec), String> {
    let Some(colon) = text.find(':') else {
        let name: String = text
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ';' | '.'))
            .take(40)
            .collect();
        return Err(if name.is_empty() {
            "missing `:`; every line of a record is `attribute: value`".to_string()
        } else {
            format!("missing `:` after `{name}`; every line of a record is `attribute: value`")
        });
    };
    let name = &text[..colon];
    if !valid_attribute_name(name) {
        let shown: String = name.chars().take(40).collect();
        return Err(format!(
            "`{shown}` is not an attribute name (letters, digits, `-`, `.`, `;options`)"
        ));
    }
    let rest = &text[colon + 1..];
    let spec = if let Some(b64) = rest.strip_prefix(':') {
        let cleaned: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = BASE64
            .decode(cleaned.as_bytes())
            .map_err(|e| format!("bad base64 in the value of `{name}`: {e}"))?;
        Spec::Binary(bytes)
    } else if rest.starts_with('<') {
        Spec::Url
    } else {
        Spec::Text(rest.trim_start_matches(' ').to_string())
    };
    Ok((name.to_string(), spec))
}

/// Standard base64, padding optional (some exporters leave it out).
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// RFC 4512 attribute description: a name (`ALPHA *(ALPHA/DIGIT/"-")`) or a dotted OID,
/// followed by `;options`.
fn valid_attribute_name(name: &str) -> bool {
    let mut parts = name.split(';');
    let Some(base) = parts.next() else {
        return false;
    };
    let base_ok = match base.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => {
            base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
        Some(c) if c.is_ascii_digit() => base
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())),
        _ => false,
    };
    base_ok
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// Drops the `;binary` transfer option (RFC 4522), keeps every other option.
fn strip_binary_option(name: &str) -> String {
    if !name.contains(';') {
        return name.to_string();
    }
    name.split(';')
        .enumerate()
        .filter(|(i, o)| *i == 0 || !o.eq_ignore_ascii_case("binary"))
        .map(|(_, o)| o)
        .collect::<Vec<_>>()
        .join(";")
}

/// Parses LDIF text into records (for `mapping test --entry FILE.ldif` and tests). The whole
/// text is checked: any problem is an error and no record is returned.
pub fn parse_ldif(text: &str, file: &str) -> Result<Vec<LdifRecord>, LdifError> {
    LdifReader::new(text.as_bytes(), file).collect()
}

// ---------------------------------------------------------------------------------------------
// DNs, GUIDs, SIDs
// ---------------------------------------------------------------------------------------------

/// Splits at unescaped `sep` (backslash escapes and quoted strings respected).
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Whether every RDN of `dn` has the shape `attr=value`.
fn looks_like_dn(dn: &str) -> bool {
    split_unescaped(dn, ',').iter().all(|rdn| {
        split_unescaped(rdn, '+').iter().all(|ava| {
            let mut kv = ava.splitn(2, '=');
            matches!((kv.next(), kv.next()), (Some(k), Some(_)) if !k.trim().is_empty())
        })
    })
}

/// A DN in the form used to compare DNs: attribute types and values lower-cased, spaces around
/// `,`, `+` and `=` removed. (Equivalent to how LDAP servers match DNs for names written in the
/// usual ways; it does not unify hex escapes with their characters.)
pub fn normalize_dn(dn: &str) -> String {
    split_unescaped(dn.trim(), ',')
        .iter()
        .map(|rdn| {
            split_unescaped(rdn, '+')
                .iter()
                .map(|ava| match ava.split_once('=') {
                    Some((k, v)) => format!("{}={}", k.trim(), trim_dn_value(v)).to_lowercase(),
                    None => ava.trim().to_lowercase(),
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Trims spaces around a DN value, keeping an escaped trailing space (`\ `).
fn trim_dn_value(v: &str) -> &str {
    let v = v.trim_start();
    let trimmed = v.trim_end();
    if trimmed.ends_with('\\') && trimmed.len() < v.len() {
        &v[..trimmed.len() + 1]
    } else {
        trimmed
    }
}

/// Whether `dn` is `base` or below it (both normalised).
fn is_under(dn_norm: &str, base_norm: &str) -> bool {
    base_norm.is_empty()
        || dn_norm == base_norm
        || dn_norm
            .strip_suffix(base_norm)
            .is_some_and(|head| head.ends_with(','))
}

/// Active Directory `objectGUID` bytes in the GUID text form AD tools show: the first three
/// groups little-endian ("mixed-endian"), lower case, e.g.
/// `a3c1f2d0-7b6e-4f21-9c3d-0e5a8b7c6d41`.
pub fn guid_text(bytes: &[u8]) -> Option<String> {
    let b: [u8; 16] = bytes.try_into().ok()?;
    Some(uuid::Uuid::from_bytes_le(b).to_string())
}

/// A binary security identifier (`objectSid`) as `S-1-5-21-...`.
pub fn sid_text(bytes: &[u8]) -> Option<String> {
    let (&revision, rest) = bytes.split_first()?;
    let (&count, rest) = rest.split_first()?;
    if rest.len() != 6 + 4 * usize::from(count) {
        return None;
    }
    let (auth, subs) = rest.split_at(6);
    let authority = auth.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut out = format!("S-{revision}-{authority}");
    for chunk in subs.chunks_exact(4) {
        let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        out.push_str(&format!("-{v}"));
    }
    Some(out)
}

/// Replaces binary `objectGUID` / `objectSid` values by their text forms.
fn render_ad_binaries(attrs: &mut Attributes) {
    for (name, render) in [
        ("objectGUID", guid_text as fn(&[u8]) -> Option<String>),
        ("objectSid", sid_text),
    ] {
        if !attrs.has(name) {
            continue;
        }
        let values = attrs.get(name).to_vec();
        let display = attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| name.to_string());
        let rendered: crate::model::Values = values
            .into_iter()
            .map(|v| match &v {
                Value::Binary(b) => render(b).map(Value::text).unwrap_or(v),
                Value::Text(_) => v,
            })
            .collect();
        attrs.set(&display, rendered);
    }
}

impl LdifRecord {
    /// The record as a model [`Entry`]: `objectGUID`/`objectSid` in their text forms, the id
    /// from `id_attribute` (first value), or the normalised DN when the attribute is absent and
    /// `fallback` is [`IdFallback::Dn`]. `file` names the file in the error.
    pub fn into_entry(
        self,
        id_attribute: &str,
        fallback: IdFallback,
        file: &str,
    ) -> Result<Entry, LdifError> {
        let mut attrs = self.attrs;
        render_ad_binaries(&mut attrs);
        let id = match attrs.first_text(id_attribute) {
            Some(v) if !v.trim().is_empty() => v.trim().to_string(),
            _ => match fallback {
                IdFallback::Dn => normalize_dn(&self.dn),
                IdFallback::Error => {
                    return Err(LdifError {
                        file: file.to_string(),
                        line: self.line,
                        message: format!(
                            "`{}` has no {id_attribute} (the id attribute); export it (e.g. \
                             slapcat, or ldapsearch with '+') or set id_fallback = \"dn\"",
                            self.dn
                        ),
                    })
                }
            },
        };
        Ok(Entry {
            id,
            locator: self.dn,
            attrs,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The source
// ---------------------------------------------------------------------------------------------

/// Reads an LDIF file into snapshots. Each [`crate::source::Source::read`] re-reads the file.
#[derive(Debug, Clone)]
pub struct LdifSource {
    cfg: LdifSourceConfig,
    path: PathBuf,
}

impl LdifSource {
    /// A source for `cfg`; `base` is the configuration file's directory (relative paths are
    /// resolved against it). Nothing is read yet.
    pub fn open(cfg: LdifSourceConfig, base: &Path) -> Result<LdifSource, LdifError> {
        let path = cfg.resolved_path(base);
        cfg.validate(base).map_err(|message| LdifError {
            file: path.display().to_string(),
            line: 0,
            message,
        })?;
        Ok(LdifSource { cfg, path })
    }

    /// Reads the file now, on the calling thread (the [`crate::source::Source`] impl runs this
    /// on a blocking thread).
    pub fn read_blocking(&self) -> Result<Snapshot, LdifError> {
        let file = self.path.display().to_string();
        let read_at = chrono::Utc::now();
        let f = std::fs::File::open(&self.path).map_err(|e| LdifError {
            file: file.clone(),
            line: 0,
            message: format!("cannot open: {e}"),
        })?;
        let reader = LdifReader::new(std::io::BufReader::new(f), &file).whole_file();
        let (users, groups) = select(&self.cfg, reader, &file)?;
        Ok(Snapshot {
            source: file,
            read_at,
            users,
            groups,
        })
    }
}

impl super::Source for LdifSource {
    fn describe(&self) -> String {
        format!("ldif {}", self.path.display())
    }

    fn read(&self) -> BoxFuture<'_, Result<Snapshot, super::SourceError>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.read_blocking())
                .await
                .map_err(|e| LdifError {
                    file: self.path.display().to_string(),
                    line: 0,
                    message: format!("the reading task failed: {e}"),
                })?
                .map_err(super::SourceError::from)
        })
    }
}

/// A membership reference waiting for resolution.
enum Pending {
    /// Group (index) lists a member DN (normalised).
    Dn(usize, String),
    /// Group (index) lists a member uid.
    Uid(usize, String),
    /// Entry id is a member of the group with this DN (normalised).
    Of(String, String),
}

fn has_class(attrs: &Attributes, classes: &[String]) -> bool {
    attrs.get("objectClass").iter().any(|v| {
        let v = v.as_text();
        classes.iter().any(|c| c.eq_ignore_ascii_case(v.trim()))
    })
}

/// Picks users and groups out of the records as they stream by, then resolves membership.
fn select<R: BufRead>(
    cfg: &LdifSourceConfig,
    reader: LdifReader<R>,
    file: &str,
) -> Result<(Vec<crate::model::Entry>, Vec<Group>), LdifError> {
    let users_base = cfg
        .users
        .base
        .as_deref()
        .map(normalize_dn)
        .unwrap_or_default();
    let groups_base = cfg
        .groups
        .base
        .as_deref()
        .map(normalize_dn)
        .unwrap_or_default();
    let membership = &cfg.groups.membership;

    let mut users = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    // Normalised DN -> id, for users and groups.
    let mut by_dn: HashMap<String, String> = HashMap::new();
    // uid -> user id, for memberUid.
    let mut by_uid: HashMap<String, String> = HashMap::new();
    // id -> line, for duplicate ids.
    let mut id_lines: HashMap<String, usize> = HashMap::new();
    let mut pending = Vec::new();
    let mut dn_fallbacks = 0usize;
    let mut records = 0usize;

    for rec in reader {
        let mut rec = rec?;
        records += 1;
        let dn_norm = normalize_dn(&rec.dn);
        let is_user = has_class(&rec.attrs, &cfg.users.object_classes)
            && !has_class(&rec.attrs, &cfg.users.exclude_object_classes)
            && is_under(&dn_norm, &users_base);
        let is_group =
            has_class(&rec.attrs, &cfg.groups.object_classes) && is_under(&dn_norm, &groups_base);
        if !is_user && !is_group {
            continue;
        }
        if is_user && is_group {
            return Err(LdifError {
                file: file.to_string(),
                line: rec.line,
                message: format!(
                    "`{}` matches both the users' and the groups' object classes; narrow \
                     source.users.object_classes or source.groups.object_classes",
                    rec.dn
                ),
            });
        }
        let line = rec.line;
        if !rec.attrs.has(&cfg.id_attribute) {
            dn_fallbacks += 1;
        }
        // Membership values leave the group's attributes: they are resolved into members.
        let mut member_dns = Vec::new();
        let mut member_uids = Vec::new();
        if is_group {
            for m in [Membership::Member, Membership::UniqueMember] {
                if membership.contains(&m) {
                    for v in rec.attrs.remove(m.attribute()).unwrap_or_default() {
                        let v = v.as_text();
                        let dn = match m {
                            // nameAndOptionalUID: `dn#'0101'B`.
                            Membership::UniqueMember => {
                                v.rsplit_once('#').map(|(d, _)| d).unwrap_or(&v).to_string()
                            }
                            _ => v.to_string(),
                        };
                        member_dns.push(normalize_dn(&dn));
                    }
                }
            }
            if membership.contains(&Membership::MemberUid) {
                for v in rec.attrs.remove("memberUid").unwrap_or_default() {
                    member_uids.push(v.as_text().trim().to_string());
                }
            }
        }
        let member_of: Vec<String> = if membership.contains(&Membership::MemberOf) {
            rec.attrs
                .get("memberOf")
                .iter()
                .map(|v| normalize_dn(&v.as_text()))
                .collect()
        } else {
            Vec::new()
        };
        let uid = rec.attrs.first_text("uid").map(|u| u.trim().to_string());
        let entry = rec.into_entry(&cfg.id_attribute, cfg.id_fallback, file)?;
        if let Some(prev) = id_lines.insert(entry.id.clone(), line) {
            return Err(LdifError {
                file: file.to_string(),
                line,
                message: format!(
                    "duplicate id `{}` ({}): the record at line {prev} has the same id",
                    entry.id, cfg.id_attribute
                ),
            });
        }
        by_dn.insert(dn_norm, entry.id.clone());
        for g in member_of {
            pending.push(Pending::Of(entry.id.clone(), g));
        }
        if is_user {
            if let Some(uid) = uid {
                by_uid.entry(uid).or_insert_with(|| entry.id.clone());
            }
            users.push(entry);
        } else {
            let idx = groups.len();
            pending.extend(member_dns.into_iter().map(|d| Pending::Dn(idx, d)));
            pending.extend(member_uids.into_iter().map(|u| Pending::Uid(idx, u)));
            groups.push(Group {
                entry,
                members: Vec::new(),
            });
        }
    }

    if records == 0 {
        return Err(LdifError {
            file: file.to_string(),
            line: 0,
            message: "no entries at all: an empty export is taken for a failed one, so nothing \
                      was read (a directory with nobody to provision still has its groups or \
                      its base entry)"
                .into(),
        });
    }

    if dn_fallbacks > 0 {
        tracing::warn!(
            file,
            count = dn_fallbacks,
            id_attribute = %cfg.id_attribute,
            "entries without the id attribute use their DN as id; a rename will look like a leaver plus a joiner"
        );
    }

    let group_index: HashMap<String, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.entry.id.clone(), i))
        .collect();
    let mut members: Vec<BTreeSet<String>> = vec![BTreeSet::new(); groups.len()];
    let mut unresolved = 0usize;
    for p in pending {
        match p {
            Pending::Dn(g, dn) => match by_dn.get(&dn) {
                Some(id) => {
                    members[g].insert(id.clone());
                }
                None => unresolved += 1,
            },
            Pending::Uid(g, uid) => match by_uid.get(&uid) {
                Some(id) => {
                    members[g].insert(id.clone());
                }
                None => unresolved += 1,
            },
            Pending::Of(id, group_dn) => {
                match by_dn.get(&group_dn).and_then(|gid| group_index.get(gid)) {
                    Some(&g) => {
                        members[g].insert(id);
                    }
                    None => unresolved += 1,
                }
            }
        }
    }
    if unresolved > 0 {
        tracing::debug!(
            file,
            count = unresolved,
            "membership values that name no user or group read from the file were left out"
        );
    }
    for (g, m) in groups.iter_mut().zip(members) {
        // A group never lists itself.
        g.members = m.into_iter().filter(|id| *id != g.entry.id).collect();
    }
    Ok((users, groups))
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<LdifRecord>, LdifError> {
        parse_ldif(text, "t.ldif")
    }

    fn err(text: &str) -> LdifError {
        parse(text).expect_err("should fail")
    }

    #[test]
    fn simple_records_with_version_comments_and_multiple_values() {
        let recs = parse(
            "version: 1\n# a comment\ndn: uid=a,dc=x\nobjectClass: person\nobjectClass: top\ncn: A\n\n\n\
             dn: uid=b,dc=x\ncn:B\n",
        )
        .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].dn, "uid=a,dc=x");
        assert_eq!(recs[0].line, 3);
        assert_eq!(recs[0].attrs.get("objectclass").len(), 2);
        assert_eq!(recs[1].line, 9);
        assert_eq!(recs[1].attrs.first_text("cn").unwrap(), "B");
    }

    #[test]
    fn folded_lines_and_folded_comments_and_crlf() {
        let recs = parse(
            "dn: uid=a,\r\n dc=x\r\n# comment that\r\n  continues\r\ndescription: one\r\n  two\r\n",
        )
        .unwrap();
        assert_eq!(recs[0].dn, "uid=a,dc=x");
        assert_eq!(recs[0].attrs.first_text("description").unwrap(), "one two");
        assert_eq!(recs[0].attrs.len(), 1);
    }

    #[test]
    fn base64_values_text_and_binary_and_dn() {
        // "Zoë" and bytes 00 ff.
        let recs = parse("dn:: dWlkPXpvw6ssZGM9eA==\ncn:: Wm/Dqw==\njpegPhoto:: AP8=\n").unwrap();
        assert_eq!(recs[0].dn, "uid=zoë,dc=x");
        assert_eq!(recs[0].attrs.get("cn")[0], Value::Text("Zoë".into()));
        assert_eq!(
            recs[0].attrs.get("jpegPhoto")[0],
            Value::binary(vec![0, 255])
        );
    }

    #[test]
    fn options_kept_except_binary() {
        let recs =
            parse("dn: cn=a,dc=x\ncn;lang-en: A\nuserCertificate;binary:: AP8=\ncn: B\n").unwrap();
        assert_eq!(recs[0].attrs.get("cn;LANG-EN").len(), 1);
        assert_eq!(recs[0].attrs.get("cn").len(), 1);
        assert_eq!(recs[0].attrs.get("userCertificate").len(), 1);
    }

    #[test]
    fn passwords_are_never_kept() {
        let recs = parse("dn: cn=a,dc=x\nuserPassword: {SSHA}abc\ncn: a\n").unwrap();
        assert!(!recs[0].attrs.has("userPassword"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = err("dn: cn=a,dc=x\ncn A\n");
        assert_eq!((e.line, e.file.as_str()), (2, "t.ldif"));
        assert!(e.message.contains("missing `:`"), "{e}");
        assert!(e.to_string().starts_with("t.ldif:2: "));

        let e = err("dn: cn=a,dc=x\n\ncn: a\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("record without dn"), "{e}");

        let e = err("dn: cn=a,dc=x\njpegPhoto:: !!!\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("bad base64"), "{e}");

        let e = err("dn: cn=a,dc=x\ncn: a\n\ndn: CN=A, DC=X\ncn: b\n");
        assert_eq!(e.line, 4);
        assert!(
            e.message.contains("duplicate dn") && e.message.contains("line 1"),
            "{e}"
        );

        let e = err("dn: cn=a,dc=x\njpegPhoto:< file:///etc/passwd\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("URL values"), "{e}");

        let e = err("dn: cn=a,dc=x\nchangetype: modify\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("change records"), "{e}");

        let e = err(" dn: cn=a,dc=x\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("continues the previous line"), "{e}");

        let e = err("version: 2\ndn: cn=a,dc=x\n");
        assert_eq!(e.line, 1);

        let e = err("dn: cn=a,dc=x\ncn: a\n\nversion: 1\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("record without dn"), "{e}");
    }

    #[test]
    fn error_never_quotes_a_value() {
        let e = err("dn: cn=a,dc=x\nuserPassword hunter2\n");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = err("dn: cn=a,dc=x\nuserPassword:: hunter2!\n");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn invalid_utf8_is_an_error_with_line() {
        let bytes = b"dn: cn=a,dc=x\ncn: \xff\n";
        let e = LdifReader::new(&bytes[..], "t.ldif")
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn dn_normalisation() {
        assert_eq!(
            normalize_dn("UID=Ada , OU=People,  DC=Example,DC=com"),
            "uid=ada,ou=people,dc=example,dc=com"
        );
        assert_eq!(normalize_dn("cn=a\\, b,dc=x"), "cn=a\\, b,dc=x");
        assert_eq!(normalize_dn("cn=a\\ ,dc=x"), "cn=a\\ ,dc=x");
        assert!(is_under("uid=a,ou=p,dc=x", "ou=p,dc=x"));
        assert!(!is_under("uid=a,xou=p,dc=x", "ou=p,dc=x"));
    }

    #[test]
    fn guid_and_sid_text_forms() {
        // The first three groups are stored little-endian, the rest in order.
        let bytes = [
            0xd0, 0xf2, 0xc1, 0xa3, 0x6e, 0x7b, 0x21, 0x4f, 0x9c, 0x3d, 0x0e, 0x5a, 0x8b, 0x7c,
            0x6d, 0x41,
        ];
        assert_eq!(
            guid_text(&bytes).unwrap(),
            "a3c1f2d0-7b6e-4f21-9c3d-0e5a8b7c6d41"
        );
        assert_eq!(guid_text(&[1, 2]), None);
        // S-1-5-21-1-2-3-500
        let mut sid = vec![1u8, 5, 0, 0, 0, 0, 0, 5];
        for v in [21u32, 1, 2, 3, 500] {
            sid.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(sid_text(&sid).unwrap(), "S-1-5-21-1-2-3-500");
        assert_eq!(sid_text(&sid[..9]), None);
    }

    #[test]
    fn object_guid_id_from_base64() {
        let recs = parse(
            "dn: CN=Ada,CN=Users,DC=x\nobjectClass: user\nobjectGUID:: 0PLBo257IU+cPQ5ai3xtQQ==\n",
        )
        .unwrap();
        let e = recs
            .into_iter()
            .next()
            .unwrap()
            .into_entry("objectGUID", IdFallback::Error, "t")
            .unwrap();
        assert_eq!(e.id, "a3c1f2d0-7b6e-4f21-9c3d-0e5a8b7c6d41");
        assert_eq!(
            e.attrs.first_text("objectguid").unwrap(),
            "a3c1f2d0-7b6e-4f21-9c3d-0e5a8b7c6d41"
        );
    }

    fn cfg() -> LdifSourceConfig {
        LdifSourceConfig {
            path: "t.ldif".into(),
            users: LdifUsersConfig::default(),
            groups: LdifGroupsConfig::default(),
            id_attribute: default_id_attribute(),
            id_fallback: IdFallback::Dn,
        }
    }

    fn select_text(
        cfg: &LdifSourceConfig,
        text: &str,
    ) -> Result<(Vec<Entry>, Vec<Group>), LdifError> {
        select(cfg, LdifReader::new(text.as_bytes(), "t.ldif"), "t.ldif")
    }

    const DIR: &str = "\
dn: dc=x
objectClass: domain

dn: uid=ada,ou=people,dc=x
objectClass: inetOrgPerson
uid: ada
entryUUID: u-ada
memberOf: cn=outer,ou=groups,dc=x

dn: uid=bob,ou=people,dc=x
objectClass: inetOrgPerson
uid: bob

dn: cn=pc1,ou=people,dc=x
objectClass: user
objectClass: computer
entryUUID: c-1

dn: cn=inner,ou=groups,dc=x
objectClass: groupOfNames
entryUUID: g-inner
member: UID=Bob, OU=People, DC=X
member: uid=ghost,ou=people,dc=x

dn: cn=outer,ou=groups,dc=x
objectClass: groupOfUniqueNames
entryUUID: g-outer
uniqueMember: cn=inner,ou=groups,dc=x#'0101'B

dn: cn=posix,ou=groups,dc=x
objectClass: posixGroup
entryUUID: g-posix
memberUid: ada
";

    #[test]
    fn an_export_cut_short_or_empty_is_an_error_and_nothing_is_read() {
        // Cut in the middle of a record's value: the last line has no line end.
        let cut = "dn: uid=ada,ou=people,dc=x\nobjectClass: inetOrgPerson\ncn: Ad";
        let whole = |t: &str| {
            select(
                &cfg(),
                LdifReader::new(t.as_bytes(), "t.ldif").whole_file(),
                "t.ldif",
            )
        };
        let e = whole(cut).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().contains("cut short"), "{e}");
        // The same text with its line end is a complete (if small) export.
        assert_eq!(whole(&format!("{cut}\n")).unwrap().0.len(), 1);
        // A hand-written entry (mapping test --entry) need not end with a line end.
        assert_eq!(parse_ldif(cut, "t.ldif").unwrap().len(), 1);
        // No entries at all: an empty file, or one with only comments and a version line.
        for empty in ["", "\n", "version: 1\n# nothing\n"] {
            let e = whole(empty).unwrap_err();
            assert!(e.to_string().contains("no entries"), "{empty:?}: {e}");
        }
    }

    #[test]
    fn selection_membership_and_fallback_ids() {
        let (users, groups) = select_text(&cfg(), DIR).unwrap();
        let ids: Vec<_> = users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["u-ada", "uid=bob,ou=people,dc=x"]);
        let by: HashMap<_, _> = groups
            .iter()
            .map(|g| (g.entry.id.as_str(), g.members.clone()))
            .collect();
        assert_eq!(by["g-inner"], vec!["uid=bob,ou=people,dc=x".to_string()]);
        assert_eq!(by["g-outer"], vec!["g-inner".to_string()]);
        // memberUid and memberOf are not in the default membership.
        assert!(by["g-posix"].is_empty());
        assert!(!groups[0].entry.attrs.has("member"));

        let mut c = cfg();
        c.groups.membership = vec![Membership::MemberUid, Membership::MemberOf];
        let (_, groups) = select_text(&c, DIR).unwrap();
        let by: HashMap<_, _> = groups
            .iter()
            .map(|g| (g.entry.id.as_str(), g.members.clone()))
            .collect();
        assert_eq!(by["g-posix"], vec!["u-ada".to_string()]);
        assert_eq!(by["g-outer"], vec!["u-ada".to_string()]);
        assert!(by["g-inner"].is_empty());
    }

    #[test]
    fn base_dn_and_id_fallback_error() {
        let mut c = cfg();
        c.users.base = Some("ou=People, dc=X".into());
        c.groups.object_classes = vec![];
        let (users, groups) = select_text(&c, DIR).unwrap();
        assert_eq!(users.len(), 2);
        assert!(groups.is_empty());
        c.users.base = Some("ou=other,dc=x".into());
        assert!(select_text(&c, DIR).unwrap().0.is_empty());

        let mut c = cfg();
        c.id_fallback = IdFallback::Error;
        let e = select_text(&c, DIR).unwrap_err();
        assert_eq!(e.line, 10);
        assert!(e.message.contains("entryUUID"), "{e}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let text = "dn: uid=a,dc=x\nobjectClass: person\nentryUUID: 1\n\n\
                    dn: uid=b,dc=x\nobjectClass: person\nentryUUID: 1\n";
        let e = select_text(&cfg(), text).unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.message.contains("duplicate id"), "{e}");
    }

    #[test]
    fn validate_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        assert!(c.validate(dir.path()).unwrap_err().contains("source.path"));
        std::fs::write(dir.path().join("t.ldif"), "").unwrap();
        c.validate(dir.path()).unwrap();
        c.users.base = Some("not a dn".into());
        assert!(c
            .validate(dir.path())
            .unwrap_err()
            .contains("source.users.base"));
        let c: LdifSourceConfig =
            toml::from_str("path = \"t.ldif\"\n[groups]\nmembership = [\"memberUid\"]\n").unwrap();
        assert_eq!(c.groups.membership, vec![Membership::MemberUid]);
        assert!(toml::from_str::<LdifSourceConfig>("path = \"a\"\nbogus = 1\n").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn parser_never_panics(input in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::prelude::any::<u8>(),
                proptest::sample::select(b"dn: \n:<#=,;-abcAZ09+/".to_vec()),
            ],
            0..400,
        )) {
            let mut r = LdifReader::new(&input[..], "p.ldif");
            while let Ok(Some(rec)) = r.next_record() {
                let _ = rec.into_entry("entryUUID", IdFallback::Dn, "p.ldif");
            }
            if let Ok(text) = std::str::from_utf8(&input) {
                let _ = parse_ldif(text, "p.ldif");
                let _ = select_text(&cfg(), text);
                let _ = normalize_dn(text);
            }
        }

        #[test]
        fn parser_never_panics_on_text(text in "(dn|cn|version|changetype|#| |\\n|:|::|:<|=|,|[a-zA-Z0-9+/=]{0,6}|é|\\r){0,80}") {
            let _ = parse_ldif(&text, "p.ldif");
            let _ = select_text(&cfg(), &text);
        }
    }
}
