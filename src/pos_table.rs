//! A hash table from a string key to a position in some list, which stores the positions
//! only: the key is read back from the list through a function the caller passes, so no key
//! is copied. At 100,000 entries, copying every id and DN into a table costs more than 20 MB.
//! Used for the mapping's lookups and for the LDAP reader's duplicate-id check and member DNs.
//!
//! What does not live here: what the positions number (each caller's own list).

use std::hash::BuildHasher;

/// A hash table from an entry's id or DN to its position that stores positions only: the key
/// is read back from the snapshot, so no id or DN is copied (at 100,000 entries the copies
/// cost more than 20 MB).
pub(crate) struct PosTable {
    table: hashbrown::HashTable<u32>,
    /// foldhash: several times faster than SipHash on ids and DNs, and seeded per process.
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for PosTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PosTable({} entries)", self.table.len())
    }
}

impl PosTable {
    pub(crate) fn with_capacity(n: usize) -> Self {
        PosTable {
            table: hashbrown::HashTable::with_capacity(n),
            hasher: Default::default(),
        }
    }
    /// Adds `pos` under `key` unless the key is already there (the first entry wins).
    /// Returns the position already there, if any. Positions beyond `u32` are not stored.
    pub(crate) fn insert_first<'s>(
        &mut self,
        key: &str,
        pos: usize,
        key_at: impl Fn(u32) -> &'s str,
    ) -> Option<usize> {
        let pos = u32::try_from(pos).ok()?;
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        match self
            .table
            .entry(hash, |p| key_at(*p) == key, |p| hasher.hash_one(key_at(*p)))
        {
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(pos);
                None
            }
            hashbrown::hash_table::Entry::Occupied(o) => Some(*o.get() as usize),
        }
    }
    pub(crate) fn get<'s>(&self, key: &str, key_at: impl Fn(u32) -> &'s str) -> Option<usize> {
        self.table
            .find(self.hasher.hash_one(key), |p| key_at(*p) == key)
            .map(|p| *p as usize)
    }
    pub(crate) fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.table.iter().map(|p| *p as usize)
    }
}
