//! The runtime plane through the real binary: `coffer function …`, `coffer event send`,
//! `coffer runs …` and `coffer run` against a real `coffer serve` on a port of its own,
//! checked by what a user sees (stdout, stderr, exit codes) and, for `coffer run`, by what
//! the child process sees and does.
//!
//! The server keeps its catalog in SQLite; with `COFFER_TEST_BACKEND=postgres` (and
//! `COFFER_TEST_DATABASE_URL`, see `scripts/postgres.sh`) in a PostgreSQL database of each
//! test's own, so the same suite runs on both backends.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, ServerProcess, Signal, TestDb, clean_command, send_signal};
use serde_json::Value;

const MASTER_KEY: &str = "4f1d0c9e6a2b8c7d5e3f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";

/// Every wait ends by this deadline.
const WAIT: Duration = Duration::from_secs(20);

/// A child script loops at most this long, so one left behind by a failed test ends.
const CHILD_LOOP: &str = "i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done";

/// A server with a fresh data dir and the keys the tests use.
struct Server {
    _dir: tempfile::TempDir,
    process: ServerProcess,
    /// The PostgreSQL database, dropped after the server stopped (fields drop in order).
    _db: Option<TestDb>,
    admin: String,
    /// A scratch directory for the tests' files.
    scratch: PathBuf,
}

/// What a finished command printed, and how it exited.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = match std::env::var("COFFER_TEST_BACKEND").as_deref() {
            Ok("postgres") => Some(TestDb::create("runtime_cli")),
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
        }
    }

    /// `coffer ARGS` with `key`, stdin empty, against this server.
    fn command(&self, key: &str, args: &[&str]) -> Command {
        let mut cmd = clean_command(args);
        cmd.env("COFFER_ADDR", &self.process.base)
            .env("COFFER_API_KEY", key)
            .stdin(Stdio::null());
        cmd
    }

    fn run_as(&self, key: &str, args: &[&str]) -> Ran {
        ran(self.command(key, args).output().unwrap())
    }

    /// `coffer ARGS` as admin.
    fn run(&self, args: &[&str]) -> Ran {
        self.run_as(&self.admin, args)
    }

    /// `coffer ARGS` as admin; must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args);
        assert_eq!(ran.code, Some(0), "coffer {args:?}: {}", ran.stderr);
        ran.stdout
    }

    /// A new API key of `role` in `env` (stdout is not a terminal: the key alone).
    fn key(&self, role: &str, env: &str) -> String {
        let name = format!("{role}-{env}");
        let out = self.ok(&["apikey", "create", &name, "--role", role, "--env", env]);
        out.trim().to_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }
}

fn ran(out: Output) -> Ran {
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits, bounded, until `done` holds.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits, bounded, for `child` to exit; its exit code.
fn exit_of(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "coffer run did not exit");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The line `printf %s VALUE | sha256sum` prints: what the watched child scripts log, so
/// the values themselves never go to a file.
fn sha256_line(value: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", "printf %s \"$V\" | sha256sum"])
        .env("V", value)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

// --- functions --------------------------------------------------------------------------

#[test]
fn register_from_flags_shows_the_signing_secret_once_and_an_update_keeps_it() {
    let s = Server::start();
    let first = s.run(&[
        "function",
        "register",
        "billing",
        "--mode",
        "pull",
        "--trigger",
        "order.created",
        "--trigger",
        "order.*",
        "--secret",
        "STRIPE_KEY",
        "--config",
        "region",
    ]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    // Not a terminal: stdout is the signing secret alone, the rest is on stderr.
    let secret = first.stdout.trim();
    assert_eq!(first.stdout.lines().count(), 1, "{}", first.stdout);
    assert!(secret.len() >= 32, "{secret}");
    assert!(
        first
            .stderr
            .contains("registered function billing in default (pull, revision 1)"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("will not be shown again"),
        "{}",
        first.stderr
    );

    let update = s.ok(&[
        "function",
        "register",
        "billing",
        "--mode",
        "pull",
        "--trigger",
        "order.created",
        "--secret",
        "STRIPE_KEY",
        "--secret",
        "DB_URL",
    ]);
    assert_eq!(
        update,
        "updated function billing in default (pull, revision 2)\n"
    );
    assert!(!update.contains(secret));

    let shown = s.ok(&["function", "show", "billing"]);
    assert!(shown.contains("STRIPE_KEY,DB_URL"), "{shown}");
    assert!(shown.lines().any(|l| l == "revision     2"), "{shown}");
    assert!(
        !shown.contains(secret),
        "the signing secret is never shown again"
    );
    let shown = json(&s.ok(&["function", "show", "billing", "--json"]));
    assert_eq!(
        shown["triggers"],
        serde_json::json!([{"event": "order.created"}])
    );
    assert!(shown.get("signingSecret").is_none(), "{shown}");

    let stale = s.run(&[
        "function",
        "register",
        "billing",
        "--mode",
        "pull",
        "--expected-revision",
        "1",
    ]);
    assert_eq!(stale.code, Some(5), "{}", stale.stderr);
    let exists = s.run(&[
        "function",
        "register",
        "billing",
        "--mode",
        "pull",
        "--expected-revision",
        "0",
    ]);
    assert_eq!(exists.code, Some(5), "{}", exists.stderr);
}

#[test]
fn register_from_yaml_and_json_files_then_list_and_delete() {
    let s = Server::start();
    let yaml = s.path("reports.yaml");
    std::fs::write(
        &yaml,
        "mode: pull\ntriggers:\n  - event: 'report.>'\nsecrets: [DB_URL]\nconfig: [region]\n",
    )
    .unwrap();
    let json_file = s.path("hook.json");
    std::fs::write(
        &json_file,
        r#"{"mode": "push", "url": "http://127.0.0.1:1/hook", "triggers": [{"event": "hook.fired"}], "secrets": ["HOOK_TOKEN"], "timeoutMs": 2000, "retries": 1}"#,
    )
    .unwrap();
    let from_yaml = s.run(&[
        "function",
        "register",
        "reports",
        "--file",
        yaml.to_str().unwrap(),
    ]);
    assert_eq!(from_yaml.code, Some(0), "{}", from_yaml.stderr);
    let from_json = s.run(&[
        "function",
        "register",
        "hook",
        "--file",
        json_file.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(from_json.code, Some(0), "{}", from_json.stderr);
    let answer = json(&from_json.stdout);
    assert_eq!(answer["timeoutMs"], 2000);
    assert!(
        answer["signingSecret"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );

    let list = json(&s.ok(&["function", "list", "--json"]));
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["hook", "reports"]);
    let table = s.ok(&["function", "list"]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID  "), "{table}");
    let hook = lines.next().unwrap();
    assert!(
        hook.starts_with("hook ") && hook.contains(" push "),
        "{table}"
    );
    assert!(
        hook.contains("hook.fired") && hook.contains("HOOK_TOKEN"),
        "{table}"
    );

    // A typo in a file is refused, not ignored; so is mixing a file with flags.
    let typo = s.path("typo.yaml");
    std::fs::write(&typo, "mode: pull\nsecret: [DB_URL]\n").unwrap();
    let refused = s.run(&[
        "function",
        "register",
        "typo",
        "--file",
        typo.to_str().unwrap(),
    ]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("secret"), "{}", refused.stderr);
    let mixed = s.run(&[
        "function",
        "register",
        "typo",
        "--file",
        typo.to_str().unwrap(),
        "--mode",
        "pull",
    ]);
    assert_eq!(mixed.code, Some(2), "{}", mixed.stderr);
    // The server's rules come back as usage errors too (a pull function has no url).
    let bad = s.run(&[
        "function",
        "register",
        "bad",
        "--mode",
        "pull",
        "--url",
        "https://x.example",
    ]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);

    let unconfirmed = s.run(&["function", "delete", "hook"]);
    assert_eq!(unconfirmed.code, Some(2), "{}", unconfirmed.stderr);
    assert_eq!(
        s.ok(&["function", "delete", "hook", "--yes"]),
        "deleted function hook from default\n"
    );
    let gone = s.run(&["function", "show", "hook"]);
    assert_eq!(gone.code, Some(3), "{}", gone.stderr);
    let gone = s.run(&["function", "delete", "hook", "--yes"]);
    assert_eq!(gone.code, Some(3), "{}", gone.stderr);
}

#[test]
fn rotate_secret_shows_a_new_signing_secret_once() {
    let s = Server::start();
    let first = s.ok(&["function", "register", "hook", "--mode", "pull"]);
    let rotated = s.run(&["function", "rotate-secret", "hook"]);
    assert_eq!(rotated.code, Some(0), "{}", rotated.stderr);
    let second = rotated.stdout.trim();
    assert!(!second.is_empty() && second != first.trim());
    assert!(
        rotated
            .stderr
            .contains("rotated the signing secret of function hook in default; deliveries are signed with the previous one too until"),
        "{}",
        rotated.stderr
    );
    let answer = json(&s.ok(&[
        "function",
        "rotate-secret",
        "hook",
        "--grace-ms",
        "0",
        "--json",
    ]));
    assert!(
        answer["signingSecret"]
            .as_str()
            .is_some_and(|k| k != second)
    );
    assert_eq!(answer["revision"], 3);
    let shown = json(&s.ok(&["function", "show", "hook", "--json"]));
    assert!(shown.get("signingSecret").is_none());
    let missing = s.run(&["function", "rotate-secret", "nope"]);
    assert_eq!(missing.code, Some(3), "{}", missing.stderr);
}

// --- events and runs ----------------------------------------------------------------------

#[test]
fn event_send_starts_runs_that_runs_list_and_show_report() {
    let s = Server::start();
    s.ok(&[
        "function",
        "register",
        "worker",
        "--mode",
        "pull",
        "--trigger",
        "job.*",
    ]);
    s.ok(&[
        "function",
        "register",
        "other",
        "--mode",
        "pull",
        "--trigger",
        "other.event",
    ]);

    let sent = s.ok(&["event", "send", "job.created", "--data", r#"{"n": 1}"#]);
    let mut lines = sent.lines();
    assert_eq!(
        lines.next(),
        Some("sent the event to default: 1 run started")
    );
    assert!(lines.next().unwrap().starts_with("RUN "), "{sent}");
    let row = lines.next().unwrap();
    let run_id = row.split_whitespace().next().unwrap().to_owned();
    assert!(
        run_id.starts_with("run_") && row.ends_with("worker"),
        "{sent}"
    );

    s.ok(&["events", "send", "other.event"]);
    let none = s.ok(&["event", "send", "nothing.listens"]);
    assert_eq!(
        none,
        "sent the event to default: no function's trigger matches it, no run started\n"
    );

    // A retried send with the same Idempotency-Key starts no second run.
    let once = json(&s.ok(&[
        "event",
        "send",
        "job.retried",
        "--idempotency-key",
        "k-1",
        "--json",
    ]));
    let again = json(&s.ok(&[
        "event",
        "send",
        "job.retried",
        "--idempotency-key",
        "k-1",
        "--json",
    ]));
    assert_eq!(once, again);
    assert_eq!(once["runs"].as_array().unwrap().len(), 1);

    let all = json(&s.ok(&["runs", "list", "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    let mine = json(&s.ok(&["runs", "list", "--function", "worker", "--json"]));
    assert_eq!(mine.as_array().unwrap().len(), 2, "{mine}");
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|r| r["functionId"] == "worker")
    );
    let queued = json(&s.ok(&["runs", "list", "--status", "queued", "--json"]));
    assert_eq!(queued.as_array().unwrap().len(), 3);
    let failed = json(&s.ok(&["runs", "list", "--status", "failed", "--json"]));
    assert_eq!(failed, serde_json::json!([]));
    // --limit takes the newest, across pages.
    let newest = json(&s.ok(&["runs", "list", "--limit", "2", "--page-size", "1", "--json"]));
    let newest: Vec<&Value> = newest.as_array().unwrap().iter().collect();
    let first_two: Vec<&Value> = all.as_array().unwrap().iter().take(2).collect();
    assert_eq!(newest, first_two);
    let table = s.ok(&["runs", "list", "--function", "worker"]);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&run_id) && l.contains(" queued "))
    );

    let shown = s.ok(&["runs", "show", &run_id]);
    assert!(
        shown.lines().any(|l| l == "event        job.created"),
        "{shown}"
    );
    assert!(shown.lines().any(|l| l == "status       queued"), "{shown}");
    assert!(shown.lines().any(|l| l == "function     worker"), "{shown}");
    let missing = s.run(&["runs", "show", "run_00000000000000000000"]);
    assert_eq!(missing.code, Some(3), "{}", missing.stderr);
    let malformed = s.run(&["runs", "show", "not-a-run"]);
    assert_eq!(malformed.code, Some(2), "{}", malformed.stderr);
}

#[test]
fn event_send_refuses_invalid_data_and_keys_before_sending() {
    let s = Server::start();
    let bad = s.run(&["event", "send", "x.y", "--data", "{not json SECRET-ish}"]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("--data is not valid JSON"),
        "{}",
        bad.stderr
    );
    assert!(!bad.stderr.contains("SECRET-ish"), "{}", bad.stderr);
    let key = s.run(&["event", "send", "x.y", "--idempotency-key", "has space"]);
    assert_eq!(key.code, Some(2), "{}", key.stderr);
    let runtime = s.key("runtime", "default");
    let refused = s.run_as(&runtime, &["event", "send", "x.y"]);
    assert_eq!(refused.code, Some(4), "{}", refused.stderr);
}

// --- coffer run ---------------------------------------------------------------------------

/// A server with the secrets, config and function the `coffer run` tests use: `app`
/// declares DECLARED_A (set), MISSING_C (not set), config `region` and `limits`;
/// UNDECLARED_B is set but not declared.
fn run_fixture() -> (Server, String) {
    let s = Server::start();
    s.ok(&["secret", "set", "DECLARED_A", "alpha-value-7f3e"]);
    s.ok(&["secret", "set", "UNDECLARED_B", "beta-value-91c2"]);
    s.ok(&["config", "set", "region", r#""eu-west-1""#]);
    s.ok(&["config", "set", "limits", r#"{"rps": 5}"#]);
    s.ok(&[
        "function",
        "register",
        "app",
        "--mode",
        "pull",
        "--secret",
        "DECLARED_A",
        "--secret",
        "MISSING_C",
        "--config",
        "region",
        "--config",
        "limits",
    ]);
    let runtime = s.key("runtime", "default");
    (s, runtime)
}

#[test]
fn run_gives_cmd_exactly_the_declared_values_and_keeps_its_own_environment() {
    let (s, runtime) = run_fixture();
    let out = ran(s
        .command(&runtime, &["run", "--function", "app", "--", "env"])
        .env("PARENT_ONLY", "kept")
        .env("DECLARED_A", "from-the-parent")
        .env("MISSING_C", "from-the-parent")
        .output()
        .unwrap());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let vars: Vec<&str> = out.stdout.lines().collect();
    assert!(vars.contains(&"DECLARED_A=alpha-value-7f3e"), "{vars:?}");
    assert!(vars.contains(&"region=eu-west-1"), "{vars:?}");
    assert!(vars.contains(&r#"limits={"rps":5}"#), "{vars:?}");
    // Coffer's own environment reaches CMD; a declared secret that is not set leaves the
    // parent's variable alone.
    assert!(vars.contains(&"PARENT_ONLY=kept"), "{vars:?}");
    assert!(vars.contains(&"MISSING_C=from-the-parent"), "{vars:?}");
    assert!(
        vars.iter().any(|v| v.starts_with("COFFER_ADDR=http://")),
        "a variable set for coffer is CMD's too: {vars:?}"
    );
    // Undeclared values never come, and the runtime key stays with coffer.
    assert!(!out.stdout.contains("UNDECLARED_B"), "{}", out.stdout);
    assert!(!out.stdout.contains("beta-value-91c2"), "{}", out.stdout);
    assert!(!out.stdout.contains("COFFER_API_KEY"), "{}", out.stdout);
    assert!(!out.stderr.contains("alpha-value-7f3e"), "{}", out.stderr);

    // --only narrows the secrets (config keys still come); an undeclared name is refused
    // before CMD starts.
    let only = ran(s
        .command(
            &runtime,
            &[
                "run",
                "--function",
                "app",
                "--only",
                "MISSING_C",
                "--",
                "env",
            ],
        )
        .output()
        .unwrap());
    assert_eq!(only.code, Some(0), "{}", only.stderr);
    assert!(!only.stdout.contains("DECLARED_A"), "{}", only.stdout);
    assert!(only.stdout.contains("region=eu-west-1"), "{}", only.stdout);
    let marker = s.path("undeclared-ran");
    let refused = run_touching(&s, &runtime, &["--only", "UNDECLARED_B"], &marker);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("CMD was not started"),
        "{}",
        refused.stderr
    );
    assert!(!marker.exists(), "CMD ran");
}

/// `coffer run --function app EXTRA -- sh -c 'touch MARKER'` with `key`.
fn run_touching(s: &Server, key: &str, extra: &[&str], marker: &Path) -> Ran {
    let mut args = vec!["run", "--function", "app"];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", "touch \"$MARKER\""]);
    ran(s
        .command(key, &args)
        .env("MARKER", marker)
        .output()
        .unwrap())
}

#[test]
fn run_exits_with_the_childs_code_or_128_plus_its_signal() {
    let (s, runtime) = run_fixture();
    let seven = s.run_as(
        &runtime,
        &["run", "--function", "app", "--", "sh", "-c", "exit 7"],
    );
    assert_eq!(seven.code, Some(7), "{}", seven.stderr);
    assert_eq!(seven.stderr, "");
    let killed = s.run_as(
        &runtime,
        &[
            "run",
            "--function",
            "app",
            "--",
            "sh",
            "-c",
            "kill -TERM $$",
        ],
    );
    assert_eq!(killed.code, Some(128 + 15), "{}", killed.stderr);
    let missing = s.run_as(
        &runtime,
        &[
            "run",
            "--function",
            "app",
            "--",
            "/nonexistent/coffer-test-cmd",
        ],
    );
    assert_eq!(missing.code, Some(127), "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("cannot start /nonexistent/coffer-test-cmd")
    );
}

#[test]
fn run_passes_sigterm_and_sighup_on_to_the_child() {
    let (s, runtime) = run_fixture();
    for (signal_name, sent, code) in [("-TERM", Signal::TERM, "42"), ("-HUP", Signal::HUP, "43")] {
        let ready = s.path(&format!("ready{signal_name}"));
        let marker = s.path(&format!("caught{signal_name}"));
        let trapped = &signal_name[1..];
        let script = format!(
            "trap 'echo caught > \"$MARKER\"; exit {code}' {trapped}; echo up > \"$READY\"; {CHILD_LOOP}"
        );
        let child = s
            .command(
                &runtime,
                &["run", "--function", "app", "--", "sh", "-c", &script],
            )
            .env("READY", &ready)
            .env("MARKER", &marker)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = ChildGuard(child);
        wait_for("the child to start", || ready.exists());
        send_signal(child.0.id(), sent).unwrap();
        assert_eq!(exit_of(&mut child.0), Some(code.parse().unwrap()));
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "caught\n");
    }
}

#[test]
fn run_refuses_admin_manage_and_foreign_keys_before_cmd_starts() {
    let (s, runtime) = run_fixture();
    s.ok(&["env", "create", "staging"]);
    let manage = s.key("manage", "default");
    let foreign_runtime = s.key("runtime", "staging");
    for (who, key) in [
        ("admin", s.admin.as_str()),
        ("manage", &manage),
        ("staging runtime", &foreign_runtime),
    ] {
        let marker = s.path(&format!("ran-{}", who.replace(' ', "-")));
        let out = run_touching(&s, key, &["--env", "default"], &marker);
        assert_eq!(out.code, Some(4), "{who}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("coffer run needs a runtime key of default"),
            "{who}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("CMD was not started"),
            "{who}: {}",
            out.stderr
        );
        assert!(!marker.exists(), "{who}: CMD ran");
    }

    let marker = s.path("ran-unknown-function");
    let out = ran(s
        .command(
            &runtime,
            &[
                "run",
                "--function",
                "nope",
                "--",
                "sh",
                "-c",
                "touch \"$MARKER\"",
            ],
        )
        .env("MARKER", &marker)
        .output()
        .unwrap());
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("function_not_found"), "{}", out.stderr);
    assert!(out.stderr.contains("CMD was not started"), "{}", out.stderr);
    assert!(!marker.exists(), "CMD ran");

    // No key at all: the local admin.key is no fallback (it could never resolve).
    let marker = s.path("ran-without-key");
    let out = ran(clean_command(&[
        "run",
        "--function",
        "app",
        "--",
        "sh",
        "-c",
        "touch \"$MARKER\"",
    ])
    .env("COFFER_ADDR", &s.process.base)
    .env("COFFER_DATA_DIR", &s.process.data_dir)
    .env("XDG_CONFIG_HOME", &s.scratch)
    .env("MARKER", &marker)
    .stdin(Stdio::null())
    .output()
    .unwrap());
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(out.stderr.contains("set COFFER_API_KEY"), "{}", out.stderr);
    assert!(!marker.exists(), "CMD ran");
}

/// `coffer run --watch` with a child that appends the SHA-256 of DECLARED_A to LOG at
/// each start, then loops running `trap_setup` for TERM.
fn watched(s: &Server, runtime: &str, log: &Path, trap_setup: &str, extra: &[&str]) -> ChildGuard {
    let script =
        format!("printf %s \"$DECLARED_A\" | sha256sum >> \"$LOG\"; {trap_setup}; {CHILD_LOOP}");
    let mut args = vec![
        "run",
        "--function",
        "app",
        "--watch",
        "--watch-interval",
        "0.2",
    ];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", &script]);
    let stderr = std::fs::File::create(log.with_extension("stderr")).unwrap();
    let child = s
        .command(runtime, &args)
        .env("LOG", log)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    ChildGuard(child)
}

#[test]
fn watch_restarts_the_child_with_the_new_value_when_a_declared_secret_changes() {
    let (s, runtime) = run_fixture();
    let log = s.path("starts.log");
    let mut child = watched(&s, &runtime, &log, "trap 'exit 0' TERM", &[]);
    wait_for("the first start", || lines_of(&log).len() == 1);
    assert_eq!(lines_of(&log), [sha256_line("alpha-value-7f3e")]);

    // An undeclared secret changing is no reason to restart; the declared one is.
    s.ok(&["secret", "set", "UNDECLARED_B", "beta-rotated"]);
    s.ok(&["secret", "set", "DECLARED_A", "alpha-rotated-5d1c"]);
    wait_for("the restart", || lines_of(&log).len() >= 2);

    send_signal(child.0.id(), Signal::TERM).unwrap();
    assert_eq!(exit_of(&mut child.0), Some(0));
    assert_eq!(
        lines_of(&log),
        [
            sha256_line("alpha-value-7f3e"),
            sha256_line("alpha-rotated-5d1c")
        ]
    );
    let stderr = std::fs::read_to_string(log.with_extension("stderr")).unwrap();
    assert!(
        stderr.contains("DECLARED_A changed: restarting CMD"),
        "{stderr}"
    );
    assert!(!stderr.contains("alpha-"), "{stderr}");
}

#[test]
fn watch_kills_a_child_that_ignores_sigterm_after_the_grace_period() {
    let (s, runtime) = run_fixture();
    let log = s.path("stubborn.log");
    let mut child = watched(
        &s,
        &runtime,
        &log,
        "trap '' TERM; trap 'exit 3' HUP",
        &["--grace-period", "0.3"],
    );
    wait_for("the first start", || lines_of(&log).len() == 1);
    // Deleting a declared secret changes what CMD gets too.
    s.ok(&["secret", "delete", "DECLARED_A", "--yes"]);
    wait_for("the restart", || lines_of(&log).len() >= 2);
    assert_eq!(lines_of(&log)[1], sha256_line(""));
    send_signal(child.0.id(), Signal::HUP).unwrap();
    assert_eq!(exit_of(&mut child.0), Some(3));
    let stderr = std::fs::read_to_string(log.with_extension("stderr")).unwrap();
    assert!(stderr.contains("SIGKILL"), "{stderr}");
}

/// A declared name that steers execution (`NODE_OPTIONS`, `PATH`, `LD_*`, …) stops `coffer
/// run` before CMD starts, unless `--allow-env` names it.
#[test]
fn run_refuses_variables_that_steer_execution_unless_allowed() {
    let s = Server::start();
    s.ok(&["secret", "set", "NODE_OPTIONS", "--require=/tmp/evil.js"]);
    s.ok(&[
        "function",
        "register",
        "app",
        "--mode",
        "pull",
        "--secret",
        "NODE_OPTIONS",
    ]);
    let runtime = s.key("runtime", "default");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let refused = run_touching(&s, &runtime, &[], &marker);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--allow-env NODE_OPTIONS"),
        "{}",
        refused.stderr
    );
    assert!(!marker.exists(), "CMD did not start");
    let allowed = run_touching(&s, &runtime, &["--allow-env", "NODE_OPTIONS"], &marker);
    assert_eq!(allowed.code, Some(0), "{}", allowed.stderr);
    assert!(marker.exists());
}
