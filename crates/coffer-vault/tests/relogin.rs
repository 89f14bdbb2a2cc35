//! The token Coffer holds, kept alive against a real OpenBao dev server (`COFFER_TEST_BAO`,
//! else `bao` on `PATH`): a Kubernetes login whose renewals reach the role's max TTL is
//! replaced by a new login; a token revoked behind Coffer's back costs one login and the
//! request still succeeds; a given (`token` method) token that is revoked is an error that
//! does not quote it.
//!
//! Kubernetes auth is OpenBao's real method, pointed at a local stand-in for the
//! TokenReview API (as in `tests/auth.rs`), which OpenBao asks at every login and every
//! renewal.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use coffer_store::ValueStore;
use coffer_vault::auth::{AuthMethod, KubernetesAuth};
use coffer_vault::http::VaultHttp;
use coffer_vault::testing::DevServer as Bao;
use coffer_vault::token::TokenSource;
use coffer_vault::{VaultConfig, VaultError, VaultValues};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_that_reach_the_max_ttl_end_in_a_new_login() {
    // Leases of 2 s, at most 4 s in all: renewed at ~1.3 s, capped at ~2.7 s, so a new
    // login is due at ~3.3 s, and again ~3.3 s later.
    let world = KubernetesWorld::start("2s", "4s").await;
    let tokens = TokenSource::new(world.http.clone(), world.method());

    let began = Instant::now();
    let mut requests = 0;
    let mut tokens_seen = HashSet::new();
    while began.elapsed() < Duration::from_secs(8) {
        let reply = tokens
            .request(Method::GET, "auth/token/lookup-self", None)
            .await
            .unwrap_or_else(|e| panic!("request {requests} at {:?}: {e}", began.elapsed()));
        assert!(
            reply.status.is_success(),
            "request {requests} at {:?}: {}",
            began.elapsed(),
            reply.status
        );
        // A token lives at least ~3 s here: sampling every 200 ms sees each of them.
        let body = reply.body.unwrap();
        tokens_seen.insert(body["data"]["accessor"].as_str().unwrap().to_owned());
        requests += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logins = tokens_seen.len();
    let reviews = world.reviews();
    println!(
        "{requests} requests in 8 s; {logins} tokens (logins), {} renewals",
        reviews - logins
    );
    assert!(
        logins >= 2,
        "a token at its max TTL must be replaced by a login"
    );
    // Three are expected (at 0, ~3.3 and ~6.7 s); more would be a login storm (logging in
    // instead of renewing, or ever faster).
    assert!(logins <= 4, "{logins} logins in 8 s");
    assert!(reviews > logins, "the tokens must have been renewed too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_costs_one_login_and_the_requests_succeed() {
    let world = KubernetesWorld::start("600s", "1200s").await;
    let tokens = TokenSource::new(world.http.clone(), world.method());
    let path = "secret/data/relogin";
    let reply = tokens
        .request(Method::POST, path, Some(&json!({"data": {"v": "1"}})))
        .await
        .expect("first write");
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(world.reviews(), 1);

    assert_eq!(world.revoke_kubernetes_tokens().await, 1);
    // Several requests refused together log in once.
    let tokens = Arc::new(tokens);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            tokens.request(Method::GET, path, None).await
        }));
    }
    for task in tasks {
        let reply = task.await.unwrap().expect("a read after the revocation");
        assert!(reply.status.is_success(), "{}", reply.status);
        assert_eq!(reply.body.unwrap()["data"]["data"]["v"], "1");
    }
    // 600 s leases: no renewal in this test, so each review is a login.
    assert_eq!(world.reviews(), 2, "one login for all the refused requests");

    let reply = tokens
        .request(Method::GET, path, None)
        .await
        .expect("a read with the new token");
    assert!(reply.status.is_success());
    assert_eq!(world.reviews(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_given_token_is_an_error_that_does_not_quote_it() {
    let world = KubernetesWorld::start("600s", "1200s").await;
    let token = world
        .as_root(
            Method::POST,
            "auth/token/create",
            json!({"policies": ["coffer"], "ttl": "600s"}),
        )
        .await["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let tokens = TokenSource::new(
        world.http.clone(),
        AuthMethod::Token(SecretString::from(token.clone())),
    );
    let values = VaultValues::connect(
        VaultConfig::from_env(|k| match k {
            "COFFER_VAULT_ADDR" => Some(world.addr.clone()),
            "COFFER_VAULT_TOKEN" => Some(token.clone()),
            _ => None,
        })
        .unwrap(),
    )
    .await
    .expect("connect with the given token");
    let reply = tokens
        .request(Method::GET, "auth/token/lookup-self", None)
        .await
        .unwrap();
    assert!(reply.status.is_success());
    values.ping().await.expect("ping with the given token");

    world
        .as_root(Method::POST, "auth/token/revoke", json!({"token": token}))
        .await;

    let err = tokens
        .request(Method::GET, "auth/token/lookup-self", None)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Denied(_)), "{err:?}");
    assert!(!err.to_string().contains(&token), "{err}");
    assert!(!format!("{err:?}").contains(&token));

    let err = values.ping().await.unwrap_err();
    println!("a running store with a revoked token: {err}");
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(!err.to_string().contains(&token), "{err}");
    assert!(!format!("{err:?}").contains(&token));
    assert_eq!(world.reviews(), 0, "the token method never logs in");
}

// ---------------------------------------------------------------------------------------
// OpenBao with kubernetes auth against a TokenReview stand-in (as in tests/auth.rs)
// ---------------------------------------------------------------------------------------

const NAMESPACE: &str = "coffer-ns";
const SERVICE_ACCOUNT: &str = "coffer-sa";
const SA_UID: &str = "6f1c3a4e-0000-4000-8000-000000000001";
const REVIEWER_JWT: &str = "reviewer-jwt";
/// OpenBao 2.7 wants a CA certificate once `disable_local_ca_jwt` is set, even for a plain
/// `http://` host where it is never used: a throwaway self-signed one (no key kept).
const UNUSED_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBlzCCAT2gAwIBAgIUElJ2LIzKd3m2bnqY27O+DqvhsuQwCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVY29mZmVyLXRlc3QtdW51c2VkLWNhMCAXDTI2MTEzMDAyMjI1
NloYDzIxMjYxMTA2MDIyMjU2WjAgMR4wHAYDVQQDDBVjb2ZmZXItdGVzdC11bnVz
ZWQtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAR4AVigwmxill/OkmB5Whr6
jZiSp4Mol2s/P+Q7O6LdiIPlTRJCd+6+uTG36WYfPLyHEwiq8S8H4ndIVs+f/OVH
o1MwUTAdBgNVHQ4EFgQUPRH+p7RTXb8qrgEOHGZgg0F5vV4wHwYDVR0jBBgwFoAU
PRH+p7RTXb8qrgEOHGZgg0F5vV4wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNIADBFAiEA1JqcR4WBfsHshT7Ki3r+8qzQbe/IjBAFqrvhWmrmSQkCID53TLz8
CoHzTGEHRRK/AazuoOUcpE5X6T05wcUW/Qrv
-----END CERTIFICATE-----
";

/// OpenBao whose role `coffer` logs the stand-in's service account in with leases of
/// `token_ttl` (at most `token_max_ttl`), and the token file holding a JWT it accepts.
struct KubernetesWorld {
    addr: String,
    http: VaultHttp,
    auth: KubernetesAuth,
    reviews: Arc<TokenReviews>,
    _bao: Bao,
    token_review: Server,
    _dir: tempfile::TempDir,
}

/// What the TokenReview stand-in accepts, and every token it was asked about.
#[derive(Default)]
struct TokenReviews {
    valid: Mutex<HashSet<String>>,
    seen: Mutex<Vec<String>>,
}

impl KubernetesWorld {
    async fn start(token_ttl: &str, token_max_ttl: &str) -> KubernetesWorld {
        let jwt = jwt(SERVICE_ACCOUNT, "a");
        let reviews = Arc::new(TokenReviews::default());
        reviews.valid.lock().unwrap().insert(jwt.clone());
        let token_review = Server::start(
            Router::new()
                .route(
                    "/apis/authentication.k8s.io/v1/tokenreviews",
                    post(token_review),
                )
                .with_state(reviews.clone()),
        )
        .await;
        let bao = Bao::start().await;
        let dir = tempfile::tempdir().unwrap();
        let world = KubernetesWorld {
            addr: bao.addr.clone(),
            http: VaultHttp::new(&bao.addr, None, Duration::from_secs(10)).unwrap(),
            auth: KubernetesAuth {
                role: "coffer".into(),
                token_path: dir.path().join("token"),
                mount: "kubernetes".into(),
            },
            reviews,
            _bao: bao,
            token_review,
            _dir: dir,
        };
        std::fs::write(&world.auth.token_path, &jwt).unwrap();
        world
            .as_root(
                Method::POST,
                "sys/auth/kubernetes",
                json!({"type": "kubernetes"}),
            )
            .await;
        world
            .as_root(
                Method::POST,
                "auth/kubernetes/config",
                json!({
                    "kubernetes_host": format!("http://{}", world.token_review.addr),
                    "disable_local_ca_jwt": true,
                    "token_reviewer_jwt": REVIEWER_JWT,
                    "kubernetes_ca_cert": UNUSED_CA_PEM,
                }),
            )
            .await;
        world
            .as_root(
                Method::PUT,
                "sys/policies/acl/coffer",
                json!({"policy": "path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }"}),
            )
            .await;
        world
            .as_root(
                Method::POST,
                "auth/kubernetes/role/coffer",
                json!({
                    "bound_service_account_names": [SERVICE_ACCOUNT],
                    "bound_service_account_namespaces": [NAMESPACE],
                    "token_policies": ["coffer"],
                    "token_ttl": token_ttl,
                    "token_max_ttl": token_max_ttl,
                }),
            )
            .await;
        world
    }

    fn method(&self) -> AuthMethod {
        AuthMethod::Kubernetes(self.auth.clone())
    }

    /// TokenReviews so far: OpenBao's kubernetes method asks for one at every login, and
    /// at every renewal of a token it gave (it checks the service account again).
    fn reviews(&self) -> usize {
        self.reviews.seen.lock().unwrap().len()
    }

    /// `METHOD path` as root; must succeed; the answer's body.
    async fn as_root(&self, method: Method, path: &str, body: Value) -> Value {
        let root = SecretString::from("root");
        let reply = self
            .http
            .request(method, path, Some(&root), Some(&body), &[])
            .await
            .unwrap();
        assert!(
            reply.status.is_success(),
            "{path}: {} {:?}",
            reply.status,
            reply.body
        );
        reply.body.unwrap_or(Value::Null)
    }

    /// Revokes, by accessor, every live token a kubernetes login gave; how many.
    async fn revoke_kubernetes_tokens(&self) -> usize {
        let list = Method::from_bytes(b"LIST").unwrap();
        let root = SecretString::from("root");
        let reply = self
            .http
            .request(list, "auth/token/accessors", Some(&root), None, &[])
            .await
            .unwrap();
        let accessors: Vec<String> = reply.body.unwrap()["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let mut revoked = 0;
        for accessor in accessors {
            let info = self
                .as_root(
                    Method::POST,
                    "auth/token/lookup-accessor",
                    json!({"accessor": accessor}),
                )
                .await;
            if info["data"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("auth/kubernetes/login"))
            {
                self.as_root(
                    Method::POST,
                    "auth/token/revoke-accessor",
                    json!({"accessor": accessor}),
                )
                .await;
                revoked += 1;
            }
        }
        revoked
    }
}

/// A service-account JWT as the kubelet mounts it, with a signature nobody checks here
/// (OpenBao reads the claims; the TokenReview stand-in says whether the token is valid).
fn jwt(service_account: &str, nonce: &str) -> String {
    let header = json!({"alg": "RS256", "kid": "test"});
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "sub": format!("system:serviceaccount:{NAMESPACE}:{service_account}"),
        "kubernetes.io/serviceaccount/namespace": NAMESPACE,
        "kubernetes.io/serviceaccount/secret.name": format!("{service_account}-token-{nonce}"),
        "kubernetes.io/serviceaccount/service-account.name": service_account,
        "kubernetes.io/serviceaccount/service-account.uid": SA_UID,
    });
    format!(
        "{}.{}.{}",
        BASE64URL.encode(header.to_string()),
        BASE64URL.encode(claims.to_string()),
        BASE64URL.encode(format!("signature-{nonce}")),
    )
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`, as the API server answers it for
/// the reviewer's bearer token.
async fn token_review(
    State(reviews): State<Arc<TokenReviews>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if bearer != format!("Bearer {REVIEWER_JWT}") {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    let review: Value = serde_json::from_str(&body).unwrap_or_default();
    let token = review["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    reviews.seen.lock().unwrap().push(token.clone());
    let status = if reviews.valid.lock().unwrap().contains(&token) {
        json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"),
                "uid": SA_UID,
                "groups": [
                    "system:serviceaccounts",
                    format!("system:serviceaccounts:{NAMESPACE}"),
                    "system:authenticated",
                ],
            },
        })
    } else {
        json!({"authenticated": false, "user": {}})
    };
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {},
            "spec": review["spec"],
            "status": status,
        })),
    )
        .into_response()
}

/// An axum app on `127.0.0.1:0`, stopped when dropped.
struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(app: Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server { addr, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
