#!/usr/bin/env python3
"""Grade a student's backprop notebook against backprop-server, Gradescope style.

    python grade.py SUBMISSION.py [--server URL] [--token TOKEN] [--seed 0] [--epochs 100]
                    [--time-limit 30] [--output results.json]

The server comes from --server or BACKPROP_URL (default http://127.0.0.1:8080), the bearer
token from --token or BACKPROP_TOKEN (none by default).

The student's file defines two classes, the notebook's one-layer network and the two-layer
exercise (full interface and conventions in README.md beside this file):

    NN_1layer(input_size, output_size, seed)               weights self.W, shape (out, in)
    NN_2layer(input_size, hidden_size, output_size, seed)  weights self.W1, self.W2
      __init__   np.random.seed(seed); self.W = np.random.rand(out, in) (W1 before W2)
      Forward(x)                 one sample (2x2) -> its class probabilities, shape (3,):
                                 softmax(W @ x.flatten()) (two-layer: ReLU on the hidden layer)
      getLoss(X, Y)              X (M, 2, 2), Y (M, 3) one-hot -> mean cross-entropy, a float
      Backward(X, Y)             the gradient summed over the samples, (P - Y)^T X, shape (out, in)
                                 (two-layer: a tuple (dW1, dW2))
      training(X, Y, epochs, lr) `epochs` updates W -= lr * dW; returns (or prints as
                                 'iteration: k, loss: v') the mean loss after each update

For each class the grader asks the service for the reference at the same seed and data, runs
the student's file in a subprocess with a time limit (harness.py; a crash, a hang, garbage
output or a missing method fails its test, never the grader), loads reference weights into the
student's network before each method so one mistake does not fail every test, compares with
POST /sessions/{id}/check, deletes its sessions, and writes results.json:
    {"score", "execution_time", "output", "tests": [{"name", "score", "max_score", "status",
     "output"}, ...]}
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

    def __init__(self, cls, layers, sizes, attrs):
        self.cls = cls
        self.layers = layers
        self.sizes = sizes
        self.attrs = attrs

    def grad_name(self, k):
        return "d" + self.attrs[k]


NETS = [
    Net("NN_1layer", [4, 3], [4, 3], ["W"]),
    Net("NN_2layer", [4, 4, 3], [4, 4, 3], ["W1", "W2"]),
]

# Points per test, the same for both classes: 10 each, 20 in all.
TESTS = [
    ("__init__", 1),
    ("Forward", 2),
    ("getLoss", 1),
    ("Backward", 3),
    ("training", 3),
]


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

    def create(self, layers, init):
        body = {
            "layers": layers,
            "activation": "relu",
            "bias": False,
            "grad_reduction": "sum",
            "learning_rate": LEARNING_RATE,
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
    [0, 1) and non-negative pixels every ReLU input is positive, before and after training:
    only the mixed weights show whether Backward applies the ReLU derivative.
    """
    main = svc.create(net.layers, {"method": "numpy_rand", "seed": seed})
    ref = {"sessions": {}, "weights": {}}
    ref["weights"]["initial"] = svc.call("GET", f"/sessions/{main}/weights")["weights"]
    ref["gradients_initial"] = svc.call("POST", f"/sessions/{main}/gradients")["weights"]
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
    ref["trace_mixed"] = svc.call("POST", f"/sessions/{mixed}/trace")
    return ref


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


def ratio_hint(yours, ref, m):
    """A whole-array mistake that a constant factor explains, or None."""
    y = [np.asarray(a, dtype=float) for a in yours]
    r = [np.asarray(a, dtype=float) for a in ref]
    if any(a.shape != b.shape for a, b in zip(y, r)):
        return None

    def every(f):
        return all(np.allclose(f(a), b, rtol=1e-6, atol=1e-12) for a, b in zip(y, r))

    if every(lambda a: a * m):
        return (
            f"yours is the reference divided by {m}, the number of samples: it looks like your "
            "gradient is averaged; the notebook's Backward returns the sum over the samples, "
            "(P - Y)^T X, without dividing by their number."
        )
    if every(lambda a: a / m):
        return (
            f"yours is the reference times {m}, the number of samples: are you summing over "
            "the samples twice?"
        )
    if every(lambda a: -a):
        return "yours has the opposite sign: the gradient is (P - Y)^T X, not (Y - P)^T X."
    if all(a.ndim == 2 and a.T.shape == b.shape for a, b in zip(y, r)) and every(lambda a: a.T):
        return "yours is the transpose of the reference: weights and their gradients are (out, in)."
    return None


class Grader:
    """The five tests of one exercise, from the student's step records and the reference."""

    def __init__(self, svc, net, ref, records, stopped, m, seed, epochs):
        self.svc, self.net, self.ref = svc, net, ref
        self.records, self.stopped, self.m = records, stopped, m
        self.seed, self.epochs = seed, epochs

    def record(self, step):
        """The student's answer for one step, or the sentence that says why there is none."""
        name = f"{self.net.cls}.{step}"
        starts = [r for r in self.records if r.get("step") == name and r.get("event") == "start"]
        ends = [r for r in self.records if r.get("step") == name and r.get("event") == "end"]
        if ends:
            r = ends[-1]
            if r["ok"]:
                return r["value"], None
            where = r.get("where") or []
            text = r["error"]
            if r.get("exception"):
                text = f"{step} raised {text}"
                if where:
                    text += " (" + "; ".join(where) + ")"
            return None, text
        load = next(
            (r for r in self.records if r.get("step") == "load" and r.get("event") == "end"), None
        )
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
        ref = self.ref["weights"]["initial"]
        res = self.svc.check(self.ref["sessions"]["initial"], {"weights": value, "rtol": RTOL})
        item = res["items"]["weights"]
        if item["pass"]:
            return True, [
                f"Your weights equal np.random.seed({self.seed}); np.random.rand(out, in)."
            ]
        lines = [
            "Your weights after __init__ differ from np.random.seed"
            f"({self.seed}); np.random.rand(out, in):",
            describe_item(item, lambda i: self.name_weight(*i), value, ref),
        ]
        shapes = [np.shape(w) for w in value] if isinstance(value, list) else []
        want = [tuple(np.shape(w)) for w in ref]
        if len(shapes) == len(want) and all(s == w[::-1] != w for s, w in zip(shapes, want)):
            lines.append(
                "Hint: your weights are transposed. The course stores each layer's weights as "
                f"(out, in), here {', '.join(str(w) for w in want)}: "
                + "; ".join(f"self.{a} = np.random.rand{w}" for a, w in zip(self.net.attrs, want))
                + ", and a layer computes W @ x."
            )
        elif len(value) == 2 and all(np.shape(a) == np.shape(b) for a, b in zip(value, ref)):
            lines.append(
                "Hint: call np.random.seed(seed) once, then draw W1 and then W2 from the same "
                "stream, in that order."
            )
        else:
            lines.append("Hint: call np.random.seed(seed) right before drawing the weights.")
        return False, lines

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
                    f"Forward {self.point_words(point)}: Forward(x[{bad[0]}]) gives "
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
                    item, lambda i: f"Forward(x[{i[0]}])[{i[1]}]", rows, ref["probabilities"]
                )
            )
            if item["rel_error"] is None:
                lines.append(
                    "Hint: Forward(x) takes one sample and returns its "
                    f"{len(ref['probabilities'][0])} class probabilities, "
                    "softmax(W @ x.flatten())."
                )
                continue
            sums = np.sum(np.asarray(rows), axis=1)
            yours_cls = [int(c) for c in np.argmax(np.asarray(rows), axis=1)]
            if not np.allclose(sums, 1.0, atol=1e-9):
                i = int(np.argmax(np.abs(sums - 1.0)))
                lines.append(
                    f"Hint: your probabilities for x[{i}] sum to {fmt(sums[i])}, not 1: softmax "
                    "divides exp(z) by its sum over the classes."
                )
            elif point == "mixed" and len(self.net.attrs) > 1:
                lines.append(
                    "Hint: right where every hidden input is positive, wrong where some are "
                    "negative: apply ReLU, np.maximum(0, W1 @ x), before the second layer."
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

    def test_get_loss(self):
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
            hint = ratio_hint(grads, ref, self.m) if isinstance(grads, list) else None
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
                        "mistake is in the backward pass below them (dH = (P - Y) @ W2, then "
                        "the ReLU derivative, then dW1 = dZ1^T X)."
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
                "(Z1 > 0) before dW1 = dZ1^T X."
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
        losses, weights = value["loss"], value["weights"]
        ref = self.ref["history"]
        lines = []
        bad = first_non_finite(losses) if losses else None
        if bad is not None:
            return False, [
                f"Your loss after update {bad[0] + 1} is {losses[bad[0]]}: every loss must be a "
                "finite number (see the getLoss test)."
            ]
        body = {"loss": losses, "rtol": RTOL}
        if all(w is not None for w in weights) and first_non_finite_any(weights) is None:
            body["weights"] = weights
        res = self.svc.check(self.ref["sessions"]["trained"], body)
        loss_item = res["items"]["loss"]
        w_item = res["items"].get("weights")
        if loss_item["pass"] and w_item is not None and w_item["pass"]:
            return True, [
                f"Your {self.epochs} losses and your weights after training match the reference."
            ]
        if not loss_item["pass"]:
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
                decimals = value.get("decimals")
                if decimals is not None and np.all(
                    np.abs(np.subtract(losses, ref)) <= 0.5001 * 10.0**-decimals
                ):
                    lines.append(
                        f"Hint: your printed losses are rounded to {decimals} decimals; print the "
                        "full value "
                        "(f'iteration: {k}, loss: {loss}') or return the list of losses."
                    )
                elif np.allclose(losses[1:], ref[:-1], rtol=1e-6):
                    lines.append(
                        "Hint: yours is the reference shifted by one: you record the loss before "
                        "each update; entry k is the loss after update k."
                    )
                elif failed:
                    them = " and ".join(failed)
                    lines.append(
                        f"Hint: {them} {'fails' if len(failed) == 1 else 'fail'} above, and "
                        f"training uses {'it' if len(failed) == 1 else 'them'}: fix "
                        f"{'it' if len(failed) == 1 else 'them'} first."
                    )
                elif k == 0:
                    lines.append(
                        f"Hint: the first update already differs: W -= lr * dW with the lr "
                        f"passed to training (here {LEARNING_RATE}), once per epoch, all samples "
                        "at once."
                    )
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
            if loss_item["pass"]:
                lines.append(
                    "Hint: your losses are right but your weights are not: does training "
                    "update self's weights in place (W -= lr * dW), not a copy?"
                )
        return False, lines

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
                "(out, in); your code seems to expect other shapes. A layer computes W @ x."
            ]
        return []

    def grade(self):
        tests, failed = [], []
        for step, points in TESTS:
            try:
                if step == "__init__":
                    passed, lines = self.test_init()
                elif step == "Forward":
                    passed, lines = self.test_forward()
                elif step == "getLoss":
                    passed, lines = self.test_get_loss()
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
                    "check that it returns what the README asks for, or ask the staff."
                ]
            if not passed:
                failed.append(step)
            tests.append(
                {
                    "name": f"{self.net.cls}.{step}",
                    "score": points if passed else 0,
                    "max_score": points,
                    "status": "passed" if passed else "failed",
                    # The same hint can come from two weights; say it once.
                    "output": "\n".join(dict.fromkeys(lines)),
                }
            )
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
        refs = {net.cls: reference(svc, net, seed, epochs, data["x"]) for net in NETS}
        job = {
            "seed": seed,
            "epochs": epochs,
            "learning_rate": LEARNING_RATE,
            "x": data["x"],
            "y": y.tolist(),
            "nets": [
                {
                    "class": n.cls,
                    "sizes": n.sizes,
                    "attrs": n.attrs,
                    "weights": refs[n.cls]["weights"],
                }
                for n in NETS
            ],
        }
        run = run_student(submission, job, time_limit)
        stopped = why_stopped(run, time_limit)
        tests = []
        for net in NETS:
            grader = Grader(svc, net, refs[net.cls], run["records"], stopped, len(y), seed, epochs)
            tests += grader.grade()
    finally:
        left = svc.close()
    if left:
        raise ServiceError(f"could not delete sessions {left}")
    score = sum(t["score"] for t in tests)
    total = sum(t["max_score"] for t in tests)
    summary = f"{score:g} of {total:g} points."
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
        },
        "tests": tests,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("submission", help="the student's Python file")
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
