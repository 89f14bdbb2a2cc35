//! `ConfigStore` on the `config` table (versioned rows, see [`crate::versioned`]).

use async_trait::async_trait;
use coffer_store::{
    Actor, Change, ConfigEntry, ConfigKey, ConfigPutOutcome, ConfigStore, EnvName, PageSize,
    Precondition, StoreResult, Timestamp,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::journal::{append, check_actor, key_scope, lock_environment};
use crate::versioned::{Cell, Versioned};
use crate::{PgStore, close_bounded, corrupt, db, open_bounded, read_page, unsigned};

/// The `config` table.
const CONFIG: Versioned = Versioned {
    table: "config",
    scope: &["environment"],
    key: "key",
    conflict: "environment, key",
    values: &["value"],
    keep: &[],
    returns: &[],
};

#[async_trait]
impl ConfigStore for PgStore {
    async fn get_config(&self, env: &EnvName, key: &ConfigKey) -> StoreResult<Option<ConfigEntry>> {
        let mut c = self.acquire().await?;
        let row = sqlx::query(
            "SELECT value, revision, created_at, updated_at FROM config
             WHERE environment = $1 AND key = $2",
        )
        .bind(env.as_str())
        .bind(key.as_str())
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
        row.map(|r| entry(env.clone(), key.clone(), &r)).transpose()
    }

    async fn list_config(
        &self,
        env: &EnvName,
        after: Option<&ConfigKey>,
        size: PageSize,
    ) -> StoreResult<Vec<ConfigEntry>> {
        let mut c = self.acquire().await?;
        let columns = "value, revision, created_at, updated_at, key";
        let mut sql = open_bounded(columns, "octet_length(key) + octet_length(value)", "key");
        sql.push("FROM config WHERE environment = ")
            .push_bind(env.as_str())
            .push(" AND key > ")
            .push_bind(after.map_or("", ConfigKey::as_str));
        close_bounded(&mut sql, "key", size);
        let rows = sql.build().fetch(&mut *c);
        let make = |r: &PgRow| {
            let key: String = r.try_get(4).map_err(db)?;
            let key = ConfigKey::new(&key).map_err(corrupt)?;
            entry(env.clone(), key, r)
        };
        read_page(rows, size, make, ConfigEntry::weight).await
    }

    async fn put_config(
        &self,
        env: &EnvName,
        key: &ConfigKey,
        value: String,
        precondition: Precondition,
        at: Timestamp,
        actor: &Actor,
    ) -> StoreResult<ConfigPutOutcome> {
        let (env, key, actor) = (env.clone(), key.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, key, actor) = (&env, &key, &actor);
                let author = key_scope(&mut tx, actor, env).await?;
                let cells = [Cell::Text(&value)];
                let written = CONFIG
                    .put(
                        &mut tx,
                        &[env.as_str()],
                        key.as_str(),
                        &cells,
                        precondition,
                        at.millis(),
                    )
                    .await?;
                let out = ConfigPutOutcome {
                    created: written.created(),
                    entry: ConfigEntry {
                        environment: env.clone(),
                        key: key.clone(),
                        value,
                        revision: written.revision,
                        created_at: Timestamp::from_millis(written.created_at),
                        updated_at: at,
                    },
                };
                append(&mut tx, &author, &[Change::config_written(&out)]);
                tx.keep();
                Ok(out)
            })
        })
        .await
    }

    async fn delete_config(
        &self,
        env: &EnvName,
        key: &ConfigKey,
        precondition: Precondition,
        actor: &Actor,
    ) -> StoreResult<ConfigEntry> {
        let (env, key, actor) = (env.clone(), key.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let (env, key, actor) = (&env, &key, &actor);
                // Step 1 (whether or not the environment exists: Coffer's own entries may outlive
                // it), then step 3: a deletion of the environment waits for this one.
                lock_environment(&mut tx, env).await?;
                let author = check_actor(&mut tx, actor).await?;
                let row = CONFIG
                    .delete(&mut tx, &[env.as_str()], key.as_str(), precondition)
                    .await?;
                let gone = entry(env.clone(), key.clone(), &row)?;
                let change = Change::config_deleted(&gone, Timestamp::now());
                append(&mut tx, &author, &[change]);
                tx.keep();
                Ok(gone)
            })
        })
        .await
    }
}

/// An entry from `value, revision, created_at, updated_at`.
fn entry(environment: EnvName, key: ConfigKey, r: &PgRow) -> StoreResult<ConfigEntry> {
    Ok(ConfigEntry {
        environment,
        key,
        value: r.try_get(0).map_err(db)?,
        revision: unsigned(r.try_get(1).map_err(db)?)?,
        created_at: Timestamp::from_millis(r.try_get(2).map_err(db)?),
        updated_at: Timestamp::from_millis(r.try_get(3).map_err(db)?),
    })
}
