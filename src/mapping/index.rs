//! Lookup tables over one snapshot, built once per evaluation run: every entry by stable id and
//! by DN, every group by name, and group membership with nesting followed (by position, so no
//! id is copied). Expressions (`lookup`, `member_of`, `groups`) and scope rules read them.
//!
//! The tables share the snapshot through an `Arc` (expression values must be `'static`) and
//! never copy an entry. What does not live here: deciding scope or attributes (see
//! [`super::eval`]).

use super::expr::{dn_rdns, normalize_dn};
use crate::model::{Entry, Snapshot};
use crate::pos_table::PosTable;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The entry at a position of a snapshot (users first, then groups).
fn entry_at(snapshot: &Snapshot, pos: usize) -> Option<&Entry> {
    let n_users = snapshot.users.len();
    if pos < n_users {
        snapshot.users.get(pos)
    } else {
        snapshot.groups.get(pos - n_users).map(|g| &g.entry)
    }
}

fn id_at(snapshot: &Snapshot, pos: u32) -> &str {
    entry_at(snapshot, pos as usize).map_or("", |e| e.id.as_str())
}

fn dn_at(snapshot: &Snapshot, pos: u32) -> &str {
    entry_at(snapshot, pos as usize).map_or("", |e| e.locator.as_str())
}

/// The lookup tables. Positions number users first (snapshot order), then groups.
#[derive(Debug)]
pub(crate) struct Index {
    pub snapshot: Arc<Snapshot>,
    /// Number of users (positions below it are users).
    pub n_users: usize,
    /// Stable id -> position.
    by_id: PosTable,
    /// DN exactly as written -> position.
    by_dn: PosTable,
    /// Normalized DN -> position; built on the first lookup the exact table cannot answer.
    by_normalized_dn: OnceLock<HashMap<String, usize>>,
    /// Lower-cased group names (`cn`, `displayName`, `name`) -> group positions.
    group_by_name: HashMap<String, Vec<usize>>,
    /// User position -> the groups it belongs to, directly or through nesting.
    user_groups: Vec<Vec<usize>>,
    /// Group index (position - n_users) -> user positions, nesting followed, sorted.
    flat_members: Vec<Vec<usize>>,
    /// Group index -> direct user member positions, sorted.
    direct_members: Vec<Vec<usize>>,
}

impl Index {
    /// Builds the tables for a snapshot.
    pub(crate) fn build(snapshot: Arc<Snapshot>) -> Index {
        let n_users = snapshot.users.len();
        let n_groups = snapshot.groups.len();
        let total = n_users + n_groups;
        let mut by_id = PosTable::with_capacity(total);
        let mut by_dn = PosTable::with_capacity(total);
        let entries = snapshot
            .users
            .iter()
            .chain(snapshot.groups.iter().map(|g| &g.entry));
        for (pos, e) in entries.enumerate() {
            by_id.insert_first(&e.id, pos, |p| id_at(&snapshot, p));
            if !e.locator.is_empty() {
                by_dn.insert_first(&e.locator, pos, |p| dn_at(&snapshot, p));
            }
        }
        let mut group_by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (gi, g) in snapshot.groups.iter().enumerate() {
            let mut names: Vec<String> = ["cn", "displayName", "name"]
                .iter()
                .flat_map(|a| g.entry.attrs.get(a).iter())
                .map(|v| v.as_text().to_lowercase())
                .collect();
            names.push(group_name(&g.entry).to_lowercase());
            names.sort();
            names.dedup();
            for n in names {
                group_by_name.entry(n).or_default().push(n_users + gi);
            }
        }
        // Membership by position: direct user members, then a walk through nested groups
        // (each group visited once per walk, so cycles end).
        let resolve = |id: &String| by_id.get(id, |p| id_at(&snapshot, p));
        let mut direct_members = Vec::with_capacity(n_groups);
        let mut direct_groups = Vec::with_capacity(n_groups);
        for g in &snapshot.groups {
            let mut users = Vec::new();
            let mut groups = Vec::new();
            for m in &g.members {
                match resolve(m) {
                    Some(p) if p < n_users => users.push(p),
                    Some(p) => groups.push(p - n_users),
                    None => {}
                }
            }
            users.sort_unstable();
            users.dedup();
            direct_members.push(users);
            direct_groups.push(groups);
        }
        let mut user_groups = vec![Vec::new(); n_users];
        let mut flat_members = Vec::with_capacity(n_groups);
        let mut seen = vec![usize::MAX; n_groups];
        for gi in 0..n_groups {
            let mut users = Vec::new();
            let mut stack = vec![gi];
            while let Some(g) = stack.pop() {
                if seen[g] == gi {
                    continue;
                }
                seen[g] = gi;
                users.extend_from_slice(&direct_members[g]);
                stack.extend(direct_groups[g].iter().copied());
            }
            users.sort_unstable();
            users.dedup();
            for &u in &users {
                user_groups[u].push(n_users + gi);
            }
            flat_members.push(users);
        }
        Index {
            snapshot,
            n_users,
            by_id,
            by_dn,
            by_normalized_dn: OnceLock::new(),
            group_by_name,
            user_groups,
            flat_members,
            direct_members,
        }
    }

    /// Number of entries (users and groups).
    pub(crate) fn len(&self) -> usize {
        self.n_users + self.snapshot.groups.len()
    }

    /// The entry at a position.
    pub(crate) fn entry(&self, pos: usize) -> Option<&Entry> {
        entry_at(&self.snapshot, pos)
    }

    fn by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id, |p| id_at(&self.snapshot, p))
    }

    fn by_dn(&self, dn: &str) -> Option<usize> {
        self.by_dn.get(dn, |p| dn_at(&self.snapshot, p))
    }

    /// Finds an entry by stable id or DN (exact first, then normalized).
    pub(crate) fn find(&self, key: &str) -> Option<usize> {
        // A DN (the usual key, e.g. a manager) is tried as a DN first.
        let found = if key.contains('=') && key.contains(',') {
            self.by_dn(key).or_else(|| self.by_id(key))
        } else {
            self.by_id(key).or_else(|| self.by_dn(key))
        };
        if found.is_some() {
            return found;
        }
        if !key.contains('=') {
            return None;
        }
        let normalized = self.by_normalized_dn.get_or_init(|| {
            self.by_dn
                .positions()
                .filter_map(|p| Some((normalize_dn(&self.entry(p)?.locator), p)))
                .collect()
        });
        normalized.get(&normalize_dn(key)).copied()
    }

    /// The position of the snapshot user with this stable id.
    pub(crate) fn user_position(&self, id: &str) -> Option<usize> {
        self.by_id(id).filter(|p| *p < self.n_users)
    }

    /// The groups a name designates: by DN, by stable id, or by name (case-insensitive).
    pub(crate) fn groups_named(&self, name: &str) -> Vec<usize> {
        for p in [self.by_id(name), self.by_dn(name)].into_iter().flatten() {
            if p >= self.n_users {
                return vec![p];
            }
        }
        if let Some(found) = self.group_by_name.get(&name.to_lowercase()) {
            return found.clone();
        }
        match self.find(name) {
            Some(p) if p >= self.n_users => vec![p],
            _ => Vec::new(),
        }
    }

    /// The groups (positions) a user (position) belongs to, nesting followed.
    pub(crate) fn groups_of(&self, user: usize) -> &[usize] {
        self.user_groups.get(user).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A group's user members (positions): nesting followed when `flatten`, else direct.
    pub(crate) fn members_of(&self, group: usize, flatten: bool) -> &[usize] {
        let gi = group.wrapping_sub(self.n_users);
        let table = if flatten {
            &self.flat_members
        } else {
            &self.direct_members
        };
        table.get(gi).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// A group's name: its `cn`, else `displayName`, else `name`, else the first RDN value of its
/// DN, else its id.
pub(crate) fn group_name(e: &Entry) -> String {
    for a in ["cn", "displayName", "name"] {
        if let Some(v) = e.attrs.first_text(a) {
            if !v.trim().is_empty() {
                return v.into_owned();
            }
        }
    }
    dn_rdns(&e.locator)
        .ok()
        .and_then(|r| r.into_iter().next())
        .and_then(|r| r.avas.into_iter().next())
        .map(|a| a.value)
        .unwrap_or_else(|| e.id.clone())
}

/// An entry as expressions see it: one in the snapshot (no copy), or one given on its own.
#[derive(Debug, Clone)]
pub(crate) enum EntryHandle {
    /// The entry at a position of the index.
    InSnapshot(Arc<Index>, usize),
    /// An entry outside the snapshot (or with attributes that differ from it).
    Own(Arc<Entry>),
}

impl EntryHandle {
    pub(crate) fn get(&self) -> &Entry {
        match self {
            EntryHandle::InSnapshot(ix, pos) => ix.entry(*pos).unwrap_or_else(|| empty()),
            EntryHandle::Own(e) => e,
        }
    }
}

/// Stands in for a position that does not exist (never the case for handles made here).
fn empty() -> &'static Entry {
    static EMPTY: OnceLock<Entry> = OnceLock::new();
    EMPTY.get_or_init(|| Entry {
        id: String::new(),
        locator: String::new(),
        attrs: crate::model::Attributes::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{Attributes, Group};

    fn entry(id: &str, dn: &str) -> Entry {
        Entry {
            id: id.into(),
            locator: dn.into(),
            attrs: Attributes::new(),
        }
    }

    #[test]
    fn lookups_by_id_and_dn_read_keys_back_from_the_snapshot() {
        let snapshot = Snapshot {
            source: "t".into(),
            read_at: chrono::Utc::now(),
            users: vec![
                entry("u1", "uid=a,ou=people,dc=x"),
                entry("u2", "uid=b,ou=people,dc=x"),
                // A repeated id or DN keeps the first position.
                entry("u1", "uid=a,ou=people,dc=x"),
            ],
            groups: vec![Group {
                entry: entry("g1", "cn=staff,ou=groups,dc=x"),
                members: vec!["u2".into(), "nobody".into()],
            }],
        };
        let ix = Index::build(Arc::new(snapshot));
        assert_eq!(ix.find("u1"), Some(0));
        assert_eq!(ix.find("uid=b,ou=people,dc=x"), Some(1));
        assert_eq!(ix.find("UID=B, OU=People,DC=x"), Some(1), "normalized DN");
        assert_eq!(ix.find("cn=staff,ou=groups,dc=x"), Some(3));
        assert_eq!(ix.find("u3"), None);
        assert_eq!(ix.user_position("u2"), Some(1));
        assert_eq!(ix.user_position("g1"), None, "a group is not a user");
        assert_eq!(ix.groups_named("g1"), vec![3]);
        assert_eq!(ix.groups_named("STAFF"), vec![3]);
        assert_eq!(ix.direct_members[0], vec![1]);
    }
}
