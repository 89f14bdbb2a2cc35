//! The audit log over HTTP: `GET /v1/audit` (filtered, cursor pages), `GET /v1/audit/verify`
//! (the hash chain, walked), and the middleware that reports every 401/403 the API answers
//! to the service's denial coalescer.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_core::{
    ApiKeyId, AuditQuery, AuditRecord, AuditResult, ChainReport, Coffer, DeniedAttempt, EnvName,
    SubjectPattern, Timestamp,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::{Caller, NoQuery, QueryParams};
use crate::openapi::*;
use crate::routes::{decode_cursor, page_limit};

type ApiResult = Result<Response, ApiError>;

/// Longest `action` filter (actions are short; a denial's is its route template).
const MAX_ACTION_CHARS: usize = 256;

/// Audit rows, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    security(("bearer" = [])),
    params(AuditParams),
    responses(
        (status = 200, description = "One page, in `seq` order", body = AuditPageJson),
        Unauthorized, InvalidQuery, Forbidden, Unavailable,
    ))]
pub async fn list_audit(
    State(coffer): State<Arc<Coffer>>,
    Caller(who): Caller,
    QueryParams(q): QueryParams<AuditParams>,
) -> ApiResult {
    let limit = page_limit(q.limit)?;
    let query = q.into_query()?;
    let page = coffer.audit(&who, query, limit).await?;
    let entries = page.items.iter().map(AuditEntryJson::from).collect();
    let next_cursor = page.next.map(|seq| URL_SAFE_NO_PAD.encode(seq.to_string()));
    Ok(Json(AuditPageJson {
        entries,
        next_cursor,
    })
    .into_response())
}

/// Walks the whole hash chain and names the first broken row (admin).
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What the walk found (`ok: false` names the first broken row)", body = AuditVerifyJson),
        Unauthorized, InvalidQuery, Forbidden, Unavailable,
    ))]
pub async fn verify_audit(
    State(coffer): State<Arc<Coffer>>,
    Caller(who): Caller,
    _: QueryParams<NoQuery>,
) -> ApiResult {
    let report = coffer.verify_audit(&who).await?;
    Ok(Json(AuditVerifyJson::from(&report)).into_response())
}

/// Filters and paging of `GET /v1/audit`; every filter is optional and they combine (AND).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Rows of this environment only (a manage key: its own, the default).
    #[param(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$", example = "production")]
    environment: Option<String>,
    /// Rows by this API key id, or `system` for Coffer's own.
    #[param(
        pattern = r"^(system|ak_[0-9a-f]{16})$",
        example = "ak_0123456789abcdef"
    )]
    actor: Option<String>,
    /// Rows with exactly this action: `secret.created`, … (a denial's action is its route,
    /// `PUT /v1/environments/{env}/secrets/{name}`).
    #[param(min_length = 1, max_length = 256, example = "secret.created")]
    action: Option<String>,
    /// Rows whose subject matches this NATS pattern (`*` one token, `>` the rest).
    #[param(min_length = 1, max_length = 512, example = "system.secret.>")]
    subject: Option<String>,
    /// `allowed` or `denied` rows only.
    #[param(inline)]
    result: Option<ResultName>,
    /// Rows at or after this time (RFC 3339).
    #[param(format = DateTime, example = "2026-11-23T04:35:25.123Z")]
    since: Option<String>,
    /// Rows before this time (RFC 3339).
    #[param(format = DateTime, example = "2026-11-24T00:00:00Z")]
    until: Option<String>,
    /// Rows per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// Whether an audited attempt was carried out.
#[derive(Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResultName {
    Allowed,
    Denied,
}

impl AuditParams {
    /// The checked query: each parameter that breaks its rule is a 400 naming it.
    fn into_query(self) -> Result<AuditQuery, ApiError> {
        let bad = |name: &str, rule: &str| ApiError::invalid_query(format!("{name} {rule}"));
        let environment = self
            .environment
            .as_deref()
            .map(EnvName::new)
            .transpose()
            .map_err(|_| bad("environment", "is not an environment name"))?;
        let actor = match self.actor {
            Some(a) if a == "system" || ApiKeyId::new(&a).is_ok() => Some(a),
            Some(_) => return Err(bad("actor", "must be an API key id (ak_…) or system")),
            None => None,
        };
        let action = match self.action {
            Some(a)
                if !a.is_empty()
                    && a.chars().count() <= MAX_ACTION_CHARS
                    && !a.chars().any(char::is_control) =>
            {
                Some(a)
            }
            Some(_) => {
                return Err(bad(
                    "action",
                    &format!("must have 1 to {MAX_ACTION_CHARS} printable characters"),
                ));
            }
            None => None,
        };
        let subject = self
            .subject
            .as_deref()
            .map(SubjectPattern::new)
            .transpose()
            .map_err(|_| {
                bad(
                    "subject",
                    "is not a subject pattern (tokens separated by '.', '*' for one token, '>' last for the rest)",
                )
            })?;
        let time = |name: &str, raw: Option<String>| {
            raw.as_deref()
                .map(|t| parse_time(t).ok_or_else(|| bad(name, "is not an RFC 3339 time")))
                .transpose()
        };
        let since = time("since", self.since)?;
        let until = time("until", self.until)?;
        let after = self
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, |s| s.parse::<u64>()))
            .transpose()?;
        Ok(AuditQuery {
            environment,
            actor,
            action,
            subject,
            result: self.result.map(|r| match r {
                ResultName::Allowed => AuditResult::Allowed,
                ResultName::Denied => AuditResult::Denied,
            }),
            since,
            until,
            after,
        })
    }
}

/// An RFC 3339 time (any offset), to the millisecond.
fn parse_time(raw: &str) -> Option<Timestamp> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(raw, &Rfc3339).ok()?;
    let millis = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()?;
    Some(Timestamp::from_millis(millis))
}

/// `GET /v1/audit`: one page.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditPage)]
#[serde(rename_all = "camelCase")]
pub struct AuditPageJson {
    entries: Vec<AuditEntryJson>,
    /// Send it back as `cursor` for the next page; `null` on the last page. A page may hold
    /// fewer rows than `limit` (even none) and still have a next one.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// One audit row. Never a secret or config value: names, revisions and who did what.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditEntry)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryJson {
    /// Position in the log: 1, 2, 3 … with no gaps.
    seq: u64,
    #[schema(format = DateTime, example = "2026-11-23T04:35:25.123Z")]
    at: String,
    actor: AuditActorJson,
    /// `secret.created`, …; for a denial, its route (`PUT /v1/environments/{env}/secrets/{name}`,
    /// or `*` for the overflow row of a busy second).
    #[schema(example = "secret.created")]
    action: String,
    /// The event subject (`system.secret.DATABASE_URL.created`), or a denial's route.
    subject: String,
    #[schema(required = true)]
    environment: Option<String>,
    /// The resource's name or id.
    #[schema(required = true)]
    name: Option<String>,
    #[schema(required = true)]
    revision: Option<u64>,
    result: ResultName,
    /// A denial's HTTP status (401 or 403).
    #[schema(required = true)]
    status: Option<u16>,
    /// Attempts this row stands for (denials are coalesced), or values a rewrap batch
    /// replaced; 1 otherwise.
    count: u64,
    /// The peer address (`ip:port`).
    #[schema(required = true)]
    remote: Option<String>,
    #[schema(required = true)]
    user_agent: Option<String>,
    /// The id of the event this change published.
    #[schema(required = true)]
    event: Option<u64>,
    /// Audit-only rows' details, as the compact JSON text the hash covers: a
    /// `function.resolved` row's `{"run"?, "resolved": [names], "missing": [names]}` (names,
    /// never values). Absent from other rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(
        example = r#"{"run":"run_019ad0c1e2f30123456789abcdef","resolved":["STRIPE_KEY"],"missing":[]}"#
    )]
    detail: Option<String>,
    /// The previous row's `hash`.
    prev_hash: String,
    /// SHA-256 (hex) of `prevHash` and the row's canonical form.
    hash: String,
}

/// Who did it: an API key, or `system` (both fields `null` for a denied request whose key
/// was not recognised).
#[derive(Serialize, ToSchema)]
#[schema(as = AuditActor)]
#[serde(rename_all = "camelCase")]
pub struct AuditActorJson {
    #[schema(required = true, example = "ak_0123456789abcdef")]
    key_id: Option<String>,
    /// The key's name when the row was written.
    #[schema(required = true)]
    key_name: Option<String>,
}

impl From<&AuditRecord> for AuditEntryJson {
    fn from(r: &AuditRecord) -> Self {
        AuditEntryJson {
            seq: r.seq,
            at: Timestamp::from_millis(r.at).rfc3339(),
            actor: AuditActorJson {
                key_id: r.actor.key_id.clone(),
                key_name: r.actor.key_name.clone(),
            },
            action: r.action.clone(),
            subject: r.subject.clone(),
            environment: r.environment.clone(),
            name: r.name.clone(),
            revision: r.revision,
            result: match r.result {
                AuditResult::Allowed => ResultName::Allowed,
                AuditResult::Denied => ResultName::Denied,
            },
            status: r.status,
            count: r.count,
            remote: r.remote.clone(),
            user_agent: r.user_agent.clone(),
            event: r.event,
            detail: r.detail.clone(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

/// `GET /v1/audit/verify`.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditVerification)]
#[serde(rename_all = "camelCase")]
pub struct AuditVerifyJson {
    /// The chain is whole.
    ok: bool,
    /// Rows checked: all of them when `ok`, else up to the broken one.
    rows: u64,
    /// The last row's seq, as the head records it.
    head_seq: u64,
    /// The last row's hash, as the head records it.
    head_hash: String,
    #[schema(required = true)]
    first_broken: Option<BrokenRowJson>,
}

/// The first row where the chain breaks.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditBrokenRow)]
pub struct BrokenRowJson {
    /// The row (for `deleted`, the first missing seq).
    seq: u64,
    problem: ProblemName,
    message: String,
}

/// `edited`: the row's content does not match its hash; `deleted`: seqs skip; `reordered`:
/// the row does not chain from the one before; `truncated`: the end of the log does not
/// match the head.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProblemName {
    Edited,
    Deleted,
    Reordered,
    Truncated,
}

impl From<&ChainReport> for AuditVerifyJson {
    fn from(r: &ChainReport) -> Self {
        use coffer_core::ChainProblem as P;
        AuditVerifyJson {
            ok: r.ok(),
            rows: r.rows,
            head_seq: r.head_seq,
            head_hash: r.head_hash.clone(),
            first_broken: r.first_broken.as_ref().map(|b| BrokenRowJson {
                seq: b.seq,
                problem: match b.problem {
                    P::Edited => ProblemName::Edited,
                    P::Deleted => ProblemName::Deleted,
                    P::Reordered => ProblemName::Reordered,
                    P::Truncated => ProblemName::Truncated,
                },
                message: b.message.clone(),
            }),
        }
    }
}

/// Where the `Caller` extractor leaves the id of a key that authenticated, for the denial
/// middleware (a 403 names the key; nothing is looked up again).
#[derive(Clone, Default)]
pub struct AuthenticatedKey(Arc<OnceLock<ApiKeyId>>);

impl AuthenticatedKey {
    /// Notes the key a request authenticated with (if the middleware asked).
    pub fn note(parts: &axum::http::request::Parts, id: &ApiKeyId) {
        if let Some(slot) = parts.extensions.get::<AuthenticatedKey>() {
            let _ = slot.0.set(id.clone());
        }
    }
}

/// Middleware: every 401/403 answered on a matched route is reported to the denial
/// coalescer (unmatched routes are not audited). Costs a few cheap clones per request; the
/// work happens only for a denial.
pub async fn audit_denials(
    State(coffer): State<Arc<Coffer>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(route) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let slot = AuthenticatedKey::default();
    request.extensions_mut().insert(slot.clone());
    // Kept aside cheaply (reference-counted); turned into text only for a denial.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let peer = request
        .extensions()
        .get::<crate::extract::PeerAddr>()
        .copied();
    let agent = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .cloned();
    let response = next.run(request).await;
    let status = response.status();
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return response;
    }
    let origin = crate::extract::origin_of(peer, agent.as_ref());
    let key_id = if status == StatusCode::FORBIDDEN {
        slot.0.get().cloned()
    } else {
        None
    };
    coffer.record_denial(DeniedAttempt {
        key_id,
        route: format!("{method} {}", route.as_str()),
        environment: path_environment(route.as_str(), uri.path()),
        status: status.as_u16(),
        origin,
    });
    response
}

/// The `{env}` segment of `path` under `template`, when the route has one and it is a
/// valid environment name.
fn path_environment(template: &str, path: &str) -> Option<EnvName> {
    let at = template.split('/').position(|s| s == "{env}")?;
    let segment = path.split('/').nth(at)?;
    EnvName::new(segment).ok()
}

/// Writes the coalesced denials every [`coffer_core::DENIAL_WINDOW`] until dropped/aborted.
pub async fn flush_denials_periodically(coffer: Arc<Coffer>) {
    let mut tick = tokio::time::interval(coffer_core::DENIAL_WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A failed write is logged by the service; the next window starts afresh.
        let _ = coffer.flush_denials().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_comes_from_the_env_segment_of_the_route() {
        let t = "/v1/environments/{env}/secrets/{name}";
        assert_eq!(
            path_environment(t, "/v1/environments/prod/secrets/A")
                .unwrap()
                .as_str(),
            "prod"
        );
        assert!(path_environment(t, "/v1/environments/Bad%20Env/secrets/A").is_none());
        assert!(path_environment("/v1/api-keys/{id}", "/v1/api-keys/ak_1").is_none());
    }

    #[test]
    fn times_parse_as_rfc3339_with_any_offset() {
        assert_eq!(
            parse_time("1970-01-01T00:00:01.5Z").unwrap(),
            Timestamp::from_millis(1500)
        );
        assert_eq!(
            parse_time("1970-01-01T01:00:00+01:00").unwrap(),
            Timestamp::from_millis(0)
        );
        for bad in ["", "yesterday", "1970-01-01", "1970-01-01T00:00:00"] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }
}
