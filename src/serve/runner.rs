//! The runner: the one place reconciliations start in the server. Every trigger (schedule,
//! webhook, admin API) hands it a [`JobSpec`]; one worker task runs them one at a time (single
//! flight in the process) and takes the state store's run lock around each run, so a second
//! instance on the same store waits instead of running concurrently.
//!
//! - Admin requests queue as they come, each with its own run id, handed out at once.
//! - Webhook requests coalesce: a webhook job still waiting in the queue absorbs the next one
//!   (its people are added; a full run absorbs everything).
//! - A scheduled run due while another runs (or waits) is not queued: it is recorded as
//!   `skipped`, with the run it gave way to.
//! - On stop, the run in flight is asked to stop before its writes begin; if it is already
//!   writing it gets the configured grace time to finish, after which it is recorded as
//!   `interrupted`. Queued jobs are dropped.
//!
//! What does not live here: the reconciliation itself (an [`Executor`]; in production the
//! [`Engine`]), and when to trigger (scheduler, webhooks, admin API).

use super::metrics::Metrics;
use crate::reconcile::apply::ApplyReport;
use crate::reconcile::engine::{Engine, RunOptions};
use crate::reconcile::Plan;
use crate::store::{Store, StoreError};
use chrono::Utc;
use futures::future::LocalBoxFuture;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};

/// Who a run is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everyone (level-triggered full reconciliation).
    Full,
    /// Only these people: source ids, userNames or emails.
    People(BTreeSet<String>),
}

impl Scope {
    /// Widens `self` to cover `other` too.
    pub fn merge(&mut self, other: Scope) {
        match (&mut *self, other) {
            (Scope::Full, _) => {}
            (_, Scope::Full) => *self = Scope::Full,
            (Scope::People(a), Scope::People(b)) => a.extend(b),
        }
    }

    fn only(&self) -> Option<BTreeSet<String>> {
        match self {
            Scope::Full => None,
            Scope::People(p) => Some(p.clone()),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Who.
    pub scope: Scope,
    /// Plan only.
    pub dry_run: bool,
    /// What asked for it (`schedule`, `webhook:okta`, `api`, ...): the run's trigger.
    pub trigger: String,
    /// Removals allowed beyond the safety threshold.
    pub allow_removals: usize,
}

/// A finished run, for whoever waits on it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Run id.
    pub run_id: String,
    /// Outcome as recorded in the store.
    pub outcome: String,
    /// The plan, when one was made.
    pub plan: Option<Plan>,
}

/// What an executor reports about one run (the store has the authoritative record).
#[derive(Debug, Clone, Default)]
pub struct ExecReport {
    /// The plan, when one was made.
    pub plan: Option<Plan>,
    /// What apply did.
    pub applied: Option<ApplyReport>,
    /// Users and groups read from the source.
    pub source_entries: Option<usize>,
    /// Time reading the source and evaluating the mapping.
    pub source_read: Option<Duration>,
    /// The error that ended the run, if any.
    pub error: Option<String>,
}

/// Runs one reconciliation under a given run id, recording it in the store.
///
/// The future need not be `Send`: the runner drives runs on a thread of its own (a
/// current-thread runtime), which also keeps a CPU-heavy mapping pass away from the threads
/// answering webhooks.
pub trait Executor: Send + Sync + 'static {
    /// Runs; `stop` set means "do not begin writing".
    fn execute<'a>(
        &'a self,
        run_id: &'a str,
        opts: &'a RunOptions,
        stop: &'a AtomicBool,
    ) -> LocalBoxFuture<'a, ExecReport>;
}

/// Resolves once `rx` says stop (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Executor for Engine {
    fn execute<'a>(
        &'a self,
        run_id: &'a str,
        opts: &'a RunOptions,
        stop: &'a AtomicBool,
    ) -> LocalBoxFuture<'a, ExecReport> {
        Box::pin(async move {
            match self.run_with(run_id, opts, Some(stop)).await {
                Ok(r) => ExecReport {
                    source_entries: r.source_entries,
                    source_read: Some(r.source_read),
                    plan: Some(r.plan),
                    applied: r.applied,
                    error: None,
                },
                Err(e) => ExecReport {
                    error: Some(e.to_string()),
                    ..ExecReport::default()
                },
            }
        })
    }
}

struct Job {
    id: String,
    spec: JobSpec,
    coalesce: bool,
    waiters: Vec<oneshot::Sender<Finished>>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    running: Option<String>,
    stopped: bool,
}

/// Settings of the runner.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Plan only, whatever the request says.
    pub dry_run: bool,
    /// Grace for the run in flight on stop.
    pub grace: Duration,
    /// When another instance's lock counts as abandoned.
    pub lock_stale: Duration,
}

/// The single-flight run queue. Shared behind an `Arc` by every trigger.
pub struct Runner {
    exec: Arc<dyn Executor>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    settings: RunnerSettings,
    /// A std `Mutex`: held only to push or pop, never across an `.await`.
    state: Mutex<State>,
    notify: Notify,
    /// This process's name in the store's run lock.
    holder: String,
    waiting_for_lock: AtomicBool,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// A run that was due but did not start because another was going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The id recorded for the skipped run.
    pub run_id: String,
    /// The run it gave way to.
    pub busy_with: String,
}

impl Runner {
    /// A runner over `exec`, recording in `store`.
    pub fn new(
        exec: Arc<dyn Executor>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        settings: RunnerSettings,
    ) -> Arc<Runner> {
        Arc::new(Runner {
            exec,
            store,
            metrics,
            settings,
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            holder: crate::store::lock_holder(&uuid::Uuid::new_v4().to_string()[..8]),
            waiting_for_lock: AtomicBool::new(false),
        })
    }

    /// The state store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn push(&self, job: Job) {
        self.state().queue.push_back(job);
        self.notify.notify_one();
    }

    fn new_job(spec: JobSpec, coalesce: bool) -> Job {
        Job {
            id: uuid::Uuid::new_v4().to_string(),
            spec,
            coalesce,
            waiters: Vec::new(),
        }
    }

    /// Queues a run; returns its id at once. `None` once the server is stopping.
    pub fn submit(&self, spec: JobSpec) -> Option<String> {
        if self.state().stopped {
            return None;
        }
        let job = Self::new_job(spec, false);
        let id = job.id.clone();
        self.push(job);
        Some(id)
    }

    /// Queues a run and returns its id and a receiver for its end.
    pub fn submit_and_wait(&self, spec: JobSpec) -> Option<(String, oneshot::Receiver<Finished>)> {
        if self.state().stopped {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let mut job = Self::new_job(spec, false);
        job.waiters.push(tx);
        let id = job.id.clone();
        self.push(job);
        Some((id, rx))
    }

    /// Queues a webhook run, merged into a webhook run still waiting when there is one.
    /// Returns the id of the run that will carry it.
    pub fn submit_coalescing(&self, spec: JobSpec) -> Option<String> {
        let mut st = self.state();
        if st.stopped {
            return None;
        }
        if let Some(j) = st
            .queue
            .iter_mut()
            .find(|j| j.coalesce && j.spec.dry_run == spec.dry_run)
        {
            j.spec.scope.merge(spec.scope);
            if j.spec.trigger != spec.trigger {
                j.spec.trigger = "webhook".into();
            }
            return Some(j.id.clone());
        }
        let job = Self::new_job(spec, true);
        let id = job.id.clone();
        st.queue.push_back(job);
        drop(st);
        self.notify.notify_one();
        Some(id)
    }

    /// Queues a scheduled run unless a run is going or waiting: then it is recorded as
    /// `skipped` and not queued.
    pub fn submit_unless_busy(&self, spec: JobSpec) -> Result<Option<String>, Skipped> {
        let busy_with = {
            let st = self.state();
            if st.stopped {
                return Ok(None);
            }
            st.running
                .clone()
                .or_else(|| st.queue.front().map(|j| j.id.clone()))
        };
        match busy_with {
            None => Ok(self.submit(spec)),
            Some(busy_with) => {
                let run_id = uuid::Uuid::new_v4().to_string();
                let reason = format!("run {busy_with} was still going when this one was due");
                let mode = if spec.dry_run || self.settings.dry_run {
                    "plan"
                } else {
                    "apply"
                };
                if let Err(e) =
                    self.store
                        .record_skipped(&run_id, &spec.trigger, mode, &reason, Utc::now())
                {
                    tracing::error!(error = %e, "cannot record a skipped run");
                }
                self.metrics.run(&spec.trigger, "skipped");
                tracing::warn!(run_id = %run_id, busy_with = %busy_with, trigger = %spec.trigger, "scheduled run skipped: another run is still going");
                Err(Skipped { run_id, busy_with })
            }
        }
    }

    /// `queued`, `waiting_for_lock` or `running` for a run the store has not recorded yet.
    pub fn status(&self, id: &str) -> Option<&'static str> {
        let st = self.state();
        if st.running.as_deref() == Some(id) {
            Some(if self.waiting_for_lock() {
                "waiting_for_lock"
            } else {
                "running"
            })
        } else if st.queue.iter().any(|j| j.id == id) {
            Some("queued")
        } else {
            None
        }
    }

    /// Whether the runner is waiting for another instance's run lock.
    pub fn waiting_for_lock(&self) -> bool {
        self.waiting_for_lock.load(Ordering::Relaxed)
    }

    /// Whether a run is going.
    pub fn busy(&self) -> bool {
        self.state().running.is_some()
    }

    async fn next_job(&self) -> Job {
        loop {
            {
                let mut st = self.state();
                if let Some(j) = st.queue.pop_front() {
                    st.running = Some(j.id.clone());
                    return j;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Takes the store's run lock, waiting while another instance holds it. False when a stop
    /// came first.
    async fn lock(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let stale = chrono::Duration::from_std(self.settings.lock_stale)
            .unwrap_or_else(|_| chrono::Duration::seconds(120));
        loop {
            match self.store.try_lock(&self.holder, Utc::now(), stale) {
                Ok(()) => {
                    self.waiting_for_lock.store(false, Ordering::Relaxed);
                    return true;
                }
                Err(e) => {
                    if !self.waiting_for_lock.swap(true, Ordering::Relaxed) {
                        match &e {
                            StoreError::Locked { .. } => {
                                tracing::warn!(error = %e, "waiting for the run lock")
                            }
                            _ => tracing::error!(error = %e, "cannot take the run lock"),
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stopped(shutdown) => return false,
            }
        }
    }

    /// Starts the worker on a thread of its own; the receiver fires when it has stopped.
    pub fn spawn_worker(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<oneshot::Receiver<()>> {
        let (done_tx, done_rx) = oneshot::channel();
        let me = self.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("ironbridge-runner".into())
            .spawn(move || {
                rt.block_on(me.work(shutdown));
                let _ = done_tx.send(());
            })?;
        Ok(done_rx)
    }

    /// The worker: runs queued jobs one at a time until `shutdown` turns true.
    pub async fn work(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut first = true;
        loop {
            let job = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                j = self.next_job() => j,
            };
            if !self.lock(&mut shutdown).await {
                self.state().queue.push_front(job);
                break;
            }
            if first {
                first = false;
                // We hold the lock: a run still marked running was cut short by a crash.
                match self.store.mark_interrupted(Utc::now()) {
                    Ok(n) if n > 0 => {
                        tracing::warn!(
                            runs = n,
                            "runs left running by an earlier process marked interrupted"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "cannot mark earlier runs"),
                }
            }
            let stopping = self.run_job(job, &mut shutdown).await;
            if let Err(e) = self.store.unlock(&self.holder) {
                tracing::error!(error = %e, "cannot release the run lock");
            }
            self.state().running = None;
            if stopping {
                break;
            }
        }
        let dropped = {
            let mut st = self.state();
            st.stopped = true;
            std::mem::take(&mut st.queue)
        };
        if !dropped.is_empty() {
            tracing::warn!(
                jobs = dropped.len(),
                "stopping: queued runs not started (the next scheduled run covers them)"
            );
        }
    }

    /// Runs one job; true when a stop interrupted it.
    async fn run_job(&self, job: Job, shutdown: &mut watch::Receiver<bool>) -> bool {
        let Job {
            id, spec, waiters, ..
        } = job;
        let opts = RunOptions {
            apply: !(spec.dry_run || self.settings.dry_run),
            allow_removals: spec.allow_removals,
            only: spec.scope.only(),
            trigger: spec.trigger.clone(),
            only_must_match: false,
        };
        tracing::info!(run_id = %id, trigger = %spec.trigger, apply = opts.apply, targeted = opts.only.as_ref().map(|o| o.len()), "run starting");
        let stop = AtomicBool::new(false);
        let heartbeat = self.store.spawn_heartbeat(
            self.holder.clone(),
            (self.settings.lock_stale / 4).max(Duration::from_secs(1)),
        );
        let fut = self.exec.execute(&id, &opts, &stop);
        tokio::pin!(fut);
        let mut stopping = false;
        let report = tokio::select! {
            r = &mut fut => Some(r),
            _ = stopped(shutdown) => {
                stopping = true;
                stop.store(true, Ordering::SeqCst);
                tracing::warn!(run_id = %id, grace_secs = self.settings.grace.as_secs(), "stop requested: letting the run in flight finish its writes");
                tokio::time::timeout(self.settings.grace, &mut fut).await.ok()
            }
        };
        heartbeat.abort();
        let report = match report {
            Some(r) => r,
            None => {
                let why = "stopped by a signal before the run could finish; the next run converges";
                if let Err(e) = self.store.interrupt_run(&id, why, Utc::now()) {
                    tracing::error!(error = %e, "cannot record the interrupted run");
                }
                ExecReport {
                    error: Some(why.into()),
                    ..ExecReport::default()
                }
            }
        };
        let outcome = match self.store.run(&id) {
            Ok(Some(r)) => r.outcome,
            _ => "failed".to_string(),
        };
        self.metrics.run(&spec.trigger, &outcome);
        if let Some(a) = &report.applied {
            let mut by_action = std::collections::BTreeMap::<&str, u64>::new();
            for o in a.outcomes.iter().filter(|o| o.result == "applied") {
                *by_action.entry(o.action.as_str()).or_default() += 1;
            }
            for (action, n) in by_action {
                self.metrics.changes(action, n);
            }
        }
        if let Some(p) = &report.plan {
            self.metrics
                .removals_held(p.summary.get("held").copied().unwrap_or(0));
            let mut stripped = p.clone();
            for u in &mut stripped.users {
                u.seen = None;
            }
            match serde_json::to_value(&stripped) {
                Ok(v) => {
                    if let Err(e) = self.store.save_plan(&id, &v) {
                        tracing::error!(error = %e, "cannot keep the run's plan");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode the run's plan"),
            }
        }
        if let Some(d) = report.source_read {
            self.metrics
                .source_read(d.as_secs_f64(), report.source_entries);
        }
        match &report.error {
            Some(e) => tracing::error!(run_id = %id, outcome = %outcome, error = %e, "run ended"),
            None => tracing::info!(run_id = %id, outcome = %outcome, "run ended"),
        }
        for w in waiters {
            let _ = w.send(Finished {
                run_id: id.clone(),
                outcome: outcome.clone(),
                plan: report.plan.clone(),
            });
        }
        stopping
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Records runs in the store, takes `each` (tokio time), and tracks overlap.
    pub(crate) struct FakeExec {
        pub store: Arc<Store>,
        pub each: Duration,
        pub running: AtomicUsize,
        pub max_running: AtomicUsize,
        pub scopes: Mutex<Vec<Option<BTreeSet<String>>>>,
    }

    impl Executor for FakeExec {
        fn execute<'a>(
            &'a self,
            run_id: &'a str,
            opts: &'a RunOptions,
            _stop: &'a AtomicBool,
        ) -> LocalBoxFuture<'a, ExecReport> {
            Box::pin(async move {
                let n = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_running.fetch_max(n, Ordering::SeqCst);
                self.scopes.lock().unwrap().push(opts.only.clone());
                self.store
                    .start_run(run_id, &opts.trigger, "apply", Utc::now())
                    .unwrap();
                tokio::time::sleep(self.each).await;
                self.store
                    .finish_run(run_id, "succeeded", &serde_json::json!({}), Utc::now())
                    .unwrap();
                self.running.fetch_sub(1, Ordering::SeqCst);
                ExecReport::default()
            })
        }
    }

    pub(crate) fn fake(
        dir: &std::path::Path,
        each: Duration,
    ) -> (Arc<FakeExec>, Arc<Runner>, Arc<Store>) {
        let store = Arc::new(Store::open(&dir.join("state.db")).unwrap());
        let exec = Arc::new(FakeExec {
            store: store.clone(),
            each,
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            scopes: Mutex::new(Vec::new()),
        });
        let runner = Runner::new(
            exec.clone(),
            store.clone(),
            Arc::new(Metrics::new(None)),
            RunnerSettings {
                dry_run: false,
                grace: Duration::from_secs(5),
                lock_stale: Duration::from_secs(60),
            },
        );
        (exec, runner, store)
    }

    fn people(p: &[&str]) -> Scope {
        Scope::People(p.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn scopes_merge_and_full_absorbs() {
        let mut s = people(&["a"]);
        s.merge(people(&["b"]));
        assert_eq!(s, people(&["a", "b"]));
        s.merge(Scope::Full);
        assert_eq!(s, Scope::Full);
        s.merge(people(&["c"]));
        assert_eq!(s, Scope::Full);
    }

    #[tokio::test(start_paused = true)]
    async fn webhook_jobs_coalesce_while_one_runs_and_runs_never_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let (exec, runner, store) = fake(dir.path(), Duration::from_secs(10));
        let (tx, rx) = watch::channel(false);
        let local = tokio::task::LocalSet::new();
        let worker = local.spawn_local(runner.clone().work(rx));
        local
            .run_until(async move {
                let spec = |p: &[&str]| JobSpec {
                    scope: people(p),
                    dry_run: false,
                    trigger: "webhook:okta".into(),
                    allow_removals: 0,
                };
                let first = runner.submit_coalescing(spec(&["a"])).unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                assert_eq!(runner.status(&first), Some("running"));
                let second = runner.submit_coalescing(spec(&["b"])).unwrap();
                let third = runner.submit_coalescing(spec(&["c"])).unwrap();
                assert_eq!(second, third, "a waiting webhook run absorbs the next");
                tokio::time::sleep(Duration::from_secs(30)).await;
                assert_eq!(exec.max_running.load(Ordering::SeqCst), 1);
                let scopes = exec.scopes.lock().unwrap().clone();
                assert_eq!(scopes.len(), 2);
                assert_eq!(
                    scopes[1],
                    Some(["b", "c"].iter().map(|s| s.to_string()).collect())
                );
                assert_eq!(store.run(&third).unwrap().unwrap().outcome, "succeeded");
                tx.send(true).unwrap();
                worker.await.unwrap();
                assert!(runner.submit(spec(&["d"])).is_none(), "no work after stop");
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn stop_waits_for_the_run_in_flight_within_grace_else_records_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        // A run longer than the grace time: recorded as interrupted.
        let (_exec, runner, store) = fake(dir.path(), Duration::from_secs(60));
        let (tx, rx) = watch::channel(false);
        let local = tokio::task::LocalSet::new();
        let worker = local.spawn_local(runner.clone().work(rx));
        local
            .run_until(async move {
                let id = runner
                    .submit(JobSpec {
                        scope: Scope::Full,
                        dry_run: false,
                        trigger: "api".into(),
                        allow_removals: 0,
                    })
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                tx.send(true).unwrap();
                let started = tokio::time::Instant::now();
                worker.await.unwrap();
                assert!(started.elapsed() <= Duration::from_secs(6));
                let r = store.run(&id).unwrap().unwrap();
                assert_eq!(r.outcome, "interrupted");
                // The lock was released.
                store
                    .try_lock("other", Utc::now(), chrono::Duration::seconds(60))
                    .unwrap();
            })
            .await;
    }
}
