//! `coffer orchestration …` through the real binary against a real `coffer serve`: a
//! definition with a sealed param is created from YAML, read back masked (JSON and table),
//! updated with the masked form, refused at a stale revision, run, its run shown, an
//! approval refused while the run waits for none, and deleted — checked by what a user sees
//! (stdout, stderr, exit codes). The sealed param's plaintext never appears in any of it.
//!
//! As in `runtime_cli.rs`, the catalog is SQLite, or PostgreSQL with
//! `COFFER_TEST_BACKEND=postgres` (and `COFFER_TEST_DATABASE_URL`).

mod common;

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Stdio;

use common::{ServerProcess, TestDb, clean_command};
use serde_json::Value;

const MASTER_KEY: &str = "4f1d0c9e6a2b8c7d5e3f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

/// The plaintext of the sealed param: no output of the CLI may contain it.
const CANARY: &str = "canary-Q7";

/// Exit codes (`docs/CLI.md`).
const CONFLICT: i32 = 5;
const NOT_FOUND: i32 = 3;

const DEFINITION: &str = "\
name: nightly-billing
steps:
  - id: charge
    type: compute
    functionId: pull-fn
    params:
      currency: EUR
    encryptedParams:
      TOKEN: {value: canary-Q7, encrypt: true}
      PLAIN: {value: p, encrypt: false}
      REF: {secretRef: STRIPE_KEY}
  - id: review
    type: approval
    timeoutMs: 3600000
  - id: settle
    type: delay
    durationMs: 10
";

struct Server {
    _dir: tempfile::TempDir,
    process: ServerProcess,
    _db: Option<TestDb>,
    admin: String,
    scratch: PathBuf,
    /// Everything every command printed, stdout and stderr.
    transcript: RefCell<String>,
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = match std::env::var("COFFER_TEST_BACKEND").as_deref() {
            Ok("postgres") => Some(TestDb::create("orchestrations_cli")),
            Ok("sqlite") | Err(_) => None,
            Ok(other) => panic!("COFFER_TEST_BACKEND={other}: sqlite or postgres"),
        };
        let mut envs = vec![("COFFER_MASTER_KEY", MASTER_KEY)];
        if let Some(db) = &db {
            envs.push(("COFFER_DATABASE_URL", db.url.as_str()));
        }
        let process = ServerProcess::start(&dir.path().join("data"), &envs, &[]);
        let admin = process.admin_key();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        Server {
            _dir: dir,
            process,
            _db: db,
            admin,
            scratch,
            transcript: RefCell::new(String::new()),
        }
    }

    /// `coffer ARGS` as admin, stdin empty.
    fn run(&self, args: &[&str]) -> Ran {
        let out = clean_command(args)
            .env("COFFER_ADDR", &self.process.base)
            .env("COFFER_API_KEY", &self.admin)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let ran = Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        let mut transcript = self.transcript.borrow_mut();
        transcript.push_str(&ran.stdout);
        transcript.push_str(&ran.stderr);
        ran
    }

    /// `coffer ARGS` as admin; must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args);
        assert_eq!(ran.code, Some(0), "coffer {args:?}: {}", ran.stderr);
        ran.stdout
    }

    /// Writes `text` to a scratch file; its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.scratch.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn an_orchestration_is_managed_and_run_without_its_sealed_param_ever_shown() {
    let s = Server::start();
    s.ok(&[
        "function",
        "register",
        "pull-fn",
        "--mode",
        "pull",
        "--secret",
        "STRIPE_KEY",
    ]);

    // create, from YAML
    let file = s.file("billing.yaml", DEFINITION);
    let created = json(&s.ok(&["orchestration", "create", "-f", &file, "--json"]));
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("orch_"), "{created}");
    assert_eq!(created["revision"], 1);
    let sealed = &created["steps"][0]["encryptedParams"];
    assert_eq!(
        sealed["TOKEN"],
        serde_json::json!({"value": "********", "encrypted": true})
    );
    assert_eq!(
        sealed["REF"],
        serde_json::json!({"secretRef": "STRIPE_KEY"})
    );
    let line = s.ok(&["orchestration", "create", "-f", &file]);
    assert!(
        line.starts_with("created orchestration orch_")
            && line.contains("(nightly-billing) in default: 3 steps, revision 1"),
        "{line}"
    );

    // get: JSON and table
    let got = json(&s.ok(&["orchestration", "get", &id, "--json"]));
    assert_eq!(got, created);
    let table = s.ok(&["orchestration", "get", &id]);
    assert!(table.contains("TOKEN=********"), "{table}");
    assert!(table.contains("REF=secretRef STRIPE_KEY"), "{table}");
    assert!(table.contains("pull-fn"), "{table}");
    for step in ["charge", "review", "settle"] {
        assert!(table.contains(step), "{table}");
    }

    // list
    let listed = json(&s.ok(&["orchestration", "list", "--json"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["id"] == id.as_str()),
        "{listed}"
    );
    let table = s.ok(&["orchestration", "list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(&id) && table.contains("nightly-billing"),
        "{table}"
    );

    // update with the masked form, as `get --json` saved it: revision 2, still sealed
    let saved = s.file("saved.json", &serde_json::to_string_pretty(&got).unwrap());
    let updated = json(&s.ok(&["orchestration", "update", &id, "-f", &saved, "--json"]));
    assert_eq!(updated["revision"], 2, "{updated}");
    assert_eq!(
        updated["steps"][0]["encryptedParams"]["TOKEN"],
        serde_json::json!({"value": "********", "encrypted": true})
    );

    // the same saved file again: its revision (1) is stale now
    let stale = s.run(&["orchestration", "update", &id, "-f", &saved]);
    assert_eq!(stale.code, Some(CONFLICT), "{}", stale.stderr);
    assert!(stale.stdout.is_empty(), "{}", stale.stdout);
    let body = s.file(
        "body.json",
        &serde_json::json!({"name": "x", "steps": got["steps"], "expectedRevision": 1}).to_string(),
    );
    let stale = s.run(&["orchestration", "update", &id, "-f", &body]);
    assert_eq!(stale.code, Some(CONFLICT), "{}", stale.stderr);

    // run
    let run = json(&s.ok(&["orchestration", "run", &id, "--param", "x=1", "--json"]));
    let run_id = run["id"].as_str().unwrap().to_owned();
    assert!(run_id.starts_with("orun_"), "{run}");
    assert_eq!(run["params"], serde_json::json!({"x": 1}));
    assert_eq!(run["orchestrationId"], id.as_str());

    // runs show / list
    let shown = json(&s.ok(&["orchestration", "runs", "show", &run_id, "--json"]));
    assert_eq!(shown["id"], run_id.as_str());
    let shown = s.ok(&["orchestration", "runs", "show", &run_id]);
    assert!(shown.contains(&run_id) && shown.contains(&id), "{shown}");
    assert!(shown.contains("charge"), "{shown}");
    let runs = json(&s.ok(&[
        "orchestration",
        "runs",
        "list",
        "--orchestration",
        &id,
        "--json",
    ]));
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");

    // No worker polls pull-fn: the run waits at its compute step, not at an approval.
    for verb in ["approve", "reject"] {
        let refused = s.run(&["orchestration", verb, &run_id, "--reason", "because"]);
        assert_eq!(refused.code, Some(CONFLICT), "{verb}: {}", refused.stderr);
        assert!(refused.stderr.contains("not_waiting"), "{}", refused.stderr);
    }

    // delete
    let deleted = s.ok(&["orchestration", "delete", &id, "--yes"]);
    assert!(
        deleted.starts_with(&format!("deleted orchestration {id}")),
        "{deleted}"
    );
    let gone = s.run(&["orchestration", "get", &id]);
    assert_eq!(gone.code, Some(NOT_FOUND), "{}", gone.stderr);
    assert!(
        gone.stderr.contains("orchestration_not_found"),
        "{}",
        gone.stderr
    );

    let transcript = s.transcript.borrow();
    assert!(
        !transcript.contains(CANARY),
        "the sealed value was printed:\n{transcript}"
    );
}

#[test]
fn a_broken_definition_is_refused_before_any_request_without_quoting_its_values() {
    let s = Server::start();
    // `encrypt` must be a boolean: serde's own message would quote the value.
    let file = s.file(
        "broken.yaml",
        "name: n\nsteps:\n  - id: c\n    type: compute\n    functionId: f\n    encryptedParams:\n      TOKEN: {value: v, encrypt: canary-Q7}\n",
    );
    let ran = s.run(&["orchestration", "create", "-f", &file]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("broken.yaml"), "{}", ran.stderr);
    assert!(!ran.stderr.contains(CANARY), "{}", ran.stderr);

    let unknown = s.file("unknown.json", r#"{"name": "n", "steps": [], "colour": 1}"#);
    let ran = s.run(&["orchestration", "create", "-f", &unknown]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("colour"), "{}", ran.stderr);

    let bad_id = s.run(&["orchestration", "get", "not-an-id"]);
    assert_eq!(bad_id.code, Some(2), "{}", bad_id.stderr);
}
