//! `coffer audit [filters]` and `coffer audit verify`: the audit log, page after page, and a
//! walk of its hash chain.

use std::io::Write;

use anyhow::{Context, Result, bail};
use coffer_core::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::exit::{BrokenChainError, usage};
use super::{Session, items, output, parse};

pub const AUDIT: &str = "Examples:
  coffer audit --since 1h                          # the last hour, every environment (admin)
  coffer audit --env production --result denied    # refused requests in production
  coffer audit --subject 'system.secret.*.deleted' --since 2026-11-01T00:00:00Z
  coffer audit --actor ak_0123456789abcdef --json | jq .
  coffer audit verify                              # exit code 6 if the chain is broken";

pub const AUDIT_VERIFY: &str = "Examples:
  coffer audit verify
  coffer audit verify --json || echo \"audit log broken (exit $?)\"";

/// Filters of `coffer audit` (`--env` is the client's own option).
#[derive(clap::Args)]
pub struct AuditArgs {
    /// Rows at or after this time: RFC 3339 (2026-11-23T04:00:00Z) or an age (45s, 30m, 1h, 7d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Rows before this time: RFC 3339 or an age, like --since.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Rows with this action: secret.created, apikey.revoked, … (a denial's is its route).
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// Rows by this API key id (ak_…), or `system`.
    #[arg(long, value_name = "ID")]
    actor: Option<String>,
    /// Rows whose subject matches this NATS pattern ('*' one token, '>' the rest).
    #[arg(long, value_name = "PATTERN")]
    subject: Option<String>,
    /// Allowed or denied rows only.
    #[arg(long, value_enum)]
    result: Option<ResultArg>,
    /// Show at most this many rows (the oldest matching ones); default: all.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
}

impl AuditArgs {
    fn any(&self) -> bool {
        self.since.is_some()
            || self.until.is_some()
            || self.action.is_some()
            || self.actor.is_some()
            || self.subject.is_some()
            || self.result.is_some()
            || self.limit.is_some()
    }
}

/// `allowed` or `denied`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ResultArg {
    /// Changes that were made.
    Allowed,
    /// Requests refused with 401 or 403.
    Denied,
}

/// `coffer audit …`
#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Walk the whole hash chain; name the first broken row (exit code 6) or print ok.
    #[command(after_help = AUDIT_VERIFY)]
    Verify,
}

/// Rows asked for per request.
const PAGE: u64 = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    at: String,
    actor: Actor,
    action: String,
    subject: String,
    environment: Option<String>,
    result: String,
    status: Option<u16>,
    count: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Actor {
    key_id: Option<String>,
    key_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Verification {
    ok: bool,
    rows: u64,
    head_seq: u64,
    head_hash: String,
    first_broken: Option<Broken>,
}

#[derive(Deserialize)]
struct Broken {
    seq: u64,
    problem: String,
    message: String,
}

/// The columns of `coffer audit`'s table.
const HEADERS: [&str; 6] = [
    "TIME",
    "ACTOR",
    "ACTION",
    "SUBJECT",
    "ENVIRONMENT",
    "RESULT",
];

impl Session {
    pub(super) async fn audit(&self, args: AuditArgs, command: Option<AuditCommand>) -> Result<()> {
        match command {
            Some(AuditCommand::Verify) if args.any() => Err(usage(
                "`coffer audit verify` walks the whole log: it takes no filters",
            )),
            Some(AuditCommand::Verify) => self.verify_audit().await,
            None => self.list_audit(args).await,
        }
    }

    /// Every matching row, following `nextCursor`; `--json` streams one array.
    async fn list_audit(&self, args: AuditArgs) -> Result<()> {
        let now = Timestamp::now();
        let since = args
            .since
            .as_deref()
            .map(|t| time_arg(t, now))
            .transpose()?;
        let until = args
            .until
            .as_deref()
            .map(|t| time_arg(t, now))
            .transpose()?;
        let mut filters: Vec<(&str, String)> = Vec::new();
        // Only an environment named on purpose: a scoped key's own is forced by the server.
        if self.env_given {
            filters.push(("environment", self.env.to_string()));
        }
        let given = [
            ("since", since),
            ("until", until),
            ("action", args.action),
            ("actor", args.actor),
            ("subject", args.subject),
            (
                "result",
                args.result.map(|r| {
                    match r {
                        ResultArg::Allowed => "allowed",
                        ResultArg::Denied => "denied",
                    }
                    .to_owned()
                }),
            ),
        ];
        filters.extend(given.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));

        let mut left = args.limit.unwrap_or(u64::MAX);
        let mut cursor: Option<String> = None;
        let mut rows = Vec::new();
        let mut printed_header = false;
        let mut first = true;
        if self.json {
            write_out("[")?;
        }
        while left > 0 {
            let limit = left.min(PAGE).to_string();
            let mut query: Vec<(&str, &str)> =
                filters.iter().map(|(k, v)| (*k, v.as_str())).collect();
            query.push(("limit", &limit));
            if let Some(c) = &cursor {
                query.push(("cursor", c));
            }
            let mut page = self.api.get(&["v1", "audit"], &query).await?;
            let next = match page.get_mut("nextCursor").map(Value::take) {
                None | Some(Value::Null) => None,
                Some(Value::String(next)) => Some(next),
                Some(_) => bail!("unexpected answer from the server: a bad nextCursor"),
            };
            for entry in items(page, "entries")? {
                if left == 0 {
                    break;
                }
                left -= 1;
                if self.json {
                    // Byte for byte what pretty-printing the whole array would give, one
                    // page in memory at a time.
                    let text = serde_json::to_string_pretty(&entry)?;
                    let sep = if first { "\n" } else { ",\n" };
                    let indented = text.replace('\n', "\n  ");
                    write_out(&format!("{sep}  {indented}"))?;
                } else {
                    rows.push(row(parse(&entry)?));
                }
                first = false;
            }
            // A table a page at a time (a long log never sits in memory whole); the header
            // once, each page's columns as wide as that page needs.
            if !self.json && !rows.is_empty() {
                let page = output::table(&HEADERS, &std::mem::take(&mut rows));
                let shown = if printed_header {
                    page.split_once('\n')
                        .map_or("", |(_, rest)| rest)
                        .to_owned()
                } else {
                    page
                };
                printed_header = true;
                output::emit(&shown)?;
            }
            match next {
                None => break,
                Some(next) if cursor.as_ref() == Some(&next) => {
                    bail!("the server sent the same page twice")
                }
                next => cursor = next,
            }
        }
        if self.json {
            return write_out(if first { "]\n" } else { "\n]\n" });
        }
        if !printed_header {
            output::emit(&output::table(&HEADERS, &[]))?;
        }
        Ok(())
    }

    async fn verify_audit(&self) -> Result<()> {
        let answer = self.api.get(&["v1", "audit", "verify"], &[]).await?;
        let v: Verification = parse(&answer)?;
        if self.json {
            output::emit(&output::json(&answer)?)?;
        }
        match (v.ok, v.first_broken) {
            (true, _) | (false, None) => {
                if !self.json {
                    output::emit(&format!(
                        "ok: the audit log's hash chain is whole ({}; head seq {}, hash {})\n",
                        output::count(v.rows, "row", "rows"),
                        v.head_seq,
                        output::printable(&v.head_hash)
                    ))?;
                }
                Ok(())
            }
            (false, Some(b)) => Err(BrokenChainError(format!(
                "the audit log is broken at row {} ({}): {}",
                b.seq,
                output::printable(&b.problem),
                output::printable(&b.message)
            ))
            .into()),
        }
    }
}

/// Writes a part of the output now (a closed pipe is not an error, as in `output::emit`).
fn write_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// One table row: time, actor, action, subject, environment, result.
fn row(e: Entry) -> Vec<String> {
    let actor = match (e.actor.key_id, e.actor.key_name) {
        (Some(id), _) if id == "system" => id,
        (Some(id), Some(name)) => format!("{name} ({id})"),
        (Some(id), None) => id,
        (None, _) => "(no valid key)".to_owned(),
    };
    let mut result = e.result;
    if let Some(status) = e.status {
        result.push_str(&format!(" {status}"));
    }
    if e.count > 1 {
        result.push_str(&format!(" x{}", e.count));
    }
    vec![
        e.at,
        actor,
        e.action,
        e.subject,
        e.environment.unwrap_or_else(|| "-".to_owned()),
        result,
    ]
}

/// `--since`/`--until`: an age (`45s`, `30m`, `1h`, `7d`) becomes the RFC 3339 time that long
/// before `now`; anything else goes to the server as it is (which checks RFC 3339).
fn time_arg(raw: &str, now: Timestamp) -> Result<String> {
    let unit_ms: i64 = match raw.chars().last() {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        _ => return Ok(raw.to_owned()),
    };
    let digits = &raw[..raw.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(raw.to_owned());
    }
    let n: i64 = digits
        .parse()
        .ok()
        .filter(|n: &i64| n.checked_mul(unit_ms).is_some())
        .ok_or_else(|| usage(format!("the age {raw:?} is too large")))?;
    Ok(Timestamp::from_millis(now.millis().saturating_sub(n * unit_ms)).rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_become_times_before_now_and_rfc3339_passes_through() {
        let now = Timestamp::from_millis(7 * 86_400_000);
        assert_eq!(time_arg("1h", now).unwrap(), "1970-01-07T23:00:00.000Z");
        assert_eq!(time_arg("30m", now).unwrap(), "1970-01-07T23:30:00.000Z");
        assert_eq!(time_arg("7d", now).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_arg("45s", now).unwrap(), "1970-01-07T23:59:15.000Z");
        let t = "2026-11-23T04:00:00Z";
        assert_eq!(time_arg(t, now).unwrap(), t);
        assert_eq!(time_arg("h", now).unwrap(), "h");
        assert!(time_arg("99999999999999999d", now).is_err());
    }

    #[test]
    fn rows_show_who_and_a_coalesced_count() {
        let e: Entry = serde_json::from_value(serde_json::json!({
            "at": "t", "actor": {"keyId": null, "keyName": null}, "action": "GET /v1/audit",
            "subject": "GET /v1/audit", "environment": null, "result": "denied",
            "status": 401, "count": 12
        }))
        .unwrap();
        assert_eq!(
            row(e),
            [
                "t",
                "(no valid key)",
                "GET /v1/audit",
                "GET /v1/audit",
                "-",
                "denied 401 x12"
            ]
        );
    }
}
