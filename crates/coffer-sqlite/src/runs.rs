//! `RunStore` on the `runs` and `event_receipts` tables.
//!
//! The writer thread is the file's only writer, so a job that reads and then writes is
//! atomic: a lease selects the due runs and marks them running in one job, and an
//! idempotent send checks its receipt and starts its runs in one job. No run is handed to
//! two holders, no key starts runs twice, without any lock of our own.

use async_trait::async_trait;
use coffer_store::{
    Actor, Change, Claim, Enqueued, EnvId, EnvName, Environment, EventSend, FunctionId,
    IDEMPOTENCY_WINDOW_MS, LeaseQuery, NewRun, OrchestrationRunId, PageSize, Resolution, RunFilter,
    RunId, RunMode, RunOutcome, RunRecord, RunStatus, RunStore, StepLink, StoreError, StoreResult,
    Timestamp, first_share, oldest_of,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::journal::{Author, Head, Reply, Shared, append, append_to, check_actor};
use crate::secrets::check_environment;
use crate::{SqliteStore, corrupt, read_page, unavailable};

/// Most runs one lease takes, whatever the query asks: a lease is one job of the writer,
/// which every other write waits behind.
const MAX_LEASE: usize = 1_000;

/// Most expired idempotency receipts one send deletes: enough to outpace the sends that
/// add them, small enough to cost a send nothing noticeable.
const PRUNE_RECEIPTS: i64 = 100;

#[async_trait]
impl RunStore for SqliteStore {
    async fn enqueue(
        &self,
        env: &Environment,
        event: &EventSend,
        runs: Vec<NewRun>,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Enqueued> {
        let (env, event, actor) = (env.clone(), event.clone(), actor.clone());
        let send = |reply| -> Box<dyn Shared> {
            Box::new(Sending {
                env,
                event,
                runs,
                at,
                actor,
                reply,
            })
        };
        self.combiner.submit(&self.writer, send).await
    }

    async fn get_run(&self, env: &EnvName, id: &RunId) -> StoreResult<Option<RunRecord>> {
        let row = self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM runs WHERE id = ?1 AND environment = ?2"
            ))?
            .query_row(params![id.as_str(), env.as_str()], columns)
            .optional()
        })?;
        row.map(Columns::parse).transpose()
    }

    async fn list_runs(
        &self,
        env: &EnvName,
        filter: &RunFilter,
        after: Option<&RunId>,
        size: PageSize,
    ) -> StoreResult<Vec<RunRecord>> {
        let listing = list_statement(env, filter, after, size.rows);
        self.read(|c| {
            let mut stmt = c.prepare_cached(&listing.sql)?;
            let rows = stmt.query_map(params_from_iter(listing.args), columns)?;
            read_page(
                size,
                rows.map(|row| row.map(Columns::parse)),
                RunRecord::weight,
            )
        })?
    }

    async fn lease(
        &self,
        query: &LeaseQuery,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Vec<RunRecord>> {
        let (query, actor) = (query.clone(), actor.clone());
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                let due = oldest_due(c, &query, at).map_err(unavailable)?;
                let mut take = c
                    .prepare_cached(&format!(
                        "UPDATE runs SET status = 'running', attempts = attempts + 1,
                             lease_expires_at = ?2, updated_at = ?3
                         WHERE id = ?1 RETURNING {COLUMNS}"
                    ))
                    .map_err(unavailable)?;
                let leased = due
                    .into_iter()
                    .map(|id| {
                        take.query_row(
                            params![id, query.lease_until.millis(), at.millis()],
                            columns,
                        )
                        .map_err(unavailable)?
                        .parse()
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                drop(take);
                let changes: Vec<Change> = leased.iter().map(Change::run_changed).collect();
                append(c, &author, &changes)?;
                Ok(leased)
            })
            .await
    }

    async fn due_runs(
        &self,
        query: &LeaseQuery,
        at: Timestamp,
        skip: &[RunId],
    ) -> StoreResult<Vec<RunRecord>> {
        let rows = self.read(|c| {
            // The ids (from covering indexes) past the skipped ones; then only the rows kept.
            let wider = LeaseQuery {
                limit: query.limit.saturating_add(skip.len()).min(MAX_LEASE),
                ..query.clone()
            };
            let skip: std::collections::HashSet<&str> = skip.iter().map(RunId::as_str).collect();
            let due = oldest_due(c, &wider, at)?
                .into_iter()
                .filter(|id| !skip.contains(id.as_str()))
                .take(query.limit);
            let mut one = c.prepare_cached(&format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"))?;
            let mut rows = Vec::with_capacity(query.limit.min(MAX_LEASE));
            for id in due {
                if let Some(row) = one.query_row([id], columns).optional()? {
                    rows.push(row);
                }
            }
            Ok(rows)
        })?;
        rows.into_iter().map(Columns::parse).collect()
    }

    async fn lease_claimed(
        &self,
        claims: Vec<Claim>,
        lease_until: Timestamp,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Vec<RunRecord>> {
        let actor = actor.clone();
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                // Due as `due_statement` says: queued at its next attempt, running once its
                // lease expired.
                let mut take = c
                    .prepare_cached(&format!(
                        "UPDATE runs SET status = 'running', attempts = attempts + 1,
                             lease_expires_at = ?4, updated_at = ?5
                         WHERE id = ?1 AND environment = ?2 AND attempts = ?3
                           AND ((status = 'queued' AND next_attempt_at <= ?5)
                                OR (status = 'running' AND lease_expires_at <= ?5))
                         RETURNING {COLUMNS}"
                    ))
                    .map_err(unavailable)?;
                let (mut leased, mut changes) = (Vec::new(), Vec::new());
                for claim in claims {
                    let row = take
                        .query_row(
                            params![
                                claim.id.as_str(),
                                claim.environment.as_str(),
                                claim.attempts,
                                lease_until.millis(),
                                at.millis()
                            ],
                            columns,
                        )
                        .optional()
                        .map_err(unavailable)?;
                    let Some(row) = row else { continue };
                    let run = row.parse()?;
                    changes.push(Change::run_changed(&run));
                    if let Some(resolution) = &claim.resolution {
                        changes.push(Change::function_resolved(resolution));
                    }
                    leased.push(run);
                }
                drop(take);
                append(c, &author, &changes)?;
                Ok(leased)
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
        let (env, id) = (env.clone(), id.clone());
        self.writer
            .write(move |c| {
                let extended = c
                    .prepare_cached(
                        "UPDATE runs SET lease_expires_at = ?5
                         WHERE id = ?1 AND environment = ?2 AND status = 'running'
                           AND attempts = ?3 AND lease_expires_at > ?4",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            id.as_str(),
                            env.as_str(),
                            attempt,
                            at.millis(),
                            until.millis()
                        ])
                    })
                    .map_err(unavailable)?;
                if extended == 1 {
                    Ok(())
                } else {
                    Err(lease_refusal(c, &env, &id))
                }
            })
            .await
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
        let end = |reply| -> Box<dyn Shared> {
            Box::new(Ending {
                env,
                id,
                attempt,
                outcome: Some(outcome),
                at,
                actor,
                reply,
            })
        };
        self.combiner.submit(&self.writer, end).await
    }

    async fn record_resolutions(&self, batch: &[Resolution], actor: &Actor) -> StoreResult<()> {
        // Even an empty batch goes through the writer: the caller hands values over only
        // once this has re-checked its actor.
        let changes: Vec<Change> = batch.iter().map(Change::function_resolved).collect();
        self.combiner
            .append(&self.writer, actor.clone(), changes)
            .await
    }

    async fn prune_runs(&self, ended_before: Timestamp, limit: usize) -> StoreResult<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.writer
            .write(move |c| {
                let deleted = c
                    .prepare_cached(
                        "DELETE FROM runs WHERE id IN (
                             SELECT id FROM runs
                             WHERE status IN ('succeeded', 'failed') AND updated_at < ?1
                             ORDER BY updated_at, id LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![ended_before.millis(), limit]))
                    .map_err(unavailable)?;
                let flows = c
                    .prepare_cached(
                        "DELETE FROM orchestration_runs WHERE id IN (
                             SELECT id FROM orchestration_runs
                             WHERE status IN ('succeeded', 'failed', 'rejected')
                                 AND updated_at < ?1
                             ORDER BY updated_at, id LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![ended_before.millis(), limit]))
                    .map_err(unavailable)?;
                let deleted = deleted + flows;
                if deleted > 0 {
                    let change = Change::runs_pruned(deleted as u64, Timestamp::now());
                    append(c, &crate::journal::Author::system(), &[change])?;
                }
                Ok(deleted as u64)
            })
            .await
    }
}

/// An event's send: its receipt (with an idempotency key) and its runs, written by the
/// store's [`Combiner`](crate::journal::Combiner) in one writer job with the other small
/// writes queued meanwhile. Two sends with one key in the same job see each other: the
/// second replays the first.
struct Sending {
    env: Environment,
    event: EventSend,
    runs: Vec<NewRun>,
    at: Timestamp,
    actor: Actor,
    reply: Reply<Enqueued>,
}

impl Shared for Sending {
    fn run(&mut self, c: &Connection, head: &mut Head) -> StoreResult<()> {
        let author = check_actor(c, &self.actor)?;
        check_environment(c, &self.env)?;
        let (env, event, at) = (&self.env, &self.event, self.at);
        if let Some(key) = &event.idempotency_key {
            if let Some(first) = remembered(c, &env.id, key, at)? {
                let runs = runs_of_send(c, &env.id, key, first)?;
                self.reply.set(Enqueued {
                    runs,
                    replayed: true,
                    leased: Vec::new(),
                });
                return Ok(());
            }
            remember(c, &env.id, key, at)?;
        }
        let runs = std::mem::take(&mut self.runs);
        let mut changes = Vec::with_capacity(runs.len() + 1);
        changes.push(Change::event_received(
            &env.name,
            &event.name,
            runs.len() as u64,
            at,
        ));
        let (mut started, mut leased) = (Vec::with_capacity(runs.len()), Vec::new());
        for run in runs {
            let run = insert_run(c, &env.name, &env.id, event, run, at)?;
            changes.push(Change::run_status(
                &env.name,
                &run.id,
                RunStatus::Queued,
                0,
                at,
            ));
            if run.status == RunStatus::Running {
                started.push((run.id.clone(), run.function_id.clone()));
                leased.push(run);
            } else {
                started.push((run.id, run.function_id));
            }
        }
        append_to(c, head, &author, &changes)?;
        // Leased as the send inserted them: by Coffer, as the dispatcher's lease is.
        let leases: Vec<Change> = leased.iter().map(Change::run_changed).collect();
        append_to(c, head, &Author::system(), &leases)?;
        self.reply.set(Enqueued {
            runs: started,
            replayed: false,
            leased,
        });
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: StoreResult<()>) {
        self.reply.send(outcome);
    }
}

/// A run's end: written by the store's [`Combiner`](crate::journal::Combiner) in one writer
/// job with the other small writes queued meanwhile.
struct Ending {
    env: EnvName,
    id: RunId,
    attempt: Option<u32>,
    outcome: Option<RunOutcome>,
    at: Timestamp,
    actor: Actor,
    reply: Reply<RunRecord>,
}

impl Shared for Ending {
    fn run(&mut self, c: &Connection, head: &mut Head) -> StoreResult<()> {
        let author = check_actor(c, &self.actor)?;
        let outcome = self
            .outcome
            .take()
            .ok_or_else(|| StoreError::Unavailable("a run's end was written twice".into()))?;
        // status, output, error, next attempt (unchanged when NULL).
        let (status, output, error, retry_at) = match outcome {
            RunOutcome::Succeeded { output } => (RunStatus::Succeeded, Some(output), None, None),
            RunOutcome::Failed { error } => (RunStatus::Failed, None, Some(error), None),
            RunOutcome::Retry { error, not_before } => (
                RunStatus::Queued,
                None,
                Some(error),
                Some(not_before.millis()),
            ),
        };
        let (env, id) = (&self.env, &self.id);
        let row = c
            .prepare_cached(&format!(
                "UPDATE runs SET status = ?5, output = ?6, error = ?7,
                     next_attempt_at = COALESCE(?8, next_attempt_at),
                     lease_expires_at = NULL, updated_at = ?4
                 WHERE id = ?1 AND environment = ?2 AND status = 'running'
                   AND (?3 IS NULL OR attempts = ?3) AND lease_expires_at > ?4
                 RETURNING {COLUMNS}"
            ))
            .and_then(|mut s| {
                s.query_row(
                    params![
                        id.as_str(),
                        env.as_str(),
                        self.attempt,
                        self.at.millis(),
                        status.as_str(),
                        output,
                        error,
                        retry_at
                    ],
                    columns,
                )
                .optional()
            })
            .map_err(unavailable)?;
        let Some(row) = row else {
            return Err(lease_refusal(c, env, id));
        };
        let run = row.parse()?;
        if let Some(link) = run.step.as_ref().filter(|_| run.status.is_final()) {
            crate::orchestrations::wake_flow(c, &link.flow, self.at)?;
        }
        append_to(c, head, &author, &[Change::run_changed(&run)])?;
        self.reply.set(run);
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: StoreResult<()>) {
        self.reply.send(outcome);
    }
}

const COLUMNS: &str = "id, environment, environment_id, function_id, mode, event_name, \
     event_data, trigger_params, status, attempts, output, error, lease_expires_at, \
     next_attempt_at, created_at, updated_at, flow_id, step_id";

/// [`COLUMNS`] for a listing, which shows neither what started a run nor its parameters:
/// both read as empty text, and SQLite reads no overflow page of theirs.
const LISTED_COLUMNS: &str = "id, environment, environment_id, function_id, mode, event_name, \
     '' AS event_data, '' AS trigger_params, status, attempts, output, error, lease_expires_at, \
     next_attempt_at, created_at, updated_at, flow_id, step_id";

/// Inserts `run` into the incarnation `env_id` of `env`, queued and due at `at` (or
/// leased at `at`: [`NewRun::leased_until`]), as `event` started it (an event's send, or
/// an orchestration step), and returns it.
pub(crate) fn insert_run(
    c: &Connection,
    env: &EnvName,
    env_id: &EnvId,
    event: &EventSend,
    run: NewRun,
    at: Timestamp,
) -> StoreResult<RunRecord> {
    let (flow_id, step_id) = run
        .step
        .as_ref()
        .map(|s| (s.flow.as_str(), s.step.as_str()))
        .unzip();
    let row = c
        .prepare_cached(&format!(
            "INSERT INTO runs (id, environment, environment_id, function_id, mode,
                 event_name, event_data, trigger_params, status, attempts, lease_expires_at,
                 next_attempt_at, idempotency_key, created_at, updated_at, flow_id, step_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
                 CASE WHEN ?13 IS NULL THEN 'queued' ELSE 'running' END,
                 CASE WHEN ?13 IS NULL THEN 0 ELSE 1 END, ?13,
                 ?9, ?10, ?9, ?9, ?11, ?12)
             ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
        ))
        .and_then(|mut s| {
            s.query_row(
                params![
                    run.id.as_str(),
                    env.as_str(),
                    env_id.as_str(),
                    run.function_id.as_str(),
                    run.mode.as_str(),
                    event.name,
                    event.data,
                    run.trigger_params,
                    at.millis(),
                    event.idempotency_key,
                    flow_id,
                    step_id,
                    run.leased_until.map(Timestamp::millis),
                ],
                columns,
            )
            .optional()
        })
        .map_err(unavailable)?;
    // A run id is 64 random bits past its millisecond: taken, it is a bug.
    row.ok_or(StoreError::AlreadyExists)?.parse()
}

/// A `runs` row as read ([`COLUMNS`]), before its names are parsed.
struct Columns {
    id: String,
    environment: String,
    environment_id: String,
    function_id: String,
    mode: String,
    event_name: String,
    event_data: String,
    trigger_params: String,
    status: String,
    attempts: u32,
    output: Option<String>,
    error: Option<String>,
    lease_expires_at: Option<i64>,
    next_attempt_at: i64,
    created_at: i64,
    updated_at: i64,
    step: (Option<String>, Option<String>),
}

fn columns(r: &Row<'_>) -> rusqlite::Result<Columns> {
    Ok(Columns {
        id: r.get(0)?,
        environment: r.get(1)?,
        environment_id: r.get(2)?,
        function_id: r.get(3)?,
        mode: r.get(4)?,
        event_name: r.get(5)?,
        event_data: r.get(6)?,
        trigger_params: r.get(7)?,
        status: r.get(8)?,
        attempts: r.get(9)?,
        output: r.get(10)?,
        error: r.get(11)?,
        lease_expires_at: r.get(12)?,
        next_attempt_at: r.get(13)?,
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
        step: (r.get(16)?, r.get(17)?),
    })
}

impl Columns {
    fn parse(self) -> StoreResult<RunRecord> {
        let step = match self.step {
            (Some(flow), Some(step)) => Some(StepLink {
                flow: OrchestrationRunId::new(&flow).map_err(corrupt)?,
                step,
            }),
            (None, None) => None,
            _ => return Err(corrupt("a run's orchestration step is stored in part")),
        };
        Ok(RunRecord {
            id: RunId::new(&self.id).map_err(corrupt)?,
            environment: EnvName::new(&self.environment).map_err(corrupt)?,
            environment_id: EnvId::new(&self.environment_id).map_err(corrupt)?,
            function_id: FunctionId::new(&self.function_id).map_err(corrupt)?,
            mode: RunMode::parse(&self.mode)
                .ok_or_else(|| corrupt(format!("a run's mode reads {:?}", self.mode)))?,
            event_name: self.event_name,
            event_data: self.event_data,
            trigger_params: self.trigger_params,
            step,
            status: RunStatus::parse(&self.status)
                .ok_or_else(|| corrupt(format!("a run's status reads {:?}", self.status)))?,
            attempts: self.attempts,
            output: self.output,
            error: self.error,
            lease_expires_at: self.lease_expires_at.map(Timestamp::from_millis),
            next_attempt_at: Timestamp::from_millis(self.next_attempt_at),
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
        })
    }
}

/// When the send that `key` names in `env` was accepted, if that was within the window
/// before `at`.
fn remembered(c: &Connection, env: &EnvId, key: &str, at: Timestamp) -> StoreResult<Option<i64>> {
    let seen: Option<i64> = c
        .prepare_cached(
            "SELECT created_at FROM event_receipts
             WHERE environment_id = ?1 AND idempotency_key = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![env.as_str(), key], |r| r.get(0))
                .optional()
        })
        .map_err(unavailable)?;
    Ok(seen.filter(|first| at.millis().saturating_sub(*first) < IDEMPOTENCY_WINDOW_MS))
}

/// The runs the send accepted at `first` with `key` started, in the order it started them.
/// (An older send with the same key, from a window that has passed, started its runs at
/// another time.)
fn runs_of_send(
    c: &Connection,
    env: &EnvId,
    key: &str,
    first: i64,
) -> StoreResult<Vec<(RunId, FunctionId)>> {
    let rows = c
        .prepare_cached(
            "SELECT id, function_id FROM runs
             WHERE environment_id = ?1 AND idempotency_key = ?2 AND created_at = ?3
             ORDER BY rowid",
        )
        .and_then(|mut s| {
            s.query_map(params![env.as_str(), key, first], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|(id, f)| {
            Ok((
                RunId::new(&id).map_err(corrupt)?,
                FunctionId::new(&f).map_err(corrupt)?,
            ))
        })
        .collect()
}

/// Records that `key` was accepted in `env` at `at` (over an expired receipt of it), and
/// deletes a bounded number of receipts that have expired, oldest first.
fn remember(c: &Connection, env: &EnvId, key: &str, at: Timestamp) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO event_receipts (environment_id, idempotency_key, created_at)
         VALUES (?1, ?2, ?3)
         ON CONFLICT (environment_id, idempotency_key) DO UPDATE SET created_at = excluded.created_at",
    )
    .and_then(|mut s| s.execute(params![env.as_str(), key, at.millis()]))
    .map_err(unavailable)?;
    c.prepare_cached(
        "DELETE FROM event_receipts WHERE rowid IN (
             SELECT rowid FROM event_receipts WHERE created_at <= ?1
             ORDER BY created_at LIMIT ?2)",
    )
    .and_then(|mut s| {
        s.execute(params![
            at.millis().saturating_sub(IDEMPOTENCY_WINDOW_MS),
            PRUNE_RECEIPTS
        ])
    })
    .map(drop)
    .map_err(unavailable)
}

/// The ids of up to `query.limit` (at most [`MAX_LEASE`]) runs `query` may take at `at`,
/// queued or with an expired lease, oldest due first.
fn oldest_due(c: &Connection, query: &LeaseQuery, at: Timestamp) -> rusqlite::Result<Vec<String>> {
    fn key((id, due_at): &(String, i64)) -> (i64, &str) {
        (*due_at, id)
    }
    if query.takes_nothing() {
        return Ok(Vec::new());
    }
    let limit = query.limit.min(MAX_LEASE);
    let Some(functions) = query.functions_one_by_one() else {
        let mut reads = Vec::with_capacity(2);
        for status in [RunStatus::Queued, RunStatus::Running] {
            reads.push(due_ids(c, query, status, limit, at)?);
        }
        let due = oldest_of(reads, key, limit, limit).unwrap_or_default();
        return Ok(due.into_iter().map(|(id, _)| id).collect());
    };
    if let Some(due) = due_in_environment(c, query, &functions, limit, at)? {
        return Ok(due);
    }
    // An even share of each function first; each whole when that was not enough.
    let mut per = first_share(limit, functions.len());
    loop {
        let mut reads = Vec::with_capacity(functions.len());
        for function in &functions {
            reads.push(due_of_function(c, query, function, per, at)?);
        }
        if let Some(due) = oldest_of(reads, key, per, limit) {
            return Ok(due.into_iter().map(|(id, _)| id).collect());
        }
        per = limit;
    }
}

/// Up to `limit` runs `query` may take with `status` that are due at `at`, oldest due
/// first, with the time each fell due.
fn due_ids(
    c: &Connection,
    query: &LeaseQuery,
    status: RunStatus,
    limit: usize,
    at: Timestamp,
) -> rusqlite::Result<Vec<(String, i64)>> {
    let due = due_statement(query, status, limit, at);
    c.prepare_cached(&due.sql).and_then(|mut s| {
        s.query_map(params_from_iter(due.args), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
    })
}

/// When an unfinished run is due: a queued one at its next attempt, a running one when its
/// lease ends (the expression `runs_due_in_environment` and `runs_due_by_function` hold,
/// spelled the same). A macro, so that the statements below are constants.
macro_rules! due {
    () => {
        "CASE WHEN status = 'running' THEN lease_expires_at ELSE next_attempt_at END"
    };
}

/// A poll's read of its environment's due runs, in due order ([`due_in_environment`]).
const DUE_IN_ENVIRONMENT: &str = concat!(
    "SELECT id, function_id FROM runs
     WHERE status IN ('queued', 'running') AND environment = ?1 AND mode = ?2 AND ",
    due!(),
    " <= ?3 ORDER BY ",
    due!(),
    ", id"
);

/// A poll's read of one function's due runs ([`due_of_function`]).
const DUE_OF_FUNCTION: &str = concat!(
    "SELECT id, ",
    due!(),
    " FROM runs
     WHERE status IN ('queued', 'running') AND environment = ?1 AND function_id = ?2
       AND mode = ?3 AND ",
    due!(),
    " <= ?4 ORDER BY ",
    due!(),
    ", id LIMIT ?5"
);

/// How many due runs of its environment a poll steps over, at most, looking for its
/// functions' before it reads them function by function.
const MAX_STEPPED: usize = 256;

/// The ids of the `limit` oldest runs of `functions` (sorted) that are due at `at` in
/// `query`'s environment and mode, read from the environment's due runs in order (one seek
/// in `runs_due_in_environment`, stepping as far as needed): `None` when
/// [`MAX_STEPPED`] runs of other functions come first.
fn due_in_environment(
    c: &Connection,
    query: &LeaseQuery,
    functions: &[&FunctionId],
    limit: usize,
    at: Timestamp,
) -> rusqlite::Result<Option<Vec<String>>> {
    let env = query.environment.as_ref().map_or("", EnvName::as_str);
    let mut statement = c.prepare_cached(DUE_IN_ENVIRONMENT)?;
    let mut rows = statement.query(params![env, query.mode.as_str(), at.millis()])?;
    let mut due = Vec::new();
    for _ in 0..MAX_STEPPED.max(limit) {
        let Some(row) = rows.next()? else {
            return Ok(Some(due));
        };
        let function = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
        if functions
            .binary_search_by(|f| f.as_str().cmp(function))
            .is_ok()
        {
            due.push(row.get(0)?);
            if due.len() == limit {
                return Ok(Some(due));
            }
        }
    }
    Ok(None)
}

/// Up to `limit` runs of `function` in `query`'s environment and mode that are due at `at`,
/// oldest due first, with the time each fell due: one seek in `runs_due_by_function`.
fn due_of_function(
    c: &Connection,
    query: &LeaseQuery,
    function: &FunctionId,
    limit: usize,
    at: Timestamp,
) -> rusqlite::Result<Vec<(String, i64)>> {
    let env = query.environment.as_ref().map_or("", EnvName::as_str);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let args = params![
        env,
        function.as_str(),
        query.mode.as_str(),
        at.millis(),
        limit
    ];
    c.prepare_cached(DUE_OF_FUNCTION)?
        .query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// A statement with only the conditions it needs, numbering its parameters as they come:
/// SQLite plans each shape once (the statement cache), each on the index that fits it.
struct Statement {
    sql: String,
    args: Vec<Value>,
}

impl Statement {
    /// Adds ` AND condition`, whose one `?` stands for `value`.
    fn and(&mut self, condition: &str, value: Value) {
        self.args.push(value);
        let n = self.args.len();
        self.sql.push_str(" AND ");
        self.sql
            .push_str(&condition.replacen('?', &format!("?{n}"), 1));
    }

    fn order_and_limit(mut self, order: &str, limit: usize) -> Self {
        self.args
            .push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        self.sql
            .push_str(&format!(" ORDER BY {order} LIMIT ?{}", self.args.len()));
        self
    }
}

/// [`RunStore::list_runs`]: walks `runs_environment`, `runs_function` or `runs_status`
/// (whichever leads with its equalities) in id order, so a page costs its own rows however
/// deep it is.
fn list_statement(
    env: &EnvName,
    filter: &RunFilter,
    after: Option<&RunId>,
    limit: usize,
) -> Statement {
    let mut s = Statement {
        sql: format!("SELECT {LISTED_COLUMNS} FROM runs WHERE environment = ?1"),
        args: vec![Value::Text(env.as_str().to_owned())],
    };
    let text = |v: &str| Value::Text(v.to_owned());
    if let Some(f) = &filter.function {
        s.and("function_id = ?", text(f.as_str()));
    }
    if let Some(status) = filter.status {
        s.and("status = ?", text(status.as_str()));
    }
    if let Some(after) = after {
        s.and("id < ?", text(after.as_str()));
    }
    s.order_and_limit("id DESC", limit)
}

/// The runs with `status` that `query` may take at `at`, oldest due first, from the
/// partial index of that status (`runs_queued` or `runs_leased`): the push dispatcher's
/// read. A pull worker's poll reads function by function instead ([`due_of_function`]).
fn due_statement(query: &LeaseQuery, status: RunStatus, limit: usize, at: Timestamp) -> Statement {
    let due = match status {
        RunStatus::Queued => "next_attempt_at",
        _ => "lease_expires_at",
    };
    // The status is a literal so that SQLite matches the partial index's condition.
    let mut s = Statement {
        sql: format!(
            "SELECT id, {due} FROM runs WHERE status = '{}' AND mode = ?1 AND {due} <= ?2",
            status.as_str()
        ),
        args: vec![
            Value::Text(query.mode.as_str().to_owned()),
            Value::Integer(at.millis()),
        ],
    };
    if let Some(env) = &query.environment {
        s.and("environment = ?", Value::Text(env.as_str().to_owned()));
    }
    if let Some(functions) = &query.functions {
        // A JSON array, so one statement serves any number of functions. Function ids are
        // `[a-z0-9_-]`: nothing in them needs escaping.
        let ids: Vec<String> = functions.iter().map(|f| format!("\"{f}\"")).collect();
        s.and(
            "function_id IN (SELECT value FROM json_each(?))",
            Value::Text(format!("[{}]", ids.join(","))),
        );
    }
    s.order_and_limit(due, limit)
}

/// Why a conditional write on a run's lease changed nothing: the run is not in `env`
/// ([`StoreError::NotFound`]), or the attempt no longer holds it ([`StoreError::LeaseLost`]).
fn lease_refusal(c: &Connection, env: &EnvName, id: &RunId) -> StoreError {
    let exists = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND environment = ?2)")
        .and_then(|mut s| s.query_row(params![id.as_str(), env.as_str()], |r| r.get(0)));
    match exists {
        Ok(true) => StoreError::LeaseLost,
        Ok(false) => StoreError::NotFound,
        Err(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use coffer_store::AccessStore;

    use super::*;
    use crate::test_env;

    fn open() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        (store, dir)
    }

    fn send(key: &str) -> EventSend {
        EventSend {
            name: "order.created".into(),
            data: "{}".into(),
            idempotency_key: Some(key.into()),
        }
    }

    fn receipts(store: &SqliteStore) -> Vec<String> {
        store
            .read(|c| {
                c.prepare("SELECT idempotency_key FROM event_receipts ORDER BY created_at")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .expect("receipts")
    }

    /// Every shape of lease and of listing walks an index that fits it, in the order it
    /// returns rows: no scan of the table, no sort, so its cost is the rows it returns.
    #[test]
    fn leases_and_listings_walk_an_index_in_their_order() {
        let (store, _dir) = open();
        let env = EnvName::new("prod").expect("name");
        let f = FunctionId::new("f").expect("id");
        let run = RunId::generate(Timestamp::from_millis(1)).expect("id");
        let mut cases = Vec::new();
        for (environment, functions) in [
            (None, None),
            (Some(env.clone()), None),
            (Some(env.clone()), Some(vec![f.clone()])),
        ] {
            let query = LeaseQuery {
                environment,
                functions,
                mode: RunMode::Pull,
                limit: 10,
                lease_until: Timestamp::from_millis(2),
            };
            for (status, index) in [
                (RunStatus::Queued, "runs_queued"),
                (RunStatus::Running, "runs_leased"),
            ] {
                let at = Timestamp::from_millis(1);
                let due = due_statement(&query, status, 10, at);
                cases.push((due, format!("SEARCH runs USING INDEX {index} (")));
            }
        }
        // What a poll runs: one function at a time, from the covering index.
        let poll = Statement {
            sql: DUE_OF_FUNCTION.to_owned(),
            args: vec![
                Value::Text("prod".into()),
                Value::Text("f".into()),
                Value::Text("pull".into()),
                Value::Integer(1),
                Value::Integer(10),
            ],
        };
        let covering = "SEARCH runs USING COVERING INDEX runs_due_by_function (";
        cases.push((poll, covering.to_owned()));
        let scan = Statement {
            sql: DUE_IN_ENVIRONMENT.to_owned(),
            args: vec![
                Value::Text("prod".into()),
                Value::Text("pull".into()),
                Value::Integer(1),
            ],
        };
        let covering = "SEARCH runs USING COVERING INDEX runs_due_in_environment (";
        cases.push((scan, covering.to_owned()));
        let by_function = RunFilter {
            function: Some(f),
            status: None,
        };
        let by_status = RunFilter {
            function: None,
            status: Some(RunStatus::Failed),
        };
        for (filter, after, index) in [
            (RunFilter::default(), None, "runs_environment"),
            (RunFilter::default(), Some(&run), "runs_environment"),
            (by_function, Some(&run), "runs_function"),
            (by_status, None, "runs_status"),
        ] {
            let listing = list_statement(&env, &filter, after, 10);
            cases.push((listing, format!("SEARCH runs USING INDEX {index} (")));
        }
        for (statement, expected) in cases {
            let plan: Vec<String> = store
                .read(|c| {
                    c.prepare(&format!("EXPLAIN QUERY PLAN {}", statement.sql))?
                        .query_map(params_from_iter(&statement.args), |r| r.get(3))?
                        .collect()
                })
                .expect("plan");
            let plan = plan.join("\n");
            assert!(plan.contains(&expected), "{}\n{plan}", statement.sql);
            assert!(!plan.contains("TEMP B-TREE"), "{}\n{plan}", statement.sql);
        }
    }

    /// A poll's read of due runs costs a bounded amount however long a backlog of another
    /// function in front of its runs: SQLite's virtual machine steps, counted by a progress
    /// handler, do not grow when the backlog doubles (those of a filter over the
    /// environment's queue, as polls read before, do).
    #[tokio::test]
    async fn a_poll_steps_over_a_bounded_part_of_another_functions_backlog() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let (_dir, store, prod) = crate::store_with_env("prod").await;
        let run = |function: &str, ms: i64| NewRun {
            id: RunId::generate(Timestamp::from_millis(ms)).expect("id"),
            function_id: FunctionId::new(function).expect("id"),
            mode: RunMode::Pull,
            trigger_params: "{}".into(),
            step: None,
            leased_until: None,
        };
        let event = EventSend {
            name: "order.created".into(),
            data: "{}".into(),
            idempotency_key: None,
        };
        let query = LeaseQuery {
            environment: Some(prod.name.clone()),
            functions: Some(vec![FunctionId::new("a").expect("id")]),
            mode: RunMode::Pull,
            limit: 4,
            lease_until: Timestamp::from_millis(1_000),
        };
        let now = Timestamp::from_millis(100);
        // Each counted tick is 10 steps of SQLite's virtual machine.
        let counted = |read: &dyn Fn(&Connection) -> rusqlite::Result<usize>| {
            let count = Arc::new(AtomicUsize::new(0));
            let ticks = count.clone();
            let found = store
                .read(|c| {
                    c.progress_handler(
                        10,
                        Some(move || {
                            ticks.fetch_add(1, Ordering::Relaxed);
                            false
                        }),
                    );
                    let found = read(c);
                    c.progress_handler(0, None::<fn() -> bool>);
                    found
                })
                .expect("read");
            (found, count.load(Ordering::Relaxed))
        };
        let at = Timestamp::from_millis(50);
        store
            .enqueue(&prod, &event, vec![run("a", 50)], at, &Actor::System)
            .await
            .expect("a run");
        let mut figures = Vec::new();
        for ms in [5, 6] {
            let backlog: Vec<NewRun> = (0..2_000).map(|_| run("z", ms)).collect();
            let at = Timestamp::from_millis(ms);
            store
                .enqueue(&prod, &event, backlog, at, &Actor::System)
                .await
                .expect("backlog");
            let (found, poll) = counted(&|c| oldest_due(c, &query, now).map(|d| d.len()));
            assert_eq!(found, 1);
            let (found, filtered) =
                counted(&|c| due_ids(c, &query, RunStatus::Queued, 4, now).map(|d| d.len()));
            assert_eq!(found, 1);
            figures.push((poll, filtered));
        }
        let [(poll_2k, filtered_2k), (poll_4k, filtered_4k)] = figures[..] else {
            unreachable!("two rounds");
        };
        assert!(
            filtered_4k > filtered_2k + 1_000,
            "the filter walks the backlog: {filtered_2k} then {filtered_4k} ticks"
        );
        assert!(
            poll_4k <= poll_2k + 5 && poll_2k < filtered_2k / 4,
            "a poll is bounded: {poll_2k} then {poll_4k} ticks (the filter {filtered_2k})"
        );
    }

    /// Expired idempotency keys are pruned by later sends, oldest first and at most
    /// [`PRUNE_RECEIPTS`] per send, so the table holds about one window of keys.
    #[tokio::test]
    async fn sends_prune_a_bounded_number_of_expired_receipts_oldest_first() {
        let (store, _dir) = open();
        let prod = test_env("prod");
        store
            .create_environment(&prod, &Actor::System)
            .await
            .expect("env");
        let id = prod.id.clone();
        store
            .writer
            .write(move |c| {
                for i in 0..250i64 {
                    c.execute(
                        "INSERT INTO event_receipts (environment_id, idempotency_key, created_at)
                         VALUES (?1, ?2, ?3)",
                        params![id.as_str(), format!("old-{i:03}"), 1 + i],
                    )
                    .map_err(unavailable)?;
                }
                Ok(())
            })
            .await
            .expect("old receipts");
        let later = Timestamp::from_millis(251 + IDEMPOTENCY_WINDOW_MS);
        let mut left = Vec::new();
        for key in ["new-1", "new-2", "new-3"] {
            let done = store
                .enqueue(&prod, &send(key), vec![], later, &Actor::System)
                .await
                .expect("send");
            assert!(!done.replayed);
            left.push(receipts(&store));
        }
        assert_eq!(left[0].len(), 150 + 1);
        assert_eq!(left[0][0], "old-100", "the oldest went first");
        assert_eq!(left[1].len(), 50 + 2);
        assert_eq!(left[2], ["new-1", "new-2", "new-3"]);
    }

    /// An environment's idempotency receipts go with it (as its functions and runs do),
    /// by foreign key, in the deleting transaction.
    #[tokio::test]
    async fn an_environment_takes_its_receipts_with_it() {
        let (store, _dir) = open();
        let (prod, staging) = (test_env("prod"), test_env("staging"));
        for e in [&prod, &staging] {
            store
                .create_environment(e, &Actor::System)
                .await
                .expect("env");
            let at = Timestamp::from_millis(5);
            store
                .enqueue(e, &send("k"), vec![], at, &Actor::System)
                .await
                .expect("send");
        }
        store
            .delete_environment(&prod.name, &Actor::System)
            .await
            .expect("delete");
        let left: Vec<String> = store
            .read(|c| {
                c.prepare("SELECT environment_id FROM event_receipts")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .expect("receipts");
        assert_eq!(left, [staging.id.as_str()]);
    }

    /// Runs' ends queued behind a busy writer are written by one job, with resolutions
    /// queued beside them, each with its own outcome: a lost lease, an unknown run and a
    /// revoked key are refused alone, having written nothing; the rest commit, each with
    /// its audit row and event, on one valid chain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_ends_are_written_together_each_with_its_outcome() {
        use coffer_store::{
            AccessStore, ApiKeyId, ApiKeyMeta, ApiKeyRecord, AuditQuery, JournalStore, Role,
        };

        let (_dir, store, prod) = crate::store_with_env("prod").await;
        let key = |id: &str| ApiKeyRecord {
            meta: ApiKeyMeta {
                id: ApiKeyId::new(id).expect("id"),
                name: id.into(),
                role: Role::Runtime(prod.name.clone()),
                created_at: Timestamp::from_millis(1),
            },
            key_hash: format!("hash-{id}"),
        };
        let worker = |id: &str| Actor::Key {
            id: ApiKeyId::new(id).expect("id"),
            environment: Some(prod.name.clone()),
            origin: coffer_store::Origin::default(),
        };
        for id in ["ak_01", "ak_02"] {
            store
                .insert_api_key(&key(id), &Actor::System)
                .await
                .expect("key");
        }
        let runs: Vec<NewRun> = (0..6)
            .map(|n| NewRun {
                id: RunId::generate(Timestamp::from_millis(10 + n)).expect("id"),
                function_id: FunctionId::new("f").expect("id"),
                mode: RunMode::Pull,
                trigger_params: "{}".into(),
                step: None,
                leased_until: None,
            })
            .collect();
        let event = EventSend {
            name: "order.created".into(),
            data: "{}".into(),
            idempotency_key: None,
        };
        let at = Timestamp::from_millis(50);
        store
            .enqueue(&prod, &event, runs, at, &Actor::System)
            .await
            .expect("queued");
        let query = LeaseQuery {
            environment: Some(prod.name.clone()),
            functions: None,
            mode: RunMode::Pull,
            limit: 10,
            lease_until: Timestamp::from_millis(10_000),
        };
        let leased = store
            .lease(&query, at, &worker("ak_01"))
            .await
            .expect("leased");
        assert_eq!(leased.len(), 6);
        store
            .delete_api_key(&ApiKeyId::new("ak_02").expect("id"), &Actor::System)
            .await
            .expect("revoked");
        let (before, _) = store
            .audit(&AuditQuery::default(), 1_000)
            .await
            .expect("audit");

        let release = crate::hold_writer(&store.writer);
        let now = Timestamp::from_millis(100);
        let mut ends = Vec::new();
        for (n, run) in leased.iter().enumerate() {
            let (store, env, id) = (store.clone(), prod.name.clone(), run.id.clone());
            // 1: an attempt that does not hold the lease; 2: a revoked key; 3: succeeded
            // with no attempt named; 4: an unknown run (in another environment); the rest
            // succeed or fail.
            let attempt = match n {
                1 => Some(run.attempts + 1),
                3 => None,
                _ => Some(run.attempts),
            };
            let who = worker(if n == 2 { "ak_02" } else { "ak_01" });
            let env = if n == 4 {
                EnvName::new("staging").expect("name")
            } else {
                env
            };
            let outcome = if n == 5 {
                RunOutcome::Failed { error: "no".into() }
            } else {
                RunOutcome::Succeeded {
                    output: format!("{{\"n\":{n}}}"),
                }
            };
            ends.push(tokio::spawn(async move {
                store.finish(&env, &id, attempt, outcome, now, &who).await
            }));
        }
        let resolved = {
            let store = store.clone();
            let change = Change::function_resolved(&Resolution {
                environment: prod.name.clone(),
                function_id: FunctionId::new("f").expect("id"),
                run_id: None,
                resolved: Vec::new(),
                missing: Vec::new(),
                at: now,
            });
            let who = worker("ak_01");
            tokio::spawn(async move {
                let queue = &store.combiner;
                queue.append(&store.writer, who, vec![change]).await
            })
        };
        crate::wait_queued(&store.combiner, 7).await;
        release.send(()).expect("release");

        let mut outcomes = Vec::new();
        for end in ends {
            outcomes.push(end.await.expect("join"));
        }
        resolved.await.expect("join").expect("resolution appended");
        for (n, outcome) in outcomes.iter().enumerate() {
            match (n, outcome) {
                (1, Err(StoreError::LeaseLost))
                | (2, Err(StoreError::ActorRevoked))
                | (4, Err(StoreError::NotFound)) => {}
                (0 | 3, Ok(run)) => {
                    assert_eq!(run.status, RunStatus::Succeeded);
                    assert_eq!(
                        run.output.as_deref(),
                        Some(format!("{{\"n\":{n}}}").as_str())
                    );
                }
                (5, Ok(run)) => assert_eq!(run.status, RunStatus::Failed),
                other => panic!("end {n}: {other:?}"),
            }
        }
        for (n, run) in leased.iter().enumerate() {
            let stored = store.get_run(&prod.name, &run.id).await.expect("read");
            let stored = stored.expect("run");
            let ended = matches!(n, 0 | 3 | 5);
            assert_eq!(stored.status.is_final(), ended, "run {n}: {stored:?}");
            if !ended {
                assert_eq!(stored.status, RunStatus::Running, "run {n}");
                assert!(stored.output.is_none() && stored.error.is_none());
            }
        }
        let (after, _) = store
            .audit(&AuditQuery::default(), 1_000)
            .await
            .expect("audit");
        let added: Vec<&str> = after[before.len()..]
            .iter()
            .map(|r| r.action.as_str())
            .collect();
        assert_eq!(added.len(), 4, "{added:?}");
        assert_eq!(
            added.iter().filter(|a| **a == "function.resolved").count(),
            1
        );
        crate::assert_chain(&after);
    }

    /// Sends queued behind a busy writer are written by one job, each with its own
    /// outcome: a second send with the first's idempotency key replays the first's runs
    /// (they share the job's transaction), a revoked key and a deleted incarnation are
    /// refused having written nothing, and the runs started are journaled on one chain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_sends_are_written_together_each_with_its_outcome() {
        use coffer_store::{
            AccessStore, ApiKeyId, ApiKeyMeta, ApiKeyRecord, AuditQuery, JournalStore, Role,
        };

        let (_dir, store, prod) = crate::store_with_env("prod").await;
        for id in ["ak_01", "ak_02"] {
            let key = ApiKeyRecord {
                meta: ApiKeyMeta {
                    id: ApiKeyId::new(id).expect("id"),
                    name: id.into(),
                    role: Role::Manage(prod.name.clone()),
                    created_at: Timestamp::from_millis(1),
                },
                key_hash: format!("hash-{id}"),
            };
            store
                .insert_api_key(&key, &Actor::System)
                .await
                .expect("key");
        }
        store
            .delete_api_key(&ApiKeyId::new("ak_02").expect("id"), &Actor::System)
            .await
            .expect("revoked");
        let sender = |id: &str| Actor::Key {
            id: ApiKeyId::new(id).expect("id"),
            environment: Some(prod.name.clone()),
            origin: coffer_store::Origin::default(),
        };
        let runs = |n: i64| -> Vec<NewRun> {
            (0..2)
                .map(|i| NewRun {
                    id: RunId::generate(Timestamp::from_millis(10 * n + i)).expect("id"),
                    function_id: FunctionId::new("f").expect("id"),
                    mode: RunMode::Pull,
                    trigger_params: "{}".into(),
                    step: None,
                    leased_until: None,
                })
                .collect()
        };
        let (before, _) = store
            .audit(&AuditQuery::default(), 1_000)
            .await
            .expect("audit");
        let gone = crate::test_env("prod");
        let at = Timestamp::from_millis(100);
        let release = crate::hold_writer(&store.writer);
        let mut sends = Vec::new();
        let queue_of = store.clone();
        for n in 0..4 {
            let store = store.clone();
            // 0 and 1: one idempotency key; 2: a revoked key; 3: an incarnation that is
            // not the environment's.
            let env = if n == 3 { gone.clone() } else { prod.clone() };
            let who = sender(if n == 2 { "ak_02" } else { "ak_01" });
            let event = EventSend {
                name: "order.created".into(),
                data: "{}".into(),
                idempotency_key: (n < 2).then(|| "k".to_owned()),
            };
            let runs = runs(n);
            sends.push(tokio::spawn(async move {
                store.enqueue(&env, &event, runs, at, &who).await
            }));
            // In this order: the second send must find the first's receipt.
            crate::wait_queued(&queue_of.combiner, n as usize + 1).await;
        }
        release.send(()).expect("release");
        let mut outcomes = Vec::new();
        for send in sends {
            outcomes.push(send.await.expect("join"));
        }
        let first = match &outcomes[0] {
            Ok(done) => {
                assert!(!done.replayed);
                assert_eq!(done.runs.len(), 2);
                done.runs.clone()
            }
            other => panic!("send 0: {other:?}"),
        };
        match &outcomes[1] {
            Ok(done) => assert!(done.replayed && done.runs == first, "{done:?}"),
            other => panic!("send 1: {other:?}"),
        }
        assert!(
            matches!(outcomes[2], Err(StoreError::ActorRevoked)),
            "{:?}",
            outcomes[2]
        );
        assert!(
            matches!(outcomes[3], Err(StoreError::NotFound)),
            "{:?}",
            outcomes[3]
        );
        let stored = store
            .list_runs(&prod.name, &RunFilter::default(), None, PageSize::rows(100))
            .await
            .expect("runs");
        let mut ids: Vec<RunId> = stored.into_iter().map(|r| r.id).collect();
        ids.sort();
        let mut expected: Vec<RunId> = first.into_iter().map(|(id, _)| id).collect();
        expected.sort();
        assert_eq!(ids, expected, "only the first send's runs");
        assert_eq!(receipts(&store), ["k"]);
        let (after, _) = store
            .audit(&AuditQuery::default(), 1_000)
            .await
            .expect("audit");
        // One event received and two runs queued: the first send's, nothing else.
        assert_eq!(after.len() - before.len(), 3);
        crate::assert_chain(&after);
    }
}
