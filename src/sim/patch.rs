//! SCIM PATCH (RFC 7644 §3.5.2) applied to a stored resource's attributes: `add`, `replace`
//! and `remove` (operation names without regard to case, as Entra ID capitalises them), with
//! paths parsed by the `scim_v2` crate ([`scim_v2::filter::PatchPath`]):
//! - plain attributes and sub-attributes (`title`, `name.givenName`),
//! - extension URN paths (`urn:...:enterprise:2.0:User:department`, or the bare extension URN),
//! - value paths with an optional sub-attribute (`emails[type eq "work"].value`,
//!   `members[value eq "id"]`),
//! - operations without a path whose value is an object of attributes (Okta and Entra ID send
//!   `{"op": "replace", "value": {"active": false}}`),
//! - group membership: `add`/`remove`/`replace` on `members`, `remove` with a `value` list
//!   naming the members to drop (as Ironclad documents).
//!
//! The caller re-validates the whole result against the schema afterwards, so this module only
//! has to keep the structure canonical. What does not live here: what happens after the patch
//! (`active: false` removing the user, member ids being checked) — see [`super::scim`].

use super::error::ScimError;
use super::filter::{compile_val_filter, ElemFilter};
use super::schema::{self, AttrDef, AttrType, Kind, Mutability, SchemaDef};
use scim_v2::filter::PatchPath;
use serde_json::{Map, Value};
use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Add,
    Replace,
    Remove,
}

/// What a PATCH path designates.
enum Target {
    /// A whole extension object (`urn:...:enterprise:2.0:User`).
    Extension(&'static SchemaDef),
    /// `externalId`.
    ExternalId,
    /// A (sub-)attribute, in the core schema or an extension.
    Attr {
        ext: Option<&'static SchemaDef>,
        attr: &'static AttrDef,
        sub: Option<&'static AttrDef>,
    },
    /// Some elements of a multi-valued attribute, optionally one sub-attribute of them.
    Elements {
        ext: Option<&'static SchemaDef>,
        attr: &'static AttrDef,
        filter: ElemFilter,
        sub: Option<&'static AttrDef>,
    },
}

/// Applies a PatchOp request body to `body` (canonical attributes of one resource).
pub fn apply(kind: Kind, body: &mut Map<String, Value>, request: &Value) -> Result<(), ScimError> {
    let Some(req) = request.as_object() else {
        return Err(ScimError::invalid_syntax(
            "the PATCH body must be a JSON object",
        ));
    };
    let ops = req
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Operations"))
        .map(|(_, v)| v);
    let Some(Value::Array(ops)) = ops else {
        return Err(ScimError::invalid_syntax(
            "the PATCH body needs an \"Operations\" array",
        ));
    };
    for (i, op) in ops.iter().enumerate() {
        apply_one(kind, body, op).map_err(|mut e| {
            e.detail = format!("Operations[{i}]: {}", e.detail);
            e
        })?;
    }
    Ok(())
}

fn field<'a>(op: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    op.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn apply_one(kind: Kind, body: &mut Map<String, Value>, op: &Value) -> Result<(), ScimError> {
    let Some(op) = op.as_object() else {
        return Err(ScimError::invalid_syntax("an operation must be an object"));
    };
    let name = field(op, "op").and_then(Value::as_str).unwrap_or("");
    let kind_of = match name.to_ascii_lowercase().as_str() {
        "add" => OpKind::Add,
        "replace" => OpKind::Replace,
        "remove" => OpKind::Remove,
        _ => {
            return Err(ScimError::invalid_syntax(format!(
                "unknown op {name:?}: use add, replace or remove"
            )))
        }
    };
    let value = field(op, "value");
    let path = match field(op, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim()),
        Some(_) => return Err(ScimError::invalid_path("path must be a string")),
    };
    let Some(path) = path else {
        if kind_of == OpKind::Remove {
            return Err(ScimError::no_target("remove needs a path"));
        }
        let Some(Value::Object(values)) = value else {
            return Err(ScimError::invalid_value(
                "an operation without a path needs an object value",
            ));
        };
        return apply_object(kind, body, kind_of, values);
    };
    let target = resolve(kind, path)?;
    match kind_of {
        OpKind::Remove => remove(body, target, value),
        _ => {
            let Some(value) = value else {
                return Err(ScimError::invalid_value(format!(
                    "{name} on {path} needs a value"
                )));
            };
            set(body, target, kind_of, value, path)
        }
    }
}

/// An operation without a path: every key of the value is an attribute (or an extension URN,
/// or a URN-qualified extension attribute).
fn apply_object(
    kind: Kind,
    body: &mut Map<String, Value>,
    op: OpKind,
    values: &Map<String, Value>,
) -> Result<(), ScimError> {
    for (k, v) in values {
        if ["schemas", "id", "meta"]
            .iter()
            .any(|x| x.eq_ignore_ascii_case(k))
        {
            continue;
        }
        let target = if let Some(ext) = kind.extension(k) {
            Target::Extension(ext)
        } else if let Some((ext, attr)) = schema::split_urn_attr(kind, k) {
            Target::Attr {
                ext: Some(ext),
                attr,
                sub: None,
            }
        } else if k.eq_ignore_ascii_case("externalId") {
            Target::ExternalId
        } else {
            let core = kind.core();
            let name = k
                .strip_prefix(core.id)
                .and_then(|r| r.strip_prefix(':'))
                .unwrap_or(k);
            match core.find(name) {
                // Read-only and write-only attributes in a path-less value are ignored.
                Some(a) if matches!(a.mutability, Mutability::ReadOnly | Mutability::WriteOnly) => {
                    continue
                }
                Some(attr) => Target::Attr {
                    ext: None,
                    attr,
                    sub: None,
                },
                None => continue,
            }
        };
        set(body, target, op, v, k)?;
    }
    Ok(())
}

/// Resolves a PATCH path against the schemas.
fn resolve(kind: Kind, path: &str) -> Result<Target, ScimError> {
    if let Some(ext) = kind.extension(path) {
        return Ok(Target::Extension(ext));
    }
    let parsed: PatchPath = path
        .parse()
        .map_err(|e| ScimError::invalid_path(format!("cannot parse path {path:?}: {e}")))?;
    let unknown = || ScimError::invalid_path(format!("unknown attribute in path {path:?}"));
    let (attr_path, filter, trailing) = match &parsed {
        PatchPath::Attr(a) => (a, None, None),
        PatchPath::Value(vp) => (&vp.attr, Some(&vp.filter), vp.sub_attr.as_deref()),
    };
    let ext: Option<&'static SchemaDef> = match &attr_path.uri {
        None => None,
        Some(u) if u.eq_ignore_ascii_case(kind.core().id) => None,
        Some(u) => Some(kind.extension(u).ok_or_else(unknown)?),
    };
    if ext.is_none() && attr_path.sub_attr.is_none() && filter.is_none() {
        for ro in ["id", "meta", "schemas"] {
            if attr_path.name.eq_ignore_ascii_case(ro) {
                return Err(ScimError::mutability(format!("{ro} is read-only")));
            }
        }
        if attr_path.name.eq_ignore_ascii_case("externalId") {
            return Ok(Target::ExternalId);
        }
    }
    if attr_path.name.eq_ignore_ascii_case("meta") && ext.is_none() {
        return Err(ScimError::mutability("meta is read-only"));
    }
    let schema = ext.unwrap_or_else(|| kind.core());
    let attr = schema.find(&attr_path.name).ok_or_else(unknown)?;
    let sub_name = attr_path.sub_attr.as_deref().or(trailing);
    let sub = match sub_name {
        None => None,
        Some(s) => Some(attr.find_sub(s).ok_or_else(unknown)?),
    };
    let read_only = attr.mutability == Mutability::ReadOnly
        || sub.is_some_and(|s| s.mutability == Mutability::ReadOnly);
    if read_only {
        return Err(ScimError::mutability(format!("{path} is read-only")));
    }
    match filter {
        None => Ok(Target::Attr { ext, attr, sub }),
        Some(vf) => {
            if !(attr.multi && attr.ty == AttrType::Complex) {
                return Err(ScimError::invalid_path(format!(
                    "{} is not a multi-valued complex attribute",
                    attr.name
                )));
            }
            let filter = compile_val_filter(kind, attr, vf).map_err(|e| {
                ScimError::invalid_path(format!("bad filter in path {path:?}: {}", e.detail))
            })?;
            Ok(Target::Elements {
                ext,
                attr,
                filter,
                sub,
            })
        }
    }
}

/// Runs `f` on the object holding a target's attribute: the resource itself or an extension
/// object (taken out and put back, so no borrow outlives the call).
fn with_container<R>(
    body: &mut Map<String, Value>,
    ext: Option<&'static SchemaDef>,
    f: impl FnOnce(&mut Map<String, Value>) -> R,
) -> R {
    match ext {
        None => f(body),
        Some(e) => {
            let mut m = match body.remove(e.id) {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            let r = f(&mut m);
            body.insert(e.id.to_string(), Value::Object(m));
            r
        }
    }
}

/// Drops empty arrays/objects left behind, so "unassigned" stays absent.
fn tidy(body: &mut Map<String, Value>) {
    body.retain(|_, v| match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => {
            o.retain(|_, x| match x {
                Value::Null => false,
                Value::Array(a) => !a.is_empty(),
                Value::Object(m) => !m.is_empty(),
                _ => true,
            });
            !o.is_empty()
        }
        _ => true,
    });
}

fn set(
    body: &mut Map<String, Value>,
    target: Target,
    op: OpKind,
    value: &Value,
    path: &str,
) -> Result<(), ScimError> {
    match target {
        Target::ExternalId => match value {
            Value::Null => {
                body.remove("externalId");
            }
            Value::String(_) => {
                body.insert("externalId".into(), value.clone());
            }
            other => return Err(schema::invalid_at("externalId", other)),
        },
        Target::Extension(ext) => {
            let attrs = schema::clean_extension(ext, value)?;
            with_container(body, Some(ext), |c| {
                for (name, v) in attrs {
                    if let Some(attr) = ext.find(&name) {
                        set_attr(c, attr, op, Some(v));
                    }
                }
            });
        }
        Target::Attr { ext, attr, sub } => {
            if attr.mutability == Mutability::WriteOnly {
                // A password change: accepted and, like Ironclad, never returned.
                return Ok(());
            }
            let shown = ext.map_or(attr.name.to_string(), |e| format!("{}:{}", e.id, attr.name));
            match sub {
                None => {
                    let v = if attr.multi && !value.is_array() && !value.is_null() {
                        // A single element added to a multi-valued attribute.
                        schema::clean_attr(attr, &Value::Array(vec![value.clone()]), &shown)?
                    } else {
                        schema::clean_attr(attr, value, &shown)?
                    };
                    with_container(body, ext, |c| set_attr(c, attr, op, v));
                }
                Some(s) => {
                    if attr.multi {
                        return Err(ScimError::invalid_path(format!(
                            "{path}: select elements with a filter, e.g. {}[type eq \"work\"].{}",
                            attr.name, s.name
                        )));
                    }
                    let v = schema::clean_single(s, value, &format!("{shown}.{}", s.name))?;
                    with_container(body, ext, |c| {
                        let mut obj = match c.remove(attr.name) {
                            Some(Value::Object(o)) => o,
                            _ => Map::new(),
                        };
                        match v {
                            Some(v) => {
                                obj.insert(s.name.to_string(), v);
                            }
                            None => {
                                obj.remove(s.name);
                            }
                        }
                        c.insert(attr.name.to_string(), Value::Object(obj));
                    });
                }
            }
        }
        Target::Elements {
            ext,
            attr,
            filter,
            sub,
        } => {
            let shown = ext.map_or(attr.name.to_string(), |e| format!("{}:{}", e.id, attr.name));
            let new_part: Option<Value> = match sub {
                Some(s) => schema::clean_single(s, value, &format!("{shown}.{}", s.name))?,
                None => schema::clean_single(attr, value, &shown)?,
            };
            with_container(body, ext, |c| {
                let mut items = match c.remove(attr.name) {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                let r = set_elements(&mut items, &filter, sub, new_part, op, path);
                c.insert(attr.name.to_string(), Value::Array(items));
                r
            })?;
        }
    }
    tidy(body);
    Ok(())
}

/// add/replace on the elements a value path selects.
fn set_elements(
    items: &mut Vec<Value>,
    filter: &ElemFilter,
    sub: Option<&'static AttrDef>,
    new_part: Option<Value>,
    op: OpKind,
    path: &str,
) -> Result<(), ScimError> {
    let mut matched = false;
    for item in items.iter_mut().filter(|i| filter.matches(i)) {
        matched = true;
        match (sub, &new_part) {
            (Some(s), Some(v)) => {
                if let Value::Object(o) = item {
                    o.insert(s.name.to_string(), v.clone());
                }
            }
            (Some(s), None) => {
                if let Value::Object(o) = item {
                    o.remove(s.name);
                }
            }
            (None, Some(Value::Object(v))) => {
                if op == OpKind::Replace {
                    *item = Value::Object(v.clone());
                } else if let Value::Object(o) = item {
                    o.extend(v.clone());
                }
            }
            (None, _) => {}
        }
    }
    if !matched {
        // Entra ID replaces `emails[type eq "work"].value` on users without a work email:
        // create the element from the filter's equalities.
        let Some(eqs) = filter.equalities() else {
            return Err(ScimError::no_target(format!("{path} matches no value")));
        };
        let mut elem = Map::new();
        for (k, v) in eqs {
            elem.insert(k.to_string(), v);
        }
        match (sub, new_part) {
            (Some(s), Some(v)) => {
                elem.insert(s.name.to_string(), v);
            }
            (None, Some(Value::Object(v))) => elem.extend(v),
            _ => {}
        }
        items.push(Value::Object(elem));
    }
    if let Some(primary_idx) = last_new_primary(items) {
        demote_other_primaries(items, primary_idx);
    }
    Ok(())
}

/// Sets or merges one attribute's cleaned value in its container.
fn set_attr(c: &mut Map<String, Value>, attr: &AttrDef, op: OpKind, v: Option<Value>) {
    let Some(v) = v else {
        if op == OpKind::Replace {
            c.remove(attr.name);
        }
        return;
    };
    match (attr.multi, attr.ty, op) {
        (true, _, OpKind::Add) => {
            let Value::Array(new) = v else { return };
            let items = c
                .entry(attr.name.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            if !items.is_array() {
                *items = Value::Array(Vec::new());
            }
            if let Value::Array(items) = items {
                let by_value = attr.find_sub("value").is_some();
                let mut seen: HashSet<String> =
                    items.iter().map(|i| identity(i, by_value)).collect();
                let mut new_primary = None;
                for n in new {
                    if seen.insert(identity(&n, by_value)) {
                        if n.get("primary") == Some(&Value::Bool(true)) {
                            new_primary = Some(items.len());
                        }
                        items.push(n);
                    }
                }
                if let Some(i) = new_primary {
                    demote_other_primaries(items, i);
                }
            }
        }
        (false, AttrType::Complex, _) => {
            let Value::Object(new) = v else { return };
            let obj = c
                .entry(attr.name.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            match obj {
                Value::Object(o) => o.extend(new),
                other => *other = Value::Object(new),
            }
        }
        _ => {
            c.insert(attr.name.to_string(), v);
        }
    }
}

/// How duplicates are recognised when adding to a multi-valued attribute: by `value` when the
/// attribute has one (group members), else by the whole element.
fn identity(v: &Value, by_value: bool) -> String {
    if by_value {
        if let Some(s) = v.get("value").and_then(Value::as_str) {
            return format!("v:{s}");
        }
    }
    format!("j:{v}")
}

fn last_new_primary(items: &[Value]) -> Option<usize> {
    let primaries: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, v)| v.get("primary") == Some(&Value::Bool(true)))
        .map(|(i, _)| i)
        .collect();
    (primaries.len() > 1)
        .then(|| primaries.last().copied())
        .flatten()
}

/// RFC 7643 §2.4: at most one `primary: true`; the newest one wins.
fn demote_other_primaries(items: &mut [Value], keep: usize) {
    for (i, item) in items.iter_mut().enumerate() {
        if i != keep && item.get("primary") == Some(&Value::Bool(true)) {
            if let Value::Object(o) = item {
                o.insert("primary".into(), Value::Bool(false));
            }
        }
    }
}

fn remove(
    body: &mut Map<String, Value>,
    target: Target,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    match target {
        Target::ExternalId => {
            body.remove("externalId");
        }
        Target::Extension(ext) => {
            body.remove(ext.id);
        }
        Target::Attr { ext, attr, sub } => with_container(body, ext, |c| match (sub, value) {
            (None, Some(v)) if attr.multi && !v.is_null() => {
                // `{"op": "remove", "path": "members", "value": [{"value": id}]}`.
                let listed: Vec<Value> = match v {
                    Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                let by_value = attr.find_sub("value").is_some();
                let drop: HashSet<String> = listed.iter().map(|i| identity(i, by_value)).collect();
                if let Some(Value::Array(items)) = c.get_mut(attr.name) {
                    items.retain(|i| !drop.contains(&identity(i, by_value)));
                }
            }
            (None, _) => {
                c.remove(attr.name);
            }
            (Some(s), _) => match c.get_mut(attr.name) {
                Some(Value::Object(o)) => {
                    o.remove(s.name);
                }
                Some(Value::Array(items)) => {
                    for i in items.iter_mut() {
                        if let Value::Object(o) = i {
                            o.remove(s.name);
                        }
                    }
                }
                _ => {}
            },
        }),
        Target::Elements {
            ext,
            attr,
            filter,
            sub,
        } => with_container(body, ext, |c| {
            if let Some(Value::Array(items)) = c.get_mut(attr.name) {
                match sub {
                    None => items.retain(|i| !filter.matches(i)),
                    Some(s) => {
                        for i in items.iter_mut().filter(|i| filter.matches(i)) {
                            if let Value::Object(o) = i {
                                o.remove(s.name);
                            }
                        }
                    }
                }
            }
        }),
    }
    tidy(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::schema::{ENTERPRISE, IRONCLAD};
    use serde_json::json;

    fn patch(kind: Kind, body: Value, ops: Value) -> Result<Value, ScimError> {
        let mut b = body.as_object().unwrap().clone();
        apply(
            kind,
            &mut b,
            &json!({"schemas": [schema::PATCH_OP], "Operations": ops}),
        )?;
        Ok(Value::Object(b))
    }

    fn base() -> Value {
        json!({"userName": "a@x", "name": {"givenName": "A", "familyName": "B"}, "active": true,
               "emails": [{"value": "a@x", "type": "work", "primary": true}]})
    }

    #[test]
    fn add_replace_remove_simple() {
        let out = patch(
            Kind::User,
            base(),
            json!([{"op": "add", "path": "title", "value": "Counsel"},
                   {"op": "Replace", "path": "name.givenName", "value": "Alex"},
                   {"op": "remove", "path": "name.familyName"}]),
        )
        .unwrap();
        assert_eq!(out["title"], "Counsel");
        assert_eq!(out["name"], json!({"givenName": "Alex"}));
    }

    #[test]
    fn extension_paths() {
        let out = patch(
            Kind::User,
            base(),
            json!([
                {"op": "add", "path": format!("{ENTERPRISE}:department"), "value": "Legal"},
                {"op": "replace", "path": format!("{ENTERPRISE}:manager.value"), "value": "m1"},
                {"op": "add", "path": IRONCLAD, "value": {"departmentHead": "h@x"}},
            ]),
        )
        .unwrap();
        assert_eq!(
            out[ENTERPRISE],
            json!({"department": "Legal", "manager": {"value": "m1"}})
        );
        assert_eq!(out[IRONCLAD], json!({"departmentHead": "h@x"}));
        let out = patch(
            Kind::User,
            out,
            json!([{"op": "remove", "path": format!("{ENTERPRISE}:department")},
                   {"op": "remove", "path": format!("{ENTERPRISE}:manager")}]),
        )
        .unwrap();
        assert!(out.get(ENTERPRISE).is_none());
        let e = patch(
            Kind::User,
            base(),
            json!([{"op": "add", "path": format!("{IRONCLAD}:provider"), "value": "local"}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("mutability"));
    }

    #[test]
    fn pathless_values() {
        let out = patch(
            Kind::User,
            base(),
            json!([{"op": "replace", "value": {
                "active": false, "name": {"givenName": "Z"},
                ENTERPRISE: {"department": "Ops"},
                format!("{ENTERPRISE}:costCenter"): "7",
                "id": "ignored"
            }}]),
        )
        .unwrap();
        assert_eq!(out["active"], false);
        assert_eq!(out["name"], json!({"givenName": "Z", "familyName": "B"}));
        assert_eq!(
            out[ENTERPRISE],
            json!({"department": "Ops", "costCenter": "7"})
        );
    }

    #[test]
    fn value_paths() {
        let out = patch(
            Kind::User,
            base(),
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@x"},
                   {"op": "add", "path": "emails[type eq \"home\"].value", "value": "h@x"}]),
        )
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([{"value": "b@x", "type": "work", "primary": true},
                   {"type": "home", "value": "h@x"}])
        );
        let out = patch(
            Kind::User,
            out,
            json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
        )
        .unwrap();
        assert_eq!(out["emails"].as_array().unwrap().len(), 1);
        let e = patch(
            Kind::User,
            base(),
            json!([{"op": "replace", "path": "emails[type co \"x\"].value", "value": "c"}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("noTarget"));
    }

    #[test]
    fn invalid_values_and_paths() {
        let e = patch(
            Kind::User,
            base(),
            json!([{"op": "replace", "path": "name.givenName", "value": 123}]),
        )
        .unwrap_err();
        assert!(e.detail.ends_with("Invalid value at name.givenName: 123"));
        let e = patch(
            Kind::User,
            base(),
            json!([{"op": "add", "path": "nickName", "value": "x"}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("invalidPath"));
        let e = patch(Kind::User, base(), json!([{"op": "remove"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("noTarget"));
        let e = patch(Kind::User, base(), json!([{"op": "move", "path": "title"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidSyntax"));
    }

    #[test]
    fn members() {
        let g = json!({"displayName": "G", "members": [{"value": "u1"}]});
        let out = patch(
            Kind::Group,
            g,
            json!([{"op": "add", "path": "members", "value": [{"value": "u2"}, {"value": "u1"}]}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "u1"}, {"value": "u2"}]));
        let out = patch(
            Kind::Group,
            out,
            json!([{"op": "remove", "path": "members", "value": [{"value": "u1"}]}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "u2"}]));
        let out = patch(
            Kind::Group,
            out,
            json!([{"op": "add", "path": "members", "value": [{"value": "u3"}]},
                   {"op": "remove", "path": "members[value eq \"u2\"]"}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "u3"}]));
        let out = patch(
            Kind::Group,
            out,
            json!([{"op": "replace", "path": "members", "value": [{"value": "u9"}]}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "u9"}]));
        let out = patch(
            Kind::Group,
            out,
            json!([{"op": "remove", "path": "members"}]),
        )
        .unwrap();
        assert!(out.get("members").is_none());
    }

    #[test]
    fn new_primary_demotes_old() {
        let out = patch(
            Kind::User,
            base(),
            json!([{"op": "add", "path": "emails", "value": [{"value": "n@x", "primary": true}]}]),
        )
        .unwrap();
        assert_eq!(out["emails"][0]["primary"], false);
        assert_eq!(out["emails"][1]["primary"], true);
    }
}
