//! Coffer's services, independent of any transport.
//!
//! [`Coffer`] owns the keyring and the stores (catalog, secrets, config). It authenticates API keys, authorizes
//! every read and write against the caller's [`Role`], seals values before they reach a
//! store, and sends every change through one path, [`Coffer::apply`], which runs a typed
//! [`Command`]: the stores write each change's audit row and event in its transaction.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
pub mod commands;
mod denials;
mod error;
mod events;
pub mod keys;
mod lifecycle;
pub mod migrate;
pub mod orchestrations;
pub mod redact;
pub mod runtime;
mod service;
mod startup;

pub use audit::{BrokenRow, ChainProblem, ChainReport, ChainWalk, VERIFY_PAGE, verify_chain};
pub use commands::Command;
pub use denials::{DENIAL_WINDOW, DeniedAttempt, MAX_DENIALS_PER_WINDOW, OVERFLOW_ROUTE};
pub use error::CoreError;
pub use events::{EventPage, EventScope, SharedEvent};
pub use lifecycle::{
    KeyStatus, KeyVersionStatus, NONCE_BUDGET_WARNING, REWRAP_BATCH, RewrapCounts, RewrapReport,
    UnreadableParam, UnreadableSigning, ValueStatus, VerifyReport, WalkPosition,
};
pub use service::{
    AUTH_CACHE_TTL, Coffer, Encryption, ImportResult, Imported, KeyDigest, MAX_CONFIG_VALUE_BYTES,
    MAX_IMPORT, MAX_VALUE_BYTES, NewApiKey, Page, Principal, Status,
};
pub use startup::{FirstAdminKey, StartupError, StartupOptions, StartupReport, check_admin_seed};

pub use coffer_store::EventRecord;
pub use coffer_store::{
    ApiKeyId, ApiKeyMeta, AuditQuery, AuditRecord, AuditResult, ConfigEntry, ConfigKey,
    ConfigPutOutcome, EnvName, Environment, FunctionId, NameError, NameSearch, Origin, Revision,
    Role, SecretListing, SecretMeta, SecretName, SecretOrder, SubjectPattern, Timestamp,
    UnreadableMark,
};
