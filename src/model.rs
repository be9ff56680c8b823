//! The source-neutral model every directory source yields: entries with a stable id, a locator,
//! case-insensitive multi-valued attributes, groups with members resolved to ids, and the
//! [`Snapshot`] that holds one complete read.
//!
//! What does not live here: reading any particular directory (see [`crate::source`]) and what
//! Ironclad users look like (see [`crate::ironclad`]).

use base64::Engine as _;
use chrono::{DateTime, Utc};
pub use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Attributes holding credentials (password hashes, keys). No source keeps them, so no dump,
/// preview, mapping test or report can print them; names compared case-insensitively, with
/// any `;option` ignored.
pub const SECRET_ATTRIBUTES: &[&str] = &[
    "userPassword",
    "unicodePwd",
    "dBCSPwd",
    "ntPwdHistory",
    "lmPwdHistory",
    "supplementalCredentials",
    "sambaNTPassword",
    "sambaLMPassword",
    "sambaPasswordHistory",
    "krbPrincipalKey",
    "ipaNTHash",
    "userPKCS12",
    "pwdHistory",
    "password",
];

/// Whether an attribute holds a credential (see [`SECRET_ATTRIBUTES`]).
pub fn is_secret_attribute(name: &str) -> bool {
    let base = name.split(';').next().unwrap_or(name);
    SECRET_ATTRIBUTES
        .iter()
        .any(|s| s.eq_ignore_ascii_case(base))
}

/// One attribute value: text, or bytes that are not UTF-8 text (objectGUID, jpegPhoto).
///
/// Text up to 24 bytes is stored inline (no allocation): most directory values (names, mail
/// addresses, flags, dates) are that short, and a snapshot holds millions of them.
///
/// Serialized as a JSON string; binary values as `"base64:<standard base64>"`, and read back
/// as binary from that form. A text value that itself starts with `base64:` is written in the
/// binary form of its UTF-8 bytes (it reads back as those bytes: no text is lost, and no
/// binary value is ever mistaken for text).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// A text value.
    Text(CompactString),
    /// A binary value; its canonical text form is standard base64.
    Binary(Box<[u8]>),
}

/// The values of one attribute, in the order read; one value is kept inline.
pub type Values = SmallVec<[Value; 1]>;

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = match self {
            Value::Text(t) if !t.starts_with(BINARY_PREFIX) => return s.serialize_str(t),
            Value::Text(t) => t.as_bytes(),
            Value::Binary(b) => b,
        };
        s.serialize_str(&format!(
            "{BINARY_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = CompactString::deserialize(d)?;
        match s.strip_prefix(BINARY_PREFIX) {
            None => Ok(Value::Text(s)),
            Some(body) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .map_err(|e| {
                        serde::de::Error::custom(format!("`{BINARY_PREFIX}` value: {e}"))
                    })?;
                Ok(Value::Binary(bytes.into()))
            }
        }
    }
}

/// The prefix of a binary value's serialized form.
pub const BINARY_PREFIX: &str = "base64:";

impl Value {
    /// A text value (stored inline when short, reusing `s`'s buffer otherwise).
    pub fn text(s: String) -> Self {
        Value::Text(CompactString::from_string_buffer(s))
    }
    /// A text value copied from `s` (inline when short, so no allocation).
    pub fn text_str(s: &str) -> Self {
        Value::Text(CompactString::new(s))
    }
    /// A binary value.
    pub fn binary(b: impl Into<Box<[u8]>>) -> Self {
        Value::Binary(b.into())
    }
    /// The canonical text form: the text itself, or base64 of the bytes.
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Value::Text(s) => std::borrow::Cow::Borrowed(s.as_str()),
            Value::Binary(b) => {
                std::borrow::Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b))
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(CompactString::new(s))
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::text(s)
    }
}
impl From<CompactString> for Value {
    fn from(s: CompactString) -> Self {
        Value::Text(s)
    }
}

/// Attributes with case-insensitive names (ASCII), kept in one vector sorted by lower-cased
/// name: a lookup is a binary search comparing names case-insensitively, without allocating.
/// The name as first seen is kept for display. Values keep their order as read.
///
/// Names and short values are stored inline and one value per attribute needs no vector of
/// its own, so a typical attribute (a short name with one short value) costs 56 bytes and no
/// allocation: this is most of a snapshot's memory.
///
/// Serialized as a JSON object `{ "name": [values] }` (binary values as `"base64:..."`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    items: Vec<Attr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Attr {
    name: CompactString,
    values: Values,
}

/// Compares two attribute names as their ASCII-lower-cased forms would compare.
fn cmp_ci(a: &str, b: &str) -> std::cmp::Ordering {
    // A plain loop over both byte slices: the iterator-adaptor form did not optimise as well,
    // and lookups are the mapping's most frequent operation.
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            let (x, y) = (x.to_ascii_lowercase(), y.to_ascii_lowercase());
            if x != y {
                return x.cmp(&y);
            }
        }
    }
    a.len().cmp(&b.len())
}

impl Attributes {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }
    /// An empty set with room for `n` attributes.
    pub fn with_capacity(n: usize) -> Self {
        Attributes {
            items: Vec::with_capacity(n),
        }
    }
    /// Where `name` is, or where it would be inserted.
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.items.binary_search_by(|a| cmp_ci(&a.name, name))
    }
    /// Where `name` is, for lookups. Entries have a few dozen attributes at most: a scan that
    /// compares lengths first finds a name (or its absence) faster than a binary search
    /// comparing case-insensitively at each step.
    fn position(&self, name: &str) -> Option<usize> {
        if self.items.len() <= 32 {
            self.items
                .iter()
                .position(|a| a.name.len() == name.len() && a.name.eq_ignore_ascii_case(name))
        } else {
            self.find(name).ok()
        }
    }
    /// Appends a value to an attribute (created if absent).
    pub fn push(&mut self, name: &str, value: impl Into<Value>) {
        match self.find(name) {
            Ok(i) => self.items[i].values.push(value.into()),
            Err(i) => self.items.insert(
                i,
                Attr {
                    name: name.into(),
                    values: smallvec::smallvec![value.into()],
                },
            ),
        }
    }
    /// Replaces all values of an attribute (the display name becomes `name`).
    pub fn set(&mut self, name: &str, values: impl Into<Values>) {
        let attr = Attr {
            name: name.into(),
            values: values.into(),
        };
        match self.find(name) {
            Ok(i) => self.items[i] = attr,
            Err(i) => self.items.insert(i, attr),
        }
    }
    /// Removes an attribute, returning its values.
    pub fn remove(&mut self, name: &str) -> Option<Values> {
        self.find(name).ok().map(|i| self.items.remove(i).values)
    }
    /// All values of an attribute (empty if absent).
    pub fn get(&self, name: &str) -> &[Value] {
        match self.position(name) {
            Some(i) => &self.items[i].values,
            None => &[],
        }
    }
    /// The values of an attribute, mutable (None if absent).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Values> {
        match self.find(name) {
            Ok(i) => Some(&mut self.items[i].values),
            Err(_) => None,
        }
    }
    /// The first value's text form.
    pub fn first_text(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.get(name).first().map(Value::as_text)
    }
    /// Whether the attribute has at least one value.
    pub fn has(&self, name: &str) -> bool {
        !self.get(name).is_empty()
    }
    /// (display name, values) in lower-cased name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[Value])> {
        self.items
            .iter()
            .map(|a| (a.name.as_str(), a.values.as_slice()))
    }
    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(self.items.len()))?;
        for a in &self.items {
            m.serialize_entry(a.name.as_str(), a.values.as_slice())?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Attributes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of attribute name to a list of values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Attributes, A::Error> {
                let mut out = Attributes::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((name, values)) = map.next_entry::<CompactString, Values>()? {
                    match out.get_mut(&name) {
                        Some(v) => v.extend(values),
                        None => out.set(&name, values),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// One directory object (person or group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The stable id (entryUUID, objectGUID in GUID text form, nsUniqueId, SCIM id...).
    pub id: String,
    /// Where it lives: a DN, or a resource URL.
    pub locator: String,
    /// Its attributes.
    pub attrs: Attributes,
}

/// A group with its direct members resolved to entry ids (users or other groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group entry itself.
    pub entry: Entry,
    /// Ids of direct members (users and groups), sorted and unique.
    pub members: Vec<String>,
}

/// One complete read of a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Which source it came from (a URL or file path, no secrets).
    pub source: String,
    /// When the read started.
    pub read_at: DateTime<Utc>,
    /// People, in the order read.
    pub users: Vec<Entry>,
    /// Groups, in the order read.
    pub groups: Vec<Group>,
}

impl Snapshot {
    /// Transitive user members of every group: group id -> set of user ids. Nested groups are
    /// followed; cycles are cut (each group is visited once per walk).
    pub fn flattened_members(&self) -> HashMap<String, BTreeSet<String>> {
        let users: HashSet<&str> = self.users.iter().map(|u| u.id.as_str()).collect();
        let by_id: HashMap<&str, &Group> = self
            .groups
            .iter()
            .map(|g| (g.entry.id.as_str(), g))
            .collect();
        let mut out = HashMap::with_capacity(self.groups.len());
        for g in &self.groups {
            let mut seen: HashSet<&str> = HashSet::new();
            let mut stack = vec![g.entry.id.as_str()];
            let mut members = BTreeSet::new();
            while let Some(gid) = stack.pop() {
                if !seen.insert(gid) {
                    continue;
                }
                if let Some(group) = by_id.get(gid) {
                    for m in &group.members {
                        if users.contains(m.as_str()) {
                            members.insert(m.clone());
                        } else if by_id.contains_key(m.as_str()) {
                            stack.push(m.as_str());
                        }
                    }
                }
            }
            out.insert(g.entry.id.clone(), members);
        }
        out
    }

    /// Finds a user by stable id.
    pub fn user(&self, id: &str) -> Option<&Entry> {
        self.users.iter().find(|u| u.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            locator: format!("cn={id}"),
            attrs: Attributes::new(),
        }
    }

    #[test]
    fn name_order_is_the_order_of_the_lower_cased_names() {
        let names = [
            "", "a", "A", "ab", "aB", "b", "mail", "MAIL", "mailx", "m_il", "Z", "z[", "é",
        ];
        for x in names {
            for y in names {
                let want = x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase());
                assert_eq!(cmp_ci(x, y), want, "{x:?} vs {y:?}");
            }
        }
    }

    #[test]
    fn attribute_names_are_case_insensitive() {
        let mut a = Attributes::new();
        a.push("mail", "a@example.com");
        a.push("MAIL", "b@example.com");
        assert_eq!(a.get("Mail").len(), 2);
        assert_eq!(a.iter().next().unwrap().0, "mail");
    }

    #[test]
    fn nested_groups_flatten_and_cycles_terminate() {
        let snap = Snapshot {
            source: "t".into(),
            read_at: Utc::now(),
            users: vec![entry("u1"), entry("u2")],
            groups: vec![
                Group {
                    entry: entry("g1"),
                    members: vec!["u1".into(), "g2".into()],
                },
                Group {
                    entry: entry("g2"),
                    members: vec!["u2".into(), "g1".into()],
                },
            ],
        };
        let f = snap.flattened_members();
        assert_eq!(f["g1"].len(), 2);
        assert_eq!(f["g2"].len(), 2);
    }

    #[test]
    fn attributes_serialize_as_an_object_and_read_back() {
        let mut a = Attributes::new();
        a.push("objectGUID", Value::binary(vec![0xff, 0, 7]));
        a.push("cn", "Zoë");
        a.push("CN", "second");
        a.push("note", "base64:not really");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"cn":["Zoë","second"],"note":["base64:YmFzZTY0Om5vdCByZWFsbHk="],"objectGUID":["base64:/wAH"]}"#
        );
        let back: Attributes = serde_json::from_str(&json).unwrap();
        assert_eq!(back.get("objectguid"), &[Value::binary(vec![0xff, 0, 7])]);
        assert_eq!(back.get("CN").len(), 2);
        assert_eq!(
            back.get("note"),
            &[Value::binary(b"base64:not really".to_vec())]
        );
        let bad = serde_json::from_str::<Attributes>(r#"{"x":["base64:%%"]}"#).unwrap_err();
        assert!(bad.to_string().contains("base64:"), "{bad}");
    }

    #[test]
    fn lookups_ignore_case_and_keep_order() {
        let mut a = Attributes::new();
        for n in ["sn", "Mail", "givenName", "cn", "memberOf", "uid"] {
            a.push(n, n);
        }
        let names: Vec<&str> = a.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["cn", "givenName", "Mail", "memberOf", "sn", "uid"]);
        assert_eq!(a.first_text("MAIL").unwrap(), "Mail");
        assert!(a.has("GIVENNAME") && !a.has("given"));
        assert_eq!(
            a.remove("MemberOf").unwrap().as_slice(),
            [Value::from("memberOf")]
        );
        assert_eq!(a.len(), 5);
        a.set("SN", vec![]);
        assert!(!a.has("sn"));
    }

    #[test]
    fn a_short_attribute_is_one_inline_record() {
        assert_eq!(std::mem::size_of::<Value>(), 24);
        assert_eq!(std::mem::size_of::<Attr>(), 56);
        let mut a = Attributes::new();
        a.push("sAMAccountName", "a-fairly-long-account-name-over-24-bytes");
        a.push("cn", "Zoë");
        assert_eq!(a.first_text("samaccountname").unwrap().len(), 40);
        assert_eq!(a.first_text("CN").unwrap(), "Zoë");
    }

    #[test]
    fn binary_values_have_base64_text() {
        assert_eq!(Value::binary(vec![0, 1, 2]).as_text(), "AAEC");
    }
}
