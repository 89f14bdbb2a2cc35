//! Secret values in HashiCorp Vault / OpenBao KV v1 or v2 (`COFFER_SECRETS_BACKEND=vault`).
//!
//! [`VaultValues`] is a [`coffer_store::ValueStore`]; the service joins it to the catalog
//! with [`coffer_store::ExternalSecrets`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod http;
pub mod kv;
pub mod token;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::{Incomplete, KvVersion, ValueFormat, VaultConfig};
pub use kv::VaultValues;

/// What can go wrong talking to Vault. Never holds a token or a value.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A setting is missing or wrong.
    #[error("vault configuration: {0}")]
    Config(String),
    /// Vault could not be reached, timed out, or answered 5xx.
    #[error("vault unavailable: {0}")]
    Unavailable(String),
    /// Vault refused the credentials (after logging in again once).
    #[error("vault refused the credentials: {0}")]
    Denied(String),
    /// Vault answered something Coffer did not expect.
    #[error("unexpected answer from vault: {0}")]
    Protocol(String),
}

impl From<VaultError> for coffer_store::StoreError {
    fn from(e: VaultError) -> Self {
        coffer_store::StoreError::Unavailable(e.to_string())
    }
}
