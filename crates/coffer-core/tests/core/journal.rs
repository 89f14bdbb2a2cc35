//! Every kind of change leaves exactly one audit row and (except `secret.unchanged`) exactly
//! one event, written by the store in the change's own transaction.

use coffer_core::orchestrations::{
    CreateOrchestration, DecideOrchestrationRun, DeleteOrchestration, StartOrchestrationRun,
    UpdateOrchestration,
};
use coffer_core::{ConfigKey, EnvName, Role, SecretName, commands};
use coffer_store::{Action, AuditQuery, AuditRecord, EventRecord, FunctionId};
use secrecy::SecretString;
use serde_json::json;

use crate::harness::*;

fn other_env() -> EnvName {
    EnvName::new("staging").unwrap()
}

/// Enumerates [`Action::ALL`]: a new kind of change must be added to the `match` below
/// (it has no wildcard arm), and then this test proves it publishes its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_leaves_one_audit_row_and_publishes_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let who = admin();
    let secret = |name: &str, value: &str| commands::PutSecret {
        env: env(),
        name: SecretName::new(name).unwrap(),
        value: SecretString::from(value.to_owned()),
        expected_revision: None,
    };
    let config = |value| commands::PutConfig {
        env: env(),
        key: ConfigKey::new("flags").unwrap(),
        value,
        expected_revision: None,
    };
    let runtime = runtime_key(&*n.store, "ak_0e").await;
    // Run ids, as the run arms learn them.
    let mut runs: Vec<String> = Vec::new();
    // The orchestration and its runs, as the orchestration arms make them; the machine.
    let mut orchestration = String::new();
    let mut flows: Vec<String> = Vec::new();
    let mut machine: Option<tokio::sync::oneshot::Sender<()>> = None;
    for action in Action::ALL {
        let mut before = n.store.last_event_id().await.unwrap();
        let (mut audit_before, _) = n.store.audit_head().await.unwrap();
        // Each arm makes exactly one change of its kind and says what it names.
        let (subject, name): (String, Option<String>) = match action {
            Action::EnvironmentCreated => {
                n.coffer
                    .apply(&who, commands::CreateEnvironment { name: other_env() })
                    .await
                    .unwrap();
                (
                    "system.environment.staging.created".into(),
                    Some("staging".into()),
                )
            }
            Action::EnvironmentDeleted => {
                n.coffer
                    .apply(&who, commands::DeleteEnvironment { name: other_env() })
                    .await
                    .unwrap();
                (
                    "system.environment.staging.deleted".into(),
                    Some("staging".into()),
                )
            }
            Action::SecretCreated => {
                n.coffer.apply(&who, secret("A", "one")).await.unwrap();
                ("system.secret.A.created".into(), Some("A".into()))
            }
            Action::SecretUpdated => {
                n.coffer.apply(&who, secret("A", "two")).await.unwrap();
                ("system.secret.A.updated".into(), Some("A".into()))
            }
            Action::SecretDeleted => {
                let delete = commands::DeleteSecret {
                    env: env(),
                    name: SecretName::new("A").unwrap(),
                    expected_revision: None,
                };
                n.coffer.apply(&who, delete).await.unwrap();
                ("system.secret.A.deleted".into(), Some("A".into()))
            }
            Action::SecretUnchanged => {
                n.coffer.apply(&who, secret("B", "same")).await.unwrap();
                let before = n.store.last_event_id().await.unwrap();
                let (audit_before, _) = n.store.audit_head().await.unwrap();
                let import = commands::ImportSecrets {
                    env: env(),
                    entries: vec![(SecretName::new("B").unwrap(), SecretString::from("same"))],
                };
                n.coffer.apply(&who, import).await.unwrap();
                assert_eq!(
                    n.store.last_event_id().await.unwrap(),
                    before,
                    "an unchanged value publishes nothing"
                );
                let rows = audit_since(&n, audit_before).await;
                assert_eq!(rows.len(), 1, "{rows:?}");
                assert_eq!(rows[0].action, "secret.unchanged");
                assert_eq!(rows[0].event, None);
                continue;
            }
            Action::ConfigCreated => {
                n.coffer.apply(&who, config(json!(1))).await.unwrap();
                ("system.config.flags.created".into(), Some("flags".into()))
            }
            Action::ConfigUpdated => {
                n.coffer.apply(&who, config(json!(2))).await.unwrap();
                ("system.config.flags.updated".into(), Some("flags".into()))
            }
            Action::ConfigDeleted => {
                let delete = commands::DeleteConfig {
                    env: env(),
                    key: ConfigKey::new("flags").unwrap(),
                    expected_revision: None,
                };
                n.coffer.apply(&who, delete).await.unwrap();
                ("system.config.flags.deleted".into(), Some("flags".into()))
            }
            Action::ApiKeyCreated => {
                let key = commands::CreateApiKey {
                    name: "ci".into(),
                    role: Role::Manage(env()),
                };
                let new = n.coffer.apply(&who, key).await.unwrap();
                let id = new.meta.id.to_string();
                (format!("system.apikey.{id}.created"), Some(id))
            }
            Action::ApiKeyRevoked => {
                let keys = n.coffer.list_api_keys(&who).await.unwrap();
                let ci = keys.iter().find(|k| k.name == "ci").unwrap().id.clone();
                n.coffer
                    .apply(&who, commands::RevokeApiKey { id: ci.clone() })
                    .await
                    .unwrap();
                (format!("system.apikey.{ci}.revoked"), Some(ci.to_string()))
            }
            Action::KeysRewrapped => {
                // A value under key 1, then key 2 becomes current: a rewrap replaces it.
                n.coffer.apply(&who, secret("C", "old")).await.unwrap();
                let n2 = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
                    .await
                    .unwrap();
                let before = n2.store.last_event_id().await.unwrap();
                let report = n2
                    .coffer
                    .apply(&who, commands::Rewrap::default())
                    .await
                    .unwrap();
                assert!(report.rewrapped >= 1);
                let events = n2.store.events_after(before, 10).await.unwrap();
                assert_eq!(events.len(), 1, "{events:?}");
                assert_eq!(events[0].subject, "system.keys.rewrapped");
                assert_eq!(events[0].count, Some(report.rewrapped));
                assert_eq!(events[0].actor.key_id.as_deref(), Some("ak_00"));
                continue;
            }
            Action::KeyRegistered => {
                // Key 2's canary was stored when a node first started with it (above).
                let events = n.store.events_after(0, 1000).await.unwrap();
                let registered: Vec<&EventRecord> = events
                    .iter()
                    .filter(|e| e.subject == "system.keys.v2.registered")
                    .collect();
                assert_eq!(registered.len(), 1, "{events:?}");
                assert_eq!(registered[0].actor.key_id.as_deref(), Some("system"));
                continue;
            }
            Action::KeysVerified => {
                // Every value fits one batch: one verification, one row and event. (This
                // node lacks key 2, which the rewrap above used: what it finds unreadable is
                // recorded in the catalog, which is no event.)
                let report = n
                    .coffer
                    .apply(&who, commands::Verify::default())
                    .await
                    .unwrap();
                assert!(report.checked >= 1);
                let events = n.store.events_after(before, 10).await.unwrap();
                assert_eq!(events.last().and_then(|e| e.count), Some(report.checked));
                ("system.keys.verified".into(), None)
            }
            Action::FunctionCreated => {
                register_pull(&n.coffer, "f", &["A"], &[]).await;
                ("system.function.f.created".into(), Some("f".into()))
            }
            Action::FunctionUpdated => {
                register_pull(&n.coffer, "f", &["A", "B"], &[]).await;
                ("system.function.f.updated".into(), Some("f".into()))
            }
            Action::FunctionDeleted => {
                let delete = commands::DeleteFunction {
                    env: env(),
                    id: FunctionId::new("f").unwrap(),
                    expected_revision: None,
                };
                n.coffer.apply(&who, delete).await.unwrap();
                ("system.function.f.deleted".into(), Some("f".into()))
            }
            Action::FunctionRotated => {
                register_pull(&n.coffer, "g", &["A"], &[]).await;
                before = n.store.last_event_id().await.unwrap();
                audit_before = n.store.audit_head().await.unwrap().0;
                let rotate = commands::RotateSigningSecret {
                    env: env(),
                    id: FunctionId::new("g").unwrap(),
                    grace_ms: None,
                };
                let out = n.coffer.apply(&who, rotate).await.unwrap();
                assert!(
                    out.signing_secret.is_some(),
                    "a rotation shows the new secret"
                );
                ("system.function.g.rotated".into(), Some("g".into()))
            }
            Action::FunctionResolved => {
                let resolve = commands::ResolveFunction {
                    env: env(),
                    id: FunctionId::new("g").unwrap(),
                    only: None,
                };
                n.coffer.apply(&runtime, resolve).await.unwrap();
                assert_eq!(n.store.last_event_id().await.unwrap(), before, "audit only");
                let rows = audit_since(&n, audit_before).await;
                assert_eq!(rows.len(), 1, "{rows:?}");
                assert_eq!(rows[0].action, "function.resolved");
                assert_eq!(rows[0].name.as_deref(), Some("g"));
                assert_eq!(rows[0].actor.key_id.as_deref(), Some("ak_0e"));
                assert!(rows[0].detail.is_some());
                continue;
            }
            Action::EventReceived => {
                assert!(send_event(&n.coffer, "nobody.listens").await.is_empty());
                assert_eq!(n.store.last_event_id().await.unwrap(), before, "audit only");
                let rows = audit_since(&n, audit_before).await;
                assert_eq!(rows.len(), 1, "{rows:?}");
                assert_eq!(rows[0].action, "event.received");
                assert_eq!(rows[0].name.as_deref(), Some("nobody.listens"));
                assert_eq!(rows[0].count, 0);
                continue;
            }
            Action::RunQueued => {
                let started = send_event(&n.coffer, "order.created").await;
                assert_eq!(started.len(), 1, "g is triggered by order.*");
                runs.push(started[0].to_string());
                let rows = audit_since(&n, audit_before).await;
                let mut actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
                actions.sort();
                assert_eq!(actions, ["event.received", "run.queued"]);
                run_event(
                    &n,
                    before,
                    &format!("system.run.{}.queued", runs[0]),
                    "ak_00",
                )
                .await;
                continue;
            }
            Action::RunRunning => {
                let job = poll(&n.coffer, &runtime, &["g"], 30_000).await.unwrap();
                assert_eq!(job.unwrap().run_id.as_deref(), Some(runs[0].as_str()));
                let rows = audit_since(&n, audit_before).await;
                let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
                assert_eq!(actions, ["run.running", "function.resolved"]);
                run_event(
                    &n,
                    before,
                    &format!("system.run.{}.running", runs[0]),
                    "ak_0e",
                )
                .await;
                continue;
            }
            Action::RunSucceeded => {
                complete(
                    &n.coffer,
                    &runtime,
                    &runs[0],
                    Some(1),
                    Ok(json!({"ok": true})),
                )
                .await
                .unwrap();
                let rows = audit_since(&n, audit_before).await;
                assert_eq!(rows.len(), 1, "{rows:?}");
                run_event(
                    &n,
                    before,
                    &format!("system.run.{}.succeeded", runs[0]),
                    "ak_0e",
                )
                .await;
                continue;
            }
            Action::RunFailed => {
                let started = send_event(&n.coffer, "order.paid").await;
                poll(&n.coffer, &runtime, &["g"], 30_000)
                    .await
                    .unwrap()
                    .unwrap();
                before = n.store.last_event_id().await.unwrap();
                audit_before = n.store.audit_head().await.unwrap().0;
                let run = started[0].to_string();
                complete(&n.coffer, &runtime, &run, Some(1), Err("boom"))
                    .await
                    .unwrap();
                let rows = audit_since(&n, audit_before).await;
                assert_eq!(rows.len(), 1, "{rows:?}");
                run_event(&n, before, &format!("system.run.{run}.failed"), "ak_0e").await;
                continue;
            }
            Action::OrchestrationCreated => {
                let o = create_orchestration(
                    &n,
                    "gate",
                    json!([
                    {"id": "ok", "type": "approval"},
                    {"id": "done", "type": "delay", "durationMs": 0}]),
                )
                .await;
                orchestration = o.clone();
                (format!("system.orchestration.{o}.created"), Some(o))
            }
            Action::OrchestrationUpdated => {
                let body = coffer_wire::UpdateOrchestration {
                    name: "gate v2".into(),
                    steps: serde_json::from_value(json!([
                        {"id": "ok", "type": "approval"},
                        {"id": "done", "type": "delay", "durationMs": 0}]))
                    .unwrap(),
                    expected_revision: Some(1),
                };
                let o = orchestration.clone();
                n.coffer
                    .apply(
                        &who,
                        UpdateOrchestration {
                            env: env(),
                            id: o.clone(),
                            body,
                        },
                    )
                    .await
                    .unwrap();
                (format!("system.orchestration.{o}.updated"), Some(o))
            }
            Action::OrchestrationDeleted => {
                let o = create_orchestration(
                    &n,
                    "doomed",
                    json!([
                    {"id": "w", "type": "delay", "durationMs": 0}]),
                )
                .await;
                before = n.store.last_event_id().await.unwrap();
                audit_before = n.store.audit_head().await.unwrap().0;
                n.coffer
                    .apply(
                        &who,
                        DeleteOrchestration {
                            env: env(),
                            id: o.clone(),
                            expected_revision: None,
                        },
                    )
                    .await
                    .unwrap();
                (format!("system.orchestration.{o}.deleted"), Some(o))
            }
            Action::FlowStarted => {
                let r = start_flow(&n, &orchestration).await;
                flows.push(r.clone());
                (format!("system.orchestration.run.{r}.started"), Some(r))
            }
            Action::FlowWaiting => {
                // The machine (actor `system`) takes the run to its approval step.
                machine = Some(spawn_machine(&n));
                let r = flows[0].clone();
                flow_status(&n, &r, coffer_wire::OrchestrationRunStatus::WaitingApproval).await;
                flow_events(
                    &n,
                    before,
                    &[(&format!("system.orchestration.run.{r}.waiting"), "system")],
                )
                .await;
                continue;
            }
            Action::FlowApproved | Action::FlowSucceeded => {
                if action == &Action::FlowSucceeded {
                    // The approval's arm saw it: the machine ends the run it approved.
                    continue;
                }
                let r = flows[0].clone();
                decide(&n, &r, true).await;
                flow_status(&n, &r, coffer_wire::OrchestrationRunStatus::Succeeded).await;
                flow_events(
                    &n,
                    before,
                    &[
                        (&format!("system.orchestration.run.{r}.approved"), "ak_00"),
                        (&format!("system.orchestration.run.{r}.succeeded"), "system"),
                    ],
                )
                .await;
                continue;
            }
            Action::FlowRejected => {
                let r = start_flow(&n, &orchestration).await;
                flow_status(&n, &r, coffer_wire::OrchestrationRunStatus::WaitingApproval).await;
                before = n.store.last_event_id().await.unwrap();
                decide(&n, &r, false).await;
                flow_status(&n, &r, coffer_wire::OrchestrationRunStatus::Rejected).await;
                // The rejection is the run's last event: its end says nothing more.
                flow_events(
                    &n,
                    before,
                    &[(&format!("system.orchestration.run.{r}.rejected"), "ak_00")],
                )
                .await;
                continue;
            }
            Action::FlowFailed => {
                let o = create_orchestration(
                    &n,
                    "timed",
                    json!([
                    {"id": "ok", "type": "approval", "timeoutMs": 1}]),
                )
                .await;
                let r = start_flow(&n, &o).await;
                flow_status(&n, &r, coffer_wire::OrchestrationRunStatus::Failed).await;
                let events = n.store.events_after(before, 100).await.unwrap();
                let failed = format!("system.orchestration.run.{r}.failed");
                assert!(
                    events.iter().any(|e| e.subject == failed && e.actor.key_id.as_deref() == Some("system")),
                    "{events:?}"
                );
                let _ = machine.take().map(|stop| stop.send(()));
                continue;
            }
            Action::RunsPruned => {
                // The two runs above ended; a retention of zero deletes both, in one row.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let pruned = n
                    .coffer
                    .prune_runs(std::time::Duration::ZERO)
                    .await
                    .unwrap();
                assert_eq!(pruned, 2);
                assert_eq!(n.store.last_event_id().await.unwrap(), before, "audit only");
                let rows = audit_since(&n, audit_before).await;
                assert_eq!(rows.len(), 1, "{rows:?}");
                assert_eq!(rows[0].action, "runs.pruned");
                assert_eq!(rows[0].count, 2);
                assert_eq!(rows[0].actor.key_id.as_deref(), Some("system"));
                continue;
            }
        };
        let events = n.store.events_after(before, 10).await.unwrap();
        assert_eq!(events.len(), 1, "{action:?}: {events:?}");
        let event = &events[0];
        assert_eq!(event.subject, subject, "{action:?}");
        assert_eq!(event.name, name, "{action:?}");
        assert_eq!(event.actor.key_id.as_deref(), Some("ak_00"), "{action:?}");
        assert_eq!(event.actor.key_name.as_deref(), Some("test admin"));
        let rows = audit_since(&n, audit_before).await;
        assert_eq!(rows.len(), 1, "{action:?}: {rows:?}");
        assert_eq!(rows[0].action, action.name());
        assert_eq!(
            rows[0].event,
            Some(event.id),
            "the audit row names its event"
        );
    }
}

/// System writes are on the record too: the bootstrap's environment and admin key.
#[tokio::test]
async fn the_bootstrap_is_audited_as_the_system() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let events = n.store.events_after(0, 10).await.unwrap();
    let subjects: Vec<&str> = events.iter().map(|e| e.subject.as_str()).collect();
    assert!(
        subjects.contains(&"system.environment.default.created"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"system.keys.v1.registered"),
        "{subjects:?}"
    );
    let bootstrap = events
        .iter()
        .find(|e| e.subject.starts_with("system.apikey."))
        .expect("the admin key's event");
    assert_eq!(bootstrap.actor.key_id.as_deref(), Some("system"));
}

/// The event's time is the stored `updatedAt`, not a second clock reading.
#[tokio::test]
async fn an_events_time_is_the_stored_updated_at() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let out = put(&n.coffer, "T", "v").await.unwrap();
    let last = n.store.last_event_id().await.unwrap();
    let events = n.store.events_after(last - 1, 1).await.unwrap();
    assert_eq!(events[0].at, out.meta.updated_at.rfc3339());
    assert_eq!(events[0].revision, Some(1));
    assert_eq!(events[0].environment.as_deref(), Some("default"));
}

/// A write refused in its transaction (stale revision) leaves no audit row and no event.
#[tokio::test]
async fn a_refused_write_leaves_nothing_on_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "R", "v").await.unwrap();
    let before = n.store.last_event_id().await.unwrap();
    let (audit_before, _) = n.store.audit_head().await.unwrap();
    let stale = commands::PutSecret {
        env: env(),
        name: SecretName::new("R").unwrap(),
        value: SecretString::from("w"),
        expected_revision: Some(7),
    };
    assert!(n.coffer.apply(&admin(), stale).await.is_err());
    assert_eq!(n.store.last_event_id().await.unwrap(), before);
    assert_eq!(n.store.audit_head().await.unwrap().0, audit_before);
}

/// The one event after `before` is `subject`, by `actor`, and its audit row names it.
async fn run_event(n: &Node, before: u64, subject: &str, actor: &str) {
    let events = n.store.events_after(before, 10).await.unwrap();
    assert_eq!(events.len(), 1, "{subject}: {events:?}");
    assert_eq!(events[0].subject, subject);
    assert_eq!(events[0].actor.key_id.as_deref(), Some(actor), "{subject}");
    let query = AuditQuery {
        action: Some(
            subject
                .rsplit('.')
                .next()
                .map(|v| format!("run.{v}"))
                .unwrap(),
        ),
        ..AuditQuery::default()
    };
    let rows = n.store.audit(&query, 1000).await.unwrap().0;
    assert!(
        rows.iter().any(|r| r.event == Some(events[0].id)),
        "{subject}: the audit row names its event"
    );
}

async fn create_orchestration(n: &Node, name: &str, steps: serde_json::Value) -> String {
    let body = coffer_wire::CreateOrchestration {
        name: name.into(),
        steps: serde_json::from_value(steps).unwrap(),
    };
    n.coffer
        .apply(&admin(), CreateOrchestration { env: env(), body })
        .await
        .unwrap()
        .id
}

async fn start_flow(n: &Node, orchestration: &str) -> String {
    let command = StartOrchestrationRun {
        env: env(),
        id: orchestration.into(),
        body: Default::default(),
    };
    n.coffer.apply(&admin(), command).await.unwrap().id
}

async fn decide(n: &Node, run: &str, approve: bool) {
    let command = DecideOrchestrationRun {
        env: env(),
        run_id: run.into(),
        approve,
        body: Default::default(),
    };
    n.coffer.apply(&admin(), command).await.unwrap();
}

fn spawn_machine(n: &Node) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(coffer_core::orchestrations::engine::run(
        n.coffer.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    stop
}

/// Waits (bounded) until the orchestration run has `status`.
async fn flow_status(n: &Node, run: &str, status: coffer_wire::OrchestrationRunStatus) {
    for _ in 0..200 {
        let r = n
            .coffer
            .orchestration_run(&admin(), &env(), run)
            .await
            .unwrap();
        if r.status == status {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("orchestration run {run} never became {status:?}");
}

/// The events after `before` are exactly `expected` (subject, actor), each with an audit
/// row that names it.
async fn flow_events(n: &Node, before: u64, expected: &[(&str, &str)]) {
    let events = n.store.events_after(before, 100).await.unwrap();
    let got: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|e| (e.subject.as_str(), e.actor.key_id.as_deref()))
        .collect();
    let want: Vec<(&str, Option<&str>)> = expected.iter().map(|(s, a)| (*s, Some(*a))).collect();
    assert_eq!(got, want);
    let rows = n
        .store
        .audit(
            &AuditQuery {
                after: Some(0),
                ..AuditQuery::default()
            },
            10_000,
        )
        .await
        .unwrap()
        .0;
    for e in &events {
        assert!(
            rows.iter().any(|r| r.event == Some(e.id)),
            "{e:?} has its audit row"
        );
    }
}

async fn audit_since(n: &Node, after: u64) -> Vec<AuditRecord> {
    let query = AuditQuery {
        after: Some(after),
        ..AuditQuery::default()
    };
    n.store.audit(&query, 100).await.unwrap().0
}
