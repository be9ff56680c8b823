//! The `ironbridge mapping` subcommands as library functions: [`validate`] (check files) and
//! [`test`] (show what one entry becomes and which rule decided). Each writes to the writer it
//! is given and returns the process exit code (0 success, 1 error). Also the JSON input
//! formats for entries and snapshots ([`read_json_input`]) used by `mapping test --entry
//! FILE.json` and by the golden tests.
//!
//! What does not live here: argument parsing (`src/cli.rs`) and reading LDIF or a live source.

use super::{Evaluation, Mapping, MappingError};
use crate::model::{Attributes, Entry, Group, Snapshot, Value};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `ironbridge mapping validate FILE...`: checks every file (not stopping at the first bad
/// one), prints `FILE: ok (...)` or every located problem, and returns 0 when all are valid,
/// 1 otherwise.
pub fn validate(files: &[PathBuf], out: &mut dyn Write) -> i32 {
    let mut code = 0;
    for f in files {
        match Mapping::load(f) {
            Ok(m) => {
                let managed: Vec<&str> = m
                    .managed_attributes()
                    .iter()
                    .map(|a| a.target.name())
                    .collect();
                let _ = writeln!(
                    out,
                    "{}: ok: {} managed attributes ({}); groups {}",
                    f.display(),
                    managed.len(),
                    managed.join(", "),
                    if m.manages_groups() {
                        "managed"
                    } else {
                        "not managed"
                    }
                );
            }
            Err(e) => {
                code = 1;
                let _ = writeln!(out, "{e}");
            }
        }
    }
    code
}

/// Where `mapping test` takes its entry from.
#[derive(Debug, Clone)]
pub enum EntryInput {
    /// A JSON file: an entry, or a document `{ "snapshot": ..., "entry": "<id>", "now": ... }`
    /// (see [`read_json_input`]).
    Json(PathBuf),
    /// An entry already read (from LDIF or a live source).
    Entry(Entry),
}

/// `ironbridge mapping test`: evaluates one entry and prints which rule put it in or out of
/// scope, whether it is disabled, and the Ironclad user JSON it becomes with each attribute's
/// apply policy. `snapshot` supplies group membership and lookups; without one (and without
/// one in the JSON input), group membership is taken from the entry's own `memberOf` values.
/// Returns 0 when the entry could be evaluated (in scope or not), 1 on any error.
pub fn test(
    mapping_file: &Path,
    entry: EntryInput,
    snapshot: Option<&Snapshot>,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> i32 {
    let mapping = match Mapping::load(mapping_file) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(out, "{e}");
            return 1;
        }
    };
    let (entry, own_snapshot, now) = match entry {
        EntryInput::Entry(e) => (e, None, now),
        EntryInput::Json(path) => match read_json_input(&path) {
            Ok(input) => (input.entry, input.snapshot, input.now.unwrap_or(now)),
            Err(m) => {
                let _ = writeln!(out, "{}: {m}", path.display());
                return 1;
            }
        },
    };
    let synthetic;
    let snapshot = match (snapshot, own_snapshot.as_ref()) {
        (Some(s), _) => s,
        (None, Some(s)) => s,
        (None, None) => {
            let _ = writeln!(
                out,
                "note: no snapshot given: group membership comes from the entry's memberOf values (nested groups are not followed)"
            );
            synthetic = snapshot_from_member_of(&entry, now);
            &synthetic
        }
    };
    match mapping
        .prepare(snapshot, now)
        .and_then(|p| p.evaluate(&entry))
    {
        Ok(ev) => {
            print_evaluation(&ev, out);
            0
        }
        Err(e) => {
            let _ = writeln!(out, "{e}");
            if matches!(e, MappingError::MissingGroup(_)) {
                let _ = writeln!(
                    out,
                    "hint: give a snapshot that contains the group (a JSON input with \"snapshot\", or --config to read the source)"
                );
            }
            1
        }
    }
}

fn print_evaluation(ev: &Evaluation, out: &mut dyn Write) {
    let _ = writeln!(out, "entry:    {} (id {})", ev.locator, ev.source_id);
    let rule = match ev.decided_by.rule {
        Some(i) => format!("scope.rules[{i}] at line {}", ev.decided_by.line),
        None => format!("scope.default at line {}", ev.decided_by.line),
    };
    let _ = writeln!(
        out,
        "scope:    {} by {rule}: {}",
        if ev.in_scope { "in" } else { "out" },
        ev.decided_by.text
    );
    let _ = writeln!(out, "disabled: {}", if ev.disabled { "yes" } else { "no" });
    let verdict = match (ev.in_scope, ev.disabled) {
        (true, false) => "wanted in Ironclad",
        (true, true) => "not wanted in Ironclad: disabled at the source",
        (false, _) => "not wanted in Ironclad: out of scope",
    };
    let _ = writeln!(out, "result:   {verdict}");
    match &ev.user {
        Some(u) => {
            let _ = writeln!(out, "attributes (apply policy):");
            for a in &u.attributes {
                let v = a
                    .value
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "(no value)".into());
                let _ = writeln!(
                    out,
                    "  {:<24} {:<10} {v}{}",
                    a.target.name(),
                    serde_json::to_value(a.apply)
                        .ok()
                        .and_then(|j| j.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    if a.from_default { " (default)" } else { "" }
                );
            }
            let _ = writeln!(out, "Ironclad user:");
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&u.scim()).unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Ironclad user: none ({})",
                ev.user_error.as_deref().unwrap_or("not computed")
            );
        }
    }
}

/// A snapshot holding the entry and one group per `memberOf` value (the group's cn is the
/// DN's first RDN value), for testing an entry without its directory.
fn snapshot_from_member_of(entry: &Entry, now: DateTime<Utc>) -> Snapshot {
    let groups = entry
        .attrs
        .get("memberOf")
        .iter()
        .map(|dn| {
            let dn = dn.as_text().into_owned();
            let mut attrs = Attributes::new();
            if let Some(cn) = super::expr::dn_rdns(&dn)
                .ok()
                .and_then(|r| r.into_iter().next())
                .and_then(|r| r.avas.into_iter().next())
            {
                attrs.push("cn", cn.value);
            }
            Group {
                entry: Entry {
                    id: dn.clone(),
                    locator: dn,
                    attrs,
                },
                members: vec![entry.id.clone()],
            }
        })
        .collect();
    Snapshot {
        source: "the entry's memberOf values".into(),
        read_at: now,
        users: vec![entry.clone()],
        groups,
    }
}

// ---------------------------------------------------------------------------------------------
// JSON inputs.
// ---------------------------------------------------------------------------------------------

/// What a JSON input file holds.
#[derive(Debug, Clone)]
pub struct JsonInput {
    /// The entry to evaluate.
    pub entry: Entry,
    /// The snapshot it belongs to, when the file has one.
    pub snapshot: Option<Snapshot>,
    /// The evaluation time, when the file fixes one.
    pub now: Option<DateTime<Utc>>,
}

/// One attribute value or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The readable form of an entry: `{ "id", "dn", "attributes": { "mail": "a@b", "cn": ["x"] } }`.
/// A value written `"base64:..."` is binary.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadableEntry {
    id: String,
    dn: String,
    #[serde(default)]
    attributes: BTreeMap<String, OneOrMany>,
}

impl ReadableEntry {
    fn into_entry(self) -> Result<Entry, String> {
        let mut attrs = Attributes::new();
        for (name, v) in self.attributes {
            let values = match v {
                OneOrMany::One(s) => vec![s],
                OneOrMany::Many(v) => v,
            };
            let mut out = Vec::with_capacity(values.len());
            for s in values {
                out.push(match s.strip_prefix("base64:") {
                    Some(b) => {
                        use base64::Engine as _;
                        Value::binary(
                            base64::engine::general_purpose::STANDARD
                                .decode(b)
                                .map_err(|e| format!("{}: attribute {name}: {e}", self.id))?,
                        )
                    }
                    None => Value::text(s),
                });
            }
            attrs.set(&name, out);
        }
        Ok(Entry {
            id: self.id,
            locator: self.dn,
            attrs,
        })
    }
}

/// An entry in either form: readable, or as the model serializes it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AnyEntry {
    Readable(ReadableEntry),
    Model(Entry),
}

impl AnyEntry {
    fn into_entry(self) -> Result<Entry, String> {
        match self {
            AnyEntry::Readable(r) => r.into_entry(),
            // The model reads binary values back from their "base64:..." form itself.
            AnyEntry::Model(e) => Ok(e),
        }
    }
}

/// A group in either form: readable `{ "id", "dn", "attributes", "members" }`, or as the model
/// serializes it (`{ "entry": ..., "members": ... }`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AnyGroup {
    Readable {
        id: String,
        dn: String,
        #[serde(default)]
        attributes: BTreeMap<String, OneOrMany>,
        #[serde(default)]
        members: Vec<String>,
    },
    Model {
        entry: AnyEntry,
        #[serde(default)]
        members: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnySnapshot {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    read_at: Option<DateTime<Utc>>,
    #[serde(default)]
    users: Vec<AnyEntry>,
    #[serde(default)]
    groups: Vec<AnyGroup>,
}

impl AnySnapshot {
    fn into_snapshot(self, now: Option<DateTime<Utc>>) -> Result<Snapshot, String> {
        let mut groups = Vec::with_capacity(self.groups.len());
        for g in self.groups {
            groups.push(match g {
                AnyGroup::Readable {
                    id,
                    dn,
                    attributes,
                    members,
                } => Group {
                    entry: ReadableEntry { id, dn, attributes }.into_entry()?,
                    members,
                },
                AnyGroup::Model { entry, members } => Group {
                    entry: entry.into_entry()?,
                    members,
                },
            });
        }
        Ok(Snapshot {
            source: self.source.unwrap_or_else(|| "JSON input".into()),
            read_at: self.read_at.or(now).unwrap_or_else(Utc::now),
            users: self
                .users
                .into_iter()
                .map(AnyEntry::into_entry)
                .collect::<Result<_, _>>()?,
            groups,
        })
    }
}

/// A document naming one entry of a snapshot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotDoc {
    snapshot: AnySnapshot,
    /// The id of the user to evaluate.
    entry: String,
    #[serde(default)]
    now: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AnyInput {
    Doc(SnapshotDoc),
    Entry(AnyEntry),
}

/// Parses a JSON input: an entry (readable `{ "id", "dn", "attributes": {name: value or
/// [values]} }` or the model's serde form), or `{ "snapshot": {...}, "entry": "<user id>",
/// "now": "<RFC 3339>" }` where the snapshot's users and groups are in either form (groups
/// also carry `members`, a list of ids).
pub fn parse_json_input(text: &str) -> Result<JsonInput, String> {
    let input: AnyInput = serde_json::from_str(text)
        .map_err(|e| format!("not an entry or a {{snapshot, entry}} document: {e}"))?;
    match input {
        AnyInput::Entry(e) => Ok(JsonInput {
            entry: e.into_entry()?,
            snapshot: None,
            now: None,
        }),
        AnyInput::Doc(d) => {
            let snapshot = d.snapshot.into_snapshot(d.now)?;
            let entry = snapshot
                .users
                .iter()
                .find(|u| u.id == d.entry)
                .cloned()
                .ok_or_else(|| format!("the snapshot has no user with id `{}`", d.entry))?;
            Ok(JsonInput {
                entry,
                snapshot: Some(snapshot),
                now: d.now,
            })
        }
    }
}

/// Reads and parses a JSON input file (see [`parse_json_input`]).
pub fn read_json_input(path: &Path) -> Result<JsonInput, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse_json_input(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const M: &str = "version = 1\n[scope]\ndefault = \"exclude\"\ndisabled = \"attr.userAccountControl | has_bit(2)\"\n[[scope.rules]]\naction = \"include\"\nmember_of = [\"Ironclad Users\"]\n[attributes]\nuserName = \"attr.mail | lower\"\ntitle = { expr = \"attr.title\", apply = \"on_create\" }\n";

    #[test]
    fn validate_checks_every_file_and_reports_each_problem() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(&dir, "good.toml", M);
        let bad = write(&dir, "bad.toml", &M.replace("title =", "titel ="));
        let worse = write(&dir, "worse.toml", "version = 1\n[scope\n");
        let mut out = Vec::new();
        let code = validate(&[bad.clone(), good.clone(), worse.clone()], &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(code, 1);
        assert!(
            out.contains(&format!(
                "{}:10:1: attributes.titel: unknown target attribute",
                bad.display()
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "{}: ok: 3 managed attributes (externalId, userName, title)",
                good.display()
            )),
            "{out}"
        );
        assert!(out.contains(&format!("{}:2:", worse.display())), "{out}");
        let mut out = Vec::new();
        assert_eq!(validate(&[good], &mut out), 0);
    }

    #[test]
    fn test_prints_rule_and_user_from_a_readable_entry() {
        let dir = tempfile::tempdir().unwrap();
        let m = write(&dir, "m.toml", M);
        let e = write(
            &dir,
            "e.json",
            r#"{"id": "u1", "dn": "CN=Jo,DC=x", "attributes": {"mail": "Jo@X.com", "title": "Counsel", "userAccountControl": "512", "memberOf": ["CN=Ironclad Users,OU=Groups,DC=x"]}}"#,
        );
        let mut out = Vec::new();
        let code = test(&m, EntryInput::Json(e), None, now(), &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(
                "scope:    in by scope.rules[0] at line 5: include member of Ironclad Users"
            ),
            "{out}"
        );
        assert!(out.contains("result:   wanted in Ironclad"), "{out}");
        assert!(out.contains("\"userName\": \"jo@x.com\""), "{out}");
        assert!(
            out.contains("title                    on_create  \"Counsel\""),
            "{out}"
        );
    }

    #[test]
    fn test_without_membership_reports_the_missing_group() {
        let dir = tempfile::tempdir().unwrap();
        let m = write(&dir, "m.toml", M);
        let entry = ReadableEntry {
            id: "u1".into(),
            dn: "CN=Jo,DC=x".into(),
            attributes: BTreeMap::new(),
        }
        .into_entry()
        .unwrap();
        let mut out = Vec::new();
        let code = test(&m, EntryInput::Entry(entry), None, now(), &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(code, 1);
        assert!(out.contains(":7:14: scope.rules[0].member_of: group `Ironclad Users` is not in the source snapshot"), "{out}");
    }

    #[test]
    fn json_inputs_in_both_forms() {
        let model = Entry {
            id: "u1".into(),
            locator: "cn=u1".into(),
            attrs: {
                let mut a = Attributes::new();
                a.push("mail", "a@b.c");
                a.set("objectGUID", vec![Value::binary(vec![1, 2])]);
                a
            },
        };
        let text = serde_json::to_string(&model).unwrap();
        assert_eq!(parse_json_input(&text).unwrap().entry, model);
        let readable = r#"{"id": "u1", "dn": "cn=u1", "attributes": {"mail": "a@b.c", "objectGUID": "base64:AQI="}}"#;
        assert_eq!(parse_json_input(readable).unwrap().entry, model);
        let doc = r#"{"now": "2024-05-01T12:00:00Z", "entry": "u1", "snapshot": {"users": [{"id": "u1", "dn": "cn=u1", "attributes": {"mail": "a@b.c"}}], "groups": [{"id": "g", "dn": "cn=g", "members": ["u1"]}]}}"#;
        let input = parse_json_input(doc).unwrap();
        assert_eq!(input.snapshot.unwrap().groups[0].members, vec!["u1"]);
        assert_eq!(input.now, Some(now()));
        assert!(parse_json_input(r#"{"entry": "nobody", "snapshot": {}}"#)
            .unwrap_err()
            .contains("no user with id `nobody`"));
        assert!(parse_json_input("[1]").is_err());
    }
}
