//! `coffer orchestration create | update | get | list | delete | run`, `coffer orchestration
//! runs list | show` and `coffer orchestration approve | reject`: orchestrations (ordered
//! compute, approval, delay and decision steps) and their runs.
//!
//! Definitions travel as `coffer_wire::CreateOrchestration` / `UpdateOrchestration`, read
//! from a JSON or YAML file; answers are read as `coffer_wire::Orchestration` and
//! `OrchestrationRun`. A definition file may hold plaintext parameters to seal: it is read
//! into a wiped buffer, a parse error never quotes a value, and what is printed comes from
//! the server's answers only, where every encrypted parameter is masked. Human output
//! masks an encrypted parameter even if an answer carried something else in its place.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use coffer_store::{OrchestrationId, OrchestrationRunId};
use coffer_wire::{
    CreateOrchestration, DecideOrchestrationRun, MASK, Orchestration, OrchestrationRun,
    OrchestrationRunStatus, Param, StartOrchestrationRun, Step, StepStatus, UpdateOrchestration,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::confirm::{Ask, confirm};
use super::exit::usage;
use super::http::JsonBody;
use super::{Session, examples, input, output, parse};

/// `coffer orchestration …`
#[derive(clap::Subcommand)]
pub enum OrchestrationCommand {
    /// Create an orchestration from a JSON or YAML file: {name, steps}.
    ///
    /// An encrypted param written as {"value": "...", "encrypt": true} is sealed by the
    /// server; every answer, this one included, shows it as ********.
    #[command(after_help = examples::ORCHESTRATION_CREATE)]
    Create {
        /// The definition: a JSON or YAML file (.json, .yaml, .yml; '-' reads stdin).
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Replace an orchestration's definition with the whole definition in a file.
    ///
    /// Per encrypted param: sent back masked ({"value": "********", "encrypted": true}) it
    /// keeps the stored value; {"value": "...", "encrypt": true} seals a new one; omitted,
    /// it is removed. A file saved from `get --json` works as it is: its revision becomes
    /// the expected revision.
    #[command(after_help = examples::ORCHESTRATION_UPDATE)]
    Update {
        #[arg(value_name = "ID", value_parser = OrchestrationId::new)]
        id: OrchestrationId,
        /// The definition: a JSON or YAML file (.json, .yaml, .yml; '-' reads stdin).
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
        /// Update only if the orchestration is at this revision now.
        #[arg(long, value_name = "N")]
        expected_revision: Option<u64>,
    },
    /// Show an orchestration and its steps (encrypted params read ********).
    #[command(visible_alias = "show", after_help = examples::ORCHESTRATION_GET)]
    Get {
        #[arg(value_name = "ID", value_parser = OrchestrationId::new)]
        id: OrchestrationId,
    },
    /// List orchestrations: ids, names, step counts, revisions.
    #[command(after_help = examples::ORCHESTRATION_LIST)]
    List {
        /// Orchestrations asked for per request (every page is fetched).
        #[arg(long, hide = true, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Delete an orchestration (its runs stay readable).
    ///
    /// Asks y/N on a terminal; elsewhere needs --yes.
    #[command(after_help = examples::ORCHESTRATION_DELETE)]
    Delete {
        #[arg(value_name = "ID", value_parser = OrchestrationId::new)]
        id: OrchestrationId,
        /// Delete only if the orchestration is at this revision now.
        #[arg(long, value_name = "N")]
        expected_revision: Option<u64>,
        /// Do not ask: confirm now (needed when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Start a run of an orchestration, with params every step sees (not secret: every
    /// read of the run shows them).
    #[command(after_help = examples::ORCHESTRATION_RUN)]
    Run(RunArgs),
    /// The runs of orchestrations: list and show.
    #[command(after_help = examples::ORCHESTRATION_RUNS)]
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Approve the approval step a run waits at: the run goes on.
    #[command(after_help = examples::ORCHESTRATION_APPROVE)]
    Approve(DecideArgs),
    /// Reject the approval step a run waits at: the run ends `rejected`.
    #[command(after_help = examples::ORCHESTRATION_REJECT)]
    Reject(DecideArgs),
}

/// `coffer orchestration run`'s arguments.
#[derive(clap::Args)]
pub struct RunArgs {
    #[arg(value_name = "ID", value_parser = OrchestrationId::new)]
    id: OrchestrationId,
    /// The run's params as one JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "param")]
    params: Option<String>,
    /// One param, KEY=VALUE; VALUE is taken as JSON when it parses (42, true, {"a":1}),
    /// else as a string. Repeat for more.
    #[arg(long, value_name = "KEY=VALUE")]
    param: Vec<String>,
    /// Follow the run until it ends or waits for an approval, printing its status changes
    /// to stderr, then print it.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, requires = "wait")]
    timeout: u64,
}

/// `coffer orchestration runs …`
#[derive(clap::Subcommand)]
pub enum RunsCommand {
    /// List orchestration runs, newest first: every page, or the newest --limit.
    #[command(after_help = examples::ORCHESTRATION_RUNS_LIST)]
    List {
        /// Only runs of this orchestration.
        #[arg(long, value_name = "ID", value_parser = OrchestrationId::new)]
        orchestration: Option<OrchestrationId>,
        /// Only runs with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Show at most this many runs (the newest); default: all.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Runs asked for per request.
        #[arg(long, hide = true, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Show one run: its status, params, and each step's status, output or error.
    #[command(after_help = examples::ORCHESTRATION_RUNS_SHOW)]
    Show {
        #[arg(value_name = "RUN_ID", value_parser = OrchestrationRunId::new)]
        id: OrchestrationRunId,
    },
}

/// `coffer orchestration approve|reject`'s arguments.
#[derive(clap::Args)]
pub struct DecideArgs {
    #[arg(value_name = "RUN_ID", value_parser = OrchestrationRunId::new)]
    id: OrchestrationRunId,
    /// Why (kept in the step's output and the audit log; at most 1,024 characters).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

/// An orchestration run's status, as `--status` takes it.
#[derive(Clone, Copy, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum StatusArg {
    /// A step is running or due.
    Running,
    /// An approval step waits for a decision.
    WaitingApproval,
    /// Every step it reached succeeded.
    Succeeded,
    /// A step failed.
    Failed,
    /// An approval was rejected.
    Rejected,
}

impl StatusArg {
    fn status(self) -> OrchestrationRunStatus {
        match self {
            StatusArg::Running => OrchestrationRunStatus::Running,
            StatusArg::WaitingApproval => OrchestrationRunStatus::WaitingApproval,
            StatusArg::Succeeded => OrchestrationRunStatus::Succeeded,
            StatusArg::Failed => OrchestrationRunStatus::Failed,
            StatusArg::Rejected => OrchestrationRunStatus::Rejected,
        }
    }
}

/// What an update file may hold: the request body, or an orchestration as `get --json`
/// prints it (its `revision` is then the expected one; `id` and `environment` must be this
/// orchestration's).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateFile {
    name: String,
    steps: Vec<Step>,
    #[serde(default)]
    expected_revision: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    revision: Option<u64>,
    #[serde(default, rename = "createdAt")]
    _created_at: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "updatedAt")]
    _updated_at: Option<serde::de::IgnoredAny>,
}

/// How often `run --wait` asks, at first and at most.
const FIRST_POLL: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_secs(2);

/// A request body's buffer: room for the largest body the server takes, so serializing a
/// definition (which may hold values to seal) never reallocates and leaves a copy behind.
const BODY_HINT: usize = coffer_api::MAX_BODY_BYTES + 1024;

impl Session {
    pub(super) async fn orchestration(&self, command: OrchestrationCommand) -> Result<()> {
        let env = &self.env;
        match command {
            OrchestrationCommand::Create { file } => {
                let body: CreateOrchestration =
                    input::read_document(&file, "an orchestration definition ({name, steps})")?;
                let path = self.orchestrations_path();
                let answer = self
                    .api
                    .post(&path, JsonBody::new(&body, BODY_HINT)?)
                    .await?;
                self.print_orchestration_written(&answer, "created", "in")
            }
            OrchestrationCommand::Update {
                id,
                file,
                expected_revision,
            } => {
                let read: UpdateFile = input::read_document(
                    &file,
                    "an orchestration definition ({name, steps, expectedRevision})",
                )?;
                let body = update_body(read, &id, env.as_str(), expected_revision)?;
                let answer = self
                    .api
                    .put(
                        &self.orchestration_path(&id),
                        JsonBody::new(&body, BODY_HINT)?,
                    )
                    .await?;
                self.print_orchestration_written(&answer, "updated", "in")
            }
            OrchestrationCommand::Get { id } => {
                let answer = self.api.get(&self.orchestration_path(&id), &[]).await?;
                if self.json {
                    return output::emit(&output::json(&answer)?);
                }
                let o: Orchestration = parse(&answer)?;
                output::emit(&shown(&o))
            }
            OrchestrationCommand::List { page_size } => {
                let items = self.all_items("orchestrations", page_size).await?;
                self.print_list(
                    items,
                    &["ID", "NAME", "STEPS", "REVISION", "UPDATED"],
                    |o: Orchestration| {
                        vec![
                            o.id,
                            o.name,
                            o.steps.len().to_string(),
                            o.revision.to_string(),
                            o.updated_at,
                        ]
                    },
                )
            }
            OrchestrationCommand::Delete {
                id,
                expected_revision,
                yes,
            } => {
                confirm(
                    &format!("delete orchestration {id} from {env}"),
                    &format!(
                        "This deletes orchestration {id} from {env}, with its sealed params. It cannot be undone."
                    ),
                    Ask::YesNo,
                    yes,
                )?;
                let answer = self
                    .api
                    .delete_answering(&self.orchestration_path(&id), expected_revision)
                    .await?;
                let name = answer
                    .as_ref()
                    .and_then(|a| a["name"].as_str())
                    .map(|n| format!(" ({})", output::printable(n)))
                    .unwrap_or_default();
                self.print_done(answer.as_ref(), || {
                    format!("deleted orchestration {id}{name} from {env}")
                })
            }
            OrchestrationCommand::Run(args) => self.start_run(args).await,
            OrchestrationCommand::Runs {
                command:
                    RunsCommand::List {
                        orchestration,
                        status,
                        limit,
                        page_size,
                    },
            } => {
                let mut filters = Vec::new();
                if let Some(o) = &orchestration {
                    filters.push(("orchestrationId", o.as_str()));
                }
                if let Some(status) = status {
                    filters.push(("status", status.status().as_str()));
                }
                let runs = self
                    .items_at("orchestration-runs", "runs", &filters, page_size, limit)
                    .await?;
                self.print_list(
                    runs,
                    &["ID", "ORCHESTRATION", "STATUS", "STEP", "UPDATED"],
                    |r: OrchestrationRun| {
                        vec![
                            r.id,
                            r.orchestration_id,
                            r.status.as_str().to_owned(),
                            r.current_step.unwrap_or_else(|| "-".to_owned()),
                            r.updated_at,
                        ]
                    },
                )
            }
            OrchestrationCommand::Runs {
                command: RunsCommand::Show { id },
            } => {
                let answer = self.api.get(&self.run_path(&id), &[]).await?;
                self.print_run(&answer)
            }
            OrchestrationCommand::Approve(args) => self.decide(args, "approve", "approved").await,
            OrchestrationCommand::Reject(args) => self.decide(args, "reject", "rejected").await,
        }
    }

    async fn start_run(&self, args: RunArgs) -> Result<()> {
        let params = run_params(args.params.as_deref(), &args.param)?;
        let mut path = self.orchestration_path(&args.id).to_vec();
        path.push("runs");
        let body = StartOrchestrationRun { params };
        let answer = self.api.post(&path, JsonBody::new(&body, 0)?).await?;
        let run: OrchestrationRun = parse(&answer)?;
        if !args.wait {
            if self.json {
                return output::emit(&output::json(&answer)?);
            }
            return output::emit(&format!(
                "started orchestration run {} of {} in {}: {}\n",
                run.id,
                args.id,
                self.env,
                progress(&run)
            ));
        }
        eprintln!("{}: {}", run.id, progress(&run));
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        let mut seen = progress(&run);
        let mut status = run.status;
        let mut answer = answer;
        let mut pause = FIRST_POLL;
        let run_id = OrchestrationRunId::new(&run.id)
            .map_err(|_| anyhow::anyhow!("unexpected answer from the server: a bad run id"))?;
        while !settled(status) {
            if Instant::now() >= deadline {
                bail!(
                    "orchestration run {run_id} is still {} after {} s; follow it with `coffer orchestration runs show {run_id}`",
                    status.as_str(),
                    args.timeout
                );
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(MAX_POLL);
            answer = self.api.get(&self.run_path(&run_id), &[]).await?;
            let now: OrchestrationRun = parse(&answer)?;
            let line = progress(&now);
            if line != seen {
                eprintln!("{run_id}: {line}");
                seen = line;
            }
            status = now.status;
        }
        self.print_run(&answer)?;
        match status {
            OrchestrationRunStatus::Failed | OrchestrationRunStatus::Rejected => {
                bail!("orchestration run {run_id} ended {}", status.as_str())
            }
            _ => Ok(()),
        }
    }

    async fn decide(&self, args: DecideArgs, verb: &str, done: &str) -> Result<()> {
        let mut path = self.run_path(&args.id).to_vec();
        path.push(verb);
        let body = DecideOrchestrationRun {
            reason: args.reason,
        };
        let answer = self.api.post(&path, JsonBody::new(&body, 0)?).await?;
        if self.json {
            return output::emit(&output::json(&answer)?);
        }
        let run: OrchestrationRun = parse(&answer)?;
        output::emit(&format!(
            "{done} orchestration run {} in {}: {}\n",
            run.id,
            self.env,
            progress(&run)
        ))
    }

    fn orchestrations_path(&self) -> [&str; 4] {
        ["v1", "environments", self.env.as_str(), "orchestrations"]
    }

    fn orchestration_path<'a>(&'a self, id: &'a OrchestrationId) -> [&'a str; 5] {
        [
            "v1",
            "environments",
            self.env.as_str(),
            "orchestrations",
            id.as_str(),
        ]
    }

    fn run_path<'a>(&'a self, id: &'a OrchestrationRunId) -> [&'a str; 5] {
        [
            "v1",
            "environments",
            self.env.as_str(),
            "orchestration-runs",
            id.as_str(),
        ]
    }

    /// A create's or update's answer: the server's JSON with `--json`, else one line.
    fn print_orchestration_written(&self, answer: &Value, verb: &str, prep: &str) -> Result<()> {
        if self.json {
            return output::emit(&output::json(answer)?);
        }
        let o: Orchestration = parse(answer)?;
        output::emit(&format!(
            "{verb} orchestration {} ({}) {prep} {}: {}, revision {}\n",
            o.id,
            output::printable(&o.name),
            o.environment,
            output::count(o.steps.len() as u64, "step", "steps"),
            o.revision
        ))
    }

    /// A run as `runs show` prints it, or the server's JSON.
    fn print_run(&self, answer: &Value) -> Result<()> {
        if self.json {
            return output::emit(&output::json(answer)?);
        }
        let run: OrchestrationRun = parse(answer)?;
        output::emit(&shown_run(&run)?)
    }
}

/// The body of an update: the file's definition, with the expected revision the flag, the
/// file's `expectedRevision` or its `revision` (a saved `get --json`) gives — which must
/// agree.
fn update_body(
    file: UpdateFile,
    id: &OrchestrationId,
    env: &str,
    flag: Option<u64>,
) -> Result<UpdateOrchestration> {
    if let Some(other) = file.id.as_deref().filter(|other| *other != id.as_str()) {
        return Err(usage(format!(
            "the file is orchestration {}, not {id}",
            output::printable(other)
        )));
    }
    if let Some(other) = file.environment.as_deref().filter(|other| *other != env) {
        return Err(usage(format!(
            "the file is an orchestration of environment {}, not {env}: give --env {0}",
            output::printable(other)
        )));
    }
    let mut expected = None;
    for (what, revision) in [
        ("--expected-revision", flag),
        ("expectedRevision in the file", file.expected_revision),
        ("revision in the file", file.revision),
    ] {
        match (expected, revision) {
            (Some((first, n)), Some(m)) if n != m => {
                return Err(usage(format!(
                    "{first} says {n} and {what} says {m}: give one"
                )));
            }
            (None, Some(m)) => expected = Some((what, m)),
            _ => {}
        }
    }
    Ok(UpdateOrchestration {
        name: file.name,
        steps: file.steps,
        expected_revision: expected.map(|(_, n)| n),
    })
}

/// The run's params from `--params JSON` or the `--param KEY=VALUE`s; `None` for neither.
fn run_params(json: Option<&str>, pairs: &[String]) -> Result<Option<Map<String, Value>>> {
    if let Some(text) = json {
        return match input::parse_json(text, "--params")? {
            Value::Object(map) => Ok(Some(map)),
            _ => Err(usage("--params is not a JSON object ({\"key\": value, …})")),
        };
    }
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut params = Map::new();
    for pair in pairs {
        let Some((key, raw)) = pair.split_once('=') else {
            return Err(usage(
                "--param takes KEY=VALUE (VALUE as JSON when it parses, else a string)",
            ));
        };
        if key.is_empty() {
            return Err(usage("--param takes KEY=VALUE with a non-empty KEY"));
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        if params.insert(key.to_owned(), value).is_some() {
            return Err(usage(format!(
                "--param {} is given twice",
                output::printable(key)
            )));
        }
    }
    Ok(Some(params))
}

/// Whether `run --wait` stops following: the run ended or a person must act.
fn settled(status: OrchestrationRunStatus) -> bool {
    status.is_final() || status == OrchestrationRunStatus::WaitingApproval
}

/// "running, at step charge".
fn progress(run: &OrchestrationRun) -> String {
    match &run.current_step {
        Some(step) => format!(
            "{}, at step {}",
            run.status.as_str(),
            output::printable(step)
        ),
        None => run.status.as_str().to_owned(),
    }
}

/// `get`'s human output: the orchestration's fields, then a table of its steps.
fn shown(o: &Orchestration) -> String {
    let fields = output::fields(&[
        ("id", o.id.clone()),
        ("name", o.name.clone()),
        ("environment", o.environment.clone()),
        ("revision", o.revision.to_string()),
        ("created", o.created_at.clone()),
        ("updated", o.updated_at.clone()),
    ]);
    let rows: Vec<Vec<String>> = o.steps.iter().map(step_row).collect();
    format!(
        "{fields}\n{}",
        output::table(&["STEP", "TYPE", "FUNCTION", "PARAMS", "DETAILS"], &rows)
    )
}

/// One step as a row of `get`'s table.
fn step_row(step: &Step) -> Vec<String> {
    let dash = || "-".to_owned();
    let (function, params, details) = match step {
        Step::Compute(c) => {
            let plain = c.params.iter().map(|(k, v)| format!("{k}={}", compact(v)));
            let sealed = c
                .encrypted_params
                .iter()
                .map(|(k, p)| format!("{k}={}", param_cell(p)));
            let all: Vec<String> = plain.chain(sealed).collect();
            let params = if all.is_empty() {
                dash()
            } else {
                all.join(", ")
            };
            (c.function_id.clone(), params, dash())
        }
        Step::Approval(a) => (
            dash(),
            dash(),
            match a.timeout_ms {
                Some(ms) => format!("waits for a decision, at most {ms} ms"),
                None => "waits for a decision".to_owned(),
            },
        ),
        Step::Delay(d) => (dash(), dash(), format!("waits {} ms", d.duration_ms)),
        Step::Decision(d) => {
            let op = serde_json::to_value(d.condition.op)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let value = d
                .condition
                .value
                .as_ref()
                .map(|v| format!(" {}", compact(v)))
                .unwrap_or_default();
            (
                dash(),
                dash(),
                format!(
                    "if {} {op}{value} then {} else {}",
                    d.condition.path, d.then, d.otherwise
                ),
            )
        }
    };
    vec![
        step.id().to_owned(),
        step.kind().to_owned(),
        function,
        params,
        details,
    ]
}

/// An encrypted param's cell: `secretRef NAME`, the mask for a sealed one (whatever the
/// answer holds in its place), or a plain one's value.
fn param_cell(p: &Param) -> String {
    if let Some(name) = &p.secret_ref {
        return format!("secretRef {name}");
    }
    if p.encrypted == Some(true) || p.encrypt == Some(true) {
        return MASK.to_owned();
    }
    p.value.as_ref().map_or_else(|| "-".to_owned(), compact)
}

/// `runs show`'s human output: the run's fields, then a table of its steps.
fn shown_run(run: &OrchestrationRun) -> Result<String> {
    let params = if run.params.is_empty() {
        "-".to_owned()
    } else {
        output::json(&Value::Object(run.params.clone()))?
            .trim_end()
            .to_owned()
    };
    let fields = output::fields(&[
        ("id", run.id.clone()),
        ("orchestration", run.orchestration_id.clone()),
        ("revision", run.orchestration_revision.to_string()),
        ("environment", run.environment.clone()),
        ("status", run.status.as_str().to_owned()),
        (
            "current step",
            run.current_step.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("params", params),
        ("created", run.created_at.clone()),
        ("updated", run.updated_at.clone()),
    ]);
    let rows: Vec<Vec<String>> = run
        .steps
        .iter()
        .map(|s| {
            let result = match (&s.error, &s.output) {
                (Some(error), _) => format!("error: {error}"),
                (None, Some(out)) => compact(out),
                (None, None) => "-".to_owned(),
            };
            vec![
                s.id.clone(),
                step_status_name(s.status).to_owned(),
                s.run_id.clone().unwrap_or_else(|| "-".to_owned()),
                s.until.clone().unwrap_or_else(|| "-".to_owned()),
                result,
            ]
        })
        .collect();
    Ok(format!(
        "{fields}\n{}",
        output::table(&["STEP", "STATUS", "RUN", "UNTIL", "OUTPUT"], &rows)
    ))
}

fn step_status_name(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "pending",
        StepStatus::Running => "running",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Rejected => "rejected",
        StepStatus::Skipped => "skipped",
    }
}

/// JSON on one line (a table cell).
fn compact(value: &Value) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> OrchestrationId {
        OrchestrationId::new("orch_0190a1b2c3d4e5f6a7b8").unwrap()
    }

    fn file(text: &str) -> UpdateFile {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn params_parse_as_json_when_they_can_and_as_strings_otherwise() {
        let pairs: Vec<String> = ["n=1", "flag=true", "name=alice", "obj={\"a\":1}", "eq=a=b"]
            .map(str::to_owned)
            .to_vec();
        let params = run_params(None, &pairs).unwrap().unwrap();
        assert_eq!(
            Value::Object(params),
            serde_json::json!({"n": 1, "flag": true, "name": "alice", "obj": {"a": 1}, "eq": "a=b"})
        );
        assert!(run_params(None, &[]).unwrap().is_none());
        for bad in [vec!["novalue"], vec!["=1"], vec!["a=1", "a=2"]] {
            let bad: Vec<String> = bad.into_iter().map(str::to_owned).collect();
            assert!(run_params(None, &bad).is_err(), "{bad:?}");
        }
        let json = run_params(Some(r#"{"x": [1]}"#), &[]).unwrap().unwrap();
        assert_eq!(json["x"], serde_json::json!([1]));
        assert!(run_params(Some("[1]"), &[]).is_err());
    }

    #[test]
    fn a_saved_get_answer_updates_at_its_revision() {
        let saved = file(
            r#"{"id": "orch_0190a1b2c3d4e5f6a7b8", "name": "n", "environment": "prod",
                "steps": [{"id": "w", "type": "delay", "durationMs": 5}], "revision": 3,
                "createdAt": "t", "updatedAt": "t"}"#,
        );
        let body = update_body(saved, &id(), "prod", None).unwrap();
        assert_eq!(body.expected_revision, Some(3));
        let saved = file(r#"{"name": "n", "steps": [], "revision": 3}"#);
        assert!(update_body(saved, &id(), "prod", Some(4)).is_err());
        let other = file(r#"{"id": "orch_ffffffffffffffffffff", "name": "n", "steps": []}"#);
        assert!(update_body(other, &id(), "prod", None).is_err());
        let elsewhere = file(r#"{"name": "n", "steps": [], "environment": "staging"}"#);
        assert!(update_body(elsewhere, &id(), "prod", None).is_err());
        let plain = file(r#"{"name": "n", "steps": []}"#);
        assert_eq!(
            update_body(plain, &id(), "prod", Some(2))
                .unwrap()
                .expected_revision,
            Some(2)
        );
    }

    #[test]
    fn get_shows_sealed_params_masked_and_references_by_name() {
        let o: Orchestration = serde_json::from_value(serde_json::json!({
            "id": "orch_0190a1b2c3d4e5f6a7b8", "name": "billing", "environment": "prod",
            "revision": 1, "createdAt": "t0", "updatedAt": "t1",
            "steps": [
                {"id": "charge", "type": "compute", "functionId": "bill",
                 "params": {"currency": "EUR"},
                 "encryptedParams": {
                     "TOKEN": {"value": "********", "encrypted": true},
                     "LEAK": {"value": "should-not-show", "encrypted": true},
                     "PLAIN": {"value": "p", "encrypted": false},
                     "REF": {"secretRef": "STRIPE_KEY"}}},
                {"id": "ok", "type": "approval", "timeoutMs": 1000},
                {"id": "wait", "type": "delay", "durationMs": 5},
                {"id": "big", "type": "decision",
                 "condition": {"path": "params.a", "op": "gt", "value": 1},
                 "then": "charge", "else": "ok"}
            ]
        }))
        .unwrap();
        let text = shown(&o);
        assert!(text.contains("TOKEN=********"), "{text}");
        assert!(text.contains("REF=secretRef STRIPE_KEY"), "{text}");
        assert!(text.contains("PLAIN=\"p\""), "{text}");
        assert!(text.contains("currency=\"EUR\""), "{text}");
        assert!(!text.contains("should-not-show"), "{text}");
        assert!(
            text.contains("if params.a gt 1 then charge else ok"),
            "{text}"
        );
        assert!(text.contains("waits 5 ms"), "{text}");
    }

    #[test]
    fn wait_stops_at_an_end_or_an_approval() {
        use OrchestrationRunStatus as S;
        assert!(!settled(S::Running));
        for s in [S::WaitingApproval, S::Succeeded, S::Failed, S::Rejected] {
            assert!(settled(s));
        }
    }
}
