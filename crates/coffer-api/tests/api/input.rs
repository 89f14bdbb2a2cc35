//! Bad input gets the documented 4xx with a stable code, and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{assert_refused_for_capability, compare_and_set, start};

struct Bad {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn bad(
    what: &'static str,
    method: Method,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Bad {
    Bad {
        what,
        method,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.into(),
        status,
        code,
    }
}

#[tokio::test]
async fn bad_input_gets_the_documented_error_and_changes_nothing() {
    let s = start().await;
    s.put_secret("default", "EXISTING", "old value").await;
    let big_value = "v".repeat(70 * 1024);
    let sec = "/v1/environments/default/secrets/EXISTING";
    let mut cases = vec![
        bad(
            "secret name starting with a digit",
            Method::PUT,
            "/v1/environments/default/secrets/1BAD",
            r#"{"value":"x"}"#,
            422,
            "invalid_name",
        ),
        bad(
            "secret name with a dash",
            Method::PUT,
            "/v1/environments/default/secrets/A-B",
            r#"{"value":"x"}"#,
            422,
            "invalid_name",
        ),
        bad(
            "secret name of 129 chars",
            Method::PUT,
            &format!("/v1/environments/default/secrets/{}", "A".repeat(129)),
            r#"{"value":"x"}"#,
            422,
            "invalid_name",
        ),
        bad(
            "environment name with capitals",
            Method::PUT,
            "/v1/environments/Prod/secrets/OK",
            r#"{"value":"x"}"#,
            422,
            "invalid_name",
        ),
        bad(
            "environment name with capitals",
            Method::POST,
            "/v1/environments",
            r#"{"name":"Prod"}"#,
            422,
            "invalid_name",
        ),
        bad(
            "environment name too long",
            Method::POST,
            "/v1/environments",
            format!(r#"{{"name":"{}"}}"#, "a".repeat(64)),
            422,
            "invalid_name",
        ),
        bad(
            "a 70 KiB value",
            Method::PUT,
            sec,
            json!({ "value": big_value }).to_string(),
            413,
            "value_too_large",
        ),
        bad(
            "a 2 MiB body",
            Method::PUT,
            sec,
            json!({ "value": "x".repeat(2 << 20) }).to_string(),
            413,
            "body_too_large",
        ),
        bad(
            "malformed JSON",
            Method::PUT,
            sec,
            r#"{"value": "#,
            400,
            "malformed_json",
        ),
        bad(
            "not JSON at all",
            Method::PUT,
            sec,
            "value=x",
            400,
            "malformed_json",
        ),
        bad(
            "unknown field",
            Method::PUT,
            sec,
            r#"{"value":"x","ttl":5}"#,
            400,
            "unknown_field",
        ),
        bad(
            "wrong type",
            Method::PUT,
            sec,
            r#"{"value":5}"#,
            400,
            "invalid_body",
        ),
        bad(
            "wrong revision type",
            Method::PUT,
            sec,
            r#"{"value":"x","expectedRevision":"one"}"#,
            400,
            "invalid_body",
        ),
        bad("missing value", Method::PUT, sec, "{}", 400, "invalid_body"),
        bad(
            "unknown field on environments",
            Method::POST,
            "/v1/environments",
            r#"{"name":"ok","color":"red"}"#,
            400,
            "unknown_field",
        ),
        bad(
            "unknown role",
            Method::POST,
            "/v1/api-keys",
            r#"{"name":"k","role":"root"}"#,
            422,
            "invalid_value",
        ),
        bad(
            "manage key without environment",
            Method::POST,
            "/v1/api-keys",
            r#"{"name":"k","role":"manage"}"#,
            422,
            "invalid_value",
        ),
        bad(
            "admin key with environment",
            Method::POST,
            "/v1/api-keys",
            r#"{"name":"k","role":"admin","environment":"default"}"#,
            422,
            "invalid_value",
        ),
        bad(
            "empty key name",
            Method::POST,
            "/v1/api-keys",
            r#"{"name":"","role":"admin"}"#,
            422,
            "invalid_value",
        ),
        bad(
            "key for a missing environment",
            Method::POST,
            "/v1/api-keys",
            r#"{"name":"k","role":"runtime","environment":"nope"}"#,
            404,
            "environment_not_found",
        ),
        bad(
            "malformed API key id",
            Method::DELETE,
            "/v1/api-keys/not-an-id",
            "",
            422,
            "invalid_name",
        ),
        bad(
            "limit not a number",
            Method::GET,
            "/v1/environments/default/secrets?limit=abc",
            "",
            400,
            "invalid_query",
        ),
        bad(
            "limit zero",
            Method::GET,
            "/v1/environments/default/secrets?limit=0",
            "",
            400,
            "invalid_query",
        ),
        bad(
            "limit too large",
            Method::GET,
            "/v1/environments/default/secrets?limit=1001",
            "",
            400,
            "invalid_query",
        ),
        bad(
            "unknown query parameter",
            Method::GET,
            "/v1/environments/default/secrets?order=name",
            "",
            400,
            "invalid_query",
        ),
        bad(
            "forged cursor",
            Method::GET,
            "/v1/environments/default/secrets?cursor=%%%",
            "",
            400,
            "invalid_query",
        ),
        bad(
            "revision not a number",
            Method::DELETE,
            &format!("{sec}?expectedRevision=abc"),
            "",
            400,
            "invalid_query",
        ),
        bad(
            "unknown route",
            Method::GET,
            "/v1/nothing-here",
            "",
            404,
            "route_not_found",
        ),
        bad(
            "a path segment that is not UTF-8",
            Method::PUT,
            "/v1/environments/default/secrets/%FF",
            r#"{"value":"x"}"#,
            422,
            "invalid_name",
        ),
        bad(
            "wrong method",
            Method::PATCH,
            sec,
            "",
            405,
            "method_not_allowed",
        ),
        bad(
            "missing environment",
            Method::PUT,
            "/v1/environments/nope/secrets/A",
            r#"{"value":"x"}"#,
            404,
            "environment_not_found",
        ),
        bad(
            "missing secret",
            Method::GET,
            "/v1/environments/default/secrets/NOPE",
            "",
            404,
            "secret_not_found",
        ),
        bad(
            "stale revision",
            Method::PUT,
            sec,
            r#"{"value":"x","expectedRevision":7}"#,
            409,
            "revision_conflict",
        ),
        bad(
            "must not exist",
            Method::PUT,
            sec,
            r#"{"value":"x","expectedRevision":0}"#,
            409,
            "revision_conflict",
        ),
        bad(
            "stale delete",
            Method::DELETE,
            &format!("{sec}?expectedRevision=9"),
            "",
            409,
            "revision_conflict",
        ),
        bad(
            "the reserved environment name",
            Method::POST,
            "/v1/environments",
            r#"{"name":"admin"}"#,
            422,
            "invalid_value",
        ),
        bad(
            "rewrap batch over the limit",
            Method::POST,
            "/v1/keys/rewrap",
            r#"{"limit":1001}"#,
            422,
            "invalid_value",
        ),
        bad(
            "unknown field on rewrap",
            Method::POST,
            "/v1/keys/rewrap",
            r#"{"batch":10}"#,
            400,
            "unknown_field",
        ),
        bad(
            "forged rewrap cursor",
            Method::POST,
            "/v1/keys/rewrap",
            r#"{"cursor":"not-ours"}"#,
            400,
            "invalid_body",
        ),
        bad(
            "verify batch over the limit",
            Method::POST,
            "/v1/keys/verify",
            r#"{"limit":1001}"#,
            422,
            "invalid_value",
        ),
        bad(
            "forged verify cursor",
            Method::POST,
            "/v1/keys/verify",
            r#"{"cursor":"not-ours"}"#,
            400,
            "invalid_body",
        ),
        bad(
            "existing environment",
            Method::POST,
            "/v1/environments",
            r#"{"name":"default"}"#,
            409,
            "environment_exists",
        ),
    ];
    for (ct, what) in [
        (Some("text/plain"), "text/plain body"),
        (None, "no content type"),
    ] {
        let mut case = bad(
            what,
            Method::PUT,
            sec,
            r#"{"value":"x"}"#,
            415,
            "unsupported_media_type",
        );
        case.content_type = ct;
        cases.push(case);
    }

    let before = s.snapshot().await;
    let mut failures = Vec::new();
    for case in cases {
        let mut req = s
            .http
            .request(case.method.clone(), format!("{}{}", s.base, case.path))
            .bearer_auth(&s.admin);
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.body(case.body).send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let (want_status, want_code) = if case.code == "revision_conflict" && !compare_and_set() {
            (422, "invalid_value")
        } else {
            (case.status, case.code)
        };
        if status != want_status || body["error"]["code"] != want_code {
            failures.push(format!(
                "{}: expected {} {}, got {status} {text:.300}",
                case.what, want_status, want_code
            ));
        }
        if body["error"]["message"].as_str().is_none_or(str::is_empty) {
            failures.push(format!("{}: no error message", case.what));
        }
        if text.contains("vvvvvvvv") || text.contains("old value") {
            failures.push(format!("{}: the response echoes a value", case.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(s.snapshot().await, before, "bad input changed something");
}

#[tokio::test]
async fn a_conflict_reports_the_current_revision() {
    let s = start().await;
    s.put_secret("default", "CAS", "a").await;
    s.put_secret("default", "CAS", "b").await;
    let path = "/v1/environments/default/secrets/CAS";
    let (status, body) = s
        .admin(
            Method::PUT,
            path,
            Some(json!({"value": "c", "expectedRevision": 1})),
        )
        .await;
    if !compare_and_set() {
        return assert_refused_for_capability(status, &body);
    }
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["currentRevision"], 2);
    let (status, body) = s
        .admin(
            Method::PUT,
            "/v1/environments/default/secrets/NEW",
            Some(json!({"value": "c", "expectedRevision": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["currentRevision"], 0, "0 = does not exist");
}

/// A small deterministic generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

#[tokio::test]
async fn random_paths_and_bodies_get_a_json_4xx_never_a_5xx() {
    let s = start().await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let segments = [
        "default",
        "A",
        "%FF",
        "%00",
        "..",
        "a b",
        "Ä",
        "_",
        "1",
        "%2F",
        "x".repeat(300).leak(),
        "",
    ];
    let fragments = [
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"value\"",
        "\"expectedRevision\"",
        "\"name\"",
        "\"role\"",
        "\"x\"",
        "-1",
        "18446744073709551616",
        "1e999",
        "null",
        "true",
        "\"\\ud800\"",
        "\"\\u0000\"",
        " ",
        "\u{0}",
    ];
    let mut failures = Vec::new();
    for i in 0..400 {
        let path = match rng.below(4) {
            0 => format!(
                "/v1/environments/{}/secrets/{}",
                rng.pick(&segments),
                rng.pick(&segments)
            ),
            1 => format!("/v1/environments/{}", rng.pick(&segments)),
            2 => format!("/v1/api-keys/{}", rng.pick(&segments)),
            _ => format!(
                "/v1/environments/default/secrets?limit={}&cursor={}",
                rng.pick(&segments),
                rng.pick(&segments)
            ),
        };
        let body: String = if rng.below(2) == 0 {
            (0..rng.below(12)).map(|_| rng.pick(&fragments)).collect()
        } else {
            (0..rng.below(64))
                .map(|_| char::from(rng.below(128) as u8))
                .collect()
        };
        let method = [Method::GET, Method::PUT, Method::POST, Method::DELETE][rng.below(4)].clone();
        let url = format!("{}{path}", s.base);
        let resp = s
            .http
            .request(method.clone(), &url)
            .bearer_auth(&s.admin)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("the server answers");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let coded = json["error"]["code"].is_string();
        if status.is_server_error() || (!status.is_success() && !coded) {
            failures.push(format!(
                "#{i} {method} {path} {body:?}: {status} {text:.200}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (status, _) = s.call(None, Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "still serving");
}
