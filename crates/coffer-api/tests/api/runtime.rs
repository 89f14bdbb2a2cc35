//! The runtime plane over HTTP: bad input gets a documented 4xx with a stable code and
//! changes nothing; answers that carry values are never cached; a signing secret is shown
//! once; events answer 202 with their runs; polls wait about `waitMs`; an `Idempotency-Key`
//! replays; functions and runs page with cursors.
//!
//! The in-process server runs no push dispatcher, so push runs stay queued here;
//! deliveries are tested against the real binary (`crates/coffer-cli/tests/runtime.rs`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Server, start};

const ENV: &str = "/v1/environments/default";

/// Registers function `id` in `default` with `body`; returns the answer.
async fn put_function(s: &Server, id: &str, body: Value) -> (StatusCode, Value) {
    s.admin(Method::PUT, &format!("{ENV}/functions/{id}"), Some(body))
        .await
}

/// A pull function of `default` triggered by `event`, declaring `secrets`.
async fn pull_function(s: &Server, id: &str, event: &str, secrets: &[&str]) -> Value {
    let body = json!({"triggers": [{"event": event}], "secrets": secrets, "mode": "pull"});
    let (status, f) = put_function(s, id, body).await;
    assert_eq!(status, StatusCode::CREATED, "{f}");
    f
}

/// Sends event `name` to `default` as admin; returns the answer.
async fn send(s: &Server, name: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = s
        .http
        .post(format!("{}{ENV}/events", s.base))
        .bearer_auth(&s.admin)
        .json(&json!({"name": name, "data": {"order": 7}}));
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// The ids of the runs in an event's 202 answer.
fn run_ids(accepted: &Value) -> BTreeSet<String> {
    accepted["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// What the runtime plane holds in `default`: every function and every run, whole.
async fn runtime_snapshot(s: &Server) -> Value {
    let (_, functions) = s
        .admin(Method::GET, &format!("{ENV}/functions?limit=1000"), None)
        .await;
    let (_, runs) = s
        .admin(Method::GET, &format!("{ENV}/runs?limit=1000"), None)
        .await;
    let (_, resolved) = s
        .admin(Method::GET, "/v1/audit?action=function.resolved", None)
        .await;
    json!({"functions": functions, "runs": runs, "resolved": resolved["entries"]})
}

struct Bad {
    what: &'static str,
    method: Method,
    path: String,
    /// The caller: `true` the runtime key of `default`, `false` the admin key.
    runtime: bool,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Option<String>,
    status: u16,
    code: &'static str,
}

fn bad(
    what: &'static str,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
    code: &'static str,
) -> Bad {
    Bad {
        what,
        method,
        path: path.to_owned(),
        runtime: false,
        headers: Vec::new(),
        body: body.map(|b| b.to_string()),
        status,
        code,
    }
}

/// The same, called with the environment's runtime key.
fn bad_rt(what: &'static str, path: &str, body: Value, status: u16, code: &'static str) -> Bad {
    Bad {
        runtime: true,
        ..bad(what, Method::POST, path, Some(body), status, code)
    }
}

#[tokio::test]
async fn bad_runtime_input_gets_the_documented_error_and_changes_nothing() {
    let s = start().await;
    let (_, runtime) = s.create_key("runtime", Some("default")).await;
    s.put_secret("default", "TOKEN", "tok-value-8c1d").await;
    pull_function(&s, "billing", "order.*", &["TOKEN"]).await;
    let (status, accepted) = send(&s, "order.created", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let queued = run_ids(&accepted).into_iter().next().unwrap();

    let f = |id: &str| format!("{ENV}/functions/{id}");
    let billing = f("billing");
    let pull = |extra: Value| {
        let mut body = json!({"triggers": [{"event": "order.created"}], "mode": "pull"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Some(body)
    };
    let push = |url: Option<&str>| {
        let mut body = json!({"triggers": [{"event": "order.created"}], "mode": "push"});
        if let Some(url) = url {
            body["url"] = json!(url);
        }
        Some(body)
    };
    let too_many: Vec<String> = (0..65).map(|i| format!("S{i}")).collect();
    let events = format!("{ENV}/events");
    let poll = format!("{ENV}/workers/poll");
    let unknown_run = "run_0123456789abcdef0123456789abcdef";
    let run = |id: &str, what: &str| format!("{ENV}/runs/{id}{what}");
    let mut cases = vec![
        // Function definitions.
        bad(
            "unknown field in a definition",
            Method::PUT,
            &billing,
            pull(json!({"colour": "red"})),
            400,
            "unknown_field",
        ),
        bad(
            "unknown field in a trigger",
            Method::PUT,
            &billing,
            Some(json!({"triggers": [{"event": "a", "when": 1}], "mode": "pull"})),
            400,
            "unknown_field",
        ),
        bad(
            "no mode",
            Method::PUT,
            &billing,
            Some(json!({"triggers": []})),
            400,
            "invalid_body",
        ),
        bad(
            "a mode that does not exist",
            Method::PUT,
            &billing,
            Some(json!({"mode": "both"})),
            400,
            "invalid_body",
        ),
        bad(
            "function id with capitals",
            Method::PUT,
            &f("Billing"),
            pull(json!({})),
            422,
            "invalid_name",
        ),
        bad(
            "function id starting with a dash",
            Method::PUT,
            &f("-billing"),
            pull(json!({})),
            422,
            "invalid_name",
        ),
        bad(
            "function id of 64 characters",
            Method::PUT,
            &f(&"a".repeat(64)),
            pull(json!({})),
            422,
            "invalid_name",
        ),
        bad(
            "function id with a dot",
            Method::GET,
            &f("a.b"),
            None,
            422,
            "invalid_name",
        ),
        bad(
            "trigger with an empty token",
            Method::PUT,
            &billing,
            pull(json!({"triggers": [{"event": "order..created"}]})),
            422,
            "invalid_value",
        ),
        bad(
            "trigger with '>' before its end",
            Method::PUT,
            &billing,
            pull(json!({"triggers": [{"event": "order.>.x"}]})),
            422,
            "invalid_value",
        ),
        bad(
            "empty trigger",
            Method::PUT,
            &billing,
            pull(json!({"triggers": [{"event": ""}]})),
            422,
            "invalid_value",
        ),
        bad(
            "push without a url",
            Method::PUT,
            &billing,
            push(None),
            422,
            "invalid_value",
        ),
        bad(
            "push to http:// on another host",
            Method::PUT,
            &billing,
            push(Some("http://example.com/hook")),
            422,
            "invalid_value",
        ),
        bad(
            "push to http:// on a private address",
            Method::PUT,
            &billing,
            push(Some("http://10.0.0.1/hook")),
            422,
            "invalid_value",
        ),
        bad(
            "push with credentials in the url",
            Method::PUT,
            &billing,
            push(Some("https://user:pw@example.com/hook")),
            422,
            "invalid_value",
        ),
        bad(
            "push to a relative url",
            Method::PUT,
            &billing,
            push(Some("/hook")),
            422,
            "invalid_value",
        ),
        bad(
            "pull with a url",
            Method::PUT,
            &billing,
            pull(json!({"url": "https://example.com/hook"})),
            422,
            "invalid_value",
        ),
        bad(
            "65 declared secrets",
            Method::PUT,
            &billing,
            pull(json!({"secrets": too_many})),
            422,
            "invalid_value",
        ),
        bad(
            "a declared secret that breaks the name rule",
            Method::PUT,
            &billing,
            pull(json!({"secrets": ["1BAD"]})),
            422,
            "invalid_value",
        ),
        bad(
            "a secret declared twice",
            Method::PUT,
            &billing,
            pull(json!({"secrets": ["TOKEN", "TOKEN"]})),
            422,
            "invalid_value",
        ),
        bad(
            "timeoutMs 0",
            Method::PUT,
            &billing,
            push(Some("https://example.com/hook")).map(|mut b| {
                b["timeoutMs"] = json!(0);
                b
            }),
            422,
            "invalid_value",
        ),
        bad(
            "retries over 10",
            Method::PUT,
            &billing,
            pull(json!({"retries": 11})),
            422,
            "invalid_value",
        ),
        bad(
            "concurrency 0",
            Method::PUT,
            &billing,
            pull(json!({"concurrency": 0})),
            422,
            "invalid_value",
        ),
        bad(
            "stale expectedRevision",
            Method::PUT,
            &billing,
            pull(json!({"expectedRevision": 7})),
            409,
            "revision_conflict",
        ),
        bad(
            "must not exist, but does",
            Method::PUT,
            &format!("{billing}?expectedRevision=0"),
            pull(json!({})),
            409,
            "revision_conflict",
        ),
        bad(
            "function in a missing environment",
            Method::PUT,
            "/v1/environments/nowhere/functions/billing",
            pull(json!({})),
            404,
            "environment_not_found",
        ),
        bad(
            "unknown function",
            Method::GET,
            &f("nope"),
            None,
            404,
            "function_not_found",
        ),
        bad(
            "deleting an unknown function",
            Method::DELETE,
            &f("nope"),
            None,
            404,
            "function_not_found",
        ),
        bad(
            "stale delete",
            Method::DELETE,
            &format!("{billing}?expectedRevision=9"),
            None,
            409,
            "revision_conflict",
        ),
        bad(
            "rotating the signing secret of an unknown function",
            Method::POST,
            &format!("{}/signing-secret", f("nope")),
            None,
            404,
            "function_not_found",
        ),
        bad(
            "a grace period over 30 days",
            Method::POST,
            &format!("{billing}/signing-secret"),
            Some(json!({"graceMs": 30u64 * 24 * 3600 * 1000 + 1})),
            422,
            "invalid_value",
        ),
        bad(
            "unknown field in a rotation",
            Method::POST,
            &format!("{billing}/signing-secret"),
            Some(json!({"grace": 1})),
            400,
            "unknown_field",
        ),
        bad(
            "functions page of 0",
            Method::GET,
            &format!("{ENV}/functions?limit=0"),
            None,
            400,
            "invalid_query",
        ),
        bad(
            "forged functions cursor",
            Method::GET,
            &format!("{ENV}/functions?cursor=%21%21"),
            None,
            400,
            "invalid_query",
        ),
        // Events.
        bad(
            "event name with an empty token",
            Method::POST,
            &events,
            Some(json!({"name": "order..created"})),
            422,
            "invalid_value",
        ),
        bad(
            "event name with a wildcard",
            Method::POST,
            &events,
            Some(json!({"name": "order.*"})),
            422,
            "invalid_value",
        ),
        bad(
            "event name with a space",
            Method::POST,
            &events,
            Some(json!({"name": "order created"})),
            422,
            "invalid_value",
        ),
        bad(
            "event name of 256 characters",
            Method::POST,
            &events,
            Some(json!({"name": "e".repeat(256)})),
            422,
            "invalid_value",
        ),
        bad(
            "event data over 64 KiB",
            Method::POST,
            &events,
            Some(json!({"name": "order.created", "data": {"blob": "d".repeat(65 * 1024)}})),
            413,
            "value_too_large",
        ),
        bad(
            "unknown field in an event",
            Method::POST,
            &events,
            Some(json!({"name": "order.created", "payload": {}})),
            400,
            "unknown_field",
        ),
        bad(
            "event without a name",
            Method::POST,
            &events,
            Some(json!({"data": 1})),
            400,
            "invalid_body",
        ),
        bad(
            "event to a missing environment",
            Method::POST,
            "/v1/environments/nowhere/events",
            Some(json!({"name": "order.created"})),
            404,
            "environment_not_found",
        ),
        // Runs.
        bad(
            "malformed run id",
            Method::GET,
            &run("not-a-run", ""),
            None,
            422,
            "invalid_name",
        ),
        bad(
            "run id with too few digits",
            Method::GET,
            &run("run_0123", ""),
            None,
            422,
            "invalid_name",
        ),
        bad(
            "unknown run",
            Method::GET,
            &run(unknown_run, ""),
            None,
            404,
            "run_not_found",
        ),
        bad(
            "runs filtered by a status that does not exist",
            Method::GET,
            &format!("{ENV}/runs?status=lost"),
            None,
            400,
            "invalid_query",
        ),
        bad(
            "runs page over 1000",
            Method::GET,
            &format!("{ENV}/runs?limit=1001"),
            None,
            400,
            "invalid_query",
        ),
        bad(
            "forged runs cursor",
            Method::GET,
            &format!("{ENV}/runs?cursor=%21%21"),
            None,
            400,
            "invalid_query",
        ),
        // The runtime routes, with the runtime key.
        bad_rt(
            "poll waiting over 30 s",
            &poll,
            json!({"functions": ["billing"], "waitMs": 30_001}),
            422,
            "invalid_value",
        ),
        bad_rt(
            "poll for no function",
            &poll,
            json!({"functions": []}),
            422,
            "invalid_value",
        ),
        bad_rt(
            "poll for a malformed function id",
            &poll,
            json!({"functions": ["Not Valid"]}),
            422,
            "invalid_value",
        ),
        bad_rt(
            "poll with a lease under 1 s",
            &poll,
            json!({"functions": ["billing"], "leaseMs": 999}),
            422,
            "invalid_value",
        ),
        bad_rt(
            "poll with an unknown field",
            &poll,
            json!({"functions": ["billing"], "timeout": 5}),
            400,
            "unknown_field",
        ),
        bad_rt(
            "complete with output and error",
            &run(&queued, "/complete"),
            json!({"output": 1, "error": "no"}),
            422,
            "invalid_value",
        ),
        bad_rt(
            "complete with neither output nor error",
            &run(&queued, "/complete"),
            json!({"attempt": 1}),
            422,
            "invalid_value",
        ),
        bad_rt(
            "complete a malformed run id",
            &run("run_xyz", "/complete"),
            json!({"output": 1}),
            422,
            "invalid_name",
        ),
        bad_rt(
            "complete an unknown run",
            &run(unknown_run, "/complete"),
            json!({"output": 1}),
            404,
            "run_not_found",
        ),
        bad_rt(
            "complete a run no worker holds",
            &run(&queued, "/complete"),
            json!({"output": 1}),
            409,
            "lease_lost",
        ),
        bad_rt(
            "heartbeat without an attempt",
            &run(&queued, "/heartbeat"),
            json!({"leaseMs": 5000}),
            400,
            "invalid_body",
        ),
        bad_rt(
            "heartbeat with a lease under 1 s",
            &run(&queued, "/heartbeat"),
            json!({"attempt": 1, "leaseMs": 10}),
            422,
            "invalid_value",
        ),
        bad_rt(
            "heartbeat of an unknown run",
            &run(unknown_run, "/heartbeat"),
            json!({"attempt": 1}),
            404,
            "run_not_found",
        ),
        bad_rt(
            "resolve an unknown function",
            &format!("{}/resolve", f("nope")),
            json!({}),
            404,
            "function_not_found",
        ),
        bad_rt(
            "resolve a secret the function does not declare",
            &format!("{billing}/resolve"),
            json!({"only": ["OTHER"]}),
            422,
            "invalid_value",
        ),
        bad_rt(
            "resolve with an unknown field",
            &format!("{billing}/resolve"),
            json!({"secrets": ["TOKEN"]}),
            400,
            "unknown_field",
        ),
    ];
    // An Idempotency-Key is 1-255 visible ASCII characters.
    for (what, key) in [
        ("empty Idempotency-Key", b"".to_vec()),
        ("Idempotency-Key with a space", b"order 42".to_vec()),
        ("Idempotency-Key of 256 characters", vec![b'k'; 256]),
        (
            "Idempotency-Key that is not ASCII",
            "clé".as_bytes().to_vec(),
        ),
    ] {
        let mut case = bad(
            what,
            Method::POST,
            &events,
            Some(json!({"name": "order.created"})),
            422,
            "invalid_value",
        );
        case.headers.push(("idempotency-key", key));
        cases.push(case);
    }

    let before = runtime_snapshot(&s).await;
    let secrets_before = s.snapshot().await;
    let mut failures = Vec::new();
    for case in cases {
        let key = if case.runtime { &runtime } else { &s.admin };
        let mut req = s
            .http
            .request(case.method.clone(), format!("{}{}", s.base, case.path))
            .bearer_auth(key);
        for (name, value) in &case.headers {
            let value = reqwest::header::HeaderValue::from_bytes(value).unwrap();
            req = req.header(*name, value);
        }
        if let Some(body) = case.body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != case.status || body["error"]["code"] != case.code {
            failures.push(format!(
                "{}: expected {} {}, got {status} {text:.300}",
                case.what, case.status, case.code
            ));
        }
        if body["error"]["message"].as_str().is_none_or(str::is_empty) {
            failures.push(format!("{}: no error message", case.what));
        }
        if text.contains("tok-value-8c1d") || text.contains("ddddddddd") {
            failures.push(format!("{}: the answer echoes a value", case.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        runtime_snapshot(&s).await,
        before,
        "bad input changed a function, a run or the resolution log"
    );
    assert_eq!(s.snapshot().await, secrets_before);
}

#[tokio::test]
async fn answers_that_carry_a_value_or_a_signing_secret_are_never_cached() {
    let s = start().await;
    let (_, runtime) = s.create_key("runtime", Some("default")).await;
    s.put_secret("default", "TOKEN", "tok-value-8c1d").await;
    let no_store = |resp: &reqwest::Response| {
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = json!({"triggers": [{"event": "order.*"}], "secrets": ["TOKEN"], "mode": "pull"});
    let resp = s
        .http
        .put(format!("{}{ENV}/functions/billing", s.base))
        .bearer_auth(&s.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(no_store(&resp).as_deref(), Some("no-store"), "registration");
    let resp = s
        .http
        .post(format!("{}{ENV}/functions/billing/signing-secret", s.base))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(no_store(&resp).as_deref(), Some("no-store"), "rotation");

    let (status, _) = send(&s, "order.created", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let resp = s
        .http
        .post(format!("{}{ENV}/workers/poll", s.base))
        .bearer_auth(&runtime)
        .json(&json!({"functions": ["billing"], "waitMs": 5000}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(no_store(&resp).as_deref(), Some("no-store"), "poll");
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["secrets"], json!({"TOKEN": "tok-value-8c1d"}));

    let resp = s
        .http
        .post(format!("{}{ENV}/functions/billing/resolve", s.base))
        .bearer_auth(&runtime)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(no_store(&resp).as_deref(), Some("no-store"), "resolve");
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["secrets"], json!({"TOKEN": "tok-value-8c1d"}));
    assert!(job.get("runId").is_none() && job.get("attempt").is_none());
}

#[tokio::test]
async fn a_signing_secret_is_shown_at_registration_and_rotation_only() {
    let s = start().await;
    let hook = "https://127.0.0.1:9/charge";
    let body = |secrets: &[&str]| json!({"triggers": [{"event": "order.*"}], "secrets": secrets, "mode": "push", "url": hook});
    let (status, created) = put_function(&s, "charge", body(&["A"])).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first = created["signingSecret"].as_str().unwrap().to_owned();
    assert!(first.starts_with("cs_") && first.len() == 46, "{first}");
    assert_eq!(created["revision"], 1);
    assert_eq!(created["url"], hook);

    let path = format!("{ENV}/functions/charge");
    let (status, updated) = put_function(&s, "charge", body(&["A", "B"])).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["secrets"], json!(["A", "B"]));
    let (_, got) = s.admin(Method::GET, &path, None).await;
    let (_, list) = s
        .admin(Method::GET, &format!("{ENV}/functions"), None)
        .await;
    for (what, answer) in [("200 PUT", &updated), ("GET", &got), ("list", &list)] {
        assert!(!answer.to_string().contains(&first), "{what}: {answer}");
        assert!(!answer.to_string().contains("signingSecret\""), "{what}");
    }
    assert!(got.get("signingSecret").is_none());
    assert!(got.get("previousSigningSecretUntil").is_none());

    let (status, rotated) = s
        .admin(
            Method::POST,
            &format!("{path}/signing-secret"),
            Some(json!({"graceMs": 60000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["signingSecret"].as_str().unwrap().to_owned();
    assert!(second.starts_with("cs_") && second.len() == 46);
    assert_ne!(second, first, "a rotation makes a new secret");
    assert_eq!(rotated["revision"], 3);
    assert!(
        rotated["previousSigningSecretUntil"].is_string(),
        "{rotated}"
    );

    let (_, got) = s.admin(Method::GET, &path, None).await;
    let (_, list) = s
        .admin(Method::GET, &format!("{ENV}/functions"), None)
        .await;
    let (_, audit) = s.admin(Method::GET, "/v1/audit?limit=1000", None).await;
    for (what, answer) in [("GET", &got), ("list", &list), ("audit", &audit)] {
        let text = answer.to_string();
        assert!(
            !text.contains(&first) && !text.contains(&second),
            "{what}: {text:.500}"
        );
    }
    assert!(got.get("signingSecret").is_none(), "{got}");
    assert_eq!(
        got["previousSigningSecretUntil"],
        rotated["previousSigningSecretUntil"]
    );
}

#[tokio::test]
async fn an_event_answers_202_with_a_queued_run_per_matching_function() {
    let s = start().await;
    pull_function(&s, "billing", "order.*", &[]).await;
    pull_function(&s, "audit-trail", "order.>", &[]).await;
    pull_function(&s, "shipping", "order.shipped", &[]).await;
    let (status, push) = put_function(
        &s,
        "notify",
        json!({"triggers": [{"event": "order.created"}], "mode": "push", "url": "http://127.0.0.1:9/hook"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{push}");

    let (status, accepted) = send(&s, "order.created", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let mut functions: Vec<&str> = accepted["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["functionId"].as_str().unwrap())
        .collect();
    functions.sort();
    assert_eq!(functions, ["audit-trail", "billing", "notify"]);
    for r in accepted["runs"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        assert!(id.starts_with("run_"), "{id}");
        let (status, run) = s
            .admin(Method::GET, &format!("{ENV}/runs/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        assert_eq!(run["id"], id);
        assert_eq!(run["functionId"], r["functionId"]);
        assert_eq!(run["environment"], "default");
        assert_eq!(run["status"], "queued");
        assert_eq!(run["attempts"], 0);
        assert_eq!(run["event"], "order.created");
        assert!(run.get("output").is_none() && run.get("error").is_none());
    }

    let (status, deep) = send(&s, "order.item.added", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(deep["runs"].as_array().unwrap().len(), 1, "only order.>");
    assert_eq!(deep["runs"][0]["functionId"], "audit-trail");
    let (status, none) = send(&s, "invoice.paid", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(none, json!({"runs": []}), "an event nobody listens to");
}

#[tokio::test]
async fn a_poll_waits_about_wait_ms_then_answers_204_or_takes_a_run_sent_meanwhile() {
    let s = start().await;
    let (_, runtime) = s.create_key("runtime", Some("default")).await;
    pull_function(&s, "billing", "order.*", &[]).await;
    let poll = |wait: u64| {
        s.http
            .post(format!("{}{ENV}/workers/poll", s.base))
            .bearer_auth(&runtime)
            .json(&json!({"functions": ["billing"], "waitMs": wait}))
            .send()
    };
    let began = Instant::now();
    let resp = poll(0).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "waitMs 0 does not wait"
    );
    assert!(resp.bytes().await.unwrap().is_empty());

    let began = Instant::now();
    let resp = poll(700).await.unwrap();
    let waited = began.elapsed();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(2500),
        "waited {waited:?} for a 700 ms poll"
    );

    // A run sent while a poll waits is handed to it well before the wait ends.
    let began = Instant::now();
    let waiting = tokio::spawn(poll(20_000));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, accepted) = send(&s, "order.created", None).await;
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["runId"], accepted["runs"][0]["id"]);
    assert_eq!(job["attempt"], 1);
    assert_eq!(
        job["event"],
        json!({"name": "order.created", "data": {"order": 7}})
    );
}

#[tokio::test]
async fn a_replayed_idempotency_key_answers_the_first_runs_and_starts_none() {
    let s = start().await;
    pull_function(&s, "billing", "order.*", &[]).await;
    pull_function(&s, "shipping", "order.created", &[]).await;
    let (status, first) = send(&s, "order.created", Some("order-42")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["runs"].as_array().unwrap().len(), 2);
    let (status, again) = send(&s, "order.created", Some("order-42")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(run_ids(&again), run_ids(&first));
    let (_, runs) = s.admin(Method::GET, &format!("{ENV}/runs"), None).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "no second run");

    let (_, other) = send(&s, "order.created", Some("order-43")).await;
    assert!(run_ids(&other).is_disjoint(&run_ids(&first)));
    let (_, unkeyed) = send(&s, "order.created", None).await;
    assert_eq!(unkeyed["runs"].as_array().unwrap().len(), 2);
    let (_, runs) = s.admin(Method::GET, &format!("{ENV}/runs"), None).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn functions_and_runs_page_through_every_item_once() {
    let s = start().await;
    let mut ids: Vec<String> = (0..7).map(|i| format!("fn-{}", 7 - i)).collect();
    for id in &ids {
        pull_function(&s, id, "tick", &[]).await;
    }
    pull_function(&s, "other", "tock", &[]).await;
    ids.push("other".into());
    ids.sort();
    let pages = |path: String, field: &'static str| {
        let s = &s;
        async move {
            let mut items = Vec::new();
            let mut sizes = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut url = path.clone();
                if let Some(c) = &cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let (status, page) = s.admin(Method::GET, &url, None).await;
                assert_eq!(status, StatusCode::OK, "{url}: {page}");
                let got = page[field].as_array().unwrap().clone();
                sizes.push(got.len());
                items.extend(got);
                match page["nextCursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            (items, sizes)
        }
    };
    let (functions, sizes) = pages(format!("{ENV}/functions?limit=3"), "functions").await;
    let seen: Vec<&str> = functions
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ids, "id order, each once");
    assert_eq!(sizes, [3, 3, 2]);

    let mut sent = Vec::new();
    for _ in 0..5 {
        let (_, accepted) = send(&s, "tick", None).await;
        sent.extend(run_ids(&accepted));
    }
    send(&s, "tock", None).await;
    let (runs, sizes) = pages(format!("{ENV}/runs?limit=4"), "runs").await;
    assert_eq!(runs.len(), 36);
    assert_eq!(sizes, [4, 4, 4, 4, 4, 4, 4, 4, 4]);
    let seen: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 36, "no run twice");
    let mut newest_first = seen.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, newest_first, "newest first");

    let (of_one, _) = pages(format!("{ENV}/runs?functionId=fn-3&limit=2"), "runs").await;
    assert_eq!(of_one.len(), 5);
    assert!(of_one.iter().all(|r| r["functionId"] == "fn-3"));
    let (queued, _) = pages(format!("{ENV}/runs?status=queued&limit=10"), "runs").await;
    assert_eq!(queued.len(), 36);
    let (done, _) = pages(format!("{ENV}/runs?status=succeeded&limit=10"), "runs").await;
    assert!(done.is_empty());
}

/// A page of runs carries at most about 256 KiB of outputs, whatever `limit` asks: it
/// ends after the run that takes it there, with a cursor, and the cursor leads to the rest.
#[tokio::test]
async fn a_page_of_runs_ends_after_256_kib_of_outputs() {
    let s = start().await;
    pull_function(&s, "big", "tick", &[]).await;
    let (_, runtime) = s.create_key("runtime", Some("default")).await;
    let mut completed = BTreeSet::new();
    for i in 0..5 {
        send(&s, "tick", None).await;
        let (status, job) = s
            .call(
                Some(&runtime),
                Method::POST,
                &format!("{ENV}/workers/poll"),
                Some(json!({"functions": ["big"], "waitMs": 0})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{job}");
        let id = job["runId"].as_str().unwrap().to_owned();
        // 100,000 bytes of output each: two make 200,000 bytes, three pass 256 KiB.
        let output = json!({"i": i, "pad": "p".repeat(100_000 - 20)});
        let (status, body) = s
            .call(
                Some(&runtime),
                Method::POST,
                &format!("{ENV}/runs/{id}/complete"),
                Some(json!({ "output": output })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        completed.insert(id);
    }
    let pages = s.pages(&format!("{ENV}/runs?limit=1000"), "runs").await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    let mut seen = BTreeSet::new();
    for r in pages.iter().flatten() {
        assert_eq!(r["output"]["pad"].as_str().map(str::len), Some(99_980));
        assert!(seen.insert(r["id"].as_str().unwrap().to_owned()), "once");
    }
    assert_eq!(sizes, [3, 2], "the first page ends past 256 KiB of outputs");
    assert_eq!(seen, completed);
}
