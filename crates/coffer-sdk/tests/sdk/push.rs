//! The push handler as a tower service, called directly with signed (and badly signed)
//! deliveries: what it answers, and whether the handler ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use coffer_sdk::wire::signature;
use coffer_sdk::{HandlerError, PushHandler, SecretError, function};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &str = "cs_current_secret";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn job(function_id: &str) -> Vec<u8> {
    json!({
        "runId": "run_0123456789abcdef",
        "functionId": function_id,
        "environment": "prod",
        "attempt": 1,
        "event": {"name": "order.created", "data": {"orderId": "o-1"}},
        "secrets": {"STRIPE_KEY": "sk_test_1", "UNDECLARED_HERE": "x"},
        "config": {},
        "triggerParams": {},
    })
    .to_string()
    .into_bytes()
}

/// A push handler for `f` that counts its calls and reports what its secrets view says.
fn handler(secrets: &[&str]) -> (PushHandler, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let def = function("f").secrets(["STRIPE_KEY", "SLACK_WEBHOOK"]);
    let push = PushHandler::new(secrets.iter().map(|s| s.to_string())).function(def, move |ctx| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let kind = |r: Result<&str, SecretError>| match r {
                Ok(_) => "set",
                Err(SecretError::Missing(_)) => "missing",
                Err(SecretError::Undeclared(_)) => "undeclared",
            };
            Ok(json!({
                "order": ctx.event.data["orderId"],
                "STRIPE_KEY": kind(ctx.secrets.get("STRIPE_KEY")),
                "SLACK_WEBHOOK": kind(ctx.secrets.get("SLACK_WEBHOOK")),
                "UNDECLARED_HERE": kind(ctx.secrets.get("UNDECLARED_HERE")),
                "hasSlack": ctx.secrets.has("SLACK_WEBHOOK"),
            }))
        }
    });
    (push, calls)
}

async fn deliver(push: &PushHandler, header: Option<String>, body: Vec<u8>) -> (StatusCode, Value) {
    let mut request = Request::post("/coffer").header("content-type", "application/json");
    if let Some(header) = header {
        request = request.header(signature::HEADER, header);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response = push.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn signed(secret: &str, t: i64, body: &[u8]) -> Option<String> {
    Some(signature::sign(&[secret.as_bytes()], t, body))
}

#[tokio::test]
async fn a_signed_delivery_runs_the_handler_and_answers_its_output() {
    let (push, calls) = handler(&[SECRET]);
    let body = job("f");
    let (status, answer) = deliver(&push, signed(SECRET, now(), &body), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({
            "order": "o-1",
            "STRIPE_KEY": "set",
            "SLACK_WEBHOOK": "missing",
            "UNDECLARED_HERE": "undeclared",
            "hasSlack": false,
        })
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_tampered_body_is_refused_with_401_and_runs_nothing() {
    let (push, calls) = handler(&[SECRET]);
    let body = job("f");
    let header = signed(SECRET, now(), &body);
    let tampered = String::from_utf8(body)
        .unwrap()
        .replace("o-1", "o-2")
        .into_bytes();
    let (status, answer) = deliver(&push, header, tampered).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["error"]["code"], "invalid_signature");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_stale_timestamp_is_refused_with_401_and_runs_nothing() {
    let (push, calls) = handler(&[SECRET]);
    let body = job("f");
    for t in [now() - 301, now() + 301] {
        let (status, answer) = deliver(&push, signed(SECRET, t, &body), body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "t = now {:+}", t - now());
        assert_eq!(
            answer["error"]["message"],
            "the Coffer-Signature timestamp is outside the tolerance"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_tighter_tolerance_refuses_what_the_default_accepts() {
    let (push, calls) = handler(&[SECRET]);
    let push = push.tolerance(std::time::Duration::from_secs(10));
    let body = job("f");
    let (status, _) = deliver(&push, signed(SECRET, now() - 60, &body), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_401_and_runs_nothing() {
    let (push, calls) = handler(&[SECRET]);
    let body = job("f");
    let (status, answer) = deliver(&push, signed("cs_someone_else", now(), &body), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer["error"]["message"],
        "no Coffer-Signature matches the signing secret"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_missing_or_malformed_signature_is_refused_with_401_and_runs_nothing() {
    let (push, calls) = handler(&[SECRET]);
    for header in [None, Some("t=1".to_owned()), Some("v1=abc".to_owned())] {
        let (status, _) = deliver(&push, header.clone(), job("f")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn no_signing_secret_accepts_nothing() {
    let (push, calls) = handler(&[]);
    let body = job("f");
    let (status, _) = deliver(&push, signed(SECRET, now(), &body), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn during_a_rotation_both_secrets_are_accepted() {
    let (push, calls) = handler(&["cs_new", "cs_old"]);
    let body = job("f");
    // What Coffer sends in the grace period: one v1 per secret, new first.
    let both = signature::sign(&[b"cs_new", b"cs_old"], now(), &body);
    assert_eq!(
        deliver(&push, Some(both), body.clone()).await.0,
        StatusCode::OK
    );
    // An endpoint that only knows the old secret still accepts it.
    let (old_only, _) = handler(&["cs_old"]);
    let both = signature::sign(&[b"cs_new", b"cs_old"], now(), &body);
    assert_eq!(
        deliver(&old_only, Some(both), body.clone()).await.0,
        StatusCode::OK
    );
    // And once Coffer signs with the new one alone, so does an endpoint listing both.
    assert_eq!(
        deliver(&push, signed("cs_new", now(), &body), body).await.0,
        StatusCode::OK
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_before_it_is_verified() {
    let (push, calls) = handler(&[SECRET]);
    let push = push.max_body_bytes(64);
    let body = job("f");
    assert!(body.len() > 64);
    let (status, answer) = deliver(&push, signed(SECRET, now(), &body), body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"]["code"], "body_too_large");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_signed_delivery_for_a_function_not_served_here_is_404() {
    let (push, calls) = handler(&[SECRET]);
    let body = job("other");
    let (status, answer) = deliver(&push, signed(SECRET, now(), &body), body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "function_not_found");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_signed_body_that_is_not_a_job_is_400_without_quoting_it() {
    let (push, _) = handler(&[SECRET]);
    let body = br#"{"functionId": "f", "secrets": {"A": 42}, "x": "sk_live_leak"}"#.to_vec();
    let (status, answer) = deliver(&push, signed(SECRET, now(), &body), body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!answer.to_string().contains("sk_live_leak"), "{answer}");
}

#[tokio::test]
async fn only_post_is_accepted() {
    let (push, calls) = handler(&[SECRET]);
    let request = Request::get("/coffer")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = push.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failing_handler_answers_500_so_coffer_retries_and_a_permanent_failure_422() {
    let def = function("f");
    let push = PushHandler::new([SECRET]).function(def.clone(), |_| async {
        Err(HandlerError::new("the carrier is down"))
    });
    let body = job("f");
    let (status, answer) = deliver(&push, signed(SECRET, now(), &body), body.clone()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer,
        json!({"error": {"code": "handler_failed", "message": "the carrier is down"}})
    );

    let push = PushHandler::new([SECRET]).function(def.clone(), |_| async {
        Err(HandlerError::permanent("no such order"))
    });
    let (status, answer) = deliver(&push, signed(SECRET, now(), &body), body.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["error"]["message"], "no such order");

    let push = PushHandler::new([SECRET]).function(def, |_| async {
        if true {
            panic!("bug");
        }
        Ok(Value::Null)
    });
    let (status, answer) = deliver(&push, signed(SECRET, now(), &body), body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer["error"]["message"], "the handler panicked");
}

#[tokio::test]
async fn the_handler_mounts_in_an_axum_router() {
    let (push, calls) = handler(&[SECRET]);
    let app = axum::Router::new().route_service("/coffer", push);
    let body = job("f");
    let request = Request::post("/coffer")
        .header(signature::HEADER, signed(SECRET, now(), &body).unwrap())
        .body(axum::body::Body::from(body))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
