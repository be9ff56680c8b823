//! The `ironbridge` binary end to end against `ironclad-sim` (the real binary, on a free
//! loopback port): `check` with least-privilege and full scopes, bad configuration errors,
//! `auth login` through the simulator's consent redirect, `mapping validate|test`,
//! `source dump`, `plan`/`apply` with a saved plan, and the README's first command (`demo`).

use crate::support::sim::{start_sim_process, ADMIN, ALL_SCOPES, LEAST_PRIVILEGE};
use crate::support::{bin, repo};
use std::path::Path;
use std::process::{Command, Output};

fn ironbridge(args: &[&str]) -> Output {
    Command::new(bin("ironbridge"))
        .args(["--log", "warn"])
        .args(args)
        .env_remove("IRONBRIDGE_LOG")
        .output()
        .expect("run ironbridge")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn client_config(dir: &Path, base: &str, secret: &str, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("secret"), secret).unwrap();
    let cfg = format!(
        "version = 1\n[ironclad]\nbase_url = \"{base}\"\n[ironclad.auth]\nmethod = \"client_credentials\"\n\
         client_id = \"cli\"\nclient_secret = {{ file = \"secret\" }}\n[ironclad.acting_user]\nemail = \"{ADMIN}\"\n{extra}"
    );
    let p = dir.join("ironbridge.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

#[test]
fn check_with_least_privilege_names_missing_scopes_and_exits_1() {
    let scopes = LEAST_PRIVILEGE.join(",");
    let sim = start_sim_process(&[
        "--client",
        &format!("cli:s3cret-value:{scopes}"),
        "--admin-email",
        ADMIN,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = client_config(dir.path(), &sim.base_url, "s3cret-value", "");
    let out = ironbridge(&["check", "--config", cfg.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.lines()
            .any(|l| l.contains("scim.users.createUsers") && l.contains("YES (missing)")),
        "createUsers not flagged:\n{t}"
    );
    // Without the group write scopes the run reports membership drift and writes none of it:
    // shown as not granted, but not a failure.
    for optional in ["scim.groups.createGroups", "scim.groups.updateGroups"] {
        assert!(
            t.lines().any(|l| l.contains(optional)
                && l.contains("reported")
                && !l.contains("YES (missing)")),
            "{optional}:\n{t}"
        );
    }
    assert!(t.contains("read users: ok"), "{t}");
    assert!(t.contains("missing scopes:"), "{t}");
    assert!(!t.contains("s3cret-value"), "the secret leaked:\n{t}");

    // Narrowing the policy to what is granted makes the same token pass.
    let cfg = client_config(
        dir.path(),
        &sim.base_url,
        "s3cret-value",
        "[policy]\ncreate_users = false\n",
    );
    let out = ironbridge(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn check_with_every_scope_passes() {
    let sim = start_sim_process(&[
        "--client",
        &format!("cli:pw:{}", ALL_SCOPES.join(",")),
        "--admin-email",
        ADMIN,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = client_config(dir.path(), &sim.base_url, "pw", "");
    let out = ironbridge(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("every scope the configuration needs is granted"));
}

#[test]
fn usage_errors_exit_1_not_the_changes_pending_code() {
    for args in [
        &["plan", "--bogus"][..],
        &["apply", "--yes"][..],
        &["plan", "--config", "x.toml", "--only"][..],
        &["frobnicate"][..],
    ] {
        let out = ironbridge(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
    }
    assert_eq!(ironbridge(&["--version"]).status.code(), Some(0));
    assert_eq!(ironbridge(&["plan", "--help"]).status.code(), Some(0));
}

#[test]
fn bad_configuration_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 4] = [
        (
            "version = 1\n[ironclad]\nregion = \"na1\"\ncolour = \"blue\"\n[ironclad.auth]\nmethod = \"bearer_token\"\ntoken = { env = \"X\" }\n",
            ":4:1: ironclad.colour:",
            "unknown key",
        ),
        (
            "version = 1\n[ironclad]\nregion = \"na1\"\n[ironclad.auth]\nmethod = \"bearer_token\"\ntoken = { env = \"IRONBRIDGE_TEST_NOT_SET_ANYWHERE\" }\n",
            ":6:9: ironclad.auth.token:",
            "missing secret",
        ),
        (
            "version = 1\n[ironclad]\nregion = \"na1\"\n[ironclad.auth]\nmethod = \"bearer_token\"\ntoken = { file = \"no-such-file\" }\n",
            ":6:9: ironclad.auth.token: cannot read secret file",
            "unreadable secret file",
        ),
        (
            "version = 1\n[ironclad]\nregion = \"us9\"\n[ironclad.auth]\nmethod = \"bearer_token\"\ntoken = { env = \"X\" }\n",
            ":3:10: ironclad.region: unknown region",
            "bad region",
        ),
    ];
    for (i, (cfg, expected, what)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&p, cfg).unwrap();
        let out = ironbridge(&["check", "--config", p.to_str().unwrap()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {t}");
        assert!(
            t.contains(&format!("bad{i}.toml{expected}")),
            "{what}: expected {expected:?} in:\n{t}"
        );
    }
}

#[test]
fn auth_login_stores_a_private_refresh_token_that_later_calls_use() {
    let scopes = "scim.users.readUsers,scim.groups.readGroups";
    let sim = start_sim_process(&[
        "--client",
        &format!("web:websecret:{scopes}"),
        "--admin-email",
        ADMIN,
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "websecret").unwrap();
    let port = crate::support::free_port();
    let cfg = format!(
        "version = 1\n[ironclad]\nbase_url = \"{}\"\n[ironclad.auth]\nmethod = \"authorization_code\"\nclient_id = \"web\"\n\
         client_secret = {{ file = \"secret\" }}\nscopes = [\"scim.users.readUsers\"]\nredirect_uri = \"http://127.0.0.1:{port}/callback\"\n\
         [policy]\ncreate_users = false\nupdate_users = false\nremove_users = \"keep\"\nmanage_groups = false\n",
        sim.base_url
    );
    let cfg_path = dir.path().join("ironbridge.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut child = Command::new(bin("ironbridge"))
        .args([
            "--log",
            "warn",
            "auth",
            "login",
            "--config",
            cfg_path.to_str().unwrap(),
            "--timeout",
            "30",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the authorize URL from its output, then play the browser.
    use std::io::BufRead as _;
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let url = loop {
        let l = lines.next().expect("auth login printed no URL").unwrap();
        if let Some(u) = l.trim().strip_prefix("http") {
            break format!("http{u}");
        }
    };
    assert!(
        url.contains("state=") && url.contains("response_type=code"),
        "{url}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let page = rt.block_on(async { reqwest::get(&url).await.unwrap().text().await.unwrap() });
    assert!(page.contains("login complete"), "{page}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{rest:?}");
    let token_file = dir.path().join("ironbridge-refresh-token");
    let meta = std::fs::metadata(&token_file).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A later call uses the refresh-token grant.
    let out = ironbridge(&["check", "--config", cfg_path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("scim.users.readUsers"), "{t}");
    let stored = std::fs::read_to_string(&token_file).unwrap();
    assert!(!t.contains(stored.trim()), "refresh token printed");
}

#[test]
fn mapping_commands_validate_and_test_an_ldif_entry() {
    let maps: Vec<String> = [
        "active-directory",
        "openldap-inetorgperson",
        "freeipa",
        "scim-source",
    ]
    .iter()
    .map(|m| {
        repo()
            .join(format!("mappings/{m}.toml"))
            .display()
            .to_string()
    })
    .collect();
    let mut args = vec!["mapping", "validate"];
    args.extend(maps.iter().map(String::as_str));
    let out = ironbridge(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let good =
        std::fs::read_to_string(repo().join("mappings/openldap-inetorgperson.toml")).unwrap();
    let line = good
        .lines()
        .position(|l| l.starts_with("title = "))
        .expect("a title line")
        + 1;
    std::fs::write(&bad, good.replacen("\ntitle = ", "\nfavouriteColour = ", 1)).unwrap();
    let out = ironbridge(&["mapping", "validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains(&format!("bad.toml:{line}:1")),
        "{}",
        text(&out)
    );

    let entry = dir.path().join("one.ldif");
    std::fs::write(
        &entry,
        "dn: uid=ann,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nentryUUID: 0f8f3a1e-1111-4c1e-9a7a-000000000001\n\
         uid: ann\ncn: Ann Example\ngivenName: Ann\nsn: Example\nmail: Ann@Example.com\ntitle: Counsel\n\n\
         dn: cn=ironclad-users,ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\ncn: ironclad-users\n\
         entryUUID: 0f8f3a1e-1111-4c1e-9a7a-0000000000ff\nmember: uid=ann,ou=people,dc=example,dc=com\n",
    )
    .unwrap();
    let out = ironbridge(&[
        "mapping",
        "test",
        repo()
            .join("mappings/openldap-inetorgperson.toml")
            .to_str()
            .unwrap(),
        "--entry",
        entry.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(t.contains("ann@example.com"), "{t}");
    assert!(t.contains("0f8f3a1e-1111-4c1e-9a7a-000000000001"), "{t}");
    assert!(
        t.contains("member of ironclad-users"),
        "the deciding rule is named:\n{t}"
    );
}

#[test]
fn source_dump_prints_the_sample_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 1\n[ironclad]\nregion = \"demo\"\n[ironclad.auth]\nmethod = \"bearer_token\"\ntoken = {{ file = \"t\" }}\n\
             [source]\nkind = \"ldif\"\npath = \"{}\"\n",
            repo().join("examples/sample/directory.ldif").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("t"), "token").unwrap();
    let out = ironbridge(&["source", "dump", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["users"].as_array().unwrap().len(), 25);
    assert_eq!(v["groups"].as_array().unwrap().len(), 5);
    let out = ironbridge(&[
        "source",
        "dump",
        "--config",
        cfg.to_str().unwrap(),
        "--format",
        "ldif",
        "--limit",
        "2",
    ]);
    let t = String::from_utf8_lossy(&out.stdout);
    assert_eq!(t.matches("\ndn: ").count(), 4, "{t}");
}

#[test]
fn demo_plans_applies_and_converges() {
    let out = ironbridge(&["demo"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let last = t.split("== 4.").nth(1).expect("the demo's fourth step");
    assert!(
        last.contains("(exit code 0)"),
        "second plan not converged:\n{last}"
    );
    assert!(
        !last.contains("create:") && !last.contains("update:"),
        "{last}"
    );
}

fn sample_setup(dir: &Path, base: &str) -> std::path::PathBuf {
    std::fs::copy(
        repo().join("examples/sample/directory.ldif"),
        dir.join("directory.ldif"),
    )
    .unwrap();
    std::fs::copy(
        repo().join("examples/sample/mapping.toml"),
        dir.join("mapping.toml"),
    )
    .unwrap();
    client_config(
        dir,
        base,
        "pw",
        "[source]\nkind = \"ldif\"\npath = \"directory.ldif\"\n[mapping]\nfile = \"mapping.toml\"\n[policy]\nremove_users = \"deactivate\"\n",
    )
}

#[test]
fn a_failed_plan_leaves_no_earlier_report_or_saved_plan_behind() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9: reading Ironclad fails.
    let cfg = sample_setup(dir.path(), "http://127.0.0.1:9");
    let mut text_cfg = std::fs::read_to_string(&cfg).unwrap();
    text_cfg.push_str("[ironclad.retry]\nmax_attempts = 1\n");
    std::fs::write(&cfg, text_cfg).unwrap();
    let (report, saved) = (dir.path().join("plan.html"), dir.path().join("plan.json"));
    std::fs::write(
        &report,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<title>ironbridge plan 2026-11-24</title>",
    )
    .unwrap();
    std::fs::write(
        &saved,
        "{\n  \"schema\": \"ironbridge.saved-plan/v1\",\n  \"plan\": {}\n}",
    )
    .unwrap();
    let plan = |report: &Path, saved: &Path| {
        ironbridge(&[
            "plan",
            "--config",
            cfg.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
            "--format",
            "html",
            "--out",
            saved.to_str().unwrap(),
        ])
    };
    let out = plan(&report, &saved);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!report.exists() && !saved.exists(), "{}", text(&out));
    // A file that is not an earlier plan's (a mistyped path) is never removed, nor a link.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "my notes").unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&cfg, &link).unwrap();
    let out = plan(&notes, &link);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes");
    assert!(link.exists() && cfg.exists());
}

#[test]
fn dry_run_writes_nothing_and_a_stale_saved_plan_is_refused_by_name() {
    let all = ALL_SCOPES.join(",");
    let sim = start_sim_process(&[
        "--client",
        &format!("cli:pw:{all}"),
        "--token",
        &format!("direct-token:{all}"),
        "--admin-email",
        ADMIN,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = sample_setup(dir.path(), &sim.base_url);
    let cfg_s = cfg.to_str().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let writes = |rt: &tokio::runtime::Runtime| {
        rt.block_on(crate::support::sim::api_requests(&sim.base_url))
            .into_iter()
            .filter(|r| r.method != "GET" && !r.path.starts_with("/oauth"))
            .count()
    };

    // The dry run: changes pending, a report, a saved plan, and not one write.
    let report = dir.path().join("plan.html");
    let saved = dir.path().join("plan.json");
    let out = ironbridge(&[
        "plan",
        "--config",
        cfg_s,
        "--out",
        saved.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--format",
        "html",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(writes(&rt), 0, "a dry run wrote to Ironclad");
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("zoe.angstrom@example.com"));

    // Without --yes and without a terminal to confirm on, apply refuses and writes nothing.
    let out = ironbridge(&["apply", "--config", cfg_s]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("pass --yes"), "{t}");
    assert_eq!(writes(&rt), 0, "apply without --yes wrote");

    // Applying the saved plan exactly.
    let out = ironbridge(&[
        "apply",
        "--config",
        cfg_s,
        "--plan",
        saved.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let state = rt.block_on(crate::support::sim::sim_state(&sim.base_url));
    let users = state["users"].as_array().unwrap();
    assert_eq!(users.len(), 18, "17 people plus the admin");

    // Converged: a second plan makes zero writes and exits 0.
    rt.block_on(crate::support::sim::clear_requests(&sim.base_url));
    let out = ironbridge(&["plan", "--config", cfg_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(writes(&rt), 0);

    // A mover in the directory; a saved plan; then someone edits that user in Ironclad.
    let ldif = std::fs::read_to_string(dir.path().join("directory.ldif")).unwrap();
    let moved = ldif.replacen("title: Senior Counsel", "title: Deputy General Counsel", 1);
    assert_ne!(ldif, moved);
    std::fs::write(dir.path().join("directory.ldif"), moved).unwrap();
    let out = ironbridge(&[
        "plan",
        "--config",
        cfg_s,
        "--out",
        saved.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mover = plan["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["action"] == "update")
        .expect("one update");
    let mover_name = mover["user_name"].as_str().unwrap().to_string();
    let mover_id = mover["ironclad_id"].as_str().unwrap().to_string();
    assert_eq!(mover["changes"][0]["after"], "Deputy General Counsel");
    rt.block_on(async {
        let r = reqwest::Client::new()
            .patch(format!("{}/scim/v2/Users/{mover_id}", sim.base_url))
            .bearer_auth("direct-token")
            .json(&serde_json::json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "title", "value": "Edited by hand"}]
            }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    });
    std::thread::sleep(std::time::Duration::from_millis(5));
    let out = ironbridge(&[
        "apply",
        "--config",
        cfg_s,
        "--plan",
        saved.to_str().unwrap(),
        "--yes",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("refused") && t.contains(&mover_name), "{t}");
    let state = rt.block_on(crate::support::sim::sim_state(&sim.base_url));
    let u = state["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == mover_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(u["title"], "Edited by hand", "a refused object was written");

    // A saved plan applied through a configuration for another tenant: refused whole.
    let out = ironbridge(&["plan", "--config", cfg_s, "--out", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let other = dir.path().join("other.toml");
    let cfg_text = std::fs::read_to_string(&cfg).unwrap();
    let other_text = cfg_text.replace(&sim.base_url, "http://127.0.0.1:9/other-tenant");
    std::fs::write(&other, &other_text).unwrap();
    rt.block_on(crate::support::sim::clear_requests(&sim.base_url));
    let apply_other = || {
        ironbridge(&[
            "apply",
            "--config",
            other.to_str().unwrap(),
            "--plan",
            saved.to_str().unwrap(),
            "--yes",
        ])
    };
    // The state store belongs to the first tenant: `check` says so, and a run is refused
    // before anything is read.
    let out = ironbridge(&["check", "--config", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("state store: FAILED"), "{}", text(&out));
    let out = apply_other();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("belongs to the Ironclad tenant at"), "{t}");
    // With a store of its own, the saved plan itself is refused for the other tenant.
    std::fs::write(
        &other,
        format!("{other_text}[state]\npath = \"other-state.db\"\n"),
    )
    .unwrap();
    let out = apply_other();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("the plan was made against"), "{t}");
    assert_eq!(writes(&rt), 0);
}
