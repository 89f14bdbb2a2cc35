//! The push handler: the endpoint Coffer POSTs a push function's runs to. It verifies
//! `Coffer-Signature` before anything else, then runs the function's handler and answers
//! with its output.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use coffer_wire::Job;
use coffer_wire::signature::{self, SignatureError};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use secrecy::{ExposeSecret, SecretString};

use crate::function::{Context, FunctionDef, HandlerResult, Registered, Registry};

/// The largest request body read by default: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// An endpoint for push deliveries, as a [`tower::Service`] over `http::Request<B>` for any
/// body `B`: mount it in axum (`Router::new().route_service("/coffer", push)`), in hyper
/// (through `hyper_util::service::TowerToHyperService`), or call
/// [`PushHandler::respond`] from any other framework.
///
/// For each request it:
///
/// 1. answers **405** to anything but `POST`;
/// 2. reads the body, at most [`max_body_bytes`](PushHandler::max_body_bytes) (**413**
///    beyond);
/// 3. verifies `Coffer-Signature` with [`coffer_wire::signature::verify`]: HMAC-SHA256 of
///    `"{t}.{body}"` under any of the signing secrets it was given (several during a
///    rotation), compared in constant time, with `t` within the
///    [`tolerance`](PushHandler::tolerance) of this machine's clock (300 s by default).
///    A missing, malformed, stale or wrong signature is **401** and nothing runs;
/// 4. reads the job (**400** if it is not one) and finds the handler of its `functionId`
///    (**404** if none is registered here);
/// 5. runs the handler: **200** with its output as the JSON body — the run's output — or
///    **500** `{"error": {"code": "handler_failed", "message"}}`, which Coffer retries
///    with backoff while the function's retries last (a handler panic is a 500 too). A
///    [`HandlerError::permanent`](crate::HandlerError::permanent) is **422**.
///
/// Coffer treats every 4xx as final: the run fails without a retry. So a delivery refused
/// here for its signature (a secret rotated without this endpoint knowing the new one, a
/// clock more than the tolerance off) fails at once — keep the old secret listed until the
/// rotation's grace period ends. Error bodies are `{"error": {"code", "message"}}`, as
/// Coffer's own; the server stores the first 1,024 characters of a failed answer as the
/// run's error (redacted).
///
/// Delivery is at least once: a handler de-duplicates on
/// [`Context::run_id`](crate::Context::run_id).
#[derive(Clone)]
pub struct PushHandler {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    signing_secrets: Vec<SecretString>,
    tolerance: Duration,
    max_body: usize,
    functions: Registry,
}

impl PushHandler {
    /// A handler that accepts deliveries signed with any of `signing_secrets` (the
    /// `signingSecret` a function's registration or rotation answered with). With none,
    /// every delivery is refused.
    pub fn new<I, S>(signing_secrets: I) -> PushHandler
    where
        I: IntoIterator<Item = S>,
        S: Into<SecretString>,
    {
        PushHandler {
            inner: Arc::new(Inner {
                signing_secrets: signing_secrets.into_iter().map(Into::into).collect(),
                tolerance: Duration::from_secs(signature::DEFAULT_TOLERANCE_SECS),
                max_body: DEFAULT_MAX_BODY,
                functions: Registry::new(),
            }),
        }
    }

    /// Runs `handler` for deliveries of `def` (a second registration of the same id
    /// replaces the first). The handler reads only what `def` declares.
    pub fn function<F, Fut>(mut self, def: FunctionDef, handler: F) -> PushHandler
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let registered = Registered::new(def, handler);
        Arc::make_mut(&mut self.inner)
            .functions
            .insert(registered.def.id.clone(), registered);
        self
    }

    /// How far a delivery's timestamp may be from this machine's clock, either way
    /// (default 300 s). It bounds how long a captured delivery can be replayed.
    pub fn tolerance(mut self, tolerance: Duration) -> PushHandler {
        Arc::make_mut(&mut self.inner).tolerance = tolerance;
        self
    }

    /// The largest body read (default 1 MiB, as Coffer's own limit for request bodies).
    pub fn max_body_bytes(mut self, max: usize) -> PushHandler {
        Arc::make_mut(&mut self.inner).max_body = max;
        self
    }

    /// The answer to a POST whose `Coffer-Signature` header is `signature` and whose body
    /// is `body`: steps 3 to 5 above, for frameworks that hand over the body themselves
    /// (bound its size there: this method reads what it is given).
    pub async fn respond(&self, signature: Option<&str>, body: &[u8]) -> Response<Full<Bytes>> {
        self.respond_at(signature, body, unix_now()).await
    }

    async fn respond_at(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Response<Full<Bytes>> {
        let inner = &self.inner;
        let secrets: Vec<&[u8]> = inner
            .signing_secrets
            .iter()
            .map(|s| s.expose_secret().as_bytes())
            .collect();
        let verified = match signature {
            None => Err(SignatureError::Malformed),
            Some(header) => {
                signature::verify(header, &secrets, body, now, inner.tolerance.as_secs())
            }
        };
        if let Err(e) = verified {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                &e.to_string(),
            );
        }
        let job: Job = match serde_json::from_slice(body) {
            Ok(job) => job,
            // serde's message could quote a value of the body: say where, not what.
            Err(e) => {
                let message = format!(
                    "the body is not a Coffer job (line {}, column {})",
                    e.line(),
                    e.column()
                );
                return error(StatusCode::BAD_REQUEST, "invalid_body", &message);
            }
        };
        let Some(function) = inner.functions.get(&job.function_id) else {
            let message = format!("no handler for function {} here", job.function_id);
            return error(StatusCode::NOT_FOUND, "function_not_found", &message);
        };
        let Some(ctx) = Context::from_job(&function.def, job) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the job has no runId, attempt or event",
            );
        };
        match function.invoke(ctx).await {
            Ok(output) => match serde_json::to_vec(&output) {
                Ok(json) => json_response(StatusCode::OK, json),
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "handler_failed",
                    "the handler's output could not be encoded as JSON",
                ),
            },
            Err(e) if e.is_permanent() => error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "handler_failed",
                e.message(),
            ),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "handler_failed",
                e.message(),
            ),
        }
    }

    async fn serve<B>(self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if request.method() != Method::POST {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "deliveries are POSTed",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let (parts, body) = request.into_parts();
        // No signature, no reading: a request without one costs nothing.
        let Some(signature) = parts.headers.get(signature::HEADER) else {
            let e = SignatureError::Malformed;
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                &e.to_string(),
            );
        };
        let Ok(signature) = signature.to_str() else {
            let e = SignatureError::Malformed;
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                &e.to_string(),
            );
        };
        let body = match Limited::new(body, self.inner.max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                let message = format!("the body is over {} bytes", self.inner.max_body);
                return error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &message);
            }
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "malformed_body",
                    "the body could not be read",
                );
            }
        };
        self.respond(Some(signature), &body).await
    }
}

impl<B> tower::Service<Request<B>> for PushHandler
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.serve(request).await) })
    }
}

impl std::fmt::Debug for PushHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushHandler")
            .field("signing_secrets", &self.inner.signing_secrets.len())
            .field("tolerance", &self.inner.tolerance)
            .field("max_body", &self.inner.max_body)
            .field(
                "functions",
                &self.inner.functions.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    json_response(status, body.to_string().into_bytes())
}

fn json_response(status: StatusCode, json: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_clock_decides_what_is_stale() {
        let push = PushHandler::new(["cs_1"]).function(crate::function("f"), |_| async {
            Ok(serde_json::Value::Null)
        });
        let body = br#"{"runId":"run_1","functionId":"f","environment":"e","attempt":1,
            "event":{"name":"x","data":null},"secrets":{}}"#;
        let header = signature::sign(&[b"cs_1"], 1_000, body);
        let at = |now| push.respond_at(Some(&header), body, now);
        assert_eq!(at(1_300).await.status(), StatusCode::OK);
        assert_eq!(at(1_301).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(at(699).await.status(), StatusCode::UNAUTHORIZED);
    }
}
