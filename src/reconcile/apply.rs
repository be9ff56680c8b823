//! Apply: carries out a [`Plan`] against Ironclad in fixed phases — groups created; users
//! created, adopted, updated and renamed; group membership; removals last — with bounded
//! concurrency and the client's per-bucket pacing. Every write is recorded twice in the audit
//! (intent before sending, outcome after) in the state store and the JSON-lines audit log.
//!
//! Operation choice: Ironclad paces PUT/POST on /Users at 600 a minute and PATCH/DELETE at 50.
//! An update can go as PUT (the whole user as read, only managed attributes replaced, so
//! nothing unmanaged is lost) or as PATCH (only what changed); a deactivation likewise. The
//! batch is split between the two buckets so that both finish at about the same time, which
//! is when the whole batch finishes soonest.
//!
//! Idempotence: a create answered 409 re-correlates by userName and continues (an account
//! with another externalId is refused; one without is adopted only when the mapping's fallback
//! keys include userName); a create whose answer was lost is looked up before any repeat (in
//! the client), and only an account carrying our externalId counts as that create; re-running
//! after any interruption converges without duplicates because links are recorded as each
//! write lands.
//!
//! What does not live here: deciding what to do (see [`super::plan`]).

use super::attrs;
use super::{AttrChange, GroupAction, Plan, UserAction, UserPlan};
use crate::config::{RateLimits, RemoveMode};
use crate::ironclad::http::{ApiRequest, RawResponse};
use crate::ironclad::{IroncladClient, IroncladError, PatchOp};
use crate::store::{AfterWrite, AuditEntry, Link, Store};
use chrono::Utc;
use futures::future::BoxFuture;
use futures::StreamExt as _;
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Where apply writes its audit lines and what it may do.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Run id for the audit.
    pub run_id: String,
    /// JSON-lines audit log file.
    pub audit_log: PathBuf,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The rate limits the client paces to (used to split PUT/PATCH).
    pub rate_limits: RateLimits,
    /// Consecutive failed runs after which a user is quarantined.
    pub quarantine_after: u32,
    /// Apply held removals too (a reviewed saved plan).
    pub apply_held: bool,
    /// Which requests carry updates and deactivations.
    pub write_method: crate::config::WriteMethod,
    /// Whether the mapping's fallback keys include `userName`: a create answered 409 may then
    /// adopt the existing account when it has no externalId (otherwise it is refused).
    pub adopt_by_user_name: bool,
    /// When the users the plan carries were last read from Ironclad (the start of the listing,
    /// or of a saved plan's check that nothing changed since).
    pub seen_at: std::time::Instant,
    /// A PUT carries the whole user; once the plan's view of the users is this old, each PUT
    /// starts from the user as Ironclad has it now (one GET first), so that an edit made in
    /// Ironclad meanwhile to an attribute the bridge does not manage is not undone.
    pub put_reread_after: std::time::Duration,
}

/// What happened to one planned write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// userName or group displayName.
    pub name: String,
    /// Action.
    pub action: String,
    /// `applied`, `failed`, `refused`.
    pub result: String,
    /// Error or refusal reason.
    pub detail: Option<String>,
}

/// The result of applying a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// One line per attempted write.
    pub outcomes: Vec<Outcome>,
    /// Counts: `applied`, `failed`, `refused`.
    pub counts: BTreeMap<String, usize>,
    /// The method chosen for each user write: `post` (creates), `put`, `patch` (updates and
    /// deactivations) and `delete`; a write refused or stopped before it was sent still counts.
    pub operations: BTreeMap<String, usize>,
}

impl ApplyReport {
    fn push(&mut self, o: Outcome) {
        *self.counts.entry(o.result.clone()).or_default() += 1;
        self.outcomes.push(o);
    }
    /// Writes that failed.
    pub fn failed(&self) -> usize {
        self.counts.get("failed").copied().unwrap_or(0)
    }
    /// Writes refused (stale saved plan, conflicts found at apply time).
    pub fn refused(&self) -> usize {
        self.counts.get("refused").copied().unwrap_or(0)
    }
}

/// The audit trail: state store plus JSON-lines file, written by a thread of its own.
///
/// A line is handed to the writer and the caller waits (without holding a runtime thread)
/// until it is committed, so an intent is recorded before its request is sent and an outcome
/// before the write counts as done. The writer takes every line waiting when it wakes and
/// commits them in one store transaction, then appends them to the file in one write: with
/// many writes in flight, one commit serves several of them (group commit).
pub struct Audit {
    lines: Option<std::sync::mpsc::Sender<Line>>,
    writer: Option<std::thread::JoinHandle<()>>,
    run_id: String,
}

/// One line on its way to the writer.
struct Line {
    entry: AuditEntry,
    then: AfterWrite,
    done: tokio::sync::oneshot::Sender<()>,
}

/// Most lines the writer commits in one transaction.
const AUDIT_BATCH: usize = 256;

impl Audit {
    /// Opens the JSON-lines file for appending (created mode 0600) and starts the writer.
    pub fn open(store: Arc<Store>, path: &std::path::Path, run_id: &str) -> Result<Audit, String> {
        let mut o = std::fs::OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            o.mode(0o600);
        }
        let file = o
            .open(path)
            .map_err(|e| format!("cannot open the audit log {}: {e}", path.display()))?;
        let (lines, rx) = std::sync::mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("ironbridge-audit".into())
            .spawn(move || write_audit(&store, file, &rx))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(Audit {
            lines: Some(lines),
            writer: Some(writer),
            run_id: run_id.to_string(),
        })
    }

    /// Audits a user write that was never sent, and why (a saved plan's line the settings no
    /// longer allow, a user changed since it was read, a run stopping): a `refused` line, with
    /// no intent before it.
    pub async fn refused(&self, u: &UserPlan, action: &str, why: &str) {
        self.nothing_written("refused", u, action, None, None, why)
            .await;
    }

    /// Audits the outcome of a user write that was sent and changed nothing (failed, with the
    /// HTTP status if any, or answered in a way that stops it), and why.
    pub async fn unwritten(
        &self,
        u: &UserPlan,
        action: &str,
        status: Option<u16>,
        request_id: Option<String>,
        why: &str,
    ) {
        self.nothing_written("outcome", u, action, status, request_id, why)
            .await;
    }

    async fn nothing_written(
        &self,
        phase: &str,
        u: &UserPlan,
        action: &str,
        status: Option<u16>,
        request_id: Option<String>,
        why: &str,
    ) {
        self.record(
            phase,
            action,
            &u.user_name,
            u.source_id.as_deref(),
            u.ironclad_id.as_deref(),
            None,
            None,
            status,
            request_id,
            Some(why.to_string()),
            AfterWrite::Nothing,
        )
        .await;
    }

    /// Records one line and, in the same store transaction, what the write changed in the
    /// store (`then`; [`AfterWrite::Nothing`] for an intent or a failure). Returns once both
    /// are committed. Errors are logged, never fatal: the store copy is the primary.
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        phase: &str,
        action: &str,
        name: &str,
        source_id: Option<&str>,
        ironclad_id: Option<&str>,
        before: Option<Value>,
        after: Option<Value>,
        status: Option<u16>,
        request_id: Option<String>,
        error: Option<String>,
        then: AfterWrite,
    ) {
        let entry = AuditEntry {
            seq: 0,
            run_id: self.run_id.clone(),
            time: Utc::now(),
            phase: phase.to_string(),
            action: action.to_string(),
            user_name: name.to_string(),
            source_id: source_id.map(str::to_string),
            ironclad_id: ironclad_id.map(str::to_string),
            before,
            after,
            http_status: status,
            request_id,
            error,
        };
        let (done, committed) = tokio::sync::oneshot::channel();
        let sent = self
            .lines
            .as_ref()
            .is_some_and(|l| l.send(Line { entry, then, done }).is_ok());
        if !sent || committed.await.is_err() {
            tracing::error!("the audit writer has stopped: an audit entry was not recorded");
        }
    }
}

impl Drop for Audit {
    /// Lets the writer finish what it was handed and waits for it.
    fn drop(&mut self) {
        self.lines = None;
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                tracing::error!("the audit writer panicked");
            }
        }
    }
}

/// The audit writer: commits the lines waiting, in batches, until every sender is gone.
fn write_audit(store: &Store, mut file: std::fs::File, rx: &std::sync::mpsc::Receiver<Line>) {
    let mut batch: Vec<Line> = Vec::new();
    let mut text = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < AUDIT_BATCH {
            match rx.try_recv() {
                Ok(l) => batch.push(l),
                Err(_) => break,
            }
        }
        let rows: Vec<(&AuditEntry, &AfterWrite)> =
            batch.iter().map(|l| (&l.entry, &l.then)).collect();
        match store.audit_batch(&rows) {
            Ok(seqs) => {
                // The file's lines carry the store's sequence numbers.
                drop(rows);
                for (l, seq) in batch.iter_mut().zip(seqs) {
                    l.entry.seq = seq;
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot record the audit entries in the state store");
            }
        }
        text.clear();
        for l in &batch {
            if serde_json::to_writer(&mut text, &l.entry).is_ok() {
                text.push(b'\n');
            }
        }
        if let Err(err) = file.write_all(&text) {
            tracing::error!(error = %err, "cannot append to the audit log");
        }
        for l in batch.drain(..) {
            let _ = l.done.send(());
        }
    }
}

/// Managed-attribute view of changes for the audit: (before, after) objects keyed by path.
fn change_maps(changes: &[AttrChange]) -> (Value, Value) {
    let mut b = serde_json::Map::new();
    let mut a = serde_json::Map::new();
    for c in changes {
        b.insert(c.path.clone(), c.before.clone());
        a.insert(c.path.clone(), c.after.clone());
    }
    (Value::Object(b), Value::Object(a))
}

fn user_path(id: &str) -> String {
    format!("/Users/{}", crate::ironclad::http::segment(id))
}

fn group_path(id: &str) -> String {
    format!("/Groups/{}", crate::ironclad::http::segment(id))
}

fn patch_body(ops: &[PatchOp]) -> Value {
    crate::ironclad::types::patch_body(ops)
}

/// A PATCH operation for one attribute change (`remove` when the new value is empty).
fn patch_op(c: &AttrChange) -> PatchOp {
    if attrs::is_empty(&c.after) {
        PatchOp::remove(&c.path)
    } else {
        PatchOp::replace(&c.path, c.after.clone())
    }
}

/// Why a PUT planned from the listed user must not start from `fresh`, the user as re-read:
/// Ironclad's `meta.lastModified` moved since the listing (the plan compared another state of
/// the user), or its externalId now names another owner.
fn changed_since(u: &UserPlan, fresh: &Value) -> Option<String> {
    let now = fresh
        .get("meta")
        .and_then(|m| m.get("lastModified"))
        .and_then(Value::as_str);
    if let (Some(then), Some(now)) = (u.seen_version.as_deref(), now) {
        if then != now {
            return Some(format!(
                "changed in Ironclad since it was listed (lastModified {then} → {now}); the next run plans it again"
            ));
        }
    }
    other_owner(u, fresh).then(|| {
        "its externalId changed in Ironclad since it was listed; the next run plans it again"
            .to_string()
    })
}

/// Whether the re-read user carries an externalId other than the one it was listed with
/// (when it had one) and other than this line's source id.
fn other_owner(u: &UserPlan, fresh: &Value) -> bool {
    let ext = |v: &Value| {
        v.get("externalId")
            .and_then(Value::as_str)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
    };
    let Some(now) = ext(fresh) else {
        return false;
    };
    let then = u.seen.as_ref().and_then(ext);
    then.as_deref() != Some(now.as_str()) && u.source_id.as_deref() != Some(now.as_str())
}

/// The PUT body: the user as read, `meta` dropped, the changes applied.
fn put_body(seen: &Value, changes: &[AttrChange]) -> Value {
    let mut body = seen.clone();
    if let Some(o) = body.as_object_mut() {
        o.remove("meta");
    }
    for c in changes {
        attrs::set(&mut body, &c.path, c.after.clone());
    }
    // Extension objects left empty would be sent as `{}`; drop them.
    if let Some(o) = body.as_object_mut() {
        o.retain(|_, v| !matches!(v, Value::Object(m) if m.is_empty()));
    }
    body
}

/// How many of `flexible` operations to send as PUT so both buckets finish together.
/// `fixed_rw` already use the PUT/POST bucket (creates), `fixed_pd` the PATCH/DELETE bucket
/// (deletes).
pub fn put_share(flexible: usize, fixed_rw: usize, fixed_pd: usize, limits: &RateLimits) -> usize {
    let r1 = f64::from(limits.users_read_write.max(1));
    let r2 = f64::from(limits.users_patch_delete.max(1));
    let f = flexible as f64;
    let x = (r1 * (fixed_pd as f64 + f) - r2 * fixed_rw as f64) / (r1 + r2);
    x.ceil().clamp(0.0, f) as usize
}

/// The limits [`put_share`] splits a phase by: once PUTs re-read their user first (see
/// `ApplyOptions::put_reread_after`), each PUT costs two requests of the PUT/POST bucket.
fn split_limits(opts: &ApplyOptions) -> RateLimits {
    let mut l = opts.rate_limits;
    if opts.rereads_before_put() {
        l.users_read_write = (l.users_read_write / 2).max(1);
    }
    l
}

/// Write jobs a lane runs at once for each request it may have in flight (see [`two_lanes`]).
const JOBS_PER_REQUEST: usize = 2;

/// Runs write jobs in two lanes, one per rate-limit bucket, so that waiting for the slow
/// PATCH/DELETE bucket never holds up the PUT/POST lane (and the reverse): `slow` tells which
/// jobs go through PATCH/DELETE. The lanes share `conc` requests in flight (the slow lane gets
/// a quarter, at least one); with `conc` 1 the jobs run one at a time in their order.
///
/// Each lane runs [`JOBS_PER_REQUEST`] times as many jobs as it has requests in flight: a job
/// also waits for its audit lines to be committed, before and after its request, and meanwhile
/// another job's request can use the slot. The client's own limit (`max_concurrency`) still
/// bounds the requests actually in flight.
fn two_lanes<'a, J, F, Fut>(
    jobs: Vec<J>,
    slow: impl Fn(&J) -> bool,
    conc: usize,
    run: &'a F,
) -> futures::stream::LocalBoxStream<'a, Fut::Output>
where
    J: 'a,
    F: Fn(J) -> Fut,
    Fut: std::future::Future + 'a,
{
    if conc < 2 {
        return futures::stream::iter(jobs)
            .map(run)
            .buffered(1)
            .boxed_local();
    }
    let slow_conc = (conc / 4).max(1);
    let (slow_jobs, fast_jobs): (Vec<J>, Vec<J>) = jobs.into_iter().partition(|j| slow(j));
    let fast = futures::stream::iter(fast_jobs)
        .map(run)
        .buffer_unordered((conc - slow_conc) * JOBS_PER_REQUEST);
    let slow = futures::stream::iter(slow_jobs)
        .map(run)
        .buffer_unordered(slow_conc * JOBS_PER_REQUEST);
    futures::stream::select(fast, slow).boxed_local()
}

/// Pins a user-write closure's argument to one lifetime (closures are otherwise generic over
/// it, which their futures cannot be).
fn user_job<'p, F, Fut>(f: F) -> F
where
    F: Fn((&'p UserPlan, Option<Via>)) -> Fut,
{
    f
}

/// [`user_job`] for removals.
fn removal_job<'p, F, Fut>(f: F) -> F
where
    F: Fn((&'p UserPlan, RemoveMode, Via)) -> Fut,
{
    f
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Put,
    Patch,
}

/// The request a removal goes as, from the mapping's mode and the bucket it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemovalBy {
    Delete,
    /// `active: false` in the whole user.
    Put,
    /// `active: false` alone.
    Patch,
}

impl RemovalBy {
    fn of(how: RemoveMode, via: Via) -> Self {
        match (how, via) {
            (RemoveMode::Deactivate | RemoveMode::DeleteOrDeactivate, Via::Put) => RemovalBy::Put,
            (RemoveMode::Deactivate, Via::Patch) => RemovalBy::Patch,
            (RemoveMode::Delete | RemoveMode::Keep, _)
            | (RemoveMode::DeleteOrDeactivate, Via::Patch) => RemovalBy::Delete,
        }
    }

    /// The method's name in [`ApplyReport::operations`].
    fn method(self) -> &'static str {
        match self {
            RemovalBy::Delete => "delete",
            RemovalBy::Put => "put",
            RemovalBy::Patch => "patch",
        }
    }
}

impl ApplyOptions {
    /// Whether the plan's view of the users is old enough for each PUT to re-read its user
    /// first (see [`ApplyOptions::put_reread_after`]).
    fn rereads_before_put(&self) -> bool {
        self.seen_at.elapsed() >= self.put_reread_after
    }
}

struct Ctx<'a> {
    client: &'a IroncladClient,
    store: &'a Store,
    audit: &'a Audit,
    opts: &'a ApplyOptions,
    stop: Option<&'a std::sync::atomic::AtomicBool>,
}

/// What the audit keeps of a 2xx answer to a write.
#[derive(Clone, Copy)]
struct Answered<'a> {
    status: u16,
    request_id: &'a str,
    /// The answer was lost and the resource found by lookup instead (a create): no status is
    /// claimed for it, and the audit says so.
    recovered: bool,
}

impl Ctx<'_> {
    /// Whether a stop was requested: user writes not yet sent are then refused (and picked up
    /// by the next run); writes already sent finish.
    fn stopping(&self) -> bool {
        self.stop
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// The error as the report and audit show it. With no answer at all (timeouts, a dropped
    /// connection), the write may have been applied: it says so, and the next run's plan tells.
    fn err_text(e: &IroncladError) -> String {
        if e.outcome_unknown() {
            format!("outcome unknown, it may have been applied (the next run will see): {e}")
        } else {
            e.to_string()
        }
    }

    /// Sends an update or a removal. Only the answer's status and request id are kept (the
    /// audit's outcome): its body, the user as written, is not decoded.
    async fn send(&self, req: ApiRequest) -> Result<RawResponse, IroncladError> {
        self.client.http().send_raw(&req).await
    }

    async fn fail(&self, u: &UserPlan, action: &str, e: &IroncladError) -> Outcome {
        if matches!(e, IroncladError::Stopped) {
            // Its intent is recorded; this is its outcome. Not a failure of the user.
            return self
                .refuse_answered(u, action, None, STOPPED.to_string())
                .await;
        }
        let text = Self::err_text(e);
        self.audit
            .unwritten(
                u,
                action,
                e.status(),
                e.request_id().map(str::to_string),
                &text,
            )
            .await;
        if let Some(src) = &u.source_id {
            let after = self.opts.quarantine_after;
            let backoff = move |n: u32| {
                if n >= after {
                    chrono::Duration::minutes(15 * 2i64.pow((n - after).min(6)))
                } else {
                    chrono::Duration::zero()
                }
            };
            if let Err(err) = self.store.record_failure(src, &text, Utc::now(), backoff) {
                tracing::error!(error = %err, "cannot record the failure");
            }
        }
        Outcome {
            name: u.user_name.clone(),
            action: action.into(),
            result: "failed".into(),
            detail: Some(text),
        }
    }

    async fn success(
        &self,
        u: &UserPlan,
        action: &str,
        id: &str,
        user_name: &str,
        resp: Option<Answered<'_>>,
    ) -> Outcome {
        let link = u.source_id.as_ref().map(|src| Link {
            source_id: src.to_string(),
            ironclad_id: id.to_string(),
            user_name: user_name.into(),
            kind: "user".into(),
        });
        self.audit
            .record(
                "outcome",
                action,
                user_name,
                u.source_id.as_deref(),
                Some(id),
                None,
                resp.filter(|r| r.recovered).map(|_| {
                    json!({"note": "the answer was lost; the user was found by lookup (userName and externalId)"})
                }),
                resp.filter(|r| !r.recovered).map(|r| r.status),
                resp.map(|r| r.request_id.to_string()),
                None,
                link.map_or(AfterWrite::Nothing, AfterWrite::Linked),
            )
            .await;
        Outcome {
            name: user_name.to_string(),
            action: action.into(),
            result: "applied".into(),
            detail: None,
        }
    }

    async fn create(&self, u: &UserPlan, user: &Value) -> Outcome {
        if self.stopping() {
            return self.refuse(u, "create", STOPPED.into()).await;
        }
        let user_name = u.user_name.clone();
        let user = &resolve_manager_hint(user, self.store);
        self.audit
            .record(
                "intent",
                "create",
                &user_name,
                u.source_id.as_deref(),
                None,
                None,
                Some(user.clone()),
                None,
                None,
                None,
                AfterWrite::Nothing,
            )
            .await;
        let req = ApiRequest::with_body(Method::POST, "/Users", user.clone());
        let client = self.client;
        let un = user_name.clone();
        let ours = u.source_id.clone().unwrap_or_default();
        // After an unknown outcome: the user exists only if the POST was applied, which leaves
        // our externalId on it. An account with that userName but another externalId (or
        // none) was there before; sending again then gets 409, handled below.
        let lookup = move || -> BoxFuture<'_, Result<Option<Value>, IroncladError>> {
            let un = un.clone();
            let ours = ours.clone();
            Box::pin(async move {
                Ok(client
                    .find_user_by_user_name(&un)
                    .await?
                    .filter(|u| !ours.is_empty() && u.external_id() == Some(&*ours))
                    .map(|u| u.into_value()))
            })
        };
        match self.client.http().send_create(&req, &lookup).await {
            Ok(resp) => {
                let id = resp
                    .body
                    .as_ref()
                    .and_then(|b| b.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let answered = Answered {
                    status: resp.status,
                    request_id: &resp.request_id,
                    recovered: resp.recovered,
                };
                self.success(u, "create", id, &user_name, Some(answered))
                    .await
            }
            Err(e) if e.status() == Some(409) => {
                // Someone (or an earlier interrupted run) created it: re-correlate and continue.
                match self.client.find_user_by_user_name(&user_name).await {
                    Ok(Some(found)) => {
                        let ext = found.external_id().unwrap_or_default().to_string();
                        let ours = u.source_id.as_deref().unwrap_or_default();
                        if !ext.is_empty() && ext != ours {
                            let err = format!("409: {user_name} exists with externalId {ext}, not ours; not adopted");
                            return self.refuse_answered(u, "create", Some(409), err).await;
                        }
                        if ext.is_empty() && !self.opts.adopt_by_user_name {
                            let err = format!(
                                "409: {user_name} exists without an externalId and the mapping's fallback keys \
                                 do not include userName; not adopted"
                            );
                            return self.refuse_answered(u, "create", Some(409), err).await;
                        }
                        let id = found.id().unwrap_or_default().to_string();
                        let seen = found.into_value();
                        let changes: Vec<AttrChange> = managed_changes(user, &seen);
                        let mut line = u.clone();
                        line.ironclad_id = Some(id.clone());
                        if changes.is_empty() {
                            return self.success(&line, "create", &id, &user_name, None).await;
                        }
                        self.update(&line, "create", &seen, &changes, Via::Put)
                            .await
                    }
                    Ok(None) => self.fail(u, "create", &e).await,
                    Err(e2) => self.fail(u, "create", &e2).await,
                }
            }
            Err(e) => self.fail(u, "create", &e).await,
        }
    }

    /// The user a PUT for `u` starts from: as the plan saw it or, once that view is older than
    /// `put_reread_after`, as Ironclad has it now (a GET, from the same bucket as the PUT).
    /// `Ok(None)`: the user no longer exists.
    async fn put_base<'u>(
        &self,
        u: &'u UserPlan,
    ) -> Result<Option<std::borrow::Cow<'u, Value>>, IroncladError> {
        let seen = seen_of(u);
        let stale = self.opts.rereads_before_put();
        let Some(id) = u.ironclad_id.as_deref().filter(|_| stale) else {
            return Ok(Some(std::borrow::Cow::Borrowed(seen)));
        };
        Ok(self
            .client
            .get_user(id)
            .await?
            .map(|cur| std::borrow::Cow::Owned(cur.into_value())))
    }

    /// An update, rename or adoption as PUT, from [`Ctx::put_base`].
    async fn update_by_put(&self, u: &UserPlan, action: &str, changes: &[AttrChange]) -> Outcome {
        if self.stopping() {
            return self.refuse(u, action, STOPPED.into()).await;
        }
        match self.put_base(u).await {
            Ok(Some(base)) => match changed_since(u, &base) {
                // What was planned compared another state of this user (an `if_empty`
                // value filled in since, another externalId): the next run plans it afresh.
                Some(why) => self.refuse(u, action, why).await,
                None => self.update(u, action, &base, changes, Via::Put).await,
            },
            Ok(None) => {
                self.refuse(
                    u,
                    action,
                    "the Ironclad user no longer exists (re-read before the PUT)".into(),
                )
                .await
            }
            Err(e) => self.fail(u, action, &e).await,
        }
    }

    /// A write not sent: audited as `refused`.
    async fn refuse(&self, u: &UserPlan, action: &str, why: String) -> Outcome {
        self.audit.refused(u, action, &why).await;
        Self::refused(u, action, why)
    }

    /// A write whose intent was recorded, then not pursued (answered with `status`, or never
    /// sent because the process is stopping): its intent's outcome.
    async fn refuse_answered(
        &self,
        u: &UserPlan,
        action: &str,
        status: Option<u16>,
        why: String,
    ) -> Outcome {
        self.audit.unwritten(u, action, status, None, &why).await;
        Self::refused(u, action, why)
    }

    fn refused(u: &UserPlan, action: &str, why: String) -> Outcome {
        Outcome {
            name: u.user_name.clone(),
            action: action.into(),
            result: "refused".into(),
            detail: Some(why),
        }
    }

    async fn update(
        &self,
        u: &UserPlan,
        action: &str,
        seen: &Value,
        changes: &[AttrChange],
        via: Via,
    ) -> Outcome {
        if self.stopping() {
            if action == "create" {
                // Reached after the POST was answered 409 and the user found: that intent's outcome.
                return self
                    .refuse_answered(u, action, Some(409), STOPPED.into())
                    .await;
            }
            return self.refuse(u, action, STOPPED.into()).await;
        }
        let Some(id) = u.ironclad_id.clone() else {
            return self
                .refuse(u, action, "no Ironclad id to update".into())
                .await;
        };
        let (before, after) = change_maps(changes);
        self.audit
            .record(
                "intent",
                action,
                &u.user_name,
                u.source_id.as_deref(),
                Some(&id),
                Some(before),
                Some(after),
                None,
                None,
                None,
                AfterWrite::Nothing,
            )
            .await;
        let req = match via {
            Via::Put => ApiRequest::with_body(Method::PUT, user_path(&id), put_body(seen, changes)),
            Via::Patch => {
                let ops: Vec<PatchOp> = changes.iter().map(patch_op).collect();
                ApiRequest::with_body(Method::PATCH, user_path(&id), patch_body(&ops))
            }
        };
        let new_name = changes
            .iter()
            .find(|c| c.path == "userName")
            .and_then(|c| c.after.as_str())
            .unwrap_or(&u.user_name)
            .to_string();
        match self.send(req).await {
            Ok(resp) => {
                let answered = Answered {
                    status: resp.status,
                    request_id: &resp.request_id,
                    recovered: false,
                };
                self.success(u, action, &id, &new_name, Some(answered))
                    .await
            }
            Err(e) => self.fail(u, action, &e).await,
        }
    }

    async fn remove(&self, u: &UserPlan, how: RemoveMode, via: Via) -> Outcome {
        if self.stopping() {
            return self.refuse(u, "remove", STOPPED.into()).await;
        }
        let Some(id) = u.ironclad_id.clone() else {
            return self.refuse(u, "remove", "no Ironclad id".into()).await;
        };
        let by = RemovalBy::of(how, via);
        // A deactivation by PUT carries the whole user: from a recent enough view of it.
        let base = if by == RemovalBy::Put {
            match self.put_base(u).await {
                // Someone else's account by now: not ours to remove.
                Ok(Some(b)) if other_owner(u, &b) => {
                    let why = "its externalId changed in Ironclad since it was listed; left alone";
                    return self.refuse(u, "remove", why.into()).await;
                }
                Ok(Some(b)) => Some(b.into_owned()),
                Ok(None) => {
                    let note = "already gone when re-read before the PUT";
                    return self.removed(u, &id, None, Some(note)).await;
                }
                Err(e) => return self.fail(u, "remove", &e).await,
            }
        } else {
            None
        };
        if self.stopping() {
            return self.refuse(u, "remove", STOPPED.into()).await;
        }
        let req = match by {
            RemovalBy::Delete => ApiRequest::delete(user_path(&id)),
            RemovalBy::Put => {
                let mut body = base.unwrap_or_else(|| json!({}));
                if let Some(o) = body.as_object_mut() {
                    o.remove("meta");
                    o.insert("active".into(), Value::Bool(false));
                }
                ApiRequest::with_body(Method::PUT, user_path(&id), body)
            }
            RemovalBy::Patch => ApiRequest::with_body(
                Method::PATCH,
                user_path(&id),
                patch_body(&[PatchOp::replace("active", Value::Bool(false))]),
            ),
        };
        self.audit
            .record(
                "intent",
                "remove",
                &u.user_name,
                u.source_id.as_deref(),
                Some(&id),
                // The user as the plan saw it, so the audit tells who was removed.
                u.seen.as_ref().map(|seen| {
                    let mut v = seen.clone();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("meta");
                        o.remove("schemas");
                    }
                    v
                }),
                Some(json!({"how": how, "request": req.method.as_str()})),
                None,
                None,
                None,
                AfterWrite::Nothing,
            )
            .await;
        let result = match self.send(req).await {
            Ok(resp) => Ok(Some(resp)),
            // Already gone: the goal is reached.
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        };
        match result {
            Ok(resp) => self.removed(u, &id, resp, None).await,
            Err(e) => self.fail(u, "remove", &e).await,
        }
    }

    /// A removal reached its goal: the answer to the request, or `None` when the user was
    /// already gone (404, or not found when re-read: `note` says so).
    async fn removed(
        &self,
        u: &UserPlan,
        id: &str,
        resp: Option<RawResponse>,
        note: Option<&str>,
    ) -> Outcome {
        self.audit
            .record(
                "outcome",
                "remove",
                &u.user_name,
                u.source_id.as_deref(),
                Some(id),
                None,
                note.map(|n| json!({ "note": n })),
                resp.as_ref().map(|r| r.status).or(Some(404)),
                resp.map(|r| r.request_id),
                None,
                u.source_id
                    .as_deref()
                    .map_or(AfterWrite::Nothing, |s| AfterWrite::Unlinked(s.to_string())),
            )
            .await;
        Outcome {
            name: u.user_name.clone(),
            action: "remove".into(),
            result: "applied".into(),
            detail: None,
        }
    }
}

/// Replaces the manager hint of a joiner by `manager.value` when the manager is linked by now
/// (created earlier in this run or before); drops it otherwise.
fn resolve_manager_hint(user: &Value, store: &Store) -> Value {
    let mut user = user.clone();
    let hint = user
        .as_object_mut()
        .and_then(|o| o.remove(super::engine::MANAGER_HINT));
    if let Some(Value::String(m)) = hint {
        if let Ok(Some(manager_id)) = store.linked_id("user", &m) {
            let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
            if let Some(o) = user.as_object_mut() {
                let e = o
                    .entry(ent)
                    .or_insert_with(|| Value::Object(Default::default()));
                e["manager"] = json!({ "value": manager_id });
            }
        }
    }
    user
}

/// Creates ordered in waves: people whose manager is also being created come after them.
fn create_waves(plan: &Plan) -> Vec<Vec<&UserPlan>> {
    let creates: Vec<&UserPlan> = plan
        .users
        .iter()
        .filter(|u| matches!(u.action, UserAction::Create { .. }))
        .collect();
    let key_of = |u: &UserPlan| u.source_id.as_deref().unwrap_or_default().to_string();
    let manager_of = |u: &UserPlan| -> Option<String> {
        match &u.action {
            UserAction::Create { user } => user
                .get(super::engine::MANAGER_HINT)
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        }
    };
    let by_key: HashMap<String, &UserPlan> = creates.iter().map(|u| (key_of(u), *u)).collect();
    let mut waves: Vec<Vec<&UserPlan>> = Vec::new();
    for u in &creates {
        // Depth along the manager chain among joiners; a cycle stops at the bound.
        let mut depth = 0usize;
        let mut cur = manager_of(u);
        while let Some(m) = cur.filter(|m| by_key.contains_key(m)) {
            depth += 1;
            if depth > 16 {
                break;
            }
            cur = by_key.get(&m).and_then(|c| manager_of(c));
        }
        if waves.len() <= depth {
            waves.resize_with(depth + 1, Vec::new);
        }
        if let Some(w) = waves.get_mut(depth) {
            w.push(*u);
        }
    }
    waves
}

/// Changes that bring `current` to the managed values in `desired` (used after a 409).
fn managed_changes(desired: &Value, current: &Value) -> Vec<AttrChange> {
    let mut paths = Vec::new();
    collect_paths("", desired, &mut paths);
    paths
        .into_iter()
        .filter(|p| p != "schemas")
        .filter_map(|p| {
            let want = attrs::get(desired, &p);
            let have = attrs::get(current, &p);
            (!attrs::same(&p, &want, &have)).then_some(AttrChange {
                path: p,
                before: have,
                after: want,
            })
        })
        .collect()
}

fn collect_paths(prefix: &str, v: &Value, out: &mut Vec<String>) {
    let Some(map) = v.as_object() else { return };
    for (k, val) in map {
        if k == "schemas" {
            continue;
        }
        let path = if prefix.is_empty() {
            k.clone()
        } else if prefix.starts_with("urn:") {
            format!("{prefix}:{k}")
        } else {
            format!("{prefix}.{k}")
        };
        match val {
            Value::Object(_) if k.starts_with("urn:") || k == "name" => {
                collect_paths(&path, val, out)
            }
            _ => out.push(path),
        }
    }
}

/// Applies a plan. Returns what happened to each write. One failing user never stops the run.
pub async fn apply(
    plan: &Plan,
    client: &IroncladClient,
    store: &Store,
    audit: &Audit,
    opts: &ApplyOptions,
) -> ApplyReport {
    apply_until(plan, client, store, audit, opts, None).await
}

/// Why a write was not sent during a stop.
const STOPPED: &str = "not sent: the process is stopping; the next run applies it";

/// [`apply`], stopping early when `stop` turns true: user writes not yet sent are refused
/// (and recorded as such), the ones in flight finish, so a shutdown never cuts a write.
pub async fn apply_until(
    plan: &Plan,
    client: &IroncladClient,
    store: &Store,
    audit: &Audit,
    opts: &ApplyOptions,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> ApplyReport {
    let work = apply_phases(plan, client, store, audit, opts, stop);
    let Some(flag) = stop else {
        return work.await;
    };
    // Once the stop is set, writes still waiting for their bucket or a connection slot are
    // given up too, not only the ones not yet begun.
    let watch = async {
        super::when_set(flag).await;
        client.stop_writes();
        std::future::pending::<()>().await;
    };
    tokio::select! {
        report = work => report,
        () = watch => unreachable!("the watch never ends"),
    }
}

async fn apply_phases(
    plan: &Plan,
    client: &IroncladClient,
    store: &Store,
    audit: &Audit,
    opts: &ApplyOptions,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> ApplyReport {
    let ctx = Ctx {
        client,
        store,
        audit,
        opts,
        stop,
    };
    let mut report = ApplyReport::default();
    let conc = opts.concurrency.max(1);
    let progress = super::progress::current();
    let ok = |o: &Outcome| o.result == "applied";
    let tick = |phase: &str, report: &ApplyReport| {
        progress.write_done(phase, report.outcomes.last().is_some_and(ok));
    };

    settle_creates(plan, audit).await;
    heal_links(plan, store);

    // Phase 1: groups created (membership comes in phase 3).
    let mut group_ids: HashMap<String, String> = HashMap::new();
    let group_creates: Vec<(&super::GroupPlan, &String)> = plan
        .groups
        .iter()
        .filter(|g| g.action == GroupAction::Create)
        .filter_map(|g| Some((g, g.source_id.as_ref()?)))
        .collect();
    if !group_creates.is_empty() {
        progress.phase_start("groups", group_creates.len());
    }
    for (g, src) in group_creates.iter().copied() {
        let body = json!({
            "schemas": [crate::ironclad::types::GROUP_SCHEMA],
            "displayName": g.display_name,
            "externalId": src,
        });
        audit
            .record(
                "intent",
                "group_create",
                &g.display_name,
                Some(src),
                None,
                None,
                Some(body.clone()),
                None,
                None,
                None,
                AfterWrite::Nothing,
            )
            .await;
        match client
            .create_group_answered(&crate::ironclad::ScimGroup(body))
            .await
        {
            Ok((created, status, request_id)) => {
                let id = created.id().unwrap_or_default().to_string();
                let link = Link {
                    source_id: src.clone(),
                    ironclad_id: id.clone(),
                    user_name: g.display_name.clone(),
                    kind: "group".into(),
                };
                audit
                    .record(
                        "outcome",
                        "group_create",
                        &g.display_name,
                        Some(src),
                        Some(&id),
                        None,
                        None,
                        Some(status),
                        Some(request_id),
                        None,
                        AfterWrite::Linked(link),
                    )
                    .await;
                group_ids.insert(src.clone(), id);
                report.push(Outcome {
                    name: g.display_name.clone(),
                    action: "group_create".into(),
                    result: "applied".into(),
                    detail: None,
                });
            }
            Err(e) => {
                group_failed(
                    audit,
                    &mut report,
                    "group_create",
                    &g.display_name,
                    Some(src),
                    None,
                    &e,
                )
                .await
            }
        }
        tick("groups", &report);
    }
    if !group_creates.is_empty() {
        progress.phase_end("groups");
    }

    // Phase 2: users. Split updates between PUT and PATCH so both buckets finish together.
    let creates = plan
        .users
        .iter()
        .filter(|u| matches!(u.action, UserAction::Create { .. }))
        .count();
    let mut flexible: Vec<&UserPlan> = plan
        .users
        .iter()
        .filter(|u| {
            matches!(
                u.action,
                UserAction::Update { .. } | UserAction::Adopt { .. } | UserAction::Rename { .. }
            )
        })
        .collect();
    // The split is computed per phase: removals run only after every update has been
    // sent, so each phase balances its own PUT and PATCH/DELETE traffic.
    let balanced = opts.write_method == crate::config::WriteMethod::Balanced;
    let puts = if balanced {
        put_share(flexible.len(), creates, 0, &split_limits(opts))
    } else {
        0
    };
    // Users with the most changes go by PUT (one request either way; PATCH bodies grow).
    flexible.sort_by_key(|u| std::cmp::Reverse(changes_of(u).len()));
    let mut put_left = puts;
    let mut ops_count: BTreeMap<String, usize> = BTreeMap::new();
    let user_writes = creates + flexible.len();
    if user_writes > 0 {
        progress.phase_start("users", user_writes);
    }
    for wave in create_waves(plan) {
        *ops_count.entry("post".into()).or_default() += wave.len();
        let outcomes: Vec<Outcome> = futures::stream::iter(wave)
            .map(|u| {
                let ctx = &ctx;
                async move {
                    match &u.action {
                        UserAction::Create { user } => ctx.create(u, user).await,
                        _ => ctx.refuse(u, u.action.name(), "not a create".into()).await,
                    }
                }
            })
            .buffer_unordered(conc)
            .inspect(|o| progress.write_done("users", ok(o)))
            .collect()
            .await;
        for o in outcomes {
            report.push(o);
        }
    }
    let mut jobs: Vec<(&UserPlan, Option<Via>)> = Vec::new();
    for u in flexible {
        let via = if put_left > 0 && u.seen.is_some() {
            put_left -= 1;
            Via::Put
        } else {
            Via::Patch
        };
        jobs.push((u, Some(via)));
    }
    for (_, via) in &jobs {
        match via {
            Some(Via::Put) => *ops_count.entry("put".into()).or_default() += 1,
            Some(Via::Patch) => *ops_count.entry("patch".into()).or_default() += 1,
            None => *ops_count.entry("post".into()).or_default() += 1,
        }
    }
    let run_user = user_job(|(u, via)| {
        let ctx = &ctx;
        async move {
            match (&u.action, via) {
                (UserAction::Create { user }, _) => ctx.create(u, user).await,
                (UserAction::Update { changes }, Some(Via::Put)) => {
                    ctx.update_by_put(u, "update", changes).await
                }
                (UserAction::Adopt { changes, .. }, Some(Via::Put)) => {
                    ctx.update_by_put(u, "adopt", changes).await
                }
                (UserAction::Rename { changes, .. }, Some(Via::Put)) => {
                    ctx.update_by_put(u, "rename", changes).await
                }
                (UserAction::Update { changes }, Some(v)) => {
                    ctx.update(u, "update", seen_of(u), changes, v).await
                }
                (UserAction::Adopt { changes, .. }, Some(v)) => {
                    ctx.update(u, "adopt", seen_of(u), changes, v).await
                }
                (UserAction::Rename { changes, .. }, Some(v)) => {
                    ctx.update(u, "rename", seen_of(u), changes, v).await
                }
                _ => {
                    ctx.refuse(u, u.action.name(), "not a user write".into())
                        .await
                }
            }
        }
    });
    let outcomes: Vec<Outcome> = two_lanes(
        jobs,
        |(_, via)| matches!(via, Some(Via::Patch)),
        conc,
        &run_user,
    )
    .inspect(|o| progress.write_done("users", ok(o)))
    .collect()
    .await;
    for o in outcomes {
        report.push(o);
    }
    if user_writes > 0 {
        progress.phase_end("users");
    }

    // Phase 3: group membership (and renames), resolving source ids through the links (read
    // only when there is membership to write).
    let membership: Vec<(&super::GroupPlan, String)> = plan
        .groups
        .iter()
        .filter(|g| {
            matches!(
                g.action,
                GroupAction::Create | GroupAction::Rename { .. } | GroupAction::Members
            ) && (matches!(g.action, GroupAction::Rename { .. })
                || !g.add.is_empty()
                || !g.remove.is_empty())
        })
        .filter_map(|g| {
            let id = match (&g.ironclad_id, &g.source_id) {
                (Some(id), _) => id.clone(),
                (None, Some(src)) => group_ids.get(src)?.clone(),
                _ => return None,
            };
            Some((g, id))
        })
        .collect();
    let membership_total = membership.len();
    if membership_total > 0 {
        progress.phase_start("membership", membership_total);
    }
    let links = match membership_total {
        0 => Default::default(),
        _ => store.link_ids("user").unwrap_or_default(),
    };
    for (g, id) in membership {
        let add: Vec<&str> = g
            .add
            .iter()
            .filter_map(|s| links.get(s).map(String::as_str))
            .collect();
        let remove: Vec<&str> = g.remove.iter().map(String::as_str).collect();
        let mut ops = Vec::new();
        if let GroupAction::Rename { .. } = g.action {
            ops.push(PatchOp::replace(
                "displayName",
                Value::String(g.display_name.clone()),
            ));
        }
        if !add.is_empty() {
            ops.push(PatchOp::add_members(add.iter().copied()));
        }
        if !remove.is_empty() {
            ops.push(PatchOp::remove_members(remove.iter().copied()));
        }
        if ops.is_empty() {
            // Every member to add is unlinked (its create failed): nothing to send.
            progress.write_done("membership", true);
            continue;
        }
        let after = json!({"add": add, "remove": remove});
        audit
            .record(
                "intent",
                "group_members",
                &g.display_name,
                g.source_id.as_deref(),
                Some(&id),
                None,
                Some(after),
                None,
                None,
                None,
                AfterWrite::Nothing,
            )
            .await;
        let req = ApiRequest::with_body(Method::PATCH, group_path(&id), patch_body(&ops));
        match client.http().send(&req).await {
            Ok(resp) => {
                let link = g.source_id.as_ref().map(|src| Link {
                    source_id: src.clone(),
                    ironclad_id: id.clone(),
                    user_name: g.display_name.clone(),
                    kind: "group".into(),
                });
                audit
                    .record(
                        "outcome",
                        "group_members",
                        &g.display_name,
                        g.source_id.as_deref(),
                        Some(&id),
                        None,
                        None,
                        Some(resp.status),
                        Some(resp.request_id),
                        None,
                        link.map_or(AfterWrite::Nothing, AfterWrite::Linked),
                    )
                    .await;
                report.push(Outcome {
                    name: g.display_name.clone(),
                    action: "group_members".into(),
                    result: "applied".into(),
                    detail: None,
                });
            }
            Err(e) => {
                group_failed(
                    audit,
                    &mut report,
                    "group_members",
                    &g.display_name,
                    g.source_id.as_deref(),
                    Some(&id),
                    &e,
                )
                .await
            }
        }
        tick("membership", &report);
    }
    if membership_total > 0 {
        progress.phase_end("membership");
    }

    // Phase 4: removals, last (the safety rules already ran in the planner).
    let removal_lines: Vec<(&UserPlan, RemoveMode)> = plan
        .users
        .iter()
        .filter_map(|u| {
            let a = match (&u.action, u.held_action.as_deref()) {
                (UserAction::Remove { how, .. }, _) => Some(*how),
                (_, Some(UserAction::Remove { how, .. })) if opts.apply_held => Some(*how),
                _ => None,
            };
            a.map(|how| (u, how))
        })
        .collect();
    // Removals that may go through either bucket: deactivations (PUT or PATCH) and, where the
    // mapping allows both, DELETE or PUT `active: false`. A PUT needs the user as read.
    let flexible = |u: &UserPlan, how: RemoveMode| {
        matches!(how, RemoveMode::Deactivate | RemoveMode::DeleteOrDeactivate) && u.seen.is_some()
    };
    let n_flexible = removal_lines
        .iter()
        .filter(|(u, how)| flexible(u, *how))
        .count();
    let mut removal_put = if balanced {
        put_share(
            n_flexible,
            0,
            removal_lines.len() - n_flexible,
            &split_limits(opts),
        )
    } else {
        0
    };
    let removal_jobs: Vec<(&UserPlan, RemoveMode, Via)> = removal_lines
        .into_iter()
        .map(|(u, how)| {
            let via = if flexible(u, how) && removal_put > 0 {
                removal_put -= 1;
                Via::Put
            } else {
                Via::Patch
            };
            (u, how, via)
        })
        .collect();
    for (_, how, via) in &removal_jobs {
        let method = RemovalBy::of(*how, *via).method();
        *ops_count.entry(method.into()).or_default() += 1;
    }
    let group_deletes: Vec<(&super::GroupPlan, &String)> = plan
        .groups
        .iter()
        .filter(|g| g.action == GroupAction::Delete)
        .filter_map(|g| Some((g, g.ironclad_id.as_ref()?)))
        .collect();
    let removals_total = removal_jobs.len() + group_deletes.len();
    if removals_total > 0 {
        progress.phase_start("removals", removals_total);
    }
    let run_removal = removal_job(|(u, how, via)| {
        let ctx = &ctx;
        async move { ctx.remove(u, how, via).await }
    });
    let outcomes: Vec<Outcome> = two_lanes(
        removal_jobs,
        |(_, how, via)| *how == RemoveMode::Delete || matches!(via, Via::Patch),
        conc,
        &run_removal,
    )
    .inspect(|o| progress.write_done("removals", ok(o)))
    .collect()
    .await;
    for o in outcomes {
        report.push(o);
    }
    for (g, id) in group_deletes {
        audit
            .record(
                "intent",
                "group_delete",
                &g.display_name,
                g.source_id.as_deref(),
                Some(id),
                None,
                None,
                None,
                None,
                None,
                AfterWrite::Nothing,
            )
            .await;
        match client
            .http()
            .send(&ApiRequest::delete(group_path(id)))
            .await
        {
            Ok(resp) => {
                if let Some(src) = &g.source_id {
                    let _ = store.delete_link(src);
                }
                audit
                    .record(
                        "outcome",
                        "group_delete",
                        &g.display_name,
                        g.source_id.as_deref(),
                        Some(id),
                        None,
                        None,
                        Some(resp.status),
                        Some(resp.request_id),
                        None,
                        AfterWrite::Nothing,
                    )
                    .await;
                report.push(Outcome {
                    name: g.display_name.clone(),
                    action: "group_delete".into(),
                    result: "applied".into(),
                    detail: None,
                });
            }
            Err(e) => {
                group_failed(
                    audit,
                    &mut report,
                    "group_delete",
                    &g.display_name,
                    g.source_id.as_deref(),
                    Some(id),
                    &e,
                )
                .await
            }
        }
        tick("removals", &report);
    }
    if removals_total > 0 {
        progress.phase_end("removals");
    }
    report.operations = ops_count;
    report
}

/// Records the outcome of each create an earlier run sent without learning it (see
/// [`super::SettledCreate`]), and the link of the ones that landed, so the audit shows every
/// completed write and the person is managed from now on.
async fn settle_creates(plan: &Plan, audit: &Audit) {
    for c in &plan.settled_creates {
        let user = UserPlan {
            source_id: Some(c.source_id.as_str().into()),
            locator: None,
            user_name: c.user_name.clone(),
            ironclad_id: c.ironclad_id.clone(),
            action: UserAction::Noop,
            seen_version: None,
            seen: None,
            held_action: None,
        };
        match &c.ironclad_id {
            Some(id) => {
                let note = format!(
                    "the answer to run {}'s create was lost when its process stopped; this run found the user in Ironclad by externalId",
                    c.run_id
                );
                audit
                    .record(
                        "outcome",
                        "create",
                        &c.user_name,
                        Some(&c.source_id),
                        Some(id),
                        None,
                        Some(json!({ "note": note })),
                        None,
                        None,
                        None,
                        AfterWrite::Linked(Link {
                            source_id: c.source_id.clone(),
                            ironclad_id: id.clone(),
                            user_name: c.user_name.clone(),
                            kind: "user".into(),
                        }),
                    )
                    .await;
            }
            None => {
                let why = format!(
                    "not applied: run {} stopped before the answer, and no Ironclad user carries this externalId",
                    c.run_id
                );
                audit.unwritten(&user, "create", None, None, &why).await;
            }
        }
    }
}

/// Records the missing store link of every user the plan matched by the externalId the bridge
/// sets (the source id) but the store does not know: a create whose answer was lost (the
/// process died, the connection dropped) left the user in Ironclad unlinked. Without the link
/// the user would be unowned: never removed once their entry is gone, never added to groups.
fn heal_links(plan: &Plan, store: &Store) {
    // Only lines carrying what Ironclad holds can need it (a linked no-op carries nothing), so
    // the links are read only when there are some.
    let candidates: Vec<_> = plan
        .users
        .iter()
        .filter_map(|u| {
            let (Some(src), Some(id), Some(seen)) = (&u.source_id, &u.ironclad_id, &u.seen) else {
                return None;
            };
            let carries = seen.get("externalId").and_then(Value::as_str) == Some(&**src);
            let acts = matches!(
                u.action,
                UserAction::Adopt { .. } | UserAction::Conflict { .. } | UserAction::Remove { .. }
            );
            (carries && !acts).then_some((u, src, id, seen))
        })
        .collect();
    if candidates.is_empty() {
        return;
    }
    let Ok(links) = store.link_ids("user") else {
        return;
    };
    for (u, src, id, seen) in candidates {
        if links.contains_key(&**src) {
            continue;
        }
        let link = Link {
            source_id: src.to_string(),
            ironclad_id: id.clone(),
            user_name: seen
                .get("userName")
                .and_then(Value::as_str)
                .unwrap_or(&u.user_name)
                .to_string(),
            kind: "user".into(),
        };
        match store.put_link(&link, Utc::now()) {
            Ok(()) => tracing::info!(
                user = %link.user_name,
                ironclad_id = %link.ironclad_id,
                "linked a user found by its externalId (an earlier create's answer was lost)"
            ),
            Err(e) => tracing::error!(error = %e, "cannot record the link"),
        }
    }
}

/// Records a failed group write in the audit and the report.
async fn group_failed(
    audit: &Audit,
    report: &mut ApplyReport,
    action: &str,
    name: &str,
    source_id: Option<&str>,
    id: Option<&str>,
    e: &IroncladError,
) {
    let text = e.to_string();
    audit
        .record(
            "outcome",
            action,
            name,
            source_id,
            id,
            None,
            None,
            e.status(),
            e.request_id().map(str::to_string),
            Some(text.clone()),
            AfterWrite::Nothing,
        )
        .await;
    report.push(Outcome {
        name: name.to_string(),
        action: action.into(),
        result: "failed".into(),
        detail: Some(text),
    });
}

fn changes_of(u: &UserPlan) -> &[AttrChange] {
    match &u.action {
        UserAction::Update { changes }
        | UserAction::Adopt { changes, .. }
        | UserAction::Rename { changes, .. } => changes,
        _ => &[],
    }
}

fn seen_of(u: &UserPlan) -> &Value {
    static EMPTY: Value = Value::Null;
    u.seen.as_ref().unwrap_or(&EMPTY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_audit_writer_commits_every_line_of_concurrent_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("state.db")).unwrap());
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(store.clone(), &path, "run-1").unwrap();
        let n = 300;
        futures::future::join_all((0..n).map(|i| {
            let (audit, store) = (&audit, &store);
            async move {
                let name = format!("u{i}@x");
                let src = format!("s{i}");
                audit
                    .record(
                        "intent",
                        "create",
                        &name,
                        Some(&src),
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        AfterWrite::Nothing,
                    )
                    .await;
                // Once the intent is awaited, it is in the store.
                assert!(store
                    .audit_lines(Some("run-1"))
                    .unwrap()
                    .iter()
                    .any(|l| l.user_name == name && l.phase == "intent"));
                let link = Link {
                    source_id: src.clone(),
                    ironclad_id: format!("i{i}"),
                    user_name: name.clone(),
                    kind: "user".into(),
                };
                audit
                    .record(
                        "outcome",
                        "create",
                        &name,
                        Some(&src),
                        Some(&link.ironclad_id.clone()),
                        None,
                        None,
                        Some(201),
                        None,
                        None,
                        AfterWrite::Linked(link),
                    )
                    .await;
            }
        }))
        .await;
        drop(audit);
        let lines = store.audit_lines(Some("run-1")).unwrap();
        assert_eq!(lines.len(), 2 * n);
        assert_eq!(store.links("user").unwrap().len(), n);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2 * n);
        // The file's lines are the store's, with the same sequence numbers (in the file's
        // order: one batch is written as it was committed).
        let mut file_seqs = Vec::new();
        for l in text.lines() {
            let e: AuditEntry = serde_json::from_str(l).unwrap();
            assert_eq!(e.run_id, "run-1");
            let stored = lines.iter().find(|s| s.seq == e.seq).unwrap();
            assert_eq!((&stored.user_name, &stored.phase), (&e.user_name, &e.phase));
            file_seqs.push(e.seq);
        }
        let mut sorted = file_seqs.clone();
        sorted.sort_unstable();
        assert_eq!(file_seqs, sorted);
        assert_eq!(sorted, lines.iter().map(|l| l.seq).collect::<Vec<_>>());
    }

    #[test]
    fn put_share_balances_the_buckets() {
        let l = RateLimits::default();
        // 1000 updates, no creates/deletes: x/600 = (1000-x)/50 -> x ~ 923.
        let x = put_share(1000, 0, 0, &l);
        assert!((920..=925).contains(&x), "{x}");
        // Many creates already fill the PUT/POST bucket: more goes to PATCH.
        assert!(put_share(100, 10_000, 0, &l) < 100);
        assert_eq!(put_share(0, 5, 5, &l), 0);
    }

    #[test]
    fn put_body_keeps_unmanaged_attributes() {
        let seen = json!({"id": "1", "userName": "a@x", "title": "Old", "meta": {"lastModified": "x"},
                          "urn:ietf:params:scim:schemas:extension:ironclad:2.0:User": {"provider": "saml"}});
        let body = put_body(
            &seen,
            &[AttrChange {
                path: "title".into(),
                before: json!("Old"),
                after: json!("New"),
            }],
        );
        assert_eq!(body["title"], "New");
        assert_eq!(
            body["urn:ietf:params:scim:schemas:extension:ironclad:2.0:User"]["provider"],
            "saml"
        );
        assert!(body.get("meta").is_none());
    }

    #[test]
    fn users_matched_by_our_external_id_get_their_missing_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let line = |src: &str, id: &str, ext: &str, action: UserAction| UserPlan {
            source_id: Some(src.into()),
            locator: None,
            user_name: format!("{src}@x"),
            ironclad_id: Some(id.into()),
            action,
            seen_version: None,
            seen: Some(json!({"id": id, "userName": format!("{src}@x"), "externalId": ext})),
            held_action: None,
        };
        let plan = Plan {
            created_at: Utc::now(),
            source_complete: true,
            source_incomplete: None,
            users: vec![
                // A create whose answer was lost: found by externalId.
                line("s1", "i1", "s1", UserAction::Noop),
                // Someone else's externalId: not ours to link.
                line("s2", "i2", "other", UserAction::Noop),
                // Conflicts and removals are never linked here.
                line(
                    "s3",
                    "i3",
                    "s3",
                    UserAction::Conflict { reason: "x".into() },
                ),
            ],
            groups: Vec::new(),
            summary: BTreeMap::new(),
            notes: Vec::new(),
            converged: Vec::new(),
            settled_creates: Vec::new(),
            unlinked_with_external_id: 0,
        };
        heal_links(&plan, &store);
        let links = store.links("user").unwrap();
        assert_eq!(links.keys().collect::<Vec<_>>(), vec!["s1"]);
        assert_eq!(links["s1"].ironclad_id, "i1");
    }

    #[test]
    fn empty_new_value_becomes_a_remove_op() {
        let op = patch_op(&AttrChange {
            path: "title".into(),
            before: json!("x"),
            after: Value::Null,
        });
        assert_eq!(serde_json::to_value(&op).unwrap()["op"], "remove");
    }
}
