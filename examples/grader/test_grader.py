#!/usr/bin/env python3
"""CI: grade.py against the real backprop-server, on every submission in submissions/.

    BACKPROP_SERVER_BIN=target/debug/backprop-server python examples/grader/test_grader.py -v

Starts the server binary (BACKPROP_SERVER_BIN, default target/debug/backprop-server in this
repository) on a free port with a bearer token, runs grade.py as a course server would (a
subprocess writing results.json), and holds each submission to the table in README.md: full
marks for the correct ones; for each wrong one exactly the expected tests fail, each with the
hint a student needs in its output; and no session is left behind.
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

NETS = ["NN_1layer", "NN_2layer"]
METHODS = ["__init__", "Forward", "getLoss", "Backward", "training"]
ALL_TESTS = [f"{n}.{m}" for n in NETS for m in METHODS]

# submission -> {test that must fail: substrings its output must contain}. Every other test
# must pass with full points.
EXPECTED = {
    "correct.py": {},
    "correct_loops.py": {},
    "grad_mean.py": {
        "NN_1layer.Backward": ["dW[", "yours", "reference", "divided by 6, the number of samples"],
        "NN_1layer.training": ["first differs after update 1", "Backward fails above"],
        "NN_2layer.Backward": ["dW1[", "divided by 6, the number of samples"],
        "NN_2layer.training": ["first differs after update 1", "Backward fails above"],
    },
    "relu_missing.py": {
        "NN_2layer.Backward": [
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
        "NN_1layer.Backward": ["raised ValueError", "(out, in)"],
        "NN_1layer.training": ["raised ValueError", "(out, in)"],
    },
    "crash.py": {
        "NN_2layer.Forward": ["raised AttributeError", "'w2'", "line ", "self.W2"],
    },
    "loop.py": {
        "NN_2layer.training": ["time limit", "infinite loop"],
    },
    "garbage.py": {
        "NN_1layer.getLoss": ["returned 'about 19.56' (a str), not a number"],
        "NN_1layer.training": ["not 'iteration: k, loss: <number>'", "'iteration: 1, loss: about"],
    },
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
    def assert_graded(self, name, results, expected):
        self.assertIsNotNone(results, f"{name}: no results.json")
        tests = {t["name"]: t for t in results["tests"]}
        self.assertEqual(sorted(tests), sorted(ALL_TESTS), f"{name}: the set of tests")
        for t in results["tests"]:
            self.assertEqual(set(t), {"name", "score", "max_score", "status", "output"}, t["name"])
            self.assertIn(t["status"], ("passed", "failed"), t["name"])
            self.assertTrue(t["output"].strip(), f"{name}: {t['name']} has an empty output")
        failed = sorted(n for n, t in tests.items() if t["status"] == "failed")
        self.assertEqual(
            failed,
            sorted(expected),
            f"{name}: failing tests; outputs of the failures:\n"
            + "\n".join(f"  {n}: {tests[n]['output']}" for n in failed),
        )
        for n, t in tests.items():
            want = t["max_score"] if t["status"] == "passed" else 0
            self.assertEqual(t["score"], want, f"{name}: {n} scored {t['score']}")
        self.assertEqual(results["score"], sum(t["score"] for t in results["tests"]), name)
        for n, hints in expected.items():
            for hint in hints:
                self.assertIn(hint, tests[n]["output"], f"{name}: {n}'s output lacks {hint!r}")

    def test_each_submission_fails_exactly_the_expected_tests(self):
        seen = sorted(f for f in os.listdir(os.path.join(HERE, "submissions")) if f.endswith(".py"))
        self.assertEqual(
            seen, sorted(EXPECTED), "every submission has an expectation, and only those"
        )
        for name, expected in EXPECTED.items():
            with self.subTest(submission=name):
                t0 = time.monotonic()
                code, results, stderr = run_grader(
                    os.path.join(HERE, "submissions", name), "--time-limit", str(TIME_LIMIT)
                )
                took = time.monotonic() - t0
                self.assertEqual(code, 0, f"{name}: grade.py exited {code}: {stderr}")
                self.assert_graded(name, results, expected)
                if name in ("correct.py", "correct_loops.py"):
                    self.assertEqual(results["score"], 20, name)
                # A hang is stopped at the limit, not waited out; nothing else comes near it.
                self.assertLess(took, TIME_LIMIT + 30, f"{name}: grading took {took:.1f} s")
                self.assertEqual(sessions_left(), 0, f"{name}: grade.py left sessions behind")

    def test_correct_solutions_get_full_marks_at_other_seeds(self):
        for name, seed in [
            ("correct.py", "42"),
            ("correct_loops.py", "4294967295"),
            ("correct.py", "1"),
        ]:
            with self.subTest(submission=name, seed=seed):
                code, results, stderr = run_grader(
                    os.path.join(HERE, "submissions", name), "--seed", seed, "--epochs", "30"
                )
                self.assertEqual(code, 0, stderr)
                self.assert_graded(f"{name} seed {seed}", results, {})

    def test_a_wrong_token_is_a_service_error_not_a_zero_for_the_student(self):
        code, results, stderr = run_grader(
            os.path.join(HERE, "submissions", "correct.py"), token="not-the-token"
        )
        self.assertEqual(code, 3, stderr)
        self.assertEqual(results["tests"], [])
        self.assertIn("not your fault", results["output"])
        self.assertIn("401", results["output"])


if __name__ == "__main__":
    unittest.main()
