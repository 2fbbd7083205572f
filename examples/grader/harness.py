"""Runs one student submission, step by step, inside the grader's subprocess.

    python harness.py JOB.json OUT.jsonl

JOB.json (written by grade.py) names the student's file and holds everything the steps need:
the seed, the data, and the reference weights (and reference predictions) to load into the
student's network before each step, so that one wrong method does not make every later test
fail. This process never talks to the grading service and sees no token: it only runs
student code.

The submission is the course notebook as the student hands it in: an `.ipynb` (its code cells
run in order in one namespace, as "Run all" in Jupyter would, IPython magics skipped) or a
`.py` file (run as a script). Top-level demo code, like the notebook's
`my_NeuralNet = NN_1layer(); my_NeuralNet.training(X, Y)`, runs; what it prints is kept; a
cell that raises is recorded and the next cell still runs. The interface graded is the
notebook's: `NN_1layer()` built with no arguments after `np.random.seed(S)`, weights in
`self.W_l1`, `Forward(X)` returning one probability vector per sample, `getLoss(X, Y)`,
`Backward(Y_hat, X, Y)` returning dW, `training(X, Y, n_epoch=100)` printing
`iteration: k, loss: v`; the optional two-layer exercise likewise (`W_l1`, `W_l2`, `Backward`
returning both gradients).

Each step appends one JSON line to OUT.jsonl when it starts and one when it ends, flushed at
once, so when the grader has to kill this process (a time limit, an output limit) it still
knows which step was running. A step's failure (an exception, a wrong type, a missing method)
is recorded and the next step runs.
"""

import contextlib
import inspect
import io
import json
import re
import sys
import time
import traceback

import numpy as np

# What a student's prints may take in memory; more is counted, not kept.
PRINT_KEEP_CHARS = 1 << 20
# A returned array larger than this cannot be an answer here; refusing it keeps a runaway
# result from filling the output file.
MAX_ELEMENTS = 100_000
LOSS_LINE = re.compile(r"^\s*iteration\s*:?\s*(\d+)\s*,\s*loss\s*:?\s*(.+?)\s*$", re.IGNORECASE)
# NumPy 2 prints a np.float64 with %r or in a list as 'np.float64(0.5)'; that is a number too.
WRAPPED = re.compile(r"^(?:np\.|numpy\.)?(?:float64|float32|float|array)\((.*)\)$")
# Class names a student may give the optional exercise (compared without case or '_').
TWO_LAYER_NAMES = ("nn2layer", "nn2layers", "nntwolayer", "nn2layernet")
# Weight attribute names, the notebook's first; the two-layer exercise leaves them open.
WEIGHT_NAMES = {
    1: [("W_l1",)],
    2: [("W_l1", "W_l2"), ("W1", "W2"), ("W_1", "W_2"), ("w1", "w2"), ("W_L1", "W_L2")],
}


class StepError(Exception):
    """The student's code ran but gave something that is not an answer; the text says why."""


class BoundedText(io.TextIOBase):
    """A stdout stand-in that keeps the first PRINT_KEEP_CHARS characters of what is printed."""

    def __init__(self):
        self.parts = []
        self.kept = 0
        self.total = 0

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            s = str(s)
        self.total += len(s)
        room = PRINT_KEEP_CHARS - self.kept
        if room > 0:
            self.parts.append(s[:room])
            self.kept += min(room, len(s))
        return len(s)

    def text(self):
        return "".join(self.parts)


class Channel:
    def __init__(self, path):
        self.f = open(path, "w", encoding="utf-8")

    def send(self, record):
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()


def describe(v):
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} (a {type(v).__name__})"


def as_array(v, what, expected_shape):
    """`v` as a float array (np.matrix and nested lists too), or a StepError that says what
    came back instead."""
    if v is None:
        raise StepError(
            f"{what} returned None; it should return an array of shape {expected_shape}"
        )
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError) as e:
        raise StepError(
            f"{what} returned {describe(v)}, which is not an array of numbers ({e}); "
            f"it should return an array of shape {expected_shape}"
        ) from None
    if a.size > MAX_ELEMENTS:
        raise StepError(
            f"{what} returned an array of shape {a.shape}; it should be {expected_shape}"
        )
    # A matrix kept as np.matrix, or a gradient wrapped in a list of one: same numbers.
    if a.ndim > len(expected_shape) and a.size == int(np.prod(expected_shape)):
        a = a.reshape(expected_shape)
    return a


def as_number(v, what):
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        raise StepError(f"{what} returned {describe(v)}, not a number") from None
    if a.size != 1:
        raise StepError(
            f"{what} returned an array of shape {a.shape}, not one number; it should return the "
            "mean loss over all samples as a single float"
        )
    return float(a.reshape(()))


def nested(a):
    """JSON-ready nested lists; NaN and infinities are kept (the grader reports them)."""
    return np.asarray(a, dtype=float).tolist()


def decimals_of(text):
    """How finely a printed number was rounded: the size of its last digit's unit when it
    was printed with few digits (`0.1234` -> 1e-4, `1.23e-05` -> 1e-7), else None (repr's
    full precision: 15 or more significant digits)."""
    m = re.fullmatch(r"[-+]?(\d*)\.?(\d*)(?:[eE]([-+]?\d+))?", text)
    if not m:
        return None
    int_part, frac, exp = m.group(1), m.group(2), int(m.group(3) or 0)
    significant = len((int_part + frac).lstrip("0"))
    if significant >= 15:
        return None
    return 10.0 ** (exp - len(frac))


def parse_printed_losses(text):
    """The losses printed as 'iteration: k, loss: v', and for each the unit of its last
    printed digit when it was printed rounded (None when printed in full)."""
    losses, units, bad = [], [], None
    for line in text.splitlines():
        if not line.strip():
            continue
        m = LOSS_LINE.match(line)
        if m is None:
            continue
        number = m.group(2).rstrip(",;")
        w = WRAPPED.match(number)
        number = w.group(1) if w else number
        try:
            losses.append(float(number))
        except ValueError:
            bad = bad or line.strip()[:80]
            continue
        units.append(decimals_of(number))
    if not losses:
        lines = [line.strip()[:80] for line in text.splitlines() if "iteration" in line.lower()]
        if bad or lines:
            example = bad or lines[0]
            raise StepError(
                "training printed no line of the form 'iteration: k, loss: <number>' (for "
                f"example {example!r}); print one such line per update, as the notebook's "
                "training does"
            )
        raise StepError(
            "training printed no 'iteration: k, loss: <number>' lines and returned nothing; "
            "print one such line per update, as the notebook's training does"
        )
    return losses, units


def notebook_cells(path):
    """The code cells of an .ipynb, in order, as (number, source) with IPython magics and
    shell escapes left out (they are not Python and do nothing for grading)."""
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise StepError(
            "the .ipynb has no list of cells (is it a Jupyter notebook, format 4?); "
            "save it from Jupyter or Colab with File > Download > .ipynb"
        )
    cells = []
    n = 0
    for cell in nb["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        n += 1
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(s) for s in source)
        if source.lstrip().startswith("%%"):
            continue  # a cell magic (%%time, %%capture, ...): not Python
        lines = []
        for line in source.split("\n"):
            stripped = line.lstrip()
            if stripped.startswith(("%", "!")):
                # A line magic or shell escape: not Python; `pass` keeps the block valid.
                line = line[: len(line) - len(stripped)] + "pass  # IPython magic left out"
            lines.append(line)
        cells.append((n, "\n".join(lines)))
    return cells


def is_notebook(path):
    if path.lower().endswith(".ipynb"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
        return head.startswith(b"{")
    except OSError:
        return False


class Runner:
    def __init__(self, job, channel):
        self.job = job
        self.out = channel
        self.student_file = job["submission"]
        # The notebook's X and Y are integer arrays (np.array of int literals): so are these.
        self.X = np.asarray(job["x"], dtype=float)
        if np.all(self.X == np.round(self.X)):
            self.X = self.X.astype(int)
        self.Y = np.asarray(job["y"]).astype(int)
        self.namespace = None
        self.cell_sources = {}

    def step(self, name, fn):
        """Runs fn() with the student's prints captured; records its value or its failure."""
        self.out.send({"step": name, "event": "start"})
        printed = BoundedText()
        t0 = time.monotonic()
        record = {"step": name, "event": "end"}
        try:
            with contextlib.redirect_stdout(printed):
                record["value"] = fn(printed)
            record["ok"] = True
        except StepError as e:
            record.update(ok=False, error=str(e))
        except BaseException as e:  # noqa: BLE001 - student code may raise anything
            record.update(
                ok=False,
                error=f"{type(e).__name__}: {str(e)[:300]}",
                where=self.student_frames(e),
                exception=type(e).__name__,
            )
        record["seconds"] = round(time.monotonic() - t0, 3)
        if printed.total:
            record["printed_chars"] = printed.total
        self.out.send(record)
        return record

    def student_frames(self, exc):
        """The traceback lines that point into the student's code, innermost last."""
        lines = []
        for fs in traceback.extract_tb(exc.__traceback__):
            if fs.filename == self.student_file:
                lines.append(f"line {fs.lineno}, in {fs.name}: {(fs.line or '').strip()}")
            elif fs.filename.startswith("<cell "):
                cell = fs.filename[1:-1]
                source = self.cell_sources.get(fs.filename, "").split("\n")
                text = source[fs.lineno - 1].strip() if 0 < fs.lineno <= len(source) else ""
                lines.append(f"{cell}, line {fs.lineno}, in {fs.name}: {text}")
        return lines[-3:]

    def load(self):
        """Runs the submission's top level (every cell of a notebook); returns its namespace.
        The step records which cells raised and what the top level printed."""
        ns = {"__name__": "__main__", "__builtins__": __builtins__}

        def run(printed):
            if not is_notebook(self.student_file):
                with open(self.student_file, encoding="utf-8", errors="replace") as f:
                    source = f.read()
                code = compile(source, self.student_file, "exec")
                exec(code, ns)
                return {"kind": "py", "printed": printed.text()[-2000:]}
            cells = notebook_cells(self.student_file)
            if not cells:
                raise StepError("the notebook has no code cells")
            failed = []
            for n, source in cells:
                name = f"<cell {n}>"
                self.cell_sources[name] = source
                try:
                    exec(compile(source, name, "exec"), ns)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as e:  # noqa: BLE001 - a demo cell's error is not fatal
                    where = self.student_frames(e)
                    failed.append(
                        {
                            "cell": n,
                            "error": f"{type(e).__name__}: {str(e)[:200]}",
                            "where": where,
                        }
                    )
            return {
                "kind": "ipynb",
                "cells": len(cells),
                "failed_cells": failed,
                "printed": printed.text()[-2000:],
            }

        record = self.step("load", run)
        if not record["ok"]:
            return None
        self.namespace = ns
        return ns

    def find_class(self, net):
        ns = self.namespace
        if net["layers"] == 1:
            cls = ns.get("NN_1layer")
            return ("NN_1layer", cls) if isinstance(cls, type) else (None, None)
        for name, value in ns.items():
            key = name.lower().replace("_", "")
            if isinstance(value, type) and key in TWO_LAYER_NAMES:
                return name, value
        return None, None

    def construct(self, cls):
        """`np.random.seed(S); cls()`: the notebook's way of making a network."""
        np.random.seed(self.job["seed"])
        return cls()

    def weight_names(self, cls, net):
        """The attribute names the student keeps the weights in, from a fresh instance; the
        notebook's names when that fails (its own test then says why)."""
        candidates = WEIGHT_NAMES[net["layers"]]
        try:
            with contextlib.redirect_stdout(BoundedText()):
                obj = self.construct(cls)
        except BaseException:  # noqa: BLE001 - graded by __init__'s own test
            return candidates[0]
        for names in candidates:
            if all(isinstance(getattr(obj, a, None), (np.ndarray, list)) for a in names):
                return names
        return candidates[0]

    def network(self, cls, attrs, weights):
        """An instance holding the given weights: built by the student's __init__ when it
        works (methods may use other attributes it sets), else without it."""
        try:
            with contextlib.redirect_stdout(BoundedText()):
                obj = self.construct(cls)
        except BaseException:  # noqa: BLE001 - a broken __init__ is graded by its own test
            obj = cls.__new__(cls)
            obj.learning_rate = self.job["learning_rate"]
        for attr, w in zip(attrs, weights):
            # In the kind the student keeps them: code written for np.matrix (where * is a
            # matrix product) must get an np.matrix.
            if isinstance(getattr(obj, attr, None), np.matrix):
                setattr(obj, attr, np.asmatrix(np.array(w, dtype=float)))
            else:
                setattr(obj, attr, np.array(w, dtype=float))
        return obj

    def method(self, obj, cls_name, name):
        m = getattr(obj, name, None)
        if not callable(m):
            raise StepError(f"class {cls_name} has no method {name}")
        return m

    def grade_net(self, net):
        steps = ["__init__", "Forward", "getLoss", "Backward", "training"]
        key = net["key"]
        name, cls = self.find_class(net)
        if cls is None:
            self.out.send({"step": f"{key}.found", "event": "end", "ok": False})
            for s in steps:
                self.out.send(
                    {
                        "step": f"{key}.{s}",
                        "event": "end",
                        "ok": False,
                        "error": f"your submission defines no class {net['class']}",
                    }
                )
            return
        attrs = self.weight_names(cls, net)
        found = {"class": name, "attrs": list(attrs)}
        self.out.send({"step": f"{key}.found", "event": "end", "ok": True, "value": found})
        X, Y, ref = self.X, self.Y, net["weights"]
        shapes = [tuple(np.shape(w)) for w in ref["initial"]]
        M = len(X)

        def init(_printed):
            try:
                obj = self.construct(cls)
            except TypeError as e:
                if "argument" in str(e):
                    raise StepError(
                        f"{name}() raised TypeError: {e}. The grader builds the network as the "
                        f"notebook does, np.random.seed(S); {name}() with no arguments "
                        "(def __init__(self, **kwargs))"
                    ) from None
                raise
            out = []
            for attr, shape in zip(attrs, shapes):
                if not hasattr(obj, attr):
                    others = [
                        a for a, v in vars(obj).items() if isinstance(v, np.ndarray) and v.ndim == 2
                    ]
                    found = f" (it has {', '.join('self.' + a for a in others)})" if others else ""
                    raise StepError(
                        f"after __init__, the network has no attribute {attr}{found}; keep the "
                        f"weights in self.{attr}, shape {shape} (out, in), as the notebook does"
                    )
                out.append(nested(as_array(getattr(obj, attr), f"self.{attr}", shape)))
            lr = getattr(obj, "learning_rate", None)
            lr = None if lr is None else as_number(lr, "self.learning_rate")
            return {"weights": out, "learning_rate": lr}

        def forward(_printed):
            result = {}
            for point in ("trained", "mixed"):
                obj = self.network(cls, attrs, ref[point])
                f = self.method(obj, name, "Forward")
                out = f(X.copy())
                n_out = shapes[-1][0]
                try:
                    rows = [np.asarray(r, dtype=float).reshape(-1) for r in out]
                except TypeError:
                    raise StepError(
                        f"Forward(X) returned {describe(out)}; it should return one probability "
                        f"vector of {n_out} per sample, a list of {M}"
                    ) from None
                if len(rows) != M or any(r.shape != (n_out,) for r in rows):
                    got = np.shape(out) if not isinstance(out, list) else f"a list of {len(rows)}"
                    raise StepError(
                        f"Forward(X) returned {got} for the {M} samples; it should return one "
                        f"probability vector of {n_out} per sample (a list of {M}, or an array "
                        f"({M}, {n_out}))"
                    )
                result[point] = [nested(r) for r in rows]
            return result

        def get_loss(_printed):
            obj = self.network(cls, attrs, ref["after_one_update"])
            return as_number(self.method(obj, name, "getLoss")(X.copy(), Y.copy()), "getLoss")

        def backward(_printed):
            result = {}
            for point in ("initial", "mixed"):
                obj = self.network(cls, attrs, ref[point])
                # Y_hat as the notebook's Forward gives it: a list of probability vectors (the
                # reference's, so a wrong Forward does not fail this test too).
                y_hat = [np.array(p, dtype=float) for p in net["probabilities"][point]]
                g = self.method(obj, name, "Backward")(y_hat, X.copy(), Y.copy())
                if len(attrs) == 1:
                    result[point] = [nested(as_array(g, "Backward", shapes[0]))]
                    continue
                if not isinstance(g, (tuple, list)) or len(g) != len(attrs):
                    raise StepError(
                        f"Backward returned {describe(g)}; it should return the {len(attrs)} "
                        f"gradients ({', '.join('d' + a for a in attrs)}) of shapes "
                        f"{', '.join(str(s) for s in shapes)}, as a tuple or a list"
                    )
                result[point] = [
                    nested(as_array(gk, f"Backward's d{a}", s))
                    for gk, a, s in zip(g, attrs, shapes)
                ]
            return result

        def training(printed):
            obj = self.network(cls, attrs, ref["initial"])
            epochs = self.job["epochs"]
            run = self.method(obj, name, "training")
            try:
                params = list(inspect.signature(run).parameters)
            except (TypeError, ValueError):
                params = []
            if len(params) >= 3 or not params:
                returned = run(X.copy(), Y.copy(), epochs)
            elif epochs == 100:
                returned = run(X.copy(), Y.copy())  # no n_epoch: the notebook's default, 100
            else:
                raise StepError(
                    f"training takes no number of epochs; the notebook's is "
                    f"training(self, X, Y, n_epoch=100), and the grader asks for {epochs}"
                )
            units = None
            if returned is not None and not isinstance(returned, (int, float)):
                try:
                    losses = [float(v) for v in np.asarray(returned, dtype=float).reshape(-1)]
                except (TypeError, ValueError):
                    losses, units = parse_printed_losses(printed.text())
            else:
                losses, units = parse_printed_losses(printed.text())
            if len(losses) > MAX_ELEMENTS:
                raise StepError(f"training gave {len(losses)} losses; expected {epochs}")
            weights = []
            for attr, shape in zip(attrs, shapes):
                w = getattr(obj, attr, None)
                weights.append(None if w is None else nested(as_array(w, f"self.{attr}", shape)))
            lr = getattr(obj, "learning_rate", None)
            return {
                "loss": losses,
                "units": units,
                "weights": weights,
                "learning_rate": lr if isinstance(lr, (int, float)) else None,
            }

        for s, fn in zip(steps, [init, forward, get_loss, backward, training]):
            self.step(f"{key}.{s}", fn)


def main(argv):
    if len(argv) != 3:
        print("usage: harness.py JOB.json OUT.jsonl", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        job = json.load(f)
    channel = Channel(argv[2])
    runner = Runner(job, channel)
    if runner.load() is not None:
        for net in job["nets"]:
            runner.grade_net(net)
    channel.send({"event": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
