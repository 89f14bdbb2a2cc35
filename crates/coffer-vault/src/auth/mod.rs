//! How Coffer obtains a Vault token: given (`token`), or by logging in with a Kubernetes
//! service-account token (`kubernetes`) or a SigV4-signed `sts:GetCallerIdentity` request
//! (`aws`). Renewal and re-login live in [`crate::token`].

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::VaultError;
use crate::http::VaultHttp;

pub mod aws;
pub mod kubernetes;

/// A token and how long it lives.
pub struct Login {
    /// The client token.
    pub token: SecretString,
    /// Its lease (`None`: it does not expire, as a root token).
    pub ttl: Option<Duration>,
    /// Whether `auth/token/renew-self` can extend it.
    pub renewable: bool,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("token", &"<redacted>")
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .finish()
    }
}

/// `COFFER_VAULT_AUTH_METHOD` and its settings.
#[derive(Clone)]
pub enum AuthMethod {
    /// `token`: `COFFER_VAULT_TOKEN`.
    Token(SecretString),
    /// `kubernetes`.
    Kubernetes(KubernetesAuth),
    /// `aws` (IAM).
    Aws(AwsAuth),
}

impl AuthMethod {
    /// `token`, `kubernetes` or `aws`.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::Token(_) => "token",
            AuthMethod::Kubernetes(_) => "kubernetes",
            AuthMethod::Aws(_) => "aws",
        }
    }

    /// Logs in (for `token`: looks the token up, to learn its TTL and renewability).
    pub async fn login(&self, http: &VaultHttp) -> Result<Login, VaultError> {
        match self {
            AuthMethod::Token(token) => crate::token::look_up(http, token).await,
            AuthMethod::Kubernetes(k) => kubernetes::login(k, http).await,
            AuthMethod::Aws(a) => aws::login(a, http).await,
        }
    }
}

/// Kubernetes auth: `COFFER_VAULT_K8S_ROLE`, `COFFER_VAULT_K8S_TOKEN_PATH` (default
/// `/var/run/secrets/kubernetes.io/serviceaccount/token`), `COFFER_VAULT_K8S_MOUNT`
/// (default `kubernetes`).
#[derive(Clone, Debug)]
pub struct KubernetesAuth {
    /// The Vault role to log in as.
    pub role: String,
    /// The file holding the service-account JWT (read at every login: it is rotated).
    pub token_path: PathBuf,
    /// The auth mount (`auth/{mount}/login`).
    pub mount: String,
}

/// AWS IAM auth: `COFFER_VAULT_AWS_ROLE`, `COFFER_VAULT_AWS_MOUNT` (default `aws`),
/// `COFFER_VAULT_AWS_REGION` (default `AWS_REGION`, else `us-east-1`),
/// `COFFER_VAULT_AWS_STS_ENDPOINT` (default `https://sts.{region}.amazonaws.com`),
/// `COFFER_VAULT_AWS_SERVER_ID` (the `X-Vault-AWS-IAM-Server-ID` header, signed, when set).
/// Credentials come from the standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or web identity
/// (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`).
#[derive(Clone, Debug)]
pub struct AwsAuth {
    /// The Vault role to log in as.
    pub role: String,
    /// The auth mount (`auth/{mount}/login`).
    pub mount: String,
    /// The region the STS request is signed for.
    pub region: String,
    /// The STS endpoint the signed request names (Vault sends it there).
    pub sts_endpoint: String,
    /// The `X-Vault-AWS-IAM-Server-ID` header value, if the Vault role requires one.
    pub server_id: Option<String>,
}
