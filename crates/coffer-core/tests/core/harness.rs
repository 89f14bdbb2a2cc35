//! Starting a service on a temp data dir, and the few calls every test makes.
//!
//! Every test runs on the backend `COFFER_TEST_BACKEND` names: `sqlite` (the default: the
//! store lives in the test's temp dir) or `postgres` (the temp dir stands for a database of
//! its own on `COFFER_TEST_DATABASE_URL`, created on first use; opening the same dir again,
//! as a restart does, opens the same database). `scripts/test.sh` runs this suite on both.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use coffer_core::{
    Coffer, CoreError, EnvName, Principal, RewrapReport, SecretName, StartupError, StartupOptions,
    StartupReport, ValueStatus, VerifyReport, commands,
};
use coffer_crypto::{Key, KeyVersion, Keyring};
use coffer_store::{Catalog, Role, SecretStore};
use secrecy::{ExposeSecret, SecretString};

pub const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
pub const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// A keyring with `current` and the given `(version, key material)` pairs.
pub fn ring(current: u32, keys: &[(u32, &str)]) -> Option<Keyring> {
    let keys: BTreeMap<KeyVersion, Key> = keys
        .iter()
        .map(|(v, k)| (KeyVersion::new(*v).unwrap(), Key::from_material(k).unwrap()))
        .collect();
    Some(Keyring::new(KeyVersion::new(current).unwrap(), keys).unwrap())
}

/// What a test reaches through the store directly: the catalog and the secret values of one
/// database (SQLite or PostgreSQL).
pub trait TestStore: Catalog + SecretStore {}

impl<T: Catalog + SecretStore> TestStore for T {}

/// A started service and its store.
pub struct Node {
    pub coffer: Arc<Coffer>,
    pub store: Arc<dyn TestStore>,
    pub report: StartupReport,
}

/// A fresh store handle on the database `dir` stands for.
pub async fn open_store(dir: &Path) -> Arc<dyn TestStore> {
    crate::backend::open(dir).await
}

/// Start-up options on a fresh store handle for `dir`.
pub async fn options(dir: &Path, keyring: Option<Keyring>) -> (StartupOptions, Arc<dyn TestStore>) {
    let store = open_store(dir).await;
    let options = StartupOptions {
        catalog: store.clone(),
        secrets: store.clone(),
        keyring,
        require_encryption: false,
        admin_key_seed: None,
        allow_unreadable: false,
        backend_note: None,
    };
    (options, store)
}

pub async fn start(
    dir: &Path,
    keyring: Option<Keyring>,
    allow_unreadable: bool,
) -> Result<Node, StartupError> {
    let (mut options, store) = options(dir, keyring).await;
    options.allow_unreadable = allow_unreadable;
    let (coffer, report) = options.start().await?;
    ensure_test_admin(&*store).await;
    Ok(Node {
        coffer: Arc::new(coffer),
        store,
        report,
    })
}

/// Stores the key behind [`admin`]: writes re-check their actor, so it must exist.
pub async fn ensure_test_admin(store: &dyn TestStore) {
    use coffer_store::{Actor, ApiKeyMeta, ApiKeyRecord, StoreError, Timestamp};
    let record = ApiKeyRecord {
        meta: ApiKeyMeta {
            id: admin().key_id,
            name: "test admin".into(),
            role: Role::Admin,
            created_at: Timestamp::now(),
        },
        key_hash: "0".repeat(64),
    };
    match store.insert_api_key(&record, &Actor::System).await {
        Ok(()) | Err(StoreError::AlreadyExists) => {}
        Err(e) => panic!("cannot store the test admin key: {e}"),
    }
}

/// An admin principal whose key [`start`] stores.
pub fn admin() -> Principal {
    Principal {
        key_id: coffer_store::ApiKeyId::new("ak_00").unwrap(),
        role: Role::Admin,
        origin: Default::default(),
    }
}

pub fn env() -> EnvName {
    EnvName::new("default").unwrap()
}

/// The `default` environment as the catalog holds it (its incarnation), for reading and
/// writing the store directly.
pub async fn incarnation(store: &dyn TestStore) -> coffer_store::Environment {
    store.get_environment(&env()).await.unwrap().unwrap()
}

pub fn name(n: &str) -> SecretName {
    SecretName::new(n).unwrap()
}

pub async fn put(c: &Coffer, n: &str, value: &str) -> Result<coffer_store::PutOutcome, CoreError> {
    let m = commands::PutSecret {
        env: env(),
        name: name(n),
        value: SecretString::from(value),
        expected_revision: None,
    };
    c.apply(&admin(), m).await
}

pub async fn resolve_as(c: &Coffer, who: &Principal, n: &str) -> Result<Option<String>, CoreError> {
    c.resolve_secret(who, &env(), &name(n))
        .await
        .map(|v| v.map(|s| s.expose_secret().to_owned()))
}

pub async fn resolve(c: &Coffer, n: &str) -> Result<Option<String>, CoreError> {
    resolve_as(c, &admin(), n).await
}

pub async fn rewrap(c: &Coffer) -> RewrapReport {
    c.apply(&admin(), commands::Rewrap::default())
        .await
        .unwrap()
}

/// Stored values per key version (`0` = plaintext).
pub async fn versions(store: &dyn TestStore) -> Vec<(u32, u64)> {
    store
        .count_by_key_version()
        .await
        .unwrap()
        .into_iter()
        .collect()
}

pub async fn status_of(c: &Coffer, n: &str) -> ValueStatus {
    let meta = c.secret_meta(&admin(), &env(), &name(n)).await.unwrap();
    c.value_status(&meta).await.unwrap()
}

/// `coffer keys verify`: every value opened, findings recorded in the catalog.
pub async fn verify(c: &Coffer) -> VerifyReport {
    c.apply(&admin(), commands::Verify::default())
        .await
        .unwrap()
}

/// The unreadable values `/v1/status` reports.
pub async fn unreadable_count(c: &Coffer) -> u64 {
    c.status().await.unwrap().unreadable_values
}

/// A runtime key of [`env`], stored in the catalog (writes re-check their actor).
pub async fn runtime_key(store: &dyn TestStore, id: &str) -> Principal {
    use coffer_store::{Actor, ApiKeyMeta, ApiKeyRecord, StoreError, Timestamp};
    let principal = Principal {
        key_id: coffer_store::ApiKeyId::new(id).unwrap(),
        role: Role::Runtime(env()),
        origin: Default::default(),
    };
    let record = ApiKeyRecord {
        meta: ApiKeyMeta {
            id: principal.key_id.clone(),
            name: format!("runtime {id}"),
            role: principal.role.clone(),
            created_at: Timestamp::now(),
        },
        key_hash: format!("{:0>64}", id.trim_start_matches("ak_")),
    };
    match store.insert_api_key(&record, &Actor::System).await {
        Ok(()) | Err(StoreError::AlreadyExists) => {}
        Err(e) => panic!("cannot store a runtime key: {e}"),
    }
    principal
}

/// A manage key of [`env`], stored in the catalog.
pub async fn manage_key(store: &dyn TestStore, id: &str) -> Principal {
    use coffer_store::{Actor, ApiKeyMeta, ApiKeyRecord, StoreError, Timestamp};
    let principal = Principal {
        key_id: coffer_store::ApiKeyId::new(id).unwrap(),
        role: Role::Manage(env()),
        origin: Default::default(),
    };
    let record = ApiKeyRecord {
        meta: ApiKeyMeta {
            id: principal.key_id.clone(),
            name: format!("manage {id}"),
            role: principal.role.clone(),
            created_at: Timestamp::now(),
        },
        key_hash: format!("{:1>64}", id.trim_start_matches("ak_")),
    };
    match store.insert_api_key(&record, &Actor::System).await {
        Ok(()) | Err(StoreError::AlreadyExists) => {}
        Err(e) => panic!("cannot store a manage key: {e}"),
    }
    principal
}

/// Registers a pull function `id` in [`env`] declaring `secrets` and `config`, triggered
/// by `order.*`.
pub async fn register_pull(c: &Coffer, id: &str, secrets: &[&str], config: &[&str]) {
    let body = coffer_wire::PutFunction {
        triggers: vec![coffer_wire::Trigger {
            event: "order.*".into(),
        }],
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        config: config.iter().map(|s| s.to_string()).collect(),
        mode: coffer_wire::FunctionMode::Pull,
        url: None,
        timeout_ms: None,
        retries: None,
        concurrency: None,
        expected_revision: None,
    };
    let command = commands::PutFunction {
        env: env(),
        id: coffer_store::FunctionId::new(id).unwrap(),
        body,
    };
    c.apply(&admin(), command).await.unwrap();
}

/// Sends the event `name` in [`env`] as the admin; returns the runs it started.
pub async fn send_event(c: &Coffer, name: &str) -> Vec<coffer_store::RunId> {
    let command = commands::SendEvent {
        env: env(),
        event: coffer_wire::SendEvent {
            name: name.into(),
            data: Some(serde_json::json!({"order": 42})),
        },
        idempotency_key: None,
    };
    let done = c.apply(&admin(), command).await.unwrap();
    done.runs.into_iter().map(|(id, _)| id).collect()
}

/// Polls once (no wait) as `who` for runs of `functions`, with a lease of `lease_ms`.
pub async fn poll(
    c: &Coffer,
    who: &Principal,
    functions: &[&str],
    lease_ms: u64,
) -> Result<Option<coffer_wire::Job>, CoreError> {
    let command = commands::PollRun {
        env: env(),
        poll: coffer_wire::Poll {
            functions: functions.iter().map(|s| s.to_string()).collect(),
            wait_ms: None,
            lease_ms: Some(lease_ms),
        },
    };
    c.apply(who, command).await
}

/// Completes a run as `who`.
pub async fn complete(
    c: &Coffer,
    who: &Principal,
    run: &str,
    attempt: Option<u32>,
    result: Result<serde_json::Value, &str>,
) -> Result<coffer_store::RunRecord, CoreError> {
    let (output, error) = match result {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e.to_owned())),
    };
    let command = commands::CompleteRun {
        env: env(),
        id: coffer_store::RunId::new(run).unwrap(),
        body: coffer_wire::Complete {
            output,
            error,
            attempt,
        },
    };
    c.apply(who, command).await
}
