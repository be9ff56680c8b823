//! Benchmarks of `ironbridge serve` (run by `bench/serve-latency.sh` and
//! `bench/serve-webhooks.sh`): an in-process `ironclad-sim`, the sample LDIF directory, and the
//! real server on a loopback port, driven through the generic signed webhook.
//!
//! - `latency`: N events a second for S seconds; each changes one person's title in the LDIF
//!   file and names them in a signed webhook. Measures the time from the request to the new
//!   title being visible in the simulator (p50, p99, max), and that time beyond the debounce
//!   window, and counts the simulator's 429 answers (paced runs have the simulator enforce
//!   Ironclad's documented limits).
//! - `webhooks`: R signed requests a second for S seconds (bounded: R*S requests, then it
//!   stops). Measures response times (p50, p99, max), counts statuses (no request may be lost
//!   or refused), and counts the runs the requests coalesced into.
//!
//! Usage: `serve-bench latency [events_per_sec] [secs] [debounce_ms] [unpaced]`,
//! `serve-bench webhooks [requests_per_sec] [secs]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use ironbridge::config::Config;
use ironbridge::serve::runner::{JobSpec, Scope};
use ironbridge::serve::webhook::generic::sign;
use ironbridge::serve::Server;
use ironbridge::sim::{SimClient, SimConfig};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "bench-hmac-key";

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Env {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    sim: String,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    store: Arc<ironbridge::store::Store>,
}

async fn setup(debounce_ms: u64, rate: u32, unpaced: bool) -> Env {
    let all: Vec<String> = ironbridge::sim::scim::ALL_SCOPES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let sim = ironbridge::sim::spawn(SimConfig {
        clients: vec![SimClient {
            id: "bench".into(),
            secret: "bench-secret".into(),
            scopes: all,
        }],
        admin_email: Some("admin@example.com".into()),
        // Paced: the simulator enforces Ironclad's documented limits (one-minute windows), so
        // a 429 would show; unpaced: no limits anywhere.
        rate_limit_scale: (!unpaced).then_some(1.0),
        ..SimConfig::default()
    })
    .unwrap();
    let base = sim.base_url.clone();
    std::mem::forget(sim); // lives as long as the process
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        repo.join("examples/sample/directory.ldif"),
        dir.join("directory.ldif"),
    )
    .unwrap();
    std::fs::copy(
        repo.join("examples/sample/mapping.toml"),
        dir.join("mapping.toml"),
    )
    .unwrap();
    std::fs::write(dir.join("client-secret"), "bench-secret").unwrap();
    std::fs::write(dir.join("hmac-key"), KEY).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Unpaced: the client's rate limits far above Ironclad's documented ones (and the simulator
    // does not limit), to see ironbridge's own share of the latency.
    let limits = if unpaced {
        "[ironclad.rate_limits]\nusers_read_write = 600000\nusers_patch_delete = 600000\ngroups = 600000\nother = 600000\n"
    } else {
        ""
    };
    let cfg = format!(
        r#"version = 1
[ironclad]
base_url = "{base}"
[ironclad.auth]
method = "client_credentials"
client_id = "bench"
client_secret = {{ file = "client-secret" }}
[ironclad.acting_user]
email = "admin@example.com"
{limits}[source]
kind = "ldif"
path = "directory.ldif"
[mapping]
file = "mapping.toml"
[policy]
remove_users = "deactivate"
[serve]
listen = "127.0.0.1:{port}"
debounce_ms = {debounce_ms}
[serve.webhooks.generic]
secret = {{ file = "hmac-key" }}
rate_per_second = {rate}
burst = {rate}
"#
    );
    std::fs::write(dir.join("ironbridge.toml"), cfg).unwrap();
    let cfg = Config::load(&dir.join("ironbridge.toml")).unwrap();
    let server = Server::open(cfg).unwrap();
    let runner = server.runner().clone();
    let store = runner.store().clone();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        server
            .run(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    // Everyone in first.
    let (_, rx) = runner
        .submit_and_wait(JobSpec {
            scope: Scope::Full,
            dry_run: false,
            trigger: "api".into(),
            allow_removals: 0,
        })
        .unwrap();
    let f = rx.await.unwrap();
    assert_eq!(f.outcome, "succeeded");
    Env {
        _dir: tmp,
        dir,
        sim: base,
        url: format!("http://127.0.0.1:{port}/webhooks/generic"),
        stop,
        server,
        store,
    }
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> (u16, Duration) {
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = sign(KEY.as_bytes(), &ts, body.as_bytes());
    let t = Instant::now();
    let status = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-ironbridge-timestamp", ts)
        .header("x-ironbridge-signature", format!("sha256={sig}"))
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    (status, t.elapsed())
}

/// GETs `url` and decodes its JSON body.
async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn sim_titles(client: &reqwest::Client, base: &str) -> HashMap<String, String> {
    let v = get_json(client, format!("{base}/_sim/state")).await;
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| {
            Some((
                u["userName"].as_str()?.to_string(),
                u["title"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// Replaces the title of the entry whose mail is `email`; written atomically.
fn set_title(dir: &Path, text: &mut String, email: &str, title: &str) {
    let blocks: Vec<String> = text
        .split("\n\n")
        .map(|b| {
            if b.lines().any(|l| l == format!("mail: {email}")) {
                b.lines()
                    .map(|l| {
                        if l.starts_with("title: ") {
                            format!("title: {title}")
                        } else {
                            l.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                b.to_string()
            }
        })
        .collect();
    *text = blocks.join("\n\n");
    let tmp = dir.join("directory.ldif.tmp");
    std::fs::write(&tmp, text.as_bytes()).unwrap();
    std::fs::rename(tmp, dir.join("directory.ldif")).unwrap();
}

async fn latency(per_sec: u64, secs: u64, debounce_ms: u64, unpaced: bool) {
    let env = setup(debounce_ms, 1000, unpaced).await;
    let client = reqwest::Client::new();
    let people: Vec<String> = {
        let mut p: Vec<String> = sim_titles(&client, &env.sim)
            .await
            .into_keys()
            .filter(|u| u != "admin@example.com")
            .collect();
        p.sort();
        p
    };
    let mut text = std::fs::read_to_string(env.dir.join("directory.ldif")).unwrap();
    let total = per_sec * secs;
    // person -> [(event index, sent at)]
    let mut pending: BTreeMap<String, Vec<(u64, Instant)>> = BTreeMap::new();
    let mut lat = Vec::new();
    let start = Instant::now();
    let every = Duration::from_secs_f64(1.0 / per_sec as f64);
    let mut next = 0u64;
    let deadline = start + Duration::from_secs(secs) + Duration::from_secs(30);
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    loop {
        ticker.tick().await;
        while next < total && start + every * next as u32 <= Instant::now() {
            let who = &people[(next as usize) % people.len()];
            set_title(&env.dir, &mut text, who, &format!("Bench title {next}"));
            let sent = Instant::now();
            let (st, _) = post(&client, &env.url, format!(r#"{{"people":["{who}"]}}"#)).await;
            assert_eq!(st, 202);
            pending.entry(who.clone()).or_default().push((next, sent));
            next += 1;
        }
        let titles = sim_titles(&client, &env.sim).await;
        let now = Instant::now();
        for (who, evs) in pending.iter_mut() {
            let seen: Option<u64> = titles
                .get(who)
                .and_then(|t| t.strip_prefix("Bench title "))
                .and_then(|n| n.parse().ok());
            if let Some(seen) = seen {
                // An event is applied once its title, or a later one for the same person, shows.
                evs.retain(|(i, sent)| {
                    if *i <= seen {
                        lat.push(now - *sent);
                        false
                    } else {
                        true
                    }
                });
            }
        }
        let left: usize = pending.values().map(Vec::len).sum();
        if next >= total && left == 0 {
            break;
        }
        if Instant::now() > deadline {
            println!("gave up waiting: {left} events never became visible");
            break;
        }
    }
    lat.sort();
    let debounce = Duration::from_millis(debounce_ms);
    let beyond = |d: Duration| d.saturating_sub(debounce);
    let hook_runs: Vec<_> = env
        .store
        .runs(100_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.trigger.starts_with("webhook"))
        .collect();
    let runs = hook_runs.len();
    let mut took: Vec<Duration> = hook_runs
        .iter()
        .filter_map(|r| (r.finished_at? - r.started_at).to_std().ok())
        .collect();
    took.sort();
    println!(
        "latency: {total} events at {per_sec}/s for {secs} s over {} people, debounce {} ms, {}",
        people.len(),
        debounce_ms,
        if unpaced {
            "client pacing off"
        } else {
            "Ironclad's documented rate limits"
        }
    );
    println!(
        "  event -> change visible in the simulator: p50 {}  p99 {}  max {}  (n={})",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
        lat.len()
    );
    println!(
        "  beyond the debounce window: p50 {}  p99 {}",
        ms(beyond(pct(&lat, 0.5))),
        ms(beyond(pct(&lat, 0.99)))
    );
    println!(
        "  webhook runs: {runs}; run duration p50 {}  max {}",
        ms(pct(&took, 0.5)),
        ms(*took.last().unwrap_or(&Duration::ZERO))
    );
    let log = get_json(&client, format!("{}/_sim/requests", env.sim)).await;
    let log = log.as_array().map(Vec::as_slice).unwrap_or_default();
    let scim = log
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/scim/")))
        .count();
    let throttled = log.iter().filter(|r| r["status"] == 429).count();
    println!("  requests to the simulator's SCIM API: {scim}; answered 429: {throttled}");
    let _ = env.stop.send(());
    let _ = env.server.await;
}

async fn webhooks(per_sec: u64, secs: u64) {
    let env = setup(2000, (per_sec * 2) as u32, false).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let total = per_sec * secs;
    let before = env.store.runs(100_000).unwrap().len();
    let start = Instant::now();
    let every = Duration::from_secs_f64(1.0 / per_sec as f64);
    let mut tasks = Vec::with_capacity(total as usize);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        ticker.tick().await;
        let c = client.clone();
        let url = env.url.clone();
        let who = [
            "zoe.angstrom@example.com",
            "francois.lefevre@example.com",
            "tom.brown@example.com",
        ][i as usize % 3];
        tasks.push(tokio::spawn(async move {
            post(&c, &url, format!(r#"{{"people":["{who}"],"n":{i}}}"#)).await
        }));
    }
    let sent_in = start.elapsed();
    let mut lat = Vec::with_capacity(tasks.len());
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for t in tasks {
        let (st, d) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .map(|r| r.unwrap())
            .unwrap_or((0, Duration::from_secs(30)));
        *statuses.entry(st).or_default() += 1;
        lat.push(d);
    }
    // Let the last debounce window flush and its run finish.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let runs = env.store.runs(100_000).unwrap();
    let new_runs = runs.len() - before;
    lat.sort();
    println!(
        "webhooks: {total} signed requests at {per_sec}/s (sent in {:.1} s)",
        sent_in.as_secs_f64()
    );
    println!(
        "  response time: p50 {}  p99 {}  max {}",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO))
    );
    println!("  statuses: {statuses:?} (0 = no answer)");
    println!(
        "  runs started by them: {new_runs} ({:.0} requests per run)",
        total as f64 / new_runs.max(1) as f64
    );
    let _ = env.stop.send(());
    let _ = env.server.await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("latency") => {
            let unpaced = args.get(4).is_some_and(|a| a == "unpaced");
            latency(num(1, 10), num(2, 60), num(3, 2000), unpaced).await
        }
        Some("webhooks") => webhooks(num(1, 1000), num(2, 10)).await,
        _ => {
            eprintln!("usage: serve-bench latency [per_sec] [secs] [debounce_ms] [unpaced] | webhooks [per_sec] [secs]");
            std::process::exit(2);
        }
    }
}
