//! Integration tests: the Ironclad client against the real simulator (`ironbridge::sim`, in
//! process, on a free loopback port). Covers paging beyond 1,000 users, filter escaping, token
//! expiry mid-run, refresh after a 401, `Retry-After`, 5xx retries, POST after a timeout or a
//! dropped connection without a duplicate, a paced run of writes with zero 429s, a 429 slowing
//! its bucket down, and the Users/Groups/Schemas operations.

use ironbridge::config::{ActingUser, Auth, IroncladConfig, RateLimits, RetryPolicy, Secret};
use ironbridge::ironclad::{IroncladClient, IroncladError, Pacer, PatchOp, ScimGroup, ScimUser};
use ironbridge::sim::{SimClient, SimConfig};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "bridge";
const CLIENT_SECRET: &str = "bridge-s3cret-value";
const ADMIN: &str = "admin@example.com";
/// The simulator runs with limits per second instead of per minute.
const SCALE: f64 = 60.0;

const ALL_SCOPES: &[&str] = &[
    "scim.users.readUsers",
    "scim.users.createUsers",
    "scim.users.updateUsers",
    "scim.users.deleteUsers",
    "scim.groups.readGroups",
    "scim.groups.createGroups",
    "scim.groups.updateGroups",
    "scim.groups.deleteGroups",
    "scim.schemas.readSchemas",
];

struct Sim {
    base: String,
    admin: reqwest::Client,
    _handle: ironbridge::sim::SimHandle,
}

fn sim_config() -> SimConfig {
    SimConfig {
        clients: vec![SimClient {
            id: CLIENT_ID.into(),
            secret: CLIENT_SECRET.into(),
            scopes: ALL_SCOPES.iter().map(|s| s.to_string()).collect(),
        }],
        admin_email: Some(ADMIN.into()),
        rate_limit_scale: Some(SCALE),
        ..Default::default()
    }
}

fn start(config: SimConfig) -> Sim {
    let handle = ironbridge::sim::spawn(config).unwrap();
    Sim {
        base: handle.base_url.trim_end_matches('/').to_string(),
        admin: reqwest::Client::new(),
        _handle: handle,
    }
}

fn sim() -> Sim {
    start(sim_config())
}

impl Sim {
    /// Client configuration with the documented limits scaled like the simulator's.
    fn config(&self) -> IroncladConfig {
        let d = RateLimits::default();
        IroncladConfig {
            scim_url: url::Url::parse(&format!("{}/scim/v2", self.base)).unwrap(),
            oauth_url: url::Url::parse(&format!("{}/oauth", self.base)).unwrap(),
            auth: Auth::ClientCredentials {
                client_id: CLIENT_ID.into(),
                client_secret: Secret::new(CLIENT_SECRET),
                scopes: vec![],
            },
            acting_user: Some(ActingUser::Email(ADMIN.into())),
            ca_pem: None,
            page_size: 1000,
            max_concurrency: 8,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_attempts: 6,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(500),
                max_elapsed: Duration::from_secs(30),
            },
            // The documented limits, in the simulator's scaled window.
            rate_limits: RateLimits {
                window: Duration::from_secs_f64(60.0 / SCALE),
                ..d
            },
        }
    }

    fn client(&self) -> IroncladClient {
        IroncladClient::new(&self.config()).unwrap()
    }

    async fn faults(&self, f: Value) {
        let r = self
            .admin
            .post(format!("{}/_sim/faults", self.base))
            .json(&f)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    async fn requests(&self) -> Vec<Value> {
        self.admin
            .get(format!("{}/_sim/requests", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn clear_requests(&self) {
        crate::support::sim::clear_requests(&self.base).await;
    }

    /// SCIM requests (not OAuth or `/_sim`) from the log.
    async fn scim_requests(&self) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|e| e["path"].as_str().unwrap().starts_with("/scim/v2"))
            .collect()
    }

    async fn state(&self) -> Value {
        self.admin
            .get(format!("{}/_sim/state", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// userNames of every user in the simulator's state.
    async fn user_names(&self) -> Vec<String> {
        let st = self.state().await;
        let users = st["users"]
            .as_array()
            .cloned()
            .or_else(|| {
                st["users"]
                    .as_object()
                    .map(|m| m.values().cloned().collect())
            })
            .unwrap_or_default();
        users
            .iter()
            .map(|u| u["userName"].as_str().unwrap().to_string())
            .collect()
    }

    async fn revoke_tokens(&self) {
        let r = self
            .admin
            .post(format!("{}/_sim/revoke-tokens", self.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

fn new_user(user_name: &str) -> ScimUser {
    ScimUser(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true,
    }))
}

fn status_count(log: &[Value], status: u64) -> usize {
    log.iter().filter(|e| e["status"] == status).count()
}

fn millis(e: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// Creates `n` users concurrently through the client.
async fn create_many(client: &Arc<IroncladClient>, prefix: &str, n: usize) -> Vec<ScimUser> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let c = client.clone();
        let name = format!("{prefix}{i:05}@example.com");
        set.spawn(async move { c.create_user(&new_user(&name)).await });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_run_of_2000_writes_gets_no_429() {
    let sim = sim();
    let client = Arc::new(sim.client());
    let started = Instant::now();
    // 1,900 creates (POST, the 600/s bucket) and, alongside, 100 PATCHes (the 50/s bucket).
    let seed = create_many(&client, "patch", 100).await;
    let mut set = tokio::task::JoinSet::new();
    for u in seed {
        let c = client.clone();
        set.spawn(async move {
            c.patch_user(
                u.id().unwrap(),
                &[PatchOp::replace("title", json!("Counsel"))],
            )
            .await
            .map(|_| ())
        });
    }
    for i in 0..1800 {
        let c = client.clone();
        let name = format!("paced{i:05}@example.com");
        set.spawn(async move { c.create_user(&new_user(&name)).await.map(|_| ()) });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    let log = sim.scim_requests().await;
    let writes = log.iter().filter(|e| e["method"] != "GET").count();
    assert_eq!(writes, 2000, "every write sent exactly once");
    assert_eq!(
        status_count(&log, 429),
        0,
        "a paced run must not be throttled"
    );
    let stats = client.stats();
    assert_eq!(stats.throttled, 0);
    assert_eq!(stats.retries, 0);
    // 1,900 POSTs at 570/s take over 3 s: pacing, not luck, kept the run under the limit.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(stats.pacing_wait_secs > 0.0);
}

#[tokio::test]
async fn paging_beyond_1000_users_returns_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    let users: Vec<Value> = (0..2500)
        .map(|i| new_user(&format!("page{i:05}@example.com")).into_value())
        .collect();
    std::fs::write(
        &seed,
        serde_json::to_vec(&json!({ "users": users })).unwrap(),
    )
    .unwrap();
    let sim = start(SimConfig {
        seed: Some(seed),
        ..sim_config()
    });
    let client = sim.client();
    let users = client.list_users(None).await.unwrap();
    let mut names: Vec<&str> = users.iter().map(|u| u.user_name().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), users.len(), "no user twice");
    assert_eq!(users.len(), 2501, "2,500 seeded plus the admin");
    let lists: Vec<Value> = sim
        .scim_requests()
        .await
        .into_iter()
        .filter(|e| e["method"] == "GET")
        .collect();
    assert_eq!(lists.len(), 3, "pages of 1,000: {lists:?}");
    assert!(lists
        .iter()
        .all(|e| e["path"].as_str().unwrap().contains("count=1000")));
    assert_eq!(client.stats().duplicates_dropped, 0);
}

#[tokio::test]
async fn filter_values_with_quotes_and_backslashes_find_exactly_their_user() {
    let sim = sim();
    let client = sim.client();
    let quote = r#"o"brien@example.com"#;
    let backslash = r#"back\slash@example.com"#;
    for n in [
        quote,
        backslash,
        "obrien@example.com",
        "backslash@example.com",
    ] {
        client.create_user(&new_user(n)).await.unwrap();
    }
    for n in [quote, backslash] {
        let found = client.find_user_by_user_name(n).await.unwrap().unwrap();
        assert_eq!(found.user_name(), Some(n));
    }
    let filter = ironbridge::ironclad::filter::eq("userName", quote);
    let listed = client.list_users(Some(filter)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(client
        .find_user_by_user_name(r#"nobody"@example.com"#)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expiring_mid_run_are_refreshed_without_failures() {
    let sim = start(SimConfig {
        token_ttl: Duration::from_secs(1),
        ..sim_config()
    });
    let client = sim.client();
    let end = Instant::now() + Duration::from_millis(3200);
    let mut n = 0;
    while Instant::now() < end {
        client.list_users(None).await.unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(n > 20);
    let stats = client.stats();
    assert!(stats.token_fetches >= 3, "{stats:?}");
    let log = sim.scim_requests().await;
    assert!(
        log.iter().all(|e| e["status"] == 200),
        "every call succeeded"
    );
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_retries() {
    let sim = sim();
    let client = sim.client();
    client.list_users(None).await.unwrap();
    sim.revoke_tokens().await;
    let users = client.list_users(None).await.unwrap();
    assert_eq!(users.len(), 1);
    let log = sim.scim_requests().await;
    assert_eq!(status_count(&log, 401), 1, "{log:?}");
    let stats = client.stats();
    assert_eq!(stats.unauthorized_refreshes, 1);
    assert_eq!(stats.token_fetches, 2);
}

#[tokio::test]
async fn retry_after_is_honoured_and_pauses_the_bucket() {
    let sim = sim();
    let client = sim.client();
    client.list_users(None).await.unwrap();
    sim.faults(json!({"burst_429": 2, "retry_after": "1"}))
        .await;
    let started = Instant::now();
    client.list_users(None).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let log = sim.scim_requests().await;
    let tail: Vec<&Value> = log
        .iter()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert_eq!(
        tail.iter()
            .map(|e| e["status"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![429, 429, 200]
    );
    assert!(millis(tail[1]) - millis(tail[0]) >= 990);
    assert!(millis(tail[2]) - millis(tail[1]) >= 990);
    assert_eq!(client.stats().throttled, 2);
}

#[tokio::test]
async fn answers_429_are_waited_out_beyond_max_attempts() {
    let sim = sim();
    let mut cfg = sim.config();
    cfg.retry.max_attempts = 3;
    let client = IroncladClient::new(&cfg).unwrap();
    client.list_users(None).await.unwrap();
    // Five refusals with "come back now": more than the three attempts, none of them a failure.
    sim.faults(json!({"burst_429": 5, "retry_after": "0"}))
        .await;
    client.list_users(None).await.unwrap();
    let log = sim.scim_requests().await;
    assert_eq!(status_count(&log, 429), 5, "{log:?}");
    assert_eq!(client.stats().throttled, 5);
    // Errors still count against max_attempts.
    sim.faults(json!({"error_rate": 1.0, "error_status": 503, "methods": ["GET"]}))
        .await;
    let e = client.get_user("nope").await.unwrap_err();
    assert!(
        matches!(e, IroncladError::Exhausted { attempts: 3, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_until_success_and_bounded() {
    let sim = sim();
    let client = sim.client();
    sim.faults(json!({"error_rate": 0.5, "error_status": 503, "seed": 7, "methods": ["GET"]}))
        .await;
    for _ in 0..20 {
        client.list_users(None).await.unwrap();
    }
    let log = sim.scim_requests().await;
    assert!(status_count(&log, 503) > 0, "the fault fired");
    assert_eq!(status_count(&log, 200), 20);
    assert_eq!(client.stats().retries as usize, status_count(&log, 503));

    sim.faults(json!({"error_rate": 1.0, "error_status": 502, "methods": ["GET"]}))
        .await;
    let before = sim.scim_requests().await.len();
    let e = client.get_user("nope").await.unwrap_err();
    assert_eq!(e.status(), Some(502));
    assert!(
        matches!(e, IroncladError::Exhausted { attempts: 6, .. }),
        "{e}"
    );
    assert_eq!(sim.scim_requests().await.len() - before, 6);
}

#[tokio::test]
async fn a_post_that_times_out_after_applying_creates_no_duplicate() {
    let sim = sim();
    let mut cfg = sim.config();
    cfg.request_timeout = Duration::from_millis(400);
    let client = IroncladClient::new(&cfg).unwrap();
    sim.faults(json!({"latency_after_ms": 1500, "methods": ["POST"]}))
        .await;
    let u = client
        .create_user(&new_user("slow@example.com"))
        .await
        .unwrap();
    assert_eq!(u.user_name(), Some("slow@example.com"));
    assert!(u.id().is_some());
    sim.faults(json!({})).await;
    let names = sim.user_names().await;
    assert_eq!(names.iter().filter(|n| *n == "slow@example.com").count(), 1);
    // One POST went out and got no answer; the lookup found the user, so nothing was resent.
    // (Counted on the client side: the simulator does not log a request whose client hung up.)
    let stats = client.stats();
    let no_answer = stats
        .requests
        .get(&("users_read_write".to_string(), 0))
        .copied();
    assert_eq!(no_answer, Some(1), "{stats:?}");
    assert_eq!(stats.with_status(201), 0, "no second POST: {stats:?}");
    let lookups = sim
        .scim_requests()
        .await
        .into_iter()
        .filter(|e| e["method"] == "GET" && e["path"].as_str().unwrap().contains("filter=userName"))
        .count();
    assert_eq!(lookups, 1);
    assert_eq!(client.stats().recovered_creates, 1);
}

#[tokio::test]
async fn a_post_whose_connection_drops_after_applying_creates_no_duplicate() {
    let sim = sim();
    let client = sim.client();
    sim.faults(json!({"drop_rate": 1.0, "drop_after_apply": true, "methods": ["POST"]}))
        .await;
    let g = client
        .create_group(&ScimGroup(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Legal \"Ops\"",
            "externalId": "grp-legal",
        })))
        .await
        .unwrap();
    assert_eq!(g.display_name(), Some("Legal \"Ops\""));
    let u = client
        .create_user(&new_user("dropped@example.com"))
        .await
        .unwrap();
    assert!(u.id().is_some());
    sim.faults(json!({})).await;
    assert_eq!(client.list_groups(None).await.unwrap().len(), 1);
    let names = sim.user_names().await;
    assert_eq!(
        names.iter().filter(|n| *n == "dropped@example.com").count(),
        1
    );
}

#[tokio::test]
async fn a_post_that_fails_before_applying_is_sent_again() {
    let sim = sim();
    let mut cfg = sim.config();
    // Enough attempts and backoff that the test can clear the fault before they run out.
    cfg.retry.max_attempts = 10;
    cfg.retry.base_delay = Duration::from_millis(100);
    let client = Arc::new(IroncladClient::new(&cfg).unwrap());
    sim.faults(json!({"drop_rate": 1.0, "drop_after_apply": false, "methods": ["POST"]}))
        .await;
    let c = client.clone();
    let task = tokio::spawn(async move { c.create_user(&new_user("retry@example.com")).await });
    // Once an attempt has been dropped, let the next one through.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sim
        .scim_requests()
        .await
        .iter()
        .any(|e| e["method"] == "POST" && e["status"] == 0)
    {
        assert!(Instant::now() < deadline, "no POST was dropped");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sim.faults(json!({})).await;
    let u = task.await.unwrap().unwrap();
    assert_eq!(u.user_name(), Some("retry@example.com"));
    let names = sim.user_names().await;
    assert_eq!(
        names.iter().filter(|n| *n == "retry@example.com").count(),
        1
    );
    // Each dropped POST was followed by a lookup that found nothing, then one POST succeeded.
    let log = sim.scim_requests().await;
    let dropped = log
        .iter()
        .filter(|e| e["method"] == "POST" && e["status"] == 0)
        .count();
    let lookups = log
        .iter()
        .filter(|e| e["method"] == "GET" && e["path"].as_str().unwrap().contains("filter="))
        .count();
    let created = log
        .iter()
        .filter(|e| e["method"] == "POST" && e["status"] == 201)
        .count();
    assert!(dropped >= 1);
    assert_eq!(lookups, dropped);
    assert_eq!(created, 1);
    assert_eq!(client.stats().recovered_creates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_from_the_real_limit_slows_the_bucket_down() {
    let sim = sim();
    let mut cfg = sim.config();
    // The client believes the PATCH bucket is four times larger than it is.
    cfg.rate_limits.users_patch_delete *= 4;
    // Slowed down for a minute, so the end of the test still sees it.
    let pacer = Pacer::ironclad(&cfg.rate_limits).with_recovery(Duration::from_secs(60));
    let client = Arc::new(IroncladClient::with_pacer(&cfg, pacer).unwrap());
    let users = create_many(&client, "slow", 5).await;
    let full = client.pacer().current_rate("users_patch_delete").unwrap();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..150 {
        let c = client.clone();
        let id = users[i % users.len()].id().unwrap().to_string();
        set.spawn(async move {
            c.patch_user(&id, &[PatchOp::replace("title", json!(format!("t{i}")))])
                .await
                .map(|_| ())
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    let stats = client.stats();
    assert!(
        stats.throttled > 0,
        "the over-eager pace met the real limit"
    );
    let now = client.pacer().current_rate("users_patch_delete").unwrap();
    assert!(now < full, "the bucket slowed down: {now} < {full}");
}

#[tokio::test]
async fn users_groups_and_schemas_round_trip() {
    let sim = sim();
    let client = sim.client();
    let mut u = new_user("ada@example.com");
    u.0["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] =
        json!({"department": "Legal", "employeeNumber": "42"});
    u.0["schemas"].as_array_mut().unwrap().push(json!(
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    ));
    let created = client.create_user(&u).await.unwrap();
    let id = created.id().unwrap().to_string();

    // PUT from what was read keeps what this test did not touch.
    let mut read = client.get_user(&id).await.unwrap().unwrap();
    read.0["title"] = json!("Counsel");
    let put = client.replace_user(&id, &read).await.unwrap();
    assert_eq!(put.title(), Some("Counsel"));
    assert_eq!(
        put.str_attr("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"),
        Some("42")
    );

    client
        .patch_user(&id, &[PatchOp::replace("name.givenName", json!("Augusta"))])
        .await
        .unwrap();
    assert_eq!(
        client.get_user(&id).await.unwrap().unwrap().given_name(),
        Some("Augusta")
    );

    let g = client
        .create_group(&ScimGroup(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Legal Ops Group",
        })))
        .await
        .unwrap();
    let gid = g.id().unwrap().to_string();
    client.add_group_members(&gid, &[&id]).await.unwrap();
    let g = client.get_group(&gid).await.unwrap().unwrap();
    assert_eq!(
        g.members()
            .iter()
            .map(|m| m.value.as_str())
            .collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    client.remove_group_members(&gid, &[&id]).await.unwrap();
    assert!(client
        .get_group(&gid)
        .await
        .unwrap()
        .unwrap()
        .members()
        .is_empty());
    let mut g2 = client.get_group(&gid).await.unwrap().unwrap();
    g2.0["displayName"] = json!("Legal Operations");
    assert_eq!(
        client
            .replace_group(&gid, &g2)
            .await
            .unwrap()
            .display_name(),
        Some("Legal Operations")
    );
    let found = client
        .find_group("displayName", "Legal Operations")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id(), Some(gid.as_str()));
    client.delete_group(&gid).await.unwrap();
    assert!(client.get_group(&gid).await.unwrap().is_none());

    let schemas = client.schemas().await.unwrap();
    assert!(schemas
        .iter()
        .any(|s| s["id"] == "urn:ietf:params:scim:schemas:core:2.0:User"));
    assert!(client
        .schema("urn:ietf:params:scim:schemas:core:2.0:Group")
        .await
        .unwrap()
        .is_some());

    // A duplicate userName is a typed HTTP error with SCIM's scimType.
    let e = client
        .create_user(&new_user("ADA@example.com"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409));
    assert_eq!(e.scim_type(), Some("uniqueness"));
    assert!(e.to_string().contains("POST /Users"), "{e}");

    client.delete_user(&id).await.unwrap();
    assert!(client.get_user(&id).await.unwrap().is_none());
    let e = client.delete_user(&id).await.unwrap_err();
    assert!(e.is_not_found());
}

#[tokio::test]
async fn granted_scopes_and_token_errors_never_show_the_secret() {
    let sim = sim();
    let s = sim.client().granted_scopes().await.unwrap();
    for scope in ALL_SCOPES {
        assert!(s.has(scope), "{scope} in {s:?}");
    }
    let mut cfg = sim.config();
    cfg.auth = Auth::ClientCredentials {
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new("wrong-secret-value"),
        scopes: vec![],
    };
    let e = IroncladClient::new(&cfg)
        .unwrap()
        .list_users(None)
        .await
        .unwrap_err();
    assert_eq!(e.metric_label(), "token_invalid_client");
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("wrong-secret-value") && !text.contains(CLIENT_SECRET),
        "{text}"
    );
}

/// A create whose userName is taken by then never takes the account over silently: one with
/// another externalId is refused; one without an externalId is adopted only when the mapping's
/// fallback keys include userName; and after an unknown outcome, an account that is not ours
/// is not mistaken for the create having been applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_meeting_an_existing_account_takes_it_over_only_when_allowed() {
    use ironbridge::reconcile::apply;
    use ironbridge::reconcile::{UserAction, UserPlan};
    let sim = sim();
    let client = sim.client();
    let mut foreign = new_user("foreign@example.com");
    foreign.0["externalId"] = json!("someone-else");
    client.create_user(&foreign).await.unwrap();
    client
        .create_user(&new_user("bare@example.com"))
        .await
        .unwrap();
    let create = |src: &str, name: &str| UserPlan {
        source_id: Some(src.into()),
        locator: Some(format!("uid={src}").into()),
        user_name: name.into(),
        ironclad_id: None,
        action: UserAction::Create {
            user: json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": name, "externalId": src, "title": "Counsel",
                "name": {"givenName": "Test", "familyName": "User"},
                "emails": [{"value": name, "type": "work", "primary": true}],
            }),
        },
        seen_version: None,
        seen: None,
        held_action: None,
    };
    let plan = users_plan;
    let dir = tempfile::tempdir().unwrap();
    let (store, audit, mut opts) = apply_setup(
        dir.path(),
        sim.config().rate_limits,
        2,
        false,
        Duration::from_secs(3600),
    );
    let result = |r: &apply::ApplyReport, name: &str| {
        r.outcomes
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.result.clone())
    };
    let ext_of = |state: &Value, name: &str| {
        state["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["userName"] == name)
            .map(|u| u["externalId"].clone())
    };

    let both = plan(vec![
        create("s1", "foreign@example.com"),
        create("s2", "bare@example.com"),
    ]);
    let r = apply::apply(&both, &client, &store, &audit, &opts).await;
    assert_eq!(
        result(&r, "foreign@example.com").as_deref(),
        Some("refused"),
        "{r:?}"
    );
    assert_eq!(
        result(&r, "bare@example.com").as_deref(),
        Some("refused"),
        "{r:?}"
    );
    assert!(store.links("user").unwrap().is_empty());

    opts.adopt_by_user_name = true;
    let r = apply::apply(&both, &client, &store, &audit, &opts).await;
    assert_eq!(
        result(&r, "foreign@example.com").as_deref(),
        Some("refused")
    );
    assert_eq!(result(&r, "bare@example.com").as_deref(), Some("applied"));
    let state = sim.state().await;
    assert_eq!(
        ext_of(&state, "foreign@example.com"),
        Some(json!("someone-else"))
    );
    assert_eq!(ext_of(&state, "bare@example.com"), Some(json!("s2")));
    let links = store.links("user").unwrap();
    assert_eq!(links.keys().collect::<Vec<_>>(), vec!["s2"]);

    // Every POST's connection dropped: the outcome is unknown each time, and the account
    // found by its userName is someone else's, so the create is not taken as applied.
    sim.faults(json!({"drop_rate": 1.0, "methods": ["POST"]}))
        .await;
    let r = apply::apply(
        &plan(vec![create("s3", "foreign@example.com")]),
        &client,
        &store,
        &audit,
        &opts,
    )
    .await;
    assert_ne!(
        result(&r, "foreign@example.com").as_deref(),
        Some("applied")
    );
    assert!(!store.links("user").unwrap().contains_key("s3"));
    // The failed write's audit line carries the request id it was sent with.
    let failed: Vec<Value> = std::fs::read_to_string(dir.path().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["source_id"] == "s3" && l["phase"] == "outcome")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]["error"].is_string(), "{failed:?}");
    assert!(
        failed[0]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{failed:?}"
    );
    assert_eq!(
        ext_of(&sim.state().await, "foreign@example.com"),
        Some(json!("someone-else"))
    );
}

/// Where the mapping allows either removal, leavers go partly as DELETE (the PATCH/DELETE
/// bucket) and mostly as PUT `active: false` (the twelve times larger PUT/POST bucket), and
/// every one of them is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_that_may_go_either_way_use_both_buckets() {
    use ironbridge::config::RemoveMode;
    use ironbridge::reconcile::apply;
    use ironbridge::reconcile::{UserAction, UserPlan};
    let sim = sim();
    let client = Arc::new(sim.client());
    let created = create_many(&client, "leaver", 13).await;
    let lines: Vec<UserPlan> = created
        .iter()
        .enumerate()
        .map(|(i, u)| UserPlan {
            source_id: Some(format!("s{i}").into()),
            locator: None,
            user_name: u.0["userName"].as_str().unwrap().to_string(),
            ironclad_id: Some(u.0["id"].as_str().unwrap().to_string()),
            action: UserAction::Remove {
                how: RemoveMode::DeleteOrDeactivate,
                reason: "no longer in the source".into(),
            },
            seen_version: None,
            seen: Some(u.0.clone()),
            held_action: None,
        })
        .collect();
    let plan = users_plan(lines);
    let dir = tempfile::tempdir().unwrap();
    let (store, audit, opts) = apply_setup(
        dir.path(),
        sim.config().rate_limits,
        4,
        true,
        Duration::from_secs(3600),
    );
    let r = apply::apply(&plan, &client, &store, &audit, &opts).await;
    assert_eq!(r.counts.get("applied"), Some(&13), "{r:?}");
    let writes: Vec<String> = sim
        .scim_requests()
        .await
        .into_iter()
        .filter(|e| e["path"].as_str().unwrap().starts_with("/scim/v2/Users/"))
        .map(|e| e["method"].as_str().unwrap().to_string())
        .collect();
    let count = |m: &str| writes.iter().filter(|w| *w == m).count();
    assert_eq!((count("PUT"), count("DELETE")), (12, 1), "{writes:?}");
    // The report's methods are the requests sent.
    let ops: Vec<(&str, usize)> = r.operations.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(ops, vec![("delete", 1), ("put", 12)], "{r:?}");
    let left: Vec<String> = sim.user_names().await;
    assert!(
        !left.iter().any(|n| n.starts_with("leaver")),
        "not removed: {left:?}"
    );
    // The audit names the request each removal went as.
    let audit_text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit_text.contains("\"request\":\"PUT\"") && audit_text.contains("\"request\":\"DELETE\"")
    );
}

/// A PUT carries the whole user. Once the plan's view of the users is older than
/// `put_reread_after`, each PUT (an update, or a deactivation) first reads its user again: one
/// edited in Ironclad since the listing is refused (nothing it holds is overwritten; the next
/// run plans it afresh), one unchanged is written from what was re-read, and one deleted
/// meanwhile is not written at all. With a recent listing no GET is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_long_after_the_listing_never_overwrites_what_changed_in_ironclad_meanwhile() {
    use ironbridge::config::RemoveMode;
    use ironbridge::reconcile::apply;
    use ironbridge::reconcile::{AttrChange, UserAction, UserPlan};
    const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let sim = sim();
    let client = sim.client();
    let counsel = |name: &str| {
        let mut u = new_user(name);
        u.0["title"] = json!("Counsel");
        u.0[ENT] = json!({"department": "Legal"});
        u
    };
    let edited = client
        .create_user(&counsel("edited@example.com"))
        .await
        .unwrap();
    let steady = client
        .create_user(&counsel("steady@example.com"))
        .await
        .unwrap();
    let recent = client
        .create_user(&counsel("recent@example.com"))
        .await
        .unwrap();
    let leaver = client
        .create_user(&new_user("leaver@example.com"))
        .await
        .unwrap();
    let gone = client
        .create_user(&new_user("gone@example.com"))
        .await
        .unwrap();
    let id_of = |u: &ScimUser| u.0["id"].as_str().unwrap().to_string();
    // The lastModified of the listing the plan was made from comes before these edits.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // After that listing, an administrator moves `edited` to another department (not an
    // attribute this plan manages) and deletes `gone`.
    client
        .patch_user(
            &id_of(&edited),
            &[PatchOp::replace(
                &format!("{ENT}:department"),
                json!("Finance"),
            )],
        )
        .await
        .unwrap();
    client.delete_user(&id_of(&gone)).await.unwrap();
    let line = |u: &ScimUser, src: &str, action: UserAction| UserPlan {
        source_id: Some(src.into()),
        locator: None,
        user_name: u.0["userName"].as_str().unwrap().to_string(),
        ironclad_id: Some(id_of(u)),
        action,
        seen_version: u.0["meta"]["lastModified"].as_str().map(str::to_string),
        seen: Some(u.0.clone()),
        held_action: None,
    };
    let partner = || UserAction::Update {
        changes: vec![AttrChange {
            path: "title".into(),
            before: json!("Counsel"),
            after: json!("Partner"),
        }],
    };
    let deactivate = || UserAction::Remove {
        how: RemoveMode::Deactivate,
        reason: "no longer in the source".into(),
    };
    let plan = users_plan;
    let dir = tempfile::tempdir().unwrap();
    let (store, audit, mut opts) = apply_setup(
        dir.path(),
        sim.config().rate_limits,
        2,
        false,
        Duration::ZERO,
    );
    let log = || async {
        sim.scim_requests()
            .await
            .into_iter()
            .map(|e| {
                (
                    e["method"].as_str().unwrap().to_string(),
                    e["path"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<(String, String)>>()
    };
    let sent = |log: &[(String, String)], m: &str, u: &ScimUser| {
        log.iter()
            .filter(|(lm, p)| lm == m && p.ends_with(&id_of(u)))
            .count()
    };
    let result = |r: &apply::ApplyReport, name: &str| {
        r.outcomes
            .iter()
            .find(|o| o.name == name)
            .map(|o| (o.result.clone(), o.detail.clone().unwrap_or_default()))
            .unwrap()
    };

    sim.clear_requests().await;
    let r = apply::apply(
        &plan(vec![
            line(&edited, "s1", partner()),
            line(&steady, "s2", partner()),
            line(&leaver, "s3", deactivate()),
            line(&gone, "s4", deactivate()),
        ]),
        &client,
        &store,
        &audit,
        &opts,
    )
    .await;
    let first = log().await;
    let (res, why) = result(&r, "edited@example.com");
    assert_eq!(res, "refused", "{r:?}");
    assert!(
        why.contains("changed in Ironclad since it was listed"),
        "{why}"
    );
    assert_eq!(result(&r, "steady@example.com").0, "applied", "{r:?}");
    assert_eq!(result(&r, "leaver@example.com").0, "applied", "{r:?}");
    assert_eq!(result(&r, "gone@example.com").0, "applied", "{r:?}");
    // Every PUT went after a GET of its user; nothing was written to `edited` or `gone`.
    assert_eq!(
        (sent(&first, "GET", &edited), sent(&first, "PUT", &edited)),
        (1, 0),
        "{first:?}"
    );
    assert_eq!(
        (sent(&first, "GET", &steady), sent(&first, "PUT", &steady)),
        (1, 1),
        "{first:?}"
    );
    assert_eq!(
        (sent(&first, "GET", &leaver), sent(&first, "PUT", &leaver)),
        (1, 1),
        "{first:?}"
    );
    assert_eq!(sent(&first, "GET", &gone), 1, "{first:?}");
    assert!(
        first
            .iter()
            .all(|(m, p)| m == "GET"
                || !(p.ends_with(&id_of(&gone)) || p.ends_with(&id_of(&edited)))),
        "{first:?}"
    );
    let now = client.get_user(&id_of(&edited)).await.unwrap().unwrap();
    assert_eq!(
        (&now.0["title"], &now.0[ENT]["department"]),
        (&json!("Counsel"), &json!("Finance"))
    );
    let now = client.get_user(&id_of(&steady)).await.unwrap().unwrap();
    assert_eq!(
        (&now.0["title"], &now.0[ENT]["department"]),
        (&json!("Partner"), &json!("Legal"))
    );
    assert!(client.get_user(&id_of(&leaver)).await.unwrap().is_none());
    // The audit says the removal of `gone` found it gone, not that a write was answered.
    let audit_lines: Vec<Value> = std::fs::read_to_string(dir.path().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["source_id"] == "s4")
        .collect();
    assert_eq!(audit_lines.len(), 1, "{audit_lines:?}");
    assert!(
        audit_lines[0]
            .to_string()
            .contains("already gone when re-read"),
        "{audit_lines:?}"
    );

    // A listing made moments ago: the PUT goes at once, without a GET.
    opts.seen_at = Instant::now();
    opts.put_reread_after = Duration::from_secs(3600);
    sim.clear_requests().await;
    let r = apply::apply(
        &plan(vec![line(&recent, "s5", partner())]),
        &client,
        &store,
        &audit,
        &opts,
    )
    .await;
    assert_eq!(result(&r, "recent@example.com").0, "applied", "{r:?}");
    let second = log().await;
    assert_eq!(
        (sent(&second, "GET", &recent), sent(&second, "PUT", &recent)),
        (0, 1),
        "{second:?}"
    );
}

/// A plan of these user lines only, from a complete source.
fn users_plan(users: Vec<ironbridge::reconcile::UserPlan>) -> ironbridge::reconcile::Plan {
    ironbridge::reconcile::Plan {
        created_at: chrono::Utc::now(),
        source_complete: true,
        source_incomplete: None,
        users,
        groups: Vec::new(),
        summary: Default::default(),
        notes: Vec::new(),
        converged: Vec::new(),
        settled_creates: Vec::new(),
        unlinked_with_external_id: 0,
    }
}

/// A state store and audit log in `dir`, and apply options for run `run-1` with these limits.
fn apply_setup(
    dir: &std::path::Path,
    rate_limits: RateLimits,
    concurrency: usize,
    adopt_by_user_name: bool,
    put_reread_after: Duration,
) -> (
    Arc<ironbridge::store::Store>,
    ironbridge::reconcile::apply::Audit,
    ironbridge::reconcile::apply::ApplyOptions,
) {
    let store = Arc::new(ironbridge::store::Store::open(&dir.join("state.db")).unwrap());
    let audit_log = dir.join("audit.jsonl");
    let audit =
        ironbridge::reconcile::apply::Audit::open(store.clone(), &audit_log, "run-1").unwrap();
    let opts = ironbridge::reconcile::apply::ApplyOptions {
        run_id: "run-1".into(),
        audit_log,
        concurrency,
        rate_limits,
        quarantine_after: 3,
        apply_held: false,
        write_method: Default::default(),
        adopt_by_user_name,
        seen_at: Instant::now(),
        put_reread_after,
    };
    (store, audit, opts)
}
