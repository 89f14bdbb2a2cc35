//! Extractors that turn requests into checked values or an [`ApiError`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use coffer_core::{Coffer, Principal};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest request body, in bytes (a 64 KiB value may grow up to 6× when JSON-escaped).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The authenticated caller; rejects with 401.
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<Coffer>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, coffer: &Arc<Coffer>) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .ok_or_else(|| ApiError::from(coffer_core::CoreError::Unauthenticated))?;
        Ok(Caller(coffer.authenticate(presented).await?))
    }
}

/// Path parameters; a segment that is not UTF-8 is a name that breaks its rule (422).
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(params)) => Ok(PathParams(params)),
            Err(_) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_name",
                "a name in the path is not valid UTF-8",
            )),
        }
    }
}

/// A request body, read but not yet parsed: parsing waits until the caller is authorized,
/// so a key that may not write learns nothing from how its body would have been judged.
pub struct JsonBody(Result<Bytes, ApiError>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        let body = match axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await {
            Err(_) => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            )),
            // An empty body needs no content type (routes whose body is optional).
            Ok(bytes) if !is_json && !bytes.is_empty() => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            )),
            Ok(bytes) => Ok(bytes),
        };
        Ok(JsonBody(body))
    }
}

impl JsonBody {
    /// Parses the body as `T` (which should deny unknown fields).
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        let bytes = self.0?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::from_json(&e))
    }

    /// Like [`JsonBody::parse`], but an empty body means `T::default()`.
    pub fn parse_or_default<T: DeserializeOwned + Default>(self) -> Result<T, ApiError> {
        match &self.0 {
            Ok(bytes) if bytes.is_empty() => Ok(T::default()),
            _ => self.parse(),
        }
    }
}
