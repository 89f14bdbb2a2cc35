//! The one way to change anything: a typed command per mutation, run by
//! [`Coffer::apply`].
//!
//! A command says who may run it ([`Command::authorize`], checked before anything is read
//! or written) and carries itself out ([`Command::execute`]) through the stores, which
//! re-check the acting key and append the change's audit row and event in the same
//! transaction as the change (see `coffer_store::journal`). So a command has nothing to
//! record afterwards, and a handler gets back exactly its command's output type: adding a
//! capability adds a command, not an arm to every handler.

mod access;
mod config;
mod functions;
mod keys;
mod runs;
mod secrets;

use std::future::Future;

pub use access::{
    CreateApiKey, CreateEnvironment, DeleteEnvironment, EnvironmentDeleted, RevokeApiKey,
};
pub use config::{DeleteConfig, PutConfig};
pub use functions::{
    DEFAULT_SIGNING_GRACE_MS, DeleteFunction, FunctionWritten, MAX_SIGNING_GRACE_MS, PutFunction,
    RotateSigningSecret,
};
pub use keys::{Rewrap, Verify};
pub use runs::{CompleteRun, HeartbeatRun, PollRun, ResolveFunction, SendEvent};
pub use secrets::{DeleteSecret, ImportSecrets, PutSecret};

use crate::{Coffer, CoreError, Principal};

/// An `expectedRevision` beyond what any store keeps is refused (422), never sent on.
pub(crate) fn check_expected_revision(
    expected: Option<coffer_store::Revision>,
) -> Result<(), CoreError> {
    match expected {
        Some(n) if n > coffer_store::MAX_STORED_NUMBER => Err(CoreError::Invalid(format!(
            "expectedRevision is at most {}",
            coffer_store::MAX_STORED_NUMBER
        ))),
        _ => Ok(()),
    }
}

/// A change made on a caller's behalf.
pub trait Command: Send {
    /// What the caller gets back.
    type Output: Send;

    /// Whether `who` may run this command; checked before anything is read or written.
    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError>;

    /// Carries the command out for `who`. Its audit rows and events commit with it.
    fn execute(
        self,
        coffer: &Coffer,
        who: &Principal,
    ) -> impl Future<Output = Result<Self::Output, CoreError>> + Send;
}

impl Coffer {
    /// The one path every change takes: authorize, then execute.
    pub async fn apply<C: Command>(
        &self,
        who: &Principal,
        command: C,
    ) -> Result<C::Output, CoreError> {
        command.authorize(self, who)?;
        command.execute(self, who).await
    }
}
