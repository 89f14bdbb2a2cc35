//! `GET /v1/events/stream`: the event outbox as server-sent events.
//!
//! The body is a stream hyper pulls: each pull yields one frame (an event, a keep-alive
//! comment) and nothing is produced ahead of the client, so a slow reader holds at most one
//! page of events ([`StreamOptions::page`]) plus the connection's write buffer; a reader that
//! stops reading is closed by the connection's write-stall rule. A stream ends when the
//! server begins shutting down, when its key is revoked, or when the store fails (the client
//! resumes with `Last-Event-ID`).

#![allow(dead_code)] // `BadStreamRequest` only describes a response in the document

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_core::{ApiKeyId, Coffer, EventScope, KeyDigest, Principal, SharedEvent};
use coffer_store::SubjectPattern;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use utoipa::{IntoParams, IntoResponses};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Caller, QueryParams, bearer_key};
use crate::openapi::{Forbidden, Unauthorized, Unavailable};

/// How event streams are served.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// Streams open at once, server-wide; one more is answered `503 overloaded`.
    pub max_streams: usize,
    /// An idle stream sends a `: keepalive` comment this often (proxies and clients can
    /// tell a quiet stream from a dead one).
    pub heartbeat: Duration,
    /// An idle stream reads the outbox this often even when nothing was announced: an
    /// announcement can be missed (another node's commits reach this one over PostgreSQL's
    /// `LISTEN`, and not across a lost listening connection).
    pub poll: Duration,
    /// Events read from the store at once (and held, at most, per stream).
    pub page: usize,
    /// The interval between a stream's slots: when woken by an announcement, a stream reads
    /// the outbox at its first slot after its last read, so events committed meanwhile go
    /// out together: about one wake and one write per stream per interval instead of one
    /// per commit (what 100 followers of a busy server would otherwise cost), whether or
    /// not the stream's pattern matched what it read. It is, but for a stream still
    /// writing its previous chunk, the most an event waits for its stream beyond its
    /// commit's announcement, while at most `coalesce × reads_per_second` streams are open.
    pub coalesce: Duration,
    /// The reads of the outbox for announcements, all open streams together, per second at
    /// most (about): with more streams open than `coalesce` allows for, every stream's
    /// interval stretches to `open streams / reads_per_second`, up to `poll` (which every
    /// stream reads at anyway). A read that found something to send ends in a socket
    /// write, and on a busy server those writes take CPU from the requests; this bounds
    /// what followers cost, however many are open (a thousand open streams wait about a
    /// second for an event).
    pub reads_per_second: u32,
}

impl StreamOptions {
    /// What `coffer serve` uses.
    pub const DEFAULT: StreamOptions = StreamOptions {
        max_streams: 1024,
        heartbeat: Duration::from_secs(15),
        poll: Duration::from_secs(1),
        page: 256,
        coalesce: Duration::from_millis(25),
        reads_per_second: 1000,
    };
}

/// Streams one API key may have open at once: one key cannot take every place.
pub const MAX_STREAMS_PER_KEY: usize = 8;

/// The server-wide state of event streams: the caps and the shutdown signal.
#[derive(Clone)]
pub(crate) struct Streams {
    options: StreamOptions,
    /// Where every stream's reading slots are counted from (see [`Slots`]).
    epoch: Instant,
    /// Streams opened so far: the next one's phase.
    opened: Arc<std::sync::atomic::AtomicU64>,
    /// Reads of the outbox by every stream so far (`/metrics`).
    reads: Arc<std::sync::atomic::AtomicU64>,
    permits: Arc<Semaphore>,
    per_key: Arc<std::sync::Mutex<std::collections::HashMap<ApiKeyId, usize>>>,
    closing: Arc<watch::Sender<bool>>,
}

/// One key's place among its [`MAX_STREAMS_PER_KEY`]; given back when dropped.
struct KeyPlace {
    key: ApiKeyId,
    per_key: Arc<std::sync::Mutex<std::collections::HashMap<ApiKeyId, usize>>>,
}

impl Drop for KeyPlace {
    fn drop(&mut self) {
        let mut open = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl Streams {
    pub(crate) fn new(options: StreamOptions) -> Streams {
        Streams {
            options,
            permits: Arc::new(Semaphore::new(
                options.max_streams.min(Semaphore::MAX_PERMITS),
            )),
            per_key: Arc::default(),
            closing: Arc::new(watch::channel(false).0),
            epoch: Instant::now(),
            opened: Arc::default(),
            reads: Arc::default(),
        }
    }

    /// A place for one more stream of `key`, unless it has [`MAX_STREAMS_PER_KEY`] open.
    fn take_key_place(&self, key: &ApiKeyId) -> Option<KeyPlace> {
        let mut open = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= MAX_STREAMS_PER_KEY {
            return None;
        }
        *n += 1;
        Some(KeyPlace {
            key: key.clone(),
            per_key: self.per_key.clone(),
        })
    }

    /// Streams open now.
    pub(crate) fn open(&self) -> usize {
        self.options.max_streams.min(Semaphore::MAX_PERMITS) - self.permits.available_permits()
    }

    /// Reads of the outbox by streams since the server started.
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The interval between a stream's slots now: [`StreamOptions::coalesce`], stretched
    /// when so many streams are open that they would read more often, all together, than
    /// [`StreamOptions::reads_per_second`], but not past [`StreamOptions::poll`].
    fn interval(&self) -> Duration {
        let options = &self.options;
        let budget = Duration::from_secs(1) / options.reads_per_second.max(1);
        let open = u32::try_from(self.open()).unwrap_or(u32::MAX);
        let stretched = budget.saturating_mul(open).min(options.poll);
        options.coalesce.max(stretched)
    }

    /// Ends every open stream after the frame it is sending; new ones end at once
    /// (shutdown has begun).
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// The stream's query.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// A subject pattern with NATS wildcards (`*` one token, `>` the rest, last only);
    /// default `system.>`.
    #[param(example = "system.secret.*.updated")]
    pub subject: Option<String>,
    /// Start after this event id. The `Last-Event-ID` header, when present, wins (a
    /// reconnecting EventSource sends it with the URL it first used). Without either the
    /// stream starts at the current end: only new events.
    pub after: Option<u64>,
}

/// `invalid_query` (an unknown parameter, a malformed `after`, an invalid subject
/// pattern) or `invalid_header` (a `Last-Event-ID` that is not an event id).
#[derive(IntoResponses)]
#[response(status = 400)]
pub struct BadStreamRequest(ErrorBody);

/// Events as they commit, as server-sent events: `id: <event id>`, one `data:` line with the
/// event's JSON, a blank line; `: keepalive` comments while idle. Admin keys see every
/// event, manage keys their environment's; runtime keys are refused.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    security(("bearer" = [])),
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header,
            description = "Resume after this event id (the `id:` of the last event received)"),
    ),
    responses(
        (status = 200, description = "The stream; it ends at server shutdown or when the key is revoked",
            content_type = "text/event-stream", body = String),
        Unauthorized, BadStreamRequest, Forbidden, Unavailable,
    ))]
pub async fn event_stream(
    State(coffer): State<Arc<Coffer>>,
    Caller(who): Caller,
    QueryParams(q): QueryParams<StreamQuery>,
    Extension(streams): Extension<Streams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pattern = match q.subject.as_deref() {
        None => SubjectPattern::all(),
        Some(raw) => SubjectPattern::new(raw).map_err(|_| {
            // The pattern's own message quotes it; answer with the rule only.
            ApiError::invalid_query(
                "`subject` is not a valid pattern: tokens separated by '.', '*' for one token, '>' (last only) for the rest, at most 512 characters",
            )
        })?,
    };
    let resume = last_event_id(&headers)?;
    let scope = coffer.event_scope(&who)?;
    let key = bearer_key(&headers)
        .and_then(KeyDigest::of)
        .ok_or_else(|| ApiError::from(coffer_core::CoreError::Unauthenticated))?;
    let permit = streams
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded("event streams"))?;
    let key_place = streams
        .take_key_place(&who.key_id)
        .ok_or_else(|| ApiError::overloaded("event streams of this API key"))?;
    let position = match resume.or(q.after) {
        // No event can have a larger id: every store keeps them in signed 64-bit columns.
        Some(after) => after.min(coffer_store::MAX_STORED_NUMBER),
        None => coffer.last_event_id().await?,
    };
    tracing::debug!(key = %who.key_id, after = position, "event stream opened");
    let feed = Feed {
        watch: coffer.watch_events(),
        coffer,
        key,
        who,
        scope,
        pattern,
        position,
        pending: VecDeque::new(),
        fetch: true,
        greeted: false,
        slots: Slots::new(
            streams.epoch,
            streams
                .opened
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ),
        closing: streams.closing.subscribe(),
        streams,
        last_sent: Instant::now(),
        last_fetch: Instant::now(),
        watching: true,
        announced: 0,
        _permit: permit,
        _key_place: key_place,
    };
    let body = Body::from_stream(futures_util::stream::unfold(feed, |mut feed| async move {
        let frame = feed.next_frame().await?;
        Some((Ok::<_, Infallible>(frame), feed))
    }));
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx-style proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The `Last-Event-ID` header: absent, or an event id.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(raw) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = raw.to_str().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None); // EventSource sends an empty one before it has seen an id
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "Last-Event-ID must be an event id (a non-negative integer)",
        )
    })
}

/// One open stream: where it is in the outbox and what it may send.
struct Feed {
    coffer: Arc<Coffer>,
    /// The digest of the key the stream was opened with, to re-check that it is still valid.
    key: KeyDigest,
    who: Principal,
    scope: EventScope,
    pattern: SubjectPattern,
    /// The last event id examined (sent, or skipped as not visible).
    position: u64,
    /// Events read but not yet sent: at most one page.
    pending: VecDeque<Arc<SharedEvent>>,
    /// Whether to read the outbox before waiting again.
    fetch: bool,
    greeted: bool,
    /// The server's streams: their options, their count (the interval between this
    /// stream's slots) and their reads of the outbox.
    streams: Streams,
    /// When this stream reads the outbox for an announcement.
    slots: Slots,
    closing: watch::Receiver<bool>,
    watch: watch::Receiver<u64>,
    /// Whether `watch` still has a sender (a dropped one would wake at once forever).
    watching: bool,
    /// The last event id this node had announced when the stream last woke for it: a page
    /// that ends before it is followed by another fetch.
    announced: u64,
    last_sent: Instant,
    /// When the stream last read the outbox: its next read for an announcement is at its
    /// first slot after this (see [`Slots`]).
    last_fetch: Instant,
    _permit: OwnedSemaphorePermit,
    _key_place: KeyPlace,
}

impl Feed {
    /// The next frame to send, or `None` to end the stream.
    async fn next_frame(&mut self) -> Option<String> {
        if !self.greeted {
            self.greeted = true;
            // Sends the head at once, tells EventSource how soon to reconnect, and gives a
            // client that receives no event before its connection drops a position to
            // resume from (an `id:` without data sets the last event id, dispatches nothing).
            return Some(format!("retry: 1000\nid: {}\n\n", self.position));
        }
        loop {
            if *self.closing.borrow() {
                return None;
            }
            if !self.pending.is_empty() {
                if !self.still_authorized().await {
                    return None;
                }
                // Every event at hand in one chunk (one write for the connection, not one
                // per event), up to a bound so a chunk stays small. The frames were made
                // once for every stream: this copies them, once.
                let take = chunk_len(&self.pending);
                let mut chunk = String::with_capacity(
                    self.pending.iter().take(take).map(|e| e.frame.len()).sum(),
                );
                for event in self.pending.drain(..take) {
                    chunk.push_str(&event.frame);
                }
                return Some(self.sent(chunk));
            }
            if self.fetch {
                self.last_fetch = Instant::now();
                self.streams
                    .reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let page = match self
                    .coffer
                    .events_page(
                        &self.scope,
                        &self.pattern,
                        self.position,
                        self.streams.options.page,
                    )
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read events; ending the stream");
                        return None;
                    }
                };
                self.position = page.last_examined.unwrap_or(self.position);
                // A full page may have more behind it; so may a page read from a ring that
                // had not yet caught up with what this node announced (the announcement
                // this stream woke for is spent). Only a page that moved on asks again.
                self.fetch =
                    page.full || (page.last_examined.is_some() && self.position < self.announced);
                if page.events.is_empty() && page.full {
                    // A long run of events this stream may not see: let other tasks run
                    // between pages (a point read of the store may not yield by itself).
                    tokio::task::yield_now().await;
                }
                self.pending.extend(page.events);
                continue;
            }
            match self.wait().await {
                Wake::Fetch => {
                    // Something committed (it may be this key's revocation), or the poll
                    // interval passed (a revocation may have landed between the request's
                    // authentication and the stream's first wait): a revoked key's stream
                    // ends now rather than at the next keep-alive. The check is a cache
                    // lookup but once a second per key.
                    if !self.still_authorized().await {
                        return None;
                    }
                    self.fetch = true;
                }
                Wake::Heartbeat => {
                    if !self.still_authorized().await {
                        return None;
                    }
                    return Some(self.sent(": keepalive\n\n".to_owned()));
                }
                Wake::Close => return None,
            }
        }
    }

    /// Waits until there may be new events (announced, or the poll interval passed), a
    /// heartbeat is due, or the server shuts down.
    async fn wait(&mut self) -> Wake {
        let heartbeat_at = self.last_sent + self.streams.options.heartbeat;
        let watching = self.watching;
        let watch = &mut self.watch;
        let closing = &mut self.closing;
        let woken = async {
            if watching {
                watch
                    .changed()
                    .await
                    .ok()
                    .map(|()| *watch.borrow_and_update())
            } else {
                std::future::pending().await
            }
        };
        let last_fetch = self.last_fetch;
        let slots = self.slots;
        let streams = &self.streams;
        tokio::select! {
            announced = woken => {
                self.watching = announced.is_some();
                self.announced = announced.unwrap_or(self.announced);
                // Let what commits next join what just committed: read at the stream's
                // first slot after its last read (at once if that has passed: a stream
                // that was idle, or busy writing past its slot), whatever the pattern
                // matched. A stream woken by the same commit as others after a quiet
                // spell reads with them once, then at its own slots. The interval is the
                // one of the moment (it moves with the streams open, and each move shifts
                // every stream's slots): half of it counts from the last read, so a stream
                // whose slots moved still reads but about once per interval.
                let interval = streams.interval();
                let read_at = slots.after(last_fetch + interval / 2, interval);
                tokio::select! {
                    () = tokio::time::sleep_until(read_at) => Wake::Fetch,
                    _ = closing.changed() => Wake::Close,
                }
            }
            () = tokio::time::sleep(self.streams.options.poll) => Wake::Fetch,
            () = tokio::time::sleep_until(heartbeat_at) => Wake::Heartbeat,
            _ = closing.changed() => Wake::Close,
        }
    }

    /// Whether the stream's key is still valid, asked at every wake and keep-alive:
    /// cheap (the service remembers keys for a second; this node's revocations clear
    /// that at once), and a revoked key is sent nothing committed after its revocation.
    async fn still_authorized(&self) -> bool {
        let valid = self.coffer.still_authorized(&self.key, &self.who).await;
        if !valid {
            tracing::debug!(key = %self.who.key_id, "event stream ended: its key is no longer valid");
        }
        valid
    }

    fn sent(&mut self, frame: String) -> String {
        self.last_sent = Instant::now();
        frame
    }
}

/// The instants at which a stream reads the outbox when woken by an announcement: one per
/// coalescing interval, at a phase of its own. One commit wakes every stream at once; were
/// they all to read (and write) at that instant plus the interval, they would go on doing it
/// together, a burst of as many socket writes as there are streams once per interval, which
/// whatever else the server does waits behind. Phases spread by the golden ratio keep any
/// number of streams about evenly apart; a stream reads at its first slot after its last
/// read, so about once per interval while commits keep coming. The interval is the server's
/// at the time ([`Streams::interval`]: it stretches with the streams open), the phase the
/// same fraction of it.
#[derive(Clone, Copy, Debug)]
struct Slots {
    /// Where every stream's slots are counted from (the server's).
    epoch: Instant,
    /// This stream's phase, as a fraction of the interval.
    fraction: f64,
}

impl Slots {
    fn new(epoch: Instant, nth: u64) -> Slots {
        // The fractional part of nth × φ (the golden ratio's inverse, in 1/2^32ths).
        let fraction = nth.wrapping_mul(0x9E37_79B9) & 0xFFFF_FFFF;
        Slots {
            epoch,
            fraction: fraction as f64 / 4_294_967_296.0,
        }
    }

    /// The first slot, for slots `interval` apart.
    fn first(&self, interval: Duration) -> Instant {
        self.epoch + interval.mul_f64(self.fraction)
    }

    /// The first slot strictly after `instant`, for slots `interval` apart.
    fn after(&self, instant: Instant, interval: Duration) -> Instant {
        let first = self.first(interval);
        let step = interval.as_nanos().max(1);
        let Some(since) = instant.checked_duration_since(first) else {
            return first;
        };
        let next = since.as_nanos() / step + 1;
        let offset = Duration::from_nanos(u64::try_from(next * step).unwrap_or(u64::MAX));
        first + offset
    }
}

/// A chunk of frames grows to about this many bytes at most before it is sent.
const MAX_CHUNK: usize = 64 * 1024;

/// How many of `pending`'s frames go in the next chunk: all of them, or as many as reach
/// [`MAX_CHUNK`] (at least one).
fn chunk_len(pending: &VecDeque<Arc<SharedEvent>>) -> usize {
    let mut bytes = 0;
    for (i, event) in pending.iter().enumerate() {
        bytes += event.frame.len();
        if bytes >= MAX_CHUNK {
            return i + 1;
        }
    }
    pending.len()
}

/// Why an idle stream woke.
enum Wake {
    /// A commit was announced, or the poll interval passed.
    Fetch,
    Heartbeat,
    Close,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_is_absent_empty_or_a_number() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("last-event-id", HeaderValue::from_str(v).unwrap());
            last_event_id(&h)
        };
        assert_eq!(last_event_id(&HeaderMap::new()).unwrap(), None);
        assert_eq!(with("").unwrap(), None);
        assert_eq!(with(" 42 ").unwrap(), Some(42));
        assert_eq!(with("-1").unwrap_err().code(), "invalid_header");
        assert_eq!(with("4x").unwrap_err().code(), "invalid_header");
    }

    #[test]
    fn a_frame_is_one_id_line_one_data_line_and_a_blank_line() {
        use coffer_store::EventRecord;
        let event = EventRecord {
            id: 7,
            subject: "system.secret.A.created".into(),
            environment: Some("default".into()),
            name: Some("A".into()),
            revision: Some(1),
            actor: coffer_store::ActorRef::system(),
            at: "2026-01-01T00:00:00Z".into(),
            count: None,
        };
        let shared = SharedEvent::new(event.clone()).unwrap();
        let f = &shared.frame;
        let lines: Vec<&str> = f.split('\n').collect();
        assert_eq!(lines.len(), 4, "{f}");
        assert_eq!(lines[0], "id: 7");
        let data: EventRecord =
            serde_json::from_str(lines[1].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data, event);
        assert_eq!((lines[2], lines[3]), ("", ""));
    }

    #[test]
    fn a_streams_slots_are_one_interval_apart_at_its_own_phase() {
        let epoch = Instant::now();
        for interval in [Duration::from_millis(25), Duration::from_millis(130)] {
            for nth in 0..200 {
                let slots = Slots::new(epoch, nth);
                let first = slots.first(interval);
                let phase = first - epoch;
                assert!(phase < interval, "{nth}: phase {phase:?}");
                // Before the first slot, then on a slot, then between slots.
                let just_before = first.checked_sub(Duration::from_nanos(1)).unwrap();
                assert_eq!(slots.after(just_before, interval), first);
                for probe in [
                    first,
                    first + Duration::from_micros(1),
                    first + interval * 3 + Duration::from_millis(7),
                    first + interval * 1000,
                ] {
                    let next = slots.after(probe, interval);
                    assert!(next > probe, "{nth}: {next:?} not after {probe:?}");
                    assert!(
                        next - probe <= interval,
                        "{nth}: more than an interval away"
                    );
                    let from_first = (next - first).as_nanos();
                    assert_eq!(from_first % interval.as_nanos(), 0, "{nth}: not on a slot");
                }
            }
        }
        // Spread about evenly: a hundred streams put 3 to 5 slots (4 on average) in every
        // millisecond of a 25 ms interval, not a hundred in one.
        let interval = Duration::from_millis(25);
        let mut per_ms = [0u32; 25];
        for nth in 0..100 {
            let phase = Slots::new(epoch, nth).first(interval) - epoch;
            per_ms[phase.as_millis() as usize] += 1;
        }
        assert!(per_ms.iter().all(|n| (3..=5).contains(n)), "{per_ms:?}");
    }

    #[test]
    fn the_interval_stretches_when_the_streams_would_read_more_than_their_budget() {
        let streams = Streams::new(StreamOptions {
            coalesce: Duration::from_millis(25),
            reads_per_second: 1000,
            ..StreamOptions::DEFAULT
        });
        let ms = |n| Duration::from_millis(n);
        assert_eq!(streams.interval(), ms(25), "no stream open");
        let some = streams.permits.clone().try_acquire_many_owned(10).unwrap();
        assert_eq!(
            streams.interval(),
            ms(25),
            "10 streams read 400 times a second"
        );
        let more = streams.permits.clone().try_acquire_many_owned(90).unwrap();
        assert_eq!(
            streams.interval(),
            ms(100),
            "100 streams: 1,000 reads a second"
        );
        let all = streams.permits.clone().try_acquire_many_owned(924).unwrap();
        assert_eq!(
            streams.interval(),
            ms(1000),
            "1,024 streams: no longer than the poll"
        );
        drop((all, more));
        assert_eq!(streams.interval(), ms(25), "back to 10");
        drop(some);
        let none = Streams::new(StreamOptions {
            reads_per_second: 0,
            ..StreamOptions::DEFAULT
        });
        let _one = none.permits.clone().try_acquire_owned().unwrap();
        assert_eq!(
            none.interval(),
            Duration::from_secs(1),
            "a budget of 0 is 1"
        );
    }

    #[test]
    fn a_chunk_takes_every_frame_at_hand_up_to_its_bound() {
        let event = |id: u64, size: usize| {
            SharedEvent::new(coffer_store::EventRecord {
                id,
                subject: format!("system.secret.{}.created", "N".repeat(size)),
                environment: Some("default".into()),
                name: None,
                revision: None,
                actor: coffer_store::ActorRef::system(),
                at: String::new(),
                count: None,
            })
            .unwrap()
        };
        let small: VecDeque<_> = (1..=5).map(|id| event(id, 10)).collect();
        assert_eq!(chunk_len(&small), 5);
        assert_eq!(chunk_len(&VecDeque::new()), 0);
        let big: VecDeque<_> = (1..=5).map(|id| event(id, MAX_CHUNK / 2)).collect();
        assert_eq!(
            chunk_len(&big),
            2,
            "the frame that reaches the bound is the last"
        );
        let huge: VecDeque<_> = (1..=2).map(|id| event(id, MAX_CHUNK * 2)).collect();
        assert_eq!(chunk_len(&huge), 1, "a chunk holds at least one frame");
    }
}
