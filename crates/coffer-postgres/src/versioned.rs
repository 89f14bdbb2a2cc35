//! Versioned rows — one per (environment, key), with a revision that starts at 1 and goes up
//! by one per write — as `secrets` and `config` keep them. Each write is ONE statement that
//! checks its precondition and writes (PostgreSQL's `INSERT … ON CONFLICT` settles racing
//! inserts and updates itself), so there is nothing between the check and the act, on any
//! number of nodes:
//! - no precondition: an upsert whose update adds one to the stored revision; concurrent
//!   writes each get their own revision;
//! - must be absent: an insert that does nothing on conflict;
//! - must be at revision n: an update `WHERE revision = n` (a racing update makes it wait,
//!   then re-check the new row, which no longer matches).
//!
//! Only a refusal reads again, to report the current revision.
//!
//! A table may also have columns an insert sets and an update keeps (`keep`: a function's
//! incarnation and signing secret), and columns a deletion returns beyond its value
//! columns (`returns`).

use coffer_store::{Precondition, StoreError, StoreResult};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};

use crate::{db, signed, unsigned};

/// A table of versioned rows.
pub(crate) struct Versioned {
    /// The table.
    pub(crate) table: &'static str,
    /// The columns naming the environment a row belongs to (its name, and for secrets its
    /// incarnation); every read and write matches all of them.
    pub(crate) scope: &'static [&'static str],
    /// The column naming the row within its environment.
    pub(crate) key: &'static str,
    /// The unique key an insert conflicts on (the primary key).
    pub(crate) conflict: &'static str,
    /// The columns a write sets, in the order [`Versioned::put`] takes their cells.
    pub(crate) values: &'static [&'static str],
    /// The columns only an insert sets (an update keeps them), in the order
    /// [`Versioned::put`] takes their cells, after the `values` cells.
    pub(crate) keep: &'static [&'static str],
    /// More columns [`Versioned::delete`] and [`Versioned::current_locked`] return, after
    /// `updated_at`.
    pub(crate) returns: &'static [&'static str],
}

/// One value column's content for a write.
pub(crate) enum Cell<'a> {
    Text(&'a str),
    Int(i64),
}

/// What a write left in the row.
pub(crate) struct Written {
    pub(crate) revision: u64,
    pub(crate) created_at: i64,
}

impl Written {
    /// Revision 1 is only ever written by an insert.
    pub(crate) fn created(&self) -> bool {
        self.revision == 1
    }
}

impl Versioned {
    /// Writes `cells` (one per `values` column, then one per `keep` column) into the row
    /// `(scope, key)` if `precondition` holds, in one statement; an update writes the
    /// `values` cells only. Errors: [`StoreError::Conflict`] with the current revision when
    /// it does not hold.
    pub(crate) async fn put(
        &self,
        c: &mut PgConnection,
        scope: &[&str],
        key: &str,
        cells: &[Cell<'_>],
        precondition: Precondition,
        at: i64,
    ) -> StoreResult<Written> {
        let (t, k, target) = (self.table, self.key, self.conflict);
        let n = self.scope.len();
        // $1..$n the scope, $n+1 the key, $n+2 the time, then (an update's) expected
        // revision, then the cells.
        let (key_at, time_at) = (n + 1, n + 2);
        let placeholders = |from: usize, count: usize| {
            (from..from + count)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
        };
        debug_assert_eq!(cells.len(), self.values.len() + self.keep.len());
        let cols = self.values.iter().chain(self.keep).copied();
        let insert = format!(
            "INSERT INTO {t} ({}, {k}, {}, revision, created_at, updated_at)
             VALUES ({}, ${key_at}, {}, 1, ${time_at}, ${time_at})",
            self.scope.join(", "),
            cols.collect::<Vec<_>>().join(", "),
            placeholders(1, n).join(", "),
            placeholders(n + 3, cells.len()).join(", ")
        );
        let (sql, expected, cells) = match precondition {
            Precondition::None => {
                let set: Vec<String> = self
                    .values
                    .iter()
                    .map(|v| format!("{v} = EXCLUDED.{v}"))
                    .collect();
                let sql = format!(
                    "{insert} ON CONFLICT ({target}) DO UPDATE SET {}, revision = {t}.revision + 1,
                     updated_at = EXCLUDED.updated_at RETURNING revision, created_at",
                    set.join(", ")
                );
                (sql, None, cells)
            }
            Precondition::Absent => (
                format!(
                    "{insert} ON CONFLICT ({target}) DO NOTHING RETURNING revision, created_at"
                ),
                None,
                cells,
            ),
            Precondition::Revision(expected) => {
                let set: Vec<String> = self
                    .values
                    .iter()
                    .zip(placeholders(n + 4, self.values.len()))
                    .map(|(v, p)| format!("{v} = {p}"))
                    .collect();
                let sql = format!(
                    "UPDATE {t} SET {}, revision = revision + 1, updated_at = ${time_at}
                     WHERE {} AND {k} = ${key_at} AND revision = ${}
                     RETURNING revision, created_at",
                    set.join(", "),
                    self.scope_matches(),
                    n + 3
                );
                let values = &cells[..self.values.len().min(cells.len())];
                (sql, Some(signed(expected)?), values)
            }
        };
        let mut q = sqlx::query(&sql);
        for s in scope {
            q = q.bind(*s);
        }
        q = q.bind(key).bind(at);
        if let Some(n) = expected {
            q = q.bind(n);
        }
        let row = bind_cells(q, cells)
            .fetch_optional(&mut *c)
            .await
            .map_err(db)?;
        match row {
            Some(r) => Ok(Written {
                revision: unsigned(r.try_get(0).map_err(db)?)?,
                created_at: r.try_get(1).map_err(db)?,
            }),
            None => Err(StoreError::Conflict {
                current: self.revision(c, scope, key).await?,
            }),
        }
    }

    /// `scope_1 = $1 AND … AND scope_n = $n`.
    fn scope_matches(&self) -> String {
        self.scope
            .iter()
            .enumerate()
            .map(|(i, col)| format!("{col} = ${}", i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Binds the scope, then the key.
    fn bind_row<'q>(
        q: Query<'q, Postgres, PgArguments>,
        scope: &[&'q str],
        key: &'q str,
    ) -> Query<'q, Postgres, PgArguments> {
        scope.iter().fold(q, |q, s| q.bind(*s)).bind(key)
    }

    /// Deletes the row if `precondition` holds, in one statement, returning it as it was:
    /// the value columns, then `revision`, `created_at`, `updated_at`, then `returns`.
    /// Errors: [`StoreError::NotFound`], [`StoreError::Conflict`].
    pub(crate) async fn delete(
        &self,
        c: &mut PgConnection,
        scope: &[&str],
        key: &str,
        precondition: Precondition,
    ) -> StoreResult<PgRow> {
        let (t, k, n) = (self.table, self.key, self.scope.len());
        let expected = match precondition {
            Precondition::None => None,
            // Revisions start at 1: an existing row never matches, as `Absent` requires.
            Precondition::Absent => Some(0),
            Precondition::Revision(n) => Some(signed(n)?),
        };
        let sql = format!(
            "DELETE FROM {t} WHERE {} AND {k} = ${} AND (${}::bigint IS NULL OR revision = ${})
             RETURNING {}",
            self.scope_matches(),
            n + 1,
            n + 2,
            n + 2,
            self.row_columns()
        );
        let row = Self::bind_row(sqlx::query(&sql), scope, key)
            .bind(expected)
            .fetch_optional(&mut *c)
            .await
            .map_err(db)?;
        match row {
            Some(r) => Ok(r),
            None => match self.revision(c, scope, key).await? {
                None => Err(StoreError::NotFound),
                current => Err(StoreError::Conflict { current }),
            },
        }
    }

    /// The row as it is (value columns, then `revision`, `created_at`, `updated_at`, then
    /// `returns`), locked until the transaction ends so a check made on it still holds at
    /// the commit.
    pub(crate) async fn current_locked(
        &self,
        c: &mut PgConnection,
        scope: &[&str],
        key: &str,
    ) -> StoreResult<Option<PgRow>> {
        let (t, k) = (self.table, self.key);
        let sql = format!(
            "SELECT {} FROM {t} WHERE {} AND {k} = ${} FOR SHARE",
            self.row_columns(),
            self.scope_matches(),
            self.scope.len() + 1
        );
        Self::bind_row(sqlx::query(&sql), scope, key)
            .fetch_optional(&mut *c)
            .await
            .map_err(db)
    }

    /// What a deletion or a locked read returns: the value columns, `revision`,
    /// `created_at`, `updated_at`, then `returns` (a table's other reads may select the same).
    pub(crate) fn row_columns(&self) -> String {
        let fixed = ["revision", "created_at", "updated_at"];
        let all: Vec<&str> = self
            .values
            .iter()
            .copied()
            .chain(fixed)
            .chain(self.returns.iter().copied())
            .collect();
        all.join(", ")
    }

    /// The row's current revision, if it exists.
    pub(crate) async fn revision(
        &self,
        c: &mut PgConnection,
        scope: &[&str],
        key: &str,
    ) -> StoreResult<Option<u64>> {
        let (t, k) = (self.table, self.key);
        let sql = format!(
            "SELECT revision FROM {t} WHERE {} AND {k} = ${}",
            self.scope_matches(),
            self.scope.len() + 1
        );
        let rev: Option<i64> = scope
            .iter()
            .fold(sqlx::query_scalar(&sql), |q, s| q.bind(*s))
            .bind(key)
            .fetch_optional(&mut *c)
            .await
            .map_err(db)?;
        rev.map(unsigned).transpose()
    }
}

fn bind_cells<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    cells: &[Cell<'q>],
) -> Query<'q, Postgres, PgArguments> {
    for cell in cells {
        q = match cell {
            Cell::Text(s) => q.bind(*s),
            Cell::Int(n) => q.bind(*n),
        };
    }
    q
}
