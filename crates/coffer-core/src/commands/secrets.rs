//! Secret values (admin, manage of their environment). Values are sealed here, before
//! they reach a store.

use coffer_crypto::{Keyring, constant_time_eq};
use coffer_store::{
    Actor, BatchPut, EnvName, Environment, Precondition, PutOutcome, Revision, SecretMeta,
    SecretName, SecretRecord, StoreError, StoredValue, Timestamp,
};
use secrecy::{ExposeSecret, SecretString};

use super::Command;
use crate::service::{
    ImportResult, Imported, MAX_IMPORT, MAX_VALUE_BYTES, open_stored, secret_aad,
};
use crate::{Coffer, CoreError, Principal};

/// How often an import that lost a race with another write is retried before it gives up.
const IMPORT_ATTEMPTS: usize = 3;

/// Create or update a secret.
pub struct PutSecret {
    /// Its environment.
    pub env: EnvName,
    /// Its name.
    pub name: SecretName,
    /// The plaintext; sealed before it reaches a store.
    pub value: SecretString,
    /// `Some(0)`: must not exist; `Some(n)`: must be at revision n.
    pub expected_revision: Option<Revision>,
}

impl Command for PutSecret {
    type Output = PutOutcome;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<PutOutcome, CoreError> {
        let PutSecret {
            env,
            name,
            value,
            expected_revision,
        } = self;
        require_compare_and_set(coffer, expected_revision)?;
        check_value(&value)?;
        let incarnation = coffer.existing_environment(&env).await?;
        let stored = coffer.seal_secret(&incarnation, &name, value)?;
        let pre = Precondition::from_expected(expected_revision);
        let out = match coffer
            .secrets
            .put(
                &incarnation,
                &name,
                stored,
                pre,
                Timestamp::now(),
                &who.actor(),
            )
            .await
        {
            // The environment went (or was created again) between the check above and the
            // write: the value was sealed for an incarnation that no longer exists.
            Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(env)),
            other => other?,
        };
        Ok(out)
    }
}

/// Set several secrets of one environment at once, all or none; a value equal to the
/// stored one is left alone (no new revision; audited as `secret.unchanged`).
pub struct ImportSecrets {
    /// Their environment.
    pub env: EnvName,
    /// Names (distinct) and plaintexts.
    pub entries: Vec<(SecretName, SecretString)>,
}

impl Command for ImportSecrets {
    type Output = Vec<Imported>;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<Vec<Imported>, CoreError> {
        let ImportSecrets { env, entries } = self;
        if !coffer.secrets.capabilities().atomic_batches {
            let backend = coffer.secrets.backend_name();
            return Err(CoreError::Invalid(format!(
                "the {backend} secrets backend cannot import atomically; set secrets one by one"
            )));
        }
        check_import(&entries)?;
        let incarnation = coffer.existing_environment(&env).await?;
        let actor = who.actor();
        let mut attempt = 1;
        let imported = loop {
            match import_once(coffer, &incarnation, &entries, &actor).await {
                Err(CoreError::RevisionConflict { .. }) if attempt < IMPORT_ATTEMPTS => {
                    attempt += 1;
                }
                other => break other?,
            }
        };
        Ok(imported)
    }
}

/// Delete a secret.
#[derive(Debug)]
pub struct DeleteSecret {
    /// Its environment.
    pub env: EnvName,
    /// Its name.
    pub name: SecretName,
    /// `Some(n)`: must be at revision n.
    pub expected_revision: Option<Revision>,
}

impl Command for DeleteSecret {
    type Output = SecretMeta;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<SecretMeta, CoreError> {
        let DeleteSecret {
            env,
            name,
            expected_revision,
        } = self;
        require_compare_and_set(coffer, expected_revision)?;
        let pre = Precondition::from_expected(expected_revision);
        let incarnation = coffer.existing_environment(&env).await?;
        match coffer
            .secrets
            .delete(&incarnation, &name, pre, &who.actor())
            .await
        {
            Err(StoreError::NotFound) => {
                coffer.existing_environment(&env).await?;
                Err(CoreError::SecretNotFound { env, name })
            }
            other => Ok(other?),
        }
    }
}

/// `expectedRevision` needs a backend that checks it atomically (Vault KV v1 cannot):
/// refuse rather than pretend.
fn require_compare_and_set(coffer: &Coffer, expected: Option<Revision>) -> Result<(), CoreError> {
    super::check_expected_revision(expected)?;
    if expected.is_some() && !coffer.secrets.capabilities().compare_and_set {
        let backend = coffer.secrets.backend_name();
        return Err(CoreError::Invalid(format!(
            "the {backend} secrets backend cannot check expectedRevision atomically; omit it"
        )));
    }
    Ok(())
}

/// One attempt at an import: reads what is stored, then writes every changed value in one
/// batch pinned to the revisions read (a concurrent write makes it a conflict).
async fn import_once(
    coffer: &Coffer,
    env: &Environment,
    entries: &[(SecretName, SecretString)],
    actor: &Actor,
) -> Result<Vec<Imported>, CoreError> {
    let mut stored = Vec::with_capacity(entries.len());
    for (name, _) in entries {
        stored.push(coffer.secrets.get(env, name).await?);
    }
    let current: Vec<Option<SecretMeta>> = stored
        .iter()
        .map(|r| r.as_ref().map(|r| r.meta.clone()))
        .collect();
    // Opening, comparing and sealing up to MAX_IMPORT values is CPU work: off the async
    // workers, like a rewrap batch.
    // A store that keeps values raw (Vault's `raw` format) is handed plaintext.
    let ring = if coffer.secrets.capabilities().raw_values {
        None
    } else {
        coffer.shared_keyring()
    };
    let (env_owned, entries_owned) = (env.clone(), entries.to_vec());
    let (batch, sealed) = tokio::task::spawn_blocking(move || {
        import_batch(ring.as_deref(), &env_owned, entries_owned, stored)
    })
    .await
    .map_err(|_| CoreError::Crypto)??;
    if let (Some(ring), true) = (coffer.keyring(), sealed > 0) {
        coffer.count_encryptions(ring.current(), sealed);
    }
    let outcomes = match coffer
        .secrets
        .put_many(env, batch, Timestamp::now(), actor)
        .await
    {
        Err(StoreError::NotFound) => {
            return Err(CoreError::EnvironmentNotFound(env.name.clone()));
        }
        other => other?,
    };
    outcomes
        .into_iter()
        .zip(current)
        .map(|(outcome, before)| match (outcome, before) {
            (Some(out), _) => Ok(Imported {
                result: if out.created {
                    ImportResult::Created
                } else {
                    ImportResult::Updated
                },
                meta: out.meta,
            }),
            (None, Some(meta)) => Ok(Imported {
                meta,
                result: ImportResult::Unchanged,
            }),
            // Only entries with a stored record are sent without a value.
            (None, None) => Err(CoreError::Store(StoreError::Corrupt(
                "a batch answered a write with a check".into(),
            ))),
        })
        .collect()
}

/// The batch of an import: for each entry, the value sealed for writing, or none when the
/// stored value opens to exactly the one sent (compared in constant time); each pinned to
/// the revision read. A stored value that does not open is replaced: writing repairs it.
/// Returns the batch and how many values it sealed. Pure CPU: runs on a blocking thread.
fn import_batch(
    ring: Option<&Keyring>,
    env: &Environment,
    entries: Vec<(SecretName, SecretString)>,
    stored: Vec<Option<SecretRecord>>,
) -> Result<(Vec<BatchPut>, u64), CoreError> {
    let mut sealed = 0;
    let mut batch = Vec::with_capacity(entries.len());
    for ((name, value), stored) in entries.into_iter().zip(stored) {
        let unchanged = stored.as_ref().is_some_and(|record| {
            open_stored(ring, record)
                .is_some_and(|plain| constant_time_eq(&plain, value.expose_secret().as_bytes()))
        });
        let precondition = match &stored {
            Some(record) => Precondition::Revision(record.meta.revision),
            None => Precondition::Absent,
        };
        let value = match (unchanged, ring) {
            (true, _) => None,
            (false, None) => Some(StoredValue::Plain(value)),
            (false, Some(ring)) => {
                let aad = secret_aad(&env.name, &env.id, &name);
                let blob = ring
                    .seal(aad.as_bytes(), value.expose_secret().as_bytes())
                    .map_err(|_| CoreError::Crypto)?;
                sealed += 1;
                Some(StoredValue::Sealed {
                    key_version: blob.key_version,
                    blob: blob.blob,
                })
            }
        };
        batch.push(BatchPut {
            name,
            value,
            precondition,
        });
    }
    Ok((batch, sealed))
}

/// An import is checked whole before anything is read or written.
fn check_import(entries: &[(SecretName, SecretString)]) -> Result<(), CoreError> {
    if entries.is_empty() || entries.len() > MAX_IMPORT {
        return Err(CoreError::Invalid(format!(
            "an import sets 1 to {MAX_IMPORT} secrets"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    for (name, value) in entries {
        if !seen.insert(name) {
            return Err(CoreError::Invalid(format!(
                "secret {name} appears twice in the import"
            )));
        }
        check_value(value)?;
    }
    Ok(())
}

/// A value Coffer can keep and hand out: at most [`MAX_VALUE_BYTES`], and without NUL
/// (U+0000), which no process can receive in an environment variable (`coffer run`) and no
/// PostgreSQL text column can hold (dev mode stores values as text).
fn check_value(value: &SecretString) -> Result<(), CoreError> {
    let value = value.expose_secret();
    if value.len() > MAX_VALUE_BYTES {
        return Err(CoreError::ValueTooLarge {
            what: "secret",
            limit: MAX_VALUE_BYTES,
        });
    }
    if value.starts_with(coffer_store::values::RESERVED_PREFIX) {
        return Err(CoreError::Invalid(
            "secret values cannot start with U+001F followed by \"ref:\": Coffer reserves it"
                .into(),
        ));
    }
    if value.contains('\0') {
        return Err(CoreError::Invalid(
            "secret values cannot contain NUL (U+0000): no process could receive it in an environment variable".into(),
        ));
    }
    Ok(())
}
