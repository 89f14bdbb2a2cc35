//! Events and runs: sending an event starts runs (admin, manage of the environment); the
//! runtime plane's own commands — poll, heartbeat, complete, resolve — take a runtime key
//! of the environment and nothing else: admin and manage keys never obtain a value.

use std::time::Duration;

use coffer_store::{
    Claim, Enqueued, EnvName, EventSend, FunctionId, LeaseQuery, NewRun, RunId, RunMode,
    RunOutcome, RunRecord, RunStatus, SecretName, StoreError, Timestamp,
};
use coffer_wire::{FunctionMode, Job};

use super::Command;
use crate::runtime::waiters::Passed;
use crate::runtime::{MAX_EVENT_DATA_BYTES, check_event_name, stored_error, stored_output};
use crate::{Coffer, CoreError, Principal};

/// How often a waiting poll looks for due runs when nothing woke it (a retry whose backoff
/// ended, an expired lease). Runs queued on any node wake it at once: their events commit
/// to the journal, which every node watches.
const POLL_INTERVAL: Duration = Duration::from_millis(1000);

/// Due runs one poll reads at once: the one it takes, and one more should another poll
/// take that one first.
const DUE_READ: usize = 2;

/// Most runs that other polls here are taking that a poll's read passes over.
const MAX_SKIPPED: usize = 64;

/// Reads in a row a poll makes without waiting when every run it tried was taken by
/// another poll meanwhile.
const MAX_QUICK_RETRIES: u32 = 8;

/// Send an event: one run per function of the environment with a matching trigger.
#[derive(Debug)]
pub struct SendEvent {
    /// The environment.
    pub env: EnvName,
    /// The event.
    pub event: coffer_wire::SendEvent,
    /// The `Idempotency-Key` header: a second send with it starts no run.
    pub idempotency_key: Option<String>,
}

impl Command for SendEvent {
    type Output = Enqueued;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<Enqueued, CoreError> {
        check_event_name(&self.event.name)?;
        if let Some(key) = &self.idempotency_key {
            let ok = !key.is_empty()
                && key.chars().count() <= coffer_store::MAX_IDEMPOTENCY_KEY_CHARS
                && key.chars().all(|c| c.is_ascii_graphic());
            if !ok {
                return Err(CoreError::Invalid(format!(
                    "an Idempotency-Key is 1-{} visible ASCII characters",
                    coffer_store::MAX_IDEMPOTENCY_KEY_CHARS
                )));
            }
        }
        let data = self.event.data.unwrap_or(serde_json::Value::Null);
        let data = serde_json::to_string(&data)
            .map_err(|_| CoreError::Invalid("event data cannot be serialized".into()))?;
        if data.len() > MAX_EVENT_DATA_BYTES {
            return Err(CoreError::ValueTooLarge {
                what: "event data",
                limit: MAX_EVENT_DATA_BYTES,
            });
        }
        let incarnation = coffer.existing_environment(&self.env).await?;
        let now = Timestamp::now();
        let mut runs = Vec::new();
        for f in coffer.all_functions(&self.env).await? {
            if f.spec.triggered_by(&self.event.name) {
                runs.push(NewRun {
                    id: RunId::generate(now).map_err(|_| CoreError::Crypto)?,
                    function_id: f.record.id.clone(),
                    mode: match f.spec.mode {
                        FunctionMode::Push => RunMode::Push,
                        FunctionMode::Pull => RunMode::Pull,
                    },
                    trigger_params: "{}".into(),
                    step: None,
                    leased_until: None,
                });
            }
        }
        // Push runs that find free delivery slots on this node are inserted leased and
        // handed to its dispatcher: no lease write of their own.
        let handoff = coffer.runtime.handoff();
        let mut slots = Vec::new();
        if let Some(handoff) = &handoff {
            let until = now.after_millis(crate::runtime::push::PUSH_LEASE_MS);
            for run in runs.iter_mut().filter(|r| r.mode == RunMode::Push) {
                let Some(slot) = handoff.slot() else { break };
                run.leased_until = Some(until);
                slots.push(slot);
            }
        }
        let push = runs
            .iter()
            .any(|r| r.mode == RunMode::Push && r.leased_until.is_none());
        let pulled: Vec<FunctionId> = runs
            .iter()
            .filter(|r| r.mode == RunMode::Pull)
            .map(|r| r.function_id.clone())
            .collect();
        let send = EventSend {
            name: self.event.name,
            data,
            idempotency_key: self.idempotency_key,
        };
        let mut done = match coffer
            .catalog
            .enqueue(&incarnation, &send, runs, now, &who.actor())
            .await
        {
            Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(self.env)),
            other => other?,
        };
        // (A replay inserted nothing: its slots are given back as they drop.)
        if let Some(handoff) = handoff {
            for (run, slot) in std::mem::take(&mut done.leased).into_iter().zip(slots) {
                handoff.deliver(run, slot);
            }
            if push && !done.replayed {
                handoff.queued();
            }
        }
        if !done.replayed {
            if push {
                coffer.runtime.push_wake.notify_one();
            }
            for function in &pulled {
                coffer.runtime.pull_waiters.wake(&self.env, function);
            }
        }
        Ok(done)
    }
}

/// A pull worker asks for a run of its functions, waiting up to `waitMs` for one.
#[derive(Debug)]
pub struct PollRun {
    /// The environment.
    pub env: EnvName,
    /// What the worker asks for.
    pub poll: coffer_wire::Poll,
}

impl Command for PollRun {
    /// The job, or `None` when no run came within the wait.
    type Output = Option<Job>;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_runtime_key(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<Option<Job>, CoreError> {
        let poll = self.poll;
        if poll.functions.is_empty() || poll.functions.len() > coffer_wire::MAX_DECLARED {
            return Err(CoreError::Invalid(format!(
                "functions names 1 to {} function ids",
                coffer_wire::MAX_DECLARED
            )));
        }
        let functions = poll
            .functions
            .iter()
            .map(|f| FunctionId::new(f).map_err(|e| CoreError::Invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let wait = poll.wait_ms.unwrap_or(0);
        if wait > coffer_wire::MAX_WAIT_MS {
            return Err(CoreError::Invalid(format!(
                "waitMs is at most {}",
                coffer_wire::MAX_WAIT_MS
            )));
        }
        let lease = poll.lease_ms.unwrap_or(coffer_wire::DEFAULT_LEASE_MS);
        if !(1_000..=coffer_wire::MAX_LEASE_MS).contains(&lease) {
            return Err(CoreError::Invalid(format!(
                "leaseMs is 1000 to {}",
                coffer_wire::MAX_LEASE_MS
            )));
        }
        let incarnation = coffer.existing_environment(&self.env).await?;
        let _place = coffer
            .runtime
            .polls
            .clone()
            .try_acquire_owned()
            .map_err(|_| CoreError::Store(StoreError::Overloaded))?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
        let place = crate::runtime::waiters::Place::new(
            &coffer.runtime.pull_waiters,
            &self.env,
            &functions,
        );
        let mut journal = crate::runtime::other_writers(coffer);
        let mut retries = 0;
        loop {
            // Listed before the read, so a run queued right after it wakes this poll.
            place.enter();
            crate::runtime::mark_seen(&mut journal);
            let claims = &coffer.runtime.claims;
            let query = LeaseQuery {
                environment: Some(self.env.clone()),
                functions: Some(functions.clone()),
                mode: RunMode::Pull,
                // A read returns whole runs (their event data included): the one to take
                // and one more, past those other polls here are taking (passed over in
                // the read, up to a bound).
                limit: DUE_READ,
                lease_until: Timestamp::now(),
            };
            let (mut taken, mut lost) = (None, false);
            let skip = claims.held(MAX_SKIPPED);
            for run in coffer
                .catalog
                .due_runs(&query, Timestamp::now(), &skip)
                .await?
            {
                let mut claimed = match claims.claim(&run.id) {
                    Ok(claimed) => claimed,
                    // Claimed here since the read (or past the bound), or listed by a read
                    // older than its lease: there may be more due behind.
                    Err(Passed::Held | Passed::Leased) => {
                        lost = true;
                        continue;
                    }
                };
                match lease_with_job(coffer, &incarnation, &run, lease, who).await? {
                    Some(job) => {
                        claimed.leased();
                        taken = Some((run.function_id, job));
                        break;
                    }
                    None => lost = true,
                }
            }
            match taken {
                Some((function, job)) => {
                    place.took(&function);
                    return Ok(Some(job));
                }
                None => place.found_nothing(),
            }
            // Every run it tried went elsewhere meanwhile (or failed): there may be more
            // due behind them, so it reads again rather than waits (a few times running;
            // the lease, not this, is what ends a race).
            if lost && retries < MAX_QUICK_RETRIES {
                retries += 1;
                continue;
            }
            retries = 0;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let nap = (deadline - now).min(POLL_INTERVAL);
            tokio::select! {
                _ = place.picked() => {}
                Ok(()) = crate::runtime::changed(&mut journal) => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }
}

/// Builds the job of `run` (read as due) and leases the run with the job's resolution
/// audited, in one transaction. `None` when another poll leased it first (the job is
/// dropped unseen, its resolution unrecorded), or when the run cannot be handed over (its
/// function is gone, or its step's parameters cannot be had): then it is leased and failed.
/// When Coffer cannot build the job now (its storage failed), the run is leased (so the
/// next polls take other runs) and the error returned; it is due again when the lease ends.
async fn lease_with_job(
    coffer: &Coffer,
    env: &coffer_store::Environment,
    run: &RunRecord,
    lease_ms: u64,
    who: &Principal,
) -> Result<Option<Job>, CoreError> {
    // Ok(Ok): the job; Ok(Err): why the run cannot be handed over; Err: Coffer could not
    // build it now (its storage failed).
    let built = async {
        let function = match coffer.find_function(&env.name, &run.function_id).await {
            Ok(function) => function,
            Err(CoreError::FunctionNotFound { .. }) => {
                return Ok(Err(format!("function {} was deleted", run.function_id)));
            }
            Err(e) => return Err(e),
        };
        let built = coffer.build_run_job(env, &function, run).await?;
        Ok(built.map(|(mut job, resolution, _)| {
            // The attempt the lease makes it (taken only at the attempts it was read at).
            job.attempt = Some(run.attempts + 1);
            (job, resolution)
        }))
    }
    .await;
    let claim = Claim {
        environment: env.name.clone(),
        id: run.id.clone(),
        attempts: run.attempts,
        resolution: match &built {
            Ok(Ok((_, resolution))) => Some(resolution.clone()),
            _ => None,
        },
    };
    // Leased whatever happened, so a run whose job cannot be built now does not stay at
    // the head of its functions' queue: it is out of the way until its lease ends (and
    // then tried again), as when every poll leased first.
    let now = Timestamp::now();
    let leased = coffer
        .catalog
        .lease_claimed(vec![claim], now.after_millis(lease_ms), now, &who.actor())
        .await?;
    let Some(leased) = leased.into_iter().next() else {
        return Ok(None);
    };
    match built? {
        Ok((job, _)) => Ok(Some(job)),
        Err(why) => {
            let _ = coffer
                .catalog
                .finish(
                    &env.name,
                    &run.id,
                    Some(leased.attempts),
                    RunOutcome::Failed { error: why },
                    Timestamp::now(),
                    &who.actor(),
                )
                .await;
            Ok(None)
        }
    }
}

/// A worker extends its lease on a run.
#[derive(Debug)]
pub struct HeartbeatRun {
    /// The environment.
    pub env: EnvName,
    /// The run.
    pub id: RunId,
    /// Which attempt, and for how long.
    pub body: coffer_wire::Heartbeat,
}

impl Command for HeartbeatRun {
    type Output = ();

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_runtime_key(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, _who: &Principal) -> Result<(), CoreError> {
        // A push run's lease is the dispatcher's: a worker cannot extend it.
        if let Some(run) = coffer.catalog.get_run(&self.env, &self.id).await?
            && run.mode != RunMode::Pull
        {
            return Err(CoreError::LeaseLost);
        }
        let lease = self.body.lease_ms.unwrap_or(coffer_wire::DEFAULT_LEASE_MS);
        if !(1_000..=coffer_wire::MAX_LEASE_MS).contains(&lease) {
            return Err(CoreError::Invalid(format!(
                "leaseMs is 1000 to {}",
                coffer_wire::MAX_LEASE_MS
            )));
        }
        let now = Timestamp::now();
        let until = now.after_millis(lease);
        match coffer
            .catalog
            .extend_lease(&self.env, &self.id, self.body.attempt, until, now)
            .await
        {
            Err(StoreError::NotFound) => Err(run_not_found(coffer, self.env, self.id).await),
            Err(StoreError::LeaseLost) => Err(CoreError::LeaseLost),
            other => Ok(other?),
        }
    }
}

/// A worker reports how a run ended: its output, or its error. Both are redacted before
/// they are stored.
#[derive(Debug)]
pub struct CompleteRun {
    /// The environment.
    pub env: EnvName,
    /// The run.
    pub id: RunId,
    /// `output` or `error`, and the attempt.
    pub body: coffer_wire::Complete,
}

impl Command for CompleteRun {
    type Output = RunRecord;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_runtime_key(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<RunRecord, CoreError> {
        let body = self.body;
        let result = match (body.output, body.error) {
            (Some(output), None) => Ok(output),
            (None, Some(error)) => Err(error),
            _ => {
                return Err(CoreError::Invalid(
                    "send either output or error, not both and not neither".into(),
                ));
            }
        };
        let incarnation = coffer.existing_environment(&self.env).await?;
        let Some(run) = coffer.catalog.get_run(&self.env, &self.id).await? else {
            return Err(CoreError::RunNotFound {
                env: self.env,
                id: self.id,
            });
        };
        // Refused before anything costly is built: a pull run, still running, at this
        // attempt with an unexpired lease (the store checks all of it again as it writes).
        let held = run.mode == RunMode::Pull
            && run.status == RunStatus::Running
            && body.attempt.is_none_or(|a| a == run.attempts)
            && run
                .lease_expires_at
                .is_some_and(|until| until > Timestamp::now());
        if !held {
            return Err(CoreError::LeaseLost);
        }
        // The values to redact: those the function declares, as they are now. Without the
        // function there is nothing to redact with: nothing the worker sent is kept. Large
        // values are redacted through the node's gate: completions sent at once (for one
        // run or many) would each build automata many times their size.
        let outcome = match coffer.find_function(&self.env, &run.function_id).await {
            Ok(f) => match coffer.redactor_for_run(&incarnation, &f, &run).await? {
                Some(redactor) => {
                    let redactions = &coffer.runtime.redactions;
                    let text_bytes = match &result {
                        Ok(output) => crate::runtime::json_text_bytes(output),
                        Err(error) => error.len(),
                    };
                    redactions
                        .run(redactor, text_bytes, move |redactor| match result {
                            Ok(output) => RunOutcome::Succeeded {
                                output: stored_output(redactor, output),
                            },
                            Err(error) => RunOutcome::Failed {
                                error: stored_error(redactor, &error),
                            },
                        })
                        .await?
                }
                None => {
                    let gone = "the run's orchestration step changed while it ran; what the worker reported is not kept (it could not be redacted)";
                    RunOutcome::Failed {
                        error: gone.to_owned(),
                    }
                }
            },
            Err(CoreError::FunctionNotFound { .. }) => {
                let gone = "the function was deleted while the run ran; what the worker reported is not kept (it could not be redacted)";
                match result {
                    Ok(_) => RunOutcome::Succeeded {
                        output: serde_json::json!({ "redacted": gone }).to_string(),
                    },
                    Err(_) => RunOutcome::Failed {
                        error: gone.to_owned(),
                    },
                }
            }
            Err(e) => return Err(e),
        };
        match coffer
            .catalog
            .finish(
                &self.env,
                &self.id,
                body.attempt,
                outcome,
                Timestamp::now(),
                &who.actor(),
            )
            .await
        {
            Err(StoreError::NotFound) => Err(run_not_found(coffer, self.env, self.id).await),
            Err(StoreError::LeaseLost) => Err(CoreError::LeaseLost),
            other => Ok(other?),
        }
    }
}

async fn run_not_found(coffer: &Coffer, env: EnvName, id: RunId) -> CoreError {
    match coffer.existing_environment(&env).await {
        Err(e) => e,
        Ok(_) => CoreError::RunNotFound { env, id },
    }
}

/// `coffer run`: the declared secrets (and config keys) of a function, for a process.
#[derive(Debug)]
pub struct ResolveFunction {
    /// The environment.
    pub env: EnvName,
    /// The function whose declaration is resolved.
    pub id: FunctionId,
    /// Only these of its declared secrets.
    pub only: Option<Vec<String>>,
}

impl Command for ResolveFunction {
    type Output = Job;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_runtime_key(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<Job, CoreError> {
        let incarnation = coffer.existing_environment(&self.env).await?;
        let function = coffer.find_function(&self.env, &self.id).await?;
        let only = match &self.only {
            None => None,
            Some(names) => {
                let mut checked = Vec::new();
                for raw in names {
                    let name =
                        SecretName::new(raw).map_err(|e| CoreError::Invalid(e.to_string()))?;
                    if !function.spec.secrets.iter().any(|s| s == raw) {
                        return Err(CoreError::Invalid(format!(
                            "secret {name} is not declared by function {}",
                            self.id
                        )));
                    }
                    checked.push(name);
                }
                Some(checked)
            }
        };
        let (job, resolution) = coffer
            .build_job(&incarnation, &function, None, only.as_deref())
            .await?;
        coffer
            .catalog
            .record_resolutions(std::slice::from_ref(&resolution), &who.actor())
            .await?;
        Ok(job)
    }
}
