//! `FunctionStore` on the `functions` table. A function's rows go with its environment
//! incarnation by foreign key (see migration 7); its signing secrets are stored like secret
//! values (`key_version` 0 = plaintext).

use std::collections::BTreeMap;

use async_trait::async_trait;
use coffer_store::{
    Actor, Change, EnvId, EnvName, Environment, FunctionId, FunctionPutOutcome, FunctionRecord,
    FunctionStore, Precondition, Revision, SigningReplacement, StoreError, StoreResult,
    StoredValue, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::cache::ENTRY_OVERHEAD;
use crate::journal::{append, check_actor};
use crate::secrets::{check_environment, stored, stored_text};
use crate::{SqliteStore, corrupt, unavailable};

#[async_trait]
impl FunctionStore for SqliteStore {
    async fn get_function(
        &self,
        env: &EnvName,
        id: &FunctionId,
    ) -> StoreResult<Option<FunctionRecord>> {
        let read = || self.read(|c| current(c, env, id));
        // Dev mode's plaintext signing secrets are not kept beyond the request.
        let weigh = |row: &Option<Columns>| match row {
            None => Some(ENTRY_OVERHEAD),
            Some(row) => row.sealed().then(|| row.weight()),
        };
        let row = self.function_cache.get(&self.epoch, env, id, read, weigh)?;
        row.map(|cols| cols.parse(env)).transpose()
    }

    async fn list_functions(
        &self,
        env: &EnvName,
        after: Option<&FunctionId>,
        limit: usize,
    ) -> StoreResult<Vec<FunctionRecord>> {
        // An event's send reads every function of its environment to match triggers: a
        // page is cached like one function (sealed signing secrets only).
        let page = (
            after.map_or_else(String::new, |id| id.as_str().to_owned()),
            limit,
        );
        let read = || {
            let (after, limit) = (&page.0, i64::try_from(limit).unwrap_or(i64::MAX));
            self.read(|c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM functions WHERE environment = ?1 AND id > ?2
                     ORDER BY id LIMIT ?3"
                ))?;
                let rows = stmt.query_map(params![env.as_str(), after, limit], columns)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
        };
        let weigh = |rows: &Vec<Columns>| {
            let sealed = rows.iter().all(Columns::sealed);
            sealed.then(|| ENTRY_OVERHEAD + rows.iter().map(Columns::weight).sum::<usize>())
        };
        let rows = self.page_cache.get(&self.epoch, env, &page, read, weigh)?;
        rows.into_iter().map(|cols| cols.parse(env)).collect()
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
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                check_environment(c, &env)?;
                let revision = revision_in(c, &env, &id)?;
                if !precondition.admits(revision) {
                    return Err(StoreError::Conflict { current: revision });
                }
                let (name, env_id, fid) = (env.name.as_str(), env.id.as_str(), id.as_str());
                let cols = match revision {
                    // An update keeps the stored signing secret: only a rotation replaces it.
                    Some(_) => c
                        .prepare_cached(&format!(
                            "UPDATE functions SET spec = ?4, revision = revision + 1, updated_at = ?5
                             WHERE environment = ?1 AND environment_id = ?2 AND id = ?3
                             RETURNING {COLUMNS}"
                        ))
                        .and_then(|mut s| {
                            s.query_row(params![name, env_id, fid, spec, at.millis()], columns)
                        }),
                    None => c
                        .prepare_cached(&format!(
                            "INSERT INTO functions (environment, environment_id, id, spec,
                                 signing_key_version, signing_value, revision, created_at, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7)
                             RETURNING {COLUMNS}"
                        ))
                        .and_then(|mut s| {
                            s.query_row(
                                params![
                                    name,
                                    env_id,
                                    fid,
                                    spec,
                                    signing.key_version_number(),
                                    stored_text(&signing),
                                    at.millis()
                                ],
                                columns,
                            )
                        }),
                }
                .map_err(unavailable)?;
                let out = FunctionPutOutcome {
                    record: cols.parse(&env.name)?,
                    created: revision.is_none(),
                };
                append(c, &author, &[Change::function_written(&out)])?;
                Ok(out)
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
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                // The right-hand sides read the row as it was: the current secret becomes
                // the previous one, replacing an older previous one.
                let cols = c
                    .prepare_cached(&format!(
                        "UPDATE functions SET previous_key_version = signing_key_version,
                             previous_value = signing_value, previous_until = ?4,
                             signing_key_version = ?5, signing_value = ?6,
                             revision = revision + 1, updated_at = ?7
                         WHERE environment = ?1 AND environment_id = ?2 AND id = ?3
                         RETURNING {COLUMNS}"
                    ))
                    .and_then(|mut s| {
                        s.query_row(
                            params![
                                env.name.as_str(),
                                env.id.as_str(),
                                id.as_str(),
                                grace_until.millis(),
                                signing.key_version_number(),
                                stored_text(&signing),
                                at.millis()
                            ],
                            columns,
                        )
                        .optional()
                    })
                    .map_err(unavailable)?
                    .ok_or(StoreError::NotFound)?;
                let record = cols.parse(&env.name)?;
                append(c, &author, &[Change::function_rotated(&record)])?;
                Ok(record)
            })
            .await
    }

    async fn scan_functions(
        &self,
        after: Option<&(EnvName, FunctionId)>,
        limit: usize,
    ) -> StoreResult<Vec<FunctionRecord>> {
        let (after_env, after_id) = after.map_or((String::new(), String::new()), |(e, id)| {
            (e.as_str().to_owned(), id.as_str().to_owned())
        });
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .read_off_thread(move |c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS}, environment FROM functions
                     WHERE (environment, id) > (?1, ?2)
                     ORDER BY environment, id LIMIT ?3"
                ))?;
                let rows = stmt.query_map(params![after_env, after_id, limit], |r| {
                    Ok((columns(r)?, r.get::<_, String>(11)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(cols, env)| cols.parse(&EnvName::new(&env).map_err(corrupt)?))
            .collect()
    }

    async fn count_signing_by_key_version(&self) -> StoreResult<BTreeMap<u32, u64>> {
        self.read_off_thread(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT version, COUNT(*) FROM (
                     SELECT signing_key_version AS version FROM functions
                     UNION ALL
                     SELECT previous_key_version FROM functions
                     WHERE previous_key_version IS NOT NULL
                 ) GROUP BY version",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u64>(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn replace_signing(
        &self,
        batch: Vec<SigningReplacement>,
        actor: &Actor,
    ) -> StoreResult<Vec<bool>> {
        let actor = actor.clone();
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                // `IS` compares NULL as a value: a function read without a previous secret
                // is replaced only while it still has none. A secret kept as read is
                // written back as it is (`COALESCE`). Revision and timestamps stay.
                let mut stmt = c
                    .prepare_cached(
                        "UPDATE functions SET
                             signing_key_version = COALESCE(?7, signing_key_version),
                             signing_value = COALESCE(?8, signing_value),
                             previous_key_version = COALESCE(?11, previous_key_version),
                             previous_value = COALESCE(?12, previous_value)
                         WHERE environment = ?1 AND environment_id = ?2 AND id = ?3
                           AND revision = ?4 AND signing_key_version = ?5 AND signing_value = ?6
                           AND previous_key_version IS ?9 AND previous_value IS ?10",
                    )
                    .map_err(unavailable)?;
                let mut stored_anew = 0u64;
                let applied = batch
                    .iter()
                    .map(|r| {
                        let previous = r.previous_signing.as_ref();
                        let new_previous = previous.and_then(|p| p.new.as_ref());
                        let n = stmt
                            .execute(params![
                                r.environment.as_str(),
                                r.environment_id.as_str(),
                                r.id.as_str(),
                                r.revision,
                                r.signing.read.key_version_number(),
                                stored_text(&r.signing.read),
                                r.signing.new.as_ref().map(StoredValue::key_version_number),
                                r.signing.new.as_ref().map(stored_text),
                                previous.map(|p| p.read.key_version_number()),
                                previous.map(|p| stored_text(&p.read)),
                                new_previous.map(StoredValue::key_version_number),
                                new_previous.map(stored_text),
                            ])
                            .map_err(unavailable)?;
                        if n == 1 {
                            stored_anew += r.stored_anew();
                        }
                        Ok(n == 1)
                    })
                    .collect::<StoreResult<Vec<bool>>>()?;
                drop(stmt);
                if stored_anew > 0 {
                    append(
                        c,
                        &author,
                        &[Change::keys_rewrapped(stored_anew, Timestamp::now())],
                    )?;
                }
                Ok(applied)
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
                c.prepare_cached("DELETE FROM functions WHERE environment = ?1 AND id = ?2")
                    .and_then(|mut s| s.execute(params![env.as_str(), id.as_str()]))
                    .map_err(unavailable)?;
                let gone = cols.parse(&env)?;
                append(
                    c,
                    &author,
                    &[Change::function_deleted(&gone, Timestamp::now())],
                )?;
                Ok(gone)
            })
            .await
    }
}

const COLUMNS: &str = "environment_id, id, spec, signing_key_version, signing_value, \
     previous_key_version, previous_value, previous_until, revision, created_at, updated_at";

/// A `functions` row as read ([`COLUMNS`]), before its names and values are parsed.
#[derive(Clone)]
pub(crate) struct Columns {
    environment_id: String,
    id: String,
    spec: String,
    signing: (u32, String),
    previous: (Option<u32>, Option<String>, Option<i64>),
    revision: Revision,
    created_at: i64,
    updated_at: i64,
}

fn columns(r: &Row<'_>) -> rusqlite::Result<Columns> {
    Ok(Columns {
        environment_id: r.get(0)?,
        id: r.get(1)?,
        spec: r.get(2)?,
        signing: (r.get(3)?, r.get(4)?),
        previous: (r.get(5)?, r.get(6)?, r.get(7)?),
        revision: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

impl Columns {
    /// Whether its signing secrets are sealed (not dev mode's plaintext).
    fn sealed(&self) -> bool {
        self.signing.0 != 0 && self.previous.0 != Some(0)
    }

    /// About what it takes in a cache.
    fn weight(&self) -> usize {
        ENTRY_OVERHEAD
            + self.environment_id.len()
            + self.id.len()
            + self.spec.len()
            + self.signing.1.len()
            + self.previous.1.as_ref().map_or(0, String::len)
    }

    fn parse(self, environment: &EnvName) -> StoreResult<FunctionRecord> {
        let (version, value) = self.signing;
        let previous_signing = match self.previous {
            (Some(version), Some(value), Some(until)) => {
                Some((stored(version, value)?, Timestamp::from_millis(until)))
            }
            (None, None, None) => None,
            _ => return Err(corrupt("a function's previous signing secret is partial")),
        };
        Ok(FunctionRecord {
            environment: environment.clone(),
            environment_id: EnvId::new(&self.environment_id).map_err(corrupt)?,
            id: FunctionId::new(&self.id).map_err(corrupt)?,
            spec: self.spec,
            signing: stored(version, value)?,
            previous_signing,
            revision: self.revision,
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
        })
    }
}

/// The function `id` of the environment `env` (whichever incarnation holds the name: rows
/// of a deleted one went with it).
fn current(c: &Connection, env: &EnvName, id: &FunctionId) -> rusqlite::Result<Option<Columns>> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM functions WHERE environment = ?1 AND id = ?2"
    ))?
    .query_row(params![env.as_str(), id.as_str()], columns)
    .optional()
}

/// The revision of the function `id` of the incarnation `env`, if it exists.
fn revision_in(
    c: &Connection,
    env: &Environment,
    id: &FunctionId,
) -> StoreResult<Option<Revision>> {
    c.prepare_cached(
        "SELECT revision FROM functions
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

#[cfg(test)]
mod tests {
    use coffer_crypto::KeyVersion;
    use coffer_store::{AccessStore, FunctionStore, Precondition};

    use super::*;
    use crate::test_env;

    fn sealed(text: &str) -> StoredValue {
        StoredValue::Sealed {
            key_version: KeyVersion::new(1).expect("version"),
            blob: text.to_owned(),
        }
    }

    /// The function cache never answers with a function older than an acknowledged write:
    /// after an update, a rotation, a deletion, and an environment deleted and created
    /// again under the same name; and it never keeps dev mode's plaintext signing secret.
    #[tokio::test]
    async fn function_reads_follow_every_acknowledged_write() {
        let (_dir, store, env) = crate::store_with_env("prod").await;
        let (id, actor) = (FunctionId::new("f").expect("id"), Actor::System);
        let at = Timestamp::from_millis(1);
        // The function, and the page that lists it: both follow every write (its spec
        // and its signing secrets).
        let seen = |f: &FunctionRecord| {
            let blob = |v: &StoredValue| match v {
                StoredValue::Sealed { blob, .. } => blob.clone(),
                StoredValue::Plain(_) => "plaintext".to_owned(),
            };
            let previous = f.previous_signing.as_ref().map(|(v, _)| blob(v));
            (f.spec.clone(), blob(&f.signing), previous)
        };
        let get = async || {
            let one = store.get_function(&env.name, &id).await?;
            let page = store.list_functions(&env.name, None, 10).await?;
            let listed: Vec<_> = page.iter().map(seen).collect();
            let got: Vec<_> = one.iter().map(seen).collect();
            assert_eq!(listed, got, "list and get differ");
            Ok::<_, StoreError>(one)
        };
        assert!(get().await.expect("read").is_none());
        store
            .put_function(
                &env,
                &id,
                "{\"v\":1}".into(),
                sealed("s1"),
                Precondition::None,
                at,
                &actor,
            )
            .await
            .expect("put");
        assert_eq!(get().await.expect("read").expect("there").spec, "{\"v\":1}");
        get().await.expect("read (cached)");
        store
            .put_function(
                &env,
                &id,
                "{\"v\":2}".into(),
                sealed("s1"),
                Precondition::None,
                at,
                &actor,
            )
            .await
            .expect("update");
        assert_eq!(get().await.expect("read").expect("there").spec, "{\"v\":2}");
        let until = Timestamp::from_millis(10_000);
        store
            .rotate_signing_secret(&env, &id, sealed("s2"), until, at, &actor)
            .await
            .expect("rotate");
        let rotated = get().await.expect("read").expect("there");
        assert!(matches!(&rotated.signing, StoredValue::Sealed { blob, .. } if blob == "s2"));
        assert!(rotated.previous_signing.is_some());
        store
            .delete_function(&env.name, &id, Precondition::None, &actor)
            .await
            .expect("delete");
        assert!(get().await.expect("read").is_none(), "deleted");
        store
            .put_function(
                &env,
                &id,
                "{\"v\":3}".into(),
                sealed("s3"),
                Precondition::None,
                at,
                &actor,
            )
            .await
            .expect("put again");
        assert!(get().await.expect("read").is_some());
        store
            .delete_environment(&env.name, &actor)
            .await
            .expect("delete env");
        assert!(
            store
                .get_environment(&env.name)
                .await
                .expect("read")
                .is_none()
        );
        let again = test_env("prod");
        store
            .create_environment(&again, &actor)
            .await
            .expect("env again");
        let seen = store
            .get_environment(&env.name)
            .await
            .expect("read")
            .expect("there");
        assert_eq!(seen.id, again.id, "the new incarnation");
        assert!(
            get().await.expect("read").is_none(),
            "the old incarnation's function"
        );
        let plain = StoredValue::Plain(secrecy::SecretString::from("dev-signing-text"));
        store
            .put_function(
                &again,
                &id,
                "{}".into(),
                plain,
                Precondition::None,
                at,
                &actor,
            )
            .await
            .expect("dev mode put");
        assert!(get().await.expect("read").is_some());
        let epoch = store.epoch.now();
        assert!(
            store.function_cache.lookup(&env.name, &id, epoch).is_none(),
            "a plaintext signing secret was kept"
        );
        store
            .list_functions(&env.name, None, 10)
            .await
            .expect("list");
        let page = (String::new(), 10);
        assert!(
            store.page_cache.lookup(&env.name, &page, epoch).is_none(),
            "a page with a plaintext signing secret was kept"
        );
    }
}
