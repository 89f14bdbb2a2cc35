//! `POST /mcp`: the MCP server over streamable HTTP, the tools of `coffer mcp`.
//!
//! Each tool call is a request to the API's own router (in-process, [`RouterBackend`]) with
//! the `Authorization` of the `POST /mcp` that carried it, so it meets the same routes,
//! authorization, audit and masking as REST. That router is the one [`Endpoint`] is built
//! from, before the endpoint is attached: there the handler finds no endpoint and answers
//! 404, so `/mcp` cannot be reached from inside itself.
//!
//! Stateless: no MCP session outlives its request, so nothing grows with the number of
//! clients. Every request needs a valid API key before the MCP layer sees it.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use coffer_mcp::RouterBackend;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Caller, JsonBody, MAX_BODY_BYTES, NoQuery, PeerAddr, QueryParams};
use crate::openapi::*;

/// The MCP service, shared by every request of one server.
#[derive(Clone)]
pub struct Endpoint(Arc<coffer_mcp::HttpService<RouterBackend>>);

impl Endpoint {
    /// The endpoint whose tools call `api` (which must not carry this endpoint).
    pub fn new(api: Router) -> Self {
        let backend = RouterBackend::new(api, carry_peer);
        Endpoint(Arc::new(coffer_mcp::streamable_http(
            Arc::new(backend),
            MAX_BODY_BYTES,
        )))
    }
}

/// MCP (JSON-RPC 2.0) over streamable HTTP: `initialize`, `tools/list`, `tools/call`.
///
/// The tools are those of `coffer mcp` (docs/MCP.md); each call is made with this request's
/// API key. Stateless: no `Mcp-Session-Id`; answers are `application/json`.
#[utoipa::path(post, path = "/mcp", tag = "mcp",
    security(("bearer" = [])),
    request_body(content = Object, description = "A JSON-RPC message", content_type = "application/json"),
    responses(
        (status = 200, description = "The JSON-RPC answer", body = Object, content_type = "application/json"),
        (status = 202, description = "A notification or response, accepted"),
        Unauthorized, BadBody, BodyTimeout, BodyTooLarge, UnsupportedMediaType, Unavailable,
        (status = 404, description = "`route_not_found`", body = ErrorBody),
        (status = 406, description = "`not_acceptable`: the client must accept `application/json` and `text/event-stream`", body = ErrorBody),
    ))]
pub async fn mcp(
    Caller(_who): Caller,
    _: QueryParams<NoQuery>,
    endpoint: Option<Extension<Endpoint>>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(Extension(Endpoint(service))) = endpoint else {
        return Err(ApiError::route_not_found());
    };
    let (mut parts, body) = request.into_parts();
    // Read within the API's limits (size, time, the server's body budget), held until the
    // answer is ready.
    let (bytes, _held) = JsonBody::of(&parts, body).bytes().await?;
    if let Some(key) = parts.headers.get_mut(header::AUTHORIZATION) {
        key.set_sensitive(true); // never in a Debug of the request the tools may log
    }
    let request = Request::from_parts(parts, axum::body::Body::from(bytes.to_vec()));
    drop(bytes);
    let response = service.handle(request).await.map(axum::body::Body::new);
    Ok(json_errors(response))
}

/// The MCP transport's own refusals (plain text) as the API's JSON error body; JSON-RPC
/// answers (`application/json`) and successes pass unchanged.
fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.is_success() || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_ACCEPTABLE => (
            "not_acceptable",
            "send Accept: application/json, text/event-stream",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the MCP message is too large"),
        s if s.is_client_error() => ("invalid_body", "the body is not an MCP message"),
        _ => ("internal", "internal error"),
    };
    let mut answer = ApiError::new(status, code, message).into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        answer.headers_mut().insert(header::ALLOW, allow.clone());
    }
    answer
}

/// What the API reads from a request's extensions: the peer address, for the audit log.
fn carry_peer(from: &axum::http::Extensions, to: &mut axum::http::Extensions) {
    if let Some(peer) = from.get::<PeerAddr>() {
        to.insert(*peer);
    }
}
