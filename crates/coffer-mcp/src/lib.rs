//! Coffer's MCP server: the management tools an assistant may use (secrets, functions,
//! orchestrations), each one call to the HTTP API (`/v1`) with the caller's API key.
//!
//! The tools ([`CofferTools`]) know nothing of how a call reaches the API: a [`Backend`]
//! carries it. `coffer mcp` (stdio) uses [`HttpBackend`], a client of a Coffer server;
//! `POST /mcp` on the server uses [`RouterBackend`], which hands the request to the API's
//! own router in-process with the `Authorization` of the HTTP request that carried the MCP
//! message. Either way every tool call goes through the same routes, authentication,
//! authorization, audit and masking as REST, and its result is the API's JSON unchanged.
//!
//! Architecture invariant: this crate holds no state of its own and never sees a value the
//! API would not show: a secret's value travels one way (into `set_secret`'s request body, a
//! [`SecretString`](secrecy::SecretString) until then) and no tool result contains one.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod tools;

pub use backend::{
    ApiRequest, ApiResponse, Backend, Caller, HttpBackend, JsonBody, RouterBackend, Unavailable,
};
pub use tools::CofferTools;

use std::sync::Arc;

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

/// The service [`streamable_http`] builds.
pub type HttpService<B> = StreamableHttpService<CofferTools<B>, NeverSessionManager>;

/// The MCP endpoint as an HTTP service: streamable HTTP, stateless (no session is kept
/// between requests, so nothing grows with the number of clients) and answering plain JSON.
/// Bodies over `max_body_bytes` are refused with 413.
///
/// The caller authenticates every request before it reaches this service; `Host` is not
/// checked here because a DNS-rebinding page cannot present the API key every request needs.
pub fn streamable_http<B: Backend>(backend: Arc<B>, max_body_bytes: usize) -> HttpService<B> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_sse_retry(None)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(max_body_bytes);
    StreamableHttpService::new(
        move || Ok(CofferTools::new(backend.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// Serves the tools on stdin/stdout until the client closes stdin. Nothing else may write
/// to stdout meanwhile: it is the protocol's channel.
pub async fn serve_stdio<B: Backend>(backend: Arc<B>) -> Result<(), std::io::Error> {
    let running = CofferTools::new(backend)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}
