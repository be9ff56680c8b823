//! Integration tests of the SCIM 2.0 source against a real third-party server (`scim2-server`
//! from PyPI), seeded over HTTP by each test: a full paged read with nested groups and
//! non-ASCII names, filters, OAuth client credentials, and the failures that must give an
//! error and no snapshot (wrong token, server killed mid-read, token endpoint refusing).

use crate::support::scim_server::ScimServer;
use ironbridge::model::Snapshot;
use ironbridge::source::scim::{ScimSource, ScimSourceConfig, ScimSourceError};
use ironbridge::source::{Source, SourceConfig, SourceError};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "s3cret-test-token-7f2a";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// A `[source]` block for `url` with a bearer token read from a file in `dir`; `extra` holds
/// top-level keys (it is placed before the tables).
fn config(url: &str, dir: &Path, token: &str, extra: &str) -> ScimSourceConfig {
    std::fs::write(dir.join("token"), token).unwrap();
    let text = format!(
        "kind = \"scim\"\nurl = \"{url}\"\n{extra}\n\
         [auth]\nmethod = \"bearer_token\"\ntoken = {{ file = \"token\" }}\n\
         [retry]\nmax_attempts = 2\nbase_delay_ms = 20\nmax_delay_ms = 50\n"
    );
    match toml::from_str::<SourceConfig>(&text).unwrap() {
        SourceConfig::Scim(c) => c,
        other => panic!("not a scim config: {other:?}"),
    }
}

async fn read(cfg: ScimSourceConfig, dir: &Path) -> Result<Snapshot, SourceError> {
    if let Err(m) = cfg.validate(dir) {
        panic!("invalid config: {m}");
    }
    ScimSource::open(cfg, dir)?.read().await
}

const GIVEN: &[&str] = &["Zoë", "José", "Łukasz", "Björn", "François", "Ana", "Søren"];

/// Seeds `n` users (userName `user###@example.com`; every 3rd inactive when `some_inactive`),
/// each after the first managed by the first. Returns their ids in creation order.
async fn seed_users(server: &ScimServer, n: usize, some_inactive: bool) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(n);
    for i in 0..n {
        let given = GIVEN[i % GIVEN.len()];
        let mut enterprise = json!({"department": format!("Dept {}", i % 5), "employeeNumber": format!("{}", 1000 + i)});
        if let Some(boss) = ids.first() {
            enterprise["manager"] = json!({"value": boss});
        }
        let v = server
            .create_user(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "userName": format!("user{i:03}@example.com"),
                "externalId": format!("ext-{i}"),
                "name": {"givenName": given, "familyName": format!("Ångström-{i}")},
                "displayName": format!("{given} Ångström-{i}"),
                "active": !(some_inactive && i % 3 == 2),
                "emails": [
                    {"value": format!("home{i}@example.org"), "type": "home"},
                    {"value": format!("user{i:03}@example.com"), "type": "work", "primary": true}
                ],
                "title": "Counsel",
                ENTERPRISE: enterprise,
            }))
            .await;
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    ids
}

#[tokio::test]
async fn full_read_pages_resolves_nested_groups_and_keeps_non_ascii() {
    let server = ScimServer::start(TOKEN).await;
    let ids = seed_users(&server, 250, false).await;
    let inner = server
        .create_group("Légal inner", &[(&ids[1], "User"), (&ids[2], "User")])
        .await;
    let outer = server
        .create_group("outer", &[(&inner, "Group"), (&ids[3], "User")])
        .await;
    let big_members: Vec<(&str, &str)> =
        ids[100..220].iter().map(|i| (i.as_str(), "User")).collect();
    let big = server.create_group("big", &big_members).await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &server.base_url,
        dir.path(),
        TOKEN,
        "page_size = 100\nsort_by = \"id\"",
    );
    let before = server.gets("/v2/Users?");
    let snap = read(cfg, dir.path()).await.unwrap();

    // Every user, exactly once, over three pages.
    assert_eq!(snap.users.len(), 250);
    let got: BTreeSet<&str> = snap.users.iter().map(|u| u.id.as_str()).collect();
    let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(got, want);
    assert_eq!(
        server.gets("/v2/Users?") - before,
        3,
        "{}",
        server.log_text()
    );
    assert_eq!(snap.source, server.base_url);

    // Attributes flattened by SCIM path, non-ASCII intact.
    let u0 = snap.user(&ids[0]).unwrap();
    assert_eq!(
        u0.attrs.first_text("userName").unwrap(),
        "user000@example.com"
    );
    assert_eq!(u0.attrs.first_text("name.givenName").unwrap(), "Zoë");
    assert_eq!(
        u0.attrs.first_text("name.familyName").unwrap(),
        "Ångström-0"
    );
    assert_eq!(u0.attrs.first_text("active").unwrap(), "true");
    assert_eq!(u0.attrs.first_text("externalId").unwrap(), "ext-0");
    assert_eq!(
        u0.attrs.first_text("emails").unwrap(),
        "user000@example.com",
        "primary email first"
    );
    assert_eq!(
        u0.attrs.first_text("emails.home").unwrap(),
        "home0@example.org"
    );
    assert_eq!(
        u0.attrs.first_text("emails.primary").unwrap(),
        "user000@example.com"
    );
    assert_eq!(
        u0.attrs
            .first_text(&format!("{ENTERPRISE}:department"))
            .unwrap(),
        "Dept 0"
    );
    assert!(
        u0.locator.ends_with(&format!("/v2/Users/{}", ids[0])),
        "{}",
        u0.locator
    );
    let u9 = snap.user(&ids[9]).unwrap();
    assert_eq!(
        u9.attrs
            .first_text(&format!("{ENTERPRISE}:manager.value"))
            .unwrap(),
        ids[0]
    );
    assert_eq!(u9.attrs.first_text("name.givenName").unwrap(), "Łukasz");

    // Groups: members are ids; nesting resolves through the snapshot.
    assert_eq!(snap.groups.len(), 3);
    let by_id: HashMap<&str, &ironbridge::model::Group> = snap
        .groups
        .iter()
        .map(|g| (g.entry.id.as_str(), g))
        .collect();
    assert_eq!(
        by_id[inner.as_str()]
            .entry
            .attrs
            .first_text("displayName")
            .unwrap(),
        "Légal inner"
    );
    assert!(!by_id[inner.as_str()].entry.attrs.has("members"));
    let mut want_outer = vec![inner.clone(), ids[3].clone()];
    want_outer.sort();
    assert_eq!(by_id[outer.as_str()].members, want_outer);
    assert_eq!(by_id[big.as_str()].members.len(), 120);
    // Without sortBy this server's order is not stable between requests: the read must then
    // be complete or an error naming the cause, never a short snapshot.
    let unsorted = config(&server.base_url, dir.path(), TOKEN, "page_size = 50");
    match read(unsorted, dir.path()).await {
        Ok(s) => assert_eq!(s.users.len(), 250, "a short snapshot was returned"),
        Err(e) => assert!(
            matches!(&e, SourceError::Scim(ScimSourceError::Paging { .. }))
                && e.to_string().contains("sort_by"),
            "{e}"
        ),
    }
    let flat = snap.flattened_members();
    let outer_users: BTreeSet<&str> = flat[&outer].iter().map(String::as_str).collect();
    assert_eq!(
        outer_users,
        [ids[1].as_str(), ids[2].as_str(), ids[3].as_str()]
            .into_iter()
            .collect()
    );
}

#[tokio::test]
async fn filters_are_sent_and_members_outside_the_read_are_left_out() {
    let server = ScimServer::start(TOKEN).await;
    let ids = seed_users(&server, 6, true).await; // users 2 and 5 inactive
    let keep = server
        .create_group("keep", &[(&ids[0], "User"), (&ids[2], "User")])
        .await;
    server.create_group("other", &[(&ids[1], "User")]).await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &server.base_url,
        dir.path(),
        TOKEN,
        "page_size = 2\nsort_by = \"id\"\nusers_filter = 'active eq true'\ngroups_filter = 'displayName eq \"keep\"'",
    );
    let snap = read(cfg, dir.path()).await.unwrap();
    let got: BTreeSet<&str> = snap.users.iter().map(|u| u.id.as_str()).collect();
    let want: BTreeSet<&str> = [0, 1, 3, 4].iter().map(|&i| ids[i].as_str()).collect();
    assert_eq!(got, want);
    assert_eq!(snap.groups.len(), 1);
    assert_eq!(snap.groups[0].entry.id, keep);
    assert_eq!(
        snap.groups[0].members,
        vec![ids[0].clone()],
        "inactive member left out"
    );

    // A filter the server cannot parse is a clear error naming the filter key.
    let cfg = config(
        &server.base_url,
        dir.path(),
        TOKEN,
        "users_filter = 'active eq'",
    );
    let err = read(cfg, dir.path()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            SourceError::Scim(ScimSourceError::Http { status: 400, .. })
        ),
        "{text}"
    );
    assert!(
        text.contains("GET /v2/Users") && text.contains("users_filter"),
        "{text}"
    );
}

#[tokio::test]
async fn wrong_token_is_a_clear_error_without_the_token() {
    let server = ScimServer::start(TOKEN).await;
    seed_users(&server, 2, false).await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wrong-token-value-91c3";
    let cfg = config(&server.base_url, dir.path(), wrong, "");
    let err = read(cfg, dir.path()).await.unwrap_err();
    let text = err.to_string();
    match &err {
        SourceError::Scim(ScimSourceError::Http {
            status,
            method,
            path,
            ..
        }) => {
            assert_eq!(
                (*status, method.as_str(), path.as_str()),
                (401, "GET", "/v2/Users")
            );
        }
        other => panic!("expected an HTTP 401, got {other:?}"),
    }
    assert!(
        text.contains("HTTP 401") && text.contains("[source.auth]"),
        "{text}"
    );
    assert!(!text.contains(wrong) && !format!("{err:?}").contains(wrong));
}

#[tokio::test]
async fn server_killed_mid_read_is_an_error_and_no_snapshot() {
    let mut server = ScimServer::start(TOKEN).await;
    seed_users(&server, 250, false).await;
    let dir = tempfile::tempdir().unwrap();
    // One user per page: 250 requests, so the read is surely under way when the server dies.
    let cfg = config(
        &server.base_url,
        dir.path(),
        TOKEN,
        "page_size = 1\nsort_by = \"id\"",
    );
    let source = ScimSource::open(cfg, dir.path()).unwrap();
    let before = server.gets("/v2/Users?");
    let reading = tokio::spawn(async move { source.read().await });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.gets("/v2/Users?") < before + 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the read did not start"
        );
        assert!(
            !reading.is_finished(),
            "the read finished before the server was killed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill();
    let result = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the read must end")
        .unwrap();
    let err = match result {
        Ok(snap) => panic!(
            "got a snapshot of {} users from a dead server",
            snap.users.len()
        ),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(
        matches!(&err, SourceError::Scim(ScimSourceError::Transport { method, path, attempts: 2, .. })
            if method == "GET" && path == "/v2/Users"),
        "{text}"
    );
    assert!(text.contains("gave up after 2 attempts"), "{text}");
}

/// A token endpoint for client credentials: issues `issued` to `id:secret` (HTTP Basic).
async fn token_endpoint(id: &'static str, secret: &'static str, issued: &'static str) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use base64::Engine as _;
    let app = axum::Router::new().route(
        "/oauth/token",
        post(move |headers: HeaderMap, body: String| async move {
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
            );
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if auth != want || !body.contains("grant_type=client_credentials") {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(
                        json!({"error": "invalid_client", "error_description": "unknown client"}),
                    ),
                );
            }
            assert!(body.contains("scope=scim.read"), "{body}");
            (
                StatusCode::OK,
                axum::Json(
                    json!({"access_token": issued, "token_type": "Bearer", "expires_in": 3600}),
                ),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/oauth/token")
}

#[tokio::test]
async fn oauth_client_credentials_read_and_refusal() {
    let server = ScimServer::start(TOKEN).await;
    let ids = seed_users(&server, 3, false).await;
    let token_url = token_endpoint("bridge", "client-secret-5d1e", TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let make = |secret: &str| -> ScimSourceConfig {
        std::fs::write(dir.path().join("client-secret"), secret).unwrap();
        let text = format!(
            "kind = \"scim\"\nurl = \"{}\"\nsort_by = \"id\"\n\
             [auth]\nmethod = \"client_credentials\"\ntoken_url = \"{token_url}\"\n\
             client_id = \"bridge\"\nclient_secret = {{ file = \"client-secret\" }}\nscopes = [\"scim.read\"]\n\
             [retry]\nmax_attempts = 2\nbase_delay_ms = 20\n",
            server.base_url
        );
        match toml::from_str::<SourceConfig>(&text).unwrap() {
            SourceConfig::Scim(c) => c,
            _ => unreachable!(),
        }
    };
    let snap = read(make("client-secret-5d1e"), dir.path()).await.unwrap();
    assert_eq!(snap.users.len(), 3);
    assert!(snap.user(&ids[2]).is_some());

    let wrong = "not-the-secret-0b7c";
    let err = read(make(wrong), dir.path()).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        matches!(&err, SourceError::Scim(ScimSourceError::Token(_))),
        "{text}"
    );
    assert!(
        text.contains("invalid_client") && text.contains("401"),
        "{text}"
    );
    assert!(!text.contains(wrong) && !text.contains(TOKEN), "{text}");
}
