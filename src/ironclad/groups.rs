//! Groups: GET, list (paged), find by displayName or externalId, POST (with lookup after an
//! unknown outcome), PUT, PATCH (membership) and DELETE on `/Groups`.
//!
//! What does not live here: which groups should exist (mapping, plan).

use super::error::IroncladError;
use super::filter;
use super::http::{segment, ApiRequest};
use super::paging::{self, ListOptions, ListSummary};
use super::types::{patch_body, PatchOp, ScimGroup};
use super::IroncladClient;
use futures::future::BoxFuture;
use reqwest::Method;
use serde_json::Value;

fn group_path(id: &str) -> String {
    format!("/Groups/{}", segment(id))
}

fn one(
    resp: super::http::ApiResponse,
    method: &str,
    path: &str,
) -> Result<ScimGroup, IroncladError> {
    match resp.body {
        Some(v @ Value::Object(_)) => Ok(ScimGroup(v)),
        _ => Err(IroncladError::Decode {
            method: method.to_string(),
            path: path.to_string(),
            message: "expected a Group object".into(),
            request_id: resp.request_id,
        }),
    }
}

impl IroncladClient {
    /// `GET /Groups/{id}`; `None` on 404.
    pub async fn get_group(&self, id: &str) -> Result<Option<ScimGroup>, IroncladError> {
        let path = group_path(id);
        match self.http.send(&ApiRequest::get(&path)).await {
            Ok(r) => one(r, "GET", &path).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every group (optionally filtered), with members.
    pub async fn list_groups(
        &self,
        filter: Option<String>,
    ) -> Result<Vec<ScimGroup>, IroncladError> {
        let all = paging::list_all(&self.http, "/Groups", &self.list_options(filter)).await?;
        Ok(all.into_iter().map(ScimGroup).collect())
    }

    /// Streams groups page by page (de-duplicated) to `on_page`. On error, discard what was
    /// received.
    pub async fn for_each_group_page<F>(
        &self,
        opts: &ListOptions,
        mut on_page: F,
    ) -> Result<ListSummary, IroncladError>
    where
        F: FnMut(Vec<ScimGroup>) -> Result<(), IroncladError>,
    {
        paging::for_each_page(&self.http, "/Groups", opts, |page| {
            on_page(page.into_iter().map(ScimGroup).collect())
        })
        .await
    }

    /// The first group whose `attr` equals `value` (`displayName` or `externalId`).
    pub async fn find_group(
        &self,
        attr: &str,
        value: &str,
    ) -> Result<Option<ScimGroup>, IroncladError> {
        let req = ApiRequest::get("/Groups")
            .query("filter", filter::eq(attr, value))
            .query("startIndex", "1")
            .query("count", "1");
        let resp = self.http.send(&req).await?;
        Ok(resp
            .body
            .as_ref()
            .and_then(|b| b.get("Resources"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned()
            .map(ScimGroup))
    }

    /// `POST /Groups`. After a lost answer the group is looked up (by `externalId` when the
    /// body has one, else by `displayName`) before anything is sent again.
    pub async fn create_group(&self, group: &ScimGroup) -> Result<ScimGroup, IroncladError> {
        self.create_group_answered(group).await.map(|(g, _, _)| g)
    }

    /// [`IroncladClient::create_group`], with the answer's HTTP status (200 when an unanswered
    /// create was found by lookup) and request id, for the audit.
    pub async fn create_group_answered(
        &self,
        group: &ScimGroup,
    ) -> Result<(ScimGroup, u16, String), IroncladError> {
        let key = match (group.external_id(), group.display_name()) {
            (Some(e), _) => Some(("externalId", e.to_string())),
            (None, Some(d)) => Some(("displayName", d.to_string())),
            (None, None) => None,
        };
        let req = ApiRequest::with_body(Method::POST, "/Groups", group.as_value().clone());
        let lookup = || -> BoxFuture<'_, Result<Option<Value>, IroncladError>> {
            let key = key.clone();
            Box::pin(async move {
                match key {
                    Some((attr, v)) => {
                        Ok(self.find_group(attr, &v).await?.map(ScimGroup::into_value))
                    }
                    None => Err(IroncladError::Setup(
                        "cannot check an unanswered create: the group has no displayName".into(),
                    )),
                }
            })
        };
        let resp = self.http.send_create(&req, &lookup).await?;
        let (status, request_id) = (resp.status, resp.request_id.clone());
        Ok((one(resp, "POST", "/Groups")?, status, request_id))
    }

    /// `PUT /Groups/{id}`: replaces the group, members included.
    pub async fn replace_group(
        &self,
        id: &str,
        group: &ScimGroup,
    ) -> Result<ScimGroup, IroncladError> {
        let path = group_path(id);
        let req = ApiRequest::with_body(Method::PUT, &path, group.as_value().clone());
        let resp = self.http.send(&req).await?;
        one(resp, "PUT", &path)
    }

    /// `PATCH /Groups/{id}`; the group when returned (200), `None` on 204.
    pub async fn patch_group(
        &self,
        id: &str,
        ops: &[PatchOp],
    ) -> Result<Option<ScimGroup>, IroncladError> {
        let path = group_path(id);
        let req = ApiRequest::with_body(Method::PATCH, &path, patch_body(ops));
        let resp = self.http.send(&req).await?;
        Ok(match resp.body {
            Some(v @ Value::Object(_)) => Some(ScimGroup(v)),
            _ => None,
        })
    }

    /// Adds users (by id) to a group.
    pub async fn add_group_members(
        &self,
        id: &str,
        user_ids: &[&str],
    ) -> Result<(), IroncladError> {
        self.patch_group(id, &[PatchOp::add_members(user_ids.iter().copied())])
            .await
            .map(|_| ())
    }

    /// Removes users (by id) from a group.
    pub async fn remove_group_members(
        &self,
        id: &str,
        user_ids: &[&str],
    ) -> Result<(), IroncladError> {
        self.patch_group(id, &[PatchOp::remove_members(user_ids.iter().copied())])
            .await
            .map(|_| ())
    }

    /// `DELETE /Groups/{id}`.
    pub async fn delete_group(&self, id: &str) -> Result<(), IroncladError> {
        self.http.send(&ApiRequest::delete(group_path(id))).await?;
        Ok(())
    }
}
