#!/usr/bin/env python3
"""CI: grade.py against the real backprop-server, on every submission in submissions/.

    BACKPROP_SERVER_BIN=target/debug/backprop-server python examples/grader/test_grader.py -v

Starts the server binary (BACKPROP_SERVER_BIN, default target/debug/backprop-server in this
repository) on a free port with a bearer token, runs grade.py as a course server would (a
subprocess writing results.json), and holds each submission to the table in README.md: full
marks for the correct ones; for each wrong one exactly the expected tests fail, each with the
hint a student needs in its output; the optional two-layer exercise scored as extra credit or
reported as not attempted; and no session is left behind.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections import deque

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SERVER_BIN = os.environ.get(
    "BACKPROP_SERVER_BIN", os.path.join(REPO, "target", "debug", "backprop-server")
)
TOKEN = "grader-ci-token"
# Generous for a loaded CI machine: a correct submission needs well under a second; loop.py
# needs all of it, so the suite takes about this long plus a few seconds.
TIME_LIMIT = 15

METHODS = ["__init__", "Forward", "getLoss", "Backward", "training"]
REQUIRED = [f"NN_1layer.{m}" for m in METHODS]
EXTRA = [f"NN_2layer.{m} (extra credit)" for m in METHODS]
NOT_ATTEMPTED = "NN_2layer (optional two-layer exercise, extra credit)"

# submission -> {test that must fail: substrings its output must contain}. Every other test
# must pass with full points. Files listed in NO_TWO_LAYER have no two-layer class: their
# exercise must be reported as not attempted, at no cost.
EXPECTED = {
    "correct.ipynb": {},
    "correct.py": {},
    "variations.py": {},
    "required_only.ipynb": {},
    "grad_mean.py": {
        "NN_1layer.Backward": ["dW[", "yours", "reference", "divided by 6, the number of samples"],
        "NN_1layer.training": ["first differs after update 1", "Backward fails above"],
        "NN_2layer.Backward (extra credit)": ["dW1[", "divided by 6, the number of samples"],
        "NN_2layer.training (extra credit)": [
            "first differs after update 1",
            "Backward fails above",
        ],
    },
    "sign.ipynb": {
        "NN_1layer.Backward": ["opposite sign", "(Y_hat - Y)^T X"],
        "NN_1layer.training": ["is inf", "Backward fails above"],
    },
    "flatten_order.py": {
        "NN_1layer.Forward": ["flattened column by column", "x.flatten() goes row by row"],
        "NN_1layer.getLoss": ["yours", "reference", "Forward fails above"],
        "NN_1layer.Backward": ["2nd and 3rd columns swapped", "row by row"],
        "NN_1layer.training": ["fail above"],
    },
    "lr_twice.py": {
        "NN_1layer.Backward": ["times the learning rate (0.0001)", "once"],
        "NN_1layer.training": ["learning rate 1e-08", "learning rate is applied twice"],
    },
    "double_step.py": {
        "NN_1layer.training": ["learning rate 0.0002", "applied twice per epoch"],
    },
    "relu_missing.py": {
        "NN_2layer.Backward (extra credit)": [
            "at weights of mixed sign",
            "dW1[",
            "ReLU derivative left out",
            "(Z1 > 0)",
        ],
    },
    "transposed.py": {
        "NN_1layer.__init__": ["[(4, 3)]", "[(3, 4)]", "transposed", "np.random.rand(3, 4)"],
        "NN_1layer.Forward": ["raised ValueError", "line ", "(out, in)"],
        "NN_1layer.getLoss": ["raised ValueError", "(out, in)"],
        "NN_1layer.Backward": ["transpose of the reference", "(out, in)"],
        "NN_1layer.training": ["raised ValueError", "(out, in)"],
    },
    "crash.py": {
        "NN_2layer.Forward (extra credit)": [
            "raised AttributeError",
            "'w_l2'",
            "line ",
            "self.W_l2",
        ],
        "NN_2layer.getLoss (extra credit)": ["raised AttributeError"],
        "NN_2layer.training (extra credit)": ["raised AttributeError"],
    },
    "loop.py": {
        "NN_2layer.training (extra credit)": ["time limit", "infinite loop"],
    },
    "garbage.py": {
        "NN_1layer.getLoss": ["returned 'about 21.03' (a str), not a number"],
        "NN_1layer.training": ["'iteration: 1, loss: about"],
    },
}
NO_TWO_LAYER = {"required_only.ipynb"}
# What the summary must say beyond the score.
SUMMARY = {
    "required_only.ipynb": ["not attempted", "code cell 5 raised AttributeError", "still ran"],
    "correct.ipynb": ["10 of 10 points on the required part", "Extra credit", "10 of 10"],
}

server = None
base_url = None
server_log = deque(maxlen=200)


def drain(stream):
    """Keeps reading the server's log, so a full pipe never blocks it; remembers the tail."""
    for raw in iter(stream.readline, b""):
        server_log.append(raw.decode("utf-8", "replace").rstrip())


def setUpModule():
    global server, base_url
    if not os.access(SERVER_BIN, os.X_OK):
        raise RuntimeError(
            f"no server binary at {SERVER_BIN}; build it with `cargo build`, or set "
            "BACKPROP_SERVER_BIN to its path"
        )
    env = dict(os.environ, NO_COLOR="1", RUST_LOG="info")
    server = subprocess.Popen(
        [SERVER_BIN, "--addr", "127.0.0.1:0", "--token", TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    threading.Thread(target=drain, args=(server.stdout,), daemon=True).start()
    deadline = time.monotonic() + 30
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    while time.monotonic() < deadline and base_url is None:
        for line in list(server_log):
            m = re.search(r"backprop-server listening.*\baddr=(\S+)", ansi.sub("", line))
            if m:
                base_url = f"http://{m.group(1)}"
                break
        if server.poll() is not None:
            break
        time.sleep(0.05)
    if base_url is None:
        server.kill()
        raise RuntimeError(
            "the server did not log 'backprop-server listening addr=...' within 30 s; its "
            "output:\n" + "\n".join(server_log)
        )


def tearDownModule():
    if server is not None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_grader(submission, *extra, token=TOKEN):
    """Runs grade.py as a course server would; returns (exit status, results.json, stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.json")
        args = [
            sys.executable,
            os.path.join(HERE, "grade.py"),
            submission,
            "--server",
            base_url,
            "--output",
            out,
            *extra,
        ]
        if token is not None:
            args += ["--token", token]
        env = {k: v for k, v in os.environ.items() if k not in ("BACKPROP_URL", "BACKPROP_TOKEN")}
        p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=TIME_LIMIT + 120)
        results = None
        if os.path.exists(out):
            with open(out, encoding="utf-8") as f:
                results = json.load(f)
        return p.returncode, results, p.stderr


def sessions_left():
    r = requests.get(
        f"{base_url}/sessions", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    r.raise_for_status()
    return r.json()["total"]


class GraderAgainstServer(unittest.TestCase):
    def assert_graded(self, name, results, expected, two_layer=True):
        self.assertIsNotNone(results, f"{name}: no results.json")
        tests = {t["name"]: t for t in results["tests"]}
        want_names = REQUIRED + (EXTRA if two_layer else [NOT_ATTEMPTED])
        self.assertEqual(sorted(tests), sorted(want_names), f"{name}: the set of tests")
        for t in results["tests"]:
            self.assertTrue(t["output"].strip(), f"{name}: {t['name']} has an empty output")
            if t["name"] == NOT_ATTEMPTED:
                self.assertEqual((t["score"], t["max_score"]), (0, 0), t)
                self.assertIn("not attempted", t["output"].lower())
                self.assertIn("costs nothing", t["output"])
                continue
            self.assertEqual(set(t), {"name", "score", "max_score", "status", "output"}, t["name"])
            self.assertIn(t["status"], ("passed", "failed"), t["name"])
            extra = t["name"] in EXTRA
            self.assertEqual(t["max_score"] == 0, extra, f"{name}: {t['name']} max_score")
        failed = sorted(n for n, t in tests.items() if t.get("status") == "failed")
        self.assertEqual(
            failed,
            sorted(expected),
            f"{name}: failing tests; outputs of the failures:\n"
            + "\n".join(f"  {n}: {tests[n]['output']}" for n in failed),
        )
        points = dict(METHOD_POINTS)
        for n, t in tests.items():
            if n == NOT_ATTEMPTED:
                continue
            method = n.split(".", 1)[1].split(" ")[0]
            want = points[method] if t["status"] == "passed" else 0
            self.assertEqual(t["score"], want, f"{name}: {n} scored {t['score']}")
        self.assertEqual(results["score"], sum(t["score"] for t in results["tests"]), name)
        required = sum(t["score"] for n, t in tests.items() if n in REQUIRED)
        self.assertEqual(results["extra_data"]["required_score"], required, name)
        self.assertEqual(results["extra_data"]["required_max"], 10, name)
        for n, hints in expected.items():
            for hint in hints:
                self.assertIn(hint, tests[n]["output"], f"{name}: {n}'s output lacks {hint!r}")

    def test_each_submission_fails_exactly_the_expected_tests(self):
        seen = sorted(
            f
            for f in os.listdir(os.path.join(HERE, "submissions"))
            if f.endswith((".py", ".ipynb"))
        )
        self.assertEqual(
            seen, sorted(EXPECTED), "every submission has an expectation, and only those"
        )
        self.assertTrue(any(f.endswith(".ipynb") for f in seen), "an .ipynb submission")
        for name, expected in EXPECTED.items():
            with self.subTest(submission=name):
                t0 = time.monotonic()
                code, results, stderr = run_grader(
                    os.path.join(HERE, "submissions", name), "--time-limit", str(TIME_LIMIT)
                )
                took = time.monotonic() - t0
                self.assertEqual(code, 0, f"{name}: grade.py exited {code}: {stderr}")
                self.assert_graded(name, results, expected, name not in NO_TWO_LAYER)
                if not expected:
                    self.assertEqual(results["extra_data"]["required_score"], 10, name)
                    want_extra = 0 if name in NO_TWO_LAYER else 10
                    self.assertEqual(results["extra_data"]["extra_credit"], want_extra, name)
                for words in SUMMARY.get(name, []):
                    self.assertIn(words, results["output"], f"{name}: the summary")
                # A hang is stopped at the limit, not waited out; nothing else comes near it.
                self.assertLess(took, TIME_LIMIT + 30, f"{name}: grading took {took:.1f} s")
                self.assertEqual(sessions_left(), 0, f"{name}: grade.py left sessions behind")

    def test_correct_solutions_get_full_marks_at_other_seeds(self):
        for name, seed in [
            ("correct.ipynb", "42"),
            ("correct.py", "4294967295"),
            ("variations.py", "1"),
        ]:
            with self.subTest(submission=name, seed=seed):
                code, results, stderr = run_grader(
                    os.path.join(HERE, "submissions", name), "--seed", seed, "--epochs", "30"
                )
                self.assertEqual(code, 0, stderr)
                self.assert_graded(f"{name} seed {seed}", results, {})
                self.assertEqual(results["score"], 20, f"{name} seed {seed}")

    def test_a_wrong_token_is_a_service_error_not_a_zero_for_the_student(self):
        code, results, stderr = run_grader(
            os.path.join(HERE, "submissions", "correct.py"), token="not-the-token"
        )
        self.assertEqual(code, 3, stderr)
        self.assertEqual(results["tests"], [])
        self.assertIn("not your fault", results["output"])
        self.assertIn("401", results["output"])


METHOD_POINTS = [("__init__", 1), ("Forward", 2), ("getLoss", 1), ("Backward", 3), ("training", 3)]


if __name__ == "__main__":
    unittest.main()
