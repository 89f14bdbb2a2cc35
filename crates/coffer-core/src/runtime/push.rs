//! The push dispatcher: leases push runs (from every environment, cluster-wide through the
//! catalog) and POSTs each job to its function's URL, signed.
//!
//! - A run is leased before it is delivered, so any number of nodes can dispatch: each run
//!   goes to one of them at a time. A node that dies mid-delivery leaves the lease to
//!   expire, and the run is delivered again (at least once; `runId` and `attempt` let the
//!   function de-duplicate).
//! - A send on this node whose push runs find free slots, with no run known to wait in the
//!   queue, inserts them already leased and hands them over ([`Handoff`]): one write per
//!   run fewer than queueing it for the dispatcher to lease. Otherwise they are queued, and
//!   the dispatcher leases them in due order.
//! - Bounded: at most `push_concurrency` deliveries in flight on a node, and at most the
//!   function's `concurrency` per function; a response body is read up to
//!   [`MAX_RESPONSE_BYTES`].
//! - 2xx: succeeded, the (JSON) body is the output. 5xx, a timeout or a connection error:
//!   retried with exponential backoff and full jitter while retries remain. Any other
//!   status (4xx, a redirect — redirects are not followed): failed, no retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_store::{
    Actor, Environment, LeaseQuery, RunMode, RunOutcome, RunRecord, StoreError, Timestamp,
};
use secrecy::ExposeSecret;
use secrecy::zeroize::Zeroizing;

use super::{FunctionView, open_signing, stored_error, stored_output};
use crate::Coffer;
use crate::redact::Redactor;

/// How long a push run is leased before its delivery starts; a function whose timeout is
/// longer gets its lease extended before the POST.
pub(crate) const PUSH_LEASE_MS: u64 = 30_000;

/// Most runs leased by one query.
const LEASE_BATCH: usize = 64;

/// How often the dispatcher looks for due runs when nothing woke it (retries whose backoff
/// ended, expired leases). Runs queued on this node wake it directly; runs queued on other
/// nodes (PostgreSQL) wake it through the journal, which it then watches.
const IDLE_INTERVAL: Duration = Duration::from_millis(500);

/// Per-function gates kept before the idle ones are forgotten.
const MAX_GATES: usize = 4096;

/// Most bytes of a function's response that are read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The first retry's backoff; each next one doubles, up to [`MAX_BACKOFF_MS`].
const BASE_BACKOFF_MS: u64 = 1_000;
const MAX_BACKOFF_MS: u64 = 300_000;

/// How long a stopping dispatcher waits for the deliveries in flight to end and be
/// recorded; one still running then is cut, and its run delivered again once its lease
/// expires.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A leased run handed to the dispatcher, with the delivery slot it holds.
type Handed = (RunRecord, tokio::sync::OwnedSemaphorePermit);

/// How a send on this node gives its push runs to the running dispatcher, leased as they
/// were inserted ([`coffer_store::NewRun::leased_until`]).
pub(crate) struct Handoff {
    /// The dispatcher's delivery slots: a run handed over holds one until its delivery
    /// ends, so what waits to be handed over is bounded by them too.
    slots: Arc<tokio::sync::Semaphore>,
    /// Moved on each time push runs may have been left waiting in the queue (a send found
    /// no free slot, or a lease of the dispatcher took as many as it asked for); it starts
    /// at 1, as runs queued before this start may wait.
    waiting: AtomicU64,
    /// The value of `waiting` read before the last lease of the dispatcher that found
    /// fewer due runs than it asked for. While the two differ, sends queue their push runs
    /// behind those that may wait rather than overtake them. (A lease that raced a send's
    /// mark read the value before it, so it cannot clear it.)
    drained: AtomicU64,
    /// To the dispatcher.
    runs: tokio::sync::mpsc::UnboundedSender<Handed>,
}

impl Handoff {
    fn new(
        slots: Arc<tokio::sync::Semaphore>,
        runs: tokio::sync::mpsc::UnboundedSender<Handed>,
    ) -> Self {
        Handoff {
            slots,
            waiting: AtomicU64::new(1),
            drained: AtomicU64::new(0),
            runs,
        }
    }

    /// A delivery slot for one push run of a send, when one is free, no run is known to
    /// wait for one and the dispatcher still takes runs.
    pub(crate) fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.runs.is_closed()
            || self.waiting.load(Ordering::Acquire) != self.drained.load(Ordering::Acquire)
        {
            return None;
        }
        let slot = self.slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.waiting.fetch_add(1, Ordering::AcqRel);
        }
        slot
    }

    /// A send queued push runs (for want of a slot, or behind others): marked once its
    /// write has committed, so that no lease that began before the commit (and could not
    /// see them) clears the backlog they make.
    pub(crate) fn queued(&self) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives the dispatcher `run`, leased by its send with `slot` taken.
    pub(crate) fn deliver(&self, run: RunRecord, slot: tokio::sync::OwnedSemaphorePermit) {
        // A dispatcher that stopped meanwhile leaves the run leased: it is delivered again
        // once its lease expires, as a delivery cut by a stop is.
        let _ = self.runs.send((run, slot));
    }

    /// What a lease of the dispatcher reports against ([`Handoff::leased`]).
    fn before_lease(&self) -> u64 {
        self.waiting.load(Ordering::Acquire)
    }

    /// A lease that asked for `asked` runs took `took`, with `seen` read before it.
    fn leased(&self, seen: u64, asked: usize, took: usize) {
        if took < asked {
            self.drained.fetch_max(seen, Ordering::AcqRel);
        } else {
            self.waiting.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The dispatcher's [`Handoff`], registered with the node's runtime while it lives: sends
/// stop handing it runs however it ends (a stop, a panic, an abort).
struct Registered<'a>(&'a Coffer);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.runtime.set_handoff(None);
    }
}

/// Runs the dispatcher until `stop` resolves, then stops leasing and waits up to
/// [`SHUTDOWN_GRACE`] for the deliveries in flight.
pub async fn run(coffer: Arc<Coffer>, stop: impl std::future::Future<Output = ()>) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the push dispatcher could not build its HTTP client");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(
        coffer.runtime.options.push_concurrency.max(1),
    ));
    let per_function: Arc<Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>> = Arc::default();
    let (handing, mut handed) = tokio::sync::mpsc::unbounded_channel::<Handed>();
    let handoff = Arc::new(Handoff::new(slots.clone(), handing));
    coffer.runtime.set_handoff(Some(handoff.clone()));
    let registered = Registered(&coffer);
    tokio::pin!(stop);
    let mut journal = super::other_writers(&coffer);
    let mut in_flight = tokio::task::JoinSet::new();
    let spawn = |in_flight: &mut tokio::task::JoinSet<()>, (run, slot): Handed| {
        let (coffer, client, per_function) = (coffer.clone(), client.clone(), per_function.clone());
        in_flight.spawn(async move {
            deliver(&coffer, &client, &per_function, run).await;
            drop(slot);
        });
    };
    loop {
        let woken = coffer.runtime.push_wake.notified();
        super::mark_seen(&mut journal);
        // The slots are taken before the lease, so that the runs it takes never wait for
        // one (sends take slots too, meanwhile); those it does not use go back. At most
        // half of those free (but one), so that sends meanwhile still find some.
        let wanted = (slots.available_permits() / 2).clamp(1, LEASE_BATCH);
        let mut free = Vec::new();
        while free.len() < wanted {
            match slots.clone().try_acquire_owned() {
                Ok(slot) => free.push(slot),
                Err(_) => break,
            }
        }
        let mut leased_full = false;
        if !free.is_empty() {
            let now = Timestamp::now();
            let query = LeaseQuery {
                environment: None,
                functions: None,
                mode: RunMode::Push,
                limit: free.len(),
                lease_until: now.after_millis(PUSH_LEASE_MS),
            };
            let seen = handoff.before_lease();
            match coffer.catalog.lease(&query, now, &Actor::System).await {
                Ok(runs) => {
                    leased_full = runs.len() == free.len();
                    handoff.leased(seen, free.len(), runs.len());
                    for (run, slot) in runs.into_iter().zip(free.drain(..)) {
                        spawn(&mut in_flight, (run, slot));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "the push dispatcher could not lease runs"),
            }
        }
        drop(free);
        while let Ok(run) = handed.try_recv() {
            spawn(&mut in_flight, run);
        }
        // Ended deliveries leave the set (it holds only what is in flight).
        while in_flight.try_join_next().is_some() {}
        if leased_full {
            continue;
        }
        tokio::select! {
            _ = &mut stop => {
                // No send hands this dispatcher runs from now on; those handed already are
                // delivered with the others in flight.
                drop(registered);
                handed.close();
                while let Ok(run) = handed.try_recv() {
                    spawn(&mut in_flight, run);
                }
                let drained = async { while in_flight.join_next().await.is_some() {} };
                if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
                    tracing::warn!(
                        deliveries = in_flight.len(),
                        "push deliveries still in flight at shutdown are cut; their runs are delivered again once their leases expire"
                    );
                }
                return;
            }
            _ = woken => {}
            Some(run) = handed.recv() => spawn(&mut in_flight, run),
            Ok(()) = super::changed(&mut journal) => {}
            // A delivery that ended frees a slot for a run that could not be taken.
            Some(_) = in_flight.join_next(), if slots.available_permits() == 0 => {}
            _ = tokio::time::sleep(IDLE_INTERVAL) => {}
        }
    }
}

/// Delivers one leased run and records how it ended.
async fn deliver(
    coffer: &Coffer,
    client: &reqwest::Client,
    per_function: &Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    run: RunRecord,
) {
    let outcome = match attempt(coffer, client, per_function, &run).await {
        Ok(outcome) => outcome,
        // Coffer could not get the job ready (its storage failed): try again later,
        // without counting against the function's retries.
        Err(why) => RunOutcome::Retry {
            error: why,
            not_before: later(BASE_BACKOFF_MS),
        },
    };
    let finished = coffer
        .catalog
        .finish(
            &run.environment,
            &run.id,
            Some(run.attempts),
            outcome,
            Timestamp::now(),
            &Actor::System,
        )
        .await;
    match finished {
        Ok(_) | Err(StoreError::NotFound) => {}
        Err(StoreError::LeaseLost) => {
            tracing::warn!(run = %run.id, "a push delivery outlived its lease; the run was taken over")
        }
        Err(e) => {
            tracing::warn!(run = %run.id, error = %e, "a push run's end could not be recorded")
        }
    }
}

/// One attempt: `Err` when Coffer itself could not get the job ready.
async fn attempt(
    coffer: &Coffer,
    client: &reqwest::Client,
    per_function: &Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    run: &RunRecord,
) -> Result<RunOutcome, String> {
    let failed = |error: String| Ok(RunOutcome::Failed { error });
    let env = match coffer.catalog.get_environment(&run.environment).await {
        Ok(Some(env)) if env.id == run.environment_id => env,
        Ok(_) => return failed("its environment was deleted".into()),
        Err(e) => return Err(e.to_string()),
    };
    let function = match coffer.find_function(&env.name, &run.function_id).await {
        Ok(f) => f,
        Err(crate::CoreError::FunctionNotFound { .. }) => {
            return failed(format!("function {} was deleted", run.function_id));
        }
        Err(e) => return Err(e.to_string()),
    };
    let Some(url) = function.spec.url.clone() else {
        return failed(format!("function {} has no url", run.function_id));
    };
    // Again at delivery: the operator may have narrowed the allowed hosts since.
    if let Err(e) = super::check_target(&url, &coffer.runtime.options) {
        return failed(e.to_string());
    }
    let limit = function.spec.concurrency.max(1) as usize;
    // The limit is part of the key: a changed `concurrency` takes effect at once.
    let key = format!("{}/{}/{limit}", env.id, function.record.id);
    let gate = {
        let mut map = per_function.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_GATES {
            // Forget the gates no delivery holds: the map stays bounded however many
            // functions come and go.
            map.retain(|_, gate| Arc::strong_count(gate) > 1);
        }
        map.entry(key)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(limit)))
            .clone()
    };
    let Ok(_turn) = gate.acquire().await else {
        return Err("the dispatcher is shutting down".into());
    };
    let timeout = Duration::from_millis(function.spec.timeout_ms);
    let now = Timestamp::now();
    let until = now.after_millis(function.spec.timeout_ms.saturating_add(10_000));
    if run.lease_expires_at.is_none_or(|t| t < until) {
        coffer
            .catalog
            .extend_lease(&env.name, &run.id, run.attempts, until, now)
            .await
            .map_err(|e| e.to_string())?;
    }
    let signing = signing_secrets(coffer, &env, &function);
    if signing.is_empty() {
        return failed(
            "the function's signing secret cannot be opened with the configured keys".into(),
        );
    }
    let (job, resolution, extra) = match coffer
        .build_run_job(&env, &function, run)
        .await
        .map_err(|e| e.to_string())?
    {
        Ok(built) => built,
        Err(why) => return failed(why),
    };
    coffer
        .catalog
        .record_resolutions(std::slice::from_ref(&resolution), &Actor::System)
        .await
        .map_err(|e| e.to_string())?;
    let body = Zeroizing::new(serde_json::to_vec(&job).map_err(|e| e.to_string())?);
    let redactor = super::run_redactor(&job, &extra);
    drop((job, extra));
    let keys: Vec<&[u8]> = signing
        .iter()
        .map(|s| s.expose_secret().as_bytes())
        .collect();
    let t = Timestamp::now().millis() / 1000;
    let header = coffer_wire::signature::sign(&keys, t, &body);
    let sent = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(coffer_wire::signature::HEADER, header)
        .body(body.to_vec())
        .send()
        .await;
    let reported = match sent {
        Err(e) if e.is_timeout() => {
            Reported::Retry(format!("no answer within {} ms", function.spec.timeout_ms))
        }
        Err(e) => Reported::Retry(format!("the request failed: {}", plain(&e))),
        Ok(response) => {
            let status = response.status();
            match read_bounded(response, timeout).await {
                Err(why) => Reported::Retry(why),
                Ok(text) if status.is_success() => Reported::Succeeded(if text.trim().is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                }),
                Ok(text) => Reported::Http { status, text },
            }
        }
    };
    // Redacted once, through the node's gate: a function declaring large values would
    // otherwise build its automata on a worker of the runtime, in every delivery slot.
    let retries_left = run.attempts <= function.spec.retries;
    let attempts = run.attempts;
    coffer
        .runtime
        .redactions
        .run(redactor, reported.text_bytes(), move |redactor| {
            reported.outcome(redactor, retries_left, attempts)
        })
        .await
        .map_err(|e| e.to_string())
}

/// What a delivery came to, before what it holds is redacted.
enum Reported {
    /// A timeout, a connection error, an unreadable answer: retried while attempts are left.
    Retry(String),
    /// A 2xx answer's body (JSON, else a string).
    Succeeded(serde_json::Value),
    /// Any other answer: a 5xx is retried, the rest fail the run.
    Http {
        status: reqwest::StatusCode,
        text: String,
    },
}

impl Reported {
    /// The bytes of text its redaction searches.
    fn text_bytes(&self) -> usize {
        match self {
            Reported::Retry(error) => error.len(),
            Reported::Succeeded(output) => super::json_text_bytes(output),
            Reported::Http { text, .. } => text.len(),
        }
    }

    /// The run's outcome, every text in it redacted.
    fn outcome(self, redactor: &Redactor, retries_left: bool, attempts: u32) -> RunOutcome {
        let retry_or_fail = |error: String| {
            if retries_left {
                RunOutcome::Retry {
                    error: stored_error(redactor, &error),
                    not_before: later(backoff_ms(attempts)),
                }
            } else {
                RunOutcome::Failed {
                    error: stored_error(redactor, &error),
                }
            }
        };
        match self {
            Reported::Retry(error) => retry_or_fail(error),
            Reported::Succeeded(output) => RunOutcome::Succeeded {
                output: stored_output(redactor, output),
            },
            Reported::Http { status, text } => {
                // Redacted before it is cut: a value across the cut would keep its first part.
                let snippet = super::cut(redactor.redact(&text), 1024);
                let error = format!("HTTP {}: {snippet}", status.as_u16());
                if status.is_server_error() {
                    retry_or_fail(error)
                } else {
                    let error = if status.is_redirection() {
                        format!("{error} (redirects are not followed)")
                    } else {
                        error
                    };
                    RunOutcome::Failed {
                        error: stored_error(redactor, &error),
                    }
                }
            }
        }
    }
}

/// The current signing secret, and the previous one while its grace period lasts.
fn signing_secrets(
    coffer: &Coffer,
    env: &Environment,
    function: &FunctionView,
) -> Vec<secrecy::SecretString> {
    let ring = coffer.keyring();
    let record = &function.record;
    let mut out: Vec<_> = open_signing(ring, &env.id, &record.id, &record.signing)
        .into_iter()
        .collect();
    if let Some((previous, until)) = &record.previous_signing
        && *until > Timestamp::now()
        && let Some(old) = open_signing(ring, &env.id, &record.id, previous)
    {
        out.push(old);
    }
    out
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a response within `timeout`.
async fn read_bounded(
    mut response: reqwest::Response,
    timeout: Duration,
) -> Result<String, String> {
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| plain(&e))? {
            let room = MAX_RESPONSE_BYTES - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_RESPONSE_BYTES {
                break;
            }
        }
        Ok::<_, String>(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| "the response did not arrive in time".to_string())?
}

/// A request error without its URL (a URL is shown elsewhere; keep errors short).
fn plain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the function's url");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The backoff before attempt `attempts + 1`: `BASE · 2^(attempts-1)` capped, with full
/// jitter over its upper half so retries of many runs spread out.
fn backoff_ms(attempts: u32) -> u64 {
    let exp = BASE_BACKOFF_MS
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
        .min(MAX_BACKOFF_MS);
    let random = coffer_crypto::random_bytes::<4>()
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    exp / 2 + u64::from(random) % (exp / 2 + 1)
}

fn later(ms: u64) -> Timestamp {
    Timestamp::now().after_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_and_is_capped() {
        for attempts in 1..=12u32 {
            let exp = (BASE_BACKOFF_MS << (attempts - 1)).min(MAX_BACKOFF_MS);
            for _ in 0..50 {
                let b = backoff_ms(attempts);
                assert!((exp / 2..=exp).contains(&b), "{attempts}: {b}");
            }
        }
        assert!(backoff_ms(u32::MAX) <= MAX_BACKOFF_MS);
    }

    #[test]
    fn a_send_that_finds_no_slot_makes_the_next_ones_queue_until_the_dispatcher_says() {
        let (runs, handed) = tokio::sync::mpsc::unbounded_channel();
        let handoff = Handoff::new(Arc::new(tokio::sync::Semaphore::new(1)), runs);
        assert!(
            handoff.slot().is_none(),
            "a run may wait: none until a lease tells"
        );
        let seen = handoff.before_lease();
        handoff.leased(seen, 1, 0);
        let taken = handoff.slot().expect("a free slot");
        assert!(handoff.slot().is_none(), "every slot taken");
        drop(taken);
        assert!(
            handoff.slot().is_none(),
            "a run was queued for want of a slot: later sends queue behind it"
        );
        // A lease that got all it asked for: more may wait.
        let seen = handoff.before_lease();
        handoff.leased(seen, 1, 1);
        assert!(handoff.slot().is_none(), "a full lease leaves a backlog");
        let seen = handoff.before_lease();
        handoff.leased(seen, 1, 0);
        let taken = handoff
            .slot()
            .expect("the dispatcher leased the queue empty");
        // A send marks a run waiting while a lease is under way: that lease, however
        // short, read the mark's value before it and cannot clear it.
        let seen = handoff.before_lease();
        assert!(handoff.slot().is_none(), "the only slot is taken");
        drop(taken);
        handoff.leased(seen, 1, 0);
        assert!(
            handoff.slot().is_none(),
            "the send's mark outlives the racing lease"
        );
        let seen = handoff.before_lease();
        handoff.leased(seen, 1, 0);
        assert!(handoff.slot().is_some());
        // A send's write that queued push runs committed while a lease was under way:
        // marked after its commit, so that lease cannot clear it either.
        let seen = handoff.before_lease();
        handoff.queued();
        handoff.leased(seen, 1, 0);
        assert!(handoff.slot().is_none(), "queued after the lease began");
        let seen = handoff.before_lease();
        handoff.leased(seen, 1, 0);
        assert!(handoff.slot().is_some());
        // A dispatcher gone takes no runs.
        drop(handed);
        assert!(handoff.slot().is_none(), "no dispatcher to hand runs to");
    }
}
