//! `GET /sessions/{id}/events`: a session's background train as Server-Sent Events.
//!
//! The stream follows the session's current job to its end: first a `state` event (the
//! session's `epochs_trained` and `last_loss`, and its job as `GET /training` shows it, or
//! null), then, while the job is queued or running, `epoch` events `{"epoch": k, "loss": v}`
//! (k numbers the session's history, as `GET /loss` and the notebook's `iteration: k` do), a
//! `state` event at each change of the job's state, and last a `done` event (the same shape
//! as `state`, the job with its result), after which the stream ends. A session with no job
//! queued or running gets its `state` and `done` at once. So `curl -N .../events` after a
//! `"wait": false` train shows it to its end and returns, however fast the job was; to
//! follow the next job, open the stream again. Comment lines (`: keep-alive`) every
//! [`HEARTBEAT`] keep a quiet stream (a job waiting for its turn, a long epoch) open through
//! proxies.
//!
//! Epoch events are samples, at most one per [`SAMPLE_EVERY`] (about 20 a second), and the
//! job's last epoch is always sent. A stream only looks when its client has taken the last
//! events: it reads the job's latest state from a watch channel (the job runs here) or the
//! database (it runs on another replica, polled at the same rate), so a slow or stalled
//! reader costs the training nothing and holds nothing but its own last sample.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::AppState;
use super::jobs::{current, job_json};
use crate::error::ApiResult;
use crate::store::{Entry, Job, JobState, Session};

/// Epoch events are at least this far apart: about 20 a second.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// A comment line this often keeps an idle stream open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// A `done` event whose result carries more losses than this is written on a worker.
const INLINE_LOSSES: u64 = 100_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/sessions/{id}/events", get(events))
}

async fn events(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let entry = state.store().get(&id).await?;
    let local = state.jobs().get(&id).map(|l| l.subscribe());
    let job = match &local {
        Some(rx) => Some(rx.borrow().clone()),
        None => current(&state, &entry).await?,
    };
    let follower = Follower {
        state,
        entry,
        local,
        job,
        sent: None,
        last_epoch_at: None,
        ended: false,
    };
    let events = stream::unfold(follower, |mut f| async move {
        let batch = f.next().await?;
        Some((stream::iter(batch.into_iter().map(Ok::<_, Infallible>)), f))
    })
    .flatten();
    Ok(sse(events))
}

fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("keep-alive"))
        .into_response()
}

/// One stream's view of the job it follows.
struct Follower {
    state: AppState,
    entry: Arc<Entry>,
    /// The job's live state, when this process runs it.
    local: Option<watch::Receiver<Job>>,
    /// The job as last seen.
    job: Option<Job>,
    /// The job's state and epochs as last sent.
    sent: Option<(JobState, u64)>,
    last_epoch_at: Option<Instant>,
    ended: bool,
}

impl Follower {
    /// The next events to send, after waiting for something to say; `None` ends the stream.
    async fn next(&mut self) -> Option<Vec<Event>> {
        if self.ended {
            return None;
        }
        let Some(job) = self.job.clone() else {
            // Never had a job: its state, and done.
            self.ended = true;
            let body = self.body(None).await;
            return Some(vec![event("state", &body), event("done", &body)]);
        };
        if self.sent.is_none() {
            self.sent = Some((job.state, job.progress().0));
            let body = self.body(Some(&job)).await;
            if !job.is_active() {
                self.ended = true;
                return Some(vec![event("state", &body), event("done", &body)]);
            }
            return Some(vec![event("state", &body)]);
        }
        if let Some(at) = self.last_epoch_at {
            tokio::time::sleep_until(at + SAMPLE_EVERY).await;
        }
        let job = self.sample().await?;
        let mut out = Vec::new();
        let (state, epochs) = self.sent.unwrap_or((job.state, 0));
        let (now_epochs, loss) = job.progress();
        if now_epochs > epochs
            && let (Some(first), Some(loss)) = (job.first_epoch, loss)
        {
            out.push(event(
                "epoch",
                &json!({"epoch": first + now_epochs, "loss": loss}),
            ));
            self.last_epoch_at = Some(Instant::now());
        }
        self.sent = Some((job.state, now_epochs.max(epochs)));
        if job.state != state || !job.is_active() {
            if !job.is_active() {
                self.ended = true;
                // The session as the job left it.
                if let Ok(e) = self.state.store().get(&self.entry.id).await {
                    self.entry = e;
                }
                let body = self.done_body(&job).await;
                out.push(event("done", &body));
            } else {
                out.push(event("state", &self.body(Some(&job)).await));
            }
        }
        self.job = Some(job);
        Some(out)
    }

    /// Waits for the job to move, and returns it; `None` ends the stream (shutdown with no
    /// job here to see out, the session gone).
    async fn sample(&mut self) -> Option<Job> {
        let stopping = self.state.clone();
        match &mut self.local {
            Some(rx) => {
                // The sender goes when the job's runner is done with it; its last state (done)
                // stays. A runner gone without saying so ends the stream.
                let gone = rx.changed().await.is_err();
                let job = rx.borrow_and_update().clone();
                (!gone || !job.is_active()).then_some(job)
            }
            None => {
                tokio::select! {
                    () = tokio::time::sleep(SAMPLE_EVERY) => {}
                    () = stopping.stopping() => return None,
                }
                // Another replica runs it: the database has its beats and its end.
                current(&self.state, &self.entry).await.ok().flatten()
            }
        }
    }

    /// The `state` event's body: the session's numbers (with the job's progress) and the job.
    async fn body(&self, job: Option<&Job>) -> String {
        let s = self.entry.snapshot();
        let (epochs_trained, last_loss) = numbers(job, &s);
        json!({
            "epochs_trained": epochs_trained,
            "last_loss": last_loss,
            "job": job.map(|j| job_json(j, Some(&s))),
        })
        .to_string()
    }

    /// The `done` event's body, written on a worker when its result carries many losses.
    async fn done_body(&self, job: &Job) -> String {
        if !(job.return_loss && job.epochs_done > INLINE_LOSSES) {
            return self.body(Some(job)).await;
        }
        let (s, job) = (self.entry.snapshot(), job.clone());
        self.state
            .compute(move || {
                let (epochs_trained, last_loss) = numbers(Some(&job), &s);
                json!({
                    "epochs_trained": epochs_trained,
                    "last_loss": last_loss,
                    "job": job_json(&job, Some(&s)),
                })
                .to_string()
            })
            .await
            .unwrap_or_else(|_| Value::Null.to_string())
    }
}

/// The session's `epochs_trained` and `last_loss` with a running job's progress counted in.
fn numbers(job: Option<&Job>, s: &Session) -> (u64, Option<f64>) {
    let stored = (s.history.len() as u64, s.history.last());
    match job {
        Some(j) if j.state == JobState::Running => match (j.first_epoch, j.progress()) {
            (Some(first), (n, Some(loss))) if first + n >= stored.0 => (first + n, Some(loss)),
            _ => stored,
        },
        _ => stored,
    }
}

fn event(name: &str, data: &impl ToString) -> Event {
    Event::default().event(name).data(data.to_string())
}
