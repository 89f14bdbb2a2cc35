//! The HTTP transport: one reqwest client, `Authorization: Bearer`, JSON in and out, and
//! the API's error bodies (`{"error": {"code", "message"}}`) turned into readable errors.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroizing;

use super::output::printable;

/// A Coffer server at one address, called with one API key.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    /// The address as the user gave it, for messages.
    addr: String,
    key: SecretString,
}

/// A request body, serialized once into a buffer that is wiped when dropped.
pub struct JsonBody(Zeroizing<Vec<u8>>);

impl JsonBody {
    /// Serializes `body`. `size_hint` is an upper bound on its JSON length, so the buffer
    /// never reallocates (which would leave an unwiped copy of a secret value behind).
    pub fn new(body: &impl Serialize, size_hint: usize) -> Result<Self> {
        let mut buf = Zeroizing::new(Vec::with_capacity(size_hint));
        serde_json::to_writer(&mut *buf, body).context("cannot encode the request")?;
        Ok(JsonBody(buf))
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// An error answer from the server.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The error body, when the server sent Coffer's error shape.
    pub body: Option<ErrorBody>,
}

/// The `error` object of an error answer.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable code, e.g. `revision_conflict`.
    pub code: String,
    /// Human text; never holds a secret value.
    #[serde(default)]
    pub message: String,
    /// On `revision_conflict`: the revision the secret has now (0: it does not exist).
    pub current_revision: Option<u64>,
}

impl Api {
    /// A client for the server at `base` (parsed from `addr` by [`parse_addr`]).
    pub fn new(base: Url, addr: &str, key: SecretString) -> Result<Self> {
        Ok(Api {
            http: client(&base)?,
            addr: shown_addr(&base, addr),
            base,
            key,
        })
    }

    /// The client, the base address and the key, for another transport (`coffer mcp`).
    pub fn into_parts(self) -> (reqwest::Client, Url, SecretString) {
        (self.http, self.base, self.key)
    }

    /// The address as messages show it (see [`shown_addr`]).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `GET` a JSON document.
    pub async fn get(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Value> {
        self.send(Method::GET, path, query, None, &[])
            .await?
            .context("the server sent an empty answer")
    }

    /// `POST` a JSON body, expecting a JSON answer.
    pub async fn post(&self, path: &[&str], body: JsonBody) -> Result<Value> {
        self.post_with_headers(path, body, &[]).await
    }

    /// `POST` a JSON body with extra request headers (`Idempotency-Key`), expecting a JSON
    /// answer.
    pub async fn post_with_headers(
        &self,
        path: &[&str],
        body: JsonBody,
        headers: &[(&str, &str)],
    ) -> Result<Value> {
        self.send(Method::POST, path, &[], Some(body), headers)
            .await?
            .context("the server sent an empty answer")
    }

    /// `POST` a JSON body whose answer carries secret values (a resolved job): read straight
    /// into `T` (whose secret fields are `SecretString`s), never into a `serde_json::Value`,
    /// and the answer's buffer is wiped once read.
    pub async fn post_receiving_values<T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: JsonBody,
    ) -> Result<T> {
        let bytes = self
            .send_raw(Method::POST, path, &[], Some(body), &[])
            .await?;
        // The parse error is not shown: it could quote part of a value.
        let parsed = serde_json::from_slice(&bytes).map_err(|_| {
            anyhow!(
                "unexpected answer from {}: not the JSON document expected",
                self.addr
            )
        });
        // `bytes` is wiped as it drops.
        parsed
    }

    /// `PUT` a JSON body, expecting a JSON answer.
    pub async fn put(&self, path: &[&str], body: JsonBody) -> Result<Value> {
        self.send(Method::PUT, path, &[], Some(body), &[])
            .await?
            .context("the server sent an empty answer")
    }

    /// `DELETE`, expecting no content.
    pub async fn delete(&self, path: &[&str], query: &[(&str, &str)]) -> Result<()> {
        self.send(Method::DELETE, path, query, None, &[])
            .await
            .map(drop)
    }

    /// `DELETE path`, only at `expected_revision` when one is given (`?expectedRevision=`).
    pub async fn delete_at(&self, path: &[&str], expected_revision: Option<u64>) -> Result<()> {
        self.delete_answering(path, expected_revision)
            .await
            .map(drop)
    }

    /// [`Api::delete_at`] for a route that answers with what it deleted (an
    /// orchestration): that answer, or `None` for an empty one.
    pub async fn delete_answering(
        &self,
        path: &[&str],
        expected_revision: Option<u64>,
    ) -> Result<Option<Value>> {
        let revision = expected_revision.map(|r| r.to_string());
        let query: Vec<_> = revision
            .iter()
            .map(|r| ("expectedRevision", r.as_str()))
            .collect();
        self.send(Method::DELETE, path, &query, None, &[]).await
    }

    /// `GET` a server-sent event stream: the response once its head arrived (its body is
    /// read by the caller), or the error answer. No overall timeout: a stream stays open.
    pub async fn open_stream(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
        last_event_id: Option<u64>,
    ) -> Result<reqwest::Response> {
        let mut request = self
            .http
            .get(self.url(path, query)?)
            .bearer_auth(self.key.expose_secret())
            .header(ACCEPT, "text/event-stream")
            // Overrides the client's 60 s limit (a stream that outlives this one reconnects);
            // the caller notices a silent stream by its missing keep-alives.
            .timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(ApiError::parse(status, &bytes).into());
        }
        Ok(response)
    }

    async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<JsonBody>,
        headers: &[(&str, &str)],
    ) -> Result<Option<Value>> {
        let bytes = self.send_raw(method, path, query, body, headers).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the answer from {} is not JSON: is it a Coffer server?",
                self.addr
            )
        })?;
        Ok(Some(value))
    }

    /// The body of a successful answer, in a buffer wiped when dropped, or the error answer
    /// as an [`ApiError`].
    async fn send_raw(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<JsonBody>,
        headers: &[(&str, &str)],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let url = self.url(path, query)?;
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.key.expose_secret())
            .header(ACCEPT, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(JsonBody(mut buf)) = body {
            // reqwest takes the bytes by value and does not wipe them after sending; moving
            // (not copying) them at least leaves no second copy here.
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(std::mem::take(&mut *buf));
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(ApiError::parse(status, &bytes).into());
        }
        // Moved, not copied, when reqwest holds the only reference (the usual case).
        Ok(Zeroizing::new(Vec::from(bytes)))
    }

    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Url> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.path_segments_mut()
            .map_err(|()| anyhow!("{} cannot be the base of a URL", self.addr))?
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let cause = root_cause(e);
        if e.is_connect() {
            anyhow!(
                "no Coffer server answers at {} ({cause}); start one with `coffer serve` or set COFFER_ADDR",
                self.addr
            )
        } else if e.is_timeout() {
            anyhow!("the Coffer server at {} did not answer in time", self.addr)
        } else {
            anyhow!(
                "talking to the Coffer server at {} failed: {cause}",
                self.addr
            )
        }
    }
}

impl ApiError {
    pub(super) fn parse(status: StatusCode, bytes: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: ErrorBody,
        }
        let body = serde_json::from_slice::<Envelope>(bytes)
            .ok()
            .map(|e| e.error);
        ApiError { status, body }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status.as_u16();
        match &self.body {
            Some(body) => {
                write!(f, "{}: {}", printable(&body.code), printable(&body.message))?;
                // The server's message usually says it already; add it only where it does not.
                let said = body
                    .message
                    .to_ascii_lowercase()
                    .contains("current revision");
                match body.current_revision {
                    Some(n) if !said => write!(f, " (current revision: {n}; HTTP {status})"),
                    _ => write!(f, " (HTTP {status})"),
                }
            }
            None => write!(
                f,
                "the server answered HTTP {} without a Coffer error body",
                self.status
            ),
        }
    }
}

impl std::error::Error for ApiError {}

/// The HTTP client every command uses for the server at `base`.
pub fn client(base: &Url) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("coffer-cli/", env!("CARGO_PKG_VERSION")))
        // A redirect would replay a secret value to wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if is_local(base) {
        // An HTTP(S)_PROXY meant for the outside world must not see a local admin key.
        builder = builder.no_proxy();
    }
    builder.build().context("cannot set up the HTTP client")
}

/// Parses `--addr`/`COFFER_ADDR`; `host:port` without a scheme means `http://host:port`.
pub fn parse_addr(addr: &str) -> Result<Url> {
    let full = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let url = Url::parse(&full)
        .with_context(|| format!("the address {addr:?} is not a URL like http://127.0.0.1:8720"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("the address {addr:?} is not an http:// or https:// URL with a host");
    }
    Ok(url)
}

/// The address for messages: as the user gave it, but never with credentials embedded
/// in it.
pub fn shown_addr(base: &Url, addr: &str) -> String {
    if base.username().is_empty() && base.password().is_none() {
        printable(addr)
    } else {
        let mut shown = base.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.to_string()
    }
}

/// Whether `url` names this machine (`localhost`, `127.0.0.0/8`, `::1`).
pub fn is_local(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The innermost cause, which says what actually went wrong ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    printable(&cause.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_scheme_mean_http() {
        assert_eq!(
            parse_addr("127.0.0.1:8720").unwrap().as_str(),
            "http://127.0.0.1:8720/"
        );
        assert_eq!(
            parse_addr("https://coffer.example/base").unwrap().as_str(),
            "https://coffer.example/base"
        );
        assert!(parse_addr("ftp://x").is_err());
        assert!(parse_addr("http://").is_err());
    }

    #[test]
    fn local_addresses_are_loopback_names_and_ips() {
        for addr in [
            "http://127.0.0.1:8720",
            "http://localhost:1",
            "http://LOCALHOST",
            "http://[::1]:8720",
            "127.0.0.2",
        ] {
            assert!(is_local(&parse_addr(addr).unwrap()), "{addr}");
        }
        for addr in [
            "http://10.0.0.1",
            "https://coffer.example",
            "http://localhost.evil.example",
            "http://[::2]",
        ] {
            assert!(!is_local(&parse_addr(addr).unwrap()), "{addr}");
        }
    }

    #[test]
    fn path_segments_are_appended_to_a_base_with_a_path() {
        let api = Api::new(
            parse_addr("http://h:1/prefix/").unwrap(),
            "",
            SecretString::from("k"),
        )
        .unwrap();
        let url = api
            .url(
                &["v1", "environments", "prod"],
                &[("cursor", "a b&c"), ("limit", "5")],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://h:1/prefix/v1/environments/prod?cursor=a+b%26c&limit=5"
        );
        let api = Api::new(
            parse_addr("http://h:1").unwrap(),
            "",
            SecretString::from("k"),
        )
        .unwrap();
        assert_eq!(
            api.url(&["healthz"], &[]).unwrap().as_str(),
            "http://h:1/healthz"
        );
    }

    #[test]
    fn api_errors_read_as_code_message_and_status() {
        let e = ApiError::parse(
            StatusCode::FORBIDDEN,
            br#"{"error": {"code": "forbidden", "message": "this API key may not do that"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "forbidden: this API key may not do that (HTTP 403)"
        );
        assert_eq!(e.body.unwrap().code, "forbidden");
    }

    #[test]
    fn revision_conflicts_mention_the_current_revision() {
        let e = ApiError::parse(
            StatusCode::CONFLICT,
            br#"{"error": {"code": "revision_conflict", "message": "expected revision 1", "currentRevision": 4}}"#,
        );
        assert_eq!(
            e.to_string(),
            "revision_conflict: expected revision 1 (current revision: 4; HTTP 409)"
        );
        let e = ApiError::parse(
            StatusCode::CONFLICT,
            br#"{"error": {"code": "revision_conflict", "message": "the current revision is 4", "currentRevision": 4}}"#,
        );
        assert_eq!(
            e.to_string(),
            "revision_conflict: the current revision is 4 (HTTP 409)"
        );
    }

    #[test]
    fn errors_without_a_coffer_body_still_name_the_status() {
        let e = ApiError::parse(StatusCode::BAD_GATEWAY, b"<html>proxy</html>");
        assert_eq!(
            e.to_string(),
            "the server answered HTTP 502 Bad Gateway without a Coffer error body"
        );
        assert!(e.body.is_none());
    }
}
