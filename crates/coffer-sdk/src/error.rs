//! One error type for every call: what the server refused, or why it could not be asked.

use std::time::Duration;

use http::StatusCode;

/// Why a call to Coffer failed.
///
/// No variant ever holds a secret value: the server's messages never contain one, and an
/// answer the SDK cannot decode is described by its position, never quoted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with its error body, `{"error": {"code", "message", …}}`.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server (or something in front of it) answered with an error status but without
    /// Coffer's error body: a proxy, a load balancer, or not a Coffer server at all.
    #[error("the server answered HTTP {status} without an error body")]
    Status {
        /// The HTTP status.
        status: StatusCode,
    },
    /// A success answer whose body is not the shape this call expects.
    #[error("the server's answer (HTTP {status}) could not be read: {detail}")]
    Decode {
        /// The HTTP status.
        status: StatusCode,
        /// What did not fit, by category and position (never the body's content).
        detail: String,
    },
    /// The request did not complete: no connection, a timeout, a broken answer.
    #[error("the request to Coffer failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// The SDK was used in a way that cannot work (an address that is not an `http(s)` URL,
    /// a worker with no function). Nothing was sent.
    #[error("{0}")]
    Usage(String),
}

/// An error answer in Coffer's shape (see `docs/API.md`, "Error codes").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message} (HTTP {status})")]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status: 401 no or bad key, 403 the key may not do this, 404 not found, 409
    /// conflict, 400/413/422 bad input, 503 overloaded or storage unavailable.
    pub status: StatusCode,
    /// The stable code, e.g. `revision_conflict`, `lease_lost`, `secret_not_found`.
    pub code: String,
    /// Human text; never a value.
    pub message: String,
    /// On `revision_conflict`: the revision the resource has now (`0`: it does not exist).
    pub current_revision: Option<u64>,
    /// On a 503: how long the server asks the client to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Error {
    /// The HTTP status of an error answer; `None` when no answer came.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api(e) => Some(e.status),
            Error::Status { status } | Error::Decode { status, .. } => Some(*status),
            Error::Transport(e) => e.status(),
            Error::Usage(_) => None,
        }
    }

    /// The server's stable error code, when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api(e) => Some(&e.code),
            _ => None,
        }
    }

    /// On a revision conflict (409 `revision_conflict`): the current revision.
    pub fn current_revision(&self) -> Option<u64> {
        match self {
            Error::Api(e) => e.current_revision,
            _ => None,
        }
    }

    /// 404, whatever was not found.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// 409, a revision conflict or a lost lease.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(StatusCode::CONFLICT)
    }

    /// Whether the same request may succeed later unchanged: no answer, a timeout, a 5xx
    /// (503 `overloaded` and `backend_unavailable` included), 408 or 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Usage(_) | Error::Decode { .. } => false,
            Error::Api(_) | Error::Status { .. } => self.status().is_some_and(|s| {
                s.is_server_error()
                    || s == StatusCode::REQUEST_TIMEOUT
                    || s == StatusCode::TOO_MANY_REQUESTS
            }),
        }
    }
}

/// The error of an answer with `status` and `body`: Coffer's error shape, or
/// [`Error::Status`] when the body is something else.
pub(crate) fn from_answer(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Error {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Body,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        current_revision: Option<u64>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => Error::Api(ApiError {
            status,
            code: error.code,
            message: error.message,
            current_revision: error.current_revision,
            retry_after,
        }),
        Err(_) => Error::Status { status },
    }
}

/// A decoding failure described without quoting the input: serde's own messages for a
/// wrong type quote the offending value, which could be a secret.
pub(crate) fn decode_error(status: StatusCode, e: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "an I/O error",
        Category::Syntax => "not valid JSON",
        Category::Data => "not the expected shape",
        Category::Eof => "cut short",
    };
    Error::Decode {
        status,
        detail: format!("{what} (line {}, column {})", e.line(), e.column()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_answer_carries_its_code_message_and_current_revision() {
        let body =
            br#"{"error":{"code":"revision_conflict","message":"at 3","currentRevision":3}}"#;
        let e = from_answer(StatusCode::CONFLICT, body, None);
        assert_eq!(e.code(), Some("revision_conflict"));
        assert_eq!(e.current_revision(), Some(3));
        assert!(e.is_conflict() && !e.is_retryable());
        assert_eq!(e.to_string(), "revision_conflict: at 3 (HTTP 409 Conflict)");
    }

    #[test]
    fn an_error_answer_without_coffers_body_keeps_its_status() {
        let e = from_answer(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>", None);
        assert!(matches!(e, Error::Status { .. }));
        assert_eq!(e.status(), Some(StatusCode::BAD_GATEWAY));
        assert!(e.is_retryable());
    }

    #[test]
    fn a_decoding_error_never_quotes_the_answer() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Shape {
            n: u64,
        }
        let e = serde_json::from_slice::<Shape>(br#"{"n": "hunter2-secret"}"#).unwrap_err();
        assert!(e.to_string().contains("hunter2-secret"), "serde quotes it");
        let e = decode_error(StatusCode::OK, &e);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
    }
}
