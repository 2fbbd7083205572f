#!/usr/bin/env bash
# What a per-request feature costs a one-sample predict: the release server with the feature
# (the default) and with its hidden switch off, side by side, each serving wrk's one-sample
# predicts (bench/predict.lua) on the notebook's session in alternating rounds (ABBA, so a
# drift in the machine's load hits both alike).
#
#   bench/overhead.sh metrics      # request metrics against --no-metrics
#   bench/overhead.sh admission    # memory admission against --no-admission
#
# A one-sample predict is where such a feature weighs most: its own work is a few
# microseconds. Two measures per run: the server's CPU time per request (all its threads,
# from /proc/PID/task/*/schedstat) and wrk's requests per second and median latency. Prints
# each round, then the medians and the median of the per-round ratios (feature / none).
#
# On a shared machine both move with the neighbours' load (under KVM a preempted vCPU's
# stolen time even counts as the server's CPU time), so a third measure follows when valgrind
# is installed: the server's own instructions per predict, counted by callgrind over a run of
# predicts after a warm-up (user space only: the kernel's share of a request is the same with
# and without the feature). It repeats to within about half a percent whatever else the
# machine does. INSTRUCTIONS=0 skips it.
#
# Settings (environment): ROUNDS (6; each runs both servers), SECONDS_PER_RUN (4), AA=1 (an
# A/A run: both servers without the feature, for the noise floor),
# CONNECTIONS (4), SERVER_LOG (the servers' RUST_LOG, default warn: request logging costs
# both alike, and without it the ratio is the most sensitive), CARGO_TARGET_DIR.
# Needs wrk (apt-get install -y wrk) and python3. Loopback only; both servers are stopped at
# the end.
set -euo pipefail
cd "$(dirname "$0")/.."

feature=${1:-}
case $feature in
metrics | admission) ;;
*)
    echo "usage: bench/overhead.sh metrics|admission" >&2
    exit 2
    ;;
esac

rounds=${ROUNDS:-6}
seconds=${SECONDS_PER_RUN:-4}
connections=${CONNECTIONS:-4}
log=${SERVER_LOG:-warn}
command -v wrk >/dev/null || { echo "overhead.sh: wrk is missing (apt-get install -y wrk)" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-target}
echo "-- cargo build --release --bin backprop-server"
cargo build --release --quiet --bin backprop-server
bin=$target/release/backprop-server

work=$(mktemp -d)
pids=()
declare -A pid_of
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Starts the server with extra flags; sets the variable named $1 to its base URL.
start() { # $1: variable name, then flags
    local name=$1
    shift
    NO_COLOR=1 RUST_LOG="$log,backprop_server=info" "$bin" --addr 127.0.0.1:0 \
        --database memory --session-ttl-secs 0 "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    pid_of[$name]=$!
    local addr=
    for _ in $(seq 1 300); do
        addr=$(sed -n 's/.*backprop-server listening addr=\([0-9.]*:[0-9]*\).*/\1/p' "$work/$name.log" | head -n 1)
        [[ -n $addr ]] && break
        sleep 0.1
    done
    [[ -n $addr ]] || { echo "the $name server did not start:" >&2; cat "$work/$name.log" >&2; exit 1; }
    printf -v "$name" 'http://%s' "$addr"
}

on= off=
if [[ ${AA:-0} == 1 ]]; then
    # An A/A run: both servers without the feature, to see the noise floor and any bias.
    start on "--no-$feature"
else
    start on
fi
start off "--no-$feature"

session() { # $1: base URL; prints the session's path
    local s
    s=$(curl -s -o /dev/null -w '%header{location}' --json '{"layers": [4, 3], "init": {"seed": 0}}' "$1/sessions")
    curl -s -o /dev/null -X PUT --json '{"builtin": "cat-dog-ship"}' "$1$s/dataset"
    curl -s -o /dev/null --json '{"epochs": 100, "return_loss": false}' "$1$s/train"
    echo "$s"
}
on_session=$(session "$on")
off_session=$(session "$off")
[[ $feature != metrics || ${AA:-0} == 1 || $(curl -s -o /dev/null -w '%{http_code}' "$on/metrics") == 200 ]] || { echo "metrics are off on $on" >&2; exit 1; }
[[ $feature != metrics || $(curl -s -o /dev/null -w '%{http_code}' "$off/metrics") == 404 ]] || { echo "metrics are on on $off" >&2; exit 1; }

# Nanoseconds the process has run on a CPU, all threads together.
cpu_ns() { # $1: pid
    cat /proc/"$1"/task/*/schedstat | awk '{ ns += $1 } END { printf "%.0f", ns }'
}

run() { # $1: label, $2: base URL, $3: session path, $4: pid
    local before after
    before=$(cpu_ns "$4")
    SESSION=$3 wrk -t1 -c"$connections" -d"${seconds}s" --latency -s bench/predict.lua "$2" \
        >"$work/wrk.txt" 2>&1
    after=$(cpu_ns "$4")
    local rps p50 requests cpu_us
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$work/wrk.txt")
    p50=$(sed -n 's/^ *50% *\([0-9.]*[a-z]*\).*/\1/p' "$work/wrk.txt")
    requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/wrk.txt")
    cpu_us=$(awk -v a="$before" -v b="$after" -v n="$requests" 'BEGIN { printf "%.3f", (b - a) / n / 1000 }')
    if grep -q "Non-2xx\|Socket errors" "$work/wrk.txt"; then
        echo "wrk saw errors:" >&2
        cat "$work/wrk.txt" >&2
        exit 1
    fi
    echo "$1 $rps $p50 $cpu_us" >>"$work/results.txt"
    printf '  %-10s %8s us CPU/request   %10s req/s   p50 %s\n' "$1" "$cpu_us" "$rps" "$p50"
}

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds of ${seconds}s per server, $connections connections, RUST_LOG=$log"
# Warm both up (connections, caches, the recorder's series).
run warmup "$on" "$on_session" "${pid_of[on]}" >/dev/null
run warmup "$off" "$off_session" "${pid_of[off]}" >/dev/null
: >"$work/results.txt"
for r in $(seq 1 "$rounds"); do
    echo "round $r"
    if ((r % 2)); then
        run "$feature" "$on" "$on_session" "${pid_of[on]}"
        run none "$off" "$off_session" "${pid_of[off]}"
    else
        run none "$off" "$off_session" "${pid_of[off]}"
        run "$feature" "$on" "$on_session" "${pid_of[on]}"
    fi
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# Instructions per predict under callgrind, counted only while wrk runs (after a warm-up).
instructions() { # $1: label, then flags; appends "label instructions requests"
    local name=$1
    shift
    local out=$work/callgrind.$name
    NO_COLOR=1 RUST_LOG="$log,backprop_server=info" valgrind --tool=callgrind \
        --instr-atstart=no --callgrind-out-file="$out" "$bin" --addr 127.0.0.1:0 \
        --database memory --session-ttl-secs 0 --workers 1 "$@" >"$work/vg.$name.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    local addr=
    for _ in $(seq 1 600); do
        addr=$(sed -n 's/.*backprop-server listening addr=\([0-9.]*:[0-9]*\).*/\1/p' "$work/vg.$name.log" | head -n 1)
        [[ -n $addr ]] && break
        sleep 0.1
    done
    [[ -n $addr ]] || { echo "the $name server under valgrind did not start:" >&2; cat "$work/vg.$name.log" >&2; exit 1; }
    local s
    s=$(session "http://$addr")
    SESSION=$s wrk -t1 -c1 -d2s -s bench/predict.lua "http://$addr" >/dev/null 2>&1
    callgrind_control -i on "$pid" >/dev/null
    SESSION=$s wrk -t1 -c1 -d8s -s bench/predict.lua "http://$addr" >"$work/wrk.txt" 2>&1
    callgrind_control -i off "$pid" >/dev/null
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    local requests ir
    requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/wrk.txt")
    ir=$(sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' "$work/vg.$name.log")
    echo "$name $ir $requests" >>"$work/instructions.txt"
    printf '  %-10s %d instructions per predict (%d predicts)\n' "$name" $((ir / requests)) "$requests"
}
if [[ ${INSTRUCTIONS:-1} != 0 ]] && command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
    echo "== instructions per predict (callgrind, one worker, one connection)"
    : >"$work/instructions.txt"
    instructions "$feature"
    instructions none "--no-$feature"
fi

python3 - "$work/results.txt" "$feature" <<'EOF'
import statistics, sys
f = sys.argv[2]
rows = [line.split() for line in open(sys.argv[1])]
def secs(t):
    for unit, f in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * f
    raise ValueError(t)
rps = {k: [float(r[1]) for r in rows if r[0] == k] for k in (f, "none")}
p50 = {k: [secs(r[2]) for r in rows if r[0] == k] for k in (f, "none")}
cpu = {k: [float(r[3]) for r in rows if r[0] == k] for k in (f, "none")}
med = statistics.median
cpu_ratios = [m / n for m, n in zip(cpu[f], cpu["none"])]
rps_ratios = [m / n for m, n in zip(rps[f], rps["none"])]
print(f"server CPU per request, median: {f} {med(cpu[f]):.2f} us, "
      f"none {med(cpu['none']):.2f} us")
r = med(cpu_ratios)
print(f"  median per-round ratio ({f} / none): {r:.4f}  ->  overhead {100 * (r - 1):+.2f}% "
      f"(rounds: {', '.join(f'{x:.3f}' for x in cpu_ratios)})")
print(f"throughput, median: {f} {med(rps[f]):.0f} req/s, none {med(rps['none']):.0f} req/s;"
      f" p50 latency: {f} {med(p50[f])*1e6:.0f} us, none {med(p50['none'])*1e6:.0f} us")
r = med(rps_ratios)
print(f"  median per-round ratio ({f} / none): {r:.4f}  ->  overhead {100 * (1 - r):+.2f}% "
      f"(rounds: {', '.join(f'{x:.3f}' for x in rps_ratios)})")
try:
    counted = {l.split()[0]: (int(l.split()[1]), int(l.split()[2]))
               for l in open(sys.argv[1].replace("results.txt", "instructions.txt"))}
except OSError:
    counted = {}
if len(counted) == 2:
    per = {k: ir / n for k, (ir, n) in counted.items()}
    print(f"instructions per predict: {f} {per[f]:.0f}, none {per['none']:.0f}  ->  "
          f"ratio {per[f] / per['none']:.4f}, overhead {100 * (per[f] / per['none'] - 1):+.2f}%")
EOF
