//! Orchestrations and their runs. Every answer is masked: an encrypted parameter is
//! `{"value": "********", "encrypted": true}`, a reference `{"secretRef": "NAME"}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_core::orchestrations as orch;
use coffer_core::{Coffer, EnvName};
use coffer_wire::{
    CreateOrchestration, DecideOrchestrationRun, Orchestration, OrchestrationList,
    OrchestrationRun, OrchestrationRunList, OrchestrationRunStatus, StartOrchestrationRun,
    UpdateOrchestration,
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

/// The orchestration named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrchestrationPath {
    /// An environment name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    #[param(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "production")]
    pub env: String,
    /// An orchestration id, `orch_` and 16-64 hex digits.
    #[param(
        pattern = r"^orch_[0-9a-f]{16,64}$",
        example = "orch_019ad0c1e2f30123456789abcdef"
    )]
    pub id: String,
}

/// The orchestration run named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct OrchestrationRunPath {
    /// An environment name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    #[param(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "production")]
    pub env: String,
    /// An orchestration run id, `orun_` and 16-64 hex digits.
    #[param(
        pattern = r"^orun_[0-9a-f]{16,64}$",
        example = "orun_019ad0c1e2f30123456789abcdef"
    )]
    pub run_id: String,
}

/// A page of orchestration runs.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OrchestrationRunQuery {
    /// Only runs of this orchestration.
    pub orchestration_id: Option<String>,
    /// Only runs with this status.
    pub status: Option<OrchestrationRunStatus>,
    /// Items per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

fn cursor(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    raw.map(|c| decode_cursor(c, |s| Ok::<_, ()>(s.to_owned())))
        .transpose()
}

/// The orchestrations of one environment, a page at a time, in id (creation) order.
#[utoipa::path(get, path = "/v1/environments/{env}/orchestrations", tag = "orchestrations",
    security(("bearer" = [])),
    params(EnvPath, ListQuery),
    responses(
        (status = 200, description = "One page, masked", body = OrchestrationList),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, EnvironmentNotFound, Unavailable,
    ))]
pub async fn list_orchestrations(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(EnvPath { env }): PathParams<EnvPath>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let limit = page_limit(q.limit)?;
    let after = cursor(q.cursor.as_deref())?;
    let page = coffer
        .list_orchestrations(&who, &env, after.as_deref(), limit)
        .await?;
    Ok(Json(OrchestrationList {
        orchestrations: page.items,
        next_cursor: page.next.map(|id| URL_SAFE_NO_PAD.encode(id)),
    })
    .into_response())
}

/// Creates an orchestration. Each `encryptedParams` entry `{"value", "encrypt": true}` is
/// sealed; the answer shows it masked.
#[utoipa::path(post, path = "/v1/environments/{env}/orchestrations", tag = "orchestrations",
    security(("bearer" = [])),
    params(EnvPath),
    request_body = CreateOrchestration,
    responses(
        (status = 201, description = "Created, masked", body = Orchestration),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, EnvironmentNotFound, Unavailable,
    ))]
pub async fn create_orchestration(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(EnvPath { env }): PathParams<EnvPath>,
    body: JsonBody,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let (req, _held): (CreateOrchestration, _) = body.parse().await?;
    let out = coffer
        .apply(&who, orch::CreateOrchestration { env, body: req })
        .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// One orchestration, masked.
#[utoipa::path(get, path = "/v1/environments/{env}/orchestrations/{id}", tag = "orchestrations",
    security(("bearer" = [])),
    params(OrchestrationPath),
    responses(
        (status = 200, description = "The orchestration, masked", body = Orchestration),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, OrchestrationNotFound, Unavailable,
    ))]
pub async fn get_orchestration(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(OrchestrationPath { env, id }): PathParams<OrchestrationPath>,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    Ok(Json(coffer.orchestration(&who, &env, &id).await?).into_response())
}

/// Replaces an orchestration's definition. Per encrypted param: sent back masked keeps the
/// stored value, `encrypt: true` seals a new one, omitted removes it.
#[utoipa::path(put, path = "/v1/environments/{env}/orchestrations/{id}", tag = "orchestrations",
    security(("bearer" = [])),
    params(OrchestrationPath, RevisionQuery),
    request_body = UpdateOrchestration,
    responses(
        (status = 200, description = "Updated, masked", body = Orchestration),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, OrchestrationNotFound, RevisionConflict, Unavailable,
    ))]
pub async fn update_orchestration(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(OrchestrationPath { env, id }): PathParams<OrchestrationPath>,
    QueryParams(q): QueryParams<RevisionQuery>,
    body: JsonBody,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let (mut req, _held): (UpdateOrchestration, _) = body.parse().await?;
    req.expected_revision =
        crate::routes::expected_revision(req.expected_revision, q.expected_revision)?;
    let out = coffer
        .apply(&who, orch::UpdateOrchestration { env, id, body: req })
        .await?;
    Ok(Json(out).into_response())
}

/// Deletes an orchestration; its runs stay (one still going fails at its next step).
#[utoipa::path(delete, path = "/v1/environments/{env}/orchestrations/{id}", tag = "orchestrations",
    security(("bearer" = [])),
    params(OrchestrationPath, RevisionQuery),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized, InvalidQuery, InvalidInput, Forbidden, OrchestrationNotFound,
        RevisionConflict, Unavailable,
    ))]
pub async fn delete_orchestration(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(OrchestrationPath { env, id }): PathParams<OrchestrationPath>,
    QueryParams(q): QueryParams<RevisionQuery>,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let command = orch::DeleteOrchestration {
        env,
        id,
        expected_revision: q.expected_revision,
    };
    coffer.apply(&who, command).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Starts a run (202): its steps run in order on whichever node leases it.
#[utoipa::path(post, path = "/v1/environments/{env}/orchestrations/{id}/runs", tag = "orchestrations",
    security(("bearer" = [])),
    params(OrchestrationPath),
    request_body(content = Option<StartOrchestrationRun>, description = "Optional: the run's params"),
    responses(
        (status = 202, description = "Started", body = OrchestrationRun),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, OrchestrationNotFound, Unavailable,
    ))]
pub async fn start_orchestration_run(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(OrchestrationPath { env, id }): PathParams<OrchestrationPath>,
    body: JsonBody,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let (req, _held): (StartOrchestrationRun, _) = body.parse_or_default().await?;
    let out = coffer
        .apply(&who, orch::StartOrchestrationRun { env, id, body: req })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}

/// The orchestration runs of one environment, newest first.
#[utoipa::path(get, path = "/v1/environments/{env}/orchestration-runs", tag = "orchestrations",
    security(("bearer" = [])),
    params(EnvPath, OrchestrationRunQuery),
    responses(
        (status = 200, description = "One page", body = OrchestrationRunList),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, EnvironmentNotFound, Unavailable,
    ))]
pub async fn list_orchestration_runs(
    State(coffer): State_,
    Caller(who): Caller,
    PathParams(EnvPath { env }): PathParams<EnvPath>,
    QueryParams(q): QueryParams<OrchestrationRunQuery>,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let limit = page_limit(q.limit)?;
    let after = cursor(q.cursor.as_deref())?;
    let page = coffer
        .list_orchestration_runs(
            &who,
            &env,
            q.orchestration_id.as_deref(),
            q.status,
            after.as_deref(),
            limit,
        )
        .await?;
    Ok(Json(OrchestrationRunList {
        runs: page.items,
        next_cursor: page.next.map(|id| URL_SAFE_NO_PAD.encode(id)),
    })
    .into_response())
}

/// One orchestration run: its status, current step and every step's state.
#[utoipa::path(get, path = "/v1/environments/{env}/orchestration-runs/{runId}", tag = "orchestrations",
    security(("bearer" = [])),
    params(OrchestrationRunPath),
    responses(
        (status = 200, description = "The run", body = OrchestrationRun),
        Unauthorized, InvalidQuery, InvalidName, Forbidden, OrchestrationRunNotFound, Unavailable,
    ))]
pub async fn get_orchestration_run(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(OrchestrationRunPath { env, run_id }): PathParams<OrchestrationRunPath>,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    Ok(Json(coffer.orchestration_run(&who, &env, &run_id).await?).into_response())
}

async fn decide(
    coffer: Arc<Coffer>,
    who: coffer_core::Principal,
    env: String,
    run_id: String,
    body: JsonBody,
    approve: bool,
) -> ApiResult {
    let env = EnvName::new(&env)?;
    coffer.require_manage(&who, &env)?;
    let (req, _held): (DecideOrchestrationRun, _) = body.parse_or_default().await?;
    let command = orch::DecideOrchestrationRun {
        env,
        run_id,
        approve,
        body: req,
    };
    Ok(Json(coffer.apply(&who, command).await?).into_response())
}

/// Approves the approval step the run waits at: it goes on.
#[utoipa::path(post, path = "/v1/environments/{env}/orchestration-runs/{runId}/approve", tag = "orchestrations",
    security(("bearer" = [])),
    params(OrchestrationRunPath),
    request_body(content = Option<DecideOrchestrationRun>, description = "Optional: a reason"),
    responses(
        (status = 200, description = "Approved", body = OrchestrationRun),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, OrchestrationRunNotFound, NotWaiting, Unavailable,
    ))]
pub async fn approve_orchestration_run(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(OrchestrationRunPath { env, run_id }): PathParams<OrchestrationRunPath>,
    body: JsonBody,
) -> ApiResult {
    decide(coffer, who, env, run_id, body, true).await
}

/// Rejects the approval step the run waits at: the run ends `rejected`.
#[utoipa::path(post, path = "/v1/environments/{env}/orchestration-runs/{runId}/reject", tag = "orchestrations",
    security(("bearer" = [])),
    params(OrchestrationRunPath),
    request_body(content = Option<DecideOrchestrationRun>, description = "Optional: a reason"),
    responses(
        (status = 200, description = "Rejected", body = OrchestrationRun),
        Unauthorized, Forbidden, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType,
        InvalidInput, OrchestrationRunNotFound, NotWaiting, Unavailable,
    ))]
pub async fn reject_orchestration_run(
    State(coffer): State_,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
    PathParams(OrchestrationRunPath { env, run_id }): PathParams<OrchestrationRunPath>,
    body: JsonBody,
) -> ApiResult {
    decide(coffer, who, env, run_id, body, false).await
}
