//! Key lifecycle: which values and functions' signing secrets each key version holds,
//! re-encryption to the current version (rewrap), verification of every stored secret
//! (`coffer keys verify`), values that cannot be opened, and the nonce budget of each key.
//!
//! A walk (rewrap, verify, the dev-mode migration) takes the secret values first, then the
//! functions' signing secrets (current and previous ones): [`WalkPosition`] says where it is.
//!
//! Values found unreadable are marked in the catalog (`KeyStore::record_checks`), so every
//! node reports the same: a walk or a failed resolve records what it found, and a write of
//! the secret supersedes the mark. A value under a key version the keyring lacks is
//! unreadable without being opened: that follows from its key version.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use coffer_crypto::{KeyVersion, Keyring, Sealed};
use coffer_store::{
    Actor, Catalog, EnvName, FunctionId, FunctionRecord, OrchestrationId, OrchestrationRecord,
    Replacement, Reseal, Revision, SecretMeta, SecretName, SecretRecord, SigningReplacement,
    StepsReplacement, StoredValue, UnreadableMark, ValueCheck, Verification,
};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::orchestrations::{StoredParam, param_aad, parse_stored, stored_text};
use crate::runtime::signing_aad;
use crate::service::secret_aad;
use crate::{Coffer, CoreError};

/// Random 96-bit nonces stay safe for about 2^32 encryptions under one key; past this many,
/// Coffer recommends rotating to a new key version.
pub const NONCE_BUDGET_WARNING: u64 = 1 << 31;

/// Values (or functions) per batch of a walk: one scan, one transaction (two for the batch
/// where the secret values end and the functions begin).
pub const REWRAP_BATCH: usize = 1000;

/// Where a walk over every stored secret goes on: the secret values in (environment, name)
/// order, then the functions' signing secrets in (environment, id) order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkPosition {
    /// After this secret value.
    Value(EnvName, SecretName),
    /// Past every secret value, after this function's signing secrets.
    Function(EnvName, FunctionId),
    /// Past every function, after this orchestration's encrypted parameters.
    Orchestration(EnvName, OrchestrationId),
}

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
    /// How many functions' signing secrets (current and previous ones) are sealed under it.
    pub signing_secrets: u64,
    /// How many orchestrations' encrypted parameters are sealed under it.
    pub params: u64,
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
    /// Functions' signing secrets stored unencrypted (dev mode).
    pub plaintext_signing_secrets: u64,
    /// Orchestrations' encrypted parameters stored unencrypted (dev mode).
    pub plaintext_params: u64,
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
    /// Functions' signing secrets opened (current and previous ones).
    pub signing_checked: u64,
    /// The signing secrets that did not open; metadata only.
    pub unreadable_signing: Vec<UnreadableSigning>,
    /// Orchestrations' encrypted parameters opened.
    pub params_checked: u64,
    /// The encrypted parameters that did not open; metadata only.
    pub unreadable_params: Vec<UnreadableParam>,
    /// Where the next batch starts; `None` when the walk is complete.
    pub next: Option<WalkPosition>,
}

impl VerifyReport {
    /// Adds another batch's findings (and takes its position).
    pub fn absorb(&mut self, other: VerifyReport) {
        self.checked += other.checked;
        self.unreadable.extend(other.unreadable);
        self.signing_checked += other.signing_checked;
        self.unreadable_signing.extend(other.unreadable_signing);
        self.params_checked += other.params_checked;
        self.unreadable_params.extend(other.unreadable_params);
        self.next = other.next;
    }
}

/// An orchestration's encrypted parameter that does not open with the configured keys: the
/// step's runs fail until it is set again (`encrypt: true` in an update).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableParam {
    /// The orchestration's environment.
    pub environment: EnvName,
    /// The orchestration.
    pub orchestration: OrchestrationId,
    /// The step.
    pub step: String,
    /// The parameter.
    pub param: String,
    /// The orchestration's revision when it was read.
    pub revision: Revision,
    /// The key version it is stored under (`0`: plaintext).
    pub key_version: u32,
}

/// A function's signing secret that does not open with the configured keys: push
/// deliveries of the function cannot be signed with it. Rotating the signing secret
/// repairs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableSigning {
    /// The function's environment.
    pub environment: EnvName,
    /// The function.
    pub function: FunctionId,
    /// The function's revision when it was read.
    pub revision: Revision,
    /// The key version the secret is stored under (`0`: plaintext).
    pub key_version: u32,
    /// Whether it is the previous secret (kept for a rotation's grace period) rather than
    /// the current one.
    pub previous: bool,
}

/// What one rewrap batch did with one kind of stored secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewrapCounts {
    /// Re-encrypted to the current version.
    pub rewrapped: u64,
    /// Already under the current version (and verified to open).
    pub already_current: u64,
    /// Could not be opened; left as they are.
    pub unreadable: u64,
    /// Changed by a write while being rewrapped; the write stands and used the current key.
    pub updated_concurrently: u64,
}

impl RewrapCounts {
    /// Adds other counts.
    pub fn absorb(&mut self, other: RewrapCounts) {
        self.rewrapped += other.rewrapped;
        self.already_current += other.already_current;
        self.unreadable += other.unreadable;
        self.updated_concurrently += other.updated_concurrently;
    }
}

/// What one rewrap batch did. The secret values' counts are its own fields (as they were
/// before functions had signing secrets); the signing secrets' are beside them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Values re-encrypted to the current version.
    pub rewrapped: u64,
    /// Values already under the current version (and verified to open).
    pub already_current: u64,
    /// Values that could not be opened; left as they are.
    pub unreadable: u64,
    /// Values changed by a write while being rewrapped; the write stands and used the
    /// current key.
    pub updated_concurrently: u64,
    /// The functions' signing secrets (current and previous ones), counted the same way.
    pub signing_secrets: RewrapCounts,
    /// Orchestrations' encrypted parameters, counted the same way.
    pub params: RewrapCounts,
    /// Where the next batch starts; `None` when the walk is complete.
    pub next: Option<WalkPosition>,
}

impl RewrapReport {
    /// Adds another batch's counts (and takes its position).
    pub fn absorb(&mut self, other: RewrapReport) {
        self.rewrapped += other.rewrapped;
        self.already_current += other.already_current;
        self.unreadable += other.unreadable;
        self.updated_concurrently += other.updated_concurrently;
        self.signing_secrets.absorb(other.signing_secrets);
        self.params.absorb(other.params);
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
    pub(crate) signing_checked: u64,
    pub(crate) unreadable_signing: Vec<UnreadableSigning>,
    pub(crate) params_checked: u64,
    pub(crate) unreadable_params: Vec<UnreadableParam>,
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

    /// Key versions, which is current, how many values and signing secrets each holds
    /// (admin).
    pub async fn key_status(&self, who: &crate::Principal) -> Result<KeyStatus, CoreError> {
        self.require_admin(who)?;
        let counts = self.secrets().count_by_key_version().await?;
        let signing = self.catalog().count_signing_by_key_version().await?;
        let params = self.count_params_by_key_version().await?;
        // Versions outside the keyring are not counted in memory; their totals (from when a
        // ring held them) are only in the catalog.
        let recorded = self.catalog().encryption_counts().await?;
        let ring = self.keyring();
        let mut versions: BTreeMap<u32, KeyVersionStatus> = BTreeMap::new();
        let in_ring = ring
            .into_iter()
            .flat_map(Keyring::versions)
            .map(KeyVersion::get);
        let stored = counts
            .keys()
            .chain(signing.keys())
            .chain(params.keys())
            .copied();
        for version in in_ring.chain(stored.filter(|v| *v != 0)) {
            let kv = KeyVersion::new(version).ok();
            versions.entry(version).or_insert(KeyVersionStatus {
                version,
                current: ring.is_some_and(|r| r.current().get() == version),
                in_keyring: kv.is_some_and(|v| ring.is_some_and(|r| r.contains(v))),
                values: counts.get(&version).copied().unwrap_or(0),
                signing_secrets: signing.get(&version).copied().unwrap_or(0),
                params: params.get(&version).copied().unwrap_or(0),
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
            plaintext_signing_secrets: signing.get(&0).copied().unwrap_or(0),
            plaintext_params: params.get(&0).copied().unwrap_or(0),
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

    /// One batch of a walk over every stored secret, starting after `after`: up to `limit`
    /// secret values, and once they are all walked, functions (each with its signing
    /// secrets) in the room left. Opens each, records in the catalog which values did not
    /// open (a verifying walk's batch is audited as `keys.verified` by `actor`, counting the
    /// values and signing secrets it opened), and replaces what the walk re-encrypts.
    pub(crate) async fn walk_batch(
        &self,
        after: Option<&WalkPosition>,
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
        let mut out = WalkBatch::default();
        let mut room = limit.max(1);
        let mut values = Resealed::default();
        let mut orchestrations_after = None;
        let functions_after = match after {
            Some(WalkPosition::Orchestration(env, id)) => {
                orchestrations_after = Some((env.clone(), id.clone()));
                None
            }
            Some(WalkPosition::Function(env, id)) => Some((env.clone(), id.clone())),
            value_after => {
                let value_after = match value_after {
                    Some(WalkPosition::Value(env, name)) => Some((env.clone(), name.clone())),
                    _ => None,
                };
                let records = self.secrets().scan(value_after.as_ref(), room).await?;
                let backend = self.secrets().backend_name();
                for record in &records {
                    crate::service::kept_here(record, backend)?;
                }
                room -= records.len();
                if room == 0 {
                    out.rewrap.next = records.last().map(|r| {
                        WalkPosition::Value(r.meta.environment.clone(), r.meta.name.clone())
                    });
                }
                out.checked = records.len() as u64;
                // Opening and sealing a batch is CPU work: off the async workers, so
                // requests on them keep being served during a walk.
                let ring = ring.clone();
                values = tokio::task::spawn_blocking(move || {
                    reseal_values(ring.as_deref(), records, walk)
                })
                .await
                .map_err(|_| CoreError::Crypto)??;
                None
            }
        };
        let mut signing = ResealedSigning::default();
        let in_orchestrations = orchestrations_after.is_some();
        if room > 0 && !in_orchestrations {
            let functions = self
                .catalog()
                .scan_functions(functions_after.as_ref(), room)
                .await?;
            room -= functions.len();
            if room == 0 {
                out.rewrap.next = functions
                    .last()
                    .map(|f| WalkPosition::Function(f.environment.clone(), f.id.clone()));
            }
            let ring = ring.clone();
            signing = tokio::task::spawn_blocking(move || {
                reseal_signing(ring.as_deref(), functions, walk)
            })
            .await
            .map_err(|_| CoreError::Crypto)??;
        }
        let mut params = ResealedParams::default();
        if room > 0 {
            let orchestrations = self
                .catalog()
                .scan_orchestrations(orchestrations_after.as_ref(), room)
                .await?;
            if orchestrations.len() == room {
                out.rewrap.next = orchestrations
                    .last()
                    .map(|o| WalkPosition::Orchestration(o.environment.clone(), o.id.clone()));
            }
            let ring = ring.clone();
            params = tokio::task::spawn_blocking(move || {
                reseal_params(ring.as_deref(), orchestrations, walk)
            })
            .await
            .map_err(|_| CoreError::Crypto)??;
        }
        if let Some(ring) = self.keyring() {
            let sealed = values.batch.len() as u64
                + signing.batch.iter().map(|r| r.stored_anew()).sum::<u64>()
                + params.batch.iter().map(|r| r.stored_anew).sum::<u64>();
            self.encryptions.count_n(ring.current(), sealed);
        }
        out.signing_checked = signing.checked;
        out.params_checked = params.checked;
        let verified = walk.verifies().then_some(Verification {
            by: actor,
            checked: out.checked + out.signing_checked + out.params_checked,
        });
        self.catalog()
            .record_checks(&values.checks, verified)
            .await?;
        out.unreadable = values
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
        let report = &mut out.rewrap;
        report.unreadable += out.unreadable.len() as u64;
        report.already_current += values.already_current;
        if !values.batch.is_empty() {
            for applied in self.secrets().replace_values(values.batch, actor).await? {
                if applied {
                    report.rewrapped += 1;
                } else {
                    report.updated_concurrently += 1;
                }
            }
        }
        let counts = &mut report.signing_secrets;
        counts.unreadable += signing.unreadable.len() as u64;
        counts.already_current += signing.already_current;
        if !signing.batch.is_empty() {
            let stored_anew: Vec<u64> = signing.batch.iter().map(|r| r.stored_anew()).collect();
            let applied = self.catalog().replace_signing(signing.batch, actor).await?;
            for (applied, n) in applied.into_iter().zip(stored_anew) {
                if applied {
                    counts.rewrapped += n;
                } else {
                    counts.updated_concurrently += n;
                }
            }
        }
        out.unreadable_signing = signing.unreadable;
        let counts = &mut report.params;
        counts.unreadable += params.unreadable.len() as u64;
        counts.already_current += params.already_current;
        if !params.batch.is_empty() {
            let stored_anew: Vec<u64> = params.batch.iter().map(|r| r.stored_anew).collect();
            let applied = self
                .catalog()
                .replace_orchestration_steps(params.batch, actor)
                .await?;
            for (applied, n) in applied.into_iter().zip(stored_anew) {
                if applied {
                    counts.rewrapped += n;
                } else {
                    counts.updated_concurrently += n;
                }
            }
        }
        out.unreadable_params = params.unreadable;
        Ok(out)
    }

    /// How many orchestrations' encrypted parameters are stored under each key version
    /// (`0` = plaintext): read from every orchestration's stored steps.
    pub(crate) async fn count_params_by_key_version(
        &self,
    ) -> Result<BTreeMap<u32, u64>, CoreError> {
        let mut counts = BTreeMap::new();
        let mut after: Option<(EnvName, OrchestrationId)> = None;
        loop {
            let page = self
                .catalog()
                .scan_orchestrations(after.as_ref(), REWRAP_BATCH)
                .await?;
            let done = page.len() < REWRAP_BATCH;
            after = page.last().map(|o| (o.environment.clone(), o.id.clone()));
            for o in page {
                for step in parse_stored(&o.steps)? {
                    for p in step.params.values() {
                        if let StoredParam::Sealed(v) = p {
                            *counts.entry(v.key_version_number()).or_insert(0) += 1;
                        }
                    }
                }
            }
            if done {
                return Ok(counts);
            }
        }
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

/// What one batch of a walk decided about secret values: values to replace, what opening
/// each value found, values already under the current key.
#[derive(Default)]
struct Resealed {
    batch: Vec<Replacement>,
    checks: Vec<ValueCheck>,
    already_current: u64,
}

/// What one batch of a walk decided about functions' signing secrets: functions whose
/// secrets to replace, how many secrets it opened, which did not open, how many are already
/// under the current key.
#[derive(Default)]
struct ResealedSigning {
    batch: Vec<SigningReplacement>,
    checked: u64,
    unreadable: Vec<UnreadableSigning>,
    already_current: u64,
}

/// What one batch of a walk decided about orchestrations' encrypted parameters.
#[derive(Default)]
struct ResealedParams {
    batch: Vec<StepsReplacement>,
    checked: u64,
    unreadable: Vec<UnreadableParam>,
    already_current: u64,
}

/// What a walk found opening one stored secret.
enum Visit {
    /// It did not open.
    Unreadable,
    /// It opened and stays as stored (already current, or the walk changes nothing).
    Kept,
    /// It opened, and this is its new stored form under the current key version.
    Resealed(StoredValue),
}

/// Opens `value` (sealed with associated data `aad`) and, if the walk stores it anew —
/// plaintext for the dev-mode migration and a rewrap, an older key version for a rewrap;
/// never for a verification — seals it under the current key version. Without a keyring
/// (dev mode, verify only) a sealed value does not open.
fn visit(
    ring: Option<&Keyring>,
    walk: Walk,
    value: &StoredValue,
    aad: &[u8],
) -> Result<Visit, CoreError> {
    let plain: Option<Zeroizing<Vec<u8>>> = match value {
        StoredValue::Plain(plain) => Some(plain.expose_secret().as_bytes().to_vec().into()),
        StoredValue::Sealed { key_version, blob } => {
            ring.and_then(|r| r.open(*key_version, blob, aad).ok())
        }
    };
    let Some(plain) = plain else {
        return Ok(Visit::Unreadable);
    };
    let Some(ring) = ring else {
        return Ok(Visit::Kept);
    };
    let reseal = match walk {
        // Plaintext (version 0) is never the current version.
        Walk::Rewrap => value.key_version_number() != ring.current().get(),
        Walk::MigratePlaintext => matches!(value, StoredValue::Plain(_)),
        Walk::Verify => false,
    };
    if !reseal {
        return Ok(Visit::Kept);
    }
    let sealed = ring.seal(aad, &plain).map_err(|_| CoreError::Crypto)?;
    Ok(Visit::Resealed(StoredValue::Sealed {
        key_version: sealed.key_version,
        blob: sealed.blob,
    }))
}

/// [`visit`]s every record's value. Pure CPU: runs on a blocking thread.
fn reseal_values(
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
        let visited = visit(ring, walk, &value, aad.as_bytes())?;
        out.checks.push(ValueCheck {
            environment: meta.environment.clone(),
            environment_id: meta.environment_id.clone(),
            name: meta.name.clone(),
            revision: meta.revision,
            key_version: meta.key_version,
            opened: !matches!(visited, Visit::Unreadable),
        });
        match visited {
            Visit::Unreadable => {}
            Visit::Kept => out.already_current += 1,
            Visit::Resealed(new) => out.batch.push(Replacement {
                environment: meta.environment,
                environment_id: meta.environment_id,
                name: meta.name,
                revision: meta.revision,
                previous: value,
                value: new,
            }),
        }
    }
    Ok(out)
}

/// [`visit`]s every function's signing secrets, the current one and the previous one (kept
/// for a rotation's grace period, expired or not: it is stored all the same). A function
/// with a secret to store anew becomes one replacement pinned to both stored forms. Pure
/// CPU: runs on a blocking thread.
fn reseal_signing(
    ring: Option<&Keyring>,
    functions: Vec<FunctionRecord>,
    walk: Walk,
) -> Result<ResealedSigning, CoreError> {
    let mut out = ResealedSigning::default();
    for f in functions {
        let aad = signing_aad(&f.environment_id, &f.id);
        let mut reseal = |value: StoredValue, previous: bool| -> Result<Reseal, CoreError> {
            out.checked += 1;
            let new = match visit(ring, walk, &value, aad.as_bytes())? {
                Visit::Unreadable => {
                    out.unreadable.push(UnreadableSigning {
                        environment: f.environment.clone(),
                        function: f.id.clone(),
                        revision: f.revision,
                        key_version: value.key_version_number(),
                        previous,
                    });
                    None
                }
                Visit::Kept => {
                    out.already_current += 1;
                    None
                }
                Visit::Resealed(new) => Some(new),
            };
            Ok(Reseal { read: value, new })
        };
        let signing = reseal(f.signing, false)?;
        let previous_signing = f
            .previous_signing
            .map(|(value, _)| reseal(value, true))
            .transpose()?;
        let replacement = SigningReplacement {
            environment: f.environment,
            environment_id: f.environment_id,
            id: f.id,
            revision: f.revision,
            signing,
            previous_signing,
        };
        if replacement.stored_anew() > 0 {
            out.batch.push(replacement);
        }
    }
    Ok(out)
}

/// [`visit`]s every orchestration's encrypted parameters. An orchestration with a parameter
/// to store anew becomes one replacement pinned to the steps as read. Pure CPU: runs on a
/// blocking thread.
fn reseal_params(
    ring: Option<&Keyring>,
    orchestrations: Vec<OrchestrationRecord>,
    walk: Walk,
) -> Result<ResealedParams, CoreError> {
    let mut out = ResealedParams::default();
    for o in orchestrations {
        let mut steps = parse_stored(&o.steps)?;
        let mut stored_anew = 0;
        for step in &mut steps {
            let step_id = step.step.id().to_owned();
            let function = match &step.step {
                coffer_wire::Step::Compute(c) => c.function_id.clone(),
                _ => String::new(),
            };
            for (name, p) in &mut step.params {
                let StoredParam::Sealed(value) = p else {
                    continue;
                };
                out.checked += 1;
                let aad = param_aad(&o.environment_id, &o.id, &step_id, &function, name);
                match visit(ring, walk, value, aad.as_bytes())? {
                    Visit::Unreadable => out.unreadable.push(UnreadableParam {
                        environment: o.environment.clone(),
                        orchestration: o.id.clone(),
                        step: step_id.clone(),
                        param: name.clone(),
                        revision: o.revision,
                        key_version: value.key_version_number(),
                    }),
                    Visit::Kept => out.already_current += 1,
                    Visit::Resealed(new) => {
                        *value = new;
                        stored_anew += 1;
                    }
                }
            }
        }
        if stored_anew > 0 {
            out.batch.push(StepsReplacement {
                new: stored_text(&steps)?,
                read: o.steps,
                environment: o.environment,
                environment_id: o.environment_id,
                id: o.id,
                revision: o.revision,
                stored_anew,
            });
        }
    }
    Ok(out)
}
