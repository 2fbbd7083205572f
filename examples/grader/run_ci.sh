#!/usr/bin/env bash
# CI for examples/grader: the grading client against the real server binary.
# Builds nothing: it expects the binary (BACKPROP_SERVER_BIN, default target/debug/backprop-server,
# as `cargo build` or `cargo test` leaves it). Needs Python 3.9+ with venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export BACKPROP_SERVER_BIN="${BACKPROP_SERVER_BIN:-$repo/target/debug/backprop-server}"
if [ ! -x "$BACKPROP_SERVER_BIN" ]; then
    echo "run_ci.sh: no server binary at $BACKPROP_SERVER_BIN; run 'cargo build' first" >&2
    exit 1
fi

# The venv sees the system's packages, so a machine that has numpy and requests installs
# nothing (and needs no network); elsewhere pip brings them.
venv="${GRADER_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$venv"
fi
if ! "$venv/bin/python" -c 'import numpy, requests' 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check requests numpy
fi

exec "$venv/bin/python" "$here/test_grader.py" -v
