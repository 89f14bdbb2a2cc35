//! `coffer config set | get | list | delete`: plaintext JSON config per environment.
//!
//! Config is not secret (it is stored and shown as it is), but like every other input a
//! value that does not parse is refused without being echoed.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use coffer_core::{ConfigKey, MAX_CONFIG_VALUE_BYTES};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::confirm::{Ask, confirm};
use super::exit::usage;
use super::http::JsonBody;
use super::{Session, examples, input, output, parse};

/// `coffer config …`
#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Set a config entry to a JSON value: create it, or write its next revision.
    #[command(after_help = examples::CONFIG_SET)]
    Set {
        /// 1-128 letters, digits and '_', not starting with a digit.
        #[arg(value_parser = ConfigKey::new)]
        key: ConfigKey,
        /// Any JSON value (quote strings: '"eu-west-1"'). Omit it to read JSON from stdin.
        #[arg(allow_hyphen_values = true, value_name = "JSON")]
        value: Option<String>,
        /// Write only if the entry is at this revision now (0: only if it does not exist).
        #[arg(long, value_name = "N")]
        expected_revision: Option<u64>,
    },
    /// Print one entry's value as JSON (with --json: the whole entry).
    #[command(after_help = examples::CONFIG_GET)]
    Get {
        #[arg(value_parser = ConfigKey::new)]
        key: ConfigKey,
    },
    /// List entries: keys, revisions, update times and values.
    #[command(after_help = examples::CONFIG_LIST)]
    List {
        /// Entries asked for per request (every page is fetched).
        #[arg(long, hide = true, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Delete a config entry.
    ///
    /// Asks y/N on a terminal; elsewhere needs --yes.
    #[command(after_help = examples::CONFIG_DELETE)]
    Delete {
        #[arg(value_parser = ConfigKey::new)]
        key: ConfigKey,
        /// Delete only if the entry is at this revision now.
        #[arg(long, value_name = "N")]
        expected_revision: Option<u64>,
        /// Do not ask: confirm now (needed when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
}

/// The parts of a config entry that human output shows.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    key: String,
    value: Value,
    revision: u64,
    updated_at: String,
}

/// Longest value shown in a `config list` table cell; `get` or `--json` show it whole.
const SHOWN_VALUE_CHARS: usize = 60;

impl Session {
    pub(super) async fn config(&self, command: ConfigCommand) -> Result<()> {
        let env = &self.env;
        match command {
            ConfigCommand::Set {
                key,
                value,
                expected_revision,
            } => {
                let value = match value {
                    Some(text) => parse_value(&text)?,
                    None => value_from_stdin(key.as_str())?,
                };
                let answer = self.put_config(&key, &value, expected_revision).await?;
                let entry: Entry = parse(&answer)?;
                self.print_done(Some(&answer), || {
                    format!("set config {key} in {env} (revision {})", entry.revision)
                })
            }
            ConfigCommand::Get { key } => {
                let answer = self.api.get(&self.config_path(&key), &[]).await?;
                if self.json {
                    return output::emit(&output::json(&answer)?);
                }
                let entry: Entry = parse(&answer)?;
                output::emit(&output::json(&entry.value)?)
            }
            ConfigCommand::List { page_size } => {
                let entries = self.all_items("config", page_size).await?;
                self.print_list(
                    entries,
                    &["KEY", "REVISION", "UPDATED", "VALUE"],
                    |e: Entry| {
                        vec![
                            e.key,
                            e.revision.to_string(),
                            e.updated_at,
                            shown_value(&e.value),
                        ]
                    },
                )
            }
            ConfigCommand::Delete {
                key,
                expected_revision,
                yes,
            } => {
                confirm(
                    &format!("delete config {key} from {env}"),
                    &format!("This deletes config {key} from {env}. It cannot be undone."),
                    Ask::YesNo,
                    yes,
                )?;
                self.api
                    .delete_at(&self.config_path(&key), expected_revision)
                    .await?;
                self.print_done(None, || format!("deleted config {key} from {env}"))
            }
        }
    }

    fn config_path<'a>(&'a self, key: &'a ConfigKey) -> [&'a str; 5] {
        [
            "v1",
            "environments",
            self.env.as_str(),
            "config",
            key.as_str(),
        ]
    }

    async fn put_config(
        &self,
        key: &ConfigKey,
        value: &Value,
        expected_revision: Option<u64>,
    ) -> Result<Value> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            value: &'a Value,
            #[serde(skip_serializing_if = "Option::is_none")]
            expected_revision: Option<u64>,
        }
        let body = JsonBody::new(
            &Body {
                value,
                expected_revision,
            },
            MAX_CONFIG_VALUE_BYTES + 64,
        )?;
        self.api.put(&self.config_path(key), body).await
    }
}

/// JSON from stdin, all of it; nothing at all is refused (a forgotten value must not become
/// something). Reading stops just past the largest body a request may carry.
fn value_from_stdin(key: &str) -> Result<Value> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Type the JSON value of {key}, then press Ctrl-D on an empty line.");
    }
    let bytes = input::read_bounded(stdin.lock(), coffer_api::MAX_BODY_BYTES)
        .context("cannot read the value from stdin")?
        .ok_or_else(too_large)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| usage("stdin is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(usage(
            "no value: give JSON as an argument or pipe it on stdin (stdin was empty)",
        ));
    }
    parse_value(text)
}

/// Parses a JSON value and checks the server's limit before anything is sent. The error
/// says where the JSON breaks, never what it holds.
fn parse_value(text: &str) -> Result<Value> {
    let value = input::parse_json(text, "the value")?;
    let compact = serde_json::to_string(&value).context("cannot encode the value")?;
    if compact.len() > MAX_CONFIG_VALUE_BYTES {
        return Err(too_large());
    }
    Ok(value)
}

fn too_large() -> anyhow::Error {
    usage(format!(
        "the value is over the 64 KiB config limit ({MAX_CONFIG_VALUE_BYTES} bytes of compact JSON); nothing was sent"
    ))
}

/// A value in one table cell: compact JSON, control characters replaced, cut short.
fn shown_value(value: &Value) -> String {
    let text = output::printable(&value.to_string());
    if text.chars().count() <= SHOWN_VALUE_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(SHOWN_VALUE_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_json_is_a_usage_error_that_does_not_echo_it() {
        let e = parse_value("{\"region\": eu-west-CANARY}").unwrap_err();
        assert_eq!(
            super::super::exit::code(&e),
            std::process::ExitCode::from(2)
        );
        let text = e.to_string();
        assert!(text.contains("not valid JSON"), "{text}");
        assert!(!text.contains("CANARY"), "{text}");
    }

    #[test]
    fn values_are_checked_against_the_limit_in_compact_form() {
        let fits = format!("\"{}\"", "x".repeat(MAX_CONFIG_VALUE_BYTES - 2));
        assert!(parse_value(&fits).is_ok());
        let padded = format!("  {fits}  \n");
        assert!(parse_value(&padded).is_ok(), "whitespace does not count");
        let over = format!("\"{}\"", "x".repeat(MAX_CONFIG_VALUE_BYTES - 1));
        assert!(parse_value(&over).is_err());
    }

    #[test]
    fn long_values_are_cut_in_tables() {
        let shown = shown_value(&Value::String("y".repeat(500)));
        assert_eq!(shown.chars().count(), SHOWN_VALUE_CHARS);
        assert_eq!(shown_value(&serde_json::json!({"a": 1})), "{\"a\":1}");
    }
}
