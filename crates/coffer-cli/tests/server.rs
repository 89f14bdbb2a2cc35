//! `coffer serve` as a process: zero set-up start, keys at start-up, shutdown, durability,
//! and a canary value that must never leave through responses, files or logs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ChildGuard, ServerProcess, clean_command, http};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const K1: &str = "9d4f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";
const K2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// `coffer` with a clean environment plus `envs`.
fn coffer(envs: &[(&str, &str)]) -> Command {
    let mut cmd = clean_command(&[]);
    cmd.envs(envs.iter().copied());
    cmd
}

fn spawn(data_dir: &Path, envs: &[(&str, &str)]) -> ServerProcess {
    ServerProcess::spawn(data_dir, envs, &[])
}

fn start(data_dir: &Path, envs: &[(&str, &str)]) -> ServerProcess {
    ServerProcess::start(data_dir, envs, &[])
}

/// One admin request to `s`; returns the status and the body text.
async fn call(
    s: &ServerProcess,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let url = format!("{}{path}", s.base);
    let mut req = http().request(method, url).bearer_auth(s.admin_key());
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    (resp.status(), resp.text().await.expect("body"))
}

/// Sets secret `A` in `default` to `x`.
async fn put_a(s: &ServerProcess) -> (StatusCode, String) {
    let body = Some(json!({"value": "x"}));
    call(s, Method::PUT, "/v1/environments/default/secrets/A", body).await
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn first_start_prints_the_admin_key_once_and_saves_it_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = start(&data, &[]);
    let key = s.admin_key();
    assert!(key.starts_with("ck_admin_"), "{key}");
    let mode = std::fs::metadata(data.join("admin.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(s.log().contains(&key), "the first start shows the key");
    assert!(
        s.log().contains("DEV MODE"),
        "no key configured: a loud warning"
    );
    for (file, bytes) in all_file_bytes(&data) {
        if !file.ends_with("admin.key") {
            let leaked = contains(&bytes, key.as_bytes());
            assert!(
                !leaked,
                "{} holds the API key, not its hash",
                file.display()
            );
        }
    }
    let (status, body) = call(&s, Method::GET, "/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["encryption"], "disabled");
    assert!(json_of(&body)["currentKeyVersion"].is_null());
    let (status, body) = call(&s, Method::GET, "/v1/environments", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["environments"][0]["name"], "default");
    assert!(s.terminate(), "SIGTERM is a clean exit");

    let s = start(&data, &[]);
    assert!(!s.log().contains(&key), "later starts never show the key");
    assert!(
        s.log().contains("DEV MODE"),
        "the warning comes at every start"
    );
    assert_eq!(s.admin_key(), key);
}

#[tokio::test]
async fn serve_with_no_arguments_listens_on_8720_in_dot_coffer() {
    assert!(
        std::net::TcpStream::connect("127.0.0.1:8720").is_err(),
        "127.0.0.1:8720 is taken by another process (a leftover `coffer serve`?); stop it, \
         this test needs the default address"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildGuard(
        coffer(&[("COFFER_MASTER_KEY", K1)])
            .arg("serve")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let key_file = dir.path().join(".coffer/admin.key");
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("coffer serve exited early: {status}");
        }
        // Ours answers with the admin key it wrote into ./.coffer.
        if let Ok(key) = std::fs::read_to_string(&key_file) {
            let sent = http()
                .get("http://127.0.0.1:8720/v1/environments")
                .bearer_auth(key.trim())
                .send()
                .await;
            if let Ok(r) = sent {
                break r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nothing answered on 127.0.0.1:8720"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer.status(), StatusCode::OK, "our server answers there");
    let status: Value = http()
        .get("http://127.0.0.1:8720/v1/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["encryption"], "enabled");
    assert!(dir.path().join(".coffer/coffer.db").is_file());
    Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(child.0.wait().unwrap().success(), "SIGINT is a clean exit");
}

/// Starts `coffer serve` expecting it to refuse; returns its log.
fn refused(data_dir: &Path, envs: &[(&str, &str)], extra: &[&str]) -> String {
    let mut s = ServerProcess::spawn(data_dir, envs, extra);
    assert!(
        !s.wait_exit(),
        "coffer serve must refuse to start:\n{}",
        s.log()
    );
    s.log()
}

#[tokio::test]
async fn require_encryption_without_a_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for log in [
        refused(&data, &[("COFFER_REQUIRE_ENCRYPTION", "1")], &[]),
        refused(&data, &[], &["--require-encryption"]),
    ] {
        assert!(log.contains("encryption is required"), "{log}");
    }
}

#[tokio::test]
async fn unusable_key_material_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("COFFER_MASTER_KEY", "short-secret-material"),
        (
            "COFFER_SECRET_KEYS",
            r#"{"currentKeyVersion": 2, "keys": {"1": "short-secret-material"}}"#,
        ),
        ("COFFER_SECRET_KEYS", "not json short-secret-material"),
    ];
    for (var, value) in cases {
        let log = refused(&dir.path().join("data"), &[(var, value)], &[]);
        assert!(log.contains(var), "the message names the setting: {log}");
        assert!(
            !log.contains("short-secret-material"),
            "never echo key material: {log}"
        );
    }
}

#[tokio::test]
async fn the_wrong_key_stops_start_up_before_anything_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[("COFFER_MASTER_KEY", K1)]);
    let (status, _) = put_a(&s).await;
    assert_eq!(status, StatusCode::CREATED);
    drop(s);
    let mut s = spawn(&dir.path().join("data"), &[("COFFER_MASTER_KEY", K2)]);
    assert!(!s.wait_exit(), "a wrong key is a start-up error");
    let log = s.log();
    assert!(log.contains("key version 1 is wrong"), "{log}");
    assert!(log.contains("1 stored values"), "{log}");
    assert!(!log.contains("listening"), "nothing was served: {log}");
}

#[tokio::test]
async fn a_keyring_file_with_two_versions_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("keys.json");
    std::fs::write(
        &ring,
        format!(r#"{{"currentKeyVersion": 2, "keys": {{"1": "{K1}", "2": "{K2}"}}}}"#),
    )
    .unwrap();
    let s = start(
        &dir.path().join("data"),
        &[("COFFER_SECRET_KEYS_FILE", ring.to_str().unwrap())],
    );
    let (_, body) = call(&s, Method::GET, "/v1/status", None).await;
    assert_eq!(json_of(&body)["currentKeyVersion"], 2);
    let (_, body) = put_a(&s).await;
    assert_eq!(json_of(&body)["keyVersion"], 2);
}

/// Every byte of every file under `dir`.
fn all_file_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_canary_value_never_appears_in_responses_files_or_logs() {
    let canary = format!("canary-{}", random_hex());
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(
        &dir.path().join("data"),
        &[("COFFER_MASTER_KEY", K1), ("COFFER_LOG", "trace")],
    );
    let path = "/v1/environments/default/secrets/CANARY";
    let mut responses = Vec::new();
    responses.push(call(&s, Method::PUT, path, Some(json!({"value": canary}))).await);
    responses.push(
        call(
            &s,
            Method::PUT,
            path,
            Some(json!({"value": format!("{canary}-2"), "expectedRevision": 1})),
        )
        .await,
    );
    responses.push(
        call(
            &s,
            Method::PUT,
            path,
            Some(json!({"value": canary, "expectedRevision": 1})),
        )
        .await,
    ); // 409
    responses.push(
        call(
            &s,
            Method::PUT,
            path,
            Some(json!({"value": canary, "extra": true})),
        )
        .await,
    ); // 400
    responses.push(
        call(
            &s,
            Method::PUT,
            path,
            Some(json!({"value": 5, "expectedRevision": canary})),
        )
        .await,
    ); // 400
    responses.push(
        call(
            &s,
            Method::PUT,
            "/v1/environments/default/secrets/OTHER",
            Some(json!({"value": "x"})),
        )
        .await,
    );
    responses.push(call(&s, Method::GET, "/v1/environments/default/secrets", None).await);
    responses.push(call(&s, Method::GET, path, None).await);
    responses.push(call(&s, Method::DELETE, path, None).await);
    responses.push(call(&s, Method::GET, "/v1/status", None).await);
    let statuses: Vec<u16> = responses.iter().map(|(st, _)| st.as_u16()).collect();
    assert_eq!(statuses, [201, 200, 409, 400, 400, 201, 200, 200, 204, 200]);
    for (_, body) in &responses {
        assert!(
            !body.contains(&canary),
            "a response holds the value: {body}"
        );
    }
    assert!(s.terminate());
    for (file, bytes) in all_file_bytes(dir.path()) {
        assert!(
            !contains(&bytes, canary.as_bytes()),
            "{} holds the value",
            file.display()
        );
    }
    let log = s.log();
    assert!(
        log.contains("mutation"),
        "the log is on and records mutations: {log}"
    );
    assert!(!log.contains(&canary), "the log holds the value");
}

/// 24 random hex digits from the OS.
fn random_hex() -> String {
    let mut buf = [0u8; 12];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("data"), &[("COFFER_MASTER_KEY", K1)]);
    call(
        &s,
        Method::POST,
        "/v1/environments",
        Some(json!({"name": "prod"})),
    )
    .await;
    call(
        &s,
        Method::POST,
        "/v1/api-keys",
        Some(json!({"name": "ci", "role": "manage", "environment": "prod"})),
    )
    .await;
    for i in 0..5 {
        call(
            &s,
            Method::PUT,
            &format!("/v1/environments/prod/secrets/S{i}"),
            Some(json!({"value": "v"})),
        )
        .await;
    }
    call(
        &s,
        Method::PUT,
        "/v1/environments/prod/secrets/S0",
        Some(json!({"value": "w"})),
    )
    .await;
    let before = snapshot_of(&s).await;
    drop(s);
    let s = start(&dir.path().join("data"), &[("COFFER_MASTER_KEY", K1)]);
    assert_eq!(snapshot_of(&s).await, before);
}

async fn snapshot_of(s: &ServerProcess) -> Vec<(StatusCode, String)> {
    let mut all = Vec::new();
    for p in [
        "/v1/environments",
        "/v1/api-keys",
        "/v1/environments/prod/secrets",
    ] {
        all.push(call(s, Method::GET, p, None).await);
    }
    all
}

#[tokio::test]
async fn kill_9_during_a_stream_of_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(&dir.path().join("data"), &[("COFFER_MASTER_KEY", K1)]);
    let (base, key) = (s.base.clone(), s.admin_key());
    let acked = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let mut writers = Vec::new();
    for t in 0..8 {
        let (base, key, acked) = (base.clone(), key.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let http = http();
            for i in 0..100_000u32 {
                // Alternate new secrets and updates of one per writer.
                let name = if i % 2 == 0 {
                    format!("NEW_{t}_{i}")
                } else {
                    format!("HOT_{t}")
                };
                let url = format!("{base}/v1/environments/default/secrets/{name}");
                let Ok(resp) = http
                    .put(url)
                    .bearer_auth(&key)
                    .json(&json!({"value": "v"}))
                    .send()
                    .await
                else {
                    return; // the server is gone
                };
                let Ok(meta) = resp.json::<Value>().await else {
                    return;
                };
                if let Some(rev) = meta["revision"].as_u64() {
                    acked.lock().unwrap().push((name, rev));
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.kill_9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 400,
        "only {} writes before the kill",
        acked.len()
    );
    drop(s);

    let s = start(&dir.path().join("data"), &[("COFFER_MASTER_KEY", K1)]);
    let mut lost = Vec::new();
    for (name, rev) in &acked {
        let (status, body) = call(
            &s,
            Method::GET,
            &format!("/v1/environments/default/secrets/{name}"),
            None,
        )
        .await;
        let now = json_of(&body)["revision"].as_u64();
        if status != StatusCode::OK || now < Some(*rev) {
            lost.push(format!(
                "{name}: acknowledged revision {rev}, found {status} {body}"
            ));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost:\n{}",
        lost.len(),
        acked.len(),
        lost.join("\n")
    );
}

#[test]
fn serve_help_prints_usage_and_starts_nothing() {
    let out = coffer(&[]).args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: coffer serve"), "{help}");
    assert!(
        help.contains("--require-encryption") && help.contains("--allow-unreadable"),
        "{help}"
    );
    for client_only in ["--api-key", "--addr", "--json", "--env "] {
        assert!(
            !help.contains(client_only),
            "serve has no {client_only}: {help}"
        );
    }
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = start(&data, &[("COFFER_MASTER_KEY", K1)]);
    let mut second =
        ServerProcess::spawn(&dir.path().join("data"), &[("COFFER_MASTER_KEY", K1)], &[]);
    assert!(!second.wait_exit(), "the second server must not start");
    assert!(
        second
            .log()
            .contains("another coffer serve is using the data dir"),
        "{}",
        second.log()
    );
    let (status, _) = call(&first, Method::GET, "/v1/environments", None).await;
    assert_eq!(status, StatusCode::OK, "the first one is unaffected");
}
