//! Compact users: the forms in which one run keeps every desired user and every Ironclad user
//! between reading and planning. A SCIM user as a `serde_json::Value` tree costs several
//! kilobytes (every JSON object is a map with its own allocations); kept as its compact JSON
//! text plus the few fields the planner indexes by, it costs a few hundred bytes. The planner
//! parses one user at a time, compares it and lets it go, so a run over 100,000 people never
//! holds 100,000 trees.
//!
//! What does not live here: comparison ([`super::attrs`]), planning ([`super::plan`]), reading.

use serde::de::Deserializer;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// A JSON value kept as its compact text. Serializes as the JSON value itself.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonText(Box<str>);

impl JsonText {
    /// The value's compact text. Serializing JSON values cannot fail (their keys are
    /// strings); `null` stands in should it ever.
    pub fn new<T: Serialize + ?Sized>(v: &T) -> Self {
        JsonText(
            serde_json::to_string(v)
                .unwrap_or_else(|_| "null".to_string())
                .into_boxed_str(),
        )
    }

    /// The value as a tree. The text was written from a `Value`, so it always parses; `null`
    /// stands in should it ever not.
    pub fn parse(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A top-level string member, read without building a tree where the member is one of
    /// those the planner indexes by (`userName`, `externalId`).
    pub fn top_str(&self, key: &str) -> Option<String> {
        let fast = match serde_json::from_str::<TopLevel<'_>>(&self.0) {
            Ok(t) if key == "userName" => Some(t.user_name),
            Ok(t) if key == "externalId" => Some(t.external_id),
            _ => None,
        };
        match fast {
            Some(v) => v.map(Cow::into_owned),
            None => self.parse().get(key)?.as_str().map(str::to_string),
        }
    }

    /// The `value` of each entry of the top-level `emails` array, as written.
    pub fn emails(&self) -> Vec<String> {
        match serde_json::from_str::<TopLevel<'_>>(&self.0) {
            Ok(t) => t
                .emails
                .into_iter()
                .filter_map(|e| e.value.map(Cow::into_owned))
                .collect(),
            Err(_) => emails_of(&self.parse())
                .into_iter()
                .map(str::to_string)
                .collect(),
        }
    }
}

impl From<Value> for JsonText {
    fn from(v: Value) -> Self {
        JsonText::new(&v)
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.parse().serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| JsonText::new(&v))
    }
}

/// The members of a SCIM user the planner looks up without a tree. Every other member is
/// skipped without allocating. A user whose members have other shapes fails to read this way,
/// and the callers fall back to the tree.
#[derive(Deserialize)]
struct TopLevel<'a> {
    #[serde(default, rename = "userName", borrow)]
    user_name: Option<Cow<'a, str>>,
    #[serde(default, rename = "externalId", borrow)]
    external_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    emails: Vec<Email<'a>>,
}

#[derive(Deserialize)]
struct Email<'a> {
    #[serde(default, borrow)]
    value: Option<Cow<'a, str>>,
}

/// The `value` of each entry of a user's `emails`, as written.
pub fn emails_of(v: &Value) -> Vec<&str> {
    v.get("emails")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("value").and_then(Value::as_str))
        .collect()
}

/// A resource's `meta.lastModified`.
pub fn last_modified(v: &Value) -> Option<&str> {
    v.get("meta")?.get("lastModified")?.as_str()
}

/// `v` serialized without its top-level `meta` (about a third of a listed user's text).
struct WithoutMeta<'a>(&'a Value);

impl Serialize for WithoutMeta<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        match self.0 {
            Value::Object(o) => {
                let mut m = s.serialize_map(None)?;
                for (k, v) in o.iter().filter(|(k, _)| k.as_str() != "meta") {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            v => v.serialize(s),
        }
    }
}

/// One Ironclad user as listed: its indexed members and the resource as compact text without
/// `meta` (a PUT carries unmanaged attributes back unchanged, so nothing else is dropped;
/// `meta` is read-only, never sent back, and its `lastModified` is kept as `version`).
#[derive(Debug, Clone, PartialEq)]
pub struct IroncladUser {
    /// `id`.
    pub id: Box<str>,
    /// `userName` (empty when absent).
    pub user_name: Box<str>,
    /// `externalId`, when set and not empty.
    pub external_id: Option<Box<str>>,
    /// The `value` of each `emails` entry, as written.
    pub emails: Box<[Box<str>]>,
    /// `meta.lastModified`.
    pub version: Option<Box<str>>,
    json: JsonText,
}

impl IroncladUser {
    /// From a listed resource; `None` for a resource without a string `id` (nothing can be
    /// done with it: it can be neither linked, written nor removed).
    pub fn from_value(v: &Value) -> Option<Self> {
        let s = |key: &str| v.get(key).and_then(Value::as_str);
        Some(IroncladUser {
            id: s("id")?.into(),
            user_name: s("userName").unwrap_or_default().into(),
            external_id: s("externalId").filter(|x| !x.is_empty()).map(Into::into),
            emails: emails_of(v).into_iter().map(Into::into).collect(),
            version: last_modified(v).map(Into::into),
            json: JsonText::new(&WithoutMeta(v)),
        })
    }

    /// The resource as a tree, without `meta`.
    pub fn value(&self) -> Value {
        self.json.parse()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ironclad_user_keeps_the_whole_resource_and_indexes_its_keys() {
        let v = json!({
            "id": "u1", "userName": "Ann@Example.com", "externalId": "",
            "emails": [{"value": "ann@example.com", "primary": true, "type": "work"}, {"type": "home"}],
            "meta": {"lastModified": "2026-01-01T00:00:00Z", "location": "x"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "m"}},
            "custom": [1, {"a": null}]
        });
        let u = IroncladUser::from_value(&v).unwrap();
        assert_eq!(&*u.id, "u1");
        assert_eq!(&*u.user_name, "Ann@Example.com");
        assert_eq!(u.external_id, None);
        assert_eq!(u.emails.len(), 1);
        assert_eq!(&*u.emails[0], "ann@example.com");
        assert_eq!(u.version.as_deref(), Some("2026-01-01T00:00:00Z"));
        let mut without = v.clone();
        without.as_object_mut().unwrap().remove("meta");
        assert_eq!(u.value(), without);
        assert!(IroncladUser::from_value(&json!({"userName": "x"})).is_none());
        assert!(IroncladUser::from_value(&json!({"id": 5})).is_none());
    }

    #[test]
    fn json_text_round_trips_and_reads_top_level_members() {
        let v = json!({"userName": "a\"b@x", "externalId": "e1", "emails": [{"value": "a@x"}], "name": {"givenName": "A"}});
        let t = JsonText::new(&v);
        assert_eq!(t.parse(), v);
        assert_eq!(t.top_str("userName").as_deref(), Some("a\"b@x"));
        assert_eq!(t.top_str("externalId").as_deref(), Some("e1"));
        assert_eq!(t.top_str("title"), None);
        assert_eq!(t.emails(), vec!["a@x".to_string()]);
        let s = serde_json::to_string(&t).unwrap();
        let back: JsonText = serde_json::from_str(&s).unwrap();
        assert_eq!(back, t);
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
    }
}
