//! Mapping files: who in the directory becomes an Ironclad user, what each managed Ironclad
//! attribute holds, which source groups become Ironclad groups, and what happens to users who
//! are no longer wanted. A mapping is a versioned TOML file (documented key by key in
//! `docs/mapping.md`) whose expressions are minijinja expressions compiled once at load.
//!
//! Layout: [`schema`] (the file as written), `load` (checks and compilation, every error
//! located at file:line:column), `expr` (the expression environment, its filters and
//! functions), `index` (snapshot lookup tables), [`eval`] (entry -> [`Evaluation`], snapshot ->
//! [`GroupEvaluation`]), [`target`] (the closed set of Ironclad attributes and their SCIM
//! placement), [`cli`] (`mapping validate` and `mapping test`).
//!
//! What does not live here: reading directories (see [`crate::source`]), comparing desired
//! users with Ironclad's and writing (the reconciler).
//!
//! ```no_run
//! # fn demo(snapshot: &ironbridge::model::Snapshot) -> Result<(), ironbridge::mapping::MappingError> {
//! use ironbridge::mapping::Mapping;
//! let mapping = Mapping::load(std::path::Path::new("mappings/active-directory.toml"))?;
//! let run = mapping.prepare(snapshot, chrono::Utc::now())?;
//! for result in run.evaluate_all() {
//!     let evaluation = result?;
//!     if evaluation.desired {
//!         println!("{}", evaluation.user.map(|u| u.scim).unwrap_or_default());
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod cli;
pub mod eval;
mod expr;
mod index;
mod load;
mod native;
pub mod schema;
pub mod target;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod golden;

pub use eval::{
    AttributeValue, DesiredGroup, DesiredUser, Evaluation, GroupEvaluation, Prepared, ScopeDecision,
};
pub use expr::{FUEL_PER_EXPRESSION, MAX_EXPRESSION_BYTES, MAX_VALUES, MAX_VALUE_BYTES};
pub use schema::FallbackKey;
pub use target::{Apply, Kind, Schema, Target};

use crate::config::{ConfigError, RemoveMode};
use minijinja::{Environment, Expression};
use regex::Regex;
use serde_json::Value as Json;

/// The only mapping format version this build understands.
pub const MAPPING_VERSION: u32 = 1;

/// Why a mapping could not be loaded or applied to an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The file cannot be read or is invalid. Every problem found, in file order; each names
    /// file, line, column and key.
    #[error("{}", list(.0))]
    Invalid(Vec<ConfigError>),
    /// An expression failed, or gave an unusable value, for one entry.
    #[error(transparent)]
    Eval(Box<EvalError>),
    /// A scope rule names a group the source snapshot does not contain. Evaluation is refused:
    /// otherwise every member would silently fall out of scope (and be removed).
    #[error("{0}")]
    MissingGroup(ConfigError),
}

/// An expression that failed on one entry: which entry, what was being computed, and where
/// the expression is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{locator}: {key}: {message} (expression at {file}:{line}:{column})")]
pub struct EvalError {
    /// The entry's DN or resource URL.
    pub locator: String,
    /// The entry's stable id.
    pub id: String,
    /// What was being computed: a target (`attributes.userName`), `scope.disabled`,
    /// `scope.rules[2].when`, `groups.display_name`...
    pub key: String,
    /// What went wrong.
    pub message: String,
    /// The mapping file.
    pub file: String,
    /// Line of the expression in the mapping file (0 when not tied to one expression).
    pub line: usize,
    /// Column of the expression in the mapping file.
    pub column: usize,
    /// The entry's externalId when that expression could still be computed (another
    /// attribute failed): the reconciler keys the entry by it, so that the Ironclad user
    /// linked to it is left alone instead of being taken for a leaver.
    pub external_id: Option<String>,
}

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl MappingError {
    /// The located problems of an invalid file (empty for other kinds).
    pub fn problems(&self) -> &[ConfigError] {
        match self {
            MappingError::Invalid(v) => v,
            _ => &[],
        }
    }
}

/// Where something was written in the mapping file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    pub line: usize,
    pub column: usize,
    pub key: String,
}

/// One compiled expression's provenance, for runtime errors.
#[derive(Debug, Clone)]
pub(crate) struct ExprMeta {
    pub key: String,
    pub source: String,
    pub line: usize,
    pub column: usize,
}

type Exprs<'env> = Vec<Expression<'env, 'static>>;

self_cell::self_cell!(
    /// The expression environment and every expression compiled in it.
    pub(crate) struct Compiled {
        owner: Environment<'static>,
        #[covariant]
        dependent: Exprs,
    }
);

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiled({} expressions)", self.borrow_dependent().len())
    }
}

/// One scope rule, validated.
#[derive(Debug)]
pub(crate) struct RuleSpec {
    pub include: bool,
    pub when: Option<usize>,
    pub member_of: Vec<(String, Located)>,
    pub text: String,
    pub line: usize,
}

/// One managed attribute.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ManagedAttribute {
    /// The Ironclad attribute.
    pub target: Target,
    /// How it is applied.
    pub apply: Apply,
    /// The expression, as written.
    pub expression: String,
    /// The value used when the expression gives nothing.
    pub default: Option<Json>,
}

/// `[correlation]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Correlation {
    /// The expression giving `externalId` (default `id`).
    pub external_id: String,
    /// Ordered keys for finding an unlinked Ironclad account.
    pub fallback: Vec<FallbackKey>,
}

/// `[removal]`, validated.
#[derive(Debug, Clone)]
pub struct Removal {
    /// How a managed user who is no longer wanted is removed; `None` defers to the
    /// configuration's `[policy] remove_users`.
    pub action: Option<RemoveMode>,
    /// userNames never touched, lower-cased.
    pub protected_users: Vec<String>,
    /// Globs and regular expressions on userName, compiled (globs become anchored,
    /// case-insensitive regexes).
    pub protected_patterns: Vec<Regex>,
}

impl Removal {
    /// Whether the bridge must never touch the Ironclad user with this userName (neither
    /// update nor remove it). The configuration's acting user is protected by the caller too.
    pub fn is_protected(&self, user_name: &str) -> bool {
        let lower = user_name.to_lowercase();
        self.protected_users.contains(&lower)
            || self
                .protected_patterns
                .iter()
                .any(|r| r.is_match(user_name) || r.is_match(&lower))
    }
}

/// `[groups]`, validated.
#[derive(Debug)]
pub(crate) struct GroupSpec {
    pub dns: Vec<String>,
    pub names: Vec<String>,
    pub name_regex: Vec<Regex>,
    pub when: Option<usize>,
    pub display_name: Option<usize>,
    pub flatten: bool,
}

/// A loaded, validated mapping with every expression compiled. Cheap to share between
/// threads (`Send + Sync`); evaluate through [`Mapping::prepare`].
#[derive(Debug)]
pub struct Mapping {
    pub(crate) file: String,
    pub(crate) description: Option<String>,
    pub(crate) compiled: Compiled,
    pub(crate) exprs: Vec<ExprMeta>,
    pub(crate) scope_default_include: bool,
    pub(crate) scope_default_line: usize,
    pub(crate) disabled: Option<usize>,
    pub(crate) rules: Vec<RuleSpec>,
    pub(crate) correlation: Correlation,
    /// The externalId expression.
    pub(crate) external_id: usize,
    /// The `[attributes]` entries other than externalId, in file order.
    pub(crate) attributes: Vec<load::AttrSpec>,
    /// Everything an entry needs, evaluated as one list, for speed (see `load`).
    pub(crate) combined: usize,
    /// The shapes of that list's items, when every one is evaluated natively (see `native`).
    pub(crate) native: Option<Vec<native::Native>>,
    /// Attributes computed by the expression engine (not read directly).
    pub(crate) engine_attributes: usize,
    pub(crate) groups: Option<GroupSpec>,
    pub(crate) removal: Removal,
}

impl Mapping {
    /// The file the mapping was loaded from, as given.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// True when an expression may read the attributes of an entry other than the one it is
    /// evaluated for (`lookup`): every entry's attributes are then needed until the last
    /// evaluation. Decided from the expressions' text, so a mention of `lookup` anywhere counts.
    pub fn reads_other_entries(&self) -> bool {
        self.exprs.iter().any(|e| e.source.contains("lookup"))
    }

    /// The file's `description`.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The Ironclad attributes this mapping manages, `externalId` first, then in file order.
    /// The reconciler compares and writes these and leaves every other attribute of an
    /// Ironclad user exactly as it is.
    pub fn managed_attributes(&self) -> Vec<ManagedAttribute> {
        let ext = ManagedAttribute {
            target: Target::ExternalId,
            apply: Apply::Always,
            expression: self.correlation.external_id.clone(),
            default: None,
        };
        std::iter::once(ext)
            .chain(self.attributes.iter().map(|a| ManagedAttribute {
                target: a.target,
                apply: a.apply,
                expression: self.exprs[a.expr].source.clone(),
                default: a.default.clone(),
            }))
            .collect()
    }

    /// `[correlation]`.
    pub fn correlation(&self) -> &Correlation {
        &self.correlation
    }

    /// `[removal]`.
    pub fn removal(&self) -> &Removal {
        &self.removal
    }

    /// Whether the mapping has a `[groups]` section (groups are managed at all).
    pub fn manages_groups(&self) -> bool {
        self.groups.is_some()
    }

    pub(crate) fn expr(&self, id: usize) -> Option<&Expression<'_, 'static>> {
        self.compiled.borrow_dependent().get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Mapping>();
        check::<Prepared<'static>>();
    }

    #[test]
    fn protected_users_and_patterns() {
        let r = Removal {
            action: None,
            protected_users: vec!["breakglass@example.com".into()],
            protected_patterns: vec![Regex::new("(?i)^admin-.*@example\\.com$").unwrap()],
        };
        assert!(r.is_protected("BreakGlass@example.com"));
        assert!(r.is_protected("admin-jo@Example.com"));
        assert!(!r.is_protected("jo@example.com"));
    }
}
