//! The embedded default backend: the catalog, the secret values and the config in one
//! SQLite file.
//!
//! Concurrency model: reads run inline on the caller's thread from a small pool of
//! read-only connections (a WAL point read takes microseconds; handing it to another thread
//! would cost more than the query). Every write goes to one writer thread, which drains its
//! queue into a single transaction — one `SAVEPOINT` per write so a refused write changes
//! nothing — and commits with `synchronous=FULL`: one fsync acknowledges the whole batch
//! (group commit). A write is acknowledged only after its batch is durable.
//!
//! Removed contents: `secure_delete` zeroes what a write frees, and
//! [`SqliteStore::checkpoint`] moves the write-ahead log into the database and truncates it
//! (until then, old page images, such as plaintext that dev mode left, live on in
//! `coffer.db-wal`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod catalog;
mod checkpointer;
mod config;
mod functions;
mod journal;
mod orchestrations;
mod runs;
mod secrets;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use coffer_store::schema::{BOOKKEEPING, MIGRATIONS, Migration};
use coffer_store::{StoreError, StoreResult, Timestamp};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, params};

use writer::Writer;

/// The SQLite file that holds a data dir's catalog and values.
pub const DB_FILE: &str = "coffer.db";

/// The catalog, the `db` secret store and the config store on one SQLite file.
pub struct SqliteStore {
    readers: std::sync::Arc<ReadPool>,
    writer: Writer,
    /// The catalog epoch: transactions the writer ended that changed a catalog row. It
    /// fences the read caches below (see [`cache`]).
    epoch: std::sync::Arc<cache::CatalogEpoch>,
    /// Secret metadata by incarnation and name.
    meta_cache: cache::EpochCache<
        coffer_store::EnvId,
        coffer_store::SecretName,
        Option<coffer_store::SecretMeta>,
    >,
    /// Sealed secret rows by incarnation and name (never dev mode's plaintext).
    value_cache: cache::EpochCache<
        coffer_store::EnvId,
        coffer_store::SecretName,
        Option<secrets::SealedRow>,
    >,
    /// Environments by name.
    environment_cache:
        cache::EpochCache<coffer_store::EnvName, (), Option<coffer_store::Environment>>,
    /// Function rows by environment and id (only those whose signing secrets are sealed).
    function_cache: cache::EpochCache<
        coffer_store::EnvName,
        coffer_store::FunctionId,
        Option<functions::Columns>,
    >,
    /// Pages of function rows by environment and (after, limit), as `function_cache`.
    page_cache: cache::EpochCache<coffer_store::EnvName, (String, usize), Vec<functions::Columns>>,
    /// `epoch + 1` when the `unreadable_values` table was last seen empty at that epoch
    /// (0: not known). Like the caches, valid only while the epoch is unchanged: secret
    /// reads then learn that no value is marked unreadable without a query.
    no_marks_at: std::sync::atomic::AtomicU64,
    /// The last event id committed, announced by the writer.
    events: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Resolutions' audit rows and runs' ends, written by one writer job per batch.
    combiner: journal::Combiner,
    /// Copies the write-ahead log into the database off the writer thread.
    checkpointer: checkpointer::Checkpointer,
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/coffer.db`, applies pending migrations and
    /// starts the writer thread.
    pub fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(unavailable)?;
        configure(&conn, false)?;
        migrate(&conn)?;
        let epoch = std::sync::Arc::new(cache::CatalogEpoch::default());
        let last_event = journal::head_event_seq(&conn).map_err(unavailable)?;
        let events = std::sync::Arc::new(tokio::sync::watch::channel(last_event).0);
        let checkpointer = checkpointer::Checkpointer::start(path.clone()).map_err(|e| {
            StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}"))
        })?;
        Ok(SqliteStore {
            readers: std::sync::Arc::new(ReadPool::new(path)),
            writer: Writer::start(conn, epoch.clone(), events.clone())?,
            epoch,
            meta_cache: cache::EpochCache::new(cache::META_BUDGET),
            value_cache: cache::EpochCache::new(cache::VALUE_BUDGET),
            environment_cache: cache::EpochCache::new(cache::ENVIRONMENT_BUDGET),
            function_cache: cache::EpochCache::new(cache::FUNCTION_BUDGET),
            page_cache: cache::EpochCache::new(cache::FUNCTION_BUDGET),
            no_marks_at: std::sync::atomic::AtomicU64::new(0),
            events,
            combiner: journal::Combiner::default(),
            checkpointer,
        })
    }

    /// Copies every committed page from `coffer.db-wal` into `coffer.db` and truncates the
    /// log to zero bytes, so contents that writes overwrote or deleted (zeroed in the
    /// database by `secure_delete`) no longer survive in older page images in the log.
    /// Run it after encrypting what dev mode left and at shutdown.
    ///
    /// Blocking: it keeps the checkpoint thread from starting another checkpoint, waits
    /// for the one in progress, and then tries again until [`TRUNCATE_PATIENCE`] has passed
    /// (a reader or the writer may hold the log, or the writer's own checkpoint the
    /// checkpoint lock); each try may itself wait up to the busy timeout (5 s), so this can
    /// take some 10 s before it fails. `coffer serve` runs it only at start-up and
    /// shutdown. It runs on a short-lived connection of its own: SQLite does not checkpoint
    /// on a connection inside a transaction, and the writer thread is always inside one
    /// while it runs a job. A checkpoint copies committed pages; it changes no row.
    pub fn checkpoint(&self) -> StoreResult<()> {
        let _turn = self.checkpointer.hold();
        let conn = checkpoint_connection(&self.readers.path).map_err(unavailable)?;
        let deadline = std::time::Instant::now() + TRUNCATE_PATIENCE;
        loop {
            // One row: (busy, frames in the log, frames checkpointed). Busy when the
            // checkpoint lock was taken (SQLite does not wait for it) or a reader or the
            // writer still used the log past the busy timeout.
            let busy: i64 = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .map_err(unavailable)?;
            if busy == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(
                    "sqlite: the write-ahead log stayed in use, it was not truncated".into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        self.readers.with(|conn| f(conn).map_err(unavailable))
    }

    /// Like `read`, on a blocking thread: for reads that walk many rows (scans, counts),
    /// which would otherwise hold an async worker for milliseconds.
    async fn read_off_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(|conn| f(conn).map_err(unavailable)))
            .await
            .map_err(|_| StoreError::Unavailable("a read task failed".into()))?
    }

    /// Whether both paths answer: a read, and an empty transaction on the writer thread.
    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())))?;
        self.writer.write(|_| Ok(())).await
    }
}

/// How long [`SqliteStore::checkpoint`] tries to truncate the log.
const TRUNCATE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// At most this many idle read connections are kept.
const MAX_IDLE_READERS: usize = 8;

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn new(path: PathBuf) -> Self {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(&self.path, flags).map_err(unavailable)?;
                configure(&conn, true)?;
                conn
            }
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

/// `secure_delete`: a write that frees a value (an update, a delete, dev-mode plaintext
/// replaced by its ciphertext) overwrites the freed bytes with zeros instead of leaving them
/// in the file's free space.
///
/// `foreign_keys`: the runtime plane's rows (functions, runs, idempotency receipts) go with
/// their environment incarnation by `ON DELETE CASCADE`, and cannot be written into one that
/// does not exist. Only the writer needs it: readers change no row.
///
/// The savepoint journal of a batch stays in memory up to 16 MiB (`SQLITE_STMTJRNL_SPILL`,
/// set where SQLite is built: `.cargo/config.toml`).
const WRITER_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON;";
const READER_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA query_only = 1;";
const CHECKPOINTER_PRAGMAS: &str =
    "PRAGMA busy_timeout = 5000; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;";

/// A connection for checkpoints (the thread's, and [`SqliteStore::checkpoint`]'s).
fn checkpoint_connection(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.execute_batch(CHECKPOINTER_PRAGMAS)?;
    Ok(conn)
}

fn configure(conn: &Connection, read_only: bool) -> StoreResult<()> {
    let pragmas = if read_only {
        READER_PRAGMAS
    } else {
        WRITER_PRAGMAS
    };
    conn.execute_batch(pragmas).map_err(unavailable)?;
    if !read_only {
        // A build of SQLite without foreign keys ignores the pragma; the runtime plane's
        // rows would then outlive their environment.
        let enforced: bool = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .map_err(unavailable)?;
        if !enforced {
            return Err(StoreError::Unavailable(
                "sqlite: this build does not enforce foreign keys".into(),
            ));
        }
    }
    // Plans that do not depend on bound values. Without it, this SQLite (3.50) marks a
    // statement whose `LIMIT ?` (or a value the planner could look at) is bound anew as
    // expired, and compiles it again on its next step: every page, lease and audit read
    // was parsed and planned on every execution (a tenth of the server's CPU on the
    // runtime bench). Coffer runs no ANALYZE and no LIKE on bound patterns, so the plans
    // are the same ones.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(unavailable)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn migrate(conn: &Connection) -> StoreResult<()> {
    apply_migrations(conn, MIGRATIONS)
}

/// Applies, in order, each of `migrations` not applied yet.
fn apply_migrations(conn: &Connection, migrations: &[Migration]) -> StoreResult<()> {
    conn.execute_batch(BOOKKEEPING).map_err(unavailable)?;
    for m in migrations {
        let applied: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [m.version],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        if applied {
            continue;
        }
        let tx = conn.unchecked_transaction().map_err(unavailable)?;
        tx.execute_batch(&m.sql_for(coffer_store::schema::SEQUENCE_KEY_SQLITE))
            .map_err(unavailable)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, Timestamp::now().millis()],
        )
        .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied catalog migration"
        );
    }
    Ok(())
}

/// A new incarnation of the environment `name`, for this crate's tests.
/// A store in a fresh temp dir with one environment `name` created (keep the dir alive).
#[cfg(test)]
pub(crate) async fn store_with_env(
    name: &str,
) -> (
    tempfile::TempDir,
    std::sync::Arc<SqliteStore>,
    coffer_store::Environment,
) {
    use coffer_store::AccessStore;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = std::sync::Arc::new(SqliteStore::open(dir.path()).expect("open"));
    let env = test_env(name);
    store
        .create_environment(&env, &coffer_store::Actor::System)
        .await
        .expect("env");
    (dir, store, env)
}

/// Holds `writer`'s thread inside a job until the returned sender is sent or dropped.
#[cfg(test)]
pub(crate) fn hold_writer(writer: &writer::Writer) -> std::sync::mpsc::Sender<()> {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let job: writer::Job = Box::new(move |_| {
        entered_tx.send(()).ok();
        released.recv().ok();
        (true, Box::new(|_| {}))
    });
    writer.submit(job).map_err(|(e, _)| e).expect("queued");
    entered.recv().expect("the writer runs the holding job");
    release
}

/// Calls `attempt` until it is not refused with `Overloaded` (a held writer's queue
/// drains in the writer's own time), for at most 10 s.
#[cfg(test)]
pub(crate) async fn retry_while_overloaded<T>(
    mut attempt: impl AsyncFnMut() -> coffer_store::StoreResult<T>,
) -> coffer_store::StoreResult<T> {
    let began = std::time::Instant::now();
    loop {
        match attempt().await {
            Err(coffer_store::StoreError::Overloaded) => {
                assert!(
                    began.elapsed() < std::time::Duration::from_secs(10),
                    "never drained"
                );
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
}

/// Asserts that `rows` (in sequence order, from the first) are one valid hash chain.
#[cfg(test)]
pub(crate) fn assert_chain(rows: &[coffer_store::AuditRecord]) {
    for pair in rows.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "row {}", pair[1].seq);
    }
    for row in rows {
        assert_eq!(row.hash, row.expected_hash(), "row {}", row.seq);
    }
}

/// Waits (up to 10 s) until `n` writes wait in `combiner`.
#[cfg(test)]
pub(crate) async fn wait_queued(combiner: &journal::Combiner, n: usize) {
    let began = std::time::Instant::now();
    while journal::queued(combiner) < n {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(10),
            "not queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
pub(crate) fn test_env(name: &str) -> coffer_store::Environment {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    coffer_store::Environment {
        name: coffer_store::EnvName::new(name).expect("valid name"),
        id: coffer_store::EnvId::new(&format!("env_{n:016x}")).expect("valid id"),
        created_at: Timestamp::from_millis(1),
    }
}

/// Reads one page of `size` from `rows` (each a row made into a record, or the reason it
/// could not be), each weighing `weight`: stops at the first error of either kind, and once
/// the page is full, when SQLite steps the statement no further.
fn read_page<T>(
    size: coffer_store::PageSize,
    rows: impl Iterator<Item = rusqlite::Result<StoreResult<T>>>,
    weight: impl Fn(&T) -> usize,
) -> rusqlite::Result<StoreResult<Vec<T>>> {
    let mut page = coffer_store::PageFill::new(size);
    for row in rows {
        if page.is_full() {
            break;
        }
        let record = match row? {
            Ok(record) => record,
            Err(e) => return Ok(Err(e)),
        };
        let w = weight(&record);
        page.push(record, w);
    }
    Ok(Ok(page.into_rows()))
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

#[cfg(test)]
mod tests {
    /// The catalog epoch learns of changed rows from SQLite's update hook, which is not
    /// told of changes to tables without a rowid; and a trigger could change a catalog row
    /// from a hot table's write. Neither exists, and every hot table does.
    #[test]
    fn the_update_hook_sees_every_catalog_change() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let conn = Connection::open(dir.path().join(DB_FILE)).expect("conn");
        drop(store);
        let tables: Vec<(String, String)> = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()
            })
            .expect("tables");
        for (name, sql) in &tables {
            assert!(
                !sql.to_uppercase().contains("WITHOUT ROWID"),
                "{name} has no rowid"
            );
        }
        for hot in crate::writer::HOT_TABLES {
            assert!(tables.iter().any(|(name, _)| name == hot), "no table {hot}");
        }
        let triggers: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'",
                [],
                |r| r.get(0),
            )
            .expect("triggers");
        assert_eq!(triggers, 0, "a trigger");
    }

    use std::sync::Arc;

    use super::*;

    async fn fresh() -> (Arc<SqliteStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open store");
        (Arc::new(store), dir)
    }

    coffer_store::secret_store_conformance!(fresh());
    coffer_store::catalog_conformance!(fresh());
    coffer_store::config_store_conformance!(fresh());
    coffer_store::unreadable_marks_conformance!(fresh());
    coffer_store::runtime_conformance!(fresh());
    coffer_store::orchestration_conformance!(fresh());

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_lives_on() {
        use coffer_store::AccessStore;
        let (store, _dir) = fresh().await;
        let panicked = store
            .writer
            .write(|c| -> StoreResult<()> {
                c.execute("INSERT INTO settings (name, value) VALUES ('x', 'y')", [])
                    .map_err(unavailable)?;
                panic!("a bug in a write job")
            })
            .await;
        assert!(
            matches!(&panicked, Err(StoreError::Unavailable(m)) if m.contains("internal error")),
            "{panicked:?}"
        );
        AccessStore::ping(&*store)
            .await
            .expect("the writer still answers");
        let rolled_back: i64 = store
            .read(|c| {
                c.query_row("SELECT COUNT(*) FROM settings WHERE name = 'x'", [], |r| {
                    r.get(0)
                })
            })
            .expect("count");
        assert_eq!(
            rolled_back, 0,
            "the panicking job's changes were rolled back"
        );
    }

    /// The checkpoint thread copies the log into the database without anyone asking, below
    /// the 1,000 pages at which a commit would do it itself.
    #[tokio::test]
    async fn the_log_reaches_the_database_off_the_writer_thread() {
        let (store, dir) = fresh().await;
        let db = dir.path().join(DB_FILE);
        let size = || std::fs::metadata(&db).expect("coffer.db").len();
        let before = size();
        // 2 MB in new rows: 500 pages, under SQLite's default checkpoint mark of 1,000.
        store
            .writer
            .write(|c| {
                for i in 0..200 {
                    c.execute(
                        "INSERT INTO settings (name, value) VALUES (?1, ?2)",
                        params![format!("filler-{i}"), "x".repeat(10_000)],
                    )
                    .map_err(unavailable)?;
                }
                Ok(())
            })
            .await
            .expect("write");
        // Generous: a loaded machine's disk can stall a flush for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while size() < before + 2_000_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "coffer.db grew from {before} to {} bytes only: the log was not copied",
                size()
            );
            tokio::time::sleep(checkpointer::INTERVAL / 5).await;
        }
    }

    /// The truncating checkpoint (after dev mode's migration, at shutdown) succeeds while
    /// the checkpoint thread copies: SQLite would give up at once on a taken checkpoint
    /// lock.
    #[tokio::test]
    async fn truncating_the_log_waits_for_the_checkpoint_thread() {
        let (store, dir) = fresh().await;
        for round in 0..50u64 {
            store
                .writer
                .write(move |c| {
                    for i in 0..100 {
                        c.execute(
                            "INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)",
                            params![format!("filler-{i}"), format!("{round}").repeat(5_000)],
                        )
                        .map_err(unavailable)?;
                    }
                    Ok(())
                })
                .await
                .expect("write");
            // Land at different points of the thread's period.
            tokio::time::sleep(std::time::Duration::from_millis(round * 7 % 100)).await;
            store
                .checkpoint()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            let wal = std::fs::metadata(dir.path().join("coffer.db-wal")).expect("wal");
            assert_eq!(wal.len(), 0, "round {round}: the log is truncated");
        }
    }

    /// Plaintext that an update or a delete replaced must leave every file once the log is
    /// checkpointed: zeroed in the database by `secure_delete`, gone from the truncated log.
    #[tokio::test]
    async fn a_checkpoint_leaves_no_overwritten_or_deleted_value_in_any_file() {
        use coffer_store::{AccessStore, Precondition, SecretName, SecretStore};
        let (store, dir) = fresh().await;
        let at = Timestamp::from_millis(1);
        let default = crate::test_env("default");
        let env = default.clone();
        let sys = &coffer_store::Actor::System;
        store
            .create_environment(&default, sys)
            .await
            .expect("create");
        let plain = |v: String| coffer_store::StoredValue::Plain(secrecy::SecretString::from(v));
        let old = |i: usize| format!("old-plaintext-{i:03}-{}", "x".repeat(i * 97));
        for i in 0..40 {
            let name = SecretName::new(&format!("S{i}")).expect("name");
            let put = |v| store.put(&env, &name, plain(v), Precondition::None, at, sys);
            put(old(i)).await.expect("put");
            if i % 2 == 0 {
                put(format!("new-{i}")).await.expect("update");
            } else {
                store
                    .delete(&env, &name, Precondition::None, sys)
                    .await
                    .expect("delete");
            }
        }
        store.checkpoint().expect("checkpoint");
        let wal = std::fs::metadata(dir.path().join("coffer.db-wal")).expect("wal");
        assert_eq!(wal.len(), 0, "the log is truncated");
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !bytes.windows(14).any(|w| w == b"old-plaintext-"),
                "{} holds a replaced value",
                path.display()
            );
        }
        let rows = store
            .list(&env, &coffer_store::SecretListing::by_name(None), 100)
            .await
            .expect("list");
        assert_eq!(rows.len(), 20, "the checkpoint changed no row");
    }

    /// A catalog from before incarnations: its environments get `env0_<name>` ids (their
    /// values were sealed naming the environment only), their rows stay theirs, and a row no
    /// environment owns stays invisible.
    #[tokio::test]
    async fn environments_from_before_incarnations_keep_their_values() {
        use coffer_store::{AccessStore, EnvName, SecretName, SecretStore};
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
            configure(&conn, false).expect("configure");
            let before = MIGRATIONS.iter().position(|m| m.version == 5).expect("5");
            apply_migrations(&conn, &MIGRATIONS[..before]).expect("migrate to 4");
            conn.execute_batch(
                "INSERT INTO environments (name, created_at) VALUES ('prod', 1);
                 INSERT INTO secrets (environment, name, value, key_version, revision,
                                      created_at, updated_at)
                 VALUES ('prod', 'A', 'iv:ct:tag', 1, 3, 1, 2),
                        ('gone', 'B', 'iv:ct:tag', 1, 1, 1, 1);",
            )
            .expect("old rows");
        }
        let store = SqliteStore::open(dir.path()).expect("open and migrate");
        let prod = store
            .get_environment(&EnvName::new("prod").expect("name"))
            .await
            .expect("read")
            .expect("kept");
        assert_eq!(prod.id.as_str(), "env0_prod");
        assert!(prod.id.names_environment_only());
        let a = store
            .meta(&prod, &SecretName::new("A").expect("name"))
            .await
            .expect("meta")
            .expect("kept with its environment");
        assert_eq!((a.revision, &a.environment_id), (3, &prod.id));
        let walked = store.scan(None, 10).await.expect("scan");
        assert_eq!(walked.len(), 1, "the orphan row is not walked");
    }

    /// The writer's connection enforces foreign keys: the runtime plane's rows cannot name
    /// an environment incarnation that does not exist, whatever the code that writes them.
    #[tokio::test]
    async fn the_writer_refuses_runtime_rows_of_a_missing_incarnation() {
        use coffer_store::AccessStore;
        let (store, _dir) = fresh().await;
        let prod = crate::test_env("prod");
        store
            .create_environment(&prod, &coffer_store::Actor::System)
            .await
            .expect("env");
        let stale = crate::test_env("prod");
        let refused = store
            .writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO functions (environment, environment_id, id, spec,
                         signing_key_version, signing_value, revision, created_at, updated_at)
                     VALUES ('prod', ?1, 'f', '{}', 0, 's', 1, 1, 1)",
                    [stale.id.as_str()],
                )
                .map(drop)
                .map_err(unavailable)
            })
            .await;
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("FOREIGN KEY")),
            "{refused:?}"
        );
    }

    /// Audit rows written before the `detail` column existed read back without one and keep
    /// their hashes; rows after them chain on.
    #[tokio::test]
    async fn audit_rows_from_before_the_detail_column_still_verify() {
        use coffer_store::journal::GENESIS_HASH;
        use coffer_store::{
            Actor, ActorRef, AuditQuery, AuditRecord, Change, FunctionId, JournalStore, Origin,
            Resolution, RunStore,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let prod = crate::test_env("prod");
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
            configure(&conn, false).expect("configure");
            let before = MIGRATIONS.iter().position(|m| m.version == 7).expect("7");
            apply_migrations(&conn, &MIGRATIONS[..before]).expect("migrate to 6");
            let change = Change::environment_created(&prod);
            let mut row =
                AuditRecord::of_change(&change, &ActorRef::system(), &Origin::default(), None);
            row.chain_after(0, GENESIS_HASH.into());
            conn.execute(
                "INSERT INTO audit_log (seq, at, actor_id, actor_name, action, subject,
                     environment, name, revision, result, status, count, remote, user_agent,
                     event_seq, prev_hash, hash)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, 'allowed', NULL, ?8, NULL, NULL,
                         NULL, ?9, ?10)",
                params![
                    row.at,
                    row.actor.key_id,
                    row.actor.key_name,
                    row.action,
                    row.subject,
                    row.environment,
                    row.name,
                    row.count,
                    row.prev_hash,
                    row.hash
                ],
            )
            .expect("an audit row as version 6 wrote it");
            conn.execute(
                "UPDATE journal_head SET audit_seq = 1, audit_hash = ?1",
                [&row.hash],
            )
            .expect("head");
        }
        let store = SqliteStore::open(dir.path()).expect("open and migrate");
        let resolution = Resolution {
            environment: prod.name.clone(),
            function_id: FunctionId::new("f").expect("id"),
            run_id: None,
            resolved: vec![],
            missing: vec![],
            at: Timestamp::from_millis(2),
        };
        store
            .record_resolutions(&[resolution], &Actor::System)
            .await
            .expect("record");
        let (rows, _) = store
            .audit(&AuditQuery::default(), 10)
            .await
            .expect("audit");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].detail, None);
        assert!(rows[1].detail.is_some());
        assert_eq!(rows[1].prev_hash, rows[0].hash);
        for row in &rows {
            assert_eq!(row.hash, row.expected_hash(), "row {}", row.seq);
        }
    }

    #[test]
    fn reopening_applies_no_migration_twice() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(SqliteStore::open(dir.path()).expect("first open"));
        let store = SqliteStore::open(dir.path()).expect("second open");
        let n: i64 = store
            .read(|c| c.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)))
            .expect("count");
        assert_eq!(n, MIGRATIONS.len() as i64);
    }

    /// SQLite is built as `.cargo/config.toml` says: a writer batch's savepoint journal
    /// stays in memory up to 16 MiB (then spills to a file, so it stays bounded), and no
    /// allocation takes the memory-statistics mutex.
    #[test]
    fn sqlite_is_built_with_the_options_coffer_relies_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let options: Vec<String> = store
            .read(|c| {
                c.prepare("PRAGMA compile_options")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .expect("options");
        for wanted in ["STMTJRNL_SPILL=16777216", "DEFAULT_MEMSTATUS=0"] {
            assert!(options.iter().any(|o| o == wanted), "{wanted}: {options:?}");
        }
    }

    /// Pages, leases and audit reads bind their `LIMIT`: each binding must not compile the
    /// statement again (it did, on every execution, before the planner was told to keep
    /// its plans).
    #[test]
    fn a_statement_bound_anew_is_not_compiled_again() {
        fn recompiles(c: &Connection) -> i64 {
            let mut s = c
                .prepare_cached("SELECT version FROM schema_migrations ORDER BY version LIMIT ?1")
                .expect("prepare");
            for limit in 1..=5 {
                let rows = s.query_map([limit], |r| r.get::<_, i64>(0)).expect("query");
                assert_eq!(rows.count(), limit.min(MIGRATIONS.len()));
            }
            i64::from(s.get_status(rusqlite::StatementStatus::RePrepare))
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        assert_eq!(store.read(|c| Ok(recompiles(c))).expect("reader"), 0);
        let writer = Connection::open(dir.path().join(DB_FILE)).expect("open");
        configure(&writer, false).expect("configure");
        assert_eq!(recompiles(&writer), 0, "the writer's connection");
        let plain = Connection::open(dir.path().join(DB_FILE)).expect("open");
        assert!(
            recompiles(&plain) > 0,
            "SQLite no longer recompiles: drop QPSG?"
        );
    }
}
