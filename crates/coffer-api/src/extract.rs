//! Extractors that turn requests into checked values or an [`ApiError`].

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use coffer_core::{Coffer, Principal};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use crate::error::ApiError;

/// The largest request body, in bytes (a 64 KiB value may grow up to 6× when JSON-escaped).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The authenticated caller; rejects with 401.
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<Coffer>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, coffer: &Arc<Coffer>) -> Result<Self, ApiError> {
        let presented = bearer_key(&parts.headers)
            .ok_or_else(|| ApiError::from(coffer_core::CoreError::Unauthenticated))?;
        let principal = coffer.authenticate(presented).await?;
        crate::audit::AuthenticatedKey::note(parts, &principal.key_id);
        Ok(Caller(principal.with_origin(origin(parts))))
    }
}

/// The API key of an `Authorization: Bearer <key>` header.
pub fn bearer_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
}

/// The peer address of the connection a request came on, put on every request by
/// [`crate::serve_with`].
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Where a request came from: its peer address and `User-Agent`, bounded.
pub fn origin(parts: &Parts) -> coffer_core::Origin {
    origin_of(
        parts.extensions.get::<PeerAddr>().copied(),
        parts.headers.get(header::USER_AGENT),
    )
}

/// [`origin`] from its two parts, kept aside while a request is handled.
pub fn origin_of(
    peer: Option<PeerAddr>,
    agent: Option<&axum::http::HeaderValue>,
) -> coffer_core::Origin {
    let remote = peer.map(|PeerAddr(addr)| addr.to_string());
    coffer_core::Origin::new(remote, agent.and_then(|v| v.to_str().ok()))
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

/// The query string, parsed into `T` (which denies unknown fields); every route takes one,
/// so an unknown or malformed parameter is a 400 `invalid_query` everywhere. Routes without
/// parameters take [`NoQuery`].
pub struct QueryParams<T>(pub T);

/// The parameters of a route that has none.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|e| ApiError::invalid_query(query_message(&e.to_string())))
    }
}

/// serde's message names the parameter in backticks; anything else it says (the value that
/// failed to parse) stays out of the answer.
fn query_message(serde: &str) -> String {
    let field = serde
        .split('`')
        .nth(1)
        .filter(|f| f.len() <= 64 && f.chars().all(|c| c.is_ascii_graphic()));
    match (serde.starts_with("unknown field"), field) {
        (true, Some(f)) => format!("unknown query parameter `{f}`"),
        (true, None) => "unknown query parameter".to_owned(),
        (false, _) if serde.starts_with("duplicate field") => {
            "a query parameter is given twice".to_owned()
        }
        (false, _) => "a query parameter has a malformed value".to_owned(),
    }
}

/// How request bodies are read; shared by every request of one server.
#[derive(Clone)]
pub struct BodyLimits {
    /// A body must arrive completely within this long once its handler starts reading it.
    pub timeout: Duration,
    /// Bytes of request bodies held in memory at once, across all requests.
    budget: Arc<Semaphore>,
    /// The whole budget: a body that needs more can never be held, whatever else runs.
    budget_bytes: usize,
}

impl BodyLimits {
    /// Limits with a fresh budget of `budget_bytes`.
    pub fn new(timeout: Duration, budget_bytes: usize) -> Self {
        let budget_bytes = budget_bytes.min(Semaphore::MAX_PERMITS);
        BodyLimits {
            timeout,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
        }
    }
}

/// For a router used without [`crate::serve_with`] (tests calling it directly).
static DEFAULT_LIMITS: LazyLock<BodyLimits> = LazyLock::new(|| {
    let d = crate::ServeOptions::DEFAULT;
    BodyLimits::new(d.body_read_timeout, d.body_budget_bytes)
});

/// A request body, not yet read: reading and parsing wait until the caller is authorized,
/// so a key that may not write is refused without the server reading (or holding) its body,
/// and learns nothing from how the body would have been judged.
pub struct JsonBody {
    body: Body,
    is_json: bool,
    declared_len: Option<u64>,
    limits: BodyLimits,
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        Ok(JsonBody::of(&parts, body))
    }
}

impl JsonBody {
    /// The body of a request whose head is `parts`.
    pub fn of(parts: &Parts, body: Body) -> Self {
        let headers = &parts.headers;
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        let declared_len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let limits = parts
            .extensions
            .get::<BodyLimits>()
            .cloned()
            .unwrap_or_else(|| DEFAULT_LIMITS.clone());
        JsonBody {
            body,
            is_json,
            declared_len,
            limits,
        }
    }
}

/// The share of the server's body budget a parsed request still holds. Keep it until the
/// request is answered: the parsed values (and what the service makes of them, such as a
/// queued write) are the body's bytes in another form.
#[must_use = "hold it until the request is answered"]
pub struct BodyHold(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl JsonBody {
    /// Reads the body and parses it as `T` (which should deny unknown fields).
    pub async fn parse<T: DeserializeOwned>(self) -> Result<(T, BodyHold), ApiError> {
        let (bytes, held) = self.read().await?;
        Ok((from_json(&bytes)?, BodyHold(held)))
    }

    /// Like [`JsonBody::parse`], but an empty body means `T::default()`.
    pub async fn parse_or_default<T: DeserializeOwned + Default>(
        self,
    ) -> Result<(T, BodyHold), ApiError> {
        let (bytes, held) = self.read().await?;
        if bytes.is_empty() {
            return Ok((T::default(), BodyHold(held)));
        }
        Ok((from_json(&bytes)?, BodyHold(held)))
    }

    /// The whole body unparsed, read as [`JsonBody::parse`] reads it (`POST /mcp`, whose
    /// messages the MCP transport parses).
    pub async fn bytes(self) -> Result<(Zeroizing<Vec<u8>>, BodyHold), ApiError> {
        let (bytes, held) = self.read().await?;
        Ok((bytes, BodyHold(held)))
    }

    /// The whole body, within the size limit, the time limit and the server's memory budget
    /// (whose share is held until the returned permit drops). A declared length takes its
    /// share before anything is read or allocated; a chunked body takes it as its buffer
    /// grows (the whole capacity is counted, since the whole capacity is allocated).
    /// The buffer is wiped on drop: it may hold a secret value.
    async fn read(self) -> Result<(Zeroizing<Vec<u8>>, Option<OwnedSemaphorePermit>), ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            )
        };
        let declared = self.declared_len.unwrap_or(0);
        if declared > MAX_BODY_BYTES as u64 {
            return Err(too_large());
        }
        if declared > 0 && !self.is_json {
            return Err(unsupported_media_type());
        }
        let budget = &self.limits.budget;
        let take = |n: usize| {
            let n = u32::try_from(n).map_err(|_| too_large())?;
            budget
                .clone()
                .try_acquire_many_owned(n)
                .map_err(|_| ApiError::overloaded("request bodies"))
        };
        // `declared` is at most MAX_BODY_BYTES here.
        let mut held = match declared as usize {
            0 => None,
            n => Some(take(n)?),
        };
        let mut allowed = declared as usize;
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        let mut body = self.body;
        let mut buf = Zeroizing::new(Vec::with_capacity(allowed));
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(ApiError::body_timeout(self.limits.timeout)),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(ApiError::malformed_body()),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing we read
            };
            let len = buf.len() + data.len();
            if len > MAX_BODY_BYTES {
                return Err(too_large());
            }
            if len > allowed {
                // A chunked body: the buffer grows by copying into a new one (so no unwiped
                // copy is left behind), and each growth takes its share of the budget first.
                let capacity = len.max(2 * allowed).min(MAX_BODY_BYTES);
                let more = take(capacity - allowed)?;
                match &mut held {
                    Some(all) => all.merge(more),
                    None => held = Some(more),
                }
                allowed = capacity;
                let mut bigger = Zeroizing::new(Vec::with_capacity(capacity));
                bigger.extend_from_slice(&buf);
                buf = bigger;
            }
            buf.extend_from_slice(&data);
        }
        if !buf.is_empty() && !self.is_json {
            return Err(unsupported_media_type());
        }
        // What the parsed form will hold beyond the text: taken now, held with the text.
        let tokens = json_tokens(&buf);
        if tokens > MAX_BODY_TOKENS {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a request body may hold at most {MAX_BODY_TOKENS} JSON values"),
            ));
        }
        // A body this server's whole budget cannot hold is refused for good (413), not as a
        // moment's overload (503) its client would retry without end.
        if allowed.saturating_add(tokens * PARSED_BYTES_PER_TOKEN) > self.limits.budget_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body, parsed, is larger than this server's memory for request bodies \
                 (--body-memory-mib)",
            ));
        }
        let parsed = take(tokens * PARSED_BYTES_PER_TOKEN)?;
        match &mut held {
            Some(all) => all.merge(parsed),
            None => held = Some(parsed),
        }
        Ok((buf, held))
    }
}

/// What one JSON value (or object member) of a body may take once parsed, beyond its text:
/// a `serde_json::Value` is 32 bytes, an object member adds its key's `String` and its
/// place in the map. A body of 1 MiB of `[[],[],…]` parses into some 30 MiB, so the
/// server's body budget is charged for the parsed form as well as for the text.
const PARSED_BYTES_PER_TOKEN: usize = 64;

/// Most JSON values one body may hold (16 MiB of parsed form): more than any request of
/// the API needs (an import of 1,000 secrets is some 5,000), and a body past it is refused
/// with 413 before it is parsed.
pub const MAX_BODY_TOKENS: usize = 256 * 1024;

/// An upper bound on the values and members `text` parses into: one per opening bracket,
/// comma and colon outside strings, and one more. Counted in one pass over the bytes, before
/// any parsing; a text that is not JSON gets a count all the same (the parse then refuses it).
fn json_tokens(text: &[u8]) -> usize {
    if text.is_empty() {
        return 0;
    }
    let mut tokens = 1;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' | b',' | b':' => tokens += 1,
                _ => {}
            }
        }
    }
    tokens
}

fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::from_json(&e))
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as Content-Type: application/json",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_must_be_a_json_object() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Named {
            name: String,
        }
        for bad in [&b"[\"prod\"]"[..], b"  [null]", b"\"prod\"", b"7"] {
            let err = from_json::<Named>(bad).unwrap_err();
            assert_eq!(
                err.code(),
                "invalid_body",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            from_json::<Named>(b"{\"name\":").unwrap_err().code(),
            "malformed_json"
        );
        assert!(from_json::<Named>(b" {\"name\": \"prod\"}").is_ok());
    }

    #[test]
    fn a_body_counts_its_values_outside_strings() {
        assert_eq!(json_tokens(b""), 0);
        assert_eq!(json_tokens(b"7"), 1);
        assert_eq!(json_tokens(b"{}"), 2);
        assert_eq!(json_tokens(br#"{"a":[1,2]}"#), 5);
        // Brackets, commas and colons inside strings are text, escaped quotes too.
        assert_eq!(json_tokens(br#"{"value":"[,:{\",]"}"#), 3);
        assert_eq!(json_tokens(br#"["\\",1]"#), 3);
        // The pathological body: one token per two bytes.
        let nested = "[],".repeat(1000);
        assert_eq!(json_tokens(format!("[{nested}[]]").as_bytes()), 2003);
    }

    #[test]
    fn query_errors_name_the_parameter_but_never_a_value() {
        assert_eq!(
            query_message("unknown field `bogus`, expected `limit` or `cursor`"),
            "unknown query parameter `bogus`"
        );
        assert_eq!(
            query_message("invalid digit found in string"),
            "a query parameter has a malformed value"
        );
        let long = format!("unknown field `{}`", "x".repeat(500));
        assert_eq!(query_message(&long), "unknown query parameter");
    }
}
