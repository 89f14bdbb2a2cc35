//! Connection handling: clients that never finish a request cannot hold connections or
//! shutdown hostage.

use std::time::{Duration, Instant};

use coffer_api::ServeOptions;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::start_with;

const QUICK: ServeOptions = ServeOptions {
    header_read_timeout: Duration::from_millis(300),
    drain_timeout: Duration::from_millis(500),
    ..ServeOptions::DEFAULT
};

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_connection_that_never_completes_its_request_head_is_closed() {
    let s = start_with(QUICK).await;
    let mut idle = connect(&s.base).await;
    let mut trickle = connect(&s.base).await;
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let began = Instant::now();
    for conn in [&mut idle, &mut trickle] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the server kept a stalled connection open");
    }
    assert!(began.elapsed() < Duration::from_secs(5));
    let (status, _) = s.call(None, Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "other clients are served meanwhile");
}

#[tokio::test]
async fn shutdown_waits_for_a_stalled_request_only_as_long_as_the_drain_timeout() {
    let s = start_with(QUICK).await;
    let mut stalled = connect(&s.base).await;
    let head = format!(
        "PUT /v1/environments/default/secrets/A HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"value\":",
        s.admin
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = tokio::time::timeout(Duration::from_secs(5), s.shut_down())
        .await
        .expect("shutdown was held hostage by a stalled request");
    assert!(
        took >= Duration::from_millis(400),
        "the in-flight request was given time: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "shutdown was held hostage: {took:?}"
    );
}
