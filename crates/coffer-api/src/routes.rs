//! Handlers. Each one: authenticate (extractor) → parse path names → authorize → parse the
//! body → call the service.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_core::{
    ApiKeyId, Applied, Coffer, Encryption, EnvName, Mutation, REWRAP_BATCH, Role, SecretName,
    ValueStatus,
};
use serde_json::json;

use crate::error::ApiError;
use crate::extract::{Caller, JsonBody, NoQuery, PathParams, QueryParams};
use crate::shapes::*;

type State_ = State<Arc<Coffer>>;
type ApiResult = Result<Response, ApiError>;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub async fn healthz(_: QueryParams<NoQuery>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(coffer): State_, _: QueryParams<NoQuery>) -> ApiResult {
    coffer.ready().await?;
    Ok(Json(json!({ "status": "ready" })).into_response())
}

pub async fn status(State(coffer): State_, _: QueryParams<NoQuery>) -> Json<serde_json::Value> {
    let s = coffer.status();
    let (encryption, current) = match s.encryption {
        Encryption::Enabled {
            current_key_version,
        } => ("enabled", Some(current_key_version)),
        Encryption::Disabled => ("disabled", None),
    };
    Json(json!({
        "version": s.version,
        "backend": s.backend,
        "encryption": encryption,
        "currentKeyVersion": current,
        "unreadableValues": s.unreadable_values,
        "warnings": s.warnings,
    }))
}

pub async fn list_environments(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let envs = coffer.list_environments(&who).await?;
    let envs: Vec<EnvironmentJson> = envs.iter().map(Into::into).collect();
    Ok(Json(json!({ "environments": envs })).into_response())
}

pub async fn create_environment(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    body: JsonBody,
) -> ApiResult {
    coffer.require_admin(&who)?;
    let req: CreateEnvironment = body.parse().await?;
    let name = EnvName::new(&req.name)?;
    match coffer
        .apply(&who, Mutation::CreateEnvironment { name })
        .await?
    {
        Applied::EnvironmentCreated(env) => Ok(created(EnvironmentJson::from(&env))),
        other => Err(unexpected(other)),
    }
}

pub async fn delete_environment(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(env): PathParams<String>,
) -> ApiResult {
    let name = EnvName::new(&env)?;
    coffer
        .apply(&who, Mutation::DeleteEnvironment { name })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_api_keys(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let keys = coffer.list_api_keys(&who).await?;
    let keys: Vec<ApiKeyJson> = keys.iter().map(Into::into).collect();
    Ok(Json(json!({ "apiKeys": keys })).into_response())
}

pub async fn create_api_key(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    body: JsonBody,
) -> ApiResult {
    coffer.require_admin(&who)?;
    let req: CreateApiKey = body.parse().await?;
    let env = req.environment.as_deref().map(EnvName::new).transpose()?;
    let role = Role::from_parts(&req.role, env).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            e.to_string(),
        )
    })?;
    match coffer
        .apply(
            &who,
            Mutation::CreateApiKey {
                name: req.name,
                role,
            },
        )
        .await?
    {
        Applied::ApiKeyCreated(new) => {
            use secrecy::ExposeSecret;
            let mut shown = ApiKeyJson::from(&new.meta);
            // The one place a key leaves the server: the response that creates it.
            shown.key = Some(new.key.expose_secret().to_owned());
            Ok(created(shown))
        }
        other => Err(unexpected(other)),
    }
}

pub async fn revoke_api_key(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let id = ApiKeyId::new(&id)?;
    coffer.require_admin(&who)?;
    coffer.apply(&who, Mutation::RevokeApiKey { id }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_secrets(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(env): PathParams<String>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_query(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let page = coffer
        .list_secrets(&who, &env, after.as_ref(), limit)
        .await?;
    let secrets: Vec<SecretMetaJson> = page
        .items
        .iter()
        .map(|m| SecretMetaJson::new(m, coffer.value_status(m)))
        .collect();
    let next = page.next.map(|n| URL_SAFE_NO_PAD.encode(n.as_str()));
    Ok(Json(json!({ "secrets": secrets, "nextCursor": next })).into_response())
}

/// Sets several secrets at once, all or none; values equal to the stored ones are left
/// alone and reported `unchanged`.
pub async fn import_secrets(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(env): PathParams<String>,
    body: JsonBody,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let req: ImportSecrets = body.parse().await?;
    let entries = req
        .secrets
        .into_iter()
        .map(|e| Ok((SecretName::new(&e.name)?, e.value)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    match coffer
        .apply(&who, Mutation::ImportSecrets { env, entries })
        .await?
    {
        Applied::SecretsImported(all) => {
            let secrets: Vec<ImportedJson> = all.iter().map(Into::into).collect();
            Ok(Json(json!({ "secrets": secrets })).into_response())
        }
        other => Err(unexpected(other)),
    }
}

pub async fn get_secret(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams((env, name)): PathParams<(String, String)>,
) -> ApiResult {
    let (env, name) = (EnvName::new(&env)?, SecretName::new(&name)?);
    let meta = coffer.secret_meta(&who, &env, &name).await?;
    Ok(Json(SecretMetaJson::new(&meta, coffer.value_status(&meta))).into_response())
}

pub async fn put_secret(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams((env, name)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<RevisionQuery>,
    body: JsonBody,
) -> ApiResult {
    let (env, name) = (EnvName::new(&env)?, SecretName::new(&name)?);
    coffer.require_manage(&who, &env)?;
    let req: PutSecret = body.parse().await?;
    // `expectedRevision` may come in the body or, as on DELETE, in the query; both agree
    // or the request is refused rather than one silently winning.
    let expected_revision = match (req.expected_revision, q.expected_revision) {
        (Some(b), Some(q)) if b != q => {
            return Err(ApiError::invalid_query(
                "expectedRevision in the query and in the body differ",
            ));
        }
        (b, q) => b.or(q),
    };
    let mutation = Mutation::PutSecret {
        env,
        name,
        value: req.value,
        expected_revision,
    };
    match coffer.apply(&who, mutation).await? {
        Applied::SecretWritten(out) => {
            let status = if out.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((
                status,
                Json(SecretMetaJson::new(&out.meta, ValueStatus::Ok)),
            )
                .into_response())
        }
        other => Err(unexpected(other)),
    }
}

pub async fn delete_secret(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams((env, name)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<RevisionQuery>,
) -> ApiResult {
    let (env, name) = (EnvName::new(&env)?, SecretName::new(&name)?);
    coffer.require_manage(&who, &env)?;
    coffer
        .apply(
            &who,
            Mutation::DeleteSecret {
                env,
                name,
                expected_revision: q.expected_revision,
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn key_status(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let status = coffer.key_status(&who).await?;
    Ok(Json(KeyStatusJson::from(&status)).into_response())
}

/// Re-encrypts to the current key version: every value, or one batch from `cursor` when
/// `limit` is given (the CLI pages to show progress; a crash resumes from any cursor).
pub async fn rewrap(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    body: JsonBody,
) -> ApiResult {
    coffer.require_admin(&who)?;
    let req: RewrapRequest = body.parse_or_default().await?;
    let after = req
        .cursor
        .as_deref()
        .map(decode_rewrap_cursor)
        .transpose()?;
    if req.limit.is_some_and(|l| !(1..=REWRAP_BATCH).contains(&l)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            format!("limit must be between 1 and {REWRAP_BATCH}"),
        ));
    }
    match coffer
        .apply(
            &who,
            Mutation::Rewrap {
                after,
                limit: req.limit,
            },
        )
        .await?
    {
        Applied::Rewrapped(report) => {
            let next = report
                .next
                .as_ref()
                .map(|(e, n)| URL_SAFE_NO_PAD.encode(format!("{e}/{n}")));
            Ok(Json(RewrapJson::new(&report, next)).into_response())
        }
        other => Err(unexpected(other)),
    }
}

/// Prometheus text exposition; no auth, no names or values, counts only.
pub async fn metrics(State(coffer): State_, _: QueryParams<NoQuery>) -> Response {
    let s = coffer.status();
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
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

fn decode_rewrap_cursor(cursor: &str) -> Result<(EnvName, SecretName), ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "cursor is not one this server issued",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (env, name) = text.split_once('/').ok_or_else(bad)?;
    Ok((
        EnvName::new(env).map_err(|_| bad())?,
        SecretName::new(name).map_err(|_| bad())?,
    ))
}

fn created(body: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

fn decode_cursor(cursor: &str) -> Result<SecretName, ApiError> {
    let bad = || ApiError::invalid_query("cursor is not one this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    SecretName::new(&text).map_err(|_| bad())
}

/// `apply` answers each mutation with its own variant; anything else is a bug.
fn unexpected(applied: Applied) -> ApiError {
    tracing::error!(?applied, "mutation answered with the wrong outcome");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}
