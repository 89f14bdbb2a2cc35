//! `--orchestrations`: orchestration runs of three compute steps (issue 10), beside the same
//! run's metadata reads/s (this machine's speed drifts from day to day).
//!
//! One push function (no declared secrets, retries 0) delivers to an endpoint in this
//! process that checks each delivery's signature and that its `triggerParams` hold the
//! step's two encrypted params, opened. Each orchestration has steps `s1`, `s2`, `s3`, all
//! computed by that function. For each count of `--connections`, that many connections each
//! keep **one run in flight** (a closed loop: a connection starts its next run when the
//! endpoint has received its current run's last step), so the runs in flight are bounded by
//! the count. Figures:
//! - steps: deliveries received in the measured window (the first of each run and step;
//!   a repeat delivery is counted apart), and the step-to-step latency: the time between
//!   the endpoint receiving a run's step k and its step k+1;
//! - runs: runs whose last step reached the endpoint in the window, and the latency from
//!   `POST …/runs` to that delivery for runs started in it.
//!
//! After each phase the runs still in flight are waited for (bounded), then the server is
//! asked how many runs are still running and how many failed.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

use crate::runtime::{Endpoint, OnDelivery, bearer, now_us, put_function};
use crate::{
    Conn, ERROR_BACKOFF, MASTER_KEY, Phase, REQUEST_TIMEOUT, Rng, Server, Target, percentile,
    run_phase, seed, stdout_of,
};

/// Connections of the reference metadata-read phase: the runtime bench's count, so that the
/// two reference figures compare.
const READ_CONNECTIONS: usize = 16;
/// The steps, in order.
const STEPS: [&str; 3] = ["s1", "s2", "s3"];
/// Longest wait for one run's last step; a run that fails before it never gets there.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait, after a phase, for the server's runs to stop running.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the orchestration phases against a fresh server and prints one table (or JSON).
pub async fn bench(
    bin: &Path,
    secrets: u32,
    connections: &[usize],
    warmup: Duration,
    duration: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let load_before = loadavg();
    let dir = Arc::new(tempfile::tempdir().context("cannot create a temp dir")?);
    let server = Server::start(bin, dir, ("COFFER_MASTER_KEY", MASTER_KEY)).await?;
    let paths = (0..secrets)
        .map(|i| format!("/v1/environments/default/secrets/BENCH_{i:04}"))
        .collect();
    let target = Arc::new(Target {
        addr: server.addr,
        auth: bearer(&server.api_key)?,
        paths,
    });
    seed(&target).await?;
    let reads = run_phase(&target, Phase::Read, READ_CONNECTIONS, warmup, duration).await;

    // Each step's two params: distinct values, so a param given to the wrong step shows.
    let mut rng = Rng(10);
    let mut expected = HashMap::new();
    for step in STEPS {
        let mut value = |param: &str| {
            let tail: String = (0..24)
                .map(|_| crate::ALPHABET[rng.below(crate::ALPHABET.len())] as char)
                .collect();
            format!("{step}-{param}-{tail}")
        };
        expected.insert(step, [value("P1"), value("P2")]);
    }
    let expected = Arc::new(expected);
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let signing = Arc::new(Mutex::new(String::new()));
    let endpoint = Endpoint::start(
        signing.clone(),
        step_check(tracker.clone(), expected.clone()),
    )
    .await?;

    let mut conn = Conn::open(&target).await?;
    let function = format!(
        r#"{{"triggers":[],"secrets":[],"mode":"push","url":"http://{}/hook","retries":0,"concurrency":256}}"#,
        endpoint.addr
    );
    let answer = put_function(&mut conn, "bench-step", function).await?;
    *signing.lock().unwrap_or_else(|p| p.into_inner()) = answer["signingSecret"]
        .as_str()
        .context("no signing secret")?
        .to_owned();
    let steps: Vec<serde_json::Value> = STEPS
        .iter()
        .map(|&id| {
            let [p1, p2] = &expected[id];
            serde_json::json!({"id": id, "type": "compute", "functionId": "bench-step",
                "encryptedParams": {"P1": {"value": p1, "encrypt": true},
                                    "P2": {"value": p2, "encrypt": true}}})
        })
        .collect();
    let body = serde_json::json!({"name": "bench", "steps": steps}).to_string();
    let (status, answer) = conn
        .send_as(
            Method::POST,
            "/v1/environments/default/orchestrations",
            Some(body),
        )
        .await?;
    if status != StatusCode::CREATED {
        bail!(
            "creating the orchestration answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    let orch = answer["id"].as_str().context("no orchestration id")?;
    let start_path = Arc::new(format!(
        "/v1/environments/default/orchestrations/{orch}/runs"
    ));
    drop(conn);

    let mut phases = Vec::new();
    let mut failed_before = 0;
    for &conns in connections {
        let bad_before = endpoint.bad.load(Ordering::Relaxed);
        let mut phase = run_flows(&target, &tracker, &start_path, conns, warmup, duration).await;
        phase.bad = endpoint.bad.load(Ordering::Relaxed) - bad_before;
        // A fresh connection: the set-up one may have been closed while idle.
        let mut conn = Conn::open(&target).await?;
        phase.still_running = drain(&mut conn).await?;
        let failed = count_runs(&mut conn, "failed").await?;
        phase.failed = failed - failed_before;
        failed_before = failed;
        phases.push(phase);
    }
    let load_after = loadavg();

    let secs = duration.as_secs_f64();
    let mut rows = vec![Row::new(
        "metadata read",
        READ_CONNECTIONS,
        reads.tally.latencies_us.clone(),
        None,
        reads.errors(),
        secs,
    )];
    for p in &phases {
        // Steps count deliveries; their latencies are the gaps (one fewer per run).
        let steps = Row::new(
            "steps (step→step)",
            p.conns,
            p.gaps_us.clone(),
            Some(p.steps),
            p.bad,
            secs,
        );
        let run_errors = p.start_errors + p.timeouts + p.failed + p.still_running;
        let runs = Row::new(
            "runs (start→last step)",
            p.conns,
            p.run_latencies_us.clone(),
            Some(p.runs_done),
            run_errors,
            secs,
        );
        rows.extend([steps, runs]);
    }
    let header = serde_json::json!({
        "date": stdout_of(&["date", "-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "commit": stdout_of(&["git", "rev-parse", "--short", "HEAD"]),
        "loadavgBefore": load_before,
        "loadavgAfter": load_after,
    });
    if json {
        print_json(&header, &rows, &phases);
    } else {
        print_table(&header, &rows, &phases);
    }
    let failed = rows.iter().any(|r| r.errors > 0) || phases.iter().any(|p| p.repeats > 0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What the endpoint has seen, shared with the connections that start runs.
#[derive(Default)]
struct Tracker {
    /// The measured window; deliveries outside it are followed but not counted.
    window: Option<(Instant, Instant)>,
    /// Runs whose last step has not been claimed by their starter yet.
    runs: HashMap<String, RunSeen>,
    /// First deliveries of a step received in the window.
    steps: u64,
    /// Runs whose last step was received in the window.
    runs_done: u64,
    /// Step-to-step gaps whose later step was received in the window.
    gaps_us: Vec<u64>,
    /// A (run, step) delivered again (at least once delivery), in the window.
    repeats: u64,
}

#[derive(Default)]
struct RunSeen {
    /// The last step received (its index) and when.
    last: Option<(usize, Instant)>,
    /// Its last step was received, or a step was refused: it goes no further.
    ended: bool,
    /// The starter waiting for it to end.
    waiter: Option<oneshot::Sender<()>>,
}

impl RunSeen {
    fn end(&mut self) {
        self.ended = true;
        if let Some(w) = self.waiter.take() {
            let _ = w.send(());
        }
    }
}

fn lock(tracker: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(|p| p.into_inner())
}

/// The endpoint's check: the delivery is a step of a bench run whose `triggerParams` hold
/// that step's P1 and P2 as set; it is recorded and answered `{"ok": true, "t": <ms now>}`.
fn step_check(
    tracker: Arc<Mutex<Tracker>>,
    expected: Arc<HashMap<&'static str, [String; 2]>>,
) -> OnDelivery {
    Arc::new(move |job: &serde_json::Value| {
        let now = Instant::now();
        let data = &job["event"]["data"];
        let run = data["orchestrationRunId"].as_str()?;
        let step_id = data["stepId"].as_str().unwrap_or_default();
        let index = STEPS.iter().position(|&s| s == step_id);
        let params = &job["triggerParams"];
        let mut t = lock(&tracker);
        let seen = t.runs.entry(run.to_owned()).or_default();
        let (Some(index), Some([p1, p2])) = (index, expected.get(step_id)) else {
            seen.end();
            return None;
        };
        if params["P1"].as_str() != Some(p1.as_str()) || params["P2"].as_str() != Some(p2.as_str())
        {
            seen.end();
            return None;
        }
        let previous = seen.last;
        let repeat = previous.is_some_and(|(k, _)| k >= index);
        if !repeat {
            seen.last = Some((index, now));
            if index + 1 == STEPS.len() {
                seen.end();
            }
        }
        if t.window.is_some_and(|(from, end)| from <= now && now < end) {
            if repeat {
                t.repeats += 1;
            } else {
                t.steps += 1;
                if index + 1 == STEPS.len() {
                    t.runs_done += 1;
                }
                if let Some((k, at)) = previous
                    && k + 1 == index
                {
                    t.gaps_us.push((now - at).as_micros() as u64);
                }
            }
        }
        Some(Bytes::from(format!(
            r#"{{"ok":true,"t":{}}}"#,
            now_us() / 1000
        )))
    })
}

/// One phase of runs: what the endpoint and the starters saw.
struct Flows {
    conns: usize,
    steps: u64,
    runs_done: u64,
    gaps_us: Vec<u64>,
    repeats: u64,
    run_latencies_us: Vec<u64>,
    /// `POST …/runs` not answered 202 (or not at all).
    start_errors: u64,
    /// Runs whose last step did not arrive within [`RUN_TIMEOUT`].
    timeouts: u64,
    /// Deliveries refused by the endpoint (bad signature, wrong params).
    bad: u64,
    /// Runs the server still had running after the drain.
    still_running: u64,
    /// Runs the server reports failed (started in this phase).
    failed: u64,
}

/// `conns` connections, each starting a run and waiting for its last step before the next,
/// for `warmup + duration`; the last runs are waited for (up to [`RUN_TIMEOUT`] each).
async fn run_flows(
    target: &Arc<Target>,
    tracker: &Arc<Mutex<Tracker>>,
    start_path: &Arc<String>,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> Flows {
    let from = Instant::now() + warmup;
    let end = from + duration;
    {
        let mut t = lock(tracker);
        t.window = Some((from, end));
        (t.steps, t.runs_done, t.repeats) = (0, 0, 0);
        t.gaps_us.clear();
    }
    let mut starters = JoinSet::new();
    for _ in 0..conns {
        let (target, tracker, path) = (target.clone(), tracker.clone(), start_path.clone());
        starters.spawn(async move { starter(&target, &tracker, &path, from, end).await });
    }
    let (mut run_latencies_us, mut start_errors, mut timeouts) = (Vec::new(), 0, 0);
    while let Some(done) = starters.join_next().await {
        match done {
            Ok((latencies, errors, late)) => {
                run_latencies_us.extend(latencies);
                start_errors += errors;
                timeouts += late;
            }
            Err(_) => start_errors += 1,
        }
    }
    let mut t = lock(tracker);
    t.window = None;
    Flows {
        conns,
        steps: t.steps,
        runs_done: t.runs_done,
        gaps_us: std::mem::take(&mut t.gaps_us),
        repeats: t.repeats,
        run_latencies_us,
        start_errors,
        timeouts,
        bad: 0,
        still_running: 0,
        failed: 0,
    }
}

/// One connection's closed loop until `end`: the latencies of runs started in the window,
/// start errors, and runs that timed out.
async fn starter(
    target: &Target,
    tracker: &Mutex<Tracker>,
    path: &str,
    from: Instant,
    end: Instant,
) -> (Vec<u64>, u64, u64) {
    let (mut latencies, mut errors, mut timeouts) = (Vec::new(), 0u64, 0u64);
    let mut conn = None;
    while Instant::now() < end {
        let open = match conn.as_mut() {
            Some(open) => open,
            None => match Conn::open(target).await {
                Ok(new) => conn.insert(new),
                Err(_) => {
                    errors += 1;
                    sleep(ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let answer = timeout(REQUEST_TIMEOUT, open.send_as(Method::POST, path, None)).await;
        let run = match answer {
            Ok(Ok((StatusCode::ACCEPTED, body))) => {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
            }
            Ok(Ok(_)) => None,
            Ok(Err(_)) | Err(_) => {
                conn = None;
                None
            }
        };
        let Some(run) = run else {
            errors += 1;
            sleep(ERROR_BACKOFF).await;
            continue;
        };
        let waiting = {
            let mut t = lock(tracker);
            let seen = t.runs.entry(run.clone()).or_default();
            if seen.ended {
                None
            } else {
                let (tx, rx) = oneshot::channel();
                seen.waiter = Some(tx);
                Some(rx)
            }
        };
        if let Some(rx) = waiting
            && !matches!(timeout(RUN_TIMEOUT, rx).await, Ok(Ok(())))
        {
            timeouts += 1;
        }
        let mut t = lock(tracker);
        let complete = t
            .runs
            .remove(&run)
            .and_then(|seen| seen.last)
            .is_some_and(|(k, _)| k + 1 == STEPS.len());
        if complete && started >= from && started < end {
            latencies.push(started.elapsed().as_micros() as u64);
        }
    }
    (latencies, errors, timeouts)
}

/// Waits (up to [`DRAIN_TIMEOUT`]) until the server has no orchestration run running;
/// returns how many still are.
async fn drain(conn: &mut Conn) -> anyhow::Result<u64> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let running = count_runs(conn, "running").await?;
        if running == 0 || Instant::now() >= deadline {
            return Ok(running);
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// How many orchestration runs of `default` have `status` (`GET …/orchestration-runs`).
async fn count_runs(conn: &mut Conn, status: &str) -> anyhow::Result<u64> {
    let (mut count, mut cursor) = (0, None::<String>);
    loop {
        let mut path =
            format!("/v1/environments/default/orchestration-runs?status={status}&limit=1000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (code, body) = timeout(REQUEST_TIMEOUT, conn.send_as(Method::GET, &path, None))
            .await
            .context("listing orchestration runs")??;
        if code != StatusCode::OK {
            bail!(
                "listing {status} orchestration runs answered {code}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let page: serde_json::Value = serde_json::from_slice(&body)?;
        count += page["runs"].as_array().map_or(0, |r| r.len() as u64);
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(count),
        }
    }
}

/// This machine's load averages (1, 5, 15 minutes), as `/proc/loadavg` gives them.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// One printed row.
struct Row {
    phase: &'static str,
    conns: usize,
    count: u64,
    per_sec: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    errors: u64,
}

impl Row {
    /// A row of `count` events (the latency samples' count when `None`) over `secs`, with
    /// the percentiles of the samples `us`.
    fn new(
        phase: &'static str,
        conns: usize,
        mut us: Vec<u64>,
        count: Option<u64>,
        errors: u64,
        secs: f64,
    ) -> Row {
        us.sort_unstable();
        let ms = |p| percentile(&us, p).map(|v| v as f64 / 1000.0);
        let count = count.unwrap_or(us.len() as u64);
        Row {
            phase,
            conns,
            count,
            per_sec: count as f64 / secs,
            p50_ms: ms(50.0),
            p99_ms: ms(99.0),
            errors,
        }
    }
}

fn print_table(header: &serde_json::Value, rows: &[Row], phases: &[Flows]) {
    let h = |k: &str| header[k].as_str().unwrap_or("?").to_owned();
    println!(
        "# {}  nproc {}  commit {}  loadavg {} (before) {} (after)",
        h("date"),
        header["nproc"],
        h("commit"),
        h("loadavgBefore"),
        h("loadavgAfter")
    );
    println!("phase                    conns      count         /s       p50       p99  errors");
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |ms| format!("{ms:.3}"));
    for r in rows {
        println!(
            "{:<24} {:>5} {:>10} {:>10.1} {:>9} {:>9} {:>7}",
            r.phase,
            r.conns,
            r.count,
            r.per_sec,
            ms(r.p50_ms),
            ms(r.p99_ms),
            r.errors
        );
    }
    for p in phases {
        println!(
            "({} in flight: failed runs {}, still running after the drain {}, start errors {}, \
             runs timed out {}, refused deliveries {}, repeated deliveries {})",
            p.conns, p.failed, p.still_running, p.start_errors, p.timeouts, p.bad, p.repeats
        );
    }
}

fn print_json(header: &serde_json::Value, rows: &[Row], phases: &[Flows]) {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "phase": r.phase, "conns": r.conns, "count": r.count, "per_s": r.per_sec,
                "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors,
            })
        })
        .collect();
    let phases: Vec<serde_json::Value> = phases
        .iter()
        .map(|p| {
            serde_json::json!({
                "conns": p.conns, "failed_runs": p.failed, "still_running": p.still_running,
                "start_errors": p.start_errors, "timeouts": p.timeouts,
                "refused_deliveries": p.bad, "repeated_deliveries": p.repeats,
            })
        })
        .collect();
    let mut out = header.clone();
    out["rows"] = rows.into();
    out["orchestrations"] = phases.into();
    println!("{out:#}");
}
