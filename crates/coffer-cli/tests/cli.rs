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

/// What the terminal tests' shell prints once `coffer login` has turned echo off.
const ECHO_OFF: &str = "ECHO-IS-OFF";

/// The name of the admin key a first start creates.
const FIRST_ADMIN: &str = "admin (first start)";

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
        server.ok(&["env", "delete", "staging", "--yes"]),
        "deleted environment staging with its secrets, config and API keys\n"
    );
    assert_eq!(server.ok(&["env", "delete", "qa", "--json", "-y"]), "");
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
    // The server searches and sorts: OTHER was written last.
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["secret", "list", "--json"];
        all.extend_from_slice(args);
        json(&server.ok(&all))
            .as_array()
            .expect("an array")
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&[]), ["API_KEY", "OTHER"]);
    assert_eq!(names(&["--sort", "-updatedAt"]), ["OTHER", "API_KEY"]);
    assert_eq!(names(&["--sort", "-name"]), ["OTHER", "API_KEY"]);
    assert_eq!(names(&["--search", "api"]), ["API_KEY"]);
    assert!(
        !server
            .run_with(&["secret", "list", "--sort", "revision"], None, None)
            .success
    );
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

    let stale = server.run(&[
        "secret",
        "delete",
        "GONE",
        "--expected-revision",
        "1",
        "--yes",
    ]);
    stale.assert_failed_with("revision_conflict");
    assert!(names_current_revision(&stale.stderr, 2), "{}", stale.stderr);
    assert_eq!(
        server.ok(&[
            "secret",
            "delete",
            "GONE",
            "--expected-revision",
            "2",
            "--yes"
        ]),
        "deleted GONE from default\n"
    );
    assert_eq!(
        names_in(&json(&server.ok(&["secret", "list", "--json"]))),
        ["KEEP"]
    );

    server
        .run(&["secret", "delete", "GONE", "--yes"])
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
    assert_eq!(
        imported,
        "imported 6 secrets into default: 6 created, 0 updated, 0 unchanged\n"
    );

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
        "imported 11 secrets into default: 11 created, 0 updated, 0 unchanged\n"
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

/// Importing the same file again changes nothing (no new revisions); an edited file
/// updates only what changed.
#[test]
fn secret_import_again_reports_unchanged_values_and_keeps_their_revisions() {
    let server = Server::start();
    let [a, b] = [(); 2].map(|()| server.canary());
    let file = server.dir.path().join("app.env");
    std::fs::write(&file, format!("A={a}\nB={b}\n")).unwrap();
    server.ok(&["secret", "import", path(&file)]);
    assert_eq!(
        server.ok(&["secret", "import", path(&file)]),
        "imported 2 secrets into default: 0 created, 0 updated, 2 unchanged\n"
    );
    let c = server.canary();
    std::fs::write(&file, format!("A={a}\nB={c}\n")).unwrap();
    let answer = json(&server.ok(&["secret", "import", path(&file), "--json"]));
    let results: Vec<(&str, &str, u64)> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["result"].as_str().unwrap(),
                r["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(results, [("A", "unchanged", 1), ("B", "updated", 2)]);
    server.assert_log_free_of_canaries();
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

    let key = server.created_key(&["ci", "--role", "manage", "--env", "prod"]);
    assert!(key.starts_with("ck_prod_"), "{key}");

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
        "--env",
        "default",
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
        server.ok(&["apikey", "revoke", id, "--yes"]),
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
    let key = server.created_key(&["ops", "--role", "admin"]);
    assert!(key.starts_with("ck_admin_"), "{key}");
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
    cmd.env("COFFER_ADDR", CLOSED_ADDR)
        .env("XDG_CONFIG_HOME", empty.path().join("config"));
    let run = Run::of(&mut cmd, None);
    run.assert_failed_with("set COFFER_API_KEY");
    assert!(run.stderr.contains("coffer login"), "{}", run.stderr);
    assert_eq!(run.code, Some(4), "no key: exit code 4");
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

#[test]
fn apikey_create_refuses_an_admin_key_with_an_environment() {
    let server = Server::start();
    server.ok(&["env", "create", "production"]);
    let flag = server.run(&[
        "apikey",
        "create",
        "x",
        "--role",
        "admin",
        "--env",
        "production",
    ]);
    flag.assert_failed_with("an admin key has no environment");
    assert_eq!(flag.code, Some(2), "a usage error");
    let mut cmd = server.command(&["apikey", "create", "x", "--role", "admin"]);
    cmd.env("COFFER_ENV", "production");
    Run::of(&mut cmd, None).assert_failed_with("unset COFFER_ENV");
    assert_eq!(server.api_key_names(), [FIRST_ADMIN], "nothing was created");
}

#[test]
fn apikey_create_refuses_a_manage_or_runtime_key_without_an_environment() {
    let server = Server::start();
    server.ok(&["env", "create", "prod"]);
    for role in ["manage", "runtime"] {
        let run = server.run(&["apikey", "create", "x", "--role", role]);
        run.assert_failed_with(&format!("a {role} key belongs to one environment"));
        assert!(run.stderr.contains("--env"), "{}", run.stderr);
        assert_eq!(run.code, Some(2), "a usage error");
    }
    assert_eq!(server.api_key_names(), [FIRST_ADMIN], "nothing was created");

    let mut cmd = server.command(&[
        "apikey", "create", "from-var", "--role", "runtime", "--json",
    ]);
    cmd.env("COFFER_ENV", "prod");
    let run = Run::of(&mut cmd, None);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(json(&run.stdout)["environment"], "prod");
}

#[test]
fn apikey_create_prints_only_the_key_on_stdout_when_it_is_not_a_terminal() {
    let server = Server::start();
    let key = server.created_key(&["ci", "--role", "manage", "--env", "default"]);
    assert!(key.starts_with("ck_default_"), "{key}");
    let list = server.run_with(&["secret", "list"], Some(&key), None);
    assert!(list.success, "the printed key works: {}", list.stderr);
}

#[test]
fn keys_status_counts_encryptions_of_versions_missing_from_the_keyring() {
    let mut server = Server::start();
    for name in ["A", "B", "C"] {
        server.ok(&["secret", "set", name, "v"]);
    }
    let v2 = format!(
        r#"{{"currentKeyVersion": 2, "keys": {{"2": "{}"}}}}"#,
        "ab".repeat(32)
    );
    server.restart_with(&[("COFFER_SECRET_KEYS", &v2)], &["--allow-unreadable"]);

    let status = server.ok(&["keys", "status"]);
    let row = |version: &str| -> Vec<String> {
        status
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|cells| cells.first().map(String::as_str) == Some(version))
            .unwrap_or_else(|| panic!("no version {version} in\n{status}"))
    };
    // VERSION CURRENT IN-KEYRING VALUES SIGNING-SECRETS ORCHESTRATION-PARAMS ENCRYPTIONS
    assert_eq!(row("1"), ["1", "no", "no", "3", "0", "0", "3"], "{status}");
    assert_eq!(
        row("2"),
        ["2", "yes", "yes", "0", "0", "0", "0"],
        "{status}"
    );
}

#[test]
fn keys_status_in_dev_mode_says_encryption_is_disabled_and_how_to_enable_it() {
    let server = Server::start_dev();
    server.ok(&["secret", "set", "ONLY", "v"]);
    let status = server.ok(&["keys", "status"]);
    assert!(
        status.starts_with("encryption is disabled (dev mode)"),
        "{status}"
    );
    assert!(status.contains("1 value now"), "{status}");
    assert!(status.contains("COFFER_MASTER_KEY"), "{status}");
    assert!(!status.contains("VERSION"), "no empty table: {status}");
    let json_status = json(&server.ok(&["keys", "status", "--json"]));
    assert_eq!(json_status["encryption"], "disabled");
}

#[test]
fn a_value_over_64_kib_is_refused_before_it_is_sent_naming_the_value_limit() {
    let server = Server::start_dev();
    let limit = 64 * 1024;
    let over_by_one = "x".repeat(limit + 1);
    let run = server.run(&["secret", "set", "BIG", &over_by_one]);
    run.assert_failed_with("64 KiB value limit");
    assert_eq!(run.code, Some(2), "a usage error");

    let huge = "y".repeat(3 * 1024 * 1024 / 2);
    let piped = server.run_with(&["secret", "set", "BIG"], None, Some(&huge));
    piped.assert_failed_with("64 KiB value limit");
    assert!(!piped.stderr.contains("1 MiB"), "{}", piped.stderr);
    assert!(!piped.stderr.contains("body"), "{}", piped.stderr);

    // Exactly at the limit, plus the newline a pipe adds, is accepted.
    let at_limit = format!("{}\n", "z".repeat(limit));
    let ok = server.run_with(&["secret", "set", "AT_LIMIT"], None, Some(&at_limit));
    assert!(ok.success, "{}", ok.stderr);

    let file = server.dir.path().join("big.env");
    std::fs::write(&file, format!("FIRST=1\nSECOND={over_by_one}\n")).unwrap();
    let import = server.run(&["secret", "import", path(&file)]);
    import.assert_failed_with("64 KiB value limit");
    assert!(import.stderr.contains("SECOND"), "{}", import.stderr);

    let stored = server.stored_values("default");
    assert_eq!(
        stored.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["AT_LIMIT"],
        "nothing over the limit, and no part of the import, was stored"
    );
}

#[test]
fn secret_show_prints_one_secrets_metadata_as_a_table_or_json() {
    let server = Server::start();
    let value = server.canary();
    server.ok(&["secret", "set", "TOKEN", &value]);
    server.ok(&["secret", "set", "TOKEN", &value]);

    let table = server.ok(&["secret", "show", "TOKEN"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "ENVIRONMENT",
            "REVISION",
            "KEY-VERSION",
            "STATUS",
            "CREATED",
            "UPDATED"
        ]
    );
    assert_eq!(
        &lines[1][..5],
        ["TOKEN", "default", "2", "1", "ok"],
        "{table}"
    );
    assert_eq!(lines.len(), 2, "{table}");

    let shown = json(&server.ok(&["secret", "show", "TOKEN", "--json"]));
    assert_eq!(shown["name"], "TOKEN");
    assert_eq!(shown["revision"], 2);
    assert!(shown.get("value").is_none(), "{shown}");

    let missing = server.run(&["secret", "show", "MISSING"]);
    missing.assert_failed_with("secret_not_found");
    assert_eq!(missing.code, Some(3), "not found");
    server.assert_log_free_of_canaries();
}

#[test]
fn secret_get_read_and_reveal_say_values_are_write_only_and_where_to_use_them() {
    let server = Server::start();
    let value = server.canary();
    server.ok(&["secret", "set", "TOKEN", &value]);
    for verb in ["get", "read", "reveal"] {
        let run = server.run(&["secret", verb, "TOKEN"]);
        run.assert_failed_with("write-only");
        assert!(run.stderr.contains("runtime plane"), "{}", run.stderr);
        assert!(run.stderr.contains("coffer run"), "{}", run.stderr);
        assert!(run.stderr.contains("coffer secret show"), "{}", run.stderr);
        assert!(!run.stderr.contains("secret set"), "{}", run.stderr);
        assert_eq!(run.code, Some(2), "`secret {verb}`");
    }
    let help = server.ok(&["secret", "--help"]);
    assert!(!help.contains("reveal"), "hidden from help: {help}");
}

#[test]
fn login_stores_the_key_privately_per_address_and_later_commands_use_it() {
    let server = Server::start();
    let login = server.login(&server.addr, &server.admin_key);
    assert!(login.success, "{}", login.stderr);
    assert!(login.stdout.contains("logged in to"), "{}", login.stdout);
    assert!(
        !login.stdout.contains(&server.admin_key) && !login.stderr.contains(&server.admin_key),
        "the key is shown"
    );

    let dir = server.home().join(".config").join("coffer");
    let file = dir.join("credentials.json");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&file), 0o600);
    let stored = json(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(
        stored["keys"][format!("{}/", server.addr)].as_str(),
        Some(server.admin_key.as_str())
    );

    // No COFFER_API_KEY, no admin.key where the client looks: the stored login is used.
    let empty = tempfile::tempdir().unwrap();
    let run = server.without_key(&[
        "env",
        "create",
        "via-login",
        "--data-dir",
        path(empty.path()),
    ]);
    assert!(run.success, "{}", run.stderr);

    let logout = server.without_key(&["logout"]);
    assert!(logout.success, "{}", logout.stderr);
    assert!(logout.stdout.contains("logged out"), "{}", logout.stdout);
    let after = server.without_key(&["env", "list", "--data-dir", path(empty.path())]);
    after.assert_failed_with("coffer login");
    assert_eq!(after.code, Some(4));
}

#[test]
fn login_uses_xdg_config_home_and_keeps_other_addresses() {
    let server = Server::start();
    let config = server.dir.path().join("xdg");
    let mut cmd = server.command(&["login"]);
    cmd.env("XDG_CONFIG_HOME", &config);
    let run = Run::of(&mut cmd, Some(&server.admin_key));
    assert!(run.success, "{}", run.stderr);
    let file = config.join("coffer").join("credentials.json");
    assert!(file.exists(), "{}", file.display());
    assert!(!server.home().join(".config").exists());

    // A login to another address (checked against another server) keeps the first.
    let other = Server::start();
    let mut cmd = other.command(&["login"]);
    cmd.env("XDG_CONFIG_HOME", &config);
    assert!(Run::of(&mut cmd, Some(&other.admin_key)).success);
    let stored = json(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(stored["keys"].as_object().unwrap().len(), 2, "{stored}");
}

#[test]
fn login_refuses_a_wrong_key_and_accepts_a_runtime_key() {
    let server = Server::start();
    let wrong = server.login(
        &server.addr,
        "ck_admin_000000000000000000000000000000000000000000000000",
    );
    wrong.assert_failed_with("does not accept this key");
    assert_eq!(wrong.code, Some(4));
    assert!(!wrong.stderr.contains("ck_admin_0000"), "{}", wrong.stderr);
    assert!(
        !server
            .home()
            .join(".config/coffer/credentials.json")
            .exists()
    );

    let runtime = server.created_key(&["worker", "--role", "runtime", "--env", "default"]);
    let login = server.login(&server.addr, &runtime);
    assert!(
        login.success,
        "a runtime key is a valid key: {}",
        login.stderr
    );

    let empty = server.login(&server.addr, "\n");
    empty.assert_failed_with("no key");
    assert_eq!(empty.code, Some(2));
}

#[test]
fn an_api_key_beats_a_stored_login_which_beats_the_local_admin_key() {
    let server = Server::start();
    let runtime = server.created_key(&["worker", "--role", "runtime", "--env", "default"]);
    assert!(server.login(&server.addr, &runtime).success);

    // The stored runtime key is used although admin.key is right there: runtime may not list.
    let stored = server.without_key(&["env", "list", "--data-dir", path(&server.data_dir())]);
    stored.assert_failed_with("forbidden");
    // COFFER_API_KEY wins over the stored login.
    let explicit = server.run(&["env", "list"]);
    assert!(explicit.success, "{}", explicit.stderr);
    // Without the login, admin.key is found.
    assert!(server.without_key(&["logout"]).success);
    let local = server.without_key(&["env", "list", "--data-dir", path(&server.data_dir())]);
    assert!(local.success, "{}", local.stderr);
}

#[test]
fn coffer_data_dir_finds_the_local_admin_key_from_any_directory() {
    let server = Server::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = server.command(&["env", "list"]);
    cmd.env_remove("COFFER_API_KEY")
        .env("COFFER_DATA_DIR", server.data_dir())
        .current_dir(elsewhere.path());
    let run = Run::of(&mut cmd, None);
    assert!(run.success, "{}", run.stderr);
    assert!(run.stdout.contains("default"), "{}", run.stdout);

    let mut cmd = server.command(&["env", "list"]);
    cmd.env_remove("COFFER_API_KEY")
        .current_dir(elsewhere.path());
    let run = Run::of(&mut cmd, None);
    run.assert_failed_with("COFFER_DATA_DIR");
}

#[test]
fn destructive_commands_without_a_terminal_need_yes_and_delete_nothing_without_it() {
    let server = Server::start();
    let value = server.canary();
    server.ok(&["env", "create", "doomed"]);
    server.ok(&["secret", "set", "KEPT", &value]);
    server.ok(&["config", "set", "KEPT", "1"]);
    let created = json(&server.ok(&[
        "apikey", "create", "bot", "--role", "manage", "--env", "default", "--json",
    ]));
    let id = created["id"].as_str().unwrap();

    for args in [
        vec!["env", "delete", "doomed"],
        vec!["secret", "delete", "KEPT"],
        vec!["config", "delete", "KEPT"],
        vec!["apikey", "revoke", id],
    ] {
        // stdin a pipe (with a "y" that must not count) and stdin /dev/null.
        for stdin in [Some("y\n"), None] {
            let run = server.run_with(&args, None, stdin);
            run.assert_failed_with("--yes");
            assert!(run.stderr.contains("not a terminal"), "{}", run.stderr);
            assert_eq!(run.code, Some(2), "`coffer {}`", args.join(" "));
        }
    }
    assert_eq!(
        names_in(&json(&server.ok(&["env", "list", "--json"]))),
        ["default", "doomed"]
    );
    assert_eq!(
        names_in(&json(&server.ok(&["secret", "list", "--json"]))),
        ["KEPT"]
    );
    assert_eq!(server.api_key_names(), [FIRST_ADMIN, "bot"]);
    assert_eq!(server.ok(&["config", "get", "KEPT"]), "1\n");

    server.ok(&["config", "delete", "KEPT", "--yes"]);
    server.ok(&["env", "delete", "doomed", "-y"]);
    server.ok(&["secret", "delete", "KEPT", "--yes"]);
    server.ok(&["apikey", "revoke", id, "-y"]);
    assert_eq!(
        names_in(&json(&server.ok(&["env", "list", "--json"]))),
        ["default"]
    );
    assert_eq!(server.api_key_names(), [FIRST_ADMIN]);
}

#[test]
fn config_set_get_list_and_delete_json_values_from_arguments_or_stdin() {
    let server = Server::start();
    assert_eq!(
        server.ok(&[
            "config",
            "set",
            "limits",
            r#"{"rps": 100, "burst": [1, 2]}"#
        ]),
        "set config limits in default (revision 1)\n"
    );
    assert_eq!(
        server
            .run_with(&["config", "set", "region"], None, Some("\"eu-west-1\"\n"))
            .stdout,
        "set config region in default (revision 1)\n"
    );
    let pretty = server.ok(&["config", "get", "limits"]);
    assert_eq!(json(&pretty), json(r#"{"burst": [1, 2], "rps": 100}"#));
    assert_eq!(server.ok(&["config", "get", "region"]), "\"eu-west-1\"\n");
    let entry = json(&server.ok(&["config", "get", "region", "--json"]));
    assert_eq!(entry["key"], "region");
    assert_eq!(entry["environment"], "default");
    assert_eq!(entry["revision"], 1);

    let updated = server.ok(&[
        "config",
        "set",
        "region",
        "\"us-east-1\"",
        "--expected-revision",
        "1",
    ]);
    assert_eq!(updated, "set config region in default (revision 2)\n");
    let stale = server.run(&[
        "config",
        "set",
        "region",
        "null",
        "--expected-revision",
        "1",
    ]);
    stale.assert_failed_with("revision_conflict");
    assert_eq!(stale.code, Some(5));
    assert!(names_current_revision(&stale.stderr, 2), "{}", stale.stderr);

    let table = server.ok(&["config", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("KEY"), "{table}");
    assert!(
        lines[1].starts_with("limits") && lines[1].contains(r#"{"burst":[1,2],"rps":100}"#),
        "{table}"
    );
    assert!(
        lines[2].starts_with("region") && lines[2].contains("\"us-east-1\""),
        "{table}"
    );
    let listed = json(&server.ok(&["config", "list", "--json"]));
    let keys: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["limits", "region"]);
    assert_eq!(listed[0]["value"]["rps"], 100);

    assert_eq!(
        server.ok(&["config", "delete", "region", "--yes"]),
        "deleted config region from default\n"
    );
    let missing = server.run(&["config", "get", "region"]);
    missing.assert_failed_with("config_not_found");
    assert_eq!(missing.code, Some(3));
    // Config is returned by design, but never logged.
    server.ok(&["config", "set", "logged", r#"{"marker": "cfg-value-7f3a"}"#]);
    server.ok(&["config", "delete", "logged", "--yes"]);
    let log = server.process.log();
    assert!(
        !log.contains("cfg-value-7f3a"),
        "a config value is in the log:\n{log}"
    );
}

#[test]
fn config_set_refuses_invalid_or_missing_json_with_exit_2_before_sending() {
    let server = Server::start();
    for (args, stdin) in [
        (vec!["config", "set", "A", "eu-west-SECRETISH"], None),
        (vec!["config", "set", "A"], Some("{\"a\": SECRETISH}")),
        (vec!["config", "set", "A", "{\"a\": 1"], None),
    ] {
        let run = server.run_with(&args, None, stdin);
        run.assert_failed_with("not valid JSON");
        assert_eq!(run.code, Some(2), "{args:?}");
        assert!(!run.stderr.contains("SECRETISH"), "{}", run.stderr);
    }
    let empty = server.run_with(&["config", "set", "A"], None, Some(""));
    empty.assert_failed_with("no value");
    assert_eq!(empty.code, Some(2));
    let big = format!("\"{}\"", "x".repeat(64 * 1024));
    let over = server.run_with(&["config", "set", "A"], None, Some(&big));
    over.assert_failed_with("64 KiB");
    assert_eq!(over.code, Some(2));
    let bad_key = server.run(&["config", "set", "not-a-key", "1"]);
    assert_eq!(bad_key.code, Some(2), "{}", bad_key.stderr);
    assert_eq!(server.ok(&["config", "list", "--json"]).trim(), "[]");
}

#[test]
fn config_follows_the_keys_environment_and_runtime_keys_are_refused() {
    let server = Server::start();
    server.ok(&["env", "create", "prod"]);
    let manage = server.created_key(&["ops", "--role", "manage", "--env", "prod"]);
    let runtime = server.created_key(&["run", "--role", "runtime", "--env", "prod"]);
    let set = server.run_with(&["config", "set", "flag", "true"], Some(&manage), None);
    assert_eq!(
        set.stdout, "set config flag in prod (revision 1)\n",
        "{}",
        set.stderr
    );
    let got = server.run_with(&["config", "get", "flag"], Some(&manage), None);
    assert_eq!(got.stdout, "true\n", "{}", got.stderr);
    let elsewhere = server.run_with(&["config", "list", "--env", "default"], Some(&manage), None);
    assert_eq!(elsewhere.code, Some(4), "{}", elsewhere.stderr);
    let refused = server.run_with(&["config", "get", "flag"], Some(&runtime), None);
    refused.assert_failed_with("forbidden");
    assert_eq!(refused.code, Some(4));
}

#[test]
fn exit_codes_follow_one_table() {
    let server = Server::start();
    let code = |args: &[&str]| server.run(args).code;
    assert_eq!(code(&["env", "list"]), Some(0));
    // 2: usage, whether clap or the client finds it.
    assert_eq!(code(&["env", "create", "Prod"]), Some(2));
    assert_eq!(code(&["secret", "list", "--env", "Bad_Env"]), Some(2));
    assert_eq!(code(&["secret", "set", "1BAD", "v"]), Some(2));
    assert_eq!(code(&["secret", "list", "--no-such-flag"]), Some(2));
    assert_eq!(code(&["no-such-command"]), Some(2));
    // 3: not found.
    assert_eq!(code(&["secret", "show", "MISSING"]), Some(3));
    assert_eq!(code(&["env", "delete", "missing", "--yes"]), Some(3));
    // 4: no access.
    let wrong = server.run_with(&["env", "list"], Some("ck_admin_00"), None);
    assert_eq!(wrong.code, Some(4), "{}", wrong.stderr);
    // 5: conflict.
    assert_eq!(code(&["env", "create", "default"]), Some(5));
    // 1: anything else, e.g. no server.
    let mut cmd = clean_command(&["env", "list"]);
    cmd.env("COFFER_ADDR", CLOSED_ADDR)
        .env("COFFER_API_KEY", "ck_admin_00");
    assert_eq!(Run::of(&mut cmd, None).code, Some(1));
}

#[test]
fn counts_of_one_are_singular() {
    let mut server = Server::start();
    let file = server.dir.path().join("one.env");
    std::fs::write(&file, "ONLY=1\n").unwrap();
    assert_eq!(
        server.ok(&["secret", "import", path(&file)]),
        "imported 1 secret into default: 1 created, 0 updated, 0 unchanged\n"
    );

    // The one value, under key version 1, cannot be opened once the ring has only 2.
    let v2 = format!(
        r#"{{"currentKeyVersion": 2, "keys": {{"2": "{}"}}}}"#,
        "ab".repeat(32)
    );
    server.restart_with(&[("COFFER_SECRET_KEYS", &v2)], &["--allow-unreadable"]);
    let rewrap = server.run(&["keys", "rewrap"]);
    assert!(rewrap.success, "{}", rewrap.stderr);
    assert!(
        rewrap
            .stderr
            .starts_with("warning: 1 value could not be opened and left as it was;"),
        "{}",
        rewrap.stderr
    );
}

#[test]
fn completions_name_every_command_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = clean_command(&["completions", shell]);
        let run = Run::of(&mut cmd, None);
        assert!(run.success, "{shell}: {}", run.stderr);
        for word in [
            "env", "secret", "config", "apikey", "keys", "login", "logout", "serve", "show",
            "revoke",
        ] {
            assert!(run.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    let mut cmd = clean_command(&["completions", "tcsh"]);
    assert_eq!(Run::of(&mut cmd, None).code, Some(2));
}

#[test]
fn every_command_help_shows_examples() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["env"],
        &["env", "list"],
        &["env", "create"],
        &["env", "delete"],
        &["secret"],
        &["secret", "set"],
        &["secret", "list"],
        &["secret", "show"],
        &["secret", "delete"],
        &["secret", "import"],
        &["config"],
        &["config", "set"],
        &["config", "get"],
        &["config", "list"],
        &["config", "delete"],
        &["apikey"],
        &["apikey", "create"],
        &["apikey", "list"],
        &["apikey", "revoke"],
        &["keys"],
        &["keys", "status"],
        &["keys", "rewrap"],
        &["function"],
        &["function", "register"],
        &["function", "list"],
        &["function", "show"],
        &["function", "delete"],
        &["function", "rotate-secret"],
        &["event"],
        &["event", "send"],
        &["events", "tail"],
        &["runs"],
        &["runs", "list"],
        &["runs", "show"],
        &["run"],
        &["audit"],
        &["audit", "verify"],
        &["login"],
        &["logout"],
        &["completions"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let run = Run::of(&mut clean_command(&args), None);
        assert!(run.success, "{args:?}: {}", run.stderr);
        let examples = run
            .stdout
            .split_once("Examples:\n")
            .unwrap_or_else(|| {
                panic!(
                    "`coffer {}` has no examples:\n{}",
                    args.join(" "),
                    run.stdout
                )
            })
            .1;
        let first = examples.lines().next().unwrap_or_default().trim_start();
        let expected = format!("coffer {}", command.first().copied().unwrap_or(""));
        assert!(first.starts_with(expected.trim_end()), "{args:?}: {first}");
    }
}

#[test]
fn on_a_terminal_env_delete_asks_for_the_name_and_deletes_only_when_it_is_typed() {
    let server = Server::start();
    server.ok(&["env", "create", "doomed"]);

    let wrong = server.on_terminal(
        &["env", "delete", "doomed"],
        Some(("Type doomed to confirm", "doome")),
    );
    assert_eq!(wrong.code, Some(1), "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("cannot be undone"),
        "{}",
        wrong.stderr
    );
    assert!(wrong.stderr.contains("not confirmed"), "{}", wrong.stderr);
    assert_eq!(
        names_in(&json(&server.ok(&["env", "list", "--json"]))),
        ["default", "doomed"]
    );

    let right = server.on_terminal(
        &["env", "delete", "doomed"],
        Some(("Type doomed to confirm", "doomed")),
    );
    assert_eq!(right.code, Some(0), "{}", right.stderr);
    assert!(
        right.stdout.contains("deleted environment doomed"),
        "{}",
        right.stdout
    );
    assert_eq!(
        names_in(&json(&server.ok(&["env", "list", "--json"]))),
        ["default"]
    );
}

#[test]
fn on_a_terminal_config_delete_asks_y_or_n() {
    let server = Server::start();
    server.ok(&["config", "set", "flag", "true"]);
    let no = server.on_terminal(&["config", "delete", "flag"], Some(("[y/N]", "")));
    assert_eq!(no.code, Some(1), "{}", no.stderr);
    assert!(
        no.stderr.contains("Delete config flag from default? [y/N]"),
        "{}",
        no.stderr
    );
    assert_eq!(server.ok(&["config", "get", "flag"]), "true\n");
    let yes = server.on_terminal(&["config", "delete", "flag"], Some(("[y/N]", "y")));
    assert_eq!(yes.code, Some(0), "{}", yes.stderr);
    assert_eq!(server.ok(&["config", "list", "--json"]).trim(), "[]");
}

#[test]
fn on_a_terminal_secret_delete_and_apikey_revoke_ask_y_or_n() {
    let server = Server::start();
    server.ok(&["secret", "set", "TOKEN", "v"]);
    let created = json(&server.ok(&[
        "apikey", "create", "bot", "--role", "manage", "--env", "default", "--json",
    ]));
    let id = created["id"].as_str().unwrap();

    let no = server.on_terminal(&["secret", "delete", "TOKEN"], Some(("[y/N]", "")));
    assert_eq!(no.code, Some(1), "{}", no.stderr);
    assert!(
        no.stderr
            .contains("Delete secret TOKEN from default? [y/N]"),
        "{}",
        no.stderr
    );
    assert_eq!(
        names_in(&json(&server.ok(&["secret", "list", "--json"]))),
        ["TOKEN"]
    );
    let yes = server.on_terminal(&["secret", "delete", "TOKEN"], Some(("[y/N]", "y")));
    assert_eq!(yes.code, Some(0), "{}", yes.stderr);
    assert_eq!(server.ok(&["secret", "list", "--json"]).trim(), "[]");

    let no = server.on_terminal(&["apikey", "revoke", id], Some(("[y/N]", "n")));
    assert_eq!(no.code, Some(1), "{}", no.stderr);
    assert_eq!(server.api_key_names(), [FIRST_ADMIN, "bot"]);
    let yes = server.on_terminal(&["apikey", "revoke", id], Some(("[y/N]", "yes")));
    assert_eq!(yes.code, Some(0), "{}", yes.stderr);
    assert_eq!(server.api_key_names(), [FIRST_ADMIN]);
}

#[test]
fn on_a_terminal_apikey_create_shows_the_key_with_its_explanation() {
    let server = Server::start();
    let run = server.on_terminal(&["apikey", "create", "ops", "--role", "admin"], None);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    assert!(run.stdout.contains("created API key ak_"), "{}", run.stdout);
    assert!(
        run.stdout.contains("will not be shown again"),
        "{}",
        run.stdout
    );
    let key = key_in(&run.stdout);
    let works = server.run_with(&["env", "list"], Some(&key), None);
    assert!(works.success, "{}", works.stderr);
}

#[test]
fn on_a_terminal_login_prompts_for_the_key_without_echoing_it() {
    let server = Server::start();
    let run = server.login_on_terminal(&server.admin_key);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("API key for"),
        "the prompt: {}",
        run.stdout
    );
    assert!(run.stdout.contains("logged in to"), "{}", run.stdout);
    assert!(
        !run.stdout.contains(&server.admin_key),
        "the key was echoed:\n{}",
        run.stdout
    );
    let empty = tempfile::tempdir().unwrap();
    let used = server.without_key(&["env", "list", "--data-dir", path(empty.path())]);
    assert!(used.success, "{}", used.stderr);
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

    /// Stops the server cleanly (it flushes its counters) and starts it again on the same
    /// data dir with other settings.
    fn restart_with(&mut self, envs: &[(&str, &str)], extra: &[&str]) {
        assert!(self.process.terminate(), "{}", self.process.log());
        self.process = ServerProcess::start(&self.data_dir(), envs, extra);
        self.addr = self.process.base.clone();
    }

    /// The names of the API keys, in the server's order.
    fn api_key_names(&self) -> Vec<String> {
        let mut names = names_in(&json(&self.ok(&["apikey", "list", "--json"])));
        names.sort();
        names
    }

    /// `coffer login --addr ADDR` with `key` piped on stdin.
    fn login(&self, addr: &str, key: &str) -> Run {
        let mut cmd = self.command(&["login", "--addr", addr]);
        cmd.env_remove("COFFER_API_KEY");
        Run::of(&mut cmd, Some(key))
    }

    /// `coffer ARGS` without COFFER_API_KEY (a stored login or admin.key must serve).
    fn without_key(&self, args: &[&str]) -> Run {
        let mut cmd = self.command(args);
        cmd.env_remove("COFFER_API_KEY");
        Run::of(&mut cmd, None)
    }

    /// `coffer ARGS` on a terminal: a pty from util-linux `script`, stdout the terminal,
    /// stderr to a file (so the two stay apart). With `type_after`, once the prompt shows
    /// (on stderr or the terminal), types the answer and Enter. `stdout` is what the
    /// terminal showed: the command's stdout and the echo of what was typed.
    fn on_terminal(&self, args: &[&str], type_after: Option<(&str, &str)>) -> Run {
        self.terminal_run(args, true, type_after)
    }

    /// `coffer login` on a terminal, without COFFER_API_KEY: `key` is typed only once the
    /// terminal's echo is off (polled with `stty` on the same terminal), so the test sees
    /// whether the key would have been shown.
    fn login_on_terminal(&self, key: &str) -> Run {
        self.terminal_run(
            &["login", "--addr", &self.addr],
            false,
            Some((ECHO_OFF, key)),
        )
    }

    fn terminal_run(&self, args: &[&str], with_key: bool, type_after: Option<(&str, &str)>) -> Run {
        use std::io::Read;
        use std::sync::{Arc, Mutex};

        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let stderr_file = self
            .dir
            .path()
            .join(format!("tty-stderr-{}", self.canary()));
        let coffer = format!(
            "{} {} 2>{}",
            quote(common::BIN),
            args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
            quote(path(&stderr_file))
        );
        let line = if type_after.is_some_and(|(prompt, _)| prompt == ECHO_OFF) {
            // In the background (stdin given back explicitly: sh would give it /dev/null),
            // while the foreground waits for the echo flag to drop, then says so.
            format!(
                "{coffer} </dev/tty & until stty -a | tr ' ;' '\\n\\n' | grep -qx -- -echo; do sleep 0.02; done; echo {ECHO_OFF}; wait $!"
            )
        } else {
            format!("exec {coffer}")
        };
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("COFFER_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("COFFER_ADDR", &self.addr)
            .env("HOME", self.home())
            .env("SHELL", "/bin/sh")
            .env_remove("XDG_CONFIG_HOME");
        if with_key {
            cmd.env("COFFER_API_KEY", &self.admin_key);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("util-linux `script` runs");
        let terminal = Arc::new(Mutex::new(Vec::new()));
        let mut out = child.stdout.take().unwrap();
        let reader = {
            let terminal = Arc::clone(&terminal);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = out.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    terminal.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            })
        };
        let mut stdin = child.stdin.take().unwrap();
        if let Some((prompt, answer)) = type_after {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let shown = String::from_utf8_lossy(&terminal.lock().unwrap()).into_owned()
                    + &std::fs::read_to_string(&stderr_file).unwrap_or_default();
                if shown.contains(prompt) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no prompt {prompt:?} within 20 s:\n{shown}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
        }
        let status = child.wait().unwrap();
        drop(stdin);
        reader.join().unwrap();
        let stdout = String::from_utf8_lossy(&terminal.lock().unwrap()).replace("\r\n", "\n");
        Run {
            success: status.success(),
            code: status.code(),
            stdout,
            stderr: std::fs::read_to_string(&stderr_file).unwrap_or_default(),
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

    /// `coffer ARGS` against this server with the admin key, and a home directory of its
    /// own (so no login of the developer's is read, and `coffer login` writes there).
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = clean_command(args);
        cmd.env("COFFER_ADDR", &self.addr)
            .env("COFFER_API_KEY", &self.admin_key)
            .env("HOME", self.home())
            .env_remove("XDG_CONFIG_HOME");
        cmd
    }

    /// The `HOME` of every command run by [`Server::command`].
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `coffer apikey create ARGS` with stdout not a terminal: the key alone on stdout,
    /// the rest on stderr. Returns the key.
    fn created_key(&self, args: &[&str]) -> String {
        let args: Vec<&str> = ["apikey", "create"].iter().chain(args).copied().collect();
        let run = self.run(&args);
        assert!(
            run.success,
            "`coffer {}` failed:\n{}",
            args.join(" "),
            run.stderr
        );
        assert!(
            run.stderr.contains("will not be shown again"),
            "{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("ck_"),
            "the key is on stderr:\n{}",
            run.stderr
        );
        let key = run.stdout.strip_suffix('\n').unwrap_or_else(|| {
            panic!("not one line:\n{}", run.stdout);
        });
        assert!(
            !key.contains(char::is_whitespace),
            "not the key alone:\n{}",
            run.stdout
        );
        key.to_owned()
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
    /// The exit code (`None`: killed by a signal).
    code: Option<i32>,
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
            // A command may stop reading early (an input over a limit): a closed pipe is
            // its answer, not a test failure.
            if let Err(e) = pipe.write_all(input.as_bytes()) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
            }
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        Run {
            success: status.success(),
            code: status.code(),
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

/// The permission bits of a file or directory.
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
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
