-- The runtime plane: functions, their runs, and the idempotency keys of event sends. Every
-- row belongs to one environment incarnation and goes with it: a foreign key to it,
-- ON DELETE CASCADE (SQLite enforces foreign keys on the writer's connection only, where
-- `PRAGMA foreign_keys` is on), so deleting an environment deletes its functions, runs and
-- receipts in its transaction, and no row can be written into an incarnation that does not
-- exist (a new environment of the same name starts with none).
--
-- A composite foreign key needs a unique index on exactly its parent columns: `name` alone
-- is the key and `id` alone is unique, so the pair is too.
CREATE UNIQUE INDEX environments_name_id ON environments (name, id);

-- A function: its definition (JSON text, never parsed by a store) and its signing secret,
-- stored like a secret value (`signing_key_version` 0 = unencrypted, dev mode), with the
-- secret a rotation replaced, kept until `previous_until`.
CREATE TABLE functions (
    environment TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    id TEXT NOT NULL,
    spec TEXT NOT NULL,
    signing_key_version INTEGER NOT NULL,
    signing_value TEXT NOT NULL,
    previous_key_version INTEGER,
    previous_value TEXT,
    previous_until BIGINT,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (environment, id),
    FOREIGN KEY (environment, environment_id) REFERENCES environments (name, id)
        ON DELETE CASCADE
);

-- The run queue and its history. `id` sorts by creation (`run_<ms><random>`).
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    function_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    event_name TEXT NOT NULL,
    event_data TEXT NOT NULL,
    trigger_params TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    output TEXT,
    error TEXT,
    lease_expires_at BIGINT,
    next_attempt_at BIGINT NOT NULL,
    idempotency_key TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    FOREIGN KEY (environment, environment_id) REFERENCES environments (name, id)
        ON DELETE CASCADE
);

-- Listing an environment's runs newest first, unfiltered or by function or by status
-- (the first is also what the cascade looks children up by).
CREATE INDEX runs_environment ON runs (environment, id);
CREATE INDEX runs_function ON runs (environment, function_id, id);
CREATE INDEX runs_status ON runs (environment, status, id);

-- Leasing: unfinished runs only, in the order they fall due (queued: their next attempt;
-- running: their lease's end), for the push dispatcher (every environment) and for a pull
-- worker (its environment: other environments' backlogs are not in its way). Partial, so
-- they hold the queue, not the history.
CREATE INDEX runs_queued ON runs (mode, next_attempt_at) WHERE status = 'queued';
CREATE INDEX runs_leased ON runs (mode, lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_queued_by_environment ON runs (environment, mode, next_attempt_at)
    WHERE status = 'queued';
CREATE INDEX runs_leased_by_environment ON runs (environment, mode, lease_expires_at)
    WHERE status = 'running';

-- Replaying a send: the runs an idempotency key started in an incarnation.
CREATE INDEX runs_idempotency ON runs (environment_id, idempotency_key, created_at)
    WHERE idempotency_key IS NOT NULL;

-- Idempotency keys seen per incarnation, remembered for a window (24 h); a send prunes a
-- bounded number of expired ones, oldest first, so the table holds about one window's keys.
CREATE TABLE event_receipts (
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (environment_id, idempotency_key)
);
CREATE INDEX event_receipts_created ON event_receipts (created_at);

-- What an audit-only row records beyond its columns (a resolution's names, never a value),
-- compact JSON; NULL for every other row, which then hashes as it did before the column.
ALTER TABLE audit_log ADD COLUMN detail TEXT;
