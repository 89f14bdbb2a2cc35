//! `ConfigStore` on the `config` table.

use async_trait::async_trait;
use coffer_store::{
    Actor, Change, ConfigEntry, ConfigKey, ConfigPutOutcome, ConfigStore, EnvName, PageSize,
    Precondition, StoreError, StoreResult, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::journal::{append, check_actor};
use crate::secrets::check_environment_named;
use crate::{SqliteStore, corrupt, read_page, unavailable};

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn get_config(&self, env: &EnvName, key: &ConfigKey) -> StoreResult<Option<ConfigEntry>> {
        let row = self.read(|c| current(c, env, key))?;
        Ok(row.map(|cols| entry(env.clone(), key.clone(), cols)))
    }

    async fn list_config(
        &self,
        env: &EnvName,
        after: Option<&ConfigKey>,
        size: PageSize,
    ) -> StoreResult<Vec<ConfigEntry>> {
        let after = after.map_or("", ConfigKey::as_str);
        let limit = i64::try_from(size.rows).unwrap_or(i64::MAX);
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT value, revision, created_at, updated_at, key
                 FROM config WHERE environment = ?1 AND key > ?2 ORDER BY key LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![env.as_str(), after, limit], |r| {
                Ok((columns(r)?, r.get::<_, String>(4)?))
            })?;
            let entries = rows.map(|row| {
                row.map(|(cols, key)| {
                    let key = ConfigKey::new(&key).map_err(corrupt)?;
                    Ok(entry(env.clone(), key, cols))
                })
            });
            read_page(size, entries, ConfigEntry::weight)
        })?
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
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                check_environment_named(c, &actor, &env)?;
                let existing = current(c, &env, &key).map_err(unavailable)?;
                let revision = existing.as_ref().map(|(_, rev, _, _)| *rev);
                if !precondition.admits(revision) {
                    return Err(StoreError::Conflict { current: revision });
                }
                let created_now = existing.is_none();
                let (revision, created) = match existing {
                    Some((_, rev, created, _)) => {
                        c.prepare_cached(
                            "UPDATE config SET value = ?3, revision = ?4, updated_at = ?5
                             WHERE environment = ?1 AND key = ?2",
                        )
                        .and_then(|mut s| {
                            s.execute(params![
                                env.as_str(),
                                key.as_str(),
                                value,
                                rev + 1,
                                at.millis()
                            ])
                        })
                        .map_err(unavailable)?;
                        (rev + 1, created)
                    }
                    None => {
                        c.prepare_cached(
                            "INSERT INTO config (environment, key, value, revision, created_at, updated_at)
                             VALUES (?1, ?2, ?3, 1, ?4, ?4)",
                        )
                        .and_then(|mut s| {
                            s.execute(params![env.as_str(), key.as_str(), value, at.millis()])
                        })
                        .map_err(unavailable)?;
                        (1, at.millis())
                    }
                };
                let out = ConfigPutOutcome {
                    created: created_now,
                    entry: entry(env, key, (value, revision, created, at.millis())),
                };
                append(c, &author, &[Change::config_written(&out)])?;
                Ok(out)
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
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                let Some(cols) = current(c, &env, &key).map_err(unavailable)? else {
                    return Err(StoreError::NotFound);
                };
                if !precondition.admits(Some(cols.1)) {
                    return Err(StoreError::Conflict {
                        current: Some(cols.1),
                    });
                }
                c.prepare_cached("DELETE FROM config WHERE environment = ?1 AND key = ?2")
                    .and_then(|mut s| s.execute(params![env.as_str(), key.as_str()]))
                    .map_err(unavailable)?;
                let gone = entry(env, key, cols);
                append(
                    c,
                    &author,
                    &[Change::config_deleted(&gone, Timestamp::now())],
                )?;
                Ok(gone)
            })
            .await
    }
}

/// value, revision, created_at, updated_at.
type Columns = (String, u64, i64, i64);

fn columns(r: &Row<'_>) -> rusqlite::Result<Columns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn current(c: &Connection, env: &EnvName, key: &ConfigKey) -> rusqlite::Result<Option<Columns>> {
    c.prepare_cached(
        "SELECT value, revision, created_at, updated_at
         FROM config WHERE environment = ?1 AND key = ?2",
    )?
    .query_row(params![env.as_str(), key.as_str()], columns)
    .optional()
}

fn entry(
    environment: EnvName,
    key: ConfigKey,
    (value, revision, created, updated): Columns,
) -> ConfigEntry {
    ConfigEntry {
        environment,
        key,
        value,
        revision,
        created_at: Timestamp::from_millis(created),
        updated_at: Timestamp::from_millis(updated),
    }
}
