//! The journal on PostgreSQL, and the order in which a write takes its locks.
//!
//! Every write runs in its node's next batch (see `writer`): one transaction (READ
//! COMMITTED) that locks the journal head (`FOR UPDATE`) before anything else, so batches run
//! one at a time across the cluster and two of them never wait on each other in a cycle;
//! sequence numbers follow commit order with no gaps. Within the batch each write takes its
//! row locks in this order (each step's reasoning below still holds; the order no longer
//! decides deadlocks):
//! 1. the environment row it writes in (`FOR KEY SHARE`; `FOR UPDATE` to delete it): a
//!    deletion of the environment waits for the write, or the write finds it gone —
//!    [`key_scope`], [`incarnation_scope`];
//! 2. for a revocation of an admin key, every admin key row (`FOR UPDATE`, in id order);
//! 3. the acting key's row (`FOR KEY SHARE`: a revocation waits for the write, or the write
//!    finds the key gone) — [`check_actor`];
//! 4. the rows it changes, a secret's row before its unreadable mark (recording checks locks
//!    every checked secret row `FOR SHARE`, in (environment, name) order, before any mark),
//!    a send's receipt before its runs (a lease locks its runs `SKIP LOCKED`: it never
//!    waits for one, so it takes no environment row);
//! 5. its journal rows — [`append`], into the batch's [`Pending`], written with the batch's
//!    other rows in one statement before its commit ([`write_pending`]).
//!
//! The audit rows are the SQLite store's, row for row: the same [`AuditRecord`], the same
//! canonical form and hash chain, so `coffer audit verify` reads both alike.

use async_trait::async_trait;
use coffer_store::{
    Action, Actor, ActorRef, AuditQuery, AuditRecord, AuditResult, Change, Denial, EnvName,
    Environment, EventRecord, JournalStore, Origin, SecretName, StoreError, StoreResult,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, QueryBuilder, Row};

use crate::writer::{Pending, Tx};
use crate::{EVENTS_CHANNEL, PgStore, db, signed, unsigned};

/// Sequence numbers one `GET /v1/audit` page examines at most (as on SQLite).
const MAX_EXAMINED: u64 = 10_000;

/// The actor of a write as its audit rows name it, read in the writing transaction.
#[derive(Clone, Debug)]
pub(crate) struct Author {
    actor: ActorRef,
    origin: Origin,
}

impl Author {
    /// The acting key's name as the writing transaction read it (`None`: Coffer itself).
    pub(crate) fn key_name(&self) -> Option<String> {
        self.actor.key_name.clone()
    }

    pub(crate) fn system() -> Self {
        Author {
            actor: ActorRef::system(),
            origin: Origin::default(),
        }
    }

    /// `actor` as its audit rows name it, given the key's name as the writing transaction
    /// read it (the caller checked that the key exists with its scope).
    pub(crate) fn of(actor: &Actor, key_name: Option<String>) -> Self {
        match actor {
            Actor::System => Author::system(),
            Actor::Key { id, origin, .. } => Author {
                actor: ActorRef {
                    key_id: Some(id.to_string()),
                    key_name,
                },
                origin: origin.clone(),
            },
        }
    }
}

/// [`check_actor`] as common table expressions, for a write that is one statement: `k`
/// locks the acting key's row (`FOR KEY SHARE`), `g.actor_ok` says whether it still exists
/// with the scope its request was authorized for (always, for Coffer itself), `g.key_name`
/// is its name. `$key` and `$scope` are the parameters [`actor_binds`] gives. The statement
/// must reference `g` (an unreferenced CTE is not run, and its lock not taken).
///
/// `first`, if not empty, is a column of `g` read before the key's (`g`'s columns are
/// evaluated in order): a write into an environment passes `EXISTS (SELECT 1 FROM e) AS
/// env_found`, so the environment's row is locked before the key's, as every write does.
pub(crate) fn actor_guard(key: usize, scope: usize, first: &str) -> String {
    let first = if first.is_empty() {
        String::new()
    } else {
        format!("{first},")
    };
    format!(
        "k AS (SELECT environment, name FROM api_keys WHERE id = ${key} FOR KEY SHARE),
         g AS (SELECT {first} (${key}::text IS NULL OR EXISTS (
                          SELECT 1 FROM k WHERE environment IS NOT DISTINCT FROM ${scope}::text))
                          AS actor_ok,
                      (SELECT name FROM k) AS key_name)"
    )
}

/// The acting key's id (`None`: Coffer itself) and scope, for [`actor_guard`].
pub(crate) fn actor_binds(actor: &Actor) -> (Option<&str>, Option<&str>) {
    match actor {
        Actor::Key {
            id, environment, ..
        } => (Some(id.as_str()), environment.as_ref().map(EnvName::as_str)),
        Actor::System => (None, None),
    }
}

/// `actor` as its audit rows name it, from what [`actor_guard`] read:
/// [`StoreError::ActorRevoked`] unless `actor_ok`.
pub(crate) fn guarded_author(
    actor: &Actor,
    actor_ok: bool,
    key_name: Option<String>,
) -> StoreResult<Author> {
    if actor_ok {
        Ok(Author::of(actor, key_name))
    } else {
        Err(StoreError::ActorRevoked)
    }
}

/// Re-checks, in the writing transaction, that a key actor still exists with the scope its
/// request was authorized for, and locks its row (`FOR KEY SHARE`) so a revocation waits
/// for this transaction. Refuses with [`StoreError::ActorRevoked`] otherwise.
pub(crate) async fn check_actor(c: &mut PgConnection, actor: &Actor) -> StoreResult<Author> {
    let Actor::Key { id, .. } = actor else {
        return Ok(Author::system());
    };
    let row: Option<(Option<String>, String)> =
        sqlx::query_as("SELECT environment, name FROM api_keys WHERE id = $1 FOR KEY SHARE")
            .bind(id.as_str())
            .fetch_optional(&mut *c)
            .await
            .map_err(db)?;
    current_author(actor, row)
}

/// `actor` as its audit rows name it, given its key's row as the writing transaction read
/// it (`(environment, name)`, `None`: gone): [`StoreError::ActorRevoked`] unless the key
/// still exists with the scope its request was authorized for.
fn current_author(actor: &Actor, key: Option<(Option<String>, String)>) -> StoreResult<Author> {
    match (actor, key) {
        (Actor::System, _) => Ok(Author::system()),
        (Actor::Key { environment, .. }, Some((scope, name)))
            if scope.as_deref() == environment.as_ref().map(EnvName::as_str) =>
        {
            Ok(Author::of(actor, Some(name)))
        }
        (Actor::Key { .. }, _) => Err(StoreError::ActorRevoked),
    }
}

/// Locks `env`'s row (`FOR KEY SHARE`) if it exists: its deletion then waits for this
/// transaction. Returns whether it exists.
pub(crate) async fn lock_environment(c: &mut PgConnection, env: &EnvName) -> StoreResult<bool> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM environments WHERE name = $1 FOR KEY SHARE")
            .bind(env.as_str())
            .fetch_optional(&mut *c)
            .await
            .map_err(db)?;
    Ok(found.is_some())
}

/// Steps 1 and 3 for a write of `actor` into `env`: a key writes only into an environment
/// that exists (and stays until it commits); Coffer's own writes are not checked (they
/// replace existing rows, or run in tests of the bare store). A key that is gone as well is
/// reported as [`StoreError::ActorRevoked`], as the SQLite store does.
pub(crate) async fn key_scope(
    c: &mut PgConnection,
    actor: &Actor,
    env: &EnvName,
) -> StoreResult<Author> {
    if matches!(actor, Actor::System) {
        return Ok(Author::system());
    }
    let exists = lock_environment(c, env).await?;
    let author = check_actor(c, actor).await?;
    if exists {
        Ok(author)
    } else {
        Err(StoreError::NotFound)
    }
}

/// Steps 1 and 3 of a write into an incarnation (a secret value, a function, a send): the
/// incarnation must exist, for every actor, and stays locked until the commit; the actor is
/// re-checked and its row locked. A key that is gone as well is reported as
/// [`StoreError::ActorRevoked`], as the SQLite store does. One statement (one round trip).
pub(crate) async fn incarnation_scope(
    c: &mut PgConnection,
    actor: &Actor,
    env: &Environment,
) -> StoreResult<Author> {
    scope_removing_mark(c, actor, env, None).await
}

/// [`incarnation_scope`] for a write of the secret `name` that supersedes its unreadable
/// mark: the mark is removed in the same statement. (If the write is then refused, its
/// savepoint brings the mark back.)
pub(crate) async fn secret_scope(
    c: &mut PgConnection,
    actor: &Actor,
    env: &Environment,
    name: &SecretName,
) -> StoreResult<Author> {
    scope_removing_mark(c, actor, env, Some(name)).await
}

async fn scope_removing_mark(
    c: &mut PgConnection,
    actor: &Actor,
    env: &Environment,
    mark_of: Option<&SecretName>,
) -> StoreResult<Author> {
    let key_id = match actor {
        Actor::Key { id, .. } => Some(id.as_str()),
        Actor::System => None,
    };
    let (found, scope, key_name): (bool, Option<String>, Option<String>) = sqlx::query_as(
        "WITH e AS (
                 SELECT 1 FROM environments WHERE name = $1 AND id = $2 FOR KEY SHARE
             ), k AS (
                 SELECT environment, name FROM api_keys WHERE id = $3 FOR KEY SHARE
             ), m AS (
                 DELETE FROM unreadable_values
                 WHERE $4::text IS NOT NULL AND environment = $1 AND name = $4
             )
             SELECT EXISTS (SELECT 1 FROM e), (SELECT environment FROM k),
                    (SELECT name FROM k)",
    )
    .bind(env.name.as_str())
    .bind(env.id.as_str())
    .bind(key_id)
    .bind(mark_of.map(SecretName::as_str))
    .fetch_one(&mut *c)
    .await
    .map_err(db)?;
    // A key's name is never NULL: a name means the key's row was found.
    let author = current_author(actor, key_name.map(|name| (scope, name)))?;
    if found {
        Ok(author)
    } else {
        Err(StoreError::NotFound)
    }
}

/// The journal head.
pub(crate) struct Head {
    pub(crate) audit_seq: u64,
    pub(crate) audit_hash: String,
    pub(crate) event_seq: u64,
}

/// Locks the head: the first lock of every writing transaction (see `writer`).
pub(crate) async fn lock_head(c: &mut PgConnection) -> StoreResult<Head> {
    let (audit_seq, audit_hash, event_seq): (i64, String, i64) = sqlx::query_as(
        "SELECT audit_seq, audit_hash, event_seq FROM journal_head WHERE id = 1 FOR UPDATE",
    )
    .fetch_one(&mut *c)
    .await
    .map_err(db)?;
    Ok(Head {
        audit_seq: unsigned(audit_seq)?,
        audit_hash,
        event_seq: unsigned(event_seq)?,
    })
}

/// Appends one audit row per change and one event per change that publishes one to the
/// batch's journal (written, chained, with the batch; dropped if this write is rolled back).
pub(crate) fn append(tx: &mut Tx<'_>, author: &Author, changes: &[Change]) {
    let journal = tx.journal();
    for change in changes {
        let event = change.action.publishes().then(|| {
            journal.head.event_seq += 1;
            journal.head.event_seq
        });
        journal.rows.push(AuditRecord::of_change(
            change,
            &author.actor,
            &author.origin,
            event,
        ));
    }
}

/// Chains a batch's rows onto the head locked at its start and writes them, their outbox
/// rows and the new head in one statement, with a notification of the last event
/// ([`EVENTS_CHANNEL`], delivered on commit). Returns that event's id, if any, for the
/// writer to announce after its commit.
pub(crate) async fn write_pending(
    c: &mut PgConnection,
    pending: Pending,
) -> StoreResult<Option<u64>> {
    let Pending { mut head, rows, .. } = pending;
    if rows.is_empty() {
        return Ok(None);
    }
    write_rows(c, &mut head, rows).await
}

/// Chains `rows` onto the locked head and writes them, their outbox rows and the new head
/// in one statement, with the notification.
async fn write_rows(
    c: &mut PgConnection,
    head: &mut Head,
    mut rows: Vec<AuditRecord>,
) -> StoreResult<Option<u64>> {
    for row in &mut rows {
        (head.audit_seq, head.audit_hash) =
            row.chain_after(head.audit_seq, std::mem::take(&mut head.audit_hash));
    }
    let opt = |v: Option<u64>| v.map(signed).transpose();
    let mut cols = AuditColumns::default();
    let mut events: (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
    for r in rows {
        let seq = signed(r.seq)?;
        if let Some(id) = r.event {
            events.0.push(signed(id)?);
            events.1.push(seq);
        }
        cols.seq.push(seq);
        cols.at.push(r.at);
        cols.actor_id.push(r.actor.key_id);
        cols.actor_name.push(r.actor.key_name);
        cols.action.push(r.action);
        cols.subject.push(r.subject);
        cols.environment.push(r.environment);
        cols.name.push(r.name);
        cols.revision.push(opt(r.revision)?);
        cols.result.push(r.result.as_str().to_owned());
        cols.status.push(r.status.map(i64::from));
        cols.count.push(signed(r.count)?);
        cols.remote.push(r.remote);
        cols.user_agent.push(r.user_agent);
        cols.event.push(opt(r.event)?);
        cols.prev_hash.push(r.prev_hash);
        cols.hash.push(r.hash);
        cols.detail.push(r.detail);
    }
    let last_event = events.0.last().copied();
    sqlx::query(
        "WITH audit AS (
             INSERT INTO audit_log (seq, at, actor_id, actor_name, action, subject, environment,
                 name, revision, result, status, count, remote, user_agent, event_seq,
                 prev_hash, hash, detail)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                 $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[],
                 $11::bigint[], $12::bigint[], $13::text[], $14::text[], $15::bigint[],
                 $16::text[], $17::text[], $25::text[])
         ), outbox AS (
             INSERT INTO events (seq, audit_seq) SELECT * FROM UNNEST($18::bigint[], $19::bigint[])
         ), head AS (
             UPDATE journal_head SET audit_seq = $20, audit_hash = $21, event_seq = $22
             WHERE id = 1
         )
         SELECT pg_notify($23, $24) WHERE $24 IS NOT NULL",
    )
    .bind(cols.seq)
    .bind(cols.at)
    .bind(cols.actor_id)
    .bind(cols.actor_name)
    .bind(cols.action)
    .bind(cols.subject)
    .bind(cols.environment)
    .bind(cols.name)
    .bind(cols.revision)
    .bind(cols.result)
    .bind(cols.status)
    .bind(cols.count)
    .bind(cols.remote)
    .bind(cols.user_agent)
    .bind(cols.event)
    .bind(cols.prev_hash)
    .bind(cols.hash)
    .bind(events.0)
    .bind(events.1)
    .bind(signed(head.audit_seq)?)
    .bind(&head.audit_hash)
    .bind(signed(head.event_seq)?)
    .bind(EVENTS_CHANNEL)
    .bind(last_event.map(|id| id.to_string()))
    .bind(cols.detail)
    .execute(&mut *c)
    .await
    .map_err(db)?;
    last_event.map(unsigned).transpose()
}

/// The audit rows of one append, column by column (for `UNNEST`).
#[derive(Default)]
struct AuditColumns {
    seq: Vec<i64>,
    at: Vec<i64>,
    actor_id: Vec<Option<String>>,
    actor_name: Vec<Option<String>>,
    action: Vec<String>,
    subject: Vec<String>,
    environment: Vec<Option<String>>,
    name: Vec<Option<String>>,
    revision: Vec<Option<i64>>,
    result: Vec<String>,
    status: Vec<Option<i64>>,
    count: Vec<i64>,
    remote: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    event: Vec<Option<i64>>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
    detail: Vec<Option<String>>,
}

/// The last event id in the head.
pub(crate) async fn head_event_seq(c: &mut PgConnection) -> StoreResult<u64> {
    let id: i64 = sqlx::query_scalar("SELECT event_seq FROM journal_head WHERE id = 1")
        .fetch_one(&mut *c)
        .await
        .map_err(db)?;
    unsigned(id)
}

const AUDIT_COLUMNS: &str = "seq, at, actor_id, actor_name, action, subject, environment, name, \
     revision, result, status, count, remote, user_agent, event_seq, prev_hash, hash, detail";

/// An audit row as stored. A row whose cells do not read as Coffer wrote them (a negative
/// number, a status out of range, a result that is neither `allowed` nor `denied`: someone
/// edited the table) reads as `denied` with an empty `hash`, which `verify` reports as
/// edited, instead of failing the page.
fn audit_row(r: &PgRow) -> StoreResult<AuditRecord> {
    let seq = unsigned(r.try_get(0).map_err(db)?)?;
    let parsed = (|| -> Result<AuditRecord, ()> {
        let num = |i: usize| -> Result<Option<u64>, ()> {
            let v: Option<i64> = r.try_get(i).map_err(drop)?;
            v.map(|n| u64::try_from(n).map_err(drop)).transpose()
        };
        let result: String = r.try_get(9).map_err(drop)?;
        let status: Option<i64> = r.try_get(10).map_err(drop)?;
        Ok(AuditRecord {
            seq,
            at: r.try_get(1).map_err(drop)?,
            actor: ActorRef {
                key_id: r.try_get(2).map_err(drop)?,
                key_name: r.try_get(3).map_err(drop)?,
            },
            action: r.try_get(4).map_err(drop)?,
            subject: r.try_get(5).map_err(drop)?,
            environment: r.try_get(6).map_err(drop)?,
            name: r.try_get(7).map_err(drop)?,
            revision: num(8)?,
            result: AuditResult::parse(&result).ok_or(())?,
            status: status.map(|s| u16::try_from(s).map_err(drop)).transpose()?,
            count: num(11)?.ok_or(())?,
            remote: r.try_get(12).map_err(drop)?,
            user_agent: r.try_get(13).map_err(drop)?,
            event: num(14)?,
            detail: r.try_get(17).map_err(drop)?,
            prev_hash: r.try_get(15).map_err(drop)?,
            hash: r.try_get(16).map_err(drop)?,
        })
    })();
    Ok(parsed.unwrap_or_else(|()| AuditRecord {
        seq,
        at: r.try_get(1).unwrap_or(0),
        actor: ActorRef {
            key_id: None,
            key_name: None,
        },
        action: "unreadable".into(),
        subject: "unreadable".into(),
        environment: None,
        name: None,
        revision: None,
        result: AuditResult::Denied,
        status: None,
        count: 0,
        remote: None,
        user_agent: None,
        event: None,
        detail: None,
        prev_hash: r.try_get(15).unwrap_or_default(),
        hash: String::new(),
    }))
}

#[async_trait]
impl JournalStore for PgStore {
    async fn record_denials(&self, denials: Vec<Denial>) -> StoreResult<()> {
        if denials.is_empty() {
            return Ok(());
        }
        self.write(move |mut tx| {
            Box::pin(async move {
                let ids: Vec<String> = denials
                    .iter()
                    .filter_map(|d| d.key_id.as_ref().map(ToString::to_string))
                    .collect();
                let names: Vec<(String, String)> =
                    sqlx::query_as("SELECT id, name FROM api_keys WHERE id = ANY($1)")
                        .bind(&ids)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db)?;
                let name_of = |id: &str| {
                    names
                        .iter()
                        .find(|(k, _)| k == id)
                        .map(|(_, name)| name.clone())
                };
                tx.journal().rows.extend(denials.into_iter().map(|d| {
                    let key_name = d.key_id.as_ref().and_then(|id| name_of(id.as_str()));
                    AuditRecord::of_denial(d, key_name)
                }));
                tx.keep();
                Ok(())
            })
        })
        .await
    }

    async fn audit(
        &self,
        query: &AuditQuery,
        limit: usize,
    ) -> StoreResult<(Vec<AuditRecord>, Option<u64>)> {
        let mut c = self.acquire().await?;
        audit_window(&mut c, query, limit.max(1)).await
    }

    async fn audit_head(&self) -> StoreResult<(u64, String)> {
        let mut c = self.acquire().await?;
        let (seq, hash): (i64, String) =
            sqlx::query_as("SELECT audit_seq, audit_hash FROM journal_head WHERE id = 1")
                .fetch_one(&mut *c)
                .await
                .map_err(db)?;
        Ok((unsigned(seq)?, hash))
    }

    async fn audit_rows_past_head(&self) -> StoreResult<u64> {
        let mut c = self.acquire().await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE seq > (SELECT audit_seq FROM journal_head WHERE id = 1)",
        )
        .fetch_one(&mut *c)
        .await
        .map_err(db)?;
        unsigned(n)
    }

    async fn events_after(&self, after: u64, limit: usize) -> StoreResult<Vec<EventRecord>> {
        let mut c = self.acquire().await?;
        let rows = sqlx::query(
            "SELECT e.seq, a.subject, a.environment, a.name, a.revision, a.actor_id,
                    a.actor_name, a.at, a.count, a.action
             FROM events e JOIN audit_log a ON a.seq = e.audit_seq
             WHERE e.seq > $1 AND e.seq <= (SELECT event_seq FROM journal_head WHERE id = 1)
             ORDER BY e.seq LIMIT $2",
        )
        .bind(signed(after)?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let id = unsigned(r.try_get(0).map_err(db)?)?;
                // An audit row edited to cells that do not read (a negative revision): the
                // stream and the relay go on past it with a marker (`verify` names the row).
                Ok(event_of(id, r).unwrap_or_else(|()| {
                    tracing::warn!(
                        id,
                        "event {id}'s audit row does not read as written; sending a marker"
                    );
                    EventRecord::unreadable(id)
                }))
            })
            .collect()
    }

    async fn last_event_id(&self) -> StoreResult<u64> {
        let mut c = self.acquire().await?;
        head_event_seq(&mut c).await
    }

    fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    async fn relay_position(&self, name: &str) -> StoreResult<u64> {
        let mut c = self.acquire().await?;
        let pos: Option<i64> =
            sqlx::query_scalar("SELECT event_seq FROM relay_positions WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *c)
                .await
                .map_err(db)?;
        pos.map_or(Ok(0), unsigned)
    }

    async fn set_relay_position(&self, name: &str, id: u64) -> StoreResult<()> {
        let mut c = self.acquire().await?;
        sqlx::query(
            "INSERT INTO relay_positions (name, event_seq) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE
             SET event_seq = GREATEST(relay_positions.event_seq, EXCLUDED.event_seq)",
        )
        .bind(name)
        .bind(signed(id)?)
        .execute(&mut *c)
        .await
        .map_err(db)?;
        Ok(())
    }
}

/// An event from its outbox row joined to its audit row.
fn event_of(id: u64, r: &PgRow) -> Result<EventRecord, ()> {
    let action: String = r.try_get(9).map_err(drop)?;
    let count: i64 = r.try_get(8).map_err(drop)?;
    let revision: Option<i64> = r.try_get(4).map_err(drop)?;
    Ok(EventRecord {
        id,
        subject: r.try_get(1).map_err(drop)?,
        environment: r.try_get(2).map_err(drop)?,
        name: r.try_get(3).map_err(drop)?,
        revision: revision.map(u64::try_from).transpose().map_err(drop)?,
        actor: ActorRef {
            key_id: r.try_get(5).map_err(drop)?,
            key_name: r.try_get(6).map_err(drop)?,
        },
        at: coffer_store::Timestamp::from_millis(r.try_get(7).map_err(drop)?).rfc3339(),
        count: Action::ALL
            .iter()
            .any(|a| a.counts_values() && a.name() == action)
            .then(|| u64::try_from(count))
            .transpose()
            .map_err(drop)?,
    })
}

/// One page of [`JournalStore::audit`], as on SQLite: the rows matching `query` among the
/// sequence numbers `after+1 ..= min(after + MAX_EXAMINED, head)` (never past the head),
/// stopping at `limit` matches. The cursor is the last seq examined when more rows follow.
async fn audit_window(
    c: &mut PgConnection,
    query: &AuditQuery,
    limit: usize,
) -> StoreResult<(Vec<AuditRecord>, Option<u64>)> {
    let head: i64 = sqlx::query_scalar("SELECT audit_seq FROM journal_head WHERE id = 1")
        .fetch_one(&mut *c)
        .await
        .map_err(db)?;
    let head = unsigned(head)?;
    let after = match (query.after, query.since) {
        (Some(after), _) => after,
        (None, Some(since)) => first_seq_near(c, head, since).await?,
        (None, None) => 0,
    };
    if after >= head {
        return Ok((Vec::new(), None));
    }
    let upper = head.min(after.saturating_add(MAX_EXAMINED));
    let mut sql = QueryBuilder::<sqlx::Postgres>::new(format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > "
    ));
    sql.push_bind(signed(after)?);
    sql.push(" AND seq <= ").push_bind(signed(upper)?);
    if let Some(env) = &query.environment {
        sql.push(" AND environment = ").push_bind(env.to_string());
    }
    if let Some(actor) = &query.actor {
        sql.push(" AND actor_id = ").push_bind(actor.clone());
    }
    if let Some(action) = &query.action {
        sql.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(result) = query.result {
        sql.push(" AND result = ").push_bind(result.as_str());
    }
    if let Some(since) = query.since {
        sql.push(" AND at >= ").push_bind(since.millis());
    }
    if let Some(until) = query.until {
        sql.push(" AND at < ").push_bind(until.millis());
    }
    sql.push(" ORDER BY seq");
    let rows = sql.build().fetch_all(&mut *c).await.map_err(db)?;
    let mut found = Vec::new();
    for r in &rows {
        let row = audit_row(r)?;
        let keep = query
            .subject
            .as_ref()
            .is_none_or(|p| p.matches(&row.subject));
        if keep {
            let seq = row.seq;
            found.push(row);
            if found.len() == limit {
                return Ok((found, (seq < head).then_some(seq)));
            }
        }
    }
    Ok((found, (upper < head).then_some(upper)))
}

/// Where a walk for rows at or after `since` may start: just before the first row written a
/// minute before `since` (times follow sequence numbers to within far less). A binary
/// search over the primary key: a few point reads.
async fn first_seq_near(
    c: &mut PgConnection,
    head: u64,
    since: coffer_store::Timestamp,
) -> StoreResult<u64> {
    let target = since.millis().saturating_sub(60_000);
    let (mut lo, mut hi) = (1u64, head + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at: Option<i64> =
            sqlx::query_scalar("SELECT at FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT 1")
                .bind(signed(mid)?)
                .fetch_optional(&mut *c)
                .await
                .map_err(db)?;
        match at {
            Some(at) if at < target => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo.saturating_sub(1))
}
