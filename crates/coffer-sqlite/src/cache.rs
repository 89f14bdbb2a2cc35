//! Read caches fenced by the catalog epoch.
//!
//! The writer thread is the only writer of the file (`coffer serve`'s data-dir lock sees
//! to that). Around the commit of a transaction that changed a catalog row (a row of any
//! table but `writer::HOT_TABLES`: the journal and the runs), it moves the [`CatalogEpoch`]
//! twice, like a sequence lock: to an odd number before `COMMIT`, to the next even number
//! after it and before it acknowledges any write in it.
//!
//! A cached answer is one read entirely within one even epoch: the epoch is loaded before
//! the rows are read and loaded again after, and the answer is kept (tagged with that
//! epoch) only when both loads agree and are even. It is used the same way: looked up under
//! an even epoch that is still unchanged after the lookup. So a read that starts after a
//! catalog write was acknowledged never sees a row from before it; an answer drawn from
//! several entries (`get_many`) is one snapshot, never half of an atomic batch; and
//! between catalog writes a point read costs no SQLite transaction, however many audit
//! rows, events and runs are being written meanwhile (a resolve's audit row, a run's
//! lease). PostgreSQL, which many nodes write, fences its metadata cache differently
//! (`coffer-postgres`'s `reads.rs`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Approximate bytes the secret metadata cache holds at most.
pub(crate) const META_BUDGET: usize = 32 << 20;
/// Approximate bytes the sealed value cache holds at most (a value is up to ~90 KB sealed).
pub(crate) const VALUE_BUDGET: usize = 64 << 20;
/// Approximate bytes the environment cache holds at most.
pub(crate) const ENVIRONMENT_BUDGET: usize = 4 << 20;
/// Approximate bytes the function cache holds at most.
pub(crate) const FUNCTION_BUDGET: usize = 16 << 20;
/// What an entry weighs besides its variable-length text.
pub(crate) const ENTRY_OVERHEAD: usize = 160;

/// The catalog epoch: even while no catalog commit is under way.
#[derive(Default)]
pub(crate) struct CatalogEpoch(AtomicU64);

impl CatalogEpoch {
    /// The epoch a cached read starts at; `None` while a catalog commit is under way.
    pub(crate) fn begin(&self) -> Option<u64> {
        let at = self.0.load(Ordering::Acquire);
        at.is_multiple_of(2).then_some(at)
    }

    /// Whether no catalog commit began since [`CatalogEpoch::begin`] returned `at`.
    pub(crate) fn unchanged(&self, at: u64) -> bool {
        fence(Ordering::Acquire);
        self.0.load(Ordering::Relaxed) == at
    }

    /// The writer, before it commits a transaction that changed a catalog row.
    pub(crate) fn committing(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
        fence(Ordering::Release);
    }

    /// The writer, once that commit succeeded or failed, before it answers anyone.
    pub(crate) fn committed(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    /// The number itself, for tests.
    #[cfg(test)]
    pub(crate) fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Values by an outer key (an environment) and an inner key (a name in it), each tagged
/// with the catalog epoch it was read at. Two levels so that a lookup borrows both keys
/// instead of building a pair. Bounded by a budget of approximate bytes (each insert says
/// what its entry weighs): past it the cache starts over. Entries of older epochs stay
/// until then; they are never used.
pub(crate) struct EpochCache<O, I, V> {
    budget: usize,
    inner: RwLock<Entries<O, I, V>>,
}

struct Entries<O, I, V> {
    by_outer: HashMap<O, HashMap<I, (u64, V)>>,
    weight: usize,
}

impl<O: Hash + Eq + Clone, I: Hash + Eq + Clone, V: Clone> EpochCache<O, I, V> {
    /// An empty cache of at most about `budget` bytes.
    pub(crate) fn new(budget: usize) -> Self {
        EpochCache {
            budget,
            inner: RwLock::new(Entries {
                by_outer: HashMap::new(),
                weight: 0,
            }),
        }
    }

    /// The value read at `at`, if one was. Use it only if the epoch is still `at` after
    /// the lookup ([`EpochCache::get`] does both).
    pub(crate) fn lookup(&self, outer: &O, inner: &I, at: u64) -> Option<V> {
        let entries = self.inner.read().unwrap_or_else(|p| p.into_inner());
        match entries.by_outer.get(outer)?.get(inner) {
            Some((tag, value)) if *tag == at => Some(value.clone()),
            _ => None,
        }
    }

    /// Keeps `value`, read entirely within the epoch `at` (checked by the caller).
    pub(crate) fn insert(&self, outer: &O, inner: &I, at: u64, value: V, weight: usize) {
        let weight = weight.max(1);
        let mut entries = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if entries.weight.saturating_add(weight) > self.budget {
            entries.by_outer.clear();
            entries.weight = 0;
        }
        entries.weight += weight;
        // A replaced entry's weight stays counted until the cache starts over.
        entries
            .by_outer
            .entry(outer.clone())
            .or_default()
            .insert(inner.clone(), (at, value));
    }

    /// The cached value, or `read()`'s, kept when `weigh` gives it a weight (`None`: not
    /// to be kept, such as dev mode's plaintext) and the read fell within one even epoch.
    pub(crate) fn get<E>(
        &self,
        epoch: &CatalogEpoch,
        outer: &O,
        inner: &I,
        read: impl FnOnce() -> Result<V, E>,
        weigh: impl FnOnce(&V) -> Option<usize>,
    ) -> Result<V, E> {
        let at = epoch.begin();
        if let Some(at) = at
            && let Some(hit) = self.lookup(outer, inner, at)
            && epoch.unchanged(at)
        {
            return Ok(hit);
        }
        let value = read()?;
        if let Some(at) = at
            && let Some(weight) = weigh(&value)
            && epoch.unchanged(at)
        {
            self.insert(outer, inner, at, value.clone(), weight);
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(_: &u32) -> Option<usize> {
        Some(1)
    }

    #[test]
    fn an_entry_answers_only_at_its_epoch() {
        let epoch = CatalogEpoch::default();
        let cache: EpochCache<&str, &str, u32> = EpochCache::new(1_000);
        let read = |v| move || Ok::<_, ()>(v);
        assert_eq!(cache.get(&epoch, &"prod", &"A", read(1), kept), Ok(1));
        assert_eq!(
            cache.get(&epoch, &"prod", &"A", read(2), kept),
            Ok(1),
            "cached"
        );
        assert_eq!(cache.get(&epoch, &"dev", &"A", read(3), kept), Ok(3));
        epoch.committing();
        assert_eq!(
            cache.get(&epoch, &"prod", &"A", read(4), kept),
            Ok(4),
            "during a commit"
        );
        epoch.committed();
        assert_eq!(
            cache.get(&epoch, &"prod", &"A", read(5), kept),
            Ok(5),
            "after it"
        );
        assert_eq!(cache.get(&epoch, &"prod", &"A", read(6), kept), Ok(5));
        assert_eq!(
            cache.get(&epoch, &"prod", &"B", read(7), |_| None),
            Ok(7),
            "not to be kept"
        );
        assert_eq!(cache.get(&epoch, &"prod", &"B", read(8), kept), Ok(8));
    }

    /// A read during which a catalog commit began is not kept: it may have seen the new
    /// rows under the old epoch's tag.
    #[test]
    fn a_read_that_overlaps_a_commit_is_not_kept() {
        let epoch = CatalogEpoch::default();
        let cache: EpochCache<&str, &str, u32> = EpochCache::new(1_000);
        let during = || {
            epoch.committing();
            Ok::<_, ()>(1)
        };
        assert_eq!(cache.get(&epoch, &"prod", &"A", during, kept), Ok(1));
        epoch.committed();
        assert_eq!(cache.lookup(&"prod", &"A", 0), None);
        assert_eq!(cache.lookup(&"prod", &"A", 2), None);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache: EpochCache<u8, usize, ()> = EpochCache::new(100);
        for i in 0..10 {
            cache.insert(&0, &i, 0, (), 10);
        }
        assert!(cache.lookup(&0, &9, 0).is_some());
        cache.insert(&1, &0, 0, (), 10);
        assert!(cache.lookup(&0, &9, 0).is_none(), "emptied when full");
        assert!(cache.lookup(&1, &0, 0).is_some());
    }
}
