//! The runtime plane end to end with the real binary: `coffer serve` pushes signed jobs to
//! a local endpoint (which checks `Coffer-Signature` with the secret returned at
//! registration), retries after a 5xx and not after a 4xx, delivers runs queued across a
//! restart; pull workers over HTTP get each run once and lose an expired lease; every
//! resolution is audited without a value; values are read at delivery.
//!
//! The server keeps its catalog in SQLite; with `COFFER_TEST_BACKEND=postgres` (and
//! `COFFER_TEST_DATABASE_URL`, see `scripts/postgres.sh`) in a PostgreSQL database of each
//! test's own, so the same suite runs on both backends.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as EndpointStatus};
use common::{ServerProcess, TestDb, http};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MASTER_KEY: &str = "7a1c9e0b2d4f6a8c1e3b5d7f9a0c2e4b6d8f1a3c5e7b9d0f2a4c6e8b1d3f5a7c";

/// A `coffer serve` in a temp dir, with an HTTP client for its API.
struct Coffer {
    process: ServerProcess,
    /// The PostgreSQL database, dropped after the server stopped (fields drop in order).
    _db: Option<TestDb>,
    admin: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Coffer {
    fn start() -> Coffer {
        let dir = tempfile::tempdir().unwrap();
        let db = match std::env::var("COFFER_TEST_BACKEND").as_deref() {
            Ok("postgres") => Some(TestDb::create("runtime")),
            Ok("sqlite") | Err(_) => None,
            Ok(other) => panic!("COFFER_TEST_BACKEND={other}: sqlite or postgres"),
        };
        let process = ServerProcess::start(&dir.path().join("data"), &envs(&db), &[]);
        Coffer {
            admin: process.admin_key(),
            process,
            _db: db,
            http: http(),
            _dir: dir,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.process.data_dir.clone()
    }

    /// SIGTERM, a clean exit, then a new `coffer serve` on the same data dir (and database).
    fn restart(&mut self) {
        assert!(self.process.terminate(), "{}", self.process.log());
        self.process = ServerProcess::start(&self.data_dir(), &envs(&self._db), &[]);
    }

    async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.process.base))
            .bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(&self.admin.clone(), method, path, body).await
    }

    async fn put_secret(&self, name: &str, value: &str) {
        let path = format!("/v1/environments/default/secrets/{name}");
        let (status, body) = self
            .admin(Method::PUT, &path, Some(json!({"value": value})))
            .await;
        assert!(status.is_success(), "{status} {body}");
    }

    /// A runtime key of `default`: (its id, the key).
    async fn runtime_key(&self, name: &str) -> (String, String) {
        let body = json!({"name": name, "role": "runtime", "environment": "default"});
        let (status, key) = self.admin(Method::POST, "/v1/api-keys", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        (
            key["id"].as_str().unwrap().to_owned(),
            key["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Registers function `id` in `default`; returns its signing secret.
    async fn register(&self, id: &str, body: Value) -> String {
        let path = format!("/v1/environments/default/functions/{id}");
        let (status, f) = self.admin(Method::PUT, &path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{f}");
        f["signingSecret"].as_str().unwrap().to_owned()
    }

    /// A push function triggered by `order.*` that sends its runs to `url`.
    async fn register_push(&self, id: &str, url: &str, secrets: &[&str], retries: u32) -> String {
        let body = json!({
            "triggers": [{"event": "order.*"}],
            "secrets": secrets,
            "mode": "push",
            "url": url,
            "timeoutMs": 5000,
            "retries": retries,
        });
        self.register(id, body).await
    }

    /// A pull function triggered by `order.*`.
    async fn register_pull(&self, id: &str, secrets: &[&str]) {
        let body = json!({"triggers": [{"event": "order.*"}], "secrets": secrets, "mode": "pull"});
        self.register(id, body).await;
    }

    /// Sends `order.created` with `data`; returns the runs it started, function id → run id.
    async fn send(&self, data: Value) -> BTreeMap<String, String> {
        let body = json!({"name": "order.created", "data": data});
        let (status, accepted) = self
            .admin(Method::POST, "/v1/environments/default/events", Some(body))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        accepted["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let id = r["id"].as_str().unwrap().to_owned();
                (r["functionId"].as_str().unwrap().to_owned(), id)
            })
            .collect()
    }

    /// Sends `order.created` to a single function; returns its run's id.
    async fn send_one(&self, data: Value) -> String {
        let runs = self.send(data).await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs.into_values().next().unwrap()
    }

    async fn run(&self, id: &str) -> Value {
        let path = format!("/v1/environments/default/runs/{id}");
        let (status, run) = self.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        run
    }

    /// Waits (at most `within`) until run `id` has ended; returns it.
    async fn ended(&self, id: &str, within: Duration) -> Value {
        until(&format!("run {id} ends"), within, || async {
            let run = self.run(id).await;
            let done = run["status"] == "succeeded" || run["status"] == "failed";
            done.then_some(run)
        })
        .await
    }

    /// Every audit row with `action`, all pages.
    async fn audit(&self, query: &str) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/audit?limit=1000&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.admin(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            rows.extend(page["entries"].as_array().unwrap().iter().cloned());
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return rows,
            }
        }
    }
}

/// The server's environment: a fixed key, so a restart opens what the first start sealed,
/// and the database when the catalog is PostgreSQL.
fn envs(db: &Option<TestDb>) -> Vec<(&'static str, &str)> {
    let mut envs = vec![("COFFER_MASTER_KEY", MASTER_KEY)];
    if let Some(db) = db {
        envs.push(("COFFER_DATABASE_URL", db.url.as_str()));
    }
    envs
}

/// Polls `check` every 50 ms until it answers `Some`, for at most `within`.
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

/// One POST the endpoint received.
#[derive(Clone, Debug)]
struct Delivery {
    /// Whether `Coffer-Signature` verified with the signing secret from the registration.
    signed: bool,
    job: Value,
}

#[derive(Default)]
struct EndpointState {
    /// The signing secret the registration returned (set once it is known).
    signing: Mutex<Option<String>>,
    /// Statuses to answer in turn; 200 once they are used up.
    answers: Mutex<VecDeque<u16>>,
    deliveries: Mutex<Vec<Delivery>>,
}

/// A local HTTP endpoint for push deliveries: it checks each delivery's signature, keeps
/// the job, and answers `{"charged": true, "runId", "attempt", "seen": secrets}` with the
/// next status.
#[derive(Clone)]
struct Endpoint {
    url: String,
    state: Arc<EndpointState>,
}

impl Endpoint {
    /// Listening at once on 127.0.0.1, a port of its own.
    async fn start(answers: &[u16]) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::at(listener.local_addr().unwrap().port(), answers);
        endpoint.serve(listener);
        endpoint
    }

    fn at(port: u16, answers: &[u16]) -> Endpoint {
        let state = EndpointState {
            answers: Mutex::new(answers.iter().copied().collect()),
            ..EndpointState::default()
        };
        Endpoint {
            url: format!("http://127.0.0.1:{port}/hook"),
            state: Arc::new(state),
        }
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }

    fn trust(&self, signing_secret: &str) {
        *self.state.signing.lock().unwrap() = Some(signing_secret.to_owned());
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.state.deliveries.lock().unwrap().clone()
    }

    /// The deliveries of run `id`.
    fn of(&self, id: &str) -> Vec<Delivery> {
        let mut of: Vec<Delivery> = self
            .deliveries()
            .into_iter()
            .filter(|d| d.job["runId"] == id)
            .collect();
        of.sort_by_key(|d| d.job["attempt"].as_u64());
        of
    }
}

async fn receive(
    State(state): State<Arc<EndpointState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (EndpointStatus, String) {
    let header = headers
        .get(coffer_wire::signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let secret = state.signing.lock().unwrap().clone().unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signed = !secret.is_empty()
        && coffer_wire::signature::verify(
            header,
            &[secret.as_bytes()],
            &body,
            now,
            coffer_wire::signature::DEFAULT_TOLERANCE_SECS,
        )
        .is_ok();
    let job: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // The answer echoes the secrets it got: what the run's output shows must be redacted.
    let answer = json!({
        "charged": true,
        "runId": job["runId"],
        "attempt": job["attempt"],
        "seen": job["secrets"],
    });
    state
        .deliveries
        .lock()
        .unwrap()
        .push(Delivery { signed, job });
    let status = state.answers.lock().unwrap().pop_front().unwrap_or(200);
    if !signed {
        return (EndpointStatus::UNAUTHORIZED, "bad signature".into());
    }
    (
        EndpointStatus::from_u16(status).unwrap(),
        answer.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_signed_and_carries_only_the_declared_secrets_that_are_set() {
    let c = Coffer::start();
    c.put_secret("STRIPE_KEY", "sk-live-4a7f0e2b9c").await;
    c.put_secret("UNDECLARED", "undeclared-value-5d3").await;
    let endpoint = Endpoint::start(&[]).await;
    let signing = c
        .register_push("charge", &endpoint.url, &["STRIPE_KEY", "NOT_SET"], 3)
        .await;
    endpoint.trust(&signing);
    let id = c.send_one(json!({"order": 42})).await;
    let run = c.ended(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempts"], 1);
    assert_eq!(
        run["output"],
        json!({"charged": true, "runId": id, "attempt": 1, "seen": {"STRIPE_KEY": "********"}}),
        "the endpoint's answer is the run's output, the value in it redacted"
    );

    let got = endpoint.deliveries();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].signed,
        "the signature verifies with the registration's secret"
    );
    let job = &got[0].job;
    assert_eq!(
        job["secrets"],
        json!({"STRIPE_KEY": "sk-live-4a7f0e2b9c"}),
        "NOT_SET is declared but not set, UNDECLARED is set but not declared"
    );
    assert_eq!(job["runId"], id.as_str());
    assert_eq!(job["functionId"], "charge");
    assert_eq!(job["environment"], "default");
    assert_eq!(job["attempt"], 1);
    assert_eq!(
        job["event"],
        json!({"name": "order.created", "data": {"order": 42}})
    );
    assert_eq!(job["triggerParams"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_answered_500_is_retried_and_then_succeeds() {
    let c = Coffer::start();
    c.put_secret("STRIPE_KEY", "sk-live-4a7f0e2b9c").await;
    let endpoint = Endpoint::start(&[500]).await;
    let signing = c
        .register_push("charge", &endpoint.url, &["STRIPE_KEY"], 3)
        .await;
    endpoint.trust(&signing);
    let id = c.send_one(json!({"order": 1})).await;
    let run = c.ended(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempts"], 2, "one retry after the 500");
    assert_eq!(run["output"]["attempt"], 2);
    let got = endpoint.of(&id);
    assert_eq!(got.len(), 2, "{got:?}");
    for (i, d) in got.iter().enumerate() {
        assert!(d.signed, "attempt {}", i + 1);
        assert_eq!(d.job["attempt"], i + 1);
        assert_eq!(
            d.job["secrets"],
            json!({"STRIPE_KEY": "sk-live-4a7f0e2b9c"})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_answered_400_fails_without_a_retry() {
    let c = Coffer::start();
    c.put_secret("STRIPE_KEY", "sk-live-4a7f0e2b9c").await;
    let endpoint = Endpoint::start(&[400, 400]).await;
    let signing = c
        .register_push("charge", &endpoint.url, &["STRIPE_KEY"], 3)
        .await;
    endpoint.trust(&signing);
    let id = c.send_one(json!({"order": 1})).await;
    let run = c.ended(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["attempts"], 1);
    let error = run["error"].as_str().unwrap();
    assert!(error.starts_with("HTTP 400"), "{error}");
    assert!(
        error.contains("********") && !error.contains("sk-live-4a7f0e2b9c"),
        "the answer's body is in the error, redacted: {error}"
    );
    // A retry would come within 1 s of the first attempt (its backoff is 0.5-1 s).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(endpoint.of(&id).len(), 1, "no retry after a 4xx");
    assert_eq!(c.run(&id).await["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_runs_queued_when_the_server_stops_are_delivered_after_it_restarts() {
    let mut c = Coffer::start();
    c.put_secret("STRIPE_KEY", "sk-live-4a7f0e2b9c").await;
    // The endpoint's port is reserved (bound) but not listening yet: every attempt is
    // refused, so the runs wait in the queue for their retry.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let endpoint = Endpoint::at(socket.local_addr().unwrap().port(), &[]);
    let signing = c
        .register_push("charge", &endpoint.url, &["STRIPE_KEY"], 10)
        .await;
    endpoint.trust(&signing);
    let mut runs = Vec::new();
    for order in 0..3 {
        runs.push(c.send_one(json!({"order": order})).await);
    }
    for id in &runs {
        until(
            "a first attempt is refused",
            Duration::from_secs(10),
            || async {
                let run = c.run(id).await;
                (run["status"] == "queued" && run["attempts"].as_u64() >= Some(1)).then_some(())
            },
        )
        .await;
    }
    c.restart();
    endpoint.serve(socket.listen(64).unwrap());
    for id in &runs {
        let run = c.ended(id, Duration::from_secs(15)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        let got = endpoint.of(id);
        assert_eq!(got.len(), 1, "delivered once the endpoint listens: {got:?}");
        assert!(got[0].signed);
        assert_eq!(got[0].job["secrets"]["STRIPE_KEY"], "sk-live-4a7f0e2b9c");
        assert!(got[0].job["attempt"].as_u64() >= Some(2), "{:?}", got[0]);
        assert_eq!(run["attempts"], got[0].job["attempt"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_pull_workers_over_http_get_each_of_200_runs_once() {
    let c = Coffer::start();
    c.put_secret("A", "alpha-value-91").await;
    c.register_pull("billing", &["A"]).await;
    let mut wanted = BTreeSet::new();
    for order in 0..200 {
        wanted.insert(c.send_one(json!({"order": order})).await);
    }
    assert_eq!(wanted.len(), 200);
    let mut workers = Vec::new();
    for i in 0..4 {
        let (_, key) = c.runtime_key(&format!("worker {i}")).await;
        let (client, base) = (c.http.clone(), c.process.base.clone());
        workers.push(tokio::spawn(async move {
            let env = format!("{base}/v1/environments/default");
            let mut got = Vec::new();
            loop {
                let resp = client
                    .post(format!("{env}/workers/poll"))
                    .bearer_auth(&key)
                    .json(&json!({"functions": ["billing"], "waitMs": 1000}))
                    .send()
                    .await
                    .unwrap();
                if resp.status() == StatusCode::NO_CONTENT {
                    return got;
                }
                assert_eq!(resp.status(), StatusCode::OK);
                let job: Value = resp.json().await.unwrap();
                assert_eq!(job["secrets"], json!({"A": "alpha-value-91"}));
                let id = job["runId"].as_str().unwrap().to_owned();
                let done = client
                    .post(format!("{env}/runs/{id}/complete"))
                    .bearer_auth(&key)
                    .json(&json!({"output": {"worker": i}, "attempt": job["attempt"]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(done.status(), StatusCode::OK, "{id}");
                got.push((id, job["attempt"].as_u64().unwrap()));
            }
        }));
    }
    let mut seen = Vec::new();
    for w in workers {
        seen.extend(w.await.unwrap());
    }
    assert!(seen.iter().all(|(_, attempt)| *attempt == 1), "no re-lease");
    let ids: BTreeSet<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), seen.len(), "a run was handed out twice");
    assert_eq!(ids, wanted, "every run was handed out");
    let (_, page) = c
        .admin(
            Method::GET,
            "/v1/environments/default/runs?status=succeeded&limit=1000",
            None,
        )
        .await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_goes_to_a_second_worker_and_the_first_is_refused_409() {
    let c = Coffer::start();
    c.register_pull("billing", &[]).await;
    let (_, first) = c.runtime_key("worker 1").await;
    let (_, second) = c.runtime_key("worker 2").await;
    let id = c.send_one(json!({"order": 1})).await;
    let env = "/v1/environments/default";
    let poll = |wait: u64, lease: u64| {
        Some(json!({"functions": ["billing"], "waitMs": wait, "leaseMs": lease}))
    };
    let (status, job) = c
        .call(
            &first,
            Method::POST,
            &format!("{env}/workers/poll"),
            poll(5000, 1000),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(
        (job["runId"].as_str(), job["attempt"].as_u64()),
        (Some(id.as_str()), Some(1))
    );
    let (status, _) = c
        .call(
            &second,
            Method::POST,
            &format!("{env}/workers/poll"),
            poll(0, 30000),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "held while the lease lasts");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, again) = c
        .call(
            &second,
            Method::POST,
            &format!("{env}/workers/poll"),
            poll(5000, 30000),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["runId"], job["runId"]);
    assert_eq!(again["attempt"], 2);

    let run_path = format!("{env}/runs/{id}");
    let (status, late) = c
        .call(
            &first,
            Method::POST,
            &format!("{run_path}/complete"),
            Some(json!({"output": "late", "attempt": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{late}");
    assert_eq!(late["error"]["code"], "lease_lost");
    let (status, beat) = c
        .call(
            &first,
            Method::POST,
            &format!("{run_path}/heartbeat"),
            Some(json!({"attempt": 1, "leaseMs": 5000})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{beat}");
    assert_eq!(beat["error"]["code"], "lease_lost");

    let (status, done) = c
        .call(
            &second,
            Method::POST,
            &format!("{run_path}/complete"),
            Some(json!({"output": {"by": 2}, "attempt": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "succeeded");
    let run = c.run(&id).await;
    assert_eq!(
        (run["attempts"].as_u64(), &run["output"]),
        (Some(2), &json!({"by": 2}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_resolution_is_audited_with_names_and_never_a_value() {
    let c = Coffer::start();
    let values = ["alpha-4f1e9c", "bravo-7d2a0b", "charlie-0e5c3d"];
    c.put_secret("A", values[0]).await;
    c.put_secret("B", values[1]).await;
    c.put_secret("C", values[2]).await;
    c.register_pull("billing", &["A", "B", "NOT_SET"]).await;
    let endpoint = Endpoint::start(&[]).await;
    let signing = c.register_push("charge", &endpoint.url, &["C"], 0).await;
    endpoint.trust(&signing);
    let (key_id, runtime) = c.runtime_key("worker").await;
    let env = "/v1/environments/default";

    // 1: `coffer run`'s resolve; 2: the push delivery; 3: a pull worker's poll.
    let (status, resolved) = c
        .call(
            &runtime,
            Method::POST,
            &format!("{env}/functions/billing/resolve"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["secrets"], json!({"A": values[0], "B": values[1]}));
    let runs = c.send(json!({"order": 1})).await;
    assert_eq!(runs.len(), 2);
    let (status, job) = c
        .call(
            &runtime,
            Method::POST,
            &format!("{env}/workers/poll"),
            Some(json!({"functions": ["billing"], "waitMs": 5000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["runId"], runs["billing"].as_str());
    let run = c.ended(&runs["charge"], Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    let rows = c.audit("action=function.resolved").await;
    let mut by: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for row in &rows {
        assert_eq!(row["environment"], "default", "{row}");
        assert_eq!(row["result"], "allowed", "{row}");
        by.entry(row["name"].as_str().unwrap().to_owned())
            .or_default()
            .push(row);
    }
    assert_eq!(by["billing"].len(), 2, "the resolve and the poll: {rows:?}");
    assert_eq!(by["charge"].len(), 1, "the push delivery: {rows:?}");
    for row in &by["billing"] {
        assert_eq!(row["actor"]["keyId"], key_id.as_str(), "{row}");
    }
    assert_eq!(by["charge"][0]["actor"]["keyId"], "system");

    let everything = serde_json::to_string(&c.audit("").await).unwrap();
    for value in values {
        assert!(!everything.contains(value), "the audit log holds {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_between_event_and_delivery_delivers_the_new_value() {
    let c = Coffer::start();
    c.put_secret("TOKEN", "before-rotation-1").await;
    c.register_pull("billing", &["TOKEN"]).await;
    let (_, runtime) = c.runtime_key("worker").await;
    c.send(json!({"order": 1})).await;
    c.put_secret("TOKEN", "after-rotation-2").await;
    let (status, job) = c
        .call(
            &runtime,
            Method::POST,
            "/v1/environments/default/workers/poll",
            Some(json!({"functions": ["billing"], "waitMs": 5000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["secrets"], json!({"TOKEN": "after-rotation-2"}));

    // Push: the retry after a 500 reads the value again.
    let endpoint = Endpoint::start(&[500]).await;
    let signing = c
        .register_push("charge", &endpoint.url, &["TOKEN"], 3)
        .await;
    endpoint.trust(&signing);
    let pushed = c.send(json!({"order": 2})).await["charge"].clone();
    until(
        "the first attempt arrives",
        Duration::from_secs(10),
        || async { (!endpoint.of(&pushed).is_empty()).then_some(()) },
    )
    .await;
    c.put_secret("TOKEN", "after-rotation-3").await;
    let run = c.ended(&pushed, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let got = endpoint.of(&pushed);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].job["secrets"]["TOKEN"], "after-rotation-2");
    assert_eq!(got[1].job["secrets"]["TOKEN"], "after-rotation-3");
}
