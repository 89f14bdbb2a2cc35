//! The run queue on PostgreSQL beyond the conformance cases: its index, its bounded
//! receipts, and its lock order under an environment's deletion.

use coffer_store::{
    EventSend, FunctionId, IDEMPOTENCY_WINDOW_MS, LeaseQuery, NewRun, RunId, RunMode, RunOutcome,
    RunStore,
};

use super::*;

fn send(key: &str) -> EventSend {
    EventSend {
        name: "order.created".into(),
        data: "{}".into(),
        idempotency_key: Some(key.into()),
    }
}

fn new_run(ms: i64) -> NewRun {
    NewRun {
        id: RunId::generate(Timestamp::from_millis(ms)).expect("an id"),
        function_id: FunctionId::new("f").expect("valid"),
        mode: RunMode::Pull,
        trigger_params: "{}".into(),
        step: None,
        leased_until: None,
    }
}

fn pull(env_name: &str, limit: usize) -> LeaseQuery {
    LeaseQuery {
        environment: Some(env(env_name)),
        functions: None,
        mode: RunMode::Pull,
        limit,
        lease_until: Timestamp::from_millis(1_000_000),
    }
}

fn runtime_key(id: &str, env_name: &str, hash: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        meta: ApiKeyMeta {
            id: ApiKeyId::new(id).expect("valid"),
            name: format!("key {id}"),
            role: Role::Runtime(env(env_name)),
            created_at: Timestamp::from_millis(1),
        },
        key_hash: hash.into(),
    }
}

fn key_actor(key: &ApiKeyRecord) -> Actor {
    Actor::Key {
        id: key.meta.id.clone(),
        environment: key.meta.role.environment().cloned(),
        origin: coffer_store::Origin::default(),
    }
}

/// Leases are served by the partial indexes of due runs (their expression and predicate
/// are the statement's): the push dispatcher's by `runs_due`, a pull worker's by
/// `runs_due_in_environment`. A lease reads the due runs, not the table's history nor
/// another environment's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_served_by_the_due_indexes() {
    let (store, _db) = fresh().await;
    let mut c = store.acquire().await.expect("connection");
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *c)
        .await
        .expect("set");
    let push = LeaseQuery {
        environment: None,
        functions: None,
        mode: RunMode::Push,
        limit: 10,
        lease_until: Timestamp::from_millis(1_000),
    };
    let queries = [
        (push.clone(), "runs_due "),
        (
            LeaseQuery {
                functions: Some(vec![FunctionId::new("f").expect("valid")]),
                ..push
            },
            "runs_due ",
        ),
        (pull("prod", 10), "runs_due_in_environment "),
    ];
    for (query, index) in &queries {
        let mut sql = sqlx::QueryBuilder::new("EXPLAIN ");
        crate::runs::push_lease(&mut sql, query, 10, Timestamp::from_millis(100));
        let plan: Vec<String> = sql
            .build_query_scalar()
            .fetch_all(&mut *c)
            .await
            .expect("explain");
        assert!(
            plan.iter().any(|line| line.contains(index)),
            "{query:?}: {plan:#?}"
        );
    }
}

/// Receipts older than the window go with later sends, a bounded number per send, so the
/// table holds about one window's keys without a sweeper. A key used again after its
/// window starts runs, and a replay of it then returns those runs only, not the ones the
/// key started a window before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_receipts_are_replaced_and_pruned_by_later_sends() {
    let (store, _db, home) = fresh_with("home").await;
    let old = 150;
    let first = Timestamp::from_millis(10);
    for i in 0..old {
        let runs = if i == 0 { vec![new_run(10)] } else { vec![] };
        store
            .enqueue(&home, &send(&format!("k{i}")), runs, first, &Actor::System)
            .await
            .expect("send");
    }
    let receipts = |store: Arc<PgStore>| async move {
        let mut c = store.acquire().await.expect("connection");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_receipts")
            .fetch_one(&mut *c)
            .await
            .expect("count");
        n
    };
    assert_eq!(receipts(store.clone()).await, old);
    let later = Timestamp::from_millis(10 + IDEMPOTENCY_WINDOW_MS + 1);
    // `k0` again, a window later: new runs, and the expired receipts go (the replaced
    // `k0` among the kept ones).
    let again = store
        .enqueue(
            &home,
            &send("k0"),
            vec![new_run(later.millis())],
            later,
            &Actor::System,
        )
        .await
        .expect("send");
    assert!(!again.replayed);
    let pruned = crate::runs::PRUNED_PER_SEND;
    assert_eq!(receipts(store.clone()).await, old - pruned);
    let replay = store
        .enqueue(
            &home,
            &send("k0"),
            vec![new_run(later.millis())],
            later,
            &Actor::System,
        )
        .await
        .expect("send");
    assert!(replay.replayed);
    assert_eq!(
        replay.runs, again.runs,
        "the runs of this window's send only"
    );
    store
        .enqueue(&home, &send("fresh"), vec![], later, &Actor::System)
        .await
        .expect("send");
    assert_eq!(
        receipts(store.clone()).await,
        2,
        "the rest of the expired receipts went: k0 and fresh stay"
    );
}

/// A run's completion by a key takes its environment's row (step 1) before the key's
/// (step 3), as every write into an environment does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_a_run_locks_its_environment_first() {
    let (store, db, home) = fresh_with("home").await;
    let key = runtime_key("ak_0c", "home", "hc");
    store
        .insert_api_key(&key, &Actor::System)
        .await
        .expect("key");
    store
        .enqueue(
            &home,
            &send("k"),
            vec![new_run(10)],
            Timestamp::from_millis(10),
            &Actor::System,
        )
        .await
        .expect("send");
    let leased = store
        .lease(&pull("home", 1), Timestamp::from_millis(20), &Actor::System)
        .await
        .expect("lease");
    let mut holder = hold_key_row(db.url(), &key).await;
    let finishing = {
        let (store, actor, id) = (store.clone(), key_actor(&key), leased[0].id.clone());
        tokio::spawn(async move {
            let done = RunOutcome::Succeeded { output: "1".into() };
            let at = Timestamp::from_millis(30);
            store
                .finish(&env("home"), &id, Some(1), done, at, &actor)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(environment_row_is_locked(db.url(), "home").await);
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");
    finishing.await.expect("task").expect("finished");
}

/// Runs leased and finished by a key of their environment while the environment is
/// deleted, many times over: completions take the environment's row first and leases wait
/// for no run, so nothing deadlocks (a deadlock would answer `Overloaded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_writes_racing_an_environment_deletion_do_not_deadlock() {
    let (store, _db) = fresh().await;
    for round in 0..20u32 {
        let home = incarnation("race");
        store
            .create_environment(&home, &Actor::System)
            .await
            .expect("create");
        let key = runtime_key(&format!("ak_{:x}", round + 1), "race", &format!("h{round}"));
        store
            .insert_api_key(&key, &Actor::System)
            .await
            .expect("key");
        let runs = (0..6).map(|_| new_run(10)).collect();
        let at = Timestamp::from_millis(10);
        store
            .enqueue(&home, &send("k"), runs, at, &Actor::System)
            .await
            .expect("send");
        let leased = store
            .lease(
                &pull("race", 3),
                Timestamp::from_millis(20),
                &key_actor(&key),
            )
            .await
            .expect("lease");
        let mut tasks = Vec::new();
        for run in leased {
            let (store, actor) = (store.clone(), key_actor(&key));
            tasks.push(tokio::spawn(async move {
                let done = RunOutcome::Succeeded { output: "1".into() };
                let at = Timestamp::from_millis(30);
                store
                    .finish(&env("race"), &run.id, Some(1), done, at, &actor)
                    .await
                    .map(drop)
            }));
        }
        for _ in 0..2 {
            let (store, actor) = (store.clone(), key_actor(&key));
            tasks.push(tokio::spawn(async move {
                let at = Timestamp::from_millis(30);
                store.lease(&pull("race", 2), at, &actor).await.map(drop)
            }));
        }
        let dropped = store.delete_environment(&home.name, &Actor::System).await;
        assert!(dropped.is_ok(), "round {round}: {dropped:?}");
        for t in tasks {
            let r = t.await.expect("task");
            assert!(
                matches!(
                    r,
                    Ok(()) | Err(StoreError::NotFound | StoreError::ActorRevoked)
                ),
                "round {round}: {r:?}"
            );
        }
    }
}
