//! `coffer`: the server (`coffer serve`) and the command-line client, in one binary.
//! This file only parses arguments, sets up logging and dispatches.

#![forbid(unsafe_code)]

mod backend;
mod client;
mod migrate;
mod serve;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

/// mimalloc instead of the system allocator: the server allocates and frees many small
/// buffers per request on several threads, where glibc's malloc spent about a sixth of the
/// runtime plane's CPU time (docs/BENCHMARKS.md, issue 9).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Coffer: secrets for functions and workflows.
#[derive(Parser)]
#[command(
    name = "coffer",
    version,
    about = "Coffer: secrets for functions and workflows. Values are write-only here.",
    propagate_version = true,
    after_help = "Examples:
  coffer serve                                   # the server, on 127.0.0.1:8720
  coffer login                                   # store an API key for this user
  coffer secret set STRIPE_KEY --env production < stripe-key.txt
  coffer secret list --env production
  coffer run --env production --function api -- ./server   # with a runtime key

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 no access, 5 conflict,
6 broken: audit log chain or unreadable values; coffer run: CMD's code once it
started, 126/127 when it could not (docs/CLI.md)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run the server.
    #[command(after_help = "Examples:
  coffer serve
  COFFER_MASTER_KEY=$(cat master.key) coffer serve --listen 0.0.0.0:8720 --data-dir /var/lib/coffer")]
    Serve(serve::ServeArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API (generated here; no server needed).
    #[command(after_help = "Examples:
  coffer openapi > openapi.json
  coffer openapi | jq '.paths | keys'")]
    Openapi,
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Secret-value backends: move every value to another one.
    Backend {
        #[command(subcommand)]
        command: migrate::BackendCommand,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  coffer completions bash > ~/.local/share/bash-completion/completions/coffer
  coffer completions zsh > \"${fpath[1]}/_coffer\"
  coffer completions fish > ~/.config/fish/completions/coffer.fish")]
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Completions { shell } => return completions(shell),
        Command::Serve(args) => block_on(serve::run(args)),
        Command::Openapi => openapi(),
        Command::Client(cmd) => block_on(client::run(cmd)),
        Command::Backend { command } => block_on(migrate::run(command)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // One table for every command (docs/CLI.md); serve's errors are all 1.
            client::exit_code(&e)
        }
    }
}

/// Runs `task` on a multi-threaded tokio runtime.
fn block_on(task: impl Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(task)
}

/// `coffer openapi`: the document, generated in-process, on stdout.
fn openapi() -> anyhow::Result<ExitCode> {
    let document = coffer_api::openapi().to_pretty_json()?;
    std::io::stdout()
        .lock()
        .write_all(format!("{document}\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `coffer completions SHELL`: the script on stdout.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    // Into a buffer first: clap_complete panics on a closed pipe (`… | head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "coffer", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks (e.g. a positional argument and a global flag that
    /// share a name) fail here rather than at run time.
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
