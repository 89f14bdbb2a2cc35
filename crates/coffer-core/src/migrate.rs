//! `coffer backend migrate`: moves every secret value to another store (`db`, `nats`,
//! `vault`), one secret at a time, resumably.
//!
//! For each secret of each environment: read its value where its catalog row says it is
//! (in the row, or in a value store it refers to), convert it to what the target keeps
//! (Vault's `raw` format: plaintext; otherwise sealed when a key is configured), copy it
//! to the target, read the copy back and check it (the same stored form; a sealed copy
//! must open), then switch the catalog row to it — a conditional replacement pinned to the
//! revision and stored form read, so a write racing the migration is never overwritten
//! (that secret is simply taken again). Only when every row is switched are the copies
//! left in the source stores removed. A crash at any point leaves every secret readable
//! where its row says; running the command again skips what has moved and finishes.
//!
//! The switches are journaled like a rewrap (`system.keys.rewrapped`, actor `system`): the
//! stored form changed, the value did not.

use std::sync::Arc;

use coffer_crypto::Keyring;
use coffer_store::values::{copy, location, new_write_id, reference_row, same_stored};
use coffer_store::{
    Actor, Catalog, EnvName, Environment, Replacement, SecretListing, SecretName, SecretStore,
    StoreError, StoredValue, ValueEntry, ValueExpect, ValueStore,
};
use secrecy::{ExposeSecret, SecretString};

use crate::CoreError;
use crate::service::secret_aad;

/// Secrets read from the catalog per page.
const PAGE: usize = 200;

/// How often one secret is taken again when a write keeps racing its switch.
const ATTEMPTS: usize = 5;

/// What a migration works with.
pub struct Migration {
    /// The catalog (environments, key counters).
    pub catalog: Arc<dyn Catalog>,
    /// The catalog's own secret store (the `db` backend): the rows, and the values kept in
    /// them.
    pub index: Arc<dyn SecretStore>,
    /// Every value store a row may refer to (the source), by its name.
    pub stores: Vec<Arc<dyn ValueStore>>,
    /// Where the values go; `None`: into the catalog's rows (`db`).
    pub target: Option<Arc<dyn ValueStore>>,
    /// The keyring: opens sealed values for a `raw` target, seals plaintext for the others.
    pub keyring: Option<Keyring>,
    /// Count and check only: copy, switch and remove nothing.
    pub dry_run: bool,
}

/// How far a migration got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Secrets seen.
    pub total: u64,
    /// Secrets that were already in the target.
    pub already: u64,
    /// Secrets copied, checked and switched by this run (to be, with `dry_run`).
    pub moved: u64,
    /// Copies removed from the source stores after every switch.
    pub removed: u64,
}

/// One step of progress: `done` of `total` secrets, and the one just handled.
pub struct Progress<'a> {
    /// Secrets handled so far.
    pub done: u64,
    /// Secrets in the catalog when the migration started.
    pub total: u64,
    /// The environment of the last one.
    pub environment: &'a EnvName,
    /// Its name.
    pub name: &'a SecretName,
}

impl Migration {
    /// The target's name (`db`, `nats`, `vault`).
    pub fn target_name(&self) -> &'static str {
        self.target.as_ref().map_or("db", |t| t.backend_name())
    }

    /// Runs the migration, calling `progress` after each secret.
    pub async fn run(
        &self,
        mut progress: impl FnMut(Progress<'_>),
    ) -> Result<MigrationReport, CoreError> {
        let environments = self.catalog.list_environments().await?;
        // The bar's length: the catalog's count of rows, whatever their key version.
        let total: u64 = self.index.count_by_key_version().await?.values().sum();
        let mut report = MigrationReport::default();
        for env in &environments {
            let mut after: Option<SecretName> = None;
            loop {
                let page = self
                    .index
                    .list(env, &SecretListing::by_name(after.as_ref()), PAGE)
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.name.clone());
                for meta in page {
                    report.total += 1;
                    match self.move_one(env, &meta.name).await? {
                        Moved::Already => report.already += 1,
                        Moved::Gone => {}
                        Moved::Now { sealed } => {
                            report.moved += 1;
                            if sealed && let Some(ring) = &self.keyring {
                                // Counted as they happen: a run cut short keeps the nonce
                                // budget's count right.
                                self.catalog.add_encryptions(ring.current(), 1).await?;
                            }
                        }
                    }
                    progress(Progress {
                        done: report.total,
                        total: total.max(report.total),
                        environment: &env.name,
                        name: &meta.name,
                    });
                }
            }
        }
        if !self.dry_run {
            // Every row is switched: the copies left in other stores go now. Also those of an
            // earlier run that stopped before this step (a resumed migration).
            for store in &self.stores {
                if self.target_name() == store.backend_name() {
                    continue;
                }
                report.removed += self.remove_copies(store, &environments).await?;
            }
        }
        Ok(report)
    }

    fn store(&self, name: &str) -> Result<&Arc<dyn ValueStore>, CoreError> {
        self.stores
            .iter()
            .chain(self.target.iter())
            .find(|s| s.backend_name() == name)
            .ok_or_else(|| {
                CoreError::Invalid(format!(
                    "some values are kept by the {name} secrets backend, which is not configured: set its variables (COFFER_NATS_URL / COFFER_VAULT_*) for the migration"
                ))
            })
    }

    /// Moves one secret; taken again when a write races its switch.
    async fn move_one(&self, env: &Environment, name: &SecretName) -> Result<Moved, CoreError> {
        for _ in 0..ATTEMPTS {
            let Some(row) = self.index.get(env, name).await? else {
                return Ok(Moved::Gone); // deleted meanwhile
            };
            let here = location(&row.value).map(|(b, v)| (b.to_owned(), v));
            let at_target = match (&here, &self.target) {
                (None, None) => true,
                (Some((b, _)), Some(t)) => b == t.backend_name(),
                _ => false,
            };
            if at_target {
                return Ok(Moved::Already);
            }
            let value = match &here {
                None => copy(&row.value),
                Some((backend, version)) => {
                    let store = self.store(backend)?;
                    let version = store.versioned().then_some(*version);
                    match store.read(env, name, version).await? {
                        Some((_, entry)) => entry.value,
                        None => {
                            return Err(CoreError::Store(StoreError::Corrupt(format!(
                                "the {backend} backend has lost {name} in {}",
                                env.name
                            ))));
                        }
                    }
                }
            };
            let (value, sealed) = self.convert(env, name, value)?;
            if self.dry_run {
                return Ok(Moved::Now { sealed });
            }
            let new_row = match &self.target {
                None => copy(&value),
                Some(target) => {
                    let entry = ValueEntry {
                        value: copy(&value),
                        revision: row.meta.revision,
                        created_at: row.meta.created_at,
                        updated_at: row.meta.updated_at,
                        write_id: new_write_id()?,
                    };
                    let version = self.copy_to(target, env, name, &entry).await?;
                    self.check_copy(target, env, name, version, &value).await?;
                    reference_row(&value, target.backend_name(), version, &entry.write_id)
                }
            };
            let switched = self
                .index
                .replace_values(
                    vec![Replacement {
                        environment: env.name.clone(),
                        environment_id: env.id.clone(),
                        name: name.clone(),
                        revision: row.meta.revision,
                        previous: row.value,
                        value: new_row,
                    }],
                    &Actor::System,
                )
                .await?;
            if switched.first().copied().unwrap_or(false) {
                return Ok(Moved::Now { sealed });
            }
            // A write came between the read and the switch: take the secret again.
        }
        Err(CoreError::Busy(format!(
            "{name} in {} kept changing during the migration; run it again",
            env.name
        )))
    }

    /// `value` as the target keeps it, and whether it was sealed here.
    fn convert(
        &self,
        env: &Environment,
        name: &SecretName,
        value: StoredValue,
    ) -> Result<(StoredValue, bool), CoreError> {
        let raw = self.target.as_ref().is_some_and(|t| t.raw_values());
        let aad = secret_aad(&env.name, &env.id, name);
        match (value, &self.keyring, raw) {
            (StoredValue::Sealed { key_version, blob }, ring, true) => {
                let ring = ring.as_ref().ok_or_else(|| no_key(env, name))?;
                let plain = ring
                    .open(key_version, &blob, aad.as_bytes())
                    .map_err(|_| unreadable(env, name))?;
                let text = String::from_utf8(plain.to_vec()).map_err(|_| unreadable(env, name))?;
                Ok((StoredValue::Plain(SecretString::from(text)), false))
            }
            (StoredValue::Plain(text), Some(ring), false) => {
                let sealed = ring
                    .seal(aad.as_bytes(), text.expose_secret().as_bytes())
                    .map_err(|_| CoreError::Crypto)?;
                Ok((
                    StoredValue::Sealed {
                        key_version: sealed.key_version,
                        blob: sealed.blob,
                    },
                    true,
                ))
            }
            (value, _, _) => Ok((value, false)),
        }
    }

    /// Writes the copy on top of whatever the target holds for the name (an earlier,
    /// unfinished copy; a value of an earlier incarnation).
    async fn copy_to(
        &self,
        target: &Arc<dyn ValueStore>,
        env: &Environment,
        name: &SecretName,
        entry: &ValueEntry,
    ) -> Result<u64, CoreError> {
        let expect = if !target.versioned() {
            ValueExpect::Any
        } else {
            match target.read(env, name, None).await? {
                Some((version, _)) => ValueExpect::Version(version),
                None => ValueExpect::Absent,
            }
        };
        Ok(target.write(env, name, entry, expect).await?)
    }

    /// Checks that the copy reads back exactly as written, and opens when sealed.
    async fn check_copy(
        &self,
        target: &Arc<dyn ValueStore>,
        env: &Environment,
        name: &SecretName,
        version: u64,
        expected: &StoredValue,
    ) -> Result<(), CoreError> {
        let pinned = target.versioned().then_some(version);
        let same = match target.read(env, name, pinned).await? {
            Some((_, entry)) => same_stored(&entry.value, expected),
            None => false,
        };
        if !same {
            return Err(copy_mismatch(target.backend_name(), env, name));
        }
        if let (StoredValue::Sealed { key_version, blob }, Some(ring)) = (expected, &self.keyring) {
            let aad = secret_aad(&env.name, &env.id, name);
            if ring.open(*key_version, blob, aad.as_bytes()).is_err() {
                return Err(unreadable(env, name));
            }
        }
        Ok(())
    }

    /// Removes from `store` every value of these environments whose catalog row no longer
    /// refers to it.
    async fn remove_copies(
        &self,
        store: &Arc<dyn ValueStore>,
        environments: &[Environment],
    ) -> Result<u64, CoreError> {
        let mut removed = 0;
        for env in environments {
            for name in store.names(env).await? {
                let keep = match self.index.get(env, &name).await? {
                    Some(row) => {
                        location(&row.value).is_some_and(|(b, _)| b == store.backend_name())
                    }
                    None => false,
                };
                if !keep {
                    // Up to the version seen now: a value written after this look stays.
                    let seen = store.read(env, &name, None).await?.map(|(v, _)| v);
                    store.remove(env, &name, seen).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

enum Moved {
    Already,
    Gone,
    Now { sealed: bool },
}

fn no_key(env: &Environment, name: &SecretName) -> CoreError {
    CoreError::Invalid(format!(
        "{name} in {} is sealed and the target keeps raw values: configure the key (COFFER_MASTER_KEY / COFFER_KEYS) for the migration",
        env.name
    ))
}

fn unreadable(env: &Environment, name: &SecretName) -> CoreError {
    CoreError::Unreadable {
        env: env.name.clone(),
        name: name.clone(),
    }
}

fn copy_mismatch(backend: &str, env: &Environment, name: &SecretName) -> CoreError {
    CoreError::Store(StoreError::Corrupt(format!(
        "the copy of {name} in {} does not read back from the {backend} backend as written",
        env.name
    )))
}
