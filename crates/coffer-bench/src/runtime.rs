//! `--runtime`: the runtime plane's figures (issue 9), each beside the same run's metadata
//! reads/s (this machine's speed drifts from day to day; the targets are for a day when
//! that figure is about 25,000/s):
//! - `resolve`: `POST …/functions/{id}/resolve` of a function declaring 3 secrets, with a
//!   runtime key, at `--connections`' largest count;
//! - `pull`: 8 workers polling and completing runs one at a time, then 8 workers with 4
//!   jobs each in flight (the Rust SDK's default), while 4 connections send events; then 8
//!   workers taking runs from a queue filled before the row (60,000 runs of 10 functions):
//!   "jobs leased and completed", without the sends' cost;
//! - `push`: events sent by 8, then 32 connections, each delivered (3 secrets resolved and
//!   decrypted, signed) to an endpoint in this process that checks the signature; the
//!   event-to-delivery latency is measured from a timestamp in the event's data.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use crate::{
    Conn, MASTER_KEY, Phase, Server, Target, cpu_between, percentile, run_phase, seed, stdout_of,
};

/// Pull workers, as the issue's target says.
const WORKERS: usize = 8;
/// Jobs one worker keeps in flight in the second pull row (the Rust SDK's default).
const SDK_IN_FLIGHT: usize = 4;
/// Connections sending events during the pull and push phases.
const PULL_SENDERS: usize = 4;
/// Functions one `bench.fill` event starts a run of (each declaring the same 3 secrets):
/// the queue of the filled-queue pull row is filled ten runs per event.
const FILL_FUNCTIONS: usize = 10;
/// Events sent before the filled-queue pull row: more runs than its workers can take.
const FILL_EVENTS: usize = 6_000;
const PUSH_SENDERS: usize = 8;

/// Runs the runtime phases against a fresh server and prints one table.
pub async fn bench(
    bin: &Path,
    secrets: u32,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<ExitCode> {
    let dir = Arc::new(tempfile::tempdir().context("cannot create a temp dir")?);
    let server = Server::start(bin, dir, ("COFFER_MASTER_KEY", MASTER_KEY)).await?;
    let admin = bearer(&server.api_key)?;
    let paths = (0..secrets.max(3))
        .map(|i| format!("/v1/environments/default/secrets/BENCH_{i:04}"))
        .collect();
    let target = Arc::new(Target {
        addr: server.addr,
        auth: admin.clone(),
        paths,
    });
    seed(&target).await?;
    let pid = server.pid();
    // The server's CPU time in each phase's measured part (it starts after the warm-up).
    let cpu = |duration: Duration| {
        let from = Instant::now() + warmup;
        cpu_between(pid, from, from + duration)
    };
    let reads_cpu = cpu(duration);
    let reads = run_phase(&target, Phase::Read, connections, warmup, duration).await;

    // A runtime key, and one function of each mode declaring three of the seeded secrets.
    let mut conn = Conn::open(&target).await?;
    let body = r#"{"name":"bench","role":"runtime","environment":"default"}"#;
    let (status, answer) = conn
        .send_as(Method::POST, "/v1/api-keys", Some(body.into()))
        .await?;
    if status != StatusCode::CREATED {
        bail!("creating a runtime key answered {status}");
    }
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    let runtime = bearer(answer["key"].as_str().context("no key in the answer")?)?;
    let declared = r#"["BENCH_0000","BENCH_0001","BENCH_0002"]"#;
    let pull =
        format!(r#"{{"triggers":[{{"event":"bench.pull"}}],"secrets":{declared},"mode":"pull"}}"#);
    put_function(&mut conn, "bench-pull", pull).await?;
    let fill =
        format!(r#"{{"triggers":[{{"event":"bench.fill"}}],"secrets":{declared},"mode":"pull"}}"#);
    for i in 0..FILL_FUNCTIONS {
        put_function(&mut conn, &format!("bench-fill-{i}"), fill.clone()).await?;
    }

    let signing = Arc::new(Mutex::new(String::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let endpoint = Endpoint::start(signing.clone(), push_check(latencies.clone())).await?;
    let push = format!(
        r#"{{"triggers":[{{"event":"bench.push"}}],"secrets":{declared},"mode":"push","url":"http://{}/hook","retries":0,"concurrency":256}}"#,
        endpoint.addr
    );
    let answer = put_function(&mut conn, "bench-push", push).await?;
    *signing.lock().unwrap_or_else(|p| p.into_inner()) = answer["signingSecret"]
        .as_str()
        .context("no signing secret")?
        .to_owned();

    let as_runtime = Arc::new(Target {
        addr: server.addr,
        auth: runtime,
        paths: vec![],
    });
    analyze()?;
    mark("resolve", warmup);
    let resolve_cpu = cpu(duration);
    let resolve = resolve_phase(&as_runtime, connections, warmup, duration).await;
    analyze()?;
    mark("pulled", warmup);
    let pulled_cpu = cpu(duration);
    let pulled = pull_phase(
        &target,
        &as_runtime,
        WORKERS,
        Feed::Senders,
        warmup,
        duration,
    )
    .await;
    analyze()?;
    mark("pulled_sdk", warmup);
    let pulled_sdk_cpu = cpu(duration);
    let pulled_sdk = pull_phase(
        &target,
        &as_runtime,
        WORKERS * SDK_IN_FLIGHT,
        Feed::Senders,
        warmup,
        duration,
    )
    .await;
    fill_queue(&target).await?;
    analyze()?;
    mark("filled", warmup);
    let filled_cpu = cpu(duration);
    let filled = pull_phase(
        &target,
        &as_runtime,
        WORKERS,
        Feed::Filled,
        warmup,
        duration,
    )
    .await;
    analyze()?;
    mark("pushed", warmup);
    let pushed_cpu = cpu(duration);
    let pushed = push_phase(&target, &latencies, PUSH_SENDERS, warmup, duration).await;
    analyze()?;
    mark("pushed_wide", warmup);
    let pushed_wide_cpu = cpu(duration);
    let pushed_wide = push_phase(&target, &latencies, PUSH_SENDERS * 4, warmup, duration).await;
    let mut cpus = Vec::new();
    for handle in [
        reads_cpu,
        resolve_cpu,
        pulled_cpu,
        pulled_sdk_cpu,
        filled_cpu,
        pushed_cpu,
        pushed_wide_cpu,
    ] {
        cpus.push(handle.await.ok().flatten());
    }

    println!(
        "# {}  nproc {}  commit {}",
        stdout_of(&["date", "-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        stdout_of(&["git", "rev-parse", "--short", "HEAD"])
    );
    println!(
        "phase                       conns      count        /s       p50       p99  errors  server-cpu-us/op  server-cores"
    );
    let ms = |v: Option<u64>| v.map_or("-".to_owned(), |us| format!("{:.3}", us as f64 / 1000.0));
    let secs = duration.as_secs_f64();
    let mut failed = false;
    let rows = [
        (
            "metadata read",
            connections,
            reads.tally.latencies_us.clone(),
            reads.errors(),
        ),
        ("resolve (3 secrets)", connections, resolve.0, resolve.1),
        ("pull (8 workers) completed", WORKERS, pulled.0, pulled.1),
        (
            "pull (8 workers × 4 jobs)",
            WORKERS * SDK_IN_FLIGHT,
            pulled_sdk.0,
            pulled_sdk.1,
        ),
        ("pull (8), queue filled", WORKERS, filled.0, filled.1),
        (
            "push delivered (event→hook)",
            PUSH_SENDERS,
            pushed.0,
            pushed.1,
        ),
        (
            "push delivered, 32 senders",
            PUSH_SENDERS * 4,
            pushed_wide.0,
            pushed_wide.1,
        ),
    ];
    for ((name, conns, mut latencies, errors), cpu_ms) in rows.into_iter().zip(cpus) {
        latencies.sort_unstable();
        failed |= errors > 0;
        // Per completed operation of the row (a read, a resolve, a run), all the server
        // did for it included (for runs: the event's send, the lease, the completion).
        let per_op = cpu_ms
            .filter(|_| !latencies.is_empty())
            .map_or("-".to_owned(), |c| {
                format!("{:.1}", c * 1000.0 / latencies.len() as f64)
            });
        let cores = cpu_ms.map_or("-".to_owned(), |c| format!("{:.2}", c / 1000.0 / secs));
        println!(
            "{name:<27} {conns:>5} {:>10} {:>9.1} {:>9} {:>9} {errors:>7} {per_op:>17} {cores:>13}",
            latencies.len(),
            latencies.len() as f64 / secs,
            ms(percentile(&latencies, 50.0)),
            ms(percentile(&latencies, 99.0)),
        );
    }
    let per_s = |n: u64| n / duration.as_secs().max(1);
    println!(
        "(events sent/s — pull: {}, {}; push: {}, {}; bad signatures {})",
        per_s(pulled.2),
        per_s(pulled_sdk.2),
        per_s(pushed.2),
        per_s(pushed_wide.2),
        endpoint.bad.load(Ordering::Relaxed)
    );
    failed |= endpoint.bad.load(Ordering::Relaxed) > 0;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Tells on stderr when a phase starts and when its measured part does, so that a profiler
/// attached to the server can be lined up with one phase.
fn mark(phase: &str, warmup: Duration) {
    eprintln!(
        "phase {phase}: measured from {} ms after this line",
        warmup.as_millis()
    );
}

/// On PostgreSQL (`COFFER_BENCH_DATABASE_URL`), `ANALYZE` before a phase: what autovacuum's
/// auto-analyze does in a deployment as the runs table grows, which this project's
/// PostgreSQL (autovacuum off) never does by itself. Without it the planner keeps the
/// statistics of an empty table and may walk a whole index for a one-row lookup.
fn analyze() -> anyhow::Result<()> {
    let Some(url) = std::env::var_os("COFFER_BENCH_DATABASE_URL") else {
        return Ok(());
    };
    let status = std::process::Command::new("psql")
        .arg(url)
        .args(["-qXc", "ANALYZE"])
        .status()
        .context("cannot run psql for ANALYZE")?;
    if !status.success() {
        bail!("psql ANALYZE failed: {status}");
    }
    Ok(())
}

pub(crate) fn bearer(key: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {key}")).context("bad API key")?;
    v.set_sensitive(true);
    Ok(v)
}

pub(crate) async fn put_function(
    conn: &mut Conn,
    id: &str,
    body: String,
) -> anyhow::Result<serde_json::Value> {
    let path = format!("/v1/environments/default/functions/{id}");
    let (status, answer) = conn.send_as(Method::PUT, &path, Some(body)).await?;
    if !status.is_success() {
        bail!(
            "registering {id} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(serde_json::from_slice(&answer)?)
}

/// `conns` connections resolving for `warmup + duration`: latencies of the measured part
/// and the errors.
async fn resolve_phase(
    target: &Arc<Target>,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> (Vec<u64>, u64) {
    let from = Instant::now() + warmup;
    let end = from + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let target = target.clone();
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let Ok(mut conn) = Conn::open(&target).await else {
                return (latencies, 1);
            };
            let path = "/v1/environments/default/functions/bench-pull/resolve";
            while Instant::now() < end {
                let started = Instant::now();
                match timeout_at(end, conn.send_as(Method::POST, path, None)).await {
                    Ok(Ok((StatusCode::OK, _))) if started >= from => {
                        latencies.push(started.elapsed().as_micros() as u64)
                    }
                    Ok(Ok((StatusCode::OK, _))) => {}
                    Ok(_) if started >= from => errors += 1,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            (latencies, errors)
        });
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((l, e)) => {
                latencies.extend(l);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    (latencies, errors)
}

/// Senders of `event` on `n` connections until `end`; returns how many were accepted.
fn senders(
    tasks: &mut JoinSet<(Vec<u64>, u64, u64)>,
    target: &Arc<Target>,
    n: usize,
    event: &'static str,
    end: Instant,
) {
    for _ in 0..n {
        let target = target.clone();
        tasks.spawn(async move {
            let (mut sent, mut errors) = (0u64, 0u64);
            let Ok(mut conn) = Conn::open(&target).await else {
                return (vec![], 1, 0);
            };
            while Instant::now() < end {
                let body = format!(r#"{{"name":"{event}","data":{{"sentUs":{}}}}}"#, now_us());
                match timeout_at(
                    end,
                    conn.send_as(Method::POST, "/v1/environments/default/events", Some(body)),
                )
                .await
                {
                    Ok(Ok((StatusCode::ACCEPTED, _))) => sent += 1,
                    Ok(_) => errors += 1,
                    Err(_) => break,
                }
            }
            (vec![], errors, sent)
        });
    }
}

/// Workers poll and complete while senders keep the queue fed: latencies of completions
/// (poll + complete) in the measured part, errors, events sent in it.
async fn pull_phase(
    admin: &Arc<Target>,
    runtime: &Arc<Target>,
    pollers: usize,
    feed: Feed,
    warmup: Duration,
    duration: Duration,
) -> (Vec<u64>, u64, u64) {
    let from = Instant::now() + warmup;
    let end = from + duration;
    let mut tasks = JoinSet::new();
    let poll: Arc<str> = match feed {
        Feed::Senders => {
            senders(&mut tasks, admin, PULL_SENDERS, "bench.pull", end);
            r#"{"functions":["bench-pull"],"waitMs":1000}"#.into()
        }
        Feed::Filled => {
            let ids: Vec<String> = (0..FILL_FUNCTIONS)
                .map(|i| format!(r#""bench-fill-{i}""#))
                .collect();
            format!(r#"{{"functions":[{}],"waitMs":1000}}"#, ids.join(",")).into()
        }
    };
    for _ in 0..pollers {
        let (target, poll) = (runtime.clone(), poll.clone());
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let Ok(mut conn) = Conn::open(&target).await else {
                return (latencies, 1, 0);
            };
            while Instant::now() < end {
                let started = Instant::now();
                let path = "/v1/environments/default/workers/poll";
                let job = match timeout_at(
                    end,
                    conn.send_as(Method::POST, path, Some(poll.to_string())),
                )
                .await
                {
                    Ok(Ok((StatusCode::OK, body))) => body,
                    Ok(Ok((StatusCode::NO_CONTENT, _))) => continue,
                    Ok(_) => {
                        errors += 1;
                        continue;
                    }
                    Err(_) => break,
                };
                let job: serde_json::Value = serde_json::from_slice(&job).unwrap_or_default();
                let (Some(run), Some(attempt)) = (job["runId"].as_str(), job["attempt"].as_u64())
                else {
                    errors += 1;
                    continue;
                };
                let path = format!("/v1/environments/default/runs/{run}/complete");
                let body = format!(r#"{{"output":{{"ok":true}},"attempt":{attempt}}}"#);
                match timeout_at(end, conn.send_as(Method::POST, &path, Some(body))).await {
                    Ok(Ok((StatusCode::OK, _))) if started >= from => {
                        latencies.push(started.elapsed().as_micros() as u64)
                    }
                    Ok(Ok((StatusCode::OK, _))) => {}
                    Ok(_) => errors += 1,
                    Err(_) => break,
                }
            }
            (latencies, errors, 0)
        });
    }
    collect(tasks, duration, warmup).await
}

/// Where a pull row's runs come from.
#[derive(Clone, Copy)]
enum Feed {
    /// Events sent by [`PULL_SENDERS`] connections while the workers run.
    Senders,
    /// A queue filled before the row ([`fill_queue`]): only leases and completions.
    Filled,
}

/// Queues `FILL_EVENTS × FILL_FUNCTIONS` runs for the filled-queue row, from 16 connections.
async fn fill_queue(admin: &Arc<Target>) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    let per_task = FILL_EVENTS / 16;
    for _ in 0..16 {
        let target = admin.clone();
        tasks.spawn(async move {
            let mut conn = Conn::open(&target).await?;
            for _ in 0..per_task {
                let body = r#"{"name":"bench.fill","data":{}}"#.to_owned();
                let path = "/v1/environments/default/events";
                let (status, _) = conn.send_as(Method::POST, path, Some(body)).await?;
                if status != StatusCode::ACCEPTED {
                    bail!("filling the queue: an event answered {status}");
                }
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a filling task failed")??;
    }
    Ok(())
}

async fn collect(
    mut tasks: JoinSet<(Vec<u64>, u64, u64)>,
    duration: Duration,
    warmup: Duration,
) -> (Vec<u64>, u64, u64) {
    let (mut latencies, mut errors, mut sent) = (Vec::new(), 0, 0);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((l, e, s)) => {
                latencies.extend(l);
                errors += e;
                sent += s;
            }
            Err(_) => errors += 1,
        }
    }
    // Senders count over warm-up and measurement: scale to the measured part.
    let total = (warmup + duration).as_secs_f64();
    let sent = (sent as f64 * duration.as_secs_f64() / total) as u64;
    (latencies, errors, sent)
}

/// Senders send push events; the endpoint records each delivery's latency from the
/// event's `sentUs` in `latencies`. Returns the latencies of deliveries in the measured part.
async fn push_phase(
    admin: &Arc<Target>,
    latencies: &Mutex<Vec<u64>>,
    sending: usize,
    warmup: Duration,
    duration: Duration,
) -> (Vec<u64>, u64, u64) {
    let from = Instant::now() + warmup;
    let end = from + duration;
    let mut tasks = JoinSet::new();
    senders(&mut tasks, admin, sending, "bench.push", end);
    tokio::time::sleep_until(from).await;
    latencies.lock().unwrap_or_else(|p| p.into_inner()).clear();
    tokio::time::sleep_until(end).await;
    let latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    let (_, errors, sent) = collect(tasks, duration, warmup).await;
    (latencies, errors, sent)
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The push phases' check: a delivery carries the 3 declared secrets; its latency from the
/// event's `sentUs` goes to `latencies`.
fn push_check(latencies: Arc<Mutex<Vec<u64>>>) -> OnDelivery {
    Arc::new(move |job: &serde_json::Value| {
        if job["secrets"].as_object().is_none_or(|s| s.len() != 3) {
            return None;
        }
        if let Some(sent) = job["event"]["data"]["sentUs"].as_u64() {
            latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(now_us().saturating_sub(sent));
        }
        Some(Bytes::from_static(b"{\"ok\":true}"))
    })
}

/// What the endpoint does with a delivery whose signature checks, given its parsed body:
/// `Some(answer)` is answered 200 with it; `None` counts the delivery as bad and answers 401.
pub(crate) type OnDelivery = Arc<dyn Fn(&serde_json::Value) -> Option<Bytes> + Send + Sync>;

/// A push endpoint on 127.0.0.1 that checks `Coffer-Signature` and hands each signed
/// delivery to its [`OnDelivery`].
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    /// Deliveries with a bad signature or refused by the check.
    pub(crate) bad: Arc<AtomicU64>,
}

impl Endpoint {
    pub(crate) async fn start(
        signing: Arc<Mutex<String>>,
        check: OnDelivery,
    ) -> anyhow::Result<Endpoint> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let bad = Arc::new(AtomicU64::new(0));
        let b = bad.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (c, b, signing) = (check.clone(), b.clone(), signing.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (c, b, signing) = (c.clone(), b.clone(), signing.clone());
                        async move { Ok::<_, hyper::Error>(hook(req, &*c, &b, &signing).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(Endpoint { addr, bad })
    }
}

async fn hook(
    req: hyper::Request<hyper::body::Incoming>,
    check: &(dyn Fn(&serde_json::Value) -> Option<Bytes> + Send + Sync),
    bad: &AtomicU64,
    signing: &Mutex<String>,
) -> hyper::Response<Full<Bytes>> {
    let header = req
        .headers()
        .get(coffer_wire::signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let secret = signing.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let now = (now_us() / 1_000_000) as i64;
    let verified = coffer_wire::signature::verify(
        &header,
        &[secret.as_bytes()],
        &body,
        now,
        coffer_wire::signature::DEFAULT_TOLERANCE_SECS,
    );
    let job: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match verified.ok().and_then(|_| check(&job)) {
        Some(answer) => hyper::Response::new(Full::new(answer)),
        None => {
            bad.fetch_add(1, Ordering::Relaxed);
            let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
    }
}
