-- backprop-server's schema, SQLite dialect (migrations/postgres/ holds the same in PostgreSQL's).
--
-- A session is one row of `sessions` (its settings and small state) plus its parts, each in a
-- table of its own so that writing one (a train's weights, a touch of the TTL clock) never
-- rewrites another (a large dataset): `weights` (every W_k then every b_k, row-major, as
-- little-endian f64), `datasets` (x and y likewise; a built-in dataset only by name) and
-- `history` (one chunk of losses per train, appended, never rewritten). Numbers are stored
-- bit for bit: f64 blobs, and REAL columns, which are IEEE doubles. The parts are keyed by
-- the session's integer `seq`, so each is one b-tree with no index beside it: a commit
-- writes (and syncs) as few pages as it can.

-- Marks the database as backprop-server's (PRAGMA application_id says so too).
CREATE TABLE backprop_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO backprop_meta (name, value) VALUES ('application', 'backprop-server');

CREATE TABLE sessions (
    -- Creation order: GET /sessions lists newest first.
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    -- The API key that created it (NULL: the admin, or a server without keys).
    owner TEXT,
    -- Unix seconds.
    created_at INTEGER NOT NULL,
    -- The TTL clock: Unix second (rounded up) of the last request that named the session.
    touched_at INTEGER NOT NULL,
    -- Raised by every change; a replica's cached copy is current while it matches.
    version INTEGER NOT NULL,
    -- Raised when the dataset is replaced, and when a new history starts (PUT /weights).
    dataset_gen INTEGER NOT NULL,
    history_gen INTEGER NOT NULL,
    -- The network's settings: layers as a JSON array of sizes.
    layers TEXT NOT NULL,
    activation TEXT NOT NULL,
    learning_rate REAL NOT NULL,
    grad_reduction TEXT NOT NULL,
    bias INTEGER NOT NULL,
    init_method TEXT NOT NULL,
    init_seed INTEGER,
    -- Entries in the history (the sum of its chunks' lengths), and the loss before them.
    epochs INTEGER NOT NULL,
    initial_loss REAL
);
-- (No index on touched_at: the clock moves with every use, and the sweeper's scan is rare.)
CREATE INDEX sessions_by_owner ON sessions (owner, seq);

CREATE TABLE weights (
    session INTEGER PRIMARY KEY REFERENCES sessions (seq) ON DELETE CASCADE,
    params BLOB NOT NULL
);

CREATE TABLE datasets (
    session INTEGER PRIMARY KEY REFERENCES sessions (seq) ON DELETE CASCADE,
    -- A built-in dataset's name (x and y are then NULL: the binary has them).
    builtin TEXT,
    -- One sample's shape as it was sent, a JSON array ([2, 2] for the notebook's images).
    sample_shape TEXT NOT NULL,
    samples INTEGER NOT NULL,
    x BLOB,
    y BLOB
);

CREATE TABLE history (
    session INTEGER NOT NULL REFERENCES sessions (seq) ON DELETE CASCADE,
    -- The 0-based epoch of the chunk's first loss.
    first_epoch INTEGER NOT NULL,
    losses BLOB NOT NULL,
    PRIMARY KEY (session, first_epoch)
) WITHOUT ROWID;

CREATE TABLE keys (
    name TEXT PRIMARY KEY,
    -- The hash of the key's secret; the secret itself is never stored.
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
