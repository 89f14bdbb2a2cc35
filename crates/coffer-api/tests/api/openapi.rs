//! `GET /v1/openapi.json`: the document describes exactly the routes the server serves.
//!
//! The router is built only from `#[utoipa::path]`-annotated handlers (`routes!`), so a route
//! cannot be served without its document entry. These tests pin that from the outside: every
//! documented operation reaches a handler on a live server, every undocumented method on a
//! documented path is refused, no `.route(` is added around the documented router, and every
//! route of docs/API.md's table is in the document (and the other way round).

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness;

const UNAUTHENTICATED: [&str; 8] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/status",
    "/v1/openapi.json",
    "/ui",
    "/ui/",
    "/ui/{asset}",
];

/// Every (METHOD, path) the document has.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                all.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    all
}

/// A concrete path for a templated one, naming things that do not exist (so no probe
/// changes anything even if it got past authentication).
fn concrete(path: &str) -> String {
    path.replace("{env}", "no-such-env")
        .replace("{name}", "NO_SUCH_SECRET")
        .replace("{id}", "ak_0000000000000000")
        .replace("{key}", "NO_SUCH_KEY")
        .replace("{asset}", "app.js")
}

async fn served_document(server: &harness::Server) -> Value {
    let resp = server
        .http
        .get(format!("{}/v1/openapi.json", server.base))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/json");
    resp.json().await.expect("the document is JSON")
}

#[tokio::test]
async fn the_served_document_is_openapi_3_1_and_the_one_the_library_generates() {
    let server = harness::start().await;
    let doc = served_document(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, serde_json::to_value(coffer_api::openapi()).unwrap());
    // Strict query, like every route.
    let (s, b) = server
        .call(None, Method::GET, "/v1/openapi.json?x=1", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "invalid_query");
}

#[tokio::test]
async fn every_documented_operation_reaches_a_handler_and_answers_as_its_security_says() {
    let server = harness::start().await;
    let doc = served_document(&server).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 18, "{ops:?}");
    for (method, path) in &ops {
        let op = &doc["paths"][path][method.to_lowercase()];
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        // No key: a route that reached its handler answers 401 (or, without auth, 200);
        // a route missing from the router would answer 404 `route_not_found` or 405.
        let (s, b) = server
            .call(None, method.clone(), &concrete(path), None)
            .await;
        if UNAUTHENTICATED.contains(&path.as_str()) {
            assert!(op.get("security").is_none(), "{method} {path} needs no key");
            assert_eq!(s, StatusCode::OK, "{method} {path}: {b}");
        } else {
            assert_eq!(
                op["security"],
                serde_json::json!([{ "bearer": [] }]),
                "{method} {path} names the bearer scheme"
            );
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {b}");
            assert!(
                op["responses"].get("401").is_some(),
                "{method} {path} documents its 401"
            );
        }
        // With the admin key it is still routed (never 404 route_not_found, never 405).
        let (s, b) = server.admin(method.clone(), &concrete(path), None).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {b}");
        assert_ne!(
            b["error"]["code"], "route_not_found",
            "{method} {path}: {b}"
        );
        assert!(
            op["responses"].get(s.as_str()).is_some(),
            "{method} {path} answered {s}, which it does not document: {b}"
        );
    }
}

#[tokio::test]
async fn a_method_the_document_lacks_is_refused_on_every_documented_path() {
    let server = harness::start().await;
    let doc = served_document(&server).await;
    let ops = operations(&doc);
    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if ops.contains(&(method.to_owned(), path.clone())) {
                continue;
            }
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let (s, b) = server.admin(m, &concrete(path), None).await;
            assert_eq!(
                s,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served but not documented: {b}"
            );
        }
    }
}

#[test]
fn routes_are_added_only_through_the_documented_router() {
    // `routes!` registers a handler with its operation; anything else that adds a route to
    // an axum router would serve it undocumented.
    // A plain axum `Router` (built or merged in) is the other way to serve a route.
    let forbidden = [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        "axum::routing::",
        "Router::new(",
        "Router::from(",
    ];
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for f in forbidden {
                // `Router::new(` but not `OpenApiRouter::new(`.
                let found = line.match_indices(f).any(|(i, _)| {
                    !line[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                assert!(
                    !found,
                    "{}:{}: `{f}` adds a route the OpenAPI document would not have; register \
                     the handler with `routes!` in `documented_routes` instead",
                    path.display(),
                    n + 1
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "read the crate's sources");
}

/// `(METHOD, /path)` of every row of docs/API.md's route table.
fn api_md_routes() -> BTreeSet<(String, String)> {
    let api_md = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/API.md");
    let text = std::fs::read_to_string(api_md).expect("docs/API.md");
    let table = text
        .split("## Routes")
        .nth(1)
        .expect("a Routes section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut routes = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('`').nth(1).expect("a route in backticks");
        let (method, path) = first.split_once(' ').expect("METHOD /path");
        let path = path.split('?').next().unwrap();
        routes.insert((method.to_owned(), path.to_owned()));
    }
    routes
}

#[test]
fn the_document_and_the_route_table_of_docs_api_md_list_the_same_routes() {
    let doc = serde_json::to_value(coffer_api::openapi()).unwrap();
    let documented = operations(&doc);
    let table = api_md_routes();
    assert!(table.len() >= 18, "{table:?}");
    let missing: Vec<_> = table.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "in docs/API.md, not in the document: {missing:?}"
    );
    let unlisted: Vec<_> = documented.difference(&table).collect();
    assert!(
        unlisted.is_empty(),
        "in the document, not in docs/API.md: {unlisted:?}"
    );
}

#[test]
fn errors_share_one_body_and_secret_values_are_write_only() {
    let doc = serde_json::to_value(coffer_api::openapi()).unwrap();
    for (method, path) in operations(&doc) {
        let responses = &doc["paths"][&path][method.to_lowercase()]["responses"];
        for (status, response) in responses.as_object().unwrap() {
            if status.as_str() >= "400" {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path} {status}"
                );
            }
        }
    }
    let error = &doc["components"]["schemas"]["ErrorDetail"];
    let fields: BTreeSet<&str> = error["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["code", "message", "currentRevision"])
    );

    // Every secret `value` property is write-only and has no example. Config values are
    // plaintext by design and readable (docs/API.md), a decision's condition compares with
    // a plain value, and an orchestration param's `value` is read back masked
    // (`********`, or a plain param as given): they are the only other `value`s.
    const CONFIG: [&str; 4] = ["PutConfig", "ConfigEntry", "Condition", "Param"];
    let mut values = 0;
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        if let Some(value) = schema["properties"].get("value") {
            if CONFIG.contains(&name.as_str()) {
                continue;
            }
            assert_eq!(value["writeOnly"], true, "{name}.value is write-only");
            assert!(value.get("example").is_none() && value.get("examples").is_none());
            values += 1;
        }
    }
    assert_eq!(values, 2, "PutSecret and ImportEntry carry secret values");
    // No response schema reaches a write-only property: responses show metadata only.
    for name in ["SecretMeta", "ImportedSecret", "SecretPage", "ImportReport"] {
        let schema = doc["components"]["schemas"][name].to_string();
        assert!(!schema.contains("PutSecret") && !schema.contains("ImportEntry"));
    }
}

#[test]
fn an_optional_body_may_be_absent_but_is_never_null() {
    let doc = serde_json::to_value(coffer_api::openapi()).unwrap();
    let body = &doc["paths"]["/v1/keys/rewrap"]["post"]["requestBody"];
    assert!(body.get("required").is_none(), "{body}");
    assert_eq!(
        body["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/RewrapRequest"
    );
    let put = &doc["paths"]["/v1/environments/{env}/secrets/{name}"]["put"]["requestBody"];
    assert_eq!(put["required"], true);
}

/// Every operation has its own `operationId` (validators refuse a repeated one; clients
/// generated from the document name their methods after it).
#[test]
fn operation_ids_are_unique() {
    let doc = serde_json::to_value(coffer_api::openapi()).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(id) = op["operationId"].as_str() else {
                continue;
            };
            if let Some(first) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("operationId {id} is used by {first} and {method} {path}");
            }
        }
    }
    assert!(seen.len() > 40, "{seen:?}");
}

/// Every `$ref` in the document points at a schema the document has (a type used only as a
/// query parameter must be inlined or registered, or validators refuse the document).
#[test]
fn every_reference_resolves() {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc = serde_json::to_value(coffer_api::openapi()).unwrap();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a reference outside the schemas: {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
}
