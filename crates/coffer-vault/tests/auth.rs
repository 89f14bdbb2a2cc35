//! Logging in to Vault with Kubernetes and AWS IAM auth, against real servers.
//!
//! Kubernetes: a real OpenBao dev server (`COFFER_TEST_BAO`, else `bao` on `PATH`) with its
//! real kubernetes auth method, pointed at a local stand-in for the Kubernetes TokenReview
//! API (the one part of a cluster the method talks to).
//!
//! AWS: OpenBao has no AWS auth method, so a local stand-in for Vault's `auth/aws/login`
//! verifies the forwarded SigV4 signature itself (recomputed from the known test
//! credentials), and a local stand-in for STS answers `AssumeRoleWithWebIdentity`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL};
use coffer_vault::VaultError;
use coffer_vault::auth::{AuthMethod, AwsAuth, KubernetesAuth, Login, aws, kubernetes};
use coffer_vault::http::VaultHttp;
use coffer_vault::testing::DevServer as Bao;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Kubernetes, against OpenBao's kubernetes auth method
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

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_login_gives_a_token_that_reads_and_writes_secrets() {
    let k8s = KubernetesWorld::start().await;
    k8s.write_jwt(&k8s.jwt_a);

    let login = AuthMethod::Kubernetes(k8s.auth.clone())
        .login(&k8s.http)
        .await
        .expect("login");
    assert_eq!(login.ttl, Some(Duration::from_secs(600)));
    assert!(login.renewable);

    let written = k8s
        .http
        .request(
            Method::POST,
            "secret/data/x",
            Some(&login.token),
            Some(&json!({"data": {"v": "1"}})),
            &[],
        )
        .await
        .unwrap();
    assert!(written.status.is_success(), "write: {:?}", written.status);
    let read = k8s
        .http
        .request(Method::GET, "secret/data/x", Some(&login.token), None, &[])
        .await
        .unwrap();
    assert!(read.status.is_success(), "read: {:?}", read.status);
    assert_eq!(read.body.unwrap()["data"]["data"]["v"], "1");

    // The policy is what the role grants: nothing outside `secret/`.
    let outside = k8s
        .http
        .request(
            Method::GET,
            "sys/policies/acl",
            Some(&login.token),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(outside.status.as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_login_with_a_jwt_the_cluster_rejects_is_denied() {
    let k8s = KubernetesWorld::start().await;
    let forged = jwt(SERVICE_ACCOUNT, "forged");
    k8s.write_jwt(&forged);

    let err = k8s.login().await.unwrap_err();
    let VaultError::Denied(msg) = &err else {
        panic!("expected Denied, got {err:?}");
    };
    assert!(!msg.contains(&forged), "the JWT leaked into {msg}");
    assert!(!format!("{err:?}").contains(&forged));
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_login_without_the_token_file_is_a_config_error_naming_it() {
    let k8s = KubernetesWorld::start().await;
    // Nothing written at token_path.
    let err = k8s.login().await.unwrap_err();
    let VaultError::Config(msg) = &err else {
        panic!("expected Config, got {err:?}");
    };
    assert!(
        msg.contains(&k8s.auth.token_path.display().to_string()),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_login_reads_the_rotated_jwt_at_every_login() {
    let k8s = KubernetesWorld::start().await;
    k8s.write_jwt(&k8s.jwt_a);
    k8s.login().await.expect("first login");
    assert_eq!(k8s.reviewed().last(), Some(&k8s.jwt_a));

    // The kubelet rotates the token: the old one is no longer valid, the file holds the new.
    k8s.set_valid(&[&k8s.jwt_b]);
    k8s.write_jwt(&k8s.jwt_b);
    k8s.login().await.expect("login after rotation");
    assert_eq!(k8s.reviewed().last(), Some(&k8s.jwt_b));
}

/// OpenBao with kubernetes auth configured against a TokenReview stand-in, and a temporary
/// directory for the service-account token file.
struct KubernetesWorld {
    http: VaultHttp,
    auth: KubernetesAuth,
    jwt_a: String,
    jwt_b: String,
    reviews: Arc<TokenReviews>,
    _bao: Bao,
    _token_review: Server,
    _dir: tempfile::TempDir,
}

/// What the TokenReview stand-in accepts, and every token it was asked about.
#[derive(Default)]
struct TokenReviews {
    valid: Mutex<HashSet<String>>,
    seen: Mutex<Vec<String>>,
}

impl KubernetesWorld {
    async fn start() -> KubernetesWorld {
        let jwt_a = jwt(SERVICE_ACCOUNT, "a");
        let jwt_b = jwt(SERVICE_ACCOUNT, "b");
        let reviews = Arc::new(TokenReviews::default());
        reviews.valid.lock().unwrap().insert(jwt_a.clone());
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
        let root = SecretString::from("root");
        let http = VaultHttp::new(&bao.addr, None, Duration::from_secs(10)).unwrap();
        let as_root = |method: Method, path: &'static str, body: Value| {
            let http = http.clone();
            let root = root.clone();
            async move {
                let reply = http
                    .request(method, path, Some(&root), Some(&body), &[])
                    .await
                    .unwrap();
                assert!(
                    reply.status.is_success(),
                    "{path}: {} {:?}",
                    reply.status,
                    reply.body
                );
            }
        };
        as_root(
            Method::POST,
            "sys/auth/kubernetes",
            json!({"type": "kubernetes"}),
        )
        .await;
        as_root(
            Method::POST,
            "auth/kubernetes/config",
            json!({
                "kubernetes_host": format!("http://{}", token_review.addr),
                "disable_local_ca_jwt": true,
                "token_reviewer_jwt": REVIEWER_JWT,
                "kubernetes_ca_cert": UNUSED_CA_PEM,
            }),
        )
        .await;
        as_root(
            Method::PUT,
            "sys/policies/acl/coffer",
            json!({"policy": "path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }"}),
        )
        .await;
        as_root(
            Method::POST,
            "auth/kubernetes/role/coffer",
            json!({
                "bound_service_account_names": [SERVICE_ACCOUNT],
                "bound_service_account_namespaces": [NAMESPACE],
                "token_policies": ["coffer"],
                "token_ttl": "600s",
            }),
        )
        .await;

        let dir = tempfile::tempdir().unwrap();
        let auth = KubernetesAuth {
            role: "coffer".into(),
            token_path: dir.path().join("token"),
            mount: "kubernetes".into(),
        };
        KubernetesWorld {
            http,
            auth,
            jwt_a,
            jwt_b,
            reviews,
            _bao: bao,
            _token_review: token_review,
            _dir: dir,
        }
    }

    async fn login(&self) -> Result<Login, VaultError> {
        kubernetes::login(&self.auth, &self.http).await
    }

    fn write_jwt(&self, jwt: &str) {
        std::fs::write(&self.auth.token_path, jwt).unwrap();
    }

    fn set_valid(&self, jwts: &[&str]) {
        *self.reviews.valid.lock().unwrap() = jwts.iter().map(|j| j.to_string()).collect();
    }

    fn reviewed(&self) -> Vec<String> {
        self.reviews.seen.lock().unwrap().clone()
    }
}

/// A service-account JWT as the kubelet mounts it, with a signature nobody checks here
/// (OpenBao reads the claims; the TokenReview stand-in says whether the token is valid).
/// `nonce` makes tokens of the same account differ, as rotated ones do.
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

// ---------------------------------------------------------------------------------------
// AWS IAM, against a stand-in for Vault's aws auth method that verifies the signature
// ---------------------------------------------------------------------------------------

const REGION: &str = "eu-west-1";
const SERVER_ID: &str = "vault.coffer.test";
const ACCESS_KEY: &str = "AKIDCOFFERTEST";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYCOFFERKEY";
const TEMP_ACCESS_KEY: &str = "ASIACOFFERTEST";
const TEMP_SECRET_KEY: &str = "tEmPsEcReT/K7MDENG+bPxRfiCYTEMPKEY";
const TEMP_SESSION_TOKEN: &str = "FwoGZXIvYXdzEC0aDCOFFER+session/token==";
const WEB_IDENTITY_TOKEN: &str = "eyJ-web-identity-token";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/coffer";
const VAULT_TOKEN: &str = "s.aws-login-token";

#[tokio::test]
async fn aws_login_with_env_keys_succeeds() {
    let aws = AwsWorld::start().await;
    let login = aws::login_with_env(
        &aws.auth(Some(SERVER_ID)),
        &aws.http,
        env(&[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]),
    )
    .await
    .expect("login");
    assert_eq!(login.token.expose_secret(), VAULT_TOKEN);
    assert_eq!(login.ttl, Some(Duration::from_secs(60)));
    assert!(login.renewable);
    assert!(!format!("{login:?}").contains(VAULT_TOKEN));
}

#[tokio::test]
async fn aws_login_signs_and_sends_the_session_token() {
    let aws = AwsWorld::start().await;
    aws::login_with_env(
        &aws.auth(Some(SERVER_ID)),
        &aws.http,
        env(&[
            ("AWS_ACCESS_KEY_ID", TEMP_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", TEMP_SECRET_KEY),
            ("AWS_SESSION_TOKEN", TEMP_SESSION_TOKEN),
        ]),
    )
    .await
    .expect("login with a session token");

    // The stand-in requires the session token of temporary credentials, signed.
    let err = aws::login_with_env(
        &aws.auth(Some(SERVER_ID)),
        &aws.http,
        env(&[
            ("AWS_ACCESS_KEY_ID", TEMP_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", TEMP_SECRET_KEY),
        ]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, VaultError::Denied(_)), "{err:?}");
}

#[tokio::test]
async fn aws_login_with_a_wrong_secret_key_is_denied_without_quoting_it() {
    let aws = AwsWorld::start().await;
    let wrong = "not-the-secret-key/xxxxxxxxxxxxxxxxxxxxxx";
    let err = aws::login_with_env(
        &aws.auth(Some(SERVER_ID)),
        &aws.http,
        env(&[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", wrong),
        ]),
    )
    .await
    .unwrap_err();
    let VaultError::Denied(msg) = &err else {
        panic!("expected Denied, got {err:?}");
    };
    assert!(msg.contains("signature"), "{msg}");
    assert!(!format!("{err:?}").contains(wrong));
}

#[tokio::test]
async fn aws_login_without_or_with_another_server_id_is_denied() {
    let aws = AwsWorld::start().await;
    let keys = || {
        env(&[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ])
    };
    let missing = aws::login_with_env(&aws.auth(None), &aws.http, keys())
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, VaultError::Denied(m) if m.contains("X-Vault-AWS-IAM-Server-ID")),
        "{missing:?}"
    );
    let other = aws::login_with_env(&aws.auth(Some("another.vault")), &aws.http, keys())
        .await
        .unwrap_err();
    assert!(
        matches!(&other, VaultError::Denied(m) if m.contains("X-Vault-AWS-IAM-Server-ID")),
        "{other:?}"
    );
}

#[tokio::test]
async fn aws_login_with_web_identity_uses_the_temporary_credentials_sts_gives() {
    let aws = AwsWorld::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("web-identity-token");
    std::fs::write(&token_file, WEB_IDENTITY_TOKEN).unwrap();
    let token_file = token_file.display().to_string();

    let login = aws::login_with_env(
        &aws.auth(Some(SERVER_ID)),
        &aws.http,
        env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file),
            ("AWS_ROLE_ARN", ROLE_ARN),
        ]),
    )
    .await
    .expect("web identity login");
    assert_eq!(login.token.expose_secret(), VAULT_TOKEN);
    assert_eq!(aws.sts.assumed.lock().unwrap().as_slice(), [ROLE_ARN]);

    // A token STS does not accept: refused, without quoting it.
    std::fs::write(&token_file, "eyJ-someone-elses-token").unwrap();
    let err = aws::login_with_env(
        &aws.auth(Some(SERVER_ID)),
        &aws.http,
        env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file),
            ("AWS_ROLE_ARN", ROLE_ARN),
        ]),
    )
    .await
    .unwrap_err();
    let VaultError::Denied(msg) = &err else {
        panic!("expected Denied, got {err:?}");
    };
    assert!(msg.contains("InvalidIdentityToken"), "{msg}");
    assert!(!msg.contains("someone-elses"));
}

#[tokio::test]
async fn aws_login_without_credentials_is_a_config_error() {
    let aws = AwsWorld::start().await;
    let err = aws::login_with_env(&aws.auth(Some(SERVER_ID)), &aws.http, env(&[]))
        .await
        .unwrap_err();
    let VaultError::Config(msg) = &err else {
        panic!("expected Config, got {err:?}");
    };
    assert_eq!(
        msg,
        "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or \
         AWS_WEB_IDENTITY_TOKEN_FILE/AWS_ROLE_ARN"
    );
    assert!(aws.sts.assumed.lock().unwrap().is_empty());
}

/// An environment of exactly `vars`.
fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

/// The Vault stand-in (aws auth at `auth/aws/login`) and the STS stand-in.
struct AwsWorld {
    http: VaultHttp,
    sts: Arc<Sts>,
    sts_addr: SocketAddr,
    _vault: Server,
    _sts: Server,
}

/// What the STS stand-in was asked to assume.
#[derive(Default)]
struct Sts {
    assumed: Mutex<Vec<String>>,
}

impl AwsWorld {
    async fn start() -> AwsWorld {
        let sts = Arc::new(Sts::default());
        let sts_server = Server::start(
            Router::new()
                .route("/", post(assume_role_with_web_identity))
                .with_state(sts.clone()),
        )
        .await;
        let vault = Server::start(Router::new().route("/v1/auth/aws/login", post(aws_login))).await;
        AwsWorld {
            http: VaultHttp::new(
                &format!("http://{}", vault.addr),
                None,
                Duration::from_secs(10),
            )
            .unwrap(),
            sts,
            sts_addr: sts_server.addr,
            _vault: vault,
            _sts: sts_server,
        }
    }

    fn auth(&self, server_id: Option<&str>) -> AwsAuth {
        AwsAuth {
            role: "coffer".into(),
            mount: "aws".into(),
            region: REGION.into(),
            sts_endpoint: format!("http://{}", self.sts_addr),
            server_id: server_id.map(str::to_owned),
        }
    }
}

/// `POST /` with `Action=AssumeRoleWithWebIdentity`: temporary credentials for the one
/// known token, STS's `InvalidIdentityToken` refusal for any other.
async fn assume_role_with_web_identity(State(sts): State<Arc<Sts>>, body: String) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if field("Action") != "AssumeRoleWithWebIdentity"
        || field("Version") != "2011-06-15"
        || field("WebIdentityToken") != WEB_IDENTITY_TOKEN
        || field("RoleArn") != ROLE_ARN
        || field("RoleSessionName").is_empty()
    {
        return (
            StatusCode::BAD_REQUEST,
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
             <Type>Sender</Type><Code>InvalidIdentityToken</Code>\
             <Message>Couldn't retrieve verification key from your identity provider</Message>\
             </Error><RequestId>1</RequestId></ErrorResponse>",
        )
            .into_response();
    }
    sts.assumed.lock().unwrap().push(ROLE_ARN.to_owned());
    // The session token holds `+`, `/`, `=` and an `&amp;`-escaped `&` would too: keep it
    // as STS writes it.
    (
        StatusCode::OK,
        format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n\
             <AssumeRoleWithWebIdentityResult>\n\
             <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>\n\
             <Credentials>\n\
             <SessionToken>{TEMP_SESSION_TOKEN}</SessionToken>\n\
             <SecretAccessKey>{TEMP_SECRET_KEY}</SecretAccessKey>\n\
             <Expiration>2030-01-01T00:00:00Z</Expiration>\n\
             <AccessKeyId>{TEMP_ACCESS_KEY}</AccessKeyId>\n\
             </Credentials>\n\
             </AssumeRoleWithWebIdentityResult>\n\
             </AssumeRoleWithWebIdentityResponse>"
        ),
    )
        .into_response()
}

/// Vault's `auth/aws/login`, as far as the signed request goes: 200 with a token when the
/// forwarded `GetCallerIdentity` request carries a valid signature of known credentials
/// over the server-id header, 400 with Vault's `errors` otherwise.
async fn aws_login(body: String) -> Response {
    match verify_aws_login(&body) {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(json!({
                "auth": {"client_token": VAULT_TOKEN, "lease_duration": 60, "renewable": true},
            })),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": [e]}))).into_response(),
    }
}

fn verify_aws_login(body: &str) -> Result<(), String> {
    let login: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    if login["role"] != "coffer" {
        return Err("invalid role".into());
    }
    if login["iam_http_request_method"] != "POST" {
        return Err("iam_http_request_method must be POST".into());
    }
    let decode = |field: &str| -> Result<String, String> {
        let b64 = login[field].as_str().ok_or(format!("missing {field}"))?;
        let bytes = BASE64.decode(b64).map_err(|e| format!("{field}: {e}"))?;
        String::from_utf8(bytes).map_err(|e| format!("{field}: {e}"))
    };
    let url = decode("iam_request_url")?;
    let request_body = decode("iam_request_body")?;
    if request_body != "Action=GetCallerIdentity&Version=2011-06-15" {
        return Err("the request is not sts:GetCallerIdentity".into());
    }
    let raw_headers: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&decode("iam_request_headers")?).map_err(|e| e.to_string())?;
    // Header names are case-insensitive.
    let headers: BTreeMap<String, String> = raw_headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.join(",")))
        .collect();
    let header = |name: &str| headers.get(name).map(String::as_str);

    let authorization = header("authorization").ok_or("no Authorization header")?;
    let (access_key, signed_headers) = parse_authorization(authorization)?;
    let (secret, session_token) = match access_key.as_str() {
        ACCESS_KEY => (SECRET_KEY, None),
        TEMP_ACCESS_KEY => (TEMP_SECRET_KEY, Some(TEMP_SESSION_TOKEN)),
        _ => return Err("unknown access key".into()),
    };
    if header("x-amz-security-token") != session_token {
        return Err("the session token is missing or wrong".into());
    }
    if session_token.is_some() && !signed_headers.iter().any(|h| h == "x-amz-security-token") {
        return Err("the session token is not signed".into());
    }
    if header("x-vault-aws-iam-server-id") != Some(SERVER_ID)
        || !signed_headers
            .iter()
            .any(|h| h == "x-vault-aws-iam-server-id")
    {
        return Err("missing or invalid X-Vault-AWS-IAM-Server-ID header, or not signed".into());
    }
    if header("content-type") != Some("application/x-www-form-urlencoded; charset=utf-8") {
        return Err("wrong Content-Type".into());
    }

    // Sign the same request again, at the same time, with the credentials we know.
    let amz_date = header("x-amz-date").ok_or("no X-Amz-Date header")?;
    let time = parse_amz_date(amz_date)?;
    let to_sign: Vec<(&str, &str)> = signed_headers
        .iter()
        .filter(|h| !matches!(h.as_str(), "x-amz-date" | "x-amz-security-token"))
        .map(|h| {
            Ok((
                h.as_str(),
                header(h).ok_or(format!("signed header {h} missing"))?,
            ))
        })
        .collect::<Result<_, String>>()?;
    let identity = Credentials::new(
        &access_key,
        secret,
        session_token.map(str::to_owned),
        None,
        "test",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("sts")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        "POST",
        &url,
        to_sign.into_iter(),
        SignableBody::Bytes(request_body.as_bytes()),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let expected = instructions
        .headers()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.to_owned())
        .ok_or("the signer gave no Authorization")?;
    if expected != authorization {
        return Err(
            "the request signature we calculated does not match the signature you provided".into(),
        );
    }
    Ok(())
}

/// `AWS4-HMAC-SHA256 Credential=AK/date/region/sts/aws4_request, SignedHeaders=a;b,
/// Signature=…` → the access key and the signed header names.
fn parse_authorization(value: &str) -> Result<(String, Vec<String>), String> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not a SigV4 Authorization")?;
    let mut credential = None;
    let mut signed = None;
    for part in rest.split(", ") {
        if let Some(c) = part.strip_prefix("Credential=") {
            let scope: Vec<&str> = c.split('/').collect();
            if scope.len() != 5 || scope[2] != REGION || scope[3] != "sts" {
                return Err(format!("bad credential scope {:?}", &scope[1..]));
            }
            credential = Some(scope[0].to_owned());
        } else if let Some(s) = part.strip_prefix("SignedHeaders=") {
            signed = Some(s.split(';').map(str::to_owned).collect());
        }
    }
    Ok((
        credential.ok_or("no Credential")?,
        signed.ok_or("no SignedHeaders")?,
    ))
}

/// `20240101T120000Z` → the instant.
fn parse_amz_date(value: &str) -> Result<SystemTime, String> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(value, &format).map_err(|e| e.to_string())?;
    Ok(at.assume_utc().into())
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

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
