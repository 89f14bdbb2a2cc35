//! The catalog schema, shared by every SQL backend.
//!
//! Plain, portable SQL (SQLite and PostgreSQL both run it unchanged): `TEXT`, `BIGINT`,
//! `INTEGER`, composite primary keys, no backend-specific types. Timestamps are milliseconds
//! since the epoch (`BIGINT`). A backend applies, in order, every migration whose version is
//! not yet in `schema_migrations`, each in its own transaction.

/// One step of the schema.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Applied in ascending order; recorded in `schema_migrations`.
    pub version: u32,
    /// A short label.
    pub name: &'static str,
    /// One or more `;`-separated statements.
    pub sql: &'static str,
}

/// Creates the bookkeeping table; run before looking at [`MIGRATIONS`].
pub const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "key_usage",
        sql: include_str!("../migrations/0002_key_usage.sql"),
    },
    Migration {
        version: 3,
        name: "config",
        sql: include_str!("../migrations/0003_config.sql"),
    },
    Migration {
        version: 4,
        name: "journal",
        sql: include_str!("../migrations/0004_journal.sql"),
    },
];
