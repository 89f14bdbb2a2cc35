//! `RunStore` on the `runs` and `event_receipts` tables.
//!
//! The database holds the queue's invariants, on any number of nodes:
//! - a run's attempt is leased once: one statement picks the due runs
//!   `FOR UPDATE SKIP LOCKED` (rows another lease holds are skipped, rows one committed
//!   meanwhile are re-checked and no longer due) and updates them;
//! - only the attempt that holds a lease extends or finishes it: one conditional `UPDATE`
//!   (`status = 'running' AND attempts = n AND lease_expires_at > now`);
//! - an `Idempotency-Key` starts runs once per incarnation and window: the receipt's
//!   primary key. A racing send (in a later batch, or later in the same one) conflicts
//!   with the first one's receipt and replays its runs.
//!
//! Lock order (see `journal`): the journal head (the batch's), the environment row, the
//! acting key, the receipt and the runs. A lease takes no environment row and never waits
//! for a run (`SKIP LOCKED`); it runs as a write only when a read found a run due.

use async_trait::async_trait;
use coffer_store::{
    Actor, Change, Claim, Enqueued, EnvId, EnvName, Environment, EventSend, FunctionId,
    IDEMPOTENCY_WINDOW_MS, LeaseQuery, NewRun, OrchestrationRunId, PageSize, Resolution, RunFilter,
    RunId, RunMode, RunOutcome, RunRecord, RunStatus, RunStore, StepLink, StoreError, StoreResult,
    Timestamp,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, QueryBuilder, Row};

use crate::journal::Author;
use crate::journal::{
    actor_binds, actor_guard, append, check_actor, guarded_author, incarnation_scope,
};
use crate::writer::{Kind, Tx};
use crate::{PgStore, close_bounded, corrupt, db, open_bounded, read_page};

/// A run's columns in the order [`run`] reads them.
const COLUMNS: &str = "id, environment, environment_id, function_id, mode, event_name, \
     event_data, trigger_params, status, attempts, output, error, lease_expires_at, \
     next_attempt_at, created_at, updated_at, flow_id, step_id";
/// [`COLUMNS`] for a listing, which shows neither what started a run nor its parameters:
/// both read as empty text, and PostgreSQL sends none of theirs.
const LISTED_COLUMNS: &str = "id, environment, environment_id, function_id, mode, event_name, \
     '' AS event_data, '' AS trigger_params, status, attempts, output, error, lease_expires_at, \
     next_attempt_at, created_at, updated_at, flow_id, step_id";
/// [`RunRecord::weight`] of a listed row, in SQL.
const LISTED_WEIGHT: &str = "octet_length(event_name) + coalesce(octet_length(output), 0) + coalesce(octet_length(error), 0)";
/// How many columns [`COLUMNS`] names: what a statement returns after them is at this index.
const COLUMN_COUNT: usize = 18;

/// When an unfinished run is due: a queued one at its next attempt, a running one when its
/// lease expires (the expression the `runs_due` index is built on).
const DUE: &str = "CASE WHEN status = 'running' THEN lease_expires_at ELSE next_attempt_at END";

/// Most expired receipts one send deletes: the table stays bounded by one window's keys
/// (each receipt recorded removes up to this many expired ones) at a bounded cost per send.
pub(crate) const PRUNED_PER_SEND: i64 = 100;

#[async_trait]
impl RunStore for PgStore {
    async fn enqueue(
        &self,
        env: &Environment,
        event: &EventSend,
        runs: Vec<NewRun>,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Enqueued> {
        let (env, event, actor) = (env.clone(), event.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, event, actor) = (&env, &event, &actor);
                let author = incarnation_scope(&mut tx, actor, env).await?;
                if let Some(key) = &event.idempotency_key
                    && let Some(first) = receive(&mut tx, &env.id, key, at).await?
                {
                    // Seen within the window: the first send's runs; not kept, so rolled
                    // back to its savepoint: it writes nothing.
                    return Ok(Enqueued {
                        runs: first,
                        replayed: true,
                        leased: Vec::new(),
                    });
                }
                let records: Vec<RunRecord> = runs
                    .into_iter()
                    .map(|r| queued(&env.name, &env.id, event, r, at))
                    .collect();
                insert_runs(&mut tx, &env.name, &env.id, event, &records, at).await?;
                let count = records.len() as u64;
                let changes: Vec<Change> =
                    std::iter::once(Change::event_received(&env.name, &event.name, count, at))
                        .chain(records.iter().map(|r| {
                            Change::run_status(&env.name, &r.id, RunStatus::Queued, 0, at)
                        }))
                        .collect();
                append(&mut tx, &author, &changes);
                let leased: Vec<RunRecord> = records
                    .iter()
                    .filter(|r| r.status == RunStatus::Running)
                    .cloned()
                    .collect();
                // Leased as the send inserted them: by Coffer, as the dispatcher's lease is.
                let leases: Vec<Change> = leased.iter().map(Change::run_changed).collect();
                append(&mut tx, &Author::system(), &leases);
                tx.keep();
                Ok(Enqueued {
                    runs: records.into_iter().map(|r| (r.id, r.function_id)).collect(),
                    replayed: false,
                    leased,
                })
            })
        })
        .await
    }

    async fn get_run(&self, env: &EnvName, id: &RunId) -> StoreResult<Option<RunRecord>> {
        let mut c = self.acquire().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM runs WHERE environment = $1 AND id = $2"
        ))
        .bind(env.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
        row.as_ref().map(run).transpose()
    }

    async fn list_runs(
        &self,
        env: &EnvName,
        filter: &RunFilter,
        after: Option<&RunId>,
        size: PageSize,
    ) -> StoreResult<Vec<RunRecord>> {
        let mut sql = open_bounded(LISTED_COLUMNS, LISTED_WEIGHT, "id DESC");
        sql.push("FROM runs WHERE environment = ");
        sql.push_bind(env.as_str());
        if let Some(function) = &filter.function {
            sql.push(" AND function_id = ").push_bind(function.as_str());
        }
        if let Some(status) = filter.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(after) = after {
            sql.push(" AND id < ").push_bind(after.as_str());
        }
        close_bounded(&mut sql, "id DESC", size);
        let mut c = self.acquire().await?;
        read_page(sql.build().fetch(&mut *c), size, run, RunRecord::weight).await
    }

    async fn lease(
        &self,
        query: &LeaseQuery,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Vec<RunRecord>> {
        // Polls are frequent and mostly find nothing. A lease is a write (it waits for the
        // journal head, which holds up every node's writes while it runs, and commits), so
        // first a read: nothing due, no write. (A run queued just after this read wakes the
        // poll again.) An actor revoked meanwhile then finds nothing rather than being
        // refused here; its requests are refused at authentication within a second.
        if !self.any_due(query, at).await? {
            return Ok(Vec::new());
        }
        let (query, actor) = (query.clone(), actor.clone());
        // Under a savepoint, unlike `lease_claimed`: the runs it takes were not read before,
        // so one that cannot be read back fails this lease alone, not its whole batch.
        self.write(move |mut tx| {
            Box::pin(async move {
                let (query, actor) = (&query, &actor);
                // Step 3 only. A lease needs no environment row: it creates nothing in one, and it
                // never waits for a run (a deletion's cascade holding one makes it skip it), so a
                // deletion of the environment cannot wait on it in a cycle. Polls are frequent and
                // mostly find nothing: they lock no row they need not.
                let author = check_actor(&mut tx, actor).await?;
                let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
                if query.takes_nothing() {
                    return Ok(Vec::new());
                }
                let mut sql = QueryBuilder::new("");
                push_lease(&mut sql, query, limit, at);
                let rows = sql.build().fetch_all(&mut *tx).await.map_err(db)?;
                let mut leased = rows
                    .iter()
                    .map(|r| {
                        let due: i64 = r.try_get(18).map_err(db)?;
                        Ok((due, run(r)?))
                    })
                    .collect::<StoreResult<Vec<(i64, RunRecord)>>>()?;
                // RETURNING keeps no order: oldest due first, as they were picked.
                leased.sort_by(|(a, x), (b, y)| (a, &x.id).cmp(&(b, &y.id)));
                let leased: Vec<RunRecord> = leased.into_iter().map(|(_, r)| r).collect();
                let changes: Vec<Change> = leased.iter().map(Change::run_changed).collect();
                append(&mut tx, &author, &changes);
                tx.keep();
                Ok(leased)
            })
        })
        .await
    }

    async fn due_runs(
        &self,
        query: &LeaseQuery,
        at: Timestamp,
        skip: &[RunId],
    ) -> StoreResult<Vec<RunRecord>> {
        if query.takes_nothing() {
            return Ok(Vec::new());
        }
        let mut sql = QueryBuilder::new(format!("SELECT {COLUMNS} FROM runs"));
        push_due(&mut sql, query, at);
        if !skip.is_empty() {
            let skip: Vec<&str> = skip.iter().map(RunId::as_str).collect();
            sql.push(" AND NOT (id = ANY(").push_bind(skip).push("))");
        }
        sql.push(format!(" ORDER BY {DUE}, id LIMIT "))
            .push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
        let mut c = self.acquire().await?;
        let rows = sql.build().fetch_all(&mut *c).await.map_err(db)?;
        rows.iter().map(run).collect()
    }

    async fn lease_claimed(
        &self,
        claims: Vec<Claim>,
        lease_until: Timestamp,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Vec<RunRecord>> {
        let actor = actor.clone();
        // Without a savepoint: each claim is one statement that re-checks the acting key
        // (and locks its row) as it leases, so a refused poll has written nothing.
        self.write_as(Kind::Atomic, move |mut tx| {
            Box::pin(async move {
                if claims.is_empty() {
                    check_actor(&mut tx, &actor).await?;
                    tx.keep();
                    return Ok(Vec::new());
                }
                // Like `lease`: no environment row, and a run another transaction holds is
                // skipped (taken), never waited for.
                let sql = format!(
                    "WITH {guard},
                     claimed AS (
                         SELECT id AS run_id FROM runs
                         WHERE id = $1 AND environment = $2 AND attempts = $3
                           AND status IN ('queued', 'running') AND {DUE} <= $5
                           AND (SELECT actor_ok FROM g)
                         FOR UPDATE OF runs SKIP LOCKED),
                     w AS (
                         UPDATE runs SET status = 'running', attempts = attempts + 1,
                             lease_expires_at = $4, updated_at = $5
                         FROM claimed WHERE runs.id = claimed.run_id RETURNING {COLUMNS})
                     SELECT w.*, g.actor_ok, g.key_name FROM g LEFT JOIN w ON true",
                    guard = actor_guard(6, 7, ""),
                );
                let (key_id, key_scope) = actor_binds(&actor);
                let (mut author, mut leased, mut changes) = (None, Vec::new(), Vec::new());
                for claim in &claims {
                    let row = sqlx::query(&sql)
                        .bind(claim.id.as_str())
                        .bind(claim.environment.as_str())
                        .bind(i64::from(claim.attempts))
                        .bind(lease_until.millis())
                        .bind(at.millis())
                        .bind(key_id)
                        .bind(key_scope)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db)?;
                    // The first statement locked the key's row: the answer holds for the rest.
                    let (taken, by) = guarded_change(&mut tx, &actor, &row)?;
                    author.get_or_insert(by);
                    if !taken {
                        continue;
                    }
                    let run = run(&row)?;
                    changes.push(Change::run_changed(&run));
                    if let Some(resolution) = &claim.resolution {
                        changes.push(Change::function_resolved(resolution));
                    }
                    leased.push(run);
                }
                if let Some(author) = author {
                    append(&mut tx, &author, &changes);
                }
                tx.keep();
                Ok(leased)
            })
        })
        .await
    }

    async fn extend_lease(
        &self,
        env: &EnvName,
        id: &RunId,
        attempt: u32,
        until: Timestamp,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut c = self.acquire().await?;
        let extended = sqlx::query(
            "UPDATE runs SET lease_expires_at = $4
             WHERE environment = $1 AND id = $2 AND status = 'running' AND attempts = $3
               AND lease_expires_at > $5",
        )
        .bind(env.as_str())
        .bind(id.as_str())
        .bind(i64::from(attempt))
        .bind(until.millis())
        .bind(at.millis())
        .execute(&mut *c)
        .await
        .map_err(db)?;
        if extended.rows_affected() == 1 {
            Ok(())
        } else {
            Err(refusal(&mut c, env, id).await?)
        }
    }

    async fn finish(
        &self,
        env: &EnvName,
        id: &RunId,
        attempt: Option<u32>,
        outcome: RunOutcome,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<RunRecord> {
        let (env, id, actor) = (env.clone(), id.clone(), actor.clone());
        // Without a savepoint: the environment's lock, the actor's check and the run's end
        // are one statement, which refuses before it writes.
        self.write_as(Kind::Atomic, move |mut tx| {
            Box::pin(async move {
                let (env, id, actor) = (&env, &id, &actor);
                let (status, output, error, not_before) = match outcome {
                    RunOutcome::Succeeded { output } => {
                        (RunStatus::Succeeded, Some(output), None, None)
                    }
                    RunOutcome::Failed { error } => (RunStatus::Failed, None, Some(error), None),
                    RunOutcome::Retry { error, not_before } => {
                        (RunStatus::Queued, None, Some(error), Some(not_before))
                    }
                };
                // Steps 1 and 3, as every write into an environment, in that order (`g`'s
                // columns are read in order): the environment's row, then the key's (a run of
                // a deleted environment went with it: NotFound below). Then one conditional
                // update: only the attempt that holds an unexpired lease ends it. A lease of
                // the same run (its lease expired by the leaser's clock) either committed
                // first, and this re-checks the new row (another attempt), or skips the row
                // this holds.
                let (key_id, key_scope) = actor_binds(actor);
                let row = sqlx::query(&format!(
                    "WITH e AS (SELECT 1 FROM environments WHERE name = $1 FOR KEY SHARE),
                     {guard},
                     w AS (
                         UPDATE runs SET status = $4, output = $5, error = $6,
                             lease_expires_at = NULL,
                             next_attempt_at = COALESCE($7, next_attempt_at), updated_at = $8
                         WHERE environment = $1 AND id = $2 AND status = 'running'
                           AND ($3::bigint IS NULL OR attempts = $3) AND lease_expires_at > $8
                           AND (SELECT actor_ok FROM g)
                         RETURNING {COLUMNS})
                     SELECT w.*, g.actor_ok, g.key_name FROM g LEFT JOIN w ON true",
                    // env_found is read by no one, but it is what runs `e` (and takes its
                    // lock, before the key's).
                    guard = actor_guard(9, 10, "EXISTS (SELECT 1 FROM e) AS env_found"),
                ))
                .bind(env.as_str())
                .bind(id.as_str())
                .bind(attempt.map(i64::from))
                .bind(status.as_str())
                .bind(output)
                .bind(error)
                .bind(not_before.map(Timestamp::millis))
                .bind(at.millis())
                .bind(key_id)
                .bind(key_scope)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                let (ended, author) = guarded_change(&mut tx, actor, &row)?;
                if !ended {
                    return Err(refusal(&mut tx, env, id).await?);
                }
                let record = run(&row)?;
                // Step 4 goes on: the run's row, then its orchestration run's.
                if let Some(link) = record.step.as_ref().filter(|_| record.status.is_final()) {
                    crate::orchestrations::wake_flow(&mut tx, &link.flow, at).await?;
                }
                append(&mut tx, &author, &[Change::run_changed(&record)]);
                tx.keep();
                Ok(record)
            })
        })
        .await
    }

    async fn record_resolutions(&self, batch: &[Resolution], actor: &Actor) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (batch, actor) = (batch.to_vec(), actor.clone());
        // Without a savepoint: the actor's check writes nothing.
        self.write_as(Kind::Atomic, move |mut tx| {
            Box::pin(async move {
                let (batch, actor) = (&batch, &actor);
                // Resolutions of one key come in runs (every `coffer run`, every pull
                // job of a worker): one check of the key per run of them in a batch.
                let author = tx.check_actor_once(actor).await?;
                // Audit only: `function.resolved` publishes no event.
                let changes: Vec<Change> = batch.iter().map(Change::function_resolved).collect();
                append(&mut tx, &author, &changes);
                tx.keep();
                Ok(())
            })
        })
        .await
    }

    async fn prune_runs(&self, ended_before: Timestamp, limit: usize) -> StoreResult<u64> {
        self.write_as(Kind::Alone, move |mut tx| {
            Box::pin(async move {
                // Ended runs are written by nobody: a run another transaction still holds (a
                // deletion's cascade) is skipped.
                let deleted = sqlx::query(
                    "DELETE FROM runs WHERE id IN (
                         SELECT id FROM runs
                         WHERE status IN ('succeeded', 'failed') AND updated_at < $1
                         ORDER BY updated_at, id LIMIT $2
                         FOR UPDATE SKIP LOCKED)",
                )
                .bind(ended_before.millis())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
                let flows = sqlx::query(
                    "DELETE FROM orchestration_runs WHERE id IN (
                         SELECT id FROM orchestration_runs
                         WHERE status IN ('succeeded', 'failed', 'rejected') AND updated_at < $1
                         ORDER BY updated_at, id LIMIT $2
                         FOR UPDATE SKIP LOCKED)",
                )
                .bind(ended_before.millis())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
                let deleted = deleted + flows;
                if deleted == 0 {
                    // Nothing to record: not kept, so rolled back.
                    return Ok(0);
                }
                let change = Change::runs_pruned(deleted, Timestamp::now());
                append(&mut tx, &crate::journal::Author::system(), &[change]);
                tx.keep();
                Ok(deleted)
            })
        })
        .await
    }
}

impl PgStore {
    /// Whether any run `query` may lease at `at` is due (a read: see `lease`).
    async fn any_due(&self, query: &LeaseQuery, at: Timestamp) -> StoreResult<bool> {
        if query.takes_nothing() {
            return Ok(false);
        }
        let mut sql = QueryBuilder::new("SELECT EXISTS (SELECT 1 FROM runs");
        push_due(&mut sql, query, at);
        sql.push(")");
        let mut c = self.acquire().await?;
        let due: bool = sql
            .build_query_scalar()
            .fetch_one(&mut *c)
            .await
            .map_err(db)?;
        Ok(due)
    }
}

/// Pushes the `WHERE` of the runs `query` may lease at `at` onto `sql`.
fn push_due<'a>(sql: &mut QueryBuilder<'a, sqlx::Postgres>, query: &'a LeaseQuery, at: Timestamp) {
    sql.push(" WHERE status IN ('queued', 'running') AND mode = ");
    sql.push_bind(query.mode.as_str());
    sql.push(format!(" AND {DUE} <= ")).push_bind(at.millis());
    if let Some(env) = &query.environment {
        sql.push(" AND environment = ").push_bind(env.as_str());
    }
    if let Some(functions) = &query.functions {
        let ids: Vec<&str> = functions.iter().map(FunctionId::as_str).collect();
        sql.push(" AND function_id = ANY(").push_bind(ids).push(")");
    }
}

/// Pushes the lease statement onto `sql`: the due runs, oldest due first, locked as they
/// are picked, and their update, in one statement. A run another transaction holds is
/// skipped; one it leased and committed meanwhile is re-checked against its new row (no
/// longer due) and dropped. The `WHERE` repeats the `runs_due` index's predicate and
/// expression so the index serves it. Returns the leased runs' [`COLUMNS`], then when each
/// was due.
pub(crate) fn push_lease<'a>(
    sql: &mut QueryBuilder<'a, sqlx::Postgres>,
    query: &'a LeaseQuery,
    limit: i64,
    at: Timestamp,
) {
    sql.push(format!(
        "WITH due AS (
             SELECT id AS run_id, {DUE} AS due_at FROM runs"
    ));
    push_due(sql, query, at);
    sql.push(format!(" ORDER BY {DUE}, id LIMIT "))
        .push_bind(limit)
        .push(
            " FOR UPDATE SKIP LOCKED)
             UPDATE runs SET status = 'running', attempts = attempts + 1, lease_expires_at = ",
        )
        .push_bind(query.lease_until.millis())
        .push(", updated_at = ")
        .push_bind(at.millis())
        .push(format!(
            " FROM due WHERE runs.id = due.run_id RETURNING {COLUMNS}, due.due_at"
        ));
}

/// Records the receipt of `key` in the incarnation `env_id` at `at`, or finds it: `None`
/// when this send is the first within the window (the receipt is recorded, or an expired
/// one replaced, and up to [`PRUNED_PER_SEND`] expired receipts are deleted); otherwise the
/// runs the first send started.
///
/// One statement decides: a key recorded by a transaction still in flight makes this insert
/// wait for it, then conflict with the committed receipt (or insert, if it rolled back).
/// A conflict updates the receipt only if it expired, and locks it either way.
async fn receive(
    c: &mut PgConnection,
    env_id: &EnvId,
    key: &str,
    at: Timestamp,
) -> StoreResult<Option<Vec<(RunId, FunctionId)>>> {
    let expired_by = at.millis().saturating_sub(IDEMPOTENCY_WINDOW_MS);
    let recorded: Option<i64> = sqlx::query_scalar(
        "INSERT INTO event_receipts (environment_id, idempotency_key, created_at)
         VALUES ($1, $2, $3)
         ON CONFLICT (environment_id, idempotency_key) DO UPDATE
             SET created_at = EXCLUDED.created_at
             WHERE event_receipts.created_at <= $4
         RETURNING created_at",
    )
    .bind(env_id.as_str())
    .bind(key)
    .bind(at.millis())
    .bind(expired_by)
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    if recorded.is_some() {
        // Opportunistic and bounded: receipts another send holds are skipped, never
        // waited for.
        sqlx::query(
            "DELETE FROM event_receipts WHERE (environment_id, idempotency_key) IN (
                 SELECT environment_id, idempotency_key FROM event_receipts
                 WHERE created_at <= $1 ORDER BY created_at LIMIT $2
                 FOR UPDATE SKIP LOCKED)",
        )
        .bind(expired_by)
        .bind(PRUNED_PER_SEND)
        .execute(&mut *c)
        .await
        .map_err(db)?;
        return Ok(None);
    }
    // The first send committed before this statement began (the insert waited for it):
    // its runs are visible. Runs of an older, expired use of the key predate the receipt.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.id, r.function_id FROM runs r
         JOIN event_receipts e
           ON e.environment_id = r.environment_id AND e.idempotency_key = r.idempotency_key
         WHERE e.environment_id = $1 AND e.idempotency_key = $2
           AND r.created_at >= e.created_at
         ORDER BY r.id",
    )
    .bind(env_id.as_str())
    .bind(key)
    .fetch_all(&mut *c)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|(run, function)| {
            Ok((
                RunId::new(&run).map_err(corrupt)?,
                FunctionId::new(&function).map_err(corrupt)?,
            ))
        })
        .collect::<StoreResult<_>>()
        .map(Some)
}

/// A run as [`RunStore::enqueue`] starts it in the incarnation `env_id` of `env`: queued,
/// due at `at` (or leased at `at`: [`NewRun::leased_until`]), with `event`'s name and data.
pub(crate) fn queued(
    env: &EnvName,
    env_id: &EnvId,
    event: &EventSend,
    r: NewRun,
    at: Timestamp,
) -> RunRecord {
    RunRecord {
        id: r.id,
        environment: env.clone(),
        environment_id: env_id.clone(),
        function_id: r.function_id,
        mode: r.mode,
        event_name: event.name.clone(),
        event_data: event.data.clone(),
        trigger_params: r.trigger_params,
        step: r.step,
        status: match r.leased_until {
            None => RunStatus::Queued,
            Some(_) => RunStatus::Running,
        },
        attempts: u32::from(r.leased_until.is_some()),
        output: None,
        error: None,
        lease_expires_at: r.leased_until,
        next_attempt_at: at,
        created_at: at,
        updated_at: at,
    }
}

/// Inserts `runs` (all [`queued`], or leased, in the incarnation `env_id` of `env` for `event`) in one
/// statement.
pub(crate) async fn insert_runs(
    c: &mut PgConnection,
    env: &EnvName,
    env_id: &EnvId,
    event: &EventSend,
    runs: &[RunRecord],
    at: Timestamp,
) -> StoreResult<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let mut cols: (Vec<&str>, Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
    let mut links: (Vec<Option<&str>>, Vec<Option<&str>>) = Default::default();
    let mut leases: Vec<Option<i64>> = Vec::with_capacity(runs.len());
    for r in runs {
        cols.0.push(r.id.as_str());
        cols.1.push(r.function_id.as_str());
        cols.2.push(r.mode.as_str());
        cols.3.push(&r.trigger_params);
        links.0.push(r.step.as_ref().map(|s| s.flow.as_str()));
        links.1.push(r.step.as_ref().map(|s| s.step.as_str()));
        leases.push(r.lease_expires_at.map(Timestamp::millis));
    }
    sqlx::query(
        "INSERT INTO runs (id, environment, environment_id, function_id, mode, event_name,
             event_data, trigger_params, status, attempts, lease_expires_at, next_attempt_at,
             idempotency_key, created_at, updated_at, flow_id, step_id)
         SELECT r.id, $5, $6, r.function_id, r.mode, $7, $8, r.trigger_params,
             CASE WHEN r.lease IS NULL THEN 'queued' ELSE 'running' END,
             CASE WHEN r.lease IS NULL THEN 0 ELSE 1 END, r.lease,
             $9, $10, $9, $9, r.flow_id, r.step_id
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $11::text[], $12::text[],
                     $13::bigint[])
              AS r(id, function_id, mode, trigger_params, flow_id, step_id, lease)",
    )
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(env.as_str())
    .bind(env_id.as_str())
    .bind(&event.name)
    .bind(&event.data)
    .bind(at.millis())
    .bind(event.idempotency_key.as_deref())
    .bind(links.0)
    .bind(links.1)
    .bind(leases)
    .execute(&mut *c)
    .await
    .map_err(db)?;
    Ok(())
}

/// Why a conditional write of a run changed nothing: the run is not in `env`
/// ([`StoreError::NotFound`]), or its attempt no longer holds the lease
/// ([`StoreError::LeaseLost`]).
async fn refusal(c: &mut PgConnection, env: &EnvName, id: &RunId) -> StoreResult<StoreError> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM runs WHERE environment = $1 AND id = $2")
            .bind(env.as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *c)
            .await
            .map_err(db)?;
    Ok(match found {
        Some(_) => StoreError::LeaseLost,
        None => StoreError::NotFound,
    })
}

/// A run from [`COLUMNS`].
/// What a statement built on [`actor_guard`] returned (the run's [`COLUMNS`], NULL if it
/// changed none, then `actor_ok` and `key_name`): whether it changed the run — told to the
/// batch at once ([`Tx::wrote`]), before anything else can fail — and the author, or
/// [`StoreError::ActorRevoked`].
fn guarded_change(tx: &mut Tx<'_>, actor: &Actor, row: &PgRow) -> StoreResult<(bool, Author)> {
    let changed = row.try_get::<Option<String>, _>(0).map_err(db)?.is_some();
    if changed {
        tx.wrote();
    }
    let author = guarded_author(
        actor,
        row.try_get(COLUMN_COUNT).map_err(db)?,
        row.try_get(COLUMN_COUNT + 1).map_err(db)?,
    )?;
    Ok((changed, author))
}

fn run(r: &PgRow) -> StoreResult<RunRecord> {
    let text = |i: usize| -> StoreResult<String> { r.try_get(i).map_err(db) };
    let millis = |i: usize| -> StoreResult<Timestamp> {
        Ok(Timestamp::from_millis(r.try_get(i).map_err(db)?))
    };
    let attempts: i64 = r.try_get(9).map_err(db)?;
    let lease: Option<i64> = r.try_get(12).map_err(db)?;
    let link: (Option<String>, Option<String>) =
        (r.try_get(16).map_err(db)?, r.try_get(17).map_err(db)?);
    let step = match link {
        (Some(flow), Some(step)) => Some(StepLink {
            flow: OrchestrationRunId::new(&flow).map_err(corrupt)?,
            step,
        }),
        (None, None) => None,
        _ => {
            return Err(corrupt(
                "postgres: a run's orchestration step is stored in part",
            ));
        }
    };
    Ok(RunRecord {
        id: RunId::new(&text(0)?).map_err(corrupt)?,
        environment: EnvName::new(&text(1)?).map_err(corrupt)?,
        environment_id: EnvId::new(&text(2)?).map_err(corrupt)?,
        function_id: FunctionId::new(&text(3)?).map_err(corrupt)?,
        mode: RunMode::parse(&text(4)?)
            .ok_or_else(|| corrupt("postgres: a run's mode is neither push nor pull"))?,
        event_name: text(5)?,
        event_data: text(6)?,
        trigger_params: text(7)?,
        step,
        status: RunStatus::parse(&text(8)?)
            .ok_or_else(|| corrupt("postgres: a run's status is unknown"))?,
        attempts: u32::try_from(attempts)
            .map_err(|_| corrupt("postgres: a run's attempts are out of range"))?,
        output: r.try_get(10).map_err(db)?,
        error: r.try_get(11).map_err(db)?,
        lease_expires_at: lease.map(Timestamp::from_millis),
        next_attempt_at: millis(13)?,
        created_at: millis(14)?,
        updated_at: millis(15)?,
    })
}
