//! Loading a mapping file: TOML parsing into the file structs, then every check that can be
//! made without a snapshot (targets, duplicates, defaults, regular expressions, expressions
//! compiled and their names checked), collecting all problems, each located at
//! file:line:column with its key. An expression problem points inside the expression: the
//! position minijinja (or the name check) reports is carried through the TOML string's quoting
//! and escapes to the exact column in the file.
//!
//! What does not live here: the file structs ([`super::schema`]) and evaluation
//! ([`super::eval`]).

use super::expr::{
    self, check_expression, ENTRY_VARS, ENTRY_VARS_WITH_DISABLED, FUEL_PER_EXPRESSION,
};
use super::native::Native;
use super::schema::{AttrSpecFile, FallbackKey, MappingFile, ScopeAction};
use super::target::{Apply, Kind, Target};
use super::{
    Compiled, Correlation, ExprMeta, GroupSpec, Located, Mapping, MappingError, Removal, RuleSpec,
    MAPPING_VERSION,
};
use crate::config::{line_col, ConfigError, Locator};
use minijinja::Environment;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// One validated `[attributes]` entry.
#[derive(Debug, Clone)]
pub(crate) struct AttrSpec {
    pub target: Target,
    pub expr: usize,
    pub apply: Apply,
    pub default: Option<Json>,
    /// For an expression that only reads one attribute (`attr.title`, `attr['x.y']`): the
    /// attribute's name. Such values are read directly, without running the expression
    /// engine (the result is the same, and it is much cheaper).
    pub direct: Option<String>,
}

impl Mapping {
    /// Reads, checks and compiles a mapping file. On failure, every problem found is returned
    /// ([`MappingError::Invalid`]), each naming file, line, column and key.
    pub fn load(path: &Path) -> Result<Mapping, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            MappingError::Invalid(vec![ConfigError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                key: "-".into(),
                message: format!("cannot read the mapping file: {e}"),
            }])
        })?;
        Self::from_text(path, &text)
    }

    /// Checks and compiles mapping text that came from `path` (used only in messages).
    pub fn from_text(path: &Path, text: &str) -> Result<Mapping, MappingError> {
        let file = path.display().to_string();
        let loc = Locator { file: &file, text };
        let parsed: MappingFile =
            toml::from_str(text).map_err(|e| MappingError::Invalid(vec![toml_error(&loc, &e)]))?;
        let mut l = Loader {
            loc,
            errors: Vec::new(),
            env: expr::environment(FUEL_PER_EXPRESSION.saturating_mul(
                parsed.attributes.get_ref().0.len() as u64
                    + parsed.scope.get_ref().rules.len() as u64
                    + 3,
            )),
            exprs: Vec::new(),
        };
        let m = l.build(parsed);
        if !l.errors.is_empty() {
            let mut errors = l.errors;
            errors.sort_by_key(|e| (e.line, e.column));
            return Err(MappingError::Invalid(errors));
        }
        let Some(mut m) = m else {
            return Err(MappingError::Invalid(vec![l.loc.at(
                0..0,
                "-",
                "the mapping could not be built",
            )]));
        };
        let sources: Vec<String> = l.exprs.iter().map(|e| e.source.clone()).collect();
        let compiled = Compiled::try_new(l.env, |env| {
            sources
                .into_iter()
                .map(|s| env.compile_expression_owned(s))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| {
            MappingError::Invalid(vec![ConfigError {
                file: file.clone(),
                line: 1,
                column: 1,
                key: "-".into(),
                message: format!("an expression failed to compile: {e}"),
            }])
        })?;
        m.exprs = l.exprs;
        m.compiled = Some(compiled);
        m.finish()
    }
}

/// A mapping under construction (the compiled expressions come last).
pub(crate) struct Building {
    file: String,
    description: Option<String>,
    exprs: Vec<ExprMeta>,
    compiled: Option<Compiled>,
    scope_default_include: bool,
    scope_default_line: usize,
    disabled: Option<usize>,
    rules: Vec<RuleSpec>,
    correlation: Correlation,
    external_id: usize,
    attributes: Vec<AttrSpec>,
    combined: usize,
    native: Option<Vec<Native>>,
    engine_attributes: usize,
    groups: Option<GroupSpec>,
    removal: Removal,
}

impl Building {
    fn finish(self) -> Result<Mapping, MappingError> {
        let Some(compiled) = self.compiled else {
            return Err(MappingError::Invalid(Vec::new()));
        };
        Ok(Mapping {
            file: self.file,
            description: self.description,
            compiled,
            exprs: self.exprs,
            scope_default_include: self.scope_default_include,
            scope_default_line: self.scope_default_line,
            disabled: self.disabled,
            rules: self.rules,
            correlation: self.correlation,
            external_id: self.external_id,
            attributes: self.attributes,
            combined: self.combined,
            native: self.native,
            engine_attributes: self.engine_attributes,
            groups: self.groups,
            removal: self.removal,
        })
    }
}

/// Converts a TOML error, and for a duplicated key also names where it was first written.
fn toml_error(loc: &Locator<'_>, e: &toml::de::Error) -> ConfigError {
    let mut err = loc.from_toml(e);
    if err.message.contains("duplicate key") {
        if let Some(first) = first_definition(loc.text, e.span().map(|s| s.start), &err.key) {
            let (line, column) = line_col(loc.text, first);
            err.message = format!(
                "{} (first written at line {line}, column {column})",
                err.message
            );
        }
    }
    err
}

/// Where a dotted key (`attributes.title`) was first written, before `before`.
fn first_definition(text: &str, before: Option<usize>, key: &str) -> Option<usize> {
    let before = before?.min(text.len());
    let leaf = key.rsplit('.').next()?;
    let mut offset = 0;
    for line in text[..before].split_inclusive('\n') {
        let t = line.trim_start();
        let k = t.split('=').next().unwrap_or("").trim().trim_matches('"');
        if t.contains('=') && k == leaf {
            return Some(offset + (line.len() - t.len()));
        }
        offset += line.len();
    }
    None
}

struct Loader<'a> {
    loc: Locator<'a>,
    errors: Vec<ConfigError>,
    env: Environment<'static>,
    exprs: Vec<ExprMeta>,
}

impl Loader<'_> {
    fn err(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let e = self.loc.at(span, key, message);
        self.errors.push(e);
    }

    fn located(&self, span: Range<usize>, key: &str) -> Located {
        let (line, column) = line_col(self.loc.text, span.start);
        Located {
            line,
            column,
            key: key.to_string(),
        }
    }

    /// Checks one expression written as the TOML string at `span`; returns its id.
    fn expr(&mut self, src: &str, span: Range<usize>, key: &str, vars: &[&str]) -> Option<usize> {
        match check_expression(&self.env, src, vars) {
            Ok(()) => {
                let at = string_offset(self.loc.text, span, 0);
                let (line, column) = line_col(self.loc.text, at);
                self.exprs.push(ExprMeta {
                    key: key.to_string(),
                    source: src.to_string(),
                    line,
                    column,
                });
                Some(self.exprs.len() - 1)
            }
            Err(p) => {
                let at = string_offset(self.loc.text, span, p.offset);
                self.err(at..at, key, p.message);
                None
            }
        }
    }

    fn spanned_expr(&mut self, s: &Spanned<String>, key: &str, vars: &[&str]) -> Option<usize> {
        self.expr(s.get_ref(), s.span(), key, vars)
    }

    fn regex(&mut self, s: &Spanned<String>, key: &str) -> Option<regex::Regex> {
        match expr::compile_regex(s.get_ref()) {
            Ok(r) => Some(r),
            Err(m) => {
                self.err(s.span(), key, m);
                None
            }
        }
    }

    fn build(&mut self, f: MappingFile) -> Option<Building> {
        if *f.version.get_ref() != MAPPING_VERSION {
            self.err(
                f.version.span(),
                "version",
                format!(
                    "unsupported version {}; this build reads version {MAPPING_VERSION}",
                    f.version.get_ref()
                ),
            );
        }

        // [scope]
        let scope_span = f.scope.span();
        let scope = f.scope.into_inner();
        let scope_default_include = *scope.default.get_ref() == ScopeAction::Include;
        let scope_default_line = line_col(self.loc.text, scope.default.span().start).0;
        let disabled = scope
            .disabled
            .as_ref()
            .and_then(|d| self.spanned_expr(d, "scope.disabled", ENTRY_VARS));
        let mut rules = Vec::new();
        for (i, r) in scope.rules.iter().enumerate() {
            let key = format!("scope.rules[{i}]");
            let rule = r.get_ref();
            if rule.when.is_none() && rule.member_of.is_empty() {
                self.err(
                    r.span(),
                    &key,
                    "a rule needs `when` (an expression), `member_of` (groups), or both",
                );
                continue;
            }
            let when = rule.when.as_ref().and_then(|w| {
                self.spanned_expr(w, &format!("{key}.when"), ENTRY_VARS_WITH_DISABLED)
            });
            let mut member_of = Vec::new();
            for g in &rule.member_of {
                if g.get_ref().trim().is_empty() {
                    self.err(g.span(), &format!("{key}.member_of"), "empty group name");
                }
                member_of.push((
                    g.get_ref().trim().to_string(),
                    self.located(g.span(), &format!("{key}.member_of")),
                ));
            }
            let include = *rule.action.get_ref() == ScopeAction::Include;
            let text = rule.description.clone().unwrap_or_else(|| {
                let mut parts = Vec::new();
                if !rule.member_of.is_empty() {
                    let names: Vec<&str> = rule
                        .member_of
                        .iter()
                        .map(|g| g.get_ref().as_str())
                        .collect();
                    parts.push(format!("member of {}", names.join(" or ")));
                }
                if let Some(w) = &rule.when {
                    parts.push(format!("when {}", w.get_ref().trim()));
                }
                format!(
                    "{} {}",
                    if include { "include" } else { "exclude" },
                    parts.join(" and ")
                )
            });
            rules.push(RuleSpec {
                include,
                when,
                member_of,
                text,
                line: line_col(self.loc.text, r.span().start).0,
            });
        }
        if scope.rules.is_empty() && !scope_default_include {
            self.err(
                scope_span,
                "scope",
                "no rules and `default = \"exclude\"`: nobody would be in scope",
            );
        }

        // [attributes]
        let attrs_span = f.attributes.span();
        let mut seen: HashMap<Target, (usize, usize, String)> = HashMap::new();
        let mut attributes = Vec::new();
        let mut ext_attr: Option<(usize, Range<usize>)> = None;
        // TOML tables do not keep their order: restore the file order from the spans.
        let mut entries: Vec<_> = f.attributes.get_ref().0.iter().collect();
        entries.sort_by_key(|(name, _)| name.span().start);
        for (name, spec) in entries {
            let key = format!("attributes.{}", name.get_ref());
            let Some(target) = Target::parse(name.get_ref()) else {
                let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
                self.err(
                    name.span(),
                    &key,
                    format!(
                        "unknown target attribute `{}`; supported: {}",
                        name.get_ref(),
                        names.join(", ")
                    ),
                );
                continue;
            };
            let (line, column) = line_col(self.loc.text, name.span().start);
            if let Some((l0, c0, n0)) = seen.get(&target) {
                self.err(
                    name.span(),
                    &key,
                    format!(
                        "duplicate target `{}`: already set as `{n0}` at line {l0}, column {c0}",
                        target.name()
                    ),
                );
                continue;
            }
            seen.insert(target, (line, column, name.get_ref().clone()));
            let vars = ENTRY_VARS_WITH_DISABLED;
            let (id, apply, default) = match spec.get_ref() {
                AttrSpecFile::Short(src) => {
                    (self.expr(src, spec.span(), &key, vars), Apply::Always, None)
                }
                AttrSpecFile::Full(t) => {
                    let id = self.spanned_expr(&t.expr, &format!("{key}.expr"), vars);
                    let default =
                        t.default
                            .as_ref()
                            .and_then(|d| match default_json(target, d.get_ref()) {
                                Ok(j) => Some(j),
                                Err(m) => {
                                    self.err(d.span(), &format!("{key}.default"), m);
                                    None
                                }
                            });
                    let apply = t.apply.as_ref().map(|a| *a.get_ref()).unwrap_or_default();
                    (id, apply, default)
                }
            };
            if target == Target::ExternalId {
                if let Some(id) = id {
                    ext_attr = Some((id, name.span()));
                }
                if apply != Apply::Always {
                    self.err(
                        spec.span(),
                        &key,
                        "externalId is the correlation key and is always applied",
                    );
                }
                continue;
            }
            if let Some(id) = id {
                let direct = expr::direct_attribute(&self.exprs[id].source);
                attributes.push(AttrSpec {
                    target,
                    expr: id,
                    apply,
                    default,
                    direct,
                });
            }
        }
        if !seen.contains_key(&Target::UserName) {
            self.err(
                attrs_span.clone(),
                "attributes.userName",
                "missing: every Ironclad user needs a userName (their email address)",
            );
        }

        // [correlation]
        let (corr_ext, fallback) = match &f.correlation {
            None => (None, None),
            Some(c) => (
                c.get_ref().external_id.as_ref(),
                c.get_ref().fallback.as_ref(),
            ),
        };
        let external_id = match (corr_ext, ext_attr) {
            (Some(c), Some((_, attr_span))) => {
                let (l0, c0) = line_col(self.loc.text, c.span().start);
                self.err(
                    attr_span,
                    "attributes.externalId",
                    format!(
                        "duplicate target `externalId`: already set by correlation.external_id at line {l0}, column {c0}"
                    ),
                );
                None
            }
            (Some(c), None) => self.spanned_expr(c, "correlation.external_id", ENTRY_VARS),
            (None, Some((id, _))) => Some(id),
            (None, None) => {
                self.exprs.push(ExprMeta {
                    key: "correlation.external_id".into(),
                    source: "id".into(),
                    line: 1,
                    column: 1,
                });
                Some(self.exprs.len() - 1)
            }
        };
        let external_id_src = external_id
            .map(|i| self.exprs[i].source.clone())
            .unwrap_or_default();
        let mut fb = Vec::new();
        for k in fallback.into_iter().flatten() {
            if fb.contains(k.get_ref()) {
                self.err(k.span(), "correlation.fallback", "listed twice");
            }
            fb.push(*k.get_ref());
        }
        let fallback = if fallback.is_some() {
            fb
        } else {
            vec![FallbackKey::UserName, FallbackKey::Email]
        };

        // [groups]
        let groups = f.groups.as_ref().map(|g| {
            let g = g.get_ref();
            let name_regex = g
                .name_regex
                .iter()
                .filter_map(|r| self.regex(r, "groups.name_regex"))
                .collect();
            GroupSpec {
                dns: g
                    .dns
                    .iter()
                    .map(|d| d.get_ref().trim().to_string())
                    .collect(),
                names: g
                    .names
                    .iter()
                    .map(|n| n.get_ref().trim().to_string())
                    .collect(),
                name_regex,
                when: g
                    .when
                    .as_ref()
                    .and_then(|w| self.spanned_expr(w, "groups.when", ENTRY_VARS)),
                display_name: g
                    .display_name
                    .as_ref()
                    .and_then(|d| self.spanned_expr(d, "groups.display_name", ENTRY_VARS)),
                flatten: g.flatten.unwrap_or(true),
            }
        });
        if let (Some(gs), Some(gf)) = (&groups, &f.groups) {
            let gf = gf.get_ref();
            if gs.dns.is_empty()
                && gs.names.is_empty()
                && gf.name_regex.is_empty()
                && gf.when.is_none()
            {
                self.err(
                    f.groups.as_ref().map(|g| g.span()).unwrap_or(0..0),
                    "groups",
                    "no selector: give dns, names, name_regex or when (or remove [groups])",
                );
            }
        }

        // [removal]
        let mut removal = Removal {
            action: None,
            protected_users: Vec::new(),
            protected_patterns: Vec::new(),
        };
        if let Some(r) = &f.removal {
            let r = r.get_ref();
            removal.action = r.action.as_ref().map(|a| *a.get_ref());
            removal.protected_users = r
                .protected_users
                .iter()
                .map(|u| u.get_ref().trim().to_lowercase())
                .collect();
            for g in &r.protected_globs {
                let re = glob_regex(g.get_ref());
                if let Some(r) = self.regex(&Spanned::new(g.span(), re), "removal.protected_globs")
                {
                    removal.protected_patterns.push(r);
                }
            }
            for p in &r.protected_regexes {
                if let Some(r) = self.regex(p, "removal.protected_regexes") {
                    removal.protected_patterns.push(r);
                }
            }
        }

        // Everything an entry needs as one list, evaluated once per entry, left to right:
        // the disabled condition (remembered, so later items see `disabled`), each rule's
        // condition, externalId, then each attribute.
        let external_id = external_id?;
        let disabled_src = disabled.map(|id| self.exprs[id].source.clone());
        let mut parts = vec![format!(
            "{}(({}) | as_bool)",
            expr::REMEMBER_DISABLED,
            disabled_src.as_deref().unwrap_or("false")
        )];
        for r in &rules {
            parts.push(match r.when {
                Some(w) => format!("({})", self.exprs[w].source),
                None => "true".to_string(),
            });
        }
        parts.push(format!("({})", self.exprs[external_id].source));
        for a in attributes.iter().filter(|a| a.direct.is_none()) {
            parts.push(format!("({})", self.exprs[a.expr].source));
        }
        // The same list's shapes, when every item can be evaluated without the engine.
        let mut sources = vec![disabled_src.as_deref().unwrap_or("false")];
        for r in &rules {
            sources.push(r.when.map_or("true", |w| self.exprs[w].source.as_str()));
        }
        sources.push(&self.exprs[external_id].source);
        for a in attributes.iter().filter(|a| a.direct.is_none()) {
            sources.push(&self.exprs[a.expr].source);
        }
        let native = super::native::recognize_all(sources);
        self.exprs.push(ExprMeta {
            key: "attributes".into(),
            source: format!("[{}]", parts.join(",\n")),
            line: line_col(self.loc.text, attrs_span.start).0,
            column: 1,
        });
        let combined = self.exprs.len() - 1;

        let engine_attributes = attributes.iter().filter(|a| a.direct.is_none()).count();
        Some(Building {
            file: self.loc.file.to_string(),
            description: f.description,
            exprs: Vec::new(),
            compiled: None,
            scope_default_include,
            scope_default_line,
            disabled,
            rules,
            correlation: Correlation {
                external_id: external_id_src,
                fallback,
            },
            external_id,
            attributes,
            combined,
            native,
            engine_attributes,
            groups,
            removal,
        })
    }
}

/// A `default` value checked against the target's shape.
fn default_json(target: Target, v: &toml::Value) -> Result<Json, String> {
    match (target.kind(), v) {
        (Kind::Text | Kind::Manager, toml::Value::String(s)) => Ok(Json::String(s.clone())),
        (Kind::Bool, toml::Value::Boolean(b)) => Ok(Json::Bool(*b)),
        (Kind::Emails, toml::Value::String(s)) => Ok(Json::Array(vec![Json::String(s.clone())])),
        (Kind::Emails, toml::Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                toml::Value::String(s) => Ok(Json::String(s.clone())),
                _ => Err("emails: the default is a list of strings".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array),
        (Kind::Bool, _) => Err(format!("{target} takes true or false")),
        (Kind::Emails, _) => Err("emails: the default is a string or a list of strings".into()),
        _ => Err(format!("{target} takes a string")),
    }
}

/// A glob (`*` any run, `?` one character) as an anchored, case-insensitive regex.
fn glob_regex(glob: &str) -> String {
    let mut re = String::from("(?i)^");
    for c in glob.trim().chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    re
}

/// Byte offset in `text` of byte `off` of the decoded value of the TOML string written at
/// `span` (basic, literal or multi-line; escapes and line-ending backslashes accounted for).
/// For anything that is not a string, the span's start.
pub(crate) fn string_offset(text: &str, span: Range<usize>, off: usize) -> usize {
    let Some(raw) = text.get(span.clone()) else {
        return span.start.min(text.len());
    };
    let (delim, basic) = if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with("'''") {
        (3, false)
    } else if raw.starts_with('"') {
        (1, true)
    } else if raw.starts_with('\'') {
        (1, false)
    } else {
        return span.start;
    };
    let multiline = delim == 3;
    let body_start = span.start + delim;
    let body_end = span.end.saturating_sub(delim).max(body_start);
    let body = text.get(body_start..body_end).unwrap_or("");
    let b = body.as_bytes();
    let mut i = 0;
    if multiline {
        if body.starts_with("\r\n") {
            i = 2;
        } else if body.starts_with('\n') {
            i = 1;
        }
    }
    let mut decoded = 0;
    while i < b.len() {
        // A line-ending backslash (multi-line basic strings) stands for nothing.
        if basic
            && multiline
            && b[i] == b'\\'
            && matches!(b.get(i + 1), Some(b' ' | b'\t' | b'\n' | b'\r'))
        {
            let mut j = i + 1;
            while j < b.len() && matches!(b[j], b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            i = j;
            continue;
        }
        if decoded >= off {
            return body_start + i;
        }
        if multiline && body[i..].starts_with("\r\n") {
            decoded += 1;
            i += 2;
        } else if basic && b[i] == b'\\' {
            let esc_char = |n: usize| {
                body.get(i + 2..i + 2 + n)
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                    .map(char::len_utf8)
                    .unwrap_or(1)
            };
            match b.get(i + 1) {
                Some(b'u') => {
                    decoded += esc_char(4);
                    i += 6;
                }
                Some(b'U') => {
                    decoded += esc_char(8);
                    i += 10;
                }
                Some(b'x') => {
                    decoded += esc_char(2);
                    i += 4;
                }
                Some(_) => {
                    decoded += 1;
                    i += 2;
                }
                None => i += 1,
            }
        } else {
            let l = match b[i] {
                0x00..=0x7f => 1,
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => 4,
            };
            decoded += l;
            i += l;
        }
    }
    body_start + i.min(b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Mapping, MappingError> {
        Mapping::from_text(Path::new("m.toml"), text)
    }

    fn problems(text: &str) -> Vec<ConfigError> {
        match load(text) {
            Err(MappingError::Invalid(v)) => v,
            Err(e) => panic!("unexpected error kind: {e}"),
            Ok(_) => panic!("loaded"),
        }
    }

    const MIN: &str =
        "version = 1\n[scope]\ndefault = \"include\"\n[attributes]\nuserName = \"attr.mail\"\n";

    #[test]
    fn minimal_mapping_loads_with_defaults() {
        let m = load(MIN).unwrap();
        assert_eq!(m.correlation().external_id, "id");
        assert_eq!(
            m.correlation().fallback,
            vec![FallbackKey::UserName, FallbackKey::Email]
        );
        let managed: Vec<Target> = m.managed_attributes().iter().map(|a| a.target).collect();
        assert_eq!(managed, vec![Target::ExternalId, Target::UserName]);
        assert!(!m.manages_groups());
        assert!(m.removal().action.is_none());
    }

    #[test]
    fn string_offsets_follow_quoting_and_escapes() {
        let t = r#"a = "x\"y\u00e9z""#;
        let span = 4..t.len();
        // decoded: x " y é z ; offsets 0,1,2,3(é: 2 bytes),5
        assert_eq!(&t[string_offset(t, span.clone(), 0)..][..1], "x");
        assert_eq!(&t[string_offset(t, span.clone(), 2)..][..1], "y");
        assert_eq!(&t[string_offset(t, span.clone(), 5)..][..1], "z");
        let t = "a = '''\nab\ncd'''";
        let span = 4..t.len();
        assert_eq!(&t[string_offset(t, span.clone(), 3)..][..1], "c");
        let t = "a = \"\"\"\nab \\\n   cd\"\"\"";
        let span = 4..t.len();
        assert_eq!(&t[string_offset(t, span, 3)..][..1], "c");
    }

    #[test]
    fn expression_errors_point_inside_the_string() {
        let text = "version = 1\n[scope]\ndefault = \"include\"\n[attributes]\nuserName = \"attr.mail | lowr\"\ntitle = { expr = 'attr.title |' }\n";
        let p = problems(text);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].line, p[0].column), (5, 25), "{}", p[0]);
        assert_eq!(p[0].key, "attributes.userName");
        assert_eq!((p[1].line, p[1].column), (6, 30), "{}", p[1]);
        assert_eq!(p[1].key, "attributes.title.expr");
    }

    #[test]
    fn multi_line_expression_errors_count_lines() {
        let text = "version = 1\n[scope]\ndefault = \"include\"\ndisabled = '''\nattr.x or\n  attr.y | nope\n'''\n[attributes]\nuserName = \"attr.mail\"\n";
        let p = problems(text);
        assert_eq!(
            (p[0].line, p[0].column, p[0].key.as_str()),
            (6, 12, "scope.disabled"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn unknown_and_duplicate_targets() {
        let text = "version = 1\n[scope]\ndefault = \"include\"\n[attributes]\nuserName = \"attr.mail\"\nnickName = \"attr.x\"\ndepartment = \"attr.d\"\n\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:Department\" = \"attr.e\"\n";
        let p = problems(text);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].line, p[0].column), (6, 1));
        assert!(p[0].message.contains("unknown target attribute `nickName`"));
        assert_eq!((p[1].line, p[1].column), (8, 1));
        assert!(
            p[1].message
                .contains("already set as `department` at line 7, column 1"),
            "{}",
            p[1]
        );
    }

    #[test]
    fn literal_duplicate_key_names_both_lines() {
        let text = "version = 1\n[scope]\ndefault = \"include\"\n[attributes]\nuserName = \"attr.mail\"\ntitle = \"attr.t\"\ntitle = \"attr.u\"\n";
        let p = problems(text);
        assert_eq!(p[0].line, 7, "{}", p[0]);
        assert!(p[0].message.contains("line 6"), "{}", p[0]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_located() {
        let p = problems("version = 1\n[scope]\ndefault = \"include\"\nwhatever = 1\n[attributes]\nuserName = \"attr.mail\"\n");
        assert_eq!(
            (p[0].line, p[0].key.as_str()),
            (4, "scope.whatever"),
            "{}",
            p[0]
        );
        let p = problems(
            "version = 1\n[scope]\ndefault = \"maybe\"\n[attributes]\nuserName = \"attr.mail\"\n",
        );
        assert_eq!(p[0].line, 3, "{}", p[0]);
        let p = problems(
            "version = 2\n[scope]\ndefault = \"include\"\n[attributes]\nuserName = \"attr.mail\"\n",
        );
        assert_eq!((p[0].line, p[0].column), (1, 11), "{}", p[0]);
        let p = problems("version = 1\n[scope]\ndefault = \"include\"\n[attributes]\nuserName = { expr = \"attr.mail\", aply = \"always\" }\n");
        assert_eq!(p[0].line, 5, "{}", p[0]);
        assert!(p[0].message.contains("aply"), "{}", p[0]);
    }

    #[test]
    fn semantic_checks() {
        let p = problems(
            "version = 1\n[scope]\ndefault = \"exclude\"\n[attributes]\ntitle = \"attr.t\"\n",
        );
        assert!(p.iter().any(|e| e.key == "attributes.userName"), "{p:?}");
        assert!(p.iter().any(|e| e.key == "scope"), "{p:?}");
        let p = problems("version = 1\n[scope]\ndefault = \"include\"\n[[scope.rules]]\naction = \"exclude\"\n[attributes]\nuserName = \"attr.mail\"\nactive = { expr = \"true\", default = \"yes\" }\n[correlation]\nexternal_id = \"attr.guid\"\nfallback = [\"email\", \"email\"]\n[removal]\nprotected_regexes = [\"(\"]\n");
        let keys: Vec<&str> = p.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "scope.rules[0]",
                "attributes.active.default",
                "correlation.fallback",
                "removal.protected_regexes"
            ],
            "{p:?}"
        );
    }

    #[test]
    fn external_id_in_both_places_is_a_duplicate() {
        let p = problems("version = 1\n[scope]\ndefault = \"include\"\n[correlation]\nexternal_id = \"id\"\n[attributes]\nuserName = \"attr.mail\"\nexternalId = \"attr.x\"\n");
        assert_eq!((p[0].line, p[0].column), (8, 1));
        assert!(p[0].message.contains("line 5, column 15"), "{}", p[0]);
    }

    #[test]
    fn globs_become_anchored_case_insensitive_patterns() {
        let m = load(&format!(
            "{MIN}[removal]\naction = \"deactivate\"\nprotected_users = [\"BreakGlass@example.com\"]\nprotected_globs = [\"admin-*@example.com\"]\n"
        ))
        .unwrap();
        let r = m.removal();
        assert_eq!(r.action, Some(crate::config::RemoveMode::Deactivate));
        assert!(r.is_protected("breakglass@EXAMPLE.com"));
        assert!(r.is_protected("Admin-1@example.com"));
        assert!(!r.is_protected("xadmin-1@example.com"));
        assert!(!r.is_protected("admin-1@example.comx"));
    }
}
