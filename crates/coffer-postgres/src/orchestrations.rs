//! `OrchestrationStore` on the `orchestrations` table (versioned rows, see
//! [`crate::versioned`]) and `FlowStore` on `orchestration_runs` (migration 4).
//!
//! The database holds the machine's invariants, on any number of nodes:
//! - a run is leased to one node at a time: one statement picks the due runs
//!   `FOR UPDATE SKIP LOCKED` and sets their lease;
//! - a step of the machine applies once: one conditional `UPDATE … WHERE version = n`, and
//!   the function run it starts is inserted in the same transaction;
//! - a decision lands once, on a run waiting at that step: one conditional `UPDATE`.
//!
//! Lock order (see `journal`): the environment row, the acting key, the orchestration run's
//! row (a lease skips rows others hold and takes no environment row), within a batch that
//! locked the journal head first (see `writer`). [`RunStore::finish`](coffer_store::RunStore::finish) locks a function run's row
//! before its orchestration run's ([`wake_flow`]); nothing locks them the other way round
//! (a step inserts its function run, a new row no one else holds).

use async_trait::async_trait;
use coffer_store::{
    Action, Actor, Change, EnvId, EnvName, Environment, EventSend, FlowAdvance, FlowFilter,
    FlowRecord, FlowStatus, FlowStore, NewFlow, OrchestrationId, OrchestrationPutOutcome,
    OrchestrationRecord, OrchestrationRunId, OrchestrationStore, PageSize, Precondition,
    StepsReplacement, StoreError, StoreResult, Timestamp,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::journal::{append, check_actor, incarnation_scope, lock_environment};
use crate::runs::{insert_runs, queued};
use crate::versioned::{Cell, Versioned};
use crate::writer::Kind;
use crate::{PgStore, close_bounded, corrupt, db, open_bounded, read_page, signed, unsigned};

/// The `orchestrations` table. Every read selects [`Versioned::row_columns`] (`name, steps,
/// revision, created_at, updated_at, environment_id`), the order [`orchestration`] reads.
const ORCHESTRATIONS: Versioned = Versioned {
    table: "orchestrations",
    scope: &["environment"],
    key: "id",
    conflict: "environment, id",
    values: &["name", "steps"],
    keep: &["environment_id"],
    returns: &["environment_id"],
};

/// An orchestration run's columns in the order [`flow`] reads them.
const FLOW_COLUMNS: &str = "id, environment, environment_id, orchestration_id, \
     orchestration_revision, status, current_step, steps, state, params, decision, wake_at, \
     lease_expires_at, version, created_at, updated_at";

#[async_trait]
impl OrchestrationStore for PgStore {
    async fn get_orchestration(
        &self,
        env: &EnvName,
        id: &OrchestrationId,
    ) -> StoreResult<Option<OrchestrationRecord>> {
        let mut c = self.acquire().await?;
        read(&mut c, env, id).await
    }

    async fn list_orchestrations(
        &self,
        env: &EnvName,
        after: Option<&OrchestrationId>,
        size: PageSize,
    ) -> StoreResult<Vec<OrchestrationRecord>> {
        let mut c = self.acquire().await?;
        let columns = format!("{}, id", ORCHESTRATIONS.row_columns());
        let weight = "octet_length(name) + octet_length(steps)";
        let mut sql = open_bounded(&columns, weight, "id");
        sql.push("FROM orchestrations WHERE environment = ")
            .push_bind(env.as_str())
            .push(" AND id > ")
            .push_bind(after.map_or("", OrchestrationId::as_str));
        close_bounded(&mut sql, "id", size);
        let rows = sql.build().fetch(&mut *c);
        let make = |r: &PgRow| {
            let id: String = r.try_get(6).map_err(db)?;
            let id = OrchestrationId::new(&id).map_err(corrupt)?;
            orchestration(env.clone(), id, r)
        };
        read_page(rows, size, make, OrchestrationRecord::weight).await
    }

    async fn put_orchestration(
        &self,
        env: &Environment,
        id: &OrchestrationId,
        name: &str,
        steps: String,
        precondition: Precondition,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<OrchestrationPutOutcome> {
        let (env, id, name, actor) = (env.clone(), id.clone(), name.to_owned(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, id, name, actor) = (&env, &id, &name, &actor);
                let author = incarnation_scope(&mut tx, actor, env).await?;
                let cells = [
                    Cell::Text(name),
                    Cell::Text(&steps),
                    Cell::Text(env.id.as_str()),
                ];
                let written = ORCHESTRATIONS
                    .put(
                        &mut tx,
                        &[env.name.as_str()],
                        id.as_str(),
                        &cells,
                        precondition,
                        at.millis(),
                    )
                    .await?;
                // The row as it now stands; the write holds its lock, so this is what commits.
                let record = read(&mut tx, &env.name, id).await?.ok_or_else(|| {
                    corrupt("postgres: an orchestration vanished under its own write")
                })?;
                let out = OrchestrationPutOutcome {
                    record,
                    created: written.created(),
                };
                append(&mut tx, &author, &[Change::orchestration_written(&out)]);
                tx.keep();
                Ok(out)
            })
        })
        .await
    }

    async fn delete_orchestration(
        &self,
        env: &EnvName,
        id: &OrchestrationId,
        precondition: Precondition,
        actor: &Actor,
    ) -> StoreResult<OrchestrationRecord> {
        let (env, id, actor) = (env.clone(), id.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, id, actor) = (&env, &id, &actor);
                // Step 1, then step 3, as a function's deletion.
                lock_environment(&mut tx, env).await?;
                let author = check_actor(&mut tx, actor).await?;
                let row = ORCHESTRATIONS
                    .delete(&mut tx, &[env.as_str()], id.as_str(), precondition)
                    .await?;
                let gone = orchestration(env.clone(), id.clone(), &row)?;
                let change = Change::orchestration_deleted(&gone, Timestamp::now());
                append(&mut tx, &author, &[change]);
                tx.keep();
                Ok(gone)
            })
        })
        .await
    }

    async fn scan_orchestrations(
        &self,
        after: Option<&(EnvName, OrchestrationId)>,
        limit: usize,
    ) -> StoreResult<Vec<OrchestrationRecord>> {
        let (after_env, after_id) = after.map_or(("", ""), |(e, id)| (e.as_str(), id.as_str()));
        let mut c = self.acquire().await?;
        let rows = sqlx::query(&format!(
            "SELECT {}, id, environment FROM orchestrations WHERE (environment, id) > ($1, $2)
             ORDER BY environment, id LIMIT $3",
            ORCHESTRATIONS.row_columns()
        ))
        .bind(after_env)
        .bind(after_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(6).map_err(db)?;
                let env: String = r.try_get(7).map_err(db)?;
                let id = OrchestrationId::new(&id).map_err(corrupt)?;
                orchestration(EnvName::new(&env).map_err(corrupt)?, id, r)
            })
            .collect()
    }

    async fn replace_orchestration_steps(
        &self,
        batch: Vec<StepsReplacement>,
        actor: &Actor,
    ) -> StoreResult<Vec<bool>> {
        let actor = actor.clone();
        self.write_as(Kind::Alone, move |mut tx| {
            Box::pin(async move {
                let actor = &actor;
                let mut cols = StepsColumns::default();
                for (i, r) in batch.iter().enumerate() {
                    cols.push(i, r)?;
                }
                // Step 1: the environments' rows, in name order, as a signing replacement does.
                let mut names = cols.environment.clone();
                names.sort_unstable();
                names.dedup();
                sqlx::query(
                    "SELECT 1 FROM environments WHERE name = ANY($1) ORDER BY name FOR KEY SHARE",
                )
                .bind(&names)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                // Step 3.
                let author = check_actor(&mut tx, actor).await?;
                // Step 4: the orchestrations' rows, in (environment, id) order, so two batches over
                // the same rows (rewraps on two nodes) never hold them in a cycle.
                sqlx::query(
                    "SELECT 1 FROM orchestrations
                     WHERE (environment, id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
                     ORDER BY environment, id FOR NO KEY UPDATE",
                )
                .bind(&cols.environment)
                .bind(&cols.id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                // One statement for the batch: each replacement applies only to the exact row it
                // was read from (incarnation, revision, stored text); revision and timestamps stay.
                let applied_at: Vec<i64> = sqlx::query_scalar(
                    "UPDATE orchestrations o SET steps = r.new
                     FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                                 $6::text[], $7::text[])
                          AS r(idx, environment, environment_id, id, revision, read, new)
                     WHERE o.environment = r.environment AND o.environment_id = r.environment_id
                       AND o.id = r.id AND o.revision = r.revision AND o.steps = r.read
                     RETURNING r.idx",
                )
                .bind(&cols.index)
                .bind(&cols.environment)
                .bind(&cols.environment_id)
                .bind(&cols.id)
                .bind(&cols.revision)
                .bind(&cols.read)
                .bind(&cols.new)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                let applied = crate::applied_flags(batch.len(), applied_at);
                let stored_anew: u64 = batch
                    .iter()
                    .zip(&applied)
                    .filter(|(_, applied)| **applied)
                    .map(|(r, _)| r.stored_anew)
                    .sum();
                // Step 5, only when something changed.
                if stored_anew > 0 {
                    let change = Change::keys_rewrapped(stored_anew, Timestamp::now());
                    append(&mut tx, &author, &[change]);
                }
                tx.keep();
                Ok(applied)
            })
        })
        .await
    }
}

#[async_trait]
impl FlowStore for PgStore {
    async fn start_flow(
        &self,
        env: &Environment,
        run: NewFlow,
        max_active: u64,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FlowRecord> {
        let (env, actor) = (env.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, actor) = (&env, &actor);
                let author = incarnation_scope(&mut tx, actor, env).await?;
                let active: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM orchestration_runs
                     WHERE environment = $1 AND status IN ('running', 'waiting_approval')",
                )
                .bind(env.name.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                if u64::try_from(active).unwrap_or(u64::MAX) >= max_active {
                    return Err(StoreError::Overloaded);
                }
                let row = sqlx::query(&format!(
                    "INSERT INTO orchestration_runs (id, environment, environment_id, orchestration_id,
                         orchestration_revision, status, current_step, steps, state, params, decision,
                         wake_at, lease_expires_at, version, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8, $9, NULL, $10, NULL, 1, $10, $10)
                     ON CONFLICT DO NOTHING RETURNING {FLOW_COLUMNS}"
                ))
                .bind(run.id.as_str())
                .bind(env.name.as_str())
                .bind(env.id.as_str())
                .bind(run.orchestration_id.as_str())
                .bind(signed(run.orchestration_revision)?)
                .bind(run.current_step.as_deref())
                .bind(&run.steps)
                .bind(&run.state)
                .bind(&run.params)
                .bind(at.millis())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                // An id is 64 random bits past its millisecond: taken, it is a bug.
                let record = flow(&row.ok_or(StoreError::AlreadyExists)?)?;
                let change = Change::flow(Action::FlowStarted, &record);
                append(&mut tx, &author, &[change]);
                tx.keep();
                Ok(record)
            })
        })
        .await
    }

    async fn get_flow(
        &self,
        env: &EnvName,
        id: &OrchestrationRunId,
    ) -> StoreResult<Option<FlowRecord>> {
        let mut c = self.acquire().await?;
        let row = sqlx::query(&format!(
            "SELECT {FLOW_COLUMNS} FROM orchestration_runs WHERE environment = $1 AND id = $2"
        ))
        .bind(env.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
        row.as_ref().map(flow).transpose()
    }

    async fn list_flows(
        &self,
        env: &EnvName,
        filter: &FlowFilter,
        after: Option<&OrchestrationRunId>,
        size: PageSize,
    ) -> StoreResult<Vec<FlowRecord>> {
        let weight = "octet_length(steps) + octet_length(state) + octet_length(params) \
                      + coalesce(octet_length(decision), 0) \
                      + coalesce(octet_length(current_step), 0)";
        let mut sql = open_bounded(FLOW_COLUMNS, weight, "id DESC");
        sql.push("FROM orchestration_runs WHERE environment = ");
        sql.push_bind(env.as_str());
        if let Some(o) = &filter.orchestration {
            sql.push(" AND orchestration_id = ").push_bind(o.as_str());
        }
        if let Some(status) = filter.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(after) = after {
            sql.push(" AND id < ").push_bind(after.as_str());
        }
        close_bounded(&mut sql, "id DESC", size);
        let mut c = self.acquire().await?;
        read_page(sql.build().fetch(&mut *c), size, flow, FlowRecord::weight).await
    }

    async fn lease_flows(
        &self,
        limit: usize,
        lease_until: Timestamp,
        at: Timestamp,
    ) -> StoreResult<Vec<FlowRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.acquire().await?;
        // One statement: the due runs, earliest first, locked as they are picked (a run
        // another transaction holds is skipped; one it leased and committed meanwhile is
        // re-checked against its new row, no longer due, and dropped), and their lease.
        // The `WHERE` repeats the `orchestration_runs_due` index's predicate.
        let rows = sqlx::query(&format!(
            "WITH due AS (
                 SELECT id AS flow_id FROM orchestration_runs
                 WHERE status IN ('running', 'waiting_approval')
                   AND wake_at IS NOT NULL AND wake_at <= $1
                   AND (lease_expires_at IS NULL OR lease_expires_at <= $1)
                 ORDER BY wake_at, id LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             UPDATE orchestration_runs SET lease_expires_at = $3
             FROM due WHERE orchestration_runs.id = due.flow_id
             RETURNING {FLOW_COLUMNS}"
        ))
        .bind(at.millis())
        .bind(limit)
        .bind(lease_until.millis())
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
        let mut leased = rows.iter().map(flow).collect::<StoreResult<Vec<_>>>()?;
        // RETURNING keeps no order: earliest due first, as they were picked.
        leased.sort_by(|a, b| (a.wake_at, &a.id).cmp(&(b.wake_at, &b.id)));
        Ok(leased)
    }

    async fn advance_flow(
        &self,
        env: &EnvName,
        advance: FlowAdvance,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FlowRecord> {
        let (env, actor) = (env.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, actor) = (&env, &actor);
                // Steps 1 and 3, as every write into an environment (a run of a deleted environment
                // went with it: NotFound below).
                lock_environment(&mut tx, env).await?;
                let author = check_actor(&mut tx, actor).await?;
                // Step 4: one conditional statement on the run's version.
                let row = sqlx::query(&format!(
                    "UPDATE orchestration_runs SET status = $4, current_step = $5, state = $6,
                         wake_at = $7, lease_expires_at = NULL,
                         decision = CASE WHEN $8 THEN NULL ELSE decision END,
                         version = version + 1, updated_at = $9
                     WHERE environment = $1 AND id = $2 AND version = $3
                     RETURNING {FLOW_COLUMNS}"
                ))
                .bind(env.as_str())
                .bind(advance.id.as_str())
                .bind(signed(advance.version)?)
                .bind(advance.status.as_str())
                .bind(advance.current_step.as_deref())
                .bind(&advance.state)
                .bind(advance.wake_at.map(Timestamp::millis))
                .bind(advance.take_decision)
                .bind(at.millis())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                let Some(row) = row else {
                    return Err(refusal(&mut tx, env, &advance.id).await?);
                };
                let record = flow(&row)?;
                let mut changes = Vec::with_capacity(2);
                if let Some(start) = advance.start {
                    let event = EventSend {
                        name: start.event_name,
                        data: start.event_data,
                        idempotency_key: None,
                    };
                    let (name, id) = (&record.environment, &record.environment_id);
                    let run = queued(name, id, &event, start.run, at);
                    insert_runs(&mut tx, name, id, &event, std::slice::from_ref(&run), at).await?;
                    changes.push(Change::run_changed(&run));
                }
                if let Some(action) = advance.action {
                    changes.push(Change::flow(action, &record));
                }
                append(&mut tx, &author, &changes);
                tx.keep();
                Ok(record)
            })
        })
        .await
    }

    async fn decide_flow(
        &self,
        env: &EnvName,
        id: &OrchestrationRunId,
        step: &str,
        approved: bool,
        decision: String,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FlowRecord> {
        let (env, id, step, actor) = (env.clone(), id.clone(), step.to_owned(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, id, step, actor) = (&env, &id, &step, &actor);
                lock_environment(&mut tx, env).await?;
                let author = check_actor(&mut tx, actor).await?;
                let row = sqlx::query(&format!(
                    "UPDATE orchestration_runs SET decision = $4, wake_at = $5, lease_expires_at = NULL,
                         version = version + 1, updated_at = $5
                     WHERE environment = $1 AND id = $2 AND status = 'waiting_approval'
                       AND current_step = $3 AND decision IS NULL
                     RETURNING {FLOW_COLUMNS}"
                ))
                .bind(env.as_str())
                .bind(id.as_str())
                .bind(step)
                .bind(&decision)
                .bind(at.millis())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                let Some(row) = row else {
                    return Err(refusal(&mut tx, env, id).await?);
                };
                let record = flow(&row)?;
                let action = if approved {
                    Action::FlowApproved
                } else {
                    Action::FlowRejected
                };
                append(&mut tx, &author, &[Change::flow(action, &record)]);
                tx.keep();
                Ok(record)
            })
        })
        .await
    }
}

/// Makes the orchestration run `flow` due at `at` if it has not ended, in
/// [`RunStore::finish`](coffer_store::RunStore::finish)'s transaction (after the function
/// run's row, before the journal head). The version goes up, so a node that took a step on
/// what it read before (the function run still going) finds its write refused instead of
/// putting the run back to sleep.
pub(crate) async fn wake_flow(
    c: &mut PgConnection,
    flow: &OrchestrationRunId,
    at: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE orchestration_runs SET wake_at = $2, lease_expires_at = NULL, version = version + 1, updated_at = $2
         WHERE id = $1 AND status IN ('running', 'waiting_approval')",
    )
    .bind(flow.as_str())
    .bind(at.millis())
    .execute(&mut *c)
    .await
    .map_err(db)?;
    Ok(())
}

/// One batch of [`OrchestrationStore::replace_orchestration_steps`], column by column (for
/// `UNNEST`).
#[derive(Default)]
struct StepsColumns<'a> {
    index: Vec<i64>,
    environment: Vec<&'a str>,
    environment_id: Vec<&'a str>,
    id: Vec<&'a str>,
    revision: Vec<i64>,
    read: Vec<&'a str>,
    new: Vec<&'a str>,
}

impl<'a> StepsColumns<'a> {
    fn push(&mut self, i: usize, r: &'a StepsReplacement) -> StoreResult<()> {
        self.index.push(i64::try_from(i).unwrap_or(i64::MAX));
        self.environment.push(r.environment.as_str());
        self.environment_id.push(r.environment_id.as_str());
        self.id.push(r.id.as_str());
        self.revision.push(signed(r.revision)?);
        self.read.push(&r.read);
        self.new.push(&r.new);
        Ok(())
    }
}

/// One orchestration, or `None`.
async fn read(
    c: &mut PgConnection,
    env: &EnvName,
    id: &OrchestrationId,
) -> StoreResult<Option<OrchestrationRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM orchestrations WHERE environment = $1 AND id = $2",
        ORCHESTRATIONS.row_columns()
    ))
    .bind(env.as_str())
    .bind(id.as_str())
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    row.map(|r| orchestration(env.clone(), id.clone(), &r))
        .transpose()
}

/// An orchestration from [`Versioned::row_columns`] of [`ORCHESTRATIONS`].
fn orchestration(
    environment: EnvName,
    id: OrchestrationId,
    r: &PgRow,
) -> StoreResult<OrchestrationRecord> {
    let environment_id: String = r.try_get(5).map_err(db)?;
    Ok(OrchestrationRecord {
        environment,
        environment_id: EnvId::new(&environment_id).map_err(corrupt)?,
        id,
        name: r.try_get(0).map_err(db)?,
        steps: r.try_get(1).map_err(db)?,
        revision: unsigned(r.try_get(2).map_err(db)?)?,
        created_at: Timestamp::from_millis(r.try_get(3).map_err(db)?),
        updated_at: Timestamp::from_millis(r.try_get(4).map_err(db)?),
    })
}

/// Why a conditional write of an orchestration run changed nothing: it is not in `env`
/// ([`StoreError::NotFound`]), or it moved on ([`StoreError::Conflict`] with its version).
async fn refusal(
    c: &mut PgConnection,
    env: &EnvName,
    id: &OrchestrationRunId,
) -> StoreResult<StoreError> {
    let version: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM orchestration_runs WHERE environment = $1 AND id = $2",
    )
    .bind(env.as_str())
    .bind(id.as_str())
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    Ok(match version {
        Some(v) => StoreError::Conflict {
            current: Some(unsigned(v)?),
        },
        None => StoreError::NotFound,
    })
}

/// An orchestration run from [`FLOW_COLUMNS`].
fn flow(r: &PgRow) -> StoreResult<FlowRecord> {
    let text = |i: usize| -> StoreResult<String> { r.try_get(i).map_err(db) };
    let millis = |i: usize| -> StoreResult<Option<Timestamp>> {
        let ms: Option<i64> = r.try_get(i).map_err(db)?;
        Ok(ms.map(Timestamp::from_millis))
    };
    let number = |i: usize| -> StoreResult<u64> { unsigned(r.try_get(i).map_err(db)?) };
    let at = |i: usize| -> StoreResult<Timestamp> {
        Ok(Timestamp::from_millis(r.try_get(i).map_err(db)?))
    };
    Ok(FlowRecord {
        id: OrchestrationRunId::new(&text(0)?).map_err(corrupt)?,
        environment: EnvName::new(&text(1)?).map_err(corrupt)?,
        environment_id: EnvId::new(&text(2)?).map_err(corrupt)?,
        orchestration_id: OrchestrationId::new(&text(3)?).map_err(corrupt)?,
        orchestration_revision: number(4)?,
        status: FlowStatus::parse(&text(5)?)
            .ok_or_else(|| corrupt("postgres: an orchestration run's status is unknown"))?,
        current_step: r.try_get(6).map_err(db)?,
        steps: text(7)?,
        state: text(8)?,
        params: text(9)?,
        decision: r.try_get(10).map_err(db)?,
        wake_at: millis(11)?,
        lease_expires_at: millis(12)?,
        version: number(13)?,
        created_at: at(14)?,
        updated_at: at(15)?,
    })
}
