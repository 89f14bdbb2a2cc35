//! Functions' signing secrets in the key lifecycle: counted by the start-up check and key
//! status, re-encrypted by a rewrap (resumable across the values and the functions), opened
//! by verify, encrypted by the dev-mode migration — checked by what a user sees: push
//! deliveries whose signature still verifies with the secret shown at registration.

use std::sync::{Arc, Mutex};

use coffer_core::{StartupError, WalkPosition, commands};
use coffer_store::{FunctionId, RunStatus};
use secrecy::ExposeSecret;

use crate::functions::{ended, endpoint, register_push};
use crate::harness::*;

/// Stored signing secrets per key version (`0` = plaintext).
async fn signing_versions(store: &dyn TestStore) -> Vec<(u32, u64)> {
    store
        .count_signing_by_key_version()
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Rotates `id`'s signing secret (the old one signs for an hour more); returns the new one.
async fn rotate(c: &coffer_core::Coffer, id: &str) -> String {
    let command = commands::RotateSigningSecret {
        env: env(),
        id: FunctionId::new(id).unwrap(),
        grace_ms: Some(3_600_000),
    };
    let out = c.apply(&admin(), command).await.unwrap();
    out.signing_secret.unwrap().expose_secret().to_owned()
}

/// Sends one event while the push dispatcher runs, waits for the run of `charge` to end,
/// and returns its status and whether the endpoint found the delivery's signature valid
/// with the secret it was given.
async fn deliver_once(
    n: &Node,
    received: &Arc<Mutex<crate::functions::Received>>,
) -> (RunStatus, bool) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = tokio::spawn(coffer_core::runtime::push::run(n.coffer.clone(), async {
        let _ = stopped.await;
    }));
    let command = commands::SendEvent {
        env: env(),
        event: coffer_wire::SendEvent {
            name: "order.created".into(),
            data: None,
        },
        idempotency_key: None,
    };
    let sent = n.coffer.apply(&admin(), command).await.unwrap();
    let (run, _) = sent
        .runs
        .iter()
        .find(|(_, f)| f.as_str() == "charge")
        .expect("a run of the push function");
    let run = ended(n, run).await;
    let _ = stop.send(());
    dispatcher.await.unwrap();
    let got = std::mem::take(&mut received.lock().unwrap().bodies);
    (
        run.status,
        got.iter().all(|(signed, _)| *signed) && !got.is_empty(),
    )
}

/// (values, signing secrets) per key version, as `coffer keys status` shows them.
async fn status_counts(c: &coffer_core::Coffer) -> Vec<(u32, bool, u64, u64)> {
    let status = c.key_status(&admin()).await.unwrap();
    status
        .versions
        .iter()
        .map(|v| (v.version, v.in_keyring, v.values, v.signing_secrets))
        .collect()
}

/// Key 1, then key 2 current with key 1 still present: key status counts the signing
/// secrets (a rotated function's previous one too) under key 1; a rewrap moves them to key
/// 2 after the values, without changing the functions; key 1 can then leave the keyring,
/// and deliveries are still signed with the very secrets shown at registration and
/// rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrap_moves_signing_secrets_to_the_current_key_and_deliveries_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    put(&n.coffer, "STRIPE_KEY", "sk-live-0123456789")
        .await
        .unwrap();
    let signing = Arc::new(Mutex::new(None));
    let (url, received) = endpoint(vec![], signing.clone()).await;
    let first = register_push(&n.coffer, "charge", &url, 0).await;
    let second = rotate(&n.coffer, "charge").await;
    register_pull(&n.coffer, "billing", &["STRIPE_KEY"], &[]).await;
    assert_eq!(signing_versions(&*n.store).await, [(1, 3)]);
    drop(n);

    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    assert_eq!(
        status_counts(&n.coffer).await,
        [(1, true, 1, 3), (2, true, 0, 0)],
        "the current and the previous secret of `charge`, the one of `billing`"
    );
    let before = n.store.last_event_id().await.unwrap();
    let report = rewrap(&n.coffer).await;
    assert_eq!((report.rewrapped, report.already_current), (1, 0));
    let signing_report = report.signing_secrets;
    assert_eq!(
        (
            signing_report.rewrapped,
            signing_report.already_current,
            signing_report.unreadable,
            signing_report.updated_concurrently
        ),
        (3, 0, 0, 0)
    );
    assert!(report.next.is_none());
    let events = n.store.events_after(before, 10).await.unwrap();
    let rewrapped: Vec<(&str, Option<u64>)> = events
        .iter()
        .map(|e| (e.subject.as_str(), e.count))
        .collect();
    assert_eq!(
        rewrapped,
        [
            ("system.keys.rewrapped", Some(1)),
            ("system.keys.rewrapped", Some(3))
        ],
        "the values' batch, then the signing secrets'"
    );
    assert_eq!(signing_versions(&*n.store).await, [(2, 3)]);
    assert_eq!(
        status_counts(&n.coffer).await,
        [(1, true, 0, 0), (2, true, 1, 3)]
    );
    let charge = n
        .store
        .get_function(&env(), &FunctionId::new("charge").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(charge.revision, 2, "a rewrap does not change the function");
    let again = rewrap(&n.coffer).await;
    assert_eq!(
        (
            again.signing_secrets.rewrapped,
            again.signing_secrets.already_current
        ),
        (0, 3),
        "idempotent"
    );
    let verified = verify(&n.coffer).await;
    assert_eq!((verified.checked, verified.signing_checked), (1, 3));
    assert!(verified.unreadable_signing.is_empty());
    drop(n);

    // Key 1 is unused now: it can leave the keyring, and deliveries still verify.
    let n = start(dir.path(), ring(2, &[(2, K2)]), false).await.unwrap();
    assert_eq!(n.report.unreadable_signing_secrets, 0);
    for secret in [second, first] {
        *signing.lock().unwrap() = Some(secret);
        let (status, signed) = deliver_once(&n, &received).await;
        assert_eq!(status, RunStatus::Succeeded);
        assert!(
            signed,
            "the signature verifies with the secret shown at registration and at rotation"
        );
    }
}

/// Removing a key version that only a signing secret uses, before the rewrap, is refused
/// with a message that counts it; `--allow-unreadable` starts, and status, verify and
/// rewrap report it. A wrong key for it is refused naming it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_signing_secrets_use_cannot_leave_before_the_rewrap() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    register_pull(&n.coffer, "billing", &[], &[]).await;
    drop(n);
    start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();

    let err = start(dir.path(), ring(2, &[(2, K2)]), false)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            StartupError::MissingKeyVersion {
                version: 1,
                values: 0,
                signing_secrets: 1,
                params: 0
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(
            "key version 1 is missing from the keyring but 1 function signing secret uses it"
        ),
        "{msg}"
    );
    let wrong = start(dir.path(), ring(2, &[(1, K2), (2, K2)]), false)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            wrong,
            StartupError::WrongKey {
                values: 0,
                signing_secrets: 1,
                ..
            }
        ),
        "{wrong}"
    );
    assert!(
        wrong
            .to_string()
            .contains("1 function signing secret uses that version"),
        "{wrong}"
    );

    let n = start(dir.path(), ring(2, &[(2, K2)]), true).await.unwrap();
    assert_eq!(n.report.unreadable_signing_secrets, 1);
    assert_eq!(
        status_counts(&n.coffer).await,
        [(1, false, 0, 1), (2, true, 0, 0)]
    );
    let found = verify(&n.coffer).await;
    assert_eq!(found.signing_checked, 1);
    assert_eq!(found.unreadable_signing.len(), 1);
    let u = &found.unreadable_signing[0];
    assert_eq!(
        (u.function.as_str(), u.revision, u.key_version, u.previous),
        ("billing", 1, 1, false)
    );
    let report = rewrap(&n.coffer).await;
    assert_eq!(
        (
            report.signing_secrets.unreadable,
            report.signing_secrets.rewrapped
        ),
        (1, 0),
        "reported and left as it is"
    );
    // Rotating the signing secret repairs the function.
    rotate(&n.coffer, "billing").await;
    let report = rewrap(&n.coffer).await;
    assert_eq!(
        (
            report.signing_secrets.unreadable,
            report.signing_secrets.already_current
        ),
        (1, 1),
        "the new secret opens; the replaced one is kept for its grace period"
    );
}

/// Dev mode stores a function's signing secret unencrypted; the first start with a key
/// encrypts it (and says so), deliveries are still signed with it, and dev mode is refused
/// afterwards, counting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_with_a_key_encrypts_dev_mode_signing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), None, false).await.unwrap();
    let signing = Arc::new(Mutex::new(None));
    let (url, received) = endpoint(vec![], signing.clone()).await;
    let secret = register_push(&n.coffer, "charge", &url, 0).await;
    *signing.lock().unwrap() = Some(secret);
    assert_eq!(signing_versions(&*n.store).await, [(0, 1)]);
    let status = n.coffer.key_status(&admin()).await.unwrap();
    assert_eq!(
        (status.plaintext_values, status.plaintext_signing_secrets),
        (0, 1)
    );
    drop(n);

    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    assert_eq!(
        (
            n.report.migrated_plaintext,
            n.report.migrated_signing_secrets
        ),
        (0, 1)
    );
    assert_eq!(signing_versions(&*n.store).await, [(1, 1)]);
    let (status, signed) = deliver_once(&n, &received).await;
    assert_eq!(status, RunStatus::Succeeded);
    assert!(signed, "signed with the secret shown at registration");
    drop(n);

    let refused = start(dir.path(), None, false).await.err();
    assert!(
        matches!(
            refused,
            Some(StartupError::EncryptedValuesNeedKey {
                count: 0,
                signing_secrets: 1,
                params: 0
            })
        ),
        "{refused:?}"
    );
}

/// A rewrap in small batches walks the values, then the functions, with a cursor that
/// says which; a walk resumed from a functions cursor (by a new process) finishes the
/// functions only, and a verify walks the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrap_pages_from_the_values_into_the_functions_and_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    for i in 0..3 {
        put(&n.coffer, &format!("S{i}"), "v").await.unwrap();
        register_pull(&n.coffer, &format!("f{i}"), &[], &[]).await;
    }
    drop(n);
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    let batch = |after: Option<WalkPosition>| commands::Rewrap {
        after,
        limit: Some(2),
    };
    let first = n.coffer.apply(&admin(), batch(None)).await.unwrap();
    assert_eq!((first.rewrapped, first.signing_secrets.rewrapped), (2, 0));
    assert_eq!(
        first.next,
        Some(WalkPosition::Value(env(), name("S1"))),
        "a full batch of values"
    );
    let second = n.coffer.apply(&admin(), batch(first.next)).await.unwrap();
    assert_eq!(
        (second.rewrapped, second.signing_secrets.rewrapped),
        (1, 1),
        "the last value, and the first function in the room left"
    );
    let f0 = FunctionId::new("f0").unwrap();
    assert_eq!(second.next, Some(WalkPosition::Function(env(), f0)));
    drop(n); // as if the process died here
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    let rest = n
        .coffer
        .apply(
            &admin(),
            commands::Rewrap {
                after: second.next,
                limit: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            rest.rewrapped,
            rest.already_current,
            rest.signing_secrets.rewrapped
        ),
        (0, 0, 2),
        "the functions left, and no value walked again"
    );
    assert!(rest.next.is_none());
    assert_eq!(versions(&*n.store).await, [(2, 3)]);
    assert_eq!(signing_versions(&*n.store).await, [(2, 3)]);

    let verify_batch = |after: Option<WalkPosition>| commands::Verify {
        after,
        limit: Some(4),
    };
    let first = n.coffer.apply(&admin(), verify_batch(None)).await.unwrap();
    assert_eq!((first.checked, first.signing_checked), (3, 1));
    let rest = n
        .coffer
        .apply(&admin(), verify_batch(first.next))
        .await
        .unwrap();
    assert_eq!((rest.checked, rest.signing_checked), (0, 2));
    assert!(rest.next.is_none());
}

/// Rotations stream in while rewraps run: a rewrap never writes an old secret back over a
/// rotation (each function's stored secret opens, under the associated data the service
/// seals it with, to the last secret its rotation showed), and a last rewrap leaves every
/// signing secret under the current key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrap_under_a_stream_of_rotations_loses_no_rotation() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path(), ring(1, &[(1, K1)]), false).await.unwrap();
    let ids: Vec<String> = (0..30).map(|i| format!("f{i:02}")).collect();
    for id in &ids {
        register_pull(&n.coffer, id, &[], &[]).await;
    }
    drop(n);
    let n = start(dir.path(), ring(2, &[(1, K1), (2, K2)]), false)
        .await
        .unwrap();
    let writer = {
        let (c, ids) = (n.coffer.clone(), ids.clone());
        tokio::spawn(async move {
            let mut last = BTreeMap::new();
            for _ in 0..4 {
                for id in ids.iter().step_by(3) {
                    last.insert(id.clone(), rotate(&c, id).await);
                }
            }
            last
        })
    };
    let mut rounds = 0;
    while !writer.is_finished() {
        rewrap(&n.coffer).await;
        rounds += 1;
    }
    assert!(rounds > 0, "the rewrap ran while rotations streamed in");
    let last = writer.await.unwrap();
    let report = rewrap(&n.coffer).await;
    assert_eq!(report.signing_secrets.unreadable, 0);
    let counts = signing_versions(&*n.store).await;
    assert_eq!(
        counts.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        [2],
        "every signing secret under the current key: {counts:?}"
    );
    let keys = ring(2, &[(2, K2)]).unwrap();
    let incarnation = incarnation(&*n.store).await;
    for (id, secret) in last {
        let f = n
            .store
            .get_function(&env(), &FunctionId::new(&id).unwrap())
            .await
            .unwrap()
            .unwrap();
        let coffer_store::StoredValue::Sealed { key_version, blob } = &f.signing else {
            panic!("{id} is sealed");
        };
        // The associated data `coffer_core::runtime::signing_aad` seals it with.
        let aad = format!("coffer:function-signing:{}:{id}", incarnation.id);
        let opened = keys.open(*key_version, blob, aad.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&opened).unwrap(),
            secret,
            "{id} kept its last rotation"
        );
        assert_eq!(f.revision, 5, "{id}: registered, then rotated four times");
    }
    let found = verify(&n.coffer).await;
    assert!(found.unreadable_signing.is_empty());
    assert_eq!(
        found.signing_checked,
        30 + 10,
        "ten rotated functions keep a previous one"
    );
}
