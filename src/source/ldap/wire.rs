//! LDAP messages on the wire (RFC 4511): the few requests the reader sends (simple bind,
//! search with controls, StartTLS, unbind), encoded with `lber` through `ldap3`'s ASN.1
//! types, and the responses it receives, decoded straight from the receive buffer. A
//! SearchResultEntry becomes a [`RawEntry`] of slices into that buffer: no tree of tags and
//! no copy of a value until the model takes it. Every length is checked, so malformed input
//! is an error naming what was wrong, never a panic.
//!
//! What does not live here: the connection and its timeouts (see `super::conn`), or what
//! entries become (see `super::entry`).

use super::entry::{RawAttr, RawEntry};
use bytes::BytesMut;
use ldap3::asn1::{
    ASNTag, Boolean, Enumerated, Integer, OctetString, Sequence, StructureTag, Tag, TagClass, PL,
};
use smallvec::SmallVec;

/// RFC 2696 Simple Paged Results.
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// RFC 4511 StartTLS extended operation.
const STARTTLS_OID: &str = "1.3.6.1.4.1.1466.20037";
/// The largest message accepted. A group with a million members is well below it; a length
/// above it is taken for a corrupt stream rather than allocated.
const MAX_MESSAGE: usize = 512 * 1024 * 1024;

// BER identifier octets used by LDAP.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const ENUMERATED: u8 = 0x0a;
const BOOLEAN: u8 = 0x01;
const BIND_RESPONSE: u8 = 0x61;
const SEARCH_ENTRY: u8 = 0x64;
const SEARCH_DONE: u8 = 0x65;
const SEARCH_REFERENCE: u8 = 0x73;
const EXTENDED_RESPONSE: u8 = 0x78;
const INTERMEDIATE_RESPONSE: u8 = 0x79;
const CONTROLS: u8 = 0xa0;
const REFERRAL: u8 = 0xa3;
const EXTENDED_NAME: u8 = 0x8a;

/// A cursor over BER-encoded elements, each read as (identifier octet, content).
struct Ber<'a> {
    buf: &'a [u8],
}

impl<'a> Ber<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Ber { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The identifier octet of the next element, if any.
    fn peek(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Reads the next element.
    fn next(&mut self) -> Result<(u8, &'a [u8]), String> {
        let Some((header, len)) = element_header(self.buf)? else {
            return Err("truncated element".into());
        };
        let end = header + len;
        let content = &self.buf[header..end];
        let tag = self.buf[0];
        self.buf = &self.buf[end..];
        Ok((tag, content))
    }

    /// Reads the next element, which must carry identifier `tag`.
    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        let (t, content) = self.next().map_err(|e| format!("{what}: {e}"))?;
        if t != tag {
            return Err(format!("{what}: expected tag 0x{tag:02x}, got 0x{t:02x}"));
        }
        Ok(content)
    }
}

/// The header length and content length of the element at the start of `buf`, `None` when
/// `buf` does not yet hold all of it. Only definite lengths (as LDAP requires), at most
/// [`MAX_MESSAGE`].
pub(crate) fn element_header(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let Some(&first) = buf.get(1) else {
        return Ok(None);
    };
    if buf[0] & 0x1f == 0x1f {
        return Err(format!(
            "multi-byte tag 0x{:02x} is not used by LDAP",
            buf[0]
        ));
    }
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 {
            return Err("indefinite length is not allowed in LDAP".into());
        }
        if n > 4 {
            return Err(format!("length of {n} octets is too long"));
        }
        let Some(bytes) = buf.get(2..2 + n) else {
            return Ok(None);
        };
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2 + n, len)
    };
    if len > MAX_MESSAGE {
        return Err(format!(
            "element of {len} bytes is larger than the {MAX_MESSAGE}-byte limit"
        ));
    }
    if buf.len() < header + len {
        return Ok(None);
    }
    Ok(Some((header, len)))
}

/// A non-negative INTEGER or ENUMERATED content that fits 32 bits.
fn small_uint(content: &[u8], what: &str) -> Result<u32, String> {
    if content.is_empty() || content.len() > 5 || content[0] & 0x80 != 0 {
        return Err(format!("{what}: not a small non-negative integer"));
    }
    let v = content
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    u32::try_from(v).map_err(|_| format!("{what}: {v} is out of range"))
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(b).map_err(|_| format!("{what} is not UTF-8"))
}

/// The outcome of an operation (LDAPResult), with the paged results cookie when the server
/// sent the control.
#[derive(Debug, Default)]
pub(crate) struct LdapResult {
    pub rc: u32,
    pub matched: String,
    pub text: String,
    pub refs: Vec<String>,
    /// The cookie of the paged results response control, if present.
    pub paged_cookie: Option<Vec<u8>>,
    /// The response name of an extended response, if present.
    pub name: Option<String>,
}

/// One decoded response.
pub(crate) enum Response<'a> {
    /// A SearchResultEntry.
    Entry(RawEntry<'a>),
    /// A SearchResultReference: its URLs.
    Reference(Vec<String>),
    /// A SearchResultDone.
    Done(LdapResult),
    /// A BindResponse.
    Bind(LdapResult),
    /// An ExtendedResponse (the result carries its name).
    Extended(LdapResult),
    /// An IntermediateResponse, which the reader has no use for.
    Intermediate,
}

/// Decodes one complete LDAPMessage: its message id and response.
pub(crate) fn decode(msg: &[u8]) -> Result<(u32, Response<'_>), String> {
    let mut outer = Ber::new(msg);
    let body = outer.expect(SEQUENCE, "LDAP message")?;
    let mut b = Ber::new(body);
    let id = small_uint(b.expect(INTEGER, "message id")?, "message id")?;
    let (op, content) = b.next().map_err(|e| format!("message {id}: {e}"))?;
    let response = match op {
        SEARCH_ENTRY => Response::Entry(decode_entry(content)?),
        SEARCH_REFERENCE => {
            let mut urls = Vec::new();
            let mut r = Ber::new(content);
            while !r.is_empty() {
                let u = r.expect(OCTET_STRING, "search reference")?;
                urls.push(String::from_utf8_lossy(u).into_owned());
            }
            Response::Reference(urls)
        }
        SEARCH_DONE | BIND_RESPONSE | EXTENDED_RESPONSE => {
            let mut result = decode_result(content, op == EXTENDED_RESPONSE)?;
            // Controls follow the operation; anything else there (Active Directory puts the
            // notice of disconnection's name there) is ignored.
            while !b.is_empty() {
                let (t, c) = b.next().map_err(|e| format!("message {id}: {e}"))?;
                if t == CONTROLS {
                    result.paged_cookie = paged_cookie(c)?;
                }
            }
            match op {
                SEARCH_DONE => Response::Done(result),
                BIND_RESPONSE => Response::Bind(result),
                _ => Response::Extended(result),
            }
        }
        INTERMEDIATE_RESPONSE => Response::Intermediate,
        other => return Err(format!("message {id}: unexpected operation 0x{other:02x}")),
    };
    Ok((id, response))
}

fn decode_result(content: &[u8], extended: bool) -> Result<LdapResult, String> {
    let mut r = Ber::new(content);
    let rc = small_uint(r.expect(ENUMERATED, "result code")?, "result code")?;
    let matched = String::from_utf8_lossy(r.expect(OCTET_STRING, "matched DN")?).into_owned();
    let text = String::from_utf8_lossy(r.expect(OCTET_STRING, "diagnostic message")?).into_owned();
    let mut out = LdapResult {
        rc,
        matched,
        text,
        ..LdapResult::default()
    };
    while let Some(t) = r.peek() {
        let (_, c) = r.next()?;
        if t == REFERRAL {
            let mut urls = Ber::new(c);
            while !urls.is_empty() {
                let u = urls.expect(OCTET_STRING, "referral")?;
                out.refs.push(String::from_utf8_lossy(u).into_owned());
            }
        } else if extended && t == EXTENDED_NAME {
            out.name = Some(String::from_utf8_lossy(c).into_owned());
        }
    }
    Ok(out)
}

/// The cookie of a paged results response control among `controls`, if there is one.
fn paged_cookie(controls: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut list = Ber::new(controls);
    while !list.is_empty() {
        let mut c = Ber::new(list.expect(SEQUENCE, "control")?);
        let oid = c.expect(OCTET_STRING, "control type")?;
        if oid != PAGED_RESULTS_OID.as_bytes() {
            continue;
        }
        if c.peek() == Some(BOOLEAN) {
            c.next()?;
        }
        let value = c.expect(OCTET_STRING, "paged results control value")?;
        let mut v = Ber::new(Ber::new(value).expect(SEQUENCE, "paged results value")?);
        v.expect(INTEGER, "paged results size")?;
        let cookie = v.expect(OCTET_STRING, "paged results cookie")?;
        return Ok(Some(cookie.to_vec()));
    }
    Ok(None)
}

/// Decodes a SearchResultEntry's content into slices of it.
fn decode_entry(content: &[u8]) -> Result<RawEntry<'_>, String> {
    let mut r = Ber::new(content);
    let dn = utf8(r.expect(OCTET_STRING, "entry DN")?, "entry DN")?;
    let list = if r.is_empty() {
        &[][..]
    } else {
        r.expect(SEQUENCE, "attribute list")
            .map_err(|e| format!("entry {dn:?}: {e}"))?
    };
    let mut attrs = Vec::with_capacity(24);
    let mut l = Ber::new(list);
    while !l.is_empty() {
        let bad = |e: String| format!("entry {dn:?}: {e}");
        let mut pa = Ber::new(l.expect(SEQUENCE, "attribute").map_err(bad)?);
        let desc = utf8(
            pa.expect(OCTET_STRING, "attribute name").map_err(bad)?,
            "attribute name",
        )
        .map_err(bad)?;
        let mut values = SmallVec::new();
        if !pa.is_empty() {
            let mut vals = Ber::new(
                pa.expect(SET, "values")
                    .map_err(|e| format!("entry {dn:?}: values of {desc}: {e}"))?,
            );
            while !vals.is_empty() {
                values.push(
                    vals.expect(OCTET_STRING, "value")
                        .map_err(|e| format!("entry {dn:?}: values of {desc}: {e}"))?,
                );
            }
        }
        attrs.push(RawAttr { desc, values });
    }
    Ok(RawEntry { dn, attrs })
}

/// Encodes one LDAPMessage with optional controls, appending to `out`.
pub(crate) fn encode(
    out: &mut BytesMut,
    id: u32,
    op: Tag,
    controls: Vec<StructureTag>,
) -> std::io::Result<()> {
    let mut msg = vec![
        Tag::Integer(Integer {
            inner: i64::from(id),
            ..Default::default()
        }),
        op,
    ];
    if !controls.is_empty() {
        msg.push(Tag::StructureTag(StructureTag {
            id: 0,
            class: TagClass::Context,
            payload: PL::C(controls),
        }));
    }
    let tag = Tag::Sequence(Sequence {
        inner: msg,
        ..Default::default()
    })
    .into_structure();
    ldap3::asn1::write::encode_into(out, tag)
}

fn octets(b: &[u8]) -> Tag {
    Tag::OctetString(OctetString {
        inner: b.to_vec(),
        ..Default::default()
    })
}

/// BindRequest, simple authentication (an empty DN and password is an anonymous bind).
pub(crate) fn bind_request(dn: &str, password: &str) -> Tag {
    Tag::Sequence(Sequence {
        id: 0,
        class: TagClass::Application,
        inner: vec![
            Tag::Integer(Integer {
                inner: 3,
                ..Default::default()
            }),
            octets(dn.as_bytes()),
            Tag::OctetString(OctetString {
                id: 0,
                class: TagClass::Context,
                inner: password.as_bytes().to_vec(),
            }),
        ],
    })
}

/// SearchRequest: never dereferencing aliases, no size limit, the given time limit.
pub(crate) fn search_request(
    base: &str,
    scope: ldap3::Scope,
    time_limit: i64,
    filter: Tag,
    attrs: &[String],
) -> Tag {
    Tag::Sequence(Sequence {
        id: 3,
        class: TagClass::Application,
        inner: vec![
            octets(base.as_bytes()),
            Tag::Enumerated(Enumerated {
                inner: scope as i64,
                ..Default::default()
            }),
            Tag::Enumerated(Enumerated {
                inner: 0,
                ..Default::default()
            }),
            Tag::Integer(Integer {
                inner: 0,
                ..Default::default()
            }),
            Tag::Integer(Integer {
                inner: time_limit,
                ..Default::default()
            }),
            Tag::Boolean(Boolean {
                inner: false,
                ..Default::default()
            }),
            filter,
            Tag::Sequence(Sequence {
                inner: attrs.iter().map(|a| octets(a.as_bytes())).collect(),
                ..Default::default()
            }),
        ],
    })
}

/// The paged results request control (not critical: a server without it answers in full,
/// subject to its size limit, which is reported as such).
pub(crate) fn paged_control(size: i64, cookie: &[u8]) -> StructureTag {
    let mut value = BytesMut::new();
    let inner = Tag::Sequence(Sequence {
        inner: vec![
            Tag::Integer(Integer {
                inner: size,
                ..Default::default()
            }),
            octets(cookie),
        ],
        ..Default::default()
    })
    .into_structure();
    // Encoding into memory cannot fail; an empty value would only make the server refuse the
    // control, which is reported.
    let _ = ldap3::asn1::write::encode_into(&mut value, inner);
    Tag::Sequence(Sequence {
        inner: vec![octets(PAGED_RESULTS_OID.as_bytes()), octets(&value)],
        ..Default::default()
    })
    .into_structure()
}

/// ExtendedRequest for StartTLS.
pub(crate) fn starttls_request() -> Tag {
    Tag::Sequence(Sequence {
        id: 23,
        class: TagClass::Application,
        inner: vec![Tag::OctetString(OctetString {
            id: 0,
            class: TagClass::Context,
            inner: STARTTLS_OID.as_bytes().to_vec(),
        })],
    })
}

/// UnbindRequest.
pub(crate) fn unbind_request() -> Tag {
    Tag::StructureTag(StructureTag {
        id: 2,
        class: TagClass::Application,
        payload: PL::P(Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            let len = (content.len() as u32).to_be_bytes();
            out.push(0x84);
            out.extend_from_slice(&len);
        }
        out.extend_from_slice(content);
        out
    }

    fn entry_message(id: u8, dn: &str, attrs: &[(&str, &[&[u8]])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (name, vals) in attrs {
            let mut set = Vec::new();
            for v in *vals {
                set.extend(tlv(OCTET_STRING, v));
            }
            let mut pa = tlv(OCTET_STRING, name.as_bytes());
            pa.extend(tlv(SET, &set));
            list.extend(tlv(SEQUENCE, &pa));
        }
        let mut op = tlv(OCTET_STRING, dn.as_bytes());
        op.extend(tlv(SEQUENCE, &list));
        let mut body = tlv(INTEGER, &[id]);
        body.extend(tlv(SEARCH_ENTRY, &op));
        tlv(SEQUENCE, &body)
    }

    #[test]
    fn entries_decode_into_slices() {
        let big = vec![b'x'; 300];
        let msg = entry_message(
            7,
            "uid=a,dc=x",
            &[
                ("cn", &[b"A"]),
                ("objectClass", &[b"top", b"person"]),
                ("photo", &[&big]),
            ],
        );
        let (id, r) = decode(&msg).unwrap();
        assert_eq!(id, 7);
        let Response::Entry(e) = r else {
            panic!("not an entry")
        };
        assert_eq!(e.dn, "uid=a,dc=x");
        assert_eq!(e.attrs.len(), 3);
        assert_eq!(e.attrs[1].desc, "objectClass");
        assert_eq!(e.attrs[1].values.as_slice(), &[&b"top"[..], &b"person"[..]]);
        assert_eq!(e.attrs[2].values[0].len(), 300);
    }

    #[test]
    fn framing_waits_for_the_whole_message() {
        let msg = entry_message(1, "uid=a", &[("cn", &[b"A"])]);
        for cut in 0..msg.len() {
            assert_eq!(element_header(&msg[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(element_header(&msg).unwrap(), Some((2, msg.len() - 2)));
        assert!(element_header(&[0x30, 0x80]).is_err(), "indefinite length");
        assert!(
            element_header(&[0x30, 0x85, 1, 2, 3, 4, 5]).is_err(),
            "5-octet length"
        );
    }

    #[test]
    fn malformed_entries_are_errors_not_panics() {
        let msg = entry_message(3, "uid=a,dc=x", &[("cn", &[b"A"]), ("sn", &[b"B"])]);
        // Every truncation or corruption of the inner structure fails cleanly.
        for i in 2..msg.len() {
            let mut bad = msg.clone();
            bad[i] = 0xff;
            let _ = decode(&bad);
            let mut short = msg.clone();
            short.truncate(i);
            let _ = decode(&short);
        }
        let mut wrong = msg.clone();
        let pos = msg.iter().position(|b| *b == SET).unwrap();
        wrong[pos] = OCTET_STRING;
        let err = match decode(&wrong) {
            Err(e) => e,
            Ok(_) => panic!("decoded a malformed entry"),
        };
        assert!(
            err.contains("uid=a,dc=x") && err.contains("values of cn"),
            "{err}"
        );
    }

    #[test]
    fn done_with_paged_cookie_and_referrals() {
        let mut result = tlv(ENUMERATED, &[10]);
        result.extend(tlv(OCTET_STRING, b""));
        result.extend(tlv(OCTET_STRING, b"see elsewhere"));
        result.extend(tlv(REFERRAL, &tlv(OCTET_STRING, b"ldap://other/")));
        let mut value = tlv(INTEGER, &[0]);
        value.extend(tlv(OCTET_STRING, b"COOKIE"));
        let mut ctrl = tlv(OCTET_STRING, PAGED_RESULTS_OID.as_bytes());
        ctrl.extend(tlv(OCTET_STRING, &tlv(SEQUENCE, &value)));
        let mut body = tlv(INTEGER, &[2]);
        body.extend(tlv(SEARCH_DONE, &result));
        body.extend(tlv(CONTROLS, &tlv(SEQUENCE, &ctrl)));
        let msg = tlv(SEQUENCE, &body);
        let (id, r) = decode(&msg).unwrap();
        assert_eq!(id, 2);
        let Response::Done(res) = r else {
            panic!("not a result")
        };
        assert_eq!(res.rc, 10);
        assert_eq!(res.text, "see elsewhere");
        assert_eq!(res.refs, vec!["ldap://other/".to_string()]);
        assert_eq!(res.paged_cookie.as_deref(), Some(&b"COOKIE"[..]));
    }

    #[test]
    fn requests_round_trip_through_lber() {
        let mut out = BytesMut::new();
        let filter = ldap3::parse_filter("(uid=a)").unwrap();
        let attrs = vec!["cn".to_string()];
        encode(
            &mut out,
            5,
            search_request("dc=x", ldap3::Scope::Subtree, 30, filter, &attrs),
            vec![paged_control(1000, b"")],
        )
        .unwrap();
        let (rest, tag) = ldap3::asn1::parse_tag(&out).unwrap();
        assert!(rest.is_empty());
        let PL::C(parts) = tag.payload else {
            panic!("not constructed")
        };
        assert_eq!(parts.len(), 3, "id, search request, controls");
        assert_eq!(parts[1].id, 3);
    }
}
