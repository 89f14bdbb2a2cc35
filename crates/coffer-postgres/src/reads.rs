//! Secret metadata served from the node's memory, exactly as fresh as a read from the
//! database: a read returns every change committed (on any node) before it arrived.
//!
//! Every read first learns the journal head's event id through a **fence**: one query
//! (`SELECT … FROM journal_head`) that started after the read arrived. Queries are
//! single-flight and shared: a read that arrives while one is in flight waits for it to end
//! and then takes the next one, which serves every read that queued meanwhile — a round trip
//! per batch of concurrent reads, not per read (the read index of Raft's leases, with the
//! database as the leader). The same query says whether any event between the id the cache
//! was last checked at and the head changed secret metadata (`secret.*`, `environment.*`,
//! `keys.rewrapped`: every change of a secret's metadata publishes one of these); if one did,
//! or the cache fell more than [`MAX_BEHIND`] events behind, the cache is emptied (its epoch
//! moves on). Then the read answers from the cache.
//!
//! A read of a name the cache does not hold needs no fence: its own query of the database
//! started after it arrived. It keeps the answer under the epoch it took *before* that
//! query, and only if the cache was not emptied meanwhile: a metadata change the answer
//! missed committed after the query began, so a fence either has emptied the cache since
//! (the answer is dropped) or has not looked past that change yet (the next one empties it,
//! before any read that arrived after the change is answered).
//!
//! Writes commit in journal order (see `writer`), so a head id covers every commit before
//! it: an answer kept since the last emptying reflects every metadata change up to the head
//! the fence returned.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

use crate::{Db, db, signed, unsigned};
use coffer_store::{EnvName, Environment, SecretMeta, SecretName, StoreResult};

/// Most answers kept; past it the cache is emptied (and fills again with what is read).
const MAX_ENTRIES: usize = 100_000;

/// Most events the fence looks through for metadata changes; a cache further behind is
/// emptied instead.
const MAX_BEHIND: u64 = 10_000;

/// What a metadata read of `(environment, name)` answers: the environment's live
/// incarnation and the secret's metadata, `None` when no environment has that name.
pub(crate) type Answer = Option<(Environment, Option<SecretMeta>)>;

/// The node's metadata cache and its fence.
#[derive(Default)]
pub(crate) struct MetaCache {
    /// The last fence query: when it started and what it found (single flight).
    fence: tokio::sync::Mutex<Option<Fenced>>,
    entries: RwLock<Entries>,
}

/// What a fence query found.
#[derive(Clone, Copy)]
struct Fenced {
    started: Instant,
    /// The cache's epoch once the query's findings were applied.
    epoch: u64,
}

#[derive(Default)]
struct Entries {
    /// Moves on each time the cache is emptied.
    epoch: u64,
    /// The head event id the cache was last checked at.
    checked_at: u64,
    /// By environment name, then secret name (looked up by reference, with no key built).
    map: HashMap<EnvName, HashMap<SecretName, Answer>>,
    /// Answers in `map`.
    len: usize,
}

impl Entries {
    fn find(&self, env: &EnvName, name: &SecretName) -> Option<&Answer> {
        self.map.get(env)?.get(name)
    }

    fn empty(&mut self) {
        self.map.clear();
        self.len = 0;
    }
}

/// A read's standing after its fence: the cache's epoch to read from and keep answers in.
#[derive(Clone, Copy)]
pub(crate) struct Fence {
    epoch: u64,
}

impl MetaCache {
    /// The fence for a read that arrived at `arrived`: a head query that started after it
    /// (its own, or a concurrent read's), applied to the cache.
    /// (A connection is taken only to run the query, not while waiting for another's.)
    pub(crate) async fn fence(&self, pool: &Db, arrived: Instant) -> StoreResult<Fence> {
        let mut last = self.fence.lock().await;
        if let Some(f) = *last
            && f.started >= arrived
        {
            return Ok(Fence { epoch: f.epoch });
        }
        let started = Instant::now();
        let checked_at = self.read_entries().checked_at;
        let mut c = pool.acquire().await?;
        let (head, changed): (i64, bool) = sqlx::query_as(
            "SELECT h.event_seq, h.event_seq - $1 > $2 OR EXISTS (
                 SELECT 1 FROM events e JOIN audit_log a ON a.seq = e.audit_seq
                 WHERE e.seq > GREATEST($1, h.event_seq - $2) AND e.seq <= h.event_seq
                   AND (a.action LIKE 'secret.%' OR a.action LIKE 'environment.%'
                        OR a.action = 'keys.rewrapped'))
             FROM journal_head h WHERE h.id = 1",
        )
        .bind(signed(checked_at)?)
        .bind(signed(MAX_BEHIND)?)
        .fetch_one(&mut *c)
        .await
        .map_err(db)?;
        let head = unsigned(head)?;
        let epoch = {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            if changed {
                entries.empty();
                entries.epoch += 1;
            }
            entries.checked_at = entries.checked_at.max(head);
            entries.epoch
        };
        *last = Some(Fenced { started, epoch });
        Ok(Fence { epoch })
    }

    /// Whether the cache holds an answer for `(env, name)` (of any epoch): only then is a
    /// fence worth waiting for.
    pub(crate) fn holds(&self, env: &EnvName, name: &SecretName) -> bool {
        self.read_entries().find(env, name).is_some()
    }

    /// The cache's epoch now, for an answer about to be read from the database.
    pub(crate) fn current(&self) -> Fence {
        Fence {
            epoch: self.read_entries().epoch,
        }
    }

    /// The kept answer for `(env, name)`, if the cache is still at `fence`'s epoch.
    pub(crate) fn get(&self, fence: Fence, env: &EnvName, name: &SecretName) -> Option<Answer> {
        let entries = self.read_entries();
        if entries.epoch != fence.epoch {
            return None;
        }
        entries.find(env, name).cloned()
    }

    /// Keeps `answer`, read from the database after `fence` (a fence's, or [`Self::current`]),
    /// unless the cache was emptied since (the answer may predate the change that emptied it).
    pub(crate) fn keep(&self, fence: Fence, env: &EnvName, name: &SecretName, answer: &Answer) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.epoch != fence.epoch {
            return;
        }
        if entries.len >= MAX_ENTRIES {
            entries.empty();
        }
        let replaced = entries
            .map
            .entry(env.clone())
            .or_default()
            .insert(name.clone(), answer.clone());
        if replaced.is_none() {
            entries.len += 1;
        }
    }

    /// The cache's epoch (tests: whether a write emptied it).
    #[cfg(test)]
    pub(crate) fn epoch(&self) -> u64 {
        self.read_entries().epoch
    }

    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }
}
