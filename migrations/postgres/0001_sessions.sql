-- backprop-server's schema, PostgreSQL dialect (migrations/sqlite/ holds the same in SQLite's).
--
-- A session is one row of `sessions` (its settings and small state) plus its parts, each in a
-- table of its own so that writing one (a train's weights, a touch of the TTL clock) never
-- rewrites another (a large dataset): `weights` (every W_k then every b_k, row-major, as
-- little-endian f64), `datasets` (x and y likewise; a built-in dataset only by name) and
-- `history` (one chunk of losses per train, appended, never rewritten). Numbers are stored
-- bit for bit: f64 blobs, and DOUBLE PRECISION columns, which are IEEE doubles. The parts are
-- keyed by the session's integer `seq`, as in SQLite.

-- Marks the database as backprop-server's (for SQLite, PRAGMA application_id says so too).
CREATE TABLE backprop_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO backprop_meta (name, value) VALUES ('application', 'backprop-server');

CREATE TABLE sessions (
    -- Creation order: GET /sessions lists newest first.
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    -- The API key that created it (NULL: the admin, or a server without keys).
    owner TEXT,
    -- Unix seconds.
    created_at BIGINT NOT NULL,
    -- The TTL clock: Unix second (rounded up) of the last request that named the session.
    touched_at BIGINT NOT NULL,
    -- Raised by every change; a replica's cached copy is current while it matches.
    version BIGINT NOT NULL,
    -- Raised when the dataset is replaced, and when a new history starts (PUT /weights).
    dataset_gen BIGINT NOT NULL,
    history_gen BIGINT NOT NULL,
    -- The network's settings: layers as a JSON array of sizes.
    layers TEXT NOT NULL,
    activation TEXT NOT NULL,
    learning_rate DOUBLE PRECISION NOT NULL,
    grad_reduction TEXT NOT NULL,
    bias BOOLEAN NOT NULL,
    init_method TEXT NOT NULL,
    init_seed BIGINT,
    -- Entries in the history (the sum of its chunks' lengths), and the loss before them.
    epochs BIGINT NOT NULL,
    initial_loss DOUBLE PRECISION
);
CREATE INDEX sessions_by_owner ON sessions (owner, seq);
-- The sweeper asks for sessions idle since a second; replicas share the work.
CREATE INDEX sessions_by_clock ON sessions (touched_at);

CREATE TABLE weights (
    session BIGINT PRIMARY KEY REFERENCES sessions (seq) ON DELETE CASCADE,
    params BYTEA NOT NULL
);

CREATE TABLE datasets (
    session BIGINT PRIMARY KEY REFERENCES sessions (seq) ON DELETE CASCADE,
    -- A built-in dataset's name (x and y are then NULL: the binary has them).
    builtin TEXT,
    -- One sample's shape as it was sent, a JSON array ([2, 2] for the notebook's images).
    sample_shape TEXT NOT NULL,
    samples BIGINT NOT NULL,
    x BYTEA,
    y BYTEA
);

CREATE TABLE history (
    session BIGINT NOT NULL REFERENCES sessions (seq) ON DELETE CASCADE,
    -- The 0-based epoch of the chunk's first loss.
    first_epoch BIGINT NOT NULL,
    losses BYTEA NOT NULL,
    PRIMARY KEY (session, first_epoch)
);

CREATE TABLE keys (
    name TEXT PRIMARY KEY,
    -- The hash of the key's secret; the secret itself is never stored.
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- f64 blobs hardly compress: store them out of line as they are, without trying.
ALTER TABLE weights ALTER COLUMN params SET STORAGE EXTERNAL;
ALTER TABLE datasets ALTER COLUMN x SET STORAGE EXTERNAL;
ALTER TABLE datasets ALTER COLUMN y SET STORAGE EXTERNAL;
ALTER TABLE history ALTER COLUMN losses SET STORAGE EXTERNAL;
