//! Functions: what declares secrets, and how its runs reach it.

use serde::{Deserialize, Serialize};

use crate::ShownOnce;

/// Longest a push delivery may wait for the function's answer, by default.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Longest `timeoutMs` a function may ask for.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Retries after a failed push attempt, by default (so 4 attempts in all).
pub const DEFAULT_RETRIES: u32 = 3;
/// Most retries a function may ask for.
pub const MAX_RETRIES: u32 = 10;
/// Push deliveries of one function in flight at once on one node, by default.
pub const DEFAULT_CONCURRENCY: u32 = 16;
/// Most deliveries of one function a node keeps in flight.
pub const MAX_CONCURRENCY: u32 = 256;
/// Most triggers, declared secrets or declared config keys of one function.
pub const MAX_DECLARED: usize = 64;

/// How a function receives its runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FunctionMode {
    /// Coffer POSTs each job to the function's `url`, signed.
    Push,
    /// Workers with a runtime key poll for jobs.
    Pull,
}

/// An event that starts a run of the function: an exact name (`order.created`) or a
/// NATS-style pattern (`order.*`, `order.>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    /// The event name or pattern.
    #[cfg_attr(feature = "openapi", schema(example = "order.created"))]
    pub event: String,
}

/// A function's definition: `PUT /v1/environments/{env}/functions/{id}`'s body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutFunction {
    /// Events that start a run.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// Secrets of the environment the function needs: exactly these, when set, reach
    /// its runs.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Config keys of the environment the function needs.
    #[serde(default)]
    pub config: Vec<String>,
    /// Push or pull.
    pub mode: FunctionMode,
    /// Where push deliveries go: `https://…`, or `http://127.0.0.1…`/`http://localhost…`
    /// (other `http://` URLs only when the server allows them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long a push attempt waits for the answer (default 10,000, at most 300,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retries after a failed push attempt (default 3, at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Push attempts in flight at once per node (default 16, at most 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// `0`: the function must not exist yet; `n`: it must be at revision n.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<u64>,
}

/// A function's definition as stored: a [`PutFunction`] with its defaults filled in and
/// no precondition. This is the JSON the catalog keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionSpec {
    /// Events that start a run.
    pub triggers: Vec<Trigger>,
    /// Declared secrets.
    pub secrets: Vec<String>,
    /// Declared config keys.
    pub config: Vec<String>,
    /// Push or pull.
    pub mode: FunctionMode,
    /// Where push deliveries go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Push attempt timeout.
    pub timeout_ms: u64,
    /// Retries after a failed push attempt.
    pub retries: u32,
    /// Push attempts in flight at once per node.
    pub concurrency: u32,
}

impl PutFunction {
    /// The definition with defaults filled in (not yet checked: the server checks it).
    pub fn spec(&self) -> FunctionSpec {
        FunctionSpec {
            triggers: self.triggers.clone(),
            secrets: self.secrets.clone(),
            config: self.config.clone(),
            mode: self.mode,
            url: self.url.clone(),
            timeout_ms: self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            retries: self.retries.unwrap_or(DEFAULT_RETRIES),
            concurrency: self.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        }
    }
}

/// A function as the management plane sees it. `signingSecret` is present once: in the
/// answer to its registration or to a rotation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Function {
    /// Its id.
    #[cfg_attr(feature = "openapi", schema(example = "send-invoice"))]
    pub id: String,
    /// Its environment.
    pub environment: String,
    /// Events that start a run.
    pub triggers: Vec<Trigger>,
    /// Declared secrets (names only).
    pub secrets: Vec<String>,
    /// Declared config keys.
    pub config: Vec<String>,
    /// Push or pull.
    pub mode: FunctionMode,
    /// Where push deliveries go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Push attempt timeout.
    pub timeout_ms: u64,
    /// Retries after a failed push attempt.
    pub retries: u32,
    /// Push attempts in flight at once per node.
    pub concurrency: u32,
    /// 1 at registration, +1 per update or rotation.
    pub revision: u64,
    /// The key HMAC-SHA256 signatures of push deliveries are made with: shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<ShownOnce>,
    /// Until when deliveries are also signed with the previous signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub previous_signing_secret_until: Option<String>,
    /// When it was registered (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    /// When it last changed (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: String,
}

/// `GET /v1/environments/{env}/functions`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FunctionList {
    /// One page, in id order.
    pub functions: Vec<Function>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /v1/environments/{env}/functions/{id}/signing-secret`'s optional body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateSigningSecret {
    /// How long deliveries are signed with the old secret too (default 86,400,000: one
    /// day; `0` drops it at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
}
