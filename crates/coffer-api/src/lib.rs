//! Coffer's HTTP API (`/v1`): the router, its JSON shapes and its one error type.
//!
//! This is the only layer that knows about HTTP and JSON. Handlers authenticate, parse path
//! names into checked types, authorize, and only then parse the body; every change goes
//! through [`coffer_core::Coffer::apply`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod extract;
mod routes;
mod shapes;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get};
use coffer_core::Coffer;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use extract::MAX_BODY_BYTES;

/// The whole HTTP surface.
pub fn app(coffer: Arc<Coffer>) -> Router {
    use routes::*;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/keys", get(key_status))
        .route("/v1/keys/rewrap", axum::routing::post(rewrap))
        .route(
            "/v1/environments",
            get(list_environments).post(create_environment),
        )
        .route("/v1/environments/{env}", delete(delete_environment))
        .route("/v1/api-keys", get(list_api_keys).post(create_api_key))
        .route("/v1/api-keys/{id}", delete(revoke_api_key))
        .route("/v1/environments/{env}/secrets", get(list_secrets))
        .route(
            "/v1/environments/{env}/secrets/{name}",
            get(get_secret).put(put_secret).delete(delete_secret),
        )
        .fallback(|| async { ApiError::route_not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(coffer)
}

/// Serves [`app`] on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    coffer: Arc<Coffer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        // Small JSON responses on kept-alive connections: don't let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app(coffer))
        .with_graceful_shutdown(shutdown)
        .await
}
