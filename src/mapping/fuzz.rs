//! Property tests: the mapping loader, the expression checker/compiler and the text helpers
//! never panic, whatever they are given, and loaded mappings never panic when evaluated.
//! Bounded (a few hundred cases each) so they run in CI in seconds; raise the case count with
//! `PROPTEST_CASES=100000 cargo test --lib mapping::fuzz` for a longer fuzzing session.
//!
//! What does not live here: tests of particular behaviour (beside the code they test).

use super::expr::{self, check_expression, ENTRY_VARS_WITH_DISABLED, FUEL_PER_EXPRESSION};
use super::load::string_offset;
use super::Mapping;
use crate::model::{Attributes, Entry, Group, Snapshot};
use proptest::prelude::*;
use std::path::Path;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Words and symbols expressions are made of, so random expressions reach deep into the
/// parser and the filters rather than failing on the first character.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "attr",
            "attrs",
            "id",
            "dn",
            "now",
            "groups",
            "disabled",
            "mail",
            "manager",
            "lower",
            "upper",
            "trim",
            "replace",
            "regex_match",
            "regex_capture",
            "regex_replace",
            "split",
            "join",
            "first",
            "last",
            "coalesce",
            "default",
            "title",
            "normalize_diacritics",
            "email_local",
            "email_domain",
            "has_bit",
            "bitand",
            "rdn_value",
            "parent_dn",
            "dn_values",
            "filetime",
            "generalized_time",
            "iso_date",
            "guid",
            "b64",
            "lookup",
            "member_of",
            "as_bool",
            "matching",
            "length",
            "int",
            "range",
            "map",
            "select",
            "list",
            "true",
            "false",
            "none",
            "and",
            "or",
            "not",
            "if",
            "else",
            "is",
            "in",
            "defined",
            "|",
            ".",
            ",",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ":",
            "~",
            "+",
            "-",
            "*",
            "/",
            "//",
            "%",
            "**",
            "==",
            "!=",
            "<",
            ">",
            "<=",
            ">=",
            "=",
            "0",
            "2",
            "-1",
            "99999999999999999999",
            "1.5",
            "'x'",
            "\"a@b.c\"",
            "'('",
            "'cn=a\\\\,b,dc=c'",
            "'20240102030405Z'",
            "'133000000000000000'",
            "'\\\\'",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,6}",
        "\\PC{0,3}",
    ]
}

fn random_expression() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 0..24).prop_map(|t| t.join(" "))
}

/// Valid expressions, so that generated mappings also load and get evaluated.
fn valid_expression() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "attr.mail | lower",
        "attr.mail",
        "(attr.mail or 'x@y.z') | email_local ~ '@example.com'",
        "attrs.mail | map('lower') | list",
        "lookup(attr.manager, 'mail')",
        "lookup(attr.manager).id",
        "member_of('Legal')",
        "attr.userAccountControl | has_bit(2)",
        "attr.x | default('a@b.c')",
        "groups | join(',')",
        "dn | rdn_value",
        "dn | parent_dn",
        "now",
        "true",
        "attr.mail | regex_replace('@.*', '@example.org')",
        "'20240101000000Z' | generalized_time | iso_date",
        "range(100000) | join",
        "'x' * 100000000",
        "attr.mail ~ attr.mail ~ attr.mail",
        "[attr.mail, id]",
        "{'value': attr.mail, 'primary': true}",
        "attr.mail | split('@') | first",
        "id",
    ])
    .prop_map(str::to_string)
}

fn expression() -> impl Strategy<Value = String> {
    prop_oneof![valid_expression(), random_expression()]
}

fn snapshot() -> Snapshot {
    let mut a = Attributes::new();
    a.push("mail", "Jo@Example.com");
    a.push("manager", "cn=boss,dc=example,dc=com");
    a.push("userAccountControl", "514");
    let mut b = Attributes::new();
    b.push("mail", "boss@example.com");
    let mut g = Attributes::new();
    g.push("cn", "Legal");
    Snapshot {
        source: "fuzz".into(),
        read_at: chrono::Utc::now(),
        users: vec![
            Entry {
                id: "jo".into(),
                locator: "cn=jo,dc=example,dc=com".into(),
                attrs: a,
            },
            Entry {
                id: "boss".into(),
                locator: "cn=boss,dc=example,dc=com".into(),
                attrs: b,
            },
        ],
        groups: vec![Group {
            entry: Entry {
                id: "g".into(),
                locator: "cn=Legal,dc=example,dc=com".into(),
                attrs: g,
            },
            members: vec!["jo".into(), "g".into()],
        }],
    }
}

/// A TOML string literal for `s` in one of TOML's four quoting styles.
fn quoted(s: &str, style: u8) -> String {
    match style % 4 {
        0 => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        1 if !s.contains('\'') && !s.contains('\n') => format!("'{s}'"),
        2 if !s.contains("'''") => format!("'''{s}'''"),
        _ => format!(
            "\"\"\"\n{}\"\"\"",
            s.replace('\\', "\\\\").replace('"', "\\\"")
        ),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn loader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let _ = Mapping::from_text(Path::new("fuzz.toml"), &text);
    }

    #[test]
    fn loader_never_panics_on_mapping_shaped_text(
        disabled in expression(),
        when in expression(),
        user_name in expression(),
        title in expression(),
        extra_key in prop::sample::select(vec!["title", "nickName", "TITLE", "department", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "externalId", "active", "emails"]),
        styles in prop::collection::vec(0u8..4, 4),
        member in "[a-zA-Z =,]{0,12}",
    ) {
        let text = format!(
            "version = 1\n[scope]\ndefault = \"exclude\"\ndisabled = {}\n[[scope.rules]]\naction = \"include\"\nwhen = {}\nmember_of = [{}]\n[attributes]\nuserName = {}\n\"{extra_key}\" = {{ expr = {}, apply = \"if_empty\" }}\n[groups]\nwhen = {}\n",
            quoted(&disabled, styles[0]),
            quoted(&when, styles[1]),
            quoted(&member, 0),
            quoted(&user_name, styles[2]),
            quoted(&title, styles[3]),
            quoted(&when, styles[0]),
        );
        match Mapping::from_text(Path::new("fuzz.toml"), &text) {
            Ok(m) => {
                // A mapping that loads evaluates without panicking (errors are fine).
                let snap = snapshot();
                if let Ok(p) = m.prepare(&snap, snap.read_at) {
                    let _ = p.evaluate_all();
                    let _ = p.groups();
                }
            }
            Err(e) => {
                // Every problem is located inside the file.
                let lines = text.lines().count().max(1);
                for p in e.problems() {
                    prop_assert!(p.line >= 1 && p.line <= lines + 1, "{p} in\n{text}");
                    prop_assert!(p.column >= 1, "{p}");
                }
            }
        }
    }

    #[test]
    fn expression_checker_never_panics(src in expression()) {
        let env = expr::environment(FUEL_PER_EXPRESSION);
        if let Err(p) = check_expression(&env, &src, ENTRY_VARS_WITH_DISABLED) {
            prop_assert!(p.offset <= src.len());
        }
    }

    #[test]
    fn expression_checker_never_panics_on_raw_text(src in "\\PC{0,200}") {
        let env = expr::environment(FUEL_PER_EXPRESSION);
        if let Err(p) = check_expression(&env, &src, ENTRY_VARS_WITH_DISABLED) {
            prop_assert!(p.offset <= src.len());
        }
    }

    #[test]
    fn string_offsets_stay_inside_the_string(s in "\\PC{0,40}", style in 0u8..4, off in 0usize..60) {
        let lit = quoted(&s, style);
        let text = format!("k = {lit}\n");
        let span = 4..4 + lit.len();
        let at = string_offset(&text, span.clone(), off);
        prop_assert!(at >= span.start && at <= span.end, "{at} outside {span:?} in {text:?}");
        prop_assert!(text.is_char_boundary(at));
    }

    #[test]
    fn text_helpers_never_panic(s in "\\PC{0,80}", n in any::<i64>()) {
        let _ = expr::dn_rdns(&s);
        let _ = expr::normalize_dn(&s);
        let _ = expr::generalized_to_iso(&s);
        let _ = expr::iso_date(&s);
        let _ = expr::fold_diacritics(&s);
        let _ = expr::filetime_to_iso(n);
        let _ = expr::guid_text(s.as_bytes());
    }
}

#[test]
fn generated_mappings_do_load_sometimes() {
    // Runs the mapping-shaped property on its own strategy and checks that part of the
    // generated mappings are valid, so evaluation is exercised, not only rejection.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let ok = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&(valid_expression(), valid_expression()), |(a, b)| {
            let text = format!(
                "version = 1\n[scope]\ndefault = \"include\"\ndisabled = \"{}\"\n[attributes]\nuserName = \"{}\"\n",
                a.replace('"', "\\\""),
                b.replace('"', "\\\"")
            );
            if let Ok(m) = Mapping::from_text(Path::new("fuzz.toml"), &text) {
                ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let snap = snapshot();
                if let Ok(p) = m.prepare(&snap, snap.read_at) {
                    let _ = p.evaluate_all();
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(ok.load(std::sync::atomic::Ordering::Relaxed) > 16);
}

#[test]
fn deeply_nested_expressions_are_refused_not_crashed() {
    let env = expr::environment(FUEL_PER_EXPRESSION);
    for src in [
        format!("{}1{}", "(".repeat(3000), ")".repeat(3000)),
        format!("{}1{}", "[".repeat(3000), "]".repeat(3000)),
        format!("{}1", "not ".repeat(2000)),
        format!("{}1", "-".repeat(4000)),
        format!("1{}", " | lower".repeat(1000)),
    ] {
        let _ = check_expression(&env, &src, ENTRY_VARS_WITH_DISABLED);
    }
}
