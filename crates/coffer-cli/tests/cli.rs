//! The `coffer` binary end to end: each test starts a real `coffer serve` on a free port
//! with a fresh data dir, then drives it with the real client commands and checks what a
//! user sees: stdout, stderr and the exit status. Tests of what gets stored run the server
//! in dev mode (no encryption key) and read the plaintext values from its database.

use std::cell::RefCell;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

mod common;

use common::{ServerProcess, clean_command};

const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// An address nothing listens on: a connection to port 1 is refused on these machines. (A
/// port found free and released could be taken by another test's server meanwhile.)
const CLOSED_ADDR: &str = "http://127.0.0.1:1";

#[test]
fn env_create_list_and_delete_in_human_and_json_output() {
    let server = Server::start();

    let created = server.ok(&["env", "create", "staging"]);
    assert_eq!(created, "created environment staging\n");
    let list = server.ok(&["env", "list"]);
    assert!(list.starts_with("NAME"), "{list}");
    assert!(list.lines().any(|l| l.starts_with("default ")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("staging ")), "{list}");

    let created = json(&server.ok(&["env", "create", "qa", "--json"]));
    assert_eq!(created["name"], "qa");
    let names = names_in(&json(&server.ok(&["env", "list", "--json"])));
    assert_eq!(names, ["default", "qa", "staging"]);

    assert_eq!(
        server.ok(&["env", "delete", "staging"]),
        "deleted environment staging with its secrets and API keys\n"
    );
    assert_eq!(server.ok(&["env", "delete", "qa", "--json"]), "");
    let names = names_in(&json(&server.ok(&["env", "list", "--json"])));
    assert_eq!(names, ["default"]);
}

#[test]
fn creating_an_existing_environment_fails_on_stderr_with_nothing_on_stdout() {
    let server = Server::start();
    let run = server.run(&["env", "create", "default"]);
    run.assert_failed_with("environment_exists");
    assert!(run.stderr.contains("HTTP 409"), "{}", run.stderr);
}

#[test]
fn secret_set_takes_the_value_from_the_argument_or_stdin_and_never_shows_it() {
    let server = Server::start();
    let first = server.canary();
    let second = server.canary();

    assert_eq!(
        server.ok(&["secret", "set", "API_KEY", &first]),
        "set API_KEY in default (revision 1)\n"
    );
    let piped = server.run_with(
        &["secret", "set", "API_KEY"],
        None,
        Some(&format!("{second}\n")),
    );
    assert!(piped.success, "{}", piped.stderr);
    assert_eq!(piped.stdout, "set API_KEY in default (revision 2)\n");

    let list = server.ok(&["secret", "list"]);
    let row: Vec<&str> = list
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        list.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "REVISION", "KEY-VERSION", "STATUS", "UPDATED"]
    );
    assert_eq!(&row[..4], ["API_KEY", "2", "1", "ok"], "{list}");

    let listed = json(&server.ok(&["secret", "list", "--json"]));
    let secret = &listed.as_array().expect("an array")[0];
    assert_eq!(secret["name"], "API_KEY");
    assert_eq!(secret["revision"], 2);
    assert_eq!(secret["environment"], "default");
    assert!(secret.get("value").is_none(), "{secret}");

    let set = json(&server.ok(&["secret", "set", "OTHER", &first, "--json"]));
    assert_eq!(set["revision"], 1);
    server.assert_log_free_of_canaries();
}

#[test]
fn secret_set_stores_the_argument_or_stdin_minus_one_trailing_newline() {
    let server = Server::start_dev();
    let body = server.canary();
    let pem =
        format!("-----BEGIN PRIVATE KEY-----\nMIIEvQ{body}\nAbCdEf==\n-----END PRIVATE KEY-----");

    assert_eq!(
        server.ok(&["secret", "set", "A", "value"]),
        "set A in default (revision 1)\n"
    );
    let piped = [
        ("B_LINE", "line\n".to_owned()),
        ("B_CRLF", "crlf\r\n".to_owned()),
        ("B_KEEP", "keep\n\n".to_owned()),
        ("B_BARE", "no newline at all".to_owned()),
        ("B_EMPTY_LINE", "\n".to_owned()),
        ("B_PEM", format!("{pem}\n")),
    ];
    for (name, stdin) in &piped {
        let run = server.run_with(&["secret", "set", name], None, Some(stdin));
        assert!(run.success, "`secret set {name}` failed:\n{}", run.stderr);
        assert_eq!(run.stdout, format!("set {name} in default (revision 1)\n"));
    }

    assert_eq!(
        server.stored_values("default"),
        [
            ("A", "value"),
            ("B_BARE", "no newline at all"),
            ("B_CRLF", "crlf"),
            ("B_EMPTY_LINE", ""),
            ("B_KEEP", "keep\n"),
            ("B_LINE", "line"),
            ("B_PEM", pem.as_str()),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );
    server.assert_log_free_of_canaries();
}

#[test]
fn empty_stdin_is_refused_and_sets_nothing() {
    let server = Server::start_dev();
    server.ok(&["secret", "set", "KEPT", "before"]);

    // Zero bytes on a pipe, and stdin at /dev/null: both are a forgotten value.
    for stdin in [Some(""), None] {
        for name in ["NEW", "KEPT"] {
            let mut cmd = server.command(&["secret", "set", name]);
            let run = Run::of(&mut cmd, stdin);
            run.assert_failed_with("stdin");
        }
    }

    assert_eq!(
        server.stored_values("default"),
        [("KEPT".to_owned(), "before".to_owned())]
    );
    let list = json(&server.ok(&["secret", "list", "--json"]));
    assert_eq!(names_in(&list), ["KEPT"]);
    assert_eq!(list[0]["revision"], 1, "a refused write changes nothing");
}

#[test]
fn values_that_look_like_flags_or_several_words_are_never_echoed() {
    let server = Server::start();
    let dashed = format!("--{}", server.canary());
    let set = server.ok(&["secret", "set", "PEM", &dashed, "--expected-revision", "0"]);
    assert_eq!(set, "set PEM in default (revision 1)\n");

    let word = server.canary();
    let run = server.run(&["secret", "set", "PHRASE", "correct", &word, "staple"]);
    run.assert_failed_with("VALUE must be one argument");

    let piped = server.run_with(
        &["secret", "set", "PEM", "--expected-revision", "1"],
        None,
        Some(&word),
    );
    assert_eq!(
        piped.stdout, "set PEM in default (revision 2)\n",
        "{}",
        piped.stderr
    );
    server.assert_log_free_of_canaries();
}

#[test]
fn a_stale_expected_revision_fails_and_names_the_current_revision() {
    let server = Server::start();
    let value = server.canary();
    server.ok(&["secret", "set", "TOKEN", &value]);
    let updated = server.ok(&["secret", "set", "TOKEN", &value, "--expected-revision", "1"]);
    assert_eq!(updated, "set TOKEN in default (revision 2)\n");

    let stale = server.run(&["secret", "set", "TOKEN", &value, "--expected-revision", "1"]);
    stale.assert_failed_with("revision");
    assert!(names_current_revision(&stale.stderr, 2), "{}", stale.stderr);

    let must_be_new = server.run(&["secret", "set", "TOKEN", &value, "--expected-revision", "0"]);
    must_be_new.assert_failed_with("revision_conflict");

    let list = json(&server.ok(&["secret", "list", "--json"]));
    assert_eq!(list[0]["revision"], 2, "a refused write changes nothing");
    server.assert_log_free_of_canaries();
}

#[test]
fn secret_delete_removes_the_secret_and_honours_expected_revision() {
    let server = Server::start();
    let value = server.canary();
    server.ok(&["secret", "set", "KEEP", &value]);
    server.ok(&["secret", "set", "GONE", &value]);
    server.ok(&["secret", "set", "GONE", &value]);

    let stale = server.run(&["secret", "delete", "GONE", "--expected-revision", "1"]);
    stale.assert_failed_with("revision_conflict");
    assert!(names_current_revision(&stale.stderr, 2), "{}", stale.stderr);
    assert_eq!(
        server.ok(&["secret", "delete", "GONE", "--expected-revision", "2"]),
        "deleted GONE from default\n"
    );
    assert_eq!(
        names_in(&json(&server.ok(&["secret", "list", "--json"]))),
        ["KEEP"]
    );

    server
        .run(&["secret", "delete", "GONE"])
        .assert_failed_with("secret_not_found");
    server.assert_log_free_of_canaries();
}

#[test]
fn secret_import_sets_every_dotenv_entry_at_revision_one() {
    let server = Server::start();
    let [a, b, c, d, e] = [(); 5].map(|()| server.canary());
    let file = server.dir.path().join("app.env");
    let dotenv = format!(
        "# settings for the app\n\
         \n\
         PLAIN={a}   # trailing comment\n\
         export EXPORTED={b}\n\
         SINGLE='{c} # not a comment'\n\
         DOUBLE=\"{d}\\n\\t\\\"quoted\\\"\"\n\
         PEM=\"-----BEGIN KEY-----\n{e}\n-----END KEY-----\"\n\
         EMPTY=\n"
    );
    std::fs::write(&file, dotenv).unwrap();

    let imported = server.ok(&["secret", "import", path(&file)]);
    assert_eq!(imported, "imported 6 secrets into default\n");

    let list = json(&server.ok(&["secret", "list", "--json"]));
    assert_eq!(
        names_in(&list),
        ["DOUBLE", "EMPTY", "EXPORTED", "PEM", "PLAIN", "SINGLE"]
    );
    for secret in list.as_array().unwrap() {
        assert_eq!(secret["revision"], 1, "{secret}");
    }
    server.assert_log_free_of_canaries();
}

#[test]
fn secret_import_stores_the_values_a_dotenv_reader_gives() {
    let server = Server::start_dev();
    let body = server.canary();
    let file = server.dir.path().join("windows.env");
    // CRLF line ends throughout, as an editor on Windows writes them.
    let dotenv = [
        "# app settings",
        "export EXPORTED=from-export",
        r"SINGLE='single # not a comment \n $HOME'",
        r#"DOUBLE="tab\there \"quoted\" it\'s back\\slash\nnext""#,
        "PEM=\"-----BEGIN KEY-----",
        body.as_str(),
        "-----END KEY-----\"  # the key",
        "EMPTY=",
        "HASH= # a template comment, not a value",
        "COMMENTED=a #comment",
        "NOT_A_COMMENT=a#b",
        "VARIABLE=${HOME}/$USER",
        "SPACED  =  inner  spaces  ",
        "LAST=no final line break",
    ]
    .join("\r\n");
    std::fs::write(&file, dotenv).unwrap();

    assert_eq!(
        server.ok(&["secret", "import", path(&file)]),
        "imported 11 secrets into default\n"
    );
    let from_stdin = server.run_with(
        &["secret", "import", "-"],
        None,
        Some("FROM_STDIN='piped in'\n"),
    );
    assert!(from_stdin.success, "{}", from_stdin.stderr);

    let pem = format!("-----BEGIN KEY-----\n{body}\n-----END KEY-----");
    assert_eq!(
        server.stored_values("default"),
        [
            ("COMMENTED", "a"),
            ("DOUBLE", "tab\there \"quoted\" it's back\\slash\nnext"),
            ("EMPTY", ""),
            ("EXPORTED", "from-export"),
            ("FROM_STDIN", "piped in"),
            ("HASH", ""),
            ("LAST", "no final line break"),
            ("NOT_A_COMMENT", "a#b"),
            ("PEM", pem.as_str()),
            ("SINGLE", r"single # not a comment \n $HOME"),
            ("SPACED", "inner  spaces"),
            ("VARIABLE", "${HOME}/$USER"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );
    server.assert_log_free_of_canaries();
}

#[test]
fn secret_import_of_a_broken_file_names_the_line_and_sets_nothing() {
    let server = Server::start();
    let value = server.canary();
    let file = server.dir.path().join("broken.env");
    std::fs::write(&file, format!("GOOD=1\n\n{value}\n")).unwrap();

    let run = server.run(&["secret", "import", path(&file)]);
    run.assert_failed_with("line 3");
    assert_eq!(server.ok(&["secret", "list", "--json"]).trim(), "[]");
}

#[test]
fn secret_list_follows_every_page() {
    let server = Server::start();
    let file = server.dir.path().join("many.env");
    let names: Vec<String> = (0..7).map(|i| format!("S{i}")).collect();
    let body: String = names.iter().map(|n| format!("{n}=v\n")).collect();
    std::fs::write(&file, body).unwrap();
    server.ok(&["secret", "import", path(&file)]);

    let listed = json(&server.ok(&["secret", "list", "--json", "--page-size", "3"]));
    assert_eq!(names_in(&listed), names);
    let table = server.ok(&["secret", "list", "--page-size", "2"]);
    assert_eq!(table.lines().count(), 1 + names.len(), "{table}");
}

#[test]
fn a_manage_key_works_in_its_own_environment_without_env_and_may_not_create_environments() {
    let server = Server::start();
    let value = server.canary();
    server.ok(&["env", "create", "prod"]);
    server.ok(&["secret", "set", "DB_PASSWORD", &value, "--env", "prod"]);
    server.ok(&["secret", "set", "ELSEWHERE", &value]);

    let created = server.ok(&[
        "apikey", "create", "ci", "--role", "manage", "--env", "prod",
    ]);
    assert!(created.contains("will not be shown again"), "{created}");
    let key = key_in(&created);
    assert!(key.starts_with("ck_prod_"), "{created}");

    let list = server.run_with(&["secret", "list"], Some(&key), None);
    assert!(list.success, "{}", list.stderr);
    assert_eq!(
        list.stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect::<Vec<_>>(),
        ["DB_PASSWORD"]
    );
    let set = server.run_with(&["secret", "set", "FROM_CI"], Some(&key), Some(&value));
    assert_eq!(
        set.stdout, "set FROM_CI in prod (revision 1)\n",
        "{}",
        set.stderr
    );

    let forbidden = server.run_with(&["env", "create", "mine"], Some(&key), None);
    forbidden.assert_failed_with("forbidden");
    assert!(
        forbidden.stderr.contains("HTTP 403"),
        "{}",
        forbidden.stderr
    );
    let other_env = server.run_with(&["secret", "list", "--env", "default"], Some(&key), None);
    other_env.assert_failed_with("HTTP 403");
    server.assert_log_free_of_canaries();
}

#[test]
fn apikey_list_shows_keys_without_the_key_and_a_revoked_key_is_unauthorized() {
    let server = Server::start();
    let created = json(&server.ok(&[
        "apikey",
        "create",
        "deploy-bot",
        "--role",
        "manage",
        "--json",
    ]));
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    assert_eq!(created["environment"], "default");
    assert!(key.starts_with("ck_default_"), "{created}");

    let list = server.ok(&["apikey", "list"]);
    let row = list
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{id} missing from\n{list}"));
    assert_eq!(
        row.split_whitespace().take(4).collect::<Vec<_>>(),
        [id, "deploy-bot", "manage", "default"]
    );
    assert!(!list.contains(key), "{list}");
    let listed = json(&server.ok(&["apikey", "list", "--json"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none()),
        "{listed}"
    );

    assert!(
        server
            .run_with(&["secret", "list"], Some(key), None)
            .success
    );
    assert_eq!(
        server.ok(&["apikey", "revoke", id]),
        format!("revoked API key {id}\n")
    );
    assert!(!server.ok(&["apikey", "list"]).contains(id));
    server
        .run_with(&["secret", "list"], Some(key), None)
        .assert_failed_with("unauthorized");
}

#[test]
fn an_admin_key_is_created_without_an_environment() {
    let server = Server::start();
    let created = server.ok(&["apikey", "create", "ops", "--role", "admin"]);
    let key = key_in(&created);
    assert!(key.starts_with("ck_admin_"), "{created}");
    let envs = server.run_with(&["env", "create", "made-by-ops"], Some(&key), None);
    assert!(envs.success, "{}", envs.stderr);
}

#[test]
fn without_an_api_key_a_local_server_is_called_with_its_admin_key_file() {
    let server = Server::start();
    let mut cmd = server.command(&["env", "list", "--data-dir", path(&server.data_dir())]);
    cmd.env_remove("COFFER_API_KEY");
    let run = Run::of(&mut cmd, None);
    assert!(run.success, "{}", run.stderr);
    assert!(run.stdout.contains("default"), "{}", run.stdout);
}

#[test]
fn without_an_api_key_or_admin_key_file_the_error_says_to_set_coffer_api_key() {
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = clean_command(&["env", "list", "--data-dir", path(empty.path())]);
    cmd.env("COFFER_ADDR", CLOSED_ADDR);
    Run::of(&mut cmd, None).assert_failed_with("set COFFER_API_KEY");
}

#[test]
fn a_closed_port_says_no_coffer_server_answers() {
    let mut cmd = clean_command(&["secret", "list"]);
    cmd.env("COFFER_ADDR", CLOSED_ADDR)
        .env("COFFER_API_KEY", "ck_admin_00");
    let run = Run::of(&mut cmd, None);
    run.assert_failed_with(&format!("no Coffer server answers at {CLOSED_ADDR}"));
    assert!(run.stderr.contains("coffer serve"), "{}", run.stderr);
}

#[test]
fn an_invalid_name_is_refused_before_any_request() {
    let mut cmd = clean_command(&["secret", "set", "1BAD", "value"]);
    cmd.env("COFFER_ADDR", CLOSED_ADDR)
        .env("COFFER_API_KEY", "ck_admin_00");
    let run = Run::of(&mut cmd, None);
    run.assert_failed_with("NAME must be");
    assert!(
        !run.stderr.contains("1BAD"),
        "the name is echoed:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("no Coffer server"), "{}", run.stderr);
}

// ----- harness -----

/// A `coffer serve` child process with its own data dir, and the canary values every
/// command's output is checked against.
struct Server {
    process: ServerProcess,
    addr: String,
    admin_key: String,
    dir: tempfile::TempDir,
    canaries: RefCell<Vec<String>>,
}

impl Server {
    /// A server that encrypts values with [`MASTER_KEY`].
    fn start() -> Server {
        Server::start_with(&[("COFFER_MASTER_KEY", MASTER_KEY)])
    }

    /// A server in dev mode: no encryption key, so values are stored as plaintext and
    /// [`Server::stored_values`] can check them.
    fn start_dev() -> Server {
        Server::start_with(&[])
    }

    fn start_with(envs: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let process = ServerProcess::start(&dir.path().join("data"), envs, &[]);
        Server {
            addr: process.base.clone(),
            admin_key: process.admin_key(),
            process,
            dir,
            canaries: RefCell::new(Vec::new()),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A random secret value; every later command's output is checked not to contain it.
    fn canary(&self) -> String {
        let random = RandomState::new().hash_one(SystemTime::now());
        let canary = format!("canary{random:016x}");
        self.canaries.borrow_mut().push(canary.clone());
        canary
    }

    /// `coffer ARGS` against this server with the admin key.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = clean_command(args);
        cmd.env("COFFER_ADDR", &self.addr)
            .env("COFFER_API_KEY", &self.admin_key);
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None, None)
    }

    /// Runs a command, with another API key and/or stdin, and checks no canary shows.
    fn run_with(&self, args: &[&str], key: Option<&str>, stdin: Option<&str>) -> Run {
        let mut cmd = self.command(args);
        if let Some(key) = key {
            cmd.env("COFFER_API_KEY", key);
        }
        let run = Run::of(&mut cmd, stdin);
        for canary in self.canaries.borrow().iter() {
            assert!(
                !run.stdout.contains(canary) && !run.stderr.contains(canary),
                "a secret value was shown by `coffer {}`:\nstdout: {}\nstderr: {}",
                args.join(" "),
                run.stdout,
                run.stderr
            );
        }
        run
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(
            run.success,
            "`coffer {}` failed:\n{}",
            args.join(" "),
            run.stderr
        );
        assert!(
            run.stderr.is_empty(),
            "`coffer {}` wrote to stderr:\n{}",
            args.join(" "),
            run.stderr
        );
        run.stdout
    }

    /// Every secret of `env` as `(name, value)` in name order, read straight from the
    /// database of a [`Server::start_dev`] server (which commits before it answers).
    fn stored_values(&self, env: &str) -> Vec<(String, String)> {
        let db = self.process.data_dir.join("coffer.db");
        let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
        let mut stmt = conn
            .prepare(
                "SELECT name, value, key_version FROM secrets WHERE environment = ?1
                 ORDER BY name",
            )
            .unwrap();
        let rows = stmt
            .query_map([env], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .unwrap();
        rows.map(|row| {
            let (name, value, key_version) = row.unwrap();
            assert_eq!(
                key_version, 0,
                "{name} is not stored as plaintext: not dev mode?"
            );
            (name, value)
        })
        .collect()
    }

    fn assert_log_free_of_canaries(&self) {
        let log = self.process.log();
        for canary in self.canaries.borrow().iter() {
            assert!(
                !log.contains(canary),
                "a secret value is in the server log:\n{log}"
            );
        }
    }
}

/// What a finished `coffer` command showed.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(cmd: &mut Command, stdin: Option<&str>) -> Run {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn coffer");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).unwrap();
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        Run {
            success: status.success(),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }

    /// Failed with a non-zero exit, `error: …` naming `needle` on stderr, nothing on stdout.
    fn assert_failed_with(&self, needle: &str) {
        assert!(
            !self.success,
            "expected a failure, got stdout:\n{}",
            self.stdout
        );
        assert!(
            self.stdout.is_empty(),
            "a failure printed to stdout:\n{}",
            self.stdout
        );
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The `name` of every item of a JSON array.
fn names_in(list: &Value) -> Vec<String> {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    items
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether an error names `n` as the current revision (the server's words or the client's).
fn names_current_revision(stderr: &str, n: u64) -> bool {
    stderr.contains(&format!("current revision is {n}"))
        || stderr.contains(&format!("current revision: {n}"))
}

/// The API key in `coffer apikey create`'s human output.
fn key_in(output: &str) -> String {
    let key = output
        .split_whitespace()
        .find(|word| word.starts_with("ck_"));
    key.unwrap_or_else(|| panic!("no key in:\n{output}"))
        .to_owned()
}
