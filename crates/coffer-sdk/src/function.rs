//! What a handler is written against: its function's definition, the [`Context`] of a run,
//! and the [`Secrets`] and [`Config`] views that tell an undeclared name from one that is
//! declared but not set.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use coffer_wire::{FunctionMode, Job, JobEvent, PutFunction, Trigger};
use serde_json::Value;

/// Starts a function's definition: `function("send-invoice").triggers(["order.created"])
/// .secrets(["STRIPE_KEY"])`.
///
/// The definition is the code's side of the contract: the secrets and config keys it
/// names are the only ones its handler can read ([`SecretError::Undeclared`] for any
/// other), and [`FunctionDef::pull`] / [`FunctionDef::push`] register exactly these with
/// the server, so the two sides agree.
pub fn function(id: impl Into<String>) -> FunctionDef {
    FunctionDef {
        id: id.into(),
        ..FunctionDef::default()
    }
}

/// A function as the code declares it: its id, the events that start it, and the secrets
/// and config keys it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionDef {
    /// The function's id, `^[a-z0-9][a-z0-9_-]{0,62}$`.
    pub id: String,
    /// Events that start a run: exact names or NATS-style patterns (`order.*`, `order.>`).
    pub triggers: Vec<String>,
    /// The secrets the handler reads.
    pub secrets: Vec<String>,
    /// The config keys the handler reads.
    pub config: Vec<String>,
}

impl FunctionDef {
    /// Adds events (or patterns) that start a run.
    pub fn triggers<I, S>(mut self, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.triggers.extend(events.into_iter().map(Into::into));
        self
    }

    /// Declares secrets the handler reads.
    pub fn secrets<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.secrets.extend(names.into_iter().map(Into::into));
        self
    }

    /// Declares config keys the handler reads.
    pub fn config<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.extend(keys.into_iter().map(Into::into));
        self
    }

    /// The registration of this definition as a pull function (workers poll for its
    /// runs), for [`Client::put_function`](crate::Client::put_function).
    pub fn pull(&self) -> PutFunction {
        self.registration(FunctionMode::Pull, None)
    }

    /// The registration of this definition as a push function: Coffer POSTs each run,
    /// signed, to `url` (`https://…`, or `http://127.0.0.1…`/`http://localhost…`).
    pub fn push(&self, url: impl Into<String>) -> PutFunction {
        self.registration(FunctionMode::Push, Some(url.into()))
    }

    fn registration(&self, mode: FunctionMode, url: Option<String>) -> PutFunction {
        PutFunction {
            triggers: self
                .triggers
                .iter()
                .map(|event| Trigger {
                    event: event.clone(),
                })
                .collect(),
            secrets: self.secrets.clone(),
            config: self.config.clone(),
            mode,
            url,
            timeout_ms: None,
            retries: None,
            concurrency: None,
            expected_revision: None,
        }
    }
}

/// What a handler receives for one run.
#[derive(Debug)]
#[non_exhaustive]
pub struct Context {
    /// The run. Delivery is at least once: with `attempt`, what a handler de-duplicates on.
    pub run_id: String,
    /// 1 for the first attempt, +1 per retry or re-lease.
    pub attempt: u32,
    /// The function.
    pub function_id: String,
    /// Its environment.
    pub environment: String,
    /// The event that started the run.
    pub event: JobEvent,
    /// The run's secrets, as the function's definition declares them.
    pub secrets: Secrets,
    /// The run's config values, as the function's definition declares them.
    pub config: Config,
    /// Parameters for the function (orchestration steps); `{}` otherwise.
    pub trigger_params: Value,
}

impl Context {
    /// The context of `job` for the function `def`: what the worker and the push handler
    /// hand a handler, and what a test can build from a [`Job`] of its own. `None` when
    /// the job is not a run's (a resolve answer has no `runId`, `attempt` or `event`).
    pub fn from_job(def: &FunctionDef, job: Job) -> Option<Context> {
        Some(Context {
            run_id: job.run_id?,
            attempt: job.attempt?,
            event: job.event?,
            function_id: job.function_id,
            environment: job.environment,
            secrets: Secrets::new(def.secrets.iter().cloned(), job.secrets),
            config: Config::new(def.config.iter().cloned(), job.config),
            trigger_params: job.trigger_params,
        })
    }
}

/// A run's secrets, seen through the function's declaration.
///
/// [`get`](Secrets::get) tells the two reasons a value is not there apart:
/// [`SecretError::Undeclared`] — the code never declared it, a bug to fix — and
/// [`SecretError::Missing`] — declared, but not set in this environment, which an optional
/// integration can check with [`has`](Secrets::has) and degrade gracefully. A value the
/// job carries for a name the code does not declare stays unreachable. `Debug` shows
/// names only.
#[derive(Clone)]
pub struct Secrets {
    declared: Arc<BTreeSet<String>>,
    values: coffer_wire::Secrets,
}

/// Why [`Secrets::get`] has no value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The function's definition does not declare this secret.
    #[error("secret {0} is not declared by this function")]
    Undeclared(String),
    /// Declared, but not set in the function's environment.
    #[error("secret {0} is declared but not set in this environment")]
    Missing(String),
}

impl Secrets {
    /// The view of `values` for a function that declares `declared`.
    pub fn new<I, S>(declared: I, values: coffer_wire::Secrets) -> Secrets
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Secrets {
            declared: Arc::new(declared.into_iter().map(Into::into).collect()),
            values,
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Result<&str, SecretError> {
        match lookup(&self.declared, name, self.values.get(name)) {
            Ok(value) => Ok(value),
            Err(Absent::Undeclared) => Err(SecretError::Undeclared(name.to_owned())),
            Err(Absent::Missing) => Err(SecretError::Missing(name.to_owned())),
        }
    }

    /// Whether `name` is declared and set.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }

    /// The declared names that are set, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values
            .names()
            .filter(|name| self.declared.contains(*name))
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// A run's config values, seen through the function's declaration: the same rules as
/// [`Secrets`] (config is not secret; `Debug` still shows keys only, to keep logs short).
#[derive(Clone)]
pub struct Config {
    declared: Arc<BTreeSet<String>>,
    values: BTreeMap<String, Value>,
}

/// Why [`Config::get`] has no value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The function's definition does not declare this config key.
    #[error("config key {0} is not declared by this function")]
    Undeclared(String),
    /// Declared, but not set in the function's environment.
    #[error("config key {0} is declared but not set in this environment")]
    Missing(String),
}

impl Config {
    /// The view of `values` for a function that declares `declared`.
    pub fn new<I, S>(declared: I, values: BTreeMap<String, Value>) -> Config
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Config {
            declared: Arc::new(declared.into_iter().map(Into::into).collect()),
            values,
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Result<&Value, ConfigError> {
        match lookup(&self.declared, key, self.values.get(key)) {
            Ok(value) => Ok(value),
            Err(Absent::Undeclared) => Err(ConfigError::Undeclared(key.to_owned())),
            Err(Absent::Missing) => Err(ConfigError::Missing(key.to_owned())),
        }
    }

    /// Whether `key` is declared and set.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_ok()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.values.keys().filter(|k| self.declared.contains(*k)))
            .finish()
    }
}

/// Why a name has no value; the one rule [`Secrets`] and [`Config`] share.
enum Absent {
    Undeclared,
    Missing,
}

fn lookup<'a, V: ?Sized>(
    declared: &BTreeSet<String>,
    name: &str,
    found: Option<&'a V>,
) -> Result<&'a V, Absent> {
    if !declared.contains(name) {
        return Err(Absent::Undeclared);
    }
    found.ok_or(Absent::Missing)
}

/// Why a handler failed. Its message becomes the run's error (the server redacts any
/// secret value in it before storing it).
///
/// Any error type converts into it, so `?` works on them in a handler; for that reason it
/// is not itself a `std::error::Error` (as `anyhow::Error` is not).
pub struct HandlerError {
    message: String,
    permanent: bool,
}

impl HandlerError {
    /// A failure Coffer may retry (a push function answers 500).
    pub fn new(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure retrying will not fix (a push function answers 422, which Coffer does
    /// not retry). A pull run's error is never retried either way.
    pub fn permanent(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            permanent: true,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether it was made by [`HandlerError::permanent`].
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> HandlerError {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        HandlerError::new(message)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message)
            .field("permanent", &self.permanent)
            .finish()
    }
}

/// What a handler returns: its output (the run's output, any JSON) or why it failed.
pub type HandlerResult = Result<Value, HandlerError>;

/// A boxed handler future (`Send`, so runs go to any thread of the runtime).
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A definition and its handler, as the worker and the push handler keep them.
pub(crate) struct Registered {
    pub def: FunctionDef,
    handler: Box<dyn Fn(Context) -> BoxFuture + Send + Sync>,
}

impl Registered {
    pub fn new<F, Fut>(def: FunctionDef, handler: F) -> Arc<Registered>
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        Arc::new(Registered {
            def,
            handler: Box::new(move |ctx| Box::pin(handler(ctx))),
        })
    }

    /// Runs the handler on a task of its own, so a panic fails this run only.
    pub async fn invoke(&self, ctx: Context) -> HandlerResult {
        match tokio::spawn((self.handler)(ctx)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(HandlerError::new("the handler panicked")),
            Err(_) => Err(HandlerError::new("the handler was cancelled")),
        }
    }
}

/// Functions by id; registering an id again replaces the earlier one.
pub(crate) type Registry = BTreeMap<String, Arc<Registered>>;

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn secrets(declared: &[&str], set: &[(&str, &str)]) -> Secrets {
        let mut values = coffer_wire::Secrets::new();
        for (name, value) in set {
            values.insert((*name).to_owned(), SecretString::from(*value));
        }
        Secrets::new(declared.iter().copied(), values)
    }

    #[test]
    fn get_tells_an_undeclared_secret_from_a_missing_one() {
        let s = secrets(&["STRIPE_KEY", "SLACK_WEBHOOK"], &[("STRIPE_KEY", "sk_1")]);
        assert_eq!(s.get("STRIPE_KEY"), Ok("sk_1"));
        assert_eq!(
            s.get("SLACK_WEBHOOK"),
            Err(SecretError::Missing("SLACK_WEBHOOK".into()))
        );
        assert_eq!(
            s.get("GITHUB_TOKEN"),
            Err(SecretError::Undeclared("GITHUB_TOKEN".into()))
        );
    }

    #[test]
    fn has_is_true_only_for_a_declared_secret_that_is_set() {
        let s = secrets(&["A", "B"], &[("A", "1")]);
        assert!(s.has("A"));
        assert!(!s.has("B"), "declared, not set");
        assert!(!s.has("C"), "undeclared");
    }

    #[test]
    fn a_value_the_code_does_not_declare_stays_unreachable() {
        // The server's registration declares OLD_TOKEN; this code no longer does.
        let s = secrets(&["A"], &[("A", "1"), ("OLD_TOKEN", "tok")]);
        assert_eq!(
            s.get("OLD_TOKEN"),
            Err(SecretError::Undeclared("OLD_TOKEN".into()))
        );
        assert!(!s.has("OLD_TOKEN"));
        assert_eq!(s.names().collect::<Vec<_>>(), ["A"]);
    }

    #[test]
    fn debug_shows_names_never_values() {
        let s = secrets(&["A"], &[("A", "hunter2")]);
        let shown = format!("{s:?}");
        assert_eq!(shown, r#"{"A"}"#);
    }

    #[test]
    fn config_follows_the_same_rules() {
        let mut values = BTreeMap::new();
        values.insert("region".to_owned(), Value::from("eu"));
        let c = Config::new(["region", "limits"], values);
        assert_eq!(c.get("region"), Ok(&Value::from("eu")));
        assert_eq!(c.get("limits"), Err(ConfigError::Missing("limits".into())));
        assert_eq!(c.get("other"), Err(ConfigError::Undeclared("other".into())));
        assert!(c.has("region") && !c.has("limits") && !c.has("other"));
    }

    #[test]
    fn a_handler_can_use_question_mark_on_a_secret_error() {
        fn handler(s: &Secrets) -> Result<usize, HandlerError> {
            Ok(s.get("NOPE")?.len())
        }
        let e = handler(&secrets(&[], &[])).unwrap_err();
        assert_eq!(e.message(), "secret NOPE is not declared by this function");
        assert!(!e.is_permanent());
    }

    #[test]
    fn a_definition_registers_exactly_what_it_declares() {
        let def = function("send-invoice")
            .triggers(["order.created"])
            .secrets(["STRIPE_KEY"])
            .config(["region"]);
        let put = def.push("https://example.com/coffer");
        assert_eq!(
            serde_json::to_value(&put).unwrap(),
            serde_json::json!({
                "triggers": [{"event": "order.created"}],
                "secrets": ["STRIPE_KEY"],
                "config": ["region"],
                "mode": "push",
                "url": "https://example.com/coffer",
            })
        );
        assert_eq!(def.pull().mode, FunctionMode::Pull);
        assert_eq!(def.pull().url, None);
    }

    #[test]
    fn a_context_needs_a_runs_job() {
        let def = function("f").secrets(["A"]);
        let job = |run_id: Option<&str>| Job {
            run_id: run_id.map(str::to_owned),
            function_id: "f".into(),
            environment: "prod".into(),
            attempt: Some(2),
            event: Some(JobEvent {
                name: "e".into(),
                data: Value::Null,
            }),
            secrets: coffer_wire::Secrets::new(),
            config: BTreeMap::new(),
            trigger_params: serde_json::json!({}),
        };
        let ctx = Context::from_job(&def, job(Some("run_1"))).unwrap();
        assert_eq!((ctx.run_id.as_str(), ctx.attempt), ("run_1", 2));
        assert_eq!(ctx.secrets.get("A"), Err(SecretError::Missing("A".into())));
        assert!(Context::from_job(&def, job(None)).is_none());
    }
}
