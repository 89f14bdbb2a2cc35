//! `coffer runs list | show`: the runs events started, their status, attempts and (redacted)
//! output or error, read as `coffer_wire::Run`.

use anyhow::Result;
use coffer_store::{FunctionId, RunId};
use coffer_wire::{Run, RunStatus};

use super::{Session, examples, output, parse};

/// `coffer runs …`
#[derive(clap::Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first: every page, or the newest --limit.
    #[command(after_help = examples::RUNS_LIST)]
    List {
        /// Only runs of this function.
        #[arg(long, value_name = "ID", value_parser = FunctionId::new)]
        function: Option<FunctionId>,
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
    /// Show one run: status, attempts, the event that started it, its output or error
    /// (secret values in them read ********).
    #[command(after_help = examples::RUNS_SHOW)]
    Show {
        #[arg(value_name = "RUN_ID", value_parser = RunId::new)]
        id: RunId,
    },
}

/// A run's status, as `--status` takes it.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum StatusArg {
    /// Waiting for delivery (or for a retry).
    Queued,
    /// Delivered or leased, not finished.
    Running,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error, or out of attempts.
    Failed,
}

impl StatusArg {
    fn as_str(self) -> &'static str {
        status_name(match self {
            StatusArg::Queued => RunStatus::Queued,
            StatusArg::Running => RunStatus::Running,
            StatusArg::Succeeded => RunStatus::Succeeded,
            StatusArg::Failed => RunStatus::Failed,
        })
    }
}

impl Session {
    pub(super) async fn runs(&self, command: RunsCommand) -> Result<()> {
        match command {
            RunsCommand::List {
                function,
                status,
                limit,
                page_size,
            } => {
                let mut filters = Vec::new();
                if let Some(function) = &function {
                    filters.push(("functionId", function.as_str()));
                }
                if let Some(status) = status {
                    filters.push(("status", status.as_str()));
                }
                let runs = self.items_where("runs", &filters, page_size, limit).await?;
                self.print_list(
                    runs,
                    &["ID", "FUNCTION", "STATUS", "ATTEMPTS", "EVENT", "UPDATED"],
                    |r: Run| {
                        vec![
                            r.id,
                            r.function_id,
                            status_name(r.status).to_owned(),
                            r.attempts.to_string(),
                            r.event,
                            r.updated_at,
                        ]
                    },
                )
            }
            RunsCommand::Show { id } => {
                let path = ["v1", "environments", self.env.as_str(), "runs", id.as_str()];
                let answer = self.api.get(&path, &[]).await?;
                if self.json {
                    return output::emit(&output::json(&answer)?);
                }
                let run: Run = parse(&answer)?;
                output::emit(&output::fields(&shown(&run)?))
            }
        }
    }
}

fn status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Queued => "queued",
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
    }
}

/// The lines of `runs show`; the output as pretty JSON.
fn shown(run: &Run) -> Result<Vec<(&'static str, String)>> {
    let mut rows = vec![
        ("id", run.id.clone()),
        ("function", run.function_id.clone()),
        ("environment", run.environment.clone()),
        ("event", run.event.clone()),
        ("status", status_name(run.status).to_owned()),
        ("attempts", run.attempts.to_string()),
        ("created", run.created_at.clone()),
        ("updated", run.updated_at.clone()),
    ];
    if let Some(out) = &run.output {
        rows.push(("output", output::json(out)?.trim_end().to_owned()));
    }
    if let Some(error) = &run.error {
        rows.push(("error", error.clone()));
    }
    Ok(rows)
}
