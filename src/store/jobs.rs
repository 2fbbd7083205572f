//! Background trains as the store keeps them: one [`Job`] per session, its current or last.
//!
//! A job's record is written when it is submitted (queued), when it starts (running), at
//! each checkpoint (in the same transaction as the weights and losses it commits, see
//! [`JobCommit`]) and when it ends (done). So the fields that make its result always describe
//! what the session holds, and a job whose process died (a `kill -9`, a lost replica) is
//! reported `interrupted` with exactly the epochs that were kept: by the next start on SQLite,
//! and, on PostgreSQL, by any replica once its runner's heartbeat is older than
//! [`STALE_AFTER_MS`].

use std::sync::{Mutex, PoisonError};

/// A runner that has not said it is alive for this long is taken for dead (PostgreSQL
/// replicas; runners beat every few hundred milliseconds).
pub const STALE_AFTER_MS: i64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for the session's turn (earlier changes) or for a worker.
    Queued,
    Running,
    Done,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Running, Self::Done]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// How a job ended: a train's status, and `interrupted` (its process died, or its database
/// failed it, before it could say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Completed,
    Diverged,
    TimeLimit,
    Cancelled,
    Interrupted,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Diverged => "diverged",
            Self::TimeLimit => "time_limit",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        [
            Self::Completed,
            Self::Diverged,
            Self::TimeLimit,
            Self::Cancelled,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// Why a job did not run at all: the problem a waiting train would have been answered with
/// (the store keeps its words; the HTTP layer shapes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub status: u16,
    pub code: String,
    pub detail: String,
}

/// A background train's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    /// The process that runs it ([`crate::store::Store::instance`]).
    pub runner: String,
    pub state: JobState,
    pub epochs_requested: u64,
    pub return_loss: bool,
    /// Unix milliseconds.
    pub submitted_at: i64,
    pub started_at: Option<i64>,
    pub heartbeat_at: i64,
    pub cancel_requested: bool,
    /// The history's length when it began; `None` once a new history started.
    pub first_epoch: Option<u64>,
    /// Committed: epochs applied and the last of their losses.
    pub epochs_done: u64,
    pub last_loss: Option<f64>,
    /// The session after the job's last commit (its result's numbers).
    pub epochs_trained: u64,
    pub initial_loss: Option<f64>,
    pub final_loss: Option<f64>,
    /// Progress past the last commit, as its runner last told (it runs ahead of the commits).
    pub live_epochs: u64,
    pub live_loss: Option<f64>,
    /// Once done.
    pub status: Option<JobStatus>,
    pub error: Option<JobError>,
}

impl Job {
    /// Epochs applied so far: the live count while it runs, the committed one once done.
    pub fn progress(&self) -> (u64, Option<f64>) {
        if self.state != JobState::Done && self.live_epochs > self.epochs_done {
            (self.live_epochs, self.live_loss)
        } else {
            (self.epochs_done, self.last_loss)
        }
    }

    pub fn is_active(&self) -> bool {
        self.state != JobState::Done
    }

    /// Whether another replica's runner has gone silent on it, at `now` (Unix ms).
    pub fn is_stale(&self, me: &str, now: i64) -> bool {
        self.is_active() && self.runner != me && now - self.heartbeat_at > STALE_AFTER_MS
    }

    /// Marks it ended by its process's death: the committed numbers stand.
    pub fn interrupt(&mut self) {
        self.state = JobState::Done;
        self.status = Some(JobStatus::Interrupted);
        self.live_epochs = self.epochs_done;
        self.live_loss = self.last_loss;
    }
}

/// A checkpoint's (or a final commit's) word on its job, written with its weights and losses.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCommit {
    pub id: String,
    pub epochs_done: u64,
    pub last_loss: Option<f64>,
}

/// An entry's cached job: the truth for `memory` and SQLite (one process), unused for
/// PostgreSQL (where another replica may change it).
#[derive(Debug, Default)]
pub(super) struct JobSlot(Mutex<Option<Option<Job>>>);

impl JobSlot {
    /// `None` when not read from the database yet.
    pub fn get(&self) -> Option<Option<Job>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, job: Option<Job>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(job);
    }

    /// Runs `f` on the cached job (if known) under the slot's lock.
    pub fn update<T>(&self, f: impl FnOnce(&mut Option<Option<Job>>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
