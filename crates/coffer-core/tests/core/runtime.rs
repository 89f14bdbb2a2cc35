//! The runtime read path: who may resolve, and associated data binding values to their place.

use coffer_core::{CoreError, EnvName, Principal};
use coffer_store::{Precondition, Role, SecretStore, StoredValue, Timestamp};

use crate::harness::*;

#[tokio::test]
async fn a_value_sealed_under_v1_still_resolves_after_v2_becomes_current() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "OLD", "sealed under one").await.unwrap();
    drop(n);
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    put(&n.coffer, "NEW", "sealed under two").await.unwrap();
    assert_eq!(
        resolve(&n.coffer, "OLD").await.unwrap().as_deref(),
        Some("sealed under one")
    );
    assert_eq!(
        resolve(&n.coffer, "NEW").await.unwrap().as_deref(),
        Some("sealed under two")
    );
    assert_eq!(versions(&n.store).await, [(1, 1), (2, 1)]);
}

#[tokio::test]
async fn a_ciphertext_copied_onto_another_secret_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "SOURCE", "belongs to SOURCE").await.unwrap();
    let record = n.store.get(&env(), &name("SOURCE")).await.unwrap().unwrap();
    let StoredValue::Sealed { key_version, blob } = record.value else {
        panic!("sealed")
    };
    let copy = StoredValue::Sealed { key_version, blob };
    n.store
        .put(
            &env(),
            &name("TARGET"),
            copy,
            Precondition::None,
            Timestamp::now(),
            &coffer_store::Actor::System,
        )
        .await
        .unwrap();
    assert!(matches!(
        resolve(&n.coffer, "TARGET").await,
        Err(CoreError::Unreadable { .. })
    ));
    assert_eq!(
        resolve(&n.coffer, "SOURCE").await.unwrap().as_deref(),
        Some("belongs to SOURCE")
    );
}

#[tokio::test]
async fn only_a_runtime_key_of_the_environment_resolves_values() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "A", "x").await.unwrap();
    let id = coffer_store::ApiKeyId::new("ak_01").unwrap();
    let as_role = |role| Principal {
        key_id: id.clone(),
        role,
        origin: Default::default(),
    };
    let manage = as_role(Role::Manage(env()));
    let other = as_role(Role::Runtime(EnvName::new("other").unwrap()));
    let runtime = as_role(Role::Runtime(env()));
    assert!(matches!(
        resolve_as(&n.coffer, &manage, "A").await,
        Err(CoreError::Forbidden)
    ));
    assert!(matches!(
        resolve_as(&n.coffer, &other, "A").await,
        Err(CoreError::Forbidden)
    ));
    assert_eq!(
        resolve_as(&n.coffer, &runtime, "A")
            .await
            .unwrap()
            .as_deref(),
        Some("x")
    );
    assert_eq!(
        resolve_as(&n.coffer, &runtime, "UNSET").await.unwrap(),
        None
    );
}
