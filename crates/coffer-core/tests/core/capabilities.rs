//! A backend that cannot compare-and-set says so, and the service refuses `expectedRevision`
//! on it instead of silently ignoring it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use coffer_core::{CoreError, StartupOptions, commands};
use coffer_store::{
    Actor, BatchPut, Capabilities, EnvName, Environment, Precondition, PutOutcome, Replacement,
    SecretMeta, SecretName, SecretRecord, SecretStore, StoreResult, StoredValue, Timestamp,
};
use secrecy::SecretString;

use crate::harness::*;

/// The embedded store, declaring other capabilities (say, what Vault KV v1 declares: no
/// compare-and-set), and counting the purges it is asked for.
struct Declaring(
    Arc<dyn TestStore>,
    Capabilities,
    std::sync::atomic::AtomicUsize,
);

const KV_V1_LIKE: Capabilities = Capabilities {
    compare_and_set: false,
    atomic_batches: false,
    values_in_catalog: false,
    raw_values: false,
};

#[async_trait]
impl SecretStore for Declaring {
    fn capabilities(&self) -> Capabilities {
        self.1
    }
    fn backend_name(&self) -> &'static str {
        "kv-v1-like"
    }
    async fn get(&self, e: &Environment, n: &SecretName) -> StoreResult<Option<SecretRecord>> {
        self.0.get(e, n).await
    }
    async fn meta(&self, e: &Environment, n: &SecretName) -> StoreResult<Option<SecretMeta>> {
        self.0.meta(e, n).await
    }
    async fn list(
        &self,
        e: &Environment,
        listing: &coffer_store::SecretListing<'_>,
        limit: usize,
    ) -> StoreResult<coffer_store::SecretPage> {
        self.0.list(e, listing, limit).await
    }
    async fn scan(
        &self,
        after: Option<&(EnvName, SecretName)>,
        limit: usize,
    ) -> StoreResult<Vec<SecretRecord>> {
        self.0.scan(after, limit).await
    }
    async fn replace_values(&self, batch: Vec<Replacement>, a: &Actor) -> StoreResult<Vec<bool>> {
        self.0.replace_values(batch, a).await
    }
    async fn put(
        &self,
        e: &Environment,
        n: &SecretName,
        v: StoredValue,
        p: Precondition,
        at: Timestamp,
        a: &Actor,
    ) -> StoreResult<PutOutcome> {
        self.0.put(e, n, v, p, at, a).await
    }
    async fn put_many(
        &self,
        e: &Environment,
        batch: Vec<BatchPut>,
        at: Timestamp,
        a: &Actor,
    ) -> StoreResult<Vec<Option<PutOutcome>>> {
        self.0.put_many(e, batch, at, a).await
    }
    async fn delete(
        &self,
        e: &Environment,
        n: &SecretName,
        p: Precondition,
        a: &Actor,
    ) -> StoreResult<SecretMeta> {
        self.0.delete(e, n, p, a).await
    }
    async fn purge_environment(&self, e: &Environment) -> StoreResult<u64> {
        self.2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.purge_environment(e).await
    }
    async fn count_by_key_version(&self) -> StoreResult<BTreeMap<u32, u64>> {
        self.0.count_by_key_version().await
    }
    async fn ping(&self) -> StoreResult<()> {
        SecretStore::ping(&*self.0).await
    }
}

#[tokio::test]
async fn expected_revision_is_refused_on_a_backend_without_compare_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    ensure_test_admin(&*store).await;
    let options = StartupOptions {
        catalog: store.clone(),
        secrets: Arc::new(Declaring(store.clone(), KV_V1_LIKE, 0.into())),
        keyring: ring(1, &[(1, K1)]),
        require_encryption: false,
        admin_key_seed: None,
        allow_unreadable: false,
        backend_note: None,
    };
    let (coffer, _) = options.start().await.unwrap();
    let put = |expected| commands::PutSecret {
        env: env(),
        name: name("A"),
        value: SecretString::from("v"),
        expected_revision: expected,
    };
    coffer.apply(&admin(), put(None)).await.unwrap();
    let refused = coffer.apply(&admin(), put(Some(1))).await;
    assert!(
        matches!(&refused, Err(CoreError::Invalid(m)) if m.contains("expectedRevision")),
        "{refused:?}"
    );
    let delete = commands::DeleteSecret {
        env: env(),
        name: name("A"),
        expected_revision: Some(1),
    };
    assert!(matches!(
        coffer.apply(&admin(), delete).await,
        Err(CoreError::Invalid(_))
    ));
    let meta = coffer
        .secret_meta(&admin(), &env(), &name("A"))
        .await
        .unwrap();
    assert_eq!(meta.revision, 1, "nothing changed");
}

/// Deleting an environment purges a separate value store after the catalog's transaction,
/// and never a store whose values went with the catalog's rows: a second purge there could
/// remove the values of a new environment of the same name, written in between.
#[tokio::test]
async fn only_a_store_outside_the_catalog_is_purged_after_an_environment_is_deleted() {
    for values_in_catalog in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        ensure_test_admin(&*store).await;
        let caps = Capabilities {
            values_in_catalog,
            ..store.capabilities()
        };
        let secrets = Arc::new(Declaring(store.clone(), caps, 0.into()));
        let options = StartupOptions {
            catalog: store.clone(),
            secrets: secrets.clone(),
            keyring: ring(1, &[(1, K1)]),
            require_encryption: false,
            admin_key_seed: None,
            allow_unreadable: false,
            backend_note: None,
        };
        let (coffer, _) = options.start().await.unwrap();
        coffer
            .apply(&admin(), commands::DeleteEnvironment { name: env() })
            .await
            .unwrap();
        let purges = secrets.2.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            purges,
            usize::from(!values_in_catalog),
            "values_in_catalog={values_in_catalog}"
        );
    }
}

/// A store that keeps values raw (Vault's `raw` format) is handed plaintext, by a put and by
/// an import, although a key is configured; `/v1/status` shows the backend as it describes
/// itself, or why it is not the configured one.
#[tokio::test]
async fn a_raw_store_is_handed_plaintext_and_status_names_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    ensure_test_admin(&*store).await;
    let caps = Capabilities {
        raw_values: true,
        ..store.capabilities()
    };
    let options = StartupOptions {
        catalog: store.clone(),
        secrets: Arc::new(Declaring(store.clone(), caps, 0.into())),
        keyring: ring(1, &[(1, K1)]),
        require_encryption: true,
        admin_key_seed: None,
        allow_unreadable: false,
        backend_note: None,
    };
    let (coffer, _) = options.start().await.unwrap();
    put(&coffer, "RAW", "raw value").await.unwrap();
    let imported = commands::ImportSecrets {
        env: env(),
        entries: vec![(name("IMPORTED"), SecretString::from("imported value"))],
    };
    coffer.apply(&admin(), imported).await.unwrap();
    let e = incarnation(&*store).await;
    for (n, want) in [("RAW", "raw value"), ("IMPORTED", "imported value")] {
        match store.get(&e, &name(n)).await.unwrap().unwrap().value {
            StoredValue::Plain(v) => assert_eq!(secrecy::ExposeSecret::expose_secret(&v), want),
            other => panic!("a raw store must get plaintext, got {other:?}"),
        }
    }
    assert_eq!(coffer.status().await.unwrap().backend, "kv-v1-like");

    let options = StartupOptions {
        catalog: store.clone(),
        secrets: store.clone(),
        keyring: ring(1, &[(1, K1)]),
        require_encryption: true,
        admin_key_seed: None,
        allow_unreadable: false,
        backend_note: Some("vault config incomplete: COFFER_VAULT_ADDR not set".into()),
    };
    let (coffer, _) = options.start().await.unwrap();
    assert_eq!(
        coffer.status().await.unwrap().backend,
        "db (vault config incomplete: COFFER_VAULT_ADDR not set)"
    );
}

/// A node configured for `db` whose catalog rows refer to a value store (the values were
/// migrated) refuses to hand them out, naming the backend, and marks nothing unreadable.
#[tokio::test]
async fn a_row_kept_by_another_backend_is_refused_not_marked_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    ensure_test_admin(&*store).await;
    let options = StartupOptions {
        catalog: store.clone(),
        secrets: store.clone(),
        keyring: ring(1, &[(1, K1)]),
        require_encryption: true,
        admin_key_seed: None,
        allow_unreadable: false,
        backend_note: None,
    };
    let (coffer, _) = options.start().await.unwrap();
    let e = incarnation(&*store).await;
    let row = coffer_store::values::reference_row(
        &StoredValue::Sealed {
            key_version: coffer_crypto::KeyVersion::new(1).unwrap(),
            blob: String::new(),
        },
        "nats",
        7,
        "00ff",
    );
    store
        .put(
            &e,
            &name("MOVED"),
            row,
            Precondition::None,
            Timestamp::now(),
            &Actor::System,
        )
        .await
        .unwrap();
    let runtime = runtime_key(&*store, "ak_77").await;
    let refused = coffer
        .resolve_secret(&runtime, &env(), &name("MOVED"))
        .await;
    match refused {
        Err(CoreError::Store(coffer_store::StoreError::Unavailable(m))) => {
            assert!(m.contains("COFFER_SECRETS_BACKEND=nats"), "{m}")
        }
        other => panic!("expected a refusal naming the backend, got {other:?}"),
    }
    assert_eq!(unreadable_count(&coffer).await, 0);
    let walk = coffer
        .apply(
            &admin(),
            commands::Verify {
                after: None,
                limit: Some(100),
            },
        )
        .await;
    assert!(
        walk.is_err(),
        "a verify must not count it as unreadable either"
    );
}

/// A value that starts like a catalog reference is refused on every backend (422), so a
/// dev-mode plaintext can never be taken for one.
#[tokio::test]
async fn a_value_spelling_a_reference_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    ensure_test_admin(&*store).await;
    let options = StartupOptions {
        catalog: store.clone(),
        secrets: store.clone(),
        keyring: None,
        require_encryption: false,
        admin_key_seed: None,
        allow_unreadable: false,
        backend_note: None,
    };
    let (coffer, _) = options.start().await.unwrap();
    let refused = put(&coffer, "LOOKALIKE", "\u{1f}ref:nats:3:00ff").await;
    assert!(
        matches!(&refused, Err(CoreError::Invalid(m)) if m.contains("U+001F")),
        "{refused:?}"
    );
    put(&coffer, "FINE", "ref:nats:3:00ff").await.unwrap();
}
