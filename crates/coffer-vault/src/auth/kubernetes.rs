//! Kubernetes auth: the pod's service-account JWT, read from its file at every login (the
//! kubelet rotates it), traded at `auth/{mount}/login` for a Vault token.
//!
//! Also home of [`post_login`], the `auth/{mount}/login` exchange every login method ends
//! with.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{KubernetesAuth, Login};
use crate::VaultError;
use crate::http::{Reply, VaultHttp, vault_errors};

/// Logs in at `auth/{mount}/login` with the service-account JWT read from `token_path`.
///
/// A missing, unreadable or empty token file is [`VaultError::Config`] (naming the path,
/// never the contents); Vault's refusal (400/401/403) is [`VaultError::Denied`].
pub async fn login(cfg: &KubernetesAuth, http: &VaultHttp) -> Result<Login, VaultError> {
    let jwt = read_jwt(cfg).await?;
    let body = json!({ "role": cfg.role, "jwt": jwt.expose_secret() });
    post_login(http, &cfg.mount, &body).await
}

/// `POST auth/{mount}/login` with `body`, and the `auth` block of the answer as a
/// [`Login`]: 400/401/403 are [`VaultError::Denied`] (with Vault's `errors`), 429 and 5xx
/// [`VaultError::Unavailable`], anything else unexpected [`VaultError::Protocol`].
pub(crate) async fn post_login(
    http: &VaultHttp,
    mount: &str,
    body: &Value,
) -> Result<Login, VaultError> {
    let path = format!("auth/{}/login", mount.trim_matches('/'));
    let reply = http
        .request(Method::POST, &path, None, Some(body), &[])
        .await?;
    login_from_reply(&reply)
}

/// The [`Login`] of a login answer (see [`post_login`]).
fn login_from_reply(reply: &Reply) -> Result<Login, VaultError> {
    match reply.status {
        s if s.is_success() => {}
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            return Err(VaultError::Denied(vault_errors(reply)));
        }
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            return Err(VaultError::Unavailable(format!(
                "login answered {}",
                vault_errors(reply)
            )));
        }
        _ => {
            return Err(VaultError::Protocol(format!(
                "login answered {}",
                vault_errors(reply)
            )));
        }
    }
    let auth = reply
        .body
        .as_ref()
        .and_then(|b| b.get("auth"))
        .filter(|a| a.is_object())
        .ok_or_else(|| VaultError::Protocol("the login answer has no `auth` block".into()))?;
    let token = auth
        .get("client_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            VaultError::Protocol("the login answer has no `auth.client_token`".into())
        })?;
    let lease = auth
        .get("lease_duration")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            VaultError::Protocol("the login answer has no numeric `auth.lease_duration`".into())
        })?;
    let renewable = auth
        .get("renewable")
        .and_then(Value::as_bool)
        .ok_or_else(|| VaultError::Protocol("the login answer has no `auth.renewable`".into()))?;
    Ok(Login {
        token: SecretString::from(token.to_owned()),
        ttl: (lease > 0).then(|| Duration::from_secs(lease)),
        renewable,
    })
}

/// The JWT in `token_path`, trimmed (the file usually ends with no newline, but a
/// hand-made one may).
async fn read_jwt(cfg: &KubernetesAuth) -> Result<SecretString, VaultError> {
    let path = &cfg.token_path;
    let raw = tokio::fs::read_to_string(path).await.map_err(|e| {
        VaultError::Config(format!(
            "cannot read the Kubernetes service-account token {}: {e}",
            path.display()
        ))
    })?;
    let raw = SecretString::from(raw);
    let jwt = raw.expose_secret().trim();
    if jwt.is_empty() {
        return Err(VaultError::Config(format!(
            "the Kubernetes service-account token {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(jwt.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: Value) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body: Some(body),
        }
    }

    #[test]
    fn an_auth_block_becomes_a_login_with_its_lease() {
        let login = login_from_reply(&reply(
            200,
            json!({"auth": {"client_token": "s.abc", "lease_duration": 60, "renewable": true}}),
        ))
        .unwrap();
        assert_eq!(login.token.expose_secret(), "s.abc");
        assert_eq!(login.ttl, Some(Duration::from_secs(60)));
        assert!(login.renewable);
        assert!(!format!("{login:?}").contains("s.abc"));
    }

    #[test]
    fn a_zero_lease_means_no_expiry() {
        let login = login_from_reply(&reply(
            200,
            json!({"auth": {"client_token": "s.abc", "lease_duration": 0, "renewable": false}}),
        ))
        .unwrap();
        assert_eq!(login.ttl, None);
    }

    #[test]
    fn refusals_outages_and_odd_answers_are_told_apart() {
        let denied = reply(403, json!({"errors": ["permission denied"]}));
        assert!(
            matches!(login_from_reply(&denied), Err(VaultError::Denied(m)) if m == "permission denied")
        );
        let down = reply(503, json!({"errors": ["Vault is sealed"]}));
        assert!(matches!(
            login_from_reply(&down),
            Err(VaultError::Unavailable(_))
        ));
        let no_token = reply(
            200,
            json!({"auth": {"lease_duration": 1, "renewable": true}}),
        );
        assert!(matches!(
            login_from_reply(&no_token),
            Err(VaultError::Protocol(_))
        ));
        let no_auth = Reply {
            status: StatusCode::OK,
            body: None,
        };
        assert!(matches!(
            login_from_reply(&no_auth),
            Err(VaultError::Protocol(_))
        ));
    }
}
