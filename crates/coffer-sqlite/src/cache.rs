//! Read caches fenced by the catalog epoch.
//!
//! The writer thread is the only writer of the file (`coffer serve`'s data-dir lock sees
//! to that), and it adds one to the *catalog epoch* after every transaction that changed
//! a catalog row (anything but the journal and the runs: see `writer::HOT_TABLES`), before
//! it acknowledges any write in it. A cache entry is tagged with the epoch read *before*
//! the row was read, and is used only while the epoch is still that number. So a read that
//! starts after a catalog write was acknowledged never sees a row from before it, and
//! between catalog writes a point read costs no SQLite transaction, however many audit
//! rows, events and runs are being written meanwhile (a resolve's audit row, a run's
//! lease). A catalog shared by several processes (PostgreSQL) has no such cache.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

/// Entries kept at most by one cache; past it the cache starts over.
pub(crate) const MAX_ENTRIES: usize = 100_000;

/// Values by an outer key (an environment) and an inner key (a name in it), each tagged
/// with the catalog epoch it was read at. Two levels so that a lookup borrows both keys
/// instead of building a pair.
pub(crate) struct EpochCache<O, I, V> {
    inner: RwLock<Entries<O, I, V>>,
}

struct Entries<O, I, V> {
    by_outer: HashMap<O, HashMap<I, (u64, V)>>,
    len: usize,
}

impl<O, I, V> Default for EpochCache<O, I, V> {
    fn default() -> Self {
        EpochCache {
            inner: RwLock::new(Entries {
                by_outer: HashMap::new(),
                len: 0,
            }),
        }
    }
}

impl<O: Hash + Eq + Clone, I: Hash + Eq + Clone, V: Clone> EpochCache<O, I, V> {
    /// The value read at `epoch`, if one was.
    pub(crate) fn get(&self, outer: &O, inner: &I, epoch: u64) -> Option<V> {
        let entries = self.inner.read().unwrap_or_else(|p| p.into_inner());
        match entries.by_outer.get(outer)?.get(inner) {
            Some((tag, value)) if *tag == epoch => Some(value.clone()),
            _ => None,
        }
    }

    /// Keeps `value`, read after `epoch` was loaded.
    pub(crate) fn insert(&self, outer: &O, inner: &I, epoch: u64, value: V) {
        let mut entries = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if entries.len >= MAX_ENTRIES {
            entries.by_outer.clear();
            entries.len = 0;
        }
        let added = entries
            .by_outer
            .entry(outer.clone())
            .or_default()
            .insert(inner.clone(), (epoch, value))
            .is_none();
        entries.len += usize::from(added);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_answers_only_at_its_epoch() {
        let cache: EpochCache<&str, &str, u32> = EpochCache::default();
        cache.insert(&"prod", &"A", 7, 1);
        assert_eq!(cache.get(&"prod", &"A", 7), Some(1));
        assert_eq!(cache.get(&"prod", &"A", 8), None, "a later epoch");
        assert_eq!(cache.get(&"prod", &"B", 7), None);
        assert_eq!(cache.get(&"dev", &"A", 7), None);
        cache.insert(&"prod", &"A", 8, 2);
        assert_eq!(cache.get(&"prod", &"A", 8), Some(2), "replaced");
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache: EpochCache<u8, usize, ()> = EpochCache::default();
        for i in 0..MAX_ENTRIES {
            cache.insert(&0, &i, 1, ());
        }
        assert!(cache.get(&0, &1, 1).is_some());
        cache.insert(&1, &0, 1, ());
        assert!(cache.get(&0, &1, 1).is_none(), "emptied when full");
        assert!(cache.get(&1, &0, 1).is_some());
    }
}
