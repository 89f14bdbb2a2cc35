//! `GET /ui`: the dashboard's embedded assets (`coffer-ui`), each answered with its ETag,
//! gzipped when the client accepts it, and with the dashboard's security headers
//! (`coffer_ui::HEADERS`: a strict Content-Security-Policy, `nosniff`, `no-referrer`, no
//! framing). No authentication: the assets hold no data; the page calls `/v1` with the key
//! its user signs in with.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_ui::Asset;

use crate::error::ApiError;
use crate::extract::{NoQuery, PathParams, QueryParams};
use crate::openapi::*;

/// The dashboard's page.
#[utoipa::path(get, path = "/ui", tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard", content_type = "text/html"),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        InvalidQuery,
    ))]
pub async fn index(headers: HeaderMap, _: QueryParams<NoQuery>) -> Result<Response, ApiError> {
    answer(coffer_ui::INDEX, &headers)
}

/// The dashboard's page (`/ui/` as `/ui`).
#[utoipa::path(get, path = "/ui/", tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard", content_type = "text/html"),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        InvalidQuery,
    ))]
pub async fn index_slash(
    headers: HeaderMap,
    _: QueryParams<NoQuery>,
) -> Result<Response, ApiError> {
    answer(coffer_ui::INDEX, &headers)
}

/// The name of a dashboard asset.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AssetPath {
    /// A file of the dashboard, e.g. `app.js`.
    #[param(example = "app.js")]
    asset: String,
}

/// One of the dashboard's scripts, styles or images.
#[utoipa::path(get, path = "/ui/{asset}", tag = "dashboard",
    params(AssetPath),
    responses(
        (status = 200, description = "The asset", content_type = "text/javascript"),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        InvalidQuery, AssetNotFound,
    ))]
pub async fn asset(
    PathParams(AssetPath { asset }): PathParams<AssetPath>,
    headers: HeaderMap,
    _: QueryParams<NoQuery>,
) -> Result<Response, ApiError> {
    answer(&asset, &headers)
}

fn answer(name: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let asset = coffer_ui::asset(name).ok_or_else(ApiError::route_not_found)?;
    let gzip = accepts_gzip(headers);
    let etag = if gzip { asset.etag_gzip } else { asset.etag };
    let mut response = if not_modified(asset, headers) {
        StatusCode::NOT_MODIFIED.into_response()
    } else if gzip {
        let mut r = asset.gzip.into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        asset.body.into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.media_type),
    );
    h.insert(header::ETAG, HeaderValue::from_static(etag));
    // Revalidated on every load (a 304 costs a round trip, never a stale dashboard after an
    // upgrade).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    for (name, value) in coffer_ui::HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

fn not_modified(asset: &Asset, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            // Either form's tag: both are the same bytes (a weak comparison, RFC 9110 13.1.2).
            let tag = tag.trim().trim_start_matches("W/");
            tag == "*" || tag == asset.etag || tag == asset.etag_gzip
        })
}

/// Whether `Accept-Encoding` lists gzip with a weight above zero.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            // A weight of zero refuses the coding; so does one that is not a number.
            let refused = parts.any(|p| match p.trim().strip_prefix("q=") {
                Some(q) => !q.trim().parse::<f32>().is_ok_and(|q| q > 0.0),
                None => false,
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}
