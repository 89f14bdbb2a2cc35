//! Handlers. Each one: authenticate (extractor) → parse path names → authorize → parse the
//! body → call the service.
//!
//! Each handler carries its OpenAPI operation (`#[utoipa::path]`): the router registers the
//! two together, so a route cannot exist without its entry in `GET /v1/openapi.json`. The
//! error responses name the types of `crate::openapi`, one per status.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_core::{
    ApiKeyId, Coffer, ConfigEntry, ConfigKey, Encryption, EnvName, FunctionId, NameSearch,
    REWRAP_BATCH, Role, SecretListing, SecretName, SecretOrder, Timestamp, ValueStatus,
    WalkPosition, commands,
};

use crate::error::ApiError;
use crate::extract::{Caller, JsonBody, NoQuery, PathParams, QueryParams};
use crate::openapi::*;
use crate::shapes::*;

type State_ = State<Arc<Coffer>>;
type ApiResult = Result<Response, ApiError>;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = HealthJson), InvalidQuery))]
pub async fn healthz(_: QueryParams<NoQuery>) -> Json<HealthJson> {
    Json(HealthJson {
        status: HealthState::Ok,
    })
}

/// Readiness: storage answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = HealthJson), InvalidQuery, Unavailable))]
pub async fn readyz(State(coffer): State_, _: QueryParams<NoQuery>) -> ApiResult {
    coffer.ready().await?;
    Ok(Json(HealthJson {
        status: HealthState::Ready,
    })
    .into_response())
}

/// Version, backend, encryption state, and the unreadable values the catalog knows of.
#[utoipa::path(get, path = "/v1/status", tag = "health",
    responses((status = 200, description = "Status", body = StatusJson), InvalidQuery, Unavailable))]
pub async fn status(State(coffer): State_, _: QueryParams<NoQuery>) -> ApiResult {
    let s = coffer.status().await?;
    let (encryption, current_key_version) = match s.encryption {
        Encryption::Enabled {
            current_key_version,
        } => (EncryptionState::Enabled, Some(current_key_version)),
        Encryption::Disabled => (EncryptionState::Disabled, None),
    };
    Ok(Json(StatusJson {
        backend: s.backend,
        current_key_version,
        encryption,
        unreadable_values: s.unreadable_values,
        version: s.version,
        warnings: s.warnings,
    })
    .into_response())
}

/// This document: the OpenAPI 3.1 description of every route.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json"),
        InvalidQuery,
    ))]
pub async fn openapi_json(_: QueryParams<NoQuery>) -> Response {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        serde_json::to_string(&crate::openapi()).unwrap_or_else(|e| {
            // Serializing plain data cannot fail; answer an empty document if it ever does.
            tracing::error!(error = %e, "cannot serialize the OpenAPI document");
            "{}".to_owned()
        })
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

/// The key this request is made with: its id, role and environment. Any valid key may ask
/// (the dashboard uses it to sign in and to offer only what the role may do).
#[utoipa::path(get, path = "/v1/whoami", tag = "api-keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's key", body = CallerJson),
        Unauthorized, InvalidQuery,
    ))]
pub async fn whoami(Caller(who): Caller, _: QueryParams<NoQuery>) -> Json<CallerJson> {
    Json(CallerJson::new(&who.key_id, &who.role))
}

/// Environments: all for an admin key, its own for a manage key.
#[utoipa::path(get, path = "/v1/environments", tag = "environments",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The environments", body = EnvironmentsJson),
        Unauthorized, InvalidQuery, Forbidden, Unavailable,
    ))]
pub async fn list_environments(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let envs = coffer.list_environments(&who).await?;
    let environments = envs.iter().map(Into::into).collect();
    Ok(Json(EnvironmentsJson { environments }).into_response())
}

/// Creates an environment.
#[utoipa::path(post, path = "/v1/environments", tag = "environments",
    security(("bearer" = [])),
    request_body = CreateEnvironment,
    responses(
        (status = 201, description = "Created", body = EnvironmentJson),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, EnvironmentExists, Unavailable,
    ))]
pub async fn create_environment(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    body: JsonBody,
) -> ApiResult {
    coffer.require_admin(&who)?;
    let (req, _held): (CreateEnvironment, _) = body.parse().await?;
    let name = EnvName::new(&req.name)?;
    let env = coffer
        .apply(&who, commands::CreateEnvironment { name })
        .await?;
    Ok(created(EnvironmentJson::from(&env)))
}

/// Deletes an environment, its secrets and the API keys scoped to it.
#[utoipa::path(delete, path = "/v1/environments/{env}", tag = "environments",
    security(("bearer" = [])),
    params(EnvPath),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, EnvironmentNotFound, Unavailable,
    ))]
pub async fn delete_environment(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(EnvPath { env }): PathParams<EnvPath>,
) -> ApiResult {
    let name = EnvName::new(&env)?;
    coffer
        .apply(&who, commands::DeleteEnvironment { name })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// API keys, without the keys themselves.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The API keys", body = ApiKeysJson),
        Unauthorized, InvalidQuery, Forbidden, Unavailable,
    ))]
pub async fn list_api_keys(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let keys = coffer.list_api_keys(&who).await?;
    let api_keys = keys.iter().map(Into::into).collect();
    Ok(Json(ApiKeysJson { api_keys }).into_response())
}

/// Creates an API key; the response is the one place the key is shown.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys",
    security(("bearer" = [])),
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; `key` is shown this once", body = ApiKeyJson),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, EnvironmentNotFound, Unavailable,
    ))]
pub async fn create_api_key(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    body: JsonBody,
) -> ApiResult {
    coffer.require_admin(&who)?;
    let (req, _held): (CreateApiKey, _) = body.parse().await?;
    let env = req.environment.as_deref().map(EnvName::new).transpose()?;
    let role = Role::from_parts(&req.role, env).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            e.to_string(),
        )
    })?;
    let command = commands::CreateApiKey {
        name: req.name,
        role,
    };
    let new = coffer.apply(&who, command).await?;
    use secrecy::ExposeSecret;
    let mut shown = ApiKeyJson::from(&new.meta);
    // The one place a key leaves the server: the response that creates it.
    shown.key = Some(new.key.expose_secret().to_owned());
    Ok(created(shown))
}

/// Revokes (deletes) an API key; the next request with it gets 401.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    security(("bearer" = [])),
    params(ApiKeyPath),
    responses(
        (status = 204, description = "Revoked"),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, ApiKeyNotFound, LastAdminKey,
        Unavailable,
    ))]
pub async fn revoke_api_key(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(ApiKeyPath { id }): PathParams<ApiKeyPath>,
) -> ApiResult {
    let id = ApiKeyId::new(&id)?;
    coffer.require_admin(&who)?;
    coffer.apply(&who, commands::RevokeApiKey { id }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Secret metadata of one environment, a page at a time, in name order.
#[utoipa::path(get, path = "/v1/environments/{env}/secrets", tag = "secrets",
    security(("bearer" = [])),
    params(EnvPath, SecretListQuery),
    responses(
        (status = 200, description = "One page", body = SecretPageJson),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, EnvironmentNotFound, Unavailable,
    ))]
pub async fn list_secrets(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(EnvPath { env }): PathParams<EnvPath>,
    QueryParams(q): QueryParams<SecretListQuery>,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let limit = page_limit(q.limit)?;
    let order = q.sort.map_or(SecretOrder::NameAsc, secret_order);
    // A cursor is the last name, or for the orders by update `{updatedAt ms}:{name}`.
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            decode_cursor(c, |text| match order.by_update() {
                false => SecretName::new(text)
                    .map(|n| (n, Timestamp::from_millis(0)))
                    .map_err(|_| ()),
                true => {
                    let (ms, name) = text.split_once(':').ok_or(())?;
                    let ms = ms.parse::<i64>().map_err(|_| ())?;
                    let name = SecretName::new(name).map_err(|_| ())?;
                    Ok((name, Timestamp::from_millis(ms)))
                }
            })
        })
        .transpose()?;
    let search = q
        .search
        .as_deref()
        .map(NameSearch::new)
        .transpose()
        .map_err(|e| ApiError::invalid_query(e.to_string()))?;
    let listing = SecretListing {
        order,
        after: after.as_ref().map(|(n, at)| (n, *at)),
        search: search.as_ref(),
    };
    let page = coffer.list_secrets(&who, &env, &listing, limit).await?;
    let statuses = coffer.value_statuses(&page.items).await?;
    let secrets = page
        .items
        .iter()
        .zip(statuses)
        .map(|(m, status)| SecretMetaJson::new(m, status))
        .collect();
    let next_cursor = page.next.map(|(name, at)| match order.by_update() {
        false => URL_SAFE_NO_PAD.encode(name.as_str()),
        true => URL_SAFE_NO_PAD.encode(format!("{}:{name}", at.millis())),
    });
    Ok(Json(SecretPageJson {
        next_cursor,
        secrets,
    })
    .into_response())
}

/// Sets several secrets at once, all or none; values equal to the stored ones are left
/// alone and reported `unchanged`.
#[utoipa::path(post, path = "/v1/environments/{env}/secrets", tag = "secrets",
    security(("bearer" = [])),
    params(EnvPath),
    request_body = ImportSecrets,
    responses(
        (status = 200, description = "Imported, all of them", body = ImportedSecretsJson),
        Unauthorized, Forbidden, BadBody, BodyTimeout, ValueTooLarge, UnsupportedMediaType,
        InvalidInput, EnvironmentNotFound, RevisionConflict, Unavailable,
    ))]
pub async fn import_secrets(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(EnvPath { env }): PathParams<EnvPath>,
    body: JsonBody,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let (req, _held): (ImportSecrets, _) = body.parse().await?;
    let entries = req
        .secrets
        .into_iter()
        .map(|e| Ok((SecretName::new(&e.name)?, e.value)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let all = coffer
        .apply(&who, commands::ImportSecrets { env, entries })
        .await?;
    let secrets = all.iter().map(Into::into).collect();
    Ok(Json(ImportedSecretsJson { secrets }).into_response())
}

/// One secret's metadata (never its value).
#[utoipa::path(get, path = "/v1/environments/{env}/secrets/{name}", tag = "secrets",
    security(("bearer" = [])),
    params(SecretPath),
    responses(
        (status = 200, description = "The secret's metadata", body = SecretMetaJson),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, SecretNotFound, Unavailable,
    ))]
pub async fn get_secret(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(SecretPath { env, name }): PathParams<SecretPath>,
) -> ApiResult {
    let (env, name) = (EnvName::new(&env)?, SecretName::new(&name)?);
    let meta = coffer.secret_meta(&who, &env, &name).await?;
    let status = coffer.value_status(&meta).await?;
    Ok(Json(SecretMetaJson::new(&meta, status)).into_response())
}

/// Sets a secret's value; with `expectedRevision`, only if the secret is at that revision.
#[utoipa::path(put, path = "/v1/environments/{env}/secrets/{name}", tag = "secrets",
    security(("bearer" = [])),
    params(SecretPath, RevisionQuery),
    request_body = PutSecret,
    responses(
        (status = 200, description = "Updated", body = SecretMetaJson),
        (status = 201, description = "Created", body = SecretMetaJson),
        Unauthorized, Forbidden, BadBody, BodyTimeout, ValueTooLarge, UnsupportedMediaType,
        InvalidInput, EnvironmentNotFound, RevisionConflict, Unavailable,
    ))]
pub async fn put_secret(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(SecretPath { env, name }): PathParams<SecretPath>,
    QueryParams(q): QueryParams<RevisionQuery>,
    body: JsonBody,
) -> ApiResult {
    let (env, name) = (EnvName::new(&env)?, SecretName::new(&name)?);
    coffer.require_manage(&who, &env)?;
    let (req, _held): (PutSecret, _) = body.parse().await?;
    let expected_revision = expected_revision(req.expected_revision, q.expected_revision)?;
    let command = commands::PutSecret {
        env,
        name,
        value: req.value,
        expected_revision,
    };
    let out = coffer.apply(&who, command).await?;
    Ok(written(
        out.created,
        SecretMetaJson::new(&out.meta, ValueStatus::Ok),
    ))
}

/// Deletes a secret; with `expectedRevision`, only that revision.
#[utoipa::path(delete, path = "/v1/environments/{env}/secrets/{name}", tag = "secrets",
    security(("bearer" = [])),
    params(SecretPath, RevisionQuery),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized, InvalidQuery, InvalidInput, Forbidden, SecretNotFound, RevisionConflict,
        Unavailable,
    ))]
pub async fn delete_secret(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(SecretPath { env, name }): PathParams<SecretPath>,
    QueryParams(q): QueryParams<RevisionQuery>,
) -> ApiResult {
    let (env, name) = (EnvName::new(&env)?, SecretName::new(&name)?);
    coffer.require_manage(&who, &env)?;
    coffer
        .apply(
            &who,
            commands::DeleteSecret {
                env,
                name,
                expected_revision: q.expected_revision,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Config entries of one environment, a page at a time, in key order (bytes).
#[utoipa::path(get, path = "/v1/environments/{env}/config", tag = "config",
    security(("bearer" = [])),
    params(EnvPath, ListQuery),
    responses(
        (status = 200, description = "One page", body = ConfigPageJson),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, EnvironmentNotFound, Unavailable,
    ))]
pub async fn list_config(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(EnvPath { env }): PathParams<EnvPath>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let limit = page_limit(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c, ConfigKey::new))
        .transpose()?;
    let page = coffer
        .list_config(&who, &env, after.as_ref(), limit)
        .await?;
    let config = page
        .items
        .iter()
        .map(config_json)
        .collect::<Result<_, _>>()?;
    let next_cursor = page.next.map(|k| URL_SAFE_NO_PAD.encode(k.as_str()));
    Ok(Json(ConfigPageJson {
        config,
        next_cursor,
    })
    .into_response())
}

/// One config entry, with its value.
#[utoipa::path(get, path = "/v1/environments/{env}/config/{key}", tag = "config",
    security(("bearer" = [])),
    params(ConfigPath),
    responses(
        (status = 200, description = "The entry", body = ConfigEntryJson),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, ConfigNotFound, Unavailable,
    ))]
pub async fn get_config(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(ConfigPath { env, key }): PathParams<ConfigPath>,
) -> ApiResult {
    let (env, key) = (EnvName::new(&env)?, ConfigKey::new(&key)?);
    let entry = coffer.config_entry(&who, &env, &key).await?;
    Ok(Json(config_json(&entry)?).into_response())
}

/// Sets a config entry to any JSON value; with `expectedRevision`, only if the entry is at
/// that revision.
#[utoipa::path(put, path = "/v1/environments/{env}/config/{key}", tag = "config",
    security(("bearer" = [])),
    params(ConfigPath, RevisionQuery),
    request_body = PutConfig,
    responses(
        (status = 200, description = "Updated", body = ConfigEntryJson),
        (status = 201, description = "Created", body = ConfigEntryJson),
        Unauthorized, Forbidden, BadBody, BodyTimeout, ValueTooLarge, UnsupportedMediaType,
        InvalidInput, EnvironmentNotFound, RevisionConflict, Unavailable,
    ))]
pub async fn put_config(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(ConfigPath { env, key }): PathParams<ConfigPath>,
    QueryParams(q): QueryParams<RevisionQuery>,
    body: JsonBody,
) -> ApiResult {
    let (env, key) = (EnvName::new(&env)?, ConfigKey::new(&key)?);
    coffer.require_manage(&who, &env)?;
    let (req, _held): (PutConfig, _) = body.parse().await?;
    let expected_revision = expected_revision(req.expected_revision, q.expected_revision)?;
    let command = commands::PutConfig {
        env,
        key,
        value: req.value,
        expected_revision,
    };
    let out = coffer.apply(&who, command).await?;
    Ok(written(out.created, config_json(&out.entry)?))
}

/// Deletes a config entry; with `expectedRevision`, only that revision.
#[utoipa::path(delete, path = "/v1/environments/{env}/config/{key}", tag = "config",
    security(("bearer" = [])),
    params(ConfigPath, RevisionQuery),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized, InvalidQuery, InvalidInput, Forbidden, ConfigNotFound, RevisionConflict,
        Unavailable,
    ))]
pub async fn delete_config(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(ConfigPath { env, key }): PathParams<ConfigPath>,
    QueryParams(q): QueryParams<RevisionQuery>,
) -> ApiResult {
    let (env, key) = (EnvName::new(&env)?, ConfigKey::new(&key)?);
    coffer.require_manage(&who, &env)?;
    coffer
        .apply(
            &who,
            commands::DeleteConfig {
                env,
                key,
                expected_revision: q.expected_revision,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Key versions and what uses them; never key material.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key lifecycle", body = KeyStatusJson),
        Unauthorized, InvalidQuery, Forbidden, Unavailable,
    ))]
pub async fn key_status(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let status = coffer.key_status(&who).await?;
    Ok(Json(KeyStatusJson::from(&status)).into_response())
}

/// Re-encrypts to the current key version: every value, then every function's signing
/// secrets, or one batch from `cursor` when `limit` is given (the CLI pages to show
/// progress; a crash resumes from any cursor).
#[utoipa::path(post, path = "/v1/keys/rewrap", tag = "keys",
    security(("bearer" = [])),
    request_body(content = Option<RewrapRequest>, description = "Optional: no body rewraps everything"),
    responses(
        (status = 200, description = "What was rewrapped", body = RewrapJson),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, Unavailable,
    ))]
pub async fn rewrap(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    body: JsonBody,
) -> ApiResult {
    coffer.require_admin(&who)?;
    let (req, _held): (RewrapRequest, _) = body.parse_or_default().await?;
    let (after, limit) = walk_batch(req.cursor.as_deref(), req.limit)?;
    let command = commands::Rewrap { after, limit };
    let report = coffer.apply(&who, command).await?;
    let next = report.next.as_ref().map(encode_walk_cursor);
    Ok(Json(RewrapJson::new(&report, next)).into_response())
}

/// Opens one batch of stored values, then functions' signing secrets (from `cursor`;
/// `limit`, default and at most 1,000) and reports those that do not open, by name and key
/// version (never a value). Records the findings on values in the catalog, which
/// `GET /v1/status` and each secret's `status` read on every node; audited as
/// `keys.verified`.
#[utoipa::path(post, path = "/v1/keys/verify", tag = "keys",
    security(("bearer" = [])),
    request_body(content = Option<VerifyRequest>, description = "Optional: no body verifies the first batch"),
    responses(
        (status = 200, description = "What this batch found", body = VerifyJson),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, Unavailable,
    ))]
pub async fn verify(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    body: JsonBody,
) -> ApiResult {
    coffer.require_admin(&who)?;
    let (req, _held): (VerifyRequest, _) = body.parse_or_default().await?;
    let (after, limit) = walk_batch(req.cursor.as_deref(), req.limit)?;
    let command = commands::Verify {
        after,
        limit: Some(limit.unwrap_or(REWRAP_BATCH)),
    };
    let report = coffer.apply(&who, command).await?;
    let next = report.next.as_ref().map(encode_walk_cursor);
    Ok(Json(VerifyJson::new(&report, next)).into_response())
}

/// A walk batch's position and size, as rewrap and verify take them: the cursor decoded,
/// the limit (if any) between 1 and [`REWRAP_BATCH`].
fn walk_batch(
    cursor: Option<&str>,
    limit: Option<usize>,
) -> Result<(Option<WalkPosition>, Option<usize>), ApiError> {
    let after = cursor.map(decode_walk_cursor).transpose()?;
    if limit.is_some_and(|l| !(1..=REWRAP_BATCH).contains(&l)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            format!("limit must be between 1 and {REWRAP_BATCH}"),
        ));
    }
    Ok((after, limit))
}

/// Prometheus text exposition; no auth, no names or values, counts only.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String,
            content_type = "text/plain"),
        InvalidQuery, Unavailable,
    ))]
pub async fn metrics(
    State(coffer): State_,
    axum::Extension(streams): axum::Extension<crate::events::Streams>,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let s = coffer.status().await?;
    let mut out = String::new();
    out.push_str("# HELP coffer_unreadable_values Stored values that cannot be opened with the configured keys.\n");
    out.push_str("# TYPE coffer_unreadable_values gauge\n");
    out.push_str(&format!(
        "coffer_unreadable_values {}\n",
        s.unreadable_values
    ));
    out.push_str(
        "# HELP coffer_encryption_enabled 1 when values are encrypted at rest, 0 in dev mode.\n",
    );
    out.push_str("# TYPE coffer_encryption_enabled gauge\n");
    let enabled = matches!(s.encryption, Encryption::Enabled { .. });
    out.push_str(&format!(
        "coffer_encryption_enabled {}\n",
        u8::from(enabled)
    ));
    out.push_str("# HELP coffer_key_warnings Key versions past their nonce budget.\n");
    out.push_str("# TYPE coffer_key_warnings gauge\n");
    out.push_str(&format!("coffer_key_warnings {}\n", s.warnings.len()));
    out.push_str("# HELP coffer_event_streams_open Event streams (GET /v1/events/stream) open on this node.\n");
    out.push_str("# TYPE coffer_event_streams_open gauge\n");
    out.push_str(&format!("coffer_event_streams_open {}\n", streams.open()));
    out.push_str("# HELP coffer_event_stream_reads_total Reads of the event outbox by this node's streams.\n");
    out.push_str("# TYPE coffer_event_stream_reads_total counter\n");
    out.push_str(&format!(
        "coffer_event_stream_reads_total {}\n",
        streams.reads()
    ));
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}

/// The cursor of a walk over every stored secret (rewrap, verify): the base64url of
/// `env/name` while it walks secret values, of `fn:env/id` once it walks functions' signing
/// secrets (no environment name contains `:`, so the two never meet).
fn encode_walk_cursor(position: &WalkPosition) -> String {
    let text = match position {
        WalkPosition::Value(env, name) => format!("{env}/{name}"),
        WalkPosition::Function(env, id) => format!("{FUNCTION_CURSOR}{env}/{id}"),
        WalkPosition::Orchestration(env, id) => format!("{ORCHESTRATION_CURSOR}{env}/{id}"),
    };
    URL_SAFE_NO_PAD.encode(text)
}

/// What starts the text of a walk cursor in the functions' phase.
const FUNCTION_CURSOR: &str = "fn:";
/// What starts the text of a walk cursor in the orchestrations' phase.
const ORCHESTRATION_CURSOR: &str = "orch:";

fn decode_walk_cursor(cursor: &str) -> Result<WalkPosition, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "cursor is not one this server issued",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    if let Some(rest) = text.strip_prefix(ORCHESTRATION_CURSOR) {
        let (env, id) = rest.split_once('/').ok_or_else(bad)?;
        let env = EnvName::new(env).map_err(|_| bad())?;
        let id = coffer_store::OrchestrationId::new(id).map_err(|_| bad())?;
        return Ok(WalkPosition::Orchestration(env, id));
    }
    let (in_functions, text) = match text.strip_prefix(FUNCTION_CURSOR) {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (env, name) = text.split_once('/').ok_or_else(bad)?;
    let env = EnvName::new(env).map_err(|_| bad())?;
    Ok(if in_functions {
        WalkPosition::Function(env, FunctionId::new(name).map_err(|_| bad())?)
    } else {
        WalkPosition::Value(env, SecretName::new(name).map_err(|_| bad())?)
    })
}

fn created(body: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

/// 201 when a PUT created the record, 200 when it updated it.
pub(crate) fn written(created_now: bool, body: impl serde::Serialize) -> Response {
    if created_now {
        created(body)
    } else {
        Json(body).into_response()
    }
}

/// A listing cursor: the base64url of the last name (or key) of the previous page.
pub(crate) fn decode_cursor<T, E>(
    cursor: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, ApiError> {
    let bad = || ApiError::invalid_query("cursor is not one this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    parse(&text).map_err(|_| bad())
}

/// A listing's `limit`: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid_query(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )))
    }
}

/// `expectedRevision` may come in the body or, as on DELETE, in the query; both agree or the
/// request is refused rather than one silently winning.
pub(crate) fn expected_revision(
    body: Option<u64>,
    query: Option<u64>,
) -> Result<Option<u64>, ApiError> {
    match (body, query) {
        (Some(b), Some(q)) if b != q => Err(ApiError::invalid_query(
            "expectedRevision in the query and in the body differ",
        )),
        (b, q) => Ok(b.or(q)),
    }
}

/// A config entry's JSON shape; a stored value that is not JSON is a corrupt store.
fn config_json(entry: &ConfigEntry) -> Result<ConfigEntryJson, ApiError> {
    ConfigEntryJson::new(entry).ok_or_else(|| {
        tracing::error!(
            environment = %entry.environment,
            key = %entry.key,
            "a stored config value is not JSON"
        );
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_cursors_round_trip_and_say_whether_the_walk_is_in_the_functions() {
        let env = EnvName::new("prod").unwrap();
        let value = WalkPosition::Value(env.clone(), SecretName::new("DB_URL").unwrap());
        let function = WalkPosition::Function(env.clone(), FunctionId::new("fn").unwrap());
        let orchestration = WalkPosition::Orchestration(
            env,
            coffer_store::OrchestrationId::new("orch_0123456789abcdef").unwrap(),
        );
        // A values cursor is what it was before functions were walked: one issued by an
        // older server still resumes.
        assert_eq!(
            encode_walk_cursor(&value),
            URL_SAFE_NO_PAD.encode("prod/DB_URL")
        );
        for position in [value, function, orchestration] {
            let cursor = encode_walk_cursor(&position);
            assert_eq!(decode_walk_cursor(&cursor).unwrap(), position);
        }
        for forged in [
            "fn:prod",
            "fn:prod/NOT_AN_ID",
            "orch:prod/orch_xyz",
            "orch:prod",
            "fn:/f",
            "fn/x/y",
            "prod/not-a-name!",
        ] {
            let cursor = URL_SAFE_NO_PAD.encode(forged);
            assert!(decode_walk_cursor(&cursor).is_err(), "{forged}");
        }
    }
}
