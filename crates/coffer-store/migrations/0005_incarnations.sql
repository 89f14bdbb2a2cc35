-- Environment incarnations: every environment gets an immutable id when it is created, and
-- each secret row names the incarnation it was written into. Reads and writes go through
-- the incarnation, so a value of a deleted environment is never listed, resolved or opened
-- in a new environment of the same name. Environments that exist already get the id
-- `env0_<name>`: their values were sealed naming the environment only, and no environment
-- created from now on gets an id of that form (new ones are `env_<16 hex>`).
ALTER TABLE environments ADD COLUMN id TEXT NOT NULL DEFAULT '';
UPDATE environments SET id = 'env0_' || name;
CREATE UNIQUE INDEX environments_id ON environments (id);
-- A row left by no existing environment gets no incarnation: it is invisible, and creating
-- an environment of its name clears it.
ALTER TABLE secrets ADD COLUMN environment_id TEXT NOT NULL DEFAULT '';
UPDATE secrets SET environment_id = COALESCE(
    (SELECT e.id FROM environments e WHERE e.name = secrets.environment), '');
