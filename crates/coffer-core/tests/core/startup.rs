//! Start-up: the canary check, dev mode, and the first-start bootstrap.

use coffer_core::{Encryption, StartupError};
use coffer_store::Role;
use secrecy::{ExposeSecret, SecretString};

use crate::harness::*;

#[tokio::test]
async fn the_wrong_key_stops_start_up_naming_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "A", "x").await.unwrap();
    drop(n);
    let err = start(dir.path(), ring(1, &[(1, K2)]), false)
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
async fn require_encryption_refuses_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (mut options, _) = options(dir.path(), None).await;
    options.require_encryption = true;
    assert!(matches!(
        options.start().await.err(),
        Some(StartupError::EncryptionRequired)
    ));
}

#[tokio::test]
async fn dev_mode_stores_plaintext_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, false).await.unwrap();
    put(&n.coffer, "A", "plain").await.unwrap();
    assert_eq!(
        n.coffer.status().await.unwrap().encryption,
        Encryption::Disabled
    );
    assert_eq!(
        resolve(&n.coffer, "A").await.unwrap().as_deref(),
        Some("plain")
    );
    assert_eq!(versions(&*n.store).await, [(0, 1)]);
}

#[tokio::test]
async fn the_first_start_bootstraps_once() {
    let dir = tempfile::tempdir().unwrap();
    let seeded = async |seed: Option<&str>| {
        let (mut o, _) = options(dir.path(), None).await;
        o.admin_key_seed = seed.map(SecretString::from);
        o
    };
    let seed = "ck_admin_seeded_key_of_enough_length_0123456789";
    let (c, first) = seeded(Some(seed)).await.start().await.unwrap();
    let first = first.admin_key.expect("first start creates a key");
    assert!(first.seeded);
    assert_eq!(first.key.expose_secret(), seed);
    assert_eq!(c.authenticate(seed).await.unwrap().role, Role::Admin);
    let (_, second) = seeded(None).await.start().await.unwrap();
    assert!(second.admin_key.is_none(), "later starts create no key");
    for bad in ["short", "ck_admin_ünïcödé_seed_that_is_long_enough_000"] {
        let refused = seeded(Some(bad)).await.start().await.err();
        assert!(matches!(refused, Some(StartupError::BadAdminSeed)), "{bad}");
    }
}
