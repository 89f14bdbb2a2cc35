//! Config entries through the one mutation path: authorization, compare-and-set, limits,
//! and the records they leave.

use coffer_core::{
    ConfigKey, CoreError, EnvName, MAX_CONFIG_VALUE_BYTES, Principal, Role, commands,
};
use serde_json::json;

use crate::harness::*;

fn key(k: &str) -> ConfigKey {
    ConfigKey::new(k).unwrap()
}

fn put(k: &str, value: serde_json::Value, expected_revision: Option<u64>) -> commands::PutConfig {
    commands::PutConfig {
        env: env(),
        key: key(k),
        value,
        expected_revision,
    }
}

fn scoped(role: Role) -> Principal {
    Principal {
        key_id: coffer_core::ApiKeyId::new("ak_00000000000000ff").unwrap(),
        role,
        origin: Default::default(),
    }
}

#[tokio::test]
async fn config_mutations_publish_created_updated_and_deleted_events() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let who = admin();
    let before = n.store.last_event_id().await.unwrap();
    n.coffer
        .apply(&who, put("flags", json!({"a": 1}), Some(0)))
        .await
        .unwrap();
    n.coffer
        .apply(&who, put("flags", json!([true]), Some(1)))
        .await
        .unwrap();
    n.coffer
        .apply(
            &who,
            commands::DeleteConfig {
                env: env(),
                key: key("flags"),
                expected_revision: Some(2),
            },
        )
        .await
        .unwrap();
    let subjects: Vec<(String, Option<u64>)> = n
        .store
        .events_after(before, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.subject, e.revision))
        .collect();
    assert_eq!(
        subjects,
        [
            ("system.config.flags.created".to_owned(), Some(1)),
            ("system.config.flags.updated".to_owned(), Some(2)),
            ("system.config.flags.deleted".to_owned(), Some(2)),
        ]
    );
}

#[tokio::test]
async fn config_writes_check_revisions_size_and_scope() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let who = admin();
    let out = n
        .coffer
        .apply(&who, put("A", json!(1), None))
        .await
        .unwrap();
    assert!(out.created);
    let stale = n.coffer.apply(&who, put("A", json!(2), Some(0))).await;
    assert!(
        matches!(stale, Err(CoreError::RevisionConflict { current: 1 })),
        "{stale:?}"
    );
    // Exactly at the limit is accepted; one byte more is refused (a JSON string of n
    // characters serializes to n + 2 bytes).
    let at_limit = json!("x".repeat(MAX_CONFIG_VALUE_BYTES - 2));
    n.coffer
        .apply(&who, put("BIG", at_limit, None))
        .await
        .unwrap();
    let over = json!("x".repeat(MAX_CONFIG_VALUE_BYTES - 1));
    let refused = n.coffer.apply(&who, put("BIG", over, None)).await;
    assert!(
        matches!(refused, Err(CoreError::ValueTooLarge { .. })),
        "{refused:?}"
    );
    for role in [
        Role::Runtime(env()),
        Role::Manage(EnvName::new("elsewhere").unwrap()),
    ] {
        let who = scoped(role);
        let refused = n.coffer.apply(&who, put("A", json!(3), None)).await;
        assert!(matches!(refused, Err(CoreError::Forbidden)), "{refused:?}");
        let read = n.coffer.config_entry(&who, &env(), &key("A")).await;
        assert!(matches!(read, Err(CoreError::Forbidden)), "{read:?}");
        let list = n.coffer.list_config(&who, &env(), None, 10).await;
        assert!(matches!(list, Err(CoreError::Forbidden)), "{list:?}");
    }
    let entry = n
        .coffer
        .config_entry(&admin(), &env(), &key("A"))
        .await
        .unwrap();
    assert_eq!((entry.revision, entry.value.as_str()), (1, "1"));
    let missing = n.coffer.config_entry(&admin(), &env(), &key("NOPE")).await;
    assert!(
        matches!(missing, Err(CoreError::ConfigNotFound { .. })),
        "{missing:?}"
    );
    let no_env = EnvName::new("nowhere").unwrap();
    let missing = n.coffer.config_entry(&admin(), &no_env, &key("A")).await;
    assert!(
        matches!(missing, Err(CoreError::EnvironmentNotFound(_))),
        "{missing:?}"
    );
}
