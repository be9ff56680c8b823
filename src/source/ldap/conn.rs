//! One LDAP connection: TCP, TLS (ldaps or StartTLS, extra CA, explicit no-verify), the
//! simple or anonymous bind, and the paged search loop (RFC 2696) that hands entries one by
//! one to the caller and turns every unsuccessful outcome into an [`LdapError`].
//!
//! What does not live here: what is searched for and what the entries become (see
//! `super::read`), or the decision to reconnect.

use super::config::ReferencePolicy;
use super::entry::{parse_entry, RawEntry};
use super::error::{
    ad_bind_detail, colon_text, describe_tls, rc_name, rustls_in_io, LdapError, SearchKind,
};
use crate::config::Secret;
use ldap3::controls::{PagedResults, RawControl};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the connection is secured.
#[derive(Clone)]
pub(crate) enum Tls {
    /// Plain LDAP.
    None,
    /// TLS with certificate verification; `Some` carries a configuration that trusts an
    /// extra CA file as well as the system store.
    Verify(Option<Arc<rustls::ClientConfig>>),
    /// TLS without certificate verification (explicit opt-in).
    Insecure,
}

/// Who to bind as.
#[derive(Clone)]
pub(crate) enum Bind {
    /// An anonymous simple bind.
    Anonymous,
    /// A simple bind with a DN and password.
    Simple {
        /// The bind DN (or AD UPN).
        dn: String,
        /// The password, exposed only in the bind request.
        password: Secret,
    },
}

impl Bind {
    pub(crate) fn who(&self) -> String {
        match self {
            Bind::Anonymous => "anonymous".to_string(),
            Bind::Simple { dn, .. } => dn.clone(),
        }
    }
}

/// Everything needed to open a bound connection.
#[derive(Clone)]
pub(crate) struct Settings {
    pub url: String,
    pub starttls: bool,
    pub tls: Tls,
    pub connect_timeout: Duration,
    pub bind: Bind,
    pub page_size: u32,
    pub time_limit_secs: u32,
    pub references: ReferencePolicy,
}

impl Settings {
    /// How long the client waits for the next message from the server: the server-side
    /// time limit plus a quarter of it (at least 2 s) for the network.
    fn response_timeout(&self) -> Duration {
        let t = u64::from(self.time_limit_secs);
        Duration::from_secs(t + (t / 4).max(2))
    }
}

/// A bound connection. The driver task ends when the last handle is dropped.
pub(crate) struct Conn {
    ldap: Ldap,
    settings: Settings,
    /// Why the connection driver stopped, if it did: a std mutex because it is only touched
    /// briefly, never across an await.
    dropped: Arc<Mutex<Option<String>>>,
}

/// One search: what to ask and how to report about it.
pub(crate) struct Search<'a> {
    pub kind: SearchKind,
    pub base: &'a str,
    pub scope: Scope,
    pub filter: &'a str,
    pub attrs: &'a [String],
    /// Use the paged results control.
    pub paged: bool,
}

/// Opens and binds. `first` says whether this is the first attempt of a read: later
/// attempts report connection failures as transient so the reader keeps its bounded retries.
pub(crate) async fn open(settings: &Settings, first: bool) -> Result<Conn, LdapError> {
    let mut ls = LdapConnSettings::new().set_conn_timeout(settings.connect_timeout);
    match &settings.tls {
        Tls::None => {}
        Tls::Verify(config) => {
            ls = ls.set_starttls(settings.starttls);
            if let Some(c) = config {
                ls = ls.set_config(c.clone());
            }
        }
        Tls::Insecure => {
            ls = ls.set_starttls(settings.starttls).set_no_tls_verify(true);
        }
    }
    let url = settings.url.clone();
    let tls_on = !matches!(settings.tls, Tls::None);
    let (conn, mut ldap) = match LdapConnAsync::with_settings(ls, &url).await {
        Ok(pair) => pair,
        Err(e) => {
            let err = connect_error(e, settings, tls_on);
            if !first && matches!(err, LdapError::Unreachable { .. }) {
                return Err(LdapError::Transient {
                    url,
                    reason: err.to_string(),
                });
            }
            return Err(err);
        }
    };
    let dropped = Arc::new(Mutex::new(None));
    let flag = dropped.clone();
    tokio::spawn(async move {
        let reason = match conn.drive().await {
            Ok(()) => "the server closed the connection".to_string(),
            Err(e) => format!("connection error: {e}"),
        };
        if let Ok(mut g) = flag.lock() {
            *g = Some(reason);
        }
    });
    let mut c = Conn {
        ldap: ldap.clone(),
        settings: settings.clone(),
        dropped,
    };
    let (dn, pw) = match &settings.bind {
        Bind::Anonymous => ("", ""),
        Bind::Simple { dn, password } => (dn.as_str(), password.expose()),
    };
    let res = ldap
        .with_timeout(settings.response_timeout())
        .simple_bind(dn, pw)
        .await
        .map_err(|e| c.transport_error(e))?;
    if res.rc != 0 {
        return Err(bind_error(settings, res.rc, &res.text));
    }
    c.ldap = ldap;
    Ok(c)
}

fn connect_error(e: ldap3::LdapError, settings: &Settings, tls_on: bool) -> LdapError {
    let url = settings.url.clone();
    match e {
        ldap3::LdapError::Timeout { .. } => LdapError::Unreachable {
            url,
            reason: format!(
                "no connection within {} s (connect_timeout_secs)",
                settings.connect_timeout.as_secs()
            ),
        },
        ldap3::LdapError::Io { source } => {
            if let Some(t) = rustls_in_io(&source) {
                LdapError::Tls {
                    url,
                    reason: describe_tls(t),
                }
            } else if tls_on
                && matches!(
                    source.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::InvalidData
                )
            {
                LdapError::Tls {
                    url,
                    reason: format!("handshake failed: {source}"),
                }
            } else {
                LdapError::Unreachable {
                    url,
                    reason: source.to_string(),
                }
            }
        }
        ldap3::LdapError::Rustls { source } => LdapError::Tls {
            url,
            reason: describe_tls(&source),
        },
        ldap3::LdapError::DNSName { source } => LdapError::Tls {
            url,
            reason: format!("the host name is not valid for TLS: {source}"),
        },
        ldap3::LdapError::LdapResult { result } if settings.starttls => LdapError::Tls {
            url,
            reason: format!(
                "the server refused StartTLS: LDAP result {} ({}){}",
                result.rc,
                rc_name(result.rc),
                colon_text(&result.text)
            ),
        },
        ldap3::LdapError::UrlParsing { source } => {
            LdapError::Config(format!("url {url:?}: {source}"))
        }
        other => LdapError::Unreachable {
            url,
            reason: other.to_string(),
        },
    }
}

fn bind_error(settings: &Settings, rc: u32, text: &str) -> LdapError {
    let url = settings.url.clone();
    let who = settings.bind.who();
    if rc == 49 {
        return LdapError::InvalidCredentials {
            url,
            bind_dn: who,
            detail: ad_bind_detail(text),
        };
    }
    let hint = match (rc, &settings.bind) {
        (8 | 13, _) => {
            "; the server requires a secured connection: use ldaps:// or starttls = true"
                .to_string()
        }
        (48 | 53 | 50, Bind::Anonymous) => {
            "; the server does not accept anonymous binds: set bind_dn and bind_password"
                .to_string()
        }
        _ => String::new(),
    };
    LdapError::BindRefused {
        url,
        who,
        rc,
        rc_name: rc_name(rc),
        text: colon_text(text),
        hint,
    }
}

impl Conn {
    /// The server URL.
    pub(crate) fn url(&self) -> &str {
        &self.settings.url
    }

    /// Turns a transport-level `ldap3` error into a transient error (or a filter error).
    fn transport_error(&self, e: ldap3::LdapError) -> LdapError {
        let url = self.settings.url.clone();
        let dropped = self.dropped.lock().ok().and_then(|g| g.clone());
        match e {
            ldap3::LdapError::Timeout { .. } => LdapError::Transient {
                url,
                reason: format!(
                    "no answer from the server within {} s",
                    self.settings.response_timeout().as_secs()
                ),
            },
            ldap3::LdapError::Io { source } => LdapError::Transient {
                url,
                reason: source.to_string(),
            },
            ldap3::LdapError::EndOfStream
            | ldap3::LdapError::ResultRecv { .. }
            | ldap3::LdapError::OpSend { .. }
            | ldap3::LdapError::IdScrubSend { .. }
            | ldap3::LdapError::MiscSend { .. } => LdapError::Transient {
                url,
                reason: dropped.unwrap_or_else(|| "the connection closed".to_string()),
            },
            other => LdapError::Protocol {
                url,
                reason: other.to_string(),
            },
        }
    }

    /// Runs one search to the end, page by page when `paged`, calling `on_entry` for each
    /// entry. Returns the number of entries. Any unsuccessful result, reference (unless
    /// ignored) or transport failure is an error; entries already handed out must then be
    /// discarded by the caller.
    ///
    /// Two futures run together on this task: `fetch` drains the server's answers and asks for
    /// the next page as soon as a page ends, handing raw entries over a bounded channel to the
    /// consumer, which converts them. So the server prepares page N+1 while page N is still
    /// being converted, and memory stays bounded by the channel (two pages).
    pub(crate) async fn search<F>(
        &mut self,
        s: &Search<'_>,
        mut on_entry: F,
    ) -> Result<usize, LdapError>
    where
        F: FnMut(RawEntry) -> Result<(), LdapError>,
    {
        let cap = (self.settings.page_size as usize).clamp(128, 2048) * 2;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ldap3::asn1::StructureTag>(cap);
        let url = self.settings.url.clone();
        let consume = async move {
            let mut n = 0usize;
            while let Some(tag) = rx.recv().await {
                let raw = parse_entry(tag).map_err(|reason| LdapError::Protocol {
                    url: url.clone(),
                    reason,
                })?;
                on_entry(raw)?;
                n += 1;
            }
            Ok::<usize, LdapError>(n)
        };
        let (_, n) = tokio::try_join!(self.fetch(s, tx), consume)?;
        Ok(n)
    }

    /// The producing half of [`Conn::search`]: sends each entry's BER to `tx`; returns the
    /// number of entries sent once the server said the search is complete.
    async fn fetch(
        &mut self,
        s: &Search<'_>,
        tx: tokio::sync::mpsc::Sender<ldap3::asn1::StructureTag>,
    ) -> Result<usize, LdapError> {
        let mut cookie: Vec<u8> = Vec::new();
        let mut count = 0usize;
        let mut page = 0u32;
        loop {
            page += 1;
            if s.paged {
                let ctrl: RawControl = PagedResults {
                    size: i32::try_from(self.settings.page_size).unwrap_or(i32::MAX),
                    cookie: std::mem::take(&mut cookie),
                }
                .into();
                self.ldap.with_controls(ctrl);
            }
            let opts = SearchOptions::new()
                .timelimit(i32::try_from(self.settings.time_limit_secs).unwrap_or(i32::MAX));
            let mut stream = self
                .ldap
                .with_search_options(opts)
                .with_timeout(self.settings.response_timeout())
                .streaming_search(s.base, s.scope, s.filter, s.attrs)
                .await
                .map_err(|e| self.search_transport_error(e, s))?;
            let mut refs = Vec::new();
            let mut in_page = 0usize;
            loop {
                let item = match stream.next().await {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = stream.finish().await;
                        return Err(self.search_transport_error(e, s));
                    }
                };
                if item.is_ref() {
                    refs.extend(reference_urls(item.0));
                    continue;
                }
                if item.is_intermediate() {
                    continue;
                }
                count += 1;
                in_page += 1;
                if tx.send(item.0).await.is_err() {
                    // The consumer stopped with its own error, which is the one reported.
                    let _ = stream.finish().await;
                    return Ok(count);
                }
            }
            let res = stream.finish().await;
            if !refs.is_empty() {
                match self.settings.references {
                    ReferencePolicy::Fail => {
                        return Err(LdapError::Referral {
                            search: s.kind,
                            base_dn: s.base.to_string(),
                            referrals: refs,
                            hint: "; or, if those parts of the tree hold no people or groups, set continuation_references = \"ignore\"".to_string(),
                        })
                    }
                    ReferencePolicy::Ignore => {
                        tracing::debug!(search = %s.kind, base = s.base, ?refs, "ignoring continuation references");
                    }
                }
            }
            self.check_result(&res, s, count)?;
            tracing::debug!(search = %s.kind, base = s.base, page, entries = in_page, "page read");
            if !s.paged {
                return Ok(count);
            }
            match paged_cookie(&res) {
                Some(c) if !c.is_empty() => cookie = c,
                _ => return Ok(count),
            }
        }
    }

    fn search_transport_error(&self, e: ldap3::LdapError, s: &Search<'_>) -> LdapError {
        match e {
            ldap3::LdapError::FilterParsing => LdapError::FilterSyntax {
                search: s.kind,
                filter: s.filter.to_string(),
                reason: String::new(),
            },
            ldap3::LdapError::LdapResult { result } => match self.check_result(&result, s, 0) {
                Err(e) => e,
                Ok(()) => LdapError::Protocol {
                    url: self.settings.url.clone(),
                    reason: "search failed with a success result".into(),
                },
            },
            other => self.transport_error(other),
        }
    }

    fn check_result(
        &self,
        res: &ldap3::LdapResult,
        s: &Search<'_>,
        entries: usize,
    ) -> Result<(), LdapError> {
        let base_dn = s.base.to_string();
        let text = colon_text(&res.text);
        let err = match res.rc {
            0 => return Ok(()),
            3 => LdapError::TimeLimit {
                search: s.kind,
                base_dn,
                limit_secs: self.settings.time_limit_secs,
            },
            4 => LdapError::SizeLimit {
                search: s.kind,
                base_dn,
                entries,
            },
            10 => LdapError::Referral {
                search: s.kind,
                base_dn,
                referrals: res.refs.clone(),
                hint: String::new(),
            },
            32 => LdapError::NoSuchBase {
                url: self.settings.url.clone(),
                search: s.kind,
                base_dn,
                matched: if res.matched.is_empty() {
                    String::new()
                } else {
                    format!("; the closest existing entry is {:?}", res.matched)
                },
            },
            87 => LdapError::FilterSyntax {
                search: s.kind,
                filter: s.filter.to_string(),
                reason: text,
            },
            51 | 52 => LdapError::Transient {
                url: self.settings.url.clone(),
                reason: format!("server {} (LDAP result {}){text}", rc_name(res.rc), res.rc),
            },
            1 | 8 | 13 | 48 | 50 | 53 => {
                let hint = match (res.rc, &self.settings.bind) {
                    (8 | 13, _) => "; the server requires a secured connection: use ldaps:// or starttls = true",
                    (_, Bind::Anonymous) => "; the server does not let anonymous clients read here: set bind_dn and bind_password",
                    _ => "; check that the bind DN may read this part of the tree",
                };
                LdapError::AccessRefused {
                    search: s.kind,
                    base_dn,
                    rc: res.rc,
                    rc_name: rc_name(res.rc),
                    text,
                    hint: hint.to_string(),
                }
            }
            rc => LdapError::SearchFailed {
                search: s.kind,
                base_dn,
                rc,
                rc_name: rc_name(rc),
                text,
            },
        };
        Err(err)
    }

    /// Politely ends the session; errors are irrelevant by then.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ldap.unbind()).await;
    }
}

/// RFC 2696 Simple Paged Results.
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";

/// The URLs of a SearchResultReference.
fn reference_urls(tag: ldap3::asn1::StructureTag) -> Vec<String> {
    match tag.payload {
        ldap3::asn1::PL::C(items) => items
            .into_iter()
            .filter_map(|t| match t.payload {
                ldap3::asn1::PL::P(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                ldap3::asn1::PL::C(_) => None,
            })
            .collect(),
        ldap3::asn1::PL::P(_) => Vec::new(),
    }
}

/// The cookie of the paged results response control, if any. Parsed here rather than with
/// `ldap3`'s parser, which panics on a malformed value.
fn paged_cookie(res: &ldap3::LdapResult) -> Option<Vec<u8>> {
    use ldap3::asn1::{parse_tag, PL};
    let ctrl = res.ctrls.iter().find(|c| c.1.ctype == PAGED_RESULTS_OID)?;
    let val = ctrl.1.val.as_ref()?;
    let (_, tag) = parse_tag(val).ok()?;
    let PL::C(parts) = tag.payload else {
        return None;
    };
    match parts.into_iter().nth(1)?.payload {
        PL::P(cookie) => Some(cookie),
        PL::C(_) => None,
    }
}
