//! Orchestrations on a real store: the stored and masked shapes of encrypted params, the
//! update table, validation naming the step, and runs — precedence in `triggerParams`,
//! least privilege between steps, references after a rotation, approvals, delays and
//! decisions, a restart mid-run, rewrap and verify — with no plaintext or blob in any read,
//! event or audit row.

use std::time::Duration;

use coffer_core::orchestrations::{
    CreateOrchestration, DecideOrchestrationRun, DeleteOrchestration, StartOrchestrationRun,
    UpdateOrchestration, engine,
};
use coffer_core::{Coffer, CoreError, commands};
use coffer_store::{AuditQuery, OrchestrationId};
use coffer_wire::{OrchestrationRun, OrchestrationRunStatus, Step, StepStatus};
use serde_json::{Value, json};

use crate::harness::*;

const CANARY: &str = "canary-param-Zq81";
const CANARY2: &str = "canary-param-Wx27";

fn steps(v: Value) -> Vec<Step> {
    serde_json::from_value(v).expect("steps parse")
}

async fn create(c: &Coffer, name: &str, s: Value) -> Result<coffer_wire::Orchestration, CoreError> {
    let body = coffer_wire::CreateOrchestration {
        name: name.into(),
        steps: steps(s),
    };
    c.apply(&admin(), CreateOrchestration { env: env(), body })
        .await
}

async fn update(
    c: &Coffer,
    id: &str,
    s: Value,
    expected: Option<u64>,
) -> Result<coffer_wire::Orchestration, CoreError> {
    let body = coffer_wire::UpdateOrchestration {
        name: "billing".into(),
        steps: steps(s),
        expected_revision: expected,
    };
    c.apply(
        &admin(),
        UpdateOrchestration {
            env: env(),
            id: id.into(),
            body,
        },
    )
    .await
}

async fn start_run(c: &Coffer, id: &str, params: Value) -> OrchestrationRun {
    let Value::Object(params) = params else {
        panic!("params are an object")
    };
    let body = coffer_wire::StartOrchestrationRun {
        params: Some(params),
    };
    c.apply(
        &admin(),
        StartOrchestrationRun {
            env: env(),
            id: id.into(),
            body,
        },
    )
    .await
    .expect("started")
}

async fn decide(c: &Coffer, run: &str, approve: bool) -> Result<OrchestrationRun, CoreError> {
    c.apply(
        &admin(),
        DecideOrchestrationRun {
            env: env(),
            run_id: run.into(),
            approve,
            body: coffer_wire::DecideOrchestrationRun {
                reason: Some("checked".into()),
            },
        },
    )
    .await
}

async fn get_run(c: &Coffer, run: &str) -> OrchestrationRun {
    c.orchestration_run(&admin(), &env(), run).await.unwrap()
}

/// The machine, until the returned sender is dropped or sent to.
fn machine(c: &std::sync::Arc<Coffer>) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(engine::run(c.clone(), async move {
        let _ = stopped.await;
    }));
    stop
}

/// Waits (bounded) until the run satisfies `done`.
async fn wait_run(
    c: &Coffer,
    run: &str,
    done: impl Fn(&OrchestrationRun) -> bool,
) -> OrchestrationRun {
    for _ in 0..300 {
        let r = get_run(c, run).await;
        if done(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run} did not get there: {:?}", get_run(c, run).await);
}

/// Polls (bounded) as `who` until a job of `function` arrives.
async fn next_job(c: &Coffer, who: &coffer_core::Principal, function: &str) -> coffer_wire::Job {
    for _ in 0..200 {
        if let Some(job) = poll(c, who, &[function], 30_000).await.unwrap() {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no job for {function}");
}

fn compute_step(id: &str, function: &str) -> Value {
    json!({"id": id, "type": "compute", "functionId": function})
}

/// Every audit row.
async fn audit_rows(n: &Node) -> Vec<coffer_store::AuditRecord> {
    let mut all = Vec::new();
    let mut query = AuditQuery::default();
    loop {
        let (rows, next) = n.store.audit(&query, 1000).await.unwrap();
        all.extend(rows);
        match next {
            Some(after) => query.after = Some(after),
            None => return all,
        }
    }
}

/// Everything the journal holds, as text, to scan for plaintext and blobs.
async fn journal_text(n: &Node) -> String {
    let mut all = String::new();
    for r in audit_rows(n).await {
        all.push_str(&format!("{r:?}\n"));
    }
    let events = n.store.events_after(0, 10_000).await.unwrap();
    for e in events {
        all.push_str(&format!("{e:?}\n"));
    }
    all
}

/// Stored: `{"value": "iv:ciphertext:tag", "encrypted": true, "keyVersion": 1}`, plain and
/// reference entries as given; read: masked, never the blob or the plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_params_are_stored_sealed_and_read_masked() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    register_pull(&n.coffer, "billing", &["STRIPE_KEY"], &[]).await;
    let shown = create(
        &n.coffer,
        "billing",
        json!([{"id": "charge", "type": "compute", "functionId": "billing",
                "params": {"currency": "eur"},
                "encryptedParams": {
                    "TOKEN": {"value": CANARY, "encrypt": true},
                    "PLAIN": {"value": "visible", "encrypt": false},
                    "REF": {"secretRef": "STRIPE_KEY"}}}]),
    )
    .await
    .unwrap();
    assert_eq!(shown.revision, 1);
    assert!(shown.id.starts_with("orch_"), "{}", shown.id);
    let masked = json!({
        "TOKEN": {"value": "********", "encrypted": true},
        "PLAIN": {"value": "visible", "encrypted": false},
        "REF": {"secretRef": "STRIPE_KEY"}
    });
    let as_json = serde_json::to_value(&shown).unwrap();
    assert_eq!(as_json["steps"][0]["encryptedParams"], masked);
    assert_eq!(as_json["steps"][0]["params"], json!({"currency": "eur"}));
    let read = n
        .coffer
        .orchestration(&admin(), &env(), &shown.id)
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&read).unwrap(), as_json);
    let listed = n
        .coffer
        .list_orchestrations(&admin(), &env(), None, 10)
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&listed.items[0]).unwrap(), as_json);

    let record = n
        .store
        .get_orchestration(&env(), &OrchestrationId::new(&shown.id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let stored: Value = serde_json::from_str(&record.steps).unwrap();
    let token = &stored[0]["encryptedParams"]["TOKEN"];
    assert_eq!(token["encrypted"], true);
    assert_eq!(token["keyVersion"], 1);
    let blob = token["value"].as_str().unwrap();
    let parts: Vec<&str> = blob.split(':').collect();
    assert_eq!(parts.len(), 3, "iv:ciphertext:tag: {blob}");
    assert!(
        parts.iter().all(|p| !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
        "base64url parts: {blob}"
    );
    assert_eq!(
        token.as_object().unwrap().len(),
        3,
        "value, encrypted, keyVersion: {token}"
    );
    assert_eq!(
        stored[0]["encryptedParams"]["PLAIN"],
        json!({"value": "visible", "encrypted": false})
    );
    assert_eq!(
        stored[0]["encryptedParams"]["REF"],
        json!({"secretRef": "STRIPE_KEY"})
    );
    assert!(!record.steps.contains(CANARY), "no plaintext at rest");
    let everything = format!("{shown:?}{read:?}{}", journal_text(&n).await);
    assert!(
        !everything.contains(CANARY),
        "no plaintext in reads or the journal"
    );
    assert!(
        !everything.contains(blob),
        "no blob in reads or the journal"
    );
    let events = n.store.events_after(0, 10_000).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.subject == format!("system.orchestration.{}.created", shown.id)),
        "the creation is an event"
    );
}

/// The update table: masked keeps the stored blob as it is, `encrypt: true` seals anew,
/// omitted removes; a masked param on a renamed step is refused naming the step; a stale
/// revision conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_keep_reseal_or_remove_each_param() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    register_pull(&n.coffer, "billing", &[], &[]).await;
    let created = create(
        &n.coffer,
        "billing",
        json!([{"id": "charge", "type": "compute", "functionId": "billing",
                "encryptedParams": {
                    "KEEP": {"value": CANARY, "encrypt": true},
                    "RESEAL": {"value": "old-value-1", "encrypt": true},
                    "DROP": {"value": "drop-value-1", "encrypt": true}}}]),
    )
    .await
    .unwrap();
    let oid = OrchestrationId::new(&created.id).unwrap();
    let stored = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
    let before = n
        .store
        .get_orchestration(&env(), &oid)
        .await
        .unwrap()
        .unwrap();
    let before = stored(&before.steps);

    let updated = update(
        &n.coffer,
        &created.id,
        json!([{"id": "charge", "type": "compute", "functionId": "billing",
                "encryptedParams": {
                    "KEEP": {"value": "********", "encrypted": true},
                    "RESEAL": {"value": CANARY2, "encrypt": true}}}]),
        Some(1),
    )
    .await
    .unwrap();
    assert_eq!(updated.revision, 2);
    let after = n
        .store
        .get_orchestration(&env(), &oid)
        .await
        .unwrap()
        .unwrap();
    let after = stored(&after.steps);
    let (b, a) = (&before[0]["encryptedParams"], &after[0]["encryptedParams"]);
    assert_eq!(a["KEEP"], b["KEEP"], "kept byte for byte");
    assert_ne!(a["RESEAL"]["value"], b["RESEAL"]["value"], "sealed anew");
    assert!(a.get("DROP").is_none(), "omitted is removed");
    assert_eq!(
        serde_json::to_value(&updated.steps[0]).unwrap()["encryptedParams"],
        json!({"KEEP": {"value": "********", "encrypted": true},
               "RESEAL": {"value": "********", "encrypted": true}})
    );

    // The step renamed: its sealed params name the old step, so they cannot be kept.
    let err = update(
        &n.coffer,
        &created.id,
        json!([{"id": "charge-v2", "type": "compute", "functionId": "billing",
                "encryptedParams": {"KEEP": {"value": "********", "encrypted": true}}}]),
        None,
    )
    .await
    .unwrap_err();
    match err {
        CoreError::Invalid(msg) => assert!(msg.contains("step charge-v2"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // The step moved to another function: its sealed params do not follow it.
    register_pull(&n.coffer, "forwarder", &[], &[]).await;
    let err = update(
        &n.coffer,
        &created.id,
        json!([{"id": "charge", "type": "compute", "functionId": "forwarder",
                "encryptedParams": {"KEEP": {"value": "********", "encrypted": true}}}]),
        None,
    )
    .await
    .unwrap_err();
    match err {
        CoreError::Invalid(msg) => assert!(
            msg.contains("step charge") && msg.contains("now runs function forwarder"),
            "{msg}"
        ),
        other => panic!("{other:?}"),
    }
    // A masked value that is not the mask, or that never existed, is no way to set one.
    let err = update(
        &n.coffer,
        &created.id,
        json!([{"id": "charge", "type": "compute", "functionId": "billing",
                "encryptedParams": {"NEW": {"value": "********", "encrypted": true}}}]),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CoreError::Invalid(_)), "{err:?}");
    let err = update(
        &n.coffer,
        &created.id,
        json!([compute_step("charge", "billing")]),
        Some(1),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, CoreError::RevisionConflict { current: 2 }),
        "{err:?}"
    );
    let journal = journal_text(&n).await;
    for plain in [CANARY, CANARY2, "old-value-1", "drop-value-1"] {
        assert!(!journal.contains(plain), "{plain} in the journal");
    }
}

/// Validation names the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_are_validated_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    register_pull(&n.coffer, "billing", &[], &[]).await;
    let cases = [
        (json!([compute_step("a", "nope")]), "step a: function nope"),
        (
            json!([compute_step("a", "billing"), compute_step("a", "billing")]),
            "step a: duplicate",
        ),
        (
            json!([{"id": "d", "type": "decision",
                    "condition": {"path": "params.x", "op": "exists"},
                    "then": "a", "else": "ghost"}, compute_step("a", "billing")]),
            "step d: it points to step \"ghost\"",
        ),
        (
            json!([compute_step("a", "billing"),
                   {"id": "d", "type": "decision",
                    "condition": {"path": "params.x", "op": "exists"},
                    "then": "a", "else": "a"}]),
            "loop with no delay or approval",
        ),
        (
            json!([{"id": "d", "type": "decision",
                    "condition": {"path": "steps.zz.output.ok", "op": "eq", "value": true},
                    "then": "a", "else": "a"}, compute_step("a", "billing")]),
            "step d: condition path names step \"zz\"",
        ),
        (
            json!([{"id": "a", "type": "compute", "functionId": "billing",
                    "encryptedParams": {"X": {"value": 5, "encrypt": true}}}]),
            "step a: encrypted param X",
        ),
        (
            json!([{"id": "a", "type": "compute", "functionId": "billing",
                    "encryptedParams": {"X": {"secretRef": "not a name"}}}]),
            "step a: encrypted param X",
        ),
        (
            json!([{"id": "a", "type": "compute", "functionId": "billing",
                    "encryptedParams": {"X": {"secretRef": "UNDECLARED"}}}]),
            "step a: encrypted param X references secret UNDECLARED, which function billing does not declare",
        ),
    ];
    for (s, expected) in cases {
        match create(&n.coffer, "bad", s.clone()).await {
            Err(CoreError::Invalid(msg)) => assert!(msg.contains(expected), "{s}: {msg}"),
            other => panic!("{s}: {other:?}"),
        }
    }
    // A loop through a delay is fine.
    create(
        &n.coffer,
        "loop",
        json!([compute_step("a", "billing"),
               {"id": "wait", "type": "delay", "durationMs": 10},
               {"id": "d", "type": "decision",
                "condition": {"path": "steps.a.output.done", "op": "eq", "value": true},
                "then": "end", "else": "a"},
               {"id": "end", "type": "delay", "durationMs": 0}]),
    )
    .await
    .unwrap();
    assert_eq!(
        n.coffer
            .list_orchestrations(&admin(), &env(), None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1,
        "nothing refused was stored"
    );
}

/// A compute step's function receives run params ∪ step params ∪ references ∪ decrypted
/// params, the later winning; the next step's function receives none of the first step's
/// params; what the function reports is redacted of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_gets_its_params_merged_and_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "STRIPE_KEY", "sk-live-ref-value-1")
        .await
        .unwrap();
    register_pull(&n.coffer, "billing", &["STRIPE_KEY", "NOT_SET"], &[]).await;
    register_pull(&n.coffer, "notify", &[], &[]).await;
    let worker = runtime_key(&*n.store, "ak_0e").await;
    let o = create(
        &n.coffer,
        "billing",
        json!([
            {"id": "charge", "type": "compute", "functionId": "billing",
             "params": {"k": "step", "fromStep": 1},
             "encryptedParams": {
                "k": {"value": CANARY, "encrypt": true},
                "plainP": {"value": {"nested": true}, "encrypt": false},
                "stripe": {"secretRef": "STRIPE_KEY"},
                "unset": {"secretRef": "NOT_SET"}}},
            {"id": "tell", "type": "compute", "functionId": "notify"}
        ]),
    )
    .await
    .unwrap();
    let _machine = machine(&n.coffer);
    // `unset` names a reference whose secret is not set: the run's param of that name does
    // not stand in for it.
    let run = start_run(
        &n.coffer,
        &o.id,
        json!({"k": "run", "fromRun": true, "unset": "from-the-run"}),
    )
    .await;
    assert_eq!(run.status, OrchestrationRunStatus::Running);
    let job = next_job(&n.coffer, &worker, "billing").await;
    assert_eq!(
        job.trigger_params,
        json!({"k": CANARY, "fromRun": true, "fromStep": 1, "plainP": {"nested": true},
               "stripe": "sk-live-ref-value-1"}),
        "encryptedParams win; an unset reference is absent"
    );
    assert_eq!(
        job.secrets.names().collect::<Vec<_>>(),
        ["STRIPE_KEY"],
        "the function's declared secret, as for any run"
    );
    assert!(!format!("{job:?}").contains(CANARY), "Debug shows no param");
    complete(
        &n.coffer,
        &worker,
        job.run_id.as_deref().unwrap(),
        None,
        Ok(json!({"echo": CANARY, "ref": "sk-live-ref-value-1", "amount": 5})),
    )
    .await
    .unwrap();
    let job2 = next_job(&n.coffer, &worker, "notify").await;
    assert_eq!(
        job2.trigger_params,
        json!({"k": "run", "fromRun": true, "unset": "from-the-run"}),
        "another step gets only the run's params"
    );
    complete(
        &n.coffer,
        &worker,
        job2.run_id.as_deref().unwrap(),
        None,
        Ok(json!({"ok": true})),
    )
    .await
    .unwrap();
    let done = wait_run(&n.coffer, &run.id, |r| r.status.is_final()).await;
    assert_eq!(done.status, OrchestrationRunStatus::Succeeded, "{done:?}");
    assert_eq!(
        done.steps[0].output,
        Some(json!({"echo": "********", "ref": "********", "amount": 5}))
    );
    assert_eq!(done.steps[1].status, StepStatus::Succeeded);
    let stored_run = n
        .store
        .get_run(
            &env(),
            &coffer_store::RunId::new(job.run_id.as_deref().unwrap()).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!stored_run.trigger_params.contains(CANARY));
    assert!(!stored_run.trigger_params.contains("sk-live-ref-value-1"));
    let everything = format!("{done:?}{stored_run:?}{}", journal_text(&n).await);
    assert!(!everything.contains(CANARY));
    assert!(!everything.contains("sk-live-ref-value-1"));
    // The resolution of the reference is audited by name.
    assert!(everything.contains("STRIPE_KEY"));
}

/// A reference gets the secret's value when the step runs: after a rotation, the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_resolves_to_the_current_value_after_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "API_KEY", "first-value-11").await.unwrap();
    register_pull(&n.coffer, "billing", &["API_KEY"], &[]).await;
    let worker = runtime_key(&*n.store, "ak_0e").await;
    let o = create(
        &n.coffer,
        "ref",
        json!([{"id": "a", "type": "compute", "functionId": "billing",
                "encryptedParams": {"key": {"secretRef": "API_KEY"}}}]),
    )
    .await
    .unwrap();
    let _machine = machine(&n.coffer);
    for expected in ["first-value-11", "second-value-22"] {
        let run = start_run(&n.coffer, &o.id, json!({})).await;
        let job = next_job(&n.coffer, &worker, "billing").await;
        assert_eq!(job.trigger_params["key"], expected);
        complete(
            &n.coffer,
            &worker,
            job.run_id.as_deref().unwrap(),
            None,
            Ok(json!(null)),
        )
        .await
        .unwrap();
        wait_run(&n.coffer, &run.id, |r| r.status.is_final()).await;
        put(&n.coffer, "API_KEY", "second-value-22").await.unwrap();
    }
    // The function stops declaring the secret: the reference no longer reaches it, and
    // the step fails rather than run without it.
    register_pull(&n.coffer, "billing", &[], &[]).await;
    let run = start_run(&n.coffer, &o.id, json!({})).await;
    let failed = until_failed(&n.coffer, &worker, &run.id).await;
    let error = failed.steps[0].error.clone().unwrap_or_default();
    assert!(error.contains("does not declare"), "{failed:?}");
}

/// Polls (so a pull step's run is handed out, or fails) until the run has ended.
async fn until_failed(c: &Coffer, who: &coffer_core::Principal, run: &str) -> OrchestrationRun {
    for _ in 0..200 {
        let r = get_run(c, run).await;
        if r.status.is_final() {
            assert_eq!(r.status, OrchestrationRunStatus::Failed, "{r:?}");
            return r;
        }
        let job = poll(c, who, &["billing"], 30_000).await.unwrap();
        assert!(job.is_none(), "no job is handed out: {job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run} did not fail");
}

/// Approve goes on, reject ends `rejected`, a timeout fails; a decision chooses by params;
/// approving a run that does not wait is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_decisions_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    register_pull(&n.coffer, "billing", &[], &[]).await;
    let o = create(
        &n.coffer,
        "gate",
        json!([
            {"id": "big", "type": "decision",
             "condition": {"path": "params.amount", "op": "gt", "value": 100},
             "then": "ok", "else": "done"},
            {"id": "ok", "type": "approval"},
            {"id": "done", "type": "delay", "durationMs": 0}
        ]),
    )
    .await
    .unwrap();
    let _machine = machine(&n.coffer);
    // Small: the decision skips the approval.
    let small = start_run(&n.coffer, &o.id, json!({"amount": 5})).await;
    let small = wait_run(&n.coffer, &small.id, |r| r.status.is_final()).await;
    assert_eq!(small.status, OrchestrationRunStatus::Succeeded);
    assert_eq!(
        small.steps[0].output,
        Some(json!({"result": false, "next": "done"}))
    );
    assert_eq!(small.steps[1].status, StepStatus::Skipped);
    let err = decide(&n.coffer, &small.id, true).await.unwrap_err();
    assert!(matches!(err, CoreError::NotWaiting(_)), "{err:?}");

    // Big: waits; approved, it goes on.
    let big = start_run(&n.coffer, &o.id, json!({"amount": 500})).await;
    let waiting = wait_run(&n.coffer, &big.id, |r| {
        r.status == OrchestrationRunStatus::WaitingApproval
    })
    .await;
    assert_eq!(waiting.current_step.as_deref(), Some("ok"));
    decide(&n.coffer, &big.id, true).await.unwrap();
    let done = wait_run(&n.coffer, &big.id, |r| r.status.is_final()).await;
    assert_eq!(done.status, OrchestrationRunStatus::Succeeded, "{done:?}");
    assert_eq!(done.steps[1].output.as_ref().unwrap()["decidedBy"], "ak_00");
    assert_eq!(done.steps[1].output.as_ref().unwrap()["reason"], "checked");

    // Rejected: the run ends rejected.
    let no = start_run(&n.coffer, &o.id, json!({"amount": 500})).await;
    wait_run(&n.coffer, &no.id, |r| {
        r.status == OrchestrationRunStatus::WaitingApproval
    })
    .await;
    decide(&n.coffer, &no.id, false).await.unwrap();
    let no = wait_run(&n.coffer, &no.id, |r| r.status.is_final()).await;
    assert_eq!(no.status, OrchestrationRunStatus::Rejected);
    assert_eq!(no.steps[1].status, StepStatus::Rejected);
    assert_eq!(no.steps[2].status, StepStatus::Skipped);

    // A timeout fails the run.
    let timed = create(
        &n.coffer,
        "timed",
        json!([{"id": "ok", "type": "approval", "timeoutMs": 300}]),
    )
    .await
    .unwrap();
    let t = start_run(&n.coffer, &timed.id, json!({})).await;
    let t = wait_run(&n.coffer, &t.id, |r| r.status.is_final()).await;
    assert_eq!(t.status, OrchestrationRunStatus::Failed);
    assert_eq!(t.steps[0].error.as_deref(), Some("the approval timed out"));

    // The decisions are audited with the deciding key.
    let rows = audit_rows(&n).await;
    let decided: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.action == "orchestration.run.approved" || r.action == "orchestration.run.rejected"
        })
        .collect();
    assert_eq!(decided.len(), 2, "{decided:?}");
}

/// A run waiting in a delay, and one waiting for an approval, resume after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_resume_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (o, delayed, gated) = {
        let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
        register_pull(&n.coffer, "billing", &[], &[]).await;
        let o = create(
            &n.coffer,
            "slow",
            json!([{"id": "wait", "type": "delay", "durationMs": 1500},
                   {"id": "ok", "type": "approval"},
                   {"id": "charge", "type": "compute", "functionId": "billing",
                    "encryptedParams": {"T": {"value": CANARY, "encrypt": true}}}]),
        )
        .await
        .unwrap();
        let stop = machine(&n.coffer);
        let delayed = start_run(&n.coffer, &o.id, json!({})).await;
        wait_run(&n.coffer, &delayed.id, |r| {
            r.steps[0].status == StepStatus::Running
        })
        .await;
        let gated = start_run(&n.coffer, &o.id, json!({})).await;
        let _ = stop.send(());
        (o, delayed, gated)
    };
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let worker = runtime_key(&*n.store, "ak_0e").await;
    let _machine = machine(&n.coffer);
    for run in [&delayed.id, &gated.id] {
        wait_run(&n.coffer, run, |r| {
            r.status == OrchestrationRunStatus::WaitingApproval
        })
        .await;
        decide(&n.coffer, run, true).await.unwrap();
        let job = next_job(&n.coffer, &worker, "billing").await;
        assert_eq!(job.trigger_params, json!({"T": CANARY}));
        complete(
            &n.coffer,
            &worker,
            job.run_id.as_deref().unwrap(),
            None,
            Ok(json!({})),
        )
        .await
        .unwrap();
        let done = wait_run(&n.coffer, run, |r| r.status.is_final()).await;
        assert_eq!(done.status, OrchestrationRunStatus::Succeeded, "{done:?}");
    }
    // Deleting the orchestration fails a run still going at its next compute step.
    let left = start_run(&n.coffer, &o.id, json!({})).await;
    wait_run(&n.coffer, &left.id, |r| {
        r.status == OrchestrationRunStatus::WaitingApproval
    })
    .await;
    n.coffer
        .apply(
            &admin(),
            DeleteOrchestration {
                env: env(),
                id: o.id.clone(),
                expected_revision: None,
            },
        )
        .await
        .unwrap();
    decide(&n.coffer, &left.id, true).await.unwrap();
    let job = poll(&n.coffer, &worker, &["billing"], 30_000)
        .await
        .unwrap();
    assert!(
        job.is_none(),
        "a step whose orchestration is gone gets nothing"
    );
    let failed = wait_run(&n.coffer, &left.id, |r| r.status.is_final()).await;
    assert_eq!(failed.status, OrchestrationRunStatus::Failed, "{failed:?}");
    assert_eq!(
        failed.steps[2].error.as_deref(),
        Some(format!("orchestration {} was deleted", o.id).as_str())
    );
}

/// Rewrap re-encrypts params to the current version, status counts them per version, and
/// verify opens them; a run still gets the plaintext afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_and_verify_cover_encrypted_params() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
        register_pull(&n.coffer, "billing", &[], &[]).await;
        create(
            &n.coffer,
            "r",
            json!([{"id": "a", "type": "compute", "functionId": "billing",
                    "encryptedParams": {"T": {"value": CANARY, "encrypt": true},
                                        "U": {"value": CANARY2, "encrypt": true}}}]),
        )
        .await
        .unwrap()
        .id
    };
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    let status = n.coffer.key_status(&admin()).await.unwrap();
    let per_version: Vec<(u32, u64)> = status
        .versions
        .iter()
        .map(|v| (v.version, v.params))
        .collect();
    assert_eq!(per_version, [(1, 2), (2, 0)]);
    let report = rewrap(&n.coffer).await;
    assert_eq!(report.params.rewrapped, 2, "{report:?}");
    let again = rewrap(&n.coffer).await;
    assert_eq!(
        (again.params.rewrapped, again.params.already_current),
        (0, 2)
    );
    let status = n.coffer.key_status(&admin()).await.unwrap();
    let per_version: Vec<(u32, u64)> = status
        .versions
        .iter()
        .map(|v| (v.version, v.params))
        .collect();
    assert_eq!(per_version, [(1, 0), (2, 2)]);
    let verified = verify(&n.coffer).await;
    assert_eq!(verified.params_checked, 2);
    assert!(verified.unreadable_params.is_empty());
    drop(n);
    // Only key 2 now: the params still open.
    let n = start(dir.path(), ring(2, &[(2, K2)]), false).await.unwrap();
    let worker = runtime_key(&*n.store, "ak_0e").await;
    let _machine = machine(&n.coffer);
    let run = start_run(&n.coffer, &id, json!({})).await;
    let job = next_job(&n.coffer, &worker, "billing").await;
    assert_eq!(job.trigger_params, json!({"T": CANARY, "U": CANARY2}));
    complete(
        &n.coffer,
        &worker,
        job.run_id.as_deref().unwrap(),
        None,
        Ok(json!({})),
    )
    .await
    .unwrap();
    wait_run(&n.coffer, &run.id, |r| r.status.is_final()).await;
}

/// Only admin and manage keys of the environment reach orchestrations; a runtime key does
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_keys_cannot_manage_orchestrations() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    register_pull(&n.coffer, "billing", &[], &[]).await;
    let runtime = runtime_key(&*n.store, "ak_0e").await;
    let body = coffer_wire::CreateOrchestration {
        name: "x".into(),
        steps: steps(json!([compute_step("a", "billing")])),
    };
    let err = n
        .coffer
        .apply(&runtime, CreateOrchestration { env: env(), body })
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Forbidden), "{err:?}");
    let err = n
        .coffer
        .list_orchestrations(&runtime, &env(), None, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Forbidden), "{err:?}");
    let _ = commands::Rewrap::default();
}

/// Push: each compute step is a signed delivery; the first step's encrypted param reaches
/// its delivery only, and its echo in the answer is redacted before it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_steps_are_pushed_signed_and_redacted() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let signing = Arc::new(Mutex::new(None));
    let (url, received) = crate::functions::endpoint(vec![], signing.clone()).await;
    let secret = crate::functions::register_push(&n.coffer, "charge", &url, 0).await;
    *signing.lock().unwrap() = Some(secret);
    // The endpoint echoes this value: as the first step's param, it must be redacted.
    let echoed = "sk-live-0123456789";
    let o = create(
        &n.coffer,
        "pushed",
        json!([{"id": "one", "type": "compute", "functionId": "charge",
                "encryptedParams": {"TOKEN": {"value": echoed, "encrypt": true}}},
               {"id": "two", "type": "compute", "functionId": "charge"}]),
    )
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = tokio::spawn(coffer_core::runtime::push::run(n.coffer.clone(), async {
        let _ = stopped.await;
    }));
    let _machine = machine(&n.coffer);
    let run = start_run(&n.coffer, &o.id, json!({"order": 1})).await;
    let done = wait_run(&n.coffer, &run.id, |r| r.status.is_final()).await;
    assert_eq!(done.status, OrchestrationRunStatus::Succeeded, "{done:?}");
    assert_eq!(
        done.steps[0].output,
        Some(json!({"charged": true, "echo": "********"}))
    );
    let bodies = std::mem::take(&mut received.lock().unwrap().bodies);
    assert_eq!(bodies.len(), 2, "one delivery per step");
    assert!(bodies.iter().all(|(signed, _)| *signed), "signed");
    assert_eq!(
        bodies[0].1["triggerParams"],
        json!({"order": 1, "TOKEN": echoed})
    );
    assert_eq!(bodies[1].1["triggerParams"], json!({"order": 1}));
    assert_eq!(
        bodies[0].1["event"]["data"]["orchestrationRunId"],
        run.id.as_str()
    );
    let journal = journal_text(&n).await;
    assert!(!journal.contains(echoed), "no param in the journal");
    let _ = stop.send(());
    dispatcher.await.unwrap();
}
