//! The planner: a pure function from [`PlanInput`] to [`Plan`]. It matches each source entry to
//! an Ironclad user (store link, then `externalId`, then the fallback keys), decides one action
//! per person and per group, and applies the safety rules: a failed source read plans no
//! removals; removals over the threshold are all held; grace periods delay removals; protected,
//! unmanaged and quarantined accounts are never written.
//!
//! What does not live here: I/O of any kind (reading, writing, the clock), and rendering.

use super::attrs;
use super::users::IroncladUser;
use super::{
    ApplyPolicy, AttrChange, Desired, DesiredUser, Fingerprint, GroupAction, GroupPlan, Plan,
    PlanInput, PlanPolicy, SkipReason, UserAction, UserPlan,
};
use crate::check::scopes;
use crate::config::RemoveMode;
use chrono::{DateTime, Utc};
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Ironclad users by id, externalId, userName and email address (the last two as compared, see
/// [`name_key`]). Holds positions in the listing only, four bytes a key, so it borrows nothing:
/// the engine builds it beside the listing, before planning starts.
#[derive(Clone)]
pub struct TargetIndex {
    /// Listed users indexed (the index fits only that listing).
    len: usize,
    by_id: hashbrown::HashTable<u32>,
    by_external_id: hashbrown::HashTable<u32>,
    by_user_name: hashbrown::HashTable<u32>,
    /// User position and the position of the address among its emails.
    by_email: hashbrown::HashTable<(u32, u32)>,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for TargetIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TargetIndex({} users)", self.len)
    }
}

/// Puts `pos` under its key in `table`: the key is read back from a position by `key_at`, so
/// none is copied. With `last`, a later position takes the key over (as a map insert would);
/// without, the first one keeps it.
fn put<'u, T: Copy>(
    table: &mut hashbrown::HashTable<T>,
    hasher: &foldhash::fast::RandomState,
    key: &str,
    pos: T,
    last: bool,
    key_at: impl Fn(T) -> Option<Cow<'u, str>>,
) {
    use std::hash::BuildHasher as _;
    let hash = hasher.hash_one(key);
    match table.entry(
        hash,
        |p| key_at(*p).as_deref() == Some(key),
        |p| hasher.hash_one(key_at(*p).unwrap_or_default().as_ref()),
    ) {
        hashbrown::hash_table::Entry::Vacant(v) => {
            v.insert(pos);
        }
        hashbrown::hash_table::Entry::Occupied(mut o) if last => *o.get_mut() = pos,
        hashbrown::hash_table::Entry::Occupied(_) => {}
    }
}

impl TargetIndex {
    /// The index of `users`.
    pub fn new(users: &[IroncladUser]) -> Self {
        let n = users.len();
        let mut t = TargetIndex {
            len: n,
            by_id: hashbrown::HashTable::with_capacity(n),
            by_external_id: hashbrown::HashTable::with_capacity(n),
            by_user_name: hashbrown::HashTable::with_capacity(n),
            by_email: hashbrown::HashTable::with_capacity(n),
            hasher: Default::default(),
        };
        let user = |p: u32| users.get(p as usize);
        for (pos, u) in users.iter().enumerate() {
            let Ok(pos) = u32::try_from(pos) else { break };
            let id = |p| user(p).map(|u| Cow::Borrowed(&*u.id));
            put(&mut t.by_id, &t.hasher, &u.id, pos, true, id);
            if !u.user_name.is_empty() {
                let name = |p| user(p).map(|u| name_key(&u.user_name));
                put(
                    &mut t.by_user_name,
                    &t.hasher,
                    &name_key(&u.user_name),
                    pos,
                    true,
                    name,
                );
            }
            for (i, e) in u.emails.iter().enumerate() {
                let Ok(i) = u32::try_from(i) else { break };
                let email = |(p, i): (u32, u32)| {
                    let e = user(p)?.emails.get(i as usize)?;
                    Some(name_key(e))
                };
                put(
                    &mut t.by_email,
                    &t.hasher,
                    &name_key(e),
                    (pos, i),
                    false,
                    email,
                );
            }
            if let Some(x) = u.external_id.as_deref() {
                let ext = |p| user(p).and_then(|u| u.external_id.as_deref().map(Cow::Borrowed));
                put(&mut t.by_external_id, &t.hasher, x, pos, true, ext);
            }
        }
        t
    }
}

/// Indexes of the Ironclad snapshot: its users and their [`TargetIndex`].
struct Target<'a> {
    users: &'a [IroncladUser],
    index: Cow<'a, TargetIndex>,
}

impl<'a> Target<'a> {
    /// `users` with `index` when it was built for them, else with one built now.
    fn new(users: &'a [IroncladUser], index: Option<&'a TargetIndex>) -> Self {
        let index = match index {
            Some(i) if i.len == users.len() => Cow::Borrowed(i),
            _ => Cow::Owned(TargetIndex::new(users)),
        };
        Target { users, index }
    }

    fn hash(&self, key: &str) -> u64 {
        use std::hash::BuildHasher as _;
        self.index.hasher.hash_one(key)
    }

    fn at(&self, pos: u32) -> Option<&'a IroncladUser> {
        self.users.get(pos as usize)
    }

    /// The user with this id.
    fn user(&self, id: &str) -> Option<&'a IroncladUser> {
        let pos = self
            .index
            .by_id
            .find(self.hash(id), |p| self.at(*p).is_some_and(|u| &*u.id == id))?;
        self.at(*pos)
    }

    /// Every id listed, once.
    fn ids(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.index
            .by_id
            .iter()
            .filter_map(|p| self.at(*p))
            .map(|u| &*u.id)
    }

    /// The id of the user with this id, borrowed from the listing.
    fn id(&self, id: &str) -> Option<&'a str> {
        self.user(id).map(|u| &*u.id)
    }

    /// The id of the user carrying this externalId.
    fn by_external_id(&self, x: &str) -> Option<&'a str> {
        let pos = self.index.by_external_id.find(self.hash(x), |p| {
            self.at(*p).and_then(|u| u.external_id.as_deref()) == Some(x)
        })?;
        self.at(*pos).map(|u| &*u.id)
    }

    /// The id of the user with this userName (a [`name_key`]).
    fn by_user_name(&self, key: &str) -> Option<&'a str> {
        let pos = self.index.by_user_name.find(self.hash(key), |p| {
            self.at(*p).is_some_and(|u| name_key(&u.user_name) == key)
        })?;
        self.at(*pos).map(|u| &*u.id)
    }

    /// The id of the first user listing this email address (a [`name_key`]).
    fn by_email(&self, key: &str) -> Option<&'a str> {
        let (pos, _) = self.index.by_email.find(self.hash(key), |(p, i)| {
            self.at(*p)
                .and_then(|u| u.emails.get(*i as usize))
                .is_some_and(|e| name_key(e) == key)
        })?;
        self.at(*pos).map(|u| &*u.id)
    }
}

/// A userName or email address as compared: trimmed and lower-cased (borrowed when it
/// already is).
pub(crate) fn name_key(s: &str) -> Cow<'_, str> {
    let t = s.trim();
    if t.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        Cow::Borrowed(t)
    } else {
        Cow::Owned(t.to_lowercase())
    }
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn version(v: &Value) -> Option<String> {
    super::users::last_modified(v).map(str::to_string)
}

fn emails_of(v: &Value) -> Vec<String> {
    super::users::emails_of(v)
        .into_iter()
        .map(|e| e.trim().to_lowercase())
        .collect()
}

/// Protected-account matcher: exact names (case-insensitive) and glob patterns.
pub(crate) struct Protected<'a> {
    acting_user: Option<&'a str>,
    patterns: Vec<(String, Option<glob::Pattern>)>,
    extra: Option<super::ProtectedFn<'a>>,
}

impl<'a> Protected<'a> {
    pub(crate) fn new(
        policy: &'a super::PlanPolicy,
        extra: Option<super::ProtectedFn<'a>>,
    ) -> Self {
        let list = &policy.protected;
        Protected {
            acting_user: policy.acting_user.as_deref(),
            extra,
            patterns: list
                .iter()
                .map(|p| {
                    let g = if p.contains(['*', '?', '[']) {
                        glob::Pattern::new(p).ok()
                    } else {
                        None
                    };
                    (p.clone(), g)
                })
                .collect(),
        }
    }
    /// What protects `user_name`, in words, if anything: the acting user, the mapping's list,
    /// or the matching pattern.
    pub(crate) fn matches(&self, user_name: &str) -> Option<String> {
        if let Some(a) = self.acting_user {
            if a.trim().eq_ignore_ascii_case(user_name.trim()) {
                return Some(
                    "the acting user ([ironclad] acting_user), whose account every request uses"
                        .to_string(),
                );
            }
        }
        if let Some(f) = self.extra {
            if f(user_name) {
                return Some("in the mapping's [removal] protected list".to_string());
            }
        }
        let opts = glob::MatchOptions {
            case_sensitive: false,
            ..Default::default()
        };
        self.patterns
            .iter()
            .find(|(p, g)| match g {
                Some(g) => g.matches_with(user_name.trim(), opts),
                None => p.trim().eq_ignore_ascii_case(user_name.trim()),
            })
            .map(|(p, _)| format!("matches {p}"))
    }
}

/// Changes needed to bring `current` to `desired` for the managed attributes. With
/// `keep_values` (a source read cut short), no value is cleared: an empty desired value may
/// come from another entry that was not read (a manager's `lookup`).
fn diff(
    desired: &Value,
    policies: &BTreeMap<String, ApplyPolicy>,
    current: &Value,
    keep_values: bool,
) -> Vec<AttrChange> {
    let mut out = Vec::new();
    let empty = |v: Option<&Value>| v.is_none_or(attrs::is_empty);
    for (path, policy) in policies {
        let want = attrs::get_ref(desired, path);
        let have = attrs::get_ref(current, path);
        if keep_values && empty(want) {
            continue;
        }
        let write = match policy {
            ApplyPolicy::OnCreate => false,
            ApplyPolicy::IfEmpty => empty(have) && !empty(want),
            ApplyPolicy::Always => !attrs::same_opt(path, want, have),
        };
        if write {
            out.push(AttrChange {
                path: path.clone(),
                before: have.cloned().unwrap_or(Value::Null),
                after: want.cloned().unwrap_or(Value::Null),
            });
        }
    }
    out
}

fn has(granted: &BTreeSet<String>, scope: &str) -> bool {
    granted.contains(scope)
}

/// The userName each desired entry wants (trimmed), and how many entries want each one
/// (compared case-insensitively). The planner builds it when not given one; the engine builds
/// it beforehand, while the Ironclad listing is still being read.
#[derive(Default)]
pub struct DesiredNames {
    names: Vec<Option<Box<str>>>,
    /// Per distinct [`name_key`]: the first entry wanting it and how many do. The key is read
    /// back from `names`, so none is copied.
    counts: hashbrown::HashTable<(u32, u32)>,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for DesiredNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DesiredNames({} entries)", self.names.len())
    }
}

impl DesiredNames {
    /// The names of `desired`, in its order. The names are read out of the users' JSON on
    /// several threads; only the counting is sequential.
    pub fn new(desired: &[DesiredUser]) -> Self {
        let mut out = DesiredNames {
            names: Vec::with_capacity(desired.len()),
            counts: hashbrown::HashTable::with_capacity(desired.len()),
            hasher: Default::default(),
        };
        let name_of = |i: usize| -> Option<Box<str>> {
            match &desired.get(i)?.state {
                Desired::Wanted { user, .. } => user.top_str("userName").map(|n| n.trim().into()),
                _ => None,
            }
        };
        super::par::map_in_order(desired.len(), &name_of, |name| out.push(name));
        out
    }

    /// Appends the next entry's name (`None` when it wants none) and counts it.
    fn push(&mut self, name: Option<Box<str>>) {
        use std::hash::BuildHasher as _;
        let Some(name) = name else {
            self.names.push(None);
            return;
        };
        // Past u32::MAX entries the list stays short, and the planner counts afresh.
        let Ok(pos) = u32::try_from(self.names.len()) else {
            return;
        };
        let key = name_key(&name);
        let names = &self.names;
        let key_at = |p: u32| {
            names
                .get(p as usize)
                .and_then(Option::as_deref)
                .map(name_key)
                .unwrap_or_default()
        };
        let hasher = &self.hasher;
        match self.counts.entry(
            hasher.hash_one(&*key),
            |(p, _)| key_at(*p) == key,
            |(p, _)| hasher.hash_one(&*key_at(*p)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => o.get_mut().1 += 1,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((pos, 1));
            }
        }
        drop(key);
        self.names.push(Some(name));
    }

    /// Entries named.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no entry is named.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The trimmed userName entry `i` wants ("" when none).
    fn name(&self, i: usize) -> &str {
        self.names
            .get(i)
            .and_then(Option::as_deref)
            .unwrap_or_default()
    }

    /// How many entries want `key` (a [`name_key`]).
    fn count(&self, key: &str) -> u32 {
        use std::hash::BuildHasher as _;
        let key_at = |p: u32| {
            self.names
                .get(p as usize)
                .and_then(Option::as_deref)
                .map(name_key)
                .unwrap_or_default()
        };
        self.counts
            .find(self.hasher.hash_one(key), |(p, _)| key_at(*p) == key)
            .map_or(0, |(_, n)| *n)
    }
}

/// Plans one reconciliation. Pure: the same input always gives the same plan.
pub fn plan<'a>(input: &PlanInput<'a>) -> Plan {
    let policy = input.policy;
    let target = Target::new(input.ironclad_users, input.target_index);
    let protected = Protected::new(policy, input.protected_fn);
    let mut users: Vec<UserPlan> = Vec::new();
    let mut notes = Vec::new();
    // Ironclad ids that a source entry accounts for (kept, updated, skipped, or removed).
    let mut accounted: HashSet<&str> = HashSet::new();

    let Some(desired) = input.desired else {
        notes.push(
            "nothing is planned for users (zero removals): the source could not be read, or its \
             mapping could not be applied (see the note above)"
                .to_string(),
        );
        return finish(input, users, Vec::new(), notes, Vec::new());
    };

    // Ironclad ids linked in the store (users the bridge manages), with their source ids.
    let link_by_id: HashMap<&str, &str> = input
        .user_links
        .iter()
        .map(|(src, id)| (id.as_str(), src.as_str()))
        .collect();
    // Two entries wanting one userName is a conflict for each of them.
    let built;
    let wanted_names = match input.desired_names {
        Some(n) if n.len() == desired.len() => n,
        _ => {
            built = DesiredNames::new(desired);
            &built
        }
    };
    let source_ids: HashSet<&str> = desired.iter().map(|d| &*d.source_id).collect();

    // One line per entry. Each line depends only on its entry and the indexes, so large runs
    // plan in chunks on several threads; the lines keep the entries' order.
    let plan_one = |i: usize, d: &'a DesiredUser| -> Line<'a> {
        let linked = input
            .user_links
            .get(&*d.source_id)
            .map(String::as_str)
            .filter(|id| target.user(id).is_some())
            .or_else(|| target.by_external_id(&d.source_id));
        let mut ids = [linked, None];
        let listed = linked.and_then(|id| target.user(id));
        // A user linked in the store whose fingerprint is the one recorded when a run last
        // found it converged needs no comparison (and no tree of either side).
        let fingerprint = match (&d.state, listed, input.converged) {
            (Desired::Wanted { user, policies }, Some(l), Some(_))
                if input.user_links.get(&*d.source_id).map(String::as_str) == Some(&*l.id) =>
            {
                fingerprint(user.as_str(), policies, l, input.now)
            }
            _ => None,
        };
        let known = fingerprint
            .as_ref()
            .is_some_and(|fp| input.converged.is_some_and(|c| c.contains(fp)));
        let quarantined = input
            .quarantined
            .get(&*d.source_id)
            .filter(|(until, _)| *until > input.now);
        // The one tree of this user the planner holds; dropped at the end of the iteration.
        let current_tree = if known && quarantined.is_none() {
            None
        } else {
            listed.map(IroncladUser::value)
        };
        let current = current_tree.as_ref();
        // Where apply needs it, the line keeps this tree (moved, not copied).
        let mut line = UserPlan {
            source_id: Some(d.source_id.clone()),
            locator: Some(d.locator.clone()),
            user_name: listed.map(|c| c.user_name.to_string()).unwrap_or_default(),
            ironclad_id: linked.map(str::to_string),
            action: UserAction::Noop,
            seen_version: listed.and_then(|c| c.version.as_deref().map(str::to_string)),
            // Filled below only where apply needs it (a copy per user of what Ironclad holds
            // would double the memory of a large no-op run).
            seen: None,
            held_action: None,
        };
        if let Some((until, why)) = quarantined {
            line.action = UserAction::Skip {
                reason: SkipReason::Quarantined {
                    until: *until,
                    why: why.clone(),
                },
            };
            // Named as the mapping wants it when no Ironclad user is linked yet (a create
            // that keeps failing).
            if line.user_name.is_empty() {
                if let Desired::Wanted { user, .. } = &d.state {
                    line.user_name = user.top_str("userName").unwrap_or_default();
                }
            }
            line.seen = current_tree;
            return (line, ids, None);
        }
        match &d.state {
            Desired::Failed { error, .. } => {
                line.action = UserAction::Skip {
                    reason: SkipReason::MappingError {
                        error: error.clone(),
                    },
                };
            }
            Desired::NotWanted { reason } => match current {
                Some(_) => {
                    line.action = UserAction::Remove {
                        how: policy.remove,
                        reason: reason.clone(),
                    }
                }
                None => {
                    line.action = UserAction::Skip {
                        reason: SkipReason::OutOfScope {
                            rule: reason.clone(),
                        },
                    };
                }
            },
            Desired::Wanted { .. } if known => {
                let want_name = wanted_names.name(i);
                line.action =
                    name_checks(want_name, &name_key(want_name), wanted_names, &protected)
                        .or_else(|| listed.and_then(|l| protected_skip(&protected, &l.user_name)))
                        .unwrap_or(UserAction::Noop);
                line.user_name = want_name.to_string();
            }
            Desired::Wanted { user, policies } => {
                let user = &user.parse();
                let want_name = s(user, "userName").unwrap_or_default().trim().to_string();
                line.user_name = want_name.clone();
                line.action = wanted_action(
                    input,
                    &target,
                    &protected,
                    wanted_names,
                    &source_ids,
                    &link_by_id,
                    d,
                    user,
                    policies,
                    current,
                    &mut line,
                );
                if let (UserAction::Adopt { .. }, Some(id)) = (&line.action, &line.ironclad_id) {
                    ids[1] = target.id(id);
                }
            }
        }
        let noop = matches!(line.action, UserAction::Noop);
        let linked_noop = noop && input.user_links.contains_key(&*d.source_id);
        if line.seen.is_none() && !linked_noop {
            line.seen = current_tree.or_else(|| listed.map(IroncladUser::value));
        }
        // Newly found converged: recorded so that the next run need not compare again. Not
        // from a source read cut short, whose comparison left out the values it would clear.
        let converged = fingerprint.filter(|_| noop && !known && input.source_incomplete.is_none());
        (line, ids, converged)
    };
    let mut converged = Vec::new();
    users.reserve_exact(desired.len());
    super::par::map_in_order(
        desired.len(),
        &|i| plan_one(i, &desired[i]),
        |(line, ids, fingerprint)| {
            accounted.extend(ids.into_iter().flatten());
            if let (Some(fp), Some(id)) = (fingerprint, &line.source_id) {
                converged.push((id.to_string(), fp));
            }
            users.push(line);
        },
    );

    // Two entries adopting one account: neither may take it, each line is a conflict.
    let mut adopters: HashMap<&str, usize> = HashMap::new();
    for u in &users {
        if let (UserAction::Adopt { .. }, Some(id)) = (&u.action, u.ironclad_id.as_deref()) {
            *adopters.entry(id).or_default() += 1;
        }
    }
    let shared: HashSet<String> = adopters
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id.to_string())
        .collect();
    if !shared.is_empty() {
        for u in &mut users {
            if !matches!(u.action, UserAction::Adopt { .. }) {
                continue;
            }
            let Some(id) = u.ironclad_id.as_deref().filter(|id| shared.contains(*id)) else {
                continue;
            };
            let name = target
                .user(id)
                .map(|l| l.user_name.to_string())
                .unwrap_or_else(|| id.to_string());
            u.action = UserAction::Conflict {
                reason: format!(
                    "several source entries match Ironclad user {name} by a fallback key; none adopts it"
                ),
            };
        }
    }

    // Managed Ironclad users no source entry accounts for: leavers whose entry is gone. Not
    // while an entry could not be keyed: the user linked to it would look like a leaver.
    let unkeyed = desired
        .iter()
        .filter(|d| {
            matches!(
                d.state,
                Desired::Failed {
                    identity_unknown: true,
                    ..
                }
            )
        })
        .count();
    let absent_held = (unkeyed > 0).then(|| {
        let rule = format!(
            "{unkeyed} source entries could not be mapped to an externalId, so no one is removed for \
             being absent from the source in this run; fix the mapping errors they report"
        );
        notes.push(format!("{REMOVALS_HELD}: {rule}"));
        rule
    });
    for u in input.ironclad_users {
        let id = &*u.id;
        if accounted.contains(id) || !link_by_id.contains_key(id) {
            continue;
        }
        // A removal that kept failing waits out its quarantine like any other write.
        let quarantined = link_by_id
            .get(id)
            .and_then(|src| input.quarantined.get(*src))
            .filter(|(until, _)| *until > input.now);
        let action = match (&absent_held, quarantined) {
            (_, Some((until, why))) => UserAction::Skip {
                reason: SkipReason::Quarantined {
                    until: *until,
                    why: why.clone(),
                },
            },
            (Some(rule), None) => UserAction::Skip {
                reason: SkipReason::Held { rule: rule.clone() },
            },
            (None, None) => UserAction::Remove {
                how: policy.remove,
                reason: "no longer in the source".to_string(),
            },
        };
        users.push(UserPlan {
            source_id: link_by_id.get(id).map(|x| Arc::from(*x)),
            locator: None,
            user_name: u.user_name.to_string(),
            ironclad_id: Some(id.to_string()),
            action,
            seen_version: u.version.as_deref().map(str::to_string),
            seen: Some(u.value()),
            held_action: None,
        });
    }

    // What only the lines needed goes before the groups are planned: at 100,000 people the
    // end of planning is the run's peak of memory.
    drop(accounted);
    apply_removal_rules(
        input,
        &protected,
        &link_by_id,
        &source_ids,
        &target,
        &mut users,
        &mut notes,
    );
    drop(source_ids);
    let groups = plan_groups(input, &users, &link_by_id);
    finish(input, users, groups, notes, converged)
}

/// One planned line, the ids it accounts for, and its fingerprint if newly found converged.
type Line<'a> = (UserPlan, [Option<&'a str>; 2], Option<Fingerprint>);

/// How much older than the run Ironclad's `meta.lastModified` must be for a fingerprint to be
/// recorded: a change made within the same tick of a coarse clock would leave it unchanged.
const SETTLED: chrono::Duration = chrono::Duration::seconds(2);

/// The [`Fingerprint`] of a linked user's comparison; `None` when Ironclad gave no
/// `meta.lastModified`, or one that is not clearly in the past (see [`SETTLED`]).
fn fingerprint(
    desired: &str,
    policies: &BTreeMap<String, ApplyPolicy>,
    listed: &IroncladUser,
    now: DateTime<Utc>,
) -> Option<Fingerprint> {
    use sha2::Digest as _;
    let version = listed.version.as_deref()?;
    let at = DateTime::parse_from_rfc3339(version).ok()?;
    if at.with_timezone(&Utc) > now - SETTLED {
        return None;
    }
    let mut h = sha2::Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    part(env!("CARGO_PKG_VERSION").as_bytes());
    part(listed.id.as_bytes());
    part(version.as_bytes());
    for (path, p) in policies {
        part(path.as_bytes());
        part(&[*p as u8]);
    }
    part(desired.as_bytes());
    let digest = h.finalize();
    let mut out = Fingerprint::default();
    out.copy_from_slice(&digest[..16]);
    Some(out)
}

/// The checks on a wanted userName that come before any comparison: empty, wanted by more
/// than one entry, protected.
fn name_checks(
    want_name: &str,
    key: &str,
    wanted_names: &DesiredNames,
    protected: &Protected,
) -> Option<UserAction> {
    if want_name.is_empty() {
        return Some(UserAction::Skip {
            reason: SkipReason::MappingError {
                error: "the mapping produced an empty userName".into(),
            },
        });
    }
    if wanted_names.count(key) > 1 {
        return Some(UserAction::Conflict {
            reason: format!("more than one source entry wants the userName {want_name}"),
        });
    }
    protected_skip(protected, want_name)
}

/// A skip naming the pattern, when `user_name` is protected.
fn protected_skip(protected: &Protected, user_name: &str) -> Option<UserAction> {
    protected.matches(user_name).map(|p| UserAction::Skip {
        reason: SkipReason::Protected { pattern: p },
    })
}

#[allow(clippy::too_many_arguments)]
fn wanted_action(
    input: &PlanInput<'_>,
    target: &Target<'_>,
    protected: &Protected,
    wanted_names: &DesiredNames,
    source_ids: &HashSet<&str>,
    link_by_id: &HashMap<&str, &str>,
    d: &DesiredUser,
    user: &Value,
    policies: &BTreeMap<String, ApplyPolicy>,
    current: Option<&Value>,
    line: &mut UserPlan,
) -> UserAction {
    let policy = input.policy;
    let want_name = s(user, "userName").unwrap_or_default().trim().to_string();
    let key = want_name.to_lowercase();
    if let Some(a) = name_checks(&want_name, &key, wanted_names, protected) {
        return a;
    }
    let update_gate = |a: UserAction| -> UserAction {
        if !policy.update_users {
            UserAction::Skip {
                reason: SkipReason::Disabled {
                    policy: "policy.update_users = false".into(),
                },
            }
        } else if !has(input.granted, scopes::UPDATE_USERS) {
            UserAction::Skip {
                reason: SkipReason::MissingScope {
                    scope: scopes::UPDATE_USERS.into(),
                },
            }
        } else {
            a
        }
    };

    if let Some(cur) = current {
        let cur_name = s(cur, "userName").unwrap_or_default();
        if let Some(a) = protected_skip(protected, cur_name) {
            return a;
        }
        let changes = diff(user, policies, cur, input.source_incomplete.is_some());
        if changes.is_empty() {
            return UserAction::Noop;
        }
        let renamed = !attrs::same(
            "userName",
            &Value::String(want_name.clone()),
            &Value::String(cur_name.into()),
        ) && changes.iter().any(|c| c.path == "userName");
        if renamed {
            let cur_id = s(cur, "id").unwrap_or_default();
            if let Some(other) = target.by_user_name(&key).filter(|o| *o != cur_id) {
                return UserAction::Conflict {
                    reason: format!("cannot rename {cur_name} to {want_name}: that userName belongs to Ironclad user {other}"),
                };
            }
            return update_gate(UserAction::Rename {
                from: cur_name.to_string(),
                to: want_name,
                changes,
            });
        }
        return update_gate(UserAction::Update { changes });
    }

    // Not linked: fallback keys find an account to adopt.
    let mut found: Option<(&str, &str)> = None;
    for k in &policy.fallback_keys {
        let hit = match k.to_ascii_lowercase().as_str() {
            "username" => target.by_user_name(&key),
            "email" => {
                let mut emails = emails_of(user);
                emails.push(key.clone());
                emails
                    .iter()
                    .find_map(|e| target.by_email(e).or_else(|| target.by_user_name(e)))
            }
            _ => None,
        };
        if let Some(id) = hit {
            found = Some((
                id,
                if k.eq_ignore_ascii_case("username") {
                    "userName"
                } else {
                    "email"
                },
            ));
            break;
        }
    }
    if let Some((id, matched_by)) = found {
        let Some(listed) = target.user(id) else {
            return UserAction::Conflict {
                reason: format!("Ironclad user {id} vanished while planning"),
            };
        };
        let cur = &listed.value();
        let cur_name = s(cur, "userName").unwrap_or_default();
        if let Some(a) = protected_skip(protected, cur_name) {
            return a;
        }
        if let Some(x) = s(cur, "externalId").filter(|x| !x.is_empty() && *x != &*d.source_id) {
            let why = if source_ids.contains(x) {
                format!("{cur_name} is already linked to another source entry ({x})")
            } else {
                format!("{cur_name} belongs to an unmanaged Ironclad user (externalId {x} set by someone else)")
            };
            return UserAction::Conflict { reason: why };
        }
        if link_by_id.contains_key(id) {
            return UserAction::Conflict {
                reason: format!("{cur_name} is linked to another source entry in the state store"),
            };
        }
        // Found by email under another name: the rename must not land on someone else's.
        if let Some(other) = target.by_user_name(&key).filter(|o| *o != id) {
            return UserAction::Conflict {
                reason: format!(
                    "{cur_name} matches by {matched_by} but the userName {want_name} belongs to Ironclad user {other}"
                ),
            };
        }
        line.ironclad_id = Some(id.to_string());
        line.seen_version = listed.version.as_deref().map(str::to_string);
        line.seen = Some(cur.clone());
        let mut changes = diff(user, policies, cur, input.source_incomplete.is_some());
        if !changes.iter().any(|c| c.path == "externalId") {
            changes.push(AttrChange {
                path: "externalId".into(),
                before: cur.get("externalId").cloned().unwrap_or(Value::Null),
                after: Value::String(d.source_id.to_string()),
            });
        }
        return update_gate(UserAction::Adopt {
            matched_by: matched_by.to_string(),
            changes,
        });
    }
    if policy.fallback_keys.is_empty() {
        if let Some(other) = target.by_user_name(&key) {
            return UserAction::Conflict {
                reason: format!(
                    "the userName {want_name} belongs to an unmanaged Ironclad user ({other})"
                ),
            };
        }
    }
    if !policy.create_users {
        return UserAction::Skip {
            reason: SkipReason::Disabled {
                policy: "policy.create_users = false".into(),
            },
        };
    }
    if !has(input.granted, scopes::CREATE_USERS) {
        return UserAction::Skip {
            reason: SkipReason::MissingScope {
                scope: scopes::CREATE_USERS.into(),
            },
        };
    }
    let mut full = user.clone();
    attrs::set(
        &mut full,
        "externalId",
        Value::String(d.source_id.to_string()),
    );
    UserAction::Create { user: full }
}

fn apply_removal_rules(
    input: &PlanInput<'_>,
    protected: &Protected,
    link_by_id: &HashMap<&str, &str>,
    source_ids: &HashSet<&str>,
    target: &Target<'_>,
    users: &mut [UserPlan],
    notes: &mut Vec<String>,
) {
    let policy = input.policy;
    let mut candidates = Vec::new();
    // A users listing cut short: anyone not read looks like a leaver, so nobody is removed,
    // and no later review or `--allow-removals` can release these (no held action is kept).
    let incomplete = input.source_incomplete.map(|why| {
        format!("the source's users listing was incomplete ({why}): nobody is removed in this run")
    });
    if let Some(rule) = &incomplete {
        notes.push(format!(
            "{rule}; the people read were created and updated (policy.writes_on_incomplete_source)"
        ));
    }
    for (i, u) in users.iter_mut().enumerate() {
        let UserAction::Remove { how, .. } = &u.action else {
            continue;
        };
        let how = *how;
        if let Some(rule) = &incomplete {
            u.action = UserAction::Skip {
                reason: SkipReason::Held { rule: rule.clone() },
            };
            continue;
        }
        if let Some(p) = protected.matches(&u.user_name) {
            u.action = UserAction::Skip {
                reason: SkipReason::Protected { pattern: p },
            };
            continue;
        }
        let scope = match how {
            RemoveMode::Keep => {
                u.action = UserAction::Skip {
                    reason: SkipReason::Disabled {
                        policy: "the removal setting: keep (the mapping's [removal] action, \
                                 or policy.remove_users)"
                            .into(),
                    },
                };
                continue;
            }
            RemoveMode::Delete => scopes::DELETE_USERS,
            RemoveMode::Deactivate => scopes::UPDATE_USERS,
            // Either request will do: with one scope only, the one it allows.
            RemoveMode::DeleteOrDeactivate => {
                let (del, upd) = (
                    has(input.granted, scopes::DELETE_USERS),
                    has(input.granted, scopes::UPDATE_USERS),
                );
                if del != upd {
                    if let UserAction::Remove { how, .. } = &mut u.action {
                        *how = if del {
                            RemoveMode::Delete
                        } else {
                            RemoveMode::Deactivate
                        };
                    }
                }
                scopes::DELETE_USERS
            }
        };
        let scope = match &u.action {
            UserAction::Remove {
                how: RemoveMode::Deactivate,
                ..
            } => scopes::UPDATE_USERS,
            _ => scope,
        };
        if !has(input.granted, scope) {
            u.action = UserAction::Skip {
                reason: SkipReason::MissingScope {
                    scope: scope.into(),
                },
            };
            continue;
        }
        let key = u
            .source_id
            .as_deref()
            .or(u.ironclad_id.as_deref())
            .unwrap_or_default();
        let (first, missed) = input.grace.get(key).copied().unwrap_or((input.now, 0));
        let missed = missed + 1;
        let runs_ok = missed >= policy.grace_runs;
        let time_ok = policy.grace_period.is_none_or(|p| input.now - first >= p);
        if (policy.grace_runs > 0 && !runs_ok) || !time_ok {
            u.action = UserAction::Skip {
                reason: SkipReason::Grace {
                    missed_runs: missed,
                    needed_runs: policy.grace_runs.max(1),
                    not_before: policy.grace_period.map(|p| first + p),
                },
            };
            continue;
        }
        candidates.push(i);
    }
    let managed = target
        .ids()
        .filter(|id| link_by_id.contains_key(*id) || is_ext_managed(source_ids, target, id))
        .count();
    let n = candidates.len();
    let pct = if managed == 0 {
        0.0
    } else {
        n as f64 * 100.0 / managed as f64
    };
    let over_count = n > policy.max_removals;
    let over_pct = n > 0 && pct > policy.max_removal_percent;
    if (over_count || over_pct) && policy.allow_removals < n {
        let mut rule = format!(
            "{n} removals ({pct:.1}% of {managed} managed users) exceed the threshold (at most {} and {}%); \
             allow them with `apply --allow-removals {n}` or by applying a reviewed saved plan",
            policy.max_removals, policy.max_removal_percent
        );
        if policy.allow_removals > 0 {
            rule.push_str(&format!(
                " (--allow-removals {} is fewer than {n}: it releases all of them or none, so \
                 none was released)",
                policy.allow_removals
            ));
        }
        notes.push(format!("{REMOVALS_HELD}: {rule}"));
        for i in candidates {
            if let Some(u) = users.get_mut(i) {
                u.held_action = Some(Box::new(u.action.clone()));
                u.action = UserAction::Skip {
                    reason: SkipReason::Held { rule: rule.clone() },
                };
            }
        }
    }
}

fn is_ext_managed(source_ids: &HashSet<&str>, target: &Target<'_>, id: &str) -> bool {
    target
        .user(id)
        .and_then(|u| u.external_id.as_deref())
        .is_some_and(|x| source_ids.contains(x))
}

fn plan_groups(
    input: &PlanInput<'_>,
    users: &[UserPlan],
    // Ironclad user id -> source id, from the store's links.
    link_by_id: &HashMap<&str, &str>,
) -> Vec<GroupPlan> {
    let policy: &PlanPolicy = input.policy;
    if !policy.manage_groups || !has(input.granted, scopes::READ_GROUPS) {
        return Vec::new();
    }
    let can_create = has(input.granted, scopes::CREATE_GROUPS);
    let can_update = has(input.granted, scopes::UPDATE_GROUPS);
    let can_delete = has(input.granted, scopes::DELETE_GROUPS);
    let by_id: HashMap<&str, &Value> = input
        .ironclad_groups
        .iter()
        .filter_map(|g| s(g, "id").map(|id| (id, g)))
        .collect();
    let by_ext: HashMap<&str, &str> = input
        .ironclad_groups
        .iter()
        .filter_map(|g| Some((s(g, "externalId").filter(|x| !x.is_empty())?, s(g, "id")?)))
        .collect();
    let by_name: HashMap<String, &str> = input
        .ironclad_groups
        .iter()
        .filter_map(|g| Some((s(g, "displayName")?.trim().to_lowercase(), s(g, "id")?)))
        .collect();
    // Only the people the groups name are looked at: the selected groups' members (source ids)
    // and the current members of Ironclad's groups (Ironclad ids).
    let named: HashSet<&str> = input
        .desired_groups
        .iter()
        .flat_map(|g| g.members.iter().map(String::as_str))
        .collect();
    let listed_members: HashSet<&str> = input
        .ironclad_groups
        .iter()
        .filter_map(|g| g.get("members").and_then(Value::as_array))
        .flatten()
        .filter_map(|m| s(m, "value"))
        .collect();
    // Source user id -> (Ironclad id if known, whether they stay).
    let mut user_state: HashMap<&str, (Option<&str>, bool)> = HashMap::with_capacity(named.len());
    // Source ids of people who stay but are neither in Ironclad nor created by this run.
    let mut not_created: HashSet<&str> = HashSet::new();
    // Beyond the store's links: Ironclad users a source entry's line holds.
    let mut managed_user_ids: HashSet<&str> = HashSet::with_capacity(listed_members.len());
    for u in users {
        let names_src = u.source_id.as_deref().is_some_and(|s| named.contains(s));
        let names_ic = u
            .ironclad_id
            .as_deref()
            .is_some_and(|i| listed_members.contains(i));
        if !names_src && !names_ic {
            continue;
        }
        let stays = matches!(
            u.action,
            UserAction::Create { .. }
                | UserAction::Adopt { .. }
                | UserAction::Update { .. }
                | UserAction::Rename { .. }
                | UserAction::Noop
        ) || matches!(&u.action, UserAction::Skip { reason } if !matches!(
            reason,
            // Out of scope, or a removal held back or waiting out its grace: leaving, so not
            // added to any group (their current memberships are left alone below).
            SkipReason::OutOfScope { .. } | SkipReason::Held { .. } | SkipReason::Grace { .. }
        ));
        // Someone not in Ironclad joins a group only when this run creates them: a create
        // skipped (missing scope, mapping error, ...) would leave an addition no apply can
        // make, and the plan would never converge.
        let exists = u.ironclad_id.is_some() || matches!(u.action, UserAction::Create { .. });
        if stays && !exists {
            if let Some(src) = u.source_id.as_deref() {
                not_created.insert(src);
            }
        }
        let stays = stays && exists;
        if let Some(src) = u.source_id.as_deref() {
            user_state.insert(src, (u.ironclad_id.as_deref(), stays));
        }
        if let Some(id) = u.ironclad_id.as_deref() {
            if u.source_id.is_some() {
                managed_user_ids.insert(id);
            }
        }
    }
    // Users whose removal is planned or held: leave their membership alone.
    let leaving: HashSet<&str> = users
        .iter()
        .filter(|u| {
            matches!(u.action, UserAction::Remove { .. })
                || matches!(
                    &u.action,
                    UserAction::Skip {
                        reason: SkipReason::Held { .. } | SkipReason::Grace { .. }
                    }
                )
        })
        .filter_map(|u| u.ironclad_id.as_deref())
        .collect();

    let mut out = Vec::new();
    let mut seen_groups: HashSet<&str> = HashSet::new();
    for g in input.desired_groups {
        let linked = input
            .group_links
            .get(&g.source_id)
            .map(String::as_str)
            .filter(|id| by_id.contains_key(id))
            .or_else(|| by_ext.get(g.source_id.as_str()).copied());
        let mut line = GroupPlan {
            source_id: Some(g.source_id.clone()),
            display_name: g.display_name.clone(),
            ironclad_id: linked.map(str::to_string),
            action: GroupAction::Noop,
            add: Vec::new(),
            remove: Vec::new(),
            pending: Vec::new(),
            seen_version: None,
        };
        let current = linked.and_then(|id| by_id.get(id).copied());
        if let Some(id) = linked {
            seen_groups.insert(id);
        }
        let current_members: BTreeSet<&str> = current
            .and_then(|c| c.get("members"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|m| s(m, "value")).collect())
            .unwrap_or_default();
        for m in &g.members {
            match user_state.get(m.as_str()) {
                Some((Some(id), true)) if !current_members.contains(id) => line.add.push(m.clone()),
                Some((None, true)) => line.add.push(m.clone()),
                Some((None, false)) if not_created.contains(m.as_str()) => {
                    line.pending.push(m.clone())
                }
                _ => {}
            }
        }
        let wanted_ids: HashSet<&str> = g
            .members
            .iter()
            .filter_map(|m| user_state.get(m.as_str()).and_then(|(id, _)| *id))
            .collect();
        // With the users listing cut short, members are only added.
        let members_left = if input.source_incomplete.is_some() {
            &BTreeSet::new()
        } else {
            &current_members
        };
        for id in members_left {
            if (link_by_id.contains_key(id) || managed_user_ids.contains(id))
                && !wanted_ids.contains(id)
                && !leaving.contains(id)
            {
                line.remove.push((*id).to_string());
            }
        }
        match current {
            Some(c) => {
                line.seen_version = version(c);
                let name = s(c, "displayName").unwrap_or_default();
                if name.trim() != g.display_name.trim() {
                    line.action = GroupAction::Rename {
                        from: name.to_string(),
                    };
                } else if !line.add.is_empty() || !line.remove.is_empty() {
                    line.action = GroupAction::Members;
                }
                if line.action != GroupAction::Noop && !can_update {
                    line.action = GroupAction::Skip {
                        reason: SkipReason::MissingScope {
                            scope: scopes::UPDATE_GROUPS.into(),
                        },
                    };
                }
            }
            None => {
                if let Some(other) = by_name.get(&g.display_name.trim().to_lowercase()) {
                    line.action = GroupAction::Conflict {
                        reason: format!(
                            "an Ironclad group named {:?} exists ({other}) but is not managed by ironbridge; \
                             set its externalId to {} to let ironbridge manage it, or rename one of them",
                            g.display_name, g.source_id
                        ),
                    };
                } else if !can_create {
                    line.action = GroupAction::Skip {
                        reason: SkipReason::MissingScope {
                            scope: scopes::CREATE_GROUPS.into(),
                        },
                    };
                } else if !can_update && !line.add.is_empty() {
                    line.action = GroupAction::Create;
                    line.add.clear();
                } else {
                    line.action = GroupAction::Create;
                }
            }
        }
        out.push(line);
    }
    // Bridge-managed groups no longer selected. Not while a selected group could not be
    // evaluated: the absent group may be that one.
    let deletes_held = if let Some(why) = input.source_incomplete {
        Some(format!(
            "the source's users listing was incomplete ({why}), so no group is deleted in this run"
        ))
    } else {
        (!input.group_errors.is_empty()).then(|| {
            let n = input.group_errors.len();
            format!(
                "{n} selected {} could not be evaluated, so no group is deleted in this run; first: {}",
                if n == 1 { "group" } else { "groups" },
                input.group_errors[0]
            )
        })
    };
    if input.desired.is_some() {
        let group_source_by_id: HashMap<&str, &str> = input
            .group_links
            .iter()
            .map(|(src, id)| (id.as_str(), src.as_str()))
            .collect();
        for g in input.ironclad_groups {
            let Some(id) = s(g, "id") else { continue };
            if seen_groups.contains(id) || !group_source_by_id.contains_key(id) {
                continue;
            }
            out.push(GroupPlan {
                source_id: group_source_by_id.get(id).map(|x| x.to_string()),
                display_name: s(g, "displayName").unwrap_or_default().to_string(),
                ironclad_id: Some(id.to_string()),
                action: if let Some(rule) = &deletes_held {
                    GroupAction::Skip {
                        reason: SkipReason::Held { rule: rule.clone() },
                    }
                } else if can_delete {
                    GroupAction::Delete
                } else {
                    GroupAction::Skip {
                        reason: SkipReason::MissingScope {
                            scope: scopes::DELETE_GROUPS.into(),
                        },
                    }
                },
                add: Vec::new(),
                remove: Vec::new(),
                pending: Vec::new(),
                seen_version: version(g),
            });
        }
    }
    out
}

/// How the note about removals held by a safety rule begins (applying a reviewed saved plan
/// carries them out, and drops the note).
pub const REMOVALS_HELD: &str = "removals held";

/// Lines per action (users by action name, groups as `group_*`), and `held`: the skips held
/// by a safety rule, counted among the skips as well.
pub fn summarize(users: &[UserPlan], groups: &[GroupPlan]) -> BTreeMap<String, usize> {
    let mut summary: BTreeMap<String, usize> = BTreeMap::new();
    for u in users {
        *summary.entry(u.action.name().to_string()).or_default() += 1;
        if let UserAction::Skip {
            reason: SkipReason::Held { .. },
        } = u.action
        {
            *summary.entry("held".to_string()).or_default() += 1;
        }
    }
    for g in groups {
        if let GroupAction::Skip {
            reason: SkipReason::Held { .. },
        } = g.action
        {
            *summary.entry("held".to_string()).or_default() += 1;
        }
        let key = match g.action {
            GroupAction::Create => "group_create",
            GroupAction::Rename { .. } => "group_rename",
            GroupAction::Members => "group_members",
            GroupAction::Noop => "group_noop",
            GroupAction::Delete => "group_delete",
            GroupAction::Skip { .. } => "group_skip",
            GroupAction::Conflict { .. } => "group_conflict",
        };
        *summary.entry(key.to_string()).or_default() += 1;
    }
    summary
}

/// `a.to_lowercase().cmp(&b.to_lowercase())`, without allocating when both are ASCII.
fn cmp_lower(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
    } else {
        a.to_lowercase().cmp(&b.to_lowercase())
    }
}

fn finish(
    input: &PlanInput<'_>,
    mut users: Vec<UserPlan>,
    mut groups: Vec<GroupPlan>,
    notes: Vec<String>,
    converged: Vec<(String, Fingerprint)>,
) -> Plan {
    // By userName (lower-cased), then source id; compared in place, so that sorting 100,000
    // lines allocates nothing. The Ironclad id and the action break any remaining tie.
    users.sort_unstable_by(|a, b| {
        cmp_lower(&a.user_name, &b.user_name)
            .then_with(|| a.source_id.cmp(&b.source_id))
            .then_with(|| a.ironclad_id.cmp(&b.ironclad_id))
            .then_with(|| a.action.name().cmp(b.action.name()))
    });
    groups.sort_by(|a, b| {
        a.display_name
            .to_lowercase()
            .cmp(&b.display_name.to_lowercase())
    });
    let summary = summarize(&users, &groups);
    Plan {
        created_at: input.now,
        source_complete: input.desired.is_some() && input.source_incomplete.is_none(),
        source_incomplete: input
            .source_incomplete
            .filter(|_| input.desired.is_some())
            .map(str::to_string),
        users,
        groups,
        summary,
        notes,
        converged,
        settled_creates: Vec::new(),
        unlinked_with_external_id: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{DesiredGroup, PlanPolicy};
    use chrono::{DateTime, TimeZone, Utc};
    use serde_json::json;

    const DEPT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";

    fn all_scopes() -> BTreeSet<String> {
        [
            scopes::READ_USERS,
            scopes::CREATE_USERS,
            scopes::UPDATE_USERS,
            scopes::DELETE_USERS,
            scopes::READ_GROUPS,
            scopes::CREATE_GROUPS,
            scopes::UPDATE_GROUPS,
            scopes::DELETE_GROUPS,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    fn policies() -> BTreeMap<String, ApplyPolicy> {
        [
            "userName",
            "name.givenName",
            "name.familyName",
            "title",
            DEPT,
            "emails",
        ]
        .iter()
        .map(|p| (p.to_string(), ApplyPolicy::Always))
        .collect()
    }

    fn want(src: &str, mail: &str, title: &str) -> DesiredUser {
        DesiredUser {
            source_id: src.into(),
            locator: format!("uid={src},ou=people,dc=example,dc=test").into(),
            state: Desired::Wanted {
                user: json!({
                    "userName": mail, "name": {"givenName": "G", "familyName": "F"}, "title": title,
                    DEPT.rsplit_once(':').unwrap().0: {"department": "Legal"},
                    "emails": [{"value": mail, "type": "work", "primary": true}],
                })
                .into(),
                policies: policies().into(),
            },
        }
    }

    fn not_wanted(src: &str) -> DesiredUser {
        DesiredUser {
            source_id: src.into(),
            locator: format!("uid={src}").into(),
            state: Desired::NotWanted {
                reason: "disabled (userAccountControl bit 0x2)".into(),
            },
        }
    }

    fn ic(id: &str, src: Option<&str>, mail: &str, title: &str) -> Value {
        let mut v = json!({
            "id": id, "userName": mail, "name": {"givenName": "G", "familyName": "F"}, "title": title,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Legal"},
            "emails": [{"value": mail, "type": "work", "primary": true}],
            "meta": {"lastModified": "2026-11-01T00:00:00Z"},
            "urn:ietf:params:scim:schemas:extension:ironclad:2.0:User": {"provider": "saml"},
        });
        if let Some(s) = src {
            v["externalId"] = json!(s);
        }
        v
    }

    struct Case {
        desired: Option<Vec<DesiredUser>>,
        groups: Vec<DesiredGroup>,
        group_errors: Vec<String>,
        incomplete: Option<String>,
        group_links: BTreeMap<String, String>,
        quarantined: BTreeMap<String, (DateTime<Utc>, String)>,
        ic_users: Vec<Value>,
        ic_groups: Vec<Value>,
        links: crate::reconcile::LinkMap,
        policy: PlanPolicy,
        granted: BTreeSet<String>,
        converged: HashSet<Fingerprint>,
    }

    impl Case {
        fn new() -> Self {
            Case {
                desired: Some(Vec::new()),
                groups: Vec::new(),
                group_errors: Vec::new(),
                incomplete: None,
                group_links: BTreeMap::new(),
                quarantined: BTreeMap::new(),
                ic_users: Vec::new(),
                ic_groups: Vec::new(),
                links: Default::default(),
                policy: PlanPolicy::default(),
                granted: all_scopes(),
                converged: HashSet::new(),
            }
        }
        fn run(&self) -> Plan {
            let g = BTreeMap::new();
            let ic_users: Vec<IroncladUser> = self
                .ic_users
                .iter()
                .filter_map(IroncladUser::from_value)
                .collect();
            let index = TargetIndex::new(&ic_users);
            plan(&PlanInput {
                desired: self.desired.as_deref(),
                desired_groups: &self.groups,
                group_errors: &self.group_errors,
                source_incomplete: self.incomplete.as_deref(),
                ironclad_users: &ic_users,
                ironclad_groups: &self.ic_groups,
                user_links: &self.links,
                group_links: &self.group_links,
                policy: &self.policy,
                granted: &self.granted,
                quarantined: &self.quarantined,
                grace: &g,
                now: now(),
                protected_fn: None,
                converged: Some(&self.converged),
                desired_names: None,
                target_index: Some(&index),
            })
        }
    }

    fn action_of<'a>(p: &'a Plan, user: &str) -> &'a UserAction {
        &p.users
            .iter()
            .find(|u| u.user_name.eq_ignore_ascii_case(user))
            .unwrap()
            .action
    }

    #[test]
    fn joiner_is_created_with_external_id() {
        let mut c = Case::new();
        c.desired = Some(vec![want("s1", "ann@example.com", "Counsel")]);
        let p = c.run();
        match action_of(&p, "ann@example.com") {
            UserAction::Create { user } => assert_eq!(user["externalId"], "s1"),
            other => panic!("{other:?}"),
        }
        assert!(p.has_writes());
    }

    #[test]
    fn converged_tenant_plans_nothing() {
        let mut c = Case::new();
        c.desired = Some(vec![want("s1", "ann@example.com", "Counsel")]);
        c.ic_users = vec![ic("i1", Some("s1"), "ANN@example.com ", "Counsel")];
        c.links.insert("s1".into(), "i1".into());
        let p = c.run();
        assert_eq!(action_of(&p, "ann@example.com"), &UserAction::Noop);
        assert!(!p.has_writes());
    }

    #[test]
    fn mover_gets_attribute_level_changes() {
        let mut c = Case::new();
        c.desired = Some(vec![want("s1", "ann@example.com", "General Counsel")]);
        c.ic_users = vec![ic("i1", Some("s1"), "ann@example.com", "Counsel")];
        let p = c.run();
        match action_of(&p, "ann@example.com") {
            UserAction::Update { changes } => {
                assert_eq!(changes.len(), 1);
                assert_eq!(changes[0].path, "title");
                assert_eq!(changes[0].before, json!("Counsel"));
                assert_eq!(changes[0].after, json!("General Counsel"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn email_change_is_a_rename_of_the_same_user() {
        let mut c = Case::new();
        c.desired = Some(vec![want("s1", "ann.new@example.com", "Counsel")]);
        c.ic_users = vec![ic("i1", Some("s1"), "ann@example.com", "Counsel")];
        c.links.insert("s1".into(), "i1".into());
        let p = c.run();
        let line = p
            .users
            .iter()
            .find(|u| u.source_id.as_deref() == Some("s1"))
            .unwrap();
        assert_eq!(line.ironclad_id.as_deref(), Some("i1"));
        assert!(
            matches!(&line.action, UserAction::Rename { from, to, .. } if from == "ann@example.com" && to == "ann.new@example.com")
        );
    }

    #[test]
    fn rename_onto_a_taken_user_name_is_a_conflict() {
        let mut c = Case::new();
        c.desired = Some(vec![want("s1", "bob@example.com", "Counsel")]);
        c.ic_users = vec![
            ic("i1", Some("s1"), "ann@example.com", "Counsel"),
            ic("i2", None, "bob@example.com", "x"),
        ];
        c.links.insert("s1".into(), "i1".into());
        assert!(matches!(
            action_of(&c.run(), "bob@example.com"),
            UserAction::Conflict { .. }
        ));
    }

    #[test]
    fn unlinked_account_is_adopted_by_user_name() {
        let mut c = Case::new();
        c.desired = Some(vec![want("s1", "ann@example.com", "Counsel")]);
        c.ic_users = vec![ic("i9", None, "Ann@Example.com", "Counsel")];
        let p = c.run();
        match action_of(&p, "ann@example.com") {
            UserAction::Adopt {
                matched_by,
                changes,
            } => {
                assert_eq!(matched_by, "userName");
                assert!(changes
                    .iter()
                    .any(|c| c.path == "externalId" && c.after == json!("s1")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn account_with_foreign_external_id_is_a_conflict_not_adopted() {
        let mut c = Case::new();
        c.desired = Some(vec![want("s1", "ann@example.com", "Counsel")]);
        c.ic_users = vec![ic("i9", Some("okta-123"), "ann@example.com", "Counsel")];
        assert!(matches!(
            action_of(&c.run(), "ann@example.com"),
            UserAction::Conflict { .. }
        ));
    }

    #[test]
    fn two_entries_wanting_one_user_name_conflict() {
        let mut c = Case::new();
        c.desired = Some(vec![
            want("s1", "ann@example.com", "a"),
            want("s2", "ANN@example.com", "b"),
        ]);
        let p = c.run();
        assert_eq!(p.summary.get("conflict"), Some(&2));
        assert!(p.has_held());
    }

    #[test]
    fn disabled_and_missing_users_are_removed_but_unmanaged_and_protected_are_not() {
        let mut c = Case::new();
        c.desired = Some(vec![not_wanted("s1"), want("s3", "carl@example.com", "x")]);
        c.ic_users = vec![
            ic("i1", Some("s1"), "ann@example.com", "x"),
            ic("i2", Some("s2"), "bob@example.com", "x"),
            ic("i3", Some("s3"), "carl@example.com", "x"),
            ic("i4", None, "hand-made@example.com", "x"),
            ic("i5", Some("s5"), "breakglass@example.com", "x"),
            ic("i6", Some("s6"), "API@example.com", "x"),
        ];
        for (s, i) in [
            ("s1", "i1"),
            ("s2", "i2"),
            ("s3", "i3"),
            ("s5", "i5"),
            ("s6", "i6"),
        ] {
            c.links.insert(s.into(), i.into());
        }
        c.policy.protected = vec!["breakglass@*".into()];
        c.policy.acting_user = Some("api@example.com".into());
        c.policy.max_removal_percent = 100.0;
        let p = c.run();
        assert!(matches!(
            action_of(&p, "ann@example.com"),
            UserAction::Remove { .. }
        ));
        assert!(
            matches!(action_of(&p, "bob@example.com"), UserAction::Remove { reason, .. } if reason == "no longer in the source")
        );
        assert!(p
            .users
            .iter()
            .all(|u| u.user_name != "hand-made@example.com"));
        assert!(matches!(
            action_of(&p, "breakglass@example.com"),
            UserAction::Skip {
                reason: SkipReason::Protected { pattern }
            } if pattern == "matches breakglass@*"
        ));
        // The acting user is named as such, not as a pattern.
        assert!(matches!(
            action_of(&p, "API@example.com"),
            UserAction::Skip {
                reason: SkipReason::Protected { pattern }
            } if pattern.starts_with("the acting user")
        ));
    }

    #[test]
    fn an_entry_the_mapping_failed_on_keeps_its_linked_user() {
        let failed = |src: &str, identity_unknown: bool| DesiredUser {
            source_id: src.into(),
            locator: format!("uid={src}").into(),
            state: Desired::Failed {
                error: "attributes.userName: the expression gave no value".into(),
                identity_unknown,
            },
        };
        let mut c = Case::new();
        c.ic_users = vec![
            ic("i1", Some("s1"), "ann@example.com", "x"),
            ic("i2", Some("s2"), "bob@example.com", "x"),
            ic("i3", Some("s3"), "carl@example.com", "x"),
        ];
        for (s, i) in [("s1", "i1"), ("s2", "i2"), ("s3", "i3")] {
            c.links.insert(s.into(), i.into());
        }
        c.policy.max_removal_percent = 100.0;
        // Keyed by its externalId: its linked user is skipped, a real leaver still goes.
        c.desired = Some(vec![
            failed("s1", false),
            want("s3", "carl@example.com", "x"),
        ]);
        let p = c.run();
        let line = p
            .users
            .iter()
            .find(|u| u.ironclad_id.as_deref() == Some("i1"));
        assert!(matches!(
            line.map(|l| &l.action),
            Some(UserAction::Skip {
                reason: SkipReason::MappingError { .. }
            })
        ));
        assert!(matches!(
            action_of(&p, "bob@example.com"),
            UserAction::Remove { .. }
        ));
        // Its externalId unknown: no one is removed for being absent in this run.
        c.desired = Some(vec![
            failed("entry-1", true),
            want("s3", "carl@example.com", "x"),
        ]);
        let p = c.run();
        assert!(!p
            .users
            .iter()
            .any(|u| matches!(u.action, UserAction::Remove { .. })));
        for name in ["ann@example.com", "bob@example.com"] {
            assert!(matches!(
                action_of(&p, name),
                UserAction::Skip {
                    reason: SkipReason::Held { .. }
                }
            ));
        }
        assert!(p.notes.iter().any(|n| n.contains("could not be mapped")));
    }

    #[test]
    fn a_quarantined_leaver_waits_like_any_other_write() {
        let mut c = Case::new();
        c.desired = Some(vec![want("s1", "ann@example.com", "x")]);
        c.ic_users = vec![
            ic("i1", Some("s1"), "ann@example.com", "x"),
            ic("i2", Some("s2"), "bob@example.com", "x"),
        ];
        c.links.insert("s1".into(), "i1".into());
        c.links.insert("s2".into(), "i2".into());
        c.policy.max_removal_percent = 100.0;
        c.quarantined.insert(
            "s2".into(),
            (now() + chrono::Duration::hours(1), String::new()),
        );
        assert!(matches!(
            action_of(&c.run(), "bob@example.com"),
            UserAction::Skip {
                reason: SkipReason::Quarantined { .. }
            }
        ));
        c.quarantined.insert(
            "s2".into(),
            (now() - chrono::Duration::hours(1), String::new()),
        );
        assert!(matches!(
            action_of(&c.run(), "bob@example.com"),
            UserAction::Remove { .. }
        ));
    }

    #[test]
    fn a_removal_allowed_either_way_uses_the_scopes_granted() {
        let mut c = Case::new();
        c.desired = Some(vec![want("s1", "ann@example.com", "x")]);
        c.ic_users = vec![
            ic("i1", Some("s1"), "ann@example.com", "x"),
            ic("i2", Some("s2"), "bob@example.com", "x"),
        ];
        c.links.insert("s1".into(), "i1".into());
        c.links.insert("s2".into(), "i2".into());
        c.policy.max_removal_percent = 100.0;
        c.policy.remove = RemoveMode::DeleteOrDeactivate;
        let how = |c: &Case| match action_of(&c.run(), "bob@example.com") {
            UserAction::Remove { how, .. } => Some(*how),
            _ => None,
        };
        assert_eq!(how(&c), Some(RemoveMode::DeleteOrDeactivate));
        c.granted.remove(scopes::UPDATE_USERS);
        assert_eq!(how(&c), Some(RemoveMode::Delete));
        c.granted.insert(scopes::UPDATE_USERS.into());
        c.granted.remove(scopes::DELETE_USERS);
        assert_eq!(how(&c), Some(RemoveMode::Deactivate));
        c.granted.remove(scopes::UPDATE_USERS);
        assert!(matches!(
            action_of(&c.run(), "bob@example.com"),
            UserAction::Skip {
                reason: SkipReason::MissingScope { scope }
            } if scope == scopes::DELETE_USERS
        ));
    }

    #[test]
    fn adoption_never_takes_a_name_or_an_account_twice() {
        let wanting = |src: &str, user_name: &str, email: &str| {
            DesiredUser {
            source_id: src.into(),
            locator: format!("uid={src}").into(),
            state: Desired::Wanted {
                user: json!({"userName": user_name, "emails": [{"value": email, "type": "work", "primary": true}]})
                    .into(),
                policies: policies().into(),
            },
        }
        };
        let bare = |id: &str, user_name: &str, email: &str| {
            json!({"id": id, "userName": user_name, "emails": [{"value": email}],
                   "meta": {"lastModified": "2026-11-01T00:00:00Z"}})
        };
        // Two entries matching one unlinked account by email: neither adopts it.
        let mut c = Case::new();
        c.desired = Some(vec![
            wanting("s1", "ann@example.com", "shared@example.com"),
            wanting("s2", "bob@example.com", "shared@example.com"),
        ]);
        c.ic_users = vec![bare("i9", "shared@example.com", "shared@example.com")];
        let p = c.run();
        for src in ["s1", "s2"] {
            let l = p.users.iter().find(|u| u.source_id.as_deref() == Some(src));
            assert!(
                matches!(l.map(|l| &l.action), Some(UserAction::Conflict { reason }) if reason.contains("several source entries")),
                "{l:?}"
            );
        }
        // Found by email, but the userName it would be renamed to is someone else's.
        let mut c = Case::new();
        c.policy.fallback_keys = vec!["email".into()];
        c.desired = Some(vec![wanting("s1", "ann@example.com", "ann@example.com")]);
        c.ic_users = vec![
            bare("i1", "old-ann@example.com", "ann@example.com"),
            bare("i2", "ann@example.com", "someone@example.com"),
        ];
        let p = c.run();
        let l = p
            .users
            .iter()
            .find(|u| u.source_id.as_deref() == Some("s1"));
        assert!(
            matches!(l.map(|l| &l.action), Some(UserAction::Conflict { reason }) if reason.contains("belongs to Ironclad user i2")),
            "{l:?}"
        );
    }

    #[test]
    fn failed_source_plans_zero_removals() {
        let mut c = Case::new();
        c.desired = None;
        c.ic_users = vec![ic("i1", Some("s1"), "ann@example.com", "x")];
        c.links.insert("s1".into(), "i1".into());
        let p = c.run();
        assert!(p.users.is_empty());
        assert!(!p.source_complete);
        assert!(!p.notes.is_empty());
    }

    #[test]
    fn removals_over_threshold_are_all_held_and_the_rest_proceeds() {
        let mut c = Case::new();
        let mut desired = vec![want("new", "new@example.com", "x")];
        for i in 0..20 {
            c.ic_users.push(ic(
                &format!("i{i}"),
                Some(&format!("s{i}")),
                &format!("u{i}@example.com"),
                "x",
            ));
            c.links.insert(format!("s{i}"), format!("i{i}"));
            if i < 15 {
                desired.push(want(&format!("s{i}"), &format!("u{i}@example.com"), "x"));
            }
        }
        c.desired = Some(desired);
        // 5 of 20 = 25% > 10%.
        let p = c.run();
        assert_eq!(p.summary.get("held"), Some(&5));
        assert_eq!(p.summary.get("create"), Some(&1));
        assert!(p.has_held());
        // Allowed explicitly.
        c.policy.allow_removals = 5;
        assert_eq!(c.run().summary.get("remove"), Some(&5));
    }

    #[test]
    fn grace_delays_removal() {
        let mut c = Case::new();
        c.desired = Some(vec![not_wanted("s1")]);
        c.ic_users = vec![ic("i1", Some("s1"), "ann@example.com", "x")];
        c.links.insert("s1".into(), "i1".into());
        c.policy.grace_runs = 3;
        c.policy.max_removal_percent = 100.0;
        assert!(matches!(
            action_of(&c.run(), "ann@example.com"),
            UserAction::Skip {
                reason: SkipReason::Grace {
                    missed_runs: 1,
                    needed_runs: 3,
                    ..
                }
            }
        ));
    }

    #[test]
    fn least_privilege_skips_creates_naming_the_scope_and_still_updates_and_removes() {
        let mut c = Case::new();
        c.granted = [
            scopes::READ_USERS,
            scopes::UPDATE_USERS,
            scopes::DELETE_USERS,
            scopes::READ_GROUPS,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        c.policy.max_removal_percent = 100.0;
        c.desired = Some(vec![
            want("s1", "new@example.com", "x"),
            want("s2", "mover@example.com", "New title"),
            not_wanted("s3"),
        ]);
        c.ic_users = vec![
            ic("i2", Some("s2"), "mover@example.com", "Old"),
            ic("i3", Some("s3"), "leaver@example.com", "x"),
        ];
        c.links.insert("s2".into(), "i2".into());
        c.links.insert("s3".into(), "i3".into());
        let p = c.run();
        assert!(matches!(
            action_of(&p, "new@example.com"),
            UserAction::Skip { reason: SkipReason::MissingScope { scope } } if scope == scopes::CREATE_USERS
        ));
        assert!(matches!(
            action_of(&p, "mover@example.com"),
            UserAction::Update { .. }
        ));
        assert!(matches!(
            action_of(&p, "leaver@example.com"),
            UserAction::Remove { .. }
        ));
    }

    #[test]
    fn on_create_and_if_empty_policies() {
        let mut c = Case::new();
        let mut d = want("s1", "ann@example.com", "Counsel");
        if let Desired::Wanted { policies, .. } = &mut d.state {
            let policies = std::sync::Arc::make_mut(policies);
            policies.insert("title".into(), ApplyPolicy::OnCreate);
            policies.insert(DEPT.into(), ApplyPolicy::IfEmpty);
        }
        c.desired = Some(vec![d]);
        let mut cur = ic("i1", Some("s1"), "ann@example.com", "Something else");
        cur["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"] =
            json!("Sales");
        c.ic_users = vec![cur];
        assert_eq!(action_of(&c.run(), "ann@example.com"), &UserAction::Noop);
    }

    #[test]
    fn a_managed_group_gone_from_the_source_is_deleted_unless_a_group_failed() {
        let mut c = Case::new();
        c.ic_groups = vec![
            json!({"id": "G1", "externalId": "g1", "displayName": "Legal", "members": []}),
            json!({"id": "G9", "displayName": "Hand-made", "members": []}),
        ];
        c.group_links.insert("g1".into(), "G1".into());
        let p = c.run();
        let legal = p.groups.iter().find(|g| g.display_name == "Legal").unwrap();
        assert_eq!(legal.action, GroupAction::Delete);
        assert!(p.groups.iter().all(|g| g.display_name != "Hand-made"));
        c.group_errors = vec!["cn=legal: groups.display_name: no value".into()];
        let p = c.run();
        let legal = p.groups.iter().find(|g| g.display_name == "Legal").unwrap();
        assert!(matches!(
            &legal.action,
            GroupAction::Skip { reason: SkipReason::Held { rule } } if rule.contains("cn=legal")
        ));
    }

    #[test]
    fn an_incomplete_source_creates_and_updates_but_removes_nobody() {
        let mut c = Case::new();
        // Read: ann (moved: new title) and cid (joiner). Not read: bob, who is linked and in
        // the Sales group; dan, disabled in the source, would be a leaver by deactivation.
        let mut dan = want("s4", "dan@example.com", "x");
        dan.state = Desired::NotWanted {
            reason: "disabled in the source".into(),
        };
        // Ann's department comes out empty: in a complete read it is cleared, in an incomplete
        // one it may come from someone not read, so it is left as it is.
        let mut ann = want("s1", "ann@example.com", "Partner");
        if let Desired::Wanted { user, .. } = &mut ann.state {
            let mut v = user.parse();
            v.as_object_mut()
                .unwrap()
                .remove(DEPT.rsplit_once(':').unwrap().0);
            *user = v.into();
        }
        c.desired = Some(vec![ann, want("s3", "cid@example.com", "x"), dan]);
        c.ic_users = vec![
            ic("i1", Some("s1"), "ann@example.com", "Counsel"),
            ic("i2", Some("s2"), "bob@example.com", "x"),
            ic("i4", Some("s4"), "dan@example.com", "x"),
        ];
        for (s, i) in [("s1", "i1"), ("s2", "i2"), ("s4", "i4")] {
            c.links.insert(s.into(), i.into());
        }
        c.groups = vec![DesiredGroup {
            source_id: "g2".into(),
            locator: "cn=sales".into(),
            display_name: "Sales".into(),
            // Dan, disabled, is still a member in the directory.
            members: ["s3".to_string(), "s4".to_string()].into(),
        }];
        c.ic_groups = vec![
            json!({"id": "G2", "externalId": "g2", "displayName": "Sales",
                   "members": [{"value": "i1"}, {"value": "i2"}]}),
            json!({"id": "G1", "externalId": "g1", "displayName": "Legal", "members": []}),
        ];
        c.group_links.insert("g1".into(), "G1".into());
        c.group_links.insert("g2".into(), "G2".into());
        // Complete, the same input removes bob and dan, clears ann's department, takes ann out
        // of Sales, and deletes Legal.
        c.policy.allow_removals = 100;
        let p = c.run();
        assert!(matches!(
            action_of(&p, "bob@example.com"),
            UserAction::Remove { .. }
        ));
        assert!(matches!(
            action_of(&p, "dan@example.com"),
            UserAction::Remove { .. }
        ));
        let paths = |p: &Plan| -> Vec<String> {
            match action_of(p, "ann@example.com") {
                UserAction::Update { changes } => changes.iter().map(|c| c.path.clone()).collect(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(paths(&p), vec!["title".to_string(), DEPT.to_string()]);
        let sales = p.groups.iter().find(|g| g.display_name == "Sales").unwrap();
        assert_eq!(sales.remove, vec!["i1".to_string()], "bob is leaving");
        assert_eq!(sales.add, vec!["s3".to_string()], "dan is leaving");
        assert!(p.groups.iter().any(|g| g.action == GroupAction::Delete));

        c.incomplete = Some("size limit exceeded after 3 entries".into());
        let p = c.run();
        assert!(!p.source_complete);
        assert_eq!(
            p.source_incomplete.as_deref(),
            Some("size limit exceeded after 3 entries")
        );
        assert_eq!(paths(&p), vec!["title".to_string()], "nothing is cleared");
        assert!(p.converged.is_empty(), "nothing is fingerprinted");
        assert!(matches!(
            action_of(&p, "cid@example.com"),
            UserAction::Create { .. }
        ));
        for who in ["bob@example.com", "dan@example.com"] {
            let line = p.users.iter().find(|u| u.user_name == who).unwrap();
            assert!(
                matches!(&line.action, UserAction::Skip { reason: SkipReason::Held { rule } }
                    if rule.contains("incomplete")),
                "{line:?}"
            );
            // Nothing a reviewed saved plan could release.
            assert!(line.held_action.is_none(), "{line:?}");
        }
        let sales = p.groups.iter().find(|g| g.display_name == "Sales").unwrap();
        assert!(sales.remove.is_empty(), "{sales:?}");
        assert_eq!(sales.add, vec!["s3".to_string()]);
        let legal = p.groups.iter().find(|g| g.display_name == "Legal").unwrap();
        assert!(matches!(
            &legal.action,
            GroupAction::Skip {
                reason: SkipReason::Held { .. }
            }
        ));
        assert!(p.notes.iter().any(|n| n.contains("incomplete")));
    }

    #[test]
    fn groups_are_created_and_membership_follows() {
        let mut c = Case::new();
        c.desired = Some(vec![
            want("s1", "ann@example.com", "x"),
            want("s2", "bob@example.com", "x"),
        ]);
        c.ic_users = vec![
            ic("i1", Some("s1"), "ann@example.com", "x"),
            ic("i2", Some("s2"), "bob@example.com", "x"),
        ];
        c.links.insert("s1".into(), "i1".into());
        c.links.insert("s2".into(), "i2".into());
        c.groups = vec![
            DesiredGroup {
                source_id: "g1".into(),
                locator: "cn=legal".into(),
                display_name: "Legal".into(),
                members: ["s1".to_string()].into(),
            },
            DesiredGroup {
                source_id: "g2".into(),
                locator: "cn=sales".into(),
                display_name: "Sales (renamed)".into(),
                members: ["s2".to_string()].into(),
            },
        ];
        c.ic_groups = vec![
            json!({"id": "G2", "externalId": "g2", "displayName": "Sales",
                                  "members": [{"value": "i1"}, {"value": "hand-added"}]}),
        ];
        let p = c.run();
        let legal = p.groups.iter().find(|g| g.display_name == "Legal").unwrap();
        assert_eq!(legal.action, GroupAction::Create);
        assert_eq!(legal.add, vec!["s1".to_string()]);
        let sales = p
            .groups
            .iter()
            .find(|g| g.source_id.as_deref() == Some("g2"))
            .unwrap();
        assert!(matches!(&sales.action, GroupAction::Rename { from } if from == "Sales"));
        assert_eq!(sales.add, vec!["s2".to_string()]);
        assert_eq!(
            sales.remove,
            vec!["i1".to_string()],
            "unmanaged members stay"
        );
    }

    #[test]
    fn a_member_whose_create_is_skipped_is_not_added_to_a_group() {
        let mut c = Case::new();
        c.desired = Some(vec![
            want("s1", "ann@example.com", "x"),
            want("s2", "bob@example.com", "x"),
        ]);
        c.ic_users = vec![ic("i1", Some("s1"), "ann@example.com", "x")];
        c.links.insert("s1".into(), "i1".into());
        c.granted.remove(scopes::CREATE_USERS);
        c.groups = vec![DesiredGroup {
            source_id: "g1".into(),
            locator: "cn=legal".into(),
            display_name: "Legal".into(),
            members: ["s1".to_string(), "s2".to_string()].into(),
        }];
        c.ic_groups = vec![
            json!({"id": "G1", "externalId": "g1", "displayName": "Legal", "members": [{"value": "i1"}]}),
        ];
        c.group_links.insert("g1".into(), "G1".into());
        let p = c.run();
        assert!(matches!(
            action_of(&p, "bob@example.com"),
            UserAction::Skip {
                reason: SkipReason::MissingScope { .. }
            }
        ));
        let legal = &p.groups[0];
        assert_eq!(legal.action, GroupAction::Noop);
        assert!(legal.add.is_empty() && legal.remove.is_empty(), "{legal:?}");
        // Shown as a member waiting for their account, not silently dropped.
        assert_eq!(legal.pending, vec!["s2".to_string()]);
        assert!(!p.has_writes(), "nothing can be written: {p:?}");
        let text = crate::report::render(&p, crate::report::Format::Text, false).unwrap();
        assert!(
            text.contains("+ bob@example.com (uid=s2,ou=people,dc=example,dc=test) (pending, not in Ironclad: missing scope"),
            "{text}"
        );
    }

    #[test]
    fn without_group_write_scopes_membership_is_drift_only() {
        let mut c = Case::new();
        c.granted.remove(scopes::UPDATE_GROUPS);
        c.desired = Some(vec![want("s1", "ann@example.com", "x")]);
        c.ic_users = vec![ic("i1", Some("s1"), "ann@example.com", "x")];
        c.groups = vec![DesiredGroup {
            source_id: "g1".into(),
            locator: "cn=legal".into(),
            display_name: "Legal".into(),
            members: ["s1".to_string()].into(),
        }];
        c.ic_groups =
            vec![json!({"id": "G1", "externalId": "g1", "displayName": "Legal", "members": []})];
        let p = c.run();
        let g = &p.groups[0];
        assert!(matches!(
            &g.action,
            GroupAction::Skip {
                reason: SkipReason::MissingScope { .. }
            }
        ));
        assert_eq!(g.add, vec!["s1".to_string()], "drift is still reported");
    }

    /// A converged, linked user: desired and Ironclad agree.
    fn converged_case() -> Case {
        let mut c = Case::new();
        c.desired = Some(vec![want("s1", "ann@example.com", "Counsel")]);
        c.ic_users = vec![ic("i1", Some("s1"), "ann@example.com", "Counsel")];
        c.links.insert("s1".into(), "i1".into());
        c
    }

    #[test]
    fn a_converged_user_is_fingerprinted_once_and_then_not_compared() {
        let mut c = converged_case();
        let first = c.run();
        assert_eq!(action_of(&first, "ann@example.com"), &UserAction::Noop);
        assert_eq!(first.converged.len(), 1);
        assert_eq!(first.converged[0].0, "s1");
        c.converged = first.converged.iter().map(|(_, fp)| *fp).collect();
        let second = c.run();
        assert_eq!(action_of(&second, "ann@example.com"), &UserAction::Noop);
        assert!(second.converged.is_empty(), "nothing new to record");
        // The shortcut is taken: with the fingerprint known, an Ironclad value that differs
        // under the same lastModified (which Ironclad never serves) is not looked at.
        c.ic_users[0]["title"] = json!("Paralegal");
        assert_eq!(action_of(&c.run(), "ann@example.com"), &UserAction::Noop);
    }

    #[test]
    fn a_change_on_either_side_is_compared_again() {
        let mut c = converged_case();
        c.converged = c.run().converged.into_iter().map(|(_, fp)| fp).collect();
        // Changed in Ironclad: lastModified moves, the fingerprint no longer matches.
        let mut edited = c.ic_users.clone();
        edited[0]["title"] = json!("Paralegal");
        edited[0]["meta"]["lastModified"] = json!("2026-11-20T08:00:00.123Z");
        let mut ironclad_side = converged_case();
        ironclad_side.ic_users = edited;
        ironclad_side.converged = c.converged.clone();
        let p = ironclad_side.run();
        assert!(matches!(
            action_of(&p, "ann@example.com"),
            UserAction::Update { .. }
        ));
        assert!(p.converged.is_empty());
        // Changed in the source: the desired text differs.
        let mut source_side = converged_case();
        source_side.desired = Some(vec![want("s1", "ann@example.com", "Partner")]);
        source_side.converged = c.converged.clone();
        let p = source_side.run();
        let UserAction::Update { changes } = action_of(&p, "ann@example.com") else {
            panic!("expected an update");
        };
        assert_eq!(changes[0].path, "title");
        // Changed policies (a mapping that now writes title only on create): compared again.
        let mut policy_side = converged_case();
        policy_side.desired = Some(vec![want("s1", "ann@example.com", "Counsel")]);
        if let Some(Desired::Wanted { policies: each, .. }) =
            policy_side.desired.as_mut().map(|d| &mut d[0].state)
        {
            let mut p = policies();
            p.insert("title".into(), ApplyPolicy::OnCreate);
            *each = p.into();
        }
        policy_side.converged = c.converged.clone();
        let p = policy_side.run();
        assert_eq!(action_of(&p, "ann@example.com"), &UserAction::Noop);
        assert_eq!(
            p.converged.len(),
            1,
            "a new fingerprint for the new policies"
        );
    }

    #[test]
    fn no_fingerprint_without_a_settled_last_modified_or_a_store_link() {
        // Modified a second before the run: a same-tick change could hide behind it.
        let mut recent = converged_case();
        recent.ic_users[0]["meta"]["lastModified"] = json!("2026-11-23T11:59:59Z");
        assert!(recent.run().converged.is_empty());
        // No lastModified at all.
        let mut none = converged_case();
        none.ic_users[0].as_object_mut().unwrap().remove("meta");
        assert!(none.run().converged.is_empty());
        // Matched by externalId only, not linked in the store.
        let mut unlinked = converged_case();
        unlinked.links.clear();
        let p = unlinked.run();
        assert_eq!(action_of(&p, "ann@example.com"), &UserAction::Noop);
        assert!(p.converged.is_empty());
    }

    #[test]
    fn a_fingerprint_stands_only_for_its_own_ironclad_user() {
        let recorded: HashSet<Fingerprint> = converged_case()
            .run()
            .converged
            .into_iter()
            .map(|(_, fp)| fp)
            .collect();
        // The same person and values, linked to another Ironclad user: compared, and a
        // fingerprint of its own recorded.
        let mut other = Case::new();
        other.desired = Some(vec![want("s1", "ann@example.com", "Counsel")]);
        other.ic_users = vec![ic("i2", Some("s1"), "ann@example.com", "Counsel")];
        other.links.insert("s1".into(), "i2".into());
        other.converged = recorded.clone();
        let p = other.run();
        assert_eq!(action_of(&p, "ann@example.com"), &UserAction::Noop);
        assert_eq!(p.converged.len(), 1);
        assert!(!recorded.contains(&p.converged[0].1));
    }

    #[test]
    fn a_known_user_still_meets_the_name_rules() {
        let mut c = converged_case();
        c.converged = c.run().converged.into_iter().map(|(_, fp)| fp).collect();
        c.policy.protected = vec!["ann@*".into()];
        assert!(matches!(
            action_of(&c.run(), "ann@example.com"),
            UserAction::Skip {
                reason: SkipReason::Protected { .. }
            }
        ));
    }

    #[test]
    fn the_target_index_finds_users_as_the_maps_it_replaced_did() {
        let users: Vec<IroncladUser> = [
            json!({"id": "a", "userName": "Ann@Example.com", "externalId": "x1",
                   "emails": [{"value": "ann@example.com"}, {"value": "A2@example.com"}]}),
            json!({"id": "b", "userName": "bob@example.com", "externalId": "x1",
                   "emails": [{"value": "ANN@example.com"}]}),
            json!({"id": "c", "userName": "ann@example.com"}),
        ]
        .iter()
        .filter_map(IroncladUser::from_value)
        .collect();
        let index = TargetIndex::new(&users);
        let t = Target::new(&users, Some(&index));
        assert!(matches!(t.index, Cow::Borrowed(_)));
        assert_eq!(t.user("b").map(|u| &*u.user_name), Some("bob@example.com"));
        assert_eq!(t.id("c"), Some("c"));
        assert_eq!(t.user("z").map(|u| &*u.id), None);
        // The later user takes a userName or externalId over; the first keeps an address.
        assert_eq!(t.by_user_name("ann@example.com"), Some("c"));
        assert_eq!(t.by_external_id("x1"), Some("b"));
        assert_eq!(t.by_email("ann@example.com"), Some("a"));
        assert_eq!(t.by_email("a2@example.com"), Some("a"));
        assert_eq!(t.by_email("nobody@example.com"), None);
        let mut ids: Vec<&str> = t.ids().collect();
        ids.sort_unstable();
        assert_eq!(ids, ["a", "b", "c"]);
        // An index built for another listing is not used.
        let fewer = &users[..2];
        let t = Target::new(fewer, Some(&index));
        assert!(matches!(t.index, Cow::Owned(_)));
        assert_eq!(t.by_user_name("ann@example.com"), Some("a"));
    }

    #[test]
    fn desired_names_are_counted_trimmed_and_case_insensitively() {
        let names = DesiredNames::new(&[
            want("s1", "Ann@Example.com", "A"),
            want("s2", " ann@example.com ", "B"),
            want("s3", "bob@example.com", "C"),
            DesiredUser {
                source_id: "s4".into(),
                locator: "uid=s4".into(),
                state: Desired::NotWanted {
                    reason: "out of scope".into(),
                },
            },
        ]);
        assert_eq!(names.len(), 4);
        assert_eq!(names.name(1), "ann@example.com");
        assert_eq!(names.name(3), "");
        assert_eq!(names.count("ann@example.com"), 2);
        assert_eq!(names.count("bob@example.com"), 1);
        assert_eq!(names.count("carol@example.com"), 0);
    }

    #[test]
    fn desired_names_read_on_several_threads_keep_their_positions() {
        // Enough entries for the threaded path, every seventh without a name and every name
        // wanted twice (once in upper case, far apart).
        let n = 3 * super::super::par::PARALLEL_FROM + 5;
        let desired: Vec<DesiredUser> = (0..n)
            .map(|i| {
                let name = format!("u{}@example.com", i % (n / 2));
                match i % 7 {
                    0 => DesiredUser {
                        source_id: format!("s{i}").into(),
                        locator: format!("uid=s{i}").into(),
                        state: Desired::NotWanted {
                            reason: "out of scope".into(),
                        },
                    },
                    _ if i % 2 == 0 => want(&format!("s{i}"), &name.to_uppercase(), "x"),
                    _ => want(&format!("s{i}"), &name, "x"),
                }
            })
            .collect();
        let names = DesiredNames::new(&desired);
        assert_eq!(names.len(), n);
        for (i, d) in desired.iter().enumerate() {
            let expected = match &d.state {
                Desired::Wanted { user, .. } => user.top_str("userName").unwrap_or_default(),
                _ => String::new(),
            };
            assert_eq!(names.name(i), expected, "entry {i}");
        }
        let wanted = |k: &str| {
            desired
                .iter()
                .filter(|d| matches!(d.state, Desired::Wanted { .. }))
                .filter(|d| {
                    let Desired::Wanted { user, .. } = &d.state else {
                        return false;
                    };
                    user.top_str("userName").unwrap_or_default().to_lowercase() == k
                })
                .count() as u32
        };
        assert_eq!(names.count("u1@example.com"), 2);
        for k in ["u0@example.com", "u1@example.com", "u100@example.com"] {
            assert_eq!(names.count(k), wanted(k), "{k}");
        }
    }

    #[test]
    fn lines_sort_by_lower_cased_user_name_as_before() {
        for (a, b) in [
            ("Ann", "bob"),
            ("ÄNN", "änn"),
            ("b", "B"),
            ("Zoë", "zoe"),
            ("", "a"),
        ] {
            assert_eq!(
                cmp_lower(a, b),
                a.to_lowercase().cmp(&b.to_lowercase()),
                "{a} {b}"
            );
        }
    }
}
