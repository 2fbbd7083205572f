//! Background trains in this process: each one's live state, its cancel flag, and the
//! fan-out of its progress to event streams.
//!
//! The durable record of a job is the store's ([`crate::store::Job`]); this is what only the
//! process running it knows: how far it has got this very moment. The training loop publishes
//! that into a [`tokio::sync::watch`] channel (at most every [`PUBLISH_EVERY`], so the cost to
//! training is a clock read per epoch, which the time limit pays anyway), and each event
//! stream samples the channel at its own pace. A watch holds one value: a slow or stalled
//! reader never holds the loop back, nor makes anything grow; it sees the latest state when
//! it next looks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::store::Job;

/// How often a running train publishes its progress at most.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(10);

/// The jobs this process runs, by session id.
#[derive(Default)]
pub struct Jobs {
    live: Mutex<HashMap<String, Arc<LiveJob>>>,
    /// The number of live jobs, watched by shutdown (it waits for them to commit and end).
    count: watch::Sender<usize>,
}

/// A job this process runs: submitted, queued, running, or just finished.
pub struct LiveJob {
    pub session: String,
    cancel: AtomicBool,
    view: watch::Sender<Job>,
}

impl LiveJob {
    /// Asks it to stop at its next epoch boundary (or before it starts).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The job as it stands, with its progress this moment.
    pub fn job(&self) -> Job {
        self.view.borrow().clone()
    }

    /// A receiver that sees every later state (the latest one when it looks).
    pub fn subscribe(&self) -> watch::Receiver<Job> {
        self.view.subscribe()
    }

    /// Changes the job's state (started, committed, finished) for its watchers.
    pub fn update(&self, f: impl FnOnce(&mut Job)) {
        self.view.send_modify(f);
    }

    /// Publishes progress: `epochs` applied by the job so far, and the loss after the last.
    pub fn progress(&self, epochs: u64, loss: f64) {
        self.view.send_modify(|j| {
            j.live_epochs = epochs;
            j.live_loss = Some(loss);
        });
    }
}

impl Jobs {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<LiveJob>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a job (just submitted) of `session`.
    pub fn start(&self, session: &str, job: Job) -> Arc<LiveJob> {
        let live = Arc::new(LiveJob {
            session: session.to_owned(),
            cancel: AtomicBool::new(false),
            view: watch::Sender::new(job),
        });
        let mut map = self.map();
        map.insert(session.to_owned(), live.clone());
        self.count.send_replace(map.len());
        live
    }

    /// The job this process runs on `session`, if any.
    pub fn get(&self, session: &str) -> Option<Arc<LiveJob>> {
        self.map().get(session).cloned()
    }

    /// Forgets a job that ended (its watchers keep its last state).
    pub fn finish(&self, live: &Arc<LiveJob>) {
        let mut map = self.map();
        if map.get(&live.session).is_some_and(|l| Arc::ptr_eq(l, live)) {
            map.remove(&live.session);
        }
        self.count.send_replace(map.len());
    }

    /// Cancels the job on `session` if this process runs one (its session was deleted).
    pub fn cancel(&self, session: &str) {
        if let Some(live) = self.get(session) {
            live.cancel();
        }
    }

    /// Resolves when no job is left (shutdown waits for their last commits).
    pub async fn all_ended(&self) {
        let mut count = self.count.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }
}
