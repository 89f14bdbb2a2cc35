#!/usr/bin/env bash
# Builds the server and the load generator in release mode, then runs the loopback bench.
# Options go to coffer-bench (try --help), e.g. scripts/bench.sh --duration 5 --warmup 1.
set -euo pipefail
cd "$(dirname "$0")/.."

# Two cores: don't let the build oversubscribe them.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release -p coffer-cli -p coffer-bench
exec target/release/coffer-bench "$@"
