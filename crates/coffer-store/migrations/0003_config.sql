-- Config entries: plaintext JSON per environment (config is not secret). Portable SQL.
CREATE TABLE config (
    environment TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (environment, key)
);
