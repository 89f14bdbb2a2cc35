#!/usr/bin/env bash
# Builds the server and the load generator in release mode, then runs the loopback bench.
# Options go to coffer-bench (try --help), e.g. scripts/bench.sh --duration 5 --warmup 1.
# Honours CARGO_TARGET_DIR: the binaries are run from where cargo put them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Two cores: don't let the build oversubscribe them.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release -p coffer-cli -p coffer-bench
release="${CARGO_TARGET_DIR:-target}/release"

# The server the bench starts is the one just built, unless the caller names another.
bin_args=(--coffer-bin "$release/coffer")
for arg in "$@"; do
  case $arg in
    --coffer-bin | --coffer-bin=*) bin_args=() ;;
  esac
done
exec "$release/coffer-bench" "${bin_args[@]}" "$@"
