//! The pull worker in this process against a real server: declarations, heartbeats, the
//! concurrency bound, graceful shutdown, failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coffer_sdk::wire::{FunctionMode, PutFunction, RunStatus, Trigger};
use coffer_sdk::{Client, HandlerError, SecretError, Worker, function};
use serde_json::{Value, json};
use tokio::sync::{Barrier, oneshot};

use crate::common::{Server, ended, send};

/// Registers `id` as a pull function triggered by `id.run`, declaring `secrets` on the
/// server's side (which may differ from what the code declares).
async fn register(admin: &Client, id: &str, secrets: &[&str]) {
    let put = PutFunction {
        triggers: vec![Trigger {
            event: format!("{id}.run"),
        }],
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        config: vec![],
        mode: FunctionMode::Pull,
        url: None,
        timeout_ms: None,
        retries: None,
        concurrency: None,
        expected_revision: None,
    };
    admin.put_function("default", id, &put).await.unwrap();
}

/// Starts `worker` on a task; the sender stops it.
fn spawn(
    worker: Worker,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), coffer_sdk::Error>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_tells_undeclared_from_missing_in_a_real_run() {
    let server = Server::start();
    let admin = server.admin();
    // The server hands the run A and C (set), not B (not set); the code declares A and B
    // only, so C stays out of reach.
    register(&admin, "probe", &["A", "B", "C"]).await;
    for (name, value) in [("A", "value-of-a"), ("C", "value-of-c")] {
        admin
            .set_secret("default", name, value, None)
            .await
            .unwrap();
    }
    let def = function("probe").secrets(["A", "B"]);
    let worker =
        Worker::new(server.runtime("default").await, "default").function(def, |ctx| async move {
            let kind = |r: Result<&str, SecretError>| match r {
                Ok(v) => format!("set ({} bytes)", v.len()),
                Err(SecretError::Missing(_)) => "missing".into(),
                Err(SecretError::Undeclared(_)) => "undeclared".into(),
            };
            Ok(json!({
                "A": kind(ctx.secrets.get("A")),
                "B": kind(ctx.secrets.get("B")),
                "C": kind(ctx.secrets.get("C")),
                "has": [ctx.secrets.has("A"), ctx.secrets.has("B"), ctx.secrets.has("C")],
            }))
        });
    let (stop, task) = spawn(worker);
    let id = send(&admin, "default", "probe.run", json!({})).await;
    let run = ended(&admin, "default", &id).await;
    assert_eq!(
        run.output,
        Some(json!({
            "A": "set (10 bytes)",
            "B": "missing",
            "C": "undeclared",
            "has": [true, false, false],
        })),
        "{run:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_keep_a_run_longer_than_its_lease_with_its_worker() {
    let server = Server::start();
    let admin = server.admin();
    register(&admin, "slow", &[]).await;
    // The lease is 2 s and the handler takes 5: without heartbeats the run would go back
    // to the queue, come again as attempt 2 (this worker keeps polling), and attempt 1's
    // completion would be refused.
    let worker = Worker::new(server.runtime("default").await, "default")
        .lease(Duration::from_secs(2))
        .function(function("slow"), |ctx| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(json!({"attempt": ctx.attempt}))
        });
    let (stop, task) = spawn(worker);
    let id = send(&admin, "default", "slow.run", json!({})).await;
    let run = ended(&admin, "default", &id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.attempts, 1);
    assert_eq!(run.output, Some(json!({"attempt": 1})));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_runs_at_most_its_concurrency_at_once() {
    let server = Server::start();
    let admin = server.admin();
    register(&admin, "bounded", &[]).await;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    // Each run waits for a second one to be in flight: with a bound of 1 they would wait
    // forever (and the test time out); with 2, they pass in pairs.
    let pair = Arc::new(Barrier::new(2));
    let (in_flight2, most2) = (in_flight.clone(), most.clone());
    let worker = Worker::new(server.runtime("default").await, "default")
        .concurrency(2)
        .function(function("bounded"), move |_| {
            let (in_flight, most, pair) = (in_flight2.clone(), most2.clone(), pair.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                pair.wait().await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(json!({}))
            }
        });
    let (stop, task) = spawn(worker);
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(send(&admin, "default", "bounded.run", json!({})).await);
    }
    for id in &ids {
        let run = ended(&admin, "default", id).await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    assert_eq!(most.load(Ordering::SeqCst), 2);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_stops_polling_and_finishes_the_runs_in_flight() {
    let server = Server::start();
    let admin = server.admin();
    register(&admin, "graceful", &[]).await;
    let (started_tx, started) = oneshot::channel::<()>();
    let (release, released) = oneshot::channel::<()>();
    let hooks = Arc::new(std::sync::Mutex::new(Some((started_tx, released))));
    let worker = Worker::new(server.runtime("default").await, "default").function(
        function("graceful"),
        move |ctx| {
            let hooks = hooks.lock().unwrap().take();
            async move {
                if let Some((started, released)) = hooks {
                    let _ = started.send(());
                    let _ = released.await;
                }
                Ok(json!({"run": ctx.run_id}))
            }
        },
    );
    let (stop, task) = spawn(worker);
    let first = send(&admin, "default", "graceful.run", json!({})).await;
    started.await.unwrap();

    // Shut down while the run is in flight: the worker stops polling but waits for it.
    stop.send(()).unwrap();
    let second = send(&admin, "default", "graceful.run", json!({})).await;
    assert!(!task.is_finished());
    release.send(()).unwrap();
    task.await.unwrap().unwrap();

    // By the time `run` returned, the run in flight was completed...
    let run = admin.get_run("default", &first).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.output, Some(json!({"run": first})));
    // ...and the one sent after the shutdown was never taken.
    let run = admin.get_run("default", &second).await.unwrap();
    assert_eq!(run.status, RunStatus::Queued, "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_error_or_panic_fails_the_run_with_its_message() {
    let server = Server::start();
    let admin = server.admin();
    register(&admin, "flaky", &[]).await;
    let worker = Worker::new(server.runtime("default").await, "default").function(
        function("flaky"),
        |ctx| async move {
            match ctx.event.data["mode"].as_str() {
                Some("panic") => panic!("handler bug"),
                _ => Err(HandlerError::new("the upstream API said no")),
            }
        },
    );
    let (stop, task) = spawn(worker);
    let error = send(&admin, "default", "flaky.run", json!({"mode": "error"})).await;
    let panic = send(&admin, "default", "flaky.run", json!({"mode": "panic"})).await;
    let run = ended(&admin, "default", &error).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("the upstream API said no"));
    let run = ended(&admin, "default", &panic).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("the handler panicked"));
    // The worker survived both.
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_may_return_any_json_as_the_output() {
    let server = Server::start();
    let admin = server.admin();
    register(&admin, "shapes", &[]).await;
    let worker = Worker::new(server.runtime("default").await, "default")
        .function(function("shapes"), |ctx| async move {
            Ok(ctx.event.data["out"].clone())
        });
    let (stop, task) = spawn(worker);
    for out in [
        json!({"a": 1}),
        json!([1, 2]),
        json!("text"),
        json!(0),
        json!(false),
    ] {
        let id = send(&admin, "default", "shapes.run", json!({ "out": out })).await;
        let run = ended(&admin, "default", &id).await;
        assert_eq!(run.status, RunStatus::Succeeded, "{out}: {run:?}");
        assert_eq!(run.output, Some(out));
    }
    // `null` is an output like any other.
    let id = send(&admin, "default", "shapes.run", json!({ "out": null })).await;
    let run = ended(&admin, "default", &id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.output, Some(json!(null)));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_the_server_refuses_fails_the_run_instead_of_leaving_it_leased() {
    let server = Server::start();
    let admin = server.admin();
    register(&admin, "huge", &[]).await;
    let worker = Worker::new(server.runtime("default").await, "default")
        .function(function("huge"), |_| async {
            Ok(json!("x".repeat(2 << 20)))
        });
    let (stop, task) = spawn(worker);
    let id = send(&admin, "default", "huge.run", json!({})).await;
    let run = ended(&admin, "default", &id).await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap_or_default();
    assert!(
        error.starts_with("the handler's output was refused: body_too_large"),
        "{error}"
    );
    assert_eq!(run.attempts, 1);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_key_may_not_poll_stops_with_the_servers_403() {
    let server = Server::start();
    let admin = server.admin();
    register(&admin, "denied", &[]).await;
    // An admin key manages everything but never obtains a value.
    let worker =
        Worker::new(admin, "default").function(function("denied"), |_| async { Ok(Value::Null) });
    let e = worker.run(std::future::pending()).await.unwrap_err();
    assert_eq!(e.status(), Some(http::StatusCode::FORBIDDEN));
    assert_eq!(e.code(), Some("forbidden"));
}

#[tokio::test]
async fn a_worker_without_functions_is_a_usage_error() {
    let client = Client::new("http://127.0.0.1:1", "ck_default_x").unwrap();
    let e = Worker::new(client, "default")
        .run(std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(e, coffer_sdk::Error::Usage(_)), "{e}");
}
