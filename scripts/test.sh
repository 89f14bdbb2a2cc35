#!/usr/bin/env bash
# Runs Coffer's whole test suite on a fresh machine: format, lints, every test.
# Today's suite needs no external service (the embedded SQLite store is built in).
# Backends that need PostgreSQL, NATS or OpenBao bring them up here, before the tests,
# and a test whose service is missing fails with a message saying how to get it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Two cores: keep the build and the test binaries from oversubscribing them.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked -- --test-threads="${COFFER_TEST_THREADS:-2}"
