-- Gantry's first schema: webhook deliveries, runs, their stages and their log lines.
--
-- Kept to SQL that PostgreSQL also speaks (apart from AUTOINCREMENT and WITHOUT ROWID), so
-- migrations/postgres/ can mirror it table for table. Times are RFC 3339 text in UTC; statuses are
-- lowercase text, checked here and parsed in gantry-store's model.rs.

-- GitHub webhook deliveries, stored before anything acts on them. `guid` is X-GitHub-Delivery;
-- `outcome` stays NULL until the server has decided what the delivery did (pending after a crash).
-- `payload` comes last so reading the other columns never walks its overflow pages. No
-- AUTOINCREMENT: it costs a write per insert, and a reused id of a deleted delivery harms nothing.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    guid        TEXT    NOT NULL UNIQUE,
    event       TEXT    NOT NULL,
    project     TEXT,
    git_ref     TEXT,
    after_sha   TEXT,
    outcome     TEXT,
    run_id      INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    received_at TEXT    NOT NULL,
    payload     TEXT    NOT NULL
);

CREATE INDEX deliveries_pending ON deliveries (id) WHERE outcome IS NULL;

-- The last run number handed out per project, so numbers are never reused even if runs are deleted.
CREATE TABLE run_counters (
    project     TEXT    PRIMARY KEY NOT NULL,
    last_number INTEGER NOT NULL
);

-- AUTOINCREMENT: run ids appear in URLs and logs, so one is never handed out twice.
CREATE TABLE runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    project        TEXT    NOT NULL,
    number         INTEGER NOT NULL,
    status         TEXT    NOT NULL
        CHECK (status IN ('queued', 'running', 'success', 'failure', 'cancelled', 'error')),
    event          TEXT    NOT NULL,
    branch         TEXT,
    tag            TEXT,
    commit_sha     TEXT    NOT NULL,
    commit_message TEXT,
    reason         TEXT,
    delivery_id    INTEGER REFERENCES deliveries (id) ON DELETE SET NULL,
    rerun_of       INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    created_at     TEXT    NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    UNIQUE (project, number)
);

-- The queue (oldest queued first), restart recovery and status filters.
CREATE INDEX runs_status ON runs (status, id);
-- A project's runs, newest first.
CREATE INDEX runs_project ON runs (project, id);

CREATE TABLE stages (
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    status      TEXT    NOT NULL
        CHECK (status IN ('pending', 'running', 'success', 'failure', 'skipped', 'cancelled')),
    attempt     INTEGER NOT NULL,
    exit_code   INTEGER,
    reason      TEXT,
    started_at  TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, name)
);

-- One row per log line, clustered by (run, stage, seq) so a range of a long log is one b-tree walk.
CREATE TABLE log_lines (
    run_id    INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage     TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    stream    TEXT    NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    logged_at TEXT    NOT NULL,
    text      TEXT    NOT NULL,
    PRIMARY KEY (run_id, stage, seq)
) WITHOUT ROWID;
