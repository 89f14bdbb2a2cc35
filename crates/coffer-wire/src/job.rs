//! The job document — what a run (or `coffer run`) receives, values included — and the
//! runtime routes' requests.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Longest a poll may wait for a job.
pub const MAX_WAIT_MS: u64 = 30_000;
/// A pull lease's length when the worker names none.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// Longest lease a worker may ask for (it extends it with heartbeats).
pub const MAX_LEASE_MS: u64 = 600_000;

/// The secret values of a job: exactly the function's declared secrets that are set.
/// `Debug` shows the names only; values live in `SecretString`s (zeroed on drop).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secrets(BTreeMap<String, SecretString>);

impl Secrets {
    /// An empty set.
    pub fn new() -> Self {
        Secrets::default()
    }

    /// Adds a value.
    pub fn insert(&mut self, name: String, value: SecretString) {
        self.0.insert(name, value);
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.expose_secret())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The names present, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Name and value pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.expose_secret()))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Secrets {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Secrets {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .additional_properties(Some(String::schema()))
            .description(Some("Declared secrets that are set: name → value."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Secrets {}

/// The event a run was started by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    /// Its name.
    pub name: String,
    /// Its data (`null` when it had none).
    pub data: serde_json::Value,
}

/// What a run receives: the push body, the poll answer, and (without `runId`, `attempt`
/// and `event`) the resolve answer. `secrets` holds exactly the function's declared
/// secrets that are set, resolved when the job was handed over; `config` its declared
/// config keys that are set.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// The run (absent from a resolve answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The function.
    pub function_id: String,
    /// Its environment.
    pub environment: String,
    /// 1 for the first attempt, +1 per retry or re-lease: with `runId`, what a function
    /// de-duplicates on (delivery is at least once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The event that started the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<JobEvent>,
    /// Declared secrets that are set: name → value.
    pub secrets: Secrets,
    /// Declared config keys that are set: key → JSON value.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Parameters for the function (orchestration steps); `{}` otherwise.
    #[serde(default = "empty_object")]
    pub trigger_params: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("run_id", &self.run_id)
            .field("function_id", &self.function_id)
            .field("environment", &self.environment)
            .field("attempt", &self.attempt)
            .field("secrets", &self.secrets)
            .field("config", &self.config.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// `POST /v1/environments/{env}/workers/poll`'s body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Poll {
    /// The pull functions this worker runs (at least one).
    #[cfg_attr(feature = "openapi", schema(example = json!(["send-invoice"])))]
    pub functions: Vec<String>,
    /// How long to wait for a job before answering 204 (default 0, at most 30,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// How long the run is the worker's (default 30,000, at most 600,000); extend it with
    /// `POST …/runs/{id}/heartbeat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

/// `POST /v1/environments/{env}/runs/{id}/complete`'s body: `output` or `error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Complete {
    /// The run's output (it succeeded); `null` is an output like any other.
    #[serde(
        default,
        deserialize_with = "crate::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The attempt being completed, as the job said. Sent by Coffer's SDKs; without it the
    /// completion applies to whichever attempt holds an unexpired lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// `POST /v1/environments/{env}/runs/{id}/heartbeat`'s body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Heartbeat {
    /// The attempt whose lease to extend.
    pub attempt: u32,
    /// The new lease, from now (default 30,000, at most 600,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

/// `POST /v1/environments/{env}/functions/{id}/resolve`'s optional body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resolve {
    /// Only these of the declared secrets (each must be declared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
}
