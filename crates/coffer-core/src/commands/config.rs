//! Config entries (admin, manage of their environment).

use coffer_store::{
    ConfigEntry, ConfigKey, ConfigPutOutcome, EnvName, Precondition, Revision, StoreError,
    Timestamp,
};

use super::Command;
use crate::service::MAX_CONFIG_VALUE_BYTES;
use crate::{Coffer, CoreError, Principal};

/// Create or update a config entry.
#[derive(Debug)]
pub struct PutConfig {
    /// Its environment.
    pub env: EnvName,
    /// Its key.
    pub key: ConfigKey,
    /// Any JSON; at most [`MAX_CONFIG_VALUE_BYTES`] serialized.
    pub value: serde_json::Value,
    /// `Some(0)`: must not exist; `Some(n)`: must be at revision n.
    pub expected_revision: Option<Revision>,
}

impl Command for PutConfig {
    type Output = ConfigPutOutcome;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(
        self,
        coffer: &Coffer,
        who: &Principal,
    ) -> Result<ConfigPutOutcome, CoreError> {
        let text = serde_json::to_string(&self.value).map_err(|_| {
            CoreError::Invalid("the config value cannot be serialized as JSON".into())
        })?;
        if text.len() > MAX_CONFIG_VALUE_BYTES {
            return Err(CoreError::ValueTooLarge {
                what: "config",
                limit: MAX_CONFIG_VALUE_BYTES,
            });
        }
        coffer.existing_environment(&self.env).await?;
        super::check_expected_revision(self.expected_revision)?;
        let pre = Precondition::from_expected(self.expected_revision);
        match coffer
            .catalog
            .put_config(
                &self.env,
                &self.key,
                text,
                pre,
                Timestamp::now(),
                &who.actor(),
            )
            .await
        {
            // The environment went between the check above and the write.
            Err(StoreError::NotFound) => Err(CoreError::EnvironmentNotFound(self.env)),
            other => Ok(other?),
        }
    }
}

/// Delete a config entry.
#[derive(Debug)]
pub struct DeleteConfig {
    /// Its environment.
    pub env: EnvName,
    /// Its key.
    pub key: ConfigKey,
    /// `Some(n)`: must be at revision n.
    pub expected_revision: Option<Revision>,
}

impl Command for DeleteConfig {
    type Output = ConfigEntry;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<ConfigEntry, CoreError> {
        super::check_expected_revision(self.expected_revision)?;
        let pre = Precondition::from_expected(self.expected_revision);
        match coffer
            .catalog
            .delete_config(&self.env, &self.key, pre, &who.actor())
            .await
        {
            Err(StoreError::NotFound) => {
                coffer.existing_environment(&self.env).await?;
                Err(CoreError::ConfigNotFound {
                    env: self.env,
                    key: self.key,
                })
            }
            other => Ok(other?),
        }
    }
}
