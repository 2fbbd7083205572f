#!/usr/bin/env python3
"""Times the work of `benches/core.rs` in NumPy: the notebook's own per-sample code and an
idiomatic vectorised version. `bench/run.sh` runs it next to `cargo bench` and prints ratios.

    python3 bench/numpy_baseline.py [--json out.json] [--quick] [--vectorised-only]

Workloads (the same numbers as the Rust benchmark, which prints `check` lines to compare):
  notebook_4-3_100ep, notebook_4-4-3_100ep: cat-dog-ship, np.random.seed(0); rand weights,
      relu, no bias, sum reduction, lr 1e-4, 100 epochs with the mean loss after each.
  blobs_64-128-10: 10,000 Gaussian blobs (np.random.seed(7), legacy randn), he init
      (np.random.seed(1)), relu, no bias, mean reduction, lr 0.05; time per epoch.

Every figure is the median of `timeit` repeats, one run per repeat, after a warm-up run,
on the wall clock and (keys ending in _cpu_s) on this thread's CPU-time clock.
The vectorised code runs with BLAS limited to 1 thread (threadpoolctl), and for the blobs
also to 2. The notebook code is timed with 1 BLAS thread (its products are tiny).
"""

import argparse
import json
import math
import statistics
import sys
import time
import timeit

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

# The notebook's cat-dog-ship: six 2x2 images, classes cat=0, dog=1, ship=2.
X_RAW = [[[56, 231], [24, 1]], [[120, 30], [24, 0]], [[20, 31], [240, 100]],
         [[56, 201], [22, -10]], [[140, 27], [30, 10]], [[25, 30], [230, 110]]]
Y_RAW = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]

BLOBS_SAMPLES, BLOBS_LAYERS, BLOBS_EPOCHS = 10_000, [64, 128, 10], 5
BLOBS_DATA_SEED, BLOBS_INIT_SEED, BLOBS_LR = 7, 1, 0.05


# ---------------------------------------------------------------------------------------
# The notebook's code (as tests/golden/generate.py has it), with the weights passed in so
# both workloads can use it, and `scale` so the blobs can use the mean reduction.

class Softmax:
    def forward(self, z):
        e = np.exp(z - np.max(z))
        return e / np.sum(e)


class CELoss:
    def forward(self, p, t):
        return -np.sum(t * np.log(p))


class NN_1layer:
    def __init__(self, W, lr, scale=1.0):
        self.W, self.lr, self.scale = W, lr, scale
        self.softmax, self.ce = Softmax(), CELoss()

    def Forward(self, xi):
        return self.softmax.forward(np.matmul(self.W, xi.flatten()))

    def predict(self, xs):
        return np.array([self.Forward(xi) for xi in xs])

    def loss(self, xs, ys):
        return np.mean([self.ce.forward(self.Forward(xi), yi) for xi, yi in zip(xs, ys)])

    def Backward(self, xs, ys):
        P = self.predict(xs)
        X = xs.reshape(len(xs), -1)
        return np.matmul((P - ys).T, X)

    def step(self, xs, ys):
        dW = self.Backward(xs, ys)
        self.W -= self.lr * self.scale * dW


class NN_2layer:
    def __init__(self, W1, W2, lr, scale=1.0):
        self.W1, self.W2, self.lr, self.scale = W1, W2, lr, scale
        self.softmax, self.ce = Softmax(), CELoss()

    def Forward(self, xi):
        z1 = np.matmul(self.W1, xi.flatten())
        h = np.maximum(z1, 0)
        return self.softmax.forward(np.matmul(self.W2, h))

    def predict(self, xs):
        return np.array([self.Forward(xi) for xi in xs])

    def loss(self, xs, ys):
        return np.mean([self.ce.forward(self.Forward(xi), yi) for xi, yi in zip(xs, ys)])

    def Backward(self, xs, ys):
        X = xs.reshape(len(xs), -1)
        Z1 = np.matmul(X, self.W1.T)
        H = np.maximum(Z1, 0)
        P = self.predict(xs)
        dW2 = np.matmul((P - ys).T, H)
        dH = np.matmul(P - ys, self.W2)
        dZ1 = dH * (Z1 > 0)
        dW1 = np.matmul(dZ1.T, X)
        return dW1, dW2

    def step(self, xs, ys):
        dW1, dW2 = self.Backward(xs, ys)
        self.W1 -= self.lr * self.scale * dW1
        self.W2 -= self.lr * self.scale * dW2


def notebook_train(ws, xs, ys, epochs, lr, scale=1.0):
    """The notebook's loop: step, then the mean loss (which it prints) after each update."""
    net = NN_1layer(ws[0], lr, scale) if len(ws) == 1 else NN_2layer(ws[0], ws[1], lr, scale)
    history = []
    for _ in range(epochs):
        net.step(xs, ys)
        history.append(net.loss(xs, ys))
    return history


# ---------------------------------------------------------------------------------------
# Vectorised: whole-batch matrix products, the algebra of src/nn/train.rs. A run of N epochs
# is N + 1 forward passes (the loss after update k comes from the next forward), as in Rust.

def forward(ws, X, Y):
    acts = [X]
    for W in ws[:-1]:
        acts.append(np.maximum(acts[-1] @ W.T, 0.0))
    Z = acts[-1] @ ws[-1].T
    Z -= Z.max(axis=1, keepdims=True)
    logP = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
    return acts, np.exp(logP), -np.sum(Y * logP) / len(X)


def vectorised_train(ws, X, Y, epochs, lr, scale=1.0):
    acts, P, _ = forward(ws, X, Y)
    history = []
    for _ in range(epochs):
        D = (P - Y) * scale
        for k in reversed(range(len(ws))):
            G = D.T @ acts[k]
            if k > 0:
                D = (D @ ws[k]) * (acts[k] > 0)
            ws[k] -= lr * G
        acts, P, loss = forward(ws, X, Y)
        history.append(loss)
    return history


# ---------------------------------------------------------------------------------------

def numpy_rand_weights(seed, layers):
    np.random.seed(seed)
    return [np.random.rand(o, i) for i, o in zip(layers[:-1], layers[1:])]


def he_weights(seed, layers):
    np.random.seed(seed)
    return [np.random.uniform(-math.sqrt(6.0 / i), math.sqrt(6.0 / i), (o, i))
            for i, o in zip(layers[:-1], layers[1:])]


def blobs():
    np.random.seed(BLOBS_DATA_SEED)
    n_in, n_out = BLOBS_LAYERS[0], BLOBS_LAYERS[-1]
    centers = 3.0 * np.random.randn(n_out, n_in)
    classes = np.arange(BLOBS_SAMPLES) % n_out
    X = centers[classes] + np.random.randn(BLOBS_SAMPLES, n_in)
    return X, np.eye(n_out)[classes]


def median_seconds(make, run, repeat, clock=time.perf_counter):
    """Median over `repeat` timeit runs of `run(make())`; `make` is not timed."""
    state = {}
    timer = timeit.Timer(stmt=lambda: run(state["s"]),
                         setup=lambda: state.__setitem__("s", make()), timer=clock)
    timer.repeat(repeat=1, number=1)  # warm-up: caches, BLAS buffers, lazy imports
    return statistics.median(timer.repeat(repeat=repeat, number=1))


def both_clocks(make, run, repeat):
    """Wall-clock and this thread's CPU-time medians (the latter leaves out the time other
    processes on a shared machine hold the core; with 1 BLAS thread all work is this one's)."""
    return (median_seconds(make, run, repeat),
            median_seconds(make, run, repeat, clock=time.thread_time))


def blas_description():
    return [{k: v for k, v in lib.items() if k != "filepath"}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke test)")
    ap.add_argument("--vectorised-only", action="store_true",
                    help="time only the vectorised code (run.sh's paired rounds)")
    args = ap.parse_args()
    full = not args.vectorised_only
    r = 3 if args.quick else 1

    xs = np.array(X_RAW, dtype=np.float64)
    ys = np.array(Y_RAW, dtype=np.float64)
    X6 = xs.reshape(6, -1)
    Xb, Yb = blobs()
    Xb_nb = Xb.reshape(BLOBS_SAMPLES, -1)
    out = {"numpy_version": np.__version__, "python": sys.version.split()[0],
           "blas": blas_description(), "results": {}, "checks": {}}
    res = out["results"]

    with threadpool_limits(limits=1, user_api="blas"):
        out["blas_1_thread"] = blas_description()
        for name, layers in [("notebook_4-3_100ep", [4, 3]), ("notebook_4-4-3_100ep", [4, 4, 3])]:
            w0 = numpy_rand_weights(0, layers)
            fresh = lambda w0=w0: [w.copy() for w in w0]
            h_vec = vectorised_train(fresh(), X6, ys, 100, 1e-4)
            out["checks"][name] = h_vec[-1]
            vec = both_clocks(fresh, lambda w: vectorised_train(w, X6, ys, 100, 1e-4),
                              max(5, 51 // r))
            res[name] = {"vectorised_1t_s": vec[0], "vectorised_1t_cpu_s": vec[1]}
            if full:
                # Both codes must do the same arithmetic up to rounding order.
                h_nb = notebook_train(fresh(), xs, ys, 100, 1e-4)
                assert np.allclose(h_nb, h_vec, rtol=1e-8, atol=0), name
                nb = both_clocks(fresh, lambda w: notebook_train(w, xs, ys, 100, 1e-4),
                                 max(5, 15 // r))
                res[name].update({"notebook_s": nb[0], "notebook_cpu_s": nb[1]})

        w0 = he_weights(BLOBS_INIT_SEED, BLOBS_LAYERS)
        fresh = lambda: [w.copy() for w in w0]
        scale = 1.0 / BLOBS_SAMPLES
        h_vec = vectorised_train(fresh(), Xb, Yb, BLOBS_EPOCHS, BLOBS_LR, scale)
        out["checks"]["blobs_64-128-10"] = h_vec[-1]
        vec = both_clocks(
            fresh, lambda w: vectorised_train(w, Xb, Yb, BLOBS_EPOCHS, BLOBS_LR, scale),
            max(3, 11 // r))
        res["blobs_64-128-10_per_epoch"] = {
            "vectorised_1t_s": vec[0] / BLOBS_EPOCHS,
            "vectorised_1t_cpu_s": vec[1] / BLOBS_EPOCHS,
        }
        if full:
            h_nb = notebook_train(fresh(), Xb_nb, Yb, 1, BLOBS_LR, scale)
            assert np.allclose(h_nb, h_vec[:1], rtol=1e-8, atol=0), (h_nb, h_vec[:1])
            # The notebook's per-sample loop over 10,000 samples: one epoch per run.
            nb = both_clocks(fresh, lambda w: notebook_train(w, Xb_nb, Yb, 1, BLOBS_LR, scale),
                             max(3, 5 // r))
            res["blobs_64-128-10_per_epoch"].update(
                {"notebook_s": nb[0], "notebook_cpu_s": nb[1]})
    with threadpool_limits(limits=2, user_api="blas"):
        out["blas_2_threads"] = blas_description()
        res["blobs_64-128-10_per_epoch"]["vectorised_2t_s"] = median_seconds(
            fresh, lambda w: vectorised_train(w, Xb, Yb, BLOBS_EPOCHS, BLOBS_LR, scale),
            max(3, 11 // r)) / BLOBS_EPOCHS

    print(f"numpy {out['numpy_version']}, python {out['python']}")
    for lib in out["blas_1_thread"]:
        print(f"BLAS: {lib.get('internal_api')} {lib.get('version')}, kernel "
              f"{lib.get('architecture')}, threading {lib.get('threading_layer')}")
    for name, t in res.items():
        print(f"{name:26} " + "  ".join(f"{k[:-2]} {v * 1e3:.4g} ms" for k, v in t.items()))
    for name, v in out["checks"].items():
        print(f"check {name} final loss {v:.17e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
