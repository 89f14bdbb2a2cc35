//! The runtime plane's aggregates: functions (what declares secrets) and runs (what
//! receives them), with the traits the catalog's database implements for them.
//!
//! A store keeps a function's definition as the JSON text it is given and never parses
//! it (like config entries); the service parses and checks it. Runs are a queue that
//! several nodes lease from at once: a lease is one conditional write, held by the
//! database, so a run is leased to one holder cluster-wide.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

use crate::{
    Actor, EnvId, EnvName, Environment, NameError, PageSize, Precondition, Revision, SecretName,
    StoreResult, StoredValue, Timestamp,
};

/// A function's id: `^[a-z0-9][a-z0-9_-]{0,62}$`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FunctionId(String);

impl FunctionId {
    /// Checks `raw` against the function-id rule.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        const RULE: &str = "use 1-63 characters: lowercase letters, digits, '_' and '-', starting with a letter or digit";
        let ok = !raw.is_empty()
            && raw.len() <= 63
            && raw.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'-' || b == b'_'))
            });
        if ok {
            Ok(FunctionId(raw.to_owned()))
        } else {
            Err(NameError::new("function id", raw, RULE))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A run's id: `run_` and 16-64 lowercase hex digits. Coffer issues them as the creation
/// time in milliseconds (12 hex digits) followed by 16 random ones, so ids sort by
/// creation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(String);

impl RunId {
    /// Checks `raw` is a run id as Coffer issues them.
    pub fn new(raw: &str) -> Result<Self, NameError> {
        let ok = raw.strip_prefix("run_").is_some_and(|hex| {
            (16..=64).contains(&hex.len())
                && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if ok {
            Ok(RunId(raw.to_owned()))
        } else {
            Err(NameError::new(
                "run id",
                raw,
                "ids look like run_ followed by 16-64 hex digits",
            ))
        }
    }

    /// A new id for a run created at `at`: sorts after every id issued before `at`.
    pub fn generate(at: Timestamp) -> Result<Self, coffer_crypto::CryptoError> {
        let random = coffer_crypto::random_hex::<8>()?;
        let ms = u64::try_from(at.millis()).unwrap_or(0) & 0xffff_ffff_ffff;
        Ok(RunId(format!("run_{ms:012x}{random}")))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A function as stored. `Debug` shows no signing secret (a [`StoredValue`] never does).
#[derive(Debug)]
pub struct FunctionRecord {
    /// Its environment.
    pub environment: EnvName,
    /// The incarnation it was registered in; it goes with it.
    pub environment_id: EnvId,
    /// Its id.
    pub id: FunctionId,
    /// Its definition, the JSON text the service stored (triggers, secrets, mode, …).
    pub spec: String,
    /// The signing secret, sealed like a secret value (associated data: see
    /// `coffer_core::runtime::signing_aad`).
    pub signing: StoredValue,
    /// The signing secret it replaced, kept until `previous_until` so that deliveries are
    /// signed with both during a rotation's grace period.
    pub previous_signing: Option<(StoredValue, Timestamp)>,
    /// 1 when registered, +1 per update or signing-secret rotation.
    pub revision: Revision,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// The result of [`FunctionStore::put_function`].
#[derive(Debug)]
pub struct FunctionPutOutcome {
    /// The function after the write.
    pub record: FunctionRecord,
    /// Whether the write registered it (revision 1): only then was the signing secret
    /// given with the write stored.
    pub created: bool,
}

/// A stored secret as a walk read it, and what replaces it: see
/// [`FunctionStore::replace_signing`].
#[derive(Debug)]
pub struct Reseal {
    /// The stored form that was read. It pins the exact secret: a blob's random nonce
    /// makes every sealing distinct, so a secret stored since is never overwritten.
    pub read: StoredValue,
    /// The new stored form of the same secret; `None` keeps it as read (it is only pinned).
    pub new: Option<StoredValue>,
}

/// A function's signing secrets stored anew without changing what they are (re-encryption),
/// for [`FunctionStore::replace_signing`].
#[derive(Debug)]
pub struct SigningReplacement {
    /// Its environment.
    pub environment: EnvName,
    /// The incarnation it was read from.
    pub environment_id: EnvId,
    /// The function.
    pub id: FunctionId,
    /// The revision it was read at.
    pub revision: Revision,
    /// The current signing secret.
    pub signing: Reseal,
    /// The previous signing secret (`None`: the function had none when it was read, and
    /// must still have none).
    pub previous_signing: Option<Reseal>,
}

impl SigningReplacement {
    /// How many of its secrets it stores anew (what a `keys.rewrapped` row counts).
    pub fn stored_anew(&self) -> u64 {
        let previous = self.previous_signing.as_ref();
        u64::from(self.signing.new.is_some()) + u64::from(previous.is_some_and(|p| p.new.is_some()))
    }
}

/// Functions: what a run executes, the secrets and config keys it declares.
///
/// Writes carry the [`Actor`] they are made for, re-checked in the writing transaction,
/// and append their audit row and event in it (`system.function.{id}.{created|updated|
/// deleted|rotated}`). A function belongs to one environment incarnation and goes with it.
#[async_trait]
pub trait FunctionStore: Send + Sync + 'static {
    /// One function, or `None`.
    async fn get_function(
        &self,
        env: &EnvName,
        id: &FunctionId,
    ) -> StoreResult<Option<FunctionRecord>>;

    /// Up to `limit` functions of `env` in id order (bytes), starting after `after`.
    async fn list_functions(
        &self,
        env: &EnvName,
        after: Option<&FunctionId>,
        limit: usize,
    ) -> StoreResult<Vec<FunctionRecord>>;

    /// Registers or updates a function if `precondition` holds, atomically with the check.
    /// `signing` is stored only when the write registers the function; an update keeps the
    /// stored one. Errors: [`crate::StoreError::Conflict`]; [`crate::StoreError::NotFound`]
    /// when the incarnation `env` no longer exists; [`crate::StoreError::ActorRevoked`].
    // `SecretStore::put`'s arguments and the spec: a struct for two of them would only
    // move the count.
    #[allow(clippy::too_many_arguments)]
    async fn put_function(
        &self,
        env: &Environment,
        id: &FunctionId,
        spec: String,
        signing: StoredValue,
        precondition: Precondition,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FunctionPutOutcome>;

    /// Replaces the signing secret with `signing`, keeping the old one as the previous
    /// secret until `grace_until` (replacing any older previous one); bumps the revision.
    /// Errors: [`crate::StoreError::NotFound`], [`crate::StoreError::ActorRevoked`].
    async fn rotate_signing_secret(
        &self,
        env: &Environment,
        id: &FunctionId,
        signing: StoredValue,
        grace_until: Timestamp,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FunctionRecord>;

    /// Up to `limit` functions across all environments, in (environment, id) order (bytes),
    /// starting after `after`: the walk key rotation and the dev-mode migration take over
    /// the signing secrets.
    async fn scan_functions(
        &self,
        after: Option<&(EnvName, FunctionId)>,
        limit: usize,
    ) -> StoreResult<Vec<FunctionRecord>>;

    /// How many stored signing secrets — current and previous ones, expired or not — use
    /// each key version (`0` = plaintext).
    async fn count_signing_by_key_version(&self) -> StoreResult<BTreeMap<u32, u64>>;

    /// Stores functions' signing secrets anew without changing what they are
    /// (re-encryption), in one transaction: each replacement applies only if its function
    /// is still at `revision` of that incarnation with exactly the stored forms read (the
    /// current secret, and the previous one or its absence), and keeps the revision, the
    /// timestamps and the previous secret's grace period. Returns, per replacement, whether
    /// it applied. When any did, appends one `keys.rewrapped` audit row and event whose
    /// count is the number of secrets stored anew. Errors:
    /// [`crate::StoreError::ActorRevoked`] (nothing replaced).
    async fn replace_signing(
        &self,
        batch: Vec<SigningReplacement>,
        actor: &Actor,
    ) -> StoreResult<Vec<bool>>;

    /// Deletes a function if `precondition` holds, returning it as it was. Its runs stay
    /// (their history); one still queued fails when it is leased.
    /// Errors: [`crate::StoreError::NotFound`], [`crate::StoreError::Conflict`],
    /// [`crate::StoreError::ActorRevoked`].
    async fn delete_function(
        &self,
        env: &EnvName,
        id: &FunctionId,
        precondition: Precondition,
        actor: &Actor,
    ) -> StoreResult<FunctionRecord>;
}

/// How a run reaches its function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunMode {
    /// Coffer POSTs the job to the function's URL.
    Push,
    /// A worker polls for it.
    Pull,
}

impl RunMode {
    /// `push` or `pull`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Push => "push",
            RunMode::Pull => "pull",
        }
    }

    /// Parses `push` or `pull`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "push" => Some(RunMode::Push),
            "pull" => Some(RunMode::Pull),
            _ => None,
        }
    }
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Waiting to be leased (first attempt, or a retry once `next_attempt_at` has come).
    Queued,
    /// Leased to a delivery or a worker until `lease_expires_at`.
    Running,
    /// Completed with an output.
    Succeeded,
    /// Completed with an error, or out of attempts.
    Failed,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
    ];

    /// `queued`, `running`, `succeeded`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }

    /// Parses what [`RunStatus::as_str`] writes.
    pub fn parse(raw: &str) -> Option<Self> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed)
    }
}

/// A run as stored. Its output and error were redacted before they were stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// Its id.
    pub id: RunId,
    /// Its environment.
    pub environment: EnvName,
    /// The incarnation it was started in; it goes with it.
    pub environment_id: EnvId,
    /// The function it runs.
    pub function_id: FunctionId,
    /// How it is delivered (the function's mode when the run was started).
    pub mode: RunMode,
    /// The name of the event that started it.
    pub event_name: String,
    /// The event's data, JSON text.
    pub event_data: String,
    /// Parameters for the function (orchestration steps), JSON text of an object.
    pub trigger_params: String,
    /// The orchestration step that started it, if one did.
    pub step: Option<StepLink>,
    /// Where it is.
    pub status: RunStatus,
    /// Attempts started so far: each lease is one.
    pub attempts: u32,
    /// The output of a successful run, JSON text.
    pub output: Option<String>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// Until when the current attempt's holder has it (while `Running`).
    pub lease_expires_at: Option<Timestamp>,
    /// When a queued run may be leased (its retry's backoff).
    pub next_attempt_at: Timestamp,
    /// When it was started.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl RunRecord {
    /// What it weighs in a page of a listing: its text (event, output, error).
    pub fn weight(&self) -> usize {
        self.event_name.len()
            + self.event_data.len()
            + self.trigger_params.len()
            + self.output.as_ref().map_or(0, String::len)
            + self.error.as_ref().map_or(0, String::len)
    }
}

/// An event sent to an environment, as [`RunStore::enqueue`] records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSend {
    /// Its name (`order.created`).
    pub name: String,
    /// Its data, JSON text.
    pub data: String,
    /// The sender's `Idempotency-Key`: a second send with the same key within
    /// [`IDEMPOTENCY_WINDOW_MS`] starts no run and gets the first send's runs.
    pub idempotency_key: Option<String>,
}

/// How long an `Idempotency-Key` is remembered: 24 hours.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Most characters of an `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// One run to start, as [`RunStore::enqueue`] takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    /// Its id ([`RunId::generate`]).
    pub id: RunId,
    /// The function it runs.
    pub function_id: FunctionId,
    /// How it is delivered.
    pub mode: RunMode,
    /// Parameters for the function, JSON text of an object (`{}` for an event's run).
    pub trigger_params: String,
    /// The orchestration step starting it (`None` for an event's run).
    pub step: Option<StepLink>,
    /// `Some(until)`: inserted already leased until then, as a lease at the send's time
    /// would leave it (running, attempt 1), for the push dispatcher of the node that
    /// sends it to deliver at once, without a lease write of its own. Its journal says it
    /// was queued, then leased by Coffer itself (`system`), as the dispatcher's lease does.
    /// `None`: queued.
    pub leased_until: Option<Timestamp>,
}

/// The orchestration step a function run executes: its job gets that step's encrypted
/// parameters, and when it ends the orchestration run is due again (in the same
/// transaction as [`RunStore::finish`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StepLink {
    /// The orchestration run.
    pub flow: crate::OrchestrationRunId,
    /// The step's id.
    pub step: String,
}

/// What [`RunStore::enqueue`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The runs of this send: the ones it started, or for a replayed `Idempotency-Key`
    /// the ones the first send started.
    pub runs: Vec<(RunId, FunctionId)>,
    /// Whether the key was seen before (nothing was written).
    pub replayed: bool,
    /// The runs it inserted leased ([`NewRun::leased_until`]), whole, in the order given;
    /// empty for a replay.
    pub leased: Vec<RunRecord>,
}

/// Which runs [`RunStore::lease`] may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseQuery {
    /// Only runs of this environment (a pull worker's); `None`: every environment (the
    /// push dispatcher). With `functions` too (a poll's read, [`RunStore::due_runs`]), the
    /// SQLite store steps over at most a bounded part of a backlog of other functions
    /// (PostgreSQL over all of it); with this alone (no caller does so), SQLite may read
    /// past other environments' due runs.
    pub environment: Option<EnvName>,
    /// Only runs of these functions; `None`: any.
    pub functions: Option<Vec<FunctionId>>,
    /// Only runs delivered this way.
    pub mode: RunMode,
    /// At most this many runs.
    pub limit: usize,
    /// The lease's end: the runs are the caller's until then.
    pub lease_until: Timestamp,
}

impl LeaseQuery {
    /// Whether no run can match: a limit of 0, or an empty list of functions.
    pub fn takes_nothing(&self) -> bool {
        self.limit == 0 || self.functions.as_ref().is_some_and(Vec::is_empty)
    }

    /// The functions a pull worker's poll reads one by one (each from its own stretch of an
    /// index by environment and function, so that a backlog of a function it does not name
    /// is never stepped over), each once: `None` when the query is not one environment's
    /// named functions.
    pub fn functions_one_by_one(&self) -> Option<Vec<&FunctionId>> {
        let (Some(_), Some(functions)) = (&self.environment, &self.functions) else {
            return None;
        };
        let mut functions: Vec<&FunctionId> = functions.iter().collect();
        functions.sort_unstable();
        functions.dedup();
        Some(functions)
    }
}

/// How many due runs a poll first reads of each of `functions` functions to find the
/// `limit` oldest of all: an even share. [`oldest_of`] says whether that was enough; when it
/// was not, each is read again up to `limit`, which always is.
pub fn first_share(limit: usize, functions: usize) -> usize {
    limit.div_ceil(functions.max(1))
}

/// The `limit` oldest items of `reads` by `key` (when each fell due, then the run's id),
/// each read sorted by it and cut at `per` items. `None` when a read that was cut could hold
/// an item older than the last one kept (or too few were kept while one was cut): then read
/// again with a larger `per`. With `per >= limit` it is always `Some`.
pub fn oldest_of<T>(
    reads: Vec<Vec<T>>,
    key: impl for<'a> Fn(&'a T) -> (i64, &'a str),
    per: usize,
    limit: usize,
) -> Option<Vec<T>> {
    // Each cut read's last item: what it has not returned comes after it.
    let cut: Vec<(i64, String)> = reads
        .iter()
        .filter(|read| read.len() >= per)
        .filter_map(|read| read.last())
        .map(|last| {
            let (due, id) = key(last);
            (due, id.to_owned())
        })
        .collect();
    let mut all: Vec<T> = reads.into_iter().flatten().collect();
    all.sort_by(|a, b| key(a).cmp(&key(b)));
    all.truncate(limit);
    if per >= limit || cut.is_empty() {
        return Some(all);
    }
    let exact = all.len() == limit
        && all.last().is_some_and(|kept| {
            let kept = key(kept);
            cut.iter().all(|(due, id)| (*due, id.as_str()) >= kept)
        });
    exact.then_some(all)
}

/// A run read by [`RunStore::due_runs`] that a caller takes with [`RunStore::lease_claimed`]
/// once it has built the run's job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The run's environment.
    pub environment: EnvName,
    /// The run.
    pub id: RunId,
    /// Its attempts when it was read: it is leased only if no one leased it since.
    pub attempts: u32,
    /// The job's resolution, audited in the lease's transaction (`None`: nothing resolved).
    pub resolution: Option<Resolution>,
}

/// How an attempt ended, for [`RunStore::finish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The run succeeded with this output (JSON text, redacted).
    Succeeded {
        /// The output.
        output: String,
    },
    /// The run failed for good with this error (redacted).
    Failed {
        /// The error.
        error: String,
    },
    /// The attempt failed; the run is queued again, to be leased from `not_before`.
    Retry {
        /// The attempt's error (redacted).
        error: String,
        /// When it may be leased again.
        not_before: Timestamp,
    },
}

/// Which runs [`RunStore::list_runs`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs of this function.
    pub function: Option<FunctionId>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
}

/// One audited resolution: which declared secrets were handed to a run or a process.
/// Names only, never values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The environment.
    pub environment: EnvName,
    /// The function whose declaration was resolved.
    pub function_id: FunctionId,
    /// The run it was for (`None`: `coffer run`'s resolve).
    pub run_id: Option<RunId>,
    /// The declared secrets that were set and handed over.
    pub resolved: Vec<SecretName>,
    /// The declared secrets that were not set (absent from the job).
    pub missing: Vec<SecretName>,
    /// When.
    pub at: Timestamp,
}

/// Runs: started by events, leased by the push dispatcher or pull workers, finished with
/// an output or an error.
///
/// Every state change is journaled in its transaction (`system.run.{id}.{status}`, the
/// run's attempts as the revision). Leasing is one conditional write per run, so under any
/// number of nodes and workers a run is held by one attempt at a time; a holder whose lease
/// has expired can neither extend nor finish it ([`crate::StoreError::LeaseLost`]).
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Starts `runs` for `event` in the incarnation `env`, atomically: all of them and
    /// their events, or none. With an idempotency key seen in `env` within
    /// [`IDEMPOTENCY_WINDOW_MS`], writes nothing and returns the first send's runs (also
    /// when two sends with one key race: one starts the runs, the other gets them).
    /// An accepted send is audited (`event.received`, the event's name, the number of runs
    /// as its count), with no event of its own. Each run is journaled queued (by `actor`);
    /// one given [`NewRun::leased_until`] is inserted leased and journaled running too (by
    /// `system`), and returned whole in [`Enqueued::leased`].
    /// Errors: [`crate::StoreError::NotFound`] when `env` no longer exists;
    /// [`crate::StoreError::ActorRevoked`].
    async fn enqueue(
        &self,
        env: &Environment,
        event: &EventSend,
        runs: Vec<NewRun>,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Enqueued>;

    /// One run, or `None`.
    async fn get_run(&self, env: &EnvName, id: &RunId) -> StoreResult<Option<RunRecord>>;

    /// One page (`size`: [`RunRecord::weight`]) of the runs of `env` matching `filter`,
    /// newest first (id descending), starting after (below) `after`. A listing does not
    /// show what started a run: its records' `event_data` and `trigger_params` are empty
    /// (never read), and [`RunStore::get_run`] has them.
    async fn list_runs(
        &self,
        env: &EnvName,
        filter: &RunFilter,
        after: Option<&RunId>,
        size: PageSize,
    ) -> StoreResult<Vec<RunRecord>>;

    /// Leases up to `query.limit` runs that are due at `at` — queued with
    /// `next_attempt_at <= at`, or running with a lease that expired by `at` — oldest due
    /// first: each becomes `Running` with one more attempt and the lease `query.lease_until`,
    /// journaled as `system.run.{id}.running`. Two callers never get the same run's same
    /// attempt. A key actor is re-checked ([`crate::StoreError::ActorRevoked`]).
    async fn lease(
        &self,
        query: &LeaseQuery,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Vec<RunRecord>>;

    /// Up to `query.limit` runs that [`RunStore::lease`] could take at `at`, in its order,
    /// passing over those in `skip` (runs the caller's node is already taking), without
    /// taking them: a read, for a caller that builds a run's job before it leases it
    /// ([`RunStore::lease_claimed`]). `query.lease_until` is not used.
    async fn due_runs(
        &self,
        query: &LeaseQuery,
        at: Timestamp,
        skip: &[RunId],
    ) -> StoreResult<Vec<RunRecord>>;

    /// Leases each claimed run that is still as it was read — due at `at`, at the claim's
    /// attempts — as [`RunStore::lease`] does (one more attempt, the lease `lease_until`,
    /// journaled), and audits the claim's resolution as [`RunStore::record_resolutions`]
    /// does, in one transaction: a job's values are handed over only with its lease and
    /// its audit row both committed, at the cost of one commit. Returns the runs it leased,
    /// in the claims' order; a claim another caller took since it was read (or a run gone
    /// with its environment) is left out, with its resolution. A run another transaction
    /// is changing right now counts as taken (never waited for). A key actor is re-checked
    /// ([`crate::StoreError::ActorRevoked`]).
    async fn lease_claimed(
        &self,
        claims: Vec<Claim>,
        lease_until: Timestamp,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Vec<RunRecord>>;

    /// Extends the lease of attempt `attempt` of a running run to `until`, if that attempt
    /// still holds it at `at`. Bookkeeping: not journaled.
    /// Errors: [`crate::StoreError::NotFound`], [`crate::StoreError::LeaseLost`].
    async fn extend_lease(
        &self,
        env: &EnvName,
        id: &RunId,
        attempt: u32,
        until: Timestamp,
        at: Timestamp,
    ) -> StoreResult<()>;

    /// Ends attempt `attempt` of a running run (any attempt when `None`) whose lease has
    /// not expired at `at`, as `outcome` says, journaled as `system.run.{id}.{status}`.
    /// When the run ends (succeeded or failed) and an orchestration step started it, that
    /// orchestration run, if it has not ended, is made due (`wake_at = at`) and its version
    /// bumped (a step taken on what was read before is refused) in the same transaction.
    /// Returns the run afterwards. Errors: [`crate::StoreError::NotFound`];
    /// [`crate::StoreError::LeaseLost`] when the run is not running, is at another attempt,
    /// or its lease expired; [`crate::StoreError::ActorRevoked`].
    async fn finish(
        &self,
        env: &EnvName,
        id: &RunId,
        attempt: Option<u32>,
        outcome: RunOutcome,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<RunRecord>;

    /// Deletes up to `limit` ended runs (succeeded or failed) last changed before
    /// `ended_before`, oldest first, and up to `limit` ended orchestration runs (succeeded,
    /// failed or rejected) likewise, in one transaction, and returns how many of both. Retention:
    /// the audit log keeps their history; a deletion of at least one run is audited as one
    /// `runs.pruned` row (actor `system`, the count; no event).
    async fn prune_runs(&self, ended_before: Timestamp, limit: usize) -> StoreResult<u64>;

    /// Audits resolutions (`function.resolved`, one row each: the function as its name, the
    /// names and the run in its detail; no event), in one transaction, after re-checking
    /// `actor`. Called before any value is handed over: if it fails, nothing is.
    async fn record_resolutions(&self, batch: &[Resolution], actor: &Actor) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(item: &(i64, String)) -> (i64, &str) {
        (item.0, &item.1)
    }

    fn read(items: &[(i64, &str)]) -> Vec<(i64, String)> {
        items.iter().map(|(d, id)| (*d, (*id).to_owned())).collect()
    }

    /// Every way of cutting sorted reads at `per` gives the `limit` oldest of all, or asks
    /// for a second read; a second read at `per = limit` is always enough.
    #[test]
    fn the_oldest_of_cut_reads_are_exact_or_read_again() {
        let full = [
            read(&[(1, "a1"), (3, "a3"), (4, "a4"), (9, "a9")]),
            read(&[(2, "b2"), (4, "b4"), (5, "b5")]),
            read(&[]),
            read(&[(4, "c4"), (6, "c6")]),
        ];
        let mut everything: Vec<(i64, String)> = full.iter().flatten().cloned().collect();
        everything.sort();
        for limit in 1..=10 {
            let expected: Vec<_> = everything.iter().take(limit).cloned().collect();
            for per in 1..=limit {
                let reads: Vec<_> = full
                    .iter()
                    .map(|r| r[..r.len().min(per)].to_vec())
                    .collect();
                match oldest_of(reads, key, per, limit) {
                    Some(got) => assert_eq!(got, expected, "limit {limit}, per {per}"),
                    None => assert!(per < limit, "per = limit is always enough"),
                }
            }
        }
        // An even share is enough when the reads interleave (a filled queue).
        let interleaved: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|f| read(&[(1, f), (2, f)]))
            .collect();
        let got = oldest_of(interleaved, key, first_share(4, 3), 4).expect("exact");
        assert_eq!(got.iter().map(|i| i.0).collect::<Vec<_>>(), [1, 1, 1, 2]);
        // Not when one function holds all the oldest.
        let lopsided = vec![read(&[(1, "a"), (2, "a")]), read(&[(7, "b"), (8, "b")])];
        assert!(oldest_of(lopsided, key, first_share(4, 2), 4).is_none());
    }
}
