//! `AccessStore` and `KeyStore` on the `environments`, `api_keys`, `key_canaries`,
//! `key_usage`, `unreadable_values` and `settings` tables. (Deleting or creating an
//! environment also clears its `secrets`, `config` and `unreadable_values` rows; its
//! `functions`, `runs` and `event_receipts` go with its row by foreign key.) Every change
//! appends its journal rows in its transaction.

use std::collections::BTreeMap;

use async_trait::async_trait;
use coffer_crypto::KeyVersion;
use coffer_store::{
    AccessStore, Actor, ApiKeyId, ApiKeyMeta, ApiKeyRecord, Canary, Change, EnvId, EnvName,
    Environment, KeyStore, Role, SecretName, StoreError, StoreResult, Timestamp, UnreadableMark,
    ValueCheck, Verification,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::cache::ENTRY_OVERHEAD;
use crate::journal::{Author, append, check_actor};
use crate::{SqliteStore, corrupt, unavailable};

/// Set once the first start has created its environment and admin key.
const BOOTSTRAPPED: &str = "bootstrapped_at";

impl SqliteStore {
    fn environment_uncached(&self, name: &EnvName) -> StoreResult<Option<Environment>> {
        let row = self.read(|c| {
            c.prepare_cached("SELECT created_at, id FROM environments WHERE name = ?1")?
                .query_row([name.as_str()], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()
        })?;
        row.map(|(ms, id)| {
            Ok(Environment {
                name: name.clone(),
                id: EnvId::new(&id).map_err(corrupt)?,
                created_at: Timestamp::from_millis(ms),
            })
        })
        .transpose()
    }
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        SqliteStore::ping(self).await
    }

    async fn bootstrap(&self, env: &Environment, admin: &ApiKeyRecord) -> StoreResult<bool> {
        let (env, admin) = (env.clone(), admin.clone());
        self.writer
            .write(move |c| {
                let done: bool = c
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM settings WHERE name = ?1)",
                        [BOOTSTRAPPED],
                        |r| r.get(0),
                    )
                    .map_err(unavailable)?;
                if done {
                    return Ok(false);
                }
                insert_environment(c, &env)?;
                insert_api_key(c, &admin)?;
                append(
                    c,
                    &Author::system(),
                    &[
                        Change::environment_created(&env),
                        Change::api_key_created(&admin.meta),
                    ],
                )?;
                c.execute(
                    "INSERT INTO settings (name, value) VALUES (?1, ?2)",
                    params![BOOTSTRAPPED, Timestamp::now().millis().to_string()],
                )
                .map_err(unavailable)?;
                Ok(true)
            })
            .await
    }

    async fn list_environments(&self) -> StoreResult<Vec<Environment>> {
        let rows = self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT name, created_at, id FROM environments ORDER BY name")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(name, created, id)| {
                Ok(Environment {
                    name: EnvName::new(&name).map_err(corrupt)?,
                    id: EnvId::new(&id).map_err(corrupt)?,
                    created_at: Timestamp::from_millis(created),
                })
            })
            .collect()
    }

    async fn get_environment(&self, name: &EnvName) -> StoreResult<Option<Environment>> {
        let read = || self.environment_uncached(name);
        let weigh = |_: &Option<Environment>| Some(ENTRY_OVERHEAD + name.as_str().len());
        self.environment_cache
            .get(&self.epoch, name, &(), read, weigh)
    }

    async fn create_environment(&self, env: &Environment, actor: &Actor) -> StoreResult<()> {
        let (env, actor) = (env.clone(), actor.clone());
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                insert_environment(c, &env)?;
                append(c, &author, &[Change::environment_created(&env)])
            })
            .await
    }

    async fn delete_environment(&self, name: &EnvName, actor: &Actor) -> StoreResult<u64> {
        let (name, actor) = (name.clone(), actor.clone());
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                let n = c
                    .execute("DELETE FROM environments WHERE name = ?1", [name.as_str()])
                    .map_err(unavailable)?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                // Same transaction: no key of the old environment outlives it, and in this
                // backend its secret values and config entries go with it (its functions,
                // runs and idempotency receipts went with its row: ON DELETE CASCADE).
                c.execute(
                    "DELETE FROM api_keys WHERE environment = ?1",
                    [name.as_str()],
                )
                .map_err(unavailable)?;
                c.execute("DELETE FROM config WHERE environment = ?1", [name.as_str()])
                    .map_err(unavailable)?;
                let secrets = c
                    .execute(
                        "DELETE FROM secrets WHERE environment = ?1",
                        [name.as_str()],
                    )
                    .map_err(unavailable)?;
                crate::secrets::forget_environment_marks(c, &name)?;
                let at = Timestamp::now();
                append(c, &author, &[Change::environment_deleted(&name, at)])?;
                Ok(secrets as u64)
            })
            .await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, actor: &Actor) -> StoreResult<()> {
        let (key, actor) = (key.clone(), actor.clone());
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                insert_api_key(c, &key)?;
                append(c, &author, &[Change::api_key_created(&key.meta)])
            })
            .await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyMeta>> {
        let rows = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, role, environment, created_at FROM api_keys ORDER BY created_at, id",
            )?;
            let rows = stmt.query_map([], api_key_columns)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter().map(api_key_meta).collect()
    }

    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyMeta>> {
        let row = self.read(|c| {
            c.prepare_cached(
                "SELECT id, name, role, environment, created_at FROM api_keys WHERE key_hash = ?1",
            )?
            .query_row([key_hash], api_key_columns)
            .optional()
        })?;
        row.map(api_key_meta).transpose()
    }

    async fn delete_api_key(&self, id: &ApiKeyId, actor: &Actor) -> StoreResult<()> {
        let (id, actor) = (id.clone(), actor.clone());
        self.writer
            .write(move |c| {
                let author = check_actor(c, &actor)?;
                let row: Option<(String, Option<String>)> = c
                    .query_row(
                        "SELECT role, environment FROM api_keys WHERE id = ?1",
                        [id.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(unavailable)?;
                let (role, scope) = row.unzip();
                let scope = scope
                    .flatten()
                    .map(|e| EnvName::new(&e))
                    .transpose()
                    .map_err(corrupt)?;
                match role.as_deref() {
                    None => return Err(StoreError::NotFound),
                    Some("admin") => {
                        let admins: i64 = c
                            .query_row(
                                "SELECT COUNT(*) FROM api_keys WHERE role = 'admin'",
                                [],
                                |r| r.get(0),
                            )
                            .map_err(unavailable)?;
                        if admins <= 1 {
                            return Err(StoreError::LastAdminKey);
                        }
                    }
                    Some(_) => {}
                }
                c.execute("DELETE FROM api_keys WHERE id = ?1", [id.as_str()])
                    .map_err(unavailable)?;
                append(
                    c,
                    &author,
                    &[Change::api_key_revoked(&id, scope, Timestamp::now())],
                )
            })
            .await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn canaries(&self) -> StoreResult<Vec<Canary>> {
        let rows = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key_version, blob FROM key_canaries ORDER BY key_version",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(v, blob)| {
                Ok(Canary {
                    key_version: KeyVersion::new(v).map_err(corrupt)?,
                    blob,
                })
            })
            .collect()
    }

    async fn put_canary(&self, canary: &Canary) -> StoreResult<()> {
        let canary = canary.clone();
        self.writer
            .write(move |c| {
                let added = c
                    .execute(
                        "INSERT INTO key_canaries (key_version, blob) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        params![canary.key_version.get(), canary.blob],
                    )
                    .map_err(unavailable)?;
                if added == 0 {
                    return Ok(());
                }
                let change = Change::key_registered(canary.key_version.get(), Timestamp::now());
                append(c, &Author::system(), &[change])
            })
            .await
    }

    async fn encryption_counts(&self) -> StoreResult<BTreeMap<KeyVersion, u64>> {
        let rows = self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT key_version, encryptions FROM key_usage")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u64>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(v, n)| Ok((KeyVersion::new(v).map_err(corrupt)?, n)))
            .collect()
    }

    async fn add_encryptions(&self, version: KeyVersion, n: u64) -> StoreResult<()> {
        self.writer
            .write(move |c| {
                c.execute(
                    "INSERT INTO key_usage (key_version, encryptions) VALUES (?1, ?2)
                     ON CONFLICT (key_version) DO UPDATE SET encryptions = key_usage.encryptions + ?2",
                    params![version.get(), n],
                )
                .map(drop)
                .map_err(unavailable)
            })
            .await
    }

    async fn record_checks(
        &self,
        checks: &[ValueCheck],
        verified: Option<Verification<'_>>,
    ) -> StoreResult<()> {
        if checks.is_empty() && verified.is_none() {
            return Ok(());
        }
        let checks = checks.to_vec();
        let verified = verified.map(|v| (v.by.clone(), v.checked));
        self.writer
            .write(move |c| {
                let author = verified
                    .as_ref()
                    .map(|(a, checked)| Ok::<_, StoreError>((check_actor(c, a)?, *checked)))
                    .transpose()?;
                let now = Timestamp::now();
                // A mark lands only while its secret is still at the revision that failed
                // to open: a write that committed in between has superseded it already.
                let mut mark = c
                    .prepare_cached(
                        "INSERT INTO unreadable_values (environment, name, revision, key_version, found_at)
                         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (
                             SELECT 1 FROM secrets WHERE environment = ?1 AND name = ?2 AND revision = ?3
                               AND environment_id = ?6)
                         ON CONFLICT (environment, name) DO UPDATE SET revision = excluded.revision,
                             key_version = excluded.key_version, found_at = excluded.found_at",
                    )
                    .map_err(unavailable)?;
                let mut clear = c
                    .prepare_cached(
                        "DELETE FROM unreadable_values
                         WHERE environment = ?1 AND name = ?2 AND revision <= ?3
                           AND EXISTS (SELECT 1 FROM secrets WHERE environment = ?1
                               AND name = ?2 AND environment_id = ?4)",
                    )
                    .map_err(unavailable)?;
                // A rewrap or verify batch is mostly values that open; with no mark to
                // clear (the common case) it costs one query, not one delete per value.
                let any_marks: bool = c
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM unreadable_values)")
                    .and_then(|mut s| s.query_row([], |r| r.get(0)))
                    .map_err(unavailable)?;
                for check in &checks {
                    let (env, name) = (check.environment.as_str(), check.name.as_str());
                    let id = check.environment_id.as_str();
                    if check.opened {
                        if !any_marks {
                            continue;
                        }
                        clear.execute(params![env, name, check.revision, id])
                    } else {
                        mark.execute(params![
                            env,
                            name,
                            check.revision,
                            check.key_version,
                            now.millis(),
                            id
                        ])
                    }
                    .map_err(unavailable)?;
                }
                if let Some((author, checked)) = author {
                    let change = Change::keys_verified(checked, now);
                    append(c, &author, &[change])?;
                }
                Ok(())
            })
            .await
    }

    async fn unreadable_counts(&self) -> StoreResult<BTreeMap<u32, u64>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key_version, COUNT(*) FROM unreadable_values GROUP BY key_version",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u64>(1)?)))?;
            rows.collect()
        })
    }

    async fn unreadable_marks(
        &self,
        env: &EnvName,
        names: &[SecretName],
    ) -> StoreResult<Vec<UnreadableMark>> {
        // The common case, no marks at all, costs no query between writes (see
        // `SqliteStore::no_marks_at`).
        let at = self.epoch.begin();
        let known_empty = at.is_some_and(|at| {
            self.no_marks_at.load(std::sync::atomic::Ordering::Acquire) == at + 1
                && self.epoch.unchanged(at)
        });
        if names.is_empty() || known_empty {
            return Ok(Vec::new());
        }
        let rows = self.read(|c| {
            let any: bool = c
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM unreadable_values)")?
                .query_row([], |r| r.get(0))?;
            if !any {
                return Ok(None);
            }
            let mut stmt = c.prepare_cached(
                "SELECT revision, key_version FROM unreadable_values
                 WHERE environment = ?1 AND name = ?2",
            )?;
            let mut found = Vec::new();
            for name in names {
                let row = stmt
                    .query_row(params![env.as_str(), name.as_str()], |r| {
                        Ok((r.get::<_, u64>(0)?, r.get::<_, u32>(1)?))
                    })
                    .optional()?;
                if let Some((revision, key_version)) = row {
                    found.push(UnreadableMark {
                        environment: env.clone(),
                        name: name.clone(),
                        revision,
                        key_version,
                    });
                }
            }
            Ok(Some(found))
        })?;
        match rows {
            Some(found) => Ok(found),
            None => {
                if let Some(at) = at
                    && self.epoch.unchanged(at)
                {
                    self.no_marks_at
                        .store(at + 1, std::sync::atomic::Ordering::Release);
                }
                Ok(Vec::new())
            }
        }
    }
}

fn insert_environment(c: &Connection, env: &Environment) -> StoreResult<()> {
    let n = c
        .execute(
            "INSERT INTO environments (name, created_at, id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![env.name.as_str(), env.created_at.millis(), env.id.as_str()],
        )
        .map_err(unavailable)?;
    if n == 0 {
        return Err(StoreError::AlreadyExists);
    }
    // A new environment starts empty: rows a racing write left under this name after the
    // old environment was deleted go now, in the same transaction. (The runtime plane's
    // tables need no such sweep: their foreign key refuses a row for an incarnation that
    // does not exist.)
    c.execute(
        "DELETE FROM secrets WHERE environment = ?1",
        [env.name.as_str()],
    )
    .map_err(unavailable)?;
    c.execute(
        "DELETE FROM config WHERE environment = ?1",
        [env.name.as_str()],
    )
    .map_err(unavailable)?;
    crate::secrets::forget_environment_marks(c, &env.name)
}

fn insert_api_key(c: &Connection, key: &ApiKeyRecord) -> StoreResult<()> {
    let m = &key.meta;
    if let Some(env) = m.role.environment() {
        // Checked in the writing transaction, so a key cannot land in an environment that
        // is being deleted (and come back to life when the name is reused).
        let exists: bool = c
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM environments WHERE name = ?1)",
                [env.as_str()],
                |r| r.get(0),
            )
            .map_err(unavailable)?;
        if !exists {
            return Err(StoreError::NotFound);
        }
    }
    let n = c
        .execute(
            "INSERT INTO api_keys (id, name, role, environment, key_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            params![
                m.id.as_str(),
                m.name,
                m.role.name(),
                m.role.environment().map(EnvName::as_str),
                key.key_hash,
                m.created_at.millis()
            ],
        )
        .map_err(unavailable)?;
    if n == 0 {
        Err(StoreError::AlreadyExists)
    } else {
        Ok(())
    }
}

type ApiKeyColumns = (String, String, String, Option<String>, i64);

fn api_key_columns(r: &Row<'_>) -> rusqlite::Result<ApiKeyColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn api_key_meta((id, name, role, env, created): ApiKeyColumns) -> StoreResult<ApiKeyMeta> {
    let env = env
        .as_deref()
        .map(EnvName::new)
        .transpose()
        .map_err(corrupt)?;
    Ok(ApiKeyMeta {
        id: ApiKeyId::new(&id).map_err(corrupt)?,
        name,
        role: Role::from_parts(&role, env).map_err(corrupt)?,
        created_at: Timestamp::from_millis(created),
    })
}
