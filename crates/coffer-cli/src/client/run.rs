//! `coffer run --function ID [--only NAME…] [--watch] -- CMD ARGS`: CMD with a function's
//! declared secrets and config keys added to its environment, supervised.
//!
//! - The values come from `POST …/functions/{id}/resolve` with a runtime key, read straight
//!   into `SecretString`s (never a `serde_json::Value`), handed to the child's environment
//!   at spawn, and dropped (wiped) right after: never in argv, never on disk. The
//!   `Command` that copied them is dropped at once too (its copies are freed, though the
//!   standard library does not wipe them).
//! - Everything that can refuse (no key, a key that may not resolve, an unknown function,
//!   an undeclared `--only` name) fails before CMD starts.
//! - SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on to CMD; coffer exits when CMD does,
//!   with its exit code (128+N when signal N ended it, as shells report it). Ctrl-C and
//!   Ctrl-\ typed at the terminal that CMD shares with coffer already reach CMD, so they
//!   are not sent a second time.
//! - `--watch` resolves again every `--watch-interval` and keeps only a SHA-256 of each
//!   value to compare; when one changed, appeared or went away it restarts CMD: SIGTERM,
//!   `--grace-period`, SIGKILL, then CMD again with the new values. It polls because the
//!   event stream, which would say when to look, is closed to runtime keys.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use coffer_core::{EnvName, SecretName};
use coffer_store::FunctionId;
use coffer_wire::{Job, Resolve};
use reqwest::StatusCode;
use rustix::process::{Pid, Signal};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::signal::unix::SignalKind;
use tokio::sync::mpsc;

use super::exit::{CommandNotStarted, usage};
use super::http::{ApiError, JsonBody};
use super::{GlobalArgs, Session};

/// `coffer run`'s own arguments (the client options come with them).
#[derive(clap::Args)]
pub struct RunArgs {
    /// The function whose declared secrets and config keys CMD gets.
    #[arg(long, value_name = "ID", value_parser = FunctionId::new)]
    function: FunctionId,
    /// Only these of the function's declared secrets (repeat, or separate with commas);
    /// its declared config keys come all the same.
    #[arg(long, value_name = "NAME", value_delimiter = ',', value_parser = SecretName::new)]
    only: Vec<SecretName>,
    /// Restart CMD when a value it got changes (set, deleted or updated), checked by
    /// resolving again every --watch-interval.
    #[arg(long)]
    watch: bool,
    /// Let CMD get this variable although it changes how programs are found or loaded
    /// (`PATH`, `LD_PRELOAD`, `NODE_OPTIONS`, …): without it such a declared secret or
    /// config key stops `coffer run` before CMD starts (repeat, or separate with commas).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    allow_env: Vec<String>,
    /// Seconds between two checks of --watch (each one is an audited resolution).
    #[arg(long, value_name = "SECONDS", default_value = "5", requires = "watch", value_parser = watch_interval)]
    watch_interval: Duration,
    /// Seconds CMD has to exit after SIGTERM when --watch restarts it, before SIGKILL.
    #[arg(long, value_name = "SECONDS", default_value = "10", requires = "watch", value_parser = grace_period)]
    grace_period: Duration,
    /// The command to run and its arguments, best after `--`: everything from CMD on is
    /// CMD's, flags included.
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

/// `coffer run`: resolves, starts CMD, supervises it; CMD's exit code.
pub async fn run(global: GlobalArgs, args: RunArgs) -> Result<ExitCode> {
    let session = Session::open_for_runtime(global)
        .context("coffer run needs a runtime key of the environment; CMD was not started")?;
    let session = Arc::new(session);
    let job = session
        .resolve(&args.function, &args.only)
        .await
        .map_err(|e| not_started(e, &session.env, &args.function))?;
    for key in job.config.keys().filter(|k| job.secrets.contains(k)) {
        eprintln!(
            "coffer: {key} is both a declared secret and a declared config key: CMD gets the secret"
        );
    }
    // Handlers go in before CMD exists, so no signal meant for it can end coffer instead.
    let mut signals = Signals::install()?;
    let baseline = Fingerprint::of(&job);
    let mut child = spawn(&args.command, job, &args.allow_env)?;
    let mut changes = Changes(args.watch.then(|| {
        watch(
            Arc::clone(&session),
            args.function.clone(),
            args.only.clone(),
            args.watch_interval,
            baseline,
        )
    }));
    loop {
        tokio::select! {
            status = child.wait() => {
                return Ok(exit_code(status.context("cannot wait for CMD")?));
            }
            signal = signals.recv() => signals.pass_on(&child, signal),
            Some(change) = changes.next() => {
                match restart(child, change, &mut changes, &mut signals, &args).await? {
                    Restarted::Running(next) => child = next,
                    Restarted::Ended(status) => return Ok(exit_code(status)),
                }
            }
        }
    }
}

impl Session {
    /// The function's declared secrets (only `only`, when given) and config keys.
    async fn resolve(&self, function: &FunctionId, only: &[SecretName]) -> Result<Job> {
        let body = Resolve {
            only: (!only.is_empty()).then(|| only.iter().map(|n| n.as_str().to_owned()).collect()),
        };
        let path = [
            "v1",
            "environments",
            self.env.as_str(),
            "functions",
            function.as_str(),
            "resolve",
        ];
        self.api
            .post_receiving_values(&path, JsonBody::new(&body, 0)?)
            .await
    }
}

/// A failed resolution before CMD started, with what to do about it.
fn not_started(e: anyhow::Error, env: &EnvName, function: &FunctionId) -> anyhow::Error {
    let status = e.downcast_ref::<ApiError>().map(|api| api.status);
    let why = match status {
        Some(StatusCode::FORBIDDEN) => format!(
            "coffer run needs a runtime key of {env}: admin and manage keys never receive values, and a runtime key resolves only in its own environment (create one with `coffer apikey create NAME --role runtime --env {env}`)"
        ),
        Some(StatusCode::UNAUTHORIZED) => "the server does not accept this API key".to_owned(),
        _ => format!("cannot resolve the secrets of function {function} in {env}"),
    };
    e.context(format!("{why}; CMD was not started"))
}

/// Starts CMD with the job's values added to coffer's own environment (less
/// `COFFER_API_KEY`: CMD gets what the function declares, not a key that resolves any
/// function of the environment). The values are dropped here, right after the spawn.
fn spawn(command: &[OsString], job: Job, allowed: &[String]) -> Result<Child> {
    let Some((program, args)) = command.split_first() else {
        return Err(usage("no CMD to run: give it after `--`"));
    };
    // Names that decide which program runs or what it loads: the function's declaration
    // (written by admin and manage keys) must not pick them for this host unasked.
    if let Some(name) = variables(&job)
        .keys()
        .find(|name| steers_execution(name) && !allowed.iter().any(|a| a == *name))
    {
        return Err(usage(format!(
            "the function declares {name}, which changes how programs are found or loaded; CMD was not started (allow it with --allow-env {name})"
        )));
    }
    let mut cmd = Command::new(program);
    cmd.args(args).env_remove("COFFER_API_KEY");
    for (name, value) in variables(&job) {
        cmd.env(name, value.as_ref());
    }
    let spawned = cmd.spawn();
    drop(cmd);
    drop(job);
    spawned.map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => CommandNotStarted::NOT_FOUND,
            _ => CommandNotStarted::NOT_EXECUTABLE,
        };
        CommandNotStarted {
            message: format!("cannot start {}: {e}", program.to_string_lossy()),
            code,
        }
        .into()
    })
}

/// Whether the variable `name` changes which program runs or what it loads.
fn steers_execution(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "IFS",
        "ENV",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "RUBYLIB",
        "RUBYOPT",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        "GIT_SSH_COMMAND",
        "GIT_EXEC_PATH",
        "HOME",
        "SHELL",
        "TMPDIR",
    ];
    NAMES.contains(&name) || name.starts_with("LD_") || name.starts_with("DYLD_")
}

/// The variables CMD gets: declared config keys (strings as they are, other JSON as
/// compact JSON text), then declared secrets, which win over a config key of the same name.
fn variables(job: &Job) -> BTreeMap<&str, Cow<'_, str>> {
    let mut vars: BTreeMap<&str, Cow<'_, str>> = job
        .config
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(other.to_string()),
            };
            (key.as_str(), text)
        })
        .collect();
    vars.extend(job.secrets.iter().map(|(k, v)| (k, Cow::Borrowed(v))));
    vars
}

/// CMD's exit code as coffer's: its own, or 128+N when signal N ended it.
fn exit_code(status: ExitStatus) -> ExitCode {
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    };
    ExitCode::from(code)
}

/// A SHA-256 of each value CMD got, by variable name: what `--watch` compares, so that the
/// values themselves need not be kept.
struct Fingerprint(BTreeMap<String, String>);

impl Fingerprint {
    fn of(job: &Job) -> Fingerprint {
        Fingerprint(
            variables(job)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), coffer_crypto::sha256_hex(value.as_bytes())))
                .collect(),
        )
    }

    /// The names whose value changed, appeared or went away since `self`.
    fn changed(&self, now: &Fingerprint) -> Vec<String> {
        let names: BTreeSet<&String> = self.0.keys().chain(now.0.keys()).collect();
        names
            .into_iter()
            .filter(|name| self.0.get(*name) != now.0.get(*name))
            .cloned()
            .collect()
    }
}

/// New values, found by `--watch`: CMD is restarted with them.
struct Change {
    job: Job,
    names: Vec<String>,
}

/// Resolves every `interval` and sends the job when a fingerprint differs from the last
/// one. A failed check is reported once (until it succeeds again); CMD keeps running with
/// the values it has.
fn watch(
    session: Arc<Session>,
    function: FunctionId,
    only: Vec<SecretName>,
    interval: Duration,
    mut last: Fingerprint,
) -> mpsc::Receiver<Change> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut failing: Option<String> = None;
        loop {
            tokio::time::sleep(interval).await;
            match session.resolve(&function, &only).await {
                Ok(job) => {
                    if failing.take().is_some() {
                        eprintln!("coffer: --watch checks for changes again");
                    }
                    let now = Fingerprint::of(&job);
                    let names = last.changed(&now);
                    if names.is_empty() {
                        continue;
                    }
                    last = now;
                    if tx.send(Change { job, names }).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    if failing.as_deref() != Some(text.as_str()) {
                        eprintln!(
                            "coffer: --watch cannot check for changes ({text}); CMD keeps running with the values it has"
                        );
                        failing = Some(text);
                    }
                }
            }
        }
    });
    rx
}

/// What `--watch` found; nothing ever, without `--watch`.
struct Changes(Option<mpsc::Receiver<Change>>);

impl Changes {
    /// The next change.
    async fn next(&mut self) -> Option<Change> {
        match &mut self.0 {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// The job of the newest change already found, if any, else `job`.
    fn newest(&mut self, mut job: Job) -> Job {
        if let Some(rx) = &mut self.0 {
            while let Ok(newer) = rx.try_recv() {
                job = newer.job;
            }
        }
        job
    }
}

/// How a restart ended.
enum Restarted {
    /// CMD runs again, with the new values.
    Running(Child),
    /// A signal came while CMD was stopping: coffer ends with it, and this is its status.
    Ended(ExitStatus),
}

/// Stops CMD (SIGTERM; SIGKILL after the grace period) and starts it again with the
/// newest values. A signal coffer receives meanwhile is passed on and cancels the restart.
async fn restart(
    mut child: Child,
    change: Change,
    changes: &mut Changes,
    signals: &mut Signals,
    args: &RunArgs,
) -> Result<Restarted> {
    eprintln!(
        "coffer: {} changed: restarting CMD (SIGTERM, SIGKILL after {} s)",
        change.names.join(", "),
        args.grace_period.as_secs_f64()
    );
    send(&child, Signal::TERM);
    let deadline = tokio::time::Instant::now() + args.grace_period;
    let mut killed = false;
    let mut cancelled = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("cannot wait for CMD")?,
            signal = signals.recv() => {
                signals.pass_on(&child, signal);
                cancelled = true;
            }
            () = tokio::time::sleep_until(deadline), if !killed => {
                eprintln!("coffer: CMD did not exit within the grace period: SIGKILL");
                // An error means it exited meanwhile: `wait` says so next.
                let _ = child.start_kill();
                killed = true;
            }
        }
    };
    if cancelled {
        return Ok(Restarted::Ended(status));
    }
    // The new values waited here (in wiped-on-drop buffers) for at most the grace period,
    // so that CMD is never left stopped for want of a second resolution. A newer change
    // found meanwhile: start with its values instead.
    let job = changes.newest(change.job);
    Ok(Restarted::Running(spawn(
        &args.command,
        job,
        &args.allow_env,
    )?))
}

/// The signals coffer passes on to CMD.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    /// The controlling terminal, if any: to tell whether it delivered a signal to CMD.
    tty: Option<File>,
}

impl Signals {
    fn install() -> Result<Signals> {
        let install =
            |kind| tokio::signal::unix::signal(kind).context("cannot set up signal handling");
        Ok(Signals {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
            quit: install(SignalKind::quit())?,
            tty: File::open("/dev/tty").ok(),
        })
    }

    /// The next signal received.
    async fn recv(&mut self) -> Signal {
        tokio::select! {
            Some(()) = self.interrupt.recv() => Signal::INT,
            Some(()) = self.terminate.recv() => Signal::TERM,
            Some(()) = self.hangup.recv() => Signal::HUP,
            Some(()) = self.quit.recv() => Signal::QUIT,
            else => std::future::pending().await,
        }
    }

    /// Sends `signal` on to CMD, unless the terminal already did: Ctrl-C (SIGINT) and
    /// Ctrl-\ (SIGQUIT) go to the terminal's whole foreground process group, CMD included
    /// when coffer is in it, and a second one would make many programs skip their cleanup.
    fn pass_on(&self, child: &Child, signal: Signal) {
        let from_terminal = (signal == Signal::INT || signal == Signal::QUIT)
            && self.tty.as_ref().is_some_and(|tty| {
                rustix::termios::tcgetpgrp(tty).is_ok_and(|fg| fg == rustix::process::getpgrp())
            });
        if !from_terminal {
            send(child, signal);
        }
    }
}

/// Sends `signal` to CMD if it has not been reaped yet (so its pid cannot be another
/// process's). An error means it exited meanwhile: `wait` says so next.
fn send(child: &Child, signal: Signal) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// `--watch-interval`: at least 0.1 s (each check is an audited resolution), at most a day.
fn watch_interval(raw: &str) -> Result<Duration, String> {
    seconds(raw, 0.1, 86_400.0)
}

/// `--grace-period`: 0 (SIGKILL at once) to an hour.
fn grace_period(raw: &str) -> Result<Duration, String> {
    seconds(raw, 0.0, 3_600.0)
}

fn seconds(raw: &str, min: f64, max: f64) -> Result<Duration, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|s| (min..=max).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("a number of seconds from {min} to {max} (2, 0.5)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use secrecy::SecretString;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    fn job(secrets: &[(&str, &str)], config: Value) -> Job {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "functionId": "f",
            "environment": "default",
            "secrets": {},
            "config": config,
        }))
        .unwrap();
        for (name, value) in secrets {
            job.secrets
                .insert((*name).to_owned(), SecretString::from(*value));
        }
        job
    }

    #[test]
    fn config_strings_go_as_they_are_and_other_json_as_compact_text() {
        let job = job(
            &[("TOKEN", "s3cret"), ("REGION", "from-secret")],
            serde_json::json!({"REGION": "eu", "LIMITS": {"rps": 5}, "N": 3, "NAME": "x y"}),
        );
        let vars = variables(&job);
        assert_eq!(vars["TOKEN"], "s3cret");
        assert_eq!(vars["REGION"], "from-secret", "a secret wins over config");
        assert_eq!(vars["LIMITS"], r#"{"rps":5}"#);
        assert_eq!(vars["N"], "3");
        assert_eq!(vars["NAME"], "x y");
    }

    #[test]
    fn fingerprints_name_what_changed_appeared_or_went_away() {
        let config = serde_json::json!({"C": 1});
        let before = Fingerprint::of(&job(&[("A", "1"), ("B", "2")], config.clone()));
        let same = Fingerprint::of(&job(&[("A", "1"), ("B", "2")], config.clone()));
        assert!(before.changed(&same).is_empty());
        let after = Fingerprint::of(&job(&[("B", "3"), ("D", "4")], serde_json::json!({"C": 2})));
        assert_eq!(before.changed(&after), ["A", "B", "C", "D"]);
        assert!(
            !before.0.values().any(|d| d == "1" || d == "2"),
            "only digests are kept"
        );
    }

    #[test]
    fn exit_codes_are_the_childs_or_128_plus_its_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), ExitCode::from(7));
        assert_eq!(exit_code(ExitStatus::from_raw(0)), ExitCode::SUCCESS);
        // Killed by SIGTERM (15).
        assert_eq!(exit_code(ExitStatus::from_raw(15)), ExitCode::from(143));
    }

    #[test]
    fn cmd_is_everything_from_its_first_word_on_and_watch_options_need_watch() {
        let parsed = Cli::try_parse_from(["run", "--function", "f", "--", "env", "-0"]).unwrap();
        assert_eq!(parsed.args.command, ["env", "-0"]);
        assert_eq!(parsed.args.watch_interval, Duration::from_secs(5));
        let bare = Cli::try_parse_from(["run", "--function", "f", "env", "--json"]).unwrap();
        assert_eq!(
            bare.args.command,
            ["env", "--json"],
            "CMD's flags are CMD's"
        );
        assert!(Cli::try_parse_from(["run", "--function", "f"]).is_err());
        assert!(
            Cli::try_parse_from(["run", "--function", "f", "--watch-interval", "1", "--", "x"])
                .is_err()
        );
        let watched = Cli::try_parse_from([
            "run",
            "--function",
            "f",
            "--watch",
            "--watch-interval",
            "0.5",
            "--grace-period",
            "0",
            "--only",
            "A,B",
            "--",
            "x",
        ])
        .unwrap();
        assert_eq!(watched.args.watch_interval, Duration::from_millis(500));
        assert_eq!(watched.args.grace_period, Duration::ZERO);
        assert_eq!(watched.args.only.len(), 2);
        assert!(
            Cli::try_parse_from([
                "run",
                "--function",
                "f",
                "--watch",
                "--watch-interval",
                "0",
                "--",
                "x"
            ])
            .is_err()
        );
    }
}
