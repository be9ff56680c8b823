//! The mapping file as written: TOML file structs with unknown keys rejected and a span kept on
//! every value an error may need to point at. Each field's `///` says what it means; the same
//! text, with examples, is in `docs/mapping.md`.
//!
//! What does not live here: checking values and compiling expressions (see [`super::load`]).

use crate::config::RemoveMode;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use toml::Spanned;

/// The whole mapping file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    /// Format version; must be 1.
    pub version: Spanned<u32>,
    /// Free text shown by `mapping validate`.
    #[serde(default)]
    pub description: Option<String>,
    /// Who becomes an Ironclad user.
    pub scope: Spanned<ScopeFile>,
    /// How source entries and Ironclad users are matched.
    #[serde(default)]
    pub correlation: Option<Spanned<CorrelationFile>>,
    /// What each managed Ironclad attribute holds.
    pub attributes: Spanned<AttributesFile>,
    /// Which source groups become Ironclad groups. Absent: no groups are managed.
    #[serde(default)]
    pub groups: Option<Spanned<GroupsFile>>,
    /// What happens to managed Ironclad users who are no longer wanted.
    #[serde(default)]
    pub removal: Option<Spanned<RemovalFile>>,
}

/// Include or exclude.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeAction {
    /// The entry becomes (or stays) an Ironclad user.
    Include,
    /// The entry is not wanted in Ironclad.
    Exclude,
}

/// `[scope]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeFile {
    /// What happens to an entry no rule matches. Required, so the choice is deliberate.
    pub default: Spanned<ScopeAction>,
    /// Expression that is true when the source account is disabled. A disabled person is not
    /// wanted in Ironclad, whatever the rules say.
    #[serde(default)]
    pub disabled: Option<Spanned<String>>,
    /// Ordered rules; the first that matches decides.
    #[serde(default)]
    pub rules: Vec<Spanned<RuleFile>>,
}

/// `[[scope.rules]]`: matches when every condition given holds (at least one is required).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// `include` or `exclude`.
    pub action: Spanned<ScopeAction>,
    /// Expression over the entry; the rule matches when it is true.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    /// Source groups (DN, stable id or name); the rule matches when the entry is a member of
    /// any of them, directly or through nested groups.
    #[serde(default)]
    pub member_of: Vec<Spanned<String>>,
    /// A label shown when this rule decides.
    #[serde(default)]
    pub description: Option<String>,
}

/// A key used to find an Ironclad account not yet linked to a source entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum FallbackKey {
    /// The Ironclad `userName`, compared case-insensitively.
    #[serde(rename = "userName")]
    UserName,
    /// The Ironclad user's email addresses, compared case-insensitively.
    #[serde(rename = "email")]
    Email,
}

/// `[correlation]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationFile {
    /// Expression giving the stable id carried in Ironclad's `externalId`. Default `id`.
    #[serde(default)]
    pub external_id: Option<Spanned<String>>,
    /// Ordered keys for finding an unlinked account. Default `["userName", "email"]`.
    #[serde(default)]
    pub fallback: Option<Vec<Spanned<FallbackKey>>>,
}

/// `[attributes]`: target name -> expression (shorthand) or table. Kept in file order.
#[derive(Debug, Default)]
pub struct AttributesFile(pub Vec<(Spanned<String>, Spanned<AttrSpecFile>)>);

/// One `[attributes]` entry.
#[derive(Debug)]
pub enum AttrSpecFile {
    /// `title = "attr.title"`: an expression applied `always`.
    Short(String),
    /// `title = { expr = "...", apply = "on_create", default = "..." }`.
    Full(AttrTableFile),
}

/// The table form of an `[attributes]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttrTableFile {
    /// The expression.
    pub expr: Spanned<String>,
    /// `always` (default), `on_create` or `if_empty`.
    #[serde(default)]
    pub apply: Option<Spanned<super::Apply>>,
    /// Value used when the expression gives nothing (absent, empty text or empty list).
    #[serde(default)]
    pub default: Option<Spanned<toml::Value>>,
}

impl<'de> Deserialize<'de> for AttributesFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AttributesFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of target attribute = expression")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Spanned<String>>()? {
                    let v = map.next_value::<Spanned<AttrSpecFile>>()?;
                    out.push((k, v));
                }
                Ok(AttributesFile(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for AttrSpecFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AttrSpecFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an expression string or a table { expr, apply, default }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AttrSpecFile::Short(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(AttrSpecFile::Short(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                AttrTableFile::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(AttrSpecFile::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[groups]`: a source group is managed when any selector matches it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsFile {
    /// Group DNs (compared after normalization) or stable ids.
    #[serde(default)]
    pub dns: Vec<Spanned<String>>,
    /// Group names (`cn`, `displayName` or `name`), case-insensitive.
    #[serde(default)]
    pub names: Vec<Spanned<String>>,
    /// Regular expressions matched against the group's name.
    #[serde(default)]
    pub name_regex: Vec<Spanned<String>>,
    /// Expression over the group entry.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    /// Expression giving the Ironclad group's `displayName`. Default: the group's name.
    #[serde(default)]
    pub display_name: Option<Spanned<String>>,
    /// Members of nested groups count as members. Default true.
    #[serde(default)]
    pub flatten: Option<bool>,
}

/// `[removal]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovalFile {
    /// `delete`, `deactivate` or `keep`. Absent: the configuration's `[policy] remove_users`.
    #[serde(default)]
    pub action: Option<Spanned<RemoveMode>>,
    /// userNames never touched (case-insensitive).
    #[serde(default)]
    pub protected_users: Vec<Spanned<String>>,
    /// Glob patterns (`*`, `?`) on userName never touched (case-insensitive).
    #[serde(default)]
    pub protected_globs: Vec<Spanned<String>>,
    /// Regular expressions on userName never touched.
    #[serde(default)]
    pub protected_regexes: Vec<Spanned<String>>,
}
