//! The single writer thread and its group commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use coffer_store::{StoreError, StoreResult};
use rusqlite::Connection;
use rusqlite::hooks::Action;

use crate::cache::CatalogEpoch;
use crate::unavailable;

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 512;

/// Writes waiting for the writer at most; past it a write is refused at once with
/// [`StoreError::Overloaded`] (the API answers 503 with `Retry-After`) instead of queueing
/// without bound.
pub(crate) const MAX_QUEUED: usize = 4 * MAX_BATCH;

/// Runs in the writer's transaction; says whether to keep its changes and how to report.
pub(crate) type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;
/// Called once the batch's fate is known: `Err(message)` if the commit failed.
pub(crate) type Finish = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// A handle to the writer thread; dropping every handle stops it.
pub(crate) struct Writer {
    jobs: mpsc::SyncSender<Job>,
}

impl Writer {
    /// Moves `conn` onto a new writer thread.
    /// Around the commit of every transaction that changed a catalog row (a row of any
    /// table but [`HOT_TABLES`]) it moves `epoch` to odd and back to even, the second time
    /// before any of its writers hear back (see `crate::cache`).
    /// After a transaction that changed rows it announces the journal's last event id on
    /// `events`.
    pub(crate) fn start(
        conn: Connection,
        epoch: Arc<CatalogEpoch>,
        events: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> StoreResult<Writer> {
        Writer::with_capacity(conn, MAX_QUEUED, epoch, events)
    }

    /// [`Writer::start`] with a queue of `capacity` writes.
    pub(crate) fn with_capacity(
        conn: Connection,
        capacity: usize,
        epoch: Arc<CatalogEpoch>,
        events: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> StoreResult<Writer> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(capacity);
        let touched = Arc::new(Touched::default());
        let hook = touched.clone();
        conn.update_hook(Some(move |_: Action, _: &str, table: &str, _: i64| {
            hook.saw(table)
        }));
        let epoch = Epoch { epoch, touched };
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
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
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
        self.submit(job).map_err(|(e, _)| e)?;
        answer.await.map_err(|_| stopped())?
    }

    /// Queues `job` for the writer's next transaction; refused at once, with the job back,
    /// when the queue is full. A job dropped unrun (the writer stopped, its batch could
    /// not begin) drops its captures: whoever waits on them must hear of it that way.
    pub(crate) fn submit(&self, job: Job) -> Result<(), (StoreError, Job)> {
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(job) => (StoreError::Overloaded, job),
            mpsc::TrySendError::Disconnected(job) => (stopped(), job),
        })
    }
}

/// Tables whose rows no read cache holds: the journal and the runs, written by nearly
/// every write (a resolve's audit row, a run's lease). A transaction that changed only
/// rows of these leaves the catalog epoch, and so every cache, as it was.
pub(crate) const HOT_TABLES: [&str; 7] = [
    "audit_log",
    "events",
    "journal_head",
    "relay_positions",
    "runs",
    "event_receipts",
    "orchestration_runs",
];

/// What the writer connection's update hook saw during one transaction.
#[derive(Default)]
struct Touched {
    /// Rows the hook was told of.
    rows: AtomicU64,
    /// Whether one of them was a catalog row.
    catalog: AtomicBool,
    /// Whether one of them was an event (an outbox row).
    events: AtomicBool,
}

impl Touched {
    fn saw(&self, table: &str) {
        self.rows.fetch_add(1, Ordering::Relaxed);
        if table == "events" {
            self.events.store(true, Ordering::Relaxed);
        } else if !HOT_TABLES.contains(&table) {
            self.catalog.store(true, Ordering::Relaxed);
        }
    }

    /// Whether an event was written since the last call.
    fn take_events(&self) -> bool {
        self.events.swap(false, Ordering::Relaxed)
    }

    /// Whether a transaction that changed `changed` rows (SQLite's own count) may have
    /// changed a catalog row; and forgets it for the next one. SQLite does not tell the
    /// hook of every change (a whole-table delete, say), and does not count the rows of a
    /// statement that failed half-way, which the hook did see: whenever the two counts
    /// differ, the answer is yes.
    fn take_catalog(&self, changed: u64) -> bool {
        let seen = self.rows.swap(0, Ordering::Relaxed);
        self.catalog.swap(false, Ordering::Relaxed) || changed != seen
    }
}

/// The catalog epoch and what moves it.
struct Epoch {
    epoch: Arc<CatalogEpoch>,
    touched: Arc<Touched>,
}

/// The error of a write whose writer is gone.
pub(crate) fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

fn run(
    conn: Connection,
    queue: mpsc::Receiver<Job>,
    epoch: &Epoch,
    events: &tokio::sync::watch::Sender<u64>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&conn, batch, epoch, events);
    }
}

fn commit_batch(
    conn: &Connection,
    batch: Vec<Job>,
    epoch: &Epoch,
    events: &tokio::sync::watch::Sender<u64>,
) {
    let changes_before = conn.total_changes();
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Dropping the jobs unblocks their callers with an error.
        tracing::error!(error = %e, "cannot begin a write transaction");
        return;
    }
    // The journal head is held for the batch: read by its first journaled write, written
    // once, just before the commit.
    let head = crate::journal::BatchHead::begin();
    let mut finishes = Vec::with_capacity(batch.len());
    let mut broken = None;
    for job in batch {
        if let Err(e) = step(conn, "SAVEPOINT w") {
            broken = Some(e);
            break;
        }
        let mark = head.mark();
        // A job that panics must not take the writer thread (and every later write) with it:
        // its changes are rolled back and its caller, whose reply is dropped, gets an error.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)));
        let end = match ran {
            Ok((true, finish)) => {
                finishes.push(finish);
                step(conn, "RELEASE w")
            }
            Ok((false, finish)) => {
                finishes.push(finish);
                head.restore(mark);
                rollback_savepoint(conn)
            }
            Err(_) => {
                tracing::error!("a write panicked; its changes were rolled back");
                head.restore(mark);
                rollback_savepoint(conn)
            }
        };
        if let Err(e) = end {
            broken = Some(e);
            break;
        }
    }
    if broken.is_none()
        && let Err(e) = head.write_back(conn)
    {
        broken = Some(e);
    }
    // A batch that changed no catalog row (a readiness probe's empty write, a canary
    // already there, audit rows, runs) leaves the caches alone; one that did marks the
    // epoch odd until its fate is known, so that no read overlapping the commit is kept.
    let changed = conn.total_changes().saturating_sub(changes_before);
    let catalog = epoch.touched.take_catalog(changed);
    let events_written = epoch.touched.take_events();
    if catalog {
        epoch.epoch.committing();
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
    // trusts a cache entry from before it.
    if catalog {
        epoch.epoch.committed();
    }
    // Outside any transaction now: the committed head.
    // (A transaction whose changed rows the hook did not all see counts as a catalog one:
    // it may have written events too.)
    if (events_written || catalog)
        && message.is_none()
        && let Ok(last) = crate::journal::head_event_seq(conn)
    {
        events.send_if_modified(|seen| {
            let newer = last > *seen;
            if newer {
                *seen = last;
            }
            newer
        });
    }
    for finish in finishes {
        finish(message.as_deref().map_or(Ok(()), Err));
    }
}

pub(crate) fn step(conn: &Connection, sql: &str) -> StoreResult<()> {
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

    /// Changes the update hook did not see count as catalog changes; what it saw is
    /// forgotten after each transaction.
    #[test]
    fn a_change_the_hook_did_not_see_counts_as_a_catalog_change() {
        let touched = Touched::default();
        assert!(!touched.take_catalog(0));
        touched.saw("audit_log");
        touched.saw("runs");
        assert!(!touched.take_catalog(2), "only hot tables");
        touched.saw("secrets");
        assert!(touched.take_catalog(1));
        assert!(!touched.take_catalog(0), "forgotten");
        touched.saw("events");
        assert!(touched.take_catalog(2), "one change unseen");
    }

    /// Through a real writer: rows of hot tables leave the epoch, catalog rows (however
    /// they go, a whole-table delete included) move it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_catalog_rows_move_the_epoch() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch("CREATE TABLE runs (x); CREATE TABLE secrets (x);")
            .expect("tables");
        let epoch = Arc::new(CatalogEpoch::default());
        let events = Arc::new(tokio::sync::watch::channel(0).0);
        let writer = Writer::with_capacity(conn, 8, epoch.clone(), events).expect("writer");
        let run = |sql: &'static str| {
            writer.write(move |c| c.execute_batch(sql).map_err(crate::unavailable))
        };
        run("INSERT INTO runs VALUES (1), (2)")
            .await
            .expect("write");
        assert_eq!(epoch.now(), 0, "a hot table");
        run("INSERT INTO secrets VALUES (1)").await.expect("write");
        assert_eq!(
            epoch.now(),
            2,
            "a catalog table: odd during the commit, even after"
        );
        run("UPDATE runs SET x = 3").await.expect("write");
        assert_eq!(epoch.now(), 2);
        run("DELETE FROM secrets").await.expect("write");
        assert_eq!(epoch.now(), 4, "a whole-table delete");
    }

    /// A full queue refuses at once instead of growing, and serves again once drained.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_writes_with_overloaded() {
        let conn = Connection::open_in_memory().expect("db");
        let epoch = Arc::new(CatalogEpoch::default());
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
        crate::retry_while_overloaded(async || writer.write(|_| Ok(())).await)
            .await
            .expect("drained");
    }
}
