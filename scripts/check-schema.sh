#!/usr/bin/env bash
# The catalog schema is shared by SQLite and PostgreSQL: apply every migration, in order,
# to a throwaway PostgreSQL database and fail on the first statement it refuses.
set -euo pipefail
cd "$(dirname "$0")/.."
url=${1:?usage: check-schema.sh POSTGRES_URL}
db="coffer_schema_check_$$"
psql "$url" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $db" >/dev/null
trap 'psql "$url" -qc "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
target="${url%/*}/$db"
for migration in crates/coffer-store/migrations/*.sql; do
  # SEQUENCE_KEY: a 64-bit primary key, spelled per backend (coffer_store::schema).
  sed 's/SEQUENCE_KEY/BIGINT PRIMARY KEY/g' "$migration" |
    psql "$target" -v ON_ERROR_STOP=1 -q -1 -f - >/dev/null
  echo "PostgreSQL accepts $(basename "$migration")"
done
