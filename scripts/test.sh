#!/usr/bin/env bash
# Runs Coffer's whole test suite on a fresh machine: format, lints, every test.
# Services are brought up here, before the tests: PostgreSQL (the machine's, or a throwaway
# one) for crates/coffer-postgres, whose tests each make a database of their own on it and
# apply the PostgreSQL migrations there. A missing service fails the run with a message
# saying how to get it; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# Two cores: keep the build and the test binaries from oversubscribing them.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== PostgreSQL for the tests"
pg_env=$(scripts/postgres.sh)  # a failure here stops the run (set -e), unlike inside eval "$(…)"
eval "$pg_env"
export COFFER_TEST_DATABASE_URL  # the PostgreSQL tests read it; without it they fail
# Test databases are named coffer_t_<pid of the test process>_…: the ones whose process is
# gone (a killed earlier run) are dropped first, and this run's leftovers at the end. A test
# database of a process still running (another suite on this machine) is left alone.
drop_test_databases() {
    psql "$COFFER_TEST_DATABASE_URL" -qAt -c \
        "SELECT datname FROM pg_database WHERE datname LIKE 'coffer\_t\_%'" |
        while read -r db; do
            pid=${db#coffer_t_}
            pid=${pid%%_*}
            if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then continue; fi
            psql "$COFFER_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
        done
}
trap 'drop_test_databases || true; eval "${COFFER_PG_STOP:-}"' EXIT
psql "$COFFER_TEST_DATABASE_URL" -v ON_ERROR_STOP=1 -qc 'SELECT 1' >/dev/null
drop_test_databases

echo "== nats-server is there (the event relay's test starts its own)"
if ! command -v nats-server >/dev/null && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server) >&2 || true
fi
command -v nats-server >/dev/null || {
    echo "nats-server is needed by crates/coffer-cli/tests/nats.rs: apt-get install nats-server" >&2
    exit 1
}

echo "== Chromium, ChromeDriver and Firefox are there (the dashboard's browser tests start their own)"
if { [[ ! -x /usr/bin/chromium ]] || ! command -v chromedriver >/dev/null || ! command -v firefox-esr >/dev/null; } &&
    command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver firefox-esr) >&2 || true
fi
[[ -x /usr/bin/chromium ]] && command -v chromedriver >/dev/null || {
    echo "chromium and chromedriver are needed by crates/coffer-cli/tests/dashboard.rs:" \
        "apt-get install chromium chromium-driver" >&2
    exit 1
}
command -v firefox-esr >/dev/null || {
    echo "firefox-esr is needed by crates/coffer-cli/tests/dashboard_firefox.rs: apt-get install firefox-esr" >&2
    exit 1
}

echo "== OpenBao (Vault's API) for the vault backend's tests"
bao_env=$(scripts/openbao.sh)
eval "$bao_env"
export COFFER_TEST_BAO

echo "== cargo test"
cargo test --workspace --locked -- --test-threads="${COFFER_TEST_THREADS:-2}"
echo "== the core and API suites again, on PostgreSQL (the same harness, COFFER_TEST_BACKEND)"
COFFER_TEST_BACKEND=postgres cargo test --locked -p coffer-core --test core -p coffer-api --test api \
    -p coffer-cli --test runtime_cli --test runtime --test orchestrations --test orchestrations_cli \
    -- --test-threads="${COFFER_TEST_THREADS:-2}"
echo "== the API suite again with values in NATS JetStream KV and in OpenBao KV v2 and KV v1"
stop_services=()
trap 'for c in "${stop_services[@]}"; do eval "$c" || true; done; drop_test_databases || true; eval "${COFFER_PG_STOP:-}"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
if (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    COFFER_TEST_NATS_URL=nats://127.0.0.1:4222   # the machine's NATS (JetStream on)
else
    nats_port=$(free_port); nats_dir=$(mktemp -d -t coffer-nats-XXXXXX)
    nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$nats_dir" >"$nats_dir/log" 2>&1 &
    stop_services+=("kill $! 2>/dev/null; rm -rf '$nats_dir'")
    COFFER_TEST_NATS_URL=nats://127.0.0.1:$nats_port
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$nats_port) 2>/dev/null && break; sleep 0.1; done
fi
bao_port=$(free_port)
"$COFFER_TEST_BAO" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$bao_port" >/dev/null 2>&1 &
stop_services+=("kill $! 2>/dev/null")
COFFER_TEST_VAULT_ADDR=http://127.0.0.1:$bao_port
COFFER_TEST_VAULT_TOKEN=root
for _ in $(seq 100); do curl -sf "$COFFER_TEST_VAULT_ADDR/v1/sys/health" >/dev/null && break; sleep 0.1; done
curl -sf -X POST -H "X-Vault-Token: root" -d '{"type":"kv","options":{"version":"1"}}' \
    "$COFFER_TEST_VAULT_ADDR/v1/sys/mounts/kv1" >/dev/null
export COFFER_TEST_NATS_URL COFFER_TEST_VAULT_ADDR COFFER_TEST_VAULT_TOKEN
for values in nats vault vault-kv1; do
    echo "-- COFFER_TEST_VALUES=$values"
    COFFER_TEST_VALUES=$values cargo test --locked -p coffer-api --test api \
        -- --test-threads="${COFFER_TEST_THREADS:-2}"
done
COFFER_TEST_BACKEND=postgres COFFER_TEST_VALUES=nats cargo test --locked -p coffer-api --test api \
    -- --test-threads="${COFFER_TEST_THREADS:-2}"

echo "== the TypeScript SDK (sdk/typescript): build, node --test against the real binary on SQLite and PostgreSQL, npm audit"
command -v node >/dev/null && command -v npm >/dev/null || {
    echo "node and npm (Node.js >= 20.3) are needed by sdk/typescript: apt-get install nodejs npm" >&2
    exit 1
}
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 3) ? 0 : 1)' || {
    echo "sdk/typescript needs Node.js >= 20.3 (this is $(node --version))" >&2
    exit 1
}
cargo build --locked --bin coffer
COFFER_BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/coffer"
export COFFER_BIN
(
    cd sdk/typescript
    npm ci --no-fund --no-audit
    npm run build
    npm test
    COFFER_SDK_BACKEND=postgres npm test
    # Zero runtime dependencies, and an audit of what ships (the registry's bulk advisory
    # endpoint that a full audit of the dev tooling would ask is not served everywhere).
    node -e 'const p = require("./package.json"); if (Object.keys(p.dependencies ?? {}).length) { console.error("sdk/typescript has runtime dependencies:", p.dependencies); process.exit(1); }'
    npm audit --omit=dev
)

scripts/openapi-check.sh  # the OpenAPI document: valid 3.1, and the real server answers as it says
