-- Encryptions performed per key version: random 96-bit nonces are safe for about 2^32
-- encryptions under one key, so Coffer warns past 2^31 and recommends rotation.
CREATE TABLE key_usage (
    key_version INTEGER PRIMARY KEY,
    encryptions BIGINT NOT NULL
);
