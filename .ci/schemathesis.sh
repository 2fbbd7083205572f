#!/usr/bin/env bash
# Schemathesis against openapi.yaml, on the real server, with every check it has.
#
#   .ci/schemathesis.sh [SERVER_BINARY]     (default: target/release/backprop-server)
#
# Installs the pinned schemathesis into .venv-ci/ (git-ignored; reused when it already has
# the pinned version), starts the server on a free 127.0.0.1 port, runs every phase
# (examples, coverage, fuzzing, stateful) over every operation, and exits non-zero on any
# failure. The server is always stopped at the end.
#
# Settings (environment): ST_MAX_EXAMPLES (default 50 per operation and phase),
# ST_SEED (default fixed, so CI is reproducible; "random" for a fresh draw each run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bin=${1:-${CARGO_TARGET_DIR:-target}/release/backprop-server}
venv=$root/.venv-ci
max_examples=${ST_MAX_EXAMPLES:-50}
seed=${ST_SEED:-20261127}
requirements=$root/.ci/schemathesis-requirements.txt
st_version=$(sed -n 's/^schemathesis==//p' "$requirements")

if [[ ! -x $bin ]]; then
    echo "schemathesis.sh: no server binary at $bin (cargo build --release first)" >&2
    exit 2
fi

if [[ "$("$venv/bin/schemathesis" --version 2>/dev/null || true)" != *"version $st_version" ]]; then
    echo "-- installing schemathesis $st_version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$requirements"
fi

# Scratch space outside the repository: the server log and its SQLite file, and the example
# database and caches that schemathesis and hypothesis write into their working directory.
work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# A short training time limit keeps the largest `epochs` schemathesis draws (1,000,000) to a
# couple of seconds per request, and the same for background trains ("wait": false), which
# would otherwise hold the workers for up to an hour each; the contract's answer for it
# (status time_limit) is unchanged.
NO_COLOR=1 RUST_LOG=warn,backprop_server=info "$bin" --addr 127.0.0.1:0 \
    --database "sqlite:$work/schemathesis.db" \
    --train-time-limit-secs 2 --job-time-limit-secs 2 >"$work/server.log" 2>&1 &
server_pid=$!

addr=
for _ in $(seq 1 300); do
    addr=$(sed 's/\x1b\[[0-9;]*m//g' "$work/server.log" |
        sed -n 's/.*backprop-server listening addr=\([0-9.]*:[0-9]*\).*/\1/p' | head -n 1)
    [[ -n $addr ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "schemathesis.sh: the server exited before listening:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z $addr ]]; then
    echo "schemathesis.sh: the server did not report its address within 30 s:" >&2
    cat "$work/server.log" >&2
    exit 1
fi
echo "-- server $bin at http://$addr (pid $server_pid)"

seed_args=(--seed "$seed")
[[ $seed == random ]] && seed_args=()

status=0
(
    cd "$work"
    SCHEMATHESIS_HOOKS=$root/.ci/schemathesis_hooks.py \
        "$venv/bin/schemathesis" --config-file "$root/.ci/schemathesis.toml" \
        run "$root/openapi.yaml" --url "http://$addr" \
        --max-examples "$max_examples" "${seed_args[@]}" \
        --no-color --output-truncate false
) || status=$?

# A run that passed must also have left the server up and unpanicked.
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "schemathesis.sh: the server died during the run:" >&2
    tail -n 50 "$work/server.log" >&2
    status=1
elif grep -q "panicked" "$work/server.log"; then
    echo "schemathesis.sh: the server panicked during the run:" >&2
    grep -A5 "panicked" "$work/server.log" >&2
    status=1
fi
exit "$status"
