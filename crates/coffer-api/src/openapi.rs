//! The OpenAPI 3.1 document's frame: its info, the bearer security scheme, and the error
//! responses that routes share. Each operation comes from its handler's `#[utoipa::path]`
//! in `routes.rs`, gathered by the router in `lib.rs` as the handler is registered.
//!
//! The error responses are types only the document uses; each names the codes it can carry
//! (`docs/API.md` lists every code) and points at the one error body, [`ErrorBody`].

#![allow(dead_code)] // the response types below are never built: they only describe

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::error::ErrorBody;

/// The security scheme every authenticated operation names (as `security(("bearer" = []))`).
pub const BEARER: &str = "bearer";

/// The document before any operation is added.
pub fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Coffer",
        description = "Secrets per environment. Management routes return metadata only; \
                       a secret value is write-only. Errors are always \
                       `{\"error\": {\"code\", \"message\"}}` with a stable code.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerScheme),
    tags(
        (name = "health", description = "Liveness, readiness, status, metrics and this document (no auth)"),
        (name = "environments", description = "Environments (admin; a manage key lists its own)"),
        (name = "api-keys", description = "API keys (admin)"),
        (name = "secrets", description = "Secret metadata and writes (admin, or manage of the environment)"),
        (name = "config", description = "Plaintext JSON config entries (admin, or manage of the environment)"),
        (name = "keys", description = "The encryption key lifecycle (admin)"),
        (name = "events", description = "The live event stream (admin, or manage of the environment)"),
        (name = "audit", description = "The hash-chained audit log (admin; a manage key reads its environment's rows)"),
        (name = "functions", description = "Functions: the secrets and config keys they declare, how their runs reach them (admin, or manage of the environment)"),
        (name = "runs", description = "Events and the runs they start (send: admin or manage; read: also runtime keys of the environment)"),
        (name = "mcp", description = "The MCP server over streamable HTTP: the tools of `coffer mcp`, each call made with the request's API key"),
        (name = "runtime", description = "Where values are handed over: poll, resolve, heartbeat, complete (runtime keys of the environment only; admin and manage keys get 403)"),
    )
)]
struct Base;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API key: `ck_<environment or \"admin\">_<48 hex digits>` (or the \
                 `COFFER_ADMIN_KEY` an installation was seeded with).",
            ))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// utoipa writes an optional body (`Option<T>`) as `oneOf: [null, T]`, which says a JSON
/// `null` is a valid body; the server refuses one (400). Optional means the body may be left
/// out (`required` stays unset), so its schema is `T` alone.
pub fn optional_bodies_may_be_absent(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    use utoipa::openapi::{RefOr, Required};
    let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let Some(body) = &mut operation.request_body else {
                continue;
            };
            if body.required == Some(Required::True) {
                continue;
            }
            for content in body.content.values_mut() {
                if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema
                    && let [only] = one_of
                        .items
                        .iter()
                        .filter(|s| !is_null(s))
                        .collect::<Vec<_>>()[..]
                {
                    content.schema = Some(only.clone());
                }
            }
        }
    }
}

/// `unauthorized`: no key, or a key that is unknown or revoked.
#[derive(IntoResponses)]
#[response(
    status = 401,
    headers(("WWW-Authenticate" = String, description = "`Bearer`"))
)]
pub struct Unauthorized(ErrorBody);

/// `forbidden`: the key's role or environment does not allow this.
#[derive(IntoResponses)]
#[response(status = 403)]
pub struct Forbidden(ErrorBody);

/// `invalid_query`: an unknown or malformed query parameter, or a bad cursor.
#[derive(IntoResponses)]
#[response(status = 400)]
pub struct InvalidQuery(ErrorBody);

/// `malformed_json`, `unknown_field`, `duplicate_field`, `invalid_body` (a missing field, a
/// field of the wrong type), `malformed_body` (broken framing) or `invalid_query`.
#[derive(IntoResponses)]
#[response(status = 400)]
pub struct BadBody(ErrorBody);

/// `body_timeout`: the body did not arrive in time.
#[derive(IntoResponses)]
#[response(status = 408)]
pub struct BodyTimeout(ErrorBody);

/// `body_too_large`: a body over 1 MiB.
#[derive(IntoResponses)]
#[response(status = 413)]
pub struct BodyTooLarge(ErrorBody);

/// `value_too_large` (a secret value over 65,536 bytes, or a config value over 65,536 bytes
/// of JSON) or `body_too_large` (a body over 1 MiB).
#[derive(IntoResponses)]
#[response(status = 413)]
pub struct ValueTooLarge(ErrorBody);

/// `unsupported_media_type`: a body without `Content-Type: application/json`.
#[derive(IntoResponses)]
#[response(status = 415)]
pub struct UnsupportedMediaType(ErrorBody);

/// `invalid_name`: a name in the path breaks its rule (or is not UTF-8).
#[derive(IntoResponses)]
#[response(status = 422)]
pub struct InvalidName(ErrorBody);

/// `invalid_name` (a name breaks its rule) or `invalid_value` (a field value breaks its
/// rule).
#[derive(IntoResponses)]
#[response(status = 422)]
pub struct InvalidInput(ErrorBody);

/// `route_not_found`: no dashboard asset of that name.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct AssetNotFound(ErrorBody);

/// `environment_not_found`.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct EnvironmentNotFound(ErrorBody);

/// `environment_not_found` or `secret_not_found`.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct SecretNotFound(ErrorBody);

/// `environment_not_found` or `config_not_found`.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct ConfigNotFound(ErrorBody);

/// `environment_not_found` or `function_not_found`.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct FunctionNotFound(ErrorBody);

/// `environment_not_found` or `run_not_found`.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct RunNotFound(ErrorBody);

/// `environment_not_found` or `orchestration_not_found`.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct OrchestrationNotFound(ErrorBody);

/// `environment_not_found` or `orchestration_run_not_found`.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct OrchestrationRunNotFound(ErrorBody);

/// `not_waiting`: the run is not waiting for an approval (any more).
#[derive(IntoResponses)]
#[response(status = 409)]
pub struct NotWaiting(ErrorBody);

/// `lease_lost`: the run is not running, or this attempt's lease expired and the run went
/// to another worker.
#[derive(IntoResponses)]
#[response(status = 409)]
pub struct LeaseLost(ErrorBody);

/// `api_key_not_found`.
#[derive(IntoResponses)]
#[response(status = 404)]
pub struct ApiKeyNotFound(ErrorBody);

/// `revision_conflict`: `expectedRevision` did not match; `currentRevision` says what it is.
#[derive(IntoResponses)]
#[response(status = 409)]
pub struct RevisionConflict(ErrorBody);

/// `environment_exists`.
#[derive(IntoResponses)]
#[response(status = 409)]
pub struct EnvironmentExists(ErrorBody);

/// `last_admin_key`: the only admin key cannot be revoked.
#[derive(IntoResponses)]
#[response(status = 409)]
pub struct LastAdminKey(ErrorBody);

/// `backend_unavailable` (storage does not answer) or `overloaded` (a queue or the body budget is
/// full; retry after `Retry-After` seconds).
#[derive(IntoResponses)]
#[response(
    status = 503,
    headers(("Retry-After" = u32, description = "With `overloaded`: seconds to wait"))
)]
pub struct Unavailable(ErrorBody);
