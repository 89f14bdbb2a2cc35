//! One error type for every response: a status, a stable code, a message that never holds
//! a value.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coffer_core::{CoreError, NameError};
use coffer_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error response: `{"error": {"code", "message", ...}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    current_revision: Option<u64>,
    retry_after: Option<u32>,
}

impl ApiError {
    /// An error with `status`, stable `code` and a human `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            current_revision: None,
            retry_after: None,
        }
    }

    /// The stable code (tests).
    #[cfg(test)]
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// 503 `overloaded`: a bounded queue or budget (`what`) is full; retry in a second.
    pub(crate) fn overloaded(what: &str) -> Self {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("the server is busy ({what}); retry shortly"),
        );
        e.retry_after = Some(1);
        e
    }

    /// 408 `body_timeout`: the body did not arrive in time.
    pub(crate) fn body_timeout(limit: std::time::Duration) -> Self {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} ms",
                limit.as_millis()
            ),
        )
    }

    /// 400 `malformed_body`: the body's framing broke (bad chunk, early end).
    pub(crate) fn malformed_body() -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "the request body is malformed (bad chunked encoding or an early end)",
        )
    }

    /// 400 for a body that is not JSON, has unknown fields or fields of the wrong type.
    pub(crate) fn from_json(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let (line, column) = (e.line(), e.column());
        match e.classify() {
            Category::Data => {
                let text = e.to_string();
                // serde names fields in backticks; its messages for wrong *types* quote the
                // input instead, which could be a value, so only field errors are echoed.
                let kind = ["duplicate field", "unknown field", "missing field"]
                    .into_iter()
                    .find(|k| text.starts_with(k));
                if let Some(kind) = kind {
                    let code = match kind {
                        "duplicate field" => "duplicate_field",
                        "unknown field" => "unknown_field",
                        _ => "invalid_body",
                    };
                    ApiError::new(StatusCode::BAD_REQUEST, code, field_message(kind, &text))
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_body",
                        format!("a field has the wrong type (line {line}, column {column})"),
                    )
                }
            }
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON (line {line}, column {column})"),
            ),
        }
    }

    pub(crate) fn invalid_query(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }

    pub(crate) fn route_not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
    }

    pub(crate) fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    }
}

/// `unknown field `x``, naming the field only when it is short visible ASCII: the name comes
/// from the client, and an error answer never echoes more than a bounded, printable label.
fn field_message(kind: &str, serde: &str) -> String {
    let field = serde
        .split('`')
        .nth(1)
        .filter(|f| !f.is_empty() && f.len() <= 64 && f.chars().all(|c| c.is_ascii_graphic()));
    match field {
        Some(f) => format!("{kind} `{f}`"),
        None => kind.to_owned(),
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            e.to_string(),
        )
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let (status, code) = match &e {
            CoreError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthorized"),
            CoreError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            CoreError::EnvironmentNotFound(_) => (StatusCode::NOT_FOUND, "environment_not_found"),
            CoreError::SecretNotFound { .. } => (StatusCode::NOT_FOUND, "secret_not_found"),
            CoreError::ConfigNotFound { .. } => (StatusCode::NOT_FOUND, "config_not_found"),
            CoreError::ApiKeyNotFound(_) => (StatusCode::NOT_FOUND, "api_key_not_found"),
            CoreError::FunctionNotFound { .. } => (StatusCode::NOT_FOUND, "function_not_found"),
            CoreError::RunNotFound { .. } => (StatusCode::NOT_FOUND, "run_not_found"),
            CoreError::OrchestrationNotFound { .. } => {
                (StatusCode::NOT_FOUND, "orchestration_not_found")
            }
            CoreError::OrchestrationRunNotFound { .. } => {
                (StatusCode::NOT_FOUND, "orchestration_run_not_found")
            }
            CoreError::NotWaiting(_) => (StatusCode::CONFLICT, "not_waiting"),
            CoreError::LeaseLost => (StatusCode::CONFLICT, "lease_lost"),
            CoreError::EnvironmentExists(_) => (StatusCode::CONFLICT, "environment_exists"),
            CoreError::RevisionConflict { current } => {
                let mut err =
                    ApiError::new(StatusCode::CONFLICT, "revision_conflict", e.to_string());
                err.current_revision = Some(*current);
                return err;
            }
            CoreError::LastAdminKey => (StatusCode::CONFLICT, "last_admin_key"),
            CoreError::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
            CoreError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value"),
            CoreError::Unreadable { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "secret_unreadable")
            }
            CoreError::Store(StoreError::Overloaded) => return ApiError::overloaded("write queue"),
            // What the configured secrets backend declares it cannot do safely (a rewrap on
            // Vault KV v1): the request is refused and nothing changed.
            CoreError::Store(StoreError::Unsupported(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value")
            }
            CoreError::Busy(what) => return ApiError::overloaded(what),
            CoreError::NotReady(which) => {
                tracing::warn!(store = %which, "not ready");
                let which = which.split(':').next().unwrap_or("storage");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backend_unavailable",
                    format!("{which} is unavailable"),
                );
            }
            CoreError::Store(StoreError::Unavailable(_)) => {
                tracing::error!(error = %e, "storage unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backend_unavailable",
                    "storage is unavailable",
                );
            }
            CoreError::Crypto | CoreError::Store(_) => {
                tracing::error!(error = %e, "internal error");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                );
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

// Fields in alphabetical order: as `json!` (a sorted map) wrote them before this type existed.
/// What went wrong.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail {
    /// A stable code (`docs/API.md` lists them).
    #[schema(example = "secret_not_found")]
    code: &'static str,
    /// With `revision_conflict` only: the secret's revision now (0: it does not exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    current_revision: Option<u64>,
    /// Human text; never contains a secret value.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                current_revision: self.current_revision,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: say which scheme would be accepted.
            let challenge = axum::http::HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_field_errors_echo_only_a_short_printable_field_name() {
        let msg = |json: &str| {
            #[derive(serde::Deserialize, Debug)]
            #[serde(deny_unknown_fields)]
            #[allow(dead_code)]
            struct One {
                a: u8,
            }
            let e = serde_json::from_str::<One>(json).unwrap_err();
            ApiError::from_json(&e).message
        };
        assert_eq!(msg(r#"{"bogus": 1}"#), "unknown field `bogus`");
        let long = format!(r#"{{"{}": 1}}"#, "x".repeat(500));
        assert_eq!(msg(&long), "unknown field");
        assert_eq!(msg(r#"{"a\u0007b": 1}"#), "unknown field");
        assert_eq!(msg(r#"{"a": 1, "a": 2}"#), "duplicate field `a`");
        assert_eq!(msg("{}"), "missing field `a`");
    }

    #[tokio::test]
    async fn the_error_body_keeps_its_bytes() {
        let mut conflict = ApiError::new(StatusCode::CONFLICT, "revision_conflict", "m");
        conflict.current_revision = Some(3);
        for (err, expected) in [
            (
                ApiError::route_not_found(),
                r#"{"error":{"code":"route_not_found","message":"no such route"}}"#,
            ),
            (
                conflict,
                r#"{"error":{"code":"revision_conflict","currentRevision":3,"message":"m"}}"#,
            ),
        ] {
            let body = axum::body::to_bytes(err.into_response().into_body(), 1024)
                .await
                .unwrap();
            assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
        }
    }
}
