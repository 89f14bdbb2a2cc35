//! The PostgreSQL catalog: the catalog, the `db` secret store, the config store and the
//! runtime plane's functions and run queue on one PostgreSQL database that any number of
//! `coffer serve` nodes share.
//!
//! Concurrency model: there is no in-process lock. Every write is one transaction that
//! re-checks its actor, makes its change and appends its journal rows; every invariant is
//! held by the database (foreign keys, unique rows, single conditional statements, row
//! locks taken in one fixed order, written down in the `journal` module). Reads
//! and writes take a connection from a bounded pool ([`PgOptions`]) for their database work
//! only; a pool that stays exhausted for `acquire_timeout` answers
//! [`StoreError::Overloaded`].
//!
//! Events: a journaled write issues `pg_notify('coffer_events', <last event id>)` inside its
//! transaction (PostgreSQL delivers it on commit). Each node listens on a dedicated
//! connection and announces what it hears, and its own commits, on
//! [`JournalStore::watch_events`](coffer_store::JournalStore::watch_events).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod catalog;
mod config;
mod functions;
mod journal;
mod orchestrations;
mod reads;
mod runs;
pub mod schema;
mod secrets;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod versioned;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use coffer_store::{PageFill, PageSize, StoreError, StoreResult};
use futures_util::{Stream, TryStreamExt};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};

/// The channel journaled writes notify on commit, with the last event id as payload.
pub const EVENTS_CHANNEL: &str = "coffer_events";

/// How a [`PgStore`] talks to its database.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Most connections the pool opens (default 16). A node never holds more.
    pub max_connections: u32,
    /// How long a request waits for a free connection (default 2 s); past it the request
    /// is refused with [`StoreError::Overloaded`] (the API answers 503 `overloaded`).
    pub acquire_timeout: Duration,
    /// How long one statement may run (default 5 s), set as the session's
    /// `statement_timeout`; a statement cut off there fails with
    /// [`StoreError::Unavailable`] and its transaction changes nothing.
    pub statement_timeout: Duration,
    /// How long [`PgStore::connect`] waits for the first connection and the migrations
    /// (default 10 s); past it the server counts as unreachable. It also bounds the wait for
    /// the migration lock while another node migrates.
    pub connect_timeout: Duration,
    /// How long a session may sit idle inside an open transaction (default 5 s, as the
    /// statement timeout), set as the session's `idle_in_transaction_session_timeout`: the
    /// server ends a session whose node stalled mid-write (paused, stopped, cut off), so
    /// the row locks it held, the journal head's among them, are released.
    pub idle_in_transaction_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(5),
        }
    }
}

/// The catalog, the `db` secret store and the config store on one PostgreSQL database.
pub struct PgStore {
    db: Db,
    /// The last event id this node has seen committed (its own commits, and other nodes'
    /// as their notifications arrive).
    events: Arc<tokio::sync::watch::Sender<u64>>,
    /// The task that listens for other nodes' commits; stopped when the store goes.
    listener: tokio::task::AbortHandle,
    /// The node's writes, committed in batches (see `writer`).
    writer: writer::Writer,
    /// Secret metadata read lately, behind a fence (see `reads`).
    meta_cache: reads::MetaCache,
}

/// The connection pool and what it needs to tell an unreachable server from a busy pool.
#[derive(Clone)]
pub(crate) struct Db {
    pool: PgPool,
    /// Set when opening a connection failed, cleared when one opens: whether a timed-out
    /// acquire means an unreachable server rather than a busy pool.
    connect_failed: Arc<AtomicBool>,
    /// How the pool connects, for a probe when an acquire timed out (see `pool_error`).
    connect: PgConnectOptions,
    /// The pool's most connections.
    max_connections: u32,
    /// Whether every checkout is pinged first (for a while after the server went away).
    recheck: Recheck,
}

/// When the pool pings a connection before handing it out, so that one that died with the
/// server (a restart, a proxy or `idle_session_timeout` closing idle sessions) is replaced
/// instead of failing a request: a connection idle for [`PING_IDLE`] or more, and every
/// connection for [`RECHECK_FOR`] after the server was seen going away (the listening
/// connection lost, a connection that would not open). A busy pool's checkouts cost no
/// round trip.
#[derive(Clone)]
struct Recheck {
    /// What `until` counts from.
    clock: std::time::Instant,
    /// Until when (milliseconds on `clock`) every checkout is pinged.
    until: Arc<AtomicU64>,
}

impl Default for Recheck {
    fn default() -> Self {
        Recheck {
            clock: std::time::Instant::now(),
            until: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Recheck {
    fn now(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Pings every checkout for the next [`RECHECK_FOR`].
    fn start(&self) {
        let until = self
            .now()
            .saturating_add(u64::try_from(RECHECK_FOR.as_millis()).unwrap_or(u64::MAX));
        self.until.fetch_max(until, Ordering::Relaxed);
    }

    fn active(&self) -> bool {
        self.now() <= self.until.load(Ordering::Relaxed)
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://…`; TLS as the URL's `sslmode` says), applies pending
    /// migrations under an advisory lock (so nodes starting together migrate once), and
    /// starts listening for other nodes' events. Must run inside a Tokio runtime.
    ///
    /// Errors: [`StoreError::Unavailable`] when the server cannot be reached within
    /// `connect_timeout` or refuses the migrations. The URL never appears in an error (it
    /// may hold a password).
    pub async fn connect(url: &str, options: PgOptions) -> StoreResult<PgStore> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|_| {
                StoreError::Unavailable("postgres: the database URL does not parse".into())
            })?
            .application_name("coffer")
            .options(session_options(&options));
        let connect_failed = Arc::new(AtomicBool::new(false));
        let opened = connect_failed.clone();
        let recheck = Recheck::default();
        let checking = recheck.clone();
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            // No ping before every checkout (a round trip per read): only a connection idle
            // for a while, or any while the server was lately seen going away (see
            // `Recheck`). One that does not answer is closed and another taken, within the
            // acquire timeout.
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                let ping = meta.idle_for >= PING_IDLE || checking.active();
                Box::pin(async move {
                    if ping {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |_, _| {
                opened.store(false, Ordering::Relaxed);
                Box::pin(async { Ok(()) })
            })
            .connect_lazy_with(connect.clone());
        let ready = async {
            let first = |e| match e {
                sqlx::Error::PoolTimedOut => unreachable(),
                other => db(other),
            };
            schema::migrate(pool.begin().await.map_err(first)?).await?;
            let mut conn = pool.acquire().await.map_err(first)?;
            journal::head_event_seq(&mut conn).await
        };
        let last_event = match tokio::time::timeout(options.connect_timeout, ready).await {
            Ok(Ok(last)) => last,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "postgres: the server did not answer within the connect timeout".into(),
                ));
            }
        };
        let events = Arc::new(tokio::sync::watch::channel(last_event).0);
        // A pool of its own: the listening connection never takes a request's place.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.connect_timeout)
            .connect_lazy_with(connect.clone());
        let db = Db {
            pool,
            connect_failed,
            connect,
            max_connections: options.max_connections.max(1),
            recheck,
        };
        let listener = tokio::spawn(listen(listen_pool, db.clone(), events.clone())).abort_handle();
        let writer = writer::Writer::start(db.clone(), events.clone());
        Ok(PgStore {
            db,
            events,
            listener,
            writer,
            meta_cache: reads::MetaCache::default(),
        })
    }

    /// A connection for one piece of database work.
    async fn acquire(&self) -> StoreResult<PoolConnection<Postgres>> {
        self.db.acquire().await
    }

    /// Runs one write in the node's next batch (see `writer`) and returns its outcome once
    /// the batch has committed.
    async fn write<T, F>(&self, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(writer::Tx<'c>) -> writer::BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        self.write_as(writer::Kind::Batched, write).await
    }

    /// [`Self::write`] run as `kind` says: without a savepoint (`Atomic`), or in a batch of
    /// its own (`Alone`).
    async fn write_as<T, F>(&self, kind: writer::Kind, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(writer::Tx<'c>) -> writer::BoxFuture<'c, StoreResult<T>> + Send + 'static,
    {
        self.writer.run(kind, write).await
    }

    /// Whether the database answers a query.
    async fn ping(&self) -> StoreResult<()> {
        let mut c = self.acquire().await?;
        sqlx::query("SELECT 1").execute(&mut *c).await.map_err(db)?;
        Ok(())
    }
}

impl Db {
    /// A connection for one piece of database work (pinged first when `Recheck` says so).
    async fn acquire(&self) -> StoreResult<PoolConnection<Postgres>> {
        match self.pool.acquire().await {
            Ok(c) => Ok(c),
            Err(e) => Err(self.pool_error(e).await),
        }
    }

    /// A transaction for one write (batch).
    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let c = self.acquire().await?;
        Transaction::begin(c, None).await.map_err(db)
    }

    /// Connections are pinged before use for a while (see `Recheck`).
    fn server_went_away(&self) {
        self.recheck.start();
    }

    /// A timed-out acquire means an unreachable server when the pool holds no connection at
    /// all or opening one failed since the last that opened, and overload otherwise. (The
    /// pool's size and idle count read after the timeout race with connections coming back,
    /// so they are not evidence of a busy pool.) The pool hides a refused or unanswered
    /// connect behind its timeout, so when it had room for another connection and no
    /// failure is known, one connect is tried (bounded by a second): if it fails, that is
    /// the failed connect. Any other error opening a connection counts as one too.
    async fn pool_error(&self, e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::PoolTimedOut => {
                if !self.connect_failed.load(Ordering::Relaxed)
                    && self.pool.size() < self.max_connections
                    && !self.server_takes_connections().await
                {
                    self.connect_failed.store(true, Ordering::Relaxed);
                    self.server_went_away();
                }
                let failed = self.connect_failed.load(Ordering::Relaxed);
                timed_out(self.pool.size(), failed)
            }
            sqlx::Error::PoolClosed => db(e),
            other => {
                self.connect_failed.store(true, Ordering::Relaxed);
                self.server_went_away();
                db(other)
            }
        }
    }

    /// Whether a new connection opens within a second (closed again at once).
    async fn server_takes_connections(&self) -> bool {
        use sqlx::{ConnectOptions, Connection};
        let probe = tokio::time::timeout(Duration::from_secs(1), self.connect.connect()).await;
        match probe {
            Ok(Ok(c)) => {
                let _ = c.close().await;
                true
            }
            _ => false,
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// TCP keepalive settings of every session (seconds idle, seconds between probes, probes):
/// the server notices a peer that vanished without closing (a VM paused, a network cut)
/// within about 25 s rather than the operating system's two hours.
const TCP_KEEPALIVES: (u32, u32, u32) = (10, 5, 3);

/// The settings every session starts with (PostgreSQL's `-c name=value` startup options).
fn session_options(options: &PgOptions) -> Vec<(&'static str, String)> {
    let (idle, interval, count) = TCP_KEEPALIVES;
    vec![
        (
            "statement_timeout",
            options.statement_timeout.as_millis().to_string(),
        ),
        (
            "idle_in_transaction_session_timeout",
            options
                .idle_in_transaction_timeout
                .as_millis()
                .max(1)
                .to_string(),
        ),
        ("tcp_keepalives_idle", idle.to_string()),
        ("tcp_keepalives_interval", interval.to_string()),
        ("tcp_keepalives_count", count.to_string()),
        // Every invariant is argued for READ COMMITTED (a blocked write re-reads the row it
        // waited for); a database or role default of a stricter level would turn concurrent
        // writes into serialization failures. (A space in an option is escaped.)
        (
            "default_transaction_isolation",
            r"read\ committed".to_owned(),
        ),
    ]
}

/// Moves the watch forward to `id` (never back: notifications may arrive out of order).
fn announce(events: &tokio::sync::watch::Sender<u64>, id: u64) {
    events.send_if_modified(|last| {
        let newer = id > *last;
        if newer {
            *last = id;
        }
        newer
    });
}

/// How long every checkout is pinged after the server was seen going away.
const RECHECK_FOR: Duration = Duration::from_secs(60);
/// A connection idle this long is pinged before it is handed out.
const PING_IDLE: Duration = Duration::from_secs(5);

/// The listener's first wait before reconnecting, and its longest.
const LISTEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How long a listening connection must stay up for the backoff to start over.
const LISTEN_STABLE: Duration = Duration::from_secs(10);
/// How long the listener waits for a notification before checking its connection with
/// `SELECT 1` (a connection cut off without a close would otherwise wait for ever).
const LISTEN_PING: Duration = Duration::from_secs(30);

/// Listens for other nodes' commits on a dedicated connection and announces them. On every
/// (re)connection it also reads the head, so events committed while it was away are
/// announced too. Every way the connection can fail — it cannot be opened, `LISTEN`
/// fails, it is lost, a ping goes unanswered — waits with a backoff that doubles up to
/// 5 s and starts over only once a connection stayed up for 10 s; and each makes the pool
/// check its connections before use for a while (`Db::server_went_away`): they may have
/// died with the listener's. Runs until the store is dropped.
async fn listen(listen_pool: PgPool, db: Db, events: Arc<tokio::sync::watch::Sender<u64>>) {
    let (first, longest) = LISTEN_BACKOFF;
    let mut backoff = first;
    loop {
        let up_since = tokio::time::Instant::now();
        listen_once(&listen_pool, &db, &events).await;
        db.server_went_away();
        if up_since.elapsed() >= LISTEN_STABLE {
            backoff = first;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(longest);
    }
}

/// One listening connection, from its opening to its loss.
async fn listen_once(listen_pool: &PgPool, pool: &Db, events: &tokio::sync::watch::Sender<u64>) {
    let connect_failed = &pool.connect_failed;
    let mut listener = match PgListener::connect_with(listen_pool).await {
        Ok(l) => {
            // The server takes connections again.
            connect_failed.store(false, Ordering::Relaxed);
            l
        }
        Err(e) => {
            // The server did not take a connection: requests that time out waiting for
            // one now count it unreachable (until a connection opens).
            connect_failed.store(true, Ordering::Relaxed);
            tracing::warn!(error = %db(e), "cannot listen for events; retrying");
            return;
        }
    };
    // A lost connection ends this one; the caller opens the next after its backoff.
    listener.eager_reconnect(false);
    if let Err(e) = listener.listen(EVENTS_CHANNEL).await {
        tracing::warn!(error = %db(e), "cannot listen for events; retrying");
        return;
    }
    let mut caught_up = false;
    loop {
        if !caught_up
            && let Ok(mut c) = pool.acquire().await
            && let Ok(id) = journal::head_event_seq(&mut c).await
        {
            announce(events, id);
            caught_up = true;
        }
        match tokio::time::timeout(LISTEN_PING, listener.try_recv()).await {
            Ok(Ok(Some(n))) => {
                if let Ok(id) = n.payload().parse::<u64>() {
                    announce(events, id);
                }
            }
            Ok(Ok(None)) => {
                tracing::warn!("the event listener lost its connection; reconnecting");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %db(e), "the event listener failed; reconnecting");
                return;
            }
            Err(_) => {
                // Quiet for a while: make sure the connection still answers.
                let ping = sqlx::query("SELECT 1").execute(&mut listener);
                match tokio::time::timeout(LISTEN_PING, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %db(e), "the event listener's ping failed; reconnecting");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!("the event listener's ping went unanswered; reconnecting");
                        return;
                    }
                }
            }
        }
    }
}

/// What a timed-out acquire means: no connection at all (`size == 0`) or a recent failed
/// connect is an unreachable server; otherwise every connection was busy.
fn timed_out(size: u32, connect_failed: bool) -> StoreError {
    if size == 0 || connect_failed {
        unreachable()
    } else {
        StoreError::Overloaded
    }
}

/// No connection could be opened in time: the server is down, unreachable or refusing us.
fn unreachable() -> StoreError {
    StoreError::Unavailable(
        "postgres: no connection could be opened within the acquire timeout".into(),
    )
}

/// Opens the statement of a page bounded in bytes: the rows of `SELECT {columns} FROM …`
/// (push the `FROM` and conditions next, then [`close_bounded`]) in `order`, up to the
/// page's rows, and only those whose predecessors weigh less than its bytes (`weight`, an
/// SQL expression of the row's text in bytes): the rows [`PageFill`] takes, cut in the
/// database, which then reads and sends no large text past the page (the length of a
/// TOASTed value is known without reading it). Each row comes with two more columns after
/// `columns`.
pub(crate) fn open_bounded<'a>(
    columns: &str,
    weight: &str,
    order: &str,
) -> sqlx::QueryBuilder<'a, Postgres> {
    sqlx::QueryBuilder::new(format!(
        "SELECT * FROM (SELECT q.*, sum(q.page_weight) OVER (ORDER BY {order} ROWS UNBOUNDED \
         PRECEDING) - q.page_weight AS page_before FROM (SELECT {columns}, ({weight})::bigint \
         AS page_weight "
    ))
}

/// Closes a statement [`open_bounded`] opened, with the same `order`.
pub(crate) fn close_bounded(
    sql: &mut sqlx::QueryBuilder<'_, Postgres>,
    order: &str,
    size: PageSize,
) {
    sql.push(format!(" ORDER BY {order} LIMIT "))
        .push_bind(i64::try_from(size.rows).unwrap_or(i64::MAX))
        .push(") q) p WHERE p.page_before < ")
        .push_bind(i64::try_from(size.bytes).unwrap_or(i64::MAX))
        .push(format!(" ORDER BY {order}"));
}

/// Reads one page of `size` from `rows`, each made by `make` and weighed by `weight`. It
/// stops reading once the page is full (with [`open_bounded`] the database has cut the rows
/// already; this holds the page to its bounds whatever the statement).
pub(crate) async fn read_page<T>(
    mut rows: impl Stream<Item = Result<PgRow, sqlx::Error>> + Unpin,
    size: PageSize,
    make: impl Fn(&PgRow) -> StoreResult<T>,
    weight: impl Fn(&T) -> usize,
) -> StoreResult<Vec<T>> {
    let mut page = PageFill::new(size);
    while !page.is_full() {
        let Some(row) = rows.try_next().await.map_err(db)? else {
            break;
        };
        let record = make(&row)?;
        let w = weight(&record);
        page.push(record, w);
    }
    Ok(page.into_rows())
}

/// Maps a driver error to the store's error, naming what failed but never a value: for a
/// database error only its SQLSTATE code and the constraint it names (a message may quote
/// the offending value).
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match e {
        E::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                // unique_violation on the journal's own keys: rows past the head (the head
                // says seq n, yet row n + 1 exists). The journal is damaged; no retry or
                // other name will pass, so it is not a conflict of the caller's.
                "23505" if matches!(d.constraint(), Some("audit_log_pkey" | "events_pkey")) => {
                    StoreError::Corrupt(format!(
                        "postgres: the journal holds rows past its head (constraint {})",
                        d.constraint().unwrap_or_default()
                    ))
                }
                // unique_violation: only reached where no ON CONFLICT settles it.
                "23505" => StoreError::AlreadyExists,
                // foreign_key_violation: the row it refers to (an environment) is gone.
                "23503" => StoreError::NotFound,
                // deadlock_detected, serialization_failure, lock_not_available,
                // too_many_connections: nothing was written, a retry may pass.
                "40P01" | "40001" | "55P03" | "53300" => StoreError::Overloaded,
                "57014" => StoreError::Unavailable("postgres: statement timeout".into()),
                _ => StoreError::Unavailable(format!(
                    "postgres: database error {code}{}",
                    d.constraint()
                        .map(|c| format!(" (constraint {c})"))
                        .unwrap_or_default()
                )),
            }
        }
        E::PoolTimedOut => StoreError::Overloaded,
        E::Io(io) => {
            StoreError::Unavailable(format!("postgres: connection failed ({})", io.kind()))
        }
        E::Tls(_) => StoreError::Unavailable("postgres: TLS failed".into()),
        E::PoolClosed => StoreError::Unavailable("postgres: the pool is closed".into()),
        E::Protocol(_) => StoreError::Unavailable("postgres: protocol error".into()),
        E::ColumnDecode { index, .. } => {
            StoreError::Corrupt(format!("postgres: column {index} does not decode"))
        }
        E::ColumnNotFound(c) => StoreError::Corrupt(format!("postgres: no column {c}")),
        other => StoreError::Unavailable(format!("postgres: {}", kind_of(&other))),
    }
}

/// A short name for the remaining driver errors (their text is not shown: it may quote
/// input).
fn kind_of(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Configuration(_) => "configuration error",
        sqlx::Error::RowNotFound => "row not found",
        sqlx::Error::TypeNotFound { .. } => "type not found",
        sqlx::Error::ColumnIndexOutOfBounds { .. } => "column index out of bounds",
        sqlx::Error::Decode(_) => "decode error",
        sqlx::Error::WorkerCrashed => "driver worker crashed",
        _ => "driver error",
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A stored integer that must not be negative (revisions, sequence numbers, counts).
fn unsigned(n: i64) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| corrupt("a negative number where a count was stored"))
}

/// `(key_version, count)` rows as counts per key version.
fn per_key_version(rows: Vec<(i64, i64)>) -> StoreResult<std::collections::BTreeMap<u32, u64>> {
    rows.into_iter()
        .map(|(v, n)| {
            let v = u32::try_from(v).map_err(|_| corrupt("a key version out of range"))?;
            Ok((v, unsigned(n)?))
        })
        .collect()
}

/// Which of a batch's `len` replacements applied, from the batch indexes a statement
/// returned for the rows it changed (`RETURNING r.idx`).
fn applied_flags(len: usize, applied_at: Vec<i64>) -> Vec<bool> {
    let mut applied = vec![false; len];
    for i in applied_at {
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| applied.get_mut(i)) {
            *slot = true;
        }
    }
    applied
}

/// A count or sequence number as PostgreSQL's BIGINT.
fn signed(n: u64) -> StoreResult<i64> {
    i64::try_from(n)
        .map_err(|_| StoreError::Unavailable("a number past 2^63 does not fit a BIGINT".into()))
}

#[cfg(test)]
mod tests;
