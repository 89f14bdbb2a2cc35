//! The command-line client: `coffer env|secret|config|apikey …` over the HTTP API (`docs/API.md`).
//!
//! Arguments are parsed into checked names (the types the server uses, so both sides apply
//! one rule), each command is one request or a short sequence of them, and the answer is
//! printed as a table or a one-line confirmation, or with `--json` as the server's JSON.
//!
//! Secret values travel from the command line, stdin or a dotenv file into `SecretString`s
//! and from there into a request body; never to stdout, stderr, an error message or another
//! process's command line. The API never returns one.

mod audit;
mod config;
mod confirm;
mod dotenv;
mod events;
mod examples;
mod exit;
mod functions;
mod http;
mod input;
mod keys;
mod login;
mod mcp;
mod orchestrations;
mod output;
mod run;
mod runs;

pub use exit::code as exit_code;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use coffer_core::{ApiKeyId, EnvName, SecretName};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroizing;

use confirm::{Ask, confirm};
use exit::usage;
use http::{Api, JsonBody};

/// Options shared by the client commands; global within each command group, so they may
/// follow the subcommand.
#[derive(clap::Args)]
pub struct GlobalArgs {
    /// Address of the Coffer server.
    #[arg(
        long,
        env = "COFFER_ADDR",
        default_value = "http://127.0.0.1:8720",
        global = true
    )]
    pub addr: String,
    /// API key; prefer the variable, a flag shows in the process list. Without one: the
    /// key `coffer login` stored for this address, then (for a server on this machine)
    /// <data-dir>/admin.key.
    #[arg(long, env = "COFFER_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<SecretString>,
    /// Data directory: where the server keeps its database and admin.key.
    #[arg(
        long,
        env = "COFFER_DATA_DIR",
        default_value = "./.coffer",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Print the server's JSON (for lists: every item of every page) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Environment to work in [default: the API key's own environment, else `default`].
    // Checked when a client command runs (an empty COFFER_ENV means unset), so `serve`,
    // which ignores it, is not refused over it.
    #[arg(long, env = "COFFER_ENV", global = true)]
    pub env: Option<String>,
}

/// The client's commands. Each group carries the client options, which may follow any of
/// its subcommands (`coffer secret list --env prod --json`); `serve` has none of them.
#[derive(clap::Subcommand)]
pub enum ClientCommand {
    /// List, create and delete environments.
    #[command(after_help = examples::ENV)]
    Env {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Set, list, show, delete and import secrets. Values are write-only.
    #[command(after_help = examples::SECRET)]
    Secret {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Set, get, list and delete plaintext JSON config.
    #[command(after_help = examples::CONFIG)]
    Config {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Create, list and revoke API keys.
    #[command(name = "apikey", after_help = examples::APIKEY)]
    ApiKey {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Encryption key versions: status, and re-encryption to the current one.
    #[command(after_help = examples::KEYS)]
    Keys {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Register, list, show and delete functions: what declares secrets, and how its runs
    /// reach it.
    #[command(after_help = examples::FUNCTION)]
    Function {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: functions::FunctionCommand,
    },
    /// Run CMD with a function's declared secrets and config keys added to its environment.
    ///
    /// Needs a runtime key of the environment (COFFER_API_KEY, or `coffer login`): admin
    /// and manage keys never receive values. The values go into CMD's environment only:
    /// never its arguments, never a file. Signals coffer receives are passed on to CMD, and
    /// coffer exits with CMD's exit code (128+N when a signal N ended it).
    #[command(after_help = examples::RUN)]
    Run {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(flatten)]
        args: run::RunArgs,
    },
    /// Orchestrations: ordered steps (compute, approval, delay, decision) and their runs.
    #[command(visible_alias = "orchestrations", after_help = examples::ORCHESTRATION)]
    Orchestration {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: orchestrations::OrchestrationCommand,
    },
    /// Runs: what events started, their status and output.
    #[command(after_help = examples::RUNS)]
    Runs {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: runs::RunsCommand,
    },
    /// Send events (which start runs of the functions they trigger) and follow events
    /// (changes) as they happen.
    #[command(visible_alias = "event", after_help = examples::EVENTS)]
    Events {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// The audit log: who changed what and which requests were refused, filtered and
    /// paged; `coffer audit verify` checks its hash chain.
    #[command(after_help = audit::AUDIT)]
    Audit {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(flatten)]
        args: audit::AuditArgs,
        #[command(subcommand)]
        command: Option<audit::AuditCommand>,
    },
    /// Serve the MCP tools (secrets, functions, orchestrations) on stdin/stdout, each one a
    /// call to the server at COFFER_ADDR with COFFER_API_KEY. Nothing but the protocol is
    /// written to stdout; logs go to stderr.
    #[command(after_help = examples::MCP)]
    Mcp {
        #[command(flatten)]
        global: GlobalArgs,
    },
    /// Store an API key for a server, read from stdin (not echoed).
    ///
    /// The key is checked against the server, then kept for this user in
    /// $XDG_CONFIG_HOME/coffer/credentials.json (else ~/.config/coffer/), mode 0600; later
    /// commands to that address need no COFFER_API_KEY.
    #[command(after_help = examples::LOGIN)]
    Login(login::LoginArgs),
    /// Forget the API key `coffer login` stored for a server.
    #[command(after_help = examples::LOGOUT)]
    Logout(login::LoginArgs),
}

/// `coffer env …`
#[derive(clap::Subcommand)]
pub enum EnvCommand {
    /// List the environments this key may see.
    #[command(after_help = examples::ENV_LIST)]
    List,
    /// Create an environment.
    #[command(after_help = examples::ENV_CREATE)]
    Create {
        /// 1-63 lowercase letters, digits and '-'.
        #[arg(value_parser = EnvName::new)]
        name: EnvName,
    },
    /// Delete an environment, with its secrets, its config and the API keys scoped to it.
    ///
    /// Asks you to type the name on a terminal; elsewhere needs --yes.
    #[command(after_help = examples::ENV_DELETE)]
    Delete {
        #[arg(value_parser = EnvName::new)]
        name: EnvName,
        /// Do not ask: confirm now (needed when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
}

/// `coffer secret …`
#[derive(clap::Subcommand)]
pub enum SecretCommand {
    /// Set a secret: create it, or write its next revision.
    #[command(after_help = examples::SECRET_SET)]
    Set {
        /// 1-128 letters, digits and '_', not starting with a digit.
        // Checked in `secret()`, not by clap, whose error would quote it: a value typed
        // into the NAME slot must not end up in a terminal log.
        name: String,
        /// The value, at most 64 KiB. Omit it to read the value from stdin, which keeps it
        /// out of shell history and the process list; one trailing newline is dropped.
        // A leading '-' is taken as part of the value, not left to clap, whose error
        // message would print it.
        #[arg(allow_hyphen_values = true)]
        value: Option<SecretString>,
        /// More words: an unquoted value with spaces, refused without being shown.
        #[arg(hide = true)]
        more_words: Vec<SecretString>,
        /// Write only if the secret is at this revision now (0: only if it does not exist).
        #[arg(long, value_name = "N")]
        expected_revision: Option<u64>,
    },
    /// List secrets: names, revisions and timestamps, never values.
    #[command(after_help = examples::SECRET_LIST)]
    List {
        /// Only names containing this, ignoring ASCII case (letters, digits, `_`).
        #[arg(long)]
        search: Option<String>,
        /// The order: name (the default), -name, updatedAt (oldest change first) or
        /// -updatedAt (most recent first).
        #[arg(long, value_parser = ["name", "-name", "updatedAt", "-updatedAt"], allow_hyphen_values = true)]
        sort: Option<String>,
        /// Secrets asked for per request (every page is fetched).
        #[arg(long, hide = true, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Show one secret's metadata (never its value).
    #[command(after_help = examples::SECRET_SHOW)]
    Show {
        #[arg(value_parser = SecretName::new)]
        name: SecretName,
    },
    /// Delete a secret.
    ///
    /// Asks y/N on a terminal; elsewhere needs --yes.
    #[command(after_help = examples::SECRET_DELETE)]
    Delete {
        #[arg(value_parser = SecretName::new)]
        name: SecretName,
        /// Delete only if the secret is at this revision now.
        #[arg(long, value_name = "N")]
        expected_revision: Option<u64>,
        /// Do not ask: confirm now (needed when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Set one secret per KEY=value entry of a dotenv file ('-' reads stdin).
    #[command(after_help = examples::SECRET_IMPORT)]
    Import {
        #[arg(value_name = "FILE.env")]
        file: PathBuf,
    },
    /// Values cannot be read here: answers where they can be used instead.
    #[command(hide = true, alias = "read", alias = "reveal")]
    Get {
        // Whatever follows is ignored and never echoed: it may be a value.
        #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
        ignored: Vec<OsString>,
    },
}

/// `coffer apikey …`
#[derive(clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key; the key is shown this once.
    ///
    /// manage and runtime keys belong to the environment named with --env (or COFFER_ENV);
    /// admin keys to none. When stdout is not a terminal, stdout gets the key alone and the
    /// rest goes to stderr.
    #[command(after_help = examples::APIKEY_CREATE)]
    Create {
        /// A label saying who or what uses the key.
        name: String,
        /// What the key may do.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// List API keys (never the keys themselves).
    #[command(after_help = examples::APIKEY_LIST)]
    List,
    /// Revoke an API key by id (ak_…).
    ///
    /// Asks y/N on a terminal; elsewhere needs --yes.
    #[command(after_help = examples::APIKEY_REVOKE)]
    Revoke {
        #[arg(value_parser = ApiKeyId::new)]
        id: ApiKeyId,
        /// Do not ask: confirm now (needed when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
}

/// An API key's role.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// Everything in every environment, API keys included.
    Admin,
    /// Write, list and delete secrets in one environment.
    Manage,
    /// Resolve declared secrets in one environment.
    Runtime,
}

impl RoleArg {
    fn as_str(self) -> &'static str {
        match self {
            RoleArg::Admin => "admin",
            RoleArg::Manage => "manage",
            RoleArg::Runtime => "runtime",
        }
    }
}

/// Runs one client command against the server; the exit code is 0, or for `coffer run`
/// its CMD's. Map an error to its exit code with [`exit_code`].
pub async fn run(command: ClientCommand) -> Result<ExitCode> {
    let done = match command {
        ClientCommand::Run { global, args } => return run::run(global, args).await,
        ClientCommand::Env { global, command } => Session::open(global)?.env(command).await,
        ClientCommand::Secret {
            command: SecretCommand::Get { .. },
            ..
        } => Err(write_only()),
        ClientCommand::Secret { global, command } => Session::open(global)?.secret(command).await,
        ClientCommand::Config { global, command } => Session::open(global)?.config(command).await,
        ClientCommand::ApiKey { global, command } => Session::open(global)?.api_key(command).await,
        ClientCommand::Keys { global, command } => Session::open(global)?.keys(command).await,
        ClientCommand::Function { global, command } => {
            Session::open(global)?.function(command).await
        }
        ClientCommand::Runs { global, command } => Session::open(global)?.runs(command).await,
        ClientCommand::Orchestration { global, command } => {
            Session::open(global)?.orchestration(command).await
        }
        ClientCommand::Events { global, command } => Session::open(global)?.events(command).await,
        ClientCommand::Audit {
            global,
            args,
            command,
        } => Session::open(global)?.audit(args, command).await,
        ClientCommand::Mcp { global } => mcp::mcp(global).await,
        ClientCommand::Login(args) => login::login(args).await,
        ClientCommand::Logout(args) => login::logout(args),
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// The answer to `secret get|read|reveal`: no value is ever read back.
fn write_only() -> anyhow::Error {
    usage(
        "secret values are write-only: the management plane (this CLI, the HTTP API) never returns one. Code receives values through the runtime plane: the secrets a function declares, or `coffer run`. For a secret's metadata: `coffer secret show NAME`",
    )
}

/// The environment used when neither `--env` nor a scoped API key names one.
const DEFAULT_ENV: &str = "default";

/// A server, a key, an environment and an output style: what every command needs.
struct Session {
    api: Api,
    env: EnvName,
    /// Whether `--env`/`COFFER_ENV` named the environment (rather than the key or the
    /// default).
    env_given: bool,
    json: bool,
}

impl Session {
    fn open(global: GlobalArgs) -> Result<Self> {
        Session::open_with(global, true)
    }

    /// A session whose key comes from `--api-key`/`COFFER_API_KEY` or `coffer login` only:
    /// for `coffer run`, which needs a runtime key, so a local admin.key (which can never
    /// resolve a value) is no fallback.
    fn open_for_runtime(global: GlobalArgs) -> Result<Self> {
        Session::open_with(global, false)
    }

    fn open_with(global: GlobalArgs, admin_key_fallback: bool) -> Result<Self> {
        let base = http::parse_addr(&global.addr).map_err(|e| usage(format!("{e:#}")))?;
        let given_env = match global.env.as_deref().filter(|e| !e.is_empty()) {
            Some(env) => {
                Some(EnvName::new(env).map_err(|e| usage(format!("--env/COFFER_ENV: {e}")))?)
            }
            None => None,
        };
        let given = global
            .api_key
            .as_ref()
            .map(|k| k.expose_secret().trim())
            .filter(|k| !k.is_empty());
        let key = match given {
            Some(key) => SecretString::from(key),
            None => match login::stored_key(&base)? {
                Some(key) => key,
                None if admin_key_fallback => {
                    local_admin_key(&base, &global.addr, &global.data_dir)?
                }
                None => {
                    return Err(login::no_key_error(
                        &http::shown_addr(&base, &global.addr),
                        None,
                    ));
                }
            },
        };
        let env_given = given_env.is_some();
        let env = match given_env {
            Some(env) => env,
            None => match key_environment(key.expose_secret()) {
                Some(env) => env,
                None => EnvName::new(DEFAULT_ENV)?,
            },
        };
        Ok(Session {
            api: Api::new(base, &global.addr, key)?,
            env,
            env_given,
            json: global.json,
        })
    }

    async fn env(&self, command: EnvCommand) -> Result<()> {
        match command {
            EnvCommand::List => {
                let answer = self.api.get(&["v1", "environments"], &[]).await?;
                self.print_list(
                    items(answer, "environments")?,
                    &["NAME", "CREATED"],
                    |e: views::Environment| vec![e.name, e.created_at],
                )
            }
            EnvCommand::Create { name } => {
                #[derive(Serialize)]
                struct Body<'a> {
                    name: &'a str,
                }
                let body = JsonBody::new(
                    &Body {
                        name: name.as_str(),
                    },
                    0,
                )?;
                let answer = self.api.post(&["v1", "environments"], body).await?;
                self.print_done(Some(&answer), || format!("created environment {name}"))
            }
            EnvCommand::Delete { name, yes } => {
                confirm(
                    &format!("delete environment {name}"),
                    &format!(
                        "This deletes environment {name} with all its secrets and config and revokes the API keys scoped to it. It cannot be undone."
                    ),
                    Ask::TypeName(name.as_str()),
                    yes,
                )?;
                self.api
                    .delete(&["v1", "environments", name.as_str()], &[])
                    .await?;
                self.print_done(None, || {
                    format!("deleted environment {name} with its secrets, config and API keys")
                })
            }
        }
    }

    async fn secret(&self, command: SecretCommand) -> Result<()> {
        let env = &self.env;
        match command {
            SecretCommand::Set {
                name,
                value,
                more_words,
                expected_revision,
            } => {
                if !more_words.is_empty() {
                    return Err(usage(
                        "VALUE must be one argument: quote it, or better, pipe it on stdin",
                    ));
                }
                let name = SecretName::new(&name).map_err(|_| {
                    usage(
                        "NAME must be 1-128 letters, digits and '_', not starting with a digit (not shown here, in case a value was typed in its place)",
                    )
                })?;
                let value = match value {
                    Some(value) => {
                        input::check_value_size(value.expose_secret())?;
                        value
                    }
                    None => input::value_from_stdin(name.as_str())?,
                };
                let answer = self.put_secret(&name, &value, expected_revision).await?;
                let meta: views::Secret = parse(&answer)?;
                self.print_done(Some(&answer), || {
                    format!("set {name} in {env} (revision {})", meta.revision)
                })
            }
            SecretCommand::List {
                search,
                sort,
                page_size,
            } => {
                let filters: Vec<(&str, &str)> = [("search", &search), ("sort", &sort)]
                    .into_iter()
                    .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
                    .collect();
                let secrets = self
                    .items_where("secrets", &filters, page_size, None)
                    .await?;
                self.print_list(
                    secrets,
                    &["NAME", "REVISION", "KEY-VERSION", "STATUS", "UPDATED"],
                    |s: views::Secret| {
                        vec![
                            s.name,
                            s.revision.to_string(),
                            s.key_version.to_string(),
                            s.status,
                            s.updated_at,
                        ]
                    },
                )
            }
            SecretCommand::Show { name } => {
                let answer = self
                    .api
                    .get(
                        &["v1", "environments", env.as_str(), "secrets", name.as_str()],
                        &[],
                    )
                    .await?;
                if self.json {
                    return output::emit(&output::json(&answer)?);
                }
                let s: views::Secret = parse(&answer)?;
                output::emit(&output::table(
                    &[
                        "NAME",
                        "ENVIRONMENT",
                        "REVISION",
                        "KEY-VERSION",
                        "STATUS",
                        "CREATED",
                        "UPDATED",
                    ],
                    &[vec![
                        s.name,
                        s.environment,
                        s.revision.to_string(),
                        s.key_version.to_string(),
                        s.status,
                        s.created_at,
                        s.updated_at,
                    ]],
                ))
            }
            SecretCommand::Delete {
                name,
                expected_revision,
                yes,
            } => {
                confirm(
                    &format!("delete secret {name} from {env}"),
                    &format!("This deletes {name} and its value from {env}. It cannot be undone."),
                    Ask::YesNo,
                    yes,
                )?;
                self.api
                    .delete_at(
                        &["v1", "environments", env.as_str(), "secrets", name.as_str()],
                        expected_revision,
                    )
                    .await?;
                self.print_done(None, || format!("deleted {name} from {env}"))
            }
            SecretCommand::Import { file } => {
                let bytes = input::read_file(&file)?;
                let entries = std::str::from_utf8(&bytes)
                    .map_err(|_| anyhow!("{} is not UTF-8 text", file.display()))
                    .and_then(|text| dotenv::parse(text).map_err(anyhow::Error::from))
                    .with_context(|| format!("cannot import {}", file.display()))?;
                // Checked for every entry before the first is sent.
                for entry in &entries {
                    input::check_value_size(entry.value.expose_secret()).with_context(|| {
                        format!(
                            "cannot import {}: the value of {}",
                            file.display(),
                            entry.name
                        )
                    })?;
                }
                if entries.is_empty() {
                    bail!("cannot import {}: it sets no variables", file.display());
                }
                if entries.len() > coffer_core::MAX_IMPORT {
                    bail!(
                        "cannot import {}: {} entries, and one import sets at most {} (split the file)",
                        file.display(),
                        entries.len(),
                        coffer_core::MAX_IMPORT
                    );
                }
                #[derive(Serialize)]
                struct Entry<'a> {
                    name: &'a str,
                    value: &'a str,
                }
                #[derive(Serialize)]
                struct Import<'a> {
                    secrets: Vec<Entry<'a>>,
                }
                let body = Import {
                    secrets: entries
                        .iter()
                        .map(|e| Entry {
                            name: e.name.as_str(),
                            value: e.value.expose_secret(),
                        })
                        .collect(),
                };
                // JSON spells one byte in at most 6; names and punctuation fit in 160 each.
                let hint = entries
                    .iter()
                    .map(|e| e.value.expose_secret().len() * 6 + 160)
                    .sum();
                let body = JsonBody::new(&body, hint)?;
                if body.len() > coffer_api::MAX_BODY_BYTES {
                    bail!(
                        "cannot import {}: the import is {} bytes of JSON and one request carries at most {} (split the file)",
                        file.display(),
                        body.len(),
                        coffer_api::MAX_BODY_BYTES
                    );
                }
                // One request, one transaction on the server: all of it or nothing.
                let answer = self
                    .api
                    .post(&["v1", "environments", env.as_str(), "secrets"], body)
                    .await
                    .with_context(|| format!("nothing imported from {}", file.display()))?;
                let results = items(answer, "secrets")?;
                if self.json {
                    return output::emit(&output::json(&Value::Array(results))?);
                }
                let count = |what: &str| {
                    results
                        .iter()
                        .filter(|r| r["result"].as_str() == Some(what))
                        .count()
                };
                output::emit(&format!(
                    "imported {} into {env}: {} created, {} updated, {} unchanged\n",
                    secrets(results.len()),
                    count("created"),
                    count("updated"),
                    count("unchanged")
                ))
            }
            // Answered in `run()` before a session is opened; kept here for completeness.
            SecretCommand::Get { .. } => Err(write_only()),
        }
    }

    async fn api_key(&self, command: ApiKeyCommand) -> Result<()> {
        match command {
            ApiKeyCommand::Create { name, role } => {
                #[derive(Serialize)]
                struct Body<'a> {
                    name: &'a str,
                    role: &'static str,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    environment: Option<&'a str>,
                }
                let environment = match (role, self.env_given) {
                    (RoleArg::Admin, false) => None,
                    (RoleArg::Admin, true) => {
                        return Err(usage(
                            "an admin key has no environment (it acts in all of them): drop --env and unset COFFER_ENV, or create a manage or runtime key for that environment",
                        ));
                    }
                    (_, true) => Some(self.env.as_str()),
                    (_, false) => {
                        return Err(usage(format!(
                            "a {} key belongs to one environment: name it with --env ENV (or COFFER_ENV)",
                            role.as_str()
                        )));
                    }
                };
                let role = role.as_str();
                let body = JsonBody::new(
                    &Body {
                        name: &name,
                        role,
                        environment,
                    },
                    0,
                )?;
                let answer = self.api.post(&["v1", "api-keys"], body).await?;
                if self.json {
                    return output::emit(&output::json(&answer)?);
                }
                let created: views::CreatedApiKey = parse(&answer)?;
                let scope = match &created.environment {
                    Some(env) => format!("{} in {env}", created.role),
                    None => format!("{}, all environments", created.role),
                };
                let about = format!(
                    "created API key {} ({}: {scope})",
                    output::printable(&created.id),
                    output::printable(&created.name),
                );
                if std::io::stdout().is_terminal() {
                    output::emit(&Zeroizing::new(format!(
                        "{about}\n{}\nThis key will not be shown again: store it now.\n",
                        created.key.expose_secret(),
                    )))
                } else {
                    // `KEY=$(coffer apikey create …)` captures the key alone.
                    eprintln!(
                        "{about}\nThe key (on stdout) will not be shown again: store it now."
                    );
                    output::emit(&Zeroizing::new(format!(
                        "{}\n",
                        created.key.expose_secret()
                    )))
                }
            }
            ApiKeyCommand::List => {
                let answer = self.api.get(&["v1", "api-keys"], &[]).await?;
                self.print_list(
                    items(answer, "apiKeys")?,
                    &["ID", "NAME", "ROLE", "ENVIRONMENT", "CREATED"],
                    |k: views::ApiKey| {
                        let environment = k.environment.unwrap_or_else(|| "(all)".to_owned());
                        vec![k.id, k.name, k.role, environment, k.created_at]
                    },
                )
            }
            ApiKeyCommand::Revoke { id, yes } => {
                confirm(
                    &format!("revoke API key {id}"),
                    "Whatever uses this key loses access at once. It cannot be undone.",
                    Ask::YesNo,
                    yes,
                )?;
                self.api
                    .delete(&["v1", "api-keys", id.as_str()], &[])
                    .await?;
                self.print_done(None, || format!("revoked API key {id}"))
            }
        }
    }

    async fn put_secret(
        &self,
        name: &SecretName,
        value: &SecretString,
        expected_revision: Option<u64>,
    ) -> Result<Value> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            value: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            expected_revision: Option<u64>,
        }
        let value = value.expose_secret();
        // JSON spells one byte in at most 6 (`\u001f`); the rest of the body fits in 64.
        let body = JsonBody::new(
            &Body {
                value,
                expected_revision,
            },
            value.len() * 6 + 64,
        )?;
        self.api
            .put(
                &[
                    "v1",
                    "environments",
                    self.env.as_str(),
                    "secrets",
                    name.as_str(),
                ],
                body,
            )
            .await
    }

    /// Every item of an environment's `collection` (`secrets`, `config`, `functions`),
    /// following `nextCursor` to the last page.
    async fn all_items(&self, collection: &str, page_size: u32) -> Result<Vec<Value>> {
        self.items_where(collection, &[], page_size, None).await
    }

    /// The items of an environment's `collection` that match `filters` (query
    /// parameters), following `nextCursor` to the last page or until there are `max`.
    async fn items_where(
        &self,
        collection: &str,
        filters: &[(&str, &str)],
        page_size: u32,
        max: Option<u64>,
    ) -> Result<Vec<Value>> {
        self.items_at(collection, collection, filters, page_size, max)
            .await
    }

    /// [`Session::items_where`] for a route whose list field is not named like its path
    /// (`orchestration-runs` answers `{"runs": […]}`).
    async fn items_at(
        &self,
        route: &str,
        collection: &str,
        filters: &[(&str, &str)],
        page_size: u32,
        max: Option<u64>,
    ) -> Result<Vec<Value>> {
        let path = ["v1", "environments", self.env.as_str(), route];
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let left = max.map_or(u64::MAX, |max| max.saturating_sub(all.len() as u64));
            let limit = left.min(u64::from(page_size)).to_string();
            let mut query = filters.to_vec();
            query.push(("limit", limit.as_str()));
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.as_str()));
            }
            let mut page = self.api.get(&path, &query).await?;
            let next = match page.get_mut("nextCursor").map(Value::take) {
                None | Some(Value::Null) => None,
                Some(Value::String(next)) => Some(next),
                Some(_) => bail!("unexpected answer from the server: a bad nextCursor"),
            };
            let mut page = items(page, collection)?;
            page.truncate(usize::try_from(left).unwrap_or(usize::MAX));
            all.extend(page);
            if max.is_some_and(|max| all.len() as u64 >= max) {
                return Ok(all);
            }
            match next.filter(|next| !next.is_empty()) {
                None => return Ok(all),
                Some(next) if cursor.as_ref() == Some(&next) => {
                    bail!("the server sent the same page twice")
                }
                next => cursor = next,
            }
        }
    }

    /// A list as a table, or with `--json` as one array of the server's items.
    fn print_list<T: DeserializeOwned>(
        &self,
        items: Vec<Value>,
        headers: &[&str],
        row: impl Fn(T) -> Vec<String>,
    ) -> Result<()> {
        if self.json {
            return output::emit(&output::json(&Value::Array(items))?);
        }
        let rows = items
            .iter()
            .map(|item| parse(item).map(&row))
            .collect::<Result<Vec<_>>>()?;
        output::emit(&output::table(headers, &rows))
    }

    /// A confirmation, or with `--json` the server's answer (nothing for an empty answer).
    fn print_done(&self, answer: Option<&Value>, message: impl FnOnce() -> String) -> Result<()> {
        match (self.json, answer) {
            (true, Some(answer)) => output::emit(&output::json(answer)?),
            (true, None) => Ok(()),
            (false, _) => output::emit(&format!("{}\n", message())),
        }
    }
}

/// The admin key a local server wrote, used when no API key is given or stored.
fn local_admin_key(base: &Url, addr: &str, data_dir: &Path) -> Result<SecretString> {
    let path = data_dir.join("admin.key");
    let shown = http::shown_addr(base, addr);
    if !http::is_local(base) {
        return Err(login::no_key_error(&shown, None));
    }
    let bytes = match std::fs::File::open(&path) {
        Ok(file) => {
            input::read_all(file).with_context(|| format!("cannot read {}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(login::no_key_error(&shown, Some(&path)));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let key = std::str::from_utf8(&bytes)
        .ok()
        .map(str::trim)
        .filter(|key| !key.is_empty());
    key.map(SecretString::from)
        .ok_or_else(|| anyhow!("{} does not hold an API key", path.display()))
}

/// The environment a scoped key (`ck_<env>_<random>`) belongs to; `None` for admin keys
/// (`ck_admin_…`) and keys of any other shape.
fn key_environment(key: &str) -> Option<EnvName> {
    let (env, _random) = key.strip_prefix("ck_")?.rsplit_once('_')?;
    if env == "admin" {
        None
    } else {
        EnvName::new(env).ok()
    }
}

/// The array under `field` of a list answer.
fn items(answer: Value, field: &str) -> Result<Vec<Value>> {
    match answer {
        Value::Object(mut object) => match object.remove(field) {
            Some(Value::Array(items)) => Ok(items),
            _ => bail!("unexpected answer from the server: no {field:?} list"),
        },
        _ => bail!("unexpected answer from the server: not a JSON object"),
    }
}

fn parse<T: DeserializeOwned>(value: &Value) -> Result<T> {
    T::deserialize(value).context("unexpected answer from the server")
}

/// "1 secret", "3 secrets".
fn secrets(n: usize) -> String {
    output::count(n as u64, "secret", "secrets")
}

/// The parts of the server's answers that human output shows.
mod views {
    use secrecy::SecretString;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Environment {
        pub name: String,
        pub created_at: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Secret {
        pub name: String,
        pub environment: String,
        pub revision: u64,
        pub key_version: u64,
        pub status: String,
        pub created_at: String,
        pub updated_at: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ApiKey {
        pub id: String,
        pub name: String,
        pub role: String,
        pub environment: Option<String>,
        pub created_at: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CreatedApiKey {
        pub id: String,
        pub name: String,
        pub role: String,
        pub environment: Option<String>,
        pub key: SecretString,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_keys_name_their_environment() {
        assert_eq!(
            key_environment("ck_production_0123abcd").unwrap().as_str(),
            "production"
        );
        assert_eq!(
            key_environment("ck_eu-west-1_ff").unwrap().as_str(),
            "eu-west-1"
        );
    }

    #[test]
    fn admin_and_foreign_keys_have_no_environment() {
        for key in [
            "ck_admin_0123",
            "some-seeded-admin-key-of-32-characters",
            "ck_nohex",
            "ck_Bad_01",
            "ck__01",
        ] {
            assert!(key_environment(key).is_none(), "{key}");
        }
    }

    #[test]
    fn a_remote_address_never_falls_back_to_a_local_admin_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.key"), "ck_admin_local\n").unwrap();
        let remote = http::parse_addr("https://coffer.example").unwrap();
        let e = local_admin_key(&remote, "https://coffer.example", dir.path())
            .err()
            .unwrap();
        assert!(e.to_string().contains("set COFFER_API_KEY"), "{e}");
        assert!(e.to_string().contains("coffer login"), "{e}");
        let local = http::parse_addr("http://localhost:8720").unwrap();
        assert_eq!(
            local_admin_key(&local, "localhost:8720", dir.path())
                .unwrap()
                .expose_secret(),
            "ck_admin_local"
        );
    }

    #[test]
    fn a_missing_admin_key_file_says_how_to_give_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let local = http::parse_addr("http://127.0.0.1:8720").unwrap();
        let e = local_admin_key(&local, "127.0.0.1:8720", dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("set COFFER_API_KEY") && e.contains("admin.key"),
            "{e}"
        );
    }

    #[test]
    fn list_answers_yield_their_items() {
        let answer = serde_json::json!({"environments": [{"name": "a"}], "other": 1});
        assert_eq!(items(answer, "environments").unwrap().len(), 1);
        assert!(items(serde_json::json!({"x": []}), "environments").is_err());
    }

    #[test]
    fn counts_are_spelled_in_english() {
        assert_eq!(secrets(0), "0 secrets");
        assert_eq!(secrets(1), "1 secret");
        assert_eq!(secrets(2), "2 secrets");
    }
}
