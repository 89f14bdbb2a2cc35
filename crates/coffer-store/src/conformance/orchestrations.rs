//! Conformance cases of orchestrations and their runs.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::runtime::{audit_rows, function_id, new_environment, pull_query, subjects_after};
use super::{api_key, at, env, key_actor};
use crate::*;

/// Generates one test per orchestration case. `$make` is an async expression yielding
/// `(Arc<impl Catalog>, impl Sized)`.
#[macro_export]
macro_rules! orchestration_conformance {
    ($make:expr) => {
        $crate::orchestration_conformance!(@cases $make;
            orchestrations_are_created_updated_listed_and_deleted,
            orchestration_and_flow_writes_recheck_the_actor_and_the_incarnation,
            orchestrations_are_scanned_across_environments_in_order,
            steps_replacements_apply_only_at_the_read_revision_and_text,
            flows_are_started_and_listed_newest_first_filtered_and_paginated,
            a_flow_lease_takes_due_runs_once_and_an_expired_lease_passes_on,
            racing_flow_leases_hand_each_run_to_one_holder,
            a_flow_step_applies_only_at_its_version_and_starts_its_run,
            an_ended_step_run_makes_its_flow_due_and_a_retry_does_not,
            a_decision_lands_only_on_a_run_waiting_at_that_step,
            orchestrations_and_flows_go_with_their_environment,
            active_flows_are_capped_per_environment_and_ended_ones_pruned);
    };
    (@cases $make:expr; $($case:ident),*) => {
        mod orchestration_conformance {
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

/// A distinct orchestration id per `n` (its hex sorts as `n` does).
fn orchestration_id(n: u32) -> OrchestrationId {
    OrchestrationId::new(&format!("orch_{n:016x}")).expect("test orchestration id is valid")
}

/// A distinct run id per `n`, sorting as `n` does.
fn flow_id(n: u32) -> OrchestrationRunId {
    OrchestrationRunId::new(&format!("orun_{n:016x}")).expect("test run id is valid")
}

async fn put(
    store: &impl Catalog,
    e: &Environment,
    id: &OrchestrationId,
    steps: &str,
    precondition: Precondition,
    ms: i64,
) -> StoreResult<OrchestrationPutOutcome> {
    store
        .put_orchestration(
            e,
            id,
            "deploy",
            steps.to_owned(),
            precondition,
            at(ms),
            &Actor::System,
        )
        .await
}

fn new_flow(n: u32, orchestration: &OrchestrationId) -> NewFlow {
    NewFlow {
        id: flow_id(n),
        orchestration_id: orchestration.clone(),
        orchestration_revision: 1,
        steps: r#"[{"id":"a"},{"id":"b"}]"#.to_owned(),
        state: r#"{"n":0}"#.to_owned(),
        params: r#"{"p":1}"#.to_owned(),
        current_step: Some("a".to_owned()),
    }
}

async fn start(
    store: &impl Catalog,
    e: &Environment,
    n: u32,
    orchestration: &OrchestrationId,
    ms: i64,
) -> FlowRecord {
    store
        .start_flow(e, new_flow(n, orchestration), 1000, at(ms), &Actor::System)
        .await
        .unwrap()
}

/// A step that changes the status and the state and sleeps until `wake_ms`.
fn step(record: &FlowRecord, status: FlowStatus, wake_ms: Option<i64>) -> FlowAdvance {
    FlowAdvance {
        id: record.id.clone(),
        version: record.version,
        status,
        current_step: record.current_step.clone(),
        state: format!(r#"{{"n":{}}}"#, record.version),
        wake_at: wake_ms.map(at),
        take_decision: false,
        start: None,
        action: None,
    }
}

/// A compute step's function run for step `step_id` of `flow`.
fn step_run(flow: &OrchestrationRunId, step_id: &str, ms: i64) -> StepRun {
    StepRun {
        run: NewRun {
            id: RunId::generate(at(ms)).unwrap(),
            function_id: function_id("worker"),
            mode: RunMode::Pull,
            trigger_params: r#"{"p":1,"q":2}"#.to_owned(),
            step: Some(StepLink {
                flow: flow.clone(),
                step: step_id.to_owned(),
            }),
            leased_until: None,
        },
        event_name: format!("orchestration.o.{step_id}"),
        event_data: r#"{"from":"step"}"#.to_owned(),
    }
}

fn ids(flows: &[FlowRecord]) -> Vec<OrchestrationRunId> {
    flows.iter().map(|f| f.id.clone()).collect()
}

async fn get_flow(store: &impl Catalog, e: &EnvName, id: &OrchestrationRunId) -> FlowRecord {
    store.get_flow(e, id).await.unwrap().unwrap()
}

/// An orchestration is created at revision 1 (`Absent`), updated to 2 at its revision,
/// refused at any other, upserted without a precondition, listed in id order in pages and
/// deleted; each write is journaled as `system.orchestration.{id}.{verb}`.
pub async fn orchestrations_are_created_updated_listed_and_deleted(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let (o1, o2, o3) = (
        orchestration_id(1),
        orchestration_id(2),
        orchestration_id(3),
    );
    let head = store.last_event_id().await.unwrap();
    let first = put(&*store, &prod, &o1, "[1]", Precondition::Absent, 10)
        .await
        .unwrap();
    assert!(first.created);
    let r = &first.record;
    assert_eq!(
        (r.revision, r.created_at, r.updated_at),
        (1, at(10), at(10))
    );
    assert_eq!((r.name.as_str(), r.steps.as_str()), ("deploy", "[1]"));
    assert_eq!(r.environment_id, prod.id);
    let again = put(&*store, &prod, &o1, "[x]", Precondition::Absent, 11).await;
    assert!(
        matches!(again, Err(StoreError::Conflict { current: Some(1) })),
        "{again:?}"
    );
    let second = put(&*store, &prod, &o1, "[2]", Precondition::Revision(1), 20)
        .await
        .unwrap();
    assert!(!second.created);
    let r = &second.record;
    assert_eq!(
        (r.revision, r.created_at, r.updated_at),
        (2, at(10), at(20))
    );
    let stale = put(&*store, &prod, &o1, "[x]", Precondition::Revision(1), 21).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current: Some(2) })),
        "{stale:?}"
    );
    let absent = put(&*store, &prod, &o2, "[x]", Precondition::Revision(1), 21).await;
    assert!(
        matches!(absent, Err(StoreError::Conflict { current: None })),
        "{absent:?}"
    );
    let upserted = put(&*store, &prod, &o2, "[u]", Precondition::None, 22)
        .await
        .unwrap();
    assert!(upserted.created);
    let upserted = put(&*store, &prod, &o2, "[v]", Precondition::None, 23)
        .await
        .unwrap();
    assert_eq!((upserted.created, upserted.record.revision), (false, 2));
    put(&*store, &prod, &o3, "[3]", Precondition::Absent, 24)
        .await
        .unwrap();
    let got = store
        .get_orchestration(&prod.name, &o1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, second.record);
    let page = store
        .list_orchestrations(&prod.name, None, PageSize::rows(2))
        .await
        .unwrap();
    let page_ids: Vec<_> = page.iter().map(|o| o.id.clone()).collect();
    assert_eq!(page_ids, [o1.clone(), o2.clone()]);
    let rest = store
        .list_orchestrations(&prod.name, Some(&o2), PageSize::rows(2))
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, o3);
    // A page also ends after the row that brings its text to its bytes.
    let first_weight = page[0].weight();
    for (bytes, rows) in [(1, 1), (first_weight, 1), (first_weight + 1, 2)] {
        let bounded = store
            .list_orchestrations(&prod.name, None, PageSize { rows: 10, bytes })
            .await
            .unwrap();
        assert_eq!(bounded.len(), rows, "a page of {bytes} bytes");
    }

    let refused = store
        .delete_orchestration(&prod.name, &o1, Precondition::Revision(1), &Actor::System)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { current: Some(2) })),
        "{refused:?}"
    );
    let gone = store
        .delete_orchestration(&prod.name, &o1, Precondition::Revision(2), &Actor::System)
        .await
        .unwrap();
    assert_eq!(gone.steps, "[2]");
    assert!(
        store
            .get_orchestration(&prod.name, &o1)
            .await
            .unwrap()
            .is_none()
    );
    let missing = store
        .delete_orchestration(&prod.name, &o1, Precondition::None, &Actor::System)
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    let subject = |id: &OrchestrationId, verb: &str| format!("system.orchestration.{id}.{verb}");
    assert_eq!(
        subjects_after(&*store, head).await,
        [
            subject(&o1, "created"),
            subject(&o1, "updated"),
            subject(&o2, "created"),
            subject(&o2, "updated"),
            subject(&o3, "created"),
            subject(&o1, "deleted"),
        ]
    );
    let events = store.events_after(head, 10).await.unwrap();
    assert_eq!(events[1].revision, Some(2));
    let deleted = audit_rows(&*store, "orchestration.deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].name.as_deref(), Some(o1.as_str()));
    assert_eq!(deleted[0].environment.as_deref(), Some("prod"));
}

/// Orchestration and run writes by a key revoked since its request was authorized are
/// refused and change nothing; a write into an incarnation that is gone is `NotFound`.
pub async fn orchestration_and_flow_writes_recheck_the_actor_and_the_incarnation(
    store: Arc<impl Catalog>,
) {
    let prod = new_environment(&*store, "prod", 1).await;
    let admin = api_key("ak_0a", Role::Admin, "ha");
    let manage = api_key("ak_0b", Role::Manage(env("prod")), "hb");
    for k in [&admin, &manage] {
        store.insert_api_key(k, &Actor::System).await.unwrap();
    }
    let o = orchestration_id(1);
    put(&*store, &prod, &o, "[1]", Precondition::Absent, 10)
        .await
        .unwrap();
    let flow = start(&*store, &prod, 1, &o, 10).await;
    store
        .delete_api_key(&manage.meta.id, &key_actor(&admin))
        .await
        .unwrap();
    let head = store.last_event_id().await.unwrap();
    let revoked = key_actor(&manage);
    let refused = store
        .put_orchestration(
            &prod,
            &o,
            "x",
            "[x]".into(),
            Precondition::None,
            at(20),
            &revoked,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    let refused = store
        .delete_orchestration(&prod.name, &o, Precondition::None, &revoked)
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    let refused = store
        .start_flow(&prod, new_flow(2, &o), 1000, at(20), &revoked)
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    let mut advance = step(&flow, FlowStatus::Running, Some(30));
    advance.start = Some(step_run(&flow.id, "a", 20));
    let run_id = advance.start.as_ref().map(|s| s.run.id.clone()).unwrap();
    let refused = store
        .advance_flow(&prod.name, advance, at(20), &revoked)
        .await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    let batch = vec![StepsReplacement {
        environment: prod.name.clone(),
        environment_id: prod.id.clone(),
        id: o.clone(),
        revision: 1,
        read: "[1]".into(),
        new: "[r]".into(),
        stored_anew: 1,
    }];
    let refused = store.replace_orchestration_steps(batch, &revoked).await;
    assert!(
        matches!(refused, Err(StoreError::ActorRevoked)),
        "{refused:?}"
    );
    let kept = store
        .get_orchestration(&prod.name, &o)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((kept.revision, kept.steps.as_str()), (1, "[1]"));
    assert!(
        store
            .get_flow(&prod.name, &flow_id(2))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(get_flow(&*store, &prod.name, &flow.id).await, flow);
    assert!(store.get_run(&prod.name, &run_id).await.unwrap().is_none());
    assert!(
        subjects_after(&*store, head).await.is_empty(),
        "nothing journaled"
    );

    store
        .delete_environment(&prod.name, &Actor::System)
        .await
        .unwrap();
    let successor = new_environment(&*store, "prod", 40).await;
    let stale = put(&*store, &prod, &o, "[1]", Precondition::None, 50).await;
    assert!(matches!(stale, Err(StoreError::NotFound)), "{stale:?}");
    let stale = store
        .start_flow(&prod, new_flow(3, &o), 1000, at(50), &Actor::System)
        .await;
    assert!(matches!(stale, Err(StoreError::NotFound)), "{stale:?}");
    let stale = store
        .advance_flow(
            &prod.name,
            step(&flow, FlowStatus::Running, None),
            at(50),
            &Actor::System,
        )
        .await;
    assert!(matches!(stale, Err(StoreError::NotFound)), "{stale:?}");
    assert!(
        store
            .list_orchestrations(&successor.name, None, PageSize::rows(10))
            .await
            .unwrap()
            .is_empty()
    );
    let filter = FlowFilter::default();
    assert!(
        store
            .list_flows(&successor.name, &filter, None, PageSize::rows(10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The scan walks every environment's orchestrations in (environment, id) byte order, in
/// pages.
pub async fn orchestrations_are_scanned_across_environments_in_order(store: Arc<impl Catalog>) {
    let mut wanted = Vec::new();
    for name in ["staging", "prod", "dev"] {
        let e = new_environment(&*store, name, 1).await;
        for n in [3, 1, 2] {
            put(
                &*store,
                &e,
                &orchestration_id(n),
                "[]",
                Precondition::Absent,
                5,
            )
            .await
            .unwrap();
            wanted.push((name.to_owned(), orchestration_id(n)));
        }
    }
    wanted.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan_orchestrations(after.as_ref(), 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.environment.clone(), last.id.clone()));
        assert!(page.len() <= 2);
        seen.extend(
            page.into_iter()
                .map(|o| (o.environment.as_str().to_owned(), o.id)),
        );
    }
    assert_eq!(seen, wanted);
}

/// A replacement of an orchestration's steps applies only at the revision and the exact
/// text it was read at, keeps revision and timestamps, and the applied ones are one
/// `keys.rewrapped` row and event counting what they stored anew; nothing applied, nothing
/// journaled.
pub async fn steps_replacements_apply_only_at_the_read_revision_and_text(store: Arc<impl Catalog>) {
    let e = new_environment(&*store, "prod", 1).await;
    let (o1, o2, o3, o4) = (
        orchestration_id(1),
        orchestration_id(2),
        orchestration_id(3),
        orchestration_id(4),
    );
    for o in [&o1, &o2, &o3, &o4] {
        put(&*store, &e, o, "[v1]", Precondition::Absent, 10)
            .await
            .unwrap();
    }
    put(&*store, &e, &o2, "[v1]", Precondition::Revision(1), 20)
        .await
        .unwrap();
    let replace = |id: &OrchestrationId, revision, read: &str, count| StepsReplacement {
        environment: e.name.clone(),
        environment_id: e.id.clone(),
        id: id.clone(),
        revision,
        read: read.to_owned(),
        new: "[v2]".to_owned(),
        stored_anew: count,
    };
    let head = store.last_event_id().await.unwrap();
    let batch = vec![
        replace(&o1, 1, "[v1]", 2),
        replace(&o2, 1, "[v1]", 5),
        replace(&o3, 1, "[other]", 7),
        replace(&o4, 1, "[v1]", 3),
        replace(&orchestration_id(9), 1, "[v1]", 11),
    ];
    assert_eq!(
        store
            .replace_orchestration_steps(batch, &Actor::System)
            .await
            .unwrap(),
        [true, false, false, true, false]
    );
    let get = |id: &OrchestrationId| {
        let (store, id) = (store.clone(), id.clone());
        async move {
            store
                .get_orchestration(&env("prod"), &id)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let one = get(&o1).await;
    assert_eq!(one.steps, "[v2]");
    assert_eq!(
        (one.revision, one.created_at, one.updated_at),
        (1, at(10), at(10))
    );
    assert_eq!(get(&o2).await.steps, "[v1]");
    assert_eq!(get(&o3).await.steps, "[v1]");
    assert_eq!(
        subjects_after(&*store, head).await,
        ["system.keys.rewrapped"]
    );
    let events = store.events_after(head, 10).await.unwrap();
    assert_eq!(events[0].count, Some(5), "2 + 3 stored anew");
    let rows = audit_rows(&*store, "keys.rewrapped").await;
    assert_eq!(rows.last().map(|r| r.count), Some(5));

    let head = store.last_event_id().await.unwrap();
    let stale = vec![replace(&o1, 1, "[v1]", 2)];
    assert_eq!(
        store
            .replace_orchestration_steps(stale, &Actor::System)
            .await
            .unwrap(),
        [false]
    );
    assert!(
        store
            .replace_orchestration_steps(Vec::new(), &Actor::System)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        subjects_after(&*store, head).await.is_empty(),
        "nothing applied, nothing journaled"
    );
}

/// A run starts running, at version 1, due at once, journaled as
/// `system.orchestration.run.{id}.started`; runs are listed newest first, by orchestration
/// and by status, in pages.
pub async fn flows_are_started_and_listed_newest_first_filtered_and_paginated(
    store: Arc<impl Catalog>,
) {
    let prod = new_environment(&*store, "prod", 1).await;
    let (oa, ob) = (orchestration_id(1), orchestration_id(2));
    let head = store.last_event_id().await.unwrap();
    let first = start(&*store, &prod, 1, &oa, 10).await;
    assert_eq!(first.status, FlowStatus::Running);
    assert_eq!(first.version, 1);
    assert_eq!(
        (first.wake_at, first.lease_expires_at),
        (Some(at(10)), None)
    );
    assert_eq!((first.created_at, first.updated_at), (at(10), at(10)));
    assert_eq!(first.decision, None);
    assert_eq!(first.environment_id, prod.id);
    assert_eq!(first.current_step.as_deref(), Some("a"));
    assert_eq!(
        (
            first.steps.as_str(),
            first.state.as_str(),
            first.params.as_str()
        ),
        (r#"[{"id":"a"},{"id":"b"}]"#, r#"{"n":0}"#, r#"{"p":1}"#)
    );
    assert_eq!(get_flow(&*store, &prod.name, &first.id).await, first);
    assert!(
        store
            .get_flow(&env("staging"), &first.id)
            .await
            .unwrap()
            .is_none()
    );
    let events = store.events_after(head, 10).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.subject.as_str())
            .collect::<Vec<_>>(),
        [format!("system.orchestration.run.{}.started", first.id)]
    );
    assert_eq!(events[0].revision, Some(1));
    let second = start(&*store, &prod, 2, &ob, 11).await;
    let third = start(&*store, &prod, 3, &oa, 12).await;
    let fourth = start(&*store, &prod, 4, &ob, 13).await;
    store
        .advance_flow(
            &prod.name,
            step(&second, FlowStatus::Succeeded, None),
            at(20),
            &Actor::System,
        )
        .await
        .unwrap();
    let list = |filter: FlowFilter, after: Option<OrchestrationRunId>, limit| {
        let store = store.clone();
        async move {
            let page = store
                .list_flows(&env("prod"), &filter, after.as_ref(), PageSize::rows(limit))
                .await
                .unwrap();
            ids(&page)
        }
    };
    let all = FlowFilter::default();
    assert_eq!(
        list(all.clone(), None, 3).await,
        [fourth.id.clone(), third.id.clone(), second.id.clone()]
    );
    assert_eq!(
        list(all.clone(), Some(second.id.clone()), 3).await,
        std::slice::from_ref(&first.id)
    );
    let of_a = FlowFilter {
        orchestration: Some(oa.clone()),
        status: None,
    };
    assert_eq!(
        list(of_a.clone(), None, 10).await,
        [third.id.clone(), first.id.clone()]
    );
    assert_eq!(
        list(of_a, Some(third.id.clone()), 10).await,
        std::slice::from_ref(&first.id)
    );
    let succeeded = FlowFilter {
        orchestration: None,
        status: Some(FlowStatus::Succeeded),
    };
    assert_eq!(
        list(succeeded, None, 10).await,
        std::slice::from_ref(&second.id)
    );
    let running_b = FlowFilter {
        orchestration: Some(ob),
        status: Some(FlowStatus::Running),
    };
    assert_eq!(list(running_b, None, 10).await, [fourth.id]);
    // A page also ends after the row that brings its text to its bytes.
    let page = store
        .list_flows(&env("prod"), &all, None, PageSize::rows(10))
        .await
        .unwrap();
    let first_weight = page[0].weight();
    assert!(first_weight > 0);
    for (bytes, rows) in [(1, 1), (first_weight, 1), (first_weight + 1, 2)] {
        let bounded = store
            .list_flows(&env("prod"), &all, None, PageSize { rows: 10, bytes })
            .await
            .unwrap();
        assert_eq!(bounded.len(), rows, "a page of {bytes} bytes");
    }
}

/// A lease takes the runs due at its time, earliest first and up to its limit, and sets
/// their lease; a held run is not leased again until its lease expires; an ended run, a
/// run waiting for an event and a run due later are not leased. Not journaled.
pub async fn a_flow_lease_takes_due_runs_once_and_an_expired_lease_passes_on(
    store: Arc<impl Catalog>,
) {
    let prod = new_environment(&*store, "prod", 1).await;
    let o = orchestration_id(1);
    let f1 = start(&*store, &prod, 1, &o, 20).await;
    let f2 = start(&*store, &prod, 2, &o, 10).await;
    let f3 = start(&*store, &prod, 3, &o, 30).await;
    let ended = start(&*store, &prod, 4, &o, 5).await;
    let asleep = start(&*store, &prod, 5, &o, 5).await;
    let later = start(&*store, &prod, 6, &o, 5).await;
    let waiting = start(&*store, &prod, 7, &o, 5).await;
    for (flow, status, wake) in [
        (&ended, FlowStatus::Failed, Some(6)),
        (&asleep, FlowStatus::Running, None),
        (&later, FlowStatus::Running, Some(1_000)),
        (&waiting, FlowStatus::WaitingApproval, Some(7)),
    ] {
        store
            .advance_flow(&prod.name, step(flow, status, wake), at(8), &Actor::System)
            .await
            .unwrap();
    }
    let head = store.last_event_id().await.unwrap();
    let leased = store.lease_flows(2, at(100), at(25)).await.unwrap();
    assert_eq!(ids(&leased), [waiting.id.clone(), f2.id.clone()]);
    assert!(leased.iter().all(|f| f.lease_expires_at == Some(at(100))));
    let leased = store.lease_flows(10, at(100), at(25)).await.unwrap();
    assert_eq!(
        ids(&leased),
        std::slice::from_ref(&f1.id),
        "held runs are not leased again"
    );
    assert_eq!(
        ids(&store.lease_flows(10, at(200), at(99)).await.unwrap()),
        std::slice::from_ref(&f3.id),
        "leases held until 100 are not taken at 99"
    );
    let held = get_flow(&*store, &prod.name, &f2.id).await;
    assert_eq!(held.lease_expires_at, Some(at(100)));
    assert_eq!(held.version, f2.version, "a lease is bookkeeping");
    // Expired at 100: the runs pass to the next holder; f3 is held until 200 since 99.
    let again = store.lease_flows(10, at(300), at(100)).await.unwrap();
    assert_eq!(
        ids(&again),
        [waiting.id.clone(), f2.id.clone(), f1.id.clone()]
    );
    assert!(
        store
            .lease_flows(10, at(400), at(150))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.last_event_id().await.unwrap(), head, "not journaled");
    // A step releases the lease.
    let taken = get_flow(&*store, &prod.name, &f1.id).await;
    let moved = store
        .advance_flow(
            &prod.name,
            step(&taken, FlowStatus::Running, Some(160)),
            at(155),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(moved.lease_expires_at, None);
    assert_eq!(
        ids(&store.lease_flows(10, at(500), at(160)).await.unwrap()),
        std::slice::from_ref(&f1.id)
    );
}

/// Four holders leasing at once from 120 due runs, in small batches: every run is leased
/// exactly once.
pub async fn racing_flow_leases_hand_each_run_to_one_holder(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let o = orchestration_id(1);
    let mut wanted = BTreeSet::new();
    for n in 0..120 {
        wanted.insert(start(&*store, &prod, n, &o, 10 + i64::from(n % 7)).await.id);
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.lease_flows(3, at(100_000), at(100)).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|f| f.id));
            }
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let unique: BTreeSet<OrchestrationRunId> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a run was leased twice");
    assert_eq!(unique, wanted, "every run was leased");
}

/// A step applies only at the version it was read at: it sets status, step, state and
/// wake time, releases the lease, bumps the version, starts its function run (linked back
/// to the step, journaled `system.run.{id}.queued`) and journals its action, in one
/// transaction; a stale step is a `Conflict` that writes nothing, a missing run
/// `NotFound`.
pub async fn a_flow_step_applies_only_at_its_version_and_starts_its_run(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let o = orchestration_id(1);
    start(&*store, &prod, 1, &o, 10).await;
    let leased = store.lease_flows(1, at(100), at(10)).await.unwrap();
    let flow = leased.into_iter().next().unwrap();
    let head = store.last_event_id().await.unwrap();
    let mut advance = step(&flow, FlowStatus::Running, None);
    advance.current_step = Some("b".to_owned());
    advance.start = Some(step_run(&flow.id, "b", 20));
    let run_id = advance.start.as_ref().map(|s| s.run.id.clone()).unwrap();
    let moved = store
        .advance_flow(&prod.name, advance, at(20), &Actor::System)
        .await
        .unwrap();
    assert_eq!(moved.version, 2);
    assert_eq!(moved.current_step.as_deref(), Some("b"));
    assert_eq!(moved.state, r#"{"n":1}"#);
    assert_eq!((moved.wake_at, moved.lease_expires_at), (None, None));
    assert_eq!((moved.created_at, moved.updated_at), (at(10), at(20)));
    assert_eq!(get_flow(&*store, &prod.name, &flow.id).await, moved);
    let run = store.get_run(&prod.name, &run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.attempts, 0);
    assert_eq!(run.function_id, function_id("worker"));
    assert_eq!(run.environment_id, prod.id);
    assert_eq!(run.event_name, "orchestration.o.b");
    assert_eq!(run.event_data, r#"{"from":"step"}"#);
    assert_eq!(run.trigger_params, r#"{"p":1,"q":2}"#);
    assert_eq!((run.next_attempt_at, run.created_at), (at(20), at(20)));
    assert_eq!(
        run.step,
        Some(StepLink {
            flow: flow.id.clone(),
            step: "b".to_owned()
        })
    );
    let leased_run = store
        .lease(&pull_query(&prod.name, 10, 100), at(21), &Actor::System)
        .await
        .unwrap();
    assert_eq!(leased_run[0].step, run.step, "a lease reads the link back");
    let listed = store
        .list_runs(&prod.name, &RunFilter::default(), None, PageSize::rows(10))
        .await
        .unwrap();
    assert_eq!(listed[0].step, run.step, "a listing reads the link back");
    assert_eq!(
        subjects_after(&*store, head).await,
        [
            format!("system.run.{run_id}.queued"),
            format!("system.run.{run_id}.running"),
        ],
        "a step with no action journals only its run"
    );

    let head = store.last_event_id().await.unwrap();
    let mut stale = step(&flow, FlowStatus::Failed, Some(30));
    stale.start = Some(step_run(&flow.id, "c", 30));
    stale.action = Some(Action::FlowFailed);
    let stale_run = stale.start.as_ref().map(|s| s.run.id.clone()).unwrap();
    let refused = store
        .advance_flow(&prod.name, stale, at(30), &Actor::System)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { current: Some(2) })),
        "{refused:?}"
    );
    assert_eq!(get_flow(&*store, &prod.name, &flow.id).await, moved);
    assert!(
        store
            .get_run(&prod.name, &stale_run)
            .await
            .unwrap()
            .is_none()
    );
    assert!(subjects_after(&*store, head).await.is_empty());
    let missing = store
        .advance_flow(
            &prod.name,
            step(
                &FlowRecord {
                    id: flow_id(99),
                    ..moved.clone()
                },
                FlowStatus::Running,
                None,
            ),
            at(30),
            &Actor::System,
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    let elsewhere = store
        .advance_flow(
            &env("staging"),
            step(&moved, FlowStatus::Running, None),
            at(30),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(elsewhere, Err(StoreError::NotFound)),
        "{elsewhere:?}"
    );

    let mut done = step(&moved, FlowStatus::Succeeded, None);
    done.current_step = None;
    done.action = Some(Action::FlowSucceeded);
    let done = store
        .advance_flow(&prod.name, done, at(40), &Actor::System)
        .await
        .unwrap();
    assert_eq!((done.status, done.version), (FlowStatus::Succeeded, 3));
    let events = store.events_after(head, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].subject,
        format!("system.orchestration.run.{}.succeeded", flow.id)
    );
    assert_eq!(events[0].revision, Some(3));
}

/// When a step's function run ends (succeeded or failed), its orchestration run is due
/// at that moment, in the same transaction; a retry leaves it asleep, and an ended
/// orchestration run stays as it is.
pub async fn an_ended_step_run_makes_its_flow_due_and_a_retry_does_not(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let o = orchestration_id(1);
    let flow = start(&*store, &prod, 1, &o, 10).await;
    let mut advance = step(&flow, FlowStatus::Running, None);
    advance.start = Some(step_run(&flow.id, "a", 20));
    let run_id = advance.start.as_ref().map(|s| s.run.id.clone()).unwrap();
    let asleep = store
        .advance_flow(&prod.name, advance, at(20), &Actor::System)
        .await
        .unwrap();
    let lease = |ms| {
        let store = store.clone();
        async move {
            store
                .lease(
                    &pull_query(&env("prod"), 10, ms + 50),
                    at(ms),
                    &Actor::System,
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(lease(30).await.len(), 1);
    let retried = store
        .finish(
            &prod.name,
            &run_id,
            Some(1),
            RunOutcome::Retry {
                error: "busy".into(),
                not_before: at(40),
            },
            at(35),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(retried.status, RunStatus::Queued);
    assert_eq!(get_flow(&*store, &prod.name, &flow.id).await, asleep);
    assert!(
        store
            .lease_flows(10, at(500), at(36))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(lease(45).await.len(), 1);
    store
        .finish(
            &prod.name,
            &run_id,
            Some(2),
            RunOutcome::Succeeded {
                output: "{}".into(),
            },
            at(50),
            &Actor::System,
        )
        .await
        .unwrap();
    let woken = get_flow(&*store, &prod.name, &flow.id).await;
    assert_eq!(woken.wake_at, Some(at(50)));
    assert_eq!(woken.state, asleep.state);
    assert_eq!(woken.status, FlowStatus::Running);
    let due = store.lease_flows(10, at(500), at(50)).await.unwrap();
    assert_eq!(ids(&due), std::slice::from_ref(&flow.id));

    // A failed run wakes its run too; a run of an ended orchestration run leaves it be.
    let mut advance = step(&due[0], FlowStatus::Running, None);
    advance.start = Some(step_run(&flow.id, "b", 60));
    let second = advance.start.as_ref().map(|s| s.run.id.clone()).unwrap();
    let mut ended = step(&due[0], FlowStatus::Failed, None);
    ended.version += 1;
    store
        .advance_flow(&prod.name, advance, at(60), &Actor::System)
        .await
        .unwrap();
    let ended = store
        .advance_flow(&prod.name, ended, at(61), &Actor::System)
        .await
        .unwrap();
    assert_eq!(lease(70).await.len(), 1);
    store
        .finish(
            &prod.name,
            &second,
            None,
            RunOutcome::Failed {
                error: "boom".into(),
            },
            at(80),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(get_flow(&*store, &prod.name, &flow.id).await, ended);
}

/// A decision lands only on a run waiting for approval at that step with no decision yet:
/// it makes the run due, bumps its version, and is journaled `approved` or `rejected` with
/// the deciding key; a step that takes it in clears it.
pub async fn a_decision_lands_only_on_a_run_waiting_at_that_step(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let admin = api_key("ak_0a", Role::Admin, "ha");
    let manage = api_key("ak_0b", Role::Manage(env("prod")), "hb");
    for k in [&admin, &manage] {
        store.insert_api_key(k, &Actor::System).await.unwrap();
    }
    let o = orchestration_id(1);
    let flow = start(&*store, &prod, 1, &o, 10).await;
    let decide = |id: OrchestrationRunId, step: &'static str, approved: bool, actor: Actor| {
        let store = store.clone();
        async move {
            store
                .decide_flow(
                    &env("prod"),
                    &id,
                    step,
                    approved,
                    format!(r#"{{"approved":{approved}}}"#),
                    at(30),
                    &actor,
                )
                .await
        }
    };
    let running = decide(flow.id.clone(), "a", true, Actor::System).await;
    assert!(
        matches!(running, Err(StoreError::Conflict { current: Some(1) })),
        "{running:?}"
    );
    let head = store.last_event_id().await.unwrap();
    let mut wait = step(&flow, FlowStatus::WaitingApproval, None);
    wait.current_step = Some("approve".to_owned());
    wait.action = Some(Action::FlowWaiting);
    let waiting = store
        .advance_flow(&prod.name, wait, at(20), &Actor::System)
        .await
        .unwrap();
    assert_eq!(
        subjects_after(&*store, head).await,
        [format!("system.orchestration.run.{}.waiting", flow.id)]
    );
    let wrong = decide(flow.id.clone(), "a", true, Actor::System).await;
    assert!(
        matches!(wrong, Err(StoreError::Conflict { current: Some(2) })),
        "{wrong:?}"
    );
    let missing = decide(flow_id(99), "approve", true, Actor::System).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    let head = store.last_event_id().await.unwrap();
    let decided = decide(flow.id.clone(), "approve", true, key_actor(&manage))
        .await
        .unwrap();
    assert_eq!(decided.decision.as_deref(), Some(r#"{"approved":true}"#));
    assert_eq!((decided.wake_at, decided.version), (Some(at(30)), 3));
    assert_eq!(decided.updated_at, at(30));
    assert_eq!(decided.status, FlowStatus::WaitingApproval);
    let events = store.events_after(head, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].subject,
        format!("system.orchestration.run.{}.approved", flow.id)
    );
    assert_eq!(events[0].actor.key_id.as_deref(), Some("ak_0b"));
    let rows = audit_rows(&*store, "orchestration.run.approved").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor.key_id.as_deref(), Some("ak_0b"));
    assert_eq!(rows[0].revision, Some(3));
    let twice = decide(flow.id.clone(), "approve", false, Actor::System).await;
    assert!(
        matches!(twice, Err(StoreError::Conflict { current: Some(3) })),
        "{twice:?}"
    );
    // The step that read the run before the decision is refused; one after takes it in.
    let stale = store
        .advance_flow(
            &prod.name,
            step(&waiting, FlowStatus::Running, None),
            at(31),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current: Some(3) })),
        "{stale:?}"
    );
    let mut take = step(&decided, FlowStatus::Running, Some(40));
    take.take_decision = true;
    let taken = store
        .advance_flow(&prod.name, take, at(32), &Actor::System)
        .await
        .unwrap();
    assert_eq!(taken.decision, None);

    // A rejection by a key revoked meanwhile is refused; by another it is journaled.
    let other = start(&*store, &prod, 2, &o, 50).await;
    let mut wait = step(&other, FlowStatus::WaitingApproval, None);
    wait.current_step = Some("approve".to_owned());
    store
        .advance_flow(&prod.name, wait, at(51), &Actor::System)
        .await
        .unwrap();
    store
        .delete_api_key(&manage.meta.id, &key_actor(&admin))
        .await
        .unwrap();
    let revoked = decide(other.id.clone(), "approve", false, key_actor(&manage)).await;
    assert!(
        matches!(revoked, Err(StoreError::ActorRevoked)),
        "{revoked:?}"
    );
    assert_eq!(
        get_flow(&*store, &prod.name, &other.id).await.decision,
        None
    );
    let rejected = decide(other.id.clone(), "approve", false, key_actor(&admin))
        .await
        .unwrap();
    assert_eq!(rejected.decision.as_deref(), Some(r#"{"approved":false}"#));
    let rows = audit_rows(&*store, "orchestration.run.rejected").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name.as_deref(), Some(other.id.as_str()));
    assert_eq!(rows[0].actor.key_id.as_deref(), Some("ak_0a"));
}

/// Deleting an environment deletes its orchestrations and their runs with it; a new
/// environment of the same name starts with none, and other environments keep theirs.
pub async fn orchestrations_and_flows_go_with_their_environment(store: Arc<impl Catalog>) {
    let prod = new_environment(&*store, "prod", 1).await;
    let staging = new_environment(&*store, "staging", 1).await;
    let o = orchestration_id(1);
    for (e, n) in [(&prod, 1), (&staging, 2)] {
        put(&*store, e, &o, "[1]", Precondition::Absent, 5)
            .await
            .unwrap();
        start(&*store, e, n, &o, 10).await;
    }
    store
        .delete_environment(&prod.name, &Actor::System)
        .await
        .unwrap();
    let successor = new_environment(&*store, "prod", 20).await;
    assert!(
        store
            .get_orchestration(&successor.name, &o)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_flow(&successor.name, &flow_id(1))
            .await
            .unwrap()
            .is_none()
    );
    let walked = store.scan_orchestrations(None, 10).await.unwrap();
    assert_eq!(walked.len(), 1);
    assert_eq!(walked[0].environment, staging.name);
    let leased = store.lease_flows(10, at(100), at(30)).await.unwrap();
    assert_eq!(
        ids(&leased),
        [flow_id(2)],
        "a deleted environment's run was leased"
    );
    assert!(
        store
            .get_orchestration(&staging.name, &o)
            .await
            .unwrap()
            .is_some()
    );
}

/// A start past `max_active` runs that have not ended is refused (nothing written); an
/// ended run frees its place; other environments count apart; ended runs older than the
/// retention are pruned with the function runs, in one `runs.pruned` row.
pub async fn active_flows_are_capped_per_environment_and_ended_ones_pruned(
    store: Arc<impl Catalog>,
) {
    let prod = new_environment(&*store, "prod", 1).await;
    let staging = new_environment(&*store, "staging", 1).await;
    let o = orchestration_id(1);
    let start_capped = |e: &Environment, n: u32, ms: i64| {
        let (store, e, o) = (store.clone(), e.clone(), o.clone());
        async move {
            store
                .start_flow(&e, new_flow(n, &o), 2, at(ms), &Actor::System)
                .await
        }
    };
    let first = start_capped(&prod, 1, 10).await.unwrap();
    start_capped(&prod, 2, 11).await.unwrap();
    let head = store.last_event_id().await.unwrap();
    assert!(matches!(
        start_capped(&prod, 3, 12).await,
        Err(StoreError::Overloaded)
    ));
    assert_eq!(
        store.last_event_id().await.unwrap(),
        head,
        "nothing written"
    );
    start_capped(&staging, 4, 12).await.unwrap();
    let ended = store
        .advance_flow(
            &prod.name,
            step(&first, FlowStatus::Succeeded, None),
            at(20),
            &Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(ended.status, FlowStatus::Succeeded);
    start_capped(&prod, 5, 21).await.unwrap();

    // The ended one is pruned once the retention has passed; the others are not.
    assert_eq!(
        store.prune_runs(at(20), 100).await.unwrap(),
        0,
        "not before"
    );
    let rows_before = audit_rows(&*store, "runs.pruned").await.len();
    assert_eq!(store.prune_runs(at(21), 100).await.unwrap(), 1);
    assert!(
        store
            .get_flow(&prod.name, &first.id)
            .await
            .unwrap()
            .is_none()
    );
    let rows = audit_rows(&*store, "runs.pruned").await;
    assert_eq!(rows.len(), rows_before + 1);
    assert_eq!(rows.last().unwrap().count, 1);
    let left = store
        .list_flows(&prod.name, &FlowFilter::default(), None, PageSize::rows(10))
        .await
        .unwrap();
    assert_eq!(left.len(), 2);
}
