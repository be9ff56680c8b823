//! Test support for `ironclad-sim`: start it in-process ([`start_sim`]) or as the real binary
//! ([`start_sim_process`]), read its request log ([`sim_requests`]), set faults
//! ([`set_faults`]), and a few ready-made configurations.

use super::bin;
use ironbridge::sim::{SimClient, SimConfig, SimHandle, SimToken};
use serde::Deserialize;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Every SCIM scope, in Ironclad's names.
pub const ALL_SCOPES: &[&str] = ironbridge::sim::scim::ALL_SCOPES;

/// The least-privilege set integrations are commonly granted.
pub const LEAST_PRIVILEGE: &[&str] = &[
    "scim.users.readUsers",
    "scim.users.updateUsers",
    "scim.users.deleteUsers",
    "scim.groups.readGroups",
];

/// The admin user [`full_config`] creates.
pub const ADMIN: &str = "admin@example.com";
/// A static SCIM token with every scope in [`full_config`].
pub const STATIC_TOKEN: &str = "static-scim-token";
/// An OAuth client with every scope in [`full_config`].
pub const CLIENT_ID: &str = "full-client";
/// Its secret.
pub const CLIENT_SECRET: &str = "full-secret";

/// Strings as owned scope names.
pub fn scopes(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

/// An admin user, a static token and an OAuth client with every scope; no rate limits.
pub fn full_config() -> SimConfig {
    SimConfig {
        clients: vec![SimClient {
            id: CLIENT_ID.into(),
            secret: CLIENT_SECRET.into(),
            scopes: scopes(ALL_SCOPES),
        }],
        tokens: vec![SimToken {
            token: STATIC_TOKEN.into(),
            scopes: scopes(ALL_SCOPES),
        }],
        admin_email: Some(ADMIN.into()),
        ..SimConfig::default()
    }
}

/// Starts a simulator in the current tokio runtime on 127.0.0.1 (free port).
pub fn start_sim(config: SimConfig) -> SimHandle {
    ironbridge::sim::spawn(config).expect("start ironclad-sim in-process")
}

/// The `ironclad-sim` binary, running; killed on drop.
pub struct SimProcess {
    /// The child process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Standard output after the readiness line (collected in the background).
    pub stdout: mpsc::Receiver<String>,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the `ironclad-sim` binary with `args` (`--listen 127.0.0.1:0` is added unless given)
/// and waits (at most 20 s) for its readiness line.
pub fn start_sim_process(args: &[&str]) -> SimProcess {
    let mut cmd = Command::new(bin("ironclad-sim"));
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn ironclad-sim");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            panic!("ironclad-sim printed no readiness line within 20 s");
        }
    };
    let Some(base_url) = first.strip_prefix("ironclad-sim listening on ") else {
        let _ = child.kill();
        panic!("unexpected first line from ironclad-sim: {first:?}");
    };
    SimProcess {
        base_url: base_url.trim().to_string(),
        child,
        stdout: rx,
    }
}

/// One entry of `GET /_sim/requests`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SimRequest {
    /// Sequence number.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Status (0: connection dropped).
    pub status: u16,
    /// Rate-limit bucket.
    pub bucket: String,
    /// Arrival time.
    pub time: String,
    /// Injected fault, if any.
    #[serde(default)]
    pub fault: Option<String>,
}

/// The simulator's request log (every request, `/_sim` ones included).
pub async fn sim_requests(base: &str) -> Vec<SimRequest> {
    reqwest::get(format!("{base}/_sim/requests"))
        .await
        .expect("GET /_sim/requests")
        .json()
        .await
        .expect("request log JSON")
}

/// The request log without the simulator's own `/_sim` requests.
pub async fn api_requests(base: &str) -> Vec<SimRequest> {
    sim_requests(base)
        .await
        .into_iter()
        .filter(|r| r.bucket != "sim")
        .collect()
}

/// Clears the request log.
pub async fn clear_requests(base: &str) {
    let r = reqwest::Client::new()
        .delete(format!("{base}/_sim/requests"))
        .send()
        .await
        .expect("DELETE /_sim/requests");
    assert_eq!(r.status(), 204);
}

/// Replaces the fault set (`json!({})` turns faults off).
pub async fn set_faults(base: &str, faults: Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/_sim/faults"))
        .json(&faults)
        .send()
        .await
        .expect("POST /_sim/faults");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// The full state (`{"users": [...], "groups": [...]}`).
pub async fn sim_state(base: &str) -> Value {
    reqwest::get(format!("{base}/_sim/state"))
        .await
        .expect("GET /_sim/state")
        .json()
        .await
        .expect("state JSON")
}
