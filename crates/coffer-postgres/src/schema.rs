//! PostgreSQL's own migrations, applied at start-up under an advisory lock.
//!
//! The list is this crate's, not `coffer_store::schema`'s: PostgreSQL runs a schema written
//! for it (collations, foreign keys, BIGINT everywhere) rather than the portable subset the
//! SQLite list keeps to, and the SQL of a backend belongs with the backend.
//! Applied migrations are recorded in `schema_migrations` and never edited afterwards.

use coffer_store::schema::Migration;
use coffer_store::{StoreError, StoreResult, Timestamp};
use sqlx::{Executor, Postgres, Transaction};

use crate::db;

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "catalog",
        sql: include_str!("../migrations/0001_catalog.sql"),
    },
    Migration {
        version: 2,
        name: "runtime",
        sql: include_str!("../migrations/0002_runtime.sql"),
    },
    Migration {
        version: 3,
        name: "runs_ended",
        sql: include_str!("../migrations/0003_runs_ended.sql"),
    },
    Migration {
        version: 4,
        name: "orchestrations",
        sql: include_str!("../migrations/0004_orchestrations.sql"),
    },
];

/// The advisory lock key the migrations run under (`coffer` as ASCII digits): one fixed key,
/// so of several nodes starting at once one migrates and the others wait, then find
/// nothing left to do.
pub const MIGRATION_LOCK: i64 = 0x636f_6666_6572;

/// Migrations may take longer than one request's statement timeout (and waiting for the
/// lock counts as a statement).
const MIGRATION_TIMEOUT: &str = "300s";

const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// The newest migration this binary knows.
fn newest_known() -> u32 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Refuses a database migrated by a newer binary (a version this one does not know): its
/// schema may mean something this code would misread or damage.
fn refuse_newer(applied: &[i64]) -> StoreResult<()> {
    let newest = i64::from(newest_known());
    match applied.iter().copied().max() {
        Some(found) if found > newest => Err(StoreError::Unavailable(format!(
            "postgres: the database schema is at version {found}, newer than this binary \
             knows (version {newest}); run a Coffer release that knows it"
        ))),
        _ => Ok(()),
    }
}

/// Applies every pending migration in one transaction that first takes the migration lock
/// (`pg_advisory_xact_lock`, released by the commit or the rollback, so a node that dies
/// half-way leaves neither the lock nor half a schema). Refuses, changing nothing, a
/// database whose newest applied migration is newer than any this binary knows.
pub(crate) async fn migrate(mut tx: Transaction<'static, Postgres>) -> StoreResult<()> {
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = '{MIGRATION_TIMEOUT}'"
    ))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query(BOOKKEEPING)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
    refuse_newer(&applied)?;
    for m in MIGRATIONS {
        if applied.contains(&i64::from(m.version)) {
            continue;
        }
        // Several statements: the simple-query protocol (a bare `&str`, no arguments).
        Executor::execute(&mut *tx, m.sql).await.map_err(db)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(i64::from(m.version))
        .bind(m.name)
        .bind(Timestamp::now().millis())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied catalog migration"
        );
    }
    tx.commit().await.map_err(db)
}
