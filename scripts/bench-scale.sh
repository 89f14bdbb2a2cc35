#!/usr/bin/env bash
# Issue 8 at scale: N secrets (default 1,000,000) in one environment, on either backend.
#   scripts/bench-scale.sh [COFFER_BIN] [--backend sqlite|postgres] [--secrets N]
#                          [--database-url postgres://…]   (the server to create the db on)
#                          [--no-analyze]
# COFFER_BIN defaults to target/release/coffer. In one run:
#   1. starts a node (sqlite: a fresh data dir; postgres: a fresh database coffer_bench_<random>
#      on --database-url, default $COFFER_BENCH_PG_URL or postgres://postgres@127.0.0.1:5432/postgres,
#      dropped at the end) and creates environment `scale`;
#   2. seeds N secrets of 64 bytes (S0000000, S0000001, …) through the import route
#      (POST …/secrets, 1,000 per request) over SEED_CONNS connections (default 4); on
#      postgres it then runs ANALYZE, as autovacuum would sooner or later (a server with
#      autovacuum off never gathers statistics; --no-analyze measures that case);
#   3. list pages: GET …/secrets?limit=100 with the cursor of a random depth, LIST_REQUESTS
#      requests (default 300) one after another on one keep-alive connection: p50/p99/max;
#   4. metadata reads: wrk -t1 -c16, random names, two runs of READ_SECONDS (default 6)
#      at saturation, then two paced at one read per connection every 2 ms (~8,000/s);
#   5. server RSS (VmRSS, VmHWM from /proc/PID/status) after seeding and after the reads;
#   6. start-up: SIGTERM, wait for exit, start again with the same data, time until /readyz
#      answers 200; prints the new process's log lines with their timestamps.
# Loopback only; no fixed port; stops what it starts (also on failure or Ctrl-C).
set -euo pipefail
coffer=target/release/coffer
backend=sqlite
secrets=1000000
pg_base=${COFFER_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
analyze=1
usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
first=1
while (($#)); do
  case $1 in
    --backend) backend=${2:?}; shift 2 ;;
    --backend=*) backend=${1#*=}; shift ;;
    --secrets) secrets=${2:?}; shift 2 ;;
    --secrets=*) secrets=${1#*=}; shift ;;
    --database-url) pg_base=${2:?}; shift 2 ;;
    --database-url=*) pg_base=${1#*=}; shift ;;
    --no-analyze) analyze=0; shift ;;
    -h | --help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) [[ $first == 1 ]] || usage; coffer=$1; shift ;;
  esac
  first=0
done
[[ $backend == sqlite || $backend == postgres ]] || { echo "--backend sqlite|postgres" >&2; exit 2; }
[[ $secrets =~ ^[0-9]+$ && $secrets -ge 1000 && $secrets -le 9999999 ]] || { echo "--secrets: 1000..9999999" >&2; exit 2; }
[[ -x $coffer ]] || { echo "no coffer binary at $coffer (cargo build --release -p coffer-cli first)" >&2; exit 1; }
for tool in wrk curl python3 openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y $tool)" >&2; exit 1; }
done
[[ $backend == sqlite ]] || command -v psql >/dev/null || { echo "psql is missing" >&2; exit 1; }
seed_conns=${SEED_CONNS:-4}
list_requests=${LIST_REQUESTS:-300}
read_seconds=${READ_SECONDS:-6}

work=$(mktemp -d -t coffer-bench-scale-XXXXXX)
pid=""
db=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [[ -n $db ]]; then
    psql -q -X "$pg_base" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 \
      || echo "could not drop database $db" >&2
  fi
  if [[ $rc != 0 ]]; then echo "failed (exit $rc); logs kept in $work" >&2; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
admin="ck_admin_$(openssl rand -hex 20)"
master=$(openssl rand -hex 32)
serve_args=(serve --listen "127.0.0.1:$port" --data-dir "$work/data")
if [[ $backend == postgres ]]; then
  db="coffer_bench_$(openssl rand -hex 6)"
  psql -q -X -v ON_ERROR_STOP=1 "$pg_base" -c "CREATE DATABASE $db" >/dev/null
  pg_url=$(python3 - "$pg_base" "$db" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit(u._replace(path="/" + sys.argv[2])))
PY
)
  serve_args+=(--database-url "$pg_url")
fi

# start LOG → starts the node (same data each time), sets pid and ready_s (seconds to /readyz)
start() {
  local t0; t0=$(now)
  env -u COFFER_SECRET_KEYS -u COFFER_SECRET_KEYS_FILE -u COFFER_NATS_URL -u COFFER_DATABASE_URL \
    COFFER_MASTER_KEY="$master" COFFER_ADMIN_KEY="$admin" "$coffer" "${serve_args[@]}" >"$1" 2>&1 &
  pid=$!
  for _ in $(seq 3000); do # 60 s
    if curl -sf -o /dev/null "$url/readyz"; then ready_s=$(since "$t0"); return 0; fi
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; pid=""; echo "the server exited:" >&2; tail -n 20 "$1" >&2; exit 1; }
    sleep 0.02
  done
  echo "not ready after 60 s; log: $1" >&2; exit 1
}
rss() { awk '/^VmRSS|^VmHWM/ {printf "%s %.0f MB  ", $1, $2/1024}' "/proc/$pid/status"; }

ready_s=""
start "$work/serve1.log"
first_ready=$ready_s
curl -sf -o /dev/null -X POST -H "Authorization: Bearer $admin" -H "Content-Type: application/json" \
  -d '{"name": "scale"}' "$url/v1/environments"

echo "seeding $secrets secrets into $backend over $seed_conns connections…" >&2
t0=$(now)
python3 - "$port" "$admin" "$secrets" "$seed_conns" <<'PY'
import http.client, json, sys, threading, time
port, admin, n, conns = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
batches = list(range(0, n, 1000))
lock = threading.Lock()
done = [0]
t0 = time.time()
def worker(k):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    hdr = {"Content-Type": "application/json", "Authorization": "Bearer " + admin}
    for start in batches[k::conns]:
        body = json.dumps({"secrets": [{"name": f"S{i:07d}", "value": f"{i:064d}"} for i in range(start, min(start + 1000, n))]})
        c.request("POST", "/v1/environments/scale/secrets", body, hdr)
        r = c.getresponse(); data = r.read()
        if r.status != 200:
            raise SystemExit(f"import at {start}: HTTP {r.status} {data[:300]!r}")
        with lock:
            done[0] += 1
            if done[0] % 100 == 0:
                print(f"  {done[0] * 1000:>9} seeded, {done[0] * 1000 / (time.time() - t0):,.0f}/s", file=sys.stderr)
errors = []
def run(k):
    try: worker(k)
    except BaseException as e: errors.append(e)
ts = [threading.Thread(target=run, args=(k,)) for k in range(conns)]
for t in ts: t.start()
for t in ts: t.join()
if errors: raise SystemExit(f"seeding failed: {errors[0]}")
PY
seed_s=$(since "$t0")
analyzed="-"
if [[ $backend == postgres ]]; then
  autovacuum=$(psql -X -tA "$pg_url" -c "SHOW autovacuum")
  if [[ $analyze == 1 ]]; then
    t0=$(now); psql -q -X "$pg_url" -c "ANALYZE" >/dev/null; analyzed="ANALYZE after seeding: $(since "$t0") s"
  else
    analyzed="no ANALYZE (--no-analyze)"
  fi
  analyzed="$analyzed; server autovacuum=$autovacuum"
fi
rss_seeded=$(rss)

echo "list pages…" >&2
list=$(python3 - "$port" "$admin" "$secrets" "$list_requests" <<'PY'
import base64, http.client, json, random, statistics, sys, time
port, admin, n, reqs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
hdr = {"Authorization": "Bearer " + admin}
def page(cursor):
    path = "/v1/environments/scale/secrets?limit=100" + (f"&cursor={cursor}" if cursor else "")
    t = time.perf_counter()
    c.request("GET", path, headers=hdr)
    r = c.getresponse(); body = r.read()
    ms = (time.perf_counter() - t) * 1000
    if r.status != 200: raise SystemExit(f"list: HTTP {r.status} {body[:200]!r}")
    return ms, json.loads(body)
for _ in range(5): page(None)  # warm the connection
first_ms, first = page(None)
assert len(first["secrets"]) == 100, len(first["secrets"])
rng = random.Random(8)
times = []
for _ in range(reqs):
    depth = rng.randrange(0, n - 100)
    cursor = base64.urlsafe_b64encode(f"S{depth:07d}".encode()).decode().rstrip("=")
    ms, p = page(cursor)
    if len(p["secrets"]) != 100 or p["secrets"][0]["name"] != f"S{depth + 1:07d}":
        raise SystemExit(f"unexpected page after S{depth:07d}: {len(p['secrets'])} entries")
    times.append(ms)
times.sort()
q = statistics.quantiles(times, n=100, method="inclusive")
print(f"{q[49]:.2f} {q[98]:.2f} {times[-1]:.2f} {first_ms:.2f}")
PY
)
read -r list_p50 list_p99 list_max list_first <<<"$list"

cat >"$work/read.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $admin"
request = function() return wrk.format("GET", string.format("/v1/environments/scale/secrets/S%07d", math.random(0, $secrets - 1))) end
done = function(s, l, r) io.write(string.format("RESULT %.0f %.2f %.2f %d %d\n", s.requests/(s.duration/1e6), l:percentile(50)/1000, l:percentile(99)/1000, s.errors.status, s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout)) end
LUA
echo "metadata reads…" >&2
reads=()
for _ in 1 2; do
  reads+=("$(wrk -t1 -c16 -d"${read_seconds}s" -s "$work/read.lua" "$url" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}')")
done
# The same reads at a steady rate below saturation: each of 16 connections sends one read
# every 2 ms (about 8,000 reads/s): the latency a read pays, not the queue of a saturated
# two-core machine shared with wrk.
sed 's/^done = /delay = function() return 2 end\ndone = /' "$work/read.lua" >"$work/paced.lua"
paced=()
for _ in 1 2; do
  paced+=("$(wrk -t1 -c16 -d"${read_seconds}s" -s "$work/paced.lua" "$url" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}')")
done
rss_read=$(rss)

echo "restart…" >&2
t0=$(now)
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
stop_s=$(since "$t0")
start "$work/serve2.log"
rss_restart=$(rss)
curl -sf -o /dev/null -H "Authorization: Bearer $admin" "$url/v1/environments/scale/secrets/S$(printf '%07d' $((secrets - 1)))" \
  || { echo "the last secret is missing after the restart" >&2; exit 1; }

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), backend $backend, $secrets secrets, $("$coffer" --version 2>/dev/null || echo coffer)"
printf '%-34s %s\n' "first start, to /readyz" "$first_ready s"
printf '%-34s %s\n' "seed ($seed_conns conns, 1,000 per import)" "$seed_s s, $(python3 -c "print(f'{$secrets/$seed_s:,.0f}')")/s"
[[ $backend == postgres ]] && printf '%-34s %s\n' "statistics" "$analyzed"
printf '%-34s %s\n' "RSS after seeding" "$rss_seeded"
printf '%-34s %s\n' "list page (limit=100, random cursor)" "p50 $list_p50 ms  p99 $list_p99 ms  max $list_max ms  ($list_requests requests; first page $list_first ms)"
for i in "${!reads[@]}"; do
  read -r rps p50 p99 non2xx sockerr <<<"${reads[$i]}"
  printf '%-34s %s\n' "metadata read, wrk c16 run $((i + 1))" "$rps/s  p50 $p50 ms  p99 $p99 ms  non-2xx $non2xx  sock-err $sockerr"
done
for i in "${!paced[@]}"; do
  read -r rps p50 p99 non2xx sockerr <<<"${paced[$i]}"
  printf '%-34s %s\n' "metadata read, paced c16 run $((i + 1))" "$rps/s  p50 $p50 ms  p99 $p99 ms  non-2xx $non2xx  sock-err $sockerr"
done
printf '%-34s %s\n' "RSS after the reads" "$rss_read"
printf '%-34s %s\n' "stop (SIGTERM to exit)" "$stop_s s"
printf '%-34s %s\n' "start-up, exec to /readyz 200" "$ready_s s"
printf '%-34s %s\n' "RSS after the restart" "$rss_restart"
echo "targets (issue 8): list page < 10 ms, metadata read p99 < 2 ms, RSS < 300 MB, start-up < 5 s"
startup_span=$(python3 - "$work/serve2.log" <<'PY'
import datetime, re, sys
lines = open(sys.argv[1]).read().splitlines()
stamp = lambda l: re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})", l)
ts = [stamp(l).group(1) for l in lines if stamp(l)]
lis = [stamp(l).group(1) for l in lines if stamp(l) and "is listening" in l]
p = datetime.datetime.fromisoformat
print(f"{(p(lis[0]) - p(ts[0])).total_seconds():.3f} s" if ts and lis else "no timestamps found")
PY
)
echo "start-up log (first line to 'listening': $startup_span):"
sed 's/^/  /' "$work/serve2.log" | head -n 20
