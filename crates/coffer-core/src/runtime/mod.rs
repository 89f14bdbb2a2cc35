//! The runtime plane: functions declare the secrets they need; a run (pushed to the
//! function's URL, or leased by a pull worker) and `coffer run` receive exactly those.
//!
//! Values are resolved when a job is handed over (a rotation between an event and its
//! delivery delivers the new value), each resolution is audited before anything is handed
//! over, and whatever a run returns is redacted before it is stored.
//!
//! Changes go through commands (`crate::commands::{PutFunction, SendEvent, PollRun, …}`);
//! this module holds what they share: checking a definition, matching triggers, building
//! a job, and the reads. The push dispatcher is [`push`].

pub mod push;
pub(crate) mod waiters;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use coffer_crypto::Keyring;
use coffer_store::{
    ConfigKey, EnvId, EnvName, Environment, FunctionId, FunctionRecord, PageSize, Resolution,
    RunFilter, RunId, RunRecord, SecretName, StoredValue, SubjectPattern, Timestamp,
};
use coffer_wire::{FunctionMode, FunctionSpec, Job, JobEvent, PutFunction, Secrets};
use secrecy::{ExposeSecret, SecretString};

use crate::service::{Page, open_stored};
use crate::{Coffer, CoreError, Principal};

/// How the runtime plane behaves on this node.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Hosts push URLs may name besides this machine (`COFFER_PUSH_ALLOWED_HOSTS`): exact
    /// names or addresses, or `*.example.com` for any name under it. Empty: only
    /// 127.0.0.1, `[::1]` and localhost. A push function hands its declared secrets to its
    /// URL, so this list — set by the operator, not through the API — is what keeps an
    /// admin or manage key from sending them anywhere else.
    pub push_allowed_hosts: Vec<String>,
    /// Accept `http://` (not only `https://`) push URLs to allowed hosts
    /// (`COFFER_ALLOW_HTTP_TARGETS`); `http://` to this machine is always accepted.
    pub allow_http_targets: bool,
    /// Push deliveries in flight at once on this node, all functions together.
    pub push_concurrency: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            push_allowed_hosts: Vec::new(),
            allow_http_targets: false,
            push_concurrency: 256,
        }
    }
}

/// Polls waiting for a job at once on one node; past it a poll is refused with 503
/// `overloaded` rather than held.
pub const MAX_WAITING_POLLS: usize = 1024;

/// Large redactions of what a run reported made at once on a node: for a long enough text
/// each builds automata of about 190 bytes per value byte (64 declared values of 64 KiB:
/// ~770 MiB and seconds of CPU), so completions sent at once wait here rather than each
/// building its own.
pub const MAX_REDACTIONS: usize = 2;

/// The redactor's needle bytes up to which a redaction runs on the request's task: building
/// and searching them costs less than a hand-off to the blocking pool (twenty 30-byte
/// values: ~0.2 ms to build).
const INLINE_REDACTION_BYTES: usize = 4096;

/// The text bytes up to which a redaction runs on the request's task: searching 1 MiB takes
/// 40 to 70 ms, which would hold a worker of the runtime (of two) that long; 16 KiB takes
/// about 1 ms.
const INLINE_TEXT_BYTES: usize = 16 * 1024;

/// How long a large redaction waits for a place before its request is refused as overloaded.
const REDACTION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Bounds the large redactions of a node ([`MAX_REDACTIONS`]) and moves them off the
/// runtime's workers.
pub(crate) struct RedactionGate {
    places: Arc<tokio::sync::Semaphore>,
    /// How long a redaction waits for a place ([`REDACTION_WAIT`]).
    wait: std::time::Duration,
}

impl RedactionGate {
    fn new(places: usize, wait: std::time::Duration) -> RedactionGate {
        RedactionGate {
            places: Arc::new(tokio::sync::Semaphore::new(places)),
            wait,
        }
    }

    /// Runs `redact` with `redactor` over `text_bytes` of text: on the task for a few short
    /// needles in a short text (most runs: no wait, no hand-off), else in one of the gate's
    /// places on the blocking pool (a worker of the runtime is not held for the
    /// milliseconds to seconds large values or texts take, and no more than
    /// [`MAX_REDACTIONS`] of their automata exist at once).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        redactor: crate::redact::Redactor,
        text_bytes: usize,
        redact: impl FnOnce(&crate::redact::Redactor) -> T + Send + 'static,
    ) -> Result<T, CoreError> {
        if redactor.needle_bytes() <= INLINE_REDACTION_BYTES && text_bytes <= INLINE_TEXT_BYTES {
            return Ok(redact(&redactor));
        }
        // A bounded wait: completions sent at once past the places are refused (503), not
        // queued without end, each holding its report and its values.
        let place = tokio::time::timeout(self.wait, self.places.clone().acquire_owned())
            .await
            .map_err(|_| CoreError::Store(coffer_store::StoreError::Overloaded))?
            .expect("the redaction gate is never closed");
        let done = tokio::task::spawn_blocking(move || {
            let done = redact(&redactor);
            drop((redactor, place));
            done
        })
        .await;
        match done {
            Ok(done) => Ok(done),
            // A panic in the redaction goes on as the panic it was.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(CoreError::Store(coffer_store::StoreError::Unavailable(
                "the server is shutting down".into(),
            ))),
        }
    }
}

/// Most functions one environment may have (an event is matched against all of them).
pub const MAX_FUNCTIONS_PER_ENVIRONMENT: usize = 1000;

/// Largest event data, bytes of compact JSON.
pub const MAX_EVENT_DATA_BYTES: usize = 64 * 1024;

/// Largest stored run output (bytes of JSON) or error (bytes of text); longer ones are cut.
pub const MAX_RUN_RESULT_BYTES: usize = 256 * 1024;

/// The runtime plane's state on this node.
pub(crate) struct Runtime {
    pub(crate) options: RuntimeOptions,
    /// Woken when this node queues push runs.
    pub(crate) push_wake: tokio::sync::Notify,
    /// The pull polls waiting on this node: a run this node queues wakes one of them.
    pub(crate) pull_waiters: waiters::PullWaiters,
    /// Places for waiting polls.
    pub(crate) polls: Arc<tokio::sync::Semaphore>,
    /// The runs this node's polls are building jobs for, or leased lately.
    pub(crate) claims: waiters::Claims,
    /// Woken when this node starts an orchestration run or records a decision.
    pub(crate) flow_wake: tokio::sync::Notify,
    /// The redactions of what pull workers report.
    pub(crate) redactions: RedactionGate,
    /// Functions' parsed definitions.
    pub(crate) specs: SpecCache,
    /// The push dispatcher running on this node, to hand it the push runs a send leases
    /// as it inserts them; `None` when none runs.
    handoff: std::sync::Mutex<Option<Arc<push::Handoff>>>,
}

impl Runtime {
    /// The running push dispatcher's [`push::Handoff`], if one runs.
    pub(crate) fn handoff(&self) -> Option<Arc<push::Handoff>> {
        self.handoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Set by the push dispatcher as it starts, cleared as it stops.
    fn set_handoff(&self, handoff: Option<Arc<push::Handoff>>) {
        *self.handoff.lock().unwrap_or_else(|p| p.into_inner()) = handoff;
    }

    /// Wakes this node's orchestration machine.
    pub(crate) fn wake_flows(&self) {
        self.flow_wake.notify_one();
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            options: RuntimeOptions::default(),
            push_wake: tokio::sync::Notify::new(),
            pull_waiters: waiters::PullWaiters::default(),
            polls: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING_POLLS)),
            claims: waiters::Claims::default(),
            flow_wake: tokio::sync::Notify::new(),
            redactions: RedactionGate::new(MAX_REDACTIONS, REDACTION_WAIT),
            specs: SpecCache::default(),
            handoff: std::sync::Mutex::new(None),
        }
    }
}

/// A function with its parsed definition.
#[derive(Debug)]
pub struct FunctionView {
    /// As stored.
    pub record: FunctionRecord,
    /// Its definition, parsed (shared by every view of the same stored text).
    pub spec: Arc<ParsedSpec>,
}

impl FunctionView {
    /// Parses `record`'s definition, without [`SpecCache`] (a function being written or
    /// deleted, a page of the listing: read once, not worth an entry).
    pub(crate) fn new(record: FunctionRecord) -> Result<Self, CoreError> {
        let spec = Arc::new(ParsedSpec::parse(&record)?);
        Ok(FunctionView { record, spec })
    }
}

/// A function's definition as parsed from its stored text, with its triggers compiled.
#[derive(Debug)]
pub struct ParsedSpec {
    spec: FunctionSpec,
    triggers: Vec<SubjectPattern>,
}

impl ParsedSpec {
    fn parse(record: &FunctionRecord) -> Result<Self, CoreError> {
        let spec: FunctionSpec = serde_json::from_str(&record.spec).map_err(|_| {
            CoreError::Store(coffer_store::StoreError::Corrupt(format!(
                "function {} has a definition Coffer did not write",
                record.id
            )))
        })?;
        Ok(ParsedSpec::of(spec))
    }

    /// `spec` with its triggers compiled (a trigger that does not compile matches nothing;
    /// registration refuses one).
    pub(crate) fn of(spec: FunctionSpec) -> Self {
        let triggers = spec
            .triggers
            .iter()
            .filter_map(|t| SubjectPattern::new(&t.event).ok())
            .collect();
        ParsedSpec { spec, triggers }
    }

    /// Whether a trigger matches the event `name`.
    pub(crate) fn triggered_by(&self, name: &str) -> bool {
        self.triggers.iter().any(|p| p.matches(name))
    }
}

impl std::ops::Deref for ParsedSpec {
    type Target = FunctionSpec;

    fn deref(&self) -> &FunctionSpec {
        &self.spec
    }
}

/// Most bytes of definition text [`SpecCache`] holds; past it, it starts over.
const SPEC_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Parsed definitions by their stored text: an event's send matches every function of its
/// environment, and each run reads its function, so parsing the same JSON again (and
/// compiling its triggers) on every one was a measurable share of the runtime plane's
/// time. Keyed by the text itself, so an entry is right whatever row it came from; bounded
/// by [`SPEC_CACHE_BYTES`] of text.
#[derive(Default)]
pub(crate) struct SpecCache {
    map: std::sync::Mutex<(usize, HashMap<String, Arc<ParsedSpec>>)>,
}

impl SpecCache {
    /// `record` with its parsed definition, parsed now only if no view of the same text
    /// was made lately.
    pub(crate) fn view(&self, record: FunctionRecord) -> Result<FunctionView, CoreError> {
        let lock = || self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(spec) = lock().1.get(&record.spec).cloned() {
            return Ok(FunctionView { record, spec });
        }
        let spec = Arc::new(ParsedSpec::parse(&record)?);
        let len = record.spec.len();
        if len > SPEC_CACHE_BYTES {
            return Ok(FunctionView { record, spec });
        }
        let dropped = {
            let mut map = lock();
            let (bytes, entries) = &mut *map;
            let dropped = (*bytes + len > SPEC_CACHE_BYTES).then(|| {
                *bytes = 0;
                std::mem::take(entries)
            });
            if entries.insert(record.spec.clone(), spec.clone()).is_none() {
                *bytes += len;
            }
            dropped
        };
        // Freed outside the lock.
        drop(dropped);
        Ok(FunctionView { record, spec })
    }
}

/// An event name: 1-255 characters, dot-separated tokens of letters, digits, `_` and `-`.
pub fn check_event_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(CoreError::Invalid(format!(
            "event name {:?} is invalid: use 1-255 characters, dot-separated tokens of letters, digits, '_' and '-'",
            name.chars().take(64).collect::<String>()
        )))
    }
}

/// A trigger: an event name, or a pattern where a token is `*` (one token) or a last `>`
/// (one or more).
fn check_trigger(pattern: &str) -> Result<SubjectPattern, CoreError> {
    let tokens_ok = pattern.split('.').enumerate().all(|(i, t)| {
        let last = i + 1 == pattern.split('.').count();
        t == "*"
            || (t == ">" && last)
            || (!t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    });
    if pattern.is_empty() || pattern.len() > 255 || !tokens_ok {
        return Err(CoreError::Invalid(format!(
            "trigger {:?} is invalid: dot-separated tokens of letters, digits, '_' and '-', where '*' stands for one token and a last '>' for the rest",
            pattern.chars().take(64).collect::<String>()
        )));
    }
    SubjectPattern::new(pattern).map_err(CoreError::Invalid)
}

/// Checks a definition and fills in its defaults.
pub(crate) fn check_function(
    body: &PutFunction,
    options: &RuntimeOptions,
) -> Result<FunctionSpec, CoreError> {
    let spec = body.spec();
    let invalid = |m: String| Err(CoreError::Invalid(m));
    let max = coffer_wire::MAX_DECLARED;
    if spec.triggers.len() > max || spec.secrets.len() > max || spec.config.len() > max {
        return invalid(format!(
            "a function declares at most {max} triggers, {max} secrets and {max} config keys"
        ));
    }
    for t in &spec.triggers {
        check_trigger(&t.event)?;
    }
    let mut seen = HashSet::new();
    for s in &spec.secrets {
        SecretName::new(s).map_err(|e| CoreError::Invalid(e.to_string()))?;
        if !seen.insert(s.as_str()) {
            return invalid(format!("secret {s} is declared twice"));
        }
    }
    let mut seen = HashSet::new();
    for k in &spec.config {
        ConfigKey::new(k).map_err(|e| CoreError::Invalid(e.to_string()))?;
        if !seen.insert(k.as_str()) {
            return invalid(format!("config key {k} is declared twice"));
        }
    }
    if !(1..=coffer_wire::MAX_TIMEOUT_MS).contains(&spec.timeout_ms) {
        return invalid(format!("timeoutMs is 1 to {}", coffer_wire::MAX_TIMEOUT_MS));
    }
    if spec.retries > coffer_wire::MAX_RETRIES {
        return invalid(format!("retries is at most {}", coffer_wire::MAX_RETRIES));
    }
    if !(1..=coffer_wire::MAX_CONCURRENCY).contains(&spec.concurrency) {
        return invalid(format!(
            "concurrency is 1 to {}",
            coffer_wire::MAX_CONCURRENCY
        ));
    }
    match (spec.mode, &spec.url) {
        (FunctionMode::Push, Some(url)) => check_target(url, options)?,
        (FunctionMode::Push, None) => return invalid("a push function needs a url".into()),
        (FunctionMode::Pull, Some(_)) => {
            return invalid("a pull function has no url: its workers poll".into());
        }
        (FunctionMode::Pull, None) => {}
    }
    Ok(spec)
}

/// A push URL: to this machine (127.0.0.1, `[::1]`, localhost; `http://` or `https://`),
/// or `https://` (`http://` too with `allow_http_targets`) to a host the operator allows
/// ([`RuntimeOptions::push_allowed_hosts`]). No credentials in it (a URL is shown on every
/// read). Checked at registration and again before every delivery.
pub(crate) fn check_target(raw: &str, options: &RuntimeOptions) -> Result<(), CoreError> {
    let invalid = |why: String| Err(CoreError::Invalid(format!("url is invalid: {why}")));
    if raw.len() > 2048 {
        return invalid("at most 2048 characters".into());
    }
    let Ok(url) = reqwest::Url::parse(raw) else {
        return invalid("not an absolute URL".into());
    };
    if !url.username().is_empty() || url.password().is_some() {
        return invalid("credentials do not belong in a URL that every read shows".into());
    }
    let Some(host) = url.host_str() else {
        return invalid("it names no host".into());
    };
    let local = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    let allowed = local || host_allowed(host, &options.push_allowed_hosts);
    match url.scheme() {
        "https" | "http" if !allowed => invalid(format!(
            "host {host} is not one push deliveries may go to: the operator lists them in COFFER_PUSH_ALLOWED_HOSTS (this machine is always allowed)"
        )),
        "https" => Ok(()),
        "http" if local || options.allow_http_targets => Ok(()),
        "http" => invalid(
            "use https:// (http:// is accepted for this machine, or for allowed hosts with COFFER_ALLOW_HTTP_TARGETS=1)".into(),
        ),
        _ => invalid("use https:// (or http:// to this machine)".into()),
    }
}

/// Whether `host` is in `allowed`: an exact (case-insensitive) match, or `*.domain` for a
/// name under `domain`.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let pattern = pattern.trim().to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => !pattern.is_empty() && host == pattern,
        }
    })
}

/// The associated data that binds a function's signing secret to its place.
pub(crate) fn signing_aad(env: &EnvId, id: &FunctionId) -> String {
    format!("coffer:function-signing:{env}:{id}")
}

/// A new signing secret, `cs_` and 43 base64url characters (256 random bits).
pub(crate) fn new_signing_secret() -> Result<SecretString, CoreError> {
    use base64::Engine as _;
    let bytes = coffer_crypto::random_bytes::<32>().map_err(|_| CoreError::Crypto)?;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok(SecretString::from(format!("cs_{text}")))
}

/// Opens a stored signing secret.
pub(crate) fn open_signing(
    ring: Option<&Keyring>,
    env: &EnvId,
    id: &FunctionId,
    stored: &StoredValue,
) -> Option<SecretString> {
    crate::service::open_text(ring, stored, &signing_aad(env, id))
}

/// The journal's watch where runs may be queued by other processes (nodes sharing the
/// catalog) and only it tells of them; `None` where this process queues every run itself
/// and wakes its polls and dispatcher directly (`pull_waiters`, `push_wake`).
pub(crate) fn other_writers(coffer: &Coffer) -> Option<tokio::sync::watch::Receiver<u64>> {
    let catalog = &coffer.catalog;
    catalog
        .shared_with_other_processes()
        .then(|| catalog.watch_events())
}

/// Marks the journal's current head as seen (before looking for work).
pub(crate) fn mark_seen(journal: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(journal) = journal {
        journal.borrow_and_update();
    }
}

/// Waits for the journal to move past what was seen; never, without a journal to watch.
pub(crate) async fn changed(
    journal: &mut Option<tokio::sync::watch::Receiver<u64>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match journal {
        Some(journal) => journal.changed().await,
        None => std::future::pending().await,
    }
}

/// The redactor for what a run of `job` reports: its secrets and its step's `extra` values.
/// Built only where a report is redacted (a pull poll hands the job over and builds none).
pub(crate) fn run_redactor(job: &Job, extra: &[SecretString]) -> crate::redact::Redactor {
    crate::redact::Redactor::new(
        job.secrets
            .iter()
            .map(|(_, v)| v)
            .chain(extra.iter().map(|v| v.expose_secret())),
    )
}

impl Coffer {
    /// Sets how the runtime plane behaves (before the service is shared).
    pub fn set_runtime_options(&mut self, options: RuntimeOptions) {
        self.runtime.options = options;
    }

    /// Runtime keys of `env` only: admin and manage keys never obtain a value.
    pub fn require_runtime_key(&self, who: &Principal, env: &EnvName) -> Result<(), CoreError> {
        match &who.role {
            coffer_store::Role::Runtime(own) if own == env => Ok(()),
            _ => Err(CoreError::Forbidden),
        }
    }

    /// One function (admin, manage of its environment).
    pub async fn function(
        &self,
        who: &Principal,
        env: &EnvName,
        id: &FunctionId,
    ) -> Result<FunctionView, CoreError> {
        self.require_manage(who, env)?;
        self.existing_environment(env).await?;
        self.find_function(env, id).await
    }

    pub(crate) async fn find_function(
        &self,
        env: &EnvName,
        id: &FunctionId,
    ) -> Result<FunctionView, CoreError> {
        let record = self.catalog.get_function(env, id).await?;
        let record = record.ok_or_else(|| CoreError::FunctionNotFound {
            env: env.clone(),
            id: id.clone(),
        })?;
        self.runtime.specs.view(record)
    }

    /// A page of functions in id order (admin, manage of the environment).
    pub async fn list_functions(
        &self,
        who: &Principal,
        env: &EnvName,
        after: Option<&FunctionId>,
        limit: usize,
    ) -> Result<Page<FunctionView, FunctionId>, CoreError> {
        self.require_manage(who, env)?;
        self.existing_environment(env).await?;
        let records = self
            .catalog
            .list_functions(env, after, limit.saturating_add(1))
            .await?;
        let page = Page::cut(records, limit, |f| f.id.clone());
        let items = page
            .items
            .into_iter()
            .map(FunctionView::new)
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// One run (admin, manage or runtime key of its environment).
    pub async fn run(
        &self,
        who: &Principal,
        env: &EnvName,
        id: &RunId,
    ) -> Result<RunRecord, CoreError> {
        self.require_run_reader(who, env)?;
        self.existing_environment(env).await?;
        self.catalog
            .get_run(env, id)
            .await?
            .ok_or_else(|| CoreError::RunNotFound {
                env: env.clone(),
                id: id.clone(),
            })
    }

    /// A page of runs, newest first (admin, manage or runtime key of the environment).
    pub async fn list_runs(
        &self,
        who: &Principal,
        env: &EnvName,
        filter: &RunFilter,
        after: Option<&RunId>,
        limit: usize,
    ) -> Result<Page<RunRecord, RunId>, CoreError> {
        self.require_run_reader(who, env)?;
        self.existing_environment(env).await?;
        let size = PageSize::rows(limit.saturating_add(1));
        let items = self.catalog.list_runs(env, filter, after, size).await?;
        Ok(Page::cut_within(
            items,
            limit,
            size.bytes,
            RunRecord::weight,
            |r| r.id.clone(),
        ))
    }

    fn require_run_reader(&self, who: &Principal, env: &EnvName) -> Result<(), CoreError> {
        self.require_manage(who, env)
            .or_else(|_| self.require_runtime_key(who, env))
    }

    /// Every function of `env` (bounded by [`MAX_FUNCTIONS_PER_ENVIRONMENT`]).
    pub(crate) async fn all_functions(
        &self,
        env: &EnvName,
    ) -> Result<Vec<FunctionView>, CoreError> {
        let mut all = Vec::new();
        let mut after: Option<FunctionId> = None;
        loop {
            let page = self
                .catalog
                .list_functions(env, after.as_ref(), 200)
                .await?;
            let done = page.len() < 200;
            after = page.last().map(|f| f.id.clone());
            for record in page {
                all.push(self.runtime.specs.view(record)?);
            }
            if done || all.len() >= MAX_FUNCTIONS_PER_ENVIRONMENT {
                return Ok(all);
            }
        }
    }

    /// The job for `function` in `env` (for `run`, if any), with the declared secrets that
    /// are set (only `only`, when given) and the declared config keys that are set, and
    /// the resolution to audit. Values are read now. An unreadable value is left out (as
    /// if unset) and marked in the catalog.
    pub(crate) async fn build_job(
        &self,
        env: &Environment,
        function: &FunctionView,
        run: Option<&RunRecord>,
        only: Option<&[SecretName]>,
    ) -> Result<(Job, Resolution), CoreError> {
        let mut secrets = Secrets::new();
        let (mut resolved, mut missing) = (Vec::new(), Vec::new());
        let mut wanted = Vec::with_capacity(function.spec.secrets.len());
        for raw in &function.spec.secrets {
            let name = SecretName::new(raw).map_err(|e| CoreError::Invalid(e.to_string()))?;
            if only.is_none_or(|only| only.contains(&name)) {
                wanted.push(name);
            }
        }
        let opened = self.open_secrets(env, &wanted).await?;
        for (name, value) in wanted.into_iter().zip(opened) {
            match value {
                Some(value) => {
                    secrets.insert(name.to_string(), value);
                    resolved.push(name);
                }
                None => missing.push(name),
            }
        }
        let mut config = BTreeMap::new();
        for raw in &function.spec.config {
            let key = ConfigKey::new(raw).map_err(|e| CoreError::Invalid(e.to_string()))?;
            if let Some(entry) = self.catalog.get_config(&env.name, &key).await? {
                let value = serde_json::from_str(&entry.value).map_err(|_| {
                    CoreError::Store(coffer_store::StoreError::Corrupt(format!(
                        "config key {key} holds text that is not JSON"
                    )))
                })?;
                config.insert(key.to_string(), value);
            }
        }
        let job = Job {
            run_id: run.map(|r| r.id.to_string()),
            function_id: function.record.id.to_string(),
            environment: env.name.to_string(),
            attempt: run.map(|r| r.attempts),
            event: run.map(|r| JobEvent {
                name: r.event_name.clone(),
                data: serde_json::from_str(&r.event_data).unwrap_or(serde_json::Value::Null),
            }),
            secrets,
            config,
            trigger_params: match run {
                Some(r) => serde_json::from_str(&r.trigger_params)
                    .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
                None => serde_json::Value::Object(Default::default()),
            },
        };
        let resolution = Resolution {
            environment: env.name.clone(),
            function_id: function.record.id.clone(),
            run_id: run.map(|r| r.id.clone()),
            resolved,
            missing,
            at: Timestamp::now(),
        };
        Ok((job, resolution))
    }

    /// The job of a leased run, with the resolution to audit and the step's secret values
    /// (for [`run_redactor`], which a caller that redacts what the run reports builds): a
    /// step of an orchestration also gets that step's encrypted parameters and references,
    /// merged over its `triggerParams` (they win on a key collision) and redacted like
    /// declared secrets. `Ok(Err(why))`: the step's parameters cannot be had, and the run
    /// must fail rather than run without them.
    pub(crate) async fn build_run_job(
        &self,
        env: &Environment,
        function: &FunctionView,
        run: &RunRecord,
    ) -> Result<Result<(Job, Resolution, Vec<SecretString>), String>, CoreError> {
        let (mut job, mut resolution) = self.build_job(env, function, Some(run), None).await?;
        let mut extra = Vec::new();
        if let Some(link) = &run.step {
            let step = match self.step_params(env, function, link).await {
                Ok(step) => step,
                Err(why) => return Ok(Err(why)),
            };
            if let serde_json::Value::Object(params) = &mut job.trigger_params {
                for name in &step.absent {
                    params.remove(name);
                }
                params.extend(step.params);
            }
            resolution.resolved.extend(step.resolved);
            resolution.missing.extend(step.missing);
            extra = step.secrets;
        }
        Ok(Ok((job, resolution, extra)))
    }

    /// [`Coffer::redactor_for`] for a run: with its orchestration step's secret values too.
    /// `None` when the step's parameters cannot be had (what the run reports cannot be
    /// redacted with them, so it must not be kept).
    pub(crate) async fn redactor_for_run(
        &self,
        env: &Environment,
        function: &FunctionView,
        run: &RunRecord,
    ) -> Result<Option<crate::redact::Redactor>, CoreError> {
        let names = function
            .spec
            .secrets
            .iter()
            .map(|raw| SecretName::new(raw).map_err(|e| CoreError::Invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut values: Vec<SecretString> = self
            .open_secrets(env, &names)
            .await?
            .into_iter()
            .flatten()
            .collect();
        if let Some(link) = &run.step {
            match self.step_params(env, function, link).await {
                Ok(step) => values.extend(step.secrets),
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(crate::redact::Redactor::new(
            values.iter().map(|v| v.expose_secret()),
        )))
    }

    /// A secret's plaintext in `env`, `None` when it is not set or cannot be opened (then
    /// it is marked unreadable for every node).
    pub(crate) async fn open_secret(
        &self,
        env: &Environment,
        name: &SecretName,
    ) -> Result<Option<SecretString>, CoreError> {
        let Some(record) = self.secrets.get(env, name).await? else {
            return Ok(None);
        };
        self.open_record(record).await
    }

    /// [`Self::open_secret`] of each of `names`, in their order, read at once.
    pub(crate) async fn open_secrets(
        &self,
        env: &Environment,
        names: &[SecretName],
    ) -> Result<Vec<Option<SecretString>>, CoreError> {
        let mut opened = Vec::with_capacity(names.len());
        for record in self.secrets.get_many(env, names).await? {
            opened.push(match record {
                Some(record) => self.open_record(record).await?,
                None => None,
            });
        }
        Ok(opened)
    }

    /// A stored secret's plaintext, `None` when it cannot be opened (then it is marked
    /// unreadable for every node).
    async fn open_record(
        &self,
        record: coffer_store::SecretRecord,
    ) -> Result<Option<SecretString>, CoreError> {
        crate::service::kept_here(&record, self.secrets.backend_name())?;
        let text = open_stored(self.keyring(), &record)
            .and_then(|plain| String::from_utf8(plain.to_vec()).ok());
        match text {
            Some(text) => Ok(Some(SecretString::from(text))),
            None => {
                self.mark_unreadable(&record.meta).await;
                Ok(None)
            }
        }
    }
}

/// Most ended runs one pruning transaction deletes.
const PRUNE_BATCH: usize = 1000;

impl Coffer {
    /// Deletes the runs that ended (succeeded or failed) longer than `retention` ago, in
    /// batches (each one transaction, audited as `runs.pruned` with its count); returns
    /// how many. `coffer serve` calls it hourly (`--run-retention-days`).
    pub async fn prune_runs(&self, retention: std::time::Duration) -> Result<u64, CoreError> {
        let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = Timestamp::from_millis(Timestamp::now().millis().saturating_sub(keep));
        let mut total = 0;
        loop {
            let n = self.catalog.prune_runs(cutoff, PRUNE_BATCH).await?;
            total += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

/// The bytes of text a redaction of `value` searches: its strings and object keys.
pub(crate) fn json_text_bytes(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(json_text_bytes).sum(),
        Value::Object(members) => members
            .iter()
            .map(|(k, v)| k.len() + json_text_bytes(v))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// A run's output as stored: redacted, compact JSON, at most [`MAX_RUN_RESULT_BYTES`]
/// (a longer one is replaced by a note saying so).
pub(crate) fn stored_output(
    redactor: &crate::redact::Redactor,
    output: serde_json::Value,
) -> String {
    let text = serde_json::to_string(&redactor.redact_json(output)).unwrap_or_default();
    if text.len() > MAX_RUN_RESULT_BYTES {
        serde_json::json!({"truncated": true, "bytes": text.len()}).to_string()
    } else {
        text
    }
}

/// A run's error as stored: redacted, then cut to at most [`MAX_RUN_RESULT_BYTES`] (in
/// that order: a value across the cut would otherwise keep its first part).
pub(crate) fn stored_error(redactor: &crate::redact::Redactor, error: &str) -> String {
    cut(redactor.redact(error), MAX_RUN_RESULT_BYTES)
}

/// `text` cut to at most `bytes`, at a character boundary.
pub(crate) fn cut(mut text: String, bytes: usize) -> String {
    if text.len() > bytes {
        let mut end = bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large redactions wait for a place: never more at once than the gate has, on the
    /// blocking pool, and a place is given back when one ends; small ones run on the task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redactions_run_no_more_at_once_than_the_gate_has_places() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let gate = Arc::new(RedactionGate::new(2, REDACTION_WAIT));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let large = "x".repeat(INLINE_REDACTION_BYTES + 1);
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (gate, running, most) = (gate.clone(), running.clone(), most.clone());
            let value = if i % 2 == 0 {
                large.clone()
            } else {
                format!("small-{i}")
            };
            tasks.push(tokio::spawn(async move {
                let redactor = crate::redact::Redactor::new([value.as_str()]);
                let text = format!("before {value} after");
                let counted = i % 2 == 0;
                gate.run(redactor, text.len(), move |r| {
                    if counted {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(30));
                        running.fetch_sub(1, Ordering::SeqCst);
                    }
                    r.redact(&text)
                })
                .await
                .unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), "before ******** after");
        }
        assert!(most.load(Ordering::SeqCst) <= 2, "more than 2 at once");
        assert_eq!(gate.places.available_permits(), 2, "every place given back");
    }

    /// A large redaction that finds no place within the gate's wait is refused as
    /// overloaded, rather than queued without end; a small one does not wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_redaction_that_finds_no_place_in_time_is_refused_as_overloaded() {
        let gate = Arc::new(RedactionGate::new(1, std::time::Duration::from_millis(50)));
        let large = "y".repeat(INLINE_REDACTION_BYTES + 1);
        let redactor = || crate::redact::Redactor::new([large.as_str()]);
        let (started, holding) = tokio::sync::oneshot::channel();
        let holder = tokio::spawn({
            let (gate, redactor) = (gate.clone(), redactor());
            async move {
                gate.run(redactor, 0, move |_| {
                    started.send(()).unwrap();
                    std::thread::sleep(std::time::Duration::from_secs(2));
                })
                .await
            }
        });
        holding.await.unwrap();
        let refused = gate.run(redactor(), 0, |_| ()).await;
        assert!(
            matches!(
                refused,
                Err(CoreError::Store(coffer_store::StoreError::Overloaded))
            ),
            "{refused:?}"
        );
        let small = || crate::redact::Redactor::new(["small-value"]);
        assert_eq!(
            gate.run(small(), 13, |r| r.redact("a small-value"))
                .await
                .unwrap(),
            "a ********"
        );
        // A small redactor over a long text waits for a place too.
        let long = format!("{} small-value", "z".repeat(INLINE_TEXT_BYTES));
        let refused = gate
            .run(small(), long.len(), move |r| r.redact(&long))
            .await;
        assert!(
            matches!(
                refused,
                Err(CoreError::Store(coffer_store::StoreError::Overloaded))
            ),
            "{refused:?}"
        );
        holder.await.unwrap().unwrap();
        assert_eq!(gate.places.available_permits(), 1);
    }

    fn put(mode: FunctionMode, url: Option<&str>) -> PutFunction {
        PutFunction {
            triggers: vec![coffer_wire::Trigger {
                event: "order.*".into(),
            }],
            secrets: vec!["STRIPE_KEY".into()],
            config: vec![],
            mode,
            url: url.map(str::to_owned),
            timeout_ms: None,
            retries: None,
            concurrency: None,
            expected_revision: None,
        }
    }

    #[test]
    fn push_urls_go_to_this_machine_or_to_hosts_the_operator_allows() {
        let strict = RuntimeOptions::default();
        for ok in [
            "http://127.0.0.1:8080/x",
            "http://localhost/x",
            "http://[::1]:9/x",
            "https://127.0.0.1/x",
        ] {
            assert!(
                check_function(&put(FunctionMode::Push, Some(ok)), &strict).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "https://fn.example.com/hook",
            "https://10.0.0.1/x",
            "https://169.254.169.254/latest",
            "http://example.com/x",
            "ftp://127.0.0.1/x",
            "https://user:pw@127.0.0.1/x",
            "/relative",
            "file:///etc/passwd",
        ] {
            assert!(
                check_function(&put(FunctionMode::Push, Some(bad)), &strict).is_err(),
                "{bad}"
            );
        }
        let listed = RuntimeOptions {
            push_allowed_hosts: vec!["hooks.example.com".into(), "*.fn.example.org".into()],
            ..RuntimeOptions::default()
        };
        for ok in [
            "https://hooks.example.com/x",
            "https://HOOKS.example.com/x",
            "https://a.fn.example.org/x",
            "https://a.b.fn.example.org/x",
        ] {
            assert!(
                check_function(&put(FunctionMode::Push, Some(ok)), &listed).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "https://example.com/x",
            "https://fn.example.org/x",
            "https://evilfn.example.org/x",
            "https://hooks.example.com.evil.net/x",
            "http://hooks.example.com/x",
        ] {
            assert!(
                check_function(&put(FunctionMode::Push, Some(bad)), &listed).is_err(),
                "{bad}"
            );
        }
        let open = RuntimeOptions {
            allow_http_targets: true,
            ..listed
        };
        assert!(
            check_function(
                &put(FunctionMode::Push, Some("http://hooks.example.com/x")),
                &open
            )
            .is_ok()
        );
        assert!(check_function(&put(FunctionMode::Push, None), &strict).is_err());
        assert!(
            check_function(&put(FunctionMode::Pull, Some("http://127.0.0.1/")), &strict).is_err()
        );
    }

    fn record(spec: String) -> FunctionRecord {
        FunctionRecord {
            environment: EnvName::new("prod").unwrap(),
            environment_id: EnvId::new("env_0123456789abcdef").unwrap(),
            id: FunctionId::new("f").unwrap(),
            spec,
            signing: coffer_store::StoredValue::Plain(SecretString::from("s")),
            previous_signing: None,
            revision: 1,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn parsed_definitions_are_shared_by_text_and_bounded() {
        let text = |event: &str| {
            let spec = FunctionSpec {
                triggers: vec![coffer_wire::Trigger {
                    event: event.into(),
                }],
                ..put(FunctionMode::Pull, None).spec()
            };
            serde_json::to_string(&spec).unwrap()
        };
        let cache = SpecCache::default();
        let a = cache.view(record(text("a.*"))).unwrap();
        let again = cache.view(record(text("a.*"))).unwrap();
        assert!(
            Arc::ptr_eq(&a.spec, &again.spec),
            "the same text is parsed once"
        );
        assert!(a.spec.triggered_by("a.b") && !a.spec.triggered_by("b.a"));
        // Another text (an update of the function) is parsed anew, never served stale.
        let b = cache.view(record(text("b.*"))).unwrap();
        assert!(!Arc::ptr_eq(&a.spec, &b.spec));
        assert!(b.spec.triggered_by("b.a") && !b.spec.triggered_by("a.b"));
        // The view holds the record it was given, not one from an earlier view.
        let mut later = record(text("a.*"));
        later.revision = 7;
        let later = cache.view(later).unwrap();
        assert!(Arc::ptr_eq(&a.spec, &later.spec));
        assert_eq!((a.record.revision, later.record.revision), (1, 7));
        // A definition Coffer did not write is an error, and is not kept.
        assert!(cache.view(record("{".into())).is_err());
        assert!(!cache.map.lock().unwrap().1.contains_key("{"));
        // A stored trigger that does not compile matches nothing (registration refuses one).
        let odd = cache.view(record(text("a..b"))).unwrap();
        assert!(!odd.spec.triggered_by("a..b") && !odd.spec.triggered_by("a.b"));
        // Bounded by its texts' bytes: past the budget it starts over.
        let long = format!("{}{}", text("c.*"), " ".repeat(SPEC_CACHE_BYTES / 3));
        for _ in 0..2 {
            cache.view(record(long.clone())).unwrap();
        }
        let held = |cache: &SpecCache| cache.map.lock().unwrap().0;
        assert!(held(&cache) <= SPEC_CACHE_BYTES);
        for n in 0..4 {
            cache
                .view(record(format!("{long}{}", " ".repeat(n))))
                .unwrap();
            assert!(held(&cache) <= SPEC_CACHE_BYTES, "{}", held(&cache));
        }
        {
            let map = cache.map.lock().unwrap();
            assert_eq!(map.0, map.1.keys().map(String::len).sum::<usize>());
        }
        // A text larger than the whole budget is parsed, not kept, and clears nothing.
        let held_before = held(&cache);
        let huge = format!("{}{}", text("d.*"), " ".repeat(SPEC_CACHE_BYTES));
        assert!(cache.view(record(huge)).unwrap().spec.triggered_by("d.x"));
        assert_eq!(held(&cache), held_before);
    }

    #[test]
    fn triggers_match_exact_names_and_nats_wildcards() {
        let spec = |t: &str| FunctionSpec {
            triggers: vec![coffer_wire::Trigger { event: t.into() }],
            ..put(FunctionMode::Pull, None).spec()
        };
        assert!(ParsedSpec::of(spec("order.created")).triggered_by("order.created"));
        assert!(!ParsedSpec::of(spec("order.created")).triggered_by("order.deleted"));
        assert!(ParsedSpec::of(spec("order.*")).triggered_by("order.deleted"));
        assert!(!ParsedSpec::of(spec("order.*")).triggered_by("order.a.b"));
        assert!(ParsedSpec::of(spec("order.>")).triggered_by("order.a.b"));
        assert!(!ParsedSpec::of(spec("order.>")).triggered_by("order"));
        for bad in ["", "a..b", "a.>.b", "a b", "a.*x"] {
            assert!(check_trigger(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "a..b", "a.*", "a b", ".a"] {
            assert!(check_event_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_event_name("order.created_v2-x").is_ok());
    }
}
