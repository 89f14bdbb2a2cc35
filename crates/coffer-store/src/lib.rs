//! Coffer's storage boundary.
//!
//! One trait per aggregate, one error type, one schema:
//! - [`AccessStore`] keeps environments and API keys, and bootstraps a new catalog.
//! - [`KeyStore`] keeps key canaries, per-version encryption counts and the values found
//!   unreadable.
//! - [`JournalStore`] reads the audit log and the event outbox, and audits denied attempts.
//!   Every write of every store appends its audit row and event in its own transaction
//!   (see [`journal`]).
//! - [`FunctionStore`] and [`RunStore`] keep the runtime plane's functions and runs;
//!   [`OrchestrationStore`] and [`FlowStore`] keep orchestrations and their runs.
//! - [`Catalog`] is all of the above plus [`ConfigStore`]: what one database (SQLite, the
//!   embedded default, or PostgreSQL, each with its migrations) implements.
//! - [`SecretStore`] keeps secret values and their metadata, with revisions for
//!   compare-and-set. The catalog's database implements it (`db`); a NATS JetStream KV bucket
//!   or a Vault KV mount can implement it too.
//! - [`ConfigStore`] keeps plaintext JSON config entries per environment, with revisions for
//!   compare-and-set.
//!
//! - [`ValueStore`] keeps values elsewhere (NATS JetStream KV, Vault KV); [`ExternalSecrets`]
//!   joins one to the catalog's database into a [`SecretStore`] (see [`values`]).
//!
//! Every backend must pass the [`conformance`] suite (feature `conformance`).
//! Backends never see plaintext unless the service runs in dev mode, or the value store
//! keeps raw values on purpose ([`Capabilities::raw_values`]): values arrive sealed.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod journal;
mod model;
mod orchestrations;
mod page;
mod runtime;
pub mod schema;
pub mod values;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::collections::BTreeMap;

use async_trait::async_trait;
use coffer_crypto::KeyVersion;

pub use journal::{
    Action, ActorRef, AuditQuery, AuditRecord, AuditResult, Change, Denial, EventRecord, Origin,
    SubjectPattern,
};
pub use model::*;
pub use orchestrations::*;
pub use page::{PAGE_BYTES, PageFill, PageSize};
pub use runtime::*;
pub use values::{ExternalSecrets, ValueEntry, ValueExpect, ValueStore, ValueVersion};

/// The one error type every backend returns.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition did not hold; `current` is the record's revision (`None` = absent).
    #[error("revision conflict (current revision: {})", current.unwrap_or(0))]
    Conflict {
        /// The revision the record has now.
        current: Option<Revision>,
    },
    /// The record does not exist.
    #[error("not found")]
    NotFound,
    /// A run's attempt no longer holds its lease (it expired, the run was leased again or
    /// finished): nothing was written.
    #[error("the run's lease is no longer held")]
    LeaseLost,
    /// The record already exists.
    #[error("already exists")]
    AlreadyExists,
    /// The operation would leave no admin API key.
    #[error("the last admin API key cannot be revoked")]
    LastAdminKey,
    /// The acting API key was revoked (or its environment deleted) before the write
    /// committed; nothing was written.
    #[error("the acting API key no longer exists")]
    ActorRevoked,
    /// The backend's queue is full; retry shortly. Nothing was written.
    #[error("storage is overloaded")]
    Overloaded,
    /// The backend cannot honour this request (see [`Capabilities`]).
    #[error("not supported by this backend: {0}")]
    Unsupported(&'static str),
    /// Stored data did not parse: the backend holds something Coffer did not write.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The backend could not be reached or failed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a [`SecretStore`] can guarantee; callers check instead of assuming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Writes and deletes honour [`Precondition`] atomically (Vault KV v1 cannot).
    pub compare_and_set: bool,
    /// [`SecretStore::put_many`] applies all entries or none.
    pub atomic_batches: bool,
    /// Values live in the catalog's database: deleting an environment in the catalog
    /// removes its values in the same transaction, and no separate purge is needed (one
    /// would race with a new environment of the same name).
    pub values_in_catalog: bool,
    /// Values are kept as plaintext on purpose, protected at rest by the store itself
    /// (Vault's `raw` value format): the service hands the store plaintext, and never counts,
    /// re-encrypts or verifies those values as awaiting a key.
    pub raw_values: bool,
}

/// Most names one [`SecretStore::get_many`] reads (a function declares at most 64
/// secrets; its job reads them at once).
pub const MAX_GET_MANY: usize = 256;

/// For a catalog's [`SecretStore::get_many`]: the record of each name of `asked`, in its
/// order, from the rows a query `found` (`(name, row)`); `record` builds a name's record
/// from its row, once per time the name was asked.
pub fn in_asked_order<R>(
    asked: &[SecretName],
    found: &[(String, R)],
    record: impl Fn(&SecretName, &R) -> StoreResult<SecretRecord>,
) -> StoreResult<Vec<Option<SecretRecord>>> {
    asked
        .iter()
        .map(|name| {
            found
                .iter()
                .find(|(n, _)| n == name.as_str())
                .map(|(_, row)| record(name, row))
                .transpose()
        })
        .collect()
}

/// Secret values and their metadata, per environment incarnation.
///
/// Every method takes the [`Environment`] as the catalog holds it: a store reads and writes
/// only rows of that incarnation ([`Environment::id`]). A write into an incarnation that no
/// longer exists (its environment was deleted, perhaps created again) is refused with
/// [`StoreError::NotFound`] when the store can tell, atomically with the write (a store in
/// the catalog's database always can); a store elsewhere keys its values by incarnation, so
/// such a write is never seen by the new environment.
///
/// Writes carry the [`Actor`] they are made for. A store in the catalog's database checks
/// it in the writing transaction; a store elsewhere (NATS, Vault) must check it through the
/// catalog immediately before writing and document the window that leaves.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// What this backend guarantees.
    fn capabilities(&self) -> Capabilities;

    /// A short name (`db`, `nats`, `vault`).
    fn backend_name(&self) -> &'static str;

    /// What `/v1/status` shows as the backend: the name, and for a store elsewhere how it
    /// keeps values (never a credential).
    fn describe(&self) -> String {
        self.backend_name().to_owned()
    }

    /// The record with its stored value, or `None`.
    async fn get(&self, env: &Environment, name: &SecretName) -> StoreResult<Option<SecretRecord>>;

    /// [`Self::get`] of each of `names`, in their order: what a job hands over, read at
    /// once (a catalog answers in one query per [`MAX_GET_MANY`] names).
    async fn get_many(
        &self,
        env: &Environment,
        names: &[SecretName],
    ) -> StoreResult<Vec<Option<SecretRecord>>> {
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            records.push(self.get(env, name).await?);
        }
        Ok(records)
    }

    /// The metadata alone, or `None`.
    async fn meta(&self, env: &Environment, name: &SecretName) -> StoreResult<Option<SecretMeta>>;

    /// The live incarnation of the environment named `env` and, in it, `name`'s metadata;
    /// `None` when no environment has that name. `environments` is the catalog this store
    /// keeps its values for. The default asks it for the incarnation, then [`Self::meta`];
    /// a store that keeps environments and values in one database (`values_in_catalog`)
    /// may answer both in one read.
    async fn meta_in(
        &self,
        environments: &dyn AccessStore,
        env: &EnvName,
        name: &SecretName,
    ) -> StoreResult<Option<(Environment, Option<SecretMeta>)>> {
        let Some(incarnation) = environments.get_environment(env).await? else {
            return Ok(None);
        };
        let meta = self.meta(&incarnation, name).await?;
        Ok(Some((incarnation, meta)))
    }

    /// Up to `limit` secrets of `env` as `listing` says: in its order, after its position,
    /// only the names its search matches, read through a [`SecretPageFill`] (a search
    /// examines at most [`MAX_SEARCH_EXAMINED`] names, then says where it stopped).
    async fn list(
        &self,
        env: &Environment,
        listing: &SecretListing<'_>,
        limit: usize,
    ) -> StoreResult<SecretPage>;

    /// Creates or replaces a value if `precondition` holds, atomically with the check.
    /// Errors: [`StoreError::Conflict`] when it does not hold; [`StoreError::NotFound`] when
    /// a key actor writes to an environment that does not exist (a store that can check it).
    async fn put(
        &self,
        env: &Environment,
        name: &SecretName,
        value: StoredValue,
        precondition: Precondition,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<PutOutcome>;

    /// Applies every entry of `batch` in `env` or none of them, atomically: an entry with a
    /// value is written if its precondition holds; an entry without one (a value that is
    /// unchanged) only has its precondition checked. Returns, per entry, the outcome of its
    /// write (`None` for a check). Errors: [`StoreError::Conflict`] when any precondition
    /// does not hold ([`Capabilities::atomic_batches`] says whether a backend can do this).
    async fn put_many(
        &self,
        env: &Environment,
        batch: Vec<BatchPut>,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Vec<Option<PutOutcome>>>;

    /// Deletes a secret if `precondition` holds, returning its last metadata.
    /// Errors: [`StoreError::NotFound`], [`StoreError::Conflict`].
    async fn delete(
        &self,
        env: &Environment,
        name: &SecretName,
        precondition: Precondition,
        actor: &Actor,
    ) -> StoreResult<SecretMeta>;

    /// Up to `limit` records (with values) across all environments, in (environment, name)
    /// order, starting after `after`: the walk that key rotation and start-up checks take.
    async fn scan(
        &self,
        after: Option<&(EnvName, SecretName)>,
        limit: usize,
    ) -> StoreResult<Vec<SecretRecord>>;

    /// Replaces stored values without changing what they mean (re-encryption): each
    /// replacement applies only if its secret is still at `revision` with exactly the stored
    /// form `previous`, and keeps the revision and timestamps. Returns, per replacement,
    /// whether it applied.
    async fn replace_values(
        &self,
        batch: Vec<Replacement>,
        actor: &Actor,
    ) -> StoreResult<Vec<bool>>;

    /// Deletes every secret of `env`; returns how many there were.
    async fn purge_environment(&self, env: &Environment) -> StoreResult<u64>;

    /// How many stored values use each key version (`0` = plaintext).
    async fn count_by_key_version(&self) -> StoreResult<BTreeMap<u32, u64>>;

    /// Whether the backend answers.
    async fn ping(&self) -> StoreResult<()>;
}

/// Environments and API keys. Writes carry the [`Actor`] they are made for, re-checked in
/// the writing transaction, and append their audit row and event in it.
#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    /// Whether the catalog answers.
    async fn ping(&self) -> StoreResult<()>;

    /// First start, atomically: creates `env` and the `admin` key unless the catalog was
    /// bootstrapped before. Returns whether it did.
    async fn bootstrap(&self, env: &Environment, admin: &ApiKeyRecord) -> StoreResult<bool>;

    /// All environments in name order.
    async fn list_environments(&self) -> StoreResult<Vec<Environment>>;

    /// One environment, or `None`.
    async fn get_environment(&self, name: &EnvName) -> StoreResult<Option<Environment>>;

    /// Creates an environment. Errors: [`StoreError::AlreadyExists`]. A catalog that also
    /// holds secret values or config (`db`) clears any left under this name in the same
    /// transaction.
    async fn create_environment(&self, env: &Environment, actor: &Actor) -> StoreResult<()>;

    /// Deletes an environment and the API keys scoped to it, atomically (and, in a catalog
    /// that also holds secret values and config, those values, returning how many, and its
    /// config entries; else 0).
    /// Errors: [`StoreError::NotFound`].
    async fn delete_environment(&self, name: &EnvName, actor: &Actor) -> StoreResult<u64>;

    /// Stores a new API key. The environment of a scoped key must exist at the moment of
    /// the write. Errors: [`StoreError::NotFound`] when it does not.
    async fn insert_api_key(&self, key: &ApiKeyRecord, actor: &Actor) -> StoreResult<()>;

    /// All API keys, oldest first.
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyMeta>>;

    /// The key whose SHA-256 (hex) is `key_hash`, or `None`.
    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyMeta>>;

    /// Deletes an API key. Errors: [`StoreError::NotFound`], [`StoreError::LastAdminKey`].
    async fn delete_api_key(&self, id: &ApiKeyId, actor: &Actor) -> StoreResult<()>;
}

/// Key canaries, encryption counts and unreadable marks: what start-up checks, nonce budgets
/// and `/v1/status` rest on.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Every key canary.
    async fn canaries(&self) -> StoreResult<Vec<Canary>>;

    /// Stores the canary of a key version that has none yet (an existing one is kept);
    /// audited as `keys.registered` (actor `system`) when it is new.
    async fn put_canary(&self, canary: &Canary) -> StoreResult<()>;

    /// How many encryptions each key version has performed, as recorded so far.
    async fn encryption_counts(&self) -> StoreResult<BTreeMap<KeyVersion, u64>>;

    /// Adds `n` to the recorded encryptions of `version` (several nodes may add at once).
    /// Bookkeeping, not a change to a resource: not audited.
    async fn add_encryptions(&self, version: KeyVersion, n: u64) -> StoreResult<()>;

    /// Records what opening values found, in one transaction: a check that did not open
    /// marks its secret unreadable at that revision (replacing an older mark of the same
    /// secret); a check that opened removes the secret's mark if it is at or below that
    /// revision. Marks are shared by every node: they are what `/v1/status` counts and what
    /// a secret's `status` reads.
    ///
    /// A write supersedes a mark. A catalog that also holds the values
    /// ([`Capabilities::values_in_catalog`]) guarantees it in the database: it records a
    /// mark only while the secret is still at the checked revision, and removes a secret's
    /// mark in the same transaction as any write or delete of that secret, and an
    /// environment's marks with the environment (deleted or created again). Readers compare
    /// revisions too ([`KeyStore::unreadable_marks`]), so a value store elsewhere can only
    /// leave the count high until the next verify, never a wrong `status`.
    ///
    /// With `verified`, the batch is a verification: its actor is re-checked
    /// ([`StoreError::ActorRevoked`]: nothing recorded) and one `keys.verified` audit row and
    /// event is appended with [`Verification::checked`] as its count (also for an empty
    /// batch, so every verify run is on the record). Without it (a failed resolve, a rewrap
    /// batch) it is bookkeeping and not audited.
    async fn record_checks(
        &self,
        checks: &[ValueCheck],
        verified: Option<Verification<'_>>,
    ) -> StoreResult<()>;

    /// How many unreadable marks there are, per key version of the marked revision. Cheap:
    /// `/v1/status` calls it (no authentication).
    async fn unreadable_counts(&self) -> StoreResult<BTreeMap<u32, u64>>;

    /// The marks of those of `names` in `env` that have one, in no particular order. A
    /// caller applies a mark only to the revision it names. Cheap when there are none:
    /// every secret list page and metadata read calls it.
    async fn unreadable_marks(
        &self,
        env: &EnvName,
        names: &[SecretName],
    ) -> StoreResult<Vec<UnreadableMark>>;
}

/// The audit log and the event outbox, as written by every store's writes (see
/// [`journal`]); plus the one write of its own, denied attempts.
#[async_trait]
pub trait JournalStore: Send + Sync + 'static {
    /// Appends one audit row per coalesced run of denied attempts (no event).
    async fn record_denials(&self, denials: Vec<Denial>) -> StoreResult<()>;

    /// Up to `limit` audit rows matching `query`, in `seq` order, and the `seq` to go on
    /// after when more rows follow (`None` at the head). A store examines a bounded range
    /// of sequence numbers per call, so a page may hold fewer rows than `limit` (even none)
    /// and still have a cursor. Rows past the head are never returned.
    async fn audit(
        &self,
        query: &AuditQuery,
        limit: usize,
    ) -> StoreResult<(Vec<AuditRecord>, Option<u64>)>;

    /// The last audit row's `seq` and `hash` as the store's head records them.
    async fn audit_head(&self) -> StoreResult<(u64, String)>;

    /// How many audit rows are stored past the head: none, unless someone inserted rows
    /// into the database by hand.
    async fn audit_rows_past_head(&self) -> StoreResult<u64>;

    /// Up to `limit` events with an id greater than `after` and at most the head's, in id
    /// order.
    async fn events_after(&self, after: u64, limit: usize) -> StoreResult<Vec<EventRecord>>;

    /// The id of the last committed event (0 when there is none).
    async fn last_event_id(&self) -> StoreResult<u64>;

    /// A receiver that changes whenever events commit (its value: the last event id this
    /// node has seen committed). Readers must still poll now and then: another node's
    /// commits may not be announced.
    fn watch_events(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Whether other processes write to this catalog (nodes sharing one database), so
    /// that runs may be queued elsewhere and only the journal's watch tells of them. A
    /// catalog only this process writes (SQLite, behind the data dir's lock) says `false`:
    /// this process then wakes its pull polls and push dispatcher itself when it queues a
    /// run, instead of on every commit.
    fn shared_with_other_processes(&self) -> bool {
        true
    }

    /// Where the relay `name` (e.g. `nats`) has got to: the last event id it delivered.
    async fn relay_position(&self, name: &str) -> StoreResult<u64>;

    /// Records that the relay `name` delivered every event up to `id`.
    async fn set_relay_position(&self, name: &str, id: u64) -> StoreResult<()>;
}

/// Everything but secret values, in one database: what the service is built on.
pub trait Catalog:
    AccessStore
    + KeyStore
    + ConfigStore
    + JournalStore
    + FunctionStore
    + RunStore
    + OrchestrationStore
    + FlowStore
{
}

impl<T> Catalog for T where
    T: AccessStore
        + KeyStore
        + ConfigStore
        + JournalStore
        + FunctionStore
        + RunStore
        + OrchestrationStore
        + FlowStore
{
}

/// Config entries: plaintext JSON per environment, with revisions for compare-and-set.
///
/// Writes carry the [`Actor`] they are made for and re-check it in the writing transaction,
/// like every other store; a key actor writes only into an environment that exists then.
/// A store in the catalog's database removes an environment's entries with it (and clears
/// leftovers when it is created again), in the same transaction.
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// One entry, or `None`.
    async fn get_config(&self, env: &EnvName, key: &ConfigKey) -> StoreResult<Option<ConfigEntry>>;

    /// One page (`size`: [`ConfigEntry::weight`]) of the entries of `env` in key order
    /// (bytes), starting after `after`.
    async fn list_config(
        &self,
        env: &EnvName,
        after: Option<&ConfigKey>,
        size: PageSize,
    ) -> StoreResult<Vec<ConfigEntry>>;

    /// Creates or replaces an entry (`value`: serialized JSON) if `precondition` holds,
    /// atomically with the check. Errors: [`StoreError::Conflict`] when it does not hold;
    /// [`StoreError::NotFound`] when a key actor writes to an environment that does not
    /// exist; [`StoreError::ActorRevoked`].
    async fn put_config(
        &self,
        env: &EnvName,
        key: &ConfigKey,
        value: String,
        precondition: Precondition,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<ConfigPutOutcome>;

    /// Deletes an entry if `precondition` holds, returning it as it was.
    /// Errors: [`StoreError::NotFound`], [`StoreError::Conflict`], [`StoreError::ActorRevoked`].
    async fn delete_config(
        &self,
        env: &EnvName,
        key: &ConfigKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> StoreResult<ConfigEntry>;
}
