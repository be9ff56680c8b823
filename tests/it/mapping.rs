//! Mapping files through the library API: the four shipped mappings load and validate, and a
//! malformed file of each kind (TOML syntax error, unknown key, bad expression, unknown target
//! attribute, duplicate target) is refused with an error naming file:line:column and key.
//! `mapping validate` and `mapping test` are exercised through their library functions.

use ironbridge::mapping::cli::{self, EntryInput};
use ironbridge::mapping::{Mapping, MappingError, Target};
use std::path::{Path, PathBuf};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("mappings")
        .join(format!("{name}.toml"))
}

const SHIPPED: [&str; 4] = [
    "active-directory",
    "openldap-inetorgperson",
    "freeipa",
    "scim-source",
];

#[test]
fn the_four_shipped_mappings_validate() {
    for name in SHIPPED {
        let m = Mapping::load(&shipped(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let managed: Vec<Target> = m.managed_attributes().iter().map(|a| a.target).collect();
        assert_eq!(managed[0], Target::ExternalId, "{name}");
        assert!(managed.contains(&Target::UserName), "{name}");
        assert!(managed.contains(&Target::DepartmentHead), "{name}");
        assert!(m.manages_groups(), "{name}");
        assert!(
            m.removal().is_protected("BreakGlass-Admin@example.com"),
            "{name}"
        );
    }
    let files: Vec<PathBuf> = SHIPPED.iter().map(|n| shipped(n)).collect();
    let mut out = Vec::new();
    assert_eq!(
        cli::validate(&files, &mut out),
        0,
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(String::from_utf8(out).unwrap().matches(": ok: ").count(), 4);
}

/// Writes `text` as a mapping file and returns the single problem loading reports.
fn one_problem(text: &str) -> (String, ironbridge::config::ConfigError) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    match Mapping::load(&path) {
        Err(MappingError::Invalid(mut v)) => {
            assert_eq!(v.len(), 1, "{v:?}");
            (path.display().to_string(), v.remove(0))
        }
        Err(e) => panic!("wrong error kind: {e}"),
        Ok(_) => panic!("loaded:\n{text}"),
    }
}

const HEAD: &str =
    "version = 1\n[scope]\ndefault = \"include\"\n[attributes]\nuserName = \"attr.mail | lower\"\n";

#[test]
fn syntax_error_is_located() {
    let (file, e) = one_problem(&format!("{HEAD}title = \"attr.title\n"));
    assert_eq!(e.file, file);
    assert_eq!((e.line, e.column), (6, 20), "{e}");
    assert!(e.to_string().starts_with(&format!("{file}:6:20: ")), "{e}");
}

#[test]
fn unknown_key_is_located() {
    let (file, e) = one_problem(
        "version = 1\n[scope]\ndefault = \"include\"\ndisabeld = \"false\"\n[attributes]\nuserName = \"attr.mail\"\n",
    );
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (4, 1, "scope.disabeld"),
        "{e}"
    );
    assert!(e.message.contains("unknown field `disabeld`"), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{file}:4:1: scope.disabeld: ")),
        "{e}"
    );
}

#[test]
fn bad_expression_points_at_the_fault_inside_the_string() {
    // `lowr` starts at column 32 of line 6.
    let (file, e) = one_problem(&format!(
        "{HEAD}title = {{ expr = \"attr.title | lowr\", apply = \"always\" }}\n"
    ));
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (6, 32, "attributes.title.expr"),
        "{e}"
    );
    assert!(e.message.contains("unknown filter `lowr`"), "{e}");
    assert!(e.to_string().starts_with(&format!("{file}:6:32: ")), "{e}");
    // A syntax error inside the expression: the dangling `|` at column 21.
    let (_, e) = one_problem(&format!("{HEAD}title = \"attr.title |\"\n"));
    assert_eq!((e.line, e.column), (6, 21), "{e}");
    assert!(e.message.contains("invalid expression"), "{e}");
    // An unknown variable in a scope rule.
    let (_, e) = one_problem(
        "version = 1\n[scope]\ndefault = \"include\"\n[[scope.rules]]\naction = \"exclude\"\nwhen = \"atr.x == 1\"\n[attributes]\nuserName = \"attr.mail\"\n",
    );
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (6, 9, "scope.rules[0].when"),
        "{e}"
    );
}

#[test]
fn unknown_target_attribute_is_located() {
    let (file, e) = one_problem(&format!("{HEAD}nickName = \"attr.nick\"\n"));
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (6, 1, "attributes.nickName"),
        "{e}"
    );
    assert!(
        e.message.contains("unknown target attribute `nickName`"),
        "{e}"
    );
    assert!(e.to_string().starts_with(&format!("{file}:6:1: ")), "{e}");
}

#[test]
fn duplicate_target_names_both_positions() {
    // The same target under two spellings.
    let (file, e) = one_problem(&format!(
        "{HEAD}department = \"attr.department\"\n\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department\" = \"attr.ou\"\n"
    ));
    assert_eq!((e.line, e.column), (7, 1), "{e}");
    assert!(e.message.contains("duplicate target `department`"), "{e}");
    assert!(e.message.contains("line 6, column 1"), "{e}");
    assert!(e.to_string().starts_with(&format!("{file}:7:1: ")), "{e}");
    // The same key twice (TOML itself refuses it): both lines named.
    let (_, e) = one_problem(&format!("{HEAD}title = \"attr.a\"\ntitle = \"attr.b\"\n"));
    assert_eq!(e.line, 7, "{e}");
    assert!(e.message.contains("line 6"), "{e}");
}

#[test]
fn all_problems_of_a_file_are_reported_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.toml");
    std::fs::write(
        &path,
        format!("{HEAD}nickName = \"x\"\ntitle = \"attr.t | nope\"\n"),
    )
    .unwrap();
    let err = Mapping::load(&path).unwrap_err();
    let lines: Vec<usize> = err.problems().iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![6, 7], "{err}");
}

#[test]
fn mapping_test_shows_the_deciding_rule_and_the_user() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("mappings/tests/active-directory/nested-member.input.json");
    let mut out = Vec::new();
    let code = cli::test(
        &shipped("active-directory"),
        EntryInput::Json(input),
        None,
        chrono::Utc::now(),
        &mut out,
    );
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("scope:    in by scope.rules[2] at line 35: member of Ironclad Users"),
        "{out}"
    );
    assert!(
        out.contains("\"departmentHead\": \"alex.smith@example.com\""),
        "{out}"
    );

    let input = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("mappings/tests/active-directory/service-account.input.json");
    let mut out = Vec::new();
    assert_eq!(
        cli::test(
            &shipped("active-directory"),
            EntryInput::Json(input),
            None,
            chrono::Utc::now(),
            &mut out
        ),
        0
    );
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("scope:    out by scope.rules[1] at line 27: service account"),
        "{out}"
    );
    assert!(
        out.contains("not wanted in Ironclad: out of scope"),
        "{out}"
    );
}
