//! What every process-level test needs: the `coffer` binary with a clean environment, and a
//! `coffer serve` child on a loopback port of its own choosing, its stderr in a log file,
//! killed on drop.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_coffer");

/// `coffer ARGS` with no `COFFER_*` variable inherited from the developer's shell.
pub fn clean_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    without_coffer_variables(cmd)
}

/// `sh -c 'PRELUDE; exec coffer ARGS'`, cleaned like [`clean_command`]: for process
/// settings only a shell makes (`umask`, `ulimit`). The child's pid is coffer's.
pub fn clean_shell_command(prelude: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{prelude}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args);
    without_coffer_variables(cmd)
}

fn without_coffer_variables(mut cmd: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COFFER_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A loopback port free at the time of asking (for a server a test starts itself).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub use rustix::process::Signal;

/// Sends `signal` to the process `pid`.
///
/// Never through the `kill` program: Debian's procps-ng 4.0.2 reads `kill -KILL -1234` as
/// `kill(-1, SIGKILL)` (only the first digit of a group id survives its parser), which, run
/// as root, kills every process on the machine.
pub fn send_signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    rustix::process::kill_process(checked_pid(pid), signal).map_err(Into::into)
}

/// Sends `signal` to every process of the group `pgid` (a child started with
/// `process_group(0)` leads a group whose id is its pid).
pub fn signal_group(pgid: u32, signal: Signal) -> std::io::Result<()> {
    rustix::process::kill_process_group(checked_pid(pgid), signal).map_err(Into::into)
}

/// A child's pid, never 0 or 1 (which would reach the caller's group or init).
fn checked_pid(pid: u32) -> rustix::process::Pid {
    i32::try_from(pid)
        .ok()
        .filter(|&p| p > 1)
        .and_then(rustix::process::Pid::from_raw)
        .unwrap_or_else(|| panic!("not a child's pid: {pid}"))
}

/// An HTTP client for loopback tests: never through a proxy from the environment.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

/// A child process killed on drop, so a failing assertion leaves no server behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running (or finished) `coffer serve`.
pub struct ServerProcess {
    pub child: Child,
    /// The port it listens on, known once [`ServerProcess::wait_ready`] returned.
    pub port: u16,
    /// `http://ADDR` (`http://127.0.0.1:PORT` unless told otherwise), known once
    /// [`ServerProcess::wait_ready`] returned.
    pub base: String,
    /// The address it logged, known once [`ServerProcess::wait_ready`] returned.
    pub addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    log_path: PathBuf,
}

impl ServerProcess {
    /// Starts `coffer serve --listen 127.0.0.1:0 --data-dir DATA_DIR EXTRA…` with `envs`;
    /// stderr goes to `DATA_DIR.log` beside the data dir. The server picks its own port and
    /// logs it, so parallel tests never race for a port guessed in advance.
    pub fn spawn(data_dir: &Path, envs: &[(&str, &str)], extra: &[&str]) -> ServerProcess {
        let mut cmd = clean_command(&["serve", "--listen", "127.0.0.1:0", "--data-dir"]);
        cmd.arg(data_dir).args(extra).envs(envs.iter().copied());
        ServerProcess::spawn_command(cmd, data_dir)
    }

    /// Runs `cmd`, a complete `coffer serve …` command for `data_dir` (another listen
    /// address, or through [`clean_shell_command`]), as [`ServerProcess::spawn`] does.
    pub fn spawn_command(mut cmd: Command, data_dir: &Path) -> ServerProcess {
        let log_path = data_dir.with_extension("log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn coffer serve");
        ServerProcess {
            child,
            port: 0,
            base: String::new(),
            addr: None,
            data_dir: data_dir.to_owned(),
            log_path,
        }
    }

    /// [`ServerProcess::spawn`], then waits until `/healthz` answers.
    pub fn start(data_dir: &Path, envs: &[(&str, &str)], extra: &[&str]) -> ServerProcess {
        let mut server = ServerProcess::spawn(data_dir, envs, extra);
        server.wait_ready();
        server
    }

    /// Waits until the server has logged its address and `/healthz` answers there; panics
    /// with the log if the server exits first.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.port == 0
                && let Some(addr) = listening_addr(&self.log())
            {
                self.addr = Some(addr);
                self.port = addr.port();
                self.base = format!("http://{addr}");
            }
            if let Some(addr) = self.addr
                && healthz_answers(addr)
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "coffer serve exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "coffer serve not ready within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the process to exit on its own; returns whether it succeeded.
    pub fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "coffer serve did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits; returns whether the exit was clean.
    pub fn terminate(&mut self) -> bool {
        send_signal(self.child.id(), Signal::TERM).expect("SIGTERM to coffer serve");
        self.wait_exit()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
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
}

impl Drop for ServerProcess {
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

/// A database of its own on the test server, dropped at the end.
pub struct TestDb {
    server: String,
    name: String,
    /// `postgres://…/NAME`: the database's URL.
    pub url: String,
}

impl TestDb {
    /// A new database on `COFFER_TEST_DATABASE_URL`'s server, its name made of `label`,
    /// this process and random digits.
    pub fn create(label: &str) -> TestDb {
        let server = std::env::var("COFFER_TEST_DATABASE_URL").expect(
            "COFFER_TEST_DATABASE_URL is not set: run the tests through scripts/test.sh, \
             or eval \"$(scripts/postgres.sh)\" first (it needs PostgreSQL)",
        );
        let name = format!(
            "coffer_t_{}_{label}_{}",
            std::process::id(),
            random_suffix()
        );
        psql(&server, &format!("CREATE DATABASE {name}"));
        let url = format!("{}/{name}", server.rsplit_once('/').expect("a URL").0);
        TestDb { server, name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.server)
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// Runs `sql` with psql on `url`; must succeed; its unaligned output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql (install postgresql-client)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// 12 random hex digits.
pub fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    getrandom_fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("random bytes");
}
