//! Orchestrations (ordered steps whose compute steps hold their own parameters) and their
//! runs, with the traits the catalog's database implements for them.
//!
//! A store keeps an orchestration's steps as the JSON text the service gives it and never
//! parses it: encrypted parameters arrive sealed inside it (`{"value": "iv:ciphertext:tag",
//! "encrypted": true, "keyVersion": N}`), like a function's definition. An orchestration
//! run is a small state machine the service drives: the store keeps its state as text,
//! leases due runs to one node at a time, and applies each step of the machine as one
//! conditional write on the run's `version` — so two nodes that both think they own a run
//! can never both move it, and a compute step's function run is started in the same
//! transaction as the step that starts it.

use async_trait::async_trait;

use crate::journal::Action;
use crate::{
    Actor, EnvId, EnvName, Environment, NameError, NewRun, PageSize, Precondition, Revision,
    StoreResult, Timestamp,
};

fn check_prefixed_id(raw: &str, prefix: &str, what: &'static str) -> Result<(), NameError> {
    let ok = raw.strip_prefix(prefix).is_some_and(|hex| {
        (16..=64).contains(&hex.len())
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(NameError::new(
            what,
            raw,
            "ids look like a prefix (orch_, orun_) followed by 16-64 hex digits",
        ))
    }
}

fn generate_prefixed(prefix: &str, at: Timestamp) -> Result<String, coffer_crypto::CryptoError> {
    let random = coffer_crypto::random_hex::<8>()?;
    let ms = u64::try_from(at.millis()).unwrap_or(0) & 0xffff_ffff_ffff;
    Ok(format!("{prefix}{ms:012x}{random}"))
}

/// Most orchestration runs of one environment that have not ended: a client cannot grow
/// the table (or the machine's work) without bound by starting runs faster than they end.
pub const MAX_ACTIVE_FLOWS_PER_ENVIRONMENT: u64 = 10_000;

/// An orchestration's id: `orch_` and 16-64 lowercase hex digits (creation time in
/// milliseconds, then random), so ids sort by creation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrchestrationId(String);

impl OrchestrationId {
    /// Checks `raw` is an orchestration id as Coffer issues them.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        check_prefixed_id(raw, "orch_", "orchestration id")?;
        Ok(OrchestrationId(raw.to_owned()))
    }

    /// A new id for an orchestration created at `at`.
    pub fn generate(at: Timestamp) -> Result<Self, coffer_crypto::CryptoError> {
        generate_prefixed("orch_", at).map(OrchestrationId)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An orchestration run's id: `orun_` and 16-64 lowercase hex digits, sorting by creation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrchestrationRunId(String);

impl OrchestrationRunId {
    /// Checks `raw` is an orchestration run id as Coffer issues them.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        check_prefixed_id(raw, "orun_", "orchestration run id")?;
        Ok(OrchestrationRunId(raw.to_owned()))
    }

    /// A new id for a run started at `at`.
    pub fn generate(at: Timestamp) -> Result<Self, coffer_crypto::CryptoError> {
        generate_prefixed("orun_", at).map(OrchestrationRunId)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrchestrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for OrchestrationRunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An orchestration as stored. Its `steps` hold sealed parameters (never plaintext unless
/// the service runs in dev mode); `Debug` leaves them out.
#[derive(Clone, PartialEq, Eq)]
pub struct OrchestrationRecord {
    /// Its environment.
    pub environment: EnvName,
    /// The incarnation it was created in; it goes with it.
    pub environment_id: EnvId,
    /// Its id.
    pub id: OrchestrationId,
    /// Its label.
    pub name: String,
    /// Its steps in their stored form, the JSON text the service stored.
    pub steps: String,
    /// 1 when created, +1 per update.
    pub revision: Revision,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl OrchestrationRecord {
    /// What it weighs in a page of a listing: its name and steps.
    pub fn weight(&self) -> usize {
        self.name.len() + self.steps.len()
    }
}

impl std::fmt::Debug for OrchestrationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestrationRecord")
            .field("environment", &self.environment)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("steps", &"<stored form>")
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// The result of [`OrchestrationStore::put_orchestration`].
#[derive(Debug)]
pub struct OrchestrationPutOutcome {
    /// The orchestration after the write.
    pub record: OrchestrationRecord,
    /// Whether the write created it.
    pub created: bool,
}

/// An orchestration's steps stored anew without changing what they mean (its encrypted
/// parameters re-encrypted), for [`OrchestrationStore::replace_orchestration_steps`].
#[derive(Clone)]
pub struct StepsReplacement {
    /// Its environment.
    pub environment: EnvName,
    /// The incarnation it was read from.
    pub environment_id: EnvId,
    /// The orchestration.
    pub id: OrchestrationId,
    /// The revision it was read at.
    pub revision: Revision,
    /// The stored steps as read: pins them exactly (a sealed value's random nonce makes
    /// every sealing distinct).
    pub read: String,
    /// The steps to store instead.
    pub new: String,
    /// How many parameters `new` stores anew (what a `keys.rewrapped` row counts).
    pub stored_anew: u64,
}

impl std::fmt::Debug for StepsReplacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepsReplacement")
            .field("environment", &self.environment)
            .field("id", &self.id)
            .field("revision", &self.revision)
            .field("stored_anew", &self.stored_anew)
            .finish_non_exhaustive()
    }
}

/// Orchestrations: definitions of ordered steps.
///
/// Writes carry the [`Actor`] they are made for, re-checked in the writing transaction,
/// and append their audit row and event in it (`system.orchestration.{id}.{created|updated|
/// deleted}`). An orchestration belongs to one environment incarnation and goes with it.
#[async_trait]
pub trait OrchestrationStore: Send + Sync + 'static {
    /// One orchestration, or `None`.
    async fn get_orchestration(
        &self,
        env: &EnvName,
        id: &OrchestrationId,
    ) -> StoreResult<Option<OrchestrationRecord>>;

    /// One page (`size`: [`OrchestrationRecord::weight`]) of the orchestrations of `env`
    /// in id order (bytes), starting after `after`.
    async fn list_orchestrations(
        &self,
        env: &EnvName,
        after: Option<&OrchestrationId>,
        size: PageSize,
    ) -> StoreResult<Vec<OrchestrationRecord>>;

    /// Creates (`Precondition::Absent`) or replaces an orchestration's name and steps if
    /// `precondition` holds, atomically with the check. Errors:
    /// [`crate::StoreError::Conflict`] (for an update of one that does not exist: `current:
    /// None`); [`crate::StoreError::NotFound`] when the incarnation `env` no longer exists;
    /// [`crate::StoreError::ActorRevoked`].
    #[allow(clippy::too_many_arguments)]
    async fn put_orchestration(
        &self,
        env: &Environment,
        id: &OrchestrationId,
        name: &str,
        steps: String,
        precondition: Precondition,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<OrchestrationPutOutcome>;

    /// Deletes an orchestration if `precondition` holds, returning it as it was. Its runs
    /// stay (their history); one still going fails at its next step.
    /// Errors: [`crate::StoreError::NotFound`], [`crate::StoreError::Conflict`],
    /// [`crate::StoreError::ActorRevoked`].
    async fn delete_orchestration(
        &self,
        env: &EnvName,
        id: &OrchestrationId,
        precondition: Precondition,
        actor: &Actor,
    ) -> StoreResult<OrchestrationRecord>;

    /// Up to `limit` orchestrations across all environments, in (environment, id) order
    /// (bytes), starting after `after`: the walk key rotation, `keys verify` and the
    /// dev-mode migration take over their encrypted parameters.
    async fn scan_orchestrations(
        &self,
        after: Option<&(EnvName, OrchestrationId)>,
        limit: usize,
    ) -> StoreResult<Vec<OrchestrationRecord>>;

    /// Stores orchestrations' steps anew without changing what they mean
    /// (re-encryption), in one transaction: each replacement applies only if its
    /// orchestration is still at `revision` of that incarnation with exactly the steps
    /// `read`, and keeps the revision and timestamps. Returns, per replacement, whether it
    /// applied. When any did, appends one `keys.rewrapped` audit row and event whose count
    /// is the sum of the applied replacements' `stored_anew`.
    /// Errors: [`crate::StoreError::ActorRevoked`] (nothing replaced).
    async fn replace_orchestration_steps(
        &self,
        batch: Vec<StepsReplacement>,
        actor: &Actor,
    ) -> StoreResult<Vec<bool>>;
}

/// Where an orchestration run is (the API's `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowStatus {
    /// A step is running or due.
    Running,
    /// An approval step waits for a decision.
    WaitingApproval,
    /// Ended well.
    Succeeded,
    /// A step failed.
    Failed,
    /// An approval was rejected.
    Rejected,
}

impl FlowStatus {
    /// Every status.
    pub const ALL: [FlowStatus; 5] = [
        FlowStatus::Running,
        FlowStatus::WaitingApproval,
        FlowStatus::Succeeded,
        FlowStatus::Failed,
        FlowStatus::Rejected,
    ];

    /// `running`, `waiting_approval`, `succeeded`, `failed`, `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowStatus::Running => "running",
            FlowStatus::WaitingApproval => "waiting_approval",
            FlowStatus::Succeeded => "succeeded",
            FlowStatus::Failed => "failed",
            FlowStatus::Rejected => "rejected",
        }
    }

    /// Parses what [`FlowStatus::as_str`] writes.
    pub fn parse(raw: &str) -> Option<Self> {
        FlowStatus::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            FlowStatus::Succeeded | FlowStatus::Failed | FlowStatus::Rejected
        )
    }
}

/// An orchestration run as stored. Nothing in it is secret: its `steps` snapshot has its
/// encrypted parameters masked, its state holds redacted outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// Its id.
    pub id: OrchestrationRunId,
    /// Its environment.
    pub environment: EnvName,
    /// The incarnation it was started in; it goes with it.
    pub environment_id: EnvId,
    /// The orchestration it executes.
    pub orchestration_id: OrchestrationId,
    /// The orchestration's revision it started from.
    pub orchestration_revision: Revision,
    /// Where it is.
    pub status: FlowStatus,
    /// The step it is at.
    pub current_step: Option<String>,
    /// The definition it follows, as JSON text, with every encrypted parameter masked.
    pub steps: String,
    /// The service's state of the machine (per-step statuses, outputs, what it waits for),
    /// JSON text.
    pub state: String,
    /// The run's params, JSON text of an object.
    pub params: String,
    /// An approval's decision not yet taken in by the machine, JSON text (see
    /// [`FlowStore::decide_flow`]).
    pub decision: Option<String>,
    /// When the machine should look at it next; `None`: when something happens (its step's
    /// function run ends, a decision arrives).
    pub wake_at: Option<Timestamp>,
    /// Until when a node holds it to take its next step.
    pub lease_expires_at: Option<Timestamp>,
    /// +1 per step of the machine, per decision and when a step's function run ends: the
    /// compare-and-set of [`FlowStore::advance_flow`].
    pub version: u64,
    /// When it started.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl FlowRecord {
    /// What it weighs in a page of a listing: its text (steps, state, parameters, decision).
    pub fn weight(&self) -> usize {
        self.steps.len()
            + self.state.len()
            + self.params.len()
            + self.decision.as_ref().map_or(0, String::len)
            + self.current_step.as_ref().map_or(0, String::len)
    }
}

/// A run to start, as [`FlowStore::start_flow`] takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewFlow {
    /// Its id ([`OrchestrationRunId::generate`]).
    pub id: OrchestrationRunId,
    /// The orchestration.
    pub orchestration_id: OrchestrationId,
    /// Its revision now.
    pub orchestration_revision: Revision,
    /// The masked definition.
    pub steps: String,
    /// The machine's first state.
    pub state: String,
    /// The run's params.
    pub params: String,
    /// The first step.
    pub current_step: Option<String>,
}

/// A compute step's function run, started by [`FlowStore::advance_flow`] in its
/// transaction: a run like an event's, whose [`crate::RunRecord::step`] links it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRun {
    /// The run (its `trigger_params`: the run's params ∪ the step's plain params; the
    /// step's encrypted parameters are opened only when the job is built).
    pub run: NewRun,
    /// The name its event carries (`orchestration.{orchestrationId}.{stepId}`).
    pub event_name: String,
    /// Its event data, JSON text.
    pub event_data: String,
}

/// One step of the machine, for [`FlowStore::advance_flow`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowAdvance {
    /// The run.
    pub id: OrchestrationRunId,
    /// The version it was read at: the write applies only if it is still there.
    pub version: u64,
    /// Its status afterwards.
    pub status: FlowStatus,
    /// Its step afterwards.
    pub current_step: Option<String>,
    /// Its state afterwards.
    pub state: String,
    /// When to look at it next.
    pub wake_at: Option<Timestamp>,
    /// Whether the pending decision was taken in (it is cleared).
    pub take_decision: bool,
    /// A compute step's function run to start.
    pub start: Option<StepRun>,
    /// What to journal (`orchestration.run.{waiting|succeeded|failed|rejected}`), if
    /// anything: a step that changes nothing a watcher needs is bookkeeping.
    pub action: Option<Action>,
}

/// Which orchestration runs [`FlowStore::list_flows`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Only runs of this orchestration.
    pub orchestration: Option<OrchestrationId>,
    /// Only runs with this status.
    pub status: Option<FlowStatus>,
}

/// Orchestration runs: started by a caller, moved step by step by whichever node leases
/// them, waiting on function runs, delays and approvals.
///
/// Every write is journaled in its transaction where it says so; the machine's
/// bookkeeping (a lease, a step with no visible change) is not.
#[async_trait]
pub trait FlowStore: Send + Sync + 'static {
    /// Starts a run in the incarnation `env`, due at once (`wake_at = at`), journaled as
    /// `system.orchestration.run.{id}.started` — unless `env` already has `max_active` runs
    /// that have not ended ([`crate::StoreError::Overloaded`]: counted in the writing
    /// transaction; under PostgreSQL, starts racing in one environment may pass it by at
    /// most their number). Errors: [`crate::StoreError::NotFound`] when `env` no longer
    /// exists; [`crate::StoreError::ActorRevoked`].
    async fn start_flow(
        &self,
        env: &Environment,
        run: NewFlow,
        max_active: u64,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FlowRecord>;

    /// One run, or `None`.
    async fn get_flow(
        &self,
        env: &EnvName,
        id: &OrchestrationRunId,
    ) -> StoreResult<Option<FlowRecord>>;

    /// One page (`size`: [`FlowRecord::weight`]) of the runs of `env` matching `filter`,
    /// newest first (id descending), starting after (below) `after`.
    async fn list_flows(
        &self,
        env: &EnvName,
        filter: &FlowFilter,
        after: Option<&OrchestrationRunId>,
        size: PageSize,
    ) -> StoreResult<Vec<FlowRecord>>;

    /// Leases up to `limit` runs that are due at `at` — not ended, `wake_at <= at`, and not
    /// held by an unexpired lease — earliest `wake_at` first, until `lease_until`.
    /// Bookkeeping: not journaled. Two callers never hold one run at once.
    async fn lease_flows(
        &self,
        limit: usize,
        lease_until: Timestamp,
        at: Timestamp,
    ) -> StoreResult<Vec<FlowRecord>>;

    /// Applies one step of the machine if the run is still at `advance.version`: sets
    /// status, step, state and `wake_at`, releases the lease, bumps the version, clears the
    /// decision if taken in, starts `advance.start`'s function run (journaled
    /// `system.run.{id}.queued`), and journals `advance.action` — all in one transaction.
    /// Errors: [`crate::StoreError::Conflict`] (the run moved on; nothing written);
    /// [`crate::StoreError::NotFound`] (the run, or its environment incarnation, is gone);
    /// [`crate::StoreError::ActorRevoked`].
    async fn advance_flow(
        &self,
        env: &EnvName,
        advance: FlowAdvance,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FlowRecord>;

    /// Records an approval's decision (`decision`: JSON text the service wrote) on a run
    /// that is `waiting_approval` at step `step` with no decision yet, makes it due at
    /// once, bumps its version, and journals `system.orchestration.run.{id}.{approved|
    /// rejected}` (by `approved`) with the deciding actor. Errors:
    /// [`crate::StoreError::NotFound`]; [`crate::StoreError::Conflict`] (not waiting there,
    /// or already decided); [`crate::StoreError::ActorRevoked`].
    #[allow(clippy::too_many_arguments)]
    async fn decide_flow(
        &self,
        env: &EnvName,
        id: &OrchestrationRunId,
        step: &str,
        approved: bool,
        decision: String,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FlowRecord>;
}
