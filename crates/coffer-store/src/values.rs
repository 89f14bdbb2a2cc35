//! Secret values outside the catalog's database: NATS JetStream KV, Vault / OpenBao KV.
//!
//! A [`ValueStore`] keeps values only. The catalog keeps everything else, in the same
//! `secrets` rows as the `db` backend: name, revision, key version, timestamps, and, where
//! the `db` backend keeps the value, a **reference** to one version of it in the value store
//! (`\u{1f}ref:nats:17:9f86d081884c7d65`: the store, the version and the id of the write).
//! [`ExternalSecrets`] joins the two into a [`SecretStore`]:
//!
//! - **A write** puts the value into the value store first, as a new version (guarded by
//!   the value store's own compare-and-set where it has one), then commits the reference in
//!   the catalog with the write's precondition, actor check, audit row and event, in one
//!   catalog transaction. That commit *is* the change: if it fails (a conflict, a revoked
//!   key, a crash), the version written is an orphan no reader is ever pointed at, and the
//!   next write replaces it. So a change, its audit row and its event still commit together,
//!   and `expectedRevision` is decided by the database.
//! - **A read** takes the reference from the catalog and reads exactly that version.
//! - **A listing** reads the catalog alone: it never fans out one request per secret.
//! - **A delete** commits in the catalog first, then removes the versions up to the one its
//!   row referred to (a removal that fails leaves an orphan, never a secret without a value;
//!   a newer version, a create racing the delete, stays).
//!
//! A store without versions (Vault KV v1) cannot pin a version: a reference names the key
//! alone, so two writes racing can leave the value of the one the catalog lost. The write id
//! tells: such a value is refused, never served, until the secret is written again; and
//! `expectedRevision` is refused ([`Capabilities::compare_and_set`] is false).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::{
    AccessStore, Actor, BatchPut, Capabilities, EnvName, Environment, Precondition, PutOutcome,
    Replacement, Revision, SecretListing, SecretMeta, SecretName, SecretPage, SecretRecord,
    SecretStore, StoreError, StoreResult, StoredValue, Timestamp,
};

/// A value store's version of one value: a NATS KV revision, a Vault KV v2 version; `0` for
/// a store without versions (Vault KV v1).
pub type ValueVersion = u64;

/// What a value store keeps for one version: the value as Coffer stores it, and the
/// catalog's metadata of that revision beside it (so that the store's own clients, and a
/// migration, can tell which revision and incarnation a value belongs to).
#[derive(Debug)]
pub struct ValueEntry {
    /// The value: sealed, or plaintext (dev mode, or a store that keeps values raw).
    pub value: StoredValue,
    /// The Coffer revision this value is (1, 2, 3 … as the API shows it).
    pub revision: Revision,
    /// When revision 1 was written.
    pub created_at: Timestamp,
    /// When this revision was written.
    pub updated_at: Timestamp,
    /// A random id of the write that stored this version, also kept in the catalog's
    /// reference: a store without versions tells by it whether the value it holds is the one
    /// the catalog committed (see [`new_write_id`]).
    pub write_id: String,
}

/// A fresh write id: 16 hex digits from the system CSPRNG.
pub fn new_write_id() -> StoreResult<String> {
    let bytes = coffer_crypto::random_bytes::<8>()
        .map_err(|_| StoreError::Unavailable("the system RNG failed".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What must hold for a [`ValueStore::write`] to apply, checked by the value store
/// atomically with the write where it can ([`ValueStore::versioned`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueExpect {
    /// No value is stored under the key.
    Absent,
    /// The latest version under the key is this one.
    Version(ValueVersion),
    /// Anything (the only expectation a store without versions takes).
    Any,
}

/// A store of secret values, keyed by environment incarnation and secret name.
///
/// Implementations bound every request by a timeout and answer
/// [`StoreError::Unavailable`] when the store cannot be reached or fails, never hang.
/// They never log values. A value handed to [`ValueStore::write`] is returned by
/// [`ValueStore::read`] exactly (sealed blob and key version, or plaintext).
#[async_trait]
pub trait ValueStore: Send + Sync + 'static {
    /// `nats` or `vault`.
    fn backend_name(&self) -> &'static str;

    /// What `/v1/status` shows, e.g. `vault (KV v2, raw values: Vault protects them at
    /// rest)`. Never holds a credential.
    fn describe(&self) -> String;

    /// Whether the store keeps versions that can be read back by number and checks
    /// [`ValueExpect`] atomically with a write (NATS KV, Vault KV v2; not Vault KV v1).
    fn versioned(&self) -> bool;

    /// Whether the store keeps plaintext on purpose (Vault's `raw` value format, so that
    /// Vault's own clients read the values): Coffer hands it plaintext, and the store's own
    /// protection at rest is what guards those values.
    fn raw_values(&self) -> bool;

    /// Stores `entry` as the new latest version of `name` in `env` if `expect` holds, and
    /// returns its version. Errors: [`StoreError::Conflict`] (with `current: None`) when
    /// `expect` does not hold.
    async fn write(
        &self,
        env: &Environment,
        name: &SecretName,
        entry: &ValueEntry,
        expect: ValueExpect,
    ) -> StoreResult<ValueVersion>;

    /// The version `version` of `name` in `env` (`None`: the latest) and its number, or
    /// `None` when there is no such version (never written, removed, or aged out of the
    /// store's history). A store without versions ignores `version`.
    async fn read(
        &self,
        env: &Environment,
        name: &SecretName,
        version: Option<ValueVersion>,
    ) -> StoreResult<Option<(ValueVersion, ValueEntry)>>;

    /// Removes the versions of `name` in `env` at or below `up_to` (`None`: every version);
    /// a newer version, written after the one a caller saw, stays. Nothing there is not an
    /// error. A store without versions removes the value whatever `up_to` says.
    async fn remove(
        &self,
        env: &Environment,
        name: &SecretName,
        up_to: Option<ValueVersion>,
    ) -> StoreResult<()>;

    /// Removes every value of the incarnation `env` (and nothing of another incarnation of
    /// the same name); returns how many secrets it removed.
    async fn remove_environment(&self, env: &Environment) -> StoreResult<u64>;

    /// The names stored for `env`, in byte order.
    async fn names(&self, env: &Environment) -> StoreResult<Vec<SecretName>>;

    /// Whether the store answers (and the credentials work).
    async fn ping(&self) -> StoreResult<()>;
}

/// The prefix of a reference in the catalog's `value` column. The unit separator cannot
/// start a sealed blob (base64), and the service refuses a value that starts with it, so a
/// dev-mode plaintext is never misread as a reference.
pub const RESERVED_PREFIX: &str = REF_PREFIX;
const REF_PREFIX: &str = "\u{1f}ref:";

/// Where a catalog row's value is: `\x1fref:{backend}:{version}:{write id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reference<'a> {
    backend: &'a str,
    version: ValueVersion,
    write_id: &'a str,
}

impl Reference<'_> {
    fn encode(backend: &str, version: ValueVersion, write_id: &str) -> String {
        format!("{REF_PREFIX}{backend}:{version}:{write_id}")
    }
}

/// Where the value of a catalog row is: `None` when the row holds it (the `db` backend),
/// else the value store's name and the version the row refers to.
pub fn location(stored: &StoredValue) -> Option<(&str, ValueVersion)> {
    reference(stored).map(|r| (r.backend, r.version))
}

/// The reference a catalog row holds, if it holds one (`None`: the row holds the value).
fn reference(stored: &StoredValue) -> Option<Reference<'_>> {
    let text = match stored {
        StoredValue::Plain(s) => s.expose_secret(),
        StoredValue::Sealed { blob, .. } => blob.as_str(),
    };
    let rest = text.strip_prefix(REF_PREFIX)?;
    let mut parts = rest.splitn(3, ':');
    let (backend, version, write_id) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Reference {
        backend,
        version: version.parse().ok()?,
        write_id,
    })
}

/// The catalog row for a value stored as `value` at `version` of `backend` by the write
/// `write_id`: same kind and key version, the reference in place of the value.
pub fn reference_row(
    value: &StoredValue,
    backend: &str,
    version: ValueVersion,
    write_id: &str,
) -> StoredValue {
    let text = Reference::encode(backend, version, write_id);
    match value {
        StoredValue::Plain(_) => StoredValue::Plain(SecretString::from(text)),
        StoredValue::Sealed { key_version, .. } => StoredValue::Sealed {
            key_version: *key_version,
            blob: text,
        },
    }
}

/// Whether two stored forms are the same (a rewrap pins the form it read).
pub fn same_stored(a: &StoredValue, b: &StoredValue) -> bool {
    match (a, b) {
        (StoredValue::Plain(x), StoredValue::Plain(y)) => x.expose_secret() == y.expose_secret(),
        (
            StoredValue::Sealed {
                key_version: kx,
                blob: bx,
            },
            StoredValue::Sealed {
                key_version: ky,
                blob: by,
            },
        ) => kx == ky && bx == by,
        _ => false,
    }
}

/// How often a write that lost a race is tried again (a write with a precondition only
/// while the catalog still admits it) before it gives up with 503.
const WRITE_ATTEMPTS: usize = 32;

/// How often one value write goes on top of a newer latest version before it lets the
/// caller look at the catalog again.
const VALUE_WRITE_ATTEMPTS: usize = 4;

/// A [`SecretStore`]: metadata, references and the journal in the catalog's database
/// (`index`, the `db` backend's own store), values in a [`ValueStore`]. See the module
/// documentation for the protocol.
pub struct ExternalSecrets<I: ?Sized> {
    index: Arc<I>,
    values: Arc<dyn ValueStore>,
}

impl<I: SecretStore + ?Sized> ExternalSecrets<I> {
    /// Values in `values`, everything else in `index`.
    pub fn new(index: Arc<I>, values: Arc<dyn ValueStore>) -> Self {
        ExternalSecrets { index, values }
    }

    /// The value store.
    pub fn values(&self) -> &Arc<dyn ValueStore> {
        &self.values
    }

    /// The catalog's store.
    pub fn index(&self) -> &Arc<I> {
        &self.index
    }

    /// The value a catalog record refers to, read from the value store.
    async fn resolve(&self, env: &Environment, record: SecretRecord) -> StoreResult<SecretRecord> {
        let Some(at) = reference(&record.value) else {
            // A value still in the catalog (a migration to this store that has not reached
            // it yet): it is the value.
            return Ok(record);
        };
        let backend = self.values.backend_name();
        self.kept_here(&record)?;
        let version = self.values.versioned().then_some(at.version);
        match self.values.read(env, &record.meta.name, version).await? {
            Some((_, entry)) if entry.write_id == at.write_id => Ok(SecretRecord {
                meta: record.meta,
                value: entry.value,
            }),
            // A store without versions holds the value of a write the catalog did not
            // commit (refused, or cut short): never served as if it were.
            Some(_) => Err(StoreError::Unavailable(format!(
                "{} in {}: the {backend} backend holds a value the catalog did not commit; set the secret again",
                record.meta.name, record.meta.environment
            ))),
            None => Err(StoreError::Corrupt(format!(
                "the {backend} backend has lost version {} of {} in {}",
                at.version, record.meta.name, record.meta.environment
            ))),
        }
    }

    /// What a write into the value store must expect, given the catalog's row.
    fn expectation(&self, current: Option<&SecretRecord>) -> ValueExpect {
        if !self.values.versioned() {
            return ValueExpect::Any;
        }
        match current.and_then(|r| reference(&r.value)) {
            Some(at) if at.backend == self.values.backend_name() => {
                ValueExpect::Version(at.version)
            }
            _ => ValueExpect::Absent,
        }
    }

    /// Writes `entry` as the next version of `name`: first as `expect`ed; if the store holds
    /// something else there (an orphan of a write that never committed, or a write still in
    /// flight), on top of whatever is latest. The value store's compare-and-set keeps each
    /// version on top of the one it saw; the catalog's commit decides which write wins.
    async fn write_value(
        &self,
        env: &Environment,
        name: &SecretName,
        entry: &ValueEntry,
        mut expect: ValueExpect,
    ) -> StoreResult<ValueVersion> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.values.write(env, name, entry, expect).await {
                Err(StoreError::Conflict { .. }) if attempt < VALUE_WRITE_ATTEMPTS => {
                    expect = match self.values.read(env, name, None).await? {
                        Some((version, _)) => ValueExpect::Version(version),
                        None => ValueExpect::Absent,
                    };
                }
                // Racing writers keep taking the slot: the caller looks at the catalog again.
                other => return other,
            }
        }
    }

    /// One attempt at a put: read the catalog row, write the value, commit the reference.
    async fn put_once(
        &self,
        env: &Environment,
        name: &SecretName,
        value: &StoredValue,
        precondition: Precondition,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<PutOutcome> {
        let current = self.index.get(env, name).await?;
        if let Some(current) = &current {
            self.kept_here(current)?;
        }
        let revision = current.as_ref().map(|r| r.meta.revision);
        if !precondition.admits(revision) {
            return Err(StoreError::Conflict { current: revision });
        }
        let entry = ValueEntry {
            value: copy(value),
            revision: revision.unwrap_or(0) + 1,
            created_at: current.as_ref().map_or(at, |r| r.meta.created_at),
            updated_at: at,
            write_id: new_write_id()?,
        };
        let version = self
            .write_value(env, name, &entry, self.expectation(current.as_ref()))
            .await?;
        let row = reference_row(value, self.values.backend_name(), version, &entry.write_id);
        let pinned = match revision {
            Some(r) => Precondition::Revision(r),
            None => Precondition::Absent,
        };
        self.index.put(env, name, row, pinned, at, actor).await
    }

    /// One batch: every value written first, then every reference in one catalog
    /// transaction, each pinned to the revision read.
    async fn put_many_once(
        &self,
        env: &Environment,
        batch: Vec<BatchPut>,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Vec<Option<PutOutcome>>> {
        let backend = self.values.backend_name();
        let mut rows = Vec::with_capacity(batch.len());
        for entry in batch {
            let current = self.index.get(env, &entry.name).await?;
            if let Some(current) = &current {
                self.kept_here(current)?;
            }
            let revision = current.as_ref().map(|r| r.meta.revision);
            if !entry.precondition.admits(revision) {
                return Err(StoreError::Conflict { current: revision });
            }
            let pinned = match revision {
                Some(r) => Precondition::Revision(r),
                None => Precondition::Absent,
            };
            let value = match entry.value {
                Some(value) => {
                    let stored = ValueEntry {
                        value: copy(&value),
                        revision: revision.unwrap_or(0) + 1,
                        created_at: current.as_ref().map_or(at, |r| r.meta.created_at),
                        updated_at: at,
                        write_id: new_write_id()?,
                    };
                    let expect = self.expectation(current.as_ref());
                    let version = self.write_value(env, &entry.name, &stored, expect).await?;
                    Some(reference_row(&value, backend, version, &stored.write_id))
                }
                None => None,
            };
            rows.push(BatchPut {
                name: entry.name,
                value,
                precondition: pinned,
            });
        }
        self.index.put_many(env, rows, at, actor).await
    }

    /// A row another value store keeps (values migrated while this node was configured for
    /// another backend) is not written over: that would move it back behind the migration's
    /// back.
    fn kept_here(&self, row: &SecretRecord) -> StoreResult<()> {
        kept_by(row, self.values.backend_name())
    }
}

/// Refuses a catalog row whose value another store keeps than `backend` (the node's own:
/// `db`, `nats`, `vault`): the values were migrated while this node was configured for
/// another backend. Answered 503 naming the backend to start the node with.
pub fn kept_by(row: &SecretRecord, backend: &str) -> StoreResult<()> {
    match reference(&row.value) {
        Some(at) if at.backend != backend => Err(StoreError::Unavailable(format!(
            "{} in {} is kept by the {} secrets backend, but this node uses {backend}: start it with COFFER_SECRETS_BACKEND={}",
            row.meta.name, row.meta.environment, at.backend, at.backend
        ))),
        _ => Ok(()),
    }
}

/// A copy of a stored value (the type is not `Clone`, to keep copies of plaintext
/// deliberate).
pub fn copy(value: &StoredValue) -> StoredValue {
    match value {
        StoredValue::Plain(s) => StoredValue::Plain(SecretString::from(s.expose_secret())),
        StoredValue::Sealed { key_version, blob } => StoredValue::Sealed {
            key_version: *key_version,
            blob: blob.clone(),
        },
    }
}

/// How long one write may take in all (its attempts, each bounded by the value store's own
/// timeout): past it the request is answered 503 (a catalog commit already under way may
/// still land, as for any request cut short; its audit row and event land with it).
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

async fn within_deadline<T>(
    write: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(WRITE_DEADLINE, write).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(
            "the secrets backend did not complete the write in time".into(),
        )),
    }
}

/// A short pause before a write that lost a race tries again, growing with the attempt
/// and jittered so that racing writers do not stay in step.
async fn back_off(attempt: usize) {
    let base = 1u64 << attempt.min(5);
    let jitter =
        u64::from(std::process::id() ^ (attempt as u32).wrapping_mul(2_654_435_761)) % (base + 1);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

#[async_trait]
impl<I: SecretStore + ?Sized> SecretStore for ExternalSecrets<I> {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // The catalog decides a precondition, atomically with the commit; but without
            // versions the value written may not be the one the catalog kept.
            compare_and_set: self.values.versioned(),
            // Every value of a batch is written first, then all references commit in one
            // catalog transaction (or none do).
            atomic_batches: self.values.versioned(),
            values_in_catalog: false,
            raw_values: self.values.raw_values(),
        }
    }

    fn backend_name(&self) -> &'static str {
        self.values.backend_name()
    }

    fn describe(&self) -> String {
        self.values.describe()
    }

    async fn get(&self, env: &Environment, name: &SecretName) -> StoreResult<Option<SecretRecord>> {
        match self.index.get(env, name).await? {
            Some(record) => Ok(Some(self.resolve(env, record).await?)),
            None => Ok(None),
        }
    }

    async fn get_many(
        &self,
        env: &Environment,
        names: &[SecretName],
    ) -> StoreResult<Vec<Option<SecretRecord>>> {
        let mut records = Vec::with_capacity(names.len());
        for record in self.index.get_many(env, names).await? {
            records.push(match record {
                Some(record) => Some(self.resolve(env, record).await?),
                None => None,
            });
        }
        Ok(records)
    }

    async fn meta(&self, env: &Environment, name: &SecretName) -> StoreResult<Option<SecretMeta>> {
        self.index.meta(env, name).await
    }

    async fn meta_in(
        &self,
        environments: &dyn AccessStore,
        env: &EnvName,
        name: &SecretName,
    ) -> StoreResult<Option<(Environment, Option<SecretMeta>)>> {
        self.index.meta_in(environments, env, name).await
    }

    async fn list(
        &self,
        env: &Environment,
        listing: &SecretListing<'_>,
        limit: usize,
    ) -> StoreResult<SecretPage> {
        self.index.list(env, listing, limit).await
    }

    async fn put(
        &self,
        env: &Environment,
        name: &SecretName,
        value: StoredValue,
        precondition: Precondition,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<PutOutcome> {
        let attempts = async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self
                    .put_once(env, name, &value, precondition, at, actor)
                    .await
                {
                    Err(StoreError::Conflict { .. }) if precondition == Precondition::None => {}
                    // A write with a precondition has its answer once the catalog moved past
                    // it; while it has not (racing writers held the value store's slot), the
                    // write is tried again.
                    Err(StoreError::Conflict { .. }) => {
                        let current = self.index.meta(env, name).await?.map(|m| m.revision);
                        if !precondition.admits(current) {
                            return Err(StoreError::Conflict { current });
                        }
                    }
                    other => return other,
                }
                if attempt >= WRITE_ATTEMPTS {
                    return Err(StoreError::Unavailable(format!(
                        "{name}: writes racing in the {} backend kept this one out; try again",
                        self.values.backend_name()
                    )));
                }
                back_off(attempt).await;
            }
        };
        within_deadline(attempts).await
    }

    async fn put_many(
        &self,
        env: &Environment,
        batch: Vec<BatchPut>,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Vec<Option<PutOutcome>>> {
        if !self.values.versioned() {
            return Err(StoreError::Unsupported("atomic batches"));
        }
        within_deadline(self.put_many_once(env, batch, at, actor)).await
    }

    async fn delete(
        &self,
        env: &Environment,
        name: &SecretName,
        precondition: Precondition,
        actor: &Actor,
    ) -> StoreResult<SecretMeta> {
        // The version the row refers to now: only it and older ones are removed after the
        // delete, so a create of the same name racing the delete keeps its value.
        let before = self.index.get(env, name).await?;
        if let Some(row) = &before {
            self.kept_here(row)?;
        }
        let up_to = before
            .as_ref()
            .and_then(|r| reference(&r.value))
            .map(|at| at.version);
        let meta = self.index.delete(env, name, precondition, actor).await?;
        if let Err(e) = self.values.remove(env, name, up_to).await {
            // The catalog no longer refers to it: an orphan the next write replaces.
            tracing::warn!(
                backend = self.values.backend_name(),
                environment = %env.name,
                secret = %name,
                error = %e,
                "a deleted secret's value could not be removed from the secrets backend"
            );
        }
        Ok(meta)
    }

    async fn scan(
        &self,
        after: Option<&(EnvName, SecretName)>,
        limit: usize,
    ) -> StoreResult<Vec<SecretRecord>> {
        let raw = self.values.raw_values();
        let mut cursor = after.cloned();
        loop {
            let page = self.index.scan(cursor.as_ref(), limit).await?;
            let Some(last) = page.last() else {
                return Ok(Vec::new());
            };
            cursor = Some((last.meta.environment.clone(), last.meta.name.clone()));
            let full = page.len() >= limit;
            let mut out = Vec::with_capacity(page.len());
            for record in page {
                // A raw value is the value store's to protect: there is nothing to verify
                // or re-encrypt.
                if raw && matches!(record.value, StoredValue::Plain(_)) {
                    continue;
                }
                let env = Environment {
                    name: record.meta.environment.clone(),
                    id: record.meta.environment_id.clone(),
                    created_at: record.meta.created_at,
                };
                out.push(self.resolve(&env, record).await?);
            }
            if !out.is_empty() || !full {
                return Ok(out);
            }
        }
    }

    async fn replace_values(
        &self,
        batch: Vec<Replacement>,
        actor: &Actor,
    ) -> StoreResult<Vec<bool>> {
        if !self.values.versioned() {
            // Without versions a replacement would overwrite a write racing it.
            return Err(StoreError::Unsupported(
                "re-encrypting values in a store without compare-and-set",
            ));
        }
        let backend = self.values.backend_name();
        let mut applied = Vec::with_capacity(batch.len());
        for r in batch {
            let env = Environment {
                name: r.environment.clone(),
                id: r.environment_id.clone(),
                created_at: Timestamp::from_millis(0),
            };
            let Some(current) = self.index.get(&env, &r.name).await? else {
                applied.push(false);
                continue;
            };
            if current.meta.revision != r.revision {
                applied.push(false);
                continue;
            }
            let previous_row = copy(&current.value);
            let resolved = self.resolve(&env, current).await?;
            if !same_stored(&resolved.value, &r.previous) {
                applied.push(false);
                continue;
            }
            let expect = match reference(&previous_row) {
                Some(at) if at.backend == backend => ValueExpect::Version(at.version),
                _ => ValueExpect::Absent,
            };
            let entry = ValueEntry {
                value: copy(&r.value),
                revision: r.revision,
                created_at: resolved.meta.created_at,
                updated_at: resolved.meta.updated_at,
                write_id: new_write_id()?,
            };
            let version = match self.write_value(&env, &r.name, &entry, expect).await {
                Ok(v) => v,
                Err(StoreError::Conflict { .. }) => {
                    applied.push(false);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let row = reference_row(&r.value, backend, version, &entry.write_id);
            let done = self
                .index
                .replace_values(
                    vec![Replacement {
                        environment: r.environment,
                        environment_id: r.environment_id,
                        name: r.name,
                        revision: r.revision,
                        previous: previous_row,
                        value: row,
                    }],
                    actor,
                )
                .await?;
            applied.push(done.first().copied().unwrap_or(false));
        }
        Ok(applied)
    }

    async fn purge_environment(&self, env: &Environment) -> StoreResult<u64> {
        self.values.remove_environment(env).await?;
        // The secrets are the catalog's rows: the service purges after the catalog deleted
        // the environment with them (and counted them), so this counts none and clears
        // nothing; a caller that did not delete them first gets them cleared and counted.
        self.index.purge_environment(env).await
    }

    async fn count_by_key_version(&self) -> StoreResult<BTreeMap<u32, u64>> {
        let mut counts = self.index.count_by_key_version().await?;
        if self.values.raw_values() {
            // Raw values are the value store's to protect, not plaintext awaiting a key.
            counts.remove(&0);
        }
        Ok(counts)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.values.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_crypto::KeyVersion;

    #[test]
    fn references_round_trip_and_never_match_a_sealed_blob() {
        let sealed = StoredValue::Sealed {
            key_version: KeyVersion::new(3).unwrap(),
            blob: "AAAAAAAAAAAAAAAA:BBBB:CCCC".into(),
        };
        assert_eq!(reference(&sealed), None);
        let row = reference_row(&sealed, "nats", 17, "00ff");
        assert_eq!(
            reference(&row),
            Some(Reference {
                backend: "nats",
                version: 17,
                write_id: "00ff"
            })
        );
        assert_eq!(row.key_version_number(), 3);
        let plain = StoredValue::Plain(SecretString::from("ref:nats:1"));
        assert_eq!(
            reference(&plain),
            None,
            "a plaintext that looks alike is a value"
        );
        let row = reference_row(&plain, "vault", 0, "00ff");
        assert_eq!(row.key_version_number(), 0);
        assert_eq!(reference(&row).map(|r| r.version), Some(0));
    }
}
