//! What one client can hold on the server, and what happens to requests in flight when
//! the key behind them goes: every limit answers with the JSON error contract, and
//! `/healthz` keeps answering while a limit is being pushed.

use std::time::{Duration, Instant};

use coffer_api::ServeOptions;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Server, assert_refused_for_capability, compare_and_set, start, start_with};

async fn connect(s: &Server) -> TcpStream {
    TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Sends a request head (and the start of its body) and returns the open connection.
async fn begin(
    s: &Server,
    method: &str,
    path: &str,
    key: &str,
    len: usize,
    start: &[u8],
) -> TcpStream {
    let mut conn = connect(s).await;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(start).await.expect("body start");
    conn
}

/// Reads one response (the server closes or the body ends) and returns (status, JSON body).
async fn response(conn: &mut TcpStream) -> (u16, Value, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            let n = conn.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answers");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, json, head.to_owned())
}

/// `/healthz` answers; returns how long it took (printed by the callers, not asserted on:
/// speed is the benchmark's job, availability is this test's).
async fn healthz(s: &Server) -> Duration {
    let began = Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        s.call(None, Method::GET, "/healthz", None),
    )
    .await
    .expect("/healthz answers during the attack");
    assert_eq!(got.0, StatusCode::OK);
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_key_revoked_while_its_request_is_in_flight_creates_nothing() {
    let s = start().await;
    let (leaked_id, leaked) = s.create_key("admin", None).await;
    let body = json!({ "name": "backdoor", "role": "admin" }).to_string();
    let (first, rest) = body.as_bytes().split_at(5);
    let mut conn = begin(&s, "POST", "/v1/api-keys", &leaked, body.len(), first).await;
    let revoke = format!("/v1/api-keys/{leaked_id}");
    let (status, b) = s.admin(Method::DELETE, &revoke, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{b}");
    conn.write_all(rest).await.expect("rest of the body");
    let (status, b, _) = response(&mut conn).await;
    assert_eq!(status, 401, "{b}");
    assert_eq!(b["error"]["code"], "unauthorized");
    let (_, keys) = s.admin(Method::GET, "/v1/api-keys", None).await;
    assert!(
        !keys.to_string().contains("backdoor"),
        "no key was created: {keys}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manage_key_whose_environment_was_recreated_mid_request_writes_nothing() {
    let s = start().await;
    s.create_env("prod").await;
    let (_, manage) = s.create_key("manage", Some("prod")).await;
    let body = json!({ "value": "planted" }).to_string();
    let path = "/v1/environments/prod/secrets/PLANTED";
    let (first, rest) = body.as_bytes().split_at(3);
    let mut conn = begin(&s, "PUT", path, &manage, body.len(), first).await;
    let (status, _) = s.admin(Method::DELETE, "/v1/environments/prod", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    s.create_env("prod").await;
    conn.write_all(rest).await.expect("rest");
    let (status, b, _) = response(&mut conn).await;
    assert_eq!(status, 401, "{b}");
    let (status, _) = s.admin(Method::GET, path, None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing landed in the new prod"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_may_not_write_is_refused_before_its_body_is_read() {
    let s = start().await;
    let (_, runtime) = s.create_key("runtime", Some("default")).await;
    // 300 runtime-key PUTs announcing 1 MiB bodies that never come: each is refused at
    // once, nothing waits for the bodies, and other clients are served throughout.
    let mut conns = Vec::new();
    for i in 0..300 {
        let path = format!("/v1/environments/default/secrets/S{i}");
        conns.push(begin(&s, "PUT", &path, &runtime, 1_000_000, b"{\"value\":\"").await);
    }
    let mut slowest = Duration::ZERO;
    for conn in &mut conns {
        let (status, b, _) = response(conn).await;
        assert_eq!(status, 403, "{b}");
        assert_eq!(b["error"]["code"], "forbidden");
    }
    for _ in 0..5 {
        slowest = slowest.max(healthz(&s).await);
    }
    println!("healthz slowest during 300 refused slow bodies: {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let s = start_with(ServeOptions {
        body_read_timeout: Duration::from_millis(300),
        ..ServeOptions::DEFAULT
    })
    .await;
    let path = "/v1/environments/default/secrets/SLOW";
    let mut conn = begin(&s, "PUT", path, &s.admin, 100, b"{\"value\":").await;
    let (status, b, _) = response(&mut conn).await;
    assert_eq!(status, 408, "{b}");
    assert_eq!(b["error"]["code"], "body_timeout");
    println!("healthz after: {:?}", healthz(&s).await);
    let (status, _) = s.admin(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_memory_budget_get_503_overloaded() {
    let s = start_with(ServeOptions {
        body_budget_bytes: 1024 * 1024,
        body_read_timeout: Duration::from_secs(2),
        ..ServeOptions::DEFAULT
    })
    .await;
    // One admin request announces 1,000,000 bytes: once authorized, its share of the
    // 1 MiB budget is taken before a byte of it is read.
    let path = "/v1/environments/default/secrets/BIG";
    let mut holder = begin(&s, "PUT", path, &s.admin, 1_000_000, b"").await;
    // Another announcing 100,000 bytes no longer fits. Until the holder's share is taken,
    // an attempt takes its own share, waits for its body and times out (408); should an
    // attempt have come first and got the holder refused, the holder begins again.
    let began = Instant::now();
    let refused = loop {
        assert!(began.elapsed() < Duration::from_secs(30), "never refused");
        let mut scratch = [0u8; 64];
        match holder.try_read(&mut scratch) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {} // still waiting: good
            _ => holder = begin(&s, "PUT", path, &s.admin, 1_000_000, b"").await,
        }
        let mut other = begin(
            &s,
            "PUT",
            "/v1/environments/default/secrets/O",
            &s.admin,
            100_000,
            b"",
        )
        .await;
        let (status, b, head) = response(&mut other).await;
        if status == 503 {
            assert!(
                head.to_ascii_lowercase().contains("retry-after: 1"),
                "{head}"
            );
            break b;
        }
        assert_eq!(status, 408, "{b}");
    };
    assert_eq!(refused["error"]["code"], "overloaded");
    println!("healthz while the budget is full: {:?}", healthz(&s).await);
    // The holder goes away: its share comes back, and a 100 kB body is read whole again
    // (to be judged: its value is over the 64 KiB value limit).
    drop(holder);
    let body = json!({ "value": "v".repeat(100_000) }).to_string();
    let began = Instant::now();
    loop {
        let path = "/v1/environments/default/secrets/OTHER";
        let mut conn = begin(&s, "PUT", path, &s.admin, body.len(), body.as_bytes()).await;
        let (status, b, _) = response(&mut conn).await;
        if status == 413 {
            assert_eq!(b["error"]["code"], "value_too_large");
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the budget never came back: {b}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_a_json_503_and_the_server_recovers() {
    let s = start_with(ServeOptions {
        max_connections: 20,
        ..ServeOptions::DEFAULT
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(connect(&s).await);
    }
    // The accept loop takes the 20 before the 21st (one listener, accepted in order).
    let mut over = connect(&s).await;
    over.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (status, b, head) = response(&mut over).await;
    assert_eq!(status, 503, "{head} {b}");
    assert_eq!(b["error"]["code"], "overloaded");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    drop(idle);
    // Closed connections give their slots back as the server notices them.
    let began = Instant::now();
    loop {
        let (status, _) = s.call(None, Method::GET, "/healthz", None).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_hundreds_of_idle_connections_are_open() {
    let s = start().await;
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(connect(&s).await);
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        slowest = slowest.max(healthz(&s).await);
    }
    println!("healthz slowest with 600 idle connections: {slowest:?}");
}

/// The HTTP layer's own refusals carry the JSON error body like every other error.
#[tokio::test]
async fn malformed_requests_get_json_errors_from_the_http_layer_too() {
    let s = start().await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a huge header",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(4_000_000)
            )
            .into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            "a long URI",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
            "uri_too_long",
        ),
        (
            "a bad Content-Length",
            b"PUT /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "a NUL in a header",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "a raw 0xff in the path",
            b"GET /v1/\xff HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
    ];
    for (what, request, want_status, want_code) in cases {
        let mut conn = connect(&s).await;
        let _ = conn.write_all(&request).await;
        let (status, b, head) = response(&mut conn).await;
        assert_eq!(status, want_status, "{what}: {head} {b}");
        assert_eq!(b["error"]["code"], want_code, "{what}: {b}");
    }
    let mut conn = connect(&s).await;
    let head = format!(
        "PUT /v1/environments/default/secrets/A HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n",
        s.admin
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let (status, b, _) = response(&mut conn).await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (400, Some("malformed_body")),
        "{b}"
    );
    let (status, b) = s
        .call(
            Some(&s.admin),
            Method::PUT,
            "/v1/environments/default/secrets/A",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    let mut conn = connect(&s).await;
    let body = r#"{"value":"a","value":"b"}"#;
    let head = format!(
        "PUT /v1/environments/default/secrets/A HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        s.admin,
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let (status, b, _) = response(&mut conn).await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (400, Some("duplicate_field")),
        "{b}"
    );
}

/// Unknown or malformed query parameters are refused on every route, and PUT honours
/// `expectedRevision` in the query as DELETE does.
#[tokio::test]
async fn query_strings_are_checked_on_every_route() {
    let s = start().await;
    s.put_secret("default", "A", "v").await;
    let routes = [
        (Method::GET, "/healthz"),
        (Method::GET, "/readyz"),
        (Method::GET, "/metrics"),
        (Method::GET, "/v1/status"),
        (Method::GET, "/v1/keys"),
        (Method::POST, "/v1/keys/rewrap"),
        (Method::POST, "/v1/keys/verify"),
        (Method::GET, "/v1/environments"),
        (Method::POST, "/v1/environments"),
        (Method::DELETE, "/v1/environments/default"),
        (Method::GET, "/v1/api-keys"),
        (Method::POST, "/v1/api-keys"),
        (Method::DELETE, "/v1/api-keys/ak_0000000000000000"),
        (Method::GET, "/v1/environments/default/secrets"),
        (Method::POST, "/v1/environments/default/secrets"),
        (Method::GET, "/v1/environments/default/secrets/A"),
        (Method::PUT, "/v1/environments/default/secrets/A"),
        (Method::DELETE, "/v1/environments/default/secrets/A"),
        (Method::GET, "/v1/environments/default/config"),
        (Method::GET, "/v1/environments/default/config/A"),
        (Method::PUT, "/v1/environments/default/config/A"),
        (Method::DELETE, "/v1/environments/default/config/A"),
    ];
    for (method, path) in routes {
        let (status, b) = s
            .admin(method.clone(), &format!("{path}?bogus=1"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {b}");
        assert_eq!(b["error"]["code"], "invalid_query", "{method} {path}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains("bogus"),
            "{b}"
        );
    }
    let (status, b) = s
        .admin(
            Method::GET,
            "/v1/environments/default/secrets?limit=ten",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    assert!(!b.to_string().contains("Failed to deserialize"), "{b}");
    let path = "/v1/environments/default/secrets/A?expectedRevision=0";
    let (status, b) = s
        .admin(Method::PUT, path, Some(json!({ "value": "w" })))
        .await;
    if !compare_and_set() {
        return assert_refused_for_capability(status, &b);
    }
    assert_eq!(status, StatusCode::CONFLICT, "must not exist: {b}");
    assert_eq!(b["error"]["currentRevision"], 1);
    let path = "/v1/environments/default/secrets/A?expectedRevision=1";
    let body = json!({ "value": "w", "expectedRevision": 2 });
    let (status, b) = s.admin(Method::PUT, path, Some(body)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "disagreeing revisions: {b}"
    );
    let (status, b) = s
        .admin(Method::PUT, path, Some(json!({ "value": "w" })))
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["revision"], 2);
}

/// A client that sends requests but never reads the answers cannot keep its connection,
/// and so its place under the connection cap, once its answers stop moving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_loses_its_connection() {
    let s = start_with(ServeOptions {
        max_connections: 1,
        write_stall_timeout: Duration::from_millis(300),
        ..ServeOptions::DEFAULT
    })
    .await;
    let mut hog = connect(&s).await;
    // Enough pipelined requests that their answers fill both sockets' buffers.
    let request = b"GET /v1/environments HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200_000);
    let writer = tokio::spawn(async move {
        let _ = hog.write_all(&request).await;
        hog // kept open, never read
    });
    let began = Instant::now();
    loop {
        let (status, _) = s.call(None, Method::GET, "/healthz", None).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the hog kept the only slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(writer);
}

/// With a per-address cap, one client address cannot take every place: its next
/// connection is refused while another address is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection_with_a_per_address_cap() {
    let s = start_with(ServeOptions {
        max_connections_per_ip: Some(2),
        ..ServeOptions::DEFAULT
    })
    .await;
    let addr: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    let from = |ip: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((ip, 0)))
            .expect("bind a loopback source address");
        socket.connect(addr).await.expect("connect")
    };
    let _held = [from([127, 0, 0, 1]).await, from([127, 0, 0, 1]).await];
    let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut third = from([127, 0, 0, 1]).await;
    third.write_all(get).await.unwrap();
    let (status, b, _) = response(&mut third).await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (503, Some("overloaded")),
        "{b}"
    );
    let mut other = from([127, 0, 0, 2]).await;
    other.write_all(get).await.unwrap();
    let (status, b, _) = response(&mut other).await;
    assert_eq!(status, 200, "another address is served: {b}");
}

/// Sends an event whose data is `n` zeros, as admin.
async fn send_zeros(server: &Server, n: usize) -> (StatusCode, Value) {
    let body = json!({"name": "order.created", "data": Value::Array(vec![json!(0); n])});
    server
        .admin(Method::POST, "/v1/environments/default/events", Some(body))
        .await
}

/// The body budget pays for a body's parsed form as well as its text: a body of many small
/// JSON values (each some 32 to 64 bytes once parsed) takes its share for them before it is
/// parsed; one the whole budget could never hold, or with more values than any request
/// needs, is refused with 413 (not 503, which its client would retry without end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_pays_for_its_parsed_values_and_too_many_of_them_get_413() {
    let s = start_with(ServeOptions {
        body_budget_bytes: 2 * 1024 * 1024,
        ..ServeOptions::DEFAULT
    })
    .await;
    // 10,000 values (20 kB of text, 640 kB parsed) fit the 2 MiB budget.
    let (status, b) = send_zeros(&s, 10_000).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{b}");
    // 40,000 values are 80 kB of text, well within the budget as text, but 2.5 MiB parsed.
    let (status, b) = send_zeros(&s, 40_000).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(b["error"]["code"], "body_too_large");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--body-memory-mib"),
        "{b}"
    );

    // Past MAX_BODY_TOKENS (262,144 values), whatever the budget: 413, nothing sent.
    let roomy = start().await;
    let (status, b) = send_zeros(&roomy, 300_000).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(b["error"]["code"], "body_too_large");
    let (_, audit) = roomy
        .admin(Method::GET, "/v1/audit?action=event.received", None)
        .await;
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(0),
        "{audit}"
    );
}
