//! Users: GET, list (paged), find by userName, POST (with lookup after an unknown outcome),
//! PUT, PATCH and DELETE on `/Users`.
//!
//! What does not live here: what a user should contain (mapping) or when to write (plan).

use super::error::IroncladError;
use super::filter;
use super::http::{segment, ApiRequest};
use super::paging::{self, ListOptions, ListSummary};
use super::types::{patch_body, PatchOp, ScimUser};
use super::IroncladClient;
use futures::future::BoxFuture;
use reqwest::Method;
use serde_json::Value;

fn user_path(id: &str) -> String {
    format!("/Users/{}", segment(id))
}

fn one(
    resp: super::http::ApiResponse,
    method: &str,
    path: &str,
) -> Result<ScimUser, IroncladError> {
    match resp.body {
        Some(v @ Value::Object(_)) => Ok(ScimUser(v)),
        _ => Err(IroncladError::Decode {
            method: method.to_string(),
            path: path.to_string(),
            message: "expected a User object".into(),
            request_id: resp.request_id,
        }),
    }
}

impl IroncladClient {
    /// `GET /Users/{id}`; `None` on 404 (unknown, or removed by `active: false`).
    pub async fn get_user(&self, id: &str) -> Result<Option<ScimUser>, IroncladError> {
        let path = user_path(id);
        match self.http.send(&ApiRequest::get(&path)).await {
            Ok(r) => one(r, "GET", &path).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every user (optionally filtered), paged with the configured page size.
    pub async fn list_users(&self, filter: Option<String>) -> Result<Vec<ScimUser>, IroncladError> {
        let all = paging::list_all(&self.http, "/Users", &self.list_options(filter)).await?;
        Ok(all.into_iter().map(ScimUser).collect())
    }

    /// Streams users page by page (de-duplicated) to `on_page`, each page decoded into `R`
    /// (JSON trees, or the reconciliation's compact users). On error, discard what was
    /// received: it is not a complete listing.
    pub async fn for_each_user_page<R, F>(
        &self,
        opts: &ListOptions,
        on_page: F,
    ) -> Result<ListSummary, IroncladError>
    where
        R: paging::Listed,
        F: FnMut(Vec<R>) -> Result<(), IroncladError>,
    {
        paging::for_each_page(&self.http, "/Users", opts, on_page).await
    }

    /// The user with this userName (`userName eq "..."`, escaped), if any.
    pub async fn find_user_by_user_name(
        &self,
        user_name: &str,
    ) -> Result<Option<ScimUser>, IroncladError> {
        let opts = ListOptions {
            filter: Some(filter::eq("userName", user_name)),
            page_size: 2,
            ..Default::default()
        };
        let req = ApiRequest::get("/Users")
            .query("filter", opts.filter.clone().unwrap_or_default())
            .query("startIndex", "1")
            .query("count", "2");
        let resp = self.http.send(&req).await?;
        let found = resp
            .body
            .as_ref()
            .and_then(|b| b.get("Resources"))
            .and_then(Value::as_array)
            .and_then(|a| {
                // userName is unique case-insensitively; prefer an exact match if a server
                // returned more than one.
                a.iter()
                    .find(|u| u.get("userName").and_then(Value::as_str) == Some(user_name))
                    .or_else(|| a.first())
                    .cloned()
            });
        Ok(found.map(ScimUser))
    }

    /// `POST /Users`. If the answer is lost after sending (timeout, dropped connection, 5xx),
    /// the user is looked up by `userName` before anything is sent again, and a user found is
    /// returned: a retry never creates a duplicate.
    pub async fn create_user(&self, user: &ScimUser) -> Result<ScimUser, IroncladError> {
        let user_name = user.user_name().map(str::to_string);
        let req = ApiRequest::with_body(Method::POST, "/Users", user.as_value().clone());
        let lookup = || -> BoxFuture<'_, Result<Option<Value>, IroncladError>> {
            let user_name = user_name.clone();
            Box::pin(async move {
                match user_name {
                    Some(u) => Ok(self
                        .find_user_by_user_name(&u)
                        .await?
                        .map(ScimUser::into_value)),
                    None => Err(IroncladError::Setup(
                        "cannot check an unanswered create: the user has no userName".into(),
                    )),
                }
            })
        };
        let resp = self.http.send_create(&req, &lookup).await?;
        one(resp, "POST", "/Users")
    }

    /// `PUT /Users/{id}`: replaces the user. Send every attribute to keep (start from the user
    /// as read).
    pub async fn replace_user(&self, id: &str, user: &ScimUser) -> Result<ScimUser, IroncladError> {
        let path = user_path(id);
        let req = ApiRequest::with_body(Method::PUT, &path, user.as_value().clone());
        let resp = self.http.send(&req).await?;
        one(resp, "PUT", &path)
    }

    /// `PATCH /Users/{id}`; the updated user when the server returns it (200), `None` on 204.
    pub async fn patch_user(
        &self,
        id: &str,
        ops: &[PatchOp],
    ) -> Result<Option<ScimUser>, IroncladError> {
        let path = user_path(id);
        let req = ApiRequest::with_body(Method::PATCH, &path, patch_body(ops));
        let resp = self.http.send(&req).await?;
        Ok(match resp.body {
            Some(v @ Value::Object(_)) => Some(ScimUser(v)),
            _ => None,
        })
    }

    /// `DELETE /Users/{id}`. A 404 after an earlier attempt's answer was lost counts as done;
    /// a 404 on the first attempt is an error (`is_not_found()`).
    pub async fn delete_user(&self, id: &str) -> Result<(), IroncladError> {
        self.http.send(&ApiRequest::delete(user_path(id))).await?;
        Ok(())
    }
}
