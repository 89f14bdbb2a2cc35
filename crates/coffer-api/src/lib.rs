//! Coffer's HTTP API (`/v1`): the router, its JSON shapes and its one error type.
//!
//! This is the only layer that knows about HTTP and JSON. Handlers authenticate, parse path
//! names into checked types, authorize, and only then parse the body; every change goes
//! through [`coffer_core::Coffer::apply`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
mod conn;
mod error;
mod events;
mod extract;
mod mcp;
mod openapi;
mod orchestrations;
mod routes;
mod runtime;
mod shapes;
mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use coffer_core::Coffer;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use events::{MAX_STREAMS_PER_KEY, StreamOptions};
pub use extract::MAX_BODY_BYTES;

/// The whole HTTP surface, with the default body limits.
pub fn app(coffer: Arc<Coffer>) -> Router {
    app_with(coffer, &ServeOptions::DEFAULT)
}

/// The whole HTTP surface, reading bodies as `options` says.
pub fn app_with(coffer: Arc<Coffer>, options: &ServeOptions) -> Router {
    app_streaming(coffer, options, events::Streams::new(options.events))
}

/// [`app_with`], its event streams governed by `streams` (which [`serve_with`] closes at
/// shutdown).
fn app_streaming(coffer: Arc<Coffer>, options: &ServeOptions, streams: events::Streams) -> Router {
    let limits = extract::BodyLimits::new(options.body_read_timeout, options.body_budget_bytes);
    let (router, _document) = documented_routes().split_for_parts();
    let api = router
        .fallback(|| async { ApiError::route_not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(
            coffer.clone(),
            audit::audit_denials,
        ))
        .layer(axum::Extension(limits))
        .layer(axum::Extension(streams))
        .with_state(coffer);
    // `POST /mcp`'s tools call `api` itself, which has no endpoint: see `mcp`.
    let endpoint = mcp::Endpoint::new(api.clone());
    api.layer(axum::Extension(endpoint))
}

/// The OpenAPI 3.1 document of every route, as `GET /v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = documented_routes().into_openapi();
    openapi::optional_bodies_may_be_absent(&mut document);
    document
}

/// Every route, each registered together with its handler's `#[utoipa::path]` operation:
/// `routes!` takes the method and path from that annotation, so a route cannot be served
/// without being in the document, nor documented under another path. This is the only place
/// routes are added (`tests/api/openapi.rs` fails on a `.route(` anywhere in this crate).
/// The handlers given to one `routes!` share a path.
fn documented_routes() -> OpenApiRouter<Arc<Coffer>> {
    use routes::*;
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(status))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(key_status))
        .routes(routes!(rewrap))
        .routes(routes!(verify))
        .routes(routes!(whoami))
        .routes(routes!(list_environments, create_environment))
        .routes(routes!(delete_environment))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(list_secrets, import_secrets))
        .routes(routes!(get_secret, put_secret, delete_secret))
        .routes(routes!(list_config))
        .routes(routes!(get_config, put_config, delete_config))
        .routes(routes!(runtime::list_functions))
        .routes(routes!(
            runtime::get_function,
            runtime::put_function,
            runtime::delete_function
        ))
        .routes(routes!(runtime::rotate_signing_secret))
        .routes(routes!(runtime::resolve))
        .routes(routes!(runtime::send_event))
        .routes(routes!(runtime::list_runs))
        .routes(routes!(runtime::get_run))
        .routes(routes!(runtime::complete_run))
        .routes(routes!(runtime::heartbeat_run))
        .routes(routes!(runtime::poll))
        .routes(routes!(
            orchestrations::list_orchestrations,
            orchestrations::create_orchestration
        ))
        .routes(routes!(
            orchestrations::get_orchestration,
            orchestrations::update_orchestration,
            orchestrations::delete_orchestration
        ))
        .routes(routes!(orchestrations::start_orchestration_run))
        .routes(routes!(orchestrations::list_orchestration_runs))
        .routes(routes!(orchestrations::get_orchestration_run))
        .routes(routes!(orchestrations::approve_orchestration_run))
        .routes(routes!(orchestrations::reject_orchestration_run))
        .routes(routes!(events::event_stream))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(mcp::mcp))
        .routes(routes!(ui::index))
        .routes(routes!(ui::index_slash))
        .routes(routes!(ui::asset))
}

/// Accept errors that concern one connection, not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

/// How connections are handled; [`ServeOptions::DEFAULT`] is what `coffer serve` uses.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Open connections at most. A connection beyond it is answered `503 overloaded` (JSON,
    /// `Retry-After: 1`) and closed; the ones already open are served as usual.
    pub max_connections: usize,
    /// Open connections from one client address at most (`None`: only `max_connections`).
    /// Past it, that address's next connection is refused like one over the cap, so one
    /// client cannot take every place. Behind a proxy every client shares its address.
    pub max_connections_per_ip: Option<usize>,
    /// A request body must arrive completely within this long once its handler reads it
    /// (after authentication and authorization), else `408 body_timeout`.
    pub body_read_timeout: Duration,
    /// Bytes of request bodies held in memory at once across all requests; a body that
    /// would go past it is refused with `503 overloaded`.
    pub body_budget_bytes: usize,
    /// A connection that has not sent a complete request head within this long is closed,
    /// so idle or trickling clients cannot pile up connections. It is also how long an idle
    /// kept-alive connection stays open between requests.
    pub header_read_timeout: Duration,
    /// A connection whose answers have waited this long in all for the client to read them
    /// is closed (a client that never reads would otherwise hold its place under
    /// `max_connections` forever).
    pub write_stall_timeout: Duration,
    /// After shutdown begins, in-flight requests get this long to finish (event streams
    /// end as soon as it begins).
    pub drain_timeout: Duration,
    /// Event streams (`GET /v1/events/stream`): their cap, heartbeat and polling.
    pub events: StreamOptions,
}

impl ServeOptions {
    /// What `coffer serve` uses unless told otherwise.
    pub const DEFAULT: ServeOptions = ServeOptions {
        max_connections: 4096,
        max_connections_per_ip: None,
        body_read_timeout: Duration::from_secs(10),
        body_budget_bytes: 64 * 1024 * 1024,
        header_read_timeout: Duration::from_secs(10),
        write_stall_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(30),
        events: StreamOptions::DEFAULT,
    };
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions::DEFAULT
    }
}

/// Connections over the cap that are being answered at once; past this they are closed
/// without an answer (each answer holds a socket for up to a second). A caller fitting
/// `max_connections` to a file-descriptor limit must leave room for these.
pub const MAX_REFUSING: usize = 256;

/// Serves [`app`] on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    coffer: Arc<Coffer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, coffer, shutdown, ServeOptions::default()).await
}

/// [`serve`] with explicit [`ServeOptions`].
pub async fn serve_with(
    listener: TcpListener,
    coffer: Arc<Coffer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let streams = events::Streams::new(options.events);
    let app = app_streaming(coffer.clone(), &options, streams.clone());
    // Denied attempts reach the audit log once a second, and once more after the drain.
    let denials = tokio::spawn(audit::flush_denials_periodically(coffer.clone()));
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let peers = Arc::new(conn::PeerCounts::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let graceful = GracefulShutdown::new();
    // Every connection task, so the ones still running after the drain can be stopped
    // before this returns (nothing may write after the caller has shut down).
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {} // reap finished ones
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_connection_error(&e) => continue, // that client's problem only
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning
                    // (briefly: connections that end free descriptors within moments).
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        // Small JSON responses on kept-alive connections: don't let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        let places = (
            peers.try_take(peer.ip(), options.max_connections_per_ip),
            slots.clone().try_acquire_owned(),
        );
        let (Some(peer_slot), Ok(slot)) = places else {
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                connections.spawn(async move {
                    conn::refuse_over_capacity(tcp).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let service = {
            use tower::ServiceExt;
            let app = app.clone();
            TowerToHyperService::new(tower::service_fn(
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(extract::PeerAddr(peer));
                    app.clone().oneshot(request)
                },
            ))
        };
        let clock = std::sync::Arc::new(conn::StallClock::new());
        let io = TokioIo::new(conn::JsonErrors::new(tcp, clock.clone()));
        let connection = graceful.watch(http.serve_connection(io, service));
        let stall = options.write_stall_timeout;
        connections.spawn(async move {
            tokio::select! {
                done = connection => if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                // Dropping the connection closes it.
                () = clock.stalled(stall) => {
                    tracing::debug!("closed a connection whose client stopped reading");
                }
            }
            drop((slot, peer_slot));
        });
    }
    drop(listener);
    // A stream never finishes by itself: end them so the drain does not wait them out.
    streams.close();
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests did not finish within {:?}; closing",
            options.drain_timeout
        );
    }
    connections.shutdown().await;
    denials.abort();
    let _ = coffer.flush_denials().await;
    Ok(())
}
