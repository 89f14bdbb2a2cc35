//! `OrchestrationStore` on the `orchestrations` table and `FlowStore` on
//! `orchestration_runs` (migration 9). Both go with their environment incarnation by
//! foreign key.
//!
//! The writer thread is the file's only writer, so a lease that selects the due runs and
//! marks them leased is one job, and a step of the machine (its conditional update, the
//! function run it starts, its journal rows) is one job: nothing runs between the check
//! and the write.

use async_trait::async_trait;
use coffer_store::{
    Action, Actor, Change, EnvId, EnvName, Environment, EventSend, FlowAdvance, FlowFilter,
    FlowRecord, FlowStatus, FlowStore, NewFlow, OrchestrationId, OrchestrationPutOutcome,
    OrchestrationRecord, OrchestrationRunId, OrchestrationStore, PageSize, Precondition, Revision,
    StepsReplacement, StoreError, StoreResult, Timestamp,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::journal::{append, check_actor};
use crate::runs::insert_run;
use crate::secrets::check_environment;
use crate::{SqliteStore, corrupt, read_page, unavailable};

/// Most runs one lease takes, whatever the caller asks: a lease is one job of the writer,
/// which every other write waits behind.
const MAX_LEASE: usize = 1_000;

#[async_trait]
impl OrchestrationStore for SqliteStore {
    async fn get_orchestration(
        &self,
        env: &EnvName,
        id: &OrchestrationId,
    ) -> StoreResult<Option<OrchestrationRecord>> {
        let row = self.read(|c| current(c, env, id))?;
        row.map(|cols| cols.parse(env)).transpose()
    }

    async fn list_orchestrations(
        &self,
        env: &EnvName,
        after: Option<&OrchestrationId>,
        size: PageSize,
    ) -> StoreResult<Vec<OrchestrationRecord>> {
        let after = after.map_or("", OrchestrationId::as_str);
        let limit = i64::try_from(size.rows).unwrap_or(i64::MAX);
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM orchestrations WHERE environment = ?1 AND id > ?2
                 ORDER BY id LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![env.as_str(), after, limit], columns)?;
            let records = rows.map(|row| row.map(|cols| cols.parse(env)));
            read_page(size, records, OrchestrationRecord::weight)
        })?
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
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                check_environment(c, &env)?;
                let revision = revision_in(c, &env, &id)?;
                if !precondition.admits(revision) {
                    return Err(StoreError::Conflict { current: revision });
                }
                let sql = match revision {
                    Some(_) => format!(
                        "UPDATE orchestrations SET name = ?4, steps = ?5,
                             revision = revision + 1, updated_at = ?6
                         WHERE environment = ?1 AND environment_id = ?2 AND id = ?3
                         RETURNING {COLUMNS}"
                    ),
                    None => format!(
                        "INSERT INTO orchestrations (environment, environment_id, id, name,
                             steps, revision, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)
                         RETURNING {COLUMNS}"
                    ),
                };
                let cols = c
                    .prepare_cached(&sql)
                    .and_then(|mut s| {
                        s.query_row(
                            params![
                                env.name.as_str(),
                                env.id.as_str(),
                                id.as_str(),
                                name,
                                steps,
                                at.millis()
                            ],
                            columns,
                        )
                    })
                    .map_err(unavailable)?;
                let out = OrchestrationPutOutcome {
                    record: cols.parse(&env.name)?,
                    created: revision.is_none(),
                };
                append(c, &author, &[Change::orchestration_written(&out)])?;
                Ok(out)
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
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                let cols = current(c, &env, &id)
                    .map_err(unavailable)?
                    .ok_or(StoreError::NotFound)?;
                if !precondition.admits(Some(cols.revision)) {
                    return Err(StoreError::Conflict {
                        current: Some(cols.revision),
                    });
                }
                c.prepare_cached("DELETE FROM orchestrations WHERE environment = ?1 AND id = ?2")
                    .and_then(|mut s| s.execute(params![env.as_str(), id.as_str()]))
                    .map_err(unavailable)?;
                let gone = cols.parse(&env)?;
                let change = Change::orchestration_deleted(&gone, Timestamp::now());
                append(c, &author, &[change])?;
                Ok(gone)
            })
            .await
    }

    async fn scan_orchestrations(
        &self,
        after: Option<&(EnvName, OrchestrationId)>,
        limit: usize,
    ) -> StoreResult<Vec<OrchestrationRecord>> {
        let (after_env, after_id) = after.map_or((String::new(), String::new()), |(e, id)| {
            (e.as_str().to_owned(), id.as_str().to_owned())
        });
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read_off_thread(move |c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS}, environment FROM orchestrations
                     WHERE (environment, id) > (?1, ?2)
                     ORDER BY environment, id LIMIT ?3"
                ))?;
                let rows = stmt.query_map(params![after_env, after_id, limit], |r| {
                    Ok((columns(r)?, r.get::<_, String>(7)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(cols, env)| cols.parse(&EnvName::new(&env).map_err(corrupt)?))
            .collect()
    }

    async fn replace_orchestration_steps(
        &self,
        batch: Vec<StepsReplacement>,
        actor: &Actor,
    ) -> StoreResult<Vec<bool>> {
        let actor = actor.clone();
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                // Pinned to the exact row read (incarnation, revision, stored text);
                // revision and timestamps stay.
                let mut stmt = c
                    .prepare_cached(
                        "UPDATE orchestrations SET steps = ?6
                         WHERE environment = ?1 AND environment_id = ?2 AND id = ?3
                           AND revision = ?4 AND steps = ?5",
                    )
                    .map_err(unavailable)?;
                let mut stored_anew = 0u64;
                let applied = batch
                    .iter()
                    .map(|r| {
                        let n = stmt
                            .execute(params![
                                r.environment.as_str(),
                                r.environment_id.as_str(),
                                r.id.as_str(),
                                r.revision,
                                r.read,
                                r.new,
                            ])
                            .map_err(unavailable)?;
                        if n == 1 {
                            stored_anew += r.stored_anew;
                        }
                        Ok(n == 1)
                    })
                    .collect::<StoreResult<Vec<bool>>>()?;
                drop(stmt);
                if stored_anew > 0 {
                    let change = Change::keys_rewrapped(stored_anew, Timestamp::now());
                    append(c, &author, &[change])?;
                }
                Ok(applied)
            })
            .await
    }
}

#[async_trait]
impl FlowStore for SqliteStore {
    async fn start_flow(
        &self,
        env: &Environment,
        run: NewFlow,
        max_active: u64,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FlowRecord> {
        let (env, actor) = (env.clone(), actor.clone());
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                check_environment(c, &env)?;
                let active: i64 = c
                    .prepare_cached(
                        "SELECT count(*) FROM orchestration_runs
                         WHERE environment = ?1 AND status IN ('running', 'waiting_approval')",
                    )
                    .and_then(|mut s| s.query_row([env.name.as_str()], |r| r.get(0)))
                    .map_err(unavailable)?;
                if u64::try_from(active).unwrap_or(u64::MAX) >= max_active {
                    return Err(StoreError::Overloaded);
                }
                let row = c
                    .prepare_cached(&format!(
                        "INSERT INTO orchestration_runs (id, environment, environment_id,
                             orchestration_id, orchestration_revision, status, current_step,
                             steps, state, params, decision, wake_at, lease_expires_at,
                             version, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9, NULL, ?10,
                             NULL, 1, ?10, ?10)
                         ON CONFLICT DO NOTHING RETURNING {FLOW_COLUMNS}"
                    ))
                    .and_then(|mut s| {
                        s.query_row(
                            params![
                                run.id.as_str(),
                                env.name.as_str(),
                                env.id.as_str(),
                                run.orchestration_id.as_str(),
                                run.orchestration_revision,
                                run.current_step,
                                run.steps,
                                run.state,
                                run.params,
                                at.millis(),
                            ],
                            flow_columns,
                        )
                        .optional()
                    })
                    .map_err(unavailable)?;
                // An id is 64 random bits past its millisecond: taken, it is a bug.
                let record = row.ok_or(StoreError::AlreadyExists)?.parse()?;
                append(c, &author, &[Change::flow(Action::FlowStarted, &record)])?;
                Ok(record)
            })
            .await
    }

    async fn get_flow(
        &self,
        env: &EnvName,
        id: &OrchestrationRunId,
    ) -> StoreResult<Option<FlowRecord>> {
        let row = self.read(|c| flow_row(c, env, id))?;
        row.map(FlowColumns::parse).transpose()
    }

    async fn list_flows(
        &self,
        env: &EnvName,
        filter: &FlowFilter,
        after: Option<&OrchestrationRunId>,
        size: PageSize,
    ) -> StoreResult<Vec<FlowRecord>> {
        let listing = list_statement(env, filter, after, size.rows);
        self.read(|c| {
            let mut stmt = c.prepare_cached(&listing.sql)?;
            let rows = stmt.query_map(params_from_iter(listing.args), flow_columns)?;
            read_page(
                size,
                rows.map(|row| row.map(FlowColumns::parse)),
                FlowRecord::weight,
            )
        })?
    }

    async fn lease_flows(
        &self,
        limit: usize,
        lease_until: Timestamp,
        at: Timestamp,
    ) -> StoreResult<Vec<FlowRecord>> {
        let limit = i64::try_from(limit.min(MAX_LEASE)).unwrap_or(i64::MAX);
        self.writer
            .write(move |c| {
                // The conditions repeat the `orchestration_runs_due` index's, literally, so
                // SQLite walks it in (wake_at, id) order.
                let mut take = c
                    .prepare_cached(&format!(
                        "UPDATE orchestration_runs SET lease_expires_at = ?3
                         WHERE id IN (
                             SELECT id FROM orchestration_runs
                             WHERE status IN ('running', 'waiting_approval')
                               AND wake_at IS NOT NULL AND wake_at <= ?1
                               AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)
                             ORDER BY wake_at, id LIMIT ?2)
                         RETURNING {FLOW_COLUMNS}"
                    ))
                    .map_err(unavailable)?;
                let rows = take
                    .query_map(
                        params![at.millis(), limit, lease_until.millis()],
                        flow_columns,
                    )
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(unavailable)?;
                let mut leased = rows
                    .into_iter()
                    .map(FlowColumns::parse)
                    .collect::<StoreResult<Vec<_>>>()?;
                // RETURNING keeps no order: earliest due first, as they were picked.
                leased.sort_by(|a, b| (a.wake_at, &a.id).cmp(&(b.wake_at, &b.id)));
                Ok(leased)
            })
            .await
    }

    async fn advance_flow(
        &self,
        env: &EnvName,
        advance: FlowAdvance,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FlowRecord> {
        let (env, actor) = (env.clone(), actor.clone());
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                let row = c
                    .prepare_cached(&format!(
                        "UPDATE orchestration_runs SET status = ?4, current_step = ?5,
                             state = ?6, wake_at = ?7, lease_expires_at = NULL,
                             decision = CASE WHEN ?8 THEN NULL ELSE decision END,
                             version = version + 1, updated_at = ?9
                         WHERE environment = ?1 AND id = ?2 AND version = ?3
                         RETURNING {FLOW_COLUMNS}"
                    ))
                    .and_then(|mut s| {
                        s.query_row(
                            params![
                                env.as_str(),
                                advance.id.as_str(),
                                advance.version,
                                advance.status.as_str(),
                                advance.current_step,
                                advance.state,
                                advance.wake_at.map(Timestamp::millis),
                                advance.take_decision,
                                at.millis(),
                            ],
                            flow_columns,
                        )
                        .optional()
                    })
                    .map_err(unavailable)?;
                let Some(row) = row else {
                    return Err(refusal(c, &env, &advance.id));
                };
                let record = row.parse()?;
                let mut changes = Vec::with_capacity(2);
                if let Some(start) = advance.start {
                    let event = EventSend {
                        name: start.event_name,
                        data: start.event_data,
                        idempotency_key: None,
                    };
                    let env_id = &record.environment_id;
                    let run = insert_run(c, &record.environment, env_id, &event, start.run, at)?;
                    changes.push(Change::run_changed(&run));
                }
                if let Some(action) = advance.action {
                    changes.push(Change::flow(action, &record));
                }
                append(c, &author, &changes)?;
                Ok(record)
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
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                let row = c
                    .prepare_cached(&format!(
                        "UPDATE orchestration_runs SET decision = ?4, wake_at = ?5, lease_expires_at = NULL,
                             version = version + 1, updated_at = ?5
                         WHERE environment = ?1 AND id = ?2 AND status = 'waiting_approval'
                           AND current_step = ?3 AND decision IS NULL
                         RETURNING {FLOW_COLUMNS}"
                    ))
                    .and_then(|mut s| {
                        s.query_row(
                            params![env.as_str(), id.as_str(), step, decision, at.millis()],
                            flow_columns,
                        )
                        .optional()
                    })
                    .map_err(unavailable)?;
                let Some(row) = row else {
                    return Err(refusal(c, &env, &id));
                };
                let record = row.parse()?;
                let action = if approved {
                    Action::FlowApproved
                } else {
                    Action::FlowRejected
                };
                append(c, &author, &[Change::flow(action, &record)])?;
                Ok(record)
            })
            .await
    }
}

/// Makes the orchestration run `flow` due at `at` if it has not ended: a function run one
/// of its steps started has ended ([`coffer_store::RunStore::finish`], in its job). The
/// version goes up, so a node that took a step on what it read before (the run still going)
/// finds its write refused instead of putting the run back to sleep.
pub(crate) fn wake_flow(
    c: &Connection,
    flow: &OrchestrationRunId,
    at: Timestamp,
) -> StoreResult<()> {
    c.prepare_cached(
        "UPDATE orchestration_runs SET wake_at = ?2, lease_expires_at = NULL, version = version + 1, updated_at = ?2
         WHERE id = ?1 AND status IN ('running', 'waiting_approval')",
    )
    .and_then(|mut s| s.execute(params![flow.as_str(), at.millis()]))
    .map(drop)
    .map_err(unavailable)
}

const COLUMNS: &str = "environment_id, id, name, steps, revision, created_at, updated_at";

/// An `orchestrations` row as read ([`COLUMNS`]), before its names are parsed.
struct Columns {
    environment_id: String,
    id: String,
    name: String,
    steps: String,
    revision: Revision,
    created_at: i64,
    updated_at: i64,
}

fn columns(r: &Row<'_>) -> rusqlite::Result<Columns> {
    Ok(Columns {
        environment_id: r.get(0)?,
        id: r.get(1)?,
        name: r.get(2)?,
        steps: r.get(3)?,
        revision: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

impl Columns {
    fn parse(self, environment: &EnvName) -> StoreResult<OrchestrationRecord> {
        Ok(OrchestrationRecord {
            environment: environment.clone(),
            environment_id: EnvId::new(&self.environment_id).map_err(corrupt)?,
            id: OrchestrationId::new(&self.id).map_err(corrupt)?,
            name: self.name,
            steps: self.steps,
            revision: self.revision,
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
        })
    }
}

/// The orchestration `id` of the environment `env` (whichever incarnation holds the name:
/// rows of a deleted one went with it).
fn current(
    c: &Connection,
    env: &EnvName,
    id: &OrchestrationId,
) -> rusqlite::Result<Option<Columns>> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM orchestrations WHERE environment = ?1 AND id = ?2"
    ))?
    .query_row(params![env.as_str(), id.as_str()], columns)
    .optional()
}

/// The revision of the orchestration `id` of the incarnation `env`, if it exists.
fn revision_in(
    c: &Connection,
    env: &Environment,
    id: &OrchestrationId,
) -> StoreResult<Option<Revision>> {
    c.prepare_cached(
        "SELECT revision FROM orchestrations
         WHERE environment = ?1 AND environment_id = ?2 AND id = ?3",
    )
    .and_then(|mut s| {
        s.query_row(
            params![env.name.as_str(), env.id.as_str(), id.as_str()],
            |r| r.get(0),
        )
        .optional()
    })
    .map_err(unavailable)
}

const FLOW_COLUMNS: &str = "id, environment, environment_id, orchestration_id, \
     orchestration_revision, status, current_step, steps, state, params, decision, wake_at, \
     lease_expires_at, version, created_at, updated_at";

/// An `orchestration_runs` row as read ([`FLOW_COLUMNS`]), before its names are parsed.
struct FlowColumns {
    id: String,
    environment: String,
    environment_id: String,
    orchestration_id: String,
    orchestration_revision: Revision,
    status: String,
    current_step: Option<String>,
    steps: String,
    state: String,
    params: String,
    decision: Option<String>,
    wake_at: Option<i64>,
    lease_expires_at: Option<i64>,
    version: u64,
    created_at: i64,
    updated_at: i64,
}

fn flow_columns(r: &Row<'_>) -> rusqlite::Result<FlowColumns> {
    Ok(FlowColumns {
        id: r.get(0)?,
        environment: r.get(1)?,
        environment_id: r.get(2)?,
        orchestration_id: r.get(3)?,
        orchestration_revision: r.get(4)?,
        status: r.get(5)?,
        current_step: r.get(6)?,
        steps: r.get(7)?,
        state: r.get(8)?,
        params: r.get(9)?,
        decision: r.get(10)?,
        wake_at: r.get(11)?,
        lease_expires_at: r.get(12)?,
        version: r.get(13)?,
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
    })
}

impl FlowColumns {
    fn parse(self) -> StoreResult<FlowRecord> {
        Ok(FlowRecord {
            id: OrchestrationRunId::new(&self.id).map_err(corrupt)?,
            environment: EnvName::new(&self.environment).map_err(corrupt)?,
            environment_id: EnvId::new(&self.environment_id).map_err(corrupt)?,
            orchestration_id: OrchestrationId::new(&self.orchestration_id).map_err(corrupt)?,
            orchestration_revision: self.orchestration_revision,
            status: FlowStatus::parse(&self.status).ok_or_else(|| {
                corrupt(format!(
                    "an orchestration run's status reads {:?}",
                    self.status
                ))
            })?,
            current_step: self.current_step,
            steps: self.steps,
            state: self.state,
            params: self.params,
            decision: self.decision,
            wake_at: self.wake_at.map(Timestamp::from_millis),
            lease_expires_at: self.lease_expires_at.map(Timestamp::from_millis),
            version: self.version,
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
        })
    }
}

/// The orchestration run `id` of `env`, as read.
fn flow_row(
    c: &Connection,
    env: &EnvName,
    id: &OrchestrationRunId,
) -> rusqlite::Result<Option<FlowColumns>> {
    c.prepare_cached(&format!(
        "SELECT {FLOW_COLUMNS} FROM orchestration_runs WHERE id = ?1 AND environment = ?2"
    ))?
    .query_row(params![id.as_str(), env.as_str()], flow_columns)
    .optional()
}

/// Why a conditional write of an orchestration run changed nothing: it is not in `env`
/// ([`StoreError::NotFound`]), or it moved on ([`StoreError::Conflict`] with its version).
fn refusal(c: &Connection, env: &EnvName, id: &OrchestrationRunId) -> StoreError {
    match flow_row(c, env, id) {
        Ok(Some(row)) => StoreError::Conflict {
            current: Some(row.version),
        },
        Ok(None) => StoreError::NotFound,
        Err(e) => unavailable(e),
    }
}

/// A listing's statement with only the conditions it needs, so SQLite plans each shape on
/// the index that leads with its equalities (`orchestration_runs_environment`,
/// `…_orchestration`, `…_status`) and walks it in id order.
struct Statement {
    sql: String,
    args: Vec<Value>,
}

/// [`FlowStore::list_flows`]'s statement, newest first.
fn list_statement(
    env: &EnvName,
    filter: &FlowFilter,
    after: Option<&OrchestrationRunId>,
    limit: usize,
) -> Statement {
    let mut s = Statement {
        sql: format!("SELECT {FLOW_COLUMNS} FROM orchestration_runs WHERE environment = ?1"),
        args: vec![Value::Text(env.as_str().to_owned())],
    };
    let mut and = |condition: &str, value: &str| {
        s.args.push(Value::Text(value.to_owned()));
        s.sql
            .push_str(&format!(" AND {condition} ?{}", s.args.len()));
    };
    if let Some(o) = &filter.orchestration {
        and("orchestration_id =", o.as_str());
    }
    if let Some(status) = filter.status {
        and("status =", status.as_str());
    }
    if let Some(after) = after {
        and("id <", after.as_str());
    }
    s.args
        .push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    s.sql
        .push_str(&format!(" ORDER BY id DESC LIMIT ?{}", s.args.len()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every listing shape and the lease walk an index in their order: no scan of the
    /// table, no sort.
    #[test]
    fn leases_and_listings_walk_an_index_in_their_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let env = EnvName::new("prod").expect("name");
        let run = OrchestrationRunId::generate(Timestamp::from_millis(1)).expect("id");
        let by_orchestration = FlowFilter {
            orchestration: Some(OrchestrationId::generate(Timestamp::from_millis(1)).expect("id")),
            status: None,
        };
        let by_status = FlowFilter {
            orchestration: None,
            status: Some(FlowStatus::Failed),
        };
        let mut cases = Vec::new();
        for (filter, after, index) in [
            (
                FlowFilter::default(),
                None,
                "orchestration_runs_environment",
            ),
            (
                FlowFilter::default(),
                Some(&run),
                "orchestration_runs_environment",
            ),
            (
                by_orchestration,
                Some(&run),
                "orchestration_runs_orchestration",
            ),
            (by_status, None, "orchestration_runs_status"),
        ] {
            let s = list_statement(&env, &filter, after, 10);
            cases.push((s.sql, s.args, index));
        }
        cases.push((
            "SELECT id FROM orchestration_runs
             WHERE status IN ('running', 'waiting_approval')
               AND wake_at IS NOT NULL AND wake_at <= ?1
               AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)
             ORDER BY wake_at, id LIMIT ?2"
                .to_owned(),
            vec![Value::Integer(1), Value::Integer(10)],
            "orchestration_runs_due",
        ));
        for (sql, args, index) in cases {
            let plan: Vec<String> = store
                .read(|c| {
                    c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
                        .query_map(params_from_iter(&args), |r| r.get(3))?
                        .collect()
                })
                .expect("plan");
            let plan = plan.join("\n");
            assert!(
                plan.contains(&format!("orchestration_runs USING INDEX {index} (")),
                "{sql}\n{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
        }
    }
}
