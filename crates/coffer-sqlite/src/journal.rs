//! The journal on SQLite: every write job appends its audit rows and events before it ends,
//! inside the writer's savepoint, so they commit (or roll back) with the change.

use async_trait::async_trait;
use coffer_store::{
    Action, Actor, ActorRef, AuditQuery, AuditRecord, AuditResult, Change, Denial, EnvName,
    EventRecord, JournalStore, Origin, StoreError, StoreResult,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

use crate::writer::{Finish, Job, MAX_QUEUED, Writer, step, stopped};
use crate::{SqliteStore, unavailable};

/// Sequence numbers one `GET /v1/audit` page examines at most: a range of the rowid, so a
/// page costs the same whatever its filters (which run on those rows only).
const MAX_EXAMINED: u64 = 10_000;

/// The actor of a write as its audit rows name it, read in the writing transaction.
#[derive(Clone, Debug)]
pub(crate) struct Author {
    actor: ActorRef,
    origin: Origin,
}

impl Author {
    pub(crate) fn system() -> Self {
        Author {
            actor: ActorRef::system(),
            origin: Origin::default(),
        }
    }
}

/// Re-checks, in the writing transaction, that a key actor still exists and is still
/// scoped as it was when its request was authorized, and returns it as the journal names
/// it. Keys go with their environment in one transaction, so a surviving scoped key still
/// has the environment it was made for.
pub(crate) fn check_actor(c: &Connection, actor: &Actor) -> StoreResult<Author> {
    let Actor::Key {
        id,
        environment,
        origin,
    } = actor
    else {
        return Ok(Author::system());
    };
    let row: Option<(Option<String>, String)> = c
        .prepare_cached("SELECT environment, name FROM api_keys WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(unavailable)?;
    match row {
        Some((scope, name)) if scope.as_deref() == environment.as_ref().map(EnvName::as_str) => {
            Ok(Author {
                actor: ActorRef {
                    key_id: Some(id.to_string()),
                    key_name: Some(name),
                },
                origin: origin.clone(),
            })
        }
        _ => Err(StoreError::ActorRevoked),
    }
}

/// The shared head, read and advanced inside the writing transaction.
#[derive(Clone)]
pub(crate) struct Head {
    audit_seq: u64,
    audit_hash: String,
    event_seq: u64,
}

/// The journal head of the writer batch running on this thread, held in memory from its
/// first read to the batch's end ([`BatchHead`]): a batch of many jobs reads the
/// `journal_head` row once (again after a rollback put the unread state back) and writes
/// it once, not once per job. Held per thread, not per connection: only the writer thread
/// runs batches. Outside a batch (start-up, tests on a bare connection) the head is read
/// and written in the database each time.
#[derive(Clone)]
enum HeldHead {
    /// No batch on this thread: the database row is the head.
    Off,
    /// In a batch that has not read the head yet.
    Unread,
    /// In a batch: the head as its jobs left it; `dirty` until written back.
    Held { head: Head, dirty: bool },
}

thread_local! {
    static HELD: std::cell::RefCell<HeldHead> = const { std::cell::RefCell::new(HeldHead::Off) };
}

/// The head held for one writer batch on this thread, from [`BatchHead::begin`] (after
/// `BEGIN`) to its drop; [`BatchHead::write_back`] writes it before `COMMIT`. A job rolled
/// back to its savepoint puts back the head it started from ([`BatchHead::mark`],
/// [`BatchHead::restore`]), as its rows went with it.
pub(crate) struct BatchHead(());

/// The held head before a job, for [`BatchHead::restore`] if the job is undone.
pub(crate) struct Mark(HeldHead);

impl BatchHead {
    pub(crate) fn begin() -> Self {
        HELD.with(|h| {
            let mut held = h.borrow_mut();
            debug_assert!(matches!(*held, HeldHead::Off), "one batch at a time");
            *held = HeldHead::Unread;
        });
        BatchHead(())
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark(HELD.with(|h| h.borrow().clone()))
    }

    pub(crate) fn restore(&self, mark: Mark) {
        HELD.with(|h| *h.borrow_mut() = mark.0);
    }

    /// Writes the head back if a job advanced it: the batch's last statement before
    /// `COMMIT`. If it fails the whole batch rolls back (the database is failing: its
    /// `COMMIT` would too).
    pub(crate) fn write_back(&self, c: &Connection) -> StoreResult<()> {
        HELD.with(|h| match &mut *h.borrow_mut() {
            HeldHead::Held { head, dirty } if *dirty => {
                update_head(c, head)?;
                *dirty = false;
                Ok(())
            }
            _ => Ok(()),
        })
    }
}

impl Drop for BatchHead {
    fn drop(&mut self) {
        HELD.with(|h| *h.borrow_mut() = HeldHead::Off);
    }
}

fn read_head(c: &Connection) -> StoreResult<Head> {
    HELD.with(|h| {
        let mut held = h.borrow_mut();
        if let HeldHead::Held { head, .. } = &*held {
            return Ok(head.clone());
        }
        let head = select_head(c)?;
        if matches!(*held, HeldHead::Unread) {
            *held = HeldHead::Held {
                head: head.clone(),
                dirty: false,
            };
        }
        Ok(head)
    })
}

fn write_head(c: &Connection, head: Head) -> StoreResult<()> {
    HELD.with(|h| match &mut *h.borrow_mut() {
        HeldHead::Off => update_head(c, &head),
        held => {
            *held = HeldHead::Held { head, dirty: true };
            Ok(())
        }
    })
}

fn select_head(c: &Connection) -> StoreResult<Head> {
    c.prepare_cached("SELECT audit_seq, audit_hash, event_seq FROM journal_head WHERE id = 1")
        .and_then(|mut s| {
            s.query_row([], |r| {
                Ok(Head {
                    audit_seq: r.get(0)?,
                    audit_hash: r.get(1)?,
                    event_seq: r.get(2)?,
                })
            })
        })
        .map_err(unavailable)
}

fn update_head(c: &Connection, head: &Head) -> StoreResult<()> {
    c.prepare_cached(
        "UPDATE journal_head SET audit_seq = ?1, audit_hash = ?2, event_seq = ?3 WHERE id = 1",
    )
    .and_then(|mut s| s.execute(params![head.audit_seq, head.audit_hash, head.event_seq]))
    .map(drop)
    .map_err(unavailable)
}

/// Appends one audit row per change, and one event per change that publishes one.
pub(crate) fn append(c: &Connection, author: &Author, changes: &[Change]) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut head = read_head(c)?;
    append_to(c, &mut head, author, changes)?;
    write_head(c, head)
}

/// [`append`] onto a head read (and to be written) by the caller.
pub(crate) fn append_to(
    c: &Connection,
    head: &mut Head,
    author: &Author,
    changes: &[Change],
) -> StoreResult<()> {
    for change in changes {
        let event = change.action.publishes().then(|| {
            head.event_seq += 1;
            head.event_seq
        });
        let row = AuditRecord::of_change(change, &author.actor, &author.origin, event);
        insert_audit(c, head, row)?;
        if let Some(id) = event {
            c.prepare_cached("INSERT INTO events (seq, audit_seq) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![id, head.audit_seq]))
                .map_err(unavailable)?;
        }
    }
    Ok(())
}

/// Small writes waiting for the writer thread to run them in one job: a resolution's audit
/// rows, an event's send, a run's end.
///
/// A writer job is sent whenever those on their way could not take every write waiting;
/// when it runs, it takes up to [`MAX_COMBINED`] of them, the oldest first, and runs them
/// on one copy of the journal head (taken from the batch's, given back at the end), each
/// checking its actor in the transaction as [`append`]'s callers do, and each in a
/// savepoint of its own unless it is [`Shared::atomic`] (so a write that fails, or is
/// refused, is undone alone). Under load a
/// writer batch thus holds one job for the small writes that came in while the last batch
/// committed, instead of one job each.
/// Each caller hears back once its rows are durable (or that it was refused, or that
/// the write failed). At most as many wait as the writer's queue holds ([`MAX_QUEUED`]);
/// past that a write is refused at once with [`StoreError::Overloaded`].
#[derive(Default)]
pub(crate) struct Combiner {
    pending: Pending,
}

/// A write that can share a writer job (its transaction and the journal head) with others.
pub(crate) trait Shared: Send + 'static {
    /// Makes its changes and appends their journal rows onto `head`, with [`append_to`]
    /// only: [`append`] would read the batch's head, behind the one the job carries, and
    /// fork the chain. Unless it is [`Shared::atomic`] it runs in a savepoint
    /// of its own: an `Err` (or a panic) undoes its changes and restores `head`, and the
    /// others go on.
    fn run(&mut self, c: &Connection, head: &mut Head) -> StoreResult<()>;
    /// Answers the caller, once the job's fate is known: `Ok` when its changes are durable.
    fn answer(self: Box<Self>, outcome: StoreResult<()>);
    /// Whether it writes nothing before it can be refused ([`StoreError::ActorRevoked`]
    /// only), and fails after that only when the database does: then it runs without a
    /// savepoint of its own (a savepoint and its release per resolution are what combining
    /// saves), a refusal having written nothing, and any other error (or a panic) fails the
    /// whole job.
    fn atomic(&self) -> bool {
        false
    }
}

/// Most writes one shared job runs: a send may start up to a thousand runs, and one job is
/// one stretch of the writer's transaction that every other write waits behind.
const MAX_COMBINED: usize = 256;

/// The writes waiting, and the shared jobs sent for them and not yet run: each job takes up
/// to [`MAX_COMBINED`] from the front, and a job is sent whenever the ones on their way
/// could not take them all (`items.len() <= jobs * MAX_COMBINED`), so none is left behind.
#[derive(Default)]
struct Waiting {
    items: VecDeque<Box<dyn Shared>>,
    jobs: usize,
}

impl Waiting {
    /// What one job takes.
    fn share(&mut self) -> Vec<Box<dyn Shared>> {
        self.jobs = self.jobs.saturating_sub(1);
        let n = self.items.len().min(MAX_COMBINED);
        self.items.drain(..n).collect()
    }
}

type Pending = Arc<Mutex<Waiting>>;

/// How many writes wait in `combiner` (for tests that hold the writer).
#[cfg(test)]
pub(crate) fn queued(combiner: &Combiner) -> usize {
    lock(&combiner.pending).items.len()
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, Waiting> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

impl Combiner {
    /// Appends `changes` for `actor` and returns once they are durable.
    pub(crate) async fn append(
        &self,
        writer: &Writer,
        actor: Actor,
        changes: Vec<Change>,
    ) -> StoreResult<()> {
        self.submit(writer, |reply| {
            Box::new(Appended {
                actor,
                changes,
                reply,
            })
        })
        .await
    }

    /// Queues the write `item` makes with its [`Reply`], and returns its result once it is
    /// durable (or why it was refused, or failed).
    pub(crate) async fn submit<T>(
        &self,
        writer: &Writer,
        item: impl FnOnce(Reply<T>) -> Box<dyn Shared>,
    ) -> StoreResult<T> {
        let (to, answer) = oneshot::channel();
        self.queue(writer, item(Reply { result: None, to }))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Queues `item` for a shared job, and sends one unless those on their way will take it.
    /// Refused at once, dropping `item`, when [`MAX_QUEUED`] already wait.
    pub(crate) fn queue(&self, writer: &Writer, item: Box<dyn Shared>) -> StoreResult<()> {
        let send = {
            let mut waiting = lock(&self.pending);
            // As bounded as the writer's own queue.
            if waiting.items.len() >= MAX_QUEUED {
                return Err(StoreError::Overloaded);
            }
            waiting.items.push_back(item);
            let send = waiting.items.len() > waiting.jobs * MAX_COMBINED;
            if send {
                waiting.jobs += 1;
            }
            send
        };
        if send {
            let refusal = Arc::new(OnceLock::new());
            let flush = Flush {
                pending: Some(self.pending.clone()),
                refusal: refusal.clone(),
            };
            let job: Job = Box::new(move |c| flush.run(c));
            // Refused (a full queue): the job, dropped at once, answers its share of those
            // waiting with the refusal; the jobs on their way take the rest.
            if let Err((e, job)) = writer.submit(job) {
                let _ = refusal.set(e);
                drop(job);
            }
        }
        Ok(())
    }
}

/// Where the caller of a [`Shared`] write hears back: the result the write sets as it runs,
/// sent once the job's fate is known.
pub(crate) struct Reply<T> {
    result: Option<T>,
    to: oneshot::Sender<StoreResult<T>>,
}

impl<T> Reply<T> {
    /// What the write made, sent if its job commits.
    pub(crate) fn set(&mut self, result: T) {
        self.result = Some(result);
    }

    /// Answers with `outcome`, or with the result set when it is `Ok`.
    pub(crate) fn send(self, outcome: StoreResult<()>) {
        let answer = outcome.and_then(|()| {
            self.result
                .ok_or_else(|| StoreError::Unavailable("a write was not run".into()))
        });
        // The caller may have gone away (client disconnected); the write stands.
        let _ = self.to.send(answer);
    }
}

/// Audit rows that change nothing else (a resolution's).
struct Appended {
    actor: Actor,
    changes: Vec<Change>,
    reply: Reply<()>,
}

#[cfg(test)]
impl Appended {
    /// The queued write, and where its caller hears back.
    fn item(
        actor: Actor,
        changes: Vec<Change>,
    ) -> (Box<dyn Shared>, oneshot::Receiver<StoreResult<()>>) {
        let (to, answer) = oneshot::channel();
        let reply = Reply { result: None, to };
        let item = Appended {
            actor,
            changes,
            reply,
        };
        (Box::new(item), answer)
    }
}

impl Shared for Appended {
    fn run(&mut self, c: &Connection, head: &mut Head) -> StoreResult<()> {
        let author = check_actor(c, &self.actor)?;
        append_to(c, head, &author, &self.changes)?;
        self.reply.set(());
        Ok(())
    }

    fn atomic(&self) -> bool {
        true
    }

    fn answer(self: Box<Self>, outcome: StoreResult<()>) {
        self.reply.send(outcome);
    }
}

/// The writer job of a [`Combiner`]. Dropped unrun (the writer refused it, stopped, or
/// could not begin its batch), it answers its share of those waiting with an error.
struct Flush {
    pending: Option<Pending>,
    /// Why it was dropped unrun, when the writer refused it.
    refusal: Arc<OnceLock<StoreError>>,
}

impl Flush {
    fn run(mut self, c: &Connection) -> (bool, Finish) {
        let mut taken = match self.pending.take() {
            Some(pending) => lock(&pending).share(),
            None => Vec::new(),
        };
        let mut outcomes = Vec::with_capacity(taken.len());
        let ran = read_head(c).and_then(|mut head| {
            for item in &mut taken {
                outcomes.push(run_alone(c, item.as_mut(), &mut head)?);
            }
            write_head(c, head)
        });
        let keep = ran.is_ok();
        let finish: Finish = Box::new(move |commit| {
            for (i, item) in taken.into_iter().enumerate() {
                let outcome = match (&ran, commit) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(()), Err(msg)) => {
                        Err(StoreError::Unavailable(format!("commit failed: {msg}")))
                    }
                    (Ok(()), Ok(())) => outcomes.get(i).cloned().unwrap_or_else(|| {
                        Err(StoreError::Unavailable("a write was not run".into()))
                    }),
                };
                item.answer(outcome);
            }
        });
        (keep, finish)
    }
}

/// Runs `item` (in a savepoint of its own unless it is [`Shared::atomic`]) and says how it
/// went; `Err` when the whole job must fail: its savepoint failed, or an atomic item failed
/// other than by a refusal.
fn run_alone(
    c: &Connection,
    item: &mut dyn Shared,
    head: &mut Head,
) -> StoreResult<StoreResult<()>> {
    if item.atomic() {
        return match run_caught(c, item, head) {
            Ok(()) => Ok(Ok(())),
            Err(StoreError::ActorRevoked) => Ok(Err(StoreError::ActorRevoked)),
            Err(e) => Err(e),
        };
    }
    step(c, "SAVEPOINT item")?;
    let before = head.clone();
    let ran = run_caught(c, item, head);
    if ran.is_err() {
        step(c, "ROLLBACK TO item")?;
        *head = before;
    }
    step(c, "RELEASE item")?;
    Ok(ran)
}

/// `item.run`, a panic in it being an error.
fn run_caught(c: &Connection, item: &mut dyn Shared, head: &mut Head) -> StoreResult<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| item.run(c, head))).unwrap_or_else(
        |_| {
            tracing::error!("a write panicked; rolling its changes back");
            Err(StoreError::Unavailable(
                "the write failed on an internal error".into(),
            ))
        },
    )
}

impl Drop for Flush {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            let error = self.refusal.get().cloned().unwrap_or_else(stopped);
            let items = lock(&pending).share();
            for item in items {
                item.answer(Err(error.clone()));
            }
        }
    }
}

/// Chains `row` onto the head and inserts it.
fn insert_audit(c: &Connection, head: &mut Head, mut row: AuditRecord) -> StoreResult<()> {
    (head.audit_seq, head.audit_hash) =
        row.chain_after(head.audit_seq, std::mem::take(&mut head.audit_hash));
    c.prepare_cached(
        "INSERT INTO audit_log (seq, at, actor_id, actor_name, action, subject, environment,
             name, revision, result, status, count, remote, user_agent, event_seq, prev_hash, hash,
             detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )
    .and_then(|mut s| {
        s.execute(params![
            row.seq,
            row.at,
            row.actor.key_id,
            row.actor.key_name,
            row.action,
            row.subject,
            row.environment,
            row.name,
            row.revision,
            row.result.as_str(),
            row.status,
            row.count,
            row.remote,
            row.user_agent,
            row.event,
            row.prev_hash,
            row.hash,
            row.detail,
        ])
    })
    .map_err(unavailable)?;
    Ok(())
}

const AUDIT_COLUMNS: &str = "seq, at, actor_id, actor_name, action, subject, environment, name, \
     revision, result, status, count, remote, user_agent, event_seq, prev_hash, hash, detail";

fn audit_row(r: &Row<'_>) -> rusqlite::Result<(AuditRecord, String)> {
    let result: String = r.get(9)?;
    Ok((
        AuditRecord {
            seq: r.get(0)?,
            at: r.get(1)?,
            actor: ActorRef {
                key_id: r.get(2)?,
                key_name: r.get(3)?,
            },
            action: r.get(4)?,
            subject: r.get(5)?,
            environment: r.get(6)?,
            name: r.get(7)?,
            revision: r.get(8)?,
            result: AuditResult::Allowed,
            status: r.get(10)?,
            count: r.get(11)?,
            remote: r.get(12)?,
            user_agent: r.get(13)?,
            event: r.get(14)?,
            detail: r.get(17)?,
            prev_hash: r.get(15)?,
            hash: r.get(16)?,
        },
        result,
    ))
}

/// An audit row whose cells do not read as Coffer wrote them: its seq (the rowid, always
/// an integer) and, if it reads, its `prev_hash`; everything else blank and `hash` empty,
/// which `verify` reports as edited.
fn unreadable_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.get(0)?,
        at: 0,
        actor: ActorRef {
            key_id: None,
            key_name: None,
        },
        action: "unreadable".into(),
        subject: "unreadable".into(),
        environment: None,
        name: None,
        revision: None,
        result: AuditResult::Denied,
        status: None,
        count: 0,
        remote: None,
        user_agent: None,
        event: None,
        detail: None,
        prev_hash: r.get::<_, String>(15).unwrap_or_default(),
        hash: String::new(),
    })
}

/// A stored result that is neither `allowed` nor `denied` (someone edited the file) reads
/// as `denied`, never as allowed, with an empty `hash`, so `verify` reports the row as edited.
fn with_result((mut row, result): (AuditRecord, String)) -> AuditRecord {
    match AuditResult::parse(&result) {
        Some(parsed) => row.result = parsed,
        None => {
            row.result = AuditResult::Denied;
            row.hash = String::new();
        }
    }
    row
}

#[async_trait]
impl JournalStore for SqliteStore {
    async fn record_denials(&self, denials: Vec<Denial>) -> StoreResult<()> {
        if denials.is_empty() {
            return Ok(());
        }
        self.writer
            .write(move |c| {
                let mut head = read_head(c)?;
                for d in denials {
                    let key_name: Option<String> = match &d.key_id {
                        Some(id) => c
                            .prepare_cached("SELECT name FROM api_keys WHERE id = ?1")
                            .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)).optional())
                            .map_err(unavailable)?,
                        None => None,
                    };
                    let row = AuditRecord::of_denial(d, key_name);
                    insert_audit(c, &mut head, row)?;
                }
                write_head(c, head)
            })
            .await
    }

    async fn audit(
        &self,
        query: &AuditQuery,
        limit: usize,
    ) -> StoreResult<(Vec<AuditRecord>, Option<u64>)> {
        let query = query.clone();
        let limit = limit.max(1);
        self.read_off_thread(move |c| audit_window(c, &query, limit))
            .await
    }

    async fn audit_rows_past_head(&self) -> StoreResult<u64> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM audit_log WHERE seq > (SELECT audit_seq FROM journal_head WHERE id = 1)",
                [],
                |r| r.get(0),
            )
        })
    }

    async fn audit_head(&self) -> StoreResult<(u64, String)> {
        self.read(|c| {
            c.query_row(
                "SELECT audit_seq, audit_hash FROM journal_head WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    async fn events_after(&self, after: u64, limit: usize) -> StoreResult<Vec<EventRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT e.seq, a.subject, a.environment, a.name, a.revision, a.actor_id,
                        a.actor_name, a.at, a.count, a.action
                 FROM events e JOIN audit_log a ON a.seq = e.audit_seq
                 WHERE e.seq > ?1 AND e.seq <= (SELECT event_seq FROM journal_head WHERE id = 1)
                 ORDER BY e.seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit], |r| {
                let id: u64 = r.get(0)?;
                // An audit row edited to cells of the wrong type: the stream and the relay
                // go on past it with a marker (`verify` names the row) instead of stopping
                // at it for good.
                Ok(event_of(r).unwrap_or_else(|_| {
                    tracing::warn!(
                        id,
                        "event {id}'s audit row does not read as written; sending a marker"
                    );
                    EventRecord::unreadable(id)
                }))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows)
    }

    async fn last_event_id(&self) -> StoreResult<u64> {
        self.read(|c| {
            c.query_row("SELECT event_seq FROM journal_head WHERE id = 1", [], |r| {
                r.get(0)
            })
        })
    }

    fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    fn shared_with_other_processes(&self) -> bool {
        false
    }

    async fn relay_position(&self, name: &str) -> StoreResult<u64> {
        let pos: Option<u64> = self.read(|c| {
            c.query_row(
                "SELECT event_seq FROM relay_positions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(pos.unwrap_or(0))
    }

    async fn set_relay_position(&self, name: &str, id: u64) -> StoreResult<()> {
        let name = name.to_owned();
        self.writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO relay_positions (name, event_seq) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET event_seq = MAX(relay_positions.event_seq, ?2)",
                    params![name, id],
                )
                .map(drop)
                .map_err(unavailable)
            })
            .await
    }
}

/// One page of [`JournalStore::audit`]: the rows matching `query` among the sequence numbers
/// `after+1 ..= min(after + MAX_EXAMINED, head)` (never past the head: a row there was not
/// written by Coffer), stopping at `limit` matches. The cursor is the last seq examined
/// when more rows follow.
fn audit_window(
    c: &Connection,
    query: &AuditQuery,
    limit: usize,
) -> rusqlite::Result<(Vec<AuditRecord>, Option<u64>)> {
    use rusqlite::types::Value as V;
    let head: u64 = c.query_row("SELECT audit_seq FROM journal_head WHERE id = 1", [], |r| {
        r.get(0)
    })?;
    let after = match (query.after, query.since) {
        (Some(after), _) => after,
        (None, Some(since)) => first_seq_near(c, head, since)?,
        (None, None) => 0,
    };
    if after >= head {
        return Ok((Vec::new(), None));
    }
    let upper = head.min(after.saturating_add(MAX_EXAMINED));
    let as_int = |n: u64| V::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > ?1 AND seq <= ?2");
    let mut args: Vec<V> = vec![as_int(after), as_int(upper)];
    let mut push = |sql: &mut String, clause: &str, v: V| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(env) = &query.environment {
        push(&mut sql, "environment =", V::Text(env.to_string()));
    }
    if let Some(actor) = &query.actor {
        push(&mut sql, "actor_id =", V::Text(actor.clone()));
    }
    if let Some(action) = &query.action {
        push(&mut sql, "action =", V::Text(action.clone()));
    }
    if let Some(result) = query.result {
        push(&mut sql, "result =", V::Text(result.as_str().into()));
    }
    if let Some(since) = query.since {
        push(&mut sql, "at >=", V::Integer(since.millis()));
    }
    if let Some(until) = query.until {
        push(&mut sql, "at <", V::Integer(until.millis()));
    }
    sql.push_str(" ORDER BY seq");
    let mut stmt = c.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        let row = match audit_row(row) {
            Ok(parsed) => with_result(parsed),
            // A cell of the wrong type (someone edited the file): the row still appears, as
            // unreadable and with no hash, so `verify` names it instead of the page failing.
            Err(_) => unreadable_row(row)?,
        };
        let keep = query
            .subject
            .as_ref()
            .is_none_or(|p| p.matches(&row.subject));
        if keep {
            let seq = row.seq;
            found.push(row);
            if found.len() == limit {
                return Ok((found, (seq < head).then_some(seq)));
            }
        }
    }
    Ok((found, (upper < head).then_some(upper)))
}

/// Where a walk for rows at or after `since` may start: just before the first row written
/// a minute before `since` (a row's time is taken before its write is queued, so times
/// follow sequence numbers to within far less than that). A binary search over the rowid:
/// a few point reads.
fn first_seq_near(
    c: &Connection,
    head: u64,
    since: coffer_store::Timestamp,
) -> rusqlite::Result<u64> {
    let target = since.millis().saturating_sub(60_000);
    let mut stmt =
        c.prepare_cached("SELECT at FROM audit_log WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    // The first seq whose time is at or after `target` lies in [lo, hi].
    let (mut lo, mut hi) = (1u64, head + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at: Option<i64> = stmt.query_row([mid], |r| r.get(0)).optional()?;
        match at {
            Some(at) if at < target => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo.saturating_sub(1))
}

/// An event from its outbox row joined to its audit row.
fn event_of(r: &Row<'_>) -> rusqlite::Result<EventRecord> {
    let action: String = r.get(9)?;
    let count: u64 = r.get(8)?;
    Ok(EventRecord {
        id: r.get(0)?,
        subject: r.get(1)?,
        environment: r.get(2)?,
        name: r.get(3)?,
        revision: r.get(4)?,
        actor: ActorRef {
            key_id: r.get(5)?,
            key_name: r.get(6)?,
        },
        at: coffer_store::Timestamp::from_millis(r.get(7)?).rfc3339(),
        count: Action::ALL
            .iter()
            .any(|a| a.counts_values() && a.name() == action)
            .then_some(count),
    })
}

/// The last event id in the head (the writer announces it after each commit).
pub(crate) fn head_event_seq(c: &Connection) -> rusqlite::Result<u64> {
    c.prepare_cached("SELECT event_seq FROM journal_head WHERE id = 1")?
        .query_row([], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use coffer_store::journal::UNREADABLE_EVENT;
    use coffer_store::{AccessStore, Actor};

    use super::*;

    fn resolution(env: &EnvName, n: i64) -> Change {
        Change::function_resolved(&coffer_store::Resolution {
            environment: env.clone(),
            function_id: coffer_store::FunctionId::new("f").expect("id"),
            run_id: None,
            resolved: Vec::new(),
            missing: Vec::new(),
            at: coffer_store::Timestamp::from_millis(n),
        })
    }

    /// Resolutions that arrive while the writer is busy wait in one queue, are appended by
    /// one job as one chain, and each caller hears its own outcome: a revoked key's
    /// resolution is refused and writes nothing, the others are durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_resolutions_are_appended_together_each_with_its_outcome() {
        use coffer_store::{ApiKeyId, ApiKeyMeta, ApiKeyRecord, AuditQuery, Role};
        let (_dir, store, env) = crate::store_with_env("prod").await;
        let key = |id: &str| ApiKeyRecord {
            meta: ApiKeyMeta {
                id: ApiKeyId::new(id).expect("id"),
                name: id.into(),
                role: Role::Runtime(env.name.clone()),
                created_at: coffer_store::Timestamp::from_millis(1),
            },
            key_hash: format!("hash-{id}"),
        };
        let actor = |id: &str| Actor::Key {
            id: ApiKeyId::new(id).expect("id"),
            environment: Some(env.name.clone()),
            origin: coffer_store::Origin::default(),
        };
        for id in ["ak_01", "ak_02"] {
            store
                .insert_api_key(&key(id), &Actor::System)
                .await
                .expect("key");
        }
        let gone = ApiKeyId::new("ak_02").expect("id");
        store
            .delete_api_key(&gone, &Actor::System)
            .await
            .expect("revoked");
        let release = crate::hold_writer(&store.writer);
        let mut tasks = Vec::new();
        for n in 0..40 {
            let (store, env) = (store.clone(), env.name.clone());
            let who = actor(if n == 7 { "ak_02" } else { "ak_01" });
            tasks.push(tokio::spawn(async move {
                store
                    .combiner
                    .append(&store.writer, who, vec![resolution(&env, n)])
                    .await
            }));
        }
        crate::wait_queued(&store.combiner, 40).await;
        release.send(()).expect("release");
        let mut refused = 0;
        for (n, task) in tasks.into_iter().enumerate() {
            match task.await.expect("join") {
                Ok(()) => assert_ne!(n, 7),
                Err(StoreError::ActorRevoked) => {
                    assert_eq!(n, 7);
                    refused += 1;
                }
                Err(e) => panic!("resolution {n}: {e}"),
            }
        }
        assert_eq!(refused, 1);
        let (rows, _) = store
            .audit(&AuditQuery::default(), 1_000)
            .await
            .expect("audit");
        let resolved: Vec<_> = rows
            .iter()
            .filter(|r| r.action == "function.resolved")
            .collect();
        assert_eq!(resolved.len(), 39);
        assert!(
            resolved
                .iter()
                .all(|r| r.actor.key_id.as_deref() == Some("ak_01"))
        );
        crate::assert_chain(&rows);
    }

    /// A full writer queue refuses the resolutions waiting with it, and leaves nothing
    /// queued for nobody: the next one is appended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_flush_answers_every_queued_resolution() {
        let (_dir, store, env) = crate::store_with_env("prod").await;
        let release = crate::hold_writer(&store.writer);
        loop {
            let job: crate::writer::Job = Box::new(|_| (true, Box::new(|_| {})));
            match store.writer.submit(job) {
                Ok(()) => {}
                Err((StoreError::Overloaded, _)) => break,
                Err((e, _)) => panic!("{e}"),
            }
        }
        // Several at once: whichever sends the job, everyone queued for it hears the
        // refusal, and nobody waits for a job that was never sent.
        let callers: Vec<_> = (0..8)
            .map(|n| {
                let (store, env) = (store.clone(), env.name.clone());
                tokio::spawn(async move {
                    let changes = vec![resolution(&env, n)];
                    store
                        .combiner
                        .append(&store.writer, Actor::System, changes)
                        .await
                })
            })
            .collect();
        for caller in callers {
            let refused = tokio::time::timeout(std::time::Duration::from_secs(10), caller)
                .await
                .expect("answered")
                .expect("join");
            assert!(
                matches!(refused, Err(StoreError::Overloaded)),
                "{refused:?}"
            );
        }
        assert_eq!(queued(&store.combiner), 0);
        release.send(()).expect("release");
        // The queue drains in the writer's own time; until then, still refused.
        let queue = &store.combiner;
        crate::retry_while_overloaded(async || {
            let changes = vec![resolution(&env.name, 2)];
            queue.append(&store.writer, Actor::System, changes).await
        })
        .await
        .expect("appended once the queue drained");
    }

    /// No more resolutions wait than the writer's queue holds: past that, refused at once.
    #[tokio::test]
    async fn a_full_combiner_refuses_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let mut answers = Vec::new();
        for _ in 0..MAX_QUEUED {
            let (item, answer) = Appended::item(Actor::System, Vec::new());
            answers.push(answer);
            lock(&store.combiner.pending).items.push_back(item);
        }
        let append = store
            .combiner
            .append(&store.writer, Actor::System, Vec::new());
        let refused = tokio::time::timeout(std::time::Duration::from_secs(10), append)
            .await
            .expect("answered at once, not queued");
        assert!(
            matches!(refused, Err(StoreError::Overloaded)),
            "{refused:?}"
        );
        assert_eq!(queued(&store.combiner), MAX_QUEUED);
    }

    /// The live streams' watch moves after a commit that wrote an event, and not after
    /// one that wrote only audit rows.
    #[tokio::test]
    async fn the_event_watch_moves_only_with_events() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let watch = store.watch_events();
        let before = *watch.borrow();
        let env = crate::test_env("prod");
        store
            .create_environment(&env, &Actor::System)
            .await
            .expect("env");
        let after = *watch.borrow();
        assert!(after > before, "an event written, the watch kept {before}");
        store
            .combiner
            .append(&store.writer, Actor::System, vec![resolution(&env.name, 1)])
            .await
            .expect("audited");
        assert_eq!(*watch.borrow(), after);
    }

    /// A test write: appends a resolution's row, then fails, panics, or succeeds.
    struct Trial {
        env: EnvName,
        n: i64,
        end: &'static str,
        atomic: bool,
        reply: Option<oneshot::Sender<StoreResult<()>>>,
    }

    impl Trial {
        /// Queues a trial in `store`'s combiner; its caller's answer.
        fn queue(
            store: &SqliteStore,
            env: &EnvName,
            n: i64,
            end: &'static str,
            atomic: bool,
        ) -> oneshot::Receiver<StoreResult<()>> {
            let (reply, answer) = oneshot::channel();
            let trial = Trial {
                env: env.clone(),
                n,
                end,
                atomic,
                reply: Some(reply),
            };
            store
                .combiner
                .queue(&store.writer, Box::new(trial))
                .expect("queued");
            answer
        }
    }

    impl Shared for Trial {
        fn run(&mut self, c: &Connection, head: &mut Head) -> StoreResult<()> {
            let at = coffer_store::Timestamp::from_millis(self.n);
            let changes = [resolution(&self.env, self.n), Change::keys_rewrapped(1, at)];
            append_to(c, head, &Author::system(), &changes)?;
            match self.end {
                "fail" => Err(StoreError::Corrupt("a row of this write".into())),
                "panic" => panic!("a write that panics"),
                _ => Ok(()),
            }
        }

        fn answer(mut self: Box<Self>, outcome: StoreResult<()>) {
            if let Some(reply) = self.reply.take() {
                let _ = reply.send(outcome);
            }
        }

        fn atomic(&self) -> bool {
            self.atomic
        }
    }

    /// A write of the combined job that fails or panics after it wrote is undone alone, the
    /// head put back: the others commit, on one valid chain with no gap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_of_a_combined_job_is_undone_alone() {
        let (_dir, store, env) = crate::store_with_env("prod").await;
        let (before, _) = store
            .audit(&AuditQuery::default(), 1_000)
            .await
            .expect("audit");
        let release = crate::hold_writer(&store.writer);
        let mut answers = Vec::new();
        for (n, end) in ["ok", "fail", "ok", "panic", "ok"].into_iter().enumerate() {
            answers.push(Trial::queue(&store, &env.name, n as i64, end, false));
        }
        assert_eq!(queued(&store.combiner), 5);
        release.send(()).expect("release");
        for (n, answer) in answers.into_iter().enumerate() {
            let outcome = answer.await.expect("answered");
            match n {
                1 => assert!(
                    matches!(outcome, Err(StoreError::Corrupt(_))),
                    "{outcome:?}"
                ),
                3 => assert!(
                    matches!(outcome, Err(StoreError::Unavailable(_))),
                    "{outcome:?}"
                ),
                _ => assert!(outcome.is_ok(), "{n}: {outcome:?}"),
            }
        }
        let (after, _) = store
            .audit(&AuditQuery::default(), 1_000)
            .await
            .expect("audit");
        let added: Vec<i64> = after[before.len()..].iter().map(|r| r.at).collect();
        assert_eq!(
            added,
            [0, 0, 2, 2, 4, 4],
            "the rows of the writes that committed"
        );
        // Their events too, numbered on from the head with no gap.
        let events = store.events_after(0, 100).await.expect("events");
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
        let rewrapped = events
            .iter()
            .filter(|e| e.subject == "system.keys.rewrapped");
        assert_eq!(rewrapped.count(), 3);
        for pair in after.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
        crate::assert_chain(&after);

        // An atomic write has no savepoint of its own: failing other than by a refusal, it
        // fails the whole job, and nothing of the job is kept.
        let release = crate::hold_writer(&store.writer);
        let mut answers = Vec::new();
        for (n, end) in ["ok", "fail"].into_iter().enumerate() {
            answers.push(Trial::queue(&store, &env.name, 10 + n as i64, end, true));
        }
        release.send(()).expect("release");
        for answer in answers {
            let outcome = answer.await.expect("answered");
            assert!(
                matches!(outcome, Err(StoreError::Corrupt(_))),
                "{outcome:?}"
            );
        }
        let (last, _) = store
            .audit(&AuditQuery::default(), 1_000)
            .await
            .expect("audit");
        assert_eq!(last.len(), after.len());
    }

    /// A writer batch holds the journal head from its first read to its commit: writes that
    /// fail or panic after appending are undone with the head they advanced, combined
    /// writes in the same batch chain on from the others, and the head row is written back
    /// before the commit (it names the batch's last row).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_holds_the_head_and_writes_it_back() {
        let (_dir, store, env) = crate::store_with_env("prod").await;
        let release = crate::hold_writer(&store.writer);
        let mut answers = Vec::new();
        for (n, end) in ["ok", "fail", "ok", "panic", "combined", "ok", "fail"]
            .into_iter()
            .enumerate()
        {
            if end == "combined" {
                answers.push(Trial::queue(&store, &env.name, n as i64, "ok", false));
                continue;
            }
            let (reply, answer) = oneshot::channel();
            let env = env.name.clone();
            let job: Job = Box::new(move |c| {
                let change = resolution(&env, n as i64);
                let appended = append(c, &Author::system(), &[change]);
                let keep = match end {
                    "fail" => false,
                    "panic" => panic!("a write that panics"),
                    _ => appended.is_ok(),
                };
                let finish: Finish = Box::new(move |commit| {
                    let outcome = match (keep, commit) {
                        (true, Ok(())) => Ok(()),
                        _ => Err(StoreError::Unavailable("undone".into())),
                    };
                    let _ = reply.send(outcome);
                });
                (keep, finish)
            });
            store
                .writer
                .submit(job)
                .map_err(|(e, _)| e)
                .expect("queued");
            answers.push(answer);
        }
        release.send(()).expect("release");
        let mut kept = Vec::new();
        for (n, answer) in answers.into_iter().enumerate() {
            // The panicking job never answers: its reply went with it.
            if matches!(answer.await, Ok(Ok(()))) {
                kept.push(n as i64);
            }
        }
        assert_eq!(kept, [0, 2, 4, 5], "the writes that committed");
        let (rows, _) = store
            .audit(&AuditQuery::default(), 1_000)
            .await
            .expect("audit");
        let added: Vec<i64> = rows
            .iter()
            .filter(|r| r.action == "function.resolved")
            .map(|r| r.at)
            .collect();
        assert_eq!(added, kept, "one row per committed write, in order");
        for pair in rows.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
        crate::assert_chain(&rows);
        let last = rows.last().expect("rows");
        let head = store.audit_head().await.expect("head");
        assert_eq!(
            head,
            (last.seq, last.hash.clone()),
            "the head row written back"
        );
        // Outside a batch, the row is the head: a write after this one chains on from it.
        store
            .combiner
            .append(&store.writer, Actor::System, vec![resolution(&env.name, 9)])
            .await
            .expect("appended");
        let (rows, _) = store
            .audit(&AuditQuery::default(), 1_000)
            .await
            .expect("audit");
        crate::assert_chain(&rows);
        assert_eq!(rows.last().expect("rows").seq, last.seq + 1);
    }

    /// However many writes wait, one shared job takes at most [`MAX_COMBINED`]: a job is
    /// sent for each such share, and every write is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_job_takes_a_bounded_share() {
        let (_dir, store, env) = crate::store_with_env("prod").await;
        let release = crate::hold_writer(&store.writer);
        let mut answers = Vec::new();
        for n in 0..2 * MAX_COMBINED + 1 {
            answers.push(Trial::queue(&store, &env.name, n as i64, "ok", false));
        }
        assert_eq!(lock(&store.combiner.pending).jobs, 3);
        release.send(()).expect("release");
        for answer in answers {
            let answered = tokio::time::timeout(std::time::Duration::from_secs(10), answer);
            answered
                .await
                .expect("not left behind")
                .expect("answered")
                .expect("written");
        }
        assert_eq!(queued(&store.combiner), 0);
        assert_eq!(lock(&store.combiner.pending).jobs, 0);
        // What one job takes, and what it leaves to the others.
        let mut waiting = Waiting::default();
        for n in 0..MAX_COMBINED + 1 {
            let (reply, _) = oneshot::channel();
            waiting.items.push_back(Box::new(Trial {
                env: env.name.clone(),
                n: n as i64,
                end: "ok",
                atomic: false,
                reply: Some(reply),
            }));
        }
        waiting.jobs = 2;
        assert_eq!(waiting.share().len(), MAX_COMBINED);
        assert_eq!((waiting.items.len(), waiting.jobs), (1, 1));
        assert_eq!(waiting.share().len(), 1);
        assert_eq!((waiting.items.len(), waiting.jobs), (0, 0));
    }

    /// A flush job dropped before it ran (the writer stopped) answers whoever waits.
    #[tokio::test]
    async fn a_flush_dropped_unrun_answers_with_an_error() {
        let queue = Combiner::default();
        let (item, answer) = Appended::item(Actor::System, Vec::new());
        lock(&queue.pending).items.push_back(item);
        drop(Flush {
            pending: Some(queue.pending.clone()),
            refusal: Arc::default(),
        });
        assert!(matches!(answer.await, Ok(Err(StoreError::Unavailable(_)))));
        assert_eq!(queued(&queue), 0);
    }

    /// An audit row edited to a cell of the wrong type does not stop every reader of the
    /// outbox at its event: the event is read as a marker, the ones after it as written.
    #[tokio::test]
    async fn an_unreadable_audit_row_becomes_a_marker_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        for name in ["a", "b", "c"] {
            let env = crate::test_env(name);
            store
                .create_environment(&env, &Actor::System)
                .await
                .unwrap();
        }
        store
            .writer
            .write(|c| {
                c.execute(
                    "UPDATE audit_log SET at = 'yesterday'
                     WHERE seq = (SELECT audit_seq FROM events WHERE seq = 2)",
                    [],
                )
                .map(drop)
                .map_err(unavailable)
            })
            .await
            .unwrap();
        let events = store.events_after(0, 10).await.unwrap();
        let subjects: Vec<(u64, &str)> =
            events.iter().map(|e| (e.id, e.subject.as_str())).collect();
        assert_eq!(
            subjects,
            [
                (1, "system.environment.a.created"),
                (2, UNREADABLE_EVENT),
                (3, "system.environment.c.created"),
            ]
        );
    }
}
