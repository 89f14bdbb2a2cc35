//! A backend that cannot compare-and-set says so, and the service refuses `expectedRevision`
//! on it instead of silently ignoring it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use coffer_core::{CoreError, Mutation, StartupOptions};
use coffer_sqlite::SqliteStore;
use coffer_store::{
    Actor, BatchPut, Capabilities, EnvName, Precondition, PutOutcome, Replacement, SecretMeta,
    SecretName, SecretRecord, SecretStore, StoreResult, StoredValue, Timestamp,
};
use secrecy::SecretString;

use crate::harness::*;

/// The embedded store, declaring what Vault KV v1 declares: no compare-and-set.
struct WithoutCas(Arc<SqliteStore>);

#[async_trait]
impl SecretStore for WithoutCas {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            compare_and_set: false,
            atomic_batches: false,
        }
    }
    fn backend_name(&self) -> &'static str {
        "kv-v1-like"
    }
    async fn get(&self, e: &EnvName, n: &SecretName) -> StoreResult<Option<SecretRecord>> {
        self.0.get(e, n).await
    }
    async fn meta(&self, e: &EnvName, n: &SecretName) -> StoreResult<Option<SecretMeta>> {
        self.0.meta(e, n).await
    }
    async fn list(
        &self,
        e: &EnvName,
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
        e: &EnvName,
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
        e: &EnvName,
        batch: Vec<BatchPut>,
        at: Timestamp,
        a: &Actor,
    ) -> StoreResult<Vec<Option<PutOutcome>>> {
        self.0.put_many(e, batch, at, a).await
    }
    async fn delete(
        &self,
        e: &EnvName,
        n: &SecretName,
        p: Precondition,
        a: &Actor,
    ) -> StoreResult<SecretMeta> {
        self.0.delete(e, n, p, a).await
    }
    async fn purge_environment(&self, e: &EnvName) -> StoreResult<u64> {
        self.0.purge_environment(e).await
    }
    async fn count_by_key_version(&self) -> StoreResult<BTreeMap<u32, u64>> {
        self.0.count_by_key_version().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.0.ping().await
    }
}

#[tokio::test]
async fn expected_revision_is_refused_on_a_backend_without_compare_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    ensure_test_admin(&store).await;
    let options = StartupOptions {
        catalog: store.clone(),
        secrets: Arc::new(WithoutCas(store)),
        keyring: ring(1, &[(1, K1)]),
        require_encryption: false,
        admin_key_seed: None,
        allow_unreadable: false,
    };
    let (coffer, _) = options.start().await.unwrap();
    let put = |expected| Mutation::PutSecret {
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
    let delete = Mutation::DeleteSecret {
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
