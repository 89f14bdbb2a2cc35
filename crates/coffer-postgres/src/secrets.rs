//! `SecretStore` on the `secrets` table (versioned rows, see [`crate::versioned`]), per
//! environment incarnation: every read and write matches the environment's name and id, and
//! a write locks the incarnation's row first, so a value never lands in an incarnation that
//! is gone (the foreign key says the same). A write or delete removes the secret's
//! unreadable mark in its transaction.
//!
//! A metadata read (`meta_in`, what `GET …/secrets/{name}` asks) answers from the node's
//! cache behind a fence that makes it as fresh as the database (see `reads`); every other
//! read asks the database.

use std::collections::BTreeMap;

use async_trait::async_trait;
use coffer_crypto::KeyVersion;
use coffer_store::{
    AccessStore, Actor, BatchPut, Capabilities, Change, EnvId, EnvName, Environment, MAX_GET_MANY,
    Precondition, PutOutcome, Replacement, SecretListing, SecretMeta, SecretName, SecretOrder,
    SecretPage, SecretPageFill, SecretRecord, SecretStore, StoreError, StoreResult, StoredValue,
    Timestamp, in_asked_order,
};
use futures_util::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::journal::{Author, actor_guard, append, check_actor, incarnation_scope, secret_scope};
use crate::versioned::{Cell, Versioned, Written};
use crate::writer::Kind;
use crate::{PgStore, corrupt, db, signed, unsigned};

/// The `secrets` table.
const SECRETS: Versioned = Versioned {
    table: "secrets",
    scope: &["environment", "environment_id"],
    key: "name",
    conflict: "environment, name",
    values: &["value", "key_version"],
    keep: &[],
    returns: &[],
};

#[async_trait]
impl SecretStore for PgStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            compare_and_set: true,
            atomic_batches: true,
            values_in_catalog: true,
            raw_values: false,
        }
    }

    fn backend_name(&self) -> &'static str {
        "db"
    }

    async fn get(&self, env: &Environment, name: &SecretName) -> StoreResult<Option<SecretRecord>> {
        let mut c = self.acquire().await?;
        let row = sqlx::query(
            "SELECT value, key_version, revision, created_at, updated_at FROM secrets
             WHERE environment = $1 AND environment_id = $2 AND name = $3",
        )
        .bind(env.name.as_str())
        .bind(env.id.as_str())
        .bind(name.as_str())
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
        row.map(|r| record(env, name.clone(), &r)).transpose()
    }

    async fn get_many(
        &self,
        env: &Environment,
        names: &[SecretName],
    ) -> StoreResult<Vec<Option<SecretRecord>>> {
        let mut records = Vec::with_capacity(names.len());
        if names.is_empty() {
            return Ok(records);
        }
        let mut c = self.acquire().await?;
        for chunk in names.chunks(MAX_GET_MANY) {
            let list: Vec<&str> = chunk.iter().map(SecretName::as_str).collect();
            let rows = sqlx::query(
                "SELECT value, key_version, revision, created_at, updated_at, name FROM secrets
                 WHERE environment = $1 AND environment_id = $2 AND name = ANY($3)",
            )
            .bind(env.name.as_str())
            .bind(env.id.as_str())
            .bind(&list)
            .fetch_all(&mut *c)
            .await
            .map_err(db)?;
            let found = rows
                .into_iter()
                .map(|r| Ok((r.try_get::<String, _>(5).map_err(db)?, r)))
                .collect::<StoreResult<Vec<_>>>()?;
            records.extend(in_asked_order(chunk, &found, |name, r| {
                record(env, name.clone(), r)
            })?);
        }
        Ok(records)
    }

    async fn meta(&self, env: &Environment, name: &SecretName) -> StoreResult<Option<SecretMeta>> {
        let mut c = self.acquire().await?;
        let row = sqlx::query(
            "SELECT NULL::text, key_version, revision, created_at, updated_at FROM secrets
             WHERE environment = $1 AND environment_id = $2 AND name = $3",
        )
        .bind(env.name.as_str())
        .bind(env.id.as_str())
        .bind(name.as_str())
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
        row.map(|r| meta(env, name.clone(), &r)).transpose()
    }

    /// One query: the environment's row and the secret's, joined. (`environments` is this
    /// store: a PostgreSQL store keeps its values in its own catalog.)
    async fn meta_in(
        &self,
        _environments: &dyn AccessStore,
        env: &EnvName,
        name: &SecretName,
    ) -> StoreResult<Option<(Environment, Option<SecretMeta>)>> {
        // From the node's cache, behind a fence, when it holds the answer and nothing
        // changed secret metadata since; else from the database (see `reads`).
        let arrived = std::time::Instant::now();
        if self.meta_cache.holds(env, name) {
            let fence = self.meta_cache.fence(&self.db, arrived).await?;
            if let Some(answer) = self.meta_cache.get(fence, env, name) {
                return Ok(answer);
            }
        }
        let epoch = self.meta_cache.current();
        let answer = self.read_meta_in(env, name).await?;
        self.meta_cache.keep(epoch, env, name, &answer);
        Ok(answer)
    }

    async fn list(
        &self,
        env: &Environment,
        listing: &SecretListing<'_>,
        limit: usize,
    ) -> StoreResult<SecretPage> {
        // $3/$5 are the cursor, NULL on the first page.
        let (after, order) = match listing.order {
            SecretOrder::NameAsc => ("name > $3", "name"),
            SecretOrder::NameDesc => ("name < $3", "name DESC"),
            SecretOrder::UpdatedAsc => ("(updated_at, name) > ($5, $3)", "updated_at, name"),
            SecretOrder::UpdatedDesc => (
                "(updated_at, name) < ($5, $3)",
                "updated_at DESC, name DESC",
            ),
        };
        let sql = format!(
            "SELECT NULL::text, key_version, revision, created_at, updated_at, name FROM secrets
             WHERE environment = $1 AND environment_id = $2
               AND ($3::text IS NULL OR {after})
             ORDER BY {order} LIMIT $4"
        );
        // A search is applied to the rows as they come (`SecretPageFill`), which bounds
        // how many it examines.
        let mut page = SecretPageFill::new(listing.search, limit);
        let mut c = self.acquire().await?;
        let mut rows = sqlx::query(&sql)
            .bind(env.name.as_str())
            .bind(env.id.as_str())
            .bind(listing.after.map(|(n, _)| n.as_str()))
            .bind(i64::try_from(page.rows()).unwrap_or(i64::MAX))
            .bind(listing.after.map(|(_, at)| at.millis()))
            .fetch(&mut *c);
        while !page.is_full() {
            let Some(r) = rows.try_next().await.map_err(db)? else {
                break;
            };
            let name: String = r.try_get(5).map_err(db)?;
            let name = SecretName::new(&name).map_err(corrupt)?;
            page.push(meta(env, name, &r)?);
        }
        Ok(page.finish())
    }

    async fn put(
        &self,
        env: &Environment,
        name: &SecretName,
        value: StoredValue,
        precondition: Precondition,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<PutOutcome> {
        let (env, name, actor) = (env.clone(), name.clone(), actor.clone());
        // One statement that writes all or nothing: no savepoint (see `writer`).
        self.write_as(Kind::Atomic, move |mut tx| {
            Box::pin(async move {
                let (env, name, actor) = (&env, &name, &actor);
                let (author, out) =
                    put_in_one_statement(&mut tx, actor, env, name, &value, precondition, at)
                        .await?;
                append(&mut tx, &author, &[Change::secret_written(&out)]);
                tx.keep();
                Ok(out)
            })
        })
        .await
    }

    async fn put_many(
        &self,
        env: &Environment,
        batch: Vec<BatchPut>,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<Vec<Option<PutOutcome>>> {
        // All or nothing: the first refusal returns early, not kept, and its savepoint rolls
        // back every entry. A batch of its own (a long write).
        let (env, actor) = (env.clone(), actor.clone());
        self.write_as(Kind::Alone, move |mut tx| {
            Box::pin(async move {
                let (env, actor) = (&env, &actor);
                let author = incarnation_scope(&mut tx, actor, env).await?;
                let mut changes = Vec::with_capacity(batch.len());
                let mut outcomes = Vec::with_capacity(batch.len());
                for entry in batch {
                    match entry.value {
                        Some(value) => {
                            let out =
                                put(&mut tx, env, &entry.name, &value, entry.precondition, at)
                                    .await?;
                            changes.push(Change::secret_written(&out));
                            outcomes.push(Some(out));
                        }
                        None => {
                            // Locked, so the check still holds when the batch commits.
                            let current = SECRETS
                                .current_locked(&mut tx, &scope_of(env), entry.name.as_str())
                                .await?
                                .map(|r| meta(env, entry.name.clone(), &r))
                                .transpose()?;
                            let revision = current.as_ref().map(|m| m.revision);
                            if !entry.precondition.admits(revision) {
                                return Err(StoreError::Conflict { current: revision });
                            }
                            // Not a change, but it tells the caller its guess was the stored
                            // value: on the record (audit only).
                            if let Some(meta) = current {
                                changes.push(Change::secret_unchanged(&meta, at));
                            }
                            outcomes.push(None);
                        }
                    }
                }
                append(&mut tx, &author, &changes);
                tx.keep();
                Ok(outcomes)
            })
        })
        .await
    }

    async fn delete(
        &self,
        env: &Environment,
        name: &SecretName,
        precondition: Precondition,
        actor: &Actor,
    ) -> StoreResult<SecretMeta> {
        let (env, name, actor) = (env.clone(), name.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, name, actor) = (&env, &name, &actor);
                // Steps 1 and 3 as a put, and the mark removed (see `secret_scope`).
                let author = secret_scope(&mut tx, actor, env, name).await?;
                let row = SECRETS
                    .delete(&mut tx, &scope_of(env), name.as_str(), precondition)
                    .await?;
                let gone = meta(env, name.clone(), &row)?;
                let change = Change::secret_deleted(&gone, Timestamp::now());
                append(&mut tx, &author, &[change]);
                tx.keep();
                Ok(gone)
            })
        })
        .await
    }

    async fn scan(
        &self,
        after: Option<&(EnvName, SecretName)>,
        limit: usize,
    ) -> StoreResult<Vec<SecretRecord>> {
        let (after_env, after_name) = after.map_or(("", ""), |(e, n)| (e.as_str(), n.as_str()));
        let mut c = self.acquire().await?;
        let rows = sqlx::query(
            "SELECT value, key_version, revision, created_at, updated_at, environment, name,
                    environment_id
             FROM secrets WHERE (environment, name) > ($1, $2)
             ORDER BY environment, name LIMIT $3",
        )
        .bind(after_env)
        .bind(after_name)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let env: String = r.try_get(5).map_err(db)?;
                let name: String = r.try_get(6).map_err(db)?;
                let id: String = r.try_get(7).map_err(db)?;
                // The walk needs the incarnation, not the environment's creation time.
                let env = Environment {
                    name: EnvName::new(&env).map_err(corrupt)?,
                    id: EnvId::new(&id).map_err(corrupt)?,
                    created_at: Timestamp::from_millis(0),
                };
                let name = SecretName::new(&name).map_err(corrupt)?;
                record(&env, name, r)
            })
            .collect()
    }

    async fn replace_values(
        &self,
        batch: Vec<Replacement>,
        actor: &Actor,
    ) -> StoreResult<Vec<bool>> {
        let actor = actor.clone();
        self.write_as(Kind::Alone, move |mut tx| {
            Box::pin(async move {
                let actor = &actor;
                let author = check_actor(&mut tx, actor).await?;
                let mut cols = ReplaceColumns::default();
                for (i, r) in batch.iter().enumerate() {
                    cols.index.push(i64::try_from(i).unwrap_or(i64::MAX));
                    cols.environment.push(r.environment.as_str());
                    cols.environment_id.push(r.environment_id.as_str());
                    cols.name.push(r.name.as_str());
                    cols.revision.push(signed(r.revision)?);
                    cols.value.push(stored_text(&r.value));
                    cols.key_version
                        .push(i64::from(r.value.key_version_number()));
                    cols.previous.push(stored_text(&r.previous));
                    cols.previous_version
                        .push(i64::from(r.previous.key_version_number()));
                }
                // One statement for the batch: each replacement applies only to the exact row it
                // was read from (incarnation, revision and stored form), and keeps revision and
                // timestamps.
                let applied_at: Vec<i64> = sqlx::query_scalar(
                    "UPDATE secrets s SET value = r.value, key_version = r.key_version
                     FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                                 $6::text[], $7::bigint[], $8::text[], $9::bigint[])
                          AS r(idx, environment, environment_id, name, revision, value, key_version,
                               previous, previous_version)
                     WHERE s.environment = r.environment AND s.environment_id = r.environment_id
                       AND s.name = r.name AND s.revision = r.revision
                       AND s.key_version = r.previous_version AND s.value = r.previous
                     RETURNING r.idx",
                )
                .bind(&cols.index)
                .bind(&cols.environment)
                .bind(&cols.environment_id)
                .bind(&cols.name)
                .bind(&cols.revision)
                .bind(&cols.value)
                .bind(&cols.key_version)
                .bind(&cols.previous)
                .bind(&cols.previous_version)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                let applied = crate::applied_flags(batch.len(), applied_at);
                let count = applied.iter().filter(|a| **a).count() as u64;
                if count > 0 {
                    let change = Change::keys_rewrapped(count, Timestamp::now());
                    append(&mut tx, &author, &[change]);
                }
                tx.keep();
                Ok(applied)
            })
        })
        .await
    }

    async fn purge_environment(&self, env: &Environment) -> StoreResult<u64> {
        let env = env.clone();
        self.write_as(Kind::Alone, move |mut tx| {
            Box::pin(async move {
                let env = &env;
                let purged = sqlx::query(
                    "DELETE FROM secrets WHERE environment = $1 AND environment_id = $2",
                )
                .bind(env.name.as_str())
                .bind(env.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                forget_environment_marks(&mut tx, &env.name).await?;
                tx.keep();
                Ok(purged.rows_affected())
            })
        })
        .await
    }

    async fn count_by_key_version(&self) -> StoreResult<BTreeMap<u32, u64>> {
        let mut c = self.acquire().await?;
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT key_version, COUNT(*) FROM secrets GROUP BY key_version")
                .fetch_all(&mut *c)
                .await
                .map_err(db)?;
        crate::per_key_version(rows)
    }

    async fn ping(&self) -> StoreResult<()> {
        PgStore::ping(self).await
    }
}

/// One replacement batch, column by column (for `UNNEST`).
#[derive(Default)]
struct ReplaceColumns<'a> {
    index: Vec<i64>,
    environment: Vec<&'a str>,
    environment_id: Vec<&'a str>,
    name: Vec<&'a str>,
    revision: Vec<i64>,
    value: Vec<&'a str>,
    key_version: Vec<i64>,
    previous: Vec<&'a str>,
    previous_version: Vec<i64>,
}

async fn put(
    c: &mut PgConnection,
    env: &Environment,
    name: &SecretName,
    value: &StoredValue,
    precondition: Precondition,
    at: Timestamp,
) -> StoreResult<PutOutcome> {
    let out = write_value(c, env, name, value, precondition, at).await?;
    // A new revision supersedes a mark of the old one, in this transaction.
    forget_mark(c, &env.name, name).await?;
    Ok(out)
}

impl PgStore {
    /// [`SecretStore::meta_in`] from the database: one query, the environment's row and the
    /// secret's joined.
    async fn read_meta_in(
        &self,
        env: &EnvName,
        name: &SecretName,
    ) -> StoreResult<Option<(Environment, Option<SecretMeta>)>> {
        let mut c = self.acquire().await?;
        let row = sqlx::query(
            "SELECT NULL::text, s.key_version, s.revision, s.created_at, s.updated_at,
                    e.created_at, e.id, s.name IS NOT NULL
             FROM environments e
             LEFT JOIN secrets s
               ON s.environment = e.name AND s.environment_id = e.id AND s.name = $2
             WHERE e.name = $1",
        )
        .bind(env.as_str())
        .bind(name.as_str())
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get(6).map_err(db)?;
        let incarnation = Environment {
            name: env.clone(),
            id: EnvId::new(&id).map_err(corrupt)?,
            created_at: Timestamp::from_millis(row.try_get(5).map_err(db)?),
        };
        let found: bool = row.try_get(7).map_err(db)?;
        let meta = match found {
            true => Some(meta(&incarnation, name.clone(), &row)?),
            false => None,
        };
        Ok(Some((incarnation, meta)))
    }
}

/// A secret's write in one statement: steps 1 and 3 (the incarnation's row and the acting
/// key's, `FOR KEY SHARE`), the write if both hold and `precondition` does, and the removal
/// of the secret's unreadable mark if it wrote. Refused, it wrote nothing. One round trip
/// where the steps apart take three.
async fn put_in_one_statement(
    c: &mut PgConnection,
    actor: &Actor,
    env: &Environment,
    name: &SecretName,
    value: &StoredValue,
    precondition: Precondition,
    at: Timestamp,
) -> StoreResult<(Author, PutOutcome)> {
    // $1 environment, $2 incarnation, $3 name, $4 time, $5 value, $6 key version, $7 the
    // acting key's id (NULL: Coffer itself), $8 its scope, $9 the expected revision.
    let guard = format!(
        "WITH e AS (
            SELECT 1 FROM environments WHERE name = $1 AND id = $2 FOR KEY SHARE
        ), {}",
        actor_guard(7, 8, "EXISTS (SELECT 1 FROM e) AS env_found")
    );
    const AFTER: &str = ", m AS (
            DELETE FROM unreadable_values
            WHERE environment = $1 AND name = $3 AND EXISTS (SELECT 1 FROM w)
        )
        SELECT g.env_found, g.actor_ok, g.key_name, w.revision, w.created_at
        FROM g LEFT JOIN w ON true";
    const INSERT: &str = "INSERT INTO secrets (environment, environment_id, name, value,
            key_version, revision, created_at, updated_at)
        SELECT $1, $2, $3, $5, $6, 1, $4, $4 FROM g WHERE g.env_found AND g.actor_ok";
    let write = match precondition {
        Precondition::None => format!(
            "{INSERT} ON CONFLICT (environment, name) DO UPDATE SET value = EXCLUDED.value,
                 key_version = EXCLUDED.key_version, revision = secrets.revision + 1,
                 updated_at = EXCLUDED.updated_at
             RETURNING revision, created_at"
        ),
        Precondition::Absent => format!(
            "{INSERT} ON CONFLICT (environment, name) DO NOTHING RETURNING revision, created_at"
        ),
        Precondition::Revision(_) => "UPDATE secrets SET value = $5, key_version = $6,
                 revision = revision + 1, updated_at = $4
             WHERE environment = $1 AND environment_id = $2 AND name = $3 AND revision = $9
               AND (SELECT g.env_found AND g.actor_ok FROM g)
             RETURNING revision, created_at"
            .to_owned(),
    };
    let sql = format!("{guard}, w AS ({write}){AFTER}");
    let key_version = value.key_version_number();
    let (key_id, key_scope) = match actor {
        Actor::Key {
            id, environment, ..
        } => (Some(id.as_str()), environment.as_ref().map(EnvName::as_str)),
        Actor::System => (None, None),
    };
    let expected = match precondition {
        Precondition::Revision(n) => Some(signed(n)?),
        Precondition::None | Precondition::Absent => None,
    };
    let row = sqlx::query(&sql)
        .bind(env.name.as_str())
        .bind(env.id.as_str())
        .bind(name.as_str())
        .bind(at.millis())
        .bind(stored_text(value))
        .bind(i64::from(key_version))
        .bind(key_id)
        .bind(key_scope)
        .bind(expected)
        .fetch_one(&mut *c)
        .await
        .map_err(db)?;
    let (env_found, actor_ok): (bool, bool) =
        (row.try_get(0).map_err(db)?, row.try_get(1).map_err(db)?);
    if !actor_ok {
        return Err(StoreError::ActorRevoked);
    }
    if !env_found {
        return Err(StoreError::NotFound);
    }
    let key_name: Option<String> = row.try_get(2).map_err(db)?;
    let revision: Option<i64> = row.try_get(3).map_err(db)?;
    let Some(revision) = revision else {
        return Err(StoreError::Conflict {
            current: SECRETS.revision(c, &scope_of(env), name.as_str()).await?,
        });
    };
    let written = Written {
        revision: unsigned(revision)?,
        created_at: row.try_get(4).map_err(db)?,
    };
    let out = put_outcome(env, name, key_version, &written, at);
    Ok((Author::of(actor, key_name), out))
}

/// The upsert of [`put`] alone: the caller removes the secret's mark.
async fn write_value(
    c: &mut PgConnection,
    env: &Environment,
    name: &SecretName,
    value: &StoredValue,
    precondition: Precondition,
    at: Timestamp,
) -> StoreResult<PutOutcome> {
    let key_version = value.key_version_number();
    let cells = [
        Cell::Text(stored_text(value)),
        Cell::Int(i64::from(key_version)),
    ];
    let written = SECRETS
        .put(
            c,
            &scope_of(env),
            name.as_str(),
            &cells,
            precondition,
            at.millis(),
        )
        .await?;
    Ok(put_outcome(env, name, key_version, &written, at))
}

/// What a write of `name` that left `written` reports.
fn put_outcome(
    env: &Environment,
    name: &SecretName,
    key_version: u32,
    written: &Written,
    at: Timestamp,
) -> PutOutcome {
    PutOutcome {
        created: written.created(),
        meta: SecretMeta {
            environment: env.name.clone(),
            environment_id: env.id.clone(),
            name: name.clone(),
            revision: written.revision,
            key_version,
            created_at: Timestamp::from_millis(written.created_at),
            updated_at: at,
        },
    }
}

/// The scope columns' values of `env`'s rows: its name and incarnation.
fn scope_of(env: &Environment) -> [&str; 2] {
    [env.name.as_str(), env.id.as_str()]
}

/// Removes the secret's unreadable mark, if any: it was written or deleted.
async fn forget_mark(c: &mut PgConnection, env: &EnvName, name: &SecretName) -> StoreResult<()> {
    sqlx::query("DELETE FROM unreadable_values WHERE environment = $1 AND name = $2")
        .bind(env.as_str())
        .bind(name.as_str())
        .execute(&mut *c)
        .await
        .map_err(db)?;
    Ok(())
}

/// Removes every unreadable mark of `env`: its secrets went (or a new one starts empty).
pub(crate) async fn forget_environment_marks(
    c: &mut PgConnection,
    env: &EnvName,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM unreadable_values WHERE environment = $1")
        .bind(env.as_str())
        .execute(&mut *c)
        .await
        .map_err(db)?;
    Ok(())
}

/// Metadata from `value, key_version, revision, created_at, updated_at` (the value unread).
fn meta(environment: &Environment, name: SecretName, r: &PgRow) -> StoreResult<SecretMeta> {
    let key_version: i64 = r.try_get(1).map_err(db)?;
    Ok(SecretMeta {
        environment: environment.name.clone(),
        environment_id: environment.id.clone(),
        name,
        revision: unsigned(r.try_get(2).map_err(db)?)?,
        key_version: u32::try_from(key_version)
            .map_err(|_| corrupt("a key version out of range"))?,
        created_at: Timestamp::from_millis(r.try_get(3).map_err(db)?),
        updated_at: Timestamp::from_millis(r.try_get(4).map_err(db)?),
    })
}

/// A record from `value, key_version, revision, created_at, updated_at`.
fn record(environment: &Environment, name: SecretName, r: &PgRow) -> StoreResult<SecretRecord> {
    let meta = meta(environment, name, r)?;
    let value = stored_value(i64::from(meta.key_version), r.try_get(0).map_err(db)?)?;
    Ok(SecretRecord { meta, value })
}

/// A value from its stored text and key version (0: stored unencrypted, dev mode), as the
/// `secrets` table and a function's signing secrets keep it.
pub(crate) fn stored_value(key_version: i64, text: String) -> StoreResult<StoredValue> {
    let v = u32::try_from(key_version).map_err(|_| corrupt("a key version out of range"))?;
    Ok(match v {
        0 => StoredValue::Plain(SecretString::from(text)),
        v => StoredValue::Sealed {
            key_version: KeyVersion::new(v).map_err(corrupt)?,
            blob: text,
        },
    })
}

/// The text that goes into a value column (`value`, `signing_value`, `previous_value`).
pub(crate) fn stored_text(value: &StoredValue) -> &str {
    match value {
        StoredValue::Plain(plain) => plain.expose_secret(),
        StoredValue::Sealed { blob, .. } => blob,
    }
}
