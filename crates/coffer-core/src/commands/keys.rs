//! Key rotation and verification (admin).

use super::Command;
use crate::lifecycle::{REWRAP_BATCH, RewrapReport, VerifyReport, Walk, WalkPosition};
use crate::{Coffer, CoreError, Principal};

/// Re-encrypt stored values, then functions' signing secrets, to the current key version,
/// starting after `after`: one batch of `limit` values (or functions), or everything left
/// when `limit` is `None`. Each batch that replaced values is one `system.keys.rewrapped`
/// event, and one more when it replaced signing secrets.
#[derive(Debug, Default)]
pub struct Rewrap {
    /// Where to resume; `None` starts at the beginning.
    pub after: Option<WalkPosition>,
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
                    .await?
                    .rewrap,
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

/// Open stored values, then functions' signing secrets, to find those that no longer open
/// (`coffer keys verify`), starting after `after`: one batch of `limit` values (or
/// functions), or everything left when `limit` is `None`. Changes nothing it opens. Each
/// batch records its findings on values in the catalog (a value that does not open is
/// marked unreadable there, one that opens loses its mark), which every node's status
/// reads, and is one `keys.verified` audit row and event naming the key, counting the
/// values and signing secrets it opened. A signing secret that does not open is reported,
/// not marked.
#[derive(Debug, Default)]
pub struct Verify {
    /// Where to resume; `None` starts at the beginning.
    pub after: Option<WalkPosition>,
    /// Batch size; `None` walks to the end.
    pub limit: Option<usize>,
}

impl Command for Verify {
    type Output = VerifyReport;

    fn authorize(&self, coffer: &Coffer, who: &Principal) -> Result<(), CoreError> {
        coffer.require_admin(who)
    }

    async fn execute(self, coffer: &Coffer, who: &Principal) -> Result<VerifyReport, CoreError> {
        let actor = who.actor();
        let mut report = VerifyReport {
            next: self.after,
            ..VerifyReport::default()
        };
        loop {
            let batch = self.limit.unwrap_or(REWRAP_BATCH).clamp(1, REWRAP_BATCH);
            let found = coffer
                .walk_batch(report.next.as_ref(), batch, Walk::Verify, &actor)
                .await?;
            report.absorb(VerifyReport {
                checked: found.checked,
                unreadable: found.unreadable,
                signing_checked: found.signing_checked,
                unreadable_signing: found.unreadable_signing,
                params_checked: found.params_checked,
                unreadable_params: found.unreadable_params,
                next: found.rewrap.next,
            });
            if self.limit.is_some() || report.next.is_none() {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(report)
    }
}
