//! One Vault server's HTTP API: the address, the namespace header, a bounded timeout per
//! request, and errors that never quote a token or a value.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::VaultError;

/// A client of one Vault server (`COFFER_VAULT_ADDR`), in one namespace.
#[derive(Clone)]
pub struct VaultHttp {
    client: reqwest::Client,
    addr: String,
    namespace: Option<String>,
}

/// A response: its status and its JSON body (`None` for an empty body, as for 204). The
/// body may hold a value or a token, so `Debug` shows the status alone.
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, parsed.
    pub body: Option<Value>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("body", &self.body.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl VaultHttp {
    /// A client of `addr` (`http://127.0.0.1:8200`), every request bounded by `timeout`.
    pub fn new(
        addr: &str,
        namespace: Option<String>,
        timeout: Duration,
    ) -> Result<Self, VaultError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| VaultError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(VaultHttp {
            client,
            addr: addr.trim_end_matches('/').to_owned(),
            namespace: namespace.filter(|n| !n.is_empty()),
        })
    }

    /// The server's address, without a trailing `/`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `METHOD {addr}/v1/{path}` with `token` as `X-Vault-Token` (if any), `body` as JSON
    /// (if any) and extra `headers`. A transport failure or timeout is
    /// [`VaultError::Unavailable`]; any HTTP status is a [`Reply`] (the caller decides).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&SecretString>,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Reply, VaultError> {
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut req = self.client.request(method, &url);
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token.expose_secret());
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| VaultError::Unavailable(describe_transport(&e)))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| VaultError::Unavailable(describe_transport(&e)))?;
        let body = if bytes.is_empty() {
            None
        } else {
            // A body that is not JSON (a proxy's error page) is kept out of errors: it
            // could echo a request.
            serde_json::from_slice(&bytes).ok()
        };
        Ok(Reply { status, body })
    }
}

/// A transport error without its URL (paths name secrets; never a token, but keep it
/// short and stable).
fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "Vault did not answer in time".into()
    } else if e.is_connect() {
        "cannot connect to Vault".into()
    } else {
        "the request to Vault failed".into()
    }
}

/// Vault's `errors` array of a reply, joined (Vault never puts a secret value there).
pub fn vault_errors(reply: &Reply) -> String {
    reply
        .body
        .as_ref()
        .and_then(|b| b.get("errors"))
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("HTTP {}", reply.status.as_u16()))
}
