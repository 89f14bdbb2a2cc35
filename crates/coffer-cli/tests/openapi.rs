//! `coffer openapi`: the document, printed without a server, is the one `coffer serve`
//! serves at `GET /v1/openapi.json`.

use serde_json::Value;

mod common;

use common::{ServerProcess, clean_command, http};

fn printed_document() -> Value {
    let out = clean_command(&["openapi"]).output().expect("run coffer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

#[test]
fn openapi_prints_an_openapi_3_1_document_of_the_api() {
    let doc = printed_document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Coffer");
    for path in [
        "/v1/openapi.json",
        "/v1/status",
        "/v1/environments/{env}/secrets/{name}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_printed_document_is_the_one_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("data"), &[], &[]);
    let served: Value = http()
        .get(format!("{}/v1/openapi.json", server.base))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(served, printed_document());
}
