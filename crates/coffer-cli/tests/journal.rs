//! The journal through the real binary: a `kill -9` in the middle of a stream of writes
//! leaves, for every change, its row, its audit row and its event — or none of them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use coffer_store::{ActorRef, AuditRecord, AuditResult, journal::GENESIS_HASH};
use common::{ServerProcess, http};
use rusqlite::Connection;
use serde_json::json;

/// Writers in flight when the server is killed.
const WRITERS: usize = 8;
/// Secrets the writers share (so creates and updates race on the same rows).
const NAMES: usize = 12;

/// Three rounds: write from several tasks, `kill -9` mid-stream, check the database, start
/// again on the same data dir and go on. Every acknowledged write is there with exactly one
/// audit row and one event per revision; no audit row or event names a revision that did
/// not commit; the hash chain is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_stream_leaves_every_change_with_exactly_one_audit_row_and_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..3 {
        let mut server = ServerProcess::start(&data, &[], &[]);
        let key = server.admin_key();
        let base = server.base.clone();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (base, key) = (base.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                write_until_refused(&base, &key, w).await
            }));
        }
        // Let the writers get going, then kill the server under them.
        let began = Instant::now();
        while count_events(&data) < 150 * (round + 1) && began.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill_9();
        assert!(
            count_events(&data) >= 150 * (round + 1),
            "round {round}: the writers did not get going:\n{}",
            server.log()
        );
        for task in tasks {
            for (name, revision) in task.await.unwrap() {
                let seen = acked.entry(name).or_default();
                *seen = (*seen).max(revision);
            }
        }
        check_database(&data.join("coffer.db"), &acked, round);
    }
}

/// PUTs secret and config values until the server stops answering; returns the highest
/// revision acknowledged per secret.
async fn write_until_refused(base: &str, key: &str, writer: usize) -> Vec<(String, u64)> {
    let client = http();
    let mut acked = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        if Instant::now() > deadline {
            break;
        }
        let name = format!("S{}", (writer * 7 + i) % NAMES);
        let (url, body) = if i % 5 == 4 {
            (
                format!("{base}/v1/environments/default/config/C{writer}"),
                json!({"value": {"i": i}}),
            )
        } else {
            (
                format!("{base}/v1/environments/default/secrets/{name}"),
                json!({"value": format!("v-{writer}-{i}")}),
            )
        };
        let sent = client
            .put(&url)
            .bearer_auth(key)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let Ok(response) = sent else { break };
        if !response.status().is_success() {
            break;
        }
        if i % 5 != 4 {
            let meta: serde_json::Value = match response.json().await {
                Ok(v) => v,
                Err(_) => break,
            };
            let revision = meta["revision"].as_u64().unwrap();
            let seen: &mut u64 = acked.entry(name).or_default();
            *seen = (*seen).max(revision);
        }
    }
    acked.into_iter().collect()
}

fn count_events(data: &Path) -> usize {
    let Ok(c) = Connection::open_with_flags(
        data.join("coffer.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
        .map(|n| n as usize)
        .unwrap_or(0)
}

fn check_database(db: &Path, acked: &BTreeMap<String, u64>, round: usize) {
    let c = Connection::open(db).unwrap(); // recovers the write-ahead log, as a restart does
    let stored: BTreeMap<String, u64> = rows(
        &c,
        "SELECT name, revision FROM secrets WHERE environment = 'default'",
    );
    // Durable: every acknowledged revision is stored (or a later one).
    for (name, revision) in acked {
        assert!(
            stored.get(name).is_some_and(|r| r >= revision),
            "round {round}: {name} revision {revision} was acknowledged but is not stored"
        );
    }
    // One audit row and one event per committed revision, none for one that did not commit.
    for kind in ["secret", "config"] {
        let table = if kind == "secret" {
            "secrets"
        } else {
            "config"
        };
        let column = if kind == "secret" { "name" } else { "key" };
        let current: BTreeMap<String, u64> = rows(
            &c,
            &format!("SELECT {column}, revision FROM {table} WHERE environment = 'default'"),
        );
        let audited = revisions(
            &c,
            &format!(
                "SELECT name, revision FROM audit_log WHERE action IN ('{kind}.created', '{kind}.updated')"
            ),
        );
        let published = revisions(
            &c,
            &format!(
                "SELECT a.name, a.revision FROM events e JOIN audit_log a ON a.seq = e.audit_seq
                 WHERE a.subject LIKE 'system.{kind}.%.created' OR a.subject LIKE 'system.{kind}.%.updated'"
            ),
        );
        for (name, revision) in &current {
            let expected: Vec<u64> = (1..=*revision).collect();
            assert_eq!(
                audited.get(name),
                Some(&expected),
                "round {round}: audit rows of {kind} {name}"
            );
            assert_eq!(
                published.get(name),
                Some(&expected),
                "round {round}: events of {kind} {name}"
            );
        }
        let names: BTreeSet<&String> = current.keys().collect();
        assert_eq!(
            audited.keys().collect::<BTreeSet<_>>(),
            names,
            "round {round}"
        );
        assert_eq!(
            published.keys().collect::<BTreeSet<_>>(),
            names,
            "round {round}"
        );
    }
    // Every event has exactly one audit row, and ids run 1, 2, 3 … without a gap.
    let events: Vec<i64> = column(&c, "SELECT seq FROM events ORDER BY seq");
    let linked: Vec<i64> = column(
        &c,
        "SELECT event_seq FROM audit_log WHERE event_seq IS NOT NULL ORDER BY event_seq",
    );
    assert_eq!(events, linked, "round {round}: events and their audit rows");
    let pointing: Vec<i64> = column(
        &c,
        "SELECT e.seq FROM events e JOIN audit_log a ON a.seq = e.audit_seq AND a.event_seq = e.seq
         ORDER BY e.seq",
    );
    assert_eq!(
        events, pointing,
        "round {round}: each event names its audit row"
    );
    assert!(
        events.iter().zip(1..).all(|(seq, n)| *seq == n),
        "round {round}: event ids have a gap"
    );
    check_chain(&c, round);
}

fn check_chain(c: &Connection, round: usize) {
    let mut stmt = c
        .prepare(
            "SELECT seq, at, actor_id, actor_name, action, subject, environment, name, revision,
                    result, status, count, remote, user_agent, event_seq, prev_hash, hash, detail
             FROM audit_log ORDER BY seq",
        )
        .unwrap();
    let records = stmt
        .query_map([], |r| {
            Ok(AuditRecord {
                seq: r.get(0)?,
                at: r.get(1)?,
                actor: ActorRef {
                    key_id: r.get(2)?,
                    key_name: r.get(3)?,
                },
                action: r.get(4)?,
                subject: r.get(5)?,
                environment: r.get(6)?,
                name: r.get(7)?,
                revision: r.get(8)?,
                result: AuditResult::parse(&r.get::<_, String>(9)?).unwrap(),
                status: r.get(10)?,
                count: r.get(11)?,
                remote: r.get(12)?,
                user_agent: r.get(13)?,
                event: r.get(14)?,
                detail: r.get(17)?,
                prev_hash: r.get(15)?,
                hash: r.get(16)?,
            })
        })
        .unwrap();
    let mut previous = GENESIS_HASH.to_owned();
    let mut n = 0;
    for record in records {
        let record = record.unwrap();
        n += 1;
        assert_eq!(record.seq, n, "round {round}: audit seq gap");
        assert_eq!(record.prev_hash, previous, "round {round}: row {n}");
        assert_eq!(
            record.hash,
            record.expected_hash(),
            "round {round}: row {n}"
        );
        previous = record.hash;
    }
    let head: (u64, String) = c
        .query_row("SELECT audit_seq, audit_hash FROM journal_head", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        head,
        (n, previous),
        "round {round}: the head names the last row"
    );
}

fn rows(c: &Connection, sql: &str) -> BTreeMap<String, u64> {
    let mut stmt = c.prepare(sql).unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every revision each name has rows for, sorted (duplicates kept, so a double shows).
fn revisions(c: &Connection, sql: &str) -> BTreeMap<String, Vec<u64>> {
    let mut stmt = c.prepare(sql).unwrap();
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))
        .unwrap()
    {
        let (name, revision) = row.unwrap();
        out.entry(name).or_default().push(revision);
    }
    for list in out.values_mut() {
        list.sort_unstable();
    }
    out
}

fn column(c: &Connection, sql: &str) -> Vec<i64> {
    let mut stmt = c.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
