#!/usr/bin/env bash
# Secret values in NATS JetStream KV and in OpenBao KV v2, beside OpenBao itself, one run,
# one client: wrk with one thread and 16 connections, 1,000 secrets of 64 bytes.
#   scripts/bench-backends.sh [path/to/coffer]      (default: target/release/coffer)
# Measures, two interleaved rounds, best of each: a value read through Coffer (the runtime
# plane's resolve of a function declaring one secret: catalog + value store + audit row) on
# the db, nats and vault backends, a direct OpenBao KV v2 read, durable writes on each, and
# how many requests OpenBao saw (its file audit device) while Coffer listed secrets.
# Needs wrk, nats-server, openssl; OpenBao from ../shared/bench/openbao.sh (durable: raft +
# fsync + file audit). Loopback only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
coffer=${1:-target/release/coffer}
[[ -x $coffer ]] || { echo "no coffer binary at $coffer (cargo build --release first)" >&2; exit 1; }
for tool in wrk nats-server openssl; do
  command -v $tool >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
shared=$(cd ../shared/bench && pwd)
eval "$("$shared/openbao.sh" durable)"
work=$(mktemp -d -t coffer-backends-XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nport=$(port)
nats-server -js -a 127.0.0.1 -p "$nport" -sd "$work/js" >"$work/nats.log" 2>&1 &
npid=$!
pids=("$npid" "$BAO_PID")
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
key=$(openssl rand -hex 32)
declare -A base admin
start() { # name, then VAR=value…
  local name=$1; shift
  local p; p=$(port)
  admin[$name]="ck_admin_$(openssl rand -hex 20)"
  env -u COFFER_SECRET_KEYS -u COFFER_SECRET_KEYS_FILE COFFER_MASTER_KEY="$key" \
    COFFER_ADMIN_KEY="${admin[$name]}" "$@" "$coffer" serve --listen "127.0.0.1:$p" \
    --data-dir "$work/$name" >"$work/$name.log" 2>&1 &
  pids+=($!)
  base[$name]="http://127.0.0.1:$p"
  for _ in $(seq 200); do curl -sf "${base[$name]}/healthz" >/dev/null && return; sleep 0.1; done
  echo "coffer ($name) did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}
start db
start nats COFFER_SECRETS_BACKEND=nats COFFER_NATS_URL="nats://127.0.0.1:$nport"
start vault COFFER_SECRETS_BACKEND=vault COFFER_VAULT_ADDR="$BAO_ADDR" COFFER_VAULT_TOKEN="$BAO_TOKEN"
declare -A runtime
for b in db nats vault; do
  runtime[$b]=$(python3 - "${base[$b]}" "${admin[$b]}" <<'PY'
import concurrent.futures, json, sys, urllib.request
c, admin = sys.argv[1:]
def call(method, path, body):
    r = urllib.request.Request(c + path, json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + admin})
    return json.loads(urllib.request.urlopen(r).read() or b"null")
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    list(ex.map(lambda i: call("PUT", f"/v1/environments/default/secrets/K{i}", {"value": "v" * 64}), range(1000)))
    list(ex.map(lambda i: call("PUT", f"/v1/environments/default/functions/f{i}",
        {"triggers": [{"event": "bench.x"}], "secrets": [f"K{i}"], "mode": "pull"}), range(1000)))
print(call("POST", "/v1/api-keys", {"name": "bench", "role": "runtime", "environment": "default"})["key"])
PY
)
done
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
report='done = function(s, l, r) io.write(string.format("RESULT %.0f %.2f %.2f %d\n", s.requests/(s.duration/1e6), l:percentile(50)/1000, l:percentile(99)/1000, s.errors.status)) end'
lua() { # file, auth header line, method, path prefix (a number 0-999 is appended), path suffix, body
  cat >"$1" <<LUA
$2
wrk.headers["Content-Type"] = "application/json"
request = function() return wrk.format("$3", "$4" .. math.random(0,999) .. "${5:-}", nil, ${6:-nil}) end
$report
LUA
}
w64=$(printf 'w%.0s' {1..64})
for b in db nats vault; do
  lua "$work/$b-read.lua" "wrk.headers[\"Authorization\"] = \"Bearer ${runtime[$b]}\"" POST /v1/environments/default/functions/f /resolve
  lua "$work/$b-write.lua" "wrk.headers[\"Authorization\"] = \"Bearer ${admin[$b]}\"" PUT /v1/environments/default/secrets/K "" "'{\"value\": \"$w64\"}'"
done
lua "$work/bao-read.lua" "wrk.headers[\"X-Vault-Token\"] = \"$BAO_TOKEN\"" GET /v1/secret/data/bench/K
lua "$work/bao-write.lua" "wrk.headers[\"X-Vault-Token\"] = \"$BAO_TOKEN\"" POST /v1/secret/data/bench/K "" "'{\"data\": {\"value\": \"$w64\"}}'"
run() { wrk -t1 -c16 -d6s -s "$2" "$1" | awk '/^RESULT/ {print $2, $3, $4, $5}'; }
declare -A best
for round in 1 2; do
  for k in bao-read db-read nats-read vault-read bao-write db-write nats-write vault-write; do
    case $k in bao-*) url=$BAO_ADDR ;; *) url=${base[${k%-*}]} ;; esac
    r=$(run "$url" "$work/$k.lua")
    if [[ -z ${best[$k]:-} || ${r%% *} -gt ${best[$k]%% *} ]]; then best[$k]=$r; fi
  done
done
for k in bao-read db-read nats-read vault-read bao-write db-write nats-write vault-write; do
  set -- ${best[$k]}
  printf '%-12s %7s/s  p50 %6s ms  p99 %6s ms  non-2xx %s\n' "$k" "$1" "$2" "$3" "$4"
done
p50() { set -- ${best[$1]}; echo "$2"; }
python3 -c "
v, b = $(p50 vault-read), $(p50 bao-read)
print(f'vault backend value read p50 {v} ms vs OpenBao direct {b} ms: +{100*(v-b)/b:.0f}% ({v-b:.2f} ms)')"
before=$(wc -l <"$BAO_DIR/audit.log")
for _ in $(seq 20); do
  curl -sf -H "Authorization: Bearer ${admin[vault]}" "${base[vault]}/v1/environments/default/secrets?limit=1000" >/dev/null
done
after=$(wc -l <"$BAO_DIR/audit.log")
echo "OpenBao audit lines during 20 listings of 1,000 secrets through the vault backend: $((after - before))"
