//! Reading the event outbox for the live stream: who may follow it, and which events each
//! caller sees.
//!
//! Every mutation appends its event in the transaction that makes it (see
//! `coffer_store::journal`), so the outbox is the complete, ordered record; the stream is a
//! cursor over it, and a reader resumes after the last id it received with nothing missed and
//! nothing repeated.

use coffer_store::{EventRecord, Role, StoreError, SubjectPattern};

use crate::{Coffer, CoreError, EnvName, Principal};

/// Which events a caller may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventScope {
    /// Every event (an admin key).
    All,
    /// Events whose `environment` is this one (a manage key of it).
    Environment(EnvName),
}

impl EventScope {
    /// Whether an event is visible in this scope.
    pub fn admits(&self, event: &EventRecord) -> bool {
        match self {
            EventScope::All => true,
            EventScope::Environment(env) => event.environment.as_deref() == Some(env.as_str()),
        }
    }
}

/// One page of the outbox as a caller sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventPage {
    /// The events of the page the caller may see and that match the pattern, in id order.
    pub events: Vec<EventRecord>,
    /// The last id examined: where the next page starts (the reader's position even when
    /// nothing in the page matched).
    pub last_examined: Option<u64>,
    /// Whether the page was full (more events may follow at once).
    pub full: bool,
}

impl Coffer {
    /// Who may follow the event stream: admin keys (every event) and manage keys (their
    /// environment's events). Runtime keys are refused.
    pub fn event_scope(&self, who: &Principal) -> Result<EventScope, CoreError> {
        match &who.role {
            Role::Admin => Ok(EventScope::All),
            Role::Manage(env) => Ok(EventScope::Environment(env.clone())),
            Role::Runtime(_) => Err(CoreError::Forbidden),
        }
    }

    /// Reads up to `limit` outbox events after `after` and keeps those `scope` admits and
    /// `pattern` matches.
    pub async fn events_page(
        &self,
        scope: &EventScope,
        pattern: &SubjectPattern,
        after: u64,
        limit: usize,
    ) -> Result<EventPage, CoreError> {
        let read = self.catalog().events_after(after, limit).await?;
        let full = read.len() >= limit;
        let last_examined = read.last().map(|e| e.id);
        if let Some(pair) = read.windows(2).find(|w| w[1].id <= w[0].id) {
            // The outbox hands out ids in commit order; anything else would break resumption.
            return Err(StoreError::Corrupt(format!(
                "event ids out of order: {} after {}",
                pair[1].id, pair[0].id
            ))
            .into());
        }
        let events = read
            .into_iter()
            .filter(|e| scope.admits(e) && pattern.matches(&e.subject))
            .collect();
        Ok(EventPage {
            events,
            last_examined,
            full,
        })
    }

    /// The id of the last committed event: where a stream without a resume point starts.
    pub async fn last_event_id(&self) -> Result<u64, CoreError> {
        Ok(self.catalog().last_event_id().await?)
    }

    /// Changes whenever this node commits events. Another node's commits are not
    /// announced: readers poll as well.
    pub fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.catalog().watch_events()
    }

    /// Whether `presented` still authenticates as `who` (same key, same role): a stream
    /// re-checks its key so a revoked key, or one whose environment was deleted, stops
    /// receiving events (within [`crate::AUTH_CACHE_TTL`] on other nodes).
    pub async fn still_authorized(&self, presented: &str, who: &Principal) -> bool {
        match self.authenticate(presented).await {
            Ok(now) => now.key_id == who.key_id && now.role == who.role,
            Err(_) => false,
        }
    }
}
