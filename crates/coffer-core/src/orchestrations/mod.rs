//! Orchestrations: definitions whose compute steps hold their own parameters, sealed at
//! rest and masked on every read, and the runs that execute them ([`engine`]).
//!
//! A definition is stored as JSON text (the store never parses it): the wire's steps, with
//! every compute step's `encryptedParams` in their stored form —
//! `{"value": "iv:ciphertext:tag", "encrypted": true, "keyVersion": N}` (sealed with
//! associated data naming the environment incarnation, the orchestration, the step and the
//! param; `keyVersion` 0 and the plaintext in dev mode), `{"value": …, "encrypted": false}`
//! for a plain one, `{"secretRef": "NAME"}` for a reference. Reads go through [`mask`],
//! which leaves no blob and no plaintext.

pub mod engine;

use std::collections::{BTreeMap, BTreeSet};

use coffer_store::{
    EnvId, EnvName, FlowFilter, FlowRecord, FlowStatus, FunctionId, NewFlow, OrchestrationId,
    OrchestrationRecord, OrchestrationRunId, PageSize, Precondition, Revision, SecretName,
    StoreError, StoredValue, Timestamp,
};
use coffer_wire::{
    ComputeStep, MASK, MAX_PARAMS, MAX_STEP_WAIT_MS, MAX_STEPS, Param, Step, StepState, StepStatus,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::commands::Command;
use crate::service::Page;
use crate::{Coffer, CoreError, Principal};

/// Most characters of an orchestration's name.
pub const MAX_NAME_CHARS: usize = 128;
/// Most bytes of one encrypted parameter's value (as a secret value).
pub const MAX_PARAM_VALUE_BYTES: usize = crate::MAX_VALUE_BYTES;
/// Most characters of an approval's reason.
pub const MAX_REASON_CHARS: usize = 1024;

/// The associated data an encrypted parameter is sealed with: it opens only in its place —
/// this environment incarnation, orchestration, step, the step's function and param name.
pub(crate) fn param_aad(
    env: &EnvId,
    id: &OrchestrationId,
    step: &str,
    function: &str,
    param: &str,
) -> String {
    format!("coffer:orchestration-param:{env}:{id}:{step}:{function}:{param}")
}

/// One parameter in its stored form.
pub(crate) enum StoredParam {
    /// Sealed (or, in dev mode, plaintext with key version 0).
    Sealed(StoredValue),
    /// A plain value.
    Plain(Value),
    /// The environment's secret of this name.
    Ref(String),
}

/// A step in its stored form: the wire step (its `encryptedParams` empty) and its params.
pub(crate) struct StoredStep {
    pub(crate) step: Step,
    pub(crate) params: BTreeMap<String, StoredParam>,
}

fn corrupt(why: &str) -> CoreError {
    CoreError::Store(StoreError::Corrupt(format!(
        "an orchestration's stored steps: {why}"
    )))
}

/// Parses stored steps.
pub(crate) fn parse_stored(text: &str) -> Result<Vec<StoredStep>, CoreError> {
    let values: Vec<Value> = serde_json::from_str(text).map_err(|_| corrupt("not a JSON list"))?;
    values
        .into_iter()
        .map(|mut v| {
            let raw = v
                .as_object_mut()
                .and_then(|o| o.remove("encryptedParams"))
                .unwrap_or(Value::Null);
            let step: Step = serde_json::from_value(v).map_err(|_| corrupt("a step"))?;
            let mut params = BTreeMap::new();
            if let Value::Object(map) = raw {
                for (name, p) in map {
                    params.insert(name, parse_stored_param(p)?);
                }
            }
            Ok(StoredStep { step, params })
        })
        .collect()
}

fn parse_stored_param(p: Value) -> Result<StoredParam, CoreError> {
    let Value::Object(mut o) = p else {
        return Err(corrupt("a param"));
    };
    if let Some(Value::String(name)) = o.remove("secretRef") {
        return Ok(StoredParam::Ref(name));
    }
    match o.remove("encrypted") {
        Some(Value::Bool(true)) => {
            let version = o
                .get("keyVersion")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| corrupt("a key version"))?;
            let Some(Value::String(text)) = o.remove("value") else {
                return Err(corrupt("a sealed value"));
            };
            Ok(StoredParam::Sealed(match version {
                0 => StoredValue::Plain(SecretString::from(text)),
                v => StoredValue::Sealed {
                    key_version: coffer_crypto::KeyVersion::new(v)
                        .map_err(|_| corrupt("a key version"))?,
                    blob: text,
                },
            }))
        }
        Some(Value::Bool(false)) => {
            Ok(StoredParam::Plain(o.remove("value").unwrap_or(Value::Null)))
        }
        _ => Err(corrupt("a param")),
    }
}

/// Stored steps as text.
pub(crate) fn stored_text(steps: &[StoredStep]) -> Result<String, CoreError> {
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        let mut v = serde_json::to_value(&s.step).map_err(|_| corrupt("serialize"))?;
        if !s.params.is_empty() {
            let params: Map<String, Value> = s
                .params
                .iter()
                .map(|(name, p)| (name.clone(), stored_param_json(p)))
                .collect();
            if let Some(o) = v.as_object_mut() {
                o.insert("encryptedParams".into(), Value::Object(params));
            }
        }
        out.push(v);
    }
    serde_json::to_string(&out).map_err(|_| corrupt("serialize"))
}

fn stored_param_json(p: &StoredParam) -> Value {
    match p {
        StoredParam::Sealed(StoredValue::Plain(plain)) => serde_json::json!({
            "value": plain.expose_secret(), "encrypted": true, "keyVersion": 0
        }),
        StoredParam::Sealed(StoredValue::Sealed { key_version, blob }) => serde_json::json!({
            "value": blob, "encrypted": true, "keyVersion": key_version.get()
        }),
        StoredParam::Plain(v) => serde_json::json!({"value": v, "encrypted": false}),
        StoredParam::Ref(name) => serde_json::json!({ "secretRef": name }),
    }
}

/// The steps as every read shows them: encrypted params masked.
pub(crate) fn mask(steps: &[StoredStep]) -> Vec<Step> {
    steps
        .iter()
        .map(|s| match &s.step {
            Step::Compute(c) => Step::Compute(ComputeStep {
                encrypted_params: s
                    .params
                    .iter()
                    .map(|(name, p)| {
                        let shown = match p {
                            StoredParam::Sealed(_) => Param::masked(),
                            StoredParam::Plain(v) => Param::plain(v.clone()),
                            StoredParam::Ref(r) => Param::reference(r.clone()),
                        };
                        (name.clone(), shown)
                    })
                    .collect(),
                ..c.clone()
            }),
            other => other.clone(),
        })
        .collect()
}

/// An orchestration as reads show it.
pub(crate) fn view(record: &OrchestrationRecord) -> Result<coffer_wire::Orchestration, CoreError> {
    let steps = parse_stored(&record.steps)?;
    Ok(coffer_wire::Orchestration {
        id: record.id.to_string(),
        name: record.name.clone(),
        environment: record.environment.to_string(),
        steps: mask(&steps),
        revision: record.revision,
        created_at: record.created_at.rfc3339(),
        updated_at: record.updated_at.rfc3339(),
    })
}

fn invalid(msg: impl Into<String>) -> CoreError {
    CoreError::Invalid(msg.into())
}

/// A step id: `^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`.
fn check_step_id(id: &str) -> Result<(), CoreError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphanumeric() || (i > 0 && (b == b'-' || b == b'_')));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "step id {id:?}: use 1-63 characters: letters, digits, '_' and '-', starting with a letter or digit"
        )))
    }
}

/// A param name follows the secret-name rule (it is part of the associated data and a key
/// of `triggerParams`).
fn check_param_name(step: &str, name: &str) -> Result<(), CoreError> {
    SecretName::new(name)
        .map(|_| ())
        .map_err(|e| invalid(format!("step {step}: param {e}")))
}

/// Checks what a definition may be on its own and against the environment's functions:
/// names, ids, limits, decisions pointing somewhere, no cycle without a wait.
async fn check_definition(
    coffer: &Coffer,
    env: &EnvName,
    name: &str,
    steps: &[Step],
) -> Result<(), CoreError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(format!(
            "name: use 1-{MAX_NAME_CHARS} characters, not only spaces"
        )));
    }
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(invalid(format!("steps: give 1-{MAX_STEPS} steps")));
    }
    let mut ids = BTreeSet::new();
    for s in steps {
        check_step_id(s.id())?;
        if !ids.insert(s.id()) {
            return Err(invalid(format!("step {}: duplicate step id", s.id())));
        }
    }
    for s in steps {
        match s {
            Step::Compute(c) => {
                let fid = FunctionId::new(&c.function_id)
                    .map_err(|e| invalid(format!("step {}: {e}", c.id)))?;
                let Some(record) = coffer.catalog.get_function(env, &fid).await? else {
                    return Err(invalid(format!(
                        "step {}: function {fid} does not exist in environment {env}",
                        c.id
                    )));
                };
                // A reference hands the step's function a secret: only one it declares, so
                // an orchestration can never reach a value its function could not.
                let declared = coffer.runtime.specs.view(record)?.spec.secrets.clone();
                for (name, p) in &c.encrypted_params {
                    if let Some(r) = &p.secret_ref
                        && !declared.iter().any(|d| d == r)
                    {
                        return Err(invalid(format!(
                            "step {}: encrypted param {name} references secret {r}, which function {fid} does not declare (add it to the function's secrets)",
                            c.id
                        )));
                    }
                }
                if c.params.len() > MAX_PARAMS || c.encrypted_params.len() > MAX_PARAMS {
                    return Err(invalid(format!(
                        "step {}: at most {MAX_PARAMS} params and {MAX_PARAMS} encryptedParams",
                        c.id
                    )));
                }
                for p in c.encrypted_params.keys() {
                    check_param_name(&c.id, p)?;
                }
            }
            Step::Approval(a) => {
                if a.timeout_ms.is_some_and(|t| t == 0 || t > MAX_STEP_WAIT_MS) {
                    return Err(invalid(format!(
                        "step {}: timeoutMs is 1-{MAX_STEP_WAIT_MS}",
                        a.id
                    )));
                }
            }
            Step::Delay(d) => {
                if d.duration_ms > MAX_STEP_WAIT_MS {
                    return Err(invalid(format!(
                        "step {}: durationMs is at most {MAX_STEP_WAIT_MS}",
                        d.id
                    )));
                }
            }
            Step::Decision(d) => {
                for target in [&d.then, &d.otherwise] {
                    if !ids.contains(target.as_str()) {
                        return Err(invalid(format!(
                            "step {}: it points to step {target:?}, which does not exist",
                            d.id
                        )));
                    }
                }
                engine::check_condition(&d.id, &d.condition, &ids)?;
            }
        }
    }
    check_cycles(steps)
}

/// A loop must pass through a delay or an approval: otherwise a run would spin.
fn check_cycles(steps: &[Step]) -> Result<(), CoreError> {
    let index: BTreeMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id(), i)).collect();
    let next = |i: usize| -> Vec<usize> {
        match &steps[i] {
            Step::Decision(d) => vec![index[d.then.as_str()], index[d.otherwise.as_str()]],
            _ if i + 1 < steps.len() => vec![i + 1],
            _ => vec![],
        }
    };
    let waits = |i: usize| matches!(steps[i], Step::Delay(_) | Step::Approval(_));
    // Depth-first search over the steps that do not wait: a back edge is a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; steps.len()];
    for start in 0..steps.len() {
        if waits(start) || mark[start] != Mark::New {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::Open;
        while let Some((node, child)) = stack.pop() {
            let children = next(node);
            if child < children.len() {
                stack.push((node, child + 1));
                let c = children[child];
                if waits(c) {
                    continue;
                }
                match mark[c] {
                    Mark::Open => {
                        return Err(invalid(format!(
                            "step {}: it starts a loop with no delay or approval step in it",
                            steps[c].id()
                        )));
                    }
                    Mark::New => {
                        mark[c] = Mark::Open;
                        stack.push((c, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
            }
        }
    }
    Ok(())
}

/// Builds the stored steps of a write: each param sealed anew, kept from `old` (sent back
/// masked), kept plain, or a reference.
fn store_steps(
    coffer: &Coffer,
    env: &EnvId,
    id: &OrchestrationId,
    steps: Vec<Step>,
    old: Option<Vec<StoredStep>>,
) -> Result<Vec<StoredStep>, CoreError> {
    // Per step id: the function it ran and its stored params.
    let mut old: BTreeMap<String, (String, BTreeMap<String, StoredParam>)> = old
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| match s.step {
            Step::Compute(c) => Some((c.id, (c.function_id, s.params))),
            _ => None,
        })
        .collect();
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let Step::Compute(mut c) = step else {
            out.push(StoredStep {
                step,
                params: BTreeMap::new(),
            });
            continue;
        };
        let given = std::mem::take(&mut c.encrypted_params);
        let (old_function, mut kept) = old.remove(&c.id).unwrap_or_default();
        let mut params = BTreeMap::new();
        for (name, p) in given {
            let stored = if p.is_masked() {
                if old_function != c.function_id {
                    // Sealed for the function the step ran: a credential never follows the
                    // step to another function without being given again.
                    return Err(invalid(format!(
                        "step {}: encrypted param {name} is sent masked to keep its stored value, but the step now runs function {} instead of {old_function} (a step's function is part of what its params are sealed with: send the value again with \"encrypt\": true)",
                        c.id, c.function_id
                    )));
                }
                match kept.remove(&name) {
                    Some(s @ StoredParam::Sealed(_)) => s,
                    _ => {
                        return Err(invalid(format!(
                            "step {}: encrypted param {name} is sent masked to keep its stored value, but step {} has no encrypted param {name} (a step's id is part of what its params are sealed with: after renaming a step, send its encrypted params again with \"encrypt\": true)",
                            c.id, c.id
                        )));
                    }
                }
            } else {
                new_param(coffer, env, id, &c.id, &c.function_id, &name, p)?
            };
            params.insert(name, stored);
        }
        out.push(StoredStep {
            step: Step::Compute(c),
            params,
        });
    }
    Ok(out)
}

fn new_param(
    coffer: &Coffer,
    env: &EnvId,
    id: &OrchestrationId,
    step: &str,
    function: &str,
    name: &str,
    p: Param,
) -> Result<StoredParam, CoreError> {
    let bad = |why: &str| invalid(format!("step {step}: encrypted param {name}: {why}"));
    match (p.value, p.encrypt, p.encrypted, p.secret_ref) {
        (None, None, None, Some(r)) => {
            SecretName::new(&r).map_err(|e| bad(&e.to_string()))?;
            Ok(StoredParam::Ref(r))
        }
        (Some(Value::String(text)), Some(true), None, None) => {
            if text.len() > MAX_PARAM_VALUE_BYTES {
                return Err(bad(&format!(
                    "values are limited to {MAX_PARAM_VALUE_BYTES} bytes"
                )));
            }
            let aad = param_aad(env, id, step, function, name);
            let secret = SecretString::from(text);
            Ok(StoredParam::Sealed(coffer.seal_stored(&aad, secret)?))
        }
        (Some(_), Some(true), None, None) => Err(bad("an encrypted value must be a string")),
        (Some(v), Some(false), None, None) | (Some(v), None, Some(false), None) => {
            Ok(StoredParam::Plain(v))
        }
        _ => Err(bad(&format!(
            "give {{\"value\": \"…\", \"encrypt\": true|false}}, {{\"secretRef\": \"NAME\"}}, or the masked form {{\"value\": \"{MASK}\", \"encrypted\": true}} to keep the stored value"
        ))),
    }
}

/// Create an orchestration (admin, manage of its environment).
#[derive(Debug)]
pub struct CreateOrchestration {
    /// Its environment.
    pub env: EnvName,
    /// The definition.
    pub body: coffer_wire::CreateOrchestration,
}

impl Command for CreateOrchestration {
    type Output = coffer_wire::Orchestration;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(
        self,
        coffer: &Coffer,
        who: &Principal,
    ) -> Result<coffer_wire::Orchestration, CoreError> {
        let incarnation = coffer.existing_environment(&self.env).await?;
        check_definition(coffer, &self.env, &self.body.name, &self.body.steps).await?;
        let now = Timestamp::now();
        let id = OrchestrationId::generate(now).map_err(|_| CoreError::Crypto)?;
        let stored = store_steps(coffer, &incarnation.id, &id, self.body.steps, None)?;
        let text = stored_text(&stored)?;
        let out = match coffer
            .catalog
            .put_orchestration(
                &incarnation,
                &id,
                &self.body.name,
                text,
                Precondition::Absent,
                now,
                &who.actor(),
            )
            .await
        {
            Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(self.env)),
            other => other?,
        };
        view(&out.record)
    }
}

/// Replace an orchestration's definition: per encrypted param, masked keeps, `encrypt`
/// seals anew, omitted removes.
#[derive(Debug)]
pub struct UpdateOrchestration {
    /// Its environment.
    pub env: EnvName,
    /// The orchestration.
    pub id: String,
    /// The definition.
    pub body: coffer_wire::UpdateOrchestration,
}

impl Command for UpdateOrchestration {
    type Output = coffer_wire::Orchestration;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(
        self,
        coffer: &Coffer,
        who: &Principal,
    ) -> Result<coffer_wire::Orchestration, CoreError> {
        crate::commands::check_expected_revision(self.body.expected_revision)?;
        let incarnation = coffer.existing_environment(&self.env).await?;
        let current = coffer.find_orchestration(&self.env, &self.id).await?;
        if let Some(expected) = self.body.expected_revision
            && expected != current.revision
        {
            return Err(CoreError::RevisionConflict {
                current: current.revision,
            });
        }
        if current.environment_id != incarnation.id {
            return Err(not_found(&self.env, &self.id));
        }
        check_definition(coffer, &self.env, &self.body.name, &self.body.steps).await?;
        let old = parse_stored(&current.steps)?;
        let stored = store_steps(
            coffer,
            &incarnation.id,
            &current.id,
            self.body.steps,
            Some(old),
        )?;
        let text = stored_text(&stored)?;
        // The blobs kept were read at `current.revision`: the write applies only there.
        let out = match coffer
            .catalog
            .put_orchestration(
                &incarnation,
                &current.id,
                &self.body.name,
                text,
                Precondition::Revision(current.revision),
                Timestamp::now(),
                &who.actor(),
            )
            .await
        {
            Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(self.env)),
            Err(StoreError::Conflict { current: None }) => {
                return Err(not_found(&self.env, &self.id));
            }
            other => other?,
        };
        view(&out.record)
    }
}

/// Delete an orchestration. Its runs stay; one still going fails at its next step.
#[derive(Debug)]
pub struct DeleteOrchestration {
    /// Its environment.
    pub env: EnvName,
    /// The orchestration.
    pub id: String,
    /// `Some(n)`: must be at revision n.
    pub expected_revision: Option<Revision>,
}

impl Command for DeleteOrchestration {
    type Output = coffer_wire::Orchestration;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(
        self,
        coffer: &Coffer,
        who: &Principal,
    ) -> Result<coffer_wire::Orchestration, CoreError> {
        crate::commands::check_expected_revision(self.expected_revision)?;
        let id = OrchestrationId::new(&self.id).map_err(|_| not_found(&self.env, &self.id))?;
        let pre = Precondition::from_expected(self.expected_revision);
        match coffer
            .catalog
            .delete_orchestration(&self.env, &id, pre, &who.actor())
            .await
        {
            Err(StoreError::NotFound) => {
                coffer.existing_environment(&self.env).await?;
                Err(not_found(&self.env, &self.id))
            }
            other => view(&other?),
        }
    }
}

/// Start a run of an orchestration (admin, manage of its environment).
#[derive(Debug)]
pub struct StartOrchestrationRun {
    /// Its environment.
    pub env: EnvName,
    /// The orchestration.
    pub id: String,
    /// The run's params.
    pub body: coffer_wire::StartOrchestrationRun,
}

impl Command for StartOrchestrationRun {
    type Output = coffer_wire::OrchestrationRun;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(
        self,
        coffer: &Coffer,
        who: &Principal,
    ) -> Result<coffer_wire::OrchestrationRun, CoreError> {
        let params = self.body.params.unwrap_or_default();
        if params.len() > MAX_PARAMS {
            return Err(invalid(format!("params: at most {MAX_PARAMS} keys")));
        }
        let incarnation = coffer.existing_environment(&self.env).await?;
        let record = coffer.find_orchestration(&self.env, &self.id).await?;
        let steps = mask(&parse_stored(&record.steps)?);
        let now = Timestamp::now();
        let run = NewFlow {
            id: OrchestrationRunId::generate(now).map_err(|_| CoreError::Crypto)?,
            orchestration_id: record.id.clone(),
            orchestration_revision: record.revision,
            steps: serde_json::to_string(&steps).map_err(|_| corrupt("serialize"))?,
            state: engine::FlowState::new(&steps).to_text()?,
            params: Value::Object(params).to_string(),
            current_step: steps.first().map(|s| s.id().to_owned()),
        };
        let flow = match coffer
            .catalog
            .start_flow(
                &incarnation,
                run,
                coffer_store::MAX_ACTIVE_FLOWS_PER_ENVIRONMENT,
                now,
                &who.actor(),
            )
            .await
        {
            Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(self.env)),
            Err(StoreError::Overloaded) => {
                return Err(CoreError::Busy(format!(
                    "environment {} has {} orchestration runs that have not ended",
                    self.env,
                    coffer_store::MAX_ACTIVE_FLOWS_PER_ENVIRONMENT
                )));
            }
            other => other?,
        };
        coffer.runtime.wake_flows();
        flow_view(&flow)
    }
}

/// Approve or reject the approval step a run waits at (admin, manage of its environment).
#[derive(Debug)]
pub struct DecideOrchestrationRun {
    /// Its environment.
    pub env: EnvName,
    /// The run.
    pub run_id: String,
    /// Approve (`true`) or reject.
    pub approve: bool,
    /// Why.
    pub body: coffer_wire::DecideOrchestrationRun,
}

impl Command for DecideOrchestrationRun {
    type Output = coffer_wire::OrchestrationRun;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(
        self,
        coffer: &Coffer,
        who: &Principal,
    ) -> Result<coffer_wire::OrchestrationRun, CoreError> {
        if self
            .body
            .reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
        {
            return Err(invalid(format!(
                "reason: at most {MAX_REASON_CHARS} characters"
            )));
        }
        let flow = coffer.find_flow(&self.env, &self.run_id).await?;
        let step = match (flow.status, &flow.current_step) {
            (FlowStatus::WaitingApproval, Some(step)) if flow.decision.is_none() => step.clone(),
            _ => return Err(CoreError::NotWaiting(self.run_id)),
        };
        let decision = engine::Decision {
            approved: self.approve,
            key_id: who.key_id.to_string(),
            reason: self.body.reason,
            at: Timestamp::now().rfc3339(),
        };
        let text = serde_json::to_string(&decision).map_err(|_| corrupt("serialize"))?;
        let out = coffer
            .catalog
            .decide_flow(
                &self.env,
                &flow.id,
                &step,
                self.approve,
                text,
                Timestamp::now(),
                &who.actor(),
            )
            .await;
        let flow = match out {
            Err(StoreError::NotFound) => {
                return Err(CoreError::OrchestrationRunNotFound {
                    env: self.env,
                    id: self.run_id,
                });
            }
            Err(StoreError::Conflict { .. }) => return Err(CoreError::NotWaiting(self.run_id)),
            other => other?,
        };
        coffer.runtime.wake_flows();
        flow_view(&flow)
    }
}

fn not_found(env: &EnvName, id: &str) -> CoreError {
    CoreError::OrchestrationNotFound {
        env: env.clone(),
        id: id.to_owned(),
    }
}

/// An orchestration run as reads show it.
pub(crate) fn flow_view(flow: &FlowRecord) -> Result<coffer_wire::OrchestrationRun, CoreError> {
    let state = engine::FlowState::parse(&flow.state)?;
    let params = match serde_json::from_str(&flow.params) {
        Ok(Value::Object(m)) => m,
        _ => return Err(corrupt("a run's params")),
    };
    Ok(coffer_wire::OrchestrationRun {
        id: flow.id.to_string(),
        orchestration_id: flow.orchestration_id.to_string(),
        environment: flow.environment.to_string(),
        orchestration_revision: flow.orchestration_revision,
        status: wire_status(flow.status),
        current_step: flow.current_step.clone(),
        steps: state.steps,
        params,
        created_at: flow.created_at.rfc3339(),
        updated_at: flow.updated_at.rfc3339(),
    })
}

pub(crate) fn wire_status(s: FlowStatus) -> coffer_wire::OrchestrationRunStatus {
    use coffer_wire::OrchestrationRunStatus as W;
    match s {
        FlowStatus::Running => W::Running,
        FlowStatus::WaitingApproval => W::WaitingApproval,
        FlowStatus::Succeeded => W::Succeeded,
        FlowStatus::Failed => W::Failed,
        FlowStatus::Rejected => W::Rejected,
    }
}

/// The store's status for a wire status (a list filter).
pub fn flow_status(s: coffer_wire::OrchestrationRunStatus) -> FlowStatus {
    use coffer_wire::OrchestrationRunStatus as W;
    match s {
        W::Running => FlowStatus::Running,
        W::WaitingApproval => FlowStatus::WaitingApproval,
        W::Succeeded => FlowStatus::Succeeded,
        W::Failed => FlowStatus::Failed,
        W::Rejected => FlowStatus::Rejected,
    }
}

/// A step's state when a run reaches it (again).
pub(crate) fn fresh_step(id: &str) -> StepState {
    StepState {
        id: id.to_owned(),
        status: StepStatus::Pending,
        output: None,
        error: None,
        run_id: None,
        until: None,
    }
}

impl Coffer {
    pub(crate) async fn find_orchestration(
        &self,
        env: &EnvName,
        id: &str,
    ) -> Result<OrchestrationRecord, CoreError> {
        let oid = OrchestrationId::new(id).map_err(|_| not_found(env, id))?;
        self.catalog
            .get_orchestration(env, &oid)
            .await?
            .ok_or_else(|| not_found(env, id))
    }

    pub(crate) async fn find_flow(&self, env: &EnvName, id: &str) -> Result<FlowRecord, CoreError> {
        let missing = || CoreError::OrchestrationRunNotFound {
            env: env.clone(),
            id: id.to_owned(),
        };
        let rid = OrchestrationRunId::new(id).map_err(|_| missing())?;
        self.catalog.get_flow(env, &rid).await?.ok_or_else(missing)
    }

    /// One orchestration, masked (admin, manage of its environment).
    pub async fn orchestration(
        &self,
        who: &Principal,
        env: &EnvName,
        id: &str,
    ) -> Result<coffer_wire::Orchestration, CoreError> {
        self.require_manage(who, env)?;
        self.existing_environment(env).await?;
        view(&self.find_orchestration(env, id).await?)
    }

    /// A page of orchestrations in id order, masked (admin, manage of the environment).
    pub async fn list_orchestrations(
        &self,
        who: &Principal,
        env: &EnvName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<coffer_wire::Orchestration, String>, CoreError> {
        self.require_manage(who, env)?;
        self.existing_environment(env).await?;
        let after = after
            .map(OrchestrationId::new)
            .transpose()
            .map_err(|e| invalid(format!("cursor: {e}")))?;
        let size = PageSize::rows(limit.saturating_add(1));
        let records = self
            .catalog
            .list_orchestrations(env, after.as_ref(), size)
            .await?;
        let page = Page::cut_within(
            records,
            limit,
            size.bytes,
            OrchestrationRecord::weight,
            |o| o.id.to_string(),
        );
        Ok(Page {
            items: page.items.iter().map(view).collect::<Result<_, _>>()?,
            next: page.next,
        })
    }

    /// One orchestration run (admin, manage of its environment).
    pub async fn orchestration_run(
        &self,
        who: &Principal,
        env: &EnvName,
        id: &str,
    ) -> Result<coffer_wire::OrchestrationRun, CoreError> {
        self.require_manage(who, env)?;
        self.existing_environment(env).await?;
        flow_view(&self.find_flow(env, id).await?)
    }

    /// A page of orchestration runs, newest first (admin, manage of the environment).
    pub async fn list_orchestration_runs(
        &self,
        who: &Principal,
        env: &EnvName,
        orchestration: Option<&str>,
        status: Option<coffer_wire::OrchestrationRunStatus>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<coffer_wire::OrchestrationRun, String>, CoreError> {
        self.require_manage(who, env)?;
        self.existing_environment(env).await?;
        let filter = FlowFilter {
            orchestration: orchestration
                .map(OrchestrationId::new)
                .transpose()
                .map_err(|e| invalid(format!("orchestrationId: {e}")))?,
            status: status.map(flow_status),
        };
        let after = after
            .map(OrchestrationRunId::new)
            .transpose()
            .map_err(|e| invalid(format!("cursor: {e}")))?;
        let size = PageSize::rows(limit.saturating_add(1));
        let records = self
            .catalog
            .list_flows(env, &filter, after.as_ref(), size)
            .await?;
        let page = Page::cut_within(records, limit, size.bytes, FlowRecord::weight, |f| {
            f.id.to_string()
        });
        Ok(Page {
            items: page.items.iter().map(flow_view).collect::<Result<_, _>>()?,
            next: page.next,
        })
    }
}
