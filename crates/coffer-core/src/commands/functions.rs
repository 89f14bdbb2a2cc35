//! Functions (admin, manage of their environment): register or update, rotate the signing
//! secret, delete.

use coffer_store::{
    EnvName, FunctionId, Precondition, Revision, StoreError, StoredValue, Timestamp,
};
use secrecy::SecretString;

use super::Command;
use crate::runtime::{FunctionView, check_function, new_signing_secret, signing_aad};
use crate::{Coffer, CoreError, Principal};

/// How long deliveries are signed with the old secret after a rotation, by default.
pub const DEFAULT_SIGNING_GRACE_MS: u64 = 24 * 60 * 60 * 1000;

/// Longest grace period a rotation may ask for: 30 days.
pub const MAX_SIGNING_GRACE_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// A function after a write, with its signing secret when the write made a new one.
#[derive(Debug)]
pub struct FunctionWritten {
    /// The function.
    pub function: FunctionView,
    /// Whether the write registered it.
    pub created: bool,
    /// The signing secret, shown this once: on registration and rotation only.
    pub signing_secret: Option<SecretString>,
}

/// Register a function or update its definition.
#[derive(Debug)]
pub struct PutFunction {
    /// Its environment.
    pub env: EnvName,
    /// Its id.
    pub id: FunctionId,
    /// The definition.
    pub body: coffer_wire::PutFunction,
}

impl Command for PutFunction {
    type Output = FunctionWritten;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<FunctionWritten, CoreError> {
        let spec = check_function(&self.body, &coffer.runtime.options)?;
        super::check_expected_revision(self.body.expected_revision)?;
        let text = serde_json::to_string(&spec)
            .map_err(|_| CoreError::Invalid("the definition cannot be serialized".into()))?;
        let incarnation = coffer.existing_environment(&self.env).await?;
        let secret = new_signing_secret()?;
        let stored = seal_signing(coffer, &incarnation.id, &self.id, &secret)?;
        let pre = Precondition::from_expected(self.body.expected_revision);
        let out = match coffer
            .catalog
            .put_function(
                &incarnation,
                &self.id,
                text,
                stored,
                pre,
                Timestamp::now(),
                &who.actor(),
            )
            .await
        {
            Err(StoreError::NotFound) => return Err(CoreError::EnvironmentNotFound(self.env)),
            other => other?,
        };
        Ok(FunctionWritten {
            created: out.created,
            signing_secret: out.created.then_some(secret),
            function: FunctionView::new(out.record)?,
        })
    }
}

/// Replace a function's signing secret; deliveries carry a signature with the old one too
/// until the grace period ends.
#[derive(Debug)]
pub struct RotateSigningSecret {
    /// Its environment.
    pub env: EnvName,
    /// The function.
    pub id: FunctionId,
    /// How long the old secret still signs (default one day).
    pub grace_ms: Option<u64>,
}

impl Command for RotateSigningSecret {
    type Output = FunctionWritten;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<FunctionWritten, CoreError> {
        let grace = self.grace_ms.unwrap_or(DEFAULT_SIGNING_GRACE_MS);
        if grace > MAX_SIGNING_GRACE_MS {
            return Err(CoreError::Invalid(format!(
                "graceMs is at most {MAX_SIGNING_GRACE_MS}"
            )));
        }
        let incarnation = coffer.existing_environment(&self.env).await?;
        let secret = new_signing_secret()?;
        let stored = seal_signing(coffer, &incarnation.id, &self.id, &secret)?;
        let now = Timestamp::now();
        let until = now.after_millis(grace);
        let record = match coffer
            .catalog
            .rotate_signing_secret(&incarnation, &self.id, stored, until, now, &who.actor())
            .await
        {
            Err(StoreError::NotFound) => {
                coffer.existing_environment(&self.env).await?;
                return Err(CoreError::FunctionNotFound {
                    env: self.env,
                    id: self.id,
                });
            }
            other => other?,
        };
        Ok(FunctionWritten {
            function: FunctionView::new(record)?,
            created: false,
            signing_secret: Some(secret),
        })
    }
}

/// Delete a function. Its runs stay; a queued one fails when it comes up.
#[derive(Debug)]
pub struct DeleteFunction {
    /// Its environment.
    pub env: EnvName,
    /// The function.
    pub id: FunctionId,
    /// `Some(n)`: must be at revision n.
    pub expected_revision: Option<Revision>,
}

impl Command for DeleteFunction {
    type Output = FunctionView;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_manage(who, &self.env)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<FunctionView, CoreError> {
        super::check_expected_revision(self.expected_revision)?;
        let pre = Precondition::from_expected(self.expected_revision);
        match coffer
            .catalog
            .delete_function(&self.env, &self.id, pre, &who.actor())
            .await
        {
            Err(StoreError::NotFound) => {
                coffer.existing_environment(&self.env).await?;
                Err(CoreError::FunctionNotFound {
                    env: self.env,
                    id: self.id,
                })
            }
            other => FunctionView::new(other?),
        }
    }
}

fn seal_signing(
    coffer: &Coffer,
    env: &coffer_store::EnvId,
    id: &FunctionId,
    secret: &SecretString,
) -> Result<StoredValue, CoreError> {
    coffer.seal_stored(&signing_aad(env, id), secret.clone())
}
