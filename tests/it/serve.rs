//! `ironbridge serve` end to end: the real binary on a free loopback port, in front of the real
//! `ironclad-sim` binary, reading the sample LDIF directory. Covers each identity provider's
//! verification and delivery over HTTP, the rejections (forged signature, stale timestamp,
//! replay, oversize body, wrong content type, wrong secrets) with no run started, an event
//! turning into a targeted run whose change shows in the simulator, the admin API's token
//! checks, the store lock making a second holder wait, a restart keeping history and links, a
//! graceful SIGTERM, and a scan of every log line, response and report for the secrets.
//!
//! The scheduler's no-overlap and skip recording run under paused tokio time in the unit tests
//! of `src/serve/scheduler.rs` and `src/serve/runner.rs`.

use crate::support::sim::{
    set_faults, sim_state, start_sim_process, SimProcess, ADMIN, ALL_SCOPES,
};
use crate::support::{bin, free_port, repo};
use ironbridge::serve::webhook::generic::sign;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENT_SECRET: &str = "sim-client-secret-Q7xw2";
const ADMIN_TOKEN: &str = "admin-token-Lp3k9vTq";
const OKTA_SECRET: &str = "okta-hook-secret-Z9m4";
const GRAPH_STATE: &str = "graph-client-state-R2d8";
const HMAC_KEY: &str = "hmac-key-W6y1Hs";
const SECRETS: [&str; 5] = [
    CLIENT_SECRET,
    ADMIN_TOKEN,
    OKTA_SECRET,
    GRAPH_STATE,
    HMAC_KEY,
];

struct Fixture {
    dir: tempfile::TempDir,
    sim: SimProcess,
    port: u16,
}

fn fixture(extra_serve: &str) -> Fixture {
    let all = ALL_SCOPES.join(",");
    let sim = start_sim_process(&[
        "--client",
        &format!("cli:{CLIENT_SECRET}:{all}"),
        "--admin-email",
        ADMIN,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(
        repo().join("examples/sample/directory.ldif"),
        d.join("directory.ldif"),
    )
    .unwrap();
    std::fs::copy(
        repo().join("examples/sample/mapping.toml"),
        d.join("mapping.toml"),
    )
    .unwrap();
    for (f, v) in [
        ("client-secret", CLIENT_SECRET),
        ("admin-token", ADMIN_TOKEN),
        ("okta-secret", OKTA_SECRET),
        ("graph-state", GRAPH_STATE),
        ("hmac-key", HMAC_KEY),
    ] {
        std::fs::write(d.join(f), format!("{v}\n")).unwrap();
    }
    let port = free_port();
    let grace = if extra_serve.contains("shutdown_grace_secs") {
        ""
    } else {
        "shutdown_grace_secs = 5"
    };
    let cfg = format!(
        r#"version = 1
[ironclad]
base_url = "{base}"
[ironclad.auth]
method = "client_credentials"
client_id = "cli"
client_secret = {{ file = "client-secret" }}
[ironclad.acting_user]
email = "{ADMIN}"
[source]
kind = "ldif"
path = "directory.ldif"
[mapping]
file = "mapping.toml"
[policy]
remove_users = "deactivate"
[serve]
listen = "127.0.0.1:{port}"
debounce_ms = 300
{grace}
lock_stale_secs = 30
{extra_serve}
[serve.admin]
token = {{ file = "admin-token" }}
[serve.webhooks.okta]
secret = {{ file = "okta-secret" }}
[serve.webhooks.graph]
client_state = {{ file = "graph-state" }}
[serve.webhooks.generic]
secret = {{ file = "hmac-key" }}
"#,
        base = sim.base_url
    );
    std::fs::write(d.join("ironbridge.toml"), cfg).unwrap();
    Fixture { dir, sim, port }
}

impl Fixture {
    fn config(&self) -> PathBuf {
        self.dir.path().join("ironbridge.toml")
    }
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    fn edit_ldif(&self, from: &str, to: &str) {
        let p = self.dir.path().join("directory.ldif");
        let text = std::fs::read_to_string(&p).unwrap();
        let changed = text.replacen(from, to, 1);
        assert_ne!(text, changed, "{from:?} not in the LDIF");
        std::fs::write(p, changed).unwrap();
    }
}

/// The `ironbridge serve` process; killed on drop. Its stderr (JSON logs) is collected.
struct Serve {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// SIGTERM; returns the exit code and how long the process took to exit.
    fn terminate(&mut self) -> (Option<i32>, Duration) {
        let t = Instant::now();
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s.code(), t.elapsed());
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "serve did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn start_serve(f: &Fixture) -> Serve {
    let mut child = Command::new(bin("ironbridge"))
        .args([
            "--log",
            "debug",
            "--log-format",
            "json",
            "serve",
            "--config",
        ])
        .arg(f.config())
        .env_remove("IRONBRIDGE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ironbridge serve");
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let l = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            l.lock().unwrap().push(line);
        }
    });
    let s = Serve { child, logs };
    let t = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(f.url("/healthz")).await {
            if r.status() == 200 {
                return s;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "serve not healthy within 20 s:\n{}",
            s.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn admin_get(f: &Fixture, path: &str) -> Value {
    let r = http()
        .get(f.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn runs(f: &Fixture) -> Vec<Value> {
    admin_get(f, "/v1/runs?limit=200").await["runs"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits (at most `secs`) for a run of `trigger` to finish; returns it.
async fn wait_run(f: &Fixture, trigger: &str, secs: u64) -> Value {
    let t = Instant::now();
    loop {
        let all = runs(f).await;
        if let Some(r) = all
            .iter()
            .find(|r| r["trigger"] == trigger && r["outcome"] != "running")
        {
            return r.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "no finished {trigger} run within {secs} s: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_run_id(f: &Fixture, id: &str) -> Value {
    let t = Instant::now();
    loop {
        let v = admin_get(f, &format!("/v1/runs/{id}")).await;
        let o = v["run"]["outcome"].as_str().unwrap_or("").to_string();
        if !matches!(o.as_str(), "queued" | "waiting_for_lock" | "running") {
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "run {id} stuck: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn full_apply(f: &Fixture) -> Value {
    let r = http()
        .post(f.url("/v1/runs"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = wait_run_id(f, &id).await;
    assert_eq!(v["run"]["outcome"], "succeeded", "{v:#}");
    v
}

async fn sim_user(f: &Fixture, user_name: &str) -> Value {
    let st = sim_state(&f.sim.base_url).await;
    st["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userName"] == user_name)
        .cloned()
        .unwrap_or_else(|| panic!("{user_name} not in the simulator"))
}

fn signed(body: &str, ts: i64) -> (String, String) {
    let ts = ts.to_string();
    let sig = sign(HMAC_KEY.as_bytes(), &ts, body.as_bytes());
    (ts, sig)
}

async fn post_generic(f: &Fixture, body: &str, ts: &str, sig: &str, ctype: &str) -> u16 {
    send_generic(f, body, ts, sig, ctype).await.unwrap()
}

async fn send_generic(
    f: &Fixture,
    body: &str,
    ts: &str,
    sig: &str,
    ctype: &str,
) -> Result<u16, reqwest::Error> {
    Ok(http()
        .post(f.url("/webhooks/generic"))
        .header("content-type", ctype)
        .header("x-ironbridge-timestamp", ts)
        .header("x-ironbridge-signature", format!("sha256={sig}"))
        .body(body.to_string())
        .send()
        .await?
        .status()
        .as_u16())
}

/// An oversize body is answered 413 from its Content-Length, before the body is read; the
/// server then closes the connection, so the client may see its upload cut (broken pipe)
/// instead of the answer. Either way it was refused; the metrics check the server's verdict.
fn refused_as_too_large(r: Result<u16, reqwest::Error>) {
    match r {
        Ok(code) => assert_eq!(code, 413),
        Err(e) => assert!(e.is_request(), "{e:?}"),
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "a secret appeared in {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_event_becomes_a_targeted_run_visible_in_the_simulator() {
    let f = fixture("");
    let mut s = start_serve(&f).await;
    full_apply(&f).await;
    assert_eq!(
        sim_user(&f, "zoe.angstrom@example.com").await["title"],
        "Senior Counsel"
    );

    // The one-time verification: the secret is checked, the challenge echoed.
    let r = http()
        .get(f.url("/webhooks/okta"))
        .header("x-okta-verification-challenge", "chal-123")
        .header("authorization", OKTA_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"verification": "chal-123"})
    );
    let r = http()
        .get(f.url("/webhooks/okta"))
        .header("x-okta-verification-challenge", "chal-123")
        .header("authorization", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Two movers in the directory; the IdP tells us about one of them.
    f.edit_ldif("title: Senior Counsel", "title: Deputy General Counsel");
    f.edit_ldif("title: Counsel\n", "title: Lead Counsel\n");
    let event = |uuid: &str| {
        json!({"eventType": "com.okta.event_hook", "data": {"events": [{
            "uuid": uuid,
            "eventType": "user.account.update_profile",
            "target": [{"type": "User", "alternateId": "zoe.angstrom@example.com", "id": "00u1"}]
        }]}})
    };
    // Wrong secret: refused, no run.
    let r = http()
        .post(f.url("/webhooks/okta"))
        .header("authorization", "not-the-secret")
        .json(&event("e-0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let t = Instant::now();
    let r = http()
        .post(f.url("/webhooks/okta"))
        .header("authorization", OKTA_SECRET)
        .json(&event("e-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "answered in {:?}",
        t.elapsed()
    );
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["people"], 1, "one user targeted: {answer}");
    // At-least-once delivery: the same event again is a duplicate.
    let r = http()
        .post(f.url("/webhooks/okta"))
        .header("authorization", OKTA_SECRET)
        .json(&event("e-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["duplicates"], 1);

    let run = wait_run(&f, "webhook:okta", 30).await;
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(
        runs(&f)
            .await
            .iter()
            .filter(|r| r["trigger"] == "webhook:okta")
            .count(),
        1,
        "the duplicate started a second run"
    );
    assert_eq!(
        sim_user(&f, "zoe.angstrom@example.com").await["title"],
        "Deputy General Counsel"
    );
    assert_eq!(
        sim_user(&f, "francois.lefevre@example.com").await["title"],
        "Counsel",
        "a targeted run touched someone the event did not name"
    );
    // The run's report names the person.
    let id = run["id"].as_str().unwrap();
    let report = admin_get(&f, &format!("/v1/runs/{id}?format=json")).await;
    assert_eq!(report["schema"], "ironbridge.plan/v1");
    assert!(report["users"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["user_name"] == "zoe.angstrom@example.com"));

    // The generic webhook names the other mover.
    let body = r#"{"people": ["francois.lefevre@example.com"]}"#;
    let (ts, sig) = signed(body, chrono::Utc::now().timestamp());
    assert_eq!(
        post_generic(&f, body, &ts, &sig, "application/json").await,
        202
    );
    let run = wait_run(&f, "webhook:generic", 30).await;
    assert_eq!(run["outcome"], "succeeded");
    assert_eq!(
        sim_user(&f, "francois.lefevre@example.com").await["title"],
        "Lead Counsel"
    );
    let m = reqwest::get(f.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(r#"ironbridge_runs_total{trigger="webhook:okta",outcome="succeeded"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"ironbridge_webhook_requests_total{provider="okta",verdict="unauthorized"} 2"#
        ),
        "{m}"
    );
    assert!(
        m.contains("ironbridge_ironclad_requests_total{bucket="),
        "{m}"
    );
    assert!(m.contains("ironbridge_changes_total{action="), "{m}");
    let (code, took) = s.terminate();
    assert_eq!(code, Some(0), "{}", s.logs().join("\n"));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_no_secret("the serve logs", &s.logs().join("\n"));
    assert_no_secret("the metrics", &m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_validation_client_state_and_lifecycle() {
    let f = fixture("");
    let s = start_serve(&f).await;
    // Validation: the token echoed as text/plain.
    let r = http()
        .post(
            f.url("/webhooks/graph?validationToken=Validation%3A%20Testing%20client%20application"),
        )
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        r.text().await.unwrap(),
        "Validation: Testing client application"
    );
    // A notification whose clientState is wrong: refused, no run.
    let forged = json!({"value": [{"subscriptionId": "s", "clientState": "guess",
        "changeType": "updated", "resource": "Users/abc"}]});
    let r = http()
        .post(f.url("/webhooks/graph"))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        runs(&f).await.is_empty(),
        "a forged notification started a run"
    );
    // A lifecycle notification (missed): 202 quickly, then a full run.
    let life = json!({"value": [{"subscriptionId": "s", "clientState": GRAPH_STATE,
        "lifecycleEvent": "missed", "resource": "Users"}]});
    let t = Instant::now();
    let r = http()
        .post(f.url("/webhooks/graph"))
        .json(&life)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(t.elapsed() < Duration::from_millis(200));
    let run = wait_run(&f, "webhook:graph", 30).await;
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    // A full run: everyone in scope was created.
    let created = run["summary"]["plan"]["create"].as_u64().unwrap_or(0);
    assert!(created >= 15, "{run:#}");
    assert_no_secret("the serve logs", &s.logs().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_webhooks_start_no_run() {
    let f = fixture("");
    let s = start_serve(&f).await;
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"people": ["zoe.angstrom@example.com"]}"#;
    // Forged signature.
    let (ts, _) = signed(body, now);
    let forged = sign(b"not-the-key", &ts, body.as_bytes());
    assert_eq!(
        post_generic(&f, body, &ts, &forged, "application/json").await,
        401
    );
    // Stale timestamp (6 minutes old), correctly signed.
    let (ts_old, sig_old) = signed(body, now - 360);
    assert_eq!(
        post_generic(&f, body, &ts_old, &sig_old, "application/json").await,
        401
    );
    // Oversize body (1 MiB + 1), correctly signed.
    let big = format!(r#"{{"people": ["{}"]}}"#, "x".repeat(1 << 20));
    let (ts_big, sig_big) = signed(&big, now);
    refused_as_too_large(send_generic(&f, &big, &ts_big, &sig_big, "application/json").await);
    // Wrong content type, correctly signed.
    let (ts2, sig2) = signed(body, now);
    assert_eq!(post_generic(&f, body, &ts2, &sig2, "text/plain").await, 415);
    // Okta with a wrong content type; Graph with an oversize body.
    let r = http()
        .post(f.url("/webhooks/okta"))
        .header("authorization", OKTA_SECRET)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("data=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = http()
        .post(f.url("/webhooks/graph"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .map(|r| r.status().as_u16());
    refused_as_too_large(r);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        runs(&f).await.is_empty(),
        "a rejected request started a run"
    );

    // A good request is accepted; the same request again is a replay.
    let (ts, sig) = signed(body, now);
    assert_eq!(
        post_generic(&f, body, &ts, &sig, "application/json").await,
        202
    );
    assert_eq!(
        post_generic(&f, body, &ts, &sig, "application/json").await,
        409
    );
    wait_run(&f, "webhook:generic", 30).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(runs(&f).await.len(), 1, "the replay started a run");
    let m = reqwest::get(f.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (p, v, n) in [
        ("generic", "unauthorized", 1),
        ("generic", "stale", 1),
        ("generic", "too_large", 1),
        ("generic", "bad_content_type", 1),
        ("generic", "replay", 1),
        ("generic", "accepted", 1),
        ("okta", "bad_content_type", 1),
        ("graph", "too_large", 1),
    ] {
        let line =
            format!("ironbridge_webhook_requests_total{{provider=\"{p}\",verdict=\"{v}\"}} {n}");
        assert!(m.contains(&line), "{line} missing:\n{m}");
    }
    assert_no_secret("the serve logs", &s.logs().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_refuses_missing_and_wrong_tokens() {
    let f = fixture("");
    let _s = start_serve(&f).await;
    for path in ["/v1/runs", "/v1/plan", "/v1/runs/x"] {
        let r = http().get(f.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        let r = http()
            .get(f.url(path))
            .bearer_auth("admin-token-wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
    }
    let r = http()
        .post(f.url("/v1/runs"))
        .bearer_auth(ADMIN_TOKEN.to_uppercase())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(runs(&f).await.is_empty(), "a refused request started a run");
    // The OpenAPI document needs no token and lists the admin paths.
    let doc: Value = reqwest::get(f.url("/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/runs"]["post"].is_object());
    // GET /v1/plan with the token: a fresh dry run as JSON and HTML; nothing written.
    let r = http()
        .get(f.url("/v1/plan"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let plan: Value = r.json().await.unwrap();
    assert!(plan["summary"]["create"].as_u64().unwrap() >= 15, "{plan}");
    let r = http()
        .get(f.url("/v1/plan?format=html"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("<html"));
    let st = sim_state(&f.sim.base_url).await;
    assert_eq!(st["users"].as_array().unwrap().len(), 1, "a dry run wrote");

    // The container HEALTHCHECK: `ironbridge health` exits 0 on 2xx, 1 otherwise.
    let health = |url: String| {
        Command::new(bin("ironbridge"))
            .args(["health", "--timeout", "2", "--url", &url])
            .output()
            .unwrap()
    };
    assert_eq!(health(f.url("/healthz")).status.code(), Some(0));
    let o = health(f.url("/no-such-path"));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("404"), "{err}");
    // Unknown paths are 404 for everyone, with or without a token.
    let r = http().get(f.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let closed = format!("http://127.0.0.1:{}/healthz", free_port());
    assert_eq!(health(closed).status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_holder_of_the_store_lock_makes_runs_wait() {
    let f = fixture("");
    // Another instance holds the run lock.
    let store = ironbridge::store::Store::open(&f.dir.path().join("ironbridge-state.db")).unwrap();
    store
        .try_lock(
            "other-instance",
            chrono::Utc::now(),
            chrono::Duration::seconds(30),
        )
        .unwrap();
    let _s = start_serve(&f).await;
    let r = http()
        .post(f.url("/v1/runs"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"dry_run": true}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = admin_get(&f, &format!("/v1/runs/{id}")).await;
    assert_eq!(v["run"]["outcome"], "waiting_for_lock", "{v}");
    let ready: Value = reqwest::get(f.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["waiting_for_lock"], true, "{ready}");
    assert!(runs(&f).await.is_empty(), "ran while another held the lock");
    store.unlock("other-instance").unwrap();
    let v = wait_run_id(&f, &id).await;
    assert_eq!(v["run"]["outcome"], "succeeded", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_history_and_links_and_no_secret_leaks() {
    // Scheduled every hour with a run at start: the first full run comes from the scheduler.
    let f = fixture("[serve.schedule]\ninterval_secs = 3600\nrun_on_start = true\n");
    let mut s = start_serve(&f).await;
    let first = wait_run(&f, "schedule", 60).await;
    assert_eq!(first["outcome"], "succeeded", "{first:#}");
    let first_id = first["id"].as_str().unwrap().to_string();
    let mut seen_text = String::new();
    seen_text.push_str(
        &http()
            .get(f.url(&format!("/v1/runs/{first_id}?format=html")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    seen_text.push_str(
        &admin_get(&f, &format!("/v1/runs/{first_id}"))
            .await
            .to_string(),
    );
    seen_text.push_str(
        &reqwest::get(f.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let (code, took) = s.terminate();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let mut logs = s.logs();
    drop(s);

    // Same store, new process: the history is there and the links make it converge.
    let mut s = start_serve(&f).await;
    let all = runs(&f).await;
    assert!(all.iter().any(|r| r["id"] == first_id.as_str()), "{all:#?}");
    let r = http()
        .get(f.url("/v1/plan"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let plan: Value = r.json().await.unwrap();
    seen_text.push_str(&plan.to_string());
    for a in ["create", "update", "adopt", "remove"] {
        assert_eq!(
            plan["summary"][a].as_u64().unwrap_or(0),
            0,
            "not converged after restart: {a}: {plan:#}"
        );
    }
    // A failing request path: an unknown run and a bad body.
    seen_text.push_str(
        &http()
            .get(f.url("/v1/runs/nope"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    seen_text.push_str(
        &http()
            .post(f.url("/v1/runs"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body("{\"bogus\": 1}")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let (code, _) = s.terminate();
    assert_eq!(code, Some(0));
    logs.extend(s.logs());
    // JSON logs, one span per run carrying its id.
    assert!(logs
        .iter()
        .any(|l| l.contains(&first_id) && l.starts_with('{')));
    let audit =
        std::fs::read_to_string(f.dir.path().join("ironbridge-audit.jsonl")).unwrap_or_default();
    assert_no_secret("the serve logs", &logs.join("\n"));
    assert_no_secret("the responses and reports", &seen_text);
    assert_no_secret("the audit log", &audit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_apply_exits_in_bounded_time_and_the_next_run_converges() {
    let f = fixture("shutdown_grace_secs = 1");
    // Every create takes 1.5 s to be answered: the apply is still writing when the stop comes.
    set_faults(
        &f.sim.base_url,
        json!({"latency_ms": 1500, "methods": ["POST"]}),
    )
    .await;
    let mut s = start_serve(&f).await;
    let r = http()
        .post(f.url("/v1/runs"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = Instant::now();
    loop {
        let v = admin_get(&f, &format!("/v1/runs/{id}")).await;
        if v["run"]["outcome"] == "running" && !runs(&f).await.is_empty() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (code, took) = s.terminate();
    assert_eq!(code, Some(0), "{}", s.logs().join("\n"));
    // Grace 1 s, plus the HTTP bound: well under 10 s.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let logs = s.logs().join("\n");
    drop(s);
    let store = ironbridge::store::Store::open(&f.dir.path().join("ironbridge-state.db")).unwrap();
    let run = store.run(&id).unwrap().unwrap();
    assert_eq!(run.outcome, "interrupted", "{run:?}\n{logs}");

    // Restart without faults: the next run converges, nobody duplicated.
    set_faults(&f.sim.base_url, json!({})).await;
    let mut s = start_serve(&f).await;
    let v = full_apply(&f).await;
    assert_ne!(v["run"]["id"], id.as_str());
    let st = sim_state(&f.sim.base_url).await;
    let names: Vec<&str> = st["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), unique.len(), "duplicates: {names:?}");
    assert_eq!(names.len(), 18, "{names:?}");
    let plan: Value = http()
        .get(f.url("/v1/plan"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for a in ["create", "update", "adopt", "remove"] {
        assert_eq!(plan["summary"][a].as_u64().unwrap_or(0), 0, "{a}: {plan:#}");
    }
    s.terminate();
}
