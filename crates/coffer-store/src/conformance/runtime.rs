//! Conformance cases of the runtime plane's stores: functions and runs.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{api_key, at, env, key_actor, sealed, test_env_id};
use crate::*;

/// Generates one test per function and run case. `$make` is an async expression yielding
/// `(Arc<impl Catalog>, impl Sized)`.
#[macro_export]
macro_rules! runtime_conformance {
    ($make:expr) => {
        $crate::runtime_conformance!(@cases $make;
            functions_are_registered_updated_listed_and_deleted,
            function_writes_check_preconditions_actor_and_incarnation,
            a_rotation_keeps_the_previous_signing_secret_until_its_grace_ends,
            signing_secrets_are_counted_per_key_version_and_walked_across_environments,
            signing_replacements_apply_only_at_the_read_revision_and_form,
            a_signing_replacement_never_lands_on_a_newer_function,
            functions_and_runs_go_with_their_environment,
            an_event_starts_its_runs_and_journals_them,
            a_send_may_insert_its_runs_leased,
            runs_are_listed_newest_first_filtered_and_paginated,
            a_page_of_runs_ends_at_its_bytes_and_leaves_out_what_started_them,
            an_idempotency_key_starts_runs_once_per_environment_and_window,
            racing_sends_with_one_idempotency_key_start_runs_once,
            a_lease_takes_due_runs_once_and_only_its_holder_finishes,
            an_expired_lease_passes_the_run_to_the_next_holder,
            a_retry_queues_the_run_again_from_its_backoff,
            racing_leases_hand_each_run_to_one_holder,
            a_claimed_run_is_leased_once_with_its_resolution,
            a_poll_reads_its_functions_due_runs_oldest_first_past_other_backlogs,
            racing_claims_hand_each_run_to_one_holder,
            resolutions_are_audited_with_names_and_recheck_the_actor,
            run_writes_recheck_the_actor_and_the_incarnation,
            ended_runs_are_pruned_oldest_first_and_audited);
    };
    (@cases $make:expr; $($case:ident),*) => {
        mod runtime_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _guard) = $make.await;
                    $crate::conformance::$case(store).await;
                }
            )*
        }
    };
}

pub(super) fn function_id(raw: &str) -> FunctionId {
    FunctionId::new(raw).expect("test function id is valid")
}

fn secret(raw: &str) -> SecretName {
    SecretName::new(raw).expect("test secret name is valid")
}

pub(super) async fn new_environment(store: &impl Catalog, name: &str, ms: i64) -> Environment {
    let e = Environment {
        name: env(name),
        id: test_env_id(),
        created_at: at(ms),
    };
    store.create_environment(&e, &Actor::System).await.unwrap();
    e
}

async fn register(store: &impl Catalog, e: &Environment, id: &str, signing: &str) {
    store
        .put_function(
            e,
            &function_id(id),
            format!(r#"{{"mode":"pull","id":"{id}"}}"#),
            sealed(1, signing),
            Precondition::None,
            at(10),
            &Actor::System,
        )
        .await
        .unwrap();
}

fn blob(value: &StoredValue) -> &str {
    match value {
        StoredValue::Sealed { blob, .. } => blob,
        StoredValue::Plain(_) => panic!("the test stores sealed values"),
    }
}

/// Subjects of every event after `after`.
pub(super) async fn subjects_after(store: &impl Catalog, after: u64) -> Vec<String> {
    store
        .events_after(after, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.subject)
        .collect()
}

/// Audit rows with `action`.
pub(super) async fn audit_rows(store: &impl Catalog, action: &str) -> Vec<AuditRecord> {
    let query = AuditQuery {
        action: Some(action.to_owned()),
        ..AuditQuery::default()
    };
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let q = AuditQuery {
            after,
            ..query.clone()
        };
        let (page, next) = store.audit(&q, 500).await.unwrap();
        rows.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => return rows,
        }
    }
}

fn send(name: &str, key: Option<&str>) -> EventSend {
    EventSend {
        name: name.to_owned(),
        data: r#"{"n":1}"#.to_owned(),
        idempotency_key: key.map(str::to_owned),
    }
}

fn new_run(function: &str, mode: RunMode, ms: i64) -> NewRun {
    NewRun {
        id: RunId::generate(at(ms)).unwrap(),
        function_id: function_id(function),
        mode,
        trigger_params: "{}".to_owned(),
        step: None,
        leased_until: None,
    }
}

async fn enqueue(store: &impl Catalog, e: &Environment, runs: Vec<NewRun>, ms: i64) -> Vec<RunId> {
    let done = store
        .enqueue(
            e,
            &send("order.created", None),
            runs,
            at(ms),
            &Actor::System,
        )
        .await
        .unwrap();
    assert!(!done.replayed);
    done.runs.into_iter().map(|(id, _)| id).collect()
}

pub(super) fn pull_query(e: &EnvName, limit: usize, until_ms: i64) -> LeaseQuery {
    LeaseQuery {
        environment: Some(e.clone()),
        functions: None,
        mode: RunMode::Pull,
        limit,
        lease_until: at(until_ms),
    }
}

/// A function is registered at revision 1 with its signing secret, updated at revision 2
/// keeping that secret, listed in id order with pagination, and deleted; each change is
/// journaled.
pub async fn functions_are_registered_updated_listed_and_deleted(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let head = store.last_event_id().await.unwrap();
    let first = store
        .put_function(
            &prod,
            &function_id("send-mail"),
            r#"{"v":1}"#.into(),
            sealed(1, "first"),
            Precondition::Absent,
            at(10),
            &Actor::System,
        )
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.record.revision, 1);
    assert_eq!(first.record.environment_id, prod.id);
    assert_eq!(first.record.created_at, at(10));
    let second = store
        .put_function(
            &prod,
            &function_id("send-mail"),
            r#"{"v":2}"#.into(),
            sealed(1, "second"),
            Precondition::Revision(1),
            at(20),
            &Actor::System,
        )
        .await
        .unwrap();
    assert!(!second.created);
    assert_eq!(second.record.revision, 2);
    assert_eq!(second.record.spec, r#"{"v":2}"#);
    assert_eq!(
        blob(&second.record.signing),
        "first",
        "an update keeps the secret"
    );
    assert_eq!(second.record.created_at, at(10));
    assert_eq!(second.record.updated_at, at(20));
    let got = store
        .get_function(&prod.name, &function_id("send-mail"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.spec, r#"{"v":2}"#);
    assert!(got.previous_signing.is_none());
    for id in ["b", "a", "c-1", "c_1"] {
        register(&*store, &prod, id, "s").await;
    }
    let page = store.list_functions(&prod.name, None, 3).await.unwrap();
    let ids: Vec<&str> = page.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c-1"], "id order, bytes");
    let rest = store
        .list_functions(&prod.name, Some(&function_id("c-1")), 10)
        .await
        .unwrap();
    let ids: Vec<&str> = rest.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["c_1", "send-mail"]);
    let stale = store
        .delete_function(
            &prod.name,
            &function_id("send-mail"),
            Precondition::Revision(1),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current: Some(2) })),
        "{stale:?}"
    );
    let gone = store
        .delete_function(
            &prod.name,
            &function_id("send-mail"),
            Precondition::Revision(2),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(gone.revision, 2);
    assert!(
        store
            .get_function(&prod.name, &function_id("send-mail"))
            .await
            .unwrap()
            .is_none()
    );
    let again = store
        .delete_function(
            &prod.name,
            &function_id("send-mail"),
            Precondition::None,
            &Actor::System,
        )
        .await;
    assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
    let subjects = subjects_after(&*store, head).await;
    assert_eq!(
        subjects.first().unwrap(),
        "system.function.send-mail.created"
    );
    assert_eq!(subjects[1], "system.function.send-mail.updated");
    assert_eq!(
        subjects.last().unwrap(),
        "system.function.send-mail.deleted"
    );
}

/// Function writes honour their precondition, re-check the acting key, and land only in
/// the incarnation they were made for.
pub async fn function_writes_check_preconditions_actor_and_incarnation(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    register(&*store, &prod, "f", "s").await;
    let conflict = store
        .put_function(
            &prod,
            &function_id("f"),
            "{}".into(),
            sealed(1, "x"),
            Precondition::Absent,
            at(11),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict { current: Some(1) })),
        "{conflict:?}"
    );
    let manage = api_key("ak_0b", Role::Manage(env("prod")), "hb");
    let admin = api_key("ak_0a", Role::Admin, "ha");
    store.insert_api_key(&admin, &Actor::System).await.unwrap();
    store.insert_api_key(&manage, &Actor::System).await.unwrap();
    store
        .delete_api_key(&manage.meta.id, &key_actor(&admin))
        .await
        .unwrap();
    let revoked = store
        .put_function(
            &prod,
            &function_id("g"),
            "{}".into(),
            sealed(1, "x"),
            Precondition::None,
            at(12),
            &key_actor(&manage),
        )
        .await;
    assert!(
        matches!(revoked, Err(StoreError::ActorRevoked)),
        "{revoked:?}"
    );
    assert!(
        store
            .get_function(&prod.name, &function_id("g"))
            .await
            .unwrap()
            .is_none()
    );
    store
        .delete_environment(&prod.name, &Actor::System)
        .await
        .unwrap();
    let successor = new_environment(&*store, "prod", 20).await;
    let stale = store
        .put_function(
            &prod,
            &function_id("h"),
            "{}".into(),
            sealed(1, "x"),
            Precondition::None,
            at(21),
            &Actor::System,
        )
        .await;
    assert!(matches!(stale, Err(StoreError::NotFound)), "{stale:?}");
    assert!(
        store
            .list_functions(&successor.name, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "a write for the old incarnation landed nothing in the new one"
    );
}

/// A rotation stores the new signing secret, keeps the old one until the grace period
/// ends (only the last one), bumps the revision and is journaled.
pub async fn a_rotation_keeps_the_previous_signing_secret_until_its_grace_ends(
    store: Arc<impl Catalog>,
) {
    let prod = new_environment(&*store, "prod", 1).await;
    register(&*store, &prod, "f", "one").await;
    let head = store.last_event_id().await.unwrap();
    let rotated = store
        .rotate_signing_secret(
            &prod,
            &function_id("f"),
            sealed(2, "two"),
            at(1_000),
            at(50),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(blob(&rotated.signing), "two");
    assert_eq!(rotated.signing.key_version_number(), 2);
    let (previous, until) = rotated.previous_signing.as_ref().unwrap();
    assert_eq!(blob(previous), "one");
    assert_eq!(*until, at(1_000));
    assert_eq!(rotated.revision, 2);
    assert_eq!(rotated.updated_at, at(50));
    let again = store
        .rotate_signing_secret(
            &prod,
            &function_id("f"),
            sealed(2, "three"),
            at(2_000),
            at(60),
            &Actor::System,
        )
        .await
        .unwrap();
    let got = store
        .get_function(&prod.name, &function_id("f"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blob(&got.signing), "three");
    let (previous, until) = got.previous_signing.as_ref().unwrap();
    assert_eq!((blob(previous), *until), ("two", at(2_000)));
    assert_eq!(again.revision, 3);
    let missing = store
        .rotate_signing_secret(
            &prod,
            &function_id("nope"),
            sealed(2, "x"),
            at(2_000),
            at(60),
            &Actor::System,
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    assert_eq!(
        subjects_after(&*store, head).await,
        ["system.function.f.rotated", "system.function.f.rotated"]
    );
}

fn plain(value: &str) -> StoredValue {
    StoredValue::Plain(secrecy::SecretString::from(value))
}

/// A replacement of `f`'s signing secrets as read at `revision`: the current one (`read`,
/// stored anew as `new` unless `None`) and the previous one (absent, or read and stored
/// anew).
fn reseal(
    e: &Environment,
    f: &str,
    revision: Revision,
    signing: (StoredValue, Option<StoredValue>),
    previous: Option<(StoredValue, Option<StoredValue>)>,
) -> SigningReplacement {
    SigningReplacement {
        environment: e.name.clone(),
        environment_id: e.id.clone(),
        id: function_id(f),
        revision,
        signing: Reseal {
            read: signing.0,
            new: signing.1,
        },
        previous_signing: previous.map(|(read, new)| Reseal { read, new }),
    }
}

/// Every function of every environment, walked in pages of `page`.
async fn walk_functions(store: &impl Catalog, page: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after: Option<(EnvName, FunctionId)> = None;
    loop {
        let batch = store.scan_functions(after.as_ref(), page).await.unwrap();
        assert!(batch.len() <= page);
        let Some(last) = batch.last() else {
            return seen;
        };
        after = Some((last.environment.clone(), last.id.clone()));
        seen.extend(batch.iter().map(|f| format!("{}/{}", f.environment, f.id)));
    }
}

/// Signing secrets are counted per key version, current and previous ones alike (`0`:
/// stored unencrypted), and walked across environments in (environment, id) order with
/// their environment, incarnation and stored forms.
pub async fn signing_secrets_are_counted_per_key_version_and_walked_across_environments(
    store: Arc<impl Catalog>,
) {
    assert!(
        store
            .count_signing_by_key_version()
            .await
            .unwrap()
            .is_empty()
    );
    assert!(walk_functions(&*store, 10).await.is_empty());
    let b = new_environment(&*store, "b", 1).await;
    let a = new_environment(&*store, "a", 1).await;
    let a2 = new_environment(&*store, "a-2", 1).await;
    register(&*store, &b, "f", "b-f-1").await;
    register(&*store, &a, "g", "a-g-1").await;
    register(&*store, &a, "f", "a-f-1").await;
    register(&*store, &a2, "a", "a2-a-1").await;
    store
        .rotate_signing_secret(
            &a,
            &function_id("g"),
            sealed(2, "a-g-2"),
            at(1_000),
            at(20),
            &Actor::System,
        )
        .await
        .unwrap();
    store
        .put_function(
            &b,
            &function_id("dev"),
            "{}".into(),
            plain("cs_plain"),
            Precondition::None,
            at(10),
            &Actor::System,
        )
        .await
        .unwrap();
    let counts = store.count_signing_by_key_version().await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [(0, 1), (1, 4), (2, 1)],
        "a rotated function counts its current and its previous secret"
    );
    assert_eq!(
        walk_functions(&*store, 2).await,
        ["a/f", "a/g", "a-2/a", "b/dev", "b/f"],
        "(environment, id) order, bytes"
    );
    let all = store.scan_functions(None, 10).await.unwrap();
    let g = all.iter().find(|f| f.id.as_str() == "g").unwrap();
    assert_eq!((&g.environment, &g.environment_id), (&a.name, &a.id));
    assert_eq!(blob(&g.signing), "a-g-2");
    let (previous, until) = g.previous_signing.as_ref().unwrap();
    assert_eq!((blob(previous), *until), ("a-g-1", at(1_000)));
    let dev = all.iter().find(|f| f.id.as_str() == "dev").unwrap();
    assert_eq!(dev.signing.key_version_number(), 0);
    let after_a = (env("a"), function_id("zzz"));
    let rest = store.scan_functions(Some(&after_a), 10).await.unwrap();
    assert_eq!(rest.first().map(|f| f.environment.as_str()), Some("a-2"));
    store
        .delete_environment(&a.name, &Actor::System)
        .await
        .unwrap();
    assert_eq!(walk_functions(&*store, 10).await, ["a-2/a", "b/dev", "b/f"]);
    assert_eq!(
        store
            .count_signing_by_key_version()
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [(0, 1), (1, 2)],
        "an environment's functions go with it"
    );
}

/// A signing replacement applies only while the function is exactly as it was read —
/// revision, current secret, previous secret or its absence — stores anew only the secrets
/// it gives a new form, and keeps revision, timestamps and the grace period. The applied
/// ones are one `keys.rewrapped` row and event counting the secrets stored anew; a batch
/// that applies nothing journals nothing; a revoked key replaces nothing.
pub async fn signing_replacements_apply_only_at_the_read_revision_and_form(
    store: Arc<impl Catalog>,
) {
    let e = new_environment(&*store, "prod", 1).await;
    for (id, blob) in [("f", "f-1"), ("g", "g-1"), ("h", "h-1"), ("k", "k-1")] {
        register(&*store, &e, id, blob).await;
    }
    store
        .rotate_signing_secret(
            &e,
            &function_id("g"),
            sealed(1, "g-2"),
            at(5_000),
            at(30),
            &Actor::System,
        )
        .await
        .unwrap();
    let head = store.last_event_id().await.unwrap();
    let batch = vec![
        // Both forms as read: the current one stored anew.
        reseal(&e, "f", 1, (sealed(1, "f-1"), Some(sealed(3, "f-3"))), None),
        // Only the previous one stored anew; the current one is pinned.
        reseal(
            &e,
            "g",
            2,
            (sealed(1, "g-2"), None),
            Some((sealed(1, "g-1"), Some(sealed(3, "g-1-3")))),
        ),
        // Read at another form.
        reseal(&e, "h", 1, (sealed(1, "h-x"), Some(sealed(3, "h-3"))), None),
        // Read with a previous secret it does not have.
        reseal(
            &e,
            "k",
            1,
            (sealed(1, "k-1"), Some(sealed(3, "k-3"))),
            Some((sealed(1, "k-0"), Some(sealed(3, "k-0-3")))),
        ),
        // Read at another revision.
        reseal(&e, "g", 1, (sealed(1, "g-2"), Some(sealed(3, "g-3"))), None),
        // Not there.
        reseal(&e, "nope", 1, (sealed(1, "n"), Some(sealed(3, "n"))), None),
    ];
    assert_eq!(
        store.replace_signing(batch, &Actor::System).await.unwrap(),
        [true, true, false, false, false, false]
    );
    let get = |id: &str| {
        let store = store.clone();
        let id = function_id(id);
        async move {
            store
                .get_function(&env("prod"), &id)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let f = get("f").await;
    assert_eq!(
        (blob(&f.signing), f.signing.key_version_number()),
        ("f-3", 3)
    );
    assert_eq!(
        (f.revision, f.updated_at, f.created_at),
        (1, at(10), at(10))
    );
    assert!(f.previous_signing.is_none());
    let g = get("g").await;
    assert_eq!(
        (blob(&g.signing), g.signing.key_version_number()),
        ("g-2", 1)
    );
    let (previous, until) = g.previous_signing.as_ref().unwrap();
    assert_eq!(
        (blob(previous), previous.key_version_number(), *until),
        ("g-1-3", 3, at(5_000))
    );
    assert_eq!((g.revision, g.updated_at), (2, at(30)));
    assert_eq!(blob(&get("h").await.signing), "h-1");
    let k = get("k").await;
    assert_eq!(blob(&k.signing), "k-1");
    assert!(k.previous_signing.is_none());
    assert_eq!(
        subjects_after(&*store, head).await,
        ["system.keys.rewrapped"]
    );
    let events = store.events_after(head, 10).await.unwrap();
    assert_eq!(events[0].count, Some(2), "two secrets stored anew");
    let rows = audit_rows(&*store, "keys.rewrapped").await;
    assert_eq!(rows.last().map(|r| r.count), Some(2));

    let head = store.last_event_id().await.unwrap();
    let stale = vec![reseal(
        &e,
        "f",
        1,
        (sealed(1, "f-1"), Some(sealed(4, "f-4"))),
        None,
    )];
    assert_eq!(
        store.replace_signing(stale, &Actor::System).await.unwrap(),
        [false]
    );
    assert!(
        store
            .replace_signing(Vec::new(), &Actor::System)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        subjects_after(&*store, head).await.is_empty(),
        "nothing applied, nothing journaled"
    );

    let admin = api_key("ak_0a", Role::Admin, "ha");
    let other = api_key("ak_0c", Role::Admin, "hc");
    store.insert_api_key(&admin, &Actor::System).await.unwrap();
    store.insert_api_key(&other, &Actor::System).await.unwrap();
    store
        .delete_api_key(&admin.meta.id, &key_actor(&other))
        .await
        .unwrap();
    let by_revoked = vec![reseal(
        &e,
        "h",
        1,
        (sealed(1, "h-1"), Some(sealed(3, "h-3"))),
        None,
    )];
    let refused = store.replace_signing(by_revoked, &key_actor(&admin)).await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    assert_eq!(blob(&get("h").await.signing), "h-1");
    let by_key = vec![reseal(
        &e,
        "h",
        1,
        (sealed(1, "h-1"), Some(sealed(3, "h-3"))),
        None,
    )];
    assert_eq!(
        store
            .replace_signing(by_key, &key_actor(&other))
            .await
            .unwrap(),
        [true]
    );
    let rows = audit_rows(&*store, "keys.rewrapped").await;
    assert_eq!(
        rows.last().and_then(|r| r.actor.key_id.as_deref()),
        Some("ak_0c"),
        "audited with the key that ran it"
    );
}

/// A replacement read before a function was rotated, deleted and registered again, or
/// before its environment was deleted and created again, never writes an old form back:
/// the revision, the stored form (its random nonce) and the incarnation pin the row.
pub async fn a_signing_replacement_never_lands_on_a_newer_function(store: Arc<impl Catalog>) {
    let first = new_environment(&*store, "prod", 1).await;
    register(&*store, &first, "f", "same").await;
    register(&*store, &first, "g", "g-1").await;
    // Rotated since the read: another revision.
    store
        .rotate_signing_secret(
            &first,
            &function_id("g"),
            sealed(1, "g-2"),
            at(1_000),
            at(20),
            &Actor::System,
        )
        .await
        .unwrap();
    let rotated = vec![reseal(
        &first,
        "g",
        1,
        (sealed(1, "g-1"), Some(sealed(3, "g-3"))),
        None,
    )];
    assert_eq!(
        store
            .replace_signing(rotated, &Actor::System)
            .await
            .unwrap(),
        [false]
    );
    // Deleted and registered again: revision 1 again, another blob.
    store
        .delete_function(
            &first.name,
            &function_id("g"),
            Precondition::None,
            &Actor::System,
        )
        .await
        .unwrap();
    register(&*store, &first, "g", "g-new").await;
    let again = vec![reseal(
        &first,
        "g",
        1,
        (sealed(1, "g-1"), Some(sealed(3, "g-3"))),
        None,
    )];
    assert_eq!(
        store.replace_signing(again, &Actor::System).await.unwrap(),
        [false]
    );
    assert_eq!(
        blob(
            &store
                .get_function(&first.name, &function_id("g"))
                .await
                .unwrap()
                .unwrap()
                .signing
        ),
        "g-new"
    );
    // The environment deleted and created again, the function registered with the very
    // same stored form: the old incarnation's replacement lands nowhere.
    store
        .delete_environment(&first.name, &Actor::System)
        .await
        .unwrap();
    let second = new_environment(&*store, "prod", 30).await;
    register(&*store, &second, "f", "same").await;
    let old = vec![reseal(
        &first,
        "f",
        1,
        (sealed(1, "same"), Some(sealed(3, "old"))),
        None,
    )];
    assert_eq!(
        store.replace_signing(old, &Actor::System).await.unwrap(),
        [false]
    );
    let f = store
        .get_function(&second.name, &function_id("f"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((blob(&f.signing), &f.environment_id), ("same", &second.id));
}

/// Deleting an environment deletes its functions and runs with it; a new environment of
/// the same name starts with none.
pub async fn functions_and_runs_go_with_their_environment(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let staging = new_environment(&*store, "staging", 1).await;
    register(&*store, &prod, "f", "s").await;
    register(&*store, &staging, "f", "s").await;
    let ids = enqueue(&*store, &prod, vec![new_run("f", RunMode::Pull, 20)], 20).await;
    let kept = enqueue(&*store, &staging, vec![new_run("f", RunMode::Pull, 20)], 20).await;
    store
        .delete_environment(&prod.name, &Actor::System)
        .await
        .unwrap();
    new_environment(&*store, "prod", 30).await;
    assert!(
        store
            .get_function(&prod.name, &function_id("f"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_run(&prod.name, &ids[0]).await.unwrap().is_none());
    let leased = store
        .lease(&pull_query(&prod.name, 10, 100), at(40), &Actor::System)
        .await
        .unwrap();
    assert!(leased.is_empty(), "a deleted environment's run was leased");
    assert!(
        store
            .get_run(&staging.name, &kept[0])
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get_run(&staging.name, &ids[0])
            .await
            .unwrap()
            .is_none(),
        "a run is found only in its own environment"
    );
}

/// An event starts its runs queued, with the event's name and data, journals one
/// `system.run.{id}.queued` event per run and one `event.received` audit row.
pub async fn an_event_starts_its_runs_and_journals_them(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let head = store.last_event_id().await.unwrap();
    let runs = vec![
        new_run("a", RunMode::Push, 20),
        new_run("b", RunMode::Pull, 20),
    ];
    let wanted: Vec<RunId> = runs.iter().map(|r| r.id.clone()).collect();
    let done = store
        .enqueue(
            &prod,
            &send("order.created", None),
            runs,
            at(20),
            &Actor::System,
        )
        .await
        .unwrap();
    assert!(!done.replayed);
    assert_eq!(
        done.runs,
        vec![
            (wanted[0].clone(), function_id("a")),
            (wanted[1].clone(), function_id("b"))
        ]
    );
    let run = store
        .get_run(&prod.name, &wanted[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.attempts, 0);
    assert_eq!(run.mode, RunMode::Push);
    assert_eq!(run.event_name, "order.created");
    assert_eq!(run.event_data, r#"{"n":1}"#);
    assert_eq!(run.trigger_params, "{}");
    assert_eq!(run.environment_id, prod.id);
    assert_eq!((run.created_at, run.updated_at), (at(20), at(20)));
    assert_eq!(run.next_attempt_at, at(20));
    assert_eq!(
        (run.output, run.error, run.lease_expires_at),
        (None, None, None)
    );
    let subjects = subjects_after(&*store, head).await;
    assert_eq!(
        subjects,
        [
            format!("system.run.{}.queued", wanted[0]),
            format!("system.run.{}.queued", wanted[1])
        ]
    );
    let received = audit_rows(&*store, "event.received").await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].name.as_deref(), Some("order.created"));
    assert_eq!(received[0].count, 2);
    assert_eq!(received[0].event, None, "audit only");
    // An event no function takes is still on the record.
    store
        .enqueue(
            &prod,
            &send("nobody.listens", None),
            vec![],
            at(21),
            &Actor::System,
        )
        .await
        .unwrap();
    let received = audit_rows(&*store, "event.received").await;
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].count, 0);
}

/// A send may insert runs already leased ([`NewRun::leased_until`]): running at attempt
/// 1 until then, returned whole in [`Enqueued::leased`], journaled queued by the sender
/// and then running by `system` (as a lease is); not due to any lease before it expires,
/// finished by its attempt, and due again once it expires, as any leased run.
pub async fn a_send_may_insert_its_runs_leased(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let admin = api_key("ak_0a", Role::Admin, "ha");
    store.insert_api_key(&admin, &Actor::System).await.unwrap();
    let head = store.last_event_id().await.unwrap();
    let mut runs = vec![
        new_run("a", RunMode::Push, 20),
        new_run("b", RunMode::Push, 20),
        new_run("c", RunMode::Push, 20),
    ];
    runs[0].leased_until = Some(at(500));
    runs[2].leased_until = Some(at(500));
    let ids: Vec<RunId> = runs.iter().map(|r| r.id.clone()).collect();
    let done = store
        .enqueue(
            &prod,
            &send("order.created", None),
            runs,
            at(20),
            &key_actor(&admin),
        )
        .await
        .unwrap();
    assert!(!done.replayed);
    assert_eq!(done.runs.len(), 3);
    let leased: Vec<&RunId> = done.leased.iter().map(|r| &r.id).collect();
    assert_eq!(leased, [&ids[0], &ids[2]]);
    for run in &done.leased {
        let stored = store.get_run(&prod.name, &run.id).await.unwrap().unwrap();
        assert_eq!(&stored, run, "returned as stored");
        assert_eq!(stored.status, RunStatus::Running);
        assert_eq!(stored.attempts, 1);
        assert_eq!(stored.lease_expires_at, Some(at(500)));
        assert_eq!((stored.created_at, stored.updated_at), (at(20), at(20)));
        assert_eq!(stored.event_data, r#"{"n":1}"#);
    }
    let queued = store.get_run(&prod.name, &ids[1]).await.unwrap().unwrap();
    assert_eq!((queued.status, queued.attempts), (RunStatus::Queued, 0));
    assert_eq!(queued.lease_expires_at, None);
    assert_eq!(
        subjects_after(&*store, head).await,
        [
            format!("system.run.{}.queued", ids[0]),
            format!("system.run.{}.queued", ids[1]),
            format!("system.run.{}.queued", ids[2]),
            format!("system.run.{}.running", ids[0]),
            format!("system.run.{}.running", ids[2]),
        ]
    );
    let queued_rows = audit_rows(&*store, "run.queued").await;
    assert!(
        queued_rows
            .iter()
            .all(|r| r.actor.key_id.as_deref() == Some("ak_0a") && r.revision == Some(0)),
        "{queued_rows:?}"
    );
    let running = audit_rows(&*store, "run.running").await;
    assert_eq!(running.len(), 2);
    assert!(
        running
            .iter()
            .all(|r| r.actor.key_id.as_deref() == Some("system") && r.revision == Some(1)),
        "{running:?}"
    );
    let push = |until: i64| LeaseQuery {
        environment: None,
        functions: None,
        mode: RunMode::Push,
        limit: 10,
        lease_until: at(until),
    };
    let taken = store
        .lease(&push(900), at(100), &Actor::System)
        .await
        .unwrap();
    let taken: Vec<&RunId> = taken.iter().map(|r| &r.id).collect();
    assert_eq!(taken, [&ids[1]], "a run leased at its send is not due");
    store
        .finish(
            &prod.name,
            &ids[0],
            Some(1),
            RunOutcome::Succeeded { output: "1".into() },
            at(200),
            &Actor::System,
        )
        .await
        .unwrap();
    let again = store
        .lease(&push(2_000), at(500), &Actor::System)
        .await
        .unwrap();
    assert_eq!(
        again.len(),
        1,
        "due again once its lease expired: {again:?}"
    );
    assert_eq!((&again[0].id, again[0].attempts), (&ids[2], 2));
}

/// A listing reads no more rows than its bytes allow: it stops after the row whose output
/// or error brings the page to `bytes`. It shows no run's event data or parameters, so it
/// reads none (a single read has them).
pub async fn a_page_of_runs_ends_at_its_bytes_and_leaves_out_what_started_them(
    store: Arc<impl Catalog>,
) {
    let prod = new_environment(&*store, "prod", 1).await;
    let big = EventSend {
        name: "order.created".to_owned(),
        data: format!(r#"{{"pad":"{}"}}"#, "d".repeat(50_000)),
        idempotency_key: None,
    };
    let mut ids = Vec::new();
    for ms in 0..5 {
        let mut run = new_run("f", RunMode::Pull, 100 + ms);
        run.trigger_params = format!(r#"{{"p":"{}"}}"#, "t".repeat(20_000));
        let done = store
            .enqueue(&prod, &big, vec![run], at(100 + ms), &Actor::System)
            .await
            .unwrap();
        ids.extend(done.runs.into_iter().map(|(id, _)| id));
    }
    let leased = store
        .lease(&pull_query(&prod.name, 5, 10_000), at(200), &Actor::System)
        .await
        .unwrap();
    assert_eq!(leased.len(), 5);
    // Outputs of 1,000, 3,000, 1,000 and 1,000 bytes (newest first), and an error of 10.
    let outcomes = [
        RunOutcome::Failed {
            error: "e".repeat(10),
        },
        RunOutcome::Succeeded {
            output: format!(r#""{}""#, "o".repeat(998)),
        },
        RunOutcome::Succeeded {
            output: format!(r#""{}""#, "o".repeat(998)),
        },
        RunOutcome::Succeeded {
            output: format!(r#""{}""#, "o".repeat(2_998)),
        },
        RunOutcome::Succeeded {
            output: format!(r#""{}""#, "o".repeat(998)),
        },
    ];
    for (id, outcome) in ids.iter().zip(outcomes) {
        store
            .finish(&prod.name, id, Some(1), outcome, at(300), &Actor::System)
            .await
            .unwrap();
    }
    let newest_first: Vec<RunId> = ids.iter().rev().cloned().collect();
    let listed = |size: PageSize| {
        let store = store.clone();
        let env = prod.name.clone();
        async move {
            store
                .list_runs(&env, &RunFilter::default(), None, size)
                .await
                .unwrap()
        }
    };
    // 1,000 + 3,000 (+ the event's name, 13 bytes each) reach 4,000: the page ends there.
    let page = listed(PageSize {
        rows: 10,
        bytes: 4_000,
    })
    .await;
    let got: Vec<RunId> = page.iter().map(|r| r.id.clone()).collect();
    assert_eq!(got, newest_first[..2]);
    assert!(
        page.iter()
            .all(|r| r.event_data.is_empty() && r.trigger_params.is_empty()),
        "a listing reads no event data or parameters"
    );
    assert_eq!(
        page.iter().map(RunRecord::weight).collect::<Vec<_>>(),
        [1_013, 3_013]
    );
    // Rows still end a page first; and a budget never ends one before its first row.
    let two = listed(PageSize {
        rows: 2,
        bytes: 1 << 20,
    })
    .await;
    assert_eq!(two.len(), 2);
    let one = listed(PageSize { rows: 10, bytes: 1 }).await;
    assert_eq!(one.len(), 1);
    let all = listed(PageSize::rows(10)).await;
    assert_eq!(all.len(), 5);
    // A single read still has what started the run.
    let run = store.get_run(&prod.name, &ids[0]).await.unwrap().unwrap();
    assert_eq!(run.event_data, big.data);
    assert!(run.trigger_params.starts_with(r#"{"p":"ttt"#));
}

/// Runs are listed newest first, filtered by function and status, in pages.
pub async fn runs_are_listed_newest_first_filtered_and_paginated(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let mut all = Vec::new();
    for ms in 0..6 {
        let f = if ms % 2 == 0 { "even" } else { "odd" };
        all.extend(
            enqueue(
                &*store,
                &prod,
                vec![new_run(f, RunMode::Pull, 100 + ms)],
                100 + ms,
            )
            .await,
        );
    }
    let newest_first: Vec<RunId> = all.iter().rev().cloned().collect();
    let page = store
        .list_runs(&prod.name, &RunFilter::default(), None, PageSize::rows(4))
        .await
        .unwrap();
    let ids: Vec<RunId> = page.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, newest_first[..4]);
    let rest = store
        .list_runs(
            &prod.name,
            &RunFilter::default(),
            Some(&ids[3]),
            PageSize::rows(4),
        )
        .await
        .unwrap();
    let ids: Vec<RunId> = rest.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, newest_first[4..]);
    let odd = store
        .list_runs(
            &prod.name,
            &RunFilter {
                function: Some(function_id("odd")),
                status: None,
            },
            None,
            PageSize::rows(10),
        )
        .await
        .unwrap();
    assert_eq!(odd.len(), 3);
    assert!(odd.iter().all(|r| r.function_id.as_str() == "odd"));
    store
        .lease(&pull_query(&prod.name, 2, 10_000), at(200), &Actor::System)
        .await
        .unwrap();
    let running = store
        .list_runs(
            &prod.name,
            &RunFilter {
                function: None,
                status: Some(RunStatus::Running),
            },
            None,
            PageSize::rows(10),
        )
        .await
        .unwrap();
    let ids: Vec<RunId> = running.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        ids,
        [all[1].clone(), all[0].clone()],
        "oldest due were leased"
    );
}

/// A send with an idempotency key seen in the same environment within the window writes
/// nothing and returns the first send's runs; other environments and older keys do not
/// count.
pub async fn an_idempotency_key_starts_runs_once_per_environment_and_window(
    store: Arc<impl Catalog>,
) {
    let prod = new_environment(&*store, "prod", 1).await;
    let staging = new_environment(&*store, "staging", 1).await;
    let key = Some("order-42");
    let first = store
        .enqueue(
            &prod,
            &send("order.created", key),
            vec![
                new_run("a", RunMode::Pull, 10),
                new_run("b", RunMode::Pull, 10),
            ],
            at(10),
            &Actor::System,
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    let head = store.last_event_id().await.unwrap();
    let again = store
        .enqueue(
            &prod,
            &send("order.created", key),
            vec![new_run("a", RunMode::Pull, 11)],
            at(11),
            &Actor::System,
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        again.runs.iter().collect::<BTreeSet<_>>(),
        first.runs.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        store.last_event_id().await.unwrap(),
        head,
        "nothing written"
    );
    let listed = store
        .list_runs(&prod.name, &RunFilter::default(), None, PageSize::rows(10))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    let elsewhere = store
        .enqueue(
            &staging,
            &send("order.created", key),
            vec![new_run("a", RunMode::Pull, 12)],
            at(12),
            &Actor::System,
        )
        .await
        .unwrap();
    assert!(!elsewhere.replayed, "keys are per environment");
    let later = at(10 + IDEMPOTENCY_WINDOW_MS + 1);
    let expired = store
        .enqueue(
            &prod,
            &send("order.created", key),
            vec![new_run("a", RunMode::Pull, later.millis())],
            later,
            &Actor::System,
        )
        .await
        .unwrap();
    assert!(!expired.replayed, "a key is remembered for the window only");
    assert_eq!(expired.runs.len(), 1);
}

/// Sends with one key racing on many connections start the runs once; every sender gets
/// the same runs back.
pub async fn racing_sends_with_one_idempotency_key_start_runs_once(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    for round in 0..20 {
        let key = format!("race-{round}");
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (store, prod, key) = (store.clone(), prod.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .enqueue(
                        &prod,
                        &send("order.created", Some(&key)),
                        vec![new_run("a", RunMode::Pull, 10)],
                        at(10),
                        &Actor::System,
                    )
                    .await
                    .unwrap()
            }));
        }
        let mut started = 0;
        let mut seen = BTreeSet::new();
        for t in tasks {
            let done = t.await.unwrap();
            if !done.replayed {
                started += 1;
            }
            assert_eq!(done.runs.len(), 1);
            seen.insert(done.runs[0].0.clone());
        }
        assert_eq!(started, 1, "round {round}: one send started the run");
        assert_eq!(
            seen.len(),
            1,
            "round {round}: every sender got the same run"
        );
    }
    let listed = store
        .list_runs(&prod.name, &RunFilter::default(), None, PageSize::rows(100))
        .await
        .unwrap();
    assert_eq!(listed.len(), 20);
}

/// A lease takes due runs oldest first, each once, matching its environment, functions
/// and mode; only the attempt that holds the lease can extend or finish it.
pub async fn a_lease_takes_due_runs_once_and_only_its_holder_finishes(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let staging = new_environment(&*store, "staging", 1).await;
    let ids = enqueue(
        &*store,
        &prod,
        vec![
            new_run("a", RunMode::Pull, 10),
            new_run("b", RunMode::Pull, 11),
            new_run("a", RunMode::Push, 12),
        ],
        10,
    )
    .await;
    enqueue(&*store, &staging, vec![new_run("a", RunMode::Pull, 13)], 13).await;
    let only_b = LeaseQuery {
        functions: Some(vec![function_id("b")]),
        ..pull_query(&prod.name, 10, 1_000)
    };
    let head = store.last_event_id().await.unwrap();
    let leased = store.lease(&only_b, at(100), &Actor::System).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, ids[1]);
    assert_eq!(leased[0].status, RunStatus::Running);
    assert_eq!(leased[0].attempts, 1);
    assert_eq!(leased[0].lease_expires_at, Some(at(1_000)));
    assert_eq!(leased[0].updated_at, at(100));
    assert_eq!(
        subjects_after(&*store, head).await,
        [format!("system.run.{}.running", ids[1])]
    );
    let rest = store
        .lease(&pull_query(&prod.name, 10, 1_000), at(100), &Actor::System)
        .await
        .unwrap();
    let rest: Vec<RunId> = rest.into_iter().map(|r| r.id).collect();
    assert_eq!(rest, [ids[0].clone()], "pull only, this environment only");
    let none = store
        .lease(&pull_query(&prod.name, 10, 1_000), at(100), &Actor::System)
        .await
        .unwrap();
    assert!(none.is_empty(), "a leased run is not leased again");
    let push = LeaseQuery {
        environment: None,
        functions: None,
        mode: RunMode::Push,
        limit: 10,
        lease_until: at(1_000),
    };
    let pushed = store.lease(&push, at(100), &Actor::System).await.unwrap();
    let pushed: Vec<RunId> = pushed.into_iter().map(|r| r.id).collect();
    assert_eq!(pushed, [ids[2].clone()]);

    let wrong = store
        .finish(
            &prod.name,
            &ids[1],
            Some(2),
            RunOutcome::Succeeded { output: "1".into() },
            at(200),
            &Actor::System,
        )
        .await;
    assert!(matches!(wrong, Err(StoreError::LeaseLost)), "{wrong:?}");
    store
        .extend_lease(&prod.name, &ids[1], 1, at(5_000), at(200))
        .await
        .unwrap();
    let lost = store
        .extend_lease(&prod.name, &ids[1], 2, at(5_000), at(200))
        .await;
    assert!(matches!(lost, Err(StoreError::LeaseLost)), "{lost:?}");
    let head = store.last_event_id().await.unwrap();
    let done = store
        .finish(
            &prod.name,
            &ids[1],
            Some(1),
            RunOutcome::Succeeded {
                output: r#"{"ok":true}"#.into(),
            },
            at(3_000),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.output.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!(done.updated_at, at(3_000));
    assert_eq!(done.lease_expires_at, None);
    assert_eq!(
        subjects_after(&*store, head).await,
        [format!("system.run.{}.succeeded", ids[1])]
    );
    let twice = store
        .finish(
            &prod.name,
            &ids[1],
            None,
            RunOutcome::Failed { error: "x".into() },
            at(3_001),
            &Actor::System,
        )
        .await;
    assert!(matches!(twice, Err(StoreError::LeaseLost)), "{twice:?}");
    let failed = store
        .finish(
            &prod.name,
            &ids[0],
            None,
            RunOutcome::Failed {
                error: "boom".into(),
            },
            at(300),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("boom"));
    let unknown = RunId::generate(at(1)).unwrap();
    let missing = store
        .finish(
            &prod.name,
            &unknown,
            None,
            RunOutcome::Failed { error: "x".into() },
            at(300),
            &Actor::System,
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    let elsewhere = store
        .finish(
            &staging.name,
            &ids[2],
            None,
            RunOutcome::Failed { error: "x".into() },
            at(300),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(elsewhere, Err(StoreError::NotFound)),
        "a run is finished only in its own environment: {elsewhere:?}"
    );
}

/// A run whose lease expired is leased again as the next attempt; the expired holder can
/// neither extend nor finish it.
pub async fn an_expired_lease_passes_the_run_to_the_next_holder(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let ids = enqueue(&*store, &prod, vec![new_run("a", RunMode::Pull, 10)], 10).await;
    let first = store
        .lease(&pull_query(&prod.name, 1, 500), at(100), &Actor::System)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let early = store
        .lease(&pull_query(&prod.name, 1, 900), at(499), &Actor::System)
        .await
        .unwrap();
    assert!(early.is_empty(), "the lease holds until it expires");
    let expired = store
        .finish(
            &prod.name,
            &ids[0],
            Some(1),
            RunOutcome::Succeeded { output: "1".into() },
            at(500),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(expired, Err(StoreError::LeaseLost)),
        "a lease ends at its expiry: {expired:?}"
    );
    let second = store
        .lease(&pull_query(&prod.name, 1, 900), at(500), &Actor::System)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);
    let old = store
        .extend_lease(&prod.name, &ids[0], 1, at(2_000), at(600))
        .await;
    assert!(matches!(old, Err(StoreError::LeaseLost)), "{old:?}");
    let old = store
        .finish(
            &prod.name,
            &ids[0],
            Some(1),
            RunOutcome::Succeeded { output: "1".into() },
            at(600),
            &Actor::System,
        )
        .await;
    assert!(matches!(old, Err(StoreError::LeaseLost)), "{old:?}");
    store
        .finish(
            &prod.name,
            &ids[0],
            Some(2),
            RunOutcome::Succeeded { output: "2".into() },
            at(600),
            &Actor::System,
        )
        .await
        .unwrap();
}

/// A retry queues the run again with its error; it is leased again only once its backoff
/// has passed, as the next attempt.
pub async fn a_retry_queues_the_run_again_from_its_backoff(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let ids = enqueue(&*store, &prod, vec![new_run("a", RunMode::Pull, 10)], 10).await;
    store
        .lease(&pull_query(&prod.name, 1, 500), at(100), &Actor::System)
        .await
        .unwrap();
    let head = store.last_event_id().await.unwrap();
    let queued = store
        .finish(
            &prod.name,
            &ids[0],
            Some(1),
            RunOutcome::Retry {
                error: "503 from the function".into(),
                not_before: at(1_000),
            },
            at(200),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(queued.status, RunStatus::Queued);
    assert_eq!(queued.attempts, 1);
    assert_eq!(queued.error.as_deref(), Some("503 from the function"));
    assert_eq!(queued.next_attempt_at, at(1_000));
    assert_eq!(queued.lease_expires_at, None);
    assert_eq!(
        subjects_after(&*store, head).await,
        [format!("system.run.{}.queued", ids[0])]
    );
    let early = store
        .lease(&pull_query(&prod.name, 1, 5_000), at(999), &Actor::System)
        .await
        .unwrap();
    assert!(early.is_empty(), "not before its backoff");
    let again = store
        .lease(&pull_query(&prod.name, 1, 5_000), at(1_000), &Actor::System)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
}

/// 200 pull runs of one function in `prod`, due from 10 ms to 19 ms.
async fn two_hundred_runs(store: &impl Catalog) -> (Environment, BTreeSet<RunId>) {
    let prod = new_environment(store, "prod", 1).await;
    let mut wanted = BTreeSet::new();
    for chunk in 0..10 {
        let runs: Vec<NewRun> = (0..20)
            .map(|_| new_run("a", RunMode::Pull, 10 + chunk))
            .collect();
        wanted.extend(enqueue(store, &prod, runs, 10 + chunk).await);
    }
    (prod, wanted)
}

/// What racing holders leased: each of `wanted` exactly once.
async fn each_leased_once(
    holders: Vec<tokio::task::JoinHandle<Vec<RunId>>>,
    wanted: &BTreeSet<RunId>,
) {
    let mut seen = Vec::new();
    for holder in holders {
        seen.extend(holder.await.unwrap());
    }
    let unique: BTreeSet<RunId> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a run was leased twice");
    assert_eq!(&unique, wanted, "every run was leased");
}

/// Four holders leasing at once from 200 runs, in small batches: every run is leased
/// exactly once.
pub async fn racing_leases_hand_each_run_to_one_holder(store: Arc<impl Catalog>) {
    let (prod, wanted) = two_hundred_runs(&*store).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (store, name) = (store.clone(), prod.name.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .lease(&pull_query(&name, 3, 100_000), at(100), &Actor::System)
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                for run in got {
                    assert_eq!(run.attempts, 1);
                    mine.push(run.id);
                }
            }
        }));
    }
    each_leased_once(tasks, &wanted).await;
}

fn claim(run: &RunRecord, resolved: &[&str]) -> Claim {
    Claim {
        environment: run.environment.clone(),
        id: run.id.clone(),
        attempts: run.attempts,
        resolution: Some(Resolution {
            environment: run.environment.clone(),
            function_id: run.function_id.clone(),
            run_id: Some(run.id.clone()),
            resolved: resolved.iter().map(|n| secret(n)).collect(),
            missing: vec![],
            at: at(100),
        }),
    }
}

/// A poll's read of due runs (an environment and its functions) holds exactly those
/// functions' runs of its mode, oldest due first across them (a queued run at its next
/// attempt, a running one at its lease's end), each once however often a function is
/// named, up to its limit; a backlog of another function, however old, is not in it.
pub async fn a_poll_reads_its_functions_due_runs_oldest_first_past_other_backlogs(
    store: Arc<impl Catalog>,
) {
    let prod = new_environment(&*store, "prod", 1).await;
    // More than a poll steps over before it reads function by function (SQLite: 256).
    let backlog: Vec<NewRun> = (0..300).map(|_| new_run("z", RunMode::Pull, 5)).collect();
    let backlog: BTreeSet<RunId> = enqueue(&*store, &prod, backlog, 5)
        .await
        .into_iter()
        .collect();
    let b1 = enqueue(&*store, &prod, vec![new_run("b", RunMode::Pull, 10)], 10).await;
    let a1 = enqueue(&*store, &prod, vec![new_run("a", RunMode::Pull, 20)], 20).await;
    enqueue(&*store, &prod, vec![new_run("a", RunMode::Push, 25)], 25).await;
    let b2 = enqueue(&*store, &prod, vec![new_run("b", RunMode::Pull, 30)], 30).await;
    let a2 = enqueue(&*store, &prod, vec![new_run("a", RunMode::Pull, 40)], 40).await;
    // b1 leased until 35: due again then, as a running run whose lease ended.
    let only_b = LeaseQuery {
        functions: Some(vec![function_id("b")]),
        ..pull_query(&prod.name, 1, 35)
    };
    let leased = store.lease(&only_b, at(12), &Actor::System).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, b1[0]);

    let poll = |functions: &[&str], limit: usize| LeaseQuery {
        functions: Some(functions.iter().map(|f| function_id(f)).collect()),
        ..pull_query(&prod.name, limit, 1_000)
    };
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let expected = [a1[0].clone(), b2[0].clone(), b1[0].clone(), a2[0].clone()];
    let read = store
        .due_runs(&poll(&["b", "a", "b"], 10), at(100), &[])
        .await
        .unwrap();
    assert_eq!(
        ids(read),
        expected,
        "oldest due first, each once, no other function's"
    );
    let read = store
        .due_runs(&poll(&["a", "b"], 2), at(100), &[])
        .await
        .unwrap();
    assert_eq!(ids(read), expected[..2], "the oldest up to the limit");
    let read = store
        .due_runs(&poll(&["b", "a"], 10), at(32), &[])
        .await
        .unwrap();
    assert_eq!(
        ids(read),
        expected[..2],
        "b1's lease has not ended at 32, a2 is not due"
    );
    let read = store
        .due_runs(&poll(&["z"], 3), at(100), &[])
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    assert!(read.iter().all(|r| backlog.contains(&r.id)));
    let read = store
        .due_runs(&poll(&["y"], 10), at(100), &[])
        .await
        .unwrap();
    assert!(read.is_empty(), "a function with no run");

    // One function holds all the oldest: an even share of each is not enough, and the
    // read goes on to each function's whole limit.
    let a3 = enqueue(&*store, &prod, vec![new_run("a", RunMode::Pull, 45)], 45).await;
    enqueue(&*store, &prod, vec![new_run("d", RunMode::Pull, 200)], 200).await;
    let read = store
        .due_runs(&poll(&["d", "a"], 3), at(300), &[])
        .await
        .unwrap();
    assert_eq!(ids(read), [a1[0].clone(), a2[0].clone(), a3[0].clone()]);
    let read = store
        .due_runs(&poll(&["d", "a"], 0), at(300), &[])
        .await
        .unwrap();
    assert!(read.is_empty(), "a limit of 0 reads nothing");
    // Runs passed over (the ones the caller's node is taking): the next ones instead, in
    // order, up to the limit; an id that is not due changes nothing.
    let all = [a1[0].clone(), a2[0].clone(), a3[0].clone()];
    let skip = [a1[0].clone(), function_run_id_not_due()];
    let read = store
        .due_runs(&poll(&["d", "a"], 2), at(300), &skip)
        .await
        .unwrap();
    assert_eq!(ids(read), all[1..]);
    let read = store
        .due_runs(&poll(&["a"], 1), at(300), &all[..2])
        .await
        .unwrap();
    assert_eq!(ids(read), all[2..]);
    let read = store
        .due_runs(&poll(&["a"], 3), at(300), &all)
        .await
        .unwrap();
    assert!(read.is_empty(), "every due run passed over");
}

/// A run id that names no run.
fn function_run_id_not_due() -> RunId {
    RunId::generate(Timestamp::from_millis(1)).unwrap()
}

/// `due_runs` reads what a lease would take, in its order, taking nothing; `lease_claimed`
/// takes a run only as it was read (its attempts unchanged, still due), with its
/// resolution audited in the same transaction, and records nothing for a claim it does
/// not take.
pub async fn a_claimed_run_is_leased_once_with_its_resolution(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let runtime = api_key("ak_0c", Role::Runtime(env("prod")), "hc");
    store
        .insert_api_key(&runtime, &Actor::System)
        .await
        .unwrap();
    let ids = enqueue(
        &*store,
        &prod,
        vec![
            new_run("a", RunMode::Pull, 10),
            new_run("a", RunMode::Pull, 11),
            new_run("b", RunMode::Pull, 12),
            new_run("a", RunMode::Push, 13),
        ],
        10,
    )
    .await;
    let query = pull_query(&prod.name, 10, 1_000);
    assert!(
        store.due_runs(&query, at(5), &[]).await.unwrap().is_empty(),
        "not due yet"
    );
    let due = store.due_runs(&query, at(100), &[]).await.unwrap();
    let due_ids: Vec<RunId> = due.iter().map(|r| r.id.clone()).collect();
    assert_eq!(due_ids, ids[..3], "pull runs, oldest due first");
    let only_a = LeaseQuery {
        functions: Some(vec![function_id("a")]),
        limit: 1,
        ..query.clone()
    };
    let first = store.due_runs(&only_a, at(100), &[]).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, ids[0]);
    assert_eq!(first[0].status, RunStatus::Queued);
    assert_eq!(first[0].attempts, 0);
    assert_eq!(
        store.due_runs(&query, at(100), &[]).await.unwrap().len(),
        3,
        "reading takes nothing"
    );

    let head = store.last_event_id().await.unwrap();
    let actor = key_actor(&runtime);
    let leased = store
        .lease_claimed(vec![claim(&first[0], &["A"])], at(1_000), at(100), &actor)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, ids[0]);
    assert_eq!(leased[0].status, RunStatus::Running);
    assert_eq!(leased[0].attempts, 1);
    assert_eq!(leased[0].lease_expires_at, Some(at(1_000)));
    assert_eq!(
        subjects_after(&*store, head).await,
        [format!("system.run.{}.running", ids[0])]
    );
    let rows = audit_rows(&*store, "function.resolved").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor.key_id.as_deref(), Some("ak_0c"));
    let detail: serde_json::Value =
        serde_json::from_str(rows[0].detail.as_deref().unwrap()).unwrap();
    assert_eq!(
        detail,
        serde_json::json!({"run": ids[0].as_str(), "resolved": ["A"], "missing": []})
    );

    // The same claim again (read before that lease): taken, nothing recorded.
    let head = store.last_event_id().await.unwrap();
    let again = store
        .lease_claimed(vec![claim(&first[0], &["A"])], at(1_000), at(100), &actor)
        .await
        .unwrap();
    assert!(again.is_empty(), "a run is leased once per attempt");
    // A run leased by `lease` since it was read is not taken either; the next is.
    let read = store.due_runs(&query, at(100), &[]).await.unwrap();
    assert_eq!(read.len(), 2, "the leased run is no longer due");
    store
        .lease(
            &LeaseQuery {
                limit: 1,
                ..only_a.clone()
            },
            at(100),
            &Actor::System,
        )
        .await
        .unwrap();
    let mixed = store
        .lease_claimed(
            vec![claim(&read[0], &["A"]), claim(&read[1], &["B"])],
            at(1_000),
            at(100),
            &actor,
        )
        .await
        .unwrap();
    let mixed: Vec<RunId> = mixed.into_iter().map(|r| r.id).collect();
    assert_eq!(mixed, [ids[2].clone()]);
    let rows = audit_rows(&*store, "function.resolved").await;
    assert_eq!(rows.len(), 2, "only the taken claim's resolution");
    assert_eq!(rows[1].name.as_deref(), Some("b"));
    assert_eq!(
        subjects_after(&*store, head).await,
        [
            format!("system.run.{}.running", ids[1]),
            format!("system.run.{}.running", ids[2])
        ]
    );
    // Not due before its lease expires; then claimed at the attempt it was read at.
    assert!(
        store
            .due_runs(&query, at(999), &[])
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store.due_runs(&query, at(1_000), &[]).await.unwrap();
    assert_eq!(expired.len(), 3);
    assert_eq!(expired[0].id, ids[0]);
    let retaken = store
        .lease_claimed(vec![claim(&expired[0], &[])], at(2_000), at(1_000), &actor)
        .await
        .unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].attempts, 2);

    let admin = api_key("ak_0a", Role::Admin, "ha");
    store.insert_api_key(&admin, &Actor::System).await.unwrap();
    store
        .delete_api_key(&runtime.meta.id, &key_actor(&admin))
        .await
        .unwrap();
    let refused = store
        .lease_claimed(vec![claim(&expired[1], &[])], at(3_000), at(1_000), &actor)
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    assert_eq!(
        store.due_runs(&query, at(1_000), &[]).await.unwrap().len(),
        2
    );
}

/// Four callers reading and claiming at once: each run is leased to one of them.
pub async fn racing_claims_hand_each_run_to_one_holder(store: Arc<impl Catalog>) {
    let (prod, wanted) = two_hundred_runs(&*store).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (store, name) = (store.clone(), prod.name.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let due = store
                    .due_runs(&pull_query(&name, 3, 0), at(100), &[])
                    .await
                    .unwrap();
                if due.is_empty() {
                    return mine;
                }
                // Each claims what it read, in one call or one at a time.
                let claims: Vec<Claim> = due.iter().map(|r| claim(r, &[])).collect();
                let got = store
                    .lease_claimed(claims, at(100_000), at(100), &Actor::System)
                    .await
                    .unwrap();
                for run in got {
                    assert_eq!(run.attempts, 1);
                    mine.push(run.id);
                }
            }
        }));
    }
    each_leased_once(tasks, &wanted).await;
    assert_eq!(
        audit_rows(&*store, "function.resolved").await.len(),
        wanted.len(),
        "one resolution per lease, none for a lost claim"
    );
}

/// Resolutions are audited (names in the detail, no event) after re-checking the actor;
/// a revoked actor records nothing.
pub async fn resolutions_are_audited_with_names_and_recheck_the_actor(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let admin = api_key("ak_0a", Role::Admin, "ha");
    let runtime = api_key("ak_0c", Role::Runtime(env("prod")), "hc");
    store.insert_api_key(&admin, &Actor::System).await.unwrap();
    store
        .insert_api_key(&runtime, &Actor::System)
        .await
        .unwrap();
    let head = store.last_event_id().await.unwrap();
    let run = RunId::generate(at(5)).unwrap();
    let batch = [
        Resolution {
            environment: prod.name.clone(),
            function_id: function_id("f"),
            run_id: Some(run.clone()),
            resolved: vec![secret("A"), secret("B")],
            missing: vec![secret("C")],
            at: at(7),
        },
        Resolution {
            environment: prod.name.clone(),
            function_id: function_id("g"),
            run_id: None,
            resolved: vec![],
            missing: vec![],
            at: at(8),
        },
    ];
    store
        .record_resolutions(&batch, &key_actor(&runtime))
        .await
        .unwrap();
    let rows = audit_rows(&*store, "function.resolved").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].name.as_deref(), Some("f"));
    assert_eq!(rows[0].environment.as_deref(), Some("prod"));
    assert_eq!(rows[0].actor.key_id.as_deref(), Some("ak_0c"));
    assert_eq!(rows[0].at, 7);
    let detail: serde_json::Value =
        serde_json::from_str(rows[0].detail.as_deref().unwrap()).unwrap();
    assert_eq!(
        detail,
        serde_json::json!({"run": run.as_str(), "resolved": ["A", "B"], "missing": ["C"]})
    );
    assert_eq!(
        rows[0].hash,
        rows[0].expected_hash(),
        "the detail is chained"
    );
    assert_eq!(
        rows[1].detail.as_deref(),
        Some(r#"{"resolved":[],"missing":[]}"#)
    );
    assert_eq!(store.last_event_id().await.unwrap(), head, "audit only");
    store
        .delete_api_key(&runtime.meta.id, &key_actor(&admin))
        .await
        .unwrap();
    let refused = store.record_resolutions(&batch, &key_actor(&runtime)).await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    assert_eq!(audit_rows(&*store, "function.resolved").await.len(), 2);
}

/// Sends, leases and completions re-check the acting key; a send lands only in the
/// incarnation it was made for.
pub async fn run_writes_recheck_the_actor_and_the_incarnation(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let admin = api_key("ak_0a", Role::Admin, "ha");
    let runtime = api_key("ak_0c", Role::Runtime(env("prod")), "hc");
    let manage = api_key("ak_0b", Role::Manage(env("prod")), "hb");
    for k in [&admin, &runtime, &manage] {
        store.insert_api_key(k, &Actor::System).await.unwrap();
    }
    let ids = enqueue(
        &*store,
        &prod,
        vec![
            new_run("a", RunMode::Pull, 10),
            new_run("a", RunMode::Pull, 10),
        ],
        10,
    )
    .await;
    let leased = store
        .lease(
            &pull_query(&prod.name, 1, 1_000),
            at(20),
            &key_actor(&runtime),
        )
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    for k in [&runtime, &manage] {
        store
            .delete_api_key(&k.meta.id, &key_actor(&admin))
            .await
            .unwrap();
    }
    let refused = store
        .lease(
            &pull_query(&prod.name, 1, 1_000),
            at(30),
            &key_actor(&runtime),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    let refused = store
        .finish(
            &prod.name,
            &leased[0].id,
            Some(1),
            RunOutcome::Succeeded { output: "1".into() },
            at(40),
            &key_actor(&runtime),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    // A claim read before the revocation is refused too, and takes nothing.
    let other = ids.iter().find(|id| **id != leased[0].id).unwrap();
    let unclaimed = store.get_run(&prod.name, other).await.unwrap().unwrap();
    let refused = store
        .lease_claimed(
            vec![claim(&unclaimed, &["A"])],
            at(1_000),
            at(40),
            &key_actor(&runtime),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    let refused = store
        .enqueue(
            &prod,
            &send("x", None),
            vec![new_run("a", RunMode::Pull, 50)],
            at(50),
            &key_actor(&manage),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    let still = store
        .get_run(&prod.name, &leased[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.status, RunStatus::Running);
    let other = ids.iter().find(|id| **id != leased[0].id).unwrap();
    let queued = store.get_run(&prod.name, other).await.unwrap().unwrap();
    assert_eq!(queued.status, RunStatus::Queued);

    store
        .delete_environment(&prod.name, &Actor::System)
        .await
        .unwrap();
    let successor = new_environment(&*store, "prod", 60).await;
    let stale = store
        .enqueue(
            &prod,
            &send("x", None),
            vec![new_run("a", RunMode::Pull, 70)],
            at(70),
            &Actor::System,
        )
        .await;
    assert!(matches!(stale, Err(StoreError::NotFound)), "{stale:?}");
    assert!(
        store
            .list_runs(
                &successor.name,
                &RunFilter::default(),
                None,
                PageSize::rows(10)
            )
            .await
            .unwrap()
            .is_empty()
    );
}

/// Pruning deletes ended runs last changed before the cutoff, oldest first, up to the
/// limit; queued and running runs stay; each pruning that deletes is one audit row.
pub async fn ended_runs_are_pruned_oldest_first_and_audited(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let ids = enqueue(
        &*store,
        &prod,
        (0..5)
            .map(|i| new_run("a", RunMode::Pull, 10 + i))
            .collect(),
        10,
    )
    .await;
    let leased = store
        .lease(&pull_query(&prod.name, 4, 10_000), at(20), &Actor::System)
        .await
        .unwrap();
    assert_eq!(leased.len(), 4);
    let end = |id: &RunId, outcome: RunOutcome, ms: i64| {
        let (store, env, id) = (store.clone(), prod.name.clone(), id.clone());
        async move {
            store
                .finish(&env, &id, None, outcome, at(ms), &Actor::System)
                .await
                .unwrap()
        }
    };
    let by_id = |id: &RunId| leased.iter().find(|r| &r.id == id).is_some();
    let leased_ids: Vec<RunId> = ids.iter().filter(|id| by_id(id)).cloned().collect();
    end(
        &leased_ids[0],
        RunOutcome::Succeeded { output: "1".into() },
        100,
    )
    .await;
    end(
        &leased_ids[1],
        RunOutcome::Failed { error: "x".into() },
        200,
    )
    .await;
    end(
        &leased_ids[2],
        RunOutcome::Succeeded { output: "2".into() },
        300,
    )
    .await;
    end(
        &leased_ids[3],
        RunOutcome::Retry {
            error: "again".into(),
            not_before: at(50_000),
        },
        50,
    )
    .await;
    let head = store.last_event_id().await.unwrap();
    assert_eq!(store.prune_runs(at(150), 10).await.unwrap(), 1);
    assert!(
        store
            .get_run(&prod.name, &leased_ids[0])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_run(&prod.name, &leased_ids[1])
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.prune_runs(at(10_000), 1).await.unwrap(),
        1,
        "the limit holds"
    );
    assert!(
        store
            .get_run(&prod.name, &leased_ids[1])
            .await
            .unwrap()
            .is_none(),
        "oldest first"
    );
    assert!(
        store
            .get_run(&prod.name, &leased_ids[2])
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.prune_runs(at(10_000), 10).await.unwrap(), 1);
    assert_eq!(store.prune_runs(at(10_000), 10).await.unwrap(), 0);
    let left = store
        .list_runs(&prod.name, &RunFilter::default(), None, PageSize::rows(10))
        .await
        .unwrap();
    assert_eq!(left.len(), 2, "the queued runs stay: {left:?}");
    assert!(left.iter().all(|r| r.status == RunStatus::Queued));
    let rows = audit_rows(&*store, "runs.pruned").await;
    let counts: Vec<u64> = rows.iter().map(|r| r.count).collect();
    assert_eq!(counts, [1, 1, 1], "one row per pruning that deleted");
    assert!(
        rows.iter()
            .all(|r| r.event.is_none() && r.actor == ActorRef::system())
    );
    assert_eq!(store.last_event_id().await.unwrap(), head, "audit only");
}
