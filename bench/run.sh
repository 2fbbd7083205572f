#!/usr/bin/env bash
# Runs the Rust benchmarks (criterion) and the NumPy baseline on the same machine, in the same
# run, and prints tables of medians and ratios against the targets of issues 2 and 12: the full
# benchmark, then paired rounds (each training workload, Rust then NumPy, back to back).
#
#   bench/run.sh            # everything: training workloads and the matrix-product kernels
#   bench/run.sh --quick    # fewer samples and repeats (a smoke test; noisier figures)
#
# Needs cargo, python3 with numpy and threadpoolctl. Takes a few minutes on 2 cores once the
# benchmark is built. Respects CARGO_TARGET_DIR. Figures and their reading: bench/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."
quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  *) echo "usage: bench/run.sh [--quick]" >&2; exit 2 ;;
esac

target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
crit="$target_dir/criterion"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "$quick" = 1 ]; then
  crit_args=(--warm-up-time 0.5 --measurement-time 1 --sample-size 10)
  np_args=(--quick)
  rounds=2
else
  crit_args=(--warm-up-time 1 --measurement-time 2 --sample-size 20)
  np_args=()
  rounds=5
fi

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
# Old results would be read if a benchmark silently did not run.
rm -rf "$crit/train" "$crit/gemm" "$crit/train_cpu" "$crit/gemm_cpu"
bench() { # $1: log name, $2: clock (wall or cpu), then criterion arguments
  local log=$work/$1.log clock=$2
  shift 2
  echo "== BENCH_CLOCK=$clock cargo bench --bench core -- $*"
  BENCH_CLOCK=$clock cargo bench --bench core -- "$@" >"$log" 2>&1 || {
    tail -40 "$log" >&2
    echo "cargo bench failed; the log's end is above" >&2
    exit 1
  }
}
bench cargo-wall wall "${crit_args[@]}"
# On CPU time, the training workloads and the five products of a blobs epoch.
bench cargo-cpu cpu "${crit_args[@]}" '^(train_cpu/|gemm_cpu/(fwd|dW|dA))'
mkdir -p "$work/full"
cp -r "$crit/train" "$crit/train_cpu" "$work/full/"

echo "== python3 bench/numpy_baseline.py ${np_args[*]:-}"
# This machine's environment sets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which slow current
# NumPy; the baseline runs without them so NumPy gets its best kernel (printed below).
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
  python3 bench/numpy_baseline.py "${np_args[@]}" --json "$work/numpy.json"

# Paired rounds: the training workloads, Rust then NumPy, back to back, several times. The
# load on a shared machine moves within the minutes the full run takes, so the headline
# ratios are computed per round (each side measured within seconds of the other) and their
# median reported. One thread: CPU clock on both sides; two threads: wall clock.
pair_args=(--warm-up-time 0.5 --measurement-time 1 --sample-size 10)
for r in $(seq 1 "$rounds"); do
  echo "== paired round $r of $rounds (load average $(cut -d' ' -f1 /proc/loadavg))"
  mkdir -p "$work/pair$r"
  rm -rf "$crit/train" "$crit/train_cpu"
  bench "pair$r-cpu" cpu "${pair_args[@]}" '^train_cpu/'
  bench "pair$r-wall" wall "${pair_args[@]}" '^train/blobs_.*_2threads$'
  cp -r "$crit/train" "$crit/train_cpu" "$work/pair$r/"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
    python3 bench/numpy_baseline.py --vectorised-only --json "$work/pair$r/numpy.json" >/dev/null
done

echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$crit" "$work/numpy.json" "$work/cargo-wall.log" "$work" "$rounds" <<'EOF'
import glob, json, os, re, statistics, sys

crit_dir, numpy_json, cargo_log, work, rounds = sys.argv[1:]


def read_criterion(root):
    """Full criterion id -> (median seconds, throughput elements or None)."""
    found = {}
    for est in glob.glob(os.path.join(root, "**", "new", "estimates.json"), recursive=True):
        d = os.path.dirname(est)
        with open(os.path.join(d, "benchmark.json")) as f:
            meta = json.load(f)
        with open(est) as f:
            median_ns = json.load(f)["median"]["point_estimate"]
        found[meta["full_id"]] = (median_ns * 1e-9,
                                  (meta.get("throughput") or {}).get("Elements"))
    return found


rust = read_criterion(crit_dir)  # the products; the paired rounds replaced the train groups
rust.update(read_criterion(os.path.join(work, "full")))
with open(numpy_json) as f:
    np_out = json.load(f)
res = np_out["results"]


def need(name):
    if name not in rust:
        sys.exit(f"no criterion result for {name} under {crit_dir}; did the benchmark run?")
    return rust[name][0]


def fmt(s):
    return f"{s * 1e3:9.3f} ms" if s >= 1e-3 else f"{s * 1e6:9.1f} us"


def table(clock):
    sfx, key = ("", "s") if clock == "wall" else ("_cpu", "cpu_s")
    rows = []
    for w in ["notebook_4-3_100ep", "notebook_4-4-3_100ep"]:
        r, n = need(f"train{sfx}/{w}"), res[w]
        nb, v1 = n[f"notebook_{key}"], n[f"vectorised_1t_{key}"]
        rows.append((w, r, nb, v1, None,
                     f"x{nb / r:.0f} notebook (>= 200), x{v1 / r:.1f} vectorised (>= 30)",
                     nb / r >= 200 and v1 / r >= 30))
    blobs = [k for k in rust if re.fullmatch(rf"train{sfx}/blobs_64-128-10_\d+ep", k)]
    if len(blobs) != 1:
        sys.exit(f"expected one train{sfx}/blobs_64-128-10_<N>ep result, found {blobs}")
    epochs = int(re.search(r"_(\d+)ep$", blobs[0]).group(1))
    r, n = need(blobs[0]) / epochs, res["blobs_64-128-10_per_epoch"]
    nb, v1 = n[f"notebook_{key}"], n[f"vectorised_1t_{key}"]
    rows.append(("blobs_64-128-10 per epoch", r, nb, v1, None,
                 f"x{nb / r:.0f} notebook, x{v1 / r:.2f} vectorised 1 thread (>= 2)",
                 v1 / r >= 2))
    if clock == "wall":
        # Two threads on each side; NumPy's BLAS threads and the trainer's pool alike.
        r2 = need(f"{blobs[0]}_2threads") / epochs
        v2 = n["vectorised_2t_s"]
        rows.append(("  same, 2 threads each", r2, None, None, v2,
                     f"x{v2 / r2:.2f} vectorised 2 threads; Rust 2 threads / 1: {r2 / r:.2f}",
                     None))

    print()
    print(f"{clock} clock" + (" (this thread's CPU time; NumPy 2 threads not comparable)"
                            if clock == "cpu" else " (elapsed time)"))
    print(f"{'workload':28} {'Rust':>12} {'NumPy notebook':>15} {'NumPy vec 1t':>13} "
          f"{'NumPy vec 2t':>13}  ratios (NumPy / Rust)")
    for w, r, nb, v1, v2, ratios, ok in rows:
        verdict = "" if ok is None else "  MET" if ok else "  MISSED"
        print(f"{w:28} {fmt(r):>12} {fmt(nb) if nb else '-':>15} {fmt(v1) if v1 else '-':>13} "
              f"{fmt(v2) if v2 else '-':>13}  {ratios}{verdict}")


table("wall")
table("cpu")

kernels = sorted({k.split("/")[1] for k in rust if k.startswith("gemm/")
                  and not k.startswith("gemm/small_")})
if kernels:
    print()
    print("matrix products of one blobs epoch, GFLOP/s (criterion medians; wall | cpu clock):")
    print(f"  {'product':14} {'linalg (gemm)':>13} {'faer 0.24':>13} {'matrixmultiply':>15}")
    for k in kernels:
        cells = []
        for impl in ["linalg", "faer", "matrixmultiply"]:
            rates = []
            for group in ["gemm", "gemm_cpu"]:
                t, flops = rust.get(f"{group}/{k}/{impl}", (None, None))
                rates.append(f"{flops / t / 1e9:.1f}" if t and flops else "-")
            cells.append(" | ".join(rates))
        print(f"  {k:14} {cells[0]:>13} {cells[1]:>13} {cells[2]:>15}")

small = sorted({k.split("/")[1] for k in rust if k.startswith("gemm/small_")},
               key=lambda k: [int(d) for d in re.findall(r"\d+", k)])
if small:
    print()
    print("small products, wall clock (linalg runs its plain loop up to 512 multiply-adds):")
    print(f"  {'product':18} {'linalg':>10} {'gemm':>10}")
    for k in small:
        cells = [fmt(rust[f"gemm/{k}/{impl}"][0]) if f"gemm/{k}/{impl}" in rust else "-"
                 for impl in ["linalg", "gemm"]]
        print(f"  {k:18} {cells[0]:>10} {cells[1]:>10}")

print()
for lib in np_out["blas_1_thread"]:
    print(f"NumPy {np_out['numpy_version']} BLAS: {lib.get('internal_api')} {lib.get('version')},"
          f" kernel {lib.get('architecture')}, {lib.get('num_threads')} thread(s) when limited to 1")
# Both sides print the loss they end on; they must agree to rounding.
with open(cargo_log) as f:
    checks = re.findall(r"^check (notebook|blobs) \[([\d, ]+)\] loss after \d+ epochs: (\S+)$",
                        f.read(), re.M)
names = {("notebook", "4, 3"): "notebook_4-3_100ep", ("notebook", "4, 4, 3"): "notebook_4-4-3_100ep",
         ("blobs", "64, 128, 10"): "blobs_64-128-10"}
if len(checks) != 3:
    sys.exit(f"expected 3 check lines in the cargo bench output, found {len(checks)}")
worst = 0.0
for kind, layers, value in checks:
    ref = np_out["checks"][names[(kind, layers)]]
    worst = max(worst, abs(float(value) - ref) / abs(ref))
print(f"same work: final losses of Rust and NumPy agree to a relative {worst:.1e}")
if worst > 1e-9:
    sys.exit("the Rust and NumPy runs disagree: the comparison is not of the same work")

# The headline: per-round ratios of the paired rounds, and their median.
paired = [(read_criterion(os.path.join(work, f"pair{r}")),
           json.load(open(os.path.join(work, f"pair{r}", "numpy.json")))["results"])
          for r in range(1, int(rounds) + 1)]
blobs_id = re.fullmatch(r"train_cpu/(blobs_64-128-10_(\d+)ep)",
                        next(k for k in paired[0][0] if k.startswith("train_cpu/blobs")))
blobs_epochs = int(blobs_id.group(2))
cases = [  # label, criterion id, epochs per iteration, NumPy workload and key, target, clock
    ("notebook_4-3_100ep", "train_cpu/notebook_4-3_100ep", 1,
     "notebook_4-3_100ep", "vectorised_1t_cpu_s", 30, "cpu"),
    ("notebook_4-4-3_100ep", "train_cpu/notebook_4-4-3_100ep", 1,
     "notebook_4-4-3_100ep", "vectorised_1t_cpu_s", 30, "cpu"),
    ("blobs_64-128-10 per epoch", f"train_cpu/{blobs_id.group(1)}", blobs_epochs,
     "blobs_64-128-10_per_epoch", "vectorised_1t_cpu_s", 2, "cpu"),
    ("  same, 2 threads each", f"train/{blobs_id.group(1)}_2threads", blobs_epochs,
     "blobs_64-128-10_per_epoch", "vectorised_2t_s", None, "wall"),
]
print()
print(f"paired rounds: Rust then NumPy, back to back, {rounds} times; 1 thread on the CPU "
      f"clock, 2 threads on the wall clock; medians of the per-round values [min - max ratio]")
print(f"{'workload':28} {'Rust':>12} {'NumPy vec':>12}  ratio NumPy / Rust")
for label, rid, epochs, work_name, key, target, clock in cases:
    rs = [p[0][rid][0] / epochs for p in paired]
    ns = [p[1][work_name][key] for p in paired]
    ratios = sorted(n / r for r, n in zip(rs, ns))
    med = statistics.median(ratios)
    verdict = "" if target is None else (f" (>= {target})  " + ("MET" if med >= target
                                                                  else "MISSED"))
    print(f"{label:28} {fmt(statistics.median(rs)):>12} {fmt(statistics.median(ns)):>12}  "
          f"x{med:.2f} [{ratios[0]:.2f} - {ratios[-1]:.2f}] {clock}{verdict}")
EOF
