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
            functions_and_runs_go_with_their_environment,
            an_event_starts_its_runs_and_journals_them,
            runs_are_listed_newest_first_filtered_and_paginated,
            an_idempotency_key_starts_runs_once_per_environment_and_window,
            racing_sends_with_one_idempotency_key_start_runs_once,
            a_lease_takes_due_runs_once_and_only_its_holder_finishes,
            an_expired_lease_passes_the_run_to_the_next_holder,
            a_retry_queues_the_run_again_from_its_backoff,
            racing_leases_hand_each_run_to_one_holder,
            resolutions_are_audited_with_names_and_recheck_the_actor,
            run_writes_recheck_the_actor_and_the_incarnation);
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

fn function_id(raw: &str) -> FunctionId {
    FunctionId::new(raw).expect("test function id is valid")
}

fn secret(raw: &str) -> SecretName {
    SecretName::new(raw).expect("test secret name is valid")
}

async fn new_environment(store: &impl Catalog, name: &str, ms: i64) -> Environment {
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
async fn subjects_after(store: &impl Catalog, after: u64) -> Vec<String> {
    store
        .events_after(after, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.subject)
        .collect()
}

/// Audit rows with `action`.
async fn audit_rows(store: &impl Catalog, action: &str) -> Vec<AuditRecord> {
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

fn pull_query(e: &EnvName, limit: usize, until_ms: i64) -> LeaseQuery {
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
        .list_runs(&prod.name, &RunFilter::default(), None, 4)
        .await
        .unwrap();
    let ids: Vec<RunId> = page.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, newest_first[..4]);
    let rest = store
        .list_runs(&prod.name, &RunFilter::default(), Some(&ids[3]), 4)
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
            10,
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
            10,
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
        .list_runs(&prod.name, &RunFilter::default(), None, 10)
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
        .list_runs(&prod.name, &RunFilter::default(), None, 100)
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

/// Four holders leasing at once from 200 runs, in small batches: every run is leased
/// exactly once.
pub async fn racing_leases_hand_each_run_to_one_holder(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let mut wanted = BTreeSet::new();
    for chunk in 0..10 {
        let runs: Vec<NewRun> = (0..20)
            .map(|_| new_run("a", RunMode::Pull, 10 + chunk))
            .collect();
        wanted.extend(enqueue(&*store, &prod, runs, 10 + chunk).await);
    }
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
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let unique: BTreeSet<RunId> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a run was leased twice");
    assert_eq!(unique, wanted, "every run was leased");
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
            .list_runs(&successor.name, &RunFilter::default(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
