//! The SCIM API under `/scim/v2`: Users, Groups, Schemas, ResourceTypes and
//! ServiceProviderConfig, with Ironclad's authorisation rules.
//!
//! Every request needs a bearer token (401 `{"code": "UNAUTHORIZED"}` otherwise). Each operation
//! needs its one documented scope (403 SCIM error without it); the discovery endpoints
//! (ResourceTypes, ServiceProviderConfig), which Ironclad does not list, need only a valid token.
//! Client-credentials tokens must name an acting user with `x-as-user-email` or `x-as-user-id`:
//! missing → 400, naming no existing user → 403 (Ironclad documents the requirement, not the
//! status; these are the simulator's choice). Static SCIM tokens and authorization-code tokens
//! act as themselves.
//!
//! Behaviour follows Ironclad's documentation: `count` defaults to 25 and is clamped to 1000;
//! `startIndex` is 1-based in creation order; `name` is required on create; a created user is
//! always active (`active: false` in a POST is ignored, Ironclad having no inactive users); a password is
//! required (with Ironclad's rules) only when the company has no SAML; `active: false` through
//! PUT or PATCH removes the user (answered 200 with the representation sent, 404 afterwards,
//! and the user leaves every group); DELETE answers 204; group members must be existing users.
//! `POST /.search` is not offered (501), as Ironclad does not document it.
//!
//! What does not live here: filters ([`super::filter`]), PATCH semantics ([`super::patch`]),
//! storage ([`super::store`]), rate limits and faults (the middleware in [`super::server`]).

use super::error::{scim_json, scim_text, Fail, ScimError};
use super::filter;
use super::oauth::{self, Principal};
use super::patch;
use super::schema::{self, Kind, LIST_RESPONSE};
use super::store::{new_id, raw_json, render, Projection, Record};
use super::{lock, Sim};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// GET /Users, GET /Users/{id}.
pub const READ_USERS: &str = "scim.users.readUsers";
/// POST /Users.
pub const CREATE_USERS: &str = "scim.users.createUsers";
/// PUT, PATCH /Users/{id}.
pub const UPDATE_USERS: &str = "scim.users.updateUsers";
/// DELETE /Users/{id}.
pub const DELETE_USERS: &str = "scim.users.deleteUsers";
/// GET /Groups, GET /Groups/{id}.
pub const READ_GROUPS: &str = "scim.groups.readGroups";
/// POST /Groups.
pub const CREATE_GROUPS: &str = "scim.groups.createGroups";
/// PUT, PATCH /Groups/{id}.
pub const UPDATE_GROUPS: &str = "scim.groups.updateGroups";
/// DELETE /Groups/{id}.
pub const DELETE_GROUPS: &str = "scim.groups.deleteGroups";
/// GET /Schemas, GET /Schemas/{id}.
pub const READ_SCHEMAS: &str = "scim.schemas.readSchemas";

/// Every scope the simulator knows, in documentation order.
pub const ALL_SCOPES: &[&str] = &[
    READ_USERS,
    CREATE_USERS,
    UPDATE_USERS,
    DELETE_USERS,
    READ_GROUPS,
    CREATE_GROUPS,
    UPDATE_GROUPS,
    DELETE_GROUPS,
    READ_SCHEMAS,
];

/// Default page size.
pub const DEFAULT_COUNT: usize = 25;
/// Largest page size; larger requests are clamped.
pub const MAX_COUNT: usize = 1000;

type Answer = Result<Response, Fail>;

fn err(e: ScimError) -> Fail {
    Fail::Scim(e)
}

/// The base URL as the client sees it (from `Host`), for `meta.location`.
fn base(sim: &Sim, headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
        })
        .map(|h| format!("http://{h}"))
        .unwrap_or_else(|| sim.base_url.clone())
}

/// Authenticates, checks the scope, and checks the acting user of client-credentials tokens.
fn guard(sim: &Sim, headers: &HeaderMap, scope: Option<&str>) -> Result<Principal, Fail> {
    let p = oauth::authenticate(sim, headers)?;
    if let Some(scope) = scope {
        if !p.scopes().iter().any(|s| s == scope) {
            return Err(err(ScimError::forbidden(format!(
                "The token lacks the scope {scope} this operation needs"
            ))));
        }
    }
    if p.needs_acting_user() {
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let store = lock(&sim.store);
        match (h("x-as-user-email"), h("x-as-user-id")) {
            (None, None) => {
                return Err(err(ScimError::new(
                    StatusCode::BAD_REQUEST,
                    "Tokens from the client-credentials grant must name an acting user with \
                     x-as-user-email or x-as-user-id",
                )))
            }
            (Some(email), _) if store.user_by_name(email).is_none() => {
                return Err(err(ScimError::forbidden(format!(
                    "x-as-user-email {email} names no user of this company"
                ))))
            }
            (None, Some(id)) if store.get(Kind::User, id).is_none() => {
                return Err(err(ScimError::forbidden(format!(
                    "x-as-user-id {id} names no user of this company"
                ))))
            }
            _ => {}
        }
    }
    Ok(p)
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn int_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ScimError> {
    match q.get(&name.to_ascii_lowercase()) {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => {
            s.trim().parse::<i64>().map(Some).map_err(|_| {
                ScimError::invalid_value(format!("{name} must be an integer, got {s:?}"))
            })
        }
    }
}

fn projection(kind: Kind, q: &HashMap<String, String>) -> Projection {
    Projection::parse(
        kind,
        q.get("attributes").map(String::as_str),
        q.get("excludedattributes").map(String::as_str),
    )
}

fn body_json(body: &[u8]) -> Result<Value, ScimError> {
    serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))
}

fn read_scope(kind: Kind) -> &'static str {
    match kind {
        Kind::User => READ_USERS,
        Kind::Group => READ_GROUPS,
    }
}

fn not_found(kind: Kind, id: &str) -> ScimError {
    ScimError::not_found(format!("{} {id} not found", kind.resource_type()))
}

fn created(v: &Value) -> Response {
    let mut r = scim_json(StatusCode::CREATED, v);
    if let Some(loc) = v
        .pointer("/meta/location")
        .and_then(Value::as_str)
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

async fn list(sim: Arc<Sim>, headers: HeaderMap, uri: Uri, kind: Kind) -> Response {
    list_inner(&sim, &headers, &uri, kind).unwrap_or_else(IntoResponse::into_response)
}

fn list_inner(sim: &Sim, headers: &HeaderMap, uri: &Uri, kind: Kind) -> Answer {
    guard(sim, headers, Some(read_scope(kind)))?;
    let q = query(uri);
    let start = int_param(&q, "startIndex")
        .map_err(err)?
        .unwrap_or(1)
        .max(1) as usize;
    let count = int_param(&q, "count")
        .map_err(err)?
        .map(|c| c.clamp(0, MAX_COUNT as i64) as usize)
        .unwrap_or(DEFAULT_COUNT);
    let filter = match q.get("filter").filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(filter::parse(kind, f).map_err(err)?),
        None => None,
    };
    let proj = projection(kind, &q);
    let base = base(sim, headers);
    let store = lock(&sim.store);
    let (total, page) = store.page(kind, filter.as_ref(), start, count, &base);
    // Whole resources are copied from the records' cached JSON text; projected ones are
    // rendered afresh.
    let whole = proj.is_whole();
    let resources = page
        .iter()
        .map(|r| match whole {
            true => r.rendered(kind, &base),
            false => std::borrow::Cow::Owned(raw_json(&proj.apply(render(kind, r, &base)))),
        })
        .collect();
    let body = ListPage {
        resources,
        items_per_page: page.len(),
        schemas: [LIST_RESPONSE],
        start_index: start,
        total_results: total,
    };
    // Raw JSON text and numbers always serialize.
    let text = serde_json::to_string(&body).unwrap_or_default();
    Ok(scim_text(StatusCode::OK, text))
}

/// A list response, with the members in the order a `json!` rendering gives them.
#[derive(serde::Serialize)]
struct ListPage<'a> {
    #[serde(rename = "Resources")]
    resources: Vec<std::borrow::Cow<'a, serde_json::value::RawValue>>,
    #[serde(rename = "itemsPerPage")]
    items_per_page: usize,
    schemas: [&'static str; 1],
    #[serde(rename = "startIndex")]
    start_index: usize,
    #[serde(rename = "totalResults")]
    total_results: usize,
}

fn get_inner(sim: &Sim, headers: &HeaderMap, uri: &Uri, kind: Kind, id: &str) -> Answer {
    guard(sim, headers, Some(read_scope(kind)))?;
    let proj = projection(kind, &query(uri));
    let base = base(sim, headers);
    let v = {
        let store = lock(&sim.store);
        let rec = store
            .get(kind, id)
            .ok_or_else(|| err(not_found(kind, id)))?;
        render(kind, rec, &base)
    };
    Ok(scim_json(StatusCode::OK, &proj.apply(v)))
}

fn is_inactive(body: &Map<String, Value>) -> bool {
    body.get("active") == Some(&Value::Bool(false))
}

/// Validates a full User body (create and PUT).
fn user_body(sim: &Sim, body: &[u8], creating: bool) -> Result<Map<String, Value>, ScimError> {
    let v = body_json(body)?;
    let cleaned = schema::clean_resource(Kind::User, &v)?;
    let mut b = cleaned.body;
    schema::check_required(Kind::User, &b)?;
    if sim.config.no_saml && (creating || cleaned.password.is_some()) {
        schema::check_password(cleaned.password.as_deref())?;
    }
    if creating {
        // Ironclad has no inactive users: a created user is active whatever the body says
        // (only PUT/PATCH with `active: false` mean something: removal).
        b.insert("active".into(), Value::Bool(true));
    } else {
        b.entry("active").or_insert(Value::Bool(true));
    }
    Ok(b)
}

fn group_body(body: &[u8]) -> Result<Map<String, Value>, ScimError> {
    let v = body_json(body)?;
    let b = schema::clean_resource(Kind::Group, &v)?.body;
    schema::check_required(Kind::Group, &b)?;
    Ok(b)
}

fn create_user_inner(sim: &Sim, headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Answer {
    guard(sim, headers, Some(CREATE_USERS))?;
    let b = user_body(sim, body, true).map_err(err)?;
    let base = base(sim, headers);
    let v = {
        let mut store = lock(&sim.store);
        let rec = Record::new(new_id(), b, Some(sim.provider.to_string()));
        let rec = store.insert_user(rec).map_err(err)?;
        render(Kind::User, rec, &base)
    };
    Ok(created(&projection(Kind::User, &query(uri)).apply(v)))
}

fn create_group_inner(sim: &Sim, headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Answer {
    guard(sim, headers, Some(CREATE_GROUPS))?;
    let mut b = group_body(body).map_err(err)?;
    let base = base(sim, headers);
    let v = {
        let mut store = lock(&sim.store);
        store.check_members(&mut b).map_err(err)?;
        let rec = store
            .insert_group(Record::new(new_id(), b, None))
            .map_err(err)?;
        render(Kind::Group, rec, &base)
    };
    Ok(created(&projection(Kind::Group, &query(uri)).apply(v)))
}

/// Stores new attributes for a user, or removes the user when they say `active: false`.
fn commit_user(sim: &Sim, id: &str, b: Map<String, Value>, base: &str) -> Result<Value, ScimError> {
    let mut store = lock(&sim.store);
    if store.get(Kind::User, id).is_none() {
        return Err(not_found(Kind::User, id));
    }
    if is_inactive(&b) {
        // Ironclad: `active: false` is not a soft state; the user leaves the company.
        let Some(mut rec) = store.remove_user(id) else {
            return Err(not_found(Kind::User, id));
        };
        rec.touch(b);
        return Ok(render(Kind::User, &rec, base));
    }
    store.update_user(id, b)?;
    let rec = store
        .get(Kind::User, id)
        .ok_or_else(|| not_found(Kind::User, id))?;
    Ok(render(Kind::User, rec, base))
}

fn put_user_inner(sim: &Sim, headers: &HeaderMap, uri: &Uri, id: &str, body: &[u8]) -> Answer {
    guard(sim, headers, Some(UPDATE_USERS))?;
    let b = user_body(sim, body, false).map_err(err)?;
    let v = commit_user(sim, id, b, &base(sim, headers)).map_err(err)?;
    Ok(scim_json(
        StatusCode::OK,
        &projection(Kind::User, &query(uri)).apply(v),
    ))
}

fn patch_user_inner(sim: &Sim, headers: &HeaderMap, uri: &Uri, id: &str, body: &[u8]) -> Answer {
    guard(sim, headers, Some(UPDATE_USERS))?;
    let req = body_json(body).map_err(err)?;
    let current = {
        let store = lock(&sim.store);
        store
            .get(Kind::User, id)
            .map(|r| r.body.clone())
            .ok_or_else(|| err(not_found(Kind::User, id)))?
    };
    let mut b = current;
    patch::apply(Kind::User, &mut b, &req).map_err(err)?;
    let mut b = schema::clean_resource(Kind::User, &Value::Object(b))
        .map_err(err)?
        .body;
    schema::check_required(Kind::User, &b).map_err(err)?;
    b.entry("active").or_insert(Value::Bool(true));
    let v = commit_user(sim, id, b, &base(sim, headers)).map_err(err)?;
    Ok(scim_json(
        StatusCode::OK,
        &projection(Kind::User, &query(uri)).apply(v),
    ))
}

fn commit_group(
    sim: &Sim,
    id: &str,
    mut b: Map<String, Value>,
    base: &str,
) -> Result<Value, ScimError> {
    let mut store = lock(&sim.store);
    if store.get(Kind::Group, id).is_none() {
        return Err(not_found(Kind::Group, id));
    }
    store.check_members(&mut b)?;
    store.update_group(id, b)?;
    let rec = store
        .get(Kind::Group, id)
        .ok_or_else(|| not_found(Kind::Group, id))?;
    Ok(render(Kind::Group, rec, base))
}

fn put_group_inner(sim: &Sim, headers: &HeaderMap, uri: &Uri, id: &str, body: &[u8]) -> Answer {
    guard(sim, headers, Some(UPDATE_GROUPS))?;
    let b = group_body(body).map_err(err)?;
    let v = commit_group(sim, id, b, &base(sim, headers)).map_err(err)?;
    Ok(scim_json(
        StatusCode::OK,
        &projection(Kind::Group, &query(uri)).apply(v),
    ))
}

fn patch_group_inner(sim: &Sim, headers: &HeaderMap, uri: &Uri, id: &str, body: &[u8]) -> Answer {
    guard(sim, headers, Some(UPDATE_GROUPS))?;
    let req = body_json(body).map_err(err)?;
    let current = {
        let store = lock(&sim.store);
        store
            .get(Kind::Group, id)
            .map(|r| r.body.clone())
            .ok_or_else(|| err(not_found(Kind::Group, id)))?
    };
    let mut b = current;
    patch::apply(Kind::Group, &mut b, &req).map_err(err)?;
    let b = schema::clean_resource(Kind::Group, &Value::Object(b))
        .map_err(err)?
        .body;
    schema::check_required(Kind::Group, &b).map_err(err)?;
    let v = commit_group(sim, id, b, &base(sim, headers)).map_err(err)?;
    Ok(scim_json(
        StatusCode::OK,
        &projection(Kind::Group, &query(uri)).apply(v),
    ))
}

fn delete_inner(sim: &Sim, headers: &HeaderMap, kind: Kind, id: &str) -> Answer {
    let scope = match kind {
        Kind::User => DELETE_USERS,
        Kind::Group => DELETE_GROUPS,
    };
    guard(sim, headers, Some(scope))?;
    let mut store = lock(&sim.store);
    let removed = match kind {
        Kind::User => store.remove_user(id).is_some(),
        Kind::Group => store.remove_group(id).is_some(),
    };
    if removed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(err(not_found(kind, id)))
    }
}

/// `GET /Users`.
pub async fn list_users(State(sim): State<Arc<Sim>>, headers: HeaderMap, uri: Uri) -> Response {
    list(sim, headers, uri, Kind::User).await
}
/// `GET /Groups`.
pub async fn list_groups(State(sim): State<Arc<Sim>>, headers: HeaderMap, uri: Uri) -> Response {
    list(sim, headers, uri, Kind::Group).await
}
/// `GET /Users/{id}`.
pub async fn get_user(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    get_inner(&sim, &headers, &uri, Kind::User, &id).unwrap_or_else(IntoResponse::into_response)
}
/// `GET /Groups/{id}`.
pub async fn get_group(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    get_inner(&sim, &headers, &uri, Kind::Group, &id).unwrap_or_else(IntoResponse::into_response)
}
/// `POST /Users`.
pub async fn create_user(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    create_user_inner(&sim, &headers, &uri, &body).unwrap_or_else(IntoResponse::into_response)
}
/// `POST /Groups`.
pub async fn create_group(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    create_group_inner(&sim, &headers, &uri, &body).unwrap_or_else(IntoResponse::into_response)
}
/// `PUT /Users/{id}`.
pub async fn put_user(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    put_user_inner(&sim, &headers, &uri, &id, &body).unwrap_or_else(IntoResponse::into_response)
}
/// `PATCH /Users/{id}`.
pub async fn patch_user(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    patch_user_inner(&sim, &headers, &uri, &id, &body).unwrap_or_else(IntoResponse::into_response)
}
/// `PUT /Groups/{id}`.
pub async fn put_group(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    put_group_inner(&sim, &headers, &uri, &id, &body).unwrap_or_else(IntoResponse::into_response)
}
/// `PATCH /Groups/{id}`.
pub async fn patch_group(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    patch_group_inner(&sim, &headers, &uri, &id, &body).unwrap_or_else(IntoResponse::into_response)
}
/// `DELETE /Users/{id}`.
pub async fn delete_user(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    delete_inner(&sim, &headers, Kind::User, &id).unwrap_or_else(IntoResponse::into_response)
}
/// `DELETE /Groups/{id}`.
pub async fn delete_group(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    delete_inner(&sim, &headers, Kind::Group, &id).unwrap_or_else(IntoResponse::into_response)
}

/// `GET /Schemas`.
pub async fn list_schemas(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(r) = guard(&sim, &headers, Some(READ_SCHEMAS)) {
        return r.into_response();
    }
    let all = schema::all_schemas_json(&base(&sim, &headers));
    list_of(all)
}

/// `GET /Schemas/{id}`.
pub async fn get_schema(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = guard(&sim, &headers, Some(READ_SCHEMAS)) {
        return r.into_response();
    }
    match schema::schema_json(&base(&sim, &headers), &id) {
        Some(s) => scim_json(StatusCode::OK, &s),
        None => err(ScimError::not_found(format!("schema {id} not found"))).into_response(),
    }
}

fn list_of(items: Vec<Value>) -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_RESPONSE],
            "totalResults": items.len(),
            "startIndex": 1,
            "itemsPerPage": items.len(),
            "Resources": items,
        }),
    )
}

fn resource_types(base: &str) -> Vec<Value> {
    [Kind::User, Kind::Group]
        .into_iter()
        .map(|k| {
            let exts: Vec<Value> = k
                .extensions()
                .iter()
                .map(|e| json!({"schema": e.id, "required": false}))
                .collect();
            let mut v = json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
                "id": k.resource_type(),
                "name": k.resource_type(),
                "description": format!("Ironclad {}", k.endpoint()),
                "endpoint": format!("/{}", k.endpoint()),
                "schema": k.core().id,
                "meta": {
                    "resourceType": "ResourceType",
                    "location": format!("{base}/scim/v2/ResourceTypes/{}", k.resource_type()),
                }
            });
            if let (false, Some(m)) = (exts.is_empty(), v.as_object_mut()) {
                m.insert("schemaExtensions".into(), Value::Array(exts));
            }
            v
        })
        .collect()
}

/// `GET /ResourceTypes`.
pub async fn list_resource_types(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(r) = guard(&sim, &headers, None) {
        return r.into_response();
    }
    list_of(resource_types(&base(&sim, &headers)))
}

/// `GET /ResourceTypes/{id}`.
pub async fn get_resource_type(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = guard(&sim, &headers, None) {
        return r.into_response();
    }
    resource_types(&base(&sim, &headers))
        .into_iter()
        .find(|r| r.get("id").and_then(Value::as_str) == Some(id.as_str()))
        .map(|r| scim_json(StatusCode::OK, &r))
        .unwrap_or_else(|| {
            err(ScimError::not_found(format!(
                "resource type {id} not found"
            )))
            .into_response()
        })
}

/// `GET /ServiceProviderConfig`.
pub async fn service_provider_config(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(r) = guard(&sim, &headers, None) {
        return r.into_response();
    }
    let base = base(&sim, &headers);
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://developer.ironcladapp.com/reference/scim-api",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": MAX_COUNT},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "OAuth 2.0 access token or SCIM token in the Authorization header",
                "specUri": "https://www.rfc-editor.org/info/rfc6750",
                "primary": true
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{base}/scim/v2/ServiceProviderConfig"),
            }
        }),
    )
}

/// `POST /.search` (and `/Users/.search`, `/Groups/.search`): not offered by Ironclad.
pub async fn search_not_implemented(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    if let Err(r) = guard(&sim, &headers, None) {
        return r.into_response();
    }
    ScimError::new(
        StatusCode::NOT_IMPLEMENTED,
        "POST /.search is not supported; use GET with filter",
    )
    .into_response()
}

/// Anything else: a SCIM 404.
pub async fn not_found_fallback(uri: Uri) -> Response {
    ScimError::not_found(format!("no such endpoint: {}", uri.path())).into_response()
}
