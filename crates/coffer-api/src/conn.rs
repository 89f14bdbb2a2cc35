//! The connection layer under the router: errors hyper answers by itself get Coffer's JSON
//! error body, and connections beyond the cap get a JSON 503.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A connection whose writes are watched for the bodiless error responses hyper sends on
/// its own (400 for a malformed request head, 414, 431): each is replaced, whole, by the
/// same status with the JSON error body every other error has.
///
/// It relies on two facts: the server's own responses never carry a 4xx/5xx status with
/// `content-length: 0` (every error from the router has a JSON body), and hyper writes a
/// response head in one write when the transport is not vectored (this type says it is not).
///
/// It also reports to a [`StallClock`] when its writes wait on the client, so the server can
/// drop a connection whose client sends requests but never reads the answers (hyper's own
/// timers only watch reading, and such a connection would hold its place under the
/// connection cap forever).
pub(crate) struct JsonErrors<T> {
    inner: T,
    /// A replacement response, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
    clock: std::sync::Arc<StallClock>,
}

impl<T> JsonErrors<T> {
    pub(crate) fn new(inner: T, clock: std::sync::Arc<StallClock>) -> Self {
        JsonErrors {
            inner,
            pending: None,
            clock,
        }
    }

    /// Passes `poll` through, telling the clock whether the write is waiting.
    fn watch<R>(&self, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        self.clock.waiting(poll.is_pending());
        poll
    }
}

/// How long a connection's writes have waited on its client, in all.
///
/// The total, not the current wait, is what counts: a client that reads nothing still
/// lets a trickle through (the kernel compacts its receive queue now and then), so a rule
/// on the current wait alone never fires. A client that reads its answers has its writes
/// wait for moments at most (answers are small and socket buffers absorb them).
pub(crate) struct StallClock {
    origin: std::time::Instant,
    /// Milliseconds after `origin` (plus one, so 0 means "not waiting").
    waiting_since: std::sync::atomic::AtomicU64,
    /// Milliseconds waited in earlier waits.
    waited: std::sync::atomic::AtomicU64,
}

impl StallClock {
    pub(crate) fn new() -> Self {
        StallClock {
            origin: std::time::Instant::now(),
            waiting_since: std::sync::atomic::AtomicU64::new(0),
            waited: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    fn waiting(&self, waiting: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let since = self.waiting_since.load(Relaxed);
        match (waiting, since) {
            (true, 0) => self.waiting_since.store(self.now(), Relaxed),
            (false, since) if since != 0 => {
                self.waited
                    .fetch_add(self.now().saturating_sub(since), Relaxed);
                self.waiting_since.store(0, Relaxed);
            }
            _ => {}
        }
    }

    /// Resolves once the writes have waited on the client for longer than `limit` in all.
    pub(crate) async fn stalled(&self, limit: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let limit_ms = limit.as_millis() as u64;
        loop {
            tokio::time::sleep(limit / 4).await;
            let since = self.waiting_since.load(Relaxed);
            let current = if since == 0 {
                0
            } else {
                self.now().saturating_sub(since)
            };
            if self.waited.load(Relaxed) + current > limit_ms {
                return;
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let pending = self.poll_pending(cx);
        ready!(self.watch(pending))?;
        if let Some(replacement) = bodiless_error(buf) {
            self.pending = Some((replacement, 0));
            // Best effort now; the rest goes out on the next write or flush.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// If `head` is a complete bodiless error response, the JSON response to send instead.
fn bodiless_error(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    if status < 400 || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    if !lower.windows(19).any(|w| w == b"\r\ncontent-length: 0") {
        return None;
    }
    let (code, message) = match status {
        400 => (
            "malformed_request",
            "the request could not be parsed (request line, a header, or the framing)",
        ),
        414 => ("uri_too_long", "the request URI is too long"),
        431 => (
            "headers_too_large",
            "the request headers are too large or too many",
        ),
        _ => ("http_error", "the request was refused by the HTTP layer"),
    };
    Some(json_response(
        status,
        code,
        message,
        &[("connection", "close")],
    ))
}

/// A complete HTTP/1.1 response with Coffer's JSON error body.
pub(crate) fn json_response(
    status: u16,
    code: &str,
    message: &str,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Open connections per client address, for `max_connections_per_ip`.
#[derive(Default)]
pub(crate) struct PeerCounts(std::sync::Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in its address's count (none when there is no per-address limit);
/// gives it back when dropped.
pub(crate) struct PeerSlot(Option<(Arc<PeerCounts>, IpAddr)>);

impl PeerCounts {
    /// A place for one more connection from `ip`, unless it has `max` already.
    pub(crate) fn try_take(self: &Arc<Self>, ip: IpAddr, max: Option<usize>) -> Option<PeerSlot> {
        let Some(max) = max else {
            return Some(PeerSlot(None));
        };
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot(Some((self.clone(), ip))))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let Some((counts, ip)) = self.0.take() else {
            return;
        };
        let mut counts = counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// Answers a connection over the cap with a JSON 503 and closes it, without reading more
/// than a little of its request and without waiting on it for long.
pub(crate) async fn refuse_over_capacity(mut tcp: TcpStream) {
    let response = json_response(
        503,
        "overloaded",
        "the server has too many open connections; retry shortly",
        &[("retry-after", "1"), ("connection", "close")],
    );
    let exchange = async {
        // Read what the client sent first, so closing does not reset the connection
        // before the client has read the answer.
        let mut scratch = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut scratch)).await;
        tcp.write_all(&response).await?;
        tcp.shutdown().await?;
        // Drain briefly until the client closes its side.
        while tcp.read(&mut scratch).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), exchange).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_error_heads_become_json_errors() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 29 Nov 2026 12:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(bodiless_error(head).expect("replaced")).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.contains("\"code\":\"headers_too_large\""), "{out}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }

    #[test]
    fn responses_with_bodies_and_successes_pass_untouched() {
        for head in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"{\"HTTP/1.1 400\"}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n", // not a whole head
        ] {
            assert!(bodiless_error(head).is_none(), "{}", String::from_utf8_lossy(head));
        }
    }
}
