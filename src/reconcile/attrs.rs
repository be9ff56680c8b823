//! Attribute paths on SCIM user JSON (`name.givenName`,
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`), reading and writing
//! them, and the normalised comparison that makes a converged tenant plan zero changes:
//! userName and emails compare case-insensitively, whitespace is trimmed, multi-valued order is
//! ignored, and absent, `null`, `""` and `[]` are the same.
//!
//! What does not live here: deciding which attributes are managed (the mapping does).

use serde_json::{Map, Value};

/// Splits a path into (container keys..., leaf). URN paths put the whole schema URN first.
pub fn split(path: &str) -> Vec<String> {
    if let Some(rest) = path.strip_prefix("urn:") {
        // urn:...:User:attr[.sub] -> ["urn:...:User", "attr", "sub"]
        if let Some(idx) = rest.rfind(':') {
            let urn = format!("urn:{}", &rest[..idx]);
            let mut out = vec![urn];
            out.extend(rest[idx + 1..].split('.').map(str::to_string));
            return out;
        }
    }
    path.split('.').map(str::to_string).collect()
}

/// Reads a path; `Value::Null` when absent.
pub fn get(user: &Value, path: &str) -> Value {
    get_ref(user, path).cloned().unwrap_or(Value::Null)
}

/// Reads a path without copying or allocating; `None` when absent.
pub fn get_ref<'a>(user: &'a Value, path: &str) -> Option<&'a Value> {
    // The keys of `split`, borrowed: a URN path's schema URN, then the dotted rest.
    let (urn, rest) = match path.strip_prefix("urn:").and_then(|r| r.rfind(':')) {
        Some(idx) => (
            path.get(..4 + idx),
            path.get(4 + idx + 1..).unwrap_or_default(),
        ),
        None => (None, path),
    };
    let mut cur = user;
    for key in urn.into_iter().chain(rest.split('.')) {
        cur = cur.get(key).or_else(|| find_ci(cur, key))?;
    }
    Some(cur)
}

fn find_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Writes a path, creating containers; `Value::Null` removes the leaf.
pub fn set(user: &mut Value, path: &str, value: Value) {
    let keys = split(path);
    let Some((leaf, parents)) = keys.split_last() else {
        return;
    };
    let mut cur = user;
    for key in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        let existing = obj.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned();
        let k = existing.unwrap_or_else(|| key.clone());
        cur = obj.entry(k).or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Some(obj) = cur.as_object_mut() {
        let existing = obj.keys().find(|k| k.eq_ignore_ascii_case(leaf)).cloned();
        match (value, existing) {
            (Value::Null, Some(k)) => {
                obj.remove(&k);
            }
            (Value::Null, None) => {}
            (v, Some(k)) => {
                obj.insert(k, v);
            }
            (v, None) => {
                obj.insert(leaf.clone(), v);
            }
        }
    }
}

/// Whether a path compares case-insensitively (Ironclad's userName and email values).
fn case_insensitive(path: &str) -> bool {
    const HEAD: &str = ":departmenthead";
    path.eq_ignore_ascii_case("username")
        || path.eq_ignore_ascii_case("emails")
        || path.eq_ignore_ascii_case("externalid")
        || path
            .len()
            .checked_sub(HEAD.len())
            .and_then(|i| path.get(i..))
            .is_some_and(|end| end.eq_ignore_ascii_case(HEAD))
}

/// The canonical form used for comparison.
pub fn normalize(path: &str, v: &Value) -> Value {
    let ci = case_insensitive(path);
    norm(v, ci)
}

fn norm(v: &Value, ci: bool) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                Value::Null
            } else if ci {
                Value::String(t.to_lowercase())
            } else {
                Value::String(t.to_string())
            }
        }
        Value::Array(items) => {
            let mut out: Vec<Value> = items
                .iter()
                .map(|i| norm(i, ci))
                .filter(|i| !i.is_null())
                .collect();
            if out.is_empty() {
                return Value::Null;
            }
            out.sort_by_key(|a| a.to_string());
            out.dedup();
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, val) in map {
                // `display` and `$ref` on references are server-decorated, not compared.
                if k == "$ref" || k == "display" {
                    continue;
                }
                let n = norm(val, ci);
                // `primary: false` is the same as absent.
                if n.is_null() || (k == "primary" && n == Value::Bool(false)) {
                    continue;
                }
                out.insert(k.to_ascii_lowercase(), n);
            }
            if out.is_empty() {
                Value::Null
            } else {
                Value::Object(out)
            }
        }
        other => other.clone(),
    }
}

/// Whether two values of a path are equal after normalisation.
pub fn same(path: &str, a: &Value, b: &Value) -> bool {
    same_opt(path, Some(a), Some(b))
}

/// [`same`] for values that may be absent (absent is `null`). Equal values and two non-blank
/// strings are decided without building the normalised forms.
pub fn same_opt(path: &str, a: Option<&Value>, b: Option<&Value>) -> bool {
    let null = &Value::Null;
    let (a, b) = (a.unwrap_or(null), b.unwrap_or(null));
    if a == b {
        return true;
    }
    if let (Value::String(x), Value::String(y)) = (a, b) {
        let (x, y) = (x.trim(), y.trim());
        if !x.is_empty() && !y.is_empty() {
            return if !case_insensitive(path) {
                x == y
            } else if x.is_ascii() && y.is_ascii() {
                x.eq_ignore_ascii_case(y)
            } else {
                x.to_lowercase() == y.to_lowercase()
            };
        }
    }
    normalize(path, a) == normalize(path, b)
}

/// Whether a value counts as empty (absent, null, blank, empty list or object).
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
        _ => norm(v, false).is_null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";

    #[test]
    fn urn_paths_split_at_the_last_colon() {
        assert_eq!(
            split(DEPT),
            vec![
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                "department"
            ]
        );
        assert_eq!(split("name.givenName"), vec!["name", "givenName"]);
    }

    #[test]
    fn get_and_set_round_trip() {
        let mut u = json!({"userName": "a@x"});
        set(&mut u, DEPT, json!("Legal"));
        set(&mut u, "name.givenName", json!("Ann"));
        assert_eq!(get(&u, DEPT), json!("Legal"));
        assert_eq!(get(&u, "name.givenName"), json!("Ann"));
        set(&mut u, "name.givenName", Value::Null);
        assert_eq!(get(&u, "name.givenName"), Value::Null);
    }

    #[test]
    fn comparison_ignores_case_order_whitespace_and_absence() {
        assert!(same("userName", &json!("Ann@X.com "), &json!("ann@x.com")));
        assert!(!same("title", &json!("CEO"), &json!("ceo")));
        assert!(same("title", &json!(""), &Value::Null));
        assert!(same(
            "emails",
            &json!([{"value": "B@x", "type": "work", "primary": true}, {"value": "a@x", "type": "home"}]),
            &json!([{"value": "a@x", "type": "home", "primary": false}, {"value": "b@x", "type": "work", "primary": true}])
        ));
        assert!(same("emails", &json!([]), &Value::Null));
        assert!(same("urn:x:User:departmentHead", &json!("A"), &json!(" a")));
        assert!(same("userName", &json!("Ärger@x"), &json!("ärger@X")));
        assert!(!same("title", &json!(" "), &json!("x")));
        assert!(same_opt("title", None, Some(&json!("  "))));
        assert_eq!(
            get_ref(&json!({"name": {"GivenName": "A"}}), "name.givenName"),
            Some(&json!("A"))
        );
        assert_eq!(get_ref(&json!({"name": "A"}), "name.givenName"), None);
        assert!(is_empty(&json!([" "])) && !is_empty(&json!(0)) && is_empty(&json!({})));
    }
}
