//! `coffer audit` and `coffer audit verify` with the real binary: a real `coffer serve`, real
//! changes, then the SQLite file edited behind the server's back (stopped, edited with
//! rusqlite, started again) and the verdict `coffer audit verify` gives.

use std::path::PathBuf;
use std::process::Output;

use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use serde_json::Value;

mod common;

use common::{ServerProcess, clean_command};

const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The columns of a row besides `seq` (what a swap exchanges).
const CONTENT: [&str; 16] = [
    "at",
    "actor_id",
    "actor_name",
    "action",
    "subject",
    "environment",
    "name",
    "revision",
    "result",
    "status",
    "count",
    "remote",
    "user_agent",
    "event_seq",
    "prev_hash",
    "hash",
];

struct Installation {
    _dir: tempfile::TempDir,
    data: PathBuf,
    server: ServerProcess,
    admin: String,
}

impl Installation {
    /// A fresh data dir with a server and a few changes in its log.
    fn with_changes() -> Installation {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = ServerProcess::start(&data, &[("COFFER_MASTER_KEY", MASTER_KEY)], &[]);
        let admin = server.admin_key();
        let it = Installation {
            _dir: dir,
            data,
            server,
            admin,
        };
        it.ok(&["env", "create", "prod"]);
        for name in ["A", "B", "C"] {
            it.ok(&["secret", "set", name, "some-value", "--env", "prod"]);
        }
        it.ok(&["secret", "set", "A", "another-value", "--env", "prod"]);
        it.ok(&["secret", "delete", "B", "--env", "prod", "--yes"]);
        it
    }

    fn run(&self, args: &[&str]) -> Output {
        clean_command(args)
            .env("COFFER_ADDR", &self.server.base)
            .env("COFFER_API_KEY", &self.admin)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "coffer {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops the server, lets `edit` change the database, starts it again.
    fn tamper(&mut self, edit: impl FnOnce(&Connection)) {
        assert!(self.server.terminate(), "{}", self.server.log());
        let db = Connection::open(self.data.join("coffer.db")).unwrap();
        edit(&db);
        drop(db);
        self.server = ServerProcess::start(&self.data, &[("COFFER_MASTER_KEY", MASTER_KEY)], &[]);
    }

    fn rows(&self) -> u64 {
        let db = Connection::open(self.data.join("coffer.db")).unwrap();
        db.query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
            .unwrap()
    }
}

/// `coffer audit verify` failed with exit code 6, naming `seq` and `problem`.
fn assert_broken(out: &Output, seq: u64, problem: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("broken at row {seq} ({problem})")),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_untouched_log_verifies_and_lists_every_change() {
    let it = Installation::with_changes();
    let verdict = it.ok(&["audit", "verify"]);
    assert!(
        verdict.starts_with("ok: the audit log's hash chain is whole ("),
        "{verdict}"
    );
    let json: Value = serde_json::from_str(&it.ok(&["audit", "verify", "--json"])).unwrap();
    assert_eq!(json["ok"], true);
    assert!(json["rows"].as_u64().unwrap() >= 6, "{json}");

    let table = it.ok(&["audit", "--env", "prod"]);
    let header = table.lines().next().unwrap();
    for column in [
        "TIME",
        "ACTOR",
        "ACTION",
        "SUBJECT",
        "ENVIRONMENT",
        "RESULT",
    ] {
        assert!(header.contains(column), "{table}");
    }
    assert!(table.contains("system.secret.B.deleted"), "{table}");
    assert!(!table.contains("some-value") && !table.contains("another-value"));

    // --json: one array of every matching row, across pages (--limit stops early).
    let all: Value = serde_json::from_str(&it.ok(&["audit", "--json"])).unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(all.len() as u64, it.rows());
    let some: Value = serde_json::from_str(&it.ok(&["audit", "--json", "--limit", "2"])).unwrap();
    assert_eq!(some.as_array().unwrap().len(), 2);
    let created: Value = serde_json::from_str(&it.ok(&[
        "audit",
        "--json",
        "--action",
        "secret.created",
        "--since",
        "1h",
        "--subject",
        "system.secret.*.created",
        "--result",
        "allowed",
    ]))
    .unwrap();
    assert_eq!(created.as_array().unwrap().len(), 3, "{created}");
    let future: Value =
        serde_json::from_str(&it.ok(&["audit", "--json", "--since", "2999-01-01T00:00:00Z"]))
            .unwrap();
    assert_eq!(future, Value::Array(vec![]));
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("some-value") && !text.contains("another-value"));
}

#[test]
fn an_edited_row_is_named_edited() {
    let mut it = Installation::with_changes();
    it.tamper(|db| {
        let n = db
            .execute("UPDATE audit_log SET name = 'Z' WHERE seq = 5", [])
            .unwrap();
        assert_eq!(n, 1);
    });
    assert_broken(&it.run(&["audit", "verify"]), 5, "edited");
    let json: Value =
        serde_json::from_slice(&it.run(&["audit", "verify", "--json"]).stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["firstBroken"]["seq"], 5);
    assert_eq!(json["firstBroken"]["problem"], "edited");
}

#[test]
fn a_deleted_row_is_named_deleted() {
    let mut it = Installation::with_changes();
    let rows = it.rows();
    it.tamper(|db| {
        assert_eq!(
            db.execute("DELETE FROM audit_log WHERE seq = 4", [])
                .unwrap(),
            1
        );
    });
    assert_eq!(it.rows(), rows - 1);
    assert_broken(&it.run(&["audit", "verify"]), 4, "deleted");
}

#[test]
fn swapped_rows_are_named_reordered() {
    let mut it = Installation::with_changes();
    it.tamper(|db| {
        let read = |seq: u64| -> Vec<Sql> {
            let sql = format!(
                "SELECT {} FROM audit_log WHERE seq = ?1",
                CONTENT.join(", ")
            );
            db.query_row(&sql, [seq], |r| {
                (0..CONTENT.len()).map(|i| r.get::<_, Sql>(i)).collect()
            })
            .unwrap()
        };
        let (four, five) = (read(4), read(5));
        let set = CONTENT
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE audit_log SET {set} WHERE seq = ?{}",
            CONTENT.len() + 1
        );
        for (seq, content) in [(4u64, five), (5u64, four)] {
            let mut params = content;
            params.push(Sql::Integer(seq as i64));
            assert_eq!(
                db.execute(&sql, rusqlite::params_from_iter(params))
                    .unwrap(),
                1
            );
        }
    });
    assert_broken(&it.run(&["audit", "verify"]), 4, "reordered");
}

#[test]
fn rows_removed_at_the_end_are_named_truncated() {
    let mut it = Installation::with_changes();
    let rows = it.rows();
    it.tamper(|db| {
        db.execute("DELETE FROM audit_log WHERE seq >= ?1", [rows - 1])
            .unwrap();
    });
    assert_broken(&it.run(&["audit", "verify"]), rows - 1, "truncated");
}

/// A row inserted past the head (a well-formed copy of the last row, renumbered) is
/// reported, and no listing serves it.
#[test]
fn a_row_inserted_past_the_head_is_reported_and_never_listed() {
    let mut it = Installation::with_changes();
    let rows = it.rows();
    it.tamper(|db| {
        db.execute(
            "INSERT INTO audit_log SELECT seq + 1000, at, actor_id, actor_name, 'secret.deleted',
                 subject, environment, name, revision, result, status, count, remote,
                 user_agent, NULL, prev_hash, hash, detail
             FROM audit_log WHERE seq = ?1",
            [rows],
        )
        .unwrap();
    });
    assert_broken(&it.run(&["audit", "verify"]), rows + 1, "truncated");
    let listed = it.ok(&["audit", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let seqs: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len() as u64, rows, "{seqs:?}");
    assert!(seqs.iter().all(|s| *s <= rows), "{seqs:?}");
}

/// A cell edited to a value of another type does not break the listing or verify: the row
/// is named, as edited.
#[test]
fn a_cell_of_the_wrong_type_is_named_edited() {
    let mut it = Installation::with_changes();
    it.tamper(|db| {
        db.execute("UPDATE audit_log SET at = 'yesterday' WHERE seq = 3", [])
            .unwrap();
    });
    assert_broken(&it.run(&["audit", "verify"]), 3, "edited");
    let listed = it.ok(&["audit", "--json"]);
    assert!(listed.contains("\"unreadable\""), "{listed}");
}

/// A log longer than one page prints as one table (one header), a page at a time.
#[test]
fn a_long_log_prints_every_row_under_one_header() {
    let it = Installation::with_changes();
    // Imports take at most 1,000 secrets: two files' worth.
    for (n, range) in [(0, 0..600), (1, 600..1200)] {
        let path = it._dir.path().join(format!("part{n}.env"));
        let lines: String = range.map(|i| format!("MANY_{i}=v{i}\n")).collect();
        std::fs::write(&path, lines).unwrap();
        it.ok(&["secret", "import", path.to_str().unwrap(), "--env", "prod"]);
    }
    let table = it.ok(&["audit", "--action", "secret.created", "--env", "prod"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with("TIME")).count(), 1);
    let many = lines
        .iter()
        .filter(|l| l.contains("system.secret.MANY_"))
        .count();
    assert_eq!(many, 1200, "{}", lines.len());
}
