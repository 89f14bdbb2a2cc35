//! Reading the event outbox for the live stream: who may follow it, and which events each
//! caller sees.
//!
//! Every mutation appends its event in the transaction that makes it (see
//! `coffer_store::journal`), so the outbox is the complete, ordered record; the stream is a
//! cursor over it, and a reader resumes after the last id it received with nothing missed and
//! nothing repeated.

use std::collections::VecDeque;
use std::sync::Arc;

use coffer_store::{Catalog, EventRecord, Role, StoreError, StoreResult, SubjectPattern};

use crate::{Coffer, CoreError, EnvName, KeyDigest, Principal};

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

/// An event as the stream sends it: the record and its server-sent-events frame, made once
/// and shared by every stream that sends it.
#[derive(Debug, PartialEq, Eq)]
pub struct SharedEvent {
    /// The event.
    pub record: EventRecord,
    /// `id: <id>`, `data: <compact JSON, one line>`, a blank line.
    pub frame: String,
}

impl SharedEvent {
    /// The event and its frame.
    pub fn new(record: EventRecord) -> StoreResult<Arc<SharedEvent>> {
        let json = serde_json::to_string(&record)
            .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", record.id)))?;
        let frame = format!("id: {}\ndata: {json}\n\n", record.id);
        Ok(Arc::new(SharedEvent { record, frame }))
    }
}

/// One page of the outbox as a caller sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventPage {
    /// The events of the page the caller may see and that match the pattern, in id order.
    pub events: Vec<Arc<SharedEvent>>,
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
        let read = self
            .recent_events
            .after(self.catalog(), after, limit)
            .await?;
        let full = read.len() >= limit;
        let last_examined = read.last().map(|e| e.record.id);
        if let Some(pair) = read.windows(2).find(|w| w[1].record.id <= w[0].record.id) {
            // The outbox hands out ids in commit order; anything else would break resumption.
            return Err(StoreError::Corrupt(format!(
                "event ids out of order: {} after {}",
                pair[1].record.id, pair[0].record.id
            ))
            .into());
        }
        let events = read
            .into_iter()
            .filter(|e| scope.admits(&e.record) && pattern.matches(&e.record.subject))
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

    /// Changes whenever this node commits events (and, on PostgreSQL, when it hears of
    /// another node's commits). An announcement can be missed: readers poll as well.
    pub fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.catalog().watch_events()
    }

    /// Whether the key of `digest` still authenticates as `who` (same key, same role): a
    /// stream re-checks its key so a revoked key, or one whose environment was deleted,
    /// stops receiving events (within [`crate::AUTH_CACHE_TTL`] on other nodes).
    pub async fn still_authorized(&self, digest: &KeyDigest, who: &Principal) -> bool {
        match self.authenticate_digest(digest).await {
            Ok(now) => now.key_id == who.key_id && now.role == who.role,
            Err(_) => false,
        }
    }
}

/// Events kept in memory after they were read, the latest first to go: what every stream
/// that is caught up asks for, so a commit costs one outbox read however many streams
/// follow it, not one per stream.
const RECENT_EVENTS: usize = 4096;

/// The last [`RECENT_EVENTS`] events read from the outbox, gapless: every id in
/// `(base, top]`. One stream refreshes it from the store when it has caught up with it
/// (single flight: the others wait, then read what it read).
#[derive(Default)]
pub(crate) struct RecentEvents {
    ring: std::sync::RwLock<Ring>,
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Ring {
    /// Holds every event with `base < id <= top`, in order.
    events: VecDeque<Arc<SharedEvent>>,
    base: u64,
    top: u64,
    /// Whether `base`/`top` were set from a read (an empty ring at 0 knows nothing yet).
    primed: bool,
}

/// How to answer a read of the events after a position.
#[derive(Debug)]
enum Plan {
    /// From the ring.
    Serve(Vec<Arc<SharedEvent>>),
    /// From the store, after `from`, refreshing the ring with what is read: the reader is
    /// where the ring ends or past it. A reader a little past it (a stream opened at the
    /// outbox's end while writes went on) has the ring read on from its end, so the streams
    /// at its end keep being served; a reader far past it (a ring nobody read from for a
    /// while) has the ring start over where it is. Without this every such stream would read
    /// the store on its own at every wake, for as long as it is open.
    Refresh { from: u64 },
    /// From the store, leaving the ring as it is: the reader is behind the ring (a resume
    /// from long ago) and would throw away what the others read.
    Alone,
}

impl Ring {
    fn plan(&self, after: u64, limit: usize) -> Plan {
        if let Some(events) = self.after(after, limit) {
            Plan::Serve(events)
        } else if !self.primed {
            Plan::Refresh { from: after }
        } else if after >= self.top {
            let near = after - self.top <= RECENT_EVENTS as u64;
            Plan::Refresh {
                from: if near { self.top } else { after },
            }
        } else {
            Plan::Alone
        }
    }

    /// Up to `limit` events after `after`, if the ring covers `after` and holds some after it.
    fn after(&self, after: u64, limit: usize) -> Option<Vec<Arc<SharedEvent>>> {
        if !self.primed || after < self.base || after >= self.top {
            return None;
        }
        let skip = usize::try_from(after - self.base).ok()?;
        Some(self.events.iter().skip(skip).take(limit).cloned().collect())
    }

    /// Appends events read after `top` (or starts over from `after` when they do not follow
    /// on).
    fn extend(&mut self, after: u64, read: &[Arc<SharedEvent>]) {
        let follows = self.primed && after == self.top;
        let gapless = read
            .iter()
            .zip(after + 1..)
            .all(|(e, id)| e.record.id == id);
        // Starting over needs proof that the outbox reaches `after`: an event after it. A
        // reader beyond the outbox's end (a made-up `Last-Event-ID`, a restored backup)
        // must not move the ring where no other stream is.
        if !gapless || (!follows && read.is_empty()) {
            return;
        }
        if !follows {
            self.events.clear();
            self.base = after;
            self.primed = true;
        }
        self.events.extend(read.iter().cloned());
        self.top = after + read.len() as u64;
        while self.events.len() > RECENT_EVENTS {
            self.events.pop_front();
            self.base += 1;
        }
    }
}

impl RecentEvents {
    /// Up to `limit` events after `after`: from memory when the ring covers them, else one
    /// store read, which refreshes the ring unless `after` is behind it.
    pub(crate) async fn after(
        &self,
        store: &dyn Catalog,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<Arc<SharedEvent>>> {
        // Each plan is made under the ring's read guard, dropped before anything is awaited.
        let plan = self.read().plan(after, limit);
        let single = match plan {
            Plan::Serve(events) => return Ok(events),
            Plan::Alone => return read_alone(store, after, limit).await,
            // Single flight: the streams waiting here read what the first one read.
            Plan::Refresh { .. } => self.refresh.lock().await,
        };
        let plan = self.read().plan(after, limit);
        match plan {
            Plan::Serve(events) => Ok(events),
            Plan::Alone => {
                drop(single);
                read_alone(store, after, limit).await
            }
            Plan::Refresh { from } => {
                // Enough to reach `after` and a page past it (at most the ring's size more).
                let wanted = usize::try_from(after - from)
                    .unwrap_or(RECENT_EVENTS)
                    .saturating_add(limit.max(256));
                let read = store
                    .events_after(from, wanted)
                    .await?
                    .into_iter()
                    .map(SharedEvent::new)
                    .collect::<StoreResult<Vec<_>>>()?;
                self.ring
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(from, &read);
                drop(single);
                Ok(read
                    .into_iter()
                    .filter(|e| e.record.id > after)
                    .take(limit)
                    .collect())
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }
}

async fn read_alone(
    store: &dyn Catalog,
    after: u64,
    limit: usize,
) -> StoreResult<Vec<Arc<SharedEvent>>> {
    let read = store.events_after(after, limit).await?;
    read.into_iter().map(SharedEvent::new).collect()
}

#[cfg(test)]
mod ring_tests {
    use super::*;
    use coffer_store::ActorRef;

    fn event(id: u64) -> Arc<SharedEvent> {
        SharedEvent::new(EventRecord {
            id,
            subject: format!("system.secret.S{id}.created"),
            environment: Some("default".into()),
            name: Some(format!("S{id}")),
            revision: Some(1),
            actor: ActorRef::system(),
            at: String::new(),
            count: None,
        })
        .unwrap()
    }

    fn ids(events: &[Arc<SharedEvent>]) -> Vec<u64> {
        events.iter().map(|e| e.record.id).collect()
    }

    #[test]
    fn the_ring_serves_what_it_covers_and_nothing_else() {
        let mut ring = Ring::default();
        assert!(ring.after(0, 10).is_none(), "an empty ring knows nothing");
        ring.extend(5, &(6..=9).map(event).collect::<Vec<_>>());
        assert_eq!(ids(&ring.after(5, 10).unwrap()), [6, 7, 8, 9]);
        assert_eq!(ids(&ring.after(7, 1).unwrap()), [8]);
        assert!(ring.after(9, 10).is_none(), "caught up: the store decides");
        assert!(ring.after(4, 10).is_none(), "behind the ring");
        ring.extend(9, &[event(10)]);
        assert_eq!(ids(&ring.after(8, 10).unwrap()), [9, 10]);
        // A read that does not follow on starts the ring over; a gap is never kept.
        ring.extend(20, &[event(21)]);
        assert!(ring.after(9, 10).is_none());
        assert_eq!(ids(&ring.after(20, 10).unwrap()), [21]);
        ring.extend(21, &[event(23)]);
        assert_eq!(ring.top, 21, "a read with a gap is not kept");
    }

    #[test]
    fn a_reader_at_or_past_the_rings_end_refreshes_it_one_behind_reads_alone() {
        let mut ring = Ring::default();
        assert!(
            matches!(ring.plan(0, 10), Plan::Refresh { from: 0 }),
            "an empty ring"
        );
        ring.extend(5, &(6..=9).map(event).collect::<Vec<_>>());
        assert!(matches!(ring.plan(6, 10), Plan::Serve(e) if ids(&e) == [7, 8, 9]));
        assert!(
            matches!(ring.plan(9, 10), Plan::Refresh { from: 9 }),
            "caught up"
        );
        assert!(matches!(ring.plan(4, 10), Plan::Alone), "behind the ring");
        // A stream opened at the outbox's end while writes went on is a little past the
        // ring: the ring reads on from its end, and the streams there stay served.
        assert!(matches!(ring.plan(50, 10), Plan::Refresh { from: 9 }));
        ring.extend(9, &(10..=52).map(event).collect::<Vec<_>>());
        assert!(matches!(ring.plan(9, 2), Plan::Serve(e) if ids(&e) == [10, 11]));
        assert!(matches!(ring.plan(50, 10), Plan::Serve(e) if ids(&e) == [51, 52]));
        // Far past it (a ring nobody read from for a while), the ring starts over there.
        let far = 52 + RECENT_EVENTS as u64 + 1;
        assert!(matches!(ring.plan(far, 10), Plan::Refresh { from } if from == far));
        ring.extend(far, &[event(far + 1)]);
        assert!(matches!(ring.plan(far, 10), Plan::Serve(e) if ids(&e) == [far + 1]));
        assert!(matches!(ring.plan(52, 10), Plan::Alone), "now behind it");
    }

    #[test]
    fn a_reader_beyond_the_outbox_end_does_not_move_the_ring() {
        let mut ring = Ring::default();
        ring.extend(5, &(6..=9).map(event).collect::<Vec<_>>());
        // A made-up Last-Event-ID: its refresh reads nothing, and the ring stays where
        // the other streams are.
        let beyond = u64::MAX / 2;
        assert!(matches!(ring.plan(beyond, 10), Plan::Refresh { from } if from == beyond));
        ring.extend(beyond, &[]);
        assert!(matches!(ring.plan(6, 10), Plan::Serve(e) if ids(&e) == [7, 8, 9]));
        assert!(matches!(ring.plan(9, 10), Plan::Refresh { from: 9 }));
        // An empty ring is not primed by an empty read either.
        let mut empty = Ring::default();
        empty.extend(beyond, &[]);
        assert!(!empty.primed);
    }

    #[test]
    fn the_ring_keeps_the_latest_events_only() {
        let mut ring = Ring::default();
        let many: Vec<Arc<SharedEvent>> = (1..=(RECENT_EVENTS as u64 + 10)).map(event).collect();
        ring.extend(0, &many);
        assert_eq!(ring.events.len(), RECENT_EVENTS);
        assert_eq!(ring.base, 10);
        assert!(ring.after(9, 1).is_none());
        assert_eq!(ids(&ring.after(10, 1).unwrap()), [11]);
    }
}
