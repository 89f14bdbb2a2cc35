//! Key lifecycle through the real binary: `coffer keys status|rewrap|verify`, a rewrap cut
//! by `kill -9`, a value tampered on disk (found by verify, not by a restart), the
//! removed-version guard and `--allow-unreadable`, dev-mode migration, and functions'
//! signing secrets through all of it.

mod common;

use std::path::Path;
use std::process::Output;

use common::{ServerProcess, clean_command, http};
use serde_json::{Value, json};

const K1: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const K2: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

fn ring_1() -> Vec<(&'static str, String)> {
    vec![("COFFER_MASTER_KEY", K1.to_owned())]
}

fn ring_2(with_v1: bool) -> Vec<(&'static str, String)> {
    let keys = if with_v1 {
        format!(r#""1": "{K1}", "2": "{K2}""#)
    } else {
        format!(r#""2": "{K2}""#)
    };
    vec![(
        "COFFER_SECRET_KEYS",
        format!(r#"{{"currentKeyVersion": 2, "keys": {{{keys}}}}}"#),
    )]
}

fn start(data: &Path, envs: &[(&'static str, String)], extra: &[&str]) -> ServerProcess {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ServerProcess::start(data, &envs, extra)
}

/// `coffer ARGS` against `s` with its admin key.
fn coffer(s: &ServerProcess, args: &[&str]) -> Output {
    clean_command(args)
        .env("COFFER_ADDR", &s.base)
        .env("COFFER_API_KEY", s.admin_key())
        .output()
        .unwrap()
}

fn ok(s: &ServerProcess, args: &[&str]) -> String {
    let out = coffer(s, args);
    assert!(
        out.status.success(),
        "coffer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn get(s: &ServerProcess, path: &str) -> Value {
    let resp = http()
        .get(format!("{}{path}", s.base))
        .bearer_auth(s.admin_key())
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap_or(Value::Null)
}

/// Values per key version, from `GET /v1/keys`.
async fn values_per_version(s: &ServerProcess) -> Vec<(u64, u64)> {
    let keys = get(s, "/v1/keys").await;
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["version"].as_u64().unwrap(),
                k["values"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Sets `n` secrets `S0000…` over 16 connections.
async fn seed(s: &ServerProcess, n: usize) {
    let (base, key) = (s.base.clone(), s.admin_key());
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (base, key) = (base.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let http = http();
            for i in (t..n).step_by(16) {
                let url = format!("{base}/v1/environments/default/secrets/S{i:04}");
                let resp = http
                    .put(url)
                    .bearer_auth(&key)
                    .json(&json!({"value": format!("value {i}")}))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn keys_status_and_rewrap_move_every_value_to_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &ring_1(), &[]);
    seed(&s, 40).await;
    drop(s);
    let s = start(&data, &ring_2(true), &[]);
    let status = ok(&s, &["keys", "status"]);
    let rows: Vec<Vec<&str>> = status
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "VERSION",
            "CURRENT",
            "IN-KEYRING",
            "VALUES",
            "SIGNING-SECRETS",
            "ORCHESTRATION-PARAMS",
            "ENCRYPTIONS"
        ],
        "{status}"
    );
    assert_eq!(&rows[1][..4], ["1", "no", "yes", "40"], "{status}");
    assert_eq!(&rows[2][..4], ["2", "yes", "yes", "0"], "{status}");
    assert!(
        !status.contains(K1) && !status.contains(K2),
        "no key material is ever shown"
    );

    let summary = ok(&s, &["keys", "rewrap", "--batch", "7"]);
    assert_eq!(
        summary,
        "rewrapped 40, already current 0, unreadable 0, updated concurrently 0\n"
    );
    assert_eq!(values_per_version(&s).await, [(1, 0), (2, 40)]);
    let again: Value = serde_json::from_str(&ok(&s, &["keys", "rewrap", "--json"])).unwrap();
    assert_eq!(
        (
            again["rewrapped"].as_u64(),
            again["alreadyCurrent"].as_u64()
        ),
        (Some(0), Some(40))
    );
    drop(s);
    // Version 1 is unused now: it can leave the keyring.
    let s = start(&data, &ring_2(false), &[]);
    assert_eq!(values_per_version(&s).await, [(2, 40)]);
}

#[tokio::test]
async fn a_rewrap_cut_by_kill_9_completes_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &ring_1(), &[]);
    seed(&s, 2000).await;
    drop(s);
    let mut s = start(&data, &ring_2(true), &[]);
    let mut rewrap = clean_command(&["keys", "rewrap", "--batch", "10"])
        .env("COFFER_ADDR", &s.base)
        .env("COFFER_API_KEY", s.admin_key())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while values_per_version(&s).await[1].1 < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rewrap did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    s.kill_9();
    let _ = rewrap.wait();
    drop(s);

    let s = start(&data, &ring_2(true), &[]);
    let counts = values_per_version(&s).await;
    assert!(
        counts[0].1 > 0 && counts[1].1 > 0,
        "the first rewrap was cut short: {counts:?}"
    );
    let summary = ok(&s, &["keys", "rewrap"]);
    assert!(summary.contains("unreadable 0"), "{summary}");
    assert_eq!(values_per_version(&s).await, [(1, 0), (2, 2000)]);
    let page = get(&s, "/v1/environments/default/secrets?limit=1000").await;
    assert!(
        page["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["revision"] == 1 && m["status"] == "ok")
    );
}

/// Flips one character of the ciphertext part of `name`'s stored blob in the SQLite file,
/// as disk rot or a hand edit would (the server is not running).
fn tamper_on_disk(data: &Path, name: &str) {
    let db = rusqlite::Connection::open(data.join("coffer.db")).unwrap();
    let blob: String = db
        .query_row(
            "SELECT value FROM secrets WHERE environment = 'default' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap();
    let mut parts: Vec<String> = blob.split(':').map(str::to_owned).collect();
    let flipped = if parts[1].starts_with('A') { "B" } else { "A" };
    parts[1].replace_range(..1, flipped);
    let changed = db
        .execute(
            "UPDATE secrets SET value = ?2 WHERE environment = 'default' AND name = ?1",
            rusqlite::params![name, parts.join(":")],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// Start-up opens no value: a value tampered in the file while the server was down goes
/// unnoticed by the restart. `coffer keys verify` finds it (exit 6, the JSON names it,
/// never a value), records it in the catalog so every status counts it (a later start too,
/// without walking), and writing the secret again clears it.
#[tokio::test]
async fn keys_verify_finds_a_value_tampered_on_disk_that_a_restart_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &ring_1(), &[]);
    seed(&s, 30).await;
    drop(s);
    tamper_on_disk(&data, "S0007");

    let s = start(&data, &ring_1(), &[]);
    assert_eq!(
        get(&s, "/v1/status").await["unreadableValues"],
        0,
        "a restart opens no value"
    );
    let out = coffer(&s, &["keys", "verify", "--json", "--batch", "7"]);
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(6), "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report,
        json!({
            "checked": 30,
            "unreadable": [
                {"environment": "default", "name": "S0007", "revision": 1, "keyVersion": 1}
            ],
            "signingSecretsChecked": 0,
            "unreadableSigningSecrets": [],
            "orchestrationParamsChecked": 0,
            "unreadableOrchestrationParams": []
        })
    );
    assert!(
        stderr.contains("1 value cannot be opened"),
        "the error says why it exits 6: {stderr}"
    );
    assert!(!stdout.contains("value 7") && !stderr.contains("value 7"));

    let out = coffer(&s, &["keys", "verify"]);
    assert_eq!(out.status.code(), Some(6));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("checked 30 values: 1 unreadable\n"),
        "{text}"
    );
    let row: Vec<&str> = text.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(row, ["default", "S0007", "1", "1"], "{text}");

    assert_eq!(get(&s, "/v1/status").await["unreadableValues"], 1);
    assert!(
        ok(&s, &["keys", "status"]).contains("unreadable values: 1"),
        "keys status counts it"
    );
    let list = ok(&s, &["secret", "list"]);
    let line = list.lines().find(|l| l.starts_with("S0007")).unwrap();
    assert!(line.contains("unreadable"), "{list}");
    let audit = get(&s, "/v1/audit?action=keys.verified").await;
    let rows = audit["entries"].as_array().unwrap();
    assert!(!rows.is_empty(), "{audit}");
    assert!(
        rows.iter().all(|r| r["actor"]["keyId"]
            .as_str()
            .is_some_and(|k| k.starts_with("ak_"))),
        "the key that verified is on the record: {audit}"
    );
    assert_eq!(
        rows.iter()
            .take(5)
            .map(|r| r["count"].as_u64().unwrap())
            .sum::<u64>(),
        30,
        "the first run's batches checked every value"
    );
    drop(s);

    // The finding is in the catalog: the next start (another node, as far as it knows)
    // reports it without opening anything.
    let s = start(&data, &ring_1(), &[]);
    assert_eq!(get(&s, "/v1/status").await["unreadableValues"], 1);
    assert!(s.log().contains("values=1"), "{}", s.log());
    ok(&s, &["secret", "set", "S0007", "written again"]);
    assert_eq!(get(&s, "/v1/status").await["unreadableValues"], 0);
    let clean = ok(&s, &["keys", "verify"]);
    assert_eq!(clean, "checked 30 values: 0 unreadable\n");
}

#[tokio::test]
async fn a_removed_key_version_stops_start_up_and_allow_unreadable_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &ring_1(), &[]);
    seed(&s, 3).await;
    drop(s);
    let s = start(&data, &ring_2(true), &[]);
    ok(&s, &["secret", "set", "NEWER", "under two"]);
    drop(s);

    let envs = ring_2(false);
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut refused = ServerProcess::spawn(&data, &envs, &[]);
    assert!(!refused.wait_exit());
    let log = refused.log();
    assert!(
        log.contains("key version 1 is missing from the keyring but 3 stored values use it"),
        "{log}"
    );
    assert!(
        log.contains("--allow-unreadable"),
        "the message says how to proceed: {log}"
    );

    let s = start(&data, &ring_2(false), &["--allow-unreadable"]);
    let list = ok(&s, &["secret", "list"]);
    let status_of = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().nth(3).unwrap().to_owned())
    };
    assert_eq!(status_of("S0000").as_deref(), Some("unreadable"), "{list}");
    assert_eq!(status_of("NEWER").as_deref(), Some("ok"), "{list}");
    let status = get(&s, "/v1/status").await;
    assert_eq!(status["unreadableValues"], 3);
    let metrics = http()
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("coffer_unreadable_values 3"), "{metrics}");
    let summary = ok(&s, &["keys", "rewrap"]);
    assert!(
        summary.contains("unreadable 3"),
        "a rewrap reports them and goes on: {summary}"
    );
    ok(&s, &["secret", "set", "S0000", "written again"]);
    let list = ok(&s, &["secret", "list", "--json"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    let s0 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "S0000")
        .unwrap();
    assert_eq!(
        (s0["status"].as_str(), s0["keyVersion"].as_u64()),
        (Some("ok"), Some(2)),
        "writing it again repairs it"
    );
}

#[tokio::test]
async fn dev_mode_values_are_encrypted_at_the_first_start_with_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &[], &[]);
    assert!(s.log().contains("DEV MODE"));
    seed(&s, 12).await;
    assert_eq!(get(&s, "/v1/keys").await["plaintextValues"], 12);
    drop(s);
    let s = start(&data, &ring_1(), &[]);
    assert!(
        s.log()
            .contains("encrypted values left unencrypted by dev mode values=12"),
        "{}",
        s.log()
    );
    assert_eq!(values_per_version(&s).await, [(1, 12)]);
    assert_eq!(get(&s, "/v1/keys").await["plaintextValues"], 0);
    drop(s);
    let mut refused = ServerProcess::spawn(&data, &[], &[]);
    assert!(!refused.wait_exit(), "no key on encrypted data is refused");
    assert!(
        refused.log().contains("12 stored values are encrypted"),
        "{}",
        refused.log()
    );
}

/// Registers a pull function `id` in `default` over HTTP (the CLI has no function command).
async fn register_function(s: &ServerProcess, id: &str) {
    let resp = http()
        .put(format!("{}/v1/environments/default/functions/{id}", s.base))
        .bearer_auth(s.admin_key())
        .json(&json!({"triggers": [{"event": "order.*"}], "secrets": [], "mode": "pull"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

/// A function's signing secret through the binary: dev mode stores it in plaintext and the
/// first start with a key encrypts it (and logs it); `keys status` counts it per version;
/// removing its key before the rewrap is refused naming it; `keys rewrap` and `keys verify`
/// report it on a line of their own, and the old key can then go.
#[tokio::test]
async fn keys_commands_cover_function_signing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = start(&data, &[], &[]);
    register_function(&s, "billing").await;
    seed(&s, 2).await;
    assert_eq!(get(&s, "/v1/keys").await["plaintextSigningSecrets"], 1);
    drop(s);
    let s = start(&data, &ring_1(), &[]);
    assert!(
        s.log().contains(
            "encrypted function signing secrets left unencrypted by dev mode signing_secrets=1"
        ),
        "{}",
        s.log()
    );
    drop(s);
    let s = start(&data, &ring_2(true), &[]);
    let status = ok(&s, &["keys", "status"]);
    let rows: Vec<Vec<&str>> = status
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[1][..5], ["1", "no", "yes", "2", "1"], "{status}");
    assert!(status.contains("plaintext signing secrets: 0"), "{status}");
    drop(s);
    let envs = ring_2(false);
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = refused(&data, &envs);
    assert!(
        log.contains(
            "key version 1 is missing from the keyring but 2 stored values and 1 function signing secret use it"
        ),
        "{log}"
    );

    let s = start(&data, &ring_2(true), &[]);
    let summary = ok(&s, &["keys", "rewrap", "--batch", "2"]);
    assert_eq!(
        summary,
        "rewrapped 2, already current 0, unreadable 0, updated concurrently 0\n\
         function signing secrets: rewrapped 1, already current 0, unreadable 0, updated concurrently 0\n"
    );
    let verified = ok(&s, &["keys", "verify"]);
    assert_eq!(
        verified,
        "checked 2 values: 0 unreadable\nchecked 1 function signing secret: 0 unreadable\n"
    );
    drop(s);
    let s = start(&data, &ring_2(false), &[]);
    let keys = get(&s, "/v1/keys").await;
    assert_eq!(keys["keys"][0]["signingSecrets"], 1, "{keys}");
    assert_eq!(keys["keys"][0]["version"], 2, "{keys}");
}

/// Starts `coffer serve` with `envs` expecting a refusal; returns its stderr.
fn refused(data: &Path, envs: &[(&str, &str)]) -> String {
    let mut s = ServerProcess::spawn(data, envs, &[]);
    assert!(!s.wait_exit(), "coffer serve must refuse:\n{}", s.log());
    s.log()
}

#[tokio::test]
async fn key_material_in_the_keyring_file_variable_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for value in [K1.to_owned(), format!("/nonexistent/{K2}")] {
        let log = refused(&data, &[("COFFER_SECRET_KEYS_FILE", &value)]);
        assert!(
            log.contains("cannot read the keyring file that COFFER_SECRET_KEYS_FILE names"),
            "{log}"
        );
        for key in [K1, K2] {
            assert!(!log.contains(&key[..12]), "key material echoed: {log}");
        }
    }
}

#[tokio::test]
async fn empty_key_variables_count_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let empty = [
        ("COFFER_SECRET_KEYS", ""),
        ("COFFER_SECRET_KEYS_FILE", ""),
        ("COFFER_MASTER_KEY", ""),
    ];
    let mut s = ServerProcess::start(&data, &empty, &[]);
    assert!(s.log().contains("DEV MODE"), "{}", s.log());
    assert!(!s.log().contains("several key settings"), "{}", s.log());
    assert_eq!(get(&s, "/v1/status").await["encryption"], "disabled");
    assert!(s.terminate());

    let with_master = [("COFFER_SECRET_KEYS", ""), ("COFFER_MASTER_KEY", K1)];
    let s = ServerProcess::start(&data, &with_master, &[]);
    assert_eq!(get(&s, "/v1/status").await["currentKeyVersion"], 1);
    assert!(!s.log().contains("several key settings"), "{}", s.log());
}

#[tokio::test]
async fn several_key_variables_warn_which_one_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring_2(true);
    let envs = [
        ("COFFER_SECRET_KEYS", ring[0].1.as_str()),
        ("COFFER_MASTER_KEY", K1),
    ];
    let s = ServerProcess::start(&dir.path().join("data"), &envs, &[]);
    let log = s.log();
    assert!(
        log.contains(
            "several key settings are set: COFFER_SECRET_KEYS is used, COFFER_MASTER_KEY ignored"
        ),
        "{log}"
    );
    assert_eq!(get(&s, "/v1/status").await["currentKeyVersion"], 2);
    assert!(!log.contains(K1) && !log.contains(K2), "{log}");
}

#[tokio::test]
async fn a_keyring_file_other_users_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    std::fs::write(
        &file,
        format!(r#"{{"currentKeyVersion": 1, "keys": {{"1": "{K1}"}}}}"#),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let envs = [("COFFER_SECRET_KEYS_FILE", file.to_str().unwrap())];
    let mut s = ServerProcess::start(&dir.path().join("data"), &envs, &[]);
    let log = s.log();
    assert!(
        log.contains("accessible to other users (mode 644); chmod 600 it"),
        "{log}"
    );
    assert!(!log.contains(K1), "{log}");
    assert!(s.terminate());

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = ServerProcess::start(&dir.path().join("data"), &envs, &[]);
    assert!(!s.log().contains("chmod 600"), "{}", s.log());
}

#[test]
fn a_key_variable_that_is_not_utf8_is_refused_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = clean_command(&["serve", "--listen", "127.0.0.1:0", "--data-dir"]);
    cmd.arg(&data)
        .env("COFFER_MASTER_KEY", std::ffi::OsStr::from_bytes(b"\xffkey"));
    let mut s = ServerProcess::spawn_command(cmd, &data);
    assert!(!s.wait_exit(), "must refuse:\n{}", s.log());
    let log = s.log();
    assert!(
        log.contains("COFFER_MASTER_KEY is not valid UTF-8"),
        "{log}"
    );
    assert!(
        !log.contains("DEV MODE"),
        "never dev mode by accident: {log}"
    );
}
