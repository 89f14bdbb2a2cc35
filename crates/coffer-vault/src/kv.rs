//! [`VaultValues`]: Coffer's secret values in a KV v1 or v2 mount, one Vault secret per
//! Coffer secret at `{secret_path}/{environment}/{name}`, holding
//!
//! ```text
//! value                  the plaintext (raw format) or the sealed blob
//! coffer_key_version     "0" for a plaintext, else the key version of the blob
//! coffer_revision        the Coffer revision ("1", "2", …)
//! coffer_created_at      ms since the epoch, when revision 1 was written
//! coffer_updated_at      ms since the epoch, when this revision was written
//! coffer_environment_id  the incarnation of the environment it belongs to
//! coffer_write_id        the write that stored it (the catalog's reference names it)
//! ```
//!
//! so that `bao kv get -field=value secret/coffer/prod/DB_URL` prints a raw value.
//! Incarnations of one environment name share its path: a value of another incarnation
//! reads as absent, and is overwritten (compare-and-set on its version) as if absent.

use std::sync::Arc;

use async_trait::async_trait;
use coffer_crypto::KeyVersion;
use coffer_store::{
    Environment, SecretName, StoreError, StoreResult, StoredValue, Timestamp, ValueEntry,
    ValueExpect, ValueStore, ValueVersion,
};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::VaultError;
use crate::config::{KvVersion, ValueFormat, VaultConfig};
use crate::http::{Reply, VaultHttp, vault_errors};
use crate::token::TokenSource;

/// Secret values in Vault / OpenBao KV (`COFFER_SECRETS_BACKEND=vault`).
pub struct VaultValues {
    tokens: Arc<TokenSource>,
    kv: KvVersion,
    secret_path: String,
    metadata_path: String,
    format: ValueFormat,
    namespace: Option<String>,
}

impl std::fmt::Debug for VaultValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultValues")
            .field("addr", &self.tokens.http().addr())
            .field("kv", &self.kv)
            .field("secret_path", &self.secret_path)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// What one KV read found under a key.
enum Found {
    /// No secret there (never written, or removed with its metadata).
    Nothing,
    /// The latest version was deleted or destroyed: nothing to read, but a
    /// compare-and-set must name it.
    Gone(ValueVersion),
    /// A version and its data.
    Data(ValueVersion, Map<String, Value>),
}

impl VaultValues {
    /// Connects once: builds the client, logs in (or looks the token up) and checks the
    /// mount answers. No retry loop: the caller retries a bounded number of times.
    pub async fn connect(config: VaultConfig) -> Result<VaultValues, VaultError> {
        let http = VaultHttp::new(&config.addr, config.namespace.clone(), config.timeout)?;
        let tokens = Arc::new(TokenSource::new(http, config.auth));
        tokens.ensure().await?;
        let values = VaultValues {
            tokens,
            kv: config.kv_version,
            secret_path: config.secret_path,
            metadata_path: config.metadata_path,
            format: config.value_format,
            namespace: config.namespace,
        };
        values.check_mount().await?;
        for warning in values.mount_warnings().await {
            tracing::warn!("{warning}");
        }
        Ok(values)
    }

    /// What in the KV v2 mount's settings can make a catalog reference outlive the version
    /// it names: fewer than 10 versions kept (only uncommitted writes add versions no
    /// reference names, but each takes one), or versions deleted after a while (a secret not
    /// written for that long stops reading). Empty when the settings are safe, for KV v1, or
    /// when the token may not read them.
    pub async fn mount_warnings(&self) -> Vec<String> {
        if self.kv != KvVersion::V2 {
            return Vec::new();
        }
        let mount = self.secret_path.split('/').next().unwrap_or_default();
        let Ok(reply) = self
            .tokens
            .request(Method::GET, &format!("{mount}/config"), None)
            .await
        else {
            return Vec::new();
        };
        let data = reply.body.as_ref().and_then(|b| b.get("data"));
        if !reply.status.is_success() || data.is_none() {
            return Vec::new();
        }
        let mut warnings = Vec::new();
        let kept = data
            .and_then(|d| d.get("max_versions"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if (1..10).contains(&kept) {
            warnings.push(format!(
                "the Vault mount {mount} keeps {kept} versions per key: a secret answers \"lost version\" after {} writes in a row that did not commit; keep max_versions at 10 or more (docs/BACKENDS.md)",
                kept.saturating_sub(1)
            ));
        }
        let after = data
            .and_then(|d| d.get("delete_version_after"))
            .and_then(Value::as_str)
            .unwrap_or("0s");
        if !matches!(after, "" | "0s" | "0") {
            warnings.push(format!(
                "the Vault mount {mount} deletes versions after {after}: a secret not written for that long stops reading; set delete_version_after to 0 (docs/BACKENDS.md)"
            ));
        }
        warnings
    }

    /// A LIST of the metadata path: 200, or 404 without errors (nothing written yet),
    /// means the mount answers and the token may list it.
    async fn check_mount(&self) -> Result<(), VaultError> {
        let reply = self
            .tokens
            .request(list(), &self.metadata_path, None)
            .await?;
        let has_errors = !vault_errors(&reply).starts_with("HTTP ");
        match reply.status {
            s if s.is_success() => Ok(()),
            // An empty path answers 404 with no errors; a missing mount names the route.
            StatusCode::NOT_FOUND if !has_errors => Ok(()),
            _ => Err(VaultError::Protocol(format!(
                "LIST {}: {}",
                self.metadata_path,
                vault_errors(&reply)
            ))),
        }
    }

    fn data_path(&self, env: &Environment, name: &SecretName) -> String {
        format!("{}/{}/{}", self.secret_path, env.name, name)
    }

    /// The latest version under the key (or `version`), whichever incarnation wrote it.
    async fn fetch(
        &self,
        env: &Environment,
        name: &SecretName,
        version: Option<ValueVersion>,
    ) -> StoreResult<Found> {
        let mut path = self.data_path(env, name);
        if let (KvVersion::V2, Some(v)) = (self.kv, version) {
            path.push_str(&format!("?version={v}"));
        }
        let reply = self.tokens.request(Method::GET, &path, None).await?;
        let body = reply.body.as_ref();
        match self.kv {
            KvVersion::V1 => match reply.status {
                StatusCode::NOT_FOUND => Ok(Found::Nothing),
                s if s.is_success() => {
                    let data = body
                        .and_then(|b| b.get("data"))
                        .and_then(Value::as_object)
                        .ok_or_else(|| corrupt(env, name, "a KV v1 answer without data"))?;
                    Ok(Found::Data(0, data.clone()))
                }
                _ => Err(unexpected(&reply)),
            },
            KvVersion::V2 => {
                let inner = body.and_then(|b| b.get("data"));
                let version_of = || {
                    inner
                        .and_then(|d| d.get("metadata"))
                        .and_then(|m| m.get("version"))
                        .and_then(Value::as_u64)
                };
                let data = inner.and_then(|d| d.get("data")).and_then(Value::as_object);
                match (reply.status, data, version_of()) {
                    (s, Some(data), Some(v)) if s.is_success() => Ok(Found::Data(v, data.clone())),
                    // A deleted or destroyed version answers 404 (or 200) with its
                    // metadata and no data.
                    (s, None, Some(v)) if s.is_success() || s == StatusCode::NOT_FOUND => {
                        Ok(Found::Gone(v))
                    }
                    (StatusCode::NOT_FOUND, _, _) => Ok(Found::Nothing),
                    (s, _, _) if s.is_success() => {
                        Err(corrupt(env, name, "a KV v2 answer without data or version"))
                    }
                    _ => Err(unexpected(&reply)),
                }
            }
        }
    }

    /// KV v1: removes the key, whoever wrote it. KV v2: destroys the versions at or below
    /// `up_to` (the data is gone for good), never a newer one: there is no conditional
    /// delete of a whole key, so a write that lands after the caller looked keeps its value.
    /// The key's metadata stays (its versions read as destroyed, i.e. absent).
    async fn remove_key(
        &self,
        env: &Environment,
        name: &SecretName,
        up_to: ValueVersion,
    ) -> StoreResult<()> {
        let reply = match self.kv {
            KvVersion::V1 => {
                let path = self.data_path(env, name);
                self.tokens.request(Method::DELETE, &path, None).await?
            }
            KvVersion::V2 => {
                let path = self.data_path(env, name).replacen("/data/", "/destroy/", 1);
                // Vault keeps at most `max_versions` (10 by default); older numbers are gone.
                let from = up_to.saturating_sub(DESTROY_WINDOW - 1).max(1);
                let versions: Vec<ValueVersion> = (from..=up_to).collect();
                let body = json!({ "versions": versions });
                self.tokens
                    .request(Method::POST, &path, Some(&body))
                    .await?
            }
        };
        match reply.status {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(unexpected(&reply)),
        }
    }

    /// The keys listed under `env`'s path (folders left out), whichever incarnation wrote
    /// them, in byte order.
    async fn listed(&self, env: &Environment) -> StoreResult<Vec<SecretName>> {
        let path = format!("{}/{}", self.metadata_path, env.name);
        let reply = self.tokens.request(list(), &path, None).await?;
        match reply.status {
            StatusCode::NOT_FOUND => return Ok(Vec::new()),
            s if s.is_success() => {}
            _ => return Err(unexpected(&reply)),
        }
        let keys = reply
            .body
            .as_ref()
            .and_then(|b| b.get("data"))
            .and_then(|d| d.get("keys"))
            .and_then(Value::as_array)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("LIST of {} answered without keys", env.name))
            })?;
        let mut names: Vec<SecretName> = keys
            .iter()
            .filter_map(Value::as_str)
            .filter(|k| !k.ends_with('/'))
            // A key Coffer could not have written is not one of its secrets.
            .filter_map(|k| SecretName::new(k).ok())
            .collect();
        names.sort_by(|a, b| a.as_str().as_bytes().cmp(b.as_str().as_bytes()));
        Ok(names)
    }
}

#[async_trait]
impl ValueStore for VaultValues {
    fn backend_name(&self) -> &'static str {
        "vault"
    }

    fn describe(&self) -> String {
        let kv = match self.kv {
            KvVersion::V1 => "KV v1",
            KvVersion::V2 => "KV v2",
        };
        let at = match &self.namespace {
            Some(ns) => format!("{} in namespace {ns}", self.secret_path),
            None => self.secret_path.clone(),
        };
        let format = match self.format {
            ValueFormat::Raw => "raw values: Vault protects them at rest",
            ValueFormat::Sealed => "sealed values",
        };
        format!("vault ({kv} at {at}, {format})")
    }

    fn versioned(&self) -> bool {
        self.kv == KvVersion::V2
    }

    fn raw_values(&self) -> bool {
        self.format == ValueFormat::Raw
    }

    async fn write(
        &self,
        env: &Environment,
        name: &SecretName,
        entry: &ValueEntry,
        expect: ValueExpect,
    ) -> StoreResult<ValueVersion> {
        let data = data_of(env, entry);
        let path = self.data_path(env, name);
        if self.kv == KvVersion::V1 {
            // KV v1 has no check-and-set: ExternalSecrets refuses what would need one.
            let reply = self
                .tokens
                .request(Method::POST, &path, Some(&data))
                .await?;
            return match reply.status {
                s if s.is_success() => Ok(0),
                _ => Err(unexpected(&reply)),
            };
        }
        let cas = match expect {
            ValueExpect::Any => None,
            ValueExpect::Version(v) => Some(v),
            ValueExpect::Absent => match self.fetch(env, name, None).await? {
                Found::Nothing => Some(0),
                Found::Gone(v) => Some(v),
                Found::Data(_, data) if belongs_to(&data, env) => {
                    return Err(StoreError::Conflict { current: None });
                }
                // Another incarnation's value counts as absent; the check-and-set on its
                // version keeps a racing write of ours from being overwritten.
                Found::Data(v, _) => Some(v),
            },
        };
        let body = match cas {
            Some(cas) => json!({ "options": { "cas": cas }, "data": data }),
            None => json!({ "data": data }),
        };
        let reply = self
            .tokens
            .request(Method::POST, &path, Some(&body))
            .await?;
        match reply.status {
            s if s.is_success() => reply
                .body
                .as_ref()
                .and_then(|b| b.get("data"))
                .and_then(|d| d.get("version"))
                .and_then(Value::as_u64)
                .ok_or_else(|| corrupt(env, name, "a KV v2 write answered without a version")),
            StatusCode::BAD_REQUEST if vault_errors(&reply).contains("check-and-set") => {
                Err(StoreError::Conflict { current: None })
            }
            _ => Err(unexpected(&reply)),
        }
    }

    async fn read(
        &self,
        env: &Environment,
        name: &SecretName,
        version: Option<ValueVersion>,
    ) -> StoreResult<Option<(ValueVersion, ValueEntry)>> {
        match self.fetch(env, name, version).await? {
            Found::Data(v, data) if belongs_to(&data, env) => Ok(Some((
                v,
                entry_of(&data)
                    .ok_or_else(|| corrupt(env, name, "a value without Coffer's fields"))?,
            ))),
            _ => Ok(None),
        }
    }

    async fn remove(
        &self,
        env: &Environment,
        name: &SecretName,
        up_to: Option<ValueVersion>,
    ) -> StoreResult<()> {
        // The path is shared with any later incarnation of the name: a value that one wrote
        // is not ours to remove. KV v2 removes only versions up to what was seen, so a
        // version written after this read is never touched; KV v1 cannot tell (declared).
        let latest = match self.fetch(env, name, None).await? {
            Found::Nothing | Found::Gone(_) if self.kv == KvVersion::V1 => return Ok(()),
            Found::Nothing => return Ok(()),
            Found::Gone(v) => v,
            Found::Data(_, data) if !belongs_to(&data, env) => return Ok(()),
            Found::Data(v, _) => v,
        };
        self.remove_key(env, name, up_to.map_or(latest, |u| u.min(latest)))
            .await
    }

    async fn remove_environment(&self, env: &Environment) -> StoreResult<u64> {
        let mut removed = 0;
        for name in self.listed(env).await? {
            // Only this incarnation's versions, up to the latest seen: a re-created
            // environment's newer writes at the same path stay.
            if let Found::Data(v, data) = self.fetch(env, &name, None).await?
                && belongs_to(&data, env)
            {
                self.remove_key(env, &name, v).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn names(&self, env: &Environment) -> StoreResult<Vec<SecretName>> {
        // The path is shared by incarnations of the name: only this one's count (one read
        // per key; `names` serves migrations and purges, never a listing).
        let mut names = Vec::new();
        for name in self.listed(env).await? {
            if self.read(env, &name, None).await?.is_some() {
                names.push(name);
            }
        }
        Ok(names)
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(self.check_mount().await?)
    }
}

/// How many version numbers below the one seen a KV v2 removal destroys (Vault keeps
/// `max_versions`, 10 by default; a mount configured to keep more than this many keeps its
/// oldest ones as orphans no reference names).
const DESTROY_WINDOW: ValueVersion = 100;

/// Vault's `LIST` verb.
fn list() -> Method {
    Method::from_bytes(b"LIST").unwrap_or(Method::GET)
}

/// The KV data map of `entry`, written for `env`.
fn data_of(env: &Environment, entry: &ValueEntry) -> Value {
    let (value, key_version) = match &entry.value {
        StoredValue::Plain(s) => (s.expose_secret().to_owned(), 0),
        StoredValue::Sealed { key_version, blob } => (blob.clone(), key_version.get()),
    };
    json!({
        "value": value,
        "coffer_key_version": key_version.to_string(),
        "coffer_revision": entry.revision.to_string(),
        "coffer_created_at": entry.created_at.millis().to_string(),
        "coffer_updated_at": entry.updated_at.millis().to_string(),
        "coffer_environment_id": env.id.as_str(),
        "coffer_write_id": entry.write_id,
    })
}

fn belongs_to(data: &Map<String, Value>, env: &Environment) -> bool {
    data.get("coffer_environment_id").and_then(Value::as_str) == Some(env.id.as_str())
}

/// The entry a KV data map holds; `None` when a field is missing or malformed.
fn entry_of(data: &Map<String, Value>) -> Option<ValueEntry> {
    let field = |k: &str| data.get(k).and_then(Value::as_str);
    let value = field("value")?;
    let key_version: u32 = field("coffer_key_version")?.parse().ok()?;
    let value = match key_version {
        0 => StoredValue::Plain(SecretString::from(value)),
        v => StoredValue::Sealed {
            key_version: KeyVersion::new(v).ok()?,
            blob: value.to_owned(),
        },
    };
    Some(ValueEntry {
        value,
        revision: field("coffer_revision")?.parse().ok()?,
        created_at: Timestamp::from_millis(field("coffer_created_at")?.parse().ok()?),
        updated_at: Timestamp::from_millis(field("coffer_updated_at")?.parse().ok()?),
        write_id: field("coffer_write_id")?.to_owned(),
    })
}

fn corrupt(env: &Environment, name: &SecretName, what: &str) -> StoreError {
    StoreError::Corrupt(format!("vault holds {what} for {name} in {}", env.name))
}

/// A status Coffer did not expect (Vault's own error text: never a value).
fn unexpected(reply: &Reply) -> StoreError {
    VaultError::Protocol(vault_errors(reply)).into()
}
