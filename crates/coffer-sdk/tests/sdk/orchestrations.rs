//! Orchestrations through the typed client against a real server: a definition with an
//! encrypted param is masked in every answer, updates keep it and move the revision, a
//! stale revision is a conflict, and runs start, read back and list.

use coffer_sdk::wire::{
    ApprovalStep, ComputeStep, CreateOrchestration, DelayStep, MASK, OrchestrationRunStatus, Param,
    Step, UpdateOrchestration,
};
use coffer_sdk::{OrchestrationRunQuery, PageRequest, function};
use http::StatusCode;
use serde_json::json;

use crate::common::Server;

/// The plaintext of the one encrypted param: no answer, error or `Debug` may show it.
const CANARY: &str = "canary-Q7";

fn steps() -> Vec<Step> {
    let mut charge = ComputeStep {
        id: "charge".into(),
        function_id: "pull-fn".into(),
        params: serde_json::Map::new(),
        encrypted_params: Default::default(),
    };
    charge.params.insert("currency".into(), json!("EUR"));
    charge
        .encrypted_params
        .insert("TOKEN".into(), Param::encrypt(CANARY));
    charge
        .encrypted_params
        .insert("REF".into(), Param::reference("STRIPE_KEY"));
    vec![
        Step::Compute(charge),
        Step::Approval(ApprovalStep {
            id: "review".into(),
            timeout_ms: None,
        }),
        Step::Delay(DelayStep {
            id: "settle".into(),
            duration_ms: 10,
        }),
    ]
}

/// The compute step's encrypted params of `steps`.
fn sealed(steps: &[Step]) -> &std::collections::BTreeMap<String, Param> {
    match &steps[0] {
        Step::Compute(c) => &c.encrypted_params,
        other => panic!("the first step is {}", other.kind()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orchestrations_are_created_masked_updated_listed_and_run() {
    let server = Server::start();
    let admin = server.admin();
    admin
        .put_function(
            "default",
            "pull-fn",
            &function("pull-fn").secrets(["STRIPE_KEY"]).pull(),
        )
        .await
        .unwrap();

    let created = admin
        .create_orchestration(
            "default",
            &CreateOrchestration {
                name: "billing".into(),
                steps: steps(),
            },
        )
        .await
        .unwrap();
    assert!(created.id.starts_with("orch_"), "{created:?}");
    assert_eq!((created.revision, created.name.as_str()), (1, "billing"));
    assert!(sealed(&created.steps)["TOKEN"].is_masked(), "{created:?}");
    assert_eq!(
        sealed(&created.steps)["REF"],
        Param::reference("STRIPE_KEY")
    );
    let shown = serde_json::to_string(&created).unwrap();
    assert!(!shown.contains(CANARY) && shown.contains(MASK), "{shown}");

    let read = admin
        .get_orchestration("default", &created.id)
        .await
        .unwrap();
    assert_eq!(read, created);

    // The masked form sent back keeps the sealed value; the revision moves on.
    let updated = admin
        .update_orchestration(
            "default",
            &created.id,
            &UpdateOrchestration {
                name: "billing v2".into(),
                steps: read.steps.clone(),
                expected_revision: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!((updated.revision, updated.name.as_str()), (2, "billing v2"));
    assert!(sealed(&updated.steps)["TOKEN"].is_masked());

    let stale = admin
        .update_orchestration(
            "default",
            &created.id,
            &UpdateOrchestration {
                name: "billing v3".into(),
                steps: read.steps.clone(),
                expected_revision: Some(1),
            },
        )
        .await
        .unwrap_err();
    assert!(stale.is_conflict(), "{stale}");
    assert_eq!(stale.current_revision(), Some(2), "{stale}");
    assert!(!format!("{stale} {stale:?}").contains(CANARY));

    let page = admin
        .list_orchestrations("default", &PageRequest::default())
        .await
        .unwrap();
    assert!(page.orchestrations.iter().any(|o| o.id == created.id));
    let all = admin.list_all_orchestrations("default").await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].revision, 2);

    let mut params = serde_json::Map::new();
    params.insert("x".into(), json!(1));
    let run = admin
        .run_orchestration("default", &created.id, Some(params))
        .await
        .unwrap();
    assert!(run.id.starts_with("orun_"), "{run:?}");
    assert_eq!(run.orchestration_id, created.id);
    assert_eq!(run.orchestration_revision, 2);
    assert_eq!(run.params["x"], json!(1));
    assert_eq!(
        run.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["charge", "review", "settle"]
    );

    let again = admin
        .get_orchestration_run("default", &run.id)
        .await
        .unwrap();
    assert_eq!(again.id, run.id);
    assert!(!format!("{again:?}").contains(CANARY));

    let listed = admin
        .list_all_orchestration_runs(
            "default",
            &OrchestrationRunQuery {
                orchestration_id: Some(created.id.clone()),
                ..OrchestrationRunQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [run.id.as_str()]
    );

    // No worker polls `pull-fn`: the run waits at its compute step, not at an approval.
    assert_eq!(again.status, OrchestrationRunStatus::Running, "{again:?}");
    let not_waiting = admin
        .approve_orchestration_run("default", &run.id, Some("looks fine"))
        .await
        .unwrap_err();
    assert_eq!(not_waiting.status(), Some(StatusCode::CONFLICT));
    assert_eq!(not_waiting.code(), Some("not_waiting"));

    admin
        .delete_orchestration("default", &created.id, Some(2))
        .await
        .unwrap();
    let gone = admin
        .get_orchestration("default", &created.id)
        .await
        .unwrap_err();
    assert!(gone.is_not_found());
    assert_eq!(gone.code(), Some("orchestration_not_found"));
}
