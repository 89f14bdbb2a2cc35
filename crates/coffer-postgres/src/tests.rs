//! Tests against a real PostgreSQL: `COFFER_TEST_DATABASE_URL` (`scripts/postgres.sh` prints
//! it). Each test makes a database of its own, so tests run in parallel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use coffer_store::{
    AccessStore, Actor, ApiKeyId, ApiKeyMeta, ApiKeyRecord, AuditQuery, BatchPut, ConfigStore,
    EnvName, Environment, JournalStore, KeyStore, Precondition, Role, SecretListing, SecretName,
    SecretStore, StoredValue, Timestamp,
};

use super::*;

use crate::testing::TestDatabase;

mod runtime;

/// A fresh, empty database on the test server.
async fn fresh_db() -> TestDatabase {
    TestDatabase::create().await
}

pub(crate) async fn fresh() -> (Arc<PgStore>, TestDatabase) {
    let db = fresh_db().await;
    let store = PgStore::connect(db.url(), PgOptions::default())
        .await
        .expect("connect to the test database");
    (Arc::new(store), db)
}

/// A fresh store holding the environment `name` (returned, with its incarnation).
async fn fresh_with(name: &str) -> (Arc<PgStore>, TestDatabase, Environment) {
    let (store, db) = fresh().await;
    let env = incarnation(name);
    store
        .create_environment(&env, &Actor::System)
        .await
        .expect("create");
    (store, db, env)
}

coffer_store::secret_store_conformance!(fresh());
coffer_store::catalog_conformance!(fresh());
coffer_store::config_store_conformance!(fresh());
coffer_store::unreadable_marks_conformance!(fresh());
coffer_store::runtime_conformance!(fresh());
coffer_store::orchestration_conformance!(fresh());

/// An environment with a fresh incarnation id (unique in this process).
fn incarnation(name: &str) -> Environment {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Environment {
        name: env(name),
        id: coffer_store::EnvId::new(&format!("env_{n:016x}")).expect("valid"),
        created_at: Timestamp::from_millis(1),
    }
}

fn env(name: &str) -> EnvName {
    EnvName::new(name).expect("valid")
}

fn admin_key(id: &str, hash: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        meta: ApiKeyMeta {
            id: ApiKeyId::new(id).expect("valid"),
            name: format!("key {id}"),
            role: Role::Admin,
            created_at: Timestamp::from_millis(1),
        },
        key_hash: hash.into(),
    }
}

/// Ten nodes starting at once on a new database: all start, and each migration is applied
/// (recorded) exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_starting_at_once_migrate_once() {
    let db = fresh_db().await;
    let starts: Vec<_> = (0..10)
        .map(|_| {
            let url = db.url().to_owned();
            tokio::spawn(async move { PgStore::connect(&url, PgOptions::default()).await })
        })
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.expect("task").expect("every node starts"));
    }
    let mut c = stores[0].acquire().await.expect("connection");
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT version, COUNT(*) FROM schema_migrations GROUP BY version ORDER BY version",
    )
    .fetch_all(&mut *c)
    .await
    .expect("read");
    let expected: Vec<(i64, i64)> = schema::MIGRATIONS
        .iter()
        .map(|m| (i64::from(m.version), 1))
        .collect();
    assert_eq!(rows, expected);
    let head: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal_head")
        .fetch_one(&mut *c)
        .await
        .expect("read");
    assert_eq!(head, 1, "the head row was inserted once");
}

/// Names list and compare in byte order whatever the database's collation: every name, key
/// and id column says `C`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ordered_name_column_compares_bytes() {
    let (store, _db) = fresh().await;
    let mut c = store.acquire().await.expect("connection");
    let not_c: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND data_type = 'text'
           AND column_name IN ('name', 'key', 'environment', 'id', 'key_hash')
           AND table_name NOT IN ('schema_migrations', 'audit_log')
           AND (table_name, column_name) <> ('api_keys', 'name') -- a label, never compared
           AND collation_name IS DISTINCT FROM 'C'",
    )
    .fetch_all(&mut *c)
    .await
    .expect("read");
    assert!(not_c.is_empty(), "{not_c:?}");
}

/// Every request connection in use: the next request waits `acquire_timeout`, then is
/// refused as overloaded (503), not queued without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_overloaded() {
    let db = fresh_db().await;
    let options = PgOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(300),
        ..PgOptions::default()
    };
    let store = PgStore::connect(db.url(), options).await.expect("connect");
    let held = (
        store.acquire().await.expect("first"),
        store.acquire().await.expect("second"),
    );
    let refused = store.get_environment(&env("default")).await;
    assert!(
        matches!(refused, Err(StoreError::Overloaded)),
        "{refused:?}"
    );
    drop(held);
    store
        .get_environment(&env("default"))
        .await
        .expect("served again once connections are free");
}

/// Resolutions of one key in one batch check the key once (`Tx::check_actor_once`), and a
/// revocation earlier in the same batch still refuses every resolution queued after it.
#[tokio::test]
async fn a_revocation_in_a_batch_refuses_the_resolutions_after_it() {
    use coffer_store::RunStore;
    let (store, _db, _) = fresh_with("default").await;
    let runtime = ApiKeyRecord {
        meta: ApiKeyMeta {
            id: ApiKeyId::new("ak_0e").expect("valid"),
            name: "worker".into(),
            role: Role::Runtime(env("default")),
            created_at: Timestamp::from_millis(1),
        },
        key_hash: "hr".into(),
    };
    store
        .insert_api_key(&runtime, &Actor::System)
        .await
        .expect("insert");
    let actor = Actor::Key {
        id: runtime.meta.id.clone(),
        environment: Some(env("default")),
        origin: Default::default(),
    };
    let resolution = coffer_store::Resolution {
        environment: env("default"),
        function_id: coffer_store::FunctionId::new("f").expect("valid"),
        run_id: None,
        resolved: vec![],
        missing: vec![],
        at: Timestamp::from_millis(2),
    };
    // One batch: on this one-thread runtime (keep it so) the spawned writes all queue, in
    // spawn order, before the writer task (woken by the first) takes what is queued.
    let resolve = |store: Arc<PgStore>| {
        let (r, a) = (resolution.clone(), actor.clone());
        tokio::spawn(async move { store.record_resolutions(&[r], &a).await })
    };
    let before = [resolve(store.clone()), resolve(store.clone())];
    let revoke = {
        let (store, id) = (store.clone(), runtime.meta.id.clone());
        tokio::spawn(async move { store.delete_api_key(&id, &Actor::System).await })
    };
    let after = [resolve(store.clone()), resolve(store.clone())];
    for done in before {
        done.await
            .expect("task")
            .expect("resolved before the revocation");
    }
    revoke.await.expect("task").expect("revoked");
    for done in after {
        let refused = done.await.expect("task");
        assert!(
            matches!(refused, Err(StoreError::ActorRevoked)),
            "a resolution after the revocation: {refused:?}"
        );
    }
    let query = AuditQuery {
        action: Some("function.resolved".into()),
        ..AuditQuery::default()
    };
    let (rows, _) = store.audit(&query, 100).await.expect("audit");
    let resolved = rows.len();
    assert_eq!(
        resolved, 2,
        "only the two before the revocation are on the record"
    );
}

/// A claim and a run's end that change a run they then cannot read back (a row this
/// build cannot parse: here a function id with a space) fail their batch: the run stays as
/// it was, with no audit row, rather than changed without one.
#[tokio::test]
async fn a_run_changed_but_unreadable_is_not_committed_without_its_audit_row() {
    use coffer_store::RunStore;
    let (store, _db, default) = fresh_with("default").await;
    let (queued, running) = ("run_00000000000000a1", "run_00000000000000a2");
    for (id, status, lease, attempts) in [
        (queued, "queued", None, 0_i64),
        (running, "running", Some(1_000_000_i64), 1),
    ] {
        sqlx::query(
            "INSERT INTO runs (id, environment, environment_id, function_id, mode, event_name,
                 event_data, trigger_params, status, attempts, lease_expires_at,
                 next_attempt_at, created_at, updated_at)
             VALUES ($1, 'default', $2, 'not an id', 'pull', 'e', 'null', '{}', $3, $4, $5,
                 0, 1, 1)",
        )
        .bind(id)
        .bind(default.id.as_str())
        .bind(status)
        .bind(attempts)
        .bind(lease)
        .execute(&store.db.pool)
        .await
        .expect("insert a row by hand");
    }
    let head = store.audit_head().await.expect("head");
    let claimed = store
        .lease_claimed(
            vec![coffer_store::Claim {
                environment: env("default"),
                id: coffer_store::RunId::new(queued).expect("valid"),
                attempts: 0,
                resolution: None,
            }],
            Timestamp::from_millis(2_000),
            Timestamp::from_millis(10),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(claimed, Err(StoreError::Unavailable(_))),
        "{claimed:?}"
    );
    let ended = store
        .finish(
            &env("default"),
            &coffer_store::RunId::new(running).expect("valid"),
            Some(1),
            coffer_store::RunOutcome::Succeeded { output: "1".into() },
            Timestamp::from_millis(20),
            &Actor::System,
        )
        .await;
    assert!(
        matches!(ended, Err(StoreError::Unavailable(_))),
        "{ended:?}"
    );
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, attempts FROM runs ORDER BY id")
        .fetch_all(&store.db.pool)
        .await
        .expect("read");
    assert_eq!(
        rows,
        [("queued".to_owned(), 0), ("running".to_owned(), 1)],
        "neither change was committed"
    );
    assert_eq!(store.audit_head().await.expect("head"), head);
}

/// An `Atomic` write (no savepoint) that changed rows and then fails fails its batch: its
/// change is not committed without its journal rows.
#[tokio::test]
async fn an_atomic_write_that_fails_after_it_wrote_commits_nothing() {
    let (store, _db, default) = fresh_with("default").await;
    let head = store.last_event_id().await.expect("head");
    let failed = store
        .write_as(writer::Kind::Atomic, |mut tx| {
            Box::pin(async move {
                sqlx::query("UPDATE environments SET created_at = 999 WHERE name = 'default'")
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.wrote();
                Err::<(), _>(StoreError::Corrupt("a row that cannot be read".into()))
            })
        })
        .await;
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "the batch fails: {failed:?}"
    );
    let now = store
        .get_environment(&default.name)
        .await
        .expect("read")
        .expect("still there");
    assert_eq!(
        now.created_at, default.created_at,
        "the change was not committed"
    );
    assert_eq!(store.last_event_id().await.expect("head"), head);
    // The writer goes on.
    store
        .put_config(
            &default.name,
            &coffer_store::ConfigKey::new("AFTER").expect("valid"),
            "1".into(),
            Precondition::None,
            Timestamp::from_millis(5),
            &Actor::System,
        )
        .await
        .expect("a later write commits");
}

/// A write that fails inside its one statement (a database error, here its statement timing
/// out on a row another session holds) leaves its batch's transaction broken: the whole
/// batch fails, so no write of it is reported done without being committed. Checked over
/// rounds of config writes racing such a put: every write reported done is in the
/// database, every write refused is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_broken_inside_its_statement_fails_its_batch_not_silently() {
    use sqlx::Connection;
    let db = fresh_db().await;
    let options = PgOptions {
        statement_timeout: Duration::from_millis(300),
        ..PgOptions::default()
    };
    let store = Arc::new(PgStore::connect(db.url(), options).await.expect("connect"));
    let default = incarnation("default");
    store
        .create_environment(&default, &Actor::System)
        .await
        .expect("create");
    let held = SecretName::new("HELD").expect("valid");
    let value = || StoredValue::Sealed {
        key_version: coffer_crypto::KeyVersion::new(1).expect("positive"),
        blob: "iv:ct:tag".into(),
    };
    store
        .put(
            &default,
            &held,
            value(),
            Precondition::None,
            Timestamp::from_millis(1),
            &Actor::System,
        )
        .await
        .expect("first put");
    let mut holder = sqlx::PgConnection::connect(db.url()).await.expect("holder");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT 1 FROM secrets WHERE name = 'HELD' FOR UPDATE")
        .execute(&mut holder)
        .await
        .expect("hold the row");
    let mut reported = Vec::new();
    for round in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (store, e, held) = (store.clone(), default.clone(), held.clone());
            tasks.push(tokio::spawn(async move {
                if i == 3 {
                    let put = store.put(
                        &e,
                        &held,
                        value(),
                        Precondition::None,
                        Timestamp::from_millis(2),
                        &Actor::System,
                    );
                    assert!(put.await.is_err(), "the held row's put cannot succeed");
                    None
                } else {
                    let key =
                        coffer_store::ConfigKey::new(&format!("K{round}_{i}")).expect("valid");
                    let done = store
                        .put_config(
                            &e.name,
                            &key,
                            "1".into(),
                            Precondition::None,
                            Timestamp::from_millis(2),
                            &Actor::System,
                        )
                        .await
                        .is_ok();
                    Some((key, done))
                }
            }));
        }
        for t in tasks {
            if let Some(r) = t.await.expect("task") {
                reported.push(r);
            }
        }
    }
    drop(holder);
    for (key, done) in &reported {
        let stored = store.get_config(&default.name, key).await.expect("read");
        assert_eq!(stored.is_some(), *done, "{key:?}: reported done = {done}");
    }
}

/// A pooled connection that died while idle (the server ended its session) is replaced
/// before use, not handed to a request: connections idle for a few seconds are pinged
/// first. (The listening connection is left alone, so nothing else warns the pool.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_that_died_is_replaced_before_use() {
    use sqlx::Connection;
    let db = fresh_db().await;
    let store = PgStore::connect(db.url(), PgOptions::default())
        .await
        .expect("connect");
    store
        .get_environment(&env("default"))
        .await
        .expect("a read leaves a connection in the pool");
    let mut killer = sqlx::PgConnection::connect(db.url()).await.expect("killer");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'coffer'
           AND query NOT LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut killer)
    .await
    .expect("terminate");
    assert!(!killed.is_empty(), "the pool's connection was found");
    tokio::time::sleep(PING_IDLE + Duration::from_millis(500)).await;
    assert!(!store.db.recheck.active(), "nothing warned the pool");
    store
        .get_environment(&env("default"))
        .await
        .expect("served on a live connection");
}

/// No server at the address: `connect` fails as unavailable within its timeout, and the
/// error does not show the URL (it may hold a password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://coffer:hunter2@127.0.0.1:{port}/coffer");
    let options = PgOptions {
        acquire_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(2),
        ..PgOptions::default()
    };
    let started = std::time::Instant::now();
    let refused = PgStore::connect(&url, options).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    match refused {
        Err(StoreError::Unavailable(msg)) => assert!(!msg.contains("hunter2"), "{msg}"),
        Err(other) => panic!("expected unavailable, got {other:?}"),
        Ok(_) => panic!("expected unavailable, got a store"),
    }
}

/// Each connection runs with the configured `statement_timeout`; a statement past it is
/// cut off and reported as unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_past_the_timeout_are_cut_off() {
    let db = fresh_db().await;
    let options = PgOptions {
        statement_timeout: Duration::from_millis(250),
        ..PgOptions::default()
    };
    let store = PgStore::connect(db.url(), options).await.expect("connect");
    let mut c = store.acquire().await.expect("connection");
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&mut *c)
        .await
        .expect("show");
    assert_eq!(shown, "250ms");
    let slow = sqlx::query("SELECT pg_sleep(2)")
        .execute(&mut *c)
        .await
        .map_err(crate::db);
    assert!(
        matches!(&slow, Err(StoreError::Unavailable(m)) if m.contains("statement timeout")),
        "{slow:?}"
    );
}

/// Two nodes on one database: a commit on one wakes the other's watch (LISTEN/NOTIFY), and
/// both read the same outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_commit_wakes_the_watch() {
    let db = fresh_db().await;
    let a = PgStore::connect(db.url(), PgOptions::default())
        .await
        .expect("a");
    let b = PgStore::connect(db.url(), PgOptions::default())
        .await
        .expect("b");
    let mut watch = b.watch_events();
    assert_eq!(*watch.borrow_and_update(), 0);
    // The listener may still be subscribing: write until b hears one (bounded).
    let mut heard = false;
    for i in 0..20 {
        let prod = incarnation(&format!("e{i}"));
        a.create_environment(&prod, &Actor::System)
            .await
            .expect("create");
        if tokio::time::timeout(Duration::from_millis(500), watch.changed())
            .await
            .is_ok()
        {
            heard = true;
            break;
        }
    }
    assert!(heard, "b never heard a's commits");
    let seen = *watch.borrow();
    assert!(seen >= 1);
    let events = b.events_after(0, 100).await.expect("events");
    assert_eq!(events.first().map(|e| e.id), Some(1));
    assert!(events.iter().any(|e| e.id == seen));
}

/// Two nodes journaling at once: sequence numbers follow commit order with no gaps, the
/// hash chain holds row after row, and every event id appears once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_journal_one_gapless_chain() {
    let db = fresh_db().await;
    let nodes = [
        Arc::new(
            PgStore::connect(db.url(), PgOptions::default())
                .await
                .expect("a"),
        ),
        Arc::new(
            PgStore::connect(db.url(), PgOptions::default())
                .await
                .expect("b"),
        ),
    ];
    let default = incarnation("default");
    nodes[0]
        .create_environment(&default, &Actor::System)
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for t in 0..2 {
            let (node, e) = (node.clone(), default.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..40 {
                    let name = SecretName::new(&format!("S{n}_{t}_{}", i % 5)).expect("valid");
                    let value = StoredValue::Sealed {
                        key_version: coffer_crypto::KeyVersion::new(1).expect("positive"),
                        blob: "iv:ct:tag".into(),
                    };
                    let at = Timestamp::from_millis(i);
                    node.put(&e, &name, value, Precondition::None, at, &Actor::System)
                        .await
                        .expect("put");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let (rows, more) = nodes[1]
        .audit(&AuditQuery::default(), 1_000)
        .await
        .expect("audit");
    assert!(more.is_none());
    let rows = &rows[1..]; // after the environment's creation
    assert_eq!(rows.len(), 160);
    let (first, _) = nodes[1]
        .audit(&AuditQuery::default(), 1)
        .await
        .expect("audit");
    let mut prev = first[0].hash.clone();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.seq, i as u64 + 2, "no gap");
        assert_eq!(row.prev_hash, prev, "chained at {}", row.seq);
        assert_eq!(row.hash, row.expected_hash(), "hash of {}", row.seq);
        assert_eq!(row.event, Some(row.seq), "one event per write, in order");
        assert!(row.action.starts_with("secret."));
        prev = row.hash.clone();
    }
    assert_eq!(nodes[0].audit_head().await.expect("head"), (161, prev));
    assert_eq!(nodes[0].audit_rows_past_head().await.expect("past"), 0);
    let ids: Vec<u64> = nodes[0]
        .events_after(0, 1_000)
        .await
        .expect("events")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, (1..=161).collect::<Vec<_>>());
}

/// Writes queued together share one transaction (see `writer`): of 16 create-only puts of
/// one secret exactly one lands; 16 imports whose second entry is refused leave nothing of
/// their first; and the journal holds exactly the kept writes, one gapless chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_each_write_or_rolls_it_back_alone() {
    let (store, _db, default) = fresh_with("default").await;
    let value = || StoredValue::Sealed {
        key_version: coffer_crypto::KeyVersion::new(1).expect("positive"),
        blob: "iv:ct:tag".into(),
    };
    let name = |n: &str| SecretName::new(n).expect("valid");
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (store, e) = (store.clone(), default.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let once = name("ONCE");
                let put = store.put(
                    &e,
                    &once,
                    value(),
                    Precondition::Absent,
                    Timestamp::from_millis(2),
                    &Actor::System,
                );
                put.await.map(|_| ()).map_err(|e| e.to_string())
            } else {
                let batch = vec![
                    BatchPut {
                        name: name(&format!("FIRST_{i}")),
                        value: Some(value()),
                        precondition: Precondition::None,
                    },
                    BatchPut {
                        name: name("MISSING"),
                        value: Some(value()),
                        precondition: Precondition::Revision(7),
                    },
                ];
                let import = store.put_many(&e, batch, Timestamp::from_millis(2), &Actor::System);
                import.await.map(|_| ()).map_err(|e| e.to_string())
            }
        }));
    }
    let mut landed = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match (i % 2, t.await.expect("task")) {
            (0, Ok(())) => landed += 1,
            (0, Err(e)) => assert!(e.contains("conflict"), "{e}"),
            (_, Ok(())) => panic!("an import with a refused entry landed"),
            (_, Err(e)) => assert!(e.contains("conflict"), "{e}"),
        }
    }
    assert_eq!(landed, 1, "one create-only put lands");
    let listed = store
        .list(&default, &SecretListing::default(), 100)
        .await
        .expect("list");
    let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["ONCE"], "nothing of the refused imports");
    let (rows, _) = store
        .audit(&AuditQuery::default(), 100)
        .await
        .expect("audit");
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["environment.created", "secret.created"]);
    assert_eq!(rows[1].prev_hash, rows[0].hash);
    assert_eq!(rows[1].hash, rows[1].expected_hash());
    assert_eq!(store.audit_head().await.expect("head").0, 2);
    let ids: Vec<u64> = store
        .events_after(0, 100)
        .await
        .expect("events")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [1, 2]);
}

/// The revision `store` reads for `name` in `env`: `None` without such an environment,
/// `Some(None)` without such a secret.
async fn revision_on(store: &PgStore, env: &EnvName, name: &SecretName) -> Option<Option<u64>> {
    let catalog: &dyn AccessStore = store;
    store
        .meta_in(catalog, env, name)
        .await
        .expect("read")
        .map(|(_, meta)| meta.map(|m| m.revision))
}

/// A metadata read on one node answers from its cache only what is as fresh as the
/// database (see `reads`): a write acknowledged on another node is read at once, every time;
/// an environment deleted there is gone here at once; and writes that change no secret
/// metadata (config) leave the cache as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_metadata_read_never_misses_a_write_acknowledged_elsewhere() {
    let db = fresh_db().await;
    let a = PgStore::connect(db.url(), PgOptions::default())
        .await
        .expect("a");
    let b = PgStore::connect(db.url(), PgOptions::default())
        .await
        .expect("b");
    let default = incarnation("default");
    a.create_environment(&default, &Actor::System)
        .await
        .expect("create");
    let name = SecretName::new("ROTATED").expect("valid");
    let value = || StoredValue::Sealed {
        key_version: coffer_crypto::KeyVersion::new(1).expect("positive"),
        blob: "iv:ct:tag".into(),
    };
    assert_eq!(
        revision_on(&b, &default.name, &name).await,
        Some(None),
        "not written yet"
    );
    for i in 1..=100u64 {
        // Reads on B keep its cache warm between the writes.
        for _ in 0..3 {
            revision_on(&b, &default.name, &name).await;
        }
        let out = a
            .put(
                &default,
                &name,
                value(),
                Precondition::None,
                Timestamp::from_millis(i64::try_from(i).expect("small")),
                &Actor::System,
            )
            .await
            .expect("put");
        assert_eq!(out.meta.revision, i);
        assert_eq!(
            revision_on(&b, &default.name, &name).await,
            Some(Some(i)),
            "B reads write {i} at once"
        );
    }
    // A config write publishes an event but changes no secret metadata: kept.
    let epoch = b.meta_cache.epoch();
    a.put_config(
        &default.name,
        &coffer_store::ConfigKey::new("LIMIT").expect("valid"),
        "1".into(),
        Precondition::None,
        Timestamp::from_millis(500),
        &Actor::System,
    )
    .await
    .expect("config");
    assert_eq!(revision_on(&b, &default.name, &name).await, Some(Some(100)));
    assert_eq!(
        b.meta_cache.epoch(),
        epoch,
        "a config write leaves the cache"
    );
    a.delete_environment(&default.name, &Actor::System)
        .await
        .expect("delete");
    assert_eq!(
        revision_on(&b, &default.name, &name).await,
        None,
        "the environment is gone on B at once"
    );
    let again = incarnation("default");
    a.create_environment(&again, &Actor::System)
        .await
        .expect("create again");
    assert_eq!(
        revision_on(&b, &default.name, &name).await,
        Some(None),
        "nothing of the old incarnation"
    );
}

/// The audit log reads back as written, through its filters and pages; denials are
/// audited (not published) with the key's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_pages_filter_and_denials_read_back() {
    let (store, _db) = fresh().await;
    let admin = admin_key("ak_01", "h1");
    assert!(
        store
            .bootstrap(&incarnation("default"), &admin)
            .await
            .expect("bootstrap")
    );
    store
        .record_denials(vec![coffer_store::Denial {
            at: Timestamp::from_millis(5),
            key_id: Some(admin.meta.id.clone()),
            route: "GET /v1/audit".into(),
            environment: None,
            status: 403,
            origin: coffer_store::Origin::new(Some("127.0.0.1:1".into()), Some("ua")),
            count: 3,
        }])
        .await
        .expect("denials");
    let (all, more) = store
        .audit(&AuditQuery::default(), 10)
        .await
        .expect("audit");
    assert!(more.is_none());
    assert_eq!(all.len(), 3);
    let denial = &all[2];
    assert_eq!(denial.result, coffer_store::AuditResult::Denied);
    assert_eq!(denial.actor.key_name.as_deref(), Some("key ak_01"));
    assert_eq!(
        (denial.count, denial.status, denial.event),
        (3, Some(403), None)
    );
    assert_eq!(denial.hash, denial.expected_hash());
    let (first, cursor) = store.audit(&AuditQuery::default(), 1).await.expect("page");
    assert_eq!((first.len(), cursor), (1, Some(1)));
    let query = AuditQuery {
        result: Some(coffer_store::AuditResult::Allowed),
        ..AuditQuery::default()
    };
    let (allowed, _) = store.audit(&query, 10).await.expect("filtered");
    assert_eq!(allowed.len(), 2);
    assert_eq!(store.last_event_id().await.expect("last"), 2);
    store.set_relay_position("nats", 2).await.expect("set");
    store.set_relay_position("nats", 1).await.expect("set");
    assert_eq!(
        store.relay_position("nats").await.expect("get"),
        2,
        "never back"
    );
    assert_eq!(store.relay_position("other").await.expect("get"), 0);
}

/// A node that stalls inside a write, holding the journal head's lock (as a paused process
/// would): the server ends its session after `idle_in_transaction_timeout`, and another
/// node's write goes through well before its own statement timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_holding_the_head_is_cut_off() {
    let db = fresh_db().await;
    let options = PgOptions {
        idle_in_transaction_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_secs(5),
        ..PgOptions::default()
    };
    let stalled = PgStore::connect(db.url(), options.clone())
        .await
        .expect("stalled node");
    let writer = PgStore::connect(db.url(), options).await.expect("writer");
    let mut tx = stalled.db.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM journal_head WHERE id = 1 FOR UPDATE")
        .execute(&mut *tx)
        .await
        .expect("lock the head");
    // The stalled node now does nothing, its transaction open.
    let started = std::time::Instant::now();
    writer
        .create_environment(&incarnation("after-stall"), &Actor::System)
        .await
        .expect("the write goes through once the stalled session is ended");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // The stalled session is gone: its transaction can no longer commit.
    assert!(tx.commit().await.is_err());
    let mut c = writer.acquire().await.expect("connection");
    let keepalive: String = sqlx::query_scalar("SHOW tcp_keepalives_idle")
        .fetch_one(&mut *c)
        .await
        .expect("show");
    // 0 means the setting does not apply (a Unix socket); over TCP it is ours.
    assert!(keepalive == "10" || keepalive == "0", "{keepalive}");
}

/// An admin key actor for `key`.
fn admin_actor(key: &ApiKeyRecord) -> Actor {
    Actor::Key {
        id: key.meta.id.clone(),
        environment: None,
        origin: coffer_store::Origin::default(),
    }
}

/// Whether another session holds a lock on `env`'s row that conflicts with `FOR UPDATE`.
async fn environment_row_is_locked(url: &str, env: &str) -> bool {
    use sqlx::Connection;
    let mut probe = sqlx::PgConnection::connect(url).await.expect("probe");
    let tried = sqlx::query("SELECT 1 FROM environments WHERE name = $1 FOR UPDATE NOWAIT")
        .bind(env)
        .execute(&mut probe)
        .await;
    match tried {
        Ok(_) => false,
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("55P03") => true,
        Err(e) => panic!("probe failed: {e}"),
    }
}

/// Holds `key`'s row `FOR UPDATE` on a connection of its own (as a revocation would), so a
/// write by that key stops at its actor check (step 3) with whatever it locked before.
async fn hold_key_row(url: &str, key: &ApiKeyRecord) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect(url).await.expect("holder");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE")
        .bind(key.meta.id.as_str())
        .execute(&mut holder)
        .await
        .expect("lock the key");
    holder
}

/// A deletion of an environment locks the environment's row (step 1) before its actor's
/// (step 3), as every other write does; the other way round, three sessions could deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_environment_locks_it_before_the_actor() {
    let (store, db) = fresh().await;
    let admin = admin_key("ak_01", "h1");
    store
        .bootstrap(&incarnation("default"), &admin)
        .await
        .expect("bootstrap");
    store
        .create_environment(&incarnation("doomed"), &Actor::System)
        .await
        .expect("create");
    let mut holder = hold_key_row(db.url(), &admin).await;
    let deleting = {
        let (store, actor) = (store.clone(), admin_actor(&admin));
        tokio::spawn(async move { store.delete_environment(&env("doomed"), &actor).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        environment_row_is_locked(db.url(), "doomed").await,
        "the environment is locked while the deletion waits for its actor"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");
    deleting.await.expect("task").expect("deleted");
}

/// A secret's deletion takes the incarnation's row (step 1) first, as a put does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_secret_locks_its_environment_first() {
    let (store, db) = fresh().await;
    let admin = admin_key("ak_01", "h1");
    let home = incarnation("home");
    store.bootstrap(&home, &admin).await.expect("bootstrap");
    let name = SecretName::new("s").expect("valid");
    store
        .put(
            &home,
            &name,
            StoredValue::Plain("v".to_owned().into()),
            Precondition::None,
            Timestamp::now(),
            &Actor::System,
        )
        .await
        .expect("put");
    let mut holder = hold_key_row(db.url(), &admin).await;
    let deleting = {
        let (store, actor, home, name) = (store.clone(), admin_actor(&admin), home.clone(), name);
        tokio::spawn(async move { store.delete(&home, &name, Precondition::None, &actor).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(environment_row_is_locked(db.url(), "home").await);
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");
    deleting.await.expect("task").expect("deleted");
}

/// A secret with an unreadable mark, deleted while its environment is deleted and while a
/// check of it is recorded, many times over: every write takes the secret's row before its
/// mark, so none deadlocks (a deadlock would answer `Overloaded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_and_environment_deletions_with_marks_do_not_deadlock() {
    let (store, _db) = fresh().await;
    let names: Vec<SecretName> = (0..4)
        .map(|i| SecretName::new(&format!("s{i}")).expect("valid"))
        .collect();
    for round in 0..40 {
        let home = incarnation("race");
        store
            .create_environment(&home, &Actor::System)
            .await
            .expect("create");
        let mut checks = Vec::new();
        for name in &names {
            let out = store
                .put(
                    &home,
                    name,
                    StoredValue::Plain("v".to_owned().into()),
                    Precondition::None,
                    Timestamp::now(),
                    &Actor::System,
                )
                .await
                .expect("put");
            checks.push(coffer_store::ValueCheck {
                environment: home.name.clone(),
                environment_id: home.id.clone(),
                name: name.clone(),
                revision: out.meta.revision,
                key_version: 0,
                opened: false,
            });
        }
        store.record_checks(&checks, None).await.expect("marks");
        let deletes = names.iter().rev().map(|name| {
            let (store, home, name) = (store.clone(), home.clone(), name.clone());
            tokio::spawn(async move {
                store
                    .delete(&home, &name, Precondition::None, &Actor::System)
                    .await
            })
        });
        let deletes: Vec<_> = deletes.collect();
        let checking = {
            let (store, checks) = (store.clone(), checks.clone());
            tokio::spawn(async move { store.record_checks(&checks, None).await })
        };
        let dropped = store.delete_environment(&home.name, &Actor::System).await;
        assert!(dropped.is_ok(), "round {round}: {dropped:?}");
        for d in deletes {
            let d = d.await.expect("task");
            assert!(
                matches!(d, Ok(_) | Err(StoreError::NotFound)),
                "round {round}: {d:?}"
            );
        }
        let c = checking.await.expect("task");
        assert!(c.is_ok(), "round {round}: {c:?}");
    }
}

/// A database whose default isolation is `repeatable read`: the store's sessions still run
/// READ COMMITTED, so concurrent unconditional puts of one secret all succeed, each with a
/// revision of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stricter_database_default_isolation_is_overridden() {
    use sqlx::Connection;
    let db = fresh_db().await;
    let name = db.url().rsplit('/').next().expect("a database name");
    let name = name.split('?').next().expect("a database name").to_owned();
    let mut admin = sqlx::PgConnection::connect(db.url()).await.expect("admin");
    sqlx::query(&format!(
        "ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'"
    ))
    .execute(&mut admin)
    .await
    .expect("alter");
    let store = Arc::new(
        PgStore::connect(db.url(), PgOptions::default())
            .await
            .expect("connect"),
    );
    let mut c = store.acquire().await.expect("connection");
    let level: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&mut *c)
        .await
        .expect("show");
    assert_eq!(level, "read committed");
    drop(c);
    let home = incarnation("home");
    store
        .create_environment(&home, &Actor::System)
        .await
        .expect("create");
    let secret = SecretName::new("s").expect("valid");
    let puts: Vec<_> = (0..12)
        .map(|_| {
            let (store, home, secret) = (store.clone(), home.clone(), secret.clone());
            tokio::spawn(async move {
                store
                    .put(
                        &home,
                        &secret,
                        StoredValue::Plain("v".to_owned().into()),
                        Precondition::None,
                        Timestamp::now(),
                        &Actor::System,
                    )
                    .await
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for p in puts {
        revisions.push(
            p.await
                .expect("task")
                .expect("every put succeeds")
                .meta
                .revision,
        );
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=12).collect::<Vec<_>>());
}

/// A timed-out acquire is an unreachable server only with evidence of one (no connection
/// at all, or a failed connect since the last that opened); a pool with connections that
/// were all busy is overloaded, however many are idle by the time the timeout is read.
#[test]
fn a_timed_out_acquire_is_unavailable_only_on_evidence() {
    assert!(matches!(
        super::timed_out(0, false),
        StoreError::Unavailable(_)
    ));
    assert!(matches!(
        super::timed_out(3, true),
        StoreError::Unavailable(_)
    ));
    // Fewer connections than the maximum, or some idle again: still a busy pool.
    assert!(matches!(super::timed_out(3, false), StoreError::Overloaded));
    assert!(matches!(
        super::timed_out(16, false),
        StoreError::Overloaded
    ));
}

/// The server ends a node's listening connection: the node listens again (after its
/// backoff) and hears the other node's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_cut_off_by_the_server_listens_again() {
    use sqlx::Connection;
    let db = fresh_db().await;
    let a = PgStore::connect(db.url(), PgOptions::default())
        .await
        .expect("a");
    let b = PgStore::connect(db.url(), PgOptions::default())
        .await
        .expect("b");
    let name = db.url().rsplit('/').next().expect("name");
    let name = name.split('?').next().expect("name").to_owned();
    let mut admin = sqlx::PgConnection::connect(db.url()).await.expect("admin");
    // Both nodes' listeners (the only sessions that ran LISTEN) are ended, until none is left.
    let mut ended = 0;
    for _ in 0..50 {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .expect("terminate");
        ended += n;
        if ended >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended >= 2, "found {ended} listeners");
    let mut watch = b.watch_events();
    watch.borrow_and_update();
    let mut heard = false;
    for i in 0..20 {
        a.create_environment(&incarnation(&format!("e{i}")), &Actor::System)
            .await
            .expect("create");
        if tokio::time::timeout(Duration::from_millis(500), watch.changed())
            .await
            .is_ok()
        {
            heard = true;
            break;
        }
    }
    assert!(
        heard,
        "b never heard a's commits after its listener was cut off"
    );
}

/// A database a newer binary migrated (a version this one does not know) is refused at
/// start-up, and left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused() {
    let (store, db) = fresh().await;
    let newer = schema::MIGRATIONS
        .iter()
        .map(|m| i64::from(m.version))
        .max()
        .expect("a migration")
        + 1;
    let mut c = store.acquire().await.expect("connection");
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'future', 0)",
    )
    .bind(newer)
    .execute(&mut *c)
    .await
    .expect("insert");
    drop(c);
    match PgStore::connect(db.url(), PgOptions::default()).await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("newer"), "{msg}"),
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
    let mut c = store.acquire().await.expect("connection");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(&mut *c)
        .await
        .expect("count");
    assert_eq!(rows as usize, schema::MIGRATIONS.len() + 1);
}

/// An audit row past the head (the journal damaged): a write fails as corrupt, not as an
/// `AlreadyExists` the API would answer with a misleading 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_past_the_head_are_corrupt_not_a_conflict() {
    let (store, _db) = fresh().await;
    store
        .create_environment(&incarnation("first"), &Actor::System)
        .await
        .expect("create");
    let mut c = store.acquire().await.expect("connection");
    // A copy of the last row, one past the head.
    // Several statements: the simple-query protocol.
    sqlx::Executor::execute(
        &mut *c,
        "CREATE TEMP TABLE stray AS SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1;
         UPDATE stray SET seq = seq + 1;
         INSERT INTO audit_log SELECT * FROM stray",
    )
    .await
    .expect("a stray row");
    drop(c);
    assert_eq!(store.audit_rows_past_head().await.expect("count"), 1);
    let refused = store
        .create_environment(&incarnation("second"), &Actor::System)
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Corrupt(m)) if m.contains("audit_log_pkey")),
        "{refused:?}"
    );
}
