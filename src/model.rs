//! The source-neutral model every directory source yields: entries with a stable id, a locator,
//! case-insensitive multi-valued attributes, groups with members resolved to ids, and the
//! [`Snapshot`] that holds one complete read.
//!
//! What does not live here: reading any particular directory (see [`crate::source`]) and what
//! Ironclad users look like (see [`crate::ironclad`]).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One attribute value: text, or bytes that are not UTF-8 text (objectGUID, jpegPhoto).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A text value.
    Text(String),
    /// A binary value; its canonical text form is standard base64.
    Binary(#[serde(with = "b64")] Vec<u8>),
}

impl Value {
    /// The canonical text form: the text itself, or base64 of the bytes.
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Value::Text(s) => std::borrow::Cow::Borrowed(s),
            Value::Binary(b) => {
                std::borrow::Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b))
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(b)
        ))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        let body = s
            .strip_prefix("base64:")
            .ok_or_else(|| serde::de::Error::custom("not base64:"))?;
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(serde::de::Error::custom)
    }
}

/// Attributes with case-insensitive names. Keys are stored lower-cased (ASCII); the name as
/// first seen is kept for display. Values keep their order as read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    map: BTreeMap<String, (String, Vec<Value>)>,
}

impl Attributes {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a value to an attribute (created if absent).
    pub fn push(&mut self, name: &str, value: impl Into<Value>) {
        self.map
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| (name.to_string(), Vec::new()))
            .1
            .push(value.into());
    }
    /// Replaces all values of an attribute.
    pub fn set(&mut self, name: &str, values: Vec<Value>) {
        self.map
            .insert(name.to_ascii_lowercase(), (name.to_string(), values));
    }
    /// Removes an attribute, returning its values.
    pub fn remove(&mut self, name: &str) -> Option<Vec<Value>> {
        self.map.remove(&name.to_ascii_lowercase()).map(|(_, v)| v)
    }
    /// All values of an attribute (empty if absent).
    pub fn get(&self, name: &str) -> &[Value] {
        self.map
            .get(&name.to_ascii_lowercase())
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
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
        self.map.values().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
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
    fn binary_values_have_base64_text() {
        assert_eq!(Value::Binary(vec![0, 1, 2]).as_text(), "AAEC");
    }
}
