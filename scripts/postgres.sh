#!/usr/bin/env bash
# Makes a PostgreSQL server available to the tests. Prints shell assignments to eval:
#   COFFER_TEST_DATABASE_URL=postgres://…   and, for a throwaway server, COFFER_PG_STOP=<command>
# Uses the machine's server on 127.0.0.1:5432 when it answers; otherwise, where the server
# binaries exist, starts a throwaway one in a temp dir. Fails loudly, saying how to get one,
# when neither works.
set -euo pipefail

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "COFFER_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres"
  exit 0
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $bindir || ! -x $bindir/initdb ]]; then
  echo "PostgreSQL is needed by the tests: none answers on 127.0.0.1:5432 and no server binaries" >&2
  echo "were found; install one (apt-get install postgresql) or start the machine's cluster." >&2
  exit 1
fi
dir=$(mktemp -d -t coffer-pg-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=$(id -un)
run() { if [[ $user == root ]]; then chown -R postgres "$dir"; su postgres -c "$*"; else eval "$*"; fi; }
run "'$bindir/initdb' -D '$dir/data' -U postgres -A trust >'$dir/initdb.log' 2>&1"
run "'$bindir/pg_ctl' -D '$dir/data' -o '-p $port -k $dir -c listen_addresses=127.0.0.1' -l '$dir/pg.log' -w start >/dev/null"
echo "started a throwaway PostgreSQL in $dir" >&2
stop="'$bindir/pg_ctl' -D '$dir/data' -m fast stop >/dev/null; rm -rf '$dir'"
[[ $user == root ]] && stop="su postgres -c \"$stop\""
echo "COFFER_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
printf 'COFFER_PG_STOP=%q\n' "$stop"
