//! The one error type of the services; the API maps each variant to a status and a code.

use coffer_store::{
    ApiKeyId, ConfigKey, EnvName, FunctionId, Revision, RunId, SecretName, StoreError,
};

/// Everything a service call can refuse or fail with. Messages never contain a value.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// No API key, or one that is unknown or revoked.
    #[error("a valid API key is required")]
    Unauthenticated,
    /// The key may not do this.
    #[error("this API key may not do that")]
    Forbidden,
    /// The environment does not exist.
    #[error("environment {0} does not exist")]
    EnvironmentNotFound(EnvName),
    /// The secret does not exist.
    #[error("secret {name} does not exist in environment {env}")]
    SecretNotFound {
        /// Its environment.
        env: EnvName,
        /// Its name.
        name: SecretName,
    },
    /// The config entry does not exist.
    #[error("config key {key} does not exist in environment {env}")]
    ConfigNotFound {
        /// Its environment.
        env: EnvName,
        /// Its key.
        key: ConfigKey,
    },
    /// The function does not exist.
    #[error("function {id} does not exist in environment {env}")]
    FunctionNotFound {
        /// Its environment.
        env: EnvName,
        /// Its id.
        id: FunctionId,
    },
    /// The run does not exist.
    #[error("run {id} does not exist in environment {env}")]
    RunNotFound {
        /// Its environment.
        env: EnvName,
        /// Its id.
        id: RunId,
    },
    /// The orchestration does not exist.
    #[error("orchestration {id} does not exist in environment {env}")]
    OrchestrationNotFound {
        /// Its environment.
        env: EnvName,
        /// Its id, as asked for.
        id: String,
    },
    /// The orchestration run does not exist.
    #[error("orchestration run {id} does not exist in environment {env}")]
    OrchestrationRunNotFound {
        /// Its environment.
        env: EnvName,
        /// Its id, as asked for.
        id: String,
    },
    /// A store does not answer (`/readyz`): the message names which.
    #[error("{0}")]
    NotReady(String),
    /// A bounded resource is full (the message says which); retry once some of it frees.
    #[error("{0}")]
    Busy(String),
    /// An approve or reject for a run that is not waiting for one (any more).
    #[error("orchestration run {0} is not waiting for an approval")]
    NotWaiting(String),
    /// The run's attempt no longer holds its lease (it expired and the run went to another
    /// worker, or the run has ended).
    #[error("this attempt no longer holds the run's lease")]
    LeaseLost,
    /// The API key does not exist.
    #[error("API key {0} does not exist")]
    ApiKeyNotFound(ApiKeyId),
    /// The environment exists already.
    #[error("environment {0} already exists")]
    EnvironmentExists(EnvName),
    /// `expectedRevision` did not match; `current` is 0 when the record does not exist.
    #[error("revision conflict: the current revision is {current}")]
    RevisionConflict {
        /// The record's revision now.
        current: Revision,
    },
    /// Revoking this key would leave no admin key.
    #[error("the last admin API key cannot be revoked; create another admin key first")]
    LastAdminKey,
    /// A value over its limit ([`crate::MAX_VALUE_BYTES`] for a secret,
    /// [`crate::MAX_CONFIG_VALUE_BYTES`] of serialized JSON for a config entry).
    #[error("{what} values are limited to {limit} bytes")]
    ValueTooLarge {
        /// `secret` or `config`.
        what: &'static str,
        /// The limit in bytes.
        limit: usize,
    },
    /// A field that breaks its rule (the message says which rule).
    #[error("{0}")]
    Invalid(String),
    /// The value could not be opened (wrong key, tampered, key version missing).
    #[error("the stored value of {name} in {env} cannot be decrypted")]
    Unreadable {
        /// Its environment.
        env: EnvName,
        /// Its name.
        name: SecretName,
    },
    /// Sealing failed (the system RNG).
    #[error("encryption failed")]
    Crypto,
    /// The storage backend failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { current } => CoreError::RevisionConflict {
                current: current.unwrap_or(0),
            },
            StoreError::LastAdminKey => CoreError::LastAdminKey,
            StoreError::LeaseLost => CoreError::LeaseLost,
            // The key was revoked while its request was in flight: as if it never was valid.
            StoreError::ActorRevoked => CoreError::Unauthenticated,
            other => CoreError::Store(other),
        }
    }
}
