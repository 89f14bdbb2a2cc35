//! Key lifecycle: which values each key version holds, re-encryption to the current
//! version (rewrap), verification of every value (`coffer keys verify`), values that cannot
//! be opened, and the nonce budget of each key.
//!
//! Values found unreadable are marked in the catalog (`KeyStore::record_checks`), so every
//! node reports the same: a walk or a failed resolve records what it found, and a write of
//! the secret supersedes the mark. A value under a key version the keyring lacks is
//! unreadable without being opened: that follows from its key version.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_crypto::{KeyVersion, Keyring, Sealed};
use coffer_store::{
    Actor, Catalog, EnvName, Replacement, Revision, SecretMeta, SecretName, SecretRecord,
    StoredValue, UnreadableMark, ValueCheck,
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

/// What a verification (`coffer keys verify`) found: one batch, or every batch of a walk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Values opened (or found under a key version the keyring lacks).
    pub checked: u64,
    /// The values that did not open, by name and revision; metadata only.
    pub unreadable: Vec<UnreadableMark>,
    /// Where the next batch starts; `None` when the walk is complete.
    pub next: Option<(EnvName, SecretName)>,
}

impl VerifyReport {
    /// Adds another batch's findings (and takes its position).
    pub fn absorb(&mut self, other: VerifyReport) {
        self.checked += other.checked;
        self.unreadable.extend(other.unreadable);
        self.next = other.next;
    }
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

/// What a walk does with the values it opens. Every walk opens every value and records in
/// the catalog which did not open (and clears the marks of those that did).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Re-encrypt every value to the current version.
    Rewrap,
    /// Start-up: encrypt plaintext left from dev mode; only verify the rest.
    MigratePlaintext,
    /// `coffer keys verify`: open every value, change none.
    Verify,
}

impl Walk {
    /// Whether its batches are audited as verifications (`keys.verified`); a rewrap is
    /// audited by its replacements instead (`keys.rewrapped`).
    fn verifies(self) -> bool {
        self != Walk::Rewrap
    }
}

/// What one batch of a walk did.
#[derive(Default)]
pub(crate) struct WalkBatch {
    pub(crate) rewrap: RewrapReport,
    pub(crate) checked: u64,
    pub(crate) unreadable: Vec<UnreadableMark>,
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

    /// Whether each value can be opened, as far as any node knows: its key version must be
    /// in the keyring, and its revision must not be marked unreadable in the catalog. One
    /// catalog read per environment among `metas` (a list page is one).
    pub async fn value_statuses(
        &self,
        metas: &[SecretMeta],
    ) -> Result<Vec<ValueStatus>, CoreError> {
        let mut by_env: BTreeMap<&EnvName, Vec<SecretName>> = BTreeMap::new();
        for meta in metas {
            by_env
                .entry(&meta.environment)
                .or_default()
                .push(meta.name.clone());
        }
        let mut marked: HashMap<(EnvName, SecretName), Revision> = HashMap::new();
        for (env, names) in by_env {
            for mark in self.catalog().unreadable_marks(env, &names).await? {
                marked.insert((mark.environment, mark.name), mark.revision);
            }
        }
        Ok(metas
            .iter()
            .map(|meta| {
                let key = (meta.environment.clone(), meta.name.clone());
                if self.lacks_key(meta.key_version) || marked.get(&key) == Some(&meta.revision) {
                    ValueStatus::Unreadable
                } else {
                    ValueStatus::Ok
                }
            })
            .collect())
    }

    /// [`Coffer::value_statuses`] of one value.
    pub async fn value_status(&self, meta: &SecretMeta) -> Result<ValueStatus, CoreError> {
        let statuses = self.value_statuses(std::slice::from_ref(meta)).await?;
        Ok(statuses.first().copied().unwrap_or(ValueStatus::Ok))
    }

    /// How many values are known to be unreadable: those marked in the catalog (by any
    /// node), plus those under a key version the keyring lacks (counted from the stored
    /// per-version counts, never by opening them; `counts` when the caller has them).
    pub(crate) async fn unreadable_count(
        &self,
        counts: Option<&BTreeMap<u32, u64>>,
    ) -> Result<u64, CoreError> {
        let marks = self.catalog().unreadable_counts().await?;
        // A marked value under a missing version is counted once, below.
        let marked: u64 = marks
            .iter()
            .filter(|(v, _)| !self.lacks_key(**v))
            .map(|(_, n)| n)
            .sum();
        let missing = match counts {
            Some(counts) => self.values_without_key(counts),
            // Only a start with --allow-unreadable leaves values whose version is missing;
            // otherwise status never walks the per-version counts.
            None if self.missing_versions.load(Ordering::Relaxed) => {
                let counts = self.secrets().count_by_key_version().await?;
                let n = self.values_without_key(&counts);
                if n == 0 {
                    self.missing_versions.store(false, Ordering::Relaxed);
                }
                n
            }
            None => 0,
        };
        Ok(marked + missing)
    }

    /// Values (per the stored counts) under a key version the keyring lacks.
    pub(crate) fn values_without_key(&self, counts: &BTreeMap<u32, u64>) -> u64 {
        counts
            .iter()
            .filter(|(v, _)| self.lacks_key(**v))
            .map(|(_, n)| n)
            .sum()
    }

    /// Start-up found values under a key version the keyring lacks (`--allow-unreadable`):
    /// status counts them from the per-version counts until none are left.
    pub(crate) fn note_missing_versions(&self, counts: &BTreeMap<u32, u64>) {
        let missing = self.values_without_key(counts) > 0;
        self.missing_versions.store(missing, Ordering::Relaxed);
    }

    /// Whether values under `key_version` cannot be opened here: sealed under a version
    /// this keyring lacks (`0`, plaintext, always opens).
    fn lacks_key(&self, key_version: u32) -> bool {
        key_version != 0
            && !KeyVersion::new(key_version)
                .is_ok_and(|v| self.keyring().is_some_and(|r| r.contains(v)))
    }

    /// Counts `n` encryptions made elsewhere (on a blocking thread) under `version`.
    pub(crate) fn count_encryptions(&self, version: KeyVersion, n: u64) {
        self.encryptions.count_n(version, n);
    }

    /// Records in the catalog that this revision of a value did not open (a failed
    /// resolve). The caller reports the failure whatever happens here.
    pub(crate) async fn mark_unreadable(&self, meta: &SecretMeta) {
        let check = ValueCheck {
            environment: meta.environment.clone(),
            environment_id: meta.environment_id.clone(),
            name: meta.name.clone(),
            revision: meta.revision,
            key_version: meta.key_version,
            opened: false,
        };
        if let Err(e) = self.catalog().record_checks(&[check], None).await {
            tracing::warn!(error = %e, "cannot record an unreadable value in the catalog");
        }
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
            unreadable_values: self.unreadable_count(Some(&counts)).await?,
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

    /// One batch of a walk over every stored value, starting after `after`: opens each,
    /// records in the catalog what did not open (a verifying walk's batch is audited as
    /// `keys.verified` by `actor`), and replaces what the walk re-encrypts.
    pub(crate) async fn walk_batch(
        &self,
        after: Option<&(EnvName, SecretName)>,
        limit: usize,
        walk: Walk,
        actor: &Actor,
    ) -> Result<WalkBatch, CoreError> {
        let ring = self.shared_keyring();
        if ring.is_none() && walk != Walk::Verify {
            return Err(CoreError::Invalid(
                "no encryption key is configured: nothing to rewrap to".into(),
            ));
        }
        let records = self.secrets().scan(after, limit).await?;
        let mut out = WalkBatch {
            checked: records.len() as u64,
            ..WalkBatch::default()
        };
        let report = &mut out.rewrap;
        if records.len() == limit {
            report.next = records
                .last()
                .map(|r| (r.meta.environment.clone(), r.meta.name.clone()));
        }
        // Opening and sealing a batch is CPU work: off the async workers, so requests
        // on them keep being served during a walk.
        let resealed = tokio::task::spawn_blocking(move || reseal(ring.as_deref(), records, walk))
            .await
            .map_err(|_| CoreError::Crypto)??;
        if let Some(ring) = self.keyring() {
            self.encryptions
                .count_n(ring.current(), resealed.batch.len() as u64);
        }
        let verified_by = walk.verifies().then_some(actor);
        self.catalog()
            .record_checks(&resealed.checks, verified_by)
            .await?;
        out.unreadable = resealed
            .checks
            .iter()
            .filter(|c| !c.opened)
            .map(|c| UnreadableMark {
                environment: c.environment.clone(),
                name: c.name.clone(),
                revision: c.revision,
                key_version: c.key_version,
            })
            .collect();
        report.unreadable += out.unreadable.len() as u64;
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
        Ok(out)
    }

    /// Walks every value once, as Coffer itself; used at start-up.
    pub(crate) async fn walk_all(&self, walk: Walk) -> Result<RewrapReport, CoreError> {
        let mut total = RewrapReport::default();
        loop {
            let batch = self
                .walk_batch(total.next.as_ref(), REWRAP_BATCH, walk, &Actor::System)
                .await?;
            total.absorb(batch.rewrap);
            if total.next.is_none() {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// What one batch of a walk decided: values to replace, what opening each value found,
/// values already under the current key.
struct Resealed {
    batch: Vec<Replacement>,
    checks: Vec<ValueCheck>,
    already_current: u64,
}

/// Opens every record and seals again, under the current key version, the plaintext ones
/// and (for a rewrap) those under an older version; a verification seals nothing. Pure CPU:
/// runs on a blocking thread. Without a keyring (dev mode, verify only) a sealed value does
/// not open.
fn reseal(
    ring: Option<&Keyring>,
    records: Vec<SecretRecord>,
    walk: Walk,
) -> Result<Resealed, CoreError> {
    let mut out = Resealed {
        batch: Vec::new(),
        checks: Vec::with_capacity(records.len()),
        already_current: 0,
    };
    for SecretRecord { meta, value } in records {
        let aad = secret_aad(&meta.environment, &meta.environment_id, &meta.name);
        let plain = match &value {
            StoredValue::Plain(plain) => Some(plain.expose_secret().as_bytes().to_vec().into()),
            StoredValue::Sealed { key_version, blob } => {
                ring.and_then(|r| r.open(*key_version, blob, aad.as_bytes()).ok())
            }
        };
        out.checks.push(ValueCheck {
            environment: meta.environment.clone(),
            environment_id: meta.environment_id.clone(),
            name: meta.name.clone(),
            revision: meta.revision,
            key_version: meta.key_version,
            opened: plain.is_some(),
        });
        let (Some(plain), Some(ring)) = (plain, ring) else {
            continue;
        };
        let is_plain = matches!(value, StoredValue::Plain(_));
        let stale = meta.key_version != ring.current().get();
        let reseal = match walk {
            Walk::Rewrap => is_plain || stale,
            Walk::MigratePlaintext => is_plain,
            Walk::Verify => false,
        };
        if !reseal {
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
