//! The service: authentication, authorization, reads, and the one mutation path.

use std::sync::Arc;

use coffer_crypto::{Keyring, constant_time_eq, random_hex, sha256_hex};
use coffer_store::{
    Actor, ApiKeyId, ApiKeyMeta, ApiKeyRecord, BatchPut, Catalog, ConfigEntry, ConfigKey,
    ConfigPutOutcome, ConfigStore, EnvName, Environment, Origin, Precondition, PutOutcome,
    Revision, Role, SecretMeta, SecretName, SecretRecord, SecretStore, StoreError, StoreResult,
    StoredValue, Timestamp,
};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use crate::CoreError;
use crate::lifecycle::{EncryptionCounter, REWRAP_BATCH, RewrapReport, UnreadableSet, Walk};

/// The largest secret value, in bytes of UTF-8.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The largest config value: bytes of its compact JSON serialization.
pub const MAX_CONFIG_VALUE_BYTES: usize = 64 * 1024;

/// The most secrets one import may set.
pub const MAX_IMPORT: usize = 1000;

/// How often an import that lost a race with another write is retried before it gives up.
const IMPORT_ATTEMPTS: usize = 3;

/// Longest API key string that is even looked up.
const MAX_PRESENTED_KEY: usize = 512;

/// How long an authenticated key is trusted without asking the catalog again. This node's
/// own revocations take effect at once; another node's within this long (for reads only:
/// writes re-check the key when they commit).
pub const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Most keys remembered at once; past it the cache starts over (only keys that
/// authenticated are remembered, so guessing keys cannot fill it).
const AUTH_CACHE_MAX: usize = 10_000;

/// The service. Cheap to share behind an `Arc`.
pub struct Coffer {
    catalog: Arc<dyn Catalog>,
    secrets: Arc<dyn SecretStore>,
    config: Arc<dyn ConfigStore>,
    keyring: Option<Arc<Keyring>>,
    pub(crate) unreadable: UnreadableSet,
    pub(crate) encryptions: EncryptionCounter,
    auth_cache: Arc<AuthCache>,
    pub(crate) denials: crate::denials::DenialCoalescer,
}

/// Keys that authenticated lately, by SHA-256, with when they were looked up.
#[derive(Default)]
struct AuthCache {
    entries: std::sync::RwLock<std::collections::HashMap<String, (Principal, std::time::Instant)>>,
    /// Bumped (under the write lock) by every invalidation, so a lookup that raced one
    /// cannot put back what it removed.
    generation: std::sync::atomic::AtomicU64,
}

impl AuthCache {
    fn get(&self, hash: &str) -> Option<Principal> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let (principal, at) = entries.get(hash)?;
        (at.elapsed() < AUTH_CACHE_TTL).then(|| principal.clone())
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Remembers `principal` unless an invalidation happened since `generation` was read.
    fn insert(&self, hash: String, principal: Principal, generation: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if self.generation() != generation {
            return;
        }
        if entries.len() >= AUTH_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < AUTH_CACHE_TTL);
            if entries.len() >= AUTH_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(hash, (principal, std::time::Instant::now()));
    }

    /// Forgets every key (after a revocation or an environment deletion: both are rare).
    fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.clear();
    }
}

/// Who is calling: the API key that authenticated and its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The key's id (recorded as the actor of its mutations).
    pub key_id: ApiKeyId,
    /// What it may do.
    pub role: Role,
    /// Where this request came from (what its audit rows record).
    pub origin: Origin,
}

impl Principal {
    /// The actor its writes are made for: the store re-checks it when it commits.
    pub fn actor(&self) -> Actor {
        Actor::Key {
            id: self.key_id.clone(),
            environment: self.role.environment().cloned(),
            origin: self.origin.clone(),
        }
    }

    /// The same principal, for a request from `origin`.
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }
}

/// Every change Coffer makes on a caller's behalf.
pub enum Mutation {
    /// Create an environment (admin).
    CreateEnvironment {
        /// Its name.
        name: EnvName,
    },
    /// Delete an environment with its secrets and keys (admin).
    DeleteEnvironment {
        /// Its name.
        name: EnvName,
    },
    /// Create or update a secret (admin, manage of `env`).
    PutSecret {
        /// Its environment.
        env: EnvName,
        /// Its name.
        name: SecretName,
        /// The plaintext; sealed before it reaches a store.
        value: SecretString,
        /// `Some(0)`: must not exist; `Some(n)`: must be at revision n.
        expected_revision: Option<Revision>,
    },
    /// Set several secrets of one environment at once, all or none (admin, manage of
    /// `env`); a value equal to the stored one is left alone (no new revision).
    ImportSecrets {
        /// Their environment.
        env: EnvName,
        /// Names (distinct) and plaintexts.
        entries: Vec<(SecretName, SecretString)>,
    },
    /// Delete a secret (admin, manage of `env`).
    DeleteSecret {
        /// Its environment.
        env: EnvName,
        /// Its name.
        name: SecretName,
        /// `Some(n)`: must be at revision n.
        expected_revision: Option<Revision>,
    },
    /// Create an API key (admin).
    CreateApiKey {
        /// A label.
        name: String,
        /// What it may do.
        role: Role,
    },
    /// Revoke an API key (admin); it is refused from the next request on.
    RevokeApiKey {
        /// Its id.
        id: ApiKeyId,
    },
    /// Create or update a config entry (admin, manage of `env`).
    PutConfig {
        /// Its environment.
        env: EnvName,
        /// Its key.
        key: ConfigKey,
        /// Any JSON; at most [`MAX_CONFIG_VALUE_BYTES`] serialized.
        value: serde_json::Value,
        /// `Some(0)`: must not exist; `Some(n)`: must be at revision n.
        expected_revision: Option<Revision>,
    },
    /// Delete a config entry (admin, manage of `env`).
    DeleteConfig {
        /// Its environment.
        env: EnvName,
        /// Its key.
        key: ConfigKey,
        /// `Some(n)`: must be at revision n.
        expected_revision: Option<Revision>,
    },
    /// Re-encrypt stored values to the current key version (admin), starting after
    /// `after`: one batch of `limit` values, or every remaining value when `limit` is `None`.
    Rewrap {
        /// Where to resume; `None` starts at the beginning.
        after: Option<(EnvName, SecretName)>,
        /// Batch size; `None` walks to the end.
        limit: Option<usize>,
    },
}

/// What a mutation did.
#[derive(Debug)]
pub enum Applied {
    /// The new environment.
    EnvironmentCreated(Environment),
    /// The environment is gone, with this many secrets.
    EnvironmentDeleted {
        /// Its name.
        name: EnvName,
        /// How many secrets went with it.
        secrets: u64,
    },
    /// The secret's metadata after the write.
    SecretWritten(PutOutcome),
    /// What an import did to each secret, in the order given.
    SecretsImported(Vec<Imported>),
    /// The secret's last metadata.
    SecretDeleted(SecretMeta),
    /// The config entry after the write.
    ConfigWritten(ConfigPutOutcome),
    /// The config entry as it was before its deletion.
    ConfigDeleted(ConfigEntry),
    /// The new key, shown this once.
    ApiKeyCreated(NewApiKey),
    /// The key is revoked.
    ApiKeyRevoked(ApiKeyId),
    /// What a rewrap did.
    Rewrapped(RewrapReport),
}

/// One secret of an import: its metadata afterwards and what happened to it.
#[derive(Debug)]
pub struct Imported {
    /// The metadata after the import.
    pub meta: SecretMeta,
    /// Created, updated, or left alone.
    pub result: ImportResult,
}

/// What an import did to one secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportResult {
    /// It did not exist.
    Created,
    /// Its value changed (a new revision).
    Updated,
    /// Its value was already this one: nothing written.
    Unchanged,
}

/// A freshly created API key: its metadata and the key itself, shown once.
pub struct NewApiKey {
    /// The metadata, as lists show it.
    pub meta: ApiKeyMeta,
    /// The full key string; only its SHA-256 is stored.
    pub key: SecretString,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// What every mutation leaves behind: the seam where events (`system.secret.X.updated`)
/// and audit rows attach. Never carries a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutationRecord {
    /// The event subject, e.g. `system.secret.API_KEY.created`.
    pub subject: String,
    /// The environment touched, if any.
    pub environment: Option<EnvName>,
    /// The resource's name or id.
    pub name: String,
    /// The resource's revision after the change, where it has one.
    pub revision: Option<Revision>,
    /// The API key that did it.
    pub actor: ApiKeyId,
    /// When.
    pub at: Timestamp,
}

/// One page of a listing; `C` is what the next page starts after.
#[derive(Debug)]
pub struct Page<T, C = SecretName> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts, if there is one.
    pub next: Option<C>,
}

/// Whether values are encrypted at rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encryption {
    /// AES-256-GCM under the keyring; new writes use `current_key_version`.
    Enabled {
        /// The version new writes use.
        current_key_version: u32,
    },
    /// Dev mode: no key configured, values stored as they are.
    Disabled,
}

/// What `/v1/status` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The Coffer version.
    pub version: &'static str,
    /// The secret-value backend in use.
    pub backend: &'static str,
    /// Encryption state.
    pub encryption: Encryption,
    /// Values known to be unreadable.
    pub unreadable_values: u64,
    /// Things an operator should act on (e.g. a key past its nonce budget).
    pub warnings: Vec<String>,
}

impl Coffer {
    /// Assembles the service. Prefer [`crate::StartupOptions::start`], which also checks
    /// keys and bootstraps a new catalog.
    pub(crate) fn new(
        catalog: Arc<dyn Catalog>,
        secrets: Arc<dyn SecretStore>,
        config: Arc<dyn ConfigStore>,
        keyring: Option<Keyring>,
    ) -> Self {
        let encryptions = EncryptionCounter::new(keyring.as_ref());
        Coffer {
            catalog,
            secrets,
            config,
            keyring: keyring.map(Arc::new),
            unreadable: UnreadableSet::default(),
            encryptions,
            auth_cache: Arc::default(),
            denials: Default::default(),
        }
    }

    /// Version, backend and encryption state.
    pub fn status(&self) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION"),
            backend: self.secrets.backend_name(),
            encryption: match &self.keyring {
                Some(ring) => Encryption::Enabled {
                    current_key_version: ring.current().get(),
                },
                None => Encryption::Disabled,
            },
            unreadable_values: self.unreadable_count(),
            warnings: self.nonce_warnings(),
        }
    }

    /// Whether both stores answer.
    pub async fn ready(&self) -> Result<(), CoreError> {
        self.catalog.ping().await?;
        self.secrets.ping().await?;
        Ok(())
    }

    /// Looks up the presented API key by its SHA-256.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, CoreError> {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_KEY {
            return Err(CoreError::Unauthenticated);
        }
        let hash = sha256_hex(presented.as_bytes());
        if let Some(principal) = self.auth_cache.get(&hash) {
            return Ok(principal);
        }
        let generation = self.auth_cache.generation();
        let meta = self.catalog.find_api_key(&hash).await?;
        let meta = meta.ok_or(CoreError::Unauthenticated)?;
        let principal = Principal {
            key_id: meta.id,
            role: meta.role,
            origin: Origin::default(),
        };
        self.auth_cache.insert(hash, principal.clone(), generation);
        Ok(principal)
    }

    /// Admin only.
    pub fn require_admin(&self, who: &Principal) -> Result<(), CoreError> {
        match who.role {
            Role::Admin => Ok(()),
            _ => Err(CoreError::Forbidden),
        }
    }

    /// Admin, or a manage key of `env`.
    pub fn require_manage(&self, who: &Principal, env: &EnvName) -> Result<(), CoreError> {
        match &who.role {
            Role::Admin => Ok(()),
            Role::Manage(own) if own == env => Ok(()),
            _ => Err(CoreError::Forbidden),
        }
    }

    /// Admin, or a runtime key of `env`.
    pub fn require_runtime(&self, who: &Principal, env: &EnvName) -> Result<(), CoreError> {
        match &who.role {
            Role::Admin => Ok(()),
            Role::Runtime(own) if own == env => Ok(()),
            _ => Err(CoreError::Forbidden),
        }
    }

    /// Environments the caller may see: all for admin, its own for a manage key.
    pub async fn list_environments(&self, who: &Principal) -> Result<Vec<Environment>, CoreError> {
        match &who.role {
            Role::Admin => Ok(self.catalog.list_environments().await?),
            Role::Manage(own) => Ok(self
                .catalog
                .get_environment(own)
                .await?
                .into_iter()
                .collect()),
            Role::Runtime(_) => Err(CoreError::Forbidden),
        }
    }

    /// All API keys (admin), without the keys themselves.
    pub async fn list_api_keys(&self, who: &Principal) -> Result<Vec<ApiKeyMeta>, CoreError> {
        self.require_admin(who)?;
        Ok(self.catalog.list_api_keys().await?)
    }

    /// One page of an environment's secret metadata, in name order.
    pub async fn list_secrets(
        &self,
        who: &Principal,
        env: &EnvName,
        after: Option<&SecretName>,
        limit: usize,
    ) -> Result<Page<SecretMeta>, CoreError> {
        self.require_manage(who, env)?;
        self.existing_environment(env).await?;
        let mut items = self
            .secrets
            .list(env, after, limit.saturating_add(1))
            .await?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|m| m.name.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// One secret's metadata.
    pub async fn secret_meta(
        &self,
        who: &Principal,
        env: &EnvName,
        name: &SecretName,
    ) -> Result<SecretMeta, CoreError> {
        self.require_manage(who, env)?;
        match self.secrets.meta(env, name).await? {
            Some(meta) => Ok(meta),
            None => {
                self.existing_environment(env).await?;
                Err(CoreError::SecretNotFound {
                    env: env.clone(),
                    name: name.clone(),
                })
            }
        }
    }

    /// One config entry (admin, manage of `env`; runtime keys read config only through the
    /// runtime plane).
    pub async fn config_entry(
        &self,
        who: &Principal,
        env: &EnvName,
        key: &ConfigKey,
    ) -> Result<ConfigEntry, CoreError> {
        self.require_manage(who, env)?;
        match self.config.get_config(env, key).await? {
            Some(entry) => Ok(entry),
            None => {
                self.existing_environment(env).await?;
                Err(CoreError::ConfigNotFound {
                    env: env.clone(),
                    key: key.clone(),
                })
            }
        }
    }

    /// One page of an environment's config entries, in key order (bytes).
    pub async fn list_config(
        &self,
        who: &Principal,
        env: &EnvName,
        after: Option<&ConfigKey>,
        limit: usize,
    ) -> Result<Page<ConfigEntry, ConfigKey>, CoreError> {
        self.require_manage(who, env)?;
        self.existing_environment(env).await?;
        let mut items = self
            .config
            .list_config(env, after, limit.saturating_add(1))
            .await?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|c| c.key.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// The runtime plane: a secret's plaintext, for a runtime key of its environment.
    /// `Ok(None)` when it is not set.
    pub async fn resolve_secret(
        &self,
        who: &Principal,
        env: &EnvName,
        name: &SecretName,
    ) -> Result<Option<SecretString>, CoreError> {
        self.require_runtime(who, env)?;
        let Some(record) = self.secrets.get(env, name).await? else {
            return Ok(None);
        };
        let plain = self.open_record(&record)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| {
            self.mark_unreadable(&record.meta);
            CoreError::Unreadable {
                env: env.clone(),
                name: name.clone(),
            }
        })?;
        Ok(Some(SecretString::from(text)))
    }

    /// A stored value's plaintext bytes; a value that does not open is marked unreadable.
    fn open_record(&self, record: &SecretRecord) -> Result<Zeroizing<Vec<u8>>, CoreError> {
        open_stored(self.keyring(), record).ok_or_else(|| {
            self.mark_unreadable(&record.meta);
            CoreError::Unreadable {
                env: record.meta.environment.clone(),
                name: record.meta.name.clone(),
            }
        })
    }

    /// One attempt at an import: reads what is stored, then writes every changed value in
    /// one batch pinned to the revisions read (a concurrent write makes it a conflict).
    async fn import_once(
        &self,
        env: &EnvName,
        entries: &[(SecretName, SecretString)],
        actor: &Actor,
    ) -> Result<Vec<Imported>, CoreError> {
        let mut stored = Vec::with_capacity(entries.len());
        for (name, _) in entries {
            stored.push(self.secrets.get(env, name).await?);
        }
        let current: Vec<Option<SecretMeta>> = stored
            .iter()
            .map(|r| r.as_ref().map(|r| r.meta.clone()))
            .collect();
        // Opening, comparing and sealing up to MAX_IMPORT values is CPU work: off the async
        // workers, like a rewrap batch.
        let ring = self.shared_keyring();
        let (env_owned, entries_owned) = (env.clone(), entries.to_vec());
        let (batch, sealed) = tokio::task::spawn_blocking(move || {
            import_batch(ring.as_deref(), &env_owned, entries_owned, stored)
        })
        .await
        .map_err(|_| CoreError::Crypto)??;
        if let (Some(ring), true) = (self.keyring(), sealed > 0) {
            self.count_encryptions(ring.current(), sealed);
        }
        let outcomes = match self
            .secrets
            .put_many(env, batch, Timestamp::now(), actor)
            .await
        {
            Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(env.clone())),
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

    /// The one path every mutation takes: authorize, apply, record.
    pub async fn apply(&self, who: &Principal, mutation: Mutation) -> Result<Applied, CoreError> {
        let actor = &who.actor();
        let applied = match mutation {
            Mutation::CreateEnvironment { name } => {
                self.require_admin(who)?;
                if name.is_reserved() {
                    return Err(CoreError::Invalid(format!(
                        "the environment name `{name}` is reserved"
                    )));
                }
                let env = Environment {
                    name,
                    created_at: Timestamp::now(),
                };
                match self.catalog.create_environment(&env, actor).await {
                    Err(StoreError::AlreadyExists) => {
                        return Err(CoreError::EnvironmentExists(env.name));
                    }
                    other => other?,
                }
                Applied::EnvironmentCreated(env)
            }
            Mutation::DeleteEnvironment { name } => {
                self.require_admin(who)?;
                // The catalog deletes the environment and its keys in one transaction that
                // re-checks the acting key; values kept elsewhere are swept after it (and
                // a new environment of the same name clears any a racing write left).
                let deleted = self
                    .removing_keys(
                        |catalog, actor| {
                            let name = name.clone();
                            async move { catalog.delete_environment(&name, &actor).await }
                        },
                        actor,
                    )
                    .await;
                let with_catalog = match deleted {
                    Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(name)),
                    other => other?,
                };
                // A store in the catalog's database lost the values with the environment;
                // purging again could remove values of a new environment of the same name.
                let secrets = if self.secrets.capabilities().values_in_catalog {
                    with_catalog
                } else {
                    with_catalog + self.secrets.purge_environment(&name).await?
                };
                self.forget_environment(&name);
                Applied::EnvironmentDeleted { name, secrets }
            }
            Mutation::PutSecret {
                env,
                name,
                value,
                expected_revision,
            } => {
                self.require_manage(who, &env)?;
                self.require_compare_and_set(expected_revision)?;
                if value.expose_secret().len() > MAX_VALUE_BYTES {
                    return Err(CoreError::ValueTooLarge {
                        what: "secret",
                        limit: MAX_VALUE_BYTES,
                    });
                }
                self.existing_environment(&env).await?;
                let stored = self.seal_secret(&env, &name, value)?;
                let pre = Precondition::from_expected(expected_revision);
                let out = match self
                    .secrets
                    .put(&env, &name, stored, pre, Timestamp::now(), actor)
                    .await
                {
                    // The environment went between the check above and the write.
                    Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(env)),
                    other => other?,
                };
                self.mark_written(&env, &name);
                Applied::SecretWritten(out)
            }
            Mutation::ImportSecrets { env, entries } => {
                self.require_manage(who, &env)?;
                if !self.secrets.capabilities().atomic_batches {
                    let backend = self.secrets.backend_name();
                    return Err(CoreError::Invalid(format!(
                        "the {backend} secrets backend cannot import atomically; set secrets one by one"
                    )));
                }
                check_import(&entries)?;
                self.existing_environment(&env).await?;
                let mut attempt = 1;
                let imported = loop {
                    match self.import_once(&env, &entries, actor).await {
                        Err(CoreError::RevisionConflict { .. }) if attempt < IMPORT_ATTEMPTS => {
                            attempt += 1;
                        }
                        other => break other?,
                    }
                };
                for (name, _) in &entries {
                    self.mark_written(&env, name);
                }
                // Not a change, so no event; but "unchanged" tells a write-only key that its
                // guess was the stored value, so it is on the record (the audit log's seam).
                for i in imported
                    .iter()
                    .filter(|i| i.result == ImportResult::Unchanged)
                {
                    tracing::info!(
                        target: "coffer::mutation",
                        environment = %env,
                        name = %i.meta.name,
                        actor = %who.key_id,
                        "import left a secret unchanged (its value was the one sent)"
                    );
                }
                Applied::SecretsImported(imported)
            }
            Mutation::DeleteSecret {
                env,
                name,
                expected_revision,
            } => {
                self.require_manage(who, &env)?;
                self.require_compare_and_set(expected_revision)?;
                let pre = Precondition::from_expected(expected_revision);
                match self.secrets.delete(&env, &name, pre, actor).await {
                    Err(StoreError::NotFound) => {
                        self.existing_environment(&env).await?;
                        return Err(CoreError::SecretNotFound { env, name });
                    }
                    other => {
                        let gone = other?;
                        self.mark_written(&env, &name);
                        Applied::SecretDeleted(gone)
                    }
                }
            }
            Mutation::PutConfig {
                env,
                key,
                value,
                expected_revision,
            } => {
                self.require_manage(who, &env)?;
                let text = serde_json::to_string(&value).map_err(|_| {
                    CoreError::Invalid("the config value cannot be serialized as JSON".into())
                })?;
                if text.len() > MAX_CONFIG_VALUE_BYTES {
                    return Err(CoreError::ValueTooLarge {
                        what: "config",
                        limit: MAX_CONFIG_VALUE_BYTES,
                    });
                }
                self.existing_environment(&env).await?;
                let pre = Precondition::from_expected(expected_revision);
                match self
                    .config
                    .put_config(&env, &key, text, pre, Timestamp::now(), actor)
                    .await
                {
                    // The environment went between the check above and the write.
                    Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(env)),
                    other => Applied::ConfigWritten(other?),
                }
            }
            Mutation::DeleteConfig {
                env,
                key,
                expected_revision,
            } => {
                self.require_manage(who, &env)?;
                let pre = Precondition::from_expected(expected_revision);
                match self.config.delete_config(&env, &key, pre, actor).await {
                    Err(StoreError::NotFound) => {
                        self.existing_environment(&env).await?;
                        return Err(CoreError::ConfigNotFound { env, key });
                    }
                    other => Applied::ConfigDeleted(other?),
                }
            }
            Mutation::CreateApiKey { name, role } => {
                self.require_admin(who)?;
                check_key_label(&name)?;
                let (record, key) = new_api_key(name, role, None)?;
                // The catalog checks the environment in the writing transaction.
                match self.catalog.insert_api_key(&record, actor).await {
                    Err(StoreError::NotFound) => {
                        let env = record.meta.role.environment().cloned();
                        return Err(env.map_or(
                            CoreError::Store(StoreError::NotFound),
                            CoreError::EnvironmentNotFound,
                        ));
                    }
                    other => other?,
                }
                Applied::ApiKeyCreated(NewApiKey {
                    meta: record.meta,
                    key,
                })
            }
            Mutation::RevokeApiKey { id } => {
                self.require_admin(who)?;
                let revoked = self
                    .removing_keys(
                        |catalog, actor| {
                            let id = id.clone();
                            async move { catalog.delete_api_key(&id, &actor).await }
                        },
                        actor,
                    )
                    .await;
                match revoked {
                    Err(StoreError::NotFound) => return Err(CoreError::ApiKeyNotFound(id)),
                    other => other?,
                }
                Applied::ApiKeyRevoked(id)
            }
            Mutation::Rewrap { after, limit } => {
                self.require_admin(who)?;
                let mut report = RewrapReport {
                    next: after,
                    ..RewrapReport::default()
                };
                loop {
                    let batch = limit.unwrap_or(REWRAP_BATCH).clamp(1, REWRAP_BATCH);
                    report.absorb(
                        self.walk_batch(report.next.as_ref(), batch, Walk::Rewrap, actor)
                            .await?,
                    );
                    if limit.is_some() || report.next.is_none() {
                        break;
                    }
                    // A batch of already-current values never waits on I/O: let other
                    // requests on this worker run between batches.
                    tokio::task::yield_now().await;
                }
                Applied::Rewrapped(report)
            }
        };
        for record in applied.records(&who.key_id) {
            self.record(&record);
        }
        Ok(applied)
    }

    /// Where events and audit rows will be emitted; for now, one structured log line.
    fn record(&self, record: &MutationRecord) {
        tracing::info!(
            target: "coffer::mutation",
            subject = %record.subject,
            environment = record.environment.as_ref().map(EnvName::as_str),
            revision = record.revision,
            actor = %record.actor,
            "mutation"
        );
    }

    /// `expectedRevision` needs a backend that checks it atomically (Vault KV v1 cannot):
    /// refuse rather than pretend.
    fn require_compare_and_set(&self, expected: Option<Revision>) -> Result<(), CoreError> {
        if expected.is_some() && !self.secrets.capabilities().compare_and_set {
            let backend = self.secrets.backend_name();
            return Err(CoreError::Invalid(format!(
                "the {backend} secrets backend cannot check expectedRevision atomically; omit it"
            )));
        }
        Ok(())
    }

    /// Runs a catalog write that removes API keys on a task of its own, which clears the
    /// authentication cache once the write has ended: a request that goes away mid-way
    /// cannot leave a removed key cached on this node, since the write commits anyway.
    async fn removing_keys<F, Fut, T>(&self, write: F, actor: &Actor) -> StoreResult<T>
    where
        F: FnOnce(Arc<dyn Catalog>, Actor) -> Fut,
        Fut: std::future::Future<Output = StoreResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let cache = self.auth_cache.clone();
        let write = write(self.catalog.clone(), actor.clone());
        let task = tokio::spawn(async move {
            let result = write.await;
            cache.clear();
            result
        });
        task.await
            .map_err(|_| StoreError::Unavailable("a key removal task failed".into()))?
    }

    async fn existing_environment(&self, env: &EnvName) -> Result<Environment, CoreError> {
        self.catalog
            .get_environment(env)
            .await?
            .ok_or_else(|| CoreError::EnvironmentNotFound(env.clone()))
    }

    fn seal_secret(
        &self,
        env: &EnvName,
        name: &SecretName,
        value: SecretString,
    ) -> Result<StoredValue, CoreError> {
        let Some(ring) = &self.keyring else {
            return Ok(StoredValue::Plain(value));
        };
        let sealed = self.seal(
            ring,
            secret_aad(env, name).as_bytes(),
            value.expose_secret().as_bytes(),
        )?;
        Ok(StoredValue::Sealed {
            key_version: sealed.key_version,
            blob: sealed.blob,
        })
    }

    pub(crate) fn catalog(&self) -> &dyn Catalog {
        &*self.catalog
    }

    pub(crate) fn secrets(&self) -> &dyn SecretStore {
        &*self.secrets
    }

    pub(crate) fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_deref()
    }

    /// The keyring, to hand to a blocking task.
    pub(crate) fn shared_keyring(&self) -> Option<Arc<Keyring>> {
        self.keyring.clone()
    }
}

impl Applied {
    /// The records this mutation leaves, attributed to `actor`: one per changed resource
    /// (an import leaves one per secret it created or updated).
    pub fn records(&self, actor: &ApiKeyId) -> Vec<MutationRecord> {
        let at = Timestamp::now();
        let record = |(subject, environment, name, revision)| MutationRecord {
            subject,
            environment,
            name,
            revision,
            actor: actor.clone(),
            at,
        };
        if let Applied::SecretsImported(all) = self {
            return all
                .iter()
                .filter(|i| i.result != ImportResult::Unchanged)
                .map(|i| {
                    let verb = match i.result {
                        ImportResult::Created => "created",
                        _ => "updated",
                    };
                    let m = &i.meta;
                    record((
                        format!("system.secret.{}.{verb}", m.name),
                        Some(m.environment.clone()),
                        m.name.to_string(),
                        Some(m.revision),
                    ))
                })
                .collect();
        }
        let one = match self {
            Applied::EnvironmentCreated(e) => (
                format!("system.environment.{}.created", e.name),
                Some(e.name.clone()),
                e.name.to_string(),
                None,
            ),
            Applied::EnvironmentDeleted { name, .. } => (
                format!("system.environment.{name}.deleted"),
                Some(name.clone()),
                name.to_string(),
                None,
            ),
            Applied::SecretWritten(out) => {
                let verb = if out.created { "created" } else { "updated" };
                let m = &out.meta;
                (
                    format!("system.secret.{}.{verb}", m.name),
                    Some(m.environment.clone()),
                    m.name.to_string(),
                    Some(m.revision),
                )
            }
            Applied::SecretDeleted(m) => (
                format!("system.secret.{}.deleted", m.name),
                Some(m.environment.clone()),
                m.name.to_string(),
                Some(m.revision),
            ),
            Applied::ConfigWritten(out) => {
                let verb = if out.created { "created" } else { "updated" };
                let c = &out.entry;
                (
                    format!("system.config.{}.{verb}", c.key),
                    Some(c.environment.clone()),
                    c.key.to_string(),
                    Some(c.revision),
                )
            }
            Applied::ConfigDeleted(c) => (
                format!("system.config.{}.deleted", c.key),
                Some(c.environment.clone()),
                c.key.to_string(),
                Some(c.revision),
            ),
            Applied::ApiKeyCreated(k) => (
                format!("system.apikey.{}.created", k.meta.id),
                k.meta.role.environment().cloned(),
                k.meta.id.to_string(),
                None,
            ),
            Applied::ApiKeyRevoked(id) => (
                format!("system.apikey.{id}.deleted"),
                None,
                id.to_string(),
                None,
            ),
            Applied::Rewrapped(r) => (
                "system.keys.rewrapped".to_owned(),
                None,
                format!("rewrapped={} unreadable={}", r.rewrapped, r.unreadable),
                None,
            ),
            Applied::SecretsImported(_) => return Vec::new(), // handled above
        };
        vec![record(one)]
    }
}

/// The associated data that binds a secret's ciphertext to its place: environment and name.
/// Neither can contain `:`, so the string is unambiguous.
pub(crate) fn secret_aad(env: &EnvName, name: &SecretName) -> String {
    format!("coffer:secret:{env}:{name}")
}

/// Builds a new key for `role`: `ck_<env or admin>_<48 hex>` (or the operator's `seed`).
pub(crate) fn new_api_key(
    name: String,
    role: Role,
    seed: Option<SecretString>,
) -> Result<(ApiKeyRecord, SecretString), CoreError> {
    let key = match seed {
        Some(seed) => seed,
        None => {
            let scope = role.environment().map_or("admin", EnvName::as_str);
            let token = random_hex::<24>().map_err(|_| CoreError::Crypto)?;
            SecretString::from(format!("ck_{scope}_{token}"))
        }
    };
    let id = random_hex::<8>().map_err(|_| CoreError::Crypto)?;
    let id = ApiKeyId::new(&format!("ak_{id}")).map_err(|e| CoreError::Invalid(e.to_string()))?;
    let record = ApiKeyRecord {
        meta: ApiKeyMeta {
            id,
            name,
            role,
            created_at: Timestamp::now(),
        },
        key_hash: sha256_hex(key.expose_secret().as_bytes()),
    };
    Ok((record, key))
}

/// The batch of an import: for each entry, the value sealed for writing, or none when the
/// stored value opens to exactly the one sent (compared in constant time); each pinned to
/// the revision read. A stored value that does not open is replaced: writing repairs it.
/// Returns the batch and how many values it sealed. Pure CPU: runs on a blocking thread.
fn import_batch(
    ring: Option<&Keyring>,
    env: &EnvName,
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
                let aad = secret_aad(env, &name);
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

/// A stored value's plaintext, if it opens.
fn open_stored(ring: Option<&Keyring>, record: &SecretRecord) -> Option<Zeroizing<Vec<u8>>> {
    match &record.value {
        StoredValue::Plain(value) => {
            Some(Zeroizing::new(value.expose_secret().as_bytes().to_vec()))
        }
        StoredValue::Sealed { key_version, blob } => {
            let aad = secret_aad(&record.meta.environment, &record.meta.name);
            ring?.open(*key_version, blob, aad.as_bytes()).ok()
        }
    }
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
        if value.expose_secret().len() > MAX_VALUE_BYTES {
            return Err(CoreError::ValueTooLarge {
                what: "secret",
                limit: MAX_VALUE_BYTES,
            });
        }
    }
    Ok(())
}

fn check_key_label(name: &str) -> Result<(), CoreError> {
    let len = name.chars().count();
    if len == 0 || len > 128 || name.chars().any(char::is_control) {
        return Err(CoreError::Invalid(
            "API key names are 1-128 characters without control characters".into(),
        ));
    }
    Ok(())
}
