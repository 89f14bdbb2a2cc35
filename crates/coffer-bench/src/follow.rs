//! `--follow N`: N followers of `GET /v1/events/stream` held by this one process (one
//! thread), for `scripts/bench-journal.sh`. What a write pays for live subscribers is the
//! server's fan-out; a hundred subscriber *processes* on the same two cores would add
//! their own scheduling to every figure, which subscribers on other machines never do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Opens `n` streams on `addr` (each with a manage key of `default` that `admin` creates:
/// a key may hold only a few streams), reports when all are open, then reads them until
/// SIGTERM or Ctrl-C and prints what arrived. Fails if any stream ends early. `subject`,
/// when given, is the pattern every stream asks for.
pub async fn run(
    addr: SocketAddr,
    admin: &str,
    n: usize,
    subject: Option<&str>,
) -> anyhow::Result<()> {
    let mut url = reqwest::Url::parse(&format!("http://{addr}/v1/events/stream"))?;
    if let Some(pattern) = subject {
        url.query_pairs_mut().append_pair("subject", pattern);
    }
    let path = match url.query() {
        None => url.path().to_owned(),
        Some(query) => format!("{}?{query}", url.path()),
    };
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let created: serde_json::Value = http
            .post(format!("http://{addr}/v1/api-keys"))
            .bearer_auth(admin)
            .json(&serde_json::json!({
                "name": format!("bench follower {i}"),
                "role": "manage",
                "environment": "default",
            }))
            .send()
            .await?
            .error_for_status()
            .context("cannot create a follower's key")?
            .json()
            .await?;
        let key = created["key"]
            .as_str()
            .context("the created key has no `key`")?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}"))?;
        auth.set_sensitive(true);
        keys.push(auth);
    }
    let received = Arc::new(AtomicU64::new(0));
    let mut streams = JoinSet::new();
    for auth in keys {
        let body = open(addr, &path, auth).await?;
        streams.spawn(read(body, received.clone()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!("following {n} streams");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        ended = streams.join_next() => {
            bail!("a stream ended early: {ended:?}");
        }
    }
    println!(
        "followed {n} streams: {} bytes received",
        received.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn open(
    addr: SocketAddr,
    path: &str,
    auth: HeaderValue,
) -> anyhow::Result<hyper::body::Incoming> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, HeaderValue::from_str(&addr.to_string())?)
        .header(AUTHORIZATION, auth)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::OK {
        bail!("the stream answered {}", response.status());
    }
    Ok(response.into_body())
}

async fn read(mut body: hyper::body::Incoming, received: Arc<AtomicU64>) -> anyhow::Result<()> {
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            received.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}
