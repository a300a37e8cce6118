-- What a stage produced for later stages (a build stage's pushed digest and image), as a JSON
-- object; NULL when it produced nothing.
ALTER TABLE stages ADD COLUMN outputs TEXT;

-- Every rollout and rollback Gantry made: from a pipeline's deploy stage (run_id and stage set) or
-- by hand (`gantry rollback`, the API; run_id NULL).
CREATE TABLE deployments (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    run_id           INTEGER REFERENCES runs (id),
    stage            TEXT,
    cluster          TEXT NOT NULL,
    namespace        TEXT NOT NULL,
    deployment       TEXT NOT NULL,
    image_before     TEXT,
    image_after      TEXT,
    revision_before  INTEGER,
    revision_after   INTEGER,
    result           TEXT NOT NULL CHECK (result IN ('complete', 'failed', 'rolled_back', 'timed_out', 'cancelled', 'error')),
    cause            TEXT,
    started_at       TEXT NOT NULL,
    finished_at      TEXT NOT NULL
);
CREATE INDEX deployments_by_target ON deployments (cluster, namespace, deployment, id);
