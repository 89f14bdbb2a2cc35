//! `AccessStore` and `KeyStore` on the `environments`, `api_keys`, `key_canaries`,
//! `key_usage` and `settings` tables. (Deleting or creating an environment also clears its
//! `secrets` and `config` rows.) Every change appends its journal rows in its transaction.

use std::collections::BTreeMap;

use async_trait::async_trait;
use coffer_crypto::KeyVersion;
use coffer_store::{
    AccessStore, Actor, ApiKeyId, ApiKeyMeta, ApiKeyRecord, Canary, Change, EnvId, EnvName,
    Environment, KeyStore, Role, SecretName, StoreError, StoreResult, Timestamp, UnreadableMark,
    ValueCheck, Verification,
};
use sqlx::PgConnection;

use crate::journal::{Author, append, check_actor, lock_environment};
use crate::secrets::forget_environment_marks;
use crate::writer::Kind;
use crate::{PgStore, corrupt, db, signed, unsigned};

/// The settings row whose insertion is the bootstrap: a unique row, so of any number of
/// nodes starting on a new catalog exactly one inserts it.
const BOOTSTRAPPED: &str = "bootstrapped_at";

#[async_trait]
impl AccessStore for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        PgStore::ping(self).await
    }

    async fn bootstrap(&self, env: &Environment, admin: &ApiKeyRecord) -> StoreResult<bool> {
        let (env, admin) = (env.clone(), admin.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                // The gate: a unique row. Writing transactions take the journal head first,
                // so a concurrent bootstrap runs after this one commits (then inserts
                // nothing) or rolls back (then goes ahead).
                let won: Option<String> = sqlx::query_scalar(
                    "INSERT INTO settings (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING RETURNING name",
                )
                .bind(BOOTSTRAPPED)
                .bind(Timestamp::now().millis().to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
                if won.is_none() {
                    return Ok(false);
                }
                insert_environment(&mut tx, &env).await?;
                insert_api_key(&mut tx, &admin).await?;
                let changes = [
                    Change::environment_created(&env),
                    Change::api_key_created(&admin.meta),
                ];
                append(&mut tx, &Author::system(), &changes);
                tx.keep();
                Ok(true)
            })
        })
        .await
    }

    async fn list_environments(&self) -> StoreResult<Vec<Environment>> {
        let mut c = self.acquire().await?;
        let rows: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT name, created_at, id FROM environments ORDER BY name")
                .fetch_all(&mut *c)
                .await
                .map_err(db)?;
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
        let mut c = self.acquire().await?;
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT created_at, id FROM environments WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut *c)
                .await
                .map_err(db)?;
        row.map(|(ms, id)| {
            Ok(Environment {
                name: name.clone(),
                id: EnvId::new(&id).map_err(corrupt)?,
                created_at: Timestamp::from_millis(ms),
            })
        })
        .transpose()
    }

    async fn create_environment(&self, env: &Environment, actor: &Actor) -> StoreResult<()> {
        let (env, actor) = (env.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                let author = check_actor(&mut tx, &actor).await?;
                insert_environment(&mut tx, &env).await?;
                append(&mut tx, &author, &[Change::environment_created(&env)]);
                tx.keep();
                Ok(())
            })
        })
        .await
    }

    async fn delete_environment(&self, name: &EnvName, actor: &Actor) -> StoreResult<u64> {
        let (name, actor) = (name.clone(), actor.clone());
        self.write_as(Kind::Alone, move |mut tx| {
            Box::pin(async move {
                // The environment's row first (step 1 of the lock order, see `journal`),
                // then the actor's (step 3).
                let found: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM environments WHERE name = $1 FOR UPDATE")
                        .bind(name.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                let author = check_actor(&mut tx, &actor).await?;
                if found.is_none() {
                    return Err(StoreError::NotFound);
                }
                let secrets = clear_environment_rows(&mut tx, &name).await?;
                // Its scoped keys go with it (ON DELETE CASCADE), in this transaction.
                sqlx::query("DELETE FROM environments WHERE name = $1")
                    .bind(name.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                let at = Timestamp::now();
                append(&mut tx, &author, &[Change::environment_deleted(&name, at)]);
                tx.keep();
                Ok(secrets)
            })
        })
        .await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord, actor: &Actor) -> StoreResult<()> {
        let (key, actor) = (key.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                // Lock order: the environment first (see `journal`). The foreign key would
                // refuse a key of a missing environment anyway; the lock makes the answer
                // NotFound.
                let scope_exists = match key.meta.role.environment() {
                    Some(env) => lock_environment(&mut tx, env).await?,
                    None => true,
                };
                let author = check_actor(&mut tx, &actor).await?;
                if !scope_exists {
                    return Err(StoreError::NotFound);
                }
                insert_api_key(&mut tx, &key).await?;
                append(&mut tx, &author, &[Change::api_key_created(&key.meta)]);
                tx.keep();
                Ok(())
            })
        })
        .await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyMeta>> {
        let mut c = self.acquire().await?;
        let rows: Vec<ApiKeyColumns> = sqlx::query_as(
            "SELECT id, name, role, environment, created_at FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
        rows.into_iter().map(api_key_meta).collect()
    }

    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyMeta>> {
        let mut c = self.acquire().await?;
        let row: Option<ApiKeyColumns> = sqlx::query_as(
            "SELECT id, name, role, environment, created_at FROM api_keys WHERE key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&mut *c)
        .await
        .map_err(db)?;
        row.map(api_key_meta).transpose()
    }

    async fn delete_api_key(&self, id: &ApiKeyId, actor: &Actor) -> StoreResult<()> {
        let (id, actor) = (id.clone(), actor.clone());
        self.write(move |mut tx| {
            Box::pin(async move {
                // A key's role and scope never change: read them unlocked to know which locks to take.
                let target: Option<(String, Option<String>)> =
                    sqlx::query_as("SELECT role, environment FROM api_keys WHERE id = $1")
                        .bind(id.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                let Some((role, scope)) = target else {
                    check_actor(&mut tx, &actor).await?;
                    return Err(StoreError::NotFound);
                };
                let scope = scope
                    .map(|e| EnvName::new(&e))
                    .transpose()
                    .map_err(corrupt)?;
                if let Some(env) = &scope {
                    lock_environment(&mut tx, env).await?;
                }
                let author = if role == "admin" {
                    // Every admin key row, locked in id order: two revocations of two admin keys
                    // take these locks one after the other, and the second counts what the first
                    // left. (Under READ COMMITTED a bare count would let both see two keys.)
                    let admins: Vec<String> = sqlx::query_scalar(
                        "SELECT id FROM api_keys WHERE role = 'admin' ORDER BY id FOR UPDATE",
                    )
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
                    let author = check_actor(&mut tx, &actor).await?;
                    if !admins.iter().any(|a| a == id.as_str()) {
                        return Err(StoreError::NotFound);
                    }
                    if admins.len() <= 1 {
                        return Err(StoreError::LastAdminKey);
                    }
                    author
                } else {
                    check_actor(&mut tx, &actor).await?
                };
                let deleted = sqlx::query("DELETE FROM api_keys WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                if deleted.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                let change = Change::api_key_revoked(&id, scope, Timestamp::now());
                append(&mut tx, &author, &[change]);
                tx.keep();
                Ok(())
            })
        })
        .await
    }
}

#[async_trait]
impl KeyStore for PgStore {
    async fn canaries(&self) -> StoreResult<Vec<Canary>> {
        let mut c = self.acquire().await?;
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT key_version, blob FROM key_canaries ORDER BY key_version")
                .fetch_all(&mut *c)
                .await
                .map_err(db)?;
        rows.into_iter()
            .map(|(v, blob)| {
                Ok(Canary {
                    key_version: key_version(v)?,
                    blob,
                })
            })
            .collect()
    }

    async fn put_canary(&self, canary: &Canary) -> StoreResult<()> {
        let canary = canary.clone();
        self.write(move |mut tx| {
            Box::pin(async move {
                let added = sqlx::query(
                    "INSERT INTO key_canaries (key_version, blob) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                )
                .bind(i64::from(canary.key_version.get()))
                .bind(&canary.blob)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                if added.rows_affected() == 0 {
                    return Ok(());
                }
                let change = Change::key_registered(canary.key_version.get(), Timestamp::now());
                append(&mut tx, &Author::system(), &[change]);
                tx.keep();
                Ok(())
            })
        })
        .await
    }

    async fn encryption_counts(&self) -> StoreResult<BTreeMap<KeyVersion, u64>> {
        let mut c = self.acquire().await?;
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT key_version, encryptions FROM key_usage")
                .fetch_all(&mut *c)
                .await
                .map_err(db)?;
        rows.into_iter()
            .map(|(v, n)| Ok((key_version(v)?, unsigned(n)?)))
            .collect()
    }

    async fn add_encryptions(&self, version: KeyVersion, n: u64) -> StoreResult<()> {
        let mut c = self.acquire().await?;
        // One statement: nodes adding at once each add their share.
        sqlx::query(
            "INSERT INTO key_usage (key_version, encryptions) VALUES ($1, $2)
             ON CONFLICT (key_version) DO UPDATE SET encryptions = key_usage.encryptions + EXCLUDED.encryptions",
        )
        .bind(i64::from(version.get()))
        .bind(signed(n)?)
        .execute(&mut *c)
        .await
        .map_err(db)?;
        Ok(())
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
        self.write_as(Kind::Alone, move |mut tx| {
            Box::pin(async move {
                let author = match verified {
                    Some((by, checked)) => Some((check_actor(&mut tx, &by).await?, checked)),
                    None => None,
                };
                let (mut opened, mut failed) = (MarkColumns::default(), MarkColumns::default());
                for check in last_checks(&checks) {
                    let cols = if check.opened {
                        &mut opened
                    } else {
                        &mut failed
                    };
                    cols.environment.push(check.environment.as_str());
                    cols.environment_id.push(check.environment_id.as_str());
                    cols.name.push(check.name.as_str());
                    cols.revision.push(signed(check.revision)?);
                    cols.key_version.push(i64::from(check.key_version));
                }
                let now = Timestamp::now();
                // Step 4 in the order every write takes it: each checked secret's row (`FOR SHARE`,
                // in (environment, name) order) before any mark. A write of one of them waits for
                // this, then removes the mark in its own transaction.
                let mut all = MarkColumns::default();
                for cols in [&opened, &failed] {
                    all.environment.extend(&cols.environment);
                    all.environment_id.extend(&cols.environment_id);
                    all.name.extend(&cols.name);
                }
                if !all.name.is_empty() {
                    sqlx::query(
                        "SELECT 1 FROM secrets s
                         JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS c(environment, environment_id, name)
                           ON s.environment = c.environment AND s.environment_id = c.environment_id
                          AND s.name = c.name
                         ORDER BY s.environment, s.name
                         FOR SHARE OF s",
                    )
                    .bind(&all.environment)
                    .bind(&all.environment_id)
                    .bind(&all.name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                if !opened.name.is_empty() {
                    // A value that opens clears a mark of its revision or an older one, of its
                    // incarnation (a mark belongs to the secret that stands, hence to the live one).
                    sqlx::query(
                        "DELETE FROM unreadable_values u
                         USING UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[])
                               AS c(environment, name, revision, environment_id)
                         WHERE u.environment = c.environment AND u.name = c.name
                           AND u.revision <= c.revision
                           AND EXISTS (
                               SELECT 1 FROM secrets s
                               WHERE s.environment = c.environment AND s.name = c.name
                                 AND s.environment_id = c.environment_id)",
                    )
                    .bind(&opened.environment)
                    .bind(&opened.name)
                    .bind(&opened.revision)
                    .bind(&opened.environment_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                if !failed.name.is_empty() {
                    // A mark lands only while its secret is still at the revision that failed to
                    // open, and the secret's row stays locked (FOR SHARE) until this commits: a
                    // write of it waits, then removes the mark; a write that committed first has
                    // superseded the finding already.
                    sqlx::query(
                        "INSERT INTO unreadable_values (environment, name, revision, key_version, found_at)
                         SELECT c.environment, c.name, c.revision, c.key_version, $5
                         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $6::text[])
                              AS c(environment, name, revision, key_version, environment_id)
                         WHERE EXISTS (
                             SELECT 1 FROM secrets s
                             WHERE s.environment = c.environment AND s.name = c.name
                               AND s.environment_id = c.environment_id AND s.revision = c.revision
                             FOR SHARE)
                         ON CONFLICT (environment, name) DO UPDATE SET revision = EXCLUDED.revision,
                             key_version = EXCLUDED.key_version, found_at = EXCLUDED.found_at",
                    )
                    .bind(&failed.environment)
                    .bind(&failed.name)
                    .bind(&failed.revision)
                    .bind(&failed.key_version)
                    .bind(now.millis())
                    .bind(&failed.environment_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                if let Some((author, checked)) = author {
                    append(&mut tx, &author, &[Change::keys_verified(checked, now)]);
                }
                tx.keep();
                Ok(())
            })
        })
        .await
    }

    async fn unreadable_counts(&self) -> StoreResult<BTreeMap<u32, u64>> {
        let mut c = self.acquire().await?;
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT key_version, COUNT(*) FROM unreadable_values GROUP BY key_version",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
        crate::per_key_version(rows)
    }

    async fn unreadable_marks(
        &self,
        env: &EnvName,
        names: &[SecretName],
    ) -> StoreResult<Vec<UnreadableMark>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = names.iter().map(SecretName::as_str).collect();
        let mut c = self.acquire().await?;
        // One indexed query whatever the page size (an empty table answers at once).
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT name, revision, key_version FROM unreadable_values
             WHERE environment = $1 AND name = ANY($2)",
        )
        .bind(env.as_str())
        .bind(&names)
        .fetch_all(&mut *c)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(name, revision, key_version)| {
                Ok(UnreadableMark {
                    environment: env.clone(),
                    name: SecretName::new(&name).map_err(corrupt)?,
                    revision: unsigned(revision)?,
                    key_version: u32::try_from(key_version)
                        .map_err(|_| corrupt("a key version out of range"))?,
                })
            })
            .collect()
    }
}

/// A batch of checks, column by column (for `UNNEST`).
#[derive(Default)]
struct MarkColumns<'a> {
    environment: Vec<&'a str>,
    environment_id: Vec<&'a str>,
    name: Vec<&'a str>,
    revision: Vec<i64>,
    key_version: Vec<i64>,
}

/// Of several checks of one secret in a batch, the one that counts: the highest revision,
/// and of checks of the same revision the last (as if applied one after the other).
fn last_checks(checks: &[ValueCheck]) -> Vec<&ValueCheck> {
    let mut by_secret: BTreeMap<(&str, &str), &ValueCheck> = BTreeMap::new();
    for check in checks {
        let slot = by_secret
            .entry((check.environment.as_str(), check.name.as_str()))
            .or_insert(check);
        if check.revision >= slot.revision {
            *slot = check;
        }
    }
    by_secret.into_values().collect()
}

fn key_version(v: i64) -> StoreResult<KeyVersion> {
    let v = u32::try_from(v).map_err(|_| corrupt("a key version out of range"))?;
    KeyVersion::new(v).map_err(corrupt)
}

async fn insert_environment(c: &mut PgConnection, env: &Environment) -> StoreResult<()> {
    let added = sqlx::query(
        "INSERT INTO environments (name, id, created_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(env.name.as_str())
    .bind(env.id.as_str())
    .bind(env.created_at.millis())
    .execute(&mut *c)
    .await
    .map_err(db)?;
    if added.rows_affected() == 0 {
        return Err(StoreError::AlreadyExists);
    }
    // A new environment starts empty: config entries a write of Coffer's own left under this
    // name after the old environment was deleted, and its marks, go now, in the same
    // transaction (secret rows cannot be left: they went with their incarnation).
    clear_environment_rows(c, &env.name).await?;
    Ok(())
}

/// Deletes `env`'s secret values, unreadable marks and config entries, in that order (a
/// secret's row before its mark, as every write takes them); returns how many values there
/// were.
async fn clear_environment_rows(c: &mut PgConnection, env: &EnvName) -> StoreResult<u64> {
    let secrets = sqlx::query("DELETE FROM secrets WHERE environment = $1")
        .bind(env.as_str())
        .execute(&mut *c)
        .await
        .map_err(db)?;
    forget_environment_marks(c, env).await?;
    sqlx::query("DELETE FROM config WHERE environment = $1")
        .bind(env.as_str())
        .execute(&mut *c)
        .await
        .map_err(db)?;
    Ok(secrets.rows_affected())
}

async fn insert_api_key(c: &mut PgConnection, key: &ApiKeyRecord) -> StoreResult<()> {
    let m = &key.meta;
    let added = sqlx::query(
        "INSERT INTO api_keys (id, name, role, environment, key_hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(m.id.as_str())
    .bind(&m.name)
    .bind(m.role.name())
    .bind(m.role.environment().map(EnvName::as_str))
    .bind(&key.key_hash)
    .bind(m.created_at.millis())
    .execute(&mut *c)
    .await
    .map_err(db)?;
    if added.rows_affected() == 0 {
        Err(StoreError::AlreadyExists)
    } else {
        Ok(())
    }
}

type ApiKeyColumns = (String, String, String, Option<String>, i64);

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
