-- Values found unreadable (a walk or a resolve could not open them), shared by every node
-- through the catalog: `/v1/status` and the `status` of a secret read it here. A mark names
-- the revision that failed to open; a write or delete of the secret removes the mark in its
-- transaction (when the values live in this database), and readers compare revisions, so a
-- newer revision is never reported by an older mark. Deleting (or re-creating) an
-- environment removes its marks with it. Portable SQL.
CREATE TABLE unreadable_values (
    environment TEXT NOT NULL,
    name TEXT NOT NULL,
    revision BIGINT NOT NULL,
    key_version INTEGER NOT NULL,
    found_at BIGINT NOT NULL,
    PRIMARY KEY (environment, name)
);
