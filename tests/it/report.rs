//! Reports: the single-file HTML report loaded in a real headless Chromium, whose script must
//! render the per-action counts that the plan's summary holds, with no external asset.

use chrono::Utc;
use ironbridge::reconcile::{plan::plan, ApplyPolicy, Desired, DesiredUser, PlanInput, PlanPolicy};
use ironbridge::report::{render, Format};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {c}"))
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!("chromium is not installed: run scripts/test.sh, which installs it");
}

fn sample_plan() -> ironbridge::reconcile::Plan {
    let policies: BTreeMap<String, ApplyPolicy> = ["userName", "title"]
        .iter()
        .map(|p| (p.to_string(), ApplyPolicy::Always))
        .collect();
    let want = |src: &str, mail: &str, title: &str| {
        DesiredUser {
        source_id: src.into(),
        locator: format!("uid={src},ou=people,dc=example,dc=test").into(),
        state: Desired::Wanted {
            user: json!({"userName": mail, "title": title, "name": {"givenName": "A", "familyName": "B"}}).into(),
            policies: policies.clone().into(),
        },
    }
    };
    let desired = vec![
        want("s1", "new1@example.com", "x"),
        want("s2", "new2@example.com", "<script>alert(1)</script>"),
        want("s3", "mover@example.com", "New"),
        want("s4", "same@example.com", "Same"),
        DesiredUser {
            source_id: "s5".into(),
            locator: "uid=s5".into(),
            state: Desired::NotWanted {
                reason: "disabled".into(),
            },
        },
    ];
    let ic = |id: &str, src: &str, mail: &str, title: &str| json!({"id": id, "externalId": src, "userName": mail, "title": title});
    let users = [
        ic("i3", "s3", "mover@example.com", "Old"),
        ic("i4", "s4", "same@example.com", "Same"),
        ic("i5", "s5", "leaver@example.com", "x"),
    ];
    let links: ironbridge::reconcile::LinkMap = [("s3", "i3"), ("s4", "i4"), ("s5", "i5")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let granted: BTreeSet<String> = [
        "scim.users.readUsers",
        "scim.users.createUsers",
        "scim.users.updateUsers",
        "scim.users.deleteUsers",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let policy = PlanPolicy {
        max_removal_percent: 100.0,
        manage_groups: false,
        ..PlanPolicy::default()
    };
    let empty = BTreeMap::new();
    plan(&PlanInput {
        desired: Some(&desired),
        desired_groups: &[],
        group_errors: &[],
        source_incomplete: None,
        ironclad_users: &users
            .iter()
            .filter_map(ironbridge::reconcile::users::IroncladUser::from_value)
            .collect::<Vec<_>>(),
        ironclad_groups: &[],
        user_links: &links,
        group_links: &empty,
        policy: &policy,
        granted: &granted,
        quarantined: &BTreeMap::new(),
        grace: &BTreeMap::new(),
        now: Utc::now(),
        protected_fn: None,
        converged: None,
        desired_names: None,
        target_index: None,
    })
}

#[test]
fn html_report_renders_counts_in_headless_chromium() {
    let plan = sample_plan();
    let html = render(&plan, Format::Html, false).unwrap();
    assert!(
        !html.contains("<script>alert(1)</script>"),
        "values are escaped"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.html");
    std::fs::write(&file, &html).unwrap();
    let profile = dir.path().join("profile");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    assert!(
        dom.contains("data-ready=\"1\""),
        "the report's script did not run"
    );
    // Each card the script rendered: <div class="card" data-action="A"><b class="count">N</b>...
    let mut rendered: BTreeMap<String, usize> = BTreeMap::new();
    for part in dom.split("<div class=\"card\" data-action=\"").skip(1) {
        let action = part.split('"').next().unwrap().to_string();
        let count = part
            .split("<b class=\"count\">")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap();
        rendered.insert(action, count.parse().unwrap());
    }
    let mut expected = plan.summary.clone();
    expected.remove("held");
    assert_eq!(
        rendered, expected,
        "counts rendered by the page differ from the plan summary"
    );
    assert_eq!(expected.get("create"), Some(&2));
    assert_eq!(expected.get("update"), Some(&1));
    assert_eq!(expected.get("remove"), Some(&1));
    assert_eq!(expected.get("noop"), Some(&1));
    // The filter state line is rendered too (unchanged rows hidden by default).
    assert!(dom.contains(" rows</span>"), "visible-row counter missing");
}
