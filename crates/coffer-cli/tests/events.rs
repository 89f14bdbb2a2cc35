//! The event stream through the real binary: `coffer events tail` against `coffer serve`,
//! its reconnection after a dropped connection, and shutdown with a stream open.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ChildGuard, ServerProcess, clean_command, http};
use reqwest::StatusCode;
use serde_json::Value;

const MASTER_KEY: &str = "7d1f0c9e6a2b8c7d5e3f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

/// Every wait ends by this deadline.
const WAIT: Duration = Duration::from_secs(20);

fn start() -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &[("COFFER_MASTER_KEY", MASTER_KEY)], &[]);
    (dir, server)
}

/// Lines of a child's output, read on a thread of their own.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn of(reader: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines(rx)
    }

    /// The next line, within the deadline.
    fn next(&self, what: &str) -> String {
        self.0
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no line ({what}) within {WAIT:?}"))
    }

    /// Skips lines until one contains `needle`.
    fn until(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line containing {needle:?} within {WAIT:?}"),
            }
        }
    }
}

/// `coffer events tail ARGS` against `addr` with `key`; returns it with its stdout and
/// stderr lines, once it said it is following (so later changes reach it).
fn tail(addr: &str, key: &str, args: &[&str]) -> (ChildGuard, Lines, Lines) {
    let mut cmd = clean_command(&["events", "tail"]);
    cmd.args(args)
        .env("COFFER_ADDR", addr)
        .env("COFFER_API_KEY", key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child: Child = cmd.spawn().expect("spawn coffer events tail");
    let out = Lines::of(child.stdout.take().unwrap());
    let err = Lines::of(child.stderr.take().unwrap());
    err.until("following events");
    (ChildGuard(child), out, err)
}

/// `coffer secret set NAME VALUE --env default` against `addr`; must succeed.
fn set(addr: &str, key: &str, name: &str, value: &str) {
    let out = clean_command(&["secret", "set", name, value, "--env", "default"])
        .env("COFFER_ADDR", addr)
        .env("COFFER_API_KEY", key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn subject_of(line: &str) -> String {
    let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    event["subject"].as_str().unwrap().to_owned()
}

#[test]
fn tail_prints_an_event_for_a_secret_another_command_sets() {
    let (_dir, s) = start();
    let admin = s.admin_key();
    let (_json_tail, json, _) = tail(&s.base, &admin, &["--json"]);
    let (_human_tail, human, _) = tail(
        &s.base,
        &admin,
        &["--subject", "system.secret.*.created", "--env", "default"],
    );
    set(&s.base, &admin, "TAILED", "tail-canary-value-81c2");

    let line = json.next("the JSON event");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["subject"], "system.secret.TAILED.created", "{line}");
    assert_eq!(event["environment"], "default");
    assert_eq!(event["revision"], 1);
    assert!(event["id"].as_u64().unwrap() > 0);

    let line = human.next("the human event");
    assert!(line.contains("system.secret.TAILED.created"), "{line}");
    assert!(line.contains("default"), "{line}");
    assert!(line.contains("(ak_"), "names the actor: {line}");
    assert!(
        line.contains('T') && line.contains('Z'),
        "an RFC 3339 time: {line}"
    );
    assert!(!line.contains("tail-canary-value-81c2"));
}

/// A TCP relay between a client and the server that the test can cut, and hold new
/// connections at until it opens again.
struct Cutter {
    addr: String,
    open: tokio::sync::watch::Sender<bool>,
    cuts: tokio::sync::watch::Sender<u64>,
}

impl Cutter {
    async fn start(upstream: std::net::SocketAddr) -> Cutter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let open = tokio::sync::watch::Sender::new(true);
        let cuts = tokio::sync::watch::Sender::new(0);
        let (open_tx, cuts_tx) = (open.clone(), cuts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let (mut open, mut cuts) = (open_tx.subscribe(), cuts_tx.subscribe());
                tokio::spawn(async move {
                    if open.wait_for(|o| *o).await.is_err() {
                        return;
                    }
                    cuts.borrow_and_update();
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {} // dropping both ends closes them
                    }
                });
            }
        });
        Cutter { addr, open, cuts }
    }

    /// Closes every relayed connection and holds new ones.
    fn cut_and_hold(&self) {
        self.open.send_replace(false);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn open(&self) {
        self.open.send_replace(true);
    }
}

// Multi-threaded: the test body blocks on child processes while the relay's tasks run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reconnects_with_last_event_id_and_misses_nothing() {
    let (_dir, s) = start();
    let admin = s.admin_key();
    let cutter = Cutter::start(s.addr.unwrap()).await;
    let (_tail, out, err) = tail(
        &cutter.addr,
        &admin,
        &["--json", "--subject", "system.secret.>"],
    );
    set(&s.base, &admin, "BEFORE_CUT", "v");
    assert_eq!(
        subject_of(&out.next("first")),
        "system.secret.BEFORE_CUT.created"
    );
    cutter.cut_and_hold();
    err.until("reconnecting");
    // The tail is disconnected (its new connection is held): these commit meanwhile.
    set(&s.base, &admin, "WHILE_CUT_1", "v");
    set(&s.base, &admin, "WHILE_CUT_2", "v");
    cutter.open();
    set(&s.base, &admin, "AFTER", "v");
    let seen: Vec<String> = (0..3).map(|_| subject_of(&out.next("resumed"))).collect();
    assert_eq!(
        seen,
        [
            "system.secret.WHILE_CUT_1.created",
            "system.secret.WHILE_CUT_2.created",
            "system.secret.AFTER.created",
        ]
    );
    err.until("reconnected");
}

#[tokio::test]
async fn sigterm_stops_serve_promptly_with_an_event_stream_open() {
    let (_dir, mut s) = start();
    let admin = s.admin_key();
    let mut stream = http()
        .get(format!("{}/v1/events/stream", s.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.chunk().await.unwrap().is_some(),
        "the stream is open"
    );
    let began = Instant::now();
    assert!(s.terminate(), "a clean exit");
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "serve took {took:?} to stop with a stream open (drain timeout 30 s)"
    );
    // The stream ended with the server.
    let rest = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream did not end");
}
