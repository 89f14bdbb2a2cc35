//! The journal: what every change leaves behind, written by the store in the transaction
//! that makes the change.
//!
//! A store builds one [`Change`] per changed resource from the outcome of its write (never
//! from what the caller asked for), and appends, in the same transaction:
//! - an **audit row** ([`AuditRecord`]): append-only and hash-chained — `hash` is the
//!   SHA-256 of the previous row's hash and this row's [`AuditRecord::canonical`] form;
//! - an **event** ([`EventRecord`]) for the changes that publish one, the outbox that feeds
//!   the live stream and NATS; its `id` is its sequence number.
//!
//! Denied attempts ([`Denial`]) are audited too, coalesced by the service, without an event.
//! Nothing here ever carries a secret or config value.

use serde::{Deserialize, Serialize};

use crate::{
    ApiKeyId, ApiKeyMeta, ConfigEntry, ConfigPutOutcome, EnvName, Environment, FlowRecord,
    FunctionPutOutcome, FunctionRecord, OrchestrationPutOutcome, OrchestrationRecord, PutOutcome,
    Resolution, Revision, RunId, RunRecord, RunStatus, SecretMeta, Timestamp,
};

/// The hash the first audit row chains from.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most characters of a remote address or user agent kept in an audit row.
pub const MAX_ORIGIN_CHARS: usize = 256;

/// Where a request came from, as an audit row records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The peer's address (`ip:port`).
    pub remote: Option<String>,
    /// The `User-Agent` header, bounded to [`MAX_ORIGIN_CHARS`].
    pub user_agent: Option<String>,
}

impl Origin {
    /// An origin with both parts bounded to [`MAX_ORIGIN_CHARS`] printable characters.
    pub fn new(remote: Option<String>, user_agent: Option<&str>) -> Self {
        let bound = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_control())
                .take(MAX_ORIGIN_CHARS)
                .collect()
        };
        Origin {
            remote: remote.map(|r| bound(&r)),
            user_agent: user_agent.map(bound),
        }
    }
}

/// Declares [`Action`] and [`Action::ALL`] from one list, so no action can be left out of
/// the tests that walk them all.
macro_rules! actions {
    ($(#[$meta:meta])* pub enum Action { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        pub enum Action {
            $($(#[$vmeta])* $variant,)*
        }

        impl Action {
            /// Every action, in declaration order, for tests that must cover them all.
            pub const ALL: &[Action] = &[$(Action::$variant,)*];
        }
    };
}

actions! {
    /// Every kind of change Coffer makes, as `action` in the audit log. Each publishes exactly
    /// one event, except [`Action::SecretUnchanged`] (audit only: an import found the value it
    /// was sent already stored).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Action {
        /// `system.environment.{name}.created`
        EnvironmentCreated,
        /// `system.environment.{name}.deleted`
        EnvironmentDeleted,
        /// `system.secret.{name}.created`
        SecretCreated,
        /// `system.secret.{name}.updated`
        SecretUpdated,
        /// `system.secret.{name}.deleted`
        SecretDeleted,
        /// Audit only: an import left a secret as it was.
        SecretUnchanged,
        /// `system.config.{key}.created`
        ConfigCreated,
        /// `system.config.{key}.updated`
        ConfigUpdated,
        /// `system.config.{key}.deleted`
        ConfigDeleted,
        /// `system.apikey.{id}.created`
        ApiKeyCreated,
        /// `system.apikey.{id}.revoked`
        ApiKeyRevoked,
        /// `system.keys.rewrapped`: a batch of values re-encrypted (or dev-mode plaintext
        /// encrypted) without changing what they mean.
        KeysRewrapped,
        /// `system.keys.{vN}.registered`: a key version's canary stored on its first use.
        KeyRegistered,
        /// `system.keys.verified`: a batch of values opened to check they still can be
        /// (`coffer keys verify`, the start-up migration walk); `count` values checked.
        KeysVerified,
        /// `system.function.{id}.created`
        FunctionCreated,
        /// `system.function.{id}.updated`
        FunctionUpdated,
        /// `system.function.{id}.deleted`
        FunctionDeleted,
        /// `system.function.{id}.rotated`: its signing secret was replaced.
        FunctionRotated,
        /// Audit only: a function's declared secrets were resolved for a run or a process
        /// (names in the row's detail, never values).
        FunctionResolved,
        /// Audit only: an event was accepted (`count`: the runs it started).
        EventReceived,
        /// `system.run.{id}.queued`: started, or queued again for a retry.
        RunQueued,
        /// `system.run.{id}.running`: an attempt was leased.
        RunRunning,
        /// `system.run.{id}.succeeded`
        RunSucceeded,
        /// `system.run.{id}.failed`
        RunFailed,
        /// Audit only: ended runs older than the retention were deleted (`count` of them).
        RunsPruned,
        /// `system.orchestration.{id}.created`
        OrchestrationCreated,
        /// `system.orchestration.{id}.updated`
        OrchestrationUpdated,
        /// `system.orchestration.{id}.deleted`
        OrchestrationDeleted,
        /// `system.orchestration.run.{id}.started`
        FlowStarted,
        /// `system.orchestration.run.{id}.waiting`: an approval step waits for a decision.
        FlowWaiting,
        /// `system.orchestration.run.{id}.approved`: someone approved its waiting step.
        FlowApproved,
        /// `system.orchestration.run.{id}.rejected`: someone rejected its waiting step (the
        /// run ends `rejected`).
        FlowRejected,
        /// `system.orchestration.run.{id}.succeeded`
        FlowSucceeded,
        /// `system.orchestration.run.{id}.failed`
        FlowFailed,
    }
}

impl Action {
    /// The resource kind and the verb: `("secret", "created")`.
    pub fn parts(self) -> (&'static str, &'static str) {
        match self {
            Action::EnvironmentCreated => ("environment", "created"),
            Action::EnvironmentDeleted => ("environment", "deleted"),
            Action::SecretCreated => ("secret", "created"),
            Action::SecretUpdated => ("secret", "updated"),
            Action::SecretDeleted => ("secret", "deleted"),
            Action::SecretUnchanged => ("secret", "unchanged"),
            Action::ConfigCreated => ("config", "created"),
            Action::ConfigUpdated => ("config", "updated"),
            Action::ConfigDeleted => ("config", "deleted"),
            Action::ApiKeyCreated => ("apikey", "created"),
            Action::ApiKeyRevoked => ("apikey", "revoked"),
            Action::KeysRewrapped => ("keys", "rewrapped"),
            Action::KeyRegistered => ("keys", "registered"),
            Action::KeysVerified => ("keys", "verified"),
            Action::FunctionCreated => ("function", "created"),
            Action::FunctionUpdated => ("function", "updated"),
            Action::FunctionDeleted => ("function", "deleted"),
            Action::FunctionRotated => ("function", "rotated"),
            Action::FunctionResolved => ("function", "resolved"),
            Action::EventReceived => ("event", "received"),
            Action::RunQueued => ("run", "queued"),
            Action::RunRunning => ("run", "running"),
            Action::RunSucceeded => ("run", "succeeded"),
            Action::RunFailed => ("run", "failed"),
            Action::RunsPruned => ("runs", "pruned"),
            Action::OrchestrationCreated => ("orchestration", "created"),
            Action::OrchestrationUpdated => ("orchestration", "updated"),
            Action::OrchestrationDeleted => ("orchestration", "deleted"),
            Action::FlowStarted => ("orchestration.run", "started"),
            Action::FlowWaiting => ("orchestration.run", "waiting"),
            Action::FlowApproved => ("orchestration.run", "approved"),
            Action::FlowRejected => ("orchestration.run", "rejected"),
            Action::FlowSucceeded => ("orchestration.run", "succeeded"),
            Action::FlowFailed => ("orchestration.run", "failed"),
        }
    }

    /// `secret.created`, as the audit log's `action` column spells it.
    pub fn name(self) -> String {
        let (kind, verb) = self.parts();
        format!("{kind}.{verb}")
    }

    /// Whether this action publishes an event.
    pub fn publishes(self) -> bool {
        !matches!(
            self,
            Action::SecretUnchanged
                | Action::FunctionResolved
                | Action::EventReceived
                | Action::RunsPruned
        )
    }

    /// Whether its rows carry a count (values of a rewrap or verify batch, runs an event
    /// started); an event of another action has no `count`.
    pub fn counts_values(self) -> bool {
        matches!(
            self,
            Action::KeysRewrapped
                | Action::KeysVerified
                | Action::EventReceived
                | Action::RunsPruned
        )
    }
}

/// One change to one resource, built by a store from the outcome of its write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub action: Action,
    /// The environment it happened in, if any.
    pub environment: Option<EnvName>,
    /// The resource's name or id (`None` for `system.keys.rewrapped`).
    pub name: Option<String>,
    /// The resource's revision after the change (before it, for a deletion), if it has one.
    pub revision: Option<Revision>,
    /// When: the stored `updatedAt` where the resource has one.
    pub at: Timestamp,
    /// How many values a rewrap batch replaced or a verify batch checked, or runs an
    /// event started.
    pub count: Option<u64>,
    /// Audit only, compact JSON: what a resolution handed over (names, never values).
    pub detail: Option<String>,
}

impl Change {
    fn new(
        action: Action,
        environment: Option<EnvName>,
        name: Option<String>,
        at: Timestamp,
    ) -> Self {
        Change {
            action,
            environment,
            name,
            revision: None,
            at,
            count: None,
            detail: None,
        }
    }

    /// The event subject: `system.{kind}.{name}.{verb}` (`system.{kind}.{verb}` without a name).
    pub fn subject(&self) -> String {
        let (kind, verb) = self.action.parts();
        match &self.name {
            Some(name) => format!("system.{kind}.{name}.{verb}"),
            None => format!("system.{kind}.{verb}"),
        }
    }

    /// A secret was created or updated.
    pub fn secret_written(out: &PutOutcome) -> Self {
        let action = if out.created {
            Action::SecretCreated
        } else {
            Action::SecretUpdated
        };
        Change::secret(action, &out.meta, out.meta.updated_at)
    }

    /// A secret was deleted at `at`; `meta` is its last metadata.
    pub fn secret_deleted(meta: &SecretMeta, at: Timestamp) -> Self {
        Change::secret(Action::SecretDeleted, meta, at)
    }

    /// An import found this secret's value already stored (audit only).
    pub fn secret_unchanged(meta: &SecretMeta, at: Timestamp) -> Self {
        Change::secret(Action::SecretUnchanged, meta, at)
    }

    fn secret(action: Action, meta: &SecretMeta, at: Timestamp) -> Self {
        Change {
            revision: Some(meta.revision),
            ..Change::new(
                action,
                Some(meta.environment.clone()),
                Some(meta.name.to_string()),
                at,
            )
        }
    }

    /// A config entry was created or updated.
    pub fn config_written(out: &ConfigPutOutcome) -> Self {
        let action = if out.created {
            Action::ConfigCreated
        } else {
            Action::ConfigUpdated
        };
        Change::config(action, &out.entry, out.entry.updated_at)
    }

    /// A config entry was deleted at `at`; `entry` is what it was.
    pub fn config_deleted(entry: &ConfigEntry, at: Timestamp) -> Self {
        Change::config(Action::ConfigDeleted, entry, at)
    }

    fn config(action: Action, entry: &ConfigEntry, at: Timestamp) -> Self {
        Change {
            revision: Some(entry.revision),
            ..Change::new(
                action,
                Some(entry.environment.clone()),
                Some(entry.key.to_string()),
                at,
            )
        }
    }

    /// An environment was created.
    pub fn environment_created(env: &Environment) -> Self {
        Change::new(
            Action::EnvironmentCreated,
            Some(env.name.clone()),
            Some(env.name.to_string()),
            env.created_at,
        )
    }

    /// An environment was deleted at `at`, with its keys, secrets and config.
    pub fn environment_deleted(name: &EnvName, at: Timestamp) -> Self {
        Change::new(
            Action::EnvironmentDeleted,
            Some(name.clone()),
            Some(name.to_string()),
            at,
        )
    }

    /// An API key was created.
    pub fn api_key_created(meta: &ApiKeyMeta) -> Self {
        Change::new(
            Action::ApiKeyCreated,
            meta.role.environment().cloned(),
            Some(meta.id.to_string()),
            meta.created_at,
        )
    }

    /// An API key (scoped to `environment`, if any) was revoked at `at`.
    pub fn api_key_revoked(id: &ApiKeyId, environment: Option<EnvName>, at: Timestamp) -> Self {
        Change::new(Action::ApiKeyRevoked, environment, Some(id.to_string()), at)
    }

    /// A batch of `count` values was re-encrypted at `at`.
    pub fn keys_rewrapped(count: u64, at: Timestamp) -> Self {
        Change {
            count: Some(count),
            ..Change::new(Action::KeysRewrapped, None, None, at)
        }
    }

    /// A batch of `count` values was opened to verify them at `at`.
    pub fn keys_verified(count: u64, at: Timestamp) -> Self {
        Change {
            count: Some(count),
            ..Change::new(Action::KeysVerified, None, None, at)
        }
    }

    /// Key version `version`'s canary was stored at `at`.
    pub fn key_registered(version: u32, at: Timestamp) -> Self {
        Change::new(Action::KeyRegistered, None, Some(format!("v{version}")), at)
    }

    /// A function was registered or updated.
    pub fn function_written(out: &FunctionPutOutcome) -> Self {
        let action = if out.created {
            Action::FunctionCreated
        } else {
            Action::FunctionUpdated
        };
        Change::function(action, &out.record, out.record.updated_at)
    }

    /// A function's signing secret was rotated.
    pub fn function_rotated(record: &FunctionRecord) -> Self {
        Change::function(Action::FunctionRotated, record, record.updated_at)
    }

    /// A function was deleted at `at`; `record` is what it was.
    pub fn function_deleted(record: &FunctionRecord, at: Timestamp) -> Self {
        Change::function(Action::FunctionDeleted, record, at)
    }

    /// An orchestration was created or updated.
    pub fn orchestration_written(out: &OrchestrationPutOutcome) -> Self {
        let action = if out.created {
            Action::OrchestrationCreated
        } else {
            Action::OrchestrationUpdated
        };
        Change::orchestration(action, &out.record, out.record.updated_at)
    }

    /// An orchestration was deleted at `at`; `record` is what it was.
    pub fn orchestration_deleted(record: &OrchestrationRecord, at: Timestamp) -> Self {
        Change::orchestration(Action::OrchestrationDeleted, record, at)
    }

    fn orchestration(action: Action, record: &OrchestrationRecord, at: Timestamp) -> Self {
        Change {
            revision: Some(record.revision),
            ..Change::new(
                action,
                Some(record.environment.clone()),
                Some(record.id.to_string()),
                at,
            )
        }
    }

    /// An orchestration run changed as `action` says (one of the `Flow*` actions); its
    /// version is the revision, its `updated_at` the time.
    pub fn flow(action: Action, record: &FlowRecord) -> Self {
        Change {
            revision: Some(record.version),
            ..Change::new(
                action,
                Some(record.environment.clone()),
                Some(record.id.to_string()),
                record.updated_at,
            )
        }
    }

    fn function(action: Action, record: &FunctionRecord, at: Timestamp) -> Self {
        Change {
            revision: Some(record.revision),
            ..Change::new(
                action,
                Some(record.environment.clone()),
                Some(record.id.to_string()),
                at,
            )
        }
    }

    /// A function's declared secrets were resolved (audit only).
    pub fn function_resolved(resolution: &Resolution) -> Self {
        #[derive(Serialize)]
        struct Detail<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            run: Option<&'a str>,
            resolved: Vec<&'a str>,
            missing: Vec<&'a str>,
        }
        let detail = Detail {
            run: resolution.run_id.as_ref().map(|r| r.as_str()),
            resolved: resolution.resolved.iter().map(|n| n.as_str()).collect(),
            missing: resolution.missing.iter().map(|n| n.as_str()).collect(),
        };
        Change {
            detail: serde_json::to_string(&detail).ok(),
            ..Change::new(
                Action::FunctionResolved,
                Some(resolution.environment.clone()),
                Some(resolution.function_id.to_string()),
                resolution.at,
            )
        }
    }

    /// An event named `name` was accepted in `env` and started `runs` runs (audit only).
    pub fn event_received(env: &EnvName, name: &str, runs: u64, at: Timestamp) -> Self {
        Change {
            count: Some(runs),
            ..Change::new(
                Action::EventReceived,
                Some(env.clone()),
                Some(name.to_owned()),
                at,
            )
        }
    }

    /// `count` ended runs were deleted for retention at `at` (audit only).
    pub fn runs_pruned(count: u64, at: Timestamp) -> Self {
        Change {
            count: Some(count),
            ..Change::new(Action::RunsPruned, None, None, at)
        }
    }

    /// A run changed status: the change is named after the status it has now, its
    /// revision is its number of attempts.
    pub fn run_changed(run: &RunRecord) -> Self {
        Change::run_status(
            &run.environment,
            &run.id,
            run.status,
            run.attempts,
            run.updated_at,
        )
    }

    /// A run of `env` has `status` at `attempts` since `at` (see [`Change::run_changed`]).
    pub fn run_status(
        env: &EnvName,
        id: &RunId,
        status: RunStatus,
        attempts: u32,
        at: Timestamp,
    ) -> Self {
        let action = match status {
            RunStatus::Queued => Action::RunQueued,
            RunStatus::Running => Action::RunRunning,
            RunStatus::Succeeded => Action::RunSucceeded,
            RunStatus::Failed => Action::RunFailed,
        };
        Change {
            revision: Some(u64::from(attempts)),
            ..Change::new(action, Some(env.clone()), Some(id.to_string()), at)
        }
    }
}

/// Who an audit row or event names: an API key (its id and, when it still existed at the
/// write, its name) or Coffer itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActorRef {
    /// `ak_…`, or `system` for Coffer's own writes; `None` for a denied request whose key
    /// was not recognised.
    pub key_id: Option<String>,
    /// The key's name, or `system`.
    pub key_name: Option<String>,
}

impl ActorRef {
    /// Coffer itself.
    pub fn system() -> Self {
        ActorRef {
            key_id: Some("system".into()),
            key_name: Some("system".into()),
        }
    }
}

/// Whether an audited attempt was carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditResult {
    /// It changed something.
    Allowed,
    /// It was refused (401/403).
    Denied,
}

impl AuditResult {
    /// `allowed` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Allowed => "allowed",
            AuditResult::Denied => "denied",
        }
    }

    /// Parses `allowed` or `denied`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "allowed" => Some(AuditResult::Allowed),
            "denied" => Some(AuditResult::Denied),
            _ => None,
        }
    }
}

/// One row of the audit log, as stored and as `GET /v1/audit` returns it.
///
/// Field order is the canonical order: [`AuditRecord::canonical`] serializes every field
/// but `hash`, in this order, as compact JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the log: 1, 2, 3 … with no gaps.
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// Who.
    pub actor: ActorRef,
    /// `secret.created`, …; for a denial, the route (`PUT /v1/environments/{env}/secrets/{name}`).
    pub action: String,
    /// The event subject, or for a denial the route.
    pub subject: String,
    /// The environment concerned, if any.
    pub environment: Option<String>,
    /// The resource's name or id, if any.
    pub name: Option<String>,
    /// The resource's revision, if it has one.
    pub revision: Option<u64>,
    /// Allowed or denied.
    pub result: AuditResult,
    /// The HTTP status of a denial.
    pub status: Option<u16>,
    /// How many attempts this row stands for (denials are coalesced) or values a rewrap
    /// batch replaced; 1 otherwise.
    pub count: u64,
    /// The peer address.
    pub remote: Option<String>,
    /// The `User-Agent`.
    pub user_agent: Option<String>,
    /// The sequence number of the event this change published, if any.
    pub event: Option<u64>,
    /// What an audit-only row records beyond the above (a resolution's names, never a
    /// value), compact JSON. Absent from rows that have none, canonical form included, so
    /// rows written before it existed keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The previous row's `hash` ([`GENESIS_HASH`] for the first row).
    pub prev_hash: String,
    /// SHA-256 (hex) of `prev_hash` and the canonical form.
    #[serde(default)]
    pub hash: String,
}

impl AuditRecord {
    /// The audit row of `change`, made by `actor` from `origin`, publishing event `event`
    /// (if any); not yet chained ([`AuditRecord::chain_after`] numbers and hashes it). Every
    /// backend builds its rows here, so they all write the same records and hashes.
    pub fn of_change(
        change: &Change,
        actor: &ActorRef,
        origin: &Origin,
        event: Option<u64>,
    ) -> Self {
        AuditRecord {
            seq: 0,
            at: change.at.millis(),
            actor: actor.clone(),
            action: change.action.name(),
            subject: change.subject(),
            environment: change.environment.as_ref().map(EnvName::to_string),
            name: change.name.clone(),
            revision: change.revision,
            result: AuditResult::Allowed,
            status: None,
            count: change.count.unwrap_or(1),
            remote: origin.remote.clone(),
            user_agent: origin.user_agent.clone(),
            event,
            detail: change.detail.clone(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// The audit row of a coalesced run of denied attempts (no event); `key_name` is the
    /// presented key's name when it still exists. Not yet chained.
    pub fn of_denial(denial: Denial, key_name: Option<String>) -> Self {
        AuditRecord {
            seq: 0,
            at: denial.at.millis(),
            actor: ActorRef {
                key_id: denial.key_id.as_ref().map(ToString::to_string),
                key_name,
            },
            action: denial.route.clone(),
            subject: denial.route,
            environment: denial.environment.as_ref().map(EnvName::to_string),
            name: None,
            revision: None,
            result: AuditResult::Denied,
            status: Some(denial.status),
            count: denial.count,
            remote: denial.origin.remote,
            user_agent: denial.origin.user_agent,
            event: None,
            detail: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// Chains this row after the row `(seq, hash)` (the journal's head): it becomes row
    /// `seq + 1` with `prev_hash = hash`, and gets its own hash. Returns the new head.
    pub fn chain_after(&mut self, seq: u64, hash: String) -> (u64, String) {
        self.seq = seq + 1;
        self.prev_hash = hash;
        self.hash = self.expected_hash();
        (self.seq, self.hash.clone())
    }

    /// Compact JSON of every field but `hash`, in declaration order.
    pub fn canonical(&self) -> String {
        canonical_json(self)
    }

    /// The hash this row must have given its content and `prev_hash`.
    pub fn expected_hash(&self) -> String {
        let mut input = String::with_capacity(self.prev_hash.len() + 512);
        input.push_str(&self.prev_hash);
        input.push('\n');
        input.push_str(&self.canonical());
        coffer_crypto::sha256_hex(input.as_bytes())
    }
}

/// The struct's fields in declaration order without `hash`: serde serializes struct fields
/// in declaration order, so the text is stable.
fn canonical_json(record: &AuditRecord) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Canonical<'a> {
        seq: u64,
        at: i64,
        actor: &'a ActorRef,
        action: &'a str,
        subject: &'a str,
        environment: &'a Option<String>,
        name: &'a Option<String>,
        revision: Option<u64>,
        result: AuditResult,
        status: Option<u16>,
        count: u64,
        remote: &'a Option<String>,
        user_agent: &'a Option<String>,
        event: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<&'a str>,
        prev_hash: &'a str,
    }
    let c = Canonical {
        seq: record.seq,
        at: record.at,
        actor: &record.actor,
        action: &record.action,
        subject: &record.subject,
        environment: &record.environment,
        name: &record.name,
        revision: record.revision,
        result: record.result,
        status: record.status,
        count: record.count,
        remote: &record.remote,
        user_agent: &record.user_agent,
        event: record.event,
        detail: record.detail.as_deref(),
        prev_hash: &record.prev_hash,
    };
    serde_json::to_string(&c).unwrap_or_default()
}

/// One event, as the outbox stores it and the stream, NATS and webhooks carry it:
/// `{id, subject, environment, name, revision, actor: {keyId, keyName}, at}`. Never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRecord {
    /// The event's sequence number: 1, 2, 3 … in commit order.
    pub id: u64,
    /// `system.secret.API_KEY.created`, …
    pub subject: String,
    /// The environment concerned, if any.
    pub environment: Option<String>,
    /// The resource's name or id, if any.
    pub name: Option<String>,
    /// The resource's revision, if it has one.
    pub revision: Option<u64>,
    /// Who.
    pub actor: ActorRef,
    /// When (RFC 3339, UTC): the stored `updatedAt` where the resource has one.
    pub at: String,
    /// How many values a `system.keys.rewrapped` batch replaced, or a
    /// `system.keys.verified` batch checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// The subject of an event whose audit row no longer reads as it was written.
pub const UNREADABLE_EVENT: &str = "system.journal.unreadable";

impl EventRecord {
    /// The marker sent in place of event `id` when its audit row no longer reads as it was
    /// written (a hand-edited cell): the stream and the relay go on past it, and `coffer
    /// audit verify` names the row.
    pub fn unreadable(id: u64) -> EventRecord {
        EventRecord {
            id,
            subject: UNREADABLE_EVENT.into(),
            environment: None,
            name: None,
            revision: None,
            actor: ActorRef {
                key_id: None,
                key_name: None,
            },
            at: String::new(),
            count: None,
        }
    }
}

/// A run of identical denied attempts, coalesced by the service before it is audited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The first attempt of the run.
    pub at: Timestamp,
    /// The key presented, when it authenticated (403); `None` for 401.
    pub key_id: Option<ApiKeyId>,
    /// `METHOD /route/{template}`.
    pub route: String,
    /// The environment the route names, if any.
    pub environment: Option<EnvName>,
    /// 401 or 403.
    pub status: u16,
    /// Where the first attempt came from.
    pub origin: Origin,
    /// How many attempts the row stands for.
    pub count: u64,
}

/// What `GET /v1/audit` asks for. Every filter is optional; rows come in `seq` order
/// starting after `after`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Rows of this environment only.
    pub environment: Option<EnvName>,
    /// Rows by this actor (`ak_…` or `system`).
    pub actor: Option<String>,
    /// Rows with this action.
    pub action: Option<String>,
    /// Rows whose subject matches this NATS pattern (`*`, `>`).
    pub subject: Option<SubjectPattern>,
    /// Allowed or denied rows only.
    pub result: Option<AuditResult>,
    /// Rows at or after this time.
    pub since: Option<Timestamp>,
    /// Rows before this time.
    pub until: Option<Timestamp>,
    /// Start after this sequence number.
    pub after: Option<u64>,
}

/// A subject filter with NATS wildcards: `*` matches one token, `>` (last) one or more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectPattern {
    tokens: Vec<String>,
}

impl SubjectPattern {
    /// Checks the pattern: non-empty tokens separated by `.`, `>` only last, at most 512
    /// characters.
    pub fn new(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > 512 {
            return Err("a subject pattern has 1 to 512 characters".into());
        }
        let tokens: Vec<String> = raw.split('.').map(str::to_owned).collect();
        for (i, t) in tokens.iter().enumerate() {
            let bad_token = t.is_empty()
                || t.chars().any(|c| c.is_whitespace() || c.is_control())
                || (t.len() > 1 && (t.contains('*') || t.contains('>')))
                || (t == ">" && i + 1 != tokens.len());
            if bad_token {
                return Err(format!(
                    "subject pattern {raw:?} is invalid: tokens are separated by '.', '*' stands for one token and '>' (last only) for the rest"
                ));
            }
        }
        Ok(SubjectPattern { tokens })
    }

    /// `system.>`: every event.
    pub fn all() -> Self {
        SubjectPattern {
            tokens: vec!["system".into(), ">".into()],
        }
    }

    /// Whether `subject` matches.
    pub fn matches(&self, subject: &str) -> bool {
        let mut parts = subject.split('.');
        for (i, t) in self.tokens.iter().enumerate() {
            if t == ">" {
                return i < self.tokens.len() && parts.next().is_some();
            }
            match parts.next() {
                Some(p) if t == "*" || t == p => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }

    /// The pattern as written.
    pub fn as_string(&self) -> String {
        self.tokens.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_patterns_follow_nats_wildcards() {
        let p = |s| SubjectPattern::new(s).unwrap();
        assert!(p("system.>").matches("system.secret.A.created"));
        assert!(!p("system.>").matches("system"));
        assert!(p("system.secret.*.created").matches("system.secret.A.created"));
        assert!(!p("system.secret.*.created").matches("system.secret.A.deleted"));
        assert!(!p("system.secret.*").matches("system.secret.A.created"));
        assert!(p("system.keys.rewrapped").matches("system.keys.rewrapped"));
        assert!(!p("system.keys.rewrapped").matches("system.keys.rewrapped.x"));
        assert!(p(">").matches("a"));
        for bad in ["", "a..b", "a.>.b", "a.b*", "a b", ".a", "a."] {
            assert!(SubjectPattern::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_action_but_the_audit_only_ones_publishes_and_subjects_read_as_documented() {
        let audit_only = [
            Action::SecretUnchanged,
            Action::FunctionResolved,
            Action::EventReceived,
            Action::RunsPruned,
        ];
        for a in Action::ALL {
            assert_eq!(a.publishes(), !audit_only.contains(a), "{a:?}");
        }
        let c = Change::keys_rewrapped(3, Timestamp::from_millis(1));
        assert_eq!(c.subject(), "system.keys.rewrapped");
        let c = Change::key_registered(2, Timestamp::from_millis(1));
        assert_eq!(c.subject(), "system.keys.v2.registered");
    }

    #[test]
    fn a_change_chains_after_the_head_it_is_given() {
        let change = Change::keys_rewrapped(4, Timestamp::from_millis(9));
        let origin = Origin::new(Some("127.0.0.1:1".into()), Some("ua"));
        let mut row = AuditRecord::of_change(&change, &ActorRef::system(), &origin, Some(3));
        let head = row.chain_after(6, GENESIS_HASH.into());
        assert_eq!((row.seq, row.prev_hash.as_str()), (7, GENESIS_HASH));
        assert_eq!(head, (7, row.expected_hash()));
        assert_eq!(row.hash, head.1);
        assert_eq!(
            (row.count, row.event, row.action.as_str()),
            (4, Some(3), "keys.rewrapped")
        );
        assert_eq!(row.remote.as_deref(), Some("127.0.0.1:1"));
    }

    #[test]
    fn the_hash_covers_every_field_and_the_previous_hash() {
        let row = AuditRecord {
            seq: 1,
            at: 5,
            actor: ActorRef::system(),
            action: "secret.created".into(),
            subject: "system.secret.A.created".into(),
            environment: Some("default".into()),
            name: Some("A".into()),
            revision: Some(1),
            result: AuditResult::Allowed,
            status: None,
            count: 1,
            remote: None,
            user_agent: None,
            event: Some(1),
            detail: None,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let h = row.expected_hash();
        assert_eq!(h.len(), 64);
        assert!(!row.canonical().contains("\"hash\""));
        assert!(
            !row.canonical().contains("detail"),
            "rows without a detail hash as they did before it existed"
        );
        let detailed = AuditRecord {
            detail: Some("{}".into()),
            ..row.clone()
        };
        assert_ne!(detailed.expected_hash(), h);
        let edited = AuditRecord {
            revision: Some(2),
            ..row.clone()
        };
        assert_ne!(edited.expected_hash(), h);
        let rechained = AuditRecord {
            prev_hash: "1".repeat(64),
            ..row.clone()
        };
        assert_ne!(rechained.expected_hash(), h);
    }
}
