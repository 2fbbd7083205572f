#!/usr/bin/env bash
# Soak: mixed grader traffic (create, dataset builtin and inline, train, gradients, predict,
# check, reads, delete, and malformed requests) from wrk at 32 concurrent connections, for a
# bounded time and request count, against 127.0.0.1 only. Samples the server's RSS before,
# during and after, and prints requests served, responses by status, latency percentiles,
# RSS, and the 5xx count. Exits non-zero on any 5xx, socket error or timeout.
#
#   bench/soak.sh                   build and start the release server on a free port
#   SOAK_URL=http://127.0.0.1:8080 bench/soak.sh   use a running server (RSS if its pid is
#                                                   found by port or given as SOAK_PID)
#
# Settings (environment): SOAK_DURATION seconds (60), SOAK_CONNECTIONS (32), SOAK_THREADS
# (2), SOAK_MAX_REQUESTS in all (5,000,000; wrk stops a thread at its share),
# SOAK_RSS_EVERY seconds between RSS samples (5), SOAK_SEED (1), CARGO_TARGET_DIR.
# Needs wrk (apt-get install -y wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

duration=${SOAK_DURATION:-60}
connections=${SOAK_CONNECTIONS:-32}
threads=${SOAK_THREADS:-2}
max_requests=${SOAK_MAX_REQUESTS:-5000000}
rss_every=${SOAK_RSS_EVERY:-5}
url=${SOAK_URL:-}

for v in duration connections threads max_requests rss_every; do
    if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
        echo "soak.sh: $v is ${!v:-empty}; it must be a positive integer" >&2
        exit 2
    fi
done
if ((duration > 3600)); then
    echo "soak.sh: SOAK_DURATION is $duration s; at most 3600" >&2
    exit 2
fi
command -v wrk >/dev/null || { echo "soak.sh: wrk is missing (apt-get install -y wrk)" >&2; exit 2; }

work=$(mktemp -d)
server_pid=
sampler_pid=
cleanup() {
    [[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null || true
    if [[ -n $server_pid && -z ${SOAK_URL:-} ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -z $url ]]; then
    target=${CARGO_TARGET_DIR:-target}
    echo "-- cargo build --release --bin backprop-server (target dir $target)"
    cargo build --release --quiet --bin backprop-server
    NO_COLOR=1 RUST_LOG=warn,backprop_server=info "$target/release/backprop-server" \
        --addr 127.0.0.1:0 --database "sqlite:$work/soak.db" >"$work/server.log" 2>&1 &
    server_pid=$!
    addr=
    for _ in $(seq 1 300); do
        addr=$(sed 's/\x1b\[[0-9;]*m//g' "$work/server.log" |
            sed -n 's/.*backprop-server listening addr=\([0-9.]*:[0-9]*\).*/\1/p' | head -n 1)
        [[ -n $addr ]] && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
        sleep 0.1
    done
    [[ -n $addr ]] || { echo "soak.sh: the server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
    url=http://$addr
else
    server_pid=${SOAK_PID:-}
fi

# Loopback only: this script sends a lot of traffic, and nowhere but this machine.
hostport=${url#http://}
hostport=${hostport%%/*}
host=${hostport%:*}
port=${hostport##*:}
if ! [[ $host =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ || $host == localhost || $host == "[::1]" ]]; then
    echo "soak.sh: $url is not a loopback address (127.0.0.0/8, localhost, [::1])" >&2
    exit 2
fi
if [[ -z $server_pid ]] && command -v ss >/dev/null; then
    server_pid=$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n 1)
fi

curl -fsS "$url/healthz" >/dev/null || { echo "soak.sh: $url/healthz does not answer" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
sessions() { curl -fsS "$url/sessions?limit=1" | sed -n 's/.*"total":\([0-9]*\).*/\1/p'; }

rss_start=
if [[ -n $server_pid ]]; then
    rss_start=$(rss_kib "$server_pid")
    (
        t=0
        while sleep "$rss_every"; do
            t=$((t + rss_every))
            echo "$t $(rss_kib "$server_pid")"
        done
    ) >"$work/rss.txt" &
    sampler_pid=$!
fi

echo "-- soak: $url, ${duration} s, $connections connections, $threads wrk threads, at most $max_requests requests"
SOAK_RESULT=$work/result.txt SOAK_MAX_REQUESTS=$(((max_requests + threads - 1) / threads)) \
    SOAK_SEED=${SOAK_SEED:-1} \
    timeout $((duration + 60)) wrk -t "$threads" -c "$connections" -d "${duration}s" --timeout 30s \
    -s "$root/bench/soak/mix.lua" "$url" >"$work/wrk.txt" 2>&1 || {
    echo "soak.sh: wrk failed:" >&2
    cat "$work/wrk.txt" >&2
    exit 1
}
rss_end=
if [[ -n $server_pid ]]; then
    rss_end=$(rss_kib "$server_pid")
    kill "$sampler_pid" 2>/dev/null || true
    sampler_pid=
fi
alive=yes
curl -fsS "$url/healthz" >/dev/null 2>&1 || alive=no
held=$(sessions || echo "?")

get() { awk -v k="$1" '$1 == k {print $2}' "$work/result.txt"; }
ms() { awk -v us="$1" 'BEGIN {printf "%.2f ms", us / 1000}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }

requests=$(get requests)
secs=$(awk -v us="$(get duration_us)" 'BEGIN {printf "%.1f", us / 1e6}')
echo
echo "requests served   $requests in $secs s ($(awk -v n="$requests" -v s="$secs" 'BEGIN {printf "%.0f", n / s}')/s)"
echo "responses         $(awk '$1 ~ /^status_/ {sub("status_", "", $1); printf "%s: %s  ", $1, $2}' "$work/result.txt")"
echo "issued by kind    $(awk '$1 ~ /^issued_/ {sub("issued_", "", $1); printf "%s %s  ", $1, $2}' "$work/result.txt" | tr -s ' ')"
echo "latency           p50 $(ms "$(get latency_p50_us)"), p90 $(ms "$(get latency_p90_us)"), p99 $(ms "$(get latency_p99_us)"), p99.9 $(ms "$(get latency_p99.9_us)"), max $(ms "$(get latency_max_us)")"
echo "socket errors     connect $(get socket_error_connect), read $(get socket_error_read), write $(get socket_error_write), timeout $(get socket_error_timeout)"
if [[ -n $rss_start ]]; then
    samples=$(awk '{printf "%s s: %.1f  ", $1, $2 / 1024}' "$work/rss.txt")
    # Steady: the first sample after a quarter of the run, once the session pools are full.
    steady=$(awk -v q=$((duration / 4)) '$1 >= q {print $2; exit}' "$work/rss.txt")
    echo "server RSS        start $(mib "$rss_start"), steady $(mib "${steady:-0}") (at >= $((duration / 4)) s), end $(mib "$rss_end")"
    echo "RSS samples MiB   $samples"
else
    echo "server RSS        not sampled (no pid; set SOAK_PID)"
fi
echo "sessions held     $held after the run"
echo "server alive      $alive"

fivexx=$(awk '$1 ~ /^status_5/ {n += $2} END {print n + 0}' "$work/result.txt")
socket=$(awk '$1 ~ /^socket_error_/ {n += $2} END {print n + 0}' "$work/result.txt")
echo "5xx               $fivexx"
if ((fivexx > 0 || socket > 0)) || [[ $alive != yes ]]; then
    echo "soak.sh: FAILED ($fivexx 5xx, $socket socket errors, server alive: $alive)" >&2
    [[ -f $work/server.log ]] && tail -n 20 "$work/server.log" >&2
    exit 1
fi
echo "soak.sh: ok"
