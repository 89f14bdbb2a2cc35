//! Authentication is cached briefly; revocation still takes effect at once on the node that
//! revoked, within the cache's lifetime on another node, and never lets a write through.

use std::time::{Duration, Instant};

use coffer_core::{AUTH_CACHE_TTL, Applied, CoreError, Mutation};
use secrecy::{ExposeSecret, SecretString};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_at_once_here_and_within_the_cache_lifetime_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    // A second node on the same catalog.
    let b = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let created = a
        .coffer
        .apply(
            &admin(),
            Mutation::CreateApiKey {
                name: "ci".into(),
                role: coffer_core::Role::Manage(env()),
            },
        )
        .await
        .unwrap();
    let Applied::ApiKeyCreated(new) = created else {
        panic!("{created:?}")
    };
    let key = new.key.expose_secret().to_owned();
    // Both nodes authenticate (and cache) it.
    let on_a = a.coffer.authenticate(&key).await.unwrap();
    let on_b = b.coffer.authenticate(&key).await.unwrap();
    a.coffer
        .apply(
            &admin(),
            Mutation::RevokeApiKey {
                id: new.meta.id.clone(),
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(
            a.coffer.authenticate(&key).await,
            Err(CoreError::Unauthenticated)
        ),
        "the revoking node refuses it at once"
    );
    // The other node may still accept it for reads for a moment, never for writes.
    let write = Mutation::PutSecret {
        env: env(),
        name: name("X"),
        value: SecretString::from("v"),
        expected_revision: None,
    };
    assert!(matches!(
        b.coffer.apply(&on_b, write).await,
        Err(CoreError::Unauthenticated)
    ));
    let began = Instant::now();
    while b.coffer.authenticate(&key).await.is_ok() {
        assert!(
            began.elapsed() < AUTH_CACHE_TTL + Duration::from_secs(2),
            "the other node still accepts the key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(on_a);
}
