//! The token Coffer uses, shared by every request: looked up or obtained on first use,
//! renewed at about 2/3 of its TTL by a background task, obtained again when renewal fails
//! or Vault answers 401/403 (once per request).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use crate::VaultError;
use crate::auth::{AuthMethod, Login};
use crate::http::{Reply, VaultHttp, vault_errors};

/// Looks `token` up (`auth/token/lookup-self`) to learn its TTL and renewability (a root
/// token's TTL is 0: it does not expire).
pub async fn look_up(http: &VaultHttp, token: &SecretString) -> Result<Login, VaultError> {
    let reply = http
        .request(
            Method::GET,
            "auth/token/lookup-self",
            Some(token),
            None,
            &[],
        )
        .await?;
    let data = match reply.status {
        s if s.is_success() => reply.body.as_ref().and_then(|b| b.get("data")),
        s if is_denied(s) => return Err(VaultError::Denied(vault_errors(&reply))),
        s if s.is_server_error() => return Err(VaultError::Unavailable(vault_errors(&reply))),
        _ => return Err(VaultError::Protocol(vault_errors(&reply))),
    };
    let data =
        data.ok_or_else(|| VaultError::Protocol("lookup-self answered without data".into()))?;
    let ttl = data.get("ttl").and_then(Value::as_u64).unwrap_or(0);
    Ok(Login {
        token: token.clone(),
        ttl: (ttl > 0).then(|| Duration::from_secs(ttl)),
        renewable: data
            .get("renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// The token every request uses, and the task that keeps it alive.
pub struct TokenSource {
    inner: Arc<Inner>,
    /// The renewal task, started with the first token and stopped with the source.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Inner {
    http: VaultHttp,
    method: AuthMethod,
    current: RwLock<Option<Current>>,
    /// Held while logging in, so that requests failing together log in once.
    login_gate: Mutex<()>,
    /// Wakes the renewal task when the token changed under it.
    changed: Notify,
}

#[derive(Clone)]
struct Current {
    token: SecretString,
    ttl: Option<Duration>,
    renewable: bool,
    obtained: Instant,
    /// Bumped at every login, so that a request that saw a refused token knows whether
    /// someone has already replaced it.
    generation: u64,
}

impl TokenSource {
    /// A source logging in with `method` through `http`. Nothing is sent until the first
    /// [`TokenSource::request`] (or [`TokenSource::ensure`]); the renewal task starts then.
    pub fn new(http: VaultHttp, method: AuthMethod) -> TokenSource {
        TokenSource {
            inner: Arc::new(Inner {
                http,
                method,
                current: RwLock::new(None),
                login_gate: Mutex::new(()),
                changed: Notify::new(),
            }),
            task: std::sync::Mutex::new(None),
        }
    }

    /// The HTTP client.
    pub fn http(&self) -> &VaultHttp {
        &self.inner.http
    }

    /// Logs in now if no token is held yet.
    pub async fn ensure(&self) -> Result<(), VaultError> {
        self.current().await.map(|_| ())
    }

    /// `METHOD path` with the current token. On 401/403 it logs in again once and retries
    /// once (with the `token` method there is nothing to log in with: the answer is
    /// [`VaultError::Denied`]). A refusal that persists is [`VaultError::Denied`]; 5xx is
    /// [`VaultError::Unavailable`]; any other status is returned to the caller.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, VaultError> {
        let current = self.current().await?;
        let reply = self
            .inner
            .http
            .request(method.clone(), path, Some(&current.token), body, &[])
            .await?;
        let reply = if is_denied(reply.status) && self.can_log_in() {
            let fresh = self.log_in_again(current.generation).await?;
            self.inner
                .http
                .request(method, path, Some(&fresh.token), body, &[])
                .await?
        } else {
            reply
        };
        match reply.status {
            s if is_denied(s) => Err(VaultError::Denied(vault_errors(&reply))),
            s if s.is_server_error() => Err(VaultError::Unavailable(vault_errors(&reply))),
            _ => Ok(reply),
        }
    }

    fn can_log_in(&self) -> bool {
        !matches!(self.inner.method, AuthMethod::Token(_))
    }

    /// The token held, logging in first if there is none.
    async fn current(&self) -> Result<Current, VaultError> {
        if let Some(c) = self.inner.held() {
            return Ok(c);
        }
        let _gate = self.inner.login_gate.lock().await;
        if let Some(c) = self.inner.held() {
            return Ok(c);
        }
        let login = self.inner.method.login(&self.inner.http).await?;
        let current = self.inner.install(login);
        let task = tokio::spawn(keep_alive(self.inner.clone()));
        let mut slot = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = slot.replace(task) {
            old.abort();
        }
        Ok(current)
    }

    /// Logs in again unless another request already did since `seen` was handed out.
    async fn log_in_again(&self, seen: u64) -> Result<Current, VaultError> {
        let _gate = self.inner.login_gate.lock().await;
        if let Some(c) = self.inner.held() {
            if c.generation != seen {
                return Ok(c);
            }
            // A 403 is also what a policy answers to a valid token: log in again only when
            // the token itself is refused, so denials never turn into a storm of logins.
            let check = self
                .inner
                .http
                .request(
                    Method::GET,
                    "auth/token/lookup-self",
                    Some(&c.token),
                    None,
                    &[],
                )
                .await?;
            if check.status.is_success() {
                return Ok(c);
            }
        }
        tracing::info!(
            method = self.inner.method.name(),
            "vault refused the token; logging in again"
        );
        let login = self.inner.method.login(&self.inner.http).await?;
        Ok(self.inner.install(login))
    }
}

impl Drop for TokenSource {
    fn drop(&mut self) {
        let slot = self
            .task
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(task) = slot.take() {
            task.abort();
        }
    }
}

impl Inner {
    fn held(&self) -> Option<Current> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn install(&self, login: Login) -> Current {
        let mut slot = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = slot.as_ref().map_or(1, |c| c.generation + 1);
        let current = Current {
            token: login.token,
            ttl: login.ttl,
            renewable: login.renewable,
            obtained: Instant::now(),
            generation,
        };
        *slot = Some(current.clone());
        drop(slot);
        self.changed.notify_one();
        current
    }

    /// Renews the token (`auth/token/renew-self`) and records its new TTL.
    async fn renew(&self, current: &Current) -> Result<(), VaultError> {
        let reply = self
            .http
            .request(
                Method::POST,
                "auth/token/renew-self",
                Some(&current.token),
                Some(&json!({})),
                &[],
            )
            .await?;
        if !reply.status.is_success() {
            return Err(if reply.status.is_server_error() {
                VaultError::Unavailable(vault_errors(&reply))
            } else {
                VaultError::Denied(vault_errors(&reply))
            });
        }
        let auth = reply.body.as_ref().and_then(|b| b.get("auth"));
        let ttl = auth
            .and_then(|a| a.get("lease_duration"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let renewable = auth
            .and_then(|a| a.get("renewable"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut slot = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only the token renewed is updated: a login in the meantime replaced it.
        if let Some(c) = slot.as_mut()
            && c.generation == current.generation
        {
            let ttl = Duration::from_secs(ttl);
            // A lease shorter than the one renewed has reached the token's max TTL: more
            // renewals would come ever closer together; log in again instead (or, with a
            // given token, let it run out).
            let capped = current.ttl.is_some_and(|before| ttl < before);
            // A renewal that answers no lease at all leaves the lease as it was (a token
            // that expires does not become one that never does), and is not renewed again.
            let zero = ttl.is_zero();
            c.ttl = if zero { current.ttl } else { Some(ttl) };
            c.renewable = renewable && !capped && !zero;
            c.obtained = Instant::now();
        }
        Ok(())
    }
}

/// The shortest pause between attempts when renewing or logging in fails.
const RETRY: Duration = Duration::from_secs(1);

/// Renews the token at about 2/3 of its TTL (or logs in again, for a method that can, when
/// the token cannot be renewed or renewal fails). Runs until the source aborts it.
async fn keep_alive(inner: Arc<Inner>) {
    let can_log_in = !matches!(inner.method, AuthMethod::Token(_));
    let mut failed_at: Option<Instant> = None;
    loop {
        let changed = inner.changed.notified();
        let Some(current) = inner.held() else { return };
        let due = match current.ttl {
            // A token without expiry, or one that only a restart can replace: nothing to
            // do until a login replaces it.
            None => None,
            Some(_) if !current.renewable && !can_log_in => None,
            Some(ttl)
                if !can_log_in
                    && failed_at.is_some_and(|_| Instant::now() >= current.obtained + ttl) =>
            {
                tracing::error!("the vault token expired and could not be renewed");
                None
            }
            Some(ttl) => Some(match failed_at {
                Some(at) => at + RETRY.min(ttl / 4).max(Duration::from_millis(200)),
                None => current.obtained + ttl * 2 / 3,
            }),
        };
        let Some(due) = due else {
            changed.await;
            failed_at = None;
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = changed => { failed_at = None; continue; }
        }
        // A login may have replaced the token while we slept.
        if inner.held().map(|c| c.generation) != Some(current.generation) {
            failed_at = None;
            continue;
        }
        let outcome = if current.renewable {
            match inner.renew(&current).await {
                Ok(()) => Ok(()),
                Err(e) if can_log_in => {
                    tracing::warn!(error = %e, "vault token renewal failed; logging in again");
                    relogin(&inner, current.generation).await
                }
                Err(e) => Err(e),
            }
        } else {
            relogin(&inner, current.generation).await
        };
        match outcome {
            Ok(()) => failed_at = None,
            Err(e) => {
                tracing::warn!(error = %e, "vault token could not be kept alive; retrying");
                failed_at = Some(Instant::now());
            }
        }
    }
}

async fn relogin(inner: &Inner, seen: u64) -> Result<(), VaultError> {
    let _gate = inner.login_gate.lock().await;
    if inner.held().map(|c| c.generation) != Some(seen) {
        return Ok(());
    }
    let login = inner.method.login(&inner.http).await?;
    inner.install(login);
    Ok(())
}

fn is_denied(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}
