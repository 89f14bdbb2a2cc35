//! The outbox relay: publishes Coffer's events to NATS JetStream. (Secret values in
//! JetStream KV, `COFFER_SECRETS_BACKEND=nats`, are in [`values`].)
//!
//! Every write appends its event to the outbox in its own transaction (see
//! `coffer_store::journal`); this relay reads the outbox after the position it recorded
//! ([`JournalStore::relay_position`] under [`RELAY_NAME`]), publishes each event to
//! JetStream and waits for the stream's acknowledgement before the next one, then records
//! the new position once per page.
//!
//! Guarantees: **in order** (one event in flight at a time, so a retry can never overtake a
//! later event), **at least once** (the position moves only after acknowledgements; what
//! was published but not recorded is published again after a restart), and **deduplicated**
//! by JetStream within its duplicate window: each message carries `Nats-Msg-Id:
//! coffer-<installation>-<event id>`, where the installation is the first hash of the
//! audit log (the same for every node of one catalog, different for another catalog).
//! **Writes never wait on NATS**: the relay is a reader of the outbox; an outage only
//! delays delivery. It retries with a capped exponential backoff and resumes where it
//! left off.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod values;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use coffer_store::{AuditQuery, EventRecord, JournalStore};
use tokio::sync::watch;

/// The name the relay's position is recorded under.
pub const RELAY_NAME: &str = "nats";

/// The JetStream stream created when it is missing, unless configured otherwise.
pub const DEFAULT_STREAM: &str = "COFFER_EVENTS";

/// Where and how to publish.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// The NATS server (`nats://host:4222`; may hold credentials, so it is never logged).
    pub url: String,
    /// Prepended to every subject with a `.`: `coffer` → `coffer.system.secret.A.created`.
    pub subject_prefix: Option<String>,
    /// The JetStream stream that captures `[prefix.]system.>`, created if missing.
    pub stream: String,
    /// Events read from the outbox at once; the position is recorded once per page.
    pub page: usize,
    /// How long to wait for one acknowledgement (or for a connection) before retrying.
    pub ack_timeout: Duration,
    /// The longest pause between retries (the first is 250 ms, doubling up to this).
    pub max_backoff: Duration,
    /// How often to read the outbox when this node announced nothing (another node's
    /// commits are not announced).
    pub poll: Duration,
}

/// A setting the relay cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The subject prefix is not a sequence of plain NATS tokens.
    #[error(
        "the NATS subject prefix must be tokens of letters, digits, '-' and '_' separated by '.' (no wildcards), at most 128 characters"
    )]
    BadPrefix,
    /// The stream name is not a valid JetStream stream name.
    #[error(
        "the JetStream stream name must be 1-64 letters, digits, '-' and '_' (no '.', '*', '>' or spaces)"
    )]
    BadStream,
    /// No URL.
    #[error("the NATS URL is empty")]
    NoUrl,
}

impl RelayOptions {
    /// Checked options with the defaults for everything but the URL, prefix and stream.
    pub fn new(
        url: &str,
        subject_prefix: Option<&str>,
        stream: Option<&str>,
    ) -> Result<Self, ConfigError> {
        if url.trim().is_empty() {
            return Err(ConfigError::NoUrl);
        }
        let plain = |t: &str| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        let prefix = match subject_prefix.map(|p| p.trim_end_matches('.')) {
            None | Some("") => None,
            Some(p) if p.len() <= 128 && p.split('.').all(plain) => Some(p.to_owned()),
            Some(_) => return Err(ConfigError::BadPrefix),
        };
        let stream = match stream {
            None | Some("") => DEFAULT_STREAM.to_owned(),
            Some(s) if s.len() <= 64 && plain(s) => s.to_owned(),
            Some(_) => return Err(ConfigError::BadStream),
        };
        Ok(RelayOptions {
            url: url.trim().to_owned(),
            subject_prefix: prefix,
            stream,
            page: 256,
            ack_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10),
            poll: Duration::from_secs(1),
        })
    }

    /// The NATS subject an event is published on.
    pub fn subject(&self, event: &EventRecord) -> String {
        match &self.subject_prefix {
            Some(prefix) => format!("{prefix}.{}", event.subject),
            None => event.subject.clone(),
        }
    }

    /// The subjects the stream captures: `[prefix.]system.>`.
    pub fn stream_subject(&self) -> String {
        match &self.subject_prefix {
            Some(prefix) => format!("{prefix}.system.>"),
            None => "system.>".to_owned(),
        }
    }
}

/// Runs the relay until `shutdown` resolves, then lets it finish the event in flight and
/// record its position (for at most [`RelayOptions::ack_timeout`]). Never returns an
/// error: every failure is logged and retried.
pub async fn run(
    journal: Arc<dyn JournalStore>,
    options: RelayOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop, stopping) = watch::channel(false);
    let relay = relay_forever(&*journal, &options, stopping);
    tokio::pin!(relay);
    tokio::select! {
        () = &mut relay => return,
        () = shutdown => {}
    }
    stop.send_replace(true);
    if tokio::time::timeout(options.ack_timeout, relay)
        .await
        .is_err()
    {
        tracing::warn!(
            "NATS relay: stopped before recording its position; the events since are published again at the next start"
        );
    }
    tracing::debug!("NATS relay stopped");
}

async fn relay_forever(
    journal: &dyn JournalStore,
    options: &RelayOptions,
    mut stopping: watch::Receiver<bool>,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(250);
    let mut backoff = FIRST_BACKOFF;
    let mut installation = None;
    loop {
        let mut progressed = false;
        let error = relay_session(
            journal,
            options,
            &mut installation,
            &mut progressed,
            &mut stopping,
        )
        .await;
        if *stopping.borrow() {
            return;
        }
        if progressed {
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(
            error = %error,
            retry_in_ms = backoff.as_millis() as u64,
            "NATS relay: events are not being published; retrying (writes are not affected)"
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stopping.changed() => return,
        }
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

/// Why a relay session ended; the relay starts another after a pause.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    #[error("cannot use the JetStream stream: {0}")]
    Stream(String),
    #[error("publishing event {id} failed: {error}")]
    Publish { id: u64, error: String },
    #[error("cannot read the outbox: {0}")]
    Store(#[from] coffer_store::StoreError),
    #[error("the relay is stopping")]
    Stopped,
}

/// One connection: connect, make sure the stream exists, then publish until something
/// fails. Dropping the client on failure discards whatever it buffered, so a long outage
/// does not pile up copies of the event being retried.
async fn relay_session(
    journal: &dyn JournalStore,
    options: &RelayOptions,
    installation: &mut Option<String>,
    progressed: &mut bool,
    stopping: &mut watch::Receiver<bool>,
) -> SessionError {
    let client = match tokio::time::timeout(
        options.ack_timeout,
        async_nats::ConnectOptions::new()
            .name("coffer-relay")
            .connection_timeout(options.ack_timeout)
            // The relay reconnects by itself, from its recorded position; a client left to
            // reconnect on its own could publish a stale queued message after a drop.
            .max_reconnects(Some(0))
            .connect(options.url.as_str()),
    )
    .await
    {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return SessionError::Connect(e.to_string()),
        Err(_) => return SessionError::Connect("timed out".into()),
    };
    let mut js = jetstream::new(client);
    js.set_timeout(options.ack_timeout);
    let config = jetstream::stream::Config {
        name: options.stream.clone(),
        subjects: vec![options.stream_subject()],
        ..Default::default()
    };
    if let Err(e) = js.get_or_create_stream(config).await {
        return SessionError::Stream(e.to_string());
    }
    tracing::info!(stream = %options.stream, subjects = %options.stream_subject(), "NATS relay connected");
    let mut events = journal.watch_events();
    let mut watching = true;
    let mut position = match journal.relay_position(RELAY_NAME).await {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    match journal.last_event_id().await {
        // A restored or replaced database: the relay would wait, silently, for ids it
        // already published. Say so; an operator resets the position or the stream.
        Ok(last) if last < position => tracing::warn!(
            position,
            last_event = last,
            "the NATS relay's position is past the last event in the outbox (a restored \
             database?); events will not be published until the outbox reaches it"
        ),
        Ok(_) => {}
        Err(e) => return e.into(),
    }
    loop {
        let page = match journal.events_after(position, options.page).await {
            Ok(page) => page,
            Err(e) => return e.into(),
        };
        if page.is_empty() {
            let woken = async {
                if watching {
                    events.changed().await.is_ok()
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                ok = woken => watching = ok,
                () = tokio::time::sleep(options.poll) => {}
                _ = stopping.changed() => return SessionError::Stopped,
            }
            continue;
        }
        if installation.is_none() {
            *installation = match installation_id(journal).await {
                Ok(id) => Some(id),
                Err(e) => return e.into(),
            };
        }
        let installation = installation.as_deref().unwrap_or("unknown");
        for event in &page {
            if let Err(error) = publish(&js, options, installation, event).await {
                record(journal, position).await;
                return SessionError::Publish {
                    id: event.id,
                    error,
                };
            }
            position = event.id;
            *progressed = true;
            if *stopping.borrow() {
                record(journal, position).await;
                return SessionError::Stopped;
            }
        }
        record(journal, position).await;
    }
}

/// Publishes one event and waits for the stream to store it.
async fn publish(
    js: &jetstream::Context,
    options: &RelayOptions,
    installation: &str,
    event: &EventRecord,
) -> Result<(), String> {
    let payload = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", message_id(installation, event.id).as_str());
    let published = async {
        js.publish_with_headers(options.subject(event), headers, payload.into())
            .await?
            .await
    };
    match tokio::time::timeout(options.ack_timeout, published).await {
        Ok(Ok(ack)) => {
            if ack.duplicate {
                tracing::debug!(id = event.id, "NATS relay: already published");
            }
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no acknowledgement in time".into()),
    }
}

/// `coffer-<installation>-<event id>`: stable across restarts and nodes of one catalog.
pub fn message_id(installation: &str, id: u64) -> String {
    format!("coffer-{installation}-{id}")
}

/// The first 16 hex digits of the first audit row's hash: fixed when the catalog was
/// bootstrapped, shared by every node of it, different for another catalog.
async fn installation_id(journal: &dyn JournalStore) -> Result<String, coffer_store::StoreError> {
    let (rows, _) = journal.audit(&AuditQuery::default(), 1).await?;
    Ok(rows
        .first()
        .map(|r| r.hash.chars().take(16).collect())
        .unwrap_or_else(|| "0".repeat(16)))
}

/// Records the position; a failure only means events get published again after a restart
/// (JetStream drops them as duplicates within its window).
async fn record(journal: &dyn JournalStore, position: u64) {
    if let Err(e) = journal.set_relay_position(RELAY_NAME, position).await {
        tracing::warn!(error = %e, position, "NATS relay: cannot record its position");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_stream_names_are_checked() {
        let o = RelayOptions::new("nats://127.0.0.1:4222", Some("coffer"), None).unwrap();
        assert_eq!(o.stream, DEFAULT_STREAM);
        assert_eq!(o.stream_subject(), "coffer.system.>");
        let o = RelayOptions::new("nats://h", Some("a.b-c."), Some("EV")).unwrap();
        assert_eq!(o.subject_prefix.as_deref(), Some("a.b-c"));
        assert_eq!(o.stream, "EV");
        let o = RelayOptions::new("nats://h", Some(""), None).unwrap();
        assert_eq!(o.stream_subject(), "system.>");
        for bad in ["a.*", "a.>", "a b", "a..b", ".a"] {
            assert!(
                RelayOptions::new("nats://h", Some(bad), None).is_err(),
                "{bad}"
            );
        }
        for bad in ["a.b", "a*", "a b"] {
            assert!(
                RelayOptions::new("nats://h", None, Some(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(RelayOptions::new(" ", None, None).is_err());
    }

    #[test]
    fn subjects_get_the_prefix_and_message_ids_name_the_installation_and_event() {
        let event = EventRecord {
            id: 9,
            subject: "system.secret.A.created".into(),
            environment: Some("default".into()),
            name: Some("A".into()),
            revision: Some(1),
            actor: coffer_store::ActorRef::system(),
            at: "2026-01-01T00:00:00Z".into(),
            count: None,
        };
        let o = RelayOptions::new("nats://h", Some("coffer"), None).unwrap();
        assert_eq!(o.subject(&event), "coffer.system.secret.A.created");
        let o = RelayOptions::new("nats://h", None, None).unwrap();
        assert_eq!(o.subject(&event), "system.secret.A.created");
        assert_eq!(message_id("abcd", 9), "coffer-abcd-9");
    }
}
