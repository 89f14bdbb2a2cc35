//! JSON shapes of requests and responses (camelCase, RFC 3339 UTC timestamps).

use coffer_core::{
    ApiKeyMeta, ConfigEntry, Environment, ImportResult, Imported, KeyStatus, Revision,
    RewrapCounts, RewrapReport, Role, SecretMeta, UnreadableMark, UnreadableParam,
    UnreadableSigning, ValueStatus, VerifyReport,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An environment.
#[derive(Serialize, ToSchema)]
#[schema(as = Environment)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentJson {
    #[schema(example = "production")]
    name: String,
    #[schema(format = DateTime, example = "2026-11-23T04:35:25.123Z")]
    created_at: String,
}

impl From<&Environment> for EnvironmentJson {
    fn from(e: &Environment) -> Self {
        EnvironmentJson {
            name: e.name.to_string(),
            created_at: e.created_at.rfc3339(),
        }
    }
}

/// A secret's metadata; its value is never shown.
#[derive(Serialize, ToSchema)]
#[schema(as = SecretMeta)]
#[serde(rename_all = "camelCase")]
pub struct SecretMetaJson {
    #[schema(example = "DATABASE_URL")]
    name: String,
    #[schema(example = "production")]
    environment: String,
    /// Starts at 1 and grows by 1 per update.
    #[schema(value_type = u64, minimum = 1)]
    revision: Revision,
    /// The key version the value is sealed under; 0 for a value stored unencrypted (dev mode).
    key_version: u32,
    status: SecretStatus,
    #[schema(format = DateTime, example = "2026-11-23T04:35:25.123Z")]
    created_at: String,
    #[schema(format = DateTime, example = "2026-11-23T04:35:25.123Z")]
    updated_at: String,
}

/// `unreadable` when the value cannot be opened with the configured keys; writing the secret
/// again repairs it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SecretStatus {
    Ok,
    Unreadable,
}

impl SecretMetaJson {
    pub fn new(m: &SecretMeta, status: ValueStatus) -> Self {
        SecretMetaJson {
            name: m.name.to_string(),
            environment: m.environment.to_string(),
            revision: m.revision,
            key_version: m.key_version,
            status: match status {
                ValueStatus::Ok => SecretStatus::Ok,
                ValueStatus::Unreadable => SecretStatus::Unreadable,
            },
            created_at: m.created_at.rfc3339(),
            updated_at: m.updated_at.rfc3339(),
        }
    }
}

/// A config entry: plaintext JSON, readable by admin and manage keys of its environment.
#[derive(Serialize, ToSchema)]
#[schema(as = ConfigEntry)]
#[serde(rename_all = "camelCase")]
pub struct ConfigEntryJson {
    #[schema(example = "feature_flags")]
    key: String,
    #[schema(example = "production")]
    environment: String,
    /// Any JSON value, as it was written.
    value: serde_json::Value,
    /// Starts at 1 and grows by 1 per update.
    #[schema(value_type = u64, minimum = 1)]
    revision: Revision,
    #[schema(format = DateTime, example = "2026-11-23T04:35:25.123Z")]
    created_at: String,
    #[schema(format = DateTime, example = "2026-11-23T04:35:25.123Z")]
    updated_at: String,
}

impl ConfigEntryJson {
    /// The entry's JSON shape; `None` when its stored text is not JSON (the store holds
    /// something Coffer did not write).
    pub fn new(c: &ConfigEntry) -> Option<Self> {
        Some(ConfigEntryJson {
            key: c.key.to_string(),
            environment: c.environment.to_string(),
            value: serde_json::from_str(&c.value).ok()?,
            revision: c.revision,
            created_at: c.created_at.rfc3339(),
            updated_at: c.updated_at.rfc3339(),
        })
    }
}

/// What one rewrap request did.
#[derive(Serialize, ToSchema)]
#[schema(as = RewrapReport)]
#[serde(rename_all = "camelCase")]
pub struct RewrapJson {
    /// Values re-encrypted under the current key version.
    rewrapped: u64,
    /// Values already under the current version (opened to verify, not rewritten).
    already_current: u64,
    /// Values that could not be opened with the configured keys.
    unreadable: u64,
    /// Values written by someone else while they were being rewrapped (left as written).
    updated_concurrently: u64,
    /// The functions' signing secrets (current and previous ones), walked after the values.
    signing_secrets: SigningRewrapJson,
    /// Orchestrations' encrypted parameters, walked after the functions.
    orchestration_params: ParamsRewrapJson,
    /// Send it back as `cursor` to continue; `null` when the walk is done.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// What a rewrap did with functions' signing secrets.
#[derive(Serialize, ToSchema)]
#[schema(as = SigningSecretsRewrapped)]
#[serde(rename_all = "camelCase")]
pub struct SigningRewrapJson {
    /// Signing secrets re-encrypted under the current key version.
    rewrapped: u64,
    /// Signing secrets already under the current version (opened to verify, not rewritten).
    already_current: u64,
    /// Signing secrets that could not be opened with the configured keys (push deliveries
    /// of their functions cannot be signed with them; rotating the secret repairs it).
    unreadable: u64,
    /// Signing secrets of functions changed while they were being rewrapped (left as
    /// written).
    updated_concurrently: u64,
}

/// What a rewrap did with orchestrations' encrypted parameters.
#[derive(Serialize, ToSchema)]
#[schema(as = OrchestrationParamsRewrapped)]
#[serde(rename_all = "camelCase")]
pub struct ParamsRewrapJson {
    /// Parameters re-encrypted under the current key version.
    rewrapped: u64,
    /// Parameters already under the current version (opened to verify, not rewritten).
    already_current: u64,
    /// Parameters that could not be opened with the configured keys (their steps fail
    /// until they are set again).
    unreadable: u64,
    /// Parameters of orchestrations changed while they were being rewrapped (left as
    /// written).
    updated_concurrently: u64,
}

impl From<RewrapCounts> for ParamsRewrapJson {
    fn from(c: RewrapCounts) -> Self {
        ParamsRewrapJson {
            rewrapped: c.rewrapped,
            already_current: c.already_current,
            unreadable: c.unreadable,
            updated_concurrently: c.updated_concurrently,
        }
    }
}

impl RewrapJson {
    pub fn new(r: &RewrapReport, next_cursor: Option<String>) -> Self {
        let RewrapCounts {
            rewrapped,
            already_current,
            unreadable,
            updated_concurrently,
        } = r.signing_secrets;
        RewrapJson {
            rewrapped: r.rewrapped,
            already_current: r.already_current,
            unreadable: r.unreadable,
            updated_concurrently: r.updated_concurrently,
            signing_secrets: SigningRewrapJson {
                rewrapped,
                already_current,
                unreadable,
                updated_concurrently,
            },
            orchestration_params: r.params.into(),
            next_cursor,
        }
    }
}

/// What one verify batch found.
#[derive(Serialize, ToSchema)]
#[schema(as = VerifyReport)]
#[serde(rename_all = "camelCase")]
pub struct VerifyJson {
    /// Values this batch opened (or found under a key version the keyring lacks).
    checked: u64,
    /// The values that did not open; metadata only.
    unreadable: Vec<UnreadableValueJson>,
    /// Functions' signing secrets (current and previous ones) this batch opened, after the
    /// values.
    signing_secrets_checked: u64,
    /// The signing secrets that did not open; metadata only.
    unreadable_signing_secrets: Vec<UnreadableSigningJson>,
    /// Orchestrations' encrypted parameters this batch opened, after the functions.
    orchestration_params_checked: u64,
    /// The encrypted parameters that did not open; metadata only.
    unreadable_orchestration_params: Vec<UnreadableParamJson>,
    /// Send it back as `cursor` to continue; `null` when the walk is done.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// A function's signing secret that does not open with the configured keys: push
/// deliveries cannot be signed with it. Rotating the function's signing secret repairs it.
#[derive(Serialize, ToSchema)]
#[schema(as = UnreadableSigningSecret)]
#[serde(rename_all = "camelCase")]
pub struct UnreadableSigningJson {
    #[schema(example = "production")]
    environment: String,
    #[schema(example = "send-invoice")]
    function: String,
    /// The function's revision.
    #[schema(value_type = u64, minimum = 1)]
    revision: Revision,
    /// The key version the secret is sealed under (0: stored unencrypted).
    key_version: u32,
    /// Whether it is the previous secret, kept for a rotation's grace period.
    previous: bool,
}

impl From<&UnreadableSigning> for UnreadableSigningJson {
    fn from(u: &UnreadableSigning) -> Self {
        UnreadableSigningJson {
            environment: u.environment.to_string(),
            function: u.function.to_string(),
            revision: u.revision,
            key_version: u.key_version,
            previous: u.previous,
        }
    }
}

/// An orchestration's encrypted parameter that does not open with the configured keys:
/// setting it again (`"encrypt": true` in an update) repairs it.
#[derive(Serialize, ToSchema)]
#[schema(as = UnreadableOrchestrationParam)]
#[serde(rename_all = "camelCase")]
pub struct UnreadableParamJson {
    #[schema(example = "production")]
    environment: String,
    #[schema(example = "orch_019ad0c1e2f30123456789abcdef")]
    orchestration: String,
    #[schema(example = "charge")]
    step: String,
    #[schema(example = "API_TOKEN")]
    param: String,
    /// The orchestration's revision.
    #[schema(value_type = u64, minimum = 1)]
    revision: Revision,
    /// The key version the parameter is sealed under (0: stored unencrypted).
    key_version: u32,
}

impl From<&UnreadableParam> for UnreadableParamJson {
    fn from(u: &UnreadableParam) -> Self {
        UnreadableParamJson {
            environment: u.environment.to_string(),
            orchestration: u.orchestration.to_string(),
            step: u.step.clone(),
            param: u.param.clone(),
            revision: u.revision,
            key_version: u.key_version,
        }
    }
}

/// A value that does not open with the configured keys: which secret, which revision,
/// which key version. Writing the secret again repairs it.
#[derive(Serialize, ToSchema)]
#[schema(as = UnreadableValue)]
#[serde(rename_all = "camelCase")]
pub struct UnreadableValueJson {
    #[schema(example = "production")]
    environment: String,
    #[schema(example = "DATABASE_URL")]
    name: String,
    #[schema(value_type = u64, minimum = 1)]
    revision: Revision,
    /// The key version the value is sealed under (0: stored unencrypted).
    key_version: u32,
}

impl VerifyJson {
    pub fn new(r: &VerifyReport, next_cursor: Option<String>) -> Self {
        VerifyJson {
            checked: r.checked,
            unreadable: r.unreadable.iter().map(UnreadableValueJson::from).collect(),
            signing_secrets_checked: r.signing_checked,
            unreadable_signing_secrets: r
                .unreadable_signing
                .iter()
                .map(UnreadableSigningJson::from)
                .collect(),
            orchestration_params_checked: r.params_checked,
            unreadable_orchestration_params: r
                .unreadable_params
                .iter()
                .map(UnreadableParamJson::from)
                .collect(),
            next_cursor,
        }
    }
}

impl From<&UnreadableMark> for UnreadableValueJson {
    fn from(m: &UnreadableMark) -> Self {
        UnreadableValueJson {
            environment: m.environment.to_string(),
            name: m.name.to_string(),
            revision: m.revision,
            key_version: m.key_version,
        }
    }
}

/// The key lifecycle: which versions exist and what uses them. Never key material.
#[derive(Serialize, ToSchema)]
#[schema(as = KeyStatus)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatusJson {
    encryption: EncryptionState,
    /// The version new writes use; `null` in dev mode.
    #[schema(required = true)]
    current_key_version: Option<u32>,
    keys: Vec<KeyVersionJson>,
    /// Values stored unencrypted (written in dev mode).
    plaintext_values: u64,
    /// Functions' signing secrets stored unencrypted (written in dev mode).
    plaintext_signing_secrets: u64,
    /// Orchestrations' encrypted parameters stored unencrypted (written in dev mode).
    plaintext_orchestration_params: u64,
    /// Values that cannot be opened with the configured keys.
    unreadable_values: u64,
}

/// One key version.
#[derive(Serialize, ToSchema)]
#[schema(as = KeyVersion)]
#[serde(rename_all = "camelCase")]
struct KeyVersionJson {
    version: u32,
    /// New writes use this version.
    current: bool,
    /// The configured keyring holds this version.
    in_keyring: bool,
    /// Values sealed under this version.
    values: u64,
    /// Functions' signing secrets (current and previous ones) sealed under this version.
    signing_secrets: u64,
    /// Orchestrations' encrypted parameters sealed under this version.
    orchestration_params: u64,
    /// Encryptions made under this version (for its nonce budget).
    encryptions: u64,
}

/// Whether values are encrypted at rest (`disabled`: dev mode).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionState {
    Enabled,
    Disabled,
}

impl From<&KeyStatus> for KeyStatusJson {
    fn from(k: &KeyStatus) -> Self {
        KeyStatusJson {
            encryption: if k.current.is_some() {
                EncryptionState::Enabled
            } else {
                EncryptionState::Disabled
            },
            current_key_version: k.current,
            keys: k
                .versions
                .iter()
                .map(|v| KeyVersionJson {
                    version: v.version,
                    current: v.current,
                    in_keyring: v.in_keyring,
                    values: v.values,
                    signing_secrets: v.signing_secrets,
                    orchestration_params: v.params,
                    encryptions: v.encryptions,
                })
                .collect(),
            plaintext_values: k.plaintext_values,
            plaintext_signing_secrets: k.plaintext_signing_secrets,
            plaintext_orchestration_params: k.plaintext_params,
            unreadable_values: k.unreadable_values,
        }
    }
}

/// Re-encrypt to the current key version: everything (no `limit`) or one batch.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewrapRequest {
    /// The `nextCursor` of the previous batch.
    pub cursor: Option<String>,
    /// Values (then functions) in this batch; without it, everything in one request.
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Verify one batch of stored values.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The `nextCursor` of the previous batch.
    pub cursor: Option<String>,
    /// Values (then functions) in this batch (default 1,000).
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// An API key's description; `key` only in the response that creates it.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKey)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyJson {
    #[schema(example = "ak_0123456789abcdef")]
    id: String,
    #[schema(example = "deploy")]
    name: String,
    role: RoleName,
    /// The environment a `manage` or `runtime` key is scoped to; `null` for `admin`.
    #[schema(required = true)]
    environment: Option<String>,
    /// The key itself: only in the response that creates it, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[schema(format = DateTime, example = "2026-11-23T04:35:25.123Z")]
    created_at: String,
}

/// The key a request was made with: what the dashboard signs in with.
#[derive(Serialize, ToSchema)]
#[schema(as = Caller)]
#[serde(rename_all = "camelCase")]
pub struct CallerJson {
    #[schema(example = "ak_0123456789abcdef")]
    key_id: String,
    role: RoleName,
    /// The environment a `manage` or `runtime` key is scoped to; `null` for `admin`.
    #[schema(required = true)]
    environment: Option<String>,
}

impl CallerJson {
    /// The caller `key_id` with `role`.
    pub fn new(key_id: &coffer_core::ApiKeyId, role: &Role) -> Self {
        CallerJson {
            key_id: key_id.to_string(),
            role: RoleName::of(role),
            environment: role.environment().map(ToString::to_string),
        }
    }
}

/// An API key's role.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Admin,
    Manage,
    Runtime,
}

impl RoleName {
    fn of(role: &Role) -> Self {
        match role {
            Role::Admin => RoleName::Admin,
            Role::Manage(_) => RoleName::Manage,
            Role::Runtime(_) => RoleName::Runtime,
        }
    }
}

impl From<&ApiKeyMeta> for ApiKeyJson {
    fn from(k: &ApiKeyMeta) -> Self {
        ApiKeyJson {
            id: k.id.to_string(),
            name: k.name.clone(),
            role: RoleName::of(&k.role),
            environment: k.role.environment().map(ToString::to_string),
            key: None,
            created_at: k.created_at.rfc3339(),
        }
    }
}

/// Create an environment.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    /// `^[a-z0-9][a-z0-9-]{0,62}$`, not `admin`.
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "production")]
    pub name: String,
}

/// Create an API key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    #[schema(example = "deploy")]
    pub name: String,
    #[schema(value_type = RoleName)]
    pub role: String,
    /// Required for `manage` and `runtime`, refused for `admin`; it must exist.
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    pub environment: Option<String>,
}

/// Set a secret's value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PutSecret {
    /// The value, a UTF-8 string of at most 65,536 bytes. Write-only: no response shows it.
    #[schema(value_type = String, write_only)]
    pub value: SecretString,
    /// Write only if the secret is at this revision (`0`: only if it does not exist).
    #[schema(value_type = Option<u64>)]
    pub expected_revision: Option<Revision>,
}

/// Set a config entry.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PutConfig {
    /// Any JSON value; at most 65,536 bytes once serialized compactly.
    pub value: serde_json::Value,
    /// Write only if the entry is at this revision (`0`: only if it does not exist).
    #[schema(value_type = Option<u64>)]
    pub expected_revision: Option<Revision>,
}

/// Set several secrets of one environment, all or none.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportSecrets {
    /// 1 to 1000 secrets, each name at most once.
    #[schema(min_items = 1, max_items = 1000)]
    pub secrets: Vec<ImportEntry>,
}

/// One secret to import.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportEntry {
    #[schema(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", example = "DATABASE_URL")]
    pub name: String,
    /// The value, a UTF-8 string of at most 65,536 bytes. Write-only: no response shows it.
    #[schema(value_type = String, write_only)]
    pub value: SecretString,
}

/// One secret of an import's answer: its metadata and what happened to it.
#[derive(Serialize, ToSchema)]
#[schema(as = ImportedSecret)]
pub struct ImportedJson {
    #[serde(flatten)]
    meta: SecretMetaJson,
    result: ImportOutcome,
}

/// What an import did to one secret; `unchanged` keeps its revision.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportOutcome {
    Created,
    Updated,
    Unchanged,
}

impl From<&Imported> for ImportedJson {
    fn from(i: &Imported) -> Self {
        ImportedJson {
            meta: SecretMetaJson::new(&i.meta, ValueStatus::Ok),
            result: match i.result {
                ImportResult::Created => ImportOutcome::Created,
                ImportResult::Updated => ImportOutcome::Updated,
                ImportResult::Unchanged => ImportOutcome::Unchanged,
            },
        }
    }
}

/// A page of a listing.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListQuery {
    /// Items per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of secrets, optionally only those whose names contain a search.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SecretListQuery {
    /// Items per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `nextCursor` of the previous page (of the same search and sort).
    pub cursor: Option<String>,
    /// Only names containing this, ignoring ASCII case: 1–128 characters of `[A-Za-z0-9_]`.
    #[param(pattern = r"^[A-Za-z0-9_]{1,128}$", example = "stripe")]
    pub search: Option<String>,
    /// The order: `name` (the default; bytes), `-name`, `updatedAt` (least recently
    /// updated first) or `-updatedAt` (most recently updated first); ties by name.
    #[param(inline)]
    pub sort: Option<coffer_wire::SecretSort>,
}

/// The store's order for a listing's `sort`.
pub fn secret_order(s: coffer_wire::SecretSort) -> coffer_core::SecretOrder {
    use coffer_core::SecretOrder;
    use coffer_wire::SecretSort;
    match s {
        SecretSort::Name => SecretOrder::NameAsc,
        SecretSort::NameDesc => SecretOrder::NameDesc,
        SecretSort::Updated => SecretOrder::UpdatedAsc,
        SecretSort::UpdatedDesc => SecretOrder::UpdatedDesc,
    }
}

/// Compare-and-set on a secret's revision.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RevisionQuery {
    /// Act only if the secret is at this revision (`0`: only if it does not exist); on PUT it
    /// may come in the body instead, and both must agree.
    #[param(value_type = Option<u64>)]
    pub expected_revision: Option<Revision>,
}

/// The environment named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EnvPath {
    /// An environment name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    #[param(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "production")]
    pub env: String,
}

/// The secret named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SecretPath {
    /// An environment name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    #[param(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "production")]
    pub env: String,
    /// A secret name, `^[A-Za-z_][A-Za-z0-9_]{0,127}$`.
    #[param(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", example = "DATABASE_URL")]
    pub name: String,
}

/// The config entry named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ConfigPath {
    /// An environment name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    #[param(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "production")]
    pub env: String,
    /// A config key, the secret-name rule: `^[A-Za-z_][A-Za-z0-9_]{0,127}$`.
    #[param(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", example = "feature_flags")]
    pub key: String,
}

/// The API key named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ApiKeyPath {
    /// An API key id, `ak_<16 hex digits>`.
    #[param(pattern = r"^ak_[0-9a-f]{16}$", example = "ak_0123456789abcdef")]
    pub id: String,
}

// The answers that wrap a list or a few fields. Fields are declared in alphabetical order:
// that is the order `serde_json::json!` (a sorted map) wrote them in before these types
// existed, so the bytes on the wire did not change.

/// `GET /healthz` and `GET /readyz`.
#[derive(Serialize, ToSchema)]
#[schema(as = Health)]
pub struct HealthJson {
    pub status: HealthState,
}

/// `ok` from `/healthz` (the process answers), `ready` from `/readyz` (storage answers too).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Ok,
    Ready,
}

/// `GET /v1/status`.
#[derive(Serialize, ToSchema)]
#[schema(as = Status)]
#[serde(rename_all = "camelCase")]
pub struct StatusJson {
    /// The secret-value backend in use.
    #[schema(example = "db")]
    pub backend: String,
    /// The version new writes use; `null` in dev mode.
    #[schema(required = true)]
    pub current_key_version: Option<u32>,
    pub encryption: EncryptionState,
    /// Values known to be unreadable with the configured keys.
    pub unreadable_values: u64,
    /// The Coffer version.
    pub version: &'static str,
    /// Things an operator should act on (e.g. a key past its nonce budget).
    pub warnings: Vec<String>,
}

/// `GET /v1/environments`.
#[derive(Serialize, ToSchema)]
#[schema(as = EnvironmentList)]
pub struct EnvironmentsJson {
    pub environments: Vec<EnvironmentJson>,
}

/// `GET /v1/api-keys`.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKeyList)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeysJson {
    pub api_keys: Vec<ApiKeyJson>,
}

/// `GET /v1/environments/{env}/secrets`: one page, in name order.
#[derive(Serialize, ToSchema)]
#[schema(as = SecretPage)]
#[serde(rename_all = "camelCase")]
pub struct SecretPageJson {
    /// Send it back as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    pub secrets: Vec<SecretMetaJson>,
}

/// `GET /v1/environments/{env}/config`: one page, in key order (bytes).
#[derive(Serialize, ToSchema)]
#[schema(as = ConfigPage)]
#[serde(rename_all = "camelCase")]
pub struct ConfigPageJson {
    pub config: Vec<ConfigEntryJson>,
    /// Send it back as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `POST /v1/environments/{env}/secrets`: every imported secret, in request order.
#[derive(Serialize, ToSchema)]
#[schema(as = ImportReport)]
pub struct ImportedSecretsJson {
    pub secrets: Vec<ImportedJson>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The typed answers write the bytes `json!` wrote before they existed.
    #[test]
    fn typed_answers_serialize_byte_for_byte_as_json_maps_did() {
        let same = |typed: String, map: serde_json::Value| assert_eq!(typed, map.to_string());
        same(
            serde_json::to_string(&SecretPageJson {
                next_cursor: Some("QQ".into()),
                secrets: vec![],
            })
            .unwrap(),
            json!({ "secrets": [], "nextCursor": "QQ" }),
        );
        same(
            serde_json::to_string(&StatusJson {
                backend: "sqlite".into(),
                current_key_version: None,
                encryption: EncryptionState::Disabled,
                unreadable_values: 2,
                version: "0.1.0",
                warnings: vec!["w".into()],
            })
            .unwrap(),
            json!({
                "version": "0.1.0",
                "backend": "sqlite",
                "encryption": "disabled",
                "currentKeyVersion": null,
                "unreadableValues": 2,
                "warnings": ["w"],
            }),
        );
        same(
            serde_json::to_string(&HealthJson {
                status: HealthState::Ready,
            })
            .unwrap(),
            json!({ "status": "ready" }),
        );
        same(
            serde_json::to_string(&ApiKeysJson { api_keys: vec![] }).unwrap(),
            json!({ "apiKeys": [] }),
        );
        same(
            serde_json::to_string(&EnvironmentsJson {
                environments: vec![],
            })
            .unwrap(),
            json!({ "environments": [] }),
        );
    }
}
