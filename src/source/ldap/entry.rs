//! Wire entries to model entries: the borrowed form a decoded SearchResultEntry takes,
//! deciding which values are binary, the Active Directory text forms (objectGUID as a
//! mixed-endian GUID, objectSid as `S-1-5-...`), ranged attribute names
//! (`member;range=0-1499`) and DN normalisation for comparing member DNs. Credential
//! attributes (`userPassword`, `unicodePwd`, ...: [`crate::model::SECRET_ATTRIBUTES`]) are
//! dropped here, so no snapshot holds them.
//!
//! What does not live here: decoding messages (see `super::wire`), searching (see
//! `super::conn`) or membership resolution (see
//! `super::read`). Values the mapping layer converts (`accountExpires`, `pwdLastSet` as
//! FILETIME, `whenChanged` as generalized time, `userAccountControl` flags) are kept as read.

use crate::model::{is_secret_attribute, Attributes, Value, Values};
use smallvec::SmallVec;

/// One entry as it came off the wire, borrowing the receive buffer: DN and attributes with
/// raw values, in wire order.
#[derive(Debug)]
pub struct RawEntry<'a> {
    /// The entry's DN.
    pub dn: &'a str,
    /// The attributes in wire order.
    pub attrs: Vec<RawAttr<'a>>,
}

/// One attribute of a [`RawEntry`].
#[derive(Debug)]
pub struct RawAttr<'a> {
    /// The attribute description as sent (`member;range=0-1499` included).
    pub desc: &'a str,
    /// The raw values.
    pub values: SmallVec<[&'a [u8]; 2]>,
}

/// Attributes whose values are binary whatever their bytes look like.
const BINARY_ATTRIBUTES: &[&str] = &[
    "jpegphoto",
    "photo",
    "thumbnailphoto",
    "thumbnaillogo",
    "audio",
    "usercertificate",
    "cacertificate",
    "certificaterevocationlist",
    "authorityrevocationlist",
    "crosscertificatepair",
    "usersmimecertificate",
    "userpkcs12",
    "objectguid",
    "objectsid",
    "sidhistory",
    "tokengroups",
    "msexchmailboxguid",
    "msexchmasteraccountsid",
    "ms-ds-consistencyguid",
    "logonhours",
    "ntsecuritydescriptor",
    "userparameters",
];

/// How an attribute's values are converted, decided once per attribute from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A 16-byte GUID: the Active Directory text form.
    Guid,
    /// A security identifier: `S-1-5-...`.
    Sid,
    /// Always bytes.
    Binary,
    /// Text when the bytes are UTF-8, bytes otherwise.
    Text,
}

/// Classifies an attribute (any letter case) without allocating.
pub fn classify(name: &str) -> ValueKind {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    if is("objectGUID") || is("ms-DS-ConsistencyGuid") || is("msExchMailboxGuid") {
        ValueKind::Guid
    } else if is("objectSid") || is("sIDHistory") {
        ValueKind::Sid
    } else if BINARY_ATTRIBUTES.iter().any(|b| is(b))
        || (name.len() >= 7 && name[name.len() - 7..].eq_ignore_ascii_case(";binary"))
    {
        ValueKind::Binary
    } else {
        ValueKind::Text
    }
}

/// Converts one value of an attribute of the given kind.
pub fn convert_kind(kind: ValueKind, bytes: &[u8]) -> Value {
    match kind {
        ValueKind::Guid if bytes.len() == 16 => return Value::text(guid_text(bytes)),
        ValueKind::Guid => return Value::binary(bytes),
        ValueKind::Sid => {
            return match sid_text(bytes) {
                Some(s) => Value::text(s),
                None => Value::binary(bytes),
            }
        }
        ValueKind::Binary => return Value::binary(bytes),
        ValueKind::Text => {}
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::text_str(s),
        Err(_) => Value::binary(bytes),
    }
}

/// Converts one value. objectGUID and objectSid get their Active Directory text forms; known
/// binary attributes and bytes that are not UTF-8 stay bytes. `name` in any letter case.
pub fn convert_value(name: &str, bytes: &[u8]) -> Value {
    convert_kind(classify(name), bytes)
}

/// The canonical GUID text form Active Directory tools print: the first three fields are
/// little-endian on the wire, the last two are in byte order. Lower case.
pub fn guid_text(b: &[u8]) -> String {
    if b.len() != 16 {
        return hex(b);
    }
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15]
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A binary security identifier as `S-R-A-S1-S2-...` (MS-DTYP 2.4.2.2), or `None` if the bytes
/// are not a SID.
pub fn sid_text(b: &[u8]) -> Option<String> {
    if b.len() < 8 {
        return None;
    }
    let revision = b[0];
    let count = b[1] as usize;
    if b.len() != 8 + 4 * count {
        return None;
    }
    let mut authority: u64 = 0;
    for &x in &b[2..8] {
        authority = (authority << 8) | u64::from(x);
    }
    let mut out = format!("S-{revision}-{authority}");
    for i in 0..count {
        let o = 8 + 4 * i;
        let sub = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        out.push('-');
        out.push_str(&sub.to_string());
    }
    Some(out)
}

/// The text form of an id value: GUID form for 16-byte objectGUIDs, the text itself, or
/// base64 for other binary ids.
pub fn id_text(name: &str, bytes: &[u8]) -> String {
    let kind = classify(name);
    if kind == ValueKind::Text {
        if let Ok(s) = std::str::from_utf8(bytes) {
            return s.to_string();
        }
    }
    match convert_kind(kind, bytes) {
        Value::Text(s) => s.into_string(),
        v @ Value::Binary(_) => v.as_text().into_owned(),
    }
}

/// A ranged attribute description split up: `member;range=1500-*` gives
/// `("member", 1500, None)`, `member;range=0-1499` gives `("member", 0, Some(1499))`.
pub fn split_range(desc: &str) -> Option<(&str, u64, Option<u64>)> {
    // Fast path: almost no attribute description carries an option.
    let semi = desc.find(';')?;
    let pos = semi
        + desc.as_bytes()[semi..]
            .windows(7)
            .position(|w| w.eq_ignore_ascii_case(b";range="))?;
    let base = &desc[..pos];
    let spec = &desc[pos + 7..];
    let spec = spec.split(';').next().unwrap_or(spec);
    let (start, end) = spec.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = if end.trim() == "*" {
        None
    } else {
        Some(end.trim().parse().ok()?)
    };
    Some((base, start, end))
}

/// Normalises a DN for comparison: attribute types and values lower-cased, spaces around
/// separators removed, escapes (`\,` and `\2C`) decoded and re-escaped one way, multi-valued
/// RDNs sorted. Two DNs naming the same entry in the ways servers actually write them compare
/// equal; this is not full RFC 4517 matching (no schema-aware value matching).
pub fn normalize_dn(dn: &str) -> String {
    // Fast path: no escapes, quotes, multi-valued RDNs or spaces next to separators, which
    // is how servers write nearly every DN: lower-casing is the whole normalisation.
    let b = dn.as_bytes();
    let simple = !b
        .iter()
        .any(|&c| matches!(c, b'\\' | b'"' | b'+' | b';' | b'<' | b'>'))
        && b.iter().filter(|&&c| c == b'=').count() == b.iter().filter(|&&c| c == b',').count() + 1
        && !b
            .windows(2)
            .any(|w| matches!(w, [b',' | b'=', b' '] | [b' ', b',' | b'=']))
        && !dn.starts_with(' ')
        && !dn.ends_with(' ');
    if simple {
        return if dn.is_ascii() {
            dn.to_ascii_lowercase()
        } else {
            dn.to_lowercase()
        };
    }
    let mut out = String::with_capacity(dn.len());
    for (i, rdn) in split_unescaped(dn, ',').into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut avas: Vec<String> = split_unescaped(rdn, '+')
            .into_iter()
            .map(normalize_ava)
            .collect();
        avas.sort();
        out.push_str(&avas.join("+"));
    }
    out
}

fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

fn normalize_ava(ava: &str) -> String {
    let (ty, val) = match ava.split_once('=') {
        Some((t, v)) => (t.trim(), v),
        None => return ava.trim().to_lowercase(),
    };
    // Trim unescaped surrounding spaces, then decode escapes.
    let val = val.trim_start();
    let mut end = val.len();
    while end > 0 && val.as_bytes()[end - 1] == b' ' {
        let escaped = end >= 2 && val.as_bytes()[end - 2] == b'\\';
        if escaped {
            break;
        }
        end -= 1;
    }
    let raw = &val[..end];
    let mut bytes = Vec::with_capacity(raw.len());
    let rb = raw.as_bytes();
    let mut i = 0;
    while i < rb.len() {
        if rb[i] == b'\\' && i + 1 < rb.len() {
            let h = &raw[i + 1..(i + 3).min(raw.len())];
            if h.len() == 2 && h.bytes().all(|c| c.is_ascii_hexdigit()) {
                if let Ok(x) = u8::from_str_radix(h, 16) {
                    bytes.push(x);
                    i += 3;
                    continue;
                }
            }
            bytes.push(rb[i + 1]);
            i += 2;
            continue;
        }
        bytes.push(rb[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&bytes).to_lowercase();
    let mut out = String::with_capacity(ty.len() + decoded.len() + 1);
    out.push_str(&ty.to_ascii_lowercase());
    out.push('=');
    for c in decoded.chars() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Builds model attributes from raw ones. Ranged descriptions (`member;range=0-1499`) are
/// stored under their base name, unless the same entry also carries the plain attribute with
/// values (a server that does not cap answers both ways; the plain one is complete). Returns
/// the attributes and, for each ranged attribute kept, (lower-cased base name, end of the
/// range received or `None` when it ended with `*`).
pub fn to_attributes(attrs: &[RawAttr<'_>]) -> (Attributes, Vec<(String, Option<u64>)>) {
    let mut out = Attributes::with_capacity(attrs.len());
    let mut ranges = Vec::new();
    let convert = |name: &str, values: &[&[u8]]| -> Values {
        let kind = classify(name);
        values.iter().map(|v| convert_kind(kind, v)).collect()
    };
    // Attribute descriptions of one entry are distinct, so the common case is one `set` per
    // attribute; only ranged descriptions (and the rare repeated name) need merging.
    let any_ranged = attrs.iter().any(|a| split_range(a.desc).is_some());
    if !any_ranged {
        for a in attrs {
            if is_secret_attribute(a.desc) {
                continue;
            }
            let converted = convert(a.desc, &a.values);
            match out.get_mut(a.desc) {
                Some(existing) => existing.extend(converted),
                None => out.set(a.desc, converted),
            }
        }
        return (out, ranges);
    }
    let plain_with_values: Vec<String> = attrs
        .iter()
        .filter(|a| !a.values.is_empty() && split_range(a.desc).is_none())
        .map(|a| a.desc.to_ascii_lowercase())
        .collect();
    for a in attrs {
        if is_secret_attribute(a.desc) {
            continue;
        }
        let (name, range) = match split_range(a.desc) {
            Some((base, _start, end)) => (base, Some(end)),
            None => (a.desc, None),
        };
        let lower = name.to_ascii_lowercase();
        if range.is_some() && plain_with_values.contains(&lower) {
            continue;
        }
        let converted = convert(name, &a.values);
        if let Some(end) = range {
            ranges.push((lower.clone(), end));
        }
        if out.has(name) || range.is_some() {
            let mut existing = out.remove(name).unwrap_or_default();
            existing.extend(converted);
            out.set(name, existing);
        } else {
            out.set(name, converted);
        }
    }
    (out, ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[test]
    fn guid_and_sid_match_samba_tool() {
        // Values read from a Samba AD DC and compared with `samba-tool user show`.
        assert_eq!(
            guid_text(&b64("h8aLGJiKhkiVx/Fu8qOzIw==")),
            "188bc687-8a98-4886-95c7-f16ef2a3b323"
        );
        assert_eq!(
            sid_text(&b64("AQUAAAAAAAUVAAAAk1UV7Cl7IUigQUH3TgQAAA==")).unwrap(),
            "S-1-5-21-3960821139-1210153769-4148248992-1102"
        );
        assert_eq!(sid_text(&[1, 2, 3]), None);
    }

    #[test]
    fn binary_values_stay_bytes() {
        assert_eq!(
            convert_value("jpegphoto", b"abc"),
            Value::binary(b"abc".to_vec())
        );
        assert_eq!(
            convert_value("description", &[0xff, 0xfe]),
            Value::binary(vec![0xff, 0xfe])
        );
        assert_eq!(
            convert_value("cn", "Zoë".as_bytes()),
            Value::Text("Zoë".into())
        );
        assert_eq!(classify("JPEGPhoto"), ValueKind::Binary);
        assert_eq!(classify("userCertificate;binary"), ValueKind::Binary);
        assert_eq!(classify("ObjectGuid"), ValueKind::Guid);
        assert_eq!(classify("mail"), ValueKind::Text);
    }

    #[test]
    fn ranges_are_parsed() {
        assert_eq!(
            split_range("member;range=0-1499"),
            Some(("member", 0, Some(1499)))
        );
        assert_eq!(
            split_range("Member;Range=1500-*"),
            Some(("Member", 1500, None))
        );
        assert_eq!(split_range("member"), None);
        let attr = |desc, values: &[&'static [u8]]| RawAttr {
            desc,
            values: values.iter().copied().collect(),
        };
        let (a, r) = to_attributes(&[attr("member", &[]), attr("member;range=0-1", &[b"a", b"b"])]);
        assert_eq!(a.get("member").len(), 2);
        assert_eq!(r, vec![("member".to_string(), Some(1))]);
        // A plain attribute with values wins over a ranged one.
        let (a, r) = to_attributes(&[
            attr("member", &[b"a", b"b", b"c"]),
            attr("member;range=0-1", &[b"a", b"b"]),
        ]);
        assert_eq!(a.get("member").len(), 3);
        assert!(r.is_empty());
    }

    #[test]
    fn credentials_are_never_kept() {
        let attr = |desc, values: &[&'static [u8]]| RawAttr {
            desc,
            values: values.iter().copied().collect(),
        };
        for ranged in [false, true] {
            let mut attrs = vec![
                attr("mail", &[b"a@example.com"]),
                attr("userPassword", &[b"{SSHA}hash"]),
                attr("UnicodePwd", &[b"x"]),
                attr("krbPrincipalKey;binary", &[b"k"]),
            ];
            if ranged {
                attrs.push(attr("member;range=0-*", &[b"cn=a"]));
            }
            let (a, _) = to_attributes(&attrs);
            let names: Vec<&str> = a.iter().map(|(n, _)| n).collect();
            assert!(names.contains(&"mail"), "{names:?}");
            for secret in ["userPassword", "unicodePwd", "krbPrincipalKey"] {
                assert!(!a.has(secret), "{secret} kept: {names:?}");
            }
        }
    }

    #[test]
    fn dns_compare_case_and_space_insensitively() {
        assert_eq!(
            normalize_dn("CN=Doe\\, Jane, OU=People,DC=Example,DC=test"),
            normalize_dn("cn=doe\\2c jane,ou=people,dc=example,dc=test")
        );
        assert_eq!(
            normalize_dn("uid=a+cn=B,dc=x"),
            normalize_dn("CN=b + UID=a, dc=x")
        );
        assert_ne!(normalize_dn("cn=a,dc=x"), normalize_dn("cn=a\\,dc=x"));
        assert_eq!(normalize_dn("cn=Zoë Ñúñez,dc=x"), "cn=zoë ñúñez,dc=x");
        // The fast path and the full path agree.
        assert_eq!(normalize_dn("CN=A B,DC=x"), normalize_dn("CN=A B, DC=x"));
        assert_eq!(normalize_dn("CN=A B,DC=x"), "cn=a b,dc=x");
    }
}
