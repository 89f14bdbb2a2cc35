//! Start-up key checks, rotation and the runtime read path, on the embedded store.

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_core::{
    Coffer, CoreError, EnvName, Mutation, Principal, SecretName, StartupError, StartupOptions,
};
use coffer_crypto::{Key, KeyVersion, Keyring};
use coffer_sqlite::SqliteStore;
use coffer_store::{Precondition, Role, SecretStore, StoredValue, Timestamp};
use secrecy::{ExposeSecret, SecretString};

const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn ring(current: u32, keys: &[(u32, &str)]) -> Keyring {
    let keys: BTreeMap<KeyVersion, Key> = keys
        .iter()
        .map(|(v, k)| (KeyVersion::new(*v).unwrap(), Key::from_material(k).unwrap()))
        .collect();
    Keyring::new(KeyVersion::new(current).unwrap(), keys).unwrap()
}

async fn open(
    dir: &std::path::Path,
    keyring: Option<Keyring>,
) -> Result<(Coffer, Arc<SqliteStore>), StartupError> {
    let store = Arc::new(SqliteStore::open(dir).unwrap());
    let options = StartupOptions {
        catalog: store.clone(),
        secrets: store.clone(),
        keyring,
        require_encryption: false,
        admin_key_seed: None,
        allow_unreadable: false,
    };
    options.start().await.map(|(c, _)| (c, store))
}

async fn admin(store: &SqliteStore) -> Principal {
    use coffer_store::Catalog;
    let key = store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.role == Role::Admin)
        .unwrap();
    Principal {
        key_id: key.id,
        role: Role::Admin,
    }
}

fn env() -> EnvName {
    EnvName::new("default").unwrap()
}

fn name(n: &str) -> SecretName {
    SecretName::new(n).unwrap()
}

async fn put(coffer: &Coffer, who: &Principal, n: &str, value: &str) {
    let m = Mutation::PutSecret {
        env: env(),
        name: name(n),
        value: SecretString::from(value),
        expected_revision: None,
    };
    coffer.apply(who, m).await.unwrap();
}

async fn resolve(coffer: &Coffer, who: &Principal, n: &str) -> Result<Option<String>, CoreError> {
    coffer
        .resolve_secret(who, &env(), &name(n))
        .await
        .map(|v| v.map(|s| s.expose_secret().to_owned()))
}

#[tokio::test]
async fn a_value_sealed_under_v1_still_resolves_after_v2_becomes_current() {
    let dir = tempfile::tempdir().unwrap();
    let (c, store) = open(dir.path(), Some(ring(1, &[(1, K1)]))).await.unwrap();
    let who = admin(&store).await;
    put(&c, &who, "OLD", "sealed under one").await;
    drop((c, store));
    let (c, store) = open(dir.path(), Some(ring(2, &[(1, K1), (2, K2)])))
        .await
        .unwrap();
    put(&c, &who, "NEW", "sealed under two").await;
    assert_eq!(
        resolve(&c, &who, "OLD").await.unwrap().as_deref(),
        Some("sealed under one")
    );
    assert_eq!(
        resolve(&c, &who, "NEW").await.unwrap().as_deref(),
        Some("sealed under two")
    );
    let versions = store.count_by_key_version().await.unwrap();
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), [(1, 1), (2, 1)]);
}

#[tokio::test]
async fn the_wrong_key_stops_start_up_naming_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let (c, store) = open(dir.path(), Some(ring(1, &[(1, K1)]))).await.unwrap();
    put(&c, &admin(&store).await, "A", "x").await;
    drop((c, store));
    let err = open(dir.path(), Some(ring(1, &[(1, K2)])))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, StartupError::WrongKey { values: 1, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("key version 1"), "{msg}");
    assert!(!msg.contains(K1) && !msg.contains(K2), "{msg}");
}

#[tokio::test]
async fn a_missing_key_version_that_values_use_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (c, store) = open(dir.path(), Some(ring(1, &[(1, K1)]))).await.unwrap();
    put(&c, &admin(&store).await, "A", "x").await;
    drop((c, store));
    let err = open(dir.path(), Some(ring(2, &[(2, K2)])))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            StartupError::MissingKeyVersion {
                version: 1,
                values: 1
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn dev_mode_refuses_data_that_holds_encrypted_values() {
    let dir = tempfile::tempdir().unwrap();
    let (c, store) = open(dir.path(), Some(ring(1, &[(1, K1)]))).await.unwrap();
    put(&c, &admin(&store).await, "A", "x").await;
    drop((c, store));
    let err = open(dir.path(), None).await.err().expect("refused");
    assert!(
        matches!(err, StartupError::EncryptedValuesNeedKey { count: 1 }),
        "{err}"
    );
}

#[tokio::test]
async fn require_encryption_refuses_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let options = StartupOptions {
        catalog: store.clone(),
        secrets: store,
        keyring: None,
        require_encryption: true,
        admin_key_seed: None,
        allow_unreadable: false,
    };
    assert!(matches!(
        options.start().await.err(),
        Some(StartupError::EncryptionRequired)
    ));
}

#[tokio::test]
async fn dev_mode_stores_plaintext_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (c, store) = open(dir.path(), None).await.unwrap();
    let who = admin(&store).await;
    put(&c, &who, "A", "plain").await;
    assert_eq!(c.status().encryption, coffer_core::Encryption::Disabled);
    assert_eq!(
        resolve(&c, &who, "A").await.unwrap().as_deref(),
        Some("plain")
    );
    assert_eq!(
        store.count_by_key_version().await.unwrap().get(&0),
        Some(&1)
    );
}

#[tokio::test]
async fn a_ciphertext_copied_onto_another_secret_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let (c, store) = open(dir.path(), Some(ring(1, &[(1, K1)]))).await.unwrap();
    let who = admin(&store).await;
    put(&c, &who, "SOURCE", "belongs to SOURCE").await;
    let record = store.get(&env(), &name("SOURCE")).await.unwrap().unwrap();
    let StoredValue::Sealed { key_version, blob } = record.value else {
        panic!("sealed")
    };
    let copy = StoredValue::Sealed { key_version, blob };
    store
        .put(
            &env(),
            &name("TARGET"),
            copy,
            Precondition::None,
            Timestamp::now(),
        )
        .await
        .unwrap();
    assert!(matches!(
        resolve(&c, &who, "TARGET").await,
        Err(CoreError::Unreadable { .. })
    ));
    assert_eq!(
        resolve(&c, &who, "SOURCE").await.unwrap().as_deref(),
        Some("belongs to SOURCE")
    );
}

#[tokio::test]
async fn only_a_runtime_key_of_the_environment_resolves_values() {
    let dir = tempfile::tempdir().unwrap();
    let (c, store) = open(dir.path(), Some(ring(1, &[(1, K1)]))).await.unwrap();
    put(&c, &admin(&store).await, "A", "x").await;
    let id = coffer_store::ApiKeyId::new("ak_01").unwrap();
    let manage = Principal {
        key_id: id.clone(),
        role: Role::Manage(env()),
    };
    let other = Principal {
        key_id: id.clone(),
        role: Role::Runtime(EnvName::new("other").unwrap()),
    };
    let runtime = Principal {
        key_id: id,
        role: Role::Runtime(env()),
    };
    assert!(matches!(
        resolve(&c, &manage, "A").await,
        Err(CoreError::Forbidden)
    ));
    assert!(matches!(
        resolve(&c, &other, "A").await,
        Err(CoreError::Forbidden)
    ));
    assert_eq!(
        resolve(&c, &runtime, "A").await.unwrap().as_deref(),
        Some("x")
    );
    assert_eq!(resolve(&c, &runtime, "UNSET").await.unwrap(), None);
}

#[tokio::test]
async fn the_first_start_bootstraps_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let options = |seed: Option<&str>| StartupOptions {
        catalog: store.clone(),
        secrets: store.clone(),
        keyring: None,
        require_encryption: false,
        admin_key_seed: seed.map(SecretString::from),
        allow_unreadable: false,
    };
    let seed = "ck_admin_seeded_key_of_enough_length_0123456789";
    let (c, first) = options(Some(seed)).start().await.unwrap();
    let first = first.admin_key.expect("first start creates a key");
    assert!(first.seeded);
    assert_eq!(first.key.expose_secret(), seed);
    assert_eq!(c.authenticate(seed).await.unwrap().role, Role::Admin);
    let (_, second) = options(None).start().await.unwrap();
    assert!(second.admin_key.is_none(), "later starts create no key");
    let short = options(Some("short")).start().await.err();
    assert!(matches!(short, Some(StartupError::BadAdminSeed)));
}
