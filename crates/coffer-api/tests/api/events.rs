//! `GET /v1/events/stream`: server-sent events of the outbox, filtered, scoped, resumable,
//! bounded, and never carrying a value.

use std::time::{Duration, Instant};

use coffer_api::{ServeOptions, StreamOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{
    self, Server, assert_refused_for_capability, compare_and_set, start, start_with,
};

/// Every wait in these tests ends by this deadline.
const WAIT: Duration = Duration::from_secs(10);

/// One open stream, read frame by frame.
struct Sse {
    resp: reqwest::Response,
    buf: String,
    /// Every byte received, for scans.
    raw: Vec<u8>,
}

/// What one frame said.
#[derive(Debug)]
enum Frame {
    Event { id: u64, data: Value },
    Comment(String),
    Other,
}

impl Sse {
    async fn open(server: &Server, key: &str, query: &str, last_id: Option<u64>) -> Sse {
        let mut req = server
            .http
            .get(format!("{}/v1/events/stream{query}", server.base))
            .bearer_auth(key);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = tokio::time::timeout(WAIT, req.send())
            .await
            .expect("the stream's head within the deadline")
            .expect("request");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(harness::is_event_stream(&resp), "{:?}", resp.headers());
        Sse {
            resp,
            buf: String::new(),
            raw: Vec::new(),
        }
    }

    /// The next frame, or `None` when the stream ended; panics past the deadline.
    async fn frame(&mut self) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                return Some(parse(block.trim_end_matches('\n')));
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("a frame within the deadline")
                .expect("the stream reads");
            let chunk = chunk?;
            self.raw.extend_from_slice(&chunk);
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next event (skipping comments and `retry:`).
    async fn event(&mut self) -> (u64, Value) {
        loop {
            match self.frame().await.expect("the stream goes on") {
                Frame::Event { id, data } => return (id, data),
                Frame::Comment(_) | Frame::Other => {}
            }
        }
    }

    /// Whether the stream ends (rather than sending another event) within the deadline.
    async fn ends(&mut self) -> bool {
        loop {
            match self.frame().await {
                None => return true,
                Some(Frame::Event { .. }) => return false,
                Some(_) => {}
            }
        }
    }
}

fn parse(block: &str) -> Frame {
    let mut id = None;
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            return Frame::Comment(c.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse().expect("a numeric id"));
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push(v.to_owned());
        } else {
            assert!(line.starts_with("retry: "), "unexpected line {line:?}");
        }
    }
    match id {
        // The greeting: a position to resume from, no event.
        Some(_) if data.is_empty() => {
            assert!(block.starts_with("retry: "), "an id without data: {block}");
            Frame::Other
        }
        Some(id) => {
            assert_eq!(data.len(), 1, "one data line per event: {block}");
            let data: Value = serde_json::from_str(&data[0]).expect("data is JSON");
            assert_eq!(data["id"], id, "id: matches the event's id");
            Frame::Event { id, data }
        }
        None => Frame::Other,
    }
}

#[tokio::test]
async fn the_stream_sends_only_new_events_that_match_the_pattern() {
    let s = start().await;
    s.put_secret("default", "BEFORE", "v").await;
    let mut sse = Sse::open(&s, &s.admin, "?subject=system.secret.*.created", None).await;
    s.put_config("default", "LEVEL", json!(1)).await;
    s.put_secret("default", "A", "v1").await;
    s.put_secret("default", "A", "v2").await; // updated: not matched
    s.put_secret("default", "B", "v").await;
    let (a, first) = sse.event().await;
    assert_eq!(first["subject"], "system.secret.A.created", "{first}");
    assert_eq!(first["environment"], "default");
    assert_eq!(first["name"], "A");
    assert_eq!(first["revision"], 1);
    assert!(first["actor"]["keyId"].as_str().unwrap().starts_with("ak_"));
    assert!(first["at"].is_string());
    let (b, second) = sse.event().await;
    assert_eq!(second["subject"], "system.secret.B.created", "{second}");
    assert!(b > a + 1, "the update between them had an id of its own");

    // The default pattern is `system.>`: everything, config included.
    let mut all = Sse::open(&s, &s.admin, "", None).await;
    s.put_config("default", "LEVEL", json!(2)).await;
    let (_, e) = all.event().await;
    assert_eq!(e["subject"], "system.config.LEVEL.updated", "{e}");
}

#[tokio::test]
async fn a_manage_key_sees_only_its_own_environments_events() {
    let s = start().await;
    s.create_env("prod").await;
    let (_, manage) = s.create_key("manage", Some("prod")).await;
    let mut sse = Sse::open(&s, &manage, "", None).await;
    s.put_secret("default", "ELSEWHERE", "v").await;
    // An event of no environment (an admin key's creation) is not the manage key's either.
    s.create_key("admin", None).await;
    s.put_secret("prod", "MINE", "v").await;
    s.create_env("staging").await;
    s.put_secret("default", "ELSEWHERE", "v2").await;
    s.put_config("prod", "MINE_TOO", json!(true)).await;
    let (_, e) = sse.event().await;
    assert_eq!(e["subject"], "system.secret.MINE.created", "{e}");
    assert_eq!(e["environment"], "prod");
    let (_, e) = sse.event().await;
    assert_eq!(e["subject"], "system.config.MINE_TOO.created", "{e}");
    assert_eq!(e["environment"], "prod");
}

#[tokio::test]
async fn runtime_keys_no_key_and_bad_requests_get_json_errors() {
    let s = start().await;
    let (_, runtime) = s.create_key("runtime", Some("default")).await;
    let path = "/v1/events/stream";
    let (st, b) = s.call(Some(&runtime), Method::GET, path, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["error"]["code"], "forbidden");
    let (st, b) = s.call(None, Method::GET, path, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(b["error"]["code"], "unauthorized");
    for bad in ["a..b", "system.>.x", "sys%20tem", "x*"] {
        let (st, b) = s
            .admin(Method::GET, &format!("{path}?subject={bad}"), None)
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert_eq!(b["error"]["code"], "invalid_query", "{bad}: {b}");
    }
    for bad in ["?after=-1", "?after=x", "?bogus=1"] {
        let (st, b) = s.admin(Method::GET, &format!("{path}{bad}"), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert_eq!(b["error"]["code"], "invalid_query", "{bad}: {b}");
    }
    let resp = s
        .http
        .get(format!("{}{path}", s.base))
        .bearer_auth(&s.admin)
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_header", "{b}");
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_exactly_the_missed_events_in_order() {
    let s = start().await;
    let mut sse = Sse::open(&s, &s.admin, "?subject=system.secret.>", None).await;
    s.put_secret("default", "SEEN_1", "v").await;
    s.put_secret("default", "SEEN_2", "v").await;
    sse.event().await;
    let (last, e) = sse.event().await;
    assert_eq!(e["name"], "SEEN_2");
    drop(sse);

    let missed: Vec<String> = (1..=5).map(|i| format!("MISSED_{i}")).collect();
    for name in &missed {
        s.put_secret("default", name, "v").await;
    }
    let mut again = Sse::open(&s, &s.admin, "?subject=system.secret.>", Some(last)).await;
    let mut got = Vec::new();
    let mut previous = last;
    for _ in 0..5 {
        let (id, e) = again.event().await;
        assert!(id > previous, "ids grow: {id} after {previous}");
        previous = id;
        got.push(e["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, missed);
    // Nothing repeated or extra: the next event is the next change.
    s.put_secret("default", "AFTER", "v").await;
    assert_eq!(again.event().await.1["name"], "AFTER");

    // `?after=` resumes the same way; the header wins when both are given.
    let mut by_query = Sse::open(&s, &s.admin, &format!("?after={last}"), None).await;
    assert_eq!(by_query.event().await.1["name"], "MISSED_1");
    let both = "?after=0&subject=system.secret.>";
    let mut header_wins = Sse::open(&s, &s.admin, both, Some(previous)).await;
    assert_eq!(header_wins.event().await.1["name"], "AFTER");
}

#[tokio::test]
async fn no_event_carries_a_secret_or_config_value() {
    let s = start().await;
    let canary = "canary-3f9a1c7e5b2d4086";
    let mut sse = Sse::open(&s, &s.admin, "", None).await;
    s.put_secret("default", "CANARY", canary).await;
    s.put_secret("default", "CANARY", &format!("{canary}-2"))
        .await;
    let (st, b) = s
        .admin(
            Method::POST,
            "/v1/environments/default/secrets",
            Some(json!({ "secrets": [{ "name": "IMPORTED", "value": canary }] })),
        )
        .await;
    if compare_and_set() {
        assert_eq!(st, StatusCode::OK, "{b}");
    } else {
        assert_refused_for_capability(st, &b);
    }
    s.put_config("default", "CFG", json!({ "v": canary })).await;
    let (st, b) = s
        .admin(
            Method::DELETE,
            "/v1/environments/default/secrets/CANARY",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    let mut expected = vec![
        "system.secret.CANARY.created",
        "system.secret.CANARY.updated",
        "system.secret.IMPORTED.created",
        "system.config.CFG.created",
        "system.secret.CANARY.deleted",
    ];
    if !compare_and_set() {
        expected.retain(|s| !s.contains("IMPORTED")); // the import was refused
    }
    let mut subjects = Vec::new();
    for _ in 0..expected.len() {
        subjects.push(sse.event().await.1["subject"].as_str().unwrap().to_owned());
    }
    assert_eq!(subjects, expected);
    let raw = String::from_utf8_lossy(&sse.raw);
    assert!(raw.contains("CANARY"), "the scan sees the events");
    assert!(
        !raw.contains(canary),
        "a value leaked into the stream: {raw}"
    );
}

fn quick(events: StreamOptions) -> ServeOptions {
    ServeOptions {
        drain_timeout: Duration::from_secs(20),
        events,
        ..ServeOptions::DEFAULT
    }
}

#[tokio::test]
async fn past_the_stream_cap_a_stream_is_refused_503_until_one_closes() {
    let s = start_with(quick(StreamOptions {
        max_streams: 2,
        heartbeat: Duration::from_millis(100),
        ..StreamOptions::DEFAULT
    }))
    .await;
    let one = Sse::open(&s, &s.admin, "", None).await;
    let _two = Sse::open(&s, &s.admin, "", None).await;
    let (st, b) = s.admin(Method::GET, "/v1/events/stream", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["error"]["code"], "overloaded");
    drop(one);
    // The server notices the closed connection at its next keep-alive write.
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = s
            .http
            .get(format!("{}/v1/events/stream", s.base))
            .bearer_auth(&s.admin)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idle_stream_sends_keepalive_comments() {
    let s = start_with(quick(StreamOptions {
        heartbeat: Duration::from_millis(200),
        ..StreamOptions::DEFAULT
    }))
    .await;
    let mut sse = Sse::open(&s, &s.admin, "", None).await;
    let mut keepalives = 0;
    while keepalives < 2 {
        match sse.frame().await.expect("the stream goes on") {
            Frame::Comment(c) => {
                assert_eq!(c, "keepalive");
                keepalives += 1;
            }
            Frame::Event { data, .. } => panic!("no change was made: {data}"),
            Frame::Other => {}
        }
    }
}

#[tokio::test]
async fn a_stream_ends_when_its_key_is_revoked() {
    let s = start_with(quick(StreamOptions {
        heartbeat: Duration::from_millis(200),
        ..StreamOptions::DEFAULT
    }))
    .await;
    let (id, manage) = s.create_key("manage", Some("default")).await;
    let mut sse = Sse::open(&s, &manage, "", None).await;
    s.put_secret("default", "BEFORE", "v").await;
    assert_eq!(sse.event().await.1["name"], "BEFORE");
    let (st, b) = s
        .admin(Method::DELETE, &format!("/v1/api-keys/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    s.put_secret("default", "AFTER_REVOKE", "v").await;
    // The revocation's own event may still reach it (it commits with the revocation);
    // nothing committed after the revocation does, and the stream ends.
    loop {
        match sse.frame().await {
            None => break,
            Some(Frame::Event { data, .. }) => assert_eq!(
                data["subject"],
                format!("system.apikey.{id}.revoked"),
                "the stream went on after its key was revoked"
            ),
            Some(_) => {}
        }
    }
}

/// A stream whose pattern matches little must not wake for every commit of the server: it
/// reads the outbox at most once per coalescing interval (at its own slot), matching or not
/// (a busy server with 100 narrow followers would otherwise wake 100 tasks per commit).
/// Counted by `/metrics`' `coffer_event_stream_reads_total`.
#[tokio::test]
async fn a_stream_reads_the_outbox_once_per_interval_even_when_nothing_matched() {
    let coalesce = Duration::from_millis(250);
    let s = start_with(quick(StreamOptions {
        heartbeat: Duration::from_secs(600),
        poll: Duration::from_secs(600),
        coalesce,
        ..StreamOptions::DEFAULT
    }))
    .await;
    let reads = || stream_metrics(&s);
    assert_eq!(reads().await, (0, 0));
    let mut sse = Sse::open(&s, &s.admin, "?subject=system.secret.WANTED.%3E", None).await;
    // The stream reads the outbox once when it opens.
    let deadline = Instant::now() + WAIT;
    let (before, open) = loop {
        let (read, open) = reads().await;
        if read >= 1 {
            break (read, open);
        }
        assert!(
            Instant::now() < deadline,
            "the stream never read the outbox"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(open, 1);
    let started = Instant::now();
    const COMMITS: u64 = 20;
    for i in 0..COMMITS {
        s.put_secret("default", &format!("OTHER{i}"), "v").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.put_secret("default", "WANTED", "v").await;
    assert_eq!(sse.event().await.1["name"], "WANTED");
    let (after, _) = reads().await;
    let elapsed = started.elapsed();
    // About one read per slot (two in a slot at most: one at the wake after a quiet
    // spell, or when a read ended before what was announced), where every commit used to
    // bring its own. A slow machine spreads the commits over more slots: the bound grows
    // with them.
    let slots = (elapsed.as_millis() / coalesce.as_millis()) as u64 + 1;
    let read = after - before;
    assert!(
        read <= 2 * slots,
        "{read} reads of the outbox in {elapsed:?} for {COMMITS} commits that matched nothing (interval {coalesce:?})"
    );
    drop(sse);
}

/// Many streams together read the outbox no more often than their budget: each stream's
/// interval stretches with the streams open (4 streams at 8 reads a second: every 500 ms,
/// where the 10 ms coalescing interval alone would have them read at every commit), and
/// every event still reaches every stream.
#[tokio::test]
async fn streams_read_the_outbox_within_their_budget_however_many_are_open() {
    const STREAMS: u64 = 4;
    let budget = 8;
    let interval = Duration::from_millis(500); // STREAMS / budget
    let s = start_with(quick(StreamOptions {
        heartbeat: Duration::from_secs(600),
        poll: Duration::from_secs(600),
        coalesce: Duration::from_millis(10),
        reads_per_second: budget,
        ..StreamOptions::DEFAULT
    }))
    .await;
    let reads = || async { stream_metrics(&s).await.0 };
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(Sse::open(&s, &s.admin, "", None).await);
    }
    // Each reads the outbox once when it opens.
    let deadline = Instant::now() + WAIT;
    let before = loop {
        let read = reads().await;
        if read >= STREAMS {
            break read;
        }
        assert!(
            Instant::now() < deadline,
            "the streams never read the outbox"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let started = Instant::now();
    const COMMITS: usize = 20;
    for i in 0..COMMITS {
        s.put_secret("default", &format!("B{i}"), "v").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for sse in &mut streams {
        for i in 0..COMMITS {
            assert_eq!(sse.event().await.1["name"], format!("B{i}"));
        }
    }
    let read = reads().await - before;
    let elapsed = started.elapsed();
    // At most two reads per slot and stream (see the test above); a slow machine spreads
    // the commits over more slots, and the bound grows with them.
    let slots = (elapsed.as_millis() / interval.as_millis()) as u64 + 1;
    assert!(
        read <= 2 * STREAMS * slots,
        "{read} reads of the outbox by {STREAMS} streams in {elapsed:?} ({COMMITS} commits, budget {budget}/s)"
    );
}

/// `/metrics`' reads of the outbox by streams so far, and the streams open now.
async fn stream_metrics(s: &Server) -> (u64, u64) {
    let resp = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    (
        metric(&text, "coffer_event_stream_reads_total"),
        metric(&text, "coffer_event_streams_open"),
    )
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The revocation itself wakes the stream, which then ends: a dashboard signed in with the
/// key learns at once (its reconnection is refused), not at the next keep-alive.
#[tokio::test]
async fn a_stream_ends_at_its_keys_revocation_not_at_the_next_keepalive() {
    let s = start_with(quick(StreamOptions {
        heartbeat: Duration::from_secs(600),
        ..StreamOptions::DEFAULT
    }))
    .await;
    let (id, manage) = s.create_key("manage", Some("default")).await;
    // A subject the revocation's own event does not match: only the revocation check ends it.
    let mut sse = Sse::open(&s, &manage, "?subject=system.secret.%3E", None).await;
    s.put_secret("default", "BEFORE", "v").await;
    assert_eq!(sse.event().await.1["name"], "BEFORE");
    let (st, b) = s
        .admin(Method::DELETE, &format!("/v1/api-keys/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = sse.frame().await {
            if let Frame::Event { data, .. } = frame {
                panic!("an event after the revocation: {data}");
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream waited for its keep-alive (600 s)"
    );
}

#[tokio::test]
async fn shutdown_ends_open_streams_instead_of_waiting_for_the_drain() {
    let s = start_with(quick(StreamOptions::DEFAULT)).await;
    let mut sse = Sse::open(&s, &s.admin, "", None).await;
    let took = s.shut_down().await;
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with a stream open (drain timeout 20 s)"
    );
    assert!(sse.ends().await);
}

/// A reader that stops reading holds no more than the sockets buffer: the stream is
/// produced only as it is read, its writes stall, and the connection is closed, freeing
/// its place among the streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_reader_stops_reading_is_closed_and_its_place_freed() {
    use tokio::io::AsyncWriteExt;
    let s = start_with(ServeOptions {
        write_stall_timeout: Duration::from_millis(300),
        ..quick(StreamOptions {
            max_streams: 1,
            ..StreamOptions::DEFAULT
        })
    })
    .await;
    let addr: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut hog = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        s.admin
    );
    hog.write_all(request.as_bytes()).await.unwrap();
    // The hog reads its answer's head (no more): its stream holds the one place. (Probing
    // with streams of our own instead would race the hog for that place.)
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read_head = async {
        use tokio::io::AsyncReadExt;
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                hog.read(&mut byte).await.unwrap(),
                1,
                "the hog's stream closed"
            );
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(WAIT, read_head)
        .await
        .expect("the hog's stream never opened");
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_eq!(
        s.admin(Method::GET, "/v1/events/stream", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "the hog holds the only place"
    );
    // Thousands of events the hog never reads, until its place is free again.
    for batch in 0.. {
        assert!(
            batch < 100,
            "the stream kept its place with 100,000 events unread"
        );
        let secrets: Vec<Value> = (0..1000)
            .map(|i| json!({ "name": format!("S{batch}_{i}"), "value": "v" }))
            .collect();
        let (st, b) = s
            .admin(
                Method::POST,
                "/v1/environments/default/secrets",
                Some(json!({ "secrets": secrets })),
            )
            .await;
        if !compare_and_set() {
            // Filling the stream takes imports; the stream itself does not depend on the
            // value store, and is checked on every other one.
            return assert_refused_for_capability(st, &b);
        }
        assert_eq!(st, StatusCode::OK, "{b}");
        let (st, _) = s.admin(Method::GET, "/v1/events/stream", None).await;
        if st == StatusCode::OK {
            break;
        }
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    }
    drop(hog);
}

/// The greeting names the position the stream starts after, so a client whose connection
/// drops before its first event resumes from there and misses nothing.
#[tokio::test]
async fn a_client_dropped_before_its_first_event_resumes_from_the_greeting() {
    let s = start().await;
    let mut sse = Sse::open(&s, &s.admin, "?subject=system.secret.>", None).await;
    let greeting = loop {
        if let Some(end) = sse.buf.find("\n\n") {
            break sse.buf[..end].to_owned();
        }
        let chunk = tokio::time::timeout(WAIT, sse.resp.chunk())
            .await
            .expect("the greeting")
            .expect("reads")
            .expect("a chunk");
        sse.buf.push_str(std::str::from_utf8(&chunk).unwrap());
    };
    let start_id: u64 = greeting
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id in the greeting {greeting:?}"))
        .parse()
        .unwrap();
    drop(sse);
    for i in 1..=3 {
        s.put_secret("default", &format!("EARLY_{i}"), "v").await;
    }
    let mut again = Sse::open(&s, &s.admin, "?subject=system.secret.>", Some(start_id)).await;
    for i in 1..=3 {
        assert_eq!(again.event().await.1["name"], format!("EARLY_{i}"));
    }
}

/// One key cannot take every stream: past its own cap it is refused while another key
/// still gets one.
#[tokio::test]
async fn one_key_holds_at_most_its_share_of_streams() {
    let s = start().await;
    let (_, manage) = s.create_key("manage", Some("default")).await;
    let mut open = Vec::new();
    for _ in 0..coffer_api::MAX_STREAMS_PER_KEY {
        open.push(Sse::open(&s, &manage, "", None).await);
    }
    let refused = s
        .http
        .get(format!("{}/v1/events/stream", s.base))
        .bearer_auth(&manage)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    let _admin = Sse::open(&s, &s.admin, "", None).await;
}
