-- Coffer's catalog on PostgreSQL, version 1: the whole schema, written for PostgreSQL (the
-- SQLite backend has its own list in coffer_store::schema).
--
-- Every name or key that is ordered or compared is `TEXT COLLATE "C"`: listings page in
-- byte order, exactly as on SQLite, whatever the database's default collation. Key versions,
-- revisions, counters and times (milliseconds since the epoch) are BIGINT.

CREATE TABLE settings (
    name TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

-- An environment's `id` is its incarnation: immutable, never reused by another environment.
CREATE TABLE environments (
    name TEXT COLLATE "C" PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    UNIQUE (name, id)
);

-- A scoped key goes with its environment (ON DELETE CASCADE) and cannot be inserted for an
-- environment that does not exist (the foreign key), whatever races.
CREATE TABLE api_keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'manage', 'runtime')),
    environment TEXT COLLATE "C" REFERENCES environments (name) ON DELETE CASCADE,
    key_hash TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    CHECK ((role = 'admin') = (environment IS NULL))
);

CREATE INDEX api_keys_environment ON api_keys (environment);
CREATE INDEX api_keys_admins ON api_keys (id) WHERE role = 'admin';

CREATE TABLE key_canaries (
    key_version BIGINT PRIMARY KEY,
    blob TEXT NOT NULL
);

-- Encryptions performed per key version (random 96-bit nonces: Coffer warns past 2^31).
CREATE TABLE key_usage (
    key_version BIGINT PRIMARY KEY,
    encryptions BIGINT NOT NULL
);

-- Secret values for the `db` backend; key_version 0 = stored unencrypted (dev mode). A row
-- belongs to one incarnation of its environment (`environment_id`, with the environment's
-- name beside it for byte-ordered walks): it cannot be written into an incarnation that does
-- not exist, and goes with it (ON DELETE CASCADE), whatever races.
CREATE TABLE secrets (
    environment TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    environment_id TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    key_version BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (environment, name),
    FOREIGN KEY (environment, environment_id) REFERENCES environments (name, id)
        ON DELETE CASCADE
);

CREATE INDEX secrets_key_version ON secrets (key_version);

-- Config entries: plaintext JSON per environment (config is not secret), by environment
-- name, not incarnation. Not a foreign key: Coffer's own writes (`Actor::System`) may write
-- under a name no environment has. A key's write locks its environment's row instead, and
-- deleting or creating an environment clears its entries in the same transaction.
CREATE TABLE config (
    environment TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (environment, key)
);

-- Values found unreadable, shared by every node: a mark names the revision that did not
-- open. It is recorded only while the secret is at that revision (the row locked), and a
-- write or delete of the secret, or of its environment, removes it in its transaction.
CREATE TABLE unreadable_values (
    environment TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    revision BIGINT NOT NULL,
    key_version BIGINT NOT NULL,
    found_at BIGINT NOT NULL,
    PRIMARY KEY (environment, name)
);

-- The journal's one head. Every journaled write locks this row last in its transaction
-- (SELECT … FOR UPDATE), so journaling writers are serialised from there to their commit:
-- sequence numbers follow commit order with no gaps, on any number of nodes.
CREATE TABLE journal_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    audit_seq BIGINT NOT NULL,
    audit_hash TEXT NOT NULL,
    event_seq BIGINT NOT NULL
);
INSERT INTO journal_head (id, audit_seq, audit_hash, event_seq)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_id TEXT,
    actor_name TEXT,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    environment TEXT COLLATE "C",
    name TEXT,
    revision BIGINT,
    result TEXT NOT NULL,
    status BIGINT,
    count BIGINT NOT NULL,
    remote TEXT,
    user_agent TEXT,
    event_seq BIGINT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- The outbox: one row per event, naming the audit row that records its change (the event's
-- content is read from that row, so the hash chain covers what the stream and NATS carry).
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    audit_seq BIGINT NOT NULL
);

-- How far each outbox relay (NATS) has delivered.
CREATE TABLE relay_positions (
    name TEXT COLLATE "C" PRIMARY KEY,
    event_seq BIGINT NOT NULL
);
