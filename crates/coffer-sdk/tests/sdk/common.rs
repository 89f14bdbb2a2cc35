//! A real `coffer serve` for the SDK's tests, and the binaries they run.
//!
//! The `coffer` binary belongs to another package (`coffer-cli`), so `CARGO_BIN_EXE_coffer`
//! does not exist here. Instead, the first test that needs it runs `cargo build -p
//! coffer-cli --bin coffer` (and `cargo build -p coffer-sdk --examples` for the examples)
//! with the cargo that builds these tests, from the workspace root and in the same profile,
//! and takes each executable's path from cargo's JSON messages. The build is a no-op when
//! the binary is fresh (as under `cargo test --workspace`), works from a clean checkout,
//! and always tests the current server. `COFFER_BIN=/path/to/coffer` skips the build of
//! the server (a packaged binary, or a target triple of its own).
//!
//! The server helpers follow `crates/coffer-cli/tests/common/mod.rs`: loopback port 0 (the
//! server logs the port it got), a temporary data dir, the admin key from
//! `<data-dir>/admin.key`, killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use coffer_sdk::wire::{Run, RunStatus, SendEvent};
use coffer_sdk::{Client, Role};

/// The `coffer` executable, built once per test process.
pub fn coffer_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("COFFER_BIN") {
        Some(path) => PathBuf::from(path),
        None => cargo_build(&["-p", "coffer-cli", "--bin", "coffer"])
            .remove("coffer")
            .expect("cargo built no `coffer` executable"),
    })
}

/// The executable of example `name` of this crate, built once per test process.
pub fn example_bin(name: &str) -> PathBuf {
    static EXAMPLES: OnceLock<std::collections::HashMap<String, PathBuf>> = OnceLock::new();
    EXAMPLES
        .get_or_init(|| cargo_build(&["-p", "coffer-sdk", "--examples"]))
        .get(name)
        .unwrap_or_else(|| panic!("cargo built no example {name}"))
        .clone()
}

/// `cargo build ARGS` in the profile these tests were built in; the executables it
/// reports, by target name.
fn cargo_build(args: &[&str]) -> std::collections::HashMap<String, PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(env!("CARGO"))
        .current_dir(&workspace)
        .arg("build")
        .args(args)
        .args([
            "--profile",
            profile(),
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(output.status.success(), "cargo build {args:?} failed");
    let mut built = std::collections::HashMap::new();
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            built.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    built
}

/// The cargo profile of this test executable, from where it lives:
/// `<target>/<debug|release|PROFILE>/deps/<test>`.
fn profile() -> &'static str {
    static PROFILE: OnceLock<String> = OnceLock::new();
    PROFILE.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .unwrap_or("debug");
        match dir {
            "debug" => "dev".to_owned(),
            other => other.to_owned(),
        }
    })
}

/// A running `coffer serve` on a loopback port with a data dir of its own.
pub struct Server {
    child: Child,
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Server {
    /// Starts a server (dev mode: no master key needed for these tests) and waits until it
    /// answers.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("server.log");
        let mut cmd = Command::new(coffer_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .env("COFFER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("COFFER_") && name != "COFFER_LOG" {
                cmd.env_remove(name);
            }
        }
        let child = cmd.spawn().expect("spawn coffer serve");
        let mut server = Server {
            child,
            _dir: dir,
            data_dir,
            log_path,
            base: String::new(),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) = listening_addr(&self.log())
                && healthz_answers(addr)
            {
                self.base = format!("http://{addr}");
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("coffer serve exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "coffer serve not ready within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The admin key the first start wrote.
    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.key"))
            .expect("admin.key")
            .trim()
            .to_owned()
    }

    /// A client with the admin key.
    pub fn admin(&self) -> Client {
        Client::new(&self.base, self.admin_key()).expect("client")
    }

    /// A new runtime key of `env`.
    pub async fn runtime_key(&self, env: &str) -> String {
        self.admin()
            .create_api_key("worker", Role::Runtime, Some(env))
            .await
            .expect("create a runtime key")
            .expose_key()
            .to_owned()
    }

    /// A client with a new runtime key of `env`.
    pub async fn runtime(&self, env: &str) -> Client {
        Client::new(&self.base, self.runtime_key(env).await).expect("client")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `name` with `data` and returns the one run it started.
pub async fn send(admin: &Client, env: &str, name: &str, data: serde_json::Value) -> String {
    let event = SendEvent {
        name: name.into(),
        data: Some(data),
    };
    let accepted = admin
        .send_event(env, &event, None)
        .await
        .expect("send event");
    assert_eq!(accepted.runs.len(), 1, "{accepted:?}");
    accepted.runs[0].id.clone()
}

/// Waits until run `id` has ended (succeeded or failed), for at most 30 s.
pub async fn ended(admin: &Client, env: &str, id: &str) -> Run {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = admin.get_run(env, id).await.expect("get run");
        if matches!(run.status, RunStatus::Succeeded | RunStatus::Failed) {
            return run;
        }
        assert!(Instant::now() < deadline, "run did not end: {run:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An example running as a child process, its stdout read line by line; killed on drop.
pub struct Example {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
}

impl Example {
    /// Starts example `name` with `envs` (and no `COFFER_*` variable of the caller's).
    pub fn start(name: &str, envs: &[(&str, &str)]) -> Example {
        let mut cmd = Command::new(example_bin(name));
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("COFFER_") {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn example");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Example {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 60 s) for a line that starts with `prefix`; returns it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "the example printed no line starting with {prefix:?}; it printed {:?} (exit: {:?})",
                    self.seen,
                    self.child.try_wait()
                ),
            }
        }
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits for the exit; returns whether it
    /// succeeded.
    pub fn interrupt(&mut self) -> bool {
        // Not through the `kill` program: Debian's procps-ng 4.0.2 misreads negative ids.
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .expect("a child's pid");
        rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The rest of its output, up to the end of its stdout.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(line);
                }
                return status.success();
            }
            assert!(Instant::now() < deadline, "the example did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the server's `coffer is listening addr=127.0.0.1:PORT …` log line.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("coffer is listening"))?;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))?;
    addr.parse().ok()
}

fn healthz_answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}
