//! `coffer mcp`: the MCP server on stdio, a client of the Coffer server at `COFFER_ADDR`
//! with `COFFER_API_KEY` (or the key `coffer login` stored), never a local `admin.key`: an
//! assistant gets only the key it was given. Each tool call is one request to the API with
//! that key (docs/MCP.md).
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
    // Only a key given for this (COFFER_API_KEY, --api-key, `coffer login`): the data dir's
    // admin.key would give the assistant every environment. Without one: exit 4, stdout
    // untouched.
    let session = Session::open_for_runtime(global)?;
    let (http, base, key) = session.api.into_parts();
    let backend = HttpBackend::new(http, base, key);
    coffer_mcp::serve_stdio(Arc::new(backend))
        .await
        .context("the MCP session on stdio failed")
}

fn init_logging() {
    use tracing_subscriber::filter::{EnvFilter, filter_fn};
    use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};
    let filter = EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // rmcp logs whole messages (a set_secret's value among them) at debug level: never
    // below info, whatever COFFER_LOG asks. Not a directive of the EnvFilter, whose most
    // specific directive wins (`COFFER_LOG=rmcp::service=debug` would lift it), but a second
    // filter on the layer that every event must pass too.
    let quiet_rmcp = filter_fn(|meta| {
        !(meta.target().starts_with("rmcp") && *meta.level() > tracing::Level::INFO)
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_filter(filter)
        .with_filter(quiet_rmcp);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
