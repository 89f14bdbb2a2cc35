//! How a tool call reaches the API: over HTTP ([`HttpBackend`]) or in-process
//! ([`RouterBackend`]).

use std::future::Future;

use axum::http::{self, HeaderValue, Method, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use zeroize::Zeroizing;

/// Largest API answer a tool reads (a page of 1,000 items fits many times over).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Carries one API call. Implementations add the caller's credentials; they never log the
/// request body, which may hold a secret value.
pub trait Backend: Send + Sync + 'static {
    /// Sends `request` on behalf of `caller`; an answer of any status is `Ok`, only a call
    /// that got no answer is [`Unavailable`].
    fn call(
        &self,
        request: ApiRequest,
        caller: &Caller<'_>,
    ) -> impl Future<Output = Result<ApiResponse, Unavailable>> + Send;
}

/// One call to the API.
#[derive(Debug)]
pub struct ApiRequest {
    /// The HTTP method.
    pub method: Method,
    /// `/v1/…` with its query, every segment already checked.
    pub path_and_query: String,
    /// The JSON body, if any.
    pub body: Option<JsonBody>,
}

/// A request body serialized once into a buffer wiped on drop (it may hold a secret value);
/// its `Debug` shows only its length.
pub struct JsonBody(Zeroizing<Vec<u8>>);

impl JsonBody {
    /// Serializes `body`.
    pub fn new(body: &impl Serialize) -> Result<Self, serde_json::Error> {
        // Measured first, so the buffer never grows: a reallocation would leave an unwiped
        // copy of the value behind.
        let mut counter = Counter(0);
        serde_json::to_writer(&mut counter, body)?;
        let mut buf = Zeroizing::new(Vec::with_capacity(counter.0));
        serde_json::to_writer(&mut *buf, body)?;
        Ok(JsonBody(buf))
    }

    /// The bytes, moved out (the transports take ownership).
    fn take(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.0)
    }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for JsonBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonBody({} bytes)", self.0.len())
    }
}

/// The API's answer.
#[derive(Debug)]
pub struct ApiResponse {
    /// Its status.
    pub status: StatusCode,
    /// Its JSON body (`Null` when it had none or it was not JSON).
    pub body: serde_json::Value,
}

/// Who a call is made for, as the transport that carried the MCP message knows it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller<'a> {
    /// The HTTP request of `POST /mcp` (its `Authorization` is the caller's key); `None`
    /// on stdio, where the backend holds the key.
    pub http: Option<&'a http::request::Parts>,
}

/// The call got no answer from the API (connection refused, timeout, …).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(String);

/// A client of a Coffer server at one address, with one API key (`coffer mcp`).
pub struct HttpBackend {
    http: reqwest::Client,
    base: reqwest::Url,
    key: SecretString,
}

impl HttpBackend {
    /// Calls the server at `base` (its path, if any, is kept as a prefix) with `key`, through
    /// `http`, which the caller has set up (timeouts, proxies, redirects).
    pub fn new(http: reqwest::Client, base: reqwest::Url, key: SecretString) -> Self {
        HttpBackend { http, base, key }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}{path_and_query}",
            self.base.as_str().trim_end_matches('/')
        )
    }
}

impl Backend for HttpBackend {
    async fn call(
        &self,
        request: ApiRequest,
        _caller: &Caller<'_>,
    ) -> Result<ApiResponse, Unavailable> {
        let mut builder = self
            .http
            .request(request.method, self.url(&request.path_and_query))
            // Marked sensitive by reqwest: never in its Debug or logs.
            .bearer_auth(self.key.expose_secret())
            .header(header::ACCEPT, "application/json");
        if let Some(body) = request.body {
            builder = builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.take());
        }
        let transport = |e: reqwest::Error| {
            let what = if e.is_connect() {
                "no Coffer server answers"
            } else if e.is_timeout() {
                "the Coffer server did not answer in time"
            } else {
                "talking to the Coffer server failed"
            };
            Unavailable(format!("{what} at {}", shown(&self.base)))
        };
        let mut response = builder.send().await.map_err(transport)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Unavailable(format!(
                    "the answer from {} is larger than {MAX_RESPONSE_BYTES} bytes",
                    shown(&self.base)
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(ApiResponse {
            status,
            body: parse(&bytes),
        })
    }
}

/// The address for messages, without credentials embedded in it.
fn shown(base: &reqwest::Url) -> String {
    let mut shown = base.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// The API's own router, called in-process (`POST /mcp`): each tool call is a request to it
/// bearing the `Authorization` (and `User-Agent`) of the HTTP request that carried the MCP
/// message, so it is authenticated, authorized and audited as that caller.
#[derive(Clone)]
pub struct RouterBackend {
    router: axum::Router,
    carry: fn(&http::Extensions, &mut http::Extensions),
}

impl RouterBackend {
    /// Calls `router`, which must not serve the MCP endpoint itself. `carry` copies what
    /// the router reads from the outer request's extensions (its peer address) to each
    /// inner request.
    pub fn new(router: axum::Router, carry: fn(&http::Extensions, &mut http::Extensions)) -> Self {
        RouterBackend { router, carry }
    }
}

impl Backend for RouterBackend {
    async fn call(
        &self,
        request: ApiRequest,
        caller: &Caller<'_>,
    ) -> Result<ApiResponse, Unavailable> {
        use tower::ServiceExt;
        let Some(outer) = caller.http else {
            return Err(Unavailable(
                "no HTTP request carried this call, so there is no API key to call with".into(),
            ));
        };
        let mut builder = http::Request::builder()
            .method(request.method)
            .uri(&request.path_and_query)
            .header(header::ACCEPT, "application/json");
        for name in [header::AUTHORIZATION, header::USER_AGENT] {
            if let Some(value) = outer.headers.get(&name) {
                let mut value: HeaderValue = value.clone();
                if name == header::AUTHORIZATION {
                    value.set_sensitive(true);
                }
                builder = builder.header(name, value);
            }
        }
        let body = match request.body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                axum::body::Body::from(body.take())
            }
            None => axum::body::Body::empty(),
        };
        let mut inner = builder
            .body(body)
            .map_err(|_| Unavailable("the request could not be built".into()))?;
        (self.carry)(&outer.extensions, inner.extensions_mut());
        let response = match self.router.clone().oneshot(inner).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_RESPONSE_BYTES)
            .await
            .map_err(|_| Unavailable("the API's answer could not be read".into()))?;
        Ok(ApiResponse {
            status,
            body: parse(&bytes),
        })
    }
}

/// The body as JSON; empty or not JSON is `Null` (the status says what happened).
fn parse(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}
