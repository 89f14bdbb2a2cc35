//! The runtime plane's routes: functions, events, runs, and the routes that hand values
//! over (poll, resolve), which only runtime keys of the environment may call.
//!
//! The shapes are `coffer_wire`'s, shared with the CLI and the SDK. Answers that carry
//! values are `Cache-Control: no-store`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_core::commands::{self, FunctionWritten};
use coffer_core::runtime::FunctionView;
use coffer_core::{Coffer, EnvName};
use coffer_store::{FunctionId, RunFilter, RunId, RunRecord, RunStatus};
use coffer_wire::{
    Complete, EventAccepted, Function, FunctionList, Heartbeat, Job, Poll, PutFunction, Resolve,
    RotateSigningSecret, Run, RunList, RunRef, SendEvent, ShownOnce,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::extract::{Caller, JsonBody, NoQuery, PathParams, QueryParams};
use crate::openapi::*;
use crate::routes::{decode_cursor, page_limit};
use crate::shapes::{EnvPath, ListQuery, RevisionQuery};

type State_ = State<Arc<Coffer>>;
type ApiResult = Result<Response, ApiError>;

/// The function named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FunctionPath {
    /// An environment name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    #[param(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "production")]
    pub env: String,
    /// A function id, `^[a-z0-9][a-z0-9_-]{0,62}$`.
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$", example = "send-invoice")]
    pub id: String,
}

/// The run named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RunPath {
    /// An environment name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    #[param(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "production")]
    pub env: String,
    /// A run id, `run_` and 16-64 hex digits.
    #[param(
        pattern = r"^run_[0-9a-f]{16,64}$",
        example = "run_019ad0c1e2f30123456789abcdef"
    )]
    pub id: String,
}

/// A page of runs.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunQuery {
    /// Only runs of this function.
    pub function_id: Option<String>,
    /// Only runs with this status.
    pub status: Option<coffer_wire::RunStatus>,
    /// Items per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

fn function_id(raw: &str) -> Result<FunctionId, ApiError> {
    Ok(FunctionId::new(raw)?)
}

fn run_id(raw: &str) -> Result<RunId, ApiError> {
    Ok(RunId::new(raw)?)
}

/// A function's wire shape, with a signing secret shown once.
fn function_json(f: &FunctionView, signing_secret: Option<secrecy::SecretString>) -> Function {
    let spec = &f.spec;
    let r = &f.record;
    Function {
        id: r.id.to_string(),
        environment: r.environment.to_string(),
        triggers: spec.triggers.clone(),
        secrets: spec.secrets.clone(),
        config: spec.config.clone(),
        mode: spec.mode,
        url: spec.url.clone(),
        timeout_ms: spec.timeout_ms,
        retries: spec.retries,
        concurrency: spec.concurrency,
        revision: r.revision,
        signing_secret: signing_secret.map(ShownOnce::new),
        previous_signing_secret_until: r
            .previous_signing
            .as_ref()
            .map(|(_, until)| until.rfc3339()),
        created_at: r.created_at.rfc3339(),
        updated_at: r.updated_at.rfc3339(),
    }
}

/// A run's wire shape.
pub(crate) fn run_json(r: &RunRecord) -> Run {
    Run {
        id: r.id.to_string(),
        function_id: r.function_id.to_string(),
        environment: r.environment.to_string(),
        status: match r.status {
            RunStatus::Queued => coffer_wire::RunStatus::Queued,
            RunStatus::Running => coffer_wire::RunStatus::Running,
            RunStatus::Succeeded => coffer_wire::RunStatus::Succeeded,
            RunStatus::Failed => coffer_wire::RunStatus::Failed,
        },
        attempts: r.attempts,
        event: r.event_name.clone(),
        output: r
            .output
            .as_deref()
            .map(|o| serde_json::from_str(o).unwrap_or(serde_json::Value::Null)),
        error: r.error.clone(),
        created_at: r.created_at.rfc3339(),
        updated_at: r.updated_at.rfc3339(),
    }
}

/// An answer that carries a value (a job, a signing secret): never stored by a cache.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A job's answer.
fn job_response(job: &Job) -> Response {
    no_store(Json(job).into_response())
}

/// The functions of one environment, a page at a time, in id order.
#[utoipa::path(get, path = "/v1/environments/{env}/functions", tag = "functions",
    security(("bearer" = [])),
    params(EnvPath, ListQuery),
    responses(
        (status = 200, description = "One page", body = FunctionList),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, EnvironmentNotFound, Unavailable,
    ))]
pub async fn list_functions(
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
        .map(|c| decode_cursor(c, FunctionId::new))
        .transpose()?;
    let page = coffer
        .list_functions(&who, &env, after.as_ref(), limit)
        .await?;
    Ok(Json(FunctionList {
        functions: page.items.iter().map(|f| function_json(f, None)).collect(),
        next_cursor: page.next.map(|id| URL_SAFE_NO_PAD.encode(id.as_str())),
    })
    .into_response())
}

/// One function (its signing secret is never shown again).
#[utoipa::path(get, path = "/v1/environments/{env}/functions/{id}", tag = "functions",
    security(("bearer" = [])),
    params(FunctionPath),
    responses(
        (status = 200, description = "The function", body = Function),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, FunctionNotFound, Unavailable,
    ))]
pub async fn get_function(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(FunctionPath { env, id }): PathParams<FunctionPath>,
) -> ApiResult {
    let (env, id) = (EnvName::new(&env)?, function_id(&id)?);
    let f = coffer.function(&who, &env, &id).await?;
    Ok(Json(function_json(&f, None)).into_response())
}

/// Registers a function (201, with its `signingSecret`, shown this once) or updates its
/// definition (200; the signing secret is kept).
#[utoipa::path(put, path = "/v1/environments/{env}/functions/{id}", tag = "functions",
    security(("bearer" = [])),
    params(FunctionPath, RevisionQuery),
    request_body = PutFunction,
    responses(
        (status = 200, description = "Updated", body = Function),
        (status = 201, description = "Registered, with its signing secret", body = Function),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, EnvironmentNotFound, RevisionConflict, Unavailable,
    ))]
pub async fn put_function(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(FunctionPath { env, id }): PathParams<FunctionPath>,
    QueryParams(q): QueryParams<RevisionQuery>,
    body: JsonBody,
) -> ApiResult {
    let (env, id) = (EnvName::new(&env)?, function_id(&id)?);
    coffer.require_manage(&who, &env)?;
    let (mut req, _held): (PutFunction, _) = body.parse().await?;
    req.expected_revision =
        crate::routes::expected_revision(req.expected_revision, q.expected_revision)?;
    let out: FunctionWritten = coffer
        .apply(&who, commands::PutFunction { env, id, body: req })
        .await?;
    let body = function_json(&out.function, out.signing_secret);
    Ok(no_store(crate::routes::written(out.created, body)))
}

/// Deletes a function; its runs stay (a queued one fails when it comes up).
#[utoipa::path(delete, path = "/v1/environments/{env}/functions/{id}", tag = "functions",
    security(("bearer" = [])),
    params(FunctionPath, RevisionQuery),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized, InvalidQuery, InvalidInput, Forbidden, FunctionNotFound, RevisionConflict,
        Unavailable,
    ))]
pub async fn delete_function(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(FunctionPath { env, id }): PathParams<FunctionPath>,
    QueryParams(q): QueryParams<RevisionQuery>,
) -> ApiResult {
    let (env, id) = (EnvName::new(&env)?, function_id(&id)?);
    coffer.require_manage(&who, &env)?;
    let command = commands::DeleteFunction {
        env,
        id,
        expected_revision: q.expected_revision,
    };
    coffer.apply(&who, command).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Replaces the signing secret (the new one is shown this once); deliveries are signed
/// with the old one too for `graceMs` (default one day).
#[utoipa::path(post, path = "/v1/environments/{env}/functions/{id}/signing-secret", tag = "functions",
    security(("bearer" = [])),
    params(FunctionPath),
    request_body(content = Option<RotateSigningSecret>, description = "Optional"),
    responses(
        (status = 200, description = "Rotated, with the new signing secret", body = Function),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, FunctionNotFound, Unavailable,
    ))]
pub async fn rotate_signing_secret(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(FunctionPath { env, id }): PathParams<FunctionPath>,
    body: JsonBody,
) -> ApiResult {
    let (env, id) = (EnvName::new(&env)?, function_id(&id)?);
    coffer.require_manage(&who, &env)?;
    let (req, _held): (RotateSigningSecret, _) = body.parse_or_default().await?;
    let command = commands::RotateSigningSecret {
        env,
        id,
        grace_ms: req.grace_ms,
    };
    let out = coffer.apply(&who, command).await?;
    let body = function_json(&out.function, out.signing_secret);
    Ok(no_store(Json(body).into_response()))
}

/// The declared secrets (and config keys) of a function, for `coffer run`: runtime keys
/// of the environment only. Audited with the names handed over.
#[utoipa::path(post, path = "/v1/environments/{env}/functions/{id}/resolve", tag = "runtime",
    security(("bearer" = [])),
    params(FunctionPath),
    request_body(content = Option<Resolve>, description = "Optional: `only` some declared secrets"),
    responses(
        (status = 200, description = "The job, without a run", body = Job),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, FunctionNotFound, Unavailable,
    ))]
pub async fn resolve(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(FunctionPath { env, id }): PathParams<FunctionPath>,
    body: JsonBody,
) -> ApiResult {
    let (env, id) = (EnvName::new(&env)?, function_id(&id)?);
    coffer.require_runtime_key(&who, &env)?;
    let (req, _held): (Resolve, _) = body.parse_or_default().await?;
    let command = commands::ResolveFunction {
        env,
        id,
        only: req.only,
    };
    let job = coffer.apply(&who, command).await?;
    Ok(job_response(&job))
}

/// Sends an event: 202 with one run per function whose trigger matches. With an
/// `Idempotency-Key` header, a second send with the same key (within 24 hours) starts no
/// run and answers with the first send's runs.
#[utoipa::path(post, path = "/v1/environments/{env}/events", tag = "runs",
    security(("bearer" = [])),
    params(EnvPath,
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters")),
    request_body = SendEvent,
    responses(
        (status = 202, description = "Accepted", body = EventAccepted),
        Unauthorized, Forbidden, BadBody, BodyTimeout, ValueTooLarge, UnsupportedMediaType,
        InvalidInput, EnvironmentNotFound, Unavailable,
    ))]
pub async fn send_event(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(EnvPath { env }): PathParams<EnvPath>,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::from(coffer_core::CoreError::Invalid(
                        "the Idempotency-Key header is not visible ASCII".into(),
                    ))
                })?
                .to_owned(),
        ),
    };
    let (event, _held): (SendEvent, _) = body.parse().await?;
    let command = commands::SendEvent {
        env,
        event,
        idempotency_key,
    };
    let done = coffer.apply(&who, command).await?;
    let runs = done
        .runs
        .iter()
        .map(|(id, f)| RunRef {
            id: id.to_string(),
            function_id: f.to_string(),
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(EventAccepted { runs })).into_response())
}

/// Runs of one environment, newest first, optionally of one function or status.
#[utoipa::path(get, path = "/v1/environments/{env}/runs", tag = "runs",
    security(("bearer" = [])),
    params(EnvPath, RunQuery),
    responses(
        (status = 200, description = "One page", body = RunList),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, EnvironmentNotFound, Unavailable,
    ))]
pub async fn list_runs(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(EnvPath { env }): PathParams<EnvPath>,
    QueryParams(q): QueryParams<RunQuery>,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    let limit = page_limit(q.limit)?;
    let filter = RunFilter {
        function: q.function_id.as_deref().map(function_id).transpose()?,
        status: q.status.map(|s| match s {
            coffer_wire::RunStatus::Queued => RunStatus::Queued,
            coffer_wire::RunStatus::Running => RunStatus::Running,
            coffer_wire::RunStatus::Succeeded => RunStatus::Succeeded,
            coffer_wire::RunStatus::Failed => RunStatus::Failed,
        }),
    };
    let after = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c, RunId::new))
        .transpose()?;
    let page = coffer
        .list_runs(&who, &env, &filter, after.as_ref(), limit)
        .await?;
    Ok(Json(RunList {
        runs: page.items.iter().map(run_json).collect(),
        next_cursor: page.next.map(|id| URL_SAFE_NO_PAD.encode(id.as_str())),
    })
    .into_response())
}

/// One run: its status, attempts, and its redacted output or error.
#[utoipa::path(get, path = "/v1/environments/{env}/runs/{id}", tag = "runs",
    security(("bearer" = [])),
    params(RunPath),
    responses(
        (status = 200, description = "The run", body = Run),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, RunNotFound, Unavailable,
    ))]
pub async fn get_run(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(RunPath { env, id }): PathParams<RunPath>,
) -> ApiResult {
    let (env, id) = (EnvName::new(&env)?, run_id(&id)?);
    let run = coffer.run(&who, &env, &id).await?;
    Ok(Json(run_json(&run)).into_response())
}

/// A pull worker reports how its run ended (`output` or `error`, redacted before it is
/// stored); refused with 409 `lease_lost` when its attempt no longer holds the lease.
#[utoipa::path(post, path = "/v1/environments/{env}/runs/{id}/complete", tag = "runtime",
    security(("bearer" = [])),
    params(RunPath),
    request_body = Complete,
    responses(
        (status = 200, description = "The run, ended", body = Run),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, RunNotFound, LeaseLost, Unavailable,
    ))]
pub async fn complete_run(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(RunPath { env, id }): PathParams<RunPath>,
    body: JsonBody,
) -> ApiResult {
    let (env, id) = (EnvName::new(&env)?, run_id(&id)?);
    coffer.require_runtime_key(&who, &env)?;
    let (body, _held): (Complete, _) = body.parse().await?;
    let run = coffer
        .apply(&who, commands::CompleteRun { env, id, body })
        .await?;
    Ok(Json(run_json(&run)).into_response())
}

/// A pull worker extends its lease on a run (204); 409 `lease_lost` when its attempt no
/// longer holds it.
#[utoipa::path(post, path = "/v1/environments/{env}/runs/{id}/heartbeat", tag = "runtime",
    security(("bearer" = [])),
    params(RunPath),
    request_body = Heartbeat,
    responses(
        (status = 204, description = "Extended"),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, RunNotFound, LeaseLost, Unavailable,
    ))]
pub async fn heartbeat_run(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(RunPath { env, id }): PathParams<RunPath>,
    body: JsonBody,
) -> ApiResult {
    let (env, id) = (EnvName::new(&env)?, run_id(&id)?);
    coffer.require_runtime_key(&who, &env)?;
    let (body, _held): (Heartbeat, _) = body.parse().await?;
    coffer
        .apply(&who, commands::HeartbeatRun { env, id, body })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A pull worker long-polls for a run of its functions: 200 with the job (the run is its
/// for `leaseMs`), or 204 when none came within `waitMs`. Runtime keys of the environment
/// only.
#[utoipa::path(post, path = "/v1/environments/{env}/workers/poll", tag = "runtime",
    security(("bearer" = [])),
    params(EnvPath),
    request_body = Poll,
    responses(
        (status = 200, description = "A job", body = Job),
        (status = 204, description = "No run within the wait"),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, EnvironmentNotFound, Unavailable,
    ))]
pub async fn poll(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(EnvPath { env }): PathParams<EnvPath>,
    body: JsonBody,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_runtime_key(&who, &env)?;
    let (poll, held): (Poll, _) = body.parse().await?;
    // The body's share of the budget is not held through the wait.
    drop(held);
    match coffer.apply(&who, commands::PollRun { env, poll }).await? {
        Some(job) => Ok(job_response(&job)),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
