//! Environments and API keys (admin only).

use coffer_store::{ApiKeyId, EnvName, Environment, Role, StoreError, Timestamp};

use super::Command;
use crate::service::{NewApiKey, check_key_label, new_api_key};
use crate::{Coffer, CoreError, Principal};

/// Create an environment.
#[derive(Debug)]
pub struct CreateEnvironment {
    /// Its name.
    pub name: EnvName,
}

impl Command for CreateEnvironment {
    type Output = Environment;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_admin(who)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<Environment, CoreError> {
        if self.name.is_reserved() {
            return Err(CoreError::Invalid(format!(
                "the environment name `{}` is reserved",
                self.name
            )));
        }
        let env = Environment {
            name: self.name,
            id: crate::service::new_environment_id()?,
            created_at: Timestamp::now(),
        };
        match coffer.catalog.create_environment(&env, &who.actor()).await {
            Err(StoreError::AlreadyExists) => Err(CoreError::EnvironmentExists(env.name)),
            other => other.map(|()| env).map_err(CoreError::from),
        }
    }
}

/// Delete an environment with its secrets, config and keys.
#[derive(Debug)]
pub struct DeleteEnvironment {
    /// Its name.
    pub name: EnvName,
}

/// What deleting an environment removed.
#[derive(Debug)]
pub struct EnvironmentDeleted {
    /// Its name.
    pub name: EnvName,
    /// How many secrets went with it.
    pub secrets: u64,
}

impl Command for DeleteEnvironment {
    type Output = EnvironmentDeleted;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_admin(who)
    }

    async fn execute(
        self,
        coffer: &Coffer,
        who: &Principal,
    ) -> Result<EnvironmentDeleted, CoreError> {
        let name = self.name;
        // The incarnation whose values a store outside the catalog must purge.
        let incarnation = coffer.existing_environment(&name).await?;
        // The catalog deletes the environment and its keys in one transaction that
        // re-checks the acting key; values kept elsewhere are swept after it (and a new
        // environment of the same name clears any a racing write left).
        let deleted = coffer
            .removing_keys(
                |catalog, actor| {
                    let name = name.clone();
                    async move { catalog.delete_environment(&name, &actor).await }
                },
                &who.actor(),
            )
            .await;
        let with_catalog = match deleted {
            Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(name)),
            other => other?,
        };
        // A store in the catalog's database lost the values with the environment; purging
        // again could remove values of a new environment of the same name.
        let secrets = if coffer.secrets.capabilities().values_in_catalog {
            with_catalog
        } else {
            with_catalog + coffer.secrets.purge_environment(&incarnation).await?
        };
        Ok(EnvironmentDeleted { name, secrets })
    }
}

/// Create an API key.
#[derive(Debug)]
pub struct CreateApiKey {
    /// A label.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl Command for CreateApiKey {
    type Output = NewApiKey;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_admin(who)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<NewApiKey, CoreError> {
        check_key_label(&self.name)?;
        let (record, key) = new_api_key(self.name, self.role, None)?;
        // The catalog checks the environment in the writing transaction.
        match coffer.catalog.insert_api_key(&record, &who.actor()).await {
            Err(StoreError::NotFound) => {
                let env = record.meta.role.environment().cloned();
                return Err(env.map_or(
                    CoreError::Store(StoreError::NotFound),
                    CoreError::EnvironmentNotFound,
                ));
            }
            other => other?,
        }
        Ok(NewApiKey {
            meta: record.meta,
            key,
        })
    }
}

/// Revoke an API key; it is refused from the next request on.
#[derive(Debug)]
pub struct RevokeApiKey {
    /// Its id.
    pub id: ApiKeyId,
}

impl Command for RevokeApiKey {
    type Output = ();

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_admin(who)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        let id = self.id;
        let revoked = coffer
            .removing_keys(
                |catalog, actor| {
                    let id = id.clone();
                    async move { catalog.delete_api_key(&id, &actor).await }
                },
                &who.actor(),
            )
            .await;
        match revoked {
            Err(StoreError::NotFound) => Err(CoreError::ApiKeyNotFound(id)),
            other => Ok(other?),
        }
    }
}
