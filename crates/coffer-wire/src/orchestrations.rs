//! Orchestrations: ordered steps (compute, approval, delay, decision) whose compute steps
//! carry their own parameters — plain, encrypted, or references to the environment's
//! secrets — and the runs that execute them.
//!
//! A parameter's plaintext crosses the wire once, in a write ([`Param`] with `encrypt:
//! true`); every read shows it masked (`{"value": "********", "encrypted": true}`). A
//! [`Param`]'s `Debug` never shows its value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What every read shows in place of an encrypted parameter's value.
pub const MASK: &str = "********";

/// Most steps of one orchestration.
pub const MAX_STEPS: usize = 100;
/// Most parameters (plain or encrypted) of one step, and of a run's `params`.
pub const MAX_PARAMS: usize = 64;
/// Longest an approval may wait, and longest a delay: 30 days.
pub const MAX_STEP_WAIT_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// Most steps one run executes (loops through a delay or an approval count each pass).
pub const MAX_STEPS_PER_RUN: u32 = 1_000;

/// An orchestration's definition: `POST /v1/environments/{env}/orchestrations`'s body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrchestration {
    /// A label (1-128 characters).
    #[cfg_attr(feature = "openapi", schema(example = "nightly-billing"))]
    pub name: String,
    /// The steps, run in this order unless a decision jumps.
    pub steps: Vec<Step>,
}

/// `PUT /v1/environments/{env}/orchestrations/{id}`'s body: the whole definition again.
/// Per encrypted parameter: sent back masked (`{"value": "********", "encrypted": true}`)
/// keeps the stored one; `encrypt: true` seals a new value; omitted removes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateOrchestration {
    /// A label (1-128 characters).
    pub name: String,
    /// The steps.
    pub steps: Vec<Step>,
    /// `n`: the orchestration must be at revision n.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<u64>,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Step {
    /// Runs a function through its push or pull delivery.
    Compute(ComputeStep),
    /// Waits for `POST …/orchestration-runs/{runId}/approve` or `/reject`.
    Approval(ApprovalStep),
    /// Waits a duration (kept across restarts).
    Delay(DelayStep),
    /// Chooses the next step from a condition.
    Decision(DecisionStep),
}

impl Step {
    /// The step's id.
    pub fn id(&self) -> &str {
        match self {
            Step::Compute(s) => &s.id,
            Step::Approval(s) => &s.id,
            Step::Delay(s) => &s.id,
            Step::Decision(s) => &s.id,
        }
    }

    /// `compute`, `approval`, `delay` or `decision`.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Compute(_) => "compute",
            Step::Approval(_) => "approval",
            Step::Delay(_) => "delay",
            Step::Decision(_) => "decision",
        }
    }
}

/// A compute step: its function receives `triggerParams` = the run's params ∪ `params` ∪
/// `encryptedParams` (references resolved, encrypted ones opened), later ones winning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputeStep {
    /// The step's id: `^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`, unique in the orchestration.
    #[cfg_attr(feature = "openapi", schema(example = "charge"))]
    pub id: String,
    /// The function it runs (of the same environment).
    pub function_id: String,
    /// Plain parameters.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Parameters held for this step only: encrypted, plain, or references to secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encrypted_params: BTreeMap<String, Param>,
}

/// An approval step: the run waits (`waiting_approval`) until someone approves (it goes
/// on) or rejects it (`rejected`), or `timeoutMs` passes (`failed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalStep {
    /// The step's id.
    pub id: String,
    /// How long it waits (at most 30 days); none: until someone decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A delay step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelayStep {
    /// The step's id.
    pub id: String,
    /// How long it waits (at most 30 days).
    pub duration_ms: u64,
}

/// A decision step: `then` when the condition holds, `else` otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionStep {
    /// The step's id.
    pub id: String,
    /// What it tests.
    pub condition: Condition,
    /// The step to go to when the condition holds.
    pub then: String,
    /// The step to go to when it does not.
    #[serde(rename = "else")]
    pub otherwise: String,
}

/// A test on the run's params (`params.a.b`) or an earlier step's output
/// (`steps.<id>.output.a.b`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Where the tested value is.
    #[cfg_attr(feature = "openapi", schema(example = "steps.charge.output.amount"))]
    pub path: String,
    /// How it is tested.
    pub op: ConditionOp,
    /// What it is compared with (not for `exists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// A condition's comparison. `gt`/`lt` compare numbers (or strings, bytewise); a missing
/// value makes every comparison but `ne` false.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ConditionOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Less than.
    Lt,
    /// Present (not `null`).
    Exists,
}

/// One entry of a compute step's `encryptedParams`.
///
/// Written as `{"value": "…", "encrypt": true}` (sealed; the value must be a string),
/// `{"value": …, "encrypt": false}` (kept plain), `{"secretRef": "NAME"}` (the
/// environment's secret NAME, read when the step runs), or — in an update — the masked form
/// a read showed, `{"value": "********", "encrypted": true}`, to keep the stored one.
/// Read as `{"value": "********", "encrypted": true}`, `{"value": …, "encrypted": false}`
/// or `{"secretRef": "NAME"}`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Param {
    /// The value (masked on every read when encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// On write: seal the value (`true`) or keep it plain (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<bool>,
    /// On read: whether the value is stored encrypted. Sent back as `true` with the mask,
    /// it keeps the stored value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// A reference to the environment's secret of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

impl Param {
    /// An encrypted parameter as every read shows it.
    pub fn masked() -> Self {
        Param {
            value: Some(serde_json::Value::String(MASK.to_owned())),
            encrypted: Some(true),
            ..Param::default()
        }
    }

    /// A plain parameter as a read shows it.
    pub fn plain(value: serde_json::Value) -> Self {
        Param {
            value: Some(value),
            encrypted: Some(false),
            ..Param::default()
        }
    }

    /// A reference to the secret `name`.
    pub fn reference(name: impl Into<String>) -> Self {
        Param {
            secret_ref: Some(name.into()),
            ..Param::default()
        }
    }

    /// A value to seal: `{"value": value, "encrypt": true}`.
    pub fn encrypt(value: impl Into<String>) -> Self {
        Param {
            value: Some(serde_json::Value::String(value.into())),
            encrypt: Some(true),
            ..Param::default()
        }
    }

    /// Whether this is the masked form of an encrypted parameter.
    pub fn is_masked(&self) -> bool {
        self.encrypted == Some(true)
            && self.encrypt.is_none()
            && self.secret_ref.is_none()
            && self.value.as_ref().and_then(|v| v.as_str()) == Some(MASK)
    }
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value may be plaintext on its way to being sealed: never shown.
        f.debug_struct("Param")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("encrypt", &self.encrypt)
            .field("encrypted", &self.encrypted)
            .field("secret_ref", &self.secret_ref)
            .finish()
    }
}

/// An orchestration as every read shows it (encrypted parameters masked).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Orchestration {
    /// Its id (`orch_` and hex digits).
    #[cfg_attr(
        feature = "openapi",
        schema(example = "orch_018f3a2b4c5d6e7f8091a2b3c4d5e6f7")
    )]
    pub id: String,
    /// Its label.
    pub name: String,
    /// Its environment.
    pub environment: String,
    /// Its steps, masked.
    pub steps: Vec<Step>,
    /// 1 when created, +1 per update.
    pub revision: u64,
    /// When it was created.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    /// When it last changed.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: String,
}

/// A page of orchestrations, in id order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrchestrationList {
    /// The orchestrations.
    pub orchestrations: Vec<Orchestration>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST …/orchestrations/{id}/runs`'s body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartOrchestrationRun {
    /// The run's params: every compute step's `triggerParams` start from them, and
    /// decisions can test them (`params.a.b`). Not secret: shown on every read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST …/orchestration-runs/{runId}/approve` and `/reject`'s body (it may be empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecideOrchestrationRun {
    /// Why (kept in the step's state and the audit log; at most 1,024 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where an orchestration run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrchestrationRunStatus {
    /// A step is running or due.
    Running,
    /// An approval step waits for a decision.
    WaitingApproval,
    /// Every step it reached succeeded.
    Succeeded,
    /// A step failed (a compute step's run failed, an approval timed out, …).
    Failed,
    /// An approval was rejected.
    Rejected,
}

impl OrchestrationRunStatus {
    /// Every status.
    pub const ALL: [OrchestrationRunStatus; 5] = [
        OrchestrationRunStatus::Running,
        OrchestrationRunStatus::WaitingApproval,
        OrchestrationRunStatus::Succeeded,
        OrchestrationRunStatus::Failed,
        OrchestrationRunStatus::Rejected,
    ];

    /// As the JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            OrchestrationRunStatus::Running => "running",
            OrchestrationRunStatus::WaitingApproval => "waiting_approval",
            OrchestrationRunStatus::Succeeded => "succeeded",
            OrchestrationRunStatus::Failed => "failed",
            OrchestrationRunStatus::Rejected => "rejected",
        }
    }

    /// Parses what [`OrchestrationRunStatus::as_str`] writes.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrchestrationRunStatus::Succeeded
                | OrchestrationRunStatus::Failed
                | OrchestrationRunStatus::Rejected
        )
    }
}

/// Where one step of a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not reached (yet).
    Pending,
    /// Executing: a compute step's function run, a delay, an approval's wait.
    Running,
    /// Done.
    Succeeded,
    /// Failed (its run failed, its approval timed out).
    Failed,
    /// Its approval was rejected.
    Rejected,
    /// Jumped over by a decision.
    Skipped,
}

/// One step of a run as a read shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StepState {
    /// The step's id.
    pub id: String,
    /// Where it is.
    pub status: StepStatus,
    /// A compute step's output (redacted), a decision's `{"result", "next"}`, an approval's
    /// `{"decidedBy", "reason"?}`.
    #[serde(
        default,
        deserialize_with = "crate::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<serde_json::Value>,
    /// Why it failed (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A compute step's function run (`GET …/runs/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// When its wait ends: a delay's end, an approval's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub until: Option<String>,
}

/// An orchestration run: `POST …/orchestrations/{id}/runs`'s 202 answer and
/// `GET …/orchestration-runs/{runId}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrchestrationRun {
    /// Its id (`orun_` and hex digits).
    pub id: String,
    /// The orchestration it executes.
    pub orchestration_id: String,
    /// Its environment.
    pub environment: String,
    /// The orchestration's revision it started from.
    pub orchestration_revision: u64,
    /// Where it is.
    pub status: OrchestrationRunStatus,
    /// The step it is at (the last one it reached, once ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// Every step, in definition order.
    pub steps: Vec<StepState>,
    /// The run's params.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// When it started.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
    /// When it last changed.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: String,
}

/// `GET /v1/environments/{env}/orchestration-runs`: one page of runs, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrchestrationRunList {
    /// One page, newest first.
    pub runs: Vec<OrchestrationRun>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_by_type_and_refuse_unknown_fields() {
        let steps: Vec<Step> = serde_json::from_value(serde_json::json!([
            {"id": "charge", "type": "compute", "functionId": "billing",
             "params": {"a": 1},
             "encryptedParams": {"TOKEN": {"value": "s3cr3t", "encrypt": true},
                                 "KEEP": {"value": "********", "encrypted": true},
                                 "REF": {"secretRef": "STRIPE_KEY"}}},
            {"id": "ok", "type": "approval", "timeoutMs": 1000},
            {"id": "wait", "type": "delay", "durationMs": 5},
            {"id": "big", "type": "decision",
             "condition": {"path": "params.a", "op": "gt", "value": 0},
             "then": "charge", "else": "ok"}
        ]))
        .expect("parse");
        assert_eq!(
            steps.iter().map(Step::kind).collect::<Vec<_>>(),
            ["compute", "approval", "delay", "decision"]
        );
        let Step::Compute(c) = &steps[0] else {
            panic!("compute")
        };
        assert!(c.encrypted_params["KEEP"].is_masked());
        assert!(!c.encrypted_params["TOKEN"].is_masked());
        let dbg = format!("{:?}", c.encrypted_params["TOKEN"]);
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        for bad in [
            serde_json::json!({"id": "x", "type": "delay", "durationMs": 5, "extra": 1}),
            serde_json::json!({"id": "x", "type": "teleport"}),
            serde_json::json!({"id": "x", "type": "compute", "functionId": "f",
                               "encryptedParams": {"A": {"value": "v", "sealed": true}}}),
        ] {
            assert!(
                serde_json::from_value::<Step>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn masked_params_serialize_as_the_contract_says() {
        assert_eq!(
            serde_json::to_value(Param::masked()).unwrap(),
            serde_json::json!({"value": "********", "encrypted": true})
        );
        assert_eq!(
            serde_json::to_value(Param::reference("K")).unwrap(),
            serde_json::json!({"secretRef": "K"})
        );
        let decision: Step = serde_json::from_value(serde_json::json!({
            "id": "d", "type": "decision",
            "condition": {"path": "params.x", "op": "exists"}, "then": "a", "else": "b"
        }))
        .unwrap();
        assert_eq!(serde_json::to_value(&decision).unwrap()["else"], "b");
    }
}
