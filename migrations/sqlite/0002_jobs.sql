-- Background trains (POST /train with "wait": false), SQLite dialect (migrations/postgres/
-- holds the same in PostgreSQL's).
--
-- One row per session: its current or last job (GET /sessions/{id}/training). A new job
-- replaces a finished one; a queued or running one is never replaced. The columns that make
-- the job's result (epochs_done, epochs_trained, initial_loss, final_loss, last_loss) always
-- hold the session as of the job's last commit: they are written in the same transaction as
-- each checkpoint's weights and losses, so a job cut by a crash is marked `interrupted` and
-- reports exactly what the session kept.
CREATE TABLE jobs (
    session INTEGER PRIMARY KEY REFERENCES sessions (seq) ON DELETE CASCADE,
    -- A UUID per job: a runner's writes name the job they belong to.
    id TEXT NOT NULL,
    -- The server process that runs it (a UUID made at each start).
    runner TEXT NOT NULL,
    -- queued, running or done.
    state TEXT NOT NULL,
    epochs_requested INTEGER NOT NULL,
    return_loss INTEGER NOT NULL,
    -- Unix milliseconds.
    submitted_at INTEGER NOT NULL,
    started_at INTEGER,
    -- When its runner last said it is alive (replicas tell a dead runner's jobs by it).
    heartbeat_at INTEGER NOT NULL,
    -- DELETE /sessions/{id}/training on any replica sets it; the runner stops at an epoch
    -- boundary.
    cancel_requested INTEGER NOT NULL,
    -- The history's length when the job began (its losses follow it); NULL once a new
    -- history starts (PUT /weights), which drops them.
    first_epoch INTEGER,
    -- Committed: epochs the job applied, its last loss, and the session after its last commit.
    epochs_done INTEGER NOT NULL,
    last_loss REAL,
    epochs_trained INTEGER NOT NULL,
    initial_loss REAL,
    final_loss REAL,
    -- Progress past the last commit, as the runner last reported it (for other replicas).
    live_epochs INTEGER NOT NULL,
    live_loss REAL,
    -- Once done: completed, diverged, time_limit, cancelled or interrupted.
    status TEXT,
    -- A job that could not run: the problem a waiting train would have answered.
    error_status INTEGER,
    error_code TEXT,
    error_detail TEXT
);
