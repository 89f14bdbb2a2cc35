//! Kubernetes auth (owned by the auth work; see `auth/mod.rs`).

use super::{KubernetesAuth, Login};
use crate::VaultError;
use crate::http::VaultHttp;

/// Logs in at `auth/{mount}/login` with the service-account JWT read from `token_path`.
pub async fn login(_cfg: &KubernetesAuth, _http: &VaultHttp) -> Result<Login, VaultError> {
    Err(VaultError::Config(
        "kubernetes auth is not built yet".into(),
    ))
}
