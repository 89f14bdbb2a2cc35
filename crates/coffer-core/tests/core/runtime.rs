//! The runtime read path: who may resolve, and associated data binding values to their place.

use coffer_core::{CoreError, EnvName, Principal};
use coffer_store::{Precondition, Role, SecretListing, StoredValue, Timestamp};

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
    assert_eq!(versions(&*n.store).await, [(1, 1), (2, 1)]);
}

#[tokio::test]
async fn a_ciphertext_copied_onto_another_secret_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "SOURCE", "belongs to SOURCE").await.unwrap();
    let default = incarnation(&*n.store).await;
    let record = n
        .store
        .get(&default, &name("SOURCE"))
        .await
        .unwrap()
        .unwrap();
    let StoredValue::Sealed { key_version, blob } = record.value else {
        panic!("sealed")
    };
    let copy = StoredValue::Sealed { key_version, blob };
    n.store
        .put(
            &default,
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

/// A value sealed for one incarnation of `default` never opens in the next one of the
/// same name, even copied there byte for byte.
#[tokio::test]
async fn a_ciphertext_of_a_deleted_environment_does_not_open_in_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "TOKEN", "of the first default")
        .await
        .unwrap();
    let first = incarnation(&*n.store).await;
    let record = n.store.get(&first, &name("TOKEN")).await.unwrap().unwrap();
    let StoredValue::Sealed { key_version, blob } = record.value else {
        panic!("sealed")
    };
    let copy = || StoredValue::Sealed {
        key_version,
        blob: blob.clone(),
    };
    let admin = admin();
    n.coffer
        .apply(
            &admin,
            coffer_core::commands::DeleteEnvironment { name: env() },
        )
        .await
        .unwrap();
    n.coffer
        .apply(
            &admin,
            coffer_core::commands::CreateEnvironment { name: env() },
        )
        .await
        .unwrap();
    let second = incarnation(&*n.store).await;
    assert_ne!(first.id, second.id, "a new incarnation");
    assert!(
        n.store
            .list(&second, &SecretListing::by_name(None), 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing of the old incarnation is listed"
    );
    // A write sealed for the old incarnation is refused: it no longer exists.
    let stale = n
        .store
        .put(
            &first,
            &name("TOKEN"),
            copy(),
            Precondition::None,
            Timestamp::now(),
            &coffer_store::Actor::System,
        )
        .await;
    assert!(
        matches!(stale, Err(coffer_store::StoreError::NotFound)),
        "{stale:?}"
    );
    // Copied by hand into the new one, it does not open.
    n.store
        .put(
            &second,
            &name("TOKEN"),
            copy(),
            Precondition::None,
            Timestamp::now(),
            &coffer_store::Actor::System,
        )
        .await
        .unwrap();
    assert!(matches!(
        resolve(&n.coffer, "TOKEN").await,
        Err(CoreError::Unreadable { .. })
    ));
    assert!(n.store.get_environment(&env()).await.unwrap().is_some());
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

/// An environment from before incarnations (`env0_<name>`, given by the catalog migration)
/// keeps opening the values sealed naming it only, and a rewrap keeps them so.
#[tokio::test]
async fn a_value_sealed_before_incarnations_still_opens() {
    use coffer_store::{EnvId, EnvName, Environment};
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    let staging = Environment {
        name: EnvName::new("staging").unwrap(),
        id: EnvId::new("env0_staging").unwrap(),
        created_at: Timestamp::now(),
    };
    n.store
        .create_environment(&staging, &coffer_store::Actor::System)
        .await
        .unwrap();
    let old_ring = ring(1, &[(1, K1)]).unwrap();
    let sealed = old_ring
        .seal(b"coffer:secret:staging:OLD", b"sealed long ago")
        .unwrap();
    let value = StoredValue::Sealed {
        key_version: sealed.key_version,
        blob: sealed.blob,
    };
    n.store
        .put(
            &staging,
            &name("OLD"),
            value,
            Precondition::None,
            Timestamp::now(),
            &coffer_store::Actor::System,
        )
        .await
        .unwrap();
    let read = || async {
        n.coffer
            .resolve_secret(&admin(), &staging.name, &name("OLD"))
            .await
            .map(|v| v.map(|s| secrecy::ExposeSecret::expose_secret(&s).to_owned()))
    };
    assert_eq!(read().await.unwrap().as_deref(), Some("sealed long ago"));
    let report = rewrap(&n.coffer).await;
    assert_eq!(report.rewrapped, 1);
    assert_eq!(read().await.unwrap().as_deref(), Some("sealed long ago"));
}

/// `prod` is deleted and created again, three times, while a writer streams values into it:
/// afterwards every value listed belongs to the last incarnation and opens, and no row of an
/// earlier one is left anywhere (the walk that rewrap and start-up take sees none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_streaming_into_a_recreated_environment_leaves_nothing_of_the_old_one() {
    use coffer_store::EnvName;
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let prod = EnvName::new("prod").unwrap();
    let create = || coffer_core::commands::CreateEnvironment { name: prod.clone() };
    n.coffer.apply(&admin(), create()).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (coffer, prod, stop) = (n.coffer.clone(), prod.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut written, mut refused) = (0u32, 0u32);
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let put = coffer_core::commands::PutSecret {
                    env: prod.clone(),
                    name: name(&format!("S{}", i % 50)),
                    value: secrecy::SecretString::from(format!("value {i}")),
                    expected_revision: None,
                };
                match coffer.apply(&admin(), put).await {
                    Ok(_) => written += 1,
                    Err(CoreError::EnvironmentNotFound(_)) => refused += 1,
                    Err(e) => panic!("unexpected: {e}"),
                }
            }
            (written, refused)
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let delete = coffer_core::commands::DeleteEnvironment { name: prod.clone() };
        n.coffer.apply(&admin(), delete).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        n.coffer.apply(&admin(), create()).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (written, _refused) = writer.await.unwrap();
    assert!(written > 0, "the writer wrote");
    let last = n.store.get_environment(&prod).await.unwrap().unwrap();
    let listed = n
        .store
        .list(&last, &SecretListing::by_name(None), 100)
        .await
        .unwrap();
    for meta in listed.iter() {
        assert_eq!(meta.environment_id, last.id);
        let value = n
            .coffer
            .resolve_secret(&admin(), &prod, &meta.name)
            .await
            .unwrap();
        assert!(value.is_some(), "{} opens", meta.name);
    }
    let walked = n.store.scan(None, 10_000).await.unwrap();
    let stale: Vec<_> = walked
        .iter()
        .filter(|r| r.meta.environment == prod && r.meta.environment_id != last.id)
        .map(|r| r.meta.name.to_string())
        .collect();
    assert!(stale.is_empty(), "rows of old incarnations: {stale:?}");
}
