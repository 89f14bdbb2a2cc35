//! `coffer function register | list | show | delete | rotate-secret`: functions, what declares
//! secrets (and config keys) and how its runs reach it.
//!
//! The definition travels as `coffer_wire::PutFunction`, built from flags or read from a
//! JSON or YAML file; answers are read as `coffer_wire::Function`. The signing secret a
//! registration or rotation returns is shown once, like an API key at its creation.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Result;
use coffer_core::{ConfigKey, SecretName};
use coffer_store::FunctionId;
use coffer_wire::{Function, FunctionMode, PutFunction, RotateSigningSecret, Trigger};
use serde_json::Value;
use zeroize::Zeroizing;

use super::confirm::{Ask, confirm};
use super::exit::usage;
use super::http::JsonBody;
use super::{Session, examples, input, output, parse};

/// `coffer function …`
#[derive(clap::Subcommand)]
pub enum FunctionCommand {
    /// Register a function, or update its definition, from flags or a JSON/YAML file.
    ///
    /// The first registration answers with the function's signing secret, shown this once
    /// (push deliveries are signed with it). When stdout is not a terminal, stdout gets the
    /// signing secret alone and the rest goes to stderr. An update keeps the secret.
    #[command(after_help = examples::FUNCTION_REGISTER)]
    Register(Box<RegisterArgs>),
    /// List functions: ids, modes, triggers, declared secrets.
    #[command(after_help = examples::FUNCTION_LIST)]
    List {
        /// Functions asked for per request (every page is fetched).
        #[arg(long, hide = true, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Show one function's definition (never its signing secret).
    #[command(after_help = examples::FUNCTION_SHOW)]
    Show {
        #[arg(value_parser = FunctionId::new)]
        id: FunctionId,
    },
    /// Delete a function (its runs stay; a queued one fails when it comes up).
    ///
    /// Asks y/N on a terminal; elsewhere needs --yes.
    #[command(after_help = examples::FUNCTION_DELETE)]
    Delete {
        #[arg(value_parser = FunctionId::new)]
        id: FunctionId,
        /// Delete only if the function is at this revision now.
        #[arg(long, value_name = "N")]
        expected_revision: Option<u64>,
        /// Do not ask: confirm now (needed when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Replace a function's signing secret; the new one is shown this once.
    ///
    /// Deliveries are signed with the old secret too for the grace period (default one
    /// day), so receivers can switch without losing a delivery.
    #[command(after_help = examples::FUNCTION_ROTATE_SECRET)]
    RotateSecret {
        #[arg(value_parser = FunctionId::new)]
        id: FunctionId,
        /// How long the old secret still signs, in milliseconds (0: not at all; at most 30
        /// days) [default: one day].
        #[arg(long, value_name = "MS")]
        grace_ms: Option<u64>,
    },
}

/// `coffer function register`'s arguments: an id, and a definition from a file or flags.
#[derive(clap::Args)]
pub struct RegisterArgs {
    /// 1-63 lowercase letters, digits, '_' and '-', starting with a letter or digit.
    #[arg(value_parser = FunctionId::new)]
    id: FunctionId,
    /// The definition: a JSON or YAML file (.json, .yaml, .yml; '-' reads stdin) holding the
    /// request body: triggers, secrets, config, mode, url, timeoutMs, retries, concurrency.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["triggers", "secrets", "config", "mode", "url", "timeout_ms", "retries", "concurrency"]
    )]
    file: Option<PathBuf>,
    /// An event that starts a run: a name (order.created) or a NATS pattern (order.*,
    /// order.>). Repeat for more.
    #[arg(long = "trigger", value_name = "EVENT")]
    triggers: Vec<String>,
    /// A secret of the environment the function needs. Repeat for more.
    #[arg(long = "secret", value_name = "NAME", value_parser = SecretName::new)]
    secrets: Vec<SecretName>,
    /// A config key of the environment the function needs. Repeat for more.
    #[arg(long = "config", value_name = "KEY", value_parser = ConfigKey::new)]
    config: Vec<ConfigKey>,
    /// push: Coffer POSTs each run, signed, to --url; pull: workers with a runtime key poll.
    #[arg(long, value_enum, required_unless_present = "file")]
    mode: Option<ModeArg>,
    /// Where push deliveries go: https://…, or http://127.0.0.1… / http://localhost….
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// How long a push attempt waits for the answer [default: 10000, at most 300000].
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Retries after a failed push attempt [default: 3, at most 10].
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// Push attempts in flight at once per node [default: 16, at most 256].
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Write only if the function is at this revision now (0: only if it does not exist).
    #[arg(long, value_name = "N")]
    expected_revision: Option<u64>,
}

/// How a function receives its runs.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    /// Coffer POSTs each run, signed, to the function's URL.
    Push,
    /// Workers with a runtime key poll for runs.
    Pull,
}

impl Session {
    pub(super) async fn function(&self, command: FunctionCommand) -> Result<()> {
        let env = &self.env;
        match command {
            FunctionCommand::Register(args) => {
                let id = args.id.clone();
                let body = definition(*args)?;
                let answer = self
                    .api
                    .put(&self.function_path(&id), JsonBody::new(&body, 0)?)
                    .await?;
                self.print_written(&answer, |f| {
                    let verb = if f.signing_secret.is_some() {
                        "registered"
                    } else {
                        "updated"
                    };
                    format!("{verb} function {id} in {env} ({})", summary(f))
                })
            }
            FunctionCommand::List { page_size } => {
                let functions = self.all_items("functions", page_size).await?;
                self.print_list(
                    functions,
                    &["ID", "MODE", "TRIGGERS", "SECRETS", "REVISION", "UPDATED"],
                    |f: Function| {
                        vec![
                            f.id.clone(),
                            mode_name(f.mode).to_owned(),
                            listed(f.triggers.iter().map(|t| t.event.as_str())),
                            listed(f.secrets.iter().map(String::as_str)),
                            f.revision.to_string(),
                            f.updated_at,
                        ]
                    },
                )
            }
            FunctionCommand::Show { id } => {
                let answer = self.api.get(&self.function_path(&id), &[]).await?;
                if self.json {
                    return output::emit(&output::json(&answer)?);
                }
                let f: Function = parse(&answer)?;
                output::emit(&output::fields(&shown(&f)))
            }
            FunctionCommand::Delete {
                id,
                expected_revision,
                yes,
            } => {
                confirm(
                    &format!("delete function {id} from {env}"),
                    &format!(
                        "This deletes function {id} from {env}: events no longer start it, and its queued runs fail. It cannot be undone."
                    ),
                    Ask::YesNo,
                    yes,
                )?;
                self.api
                    .delete_at(&self.function_path(&id), expected_revision)
                    .await?;
                self.print_done(None, || format!("deleted function {id} from {env}"))
            }
            FunctionCommand::RotateSecret { id, grace_ms } => {
                let mut path = self.function_path(&id).to_vec();
                path.push("signing-secret");
                let body = JsonBody::new(&RotateSigningSecret { grace_ms }, 0)?;
                let answer = self.api.post(&path, body).await?;
                self.print_written(&answer, |f| {
                    let previous = match &f.previous_signing_secret_until {
                        Some(until) => format!(
                            "; deliveries are signed with the previous one too until {}",
                            output::printable(until)
                        ),
                        None => "; the previous one no longer signs".to_owned(),
                    };
                    format!("rotated the signing secret of function {id} in {env}{previous}")
                })
            }
        }
    }

    fn function_path<'a>(&'a self, id: &'a FunctionId) -> [&'a str; 5] {
        [
            "v1",
            "environments",
            self.env.as_str(),
            "functions",
            id.as_str(),
        ]
    }

    /// A registration's or rotation's answer: the server's JSON with `--json`; otherwise a
    /// line about it and, when the answer has one, the signing secret, shown once (alone on
    /// stdout when stdout is not a terminal, as `apikey create` does with a key).
    fn print_written(&self, answer: &Value, about: impl FnOnce(&Function) -> String) -> Result<()> {
        if self.json {
            return output::emit(&output::json(answer)?);
        }
        let f: Function = parse(answer)?;
        let about = about(&f);
        let Some(secret) = &f.signing_secret else {
            return output::emit(&format!("{about}\n"));
        };
        if std::io::stdout().is_terminal() {
            output::emit(&Zeroizing::new(format!(
                "{about}\nsigning secret: {}\nThis signing secret will not be shown again: store it now (push deliveries are signed with it).\n",
                secret.expose()
            )))
        } else {
            // `SECRET=$(coffer function register …)` captures the signing secret alone.
            eprintln!(
                "{about}\nThe signing secret (on stdout) will not be shown again: store it now (push deliveries are signed with it)."
            );
            output::emit(&Zeroizing::new(format!("{}\n", secret.expose())))
        }
    }
}

/// The request body `register` sends: from `--file`, or from the flags.
fn definition(args: RegisterArgs) -> Result<PutFunction> {
    let mut body = match &args.file {
        Some(path) => read_definition(path)?,
        None => PutFunction {
            triggers: args
                .triggers
                .into_iter()
                .map(|event| Trigger { event })
                .collect(),
            secrets: args.secrets.iter().map(|s| s.as_str().to_owned()).collect(),
            config: args.config.iter().map(|k| k.as_str().to_owned()).collect(),
            mode: match args.mode {
                Some(ModeArg::Pull) => FunctionMode::Pull,
                // clap requires --mode without --file.
                Some(ModeArg::Push) | None => FunctionMode::Push,
            },
            url: args.url,
            timeout_ms: args.timeout_ms,
            retries: args.retries,
            concurrency: args.concurrency,
            expected_revision: None,
        },
    };
    match (body.expected_revision, args.expected_revision) {
        (Some(in_file), Some(flag)) if in_file != flag => {
            return Err(usage(format!(
                "the file says expectedRevision {in_file} and --expected-revision says {flag}: give one"
            )));
        }
        (_, Some(flag)) => body.expected_revision = Some(flag),
        _ => {}
    }
    Ok(body)
}

/// A definition file (JSON or YAML, see [`input::read_document`]) holding the request body.
fn read_definition(path: &Path) -> Result<PutFunction> {
    input::read_document(
        path,
        "a function definition (triggers, secrets, config, mode, url, timeoutMs, retries, concurrency)",
    )
}

fn mode_name(mode: FunctionMode) -> &'static str {
    match mode {
        FunctionMode::Push => "push",
        FunctionMode::Pull => "pull",
    }
}

/// "pull, revision 1" or "push to URL, revision 3".
fn summary(f: &Function) -> String {
    match &f.url {
        Some(url) => format!(
            "push to {}, revision {}",
            output::printable(url),
            f.revision
        ),
        None => format!("{}, revision {}", mode_name(f.mode), f.revision),
    }
}

/// Names in one table cell: comma-separated, `-` for none.
fn listed<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let text = names.collect::<Vec<_>>().join(",");
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

/// The lines of `function show`.
fn shown(f: &Function) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("id", f.id.clone()),
        ("environment", f.environment.clone()),
        ("mode", mode_name(f.mode).to_owned()),
    ];
    if let Some(url) = &f.url {
        rows.push(("url", url.clone()));
    }
    rows.extend([
        (
            "triggers",
            listed(f.triggers.iter().map(|t| t.event.as_str())),
        ),
        ("secrets", listed(f.secrets.iter().map(String::as_str))),
        ("config", listed(f.config.iter().map(String::as_str))),
        ("timeout", format!("{} ms", f.timeout_ms)),
        ("retries", f.retries.to_string()),
        ("concurrency", f.concurrency.to_string()),
        ("revision", f.revision.to_string()),
    ]);
    if let Some(until) = &f.previous_signing_secret_until {
        rows.push(("previous secret until", until.clone()));
    }
    rows.extend([
        ("created", f.created_at.clone()),
        ("updated", f.updated_at.clone()),
    ]);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_file(name: &str, text: &str) -> Result<PutFunction> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        read_definition(&path)
    }

    #[test]
    fn yaml_and_json_files_give_the_same_definition() {
        let yaml = parse_file(
            "f.yaml",
            "triggers:\n  - event: order.created\nsecrets: [STRIPE_KEY]\nmode: push\nurl: https://fn.example/hook\ntimeoutMs: 5000\n",
        )
        .unwrap();
        let json = parse_file(
            "f.json",
            r#"{"triggers": [{"event": "order.created"}], "secrets": ["STRIPE_KEY"], "mode": "push", "url": "https://fn.example/hook", "timeoutMs": 5000}"#,
        )
        .unwrap();
        assert_eq!(yaml, json);
        assert_eq!(yaml.timeout_ms, Some(5000));
        // Without a telling extension, the first character decides.
        let sniffed = parse_file("definition", "mode: pull\n").unwrap();
        assert_eq!(sniffed.mode, FunctionMode::Pull);
    }

    #[test]
    fn an_unknown_key_in_a_file_is_a_usage_error_naming_it() {
        let e = parse_file("f.yml", "mode: pull\ntimeout_ms: 5\n").unwrap_err();
        assert_eq!(
            super::super::exit::code(&e),
            std::process::ExitCode::from(2)
        );
        assert!(e.to_string().contains("timeout_ms"), "{e}");
    }

    #[test]
    fn the_flag_and_the_file_must_agree_on_the_expected_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::fs::write(&path, r#"{"mode": "pull", "expectedRevision": 2}"#).unwrap();
        let args = |flag| RegisterArgs {
            id: FunctionId::new("f").unwrap(),
            file: Some(path.clone()),
            triggers: vec![],
            secrets: vec![],
            config: vec![],
            mode: None,
            url: None,
            timeout_ms: None,
            retries: None,
            concurrency: None,
            expected_revision: flag,
        };
        assert_eq!(definition(args(None)).unwrap().expected_revision, Some(2));
        assert_eq!(
            definition(args(Some(2))).unwrap().expected_revision,
            Some(2)
        );
        assert!(definition(args(Some(3))).is_err());
    }
}
