-- A pull worker's poll names its functions. It reads its environment's due runs in order
-- and keeps its functions' ones; when a bounded stretch of that read holds too few of them (a
-- backlog of a function no worker takes lies in front, say), it reads each of its functions
-- on its own instead. Before, each poll stepped over all of such a backlog.
--
-- Both indexes hold both kinds of due run (a queued one at its next attempt, a running one
-- when its lease ends), as PostgreSQL's `runs_due` does, and the columns the reads need (the
-- id, the function, the status, which SQLite would otherwise read from the table to test the
-- condition): a poll's read touches no table page.
DROP INDEX runs_queued_by_environment;
DROP INDEX runs_leased_by_environment;
CREATE INDEX runs_due_in_environment ON runs (
    environment,
    mode,
    (CASE WHEN status = 'running' THEN lease_expires_at ELSE next_attempt_at END),
    id,
    function_id,
    status
) WHERE status IN ('queued', 'running');
CREATE INDEX runs_due_by_function ON runs (
    environment,
    function_id,
    mode,
    (CASE WHEN status = 'running' THEN lease_expires_at ELSE next_attempt_at END),
    id,
    status
) WHERE status IN ('queued', 'running');
