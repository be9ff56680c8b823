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
    /// Each position with its key's hash, so that growing the table does not hash every key
    /// again (ids and DNs are long: rehashing them was 1% of a run at 100,000 people).
    table: hashbrown::HashTable<(u64, u32)>,
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
        match self
            .table
            .entry(hash, |&(h, p)| h == hash && key_at(p) == key, |&(h, _)| h)
        {
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((hash, pos));
                None
            }
            hashbrown::hash_table::Entry::Occupied(o) => Some(o.get().1 as usize),
        }
    }
    pub(crate) fn get<'s>(&self, key: &str, key_at: impl Fn(u32) -> &'s str) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |&(h, p)| h == hash && key_at(p) == key)
            .map(|&(_, p)| p as usize)
    }
    pub(crate) fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.table.iter().map(|&(_, p)| p as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::PosTable;

    #[test]
    fn keys_are_found_after_the_table_grows_and_the_first_entry_wins() {
        let keys: Vec<String> = (0..5000)
            .map(|i| format!("uid=u{i},ou=people,dc=example"))
            .collect();
        let mut t = PosTable::with_capacity(4);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(t.insert_first(k, i, |p| keys[p as usize].as_str()), None);
        }
        // A second entry with a key already there: the first position is kept and returned.
        let again = format!("uid=u{},ou=people,dc=example", 4321);
        assert_eq!(
            t.insert_first(&again, 9999, |p| keys[p as usize].as_str()),
            Some(4321)
        );
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(t.get(k, |p| keys[p as usize].as_str()), Some(i));
        }
        assert_eq!(t.get("uid=nobody", |p| keys[p as usize].as_str()), None);
        let mut all: Vec<usize> = t.positions().collect();
        all.sort_unstable();
        assert_eq!(all, (0..5000).collect::<Vec<_>>());
    }
}
