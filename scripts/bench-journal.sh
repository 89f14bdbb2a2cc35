#!/usr/bin/env bash
# What the journal (audit row + event in every write's transaction) costs, and what live
# event-stream subscribers cost, measured in one run on this machine:
#   scripts/bench-journal.sh BASELINE_COFFER [COFFER]
# BASELINE_COFFER is a build without the journal (e.g. the commit before it, built with
# `cargo build --release`); COFFER defaults to target/release/coffer. Both serve the same
# data shape (1,000 secrets of 64 bytes, encryption on); wrk (one thread, 16 connections,
# 6 s) sends durable PUTs to each in turn, PAIRS (default 3) interleaved rounds: the best of
# each, every round, and the medians (the figure to compare when the disk's flush tail moves
# single rounds). ROUNDS=0 stops there. Then, on
# COFFER alone: write p99 at a steady ~1,000 writes/s with 0 and with 100 subscribers on
# (ROUNDS, default 3, rounds of PACED_SECONDS, default 6, each; the lowest p99 of each kept)
# GET /v1/events/stream, interleaved. The subscribers are held by one `coffer-bench
# --follow 100` process (COFFER_BENCH, default next to COFFER), as subscribers on other
# machines would cost this one nothing but the server's fan-out; FOLLOWERS=curl runs 100
# curl processes instead, as the first measurements did. FOLLOW_SUBJECT=PATTERN has the
# followers ask for that pattern (e.g. `system.secret.X.updated`: narrow subscribers). Each
# paced round also prints the server's CPU (from /proc), and the end the median of the
# rounds' p99s and CPU on each side: the disk's flush tail moves single rounds' p99s by
# several times, so medians over many ROUNDS are the figures to compare. PIN_SERVER=0 PIN_CLIENTS=1 runs
# the servers and the clients (wrk, followers) on separate cores (taskset). Loopback only;
# stops what it starts.
set -euo pipefail
baseline=${1:?usage: scripts/bench-journal.sh BASELINE_COFFER [COFFER]}
coffer=${2:-target/release/coffer}
bench=${COFFER_BENCH:-$(dirname "$coffer")/coffer-bench}
followers=${FOLLOWERS:-bench}
[[ $followers == curl || -x $bench ]] || { echo "no coffer-bench at $bench (set COFFER_BENCH)" >&2; exit 1; }
for b in "$baseline" "$coffer"; do
  [[ -x $b ]] || { echo "no coffer binary at $b (cargo build --release first)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
work=$(mktemp -d -t coffer-journal-XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
admin="ck_admin_$(openssl rand -hex 20)"

start() { # $1 name, $2 binary → sets url_$1
  local port; port=$(free_port)
  env -u COFFER_SECRET_KEYS -u COFFER_SECRET_KEYS_FILE -u COFFER_NATS_URL \
    COFFER_MASTER_KEY="$(openssl rand -hex 32)" COFFER_ADMIN_KEY="$admin" \
    ${PIN_SERVER:+taskset -c "$PIN_SERVER"} "$2" serve --listen "127.0.0.1:$port" --data-dir "$work/$1" >"$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  printf -v "url_$1" '%s' "http://127.0.0.1:$port"
  python3 - "http://127.0.0.1:$port" "$admin" <<'PY'
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

cat >"$work/w.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $admin"
wrk.headers["Content-Type"] = "application/json"
request = function() return wrk.format("PUT", "/v1/environments/default/secrets/K" .. math.random(0,999), nil, '{"value": "$(printf 'w%.0s' {1..64})"}') end
done = function(s, l, r) io.write(string.format("RESULT %.0f %.2f %d\n", s.requests/(s.duration/1e6), l:percentile(99)/1000, s.errors.status)) end
LUA
run() { wrk -t1 -c16 -d6s -s "$work/w.lua" "$1" | awk '/^RESULT/ {print $2, $3, $4}'; }
best() { # $1 current best "rps p99 errs", $2 new → the one with more rps
  if [[ -z $1 || ${2%% *} -gt ${1%% *} ]]; then echo "$2"; else echo "$1"; fi
}

start base "$baseline"
start journal "$coffer"
b=""; j=""; allb=""; allj=""
for _ in $(seq "${PAIRS:-3}"); do
  r=$(run "$url_base"); b=$(best "$b" "$r"); allb+=" ${r%% *}"
  r=$(run "$url_journal"); j=$(best "$j" "$r"); allj+=" ${r%% *}"
done
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
printf '%-24s %8s/s  p99 %6s ms  non-2xx %s\n' "writes, no journal" $b
printf '%-24s %8s/s  p99 %6s ms  non-2xx %s\n' "writes, journal" $j
echo "journal: $(python3 -c "print(round(100*${j%% *}/max(${b%% *},1)))")% of the writes/s without it (best of each)"
echo "writes/s of each round, no journal:$allb"
echo "writes/s of each round, journal:   $allj"
python3 - "$allb" "$allj" <<'PY'
import statistics, sys
b, j = ([float(x) for x in a.split()] for a in sys.argv[1:])
pairs = sorted(y / max(x, 1) for x, y in zip(b, j))
print(f"medians of the rounds: {statistics.median(b):.0f}/s -> {statistics.median(j):.0f}/s "
      f"({100 * statistics.median(j) / max(statistics.median(b), 1):.0f}%); "
      f"round by round {100 * statistics.median(pairs):.0f}% (median of {len(pairs)} pairs)")
PY
[[ ${ROUNDS:-3} -gt 0 ]] || exit 0

# Live subscribers at a steady write rate: wrk paces each of 16 connections to one write
# every 16 ms (about 1,000 writes/s, well under saturation, so the figure is the latency a
# write pays, not the CPU the subscribers take from a 2-core machine); p99 with 0 and with
# 100 curl processes following GET /v1/events/stream.
cat >"$work/paced.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $admin"
wrk.headers["Content-Type"] = "application/json"
request = function() return wrk.format("PUT", "/v1/environments/default/secrets/K" .. math.random(0,999), nil, '{"value": "$(printf 'w%.0s' {1..64})"}') end
delay = function() return 16 end
done = function(s, l, r) io.write(string.format("RESULT %.0f %.2f %d\n", s.requests/(s.duration/1e6), l:percentile(99)/1000, s.errors.status)) end
LUA
server_cpu() { awk '{print $14 + $15}' "/proc/${pids[1]}/stat"; } # clock ticks, user + system
paced() { # "rps p99 errs cpu%" of one round
  local before after result started ended
  before=$(server_cpu) || return 1
  started=$(date +%s%N)
  result=$(${PIN_CLIENTS:+taskset -c "$PIN_CLIENTS"} wrk -t1 -c16 -d"${PACED_SECONDS:-6}"s -s "$work/paced.lua" "$url_journal" | awk '/^RESULT/ {print $2, $3, $4}') \
    && [[ -n $result ]] || { echo "a paced round failed (is the server still up?)" >&2; return 1; }
  ended=$(date +%s%N)
  after=$(server_cpu) || return 1
  # CPU ticks over the round's wall time, as % of one core.
  echo "$result $(( (after - before) * 100 * 1000000000 / $(getconf CLK_TCK) / (ended - started) ))"
}
low() { # the lower p99 of two "rps p99 errs" results
  if [[ -z $1 ]] || python3 -c "import sys; sys.exit(0 if float('${2#* }'.split()[0]) < float('${1#* }'.split()[0]) else 1)"; then echo "$2"; else echo "$1"; fi
}
follow() { # starts 100 followers → sets subs (the pids to stop)
  subs=()
  if [[ $followers == curl ]]; then
    while read -r key; do
      ${PIN_CLIENTS:+taskset -c "$PIN_CLIENTS"} curl -sN -G -H "Authorization: Bearer $key" \
        ${FOLLOW_SUBJECT:+--data-urlencode "subject=$FOLLOW_SUBJECT"} "$url_journal/v1/events/stream" >/dev/null 2>&1 &
      subs+=($!)
    done <"$work/follower-keys"
    sleep 1
  else
    rm -f "$work/follow.err"
    COFFER_API_KEY="$admin" ${PIN_CLIENTS:+taskset -c "$PIN_CLIENTS"} "$bench" --addr "${url_journal#http://}" \
      --follow 100 ${FOLLOW_SUBJECT:+--follow-subject "$FOLLOW_SUBJECT"} >>"$work/follow.out" 2>"$work/follow.err" &
    subs+=($!)
    for _ in $(seq 300); do grep -q "following 100 streams" "$work/follow.err" 2>/dev/null && break; sleep 0.1; done
    grep -q "following 100 streams" "$work/follow.err" || { cat "$work/follow.err" >&2; exit 1; }
  fi
}
if [[ $followers == curl ]]; then
  # One manage key per follower: a key may hold only a few streams.
  python3 - "$url_journal" "$admin" >"$work/follower-keys" <<'PY'
import json, sys, urllib.request
url, admin = sys.argv[1:]
for i in range(100):
    r = urllib.request.Request(f"{url}/v1/api-keys", json.dumps({"name": f"follower {i}", "role": "manage", "environment": "default"}).encode(),
                               method="POST", headers={"Content-Type": "application/json", "Authorization": "Bearer " + admin})
    print(json.loads(urllib.request.urlopen(r).read())["key"])
PY
fi
s0=""; s100=""; all0=""; all100=""; cpu0=""; cpu100=""
for _ in $(seq "${ROUNDS:-3}"); do
  r=$(paced) || exit 1; s0=$(low "$s0" "${r% *}"); all0+=" $(cut -d' ' -f2 <<<"$r")"; cpu0+=" ${r##* }"
  follow
  r=$(paced) || exit 1; s100=$(low "$s100" "${r% *}"); all100+=" $(cut -d' ' -f2 <<<"$r")"; cpu100+=" ${r##* }"
  kill "${subs[@]}" 2>/dev/null || true; wait "${subs[@]}" 2>/dev/null || true
done
[[ $followers == curl ]] || sed 's/^/followers: /' "$work/follow.out"
echo "p99 ms of each round, 0 streams:  $all0"
echo "p99 ms of each round, 100 streams:$all100"
echo "server CPU % of a core, 0 streams:  $cpu0"
echo "server CPU % of a core, 100 streams:$cpu100"
python3 - "$all0" "$all100" "$cpu0" "$cpu100" <<'PY'
import statistics, sys
p0, p100, c0, c100 = ([float(x) for x in a.split()] for a in sys.argv[1:])
m0, m100 = statistics.median(p0), statistics.median(p100)
print(f"medians of the rounds: p99 {m0:.2f} -> {m100:.2f} ms ({100 * (m100 - m0) / max(m0, 0.001):+.0f}%), "
      f"server CPU {statistics.median(c0):.0f}% -> {statistics.median(c100):.0f}% of a core")
PY
printf '%-28s %8s/s  p99 %6s ms  non-2xx %s\n' "paced writes, 0 streams" $s0
printf '%-28s %8s/s  p99 %6s ms  non-2xx %s\n' "paced writes, 100 streams" $s100
read -r _ p0 _ <<<"$s0"; read -r _ p100 _ <<<"$s100"
echo "100 subscribers: write p99 $(python3 -c "print(f'{100*($p100-$p0)/max($p0,0.001):+.0f}')")%"
