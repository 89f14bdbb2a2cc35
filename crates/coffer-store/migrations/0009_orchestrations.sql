-- Orchestrations and their runs. Both belong to one environment incarnation and go with it
-- (a foreign key, ON DELETE CASCADE, as the runtime plane's rows of migration 7). An
-- orchestration run does not reference its orchestration: deleting an orchestration keeps
-- its runs (their history).

-- An orchestration: a label and its steps (JSON text a store never parses; encrypted
-- parameters arrive sealed inside it).
CREATE TABLE orchestrations (
    environment TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    steps TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (environment, id),
    FOREIGN KEY (environment, environment_id) REFERENCES environments (name, id)
        ON DELETE CASCADE
);

-- An orchestration run: a state machine the service drives, one conditional write on
-- `version` per step. `id` sorts by creation (`orun_<ms><random>`).
CREATE TABLE orchestration_runs (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    orchestration_id TEXT NOT NULL,
    orchestration_revision BIGINT NOT NULL,
    status TEXT NOT NULL,
    current_step TEXT,
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

-- Listing an environment's runs newest first, unfiltered or by orchestration or by status
-- (the first is also what the cascade looks children up by).
CREATE INDEX orchestration_runs_environment ON orchestration_runs (environment, id);
CREATE INDEX orchestration_runs_orchestration
    ON orchestration_runs (environment, orchestration_id, id);
CREATE INDEX orchestration_runs_status ON orchestration_runs (environment, status, id);

-- Leasing: the runs not ended that wait for a time, earliest first. Partial, so it holds
-- the runs in flight, not the history.
CREATE INDEX orchestration_runs_due ON orchestration_runs (wake_at, id)
    WHERE status IN ('running', 'waiting_approval') AND wake_at IS NOT NULL;

-- The orchestration step a function run executes (both or neither): when the run ends,
-- its orchestration run is made due in the same transaction.
ALTER TABLE runs ADD COLUMN flow_id TEXT;
ALTER TABLE runs ADD COLUMN step_id TEXT;
