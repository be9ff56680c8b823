//! Compact users: the forms in which one run keeps every desired user and every Ironclad user
//! between reading and planning. A SCIM user as a `serde_json::Value` tree costs several
//! kilobytes (every JSON object is a map with its own allocations); kept as its compact JSON
//! text plus the few fields the planner indexes by, it costs a few hundred bytes. The planner
//! parses one user at a time, compares it and lets it go, so a run over 100,000 people never
//! holds 100,000 trees. The schema URNs every user repeats are kept shortened in that text
//! (see [`JsonText`]).
//!
//! What does not live here: comparison ([`super::attrs`]), planning ([`super::plan`]), reading.

use memchr::memmem::Finder;
use serde::de::Deserializer;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

/// A JSON value kept as its compact text. Serializes as the JSON value itself.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonText(Box<str>);

impl JsonText {
    /// The value's compact text. Serializing JSON values cannot fail (their keys are
    /// strings); `null` stands in should it ever.
    pub fn new<T: Serialize + ?Sized>(v: &T) -> Self {
        JsonText::from_json(serde_json::to_string(v).unwrap_or_else(|_| "null".to_string()))
    }

    /// From JSON text (compact, as a server or `serde_json` wrote it), with the SCIM schema
    /// URNs shortened (see [`SHORT`]).
    pub(crate) fn from_json(text: String) -> Self {
        JsonText(shorten(text).into_boxed_str())
    }

    /// The value as a tree. The text was written from a `Value`, so it always parses; `null`
    /// stands in should it ever not.
    pub fn parse(&self) -> Value {
        serde_json::from_str(&self.full()).unwrap_or(Value::Null)
    }

    /// The JSON text with the schema URNs written out.
    pub fn full(&self) -> Cow<'_, str> {
        lengthen(&self.0)
    }

    /// The text as kept: valid JSON, with the schema URNs shortened (what a fingerprint
    /// hashes; [`JsonText::full`] for the text as sent).
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
        f.write_str(&self.full())
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

/// The SCIM schema URNs every user carries (in `schemas` and as extension keys), each kept as
/// a short JSON string of escaped control characters: about 250 of a listed user's 600 bytes.
/// Text holding any `"\u00` is kept as it is (a server's text could hold such a string itself),
/// and kept text starts with a space (valid JSON whitespace, never written by a serializer)
/// exactly when it was shortened, so that only shortened text is ever lengthened. Members read
/// without a tree (userName, externalId, emails) are untouched.
const SHORT: [(&str, &str); 3] = [
    (
        "\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User\"",
        "\"\\u0001\"",
    ),
    (
        "\"urn:ietf:params:scim:schemas:extension:ironclad:2.0:User\"",
        "\"\\u0002\"",
    ),
    (
        "\"urn:ietf:params:scim:schemas:core:2.0:User\"",
        "\"\\u0003\"",
    ),
];

/// `text` with the URNs of [`SHORT`] shortened, marked by a leading space; as it is when it
/// holds none of them, or already holds an escaped control character.
fn shorten(text: String) -> String {
    let text = match text.starts_with(|c: char| c.is_ascii_whitespace()) {
        true => text.trim_start().to_string(),
        false => text,
    };
    if ESCAPED.find(text.as_bytes()).is_some() {
        return text;
    }
    let Some(mut at) = URN.find(text.as_bytes()) else {
        return text;
    };
    let mut out = String::with_capacity(text.len());
    out.push(' ');
    let mut rest = text.as_str();
    loop {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        rest = match SHORT.iter().find(|(long, _)| tail.starts_with(long)) {
            Some((long, short)) => {
                out.push_str(short);
                &tail[long.len()..]
            }
            None => {
                out.push_str(URN_PREFIX);
                &tail[URN_PREFIX.len()..]
            }
        };
        match URN.find(rest.as_bytes()) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// The text [`shorten`] was given.
fn lengthen(text: &str) -> Cow<'_, str> {
    let Some(mut rest) = text.strip_prefix(' ') else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 256);
    while let Some(at) = ESCAPED.find(rest.as_bytes()) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        rest = match SHORT.iter().find(|(_, short)| tail.starts_with(short)) {
            Some((long, short)) => {
                out.push_str(long);
                &tail[short.len()..]
            }
            None => {
                out.push('"');
                &tail[1..]
            }
        };
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// What every URN of [`SHORT`] starts with.
const URN_PREFIX: &str = "\"urn:ietf:params:scim:schemas:";
static URN: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(URN_PREFIX));
/// A string starting with an escaped control character (what a short URN is).
static ESCAPED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"\\u00"));

/// The members of a SCIM user read without a tree (what the planner indexes by, and for a
/// listed user its `id` and `meta` as text). Every other member is skipped without allocating.
/// A user whose members have other shapes fails to read this way, and the callers fall back to
/// the tree.
#[derive(Deserialize)]
struct TopLevel<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    meta: Option<&'a serde_json::value::RawValue>,
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

    /// From a listed resource's JSON text, without a tree: the indexed members are read in
    /// place and `meta` is cut out of the text. A resource of an unusual shape (a member of
    /// another type than SCIM's, a duplicate member, an escaped `meta` key) goes through the
    /// tree instead, with the same result. `None` for a resource without a string `id`.
    pub fn from_text(text: &str) -> Option<Self> {
        match Self::from_text_fast(text) {
            Some(u) => u,
            None => IroncladUser::from_value(&serde_json::from_str(text).ok()?),
        }
    }

    /// `None` when the text must go through the tree; `Some(None)` for a resource without an
    /// `id`.
    fn from_text_fast(text: &str) -> Option<Option<Self>> {
        // Text laid out over lines is made compact by the tree.
        if text.contains('\n') {
            return None;
        }
        let thin: TopLevel<'_> = serde_json::from_str(text).ok()?;
        let Some(id) = thin.id else {
            return Some(None);
        };
        let (json, version) = match thin.meta {
            None => (text.to_string(), None),
            Some(meta) => {
                let version = match serde_json::from_str::<Meta<'_>>(meta.get()) {
                    Ok(m) => m.last_modified.map(|v| Box::<str>::from(&*v)),
                    Err(_) => return None,
                };
                (without_member(text, meta.get(), "meta")?, version)
            }
        };
        Some(Some(IroncladUser {
            id: (&*id).into(),
            user_name: thin.user_name.as_deref().unwrap_or_default().into(),
            external_id: thin
                .external_id
                .as_deref()
                .filter(|x| !x.is_empty())
                .map(Into::into),
            emails: thin
                .emails
                .iter()
                .filter_map(|e| e.value.as_deref().map(Into::into))
                .collect(),
            version,
            json: JsonText::from_json(json),
        }))
    }
}

impl crate::ironclad::paging::Listed for IroncladUser {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }

    fn decode_page(items: Vec<&serde_json::value::RawValue>) -> Result<Vec<Self>, String> {
        Ok(items
            .into_iter()
            .filter_map(|r| IroncladUser::from_text(r.get()))
            .collect())
    }
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(default, rename = "lastModified", borrow)]
    last_modified: Option<Cow<'a, str>>,
}

/// `object` (a JSON object's text) without its member `key`, whose value is `value` (a slice
/// of `object`). `None` unless the member is found written plainly (`"key"`, optional
/// whitespace, `:`) right before the value.
fn without_member(object: &str, value: &str, key: &str) -> Option<String> {
    let at = (value.as_ptr() as usize).checked_sub(object.as_ptr() as usize)?;
    let end = at.checked_add(value.len())?;
    if end > object.len() {
        return None;
    }
    let before = object.get(..at)?.trim_end();
    let before = before.strip_suffix(':')?.trim_end();
    let before = before
        .strip_suffix('"')?
        .strip_suffix(key)?
        .strip_suffix('"')?;
    let key_at = before.len();
    let head = before.trim_end();
    let (cut_from, cut_to) = match head.strip_suffix(',') {
        // `..., "key": value ...`: the comma before goes with it.
        Some(h) => (h.len(), end),
        None => {
            // `{"key": value, ...}` or `{"key": value}`: the comma after goes with it.
            let rest = object.get(end..)?;
            let trimmed = rest.trim_start();
            match trimmed.strip_prefix(',') {
                Some(r) => (key_at, object.len() - r.len()),
                None => (key_at, end),
            }
        }
    };
    let mut out = String::with_capacity(object.len() - (cut_to - cut_from));
    out.push_str(object.get(..cut_from)?);
    out.push_str(object.get(cut_to..)?);
    Some(out)
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

    #[test]
    fn a_listed_user_read_from_its_text_is_the_one_read_from_its_tree() {
        let texts = [
            // As Ironclad and the simulator write it: meta in the middle.
            r#"{"active":true,"emails":[{"primary":true,"type":"work","value":"a@x"}],"externalId":"e1","id":"u1","meta":{"created":"2026-01-01T00:00:00Z","lastModified":"2026-01-02T00:00:00Z","location":"http://h/Users/u1","resourceType":"User"},"name":{"givenName":"A"},"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User","urn:ietf:params:scim:schemas:extension:ironclad:2.0:User"],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Legal"},"urn:ietf:params:scim:schemas:extension:ironclad:2.0:User":{"provider":"saml"},"userName":"A@x"}"#,
            // meta first, last, alone; spaces around it.
            r#"{"meta":{"lastModified":"v"},"id":"u2","userName":"b"}"#,
            r#"{"id":"u3","userName":"c", "meta" : {"lastModified":"v"} }"#,
            r#"{"id":"u4","meta":{}}"#,
            r#"{ "meta" :{"lastModified":null} , "id":"u5"}"#,
            // No meta; an empty externalId; an email without a value.
            r#"{"id":"u6","externalId":"","emails":[{"type":"home"}]}"#,
            // Shapes that go through the tree: an escaped key, a duplicate member, a number where
            // a string belongs, text over lines, a string that looks like a shortened URN.
            r#"{"id":"u7","\u006deta":{"lastModified":"v"},"userName":"d"}"#,
            r#"{"id":"u8","userName":"x","userName":"y"}"#,
            r#"{"id":"u9","externalId":5}"#,
            "{\n  \"id\": \"u10\",\n  \"meta\": {\"lastModified\": \"v\"}\n}",
            r#"{"id":"u11","title":"\u0001","schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}"#,
            // Key and value text that merely contain "meta".
            r#"{"id":"u12","xmeta":{"a":1},"title":"meta","meta":{"lastModified":"w"}}"#,
        ];
        for t in texts {
            let v: Value = serde_json::from_str(t).unwrap();
            let from_tree = IroncladUser::from_value(&v).unwrap();
            let from_text = IroncladUser::from_text(t).unwrap();
            assert_eq!(from_text.id, from_tree.id, "{t}");
            assert_eq!(from_text.user_name, from_tree.user_name, "{t}");
            assert_eq!(from_text.external_id, from_tree.external_id, "{t}");
            assert_eq!(from_text.emails, from_tree.emails, "{t}");
            assert_eq!(from_text.version, from_tree.version, "{t}");
            assert_eq!(from_text.value(), from_tree.value(), "{t}");
            assert!(from_text.value().get("meta").is_none(), "{t}");
        }
        for t in [r#"{"userName":"x"}"#, r#"{"id":5}"#, "[1]", "not json"] {
            assert!(IroncladUser::from_text(t).is_none(), "{t}");
        }
    }

    #[test]
    fn a_page_of_users_is_decoded_without_trees_and_skips_users_without_an_id() {
        use crate::ironclad::paging::Listed;
        let page = r#"[{"id":"a","userName":"a"},{"userName":"no id"},{"id":"b"}]"#;
        let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(page).unwrap();
        let users = IroncladUser::decode_page(items).unwrap();
        assert_eq!(
            users.iter().map(|u| &*u.id).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert!(IroncladUser::decode_page(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn schema_urns_are_kept_short_and_given_back_whole() {
        let v = json!({
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:User",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                "urn:ietf:params:scim:schemas:extension:ironclad:2.0:User",
                "urn:ietf:params:scim:schemas:core:2.0:Group",
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "m"}},
            "userName": "u@x", "externalId": "e", "emails": [{"value": "u@x"}],
            "title": "urn:ietf:params:scim:schemas:core:2.0:User is a string here too",
        });
        let t = JsonText::new(&v);
        let full = serde_json::to_string(&v).unwrap();
        assert!(t.as_str().len() < full.len() - 150, "{}", t.as_str());
        assert!(t.as_str().starts_with(' '));
        // The kept text is JSON; what is read from it without a tree is unchanged.
        assert!(serde_json::from_str::<Value>(t.as_str()).is_ok());
        assert_eq!(t.top_str("userName").as_deref(), Some("u@x"));
        assert_eq!(t.emails(), vec!["u@x".to_string()]);
        assert_eq!(t.parse(), v);
        assert_eq!(t.full(), full);
        assert_eq!(serde_json::to_value(&t).unwrap(), v);

        // A text already holding an escaped control character is kept as it is.
        let odd = json!({"a": "\u{1}", "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]});
        let t = JsonText::new(&odd);
        assert!(!t.as_str().starts_with(' '));
        assert_eq!(t.parse(), odd);
        // Leading whitespace never makes text look shortened.
        let t = JsonText::from_json("  {\"a\":\"\\u0003\"}".to_string());
        assert_eq!(t.parse(), json!({"a": "\u{3}"}));
    }
}
