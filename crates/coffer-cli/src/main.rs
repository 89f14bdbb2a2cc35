//! `coffer`: the server (`coffer serve`) and the command-line client, in one binary.
//! This file only parses arguments, sets up logging and dispatches.

#![forbid(unsafe_code)]

mod client;
mod serve;

use std::process::ExitCode;

use clap::Parser;

/// Coffer: secrets for functions and workflows.
#[derive(Parser)]
#[command(
    name = "coffer",
    version,
    about = "Coffer: secrets for functions and workflows. Values are write-only here.",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API (generated here; no server needed).
    Openapi,
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Openapi => {
                let document = coffer_api::openapi().to_pretty_json()?;
                std::io::Write::write_all(
                    &mut std::io::stdout(),
                    format!("{document}\n").as_bytes(),
                )?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Client(cmd) => client::run(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
