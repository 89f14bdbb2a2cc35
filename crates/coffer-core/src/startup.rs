//! Start-up: the key check that runs before anything is served, and the first-start
//! bootstrap (environment `default` and an admin key).

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_crypto::{KeyVersion, Keyring};
use coffer_store::{
    Canary, Catalog, EnvName, Environment, Role, SecretStore, StoreError, Timestamp,
};
use secrecy::{ExposeSecret, SecretString};

use crate::lifecycle::Walk;
use crate::service::new_api_key;
use crate::{Coffer, CoreError};

/// What `coffer serve` hands over to start the service.
pub struct StartupOptions {
    /// The catalog backend.
    pub catalog: Arc<dyn Catalog>,
    /// The secret-value backend.
    pub secrets: Arc<dyn SecretStore>,
    /// The keyring; `None` is dev mode.
    pub keyring: Option<Keyring>,
    /// Refuse to start in dev mode (`--require-encryption`).
    pub require_encryption: bool,
    /// `COFFER_ADMIN_KEY`: the first admin key, instead of a generated one.
    pub admin_key_seed: Option<SecretString>,
    /// Start even when stored values use a key version the keyring lacks
    /// (`--allow-unreadable`); those values become unreadable.
    pub allow_unreadable: bool,
    /// Why the secrets backend in use is not the one configured (a fallback to `db`),
    /// shown by `/v1/status` beside the backend's name.
    pub backend_note: Option<String>,
}

/// What start-up did that the operator must hear about.
pub struct StartupReport {
    /// The first admin key, on the first start only.
    pub admin_key: Option<FirstAdminKey>,
    /// Key versions whose canary was created by this start.
    pub new_canaries: Vec<KeyVersion>,
    /// Values left unencrypted by dev mode that this start encrypted.
    pub migrated_plaintext: u64,
    /// Functions' signing secrets left unencrypted by dev mode that this start encrypted.
    pub migrated_signing_secrets: u64,
    /// Values known to be unreadable: under a key version the keyring lacks (from the
    /// per-version counts), or marked in the catalog by an earlier verify, walk or resolve.
    /// A start opens no value to find more (`coffer keys verify` does).
    pub unreadable: u64,
    /// Functions' signing secrets under a key version the keyring lacks (started with
    /// `--allow-unreadable`): push deliveries of those functions fail until their signing
    /// secret is rotated.
    pub unreadable_signing_secrets: u64,
}

/// The admin key created by the first start.
pub struct FirstAdminKey {
    /// The key.
    pub key: SecretString,
    /// Whether it came from `COFFER_ADMIN_KEY` (else it was generated).
    pub seeded: bool,
}

/// Why the service refused to start. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Dev mode while encryption is required.
    #[error(
        "encryption is required but no key is configured: set COFFER_MASTER_KEY (64 hex chars, `openssl rand -hex 32`) or COFFER_SECRET_KEYS"
    )]
    EncryptionRequired,
    /// Dev mode on data that holds encrypted values or signing secrets.
    #[error(
        "no key is configured, but {} encrypted and could not be read: set the key they were written with",
        stored_secrets(*count, *signing_secrets, *params, "is", "are")
    )]
    EncryptedValuesNeedKey {
        /// How many values are encrypted.
        count: u64,
        /// How many functions' signing secrets are encrypted.
        signing_secrets: u64,
        /// How many orchestrations' encrypted parameters are encrypted.
        params: u64,
    },
    /// A key that does not open its version's canary.
    #[error(
        "key version {version} is wrong: it does not open the canary sealed under version {version} ({} that version); restore the original key for version {version}",
        stored_secrets(*values, *signing_secrets, *params, "uses", "use")
    )]
    WrongKey {
        /// The version whose key is wrong.
        version: KeyVersion,
        /// How many values depend on it.
        values: u64,
        /// How many functions' signing secrets depend on it.
        signing_secrets: u64,
        /// How many orchestrations' encrypted parameters depend on it.
        params: u64,
    },
    /// Values or signing secrets stored under a version the keyring no longer has.
    #[error(
        "key version {version} is missing from the keyring but {} it; add it back (then run `coffer keys rewrap` before removing it), or start with --allow-unreadable to leave {} unreadable",
        stored_secrets(*values, *signing_secrets, *params, "uses", "use"),
        if *signing_secrets + *params > 0 { "them" } else { "those values" }
    )]
    MissingKeyVersion {
        /// The missing version.
        version: u32,
        /// How many values depend on it.
        values: u64,
        /// How many functions' signing secrets depend on it: push deliveries of those
        /// functions cannot be signed without it.
        signing_secrets: u64,
        /// How many orchestrations' encrypted parameters depend on it: their steps fail
        /// without it.
        params: u64,
    },
    /// `COFFER_ADMIN_KEY` does not look like a key.
    #[error("COFFER_ADMIN_KEY must be 32-512 visible ASCII characters (no spaces)")]
    BadAdminSeed,
    /// The stores failed.
    #[error("storage failed during start-up")]
    Store(#[from] StoreError),
    /// Something else refused.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl StartupOptions {
    /// Checks keys against stored data, bootstraps a new catalog, and returns the service.
    pub async fn start(self) -> Result<(Coffer, StartupReport), StartupError> {
        if self.keyring.is_none() && self.require_encryption {
            return Err(StartupError::EncryptionRequired);
        }
        if let Some(seed) = &self.admin_key_seed {
            check_admin_seed(seed)?;
        }
        let mut coffer = Coffer::new(self.catalog, self.secrets, self.keyring);
        coffer.backend_note = self.backend_note;
        // The canaries and the per-version counts: no value is read or opened here, so
        // every node of a cluster can start (and restart) without a walk over all values.
        let (new_canaries, counts) = check_keys(&coffer, self.allow_unreadable).await?;
        coffer.note_missing_versions(&counts.values);
        let (mut migrated_plaintext, mut migrated_signing_secrets) = (0, 0);
        if coffer.keyring().is_some() {
            coffer.load_counters(coffer.catalog()).await?;
            // The one walk a start takes: dev mode left plaintext (values or functions'
            // signing secrets) that a key must now encrypt. It verifies everything on the
            // way (as `coffer keys verify` does).
            let plaintext = |c: &BTreeMap<u32, u64>| c.get(&0).is_some_and(|n| *n > 0);
            if plaintext(&counts.values) || plaintext(&counts.signing) || plaintext(&counts.params)
            {
                let walk = coffer.walk_all(Walk::MigratePlaintext).await?;
                migrated_plaintext = walk.rewrapped;
                migrated_signing_secrets = walk.signing_secrets.rewrapped;
                coffer.flush_counters().await?;
            }
        }
        let unreadable = coffer.unreadable_count(Some(&counts.values)).await?;
        let unreadable_signing_secrets = coffer.values_without_key(&counts.signing);
        let admin_key = bootstrap(&coffer, self.admin_key_seed).await?;
        Ok((
            coffer,
            StartupReport {
                admin_key,
                new_canaries,
                migrated_plaintext,
                migrated_signing_secrets,
                unreadable,
                unreadable_signing_secrets,
            },
        ))
    }
}

/// Refuses a `COFFER_ADMIN_KEY` that could never authenticate: 32–512 visible ASCII
/// characters. [`StartupOptions::start`] checks it too; a caller checks it early to refuse
/// before it creates anything.
pub fn check_admin_seed(seed: &SecretString) -> Result<(), StartupError> {
    let s = seed.expose_secret();
    // Visible ASCII only: anything else cannot travel in an HTTP header, and a seed that can
    // never authenticate would lock the installation out.
    if !(32..=512).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StartupError::BadAdminSeed);
    }
    Ok(())
}

const CANARY_PLAINTEXT: &[u8] = b"coffer key canary";

fn canary_aad(version: KeyVersion) -> String {
    format!("coffer:canary:{version}")
}

/// What the stores hold per key version (`0` = plaintext), read at start-up.
struct StoredCounts {
    /// Secret values.
    values: BTreeMap<u32, u64>,
    /// Functions' signing secrets, current and previous ones.
    signing: BTreeMap<u32, u64>,
    /// Orchestrations' encrypted parameters.
    params: BTreeMap<u32, u64>,
}

impl StoredCounts {
    /// The values, signing secrets and encrypted parameters stored under `version`.
    fn of(&self, version: u32) -> (u64, u64, u64) {
        let get = |c: &BTreeMap<u32, u64>| c.get(&version).copied().unwrap_or(0);
        (get(&self.values), get(&self.signing), get(&self.params))
    }

    /// Every key version something is stored under, plaintext (`0`) included.
    fn versions(&self) -> std::collections::BTreeSet<u32> {
        self.values
            .keys()
            .chain(self.signing.keys())
            .chain(self.params.keys())
            .copied()
            .collect()
    }
}

/// Every stored value's and signing secret's key version must be in the ring, and every key
/// in the ring must open its canary. Versions without a canary get one. Returns them, and
/// what is stored per key version.
async fn check_keys(
    coffer: &Coffer,
    allow_unreadable: bool,
) -> Result<(Vec<KeyVersion>, StoredCounts), StartupError> {
    let counts = StoredCounts {
        values: coffer.secrets().count_by_key_version().await?,
        signing: coffer.catalog().count_signing_by_key_version().await?,
        params: coffer.count_params_by_key_version().await?,
    };
    let Some(ring) = coffer.keyring() else {
        let sealed = |c: &BTreeMap<u32, u64>| -> u64 {
            c.iter().filter(|(v, _)| **v != 0).map(|(_, n)| n).sum()
        };
        let (count, signing_secrets, params) = (
            sealed(&counts.values),
            sealed(&counts.signing),
            sealed(&counts.params),
        );
        return if count + signing_secrets + params > 0 {
            Err(StartupError::EncryptedValuesNeedKey {
                count,
                signing_secrets,
                params,
            })
        } else {
            Ok((Vec::new(), counts))
        };
    };
    for version in counts.versions() {
        let known = KeyVersion::new(version).is_ok_and(|v| ring.contains(v));
        if version != 0 && !known && !allow_unreadable {
            let (values, signing_secrets, params) = counts.of(version);
            return Err(StartupError::MissingKeyVersion {
                version,
                values,
                signing_secrets,
                params,
            });
        }
    }
    let canaries = coffer.catalog().canaries().await?;
    for canary in &canaries {
        if ring.contains(canary.key_version) {
            let aad = canary_aad(canary.key_version);
            if ring
                .open(canary.key_version, &canary.blob, aad.as_bytes())
                .is_err()
            {
                let version = canary.key_version;
                let (values, signing_secrets, params) = counts.of(version.get());
                return Err(StartupError::WrongKey {
                    version,
                    values,
                    signing_secrets,
                    params,
                });
            }
        }
    }
    let mut created = Vec::new();
    for version in ring.versions() {
        if canaries.iter().any(|c| c.key_version == version) {
            continue;
        }
        let sealed = ring
            .seal_with(version, canary_aad(version).as_bytes(), CANARY_PLAINTEXT)
            .map_err(|_| CoreError::Crypto)?;
        coffer
            .catalog()
            .put_canary(&Canary {
                key_version: version,
                blob: sealed.blob,
            })
            .await?;
        created.push(version);
    }
    Ok((created, counts))
}

async fn bootstrap(
    coffer: &Coffer,
    seed: Option<SecretString>,
) -> Result<Option<FirstAdminKey>, StartupError> {
    let seeded = seed.is_some();
    let (record, key) = new_api_key("admin (first start)".into(), Role::Admin, seed)?;
    let default = EnvName::new("default").map_err(|e| CoreError::Invalid(e.to_string()))?;
    let env = Environment {
        name: default,
        id: crate::service::new_environment_id()?,
        created_at: Timestamp::now(),
    };
    let first = coffer.catalog().bootstrap(&env, &record).await?;
    Ok(first.then_some(FirstAdminKey { key, seeded }))
}

/// `1 stored value is` / `3 stored values are` / `3 stored values and 1 function signing
/// secret are`: counts in messages read as English. Signing secrets are named only when
/// there are some.
fn stored_secrets(values: u64, signing: u64, params: u64, one: &str, many: &str) -> String {
    let count = |n: u64, what: &str| {
        let s = if n == 1 { "" } else { "s" };
        format!("{n} {what}{s}")
    };
    let mut parts = Vec::new();
    if values > 0 || signing + params == 0 {
        parts.push(count(values, "stored value"));
    }
    if signing > 0 {
        parts.push(count(signing, "function signing secret"));
    }
    if params > 0 {
        parts.push(count(params, "orchestration param"));
    }
    let verb = if values + signing + params == 1 {
        one
    } else {
        many
    };
    format!("{} {verb}", parts.join(" and "))
}
