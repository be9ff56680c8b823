//! [`LdapError`]: every way an LDAP read or check can fail, with the context an operator needs
//! (URL, bind DN, base DN, filter, which search) and never the bind password. Also the
//! translation of LDAP result codes and TLS errors into it.
//!
//! What does not live here: deciding whether to reconnect (see `super::read`), which only asks
//! [`LdapError::is_transient`].

use crate::config::SecretError;
use std::fmt;

/// Which of the source's searches an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    /// The users search (`[source.users]`).
    Users,
    /// The groups search (`[source.groups]`).
    Groups,
    /// A follow-up read of one group's ranged membership attribute.
    MemberRange,
    /// A follow-up in-chain (`1.2.840.113556.1.4.1941`) search for one group's members.
    InChain,
}

impl fmt::Display for SearchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SearchKind::Users => "users search",
            SearchKind::Groups => "groups search",
            SearchKind::MemberRange => "membership range read",
            SearchKind::InChain => "in-chain membership search",
        })
    }
}

/// Why an LDAP read or check failed. No partial snapshot ever accompanies it. Messages never
/// contain the bind password.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// The bind password could not be read from its environment variable or file.
    #[error("bind_password: {0}")]
    Secret(#[from] SecretError),

    /// The configured CA file could not be read or holds no certificate.
    #[error("ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The configuration is not usable (normally caught earlier by `validate`).
    #[error("invalid LDAP source configuration: {0}")]
    Config(String),

    /// No TCP connection could be made.
    #[error("cannot reach LDAP server {url}: {reason}")]
    Unreachable {
        /// The server URL.
        url: String,
        /// The operating system's reason, or the timeout.
        reason: String,
    },

    /// The TLS handshake (ldaps or StartTLS) failed.
    #[error("TLS with {url} failed: {reason}")]
    Tls {
        /// The server URL.
        url: String,
        /// Why, in words (untrusted certificate, name mismatch, StartTLS refused...).
        reason: String,
    },

    /// The server rejected the bind DN and password (result code 49).
    #[error("bind as {bind_dn} to {url} failed: invalid credentials (LDAP result 49){detail}")]
    InvalidCredentials {
        /// The server URL.
        url: String,
        /// Who we tried to bind as.
        bind_dn: String,
        /// Active Directory's sub-code explained (`data 52e` ...), or empty.
        detail: String,
    },

    /// The server refused the bind for another reason (anonymous binds disallowed, TLS
    /// required, ...).
    #[error("bind as {who} to {url} refused: LDAP result {rc} ({rc_name}){text}{hint}")]
    BindRefused {
        /// The server URL.
        url: String,
        /// The bind DN, or `anonymous`.
        who: String,
        /// The LDAP result code.
        rc: u32,
        /// The result code's name.
        rc_name: &'static str,
        /// The server's diagnostic message, prefixed with `: `, or empty.
        text: String,
        /// What to do about it, prefixed with `; `, or empty.
        hint: String,
    },

    /// A base DN does not exist on the server (result code 32).
    #[error("{search}: base DN {base_dn:?} does not exist on {url} (LDAP result 32 noSuchObject{matched})")]
    NoSuchBase {
        /// The server URL.
        url: String,
        /// Which search.
        search: SearchKind,
        /// The configured base DN.
        base_dn: String,
        /// `; the closest existing entry is ...`, or empty.
        matched: String,
    },

    /// A filter is not valid LDAP filter syntax (client-side parse or server result 87).
    #[error("{search}: filter {filter:?} is not a valid LDAP filter (RFC 4515){reason}")]
    FilterSyntax {
        /// Which search.
        search: SearchKind,
        /// The filter as sent.
        filter: String,
        /// The server's message, prefixed with `: `, or empty.
        reason: String,
    },

    /// The server stopped the search at its size limit (result code 4): the result is
    /// incomplete: the whole read is discarded, unless a partial read was asked for.
    #[error("{search} under {base_dn:?}: the server's size limit was exceeded after {entries} entries (LDAP result 4); the read is incomplete. Raise the server's limit for the bind DN (OpenLDAP olcLimits/olcSizeLimit, AD MaxPageSize) or narrow the filter")]
    SizeLimit {
        /// Which search.
        search: SearchKind,
        /// The base DN searched.
        base_dn: String,
        /// Entries received before the server stopped.
        entries: usize,
    },

    /// The server stopped the search at its time limit (result code 3).
    #[error("{search} under {base_dn:?}: the time limit was exceeded (LDAP result 3, time_limit_secs = {limit_secs}); the read is incomplete")]
    TimeLimit {
        /// Which search.
        search: SearchKind,
        /// The base DN searched.
        base_dn: String,
        /// The configured per-request limit.
        limit_secs: u32,
    },

    /// The server answered with a referral (result code 10) or a continuation reference that
    /// the configuration does not allow ignoring: part of the data lives elsewhere.
    #[error("{search} under {base_dn:?}: the server returned referral(s) to {referrals:?}; referrals are not followed, so the read would be incomplete. Point base_dn at the server holding the entries{hint}")]
    Referral {
        /// Which search.
        search: SearchKind,
        /// The base DN searched.
        base_dn: String,
        /// The referral URLs.
        referrals: Vec<String>,
        /// A hint (`continuation_references = "ignore"`), or empty.
        hint: String,
    },

    /// The server refused the search (insufficient access, authentication required, ...).
    #[error("{search} under {base_dn:?} refused: LDAP result {rc} ({rc_name}){text}{hint}")]
    AccessRefused {
        /// Which search.
        search: SearchKind,
        /// The base DN searched.
        base_dn: String,
        /// The LDAP result code.
        rc: u32,
        /// The result code's name.
        rc_name: &'static str,
        /// The server's diagnostic message, prefixed with `: `, or empty.
        text: String,
        /// What to do about it, prefixed with `; `, or empty.
        hint: String,
    },

    /// Any other unsuccessful search result.
    #[error("{search} under {base_dn:?} failed: LDAP result {rc} ({rc_name}){text}")]
    SearchFailed {
        /// Which search.
        search: SearchKind,
        /// The base DN searched.
        base_dn: String,
        /// The LDAP result code.
        rc: u32,
        /// The result code's name.
        rc_name: &'static str,
        /// The server's diagnostic message, prefixed with `: `, or empty.
        text: String,
    },

    /// An entry lacks the stable id attribute, so it could not be tracked across runs.
    #[error("{search}: entry {dn:?} has no {attribute} value (the stable id attribute); set id_attribute or check that the bind DN may read it")]
    MissingId {
        /// Which search.
        search: SearchKind,
        /// The entry.
        dn: String,
        /// The id attribute.
        attribute: String,
    },

    /// Two entries carry the same stable id.
    #[error("entries {first:?} and {second:?} have the same {attribute} {id:?}; the stable id must be unique")]
    DuplicateId {
        /// The id attribute.
        attribute: String,
        /// The id.
        id: String,
        /// The first entry's DN.
        first: String,
        /// The second entry's DN.
        second: String,
    },

    /// The server sent something this client cannot interpret.
    #[error("malformed response from {url}: {reason}")]
    Protocol {
        /// The server URL.
        url: String,
        /// What was wrong.
        reason: String,
    },

    /// The connection dropped (or the server stopped answering) and the bounded reconnects
    /// did not produce a complete read.
    #[error("connection to {url} dropped during the read and {reconnects} reconnect(s) did not complete it: {reason}; no snapshot was produced")]
    ConnectionDropped {
        /// The server URL.
        url: String,
        /// How many times the whole read was restarted.
        reconnects: u32,
        /// The last failure.
        reason: String,
    },

    /// A transient failure inside one read attempt; the reader turns it into a restart or,
    /// when reconnects are exhausted, into [`LdapError::ConnectionDropped`].
    #[error("connection to {url} lost: {reason}")]
    Transient {
        /// The server URL.
        url: String,
        /// What happened.
        reason: String,
    },
}

impl LdapError {
    /// Whether restarting the read on a new connection may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, LdapError::Transient { .. })
    }
}

/// The conventional name of an LDAP result code (RFC 4511 and common extensions).
pub fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        14 => "saslBindInProgress",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        87 => "filterError",
        _ => "unknown result code",
    }
}

/// Explains Active Directory's `data XXX` sub-code in a result-49 diagnostic message.
pub fn ad_bind_detail(text: &str) -> String {
    let Some(pos) = text.find("data ") else {
        return String::new();
    };
    let code: String = text[pos + 5..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    let meaning = match code.to_ascii_lowercase().as_str() {
        "525" => "user not found",
        "52e" => "invalid credentials: the account exists but the password is wrong",
        "530" => "not permitted to log on at this time",
        "531" => "not permitted to log on at this workstation",
        "532" => "password expired",
        "533" => "account disabled",
        "568" => "too many security IDs in the token",
        "701" => "account expired",
        "773" => "the user must reset the password",
        "775" => "account locked out",
        _ => "",
    };
    if meaning.is_empty() {
        format!("; server says: {}", text.trim())
    } else {
        format!("; Active Directory sub-code data {code}: {meaning}")
    }
}

/// `: text` for a non-empty server message, or empty.
pub(crate) fn colon_text(text: &str) -> String {
    let t = text.trim().trim_end_matches('\0');
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

/// Describes a rustls error in words an operator can act on.
pub(crate) fn describe_tls(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "the server certificate is not trusted (unknown issuer): add the CA that signed it with ca_file".to_string(),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!("the server certificate does not match the host name in url ({c:?})"),
            C::Expired | C::ExpiredContext { .. } => "the server certificate has expired".to_string(),
            C::NotValidYet | C::NotValidYetContext { .. } => "the server certificate is not valid yet".to_string(),
            C::Revoked => "the server certificate is revoked".to_string(),
            C::BadSignature => "the server certificate has a bad signature".to_string(),
            other => format!("invalid server certificate: {other:?}"),
        },
        rustls::Error::AlertReceived(a) => format!("the server sent TLS alert {a:?}"),
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".to_string(),
        other => other.to_string(),
    }
}

/// Finds a rustls error inside an I/O error (tokio-rustls wraps handshake failures this way).
pub(crate) fn rustls_in_io(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_data_codes_are_explained() {
        let t = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1";
        assert!(ad_bind_detail(t).contains("52e: invalid credentials"));
        assert!(ad_bind_detail("data 775, v").contains("locked out"));
        assert_eq!(ad_bind_detail("nothing"), "");
    }

    #[test]
    fn messages_name_the_context() {
        let e = LdapError::NoSuchBase {
            url: "ldap://h".into(),
            search: SearchKind::Users,
            base_dn: "ou=nope,dc=x".into(),
            matched: String::new(),
        };
        assert!(e.to_string().contains("ou=nope,dc=x"));
        assert!(e.to_string().contains("users search"));
        let e = LdapError::FilterSyntax {
            search: SearchKind::Groups,
            filter: "(cn=*".into(),
            reason: String::new(),
        };
        assert!(e.to_string().contains("(cn=*"));
        assert!(e.to_string().contains("groups search"));
    }
}
