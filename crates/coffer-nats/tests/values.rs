//! `NatsValues` against a real `nats-server` with JetStream: the value-store conformance
//! cases, the service's secret store (`ExternalSecrets` over SQLite) on it, a bucket per
//! incarnation, no plaintext in NATS, authentication, and an outage.
//!
//! Needs the `nats-server` binary (Debian/Ubuntu: `apt-get install nats-server`); without
//! it every test fails saying so. Each test starts its own server on a free port with a
//! temporary store directory, and kills it when done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use coffer_crypto::{Key, Keyring};
use coffer_nats::values::{NatsValueOptions, NatsValues};
use coffer_sqlite::SqliteStore;
use coffer_store::conformance::Environments;
use coffer_store::{
    Actor, EnvId, EnvName, Environment, ExternalSecrets, Precondition, SecretName, SecretStore,
    StoreError, StoredValue, Timestamp, ValueEntry, ValueExpect, ValueStore,
};
use secrecy::{ExposeSecret, SecretString};

mod common;
use common::{Server, WAIT, connect, free_port, options};

/// A fresh server and a value store on it.
async fn fresh_values() -> (Arc<NatsValues>, Server) {
    let server = Server::start(&[]);
    let values = connect(options(&server)).await;
    (Arc::new(values), server)
}

/// The service's secret store on NATS: metadata in SQLite, values in a fresh server.
async fn fresh_external() -> (
    Arc<ExternalSecrets<SqliteStore>>,
    (Server, tempfile::TempDir),
) {
    let (values, server) = fresh_values().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let index = SqliteStore::open(dir.path()).expect("open the catalog");
    let store = ExternalSecrets::new(Arc::new(index), values);
    (Arc::new(store), (server, dir))
}

coffer_store::value_store_conformance!(fresh_values());
coffer_store::secret_store_conformance!(fresh_external());

fn incarnation(name: &str, id: &str) -> Environment {
    Environment {
        name: EnvName::new(name).unwrap(),
        id: EnvId::new(id).unwrap(),
        created_at: Timestamp::from_millis(0),
    }
}

fn name(raw: &str) -> SecretName {
    SecretName::new(raw).unwrap()
}

fn entry(blob: &str, revision: u64) -> ValueEntry {
    ValueEntry {
        value: StoredValue::Sealed {
            key_version: coffer_crypto::KeyVersion::new(1).unwrap(),
            blob: blob.to_owned(),
        },
        revision,
        created_at: Timestamp::from_millis(1),
        updated_at: Timestamp::from_millis(2),
        write_id: format!("{revision:016x}"),
    }
}

async fn jetstream_of(server: &Server) -> jetstream::Context {
    jetstream::new(async_nats::connect(server.url()).await.unwrap())
}

async fn bucket_exists(js: &jetstream::Context, bucket: &str) -> bool {
    js.get_stream(format!("KV_{bucket}")).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_incarnation_gets_its_own_bucket_and_removal_deletes_only_its_own() {
    let (values, server) = fresh_values().await;
    let js = jetstream_of(&server).await;
    let old = incarnation("prod", "env_00000000000000aa");
    let new = incarnation("prod", "env_00000000000000bb");
    let legacy = incarnation("prod-eu", "env0_prod-eu");
    let n = name("DB_PASSWORD");
    for env in [&old, &new, &legacy] {
        values
            .write(env, &n, &entry("iv:ct:tag", 1), ValueExpect::Absent)
            .await
            .unwrap();
    }
    let buckets = [old, new, legacy].map(|e| values.bucket_name(&e));
    assert_eq!(
        buckets,
        [
            "coffer_env_00000000000000aa",
            "coffer_env_00000000000000bb",
            "coffer_env0_prod-eu"
        ]
    );
    for b in &buckets {
        assert!(bucket_exists(&js, b).await, "{b}");
    }
    let old = incarnation("prod", "env_00000000000000aa");
    assert_eq!(values.remove_environment(&old).await.unwrap(), 1);
    assert!(!bucket_exists(&js, &buckets[0]).await);
    assert!(bucket_exists(&js, &buckets[1]).await);
    assert!(bucket_exists(&js, &buckets[2]).await);
    assert_eq!(values.remove_environment(&old).await.unwrap(), 0);
    let new = incarnation("prod", "env_00000000000000bb");
    assert!(values.read(&new, &n, None).await.unwrap().is_some());
    assert!(values.read(&old, &n, None).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_by_revision_of_another_keys_message_finds_nothing() {
    let (values, _server) = fresh_values().await;
    let env = incarnation("a", "env_00000000000000cc");
    let a = values
        .write(&env, &name("A"), &entry("a::1", 1), ValueExpect::Absent)
        .await
        .unwrap();
    let b = values
        .write(&env, &name("B"), &entry("b::1", 1), ValueExpect::Absent)
        .await
        .unwrap();
    assert!(
        values
            .read(&env, &name("A"), Some(b))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        values
            .read(&env, &name("B"), Some(a))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        values
            .read(&env, &name("A"), Some(a))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        values
            .read(&env, &name("A"), Some(b + 100))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_bucket_creators_both_succeed() {
    let (values, _server) = fresh_values().await;
    let env = incarnation("a", "env_00000000000000dd");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (values, env) = (values.clone(), env.clone());
        tasks.push(tokio::spawn(async move {
            let n = name(&format!("S{i}"));
            values
                .write(&env, &n, &entry("x::y", 1), ValueExpect::Absent)
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every first writer succeeds");
    }
    assert_eq!(values.names(&env).await.unwrap().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_reaches_nats() {
    const CANARY: &str = "canary-plaintext-7f3e91c2";
    let (store, (server, _dir)) = fresh_external().await;
    let env = store.environment("prod").await;
    let n = name("API_TOKEN");
    let ring = Keyring::single(Key::from_bytes([7; 32]));
    let aad = format!("coffer:secret:{}:{}", env.id, n);
    let sealed = ring.seal(aad.as_bytes(), CANARY.as_bytes()).unwrap();
    let blob = sealed.blob.clone();
    let value = StoredValue::Sealed {
        key_version: sealed.key_version,
        blob: sealed.blob,
    };
    store
        .put(
            &env,
            &n,
            value,
            Precondition::None,
            Timestamp::now(),
            &Actor::System,
        )
        .await
        .unwrap();
    // Two revisions, so the history holds more than one message.
    let again = ring.seal(aad.as_bytes(), CANARY.as_bytes()).unwrap();
    store
        .put(
            &env,
            &n,
            StoredValue::Sealed {
                key_version: again.key_version,
                blob: again.blob,
            },
            Precondition::None,
            Timestamp::now(),
            &Actor::System,
        )
        .await
        .unwrap();

    let js = jetstream_of(&server).await;
    let mut stream = js
        .get_stream(format!("KV_coffer_{}", env.id))
        .await
        .expect("the incarnation's bucket");
    let info = stream.info().await.unwrap().state.clone();
    assert!(info.messages >= 2, "{info:?}");
    let mut saw_blob = false;
    for seq in info.first_sequence..=info.last_sequence {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        let mut raw = msg.subject.as_bytes().to_vec();
        raw.extend_from_slice(&msg.payload);
        raw.extend_from_slice(format!("{:?}", msg.headers).as_bytes());
        assert!(
            !raw.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "message {seq} holds the plaintext"
        );
        saw_blob |= raw.windows(blob.len()).any(|w| w == blob.as_bytes());
    }
    assert!(saw_blob, "the sealed blob was not among the messages read");
    // And the service reads it back.
    let got = store.get(&env, &n).await.unwrap().unwrap();
    let StoredValue::Sealed { key_version, blob } = got.value else {
        panic!("a sealed value came back as plaintext");
    };
    let opened = ring.open(key_version, &blob, aad.as_bytes()).unwrap();
    assert_eq!(&opened[..], CANARY.as_bytes());
}

/// Connecting with `set` credentials: the right ones work, wrong ones are refused as
/// unavailable without the secret in the message.
async fn check_auth(
    server: &Server,
    right: NatsValueOptions,
    wrong: NatsValueOptions,
    secret: &str,
) {
    let values = connect(right).await;
    values.ping().await.unwrap();
    let env = incarnation("a", "env_00000000000000ee");
    values
        .write(&env, &name("X"), &entry("x::1", 1), ValueExpect::Absent)
        .await
        .unwrap();
    let began = Instant::now();
    match NatsValues::connect(wrong).await {
        Ok(_) => panic!("wrong credentials were accepted by {}", server.url()),
        Err(StoreError::Unavailable(msg)) => {
            assert!(!msg.contains(secret), "the message shows the secret: {msg}");
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(began.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_server_takes_the_right_token_only() {
    let server = Server::start(&["--auth", "right-token-31c9"]);
    let mut right = options(&server);
    right.token = Some(SecretString::from("right-token-31c9"));
    let mut wrong = options(&server);
    wrong.token = Some(SecretString::from("wrong-token-88a1"));
    check_auth(&server, right, wrong, "wrong-token-88a1").await;
    let none = options(&server);
    assert!(matches!(
        NatsValues::connect(none).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_server_takes_the_right_password_only() {
    let server = Server::start(&["--user", "coffer", "--pass", "right-pass-5d20"]);
    let mut right = options(&server);
    right.user = Some("coffer".into());
    right.password = Some(SecretString::from("right-pass-5d20"));
    let mut wrong = options(&server);
    wrong.user = Some("coffer".into());
    wrong.password = Some(SecretString::from("wrong-pass-0b77"));
    check_auth(&server, right, wrong, "wrong-pass-0b77").await;
    // Credentials in the URL are cut out of messages too.
    let in_url = NatsValueOptions {
        url: format!("nats://coffer:wrong-pass-0b77@127.0.0.1:{}", server.port),
        ..options(&server)
    };
    match NatsValues::connect(in_url.clone()).await {
        Err(StoreError::Unavailable(msg)) => assert!(!msg.contains("wrong-pass-0b77"), "{msg}"),
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }
    assert!(!format!("{in_url:?}").contains("wrong-pass-0b77"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_fails_within_the_timeout() {
    let mut o = NatsValueOptions::new(&format!("nats://127.0.0.1:{}", free_port()));
    o.timeout = Duration::from_secs(1);
    let began = Instant::now();
    assert!(matches!(
        NatsValues::connect(o).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(began.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_calls_quickly_and_service_resumes_with_every_acknowledged_write() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let mut server = Server::start(&[]);
    let mut o = options(&server);
    o.timeout = TIMEOUT;
    let values = Arc::new(connect(o).await);
    let env = incarnation("a", "env_00000000000000ff");

    // A writer that keeps writing new keys, recording what was acknowledged and how long
    // each failure took.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (values, env, stop) = (values.clone(), env.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let n = name(&format!("K{i}"));
                let began = Instant::now();
                match values
                    .write(&env, &n, &entry(&format!("v::{i}"), 1), ValueExpect::Absent)
                    .await
                {
                    Ok(v) => acked.push((i, v, Instant::now())),
                    Err(e) => failures.push((began.elapsed(), e)),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acked, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    server.kill();

    // While it is down: every call fails as unavailable, each within a bound.
    for _ in 0..3 {
        let began = Instant::now();
        let read = values.read(&env, &name("K1"), None).await;
        assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
        assert!(began.elapsed() <= 3 * TIMEOUT, "{:?}", began.elapsed());
        let began = Instant::now();
        assert!(matches!(
            values.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(began.elapsed() <= 3 * TIMEOUT, "{:?}", began.elapsed());
    }
    // Long enough for the writer to fail more than once.
    tokio::time::sleep(3 * TIMEOUT).await;

    server.run();
    let restarted = Instant::now();
    let deadline = Instant::now() + WAIT;
    while values.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "service did not resume after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = restarted.elapsed();
    // Let the writer succeed again by itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failures) = writer.await.unwrap();

    assert!(!failures.is_empty(), "no write failed during the outage");
    let slowest = failures
        .iter()
        .map(|(took, _)| *took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{} writes acknowledged, {} failed during the outage (slowest failure {slowest:?}); \
         resumed {:?} after the restart",
        acked.len(),
        failures.len(),
        resumed
    );
    for (took, e) in &failures {
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        assert!(*took <= 3 * TIMEOUT, "a failing write took {took:?}");
    }
    assert!(
        acked.iter().any(|(_, _, at)| *at < killed),
        "nothing was written before the outage"
    );
    assert!(
        acked.iter().any(|(_, _, at)| *at > restarted),
        "no write succeeded by itself after the restart"
    );
    for (i, version, _) in &acked {
        let got = values
            .read(&env, &name(&format!("K{i}")), Some(*version))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write K{i} is lost"));
        let StoredValue::Sealed { blob, .. } = got.1.value else {
            panic!("K{i} came back as plaintext");
        };
        assert_eq!(blob, format!("v::{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_values_round_trip_flagged_as_plain() {
    let (values, _server) = fresh_values().await;
    let env = incarnation("a", "env_0000000000000abc");
    let plain = ValueEntry {
        value: StoredValue::Plain(SecretString::from("dev value")),
        revision: 1,
        created_at: Timestamp::from_millis(5),
        updated_at: Timestamp::from_millis(5),
        write_id: "0000000000000001".into(),
    };
    values
        .write(&env, &name("DEV"), &plain, ValueExpect::Any)
        .await
        .unwrap();
    let (_, got) = values
        .read(&env, &name("DEV"), None)
        .await
        .unwrap()
        .unwrap();
    match got.value {
        StoredValue::Plain(s) => assert_eq!(s.expose_secret(), "dev value"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_coffer_did_not_write_is_corrupt_without_echoing_it() {
    let (values, server) = fresh_values().await;
    let env = incarnation("a", "env_0000000000000def");
    values
        .write(&env, &name("OK"), &entry("a::1", 1), ValueExpect::Absent)
        .await
        .unwrap();
    let js = jetstream_of(&server).await;
    let subject = format!("$KV.{}.ODD", values.bucket_name(&env));
    js.publish(
        subject,
        r#"{"format":1,"kind":"plain","value":"leaked-4c1d"}"#.into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    match values.read(&env, &name("ODD"), None).await {
        Err(StoreError::Corrupt(msg)) => assert!(!msg.contains("leaked-4c1d"), "{msg}"),
        other => panic!("expected Corrupt, got {:?}", other.map(|f| f.is_some())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_another_node_deleted_reads_as_absent_and_a_write_creates_it_again() {
    let (node_a, server) = fresh_values().await;
    let node_b = connect(options(&server)).await;
    let js = jetstream_of(&server).await;
    let env = incarnation("prod", "env_0000000000000c0e");
    let bucket = node_a.bucket_name(&env);
    let n = name("CACHED");

    // Node A has the bucket's handle (it created the bucket and read through it).
    let v1 = node_a
        .write(&env, &n, &entry("a::1", 1), ValueExpect::Absent)
        .await
        .unwrap();
    assert!(node_a.read(&env, &n, Some(v1)).await.unwrap().is_some());

    // Node B purges the environment: A reads nothing, by version or latest, and lists
    // nothing, without creating the bucket.
    assert_eq!(node_b.remove_environment(&env).await.unwrap(), 1);
    assert!(node_a.read(&env, &n, Some(v1)).await.unwrap().is_none());
    assert!(node_a.read(&env, &n, None).await.unwrap().is_none());
    assert_eq!(node_a.names(&env).await.unwrap(), Vec::<SecretName>::new());
    assert!(!bucket_exists(&js, &bucket).await);

    // A write creates it again, as without a kept handle; B sees it.
    let v2 = node_a
        .write(&env, &n, &entry("a::2", 1), ValueExpect::Absent)
        .await
        .unwrap();
    let (_, got) = node_b.read(&env, &n, Some(v2)).await.unwrap().unwrap();
    assert!(matches!(got.value, StoredValue::Sealed { blob, .. } if blob == "a::2"));

    // Deleted again while A keeps the handle of the bucket it just created: A's next write
    // (no read before it) creates the bucket again too.
    assert_eq!(node_b.remove_environment(&env).await.unwrap(), 1);
    let v3 = node_a
        .write(&env, &n, &entry("a::3", 1), ValueExpect::Absent)
        .await
        .expect("a write after another node deleted the bucket");
    let (_, got) = node_b.read(&env, &n, None).await.unwrap().unwrap();
    assert!(matches!(got.value, StoredValue::Sealed { blob, .. } if blob == "a::3"));
    assert!(node_a.read(&env, &n, Some(v3)).await.unwrap().is_some());

    // Deleted and written again by B: A reads B's value, not an error or nothing.
    assert_eq!(node_b.remove_environment(&env).await.unwrap(), 1);
    node_b
        .write(&env, &n, &entry("b::1", 1), ValueExpect::Absent)
        .await
        .unwrap();
    let (_, got) = node_a.read(&env, &n, None).await.unwrap().unwrap();
    assert!(matches!(got.value, StoredValue::Sealed { blob, .. } if blob == "b::1"));

    // Deleted once more: removing a secret through A's stale handle neither fails nor
    // creates the bucket, and A's own purge finds nothing to count.
    assert_eq!(node_b.remove_environment(&env).await.unwrap(), 1);
    node_a.remove(&env, &n, None).await.unwrap();
    assert!(!bucket_exists(&js, &bucket).await);
    assert_eq!(node_a.remove_environment(&env).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_a_precondition_through_a_stale_handle_keeps_its_meaning() {
    let (node_a, server) = fresh_values().await;
    let node_b = connect(options(&server)).await;
    let env = incarnation("prod", "env_0000000000000c0f");
    let n = name("GUARDED");
    let v1 = node_a
        .write(&env, &n, &entry("a::1", 1), ValueExpect::Absent)
        .await
        .unwrap();
    assert_eq!(node_b.remove_environment(&env).await.unwrap(), 1);
    // The bucket is created again, empty: version v1 is not the latest there.
    assert!(matches!(
        node_a
            .write(&env, &n, &entry("a::2", 2), ValueExpect::Version(v1))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(node_a.read(&env, &n, None).await.unwrap().is_none());
}
