//! `coffer-bench`: a loopback load generator for `coffer serve`.
//!
//! It starts a server in a fresh temp dir (or uses `--addr`), seeds `--secrets` secrets, then
//! runs a `read` (metadata GET) and a `write` (durable PUT) phase for each connection count and
//! prints one row per phase. Like `wrk -t1`, the generator runs on one thread, so on a small
//! machine it competes with the server for the cores the way the reference figures were taken.

#![forbid(unsafe_code)]

mod follow;
mod orchestrations;
mod runtime;
mod vault;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout, timeout_at};

/// A fixed test key: the bench measures the encrypted path, it never guards real data.
const MASTER_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// Value alphabet: printable and needing no JSON escaping, so bodies can be `format!`ted.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Connections used to seed; seeding is set-up, not measured.
const SEED_CONNECTIONS: usize = 8;
/// Bound on any single request outside the measured phases.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed request so that a dead server does not become a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Loopback HTTP benchmark for the Coffer server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The `coffer` binary to start (unused with --addr).
    #[arg(long, default_value = "target/release/coffer")]
    coffer_bin: PathBuf,
    /// Secrets to seed (`BENCH_0000`…) and pick from at random.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    secrets: u32,
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// Unmeasured seconds before each phase.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Comma-separated connection counts (1 to 1024); each gets a read and a write phase.
    #[arg(long, default_value = "1,16", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=1024))]
    connections: Vec<u16>,
    /// Bench this already-running server (loopback only) instead of starting one.
    #[arg(long, value_parser = loopback_addr)]
    addr: Option<SocketAddr>,
    /// API key for --addr: an admin key, or one that may manage `default`.
    #[arg(long, env = "COFFER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the header and the rows as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Instead of the HTTP phases: seed this many secrets under key version 1, restart with
    /// version 2 current, and time the start-up check and `POST /v1/keys/rewrap`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rewrap: Option<u32>,
    /// Instead of the HTTP phases: the runtime plane's figures (resolve, pull, push), each
    /// beside the same run's metadata reads/s, at the largest of --connections.
    #[arg(long)]
    runtime: bool,
    /// Instead of the HTTP phases: orchestration runs of 3 push compute steps beside the same
    /// run's metadata reads/s; each of --connections is a phase with that many runs in flight.
    #[arg(long, conflicts_with = "runtime")]
    orchestrations: bool,
    /// Instead of the HTTP phases: what the `vault` backend's layer adds over a direct call
    /// to this OpenBao (KV v2 at `secret/`), at the largest of --connections.
    #[arg(long, value_name = "ADDR")]
    vault_layer: Option<String>,
    /// The OpenBao token for --vault-layer.
    #[arg(
        long,
        env = "BAO_TOKEN",
        hide_env_values = true,
        default_value = "root"
    )]
    vault_token: String,
    /// Instead of the HTTP phases: hold this many followers of `GET /v1/events/stream` on
    /// --addr (with an admin --api-key, which creates one manage key per follower) until
    /// SIGTERM or Ctrl-C, then print the bytes they received.
    #[arg(long, requires = "addr", value_parser = clap::value_parser!(u16).range(1..=1000))]
    follow: Option<u16>,
    /// With --follow: the `subject` pattern each follower asks for (default: every event).
    /// A pattern that matches few events measures what narrow subscribers cost.
    #[arg(long, requires = "follow")]
    follow_subject: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread, like `wrk -t1`: the generator's own CPU use is part of what is measured.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On Ctrl-C, dropping `run` drops the server guard, which stops the server.
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(args) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// Sets up the server, seeds, runs every phase and prints; fails if any phase saw errors.
async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.rewrap {
        return rewrap(&args.coffer_bin, n).await;
    }
    if let (Some(n), Some(addr)) = (args.follow, args.addr) {
        let key = args.api_key.context("--follow needs an admin --api-key")?;
        follow::run(addr, &key, n.into(), args.follow_subject.as_deref()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.runtime {
        let conns = args.connections.iter().copied().max().unwrap_or(16).into();
        return runtime::bench(
            &args.coffer_bin,
            args.secrets,
            conns,
            Duration::from_secs(args.warmup),
            Duration::from_secs(args.duration),
        )
        .await;
    }
    if let Some(addr) = &args.vault_layer {
        let conns = args.connections.iter().copied().max().unwrap_or(16).into();
        vault::run(
            addr,
            &args.vault_token,
            conns,
            Duration::from_secs(args.warmup),
            Duration::from_secs(args.duration),
        )
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.orchestrations {
        let conns: Vec<usize> = args.connections.iter().map(|&c| c.into()).collect();
        let (warmup, duration) = (
            Duration::from_secs(args.warmup),
            Duration::from_secs(args.duration),
        );
        return orchestrations::bench(
            &args.coffer_bin,
            args.secrets,
            &conns,
            warmup,
            duration,
            args.json,
        )
        .await;
    }
    let (_server, addr, key) = match args.addr {
        Some(addr) => {
            let key = args
                .api_key
                .context("--addr needs --api-key or COFFER_API_KEY")?;
            (None, addr, key)
        }
        None => {
            let dir = Arc::new(tempfile::tempdir().context("cannot create a temp dir")?);
            let server =
                Server::start(&args.coffer_bin, dir, ("COFFER_MASTER_KEY", MASTER_KEY)).await?;
            let (addr, key) = (server.addr, server.api_key.clone());
            (Some(server), addr, key)
        }
    };
    let mut auth = HeaderValue::from_str(&format!("Bearer {key}")).context("bad API key")?;
    auth.set_sensitive(true);
    let paths = (0..args.secrets)
        .map(|i| format!("/v1/environments/default/secrets/BENCH_{i:04}"))
        .collect();
    let target = Arc::new(Target { addr, auth, paths });

    let (status, body) = get_once(&target, "/v1/status").await?;
    let status: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("/v1/status answered {status} without JSON"))?;
    seed(&target).await?;
    // Taken when the phases start, so the date is that of the measurement.
    let header = Header {
        date: stdout_of(&["date", "-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        commit: stdout_of(&["git", "rev-parse", "--short", "HEAD"]),
        version: status["version"].as_str().unwrap_or("unknown").to_owned(),
    };
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let mut rows = Vec::new();
    for &conns in &args.connections {
        for phase in [Phase::Read, Phase::Write] {
            rows.push(run_phase(&target, phase, conns.into(), warmup, duration).await);
        }
    }

    if args.json {
        print_json(&header, &rows);
    } else {
        print_table(&header, &rows);
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.errors() > 0).collect();
    for r in &failed {
        let (t, first) = (&r.tally, r.tally.first_error.as_deref().unwrap_or("?"));
        eprintln!(
            "error: {} x{}: {} non-2xx, {} transport errors; first: {first}",
            r.phase, r.conns, t.non_2xx, t.transport_errors
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Seeds `n` secrets under key version 1, restarts with version 2 current, then times the
/// start-up (canaries and per-version counts; it no longer opens every value) and a full
/// `POST /v1/keys/rewrap`.
async fn rewrap(bin: &Path, n: u32) -> anyhow::Result<ExitCode> {
    const KEY_2: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f";
    let dir = Arc::new(tempfile::tempdir().context("cannot create a temp dir")?);
    let server = Server::start(bin, dir.clone(), ("COFFER_MASTER_KEY", MASTER_KEY)).await?;
    let paths = (0..n)
        .map(|i| format!("/v1/environments/default/secrets/BENCH_{i:06}"))
        .collect();
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", server.api_key))?;
    auth.set_sensitive(true);
    let target = Arc::new(Target {
        addr: server.addr,
        auth,
        paths,
    });
    let seeding = Instant::now();
    seed(&target).await?;
    let seeded = seeding.elapsed();
    drop(server);

    let ring =
        format!(r#"{{"currentKeyVersion": 2, "keys": {{"1": "{MASTER_KEY}", "2": "{KEY_2}"}}}}"#);
    let starting = Instant::now();
    let server = Server::start(bin, dir, ("COFFER_SECRET_KEYS", &ring)).await?;
    let started = starting.elapsed();
    let target = Target {
        addr: server.addr,
        auth: target.auth.clone(),
        paths: vec![],
    };
    let mut conn = Conn::open(&target).await?;
    let rewrapping = Instant::now();
    let (status, body) = conn.send_as(Method::POST, "/v1/keys/rewrap", None).await?;
    let took = rewrapping.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status != StatusCode::OK || report["rewrapped"].as_u64() != Some(n.into()) {
        bail!(
            "rewrap answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let rate = |d: Duration| f64::from(n) / d.as_secs_f64();
    println!(
        "# {}  nproc {}  commit {}",
        stdout_of(&["date", "-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        stdout_of(&["git", "rev-parse", "--short", "HEAD"])
    );
    println!("step                 values   seconds    values/s");
    println!(
        "seed (HTTP, 8 conns) {n:>7} {:>9.3} {:>11.0}",
        seeded.as_secs_f64(),
        rate(seeded)
    );
    println!(
        "start-up check       {n:>7} {:>9.3} {:>11.0}",
        started.as_secs_f64(),
        rate(started)
    );
    println!(
        "rewrap v1 -> v2      {n:>7} {:>9.3} {:>11.0}",
        took.as_secs_f64(),
        rate(took)
    );
    Ok(ExitCode::SUCCESS)
}

/// A `coffer serve` on a data dir in `dir`, killed when dropped (on error paths too).
struct Server {
    child: Child,
    addr: SocketAddr,
    api_key: String,
    dir: Arc<tempfile::TempDir>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the server on a free loopback port with `<dir>/data` and the key settings
    /// `keys` (on the PostgreSQL database `COFFER_BENCH_DATABASE_URL` names, if set),
    /// waits for `/healthz`, reads `admin.key`.
    async fn start(
        bin: &Path,
        dir: Arc<tempfile::TempDir>,
        keys: (&str, &str),
    ) -> anyhow::Result<Server> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.path().join("server.log"))?;
        // Port 0 picks a free port; it is released just before the server binds it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = Command::new(bin);
        command
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The caller's COFFER_* settings (listen address, other keys) must not leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("COFFER_") {
                command.env_remove(name);
            }
        }
        // `COFFER_BENCH_DATABASE_URL`: serve from that (empty) PostgreSQL database instead
        // of SQLite in the data dir.
        if let Some(url) = std::env::var_os("COFFER_BENCH_DATABASE_URL") {
            command.arg("--database-url").arg(url);
        }
        let child = command.env(keys.0, keys.1).spawn().with_context(|| {
            format!(
                "cannot start {} (build it: cargo build --release -p coffer-cli)",
                bin.display()
            )
        })?;
        let mut server = Server {
            child,
            addr,
            api_key: String::new(),
            dir,
        };
        server.wait_healthy().await?;
        let key_file = server.dir.path().join("data/admin.key");
        let key = std::fs::read_to_string(&key_file)
            .with_context(|| format!("cannot read {}", key_file.display()))?;
        server.api_key = key.trim().to_owned();
        Ok(server)
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let probe = Target {
            addr: self.addr,
            auth: HeaderValue::from_static(""),
            paths: vec![],
        };
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited at start-up ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok((StatusCode::OK, _)) = get_once(&probe, "/healthz").await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "no /healthz within {STARTUP_TIMEOUT:?}; server log:\n{}",
                    self.log_tail()
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of the server's log, for start-up errors (the temp dir is removed with us).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL is fine: the data dir is a throwaway, removed right after.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where requests go, with what credentials, and the paths of the seeded secrets.
struct Target {
    addr: SocketAddr,
    auth: HeaderValue,
    paths: Vec<String>,
}

/// One HTTP/1.1 keep-alive connection; requests on it are sequential.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    auth: HeaderValue,
}

impl Conn {
    async fn open(target: &Target) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        // Drives the socket; ends when `sender` is dropped or the peer closes.
        tokio::spawn(connection);
        let host = HeaderValue::from_str(&target.addr.to_string())?;
        Ok(Conn {
            sender,
            host,
            auth: target.auth.clone(),
        })
    }

    /// Sends one request (a PUT when there is a JSON body, else a GET) and reads the whole
    /// answer, so that the connection can be reused.
    async fn send(
        &mut self,
        path: &str,
        json: Option<String>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let method = if json.is_some() {
            Method::PUT
        } else {
            Method::GET
        };
        self.send_as(method, path, json).await
    }

    /// Sends one request with `method` and an optional JSON body.
    async fn send_as(
        &mut self,
        method: Method,
        path: &str,
        json: Option<String>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host);
        if !self.auth.is_empty() {
            request = request.header(AUTHORIZATION, &self.auth);
        }
        if json.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(Bytes::from(json.unwrap_or_default())))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }
}

/// One GET on a fresh connection, bounded by [`REQUEST_TIMEOUT`].
async fn get_once(target: &Target, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let attempt = async { Conn::open(target).await?.send(path, None).await };
    let answer = match timeout(REQUEST_TIMEOUT, attempt).await {
        Ok(answer) => answer,
        Err(elapsed) => Err(elapsed.into()),
    };
    answer.with_context(|| format!("GET {path} on {}", target.addr))
}

/// Writes every seeded secret once, over a few connections; any failure stops the bench.
async fn seed(target: &Arc<Target>) -> anyhow::Result<()> {
    let mut workers = JoinSet::new();
    for worker in 0..SEED_CONNECTIONS {
        let target = target.clone();
        workers.spawn(async move {
            let mut conn = Conn::open(&target).await?;
            let mut rng = Rng(worker as u64);
            for path in target.paths.iter().skip(worker).step_by(SEED_CONNECTIONS) {
                let sent = timeout(REQUEST_TIMEOUT, conn.send(path, Some(rng.put_body())));
                let (status, body) = sent.await.with_context(|| format!("seeding {path}"))??;
                if !status.is_success() {
                    bail!(
                        "seeding {path}: {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a seeding task panicked")??;
    }
    Ok(())
}

/// The kind of request a phase repeats.
#[derive(Clone, Copy)]
enum Phase {
    /// GET of a random secret's metadata.
    Read,
    /// Unconditional PUT of a fresh value to a random secret: a durable write.
    Write,
}

/// One phase's outcome: one printed row.
struct Row {
    phase: &'static str,
    conns: usize,
    secs: f64,
    /// Merged over the connections, latencies sorted.
    tally: Tally,
}

impl Row {
    fn per_sec(&self) -> f64 {
        self.tally.latencies_us.len() as f64 / self.secs
    }

    /// The `p`th percentile latency in ms, `None` without samples.
    fn ms(&self, p: f64) -> Option<f64> {
        percentile(&self.tally.latencies_us, p).map(|us| us as f64 / 1000.0)
    }

    fn errors(&self) -> u64 {
        self.tally.non_2xx + self.tally.transport_errors
    }
}

/// Runs `conns` connections for `warmup + duration` and summarises the measured part.
async fn run_phase(
    target: &Arc<Target>,
    phase: Phase,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> Row {
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let mut workers = JoinSet::new();
    for seed in 1..=conns as u64 {
        workers.spawn(load(target.clone(), phase, measure_from, end, seed));
    }
    let mut tally = Tally::default();
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(one) => tally.merge(one),
            Err(e) => tally.note(true, true, || format!("a load task failed: {e}")),
        }
    }
    tally.latencies_us.sort_unstable();
    let phase = match phase {
        Phase::Read => "read",
        Phase::Write => "write",
    };
    Row {
        phase,
        conns,
        secs: duration.as_secs_f64(),
        tally,
    }
}

/// What connections saw in the measured window.
#[derive(Default)]
struct Tally {
    /// Latencies of 2xx answers to requests started in the window.
    latencies_us: Vec<u64>,
    non_2xx: u64,
    transport_errors: u64,
    first_error: Option<String>,
}

impl Tally {
    /// Counts a failure if it happened in the measured window (`counted`).
    fn note(&mut self, counted: bool, transport: bool, message: impl FnOnce() -> String) {
        if !counted {
            return;
        }
        if transport {
            self.transport_errors += 1;
        } else {
            self.non_2xx += 1;
        }
        self.first_error.get_or_insert_with(message);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.non_2xx += other.non_2xx;
        self.transport_errors += other.transport_errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// One connection's request loop until `end`. A request still in flight at `end` is dropped,
/// neither counted nor an error (as in wrk), so that every phase ends on time.
async fn load(target: Arc<Target>, phase: Phase, from: Instant, end: Instant, seed: u64) -> Tally {
    let (mut tally, mut rng, mut conn) = (Tally::default(), Rng(seed), None);
    while Instant::now() < end {
        let open = match conn.as_mut() {
            Some(open) => open,
            None => match timeout_at(end, Conn::open(&target)).await {
                Ok(Ok(new)) => conn.insert(new),
                Ok(Err(e)) => {
                    tally.note(Instant::now() >= from, true, || format!("connect: {e:#}"));
                    sleep(ERROR_BACKOFF).await;
                    continue;
                }
                Err(_) => break,
            },
        };
        let path = &target.paths[rng.below(target.paths.len())];
        let body = matches!(phase, Phase::Write).then(|| rng.put_body());
        let started = Instant::now();
        let counted = started >= from;
        match timeout_at(end, open.send(path, body)).await {
            Err(_) => break,
            Ok(Ok((status, _))) if status.is_success() => {
                if counted {
                    tally
                        .latencies_us
                        .push(started.elapsed().as_micros() as u64);
                }
            }
            Ok(Ok((status, body))) => tally.note(counted, false, || {
                format!("{status}: {}", String::from_utf8_lossy(&body))
            }),
            Ok(Err(e)) => {
                tally.note(counted, true, || format!("{e:#}"));
                conn = None;
                sleep(ERROR_BACKOFF).await;
            }
        }
    }
    tally
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least `p`% of the
/// samples at or below it. `None` when there are no samples.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// `--addr`: HOST:PORT whose every resolved address is loopback (127.0.0.0/8 or ::1): load
/// tests may only target this machine.
fn loopback_addr(text: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{text}`: {e}"))?
        .collect();
    match addrs.first() {
        Some(&first) if addrs.iter().all(|a| a.ip().is_loopback()) => Ok(first),
        Some(_) => Err(format!(
            "`{text}` is not loopback: only 127.0.0.0/8 or ::1 may be loaded"
        )),
        None => Err(format!("`{text}` resolves to no address")),
    }
}

/// splitmix64: enough randomness to pick secrets and make values, without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }

    /// `{"value":"<64 fresh printable characters>"}`.
    fn put_body(&mut self) -> String {
        let value: String = (0..64)
            .map(|_| ALPHABET[self.below(ALPHABET.len())] as char)
            .collect();
        format!(r#"{{"value":"{value}"}}"#)
    }
}

/// What the figures were measured on.
struct Header {
    date: String,
    nproc: usize,
    commit: String,
    version: String,
}

fn print_table(h: &Header, rows: &[Row]) {
    println!(
        "# {}  nproc {}  commit {}  coffer {}",
        h.date, h.nproc, h.commit, h.version
    );
    println!("phase  conns  requests      req/s       p50       p99  errors");
    for r in rows {
        let ms = |p| r.ms(p).map_or("-".to_owned(), |ms| format!("{ms:.3}"));
        let (n, rate) = (r.tally.latencies_us.len(), r.per_sec());
        let (p50, p99, errors) = (ms(50.0), ms(99.0), r.errors());
        println!(
            "{:<5}  {:>5}  {n:>8}  {rate:>9.1}  {p50:>8}  {p99:>8}  {errors:>6}",
            r.phase, r.conns
        );
    }
}

fn print_json(h: &Header, rows: &[Row]) {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "phase": r.phase, "conns": r.conns, "requests": r.tally.latencies_us.len(),
                "req_per_s": r.per_sec(), "p50_ms": r.ms(50.0), "p99_ms": r.ms(99.0),
                "errors": r.errors(), "non_2xx": r.tally.non_2xx,
                "transport_errors": r.tally.transport_errors, "first_error": r.tally.first_error,
            })
        })
        .collect();
    let out = serde_json::json!({
        "date": h.date, "nproc": h.nproc, "commit": h.commit, "version": h.version, "rows": rows,
    });
    println!("{out:#}");
}

/// A command's trimmed stdout, or `unknown` when it cannot run or fails.
/// The CPU time (user and system) that process `pid` used between `from` and `end`, in
/// milliseconds, read from `/proc/<pid>/stat` at both instants; `None` where it cannot be
/// read. Unlike requests per second, CPU time per request hardly moves with the machine's
/// speed from day to day or with what else it runs, so it shows a hot-path change's effect.
fn cpu_between(pid: u32, from: Instant, end: Instant) -> tokio::task::JoinHandle<Option<f64>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from).await;
        let before = cpu_ms(pid)?;
        let started = unix_seconds();
        tokio::time::sleep_until(end).await;
        // On stderr, to line a `perf record -k CLOCK_REALTIME` of the server up with phases.
        eprintln!(
            "# measured window {started:.3}..{:.3} (unix s)",
            unix_seconds()
        );
        Some(cpu_ms(pid)? - before)
    })
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `utime + stime` of `pid` so far, in milliseconds.
fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second: f64 = stdout_of(&["getconf", "CLK_TCK"]).parse().ok()?;
    Some(ticks as f64 * 1000.0 / per_second)
}

fn stdout_of(argv: &[&str]) -> String {
    match Command::new(argv[0])
        .args(&argv[1..])
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&samples, 0.0), Some(1));
        assert_eq!(percentile(&[7, 9, 30], 50.0), Some(9));
        assert_eq!(percentile(&[7, 9, 30], 99.0), Some(30));
    }

    #[test]
    fn percentile_of_one_sample_is_that_sample_and_of_none_is_none() {
        assert_eq!(percentile(&[42], 50.0), Some(42));
        assert_eq!(percentile(&[42], 99.0), Some(42));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn loopback_addresses_are_accepted() {
        for addr in ["127.0.0.1:8720", "127.200.3.4:1", "[::1]:8720"] {
            assert_eq!(loopback_addr(addr), Ok(addr.parse().unwrap()));
        }
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        let remote = [
            "10.0.0.1:80",
            "0.0.0.0:8720",
            "128.0.0.1:80",
            "[::]:80",
            "[2001:db8::1]:80",
        ];
        for addr in remote {
            assert!(
                loopback_addr(addr).unwrap_err().contains("not loopback"),
                "{addr}"
            );
        }
        assert!(loopback_addr("127.0.0.1").is_err(), "a port is required");
    }

    fn connections(list: &str) -> Result<Vec<u16>, clap::Error> {
        Args::try_parse_from(["coffer-bench", "--connections", list]).map(|a| a.connections)
    }

    #[test]
    fn connection_lists_parse_in_order_with_1_16_by_default() {
        let default = Args::try_parse_from(["coffer-bench"]).unwrap();
        assert_eq!(default.connections, [1, 16]);
        assert_eq!(connections("4,2,1024").unwrap(), [4, 2, 1024]);
        assert_eq!(connections("8").unwrap(), [8]);
    }

    #[test]
    fn bad_connection_lists_are_refused() {
        for list in ["", "0", "1,,2", "1,x", "-1", "1025", "1,16,"] {
            assert!(connections(list).is_err(), "{list:?}");
        }
    }

    #[test]
    fn put_bodies_hold_64_printable_characters() {
        let body = Rng(1).put_body();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let value = json["value"].as_str().unwrap();
        assert_eq!(value.len(), 64);
        assert!(value.bytes().all(|b| b.is_ascii_graphic()));
    }
}
