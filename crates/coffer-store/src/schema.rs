//! The embedded catalog's schema ([`MIGRATIONS`], run by `coffer-sqlite`), and the
//! [`Migration`] type every SQL backend lists its own migrations with.
//!
//! PostgreSQL runs a list of its own (`coffer_postgres::schema::MIGRATIONS`), written for it
//! (collations, foreign keys); both describe the same tables and columns, so the stores
//! built on them read and write the same records. Timestamps are milliseconds since the
//! epoch (`BIGINT`). A backend applies, in order, every migration whose version is not yet
//! in `schema_migrations`.

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

/// Stands, in a migration, for a 64-bit integer primary key: [`SEQUENCE_KEY_SQLITE`] (the
/// rowid: appends cost one b-tree). [`Migration::sql_for`] substitutes it.
pub const SEQUENCE_KEY: &str = "SEQUENCE_KEY";

/// SQLite's spelling of [`SEQUENCE_KEY`]: a rowid alias (64-bit).
pub const SEQUENCE_KEY_SQLITE: &str = "INTEGER PRIMARY KEY";

impl Migration {
    /// The migration's SQL with [`SEQUENCE_KEY`] spelled as `sequence_key`.
    pub fn sql_for(&self, sequence_key: &str) -> String {
        self.sql.replace(SEQUENCE_KEY, sequence_key)
    }
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
    Migration {
        version: 5,
        name: "incarnations",
        sql: include_str!("../migrations/0005_incarnations.sql"),
    },
    Migration {
        version: 6,
        name: "unreadable",
        sql: include_str!("../migrations/0006_unreadable.sql"),
    },
    Migration {
        version: 7,
        name: "runtime",
        sql: include_str!("../migrations/0007_runtime.sql"),
    },
    Migration {
        version: 8,
        name: "runs_ended",
        sql: include_str!("../migrations/0008_runs_ended.sql"),
    },
    Migration {
        version: 9,
        name: "orchestrations",
        sql: include_str!("../migrations/0009_orchestrations.sql"),
    },
    Migration {
        version: 10,
        name: "runs_due_by_function",
        sql: include_str!("../migrations/0010_runs_due_by_function.sql"),
    },
];
