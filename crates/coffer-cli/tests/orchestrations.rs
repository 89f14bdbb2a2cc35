//! Orchestrations end to end with the real binary: a run is killed (`kill -9`) in its
//! delay and resumes after the restart where it was — through its approval and a compute
//! step a pull worker runs over HTTP with the step's decrypted param — and the param's
//! plaintext and its sealed blob appear in no answer, event, audit row or server log.
//!
//! SQLite, or PostgreSQL with `COFFER_TEST_BACKEND=postgres` (see `runtime.rs`).

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::{ServerProcess, TestDb, http};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MASTER_KEY: &str = "5b1c9e0b2d4f6a8c1e3b5d7f9a0c2e4b6d8f1a3c5e7b9d0f2a4c6e8b1d3f5a7c";
const CANARY: &str = "orch-binary-canary-7Hq2";
const ENV: &str = "/v1/environments/default";

fn envs(db: &Option<TestDb>) -> Vec<(&'static str, &str)> {
    let mut envs = vec![("COFFER_MASTER_KEY", MASTER_KEY)];
    if let Some(db) = db {
        envs.push(("COFFER_DATABASE_URL", db.url.as_str()));
    }
    envs
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_in_its_delay_resumes_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = match std::env::var("COFFER_TEST_BACKEND").as_deref() {
        Ok("postgres") => Some(TestDb::create("orchestrations")),
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("COFFER_TEST_BACKEND={other}: sqlite or postgres"),
    };
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data, &envs(&db), &[]);
    let admin = server.admin_key();
    let http = http();
    let base = server.base.clone();
    let (status, f) = call(
        &http,
        &base,
        &admin,
        Method::PUT,
        &format!("{ENV}/functions/charge"),
        Some(json!({"triggers": [], "mode": "pull"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{f}");
    let (status, key) = call(
        &http,
        &base,
        &admin,
        Method::POST,
        "/v1/api-keys",
        Some(json!({"name": "worker", "role": "runtime", "environment": "default"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let worker = key["key"].as_str().unwrap().to_owned();
    let (status, o) = call(
        &http,
        &base,
        &admin,
        Method::POST,
        &format!("{ENV}/orchestrations"),
        Some(json!({"name": "resume", "steps": [
            {"id": "wait", "type": "delay", "durationMs": 3000},
            {"id": "ok", "type": "approval"},
            {"id": "pay", "type": "compute", "functionId": "charge",
             "params": {"currency": "eur"},
             "encryptedParams": {"TOKEN": {"value": CANARY, "encrypt": true}}}]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{o}");
    let id = o["id"].as_str().unwrap().to_owned();
    let (status, run) = call(
        &http,
        &base,
        &admin,
        Method::POST,
        &format!("{ENV}/orchestrations/{id}/runs"),
        Some(json!({"params": {"order": 7}})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let run_path = format!("{ENV}/orchestration-runs/{run_id}");
    until(
        "the run is in its delay",
        Duration::from_secs(10),
        || async {
            let (_, r) = call(&http, &base, &admin, Method::GET, &run_path, None).await;
            (r["steps"][0]["status"] == "running").then_some(())
        },
    )
    .await;
    // Killed in its delay: nothing is flushed, nothing is said.
    server.kill_9();
    let first_log = server.log();
    server = ServerProcess::start(&data, &envs(&db), &[]);
    let base = server.base.clone();
    let waiting = until(
        "the run waits for its approval",
        Duration::from_secs(20),
        || async {
            let (_, r) = call(&http, &base, &admin, Method::GET, &run_path, None).await;
            (r["status"] == "waiting_approval").then_some(r)
        },
    )
    .await;
    assert_eq!(waiting["currentStep"], "ok");
    assert_eq!(waiting["steps"][0]["status"], "succeeded");
    let (status, approved) = call(
        &http,
        &base,
        &admin,
        Method::POST,
        &format!("{run_path}/approve"),
        Some(json!({"reason": "after the restart"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let job = until(
        "the compute step's job",
        Duration::from_secs(20),
        || async {
            let (status, job) = call(
                &http,
                &base,
                &worker,
                Method::POST,
                &format!("{ENV}/workers/poll"),
                Some(json!({"functions": ["charge"], "waitMs": 1000})),
            )
            .await;
            (status == StatusCode::OK).then_some(job)
        },
    )
    .await;
    assert_eq!(
        job["triggerParams"],
        json!({"order": 7, "currency": "eur", "TOKEN": CANARY})
    );
    let function_run = job["runId"].as_str().unwrap().to_owned();
    let (status, done) = call(
        &http,
        &base,
        &worker,
        Method::POST,
        &format!("{ENV}/runs/{function_run}/complete"),
        Some(json!({"output": {"paid": true, "echo": CANARY}, "attempt": job["attempt"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["output"], json!({"paid": true, "echo": "********"}));
    let finished = until("the run ends", Duration::from_secs(20), || async {
        let (_, r) = call(&http, &base, &admin, Method::GET, &run_path, None).await;
        (r["status"] == "succeeded").then_some(r)
    })
    .await;
    assert_eq!(
        finished["steps"][2]["output"],
        json!({"paid": true, "echo": "********"})
    );
    assert_eq!(
        finished["steps"][1]["output"]["reason"],
        "after the restart"
    );

    // Nothing shows the plaintext or the stored blob: answers, events, audit, logs.
    let mut seen = format!("{o}{run}{waiting}{approved}{done}{finished}");
    let (_, got) = call(
        &http,
        &base,
        &admin,
        Method::GET,
        &format!("{ENV}/orchestrations/{id}"),
        None,
    )
    .await;
    assert_eq!(
        got["steps"][2]["encryptedParams"]["TOKEN"],
        json!({"value": "********", "encrypted": true})
    );
    seen.push_str(&got.to_string());
    let (_, audit) = call(
        &http,
        &base,
        &admin,
        Method::GET,
        "/v1/audit?limit=1000",
        None,
    )
    .await;
    seen.push_str(&audit.to_string());
    assert!(
        audit.to_string().contains("orchestration.run.approved"),
        "the approval is audited"
    );
    seen.push_str(&first_log);
    assert!(server.terminate(), "{}", server.log());
    seen.push_str(&server.log());
    assert!(!seen.contains(CANARY), "the plaintext leaked");
    assert!(!seen.contains("\"keyVersion\":1"), "a stored form leaked");
}
