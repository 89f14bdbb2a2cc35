//! Reading the audit log, and checking its hash chain.
//!
//! The store writes the log (every change appends its row in its own transaction, denials
//! come from [`crate::denials`]); this module decides who may read which rows and walks the
//! chain to find the first row that is not what was written.

use coffer_store::journal::GENESIS_HASH;
use coffer_store::{AuditQuery, AuditRecord, Role};

use crate::service::Page;
use crate::{Coffer, CoreError, Principal};

/// Rows read per page while the chain is verified (memory stays bounded by it).
pub const VERIFY_PAGE: usize = 1000;

/// What is wrong with the first broken row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainProblem {
    /// The row's content does not hash to its stored hash.
    Edited,
    /// Sequence numbers skip: rows are missing.
    Deleted,
    /// The row does not chain from the row before it (rows moved, swapped or re-chained).
    Reordered,
    /// The last rows are gone, or the head no longer matches the last row.
    Truncated,
}

impl ChainProblem {
    /// `edited`, `deleted`, `reordered` or `truncated`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChainProblem::Edited => "edited",
            ChainProblem::Deleted => "deleted",
            ChainProblem::Reordered => "reordered",
            ChainProblem::Truncated => "truncated",
        }
    }
}

/// The first row where the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenRow {
    /// The row's sequence number (for `deleted`, the first missing one).
    pub seq: u64,
    /// What is wrong.
    pub problem: ChainProblem,
    /// A sentence for people.
    pub message: String,
}

/// What a walk of the chain found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows checked (all of them when the chain is whole; up to the broken one otherwise).
    pub rows: u64,
    /// The head's sequence number, as the store records it.
    pub head_seq: u64,
    /// The head's hash, as the store records it.
    pub head_hash: String,
    /// The first broken row, if any.
    pub first_broken: Option<BrokenRow>,
}

impl ChainReport {
    /// Whether the chain is whole.
    pub fn ok(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// A walk of the chain, fed rows in `seq` order, a page at a time. Pure: no I/O.
///
/// Each row is checked in this order, and the first failure names it:
/// 1. its `seq` follows the previous row's (else rows are **deleted**; the first missing
///    seq is named);
/// 2. its `prevHash` is the previous row's stored `hash` ([`GENESIS_HASH`] for seq 1)
///    (else **reordered**);
/// 3. its stored `hash` is [`AuditRecord::expected_hash`] (else **edited**).
///
/// At the end, the last row's (seq, hash) must be the store's head (else **truncated**).
#[derive(Debug)]
pub struct ChainWalk {
    head: (u64, String),
    rows: u64,
    last: Option<(u64, String)>,
    broken: Option<BrokenRow>,
}

impl ChainWalk {
    /// A walk up to `head` (seq, hash), read before the first row: rows after it were
    /// appended during the walk and are left for the next one.
    pub fn new(head: (u64, String)) -> Self {
        ChainWalk {
            head,
            rows: 0,
            last: None,
            broken: None,
        }
    }

    /// Checks one row; returns whether to go on (false once broken or past the head).
    pub fn feed(&mut self, row: &AuditRecord) -> bool {
        if self.broken.is_some() || row.seq > self.head.0 {
            return false;
        }
        self.rows += 1;
        let (expected_seq, prev_hash) = match &self.last {
            Some((seq, hash)) => (seq + 1, hash.as_str()),
            None => (1, GENESIS_HASH),
        };
        let broken = if row.seq != expected_seq {
            let missing_to = row.seq.saturating_sub(1);
            Some(BrokenRow {
                seq: expected_seq,
                problem: ChainProblem::Deleted,
                message: if missing_to > expected_seq {
                    format!(
                        "rows {expected_seq} to {missing_to} are missing (deleted); the next row is {}",
                        row.seq
                    )
                } else {
                    format!(
                        "row {expected_seq} is missing (deleted); the next row is {}",
                        row.seq
                    )
                },
            })
        } else if row.prev_hash != prev_hash {
            Some(BrokenRow {
                seq: row.seq,
                problem: ChainProblem::Reordered,
                message: format!(
                    "row {} does not chain from row {}: its prevHash is not that row's hash (rows moved, swapped or re-chained)",
                    row.seq,
                    expected_seq.saturating_sub(1)
                ),
            })
        } else if row.hash != row.expected_hash() {
            Some(BrokenRow {
                seq: row.seq,
                problem: ChainProblem::Edited,
                message: format!(
                    "row {} was edited: its content does not hash to its stored hash",
                    row.seq
                ),
            })
        } else {
            None
        };
        self.last = Some((row.seq, row.hash.clone()));
        self.broken = broken;
        self.broken.is_none()
    }

    /// The report, checking the end of the chain against the head.
    pub fn finish(self) -> ChainReport {
        let (head_seq, head_hash) = self.head;
        let broken = self.broken.or_else(|| {
            let (last_seq, last_hash) = self.last.unwrap_or((0, GENESIS_HASH.to_owned()));
            if (last_seq, last_hash.as_str()) == (head_seq, head_hash.as_str()) {
                None
            } else if head_seq > last_seq {
                Some(BrokenRow {
                    seq: last_seq + 1,
                    problem: ChainProblem::Truncated,
                    message: format!(
                        "the log ends at row {last_seq} but its head records row {head_seq}: rows {} to {head_seq} were removed",
                        last_seq + 1
                    ),
                })
            } else {
                Some(BrokenRow {
                    seq: last_seq,
                    problem: ChainProblem::Truncated,
                    message: format!(
                        "the head records row {head_seq} with another hash than the last row, {last_seq}, has (the head or the end of the log was changed)"
                    ),
                })
            }
        });
        ChainReport {
            rows: self.rows,
            head_seq,
            head_hash,
            first_broken: broken,
        }
    }
}

/// Walks `rows` (in `seq` order) against `head`: [`ChainWalk`] in one call.
pub fn verify_chain<'a>(
    rows: impl IntoIterator<Item = &'a AuditRecord>,
    head: (u64, String),
) -> ChainReport {
    let mut walk = ChainWalk::new(head);
    for row in rows {
        if !walk.feed(row) {
            break;
        }
    }
    walk.finish()
}

impl Coffer {
    /// One page of the audit log, in `seq` order. An admin key reads every row; a manage
    /// key only its own environment's (asking for another is refused); a runtime key none.
    /// `next` is the seq to continue after.
    pub async fn audit(
        &self,
        who: &Principal,
        mut query: AuditQuery,
        limit: usize,
    ) -> Result<Page<AuditRecord, u64>, CoreError> {
        match &who.role {
            Role::Admin => {}
            Role::Manage(own) => match &query.environment {
                Some(asked) if asked != own => return Err(CoreError::Forbidden),
                _ => query.environment = Some(own.clone()),
            },
            Role::Runtime(_) => return Err(CoreError::Forbidden),
        }
        let (items, next) = self.catalog().audit(&query, limit.max(1)).await?;
        Ok(Page { items, next })
    }

    /// Walks the whole chain, [`VERIFY_PAGE`] rows at a time (admin).
    pub async fn verify_audit(&self, who: &Principal) -> Result<ChainReport, CoreError> {
        self.require_admin(who)?;
        let head = self.catalog().audit_head().await?;
        let mut walk = ChainWalk::new(head);
        let mut query = AuditQuery::default();
        loop {
            let (rows, next) = self.catalog().audit(&query, VERIFY_PAGE).await?;
            let going = rows.iter().all(|row| walk.feed(row));
            match next {
                Some(after) if going => query.after = Some(after),
                _ => break,
            }
        }
        let mut report = walk.finish();
        let past_head = self.catalog().audit_rows_past_head().await?;
        if report.first_broken.is_none() && past_head > 0 {
            report.first_broken = Some(BrokenRow {
                seq: report.head_seq + 1,
                problem: ChainProblem::Truncated,
                message: format!(
                    "{past_head} rows are stored past the head (row {}): Coffer did not write them, or the head was moved back",
                    report.head_seq
                ),
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_store::{ActorRef, AuditResult};

    /// A well-formed chain of `n` rows and its head.
    fn chain(n: u64) -> (Vec<AuditRecord>, (u64, String)) {
        let mut rows = Vec::new();
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 1..=n {
            let mut row = AuditRecord {
                seq,
                at: 1000 + seq as i64,
                actor: ActorRef::system(),
                action: "secret.created".into(),
                subject: format!("system.secret.S{seq}.created"),
                environment: Some("default".into()),
                name: Some(format!("S{seq}")),
                revision: Some(1),
                result: AuditResult::Allowed,
                status: None,
                count: 1,
                remote: None,
                user_agent: None,
                event: Some(seq),
                detail: None,
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            row.hash = row.expected_hash();
            prev = row.hash.clone();
            rows.push(row);
        }
        (rows, (n, prev))
    }

    fn broken(report: &ChainReport) -> (u64, ChainProblem) {
        let b = report.first_broken.as_ref().expect("broken");
        (b.seq, b.problem)
    }

    #[test]
    fn an_untouched_chain_verifies_with_every_row_counted() {
        let (rows, head) = chain(5);
        let report = verify_chain(&rows, head.clone());
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.rows, 5);
        assert_eq!((report.head_seq, report.head_hash), head);
        let empty = verify_chain(&[], (0, GENESIS_HASH.into()));
        assert!(empty.ok() && empty.rows == 0);
    }

    #[test]
    fn an_edited_row_is_named() {
        let (mut rows, head) = chain(5);
        rows[2].name = Some("OTHER".into());
        assert_eq!(
            broken(&verify_chain(&rows, head)),
            (3, ChainProblem::Edited)
        );
    }

    #[test]
    fn a_deleted_row_names_the_first_missing_seq() {
        let (mut rows, head) = chain(6);
        rows.remove(2);
        let report = verify_chain(&rows, head.clone());
        assert_eq!(broken(&report), (3, ChainProblem::Deleted));
        let (mut rows, _) = chain(6);
        rows.drain(1..4);
        let report = verify_chain(&rows, head);
        assert_eq!(broken(&report), (2, ChainProblem::Deleted));
        assert!(report.first_broken.unwrap().message.contains("2 to 4"));
    }

    #[test]
    fn swapped_rows_are_reordered() {
        let (mut rows, head) = chain(5);
        // Swap the contents of rows 2 and 3, keeping their seqs.
        let (a, b) = (rows[1].clone(), rows[2].clone());
        rows[1] = AuditRecord { seq: 2, ..b };
        rows[2] = AuditRecord { seq: 3, ..a };
        assert_eq!(
            broken(&verify_chain(&rows, head)),
            (2, ChainProblem::Reordered)
        );
    }

    #[test]
    fn a_rehashed_edit_breaks_the_next_link() {
        let (mut rows, head) = chain(4);
        rows[1].name = Some("OTHER".into());
        rows[1].hash = rows[1].expected_hash();
        assert_eq!(
            broken(&verify_chain(&rows, head)),
            (3, ChainProblem::Reordered)
        );
    }

    #[test]
    fn removed_last_rows_or_a_changed_head_are_truncation() {
        let (mut rows, head) = chain(5);
        rows.truncate(3);
        assert_eq!(
            broken(&verify_chain(&rows, head.clone())),
            (4, ChainProblem::Truncated)
        );
        let (rows, _) = chain(5);
        assert_eq!(
            broken(&verify_chain(&rows, (5, "f".repeat(64)))),
            (5, ChainProblem::Truncated)
        );
        assert_eq!(
            broken(&verify_chain(&[], head)),
            (1, ChainProblem::Truncated)
        );
    }

    #[test]
    fn rows_appended_after_the_head_was_read_are_left_alone() {
        let (rows, _) = chain(5);
        let head = (3, rows[2].hash.clone());
        let report = verify_chain(&rows, head);
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.rows, 3);
    }
}
