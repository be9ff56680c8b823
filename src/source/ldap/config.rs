//! `[source] kind = "ldap"`: the configuration file shape of the LDAP source, its defaults
//! (many depend on the server flavour) and the checks that need no server.
//!
//! What does not live here: opening connections or reading secrets (see [`super::LdapSource`]).

use crate::config::SecretRef;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[source] kind = "ldap"`: where the directory is, how to bind, what to read.
///
/// ```toml
/// [source]
/// kind = "ldap"
/// url = "ldaps://ldap.example.com"
/// bind_dn = "uid=ironbridge,ou=system,dc=example,dc=com"
/// bind_password = { env = "LDAP_PASSWORD" }
/// flavour = "openldap"
///
/// [source.users]
/// base_dn = "ou=people,dc=example,dc=com"
/// filter = "(objectClass=inetOrgPerson)"
///
/// [source.groups]
/// base_dn = "ou=groups,dc=example,dc=com"
/// membership = "member"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSourceConfig {
    /// Server URL, `ldap://host[:port]` (default port 389) or `ldaps://host[:port]` (636).
    /// Required.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding. Default `false`.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of CA certificates to trust in addition to the system store (relative paths are
    /// resolved against the configuration file's directory). Default: none.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. Explicit opt-in for lab setups only: it is logged as a
    /// warning on every run, because anyone on the path could read the bind password.
    /// Default `false`.
    #[serde(default)]
    pub tls_insecure_skip_verify: bool,
    /// DN to bind as (Active Directory also accepts `user@REALM`). Default: none; then
    /// `anonymous = true` is required.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// The bind password: `{ env = "VAR" }` or `{ file = "path" }`, read when the source is
    /// opened and never logged. Required with `bind_dn`.
    #[serde(default)]
    pub bind_password: Option<SecretRef>,
    /// Bind anonymously. Must be said explicitly, because an anonymous read that the server's
    /// access rules quietly narrow looks like an empty directory. Default `false`.
    #[serde(default)]
    pub anonymous: bool,
    /// The server kind, which picks defaults: the stable id attribute, the default filters and
    /// the reference handling. `openldap` (default), `389`, `freeipa` or `active_directory`.
    #[serde(default)]
    pub flavour: Flavour,
    /// Attribute holding each entry's stable id. Default by flavour: `entryUUID` (OpenLDAP),
    /// `nsUniqueId` (389), `ipaUniqueID` (FreeIPA), `objectGUID` (Active Directory, rendered
    /// in GUID text form).
    #[serde(default)]
    pub id_attribute: Option<String>,
    /// Where people are. Required. (Boxed, like `groups`, to keep the configuration enum
    /// small.)
    pub users: Box<UsersConfig>,
    /// Where groups are. Default: none (no groups are read).
    #[serde(default)]
    pub groups: Option<Box<GroupsConfig>>,
    /// Entries per page of a Simple Paged Results (RFC 2696) search. Default 500; Active
    /// Directory caps pages at 1000 (MaxPageSize), so at most 1000 there.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Time limit in seconds for each search request (sent to the server); the client also
    /// gives up on a server that sends nothing for this long plus a quarter (at least 2 s),
    /// and treats that as a dropped connection. Default 120.
    #[serde(default = "default_time_limit")]
    pub time_limit_secs: u32,
    /// Seconds to wait for the TCP connection and TLS handshake. Default 10.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// How many times the whole read restarts on a new connection after the connection
    /// drops (or the server stops answering) mid-read. Default 3, at most 10.
    #[serde(default = "default_max_reconnects")]
    pub max_reconnects: u32,
    /// Active Directory only: compute each group's members with the in-chain matching rule
    /// `1.2.840.113556.1.4.1941`, so users in nested groups outside the groups search are
    /// included. One extra search per group. Default `false`.
    #[serde(default)]
    pub ad_in_chain: bool,
    /// Read membership attributes in explicit ranges of this many values
    /// (`member;range=0-999`, then `member;range=1000-1999`, ...). Default: unset, so the
    /// server decides (Active Directory sends 1500 values at a time and marks the rest as
    /// ranges, which are always followed).
    #[serde(default)]
    pub member_range_size: Option<u32>,
    /// What to do with search continuation references (parts of the tree held elsewhere):
    /// `fail` or `ignore`. Default: `ignore` for Active Directory, whose domain root always
    /// refers to its Configuration and DNS partitions, `fail` for the others. Referral
    /// results (the base DN itself is elsewhere) always fail.
    #[serde(default)]
    pub continuation_references: Option<ReferencePolicy>,
}

/// The LDAP server kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Flavour {
    /// OpenLDAP: id `entryUUID`.
    #[default]
    #[serde(rename = "openldap")]
    OpenLdap,
    /// 389 Directory Server: id `nsUniqueId`.
    #[serde(rename = "389")]
    Ds389,
    /// FreeIPA: id `ipaUniqueID`.
    #[serde(rename = "freeipa")]
    FreeIpa,
    /// Microsoft Active Directory (or Samba AD): id `objectGUID`.
    #[serde(rename = "active_directory")]
    ActiveDirectory,
}

impl Flavour {
    /// The default stable id attribute.
    pub fn id_attribute(self) -> &'static str {
        match self {
            Flavour::OpenLdap => "entryUUID",
            Flavour::Ds389 => "nsUniqueId",
            Flavour::FreeIpa => "ipaUniqueID",
            Flavour::ActiveDirectory => "objectGUID",
        }
    }
    /// The default users filter.
    pub fn users_filter(self) -> &'static str {
        match self {
            Flavour::ActiveDirectory => "(&(objectCategory=person)(objectClass=user))",
            Flavour::FreeIpa => "(objectClass=person)",
            Flavour::OpenLdap | Flavour::Ds389 => "(objectClass=inetOrgPerson)",
        }
    }
    /// The default groups filter.
    pub fn groups_filter(self) -> &'static str {
        match self {
            Flavour::ActiveDirectory => "(objectClass=group)",
            Flavour::FreeIpa => "(objectClass=groupOfNames)",
            Flavour::OpenLdap | Flavour::Ds389 => {
                "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))"
            }
        }
    }
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::OpenLdap => "openldap",
            Flavour::Ds389 => "389",
            Flavour::FreeIpa => "freeipa",
            Flavour::ActiveDirectory => "active_directory",
        }
    }
}

/// Search scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeConfig {
    /// The base entry only.
    Base,
    /// The entries directly below the base.
    One,
    /// The base and everything below it.
    #[default]
    Sub,
}

impl ScopeConfig {
    pub(crate) fn to_ldap(self) -> ldap3::Scope {
        match self {
            ScopeConfig::Base => ldap3::Scope::Base,
            ScopeConfig::One => ldap3::Scope::OneLevel,
            ScopeConfig::Sub => ldap3::Scope::Subtree,
        }
    }
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeConfig::Base => "base",
            ScopeConfig::One => "one",
            ScopeConfig::Sub => "sub",
        }
    }
}

/// How group membership is recorded in the directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Membership {
    /// Groups list member DNs in `member` (groupOfNames, AD groups).
    #[default]
    #[serde(rename = "member")]
    Member,
    /// Groups list member DNs in `uniqueMember` (groupOfUniqueNames).
    #[serde(rename = "uniqueMember")]
    UniqueMember,
    /// Groups list member `uid`s in `memberUid` (RFC 2307 posixGroup).
    #[serde(rename = "memberUid")]
    MemberUid,
    /// Users (and nested groups) list their groups' DNs in `memberOf`.
    #[serde(rename = "memberOf")]
    MemberOf,
}

impl Membership {
    /// The attribute read.
    pub fn attribute(self) -> &'static str {
        match self {
            Membership::Member => "member",
            Membership::UniqueMember => "uniqueMember",
            Membership::MemberUid => "memberUid",
            Membership::MemberOf => "memberOf",
        }
    }
}

/// What to do with search continuation references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferencePolicy {
    /// Fail the read: part of the tree is elsewhere.
    Fail,
    /// Ignore them (logged at debug level).
    Ignore,
}

/// `[source.users]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersConfig {
    /// Where the search starts. Required.
    pub base_dn: String,
    /// `base`, `one` or `sub`. Default `sub`.
    #[serde(default)]
    pub scope: ScopeConfig,
    /// RFC 4515 filter. Default by flavour: `(objectClass=inetOrgPerson)` (OpenLDAP, 389),
    /// `(objectClass=person)` (FreeIPA), `(&(objectCategory=person)(objectClass=user))`
    /// (Active Directory).
    #[serde(default)]
    pub filter: Option<String>,
    /// Attributes to read. Default `["*"]` (all user attributes). The id attribute and what
    /// membership needs (`memberOf`, `uid`) are always added.
    #[serde(default)]
    pub attributes: Vec<String>,
}

/// `[source.groups]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    /// Where the search starts. Required.
    pub base_dn: String,
    /// `base`, `one` or `sub`. Default `sub`.
    #[serde(default)]
    pub scope: ScopeConfig,
    /// RFC 4515 filter. Default by flavour:
    /// `(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))` (OpenLDAP, 389),
    /// `(objectClass=groupOfNames)` (FreeIPA), `(objectClass=group)` (Active Directory).
    #[serde(default)]
    pub filter: Option<String>,
    /// Attributes to read. Default `["*"]`. The id attribute and the membership attribute
    /// are always added.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Where membership is recorded: `member` (default), `uniqueMember`, `memberUid` or
    /// `memberOf`.
    #[serde(default)]
    pub membership: Membership,
}

fn default_page_size() -> u32 {
    500
}
fn default_time_limit() -> u32 {
    120
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_max_reconnects() -> u32 {
    3
}

/// Most Active Directory domain controllers refuse pages larger than this (MaxPageSize).
pub const AD_MAX_PAGE_SIZE: u32 = 1000;

impl LdapSourceConfig {
    /// The stable id attribute in effect.
    pub fn id_attribute(&self) -> &str {
        self.id_attribute
            .as_deref()
            .unwrap_or(self.flavour.id_attribute())
    }

    /// The users filter in effect.
    pub fn users_filter(&self) -> &str {
        self.users
            .filter
            .as_deref()
            .unwrap_or(self.flavour.users_filter())
    }

    /// The groups filter in effect (when groups are configured).
    pub fn groups_filter(&self) -> Option<&str> {
        self.groups
            .as_ref()
            .map(|g| g.filter.as_deref().unwrap_or(self.flavour.groups_filter()))
    }

    /// The continuation reference policy in effect.
    pub fn reference_policy(&self) -> ReferencePolicy {
        self.continuation_references.unwrap_or(match self.flavour {
            Flavour::ActiveDirectory => ReferencePolicy::Ignore,
            _ => ReferencePolicy::Fail,
        })
    }

    /// Whether TLS is used (ldaps or StartTLS).
    pub fn uses_tls(&self) -> bool {
        self.starttls || self.url.to_ascii_lowercase().starts_with("ldaps://")
    }

    /// Checks the configuration without connecting or reading secrets. `base` is the
    /// configuration file's directory. The message starts with the key at fault.
    pub fn validate(&self, base: &Path) -> Result<(), String> {
        let url = url::Url::parse(&self.url).map_err(|e| {
            format!(
                "url: {:?} is not a URL ({e}); write ldap://host or ldaps://host",
                self.url
            )
        })?;
        match url.scheme() {
            "ldap" | "ldaps" => {}
            other => {
                return Err(format!(
                    "url: scheme {other:?} is not supported; use ldap:// or ldaps://"
                ))
            }
        }
        if url.host_str().unwrap_or("").is_empty() {
            return Err("url: no host; write ldap://host or ldaps://host".into());
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(format!(
                "url: {:?} has a path; put the base DN in users.base_dn / groups.base_dn instead",
                self.url
            ));
        }
        if self.starttls && url.scheme() == "ldaps" {
            return Err("starttls: ldaps:// is already TLS; use ldap:// with starttls = true, or ldaps:// without it".into());
        }
        if self.tls_insecure_skip_verify && self.ca_file.is_some() {
            return Err("tls_insecure_skip_verify: cannot be combined with ca_file (one trusts a CA, the other trusts anything); remove one".into());
        }
        if !self.uses_tls() && (self.ca_file.is_some() || self.tls_insecure_skip_verify) {
            let key = if self.ca_file.is_some() {
                "ca_file"
            } else {
                "tls_insecure_skip_verify"
            };
            return Err(format!(
                "{key}: has no effect on a plain ldap:// connection; use ldaps:// or starttls = true"
            ));
        }
        if let Some(ca) = &self.ca_file {
            let path = if ca.is_absolute() {
                ca.clone()
            } else {
                base.join(ca)
            };
            if !path.is_file() {
                return Err(format!("ca_file: {} does not exist", path.display()));
            }
        }
        match (&self.bind_dn, &self.bind_password, self.anonymous) {
            (Some(dn), Some(pw), false) => {
                if dn.trim().is_empty() {
                    return Err("bind_dn: is empty".into());
                }
                pw.check_available()
                    .map_err(|e| format!("bind_password: {e}"))?;
            }
            (None, None, true) => {}
            (Some(_), None, false) => return Err(
                "bind_password: required with bind_dn, as { env = \"VAR\" } or { file = \"path\" }"
                    .into(),
            ),
            (None, Some(_), false) => return Err("bind_dn: required with bind_password".into()),
            (None, None, false) => return Err(
                "bind_dn: give bind_dn and bind_password, or anonymous = true to bind anonymously"
                    .into(),
            ),
            (_, _, true) => {
                return Err("anonymous: cannot be combined with bind_dn / bind_password".into())
            }
        }
        if self.id_attribute().trim().is_empty() {
            return Err("id_attribute: is empty".into());
        }
        check_search(
            "users",
            &self.users.base_dn,
            self.users_filter(),
            &self.users.attributes,
        )?;
        if let Some(g) = &self.groups {
            check_search(
                "groups",
                &g.base_dn,
                self.groups_filter().unwrap_or_default(),
                &g.attributes,
            )?;
        }
        if self.page_size == 0 {
            return Err("page_size: must be at least 1".into());
        }
        if self.flavour == Flavour::ActiveDirectory && self.page_size > AD_MAX_PAGE_SIZE {
            return Err(format!(
                "page_size: {} is above Active Directory's MaxPageSize of {AD_MAX_PAGE_SIZE}; use at most {AD_MAX_PAGE_SIZE}",
                self.page_size
            ));
        }
        if self.time_limit_secs == 0 {
            return Err("time_limit_secs: must be at least 1".into());
        }
        if self.connect_timeout_secs == 0 {
            return Err("connect_timeout_secs: must be at least 1".into());
        }
        if self.max_reconnects > 10 {
            return Err("max_reconnects: at most 10".into());
        }
        if self.member_range_size == Some(0) {
            return Err("member_range_size: must be at least 1".into());
        }
        if self.ad_in_chain {
            if self.flavour != Flavour::ActiveDirectory {
                return Err("ad_in_chain: only Active Directory supports the in-chain matching rule; set flavour = \"active_directory\" or remove ad_in_chain".into());
            }
            match &self.groups {
                Some(g) if g.membership == Membership::Member => {}
                Some(_) => {
                    return Err(
                        "ad_in_chain: needs groups.membership = \"member\" (the default)".into(),
                    )
                }
                None => return Err("ad_in_chain: needs a [source.groups] section".into()),
            }
        }
        Ok(())
    }
}

fn check_search(
    key: &str,
    base_dn: &str,
    filter: &str,
    attributes: &[String],
) -> Result<(), String> {
    if base_dn.trim().is_empty() {
        return Err(format!("{key}.base_dn: is empty"));
    }
    if ldap3::parse_filter(filter).is_err() {
        return Err(format!(
            "{key}.filter: {filter:?} is not a valid LDAP filter (RFC 4515: parenthesised, e.g. \"(objectClass=person)\")"
        ));
    }
    if let Some(a) = attributes
        .iter()
        .find(|a| a.trim().is_empty() || a.contains(' '))
    {
        return Err(format!("{key}.attributes: {a:?} is not an attribute name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> LdapSourceConfig {
        toml::from_str(text).unwrap()
    }

    const MIN: &str = r#"
url = "ldap://127.0.0.1:389"
bind_dn = "cn=r,dc=x"
bind_password = { file = "pw" }
[users]
base_dn = "ou=people,dc=x"
"#;

    #[test]
    fn defaults_follow_the_flavour() {
        let c = parse(MIN);
        assert_eq!(c.page_size, 500);
        assert_eq!(c.id_attribute(), "entryUUID");
        assert_eq!(c.users.scope, ScopeConfig::Sub);
        assert_eq!(c.reference_policy(), ReferencePolicy::Fail);
        c.validate(Path::new(".")).unwrap();
        let ad = parse(&format!("flavour = \"active_directory\"\n{MIN}"));
        assert_eq!(ad.id_attribute(), "objectGUID");
        assert_eq!(ad.reference_policy(), ReferencePolicy::Ignore);
        let ds = parse(&format!("flavour = \"389\"\n{MIN}"));
        assert_eq!(ds.id_attribute(), "nsUniqueId");
        let ipa = parse(&format!("flavour = \"freeipa\"\n{MIN}"));
        assert_eq!(ipa.id_attribute(), "ipaUniqueID");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<LdapSourceConfig, _> = toml::from_str(&format!("pagesize = 3\n{MIN}"));
        assert!(r.unwrap_err().to_string().contains("pagesize"));
    }

    #[test]
    fn ad_page_size_is_capped() {
        let c = parse(&format!(
            "flavour = \"active_directory\"\npage_size = 2000\n{MIN}"
        ));
        assert!(c
            .validate(Path::new("."))
            .unwrap_err()
            .starts_with("page_size"));
    }

    #[test]
    fn anonymous_must_be_explicit() {
        let c = parse("url = \"ldap://h\"\n[users]\nbase_dn = \"dc=x\"\n");
        assert!(c
            .validate(Path::new("."))
            .unwrap_err()
            .starts_with("bind_dn"));
        let c = parse("url = \"ldap://h\"\nanonymous = true\n[users]\nbase_dn = \"dc=x\"\n");
        c.validate(Path::new(".")).unwrap();
    }

    #[test]
    fn bad_filter_and_url_are_named() {
        let c = parse(&format!("{MIN}filter = \"(uid=*\"\n"));
        let e = c.validate(Path::new(".")).unwrap_err();
        assert!(e.starts_with("users.filter") && e.contains("(uid=*"), "{e}");
        let c = parse(&MIN.replace("ldap://127.0.0.1:389", "http://h"));
        assert!(c.validate(Path::new(".")).unwrap_err().starts_with("url"));
        let c = parse(&format!(
            "starttls = true\n{}",
            MIN.replace("ldap://", "ldaps://")
        ));
        assert!(c
            .validate(Path::new("."))
            .unwrap_err()
            .starts_with("starttls"));
    }

    #[test]
    fn in_chain_needs_ad_and_member() {
        let c = parse(&format!(
            "ad_in_chain = true\n{MIN}[groups]\nbase_dn = \"dc=x\"\n"
        ));
        assert!(c
            .validate(Path::new("."))
            .unwrap_err()
            .starts_with("ad_in_chain"));
        let c = parse(&format!(
            "ad_in_chain = true\nflavour = \"active_directory\"\n{MIN}[groups]\nbase_dn = \"dc=x\"\n"
        ));
        c.validate(Path::new(".")).unwrap();
    }
}
