//! Pull polls waiting for runs, by environment and function.
//!
//! A run queued on this node wakes one poll that waits for its function, not every waiting
//! poll: each woken poll goes to the writer for a lease that only one of them can get, so
//! waking all of them made a queued run cost as many writes as there were idle workers.
//!
//! A poll is listed only while it may wait: it enters before it tries a lease (so a run
//! queued during that lease finds it) and leaves when it returns. A poll that was picked
//! for a run but got a run of its own anyway, or went away (its request dropped), passes
//! the wake on, so that no queued run waits for a poll's next nap.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use coffer_store::{EnvName, FunctionId};
use tokio::sync::Notify;

type Key = (EnvName, FunctionId);

/// The waiting polls of this node.
#[derive(Default)]
pub(crate) struct PullWaiters {
    waiting: Mutex<HashMap<Key, VecDeque<Arc<Waiter>>>>,
}

/// One poll's place: notified once per wake it is picked for.
#[derive(Default)]
pub(crate) struct Waiter {
    notify: Notify,
    /// Picked for a run since it last entered.
    picked: AtomicBool,
}

impl PullWaiters {
    /// A run of `function` was queued in `env`: wakes the poll that has waited longest for
    /// that function, if one waits.
    pub(crate) fn wake(&self, env: &EnvName, function: &FunctionId) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let key = (env.clone(), function.clone());
        let Some(queue) = waiting.get_mut(&key) else {
            return;
        };
        // A poll listed under several functions may have been picked through another.
        while let Some(waiter) = queue.pop_front() {
            if !waiter.picked.swap(true, Ordering::AcqRel) {
                waiter.notify.notify_one();
                break;
            }
        }
        if queue.is_empty() {
            waiting.remove(&key);
        }
    }

    /// Lists `waiter` under each of `functions` in `env`, not picked.
    fn enter(&self, env: &EnvName, functions: &[FunctionId], waiter: &Arc<Waiter>) {
        waiter.picked.store(false, Ordering::Release);
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for f in functions {
            let queue = waiting.entry((env.clone(), f.clone())).or_default();
            if !queue.iter().any(|w| Arc::ptr_eq(w, waiter)) {
                queue.push_back(waiter.clone());
            }
        }
    }

    /// Takes `waiter` off every list; whether it had been picked.
    fn leave(&self, env: &EnvName, functions: &[FunctionId], waiter: &Arc<Waiter>) -> bool {
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
        waiter.picked.load(Ordering::Acquire)
    }
}

/// A poll's place among the waiters for as long as the poll runs.
pub(crate) struct Place<'a> {
    waiters: &'a PullWaiters,
    env: EnvName,
    functions: Vec<FunctionId>,
    waiter: Arc<Waiter>,
}

impl<'a> Place<'a> {
    pub(crate) fn new(waiters: &'a PullWaiters, env: &EnvName, functions: &[FunctionId]) -> Self {
        Place {
            waiters,
            env: env.clone(),
            functions: functions.to_vec(),
            waiter: Arc::default(),
        }
    }

    /// Lists the poll (before it tries a lease).
    pub(crate) fn enter(&self) {
        self.waiters.enter(&self.env, &self.functions, &self.waiter);
    }

    /// Waits until the poll is picked for a run.
    pub(crate) async fn picked(&self) {
        self.waiter.notify.notified().await;
    }
}

impl Drop for Place<'_> {
    /// A poll that returns (with a job, with none, or dropped) after it was picked did not
    /// take the run it was picked for: another poll waiting for these functions gets it.
    fn drop(&mut self) {
        if self.waiters.leave(&self.env, &self.functions, &self.waiter) {
            for f in &self.functions {
                self.waiters.wake(&self.env, f);
            }
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
    async fn a_wake_before_the_wait_is_kept() {
        let waiters = PullWaiters::default();
        let place = Place::new(&waiters, &env(), &[f("a")]);
        place.enter();
        waiters.wake(&env(), &f("a"));
        // The poll was still trying its lease when the run came: its wait ends at once.
        assert!(is_picked(&place).await);
        place.enter();
        assert!(!is_picked(&place).await, "entering again clears the pick");
    }
}
