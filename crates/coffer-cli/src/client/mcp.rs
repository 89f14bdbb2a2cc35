//! `coffer mcp`: the MCP server on stdio, a client of the Coffer server at `COFFER_ADDR`
//! with `COFFER_API_KEY` (or the key `coffer login` stored). Each tool call is one request
//! to the API with that key (docs/MCP.md).
//!
//! stdout is the protocol's channel: nothing else is ever printed there. Logs go to stderr
//! (`COFFER_LOG`, default `warn`).

use std::sync::Arc;

use anyhow::{Context, Result};
use coffer_mcp::HttpBackend;

use super::{GlobalArgs, Session};

/// Serves the tools on stdin/stdout until the client closes stdin.
pub async fn mcp(global: GlobalArgs) -> Result<()> {
    init_logging();
    let session = Session::open(global)?;
    let (http, base, key) = session.api.into_parts();
    let backend = HttpBackend::new(http, base, key);
    coffer_mcp::serve_stdio(Arc::new(backend))
        .await
        .context("the MCP session on stdio failed")
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // rmcp logs whole messages (a set_secret's value among them) at debug level: never
    // below info, whatever COFFER_LOG asks.
    let filter = filter.add_directive("rmcp=info".parse().expect("a constant, valid directive"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
