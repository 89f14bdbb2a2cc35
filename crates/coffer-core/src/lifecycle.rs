//! Key lifecycle: which values each key version holds, re-encryption to the current
//! version (rewrap), values that cannot be opened, and the nonce budget of each key.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_crypto::{KeyVersion, Keyring, Sealed};
use coffer_store::{
    Actor, Catalog, EnvName, Replacement, Revision, SecretMeta, SecretName, SecretRecord,
    StoredValue,
};
use secrecy::ExposeSecret;

use crate::service::secret_aad;
use crate::{Coffer, CoreError};

/// Random 96-bit nonces stay safe for about 2^32 encryptions under one key; past this many,
/// Coffer recommends rotating to a new key version.
pub const NONCE_BUDGET_WARNING: u64 = 1 << 31;

/// Values per batch of a rewrap: one scan, one transaction.
pub const REWRAP_BATCH: usize = 1000;

/// Whether a stored value can be opened with the keys this server has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueStatus {
    /// It opens (or is plaintext in dev mode).
    Ok,
    /// Tampered, sealed elsewhere, or under a key version the keyring lacks.
    Unreadable,
}

/// One key version as `coffer keys status` shows it. Never any key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersionStatus {
    /// The version.
    pub version: u32,
    /// Whether new writes use it.
    pub current: bool,
    /// Whether the keyring has it (a version only stored values know is missing).
    pub in_keyring: bool,
    /// How many stored values are sealed under it.
    pub values: u64,
    /// How many encryptions it has performed (for the nonce budget).
    pub encryptions: u64,
}

/// The key state of the whole store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    /// The version new writes use; `None` in dev mode.
    pub current: Option<u32>,
    /// Every version in the keyring or in use, ascending.
    pub versions: Vec<KeyVersionStatus>,
    /// Values stored unencrypted (dev mode).
    pub plaintext_values: u64,
    /// Values known to be unreadable.
    pub unreadable_values: u64,
}

/// What one rewrap batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Re-encrypted to the current version.
    pub rewrapped: u64,
    /// Already under the current version (and verified to open).
    pub already_current: u64,
    /// Could not be opened; left as they are.
    pub unreadable: u64,
    /// Changed by a write while being rewrapped; the write stands and used the current key.
    pub updated_concurrently: u64,
    /// Where the next batch starts; `None` when the walk is complete.
    pub next: Option<(EnvName, SecretName)>,
}

impl RewrapReport {
    /// Adds another batch's counts (and takes its position).
    pub fn absorb(&mut self, other: RewrapReport) {
        self.rewrapped += other.rewrapped;
        self.already_current += other.already_current;
        self.unreadable += other.unreadable;
        self.updated_concurrently += other.updated_concurrently;
        self.next = other.next;
    }
}

/// What a walk does to values that are not under the current key version.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Re-encrypt every value to the current version.
    Rewrap,
    /// Start-up: encrypt plaintext left from dev mode; only verify the rest.
    MigratePlaintext,
}

/// Encryptions per key version: counted in memory, added to the catalog by
/// [`Coffer::flush_counters`] (several nodes add to the same rows).
pub(crate) struct EncryptionCounter {
    per_version: BTreeMap<KeyVersion, (AtomicU64, AtomicU64)>, // (pending, recorded)
}

impl EncryptionCounter {
    pub(crate) fn new(ring: Option<&Keyring>) -> Self {
        let versions = ring.into_iter().flat_map(Keyring::versions);
        EncryptionCounter {
            per_version: versions
                .map(|v| (v, (AtomicU64::new(0), AtomicU64::new(0))))
                .collect(),
        }
    }

    fn count(&self, version: KeyVersion) {
        self.count_n(version, 1);
    }

    fn count_n(&self, version: KeyVersion, n: u64) {
        if let Some((pending, _)) = self.per_version.get(&version) {
            pending.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn total(&self, version: KeyVersion) -> u64 {
        self.per_version.get(&version).map_or(0, |(p, r)| {
            p.load(Ordering::Relaxed) + r.load(Ordering::Relaxed)
        })
    }

    /// Whether this server counts encryptions under `version` (it is in the keyring).
    fn tracks(&self, version: KeyVersion) -> bool {
        self.per_version.contains_key(&version)
    }
}

/// Known-unreadable values, by the revision found unreadable (a newer write supersedes it).
#[derive(Default)]
pub(crate) struct UnreadableSet(RwLock<HashMap<(EnvName, SecretName), Revision>>);

impl UnreadableSet {
    fn insert(&self, env: &EnvName, name: &SecretName, revision: Revision) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        set.insert((env.clone(), name.clone()), revision);
    }

    /// Called on every write: the common case (nothing is unreadable) takes only a shared
    /// lock, so writers do not serialize on it.
    fn remove(&self, env: &EnvName, name: &SecretName) {
        if self.0.read().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return;
        }
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        set.remove(&(env.clone(), name.clone()));
    }

    fn remove_environment(&self, env: &EnvName) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        set.retain(|(e, _), _| e != env);
    }

    fn contains(&self, meta: &SecretMeta) -> bool {
        let set = self.0.read().unwrap_or_else(|p| p.into_inner());
        !set.is_empty()
            && set.get(&(meta.environment.clone(), meta.name.clone())) == Some(&meta.revision)
    }

    fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Coffer {
    /// Seals `plaintext` under the current key version and counts the encryption.
    pub(crate) fn seal(
        &self,
        ring: &Keyring,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Sealed, CoreError> {
        let sealed = ring.seal(aad, plaintext).map_err(|_| CoreError::Crypto)?;
        self.encryptions.count(sealed.key_version);
        Ok(sealed)
    }

    /// Whether a value can be opened, as far as this server knows: its key version must be
    /// in the keyring, and no open of this revision has failed.
    pub fn value_status(&self, meta: &SecretMeta) -> ValueStatus {
        let missing_key = meta.key_version != 0
            && !KeyVersion::new(meta.key_version)
                .is_ok_and(|v| self.keyring().is_some_and(|r| r.contains(v)));
        if missing_key || self.unreadable.contains(meta) {
            ValueStatus::Unreadable
        } else {
            ValueStatus::Ok
        }
    }

    /// How many values are known to be unreadable.
    pub fn unreadable_count(&self) -> u64 {
        self.unreadable.len() as u64
    }

    /// Counts `n` encryptions made elsewhere (on a blocking thread) under `version`.
    pub(crate) fn count_encryptions(&self, version: KeyVersion, n: u64) {
        self.encryptions.count_n(version, n);
    }

    pub(crate) fn mark_unreadable(&self, meta: &SecretMeta) {
        self.unreadable
            .insert(&meta.environment, &meta.name, meta.revision);
    }

    pub(crate) fn mark_written(&self, env: &EnvName, name: &SecretName) {
        self.unreadable.remove(env, name);
    }

    pub(crate) fn forget_environment(&self, env: &EnvName) {
        self.unreadable.remove_environment(env);
    }

    /// Key versions, which is current, how many values each holds (admin).
    pub async fn key_status(&self, who: &crate::Principal) -> Result<KeyStatus, CoreError> {
        self.require_admin(who)?;
        let counts = self.secrets().count_by_key_version().await?;
        // Versions outside the keyring are not counted in memory; their totals (from when a
        // ring held them) are only in the catalog.
        let recorded = self.catalog().encryption_counts().await?;
        let ring = self.keyring();
        let mut versions: BTreeMap<u32, KeyVersionStatus> = BTreeMap::new();
        let in_ring = ring
            .into_iter()
            .flat_map(Keyring::versions)
            .map(KeyVersion::get);
        let stored = counts.keys().copied().filter(|v| *v != 0);
        for version in in_ring.chain(stored) {
            let kv = KeyVersion::new(version).ok();
            versions.entry(version).or_insert(KeyVersionStatus {
                version,
                current: ring.is_some_and(|r| r.current().get() == version),
                in_keyring: kv.is_some_and(|v| ring.is_some_and(|r| r.contains(v))),
                values: counts.get(&version).copied().unwrap_or(0),
                encryptions: kv.map_or(0, |v| {
                    if self.encryptions.tracks(v) {
                        self.encryptions.total(v)
                    } else {
                        recorded.get(&v).copied().unwrap_or(0)
                    }
                }),
            });
        }
        Ok(KeyStatus {
            current: ring.map(|r| r.current().get()),
            versions: versions.into_values().collect(),
            plaintext_values: counts.get(&0).copied().unwrap_or(0),
            unreadable_values: self.unreadable_count(),
        })
    }

    /// Key versions past the nonce budget, as warnings for the log and `/v1/status`.
    pub fn nonce_warnings(&self) -> Vec<String> {
        let ring = self.keyring();
        ring.into_iter()
            .flat_map(Keyring::versions)
            .filter(|v| self.encryptions.total(*v) > NONCE_BUDGET_WARNING)
            .map(|v| {
                format!(
                    "key version {v} has performed {} encryptions, past 2^31 with random nonces: add a new key version, make it current and run `coffer keys rewrap`",
                    self.encryptions.total(v)
                )
            })
            .collect()
    }

    /// Adds the encryptions counted since the last flush to the catalog and reloads the
    /// totals (other nodes add to them too). Call it periodically and at shutdown.
    pub async fn flush_counters(&self) -> Result<(), CoreError> {
        for (version, (pending, _)) in &self.encryptions.per_version {
            let n = pending.swap(0, Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            if let Err(e) = self.catalog().add_encryptions(*version, n).await {
                pending.fetch_add(n, Ordering::Relaxed);
                return Err(e.into());
            }
        }
        self.load_counters(self.catalog()).await
    }

    pub(crate) async fn load_counters(&self, catalog: &dyn Catalog) -> Result<(), CoreError> {
        let recorded = catalog.encryption_counts().await?;
        for (version, (_, total)) in &self.encryptions.per_version {
            total.store(
                recorded.get(version).copied().unwrap_or(0),
                Ordering::Relaxed,
            );
        }
        Ok(())
    }

    /// One batch of a walk over every stored value, starting after `after`.
    pub(crate) async fn walk_batch(
        &self,
        after: Option<&(EnvName, SecretName)>,
        limit: usize,
        walk: Walk,
        actor: &Actor,
    ) -> Result<RewrapReport, CoreError> {
        let ring = self.shared_keyring().ok_or_else(|| {
            CoreError::Invalid("no encryption key is configured: nothing to rewrap to".into())
        })?;
        let records = self.secrets().scan(after, limit).await?;
        let mut report = RewrapReport {
            next: records
                .last()
                .map(|r| (r.meta.environment.clone(), r.meta.name.clone())),
            ..RewrapReport::default()
        };
        if records.len() < limit {
            report.next = None;
        }
        // Opening and sealing a batch is CPU work: off the async workers, so requests
        // on them keep being served during a rewrap.
        let current = ring.current();
        let resealed = tokio::task::spawn_blocking(move || reseal(&ring, records, walk))
            .await
            .map_err(|_| CoreError::Crypto)??;
        self.encryptions
            .count_n(current, resealed.batch.len() as u64);
        for meta in &resealed.unreadable {
            self.mark_unreadable(meta);
        }
        report.unreadable += resealed.unreadable.len() as u64;
        report.already_current += resealed.already_current;
        let batch = resealed.batch;
        if !batch.is_empty() {
            for applied in self.secrets().replace_values(batch, actor).await? {
                if applied {
                    report.rewrapped += 1;
                } else {
                    report.updated_concurrently += 1;
                }
            }
        }
        Ok(report)
    }

    /// Walks every value once; used at start-up.
    pub(crate) async fn walk_all(&self, walk: Walk) -> Result<RewrapReport, CoreError> {
        let mut total = RewrapReport::default();
        loop {
            let batch = self
                .walk_batch(total.next.as_ref(), REWRAP_BATCH, walk, &Actor::System)
                .await?;
            total.absorb(batch);
            if total.next.is_none() {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// What one batch of a walk decided: values to replace, values that did not open, values
/// already under the current key.
struct Resealed {
    batch: Vec<Replacement>,
    unreadable: Vec<SecretMeta>,
    already_current: u64,
}

/// Opens every record and seals again, under the current key version, the plaintext ones
/// and (for a rewrap) those under an older version. Pure CPU: runs on a blocking thread.
fn reseal(ring: &Keyring, records: Vec<SecretRecord>, walk: Walk) -> Result<Resealed, CoreError> {
    let current = ring.current();
    let mut out = Resealed {
        batch: Vec::new(),
        unreadable: Vec::new(),
        already_current: 0,
    };
    for SecretRecord { meta, value } in records {
        let aad = secret_aad(&meta.environment, &meta.environment_id, &meta.name);
        let plain = match &value {
            StoredValue::Plain(plain) => plain.expose_secret().as_bytes().to_vec().into(),
            StoredValue::Sealed { key_version, blob } => {
                match ring.open(*key_version, blob, aad.as_bytes()) {
                    Ok(plain) => plain,
                    Err(_) => {
                        out.unreadable.push(meta);
                        continue;
                    }
                }
            }
        };
        let is_plain = matches!(value, StoredValue::Plain(_));
        let stale = meta.key_version != current.get();
        if !(is_plain || (walk == Walk::Rewrap && stale)) {
            out.already_current += 1;
            continue;
        }
        let sealed = ring
            .seal(aad.as_bytes(), &plain)
            .map_err(|_| CoreError::Crypto)?;
        out.batch.push(Replacement {
            environment: meta.environment,
            environment_id: meta.environment_id,
            name: meta.name,
            revision: meta.revision,
            previous: value,
            value: StoredValue::Sealed {
                key_version: sealed.key_version,
                blob: sealed.blob,
            },
        });
    }
    Ok(out)
}
