//! `FunctionStore` on the `functions` table (versioned rows, see [`crate::versioned`]).
//!
//! A function is addressed by its environment's name, like a config entry, and belongs to
//! one incarnation, like a secret value: a registration or rotation locks the incarnation's
//! row first (`NotFound` if it is gone), and the foreign key takes the function with its
//! incarnation. An update keeps the stored signing secret: the incarnation and the signing
//! columns are set by the insert only.

use std::collections::BTreeMap;

use async_trait::async_trait;
use coffer_store::{
    Actor, Change, EnvId, EnvName, Environment, FunctionId, FunctionPutOutcome, FunctionRecord,
    FunctionStore, Precondition, SigningReplacement, StoreError, StoreResult, StoredValue,
    Timestamp,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::journal::{append, check_actor, incarnation_scope, lock_environment};
use crate::secrets::{stored_text, stored_value};
use crate::versioned::{Cell, Versioned};
use crate::writer::Kind;
use crate::{PgStore, corrupt, db, signed, unsigned};

/// The `functions` table. The signing secret a registration brings is stored by the insert
/// only; a rotation replaces it with a statement of its own. Every read selects
/// [`Versioned::row_columns`] (`spec, revision, created_at, updated_at`, then `returns`),
/// the order [`function`] reads.
const FUNCTIONS: Versioned = Versioned {
    table: "functions",
    scope: &["environment"],
    key: "id",
    conflict: "environment, id",
    values: &["spec"],
    keep: &["environment_id", "signing_key_version", "signing_value"],
    returns: &[
        "environment_id",
        "signing_key_version",
        "signing_value",
        "previous_key_version",
        "previous_value",
        "previous_until",
    ],
};

#[async_trait]
impl FunctionStore for PgStore {
    async fn get_function(
        &self,
        env: &EnvName,
        id: &FunctionId,
    ) -> StoreResult<Option<FunctionRecord>> {
        let mut c = self.acquire().await?;
        read(&mut c, env, id).await
    }

    async fn list_functions(
        &self,
        env: &EnvName,
        after: Option<&FunctionId>,
        limit: usize,
    ) -> StoreResult<Vec<FunctionRecord>> {
        let mut c = self.acquire().await?;
        let rows = sqlx::query(&format!(
            "SELECT {}, id FROM functions WHERE environment = $1 AND id > $2
             ORDER BY id LIMIT $3",
            FUNCTIONS.row_columns()
        ))
        .bind(env.as_str())
        .bind(after.map_or("", FunctionId::as_str))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(10).map_err(db)?;
                let id = FunctionId::new(&id).map_err(corrupt)?;
                function(env.clone(), id, r)
            })
            .collect()
    }

    async fn put_function(
        &self,
        env: &Environment,
        id: &FunctionId,
        spec: String,
        signing: StoredValue,
        precondition: Precondition,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FunctionPutOutcome> {
        let (env, id, actor) = (env.clone(), id.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, id, actor) = (&env, &id, &actor);
                let author = incarnation_scope(&mut tx, actor, env).await?;
                let cells = [
                    Cell::Text(&spec),
                    Cell::Text(env.id.as_str()),
                    Cell::Int(i64::from(signing.key_version_number())),
                    Cell::Text(stored_text(&signing)),
                ];
                let written = FUNCTIONS
                    .put(
                        &mut tx,
                        &[env.name.as_str()],
                        id.as_str(),
                        &cells,
                        precondition,
                        at.millis(),
                    )
                    .await?;
                // The row as it now stands (an update kept the signing secrets it had); the write
                // holds its lock, so this is what commits.
                let record = read(&mut tx, &env.name, id)
                    .await?
                    .ok_or_else(|| corrupt("postgres: a function vanished under its own write"))?;
                let out = FunctionPutOutcome {
                    record,
                    created: written.created(),
                };
                append(&mut tx, &author, &[Change::function_written(&out)]);
                tx.keep();
                Ok(out)
            })
        })
        .await
    }

    async fn rotate_signing_secret(
        &self,
        env: &Environment,
        id: &FunctionId,
        signing: StoredValue,
        grace_until: Timestamp,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<FunctionRecord> {
        let (env, id, actor) = (env.clone(), id.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, id, actor) = (&env, &id, &actor);
                let author = incarnation_scope(&mut tx, actor, env).await?;
                // One statement: the right-hand sides read the row as it was, so the secret being
                // replaced becomes the previous one (replacing any older previous one).
                let row = sqlx::query(&format!(
                    "UPDATE functions SET previous_key_version = signing_key_version,
                         previous_value = signing_value, previous_until = $4,
                         signing_key_version = $5, signing_value = $6,
                         revision = revision + 1, updated_at = $7
                     WHERE environment = $1 AND environment_id = $2 AND id = $3
                     RETURNING {}",
                    FUNCTIONS.row_columns()
                ))
                .bind(env.name.as_str())
                .bind(env.id.as_str())
                .bind(id.as_str())
                .bind(grace_until.millis())
                .bind(i64::from(signing.key_version_number()))
                .bind(stored_text(&signing))
                .bind(at.millis())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                let record = function(
                    env.name.clone(),
                    id.clone(),
                    &row.ok_or(StoreError::NotFound)?,
                )?;
                append(&mut tx, &author, &[Change::function_rotated(&record)]);
                tx.keep();
                Ok(record)
            })
        })
        .await
    }

    async fn scan_functions(
        &self,
        after: Option<&(EnvName, FunctionId)>,
        limit: usize,
    ) -> StoreResult<Vec<FunctionRecord>> {
        let (after_env, after_id) = after.map_or(("", ""), |(e, id)| (e.as_str(), id.as_str()));
        let mut c = self.acquire().await?;
        let rows = sqlx::query(&format!(
            "SELECT {}, id, environment FROM functions WHERE (environment, id) > ($1, $2)
             ORDER BY environment, id LIMIT $3",
            FUNCTIONS.row_columns()
        ))
        .bind(after_env)
        .bind(after_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(10).map_err(db)?;
                let env: String = r.try_get(11).map_err(db)?;
                let id = FunctionId::new(&id).map_err(corrupt)?;
                function(EnvName::new(&env).map_err(corrupt)?, id, r)
            })
            .collect()
    }

    async fn count_signing_by_key_version(&self) -> StoreResult<BTreeMap<u32, u64>> {
        let mut c = self.acquire().await?;
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT version, COUNT(*) FROM (
                 SELECT signing_key_version AS version FROM functions
                 UNION ALL
                 SELECT previous_key_version FROM functions WHERE previous_key_version IS NOT NULL
             ) AS stored GROUP BY version",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
        crate::per_key_version(rows)
    }

    async fn replace_signing(
        &self,
        batch: Vec<SigningReplacement>,
        actor: &Actor,
    ) -> StoreResult<Vec<bool>> {
        let actor = actor.clone();
        self.write_as(Kind::Alone, move |mut tx| {
            Box::pin(async move {
                let actor = &actor;
                let mut cols = SigningColumns::default();
                for (i, r) in batch.iter().enumerate() {
                    cols.push(i, r)?;
                }
                // Step 1: the environments' rows, in name order, so a deletion of one waits for this
                // batch (or this batch for it) before either holds a function row the other needs.
                let mut names = cols.environment.clone();
                names.sort_unstable();
                names.dedup();
                sqlx::query("SELECT 1 FROM environments WHERE name = ANY($1) ORDER BY name FOR KEY SHARE")
                    .bind(&names)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
                // Step 3.
                let author = check_actor(&mut tx, actor).await?;
                // Step 4: the functions' rows, in (environment, id) order, so two batches over the
                // same functions (rewraps on two nodes) never hold them in a cycle.
                sqlx::query(
                    "SELECT 1 FROM functions
                     WHERE (environment, id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
                     ORDER BY environment, id FOR NO KEY UPDATE",
                )
                .bind(&cols.environment)
                .bind(&cols.id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                // One statement for the batch: each replacement applies only to the exact row it
                // was read from (incarnation, revision, and both stored forms: `IS NOT DISTINCT
                // FROM` pins a previous secret's absence too); a secret kept as read is written back
                // as it is (`COALESCE`); revision, timestamps and the grace period stay.
                let applied_at: Vec<i64> = sqlx::query_scalar(
                    "UPDATE functions f SET
                         signing_key_version = COALESCE(r.new_version, f.signing_key_version),
                         signing_value = COALESCE(r.new_value, f.signing_value),
                         previous_key_version = COALESCE(r.new_previous_version, f.previous_key_version),
                         previous_value = COALESCE(r.new_previous_value, f.previous_value)
                     FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                                 $6::bigint[], $7::text[], $8::bigint[], $9::text[],
                                 $10::bigint[], $11::text[], $12::bigint[], $13::text[])
                          AS r(idx, environment, environment_id, id, revision,
                               read_version, read_value, new_version, new_value,
                               read_previous_version, read_previous_value,
                               new_previous_version, new_previous_value)
                     WHERE f.environment = r.environment AND f.environment_id = r.environment_id
                       AND f.id = r.id AND f.revision = r.revision
                       AND f.signing_key_version = r.read_version AND f.signing_value = r.read_value
                       AND f.previous_key_version IS NOT DISTINCT FROM r.read_previous_version
                       AND f.previous_value IS NOT DISTINCT FROM r.read_previous_value
                     RETURNING r.idx",
                )
                .bind(&cols.index)
                .bind(&cols.environment)
                .bind(&cols.environment_id)
                .bind(&cols.id)
                .bind(&cols.revision)
                .bind(&cols.read_version)
                .bind(&cols.read_value)
                .bind(&cols.new_version)
                .bind(&cols.new_value)
                .bind(&cols.read_previous_version)
                .bind(&cols.read_previous_value)
                .bind(&cols.new_previous_version)
                .bind(&cols.new_previous_value)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                let applied = crate::applied_flags(batch.len(), applied_at);
                let stored_anew: u64 = batch
                    .iter()
                    .zip(&applied)
                    .filter(|(_, applied)| **applied)
                    .map(|(r, _)| r.stored_anew())
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

    async fn delete_function(
        &self,
        env: &EnvName,
        id: &FunctionId,
        precondition: Precondition,
        actor: &Actor,
    ) -> StoreResult<FunctionRecord> {
        let (env, id, actor) = (env.clone(), id.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, id, actor) = (&env, &id, &actor);
                // Step 1, then step 3, as a config deletion: a deletion of the environment waits
                // for this one. (A function of a deleted environment went with it: NotFound.)
                lock_environment(&mut tx, env).await?;
                let author = check_actor(&mut tx, actor).await?;
                let row = FUNCTIONS
                    .delete(&mut tx, &[env.as_str()], id.as_str(), precondition)
                    .await?;
                let gone = function(env.clone(), id.clone(), &row)?;
                let change = Change::function_deleted(&gone, Timestamp::now());
                append(&mut tx, &author, &[change]);
                tx.keep();
                Ok(gone)
            })
        })
        .await
    }
}

/// One batch of [`FunctionStore::replace_signing`], column by column (for `UNNEST`).
#[derive(Default)]
struct SigningColumns<'a> {
    index: Vec<i64>,
    environment: Vec<&'a str>,
    environment_id: Vec<&'a str>,
    id: Vec<&'a str>,
    revision: Vec<i64>,
    read_version: Vec<i64>,
    read_value: Vec<&'a str>,
    new_version: Vec<Option<i64>>,
    new_value: Vec<Option<&'a str>>,
    read_previous_version: Vec<Option<i64>>,
    read_previous_value: Vec<Option<&'a str>>,
    new_previous_version: Vec<Option<i64>>,
    new_previous_value: Vec<Option<&'a str>>,
}

impl<'a> SigningColumns<'a> {
    fn push(&mut self, i: usize, r: &'a SigningReplacement) -> StoreResult<()> {
        let version = |v: &StoredValue| i64::from(v.key_version_number());
        let previous = r.previous_signing.as_ref();
        let new_previous = previous.and_then(|p| p.new.as_ref());
        self.index.push(i64::try_from(i).unwrap_or(i64::MAX));
        self.environment.push(r.environment.as_str());
        self.environment_id.push(r.environment_id.as_str());
        self.id.push(r.id.as_str());
        self.revision.push(signed(r.revision)?);
        self.read_version.push(version(&r.signing.read));
        self.read_value.push(stored_text(&r.signing.read));
        self.new_version.push(r.signing.new.as_ref().map(version));
        self.new_value.push(r.signing.new.as_ref().map(stored_text));
        self.read_previous_version
            .push(previous.map(|p| version(&p.read)));
        self.read_previous_value
            .push(previous.map(|p| stored_text(&p.read)));
        self.new_previous_version.push(new_previous.map(version));
        self.new_previous_value.push(new_previous.map(stored_text));
        Ok(())
    }
}

/// One function, or `None`.
async fn read(
    c: &mut PgConnection,
    env: &EnvName,
    id: &FunctionId,
) -> StoreResult<Option<FunctionRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM functions WHERE environment = $1 AND id = $2",
        FUNCTIONS.row_columns()
    ))
    .bind(env.as_str())
    .bind(id.as_str())
    .fetch_optional(&mut *c)
    .await
    .map_err(db)?;
    row.map(|r| function(env.clone(), id.clone(), &r))
        .transpose()
}

/// A function from [`Versioned::row_columns`] of [`FUNCTIONS`].
fn function(environment: EnvName, id: FunctionId, r: &PgRow) -> StoreResult<FunctionRecord> {
    let environment_id: String = r.try_get(4).map_err(db)?;
    let previous: (Option<i64>, Option<String>, Option<i64>) = (
        r.try_get(7).map_err(db)?,
        r.try_get(8).map_err(db)?,
        r.try_get(9).map_err(db)?,
    );
    let previous_signing = match previous {
        (Some(version), Some(text), Some(until)) => {
            Some((stored_value(version, text)?, Timestamp::from_millis(until)))
        }
        (None, None, None) => None,
        _ => {
            return Err(corrupt(
                "postgres: a function's previous signing secret is stored in part",
            ));
        }
    };
    Ok(FunctionRecord {
        environment,
        environment_id: EnvId::new(&environment_id).map_err(corrupt)?,
        id,
        spec: r.try_get(0).map_err(db)?,
        signing: stored_value(r.try_get(5).map_err(db)?, r.try_get(6).map_err(db)?)?,
        previous_signing,
        revision: unsigned(r.try_get(1).map_err(db)?)?,
        created_at: Timestamp::from_millis(r.try_get(2).map_err(db)?),
        updated_at: Timestamp::from_millis(r.try_get(3).map_err(db)?),
    })
}
