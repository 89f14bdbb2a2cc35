//! Events and the runs they start.

use serde::{Deserialize, Serialize};

/// `POST /v1/environments/{env}/events`'s body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendEvent {
    /// The event's name: dot-separated tokens of letters, digits, `_` and `-`.
    #[cfg_attr(feature = "openapi", schema(example = "order.created"))]
    pub name: String,
    /// Any JSON, handed to each run as `event.data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// A run an event started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunRef {
    /// The run's id.
    pub id: String,
    /// The function it runs.
    pub function_id: String,
}

/// `POST /v1/environments/{env}/events`'s 202 answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventAccepted {
    /// One run per function whose trigger matched (for a replayed `Idempotency-Key`, the
    /// first send's runs).
    pub runs: Vec<RunRef>,
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for delivery (or for its retry's backoff).
    Queued,
    /// Delivered, or leased to a worker, and not finished.
    Running,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error, or out of attempts.
    Failed,
}

/// A run as the management plane sees it: its output and error are redacted (any
/// resolved secret value in them reads `********`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// Its id.
    pub id: String,
    /// The function it runs.
    pub function_id: String,
    /// Its environment.
    pub environment: String,
    /// Where it is.
    pub status: RunStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// The name of the event that started it.
    pub event: String,
    /// A successful run's output (`null` is an output like any other).
    #[serde(
        default,
        deserialize_with = "crate::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<serde_json::Value>,
    /// The last attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was started (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    /// When it last changed (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: String,
}

/// `GET /v1/environments/{env}/runs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunList {
    /// One page, newest first.
    pub runs: Vec<Run>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
