//! Integration tests of `ironclad-sim`, over real HTTP on 127.0.0.1: every documented
//! behaviour of Ironclad's OAuth and SCIM APIs the simulator reproduces (grants and their
//! errors, scopes per operation, acting-user rules, paging, filters, uniqueness, validation,
//! PUT/PATCH, `active: false`, DELETE, groups, meta, rate limits), its test API (faults, token
//! revocation, request log, state, seed/save), the binary's command line, a 100,000-user load,
//! and the independent scim2-tester compliance run.

use crate::support::sim::*;
use ironbridge::sim::{SimClient, SimConfig, SimToken};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const IRONCLAD: &str = "urn:ietf:params:scim:schemas:extension:ironclad:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// A SCIM caller: base URL, bearer token, optional acting-user headers.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
    headers: Vec<(&'static str, String)>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Api {
    fn new(base: &str, token: &str) -> Self {
        Api {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            token: token.to_string(),
            headers: Vec::new(),
        }
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}/scim/v2{path}", self.base)
        };
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        for (k, v) in &self.headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }
    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }
    async fn patch(&self, path: &str, ops: Value) -> Reply {
        let body = json!({"schemas": [PATCH_OP], "Operations": ops});
        self.call(Method::PATCH, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }
    /// Creates a user, asserting 201; returns it.
    async fn user(&self, user_name: &str) -> Value {
        let r = self.post("/Users", user(user_name)).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    }
}

fn user(user_name: &str) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": "Given", "familyName": "Family"},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true,
    })
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn assert_scim_error(r: &Reply, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.body["schemas"][0], ERROR, "{}", r.body);
    assert_eq!(r.body["status"], status.to_string(), "{}", r.body);
    match scim_type {
        Some(t) => assert_eq!(r.body["scimType"], t, "{}", r.body),
        None => assert!(r.body.get("scimType").is_none(), "{}", r.body),
    }
}

async fn token_request(base: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Reply {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.json().await.unwrap(),
    }
}

async fn cc_token(base: &str) -> String {
    let r = token_request(
        base,
        &[("grant_type", "client_credentials")],
        Some((CLIENT_ID, CLIENT_SECRET)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_string()
}

fn assert_oauth_error(r: &Reply, status: u16, error: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.body["error"], error, "{}", r.body);
    assert!(r.body["error_description"].is_string(), "{}", r.body);
}

fn seed_file(dir: &tempfile::TempDir, doc: &Value) -> std::path::PathBuf {
    let p = dir.path().join("seed.json");
    std::fs::write(&p, doc.to_string()).unwrap();
    p
}

// ---------------------------------------------------------------- OAuth

#[tokio::test]
async fn oauth_client_credentials_basic_and_body() {
    let sim = start_sim(SimConfig {
        token_ttl: Duration::from_secs(120),
        ..full_config()
    });
    // HTTP Basic client authentication, all scopes.
    let r = token_request(
        &sim.base_url,
        &[("grant_type", "client_credentials")],
        Some((CLIENT_ID, CLIENT_SECRET)),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 120);
    assert_eq!(r.body["scope"], ALL_SCOPES.join(" "));
    assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    // Body client authentication with a narrower scope.
    let r = token_request(
        &sim.base_url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", "scim.users.readUsers scim.groups.readGroups"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["scope"],
        "scim.users.readUsers scim.groups.readGroups"
    );
    let token = r.body["access_token"].as_str().unwrap();
    let api = Api::new(&sim.base_url, token).header("x-as-user-email", ADMIN);
    assert_eq!(api.get("/Users").await.status, 200);
    // The narrowed token lacks the create scope.
    assert_scim_error(&api.post("/Users", user("x@example.com")).await, 403, None);
}

#[tokio::test]
async fn oauth_token_errors() {
    let mut cfg = full_config();
    cfg.clients.push(SimClient {
        id: "noscope".into(),
        secret: "s".into(),
        scopes: vec![],
    });
    let sim = start_sim(cfg);
    let b = &sim.base_url;
    let basic = Some((CLIENT_ID, CLIENT_SECRET));
    assert_oauth_error(&token_request(b, &[], basic).await, 400, "invalid_request");
    assert_oauth_error(
        &token_request(b, &[("grant_type", "password")], basic).await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &token_request(b, &[("grant_type", "client_credentials")], None).await,
        401,
        "invalid_client",
    );
    let r = token_request(
        b,
        &[("grant_type", "client_credentials")],
        Some((CLIENT_ID, "wrong")),
    )
    .await;
    assert_oauth_error(&r, 401, "invalid_client");
    assert!(r.headers.contains_key("www-authenticate"));
    assert_oauth_error(
        &token_request(
            b,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", "x"),
            ],
            None,
        )
        .await,
        401,
        "invalid_client",
    );
    // Basic and body credentials at once.
    assert_oauth_error(
        &token_request(
            b,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
            basic,
        )
        .await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &token_request(
            b,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "scim.users.readUsers scim.admin"),
            ],
            basic,
        )
        .await,
        400,
        "invalid_scope",
    );
    assert_oauth_error(
        &token_request(
            b,
            &[("grant_type", "client_credentials")],
            Some(("noscope", "s")),
        )
        .await,
        403,
        "unauthorized_client",
    );
    assert_oauth_error(
        &token_request(
            b,
            &[
                ("grant_type", "authorization_code"),
                ("code", "bogus"),
                ("redirect_uri", "http://127.0.0.1/cb"),
            ],
            basic,
        )
        .await,
        403,
        "invalid_grant",
    );
    assert_oauth_error(
        &token_request(b, &[("grant_type", "authorization_code")], basic).await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &token_request(
            b,
            &[("grant_type", "refresh_token"), ("refresh_token", "bogus")],
            basic,
        )
        .await,
        403,
        "invalid_grant",
    );
}

#[tokio::test]
async fn oauth_authorization_code_refresh_and_userinfo() {
    let sim = start_sim(full_config());
    let b = &sim.base_url;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = "http://127.0.0.1:9/callback";
    let authorize = |scope: &'static str| {
        http.get(format!("{b}/oauth/authorize"))
            .query(&[
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", redirect),
                ("scope", scope),
                ("state", "xyz 1"),
            ])
            .send()
    };
    let r = authorize("scim.users.readUsers scim.users.updateUsers")
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(loc.as_str().starts_with(redirect));
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "xyz 1");
    let code = q["code"].clone();

    let basic = Some((CLIENT_ID, CLIENT_SECRET));
    // A wrong redirect_uri is refused (and consumes the code).
    let r = token_request(
        b,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://evil/cb"),
        ],
        basic,
    )
    .await;
    assert_oauth_error(&r, 403, "invalid_grant");
    let r = authorize("scim.users.readUsers scim.users.updateUsers")
        .await
        .unwrap();
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let code = loc
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
    ];
    let r = token_request(b, &form, basic).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["scope"],
        "scim.users.readUsers scim.users.updateUsers"
    );
    let access = r.body["access_token"].as_str().unwrap().to_string();
    let refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    // Codes are single-use.
    assert_oauth_error(&token_request(b, &form, basic).await, 403, "invalid_grant");
    // A user token needs no acting user.
    assert_eq!(Api::new(b, &access).get("/Users").await.status, 200);
    // userinfo: identity and scopes.
    let info: Value = http
        .get(format!("{b}/oauth/userinfo"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["email"], ADMIN);
    assert_eq!(
        info["scopes"],
        json!(["scim.users.readUsers", "scim.users.updateUsers"])
    );
    // Refresh, narrower; wider is invalid_scope.
    let r = token_request(
        b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("scope", "scim.users.readUsers"),
        ],
        basic,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["scope"], "scim.users.readUsers");
    assert_ne!(r.body["access_token"].as_str().unwrap(), access);
    let r = token_request(
        b,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("scope", "scim.users.deleteUsers"),
        ],
        basic,
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_scope");
    // An authorize request for a scope the client lacks redirects with the error.
    let r = authorize("scim.admin").await.unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.contains("error=invalid_scope"), "{loc}");
    assert!(loc.contains("state=xyz"), "{loc}");
    // userinfo for a client-credentials token and for a bad token.
    let cc = cc_token(b).await;
    let info: Value = http
        .get(format!("{b}/oauth/userinfo"))
        .bearer_auth(&cc)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["client_id"], CLIENT_ID);
    assert_eq!(info["scopes"].as_array().unwrap().len(), ALL_SCOPES.len());
    let r = http
        .get(format!("{b}/oauth/userinfo"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "UNAUTHORIZED");
}

#[tokio::test]
async fn tokens_expire() {
    let sim = start_sim(SimConfig {
        token_ttl: Duration::from_secs(1),
        ..full_config()
    });
    let token = cc_token(&sim.base_url).await;
    let api = Api::new(&sim.base_url, &token).header("x-as-user-email", ADMIN);
    assert_eq!(api.get("/Users").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = api.get("/Users").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["code"], "UNAUTHORIZED");
    assert!(r.body["message"].is_string());
    // Missing and unknown tokens are 401 too.
    assert_eq!(
        Api::new(&sim.base_url, "bogus").get("/Users").await.status,
        401
    );
    let r = reqwest::get(format!("{}/scim/v2/Users", sim.base_url))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

// ---------------------------------------------------------------- authorisation

#[tokio::test]
async fn one_scope_per_operation() {
    let schema_path = format!("/Schemas/{USER_SCHEMA}");
    let ops: Vec<(&str, Method, &str)> = vec![
        ("scim.users.readUsers", Method::GET, "/Users"),
        ("scim.users.readUsers", Method::GET, "/Users/{u}"),
        ("scim.users.createUsers", Method::POST, "/Users"),
        ("scim.users.updateUsers", Method::PUT, "/Users/{u}"),
        ("scim.users.updateUsers", Method::PATCH, "/Users/{u}"),
        ("scim.users.deleteUsers", Method::DELETE, "/Users/{u}"),
        ("scim.groups.readGroups", Method::GET, "/Groups"),
        ("scim.groups.readGroups", Method::GET, "/Groups/{g}"),
        ("scim.groups.createGroups", Method::POST, "/Groups"),
        ("scim.groups.updateGroups", Method::PUT, "/Groups/{g}"),
        ("scim.groups.updateGroups", Method::PATCH, "/Groups/{g}"),
        ("scim.groups.deleteGroups", Method::DELETE, "/Groups/{g}"),
        ("scim.schemas.readSchemas", Method::GET, "/Schemas"),
        ("scim.schemas.readSchemas", Method::GET, &schema_path),
    ];
    let mut cfg = full_config();
    for scope in ALL_SCOPES {
        let others: Vec<String> = ALL_SCOPES
            .iter()
            .filter(|s| *s != scope)
            .map(|s| s.to_string())
            .collect();
        cfg.tokens.push(SimToken {
            token: format!("without-{scope}"),
            scopes: others,
        });
        cfg.tokens.push(SimToken {
            token: format!("only-{scope}"),
            scopes: vec![scope.to_string()],
        });
    }
    let sim = start_sim(cfg);
    let admin = Api::new(&sim.base_url, STATIC_TOKEN);
    for (scope, method, path) in &ops {
        // Fresh targets each time (DELETE consumes them).
        let u = id(&admin.user(&format!("{}@x.com", uuid::Uuid::new_v4())).await);
        let g = admin
            .post("/Groups", json!({"displayName": "G"}))
            .await
            .body;
        let g = id(&g);
        let path = path.replace("{u}", &u).replace("{g}", &g);
        let body = match *method {
            Method::POST if path == "/Users" => {
                Some(user(&format!("{}@x.com", uuid::Uuid::new_v4())))
            }
            Method::POST | Method::PUT if path.starts_with("/Groups") => {
                Some(json!({"displayName": "G2"}))
            }
            Method::PUT => Some(user(&format!("{}@x.com", uuid::Uuid::new_v4()))),
            Method::PATCH => Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "path": if path.starts_with("/Groups") {"displayName"} else {"title"}, "value": "T"}]})),
            _ => None,
        };
        let without = Api::new(&sim.base_url, &format!("without-{scope}"));
        let r = without.call(method.clone(), &path, body.clone()).await;
        assert_scim_error(&r, 403, None);
        assert!(r.body["detail"].as_str().unwrap().contains(scope));
        let only = Api::new(&sim.base_url, &format!("only-{scope}"));
        let r = only.call(method.clone(), &path, body).await;
        assert!(
            r.status.is_success(),
            "{method} {path} with {scope}: {} {}",
            r.status,
            r.body
        );
    }
}

#[tokio::test]
async fn acting_user_rules() {
    let sim = start_sim(full_config());
    let b = &sim.base_url;
    let token = cc_token(b).await;
    let bare = Api::new(b, &token);
    let r = bare.get("/Users").await;
    assert_scim_error(&r, 400, None);
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .contains("x-as-user-email"));
    assert_scim_error(
        &bare
            .clone()
            .header("x-as-user-email", "ghost@example.com")
            .get("/Users")
            .await,
        403,
        None,
    );
    assert_scim_error(
        &bare
            .clone()
            .header("x-as-user-id", "nope")
            .get("/Users")
            .await,
        403,
        None,
    );
    let r = bare
        .clone()
        .header("x-as-user-email", "ADMIN@Example.com")
        .get("/Users")
        .await;
    assert_eq!(r.status, 200);
    let admin_id = id(&r.body["Resources"][0]);
    assert_eq!(
        bare.clone()
            .header("x-as-user-id", &admin_id)
            .get("/Users")
            .await
            .status,
        200
    );
    // Static SCIM tokens need no acting user.
    assert_eq!(Api::new(b, STATIC_TOKEN).get("/Users").await.status, 200);
}

// ---------------------------------------------------------------- listing

#[tokio::test]
async fn paging_defaults_max_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<Value> = (0..1100)
        .map(|i| {
            json!({"id": format!("id{i:05}"), "userName": format!("u{i:05}@example.com"),
                   "name": {"givenName": "G", "familyName": format!("F{i}")}})
        })
        .collect();
    let seed = seed_file(&dir, &json!({"users": users}));
    let sim = start_sim(SimConfig {
        seed: Some(seed),
        ..full_config()
    });
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    // 1100 seeded + the admin, who comes last (created after the seed).
    let r = api.get("/Users").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:ListResponse"
    );
    assert_eq!(r.body["totalResults"], 1101);
    assert_eq!(r.body["itemsPerPage"], 25);
    assert_eq!(r.body["startIndex"], 1);
    assert_eq!(r.body["Resources"].as_array().unwrap().len(), 25);
    assert_eq!(r.body["Resources"][0]["id"], "id00000");
    let r = api.get("/Users?count=5000").await;
    assert_eq!(r.body["itemsPerPage"], 1000);
    assert_eq!(r.body["Resources"][999]["id"], "id00999");
    let r = api.get("/Users?startIndex=1001&count=1000").await;
    assert_eq!(r.body["itemsPerPage"], 101);
    assert_eq!(r.body["startIndex"], 1001);
    assert_eq!(r.body["Resources"][0]["id"], "id01000");
    assert_eq!(r.body["Resources"][100]["userName"], ADMIN);
    let r = api.get("/Users?startIndex=5000").await;
    assert_eq!(r.body["itemsPerPage"], 0);
    assert_eq!(r.body["totalResults"], 1101);
    let r = api.get("/Users?count=0").await;
    assert_eq!(r.body["itemsPerPage"], 0);
    assert_eq!(r.body["totalResults"], 1101);
    let r = api.get("/Users?startIndex=0&count=2").await;
    assert_eq!(r.body["Resources"][0]["id"], "id00000");
    assert_scim_error(
        &api.get("/Users?count=ten").await,
        400,
        Some("invalidValue"),
    );
    // Creation order survives a removal in the middle.
    assert_eq!(api.delete("/Users/id00001").await.status, 204);
    let r = api.get("/Users?count=2").await;
    assert_eq!(r.body["Resources"][1]["id"], "id00002");
    // A page already served shows a change at once, and is the resource a GET returns.
    let ops = json!([{"op": "replace", "path": "title", "value": "Counsel"}]);
    assert_eq!(api.patch("/Users/id00002", ops).await.status, 200);
    let r = api.get("/Users?count=2").await;
    assert_eq!(r.body["Resources"][1]["title"], "Counsel");
    assert_eq!(r.body["Resources"][1]["meta"]["version"], "W/\"2\"");
    assert_eq!(r.body["Resources"][1], api.get("/Users/id00002").await.body);
    // A projection still applies to pages.
    let r = api.get("/Users?count=2&attributes=title").await;
    assert_eq!(r.body["Resources"][1]["title"], "Counsel");
    assert!(r.body["Resources"][1].get("userName").is_none());
    // Filtered paging.
    let r = api
        .get("/Users?filter=userName%20sw%20%22u0009%22&startIndex=3&count=4")
        .await;
    assert_eq!(r.body["totalResults"], 10);
    assert_eq!(r.body["itemsPerPage"], 4);
    assert_eq!(r.body["Resources"][0]["id"], "id00092");
}

#[tokio::test]
async fn hundred_thousand_users_page_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<Value> = (0..100_000)
        .map(|i| {
            json!({"userName": format!("user{i:06}@example.com"),
                   "name": {"givenName": "G", "familyName": "F"}})
        })
        .collect();
    let seed = seed_file(&dir, &json!({"users": users}));
    let t0 = Instant::now();
    let sim = start_sim(SimConfig {
        seed: Some(seed),
        ..full_config()
    });
    eprintln!("100,000 users: seeded in {:?}", t0.elapsed());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let mut seen = 0usize;
    let mut start = 1;
    loop {
        let r = api
            .get(&format!("/Users?startIndex={start}&count=1000"))
            .await;
        let n = r.body["itemsPerPage"].as_u64().unwrap() as usize;
        if n == 0 {
            break;
        }
        if seen == 0 {
            assert_eq!(r.body["Resources"][0]["userName"], "user000000@example.com");
        }
        seen += n;
        start += n;
    }
    assert_eq!(seen, 100_001);
    let r = api
        .get("/Users?filter=userName%20eq%20%22USER099999@example.com%22")
        .await;
    assert_eq!(r.body["totalResults"], 1);
    let elapsed = t0.elapsed();
    // Generous for a debug build on 2 cores; quadratic paging would take minutes.
    assert!(elapsed < Duration::from_secs(90), "{elapsed:?}");
    eprintln!("100,000 users: seeded and paged in {elapsed:?}");
}

#[tokio::test]
async fn filters() {
    let sim = start_sim(full_config());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let mut alex = user("Alex.Doe@Example.com");
    alex["title"] = json!("Counsel");
    alex["externalId"] = json!("EXT-1");
    alex["emails"] = json!([
        {"value": "Alex.Doe@Example.com", "type": "work", "primary": true},
        {"value": "alex@home.example.org", "type": "home"}
    ]);
    alex[ENTERPRISE] = json!({"department": "Legal"});
    let alex = api.post("/Users", alex).await.body;
    let mut bea = user("bea@example.com");
    bea["title"] = json!("Paralegal");
    let bea = api.post("/Users", bea).await.body;
    let g = api
        .post(
            "/Groups",
            json!({"displayName": "Legal Ops Group", "members": [{"value": id(&alex)}]}),
        )
        .await
        .body;

    let names = |v: &Value| -> Vec<String> {
        v["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["userName"].as_str().unwrap().to_string())
            .collect()
    };
    let q = |f: &str| {
        let api = api.clone();
        let f = f.to_string();
        async move {
            let url = format!(
                "{}/scim/v2/Users?filter={}",
                api.base,
                url::form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>()
            );
            api.get(&url).await
        }
    };
    let dept = format!(r#"{ENTERPRISE}:department eq "legal""#);
    let by_id = format!(r#"id eq "{}""#, id(&bea));
    let cases: Vec<(&str, &[&str])> = vec![
        (
            r#"userName eq "alex.doe@example.com""#,
            &["Alex.Doe@Example.com"],
        ),
        (
            r#"userName ne "alex.doe@example.com""#,
            &["admin@example.com", "bea@example.com"],
        ),
        (r#"userName co "DOE""#, &["Alex.Doe@Example.com"]),
        (r#"userName sw "bea""#, &["bea@example.com"]),
        (
            r#"userName ew "example.com""#,
            &[
                "admin@example.com",
                "Alex.Doe@Example.com",
                "bea@example.com",
            ],
        ),
        (r#"title pr"#, &["Alex.Doe@Example.com", "bea@example.com"]),
        (r#"title gt "D""#, &["bea@example.com"]),
        (
            r#"title ge "Counsel""#,
            &["Alex.Doe@Example.com", "bea@example.com"],
        ),
        (r#"title lt "P""#, &["Alex.Doe@Example.com"]),
        (
            r#"title le "Paralegal""#,
            &["Alex.Doe@Example.com", "bea@example.com"],
        ),
        (r#"title pr and userName sw "a""#, &["Alex.Doe@Example.com"]),
        (
            r#"title eq "Counsel" or userName eq "admin@example.com""#,
            &["admin@example.com", "Alex.Doe@Example.com"],
        ),
        (r#"not (title pr)"#, &["admin@example.com"]),
        (
            r#"(title eq "x" or title eq "paralegal") and active eq true"#,
            &["bea@example.com"],
        ),
        (
            r#"emails[type eq "home" and value ew "example.org"]"#,
            &["Alex.Doe@Example.com"],
        ),
        (r#"emails[type eq "work" and value ew "example.org"]"#, &[]),
        (
            r#"emails.value eq "ALEX@HOME.EXAMPLE.ORG""#,
            &["Alex.Doe@Example.com"],
        ),
        (r#"externalId eq "EXT-1""#, &["Alex.Doe@Example.com"]),
        (r#"externalId eq "ext-1""#, &[]),
        (
            r#"name.familyName eq "family" and title sw "Co""#,
            &["Alex.Doe@Example.com"],
        ),
        (&dept, &["Alex.Doe@Example.com"]),
        (&by_id, &["bea@example.com"]),
        (
            r#"meta.created gt "2000-01-01T00:00:00Z" and meta.resourceType eq "User" and title pr"#,
            &["Alex.Doe@Example.com", "bea@example.com"],
        ),
    ];
    for (f, want) in &cases {
        let r = q(f).await;
        assert_eq!(r.status, 200, "{f}: {}", r.body);
        assert_eq!(names(&r.body), *want, "{f}");
        assert_eq!(r.body["totalResults"], want.len(), "{f}");
    }
    for bad in [
        r#"nickName eq "x""#,
        r#"userName eq"#,
        r#"active gt true"#,
        r#"name.nope pr"#,
    ] {
        assert_scim_error(&q(bad).await, 400, Some("invalidFilter"));
    }
    // Groups.
    let r = api
        .get("/Groups?filter=displayName%20eq%20%22legal%20ops%20group%22")
        .await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["id"], g["id"]);
    let f = format!(r#"members[value eq "{}"]"#, id(&alex));
    let r = api
        .get(&format!(
            "/Groups?filter={}",
            url::form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(r.body["totalResults"], 1);
}

#[tokio::test]
async fn attributes_and_excluded_attributes() {
    let sim = start_sim(full_config());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let u = api.user("p@example.com").await;
    let r = api
        .get(&format!(
            "/Users/{}?attributes=userName,name.givenName",
            id(&u)
        ))
        .await;
    assert_eq!(r.body["userName"], "p@example.com");
    assert_eq!(r.body["name"], json!({"givenName": "Given"}));
    assert_eq!(r.body["id"], u["id"]);
    assert!(r.body.get("emails").is_none());
    let r = api.get("/Users?excludedAttributes=emails,meta").await;
    let first = &r.body["Resources"][0];
    assert!(first.get("emails").is_none() && first.get("meta").is_none());
    assert!(first.get("userName").is_some());
}

// ---------------------------------------------------------------- writes

#[tokio::test]
async fn create_validation_uniqueness_and_meta() {
    let sim = start_sim(full_config());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let r = api.post("/Users", user("Dana@Example.com")).await;
    assert_eq!(r.status, 201);
    let u = r.body;
    let location = u["meta"]["location"].as_str().unwrap();
    assert_eq!(
        location,
        format!("{}/scim/v2/Users/{}", sim.base_url, id(&u))
    );
    assert_eq!(r.headers["location"], location);
    assert_eq!(r.headers["content-type"], "application/scim+json");
    assert_eq!(u["meta"]["resourceType"], "User");
    assert_eq!(u["meta"]["created"], u["meta"]["lastModified"]);
    assert!(chrono::DateTime::parse_from_rfc3339(u["meta"]["created"].as_str().unwrap()).is_ok());
    assert_eq!(u["active"], true);
    assert_eq!(u[IRONCLAD]["provider"], "saml");
    assert!(u["schemas"].as_array().unwrap().contains(&json!(IRONCLAD)));
    // userName is unique without regard to case.
    assert_scim_error(
        &api.post("/Users", user("dana@EXAMPLE.com")).await,
        409,
        Some("uniqueness"),
    );
    // Bad values name the field.
    let mut bad = user("e@example.com");
    bad["name"]["givenName"] = json!(123);
    let r = api.post("/Users", bad).await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    assert_eq!(r.body["detail"], "Invalid value at name.givenName: 123");
    let mut bad = user("e@example.com");
    bad["active"] = json!("yes");
    assert_eq!(
        api.post("/Users", bad).await.body["detail"],
        "Invalid value at active: \"yes\""
    );
    let mut bad = user("e@example.com");
    bad[ENTERPRISE] = json!({"department": ["a"]});
    let r = api.post("/Users", bad).await;
    assert_eq!(
        r.body["detail"],
        format!("Invalid value at {ENTERPRISE}:department: [\"a\"]")
    );
    // name and userName are required.
    let mut no_name = user("f@example.com");
    no_name.as_object_mut().unwrap().remove("name");
    let r = api.post("/Users", no_name).await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    assert!(r.body["detail"].as_str().unwrap().contains("name"));
    let r = api
        .post("/Users", json!({"name": {"givenName": "x"}}))
        .await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    // Malformed JSON.
    let r = api
        .call(Method::POST, "/Users", Some(Value::String("{".into())))
        .await;
    assert_scim_error(&r, 400, Some("invalidSyntax"));
    // The read-only provider is ignored; the password is never returned; POST is always active.
    let mut u2 = user("g@example.com");
    u2[IRONCLAD] = json!({"provider": "google", "departmentHead": "h@example.com"});
    u2["password"] = json!("whatever");
    u2["active"] = json!(false);
    let r = api.post("/Users", u2).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body[IRONCLAD]["provider"], "saml");
    assert_eq!(r.body[IRONCLAD]["departmentHead"], "h@example.com");
    assert!(r.body.get("password").is_none());
    assert_eq!(r.body["active"], true);
}

#[tokio::test]
async fn password_rules_without_saml() {
    let sim = start_sim(SimConfig {
        no_saml: true,
        ..full_config()
    });
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let r = api.post("/Users", user("a@example.com")).await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    assert!(r.body["detail"].as_str().unwrap().contains("password"));
    for weak in [
        "Short1!",
        "alllowercase-but-long-1",
        "ALLUPPERCASE-BUT-LONG-1",
        "NoDigitsButLong-!!",
        "NoSpecialChars12345",
    ] {
        let mut u = user("a@example.com");
        u["password"] = json!(weak);
        let r = api.post("/Users", u).await;
        assert_scim_error(&r, 400, Some("invalidValue"));
        assert!(!r.body["detail"].as_str().unwrap().contains(weak));
    }
    let mut u = user("a@example.com");
    u["password"] = json!("Correct-Horse-42-Battery");
    let r = api.post("/Users", u).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.get("password").is_none());
    assert_eq!(r.body[IRONCLAD]["provider"], "local");
    // PUT without a password is fine; with a weak one it is not.
    let path = format!("/Users/{}", id(&r.body));
    assert_eq!(api.put(&path, user("a@example.com")).await.status, 200);
    let mut weak = user("a@example.com");
    weak["password"] = json!("weak");
    assert_scim_error(&api.put(&path, weak).await, 400, Some("invalidValue"));
}

#[tokio::test]
async fn put_replaces_the_user() {
    let sim = start_sim(full_config());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let mut body = user("h@example.com");
    body["title"] = json!("Counsel");
    body[ENTERPRISE] = json!({"department": "Legal"});
    let created = api.post("/Users", body).await.body;
    let path = format!("/Users/{}", id(&created));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut replacement = user("H2@example.com");
    replacement["id"] = json!("ignored");
    let r = api.put(&path, replacement).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], created["id"]);
    assert_eq!(r.body["userName"], "H2@example.com");
    assert!(r.body.get("title").is_none(), "PUT replaces: {}", r.body);
    assert!(r.body.get(ENTERPRISE).is_none());
    assert_eq!(r.body["meta"]["created"], created["meta"]["created"]);
    assert_ne!(
        r.body["meta"]["lastModified"],
        created["meta"]["lastModified"]
    );
    assert_ne!(r.body["meta"]["version"], created["meta"]["version"]);
    assert_eq!(api.get(&path).await.body["userName"], "H2@example.com");
    // Renaming onto another user's userName is a conflict; unknown ids are 404.
    api.user("taken@example.com").await;
    assert_scim_error(
        &api.put(&path, user("TAKEN@example.com")).await,
        409,
        Some("uniqueness"),
    );
    assert_scim_error(
        &api.put("/Users/nope", user("z@example.com")).await,
        404,
        None,
    );
    let mut no_name = user("h2@example.com");
    no_name.as_object_mut().unwrap().remove("name");
    assert_scim_error(&api.put(&path, no_name).await, 400, Some("invalidValue"));
}

#[tokio::test]
async fn patch_operations() {
    let sim = start_sim(full_config());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let u = api.user("i@example.com").await;
    let path = format!("/Users/{}", id(&u));
    let r = api
        .patch(
            &path,
            json!([
                {"op": "add", "path": "title", "value": "Counsel"},
                {"op": "replace", "path": "name.givenName", "value": "Ina"},
                {"op": "add", "path": format!("{ENTERPRISE}:department"), "value": "Legal"},
                {"op": "replace", "path": format!("{ENTERPRISE}:manager.value"), "value": "m-1"},
                {"op": "add", "path": format!("{IRONCLAD}:departmentHead"), "value": "boss@example.com"},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "ina@example.com"},
                {"op": "add", "path": "emails[type eq \"home\"].value", "value": "ina@home.org"},
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = &r.body;
    assert_eq!(v["title"], "Counsel");
    assert_eq!(v["name"]["givenName"], "Ina");
    assert_eq!(v["name"]["familyName"], "Family");
    assert_eq!(
        v[ENTERPRISE],
        json!({"department": "Legal", "manager": {"value": "m-1"}})
    );
    assert_eq!(v[IRONCLAD]["departmentHead"], "boss@example.com");
    assert_eq!(v["emails"][0]["value"], "ina@example.com");
    assert_eq!(
        v["emails"][1],
        json!({"type": "home", "value": "ina@home.org"})
    );
    assert!(v["schemas"]
        .as_array()
        .unwrap()
        .contains(&json!(ENTERPRISE)));
    assert_eq!(api.get(&path).await.body, r.body);
    // Value-less operations with object values (Okta and Entra ID style), op names in any case.
    let r = api
        .patch(
            &path,
            json!([{"op": "Replace", "value": {
                "title": "Partner",
                "name": {"familyName": "Smith"},
                ENTERPRISE: {"costCenter": "42"},
            }}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["title"], "Partner");
    assert_eq!(
        r.body["name"],
        json!({"givenName": "Ina", "familyName": "Smith"})
    );
    assert_eq!(r.body[ENTERPRISE]["costCenter"], "42");
    assert_eq!(r.body[ENTERPRISE]["department"], "Legal");
    // remove, including an extension URN path and a value path.
    let r = api
        .patch(
            &path,
            json!([
                {"op": "remove", "path": "title"},
                {"op": "remove", "path": format!("{ENTERPRISE}:department")},
                {"op": "remove", "path": "emails[type eq \"home\"]"},
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("title").is_none());
    assert!(r.body[ENTERPRISE].get("department").is_none());
    assert_eq!(r.body["emails"].as_array().unwrap().len(), 1);
    // Errors.
    let r = api
        .patch(
            &path,
            json!([{"op": "replace", "path": "name.givenName", "value": 123}]),
        )
        .await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .ends_with("Invalid value at name.givenName: 123"));
    assert_scim_error(
        &api.patch(
            &path,
            json!([{"op": "add", "path": "nickName", "value": "x"}]),
        )
        .await,
        400,
        Some("invalidPath"),
    );
    assert_scim_error(
        &api.patch(
            &path,
            json!([{"op": "replace", "path": format!("{IRONCLAD}:provider"), "value": "google"}]),
        )
        .await,
        400,
        Some("mutability"),
    );
    assert_scim_error(
        &api.patch(&path, json!([{"op": "remove", "path": "userName"}]))
            .await,
        400,
        Some("invalidValue"),
    );
    let other = api.user("other@example.com").await;
    assert_scim_error(
        &api.patch(
            &path,
            json!([{"op": "replace", "path": "userName", "value": "OTHER@example.com"}]),
        )
        .await,
        409,
        Some("uniqueness"),
    );
    assert_scim_error(&api.patch("/Users/nope", json!([])).await, 404, None);
    let _ = other;
}

#[tokio::test]
async fn active_false_removes_the_user() {
    let sim = start_sim(full_config());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let a = api.user("okta@example.com").await;
    let b = api.user("entra@example.com").await;
    let c = api.user("put@example.com").await;
    let g = api
        .post(
            "/Groups",
            json!({"displayName": "G", "members": [{"value": id(&a)}, {"value": id(&b)}, {"value": id(&c)}]}),
        )
        .await
        .body;
    // Okta: value-less replace.
    let r = api
        .patch(
            &format!("/Users/{}", id(&a)),
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["active"], false);
    assert_scim_error(&api.get(&format!("/Users/{}", id(&a))).await, 404, None);
    // Entra ID: path replace.
    let r = api
        .patch(
            &format!("/Users/{}", id(&b)),
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_scim_error(&api.get(&format!("/Users/{}", id(&b))).await, 404, None);
    // PUT with active: false.
    let mut body = user("put@example.com");
    body["active"] = json!(false);
    let r = api.put(&format!("/Users/{}", id(&c)), body).await;
    assert_eq!(r.status, 200);
    assert_scim_error(&api.get(&format!("/Users/{}", id(&c))).await, 404, None);
    // Gone from listings and from the group; userName free again.
    let r = api.get("/Users").await;
    assert_eq!(r.body["totalResults"], 1);
    let g = api.get(&format!("/Groups/{}", id(&g))).await.body;
    assert!(g.get("members").is_none(), "{g}");
    assert_eq!(
        api.post("/Users", user("okta@example.com")).await.status,
        201
    );
}

#[tokio::test]
async fn delete_users_and_groups() {
    let sim = start_sim(full_config());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let u = api.user("del@example.com").await;
    let g = api
        .post(
            "/Groups",
            json!({"displayName": "D", "members": [{"value": id(&u)}]}),
        )
        .await
        .body;
    let r = api.delete(&format!("/Users/{}", id(&u))).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.body, Value::Null);
    assert_scim_error(&api.delete(&format!("/Users/{}", id(&u))).await, 404, None);
    assert_scim_error(&api.get(&format!("/Users/{}", id(&u))).await, 404, None);
    assert!(api
        .get(&format!("/Groups/{}", id(&g)))
        .await
        .body
        .get("members")
        .is_none());
    assert_eq!(api.delete(&format!("/Groups/{}", id(&g))).await.status, 204);
    assert_scim_error(&api.delete(&format!("/Groups/{}", id(&g))).await, 404, None);
}

#[tokio::test]
async fn group_membership() {
    let sim = start_sim(full_config());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let u: Vec<String> = futures::future::join_all((0..4).map(|i| {
        let api = api.clone();
        async move { id(&api.user(&format!("m{i}@example.com")).await) }
    }))
    .await;
    assert_scim_error(
        &api.post("/Groups", json!({"members": []})).await,
        400,
        Some("invalidValue"),
    );
    assert_scim_error(
        &api.post(
            "/Groups",
            json!({"displayName": "X", "members": [{"value": "ghost"}]}),
        )
        .await,
        400,
        Some("invalidValue"),
    );
    let r = api
        .post(
            "/Groups",
            json!({"displayName": "Legal Ops Group", "members": [{"value": u[0]}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let g = r.body;
    assert_eq!(g["meta"]["resourceType"], "Group");
    assert_eq!(
        g["meta"]["location"],
        format!("{}/scim/v2/Groups/{}", sim.base_url, id(&g))
    );
    assert_eq!(
        g["members"][0],
        json!({"value": u[0], "type": "User", "$ref": format!("{}/scim/v2/Users/{}", sim.base_url, u[0])})
    );
    let path = format!("/Groups/{}", id(&g));
    let members = |v: &Value| -> Vec<String> {
        v["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| m["value"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let r = api
        .patch(&path, json!([{"op": "add", "path": "members", "value": [{"value": u[1]}, {"value": u[2]}, {"value": u[0]}]}]))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        members(&r.body),
        vec![u[0].clone(), u[1].clone(), u[2].clone()]
    );
    let r = api
        .patch(
            &path,
            json!([{"op": "remove", "path": "members", "value": [{"value": u[1]}]}]),
        )
        .await;
    assert_eq!(members(&r.body), vec![u[0].clone(), u[2].clone()]);
    let r = api
        .patch(
            &path,
            json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", u[0])}]),
        )
        .await;
    assert_eq!(members(&r.body), vec![u[2].clone()]);
    let r = api
        .patch(
            &path,
            json!([{"op": "replace", "path": "members", "value": [{"value": u[3]}]},
                             {"op": "replace", "path": "displayName", "value": "Renamed"}]),
        )
        .await;
    assert_eq!(members(&r.body), vec![u[3].clone()]);
    assert_eq!(r.body["displayName"], "Renamed");
    assert_scim_error(
        &api.patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [{"value": "ghost"}]}]),
        )
        .await,
        400,
        Some("invalidValue"),
    );
    let r = api
        .put(
            &path,
            json!({"displayName": "Put", "members": [{"value": u[1]}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(members(&r.body), vec![u[1].clone()]);
    let r = api
        .patch(&path, json!([{"op": "remove", "path": "members"}]))
        .await;
    assert!(r.body.get("members").is_none());
    assert_eq!(api.get(&path).await.body["displayName"], "Put");
}

#[tokio::test]
async fn discovery_endpoints() {
    let sim = start_sim(full_config());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let r = api.get("/Schemas").await;
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for want in [
        USER_SCHEMA,
        ENTERPRISE,
        IRONCLAD,
        "urn:ietf:params:scim:schemas:core:2.0:Group",
    ] {
        assert!(ids.contains(&want), "{ids:?}");
    }
    let r = api.get(&format!("/Schemas/{IRONCLAD}")).await;
    let provider = r.body["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "provider")
        .unwrap();
    assert_eq!(provider["mutability"], "readOnly");
    assert_scim_error(&api.get("/Schemas/urn:nope").await, 404, None);
    let r = api.get("/ResourceTypes").await;
    assert_eq!(r.body["totalResults"], 2);
    assert_eq!(
        api.get("/ResourceTypes/User").await.body["endpoint"],
        "/Users"
    );
    let r = api.get("/ServiceProviderConfig").await;
    assert_eq!(r.body["patch"]["supported"], true);
    assert_eq!(r.body["filter"]["maxResults"], 1000);
    assert_eq!(
        api.call(Method::POST, "/Schemas", Some(json!({})))
            .await
            .status,
        405
    );
    assert_scim_error(&api.get("/Nope").await, 404, None);
    assert_scim_error(&api.post("/.search", json!({})).await, 501, None);
}

// ---------------------------------------------------------------- rate limits

#[tokio::test]
async fn rate_limits_per_bucket_with_retry_after() {
    // Scale 6: the documented per-minute numbers per 10-second window.
    let sim = start_sim(SimConfig {
        rate_limit_scale: Some(6.0),
        ..full_config()
    });
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let u = api.user("rl@example.com").await;
    let path = format!("/Users/{}", id(&u));
    let mut ok = 0;
    let mut limited = Vec::new();
    for i in 0..60 {
        let r = api
            .patch(
                &path,
                json!([{"op": "replace", "path": "title", "value": format!("t{i}")}]),
            )
            .await;
        match r.status.as_u16() {
            200 => ok += 1,
            429 => limited.push(r),
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 50, "users PATCH/DELETE: 50 per window");
    assert_eq!(limited.len(), 10);
    let r = &limited[0];
    assert_scim_error(r, 429, None);
    let ra: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&ra), "{ra}");
    // Other buckets are independent: GET and DELETE-on-Groups still pass.
    assert_eq!(api.get(&path).await.status, 200);
    assert_eq!(api.delete(&path).await.status, 429);
    let g = api.post("/Groups", json!({"displayName": "G"})).await;
    assert_eq!(g.status, 201);
    let log = api_requests(&sim.base_url).await;
    let limited_log: Vec<_> = log.iter().filter(|e| e.status == 429).collect();
    assert_eq!(limited_log.len(), 11);
    assert!(limited_log.iter().all(|e| e.bucket == "users_patch_delete"));
    assert!(limited_log
        .iter()
        .all(|e| e.fault.as_deref() == Some("rate_limited")));
}

#[tokio::test]
async fn rate_limit_scale_sixty_gives_documented_numbers_per_second() {
    let sim = start_sim(SimConfig {
        rate_limit_scale: Some(60.0),
        ..full_config()
    });
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let u = api.user("sixty@example.com").await;
    let path = format!("/Users/{}", id(&u));
    // 120 PATCHes over at least two 1-second windows: never more than 50 admitted per second.
    let t0 = Instant::now();
    let mut ok_times = Vec::new();
    let mut saw_429 = false;
    while t0.elapsed() < Duration::from_millis(2500) {
        let r = api
            .patch(
                &path,
                json!([{"op": "replace", "path": "title", "value": "x"}]),
            )
            .await;
        match r.status.as_u16() {
            200 => ok_times.push(t0.elapsed()),
            429 => {
                saw_429 = true;
                assert_eq!(r.headers["retry-after"], "1");
            }
            s => panic!("{s}"),
        }
    }
    assert!(saw_429);
    // Admissions within any 1-second span of windows: at most 2 windows' worth.
    assert!(ok_times.len() <= 50 * 4, "{}", ok_times.len());
    // More than one window's worth: the windows do reset.
    assert!(ok_times.len() > 50, "{}", ok_times.len());
}

#[tokio::test]
async fn no_rate_limits_without_a_scale() {
    let sim = start_sim(full_config());
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let u = api.user("free@example.com").await;
    let path = format!("/Users/{}", id(&u));
    for _ in 0..80 {
        let r = api
            .patch(
                &path,
                json!([{"op": "replace", "path": "title", "value": "x"}]),
            )
            .await;
        assert_eq!(r.status, 200);
    }
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn fault_error_rate_and_methods() {
    let sim = start_sim(full_config());
    let b = &sim.base_url;
    let api = Api::new(b, STATIC_TOKEN);
    set_faults(
        b,
        json!({"error_rate": 1.0, "error_status": 500, "methods": ["POST"]}),
    )
    .await;
    let r = api.post("/Users", user("e1@example.com")).await;
    assert_scim_error(&r, 500, None);
    assert_eq!(api.get("/Users").await.status, 200, "GET is not faulted");
    // Nothing was applied.
    assert_eq!(sim_state(b).await["users"].as_array().unwrap().len(), 1);
    set_faults(b, json!({"error_rate": 1.0})).await;
    let r = api.get("/Users").await;
    assert_scim_error(&r, 503, None);
    // OAuth is never faulted.
    cc_token(b).await;
    let f: Value = reqwest::get(format!("{b}/_sim/faults"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(f["error_rate"], 1.0);
    assert_eq!(f["error_status"], 503);
    set_faults(b, json!({})).await;
    assert_eq!(api.get("/Users").await.status, 200);
    // A seeded partial rate fails some requests, not all.
    set_faults(b, json!({"error_rate": 0.5, "seed": 42})).await;
    let mut errors = 0;
    for _ in 0..40 {
        if api.get("/Users").await.status == 503 {
            errors += 1;
        }
    }
    assert!((5..35).contains(&errors), "{errors}");
    let log = api_requests(b).await;
    assert_eq!(
        log.iter()
            .filter(|e| e.fault.as_deref() == Some("error"))
            .count(),
        errors + 2
    );
    // Bad fault sets are refused.
    let r = reqwest::Client::new()
        .post(format!("{b}/_sim/faults"))
        .json(&json!({"error_rate": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn fault_latency_before_and_after() {
    let sim = start_sim(full_config());
    let b = &sim.base_url;
    let api = Api::new(b, STATIC_TOKEN);
    set_faults(b, json!({"latency_ms": 300})).await;
    let t = Instant::now();
    assert_eq!(api.get("/Users").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Latency after applying: the client times out, the write committed.
    set_faults(b, json!({"latency_after_ms": 2500, "methods": ["POST"]})).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let t = Instant::now();
    let err = http
        .post(format!("{b}/scim/v2/Users"))
        .bearer_auth(STATIC_TOKEN)
        .json(&user("slow@example.com"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(t.elapsed() < Duration::from_millis(2500));
    set_faults(b, json!({})).await;
    let r = api
        .get("/Users?filter=userName%20eq%20%22slow@example.com%22")
        .await;
    assert_eq!(
        r.body["totalResults"], 1,
        "the write committed before the delay"
    );
    // The client gave up while the answer was delayed: the request is in the log all the same.
    let log = sim_requests(b).await;
    assert!(
        log.iter()
            .any(|q| q.method == "POST" && q.path == "/scim/v2/Users" && q.status == 201),
        "{log:?}"
    );
}

#[tokio::test]
async fn fault_dropped_connections() {
    let sim = start_sim(full_config());
    let b = &sim.base_url;
    let api = Api::new(b, STATIC_TOKEN);
    let http = reqwest::Client::new();
    let post = |name: &'static str| {
        http.post(format!("{b}/scim/v2/Users"))
            .bearer_auth(STATIC_TOKEN)
            .json(&user(name))
            .send()
    };
    // Dropped before applying: no response, nothing created.
    set_faults(b, json!({"drop_rate": 1.0, "methods": ["POST"]})).await;
    let err = post("drop1@example.com").await.unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "{err}");
    // Dropped after applying: no response, the user exists.
    set_faults(
        b,
        json!({"drop_rate": 1.0, "drop_after_apply": true, "methods": ["POST"]}),
    )
    .await;
    let err = post("drop2@example.com").await.unwrap_err();
    assert!(err.status().is_none(), "{err}");
    set_faults(b, json!({})).await;
    let names: Vec<String> = sim_state(b).await["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.contains(&"drop1@example.com".to_string()));
    assert!(names.contains(&"drop2@example.com".to_string()));
    let log = api_requests(b).await;
    let drops: Vec<_> = log.iter().filter(|e| e.status == 0).collect();
    assert_eq!(drops.len(), 2);
    assert_eq!(drops[0].fault.as_deref(), Some("drop"));
    assert_eq!(drops[1].fault.as_deref(), Some("drop_after_apply"));
    // The server keeps serving.
    assert_eq!(api.get("/Users").await.status, 200);
}

#[tokio::test]
async fn fault_burst_of_429() {
    let sim = start_sim(full_config());
    let b = &sim.base_url;
    let api = Api::new(b, STATIC_TOKEN);
    set_faults(b, json!({"burst_429": 3, "retry_after": "2"})).await;
    for _ in 0..3 {
        let r = api.get("/Users").await;
        assert_scim_error(&r, 429, None);
        assert_eq!(r.headers["retry-after"], "2");
    }
    assert_eq!(api.get("/Users").await.status, 200);
    let date = "Wed, 21 Oct 2037 07:28:00 GMT";
    set_faults(b, json!({"burst_429": 1, "retry_after": date})).await;
    assert_eq!(api.get("/Users").await.headers["retry-after"], date);
    // Without retry_after: 429 without the header.
    set_faults(b, json!({"burst_429": 1})).await;
    let r = api.get("/Users").await;
    assert_eq!(r.status, 429);
    assert!(!r.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn revoke_tokens() {
    let sim = start_sim(full_config());
    let b = &sim.base_url;
    let token = cc_token(b).await;
    let api = Api::new(b, &token).header("x-as-user-email", ADMIN);
    assert_eq!(api.get("/Users").await.status, 200);
    let r = reqwest::Client::new()
        .post(format!("{b}/_sim/revoke-tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = api.get("/Users").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["code"], "UNAUTHORIZED");
    // A new token works; static tokens are not affected.
    let fresh = cc_token(b).await;
    assert_eq!(
        Api::new(b, &fresh)
            .header("x-as-user-email", ADMIN)
            .get("/Users")
            .await
            .status,
        200
    );
    assert_eq!(Api::new(b, STATIC_TOKEN).get("/Users").await.status, 200);
}

// ---------------------------------------------------------------- introspection, seed, save

#[tokio::test]
async fn request_log_and_state() {
    let sim = start_sim(full_config());
    let b = &sim.base_url;
    let api = Api::new(b, STATIC_TOKEN);
    clear_requests(b).await;
    let u = api.user("log@example.com").await;
    api.get("/Users?count=1").await;
    api.patch(
        &format!("/Users/{}", id(&u)),
        json!([{"op": "add", "path": "title", "value": "x"}]),
    )
    .await;
    api.post("/Groups", json!({"displayName": "G"})).await;
    api.get("/Schemas").await;
    cc_token(b).await;
    let log = api_requests(b).await;
    let got: Vec<(String, String, u16, String)> = log
        .iter()
        .map(|e| (e.method.clone(), e.path.clone(), e.status, e.bucket.clone()))
        .collect();
    let want = vec![
        (
            "POST",
            "/scim/v2/Users".to_string(),
            201,
            "users_read_write",
        ),
        (
            "GET",
            "/scim/v2/Users?count=1".to_string(),
            200,
            "users_read_write",
        ),
        (
            "PATCH",
            format!("/scim/v2/Users/{}", id(&u)),
            200,
            "users_patch_delete",
        ),
        ("POST", "/scim/v2/Groups".to_string(), 201, "groups"),
        ("GET", "/scim/v2/Schemas".to_string(), 200, "other"),
        ("POST", "/oauth/token".to_string(), 200, "oauth"),
    ];
    let want: Vec<(String, String, u16, String)> = want
        .into_iter()
        .map(|(m, p, s, bk)| (m.to_string(), p, s, bk.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(chrono::DateTime::parse_from_rfc3339(&log[0].time).is_ok());
    // The log's own reads are logged with bucket "sim"; reset-requests clears.
    let log = sim_requests(b).await;
    assert_eq!(log.last().unwrap().bucket, "sim");
    let r = reqwest::Client::new()
        .post(format!("{b}/_sim/reset-requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(api_requests(b).await.len(), 0);
    // Full state.
    let state = sim_state(b).await;
    assert_eq!(state["users"].as_array().unwrap().len(), 2);
    assert_eq!(state["groups"][0]["displayName"], "G");
    assert_eq!(state["users"][1]["title"], "x");
}

#[tokio::test]
async fn seed_and_save() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_file(
        &dir,
        &json!({
            "users": [
                {"id": "u1", "userName": "seed1@example.com", "name": {"givenName": "S", "familyName": "One"},
                 "meta": {"created": "2020-01-02T03:04:05.000Z"}},
                {"id": "u2", "userName": "seed2@example.com", "name": {"givenName": "S", "familyName": "Two"}}
            ],
            "groups": [{"id": "g1", "displayName": "Seeded", "members": [{"value": "u1"}]}]
        }),
    );
    let save = dir.path().join("saved.json");
    let sim = start_sim(SimConfig {
        seed: Some(seed),
        save: Some(save.clone()),
        ..full_config()
    });
    let api = Api::new(&sim.base_url, STATIC_TOKEN);
    let r = api.get("/Users/u1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["meta"]["created"], "2020-01-02T03:04:05.000Z");
    assert_eq!(
        api.get("/Groups/g1").await.body["members"][0]["value"],
        "u1"
    );
    api.user("new@example.com").await;
    sim.shutdown().await.unwrap();
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&save).unwrap()).unwrap();
    let names: Vec<&str> = saved["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "seed1@example.com",
            "seed2@example.com",
            ADMIN,
            "new@example.com"
        ]
    );
    // The saved file seeds a new simulator with the same users (admin not duplicated).
    let again = start_sim(SimConfig {
        seed: Some(save),
        ..full_config()
    });
    let r = Api::new(&again.base_url, STATIC_TOKEN).get("/Users").await;
    assert_eq!(r.body["totalResults"], 4);
    // A bad seed is refused at start, naming the file and the resource.
    let bad = seed_file(&dir, &json!({"users": [{"name": {}}]}));
    let err = ironbridge::sim::spawn(SimConfig {
        seed: Some(bad.clone()),
        ..SimConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("users[0]"),
        "{err}"
    );
}

#[tokio::test]
async fn in_process_shutdown_stops_serving() {
    let sim = start_sim(full_config());
    let base = sim.base_url.clone();
    assert_eq!(
        Api::new(&base, STATIC_TOKEN).get("/Users").await.status,
        200
    );
    sim.shutdown().await.unwrap();
    let r = reqwest::Client::new()
        .get(format!("{base}/scim/v2/Users"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(r.is_err());
}

// ---------------------------------------------------------------- the binary

#[tokio::test]
async fn cli_binary_starts_prints_readiness_and_saves_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("state.json");
    let save_arg = save.display().to_string();
    let mut p = start_sim_process(&[
        "--client",
        "app:s3cret:scim.users.readUsers,scim.users.createUsers",
        "--token",
        "cli-token:scim.users.readUsers",
        "--admin-email",
        "boss@example.com",
        "--rate-limit-scale",
        "60",
        "--token-ttl",
        "90",
        "--save",
        &save_arg,
    ]);
    assert!(
        p.base_url.starts_with("http://127.0.0.1:"),
        "{}",
        p.base_url
    );
    let b = p.base_url.clone();
    let r = Api::new(&b, "cli-token").get("/Users").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["Resources"][0]["userName"], "boss@example.com");
    let r = token_request(
        &b,
        &[("grant_type", "client_credentials")],
        Some(("app", "s3cret")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["expires_in"], 90);
    let token = r.body["access_token"].as_str().unwrap().to_string();
    let api = Api::new(&b, &token).header("x-as-user-email", "boss@example.com");
    assert_eq!(
        api.post("/Users", user("cli@example.com")).await.status,
        201
    );
    // Graceful stop on SIGTERM saves the state.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    let exit = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "ironclad-sim did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&save).unwrap()).unwrap();
    assert_eq!(saved["users"].as_array().unwrap().len(), 2);
}

#[test]
fn cli_binary_rejects_bad_arguments_without_echoing_secrets() {
    let out = std::process::Command::new(crate::support::bin("ironclad-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--client",
            "only-an-id-and-SECRETVALUE",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--client"), "{err}");
    assert!(!err.contains("SECRETVALUE"), "{err}");
    assert!(out.stdout.is_empty());
}

// ---------------------------------------------------------------- independent check

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim2_tester_compliance() {
    let sim = start_sim(full_config());
    let script = crate::support::repo().join("tests/scim_tester/check.py");
    let out = tokio::process::Command::new(crate::support::python())
        .arg(&script)
        .args([
            "--url",
            &format!("{}/scim/v2", sim.base_url),
            "--token",
            STATIC_TOKEN,
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "scim2-tester found failures outside the allow-list:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok: "), "{stdout}");
}
