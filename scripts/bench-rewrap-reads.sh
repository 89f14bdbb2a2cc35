#!/usr/bin/env bash
# Metadata reads while a rewrap runs: do scans and re-encryption starve the request path?
#   scripts/bench-rewrap-reads.sh [path/to/coffer] [secrets]     (default: target/release/coffer, 50000)
# Seeds the secrets under key version 1, restarts with version 2 current, then measures
# GET …/secrets/{name} with wrk (one thread, 16 connections, 5 s) twice: alone, and while
# `POST /v1/keys/rewrap` calls run back to back (the first re-encrypts every value, the
# later ones open and verify every value). Prints both and the rewraps' durations.
# Loopback only; stops what it starts. Needs wrk, curl and python3.
set -euo pipefail
coffer=${1:-${CARGO_TARGET_DIR:-target}/release/coffer}
count=${2:-50000}
[[ -x $coffer ]] || { echo "no coffer binary at $coffer (cargo build --release first)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
work=$(mktemp -d -t coffer-rewrap-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin="ck_admin_$(openssl rand -hex 20)"
k1=$(openssl rand -hex 32); k2=$(openssl rand -hex 32)
C="http://127.0.0.1:$port"
pid=
start() { # $1: keyring JSON
  env -u COFFER_MASTER_KEY -u COFFER_SECRET_KEYS_FILE COFFER_SECRET_KEYS="$1" COFFER_ADMIN_KEY="$admin" \
    "$coffer" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >>"$work/coffer.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do curl -sf "$C/healthz" >/dev/null && return; sleep 0.1; done
  echo "coffer did not start; see $work/coffer.log" >&2; exit 1
}
stop() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; pid=; }
trap 'stop; rm -rf "$work"' EXIT
start "{\"currentKeyVersion\": 1, \"keys\": {\"1\": \"$k1\"}}"
python3 - "$C" "$admin" "$count" <<'PY'
import concurrent.futures, json, sys, urllib.request
c, admin, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def put(i):
    r = urllib.request.Request(f"{c}/v1/environments/default/secrets/K{i}",
        json.dumps({"value": "v" * 64}).encode(), method="PUT",
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + admin})
    urllib.request.urlopen(r).read()
with concurrent.futures.ThreadPoolExecutor(16) as ex:
    list(ex.map(put, range(n)))
PY
stop
start "{\"currentKeyVersion\": 2, \"keys\": {\"1\": \"$k1\", \"2\": \"$k2\"}}"
cat >"$work/read.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $admin"
request = function() return wrk.format("GET", "/v1/environments/default/secrets/K" .. math.random(0, $count - 1)) end
done = function(s, l, r) io.write(string.format("RESULT %.0f %.2f %.2f %d\n", s.requests/(s.duration/1e6), l:percentile(50)/1000, l:percentile(99)/1000, s.errors.status)) end
LUA
row() { awk -v what="$1" '/^RESULT/ {printf "%-22s %8s/s  p50 %5s ms  p99 %6s ms  non-2xx %s\n", what, $2, $3, $4, $5}'; }
wrk -t1 -c16 -d5s -s "$work/read.lua" "$C" | row "reads alone"
# Rewraps back to back for the whole wrk run: the first re-encrypts every value, the later
# ones open (verify) every value and rewrite none: a steady scan-and-crypto load.
wrk -t1 -c16 -d5s -s "$work/read.lua" "$C" >"$work/during.txt" &
wrkpid=$!
passes=0
while kill -0 "$wrkpid" 2>/dev/null; do
  curl -sf -o /dev/null -w '%{time_total}\n' -X POST -H "Authorization: Bearer $admin" "$C/v1/keys/rewrap" >>"$work/rewraps.txt"
  passes=$((passes + 1))
done
wait "$wrkpid"
row "reads during rewraps" <"$work/during.txt"
python3 - "$work/rewraps.txt" "$count" <<'PY'
import sys
times = [float(t) for t in open(sys.argv[1]).read().split()]
n = int(sys.argv[2])
print(f"rewraps meanwhile: {len(times)} passes over {n} values; first (re-encrypts all) {times[0]:.2f} s, "
      f"later (verify only) {sum(times[1:]) / max(len(times) - 1, 1):.2f} s each")
PY
