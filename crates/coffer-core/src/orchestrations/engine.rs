//! The machine that executes orchestration runs.
//!
//! Each node runs [`run`]: it leases the runs that are due (the store hands each to one
//! node at a time), takes each as far as it can go without waiting — decisions, finished
//! steps — and writes the result as one conditional step ([`FlowStore::advance_flow`] on
//! the run's version), which also starts a compute step's function run in the same
//! transaction. A run waits with no node holding it: on its function run (whose end makes
//! it due again, in the finishing transaction), on a delay or an approval's timeout (its
//! `wake_at`), or on a decision (which makes it due). So a restart, or another node,
//! resumes every run where it was; a step's function run is started once, and delivered
//! at least once with its own `runId`/`attempt`.
//!
//! A compute step's encrypted parameters and references are not in the run, its state or
//! the function run's record: [`Coffer::step_params`] reads them from the orchestration
//! when the function run's job is built, for that step only.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use coffer_store::journal::Action;
use coffer_store::{
    Actor, Environment, FlowAdvance, FlowRecord, FlowStatus, NewRun, RunId, RunMode, RunRecord,
    RunStatus, SecretName, StepLink, StepRun, StoreError, Timestamp,
};
use coffer_wire::{
    Condition, ConditionOp, FunctionMode, MAX_STEPS_PER_RUN, Step, StepState, StepStatus,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{StoredParam, fresh_step, parse_stored};
use crate::{Coffer, CoreError};

/// Runs leased at once.
const LEASE_BATCH: usize = 64;
/// How long a node holds a run while it takes its step.
const LEASE_MS: u64 = 30_000;
/// How often an idle node looks for due runs (delays and timeouts end on time to about
/// this much).
const IDLE_INTERVAL: Duration = Duration::from_millis(250);
/// Most bytes of a compute step's output kept in the run's state (the function run keeps
/// it whole).
const MAX_STEP_OUTPUT_BYTES: usize = 64 * 1024;

/// The machine's state of one run, kept as JSON text in the store.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FlowState {
    /// Every step, in definition order.
    pub(crate) steps: Vec<StepState>,
    /// Steps taken so far.
    pub(crate) executed: u32,
    /// When the current step's wait ends (a delay, an approval's timeout), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) until_ms: Option<i64>,
}

impl FlowState {
    pub(crate) fn new(steps: &[Step]) -> Self {
        FlowState {
            steps: steps.iter().map(|s| fresh_step(s.id())).collect(),
            executed: 0,
            until_ms: None,
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, CoreError> {
        serde_json::from_str(text).map_err(|_| {
            CoreError::Store(StoreError::Corrupt(
                "an orchestration run's state does not parse".into(),
            ))
        })
    }

    pub(crate) fn to_text(&self) -> Result<String, CoreError> {
        serde_json::to_string(self).map_err(|_| {
            CoreError::Store(StoreError::Corrupt(
                "an orchestration run's state cannot be serialized".into(),
            ))
        })
    }
}

/// An approval's decision, as the store keeps it until the machine takes it in.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Decision {
    pub(crate) approved: bool,
    pub(crate) key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    pub(crate) at: String,
}

/// Checks a decision's condition when the definition is saved.
pub(crate) fn check_condition(
    step: &str,
    condition: &Condition,
    ids: &BTreeSet<&str>,
) -> Result<(), CoreError> {
    let bad = |why: String| CoreError::Invalid(format!("step {step}: condition {why}"));
    let parts: Vec<&str> = condition.path.split('.').collect();
    match parts.as_slice() {
        ["params", rest @ ..] if !rest.is_empty() && rest.iter().all(|p| !p.is_empty()) => {}
        ["steps", id, "output", rest @ ..] if rest.iter().all(|p| !p.is_empty()) => {
            if !ids.contains(id) {
                return Err(bad(format!("path names step {id:?}, which does not exist")));
            }
        }
        _ => {
            return Err(bad(format!(
                "path {:?}: use params.a.b or steps.<id>.output.a.b",
                condition.path
            )));
        }
    }
    match (condition.op, &condition.value) {
        (ConditionOp::Exists, Some(_)) => Err(bad("op exists takes no value".into())),
        (ConditionOp::Exists, None) => Ok(()),
        (_, None) => Err(bad("needs a value to compare with".into())),
        (_, Some(_)) => Ok(()),
    }
}

/// Whether `condition` holds for a run with `params` and steps as in `state`.
fn holds(condition: &Condition, params: &Map<String, Value>, state: &FlowState) -> bool {
    let parts: Vec<&str> = condition.path.split('.').collect();
    let found = match parts.as_slice() {
        ["params", first, rest @ ..] => params.get(*first).and_then(|v| dig(v, rest)),
        ["steps", id, "output", rest @ ..] => state
            .steps
            .iter()
            .find(|s| s.id == *id)
            .and_then(|s| s.output.as_ref())
            .and_then(|v| dig(v, rest)),
        _ => None,
    };
    let found = found.filter(|v| !v.is_null());
    let expected = condition.value.as_ref();
    match condition.op {
        ConditionOp::Exists => found.is_some(),
        ConditionOp::Eq => found.is_some_and(|v| Some(v) == expected),
        ConditionOp::Ne => found.is_none_or(|v| Some(v) != expected),
        ConditionOp::Gt => compare(found, expected) == Some(std::cmp::Ordering::Greater),
        ConditionOp::Lt => compare(found, expected) == Some(std::cmp::Ordering::Less),
    }
}

fn dig<'v>(mut v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    for p in path {
        v = match v {
            Value::Object(o) => o.get(*p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Option<std::cmp::Ordering> {
    match (a?, b?) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    }
}

/// What a step asks of the machine once taken.
enum Next {
    /// Wait: nothing to do until `wake_at` (or an outside event when `None`).
    Wait(Option<Timestamp>),
    /// Go on to the step at this index (`len` = the end).
    Go(usize),
    /// The run failed.
    Fail,
    /// The run ended as it is (a rejection).
    End,
}

/// Runs the machine until `stop` resolves.
pub async fn run(coffer: Arc<Coffer>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut journal = coffer.catalog.watch_events();
    loop {
        let woken = coffer.runtime.flow_wake.notified();
        journal.borrow_and_update();
        let now = Timestamp::now();
        let mut full = false;
        match coffer
            .catalog
            .lease_flows(LEASE_BATCH, now.after_millis(LEASE_MS), now)
            .await
        {
            Ok(flows) => {
                full = flows.len() == LEASE_BATCH;
                // The batch's runs take their steps at once: their writes share the
                // store's commits instead of waiting for one another's.
                let mut batch = tokio::task::JoinSet::new();
                for flow in flows {
                    let coffer = coffer.clone();
                    batch.spawn(async move {
                        let id = flow.id.clone();
                        match take_steps(&coffer, flow).await {
                            // The run moved on meanwhile (a store conflict arrives as
                            // a revision conflict): its next lease takes it from there.
                            Ok(()) | Err(CoreError::RevisionConflict { .. }) => {}
                            Err(e) => {
                                tracing::warn!(run = %id, error = %e, "an orchestration run could not take its step; it is tried again when its lease ends")
                            }
                        }
                    });
                }
                while batch.join_next().await.is_some() {}
            }
            Err(e) => tracing::warn!(error = %e, "orchestration runs could not be leased"),
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = woken => {}
            Ok(()) = journal.changed() => {}
            _ = tokio::time::sleep(IDLE_INTERVAL) => {}
        }
    }
}

/// Takes a leased run as far as it goes without waiting, and writes where it got to.
async fn take_steps(coffer: &Coffer, flow: FlowRecord) -> Result<(), CoreError> {
    let corrupt = |what: &str| {
        CoreError::Store(StoreError::Corrupt(format!(
            "an orchestration run's {what} does not parse"
        )))
    };
    let steps: Vec<Step> = serde_json::from_str(&flow.steps).map_err(|_| corrupt("steps"))?;
    let params: Map<String, Value> = match serde_json::from_str(&flow.params) {
        Ok(Value::Object(m)) => m,
        _ => return Err(corrupt("params")),
    };
    let mut state = FlowState::parse(&flow.state)?;
    if state.steps.len() != steps.len() {
        return Err(corrupt("state"));
    }
    let env = flow.environment.clone();
    let now = Timestamp::now();
    let mut status = flow.status;
    let mut current = flow.current_step.clone();
    let mut action = None;
    let mut start = None;
    let mut take_decision = false;
    let mut failure: Option<String> = None;
    let wake_at = loop {
        let Some(idx) = current
            .as_deref()
            .and_then(|c| steps.iter().position(|s| s.id() == c))
        else {
            failure = Some("the run is at no step".into());
            break None;
        };
        let next = match &steps[idx] {
            Step::Compute(c) => match state.steps[idx].status {
                StepStatus::Pending => {
                    let function = match coffer
                        .find_function(
                            &env,
                            &coffer_store::FunctionId::new(&c.function_id)
                                .map_err(|e| CoreError::Invalid(e.to_string()))?,
                        )
                        .await
                    {
                        Ok(f) => Some(f),
                        Err(CoreError::FunctionNotFound { .. }) => None,
                        Err(e) => return Err(e),
                    };
                    // A deleted orchestration's params are gone: its step cannot run.
                    let orchestration = coffer
                        .catalog
                        .get_orchestration(&env, &flow.orchestration_id)
                        .await?
                        .filter(|o| o.environment_id == flow.environment_id);
                    match function {
                        _ if orchestration.is_none() => {
                            let st = &mut state.steps[idx];
                            st.status = StepStatus::Failed;
                            st.error = Some(format!(
                                "orchestration {} was deleted",
                                flow.orchestration_id
                            ));
                            Next::Fail
                        }
                        None => {
                            let st = &mut state.steps[idx];
                            st.status = StepStatus::Failed;
                            st.error = Some(format!("function {} does not exist", c.function_id));
                            Next::Fail
                        }
                        Some(f) => {
                            let id = RunId::generate(now).map_err(|_| CoreError::Crypto)?;
                            let mut trigger = params.clone();
                            trigger.extend(c.params.clone());
                            start = Some(StepRun {
                                run: NewRun {
                                    id: id.clone(),
                                    function_id: f.record.id.clone(),
                                    mode: match f.spec.mode {
                                        FunctionMode::Push => RunMode::Push,
                                        FunctionMode::Pull => RunMode::Pull,
                                    },
                                    trigger_params: Value::Object(trigger).to_string(),
                                    step: Some(StepLink {
                                        flow: flow.id.clone(),
                                        step: c.id.clone(),
                                    }),
                                    leased_until: None,
                                },
                                event_name: format!(
                                    "orchestration.{}.{}",
                                    flow.orchestration_id, c.id
                                ),
                                event_data: serde_json::json!({
                                    "orchestrationId": flow.orchestration_id.as_str(),
                                    "orchestrationRunId": flow.id.as_str(),
                                    "stepId": c.id,
                                })
                                .to_string(),
                            });
                            let st = &mut state.steps[idx];
                            st.status = StepStatus::Running;
                            st.run_id = Some(id.to_string());
                            Next::Wait(None)
                        }
                    }
                }
                StepStatus::Running => {
                    let run = match state.steps[idx].run_id.as_deref().map(RunId::new) {
                        Some(Ok(id)) => coffer.catalog.get_run(&env, &id).await?,
                        _ => None,
                    };
                    let st = &mut state.steps[idx];
                    match run {
                        None => {
                            st.status = StepStatus::Failed;
                            st.error = Some("its function run no longer exists".into());
                            Next::Fail
                        }
                        Some(r) if !r.status.is_final() => Next::Wait(None),
                        Some(r) if r.status == RunStatus::Succeeded => {
                            st.status = StepStatus::Succeeded;
                            st.output = Some(step_output(&r));
                            Next::Go(idx + 1)
                        }
                        Some(r) => {
                            st.status = StepStatus::Failed;
                            st.error = Some(r.error.unwrap_or_else(|| "its run failed".into()));
                            Next::Fail
                        }
                    }
                }
                _ => Next::Go(idx + 1),
            },
            Step::Approval(a) => match state.steps[idx].status {
                StepStatus::Pending => {
                    let until = a.timeout_ms.map(|t| now.after_millis(t));
                    state.until_ms = until.map(Timestamp::millis);
                    let st = &mut state.steps[idx];
                    st.status = StepStatus::Running;
                    st.until = until.map(Timestamp::rfc3339);
                    status = FlowStatus::WaitingApproval;
                    action = Some(Action::FlowWaiting);
                    Next::Wait(until)
                }
                StepStatus::Running => {
                    let decision = flow
                        .decision
                        .as_deref()
                        .filter(|_| !take_decision)
                        .map(serde_json::from_str::<Decision>)
                        .transpose()
                        .map_err(|_| corrupt("decision"))?;
                    let until = state.until_ms.map(Timestamp::from_millis);
                    let st = &mut state.steps[idx];
                    match decision {
                        Some(d) => {
                            take_decision = true;
                            let mut out = serde_json::json!({"decidedBy": d.key_id, "at": d.at});
                            if let Some(r) = d.reason {
                                out["reason"] = Value::String(r);
                            }
                            st.output = Some(out);
                            if d.approved {
                                st.status = StepStatus::Succeeded;
                                status = FlowStatus::Running;
                                Next::Go(idx + 1)
                            } else {
                                st.status = StepStatus::Rejected;
                                status = FlowStatus::Rejected;
                                Next::End
                            }
                        }
                        None if until.is_some_and(|u| u <= now) => {
                            st.status = StepStatus::Failed;
                            st.error = Some("the approval timed out".into());
                            Next::Fail
                        }
                        None => Next::Wait(until),
                    }
                }
                _ => Next::Go(idx + 1),
            },
            Step::Delay(d) => match state.steps[idx].status {
                StepStatus::Pending => {
                    let until = now.after_millis(d.duration_ms);
                    state.until_ms = Some(until.millis());
                    let st = &mut state.steps[idx];
                    st.status = StepStatus::Running;
                    st.until = Some(until.rfc3339());
                    if d.duration_ms == 0 {
                        st.status = StepStatus::Succeeded;
                        Next::Go(idx + 1)
                    } else {
                        Next::Wait(Some(until))
                    }
                }
                StepStatus::Running => match state.until_ms.map(Timestamp::from_millis) {
                    Some(until) if until > now => Next::Wait(Some(until)),
                    _ => {
                        state.steps[idx].status = StepStatus::Succeeded;
                        Next::Go(idx + 1)
                    }
                },
                _ => Next::Go(idx + 1),
            },
            Step::Decision(d) => {
                let result = holds(&d.condition, &params, &state);
                let target = if result { &d.then } else { &d.otherwise };
                let st = &mut state.steps[idx];
                st.status = StepStatus::Succeeded;
                st.output = Some(serde_json::json!({"result": result, "next": target}));
                match steps.iter().position(|s| s.id() == target) {
                    Some(i) => Next::Go(i),
                    None => {
                        failure = Some(format!("step {target} does not exist"));
                        Next::Fail
                    }
                }
            }
        };
        match next {
            Next::Wait(at) => break at,
            Next::End => break None,
            Next::Fail => {
                status = FlowStatus::Failed;
                action = Some(Action::FlowFailed);
                break None;
            }
            Next::Go(i) => {
                state.executed = state.executed.saturating_add(1);
                if i >= steps.len() {
                    status = FlowStatus::Succeeded;
                    action = Some(Action::FlowSucceeded);
                    break None;
                }
                if state.executed >= MAX_STEPS_PER_RUN {
                    failure = Some(format!(
                        "the run took {MAX_STEPS_PER_RUN} steps, the most one run may take"
                    ));
                    status = FlowStatus::Failed;
                    action = Some(Action::FlowFailed);
                    break None;
                }
                current = Some(steps[i].id().to_owned());
                state.steps[i] = fresh_step(steps[i].id());
                state.until_ms = None;
            }
        }
    };
    if let Some(why) = failure {
        status = FlowStatus::Failed;
        action = Some(Action::FlowFailed);
        if let Some(st) = current
            .as_deref()
            .and_then(|c| state.steps.iter_mut().find(|s| s.id == c))
        {
            st.status = StepStatus::Failed;
            st.error = Some(why);
        }
    }
    if status.is_final() {
        for st in &mut state.steps {
            if st.status == StepStatus::Pending {
                st.status = StepStatus::Skipped;
            }
        }
    }
    let started = start
        .as_ref()
        .map(|s| (s.run.mode, s.run.function_id.clone()));
    let advance = FlowAdvance {
        id: flow.id.clone(),
        version: flow.version,
        status,
        current_step: current,
        state: state.to_text()?,
        wake_at: if status.is_final() { None } else { wake_at },
        take_decision,
        start,
        action,
    };
    match coffer
        .catalog
        .advance_flow(&env, advance, now, &Actor::System)
        .await
    {
        Ok(_) => {}
        // The run moved on (another node, a decision) or is gone: nothing to do here.
        Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    match started {
        Some((RunMode::Push, _)) => coffer.runtime.push_wake.notify_one(),
        Some((RunMode::Pull, function)) => coffer.runtime.pull_waiters.wake(&env, &function),
        None => {}
    }
    Ok(())
}

/// A compute step's output as its run's state keeps it (already redacted when the
/// function run stored it).
fn step_output(run: &RunRecord) -> Value {
    match &run.output {
        Some(text) if text.len() <= MAX_STEP_OUTPUT_BYTES => {
            serde_json::from_str(text).unwrap_or(Value::Null)
        }
        Some(text) => serde_json::json!({"truncated": true, "bytes": text.len()}),
        None => Value::Null,
    }
}

/// What a compute step's function run receives beyond its stored `triggerParams`.
pub(crate) struct StepParams {
    /// Merged over the stored `triggerParams`, winning on a key collision: the step's plain
    /// `encryptedParams`, its references resolved and its encrypted ones opened.
    pub(crate) params: Map<String, Value>,
    /// The values among them that are secret (to redact the run's output and error).
    pub(crate) secrets: Vec<SecretString>,
    /// References that were set and handed over.
    pub(crate) resolved: Vec<SecretName>,
    /// References that were not set.
    pub(crate) missing: Vec<SecretName>,
    /// The params of those references: absent from the job's `triggerParams` altogether
    /// (a run's or the step's plain param of that name does not stand in for them).
    pub(crate) absent: Vec<String>,
}

impl Coffer {
    /// The encrypted parameters and references of the step `link` names, for a run of
    /// `function` in `env`: read from the orchestration now (a reference gets the secret's
    /// current value). `Err` when the step cannot be had (its orchestration deleted, the
    /// step gone or now running another function, a value that cannot be opened): the
    /// run fails rather than run without them.
    pub(crate) async fn step_params(
        &self,
        env: &Environment,
        function: &crate::runtime::FunctionView,
        link: &StepLink,
    ) -> Result<StepParams, String> {
        let declared = &function.spec.secrets;
        let function = &function.record.id;
        let flow = match self.catalog.get_flow(&env.name, &link.flow).await {
            Ok(Some(f)) if f.environment_id == env.id => f,
            Ok(_) => return Err("its orchestration run no longer exists".into()),
            Err(e) => return Err(e.to_string()),
        };
        let orchestration = match self
            .catalog
            .get_orchestration(&env.name, &flow.orchestration_id)
            .await
        {
            Ok(Some(o)) if o.environment_id == env.id => o,
            Ok(_) => {
                return Err(format!(
                    "orchestration {} was deleted",
                    flow.orchestration_id
                ));
            }
            Err(e) => return Err(e.to_string()),
        };
        let steps = parse_stored(&orchestration.steps).map_err(|e| e.to_string())?;
        let step = steps.into_iter().find(|s| match &s.step {
            Step::Compute(c) => c.id == link.step && c.function_id == function.as_str(),
            _ => false,
        });
        let Some(step) = step else {
            return Err(format!(
                "step {} of orchestration {} no longer runs function {function}",
                link.step, flow.orchestration_id
            ));
        };
        let mut out = StepParams {
            params: Map::new(),
            secrets: Vec::new(),
            resolved: Vec::new(),
            missing: Vec::new(),
            absent: Vec::new(),
        };
        // Plain ones, then references, then encrypted ones: within one step a name is one
        // kind, so the order only matters against the run's and the step's plain params,
        // which all of these win over.
        for (name, p) in step.params {
            match p {
                StoredParam::Plain(v) => {
                    out.params.insert(name, v);
                }
                StoredParam::Ref(r) => {
                    // Checked when the definition was saved, and again now: the function
                    // may have stopped declaring it since.
                    if !declared.contains(&r) {
                        return Err(format!(
                            "step {} references secret {r}, which function {function} does not declare",
                            link.step
                        ));
                    }
                    let secret = SecretName::new(&r).map_err(|e| e.to_string())?;
                    match self
                        .open_secret(env, &secret)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        Some(v) => {
                            use secrecy::ExposeSecret;
                            out.params
                                .insert(name, Value::String(v.expose_secret().to_owned()));
                            out.secrets.push(v);
                            out.resolved.push(secret);
                        }
                        None => {
                            out.missing.push(secret);
                            out.absent.push(name);
                        }
                    }
                }
                StoredParam::Sealed(stored) => {
                    let aad = super::param_aad(
                        &env.id,
                        &orchestration.id,
                        &link.step,
                        function.as_str(),
                        &name,
                    );
                    let Some(plain) = crate::service::open_text(self.keyring(), &stored, &aad)
                    else {
                        return Err(format!(
                            "encrypted param {name} of step {} cannot be decrypted",
                            link.step
                        ));
                    };
                    use secrecy::ExposeSecret;
                    out.params
                        .insert(name, Value::String(plain.expose_secret().to_owned()));
                    out.secrets.push(plain);
                }
            }
        }
        Ok(out)
    }
}
