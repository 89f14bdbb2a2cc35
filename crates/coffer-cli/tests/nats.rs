//! The NATS relay against a real `nats-server` (JetStream): events arrive in order, at least
//! once and without duplicates, writes never wait on NATS, and an outage only delays them.
//!
//! Needs the `nats-server` binary (Debian: `apt-get install nats-server`); without it the
//! test fails saying so. It starts its own server on a free port with a temp store dir.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::{ChildGuard, ServerProcess, Signal, free_port, http, send_signal};
use futures_util::StreamExt;
use serde_json::{Value, json};

const MASTER_KEY: &str = "2a1f0c9e6a2b8c7d5e3f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

/// Every wait ends by this deadline.
const WAIT: Duration = Duration::from_secs(60);

/// `nats-server -js` on `port` with its store in `store`, accepting connections when this
/// returns.
fn start_nats(port: u16, store: &Path, log: &Path) -> ChildGuard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run nats-server ({e}): this test needs the NATS server binary on PATH \
                 (Debian/Ubuntu: apt-get install nats-server; or a release from the NATS project)"
            )
        });
    let guard = ChildGuard(child);
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    guard
}

fn stop_nats(mut nats: ChildGuard) {
    send_signal(nats.0.id(), Signal::TERM).expect("SIGTERM to nats-server");
    let _ = nats.0.wait();
}

async fn put(s: &ServerProcess, admin: &str, name: &str) -> Duration {
    let began = Instant::now();
    let resp = http()
        .put(format!("{}/v1/environments/default/secrets/{name}", s.base))
        .bearer_auth(admin)
        .json(&json!({ "value": "relay-canary-5e1d" }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    began.elapsed()
}

/// Every message on the stream: (subject, Nats-Msg-Id, event JSON), once `done` says the
/// ones it waits for are there.
async fn read_stream(
    url: &str,
    done: impl Fn(&[(String, String, Value)]) -> bool,
) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + WAIT;
    let client = loop {
        match async_nats::connect(url).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to NATS: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let js = jetstream::new(client);
    let stream = loop {
        match js.get_stream("COFFER_EVENTS").await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "no stream COFFER_EVENTS: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("a consumer");
    let mut got = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetch");
        while let Some(message) = batch.next().await {
            let message = message.expect("a message");
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let event: Value = serde_json::from_slice(&message.payload).expect("JSON payload");
            got.push((message.subject.to_string(), id, event));
            message.ack().await.expect("ack");
        }
        if done(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the stream holds only {got:?} after {WAIT:?}"
        );
    }
}

fn names(got: &[(String, String, Value)]) -> Vec<String> {
    got.iter()
        .filter_map(|(_, _, e)| e["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_delivers_every_event_in_order_across_a_nats_outage() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let store = dir.path().join("jetstream");
    let nats_log = dir.path().join("nats.log");
    let nats = start_nats(port, &store, &nats_log);
    let mut s = ServerProcess::start(
        &dir.path().join("data"),
        &[
            ("COFFER_MASTER_KEY", MASTER_KEY),
            ("COFFER_NATS_URL", &url),
            ("COFFER_NATS_SUBJECT_PREFIX", "coffer"),
        ],
        &[],
    );
    let admin = s.admin_key();
    for name in ["UP_1", "UP_2", "UP_3"] {
        put(&s, &admin, name).await;
    }
    let before = read_stream(&url, |got| names(got).contains(&"UP_3".to_owned())).await;
    assert!(
        before
            .iter()
            .all(|(subject, _, _)| subject.starts_with("coffer.system."))
    );

    stop_nats(nats);
    let outage: Vec<String> = (1..=20).map(|i| format!("DOWN_{i:02}")).collect();
    let began = Instant::now();
    for name in &outage {
        let took = put(&s, &admin, name).await;
        assert!(
            took < Duration::from_secs(2),
            "a write waited {took:?} on NATS"
        );
    }
    assert!(began.elapsed() < Duration::from_secs(10));
    // Let the outage outlast an acknowledgement timeout, so the relay gives up its
    // connection and has to start over (not just ride on the client's own reconnect).
    let deadline = Instant::now() + WAIT;
    while !s.log().contains("events are not being published") {
        assert!(
            Instant::now() < deadline,
            "the relay never noticed the outage:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _nats = start_nats(port, &store, &nats_log);
    let last = outage.last().unwrap().clone();
    let got = read_stream(&url, |got| names(got).contains(&last)).await;

    // In order, no event twice, each with its subject and message id.
    let ids: Vec<u64> = got
        .iter()
        .map(|(_, _, e)| e["id"].as_u64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids in order, no duplicate: {ids:?}"
    );
    for (subject, msg_id, event) in &got {
        assert_eq!(
            subject,
            &format!("coffer.{}", event["subject"].as_str().unwrap())
        );
        assert!(msg_id.starts_with("coffer-"), "{msg_id}");
        assert!(
            msg_id.ends_with(&format!("-{}", event["id"])),
            "{msg_id} {event}"
        );
    }
    let down: Vec<String> = names(&got)
        .into_iter()
        .filter(|n| n.starts_with("DOWN_"))
        .collect();
    assert_eq!(down, outage, "all 20, in order");
    // Nothing between the writes is missing: the secret events' ids are consecutive
    // with whatever else committed in between (nothing else did).
    let secret_ids: Vec<u64> = got
        .iter()
        .filter(|(_, _, e)| e["subject"].as_str().unwrap().starts_with("system.secret."))
        .map(|(_, _, e)| e["id"].as_u64().unwrap())
        .collect();
    assert!(
        secret_ids.windows(2).all(|w| w[1] == w[0] + 1),
        "{secret_ids:?}"
    );
    // The position advances once acknowledged: a restart would not start over.
    let last_id = *ids.last().unwrap();
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("data/coffer.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let position: Option<u64> = db
            .query_row(
                "SELECT event_seq FROM relay_positions WHERE name = 'nats'",
                [],
                |r| r.get(0),
            )
            .ok();
        if position == Some(last_id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay position {position:?}, last event {last_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let raw = format!("{got:?}");
    assert!(!raw.contains("relay-canary-5e1d"), "a value reached NATS");
    assert!(!s.log().contains("relay-canary-5e1d"));

    // The relay stops with the server, promptly.
    let began = Instant::now();
    assert!(s.terminate(), "a clean exit:\n{}", s.log());
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert!(s.log().contains("NATS relay connected"));
}

/// A secret value reaches none of the places the journal feeds or the server keeps: no
/// management response (reads, audit, verify, status, metrics), no byte of the live event
/// stream, no NATS message, no line of the log, no file under the data dir. Every kind of
/// secret change is made with the canary: create, update, import (changed and unchanged),
/// a denied write, delete, an environment's deletion with its secrets, and a rewrap walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_value_reaches_no_response_stream_nats_message_audit_row_log_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let nats = start_nats(
        nats_port,
        &dir.path().join("nats"),
        &dir.path().join("nats.log"),
    );
    let url = format!("nats://127.0.0.1:{nats_port}");
    let data = dir.path().join("data");
    let mut s = ServerProcess::start(
        &data,
        &[("COFFER_MASTER_KEY", MASTER_KEY), ("COFFER_NATS_URL", &url)],
        &[],
    );
    let admin = s.admin_key();
    let canary = format!("canary-{:x}", std::process::id() as u64 * 7919 + 0xc0ffee);
    let c = http();
    let base = s.base.clone();

    // The live stream, read in the background for the whole test.
    let stream = c
        .get(format!("{base}/v1/events/stream"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let streamed = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let mut stream = stream;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(500), stream.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    bytes.extend_from_slice(&chunk);
                    if String::from_utf8_lossy(&bytes).contains("system.environment.doomed.deleted")
                    {
                        break;
                    }
                }
                Ok(_) => break,
                Err(_) => {}
            }
        }
        bytes
    });

    let mut responses: Vec<String> = Vec::new();
    let mut call = async |method: reqwest::Method, path: &str, key: &str, body: Option<Value>| {
        let mut request = c.request(method, format!("{base}{path}")).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        responses.push(text.clone());
        (status, text)
    };
    use reqwest::Method;
    let secret = "/v1/environments/default/secrets/CANARY";
    let value = |suffix: &str| Some(json!({ "value": format!("{canary}-{suffix}") }));
    assert_eq!(call(Method::PUT, secret, &admin, value("1")).await.0, 201);
    assert_eq!(call(Method::PUT, secret, &admin, value("2")).await.0, 200);
    let import = json!({"secrets": [
        {"name": "CANARY", "value": format!("{canary}-2")},
        {"name": "IMPORTED", "value": format!("{canary}-3")},
    ]});
    let imports = "/v1/environments/default/secrets";
    assert_eq!(
        call(Method::POST, imports, &admin, Some(import)).await.0,
        200
    );
    // A runtime key may not write: a denial, audited.
    let (_, created) = call(
        Method::POST,
        "/v1/api-keys",
        &admin,
        Some(json!({"name": "rt", "role": "runtime", "environment": "default"})),
    )
    .await;
    let runtime: Value = serde_json::from_str(&created).unwrap();
    let runtime = runtime["key"].as_str().unwrap().to_owned();
    assert_eq!(call(Method::PUT, secret, &runtime, value("4")).await.0, 403);
    let doomed = "/v1/environments/doomed";
    assert_eq!(
        call(
            Method::POST,
            "/v1/environments",
            &admin,
            Some(json!({"name": "doomed"}))
        )
        .await
        .0,
        201
    );
    let doomed_secret = "/v1/environments/doomed/secrets/GONE";
    assert_eq!(
        call(Method::PUT, doomed_secret, &admin, value("5")).await.0,
        201
    );
    assert_eq!(
        call(Method::POST, "/v1/keys/rewrap", &admin, Some(json!({})))
            .await
            .0,
        200
    );
    // Config values are readable by design, but no event, NATS message or audit row
    // carries them either.
    let config_canary = format!("confval-{:x}", std::process::id() as u64 * 104_729 + 0xbeef);
    let config = "/v1/environments/default/config/flags";
    let config_value = |n: u32| Some(json!({ "value": {"v": format!("{config_canary}-{n}")} }));
    assert_eq!(
        call(Method::PUT, config, &admin, config_value(1)).await.0,
        201
    );
    assert_eq!(
        call(Method::PUT, config, &admin, config_value(2)).await.0,
        200
    );
    assert_eq!(call(Method::DELETE, config, &admin, None).await.0, 204);
    assert_eq!(call(Method::DELETE, secret, &admin, None).await.0, 204);
    assert_eq!(call(Method::DELETE, doomed, &admin, None).await.0, 204);
    for path in [
        "/v1/environments",
        "/v1/environments/default/secrets",
        "/v1/environments/default/secrets/IMPORTED",
        "/v1/api-keys",
        "/v1/keys",
        "/v1/audit?limit=1000",
        "/v1/audit/verify",
        "/v1/status",
        "/metrics",
    ] {
        let (status, _) = call(Method::GET, path, &admin, None).await;
        assert_eq!(status, 200, "{path}");
    }
    let audit: Value = serde_json::from_str(&responses[responses.len() - 4]).unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "secret.created",
        "secret.updated",
        "secret.unchanged",
        "secret.deleted",
        "config.created",
        "config.updated",
        "config.deleted",
        "environment.deleted",
    ] {
        assert!(actions.contains(&expected), "{expected} not in {actions:?}");
    }
    assert!(
        !audit.to_string().contains(&config_canary),
        "an audit row holds a config value"
    );
    for body in &responses {
        assert!(
            !body.contains(&canary),
            "a response holds the value: {body}"
        );
    }

    let streamed = String::from_utf8(streamed.await.unwrap()).unwrap();
    assert!(
        streamed.contains("system.secret.CANARY.deleted"),
        "{streamed}"
    );
    assert!(!streamed.contains(&canary), "the stream holds the value");
    assert!(
        streamed.contains("system.config.flags.deleted"),
        "{streamed}"
    );
    assert!(
        !streamed.contains(&config_canary),
        "the stream holds a config value"
    );

    let messages = read_stream(&url, |got| {
        got.iter()
            .any(|(subject, _, _)| subject == "system.environment.doomed.deleted")
    })
    .await;
    for (subject, _, event) in &messages {
        assert!(
            !event.to_string().contains(&canary),
            "a NATS message holds the value: {subject}"
        );
    }
    assert!(
        messages
            .iter()
            .any(|(subject, _, _)| subject == "system.config.flags.updated"),
        "the config events reached NATS"
    );

    assert!(s.terminate());
    stop_nats(nats);
    assert!(!s.log().contains(&canary), "the log holds the value");
    assert!(
        !s.log().contains(&config_canary),
        "the log holds a config value"
    );
    let mut files = vec![data.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{} holds the value",
                path.display()
            );
        }
    }
}
