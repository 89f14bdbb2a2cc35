//! Every route × every kind of caller gives the documented status, and a key scoped to one
//! environment learns nothing about another.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Server, start};

#[derive(Clone, Copy, Debug)]
enum Caller {
    NoKey,
    BadKey,
    Admin,
    ManageA,
    ManageB,
    RuntimeA,
    RuntimeB,
}

const CALLERS: [Caller; 7] = [
    Caller::NoKey,
    Caller::BadKey,
    Caller::Admin,
    Caller::ManageA,
    Caller::ManageB,
    Caller::RuntimeA,
    Caller::RuntimeB,
];

/// What a case needs to exist before each call; `{x}` in the path is replaced.
#[derive(Clone, Copy)]
enum Setup {
    Nothing,
    FreshEnvironment,
    FreshApiKey,
    SecretInA,
    ConfigInA,
    /// Pull function `fn-a` of env-a (re-registered if a case deleted it).
    FunctionInA,
    /// A fresh run of `fn-run` in env-a, leased by env-a's runtime key (attempt 1): `{x}`
    /// is its id.
    LeasedRunInA,
    /// A fresh orchestration of env-a running `fn-run`: `{x}` is its id.
    OrchestrationInA,
    /// A fresh run of such an orchestration (no machine runs here: it stays at its first
    /// step, so approving it is a conflict): `{x}` is its id.
    OrchestrationRunInA,
}

struct Case {
    method: Method,
    path: &'static str,
    body: Option<fn() -> Value>,
    setup: Setup,
    /// Expected status for NoKey, BadKey, Admin, ManageA, ManageB, RuntimeA, RuntimeB.
    expect: [u16; 7],
}

fn cases() -> Vec<Case> {
    use Setup::*;
    let c = |method, path, body, setup, expect| Case {
        method,
        path,
        body,
        setup,
        expect,
    };
    vec![
        c(
            Method::GET,
            "/v1/environments",
            None,
            Nothing,
            [401, 401, 200, 200, 200, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/environments",
            Some(|| json!({"name": unique("env")})),
            Nothing,
            [401, 401, 201, 403, 403, 403, 403],
        ),
        c(
            Method::DELETE,
            "/v1/environments/{x}",
            None,
            FreshEnvironment,
            [401, 401, 204, 403, 403, 403, 403],
        ),
        c(
            Method::GET,
            "/v1/api-keys",
            None,
            Nothing,
            [401, 401, 200, 403, 403, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/api-keys",
            Some(|| json!({"name": "k", "role": "runtime", "environment": "env-a"})),
            Nothing,
            [401, 401, 201, 403, 403, 403, 403],
        ),
        c(
            Method::DELETE,
            "/v1/api-keys/{x}",
            None,
            FreshApiKey,
            [401, 401, 204, 403, 403, 403, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/secrets",
            None,
            Nothing,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/secrets/SHARED",
            None,
            SecretInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::PUT,
            "/v1/environments/env-a/secrets/SHARED",
            Some(|| json!({"value": "v"})),
            SecretInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::DELETE,
            "/v1/environments/env-a/secrets/SHARED",
            None,
            SecretInA,
            [401, 401, 204, 204, 403, 403, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/config",
            None,
            Nothing,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/config/SHARED",
            None,
            ConfigInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::PUT,
            "/v1/environments/env-a/config/SHARED",
            Some(|| json!({"value": {"on": true}})),
            ConfigInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::DELETE,
            "/v1/environments/env-a/config/SHARED",
            None,
            ConfigInA,
            [401, 401, 204, 204, 403, 403, 403],
        ),
        c(
            Method::GET,
            "/v1/status",
            None,
            Nothing,
            [200, 200, 200, 200, 200, 200, 200],
        ),
        c(
            Method::GET,
            "/healthz",
            None,
            Nothing,
            [200, 200, 200, 200, 200, 200, 200],
        ),
        c(
            Method::GET,
            "/readyz",
            None,
            Nothing,
            [200, 200, 200, 200, 200, 200, 200],
        ),
        c(
            Method::GET,
            "/metrics",
            None,
            Nothing,
            [200, 200, 200, 200, 200, 200, 200],
        ),
        c(
            Method::GET,
            "/v1/keys",
            None,
            Nothing,
            [401, 401, 200, 403, 403, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/keys/rewrap",
            Some(|| json!({"limit": 10})),
            Nothing,
            [401, 401, 200, 403, 403, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/keys/verify",
            Some(|| json!({"limit": 10})),
            Nothing,
            [401, 401, 200, 403, 403, 403, 403],
        ),
        // The runtime plane: functions and events belong to the management plane; poll,
        // resolve, heartbeat and complete hand values over or act for a run, so only a
        // runtime key of the environment may call them (admin and manage: 403); runs are
        // readable by all three roles of the environment.
        c(
            Method::GET,
            "/v1/environments/env-a/functions",
            None,
            FunctionInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/functions/fn-a",
            None,
            FunctionInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::PUT,
            "/v1/environments/env-a/functions/fn-a",
            Some(
                || json!({"triggers": [{"event": "authz.fn"}], "secrets": ["SHARED"], "mode": "pull"}),
            ),
            FunctionInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::DELETE,
            "/v1/environments/env-a/functions/fn-a",
            None,
            FunctionInA,
            [401, 401, 204, 204, 403, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/environments/env-a/functions/fn-a/signing-secret",
            None,
            FunctionInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/environments/env-a/functions/fn-a/resolve",
            None,
            FunctionInA,
            [401, 401, 403, 403, 403, 200, 403],
        ),
        c(
            Method::POST,
            "/v1/environments/env-a/events",
            Some(|| json!({"name": "authz.nothing", "data": {"n": 1}})),
            Nothing,
            [401, 401, 202, 202, 403, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/environments/env-a/workers/poll",
            Some(|| json!({"functions": ["fn-idle"], "waitMs": 0})),
            Nothing,
            [401, 401, 403, 403, 403, 204, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/runs",
            None,
            Nothing,
            [401, 401, 200, 200, 403, 200, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/runs/{x}",
            None,
            LeasedRunInA,
            [401, 401, 200, 200, 403, 200, 403],
        ),
        c(
            Method::POST,
            "/v1/environments/env-a/runs/{x}/heartbeat",
            Some(|| json!({"attempt": 1, "leaseMs": 600000})),
            LeasedRunInA,
            [401, 401, 403, 403, 403, 204, 403],
        ),
        c(
            Method::POST,
            "/v1/environments/env-a/runs/{x}/complete",
            Some(|| json!({"output": {"ok": true}, "attempt": 1})),
            LeasedRunInA,
            [401, 401, 403, 403, 403, 200, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/orchestrations",
            None,
            Nothing,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/environments/env-a/orchestrations",
            Some(orchestration_body),
            Nothing,
            [401, 401, 201, 201, 403, 403, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/orchestrations/{x}",
            None,
            OrchestrationInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::PUT,
            "/v1/environments/env-a/orchestrations/{x}",
            Some(orchestration_body),
            OrchestrationInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::DELETE,
            "/v1/environments/env-a/orchestrations/{x}",
            None,
            OrchestrationInA,
            [401, 401, 204, 204, 403, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/environments/env-a/orchestrations/{x}/runs",
            Some(|| json!({"params": {"n": 1}})),
            OrchestrationInA,
            [401, 401, 202, 202, 403, 403, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/orchestration-runs",
            None,
            Nothing,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::GET,
            "/v1/environments/env-a/orchestration-runs/{x}",
            None,
            OrchestrationRunInA,
            [401, 401, 200, 200, 403, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/environments/env-a/orchestration-runs/{x}/approve",
            None,
            OrchestrationRunInA,
            [401, 401, 409, 409, 403, 403, 403],
        ),
        c(
            Method::POST,
            "/v1/environments/env-a/orchestration-runs/{x}/reject",
            Some(|| json!({"reason": "no"})),
            OrchestrationRunInA,
            [401, 401, 409, 409, 403, 403, 403],
        ),
    ]
}

fn orchestration_body() -> Value {
    json!({"name": "authz", "steps": [
        {"id": "a", "type": "compute", "functionId": "fn-run",
         "encryptedParams": {"T": {"value": "authz-param", "encrypt": true}}}]})
}

/// Creates an orchestration in env-a; returns its id.
async fn orchestration_in_a(s: &Server) -> String {
    let (status, body) = s
        .admin(
            Method::POST,
            "/v1/environments/env-a/orchestrations",
            Some(orchestration_body()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Starts a run of a new orchestration in env-a; returns the run's id.
async fn orchestration_run_in_a(s: &Server) -> String {
    let id = orchestration_in_a(s).await;
    let path = format!("/v1/environments/env-a/orchestrations/{id}/runs");
    let (status, body) = s.admin(Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

struct Keys {
    manage_a: String,
    manage_b: String,
    runtime_a: String,
    runtime_b: String,
}

async fn world() -> (Server, Keys) {
    let s = start().await;
    s.create_env("env-a").await;
    s.create_env("env-b").await;
    let keys = Keys {
        manage_a: s.create_key("manage", Some("env-a")).await.1,
        manage_b: s.create_key("manage", Some("env-b")).await.1,
        runtime_a: s.create_key("runtime", Some("env-a")).await.1,
        runtime_b: s.create_key("runtime", Some("env-b")).await.1,
    };
    let run_fn = json!({"triggers": [{"event": "authz.run"}], "mode": "pull"});
    let (status, body) = s
        .admin(
            Method::PUT,
            "/v1/environments/env-a/functions/fn-run",
            Some(run_fn),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (s, keys)
}

/// Registers (or re-registers) the pull function `fn-a` in env-a.
async fn function_in_a(s: &Server) {
    let body = json!({"triggers": [{"event": "authz.fn"}], "secrets": ["SHARED"], "mode": "pull"});
    let (status, resp) = s
        .admin(
            Method::PUT,
            "/v1/environments/env-a/functions/fn-a",
            Some(body),
        )
        .await;
    assert!(status.is_success(), "{status} {resp}");
}

/// Starts a run of `fn-run` and leases it with env-a's runtime key; returns its id.
async fn leased_run_in_a(s: &Server, keys: &Keys) -> String {
    let (status, sent) = s
        .admin(
            Method::POST,
            "/v1/environments/env-a/events",
            Some(json!({"name": "authz.run"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let id = sent["runs"][0]["id"].as_str().unwrap().to_owned();
    let poll = json!({"functions": ["fn-run"], "waitMs": 5000, "leaseMs": 600000});
    let (status, job) = s
        .call(
            Some(&keys.runtime_a),
            Method::POST,
            "/v1/environments/env-a/workers/poll",
            Some(poll),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(
        job["runId"],
        id.as_str(),
        "the only queued run is the new one"
    );
    assert_eq!(job["attempt"], 1);
    id
}

fn key_of<'a>(s: &'a Server, keys: &'a Keys, who: Caller) -> Option<&'a str> {
    match who {
        Caller::NoKey => None,
        Caller::BadKey => Some("ck_admin_000000000000000000000000000000000000000000000000"),
        Caller::Admin => Some(&s.admin),
        Caller::ManageA => Some(&keys.manage_a),
        Caller::ManageB => Some(&keys.manage_b),
        Caller::RuntimeA => Some(&keys.runtime_a),
        Caller::RuntimeB => Some(&keys.runtime_b),
    }
}

#[tokio::test]
async fn every_route_gives_each_caller_the_documented_status() {
    let (s, keys) = world().await;
    let mut failures = Vec::new();
    for case in cases() {
        for (i, who) in CALLERS.into_iter().enumerate() {
            let mut path = case.path.to_owned();
            match case.setup {
                Setup::Nothing => {}
                Setup::FreshEnvironment => {
                    let env = unique("tmp");
                    s.create_env(&env).await;
                    path = path.replace("{x}", &env);
                }
                Setup::FreshApiKey => {
                    let (id, _) = s.create_key("runtime", Some("env-a")).await;
                    path = path.replace("{x}", &id);
                }
                Setup::SecretInA => {
                    s.put_secret("env-a", "SHARED", "v").await;
                }
                Setup::ConfigInA => {
                    s.put_config("env-a", "SHARED", json!(1)).await;
                }
                Setup::FunctionInA => function_in_a(&s).await,
                Setup::LeasedRunInA => {
                    let id = leased_run_in_a(&s, &keys).await;
                    path = path.replace("{x}", &id);
                }
                Setup::OrchestrationInA => {
                    let id = orchestration_in_a(&s).await;
                    path = path.replace("{x}", &id);
                }
                Setup::OrchestrationRunInA => {
                    let id = orchestration_run_in_a(&s).await;
                    path = path.replace("{x}", &id);
                }
            }
            let body = case.body.map(|b| b());
            let (status, resp) = s
                .call(key_of(&s, &keys, who), case.method.clone(), &path, body)
                .await;
            if status.as_u16() != case.expect[i] {
                failures.push(format!(
                    "{} {path} as {who:?}: expected {}, got {status} {resp}",
                    case.method, case.expect[i]
                ));
            }
            if !status.is_success() {
                let code = resp["error"]["code"].as_str();
                if code.is_none() {
                    failures.push(format!(
                        "{} {path} as {who:?}: error body without a code: {resp}",
                        case.method
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_manage_key_lists_only_its_own_environment() {
    let (s, keys) = world().await;
    let (status, body) = s
        .call(Some(&keys.manage_a), Method::GET, "/v1/environments", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["env-a"]);
}

#[tokio::test]
async fn a_key_of_one_environment_cannot_tell_what_exists_in_another() {
    let (s, keys) = world().await;
    s.put_secret("env-b", "EXISTS", "v").await;
    let a = Some(keys.manage_a.as_str());
    let probes = [
        (Method::GET, "/v1/environments/env-b/secrets/EXISTS", None),
        (Method::GET, "/v1/environments/env-b/secrets/MISSING", None),
        (
            Method::GET,
            "/v1/environments/no-such-env/secrets/EXISTS",
            None,
        ),
        (Method::GET, "/v1/environments/env-b/secrets", None),
        (Method::GET, "/v1/environments/no-such-env/secrets", None),
        (
            Method::PUT,
            "/v1/environments/env-b/secrets/EXISTS",
            Some(json!({"value": "x", "expectedRevision": 1})),
        ),
        (
            Method::PUT,
            "/v1/environments/no-such-env/secrets/EXISTS",
            Some(json!({"value": "x", "expectedRevision": 1})),
        ),
        (
            Method::DELETE,
            "/v1/environments/env-b/secrets/EXISTS",
            None,
        ),
        (
            Method::DELETE,
            "/v1/environments/env-b/secrets/MISSING",
            None,
        ),
    ];
    let mut answers = Vec::new();
    for (method, path, body) in probes {
        answers.push(s.call(a, method, path, body).await);
    }
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body, &answers[0].1, "every probe must get the same answer");
    }
    let (_, meta) = s
        .admin(Method::GET, "/v1/environments/env-b/secrets/EXISTS", None)
        .await;
    assert_eq!(meta["revision"], 1, "nothing changed in env-b");
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once() {
    let (s, keys) = world().await;
    let (status, _) = s
        .call(
            Some(&keys.manage_a),
            Method::GET,
            "/v1/environments/env-a/secrets",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = s.admin(Method::GET, "/v1/api-keys", None).await;
    let id = list["apiKeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "manage" && k["environment"] == "env-a")
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .unwrap();
    let (status, _) = s
        .admin(Method::DELETE, &format!("/v1/api-keys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s
        .call(
            Some(&keys.manage_a),
            Method::GET,
            "/v1/environments/env-a/secrets",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let challenge = s
        .http
        .get(format!("{}/v1/api-keys", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(challenge.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn api_keys_are_shown_once_and_listed_without_the_key() {
    let s = start().await;
    s.create_env("prod").await;
    let (id, key) = s.create_key("manage", Some("prod")).await;
    assert!(key.starts_with("ck_prod_"), "{key}");
    let (_, list) = s.admin(Method::GET, "/v1/api-keys", None).await;
    let text = list.to_string();
    assert!(text.contains(&id));
    assert!(!text.contains(&key), "lists never show a key");
    assert!(
        list["apiKeys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none())
    );
}

#[tokio::test]
async fn the_last_admin_key_cannot_be_revoked() {
    let s = start().await;
    let (_, list) = s.admin(Method::GET, "/v1/api-keys", None).await;
    let id = list["apiKeys"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = s
        .admin(Method::DELETE, &format!("/v1/api-keys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "last_admin_key");
    let (status, _) = s.admin(Method::GET, "/v1/api-keys", None).await;
    assert_eq!(status, StatusCode::OK, "the admin key still works");
}

#[tokio::test]
async fn deleting_an_environment_takes_its_secrets_and_keys() {
    let s = start().await;
    s.create_env("gone").await;
    let (_, key) = s.create_key("manage", Some("gone")).await;
    s.put_secret("gone", "A", "v").await;
    let (status, _) = s.admin(Method::DELETE, "/v1/environments/gone", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    s.create_env("gone").await;
    let (_, list) = s
        .admin(Method::GET, "/v1/environments/gone/secrets", None)
        .await;
    assert_eq!(
        list["secrets"],
        json!([]),
        "a namesake environment starts empty"
    );
    let (status, _) = s
        .call(
            Some(&key),
            Method::GET,
            "/v1/environments/gone/secrets",
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "keys of a deleted environment are revoked"
    );
}
