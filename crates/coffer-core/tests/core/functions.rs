//! The runtime plane on a real store: least privilege (a job carries exactly the declared
//! secrets that are set), runtime keys only, values read at delivery, leases, redaction,
//! idempotent sends, and push deliveries to a local endpoint that checks the signature.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_core::{CoreError, commands};
use coffer_store::{AuditQuery, FunctionId, RunId, RunStatus};
use serde_json::json;

use crate::harness::*;

async fn set_config(c: &coffer_core::Coffer, key: &str, value: serde_json::Value) {
    let command = commands::PutConfig {
        env: env(),
        key: coffer_core::ConfigKey::new(key).unwrap(),
        value,
        expected_revision: None,
    };
    c.apply(&admin(), command).await.unwrap();
}

fn secret_names(job: &coffer_wire::Job) -> Vec<&str> {
    job.secrets.names().collect()
}

/// A job carries the declared secrets that are set, never an undeclared one, and the
/// declared config keys that are set; the resolution is audited with names only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_carries_exactly_the_declared_secrets_that_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    for (name, value) in [
        ("A", "alpha-value"),
        ("B", "bravo-value"),
        ("C", "charlie-value"),
    ] {
        put(&n.coffer, name, value).await.unwrap();
    }
    set_config(&n.coffer, "REGION", json!("eu-west-1")).await;
    set_config(&n.coffer, "LIMITS", json!({"rps": 5})).await;
    register_pull(
        &n.coffer,
        "billing",
        &["A", "B", "UNSET"],
        &["REGION", "NOPE"],
    )
    .await;
    let runtime = runtime_key(&*n.store, "ak_0e").await;
    let runs = send_event(&n.coffer, "order.created").await;
    assert_eq!(runs.len(), 1);
    let job = poll(&n.coffer, &runtime, &["billing"], 30_000)
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(job.run_id.as_deref(), Some(runs[0].as_str()));
    assert_eq!(job.function_id, "billing");
    assert_eq!(job.environment, "default");
    assert_eq!(job.attempt, Some(1));
    assert_eq!(
        secret_names(&job),
        ["A", "B"],
        "C is undeclared, UNSET is not set"
    );
    assert_eq!(job.secrets.get("A"), Some("alpha-value"));
    assert_eq!(job.secrets.get("B"), Some("bravo-value"));
    assert_eq!(
        job.config.keys().collect::<Vec<_>>(),
        ["REGION"],
        "LIMITS is undeclared"
    );
    let event = job.event.as_ref().unwrap();
    assert_eq!(event.name, "order.created");
    assert_eq!(event.data, json!({"order": 42}));
    assert_eq!(job.trigger_params, json!({}));
    assert!(
        !format!("{job:?}").contains("alpha-value"),
        "Debug shows no value"
    );

    let query = AuditQuery {
        action: Some("function.resolved".into()),
        ..AuditQuery::default()
    };
    let rows = n.store.audit(&query, 100).await.unwrap().0;
    assert_eq!(rows.len(), 1);
    let detail: serde_json::Value =
        serde_json::from_str(rows[0].detail.as_deref().unwrap()).unwrap();
    assert_eq!(
        detail,
        json!({"run": runs[0].as_str(), "resolved": ["A", "B"], "missing": ["UNSET"]})
    );
    let everything = n.store.audit(&AuditQuery::default(), 1000).await.unwrap().0;
    let text = serde_json::to_string(&everything).unwrap();
    assert!(!text.contains("alpha-value") && !text.contains("bravo-value"));
}

/// Poll, resolve, heartbeat and complete take a runtime key of the environment: admin and
/// manage keys (and runtime keys of another environment) get 403 and nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_manage_keys_never_obtain_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "A", "alpha-value").await.unwrap();
    register_pull(&n.coffer, "billing", &["A"], &[]).await;
    let runs = send_event(&n.coffer, "order.created").await;
    let manage = manage_key(&*n.store, "ak_0d").await;
    let elsewhere = coffer_core::Principal {
        key_id: coffer_store::ApiKeyId::new("ak_0f").unwrap(),
        role: coffer_store::Role::Runtime(coffer_core::EnvName::new("staging").unwrap()),
        origin: Default::default(),
    };
    for who in [admin(), manage, elsewhere] {
        let polled = poll(&n.coffer, &who, &["billing"], 30_000).await;
        assert!(matches!(polled, Err(CoreError::Forbidden)), "{polled:?}");
        let resolve = commands::ResolveFunction {
            env: env(),
            id: FunctionId::new("billing").unwrap(),
            only: None,
        };
        let resolved = n.coffer.apply(&who, resolve).await;
        assert!(
            matches!(resolved, Err(CoreError::Forbidden)),
            "{resolved:?}"
        );
        let done = complete(&n.coffer, &who, runs[0].as_str(), None, Ok(json!(1))).await;
        assert!(matches!(done, Err(CoreError::Forbidden)), "{done:?}");
        let beat = commands::HeartbeatRun {
            env: env(),
            id: runs[0].clone(),
            body: coffer_wire::Heartbeat {
                attempt: 1,
                lease_ms: None,
            },
        };
        let beat = n.coffer.apply(&who, beat).await;
        assert!(matches!(beat, Err(CoreError::Forbidden)), "{beat:?}");
    }
    let run = n.store.get_run(&env(), &runs[0]).await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.attempts),
        (RunStatus::Queued, 0),
        "untouched"
    );
    let query = AuditQuery {
        action: Some("function.resolved".into()),
        ..AuditQuery::default()
    };
    assert!(n.store.audit(&query, 10).await.unwrap().0.is_empty());
}

/// Values are read when the job is handed over: a rotation between the event and the
/// delivery delivers the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_resolved_at_delivery_time() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "A", "before-rotation").await.unwrap();
    register_pull(&n.coffer, "billing", &["A"], &[]).await;
    let runtime = runtime_key(&*n.store, "ak_0e").await;
    send_event(&n.coffer, "order.created").await;
    put(&n.coffer, "A", "after-rotation").await.unwrap();
    let job = poll(&n.coffer, &runtime, &["billing"], 30_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.secrets.get("A"), Some("after-rotation"));
}

/// A worker's lease that expires hands the run to the next poll (the next attempt); the
/// first worker's completion is refused, the second's is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_hands_the_run_to_a_second_worker() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    register_pull(&n.coffer, "billing", &[], &[]).await;
    let first = runtime_key(&*n.store, "ak_0e").await;
    let second = runtime_key(&*n.store, "ak_0f").await;
    let runs = send_event(&n.coffer, "order.created").await;
    let job = poll(&n.coffer, &first, &["billing"], 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.attempt, Some(1));
    assert!(
        poll(&n.coffer, &second, &["billing"], 1_000)
            .await
            .unwrap()
            .is_none(),
        "held while the lease lasts"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = poll(&n.coffer, &second, &["billing"], 30_000)
        .await
        .unwrap()
        .expect("the expired run comes back");
    assert_eq!(again.run_id, job.run_id);
    assert_eq!(again.attempt, Some(2));
    let late = complete(
        &n.coffer,
        &first,
        runs[0].as_str(),
        Some(1),
        Ok(json!("late")),
    )
    .await;
    assert!(matches!(late, Err(CoreError::LeaseLost)), "{late:?}");
    let beat = commands::HeartbeatRun {
        env: env(),
        id: runs[0].clone(),
        body: coffer_wire::Heartbeat {
            attempt: 1,
            lease_ms: Some(5_000),
        },
    };
    let beat = n.coffer.apply(&first, beat).await;
    assert!(matches!(beat, Err(CoreError::LeaseLost)), "{beat:?}");
    let done = complete(
        &n.coffer,
        &second,
        runs[0].as_str(),
        Some(2),
        Ok(json!("ok")),
    )
    .await
    .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.output.as_deref(), Some(r#""ok""#));
    let twice = complete(
        &n.coffer,
        &second,
        runs[0].as_str(),
        Some(2),
        Ok(json!("x")),
    )
    .await;
    assert!(matches!(twice, Err(CoreError::LeaseLost)), "{twice:?}");
}

/// Four workers polling at once over 200 runs: each run is handed to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_get_each_of_two_hundred_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "A", "alpha-value").await.unwrap();
    register_pull(&n.coffer, "billing", &["A"], &[]).await;
    let mut wanted = BTreeSet::new();
    for _ in 0..200 {
        wanted.extend(send_event(&n.coffer, "order.created").await);
    }
    let mut workers = Vec::new();
    for i in 0..4 {
        let who = runtime_key(&*n.store, &format!("ak_1{i}")).await;
        let coffer = n.coffer.clone();
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(job) = poll(&coffer, &who, &["billing"], 60_000).await.unwrap() {
                assert_eq!(job.secrets.get("A"), Some("alpha-value"));
                let run = job.run_id.clone().unwrap();
                complete(&coffer, &who, &run, job.attempt, Ok(json!({"worker": i})))
                    .await
                    .unwrap();
                got.push(RunId::new(&run).unwrap());
            }
            got
        }));
    }
    let mut seen = Vec::new();
    for w in workers {
        seen.extend(w.await.unwrap());
    }
    let unique: BTreeSet<RunId> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a run was delivered twice");
    assert_eq!(unique, wanted, "every run was delivered");
    let filter = coffer_store::RunFilter {
        function: None,
        status: Some(RunStatus::Succeeded),
    };
    let page = n
        .coffer
        .list_runs(&admin(), &env(), &filter, None, 1000)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 200);
}

/// Whatever a worker reports is redacted before it is stored: any declared value that
/// shows up reads `********`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_output_or_error_is_stored_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "TOKEN", "tok-3f9a1c2e").await.unwrap();
    // Over 4 KiB of lines: redacted on the blocking pool, through the node's gate.
    let cert = (0..100)
        .map(|i| format!("line-{i:04}-{}", "abcdefghij".repeat(5)))
        .collect::<Vec<_>>()
        .join("\n");
    put(&n.coffer, "CERT", &cert).await.unwrap();
    register_pull(&n.coffer, "billing", &["TOKEN", "CERT"], &[]).await;
    let runtime = runtime_key(&*n.store, "ak_0e").await;
    send_event(&n.coffer, "order.created").await;
    send_event(&n.coffer, "order.created").await;
    send_event(&n.coffer, "order.created").await;
    let job = poll(&n.coffer, &runtime, &["billing"], 30_000)
        .await
        .unwrap()
        .unwrap();
    let output = json!({"echo": "Bearer tok-3f9a1c2e", "tok-3f9a1c2e": [1, "tok-3f9a1c2e"]});
    let done = complete(
        &n.coffer,
        &runtime,
        job.run_id.as_deref().unwrap(),
        job.attempt,
        Ok(output),
    )
    .await
    .unwrap();
    let stored = done.output.unwrap();
    assert!(!stored.contains("tok-3f9a1c2e"), "{stored}");
    assert!(stored.contains("********"), "{stored}");
    let job = poll(&n.coffer, &runtime, &["billing"], 30_000)
        .await
        .unwrap()
        .unwrap();
    let failed = complete(
        &n.coffer,
        &runtime,
        job.run_id.as_deref().unwrap(),
        job.attempt,
        Err("401 for token tok-3f9a1c2e"),
    )
    .await
    .unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("401 for token ********"));
    let job = poll(&n.coffer, &runtime, &["billing"], 30_000)
        .await
        .unwrap()
        .unwrap();
    let line = format!("line-0042-{}", "abcdefghij".repeat(5));
    let output = json!({"cert": cert.clone(), "one line": format!("seen: {line}.")});
    let done = complete(
        &n.coffer,
        &runtime,
        job.run_id.as_deref().unwrap(),
        job.attempt,
        Ok(output),
    )
    .await
    .unwrap();
    let stored = done.output.unwrap();
    assert!(!stored.contains(&line), "{stored}");
    assert!(stored.contains("********"), "{stored}");
}

/// A send with an `Idempotency-Key` seen before starts no run and answers the first runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_starts_the_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    register_pull(&n.coffer, "billing", &[], &[]).await;
    register_pull(&n.coffer, "shipping", &[], &[]).await;
    let send = |key: &str| commands::SendEvent {
        env: env(),
        event: coffer_wire::SendEvent {
            name: "order.created".into(),
            data: None,
        },
        idempotency_key: Some(key.into()),
    };
    let first = n.coffer.apply(&admin(), send("order-42")).await.unwrap();
    assert_eq!(first.runs.len(), 2);
    assert!(!first.replayed);
    let again = n.coffer.apply(&admin(), send("order-42")).await.unwrap();
    assert!(again.replayed);
    let ids =
        |runs: &[(RunId, FunctionId)]| runs.iter().map(|r| r.0.clone()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&again.runs), ids(&first.runs));
    let other = n.coffer.apply(&admin(), send("order-43")).await.unwrap();
    assert!(!other.replayed);
    let all = n
        .coffer
        .list_runs(&admin(), &env(), &Default::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 4);
    for bad in ["", "has space", &"k".repeat(256)] {
        let refused = n.coffer.apply(&admin(), send(bad)).await;
        assert!(matches!(refused, Err(CoreError::Invalid(_))), "{bad:?}");
    }
}

/// `coffer run`'s resolve: the declared secrets, or `only` some of them (each must be
/// declared); an unknown function is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_hands_over_the_declared_secrets_or_only_some() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "A", "alpha-value").await.unwrap();
    put(&n.coffer, "B", "bravo-value").await.unwrap();
    put(&n.coffer, "C", "charlie-value").await.unwrap();
    register_pull(&n.coffer, "billing", &["A", "B"], &[]).await;
    let runtime = runtime_key(&*n.store, "ak_0e").await;
    let resolve = |only: Option<Vec<&str>>, id: &str| commands::ResolveFunction {
        env: env(),
        id: FunctionId::new(id).unwrap(),
        only: only.map(|o| o.into_iter().map(str::to_owned).collect()),
    };
    let all = n
        .coffer
        .apply(&runtime, resolve(None, "billing"))
        .await
        .unwrap();
    assert_eq!(secret_names(&all), ["A", "B"]);
    assert_eq!(all.run_id, None);
    assert_eq!(all.attempt, None);
    let some = n
        .coffer
        .apply(&runtime, resolve(Some(vec!["B"]), "billing"))
        .await
        .unwrap();
    assert_eq!(secret_names(&some), ["B"]);
    let undeclared = n
        .coffer
        .apply(&runtime, resolve(Some(vec!["C"]), "billing"))
        .await;
    assert!(
        matches!(undeclared, Err(CoreError::Invalid(_))),
        "{undeclared:?}"
    );
    let unknown = n.coffer.apply(&runtime, resolve(None, "nope")).await;
    assert!(
        matches!(unknown, Err(CoreError::FunctionNotFound { .. })),
        "{unknown:?}"
    );
}

/// Definitions are checked; registration shows the signing secret once; an update keeps
/// it; a deleted function's queued runs fail when they come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_are_checked_and_the_signing_secret_is_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let body = |secrets: Vec<&str>, mode, url: Option<&str>| coffer_wire::PutFunction {
        triggers: vec![coffer_wire::Trigger {
            event: "order.*".into(),
        }],
        secrets: secrets.into_iter().map(str::to_owned).collect(),
        config: vec![],
        mode,
        url: url.map(str::to_owned),
        timeout_ms: None,
        retries: None,
        concurrency: None,
        expected_revision: None,
    };
    use coffer_wire::FunctionMode::{Pull, Push};
    let put_fn = |id: &str, b| commands::PutFunction {
        env: env(),
        id: FunctionId::new(id).unwrap(),
        body: b,
    };
    for bad in [
        body(vec!["1BAD"], Pull, None),
        body(vec!["A", "A"], Pull, None),
        body(vec![], Push, None),
        body(vec![], Push, Some("http://192.0.2.1/hook")),
        body(vec![], Pull, Some("https://example.com/")),
    ] {
        let refused = n.coffer.apply(&admin(), put_fn("f", bad)).await;
        assert!(matches!(refused, Err(CoreError::Invalid(_))), "{refused:?}");
    }
    let created = n
        .coffer
        .apply(
            &admin(),
            put_fn("f", body(vec!["A"], Push, Some("http://127.0.0.1:9/hook"))),
        )
        .await
        .unwrap();
    assert!(created.created);
    let secret = created.signing_secret.expect("shown on registration");
    use secrecy::ExposeSecret;
    assert!(secret.expose_secret().starts_with("cs_"));
    assert_eq!(secret.expose_secret().len(), 46);
    let updated = n
        .coffer
        .apply(&admin(), put_fn("f", body(vec!["A", "B"], Pull, None)))
        .await
        .unwrap();
    assert!(updated.signing_secret.is_none(), "never shown again");
    assert_eq!(updated.function.record.revision, 2);
    assert_eq!(updated.function.spec.secrets, ["A", "B"]);

    let runtime = runtime_key(&*n.store, "ak_0e").await;
    let runs = send_event(&n.coffer, "order.created").await;
    let delete = commands::DeleteFunction {
        env: env(),
        id: FunctionId::new("f").unwrap(),
        expected_revision: None,
    };
    n.coffer.apply(&admin(), delete).await.unwrap();
    assert!(
        poll(&n.coffer, &runtime, &["f"], 30_000)
            .await
            .unwrap()
            .is_none()
    );
    let run = n.store.get_run(&env(), &runs[0]).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.unwrap().contains("deleted"));
}

/// What a local endpoint received: the signature check's result and the job.
#[derive(Default)]
pub(crate) struct Received {
    pub(crate) bodies: Vec<(bool, serde_json::Value)>,
}

/// The endpoint's state: what it received, what it answers next, the signing secret.
type EndpointState = (
    Arc<Mutex<Received>>,
    Arc<Mutex<Vec<u16>>>,
    Arc<Mutex<Option<String>>>,
);

/// A local HTTP endpoint answering the statuses in `answers` in turn (then 200), checking
/// each delivery's `Coffer-Signature` against the secret in `signing`.
pub(crate) async fn endpoint(
    answers: Vec<u16>,
    signing: Arc<Mutex<Option<String>>>,
) -> (String, Arc<Mutex<Received>>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let received = Arc::new(Mutex::new(Received::default()));
    let answers = Arc::new(Mutex::new(answers));
    let state = (received.clone(), answers, signing);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            |axum::extract::State((received, answers, signing)): axum::extract::State<
                EndpointState,
            >,
             headers: HeaderMap,
             body: Bytes| async move {
                let header = headers
                    .get(coffer_wire::signature::HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let secret = signing.lock().unwrap().clone().unwrap_or_default();
                let now = coffer_store::Timestamp::now().millis() / 1000;
                let ok = coffer_wire::signature::verify(
                    &header,
                    &[secret.as_bytes()],
                    &body,
                    now,
                    coffer_wire::signature::DEFAULT_TOLERANCE_SECS,
                )
                .is_ok();
                let job: serde_json::Value = serde_json::from_slice(&body).unwrap();
                received.lock().unwrap().bodies.push((ok, job));
                let status = {
                    let mut a = answers.lock().unwrap();
                    if a.is_empty() { 200 } else { a.remove(0) }
                };
                if !ok {
                    return (StatusCode::UNAUTHORIZED, "bad signature".to_owned());
                }
                (
                    StatusCode::from_u16(status).unwrap(),
                    json!({"charged": true, "echo": "sk-live-0123456789"}).to_string(),
                )
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.with_state(state)).await.unwrap();
    });
    (format!("http://{addr}/hook"), received)
}

pub(crate) async fn register_push(
    c: &coffer_core::Coffer,
    id: &str,
    url: &str,
    retries: u32,
) -> String {
    let body = coffer_wire::PutFunction {
        triggers: vec![coffer_wire::Trigger {
            event: "order.*".into(),
        }],
        secrets: vec!["STRIPE_KEY".into(), "UNSET".into()],
        config: vec![],
        mode: coffer_wire::FunctionMode::Push,
        url: Some(url.into()),
        timeout_ms: Some(5_000),
        retries: Some(retries),
        concurrency: None,
        expected_revision: None,
    };
    let command = commands::PutFunction {
        env: env(),
        id: FunctionId::new(id).unwrap(),
        body,
    };
    let out = c.apply(&admin(), command).await.unwrap();
    use secrecy::ExposeSecret;
    out.signing_secret.unwrap().expose_secret().to_owned()
}

/// Waits (bounded) until `run` has ended.
pub(crate) async fn ended(n: &Node, run: &RunId) -> coffer_store::RunRecord {
    for _ in 0..200 {
        let r = n.store.get_run(&env(), run).await.unwrap().unwrap();
        if r.status.is_final() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run} did not end within 10 s");
}

/// Push: the job is POSTed signed with the function's secret, carrying only the declared
/// secrets that are set; a 500 is retried, and the answer (redacted) is the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_delivery_is_signed_retried_after_a_500_and_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "STRIPE_KEY", "sk-live-0123456789")
        .await
        .unwrap();
    put(&n.coffer, "OTHER", "other-value-1").await.unwrap();
    let signing = Arc::new(Mutex::new(None));
    let (url, received) = endpoint(vec![500], signing.clone()).await;
    let secret = register_push(&n.coffer, "charge", &url, 3).await;
    *signing.lock().unwrap() = Some(secret);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = tokio::spawn(coffer_core::runtime::push::run(n.coffer.clone(), async {
        let _ = stopped.await;
    }));
    let runs = send_event(&n.coffer, "order.created").await;
    let run = ended(&n, &runs[0]).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.attempts, 2, "one retry after the 500");
    let output: serde_json::Value = serde_json::from_str(run.output.as_deref().unwrap()).unwrap();
    assert_eq!(output, json!({"charged": true, "echo": "********"}));
    let got = std::mem::take(&mut received.lock().unwrap().bodies);
    assert_eq!(got.len(), 2);
    for (i, (signed, job)) in got.iter().enumerate() {
        assert!(signed, "attempt {i}: the signature verifies");
        assert_eq!(job["runId"], runs[0].as_str());
        assert_eq!(job["attempt"], i + 1);
        assert_eq!(job["secrets"], json!({"STRIPE_KEY": "sk-live-0123456789"}));
        assert_eq!(job["event"]["name"], "order.created");
    }
    let _ = stop.send(());
    dispatcher.await.unwrap();
}

/// A gated endpoint's state: the run ids it received, and its gate.
type Gated = (Arc<Mutex<Vec<String>>>, Arc<tokio::sync::Semaphore>);

/// A local endpoint that records each delivery's run id and answers 200 only as `gate`
/// lets it (one permit per answer).
async fn gated_endpoint(gate: Arc<tokio::sync::Semaphore>) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state: Gated = (seen.clone(), gate);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            |axum::extract::State((seen, gate)): axum::extract::State<Gated>,
             body: axum::body::Bytes| async move {
                let job: serde_json::Value = serde_json::from_slice(&body).unwrap();
                seen.lock()
                    .unwrap()
                    .push(job["runId"].as_str().unwrap().to_owned());
                gate.acquire().await.unwrap().forget();
                "{}"
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.with_state(state)).await.unwrap();
    });
    (format!("http://{addr}/hook"), seen)
}

/// A send whose push run finds a free delivery slot inserts it leased and hands it to the
/// dispatcher (running as the send returns, leased by the send's own write); with every
/// slot taken, runs are queued and delivered in due order as slots free up; once the
/// dispatcher has leased the queue empty, sends hand their runs over again. (Which sends
/// queue behind a backlog: `push::tests`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_hand_push_runs_over_while_slots_are_free_and_queue_behind_a_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let (options, store) = options(dir.path(), ring(1, &[(1, K1)])).await;
    let (mut coffer, report) = options.start().await.unwrap();
    ensure_test_admin(&*store).await;
    coffer.set_runtime_options(coffer_core::runtime::RuntimeOptions {
        push_concurrency: 1,
        ..Default::default()
    });
    let n = Node {
        coffer: Arc::new(coffer),
        store,
        report,
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (url, seen) = gated_endpoint(gate.clone()).await;
    register_push(&n.coffer, "charge", &url, 0).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = tokio::spawn(coffer_core::runtime::push::run(n.coffer.clone(), async {
        let _ = stopped.await;
    }));
    let status = |id: RunId| {
        let store = n.store.clone();
        async move {
            let r = store.get_run(&env(), &id).await.unwrap().unwrap();
            (r.status, r.attempts)
        }
    };
    // Leased by its send: in the send's write (not by a lease of the dispatcher's after
    // it), for the dispatcher's 30 s.
    let handed_over = |id: RunId| {
        let store = n.store.clone();
        async move {
            let r = store.get_run(&env(), &id).await.unwrap().unwrap();
            (r.status, r.attempts) == (RunStatus::Running, 1)
                && r.updated_at == r.created_at
                && r.lease_expires_at == Some(r.created_at.after_millis(30_000))
        }
    };
    // Handed over: the send found the one slot free (not while the dispatcher's own idle
    // lease held it, nor before its first lease found the queue short).
    let mut first = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let run = send_event(&n.coffer, "order.created").await.remove(0);
        if handed_over(run.clone()).await {
            first = Some(run);
            break;
        }
        gate.add_permits(1);
        ended(&n, &run).await;
    }
    let first = first.expect("a send hands its run over while the slot is free");
    // Its delivery holds the only slot (the endpoint waits at the gate): the next runs
    // are queued, and delivered in due order as the slot frees up.
    let second = send_event(&n.coffer, "order.created").await.remove(0);
    assert_eq!(
        status(second.clone()).await,
        (RunStatus::Queued, 0),
        "no slot"
    );
    // Due order is by time, then by id (random within a millisecond).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = send_event(&n.coffer, "order.created").await.remove(0);
    assert_eq!(
        status(third.clone()).await,
        (RunStatus::Queued, 0),
        "no slot yet"
    );
    gate.add_permits(3);
    for run in [&first, &second, &third] {
        assert_eq!(ended(&n, run).await.status, RunStatus::Succeeded);
    }
    let order = seen.lock().unwrap().clone();
    assert_eq!(
        order[order.len() - 3..],
        [first.to_string(), second.to_string(), third.to_string()]
    );
    // Once a lease of the dispatcher finds fewer runs than it has slots, sends hand their
    // runs over again.
    let mut handed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let run = send_event(&n.coffer, "order.created").await.remove(0);
        gate.add_permits(1);
        let now = handed_over(run.clone()).await;
        ended(&n, &run).await;
        if now {
            handed = true;
            break;
        }
    }
    assert!(handed, "sends hand runs over again once the queue is empty");
    let _ = stop.send(());
    dispatcher.await.unwrap();
}

/// A 4xx is final: no retry; the run failed with the status in its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_answered_400_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "STRIPE_KEY", "sk-live-0123456789")
        .await
        .unwrap();
    let signing = Arc::new(Mutex::new(None));
    let (url, received) = endpoint(vec![400, 400], signing.clone()).await;
    let secret = register_push(&n.coffer, "charge", &url, 3).await;
    *signing.lock().unwrap() = Some(secret);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = tokio::spawn(coffer_core::runtime::push::run(n.coffer.clone(), async {
        let _ = stopped.await;
    }));
    let runs = send_event(&n.coffer, "order.created").await;
    let run = ended(&n, &runs[0]).await;
    assert_eq!((run.status, run.attempts), (RunStatus::Failed, 1));
    let error = run.error.unwrap();
    assert!(error.starts_with("HTTP 400"), "{error}");
    assert!(!error.contains("sk-live-0123456789"), "{error}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(received.lock().unwrap().bodies.len(), 1, "no retry");
    let _ = stop.send(());
    dispatcher.await.unwrap();
}
