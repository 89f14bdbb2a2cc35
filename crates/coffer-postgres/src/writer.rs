//! One node's writes, committed in batches (group commit).
//!
//! Every write appends to the journal, whose head row it locks until it commits: sequence
//! numbers follow commit order with no gaps, and the hash chain is one chain, on any number
//! of nodes. A lock held until the commit is held across the commit's WAL flush, so with one
//! transaction per write the whole cluster commits one write per flush (about 500 a second
//! on this project's machine, whatever the number of connections or nodes).
//!
//! So a node queues its writes (each a closure over a [`Tx`]) to one writer task, which
//! takes what is queued (at most [`MAX_BATCH`]), opens one transaction, **locks the journal
//! head first**, runs the writes one after another, each under a savepoint, appends the
//! journal rows of the writes that were kept in one statement, and commits once: one flush
//! for the batch. Each caller learns its own outcome after that commit.
//!
//! - A write is kept only when it calls [`Tx::keep`] and returns `Ok` (the old
//!   `tx.commit()`); any other end — an error, or an early `Ok` that decided to write
//!   nothing (a replayed send) — rolls back to its savepoint, alone, as dropping its own
//!   transaction did. Its journal rows go with it.
//! - Writes in one batch see each other in queue order, as they would have one after the
//!   other: a write queued after an environment's deletion finds it gone.
//! - If the commit fails, every write of the batch gets that error (none was committed).
//! - Lock order: the head first, then what each write locks (see `journal`). Since every
//!   writing transaction takes the head before anything else, two of them never wait on each
//!   other in a cycle, whatever rows their writes touch in whatever order.
//! - Bounded: at most [`QUEUED`] writes wait for the writer; a caller beyond that waits for
//!   room (each caller is a request, bounded by the server's connection limit).
//! - A write whose caller went away (a client that disconnected) still runs and commits,
//!   as a spawned write did before: the outcome does not depend on the client staying.
//! - The writer task runs each batch on a task of its own: a write that panics fails its
//!   batch (its callers get [`StoreError::Unavailable`]), not the writer.

use std::collections::HashMap;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;

use coffer_store::{Actor, AuditRecord, StoreError, StoreResult};
use sqlx::PgConnection;
use tokio::sync::{mpsc, oneshot, watch};

use crate::journal::{self, Author, Head};
use crate::{Db, announce, db};

/// Most writes in one transaction. Each runs under a savepoint (a subtransaction), and
/// PostgreSQL keeps up to 64 of a transaction's subtransaction ids in shared memory before
/// every other snapshot gets slower: well under that.
const MAX_BATCH: usize = 32;

/// Most writes waiting for the writer.
const QUEUED: usize = 1024;

/// A boxed future that may borrow for `'a`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One write's view of its batch: the batch's connection (inside its transaction) and the
/// journal rows appended so far.
pub(crate) struct Tx<'a> {
    conn: &'a mut PgConnection,
    journal: &'a mut Pending,
}

impl Tx<'_> {
    /// Keeps this write: what it did commits with its batch (unless it then returns an
    /// error). A write that returns without calling this is rolled back to its savepoint.
    pub(crate) fn keep(&mut self) {
        self.journal.kept = true;
    }

    /// Says that the write has changed rows. An [`Kind::Atomic`] write (no savepoint to
    /// roll back to) calls this once its statement changed something: if it then returns
    /// an error or does not keep, its changes cannot be taken back alone, and its whole
    /// batch fails instead of committing them without their journal rows.
    pub(crate) fn wrote(&mut self) {
        self.journal.wrote = true;
    }

    /// [`journal::check_actor`], asked of the database once per key for a run of writes
    /// that each only re-check their actor and append journal rows (resolutions): the
    /// first locks the key's row until the commit, the next reuse its answer.
    pub(crate) async fn check_actor_once(&mut self, actor: &Actor) -> StoreResult<Author> {
        self.journal.asked_actors = true;
        let Actor::Key {
            id, environment, ..
        } = actor
        else {
            return Ok(Author::system());
        };
        let slot = (
            id.to_string(),
            environment.as_ref().map(ToString::to_string),
        );
        if let Some(name) = self.journal.actors.get(&slot) {
            return Ok(Author::of(actor, name.clone()));
        }
        let author = journal::check_actor(self.conn, actor).await?;
        self.journal.actors.insert(slot, author.key_name());
        Ok(author)
    }

    /// The journal rows this batch appends, for [`journal::append`].
    pub(crate) fn journal(&mut self) -> &mut Pending {
        self.journal
    }
}

impl Deref for Tx<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn
    }
}

impl DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
    }
}

/// The journal of a batch so far: the head as locked at its start, and the audit rows the
/// kept writes appended (chained when the batch writes them).
pub(crate) struct Pending {
    /// The head as the batch found it; `event_seq` moves on with each event appended.
    pub(crate) head: Head,
    /// Audit rows in append order, not yet chained.
    pub(crate) rows: Vec<AuditRecord>,
    /// Whether the running write called [`Tx::keep`].
    kept: bool,
    /// Whether the running write said it changed rows ([`Tx::wrote`]).
    wrote: bool,
    /// Acting keys (id, scope) that writes of this batch found valid, with their names, for
    /// [`Tx::check_actor_once`]. Each check locked its key's row (`FOR KEY SHARE`) until the
    /// commit, so the answer holds — unless a write of this same transaction changes the
    /// key: so it is cleared after any write that did not only reuse it and keep.
    actors: HashMap<(String, Option<String>), Option<String>>,
    /// Whether the running write asked [`Tx::check_actor_once`].
    asked_actors: bool,
}

/// How a queued write's caller gets its outcome once the batch's commit has ended (the
/// commit's error, if it failed).
type Finish = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// A queued write's work: runs on the batch's connection, says whether it succeeded.
type Run = Box<
    dyn for<'c> FnOnce(&'c mut PgConnection, &'c mut Pending) -> BoxFuture<'c, (bool, Finish)>
        + Send,
>;

/// How a write runs in its batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Under a savepoint of its own, among other writes.
    Batched,
    /// Without a savepoint: it refuses only before it wrote anything (one statement that
    /// writes all or nothing). If it fails with the transaction broken (a database error
    /// inside its statement), or after it said it wrote ([`Tx::wrote`]), its whole batch
    /// fails.
    Atomic,
    /// In a batch of its own: a long write (an import, a rewrap batch, an environment's
    /// deletion) that would otherwise hold the journal head, which every node's writes
    /// wait for, for the whole of a batch of 32 such writes.
    Alone,
}

/// A queued write.
struct Job {
    kind: Kind,
    run: Run,
}

/// Where a batch stands with its savepoint `w`.
#[derive(Clone, Copy, PartialEq)]
enum Savepoint {
    /// None taken yet.
    None,
    /// Taken, and nothing kept since: a write may roll back to it.
    Fresh,
    /// Taken, and a write kept since: the next write that needs one takes a new one.
    Passed,
}

/// The node's writer: the queue to its task.
pub(crate) struct Writer {
    queue: mpsc::Sender<Job>,
    task: tokio::task::AbortHandle,
}

impl Writer {
    /// Starts the writer task (inside a Tokio runtime).
    pub(crate) fn start(db: Db, events: Arc<watch::Sender<u64>>) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUED);
        let task = tokio::spawn(serve(jobs, db, events)).abort_handle();
        Writer { queue, task }
    }

    /// Runs `write` in the next batch and returns its outcome once the batch has committed.
    /// `write` does its statements on the [`Tx`] and calls [`Tx::keep`] when what it did
    /// is to commit.
    pub(crate) async fn run<T, F>(&self, kind: Kind, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Tx<'c>) -> BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel::<StoreResult<T>>();
        let run: Run = Box::new(move |conn, journal| {
            Box::pin(async move {
                let result = write(Tx {
                    conn: &mut *conn,
                    journal: &mut *journal,
                })
                .await;
                let ok = result.is_ok();
                if fails_its_batch(kind, ok, journal) {
                    // Every caller of the batch gets that, so say here what went wrong.
                    // Store errors name no value.
                    match &result {
                        Err(e) => {
                            tracing::error!(error = %e, "a write failed after it changed rows; its batch is not committed")
                        }
                        Ok(_) => tracing::error!(
                            "a write changed rows and did not keep them; its batch is not committed"
                        ),
                    }
                }
                let finish: Finish = Box::new(move |committed| {
                    let _ = reply.send(match committed {
                        Ok(()) => result,
                        Err(e) => Err(e.clone()),
                    });
                });
                (ok, finish)
            })
        });
        self.queue
            .send(Job { kind, run })
            .await
            .map_err(|_| StoreError::Unavailable("postgres: the writer has stopped".into()))?;
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "postgres: the write's batch failed before it committed".into(),
            ))
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The writer task: one batch at a time, each on a task of its own (a panic fails the
/// batch, not the writer), until the store is dropped.
async fn serve(mut jobs: mpsc::Receiver<Job>, db: Db, events: Arc<watch::Sender<u64>>) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut queued, MAX_BATCH).await > 0 {
        // In queue order; a write that runs alone closes the batch before it.
        let mut batch = Vec::with_capacity(queued.len());
        for job in queued.drain(..) {
            if job.kind == Kind::Alone {
                if !batch.is_empty() {
                    run_task(&db, &events, std::mem::take(&mut batch)).await;
                }
                run_task(&db, &events, vec![job]).await;
            } else {
                batch.push(job);
            }
        }
        if !batch.is_empty() {
            run_task(&db, &events, batch).await;
        }
    }
}

/// Commits `batch` on a task of its own.
async fn run_task(db: &Db, events: &Arc<watch::Sender<u64>>, batch: Vec<Job>) {
    let run = tokio::spawn(commit_batch(db.clone(), events.clone(), batch));
    if run.await.is_err() {
        tracing::error!("a write batch failed (a write panicked); its writes were not made");
    }
}

/// One batch: one transaction, the head locked first, each write under a savepoint, the kept
/// writes' journal rows in one statement, one commit; then every caller's outcome.
async fn commit_batch(store: Db, events: Arc<watch::Sender<u64>>, jobs: Vec<Job>) {
    let mut finishes: Vec<Finish> = Vec::with_capacity(jobs.len());
    match run_batch(&store, jobs, &mut finishes).await {
        Ok(last_event) => {
            if let Some(id) = last_event {
                announce(&events, id);
            }
            for finish in finishes {
                finish(Ok(()));
            }
        }
        Err(e) => {
            for finish in finishes {
                finish(Err(&e));
            }
        }
    }
}

/// The batch's transaction, up to its commit; returns the last event it appended. Each
/// write that ran leaves its caller's [`Finish`] in `finishes` (writes after a failure do
/// not run: dropped, they tell their callers so).
async fn run_batch(
    store: &Db,
    jobs: Vec<Job>,
    finishes: &mut Vec<Finish>,
) -> StoreResult<Option<u64>> {
    let mut tx = store.begin().await?;
    let conn: &mut PgConnection = &mut tx;
    let mut pending = Pending {
        head: journal::lock_head(conn).await?,
        rows: Vec::new(),
        kept: false,
        wrote: false,
        actors: HashMap::new(),
        asked_actors: false,
    };
    // A savepoint per write that needs one, one round trip: a kept write's is released as
    // the next one's is taken; a rolled-back one's stays for the next.
    let mut savepoint = Savepoint::None;
    for job in jobs {
        let atomic = job.kind == Kind::Atomic;
        if !atomic {
            match savepoint {
                Savepoint::None => simple(conn, "SAVEPOINT w").await?,
                Savepoint::Passed => simple(conn, "RELEASE SAVEPOINT w; SAVEPOINT w").await?,
                Savepoint::Fresh => {}
            }
            savepoint = Savepoint::Fresh;
        }
        let mark = (pending.rows.len(), pending.head.event_seq);
        pending.kept = false;
        pending.wrote = false;
        pending.asked_actors = false;
        let (ok, finish) = (job.run)(&mut *conn, &mut pending).await;
        finishes.push(finish);
        if !(ok && pending.kept && pending.asked_actors && !pending.wrote) {
            // It may have changed a key (a write that asked but also changed rows
            // included), or its savepoint's rollback released the lock a check took: the
            // next write asks the database again.
            pending.actors.clear();
        }
        if ok && pending.kept {
            if savepoint == Savepoint::Fresh {
                savepoint = Savepoint::Passed;
            }
        } else {
            pending.rows.truncate(mark.0);
            pending.head.event_seq = mark.1;
            if fails_its_batch(job.kind, ok, &pending) {
                return Err(StoreError::Unavailable(
                    "postgres: a write failed after it changed rows; the batch was not committed"
                        .into(),
                ));
            }
            if atomic {
                // Refused before it wrote, or failed inside its statement: then the
                // transaction is broken (a COMMIT would roll back without an error), and
                // this is what tells.
                if simple(conn, "SELECT 1").await.is_err() {
                    return Err(StoreError::Unavailable(
                        "postgres: a write failed inside its batch; the batch was not committed"
                            .into(),
                    ));
                }
            } else {
                simple(conn, "ROLLBACK TO SAVEPOINT w").await?;
            }
        }
    }
    let last_event = journal::write_pending(conn, pending).await?;
    tx.commit().await.map_err(db)?;
    Ok(last_event)
}

/// Whether a write that ended so fails its whole batch: an [`Kind::Atomic`] write (no
/// savepoint to roll back to) that changed rows ([`Tx::wrote`]) and then did not keep.
fn fails_its_batch(kind: Kind, ok: bool, pending: &Pending) -> bool {
    kind == Kind::Atomic && pending.wrote && !(ok && pending.kept)
}

/// Runs `sql` (fixed statements, no parameters) as one simple query: one round trip.
async fn simple(c: &mut PgConnection, sql: &'static str) -> StoreResult<()> {
    // A &str without arguments goes as a simple query, which may hold several statements.
    sqlx::Executor::execute(c, sql).await.map_err(db)?;
    Ok(())
}
