//! Reports of a plan: a terminal table (colour on a TTY), JSON (versioned schema
//! `ironbridge.plan/v1`), Markdown, CSV and a single-file HTML page (sortable, filterable, no
//! external assets). Every change names the user (userName and source DN/id) and each
//! attribute's before and after; summary counts per action come first.
//!
//! Reports render only what is in the [`Plan`]; the plan never holds a secret, and the full
//! Ironclad objects kept for saved plans (`seen`) are left out of every report.
//!
//! What does not live here: deciding anything, or writing files (the CLI does).

use crate::reconcile::{
    AttrChange, GroupAction, GroupPlan, Plan, SkipReason, UserAction, UserPlan,
};
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;

/// The JSON report's schema identifier.
pub const JSON_SCHEMA: &str = "ironbridge.plan/v1";

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned table for a terminal.
    Text,
    /// JSON document (`ironbridge.plan/v1`).
    Json,
    /// Markdown.
    Markdown,
    /// CSV, one row per attribute change (or per action without changes).
    Csv,
    /// Single-file HTML page.
    Html,
}

/// A flattened report row: one per attribute change, or one per action without changes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// `user` or `group`.
    pub kind: &'static str,
    /// Action name.
    pub action: String,
    /// userName or group displayName.
    pub name: String,
    /// Source DN / URL, or the source id.
    pub source: String,
    /// Ironclad id.
    pub ironclad_id: String,
    /// Attribute path (empty when the row is not about one attribute).
    pub attribute: String,
    /// Value before.
    pub before: String,
    /// Value after.
    pub after: String,
    /// Reason or detail.
    pub detail: String,
}

/// `s` with every character that a terminal or viewer would act on or hide written as a
/// visible escape: control characters (`\n`, `\r`, `\t`, `\u{1b}`, DEL, C1), bidirectional
/// overrides and isolates, zero-width and line-separator characters. Directory values are
/// written by the people they describe: a title holding an escape sequence must not move the
/// cursor over the lines above the confirmation prompt, nor reorder what a reviewer reads.
/// Backslashes are left as they are. Borrowed when nothing needs escaping.
pub fn visible(s: &str) -> std::borrow::Cow<'_, str> {
    fn hidden(c: char) -> bool {
        c.is_control()
            || matches!(c,
                '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    }
    if !s.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

impl Row {
    /// Every text cell, for passes that rewrite them all.
    fn cells_mut(&mut self) -> [&mut String; 8] {
        [
            &mut self.action,
            &mut self.name,
            &mut self.source,
            &mut self.ironclad_id,
            &mut self.attribute,
            &mut self.before,
            &mut self.after,
            &mut self.detail,
        ]
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Why an entry is skipped, in words.
pub fn skip_text(r: &SkipReason) -> String {
    match r {
        // The rule's text already says why: "out of scope (the rule that decided)" or
        // "disabled in the source".
        SkipReason::OutOfScope { rule } if rule.starts_with("out of scope") => rule.clone(),
        // Not wanted, and no Ironclad user is linked to the person (one the bridge does not
        // manage may exist under the same name: it is left alone).
        SkipReason::OutOfScope { rule } => {
            format!("{rule}; no Ironclad user is linked to this person, nothing to remove")
        }
        SkipReason::Protected { pattern } => format!("protected account: {pattern}"),
        SkipReason::Quarantined { until, why } if why.is_empty() => {
            format!("quarantined after repeated failures; retried after {until}")
        }
        SkipReason::Quarantined { until, why } => {
            format!("quarantined ({why}); retried after {until}")
        }
        SkipReason::MissingScope { scope } => format!("missing scope {scope}"),
        SkipReason::Held { rule } => format!("held by a safety rule: {rule}"),
        SkipReason::Grace {
            missed_runs,
            needed_runs,
            not_before,
        } => {
            let runs = if *missed_runs == 1 {
                "missing in this run".to_string()
            } else {
                format!("missing in {missed_runs} runs in a row")
            };
            match not_before {
                Some(t) if *needed_runs > 1 => format!(
                    "grace period: {runs}; removed once missing in {needed_runs} runs in a row, \
                     and not before {t}"
                ),
                Some(t) => format!("grace period: {runs}; removed by the first run from {t} on"),
                None => format!(
                    "grace period: {runs}; removed once missing in {needed_runs} runs in a row"
                ),
            }
        }
        SkipReason::Disabled { policy } => format!("turned off by {policy}"),
        SkipReason::MappingError { error } => format!("mapping error: {error}"),
        SkipReason::Refused { action, why } => {
            format!("{action} refused when the saved plan was applied: {why}")
        }
    }
}

fn user_rows(u: &UserPlan, out: &mut Vec<Row>) {
    let source = u
        .locator
        .as_deref()
        .or(u.source_id.as_deref())
        .unwrap_or_default()
        .to_string();
    let base = |action: &str, detail: String| Row {
        kind: "user",
        action: action.to_string(),
        name: u.user_name.clone(),
        source: source.clone(),
        ironclad_id: u.ironclad_id.clone().unwrap_or_default(),
        attribute: String::new(),
        before: String::new(),
        after: String::new(),
        detail,
    };
    let changes = |action: &str, detail: String, changes: &[AttrChange], out: &mut Vec<Row>| {
        if changes.is_empty() {
            out.push(base(action, detail.clone()));
        }
        for c in changes {
            let mut r = base(action, detail.clone());
            r.attribute = c.path.clone();
            r.before = show(&c.before);
            r.after = show(&c.after);
            out.push(r);
        }
    };
    match &u.action {
        UserAction::Create { user } => {
            let mut attrs: Vec<(String, String)> = Vec::new();
            flatten("", user, &mut attrs);
            // A manager created in the same run: apply sets the id once that create lands.
            if let Some(m) = user
                .get(crate::reconcile::engine::MANAGER_HINT)
                .and_then(Value::as_str)
            {
                attrs.push((
                    format!(
                        "{}:manager.value",
                        crate::mapping::target::ENTERPRISE_SCHEMA
                    ),
                    format!("(set when created: the Ironclad id of the user with externalId {m})"),
                ));
            }
            if attrs.is_empty() {
                out.push(base("create", String::new()));
            }
            for (path, value) in attrs {
                let mut r = base("create", String::new());
                r.attribute = path;
                r.after = value;
                out.push(r);
            }
        }
        UserAction::Adopt {
            matched_by,
            changes: c,
        } => changes(
            "adopt",
            format!("existing account matched by {matched_by}"),
            c,
            out,
        ),
        UserAction::Update { changes: c } => changes("update", String::new(), c, out),
        UserAction::Rename {
            from,
            to,
            changes: c,
        } => changes("rename", format!("{from} → {to}"), c, out),
        UserAction::Remove { how, reason } => {
            out.push(base("remove", format!("{} ({reason})", remove_word(*how))))
        }
        UserAction::Noop => out.push(base("noop", String::new())),
        UserAction::Skip { reason } => {
            let mut detail = skip_text(reason);
            // A held removal says what it would do once released.
            if let Some(UserAction::Remove { how, reason }) = u.held_action.as_deref() {
                let _ = write!(detail, "; held: {} ({reason})", remove_word(*how));
            }
            out.push(base("skip", detail))
        }
        UserAction::Conflict { reason } => out.push(base("conflict", reason.clone())),
    }
}

fn remove_word(how: crate::config::RemoveMode) -> &'static str {
    match how {
        crate::config::RemoveMode::Delete => "DELETE",
        crate::config::RemoveMode::Deactivate => "active: false",
        crate::config::RemoveMode::DeleteOrDeactivate => "DELETE or active: false",
        crate::config::RemoveMode::Keep => "kept",
    }
}

/// Attribute paths as SCIM writes them, and as update lines name them: an extension's
/// attribute after its schema URN and a colon (`urn:...:User:department`), a sub-attribute
/// after a dot (`name.givenName`, `urn:...:User:manager.value`).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    flatten_at(prefix, false, v, out)
}

fn flatten_at(prefix: &str, schema_root: bool, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                if k == "schemas" || k.starts_with("__") {
                    continue;
                }
                let p = if prefix.is_empty() {
                    k.clone()
                } else if schema_root {
                    format!("{prefix}:{k}")
                } else {
                    format!("{prefix}.{k}")
                };
                let root = prefix.is_empty() && k.starts_with("urn:");
                flatten_at(&p, root, val, out);
            }
        }
        Value::Null => {}
        other => out.push((prefix.to_string(), show(other))),
    }
}

/// A line without a name: a member the plan has no line for is shown by its id.
static EMPTY_LINE: UserPlan = UserPlan {
    source_id: None,
    locator: None,
    user_name: String::new(),
    ironclad_id: None,
    action: UserAction::Noop,
    seen_version: None,
    seen: None,
    held_action: None,
};

/// A group member as people read it: the userName, with the source DN or id when known,
/// rather than the bare source id (`+`) or Ironclad id (`-`) the plan keeps.
struct MemberNames<'a> {
    by_source: foldhash::HashMap<&'a str, &'a UserPlan>,
    by_ironclad: foldhash::HashMap<&'a str, &'a UserPlan>,
}

impl<'a> MemberNames<'a> {
    /// The people the membership changes of `groups` name; the plan's users are only looked
    /// through when there is any (a converged run of 100,000 people has none).
    fn new(plan: &'a Plan, groups: &[&'a GroupPlan]) -> Self {
        let mut by_source: foldhash::HashMap<&str, &UserPlan> = groups
            .iter()
            .flat_map(|g| g.add.iter().chain(&g.pending))
            .map(|a| (a.as_str(), &EMPTY_LINE))
            .collect();
        let mut by_ironclad: foldhash::HashMap<&str, &UserPlan> = groups
            .iter()
            .flat_map(|g| g.remove.iter())
            .map(|r| (r.as_str(), &EMPTY_LINE))
            .collect();
        if !by_source.is_empty() || !by_ironclad.is_empty() {
            for u in &plan.users {
                if let Some(slot) = u.source_id.as_deref().and_then(|s| by_source.get_mut(s)) {
                    *slot = u;
                }
                if let Some(slot) = u
                    .ironclad_id
                    .as_deref()
                    .and_then(|i| by_ironclad.get_mut(i))
                {
                    *slot = u;
                }
            }
        }
        MemberNames {
            by_source,
            by_ironclad,
        }
    }

    fn name(&self, u: Option<&&UserPlan>, id: &str) -> String {
        match u {
            Some(u) if !u.user_name.is_empty() => {
                let at = u
                    .locator
                    .as_deref()
                    .or(u.source_id.as_deref())
                    .unwrap_or(id);
                format!("{} ({at})", u.user_name)
            }
            _ => id.to_string(),
        }
    }

    fn source(&self, id: &str) -> String {
        self.name(self.by_source.get(id), id)
    }

    fn ironclad(&self, id: &str) -> String {
        self.name(self.by_ironclad.get(id), id)
    }

    /// A pending member and why their account is not created in this run.
    fn pending(&self, id: &str) -> String {
        let line = self.by_source.get(id);
        let why = match line.map(|u| &u.action) {
            Some(UserAction::Skip { reason }) => skip_text(reason),
            Some(UserAction::Conflict { reason }) => format!("conflict: {reason}"),
            _ => "not created in this run".to_string(),
        };
        format!(
            "+ {} (pending, not in Ironclad: {why})",
            self.name(line, id)
        )
    }
}

fn group_rows(g: &GroupPlan, names: &MemberNames<'_>, out: &mut Vec<Row>) {
    let (action, detail) = match &g.action {
        GroupAction::Create => ("group_create", String::new()),
        GroupAction::Rename { from } => ("group_rename", format!("{from} → {}", g.display_name)),
        GroupAction::Members => ("group_members", String::new()),
        GroupAction::Noop => ("group_noop", String::new()),
        GroupAction::Delete => (
            "group_delete",
            "no longer selected by the mapping".to_string(),
        ),
        GroupAction::Skip { reason } => ("group_skip", skip_text(reason)),
        GroupAction::Conflict { reason } => ("group_conflict", reason.clone()),
    };
    let row = |attribute: &str, before: String, after: String| Row {
        kind: "group",
        action: action.to_string(),
        name: g.display_name.clone(),
        source: g.source_id.clone().unwrap_or_default(),
        ironclad_id: g.ironclad_id.clone().unwrap_or_default(),
        attribute: attribute.to_string(),
        before,
        after,
        detail: detail.clone(),
    };
    if let GroupAction::Rename { from } = &g.action {
        // The name change in the attribute columns too, as a user's rename shows it.
        out.push(row("displayName", from.clone(), g.display_name.clone()));
    } else if g.add.is_empty() && g.remove.is_empty() && g.pending.is_empty() {
        out.push(row("", String::new(), String::new()));
    }
    for a in &g.add {
        out.push(row(
            "members",
            String::new(),
            format!("+ {}", names.source(a)),
        ));
    }
    for r in &g.remove {
        out.push(row(
            "members",
            format!("- {}", names.ironclad(r)),
            String::new(),
        ));
    }
    for p in &g.pending {
        out.push(row("members", String::new(), names.pending(p)));
    }
}

/// Every row of a plan, users then groups, each cell [`visible`]. `noop` rows are left out
/// unless `include_noop`.
pub fn rows(plan: &Plan, include_noop: bool) -> Vec<Row> {
    let mut out = raw_rows(plan, include_noop);
    for r in &mut out {
        for cell in r.cells_mut() {
            if let std::borrow::Cow::Owned(v) = visible(cell) {
                *cell = v;
            }
        }
    }
    out
}

fn raw_rows(plan: &Plan, include_noop: bool) -> Vec<Row> {
    let mut out = Vec::new();
    for u in &plan.users {
        if include_noop || !matches!(u.action, UserAction::Noop) {
            user_rows(u, &mut out);
        }
    }
    let shown: Vec<&GroupPlan> = plan
        .groups
        .iter()
        .filter(|g| include_noop || g.action != GroupAction::Noop || !g.pending.is_empty())
        .collect();
    let names = MemberNames::new(plan, &shown);
    for g in shown {
        group_rows(g, &names, &mut out);
    }
    out
}

/// The JSON report document.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    /// Always [`JSON_SCHEMA`].
    pub schema: &'static str,
    /// When the plan was made.
    pub created_at: String,
    /// Whether the source read was complete.
    pub source_complete: bool,
    /// Why the users listing was cut short (the run went on with the people read).
    pub source_incomplete: Option<&'a str>,
    /// Counts per action.
    pub summary: &'a std::collections::BTreeMap<String, usize>,
    /// Safety notes.
    pub notes: &'a [String],
    /// Users (without the `seen` snapshots).
    pub users: Vec<UserPlan>,
    /// Groups.
    pub groups: &'a [GroupPlan],
    /// See [`Plan::unlinked_with_external_id`]; left out when 0.
    #[serde(skip_serializing_if = "crate::reconcile::is_zero")]
    pub unlinked_with_external_id: usize,
}

/// Renders a plan.
pub fn render(plan: &Plan, format: Format, colour: bool) -> Result<String, ReportError> {
    match format {
        Format::Text => Ok(text(plan, colour)),
        Format::Json => json(plan),
        Format::Markdown => Ok(markdown(plan)),
        Format::Csv => csv_text(plan),
        Format::Html => html(plan),
    }
}

/// A report could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the {format} report: {message}")]
pub struct ReportError {
    /// Which format.
    pub format: &'static str,
    /// Why.
    pub message: String,
}

fn json(plan: &Plan) -> Result<String, ReportError> {
    let doc = JsonReport {
        schema: JSON_SCHEMA,
        created_at: plan.created_at.to_rfc3339(),
        source_complete: plan.source_complete,
        source_incomplete: plan.source_incomplete.as_deref(),
        summary: &plan.summary,
        notes: &plan.notes,
        users: plan
            .users
            .iter()
            .map(|u| UserPlan {
                seen: None,
                ..u.clone()
            })
            .collect(),
        groups: &plan.groups,
        unlinked_with_external_id: plan.unlinked_with_external_id,
    };
    serde_json::to_string_pretty(&doc).map_err(|e| ReportError {
        format: "json",
        message: e.to_string(),
    })
}

fn summary_line(plan: &Plan) -> String {
    plan.summary
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn text(plan: &Plan, colour: bool) -> String {
    use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, Color, ContentArrangement, Table};
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan made {}",
        plan.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let _ = writeln!(
        out,
        "Summary: {}",
        if plan.summary.is_empty() {
            "nothing".to_string()
        } else {
            summary_line(plan)
        }
    );
    for n in &plan.notes {
        let _ = writeln!(out, "Note: {}", visible(n));
    }
    let rows = rows(plan, false);
    if rows.is_empty() {
        let _ = writeln!(out, "{}", no_changes(plan));
        return out;
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    if colour {
        // On a terminal, columns are wrapped to its width rather than every line overflowing.
        t.set_content_arrangement(ContentArrangement::Dynamic);
    } else {
        t.force_no_tty();
    }
    t.set_header(vec![
        "action",
        "name",
        "source",
        "attribute",
        "before",
        "after",
        "detail",
    ]);
    for r in rows {
        let c = match r.action.as_str() {
            "create" | "group_create" => Color::Green,
            "remove" | "group_delete" => Color::Red,
            "conflict" | "group_conflict" => Color::Magenta,
            "skip" | "group_skip" => Color::DarkGrey,
            _ => Color::Yellow,
        };
        let action = if colour {
            Cell::new(&r.action).fg(c)
        } else {
            Cell::new(&r.action)
        };
        t.add_row(vec![
            action,
            Cell::new(&r.name),
            Cell::new(&r.source),
            Cell::new(&r.attribute),
            Cell::new(&r.before),
            Cell::new(&r.after),
            Cell::new(&r.detail),
        ]);
    }
    let _ = writeln!(out, "{t}");
    out
}

/// A Markdown table cell: visible (see [`visible`]), with the characters Markdown viewers act
/// on as entities or escapes, so raw HTML, a link or an image in a directory value shows as
/// the text it is.
fn md_escape(s: &str) -> String {
    visible(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace('[', "\\[")
        .replace(']', "\\]")
}

fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# ironbridge plan\n\nMade {}.\n",
        plan.created_at.to_rfc3339()
    );
    let _ = writeln!(out, "## Summary\n\n| action | count |\n|---|---|");
    for (k, v) in &plan.summary {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &plan.notes {
            let _ = writeln!(out, "- {}", md_escape(n));
        }
    }
    let _ = writeln!(out, "\n## Changes\n");
    let rows = rows(plan, false);
    if rows.is_empty() {
        let _ = writeln!(out, "{}", no_changes(plan));
        return out;
    }
    let _ = writeln!(out, "| action | name | source | attribute | before | after | detail |\n|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            md_escape(&r.action),
            md_escape(&r.name),
            md_escape(&r.source),
            md_escape(&r.attribute),
            md_escape(&r.before),
            md_escape(&r.after),
            md_escape(&r.detail)
        );
    }
    out
}

fn csv_text(plan: &Plan) -> Result<String, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError {
        format: "csv",
        message: e.to_string(),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    for mut r in rows(plan, true) {
        for cell in r.cells_mut() {
            defuse_formula(cell);
        }
        w.serialize(&r).map_err(|e| err(&e))?;
    }
    let bytes = w.into_inner().map_err(|e| err(&e))?;
    String::from_utf8(bytes).map_err(|e| err(&e))
}

/// A cell a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`, a tab or a
/// carriage return: a directory value such as `=HYPERLINK(...)`) gets a `'` in front, which
/// spreadsheets show as text. The CSV report is the one format opened in spreadsheets; the
/// JSON report keeps every value as it is.
fn defuse_formula(cell: &mut String) {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        cell.insert(0, '\'');
    }
}

/// What a report says when it has no line to show.
fn no_changes(plan: &Plan) -> &'static str {
    if !plan.source_complete {
        "No changes planned: the source could not be read or mapped (see the notes above)."
    } else {
        "No changes."
    }
}

const HTML_TEMPLATE: &str = include_str!("report.html.j2");

fn html(plan: &Plan) -> Result<String, ReportError> {
    let err = |e: minijinja::Error| ReportError {
        format: "html",
        message: e.to_string(),
    };
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("report.html", HTML_TEMPLATE)
        .map_err(err)?;
    let tmpl = env.get_template("report.html").map_err(err)?;
    let rows = rows(plan, true);
    tmpl.render(minijinja::context! {
        created_at => plan.created_at.to_rfc3339(),
        summary => minijinja::Value::from(minijinja::value::Serde(&plan.summary)),
        notes => minijinja::Value::from(minijinja::value::Serde(
            plan.notes.iter().map(|n| visible(n)).collect::<Vec<_>>()
        )),
        rows => minijinja::Value::from(minijinja::value::Serde(&rows)),
        source_complete => plan.source_complete,
        source_incomplete => plan.source_incomplete.is_some(),
    })
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::UserPlan;
    use serde_json::json;

    fn plan() -> Plan {
        let users = vec![
            UserPlan {
                source_id: Some("s1".into()),
                locator: Some("uid=ann,dc=example".into()),
                user_name: "ann@example.com".into(),
                ironclad_id: Some("i1".into()),
                action: UserAction::Update {
                    changes: vec![AttrChange {
                        path: "title".into(),
                        before: json!("A|B"),
                        after: json!("<b>C</b>"),
                    }],
                },
                seen_version: None,
                seen: Some(json!({"secretish": "not in reports"})),
                held_action: None,
            },
            UserPlan {
                source_id: Some("s2".into()),
                locator: Some("uid=bob,dc=example".into()),
                user_name: "bob@example.com".into(),
                ironclad_id: None,
                action: UserAction::Create {
                    user: json!({"userName": "bob@example.com", "name": {"givenName": "Bob"}}),
                },
                seen_version: None,
                seen: None,
                held_action: None,
            },
        ];
        Plan {
            created_at: chrono::Utc::now(),
            source_complete: true,
            source_incomplete: None,
            users,
            groups: vec![],
            summary: [("update".to_string(), 1), ("create".to_string(), 1)].into(),
            notes: vec![],
            converged: Vec::new(),
            settled_creates: Vec::new(),
            unlinked_with_external_id: 0,
        }
    }

    #[test]
    fn a_skip_out_of_scope_says_why_once() {
        let rule = |r: &str| SkipReason::OutOfScope { rule: r.into() };
        assert_eq!(
            skip_text(&rule("out of scope (no rule matched: default exclude)")),
            "out of scope (no rule matched: default exclude)"
        );
        assert_eq!(
            skip_text(&rule("disabled in the source")),
            "disabled in the source; no Ironclad user is linked to this person, nothing to remove"
        );
    }

    #[test]
    fn json_is_versioned_and_omits_seen() {
        let j = render(&plan(), Format::Json, false).unwrap();
        let v: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["schema"], JSON_SCHEMA);
        assert!(!j.contains("not in reports"));
        assert_eq!(v["users"][0]["changes"][0]["after"], "<b>C</b>");
    }

    #[test]
    fn membership_changes_name_the_people() {
        let mut p = plan();
        p.groups.push(GroupPlan {
            source_id: Some("g1".into()),
            display_name: "Legal".into(),
            ironclad_id: Some("G1".into()),
            action: GroupAction::Members,
            add: vec!["s2".into()],
            remove: vec!["i1".into(), "i-unknown".into()],
            pending: vec![],
            seen_version: None,
        });
        for f in [Format::Text, Format::Markdown, Format::Csv, Format::Html] {
            let out = render(&p, f, false).unwrap();
            assert!(
                out.contains("+ bob@example.com (uid=bob,dc=example)"),
                "{f:?}:\n{out}"
            );
            assert!(
                out.contains("- ann@example.com (uid=ann,dc=example)"),
                "{f:?}:\n{out}"
            );
            assert!(out.contains("- i-unknown"), "{f:?}:\n{out}");
        }
    }

    #[test]
    fn a_group_rename_shows_the_names_in_the_attribute_columns() {
        let mut p = plan();
        p.groups.push(GroupPlan {
            source_id: Some("g1".into()),
            display_name: "Legal Team".into(),
            ironclad_id: Some("G1".into()),
            action: GroupAction::Rename {
                from: "Legal".into(),
            },
            add: vec!["s2".into()],
            remove: vec![],
            pending: vec![],
            seen_version: None,
        });
        let r: Vec<Row> = rows(&p, false)
            .into_iter()
            .filter(|r| r.kind == "group")
            .collect();
        assert_eq!(r.len(), 2, "the name change, then the member added");
        assert_eq!(
            (
                r[0].attribute.as_str(),
                r[0].before.as_str(),
                r[0].after.as_str()
            ),
            ("displayName", "Legal", "Legal Team")
        );
        assert_eq!(r[1].attribute, "members");
        assert!(r.iter().all(|r| r.action == "group_rename"));
    }

    #[test]
    fn every_format_names_user_source_and_before_after() {
        for f in [Format::Text, Format::Markdown, Format::Csv, Format::Html] {
            let out = render(&plan(), f, false).unwrap();
            assert!(out.contains("ann@example.com"), "{f:?}");
            assert!(out.contains("uid=ann,dc=example"), "{f:?}");
            assert!(out.contains("title"), "{f:?}");
            assert!(!out.contains("not in reports"), "{f:?}");
        }
    }

    #[test]
    fn html_escapes_values_and_has_no_external_assets() {
        let out = render(&plan(), Format::Html, false).unwrap();
        assert!(
            out.contains("&lt;b&gt;C&lt;&#x2f;b&gt;") || out.contains("&lt;b&gt;C&lt;/b&gt;"),
            "{out}"
        );
        assert!(!out.contains("src=\"http") && !out.contains("href=\"http"));
    }

    #[test]
    fn values_that_would_act_on_a_terminal_or_viewer_are_shown_escaped() {
        assert!(matches!(
            visible("Ann O'Brien \\ Ünal"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            visible("SDR\u{1b}[6A\u{1b}[J\r\n\t\u{7f}\u{9b}\u{202e}x\u{2066}\u{200b}\u{feff}"),
            "SDR\\u{1b}[6A\\u{1b}[J\\r\\n\\t\\u{7f}\\u{9b}\\u{202e}x\\u{2066}\\u{200b}\\u{feff}"
        );
        let mut p = plan();
        if let UserAction::Update { changes } = &mut p.users[0].action {
            changes[0].after = json!("<script>x</script>|\u{1b}[2J\rnext");
        }
        p.notes.push("note \u{1b}[1A".into());
        for f in [Format::Text, Format::Markdown, Format::Csv, Format::Html] {
            let out = render(&p, f, false).unwrap();
            assert!(
                !out.contains('\u{1b}') && !out.contains('\r'),
                "{f:?}:\n{out}"
            );
        }
        if let UserAction::Update { changes } = &mut p.users[0].action {
            changes[0].before = json!("[Approve](https://x.test) ![t](https://x.test/t.png)");
        }
        let md = render(&p, Format::Markdown, false).unwrap();
        assert!(
            md.contains("\\[Approve\\](https://x.test) !\\[t\\](https://x.test/t.png)"),
            "{md}"
        );
        assert!(
            md.contains("&lt;script&gt;x&lt;/script&gt;\\|\\u{1b}\\[2J\\rnext"),
            "{md}"
        );
    }

    #[test]
    fn markdown_escapes_pipes() {
        assert!(render(&plan(), Format::Markdown, false)
            .unwrap()
            .contains("A\\|B"));
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_change() {
        let out = render(&plan(), Format::Csv, false).unwrap();
        let mut lines = out.lines();
        assert!(lines.next().unwrap().starts_with("kind,action,name,source"));
        assert!(out.contains("create") && out.contains("name.givenName"));
    }

    #[test]
    fn csv_cells_a_spreadsheet_would_run_are_text() {
        let mut p = plan();
        p.users[0].action = UserAction::Update {
            changes: vec![AttrChange {
                path: "title".into(),
                before: json!("-1"),
                after: json!("=HYPERLINK(\"http://x\",\"y\")"),
            }],
        };
        p.users[1].user_name = "@bob".into();
        let out = render(&p, Format::Csv, false).unwrap();
        assert!(out.contains(r#"'=HYPERLINK(""http://x"",""y"")"#), "{out}");
        assert!(out.contains(",'-1,") && out.contains(",'@bob,"), "{out}");
        // Other formats keep the values as they are.
        let j = render(&p, Format::Json, false).unwrap();
        assert!(j.contains(r#""=HYPERLINK(\"http://x\",\"y\")""#), "{j}");
    }

    #[test]
    fn extension_attributes_are_named_alike_in_creates_and_updates() {
        let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let mut p = plan();
        p.users[1].action = UserAction::Create {
            user: json!({"userName": "bob@example.com",
                         ent: {"department": "Legal", "manager": {"value": "m1"}}}),
        };
        let r = rows(&p, true);
        let paths: Vec<&str> = r.iter().map(|r| r.attribute.as_str()).collect();
        assert!(
            paths.contains(&format!("{ent}:department").as_str()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&format!("{ent}:manager.value").as_str()),
            "{paths:?}"
        );
        // A manager created in the same run is named by the externalId apply resolves.
        p.users[1].action = UserAction::Create {
            user: json!({"userName": "bob@example.com", "__manager_external_id": "ext-9"}),
        };
        let r = rows(&p, true);
        let m = r
            .iter()
            .find(|r| r.attribute == format!("{ent}:manager.value"))
            .unwrap();
        assert!(m.after.contains("externalId ext-9"), "{m:?}");
    }

    #[test]
    fn a_held_removal_says_what_it_would_do() {
        let mut p = plan();
        p.users[0].action = UserAction::Skip {
            reason: SkipReason::Held {
                rule: "2 removals exceed the threshold".into(),
            },
        };
        p.users[0].held_action = Some(Box::new(UserAction::Remove {
            how: crate::config::RemoveMode::Deactivate,
            reason: "disabled in the source".into(),
        }));
        let out = render(&p, Format::Text, false).unwrap();
        assert!(
            out.contains("held: active: false (disabled in the source)"),
            "{out}"
        );
    }

    #[test]
    fn an_empty_report_of_a_failed_read_does_not_say_no_changes() {
        let mut p = plan();
        p.users.clear();
        p.source_complete = false;
        for f in [Format::Text, Format::Markdown] {
            let out = render(&p, f, false).unwrap();
            assert!(
                out.contains("the source could not be read or mapped"),
                "{out}"
            );
            assert!(!out.contains("No changes."), "{out}");
        }
    }
}
