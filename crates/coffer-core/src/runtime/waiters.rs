//! Pull polls waiting for runs, by environment and function.
//!
//! A run queued on this node wakes one poll that waits for its function, not every waiting
//! poll: each woken poll goes to the writer for a lease that only one of them can get, so
//! waking all of them made a queued run cost as many writes as there were idle workers.
//!
//! A poll is listed while it may wait: it enters before each lease attempt (so a run queued
//! during that lease finds it) and leaves when it returns. A pick is owed until the poll
//! settles it: a lease that found nothing (the run went to another poll) or that took a run
//! of the function it was picked for. A poll that returns owing a pick (it took a run of
//! another function, or its request went away) passes the wake on for that function, so
//! that no queued run waits for a poll's next nap.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_store::{EnvName, FunctionId, RunId};
use tokio::sync::Notify;

type Key = (EnvName, FunctionId);

/// The waiting polls of this node.
#[derive(Default)]
pub(crate) struct PullWaiters {
    waiting: Mutex<HashMap<Key, VecDeque<Arc<Waiter>>>>,
}

/// One poll's place: notified once per pick.
#[derive(Default)]
pub(crate) struct Waiter {
    notify: Notify,
    /// The function of the run it was picked for, until the poll settles the pick.
    picked_for: Mutex<Option<FunctionId>>,
    /// Picks so far: a poll that found nothing keeps a pick made after it entered (its
    /// read may have missed that run).
    picks: AtomicU64,
}

impl Waiter {
    fn picked_for(&self) -> std::sync::MutexGuard<'_, Option<FunctionId>> {
        self.picked_for.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PullWaiters {
    /// A run of `function` was queued in `env`: wakes the poll that has waited longest for
    /// that function and owes no pick, if one waits.
    pub(crate) fn wake(&self, env: &EnvName, function: &FunctionId) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let key = (env.clone(), function.clone());
        let Some(queue) = waiting.get_mut(&key) else {
            return;
        };
        // A poll listed under several functions may have been picked through another.
        while let Some(waiter) = queue.pop_front() {
            let mut picked = waiter.picked_for();
            if picked.is_none() {
                *picked = Some(function.clone());
                waiter.picks.fetch_add(1, Ordering::SeqCst);
                drop(picked);
                waiter.notify.notify_one();
                break;
            }
        }
        if queue.is_empty() {
            waiting.remove(&key);
        }
    }

    /// Lists `waiter` under each of `functions` in `env`.
    fn enter(&self, env: &EnvName, functions: &[FunctionId], waiter: &Arc<Waiter>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for f in functions {
            let queue = waiting.entry((env.clone(), f.clone())).or_default();
            if !queue.iter().any(|w| Arc::ptr_eq(w, waiter)) {
                queue.push_back(waiter.clone());
            }
        }
    }

    /// Takes `waiter` off every list.
    fn leave(&self, env: &EnvName, functions: &[FunctionId], waiter: &Arc<Waiter>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for f in functions {
            let key = (env.clone(), f.clone());
            if let Some(queue) = waiting.get_mut(&key) {
                queue.retain(|w| !Arc::ptr_eq(w, waiter));
                if queue.is_empty() {
                    waiting.remove(&key);
                }
            }
        }
    }
}

/// A poll's place among the waiters for as long as the poll runs.
pub(crate) struct Place<'a> {
    waiters: &'a PullWaiters,
    env: EnvName,
    functions: Vec<FunctionId>,
    waiter: Arc<Waiter>,
    /// The waiter's picks when the poll last entered.
    entered_at: AtomicU64,
}

impl<'a> Place<'a> {
    pub(crate) fn new(waiters: &'a PullWaiters, env: &EnvName, functions: &[FunctionId]) -> Self {
        let mut functions = functions.to_vec();
        functions.sort();
        functions.dedup();
        Place {
            waiters,
            env: env.clone(),
            functions,
            waiter: Arc::default(),
            entered_at: AtomicU64::new(0),
        }
    }

    /// Lists the poll (before it tries a lease).
    pub(crate) fn enter(&self) {
        self.waiters.enter(&self.env, &self.functions, &self.waiter);
        let picks = self.waiter.picks.load(Ordering::SeqCst);
        self.entered_at.store(picks, Ordering::SeqCst);
    }

    /// The poll's look for runs (which began after it entered) found nothing. A pick made
    /// before it entered was for a run committed before the look, which then went to
    /// another poll: the pick and the wake-up it left (if the poll was not waiting when it
    /// came) are cleared. A pick made since may be for a run the look began too early to
    /// see: it is kept, so the poll's wait ends at once and it looks again.
    pub(crate) fn found_nothing(&self) {
        let mut picked = self.waiter.picked_for();
        if self.waiter.picks.load(Ordering::SeqCst) != self.entered_at.load(Ordering::SeqCst) {
            return;
        }
        *picked = None;
        drop(picked);
        let notified = std::pin::pin!(self.waiter.notify.notified());
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = std::future::Future::poll(notified, &mut context);
    }

    /// The poll took a run of `function`: a pick for that function made before it entered
    /// is settled (it was for a run its read could see). One made since may be for a run
    /// queued after that read began: it stays owed, and passes on when the poll returns.
    pub(crate) fn took(&self, function: &FunctionId) {
        let mut picked = self.waiter.picked_for();
        let since_entered =
            self.waiter.picks.load(Ordering::SeqCst) != self.entered_at.load(Ordering::SeqCst);
        if picked.as_ref() == Some(function) && !since_entered {
            *picked = None;
        }
    }

    /// Waits until the poll is picked for a run.
    pub(crate) async fn picked(&self) {
        self.waiter.notify.notified().await;
    }
}

impl Drop for Place<'_> {
    /// A poll that returns owing a pick did not take the run it was picked for: another
    /// poll waiting for that function gets the wake.
    fn drop(&mut self) {
        self.waiters.leave(&self.env, &self.functions, &self.waiter);
        let owed = self.waiter.picked_for().take();
        if let Some(function) = owed {
            self.waiters.wake(&self.env, &function);
        }
    }
}

/// The runs polls on this node are building jobs for, between reading a due run and
/// leasing it, and those they leased lately: another poll here passes them by instead of
/// building the same job to lose the lease (the lease itself is what decides, across nodes
/// too). A run leased lately is remembered because a read that began before its lease
/// committed still shows it queued.
#[derive(Default)]
pub(crate) struct Claims {
    state: Mutex<ClaimState>,
}

#[derive(Default)]
struct ClaimState {
    held: HashSet<RunId>,
    /// Runs leased by this node's polls, oldest first, with when.
    leased: VecDeque<(Instant, RunId)>,
    leased_ids: HashSet<RunId>,
}

/// How long a leased run is passed by: the shortest lease a poll may take
/// (`leaseMs` ≥ 1,000), before which it cannot be due again.
const LEASED_LATELY: Duration = Duration::from_millis(1_000);
/// Most leased runs remembered (older ones are forgotten first).
const MAX_LEASED_LATELY: usize = 4_096;

impl Claims {
    fn state(&self) -> std::sync::MutexGuard<'_, ClaimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `max` of the runs claimed now.
    pub(crate) fn held(&self, max: usize) -> Vec<RunId> {
        self.state().held.iter().take(max).cloned().collect()
    }

    /// Claims `run`, unless another poll here holds it or leased it lately (which says);
    /// the claim ends when dropped.
    pub(crate) fn claim(&self, run: &RunId) -> Result<Claimed<'_>, Passed> {
        let mut state = self.state();
        let now = Instant::now();
        while let Some((at, _)) = state.leased.front() {
            if now.duration_since(*at) < LEASED_LATELY && state.leased.len() <= MAX_LEASED_LATELY {
                break;
            }
            if let Some((_, old)) = state.leased.pop_front() {
                state.leased_ids.remove(&old);
            }
        }
        if state.leased_ids.contains(run) {
            return Err(Passed::Leased);
        }
        if !state.held.insert(run.clone()) {
            return Err(Passed::Held);
        }
        Ok(Claimed {
            claims: self,
            run: run.clone(),
            leased: false,
        })
    }
}

/// Why a run was not claimed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Passed {
    /// Another poll here is building its job.
    Held,
    /// A poll here leased it lately: the read that listed it is older than that lease.
    Leased,
}

/// A run claimed by one poll until dropped.
pub(crate) struct Claimed<'a> {
    claims: &'a Claims,
    run: RunId,
    leased: bool,
}

impl Claimed<'_> {
    /// The poll leased the run: other polls here pass it by for a while after the claim.
    pub(crate) fn leased(&mut self) {
        self.leased = true;
    }
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        let mut state = self.claims.state();
        state.held.remove(&self.run);
        if self.leased && state.leased_ids.insert(self.run.clone()) {
            state.leased.push_back((Instant::now(), self.run.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env() -> EnvName {
        EnvName::new("prod").unwrap()
    }

    fn f(id: &str) -> FunctionId {
        FunctionId::new(id).unwrap()
    }

    async fn is_picked(place: &Place<'_>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), place.picked())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_run_wakes_one_poll_of_its_function_the_longest_waiting() {
        let waiters = PullWaiters::default();
        let (a1, a2, b) = (
            Place::new(&waiters, &env(), &[f("a")]),
            Place::new(&waiters, &env(), &[f("a")]),
            Place::new(&waiters, &env(), &[f("b")]),
        );
        for p in [&a1, &a2, &b] {
            p.enter();
        }
        waiters.wake(&env(), &f("a"));
        assert!(is_picked(&a1).await);
        assert!(!is_picked(&a2).await);
        assert!(!is_picked(&b).await);
        waiters.wake(&EnvName::new("dev").unwrap(), &f("b"));
        assert!(!is_picked(&b).await, "another environment's run");
    }

    #[tokio::test]
    async fn a_poll_listed_under_two_functions_is_picked_once() {
        let waiters = PullWaiters::default();
        let both = Place::new(&waiters, &env(), &[f("a"), f("b")]);
        let only_b = Place::new(&waiters, &env(), &[f("b")]);
        both.enter();
        only_b.enter();
        waiters.wake(&env(), &f("a"));
        waiters.wake(&env(), &f("b"));
        assert!(is_picked(&both).await);
        assert!(
            is_picked(&only_b).await,
            "the second run goes to the other poll"
        );
    }

    #[tokio::test]
    async fn a_poll_that_takes_another_functions_run_passes_its_pick_on() {
        let waiters = PullWaiters::default();
        let both = Place::new(&waiters, &env(), &[f("a"), f("b")]);
        let only_b = Place::new(&waiters, &env(), &[f("b")]);
        only_b.enter();
        both.enter();
        waiters.wake(&env(), &f("a"));
        assert!(is_picked(&both).await);
        both.enter();
        // Its lease took the oldest due run, one of `b`: the `a` run still waits.
        both.took(&f("b"));
        drop(both);
        assert!(!is_picked(&only_b).await, "nobody else waits for a");
        let both = Place::new(&waiters, &env(), &[f("a"), f("b")]);
        both.enter();
        waiters.wake(&env(), &f("b"));
        assert!(is_picked(&only_b).await, "the longest waiting for b");
        assert!(!is_picked(&both).await);
        // Woken, it enters and looks again (as every poll does), and takes the run.
        only_b.enter();
        only_b.took(&f("b"));
        drop(only_b);
        assert!(!is_picked(&both).await, "a settled pick is not passed on");
    }

    #[tokio::test]
    async fn a_picked_poll_that_goes_away_passes_the_run_on() {
        let waiters = PullWaiters::default();
        let first = Place::new(&waiters, &env(), &[f("a")]);
        let second = Place::new(&waiters, &env(), &[f("a")]);
        first.enter();
        second.enter();
        waiters.wake(&env(), &f("a"));
        drop(first);
        assert!(is_picked(&second).await);
        drop(second);
        assert!(
            waiters.waiting.lock().unwrap().is_empty(),
            "nothing is left listed"
        );
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_until_a_lease_finds_nothing() {
        let waiters = PullWaiters::default();
        let place = Place::new(&waiters, &env(), &[f("a")]);
        place.enter();
        waiters.wake(&env(), &f("a"));
        // The poll was still trying its lease when the run came: its wait ends at once.
        assert!(is_picked(&place).await);
        place.enter();
        waiters.wake(&env(), &f("a"));
        assert!(
            !is_picked(&place).await,
            "picked once until it settles the pick"
        );
        place.found_nothing();
        waiters.wake(&env(), &f("a"));
        place.found_nothing();
        assert!(
            !is_picked(&place).await,
            "finding nothing clears a wake not waited for"
        );
    }

    #[tokio::test]
    async fn a_wake_during_a_look_that_found_nothing_is_kept() {
        let waiters = PullWaiters::default();
        let place = Place::new(&waiters, &env(), &[f("a")]);
        place.enter();
        // The poll reads the due runs; the run commits after that read began and its wake
        // comes before the poll settles: the read could not see it.
        waiters.wake(&env(), &f("a"));
        place.found_nothing();
        assert!(is_picked(&place).await, "the poll looks again at once");
        place.enter();
        place.found_nothing();
        assert!(!is_picked(&place).await, "settled by the second look");
        waiters.wake(&env(), &f("a"));
        assert!(is_picked(&place).await, "and can be picked again");
    }

    #[tokio::test]
    async fn a_poll_that_took_another_run_of_the_function_passes_a_later_pick_on() {
        let waiters = PullWaiters::default();
        let busy = Place::new(&waiters, &env(), &[f("a")]);
        let idle = Place::new(&waiters, &env(), &[f("a")]);
        busy.enter();
        idle.enter();
        waiters.wake(&env(), &f("a"));
        assert!(is_picked(&busy).await, "the longest listed");
        busy.enter();
        idle.enter();
        // `busy` read the due runs and is building a job for one; a run queued after that
        // read picks it (listed first), and it takes the run it was building for.
        waiters.wake(&env(), &f("a"));
        busy.took(&f("a"));
        drop(busy);
        assert!(is_picked(&idle).await, "the later run's wake is passed on");
    }

    #[test]
    fn a_claimed_run_is_passed_by_until_its_claim_ends() {
        let claims = Claims::default();
        let run = RunId::generate(coffer_store::Timestamp::now()).unwrap();
        let first = claims.claim(&run).expect("free");
        assert_eq!(claims.claim(&run).err(), Some(Passed::Held));
        assert_eq!(claims.held(10).len(), 1);
        drop(first);
        assert_eq!(claims.held(10).len(), 0);
        let mut second = claims.claim(&run).expect("free again");
        second.leased();
        drop(second);
        assert_eq!(claims.held(10).len(), 0);
        assert_eq!(claims.claim(&run).err(), Some(Passed::Leased));
        let other = RunId::generate(coffer_store::Timestamp::now()).unwrap();
        assert!(claims.claim(&other).is_ok(), "another run is not passed by");
    }
}
