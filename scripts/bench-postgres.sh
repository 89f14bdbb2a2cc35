#!/usr/bin/env bash
# Issue 8: Coffer on a PostgreSQL catalog, one node and two nodes, beside OpenBao 2.7.2
# (raft + fsync + file audit device) and Coffer on its embedded SQLite store, in one run:
#   scripts/bench-postgres.sh [COFFER_BIN]          (default: target/release/coffer)
# Same method as ../shared/bench/vs-openbao.sh: wrk with one thread, 16 connections, 6 s,
# 1,000 secrets of 64 bytes, metadata reads (GET …/secrets/K<n>) and durable writes
# (PUT …/secrets/K<n>), two interleaved rounds, best of each. Two nodes = two wrk processes
# at once, 8 connections on node A and 8 on node B, both serving one database; their req/s
# are summed and the larger p99 is reported.
#
# Settings (environment):
#   COFFER_BENCH_PG_URL  server to create the throwaway database on
#                        (default postgres://postgres@127.0.0.1:5432/postgres)
#   BENCH_POSTGRES       auto (default): measure PostgreSQL if this build accepts
#                        --database-url, else say so and go on; 1: require it; 0: skip it
#   BENCH_DURATION       seconds per wrk run (default 6)   BENCH_ROUNDS (default 2)
# The database is named coffer_bench_<random> and dropped at the end. Loopback only; no
# fixed port; everything it starts is stopped on exit, failure or Ctrl-C.
set -euo pipefail
coffer=${1:-target/release/coffer}
pg_base=${COFFER_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
want_pg=${BENCH_POSTGRES:-auto}
duration=${BENCH_DURATION:-6}
rounds=${BENCH_ROUNDS:-2}
[[ -x $coffer ]] || { echo "no coffer binary at $coffer (cargo build --release -p coffer-cli first)" >&2; exit 1; }
for tool in wrk curl python3 openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y $tool)" >&2; exit 1; }
done
if [[ $want_pg != 0 ]]; then command -v psql >/dev/null || { echo "psql is missing (or BENCH_POSTGRES=0)" >&2; exit 1; }; fi
here=$(cd "$(dirname "$0")" && pwd)
openbao=${OPENBAO_SH:-$here/../../shared/bench/openbao.sh}
[[ -x $openbao ]] || { echo "no OpenBao helper at $openbao (set OPENBAO_SH)" >&2; exit 1; }

work=$(mktemp -d -t coffer-bench-pg-XXXXXX)
pids=()
db=""
BAO_PID=""
BAO_DIR=""
url_sqlite="" url_pga="" url_pgb="" # set by start()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${pids[@]}" ${BAO_PID:+"$BAO_PID"}; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" ${BAO_PID:+"$BAO_PID"}; do wait "$p" 2>/dev/null || true; done
  if [[ -n $db ]]; then
    psql -q -X "$pg_base" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 \
      || echo "could not drop database $db" >&2
  fi
  [[ -n $BAO_DIR ]] && rm -rf "$BAO_DIR"
  if [[ $rc != 0 ]]; then echo "failed (exit $rc); logs kept in $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
admin="ck_admin_$(openssl rand -hex 20)"
master=$(openssl rand -hex 32) # one key for every node on one database: they open each other's values

# start NAME [extra serve args…] → starts a node, sets url_NAME; returns 1 if it exits early.
start() {
  local name=$1 port; shift
  port=$(free_port)
  env -u COFFER_SECRET_KEYS -u COFFER_SECRET_KEYS_FILE -u COFFER_NATS_URL -u COFFER_DATABASE_URL \
    COFFER_MASTER_KEY="$master" COFFER_ADMIN_KEY="$admin" \
    "$coffer" serve --listen "127.0.0.1:$port" --data-dir "$work/$name" "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  printf -v "url_$name" '%s' "http://127.0.0.1:$port"
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 1; }
    sleep 0.1
  done
  echo "node $name did not become ready in 30 s; log: $work/$name.log" >&2
  return 1
}

seed_coffer() { # $1 base URL: 1,000 secrets of 64 bytes in `default`
  python3 - "$1" "$admin" <<'PY'
import concurrent.futures, json, sys, urllib.request
c, admin = sys.argv[1:]
def put(i):
    r = urllib.request.Request(f"{c}/v1/environments/default/secrets/K{i}", json.dumps({"value": "v" * 64}).encode(),
                               method="PUT", headers={"Content-Type": "application/json", "Authorization": "Bearer " + admin})
    urllib.request.urlopen(r).read()
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    list(ex.map(put, range(1000)))
PY
}

# OpenBao first: it takes the longest to come up.
eval "$("$openbao" durable)"
python3 - "$BAO_ADDR" "$BAO_TOKEN" <<'PY'
import concurrent.futures, json, sys, urllib.request
b, tok = sys.argv[1:]
def put(i):
    r = urllib.request.Request(f"{b}/v1/secret/data/bench/K{i}", json.dumps({"data": {"value": "v" * 64}}).encode(),
                               method="POST", headers={"Content-Type": "application/json", "X-Vault-Token": tok})
    urllib.request.urlopen(r).read()
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    list(ex.map(put, range(1000)))
PY

start sqlite || { echo "the SQLite node did not start:" >&2; tail -n 20 "$work/sqlite.log" >&2; exit 1; }
seed_coffer "$url_sqlite"

pg=0
if [[ $want_pg != 0 ]]; then
  db="coffer_bench_$(openssl rand -hex 6)"
  psql -q -X -v ON_ERROR_STOP=1 "$pg_base" -c "CREATE DATABASE $db" >/dev/null
  pg_url=$(python3 - "$pg_base" "$db" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit(u._replace(path="/" + sys.argv[2])))
PY
)
  if start pga --database-url "$pg_url"; then
    start pgb --database-url "$pg_url" || { echo "node B did not start:" >&2; tail -n 20 "$work/pgb.log" >&2; exit 1; }
    seed_coffer "$url_pga"
    # Node B must see node A's secrets (one catalog), with the same admin key.
    curl -sf -H "Authorization: Bearer $admin" "$url_pgb/v1/environments/default/secrets/K999" >/dev/null \
      || { echo "node B does not see node A's secrets" >&2; exit 1; }
    pg=1
  else
    why=$(grep -v '^\s*$' "$work/pga.log" | tail -n 1)
    if [[ $want_pg == 1 ]]; then echo "the PostgreSQL node did not start: $why" >&2; exit 1; fi
    echo "PostgreSQL not measured: this build refused --database-url: $why" >&2
  fi
fi

stats='done = function(s, l, r) io.write(string.format("RESULT %.0f %.2f %d %d\n", s.requests/(s.duration/1e6), l:percentile(99)/1000, s.errors.status, s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout)) end'
body_c="'{\"value\": \"$(printf 'w%.0s' {1..64})\"}'"
body_b="'{\"data\": {\"value\": \"$(printf 'w%.0s' {1..64})\"}}'"
lua() { # $1 file, $2 header line, $3 method, $4 path prefix, $5 body or empty
  cat >"$1" <<LUA
$2
wrk.headers["Content-Type"] = "application/json"
request = function() return wrk.format("$3", "$4" .. math.random(0,999), nil, ${5:-nil}) end
$stats
LUA
}
lua "$work/cr.lua" "wrk.headers[\"Authorization\"] = \"Bearer $admin\"" GET /v1/environments/default/secrets/K
lua "$work/cw.lua" "wrk.headers[\"Authorization\"] = \"Bearer $admin\"" PUT /v1/environments/default/secrets/K "$body_c"
lua "$work/br.lua" "wrk.headers[\"X-Vault-Token\"] = \"$BAO_TOKEN\"" GET /v1/secret/data/bench/K
lua "$work/bw.lua" "wrk.headers[\"X-Vault-Token\"] = \"$BAO_TOKEN\"" POST /v1/secret/data/bench/K "$body_b"

# wrk1 URL SCRIPT CONNS → "rps p99 non2xx sockerr"
wrk1() { wrk -t1 -c"$3" -d"${duration}s" -s "$2" "$1" | awk '/^RESULT/ {print $2, $3, $4, $5}'; }
# two SCRIPT → both nodes at once, 8 connections each: summed req/s, larger p99, summed errors
two() {
  wrk1 "$url_pga" "$1" 8 >"$work/two.a" &
  local a=$!
  wrk1 "$url_pgb" "$1" 8 >"$work/two.b"
  wait "$a"
  read -r ra pa ea sa <"$work/two.a"; read -r rb pb eb sb <"$work/two.b"
  python3 -c "print($ra + $rb, max($pa, $pb), $ea + $eb, $sa + $sb)"
}

keys=(bao_read sqlite_read bao_write sqlite_write)
[[ $pg == 1 ]] && keys=(bao_read pg1_read pg2_read sqlite_read bao_write pg1_write pg2_write sqlite_write)
declare -A best
for round in $(seq "$rounds"); do
  for k in "${keys[@]}"; do
    case $k in
      bao_read) r=$(wrk1 "$BAO_ADDR" "$work/br.lua" 16) ;;
      bao_write) r=$(wrk1 "$BAO_ADDR" "$work/bw.lua" 16) ;;
      sqlite_read) r=$(wrk1 "$url_sqlite" "$work/cr.lua" 16) ;;
      sqlite_write) r=$(wrk1 "$url_sqlite" "$work/cw.lua" 16) ;;
      pg1_read) r=$(wrk1 "$url_pga" "$work/cr.lua" 16) ;;
      pg1_write) r=$(wrk1 "$url_pga" "$work/cw.lua" 16) ;;
      pg2_read) r=$(two "$work/cr.lua") ;;
      pg2_write) r=$(two "$work/cw.lua") ;;
    esac
    [[ -n $r ]] || { echo "wrk gave no result for $k" >&2; exit 1; }
    echo "round $round  $k  $r" >&2
    if [[ -z ${best[$k]:-} || ${r%% *} -gt ${best[$k]%% *} ]]; then best[$k]=$r; fi
  done
done

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $("$coffer" --version 2>/dev/null || echo coffer)"
printf '%-14s %10s  %9s  %8s  %8s\n' figure "req/s" "p99 ms" non-2xx sock-err
for k in bao_read pg1_read pg2_read sqlite_read bao_write pg1_write pg2_write sqlite_write; do
  [[ -n ${best[$k]:-} ]] || continue
  read -r rps p99 non2xx sockerr <<<"${best[$k]}"
  printf '%-14s %10s  %9s  %8s  %8s\n' "$k" "$rps" "$p99" "$non2xx" "$sockerr"
done
ratio() { python3 -c "print(f'{$1/max($2,1):.1f}')"; }
br=${best[bao_read]%% *}; bw=${best[bao_write]%% *}
echo
printf '%-28s %8s %8s\n' "ratio to OpenBao" reads writes
for side in pg1 pg2 sqlite; do
  [[ -n ${best[${side}_read]:-} ]] || continue
  label=$side
  case $side in pg1) label="postgres, one node" ;; pg2) label="postgres, two nodes" ;; sqlite) label="sqlite (embedded)" ;; esac
  printf '%-28s %7sx %7sx\n' "$label" "$(ratio "${best[${side}_read]%% *}" "$br")" "$(ratio "${best[${side}_write]%% *}" "$bw")"
done
echo "targets (issue 8, PostgreSQL): reads >= 10x, writes >= 5x OpenBao"
[[ $pg == 1 ]] || echo "PostgreSQL: NOT MEASURED (this build refuses --database-url)"
