//! One LDAP connection: TCP, TLS (ldaps or StartTLS, extra CA, explicit no-verify), the
//! simple or anonymous bind, and the paged search loop (RFC 2696) that decodes each entry in
//! place from the receive buffer, hands it to the caller on the same task, and turns every
//! unsuccessful outcome into an [`LdapError`]. The connection is our own rather than
//! `ldap3`'s: `ldap3` decodes every message into a tree of allocated tags (twice, as it
//! copies the tree) on a driver task and hands it over a channel, which cost more CPU than
//! the server spent answering. `ldap3` still parses filters and encodes requests.
//!
//! What does not live here: message encoding and decoding (see `super::wire`), what is
//! searched for and what the entries become (see `super::read`), or the decision to
//! reconnect.

use super::config::ReferencePolicy;
use super::entry::RawEntry;
use super::error::{
    ad_bind_detail, colon_text, describe_tls, rc_name, rustls_in_io, LdapError, SearchKind,
};
use super::wire::{self, Response};
use crate::config::Secret;
use bytes::{Buf, BytesMut};
use ldap3::asn1::{StructureTag, Tag};
use ldap3::Scope;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the connection is secured. TLS configurations are built once, when the source is
/// opened, and shared by every connection.
#[derive(Clone)]
pub(crate) enum Tls {
    /// Plain LDAP.
    None,
    /// TLS with certificate verification against the system store, and the certificates of
    /// `ca_file` too when `with_ca_file`.
    Verify {
        config: Arc<rustls::ClientConfig>,
        with_ca_file: bool,
    },
    /// TLS without certificate verification (explicit opt-in).
    Insecure(Arc<rustls::ClientConfig>),
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

/// Anything the connection can run over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why reading or writing the connection failed.
enum WireError {
    /// No complete answer within the response timeout.
    Timeout,
    /// The socket failed.
    Io(std::io::Error),
    /// The server closed the connection.
    Closed,
    /// The server sent something that is not a well-formed LDAP message.
    Malformed(String),
}

/// A connection's byte stream with its receive buffer and message ids. Messages are decoded
/// in place from the buffer, one at a time.
struct Wire<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    last_id: u32,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    fn new(io: S, timeout: Duration) -> Self {
        Wire {
            io,
            rbuf: BytesMut::with_capacity(256 * 1024),
            wbuf: BytesMut::new(),
            last_id: 0,
            timeout,
        }
    }

    /// Sends one request and returns its message id.
    async fn send(&mut self, op: Tag, controls: Vec<StructureTag>) -> Result<u32, WireError> {
        self.last_id = self.last_id % 0x7fff_fffe + 1;
        let id = self.last_id;
        self.wbuf.clear();
        wire::encode(&mut self.wbuf, id, op, controls).map_err(WireError::Io)?;
        let write = async {
            self.io.write_all(&self.wbuf).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(id),
            Ok(Err(e)) => Err(WireError::Io(e)),
            Err(_) => Err(WireError::Timeout),
        }
    }

    /// Waits until the receive buffer starts with one complete message; returns its length.
    /// The caller decodes `self.rbuf[..len]` and then calls [`Wire::consume`].
    async fn fill(&mut self) -> Result<usize, WireError> {
        loop {
            match wire::element_header(&self.rbuf) {
                Ok(Some((header, len))) => return Ok(header + len),
                Ok(None) => {}
                Err(e) => return Err(WireError::Malformed(e)),
            }
            if self.rbuf.capacity() - self.rbuf.len() < 64 * 1024 {
                self.rbuf.reserve(256 * 1024);
            }
            match tokio::time::timeout(self.timeout, self.io.read_buf(&mut self.rbuf)).await {
                Ok(Ok(0)) => return Err(WireError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(WireError::Io(e)),
                Err(_) => return Err(WireError::Timeout),
            }
        }
    }

    /// Drops the first `len` bytes (a message that has been handled).
    fn consume(&mut self, len: usize) {
        self.rbuf.advance(len);
    }

    /// Reads until the answer to `id`, which must not be a search item, skipping anything
    /// else (answers to abandoned requests). A notice of disconnection is an error.
    async fn result_of(&mut self, id: u32) -> Result<Response<'static>, WireError> {
        loop {
            let len = self.fill().await?;
            let step: Result<Option<Response<'static>>, WireError> = {
                let (mid, resp) = wire::decode(&self.rbuf[..len]).map_err(WireError::Malformed)?;
                match resp {
                    Response::Extended(r) if mid == 0 => Err(disconnection(&r)),
                    Response::Bind(r) if mid == id => Ok(Some(Response::Bind(r))),
                    Response::Extended(r) if mid == id => Ok(Some(Response::Extended(r))),
                    Response::Done(r) if mid == id => Ok(Some(Response::Done(r))),
                    _ => Ok(None),
                }
            };
            self.consume(len);
            if let Some(answer) = step? {
                return Ok(answer);
            }
        }
    }
}

/// A notice of disconnection (or any unsolicited message) as an error.
fn disconnection(r: &wire::LdapResult) -> WireError {
    WireError::Io(std::io::Error::other(format!(
        "the server ended the session: LDAP result {} ({}){}",
        r.rc,
        rc_name(r.rc),
        colon_text(&r.text)
    )))
}

/// A bound connection.
pub(crate) struct Conn {
    wire: Wire<Box<dyn Io>>,
    settings: Settings,
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
    let connected = match tokio::time::timeout(settings.connect_timeout, connect(settings)).await {
        Ok(result) => result,
        Err(_) => Err(LdapError::Unreachable {
            url: settings.url.clone(),
            reason: format!(
                "no connection within {} s (connect_timeout_secs)",
                settings.connect_timeout.as_secs()
            ),
        }),
    };
    let wire = connected.map_err(|err| match err {
        LdapError::Unreachable { .. } if !first => LdapError::Transient {
            url: settings.url.clone(),
            reason: err.to_string(),
        },
        other => other,
    })?;
    let mut c = Conn {
        wire,
        settings: settings.clone(),
    };
    let (dn, pw) = match &settings.bind {
        Bind::Anonymous => ("", ""),
        Bind::Simple { dn, password } => (dn.as_str(), password.expose()),
    };
    let answer = async {
        let id = c.wire.send(wire::bind_request(dn, pw), Vec::new()).await?;
        c.wire.result_of(id).await
    }
    .await
    .map_err(|e| c.transport_error(e))?;
    let Response::Bind(res) = answer else {
        return Err(LdapError::Protocol {
            url: settings.url.clone(),
            reason: "the answer to the bind request is not a bind response".into(),
        });
    };
    if res.rc != 0 {
        return Err(bind_error(settings, res.rc, &res.text));
    }
    Ok(c)
}

/// Host and port of an `ldap://` or `ldaps://` URL (checked when the configuration loaded).
fn host_port(settings: &Settings) -> Result<(String, u16, bool), LdapError> {
    let bad = |reason: String| LdapError::Config(format!("url {:?}: {reason}", settings.url));
    let url = url::Url::parse(&settings.url).map_err(|e| bad(e.to_string()))?;
    let ldaps = match url.scheme() {
        "ldaps" => true,
        "ldap" => false,
        other => return Err(bad(format!("scheme {other:?} is not supported"))),
    };
    let host = match url.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => return Err(bad("no host".into())),
    };
    let port = url.port().unwrap_or(if ldaps { 636 } else { 389 });
    Ok((host, port, ldaps))
}

/// TCP, then TLS (ldaps) or StartTLS as configured.
async fn connect(settings: &Settings) -> Result<Wire<Box<dyn Io>>, LdapError> {
    let url = settings.url.clone();
    let (host, port, ldaps) = host_port(settings)?;
    let timeout = settings.response_timeout();
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| LdapError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let tls = match &settings.tls {
        Tls::None => return Ok(Wire::new(Box::new(tcp), timeout)),
        Tls::Verify { config, .. } | Tls::Insecure(config) => config.clone(),
    };
    let tcp = if ldaps || !settings.starttls {
        tcp
    } else {
        let mut plain = Wire::new(tcp, timeout);
        let res = async {
            let id = plain.send(wire::starttls_request(), Vec::new()).await?;
            plain.result_of(id).await
        }
        .await
        .map_err(|e| match e {
            WireError::Malformed(reason) => LdapError::Protocol {
                url: url.clone(),
                reason,
            },
            other => LdapError::Tls {
                url: url.clone(),
                reason: format!("StartTLS failed: {}", wire_reason(&other, timeout)),
            },
        })?;
        match res {
            Response::Extended(r) if r.rc == 0 => {}
            Response::Extended(r) => {
                return Err(LdapError::Tls {
                    url,
                    reason: format!(
                        "the server refused StartTLS: LDAP result {} ({}){}",
                        r.rc,
                        rc_name(r.rc),
                        colon_text(&r.text)
                    ),
                })
            }
            _ => {
                return Err(LdapError::Protocol {
                    url,
                    reason: "the answer to StartTLS is not an extended response".into(),
                })
            }
        }
        plain.io
    };
    let name = ServerName::try_from(host.clone()).map_err(|e| LdapError::Tls {
        url: url.clone(),
        reason: format!("the host name is not valid for TLS: {e}"),
    })?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| LdapError::Tls {
            url: url.clone(),
            reason: match rustls_in_io(&e) {
                Some(t) => describe_tls(t),
                None => format!("handshake failed: {e}"),
            },
        })?;
    Ok(Wire::new(Box::new(stream), timeout))
}

/// The cryptography every TLS configuration of the LDAP source uses.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS that accepts any certificate: only with the explicit `tls_skip_verify` opt-in, which
/// is logged as a warning on every run.
pub(crate) fn insecure_tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = crypto_provider();
    let verifier = Arc::new(NoVerification(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificate verifier of [`insecure_tls_config`]: any certificate is accepted, but the
/// handshake signatures are still checked with the provider's algorithms.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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

    /// Turns a failure of the connection into a transient error (the read restarts), or a
    /// protocol error for a malformed message.
    fn transport_error(&self, e: WireError) -> LdapError {
        let url = self.settings.url.clone();
        match e {
            WireError::Malformed(reason) => LdapError::Protocol { url, reason },
            other => LdapError::Transient {
                url,
                reason: wire_reason(&other, self.settings.response_timeout()),
            },
        }
    }

    /// Runs one search to the end, page by page when `paged`, calling `on_entry` for each
    /// entry as it is decoded from the receive buffer. Returns the number of entries. Any
    /// unsuccessful result, reference (unless ignored) or transport failure is an error;
    /// entries already handed out must then be discarded by the caller (unless it asked for a
    /// partial read), and after a transport failure or a reference the connection must not be
    /// used for another search (it is left mid-answer). An unsuccessful *result* (a size or
    /// time limit) is the search's last message, so the connection stays usable.
    pub(crate) async fn search<F>(
        &mut self,
        s: &Search<'_>,
        mut on_entry: F,
    ) -> Result<usize, LdapError>
    where
        F: FnMut(RawEntry<'_>) -> Result<(), LdapError>,
    {
        let filter = ldap3::parse_filter(s.filter).map_err(|()| LdapError::FilterSyntax {
            search: s.kind,
            filter: s.filter.to_string(),
            reason: String::new(),
        })?;
        let time_limit = i64::from(self.settings.time_limit_secs);
        let page_size = i64::from(self.settings.page_size);
        let mut cookie: Vec<u8> = Vec::new();
        let mut count = 0usize;
        let mut page = 0u32;
        loop {
            page += 1;
            let controls = if s.paged {
                vec![wire::paged_control(page_size, &cookie)]
            } else {
                Vec::new()
            };
            let request =
                wire::search_request(s.base, s.scope, time_limit, filter.clone(), s.attrs);
            let id = self
                .wire
                .send(request, controls)
                .await
                .map_err(|e| self.transport_error(e))?;
            let mut refs = Vec::new();
            let mut in_page = 0usize;
            let res = loop {
                let len = self
                    .wire
                    .fill()
                    .await
                    .map_err(|e| self.transport_error(e))?;
                let step = {
                    let (mid, resp) = wire::decode(&self.wire.rbuf[..len]).map_err(|reason| {
                        LdapError::Protocol {
                            url: self.settings.url.clone(),
                            reason,
                        }
                    })?;
                    match resp {
                        Response::Extended(r) if mid == 0 => Step::Fail(disconnection(&r)),
                        _ if mid != id => Step::Next,
                        Response::Entry(entry) => {
                            count += 1;
                            in_page += 1;
                            on_entry(entry)?;
                            Step::Next
                        }
                        Response::Reference(urls) => {
                            refs.extend(urls);
                            Step::Next
                        }
                        Response::Intermediate => Step::Next,
                        Response::Done(res) => Step::Done(res),
                        Response::Bind(_) | Response::Extended(_) => {
                            return Err(LdapError::Protocol {
                                url: self.settings.url.clone(),
                                reason: format!("message {id}: unexpected answer to a search"),
                            })
                        }
                    }
                };
                self.wire.consume(len);
                match step {
                    Step::Next => {}
                    Step::Done(res) => break res,
                    Step::Fail(e) => return Err(self.transport_error(e)),
                }
            };
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
            match res.paged_cookie {
                Some(c) if !c.is_empty() => cookie = c,
                _ => return Ok(count),
            }
        }
    }

    fn check_result(
        &self,
        res: &wire::LdapResult,
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
        let unbind = async {
            if self
                .wire
                .send(wire::unbind_request(), Vec::new())
                .await
                .is_ok()
            {
                let _ = self.wire.io.shutdown().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), unbind).await;
    }
}

/// What the search loop does after one message.
enum Step {
    Next,
    Done(wire::LdapResult),
    Fail(WireError),
}

/// A connection failure in words.
fn wire_reason(e: &WireError, timeout: Duration) -> String {
    match e {
        WireError::Timeout => format!("no answer from the server within {} s", timeout.as_secs()),
        WireError::Io(e) => e.to_string(),
        WireError::Closed => "the server closed the connection".to_string(),
        WireError::Malformed(reason) => format!("malformed message: {reason}"),
    }
}
