//! Reconciliation end to end: a real OpenLDAP `slapd` read by the real `ironbridge` binary
//! (`plan` and `apply`) into the real `ironclad-sim` binary, with the shipped
//! `mappings/openldap-inetorgperson.toml`. Covers joiners, movers (title, department,
//! manager and departmentHead), an email change that keeps the Ironclad id, leavers (disabled,
//! deleted, out of the scope group), rehires, unmanaged and protected users, a source outage
//! (slapd stopped, a wrong bind password), a shrink over the removal threshold, a
//! least-privilege token, the dry run and the converged second run (from the simulator's
//! request log), `preview` of one person, runs killed with SIGKILL at a random write
//! (among creates, and among updates, membership changes and removals), and a users listing
//! cut short by the server's size limit (nobody removed, with and without
//! `writes_on_incomplete_source`).
//!
//! Each test gets its own simulator and its own subtree (`ou=t-NAME,dc=example,dc=test`) of
//! one slapd shared by these tests ([`slapd::small`]); the outage test starts a private slapd
//! it can stop, and the incomplete-read test reads the size-limited second database.

use crate::support::sim::{api_requests, clear_requests, set_faults, sim_state};
use crate::support::sim::{start_sim_process, SimProcess, SimRequest, ADMIN, ALL_SCOPES};
use crate::support::slapd::{self, Slapd, READER_DN, READER_PASSWORD};
use crate::support::{bin, repo};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const IRONCLAD: &str = "urn:ietf:params:scim:schemas:extension:ironclad:2.0:User";
const TOKEN: &str = "reconcile-token";
const LP_TOKEN: &str = "least-privilege-token";
const CREATE_USERS: &str = "scim.users.createUsers";

/// One person of a test directory.
#[derive(Debug, Clone)]
struct Person {
    uid: &'static str,
    given: &'static str,
    sn: &'static str,
    title: &'static str,
    dept: &'static str,
    manager: Option<&'static str>,
    /// Member of `cn=ironclad-users` (the mapping's scope group).
    in_scope: bool,
    /// Member of `cn=ironclad-legal` (an Ironclad group "Legal").
    legal: bool,
}

fn p(uid: &'static str, title: &'static str, manager: Option<&'static str>) -> Person {
    Person {
        uid,
        given: uid,
        sn: "Tester",
        title,
        dept: "Legal",
        manager,
        in_scope: true,
        legal: false,
    }
}

/// A small organisation: a head, two managers, people under them.
fn org() -> Vec<Person> {
    vec![
        p("head", "General Counsel", None),
        Person {
            legal: true,
            ..p("boss1", "Deputy Counsel", Some("head"))
        },
        Person {
            dept: "Commercial",
            ..p("boss2", "Head of Commercial", Some("head"))
        },
        Person {
            legal: true,
            ..p("ann", "Counsel", Some("boss1"))
        },
        Person {
            legal: true,
            ..p("bob", "Paralegal", Some("boss1"))
        },
        Person {
            dept: "Commercial",
            ..p("carl", "Contract Manager", Some("boss2"))
        },
        p("dana", "Counsel", Some("boss1")),
        Person {
            in_scope: false,
            ..p("outsider", "Intern", None)
        },
    ]
}

/// One test's world: a subtree of a slapd, a simulator, a configuration directory.
struct World {
    name: String,
    slapd: &'static Slapd,
    sim: SimProcess,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    rt: tokio::runtime::Runtime,
}

fn ou(name: &str) -> String {
    format!("ou=t-{name},{}", slapd::BASE)
}

impl World {
    /// The subtree `ou=t-NAME` with `people` added to `slapd`, a simulator started with `sim_args`
    /// (plus a static token with every scope and the admin user), and a configuration with
    /// `extra` appended.
    fn new(
        name: &str,
        slapd: &'static Slapd,
        people: &[Person],
        sim_args: &[&str],
        extra: &str,
    ) -> World {
        let base = ou(name);
        let mut ldif = format!(
            "dn: {base}\nobjectClass: organizationalUnit\nou: t-{name}\n\n\
             dn: ou=people,{base}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n\n"
        );
        for (i, person) in people.iter().enumerate() {
            ldif.push_str(&person_ldif(name, person, i + 1));
        }
        ldif.push_str(&group_ldif(
            name,
            "ironclad-users",
            None,
            people.iter().filter(|p| p.in_scope),
        ));
        ldif.push_str(&group_ldif(
            name,
            "ironclad-legal",
            Some("Legal"),
            people.iter().filter(|p| p.legal),
        ));
        slapd.admin("ldapadd", &ldif);

        let mut args = vec![
            "--token".to_string(),
            format!("{TOKEN}:{}", ALL_SCOPES.join(",")),
            "--admin-email".to_string(),
            ADMIN.to_string(),
        ];
        args.extend(sim_args.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let sim = start_sim_process(&args);
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            repo().join("mappings/openldap-inetorgperson.toml"),
            dir.path().join("mapping.toml"),
        )
        .unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        std::fs::write(dir.path().join("ldap-password"), READER_PASSWORD).unwrap();
        let cfg = dir.path().join("ironbridge.toml");
        let w = World {
            name: name.to_string(),
            slapd,
            sim,
            dir,
            cfg,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        w.write_config(&w.slapd.ldap_url, extra);
        w
    }

    fn write_config(&self, ldap_url: &str, extra: &str) {
        let base = ou(&self.name);
        let cfg = format!(
            "version = 1\n\
             [ironclad]\nbase_url = \"{sim}\"\n\
             [ironclad.auth]\nmethod = \"bearer_token\"\ntoken = {{ file = \"token\" }}\n\
             [source]\nkind = \"ldap\"\nurl = \"{ldap_url}\"\nbind_dn = \"{READER_DN}\"\n\
             bind_password = {{ file = \"ldap-password\" }}\nmax_reconnects = 0\nconnect_timeout_secs = 2\n\
             [source.users]\nbase_dn = \"ou=people,{base}\"\nattributes = [\"*\", \"pwdAccountLockedTime\"]\n\
             [source.groups]\nbase_dn = \"ou=groups,{base}\"\n\
             [mapping]\nfile = \"mapping.toml\"\n{extra}",
            sim = self.sim.base_url
        );
        std::fs::write(&self.cfg, cfg).unwrap();
    }

    fn dn(&self, uid: &str) -> String {
        format!("uid={uid},ou=people,{}", ou(&self.name))
    }

    fn group_dn(&self, cn: &str) -> String {
        format!("cn={cn},ou=groups,{}", ou(&self.name))
    }

    fn mail(&self, uid: &str) -> String {
        format!("{uid}@{}.test", self.name)
    }

    /// The entry's `entryUUID` (its source id, so the Ironclad `externalId`).
    fn entry_uuid(&self, uid: &str) -> String {
        self.slapd
            .values(&self.dn(uid), "entryUUID")
            .pop()
            .expect("entryUUID")
    }

    fn modify(&self, ldif: &str) {
        self.slapd.admin("ldapmodify", ldif);
    }

    fn ironbridge(&self, args: &[&str]) -> Output {
        Command::new(bin("ironbridge"))
            .args(["--log", "warn"])
            .args(args)
            .args(["--config", self.cfg.to_str().unwrap()])
            .env_remove("IRONBRIDGE_LOG")
            .output()
            .expect("run ironbridge")
    }

    /// `plan --format json`: the exit code and the plan.
    fn plan(&self) -> (i32, Value) {
        let out = self.ironbridge(&["plan", "--format", "json"]);
        let plan: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("plan printed no JSON ({e}):\n{}", text(&out)));
        assert_eq!(plan["schema"], "ironbridge.plan/v1");
        (out.status.code().unwrap_or(-1), plan)
    }

    /// `apply --yes` with `extra` arguments: the exit code and the output.
    fn apply(&self, extra: &[&str]) -> (i32, String) {
        let mut args = vec!["apply", "--yes"];
        args.extend_from_slice(extra);
        let out = self.ironbridge(&args);
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn state(&self) -> Value {
        self.rt.block_on(sim_state(&self.sim.base_url))
    }

    /// Every user in the simulator.
    fn users(&self) -> Vec<Value> {
        self.state()["users"].as_array().unwrap().clone()
    }

    /// The simulator's user with this userName (case-insensitive).
    fn user(&self, user_name: &str) -> Option<Value> {
        self.users().into_iter().find(|u| {
            u["userName"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case(user_name)
        })
    }

    fn group(&self, display_name: &str) -> Option<Value> {
        self.state()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["displayName"] == display_name)
            .cloned()
    }

    /// Every request the simulator logged (not its own `/_sim` ones).
    fn requests(&self) -> Vec<SimRequest> {
        self.rt.block_on(api_requests(&self.sim.base_url))
    }

    /// Requests other than GET.
    fn writes(&self) -> Vec<SimRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// Sends a SCIM request to the simulator as an administrator would; returns the status.
    fn scim(&self, method: reqwest::Method, path: &str, body: Value) -> reqwest::StatusCode {
        self.rt.block_on(async {
            reqwest::Client::new()
                .request(method, format!("{}/scim/v2{path}", self.sim.base_url))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        })
    }

    /// Sets the title of the Ironclad user `id` by hand (a PATCH), as an administrator would.
    fn set_title_in_ironclad(&self, id: &str, title: &str) {
        let status = self.scim(
            reqwest::Method::PATCH,
            &format!("/Users/{id}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "title", "value": title}]
            }),
        );
        assert!(status.is_success(), "{status}");
    }

    fn clear_log(&self) {
        self.rt.block_on(clear_requests(&self.sim.base_url));
    }

    /// Applies and checks exit 0, then checks that the next plan is converged (exit 0, nothing
    /// but noops and skips) and sends only GETs.
    fn apply_and_converge(&self) {
        let (code, out) = self.apply(&[]);
        assert_eq!(code, 0, "apply failed:\n{out}");
        self.assert_converged();
    }

    fn assert_converged(&self) {
        self.clear_log();
        let (code, plan) = self.plan();
        assert_eq!(code, 0, "not converged: {plan:#}");
        for u in users_of(&plan) {
            assert!(
                matches!(u["action"].as_str(), Some("noop" | "skip")),
                "not converged: {u:#}"
            );
        }
        assert_eq!(self.writes(), vec![], "a dry run wrote");
        // The converged apply sends no write either.
        let (code, out) = self.apply(&[]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(self.writes(), vec![], "a converged apply wrote:\n{out}");
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn person_ldif(tenant: &str, person: &Person, n: usize) -> String {
    let base = ou(tenant);
    let mut o = String::new();
    let _ = write!(
        o,
        "dn: uid={uid},ou=people,{base}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {g} {s}\n\
         givenName: {g}\nsn: {s}\nmail: {uid}@{tenant}.test\ntitle: {t}\nou: {d}\nemployeeNumber: {n}\n",
        uid = person.uid,
        g = person.given,
        s = person.sn,
        t = person.title,
        d = person.dept,
    );
    if let Some(m) = person.manager {
        let _ = writeln!(o, "manager: uid={m},ou=people,{base}");
    }
    o.push('\n');
    o
}

fn group_ldif<'a>(
    tenant: &str,
    cn: &str,
    description: Option<&str>,
    members: impl Iterator<Item = &'a Person>,
) -> String {
    let base = ou(tenant);
    let mut o = format!("dn: cn={cn},ou=groups,{base}\nobjectClass: groupOfNames\ncn: {cn}\n");
    if let Some(d) = description {
        let _ = writeln!(o, "description: {d}");
    }
    let mut any = false;
    for m in members {
        any = true;
        let _ = writeln!(o, "member: uid={},ou=people,{base}", m.uid);
    }
    if !any {
        // groupOfNames needs a member; the OU itself is neither a user nor a group.
        let _ = writeln!(o, "member: {base}");
    }
    o.push('\n');
    o
}

fn users_of(plan: &Value) -> &Vec<Value> {
    plan["users"].as_array().unwrap()
}

/// The plan line for a userName.
fn line<'a>(plan: &'a Value, user_name: &str) -> &'a Value {
    users_of(plan)
        .iter()
        .find(|u| {
            u["user_name"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case(user_name)
        })
        .unwrap_or_else(|| panic!("no plan line for {user_name}: {plan:#}"))
}

/// The plan line for a source DN (out-of-scope people have no userName).
fn line_at<'a>(plan: &'a Value, dn: &str) -> &'a Value {
    users_of(plan)
        .iter()
        .find(|u| u["locator"] == dn)
        .unwrap_or_else(|| panic!("no plan line for {dn}: {plan:#}"))
}

/// userName -> action of every line.
fn actions(plan: &Value) -> BTreeMap<String, String> {
    users_of(plan)
        .iter()
        .map(|u| {
            (
                u["user_name"].as_str().unwrap().to_string(),
                u["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// path -> (before, after) of a line's changes.
fn changes(line: &Value) -> BTreeMap<String, (Value, Value)> {
    line["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes: {line:#}"))
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                (c["before"].clone(), c["after"].clone()),
            )
        })
        .collect()
}

fn id(u: &Value) -> String {
    u["id"].as_str().unwrap().to_string()
}

fn lines_with_action<'a>(plan: &'a Value, action: &str) -> Vec<&'a Value> {
    users_of(plan)
        .iter()
        .filter(|u| u["action"] == action)
        .collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn joiners_are_created_by_a_dry_run_reviewed_apply_and_a_second_run_writes_nothing() {
    let w = World::new("joiner", slapd::small(), &org(), &[], "");
    let (code, plan) = w.plan();
    assert_eq!(code, 2, "changes pending: {plan:#}");
    // The dry run sent only reads: not one POST, PUT, PATCH or DELETE.
    let requests = w.requests();
    assert!(!requests.is_empty());
    assert_eq!(w.writes(), vec![], "the dry run wrote to Ironclad");

    let in_scope = ["head", "boss1", "boss2", "ann", "bob", "carl", "dana"];
    for uid in in_scope {
        let l = line(&plan, &w.mail(uid));
        assert_eq!(l["action"], "create", "{l:#}");
        assert_eq!(l["locator"], w.dn(uid));
        let user = &l["user"];
        assert_eq!(user["externalId"], w.entry_uuid(uid));
        assert_eq!(user["userName"], w.mail(uid));
        assert_eq!(user["emails"][0]["value"], w.mail(uid));
        assert_eq!(user["name"]["familyName"], "Tester");
    }
    let outsider = line_at(&plan, &w.dn("outsider")).clone();
    assert_eq!(outsider["action"], "skip");
    assert_eq!(outsider["reason"]["kind"], "out_of_scope", "{outsider:#}");
    assert_eq!(plan["summary"]["create"], 7);
    let groups = plan["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{groups:#?}");
    assert_eq!(groups[0]["action"], "create");
    assert_eq!(groups[0]["display_name"], "Legal");
    let adds: BTreeSet<&str> = groups[0]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let ids: BTreeSet<String> = ["boss1", "ann", "bob"]
        .iter()
        .map(|u| w.entry_uuid(u))
        .collect();
    assert_eq!(adds, ids.iter().map(String::as_str).collect());

    // Applied with JSON logs (standard error is not a terminal): structured progress lines.
    let out = Command::new(bin("ironbridge"))
        .args([
            "--log",
            "info",
            "--log-format",
            "json",
            "apply",
            "--yes",
            "--config",
        ])
        .arg(&w.cfg)
        .env_remove("IRONBRIDGE_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let progress: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "apply progress")
        .map(|l| l["fields"].clone())
        .collect();
    let last_of = |phase: &str| -> (u64, u64) {
        let l = progress
            .iter()
            .rfind(|l| l["phase"] == phase)
            .unwrap_or_else(|| panic!("no {phase} progress: {progress:#?}"));
        (l["done"].as_u64().unwrap(), l["total"].as_u64().unwrap())
    };
    assert_eq!(last_of("groups"), (1, 1));
    assert_eq!(last_of("users"), (7, 7));
    assert_eq!(last_of("membership"), (1, 1));
    assert!(progress.iter().all(|l| l["phase"] != "removals"));
    assert!(
        progress.len() <= 6,
        "a start and an end line per phase: {progress:#?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"step\":\"Ironclad (users)\""));
    let users = w.users();
    assert_eq!(users.len(), 8, "seven joiners and the admin: {users:#?}");
    let head = w.user(&w.mail("head")).unwrap();
    let boss1 = w.user(&w.mail("boss1")).unwrap();
    let ann = w.user(&w.mail("ann")).unwrap();
    assert_eq!(ann["title"], "Counsel");
    assert_eq!(ann["externalId"], w.entry_uuid("ann"));
    assert_eq!(ann[ENT]["department"], "Legal");
    assert_eq!(ann[ENT]["manager"]["value"], id(&boss1), "{ann:#}");
    assert_eq!(boss1[ENT]["manager"]["value"], id(&head), "{boss1:#}");
    assert_eq!(ann[IRONCLAD]["departmentHead"], w.mail("boss1"));
    assert!(w.user(&w.mail("outsider")).is_none());
    let legal = w.group("Legal").expect("the Legal group");
    let members: BTreeSet<&str> = legal["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    let want = [&boss1, &ann, &w.user(&w.mail("bob")).unwrap()]
        .iter()
        .map(|u| id(u))
        .collect::<BTreeSet<_>>();
    assert_eq!(members, want.iter().map(String::as_str).collect());
    w.assert_converged();

    // A later joiner: exactly one create, nothing else written.
    let erin = Person {
        legal: true,
        ..p("erin", "Counsel", Some("boss1"))
    };
    w.slapd.admin("ldapadd", &person_ldif("joiner", &erin, 99));
    w.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: member\nmember: {}\n\ndn: {}\nchangetype: modify\nadd: member\nmember: {}\n",
        w.group_dn("ironclad-users"),
        w.dn("erin"),
        w.group_dn("ironclad-legal"),
        w.dn("erin")
    ));
    let (code, plan) = w.plan();
    assert_eq!(code, 2);
    let acts = actions(&plan);
    assert_eq!(
        acts.values().filter(|a| *a != "noop").count(),
        2,
        "one create and the outsider's skip: {acts:?}"
    );
    assert_eq!(acts[&w.mail("erin")], "create");
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 0, "{out}");
    let erin = w.user(&w.mail("erin")).expect("erin created");
    assert_eq!(erin[ENT]["manager"]["value"], id(&boss1));
    let legal = w.group("Legal").unwrap();
    assert!(legal["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["value"] == erin["id"]));
    w.assert_converged();
}

/// `preview --user`: every step for one person read from the real directory, with nothing
/// written and no credential printed.
#[test]
fn preview_shows_every_step_for_one_person_and_never_a_password() {
    let w = World::new("preview", slapd::small(), &org(), &[], "");
    // A title whose escape sequence would move a terminal's cursor up and erase the lines
    // above (base64 in LDIF: it holds control characters).
    let hostile = "Counsel\u{1b}[6A\u{1b}[J\u{202e}";
    w.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: userPassword\nuserPassword: {{SSHA}}preview-secret-hash\n-\nreplace: title\ntitle:: {}\n",
        w.dn("ann"),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, hostile)
    ));
    let out = w.ironbridge(&["preview", "--user", &w.dn("ann")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "a create is pending: {t}");
    assert!(!t.contains('\u{1b}') && !t.contains('\u{202e}'), "{t}");
    assert!(t.contains("Counsel\\u{1b}[6A"), "shown, escaped: {t}");
    for step in [
        "1. Source",
        "2. Entry attributes",
        "3. Scope and mapping",
        "4. Match and action",
    ] {
        assert!(t.contains(step), "{step}:\n{t}");
    }
    assert!(!t.contains("preview-secret-hash"), "{t}");
    assert!(!t.contains("userPassword"), "{t}");
    assert!(t.contains(&w.mail("ann")) && t.contains("create"), "{t}");
    // Found by an attribute value too, but never by the password's.
    let out = w.ironbridge(&["preview", "--user", "{SSHA}preview-secret-hash"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(w.writes(), vec![], "preview wrote to Ironclad");
}

#[test]
fn a_mover_is_updated_in_place_title_department_manager_and_department_head() {
    let w = World::new("mover", slapd::small(), &org(), &[], "");
    w.apply_and_converge();
    let before = w.user(&w.mail("ann")).unwrap();
    let boss1 = w.user(&w.mail("boss1")).unwrap();
    let boss2 = w.user(&w.mail("boss2")).unwrap();
    assert_eq!(before[ENT]["manager"]["value"], id(&boss1));

    w.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: title\ntitle: Senior Counsel\n-\nreplace: ou\nou: Commercial\n-\n\
         replace: manager\nmanager: {}\n",
        w.dn("ann"),
        w.dn("boss2")
    ));
    w.clear_log();
    let (code, plan) = w.plan();
    assert_eq!(code, 2);
    let ann = line(&plan, &w.mail("ann"));
    assert_eq!(ann["action"], "update", "{ann:#}");
    assert_eq!(ann["ironclad_id"], before["id"]);
    assert_eq!(ann["locator"], w.dn("ann"));
    let ch = changes(ann);
    let want: BTreeMap<String, (Value, Value)> = [
        (
            "title".to_string(),
            (json!("Counsel"), json!("Senior Counsel")),
        ),
        (
            format!("{ENT}:department"),
            (json!("Legal"), json!("Commercial")),
        ),
        (
            format!("{ENT}:manager"),
            (json!({"value": id(&boss1)}), json!({"value": id(&boss2)})),
        ),
        (
            format!("{IRONCLAD}:departmentHead"),
            (json!(w.mail("boss1")), json!(w.mail("boss2"))),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(ch, want, "{ann:#}");
    // Nobody else changes.
    for u in users_of(&plan) {
        if u["user_name"] != w.mail("ann") && u["locator"] != w.dn("outsider") {
            assert_eq!(u["action"], "noop", "{u:#}");
        }
    }
    assert!(plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["action"] == "noop"));
    assert_eq!(w.writes(), vec![]);

    let (code, out) = w.apply(&[]);
    assert_eq!(code, 0, "{out}");
    let writes = w.writes();
    assert_eq!(writes.len(), 1, "one write for one mover: {writes:?}");
    assert!(
        writes[0].path.ends_with(&format!("/Users/{}", id(&before))),
        "{writes:?}"
    );
    let after = w.user(&w.mail("ann")).unwrap();
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["title"], "Senior Counsel");
    assert_eq!(after[ENT]["department"], "Commercial");
    assert_eq!(after[ENT]["manager"]["value"], id(&boss2));
    assert_eq!(after[IRONCLAD]["departmentHead"], w.mail("boss2"));
    assert_eq!(after["name"], before["name"], "unchanged attributes kept");
    w.assert_converged();
}

/// `apply --only`: a targeted run writes for the people named (by DN here, by email below)
/// and for nobody else; a name that matches nobody is an error before anything is written.
#[test]
fn a_targeted_apply_writes_only_for_the_people_named_and_refuses_a_name_matching_nobody() {
    let w = World::new("only", slapd::small(), &org(), &[], "");
    w.apply_and_converge();
    for uid in ["ann", "bob"] {
        w.modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: title\ntitle: Partner\n",
            w.dn(uid)
        ));
    }
    w.clear_log();
    let (code, out) = w.apply(&["--only", "nobody@nowhere.test", "--only", &w.dn("ann")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--only nobody@nowhere.test: no one in the plan has this"),
        "{out}"
    );
    assert_eq!(w.writes(), vec![], "nothing written");

    let (code, out) = w.apply(&["--only", &w.dn("ann").to_uppercase()]);
    assert_eq!(code, 0, "{out}");
    let ann = w.user(&w.mail("ann")).unwrap();
    let writes = w.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].path.ends_with(&format!("/Users/{}", id(&ann))));
    assert_eq!(ann["title"], "Partner");
    assert_ne!(w.user(&w.mail("bob")).unwrap()["title"], "Partner");

    w.clear_log();
    let (code, out) = w.apply(&["--only", &w.mail("bob")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(w.writes().len(), 1);
    assert_eq!(w.user(&w.mail("bob")).unwrap()["title"], "Partner");
    w.assert_converged();
}

#[test]
fn drift_made_in_ironclad_is_found_after_a_run_recorded_the_users_as_converged() {
    let w = World::new("drift", slapd::small(), &org(), &[], "");
    w.apply_and_converge();
    // Fingerprints are recorded only for users last modified at least 2 s before the run.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let (code, _) = w.plan();
    assert_eq!(code, 0);
    let store = ironbridge::store::Store::open(&w.dir.path().join("ironbridge-state.db")).unwrap();
    let known = store.converged().unwrap();
    assert!(
        known.contains_key(&w.entry_uuid("ann")),
        "ann recorded as converged: {known:?}"
    );
    drop(store);
    // An administrator edits ann in Ironclad; nothing changes in the directory.
    let ann = w.user(&w.mail("ann")).unwrap();
    w.set_title_in_ironclad(&id(&ann), "Paralegal");
    let (code, plan) = w.plan();
    assert_eq!(code, 2, "the drift is planned: {plan:#}");
    let line = line(&plan, &w.mail("ann"));
    assert_eq!(line["action"], "update", "{line:#}");
    assert_eq!(
        changes(line)["title"],
        (json!("Paralegal"), json!("Counsel"))
    );
    w.apply_and_converge();
    assert_eq!(w.user(&w.mail("ann")).unwrap()["title"], "Counsel");
}

#[test]
fn an_email_change_renames_the_same_ironclad_user() {
    let w = World::new("rename", slapd::small(), &org(), &[], "");
    w.apply_and_converge();
    let before = w.user(&w.mail("bob")).unwrap();
    let count = w.users().len();
    let new_mail = format!("robert@{}.test", w.name);
    w.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: mail\nmail: {new_mail}\n",
        w.dn("bob")
    ));
    let (code, plan) = w.plan();
    assert_eq!(code, 2);
    let l = line(&plan, &new_mail);
    assert_eq!(l["action"], "rename", "{l:#}");
    assert_eq!(l["from"], w.mail("bob"));
    assert_eq!(l["to"], new_mail);
    assert_eq!(l["ironclad_id"], before["id"]);
    let ch = changes(l);
    assert_eq!(
        ch["userName"],
        (json!(w.mail("bob")), json!(new_mail.clone()))
    );
    assert!(ch.contains_key("emails"), "{ch:?}");
    assert_eq!(
        ch.keys().cloned().collect::<BTreeSet<_>>(),
        ["emails", "userName"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    w.clear_log();
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        w.writes().iter().all(|r| r.method != "POST"),
        "no create for a rename"
    );
    let after = w.user(&new_mail).expect("renamed");
    assert_eq!(after["id"], before["id"], "same Ironclad id");
    assert_eq!(after["externalId"], before["externalId"]);
    assert_eq!(after["emails"][0]["value"], new_mail);
    assert!(w.user(&w.mail("bob")).is_none());
    assert_eq!(w.users().len(), count);
    // Still in the Legal group (membership is by id).
    assert!(w.group("Legal").unwrap()["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["value"] == before["id"]));
    w.assert_converged();
}

/// Locks an entry the way the ppolicy overlay does (the mapping's `disabled` rule).
fn lock(w: &World, uid: &str) {
    w.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n",
        w.dn(uid)
    ));
}

fn unlock(w: &World, uid: &str) {
    w.modify(&format!(
        "dn: {}\nchangetype: modify\ndelete: pwdAccountLockedTime\n",
        w.dn(uid)
    ));
}

/// `apply --yes` started in the background, its output captured.
fn spawn_apply(w: &World) -> std::process::Child {
    Command::new(bin("ironbridge"))
        .args(["--log", "warn", "apply", "--yes", "--config"])
        .arg(&w.cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends SIGTERM and waits for the process: its output and how long it took to end.
fn terminate(child: std::process::Child) -> (Output, Duration) {
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    (out, signalled.elapsed())
}

/// A new person in the directory, in scope: an associate reporting to boss2.
fn add_joiner(w: &World, uid: &'static str) {
    w.slapd.admin(
        "ldapadd",
        &person_ldif(&w.name, &p(uid, "Associate", Some("boss2")), 50),
    );
    set_scope(w, uid, true);
}

fn set_scope(w: &World, uid: &str, member: bool) {
    w.modify(&format!(
        "dn: {}\nchangetype: modify\n{}: member\nmember: {}\n",
        w.group_dn("ironclad-users"),
        if member { "add" } else { "delete" },
        w.dn(uid)
    ));
}

#[test]
fn leavers_by_disable_deletion_and_leaving_the_scope_group_are_removed() {
    let w = World::new(
        "leaver",
        slapd::small(),
        &org(),
        &[],
        "[policy]\nmax_removal_percent = 50\n",
    );
    w.apply_and_converge();
    let ids: BTreeMap<&str, String> = ["ann", "bob", "dana", "carl"]
        .iter()
        .map(|u| (*u, id(&w.user(&w.mail(u)).unwrap())))
        .collect();
    lock(&w, "ann");
    w.slapd.admin_delete(&[&w.dn("dana")]);
    set_scope(&w, "carl", false);

    let (code, plan) = w.plan();
    assert_eq!(code, 2);
    let expect = [
        ("ann", "disabled in the source"),
        ("dana", "no longer in the source"),
        ("carl", "out of scope"),
    ];
    for (uid, why) in expect {
        let l = line(&plan, &w.mail(uid));
        assert_eq!(l["action"], "remove", "{l:#}");
        assert_eq!(l["how"], "deactivate", "the mapping's [removal] action");
        assert_eq!(l["ironclad_id"], ids[uid]);
        assert!(l["reason"].as_str().unwrap().contains(why), "{uid}: {l:#}");
    }
    assert_eq!(lines_with_action(&plan, "remove").len(), 3);
    assert_eq!(actions(&plan)[&w.mail("bob")], "noop");
    // A leaver deleted from the directory can still be previewed: by their Ironclad userName.
    let out = w.ironbridge(&["preview", "--user", &w.mail("dana")]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "a removal is pending: {shown}");
    assert!(shown.contains("not in the source"), "{shown}");
    assert!(
        shown.contains("remove") && shown.contains("no longer in the source"),
        "{shown}"
    );

    w.clear_log();
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 0, "{out}");
    let writes = w.writes();
    assert_eq!(writes.len(), 3, "{writes:?}");
    for uid in ["ann", "dana", "carl"] {
        assert!(w.user(&w.mail(uid)).is_none(), "{uid} still in Ironclad");
        assert!(
            writes
                .iter()
                .any(|r| r.path.ends_with(&format!("/Users/{}", ids[uid]))
                    && matches!(r.method.as_str(), "PUT" | "PATCH")),
            "{uid}: {writes:?}"
        );
    }
    assert_eq!(id(&w.user(&w.mail("bob")).unwrap()), ids["bob"]);
    // Ann left the Legal group with her account; nobody else did.
    let legal: BTreeSet<String> = w.group("Legal").unwrap()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect();
    assert!(!legal.contains(&ids["ann"]) && legal.contains(&ids["bob"]));
    w.assert_converged();
}

#[test]
fn a_rehire_is_created_again_with_the_same_external_id() {
    let w = World::new("rehire", slapd::small(), &org(), &[], "");
    w.apply_and_converge();
    let first = w.user(&w.mail("ann")).unwrap();
    let carl_first = w.user(&w.mail("carl")).unwrap();
    lock(&w, "ann");
    set_scope(&w, "carl", false);
    let (code, out) = w.apply(&["--allow-removals", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(w.user(&w.mail("ann")).is_none());
    assert!(w.user(&w.mail("carl")).is_none());
    w.assert_converged();

    // Back: unlocked, and back in the scope group.
    unlock(&w, "ann");
    set_scope(&w, "carl", true);
    let (code, plan) = w.plan();
    assert_eq!(code, 2);
    for (uid, was) in [("ann", &first), ("carl", &carl_first)] {
        let l = line(&plan, &w.mail(uid));
        assert_eq!(l["action"], "create", "{l:#}");
        assert_eq!(l["user"]["externalId"], was["externalId"]);
    }
    let legal = &plan["groups"][0];
    assert_eq!(legal["action"], "members", "{legal:#}");
    assert_eq!(legal["add"], json!([w.entry_uuid("ann")]));
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 0, "{out}");
    let again = w.user(&w.mail("ann")).expect("ann rehired");
    assert_ne!(again["id"], first["id"], "Ironclad removed the old account");
    assert_eq!(again["externalId"], first["externalId"]);
    assert_eq!(again["title"], "Counsel");
    let named: Vec<Value> = w
        .users()
        .into_iter()
        .filter(|u| u["externalId"] == first["externalId"])
        .collect();
    assert_eq!(named.len(), 1, "{named:#?}");
    assert!(w.user(&w.mail("carl")).is_some());
    assert!(w.group("Legal").unwrap()["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["value"] == again["id"]));
    w.assert_converged();
}

#[test]
fn unmanaged_and_protected_users_are_never_touched() {
    let protected_user = "breakglass-admin@example.com";
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    let mut people = org();
    people.push(Person {
        given: "Break",
        ..p("breakglass", "Emergency access", None)
    });
    people.push(p("clash", "Counsel", Some("boss1")));
    let tenant = "untouched";
    std::fs::write(
        &seed,
        serde_json::to_vec(&json!({"users": [
            {"id": "u-contractor", "userName": "contractor@partner.test",
             "name": {"givenName": "Con", "familyName": "Tractor"}, "title": "Outside counsel",
             "emails": [{"value": "contractor@partner.test", "primary": true}]},
            {"id": "u-breakglass", "userName": protected_user,
             "name": {"givenName": "Break", "familyName": "Glass"}, "title": "Set by hand",
             "emails": [{"value": protected_user, "primary": true}]},
            {"id": "u-clash", "userName": format!("clash@{tenant}.test"), "externalId": "hr-system-42",
             "name": {"givenName": "Other", "familyName": "System"}, "title": "Managed elsewhere",
             "emails": [{"value": format!("clash@{tenant}.test"), "primary": true}]}
        ]}))
        .unwrap(),
    )
    .unwrap();
    let w = World::new(
        tenant,
        slapd::small(),
        &people,
        &["--seed", seed.to_str().unwrap()],
        "",
    );
    // The protected person's directory entry carries the protected address.
    w.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: mail\nmail: {protected_user}\n",
        w.dn("breakglass")
    ));
    let untouched = |w: &World| -> Vec<Value> {
        let mut v: Vec<Value> = w
            .users()
            .into_iter()
            .filter(|u| {
                matches!(
                    u["id"].as_str(),
                    Some("u-contractor" | "u-breakglass" | "u-clash")
                ) || u["userName"] == ADMIN
            })
            .collect();
        v.sort_by_key(|u| u["id"].as_str().unwrap().to_string());
        v
    };
    let before = untouched(&w);
    assert_eq!(before.len(), 4);

    let (code, plan) = w.plan();
    assert_eq!(code, 2, "a conflict is pending");
    let bg = line(&plan, protected_user);
    assert_eq!(bg["action"], "skip", "{bg:#}");
    assert_eq!(bg["reason"]["kind"], "protected");
    let clash = line(&plan, &w.mail("clash"));
    assert_eq!(clash["action"], "conflict", "{clash:#}");
    assert!(
        clash["reason"].as_str().unwrap().contains("hr-system-42"),
        "{clash:#}"
    );
    for u in users_of(&plan) {
        let id = u["ironclad_id"].as_str().unwrap_or_default();
        assert!(
            !["u-contractor", "u-breakglass", "u-clash"].contains(&id)
                || matches!(u["action"].as_str(), Some("skip" | "conflict")),
            "{u:#}"
        );
    }
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 2, "the conflict is reported: {out}");
    assert!(out.contains("conflict"), "{out}");
    assert_eq!(
        untouched(&w),
        before,
        "an unmanaged or protected user changed"
    );
    let writes = w.writes();
    assert!(
        writes.iter().all(|r| !r.path.contains("u-")),
        "a write touched an unmanaged user: {writes:?}"
    );
    assert_eq!(writes.iter().filter(|r| r.method == "POST").count(), 8);
    // An account made by hand is found by preview and said to be left alone.
    let out = w.ironbridge(&["preview", "--user", "contractor@partner.test"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("u-contractor") && shown.contains("does not manage this user"),
        "{shown}"
    );

    // Everyone leaves the directory subtree's scope group: only managed users are removed.
    w.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: member\nmember: {}\n",
        w.group_dn("ironclad-users"),
        ou(tenant)
    ));
    let (code, plan) = w.plan();
    assert_eq!(code, 2);
    let held: Vec<&Value> = users_of(&plan)
        .iter()
        .filter(|u| u["reason"]["kind"] == "held")
        .collect();
    assert_eq!(held.len(), 7, "{plan:#}");
    assert!(
        held.iter()
            .all(|u| !u["ironclad_id"].as_str().unwrap().starts_with("u-")),
        "only managed users are removal candidates: {held:#?}"
    );
    let (code, out) = w.apply(&["--allow-removals", "7"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        untouched(&w),
        before,
        "an unmanaged or protected user changed"
    );
    assert_eq!(
        w.users().len(),
        4,
        "only the unmanaged and protected are left"
    );
}

#[test]
fn a_source_outage_removes_nobody() {
    // A private slapd this test can stop.
    let own: &'static Slapd = Box::leak(Box::new(slapd::start(slapd::Fixture::default())));
    let w = World::new("outage", own, &org(), &[], "");
    w.apply_and_converge();
    let before = w.users();
    assert_eq!(before.len(), 8);

    // A wrong bind password: the read fails, nothing is planned, nothing written.
    std::fs::write(w.dir.path().join("ldap-password"), "not-the-password").unwrap();
    w.clear_log();
    let (code, plan) = w.plan();
    assert_eq!(code, 1, "{plan:#}");
    assert_eq!(plan["source_complete"], false);
    assert_eq!(users_of(&plan).len(), 0, "{plan:#}");
    assert!(
        plan["notes"][0]
            .as_str()
            .unwrap()
            .contains("source read failed"),
        "{plan:#}"
    );
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 1, "a failed source is an error: {out}");
    assert!(!out.contains("not-the-password"), "{out}");
    assert_eq!(w.writes(), vec![]);
    assert_eq!(w.users(), before);

    // The groups' branch is gone (renamed, or the reader lost access): without the scope
    // group everyone would look out of scope, so the read must fail instead.
    std::fs::write(w.dir.path().join("ldap-password"), READER_PASSWORD).unwrap();
    let good = std::fs::read_to_string(&w.cfg).unwrap();
    std::fs::write(
        &w.cfg,
        good.replace("base_dn = \"ou=groups,", "base_dn = \"ou=renamed-groups,"),
    )
    .unwrap();
    let (code, plan) = w.plan();
    assert_eq!(code, 1, "{plan:#}");
    assert_eq!(plan["source_complete"], false);
    assert!(lines_with_action(&plan, "remove").is_empty(), "{plan:#}");
    assert!(
        plan["notes"][0]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("ou=renamed-groups"),
        "the missing base DN is named: {plan:#}"
    );
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(w.writes(), vec![], "{out}");
    std::fs::write(&w.cfg, good).unwrap();

    // The directory stopped.
    own.stop();
    let (code, plan) = w.plan();
    assert_eq!(code, 1, "{plan:#}");
    assert_eq!(plan["source_complete"], false);
    assert!(lines_with_action(&plan, "remove").is_empty());
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(w.writes(), vec![], "{out}");
    assert_eq!(w.users(), before);
}

#[test]
fn a_source_shrink_over_the_threshold_holds_removals_and_applies_the_rest() {
    let mut people = org();
    let extra: Vec<&'static str> = (1..=13)
        .map(|n| &*Box::leak(format!("staff{n:02}").into_boxed_str()))
        .collect();
    for uid in &extra {
        people.push(p(uid, "Associate", Some("boss2")));
    }
    // 20 managed users; 3 leaving is 15%, over the default 10%.
    let w = World::new("shrink", slapd::small(), &people, &[], "");
    w.apply_and_converge();
    assert_eq!(w.users().len(), 21);
    let gone = ["staff01", "staff02", "staff03"];
    let dns: Vec<String> = gone.iter().map(|u| w.dn(u)).collect();
    w.slapd
        .admin_delete(&dns.iter().map(String::as_str).collect::<Vec<_>>());
    w.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: title\ntitle: Senior Associate\n",
        w.dn("staff10")
    ));
    w.slapd.admin(
        "ldapadd",
        &person_ldif("shrink", &p("newbie", "Associate", Some("boss2")), 50),
    );
    set_scope(&w, "newbie", true);

    let (code, plan) = w.plan();
    assert_eq!(code, 2);
    for uid in gone {
        let l = line(&plan, &w.mail(uid));
        assert_eq!(l["action"], "skip", "{l:#}");
        assert_eq!(l["reason"]["kind"], "held");
        assert!(
            l["reason"]["rule"]
                .as_str()
                .unwrap()
                .contains("--allow-removals 3"),
            "{l:#}"
        );
    }
    assert!(plan["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().starts_with("removals held")));
    assert_eq!(line(&plan, &w.mail("staff10"))["action"], "update");
    assert_eq!(line(&plan, &w.mail("newbie"))["action"], "create");

    let (code, out) = w.apply(&[]);
    assert_eq!(code, 2, "held removals: exit 2\n{out}");
    for uid in gone {
        assert!(w.user(&w.mail(uid)).is_some(), "{uid} removed despite hold");
    }
    assert_eq!(
        w.user(&w.mail("staff10")).unwrap()["title"],
        "Senior Associate"
    );
    assert!(w.user(&w.mail("newbie")).is_some());

    // Still held on the next run, and nothing else to do.
    w.clear_log();
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(w.writes(), vec![]);

    // Allowed explicitly: one removal too few still holds them all.
    let (code, out) = w.apply(&["--allow-removals", "2"]);
    assert_eq!(code, 2, "{out}");
    assert!(w.user(&w.mail("staff01")).is_some());
    // A reviewed saved plan carries the held removals out.
    let saved = w.dir.path().join("reviewed.json");
    let out = w.ironbridge(&["plan", "--out", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    w.clear_log();
    let (code, out) = w.apply(&["--plan", saved.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // The output tells what this apply did: removals, no holds, no invitation to release them.
    assert!(out.contains("remove: 3"), "{out}");
    assert!(
        !out.contains("held: ") && !out.contains("Note: removals held"),
        "{out}"
    );
    assert!(
        out.contains("the 3 removals it held were carried out"),
        "{out}"
    );
    for uid in gone {
        assert!(w.user(&w.mail(uid)).is_none(), "{uid}");
    }
    assert_eq!(w.writes().len(), 3, "only the three removals");
    w.assert_converged();
}

/// A larger organisation, so that one leaver stays under the removal threshold.
fn org_with_staff(n: usize) -> Vec<Person> {
    let mut people = org();
    for i in 1..=n {
        let uid: &'static str = Box::leak(format!("staff{i:02}").into_boxed_str());
        people.push(p(uid, "Associate", Some("boss2")));
    }
    people
}

#[test]
fn a_saved_plan_is_checked_against_the_configuration_as_it_is_when_applied() {
    let w = World::new("savednow", slapd::small(), &org_with_staff(13), &[], "");
    w.apply_and_converge();
    // A leaver, and a mover whose new address (so userName) someone takes before the apply.
    w.slapd.admin_delete(&[w.dn("staff01").as_str()]);
    let new_mail = "staff02-new@savednow.test";
    w.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: mail\nmail: {new_mail}\n",
        w.dn("staff02")
    ));
    let saved = w.dir.path().join("reviewed.json");
    let out = w.ironbridge(&["plan", "--out", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let plan = &plan["plan"];
    assert_eq!(line(plan, &w.mail("staff01"))["action"], "remove");
    assert_eq!(line(plan, new_mail)["action"], "rename");
    let leaver = w.user(&w.mail("staff01")).unwrap();

    // After the review: the leaver is protected, and an unmanaged account takes the new name.
    let mapping = w.dir.path().join("mapping.toml");
    let original = std::fs::read_to_string(&mapping).unwrap();
    let protect = format!(
        "protected_users = [\"breakglass-admin@example.com\", \"{}\"]",
        w.mail("staff01")
    );
    std::fs::write(
        &mapping,
        original.replace(
            "protected_users = [\"breakglass-admin@example.com\"]",
            &protect,
        ),
    )
    .unwrap();
    let status = w.scim(
        reqwest::Method::POST,
        "/Users",
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": new_mail,
            "name": {"givenName": "Someone", "familyName": "Else"},
            "emails": [{"value": new_mail, "primary": true}]
        }),
    );
    assert!(status.is_success(), "{status}");
    w.clear_log();
    let (code, out) = w.apply(&["--plan", saved.to_str().unwrap()]);
    assert_eq!(code, 2, "refusals: exit 2\n{out}");
    assert!(out.contains("is protected now"), "{out}");
    assert!(
        out.contains(&format!(
            "the userName {new_mail} was taken by another Ironclad user since the plan was made"
        )),
        "{out}"
    );
    assert_eq!(w.writes(), vec![], "nothing written");
    assert_eq!(w.user(&w.mail("staff01")).unwrap()["id"], leaver["id"]);
    // The audit log has each refusal, with the action the plan had.
    let audit = audit_lines(&w.dir.path().join("ironbridge-audit.jsonl"));
    let refusal = |name: &str| {
        audit
            .iter()
            .rev()
            .find(|l| l["user_name"] == name && l["phase"] == "refused")
            .cloned()
            .unwrap_or_else(|| panic!("no refused line for {name}: {audit:#?}"))
    };
    let r = refusal(&w.mail("staff01"));
    assert_eq!(r["action"], "remove", "{r:#}");
    assert!(
        r["error"].as_str().unwrap().contains("is protected now"),
        "{r:#}"
    );
    assert!(
        audit
            .iter()
            .filter(|l| l["run_id"] == r["run_id"] && l["user_name"] == w.mail("staff01"))
            .all(|l| l["phase"] == "refused"),
        "nothing was sent for a refused line: {audit:#?}"
    );
    assert_eq!(refusal(new_mail)["action"], "rename");

    // Protection lifted, but the mapping's removal action changed: refused too.
    let refused_with = |action: &str| -> String {
        let changed = format!("action = \"{action}\"");
        std::fs::write(
            &mapping,
            original.replace("action = \"deactivate\"", &changed),
        )
        .unwrap();
        let (code, out) = w.apply(&["--plan", saved.to_str().unwrap()]);
        assert_eq!(code, 2, "{out}");
        out
    };
    let out = refused_with("delete");
    let why = "the removal setting changed since the plan was made (plan: deactivate, now: delete)";
    assert!(out.contains(why), "{out}");
    let out = refused_with("keep");
    assert!(out.contains("removing users is turned off now"), "{out}");
    assert_eq!(w.writes(), vec![], "nothing written");

    // The settings the plan was reviewed under: the removal goes through.
    std::fs::write(&mapping, &original).unwrap();
    let (code, out) = w.apply(&["--plan", saved.to_str().unwrap()]);
    assert_eq!(code, 2, "the rename is still refused\n{out}");
    assert!(w.user(&w.mail("staff01")).is_none(), "{out}");
}

#[test]
fn applied_saved_plans_count_for_grace_periods_once() {
    let w = World::new(
        "savedgrace",
        slapd::small(),
        &org_with_staff(13),
        &[],
        "[policy]\ngrace_runs = 2\n",
    );
    w.apply_and_converge();
    let leaver = w.entry_uuid("staff01");
    w.slapd.admin_delete(&[w.dn("staff01").as_str()]);
    let missed = || -> Option<u32> {
        let store =
            ironbridge::store::Store::open(&w.dir.path().join("ironbridge-state.db")).unwrap();
        store.grace().unwrap().get(&leaver).map(|g| g.missed_runs)
    };
    let save = |name: &str| -> std::path::PathBuf {
        let saved = w.dir.path().join(name);
        let out = w.ironbridge(&["plan", "--out", saved.to_str().unwrap()]);
        assert!(out.status.code() == Some(0), "{}", text(&out));
        saved
    };
    // A dry run counts for nothing; the first reviewed run finds the leaver missing once.
    let p1 = save("p1.json");
    assert_eq!(missed(), None, "a dry run is not a run for grace");
    let (code, out) = w.apply(&["--plan", p1.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(missed(), Some(1), "{out}");
    // The same plan applied again does not count again, and says so.
    let (code, out) = w.apply(&["--plan", p1.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(missed(), Some(1), "{out}");
    assert!(out.contains("grace periods were not advanced"), "{out}");
    // The second reviewed run finds them missing again: removed.
    let (_, plan) = w.plan();
    assert_eq!(
        line(&plan, &w.mail("staff01"))["action"],
        "remove",
        "{plan:#}"
    );
    let p2 = w.dir.path().join("p2.json");
    let out = w.ironbridge(&["plan", "--out", p2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let (code, out) = w.apply(&["--plan", p2.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(w.user(&w.mail("staff01")).is_none(), "{out}");
}

#[test]
fn a_user_failing_runs_in_a_row_is_quarantined_with_the_reason_and_retried_on_request() {
    let w = World::new("quarantine", slapd::small(), &org(), &[], "");
    w.apply_and_converge();
    let title = |uid: &str, t: &str| {
        w.modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: title\ntitle: {t}\n",
            w.dn(uid)
        ))
    };
    let faults = |on: bool| {
        let f = if on {
            json!({"error_rate": 1.0, "error_status": 400, "methods": ["PUT", "PATCH"]})
        } else {
            json!({})
        };
        w.rt.block_on(set_faults(&w.sim.base_url, f));
    };
    let store =
        || ironbridge::store::Store::open(&w.dir.path().join("ironbridge-state.db")).unwrap();
    let (ann, bob) = (w.entry_uuid("ann"), w.entry_uuid("bob"));
    title("ann", "Senior Counsel");
    faults(true);
    for run in 1..=3 {
        if run == 3 {
            title("bob", "Paralegal II");
        }
        let (code, out) = w.apply(&[]);
        assert_eq!(code, 1, "run {run}: a failed write exits 1\n{out}");
        assert_eq!(store().quarantine().unwrap()[&ann].failures, run);
    }
    assert_eq!(store().quarantine().unwrap()[&bob].failures, 1);
    // bob's title is set by hand in Ironclad: the next run finds him as wanted, and his
    // failures no longer count.
    faults(false);
    w.set_title_in_ironclad(&id(&w.user(&w.mail("bob")).unwrap()), "Paralegal II");
    // ann is skipped now, with the reason and her name; the exit code says someone is held.
    w.clear_log();
    let (code, plan) = w.plan();
    assert_eq!(code, 2, "{plan:#}");
    let l = line(&plan, &w.mail("ann"));
    assert_eq!(l["reason"]["kind"], "quarantined", "{l:#}");
    let why = l["reason"]["why"].as_str().unwrap();
    assert!(why.starts_with("3 failed runs in a row; last: "), "{why}");
    assert!(why.contains("400"), "{why}");
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("quarantined (3 failed runs in a row"), "{out}");
    assert_eq!(w.writes(), vec![], "nothing sent for ann");
    assert!(
        !store().quarantine().unwrap().contains_key(&bob),
        "bob found as wanted"
    );
    // Named on the command line, she is tried at once, and her record goes with the success.
    let (code, out) = w.apply(&["--only", &w.mail("ann")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(w.user(&w.mail("ann")).unwrap()["title"], "Senior Counsel");
    assert!(store().quarantine().unwrap().is_empty());
    w.assert_converged();
}

#[test]
fn a_create_whose_answer_is_lost_is_found_by_lookup_and_audited_as_such() {
    let w = World::new("lostanswer", slapd::small(), &org(), &[], "");
    w.apply_and_converge();
    add_joiner(&w, "newbie");
    w.rt.block_on(set_faults(
        &w.sim.base_url,
        json!({"drop_rate": 1.0, "drop_after_apply": true, "methods": ["POST"]}),
    ));
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 0, "{out}");
    w.rt.block_on(set_faults(&w.sim.base_url, json!({})));
    let found: Vec<Value> = w
        .users()
        .into_iter()
        .filter(|u| u["userName"] == w.mail("newbie"))
        .collect();
    assert_eq!(found.len(), 1, "created once: {found:#?}");
    let audit = audit_lines(&w.dir.path().join("ironbridge-audit.jsonl"));
    let outcome = audit
        .iter()
        .find(|l| l["user_name"] == w.mail("newbie") && l["phase"] == "outcome")
        .unwrap_or_else(|| panic!("{audit:#?}"));
    assert!(
        outcome["http_status"].is_null(),
        "no status was answered: {outcome:#}"
    );
    assert!(
        outcome["after"]["note"]
            .as_str()
            .unwrap()
            .contains("found by lookup"),
        "{outcome:#}"
    );
    w.assert_converged();
}

#[test]
fn a_create_left_unanswered_by_a_killed_run_is_settled_and_its_leaver_removed() {
    let w = World::new(
        "orphan",
        slapd::small(),
        &org(),
        &[],
        "[policy]\nmax_removal_percent = 50\n",
    );
    w.apply_and_converge();
    add_joiner(&w, "orphan1");
    // The simulator applies the POST at once and answers 5 s later; the run is killed between.
    w.rt.block_on(set_faults(
        &w.sim.base_url,
        json!({"latency_after_ms": 5000, "methods": ["POST"]}),
    ));
    let mut child = spawn_apply(&w);
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.user(&w.mail("orphan1")).is_none() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        assert!(Instant::now() < deadline, "the create never landed");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: the create's answer is never read
    child.wait().unwrap();
    w.rt.block_on(set_faults(&w.sim.base_url, json!({})));
    let orphan_id = id(&w.user(&w.mail("orphan1")).unwrap());

    // The person leaves before any other run.
    w.slapd.admin_delete(&[&w.dn("orphan1")]);
    let (code, plan) = w.plan();
    assert_eq!(code, 2, "{plan:#}");
    let line = line(&plan, &w.mail("orphan1"));
    assert_eq!(line["action"], "remove", "{line:#}");
    assert_eq!(line["ironclad_id"], orphan_id.as_str());
    assert!(
        plan["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains(&w.mail("orphan1"))),
        "{:#}",
        plan["notes"]
    );
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        w.user(&w.mail("orphan1")).is_none(),
        "the leaver is removed"
    );
    // The audit has the create's outcome, from the run that settled it.
    let audit = audit_lines(&w.dir.path().join("ironbridge-audit.jsonl"));
    let creates: Vec<&Value> = audit
        .iter()
        .filter(|l| l["user_name"] == w.mail("orphan1") && l["action"] == "create")
        .collect();
    assert_eq!(
        creates
            .iter()
            .map(|l| l["phase"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["intent", "outcome"],
        "{creates:#?}"
    );
    assert_eq!(creates[1]["ironclad_id"], orphan_id.as_str());
    assert!(creates[1]["after"]["note"]
        .as_str()
        .unwrap()
        .contains("found the user in Ironclad"));
    w.assert_converged();

    // The state store is lost, and a person leaves: nothing links them any more, so they are
    // not removed, and the plan says why instead of reporting nothing.
    for f in [
        "ironbridge-state.db",
        "ironbridge-state.db-wal",
        "ironbridge-state.db-shm",
    ] {
        let _ = std::fs::remove_file(w.dir.path().join(f));
    }
    w.slapd.admin_delete(&[&w.dn("dana")]);
    let (code, plan) = w.plan();
    assert_eq!(code, 2, "someone must look: {plan:#}");
    assert_eq!(plan["unlinked_with_external_id"], 1);
    assert!(
        plan["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["action"] != "remove"),
        "{plan:#}"
    );
    let notes = plan["notes"].to_string();
    assert!(
        notes.contains("links nobody yet") && notes.contains(&w.mail("dana")),
        "{notes}"
    );
}

#[test]
fn sigterm_stops_an_apply_after_the_writes_in_flight_and_the_rest_wait_for_the_next_run() {
    let w = World::new("sigterm", slapd::small(), &org_with_staff(20), &[], "");
    w.apply_and_converge();
    let mut ldif = String::new();
    for i in 1..=20 {
        ldif.push_str(&format!(
            "dn: {}\nchangetype: modify\nreplace: title\ntitle: Partner\n\n",
            w.dn(&format!("staff{i:02}"))
        ));
    }
    w.modify(&ldif);
    // Four requests a minute per bucket: a few writes go at once, and the rest wait for their
    // bucket, most with their intent already recorded, when the stop comes.
    let original = std::fs::read_to_string(&w.cfg).unwrap();
    let mut cfg = original.clone();
    cfg.push_str(
        "[ironclad.rate_limits]\nusers_read_write = 4\nusers_patch_delete = 4\nwindow_secs = 60\n",
    );
    std::fs::write(&w.cfg, cfg).unwrap();
    w.clear_log();
    let child = spawn_apply(&w);
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.writes().is_empty() {
        assert!(Instant::now() < deadline, "no write began");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (out, took) = terminate(child);
    // Not a minute waiting for the bucket to send what is left.
    assert!(took < Duration::from_secs(10), "{took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let sent = w.writes().len();
    assert!(sent < 20, "the stop held back some writes: {sent} sent");
    // Every intent has its outcome (sent, or given up while it waited for its bucket); the
    // writes not begun are refused; none is left dangling.
    let audit = audit_lines(&w.dir.path().join("ironbridge-audit.jsonl"));
    let run = audit.last().unwrap()["run_id"].clone();
    let this: Vec<&Value> = audit.iter().filter(|l| l["run_id"] == run).collect();
    let count = |phase: &str| this.iter().filter(|l| l["phase"] == phase).count();
    let given_up = this
        .iter()
        .filter(|l| l["phase"] == "outcome")
        .filter(|l| {
            l["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("not sent"))
        })
        .count();
    assert_eq!(count("intent"), count("outcome"), "{this:#?}");
    assert!(
        given_up > 0,
        "some writes were waiting for their bucket: {this:#?}"
    );
    assert_eq!(count("outcome") - given_up, sent, "{this:#?}");
    assert_eq!(count("intent") + count("refused"), 20, "{this:#?}");
    {
        let store =
            ironbridge::store::Store::open(&w.dir.path().join("ironbridge-state.db")).unwrap();
        let last = store.runs(1).unwrap().pop().unwrap();
        assert_eq!(last.outcome, "interrupted", "{last:?}");
    }
    // The next run sends the rest.
    std::fs::write(&w.cfg, original).unwrap();
    w.apply_and_converge();
    assert_eq!(
        w.users().iter().filter(|u| u["title"] == "Partner").count(),
        20
    );
}

#[test]
fn sigterm_while_reading_ends_the_apply_at_once_with_nothing_written() {
    let w = World::new("sigread", slapd::small(), &org(), &[], "");
    // Every read of Ironclad takes 5 s to be answered.
    w.rt.block_on(set_faults(
        &w.sim.base_url,
        json!({"latency_ms": 5000, "methods": ["GET"]}),
    ));
    let child = spawn_apply(&w);
    std::thread::sleep(Duration::from_millis(700));
    let (out, took) = terminate(child);
    assert!(took < Duration::from_secs(3), "{took:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    w.rt.block_on(set_faults(&w.sim.base_url, json!({})));
    assert_eq!(w.writes().len(), 0);
    let store = ironbridge::store::Store::open(&w.dir.path().join("ironbridge-state.db")).unwrap();
    assert_eq!(store.runs(1).unwrap()[0].outcome, "interrupted");
}

#[test]
fn least_privilege_skips_creates_naming_the_scope_and_applies_updates_and_removals() {
    let lp = crate::support::sim::LEAST_PRIVILEGE.join(",");
    let w = World::new(
        "leastpriv",
        slapd::small(),
        &org(),
        &["--token", &format!("{LP_TOKEN}:{lp}")],
        "[policy]\nmax_removal_percent = 50\n",
    );
    w.apply_and_converge();
    // From now on the token has no createUsers and no group write scope.
    std::fs::write(w.dir.path().join("token"), LP_TOKEN).unwrap();
    let leaver = id(&w.user(&w.mail("dana")).unwrap());
    w.slapd.admin(
        "ldapadd",
        &person_ldif("leastpriv", &p("newbie", "Counsel", Some("boss1")), 50),
    );
    set_scope(&w, "newbie", true);
    w.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: title\ntitle: Senior Counsel\n\n\
         dn: {}\nchangetype: modify\nadd: member\nmember: {}\nmember: {}\n",
        w.dn("ann"),
        w.group_dn("ironclad-legal"),
        w.dn("carl"),
        w.dn("newbie")
    ));
    lock(&w, "dana");

    let (code, plan) = w.plan();
    assert_eq!(code, 2);
    let newbie = line(&plan, &w.mail("newbie"));
    assert_eq!(newbie["action"], "skip", "{newbie:#}");
    assert_eq!(
        newbie["reason"],
        json!({"kind": "missing_scope", "scope": CREATE_USERS})
    );
    assert_eq!(line(&plan, &w.mail("ann"))["action"], "update");
    assert_eq!(line(&plan, &w.mail("dana"))["action"], "remove");
    // The joiner is shown as a member waiting for their account.
    let pending: Vec<&Value> = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["pending"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(pending, vec![&newbie["source_id"]], "{:#}", plan["groups"]);
    for g in plan["groups"].as_array().unwrap() {
        assert!(
            !matches!(
                g["action"].as_str(),
                Some("create" | "members" | "rename" | "delete")
            ),
            "a group write without the group scopes: {g:#}"
        );
    }
    w.clear_log();
    let (code, out) = w.apply(&[]);
    assert_eq!(
        code, 2,
        "a create the scopes do not allow is held back: exit 2\n{out}"
    );
    let writes = w.writes();
    assert!(
        writes.iter().all(|r| r.method != "POST" && r.status != 403),
        "{writes:?}"
    );
    assert_eq!(writes.len(), 2, "one update, one removal: {writes:?}");
    assert!(w.user(&w.mail("newbie")).is_none());
    assert_eq!(w.user(&w.mail("ann")).unwrap()["title"], "Senior Counsel");
    assert!(w.user(&w.mail("dana")).is_none());
    assert!(writes
        .iter()
        .any(|r| r.path.ends_with(&format!("/Users/{leaver}"))));
}

/// One line of the JSON-lines audit log.
fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn a_run_killed_at_a_random_write_converges_without_duplicates_and_audits_each_write() {
    use rand::Rng as _;
    let mut people = org();
    for n in 1..=20 {
        let uid: &'static str = Box::leak(format!("emp{n:02}").into_boxed_str());
        people.push(Person {
            legal: n % 3 == 0,
            ..p(uid, "Associate", Some("boss1"))
        });
    }
    let w = World::new("killed", slapd::small(), &people, &[], "");
    // One write at a time, each answered 120 ms after it was applied: the kill most often lands
    // on a write the simulator applied but whose answer ironbridge never saw (an unknown
    // outcome the re-run must resolve without a duplicate).
    let cfg = std::fs::read_to_string(&w.cfg).unwrap().replace(
        "[ironclad]\nbase_url",
        "[ironclad]\nmax_concurrency = 1\nbase_url",
    );
    std::fs::write(&w.cfg, cfg).unwrap();
    w.rt.block_on(set_faults(
        &w.sim.base_url,
        json!({"latency_after_ms": 120, "methods": ["POST", "PUT", "PATCH", "DELETE"]}),
    ));
    // 1 group create + 27 user creates + 1 membership change.
    let total = 29;
    // Writes 2..=28 are user creates: kill while one of them is applied but unanswered.
    let kill_after = rand::rng().random_range(1..total - 2);
    eprintln!("killing ironbridge after {kill_after} of {total} writes");
    let mut child = spawn_apply(&w);
    let completed = |w: &World| -> Vec<SimRequest> {
        w.writes()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    };
    let user_posts = |d: &[SimRequest]| {
        d.iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/Users"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = completed(&w);
        // A create the simulator applied but has not answered yet (120 ms window).
        if done.len() >= kill_after && w.users().len() - 1 > user_posts(&done) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ironbridge finished before write {kill_after}"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Let a request in flight at the kill land (or not) before reading the log.
    std::thread::sleep(Duration::from_millis(300));
    let done = completed(&w);
    assert!(done.len() >= kill_after && done.len() < total, "{done:?}");

    // The audit of the killed run: every write the simulator completed has its intent, and
    // its outcome unless it was the one in flight when the process died.
    let audit_path = w.dir.path().join("ironbridge-audit.jsonl");
    let first = audit_lines(&audit_path);
    let run1 = first[0]["run_id"].as_str().unwrap().to_string();
    assert!(first.iter().all(|l| l["run_id"] == run1.as_str()));
    let intents = first.iter().filter(|l| l["phase"] == "intent").count();
    let outcomes: Vec<&Value> = first.iter().filter(|l| l["phase"] == "outcome").collect();
    assert!(
        outcomes.iter().all(|o| o["error"].is_null()),
        "{outcomes:#?}"
    );
    assert!(
        outcomes.len() + 1 >= done.len() && outcomes.len() <= done.len(),
        "{} completed writes, {} outcomes: {done:?}",
        done.len(),
        outcomes.len()
    );
    assert!(intents == outcomes.len() || intents == outcomes.len() + 1);
    // At most the write in flight at the kill lacks its outcome; every other completed write
    // names its target (an id) or, for a create, is counted in a create outcome.
    let missing = done.len() - outcomes.len();
    let unaccounted = done
        .iter()
        .filter(|r| r.method != "POST")
        .filter(|r| {
            let target = r.path.rsplit('/').next().unwrap();
            !outcomes.iter().any(|o| o["ironclad_id"] == target)
        })
        .count();
    let posts = |kind: &str| {
        done.iter()
            .filter(|r| r.method == "POST" && r.path.ends_with(kind))
            .count()
    };
    let outcomes_of = |a: &str| outcomes.iter().filter(|o| o["action"] == a).count();
    let unaccounted = unaccounted
        + posts("/Users").saturating_sub(outcomes_of("create"))
        + posts("/Groups").saturating_sub(outcomes_of("group_create"));
    assert!(
        unaccounted <= missing,
        "{unaccounted} writes without an outcome: {done:?}\n{outcomes:#?}"
    );
    // Every created id in an outcome exists in the simulator.
    let state_ids: BTreeSet<String> = w.users().iter().map(id).collect();
    eprintln!(
        "after the kill: {} completed writes logged, {} outcomes, {} intents, {} users in the simulator",
        done.len(),
        outcomes.len(),
        intents,
        state_ids.len()
    );
    for o in outcomes.iter().filter(|o| o["action"] == "create") {
        assert!(
            state_ids.contains(o["ironclad_id"].as_str().unwrap()),
            "{o}"
        );
        assert_eq!(o["http_status"], 201);
    }
    // The write in flight: its intent is logged, the user exists, its outcome is unknown.
    assert_eq!(intents, outcomes.len() + 1);
    assert_eq!(
        state_ids.len() - 1,
        outcomes_of("create") + 1,
        "one user was created whose answer never reached ironbridge"
    );
    let last = first.iter().rfind(|l| l["phase"] == "intent").unwrap();
    assert_eq!(last["action"], "create");
    assert!(
        !outcomes.iter().any(|o| o["user_name"] == last["user_name"]),
        "{last}"
    );
    let in_flight = w
        .user(last["user_name"].as_str().unwrap())
        .expect("applied");

    // Re-run: converges, no duplicates.
    w.rt.block_on(set_faults(&w.sim.base_url, json!({})));
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 0, "{out}");
    w.assert_converged();
    let users = w.users();
    assert_eq!(
        w.user(in_flight["userName"].as_str().unwrap()).unwrap()["id"],
        in_flight["id"],
        "the unanswered create was linked, not repeated"
    );
    assert_eq!(users.len(), 28, "27 people and the admin");
    let names: BTreeSet<String> = users
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_lowercase())
        .collect();
    assert_eq!(names.len(), users.len(), "duplicate userNames");
    let ext: BTreeSet<&str> = users
        .iter()
        .filter_map(|u| u["externalId"].as_str())
        .collect();
    assert_eq!(ext.len(), 27, "duplicate externalIds");
    let legal = w.group("Legal").expect("one Legal group");
    assert_eq!(legal["members"].as_array().unwrap().len(), 3 + 6);
    assert_eq!(
        w.state()["groups"].as_array().unwrap().len(),
        1,
        "no duplicate group"
    );

    // The second run's audit: an intent and an outcome per write; the store holds the same
    // lines as the JSON-lines file.
    let all = audit_lines(&audit_path);
    let run2: Vec<&Value> = all
        .iter()
        .filter(|l| l["run_id"] != run1.as_str())
        .collect();
    let i2 = run2.iter().filter(|l| l["phase"] == "intent").count();
    let o2 = run2.iter().filter(|l| l["phase"] == "outcome").count();
    // Plus the outcome of the first run's unanswered create, settled by this run.
    assert_eq!(i2 + 1, o2, "{run2:#?}");
    let settled = run2
        .iter()
        .find(|l| l["phase"] == "outcome" && l["user_name"] == in_flight["userName"])
        .unwrap_or_else(|| panic!("{run2:#?}"));
    assert_eq!(settled["action"], "create");
    assert_eq!(settled["ironclad_id"], in_flight["id"]);
    let store = ironbridge::store::Store::open(&w.dir.path().join("ironbridge-state.db")).unwrap();
    // The unanswered create is owned: linked in the store like everyone else, so a later
    // leaver or membership change reaches it.
    let links = store.links("user").unwrap();
    assert_eq!(links.len(), 27, "{links:#?}");
    assert_eq!(
        links[in_flight["externalId"].as_str().unwrap()].ironclad_id,
        id(&in_flight)
    );
    let stored = store.audit_lines(None).unwrap();
    assert_eq!(stored.len(), all.len());
    for (s, j) in stored.iter().zip(&all) {
        assert_eq!(s.phase, j["phase"].as_str().unwrap());
        assert_eq!(s.action, j["action"].as_str().unwrap());
        assert_eq!(s.ironclad_id.as_deref(), j["ironclad_id"].as_str());
    }
    let total_writes = done.len() + run2.len() / 2;
    assert!(total_writes >= total - 1, "{total_writes}");
}

/// The kill at a random write of a run that updates people, changes a group's membership and
/// removes leavers (the run above is killed among creates): the re-run converges, the leavers
/// are gone, and the audit has an intent for every write and at most one outcome missing.
#[test]
fn a_run_killed_among_updates_membership_and_removals_converges() {
    use rand::Rng as _;
    let mut people = org();
    for n in 1..=8 {
        let uid: &'static str = Box::leak(format!("emp{n:02}").into_boxed_str());
        people.push(p(uid, "Associate", Some("boss1")));
    }
    let w = World::new(
        "killed-late",
        slapd::small(),
        &people,
        &[],
        "[policy]\nmax_removal_percent = 50\n",
    );
    w.apply_and_converge();
    // Every later kind of write at once: four movers, two people into Legal, two leavers.
    for uid in ["emp01", "emp02", "emp03", "emp04"] {
        w.modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: title\ntitle: Senior Associate\n",
            w.dn(uid)
        ));
    }
    w.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: member\nmember: {}\nmember: {}\n",
        w.group_dn("ironclad-legal"),
        w.dn("emp05"),
        w.dn("emp06")
    ));
    set_scope(&w, "emp07", false);
    set_scope(&w, "emp08", false);
    let (code, plan) = w.plan();
    assert_eq!(code, 2, "{plan:#}");
    let acts = actions(&plan);
    assert_eq!(
        acts.values().filter(|a| *a == "update").count(),
        4,
        "{acts:?}"
    );
    assert_eq!(
        acts.values().filter(|a| *a == "remove").count(),
        2,
        "{acts:?}"
    );
    // Four updates, one membership change, two removals.
    let total = 7;

    let cfg = std::fs::read_to_string(&w.cfg).unwrap().replace(
        "[ironclad]\nbase_url",
        "[ironclad]\nmax_concurrency = 1\nbase_url",
    );
    std::fs::write(&w.cfg, cfg).unwrap();
    w.rt.block_on(set_faults(
        &w.sim.base_url,
        json!({"latency_after_ms": 120, "methods": ["POST", "PUT", "PATCH", "DELETE"]}),
    ));
    w.clear_log();
    let audit_path = w.dir.path().join("ironbridge-audit.jsonl");
    let before = audit_lines(&audit_path).len();
    let kill_after = rand::rng().random_range(1..total);
    eprintln!("killing ironbridge after {kill_after} of {total} writes");
    let mut child = spawn_apply(&w);
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.writes().len() < kill_after {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ironbridge finished before write {kill_after}"
        );
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL, most often while a write waits for its answer
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sent = w.writes().len();
    assert!(sent >= kill_after && sent < total, "{sent} writes sent");
    let killed: Vec<Value> = audit_lines(&audit_path).split_off(before);
    let intents = killed.iter().filter(|l| l["phase"] == "intent").count();
    let outcomes = killed.iter().filter(|l| l["phase"] == "outcome").count();
    assert!(
        intents >= sent && (intents == outcomes || intents == outcomes + 1),
        "{sent} sent, {intents} intents, {outcomes} outcomes: {killed:#?}"
    );

    // The re-run finishes the job; nothing is done twice or left undone.
    w.rt.block_on(set_faults(&w.sim.base_url, json!({})));
    let (code, out) = w.apply(&[]);
    assert_eq!(code, 0, "{out}");
    w.assert_converged();
    for uid in ["emp01", "emp02", "emp03", "emp04"] {
        assert_eq!(w.user(&w.mail(uid)).unwrap()["title"], "Senior Associate");
    }
    assert!(w.user(&w.mail("emp07")).is_none() && w.user(&w.mail("emp08")).is_none());
    let legal = w.group("Legal").unwrap();
    for uid in ["emp05", "emp06"] {
        let want = id(&w.user(&w.mail(uid)).unwrap());
        assert!(
            legal["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["value"] == want.as_str()),
            "{uid} not in Legal: {legal:#}"
        );
    }
    let names: BTreeSet<String> = w
        .users()
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_lowercase())
        .collect();
    assert_eq!(names.len(), w.users().len(), "duplicate userNames");
}

#[test]
fn an_incomplete_read_creates_and_updates_the_people_read_and_removes_nobody() {
    // The second database of the shared slapd answers at most 10 entries per search (size
    // limit 10) out of its 30 people: a users listing the server cuts short. Its two groups
    // (all 30; l01 and l02) are read completely.
    let slapd = slapd::small();
    let sim = start_sim_process(&[
        "--token",
        &format!("{TOKEN}:{}", ALL_SCOPES.join(",")),
        "--admin-email",
        ADMIN,
    ]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("ldap-password"), READER_PASSWORD).unwrap();
    // `later`: l02 leaves the scope, and only the group of all is still pushed.
    let mapping = |title: &str, later: bool| {
        let (rules, groups) = if later {
            (
                "[[scope.rules]]\naction = \"exclude\"\nwhen = \"attr.uid == 'l02'\"\n",
                "attr.cn == 'limited-all'",
            )
        } else {
            ("", "true")
        };
        let m = format!(
            "version = 1\n[scope]\ndefault = \"include\"\n{rules}[correlation]\nexternal_id = \"id\"\n\
             [attributes]\nuserName = \"attr.uid ~ '@limited.test'\"\n\
             \"name.familyName\" = \"attr.sn\"\ntitle = \"'{title}'\"\n\
             [groups]\nwhen = \"{groups}\"\ndisplay_name = \"attr.cn\"\n"
        );
        std::fs::write(dir.path().join("mapping.toml"), m).unwrap();
    };
    let cfg = dir.path().join("ironbridge.toml");
    let config = |filter: Option<&str>, policy: &str| {
        let filter = filter.map_or(String::new(), |f| format!("filter = \"{f}\"\n"));
        let c = format!(
            "version = 1\n\
             [ironclad]\nbase_url = \"{sim}\"\n\
             [ironclad.auth]\nmethod = \"bearer_token\"\ntoken = {{ file = \"token\" }}\n\
             [source]\nkind = \"ldap\"\nurl = \"{url}\"\nbind_dn = \"{READER_DN}\"\n\
             bind_password = {{ file = \"ldap-password\" }}\nmax_reconnects = 0\n\
             [source.users]\nbase_dn = \"ou=people,{limited}\"\n{filter}\
             [source.groups]\nbase_dn = \"ou=groups,{limited}\"\n\
             [mapping]\nfile = \"mapping.toml\"\n\
             [policy]\nmax_removal_percent = 100.0\n{policy}",
            sim = sim.base_url,
            url = slapd.ldap_url,
            limited = slapd::LIMITED,
        );
        std::fs::write(&cfg, c).unwrap();
    };
    let run = |args: &[&str]| {
        let out = Command::new(bin("ironbridge"))
            .args(["--log", "warn"])
            .args(args)
            .args(["--config", cfg.to_str().unwrap()])
            .env_remove("IRONBRIDGE_LOG")
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), out)
    };
    let plan = || {
        let (code, out) = run(&["plan", "--format", "json"]);
        let plan: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", text(&out)));
        (code, plan)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The people of the directory (the simulator also holds its admin user).
    let users = || -> Vec<Value> {
        rt.block_on(sim_state(&sim.base_url))["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["userName"].as_str().unwrap().ends_with("@limited.test"))
            .cloned()
            .collect()
    };
    let writes = || -> Vec<SimRequest> {
        rt.block_on(api_requests(&sim.base_url))
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    };

    let state = || rt.block_on(sim_state(&sim.base_url));
    let id_of = |user_name: &str| -> String {
        users()
            .iter()
            .find(|u| u["userName"] == user_name)
            .map(|u| u["id"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    // Members (userNames) of the simulator's group, `None` when it does not exist.
    let members = |group: &str| -> Option<BTreeSet<String>> {
        let s = state();
        let names: BTreeMap<String, String> = s["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["id"].as_str().unwrap().to_string(),
                    u["userName"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        s["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["displayName"] == group)
            .map(|g| {
                g["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| names[m["value"].as_str().unwrap()].clone())
                    .collect()
            })
    };
    let set = |names: &[&str]| -> BTreeSet<String> {
        names.iter().map(|n| format!("{n}@limited.test")).collect()
    };

    // Three people read completely (a filter under the limit), then managed, with both
    // groups.
    mapping("Counsel", false);
    config(Some("(|(uid=l01)(uid=l02)(uid=l29))"), "");
    let (code, out) = run(&["apply", "--yes"]);
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(users().len(), 3);
    assert_eq!(members("limited-all"), Some(set(&["l01", "l02", "l29"])));
    assert_eq!(members("limited-few"), Some(set(&["l01", "l02"])));
    let l02 = id_of("l02@limited.test");

    // The whole branch: cut short after 10 of 30. By default nothing is planned for users.
    // Meanwhile l02 left the scope and limited-few is no longer pushed.
    mapping("Partner", true);
    config(None, "");
    rt.block_on(clear_requests(&sim.base_url));
    let (code, p) = plan();
    assert_eq!(code, 1, "{p:#}");
    assert_eq!(p["source_complete"], false);
    assert!(users_of(&p).is_empty(), "{p:#}");
    assert!(
        p["notes"][0].as_str().unwrap().contains("size limit"),
        "{p:#}"
    );
    let (code, out) = run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(writes(), vec![]);

    // Allowed: the ten read are created or updated; l29, not read, is not removed, not even
    // with removals allowed.
    config(None, "writes_on_incomplete_source = true\n");
    let (code, p) = plan();
    assert_eq!(code, 1, "{p:#}");
    assert_eq!(p["source_complete"], false);
    assert!(
        p["source_incomplete"]
            .as_str()
            .is_some_and(|s| s.contains("size limit")),
        "{p:#}"
    );
    let acts = actions(&p);
    for n in [1, 3, 4, 5, 6, 7, 8, 9, 10] {
        let want = if n == 1 { "update" } else { "create" };
        assert_eq!(
            acts.get(&format!("l{n:02}@limited.test"))
                .map(String::as_str),
            Some(want),
            "{p:#}"
        );
    }
    // l29 (not read) and l02 (read, out of scope) would be removed by a complete read.
    for who in ["l29@limited.test", "l02@limited.test"] {
        let held = line(&p, who);
        assert_eq!(held["action"], "skip", "{held:#}");
        assert!(
            held["reason"]["rule"]
                .as_str()
                .is_some_and(|r| r.contains("incomplete")),
            "{held:#}"
        );
    }
    assert!(lines_with_action(&p, "remove").is_empty(), "{p:#}");
    let groups = p["groups"].as_array().unwrap();
    let few = groups
        .iter()
        .find(|g| g["display_name"] == "limited-few")
        .unwrap();
    assert_eq!(few["action"], "skip", "not deleted: {few:#}");
    let all = groups
        .iter()
        .find(|g| g["display_name"] == "limited-all")
        .unwrap();
    assert_eq!(all["remove"], json!([]), "{all:#}");
    let (code, out) = run(&["apply", "--yes", "--allow-removals", "50"]);
    assert_eq!(code, 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("users listing was incomplete"),
        "the run says why it failed: {}",
        text(&out)
    );
    let after = users();
    assert_eq!(after.len(), 11);
    assert!(after.iter().all(|u| u["active"] != false));
    for u in &after {
        let expected = if u["userName"] == "l29@limited.test" || u["userName"] == "l02@limited.test"
        {
            "Counsel"
        } else {
            "Partner"
        };
        assert_eq!(u["title"], expected, "{u:#}");
    }
    assert_eq!(id_of("l02@limited.test"), l02);
    assert!(writes().iter().all(|r| r.method != "DELETE"));
    // The people created joined the group; nobody left it, and the other group stays.
    assert_eq!(
        members("limited-all"),
        Some(set(&[
            "l01", "l02", "l03", "l04", "l05", "l06", "l07", "l08", "l09", "l10", "l29"
        ]))
    );
    assert_eq!(members("limited-few"), Some(set(&["l01", "l02"])));

    // Re-running writes nothing more: the ten read are converged, l29 is still held.
    rt.block_on(clear_requests(&sim.base_url));
    let (code, p) = plan();
    assert_eq!(code, 1, "{p:#}");
    for u in users_of(&p) {
        assert!(
            matches!(u["action"].as_str(), Some("noop" | "skip")),
            "{u:#}"
        );
    }
    let (code, out) = run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(writes(), vec![]);
}
