//! The pull worker: long-polls for runs of its functions, runs each handler with its lease
//! kept alive by heartbeats, reports how it ended, and stops gracefully.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use coffer_wire::{Complete, Heartbeat, Job, Poll};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::Client;
use crate::error::Error;
use crate::function::{Context, FunctionDef, HandlerResult, Registered, Registry};

/// How long one poll waits for a run by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// How long a run is the worker's by default; heartbeats extend it every third of it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Runs at once by default.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// The longest backoff between polls that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often a completion is tried when the server cannot be reached (a run whose
/// completion is lost is run again once its lease expires).
const COMPLETE_ATTEMPTS: u32 = 5;

/// A pull worker for one environment: `Worker::new(client, "production").function(def,
/// handler).run(shutdown).await`.
///
/// - Polls (`waitMs` 20 s by default) only while it has room for another run, so at most
///   [`concurrency`](Worker::concurrency) runs are in flight.
/// - Keeps each run's lease alive with a heartbeat every third of the lease while its
///   handler works; a run whose lease was lost anyway (the worker was stalled past it) is
///   not completed, since it went to another worker.
/// - Completes the run with the handler's output, or its error, naming the attempt it
///   was given, so a late completion from a previous attempt cannot end a newer one.
/// - On shutdown, stops polling, lets the runs in flight finish and complete, and returns.
///
/// Delivery is at least once: a worker that dies (or a poll cut off by the shutdown just as
/// the server handed it a run) leaves the run to come back when its lease expires, as a
/// new attempt. Handlers de-duplicate on [`Context::run_id`].
///
/// The client needs a runtime key of the environment.
pub struct Worker {
    client: Client,
    environment: String,
    functions: Registry,
    concurrency: usize,
    wait: Duration,
    lease: Duration,
}

impl Worker {
    /// A worker that polls `environment` through `client`.
    pub fn new(client: Client, environment: impl Into<String>) -> Worker {
        Worker {
            client,
            environment: environment.into(),
            functions: Registry::new(),
            concurrency: DEFAULT_CONCURRENCY,
            wait: DEFAULT_WAIT,
            lease: DEFAULT_LEASE,
        }
    }

    /// Runs `handler` for the runs of `def` (a second registration of the same id replaces
    /// the first). The handler reads only what `def` declares.
    pub fn function<F, Fut>(mut self, def: FunctionDef, handler: F) -> Worker
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.functions
            .insert(def.id.clone(), Registered::new(def, handler));
        self
    }

    /// At most `n` runs at once (at least 1; default 4).
    pub fn concurrency(mut self, n: usize) -> Worker {
        self.concurrency = n.max(1);
        self
    }

    /// How long a poll waits for a run before asking again (at most 30 s; default 20 s).
    pub fn wait(mut self, wait: Duration) -> Worker {
        self.wait = wait.min(Duration::from_millis(coffer_wire::MAX_WAIT_MS));
        self
    }

    /// How long a run is the worker's between heartbeats (1 s to 600 s; default 30 s).
    /// Shorter hands a dead worker's runs to another sooner, at the price of more
    /// heartbeats.
    pub fn lease(mut self, lease: Duration) -> Worker {
        self.lease = lease.clamp(
            Duration::from_secs(1),
            Duration::from_millis(coffer_wire::MAX_LEASE_MS),
        );
        self
    }

    /// Polls and runs until `shutdown` resolves, then waits for the runs in flight to
    /// finish and complete, and returns `Ok(())`.
    ///
    /// Errors that retrying cannot fix end the loop the same graceful way and are returned:
    /// the key is refused (401, 403), the environment does not exist (404), the server
    /// refuses the poll (400, 422) or sends a job this SDK cannot read. Others (no connection, 5xx) are logged and retried with
    /// a backoff of up to 30 s.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        if self.functions.is_empty() {
            return Err(Error::Usage(
                "a worker needs at least one function (Worker::function)".into(),
            ));
        }
        let shared = Arc::new(Shared {
            client: self.client,
            environment: self.environment,
            functions: self.functions,
            lease: self.lease,
        });
        let poll = Poll {
            functions: shared.functions.keys().cloned().collect(),
            wait_ms: Some(millis(self.wait)),
            lease_ms: Some(millis(self.lease)),
        };
        let room = Arc::new(Semaphore::new(self.concurrency));
        let mut runs = JoinSet::new();
        let mut backoff = Backoff::default();
        tokio::pin!(shutdown);
        let outcome = loop {
            while runs.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                permit = room.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break Ok(()),
                },
            };
            let polled = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                polled = shared.client.poll(&shared.environment, &poll) => polled,
            };
            match polled {
                Ok(Some(job)) => {
                    backoff.reset();
                    let shared = shared.clone();
                    runs.spawn(async move {
                        shared.run(job).await;
                        drop(permit);
                    });
                }
                Ok(None) => backoff.reset(),
                Err(e) if !e.is_retryable() => break Err(e),
                Err(e) => {
                    let delay = backoff.next(retry_after(&e));
                    tracing::warn!(error = %e, delay_ms = millis(delay), "coffer: poll failed; retrying");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        while runs.join_next().await.is_some() {}
        outcome
    }
}

/// What every run's task needs.
struct Shared {
    client: Client,
    environment: String,
    functions: Registry,
    lease: Duration,
}

impl Shared {
    /// Runs one leased job to its completion.
    async fn run(&self, job: Job) {
        let (Some(run_id), Some(attempt)) = (job.run_id.clone(), job.attempt) else {
            tracing::warn!(function = %job.function_id, "coffer: a polled job has no run id or attempt; ignored");
            return;
        };
        let result = match self.functions.get(&job.function_id) {
            Some(f) => match Context::from_job(&f.def, job) {
                Some(ctx) => self.with_heartbeats(&run_id, attempt, f.invoke(ctx)).await,
                None => Some(Err("the job carries no event".into())),
            },
            // The server only hands out runs of the functions polled for.
            None => Some(Err(format!(
                "this worker does not run function {}",
                job.function_id
            ))),
        };
        let Some(result) = result else {
            return;
        };
        let complete = match result {
            Ok(output) => Complete {
                output: Some(output),
                error: None,
                attempt: Some(attempt),
            },
            Err(error) => Complete {
                output: None,
                error: Some(error),
                attempt: Some(attempt),
            },
        };
        self.complete(&run_id, &complete).await;
    }

    /// Awaits `handler` while heartbeats keep the lease; `None` when the lease was lost (the
    /// run is no longer this worker's to complete).
    async fn with_heartbeats(
        &self,
        run_id: &str,
        attempt: u32,
        handler: impl Future<Output = HandlerResult>,
    ) -> Option<Result<serde_json::Value, String>> {
        let every = self.lease / 3;
        let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let heartbeat = Heartbeat {
            attempt,
            lease_ms: Some(millis(self.lease)),
        };
        let mut lost = false;
        tokio::pin!(handler);
        let result = loop {
            tokio::select! {
                result = &mut handler => break result,
                _ = beats.tick(), if !lost => {
                    match self.client.heartbeat(&self.environment, run_id, &heartbeat).await {
                        Ok(()) => {}
                        Err(e) if e.is_conflict() || e.is_not_found() => {
                            tracing::warn!(run = run_id, attempt, error = %e, "coffer: the run's lease was lost; it will not be completed here");
                            lost = true;
                        }
                        Err(e) => tracing::warn!(run = run_id, attempt, error = %e, "coffer: heartbeat failed"),
                    }
                }
            }
        };
        if lost {
            return None;
        }
        Some(result.map_err(|e| e.message().to_owned()))
    }

    /// Reports how the run ended, retrying while the server cannot be reached. An output
    /// the server refuses (over its 1 MiB body limit, say) ends the run with an error
    /// saying so, rather than leaving it to be run again when its lease expires.
    async fn complete(&self, run_id: &str, complete: &Complete) {
        let mut backoff = Backoff::default();
        let mut complete = Cow::Borrowed(complete);
        for attempt in 1..=COMPLETE_ATTEMPTS {
            match self
                .client
                .complete(&self.environment, run_id, &complete)
                .await
            {
                Ok(_) => return,
                Err(e) if complete.output.is_some() && refused_body(&e) => {
                    tracing::warn!(run = run_id, error = %e, "coffer: the server refused the run's output; completing it with an error");
                    complete = Cow::Owned(Complete {
                        output: None,
                        error: Some(format!("the handler's output was refused: {e}")),
                        attempt: complete.attempt,
                    });
                }
                Err(e) if e.is_retryable() && attempt < COMPLETE_ATTEMPTS => {
                    let delay = backoff.next(retry_after(&e));
                    tracing::warn!(run = run_id, error = %e, "coffer: completing the run failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    tracing::warn!(run = run_id, error = %e, "coffer: the run could not be completed; it will be handed out again when its lease expires");
                    return;
                }
            }
        }
    }
}

/// Exponential backoff from 500 ms to [`MAX_BACKOFF`], or what the server asked for.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self, asked: Option<Duration>) -> Duration {
        let exp = Duration::from_millis(500).saturating_mul(1 << self.failures.min(6));
        self.failures = self.failures.saturating_add(1);
        asked.unwrap_or(exp).min(MAX_BACKOFF)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The server refused the body itself (400, 413, 422), not the lease or the key.
fn refused_body(e: &Error) -> bool {
    matches!(e.status().map(|s| s.as_u16()), Some(400 | 413 | 422))
}

fn retry_after(e: &Error) -> Option<Duration> {
    match e {
        Error::Api(api) => api.retry_after,
        _ => None,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
