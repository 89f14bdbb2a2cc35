-- The journal: the hash-chained audit log and the event outbox, appended by every write in
-- its own transaction. `journal_head` is their one shared head: every journaled write
-- updates it, which serialises journaling writers (on PostgreSQL, by its row lock), so
-- sequence numbers are assigned in commit order with no gaps. Portable SQL, but for
-- `SEQUENCE_KEY`: a 64-bit integer primary key, which each backend spells its own way
-- (SQLite: `INTEGER PRIMARY KEY`, the table's rowid, so an append costs one b-tree and no
-- separate index; PostgreSQL: `BIGINT PRIMARY KEY`). No secondary index: every read is a
-- range of sequence numbers.
CREATE TABLE journal_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    audit_seq BIGINT NOT NULL,
    audit_hash TEXT NOT NULL,
    event_seq BIGINT NOT NULL
);
INSERT INTO journal_head (id, audit_seq, audit_hash, event_seq)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0);

CREATE TABLE audit_log (
    seq SEQUENCE_KEY,
    at BIGINT NOT NULL,
    actor_id TEXT,
    actor_name TEXT,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    environment TEXT,
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

-- The outbox: one row per event, naming the audit row that records its change. An event's
-- content is read from that row, so the hash chain covers what the stream and NATS carry,
-- and an outbox row costs a few bytes.
CREATE TABLE events (
    seq SEQUENCE_KEY,
    audit_seq BIGINT NOT NULL
);

-- How far each outbox relay (NATS) has delivered.
CREATE TABLE relay_positions (
    name TEXT PRIMARY KEY,
    event_seq BIGINT NOT NULL
);
