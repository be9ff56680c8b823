//! The reconcile engine: the one call every trigger ends in. It reads the source, evaluates
//! the mapping, reads Ironclad (users and groups, as few list calls as paging allows), loads
//! links, quarantine and grace state from the store, plans (pure), and for an apply run
//! carries the plan out and records the run.
//!
//! What does not live here: the planning rules ([`super::plan`]), the writes
//! ([`super::apply`]), argument parsing and printing (the CLI).

use super::apply::{self, ApplyOptions, ApplyReport, Audit};
use super::drop_aside;
use super::plan::DesiredNames;
use super::users::{IroncladUser, JsonText};
use super::{
    plan, Desired, DesiredGroup, DesiredUser, Fingerprint, LinkMap, Plan, PlanInput, PlanPolicy,
    UserAction,
};
use crate::check::scopes;
use crate::config::{ActingUser, Config};
use crate::ironclad::IroncladClient;
use crate::mapping::{Apply, Mapping};
use crate::model::Snapshot;
use crate::source;
use crate::store::Store;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use tracing::Instrument as _;

/// An engine error: configuration, store, or Ironclad reads (a failing *source* is not an
/// error: it plans zero removals).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration lacks something the engine needs.
    #[error("{0}")]
    Config(String),
    /// The mapping file is invalid.
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MappingError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Ironclad could not be read.
    #[error("reading Ironclad: {0}")]
    Ironclad(crate::ironclad::IroncladError),
    /// A stop was requested before the writes began; nothing was written.
    #[error("stopped before applying: nothing was written")]
    Interrupted,
}

// Not `#[from]`: that would make the error its own source, and a chain printed whole would say
// what went wrong twice.
impl From<crate::ironclad::IroncladError> for EngineError {
    fn from(e: crate::ironclad::IroncladError) -> Self {
        EngineError::Ironclad(e)
    }
}

/// What a run does.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Apply (true) or only plan (false).
    pub apply: bool,
    /// Removals allowed beyond the threshold.
    pub allow_removals: usize,
    /// Restrict to these people (source ids, userNames or emails, case-insensitive).
    pub only: Option<BTreeSet<String>>,
    /// What started the run (`cli`, `schedule`, `webhook:okta`, `api`).
    pub trigger: String,
    /// With `only`: a name that matches nobody (in the source or in Ironclad) is an error and
    /// nothing is applied. Set by the CLI, where it is a typo; an IdP event may name someone
    /// who was never provisioned.
    pub only_must_match: bool,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Run id.
    pub run_id: String,
    /// The plan (for an apply run: the plan that was applied).
    pub plan: Plan,
    /// What apply did, for apply runs.
    pub applied: Option<ApplyReport>,
    /// Users and groups the source returned, when the read succeeded.
    pub source_entries: Option<usize>,
    /// Time spent reading the source and evaluating the mapping.
    pub source_read: std::time::Duration,
}

/// Everything a run needs, opened once.
pub struct Engine {
    /// The configuration.
    pub cfg: Config,
    /// The mapping (shared with the thread that evaluates it).
    pub mapping: Arc<Mapping>,
    /// The Ironclad client.
    pub client: Arc<IroncladClient>,
    /// The state store.
    pub store: Arc<Store>,
    source: Box<dyn source::Source>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.cfg.path)
            .finish()
    }
}

/// The Ironclad state as read.
pub struct Target {
    /// Users.
    pub users: Vec<IroncladUser>,
    /// The users' index for the planner, built beside the listing (`None`: the planner builds
    /// it).
    pub index: Option<plan::TargetIndex>,
    /// Groups (empty without the read scope).
    pub groups: Vec<Value>,
    /// Granted scopes.
    pub granted: BTreeSet<String>,
}

impl Engine {
    /// Opens the engine for a configuration.
    pub fn open(cfg: Config) -> Result<Engine, EngineError> {
        let mapping_path = cfg.mapping.clone().ok_or_else(|| {
            EngineError::Config(format!(
                "{}: no [mapping] file = \"...\"",
                cfg.path.display()
            ))
        })?;
        let mapping = Arc::new(Mapping::load(&mapping_path)?);
        let sc = cfg.source.as_ref().ok_or_else(|| {
            EngineError::Config(format!("{}: no [source] section", cfg.path.display()))
        })?;
        let base = cfg.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let source = source::open(sc, &base).map_err(|e| EngineError::Config(e.to_string()))?;
        let client = Arc::new(IroncladClient::new(&cfg.ironclad).map_err(EngineError::Ironclad)?);
        let store = Arc::new(Store::open(&cfg.state_path)?);
        store.bind_tenant(cfg.ironclad.scim_url.as_str())?;
        Ok(Engine {
            cfg,
            mapping,
            client,
            store,
            source,
        })
    }

    /// Reads Ironclad: granted scopes, all users, all groups (when readable).
    pub async fn read_target(&self) -> Result<Target, EngineError> {
        let granted: BTreeSet<String> = self
            .client
            .granted_scopes()
            .await?
            .scopes
            .into_iter()
            .collect();
        // Each page is decoded straight into compact users, with no JSON tree. The listing is a
        // task of its own, so that it runs beside the source read and the mapping on a
        // multi-threaded runtime.
        let client = self.client.clone();
        let users_task = tokio::spawn(async move {
            let mut users: Vec<IroncladUser> = Vec::new();
            client
                .for_each_user_page(&client.list_options(None), |page: Vec<IroncladUser>| {
                    users.extend(page);
                    Ok(())
                })
                .await?;
            // Indexed here, while the source side may still be mapping.
            let (users, index) = tokio::task::spawn_blocking(move || {
                let index = plan::TargetIndex::new(&users);
                (users, index)
            })
            .await
            .map_err(|e| {
                EngineError::Config(format!("indexing the Ironclad listing stopped: {e}"))
            })?;
            Ok::<_, EngineError>((users, index))
        });
        // Groups are listed while the users' pages arrive.
        let groups = if self.cfg.policy.manage_groups && granted.contains(scopes::READ_GROUPS) {
            self.client.list_groups(None).await
        } else {
            Ok(Vec::new())
        };
        let groups = match groups {
            Ok(g) => g,
            Err(e) => {
                users_task.abort();
                return Err(e.into());
            }
        };
        let (users, index) = users_task
            .await
            .map_err(|e| EngineError::Config(format!("the Ironclad listing stopped: {e}")))??;
        let groups = groups.into_iter().map(|g| g.into_value()).collect();
        Ok(Target {
            users,
            index: Some(index),
            groups,
            granted,
        })
    }

    /// The planner's policy from configuration, mapping and options.
    pub fn plan_policy(&self, opts: &RunOptions) -> PlanPolicy {
        let c = &self.cfg;
        let acting_user = match &c.ironclad.acting_user {
            Some(ActingUser::Email(e)) => Some(e.clone()),
            _ => None,
        };
        PlanPolicy {
            acting_user,
            create_users: c.policy.create_users,
            update_users: c.policy.update_users,
            remove: self
                .mapping
                .removal()
                .action
                .unwrap_or(c.policy.remove_users),
            manage_groups: c.policy.manage_groups && self.mapping.manages_groups(),
            fallback_keys: self
                .mapping
                .correlation()
                .fallback
                .iter()
                .map(|k| match k {
                    crate::mapping::FallbackKey::UserName => "userName".to_string(),
                    crate::mapping::FallbackKey::Email => "email".to_string(),
                })
                .collect(),
            protected: Vec::new(),
            max_removals: c.safety.max_removals,
            max_removal_percent: c.safety.max_removal_percent,
            allow_removals: opts.allow_removals,
            grace_runs: c.safety.grace_runs,
            grace_period: c.safety.grace_period,
        }
    }

    /// Turns into `refused` skips the lines of a saved plan that the configuration and mapping as they
    /// are now do not allow, and says why for each: a plan reviewed under other settings must
    /// not override a setting made since to protect someone or to stop an action. Refused:
    /// any write to a user now protected (by the plan's userName, the userName it would set, or
    /// the one `current_name` gives for its Ironclad id); creates when `create_users` is now
    /// off; updates, renames and adoptions when `update_users` is now off; removals when
    /// removal is now `keep`, or done another way (DELETE or `active: false`) than the plan's.
    /// Held removals are checked as the removals they are.
    pub fn refuse_disallowed_now(
        &self,
        plan: &mut Plan,
        current_name: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<(String, String, String)> {
        let policy = self.plan_policy(&RunOptions::default());
        let mapping = &self.mapping;
        let extra = move |name: &str| mapping.removal().is_protected(name);
        let protected = super::plan::Protected::new(&policy, Some(&extra));
        let mut refused = Vec::new();
        for u in &mut plan.users {
            let action = u.held_action.as_deref().unwrap_or(&u.action);
            if !action.writes() {
                continue;
            }
            let mut names = vec![u.user_name.clone()];
            if let UserAction::Rename { to, .. } = action {
                names.push(to.clone());
            }
            if let Some(n) = u.ironclad_id.as_deref().and_then(current_name) {
                names.push(n);
            }
            let why = names
                .iter()
                .find_map(|n| protected.matches(n).map(|p| (n, p)))
                .map(|(n, p)| format!("{n} is protected now ({p}); the plan was made before"))
                .or_else(|| match action {
                    UserAction::Create { .. } if !policy.create_users => Some(
                        "creating users is turned off now (policy.create_users = false)".into(),
                    ),
                    UserAction::Update { .. }
                    | UserAction::Rename { .. }
                    | UserAction::Adopt { .. }
                        if !policy.update_users =>
                    {
                        Some(
                            "updating users is turned off now (policy.update_users = false)".into(),
                        )
                    }
                    UserAction::Remove { how, .. } if *how != policy.remove => {
                        Some(if policy.remove == crate::config::RemoveMode::Keep {
                            "removing users is turned off now (the removal setting is keep)"
                                .to_string()
                        } else {
                            format!(
                                "the removal setting changed since the plan was made \
                                 (plan: {}, now: {}); make a new plan",
                                remove_mode_name(*how),
                                remove_mode_name(policy.remove)
                            )
                        })
                    }
                    _ => None,
                });
            if let Some(why) = why {
                refused.push((u.user_name.clone(), action.name().to_string(), why.clone()));
                u.action = UserAction::Skip {
                    reason: super::SkipReason::Refused {
                        action: action.name().to_string(),
                        why,
                    },
                };
                u.held_action = None;
            }
        }
        refused
    }

    /// The source, as its kind and URL or path (never a secret).
    pub fn source_description(&self) -> String {
        self.source.describe()
    }

    /// Reads the source and evaluates the mapping: desired users and groups, or the reason the
    /// source cannot be trusted this run. The mapping runs on blocking threads, so that the
    /// Ironclad listing read at the same time keeps going. With `consume`, the snapshot is only
    /// read for the mapping: where the mapping allows it, each user's attributes are freed as
    /// soon as the user has been evaluated, and the snapshot returned has none.
    pub async fn desired(
        &self,
        now: DateTime<Utc>,
        consume: bool,
    ) -> (Result<DesiredSets, String>, Option<Arc<Snapshot>>) {
        let read = if self.cfg.safety.writes_on_incomplete_source {
            self.source.read_allowing_partial().await
        } else {
            self.source.read().await.map(|snapshot| source::Read {
                snapshot,
                cut_short: None,
            })
        };
        let (mut snap, cut_short) = match read {
            Ok(r) => (r.snapshot, r.cut_short),
            Err(e) => return (Err(format!("the source read failed: {e}")), None),
        };
        let taken = (consume && !self.mapping.reads_other_entries()).then(|| {
            snap.users
                .iter_mut()
                .map(|e| std::sync::Mutex::new(std::mem::take(&mut e.attrs)))
                .collect::<Vec<_>>()
        });
        let snap = Arc::new(snap);
        let mapping = self.mapping.clone();
        let shared = snap.clone();
        let mapped = tokio::task::spawn_blocking(move || {
            desired_from(&mapping, &shared, taken.as_deref(), now)
        })
        .await;
        match mapped {
            Ok(r) => (
                r.map(|mut sets| {
                    sets.incomplete = cut_short.map(|e| e.to_string());
                    sets
                }),
                Some(snap),
            ),
            Err(e) => (Err(format!("the mapping failed: {e}")), Some(snap)),
        }
    }

    /// Runs one reconciliation.
    pub async fn run(&self, opts: &RunOptions) -> Result<RunResult, EngineError> {
        let run_id = uuid::Uuid::new_v4().to_string();
        self.run_with(&run_id, opts, None).await
    }

    /// Runs one reconciliation under a run id chosen by the caller (the server hands it out
    /// before the run starts). When `stop` is set before the writes begin, nothing is written
    /// and the run is recorded as `interrupted`; set during the writes, the writes in flight
    /// finish and the ones not yet sent are refused (the next run applies them).
    pub async fn run_with(
        &self,
        run_id: &str,
        opts: &RunOptions,
        stop: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<RunResult, EngineError> {
        let now = Utc::now();
        let run_id = run_id.to_string();
        let mode = if opts.apply { "apply" } else { "plan" };
        let span = tracing::info_span!("run", run_id = %run_id, mode, trigger = %opts.trigger);
        self.store.start_run(&run_id, &opts.trigger, mode, now)?;
        // A stop before the writes begin ends the run at once (reading and planning write
        // nothing to Ironclad); once they have begun, it only holds back the writes not sent.
        let writing = std::sync::atomic::AtomicBool::new(false);
        let inner = self
            .run_inner(&run_id, opts, now, stop, &writing)
            .instrument(span);
        let result = match stop {
            None => inner.await,
            Some(flag) => {
                let before_writing = async {
                    super::when_set(flag).await;
                    if writing.load(std::sync::atomic::Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    r = inner => r,
                    () = before_writing => Err(EngineError::Interrupted),
                }
            }
        };
        match &result {
            Ok(r) => {
                let stopped = stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
                let outcome = match &r.applied {
                    // Writes left unsent by a stop: the run did not finish its work.
                    Some(a) if stopped && a.refused() > 0 => "interrupted",
                    // Said first: the summary's counts show any failed writes beside it.
                    _ if r.plan.source_incomplete.is_some() => "source_incomplete",
                    Some(a) if a.failed() > 0 => "partial",
                    _ if !r.plan.source_complete => "source_failed",
                    _ => "succeeded",
                };
                let summary = serde_json::json!({
                    "plan": r.plan.summary,
                    "notes": r.plan.notes,
                    "applied": r.applied.as_ref().map(|a| &a.counts),
                });
                self.store
                    .finish_run(&run_id, outcome, &summary, Utc::now())?;
            }
            Err(e) => {
                let summary = serde_json::json!({ "error": e.to_string() });
                let outcome = match e {
                    EngineError::Interrupted => "interrupted",
                    _ => "failed",
                };
                self.store
                    .finish_run(&run_id, outcome, &summary, Utc::now())?;
            }
        }
        result
    }

    async fn run_inner(
        &self,
        run_id: &str,
        opts: &RunOptions,
        now: DateTime<Utc>,
        stop: Option<&std::sync::atomic::AtomicBool>,
        writing: &std::sync::atomic::AtomicBool,
    ) -> Result<RunResult, EngineError> {
        let progress = super::progress::current();
        progress.reading("the source and Ironclad");
        // The source and Ironclad are read at the same time: neither depends on the other.
        let read_start = std::time::Instant::now();
        let source_side = async {
            let (desired, snapshot) = self.desired(now, true).await;
            // Only its size is kept: the snapshot is not needed once the mapping has run.
            let entries = snapshot.map(|s| s.users.len() + s.groups.len());
            let elapsed = read_start.elapsed();
            // The names are indexed while the Ironclad listing is still being read.
            let (desired, names) = match desired {
                Ok(mut sets) => {
                    let users = std::mem::take(&mut sets.users);
                    let (users, names) = tokio::task::spawn_blocking(move || {
                        let names = DesiredNames::new(&users);
                        (users, names)
                    })
                    .await
                    .map_err(|e| {
                        EngineError::Config(format!("indexing the source stopped: {e}"))
                    })?;
                    sets.users = users;
                    (Ok(sets), Some(names))
                }
                Err(e) => (Err(e), None),
            };
            Ok::<_, EngineError>(((desired, names, entries), elapsed))
        };
        // The state store is read beside them.
        let store = self.store.clone();
        let (after, full) = (
            self.cfg.safety.quarantine_after,
            self.cfg.policy.full_compare,
        );
        let state_side = async {
            tokio::task::spawn_blocking(move || load_state(&store, after, full))
                .await
                .map_err(|e| EngineError::Config(format!("reading the state store stopped: {e}")))?
        };
        let (source_side, target, state) =
            tokio::join!(source_side, self.read_target(), state_side);
        let ((desired, names, source_entries), source_read) = source_side?;
        let state = state?;
        if let Ok(sets) = &desired {
            progress.read("the source (people)", sets.users.len());
        }
        let target = target?;
        progress.read("Ironclad (users)", target.users.len());
        // People named by an email address that is not their userName: the source ids and
        // userNames of the desired users and Ironclad users carrying that address join the set.
        // When every name must match someone, each is expanded on its own (to tell which one
        // matches nobody) and the set is their union.
        let read_users = desired.as_ref().map(|d| &d.users[..]).unwrap_or(&[]);
        let expand = |names: &BTreeSet<String>| {
            lowered(&with_email_matches(names, read_users, &target.users))
        };
        let named: Vec<(&str, BTreeSet<String>)> = match (&opts.only, opts.only_must_match) {
            (Some(names), true) => names
                .iter()
                .map(|n| (n.as_str(), expand(&BTreeSet::from([n.clone()]))))
                .collect(),
            _ => Vec::new(),
        };
        let only = opts.only.as_ref().map(|names| {
            if named.is_empty() {
                expand(names)
            } else {
                named
                    .iter()
                    .flat_map(|(_, set)| set.iter().cloned())
                    .collect()
            }
        });
        let mut state = state;
        if let (Some(only), true) = (&only, opts.only_must_match) {
            // An operator naming someone on the command line asks for them to be tried now:
            // their quarantine does not hold them back in this run (its record stays until a
            // write succeeds).
            let lifted: BTreeSet<&str> = read_users
                .iter()
                .filter(|d| {
                    only.contains(&d.source_id.to_lowercase())
                        || only.contains(&d.locator.to_lowercase())
                        || matches!(&d.state, Desired::Wanted { user, .. }
                            if user.top_str("userName").is_some_and(|n| only.contains(&n.to_lowercase())))
                })
                .map(|d| &*d.source_id)
                .collect();
            state.quarantined.retain(|id, _| {
                !lifted.contains(id.as_str()) && !only.contains(&id.to_lowercase())
            });
        }
        let plan_start = std::time::Instant::now();
        let mut plan = self.plan_from(desired, names.as_ref(), &target, &state, opts, now)?;
        let unmatched = naming_nobody(&plan, named);
        if !unmatched.is_empty() {
            return Err(EngineError::Config(format!(
                "--only {}: no one in the plan has this id, DN, userName or email (people out of \
                 scope or disabled are known by DN or source id only: the mapping gives them no \
                 email; `ironbridge preview --user` shows why someone is out); nothing was \
                 planned or applied",
                unmatched.join(", ")
            )));
        }
        drop_aside((state, target, names));
        tracing::debug!(
            elapsed_ms = plan_start.elapsed().as_millis() as u64,
            newly_converged = plan.converged.len(),
            "planned"
        );
        // Users found converged are recorded, so that the next run need not compare them.
        let converged = std::mem::take(&mut plan.converged);
        if !converged.is_empty() {
            self.store.record_converged(&converged)?;
        }
        if let Some(only) = &only {
            restrict(&mut plan, only);
        }
        // Said before the stop is looked at (see `run_with`).
        writing.store(opts.apply, std::sync::atomic::Ordering::SeqCst);
        if opts.apply && stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)) {
            return Err(EngineError::Interrupted);
        }
        let applied = if opts.apply {
            let audit = Audit::open(self.store.clone(), &self.cfg.audit_log, run_id)
                .map_err(EngineError::Config)?;
            let report = apply::apply_until(
                &plan,
                &self.client,
                &self.store,
                &audit,
                &self.apply_options(run_id, false, read_start),
                stop,
            )
            .await;
            tracing::debug!("applied");
            self.record_run_counters(&plan, now)?;
            tracing::debug!("grace and failure counters recorded");
            Some(report)
        } else {
            None
        };
        Ok(RunResult {
            run_id: run_id.to_string(),
            plan,
            applied,
            source_entries,
            source_read,
        })
    }

    /// Apply settings for this configuration. `seen_at`: when the plan's users were read from
    /// Ironclad (or checked unchanged since).
    pub fn apply_options(
        &self,
        run_id: &str,
        apply_held: bool,
        seen_at: std::time::Instant,
    ) -> ApplyOptions {
        ApplyOptions {
            seen_at,
            put_reread_after: std::time::Duration::from_secs(self.cfg.policy.put_reread_after_secs),
            run_id: run_id.to_string(),
            audit_log: self.cfg.audit_log.clone(),
            concurrency: self.cfg.ironclad.max_concurrency,
            rate_limits: self.cfg.ironclad.rate_limits,
            quarantine_after: self.cfg.safety.quarantine_after,
            apply_held,
            write_method: self.cfg.policy.write_method,
            adopt_by_user_name: self
                .mapping
                .correlation()
                .fallback
                .contains(&crate::mapping::FallbackKey::UserName),
        }
    }

    /// Plans from desired state and a target snapshot.
    pub fn plan_with(
        &self,
        desired: Result<DesiredSets, String>,
        target: &Target,
        opts: &RunOptions,
        now: DateTime<Utc>,
    ) -> Result<Plan, EngineError> {
        let state = load_state(
            &self.store,
            self.cfg.safety.quarantine_after,
            self.cfg.policy.full_compare,
        )?;
        self.plan_from(desired, None, target, &state, opts, now)
    }

    /// Plans from desired state (with its names when built beforehand), a target snapshot and
    /// the state store's view.
    pub fn plan_from(
        &self,
        desired: Result<DesiredSets, String>,
        names: Option<&DesiredNames>,
        target: &Target,
        state: &StoreState,
        opts: &RunOptions,
        now: DateTime<Utc>,
    ) -> Result<Plan, EngineError> {
        let policy = self.plan_policy(opts);
        let (links, settled) = settle_creates(state, &target.users);
        let (desired, groups, group_errors, incomplete, note) = match desired {
            Ok(DesiredSets {
                users: mut d,
                groups: g,
                group_errors: ge,
                incomplete,
            }) => {
                resolve_managers(&mut d, &target.users, &links);
                (Some(d), g, ge, incomplete, None)
            }
            Err(why) => (None, Vec::new(), Vec::new(), None, Some(why)),
        };
        let mapping = &self.mapping;
        let protected = move |name: &str| mapping.removal().is_protected(name);
        let mut plan = plan::plan(&PlanInput {
            desired: desired.as_deref(),
            desired_groups: &groups,
            group_errors: &group_errors,
            source_incomplete: incomplete.as_deref(),
            ironclad_users: &target.users,
            ironclad_groups: &target.groups,
            user_links: &links,
            group_links: &state.group_links,
            policy: &policy,
            granted: &target.granted,
            quarantined: &state.quarantined,
            grace: &state.grace,
            now,
            protected_fn: Some(&protected),
            converged: state.converged.as_ref(),
            desired_names: names,
            target_index: target.index.as_ref(),
        });
        if let Some(n) = note {
            plan.notes.insert(0, n);
        }
        let landed: Vec<&str> = settled
            .iter()
            .filter(|c| c.ironclad_id.is_some() && !state.links.contains_key(&c.source_id))
            .map(|c| c.user_name.as_str())
            .collect();
        if !landed.is_empty() {
            plan.notes.push(format!(
                "{} {} an earlier run sent without getting the answer (the process stopped) \
                 {} in Ironclad, found by externalId; this plan treats them as linked, and apply \
                 records the link and the create's outcome: {}",
                landed.len(),
                if landed.len() == 1 {
                    "create"
                } else {
                    "creates"
                },
                if landed.len() == 1 { "is" } else { "are" },
                landed.join(", ")
            ));
        }
        plan.settled_creates = settled;
        if state.links.is_empty() && desired.is_some() {
            if let Some((n, note)) = unowned_note(&plan, &target.users) {
                plan.notes.push(note);
                plan.unlinked_with_external_id = n;
            }
        }
        drop_aside(desired);
        Ok(plan)
    }

    /// Records what a plan saw of the people in a grace period (one more missed run for each
    /// removal it holds for grace, the counter cleared for each person back in the source), and
    /// clears the failure count of each person it found as wanted.
    pub fn record_run_counters(&self, plan: &Plan, now: DateTime<Utc>) -> Result<(), EngineError> {
        // A person whose earlier write failed but who is now found as wanted (fixed in
        // Ironclad, or by a later run) no longer counts towards quarantine: failures count
        // runs in a row. (A quarantined person is skipped, not found converged, so stays.)
        let failures = self.store.quarantine()?;
        for u in &plan.users {
            if let (UserAction::Noop, Some(src)) = (&u.action, u.source_id.as_deref()) {
                if failures.contains_key(src) {
                    self.store.clear_failure(src)?;
                }
            }
        }
        // Only people with a counter need clearing: one statement per counter, not per user.
        let counters = self.store.grace()?;
        for u in &plan.users {
            let key = u
                .source_id
                .as_deref()
                .or(u.ironclad_id.as_deref())
                .unwrap_or_default()
                .to_string();
            match &u.action {
                UserAction::Skip {
                    reason: super::SkipReason::Grace { .. },
                } => {
                    self.store.bump_grace(&key, now)?;
                }
                UserAction::Noop | UserAction::Update { .. } | UserAction::Rename { .. }
                    if counters.contains_key(&key) =>
                {
                    self.store.clear_grace(&key)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// How the removal setting is written in the configuration (its serde name).
fn remove_mode_name(m: crate::config::RemoveMode) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Evaluates the mapping over a snapshot: one compact desired user per entry (evaluated one at
/// a time, so the evaluations are never all held) and the desired groups with members as
/// correlation keys.
/// Desired users and groups of a snapshot. With `taken`, the users' attributes were taken out
/// of the snapshot (one per user, in its order): each is moved out again to evaluate its user,
/// and freed with the evaluation.
/// What the mapping makes of a snapshot.
#[derive(Debug, Default)]
pub struct DesiredSets {
    /// One verdict per user entry.
    pub users: Vec<DesiredUser>,
    /// The groups the mapping selects.
    pub groups: Vec<DesiredGroup>,
    /// The errors of the groups it selects but could not evaluate.
    pub group_errors: Vec<String>,
    /// Why the users listing was cut short, when it was (and `writes_on_incomplete_source`
    /// let the run go on with the users read): the planner then removes nobody.
    pub incomplete: Option<String>,
}

fn desired_from(
    mapping: &Mapping,
    snap: &Arc<Snapshot>,
    taken: Option<&[std::sync::Mutex<crate::model::Attributes>]>,
    now: DateTime<Utc>,
) -> Result<DesiredSets, String> {
    // The snapshot is shared with the mapping's index, not copied (a copy of 100,000 entries
    // doubled the run's memory while the mapping ran).
    let prepared = match mapping.prepare_shared(snap.clone(), now) {
        Ok(p) => p,
        Err(e) => {
            return Err(format!(
                "the mapping cannot be applied to this snapshot: {e}"
            ))
        }
    };
    let mut users = Vec::with_capacity(snap.users.len());
    // Entry id -> correlation key (externalId), for group members: only the keys that differ
    // from the entry id are kept (usually none), and only when groups are managed; every other
    // user's key is its id.
    let manages_groups = mapping.manages_groups();
    let mut key_of: HashMap<String, String> = HashMap::new();
    // Every desired user carries each managed attribute of the mapping, in order: one policy
    // map, shared by all of them.
    let policies: Arc<BTreeMap<String, super::ApplyPolicy>> = Arc::new(
        mapping
            .managed_attributes()
            .iter()
            .map(|a| (a.target.scim_path(), policy_of(a.apply)))
            .collect(),
    );
    // Evaluations are independent: a large snapshot is evaluated on several threads, in
    // batches, each result turned into its compact desired user at once (the evaluation itself
    // is not kept).
    // With it, the entry id when it differs from the correlation key (for group members).
    let one = |pos: usize| -> Result<(DesiredUser, Option<String>), String> {
        let evaluated = match (taken.and_then(|t| t.get(pos)), snap.users.get(pos)) {
            (Some(attrs), Some(e)) => {
                // Taking cannot panic, so the lock is never poisoned; were it, the attributes
                // inside are still whole.
                let attrs = std::mem::take(&mut *attrs.lock().unwrap_or_else(|p| p.into_inner()));
                let entry = crate::model::Entry {
                    id: e.id.clone(),
                    locator: e.locator.clone(),
                    attrs,
                };
                prepared.evaluate_taken(pos, entry)
            }
            _ => prepared.evaluate_at(pos),
        };
        Ok(match evaluated {
            Ok(ev) => {
                // Without a user (another attribute failed), the externalId alone when it
                // could be computed: the key the store links the person by.
                let identity_unknown = ev.user.is_none() && ev.external_id.is_none();
                let key = ev
                    .user
                    .as_ref()
                    .map(|u| u.external_id.clone())
                    .or_else(|| ev.external_id.clone())
                    .unwrap_or_else(|| ev.source_id.clone());
                let state = match (&ev.user, ev.desired) {
                    (Some(u), true) => {
                        // The text is written directly, with the manager's externalId as a
                        // hint beside it when the mapping manages the manager.
                        let hint = u.manager_external_id().map(|m| (MANAGER_HINT, m));
                        Desired::Wanted {
                            user: JsonText::from_json(u.scim_text(hint)),
                            policies: policies.clone(),
                        }
                    }
                    (None, true) => Desired::Failed {
                        error: ev
                            .user_error
                            .clone()
                            .unwrap_or_else(|| "the mapping produced no user".into()),
                        identity_unknown,
                    },
                    (_, false) => Desired::NotWanted {
                        reason: if ev.disabled && ev.in_scope {
                            "disabled in the source".to_string()
                        } else {
                            format!("out of scope ({})", ev.decided_by.text)
                        },
                    },
                };
                let entry_id = (manages_groups && key != ev.source_id).then_some(ev.source_id);
                let d = DesiredUser {
                    source_id: key.into(),
                    locator: ev.locator.into(),
                    state,
                };
                (d, entry_id)
            }
            Err(crate::mapping::MappingError::Eval(e)) => {
                let d = DesiredUser {
                    source_id: e.external_id.as_deref().unwrap_or(&e.id).into(),
                    locator: e.locator.as_str().into(),
                    state: Desired::Failed {
                        error: e.to_string(),
                        identity_unknown: e.external_id.is_none(),
                    },
                };
                (d, None)
            }
            Err(e) => return Err(format!("the mapping failed: {e}")),
        })
    };
    let mut failed = None;
    super::par::map_in_order(prepared.user_count(), &one, |r| match r {
        Ok((d, entry_id)) => {
            if let Some(entry_id) = entry_id {
                key_of.insert(entry_id, d.source_id.to_string());
            }
            users.push(d);
        }
        Err(e) => {
            failed.get_or_insert(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let mut groups = Vec::new();
    let mut group_errors = Vec::new();
    if manages_groups {
        let ge = prepared.groups();
        for e in &ge.errors {
            tracing::warn!(error = %e, "group skipped");
            group_errors.push(e.to_string());
        }
        for g in ge.groups {
            groups.push(DesiredGroup {
                source_id: g.source_id,
                locator: g.locator,
                display_name: g.display_name,
                members: g
                    .member_source_ids
                    .iter()
                    // Members are snapshot users (the mapping resolves them by position).
                    .map(|m| key_of.get(m).unwrap_or(m).clone())
                    .collect(),
            });
        }
    }
    Ok(DesiredSets {
        users,
        groups,
        group_errors,
        incomplete: None,
    })
}

/// What the planner needs from the state store, read in one go.
pub struct StoreState {
    links: LinkMap,
    group_links: BTreeMap<String, String>,
    /// Source id -> until when it is skipped, and why (its failed runs and last error).
    quarantined: BTreeMap<String, (DateTime<Utc>, String)>,
    grace: BTreeMap<String, (DateTime<Utc>, u32)>,
    /// `None` with `full_compare`: every linked user is compared and none is fingerprinted.
    converged: Option<foldhash::HashSet<Fingerprint>>,
    /// Creates sent without their outcome known: source id -> (userName, run id).
    pending_creates: BTreeMap<String, (String, String)>,
}

fn load_state(
    store: &Store,
    quarantine_after: u32,
    full_compare: bool,
) -> Result<StoreState, EngineError> {
    Ok(StoreState {
        links: store.link_ids("user")?,
        group_links: store.link_ids("group")?.into_iter().collect(),
        quarantined: store
            .quarantine()?
            .into_values()
            .filter(|q| q.failures >= quarantine_after)
            .map(|q| {
                let why = format!(
                    "{} failed runs in a row; last: {}",
                    q.failures, q.last_error
                );
                (q.source_id, (q.retry_after, why))
            })
            .collect(),
        grace: store
            .grace()?
            .into_values()
            .map(|g| (g.source_id, (g.first_missing, g.missed_runs)))
            .collect(),
        converged: match full_compare {
            true => None,
            false => Some(store.converged_fingerprints()?),
        },
        pending_creates: store.pending_creates()?,
    })
}

/// With a state store that links nobody yet (a first run, or a store lost or pointed at the
/// wrong file): the Ironclad users that carry an externalId no source entry matches. ironbridge
/// never removes a user it has no link for, so if these were created by ironbridge with a store
/// since lost, they stay until someone removes them; the note says so once there are any.
fn unowned_note(plan: &Plan, users: &[IroncladUser]) -> Option<(usize, String)> {
    let planned: std::collections::HashSet<&str> = plan
        .users
        .iter()
        .filter_map(|u| u.ironclad_id.as_deref())
        .collect();
    let unowned: Vec<&str> = users
        .iter()
        .filter(|u| {
            u.external_id
                .as_deref()
                .is_some_and(|x| !x.trim().is_empty())
        })
        .filter(|u| !planned.contains(&*u.id))
        .map(|u| &*u.user_name)
        .collect();
    if unowned.is_empty() {
        return None;
    }
    let shown: Vec<&str> = unowned.iter().take(5).copied().collect();
    let note = format!(
        "this state store links nobody yet, and {} Ironclad {} an externalId that no source entry \
         has ({}{}): ironbridge never updates or removes users it has no link for. If ironbridge \
         created them with a state store that was since lost, [state] path points at the wrong \
         file; otherwise they belong to another provisioning tool",
        unowned.len(),
        if unowned.len() == 1 {
            "user carries"
        } else {
            "users carry"
        },
        shown.join(", "),
        if unowned.len() > shown.len() {
            ", ..."
        } else {
            ""
        }
    );
    Some((unowned.len(), note))
}

/// Settles the creates an earlier run sent without learning their outcome: the Ironclad user
/// carrying the person's source id as externalId (the bridge sets it) is theirs, so it is
/// linked for this plan, as apply then records, and a leaver among them is removed like any
/// other. Without this, a person whose create landed unanswered and who then left the source
/// would stay in Ironclad, unlinked, for good. A create nobody carries never landed.
fn settle_creates<'s>(
    state: &'s StoreState,
    users: &[IroncladUser],
) -> (std::borrow::Cow<'s, LinkMap>, Vec<super::SettledCreate>) {
    let pending = &state.pending_creates;
    if pending.is_empty() {
        return (std::borrow::Cow::Borrowed(&state.links), Vec::new());
    }
    let linked_ids: std::collections::HashSet<&str> =
        state.links.values().map(String::as_str).collect();
    let mut found: BTreeMap<&str, &str> = BTreeMap::new();
    for u in users {
        if let Some(x) = u.external_id.as_deref() {
            if pending.contains_key(x) && !linked_ids.contains(&*u.id) {
                found.insert(x, &u.id);
            }
        }
    }
    let mut links = state.links.clone();
    let settled = pending
        .iter()
        .map(|(src, (user_name, run_id))| {
            let id = match state.links.get(src) {
                // Linked since (a later run found them as a joiner): it landed.
                Some(id) => Some(id.clone()),
                None => found.get(src.as_str()).map(|id| id.to_string()),
            };
            if let Some(id) = &id {
                links.insert(src.clone(), id.clone());
            }
            super::SettledCreate {
                source_id: src.clone(),
                user_name: user_name.clone(),
                run_id: run_id.clone(),
                ironclad_id: id,
            }
        })
        .collect();
    (std::borrow::Cow::Owned(links), settled)
}

/// Finds [`MANAGER_HINT`] in a desired user's text.
static HINT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(MANAGER_HINT));

/// Sets `manager.value` from the manager's externalId: the Ironclad id of the linked (or
/// externalId-carrying) manager. A manager not in Ironclad yet is left out of this run's
/// comparison; for a joiner, apply resolves it when the manager's own create has landed (the
/// `__manager_external_id` hint is never sent).
fn resolve_managers(desired: &mut [DesiredUser], users: &[IroncladUser], links: &LinkMap) {
    let by_ext: foldhash::HashMap<&str, &str> = users
        .iter()
        .filter_map(|u| Some((u.external_id.as_deref()?, &*u.id)))
        .collect();
    use crate::mapping::target::ENTERPRISE_SCHEMA as ENT;
    let path = format!("{ENT}:manager");
    for d in desired {
        let Desired::Wanted { user, policies } = &mut d.state else {
            continue;
        };
        // Only users carrying the hint are parsed (and written back).
        if HINT.find(user.as_str().as_bytes()).is_none() {
            continue;
        }
        let mut tree = user.parse();
        let Some(obj) = tree.as_object_mut() else {
            continue;
        };
        let Some(Value::String(m)) = obj.get(MANAGER_HINT).cloned() else {
            continue;
        };
        let id = links
            .get(&m)
            .map(String::as_str)
            .or_else(|| by_ext.get(m.as_str()).copied());
        match id {
            Some(id) => {
                obj.remove(MANAGER_HINT);
                let ent = obj
                    .entry(ENT)
                    .or_insert_with(|| Value::Object(Default::default()));
                ent["manager"] = serde_json::json!({ "value": id });
            }
            None => {
                if let Some(ent) = obj.get_mut(ENT).and_then(Value::as_object_mut) {
                    ent.remove("manager");
                }
                if policies.contains_key(&path) {
                    Arc::make_mut(policies).remove(&path);
                }
            }
        }
        *user = JsonText::new(&tree);
    }
}

/// The planner's form of a mapping attribute's apply policy.
fn policy_of(apply: Apply) -> super::ApplyPolicy {
    match apply {
        Apply::Always => super::ApplyPolicy::Always,
        Apply::OnCreate => super::ApplyPolicy::OnCreate,
        Apply::IfEmpty => super::ApplyPolicy::IfEmpty,
    }
}

/// The key carrying a joiner's manager (as a correlation key) from the plan to apply.
pub const MANAGER_HINT: &str = "__manager_external_id";

/// `only`, plus the source id of each desired user and the userName of each Ironclad user
/// with an email address in `only` (case-insensitive), so that [`restrict`] finds people named
/// by an email that is not their userName.
pub fn with_email_matches(
    only: &BTreeSet<String>,
    desired: &[DesiredUser],
    ironclad: &[IroncladUser],
) -> BTreeSet<String> {
    let named: BTreeSet<String> = only.iter().map(|s| s.trim().to_lowercase()).collect();
    let is_named = |e: &str| named.contains(&e.trim().to_lowercase());
    let mut out = only.clone();
    for d in desired {
        if let Desired::Wanted { user, .. } = &d.state {
            if user.emails().iter().any(|e| is_named(e)) {
                out.insert(d.source_id.to_string());
            }
        }
    }
    for u in ironclad {
        if u.emails.iter().any(|e| is_named(e)) {
            out.insert(u.id.to_string());
            if !u.user_name.is_empty() {
                out.insert(u.user_name.to_string());
            }
        }
    }
    out
}

/// Names as [`names_line`] takes them: trimmed and lowercased.
fn lowered(names: &BTreeSet<String>) -> BTreeSet<String> {
    names.iter().map(|s| s.trim().to_lowercase()).collect()
}

/// Whether one of `lowered` (see [`lowered`]) is the line's source id, userName, Ironclad id
/// or DN, in any case.
fn names_line(lowered: &BTreeSet<String>, u: &super::UserPlan) -> bool {
    let is = |s: &str| lowered.contains(&s.to_lowercase());
    u.source_id.as_deref().is_some_and(is)
        || is(&u.user_name)
        || u.ironclad_id.as_deref().is_some_and(is)
        || u.locator.as_deref().is_some_and(is)
}

/// The names among `only` that name no line of `plan` (see [`restrict`]; emails are not
/// looked up here).
pub fn names_matching_nobody<'a>(plan: &Plan, only: &'a BTreeSet<String>) -> Vec<&'a str> {
    naming_nobody(
        plan,
        only.iter()
            .map(|n| (n.as_str(), lowered(&BTreeSet::from([n.clone()])))),
    )
}

/// The names whose set (see [`lowered`]) names no line of `plan`.
fn naming_nobody<'a>(
    plan: &Plan,
    named: impl IntoIterator<Item = (&'a str, BTreeSet<String>)>,
) -> Vec<&'a str> {
    named
        .into_iter()
        .filter(|(_, set)| !plan.users.iter().any(|u| names_line(set, u)))
        .map(|(n, _)| n)
        .collect()
}

/// Keeps only the people named (source id, userName or email, case-insensitive); groups are
/// left out of a targeted run unless they contain a named person.
pub fn restrict(plan: &mut Plan, only: &BTreeSet<String>) {
    let only = lowered(only);
    plan.users.retain(|u| names_line(&only, u));
    let ids: BTreeSet<String> = plan
        .users
        .iter()
        .filter_map(|u| u.source_id.as_deref().map(str::to_string))
        .collect();
    for g in &mut plan.groups {
        g.add.retain(|m| ids.contains(m));
        g.remove.retain(|m| {
            plan.users
                .iter()
                .any(|u| u.ironclad_id.as_deref() == Some(m))
        });
    }
    plan.groups
        .retain(|g| !g.add.is_empty() || !g.remove.is_empty());
    plan.summary = super::plan::summarize(&plan.users, &plan.groups);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn people_named_by_an_email_that_is_not_their_user_name_are_found() {
        let wanted = |id: &str, mail: &str| DesiredUser {
            source_id: id.into(),
            locator: format!("uid={id},dc=example").into(),
            state: Desired::Wanted {
                user: json!({"userName": format!("{id}@corp"), "emails": [{"value": mail}]}).into(),
                policies: Default::default(),
            },
        };
        let desired = vec![
            wanted("s1", "Ann.Lee@Example.com"),
            wanted("s2", "bo@example.com"),
        ];
        let ironclad = [
            json!({"id": "ic9", "userName": "gone@corp", "emails": [{"value": "left@example.com"}]}),
            json!({"id": "ic2", "userName": "s2@corp", "emails": [{"value": "bo@example.com"}]}),
        ];
        let only: BTreeSet<String> = ["ann.lee@example.com", "LEFT@example.com"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ironclad: Vec<IroncladUser> = ironclad
            .iter()
            .filter_map(IroncladUser::from_value)
            .collect();
        let got = with_email_matches(&only, &desired, &ironclad);
        assert!(got.contains("s1"), "{got:?}");
        assert!(got.contains("ic9") && got.contains("gone@corp"), "{got:?}");
        assert!(!got.contains("s2") && !got.contains("ic2"), "{got:?}");
        assert!(got.is_superset(&only));
    }

    /// Desired users from a snapshot, with its users' attributes taken out first (as a run
    /// does when the mapping allows) or left in place.
    fn desired_both_ways(mapping: &str) -> (Vec<DesiredUser>, Vec<DesiredUser>) {
        let mapping =
            Mapping::from_text(std::path::Path::new("test.toml"), mapping).expect("mapping");
        let mut snap = Snapshot {
            source: "test".into(),
            read_at: Utc::now(),
            users: Vec::new(),
            groups: Vec::new(),
        };
        // Enough people for the evaluation to run on several threads.
        for i in 0..1500 {
            let mut attrs = crate::model::Attributes::new();
            attrs.push("uid", format!("u{i}"));
            attrs.push("mail", format!("U{i}@Example.com"));
            if i % 7 == 0 {
                attrs.push("title", "Lead");
            }
            attrs.push("manager", format!("uid=u{},dc=example", i / 2));
            snap.users.push(crate::model::Entry {
                id: format!("id{i}"),
                locator: format!("uid=u{i},dc=example"),
                attrs,
            });
        }
        let now = Utc::now();
        let kept = desired_from(&mapping, &Arc::new(snap.clone()), None, now).expect("kept");
        let taken: Vec<_> = snap
            .users
            .iter_mut()
            .map(|e| std::sync::Mutex::new(std::mem::take(&mut e.attrs)))
            .collect();
        let taken = desired_from(&mapping, &Arc::new(snap), Some(&taken), now).expect("taken");
        (kept.users, taken.users)
    }

    /// An entry one of whose attributes fails is keyed by its externalId when that can still
    /// be computed (so its linked Ironclad user is not taken for a leaver); otherwise by its
    /// source id, marked as such.
    #[test]
    fn an_entry_the_mapping_fails_on_is_keyed_by_its_external_id_when_known() {
        let mapping = |external_id: &str| {
            format!(
                r#"
version = 1
[scope]
default = "include"
[correlation]
external_id = "{external_id}"
[attributes]
userName = "attr.mail | lower"
title = "(attr.title | as_bool) and 'x' or none"
"#
            )
        };
        let failed = |d: &[DesiredUser]| -> Vec<(String, bool)> {
            d.iter()
                .filter_map(|d| match d.state {
                    Desired::Failed {
                        identity_unknown, ..
                    } => Some((d.source_id.to_string(), identity_unknown)),
                    _ => None,
                })
                .collect()
        };
        let (kept, taken) = desired_both_ways(&mapping("attr.uid"));
        assert_eq!(kept, taken);
        let f = failed(&kept);
        assert_eq!(f.len(), 1500_usize.div_ceil(7));
        assert!(
            f.iter()
                .all(|(key, unknown)| key.starts_with('u') && !unknown),
            "{f:?}"
        );
        let (kept, taken) =
            desired_both_ways(&mapping("attr.uid ~ ((attr.title | as_bool) and '' or '')"));
        assert_eq!(kept, taken);
        let f = failed(&kept);
        assert_eq!(f.len(), 1500_usize.div_ceil(7));
        assert!(
            f.iter()
                .all(|(key, unknown)| key.starts_with("id") && *unknown),
            "{f:?}"
        );
    }

    #[test]
    fn taking_the_attributes_out_before_the_mapping_changes_no_desired_user() {
        let (kept, taken) = desired_both_ways(
            r#"
version = 1
[scope]
default = "include"
[[scope.rules]]
action = "exclude"
when = "attr.title == 'Lead'"
[correlation]
external_id = "id"
[attributes]
userName = "attr.mail | lower"
emails = "attrs.mail | map('lower') | list"
"#,
        );
        assert_eq!(kept.len(), 1500);
        assert_eq!(kept, taken);
        let wanted = kept
            .iter()
            .filter(|d| matches!(d.state, Desired::Wanted { .. }))
            .count();
        assert_eq!(wanted, 1500 - 1500_usize.div_ceil(7));
    }

    #[test]
    fn a_mapping_that_looks_other_entries_up_reads_other_entries() {
        let text = r#"
version = 1
[scope]
default = "include"
[correlation]
external_id = "id"
[attributes]
userName = "attr.mail | lower"
title = "lookup(attr.manager, 'mail')"
"#;
        let mapping = Mapping::from_text(std::path::Path::new("test.toml"), text).expect("mapping");
        assert!(mapping.reads_other_entries());
        // Run the way an engine never would (attributes taken despite the lookup), the
        // managers' attributes are gone: which is why the engine keeps them for such mappings.
        let (kept, taken) = desired_both_ways(text);
        assert_ne!(kept, taken);
    }
}
