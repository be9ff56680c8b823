//! The Ironclad user attributes a mapping may set (its *targets*), how each is named in a
//! mapping file, what type of value it takes, and where it lands in the SCIM user JSON (core,
//! enterprise extension or Ironclad extension schema).
//!
//! What does not live here: evaluating expressions (see [`super::eval`]) and deciding how a
//! value is written to Ironclad (the reconciler reads [`Apply`] and the SCIM paths given here).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The SCIM core user schema.
pub const CORE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The SCIM enterprise user extension schema.
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Ironclad's own user extension schema.
pub const IRONCLAD_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:ironclad:2.0:User";

/// Which schema a target belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Schema {
    /// `urn:ietf:params:scim:schemas:core:2.0:User`.
    Core,
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`.
    Enterprise,
    /// `urn:ietf:params:scim:schemas:extension:ironclad:2.0:User`.
    Ironclad,
}

impl Schema {
    /// The schema URN.
    pub fn urn(self) -> &'static str {
        match self {
            Schema::Core => CORE_SCHEMA,
            Schema::Enterprise => ENTERPRISE_SCHEMA,
            Schema::Ironclad => IRONCLAD_SCHEMA,
        }
    }
}

/// The shape of value a target takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One text value.
    Text,
    /// `true` or `false`.
    Bool,
    /// A list of email addresses (SCIM `emails`, multi-valued complex attribute).
    Emails,
    /// A reference to another user: the manager's `externalId` in `manager.value`.
    Manager,
}

/// One Ironclad user attribute a mapping can set. The list is closed: anything else in a
/// mapping file is an error, and nothing else on an Ironclad user is ever changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Target {
    /// Core `userName` (Ironclad: the user's email address).
    #[serde(rename = "userName")]
    UserName,
    /// Core `name.givenName`.
    #[serde(rename = "name.givenName")]
    GivenName,
    /// Core `name.familyName`.
    #[serde(rename = "name.familyName")]
    FamilyName,
    /// Core `name.formatted`.
    #[serde(rename = "name.formatted")]
    Formatted,
    /// Core `displayName`.
    #[serde(rename = "displayName")]
    DisplayName,
    /// Core `title`.
    #[serde(rename = "title")]
    Title,
    /// Core `emails` (the first is primary, type `work`).
    #[serde(rename = "emails")]
    Emails,
    /// Core `active`.
    #[serde(rename = "active")]
    Active,
    /// Core `externalId`: the stable source id the bridge correlates on.
    #[serde(rename = "externalId")]
    ExternalId,
    /// Enterprise `department`.
    #[serde(rename = "department")]
    Department,
    /// Enterprise `employeeNumber`.
    #[serde(rename = "employeeNumber")]
    EmployeeNumber,
    /// Enterprise `costCenter`.
    #[serde(rename = "costCenter")]
    CostCenter,
    /// Enterprise `organization`.
    #[serde(rename = "organization")]
    Organization,
    /// Enterprise `manager` (its `value` is the manager's externalId).
    #[serde(rename = "manager")]
    Manager,
    /// Ironclad `departmentHead`: the department head's email address.
    #[serde(rename = "departmentHead")]
    DepartmentHead,
    /// Ironclad `allowProviderConversion`.
    #[serde(rename = "allowProviderConversion")]
    AllowProviderConversion,
}

impl Target {
    /// Every supported target, in the order they are written to SCIM JSON and documented.
    pub const ALL: [Target; 16] = [
        Target::UserName,
        Target::ExternalId,
        Target::GivenName,
        Target::FamilyName,
        Target::Formatted,
        Target::DisplayName,
        Target::Title,
        Target::Emails,
        Target::Active,
        Target::Department,
        Target::EmployeeNumber,
        Target::CostCenter,
        Target::Organization,
        Target::Manager,
        Target::DepartmentHead,
        Target::AllowProviderConversion,
    ];

    /// The name written in a mapping file's `[attributes]` table.
    pub fn name(self) -> &'static str {
        match self {
            Target::UserName => "userName",
            Target::GivenName => "name.givenName",
            Target::FamilyName => "name.familyName",
            Target::Formatted => "name.formatted",
            Target::DisplayName => "displayName",
            Target::Title => "title",
            Target::Emails => "emails",
            Target::Active => "active",
            Target::ExternalId => "externalId",
            Target::Department => "department",
            Target::EmployeeNumber => "employeeNumber",
            Target::CostCenter => "costCenter",
            Target::Organization => "organization",
            Target::Manager => "manager",
            Target::DepartmentHead => "departmentHead",
            Target::AllowProviderConversion => "allowProviderConversion",
        }
    }

    /// The schema the attribute belongs to.
    pub fn schema(self) -> Schema {
        match self {
            Target::Department
            | Target::EmployeeNumber
            | Target::CostCenter
            | Target::Organization
            | Target::Manager => Schema::Enterprise,
            Target::DepartmentHead | Target::AllowProviderConversion => Schema::Ironclad,
            _ => Schema::Core,
        }
    }

    /// The attribute's name inside its schema (`givenName` for `name.givenName`).
    fn leaf(self) -> &'static str {
        match self {
            Target::GivenName => "givenName",
            Target::FamilyName => "familyName",
            Target::Formatted => "formatted",
            other => other.name(),
        }
    }

    /// The SCIM attribute path, as used in a PATCH operation's `path`: core attributes by
    /// name (`name.givenName`), extension attributes prefixed by their schema URN
    /// (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`).
    pub fn scim_path(self) -> String {
        match self.schema() {
            Schema::Core => self.name().to_string(),
            s => format!("{}:{}", s.urn(), self.leaf()),
        }
    }

    /// The value's shape.
    pub fn kind(self) -> Kind {
        match self {
            Target::Active | Target::AllowProviderConversion => Kind::Bool,
            Target::Emails => Kind::Emails,
            Target::Manager => Kind::Manager,
            _ => Kind::Text,
        }
    }

    /// Finds a target by the name written in a mapping file. Names are case-insensitive (as
    /// SCIM attribute names are), and extension attributes may also be written with their
    /// schema URN prefix (`urn:...:enterprise:2.0:User:department`).
    pub fn parse(name: &str) -> Option<Target> {
        let lower = name.to_ascii_lowercase();
        let short = [ENTERPRISE_SCHEMA, IRONCLAD_SCHEMA, CORE_SCHEMA]
            .iter()
            .find_map(|urn| {
                lower
                    .strip_prefix(&urn.to_ascii_lowercase())
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(|rest| (urn, rest.to_string()))
            });
        let (urn, leaf) = match short {
            Some((urn, rest)) => (Some(*urn), rest),
            None => (None, lower),
        };
        let t = Target::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(&leaf))?;
        match urn {
            Some(u) if u != t.schema().urn() => None,
            _ => Some(t),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a mapped value is applied to an Ironclad user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// Set on create, and on every run where Ironclad's value differs.
    #[default]
    Always,
    /// Set only when the user is created; later changes in Ironclad are kept.
    OnCreate,
    /// Set on create, and on update only when Ironclad has no value.
    IfEmpty,
}

/// Assembles a SCIM user JSON object from target values, as a tree: the reference the tests
/// hold [`user_json_text`] to.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct UserJson {
    core: serde_json::Map<String, Json>,
    name: serde_json::Map<String, Json>,
    enterprise: serde_json::Map<String, Json>,
    ironclad: serde_json::Map<String, Json>,
}

#[cfg(test)]
impl UserJson {
    /// Sets one target to a value already of the target's shape.
    pub(crate) fn set(&mut self, target: Target, value: Json) {
        let leaf = target.leaf().to_string();
        match target {
            Target::GivenName | Target::FamilyName | Target::Formatted => {
                self.name.insert(leaf, value);
            }
            Target::Manager => {
                let mut m = serde_json::Map::new();
                m.insert("value".to_string(), value);
                self.enterprise.insert(leaf, Json::Object(m));
            }
            t => {
                match t.schema() {
                    Schema::Core => self.core.insert(leaf, value),
                    Schema::Enterprise => self.enterprise.insert(leaf, value),
                    Schema::Ironclad => self.ironclad.insert(leaf, value),
                };
            }
        }
    }

    /// The user JSON, with the `schemas` array listing core and every extension present.
    pub(crate) fn finish(self) -> Json {
        let UserJson {
            mut core,
            name,
            enterprise,
            ironclad,
        } = self;
        let mut schemas = vec![Json::String(CORE_SCHEMA.to_string())];
        if !name.is_empty() {
            core.insert("name".to_string(), Json::Object(name));
        }
        if !enterprise.is_empty() {
            schemas.push(Json::String(ENTERPRISE_SCHEMA.to_string()));
            core.insert(ENTERPRISE_SCHEMA.to_string(), Json::Object(enterprise));
        }
        if !ironclad.is_empty() {
            schemas.push(Json::String(IRONCLAD_SCHEMA.to_string()));
            core.insert(IRONCLAD_SCHEMA.to_string(), Json::Object(ironclad));
        }
        core.insert("schemas".to_string(), Json::Array(schemas));
        Json::Object(core)
    }
}

/// One member's value in [`user_json_text`]: a value as given, a manager (written as
/// `{"value": ...}`), or a nested object of members.
enum Piece<'a> {
    Value(&'a Json),
    Manager(&'a Json),
    Object(Vec<(&'a str, Piece<'a>)>),
    Schemas(Vec<&'static str>),
    Text(&'a str),
}

/// Members sorted by key as a `serde_json::Map` orders them, the last of equal keys kept (as
/// a map's insert keeps it).
fn sorted<'a>(mut members: Vec<(&'a str, Piece<'a>)>) -> Vec<(&'a str, Piece<'a>)> {
    // Stable: equal keys stay in insertion order, and the last of each run is kept.
    members.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<(&str, Piece<'_>)> = Vec::with_capacity(members.len());
    for m in members {
        match out.last_mut() {
            Some(last) if last.0 == m.0 => *last = m,
            _ => out.push(m),
        }
    }
    out
}

/// A JSON string. Most values need no escape: those are copied as they are, after one
/// branch-free pass over their bytes (serde_json escapes byte by byte through a table, which
/// was a tenth of the mapping's time at 100,000 people); any other goes through serde_json.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let plain = !s.as_bytes().iter().fold(false, |esc, &b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn write_value(out: &mut Vec<u8>, v: &Json) {
    match v {
        Json::String(s) => write_str(out, s),
        // Writing JSON values into a Vec cannot fail.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

fn write_piece(out: &mut Vec<u8>, p: &Piece<'_>) {
    match p {
        Piece::Value(v) => write_value(out, v),
        Piece::Manager(v) => {
            out.extend_from_slice(b"{\"value\":");
            write_value(out, v);
            out.push(b'}');
        }
        Piece::Object(members) => write_object(out, members),
        Piece::Schemas(list) => {
            out.push(b'[');
            for (i, s) in list.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, s);
            }
            out.push(b']');
        }
        Piece::Text(t) => write_str(out, t),
    }
}

fn write_object(out: &mut Vec<u8>, members: &[(&str, Piece<'_>)]) {
    out.push(b'{');
    for (i, (k, p)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_piece(out, p);
    }
    out.push(b'}');
}

/// The compact JSON text of the SCIM user made of `values` (in order, a later value of a target
/// replacing an earlier one): core attributes at the top, `name.*` under `name`, extension
/// attributes under their schema URN (the manager as `{"value": ...}`), `schemas` listing core
/// and each extension present, and `extra` as a top-level string member. Members are in
/// `serde_json::Map` order, so the text is what serializing that tree gives; no tree is built.
pub(crate) fn user_json_text<'a>(
    values: impl Iterator<Item = (Target, &'a Json)>,
    extra: Option<(&'a str, &'a str)>,
) -> String {
    let mut core: Vec<(&str, Piece<'_>)> = Vec::new();
    let mut name = Vec::new();
    let mut enterprise = Vec::new();
    let mut ironclad = Vec::new();
    for (target, value) in values {
        let leaf = target.leaf();
        match target {
            Target::GivenName | Target::FamilyName | Target::Formatted => {
                name.push((leaf, Piece::Value(value)))
            }
            Target::Manager => enterprise.push((leaf, Piece::Manager(value))),
            t => match t.schema() {
                Schema::Core => core.push((leaf, Piece::Value(value))),
                Schema::Enterprise => enterprise.push((leaf, Piece::Value(value))),
                Schema::Ironclad => ironclad.push((leaf, Piece::Value(value))),
            },
        }
    }
    let mut schemas = vec![CORE_SCHEMA];
    if !name.is_empty() {
        core.push(("name", Piece::Object(sorted(name))));
    }
    if !enterprise.is_empty() {
        schemas.push(ENTERPRISE_SCHEMA);
        core.push((ENTERPRISE_SCHEMA, Piece::Object(sorted(enterprise))));
    }
    if !ironclad.is_empty() {
        schemas.push(IRONCLAD_SCHEMA);
        core.push((IRONCLAD_SCHEMA, Piece::Object(sorted(ironclad))));
    }
    core.push(("schemas", Piece::Schemas(schemas)));
    if let Some((k, v)) = extra {
        core.push((k, Piece::Text(v)));
    }
    let mut out = Vec::with_capacity(512);
    write_object(&mut out, &sorted(core));
    // Only UTF-8 text and JSON written by serde_json went in.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_the_tree_serialized() {
        use serde_json::json;
        let samples: Vec<(Target, Json)> = vec![
            (Target::ExternalId, json!("ext-1")),
            (Target::UserName, json!("Ann@Example.com")),
            (Target::GivenName, json!("Ann \"Q\" <ü>\n")),
            (Target::FamilyName, json!("Lee \\ Søn\u{1f}\u{7f}\t")),
            (Target::Formatted, json!("Ann Lée 李")),
            (Target::DisplayName, json!("Ann")),
            (Target::Title, json!("Counsel")),
            (
                Target::Emails,
                json!([{"value": "a@x.com", "type": "work", "primary": true}]),
            ),
            (Target::Active, json!(false)),
            (Target::Department, json!("Legal")),
            (Target::EmployeeNumber, json!("42")),
            (Target::CostCenter, json!("CC1")),
            (Target::Organization, json!("Org")),
            (Target::Manager, json!("mgr-ext")),
            (Target::DepartmentHead, json!("head@x.com")),
            (Target::AllowProviderConversion, json!(true)),
            // A target given twice: the later value wins.
            (Target::Title, json!("Senior Counsel")),
            (Target::Department, json!(null)),
        ];
        // Every prefix, and every set of every third member, of the samples.
        let mut sets: Vec<Vec<&(Target, Json)>> = (0..=samples.len())
            .map(|n| samples.iter().take(n).collect())
            .collect();
        for start in 0..3 {
            sets.push(samples.iter().skip(start).step_by(3).collect());
        }
        for set in sets {
            for extra in [None, Some(("__manager_external_id", "m-1"))] {
                let mut tree = UserJson::default();
                for (t, x) in &set {
                    tree.set(*t, x.clone());
                }
                let mut tree = tree.finish();
                if let Some((k, x)) = extra {
                    tree[k] = json!(x);
                }
                let text = user_json_text(set.iter().map(|(t, x)| (*t, x)), extra);
                assert_eq!(text, serde_json::to_string(&tree).unwrap(), "{set:?}");
            }
        }
    }

    #[test]
    fn names_round_trip_and_are_case_insensitive() {
        for t in Target::ALL {
            assert_eq!(Target::parse(t.name()), Some(t));
            assert_eq!(Target::parse(&t.name().to_uppercase()), Some(t));
        }
        assert_eq!(Target::parse("nickName"), None);
        assert_eq!(Target::parse("name"), None);
    }

    #[test]
    fn urn_prefixed_names_must_match_their_schema() {
        assert_eq!(
            Target::parse(&format!("{ENTERPRISE_SCHEMA}:department")),
            Some(Target::Department)
        );
        assert_eq!(
            Target::parse(&format!("{IRONCLAD_SCHEMA}:departmentHead")),
            Some(Target::DepartmentHead)
        );
        assert_eq!(
            Target::parse(&format!("{IRONCLAD_SCHEMA}:department")),
            None
        );
        assert_eq!(
            Target::parse(&format!("{CORE_SCHEMA}:userName")),
            Some(Target::UserName)
        );
    }

    #[test]
    fn scim_paths() {
        assert_eq!(Target::GivenName.scim_path(), "name.givenName");
        assert_eq!(
            Target::Manager.scim_path(),
            format!("{ENTERPRISE_SCHEMA}:manager")
        );
        assert_eq!(
            Target::AllowProviderConversion.scim_path(),
            format!("{IRONCLAD_SCHEMA}:allowProviderConversion")
        );
    }

    #[test]
    fn placement_builds_nested_objects_and_schemas() {
        let mut u = UserJson::default();
        u.set(Target::GivenName, Json::from("Jo"));
        u.set(Target::FamilyName, Json::from("Doe"));
        u.set(Target::Department, Json::from("Legal"));
        u.set(Target::Manager, Json::from("m-1"));
        u.set(Target::DepartmentHead, Json::from("boss@example.com"));
        let j = u.finish();
        assert_eq!(j["name"]["givenName"], "Jo");
        assert_eq!(j["name"]["familyName"], "Doe");
        assert_eq!(j[ENTERPRISE_SCHEMA]["department"], "Legal");
        assert_eq!(j[ENTERPRISE_SCHEMA]["manager"]["value"], "m-1");
        assert_eq!(j[IRONCLAD_SCHEMA]["departmentHead"], "boss@example.com");
        assert_eq!(j["schemas"].as_array().unwrap().len(), 3);
    }
}
