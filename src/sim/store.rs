//! The simulator's in-memory company: users and groups in creation order, a case-insensitive
//! `userName` index, rendering of stored records as SCIM JSON (with `meta`), response
//! projection (`attributes` / `excludedAttributes`), paging, and the seed/save file format
//! (`{"users": [...], "groups": [...]}`, the same shape `GET /_sim/state` answers).
//!
//! Sized for 100,000 users: users live in an [`IndexMap`] (creation order, O(1) lookup by id,
//! O(page) slicing for `startIndex`/`count`), so listing every page of 1,000 is linear overall;
//! `userName eq` filters are answered from the index. A page of whole resources copies each
//! record's JSON text, rendered at its first listing and kept until the record changes, so a
//! page of 1,000 users costs about as much as copying its bytes. Removal shifts the map
//! (O(n)), which the documented 50-per-minute DELETE/PATCH bucket keeps cheap.
//!
//! What does not live here: HTTP handling and authorisation ([`super::scim`]), validation of
//! request bodies ([`super::schema`]).

use super::error::ScimError;
use super::filter::{Compiled, EvalCtx};
use super::schema::{self, Kind, IRONCLAD};
use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// One stored user or group. Its attributes change only through [`Record::touch`], which
/// also forgets the JSON cached for listings.
#[derive(Debug, Clone)]
pub struct Record {
    /// Server-assigned id.
    pub id: String,
    /// Canonical attributes (core at the top level, extensions under their URN), without `id`,
    /// `meta` and `schemas`.
    pub body: Map<String, Value>,
    /// When the resource was created.
    pub created: DateTime<Utc>,
    /// When it last changed.
    pub modified: DateTime<Utc>,
    /// Incremented on every change; rendered as `meta.version` `W/"n"`.
    pub version: u64,
    /// Users only: Ironclad's read-only login provider.
    pub provider: Option<String>,
    /// The full representation as JSON text, with the base address it was rendered for: kept
    /// from the first listing that returns the record until the record changes, so that
    /// paging through 100,000 users copies text instead of rebuilding each one.
    rendered: std::sync::OnceLock<(String, Box<RawValue>)>,
}

impl Record {
    /// A new record stamped now.
    pub fn new(id: String, body: Map<String, Value>, provider: Option<String>) -> Self {
        let now = Utc::now();
        Record {
            id,
            body,
            created: now,
            modified: now,
            version: 1,
            provider,
            rendered: std::sync::OnceLock::new(),
        }
    }

    /// An empty record (for evaluating element-level filters and in tests).
    pub fn placeholder() -> Self {
        Record::new(String::new(), Map::new(), None)
    }

    /// Replaces the attributes and bumps `lastModified` and the version.
    pub fn touch(&mut self, body: Map<String, Value>) {
        self.body = body;
        self.modified = Utc::now().max(self.modified);
        self.version += 1;
        self.rendered = std::sync::OnceLock::new();
    }

    /// The full representation ([`render`]) as JSON text: cached for `base`, rendered afresh
    /// for any other base address.
    pub fn rendered(&self, kind: Kind, base: &str) -> std::borrow::Cow<'_, RawValue> {
        let fresh = || raw_json(&render(kind, self, base));
        let (at, text) = self.rendered.get_or_init(|| (base.to_string(), fresh()));
        if at == base {
            std::borrow::Cow::Borrowed(&**text)
        } else {
            std::borrow::Cow::Owned(fresh())
        }
    }

    /// `userName`, for users.
    pub fn user_name(&self) -> Option<&str> {
        self.body.get("userName").and_then(Value::as_str)
    }
}

/// A rendered resource as JSON text.
pub fn raw_json(v: &Value) -> Box<RawValue> {
    // A `Value` always serializes (its keys are strings).
    serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// A fresh id in the shape of Ironclad's (24 hex digits).
pub fn new_id() -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(24);
    s
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `schemas` array of a stored resource.
pub fn schemas_of(kind: Kind, rec: &Record) -> Value {
    let mut s = vec![Value::String(kind.core().id.into())];
    for ext in kind.extensions() {
        let has = rec.body.contains_key(ext.id) || (ext.id == IRONCLAD && rec.provider.is_some());
        if has {
            s.push(Value::String(ext.id.into()));
        }
    }
    Value::Array(s)
}

/// The `meta` object of a stored resource.
pub fn meta_of(kind: Kind, rec: &Record, base: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("resourceType".into(), json!(kind.resource_type()));
    m.insert("created".into(), json!(time(&rec.created)));
    m.insert("lastModified".into(), json!(time(&rec.modified)));
    m.insert(
        "location".into(),
        json!(format!("{base}/scim/v2/{}/{}", kind.endpoint(), rec.id)),
    );
    m.insert("version".into(), json!(format!("W/\"{}\"", rec.version)));
    m
}

/// The full SCIM representation of a stored resource.
pub fn render(kind: Kind, rec: &Record, base: &str) -> Value {
    let mut m = rec.body.clone();
    if let (Some(p), Kind::User) = (&rec.provider, kind) {
        let ext = m
            .entry(IRONCLAD.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(e) = ext {
            e.insert("provider".into(), json!(p));
        }
    }
    if kind == Kind::Group {
        if let Some(Value::Array(members)) = m.get_mut("members") {
            for member in members.iter_mut() {
                if let Some(id) = member.get("value").and_then(Value::as_str) {
                    let id = id.to_string();
                    *member = json!({
                        "value": id,
                        "$ref": format!("{base}/scim/v2/Users/{id}"),
                        "type": "User",
                    });
                }
            }
        }
    }
    m.insert("schemas".into(), schemas_of(kind, rec));
    m.insert("id".into(), json!(rec.id));
    m.insert("meta".into(), Value::Object(meta_of(kind, rec, base)));
    Value::Object(m)
}

/// Response projection: the `attributes` and `excludedAttributes` query parameters
/// (RFC 7644 §3.9). `schemas` and `id` are always returned.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    include: Vec<(String, Option<String>)>,
    exclude: Vec<(String, Option<String>)>,
}

impl Projection {
    /// Parses the two comma-separated parameters; unknown names are ignored.
    pub fn parse(kind: Kind, attributes: Option<&str>, excluded: Option<&str>) -> Self {
        let list = |s: Option<&str>| -> Vec<(String, Option<String>)> {
            s.map(|s| {
                s.split(',')
                    .filter_map(|p| proj_path(kind, p.trim()))
                    .collect()
            })
            .unwrap_or_default()
        };
        Projection {
            include: list(attributes),
            exclude: list(excluded),
        }
    }

    /// Whether the projection returns resources whole (neither parameter named anything).
    pub fn is_whole(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Applies the projection to a rendered resource.
    pub fn apply(&self, v: Value) -> Value {
        let Value::Object(mut m) = v else { return v };
        if !self.include.is_empty() {
            let mut out = Map::new();
            for keep in ["schemas", "id"] {
                if let Some(x) = m.get(keep) {
                    out.insert(keep.into(), x.clone());
                }
            }
            for (top, sub) in &self.include {
                let Some(x) = m.get(top) else { continue };
                match sub {
                    None => {
                        out.insert(top.clone(), x.clone());
                    }
                    Some(s) => {
                        let picked = pick(x, s);
                        if let Some(p) = picked {
                            match out.get_mut(top) {
                                Some(existing) => merge_pick(existing, p),
                                None => {
                                    out.insert(top.clone(), p);
                                }
                            }
                        }
                    }
                }
            }
            m = out;
        }
        for (top, sub) in &self.exclude {
            if top == "id" || top == "schemas" {
                continue;
            }
            match sub {
                None => {
                    m.remove(top);
                }
                Some(s) => {
                    if let Some(x) = m.get_mut(top) {
                        drop_sub(x, s);
                    }
                }
            }
        }
        Value::Object(m)
    }
}

fn pick(v: &Value, sub: &str) -> Option<Value> {
    match v {
        Value::Object(o) => o.get(sub).map(|x| json!({ sub: x })),
        Value::Array(items) => Some(Value::Array(
            items.iter().filter_map(|i| pick(i, sub)).collect(),
        )),
        _ => None,
    }
}

fn merge_pick(existing: &mut Value, new: Value) {
    match (existing, new) {
        (Value::Object(a), Value::Object(b)) => a.extend(b),
        (Value::Array(a), Value::Array(b)) => {
            for (x, y) in a.iter_mut().zip(b) {
                merge_pick(x, y);
            }
        }
        _ => {}
    }
}

fn drop_sub(v: &mut Value, sub: &str) {
    match v {
        Value::Object(o) => {
            o.remove(sub);
        }
        Value::Array(items) => items.iter_mut().for_each(|i| drop_sub(i, sub)),
        _ => {}
    }
}

/// Resolves one projection path to (top-level key, optional sub-key) in rendered JSON.
fn proj_path(kind: Kind, p: &str) -> Option<(String, Option<String>)> {
    if p.is_empty() {
        return None;
    }
    if let Some(ext) = kind.extension(p) {
        return Some((ext.id.to_string(), None));
    }
    for ext in kind.extensions() {
        if p.len() > ext.id.len()
            && p[..ext.id.len()].eq_ignore_ascii_case(ext.id)
            && p.as_bytes()[ext.id.len()] == b':'
        {
            let rest = &p[ext.id.len() + 1..];
            let name = rest.split('.').next().unwrap_or(rest);
            let a = ext.find(name)?;
            return Some((ext.id.to_string(), Some(a.name.to_string())));
        }
    }
    let core = kind.core();
    let p = if p.len() > core.id.len() && p[..core.id.len()].eq_ignore_ascii_case(core.id) {
        &p[core.id.len() + 1..]
    } else {
        p
    };
    let (name, sub) = match p.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (p, None),
    };
    if let Some(a) = core.find(name) {
        let sub = match sub {
            Some(s) => Some(a.find_sub(s)?.name.to_string()),
            None => None,
        };
        return Some((a.name.to_string(), sub));
    }
    for common in ["id", "externalId", "meta", "schemas"] {
        if common.eq_ignore_ascii_case(name) {
            return Some((common.to_string(), sub.map(str::to_string)));
        }
    }
    None
}

/// The whole company: users and groups.
#[derive(Debug, Default)]
pub struct Store {
    users: IndexMap<String, Record>,
    /// Lower-cased `userName` → id (userName is unique without regard to case).
    user_names: HashMap<String, String>,
    groups: IndexMap<String, Record>,
}

/// Keys for the case-insensitive userName index.
fn key(user_name: &str) -> String {
    user_name.to_lowercase()
}

impl Store {
    /// An empty company.
    pub fn new() -> Self {
        Store::default()
    }

    /// Records of a kind, in creation order.
    pub fn records(&self, kind: Kind) -> &IndexMap<String, Record> {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    /// One record by id.
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Record> {
        self.records(kind).get(id)
    }

    /// A user by userName, without regard to case.
    pub fn user_by_name(&self, user_name: &str) -> Option<&Record> {
        self.user_names
            .get(&key(user_name))
            .and_then(|id| self.users.get(id))
    }

    fn check_unique(&self, user_name: &str, except: Option<&str>) -> Result<(), ScimError> {
        match self.user_names.get(&key(user_name)) {
            Some(id) if Some(id.as_str()) != except => Err(ScimError::uniqueness(format!(
                "a user with userName {user_name} already exists"
            ))),
            _ => Ok(()),
        }
    }

    /// Checks that every group member names an existing user, and normalises members to
    /// `{"value": id}` (duplicates dropped).
    pub fn check_members(&self, body: &mut Map<String, Value>) -> Result<(), ScimError> {
        let Some(Value::Array(members)) = body.get_mut("members") else {
            return Ok(());
        };
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(members.len());
        for m in members.iter() {
            if let Some(t) = m.get("type").and_then(Value::as_str) {
                if !t.eq_ignore_ascii_case("User") {
                    return Err(schema::invalid_at("members.type", &json!(t)));
                }
            }
            let Some(id) = m.get("value").and_then(Value::as_str) else {
                return Err(ScimError::invalid_value(
                    "Invalid value at members.value: a user id is required",
                ));
            };
            if !self.users.contains_key(id) {
                return Err(schema::invalid_at("members.value", &json!(id)));
            }
            if seen.insert(id.to_string()) {
                out.push(json!({ "value": id }));
            }
        }
        if out.is_empty() {
            body.remove("members");
        } else {
            *members = out;
        }
        Ok(())
    }

    /// Adds a user (409 if the userName exists).
    pub fn insert_user(&mut self, rec: Record) -> Result<&Record, ScimError> {
        let name = rec
            .user_name()
            .ok_or_else(|| ScimError::invalid_value("Invalid value at userName: missing"))?
            .to_string();
        self.check_unique(&name, None)?;
        if self.users.contains_key(&rec.id) || self.groups.contains_key(&rec.id) {
            return Err(ScimError::uniqueness(format!(
                "a resource with id {} already exists",
                rec.id
            )));
        }
        self.user_names.insert(key(&name), rec.id.clone());
        let id = rec.id.clone();
        let entry = self.users.entry(id).or_insert(rec);
        Ok(entry)
    }

    /// Replaces a user's attributes (409 if the new userName belongs to another user).
    pub fn update_user(&mut self, id: &str, body: Map<String, Value>) -> Result<(), ScimError> {
        let new_name = body
            .get("userName")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::invalid_value("Invalid value at userName: missing"))?
            .to_string();
        self.check_unique(&new_name, Some(id))?;
        let rec = self
            .users
            .get_mut(id)
            .ok_or_else(|| ScimError::not_found(format!("user {id} not found")))?;
        let old = rec.user_name().map(key);
        rec.touch(body);
        if let Some(old) = old {
            self.user_names.remove(&old);
        }
        self.user_names.insert(key(&new_name), id.to_string());
        Ok(())
    }

    /// Removes a user and takes them out of every group. `None` if unknown.
    pub fn remove_user(&mut self, id: &str) -> Option<Record> {
        let rec = self.users.shift_remove(id)?;
        if let Some(n) = rec.user_name() {
            self.user_names.remove(&key(n));
        }
        for g in self.groups.values_mut() {
            let Some(Value::Array(members)) = g.body.get("members") else {
                continue;
            };
            if members
                .iter()
                .any(|m| m.get("value").and_then(Value::as_str) == Some(id))
            {
                let mut body = g.body.clone();
                if let Some(Value::Array(members)) = body.get_mut("members") {
                    members.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
                    if members.is_empty() {
                        body.remove("members");
                    }
                }
                g.touch(body);
            }
        }
        Some(rec)
    }

    /// Adds a group.
    pub fn insert_group(&mut self, rec: Record) -> Result<&Record, ScimError> {
        if self.users.contains_key(&rec.id) || self.groups.contains_key(&rec.id) {
            return Err(ScimError::uniqueness(format!(
                "a resource with id {} already exists",
                rec.id
            )));
        }
        let id = rec.id.clone();
        Ok(self.groups.entry(id).or_insert(rec))
    }

    /// Replaces a group's attributes.
    pub fn update_group(&mut self, id: &str, body: Map<String, Value>) -> Result<(), ScimError> {
        let rec = self
            .groups
            .get_mut(id)
            .ok_or_else(|| ScimError::not_found(format!("group {id} not found")))?;
        rec.touch(body);
        Ok(())
    }

    /// Removes a group. `None` if unknown.
    pub fn remove_group(&mut self, id: &str) -> Option<Record> {
        self.groups.shift_remove(id)
    }

    /// One page of a listing: `(totalResults, records)`; `start` is 1-based.
    pub fn page(
        &self,
        kind: Kind,
        filter: Option<&Compiled>,
        start: usize,
        count: usize,
        base: &str,
    ) -> (usize, Vec<&Record>) {
        let all = self.records(kind);
        let skip = start.saturating_sub(1);
        match filter {
            None => {
                let end = skip.saturating_add(count).min(all.len());
                let page = if skip < end {
                    (skip..end)
                        .filter_map(|i| all.get_index(i).map(|(_, r)| r))
                        .collect()
                } else {
                    Vec::new()
                };
                (all.len(), page)
            }
            Some(f) => {
                if let (Kind::User, Some(name)) = (kind, f.user_name_eq()) {
                    let hit: Vec<&Record> = self.user_by_name(name).into_iter().collect();
                    let total = hit.len();
                    return (total, hit.into_iter().skip(skip).take(count).collect());
                }
                let ctx = EvalCtx { kind, base };
                let mut total = 0usize;
                let mut page = Vec::new();
                for r in all.values() {
                    if f.matches(r, ctx) {
                        if total >= skip && page.len() < count {
                            page.push(r);
                        }
                        total += 1;
                    }
                }
                (total, page)
            }
        }
    }

    /// The whole state in the seed/save format.
    pub fn to_json(&self, base: &str) -> Value {
        json!({
            "users": self.users.values().map(|r| render(Kind::User, r, base)).collect::<Vec<_>>(),
            "groups": self.groups.values().map(|r| render(Kind::Group, r, base)).collect::<Vec<_>>(),
        })
    }

    /// Loads a seed document (`{"users": [...], "groups": [...]}`, both optional). Resources
    /// keep their `id` and `meta.created`/`lastModified` when present; users without an Ironclad
    /// `provider` get `default_provider`.
    pub fn from_json(doc: &Value, default_provider: &str) -> Result<Store, String> {
        let mut store = Store::new();
        let list = |k: &str| -> Result<Vec<Value>, String> {
            match doc.get(k) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => Err(format!("\"{k}\" must be an array")),
            }
        };
        if !doc.is_object() {
            return Err("the seed must be a JSON object with \"users\" and \"groups\"".into());
        }
        for (i, u) in list("users")?.iter().enumerate() {
            let rec = seed_record(Kind::User, u, Some(default_provider))
                .map_err(|e| format!("users[{i}]: {e}"))?;
            store
                .insert_user(rec)
                .map_err(|e| format!("users[{i}]: {}", e.detail))?;
        }
        for (i, g) in list("groups")?.iter().enumerate() {
            let mut rec =
                seed_record(Kind::Group, g, None).map_err(|e| format!("groups[{i}]: {e}"))?;
            store
                .check_members(&mut rec.body)
                .map_err(|e| format!("groups[{i}]: {}", e.detail))?;
            store
                .insert_group(rec)
                .map_err(|e| format!("groups[{i}]: {}", e.detail))?;
        }
        Ok(store)
    }
}

fn seed_record(kind: Kind, v: &Value, default_provider: Option<&str>) -> Result<Record, String> {
    let cleaned = schema::clean_resource(kind, v).map_err(|e| e.detail)?;
    let mut body = cleaned.body;
    if kind == Kind::User {
        if body.get("userName").and_then(Value::as_str).is_none() {
            return Err("userName is required".into());
        }
        body.entry("active").or_insert(Value::Bool(true));
    } else if body.get("displayName").and_then(Value::as_str).is_none() {
        return Err("displayName is required".into());
    }
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(new_id);
    let provider = default_provider.map(|d| {
        v.get(IRONCLAD)
            .and_then(|e| e.get("provider"))
            .and_then(Value::as_str)
            .unwrap_or(d)
            .to_string()
    });
    let mut rec = Record::new(id, body, provider);
    let meta_time = |k: &str| {
        v.get("meta")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    if let Some(c) = meta_time("created") {
        rec.created = c;
        rec.modified = c;
    }
    if let Some(m) = meta_time("lastModified") {
        rec.modified = m;
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(store: &mut Store, name: &str) -> String {
        let body = json!({"userName": name, "name": {"givenName": "A"}, "active": true});
        let rec = Record::new(
            new_id(),
            body.as_object().unwrap().clone(),
            Some("saml".into()),
        );
        store.insert_user(rec).unwrap().id.clone()
    }

    #[test]
    fn unique_user_names_without_case() {
        let mut s = Store::new();
        let a = user(&mut s, "Alex@Example.com");
        let rec = Record::new(
            new_id(),
            json!({"userName": "alex@example.COM"})
                .as_object()
                .unwrap()
                .clone(),
            None,
        );
        assert_eq!(s.insert_user(rec).unwrap_err().status.as_u16(), 409);
        assert_eq!(s.user_by_name("ALEX@example.com").unwrap().id, a);
        // Renaming to one's own name in another case is fine.
        let body = json!({"userName": "ALEX@EXAMPLE.COM"})
            .as_object()
            .unwrap()
            .clone();
        s.update_user(&a, body).unwrap();
        assert!(s.user_by_name("alex@example.com").is_some());
    }

    #[test]
    fn paging_in_creation_order() {
        let mut s = Store::new();
        let ids: Vec<String> = (0..10).map(|i| user(&mut s, &format!("u{i}@x"))).collect();
        let (total, page) = s.page(Kind::User, None, 4, 3, "");
        assert_eq!(total, 10);
        let got: Vec<&str> = page.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(got, vec![&ids[3], &ids[4], &ids[5]]);
        let (_, page) = s.page(Kind::User, None, 11, 3, "");
        assert!(page.is_empty());
        s.remove_user(&ids[0]);
        let (total, page) = s.page(Kind::User, None, 1, 1, "");
        assert_eq!(total, 9);
        assert_eq!(page[0].id, ids[1]);
    }

    #[test]
    fn cached_listing_text_is_the_rendering_and_follows_every_change() {
        let mut s = Store::new();
        let a = user(&mut s, "a@x");
        let b = user(&mut s, "b@x");
        let g = {
            let body = json!({"displayName": "G", "members": [{"value": a}, {"value": b}]});
            let rec = Record::new(new_id(), body.as_object().unwrap().clone(), None);
            s.insert_group(rec).unwrap().id.clone()
        };
        let text = |s: &Store, kind: Kind, id: &str, base: &str| -> Value {
            serde_json::from_str(s.get(kind, id).unwrap().rendered(kind, base).get()).unwrap()
        };
        let whole = |s: &Store, kind: Kind, id: &str, base: &str| {
            render(kind, s.get(kind, id).unwrap(), base)
        };
        for (kind, id) in [(Kind::User, &a), (Kind::Group, &g)] {
            // Rendered once, then kept; another base address is rendered afresh.
            assert_eq!(
                text(&s, kind, id, "http://h"),
                whole(&s, kind, id, "http://h")
            );
            assert_eq!(
                text(&s, kind, id, "http://h"),
                whole(&s, kind, id, "http://h")
            );
            assert_eq!(
                text(&s, kind, id, "http://o"),
                whole(&s, kind, id, "http://o")
            );
            assert_eq!(
                text(&s, kind, id, "http://o")["meta"]["location"],
                json!(format!("http://o/scim/v2/{}/{id}", kind.endpoint()))
            );
        }
        // An update shows at once, with its new version.
        let body = json!({"userName": "a@x", "title": "Counsel"});
        s.update_user(&a, body.as_object().unwrap().clone())
            .unwrap();
        let now = text(&s, Kind::User, &a, "http://h");
        assert_eq!(now["title"], "Counsel");
        assert_eq!(now["meta"]["version"], "W/\"2\"");
        assert_eq!(now, whole(&s, Kind::User, &a, "http://h"));
        // A removed user leaves the group's cached text too.
        s.remove_user(&b);
        let group = text(&s, Kind::Group, &g, "http://h");
        assert_eq!(group["members"].as_array().unwrap().len(), 1);
        assert_eq!(group, whole(&s, Kind::Group, &g, "http://h"));
    }

    #[test]
    fn removal_leaves_groups() {
        let mut s = Store::new();
        let a = user(&mut s, "a@x");
        let b = user(&mut s, "b@x");
        let mut body =
            json!({"displayName": "G", "members": [{"value": a}, {"value": b}, {"value": a}]})
                .as_object()
                .unwrap()
                .clone();
        s.check_members(&mut body).unwrap();
        assert_eq!(body["members"].as_array().unwrap().len(), 2);
        let g = s
            .insert_group(Record::new(new_id(), body, None))
            .unwrap()
            .id
            .clone();
        s.remove_user(&a);
        let members = &s.get(Kind::Group, &g).unwrap().body["members"];
        assert_eq!(members, &json!([{"value": b}]));
        let mut bad = json!({"displayName": "G", "members": [{"value": "nope"}]})
            .as_object()
            .unwrap()
            .clone();
        assert!(s.check_members(&mut bad).is_err());
    }

    #[test]
    fn projection() {
        let v = json!({"schemas": ["s"], "id": "1", "userName": "u", "title": "t",
                       "name": {"givenName": "g", "familyName": "f"},
                       "emails": [{"value": "e", "type": "work"}],
                       IRONCLAD: {"provider": "saml", "departmentHead": "h"}});
        let p = Projection::parse(
            Kind::User,
            Some("userName,name.givenName,emails.value"),
            None,
        );
        assert_eq!(
            p.apply(v.clone()),
            json!({"schemas": ["s"], "id": "1", "userName": "u", "name": {"givenName": "g"},
                   "emails": [{"value": "e"}]})
        );
        let p = Projection::parse(
            Kind::User,
            None,
            Some("title,id,urn:ietf:params:scim:schemas:extension:ironclad:2.0:User:provider"),
        );
        let out = p.apply(v);
        assert!(out.get("title").is_none());
        assert_eq!(out["id"], "1");
        assert_eq!(out[IRONCLAD], json!({"departmentHead": "h"}));
    }

    #[test]
    fn seed_round_trip() {
        let mut s = Store::new();
        let a = user(&mut s, "a@x");
        let mut body = json!({"displayName": "G", "members": [{"value": a}]})
            .as_object()
            .unwrap()
            .clone();
        s.check_members(&mut body).unwrap();
        s.insert_group(Record::new(new_id(), body, None)).unwrap();
        let doc = s.to_json("http://h");
        let back = Store::from_json(&doc, "local").unwrap();
        assert_eq!(back.to_json("http://h"), doc);
        assert!(Store::from_json(&json!({"users": [{"name": {}}]}), "saml").is_err());
    }
}
