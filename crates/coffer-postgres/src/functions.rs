//! `FunctionStore` on the `functions` table (versioned rows, see [`crate::versioned`]).
//!
//! A function is addressed by its environment's name, like a config entry, and belongs to
//! one incarnation, like a secret value: a registration or rotation locks the incarnation's
//! row first (`NotFound` if it is gone), and the foreign key takes the function with its
//! incarnation. An update keeps the stored signing secret: the incarnation and the signing
//! columns are set by the insert only.

use async_trait::async_trait;
use coffer_store::{
    Actor, Change, EnvId, EnvName, Environment, FunctionId, FunctionPutOutcome, FunctionRecord,
    FunctionStore, Precondition, StoreError, StoreResult, StoredValue, Timestamp,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::journal::{append, check_actor, incarnation_scope, lock_environment};
use crate::secrets::{stored_text, stored_value};
use crate::versioned::{Cell, Versioned};
use crate::{PgStore, corrupt, db, unsigned};

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
        let mut tx = self.begin().await?;
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
        let last = append(&mut tx, &author, &[Change::function_written(&out)]).await?;
        self.commit(tx, last).await?;
        Ok(out)
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
        let mut tx = self.begin().await?;
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
        let last = append(&mut tx, &author, &[Change::function_rotated(&record)]).await?;
        self.commit(tx, last).await?;
        Ok(record)
    }

    async fn delete_function(
        &self,
        env: &EnvName,
        id: &FunctionId,
        precondition: Precondition,
        actor: &Actor,
    ) -> StoreResult<FunctionRecord> {
        let mut tx = self.begin().await?;
        // Step 1, then step 3, as a config deletion: a deletion of the environment waits
        // for this one. (A function of a deleted environment went with it: NotFound.)
        lock_environment(&mut tx, env).await?;
        let author = check_actor(&mut tx, actor).await?;
        let row = FUNCTIONS
            .delete(&mut tx, &[env.as_str()], id.as_str(), precondition)
            .await?;
        let gone = function(env.clone(), id.clone(), &row)?;
        let change = Change::function_deleted(&gone, Timestamp::now());
        let last = append(&mut tx, &author, &[change]).await?;
        self.commit(tx, last).await?;
        Ok(gone)
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
