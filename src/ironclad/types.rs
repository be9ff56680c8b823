//! SCIM resources as the server sent them. [`ScimUser`] and [`ScimGroup`] wrap the JSON object
//! whole, so every attribute survives a read-modify-PUT, including ones this bridge does not
//! manage or know about; accessors read the common ones. [`PatchOp`] builds PATCH requests.
//!
//! What does not live here: deciding what a user should look like (mapping, reconciliation).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The enterprise User extension URN.
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Ironclad's User extension URN.
pub const IRONCLAD_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:ironclad:2.0:User";
/// The PatchOp message URN.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Looks up `attr` in an object, ignoring ASCII case (SCIM attribute names are
/// case-insensitive).
fn get_ci<'a>(obj: &'a Map<String, Value>, attr: &str) -> Option<&'a Value> {
    obj.get(attr).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v)
    })
}

/// Reads a dotted path (`name.givenName`, or `urn:...:User:department` for an extension) from a
/// resource, ignoring case.
pub fn get_path<'a>(resource: &'a Value, path: &str) -> Option<&'a Value> {
    let obj = resource.as_object()?;
    // An extension attribute: the URN is everything up to the last ':'.
    if path.starts_with("urn:") {
        if let Some(i) = path.rfind(':') {
            let ext = get_ci(obj, &path[..i])?;
            return get_path(ext, &path[i + 1..]);
        }
    }
    let mut cur = resource;
    for part in path.split('.') {
        cur = get_ci(cur.as_object()?, part)?;
    }
    Some(cur)
}

macro_rules! resource_common {
    ($t:ident) => {
        impl $t {
            /// Wraps a JSON object as read from the server.
            pub fn from_value(v: Value) -> Self {
                $t(v)
            }
            /// The whole resource.
            pub fn as_value(&self) -> &Value {
                &self.0
            }
            /// The whole resource, mutable (for a read-modify-PUT).
            pub fn as_value_mut(&mut self) -> &mut Value {
                &mut self.0
            }
            /// Unwraps the JSON.
            pub fn into_value(self) -> Value {
                self.0
            }
            /// The server-assigned `id`.
            pub fn id(&self) -> Option<&str> {
                self.str_attr("id")
            }
            /// `externalId`.
            pub fn external_id(&self) -> Option<&str> {
                self.str_attr("externalId")
            }
            /// Any attribute by dotted path, ignoring case.
            pub fn get(&self, path: &str) -> Option<&Value> {
                get_path(&self.0, path)
            }
            /// A string attribute by dotted path.
            pub fn str_attr(&self, path: &str) -> Option<&str> {
                self.get(path).and_then(Value::as_str)
            }
            /// `meta.lastModified`, as sent.
            pub fn last_modified(&self) -> Option<&str> {
                self.str_attr("meta.lastModified")
            }
        }
    };
}

/// A SCIM User, every attribute kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScimUser(pub Value);
resource_common!(ScimUser);

impl ScimUser {
    /// `userName` (in Ironclad: the email).
    pub fn user_name(&self) -> Option<&str> {
        self.str_attr("userName")
    }
    /// `active`; absent counts as active (Ironclad removes inactive users).
    pub fn active(&self) -> bool {
        self.get("active").and_then(Value::as_bool).unwrap_or(true)
    }
    /// `name.givenName`.
    pub fn given_name(&self) -> Option<&str> {
        self.str_attr("name.givenName")
    }
    /// `name.familyName`.
    pub fn family_name(&self) -> Option<&str> {
        self.str_attr("name.familyName")
    }
    /// `displayName`.
    pub fn display_name(&self) -> Option<&str> {
        self.str_attr("displayName")
    }
    /// `title`.
    pub fn title(&self) -> Option<&str> {
        self.str_attr("title")
    }
    /// The primary email's value, else the first email's.
    pub fn primary_email(&self) -> Option<&str> {
        let emails = self.get("emails")?.as_array()?;
        emails
            .iter()
            .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
            .or_else(|| emails.first())
            .and_then(|e| e.get("value"))
            .and_then(Value::as_str)
    }
}

/// One group member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's id.
    pub value: String,
    /// `display`, when the server sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// `type` (`User` or `Group`), when sent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A SCIM Group, every attribute kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScimGroup(pub Value);
resource_common!(ScimGroup);

impl ScimGroup {
    /// `displayName`.
    pub fn display_name(&self) -> Option<&str> {
        self.str_attr("displayName")
    }
    /// Members (empty when absent or excluded).
    pub fn members(&self) -> Vec<Member> {
        self.get("members")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| serde_json::from_value::<Member>(m.clone()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A PATCH operation kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchKind {
    /// `add`.
    Add,
    /// `replace`.
    Replace,
    /// `remove`.
    Remove,
}

/// One PATCH operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    /// The operation.
    pub op: PatchKind,
    /// Target path (`name.givenName`, `members`, `urn:...:User:department`); `None` for a
    /// whole-resource `add`/`replace` with an object value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The value (absent for most `remove`s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl PatchOp {
    /// `replace path = value`.
    pub fn replace(path: &str, value: Value) -> Self {
        PatchOp {
            op: PatchKind::Replace,
            path: Some(path.to_string()),
            value: Some(value),
        }
    }
    /// `add path = value`.
    pub fn add(path: &str, value: Value) -> Self {
        PatchOp {
            op: PatchKind::Add,
            path: Some(path.to_string()),
            value: Some(value),
        }
    }
    /// `remove path`.
    pub fn remove(path: &str) -> Self {
        PatchOp {
            op: PatchKind::Remove,
            path: Some(path.to_string()),
            value: None,
        }
    }
    /// Adds users (by id) to a group's `members`.
    pub fn add_members<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        PatchOp::add("members", member_values(ids))
    }
    /// Removes users (by id) from a group's `members`, as Ironclad documents it
    /// (`remove` with `path: members` and a value list).
    pub fn remove_members<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        PatchOp {
            op: PatchKind::Remove,
            path: Some("members".to_string()),
            value: Some(member_values(ids)),
        }
    }
}

fn member_values<'a>(ids: impl IntoIterator<Item = &'a str>) -> Value {
    Value::Array(
        ids.into_iter()
            .map(|id| serde_json::json!({ "value": id }))
            .collect(),
    )
}

/// A PatchOp request body.
pub fn patch_body(ops: &[PatchOp]) -> Value {
    serde_json::json!({
        "schemas": [PATCH_OP_SCHEMA],
        "Operations": ops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> ScimUser {
        ScimUser(json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "u1",
            "externalId": "e1",
            "UserName": "a@example.com",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": "x@example.com"}, {"value": "a@example.com", "primary": true}],
            (ENTERPRISE_USER_SCHEMA): {"department": "Legal"},
            "x-unknown": {"kept": true},
        }))
    }

    #[test]
    fn accessors_read_common_attributes_case_insensitively() {
        let u = user();
        assert_eq!(u.id(), Some("u1"));
        assert_eq!(u.external_id(), Some("e1"));
        assert_eq!(u.user_name(), Some("a@example.com"));
        assert_eq!(u.given_name(), Some("Ada"));
        assert_eq!(u.family_name(), Some("Lovelace"));
        assert_eq!(u.primary_email(), Some("a@example.com"));
        assert!(u.active());
        assert_eq!(
            u.str_attr(&format!("{ENTERPRISE_USER_SCHEMA}:department")),
            Some("Legal")
        );
    }

    #[test]
    fn unknown_attributes_survive_a_round_trip() {
        let u = user();
        let text = serde_json::to_string(&u).unwrap();
        let back: ScimUser = serde_json::from_str(&text).unwrap();
        assert_eq!(back, u);
        assert_eq!(back.get("x-unknown.kept"), Some(&json!(true)));
    }

    #[test]
    fn group_members_and_patch_bodies() {
        let g = ScimGroup(
            json!({"id": "g", "displayName": "Legal", "members": [{"value": "u1", "type": "User"}]}),
        );
        assert_eq!(g.members()[0].value, "u1");
        assert_eq!(g.members()[0].kind.as_deref(), Some("User"));
        let body = patch_body(&[PatchOp::add_members(["u2"]), PatchOp::remove("title")]);
        assert_eq!(
            body,
            json!({
                "schemas": [PATCH_OP_SCHEMA],
                "Operations": [
                    {"op": "add", "path": "members", "value": [{"value": "u2"}]},
                    {"op": "remove", "path": "title"}
                ]
            })
        );
    }
}
