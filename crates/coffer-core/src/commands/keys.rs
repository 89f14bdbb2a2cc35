//! Key rotation (admin).

use coffer_store::{EnvName, SecretName};

use super::Command;
use crate::lifecycle::{REWRAP_BATCH, RewrapReport, Walk};
use crate::{Coffer, CoreError, Principal};

/// Re-encrypt stored values to the current key version, starting after `after`: one batch
/// of `limit` values, or every remaining value when `limit` is `None`. Each batch that
/// replaced values is one `system.keys.rewrapped` event.
#[derive(Debug, Default)]
pub struct Rewrap {
    /// Where to resume; `None` starts at the beginning.
    pub after: Option<(EnvName, SecretName)>,
    /// Batch size; `None` walks to the end.
    pub limit: Option<usize>,
}

impl Command for Rewrap {
    type Output = RewrapReport;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_admin(who)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<RewrapReport, CoreError> {
        let actor = who.actor();
        let mut report = RewrapReport {
            next: self.after,
            ..RewrapReport::default()
        };
        loop {
            let batch = self.limit.unwrap_or(REWRAP_BATCH).clamp(1, REWRAP_BATCH);
            report.absorb(
                coffer
                    .walk_batch(report.next.as_ref(), batch, Walk::Rewrap, &actor)
                    .await?,
            );
            if self.limit.is_some() || report.next.is_none() {
                break;
            }
            // A batch of already-current values never waits on I/O: let other requests on
            // this worker run between batches.
            tokio::task::yield_now().await;
        }
        Ok(report)
    }
}
