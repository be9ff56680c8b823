//! Reconciliation: compare who should be in Ironclad with who is, and decide one action per
//! person and per group. [`plan::plan`] is a pure function of its [`PlanInput`] (no I/O, the
//! clock passed in), so a dry run is exactly the plan `apply` would execute and every
//! joiner/mover/leaver case is a fast unit test.
//!
//! Layout: [`attrs`] (attribute paths and normalised comparison), [`users`] (the compact forms
//! of desired and Ironclad users a run keeps), [`plan`] (the pure planner and its safety
//! rules), [`engine`] (one run: read, plan, apply, record), [`apply`] (the writes, in phases,
//! audited), [`progress`] (bars on a terminal, structured progress lines otherwise), [`par`]
//! (work over many people split across a few threads, results in order).
//! What does not live here: the sources, the Ironclad client, the reports.

pub mod apply;
pub mod attrs;
pub mod engine;
pub mod par;
pub mod plan;
pub mod progress;
pub mod users;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Frees what a run no longer needs on a thread of its own: freeing 100,000 people's data
/// takes tens of milliseconds that the run need not wait for (and that the CLI, which exits
/// once its output is written, never waits for). If no thread can be started, the closure,
/// and `x` with it, is dropped here.
pub fn drop_aside<T: Send + 'static>(x: T) {
    let _ = std::thread::Builder::new()
        .name("ironbridge-free".into())
        .spawn(move || drop(x));
}

/// When a managed attribute is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyPolicy {
    /// On create and on every update.
    Always,
    /// Only when the user is created.
    OnCreate,
    /// When Ironclad's value is empty.
    IfEmpty,
}

/// One source entry, as the mapping judged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredUser {
    /// Stable source id (becomes `externalId`). Shared with the plan line made from it.
    pub source_id: Arc<str>,
    /// DN or URL, for reports. Shared with the plan line made from it.
    pub locator: Arc<str>,
    /// What the mapping decided.
    pub state: Desired,
}

/// The mapping's verdict on one entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Desired {
    /// Should exist in Ironclad with these managed attributes.
    Wanted {
        /// The desired SCIM user (managed attributes only, `externalId` included), as compact
        /// JSON text: the planner reads it one user at a time.
        user: users::JsonText,
        /// Apply policy per managed attribute path (shared by every user of a mapping).
        policies: std::sync::Arc<BTreeMap<String, ApplyPolicy>>,
    },
    /// Should not be in Ironclad (out of scope, disabled).
    NotWanted {
        /// Which rule said so.
        reason: String,
    },
    /// The mapping failed for this entry; the entry is left alone this run.
    Failed {
        /// The error, naming the attribute.
        error: String,
        /// The externalId could not be computed either, so the entry is keyed by its source
        /// id and the Ironclad user linked to it cannot be told apart from a leaver: no one
        /// is removed for being absent from the source in this run.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        identity_unknown: bool,
    },
}

/// A source group the mapping selected, with its members as source ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredGroup {
    /// Stable source id of the group (becomes the Ironclad group's `externalId`).
    pub source_id: String,
    /// DN or URL.
    pub locator: String,
    /// Ironclad displayName.
    pub display_name: String,
    /// Member user source ids.
    pub members: BTreeSet<String>,
}

/// Safety and behaviour settings the planner applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanPolicy {
    /// Create joiners.
    pub create_users: bool,
    /// Update movers.
    pub update_users: bool,
    /// How leavers go.
    pub remove: crate::config::RemoveMode,
    /// Push groups and membership.
    pub manage_groups: bool,
    /// Fallback keys used to find an unlinked account, in order: `userName`, `email`.
    pub fallback_keys: Vec<String>,
    /// The configuration's acting user (`x-as-user-email`): never touched.
    pub acting_user: Option<String>,
    /// Further userNames never touched (exact, case-insensitive) or glob patterns (`*`, `?`).
    pub protected: Vec<String>,
    /// Maximum removals per run as a count.
    pub max_removals: usize,
    /// Maximum removals per run as a percentage of managed users.
    pub max_removal_percent: f64,
    /// Removals the operator allowed beyond the threshold for this run (`--allow-removals N`).
    pub allow_removals: usize,
    /// Consecutive runs a person must be missing before removal (0 = at once).
    pub grace_runs: u32,
    /// Or how long they must be missing.
    pub grace_period: Option<chrono::Duration>,
}

impl Default for PlanPolicy {
    fn default() -> Self {
        PlanPolicy {
            create_users: true,
            update_users: true,
            remove: crate::config::RemoveMode::Delete,
            manage_groups: true,
            fallback_keys: vec!["userName".into(), "email".into()],
            acting_user: None,
            protected: Vec::new(),
            max_removals: 50,
            max_removal_percent: 10.0,
            allow_removals: 0,
            grace_runs: 0,
            grace_period: None,
        }
    }
}

/// A predicate saying whether a userName is protected (the mapping's `[removal]` rules).
pub type ProtectedFn<'a> = &'a (dyn Fn(&str) -> bool + Send + Sync);

/// Everything the planner looks at. No I/O happens inside [`plan::plan`].
#[derive(Clone)]
pub struct PlanInput<'a> {
    /// One verdict per source entry; `None` when the source read failed.
    pub desired: Option<&'a [DesiredUser]>,
    /// Groups the mapping selected (empty when groups are not managed).
    pub desired_groups: &'a [DesiredGroup],
    /// Groups the mapping selects but could not evaluate: while there are any, no managed
    /// group is deleted for being absent (it may be one of them).
    pub group_errors: &'a [String],
    /// Why the source's users listing was cut short, when it was: `desired` then holds only
    /// the people read, and nobody is removed (users, group members or groups).
    pub source_incomplete: Option<&'a str>,
    /// Every Ironclad user as read.
    pub ironclad_users: &'a [users::IroncladUser],
    /// Every Ironclad group as read.
    pub ironclad_groups: &'a [Value],
    /// Links from the state store: source id -> Ironclad id (users).
    pub user_links: &'a LinkMap,
    /// Links from the state store: source id -> Ironclad id (groups).
    pub group_links: &'a BTreeMap<String, String>,
    /// Settings.
    pub policy: &'a PlanPolicy,
    /// Granted scopes.
    pub granted: &'a BTreeSet<String>,
    /// Quarantined source ids: until when they are skipped, and why (their failed runs and
    /// last error, for the report).
    pub quarantined: &'a BTreeMap<String, (DateTime<Utc>, String)>,
    /// Grace counters: source id -> (first missing, runs missing so far, this run excluded).
    pub grace: &'a BTreeMap<String, (DateTime<Utc>, u32)>,
    /// Now.
    pub now: DateTime<Utc>,
    /// Protected userNames beyond `policy.protected` (the mapping's rules), if any.
    pub protected_fn: Option<ProtectedFn<'a>>,
    /// Fingerprints of users an earlier run found converged. A linked user whose fingerprint
    /// is among them is a no-op without being compared: a fingerprint hashes everything the
    /// comparison reads (the desired user, the apply policies, the Ironclad id and version), so
    /// a match stands for the very comparison found converged before, whoever recorded it.
    /// `None` (`full_compare`): every linked user is compared and none is fingerprinted.
    pub converged: Option<&'a foldhash::HashSet<Fingerprint>>,
    /// The desired users' names, when built beforehand ([`plan::DesiredNames::new`] of
    /// `desired`); `None`: the planner builds them.
    pub desired_names: Option<&'a plan::DesiredNames>,
    /// The Ironclad users' index, when built beforehand ([`plan::TargetIndex::new`] of
    /// `ironclad_users`); the planner builds it when absent or built for another listing.
    pub target_index: Option<&'a plan::TargetIndex>,
}

/// Links from the state store: source id -> Ironclad id.
pub type LinkMap = foldhash::HashMap<String, String>;

/// What a linked user's comparison depended on, hashed: this build, the managed attributes'
/// policies, the desired user as text, and the Ironclad user's id and `meta.lastModified`.
/// Equal fingerprints mean the comparison would again find nothing to change.
pub type Fingerprint = [u8; 16];

/// One attribute's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrChange {
    /// Attribute path.
    pub path: String,
    /// Ironclad's value now (`null` when absent).
    pub before: Value,
    /// The value to write (`null` removes it).
    pub after: Value,
}

/// Why something is skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// Not in scope and not in Ironclad.
    OutOfScope {
        /// The rule that decided.
        rule: String,
    },
    /// A protected account.
    Protected {
        /// What protects it, in words: the acting user, the mapping's protected list, or
        /// `matches PATTERN`.
        pattern: String,
    },
    /// Failing repeatedly; retried later.
    Quarantined {
        /// Not before.
        until: DateTime<Utc>,
        /// The failed runs in a row and the last error.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        why: String,
    },
    /// The token lacks a scope.
    MissingScope {
        /// The scope.
        scope: String,
    },
    /// Held back by a safety rule.
    Held {
        /// Which rule, in words.
        rule: String,
    },
    /// Waiting out the grace period.
    Grace {
        /// Runs missing so far, this one included.
        missed_runs: u32,
        /// Runs needed.
        needed_runs: u32,
        /// With `grace_hours`: removal not before this time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<DateTime<Utc>>,
    },
    /// The policy turns this action off.
    Disabled {
        /// Which policy key.
        policy: String,
    },
    /// The mapping failed for the entry.
    MappingError {
        /// The error.
        error: String,
    },
    /// A line of a saved plan refused when it was applied: its object changed in Ironclad
    /// since, or the configuration as it is now no longer allows it.
    Refused {
        /// The action the plan had for the line (`update`, `remove`, ...).
        action: String,
        /// Why.
        why: String,
    },
}

/// What happens to one person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum UserAction {
    /// Create in Ironclad.
    Create {
        /// The full user to POST.
        user: Value,
    },
    /// Link an existing unlinked account found by a fallback key and set its externalId.
    Adopt {
        /// Which key matched.
        matched_by: String,
        /// Changes (externalId included).
        changes: Vec<AttrChange>,
    },
    /// Update managed attributes.
    Update {
        /// Changes.
        changes: Vec<AttrChange>,
    },
    /// userName change of a linked user (same Ironclad id), with any other changes.
    Rename {
        /// Old userName.
        from: String,
        /// New userName.
        to: String,
        /// Changes (userName included).
        changes: Vec<AttrChange>,
    },
    /// Remove from Ironclad.
    Remove {
        /// DELETE or `active: false`.
        how: crate::config::RemoveMode,
        /// Why the person is no longer wanted.
        reason: String,
    },
    /// Already right.
    Noop,
    /// Not acted on.
    Skip {
        /// Why.
        reason: SkipReason,
    },
    /// Cannot be decided safely; reported, never applied.
    Conflict {
        /// What conflicts.
        reason: String,
    },
}

impl UserAction {
    /// The action's name as used in summaries.
    pub fn name(&self) -> &'static str {
        match self {
            UserAction::Create { .. } => "create",
            UserAction::Adopt { .. } => "adopt",
            UserAction::Update { .. } => "update",
            UserAction::Rename { .. } => "rename",
            UserAction::Remove { .. } => "remove",
            UserAction::Noop => "noop",
            UserAction::Skip { .. } => "skip",
            UserAction::Conflict { .. } => "conflict",
        }
    }
    /// Whether applying it writes to Ironclad.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            UserAction::Create { .. }
                | UserAction::Adopt { .. }
                | UserAction::Update { .. }
                | UserAction::Rename { .. }
                | UserAction::Remove { .. }
        )
    }
}

/// One person's line in the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPlan {
    /// Source id, when the person is in the source (shared with the desired user).
    pub source_id: Option<Arc<str>>,
    /// DN or URL, when in the source (shared with the desired user).
    pub locator: Option<Arc<str>>,
    /// userName (desired, else as in Ironclad).
    pub user_name: String,
    /// Ironclad id, when the person exists there.
    pub ironclad_id: Option<String>,
    /// What happens.
    #[serde(flatten)]
    pub action: UserAction,
    /// Ironclad's `meta.lastModified` as read (a saved plan refuses objects changed since).
    pub seen_version: Option<String>,
    /// The Ironclad user as read (kept so a PUT can carry unmanaged attributes unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen: Option<Value>,
    /// For a removal held back by a safety rule: the removal that would run. Applying a
    /// reviewed saved plan carries it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_action: Option<Box<UserAction>>,
}

/// What happens to one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum GroupAction {
    /// Create the group (members added in the membership phase).
    Create,
    /// Rename (same id).
    Rename {
        /// Old displayName.
        from: String,
    },
    /// Change membership.
    Members,
    /// Nothing to do.
    Noop,
    /// Delete a bridge-managed group no longer selected.
    Delete,
    /// Not acted on.
    Skip {
        /// Why.
        reason: SkipReason,
    },
    /// Cannot be decided safely.
    Conflict {
        /// What conflicts.
        reason: String,
    },
}

/// One group's line in the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupPlan {
    /// Source id of the group, when selected.
    pub source_id: Option<String>,
    /// Desired (or current) displayName.
    pub display_name: String,
    /// Ironclad id, when it exists.
    pub ironclad_id: Option<String>,
    /// What happens.
    #[serde(flatten)]
    pub action: GroupAction,
    /// Members to add, as source user ids.
    pub add: Vec<String>,
    /// Members to remove, as Ironclad user ids.
    pub remove: Vec<String>,
    /// Members the source wants who are not in Ironclad and whom this run does not create
    /// (their own line says why: a missing scope, creates turned off, quarantine, ...), as
    /// source user ids. Shown, never applied: they are added once they exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// `meta.lastModified` as read.
    pub seen_version: Option<String>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Whether the source read was complete.
    pub source_complete: bool,
    /// Why the users listing was cut short, when the run went on with the people read
    /// (`source_complete` is then false and nobody is removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_incomplete: Option<String>,
    /// People.
    pub users: Vec<UserPlan>,
    /// Groups.
    pub groups: Vec<GroupPlan>,
    /// Counts per action (users), plus `held` and `conflict`.
    pub summary: BTreeMap<String, usize>,
    /// Safety notes (thresholds tripped, source incomplete).
    pub notes: Vec<String>,
    /// Linked users this plan compared and found converged, with their fingerprints, for the
    /// state store (not part of a saved plan or report).
    #[serde(skip)]
    pub converged: Vec<(String, Fingerprint)>,
    /// Creates an earlier run sent without learning their outcome (the process stopped before
    /// the answer), as this plan found them in Ironclad: apply records each outcome (and the
    /// link of the ones that landed) before anything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settled_creates: Vec<SettledCreate>,
    /// With a state store that links nobody yet: the Ironclad users carrying an externalId no
    /// source entry has. If the store was lost, they are people ironbridge created who left
    /// since, and nothing will remove them: someone must look (the exit code says so).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unlinked_with_external_id: usize,
}

pub(crate) fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Resolves once `flag` is set (checked every 50 ms: stops are rare and need no wake-up).
pub(crate) async fn when_set(flag: &std::sync::atomic::AtomicBool) {
    while !flag.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A create whose outcome an earlier run never learned, settled by what Ironclad holds now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettledCreate {
    /// The person's source id (the externalId the create set).
    pub source_id: String,
    /// The userName the create sent.
    pub user_name: String,
    /// The run that sent it.
    pub run_id: String,
    /// The Ironclad user carrying the source id as externalId: the create landed. `None`:
    /// no user carries it, so it never did.
    pub ironclad_id: Option<String>,
}

impl Plan {
    /// Whether applying it would write anything.
    pub fn has_writes(&self) -> bool {
        self.users.iter().any(|u| u.action.writes())
            || self.groups.iter().any(|g| match g.action {
                GroupAction::Create | GroupAction::Rename { .. } | GroupAction::Delete => true,
                GroupAction::Members => !g.add.is_empty() || !g.remove.is_empty(),
                GroupAction::Noop | GroupAction::Skip { .. } | GroupAction::Conflict { .. } => {
                    false
                }
            })
    }
    /// Whether something was held back or is in conflict: a removal (of a user or a group)
    /// held by a safety rule, a quarantined user, a person the mapping could not evaluate, a
    /// user write the token's scopes do not allow, a conflict, or a new state store facing
    /// Ironclad users with externalIds it cannot place. Each needs someone to look
    /// (the exit code says so), where a run that only waits (grace) or skips by rule (out of
    /// scope, protected, turned off by policy) does not.
    pub fn has_held(&self) -> bool {
        let users = self.users.iter().any(|u| {
            matches!(
                u.action,
                UserAction::Skip {
                    reason: SkipReason::Held { .. }
                        | SkipReason::Quarantined { .. }
                        | SkipReason::MappingError { .. }
                        | SkipReason::MissingScope { .. }
                } | UserAction::Conflict { .. }
            )
        });
        users
            || self.unlinked_with_external_id > 0
            || self.groups.iter().any(|g| {
                matches!(
                    g.action,
                    GroupAction::Skip {
                        reason: SkipReason::Held { .. }
                    } | GroupAction::Conflict { .. }
                )
            })
    }
}
