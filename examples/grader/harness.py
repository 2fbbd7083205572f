"""Runs one student submission, step by step, inside the grader's subprocess.

    python harness.py JOB.json OUT.jsonl

JOB.json (written by grade.py) names the student's file and holds everything the steps need:
the seed, the data, and the reference weights to load into the student's network before each
step, so that one wrong method does not make every later test fail. This process never talks
to the grading service and sees no token: it only runs student code.

Each step appends one JSON line to OUT.jsonl when it starts and one when it ends, flushed at
once, so when the grader has to kill this process (a time limit, an output limit) it still
knows which step was running. A step's failure (an exception, a wrong type, a missing method)
is recorded and the next step runs.
"""

import contextlib
import importlib.util
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
    """`v` as a float array, or a StepError that says what came back instead."""
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


def student_frames(exc, student_file):
    """The traceback lines that point into the student's file, innermost last."""
    lines = []
    for fs in traceback.extract_tb(exc.__traceback__):
        if fs.filename == student_file:
            lines.append(f"line {fs.lineno}, in {fs.name}: {(fs.line or '').strip()}")
    return lines[-3:]


def decimals_of(text):
    """Digits after the point in a plain decimal like '0.1234', else None (full precision)."""
    m = re.fullmatch(r"[-+]?\d*\.(\d+)", text)
    return len(m.group(1)) if m else None


def parse_printed_losses(text):
    """The losses printed as 'iteration: k, loss: v', and the fewest decimals any was printed
    with when all were rounded to a fixed number of decimals (so the grader can say so)."""
    losses, bad, decimals = [], None, []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = LOSS_LINE.match(line)
        if m is None:
            continue
        text = m.group(2).rstrip(",;")
        w = WRAPPED.match(text)
        number = w.group(1) if w else text
        try:
            losses.append(float(number))
            decimals.append(decimals_of(number))
        except ValueError:
            bad = bad or line.strip()[:80]
    if not losses:
        lines = [line.strip()[:80] for line in text.splitlines() if "iteration" in line.lower()]
        if bad or lines:
            example = bad or lines[0]
            raise StepError(
                "training returned None, and its printed lines are not 'iteration: k, loss: "
                f"<number>' (for example {example!r}); return the list of losses, or print one "
                "such line per update"
            )
        raise StepError(
            "training returned None and printed no 'iteration: k, loss: <number>' lines; "
            "return the list of mean losses, one after each update"
        )
    # repr gives up to 17 significant digits; 10 or more decimals on every line is no rounding.
    rounded = None if None in decimals else min(decimals)
    return losses, (rounded if rounded is not None and rounded < 10 else None)


class Runner:
    def __init__(self, job, channel):
        self.job = job
        self.out = channel
        self.student_file = job["submission"]
        self.X = np.asarray(job["x"], dtype=float)
        self.Y = np.asarray(job["y"], dtype=float)

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
        except (
            BaseException
        ) as e:  # noqa: BLE001 - student code may raise anything, even SystemExit
            where = student_frames(e, self.student_file)
            record.update(
                ok=False,
                error=f"{type(e).__name__}: {str(e)[:300]}",
                where=where,
                exception=type(e).__name__,
            )
        record["seconds"] = round(time.monotonic() - t0, 3)
        if printed.total:
            record["printed_chars"] = printed.total
        self.out.send(record)
        return record

    def load(self):
        spec = importlib.util.spec_from_file_location("submission", self.student_file)
        module = importlib.util.module_from_spec(spec)

        def run(_printed):
            spec.loader.exec_module(module)
            return None

        record = self.step("load", run)
        return module if record["ok"] else None

    def network(self, cls, net, weights):
        """An instance with the given weights: built by the student's __init__ when it works
        (methods may use other attributes it sets), else without it."""
        try:
            with contextlib.redirect_stdout(BoundedText()):
                obj = cls(*net["sizes"], self.job["seed"])
        except BaseException:  # noqa: BLE001 - a broken __init__ is graded by its own test
            obj = cls.__new__(cls)
        for attr, w in zip(net["attrs"], weights):
            setattr(obj, attr, np.array(w, dtype=float))
        return obj

    def method(self, obj, cls_name, name):
        m = getattr(obj, name, None)
        if not callable(m):
            raise StepError(f"class {cls_name} has no method {name}")
        return m

    def grade_net(self, module, net):
        name = net["class"]
        cls = getattr(module, name, None)
        steps = ["__init__", "Forward", "getLoss", "Backward", "training"]
        if not isinstance(cls, type):
            for s in steps:
                self.out.send(
                    {
                        "step": f"{name}.{s}",
                        "event": "end",
                        "ok": False,
                        "error": f"your file defines no class {name}",
                    }
                )
            return
        X, Y, ref = self.X, self.Y, net["weights"]
        attrs = net["attrs"]
        shapes = [tuple(np.shape(w)) for w in ref["initial"]]

        def init(_printed):
            obj = cls(*net["sizes"], self.job["seed"])
            out = []
            for attr, shape in zip(attrs, shapes):
                if not hasattr(obj, attr):
                    raise StepError(
                        f"after __init__, the network has no attribute {attr}; store the "
                        f"weights as self.{attr}, shape {shape} (out, in)"
                    )
                out.append(nested(as_array(getattr(obj, attr), f"self.{attr}", shape)))
            return out

        def forward(_printed):
            result = {}
            for point in ("trained", "mixed"):
                obj = self.network(cls, net, ref[point])
                f = self.method(obj, name, "Forward")
                n_out = shapes[-1][0]
                rows = [
                    nested(as_array(f(x.copy()), "Forward", f"({n_out},)").reshape(-1)) for x in X
                ]
                result[point] = rows
            return result

        def get_loss(_printed):
            obj = self.network(cls, net, ref["after_one_update"])
            return as_number(self.method(obj, name, "getLoss")(X.copy(), Y.copy()), "getLoss")

        def backward(_printed):
            result = {}
            for point in ("initial", "mixed"):
                obj = self.network(cls, net, ref[point])
                g = self.method(obj, name, "Backward")(X.copy(), Y.copy())
                if len(attrs) == 1:
                    result[point] = [nested(as_array(g, "Backward", shapes[0]))]
                    continue
                if not isinstance(g, (tuple, list)) or len(g) != len(attrs):
                    raise StepError(
                        f"Backward returned {describe(g)}; it should return a tuple of "
                        f"{len(attrs)} arrays ({', '.join('d' + a for a in attrs)}) of shapes "
                        f"{', '.join(str(s) for s in shapes)}"
                    )
                result[point] = [
                    nested(as_array(gk, f"Backward's d{a}", s))
                    for gk, a, s in zip(g, attrs, shapes)
                ]
            return result

        def training(printed):
            obj = self.network(cls, net, ref["initial"])
            epochs, lr = self.job["epochs"], self.job["learning_rate"]
            returned = self.method(obj, name, "training")(X.copy(), Y.copy(), epochs, lr)
            decimals = None
            if returned is None:
                losses, decimals = parse_printed_losses(printed.text())
            else:
                try:
                    losses = [float(v) for v in np.asarray(returned, dtype=float).reshape(-1)]
                except (TypeError, ValueError):
                    raise StepError(
                        f"training returned {describe(returned)}, not a list of losses"
                    ) from None
                if len(losses) > MAX_ELEMENTS:
                    raise StepError(f"training returned {len(losses)} losses; expected {epochs}")
            weights = []
            for attr, shape in zip(attrs, shapes):
                w = getattr(obj, attr, None)
                weights.append(None if w is None else nested(as_array(w, f"self.{attr}", shape)))
            return {"loss": losses, "weights": weights, "decimals": decimals}

        for s, fn in zip(steps, [init, forward, get_loss, backward, training]):
            self.step(f"{name}.{s}", fn)


def main(argv):
    if len(argv) != 3:
        print("usage: harness.py JOB.json OUT.jsonl", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        job = json.load(f)
    channel = Channel(argv[2])
    runner = Runner(job, channel)
    module = runner.load()
    if module is not None:
        for net in job["nets"]:
            runner.grade_net(module, net)
    channel.send({"event": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
