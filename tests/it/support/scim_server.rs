//! A real `scim2-server` (PyPI, a third-party SCIM 2.0 implementation) for the SCIM-source
//! tests: started from the test virtualenv on a free 127.0.0.1 port with a bearer token,
//! waited for, seeded over HTTP, and killed when dropped. Its access log (one line per request)
//! is kept in a file so tests can see how many pages were requested.
//!
//! Known quirks: without `sortBy` its listing order is not stable; `User.groups` is not filled
//! from group members.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running scim2-server.
pub struct ScimServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The bearer token it accepts.
    pub token: String,
    /// `http://127.0.0.1:PORT/v2`.
    pub base_url: String,
    log: PathBuf,
    /// Keeps the log directory alive.
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl ScimServer {
    /// Starts a server accepting `token` and waits until it answers (at most 20 s).
    pub async fn start(token: &str) -> ScimServer {
        let py = super::python();
        let exe = py.parent().unwrap().join("scim2-server");
        assert!(
            exe.exists(),
            "{} is missing: run scripts/test.sh",
            exe.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("scim2-server.log");
        let http = reqwest::Client::new();
        let mut last_err = String::new();
        // A port freed by free_port() can be taken before the server binds it: try a few.
        for _ in 0..3 {
            let port = super::free_port();
            let out = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(&exe)
                .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
                .args(["--bearer-token", token])
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
            let base_url = format!("http://127.0.0.1:{port}/v2");
            match wait_ready(&http, &mut child, &base_url, token, Duration::from_secs(20)).await {
                Ok(()) => {
                    return ScimServer {
                        child: Some(child),
                        port,
                        token: token.to_string(),
                        base_url,
                        log,
                        _dir: dir,
                        http,
                    }
                }
                Err(e) => {
                    last_err =
                        format!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default());
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("scim2-server did not start: {last_err}");
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many requests starting with `GET {path}` the server has logged (`path` like
    /// `/v2/Users?`).
    pub fn gets(&self, path: &str) -> usize {
        let needle = format!("\"GET {path}");
        self.log_text().matches(&needle).count()
    }

    /// Kills the server now (also done on drop).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn post(&self, kind: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/{kind}", self.base_url))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "POST /{kind}: {status}: {v}");
        v
    }

    /// Creates a user from a full SCIM body; returns the created resource.
    pub async fn create_user(&self, mut body: Value) -> Value {
        if body.get("schemas").is_none() {
            body["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User"]);
        }
        self.post("Users", body).await
    }

    /// Creates a group named `name` with members `(id, type)`; returns its id.
    pub async fn create_group(&self, name: &str, members: &[(&str, &str)]) -> String {
        let members: Vec<Value> = members
            .iter()
            .map(|(id, t)| json!({"value": id, "type": t}))
            .collect();
        let v = self
            .post(
                "Groups",
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": name,
                    "members": members,
                }),
            )
            .await;
        v["id"].as_str().unwrap().to_string()
    }
}

/// Polls `ServiceProviderConfig` until it answers 200, the process exits, or `timeout` passes.
async fn wait_ready(
    http: &reqwest::Client,
    child: &mut Child,
    base_url: &str,
    token: &str,
    timeout: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    let url = format!("{base_url}/ServiceProviderConfig");
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}"));
        }
        if let Ok(r) = http.get(&url).bearer_auth(token).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("not ready after {timeout:?}"))
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        self.kill();
    }
}
