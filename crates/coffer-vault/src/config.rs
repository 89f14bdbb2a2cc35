//! `COFFER_VAULT_*`: where Vault is, how Coffer logs in, which KV mount and path hold the
//! values and in which form. Parsed once into a [`VaultConfig`]; a setting that is missing
//! or wrong is an [`Incomplete`] naming the variable (the service then falls back to `db`,
//! or refuses to start with `--require-backend`).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::auth::{AuthMethod, AwsAuth, KubernetesAuth};

/// Everything [`crate::VaultValues::connect`] needs.
#[derive(Clone)]
pub struct VaultConfig {
    /// `COFFER_VAULT_ADDR`, e.g. `https://vault.internal:8200` (no trailing `/`).
    pub addr: String,
    /// `COFFER_VAULT_AUTH_METHOD` (default `token`) and its settings.
    pub auth: AuthMethod,
    /// `COFFER_VAULT_KV_VERSION` (default 2).
    pub kv_version: KvVersion,
    /// `COFFER_VAULT_SECRET_PATH`: values live at `{secret_path}/{env}/{name}`.
    pub secret_path: String,
    /// `COFFER_VAULT_SECRET_METADATA_PATH` (KV v2): where versions are listed and removed.
    /// For KV v1 it is the secret path.
    pub metadata_path: String,
    /// `COFFER_VAULT_VALUE_FORMAT` (default `raw`).
    pub value_format: ValueFormat,
    /// `COFFER_VAULT_NAMESPACE` (Vault Enterprise / OpenBao namespaces), sent as
    /// `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// `COFFER_VAULT_TIMEOUT_MS` (default 5000): the bound on every request.
    pub timeout: Duration,
}

/// The KV secrets engine's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvVersion {
    /// KV v1: one value per key, no versions, no check-and-set.
    V1,
    /// KV v2: versions, check-and-set, metadata.
    V2,
}

/// What Coffer hands Vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// Plaintext, so that Vault's own clients (`bao kv get -field=value`) read the values;
    /// Vault's protection at rest guards them.
    Raw,
    /// Coffer's sealed blobs: Vault never holds a plaintext.
    Sealed,
}

/// A Vault setting that is missing or invalid; the text names the variable and never
/// quotes a value that could be a credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Incomplete(pub String);

const DEFAULT_K8S_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const DEFAULT_TIMEOUT_MS: u64 = 5_000;

impl VaultConfig {
    /// Reads the settings through `get` (`|k| std::env::var(k).ok()` in the service); an
    /// empty variable counts as not set.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<VaultConfig, Incomplete> {
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &str| var(name).ok_or_else(|| Incomplete(format!("{name} not set")));

        let addr = required("COFFER_VAULT_ADDR")?;
        if !(addr.starts_with("http://") || addr.starts_with("https://")) {
            return Err(Incomplete(
                "COFFER_VAULT_ADDR must start with http:// or https://".into(),
            ));
        }
        let addr = addr.trim_end_matches('/').to_owned();

        let auth = match var("COFFER_VAULT_AUTH_METHOD").as_deref() {
            None | Some("token") => {
                // Not trimmed: a token is used exactly as given (only an empty one is unset).
                let token = get("COFFER_VAULT_TOKEN")
                    .filter(|t| !t.trim().is_empty())
                    .ok_or_else(|| Incomplete("COFFER_VAULT_TOKEN not set".into()))?;
                AuthMethod::Token(SecretString::from(token.trim().to_owned()))
            }
            Some("kubernetes") => AuthMethod::Kubernetes(KubernetesAuth {
                role: required("COFFER_VAULT_K8S_ROLE")?,
                token_path: PathBuf::from(
                    var("COFFER_VAULT_K8S_TOKEN_PATH")
                        .unwrap_or_else(|| DEFAULT_K8S_TOKEN_PATH.to_owned()),
                ),
                mount: mount(var("COFFER_VAULT_K8S_MOUNT"), "kubernetes"),
            }),
            Some("aws") => {
                let role = required("COFFER_VAULT_AWS_ROLE")?;
                let region = var("COFFER_VAULT_AWS_REGION")
                    .or_else(|| var("AWS_REGION"))
                    .unwrap_or_else(|| "us-east-1".to_owned());
                let sts_endpoint = var("COFFER_VAULT_AWS_STS_ENDPOINT")
                    .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
                AuthMethod::Aws(AwsAuth {
                    role,
                    mount: mount(var("COFFER_VAULT_AWS_MOUNT"), "aws"),
                    region,
                    sts_endpoint,
                    server_id: var("COFFER_VAULT_AWS_SERVER_ID"),
                })
            }
            Some(_) => {
                return Err(Incomplete(
                    "COFFER_VAULT_AUTH_METHOD must be token, kubernetes or aws".into(),
                ));
            }
        };

        let kv_version = match var("COFFER_VAULT_KV_VERSION").as_deref() {
            None | Some("2") => KvVersion::V2,
            Some("1") => KvVersion::V1,
            Some(_) => return Err(Incomplete("COFFER_VAULT_KV_VERSION must be 1 or 2".into())),
        };
        let secret_path = match var("COFFER_VAULT_SECRET_PATH") {
            Some(p) => clean_path(&p),
            None if kv_version == KvVersion::V2 => "secret/data/coffer".to_owned(),
            None => "secret/coffer".to_owned(),
        };
        if secret_path.is_empty() {
            return Err(Incomplete(
                "COFFER_VAULT_SECRET_PATH must name a path under a mount".into(),
            ));
        }
        let metadata_path = match kv_version {
            KvVersion::V1 => secret_path.clone(),
            KvVersion::V2 => match var("COFFER_VAULT_SECRET_METADATA_PATH") {
                Some(p) => clean_path(&p),
                None => metadata_path_of(&secret_path).ok_or_else(|| {
                    Incomplete(
                        "COFFER_VAULT_SECRET_METADATA_PATH not set (the secret path has no \
                         /data/ to derive it from)"
                            .into(),
                    )
                })?,
            },
        };

        let value_format = match var("COFFER_VAULT_VALUE_FORMAT").as_deref() {
            None | Some("raw") => ValueFormat::Raw,
            Some("sealed") => ValueFormat::Sealed,
            Some(_) => {
                return Err(Incomplete(
                    "COFFER_VAULT_VALUE_FORMAT must be raw or sealed".into(),
                ));
            }
        };
        let timeout_ms = match var("COFFER_VAULT_TIMEOUT_MS") {
            None => DEFAULT_TIMEOUT_MS,
            Some(ms) => ms.parse::<u64>().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                Incomplete(
                    "COFFER_VAULT_TIMEOUT_MS must be a positive number of milliseconds".into(),
                )
            })?,
        };

        Ok(VaultConfig {
            addr,
            auth,
            kv_version,
            secret_path,
            metadata_path,
            value_format,
            namespace: var("COFFER_VAULT_NAMESPACE").map(|ns| clean_path(&ns)),
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

impl std::fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("VaultConfig");
        d.field("addr", &self.addr)
            .field("auth_method", &self.auth.name());
        // The token is never shown; the other methods' settings hold no credential.
        match &self.auth {
            AuthMethod::Token(_) => d.field("token", &"<redacted>"),
            AuthMethod::Kubernetes(k) => d.field("kubernetes", k),
            AuthMethod::Aws(a) => d.field("aws", a),
        };
        d.field("kv_version", &self.kv_version)
            .field("secret_path", &self.secret_path)
            .field("metadata_path", &self.metadata_path)
            .field("value_format", &self.value_format)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `secret/data/coffer` → `secret/metadata/coffer` (the first `/data/` segment, or a
/// trailing `/data`); `None` when there is none.
pub fn metadata_path_of(secret_path: &str) -> Option<String> {
    if let Some(i) = secret_path.find("/data/") {
        return Some(format!(
            "{}/metadata/{}",
            &secret_path[..i],
            &secret_path[i + "/data/".len()..]
        ));
    }
    secret_path
        .strip_suffix("/data")
        .map(|mount| format!("{mount}/metadata"))
}

/// A path without leading or trailing slashes (`/secret/data/coffer/` → `secret/data/coffer`).
fn clean_path(p: &str) -> String {
    p.trim_matches('/').to_owned()
}

fn mount(given: Option<String>, default: &str) -> String {
    given.map_or_else(|| default.to_owned(), |m| clean_path(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_path_replaces_the_first_data_segment() {
        assert_eq!(
            metadata_path_of("secret/data/coffer").as_deref(),
            Some("secret/metadata/coffer")
        );
        assert_eq!(
            metadata_path_of("kv/data/a/data/b").as_deref(),
            Some("kv/metadata/a/data/b")
        );
        assert_eq!(metadata_path_of("kv/data").as_deref(), Some("kv/metadata"));
        assert_eq!(metadata_path_of("kv/coffer"), None);
    }
}
