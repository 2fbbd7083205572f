#!/usr/bin/env python3
"""Latency of /healthz and a one-sample predict while every worker trains a big net.

Starts the release binary (`--database memory`, so the figures are the scheduler's and the
runtime's, not the disk's), keeps each of its workers busy with back-to-back trains of a
[64, 128, 10] net on 4,000 samples, and meanwhile sends a few thousand requests one after
another on one keep-alive connection, alternating `GET /healthz` and a one-sample
`POST /sessions/{id}/predict` (on a session being trained), timing each from the client.

Policies (`BACKPROP_COMPUTE_PRIORITY`, see src/priority.rs) are measured in interleaved
rounds, so every policy sees the same machine: by default the built-in one (training
threads at nice 19) against `normal` (no lowering, as before issue 12). Rounds with no
trains at all give the floor, and show that lowering costs an idle server's predicts
nothing. The training throughput meanwhile (epochs/s, from the trains of 5 epochs that end
during the requests) shows what the lowering costs the trains while the runtime is kept
busy by a client that never pauses. Standard library only; run it through bench/latency.sh.
"""

import argparse
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time

BIG = [64, 128, 10]
SAMPLES = 4000


def start(binary, policy, workers):
    env = dict(os.environ, NO_COLOR="1", RUST_LOG="warn,backprop_server=info")
    if policy != "default":
        env["BACKPROP_COMPUTE_PRIORITY"] = policy
    proc = subprocess.Popen(
        [binary, "--addr=127.0.0.1:0", "--database=memory", f"--workers={workers}",
         "--train-time-limit-secs=20"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    for line in proc.stdout:
        m = re.search(r"listening addr=([0-9.]+):(\d+)", line)
        if m:
            # Drain the rest of the log so the server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, m.group(1), int(m.group(2))
        if time.time() > deadline:
            break
    proc.kill()
    sys.exit("the server did not print its address")


class Client:
    def __init__(self, host, port, timeout=120):
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"content-type": "application/json"}
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        out = r.read()
        return r.status, out


def big_session(c, data):
    status, body = c.call("POST", "/sessions", {
        "layers": BIG, "init": {"method": "xavier", "seed": 1},
        "grad_reduction": "mean", "learning_rate": 0.01})
    assert status == 201, body
    sid = json.loads(body)["id"]
    status, body = c.call("PUT", f"/sessions/{sid}/dataset", data)
    assert status == 200, body[:300]
    return sid


def trainer(host, port, sid, stop, done):
    """Trains `sid` in runs of 5 epochs until `stop`; notes (end time, epochs) of each."""
    c = Client(host, port)
    while not stop.is_set():
        try:
            status, body = c.call("POST", f"/sessions/{sid}/train",
                                  {"epochs": 5, "return_loss": False})
        except OSError:
            return  # the server was stopped
        if status != 200:
            print(f"train: {status} {body[:200]}", file=sys.stderr)
            return
        done.append((time.time(), json.loads(body)["epochs_run"]))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(host, port, sid, x, requests, rate):
    c = Client(host, port, timeout=30)
    health, predict = [], []
    start = time.perf_counter()
    for i in range(requests):
        if rate:
            # Paced: request i goes at i / rate seconds (or at once if late).
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        t = time.perf_counter()
        if i % 2 == 0:
            status, _ = c.call("GET", "/healthz")
            health.append(time.perf_counter() - t)
        else:
            status, _ = c.call("POST", f"/sessions/{sid}/predict", {"x": [x]})
            predict.append(time.perf_counter() - t)
        assert status == 200, status
    return health, predict


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def one_round(binary, policy, workers, data, requests, busy, rate):
    proc, host, port = start(binary, policy, workers)
    stop = threading.Event()
    threads, epochs = [], []
    try:
        c = Client(host, port)
        sids = [big_session(c, data) for _ in range(max(workers, 1))]
        if busy:
            for sid in sids:
                t = threading.Thread(target=trainer, args=(host, port, sid, stop, epochs))
                t.start()
                threads.append(t)
            # Every worker holds a train before the clock starts.
            deadline = time.time() + 20
            while time.time() < deadline:
                _, m = c.call("GET", "/metrics")
                running = re.search(rb"^backprop_trainings_running (\S+)", m, re.M)
                if running and float(running.group(1)) >= workers:
                    break
                time.sleep(0.05)
        x = data["x"][0]
        t0 = time.time()
        health, predict = measure(host, port, sids[0], x, requests, rate)
        t1 = time.time()
        # Training throughput meanwhile: epochs of the trains that ended in the window.
        trained = sum(e for t, e in list(epochs) if t0 < t <= t1)
        return {
            "policy": policy if busy else f"{policy}, no trains",
            "health": health, "predict": predict, "load": load(),
            "epochs_per_s": trained / (t1 - t0),
        }
    finally:
        stop.set()
        proc.kill()
        proc.wait()
        for t in threads:
            t.join(timeout=5)


def ms(v):
    return f"{v * 1e3:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=4000,
                    help="requests per round, half /healthz, half predict")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--rate", type=float, default=0,
                    help="requests per second (0: back to back, the runtime never rests)")
    ap.add_argument("--policies", default="default,normal",
                    help="BACKPROP_COMPUTE_PRIORITY values; 'default' leaves it unset")
    args = ap.parse_args()
    rng = random.Random(7)
    data = {"x": [[rng.random() for _ in range(BIG[0])] for _ in range(SAMPLES)],
            "y": [rng.randrange(BIG[-1]) for _ in range(SAMPLES)]}
    policies = args.policies.split(",")
    runs = []
    for r in range(args.rounds):
        for p, busy in [(p, busy) for busy in (False, True) for p in policies]:
            runs.append(one_round(args.binary, p, args.workers, data, args.requests, busy,
                                  args.rate))
            last = runs[-1]
            print(f"round {r + 1} {last['policy']:>20}: healthz p50 {ms(statistics.median(last['health']))}"
                  f" p99 {ms(pct(last['health'], 0.99))} ms; predict p50"
                  f" {ms(statistics.median(last['predict']))} p99"
                  f" {ms(pct(last['predict'], 0.99))} ms; load {last['load']}", flush=True)
    print()
    pace = f"{args.rate:g} requests/s" if args.rate else "back to back"
    print(f"{args.workers} workers each training {BIG} on {SAMPLES} samples; "
          f"{args.rounds} rounds of {args.requests} requests ({pace}) per policy")
    print("| policy | healthz p50 | healthz p99 | predict p50 | predict p99 | "
          "epochs/s | load |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    names = [f"{p}, no trains" for p in policies] + policies
    for name in names:
        rs = [r for r in runs if r["policy"] == name]
        if not rs:
            continue
        # Per round figures, then the median over rounds.
        row = {
            "h50": statistics.median(statistics.median(r["health"]) for r in rs),
            "h99": statistics.median(pct(r["health"], 0.99) for r in rs),
            "p50": statistics.median(statistics.median(r["predict"]) for r in rs),
            "p99": statistics.median(pct(r["predict"], 0.99) for r in rs),
            "eps": statistics.median(r["epochs_per_s"] for r in rs),
            "load": "/".join(r["load"] for r in rs),
        }
        summary[name] = row
        print(f"| {name} | {ms(row['h50'])} ms | {ms(row['h99'])} ms | {ms(row['p50'])} ms | "
              f"{ms(row['p99'])} ms | {row['eps']:.0f} | {row['load']} |")
    if len(policies) >= 2 and all(p in summary for p in policies[:2]):
        a, b = summary[policies[0]], summary[policies[1]]
        print()
        print(f"p99 ratio {policies[0]} / {policies[1]}: healthz {a['h99'] / b['h99']:.2f}, "
              f"predict {a['p99'] / b['p99']:.2f}; training epochs/s "
              f"{a['eps'] / max(b['eps'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
