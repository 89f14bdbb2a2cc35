//! Authentication is cached briefly; revocation still takes effect at once on the node that
//! revoked, within the cache's lifetime on another node, and never lets a write through.

use std::time::{Duration, Instant};

use coffer_core::{AUTH_CACHE_TTL, CoreError, commands};
use secrecy::{ExposeSecret, SecretString};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_at_once_here_and_within_the_cache_lifetime_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    // A second node on the same catalog.
    let b = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let (key, id) = manage_key(&a).await;
    // Both nodes authenticate (and cache) it.
    let on_a = a.coffer.authenticate(&key).await.unwrap();
    let on_b = b.coffer.authenticate(&key).await.unwrap();
    a.coffer
        .apply(&admin(), commands::RevokeApiKey { id })
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
    let write = commands::PutSecret {
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

async fn manage_key(n: &Node) -> (String, coffer_store::ApiKeyId) {
    let created = n
        .coffer
        .apply(
            &admin(),
            commands::CreateApiKey {
                name: "ci".into(),
                role: coffer_core::Role::Manage(env()),
            },
        )
        .await
        .unwrap();
    let new = created;
    (new.key.expose_secret().to_owned(), new.meta.id.clone())
}

/// A request that may not remove keys cannot empty the cache either (else any key could
/// turn caching off for everyone by asking in a loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_key_removal_leaves_the_auth_cache_alone() {
    use coffer_store::Actor;
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let (key, id) = manage_key(&n).await;
    n.coffer.authenticate(&key).await.unwrap(); // cached
    // The row goes behind the cache's back, as another node's revocation would.
    n.store.delete_api_key(&id, &Actor::System).await.unwrap();
    assert!(
        n.coffer.authenticate(&key).await.is_ok(),
        "served from the cache"
    );
    let runtime = coffer_core::Principal {
        key_id: coffer_store::ApiKeyId::new("ak_ff").unwrap(),
        role: coffer_core::Role::Runtime(env()),
        origin: Default::default(),
    };
    let refused = n
        .coffer
        .apply(&runtime, commands::DeleteEnvironment { name: env() })
        .await;
    assert!(matches!(refused, Err(CoreError::Forbidden)), "{refused:?}");
    assert!(
        n.coffer.authenticate(&key).await.is_ok(),
        "a forbidden request emptied the cache"
    );
}

/// A revocation whose request goes away before the write commits (client gone, shutdown)
/// still clears the cache once it commits: the node that revoked never accepts the key
/// after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_whose_request_is_dropped_still_clears_the_cache_when_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let (key, id) = manage_key(&n).await;
    // Hold the backend's write lock so the revocation waits in its transaction.
    let blocker = crate::backend::KeyWriteLock::hold(dir.path()).await;
    let who = admin();
    let revoke = n.coffer.apply(&who, commands::RevokeApiKey { id });
    let dropped = tokio::time::timeout(Duration::from_millis(100), revoke).await;
    assert!(dropped.is_err(), "the revocation waits for the lock");
    n.coffer.authenticate(&key).await.unwrap(); // not revoked yet: cached again
    blocker.release().await;
    let hash = coffer_crypto::sha256_hex(key.as_bytes());
    let began = Instant::now();
    while n.store.find_api_key(&hash).await.unwrap().is_some() {
        assert!(began.elapsed() < Duration::from_secs(10), "never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The clear runs right after the commit, on the revocation's own task.
    let began = Instant::now();
    while n.coffer.authenticate(&key).await.is_ok() {
        assert!(
            began.elapsed() < AUTH_CACHE_TTL / 2,
            "the node that revoked still accepts the key"
        );
        tokio::task::yield_now().await;
    }
}
