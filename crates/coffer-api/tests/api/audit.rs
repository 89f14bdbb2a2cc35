//! `GET /v1/audit`, `GET /v1/audit/verify` and the audit of denied requests.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{self, Server};

/// Every entry matching `query` (e.g. `result=denied`), following `nextCursor` with pages of
/// `page` rows, as `key`.
async fn all_entries(server: &Server, key: &str, query: &str, page: usize) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let mut path = format!("/v1/audit?limit={page}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (s, b) = server.call(Some(key), Method::GET, &path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        let page_entries = b["entries"].as_array().unwrap();
        assert!(page_entries.len() <= page, "{b}");
        entries.extend(page_entries.iter().cloned());
        match b["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return entries,
        }
    }
    panic!("the cursor never ended");
}

fn seqs(entries: &[Value]) -> Vec<u64> {
    entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// Waits (polling, at most 10 s) until the denied rows matching `keep` stand for `n`
/// attempts; returns those rows. Denials are written once a second.
async fn denied_rows(server: &Server, n: u64, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows: Vec<Value> = all_entries(server, &server.admin, "result=denied", 1000)
            .await
            .into_iter()
            .filter(|r| keep(r))
            .collect();
        let total: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
        if total >= n || Instant::now() > deadline {
            assert_eq!(total, n, "{rows:?}");
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn admin_reads_every_row_with_each_field_and_rfc3339_times() {
    let server = harness::start().await;
    server.create_env("prod").await;
    server.put_secret("prod", "A", "v1").await;
    let entries = all_entries(&server, &server.admin, "", 100).await;
    let created = entries
        .iter()
        .find(|e| e["action"] == "secret.created")
        .expect("the secret's row");
    assert_eq!(created["subject"], "system.secret.A.created");
    assert_eq!(created["environment"], "prod");
    assert_eq!(created["name"], "A");
    assert_eq!(created["revision"], 1);
    assert_eq!(created["result"], "allowed");
    assert_eq!(created["count"], 1);
    assert_eq!(created["status"], Value::Null);
    assert!(
        created["actor"]["keyId"]
            .as_str()
            .unwrap()
            .starts_with("ak_")
    );
    assert!(created["actor"]["keyName"].is_string());
    assert!(
        created["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(created["event"].is_u64());
    assert_eq!(created["hash"].as_str().unwrap().len(), 64);
    assert_eq!(created["prevHash"].as_str().unwrap().len(), 64);
    let at = created["at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    let keys: Vec<&String> = created.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 16, "{keys:?}");
    // Rows come in seq order, 1, 2, 3 …
    let s = seqs(&entries);
    assert_eq!(s, (1..=s.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn each_filter_narrows_the_rows() {
    let server = harness::start().await;
    server.create_env("prod").await;
    let (manage_id, _) = server.create_key("manage", Some("prod")).await;
    server.put_secret("prod", "A", "v").await;
    server.put_secret("prod", "A", "w").await;
    server.put_secret("default", "B", "v").await;
    let before = harness_now();
    server.put_config("prod", "flags", json!({"x": 1})).await;
    let all = all_entries(&server, &server.admin, "", 1000).await;
    let count = |f: &dyn Fn(&Value) -> bool| all.iter().filter(|e| f(e)).count();
    let admin_id = all
        .iter()
        .find(|e| e["action"] == "secret.created")
        .unwrap()["actor"]["keyId"]
        .as_str()
        .unwrap()
        .to_owned();

    let cases: Vec<(String, usize)> = vec![
        (
            "environment=prod".into(),
            count(&|e| e["environment"] == "prod"),
        ),
        (
            format!("actor={admin_id}"),
            count(&|e| e["actor"]["keyId"] == admin_id.as_str()),
        ),
        (
            "actor=system".into(),
            count(&|e| e["actor"]["keyId"] == "system"),
        ),
        (
            "action=secret.updated".into(),
            count(&|e| e["action"] == "secret.updated"),
        ),
        (
            "subject=system.secret.*.created".into(),
            count(&|e| {
                let s = e["subject"].as_str().unwrap();
                s.starts_with("system.secret.") && s.ends_with(".created")
            }),
        ),
        (
            "subject=system.apikey.>".into(),
            count(&|e| e["subject"].as_str().unwrap().starts_with("system.apikey.")),
        ),
        ("result=allowed".into(), all.len()),
        ("result=denied".into(), 0),
        (format!("since={before}"), 1),
        (format!("until={before}"), all.len() - 1),
        (
            format!("environment=prod&action=secret.created&actor={admin_id}"),
            1,
        ),
    ];
    for (query, expected) in cases {
        let got = all_entries(&server, &server.admin, &query, 1000).await;
        assert_eq!(got.len(), expected, "{query}: {got:?}");
        assert!(
            expected > 0 || query == "result=denied",
            "{query} tests nothing"
        );
    }
    // The key's own creation row is in its environment.
    let keys = all_entries(&server, &server.admin, "action=apikey.created", 1000).await;
    assert!(keys.iter().any(|e| e["name"] == manage_id.as_str()));
}

/// Now, as RFC 3339, a moment after the last write (rows carry millisecond times).
fn harness_now() -> String {
    std::thread::sleep(Duration::from_millis(5));
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    coffer_core::Timestamp::from_millis(ms).rfc3339()
}

#[tokio::test]
async fn pages_follow_the_cursor_without_missing_or_repeating_a_row() {
    let server = harness::start().await;
    for i in 0..23 {
        server.put_secret("default", &format!("S{i}"), "v").await;
    }
    let whole = seqs(&all_entries(&server, &server.admin, "", 1000).await);
    assert!(whole.len() > 23);
    for page in [1, 7, 23, 100] {
        assert_eq!(
            seqs(&all_entries(&server, &server.admin, "", page).await),
            whole,
            "pages of {page}"
        );
    }
    // Filtered pages too.
    let created = seqs(&all_entries(&server, &server.admin, "action=secret.created", 1000).await);
    assert_eq!(created.len(), 23);
    assert_eq!(
        seqs(&all_entries(&server, &server.admin, "action=secret.created", 4).await),
        created
    );
}

#[tokio::test]
async fn a_manage_key_reads_only_its_environment_and_a_runtime_key_nothing() {
    let server = harness::start().await;
    server.create_env("prod").await;
    let (_, manage) = server.create_key("manage", Some("prod")).await;
    let (_, runtime) = server.create_key("runtime", Some("prod")).await;
    server.put_secret("prod", "A", "v").await;
    server.put_secret("default", "B", "v").await;

    let own = all_entries(&server, &manage, "", 1000).await;
    assert!(own.len() >= 2, "{own:?}");
    assert!(own.iter().all(|e| e["environment"] == "prod"), "{own:?}");
    assert_eq!(
        seqs(&all_entries(&server, &manage, "environment=prod", 1000).await),
        seqs(&own)
    );
    for (key, path) in [
        (&manage, "/v1/audit?environment=default"),
        (&runtime, "/v1/audit"),
        (&runtime, "/v1/audit?environment=prod"),
        (&manage, "/v1/audit/verify"),
        (&runtime, "/v1/audit/verify"),
    ] {
        let (s, b) = server.call(Some(key), Method::GET, path, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {b}");
        assert_eq!(b["error"]["code"], "forbidden");
    }
    let (s, _) = server.call(None, Method::GET, "/v1/audit", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_query_parameters_are_refused_with_400() {
    let server = harness::start().await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "since=yesterday",
        "until=2026-01-01",
        "actor=bob",
        "environment=Bad_Env",
        "subject=a..b",
        "subject=a.>.b",
        "result=maybe",
        "cursor=!!",
        "cursor=eA",
        "bogus=1",
        &format!("action={}", "a".repeat(257)),
    ] {
        let (s, b) = server
            .admin(Method::GET, &format!("/v1/audit?{query}"), None)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {b}");
        assert_eq!(b["error"]["code"], "invalid_query", "{query}");
    }
    let (s, b) = server
        .admin(Method::GET, "/v1/audit/verify?x=1", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
}

#[tokio::test]
async fn a_burst_of_denied_requests_becomes_a_few_rows_whose_counts_add_up() {
    let server = harness::start().await;
    let sent = 120u64;
    let mut tasks = Vec::new();
    for i in 0..sent {
        let http = server.http.clone();
        let url = format!("{}/v1/environments/default/secrets", server.base);
        tasks.push(tokio::spawn(async move {
            let resp = http
                .get(url)
                .bearer_auth(format!("ck_admin_guess{i}"))
                .header("user-agent", "burst-test/1")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = denied_rows(&server, sent, |r| {
        r["action"] == "GET /v1/environments/{env}/secrets"
    })
    .await;
    // One row per second at most for one caller and route: the burst spans few seconds.
    assert!(rows.len() <= 5, "{} rows: {rows:?}", rows.len());
    for r in &rows {
        assert_eq!(r["result"], "denied");
        assert_eq!(r["status"], 401);
        assert_eq!(r["actor"]["keyId"], Value::Null, "401 names no key");
        assert_eq!(r["environment"], "default");
        assert_eq!(r["subject"], "GET /v1/environments/{env}/secrets");
        assert!(r["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(r["userAgent"], "burst-test/1");
    }
}

#[tokio::test]
async fn a_403_row_names_the_key_the_route_and_the_environment() {
    let server = harness::start().await;
    server.create_env("prod").await;
    let (id, manage) = server.create_key("manage", Some("prod")).await;
    for _ in 0..3 {
        let (s, _) = server
            .call(
                Some(&manage),
                Method::PUT,
                "/v1/environments/default/secrets/X",
                Some(json!({"value": "never-stored"})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    // A route that does not exist is not audited, whatever the key.
    let (s, _) = server
        .call(Some("ck_admin_nope"), Method::GET, "/v1/nowhere", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let rows = denied_rows(&server, 3, |r| r["status"] == 403).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["actor"]["keyId"], id.as_str());
    assert_eq!(r["actor"]["keyName"], "manage key");
    assert_eq!(r["action"], "PUT /v1/environments/{env}/secrets/{name}");
    assert_eq!(r["environment"], "default");
    assert_eq!(r["count"], 3);
    let all = all_entries(&server, &server.admin, "result=denied", 1000).await;
    assert!(all.iter().all(|r| r["action"] != "GET /v1/nowhere"));
    // The manage key sees the denial in its own environment? No: it was in `default`.
    let own = all_entries(&server, &manage, "result=denied", 1000).await;
    assert!(own.is_empty(), "{own:?}");
}

#[tokio::test]
async fn verify_walks_an_untouched_log_and_finds_it_whole() {
    let server = harness::start().await;
    for i in 0..5 {
        server.put_secret("default", &format!("S{i}"), "v").await;
    }
    let (s, b) = server.admin(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["ok"], true, "{b}");
    assert_eq!(b["firstBroken"], Value::Null);
    assert_eq!(b["rows"], b["headSeq"]);
    let last = all_entries(&server, &server.admin, "", 1000).await;
    let last = last.last().unwrap();
    assert_eq!(b["headSeq"], last["seq"]);
    assert_eq!(b["headHash"], last["hash"]);
}

#[tokio::test]
async fn no_audit_row_contains_a_secret_or_config_value() {
    let server = harness::start().await;
    let canary = format!("canary-{}", std::process::id());
    server.put_secret("default", "TOKEN", &canary).await;
    server
        .put_secret("default", "TOKEN", &format!("{canary}-2"))
        .await;
    server
        .put_config("default", "cfg", json!({ "v": format!("{canary}-cfg") }))
        .await;
    let (s, _) = server
        .call(
            Some("ck_admin_wrong"),
            Method::PUT,
            "/v1/environments/default/secrets/TOKEN",
            Some(json!({ "value": format!("{canary}-denied") })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    denied_rows(&server, 1, |_| true).await;
    let (s, body) = server
        .admin(Method::GET, "/v1/audit?limit=1000", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let text = body.to_string();
    assert!(text.contains("TOKEN"), "the rows name the secret");
    assert!(
        !text.contains(&canary),
        "a value reached the audit log: {text}"
    );
}
