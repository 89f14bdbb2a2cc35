//! The service: authentication, authorization and reads. Changes are commands (`crate::commands`).

use std::sync::Arc;

use coffer_crypto::{Keyring, random_hex, sha256_hex};
use coffer_store::{
    Actor, ApiKeyId, ApiKeyMeta, ApiKeyRecord, Catalog, ConfigEntry, ConfigKey, EnvId, EnvName,
    Environment, Origin, Role, SecretListing, SecretMeta, SecretName, SecretRecord, SecretStore,
    StoreError, StoreResult, StoredValue, Timestamp,
};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use crate::CoreError;
use crate::lifecycle::EncryptionCounter;

/// The largest secret value, in bytes of UTF-8.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The largest config value: bytes of its compact JSON serialization.
pub const MAX_CONFIG_VALUE_BYTES: usize = 64 * 1024;

/// The most secrets one import may set.
pub const MAX_IMPORT: usize = 1000;

/// Longest API key string that is even looked up.
const MAX_PRESENTED_KEY: usize = 512;

/// A presented API key's SHA-256 (hex), the form in which the catalog finds it. Holding it
/// lets a caller re-check a key without keeping the key; it cannot be presented in its place.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDigest(String);

impl KeyDigest {
    /// The digest of a presented key, or `None` for one no key can be (empty, too long).
    pub fn of(presented: &str) -> Option<KeyDigest> {
        if presented.is_empty() || presented.len() > MAX_PRESENTED_KEY {
            return None;
        }
        Some(KeyDigest(sha256_hex(presented.as_bytes())))
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

/// How long an authenticated key is trusted without asking the catalog again. This node's
/// own revocations take effect at once; another node's within this long (for reads only:
/// writes re-check the key when they commit).
pub const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Most keys remembered at once; past it the cache starts over (only keys that
/// authenticated are remembered, so guessing keys cannot fill it).
const AUTH_CACHE_MAX: usize = 10_000;

/// The service. Cheap to share behind an `Arc`.
pub struct Coffer {
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) secrets: Arc<dyn SecretStore>,
    keyring: Option<Arc<Keyring>>,
    /// Start-up found values under a key version the keyring lacks (see
    /// `Coffer::unreadable_count`).
    pub(crate) missing_versions: std::sync::atomic::AtomicBool,
    pub(crate) encryptions: EncryptionCounter,
    auth_cache: Arc<AuthCache>,
    pub(crate) denials: crate::denials::DenialCoalescer,
    pub(crate) recent_events: crate::events::RecentEvents,
    pub(crate) runtime: crate::runtime::Runtime,
    /// Why the secrets backend is not the configured one (see `StartupOptions`).
    pub(crate) backend_note: Option<String>,
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

/// One page of a listing; `C` is what the next page starts after.
#[derive(Debug)]
pub struct Page<T, C = SecretName> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts, if there is one.
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// A page of `limit` from `items`, read with one more than `limit` to learn whether
    /// more follow: the cursor is then `key` of the page's last item.
    pub(crate) fn cut(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> C) -> Self {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(key)
        } else {
            None
        };
        Page { items, next }
    }

    /// Like [`Page::cut`], for items a store read within a byte budget
    /// ([`coffer_store::PageSize`]): items that weigh `bytes` or more together were ended by
    /// the budget, so the last one's key is the cursor however few they are (the next page
    /// may then be empty).
    pub(crate) fn cut_within(
        items: Vec<T>,
        limit: usize,
        bytes: usize,
        weight: impl Fn(&T) -> usize,
        key: impl Fn(&T) -> C,
    ) -> Self {
        let full = items.iter().map(weight).fold(0, usize::saturating_add) >= bytes;
        let mut page = Self::cut(items, limit, &key);
        if page.next.is_none() && full {
            page.next = page.items.last().map(key);
        }
        page
    }
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
    /// The secret-value backend in use, as it describes itself (and why it is not the one
    /// configured, after a fallback).
    pub backend: String,
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
        keyring: Option<Keyring>,
    ) -> Self {
        let encryptions = EncryptionCounter::new(keyring.as_ref());
        Coffer {
            catalog,
            secrets,
            keyring: keyring.map(Arc::new),
            missing_versions: Default::default(),
            encryptions,
            auth_cache: Arc::default(),
            denials: Default::default(),
            recent_events: Default::default(),
            runtime: Default::default(),
            backend_note: None,
        }
    }

    /// Version, backend, encryption state, and the unreadable values as the catalog knows
    /// them (so every node on one catalog says the same).
    pub async fn status(&self) -> Result<Status, CoreError> {
        Ok(Status {
            version: env!("CARGO_PKG_VERSION"),
            backend: match &self.backend_note {
                Some(note) => format!("{} ({note})", self.secrets.backend_name()),
                None => self.secrets.describe(),
            },
            encryption: match &self.keyring {
                Some(ring) => Encryption::Enabled {
                    current_key_version: ring.current().get(),
                },
                None => Encryption::Disabled,
            },
            unreadable_values: self.unreadable_count(None).await?,
            warnings: self.nonce_warnings(),
        })
    }

    /// Whether both stores answer; the error names the one that does not.
    pub async fn ready(&self) -> Result<(), CoreError> {
        self.catalog
            .ping()
            .await
            .map_err(|e| CoreError::NotReady(format!("the catalog: {e}")))?;
        if !self.secrets.capabilities().values_in_catalog {
            let backend = self.secrets.backend_name();
            self.secrets
                .ping()
                .await
                .map_err(|e| CoreError::NotReady(format!("the {backend} secrets backend: {e}")))?;
        }
        Ok(())
    }

    /// Looks up the presented API key by its SHA-256.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, CoreError> {
        let digest = KeyDigest::of(presented).ok_or(CoreError::Unauthenticated)?;
        self.authenticate_digest(&digest).await
    }

    /// [`Coffer::authenticate`] for a key already digested: what a long-lived caller (an
    /// event stream) keeps to re-check its key, instead of the key itself.
    pub async fn authenticate_digest(&self, digest: &KeyDigest) -> Result<Principal, CoreError> {
        let hash = digest.0.as_str();
        if let Some(principal) = self.auth_cache.get(hash) {
            return Ok(principal);
        }
        let generation = self.auth_cache.generation();
        let meta = self.catalog.find_api_key(hash).await?;
        let meta = meta.ok_or(CoreError::Unauthenticated)?;
        let principal = Principal {
            key_id: meta.id,
            role: meta.role,
            origin: Origin::default(),
        };
        self.auth_cache
            .insert(hash.to_owned(), principal.clone(), generation);
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
        listing: &SecretListing<'_>,
        limit: usize,
    ) -> Result<Page<SecretMeta, (SecretName, Timestamp)>, CoreError> {
        self.require_manage(who, env)?;
        let env = self.existing_environment(env).await?;
        let read = self
            .secrets
            .list(&env, listing, limit.saturating_add(1))
            .await?;
        let mut page = Page::cut(read.items, limit, |m| (m.name.clone(), m.updated_at));
        // A search that examined its most names ends the page where it stopped.
        if page.next.is_none() {
            page.next = read.resume;
        }
        Ok(page)
    }

    /// One secret's metadata.
    pub async fn secret_meta(
        &self,
        who: &Principal,
        env: &EnvName,
        name: &SecretName,
    ) -> Result<SecretMeta, CoreError> {
        self.require_manage(who, env)?;
        let catalog: &dyn coffer_store::AccessStore = self.catalog.as_ref();
        match self.secrets.meta_in(catalog, env, name).await? {
            None => Err(CoreError::EnvironmentNotFound(env.clone())),
            Some((_, Some(meta))) => Ok(meta),
            Some((_, None)) => Err(CoreError::SecretNotFound {
                env: env.clone(),
                name: name.clone(),
            }),
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
        match self.catalog.get_config(env, key).await? {
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
        let size = coffer_store::PageSize::rows(limit.saturating_add(1));
        let items = self.catalog.list_config(env, after, size).await?;
        Ok(Page::cut_within(
            items,
            limit,
            size.bytes,
            ConfigEntry::weight,
            |c| c.key.clone(),
        ))
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
        let incarnation = self.existing_environment(env).await?;
        let Some(record) = self.secrets.get(&incarnation, name).await? else {
            return Ok(None);
        };
        kept_here(&record, self.secrets.backend_name())?;
        let text = open_stored(self.keyring(), &record)
            .and_then(|plain| String::from_utf8(plain.to_vec()).ok());
        match text {
            Some(text) => Ok(Some(SecretString::from(text))),
            None => {
                // Every node learns it through the catalog.
                self.mark_unreadable(&record.meta).await;
                Err(CoreError::Unreadable {
                    env: env.clone(),
                    name: name.clone(),
                })
            }
        }
    }

    /// Runs a catalog write that removes API keys on a task of its own, which clears the
    /// authentication cache once the write has ended: a request that goes away mid-way
    /// cannot leave a removed key cached on this node, since the write commits anyway.
    pub(crate) async fn removing_keys<F, Fut, T>(&self, write: F, actor: &Actor) -> StoreResult<T>
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

    pub(crate) async fn existing_environment(
        &self,
        env: &EnvName,
    ) -> Result<Environment, CoreError> {
        self.catalog
            .get_environment(env)
            .await?
            .ok_or_else(|| CoreError::EnvironmentNotFound(env.clone()))
    }

    pub(crate) fn seal_secret(
        &self,
        env: &Environment,
        name: &SecretName,
        value: SecretString,
    ) -> Result<StoredValue, CoreError> {
        if self.secrets.capabilities().raw_values {
            // The store keeps values raw on purpose (Vault's `raw` format): it is their
            // protection at rest.
            return Ok(StoredValue::Plain(value));
        }
        self.seal_stored(&secret_aad(&env.name, &env.id, name), value)
    }

    /// `value` as a store keeps it: sealed under the current key version with `aad` as
    /// its associated data, or as it is in dev mode.
    pub(crate) fn seal_stored(
        &self,
        aad: &str,
        value: SecretString,
    ) -> Result<StoredValue, CoreError> {
        let Some(ring) = &self.keyring else {
            return Ok(StoredValue::Plain(value));
        };
        let sealed = self.seal(ring, aad.as_bytes(), value.expose_secret().as_bytes())?;
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

/// The associated data that binds a secret's ciphertext to its place: the environment's
/// incarnation and the secret's name, `coffer:secret:<env id>:<name>`. An environment that
/// existed before incarnations ([`EnvId::names_environment_only`]) keeps the form its values
/// were sealed with, `coffer:secret:<env name>:<name>`. No part can contain `:`, and an
/// environment name cannot contain the `_` every id has, so no two places share a string.
pub(crate) fn secret_aad(env: &EnvName, id: &EnvId, name: &SecretName) -> String {
    if id.names_environment_only() {
        format!("coffer:secret:{env}:{name}")
    } else {
        format!("coffer:secret:{id}:{name}")
    }
}

/// A new environment incarnation id, `env_<16 hex>`.
pub(crate) fn new_environment_id() -> Result<EnvId, CoreError> {
    let hex = random_hex::<8>().map_err(|_| CoreError::Crypto)?;
    EnvId::new(&format!("env_{hex}")).map_err(|e| CoreError::Invalid(e.to_string()))
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

/// A stored value's plaintext, if it opens.
pub(crate) fn open_stored(
    ring: Option<&Keyring>,
    record: &SecretRecord,
) -> Option<Zeroizing<Vec<u8>>> {
    match &record.value {
        StoredValue::Plain(value) => {
            Some(Zeroizing::new(value.expose_secret().as_bytes().to_vec()))
        }
        StoredValue::Sealed { key_version, blob } => {
            let meta = &record.meta;
            let aad = secret_aad(&meta.environment, &meta.environment_id, &meta.name);
            ring?.open(*key_version, blob, aad.as_bytes()).ok()
        }
    }
}

/// A record whose catalog row refers to a value store this node does not use (its values
/// were migrated while it was configured for another backend) is refused, loudly, rather
/// than taken for an unreadable value.
pub(crate) fn kept_here(record: &SecretRecord, backend: &str) -> Result<(), CoreError> {
    Ok(coffer_store::values::kept_by(record, backend)?)
}

/// A stored secret that is not a secret value (a signing secret, an orchestration param) as
/// text, opened with `aad`; `None` when it does not open or is not UTF-8.
pub(crate) fn open_text(
    ring: Option<&Keyring>,
    stored: &StoredValue,
    aad: &str,
) -> Option<SecretString> {
    match stored {
        StoredValue::Plain(v) => Some(v.clone()),
        StoredValue::Sealed { key_version, blob } => {
            let plain = ring?.open(*key_version, blob, aad.as_bytes()).ok()?;
            String::from_utf8(plain.to_vec())
                .ok()
                .map(SecretString::from)
        }
    }
}

pub(crate) fn check_key_label(name: &str) -> Result<(), CoreError> {
    let len = name.chars().count();
    if len == 0 || len > 128 || name.chars().any(char::is_control) {
        return Err(CoreError::Invalid(
            "API key names are 1-128 characters without control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Page;

    /// A page a store ended by its bytes gets a cursor however few items it has; one it ended
    /// by rows is cut as [`Page::cut`] cuts it; one that ended short of both is the last.
    #[test]
    fn a_page_cut_by_its_bytes_still_hands_out_a_cursor() {
        let cut = |items: Vec<usize>, limit| {
            let page = Page::cut_within(items, limit, 10, |w: &usize| *w, |w: &usize| *w);
            (page.items, page.next)
        };
        // Two items weighing 4 + 6 reached the 10 bytes: more may follow.
        assert_eq!(cut(vec![4, 6], 5), (vec![4, 6], Some(6)));
        // Six read for a limit of 5: the sixth only says more follow.
        assert_eq!(
            cut(vec![1, 1, 1, 1, 2, 3], 5),
            (vec![1, 1, 1, 1, 2], Some(2))
        );
        // Short of both bounds: the last page.
        assert_eq!(cut(vec![1, 2], 5), (vec![1, 2], None));
        assert_eq!(cut(vec![], 5), (vec![], None));
    }
}
