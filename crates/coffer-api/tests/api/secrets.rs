//! Secrets: revisions, compare-and-set, pagination, metadata only.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{assert_refused_for_capability, compare_and_set, start};

#[tokio::test]
async fn put_creates_then_updates_with_growing_revisions() {
    let s = start().await;
    let path = "/v1/environments/default/secrets/API_TOKEN";
    let (status, first) = s
        .admin(Method::PUT, path, Some(json!({"value": "one"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(first["revision"], 1);
    assert_eq!(first["keyVersion"], 1);
    assert_eq!(first["environment"], "default");
    let (status, second) = s
        .admin(
            Method::PUT,
            path,
            Some(if compare_and_set() {
                json!({"value": "two", "expectedRevision": 1})
            } else {
                json!({"value": "two"})
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["revision"], 2);
    assert_eq!(second["createdAt"], first["createdAt"]);
    let fields: BTreeSet<&str> = second
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "name",
            "environment",
            "revision",
            "keyVersion",
            "status",
            "createdAt",
            "updatedAt"
        ])
    );
    let (_, got) = s.admin(Method::GET, path, None).await;
    assert_eq!(got, second);
    let delete = if compare_and_set() {
        format!("{path}?expectedRevision=2")
    } else {
        path.to_owned()
    };
    let (status, _) = s.admin(Method::DELETE, &delete, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.admin(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn listing_pages_through_every_secret_once_in_name_order() {
    let s = start().await;
    let mut expected = Vec::new();
    for i in 0..25 {
        let name = format!("S_{i:02}");
        s.put_secret("default", &name, "v").await;
        expected.push(name);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/environments/default/secrets?limit=7".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = s.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for m in page["secrets"].as_array().unwrap() {
            seen.push(m["name"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn sixteen_tasks_of_compare_and_set_lose_no_update() {
    let s = std::sync::Arc::new(start().await);
    s.put_secret("default", "COUNTER", "0").await;
    let path = "/v1/environments/default/secrets/COUNTER";
    if !compare_and_set() {
        let body = json!({"value": "x", "expectedRevision": 1});
        let (status, resp) = s.admin(Method::PUT, path, Some(body)).await;
        return assert_refused_for_capability(status, &resp);
    }
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = 0u64;
            for i in 0..100 {
                let (_, meta) = s.admin(Method::GET, path, None).await;
                let rev = meta["revision"].as_u64().unwrap();
                let body = json!({"value": format!("{t}-{i}"), "expectedRevision": rev});
                let (status, resp) = s.admin(Method::PUT, path, Some(body)).await;
                match status {
                    StatusCode::OK => won += 1,
                    StatusCode::CONFLICT => {
                        assert!(resp["error"]["currentRevision"].as_u64().unwrap() > rev)
                    }
                    other => panic!("unexpected {other}: {resp}"),
                }
            }
            won
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap();
    }
    let (_, meta) = s.admin(Method::GET, path, None).await;
    assert!(won > 0);
    assert_eq!(
        meta["revision"].as_u64().unwrap(),
        1 + won,
        "final revision = 1 + successful updates"
    );
}

#[tokio::test]
async fn status_reports_encryption_and_backend_without_auth() {
    let s = start().await;
    let (status, body) = s.call(None, Method::GET, "/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["encryption"], "enabled");
    assert_eq!(body["currentKeyVersion"], 1);
    // The backend as it describes itself: `db`, or `nats (…)` / `vault (…)` when the suite
    // runs with COFFER_TEST_VALUES.
    let values = std::env::var("COFFER_TEST_VALUES").unwrap_or_default();
    let expected = match values.as_str() {
        "" | "db" => "db",
        "nats" => "nats",
        _ => "vault",
    };
    let backend = body["backend"].as_str().unwrap();
    assert!(
        backend == expected || backend.starts_with(&format!("{expected} (")),
        "{backend}"
    );
    assert!(body["version"].is_string());
}

/// An import is checked whole and applied in one transaction: one bad entry (a value over
/// 64 KiB, a bad name, a name twice) writes nothing, and values that did not change keep
/// their revision.
#[tokio::test]
async fn an_import_is_all_or_nothing_and_skips_unchanged_values() {
    let s = start().await;
    let path = "/v1/environments/default/secrets";
    s.put_secret("default", "KEEP", "same").await;
    s.put_secret("default", "CHANGE", "old").await;
    if !compare_and_set() {
        let body = json!({ "secrets": [{"name": "A", "value": "1"}] });
        let (status, b) = s.admin(Method::POST, path, Some(body)).await;
        return assert_refused_for_capability(status, &b);
    }
    let big = "x".repeat(70_000);
    let refusals = [
        (
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": big}]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            json!([{"name": "A", "value": "1"}, {"name": "bad-name", "value": "2"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!([]), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    let before = s.snapshot().await;
    for (secrets, want) in refusals {
        let (status, b) = s
            .admin(Method::POST, path, Some(json!({ "secrets": secrets })))
            .await;
        assert_eq!(status, want, "{b}");
        assert_eq!(
            s.snapshot().await,
            before,
            "a refused import changed nothing"
        );
    }
    let body = json!({ "secrets": [
        {"name": "KEEP", "value": "same"},
        {"name": "CHANGE", "value": "new"},
        {"name": "NEW", "value": "fresh"},
    ]});
    let (status, b) = s.admin(Method::POST, path, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let results: Vec<(String, String, u64)> = b["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["result"].as_str().unwrap().to_owned(),
                e["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("KEEP".into(), "unchanged".into(), 1),
            ("CHANGE".into(), "updated".into(), 2),
            ("NEW".into(), "created".into(), 1),
        ]
    );
    assert!(!b.to_string().contains("fresh"), "no value in the answer");
    let (_, runtime) = s.create_key("runtime", Some("default")).await;
    let (status, _) = s
        .call(
            Some(&runtime),
            Method::POST,
            path,
            Some(json!({ "secrets": [] })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Input no store can keep is refused with a 4xx before it reaches one, on every backend:
/// a value with NUL (no process could receive it as an environment variable; PostgreSQL
/// text cannot hold it), an `expectedRevision` past the stores' 64-bit columns, and an
/// event id past them (no event can have it: the stream just waits).
#[tokio::test]
async fn numbers_and_values_no_store_can_keep_get_a_4xx_and_change_nothing() {
    let s = start().await;
    let path = "/v1/environments/default/secrets/EDGE";
    let (status, body) = s
        .admin(Method::PUT, path, Some(json!({"value": "a\u{0}b"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_value");
    let import = json!({"secrets": [{"name": "EDGE", "value": "x\u{0}"}]});
    let (status, _) = s
        .admin(
            Method::POST,
            "/v1/environments/default/secrets",
            Some(import),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let huge = json!({"value": "v", "expectedRevision": 9_223_372_036_854_775_808u64});
    let (status, body) = s.admin(Method::PUT, path, Some(huge)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = s
        .admin(
            Method::DELETE,
            &format!("{path}?expectedRevision=18446744073709551615"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let config = json!({"value": 1, "expectedRevision": 9_223_372_036_854_775_808u64});
    let (status, _) = s
        .admin(
            Method::PUT,
            "/v1/environments/default/config/EDGE",
            Some(config),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = s.admin(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was written");
    let stream = s
        .http
        .get(format!("{}/v1/events/stream", s.base))
        .bearer_auth(&s.admin)
        .header("Last-Event-ID", "18446744073709551615")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
}
