-- Retention: ended runs by when they ended, so a pruning finds the oldest without a scan.
CREATE INDEX runs_ended ON runs (updated_at, id) WHERE status IN ('succeeded', 'failed');
