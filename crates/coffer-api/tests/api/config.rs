//! Config entries: CRUD, compare-and-set, the 64 KiB limit, pagination, scoping.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::start;

const PATH: &str = "/v1/environments/default/config/feature_flags";

#[tokio::test]
async fn config_is_created_read_updated_and_deleted_with_growing_revisions() {
    let s = start().await;
    let value = json!({"beta": true, "limits": [1, 2.5, "three", null], "nested": {"a": {}}});
    let (status, first) = s
        .admin(Method::PUT, PATH, Some(json!({ "value": value })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["revision"], 1);
    assert_eq!(first["key"], "feature_flags");
    assert_eq!(first["environment"], "default");
    assert_eq!(first["value"], value);
    assert_eq!(first["createdAt"], first["updatedAt"]);
    let fields: BTreeSet<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "key",
            "environment",
            "value",
            "revision",
            "createdAt",
            "updatedAt"
        ])
    );
    let (status, got) = s.admin(Method::GET, PATH, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, first);
    // Any JSON is a value, scalars and null included.
    for (i, v) in [
        json!("text"),
        json!(42),
        json!(false),
        json!(null),
        json!([]),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, b) = s
            .admin(Method::PUT, PATH, Some(json!({ "value": v })))
            .await;
        assert_eq!(status, StatusCode::OK, "{b}");
        assert_eq!(b["revision"], i + 2);
        assert_eq!(b["value"], v);
        assert_eq!(b["createdAt"], first["createdAt"]);
        assert_eq!(s.admin(Method::GET, PATH, None).await.1["value"], v);
    }
    let (status, b) = s.admin(Method::DELETE, PATH, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{b}");
    let (status, b) = s.admin(Method::GET, PATH, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "config_not_found");
    let (status, b) = s.admin(Method::DELETE, PATH, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "config_not_found");
    let (status, b) = s
        .admin(Method::GET, "/v1/environments/nowhere/config/A", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "environment_not_found");
    let (status, b) = s
        .admin(
            Method::PUT,
            "/v1/environments/nowhere/config/A",
            Some(json!({"value": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "environment_not_found");
}

#[tokio::test]
async fn stale_expected_revision_is_rejected_with_409_and_the_current_revision() {
    let s = start().await;
    let put = |body: Value, query: &'static str| {
        let s = &s;
        async move {
            s.admin(Method::PUT, &format!("{PATH}{query}"), Some(body))
                .await
        }
    };
    let (status, _) = put(json!({"value": 1, "expectedRevision": 0}), "").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, b) = put(json!({"value": 2, "expectedRevision": 0}), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "revision_conflict");
    assert_eq!(b["error"]["currentRevision"], 1);
    let (status, b) = put(json!({"value": 2}), "?expectedRevision=5").await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["currentRevision"], 1);
    let (status, b) = put(
        json!({"value": 2, "expectedRevision": 2}),
        "?expectedRevision=1",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "invalid_query");
    let (status, b) = put(json!({"value": 2}), "?expectedRevision=1").await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["revision"], 2);
    let (status, b) = s
        .admin(Method::DELETE, &format!("{PATH}?expectedRevision=1"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["currentRevision"], 2);
    assert_eq!(s.admin(Method::GET, PATH, None).await.1["value"], 2);
    let (status, _) = s
        .admin(Method::DELETE, &format!("{PATH}?expectedRevision=2"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, b) = put(json!({"value": 3, "expectedRevision": 1}), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["currentRevision"], 0, "absent is revision 0");
}

#[tokio::test]
async fn values_over_64_kib_of_json_are_refused_with_413_and_not_echoed() {
    let s = start().await;
    // A JSON string of n characters serializes to n + 2 bytes.
    let fits = "f".repeat(64 * 1024 - 2);
    let (status, b) = s
        .admin(Method::PUT, PATH, Some(json!({ "value": fits })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{}", b["error"]);
    let over = format!("CANARY{}", "o".repeat(64 * 1024 - 7));
    let (status, b) = s
        .admin(Method::PUT, PATH, Some(json!({ "value": over })))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", b["error"]);
    assert_eq!(b["error"]["code"], "value_too_large");
    assert!(!b.to_string().contains("CANARY"), "{b}");
    assert_eq!(s.admin(Method::GET, PATH, None).await.1["revision"], 1);
}

#[tokio::test]
async fn put_bodies_are_checked_and_never_echoed() {
    let s = start().await;
    let cases = [
        (json!({"value": "CANARY", "extra": 1}), "unknown_field"),
        (json!({"expectedRevision": 0}), "invalid_body"),
        (
            json!({"value": "CANARY", "expectedRevision": "CANARY"}),
            "invalid_body",
        ),
        (json!(["CANARY"]), "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, b) = s.admin(Method::PUT, PATH, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert_eq!(b["error"]["code"], code, "{body}");
        assert!(!b.to_string().contains("CANARY"), "{b}");
    }
    let (status, b) = s
        .admin(
            Method::PUT,
            "/v1/environments/default/config/not-a-key",
            Some(json!({"value": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b["error"]["code"], "invalid_name");
    let (status, _) = s.admin(Method::GET, PATH, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was written");
}

#[tokio::test]
async fn listing_pages_through_every_entry_once_in_byte_order() {
    let s = start().await;
    let mut expected = Vec::new();
    for k in ["b", "A", "_x", "B", "a1"]
        .into_iter()
        .map(String::from)
        .chain((0..10).map(|i| format!("K{i:02}")))
    {
        s.put_config("default", &k, json!({ "k": k })).await;
        expected.push(k);
    }
    expected.sort();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/environments/default/config?limit=4".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = s.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for c in page["config"].as_array().unwrap() {
            assert_eq!(c["value"]["k"], c["key"]);
            seen.push(c["key"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    for bad in ["limit=0", "limit=1001", "cursor=%21%21", "cursor=MQ"] {
        let (status, b) = s
            .admin(
                Method::GET,
                &format!("/v1/environments/default/config?{bad}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert_eq!(b["error"]["code"], "invalid_query", "{bad}");
    }
    let (status, b) = s
        .admin(Method::GET, "/v1/environments/nowhere/config", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "environment_not_found");
}

#[tokio::test]
async fn config_is_scoped_to_admin_and_manage_keys_of_its_environment() {
    let s = start().await;
    s.create_env("prod").await;
    s.put_config("prod", "A", json!(1)).await;
    let (_, manage_prod) = s.create_key("manage", Some("prod")).await;
    let (_, manage_default) = s.create_key("manage", Some("default")).await;
    let (_, runtime_prod) = s.create_key("runtime", Some("prod")).await;
    let probes = [
        (Method::GET, "/v1/environments/prod/config", None),
        (Method::GET, "/v1/environments/prod/config/A", None),
        (Method::GET, "/v1/environments/prod/config/MISSING", None),
        (
            Method::PUT,
            "/v1/environments/prod/config/A",
            Some(json!({"value": 2})),
        ),
        (Method::DELETE, "/v1/environments/prod/config/A", None),
    ];
    for key in [&manage_default, &runtime_prod] {
        let mut answers = Vec::new();
        for (method, path, body) in probes.clone() {
            answers.push(s.call(Some(key), method, path, body).await);
        }
        for (status, body) in &answers {
            assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
            assert_eq!(body, &answers[0].1, "every probe gets the same answer");
        }
    }
    let (status, b) = s
        .call(
            Some(&manage_prod),
            Method::PUT,
            "/v1/environments/prod/config/A",
            Some(json!({"value": {"by": "manage"}, "expectedRevision": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let (status, b) = s
        .call(
            Some(&manage_prod),
            Method::GET,
            "/v1/environments/prod/config",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["config"][0]["value"]["by"], "manage");
    assert_eq!(b["config"][0]["revision"], 2);
}

#[tokio::test]
async fn deleting_an_environment_deletes_its_config() {
    let s = start().await;
    s.create_env("tmp").await;
    s.put_config("tmp", "A", json!(1)).await;
    let (status, _) = s.admin(Method::DELETE, "/v1/environments/tmp", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    s.create_env("tmp").await;
    let (status, b) = s
        .admin(Method::GET, "/v1/environments/tmp/config", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["config"], json!([]));
}

/// A page of config entries carries at most about 256 KiB of values, whatever `limit`
/// asks: it ends after the entry that takes it there, with a cursor to the rest.
#[tokio::test]
async fn a_page_of_config_ends_after_256_kib_of_values() {
    let s = start().await;
    let keys: Vec<String> = (0..6).map(|i| format!("big_{i}")).collect();
    for k in &keys {
        // 60 kB each: four make 240 kB, five pass 256 KiB.
        s.put_config("default", k, json!("v".repeat(60_000))).await;
    }
    let pages = s
        .pages("/v1/environments/default/config?limit=1000", "config")
        .await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    let seen: Vec<&str> = pages
        .iter()
        .flatten()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(sizes, [5, 1], "the first page ends past 256 KiB of values");
    assert_eq!(seen, keys);
}
