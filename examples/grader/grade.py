#!/usr/bin/env python3
"""Grade a student's backprop notebook against backprop-server, Gradescope style.

    python grade.py SUBMISSION.ipynb|SUBMISSION.py [--server URL] [--token TOKEN] [--seed 0]
                    [--epochs 100] [--time-limit 30] [--output results.json]

The server comes from --server or BACKPROP_URL (default http://127.0.0.1:8080), the bearer
token from --token or BACKPROP_TOKEN (none by default).

The submission is the course notebook as students fill it in, handed in as the .ipynb itself
(its code cells run in order, as Jupyter's "Run all") or as a .py file. Its interface is the
notebook's (README.md beside this file has it in full):

    np.random.seed(S); net = NN_1layer()   weights net.W_l1, shape (3, 4) = (out, in);
                                           net.learning_rate (the notebook's 0.0001)
    net.Forward(X)                         X (M, 2, 2) -> one probability vector per sample
    net.getLoss(X, Y)                      mean cross-entropy over the M samples, a float
    net.Backward(Y_hat, X, Y)              dW = (Y_hat - Y)^T X, the SUM over samples, (3, 4)
    net.training(X, Y, n_epoch=100)        n_epoch updates W_l1 -= learning_rate * dW, printing
                                           'iteration: k, loss: v' after each
    NN_2layer (optional, extra credit)     the same with W_l1 (4, 4) then W_l2 (3, 4) from one
                                           stream, ReLU between, Backward returning (dW1, dW2)

Top-level demo code (the notebook's `my_NeuralNet.training(X, Y)`) runs and may print; a cell
that raises is reported and grading goes on. For each class the grader asks the service for
the reference at the same seed and data, runs the submission in a subprocess with a time
limit (harness.py; a crash, a hang, garbage output or a missing method fails its test, never
the grader), loads reference weights into the student's network before each method so one
mistake does not fail every test, compares with POST /sessions/{id}/check, deletes its
sessions, and writes results.json:
    {"score", "execution_time", "output", "tests": [{"name", "score", "max_score", "status",
     "output"}, ...]}
The required part (NN_1layer) is worth 10 points; the two-layer exercise's tests carry
max_score 0 and add their points as extra credit (Gradescope's convention), or appear as one
"not attempted" entry, which costs nothing.
Exit status: 0 when graded (whatever the score), 2 for a usage error, 3 when the service failed
(results.json then says so and holds no tests).
"""

import argparse
import functools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.path.join(HERE, "harness.py")
DATASET = "cat-dog-ship"
LEARNING_RATE = 0.0001

# Tolerances for check. A correct NumPy solution, whether it uses matmuls or loops over the
# samples, agrees with the server to about 1e-12 relative (the last bits depend on summation
# order), so 1e-7 catches any real mistake and never fails a correct one. Two kinds of element
# are near zero, where relative error is all rounding: gradient entries that cancel across
# samples (5e-14 off on a 4e-4 entry, seed 0) and probabilities of 1e-13. Absolute floors far
# below any real mistake (gradients here are in the tens to hundreds) keep those from deciding.
RTOL = 1e-7
GRADIENT_ATOL = 1e-9
PROBABILITY_ATOL = 1e-12

# Output limits for the student's process; beyond them it is stopped and its test says why.
OUTPUT_LIMIT_BYTES = 16 << 20
MEMORY_LIMIT_BYTES = 4 << 30


class Net:
    """One exercise: the class the student writes and the session that is its reference."""

    def __init__(self, key, layers, required):
        self.key = key
        self.cls = key
        self.layers = layers
        self.required = required
        # Set from what the student's file holds (the harness finds them).
        self.attrs = ["W_l1"] if len(layers) == 2 else ["W_l1", "W_l2"]

    def grad_name(self, k):
        return "dW" if len(self.attrs) == 1 else f"dW{k + 1}"


NETS = [
    Net("NN_1layer", [4, 3], required=True),
    Net("NN_2layer", [4, 4, 3], required=False),
]

# Points per test, the same for both classes: 10 each. NN_1layer's are the required part;
# NN_2layer's are extra credit.
TESTS = [
    ("__init__", 1),
    ("Forward", 2),
    ("getLoss", 1),
    ("Backward", 3),
    ("training", 3),
]
# x.flatten("F") of a 2x2 sample: the row-major flatten's entries in this order.
COLUMN_MAJOR = [0, 2, 1, 3]


class ServiceError(Exception):
    """The grading service failed or was unreachable: not the student's fault."""


class Service:
    """A thin client for backprop-server that remembers the sessions it created."""

    def __init__(self, url, token=None, timeout=120):
        self.url = url.rstrip("/")
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.created = []

    def call(self, method, path, body=None, expect=200):
        try:
            r = self.http.request(method, self.url + path, json=body, timeout=self.timeout)
        except requests.RequestException as e:
            raise ServiceError(f"{method} {path}: no answer from {self.url} ({e})") from None
        if r.status_code != expect:
            raise ServiceError(
                f"{method} {path} answered {r.status_code}, expected {expect}: {r.text[:500]}"
            )
        return r.json() if r.content else None

    def create(self, layers, init, learning_rate=None):
        body = {
            "layers": layers,
            "activation": "relu",
            "bias": False,
            "grad_reduction": "sum",
            "learning_rate": learning_rate or LEARNING_RATE,
            "init": init,
        }
        sid = self.call("POST", "/sessions", body, expect=201)["id"]
        self.created.append(sid)
        self.call("PUT", f"/sessions/{sid}/dataset", {"builtin": DATASET})
        return sid

    def fork(self, sid):
        new = self.call("POST", f"/sessions/{sid}/fork", expect=201)["id"]
        self.created.append(new)
        return new

    def train(self, sid, epochs):
        r = self.call("POST", f"/sessions/{sid}/train", {"epochs": epochs})
        if r["status"] != "completed" or r["epochs_run"] != epochs:
            raise ServiceError(
                f"POST /sessions/{sid}/train {{\"epochs\": {epochs}}} ran {r['epochs_run']} "
                f"epochs with status {r['status']!r}; the reference needs all of them"
            )
        return r["loss"]

    def check(self, sid, body):
        return self.call("POST", f"/sessions/{sid}/check", body)

    def close(self):
        """Deletes every session this client created; returns the ids it could not delete."""
        left = []
        for sid in self.created:
            try:
                r = self.http.delete(f"{self.url}/sessions/{sid}", timeout=self.timeout)
                if r.status_code not in (204, 404):
                    left.append(sid)
            except requests.RequestException:
                left.append(sid)
        self.created = []
        return left


def one_hot(indices, n):
    y = np.zeros((len(indices), n))
    y[np.arange(len(indices)), indices] = 1.0
    return y


def reference(svc, net, seed, epochs, x):
    """The reference for one exercise, as sessions to check against and arrays for hints.

    Four weights matter: the seed's initial ones (`initial`), those after one update (for
    getLoss: the history's first entry is the loss there), after all `epochs` updates
    (`trained`), and Xavier weights of mixed sign (`mixed`). With np.random.rand's weights in
    [0, 1) and the notebook's pixels every hidden ReLU input is positive: only the mixed
    weights show whether Backward applies the ReLU derivative.
    """
    main = svc.create(net.layers, {"method": "numpy_rand", "seed": seed})
    ref = {"sessions": {}, "weights": {}, "probabilities": {}}
    ref["weights"]["initial"] = svc.call("GET", f"/sessions/{main}/weights")["weights"]
    ref["gradients_initial"] = svc.call("POST", f"/sessions/{main}/gradients")["weights"]
    ref["probabilities"]["initial"] = svc.call("POST", f"/sessions/{main}/predict", {"x": x})[
        "probabilities"
    ]
    ref["sessions"]["initial"] = svc.fork(main)
    history = svc.train(main, 1)
    ref["weights"]["after_one_update"] = svc.call("GET", f"/sessions/{main}/weights")["weights"]
    ref["sessions"]["after_one_update"] = svc.fork(main)
    if epochs > 1:
        history += svc.train(main, epochs - 1)
    ref["history"] = history
    ref["weights"]["trained"] = svc.call("GET", f"/sessions/{main}/weights")["weights"]
    ref["sessions"]["trained"] = main
    ref["predict_trained"] = svc.call("POST", f"/sessions/{main}/predict", {"x": x})

    mixed = svc.create(net.layers, {"method": "xavier", "seed": seed})
    ref["sessions"]["mixed"] = mixed
    ref["weights"]["mixed"] = svc.call("GET", f"/sessions/{mixed}/weights")["weights"]
    ref["gradients_mixed"] = svc.call("POST", f"/sessions/{mixed}/gradients")["weights"]
    ref["predict_mixed"] = svc.call("POST", f"/sessions/{mixed}/predict", {"x": x})
    ref["probabilities"]["mixed"] = ref["predict_mixed"]["probabilities"]
    ref["trace_mixed"] = svc.call("POST", f"/sessions/{mixed}/trace")
    return ref


def history_at(svc, net, seed, epochs, learning_rate):
    """The reference history at another learning rate (for a hint about the rate)."""
    sid = svc.create(net.layers, {"method": "numpy_rand", "seed": seed}, learning_rate)
    r = svc.call("POST", f"/sessions/{sid}/train", {"epochs": epochs})
    return r["loss"]


# ---------------------------------------------------------------------------------------------
# Running the student's file


def limit_child(cpu_seconds):
    """In the child before exec: caps on memory, output and CPU time (the CPU cap backs up
    the wall-clock limit should the grader itself be stopped)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT_BYTES, OUTPUT_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))


def run_student(submission, job, time_limit):
    """Runs harness.py on the submission; returns its step records and how the run ended."""
    work = tempfile.mkdtemp(prefix="grade-")
    try:
        student = os.path.join(work, os.path.basename(submission))
        shutil.copyfile(submission, student)
        job = dict(job, submission=student)
        job_path = os.path.join(work, "job.json")
        out_path = os.path.join(work, "out.jsonl")
        with open(job_path, "w", encoding="utf-8") as f:
            json.dump(job, f)
        # The student's code sees no token and no proxy settings: only what Python needs.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": work,
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        cpu = int(time_limit) + 2
        with open(os.path.join(work, "stdout"), "wb") as so, open(
            os.path.join(work, "stderr"), "wb"
        ) as se:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, HARNESS, job_path, out_path],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=so,
                stderr=se,
                # Its own process group, so a timeout kills whatever it started too.
                start_new_session=True,
                preexec_fn=functools.partial(limit_child, cpu),
            )
            timed_out = False
            try:
                proc.wait(timeout=time_limit)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            seconds = time.monotonic() - t0
        records = read_records(out_path)
        with open(os.path.join(work, "stderr"), "rb") as f:
            stderr_tail = f.read()[-2000:].decode("utf-8", "replace")
        return {
            "records": records,
            "timed_out": timed_out,
            "returncode": proc.returncode,
            "seconds": seconds,
            "stderr": stderr_tail,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_records(path):
    records = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    break  # a line cut short when the process was stopped
    except FileNotFoundError:
        pass
    return records


def why_stopped(run, time_limit):
    """One sentence on how the student's process ended early, or None if it finished."""
    if run["timed_out"]:
        return (
            f"your program did not finish within the time limit ({time_limit:g} s for the whole "
            "file) and was stopped — an infinite loop? Check that your loop's counter advances "
            "and that it stops after `epochs` updates"
        )
    rc = run["returncode"]
    if any(r.get("event") == "done" for r in run["records"]):
        return None
    if rc is not None and rc < 0:
        sig = -rc
        if sig == signal.SIGXFSZ:
            return f"your program wrote more than {OUTPUT_LIMIT_BYTES >> 20} MB and was stopped"
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return "your program used too much CPU time or memory and was stopped"
        return f"your program was killed by signal {signal.Signals(sig).name}"
    tail = run["stderr"].strip().splitlines()[-3:]
    extra = (": " + " / ".join(tail)) if tail else ""
    return f"your program exited early (exit status {rc}){extra}"


# ---------------------------------------------------------------------------------------------
# Turning check's answers into words a student can act on


def fmt(v):
    return f"{v:.10g}"


def at(arr, index):
    for i in index:
        arr = arr[i]
    return arr


def first_non_finite(value):
    """The index of the first NaN or infinity, or None (also for a ragged value: check then
    reports its shape)."""
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    bad = np.argwhere(~np.isfinite(a))
    return None if bad.size == 0 else [int(i) for i in bad[0]]


def not_close_count(detail):
    m = re.search(r"(\d+) of (\d+) elements are not close", detail or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def describe_item(item, where, yours, ref):
    """'dW[1][2]: yours 3.1, reference 18.6 (relative error 0.71; 12 of 12 numbers differ)'.

    `where(index)` names the element at check's worst_index; `yours`/`ref` are indexed by it.
    """
    if item["rel_error"] is None:
        return item["detail"]  # a shape mismatch: check's detail names both shapes
    idx = item["worst_index"]
    counts = not_close_count(item["detail"])
    differ = f"; {counts[0]} of {counts[1]} numbers differ" if counts else ""
    return (
        f"{where(idx)}: yours {fmt(at(yours, idx))}, reference {fmt(at(ref, idx))} "
        f"(relative error {item['rel_error']:.3g}{differ})"
    )


def ratio_hint(yours, ref, m, lr):
    """A whole-array mistake that a constant factor, a sign, a transpose or the flatten order
    explains, or None."""
    y = [np.asarray(a, dtype=float) for a in yours]
    r = [np.asarray(a, dtype=float) for a in ref]
    if len(y) != len(r) or any(a.shape != b.shape for a, b in zip(y, r)):
        if all(a.ndim == 2 and a.T.shape == b.shape for a, b in zip(y, r)) and all(
            np.allclose(a.T, b, rtol=1e-6, atol=1e-12) for a, b in zip(y, r)
        ):
            return (
                "yours is the transpose of the reference: weights and their gradients are "
                "(out, in)."
            )
        return None

    def every(f):
        return all(np.allclose(f(a), b, rtol=1e-6, atol=1e-12) for a, b in zip(y, r))

    if every(lambda a: a * m):
        return (
            f"yours is the reference divided by {m}, the number of samples: it looks like your "
            "gradient is averaged; the notebook's Backward returns the sum over the samples, "
            "(Y_hat - Y)^T X, without dividing by their number."
        )
    if every(lambda a: a / m):
        return (
            f"yours is the reference times {m}, the number of samples: are you summing over "
            "the samples twice?"
        )
    if every(lambda a: -a):
        return "yours has the opposite sign: the gradient is (Y_hat - Y)^T X, not (Y - Y_hat)^T X."
    if every(lambda a: a / lr):
        return (
            f"yours is the reference times the learning rate ({lr:g}): Backward returns the "
            "gradient itself; training multiplies it by the learning rate, once."
        )
    if (
        len(y) == 1
        and y[0].shape[-1] == 4
        and np.allclose(y[0][:, COLUMN_MAJOR], r[0], rtol=1e-6, atol=1e-12)
    ):
        return (
            "yours is the reference with its 2nd and 3rd columns swapped: your samples are "
            "flattened column by column (x.flatten('F'), x.T, or reshape with order='F'); the "
            "notebook's x.flatten() and X.reshape(-1, 4) go row by row: 56, 231, 24, 1."
        )
    return None


def softmax_rows(Z):
    e = np.exp(Z - np.max(Z, axis=1, keepdims=True))
    return e / np.sum(e, axis=1, keepdims=True)


def rounded_agreement(losses, units, ref):
    """True when every printed loss equals the reference to the digits it shows (losses
    printed with fewer digits, like f'{loss:.4f}', are right when they round the same)."""
    if units is None or not any(u is not None for u in units) or len(losses) != len(ref):
        return False
    for v, u, b in zip(losses, units, ref):
        tol = 0.5 * u * (1 + 1e-9) if u is not None else RTOL * abs(b)
        if not abs(v - b) <= tol + 1e-300:
            return False
    return True


def rounding_words(units):
    finest = min(u for u in units if u is not None)
    return f"{finest:g}" if finest < 1e-3 or finest >= 1 else f"{round(-np.log10(finest))} decimals"


class Grader:
    """The five tests of one exercise, from the student's step records and the reference."""

    def __init__(self, svc, net, ref, records, stopped, data, seed, epochs):
        self.svc, self.net, self.ref = svc, net, ref
        self.records, self.stopped = records, stopped
        self.X, self.Y = data
        self.m = len(self.X)
        self.seed, self.epochs = seed, epochs
        found = self.end_record(f"{net.key}.found")
        self.found = found.get("value") if found and found.get("ok") else None
        if self.found:
            net.attrs = self.found["attrs"]

    def end_record(self, name):
        ends = [r for r in self.records if r.get("step") == name and r.get("event") == "end"]
        return ends[-1] if ends else None

    def record(self, step):
        """The student's answer for one step, or the sentence that says why there is none."""
        name = f"{self.net.key}.{step}"
        starts = [r for r in self.records if r.get("step") == name and r.get("event") == "start"]
        r = self.end_record(name)
        if r is not None:
            if r["ok"]:
                return r["value"], None
            where = r.get("where") or []
            text = r["error"]
            if r.get("exception"):
                text = f"{step} raised {text}"
                if where:
                    text += " (" + "; ".join(where) + ")"
            return None, text
        load = self.end_record("load")
        if load is not None and not load["ok"]:
            where = "; ".join(load.get("where") or [])
            return None, f"your file failed to load: {load['error']}" + (
                f" ({where})" if where else ""
            )
        if starts:
            return None, self.stopped or f"{step} did not finish"
        running = next(
            (r["step"] for r in reversed(self.records) if r.get("event") == "start"), None
        )
        if self.stopped and running:
            return None, f"not run: {self.stopped} (it was running {running})"
        return None, self.stopped or "not run"

    def attempted(self):
        """False when the submission defines no class for this exercise (and loaded)."""
        found = self.end_record(f"{self.net.key}.found")
        return not (found is not None and not found.get("ok"))

    def name_weight(self, k, i, j):
        return f"self.{self.net.attrs[k]}[{i}][{j}]"

    def name_grad(self, idx):
        # check's path into {"weights": [dW_1, ...]} is ["weights", k, i, j].
        _, k, i, j = idx
        return f"{self.net.grad_name(k)}[{i}][{j}]"

    def point_words(self, point):
        return {
            "initial": f"at the initial weights (np.random.seed({self.seed}))",
            "after_one_update": "at the weights after one update",
            "trained": f"at the reference's weights after {self.epochs} updates",
            "mixed": "at weights of mixed sign (Xavier init"
            + (", so some ReLU inputs are negative)" if len(self.net.attrs) > 1 else ")"),
        }[point]

    # Each test returns (passed, lines of output).

    def test_init(self):
        value, err = self.record("__init__")
        if err:
            return False, [err]
        weights = value["weights"]
        ref = self.ref["weights"]["initial"]
        res = self.svc.check(self.ref["sessions"]["initial"], {"weights": weights, "rtol": RTOL})
        item = res["items"]["weights"]
        lr = value.get("learning_rate")
        lr_note = []
        if lr is not None and lr != LEARNING_RATE:
            lr_note = [
                f"Note: self.learning_rate is {lr:g}; the notebook's is {LEARNING_RATE:g}, and the "
                "training test expects the notebook's."
            ]
        names = ", ".join(f"self.{a}" for a in self.net.attrs)
        if item["pass"]:
            return (
                True,
                [
                    f"Your {names} equal np.random.seed({self.seed}) then np.random.rand(out, in)"
                    + (" per layer, in order." if len(ref) > 1 else ".")
                ]
                + lr_note,
            )
        lines = [
            f"Your weights after np.random.seed({self.seed}); {self.net.cls}() differ from "
            "np.random.rand(out, in):",
            describe_item(item, lambda i: self.name_weight(*i), weights, ref),
        ]
        shapes = [np.shape(w) for w in weights] if isinstance(weights, list) else []
        want = [tuple(np.shape(w)) for w in ref]
        if len(shapes) == len(want) and all(s == w[::-1] != w for s, w in zip(shapes, want)):
            lines.append(
                "Hint: your weights are transposed. The course stores each layer's weights as "
                f"(out, in), here {', '.join(str(w) for w in want)}: "
                + "; ".join(f"self.{a} = np.random.rand{w}" for a, w in zip(self.net.attrs, want))
                + ", and a layer computes np.matmul(W, x.flatten())."
            )
        elif len(weights) == 2 and all(np.shape(a) == np.shape(b) for a, b in zip(weights, ref)):
            lines.append(
                "Hint: draw W_l1 and then W_l2 from the one stream np.random.seed(S) started, "
                "in that order, without seeding again in between."
            )
        else:
            lines.append(
                "Hint: __init__ draws the weights with np.random.rand(out, in) and does not seed "
                "the generator itself: the grader calls np.random.seed(S) right before "
                f"{self.net.cls}()."
            )
        return False, lines + lr_note

    def test_forward(self):
        value, err = self.record("Forward")
        if err:
            return False, [err] + self.error_hint(err)
        lines, passed = [], True
        for point in ("trained", "mixed"):
            rows = value[point]
            ref = self.ref[f"predict_{point}"]
            bad = first_non_finite(rows)
            if bad is not None:
                passed = False
                lines.append(
                    f"Forward {self.point_words(point)}: the probabilities of sample {bad[0]} are "
                    f"{at(rows, bad)} at index {bad[1:]}. Hint: np.exp overflows for logits "
                    "this large; subtract np.max(z) from z before the exp (softmax does not "
                    "change)."
                )
                continue
            res = self.svc.check(
                self.ref["sessions"][point],
                {"probabilities": rows, "rtol": RTOL, "atol": PROBABILITY_ATOL},
            )
            item = res["items"]["probabilities"]
            if item["pass"]:
                continue
            passed = False
            lines.append(
                f"Forward {self.point_words(point)}: "
                + describe_item(
                    item, lambda i: f"Forward(X)[{i[0]}][{i[1]}]", rows, ref["probabilities"]
                )
            )
            sums = np.sum(np.asarray(rows), axis=1)
            yours_cls = [int(c) for c in np.argmax(np.asarray(rows), axis=1)]
            if not np.allclose(sums, 1.0, atol=1e-9):
                i = int(np.argmax(np.abs(sums - 1.0)))
                lines.append(
                    f"Hint: your probabilities for sample {i} sum to {fmt(sums[i])}, not 1: "
                    "softmax divides exp(z) by its sum over the classes."
                )
            elif self.column_major_forward(rows, point):
                lines.append(
                    "Hint: these are the probabilities of samples flattened column by column "
                    "(x.flatten('F') or x.T.flatten()); the notebook's x.flatten() goes row by "
                    "row: 56, 231, 24, 1."
                )
            elif point == "mixed" and len(self.net.attrs) > 1:
                lines.append(
                    "Hint: right where every hidden input is positive, wrong where some are "
                    "negative: apply ReLU, np.maximum(0, W_l1 @ x), before the second layer."
                )
            if yours_cls != ref["classes"]:
                lines.append(
                    f"Your predicted classes: {yours_cls}; the reference's: {ref['classes']}."
                )
        if passed:
            lines.append(
                "Your probabilities match the reference at the trained weights and at weights of "
                "mixed sign."
            )
        return passed, lines

    def column_major_forward(self, rows, point):
        """Whether `rows` are the network's probabilities on column-major flattened samples."""
        x = np.asarray(self.X, dtype=float)
        a = x.transpose(0, 2, 1).reshape(len(x), -1)
        ws = [np.asarray(w) for w in self.ref["weights"][point]]
        for k, w in enumerate(ws):
            a = a @ w.T
            if k < len(ws) - 1:
                a = np.maximum(a, 0)
        try:
            return np.allclose(np.asarray(rows), softmax_rows(a), rtol=1e-6, atol=1e-12)
        except ValueError:
            return False

    def test_get_loss(self, failed):
        value, err = self.record("getLoss")
        if err:
            return False, [err] + self.error_hint(err)
        ref = self.ref["history"][0]
        words = self.point_words("after_one_update")
        if not np.isfinite(value):
            return False, [
                f"getLoss {words} is {value}. Hint: log(0) happens when a probability underflows; "
                "compute log-softmax directly, z - max(z) - log(sum(exp(z - max(z))))."
            ]
        res = self.svc.check(
            self.ref["sessions"]["after_one_update"], {"loss": [value], "rtol": RTOL}
        )
        item = res["items"]["loss"]
        if item["pass"]:
            return True, [f"Your loss {words} matches: {fmt(value)}."]
        lines = [
            f"getLoss {words}: yours {fmt(value)}, reference {fmt(ref)} "
            f"(relative error {item['rel_error']:.3g})."
        ]
        if np.isclose(value, ref * self.m, rtol=1e-6):
            lines.append(
                f"Hint: yours is {self.m} times the reference, {self.m} being the number of "
                "samples: getLoss returns the mean over the samples, not the sum."
            )
        elif np.isclose(value * self.m, ref, rtol=1e-6):
            lines.append(
                f"Hint: yours is the reference divided by {self.m}: divided once too often?"
            )
        elif value < 0:
            lines.append(
                "Hint: a cross-entropy is never negative: -sum(y * log(p)), mind the sign."
            )
        elif "Forward" in failed:
            lines.append(
                "Hint: Forward fails above, and getLoss uses it (the notebook's getLoss is "
                "self.Loss(self.Forward(X), Y)): fix it first."
            )
        return False, lines

    def test_backward(self):
        value, err = self.record("Backward")
        if err:
            return False, [err] + self.error_hint(err)
        lines, ok = [], {}
        for point in ("initial", "mixed"):
            grads = value[point]
            ref = self.ref[f"gradients_{point}"]
            bad = first_non_finite_any(grads)
            if bad is not None:
                ok[point] = False
                lines.append(
                    f"Backward {self.point_words(point)}: {self.net.grad_name(bad[0])} has "
                    f"{bad[1]} at {bad[2]}; every element must be a finite number."
                )
                continue
            res = self.svc.check(
                self.ref["sessions"][point],
                {"gradients": {"weights": grads}, "rtol": RTOL, "atol": GRADIENT_ATOL},
            )
            item = res["items"]["gradients"]
            ok[point] = item["pass"]
            if item["pass"]:
                continue
            lines.append(
                f"Backward {self.point_words(point)}: "
                + describe_item(item, self.name_grad, {"weights": grads}, {"weights": ref})
            )
            hint = (
                ratio_hint(grads, ref, self.m, LEARNING_RATE) if isinstance(grads, list) else None
            )
            if hint is None and point == "mixed":
                hint = self.relu_hint(grads, ref, ok.get("initial"))
            if hint is None and item["rel_error"] is not None and len(ref) > 1:
                right = [
                    self.net.grad_name(k)
                    for k, (a, b) in enumerate(zip(grads, ref))
                    if np.allclose(a, b, rtol=RTOL, atol=0)
                ]
                if right:
                    hint = (
                        f"{', '.join(right)} {'is' if len(right) == 1 else 'are'} right: the "
                        "mistake is in the backward pass below them (dH = (Y_hat - Y) @ W_l2, "
                        "then the ReLU derivative, then dW1 = dZ1^T X)."
                    )
            if hint and "Hint: " + hint not in lines:
                lines.append("Hint: " + hint)
        passed = all(ok.values())
        if passed:
            lines.append(
                "Your gradients match at the initial weights and at weights of mixed sign."
            )
        return passed, lines

    def relu_hint(self, grads, ref, passed_initial):
        if len(self.net.attrs) < 2:
            return None
        layer = self.ref["trace_mixed"]["layers"][0]
        z = np.asarray(layer["pre_activation"])
        without = np.asarray(layer["upstream_gradient"]).T @ np.asarray(layer["input"])
        off = int(np.sum(z <= 0))
        try:
            yours = np.asarray(grads[0], dtype=float)
        except (TypeError, ValueError):
            return None
        if yours.shape == without.shape and np.allclose(yours, without, rtol=1e-6, atol=1e-9):
            return (
                f"here {off} of {z.size} hidden pre-activations Z1 are <= 0, and your dW1 "
                "equals the gradient with the ReLU derivative left out: multiply dH by "
                "dReLU(Z1), that is (Z1 > 0), before dW1 = dZ1^T X."
            )
        if passed_initial:
            return (
                "right at the initial weights, where every Z1 > 0, but wrong here, where "
                f"{off} of {z.size} are <= 0: check the ReLU derivative, dZ1 = dH * (Z1 > 0)."
            )
        return None

    def test_training(self, failed):
        value, err = self.record("training")
        if err:
            return False, [err] + self.error_hint(err)
        losses, weights, units = value["loss"], value["weights"], value.get("units")
        ref = self.ref["history"]
        lines = []
        bad = first_non_finite(losses) if losses else None
        if bad is not None:
            lines = [
                f"Your loss after update {bad[0] + 1} is {losses[bad[0]]}: every loss must be a "
                "finite number (see the getLoss test)."
            ]
            if failed:
                lines.append(self.failed_hint(failed))
            return False, lines
        body = {"loss": losses, "rtol": RTOL}
        if all(w is not None for w in weights) and first_non_finite_any(weights) is None:
            body["weights"] = weights
        res = self.svc.check(self.ref["sessions"]["trained"], body)
        loss_item = res["items"]["loss"]
        w_item = res["items"].get("weights")
        rounded = not loss_item["pass"] and rounded_agreement(losses, units, ref)
        loss_ok = loss_item["pass"] or rounded
        if loss_ok and w_item is not None and w_item["pass"]:
            words = [
                f"Your {self.epochs} losses and your weights after training match the reference."
            ]
            if rounded:
                words.append(
                    f"(Your losses are printed rounded, to {rounding_words(units)}; they agree "
                    "with the reference to every digit shown.)"
                )
            return True, words
        if not loss_ok:
            if len(losses) != len(ref):
                lines.append(
                    f"training gave {len(losses)} losses; the reference has {len(ref)}, one after "
                    f"each of the {self.epochs} updates."
                )
            else:
                lines.append(
                    "Your loss history: "
                    + describe_item(loss_item, lambda i: f"after update {i[0] + 1}", losses, ref)
                )
                k = first_difference(losses, ref)
                lines.append(
                    f"It first differs after update {k + 1}: yours {fmt(losses[k])}, reference "
                    f"{fmt(ref[k])}."
                )
                hint = self.training_hint(losses, ref, failed, value.get("learning_rate"), k)
                if hint:
                    lines.append("Hint: " + hint)
        if w_item is None:
            lines.append(
                "After training, your network has no weights "
                + ", ".join(f"self.{a}" for a in self.net.attrs)
                + " holding finite numbers."
            )
        elif not w_item["pass"]:
            lines.append(
                f"Your weights after {self.epochs} updates: "
                + describe_item(
                    w_item, lambda i: self.name_weight(*i), weights, self.ref["weights"]["trained"]
                )
            )
            if loss_ok:
                lines.append(
                    "Hint: your losses are right but your weights are not: does training "
                    "update self's weights (self.W_l1 = self.W_l1 - dW * self.learning_rate), "
                    "not a copy?"
                )
        return False, lines

    def training_hint(self, losses, ref, failed, lr, k):
        if np.allclose(losses[1:], ref[:-1], rtol=1e-6):
            return (
                "yours is the reference shifted by one: you print the loss before each "
                "update; line k is the loss after update k."
            )
        if lr is not None and lr != LEARNING_RATE:
            return (
                f"self.learning_rate is {lr:g}; the notebook's is {LEARNING_RATE:g} "
                "(self.learning_rate = 0.0001 in __init__)."
            )
        for factor, words in [
            (
                2.0,
                "the update is applied twice per epoch (once in Backward, once in training?): "
                "W_l1 changes by twice learning_rate * dW",
            ),
            (
                LEARNING_RATE,
                "the learning rate is applied twice: the weights move by "
                "learning_rate^2 * dW; multiply by it once, in training",
            ),
        ]:
            rate = LEARNING_RATE * factor
            other = history_at(self.svc, self.net, self.seed, self.epochs, rate)
            if np.allclose(losses, other, rtol=1e-6):
                return f"your history is the reference's at learning rate {rate:g}: {words}."
        if failed:
            return self.failed_hint(failed)[len("Hint: ") :]
        if k == 0:
            return (
                f"the first update already differs: W_l1 = W_l1 - dW * learning_rate with the "
                f"notebook's rate ({LEARNING_RATE:g}), once per epoch, all samples at once."
            )
        return None

    @staticmethod
    def failed_hint(failed):
        them = " and ".join(failed)
        one = len(failed) == 1
        return (
            f"Hint: {them} {'fails' if one else 'fail'} above, and training uses "
            f"{'it' if one else 'them'}: fix {'it' if one else 'them'} first."
        )

    def error_hint(self, err):
        """A hint for a method that raised, from the exception's text."""
        if "File too large" in err:
            return [
                f"Hint: your program wrote more than {OUTPUT_LIMIT_BYTES >> 20} MB to its output "
                "and was refused more; print less."
            ]
        m = re.search(r"has no attribute '(\w+)'", err)
        if m:
            close = [a for a in self.net.attrs if a.lower() == m.group(1).lower() != a]
            if close:
                return [f"Hint: the weights are self.{close[0]}; Python names are case-sensitive."]
            return []
        shapes = [tuple(np.shape(w)) for w in self.ref["weights"]["initial"]]
        if "ValueError" in err and ("matmul" in err or "shapes" in err or "broadcast" in err):
            return [
                "Hint: before this method the grader sets "
                + ", ".join(f"self.{a}" for a in self.net.attrs)
                + f" to the reference's weights, of shapes {', '.join(str(s) for s in shapes)} "
                "(out, in); your code seems to expect other shapes. A layer computes "
                "np.matmul(W, x.flatten())."
            ]
        return []

    def grade(self):
        if not self.net.required and not self.attempted():
            return [
                {
                    "name": f"{self.net.cls} (optional two-layer exercise, extra credit)",
                    "score": 0,
                    "max_score": 0,
                    "output": "Not attempted: your submission defines no NN_2layer class. The "
                    "two-layer exercise is optional; leaving it out costs nothing.",
                }
            ]
        tests, failed = [], []
        for step, points in TESTS:
            try:
                if step == "__init__":
                    passed, lines = self.test_init()
                elif step == "Forward":
                    passed, lines = self.test_forward()
                elif step == "getLoss":
                    passed, lines = self.test_get_loss(failed)
                elif step == "Backward":
                    passed, lines = self.test_backward()
                else:
                    passed, lines = self.test_training(
                        [f for f in failed if f in ("getLoss", "Backward")]
                    )
            except ServiceError:
                raise
            except Exception as e:  # noqa: BLE001 - a grader bug must still give a result
                # An answer shaped in a way no hint foresaw: fail the test, say so, and leave
                # the traceback for the staff, rather than leave the student with no result.
                print(f"grade.py: internal error in {self.net.cls}.{step}:", file=sys.stderr)
                traceback.print_exc()
                passed, lines = False, [
                    f"The grader could not read your {step}'s answer ({type(e).__name__}); "
                    "check that it returns what the notebook's skeleton asks for, or ask the "
                    "staff."
                ]
            if not passed:
                failed.append(step)
            name = f"{self.net.cls}.{step}"
            if not self.net.required:
                name += " (extra credit)"
            tests.append(
                {
                    "name": name,
                    "score": points if passed else 0,
                    # Extra credit: points beyond the required total (Gradescope's convention).
                    "max_score": points if self.net.required else 0,
                    "status": "passed" if passed else "failed",
                    # The same hint can come from two weights; say it once.
                    "output": "\n".join(dict.fromkeys(lines)),
                }
            )
        if self.found and self.found["class"] != self.net.cls:
            tests[0]["output"] += f"\n(Graded your class {self.found['class']}.)"
        return tests


def first_non_finite_any(layers):
    for k, layer in enumerate(layers):
        try:
            bad = first_non_finite(layer)
        except (TypeError, ValueError):
            return None  # ragged: check reports the shape
        if bad is not None:
            return k, at(layer, bad), bad
    return None


def first_difference(yours, ref):
    y, r = np.asarray(yours, dtype=float), np.asarray(ref, dtype=float)
    far = np.abs(y - r) > RTOL * np.abs(r)
    return int(np.argmax(far)) if far.any() else 0


def load_notes(records):
    """What the summary says about running the file: cells that raised, a file that failed."""
    load = next((r for r in records if r.get("step") == "load" and r.get("event") == "end"), None)
    if load is None or not load.get("ok"):
        return []
    notes = []
    for c in (load.get("value") or {}).get("failed_cells", []):
        where = "; ".join(c.get("where") or [])
        notes.append(
            f"code cell {c['cell']} raised {c['error']}"
            + (f" ({where})" if where else "")
            + "; the cells after it still ran."
        )
    return notes


# ---------------------------------------------------------------------------------------------


def grade(submission, url, token=None, seed=0, epochs=100, time_limit=30.0):
    """Grades one file; returns the results.json document. Raises ServiceError when the service
    fails (after deleting what it created)."""
    t0 = time.monotonic()
    svc = Service(url, token)
    try:
        version = svc.call("GET", "/version")
        data = svc.call("GET", f"/datasets/{DATASET}")
        n_classes = len(data["class_names"])
        y = one_hot(data["y"], n_classes)
        refs = {net.key: reference(svc, net, seed, epochs, data["x"]) for net in NETS}
        job = {
            "seed": seed,
            "epochs": epochs,
            "learning_rate": LEARNING_RATE,
            "x": data["x"],
            "y": y.tolist(),
            "nets": [
                {
                    "key": n.key,
                    "class": n.cls,
                    "layers": len(n.layers) - 1,
                    "weights": refs[n.key]["weights"],
                    "probabilities": refs[n.key]["probabilities"],
                }
                for n in NETS
            ],
        }
        run = run_student(submission, job, time_limit)
        stopped = why_stopped(run, time_limit)
        tests = []
        x = np.asarray(data["x"], dtype=float)
        for net in NETS:
            grader = Grader(svc, net, refs[net.key], run["records"], stopped, (x, y), seed, epochs)
            tests += grader.grade()
    finally:
        left = svc.close()
    if left:
        raise ServiceError(f"could not delete sessions {left}")
    required = [t for t in tests if t["max_score"] > 0]
    extra = [t for t in tests if t["max_score"] == 0]
    score = sum(t["score"] for t in tests)
    total = sum(t["max_score"] for t in required)
    summary = f"{sum(t['score'] for t in required):g} of {total:g} points on the required part."
    if any(t.get("status") for t in extra):
        earned = sum(t["score"] for t in extra)
        summary += (
            f" Extra credit (the two-layer exercise): {earned:g} of {sum(p for _, p in TESTS):g}."
        )
    else:
        summary += " The optional two-layer exercise: not attempted (no points lost)."
    notes = load_notes(run["records"])
    if notes:
        summary += " Note: " + " ".join(notes)
    if stopped:
        summary += f" Note: {stopped}."
    return {
        "score": score,
        "execution_time": round(time.monotonic() - t0, 3),
        "output": summary,
        "extra_data": {
            "service": f"{version['name']} {version['version']}",
            "seed": seed,
            "epochs": epochs,
            "student_seconds": round(run["seconds"], 3),
            "required_score": sum(t["score"] for t in required),
            "required_max": total,
            "extra_credit": sum(t["score"] for t in extra),
        },
        "tests": tests,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("submission", help="the student's notebook (.ipynb) or Python file (.py)")
    p.add_argument("--server", default=os.environ.get("BACKPROP_URL", "http://127.0.0.1:8080"))
    p.add_argument("--token", default=os.environ.get("BACKPROP_TOKEN"))
    p.add_argument("--seed", type=int, default=0, help="np.random.seed for the weights (default 0)")
    p.add_argument(
        "--epochs", type=int, default=100, help="updates in the training test (default 100)"
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=30.0,
        help="seconds for the student's whole file (default 30)",
    )
    p.add_argument("--output", "-o", default="results.json")
    args = p.parse_args(argv)
    if not os.path.isfile(args.submission):
        p.error(f"{args.submission} is not a file")
    if not 0 <= args.seed <= 2**32 - 1:
        p.error(f"--seed {args.seed} is outside 0..4294967295, the seeds np.random.seed takes")
    if args.epochs < 1:
        p.error(f"--epochs {args.epochs}: at least 1")
    try:
        results = grade(
            args.submission, args.server, args.token, args.seed, args.epochs, args.time_limit
        )
        code = 0
    except ServiceError as e:
        results = {
            "score": 0,
            "output": f"The grading service failed, so this submission was not graded (not "
            f"your fault; please resubmit later). Detail for the staff: {e}",
            "tests": [],
        }
        print(f"grade.py: service error: {e}", file=sys.stderr)
        code = 3
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    if code == 0:
        print(f"{args.submission}: {results['output']} -> {args.output}")
    return code


if __name__ == "__main__":
    sys.exit(main())
