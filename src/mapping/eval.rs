//! Evaluation: one source entry to an [`Evaluation`] (in scope or not and which rule decided,
//! disabled or not, and the desired Ironclad user with each attribute's value and apply
//! policy, as SCIM JSON on request), and a snapshot's groups to [`DesiredGroup`]s. Pure: no
//! I/O, time is a parameter.
//!
//! Batch callers (the reconciler) call [`Mapping::prepare_shared`] (or [`Mapping::prepare`])
//! once per snapshot and evaluate every entry through the returned [`Prepared`];
//! [`Mapping::evaluate`] is the one-entry convenience (it indexes the snapshot each time).
//!
//! What does not live here: comparing desired users with Ironclad's (the reconciler).

use super::expr::{
    attr_values, is_absent, model_value, now_value, text_of, Ctx, MAX_VALUES, MAX_VALUE_BYTES,
};
use super::index::{group_name, EntryHandle, Index};
use super::target::{Apply, Kind, Target};
use super::{EvalError, Mapping, MappingError};
use crate::config::ConfigError;
use crate::model::{Entry, Snapshot};
use chrono::{DateTime, Utc};
use minijinja::value::ValueKind;
use minijinja::{ErrorKind, Value};
use serde::Serialize;
use serde_json::{Map, Value as Json};
use std::sync::Arc;

/// What the mapping makes of one source entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// The entry's stable id.
    pub source_id: String,
    /// The entry's DN or resource URL.
    pub locator: String,
    /// Whether the scope rules want the entry in Ironclad.
    pub in_scope: bool,
    /// Which rule (or the default) decided.
    pub decided_by: ScopeDecision,
    /// Whether the source account is disabled (`[scope] disabled`).
    pub disabled: bool,
    /// In scope and not disabled: the person should have an Ironclad account.
    pub desired: bool,
    /// The Ironclad user the entry maps to. Always present for a desired entry; for an entry
    /// that is not desired, absent when an attribute could not be computed (see
    /// `user_error`).
    pub user: Option<DesiredUser>,
    /// Why `user` is absent for an entry that is not desired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_error: Option<String>,
    /// When `user` is absent: the entry's externalId, if that expression could be computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// The rule that put an entry in or out of scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeDecision {
    /// Index in `[[scope.rules]]` (0-based), or `None` when no rule matched and
    /// `scope.default` decided.
    pub rule: Option<usize>,
    /// Line of the rule (or of `default`) in the mapping file.
    pub line: usize,
    /// The rule as text: its `description`, or its action and conditions.
    #[serde(serialize_with = "arc_str")]
    pub text: Arc<str>,
}

fn arc_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

/// The Ironclad user a source entry maps to. Serializes with its SCIM JSON (`scim`).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredUser {
    /// `externalId`: the stable correlation key.
    pub external_id: String,
    /// `userName`.
    pub user_name: String,
    /// Every managed attribute with its value (`None`: no value) and apply policy,
    /// `externalId` first, then in mapping-file order.
    pub attributes: Vec<AttributeValue>,
}

impl DesiredUser {
    /// The user as SCIM JSON (core + enterprise + Ironclad extension, `schemas` filled). Only
    /// managed attributes with a value appear.
    pub fn scim(&self) -> Json {
        // One layout for both forms: the tree is read back from the text, which always parses.
        serde_json::from_str(&self.scim_text(None)).unwrap_or(Json::Null)
    }

    /// The compact JSON text of [`DesiredUser::scim`] with `extra` added as a top-level string
    /// member, written without building the tree (what the reconciler keeps of each user).
    pub fn scim_text(&self, extra: Option<(&str, &str)>) -> String {
        super::target::user_json_text(
            self.attributes
                .iter()
                .filter_map(|a| Some((a.target, a.value.as_ref()?))),
            extra,
        )
    }

    /// The value of one managed attribute (`None` when unmanaged or without a value).
    pub fn value(&self, target: Target) -> Option<&Json> {
        self.attributes
            .iter()
            .find(|a| a.target == target)
            .and_then(|a| a.value.as_ref())
    }

    /// The email addresses, primary first (empty when `emails` is not managed).
    pub fn emails(&self) -> Vec<&str> {
        self.value(Target::Emails)
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("value").and_then(Json::as_str))
            .collect()
    }

    /// The manager's externalId, when `manager` is managed and has a value. The reconciler
    /// turns it into the manager's Ironclad id for `manager.value`.
    pub fn manager_external_id(&self) -> Option<&str> {
        self.value(Target::Manager).and_then(Json::as_str)
    }
}

impl Serialize for DesiredUser {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("DesiredUser", 6)?;
        st.serialize_field("external_id", &self.external_id)?;
        st.serialize_field("user_name", &self.user_name)?;
        st.serialize_field("emails", &self.emails())?;
        st.serialize_field("manager_external_id", &self.manager_external_id())?;
        st.serialize_field("attributes", &self.attributes)?;
        st.serialize_field("scim", &self.scim())?;
        st.end()
    }
}

/// One managed attribute's desired value.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeValue {
    /// The Ironclad attribute (its SCIM path for PATCH: [`Target::scim_path`]).
    pub target: Target,
    /// The value in SCIM JSON form, or `None` when the mapping gives none (with `always`,
    /// the reconciler clears it in Ironclad).
    pub value: Option<Json>,
    /// How it is applied.
    pub apply: Apply,
    /// Whether `value` is the attribute's `default` (the expression gave nothing).
    pub from_default: bool,
}

impl Serialize for AttributeValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("AttributeValue", 5)?;
        st.serialize_field("target", &self.target)?;
        st.serialize_field("path", &self.target.scim_path())?;
        st.serialize_field("value", &self.value)?;
        st.serialize_field("apply", &self.apply)?;
        st.serialize_field("from_default", &self.from_default)?;
        st.end()
    }
}

/// A source group that becomes an Ironclad group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredGroup {
    /// The group's stable source id (carried as the Ironclad group's externalId).
    pub source_id: String,
    /// The group's DN or resource URL.
    pub locator: String,
    /// The Ironclad group's `displayName`.
    pub display_name: String,
    /// Source ids of its user members (nested groups followed when `flatten`), sorted. The
    /// reconciler keeps those that are desired users.
    pub member_source_ids: Vec<String>,
}

/// The groups of one snapshot, with the problems of those that could not be evaluated (one
/// bad group never stops the others).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct GroupEvaluation {
    /// Groups to have in Ironclad, in snapshot order.
    pub groups: Vec<DesiredGroup>,
    /// Groups skipped, and why.
    #[serde(serialize_with = "errors_as_text")]
    pub errors: Vec<MappingError>,
}

fn errors_as_text<S: serde::Serializer>(e: &[MappingError], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(e.iter().map(ToString::to_string))
}

/// A mapping bound to one snapshot and one run time, ready to evaluate entries. Building it
/// indexes the snapshot once. `Send + Sync`: entries may be evaluated from several threads.
#[derive(Debug)]
pub struct Prepared<'m> {
    mapping: &'m Mapping,
    index: Arc<Index>,
    now: Value,
    /// Per scope rule: positions of the groups its `member_of` names.
    rule_groups: Vec<Vec<usize>>,
    /// Per scope rule: its text, shared by every evaluation it decides.
    rule_texts: Vec<Arc<str>>,
    default_text: Arc<str>,
    /// Whether entries may be evaluated natively (always, but for the tests that compare the
    /// native values with the engine's).
    native: bool,
}

impl Mapping {
    /// Binds the mapping to a snapshot and run time, copying the snapshot once (use
    /// [`Mapping::prepare_shared`] to avoid the copy). Fails when a scope rule's `member_of`
    /// names a group the snapshot lacks: evaluating anyway would silently drop its members
    /// from scope.
    pub fn prepare(
        &self,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
    ) -> Result<Prepared<'_>, MappingError> {
        self.prepare_shared(Arc::new(snapshot.clone()), now)
    }

    /// [`Mapping::prepare`] for a snapshot already shared: nothing is copied.
    pub fn prepare_shared(
        &self,
        snapshot: Arc<Snapshot>,
        now: DateTime<Utc>,
    ) -> Result<Prepared<'_>, MappingError> {
        let index = Arc::new(Index::build(snapshot));
        let mut rule_groups = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let mut positions = Vec::new();
            for (name, at) in &rule.member_of {
                let found = index.groups_named(name);
                if found.is_empty() {
                    return Err(MappingError::MissingGroup(ConfigError {
                        file: self.file.clone(),
                        line: at.line,
                        column: at.column,
                        key: at.key.clone(),
                        message: format!(
                            "group `{name}` is not in the source snapshot ({}); check the name or the source's group search",
                            index.snapshot.source
                        ),
                    }));
                }
                positions.extend(found);
            }
            rule_groups.push(positions);
        }
        Ok(Prepared {
            mapping: self,
            index,
            now: now_value(now),
            rule_groups,
            rule_texts: self
                .rules
                .iter()
                .map(|r| Arc::from(r.text.as_str()))
                .collect(),
            default_text: Arc::from(format!(
                "no rule matched: default {}",
                if self.scope_default_include {
                    "include"
                } else {
                    "exclude"
                }
            )),
            native: true,
        })
    }

    /// Evaluates one entry against a snapshot (which supplies group membership and lookups).
    /// Indexes the snapshot on every call: to evaluate many entries, use
    /// [`Mapping::prepare_shared`].
    pub fn evaluate(
        &self,
        entry: &Entry,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
    ) -> Result<Evaluation, MappingError> {
        self.prepare(snapshot, now)?.evaluate(entry)
    }

    /// The snapshot's groups that become Ironclad groups (time: the snapshot's read time).
    pub fn groups(&self, snapshot: &Snapshot) -> Result<GroupEvaluation, MappingError> {
        Ok(self.prepare(snapshot, snapshot.read_at)?.groups())
    }
}

impl Prepared<'_> {
    /// Evaluates an entry. Its group membership comes from the snapshot user with the same
    /// id, if any; its attributes are the ones given.
    pub fn evaluate(&self, entry: &Entry) -> Result<Evaluation, MappingError> {
        let pos = self.index.user_position(&entry.id);
        self.run(EntryHandle::Own(Arc::new(entry.clone())), pos)
    }

    /// Evaluates the snapshot user with this stable id, if there is one.
    pub fn evaluate_id(&self, id: &str) -> Option<Result<Evaluation, MappingError>> {
        let pos = self.index.user_position(id)?;
        Some(self.run(EntryHandle::InSnapshot(self.index.clone(), pos), Some(pos)))
    }

    /// Users in the snapshot.
    pub fn user_count(&self) -> usize {
        self.index.n_users
    }

    /// Evaluates the snapshot user at position `pos` (`0..user_count()`, snapshot order).
    /// Evaluations of different positions are independent, so a large snapshot can be
    /// evaluated on several threads.
    pub fn evaluate_at(&self, pos: usize) -> Result<Evaluation, MappingError> {
        self.run(EntryHandle::InSnapshot(self.index.clone(), pos), Some(pos))
    }

    /// Evaluates `entry` as the snapshot user at position `pos`: for a caller that took the
    /// snapshot users' attributes out before preparing (possible when the mapping does not
    /// [read other entries](Mapping::reads_other_entries)), so that each entry's attributes
    /// are freed as soon as it has been evaluated.
    pub fn evaluate_taken(&self, pos: usize, entry: Entry) -> Result<Evaluation, MappingError> {
        self.run(EntryHandle::Own(Arc::new(entry)), Some(pos))
    }

    /// Evaluates every user of the snapshot, in snapshot order. One entry's error does not
    /// stop the others.
    pub fn evaluate_all(&self) -> Vec<Result<Evaluation, MappingError>> {
        self.evaluate_iter().collect()
    }

    /// Evaluates every user entry of the snapshot in order, one at a time as the iterator is
    /// advanced: a caller that keeps a smaller form of each result never holds them all.
    pub fn evaluate_iter(&self) -> impl Iterator<Item = Result<Evaluation, MappingError>> + '_ {
        (0..self.index.n_users).map(|p| self.evaluate_at(p))
    }

    fn err(&self, expr: usize, entry: &Entry, message: String) -> MappingError {
        let m = self.mapping;
        let (key, line, column) = m
            .exprs
            .get(expr)
            .map(|e| (e.key.clone(), e.line, e.column))
            .unwrap_or_else(|| ("-".into(), 0, 0));
        MappingError::Eval(Box::new(EvalError {
            locator: entry.locator.clone(),
            id: entry.id.clone(),
            key,
            message,
            file: m.file.clone(),
            line,
            column,
            external_id: None,
        }))
    }

    /// The entry's externalId alone, when it can be computed (for an entry another of whose
    /// attributes failed).
    fn external_id_of(&self, root: &Value, entry: &Entry) -> Option<String> {
        let v = self.eval(self.mapping.external_id, root, entry).ok()?;
        external_id_value(&v)
    }

    fn eval(&self, expr: usize, root: &Value, entry: &Entry) -> Result<Value, MappingError> {
        let Some(e) = self.mapping.expr(expr) else {
            return Err(self.err(expr, entry, "expression missing".into()));
        };
        e.eval(root.clone())
            .map_err(|e| self.err(expr, entry, engine_message(&e)))
    }

    fn condition(&self, expr: usize, root: &Value, entry: &Entry) -> Result<bool, MappingError> {
        let v = self.eval(expr, root, entry)?;
        Ok(bool_of(&v)
            .map_err(|m| self.err(expr, entry, m))?
            .unwrap_or(false))
    }

    fn run(&self, handle: EntryHandle, pos: Option<usize>) -> Result<Evaluation, MappingError> {
        // Fastest: every item of the one-pass list evaluated natively (see `native`).
        if let Some(ev) = self.run_native(handle.get(), pos) {
            return Ok(ev);
        }
        let ctx = Ctx::new(self.index.clone(), handle.clone(), pos, self.now.clone());
        let root = ctx.value();
        let entry = handle.get();
        // Fast path: every expression in one evaluation. Any failure there is redone step by
        // step, which gives the exact error and the first-match-wins semantics.
        if let Some(ev) = self.run_combined(&root, entry, pos) {
            return Ok(ev);
        }
        self.run_stepwise(&ctx, &root, entry, pos)
    }

    fn decide(&self, rule: Option<usize>) -> (bool, ScopeDecision) {
        let m = self.mapping;
        match rule {
            Some(i) => (
                m.rules[i].include,
                ScopeDecision {
                    rule: Some(i),
                    line: m.rules[i].line,
                    text: self.rule_texts[i].clone(),
                },
            ),
            None => (
                m.scope_default_include,
                ScopeDecision {
                    rule: None,
                    line: m.scope_default_line,
                    text: self.default_text.clone(),
                },
            ),
        }
    }

    fn member_ok(&self, rule: usize, pos: Option<usize>) -> bool {
        if self.mapping.rules[rule].member_of.is_empty() {
            return true;
        }
        let mine = pos.map(|p| self.index.groups_of(p)).unwrap_or(&[]);
        self.rule_groups[rule].iter().any(|g| mine.contains(g))
    }

    /// The one-pass list's values computed without the engine, when the mapping allows it
    /// and the entry holds nothing the native shapes leave to the engine.
    fn run_native(&self, entry: &Entry, pos: Option<usize>) -> Option<Evaluation> {
        if !self.native {
            return None;
        }
        let natives = self.mapping.native.as_deref()?;
        let (first, rest) = natives.split_first()?;
        // As the engine's list does: `disabled` through `as_bool`, then remembered.
        let disabled = bool_of(&first.eval(entry, None)?).ok()?.unwrap_or(false);
        let mut values = Vec::with_capacity(natives.len());
        values.push(Value::from(disabled));
        for n in rest {
            values.push(n.eval(entry, Some(disabled))?);
        }
        self.evaluation_of(values, entry, pos)
    }

    fn run_combined(&self, root: &Value, entry: &Entry, pos: Option<usize>) -> Option<Evaluation> {
        let m = self.mapping;
        let v = m.expr(m.combined)?.eval(root.clone()).ok()?;
        let values: Vec<Value> = v.try_iter().ok()?.collect();
        self.evaluation_of(values, entry, pos)
    }

    /// An evaluation from the one-pass list's values (disabled, each rule's condition,
    /// externalId, each engine attribute), or `None` where the step-by-step evaluation must
    /// decide (and report the error).
    fn evaluation_of(
        &self,
        values: Vec<Value>,
        entry: &Entry,
        pos: Option<usize>,
    ) -> Option<Evaluation> {
        let m = self.mapping;
        let n_rules = m.rules.len();
        if values.len() != n_rules + m.engine_attributes + 2 {
            return None;
        }
        let disabled = bool_of(&values[0]).ok()?.unwrap_or(false);
        let mut decided = None;
        for i in 0..n_rules {
            if self.member_ok(i, pos) && bool_of(&values[1 + i]).ok()?.unwrap_or(false) {
                decided = Some(i);
                break;
            }
        }
        let (in_scope, decided_by) = self.decide(decided);
        let desired = in_scope && !disabled;
        let (user, user_error, external_id) = match self.user(&values[1 + n_rules..], entry) {
            Ok(u) => (Some(u), None, None),
            Err(e) if !desired => (
                None,
                Some(e.to_string()),
                external_id_value(&values[1 + n_rules]),
            ),
            // Redone step by step, which reports the error.
            Err(_) => return None,
        };
        Some(Evaluation {
            source_id: entry.id.clone(),
            locator: entry.locator.clone(),
            in_scope,
            decided_by,
            disabled,
            desired,
            user,
            user_error,
            external_id,
        })
    }

    fn run_stepwise(
        &self,
        ctx: &Ctx,
        root: &Value,
        entry: &Entry,
        pos: Option<usize>,
    ) -> Result<Evaluation, MappingError> {
        let m = self.mapping;
        let disabled = match m.disabled {
            Some(id) => self.condition(id, root, entry)?,
            None => false,
        };
        ctx.set_disabled(disabled);
        let mut decided = None;
        for (i, rule) in m.rules.iter().enumerate() {
            if !self.member_ok(i, pos) {
                continue;
            }
            if let Some(w) = rule.when {
                if !self.condition(w, root, entry)? {
                    continue;
                }
            }
            decided = Some(i);
            break;
        }
        let (in_scope, decided_by) = self.decide(decided);
        let desired = in_scope && !disabled;
        let values = self.attribute_values(root, entry);
        let (user, user_error) = match values.and_then(|v| self.user(&v, entry)) {
            Ok(u) => (Some(u), None),
            Err(e) if !desired => (None, Some(e.to_string())),
            Err(MappingError::Eval(mut e)) => {
                e.external_id = self.external_id_of(root, entry);
                return Err(MappingError::Eval(e));
            }
            Err(e) => return Err(e),
        };
        let external_id = match user {
            None => self.external_id_of(root, entry),
            Some(_) => None,
        };
        Ok(Evaluation {
            source_id: entry.id.clone(),
            locator: entry.locator.clone(),
            in_scope,
            decided_by,
            disabled,
            desired,
            user,
            user_error,
            external_id,
        })
    }

    /// Each attribute expression alone (externalId first), so an error names its attribute.
    /// Direct attributes are left out, as in the one-pass evaluation.
    fn attribute_values(&self, root: &Value, entry: &Entry) -> Result<Vec<Value>, MappingError> {
        let m = self.mapping;
        let mut values = Vec::with_capacity(m.attributes.len() + 1);
        values.push(self.eval(m.external_id, root, entry)?);
        for a in m.attributes.iter().filter(|a| a.direct.is_none()) {
            values.push(self.eval(a.expr, root, entry)?);
        }
        Ok(values)
    }

    /// Builds the user from the attribute values (externalId first).
    fn user(&self, values: &[Value], entry: &Entry) -> Result<DesiredUser, MappingError> {
        let m = self.mapping;
        let (ext_value, values) = match values.split_first() {
            Some((first, rest)) => (first, rest),
            None => (&Value::UNDEFINED, values),
        };
        let external_id =
            match convert(Target::ExternalId, ext_value) {
                Ok(Some(Json::String(s))) => s,
                Ok(_) => return Err(self.err(
                    m.external_id,
                    entry,
                    "the expression gave no value; every managed user needs a stable externalId"
                        .into(),
                )),
                Err(msg) => return Err(self.err(m.external_id, entry, msg)),
            };
        let mut attributes = Vec::with_capacity(m.attributes.len() + 1);
        attributes.push(AttributeValue {
            target: Target::ExternalId,
            value: Some(Json::String(external_id.clone())),
            apply: Apply::Always,
            from_default: false,
        });
        let mut user_name = None;
        let mut engine_values = values.iter();
        for a in &m.attributes {
            let direct;
            let v = match &a.direct {
                Some(name) => {
                    direct = attr_values(&entry.attrs, name)
                        .first()
                        .map(model_value)
                        .unwrap_or(Value::UNDEFINED);
                    &direct
                }
                None => engine_values.next().unwrap_or(&Value::UNDEFINED),
            };
            let converted = convert(a.target, v).map_err(|msg| self.err(a.expr, entry, msg))?;
            let (value, from_default) = match converted {
                Some(j) => (Some(j), false),
                None => match &a.default {
                    Some(d) => (
                        convert(a.target, &json_value(d))
                            .map_err(|msg| self.err(a.expr, entry, msg))?,
                        true,
                    ),
                    None => (None, false),
                },
            };
            if a.target == Target::UserName {
                user_name = value.as_ref().and_then(Json::as_str).map(str::to_string);
            }
            attributes.push(AttributeValue {
                target: a.target,
                value,
                apply: a.apply,
                from_default,
            });
        }
        let un_expr = m
            .attributes
            .iter()
            .find(|a| a.target == Target::UserName)
            .map(|a| a.expr)
            .unwrap_or(m.combined);
        let Some(user_name) = user_name else {
            return Err(self.err(
                un_expr,
                entry,
                "the expression gave no value; every Ironclad user needs a userName".into(),
            ));
        };
        if !looks_like_email(&user_name) {
            return Err(self.err(
                un_expr,
                entry,
                format!("userName `{user_name}` is not an email address; Ironclad user names are email addresses"),
            ));
        }
        Ok(DesiredUser {
            external_id,
            user_name,
            attributes,
        })
    }

    /// The groups that become Ironclad groups. Groups named in `[groups]` but absent from the
    /// snapshot, and groups whose expressions fail, are reported in `errors`.
    pub fn groups(&self) -> GroupEvaluation {
        let mut out = GroupEvaluation::default();
        let m = self.mapping;
        let Some(spec) = &m.groups else {
            return out;
        };
        let ix = &self.index;
        let mut named = std::collections::HashSet::new();
        for (list, key) in [(&spec.dns, "groups.dns"), (&spec.names, "groups.names")] {
            for n in list {
                let found: Vec<usize> = ix
                    .groups_named(n)
                    .into_iter()
                    .filter(|p| *p >= ix.n_users)
                    .collect();
                if found.is_empty() {
                    out.errors.push(MappingError::MissingGroup(ConfigError {
                        file: m.file.clone(),
                        line: 0,
                        column: 0,
                        key: key.into(),
                        message: format!("group `{n}` is not in the source snapshot"),
                    }));
                }
                named.extend(found);
            }
        }
        let mut seen_names: std::collections::HashMap<String, String> = Default::default();
        for pos in ix.n_users..ix.len() {
            let handle = EntryHandle::InSnapshot(ix.clone(), pos);
            let entry = handle.get();
            let name = group_name(entry);
            let ctx = Ctx::new(ix.clone(), handle.clone(), Some(pos), self.now.clone());
            let root = ctx.value();
            let mut selected =
                named.contains(&pos) || spec.name_regex.iter().any(|r| r.is_match(&name));
            if !selected {
                if let Some(w) = spec.when {
                    match self.condition(w, &root, entry) {
                        Ok(b) => selected = b,
                        Err(e) => {
                            out.errors.push(e);
                            continue;
                        }
                    }
                }
            }
            if !selected {
                continue;
            }
            let display_name = match spec.display_name {
                None => name,
                Some(d) => {
                    let v = match self.eval(d, &root, entry) {
                        Ok(v) => v,
                        Err(e) => {
                            out.errors.push(e);
                            continue;
                        }
                    };
                    match convert(Target::DisplayName, &v) {
                        Ok(Some(Json::String(s))) => s,
                        Ok(_) => {
                            out.errors.push(self.err(
                                d,
                                entry,
                                "the group's displayName expression gave no value".into(),
                            ));
                            continue;
                        }
                        Err(msg) => {
                            out.errors.push(self.err(d, entry, msg));
                            continue;
                        }
                    }
                }
            };
            let lower = display_name.to_lowercase();
            if let Some(first) = seen_names.get(&lower) {
                out.errors.push(MappingError::Eval(Box::new(EvalError {
                    locator: entry.locator.clone(),
                    id: entry.id.clone(),
                    key: "groups.display_name".into(),
                    message: format!(
                        "displayName `{display_name}` is already used by group {first}; this group is skipped"
                    ),
                    file: m.file.clone(),
                    line: 0,
                    column: 0,
                    external_id: None,
                })));
                continue;
            }
            seen_names.insert(lower, entry.locator.clone());
            let mut members: Vec<String> = ix
                .members_of(pos, spec.flatten)
                .iter()
                .filter_map(|p| ix.entry(*p))
                .map(|e| e.id.clone())
                .collect();
            members.sort();
            members.dedup();
            out.groups.push(DesiredGroup {
                source_id: entry.id.clone(),
                locator: entry.locator.clone(),
                display_name,
                member_source_ids: members,
            });
        }
        out
    }
}

fn engine_message(e: &minijinja::Error) -> String {
    match e.kind() {
        ErrorKind::OutOfFuel => {
            "the expression ran out of fuel (it runs too long or builds too much data)".into()
        }
        k => match e.detail() {
            Some(d) => format!("{k}: {d}"),
            None => k.to_string(),
        },
    }
}

fn json_value(j: &Json) -> Value {
    match j {
        Json::String(s) => Value::from(s.as_str()),
        Json::Bool(b) => Value::from(*b),
        Json::Array(a) => Value::from(a.iter().map(json_value).collect::<Vec<_>>()),
        _ => Value::UNDEFINED,
    }
}

/// A condition or boolean target: booleans, numbers (0 is false), and the words
/// true/false/yes/no/on/off/1/0 in any case. Absent and empty text are `None`.
/// An externalId value as text, as [`convert`] makes it.
fn external_id_value(v: &Value) -> Option<String> {
    match convert(Target::ExternalId, v) {
        Ok(Some(Json::String(s))) => Some(s),
        _ => None,
    }
}

pub(crate) fn bool_of(v: &Value) -> Result<Option<bool>, String> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => Ok(None),
        ValueKind::Bool | ValueKind::Number => Ok(Some(v.is_true())),
        ValueKind::String => {
            let s = v.as_str().unwrap_or("").trim().to_ascii_lowercase();
            match s.as_str() {
                "" => Ok(None),
                "true" | "yes" | "on" | "1" => Ok(Some(true)),
                "false" | "no" | "off" | "0" => Ok(Some(false)),
                _ => Err(format!(
                    "expected true or false, got the text `{}` (compare it, e.g. `... == 'x'`, or test it with `is defined`)",
                    clip(v.as_str().unwrap_or(""))
                )),
            }
        }
        k => Err(format!("expected true or false, got a {k}")),
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !s.contains(' ')
        }
        None => false,
    }
}

fn checked_text(v: &Value) -> Result<Option<String>, String> {
    let owned;
    let s = match v.as_str() {
        Some(s) => s,
        None => match text_of(v).map_err(|e| engine_message(&e))? {
            Some(s) => {
                owned = s;
                owned.as_str()
            }
            None => return Ok(None),
        },
    };
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "the value is {} bytes long; the limit is {MAX_VALUE_BYTES}",
            s.len()
        ));
    }
    Ok(Some(s.to_string()))
}

/// An expression result in the target's SCIM JSON form; `None` when it gives no value.
pub(crate) fn convert(target: Target, v: &Value) -> Result<Option<Json>, String> {
    match target.kind() {
        Kind::Text | Kind::Manager => Ok(checked_text(v)?.map(Json::String)),
        Kind::Bool => Ok(bool_of(v)?.map(Json::Bool)),
        Kind::Emails => emails(v),
    }
}

fn emails(v: &Value) -> Result<Option<Json>, String> {
    if is_absent(v) {
        return Ok(None);
    }
    let items: Vec<Value> = match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => v
            .try_iter()
            .map_err(|e| engine_message(&e))?
            .take(MAX_VALUES + 1)
            .collect(),
        _ => vec![v.clone()],
    };
    if items.len() > MAX_VALUES {
        return Err(format!("more than {MAX_VALUES} email addresses"));
    }
    let mut out: Vec<Map<String, Json>> = Vec::new();
    for item in items {
        let (value, typ, primary) = if item.kind() == ValueKind::Map {
            let get = |k: &str| item.get_attr(k).unwrap_or(Value::UNDEFINED);
            (
                checked_text(&get("value"))?,
                checked_text(&get("type"))?,
                bool_of(&get("primary"))?,
            )
        } else {
            (checked_text(&item)?, None, None)
        };
        let Some(value) = value else { continue };
        if !looks_like_email(&value) {
            return Err(format!(
                "emails: `{}` is not an email address",
                clip(&value)
            ));
        }
        if out.iter().any(|e| {
            e.get("value")
                .and_then(Json::as_str)
                .is_some_and(|x| x.eq_ignore_ascii_case(&value))
        }) {
            continue;
        }
        let mut e = Map::new();
        e.insert("value".into(), Json::String(value));
        e.insert(
            "type".into(),
            Json::String(typ.unwrap_or_else(|| "work".into())),
        );
        e.insert("primary".into(), Json::Bool(primary.unwrap_or(false)));
        out.push(e);
    }
    if out.is_empty() {
        return Ok(None);
    }
    // Exactly one primary: the first marked one, else the first.
    let first_primary = out
        .iter()
        .position(|e| e.get("primary") == Some(&Json::Bool(true)))
        .unwrap_or(0);
    for (i, e) in out.iter_mut().enumerate() {
        e.insert("primary".into(), Json::Bool(i == first_primary));
    }
    out.sort_by_key(|e| e.get("primary") != Some(&Json::Bool(true)));
    Ok(Some(Json::Array(
        out.into_iter().map(Json::Object).collect(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attributes, Group};
    use std::path::Path;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn user(id: &str, attrs: &[(&str, &str)]) -> Entry {
        let mut a = Attributes::new();
        for (k, v) in attrs {
            a.push(k, *v);
        }
        Entry {
            id: id.into(),
            locator: format!("uid={id},ou=people,dc=example,dc=com"),
            attrs: a,
        }
    }

    fn group(id: &str, cn: &str, members: &[&str]) -> Group {
        let mut a = Attributes::new();
        a.push("cn", cn);
        Group {
            entry: Entry {
                id: id.into(),
                locator: format!("cn={cn},ou=groups,dc=example,dc=com"),
                attrs: a,
            },
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            source: "test".into(),
            read_at: now(),
            users: vec![
                user(
                    "u1",
                    &[
                        ("mail", "Ann@Example.com"),
                        ("givenName", "Ann"),
                        ("title", "  Counsel "),
                    ],
                ),
                user("u2", &[("mail", "bob@example.com"), ("lock", "TRUE")]),
                user("u3", &[("mail", "svc-x@example.com")]),
                user("u4", &[("mail", "no-at-sign")]),
            ],
            groups: vec![
                group("g1", "Legal", &["u1", "g2"]),
                group("g2", "Paralegals", &["u2"]),
                group("g3", "Other", &["u3"]),
            ],
        }
    }

    fn mapping(text: &str) -> Mapping {
        Mapping::from_text(Path::new("t.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    const M: &str = r#"version = 1
[scope]
default = "exclude"
disabled = "(attr.lock | lower) == 'true'"
[[scope.rules]]
action = "exclude"
when = "attr.mail is startingwith('svc-')"
[[scope.rules]]
action = "include"
member_of = ["Legal"]
[attributes]
userName = "attr.mail | lower"
"name.givenName" = { expr = "attr.givenName", apply = "on_create", default = "Unknown" }
title = "attr.title"
emails = "[attr.mail, attr.mail | lower]"
active = "not disabled"
department = { expr = "attr.department", apply = "if_empty" }
[groups]
names = ["Legal"]
name_regex = ["^Para"]
display_name = "'IC ' ~ attr.cn"
"#;

    #[test]
    fn scope_rules_membership_and_disabled() {
        let m = mapping(M);
        let p = m.prepare(&snapshot(), now()).unwrap();
        let all: Vec<Evaluation> = p.evaluate_all().into_iter().map(Result::unwrap).collect();
        // u1: member of Legal directly.
        assert!(all[0].desired);
        assert_eq!(all[0].decided_by.rule, Some(1));
        assert_eq!(all[0].decided_by.line, 8);
        // u2: member of Legal through Paralegals, but disabled.
        assert!(all[1].in_scope && all[1].disabled && !all[1].desired);
        // u3: excluded by the first rule.
        assert!(!all[2].in_scope);
        assert_eq!(all[2].decided_by.rule, Some(0));
        // u4: no rule matched; an invalid userName does not fail an entry that is not desired.
        assert_eq!(all[3].decided_by.rule, None);
        assert!(all[3].user.is_none());
        assert!(all[3]
            .user_error
            .as_deref()
            .unwrap()
            .contains("not an email"));
    }

    /// Mappings whose one-pass list is all native shapes give, entry by entry, exactly what
    /// the engine gives: the same evaluation, or the same error.
    #[test]
    fn native_evaluation_equals_the_engine() {
        let mappings = [
            r#"version = 1
[scope]
default = "include"
disabled = "attr.locked is defined"
[[scope.rules]]
action = "exclude"
when = "attr.mail is not defined"
[attributes]
userName = "attr.mail | lower"
"name.givenName" = "attr.givenName"
title = "attr.title"
emails = "attrs.mail | map('lower') | list"
active = "not disabled"
"#,
            r#"version = 1
[scope]
default = "exclude"
disabled = "attr.lock"
[[scope.rules]]
action = "include"
when = "attr.uid is defined"
[[scope.rules]]
action = "include"
member_of = ["Legal"]
[correlation]
external_id = "attr.uid"
[attributes]
userName = "attr.mail|lower"
"name.familyName" = "attr.sn | lower"
emails = "attrs.mail | map(\"lower\") | list"
active = "true"
"#,
        ];
        let texts: &[&[(&str, &str)]] = &[
            &[
                ("mail", "Ann@Example.COM"),
                ("givenName", "Ann"),
                ("uid", "ann"),
            ],
            &[
                ("mail", "İSTANBUL@example.com"),
                ("mail", "Second@X.org"),
                ("sn", "ẞTRASSE"),
            ],
            &[("mail", "bob@example.com"), ("locked", "20240101000000Z")],
            &[("mail", "carl@example.com"), ("lock", "yes"), ("uid", "c")],
            &[("mail", "dee@example.com"), ("lock", "maybe"), ("uid", "d")],
            &[("mail", "not-an-address"), ("uid", "e")],
            &[("uid", "f"), ("sn", "F")],
            &[("mail", ""), ("uid", "g")],
            &[],
        ];
        let mut users: Vec<Entry> = texts
            .iter()
            .enumerate()
            .map(|(i, a)| user(&format!("u{i}"), a))
            .collect();
        let mut binary = user("ub", &[("uid", "b"), ("sn", "B")]);
        binary
            .attrs
            .push("mail", crate::model::Value::binary(vec![0xffu8, 0x40]));
        users.push(binary);
        let mut snap = snapshot();
        snap.users = users;
        snap.groups = vec![group("g1", "Legal", &["u0", "u5"])];
        for text in mappings {
            let m = mapping(text);
            assert!(m.native.is_some(), "every item is a native shape:\n{text}");
            let native = m.prepare(&snap, now()).unwrap();
            let mut engine = m.prepare(&snap, now()).unwrap();
            engine.native = false;
            let mut natively = 0;
            for pos in 0..snap.users.len() {
                let a = native.evaluate_at(pos).map_err(|e| e.to_string());
                let b = engine.evaluate_at(pos).map_err(|e| e.to_string());
                assert_eq!(a, b, "entry {pos}\n{text}");
                natively += usize::from(native.run_native(&snap.users[pos], Some(pos)).is_some());
            }
            // Both paths were taken: native, and the engine for what the shapes leave to it.
            assert!(
                natively >= 1 && natively < snap.users.len(),
                "{natively} native evaluations\n{text}"
            );
        }
        // One item the shapes do not cover: the engine evaluates everything.
        let m = mapping(&mappings[0].replace("attr.title", "attr.title | trim"));
        assert!(m.native.is_none());
    }

    #[test]
    fn desired_user_json_and_policies() {
        let m = mapping(M);
        let e = m
            .evaluate(&snapshot().users[0], &snapshot(), now())
            .unwrap();
        let u = e.user.unwrap();
        assert_eq!(u.user_name, "ann@example.com");
        assert_eq!(u.external_id, "u1");
        assert_eq!(u.emails(), vec!["Ann@Example.com"]);
        let scim = u.scim();
        assert_eq!(scim["title"], "Counsel");
        assert_eq!(scim["active"], true);
        assert_eq!(scim["name"]["givenName"], "Ann");
        assert_eq!(scim["emails"][0]["primary"], true);
        assert_eq!(scim["emails"][0]["type"], "work");
        assert_eq!(
            scim["schemas"],
            serde_json::json!(["urn:ietf:params:scim:schemas:core:2.0:User"])
        );
        let dept = u
            .attributes
            .iter()
            .find(|a| a.target == Target::Department)
            .unwrap();
        assert_eq!((dept.value.clone(), dept.apply), (None, Apply::IfEmpty));
        let given = u
            .attributes
            .iter()
            .find(|a| a.target == Target::GivenName)
            .unwrap();
        assert_eq!(given.apply, Apply::OnCreate);
        assert!(!given.from_default);
        // The default fills in when the expression gives nothing.
        let bob = m
            .evaluate(&snapshot().users[1], &snapshot(), now())
            .unwrap();
        let g = bob.user.unwrap();
        assert_eq!(g.scim()["name"]["givenName"], "Unknown");
        assert_eq!(g.scim()["active"], false);
    }

    #[test]
    fn runtime_errors_name_entry_attribute_and_position() {
        let m = mapping(&M.replace(
            "title = \"attr.title\"",
            "title = \"attr.title | has_bit(1)\"",
        ));
        let err = m
            .evaluate(&snapshot().users[0], &snapshot(), now())
            .unwrap_err();
        match &err {
            MappingError::Eval(e) => {
                assert_eq!(e.locator, "uid=u1,ou=people,dc=example,dc=com");
                assert_eq!(e.key, "attributes.title");
                assert_eq!((e.line, e.column), (14, 10));
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("is not an integer"), "{err}");
        // A non-boolean condition is an error, not silently true.
        let m = mapping(&M.replace("(attr.lock | lower) == 'true'", "attr.mail"));
        let err = m
            .evaluate(&snapshot().users[1], &snapshot(), now())
            .unwrap_err();
        assert!(err.to_string().contains("scope.disabled"), "{err}");
    }

    #[test]
    fn missing_scope_group_refuses_to_evaluate() {
        let m = mapping(&M.replace("member_of = [\"Legal\"]", "member_of = [\"Legall\"]"));
        let err = m.prepare(&snapshot(), now()).unwrap_err();
        match err {
            MappingError::MissingGroup(e) => {
                assert_eq!((e.line, e.column), (10, 14));
                assert_eq!(e.key, "scope.rules[1].member_of");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn groups_by_name_regex_and_flattening() {
        let m = mapping(M);
        let g = m.groups(&snapshot()).unwrap();
        assert!(g.errors.is_empty(), "{:?}", g.errors);
        let names: Vec<&str> = g.groups.iter().map(|g| g.display_name.as_str()).collect();
        assert_eq!(names, vec!["IC Legal", "IC Paralegals"]);
        assert_eq!(g.groups[0].member_source_ids, vec!["u1", "u2"]);
        let m = mapping(&format!("{M}flatten = false\n"));
        let g = m.groups(&snapshot()).unwrap();
        assert_eq!(g.groups[0].member_source_ids, vec!["u1"]);
    }

    #[test]
    fn group_display_name_clashes_are_reported() {
        let m = mapping(&M.replace("'IC ' ~ attr.cn", "'Same'"));
        let g = m.groups(&snapshot()).unwrap();
        assert_eq!(g.groups.len(), 1);
        assert_eq!(g.errors.len(), 1);
        assert!(
            g.errors[0].to_string().contains("already used"),
            "{}",
            g.errors[0]
        );
    }

    #[test]
    fn emails_accept_text_lists_and_objects() {
        let v = Value::from(vec![
            Value::from("a@x.com"),
            Value::from("A@X.com"),
            Value::from(""),
        ]);
        let j = emails(&v).unwrap().unwrap();
        assert_eq!(j.as_array().unwrap().len(), 1);
        let mut obj = std::collections::BTreeMap::new();
        obj.insert("value", Value::from("b@x.com"));
        obj.insert("type", Value::from("home"));
        obj.insert("primary", Value::from(true));
        let v = Value::from(vec![Value::from("a@x.com"), Value::from(obj)]);
        let j = emails(&v).unwrap().unwrap();
        assert_eq!(j[0]["value"], "b@x.com");
        assert_eq!(j[0]["type"], "home");
        assert_eq!(j[1]["primary"], false);
        assert!(emails(&Value::from("nope")).is_err());
        assert_eq!(emails(&Value::UNDEFINED).unwrap(), None);
    }

    #[test]
    fn booleans_are_strict() {
        assert_eq!(bool_of(&Value::from("TRUE")), Ok(Some(true)));
        assert_eq!(bool_of(&Value::from("off")), Ok(Some(false)));
        assert_eq!(bool_of(&Value::from(0)), Ok(Some(false)));
        assert_eq!(bool_of(&Value::UNDEFINED), Ok(None));
        assert!(bool_of(&Value::from("maybe")).is_err());
    }

    #[test]
    fn output_size_is_capped() {
        let m = mapping(&M.replace("attr.title\"", "attr.title ~ ('x' * 5000)\""));
        let err = m
            .evaluate(&snapshot().users[0], &snapshot(), now())
            .unwrap_err();
        assert!(err.to_string().contains("the limit is 4096"), "{err}");
    }
}
