-- Coffer's catalog on PostgreSQL, version 4: orchestrations and their runs, and the link
-- from a function run to the orchestration step that started it. Same tables and columns
-- as the SQLite list (migration 9); keys that are compared are `TEXT COLLATE "C"`, numbers
-- BIGINT. Both tables belong to one incarnation and go with it; an orchestration run does
-- not reference its orchestration (deleting one keeps its runs' history).

CREATE TABLE orchestrations (
    environment TEXT COLLATE "C" NOT NULL,
    environment_id TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    -- A label, never compared; bytes all the same, as every name column here.
    name TEXT COLLATE "C" NOT NULL,
    steps TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (environment, id),
    FOREIGN KEY (environment, environment_id) REFERENCES environments (name, id)
        ON DELETE CASCADE
);

-- A run of the machine the service drives: every step is one conditional write on
-- `version`; a lease (`lease_expires_at`) is one statement (`FOR UPDATE SKIP LOCKED` over
-- the due runs, then the update), so one node at a time takes a run's next step.
CREATE TABLE orchestration_runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    environment TEXT COLLATE "C" NOT NULL,
    environment_id TEXT COLLATE "C" NOT NULL,
    orchestration_id TEXT COLLATE "C" NOT NULL,
    orchestration_revision BIGINT NOT NULL,
    status TEXT COLLATE "C" NOT NULL CHECK (
        status IN ('running', 'waiting_approval', 'succeeded', 'failed', 'rejected')),
    current_step TEXT COLLATE "C",
    steps TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    decision TEXT,
    wake_at BIGINT,
    lease_expires_at BIGINT,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    FOREIGN KEY (environment, environment_id) REFERENCES environments (name, id)
        ON DELETE CASCADE
);

-- Listing an environment's runs newest first, all of them or one orchestration's or one
-- status's.
CREATE INDEX orchestration_runs_environment ON orchestration_runs (environment, id);
CREATE INDEX orchestration_runs_environment_orchestration
    ON orchestration_runs (environment, orchestration_id, id);
CREATE INDEX orchestration_runs_environment_status
    ON orchestration_runs (environment, status, id);

-- Leasing: the runs not ended that wait for a time, earliest first; the history is not in
-- it.
CREATE INDEX orchestration_runs_due ON orchestration_runs (wake_at, id)
    WHERE status IN ('running', 'waiting_approval') AND wake_at IS NOT NULL;

-- The orchestration step a function run executes: both columns or neither.
ALTER TABLE runs ADD COLUMN flow_id TEXT COLLATE "C";
ALTER TABLE runs ADD COLUMN step_id TEXT;
ALTER TABLE runs ADD CONSTRAINT runs_step_link CHECK ((flow_id IS NULL) = (step_id IS NULL));
