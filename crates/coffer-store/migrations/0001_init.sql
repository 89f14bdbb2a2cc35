-- Coffer catalog, version 1. Portable SQL: SQLite and PostgreSQL run it unchanged.

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE environments (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    environment TEXT,
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE INDEX api_keys_environment ON api_keys (environment);

CREATE TABLE key_canaries (
    key_version INTEGER PRIMARY KEY,
    blob TEXT NOT NULL
);

-- Secret values for the `db` backend. key_version 0 = stored unencrypted (dev mode).
CREATE TABLE secrets (
    environment TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    key_version INTEGER NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (environment, name)
);

CREATE INDEX secrets_key_version ON secrets (key_version);
