//! `SecretStore` on the `secrets` table.

use std::collections::BTreeMap;

use async_trait::async_trait;
use coffer_crypto::KeyVersion;
use coffer_store::{
    Actor, BatchPut, Capabilities, Change, EnvId, EnvName, Environment, MAX_GET_MANY, Precondition,
    PutOutcome, Replacement, SecretListing, SecretMeta, SecretName, SecretOrder, SecretPage,
    SecretPageFill, SecretRecord, SecretStore, StoreError, StoreResult, StoredValue, Timestamp,
    in_asked_order,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use secrecy::{ExposeSecret, SecretString};

use crate::cache::ENTRY_OVERHEAD;
use crate::journal::{append, check_actor};
use crate::{SqliteStore, corrupt, unavailable};

#[async_trait]
impl SecretStore for SqliteStore {
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
        let row = self.read(|c| {
            c.prepare_cached(
                "SELECT key_version, revision, created_at, updated_at, value
                 FROM secrets WHERE environment = ?1 AND name = ?2 AND environment_id = ?3",
            )?
            .query_row(
                params![env.name.as_str(), name.as_str(), env.id.as_str()],
                |r| Ok((meta_columns(r)?, r.get::<_, String>(4)?)),
            )
            .optional()
        })?;
        let Some(((key_version, revision, created, updated), value)) = row else {
            return Ok(None);
        };
        let meta = meta(env, name.clone(), key_version, revision, created, updated);
        Ok(Some(SecretRecord {
            meta,
            value: stored(key_version, value)?,
        }))
    }

    async fn get_many(
        &self,
        env: &Environment,
        names: &[SecretName],
    ) -> StoreResult<Vec<Option<SecretRecord>>> {
        // Every name from the cache, all tagged with one epoch that is still current: one
        // snapshot, as one statement would read.
        let at = self.epoch.begin();
        let cached: Option<Vec<_>> = at.and_then(|at| {
            names
                .iter()
                .map(|name| self.value_cache.lookup(&env.id, name, at))
                .collect()
        });
        if let Some(rows) = cached.filter(|_| at.is_some_and(|at| self.epoch.unchanged(at))) {
            return names
                .iter()
                .zip(rows)
                .map(|(name, row)| row.map(|row| record(env, name, &row)).transpose())
                .collect();
        }
        let mut records = Vec::with_capacity(names.len());
        for chunk in names.chunks(MAX_GET_MANY) {
            // One statement (one read transaction) per chunk. The list is padded to a power
            // of two with its last name, so a few statements serve every count and do not
            // push the hot ones out of the connection's statement cache.
            let slots = chunk.len().next_power_of_two();
            let sql = format!(
                "SELECT key_version, revision, created_at, updated_at, value, name FROM secrets
                 WHERE environment = ?1 AND environment_id = ?2 AND name IN ({})",
                vec!["?"; slots].join(", ")
            );
            let last = chunk.last().map_or("", SecretName::as_str);
            let rows = self.read(|c| {
                let mut stmt = c.prepare_cached(&sql)?;
                let params = [env.name.as_str(), env.id.as_str()]
                    .into_iter()
                    .chain(chunk.iter().map(SecretName::as_str))
                    .chain(std::iter::repeat_n(last, slots - chunk.len()));
                let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
                    Ok((
                        r.get::<_, String>(5)?,
                        (meta_columns(r)?, r.get::<_, String>(4)?),
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })?;
            if let Some(at) = at
                && self.epoch.unchanged(at)
            {
                for name in chunk {
                    let weight = ENTRY_OVERHEAD + name.as_str().len();
                    // Dev mode's plaintext (key version 0) is not kept beyond the request.
                    match rows.iter().find(|(n, _)| n == name.as_str()) {
                        None => self.value_cache.insert(&env.id, name, at, None, weight),
                        Some((_, row)) if row.0.0 != 0 => {
                            let (row, weight) = (Some(row.clone()), weight + row.1.len());
                            self.value_cache.insert(&env.id, name, at, row, weight);
                        }
                        Some(_) => {}
                    }
                }
            }
            records.extend(in_asked_order(chunk, &rows, |name, row| {
                record(env, name, row)
            })?);
        }
        Ok(records)
    }

    async fn meta(&self, env: &Environment, name: &SecretName) -> StoreResult<Option<SecretMeta>> {
        let read = || self.meta_uncached(env, name);
        let weigh = |_: &Option<SecretMeta>| Some(ENTRY_OVERHEAD + name.as_str().len());
        self.meta_cache.get(&self.epoch, &env.id, name, read, weigh)
    }

    async fn list(
        &self,
        env: &Environment,
        listing: &SecretListing<'_>,
        limit: usize,
    ) -> StoreResult<SecretPage> {
        let after_name = listing.after.map(|(n, _)| n.as_str());
        let after_updated = listing.after.map(|(_, at)| at.millis());
        let mut page = SecretPageFill::new(listing.search, limit);
        let rows = i64::try_from(page.rows()).unwrap_or(i64::MAX);
        let (env_name, env_id) = (env.name.as_str(), env.id.as_str());
        let sql = list_sql(listing.order, after_name.is_some());
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&env_name, &env_id];
        if let (Some(name), Some(updated)) = (&after_name, &after_updated) {
            if listing.order.by_update() {
                values.push(updated);
            }
            values.push(name);
        }
        values.push(&rows);
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
            while !page.is_full() {
                let Some(r) = rows.next()? else { break };
                let (v, rev, c, u) = meta_columns(r)?;
                let name: String = r.get(4)?;
                match SecretName::new(&name) {
                    Ok(name) => page.push(meta(env, name, v, rev, c, u)),
                    Err(e) => return Ok(Err(corrupt(e))),
                };
            }
            Ok(Ok(()))
        })??;
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
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                check_environment(c, &env)?;
                let out = put(c, &env, name, value, precondition, at)?;
                append(c, &author, &[Change::secret_written(&out)])?;
                Ok(out)
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
        let (env, actor) = (env.clone(), actor.clone());
        // One writer job is one savepoint: the first refusal rolls back every entry.
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                check_environment(c, &env)?;
                let mut changes = Vec::with_capacity(batch.len());
                let outcomes = batch
                    .into_iter()
                    .map(|entry| match entry.value {
                        Some(value) => {
                            let out = put(c, &env, entry.name, value, entry.precondition, at)?;
                            changes.push(Change::secret_written(&out));
                            Ok(Some(out))
                        }
                        None => {
                            let current = current(c, &env, &entry.name).map_err(unavailable)?;
                            let revision = current.map(|(_, rev, _, _)| rev);
                            if !entry.precondition.admits(revision) {
                                return Err(StoreError::Conflict { current: revision });
                            }
                            // Not a change, but it tells the caller its guess was the stored
                            // value: on the record (audit only).
                            if let Some((v, rev, created, updated)) = current {
                                let meta = meta(&env, entry.name, v, rev, created, updated);
                                changes.push(Change::secret_unchanged(&meta, at));
                            }
                            Ok(None)
                        }
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                append(c, &author, &changes)?;
                Ok(outcomes)
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
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                let Some((v, rev, created, updated)) = current(c, &env, &name).map_err(unavailable)? else {
                    return Err(StoreError::NotFound);
                };
                if !precondition.admits(Some(rev)) {
                    return Err(StoreError::Conflict { current: Some(rev) });
                }
                c.prepare_cached(
                    "DELETE FROM secrets WHERE environment = ?1 AND name = ?2 AND environment_id = ?3",
                )
                .and_then(|mut s| s.execute(params![env.name.as_str(), name.as_str(), env.id.as_str()]))
                .map_err(unavailable)?;
                forget_mark(c, &env.name, &name)?;
                let gone = meta(&env, name, v, rev, created, updated);
                append(
                    c,
                    &author,
                    &[Change::secret_deleted(&gone, Timestamp::now())],
                )?;
                Ok(gone)
            })
            .await
    }

    async fn scan(
        &self,
        after: Option<&(EnvName, SecretName)>,
        limit: usize,
    ) -> StoreResult<Vec<SecretRecord>> {
        let (after_env, after_name) = after.map_or((String::new(), String::new()), |(e, n)| {
            (e.as_str().to_owned(), n.as_str().to_owned())
        });
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read_off_thread(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT key_version, revision, created_at, updated_at, environment, name, value,
                        environment_id
                 FROM secrets WHERE (environment, name) > (?1, ?2) AND environment_id <> ''
                 ORDER BY environment, name LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![after_env, after_name, limit], |r| {
                    Ok((
                        meta_columns(r)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|((v, rev, c, u), env, name, value, id)| {
                let env = Environment {
                    name: EnvName::new(&env).map_err(corrupt)?,
                    id: EnvId::new(&id).map_err(corrupt)?,
                    created_at: Timestamp::from_millis(0),
                };
                let name = SecretName::new(&name).map_err(corrupt)?;
                Ok(SecretRecord {
                    meta: meta(&env, name, v, rev, c, u),
                    value: stored(v, value)?,
                })
            })
            .collect()
    }

    async fn replace_values(
        &self,
        batch: Vec<Replacement>,
        actor: &Actor,
    ) -> StoreResult<Vec<bool>> {
        let actor = actor.clone();
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                let mut stmt = c
                    .prepare_cached(
                        "UPDATE secrets SET value = ?4, key_version = ?5
                         WHERE environment = ?1 AND name = ?2 AND revision = ?3
                           AND key_version = ?6 AND value = ?7 AND environment_id = ?8",
                    )
                    .map_err(unavailable)?;
                let applied = batch
                    .iter()
                    .map(|r| {
                        stmt.execute(params![
                            r.environment.as_str(),
                            r.name.as_str(),
                            r.revision,
                            stored_text(&r.value),
                            r.value.key_version_number(),
                            r.previous.key_version_number(),
                            stored_text(&r.previous),
                            r.environment_id.as_str(),
                        ])
                        .map(|n| n == 1)
                        .map_err(unavailable)
                    })
                    .collect::<StoreResult<Vec<bool>>>()?;
                drop(stmt);
                let count = applied.iter().filter(|a| **a).count() as u64;
                if count > 0 {
                    append(
                        c,
                        &author,
                        &[Change::keys_rewrapped(count, Timestamp::now())],
                    )?;
                }
                Ok(applied)
            })
            .await
    }

    async fn purge_environment(&self, env: &Environment) -> StoreResult<u64> {
        let env = env.clone();
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "DELETE FROM secrets WHERE environment = ?1 AND environment_id = ?2",
                        [env.name.as_str(), env.id.as_str()],
                    )
                    .map_err(unavailable)?;
                forget_environment_marks(c, &env.name)?;
                Ok(n as u64)
            })
            .await
    }

    async fn count_by_key_version(&self) -> StoreResult<BTreeMap<u32, u64>> {
        self.read_off_thread(|c| {
            let mut stmt =
                c.prepare_cached("SELECT key_version, COUNT(*) FROM secrets GROUP BY key_version")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u64>(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        // The catalog's ping (same file) also checks the writer; once is enough.
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }
}

impl SqliteStore {
    fn meta_uncached(
        &self,
        env: &Environment,
        name: &SecretName,
    ) -> StoreResult<Option<SecretMeta>> {
        let row = self.read(|c| current(c, env, name))?;
        Ok(row.map(|(v, rev, c, u)| meta(env, name.clone(), v, rev, c, u)))
    }
}

pub(crate) type MetaColumns = (u32, u64, i64, i64);

/// A secret row as read: its metadata columns and its stored value (sealed, when cached).
pub(crate) type SealedRow = (MetaColumns, String);

fn record(env: &Environment, name: &SecretName, row: &SealedRow) -> StoreResult<SecretRecord> {
    let ((key_version, revision, created, updated), value) = row;
    Ok(SecretRecord {
        meta: meta(
            env,
            name.clone(),
            *key_version,
            *revision,
            *created,
            *updated,
        ),
        value: stored(*key_version, value.clone())?,
    })
}

fn meta_columns(r: &Row<'_>) -> rusqlite::Result<MetaColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn meta(
    environment: &Environment,
    name: SecretName,
    key_version: u32,
    revision: u64,
    created: i64,
    updated: i64,
) -> SecretMeta {
    SecretMeta {
        environment: environment.name.clone(),
        environment_id: environment.id.clone(),
        name,
        revision,
        key_version,
        created_at: Timestamp::from_millis(created),
        updated_at: Timestamp::from_millis(updated),
    }
}

/// Rebuilds a stored value from its columns (`key_version` 0 = plaintext). Also a
/// function's signing secrets (`functions`), stored the same way.
pub(crate) fn stored(key_version: u32, value: String) -> StoreResult<StoredValue> {
    Ok(match key_version {
        0 => StoredValue::Plain(SecretString::from(value)),
        v => StoredValue::Sealed {
            key_version: KeyVersion::new(v).map_err(corrupt)?,
            blob: value,
        },
    })
}

/// The text that goes into the `value` column (and a function's `signing_value`).
pub(crate) fn stored_text(value: &StoredValue) -> &str {
    match value {
        StoredValue::Plain(plain) => plain.expose_secret(),
        StoredValue::Sealed { blob, .. } => blob,
    }
}

/// A value is written only into the incarnation it was sealed for, and only while that
/// incarnation exists, in the writing transaction: nothing lands in an environment deleted
/// (or deleted and created again) while the request was in flight.
pub(crate) fn check_environment(c: &Connection, env: &Environment) -> StoreResult<()> {
    let exists: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM environments WHERE name = ?1 AND id = ?2)")
        .and_then(|mut s| s.query_row([env.name.as_str(), env.id.as_str()], |r| r.get(0)))
        .map_err(unavailable)?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// A key writes config only into an environment that exists at the moment of the write.
/// (Config is not bound to an incarnation: an entry written by name lands in the
/// environment of that name as it is when the write commits.)
pub(crate) fn check_environment_named(
    c: &Connection,
    actor: &Actor,
    env: &EnvName,
) -> StoreResult<()> {
    if matches!(actor, Actor::System) {
        return Ok(());
    }
    let exists: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM environments WHERE name = ?1)")
        .and_then(|mut s| s.query_row([env.as_str()], |r| r.get(0)))
        .map_err(unavailable)?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// Removes the secret's unreadable mark, if any: it was written or deleted.
fn forget_mark(c: &Connection, env: &EnvName, name: &SecretName) -> StoreResult<()> {
    c.prepare_cached("DELETE FROM unreadable_values WHERE environment = ?1 AND name = ?2")
        .and_then(|mut s| s.execute(params![env.as_str(), name.as_str()]))
        .map(drop)
        .map_err(unavailable)
}

/// Removes every unreadable mark of `env`: its secrets went (or a new one starts empty).
pub(crate) fn forget_environment_marks(c: &Connection, env: &EnvName) -> StoreResult<()> {
    c.prepare_cached("DELETE FROM unreadable_values WHERE environment = ?1")
        .and_then(|mut s| s.execute([env.as_str()]))
        .map(drop)
        .map_err(unavailable)
}

fn current(
    c: &Connection,
    env: &Environment,
    name: &SecretName,
) -> rusqlite::Result<Option<MetaColumns>> {
    c.prepare_cached(
        "SELECT key_version, revision, created_at, updated_at
         FROM secrets WHERE environment = ?1 AND name = ?2 AND environment_id = ?3",
    )?
    .query_row(
        params![env.name.as_str(), name.as_str(), env.id.as_str()],
        meta_columns,
    )
    .optional()
}

fn put(
    c: &Connection,
    env: &Environment,
    name: SecretName,
    value: StoredValue,
    precondition: Precondition,
    at: Timestamp,
) -> StoreResult<PutOutcome> {
    let existing = current(c, env, &name).map_err(unavailable)?;
    if !precondition.admits(existing.map(|(_, rev, _, _)| rev)) {
        return Err(StoreError::Conflict {
            current: existing.map(|(_, rev, _, _)| rev),
        });
    }
    let key_version = value.key_version_number();
    let stored = stored_text(&value);
    let (revision, created) = match existing {
        Some((_, rev, created, _)) => {
            c.prepare_cached(
                "UPDATE secrets SET value = ?3, key_version = ?4, revision = ?5, updated_at = ?6
                 WHERE environment = ?1 AND name = ?2",
            )
            .and_then(|mut s| {
                s.execute(params![
                    env.name.as_str(),
                    name.as_str(),
                    stored,
                    key_version,
                    rev + 1,
                    at.millis()
                ])
            })
            .map_err(unavailable)?;
            (rev + 1, created)
        }
        None => {
            c.prepare_cached(
                "INSERT INTO secrets (environment, name, value, key_version, revision, created_at, updated_at, environment_id)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, ?6)",
            )
            .and_then(|mut s| s.execute(params![env.name.as_str(), name.as_str(), stored, key_version, at.millis(), env.id.as_str()]))
            .map_err(unavailable)?;
            (1, at.millis())
        }
    };
    // A new revision supersedes a mark of the old one, in this transaction.
    forget_mark(c, &env.name, &name)?;
    let created_now = existing.is_none();
    Ok(PutOutcome {
        meta: meta(env, name, key_version, revision, created, at.millis()),
        created: created_now,
    })
}

/// The statement of one listing page: parameters environment, incarnation, then the cursor
/// (its time, for the orders by update, then its name), then the rows to read. Only the
/// conditions that apply: a cursor written as `(? IS NULL OR name > ?)` keeps SQLite from
/// starting the index walk at the cursor, so a page deep in a large environment read every
/// row before it (22 ms at depth 500,000 of 1,000,000). A search is applied to the rows as
/// they are read ([`SecretPageFill`]), which bounds how many it examines. One statement per
/// order and cursor (8 at most, each cached).
fn list_sql(order: SecretOrder, cursor: bool) -> String {
    let (after, by) = match order {
        SecretOrder::NameAsc => ("name > ?", "name"),
        SecretOrder::NameDesc => ("name < ?", "name DESC"),
        SecretOrder::UpdatedAsc => ("(updated_at, name) > (?, ?)", "updated_at, name"),
        SecretOrder::UpdatedDesc => ("(updated_at, name) < (?, ?)", "updated_at DESC, name DESC"),
    };
    let mut sql = String::from(
        "SELECT key_version, revision, created_at, updated_at, name
         FROM secrets WHERE environment = ? AND environment_id = ?",
    );
    if cursor {
        sql.push_str(" AND ");
        sql.push_str(after);
    }
    sql.push_str(" ORDER BY ");
    sql.push_str(by);
    sql.push_str(" LIMIT ?");
    sql
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use coffer_store::{AccessStore, ApiKeyId, ApiKeyMeta, ApiKeyRecord, Role};

    use crate::test_env;

    use super::*;

    /// Secret writes re-check the acting key in their transaction, like catalog writes: a
    /// manage key revoked mid-request writes, deletes and rewraps nothing.
    #[tokio::test]
    async fn secret_writes_by_a_revoked_key_change_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let prod = test_env("prod");
        let env = prod.name.clone();
        let name = SecretName::new("A").expect("name");
        let sys = Actor::System;
        store.create_environment(&prod, &sys).await.expect("env");
        let key = ApiKeyRecord {
            meta: ApiKeyMeta {
                id: ApiKeyId::new("ak_01").expect("id"),
                name: "ci".into(),
                role: Role::Manage(env.clone()),
                created_at: Timestamp::from_millis(1),
            },
            key_hash: "h".into(),
        };
        store.insert_api_key(&key, &sys).await.expect("key");
        let actor = Actor::Key {
            id: key.meta.id.clone(),
            environment: Some(env.clone()),
            origin: Default::default(),
        };
        let plain = || StoredValue::Plain(SecretString::from("v"));
        let at = Timestamp::from_millis(2);
        store
            .put(&prod, &name, plain(), Precondition::None, at, &actor)
            .await
            .expect("allowed while the key exists");
        // Revoke it the way an environment deletion does: drop and re-create the environment.
        store.delete_environment(&env, &sys).await.expect("delete");
        let prod = test_env("prod");
        store.create_environment(&prod, &sys).await.expect("again");
        let put = store
            .put(&prod, &name, plain(), Precondition::None, at, &actor)
            .await;
        assert!(matches!(put, Err(StoreError::ActorRevoked)), "{put:?}");
        let batch = vec![BatchPut {
            name: name.clone(),
            value: Some(plain()),
            precondition: Precondition::None,
        }];
        let many = store.put_many(&prod, batch, at, &actor).await;
        assert!(matches!(many, Err(StoreError::ActorRevoked)), "{many:?}");
        assert!(store.meta(&prod, &name).await.expect("meta").is_none());
        store
            .put(&prod, &name, plain(), Precondition::None, at, &sys)
            .await
            .expect("system write");
        let del = store.delete(&prod, &name, Precondition::None, &actor).await;
        assert!(matches!(del, Err(StoreError::ActorRevoked)), "{del:?}");
        assert!(store.meta(&prod, &name).await.expect("meta").is_some());
    }

    /// A key's write lands only in an environment that exists when it commits: an admin
    /// PUT racing the deletion of its environment writes nothing (404), instead of leaving
    /// a row that a new environment of the same name would inherit or silently drop.
    #[tokio::test]
    async fn a_key_writes_only_into_an_environment_that_exists() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let admin = ApiKeyRecord {
            meta: ApiKeyMeta {
                id: ApiKeyId::new("ak_01").expect("id"),
                name: "admin".into(),
                role: Role::Admin,
                created_at: Timestamp::from_millis(1),
            },
            key_hash: "h".into(),
        };
        store
            .insert_api_key(&admin, &Actor::System)
            .await
            .expect("key");
        let actor = Actor::Key {
            id: admin.meta.id.clone(),
            environment: None,
            origin: Default::default(),
        };
        let gone = test_env("gone");
        let name = SecretName::new("A").expect("name");
        let plain = || StoredValue::Plain(SecretString::from("v"));
        let at = Timestamp::from_millis(2);
        let put = store
            .put(&gone, &name, plain(), Precondition::None, at, &actor)
            .await;
        assert!(matches!(put, Err(StoreError::NotFound)), "{put:?}");
        let batch = vec![BatchPut {
            name: name.clone(),
            value: Some(plain()),
            precondition: Precondition::None,
        }];
        let many = store.put_many(&gone, batch, at, &actor).await;
        assert!(matches!(many, Err(StoreError::NotFound)), "{many:?}");
        assert!(store.meta(&gone, &name).await.expect("meta").is_none());
    }

    /// A transaction that changed no row (a readiness probe) keeps the metadata cache; one
    /// that changed a catalog row (here, a secret) invalidates it.
    #[tokio::test]
    async fn only_transactions_that_change_rows_invalidate_the_metadata_cache() {
        use coffer_store::AccessStore;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let epoch = || store.epoch.now();
        let before = epoch();
        AccessStore::ping(&store).await.expect("ping");
        assert_eq!(epoch(), before, "an empty write keeps the cache");
        let env = test_env("prod");
        store
            .create_environment(&env, &Actor::System)
            .await
            .expect("env");
        let before = epoch();
        let name = SecretName::new("A").expect("name");
        let plain = StoredValue::Plain(SecretString::from("v"));
        let at = Timestamp::from_millis(1);
        store
            .put(&env, &name, plain, Precondition::None, at, &Actor::System)
            .await
            .expect("put");
        assert_ne!(epoch(), before, "a write invalidates it");
    }

    /// The metadata cache never answers with metadata older than an acknowledged write,
    /// while readers hammer the same secret from other tasks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metadata_reads_after_an_acknowledged_write_never_see_an_older_revision() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = std::sync::Arc::new(SqliteStore::open(dir.path()).expect("open"));
        let env = test_env("prod");
        store
            .create_environment(&env, &Actor::System)
            .await
            .expect("env");
        let name = SecretName::new("A").expect("name");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, env, name, stop) =
                    (store.clone(), env.clone(), name.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        store.meta(&env, &name).await.expect("meta");
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for revision in 1..=200u64 {
            let plain = StoredValue::Plain(SecretString::from("v"));
            let at = Timestamp::from_millis(revision as i64);
            let out = store
                .put(&env, &name, plain, Precondition::None, at, &Actor::System)
                .await
                .expect("put");
            assert_eq!(out.meta.revision, revision);
            let seen = store
                .meta(&env, &name)
                .await
                .expect("meta")
                .expect("exists");
            assert_eq!(
                seen.revision, revision,
                "a read after the ack saw an older write"
            );
        }
        store
            .delete(&env, &name, Precondition::None, &Actor::System)
            .await
            .expect("delete");
        assert!(store.meta(&env, &name).await.expect("meta").is_none());
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.await.expect("reader");
        }
    }

    /// Sealed values are cached like metadata: a `get_many` after an acknowledged put
    /// never answers with an older value, while readers hammer the same names; a deleted
    /// secret is gone at once; dev mode's plaintext is never kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn value_reads_after_an_acknowledged_write_never_see_an_older_value() {
        let (_dir, store, env) = crate::store_with_env("prod").await;
        let names = vec![
            SecretName::new("A").expect("name"),
            SecretName::new("B").expect("name"),
        ];
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, env, names, stop) =
                    (store.clone(), env.clone(), names.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        store.get_many(&env, &names).await.expect("get_many");
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let sealed = |text: String| StoredValue::Sealed {
            key_version: KeyVersion::new(1).expect("version"),
            blob: text,
        };
        let blob = |record: &Option<SecretRecord>| match record {
            Some(SecretRecord {
                value: StoredValue::Sealed { blob, .. },
                ..
            }) => Some(blob.clone()),
            Some(_) => panic!("not sealed"),
            None => None,
        };
        for revision in 1..=200u64 {
            let at = Timestamp::from_millis(revision as i64);
            let text = format!("blob-{revision}");
            let out = store
                .put(
                    &env,
                    &names[0],
                    sealed(text.clone()),
                    Precondition::None,
                    at,
                    &Actor::System,
                )
                .await
                .expect("put");
            assert_eq!(out.meta.revision, revision);
            let seen = store.get_many(&env, &names).await.expect("get_many");
            assert_eq!(
                blob(&seen[0]),
                Some(text),
                "a read after the ack saw an older write"
            );
            assert_eq!(seen[0].as_ref().map(|r| r.meta.revision), Some(revision));
            assert_eq!(blob(&seen[1]), None, "B was never set");
        }
        store
            .delete(&env, &names[0], Precondition::None, &Actor::System)
            .await
            .expect("delete");
        let seen = store.get_many(&env, &names).await.expect("get_many");
        assert!(seen.iter().all(Option::is_none), "deleted");
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.await.expect("reader");
        }
        let plain = StoredValue::Plain(SecretString::from("dev-mode-text"));
        let at = Timestamp::from_millis(1_000);
        store
            .put(
                &env,
                &names[1],
                plain,
                Precondition::None,
                at,
                &Actor::System,
            )
            .await
            .expect("put");
        store.get_many(&env, &names).await.expect("get_many");
        let epoch = store.epoch.now();
        assert_eq!(
            store.value_cache.lookup(&env.id, &names[1], epoch),
            None,
            "plaintext kept in the cache"
        );
        assert_eq!(
            store.value_cache.lookup(&env.id, &names[0], epoch),
            Some(None),
            "an absent secret is cached as absent"
        );
    }

    /// Audit rows and runs leave the catalog epoch (and every cache) as it was; a catalog
    /// write moves it.
    #[tokio::test]
    async fn only_catalog_writes_move_the_catalog_epoch() {
        use coffer_store::{FunctionId, Resolution, RunStore};
        let (_dir, store, env) = crate::store_with_env("prod").await;
        let epoch = || store.epoch.now();
        let before = epoch();
        let resolution = Resolution {
            environment: env.name.clone(),
            function_id: FunctionId::new("f").expect("id"),
            run_id: None,
            resolved: vec![SecretName::new("A").expect("name")],
            missing: Vec::new(),
            at: Timestamp::from_millis(1),
        };
        store
            .record_resolutions(&[resolution], &Actor::System)
            .await
            .expect("audited");
        assert_eq!(epoch(), before, "an audit row moved the catalog epoch");
        let plain = StoredValue::Plain(SecretString::from("v"));
        let name = SecretName::new("A").expect("name");
        let at = Timestamp::from_millis(2);
        store
            .put(&env, &name, plain, Precondition::None, at, &Actor::System)
            .await
            .expect("put");
        assert_ne!(epoch(), before, "a secret write kept the catalog epoch");
        let before = epoch();
        store
            .delete_environment(&env.name, &Actor::System)
            .await
            .expect("delete");
        assert_ne!(
            epoch(),
            before,
            "an environment's deletion kept the catalog epoch"
        );
    }

    /// A page after a cursor in name order starts its index walk at the cursor (a range
    /// search on the primary key), in both directions, with or without a search: it reads
    /// a page's worth of rows, not every row before the cursor.
    #[test]
    fn listing_pages_walk_the_index_from_their_cursor() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("open");
        // A reader's connection, configured as the store's are (plans kept whatever is
        // bound, see `configure`).
        store
            .read(|c| {
                check_listing_plans(c);
                Ok(())
            })
            .expect("reader");
    }

    fn check_listing_plans(c: &rusqlite::Connection) {
        for (order, range) in [
            (SecretOrder::NameAsc, "name>?"),
            (SecretOrder::NameDesc, "name<?"),
        ] {
            {
                let sql = format!("EXPLAIN QUERY PLAN {}", list_sql(order, true));
                let mut stmt = c.prepare(&sql).expect("plan");
                let n = stmt.parameter_count();
                let params: Vec<&dyn rusqlite::ToSql> = (0..n).map(|_| &"x" as _).collect();
                let plan: Vec<String> = stmt
                    .query_map(rusqlite::params_from_iter(params), |r| {
                        r.get::<_, String>(3)
                    })
                    .expect("query")
                    .collect::<rusqlite::Result<_>>()
                    .expect("rows");
                let plan = plan.join(" | ");
                assert!(
                    plan.contains("SEARCH")
                        && plan.contains(range)
                        && !plan.contains("TEMP B-TREE"),
                    "{order:?}: {plan}"
                );
            }
        }
    }
}
