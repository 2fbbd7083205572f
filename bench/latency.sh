#!/usr/bin/env bash
# /healthz and one-sample predict latency (p50, p99) while every worker trains a big net,
# with compute threads lowered (the default) and not (BACKPROP_COMPUTE_PRIORITY=normal), in
# interleaved rounds. Builds the release binary first. Figures and their reading:
# bench/LATENCY.md.
#
#   bench/latency.sh                       # 3 rounds of 4,000 requests per policy
#   bench/latency.sh --rounds 1 --requests 1000
#   bench/latency.sh --policies default,normal,idle,batch:19
#
# Needs cargo and python3 (standard library only). Respects CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
uptime
exec python3 bench/latency.py "$target_dir/release/backprop-server" "$@"
