//! Environment incarnations through the real binary: `prod` is deleted and created again
//! while a writer streams values into it, and nothing of an old incarnation survives.

mod common;

use std::time::Duration;

use common::{ServerProcess, clean_command, http};
use serde_json::{Value, json};

const KEY: &str = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";

/// A writer streams PUTs into `prod` over 8 connections while `prod` is deleted and created
/// again three times. Afterwards every secret listed in `prod` was written after its last
/// creation, and `coffer keys verify` opens every stored value: a value sealed for an old
/// incarnation would not open under the new one's associated data, so it would be reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_streaming_into_a_recreated_environment_leaves_nothing_of_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = ServerProcess::start(&dir.path().join("data"), &[("COFFER_MASTER_KEY", KEY)], &[]);
    let admin = s.admin_key();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let req = http()
            .request(method, format!("{}{path}", s.base))
            .bearer_auth(&admin)
            .timeout(Duration::from_secs(30));
        let req = match body {
            Some(body) => req.json(&body),
            None => req,
        };
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let create = || {
        call(
            reqwest::Method::POST,
            "/v1/environments",
            Some(json!({"name": "prod"})),
        )
    };
    assert_eq!(create().await.0, 201);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (base, admin, stop) = (s.base.clone(), admin.clone(), stop.clone());
            tokio::spawn(async move {
                let http = http();
                let (mut written, mut i) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let url = format!("{base}/v1/environments/prod/secrets/W{w}_{}", i % 40);
                    let resp = http
                        .put(url)
                        .bearer_auth(&admin)
                        .json(&json!({"value": format!("value {w} {i}")}))
                        .send()
                        .await
                        .unwrap();
                    match resp.status().as_u16() {
                        200 | 201 => written += 1,
                        404 => {} // between a deletion and the next creation
                        other => panic!("unexpected status {other}"),
                    }
                }
                written
            })
        })
        .collect();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            call(reqwest::Method::DELETE, "/v1/environments/prod", None)
                .await
                .0,
            204
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(create().await.0, 201);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(written > 0, "the writers wrote");

    let (_, envs) = call(reqwest::Method::GET, "/v1/environments", None).await;
    let prod = envs["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "prod")
        .unwrap()
        .clone();
    let born = prod["createdAt"].as_str().unwrap().to_owned();
    let (status, page) = call(
        reqwest::Method::GET,
        "/v1/environments/prod/secrets?limit=1000",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let listed = page["secrets"].as_array().unwrap();
    assert!(!listed.is_empty(), "the last incarnation got writes");
    for meta in listed {
        // RFC 3339 UTC timestamps of one format compare as strings.
        let created = meta["createdAt"].as_str().unwrap();
        assert!(
            created >= born.as_str(),
            "{} was created at {created}, before prod's last creation at {born}",
            meta["name"]
        );
        assert_eq!(meta["status"], "ok");
    }
    let out = clean_command(&["keys", "verify", "--json"])
        .env("COFFER_ADDR", &s.base)
        .env("COFFER_API_KEY", &admin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a stored value does not open: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unreadable"], json!([]));
    let (_, default) = call(
        reqwest::Method::GET,
        "/v1/environments/default/secrets",
        None,
    )
    .await;
    let others = default["secrets"].as_array().unwrap().len();
    assert_eq!(
        report["checked"].as_u64(),
        Some((listed.len() + others) as u64),
        "no stored value outside the listed ones (an old incarnation's) is left"
    );
}
