#!/usr/bin/env bash
# Runs the whole Switchboard test suite on a fresh machine: installs what the tests need,
# then runs every crate's unit and integration tests. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# The document-client tests drive the gateway with seed 000's own Python client, which uses
# the `websockets` library.
if ! python3 -c 'import websockets' 2>/dev/null; then
  say "installing the Python websockets library (seed 000's client)"
  python3 -m pip install --quiet --disable-pip-version-check 'websockets>=12' \
    || { echo "error: could not install the Python 'websockets' package; install it with: python3 -m pip install websockets" >&2; exit 1; }
fi

say "cargo test --workspace"
cargo test --workspace --locked "$@"
