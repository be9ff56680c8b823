//! The SCIM schemas the simulator serves and enforces: Ironclad's User (core, enterprise and
//! Ironclad extensions) and Group, as attribute definitions that drive three things at once:
//! the `/Schemas` documents, the validation and canonicalisation of request bodies
//! (`400 invalidValue` naming the field), and the resolution of filter and PATCH paths.
//!
//! What does not live here: storing resources ([`super::store`]), evaluating filters
//! ([`super::filter`]) and applying PATCH operations ([`super::patch`]).

use super::error::ScimError;
use serde_json::{json, Map, Value};

/// URN of the core User schema.
pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// URN of the core Group schema.
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// URN of the enterprise User extension.
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// URN of Ironclad's own User extension.
pub const IRONCLAD: &str = "urn:ietf:params:scim:schemas:extension:ironclad:2.0:User";
/// URN of SCIM list responses.
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// URN of SCIM PATCH requests.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// URN of SCIM error bodies.
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The data type of an attribute (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// A JSON string.
    String,
    /// A JSON boolean.
    Boolean,
    /// A JSON integer.
    Integer,
    /// A JSON number.
    Decimal,
    /// An RFC 3339 timestamp in a JSON string.
    DateTime,
    /// A URI in a JSON string.
    Reference,
    /// A JSON object with sub-attributes.
    Complex,
}

impl AttrType {
    fn name(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Integer => "integer",
            AttrType::Decimal => "decimal",
            AttrType::DateTime => "dateTime",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }
}

/// Whether and how a client may write an attribute (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Set by the server only; client values are ignored.
    ReadOnly,
    /// Freely writable.
    ReadWrite,
    /// Written once (on create, or with a new multi-valued element).
    Immutable,
    /// Accepted but never returned (passwords).
    WriteOnly,
}

impl Mutability {
    fn name(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// One attribute definition.
#[derive(Debug)]
pub struct AttrDef {
    /// Canonical name (the spelling the simulator stores and returns).
    pub name: &'static str,
    /// Data type.
    pub ty: AttrType,
    /// Whether the attribute holds an array.
    pub multi: bool,
    /// Whether a resource must carry it.
    pub required: bool,
    /// Whether string comparisons respect case.
    pub case_exact: bool,
    /// Who may write it.
    pub mutability: Mutability,
    /// `always`, `default` or `never`.
    pub returned: &'static str,
    /// `none` or `server`.
    pub uniqueness: &'static str,
    /// Suggested values.
    pub canonical: &'static [&'static str],
    /// Resource types a reference may point to.
    pub reference_types: &'static [&'static str],
    /// Sub-attributes of a complex attribute.
    pub sub: &'static [AttrDef],
    /// Human description for `/Schemas`.
    pub description: &'static str,
}

impl AttrDef {
    const fn new(name: &'static str, ty: AttrType, description: &'static str) -> AttrDef {
        AttrDef {
            name,
            ty,
            multi: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: "default",
            uniqueness: "none",
            canonical: &[],
            reference_types: &[],
            sub: &[],
            description,
        }
    }
    const fn multi(mut self) -> Self {
        self.multi = true;
        self
    }
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn case_exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    const fn mutability(mut self, m: Mutability) -> Self {
        self.mutability = m;
        self
    }
    const fn returned(mut self, r: &'static str) -> Self {
        self.returned = r;
        self
    }
    const fn unique(mut self) -> Self {
        self.uniqueness = "server";
        self
    }
    const fn canonical(mut self, c: &'static [&'static str]) -> Self {
        self.canonical = c;
        self
    }
    const fn refs(mut self, r: &'static [&'static str]) -> Self {
        self.reference_types = r;
        self
    }
    const fn sub(mut self, s: &'static [AttrDef]) -> Self {
        self.sub = s;
        self
    }

    /// Finds a sub-attribute by name, ignoring case (SCIM attribute names are case-insensitive).
    pub fn find_sub(&self, name: &str) -> Option<&'static AttrDef> {
        find(self.sub, name)
    }

    /// The `/Schemas` representation of this attribute.
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.ty.name()));
        m.insert("multiValued".into(), json!(self.multi));
        m.insert("description".into(), json!(self.description));
        m.insert("required".into(), json!(self.required));
        if !self.canonical.is_empty() {
            m.insert("canonicalValues".into(), json!(self.canonical));
        }
        if matches!(
            self.ty,
            AttrType::String | AttrType::Reference | AttrType::DateTime
        ) {
            m.insert("caseExact".into(), json!(self.case_exact));
        }
        m.insert("mutability".into(), json!(self.mutability.name()));
        m.insert("returned".into(), json!(self.returned));
        m.insert("uniqueness".into(), json!(self.uniqueness));
        if self.ty == AttrType::Reference {
            m.insert("referenceTypes".into(), json!(self.reference_types));
        }
        if !self.sub.is_empty() {
            let subs: Vec<Value> = self.sub.iter().map(AttrDef::to_json).collect();
            m.insert("subAttributes".into(), Value::Array(subs));
        }
        Value::Object(m)
    }
}

/// A schema: an id (URN), a name and its attributes.
#[derive(Debug)]
pub struct SchemaDef {
    /// The schema URN.
    pub id: &'static str,
    /// Short name.
    pub name: &'static str,
    /// Human description.
    pub description: &'static str,
    /// Top-level attributes.
    pub attributes: &'static [AttrDef],
}

impl SchemaDef {
    /// Finds a top-level attribute by name, ignoring case.
    pub fn find(&self, name: &str) -> Option<&'static AttrDef> {
        find(self.attributes, name)
    }

    /// The `/Schemas/{id}` document.
    pub fn to_json(&self, base: &str) -> Value {
        let attrs: Vec<Value> = self.attributes.iter().map(AttrDef::to_json).collect();
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": attrs,
            "meta": {
                "resourceType": "Schema",
                "location": format!("{base}/scim/v2/Schemas/{}", self.id),
            }
        })
    }
}

fn find(attrs: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

use AttrType as T;
use Mutability as M;

const NAME_SUB: &[AttrDef] = &[
    AttrDef::new(
        "formatted",
        T::String,
        "The full name, formatted for display.",
    ),
    // Declared required so generic clients fill them in; the simulator itself only insists on
    // a non-empty `name` (all Ironclad documents).
    AttrDef::new("familyName", T::String, "The family name (last name).").required(),
    AttrDef::new("givenName", T::String, "The given name (first name).").required(),
];

const EMAIL_SUB: &[AttrDef] = &[
    AttrDef::new("value", T::String, "The email address."),
    AttrDef::new("type", T::String, "The kind of address.").canonical(&["work", "home", "other"]),
    AttrDef::new(
        "primary",
        T::Boolean,
        "The primary address; the primary work address mirrors userName.",
    ),
];

/// Core User attributes as Ironclad documents them. `active` comes last on purpose: setting it
/// to false removes the user, and generic checkers walk attributes in this order.
const USER_ATTRS: &[AttrDef] = &[
    AttrDef::new(
        "userName",
        T::String,
        "The user's email address; unique, case-insensitive.",
    )
    .required()
    .unique(),
    AttrDef::new("name", T::Complex, "The user's name; required on create.")
        .required()
        .sub(NAME_SUB),
    AttrDef::new("title", T::String, "The user's job title."),
    AttrDef::new(
        "password",
        T::String,
        "Only on create, and only required when the company has no SAML configuration: \
         16+ characters with lower, upper, digit and special character.",
    )
    .mutability(M::WriteOnly)
    .returned("never")
    .case_exact(),
    AttrDef::new("emails", T::Complex, "Email addresses.")
        .multi()
        .sub(EMAIL_SUB),
    AttrDef::new(
        "active",
        T::Boolean,
        "Setting it to false removes the user from the company (later reads answer 404).",
    ),
];

const MANAGER_SUB: &[AttrDef] = &[
    AttrDef::new("value", T::String, "The manager's user id.").case_exact(),
    AttrDef::new("$ref", T::Reference, "The manager's URI.")
        .refs(&["User"])
        .case_exact(),
    AttrDef::new("displayName", T::String, "The manager's name.").mutability(M::ReadOnly),
];

const ENTERPRISE_ATTRS: &[AttrDef] = &[
    AttrDef::new("employeeNumber", T::String, "Employee number."),
    AttrDef::new("costCenter", T::String, "Cost center."),
    AttrDef::new("organization", T::String, "Organization."),
    AttrDef::new("department", T::String, "Department."),
    AttrDef::new("manager", T::Complex, "The user's manager.").sub(MANAGER_SUB),
];

const IRONCLAD_ATTRS: &[AttrDef] = &[
    AttrDef::new(
        "departmentHead",
        T::String,
        "Email of the head of the user's department.",
    ),
    AttrDef::new(
        "allowProviderConversion",
        T::Boolean,
        "Whether the user's login provider may be converted.",
    ),
    AttrDef::new("provider", T::String, "The user's login provider.")
        .mutability(M::ReadOnly)
        .canonical(&["local", "magicLink", "saml", "google"]),
];

const MEMBER_SUB: &[AttrDef] = &[
    AttrDef::new("value", T::String, "The member's user id.")
        .mutability(M::Immutable)
        .case_exact(),
    AttrDef::new("$ref", T::Reference, "The member's URI.")
        .mutability(M::Immutable)
        .refs(&["User"])
        .case_exact(),
    AttrDef::new("type", T::String, "The member's resource type.")
        .mutability(M::Immutable)
        .canonical(&["User"]),
];

const GROUP_ATTRS: &[AttrDef] = &[
    AttrDef::new("displayName", T::String, "The group's name.").required(),
    AttrDef::new("members", T::Complex, "The users in the group.")
        .multi()
        .sub(MEMBER_SUB),
];

/// The core User schema.
pub static USER_SCHEMA: SchemaDef = SchemaDef {
    id: USER,
    name: "User",
    description: "Ironclad user",
    attributes: USER_ATTRS,
};
/// The enterprise User extension.
pub static ENTERPRISE_SCHEMA: SchemaDef = SchemaDef {
    id: ENTERPRISE,
    name: "EnterpriseUser",
    description: "Enterprise user extension",
    attributes: ENTERPRISE_ATTRS,
};
/// Ironclad's User extension.
pub static IRONCLAD_SCHEMA: SchemaDef = SchemaDef {
    id: IRONCLAD,
    name: "IroncladUser",
    description: "Ironclad user extension",
    attributes: IRONCLAD_ATTRS,
};
/// The core Group schema.
pub static GROUP_SCHEMA: SchemaDef = SchemaDef {
    id: GROUP,
    name: "Group",
    description: "Group",
    attributes: GROUP_ATTRS,
};

static USER_EXTENSIONS: &[&SchemaDef] = &[&ENTERPRISE_SCHEMA, &IRONCLAD_SCHEMA];

/// The two resource kinds the simulator stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/Users`.
    User,
    /// `/Groups`.
    Group,
}

impl Kind {
    /// The core schema.
    pub fn core(self) -> &'static SchemaDef {
        match self {
            Kind::User => &USER_SCHEMA,
            Kind::Group => &GROUP_SCHEMA,
        }
    }
    /// The extension schemas a resource of this kind may carry.
    pub fn extensions(self) -> &'static [&'static SchemaDef] {
        match self {
            Kind::User => USER_EXTENSIONS,
            Kind::Group => &[],
        }
    }
    /// The extension whose URN is `urn` (case-insensitive).
    pub fn extension(self, urn: &str) -> Option<&'static SchemaDef> {
        self.extensions()
            .iter()
            .copied()
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }
    /// `User` or `Group`.
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
    /// `Users` or `Groups`.
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }
}

/// Every schema `/Schemas` lists: the resource schemas plus the three discovery schemas.
pub fn all_schemas_json(base: &str) -> Vec<Value> {
    let mut out: Vec<Value> = [
        &USER_SCHEMA,
        &ENTERPRISE_SCHEMA,
        &IRONCLAD_SCHEMA,
        &GROUP_SCHEMA,
    ]
    .iter()
    .map(|s| s.to_json(base))
    .collect();
    out.extend(discovery_schemas(base));
    out
}

/// One schema document by id, if known.
pub fn schema_json(base: &str, id: &str) -> Option<Value> {
    all_schemas_json(base)
        .into_iter()
        .find(|s| s.get("id").and_then(Value::as_str) == Some(id))
}

/// The schemas of the discovery resources themselves (RFC 7643 §7, §5, §6), abridged to the
/// attributes a client reads.
fn discovery_schemas(base: &str) -> Vec<Value> {
    fn a(name: &str, ty: &str, multi: bool, required: bool) -> Value {
        json!({
            "name": name, "type": ty, "multiValued": multi, "required": required,
            "caseExact": false, "mutability": "readOnly", "returned": "default",
            "uniqueness": "none", "description": name
        })
    }
    fn complex(name: &str, multi: bool, required: bool, subs: Vec<Value>) -> Value {
        let mut v = a(name, "complex", multi, required);
        if let Some(m) = v.as_object_mut() {
            m.remove("caseExact");
            m.insert("subAttributes".into(), Value::Array(subs));
        }
        v
    }
    fn doc(base: &str, id: &str, name: &str, attrs: Vec<Value>) -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": id, "name": name, "description": name, "attributes": attrs,
            "meta": {"resourceType": "Schema", "location": format!("{base}/scim/v2/Schemas/{id}")}
        })
    }
    let supported = |n: &str| complex(n, false, true, vec![a("supported", "boolean", false, true)]);
    let attribute_subs = || {
        vec![
            a("name", "string", false, true),
            a("type", "string", false, true),
            a("multiValued", "boolean", false, true),
            a("description", "string", false, false),
            a("required", "boolean", false, false),
            a("canonicalValues", "string", true, false),
            a("caseExact", "boolean", false, false),
            a("mutability", "string", false, false),
            a("returned", "string", false, false),
            a("uniqueness", "string", false, false),
            a("referenceTypes", "string", true, false),
        ]
    };
    let mut attribute_with_subs = attribute_subs();
    attribute_with_subs.push(complex("subAttributes", true, false, attribute_subs()));
    vec![
        doc(
            base,
            "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig",
            "Service Provider Configuration",
            vec![
                a("documentationUri", "reference", false, false),
                complex(
                    "patch",
                    false,
                    true,
                    vec![a("supported", "boolean", false, true)],
                ),
                complex(
                    "bulk",
                    false,
                    true,
                    vec![
                        a("supported", "boolean", false, true),
                        a("maxOperations", "integer", false, true),
                        a("maxPayloadSize", "integer", false, true),
                    ],
                ),
                complex(
                    "filter",
                    false,
                    true,
                    vec![
                        a("supported", "boolean", false, true),
                        a("maxResults", "integer", false, true),
                    ],
                ),
                supported("changePassword"),
                supported("sort"),
                supported("etag"),
                complex(
                    "authenticationSchemes",
                    true,
                    true,
                    vec![
                        a("type", "string", false, true),
                        a("name", "string", false, true),
                        a("description", "string", false, true),
                        a("specUri", "reference", false, false),
                        a("documentationUri", "reference", false, false),
                    ],
                ),
            ],
        ),
        doc(
            base,
            "urn:ietf:params:scim:schemas:core:2.0:ResourceType",
            "ResourceType",
            vec![
                a("id", "string", false, false),
                a("name", "string", false, true),
                a("description", "string", false, false),
                a("endpoint", "reference", false, true),
                a("schema", "reference", false, true),
                complex(
                    "schemaExtensions",
                    true,
                    false,
                    vec![
                        a("schema", "reference", false, true),
                        a("required", "boolean", false, true),
                    ],
                ),
            ],
        ),
        doc(
            base,
            "urn:ietf:params:scim:schemas:core:2.0:Schema",
            "Schema",
            vec![
                a("id", "reference", false, true),
                a("name", "string", false, true),
                a("description", "string", false, false),
                complex("attributes", true, true, attribute_with_subs),
            ],
        ),
    ]
}

/// A resource body after validation: canonical attribute names, only known writable attributes,
/// and the write-only password taken apart (it is never stored).
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Attributes to store (core ones at the top level, extensions under their URN).
    pub body: Map<String, Value>,
    /// The password, if one was sent.
    pub password: Option<String>,
}

/// Validates a client's resource body against `kind`'s schemas.
///
/// Unknown attributes are dropped (as lenient servers do), read-only ones ignored, wrong types
/// answered `400 invalidValue` with a detail like `Invalid value at name.givenName: 123`.
/// Required attributes are not checked here (see [`check_required`]).
pub fn clean_resource(kind: Kind, input: &Value) -> Result<Cleaned, ScimError> {
    let Some(obj) = input.as_object() else {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    };
    let mut out = Cleaned::default();
    for (key, value) in obj {
        if ["schemas", "id", "meta"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key))
        {
            continue;
        }
        if key.eq_ignore_ascii_case("externalId") {
            match value {
                Value::Null => {}
                Value::String(_) => {
                    out.body.insert("externalId".into(), value.clone());
                }
                other => return Err(invalid_at("externalId", other)),
            }
            continue;
        }
        if let Some(ext) = kind.extension(key) {
            let cleaned = clean_extension(ext, value)?;
            merge_extension(&mut out.body, ext.id, cleaned);
            continue;
        }
        if let Some((ext, attr)) = split_urn_attr(kind, key) {
            // `urn:...:enterprise:2.0:User:department` written as a flat key.
            if let Some(v) = clean_attr(attr, value, &format!("{}:{}", ext.id, attr.name))? {
                let mut m = Map::new();
                m.insert(attr.name.to_string(), v);
                merge_extension(&mut out.body, ext.id, m);
            }
            continue;
        }
        let core = kind.core();
        let attr_name = key
            .strip_prefix(core.id)
            .and_then(|rest| rest.strip_prefix(':'))
            .unwrap_or(key);
        let Some(attr) = core.find(attr_name) else {
            continue;
        };
        match attr.mutability {
            M::ReadOnly => continue,
            M::WriteOnly => {
                match value {
                    Value::Null => {}
                    Value::String(s) => out.password = Some(s.clone()),
                    // Never echo a password-like value back.
                    _ => {
                        return Err(ScimError::invalid_value(format!(
                            "Invalid value at {}: expected a string",
                            attr.name
                        )))
                    }
                }
                continue;
            }
            _ => {}
        }
        if let Some(v) = clean_attr(attr, value, attr.name)? {
            out.body.insert(attr.name.to_string(), v);
        }
    }
    Ok(out)
}

fn merge_extension(body: &mut Map<String, Value>, urn: &str, attrs: Map<String, Value>) {
    if attrs.is_empty() {
        return;
    }
    let entry = body
        .entry(urn.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = entry {
        m.extend(attrs);
    }
}

/// Validates an extension object (`{"department": "Legal"}`).
pub fn clean_extension(ext: &SchemaDef, value: &Value) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    match value {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                let Some(attr) = ext.find(k) else { continue };
                if attr.mutability == M::ReadOnly {
                    continue;
                }
                if let Some(v) = clean_attr(attr, v, &format!("{}:{}", ext.id, attr.name))? {
                    out.insert(attr.name.to_string(), v);
                }
            }
        }
        other => return Err(invalid_at(ext.id, other)),
    }
    Ok(out)
}

/// `urn:...:2.0:User:department` split into its extension and attribute.
pub fn split_urn_attr(kind: Kind, key: &str) -> Option<(&'static SchemaDef, &'static AttrDef)> {
    let (urn, attr) = key.rsplit_once(':')?;
    let ext = kind.extension(urn)?;
    Some((ext, ext.find(attr)?))
}

/// Validates one attribute's value (single or multi-valued). `None` means "unassigned"
/// (null, an empty array or an empty object).
pub fn clean_attr(attr: &AttrDef, value: &Value, path: &str) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if attr.multi {
        let Value::Array(items) = value else {
            return Err(invalid_at(path, value));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(v) = clean_single(attr, item, path)? {
                out.push(v);
            }
        }
        if attr.sub.iter().any(|s| s.name == "primary") {
            let primaries = out
                .iter()
                .filter(|v| v.get("primary") == Some(&Value::Bool(true)))
                .count();
            if primaries > 1 {
                return Err(ScimError::invalid_value(format!(
                    "Invalid value at {path}: more than one primary value"
                )));
            }
        }
        return Ok((!out.is_empty()).then_some(Value::Array(out)));
    }
    clean_single(attr, value, path)
}

/// Validates one element (a single value, or one element of a multi-valued attribute).
pub fn clean_single(attr: &AttrDef, value: &Value, path: &str) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if let (T::Complex, Value::Object(m)) = (attr.ty, value) {
        let mut out = Map::new();
        for (k, v) in m {
            let Some(sub) = attr.find_sub(k) else {
                continue;
            };
            if sub.mutability == M::ReadOnly || v.is_null() {
                continue;
            }
            if sub.ty == T::Complex {
                if let Some(v) = clean_single(sub, v, &format!("{path}.{}", sub.name))? {
                    out.insert(sub.name.to_string(), v);
                }
            } else if scalar_ok(sub.ty, v) {
                out.insert(sub.name.to_string(), v.clone());
            } else {
                // The path is only spelled out on the error path (seeding 100,000 users
                // would otherwise format it for every sub-attribute).
                return Err(invalid_at(&format!("{path}.{}", sub.name), v));
            }
        }
        return Ok((!out.is_empty()).then_some(Value::Object(out)));
    }
    if scalar_ok(attr.ty, value) {
        Ok(Some(value.clone()))
    } else {
        Err(invalid_at(path, value))
    }
}

/// Whether a non-null value has the JSON shape of a non-complex type.
fn scalar_ok(ty: AttrType, value: &Value) -> bool {
    match (ty, value) {
        (T::String | T::Reference, Value::String(_)) => true,
        (T::DateTime, Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        (T::Boolean, Value::Bool(_)) => true,
        (T::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (T::Decimal, Value::Number(_)) => true,
        _ => false,
    }
}

/// `400 invalidValue` with Ironclad's wording: `Invalid value at name.givenName: 123`.
pub fn invalid_at(path: &str, value: &Value) -> ScimError {
    let mut shown = value.to_string();
    if shown.len() > 200 {
        let mut cut = 200;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push('…');
    }
    ScimError::invalid_value(format!("Invalid value at {path}: {shown}"))
}

/// Checks the attributes a stored resource must always carry (`userName` and `name` for users,
/// `displayName` for groups).
pub fn check_required(kind: Kind, body: &Map<String, Value>) -> Result<(), ScimError> {
    for attr in kind.core().attributes.iter().filter(|a| a.required) {
        if body.get(attr.name).is_none_or(Value::is_null) {
            return Err(ScimError::invalid_value(format!(
                "Invalid value at {}: a value is required",
                attr.name
            )));
        }
    }
    Ok(())
}

/// Ironclad's password rule for companies without SAML: 16+ characters with a lower-case
/// letter, an upper-case letter, a digit and a special character. The detail never repeats the
/// password.
pub fn check_password(password: Option<&str>) -> Result<(), ScimError> {
    let Some(p) = password else {
        return Err(ScimError::invalid_value(
            "Invalid value at password: a password is required because the company has no SAML \
             configuration",
        ));
    };
    let long = p.chars().count() >= 16;
    let lower = p.chars().any(|c| c.is_lowercase());
    let upper = p.chars().any(|c| c.is_uppercase());
    let digit = p.chars().any(|c| c.is_ascii_digit());
    let special = p
        .chars()
        .any(|c| !c.is_alphanumeric() && !c.is_whitespace());
    if long && lower && upper && digit && special {
        Ok(())
    } else {
        Err(ScimError::invalid_value(
            "Invalid value at password: it must have at least 16 characters with a lower-case \
             letter, an upper-case letter, a digit and a special character",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_canonicalises() {
        let c = clean_resource(
            Kind::User,
            &json!({
                "schemas": [USER], "USERNAME": "a@x.com", "name": {"GivenName": "A", "bogus": 1},
                "unknown": true, ENTERPRISE: {"department": "Legal"},
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter": "42",
                IRONCLAD: {"provider": "google", "departmentHead": "h@x.com"},
                "password": "secret"
            }),
        )
        .unwrap();
        assert_eq!(c.body["userName"], "a@x.com");
        assert_eq!(c.body["name"], json!({"givenName": "A"}));
        assert!(!c.body.contains_key("unknown"));
        assert_eq!(
            c.body[ENTERPRISE],
            json!({"department": "Legal", "costCenter": "42"})
        );
        assert_eq!(c.body[IRONCLAD], json!({"departmentHead": "h@x.com"}));
        assert_eq!(c.password.as_deref(), Some("secret"));
    }

    #[test]
    fn invalid_value_names_the_field() {
        let e = clean_resource(
            Kind::User,
            &json!({"userName": "a", "name": {"givenName": 123}}),
        )
        .unwrap_err();
        assert_eq!(e.detail, "Invalid value at name.givenName: 123");
        assert_eq!(e.scim_type, Some("invalidValue"));
        let e = clean_resource(Kind::User, &json!({"active": "false"})).unwrap_err();
        assert_eq!(e.detail, "Invalid value at active: \"false\"");
        let e = clean_resource(Kind::User, &json!({"emails": {"value": "x"}})).unwrap_err();
        assert!(e.detail.starts_with("Invalid value at emails:"));
    }

    #[test]
    fn two_primaries_are_refused() {
        let e = clean_resource(
            Kind::User,
            &json!({"emails": [{"value": "a", "primary": true}, {"value": "b", "primary": true}]}),
        )
        .unwrap_err();
        assert!(e.detail.contains("more than one primary"));
    }

    #[test]
    fn password_rules() {
        assert!(check_password(Some("Abcdefghijklmno1!")).is_ok());
        assert!(check_password(Some("Abc1!")).is_err());
        assert!(check_password(Some("abcdefghijklmno1!")).is_err());
        assert!(check_password(Some("ABCDEFGHIJKLMNO1!")).is_err());
        assert!(check_password(Some("Abcdefghijklmnop!")).is_err());
        assert!(check_password(Some("Abcdefghijklmnop1")).is_err());
        assert!(check_password(Some("Sup3rSecretNoSpecial")).is_err());
        let e = check_password(Some("short")).unwrap_err();
        assert!(!e.detail.contains("short"));
        assert!(check_password(None).is_err());
    }

    #[test]
    fn schemas_render() {
        let all = all_schemas_json("http://x");
        assert_eq!(all.len(), 7);
        let user = schema_json("http://x", USER).unwrap();
        assert_eq!(user["attributes"][0]["name"], "userName");
        assert_eq!(user["attributes"][0]["uniqueness"], "server");
    }
}
