//! The single writer thread and its group commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use coffer_store::{StoreError, StoreResult};
use rusqlite::Connection;

use crate::unavailable;

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 512;

/// Writes waiting for the writer at most; past it a write is refused at once with
/// [`StoreError::Overloaded`] (the API answers 503 with `Retry-After`) instead of queueing
/// without bound.
pub(crate) const MAX_QUEUED: usize = 4 * MAX_BATCH;

/// Runs in the writer's transaction; says whether to keep its changes and how to report.
type Work = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

/// A write and how durable its acknowledgement must be.
struct Job {
    work: Work,
    /// `true`: acknowledged only once on disk (`synchronous=FULL`). `false`: once
    /// committed (safe against the process dying; on disk with the next durable commit or
    /// checkpoint, so an OS crash or power cut may lose it) — for bookkeeping whose loss
    /// only repeats work: a run's lease, a resolution's audit row.
    durable: bool,
}
/// Called once the batch's fate is known: `Err(message)` if the commit failed.
type Finish = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// A handle to the writer thread; dropping every handle stops it.
pub(crate) struct Writer {
    jobs: mpsc::SyncSender<Job>,
}

impl Writer {
    /// Moves `conn` onto a new writer thread.
    /// After every transaction it ends, and before any of its writers hear back, it adds
    /// one to `epoch`: a read cache tagged with an older epoch is stale.
    /// After a transaction that changed rows it announces the journal's last event id on
    /// `events`.
    pub(crate) fn start(
        conn: Connection,
        epoch: Arc<AtomicU64>,
        events: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> StoreResult<Writer> {
        Writer::with_capacity(conn, MAX_QUEUED, epoch, events)
    }

    /// [`Writer::start`] with a queue of `capacity` writes.
    pub(crate) fn with_capacity(
        conn: Connection,
        capacity: usize,
        epoch: Arc<AtomicU64>,
        events: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> StoreResult<Writer> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(capacity);
        std::thread::Builder::new()
            .name("coffer-sqlite-writer".into())
            .spawn(move || run(conn, queue, &epoch, &events))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Runs `f` in the writer's next transaction and returns its result once the
    /// transaction is durable. An `Err` from `f` rolls back `f`'s changes only.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.submit(f, true).await
    }

    /// [`Writer::write`], acknowledged once committed rather than once on disk: the
    /// change survives the process dying at once, and reaches the disk with the next
    /// durable commit (any [`Writer::write`]) or checkpoint. Only for writes whose loss in
    /// an OS crash or power cut repeats work and hides nothing that happened afterwards:
    /// a later durable commit carries it to disk first.
    pub(crate) async fn write_committed<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.submit(f, false).await
    }

    async fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        durable: bool,
    ) -> StoreResult<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let work: Work = Box::new(move |conn| {
            // A panicking job answers its caller with an error of its own; the writer
            // (see `commit_batch`) rolls its changes back and lives on.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "the write failed on an internal error".into(),
                    ))
                });
            let keep = result.is_ok();
            let finish: Finish = Box::new(move |commit| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(msg) => Err(StoreError::Unavailable(format!("commit failed: {msg}"))),
                };
                // The caller may have gone away (client disconnected); the write stands.
                let _ = reply.send(outcome);
            });
            (keep, finish)
        });
        let job = Job { work, durable };
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::TrySendError::Disconnected(_) => stopped(),
        })?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(
    conn: Connection,
    queue: mpsc::Receiver<Job>,
    epoch: &AtomicU64,
    events: &tokio::sync::watch::Sender<u64>,
) {
    // The connection opens with `synchronous=FULL`; a batch of committed-only writes
    // lowers it for its own commit.
    let mut synced = true;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|job| job.durable);
        if durable != synced {
            let pragma = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            match conn.execute_batch(pragma) {
                Ok(()) => synced = durable,
                Err(e) if durable => {
                    // Never acknowledge a durable write with less: its callers get an error.
                    tracing::error!(error = %e, "cannot make the writer durable again");
                    continue;
                }
                // Still `FULL`: more than the batch asked for.
                Err(e) => tracing::warn!(error = %e, "cannot relax the writer's sync mode"),
            }
        }
        commit_batch(&conn, batch, epoch, events);
    }
}

fn commit_batch(
    conn: &Connection,
    batch: Vec<Job>,
    epoch: &AtomicU64,
    events: &tokio::sync::watch::Sender<u64>,
) {
    let changes_before = conn.total_changes();
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Dropping the jobs unblocks their callers with an error.
        tracing::error!(error = %e, "cannot begin a write transaction");
        return;
    }
    let mut finishes = Vec::with_capacity(batch.len());
    let mut broken = None;
    for job in batch {
        if let Err(e) = step(conn, "SAVEPOINT w") {
            broken = Some(e);
            break;
        }
        // A job that panics must not take the writer thread (and every later write) with it:
        // its changes are rolled back and its caller, whose reply is dropped, gets an error.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.work)(conn)));
        let end = match ran {
            Ok((true, finish)) => {
                finishes.push(finish);
                step(conn, "RELEASE w")
            }
            Ok((false, finish)) => {
                finishes.push(finish);
                rollback_savepoint(conn)
            }
            Err(_) => {
                tracing::error!("a write panicked; its changes were rolled back");
                rollback_savepoint(conn)
            }
        };
        if let Err(e) = end {
            broken = Some(e);
            break;
        }
    }
    let outcome = match broken {
        Some(e) => Err(e),
        None => step(conn, "COMMIT"),
    };
    let message = match outcome {
        Ok(()) => None,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            tracing::error!(error = %e, "write transaction failed");
            Some(e.to_string())
        }
    };
    // Before anyone hears back: a read that starts after a write is acknowledged never
    // trusts a cache entry from before it. A batch that changed no row (a readiness
    // probe's empty write, a canary already there) leaves the cache alone.
    if conn.total_changes() != changes_before {
        epoch.fetch_add(1, Ordering::AcqRel);
        if message.is_none() {
            // Outside any transaction now: the committed head.
            if let Ok(last) = crate::journal::head_event_seq(conn) {
                events.send_if_modified(|seen| {
                    let newer = last > *seen;
                    if newer {
                        *seen = last;
                    }
                    newer
                });
            }
        }
    }
    for finish in finishes {
        finish(message.as_deref().map_or(Ok(()), Err));
    }
}

fn step(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(unavailable)
}

fn rollback_savepoint(conn: &Connection) -> StoreResult<()> {
    step(conn, "ROLLBACK TO w")?;
    step(conn, "RELEASE w")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed-only write runs with `synchronous=NORMAL`, a durable one with `FULL`, and
    /// a batch holding both is synced (the durable write is never acknowledged with less).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_synced_when_any_of_its_writes_must_be() {
        let dir = tempfile::tempdir().expect("dir");
        let conn = Connection::open(dir.path().join("w.db")).expect("db");
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .expect("pragmas");
        let epoch = Arc::new(AtomicU64::new(0));
        let events = Arc::new(tokio::sync::watch::channel(0).0);
        let writer = Arc::new(Writer::start(conn, epoch, events).expect("writer"));
        let mode = |c: &Connection| -> StoreResult<i64> {
            c.query_row("PRAGMA synchronous", [], |r| r.get(0))
                .map_err(unavailable)
        };
        assert_eq!(writer.write_committed(mode).await.unwrap(), 1, "NORMAL");
        assert_eq!(writer.write(mode).await.unwrap(), 2, "FULL");
        assert_eq!(writer.write_committed(mode).await.unwrap(), 1);
        // Many of both at once: whatever batches they share, a durable write sees FULL.
        let mut tasks = Vec::new();
        for i in 0..64 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    (true, writer.write(mode).await.unwrap())
                } else {
                    (false, writer.write_committed(mode).await.unwrap())
                }
            }));
        }
        for t in tasks {
            let (durable, seen) = t.await.unwrap();
            if durable {
                assert_eq!(seen, 2, "a durable write ran in a synced batch");
            }
        }
    }

    /// A full queue refuses at once instead of growing, and serves again once drained.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_writes_with_overloaded() {
        let conn = Connection::open_in_memory().expect("db");
        let epoch = Arc::new(AtomicU64::new(0));
        let events = Arc::new(tokio::sync::watch::channel(0).0);
        let writer = Arc::new(Writer::with_capacity(conn, 2, epoch, events).expect("writer"));
        // Hold the writer thread inside a job until released.
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |_| {
                        entered_tx.send(()).ok();
                        released.recv().ok();
                        Ok(())
                    })
                    .await
            })
        };
        entered.recv().expect("the writer runs the blocking job");
        // Until the queue is full a write queues (and its attempt is abandoned after one
        // poll; the job stays queued); once full, the first poll answers Overloaded.
        let refused = loop {
            let attempt = writer.write(|_| Ok(()));
            match tokio::time::timeout(std::time::Duration::ZERO, attempt).await {
                Ok(Err(StoreError::Overloaded)) => break true,
                Ok(other) => panic!("unexpected answer while the writer is held: {other:?}"),
                Err(_queued) => {}
            }
        };
        assert!(refused);
        release.send(()).expect("release");
        blocker.await.expect("join").expect("blocking job");
        // The queued writes drain in the writer's own time: until then, still refused.
        let began = std::time::Instant::now();
        loop {
            match writer.write(|_| Ok(())).await {
                Ok(()) => break,
                Err(StoreError::Overloaded) => {
                    assert!(
                        began.elapsed() < std::time::Duration::from_secs(10),
                        "never drained"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
