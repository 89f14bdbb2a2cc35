//! Sequential reads and writes against a local `nats-server`: prints operations per second
//! and mean latency (`cargo test -p coffer-nats --test throughput -- --nocapture`). Figures
//! only, nothing asserted but that every operation succeeds: they depend on the machine.

use std::time::{Duration, Instant};

use coffer_store::{
    EnvId, EnvName, Environment, SecretName, StoredValue, Timestamp, ValueEntry, ValueExpect,
    ValueStore,
};

mod common;
use common::{Server, connect, options};

/// Operations of each kind measured.
const OPS: usize = 2_000;
/// Secrets the operations cycle through.
const KEYS: usize = 50;

fn entry(i: usize) -> ValueEntry {
    ValueEntry {
        value: StoredValue::Sealed {
            key_version: coffer_crypto::KeyVersion::new(1).unwrap(),
            blob: format!("AAAAAAAAAAAAAAAA:{i:064}:BBBBBBBBBBBBBBBBBBBBBB"),
        },
        revision: 1,
        created_at: Timestamp::from_millis(1),
        updated_at: Timestamp::from_millis(1),
        write_id: "00000000000000aa".into(),
    }
}

fn report(what: &str, took: Duration) {
    eprintln!(
        "{what}: {OPS} sequential in {:.2} s = {:.0} ops/s, mean {:.0} µs",
        took.as_secs_f64(),
        OPS as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / OPS as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_and_writes_report_their_rate() {
    let server = Server::start(&[]);
    let mut o = options(&server);
    o.timeout = Duration::from_secs(10);
    let values = connect(o).await;
    let env = Environment {
        name: EnvName::new("bench").unwrap(),
        id: EnvId::new("env_000000000000be7c").unwrap(),
        created_at: Timestamp::from_millis(0),
    };
    let names: Vec<SecretName> = (0..KEYS)
        .map(|i| SecretName::new(&format!("BENCH_{i}")).unwrap())
        .collect();
    let mut versions = vec![None; KEYS];
    // The bucket exists before the clock starts.
    values
        .write(&env, &names[0], &entry(0), ValueExpect::Any)
        .await
        .unwrap();

    let began = Instant::now();
    for i in 0..OPS {
        let k = i % KEYS;
        let expect = match versions[k] {
            Some(v) => ValueExpect::Version(v),
            None => ValueExpect::Any,
        };
        versions[k] = Some(
            values
                .write(&env, &names[k], &entry(i), expect)
                .await
                .unwrap(),
        );
    }
    report("writes (compare-and-set)", began.elapsed());

    let began = Instant::now();
    for i in 0..OPS {
        let k = i % KEYS;
        let got = values.read(&env, &names[k], versions[k]).await.unwrap();
        assert!(got.is_some());
    }
    report("reads by version", began.elapsed());

    let began = Instant::now();
    for i in 0..OPS {
        let got = values.read(&env, &names[i % KEYS], None).await.unwrap();
        assert!(got.is_some());
    }
    report("reads of the latest", began.elapsed());
}
