//! What the tests against a real `nats-server` share: a server of their own on a free port,
//! killed when dropped, and a value store connected to it.
#![allow(dead_code)] // each test binary uses its own part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffer_nats::values::{NatsValueOptions, NatsValues};

/// Every wait for a server ends by this deadline.
pub const WAIT: Duration = Duration::from_secs(30);

/// A `nats-server -js` of this test: killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
}

impl Server {
    /// A server on a free port, with `extra` arguments (authentication).
    pub fn start(extra: &[&str]) -> Server {
        let mut server = Server {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.run();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again) on the same port and store, and waits until it listens.
    pub fn run(&mut self) {
        let child = Command::new(nats_server_binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run nats-server ({e}): these tests need the NATS server binary \
                     (Debian/Ubuntu: apt-get install nats-server)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`: no goodbye to the clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn nats_server_binary() -> PathBuf {
    let installed = Path::new("/usr/sbin/nats-server");
    if installed.exists() {
        installed.to_owned()
    } else {
        // Elsewhere on PATH, or the spawn fails with the install hint.
        PathBuf::from("nats-server")
    }
}

/// A port nothing listens on now (the OS picks it; the server takes it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn options(server: &Server) -> NatsValueOptions {
    let mut o = NatsValueOptions::new(&server.url());
    o.timeout = Duration::from_secs(2);
    o
}

pub async fn connect(o: NatsValueOptions) -> NatsValues {
    NatsValues::connect(o)
        .await
        .expect("connect to nats-server")
}
