//! The typed HTTP client: one method per route, JSON in and out, Coffer's error body turned
//! into [`Error`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use coffer_wire::{
    Complete, EventAccepted, Function, FunctionList, Heartbeat, Job, Poll, PutFunction, Resolve,
    RotateSigningSecret, Run, RunList, SendEvent,
};
use http::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::error::{Error, decode_error, from_answer};
use crate::management::{
    ApiKey, ApiKeyList, ConfigEntry, ConfigPage, CreateApiKey, CreateEnvironment, Environment,
    EnvironmentList, NewApiKey, PageRequest, Paged, PutConfig, PutSecret, Role, RunQuery,
    SecretMeta, SecretPage, SecretQuery, Written,
};

/// How long a request may take in all, unless the call says otherwise (a poll waits
/// longer).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Beyond a poll's own `waitMs`: the time the server may take to answer once the wait is
/// over.
const POLL_SLACK: Duration = Duration::from_secs(15);

/// A Coffer server at one address, called with one API key.
///
/// Cheap to clone (the connection pool is shared). The key lives in a [`SecretString`] and
/// never appears in `Debug`. What a call may do depends on the key's role: admin and
/// manage keys use the management routes, runtime keys the runtime routes (poll,
/// heartbeat, complete, resolve) — see `docs/API.md` for each route's callers.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    key: SecretString,
}

/// An answer: its status and its body (wiped when dropped, since a job's body holds
/// values).
pub(crate) struct Answer {
    status: StatusCode,
    body: Zeroizing<Vec<u8>>,
}

impl Client {
    /// A client for the server at `address` (`http://127.0.0.1:8720`, `https://coffer.example`)
    /// calling with `api_key`.
    ///
    /// The HTTP client follows no redirect (a redirect would replay a value to wherever it
    /// points), bypasses proxies for a loopback address (a proxy configured for the
    /// outside world must not see a local key), and gives a call 60 s (a poll: its wait
    /// plus 15 s). For other settings (TLS roots, a proxy) use
    /// [`Client::with_http_client`].
    pub fn new(address: &str, api_key: impl Into<SecretString>) -> Result<Client, Error> {
        let base = parse_address(address)?;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("coffer-sdk-rust/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(DEFAULT_TIMEOUT);
        if is_loopback(&base) {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(Error::Transport)?;
        Ok(Client::from_parts(http, base, api_key.into()))
    }

    /// A client that sends through `http`, as it is configured. Keep its redirect policy
    /// at `none`, and its overall timeout, if any, above a poll's wait.
    pub fn with_http_client(
        address: &str,
        api_key: impl Into<SecretString>,
        http: reqwest::Client,
    ) -> Result<Client, Error> {
        Ok(Client::from_parts(
            http,
            parse_address(address)?,
            api_key.into(),
        ))
    }

    fn from_parts(http: reqwest::Client, base: Url, key: SecretString) -> Client {
        Client {
            inner: Arc::new(Inner { http, base, key }),
        }
    }

    /// The server's address.
    pub fn address(&self) -> &str {
        self.inner.base.as_str()
    }

    // Environments.

    /// `GET /v1/environments`: every environment (admin) or the key's own (manage).
    pub async fn list_environments(&self) -> Result<Vec<Environment>, Error> {
        let list: EnvironmentList = self.get(&["environments"], &[]).await?;
        Ok(list.environments)
    }

    /// `POST /v1/environments` (admin): creates `name`; 409 `environment_exists` if it does.
    pub async fn create_environment(&self, name: &str) -> Result<Environment, Error> {
        self.send_json(
            Method::POST,
            &["environments"],
            &[],
            &CreateEnvironment { name },
        )
        .await
    }

    /// `DELETE /v1/environments/{name}` (admin): the environment, its secrets, config and
    /// the keys scoped to it.
    pub async fn delete_environment(&self, name: &str) -> Result<(), Error> {
        self.delete(&["environments", name], None).await
    }

    // API keys.

    /// `POST /v1/api-keys` (admin): a new key; `environment` is required for `manage` and
    /// `runtime` keys and refused for `admin`. The key is shown only in this answer.
    pub async fn create_api_key(
        &self,
        name: &str,
        role: Role,
        environment: Option<&str>,
    ) -> Result<NewApiKey, Error> {
        let body = CreateApiKey {
            name,
            role,
            environment,
        };
        self.send_json(Method::POST, &["api-keys"], &[], &body)
            .await
    }

    /// `GET /v1/api-keys` (admin): every key's description.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, Error> {
        let list: ApiKeyList = self.get(&["api-keys"], &[]).await?;
        Ok(list.api_keys)
    }

    /// `DELETE /v1/api-keys/{id}` (admin): revokes a key at once.
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), Error> {
        self.delete(&["api-keys", id], None).await
    }

    // Secrets.

    /// `PUT /v1/environments/{env}/secrets/{name}`: sets a value (write-only: no answer
    /// ever shows it). With `expected_revision`, only if the secret is at that revision
    /// (`Some(0)`: only if it does not exist); otherwise 409 with
    /// [`Error::current_revision`].
    pub async fn set_secret(
        &self,
        env: &str,
        name: &str,
        value: impl Into<SecretString>,
        expected_revision: Option<u64>,
    ) -> Result<Written<SecretMeta>, Error> {
        let value = value.into();
        let body = PutSecret {
            value: &value,
            expected_revision,
        };
        self.write(&["environments", env, "secrets", name], &body)
            .await
    }

    /// `GET /v1/environments/{env}/secrets/{name}`: its metadata.
    pub async fn get_secret(&self, env: &str, name: &str) -> Result<SecretMeta, Error> {
        self.get(&["environments", env, "secrets", name], &[]).await
    }

    /// `GET /v1/environments/{env}/secrets`: one page of metadata, in name order.
    pub async fn list_secrets(&self, env: &str, page: &PageRequest) -> Result<SecretPage, Error> {
        self.get(&["environments", env, "secrets"], &page_query(page))
            .await
    }

    /// Every secret's metadata, following the cursor from page to page.
    pub async fn list_all_secrets(&self, env: &str) -> Result<Vec<SecretMeta>, Error> {
        self.all_pages::<SecretPage>(&["environments", env, "secrets"], Vec::new())
            .await
    }

    /// `GET /v1/environments/{env}/secrets?search&sort`: one page of the secrets `query`
    /// selects, in its order (the server searches and sorts).
    pub async fn list_secrets_where(
        &self,
        env: &str,
        query: &SecretQuery,
    ) -> Result<SecretPage, Error> {
        let mut q = secret_filter(query);
        q.extend(page_query(&query.page));
        self.get(&["environments", env, "secrets"], &q).await
    }

    /// Every secret `query` selects (its page is ignored), in its order, following the
    /// cursor.
    pub async fn list_all_secrets_where(
        &self,
        env: &str,
        query: &SecretQuery,
    ) -> Result<Vec<SecretMeta>, Error> {
        self.all_pages::<SecretPage>(&["environments", env, "secrets"], secret_filter(query))
            .await
    }

    /// `DELETE /v1/environments/{env}/secrets/{name}`; with `expected_revision`, only that
    /// revision.
    pub async fn delete_secret(
        &self,
        env: &str,
        name: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), Error> {
        self.delete(&["environments", env, "secrets", name], expected_revision)
            .await
    }

    // Config.

    /// `PUT /v1/environments/{env}/config/{key}`: sets any JSON value; `expected_revision`
    /// as for [`Client::set_secret`].
    pub async fn set_config(
        &self,
        env: &str,
        key: &str,
        value: &serde_json::Value,
        expected_revision: Option<u64>,
    ) -> Result<Written<ConfigEntry>, Error> {
        let body = PutConfig {
            value,
            expected_revision,
        };
        self.write(&["environments", env, "config", key], &body)
            .await
    }

    /// `GET /v1/environments/{env}/config/{key}`: the entry, with its value.
    pub async fn get_config(&self, env: &str, key: &str) -> Result<ConfigEntry, Error> {
        self.get(&["environments", env, "config", key], &[]).await
    }

    /// `GET /v1/environments/{env}/config`: one page, in key order.
    pub async fn list_config(&self, env: &str, page: &PageRequest) -> Result<ConfigPage, Error> {
        self.get(&["environments", env, "config"], &page_query(page))
            .await
    }

    /// Every config entry, following the cursor from page to page.
    pub async fn list_all_config(&self, env: &str) -> Result<Vec<ConfigEntry>, Error> {
        self.all_pages::<ConfigPage>(&["environments", env, "config"], Vec::new())
            .await
    }

    /// `DELETE /v1/environments/{env}/config/{key}`; with `expected_revision`, only that
    /// revision.
    pub async fn delete_config(
        &self,
        env: &str,
        key: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), Error> {
        self.delete(&["environments", env, "config", key], expected_revision)
            .await
    }

    // Functions.

    /// `PUT /v1/environments/{env}/functions/{id}`: registers a function (`created`, and
    /// its `signing_secret`, shown this once) or updates it (the signing secret is kept).
    /// [`FunctionDef::pull`](crate::FunctionDef::pull) and
    /// [`FunctionDef::push`](crate::FunctionDef::push) build the body from the definition
    /// a worker or push handler runs.
    pub async fn put_function(
        &self,
        env: &str,
        id: &str,
        function: &PutFunction,
    ) -> Result<Written<Function>, Error> {
        self.write(&["environments", env, "functions", id], function)
            .await
    }

    /// `GET /v1/environments/{env}/functions/{id}` (never its signing secret).
    pub async fn get_function(&self, env: &str, id: &str) -> Result<Function, Error> {
        self.get(&["environments", env, "functions", id], &[]).await
    }

    /// `GET /v1/environments/{env}/functions`: one page, in id order.
    pub async fn list_functions(
        &self,
        env: &str,
        page: &PageRequest,
    ) -> Result<FunctionList, Error> {
        self.get(&["environments", env, "functions"], &page_query(page))
            .await
    }

    /// Every function, following the cursor from page to page.
    pub async fn list_all_functions(&self, env: &str) -> Result<Vec<Function>, Error> {
        self.all_pages::<FunctionList>(&["environments", env, "functions"], Vec::new())
            .await
    }

    /// `DELETE /v1/environments/{env}/functions/{id}`; its runs stay.
    pub async fn delete_function(
        &self,
        env: &str,
        id: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), Error> {
        self.delete(&["environments", env, "functions", id], expected_revision)
            .await
    }

    /// `POST /v1/environments/{env}/functions/{id}/signing-secret`: a new signing secret
    /// (in the answer, this once); deliveries carry a signature with the old one too until
    /// `previous_signing_secret_until`.
    pub async fn rotate_signing_secret(
        &self,
        env: &str,
        id: &str,
        rotate: &RotateSigningSecret,
    ) -> Result<Function, Error> {
        let path = ["environments", env, "functions", id, "signing-secret"];
        self.send_json(Method::POST, &path, &[], rotate).await
    }

    // Events and runs.

    /// `POST /v1/environments/{env}/events`: starts a run of every function the event
    /// triggers. With an `idempotency_key`, sending again with the same key (within 24
    /// hours) starts nothing and answers with the first send's runs — so a send that timed
    /// out can be retried safely.
    pub async fn send_event(
        &self,
        env: &str,
        event: &SendEvent,
        idempotency_key: Option<&str>,
    ) -> Result<EventAccepted, Error> {
        let path = ["environments", env, "events"];
        let mut request = self.request(Method::POST, &path, &[])?;
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let answer = self.execute(with_json(request, event)?).await?;
        decode(&answer)
    }

    /// `GET /v1/environments/{env}/runs/{id}`: its status, attempts, and its output or
    /// error (redacted by the server).
    pub async fn get_run(&self, env: &str, id: &str) -> Result<Run, Error> {
        self.get(&["environments", env, "runs", id], &[]).await
    }

    /// `GET /v1/environments/{env}/runs`: one page, newest first.
    pub async fn list_runs(&self, env: &str, query: &RunQuery) -> Result<RunList, Error> {
        let mut q = run_filter(query);
        q.extend(page_query(&query.page));
        self.get(&["environments", env, "runs"], &q).await
    }

    /// Every run that `query` selects (its page is ignored), following the cursor.
    pub async fn list_all_runs(&self, env: &str, query: &RunQuery) -> Result<Vec<Run>, Error> {
        self.all_pages::<RunList>(&["environments", env, "runs"], run_filter(query))
            .await
    }

    // The runtime plane (runtime keys of the environment only).

    /// `POST /v1/environments/{env}/workers/poll`: waits up to `poll.wait_ms` for a run of
    /// the named functions. `Some(job)`: the run is this caller's for `lease_ms`; extend it
    /// with [`Client::heartbeat`] and end it with [`Client::complete`]. `None`: no run
    /// came within the wait. [`Worker`](crate::Worker) does all of this.
    pub async fn poll(&self, env: &str, poll: &Poll) -> Result<Option<Job>, Error> {
        let wait = Duration::from_millis(poll.wait_ms.unwrap_or(0));
        let request = self
            .request(Method::POST, &["environments", env, "workers", "poll"], &[])?
            .timeout(wait + POLL_SLACK);
        let answer = self.execute(with_json(request, poll)?).await?;
        if answer.status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        decode(&answer).map(Some)
    }

    /// `POST /v1/environments/{env}/runs/{id}/heartbeat`: extends the lease of
    /// `heartbeat.attempt`; 409 `lease_lost` when that attempt no longer holds it.
    pub async fn heartbeat(
        &self,
        env: &str,
        run_id: &str,
        heartbeat: &Heartbeat,
    ) -> Result<(), Error> {
        let path = ["environments", env, "runs", run_id, "heartbeat"];
        let request = self.request(Method::POST, &path, &[])?;
        self.execute(with_json(request, heartbeat)?).await.map(drop)
    }

    /// `POST /v1/environments/{env}/runs/{id}/complete`: ends the run with its output or
    /// its error; 409 `lease_lost` when the attempt no longer holds the lease.
    pub async fn complete(
        &self,
        env: &str,
        run_id: &str,
        complete: &Complete,
    ) -> Result<Run, Error> {
        let path = ["environments", env, "runs", run_id, "complete"];
        self.send_json(Method::POST, &path, &[], complete).await
    }

    /// `POST /v1/environments/{env}/functions/{id}/resolve`: the function's declared
    /// secrets that are set (or `resolve.only` some of them) and its declared config keys,
    /// without a run — what `coffer run` uses. Audited by the server.
    pub async fn resolve(
        &self,
        env: &str,
        function_id: &str,
        resolve: &Resolve,
    ) -> Result<Job, Error> {
        let path = ["environments", env, "functions", function_id, "resolve"];
        self.send_json(Method::POST, &path, &[], resolve).await
    }

    // Plumbing.

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, Error> {
        let answer = self
            .execute(self.request(Method::GET, path, query)?)
            .await?;
        decode(&answer)
    }

    pub(crate) async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: &impl Serialize,
    ) -> Result<T, Error> {
        let request = self.request(method, path, query)?;
        let answer = self.execute(with_json(request, body)?).await?;
        decode(&answer)
    }

    /// A PUT that answers 201 when it created and 200 when it replaced.
    async fn write<T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: &impl Serialize,
    ) -> Result<Written<T>, Error> {
        let request = self.request(Method::PUT, path, &[])?;
        let answer = self.execute(with_json(request, body)?).await?;
        Ok(Written {
            value: decode(&answer)?,
            created: answer.status == StatusCode::CREATED,
        })
    }

    pub(crate) async fn delete(
        &self,
        path: &[&str],
        expected_revision: Option<u64>,
    ) -> Result<(), Error> {
        let query: Vec<_> = expected_revision
            .map(|r| ("expectedRevision", r.to_string()))
            .into_iter()
            .collect();
        self.execute(self.request(Method::DELETE, path, &query)?)
            .await
            .map(drop)
    }

    /// Every item of a listing: reads page after page until the server gives no cursor.
    pub(crate) async fn all_pages<P: Paged>(
        &self,
        path: &[&str],
        filter: Vec<(&str, String)>,
    ) -> Result<Vec<P::Item>, Error> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = filter.clone();
            query.push(("limit", "1000".to_owned()));
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let (items, next) = self.get::<P>(path, &query).await?.into_parts();
            all.extend(items);
            match next {
                // A server that hands back the cursor it was given would loop forever.
                Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// `METHOD base/v1/PATH?QUERY` with the key and `Accept: application/json`. Each path
    /// segment is percent-encoded on its own, so a name can never reach another route.
    pub(crate) fn request(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<reqwest::RequestBuilder, Error> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Usage("the address cannot be the base of a URL".into()))?
            .pop_if_empty()
            .push("v1")
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (k, v.as_str())));
        }
        Ok(self
            .inner
            .http
            .request(method, url)
            .bearer_auth(self.inner.key.expose_secret())
            .header(ACCEPT, "application/json"))
    }

    /// Sends, reads the whole answer, and turns an error status into [`Error`].
    pub(crate) async fn execute(&self, request: reqwest::RequestBuilder) -> Result<Answer, Error> {
        let mut response = request.send().await.map_err(Error::Transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = WipedBuf::default();
        while let Some(chunk) = response.chunk().await.map_err(Error::Transport)? {
            body.append(&chunk);
        }
        let body = body.0;
        if !status.is_success() {
            return Err(from_answer(status, &body, retry_after));
        }
        Ok(Answer { status, body })
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.base.as_str())
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// The body serialized into a buffer that is wiped when dropped (it may hold a value),
/// then moved, not copied, into the request. reqwest does not wipe it after sending.
fn with_json(
    request: reqwest::RequestBuilder,
    body: &impl Serialize,
) -> Result<reqwest::RequestBuilder, Error> {
    let mut buf = WipedBuf::default();
    serde_json::to_writer(&mut buf, body)
        .map_err(|_| Error::Usage("the request body could not be encoded".into()))?;
    Ok(request
        .header(CONTENT_TYPE, "application/json")
        .body(std::mem::take(&mut *buf.0)))
}

/// A byte buffer wiped when dropped that grows by hand, wiping the smaller buffer it
/// leaves, so no reallocation leaves a copy of a value behind.
#[derive(Default)]
struct WipedBuf(Zeroizing<Vec<u8>>);

impl WipedBuf {
    fn append(&mut self, bytes: &[u8]) {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let mut bigger =
                Zeroizing::new(Vec::with_capacity(needed.next_power_of_two().max(256)));
            bigger.extend_from_slice(&self.0);
            self.0 = bigger;
        }
        self.0.extend_from_slice(bytes);
    }
}

impl std::io::Write for WipedBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn decode<T: DeserializeOwned>(answer: &Answer) -> Result<T, Error> {
    serde_json::from_slice(&answer.body).map_err(|e| decode_error(answer.status, &e))
}

pub(crate) fn page_query(page: &PageRequest) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(limit) = page.limit {
        q.push(("limit", limit.to_string()));
    }
    if let Some(cursor) = &page.cursor {
        q.push(("cursor", cursor.clone()));
    }
    q
}

fn secret_filter(query: &SecretQuery) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(search) = &query.search {
        q.push(("search", search.clone()));
    }
    if let Some(sort) = query.sort {
        q.push(("sort", sort.as_str().to_owned()));
    }
    q
}

fn run_filter(query: &RunQuery) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(f) = &query.function_id {
        q.push(("functionId", f.clone()));
    }
    if let Some(status) = query.status {
        let status = match status {
            coffer_wire::RunStatus::Queued => "queued",
            coffer_wire::RunStatus::Running => "running",
            coffer_wire::RunStatus::Succeeded => "succeeded",
            coffer_wire::RunStatus::Failed => "failed",
        };
        q.push(("status", status.to_owned()));
    }
    q
}

/// An `http(s)://host[:port][/prefix]` address; anything else is refused before a request
/// is made. The message never echoes the address (it could carry credentials).
fn parse_address(address: &str) -> Result<Url, Error> {
    let url = Url::parse(address.trim())
        .map_err(|_| Error::Usage("the Coffer address is not a URL".into()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::Usage(
            "the Coffer address must be an http:// or https:// URL".into(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(Error::Usage(
            "the Coffer address must not carry credentials or a query".into(),
        ));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_segment_cannot_reach_another_route() {
        let client = Client::new("http://127.0.0.1:8720/prefix/", "ck_admin_x").unwrap();
        let request = client
            .request(Method::GET, &["environments", "a/../b?c", "secrets"], &[])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:8720/prefix/v1/environments/a%2F..%2Fb%3Fc/secrets"
        );
    }

    #[test]
    fn addresses_that_are_not_http_urls_are_refused_without_echoing_them() {
        for bad in ["ftp://x", "not a url", "http://user:pw@host", "mailto:a@b"] {
            let e = Client::new(bad, "k").unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{bad}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }

    #[test]
    fn a_wiped_buffer_keeps_every_byte_across_its_growth() {
        let mut buf = WipedBuf::default();
        let mut expected = Vec::new();
        for i in 0..2_000u32 {
            let piece = i.to_string();
            buf.append(piece.as_bytes());
            expected.extend_from_slice(piece.as_bytes());
        }
        assert_eq!(*buf.0, expected);
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let client = Client::new("http://localhost:1", "ck_admin_topsecret").unwrap();
        assert!(!format!("{client:?}").contains("topsecret"));
    }
}
