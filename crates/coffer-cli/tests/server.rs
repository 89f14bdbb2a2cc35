//! `coffer serve` as a process: zero set-up start, keys at start-up, shutdown, durability,
//! and a canary value that must never leave through responses, files or logs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ChildGuard, ServerProcess, Signal, clean_command, http, send_signal};
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
    assert!(
        s.log().contains("encryption=disabled") && !s.log().contains("Disabled"),
        "{}",
        s.log()
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

/// `coffer serve` with no arguments, as the README runs it. 127.0.0.1:8720 may be taken (by
/// the README's own server, say): then the start must fail naming the address and leave
/// nothing behind; otherwise it serves there from ./.coffer.
#[tokio::test]
async fn serve_with_no_arguments_listens_on_8720_in_dot_coffer_or_says_it_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let mut child = ChildGuard(
        coffer(&[("COFFER_MASTER_KEY", K1)])
            .arg("serve")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let data = dir.path().join(".coffer");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let log = log();
            assert!(!status.success(), "{log}");
            assert!(
                log.contains("cannot listen on 127.0.0.1:8720") && log.contains("already in use"),
                "the only acceptable failure is a taken address, named: {log}"
            );
            assert!(!log.contains("ck_admin_"), "no key was shown: {log}");
            assert!(
                !data.join("coffer.db").exists() && !data.join("admin.key").exists(),
                "a failed start bootstraps nothing"
            );
            return;
        }
        if log().contains("coffer is listening addr=127.0.0.1:8720 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "coffer serve neither listened nor failed: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Ours answers with the admin key it wrote into ./.coffer.
    let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
    let answer = http()
        .get("http://127.0.0.1:8720/v1/environments")
        .bearer_auth(key.trim())
        .send()
        .await
        .unwrap();
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
    assert!(data.join("coffer.db").is_file());
    send_signal(child.0.id(), Signal::INT).unwrap();
    assert!(child.0.wait().unwrap().success(), "SIGINT is a clean exit");
}

#[tokio::test]
async fn a_first_start_on_a_taken_port_fails_naming_it_and_bootstraps_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = clean_command(&["serve", "--listen", &addr, "--data-dir"]);
    cmd.arg(&data);
    let mut s = ServerProcess::spawn_command(cmd, &data);
    assert!(!s.wait_exit(), "a taken port is a start-up error");
    let log = s.log();
    assert!(
        log.contains(&format!("cannot listen on {addr}")) && log.contains("already in use"),
        "{log}"
    );
    assert!(
        !log.contains("ck_admin_") && !log.contains("First start"),
        "{log}"
    );
    assert!(!data.join("admin.key").exists() && !data.join("coffer.db").exists());

    let s = start(&data, &[]);
    let key = s.admin_key();
    assert!(
        s.log().contains(&key),
        "the first start that succeeds shows the key"
    );
}

#[tokio::test]
async fn listen_accepts_a_host_name_and_refuses_a_bare_port() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = clean_command(&["serve", "--listen", "localhost:0", "--data-dir"]);
    cmd.arg(&data);
    let mut s = ServerProcess::spawn_command(cmd, &data);
    s.wait_ready();
    let addr = s.addr.unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert!(!s.log().contains("without TLS"), "{}", s.log());
    let (status, _) = call(&s, Method::GET, "/v1/environments", None).await;
    assert_eq!(status, StatusCode::OK);

    let out = coffer(&[])
        .args(["serve", "--listen", "8720"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expected HOST:PORT"), "{stderr}");
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
    assert!(!data.exists(), "a refused start creates no data dir");
}

#[tokio::test]
async fn an_admin_key_seed_is_checked_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = refused(&data, &[("COFFER_ADMIN_KEY", "too-short-seed")], &[]);
    assert!(log.contains("COFFER_ADMIN_KEY must be 32-512"), "{log}");
    assert!(!log.contains("too-short-seed"), "{log}");
    assert!(!data.exists(), "a refused start creates no data dir");

    let seed = "ck_admin_seeded_for_the_test_0123456789abcdef";
    let s = start(&data, &[("COFFER_ADMIN_KEY", seed)]);
    assert_eq!(s.admin_key(), seed);
    assert!(
        !s.log().contains(seed),
        "a seed is never echoed: {}",
        s.log()
    );
    drop(s);
    let data = dir.path().join("empty-seed");
    let s = start(&data, &[("COFFER_ADMIN_KEY", "")]);
    assert!(s.admin_key().starts_with("ck_admin_"), "empty means unset");
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
    assert!(log.contains("1 stored value uses that version"), "{log}");
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
    let log = s.log();
    assert!(
        log.contains("backend=db encryption=enabled current_key_version=2"),
        "readable fields, not Rust Debug text: {log}"
    );
    assert!(!log.contains("Enabled {"), "{log}");
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

/// Fails naming each file under `dir` (database, its log and shared memory, anything) that
/// holds one of `values`.
fn assert_no_file_holds(dir: &Path, values: &[&str], when: &str) {
    let mut found = Vec::new();
    for (file, bytes) in all_file_bytes(dir) {
        let n = values
            .iter()
            .filter(|v| contains(&bytes, v.as_bytes()))
            .count();
        if n > 0 {
            found.push(format!("{}: {n} of {}", file.display(), values.len()));
        }
    }
    assert!(found.is_empty(), "{when}, values found in files: {found:?}");
}

/// Dev mode stores values as they are; the first start with a key encrypts them, and from
/// then on no file may hold them: not the database's free space, not the write-ahead log.
#[tokio::test]
async fn dev_mode_values_leave_every_file_once_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tag = random_hex();
    // One long value spills into overflow pages.
    let canaries: Vec<String> = (0..20)
        .map(|i| match i {
            0 => format!("canary-{tag}-00-").repeat(400),
            _ => format!("canary-{tag}-{i:02}"),
        })
        .collect();
    let needles: Vec<&str> = canaries.iter().map(|c| &c[..c.len().min(40)]).collect();
    let secret = |i: usize| format!("/v1/environments/default/secrets/C{i:02}");

    let mut s = start(&data, &[]);
    for (i, canary) in canaries.iter().enumerate() {
        let (status, _) = call(&s, Method::PUT, &secret(i), Some(json!({"value": canary}))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // Overwritten and deleted while still in dev mode: their old values must go too.
    for i in 10..15 {
        let body = Some(json!({"value": "replaced"}));
        assert_eq!(
            call(&s, Method::PUT, &secret(i), body).await.0,
            StatusCode::OK
        );
    }
    for i in 15..20 {
        let deleted = call(&s, Method::DELETE, &secret(i), None).await.0;
        assert_eq!(deleted, StatusCode::NO_CONTENT);
    }
    let in_dev_mode = all_file_bytes(&data)
        .iter()
        .any(|(_, bytes)| contains(bytes, needles[1].as_bytes()));
    assert!(in_dev_mode, "the scan sees dev mode's plaintext");
    assert!(s.terminate());

    let mut s = start(&data, &[("COFFER_MASTER_KEY", K1)]);
    assert!(
        s.log()
            .contains("encrypted values left unencrypted by dev mode values=15"),
        "{}",
        s.log()
    );
    assert_no_file_holds(&data, &needles, "right after the migration");
    for i in 0..5 {
        assert_eq!(
            call(&s, Method::DELETE, &secret(i), None).await.0,
            StatusCode::NO_CONTENT
        );
    }
    let (status, body) = call(&s, Method::GET, "/v1/environments/default/secrets", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["secrets"].as_array().map(Vec::len), Some(10));
    assert_no_file_holds(&data, &needles, "after deletes");
    assert!(s.terminate());
    assert_no_file_holds(&data, &needles, "after a clean stop");
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
    assert_no_file_holds(dir.path(), &[&canary], "while running");
    assert!(s.terminate());
    assert_no_file_holds(dir.path(), &[&canary], "after a clean stop");
    let log = s.log();
    assert!(log.contains("coffer is listening"), "the log is on: {log}");
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

/// Permission bits of `path`.
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_data_dir_other_users_can_enter_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = refused(&data, &[], &[]);
    assert!(
        log.contains("is accessible to other users (mode 755)")
            && log.contains("chmod 700")
            && log.contains("--allow-shared-data-dir"),
        "{log}"
    );
    assert!(!log.contains("ck_admin_"), "{log}");
    assert!(
        std::fs::read_dir(&data).unwrap().next().is_none(),
        "nothing was created in it"
    );

    for (envs, extra) in [
        (&[][..], &["--allow-shared-data-dir"][..]),
        (&[("COFFER_ALLOW_SHARED_DATA_DIR", "1")][..], &[][..]),
    ] {
        let mut s = ServerProcess::start(&data, envs, extra);
        assert!(
            s.log()
                .contains("the data dir is accessible to other users"),
            "allowed, with a warning: {}",
            s.log()
        );
        let (status, _) = put_a(&s).await;
        assert!(status.is_success());
        assert!(s.terminate());
    }
    assert_eq!(mode_of(&data), 0o755, "the operator's choice is left alone");
}

#[tokio::test]
async fn every_file_is_private_under_umask_000() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = |prelude: &str| {
        let mut cmd = common::clean_shell_command(
            prelude,
            &["serve", "--listen", "127.0.0.1:0", "--data-dir"],
        );
        cmd.arg(&data);
        let mut s = ServerProcess::spawn_command(cmd, &data);
        s.wait_ready();
        s
    };
    let check = |when: &str| {
        assert_eq!(mode_of(&data), 0o700, "{when}: the data dir");
        let files = all_file_bytes(&data);
        assert!(files.len() >= 3, "{when}: db, lock, admin.key at least");
        for (file, _) in files {
            assert_eq!(mode_of(&file), 0o600, "{when}: {}", file.display());
        }
    };
    let mut s = serve("umask 000");
    let (status, _) = put_a(&s).await;
    assert_eq!(status, StatusCode::CREATED);
    check("while running");
    assert!(s.terminate());
    check("after a clean stop");
    let mut s = serve("umask 000");
    let (status, _) = put_a(&s).await;
    assert_eq!(status, StatusCode::OK);
    check("after a restart");
    assert!(s.terminate());
}

#[tokio::test]
async fn files_left_readable_by_an_older_build_are_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = start(&data, &[]);
    put_a(&s).await;
    assert!(s.terminate());
    for name in ["coffer.db", "admin.key", "coffer.lock"] {
        std::fs::set_permissions(data.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let s = start(&data, &[]);
    for (file, _) in all_file_bytes(&data) {
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
    assert!(
        s.log().contains("made a file in the data dir private"),
        "{}",
        s.log()
    );
}

#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
    let limits = |pid: u32| -> (String, String) {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_owned();
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields[3].to_owned(), fields[4].to_owned())
    };
    let (_, hard) = limits(std::process::id());
    assert_ne!(hard, "256", "the test needs a hard limit above 256");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = common::clean_shell_command(
        "ulimit -Sn 256",
        &["serve", "--listen", "127.0.0.1:0", "--data-dir"],
    );
    cmd.arg(&data);
    let mut s = ServerProcess::spawn_command(cmd, &data);
    s.wait_ready();
    let (soft, server_hard) = limits(s.child.id());
    assert_eq!(
        soft,
        server_hard,
        "soft limit raised to the hard one:\n{}",
        s.log()
    );
    assert_ne!(soft, "256");
    assert!(
        s.log().contains(&format!("open-file limit soft={soft}")),
        "{}",
        s.log()
    );
}

/// `--max-connections` caps open connections: one more gets a JSON 503 and is closed. A
/// hard open-file limit below the cap lowers it, with a warning.
#[tokio::test]
async fn max_connections_caps_open_connections_and_fits_the_open_file_limit() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = ServerProcess::start(&data, &[], &["--max-connections", "3"]);
    let addr = s.addr.expect("listening");
    // Connections left over from waiting for the server to start may hold slots for a
    // moment; try again until three idle connections hold all of them.
    let mut refused = None;
    for _ in 0..20 {
        let idle: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let mut over = std::net::TcpStream::connect(addr).expect("connect");
        over.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = over.read_to_string(&mut answer);
        drop(idle);
        if answer.starts_with("HTTP/1.1 503") {
            refused = Some(answer);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = refused.expect("a fourth connection is refused while three are open");
    assert!(answer.contains(r#""code":"overloaded""#), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );

    // And per client address.
    let data = dir.path().join("per-ip");
    let per_ip = ServerProcess::start(&data, &[], &["--max-connections-per-ip", "1"]);
    let addr = per_ip.addr.expect("listening");
    let mut refused = None;
    for _ in 0..20 {
        let idle = std::net::TcpStream::connect(addr).expect("connect");
        let mut second = std::net::TcpStream::connect(addr).expect("connect");
        second
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        second
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = second.read_to_string(&mut answer);
        drop(idle);
        if answer.starts_with("HTTP/1.1 503") {
            refused = Some(answer);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = refused.expect("a second connection from one address is refused");
    assert!(answer.contains(r#""code":"overloaded""#), "{answer}");

    let data = dir.path().join("low");
    let mut cmd = common::clean_shell_command(
        "ulimit -n 1000",
        &["serve", "--listen", "127.0.0.1:0", "--data-dir"],
    );
    cmd.arg(&data);
    let mut low = ServerProcess::spawn_command(cmd, &data);
    low.wait_ready();
    assert!(
        low.log().contains("lowering it") && low.log().contains("allowed=680"),
        "{}",
        low.log()
    );
}
