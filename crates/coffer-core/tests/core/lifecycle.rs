//! Key lifecycle on the embedded store: rotation, rewrap, verify and unreadable values (marked
//! in the catalog, never found by a plain start), dev-mode migration, the removed-version
//! guard and the nonce budget.

use std::collections::BTreeMap;

use coffer_core::{
    CoreError, NONCE_BUDGET_WARNING, RewrapReport, StartupError, ValueStatus, commands,
};
use coffer_crypto::KeyVersion;
use coffer_store::{Replacement, StoredValue};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_then_rewrap_moves_every_value_to_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    for i in 0..2500 {
        put(&n.coffer, &format!("S{i}"), &format!("value {i}"))
            .await
            .unwrap();
    }
    drop(n);
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    let status = n.coffer.key_status(&admin()).await.unwrap();
    assert_eq!(status.current, Some(2));
    assert_eq!(
        status
            .versions
            .iter()
            .map(|v| (v.version, v.current, v.values))
            .collect::<Vec<_>>(),
        [(1, false, 2500), (2, true, 0)]
    );
    let report = rewrap(&n.coffer).await;
    assert_eq!(
        (report.rewrapped, report.already_current, report.unreadable),
        (2500, 0, 0)
    );
    assert_eq!(versions(&*n.store).await, [(2, 2500)]);
    assert_eq!(
        resolve(&n.coffer, "S1234").await.unwrap().as_deref(),
        Some("value 1234")
    );
    let meta = n
        .coffer
        .secret_meta(&admin(), &env(), &name("S7"))
        .await
        .unwrap();
    assert_eq!(
        meta.revision, 1,
        "a rewrap does not change what the value is"
    );
    let again = rewrap(&n.coffer).await;
    assert_eq!(
        (again.rewrapped, again.already_current),
        (0, 2500),
        "rewrap is idempotent"
    );
    drop(n);
    // Version 1 is unused now: it can leave the keyring.
    let n = start(dir.path(), ring(2, &[(2, K2)]), false).await.unwrap();
    assert_eq!(
        resolve(&n.coffer, "S0").await.unwrap().as_deref(),
        Some("value 0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_under_a_stream_of_writes_loses_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    for i in 0..3000 {
        put(&n.coffer, &format!("S{i}"), "v1").await.unwrap();
    }
    drop(n);
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    let writer = {
        let c = n.coffer.clone();
        tokio::spawn(async move {
            let mut last = BTreeMap::new();
            for round in 0..6 {
                for i in (0..3000).step_by(7) {
                    let value = format!("round {round} of S{i}");
                    put(&c, &format!("S{i}"), &value).await.unwrap();
                    last.insert(i, value);
                }
            }
            last
        })
    };
    let mut report = RewrapReport::default();
    let mut concurrent_rounds = 0;
    while !writer.is_finished() {
        report.absorb(rewrap(&n.coffer).await);
        concurrent_rounds += 1;
    }
    assert!(
        concurrent_rounds > 0,
        "the rewrap ran while writes streamed in"
    );
    let last = writer.await.unwrap();
    report.absorb(rewrap(&n.coffer).await);
    assert_eq!(report.unreadable, 0);
    assert_eq!(
        versions(&*n.store).await,
        [(2, 3000)],
        "every value on the current version"
    );
    for (i, value) in last {
        assert_eq!(
            resolve(&n.coffer, &format!("S{i}")).await.unwrap(),
            Some(value),
            "S{i} kept its last write"
        );
    }
    assert_eq!(
        resolve(&n.coffer, "S1").await.unwrap().as_deref(),
        Some("v1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrap_resumes_from_any_cursor_and_a_second_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    for i in 0..250 {
        put(&n.coffer, &format!("S{i:03}"), "v").await.unwrap();
    }
    drop(n);
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    let first = n
        .coffer
        .apply(
            &admin(),
            commands::Rewrap {
                after: None,
                limit: Some(100),
            },
        )
        .await
        .unwrap();
    assert_eq!(first.rewrapped, 100);
    assert!(first.next.is_some());
    drop(n); // as if the process died here
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    let rest = rewrap(&n.coffer).await;
    assert_eq!((rest.rewrapped, rest.already_current), (150, 100));
    assert_eq!(versions(&*n.store).await, [(2, 250)]);
}

/// Flips one bit of a stored blob's ciphertext part, as disk rot or a hand edit would.
async fn tamper(store: &dyn TestStore, n: &str) {
    let record = store
        .get(&incarnation(store).await, &name(n))
        .await
        .unwrap()
        .unwrap();
    let StoredValue::Sealed { key_version, blob } = record.value else {
        panic!("sealed")
    };
    let mut parts: Vec<String> = blob.split(':').map(str::to_owned).collect();
    let mut ct = parts[1].clone().into_bytes();
    ct[0] = if ct[0] == b'A' { b'B' } else { b'A' };
    parts[1] = String::from_utf8(ct).unwrap();
    let value = StoredValue::Sealed {
        key_version,
        blob: parts.join(":"),
    };
    let r = Replacement {
        environment: env(),
        environment_id: record.meta.environment_id.clone(),
        name: name(n),
        revision: record.meta.revision,
        previous: StoredValue::Sealed { key_version, blob },
        value,
    };
    assert_eq!(
        store
            .replace_values(vec![r], &coffer_store::Actor::System)
            .await
            .unwrap(),
        [true]
    );
}

/// Start-up no longer opens values: a tampered value goes unnoticed by a restart (only
/// the canaries and the per-version counts are read), and `coffer keys verify` finds it.
/// What the verify found is in the catalog, so a fresh start on the same data reports it
/// without walking; a write repairs it, and the count follows deletions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tampered_value_is_found_by_verify_not_by_start_up_and_breaks_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    for s in ["A", "B", "C"] {
        put(&n.coffer, s, &format!("value of {s}")).await.unwrap();
    }
    tamper(&*n.store, "B").await;
    drop(n);
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    assert_eq!(n.report.unreadable, 0, "start-up opens no value");
    assert_eq!(unreadable_count(&n.coffer).await, 0);
    assert_eq!(
        status_of(&n.coffer, "B").await,
        ValueStatus::Ok,
        "not known yet"
    );
    let found = verify(&n.coffer).await;
    assert_eq!(found.checked, 3);
    assert_eq!(
        found
            .unreadable
            .iter()
            .map(|u| (
                u.environment.to_string(),
                u.name.to_string(),
                u.revision,
                u.key_version
            ))
            .collect::<Vec<_>>(),
        [("default".into(), "B".into(), 1, 1)]
    );
    assert!(found.next.is_none());
    let page = n
        .coffer
        .list_secrets(&admin(), &env(), &Default::default(), 100)
        .await
        .unwrap();
    let statuses = n.coffer.value_statuses(&page.items).await.unwrap();
    let named: Vec<_> = page
        .items
        .iter()
        .map(|m| m.name.to_string())
        .zip(statuses)
        .collect();
    assert_eq!(
        named,
        [
            ("A".into(), ValueStatus::Ok),
            ("B".into(), ValueStatus::Unreadable),
            ("C".into(), ValueStatus::Ok)
        ]
    );
    assert_eq!(unreadable_count(&n.coffer).await, 1);
    drop(n);
    // Another node (here: the next start) reads the finding from the catalog.
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    assert_eq!(
        n.report.unreadable, 1,
        "known from the catalog, not from a walk"
    );
    assert_eq!(unreadable_count(&n.coffer).await, 1);
    assert_eq!(status_of(&n.coffer, "B").await, ValueStatus::Unreadable);
    assert!(matches!(
        resolve(&n.coffer, "B").await,
        Err(CoreError::Unreadable { .. })
    ));
    assert_eq!(
        resolve(&n.coffer, "C").await.unwrap().as_deref(),
        Some("value of C")
    );
    let report = rewrap(&n.coffer).await;
    assert_eq!(
        (report.unreadable, report.already_current),
        (1, 2),
        "rewrap reports it and goes on"
    );
    put(&n.coffer, "B", "repaired").await.unwrap();
    assert_eq!(
        status_of(&n.coffer, "B").await,
        ValueStatus::Ok,
        "writing it again repairs it"
    );
    assert_eq!(
        resolve(&n.coffer, "B").await.unwrap().as_deref(),
        Some("repaired")
    );
    assert_eq!(unreadable_count(&n.coffer).await, 0);
    tamper(&*n.store, "C").await;
    assert!(resolve(&n.coffer, "C").await.is_err());
    assert_eq!(
        unreadable_count(&n.coffer).await,
        1,
        "a failed resolve marks it"
    );
    let gone = commands::DeleteEnvironment { name: env() };
    n.coffer.apply(&admin(), gone).await.unwrap();
    assert_eq!(
        unreadable_count(&n.coffer).await,
        0,
        "the count follows deletions"
    );
}

/// A value marked unreadable that opens again (its key came back) loses its mark at the
/// next verify; verifying in batches resumes from the cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_clears_marks_of_values_that_open_again_and_pages_by_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    for i in 0..5 {
        put(&n.coffer, &format!("S{i}"), "v").await.unwrap();
    }
    drop(n);
    // Key 1 leaves the ring (allowed): every value is under a missing version.
    let n = start(dir.path(), ring(2, &[(2, K2)]), true).await.unwrap();
    assert_eq!(
        n.report.unreadable, 5,
        "derived from the counts, nothing opened"
    );
    let first = n
        .coffer
        .apply(
            &admin(),
            commands::Verify {
                after: None,
                limit: Some(2),
            },
        )
        .await
        .unwrap();
    assert_eq!((first.checked, first.unreadable.len()), (2, 2));
    let rest = n
        .coffer
        .apply(
            &admin(),
            commands::Verify {
                after: first.next.clone(),
                limit: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((rest.checked, rest.unreadable.len()), (3, 3));
    assert_eq!(
        unreadable_count(&n.coffer).await,
        5,
        "marked values under a missing version are counted once"
    );
    drop(n);
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    assert_eq!(
        unreadable_count(&n.coffer).await,
        5,
        "the marks stand until a walk finds the values open"
    );
    let found = verify(&n.coffer).await;
    assert_eq!((found.checked, found.unreadable.len()), (5, 0));
    assert_eq!(unreadable_count(&n.coffer).await, 0);
    assert_eq!(status_of(&n.coffer, "S3").await, ValueStatus::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_found_unreadable_at_runtime_is_marked() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "A", "x").await.unwrap();
    tamper(&*n.store, "A").await;
    assert_eq!(
        status_of(&n.coffer, "A").await,
        ValueStatus::Ok,
        "not known yet"
    );
    assert!(resolve(&n.coffer, "A").await.is_err());
    assert_eq!(status_of(&n.coffer, "A").await, ValueStatus::Unreadable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_values_are_encrypted_at_the_first_start_with_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, false).await.unwrap();
    for s in ["A", "B"] {
        put(&n.coffer, s, &format!("plain {s}")).await.unwrap();
    }
    assert_eq!(versions(&*n.store).await, [(0, 2)]);
    let found = verify(&n.coffer).await;
    assert_eq!(
        (found.checked, found.unreadable.len()),
        (2, 0),
        "dev mode verifies too"
    );
    drop(n);
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    assert_eq!(n.report.migrated_plaintext, 2);
    assert_eq!(versions(&*n.store).await, [(1, 2)]);
    // The migration is Coffer's own write: audited, with an event, as `system`.
    let query = coffer_store::AuditQuery {
        action: Some("keys.rewrapped".into()),
        ..coffer_store::AuditQuery::default()
    };
    let rows = n.store.audit(&query, 100).await.unwrap().0;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].actor, coffer_store::ActorRef::system());
    assert_eq!(rows[0].count, 2);
    assert!(rows[0].event.is_some(), "the batch published its event");
    assert_eq!(
        resolve(&n.coffer, "B").await.unwrap().as_deref(),
        Some("plain B")
    );
    drop(n);
    let again = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    assert_eq!(again.report.migrated_plaintext, 0);
    drop(again);
    assert!(matches!(
        start(dir.path(), None, false).await.err(),
        Some(StartupError::EncryptedValuesNeedKey {
            count: 2,
            signing_secrets: 0,
            params: 0
        })
    ));
}

/// The one start that walks every value, the one that encrypts what dev mode left, verifies
/// the sealed values on the way and records what does not open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_that_encrypts_plaintext_also_records_values_that_do_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "SEALED", "x").await.unwrap();
    tamper(&*n.store, "SEALED").await;
    // Plaintext as dev mode leaves it (a keyed server never writes it).
    let plain = StoredValue::Plain(secrecy::SecretString::from("left by dev mode"));
    n.store
        .put(
            &incarnation(&*n.store).await,
            &name("PLAIN"),
            plain,
            coffer_store::Precondition::None,
            coffer_store::Timestamp::now(),
            &coffer_store::Actor::System,
        )
        .await
        .unwrap();
    drop(n);
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    assert_eq!(n.report.migrated_plaintext, 1);
    assert_eq!(
        n.report.unreadable, 1,
        "the migration walk verified the rest"
    );
    assert_eq!(
        status_of(&n.coffer, "SEALED").await,
        ValueStatus::Unreadable
    );
    assert_eq!(
        resolve(&n.coffer, "PLAIN").await.unwrap().as_deref(),
        Some("left by dev mode")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_version_stops_start_up_unless_unreadable_values_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "OLD", "x").await.unwrap();
    drop(n);
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    put(&n.coffer, "NEW", "y").await.unwrap();
    drop(n);
    let err = start(dir.path(), ring(2, &[(2, K2)]), false)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            StartupError::MissingKeyVersion {
                version: 1,
                values: 1,
                signing_secrets: 0,
                params: 0
            }
        ),
        "{err}"
    );
    let n = start(dir.path(), ring(2, &[(2, K2)]), true).await.unwrap();
    assert_eq!(n.report.unreadable, 1, "from the per-version counts");
    assert_eq!(unreadable_count(&n.coffer).await, 1);
    assert_eq!(status_of(&n.coffer, "OLD").await, ValueStatus::Unreadable);
    assert_eq!(status_of(&n.coffer, "NEW").await, ValueStatus::Ok);
    let keys = n.coffer.key_status(&admin()).await.unwrap();
    let v1 = keys.versions.iter().find(|v| v.version == 1).unwrap();
    assert!(!v1.in_keyring && v1.values == 1);
    assert!(matches!(
        resolve(&n.coffer, "OLD").await,
        Err(CoreError::Unreadable { .. })
    ));
    assert_eq!(
        resolve(&n.coffer, "NEW").await.unwrap().as_deref(),
        Some("y")
    );
    put(&n.coffer, "OLD", "rewritten").await.unwrap();
    assert_eq!(
        unreadable_count(&n.coffer).await,
        0,
        "rewritten under key 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryptions_are_counted_and_warned_about_past_the_nonce_budget() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    for i in 0..5 {
        put(&n.coffer, &format!("S{i}"), "v").await.unwrap();
    }
    n.coffer.flush_counters().await.unwrap();
    let v1 = KeyVersion::new(1).unwrap();
    assert_eq!(
        n.store.encryption_counts().await.unwrap().get(&v1),
        Some(&5)
    );
    assert!(n.coffer.status().await.unwrap().warnings.is_empty());
    n.store
        .add_encryptions(v1, NONCE_BUDGET_WARNING)
        .await
        .unwrap();
    n.coffer.flush_counters().await.unwrap();
    let warnings = n.coffer.status().await.unwrap().warnings;
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("key version 1") && warnings[0].contains("rewrap"),
        "{warnings:?}"
    );
    let keys = n.coffer.key_status(&admin()).await.unwrap();
    assert_eq!(keys.versions[0].encryptions, NONCE_BUDGET_WARNING + 5);
}
