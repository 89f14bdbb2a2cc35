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
        after: Option<&SecretName>,
        limit: usize,
    ) -> StoreResult<Vec<SecretMeta>> {
        self.0.list(e, after, limit).await
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
