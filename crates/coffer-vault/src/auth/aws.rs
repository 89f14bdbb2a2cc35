//! AWS IAM auth (owned by the auth work; see `auth/mod.rs`).

use super::{AwsAuth, Login};
use crate::VaultError;
use crate::http::VaultHttp;

/// Logs in at `auth/{mount}/login` with a SigV4-signed `sts:GetCallerIdentity` request.
pub async fn login(_cfg: &AwsAuth, _http: &VaultHttp) -> Result<Login, VaultError> {
    Err(VaultError::Config("aws auth is not built yet".into()))
}
