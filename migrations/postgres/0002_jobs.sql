-- Background trains (POST /train with "wait": false), PostgreSQL dialect (migrations/sqlite/
-- holds the same in SQLite's).
--
-- One row per session: its current or last job (GET /sessions/{id}/training). A new job
-- replaces a finished one; a queued or running one is never replaced. The columns that make
-- the job's result (epochs_done, epochs_trained, initial_loss, final_loss, last_loss) always
-- hold the session as of the job's last commit: they are written in the same transaction as
-- each checkpoint's weights and losses, so a job cut by a crash is marked `interrupted` and
-- reports exactly what the session kept.
CREATE TABLE jobs (
    session BIGINT PRIMARY KEY REFERENCES sessions (seq) ON DELETE CASCADE,
    -- A UUID per job: a runner's writes name the job they belong to.
    id TEXT NOT NULL,
    -- The server process that runs it (a UUID made at each start).
    runner TEXT NOT NULL,
    -- queued, running or done.
    state TEXT NOT NULL,
    epochs_requested BIGINT NOT NULL,
    return_loss BOOLEAN NOT NULL,
    -- Unix milliseconds.
    submitted_at BIGINT NOT NULL,
    started_at BIGINT,
    -- When its runner last said it is alive (replicas tell a dead runner's jobs by it).
    heartbeat_at BIGINT NOT NULL,
    -- DELETE /sessions/{id}/training on any replica sets it; the runner stops at an epoch
    -- boundary.
    cancel_requested BOOLEAN NOT NULL,
    -- The history's length when the job began (its losses follow it); NULL once a new
    -- history starts (PUT /weights), which drops them.
    first_epoch BIGINT,
    -- Committed: epochs the job applied, its last loss, and the session after its last commit.
    epochs_done BIGINT NOT NULL,
    last_loss DOUBLE PRECISION,
    epochs_trained BIGINT NOT NULL,
    initial_loss DOUBLE PRECISION,
    final_loss DOUBLE PRECISION,
    -- Progress past the last commit, as the runner last reported it (for other replicas).
    live_epochs BIGINT NOT NULL,
    live_loss DOUBLE PRECISION,
    -- Once done: completed, diverged, time_limit, cancelled or interrupted.
    status TEXT,
    -- A job that could not run: the problem a waiting train would have answered.
    error_status BIGINT,
    error_code TEXT,
    error_detail TEXT
);
