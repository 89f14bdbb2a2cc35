//! The examples under `examples/`, run as their own processes against a real server.

use coffer_sdk::wire::{FunctionMode, PutFunction, RunStatus, Trigger};
use serde_json::json;

use crate::common::{Example, Server, ended, send};

#[tokio::test(flavor = "multi_thread")]
async fn the_pull_worker_example_processes_a_run_and_stops_on_ctrl_c() {
    let server = Server::start();
    let admin = server.admin();
    admin
        .set_secret(
            "default",
            "STRIPE_KEY",
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            None,
        )
        .await
        .unwrap();
    let runtime_key = server.runtime_key("default").await;
    let admin_key = server.admin_key();

    // The example registers its own definition (COFFER_MANAGE_KEY), then polls with the
    // runtime key.
    let mut worker = Example::start(
        "pull_worker",
        &[
            ("COFFER_ADDR", &server.base),
            ("COFFER_API_KEY", &runtime_key),
            ("COFFER_MANAGE_KEY", &admin_key),
        ],
    );
    worker.wait_line("registered function send-invoice in default");
    worker.wait_line("worker ready");
    let registered = admin.get_function("default", "send-invoice").await.unwrap();
    assert_eq!(registered.mode, FunctionMode::Pull);
    assert_eq!(registered.secrets, ["STRIPE_KEY", "SLACK_WEBHOOK"]);

    let id = send(
        &admin,
        "default",
        "order.created",
        json!({"orderId": "o-1", "amount": 1200}),
    )
    .await;
    let run = ended(&admin, "default", &id).await;
    assert_eq!(
        run.status,
        RunStatus::Succeeded,
        "{run:?}\n{}",
        server.log()
    );
    assert_eq!(
        run.output,
        Some(json!({
            "orderId": "o-1",
            "amount": 1200,
            "live": false,
            // Declared but not set: the handler degraded instead of failing.
            "notifiedSlack": false,
            "attempt": 1,
        }))
    );
    assert_eq!(run.attempts, 1);

    assert!(worker.interrupt(), "the worker exits cleanly on Ctrl-C");
    assert!(
        worker.seen.iter().any(|l| l == "stopped"),
        "{:?}",
        worker.seen
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pull_worker_example_fails_a_run_whose_required_secret_is_not_set() {
    let server = Server::start();
    let admin = server.admin();
    let runtime_key = server.runtime_key("default").await;
    let admin_key = server.admin_key();
    let mut worker = Example::start(
        "pull_worker",
        &[
            ("COFFER_ADDR", &server.base),
            ("COFFER_API_KEY", &runtime_key),
            ("COFFER_MANAGE_KEY", &admin_key),
        ],
    );
    worker.wait_line("worker ready");

    let id = send(
        &admin,
        "default",
        "order.created",
        json!({"orderId": "o-2"}),
    )
    .await;
    let run = ended(&admin, "default", &id).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.error.as_deref(),
        Some("secret STRIPE_KEY is declared but not set in this environment")
    );
    assert!(worker.interrupt());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_push_handler_example_receives_a_signed_delivery_and_coffer_records_its_output() {
    let server = Server::start();
    let admin = server.admin();
    admin
        .set_secret("default", "CARRIER_TOKEN", "tok_carrier_123456", None)
        .await
        .unwrap();
    admin
        .set_config("default", "carrier", &json!("dhl"), None)
        .await
        .unwrap();

    // The signing secret comes with the first registration; the endpoint's port is known
    // once the example runs, so the URL is set by a second PUT (which keeps the secret).
    let mut function = PutFunction {
        triggers: vec![Trigger {
            event: "order.shipped".into(),
        }],
        secrets: vec!["CARRIER_TOKEN".into()],
        config: vec!["carrier".into()],
        mode: FunctionMode::Push,
        url: Some("http://127.0.0.1:9/coffer".into()),
        timeout_ms: None,
        retries: Some(0),
        concurrency: None,
        expected_revision: None,
    };
    let registered = admin
        .put_function("default", "notify-shipping", &function)
        .await
        .unwrap();
    assert!(registered.created);
    let signing_secret = registered
        .value
        .signing_secret
        .expect("the first registration shows the signing secret")
        .expose()
        .to_owned();

    let mut endpoint = Example::start(
        "push_handler",
        &[
            ("COFFER_SIGNING_SECRETS", &signing_secret),
            ("LISTEN", "127.0.0.1:0"),
        ],
    );
    let line = endpoint.wait_line("listening on ");
    let url = line.trim_start_matches("listening on ").to_owned();
    function.url = Some(url);
    let updated = admin
        .put_function("default", "notify-shipping", &function)
        .await
        .unwrap();
    assert!(!updated.created);
    assert!(updated.value.signing_secret.is_none(), "shown once only");

    let id = send(
        &admin,
        "default",
        "order.shipped",
        json!({"orderId": "o-7"}),
    )
    .await;
    let run = ended(&admin, "default", &id).await;
    assert_eq!(
        run.status,
        RunStatus::Succeeded,
        "{run:?}\n{}",
        server.log()
    );
    assert_eq!(
        run.output,
        Some(json!({
            "orderId": "o-7",
            "carrier": "dhl",
            "authenticated": true,
            "runId": id,
        }))
    );
    assert!(endpoint.interrupt());
}
