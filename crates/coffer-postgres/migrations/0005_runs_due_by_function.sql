-- A pull worker's poll names its functions: it walks each one's due runs, not its whole
-- environment's. Before, a backlog of one function that no worker takes (its workers are
-- down, say) lay in front of every other function's poll in that environment, and each
-- poll stepped over all of it. The environment-wide index served only that walk.
DROP INDEX runs_due_in_environment;
CREATE INDEX runs_due_by_function ON runs (
    environment,
    function_id,
    mode,
    (CASE WHEN status = 'running' THEN lease_expires_at ELSE next_attempt_at END),
    id
) WHERE status IN ('queued', 'running');
