//! Orchestrations over HTTP: masked answers on every route, stable codes for bad input
//! (400 unknown fields, 422 naming the step, 404, 409), pages with cursors, and no value in
//! any answer. The in-process server runs no machine: runs stay at their first step here
//! (their execution is tested in coffer-core and through the real binary).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Server, start};

const ENV: &str = "/v1/environments/default";
const CANARY: &str = "api-canary-5fJ2";

async fn function(s: &Server) {
    let body = json!({"triggers": [{"event": "x.y"}], "secrets": ["STRIPE_KEY"], "mode": "pull"});
    let (status, f) = s
        .admin(Method::PUT, &format!("{ENV}/functions/billing"), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{f}");
}

fn definition() -> Value {
    json!({"name": "billing", "steps": [
        {"id": "charge", "type": "compute", "functionId": "billing",
         "params": {"currency": "eur"},
         "encryptedParams": {"TOKEN": {"value": CANARY, "encrypt": true},
                             "REF": {"secretRef": "STRIPE_KEY"}}},
        {"id": "ok", "type": "approval", "timeoutMs": 60000}]})
}

#[tokio::test]
async fn orchestrations_are_created_read_updated_listed_and_deleted_masked() {
    let s = start().await;
    function(&s).await;
    let (status, created) = s
        .admin(
            Method::POST,
            &format!("{ENV}/orchestrations"),
            Some(definition()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let masked = json!({"TOKEN": {"value": "********", "encrypted": true},
                        "REF": {"secretRef": "STRIPE_KEY"}});
    assert_eq!(created["steps"][0]["encryptedParams"], masked);
    assert_eq!(created["revision"], 1);
    assert_eq!(created["environment"], "default");
    let path = format!("{ENV}/orchestrations/{id}");
    let (status, got) = s.admin(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created);

    // Sent back as read: the params are kept; the revision moves.
    let mut again = json!({"name": "billing v2", "steps": got["steps"].clone()});
    again["expectedRevision"] = json!(1);
    let (status, updated) = s.admin(Method::PUT, &path, Some(again.clone())).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["name"], "billing v2");
    assert_eq!(updated["steps"][0]["encryptedParams"], masked);
    let (status, stale) = s.admin(Method::PUT, &path, Some(again)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{stale}");
    assert_eq!(stale["error"]["code"], "revision_conflict");
    assert_eq!(stale["error"]["currentRevision"], 2);

    for n in 0..3 {
        let mut d = definition();
        d["name"] = json!(format!("more-{n}"));
        let (status, _) = s
            .admin(Method::POST, &format!("{ENV}/orchestrations"), Some(d))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{ENV}/orchestrations?limit=3");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = s.admin(Method::GET, &url, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for o in page["orchestrations"].as_array().unwrap() {
            seen.push(o["id"].as_str().unwrap().to_owned());
            assert!(!o.to_string().contains(CANARY));
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "id order");

    let (status, run) = s
        .admin(
            Method::POST,
            &format!("{path}/runs"),
            Some(json!({"params": {"amount": 3}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    assert_eq!(run["status"], "running");
    assert_eq!(run["orchestrationId"], id.as_str());
    assert_eq!(run["params"], json!({"amount": 3}));
    assert_eq!(run["currentStep"], "charge");
    assert_eq!(run["steps"][0]["status"], "pending");
    let run_id = run["id"].as_str().unwrap();
    let (status, got_run) = s
        .admin(
            Method::GET,
            &format!("{ENV}/orchestration-runs/{run_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got_run["id"], run_id);
    let (status, listed) = s
        .admin(
            Method::GET,
            &format!("{ENV}/orchestration-runs?orchestrationId={id}&status=running"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1);
    let (status, not_waiting) = s
        .admin(
            Method::POST,
            &format!("{ENV}/orchestration-runs/{run_id}/approve"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(not_waiting["error"]["code"], "not_waiting");

    let (status, _) = s.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, gone) = s.admin(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gone["error"]["code"], "orchestration_not_found");
    let (status, still) = s
        .admin(
            Method::GET,
            &format!("{ENV}/orchestration-runs/{run_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a run's history stays: {still}");
}

#[tokio::test]
async fn bad_definitions_get_stable_codes_and_change_nothing() {
    let s = start().await;
    function(&s).await;
    let url = format!("{ENV}/orchestrations");
    let cases = [
        (
            json!({"name": "x", "steps": [], "extra": 1}),
            400,
            "unknown_field",
        ),
        (
            json!({"name": "x", "steps": [{"id": "a", "type": "warp"}]}),
            400,
            "invalid_body",
        ),
        (
            json!({"name": "x", "steps": [{"id": "a", "type": "compute", "functionId": "billing",
                   "encryptedParams": {"T": {"value": "v", "encrypt": true, "oops": 1}}}]}),
            400,
            "unknown_field",
        ),
        (json!({"name": "x", "steps": []}), 422, "invalid_value"),
        (
            json!({"name": "x", "steps": [{"id": "a", "type": "compute", "functionId": "ghost"}]}),
            422,
            "invalid_value",
        ),
        (
            json!({"name": "x", "steps": [{"id": "a", "type": "delay", "durationMs": 1},
                                           {"id": "a", "type": "delay", "durationMs": 1}]}),
            422,
            "invalid_value",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = s.admin(Method::POST, &url, Some(body.clone())).await;
        assert_eq!(got.as_u16(), status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    let (_, page) = s.admin(Method::GET, &url, None).await;
    assert_eq!(page["orchestrations"], json!([]), "nothing was stored");
    for path in [
        format!("{ENV}/orchestrations/orch_0000000000000000"),
        format!("{ENV}/orchestrations/not-an-id"),
    ] {
        let (status, answer) = s.admin(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer["error"]["code"], "orchestration_not_found");
    }
    let (status, answer) = s
        .admin(
            Method::GET,
            &format!("{ENV}/orchestration-runs/orun_0000000000000000"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "orchestration_run_not_found");
    let (status, answer) = s
        .admin(Method::GET, "/v1/environments/nowhere/orchestrations", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "environment_not_found");
}

/// A page of orchestrations carries at most about 256 KiB of steps, whatever `limit` asks:
/// it ends after the one that takes it there, with a cursor that leads to the rest.
#[tokio::test]
async fn a_page_of_orchestrations_ends_after_256_kib_of_steps() {
    let s = start().await;
    function(&s).await;
    let mut created = Vec::new();
    for n in 0..4 {
        // About 120 kB of steps each: two make 240 kB, three pass 256 KiB.
        let d = json!({"name": format!("big-{n}"), "steps": [
            {"id": "s", "type": "compute", "functionId": "billing",
             "params": {"a": "x".repeat(60_000), "b": "y".repeat(60_000)}}]});
        let (status, o) = s
            .admin(Method::POST, &format!("{ENV}/orchestrations"), Some(d))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{o}");
        created.push(o["id"].as_str().unwrap().to_owned());
    }
    let ids = |pages: &[Vec<Value>]| -> (Vec<usize>, Vec<String>) {
        let sizes = pages.iter().map(Vec::len).collect();
        let seen = pages
            .iter()
            .flatten()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect();
        (sizes, seen)
    };
    let (sizes, seen) = ids(&s
        .pages(&format!("{ENV}/orchestrations?limit=100"), "orchestrations")
        .await);
    assert_eq!(sizes, [3, 1], "the first page ends past 256 KiB of steps");
    assert_eq!(seen, created, "each once, in id order");

    // Runs of a small one, each with 100 kB of params: pages of runs end likewise, newest
    // first (a run's steps, state and params count: the big ones' runs would carry their
    // 120 kB of steps each too).
    let (status, small) = s
        .admin(
            Method::POST,
            &format!("{ENV}/orchestrations"),
            Some(definition()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{small}");
    let mut started = Vec::new();
    for n in 0..4 {
        let params = json!({"n": n, "pad": "p".repeat(100_000)});
        let (status, run) = s
            .admin(
                Method::POST,
                &format!(
                    "{ENV}/orchestrations/{}/runs",
                    small["id"].as_str().unwrap()
                ),
                Some(json!({ "params": params })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{run}");
        started.push(run["id"].as_str().unwrap().to_owned());
    }
    let (sizes, seen) = ids(&s
        .pages(&format!("{ENV}/orchestration-runs?limit=100"), "runs")
        .await);
    started.reverse();
    assert_eq!(sizes, [3, 1], "the first page of runs ends past 256 KiB");
    assert_eq!(seen, started, "each once, newest first");
}
