//! Many stateless `coffer serve` nodes on one PostgreSQL, through the real binary: a write
//! on one is read on the other at once, compare-and-set across nodes loses no update, a
//! revoked key stops working everywhere, events and the audit chain span both nodes, a
//! rewrap cut on one node completes on the other, `kill -9` loses no acknowledged write, a
//! node stopped mid-writes (SIGSTOP) holds up the other for seconds only, a
//! PostgreSQL outage is answered fast with 503 and recovered from by itself, and the
//! database holds no plaintext.
//!
//! Needs `COFFER_TEST_DATABASE_URL` (set by `scripts/test.sh` through `scripts/postgres.sh`);
//! each test gets a database of its own. The outage test starts its own cluster.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    ServerProcess, Signal, TestDb, clean_command, http, psql, random_suffix, send_signal,
};
use serde_json::{Value, json};

const K1: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const K2: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";
const ADMIN: &str = "ck_admin_pg_nodes_test_seed_0123456789abcdef";

fn ring_1() -> Vec<(&'static str, String)> {
    vec![("COFFER_MASTER_KEY", K1.to_owned())]
}

fn ring_2() -> Vec<(&'static str, String)> {
    vec![(
        "COFFER_SECRET_KEYS",
        format!(r#"{{"currentKeyVersion": 2, "keys": {{"1": "{K1}", "2": "{K2}"}}}}"#),
    )]
}

/// A node on `url`, with the seeded admin key; its data dir holds only the lock and log.
fn node(data: &Path, url: &str, keys: &[(&'static str, String)]) -> ServerProcess {
    let mut envs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.push(("COFFER_DATABASE_URL", url));
    envs.push(("COFFER_ADMIN_KEY", ADMIN));
    ServerProcess::start(data, &envs, &[])
}

fn coffer(s: &ServerProcess, args: &[&str]) -> std::process::Output {
    clean_command(args)
        .env("COFFER_ADDR", &s.base)
        .env("COFFER_API_KEY", ADMIN)
        .output()
        .expect("coffer")
}

async fn send(
    method: reqwest::Method,
    s: &ServerProcess,
    key: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http()
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(key)
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn put(s: &ServerProcess, name: &str, body: Value) -> (u16, Value) {
    let path = format!("/v1/environments/default/secrets/{name}");
    send(reqwest::Method::PUT, s, ADMIN, &path, Some(body)).await
}

async fn meta(s: &ServerProcess, name: &str) -> (u16, Value) {
    let path = format!("/v1/environments/default/secrets/{name}");
    send(reqwest::Method::GET, s, ADMIN, &path, None).await
}

/// Values per key version, from `GET /v1/keys`.
async fn values_per_version(s: &ServerProcess) -> Vec<(u64, u64)> {
    let (_, keys) = send(reqwest::Method::GET, s, ADMIN, "/v1/keys", None).await;
    keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["version"].as_u64().unwrap(),
                k["values"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_behave_as_one_server() {
    let db = TestDb::create("nodes");
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a"), &db.url, &ring_1());
    let b = node(&dir.path().join("b"), &db.url, &ring_1());

    // A write on A is read on B at once.
    let (status, _) = put(&a, "SHARED", json!({"value": "v1"})).await;
    assert_eq!(status, 201);
    let (status, seen) = meta(&b, "SHARED").await;
    assert_eq!((status, seen["revision"].as_u64()), (200, Some(1)));

    // 16 compare-and-set tasks, split across both nodes, lose no update.
    let nodes = [a.base.clone(), b.base.clone()];
    let mut tasks = Vec::new();
    for t in 0..16 {
        let base = nodes[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let http = http();
            let url = format!("{base}/v1/environments/default/secrets/SHARED");
            let mut won = 0u64;
            for _ in 0..15 {
                let seen: Value = http
                    .get(&url)
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let rev = seen["revision"].as_u64().unwrap();
                let resp = http
                    .put(&url)
                    .bearer_auth(ADMIN)
                    .json(&json!({"value": "cas", "expectedRevision": rev}))
                    .send()
                    .await
                    .unwrap();
                match resp.status().as_u16() {
                    200 => won += 1,
                    409 => {}
                    other => panic!("unexpected status {other}"),
                }
            }
            won
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap();
    }
    assert!(won > 0);
    let (_, after) = meta(&a, "SHARED").await;
    assert_eq!(
        after["revision"].as_u64(),
        Some(1 + won),
        "no update was lost"
    );

    // A key revoked on A: its writes on B are refused at once, its reads within the
    // authentication cache's lifetime (one second).
    let (status, created) = send(
        reqwest::Method::POST,
        &a,
        ADMIN,
        "/v1/api-keys",
        Some(json!({"name": "ci", "role": "manage", "environment": "default"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let list = "/v1/environments/default/secrets";
    assert_eq!(
        send(reqwest::Method::GET, &b, &key, list, None).await.0,
        200
    );
    let (status, _) = send(
        reqwest::Method::DELETE,
        &a,
        ADMIN,
        &format!("/v1/api-keys/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let revoked_at = Instant::now();
    let write = send(
        reqwest::Method::PUT,
        &b,
        &key,
        "/v1/environments/default/secrets/BY_REVOKED",
        Some(json!({"value": "x"})),
    )
    .await;
    assert_eq!(write.0, 401, "a revoked key writes nothing on another node");
    loop {
        if send(reqwest::Method::GET, &b, &key, list, None).await.0 == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_millis(1500),
            "node B still accepts a key revoked on A after {:?}",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // B's event stream shows a write made on A.
    let mut stream = http()
        .get(format!("{}/v1/events/stream", b.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let (status, _) = put(&a, "FROM_A", json!({"value": "a"})).await;
    assert_eq!(status, 201);
    let wanted = "system.secret.FROM_A.created";
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut text = String::new();
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains(wanted) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "B's stream did not show {wanted} within 10 s"
    );

    // One audit chain over writes from both nodes.
    let verify = coffer(&b, &["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let rows = psql(
        &db.url,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'secret.updated'",
    );
    assert_eq!(rows.trim(), won.to_string(), "one audit row per update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrap_cut_on_one_node_completes_on_another() {
    let db = TestDb::create("nodes");
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a"), &db.url, &ring_1());
    for i in 0..600 {
        let (status, _) = put(&a, &format!("S{i:04}"), json!({"value": format!("v{i}")})).await;
        assert_eq!(status, 201);
    }
    drop(a);
    let mut a = node(&dir.path().join("a"), &db.url, &ring_2());
    let b = node(&dir.path().join("b"), &db.url, &ring_2());
    let mut rewrap = clean_command(&["keys", "rewrap", "--batch", "10"])
        .env("COFFER_ADDR", &a.base)
        .env("COFFER_API_KEY", ADMIN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while values_per_version(&b).await[1].1 < 50 {
        assert!(Instant::now() < deadline, "the rewrap did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill_9();
    let _ = rewrap.wait();
    let cut = values_per_version(&b).await;
    assert!(cut[0].1 > 0, "the rewrap on A was cut short: {cut:?}");
    let out = coffer(&b, &["keys", "rewrap"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("unreadable 0"));
    assert_eq!(values_per_version(&b).await, [(1, 0), (2, 600)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_mid_writes_loses_no_acknowledged_write() {
    let db = TestDb::create("nodes");
    let dir = tempfile::tempdir().unwrap();
    let mut a = node(&dir.path().join("a"), &db.url, &ring_1());
    let b = node(&dir.path().join("b"), &db.url, &ring_1());
    let base = a.base.clone();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let base = base.clone();
            tokio::spawn(async move {
                let http = http();
                let mut acked = Vec::new();
                for i in 0.. {
                    let name = format!("W{w}_{i:05}");
                    let url = format!("{base}/v1/environments/default/secrets/{name}");
                    let sent = http
                        .put(url)
                        .bearer_auth(ADMIN)
                        .json(&json!({"value": "v"}))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().as_u16() == 201 => acked.push(name),
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.kill_9();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 8, "the writers wrote before the kill");
    for name in &acked {
        let (status, _) = meta(&b, name).await;
        assert_eq!(
            status, 200,
            "{name} was acknowledged by A, but B does not have it"
        );
    }
    let verify = coffer(&b, &["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// A node stopped (SIGSTOP, as a paused VM) while 8 writers run on it, possibly inside a
/// batch that holds the journal head (coffer-postgres' `a_stalled_node_holding_the_head_is_cut_off`
/// holds it for certain): the server ends its idle transaction after the idle timeout (the
/// statement timeout, 5 s by default), and the other node's writes go through again well
/// within that plus a margin, not after hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_mid_writes_does_not_stop_the_other() {
    let db = TestDb::create("nodes");
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a"), &db.url, &ring_1());
    let b = node(&dir.path().join("b"), &db.url, &ring_1());
    let base = a.base.clone();
    // Bounded: the writers stop at the first failure (a request cut off while A is
    // stopped), once A is running again, or after 20,000 writes each.
    let resumed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let base = base.clone();
            let resumed = resumed.clone();
            tokio::spawn(async move {
                let http = http();
                for i in 0..20_000 {
                    if resumed.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let url = format!("{base}/v1/environments/default/secrets/S{w}_{i:05}");
                    let sent = http
                        .put(url)
                        .bearer_auth(ADMIN)
                        .json(&json!({"value": "v"}))
                        .timeout(Duration::from_secs(3))
                        .send()
                        .await;
                    if !matches!(sent, Ok(r) if r.status().is_success()) {
                        break;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pid = a.child.id();
    send_signal(pid, Signal::STOP).unwrap();
    let started = Instant::now();
    let mut done = None;
    for i in 0.. {
        let (status, _) = put(&b, &format!("B{i}"), json!({"value": "v"})).await;
        if status == 201 {
            done = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    send_signal(pid, Signal::CONT).unwrap();
    resumed.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let took = done.expect("B could not write within 20 s of A stopping");
    assert!(took < Duration::from_secs(12), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_holds_no_plaintext() {
    let db = TestDb::create("nodes");
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a"), &db.url, &ring_1());
    let canary = format!("pg-canary-{}", random_suffix());
    let (status, _) = put(&a, "CANARY", json!({"value": canary})).await;
    assert_eq!(status, 201);
    let (status, _) = send(
        reqwest::Method::PUT,
        &a,
        ADMIN,
        "/v1/environments/default/config/NOT_SECRET",
        Some(json!({"value": "config is plaintext"})),
    )
    .await;
    assert_eq!(status, 201);
    let dump = Command::new("pg_dump")
        .arg(&db.url)
        .output()
        .expect("pg_dump (install postgresql-client)");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        text.contains("config is plaintext"),
        "the dump is of this database"
    );
    assert!(!text.contains(&canary), "pg_dump shows a secret value");
}

/// A PostgreSQL cluster of the test's own (initdb/pg_ctl in a temp dir, on a free port), so
/// that it can be stopped mid-traffic without touching the machine's server.
struct PrivateCluster {
    bindir: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("PostgreSQL server binaries (initdb, pg_ctl) are needed: apt-get install postgresql");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PrivateCluster { bindir, dir, port };
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        cluster.run(&format!(
            "'{}' -D '{}' -U postgres -A trust >'{}' 2>&1",
            cluster.bindir.join("initdb").display(),
            cluster.data().display(),
            cluster.dir.path().join("initdb.log").display()
        ));
        cluster.start_again();
        cluster
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start_again(&self) {
        self.run(&format!(
            "'{}' -D '{}' -o '-p {} -k {} -c listen_addresses=127.0.0.1' -l '{}' -w start >/dev/null",
            self.bindir.join("pg_ctl").display(),
            self.data().display(),
            self.port,
            self.dir.path().display(),
            self.dir.path().join("pg.log").display()
        ));
    }

    /// `pg_ctl stop -m immediate`: the server goes away as in a crash.
    fn stop(&self) {
        self.run(&format!(
            "'{}' -D '{}' -m immediate stop >/dev/null",
            self.bindir.join("pg_ctl").display(),
            self.data().display()
        ));
    }

    fn run(&self, shell: &str) {
        let status = self.shell(shell).unwrap();
        assert!(status.success(), "{shell} failed");
    }

    /// Runs `shell` as the user PostgreSQL runs as (`postgres` when the tests run as root).
    fn shell(&self, shell: &str) -> std::io::Result<std::process::ExitStatus> {
        if running_as_root() {
            Command::new("su").args(["postgres", "-c", shell]).status()
        } else {
            Command::new("sh").args(["-c", shell]).status()
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.shell(&format!(
            "'{}' -D '{}' -m immediate stop >/dev/null 2>&1",
            self.bindir.join("pg_ctl").display(),
            self.data().display()
        ));
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_is_answered_fast_with_503_and_recovered_from_by_itself() {
    let cluster = PrivateCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut a = node(&dir.path().join("a"), &cluster.url(), &ring_1());
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("BEFORE_{i}");
        assert_eq!(put(&a, &name, json!({"value": "v"})).await.0, 201);
        acked.push(name);
    }
    cluster.stop();
    for i in 0..5 {
        let began = Instant::now();
        let (status, body) = put(&a, &format!("DURING_{i}"), json!({"value": "v"})).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "backend_unavailable", "{body}");
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "an answer took {:?}: it must come within the configured timeouts",
            began.elapsed()
        );
        let (status, _) = meta(&a, &acked[0]).await;
        assert_eq!(status, 503);
    }
    let ready = http()
        .get(format!("{}/readyz", a.base))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status().as_u16(),
        503,
        "/readyz says the backend is gone"
    );
    assert!(
        a.child.try_wait().unwrap().is_none(),
        "the server keeps running"
    );
    cluster.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if put(&a, "AFTER", json!({"value": "v"})).await.0 == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 30 s:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for name in &acked {
        assert_eq!(
            meta(&a, name).await.0,
            200,
            "{name} was acknowledged before the outage"
        );
    }
    let ready = http()
        .get(format!("{}/readyz", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert!(a.terminate(), "a clean stop after the outage");
}
