//! Lookup tables over one snapshot, built once per evaluation run: every entry by stable id and
//! by normalized DN, every group by name, and each user's groups with nested membership
//! followed. Expressions (`lookup`, `member_of`, `groups`) and scope rules read them.
//!
//! The tables own a copy of each entry (expression values must be `'static`), so building
//! them costs one pass over the snapshot; evaluating an entry then costs no copy at all.
//! What does not live here: deciding scope or attributes (see [`super::eval`]).

use super::expr::{dn_rdns, normalize_dn};
use crate::model::{Attributes, Entry, Snapshot};
use std::collections::HashMap;
use std::sync::Arc;

/// One entry as expressions see it.
#[derive(Debug)]
pub(crate) struct EntryData {
    /// Stable source id.
    pub id: String,
    /// DN or resource URL.
    pub dn: String,
    /// Attributes.
    pub attrs: Attributes,
}

impl EntryData {
    pub(crate) fn from_entry(e: &Entry) -> Arc<EntryData> {
        Arc::new(EntryData {
            id: e.id.clone(),
            dn: e.locator.clone(),
            attrs: e.attrs.clone(),
        })
    }

    /// A group's name: its `cn`, else `displayName`, else `name`, else the first RDN value of
    /// its DN, else its id.
    pub(crate) fn group_name(&self) -> String {
        for a in ["cn", "displayName", "name"] {
            if let Some(v) = self.attrs.first_text(a) {
                if !v.trim().is_empty() {
                    return v.into_owned();
                }
            }
        }
        dn_rdns(&self.dn)
            .ok()
            .and_then(|r| r.into_iter().next())
            .and_then(|r| r.avas.into_iter().next())
            .map(|a| a.value)
            .unwrap_or_else(|| self.id.clone())
    }
}

/// The lookup tables.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Users first (in snapshot order), then groups.
    pub entries: Vec<Arc<EntryData>>,
    /// Number of users at the head of `entries`.
    pub n_users: usize,
    /// Stable id -> position.
    by_id: HashMap<String, usize>,
    /// Normalized DN -> position.
    by_dn: HashMap<String, usize>,
    /// Lower-cased group names (`cn`, `displayName`, `name`) -> group positions.
    group_by_name: HashMap<String, Vec<usize>>,
    /// User position -> positions of the groups it belongs to, directly or through nesting.
    user_groups: HashMap<usize, Vec<usize>>,
    /// Group position -> direct member ids, as read.
    pub direct_members: HashMap<usize, Vec<String>>,
    /// Group position -> user member ids with nesting followed, sorted.
    pub flat_members: HashMap<usize, Vec<String>>,
}

impl Index {
    /// Builds the tables for a snapshot.
    pub(crate) fn build(snapshot: &Snapshot) -> Index {
        let mut ix = Index {
            n_users: snapshot.users.len(),
            ..Index::default()
        };
        ix.entries
            .reserve(snapshot.users.len() + snapshot.groups.len());
        for u in &snapshot.users {
            ix.entries.push(EntryData::from_entry(u));
        }
        for g in &snapshot.groups {
            ix.entries.push(EntryData::from_entry(&g.entry));
        }
        for (pos, e) in ix.entries.iter().enumerate() {
            ix.by_id.entry(e.id.clone()).or_insert(pos);
            if !e.dn.is_empty() {
                ix.by_dn.entry(normalize_dn(&e.dn)).or_insert(pos);
            }
        }
        let flat = snapshot.flattened_members();
        for (gi, g) in snapshot.groups.iter().enumerate() {
            let pos = ix.n_users + gi;
            let data = &ix.entries[pos];
            let mut names: Vec<String> = ["cn", "displayName", "name"]
                .iter()
                .flat_map(|a| data.attrs.get(a).iter())
                .map(|v| v.as_text().to_lowercase())
                .collect();
            names.push(data.group_name().to_lowercase());
            names.sort();
            names.dedup();
            for n in names {
                ix.group_by_name.entry(n).or_default().push(pos);
            }
            ix.direct_members.insert(pos, g.members.clone());
            let members: Vec<String> = flat
                .get(&g.entry.id)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            for m in &members {
                if let Some(&upos) = ix.by_id.get(m) {
                    if upos < ix.n_users {
                        ix.user_groups.entry(upos).or_default().push(pos);
                    }
                }
            }
            ix.flat_members.insert(pos, members);
        }
        ix
    }

    /// Finds an entry by stable id or DN.
    pub(crate) fn find(&self, key: &str) -> Option<usize> {
        if let Some(&p) = self.by_id.get(key) {
            return Some(p);
        }
        self.by_dn.get(&normalize_dn(key)).copied()
    }

    /// The position of the snapshot user with this stable id.
    pub(crate) fn user_position(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied().filter(|p| *p < self.n_users)
    }

    /// The groups a name designates: by DN, by stable id, or by name (case-insensitive).
    pub(crate) fn groups_named(&self, name: &str) -> Vec<usize> {
        if let Some(p) = self.find(name) {
            if p >= self.n_users {
                return vec![p];
            }
        }
        self.group_by_name
            .get(&name.to_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// The groups (positions) a user (position) belongs to, nesting followed.
    pub(crate) fn groups_of(&self, user: usize) -> &[usize] {
        self.user_groups
            .get(&user)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}
