//! `coffer events send`: an event that starts runs of the functions it triggers.
//!
//! `coffer events tail`: follows `GET /v1/events/stream` and prints one line per event,
//! reconnecting with `Last-Event-ID` when the connection drops, so no event is missed or
//! printed twice.

use std::time::Duration;

use anyhow::{Result, anyhow};
use coffer_core::SubjectPattern;
use coffer_wire::{EventAccepted, SendEvent};
use serde_json::Value;

use super::exit::usage;
use super::http::{ApiError, JsonBody};
use super::{Session, examples, input, output, parse};

/// `coffer events …` (or `coffer event …`)
#[derive(clap::Subcommand)]
pub enum EventsCommand {
    /// Send an event: starts a run of every function whose trigger matches its name, and
    /// prints those runs.
    #[command(after_help = examples::EVENTS_SEND)]
    Send {
        /// The event's name: dot-separated tokens (order.created).
        name: String,
        /// The event's data, any JSON (quote strings: '"text"'); handed to each run.
        #[arg(long, value_name = "JSON", allow_hyphen_values = true)]
        data: Option<String>,
        /// Sent as the Idempotency-Key header: a second send with the same key (within 24
        /// hours) starts no run and answers with the first send's runs.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Print events as they happen, one line each (with --json: the event's JSON), until
    /// interrupted. Reconnects after a dropped connection without missing an event.
    ///
    /// An admin key sees every event, a manage key its environment's. With --env (or
    /// COFFER_ENV) only that environment's events are printed.
    #[command(after_help = examples::EVENTS_TAIL)]
    Tail {
        /// Subjects to follow, NATS wildcards: `*` one token, `>` the rest.
        #[arg(long, default_value = "system.>", value_name = "PATTERN", value_parser = SubjectPattern::new)]
        subject: SubjectPattern,
    },
}

/// A stream that sent nothing, not even a keep-alive (every 15 s), for this long is taken
/// for dead and reopened.
const SILENCE: Duration = Duration::from_secs(45);

/// The longest frame accepted; a longer one means this is not a Coffer event stream.
const MAX_FRAME: usize = 1024 * 1024;

/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Session {
    pub(super) async fn events(&self, command: EventsCommand) -> Result<()> {
        match command {
            EventsCommand::Send {
                name,
                data,
                idempotency_key,
            } => self.send_event(name, data, idempotency_key).await,
            EventsCommand::Tail { subject } => self.tail(&subject.as_string()).await,
        }
    }

    async fn send_event(
        &self,
        name: String,
        data: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<()> {
        let data = data
            .map(|text| input::parse_json(&text, "--data"))
            .transpose()?;
        if let Some(key) = &idempotency_key {
            check_idempotency_key(key)?;
        }
        let headers: Vec<(&str, &str)> = idempotency_key
            .iter()
            .map(|key| ("Idempotency-Key", key.as_str()))
            .collect();
        let body = JsonBody::new(&SendEvent { name, data }, 0)?;
        let env = &self.env;
        let answer = self
            .api
            .post_with_headers(
                &["v1", "environments", env.as_str(), "events"],
                body,
                &headers,
            )
            .await?;
        if self.json {
            return output::emit(&output::json(&answer)?);
        }
        let accepted: EventAccepted = parse(&answer)?;
        if accepted.runs.is_empty() {
            return output::emit(&format!(
                "sent the event to {env}: no function's trigger matches it, no run started\n"
            ));
        }
        let rows: Vec<Vec<String>> = accepted
            .runs
            .into_iter()
            .map(|r| vec![r.id, r.function_id])
            .collect();
        let mut text = format!(
            "sent the event to {env}: {} started\n",
            output::count(rows.len() as u64, "run", "runs")
        );
        text.push_str(&output::table(&["RUN", "FUNCTION"], &rows));
        output::emit(&text)
    }

    async fn tail(&self, subject: &str) -> Result<()> {
        let only_env = self.env_given.then(|| self.env.to_string());
        let query = [("subject", subject)];
        let mut last: Option<u64> = None;
        let mut connected_once = false;
        let mut backoff = Duration::from_secs(1);
        loop {
            let response = match self
                .api
                .open_stream(&["v1", "events", "stream"], &query, last)
                .await
            {
                Ok(response) => response,
                // Refusals (bad key, bad pattern) do not get better by retrying; an
                // unreachable or busy server might, once we know it was there.
                Err(e) if !connected_once || is_refusal(&e) => return Err(e),
                Err(e) => {
                    eprintln!(
                        "coffer: cannot reconnect ({e:#}); retrying in {} s",
                        backoff.as_secs()
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if !connected_once {
                eprintln!(
                    "coffer: following events at {} (Ctrl-C to stop)",
                    self.api.addr()
                );
            } else {
                eprintln!("coffer: reconnected");
            }
            connected_once = true;
            backoff = Duration::from_secs(1);
            let ended = self
                .follow(response, &mut last, only_env.as_deref())
                .await?;
            eprintln!("coffer: the event stream {ended}; reconnecting");
        }
    }

    /// Prints the events of one connection until it ends; returns how it ended.
    async fn follow(
        &self,
        mut response: reqwest::Response,
        last: &mut Option<u64>,
        only_env: Option<&str>,
    ) -> Result<&'static str> {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            while let Some(end) = frame_end(&buf) {
                let frame: Vec<u8> = buf.drain(..end).collect();
                let (id, event) = parse_frame(&frame)?;
                // An `id:` alone (the greeting) is a position to resume from too.
                if id.is_some() {
                    *last = id;
                }
                if let (Some(_), Some(event)) = (id, event) {
                    let shown = only_env.is_none_or(|env| event["environment"] == env);
                    if shown {
                        output::emit(&self.event_line(&event)?)?;
                    }
                }
            }
            if buf.len() > MAX_FRAME {
                return Err(anyhow!(
                    "the server sent an event over {MAX_FRAME} bytes: is it a Coffer server?"
                ));
            }
            match tokio::time::timeout(SILENCE, response.chunk()).await {
                Err(_) => return Ok("went silent"),
                Ok(Err(_)) => return Ok("was interrupted"),
                Ok(Ok(None)) => return Ok("ended"),
                Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
            }
        }
    }

    fn event_line(&self, event: &Value) -> Result<String> {
        if self.json {
            return Ok(format!("{}\n", serde_json::to_string(event)?));
        }
        let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        let actor = &event["actor"];
        Ok(format!(
            "{}  {}  {}  {} ({})\n",
            output::printable(&text(&event["at"])),
            output::printable(&text(&event["subject"])),
            output::printable(&text(&event["environment"])),
            output::printable(&text(&actor["keyName"])),
            output::printable(&text(&actor["keyId"])),
        ))
    }
}

/// The server's rule for an `Idempotency-Key`, checked before anything is sent.
fn check_idempotency_key(key: &str) -> Result<()> {
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if (1..=255).contains(&key.len()) && visible {
        Ok(())
    } else {
        Err(usage(
            "--idempotency-key must be 1-255 visible ASCII characters (no spaces)",
        ))
    }
}

/// Whether the server refused the request itself (4xx): retrying would not help.
fn is_refusal(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|e| e.status.is_client_error())
}

/// Where the first frame in `buf` ends (past its blank line), if it is complete.
fn frame_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// An event frame's id and JSON; `None` for comments and other fields.
fn parse_frame(frame: &[u8]) -> Result<(Option<u64>, Option<Value>)> {
    let text = std::str::from_utf8(frame).map_err(|_| anyhow!("the event stream is not UTF-8"))?;
    let mut id = None;
    let mut data = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("data:") {
            data = Some(v.trim_start());
        }
    }
    let event = match data {
        Some(data) => Some(
            serde_json::from_str(data)
                .map_err(|_| anyhow!("the server sent an event that is not JSON"))?,
        ),
        None => None,
    };
    Ok((id, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_visible_ascii_of_1_to_255_characters() {
        assert!(check_idempotency_key("order-42").is_ok());
        assert!(check_idempotency_key(&"k".repeat(255)).is_ok());
        for bad in ["", "has space", "é", &"k".repeat(256)] {
            assert!(check_idempotency_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames_are_split_at_blank_lines_and_comments_carry_no_event() {
        let buf = b"retry: 1000\nid: 2\n\n: keepalive\n\nid: 3\ndata: {\"id\":3}\n\nid: 4";
        let first = frame_end(buf).unwrap();
        assert_eq!(parse_frame(&buf[..first]).unwrap(), (Some(2), None));
        let rest = &buf[first..];
        let second = frame_end(rest).unwrap();
        assert_eq!(parse_frame(&rest[..second]).unwrap(), (None, None));
        let rest = &rest[second..];
        let third = frame_end(rest).unwrap();
        let (id, event) = parse_frame(&rest[..third]).unwrap();
        assert_eq!((id, event.unwrap()["id"].as_u64()), (Some(3), Some(3)));
        assert_eq!(frame_end(&rest[third..]), None, "an incomplete frame waits");
    }
}
