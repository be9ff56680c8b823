//! Paged listing of any SCIM collection (`startIndex`/`count`), correct when the collection
//! changes while it is read, in exactly `ceil(total / count)` requests when it does not:
//! - resources are de-duplicated by `id` (a resource inserted before the cursor shifts later
//!   ones right, so one may come twice); how many were dropped is logged;
//! - when `totalResults` shrinks between pages (deletions before the cursor shift later
//!   resources left), the next page starts that many positions earlier, so none is skipped;
//! - when `totalResults` changed at all, or a duplicate came, or a page came back empty before
//!   the total was reached, one more full pass is made and merged by id;
//! - listing stops at an empty page or when `startIndex` passes `totalResults`;
//! - two pages are kept in flight (see [`for_each_page`]), each read and decoded on a task of
//!   its own, into any [`Listed`] form (JSON trees, or the reconciliation's compact users).
//!
//! What paging alone cannot see: an insertion after the cursor and a deletion before it
//! between two pages (the total stays the same, and one resource slips past the boundary).
//! Checking for it would cost an overlapping resource per page, so one request more per
//! thousand resources; the reconciliation does not need it: a resource missed by a listing is
//! never removed (only what was read can be), and a user missed and then created again meets a
//! uniqueness conflict, which apply resolves by finding the user by userName and updating it.
//!
//! A listing either returns everything or fails: no partial result escapes
//! ([`for_each_page`] hands pages to a callback as they arrive; a caller that gets an error
//! must discard what it was given).
//!
//! What does not live here: what a resource means (see [`super::types`]).

use super::error::IroncladError;
use super::http::{ApiRequest, ScimHttp};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::VecDeque;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// A SCIM filter (build it with [`super::filter`]).
    pub filter: Option<String>,
    /// `attributes`, comma separated.
    pub attributes: Option<String>,
    /// `excludedAttributes`, comma separated (e.g. `members` for a group count).
    pub excluded_attributes: Option<String>,
    /// Resources per page (`count`), 1..=1000 for Ironclad.
    pub page_size: u32,
}

/// How a listing went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSummary {
    /// Pages requested.
    pub pages: u32,
    /// Unique resources handed out.
    pub resources: usize,
    /// Duplicates dropped.
    pub duplicates_dropped: usize,
    /// The last `totalResults` the server reported.
    pub last_total: Option<u64>,
    /// Full passes made (2 when the first one ended short of `totalResults`).
    pub passes: u32,
}

/// A resource as a listing hands it out: anything with an `id`, decoded from the JSON text of
/// each member of a page's `Resources` array. JSON trees ([`Value`]) are one form; the
/// reconciliation decodes users straight into its compact form, with no tree.
pub trait Listed: Sized + Send + 'static {
    /// The resource's `id`, if it has one (resources without one are never de-duplicated).
    fn id(&self) -> Option<&str>;
    /// The resources of one page, from the text of each member of its `Resources` array.
    fn decode_page(items: Vec<&RawValue>) -> Result<Vec<Self>, String>;
}

impl Listed for Value {
    fn id(&self) -> Option<&str> {
        self.get("id").and_then(Value::as_str)
    }

    fn decode_page(items: Vec<&RawValue>) -> Result<Vec<Self>, String> {
        items
            .into_iter()
            .map(|r| serde_json::from_str(r.get()).map_err(|e| format!("a resource: {e}")))
            .collect()
    }
}

struct Page<R> {
    total: Option<u64>,
    resources: Vec<R>,
}

/// The parts of a list response a listing reads, split in one pass over its text, with no
/// tree: `totalResults` (when it is a whole number) and the text of each member of
/// `Resources` (found under any casing of that name; the exact name wins).
#[derive(Default)]
struct ListParts<'a> {
    total: Option<u64>,
    resources: Option<Vec<&'a RawValue>>,
    other_casing: Option<Vec<&'a RawValue>>,
}

impl<'de> serde::Deserialize<'de> for ListParts<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Parts;
        impl<'de> serde::de::Visitor<'de> for Parts {
            type Value = ListParts<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::de::Error as _;
                let mut out = ListParts::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let exact = key == "Resources";
                    if exact || key.eq_ignore_ascii_case("resources") {
                        let items = map
                            .next_value::<Option<Vec<&'de RawValue>>>()
                            .map_err(|e| {
                                A::Error::custom(format!(
                                    "`{key}` is not an array of JSON objects: {e}"
                                ))
                            })?
                            .unwrap_or_default();
                        match exact {
                            true => out.resources = Some(items),
                            false => out.other_casing = Some(items),
                        }
                    } else if key == "totalResults" {
                        let t = map.next_value::<&'de RawValue>()?;
                        out.total = serde_json::from_str::<u64>(t.get()).ok();
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Parts)
    }
}

/// Splits a list response into `totalResults` and the text of each member of `Resources`.
fn split_list(bytes: &[u8]) -> Result<(Option<u64>, Vec<&RawValue>), String> {
    let parts: ListParts<'_> = serde_json::from_slice(bytes).map_err(|e| {
        format!("a list response must be a JSON object whose `Resources` is an array ({e})")
    })?;
    let resources = parts.resources.or(parts.other_casing).unwrap_or_default();
    Ok((parts.total, resources))
}

/// Reads the page at `start`. Owns what it needs, so that it can run on a task of its own
/// while the caller works on the page before.
async fn fetch_page<R: Listed>(
    http: ScimHttp,
    path: String,
    opts: ListOptions,
    start: u64,
) -> Result<Page<R>, IroncladError> {
    let mut req = ApiRequest::get(&path)
        .query("startIndex", start.to_string())
        .query("count", opts.page_size.max(1).to_string());
    if let Some(f) = &opts.filter {
        req = req.query("filter", f.clone());
    }
    if let Some(a) = &opts.attributes {
        req = req.query("attributes", a.clone());
    }
    if let Some(a) = &opts.excluded_attributes {
        req = req.query("excludedAttributes", a.clone());
    }
    let resp = http.send_raw(&req).await?;
    let bad = |m: String| IroncladError::Decode {
        method: "GET".into(),
        path: path.clone(),
        message: m,
        request_id: resp.request_id.clone(),
    };
    let (total, items) = split_list(&resp.bytes).map_err(bad)?;
    let resources = R::decode_page(items).map_err(bad)?;
    Ok(Page { total, resources })
}

/// A page being read on a task of its own; dropped unfinished, the read is cancelled.
struct Pending<R>(tokio::task::JoinHandle<Result<Page<R>, IroncladError>>);

impl<R: Listed> Pending<R> {
    fn start(http: &ScimHttp, path: &str, opts: &ListOptions, start: u64) -> Self {
        Pending(tokio::spawn(fetch_page(
            http.clone(),
            path.to_string(),
            opts.clone(),
            start,
        )))
    }

    async fn page(mut self, path: &str) -> Result<Page<R>, IroncladError> {
        match (&mut self.0).await {
            Ok(r) => r,
            Err(e) => Err(IroncladError::Paging {
                path: path.to_string(),
                message: format!("reading a page stopped: {e}"),
            }),
        }
    }
}

impl<R> Drop for Pending<R> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pages in flight at once while a listing reads a counted collection.
const LOOKAHEAD: usize = 2;

/// Lists a collection page by page, calling `on_page` with each page's new (not yet seen)
/// resources. Returns a summary, or the first error (the caller discards what it received).
///
/// Pages are requested ahead: when a page arrives, the next one is requested before `on_page`
/// works on it (where it starts depends only on the page), and on a collection whose
/// `totalResults` is known and did not shrink, one more beyond it, starting where pages of the
/// same size put it. Each page is decoded on its own task. While the collection holds still
/// and the server fills its pages, the requests are exactly those of a sequential listing;
/// a page asked for ahead that the listing does not go to (the total shrank, a page came
/// back shorter) is cancelled and asked for again where the listing goes.
pub async fn for_each_page<R, F>(
    http: &ScimHttp,
    path: &str,
    opts: &ListOptions,
    mut on_page: F,
) -> Result<ListSummary, IroncladError>
where
    R: Listed,
    F: FnMut(Vec<R>) -> Result<(), IroncladError>,
{
    let page_size = u64::from(opts.page_size.max(1));
    let mut seen: foldhash::HashSet<String> = foldhash::HashSet::default();
    let mut summary = ListSummary::default();
    loop {
        summary.passes += 1;
        let first_pass = summary.passes == 1;
        let before = seen.len();
        let mut changed = false;
        let mut start: u64 = 1;
        let mut prev_total: Option<u64> = None;
        let mut max_total: u64 = 0;
        let mut pass_pages: u64 = 0;
        // Pages requested ahead, with where each starts.
        let mut ahead: VecDeque<(u64, Pending<R>)> = VecDeque::new();
        loop {
            pass_pages += 1;
            // Bounds a pathological server (one that keeps shifting): three times the pages the
            // largest total needs, plus slack.
            let allowed = 10 + 3 * max_total.div_ceil(page_size);
            if pass_pages > allowed {
                return Err(IroncladError::Paging {
                    path: path.to_string(),
                    message: format!(
                        "gave up after {pass_pages} pages: the collection kept changing while it was read"
                    ),
                });
            }
            let pending = match ahead.pop_front() {
                Some((at, p)) if at == start => p,
                _ => {
                    ahead.clear();
                    Pending::start(http, path, opts, start)
                }
            };
            let page = pending.page(path).await?;
            summary.pages += 1;
            let mut shrunk_by = 0;
            if let Some(t) = page.total {
                max_total = max_total.max(t);
                summary.last_total = Some(t);
                if let Some(p) = prev_total {
                    if t != p {
                        changed = true;
                    }
                    shrunk_by = p.saturating_sub(t);
                }
                prev_total = Some(t);
            }
            let n = page.resources.len() as u64;
            if n == 0 {
                if page.total.is_some_and(|t| t >= start) {
                    // Items should be here but are not: they moved left past the cursor.
                    changed = true;
                }
                break;
            }
            let last = page.total.is_some_and(|t| start + n > t);
            if !last {
                if shrunk_by > 0 {
                    // Deletions before the cursor shifted this page left: re-read from that
                    // far back.
                    tracing::info!(
                        path,
                        shrunk_by,
                        "paging: totalResults shrank while reading; re-reading the overlap"
                    );
                    start = start.saturating_sub(shrunk_by).max(1);
                } else {
                    start += n;
                }
                // Pages asked for ahead are kept only if the listing goes where they start.
                if ahead.front().map(|(at, _)| *at) != Some(start) {
                    ahead.clear();
                    ahead.push_back((start, Pending::start(http, path, opts, start)));
                }
                // On a counted collection that did not shrink, the pages after it start where
                // pages of this one's size put them.
                if let (Some(t), 0) = (page.total, shrunk_by) {
                    while ahead.len() < LOOKAHEAD {
                        let at = ahead.back().map_or(start, |(at, _)| *at) + n;
                        if at > t {
                            break;
                        }
                        ahead.push_back((at, Pending::start(http, path, opts, at)));
                    }
                }
            }
            let mut fresh = Vec::with_capacity(page.resources.len());
            for r in page.resources {
                match r.id() {
                    Some(id) if !seen.insert(id.to_string()) => {
                        if first_pass {
                            summary.duplicates_dropped += 1;
                            changed = true;
                        }
                    }
                    _ => fresh.push(r),
                }
            }
            summary.resources += fresh.len();
            if !fresh.is_empty() {
                on_page(fresh)?;
            }
            if last {
                break;
            }
        }
        if first_pass {
            if changed {
                tracing::warn!(
                    path,
                    "paging: the collection changed while it was read; reading it once more so nothing is missed"
                );
                continue;
            }
        } else {
            let added = seen.len() - before;
            tracing::info!(path, added, "paging: second pass done");
            if changed {
                tracing::warn!(
                    path,
                    "paging: the collection was still changing during the second pass"
                );
            }
        }
        break;
    }
    if summary.duplicates_dropped > 0 {
        http.stats()
            .record_duplicates(summary.duplicates_dropped as u64);
        tracing::info!(
            path,
            duplicates = summary.duplicates_dropped,
            "paging: dropped duplicate resources (the collection changed while it was read)"
        );
    }
    tracing::debug!(
        path,
        resources = summary.resources,
        pages = summary.pages,
        "listing done"
    );
    Ok(summary)
}

/// Lists a whole collection into memory.
pub async fn list_all(
    http: &ScimHttp,
    path: &str,
    opts: &ListOptions,
) -> Result<Vec<Value>, IroncladError> {
    let mut out = Vec::new();
    for_each_page(http, path, opts, |page: Vec<Value>| {
        out.extend(page);
        Ok(())
    })
    .await?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::{RetryPolicy, Secret};
    use crate::ironclad::http::{build_reqwest, HttpSettings, StaticAuth};
    use crate::ironclad::pacing::single_bucket;
    use crate::ironclad::stats::ClientStats;
    use axum::extract::{Query, State};
    use axum::routing::get;
    use axum::{Json, Router};
    use std::collections::HashMap;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn a_list_response_is_split_in_one_pass_under_any_casing() {
        let ids = |items: &[&RawValue]| -> Vec<String> {
            items.iter().map(|r| r.get().to_string()).collect()
        };
        let (total, items) =
            split_list(br#"{"schemas":["x"],"totalResults":3,"Resources":[{"id":"a"},{"id":"b"}],"startIndex":1}"#)
                .unwrap();
        assert_eq!(total, Some(3));
        assert_eq!(ids(&items), vec![r#"{"id":"a"}"#, r#"{"id":"b"}"#]);
        // Another casing is read; the exact name wins over it wherever it comes.
        let (_, items) = split_list(br#"{"resources":[{"id":"c"}]}"#).unwrap();
        assert_eq!(ids(&items), vec![r#"{"id":"c"}"#]);
        let (_, items) =
            split_list(br#"{"Resources":[{"id":"a"}],"RESOURCES":[{"id":"c"}]}"#).unwrap();
        assert_eq!(ids(&items), vec![r#"{"id":"a"}"#]);
        // Absent or null: no resources; a total that is not a whole number: unknown.
        for text in [&br#"{"totalResults":"3"}"#[..], br#"{"Resources":null}"#] {
            let (total, items) = split_list(text).unwrap();
            assert!(total.is_none() && items.is_empty());
        }
        // Not an object, or Resources not an array: errors naming what is wrong.
        assert!(split_list(b"[1]").unwrap_err().contains("JSON object"));
        let e = split_list(br#"{"Resources":{"id":"a"}}"#).unwrap_err();
        assert!(e.contains("`Resources` is not an array"), "{e}");
        // Values decode to trees unchanged.
        let (_, items) = split_list(br#"{"Resources":[{"id":"a","n":[1,2]}]}"#).unwrap();
        assert_eq!(
            <Value as Listed>::decode_page(items).unwrap(),
            vec![serde_json::json!({"id": "a", "n": [1, 2]})]
        );
    }

    /// Changes the collection after the n-th page was served.
    type Hook = dyn Fn(u32, &mut Vec<String>) + Send + Sync;

    /// A collection in creation order whose contents a hook may change after each page.
    #[derive(Clone)]
    struct Fake {
        items: Arc<Mutex<Vec<String>>>,
        pages_served: Arc<Mutex<u32>>,
        hook: Arc<Hook>,
        max_count: usize,
    }

    async fn list(State(f): State<Fake>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
        let start: usize = q.get("startIndex").map(|s| s.parse().unwrap()).unwrap_or(1);
        let count: usize = q
            .get("count")
            .map(|s| s.parse().unwrap())
            .unwrap_or(25)
            .min(f.max_count);
        let mut items = f.items.lock().unwrap();
        let total = items.len();
        let page: Vec<Value> = items
            .iter()
            .skip(start.saturating_sub(1))
            .take(count)
            .map(|id| serde_json::json!({"id": id, "userName": format!("{id}@example.com")}))
            .collect();
        let mut n = f.pages_served.lock().unwrap();
        *n += 1;
        (f.hook)(*n, &mut items);
        Json(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": page.len(),
            "Resources": page,
        }))
    }

    async fn serve(
        n: usize,
        max_count: usize,
        hook: impl Fn(u32, &mut Vec<String>) + Send + Sync + 'static,
    ) -> (ScimHttp, Fake) {
        let f = Fake {
            items: Arc::new(Mutex::new((1..=n).map(|i| format!("u{i:05}")).collect())),
            pages_served: Arc::new(Mutex::new(0)),
            hook: Arc::new(hook),
            max_count,
        };
        let app = Router::new()
            .route("/scim/v2/Users", get(list))
            .with_state(f.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        let http = ScimHttp::new(
            HttpSettings {
                base_url: url::Url::parse(&format!("http://{addr}/scim/v2")).unwrap(),
                max_concurrency: 2,
                retry: RetryPolicy::default(),
            },
            build_reqwest(Duration::from_secs(2), Duration::from_secs(5), None).unwrap(),
            Arc::new(StaticAuth::bearer(&Secret::new("t")).unwrap()),
            None,
            single_bucket,
            Arc::new(ClientStats::default()),
        );
        (http, f)
    }

    fn opts(page_size: u32) -> ListOptions {
        ListOptions {
            page_size,
            ..Default::default()
        }
    }

    fn ids(v: &[Value]) -> Vec<String> {
        let mut ids: Vec<String> = v
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn pages_through_everything_when_nothing_changes() {
        let (http, _) = serve(2500, 1000, |_, _| {}).await;
        let mut summary = None;
        let mut got: Vec<Value> = Vec::new();
        summary.replace(
            for_each_page(&http, "/Users", &opts(1000), |p| {
                got.extend(p);
                Ok(())
            })
            .await
            .unwrap(),
        );
        let s = summary.unwrap();
        assert_eq!(got.len(), 2500);
        assert_eq!((s.pages, s.duplicates_dropped, s.passes), (3, 0, 1));
    }

    #[tokio::test]
    async fn a_server_capping_count_below_the_page_size_is_still_read_fully() {
        let (http, fake) = serve(120, 25, |_, _| {}).await;
        let got = list_all(&http, "/Users", &opts(1000)).await.unwrap();
        assert_eq!(got.len(), 120);
        // Pages asked for ahead start where pages of the size served put them: none wasted.
        assert_eq!(*fake.pages_served.lock().unwrap(), 5);
    }

    #[tokio::test]
    async fn insertions_before_the_cursor_produce_duplicates_that_are_dropped() {
        // After each page, two new items appear at the front (an unstable order), shifting
        // everything right: the next page repeats two already-seen items.
        let (http, _) = serve(50, 1000, |n, items| {
            if n <= 3 {
                items.insert(0, format!("new{n}a"));
                items.insert(0, format!("new{n}b"));
            }
        })
        .await;
        let mut got = Vec::new();
        let s = for_each_page(&http, "/Users", &opts(10), |p| {
            got.extend(p);
            Ok(())
        })
        .await
        .unwrap();
        let unique: HashSet<String> = ids(&got).into_iter().collect();
        assert_eq!(unique.len(), got.len(), "no doubles handed out");
        for i in 1..=50 {
            assert!(unique.contains(&format!("u{i:05}")), "u{i:05} lost");
        }
        assert!(s.duplicates_dropped >= 6, "{s:?}");
        assert_eq!(
            http.stats().snapshot().duplicates_dropped,
            s.duplicates_dropped as u64
        );
    }

    #[tokio::test]
    async fn deletions_before_the_cursor_lose_no_remaining_item() {
        // After pages 1 and 2, three already-read items are deleted: later items shift left.
        let (http, f) = serve(40, 1000, |n, items| {
            if n <= 2 {
                items.drain(0..3);
            }
        })
        .await;
        let got = list_all(&http, "/Users", &opts(10)).await.unwrap();
        let remaining = f.items.lock().unwrap().clone();
        let got_ids: HashSet<String> = ids(&got).into_iter().collect();
        for id in &remaining {
            assert!(got_ids.contains(id), "{id} lost");
        }
        assert_eq!(got_ids.len(), got.len());
    }

    #[tokio::test]
    async fn a_change_of_the_total_during_the_read_triggers_a_second_pass() {
        // After page 1, two items before the cursor go and three are appended: the total
        // grows, so the pass is repeated and nothing present at the end is missing.
        let (http, f) = serve(30, 1000, |n, items| {
            if n == 1 {
                items.drain(0..2);
                items.extend(["late1".into(), "late2".into(), "late3".into()]);
            }
        })
        .await;
        let mut got = Vec::new();
        let s = for_each_page(&http, "/Users", &opts(10), |p| {
            got.extend(p);
            Ok(())
        })
        .await
        .unwrap();
        let got_ids: HashSet<String> = ids(&got).into_iter().collect();
        for id in f.items.lock().unwrap().iter() {
            assert!(got_ids.contains(id), "{id} lost; {s:?}");
        }
        assert_eq!(s.passes, 2, "{s:?}");
    }

    #[tokio::test]
    async fn an_unchanged_collection_takes_exactly_ceil_total_over_count_requests() {
        for (n, pages) in [(3000, 3), (2999, 3), (3001, 4), (1000, 1), (0, 1)] {
            let (http, fake) = serve(n, 1000, |_, _| {}).await;
            let s = for_each_page(&http, "/Users", &opts(1000), |_: Vec<Value>| Ok(()))
                .await
                .unwrap();
            assert_eq!((s.pages, s.resources, s.passes), (pages, n, 1), "{n}");
            // What the server saw, pages asked for ahead included.
            assert_eq!(*fake.pages_served.lock().unwrap(), pages, "{n}");
        }
    }

    #[tokio::test]
    async fn an_error_from_the_callback_stops_the_listing() {
        let (http, _) = serve(30, 1000, |_, _| {}).await;
        let e = for_each_page(&http, "/Users", &opts(10), |_: Vec<Value>| {
            Err(IroncladError::Setup("stop".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(e.metric_label(), "setup");
    }
}
