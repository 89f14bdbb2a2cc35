-- Coffer's catalog on PostgreSQL, version 2: the runtime plane (functions, runs, the
-- receipts of idempotent sends) and the audit row's detail. Same tables and columns as the
-- SQLite list; names, ids and keys that are compared are `TEXT COLLATE "C"`, numbers BIGINT.

-- A function belongs to one incarnation of its environment and goes with it. Its signing
-- secret is stored as a secret value is (key_version 0 = unencrypted, dev mode); the
-- previous one is kept, all three columns or none, until `previous_until`.
CREATE TABLE functions (
    environment TEXT COLLATE "C" NOT NULL,
    environment_id TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    spec TEXT NOT NULL,
    signing_key_version BIGINT NOT NULL,
    signing_value TEXT NOT NULL,
    previous_key_version BIGINT,
    previous_value TEXT,
    previous_until BIGINT,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (environment, id),
    FOREIGN KEY (environment, environment_id) REFERENCES environments (name, id)
        ON DELETE CASCADE,
    CHECK ((previous_value IS NULL) = (previous_key_version IS NULL)
       AND (previous_value IS NULL) = (previous_until IS NULL))
);

-- The run queue. A run belongs to one incarnation and goes with it. While it is `running`
-- it has a lease (`lease_expires_at`), and only then. A lease is one statement
-- (`FOR UPDATE SKIP LOCKED` over the due runs, then the update), so a run's attempt is held
-- by one caller on any number of nodes.
CREATE TABLE runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    environment TEXT COLLATE "C" NOT NULL,
    environment_id TEXT COLLATE "C" NOT NULL,
    function_id TEXT COLLATE "C" NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('push', 'pull')),
    event_name TEXT NOT NULL,
    event_data TEXT NOT NULL,
    trigger_params TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempts BIGINT NOT NULL,
    output TEXT,
    error TEXT,
    lease_expires_at BIGINT,
    next_attempt_at BIGINT NOT NULL,
    idempotency_key TEXT COLLATE "C",
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    FOREIGN KEY (environment, environment_id) REFERENCES environments (name, id)
        ON DELETE CASCADE,
    CHECK ((status = 'running') = (lease_expires_at IS NOT NULL))
);

-- Leasing: the unfinished runs by mode and the time they are due (a queued run at its next
-- attempt, a running one when its lease expires), oldest first. Finished runs, the bulk of
-- the table, are not in them. The push dispatcher leases across environments; a pull
-- worker leases in its own, and walks only its environment's runs (a backlog that no worker
-- takes in one environment does not slow the others' leases).
CREATE INDEX runs_due ON runs (
    mode,
    (CASE WHEN status = 'running' THEN lease_expires_at ELSE next_attempt_at END),
    id
) WHERE status IN ('queued', 'running');
CREATE INDEX runs_due_in_environment ON runs (
    environment,
    mode,
    (CASE WHEN status = 'running' THEN lease_expires_at ELSE next_attempt_at END),
    id
) WHERE status IN ('queued', 'running');

-- Listing an environment's runs newest first (ids sort by creation), all of them or one
-- function's or one status's.
CREATE INDEX runs_environment ON runs (environment, id);
CREATE INDEX runs_environment_function ON runs (environment, function_id, id);
CREATE INDEX runs_environment_status ON runs (environment, status, id);

-- Replaying a send: the runs a key started in an incarnation.
CREATE INDEX runs_idempotency ON runs (environment_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The Idempotency-Keys seen per incarnation, and when. The primary key settles racing
-- sends: the second insert waits for the first's transaction, then conflicts and replays.
-- A receipt older than the window is replaced by the next send with its key, and every
-- send that records a receipt deletes up to 100 expired ones, so the table stays bounded
-- by the keys of one window.
CREATE TABLE event_receipts (
    environment_id TEXT COLLATE "C" NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    idempotency_key TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (environment_id, idempotency_key)
);

CREATE INDEX event_receipts_created_at ON event_receipts (created_at);

-- What an audit-only row records beyond its columns (a resolution's names, never a value),
-- compact JSON; NULL for every other row, and absent from the canonical form then, so rows
-- written before this column existed keep their hashes.
ALTER TABLE audit_log ADD COLUMN detail TEXT;
