#!/usr/bin/env python3
"""Writes the golden fixtures the core is checked against, by running the course notebook.

    python3 tests/golden/generate.py [NOTEBOOK]

NOTEBOOK is the course notebook's text export (`000_604ebaaa92069bce.txt`), or the folder
holding it; by default `../shared/seed` beside the repository. This script is run by hand
when the fixtures must change, never at build, test or run time: the numbers it writes are
committed next to it, and the tests read only those.

How the notebook is run. The export holds each code cell after an `In [n]:` line, followed by
the cell's printed output and the next markdown cell. A cell's code is the longest run of its
lines that parses as Python, less trailing statements that are bare literals (a printed
`(6, 2, 2)` parses as a tuple); `notebook_cells` asserts what it finds. The cells then run in
order in one namespace, as Jupyter runs them: the first defines `Softmax`, `CELoss`, `X`, `Y`
(its printed shapes are checked against the export's), the second `NN_1layer` with the
`Backward` the notebook's answer shows, and trains a network at the top level, which we run
once per seed after `np.random.seed(S)`, keeping what it prints; the third defines `ReLU`
and `dReLU`.

The cases:
- `1layer_seed{S}`: the notebook's own class and top-level code, for several seeds. `printed`
  holds the lines the cell printed (`iteration: k, loss: v`), `loss_history` those numbers.
- `2layer_*`: the optional exercise, which the notebook leaves to the student. `NN_2layer`
  below is its natural extension built on the notebook's own `NN_1layer`, `Softmax`, `CELoss`,
  `ReLU` and `dReLU` (`W_l1` (4, 4) then `W_l2` (3, 4) from one stream). With
  `np.random.rand` weights and the notebook's pixels every hidden pre-activation is
  positive, so one case starts from Xavier weights of mixed sign, and the generator asserts
  that its ReLU mask really cuts (some pre-activations <= 0, at the start and in training).
- bias, mean reduction, sigmoid/tanh, xavier/he, deeper and larger nets: settings the
  notebook has no code for. They run `Net` below, a vectorised NumPy version of the same
  algebra, which is first checked against the notebook's own classes on their cases.

Floats go through json.dump, which writes repr(float): the shortest string that reads back to
the same double, so every f64 survives bit for bit (checked by reading each file back).
"""

import ast
import contextlib
import io
import json
import math
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_NOTEBOOK = os.path.join(os.path.dirname(REPO), "shared", "seed")
NOTEBOOK_NAME = "000_604ebaaa92069bce.txt"

CLASS_NAMES = ["cat", "dog", "ship"]
PRINTED = re.compile(r"iteration: (\d+), loss: (\S+)")


# ---------------------------------------------------------------------------------------
# The notebook, read from its export and run.


def notebook_path(arg):
    path = arg or DEFAULT_NOTEBOOK
    if os.path.isdir(path):
        path = os.path.join(path, NOTEBOOK_NAME)
    if not os.path.isfile(path):
        raise SystemExit(
            f"generate.py: no notebook export at {path}; pass its path (the course notebook "
            f"{NOTEBOOK_NAME}) as the first argument"
        )
    return path


def is_printed_output(stmt):
    """A bare literal statement, like the `(6, 2, 2)` a cell printed: output, not code."""
    if not isinstance(stmt, ast.Expr):
        return False
    try:
        ast.literal_eval(stmt.value)
    except ValueError:
        return False
    return True


def notebook_cells(path):
    """[(label, source, text after the code)] for every code cell of the export, in order."""
    lines = open(path, encoding="utf-8").read().split("\n")
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"In \[[^\]]*\]:\s*", line)]
    cells = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        block = lines[start + 1 : end]
        # The longest prefix that parses: markdown prose and printed lines stop it.
        for k in range(len(block), -1, -1):
            try:
                tree = ast.parse("\n".join(block[:k]))
                break
            except SyntaxError:
                continue
        body = list(tree.body)
        while body and is_printed_output(body[-1]):
            body.pop()
        code_end = body[-1].end_lineno if body else 0
        cells.append((lines[start], "\n".join(block[:code_end]), "\n".join(block[code_end:])))
    return cells


def run_cell(source, namespace):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<notebook cell>", "exec"), namespace)
    return out.getvalue()


def load_notebook(path):
    """Runs the notebook's definition cells; returns its namespace and the training cell."""
    cells = notebook_cells(path)
    labels = [label for label, _, _ in cells]
    assert len(cells) == 4, f"expected the notebook's 4 code cells, found {labels}"
    (_, data_src, data_after), (_, class_src, _), (_, relu_src, _), (_, blank, _) = cells
    assert blank.strip() == "", "the last cell is the exercise's empty answer cell"
    assert "class NN_1layer" in class_src and "def Backward(self, Y_hat, X, Y)" in class_src
    assert "up = Y_hat - Y" in class_src, "the notebook's Backward answer"
    assert "def dReLU" in relu_src

    nb = {"__name__": "notebook"}
    printed = run_cell(data_src, nb)
    # The export shows what the data cell printed; our run must print the same.
    shown = data_after.strip().split("\n\n")[0]
    assert printed.strip() == shown, f"data cell printed {printed!r}, the export shows {shown!r}"
    for name in ["Softmax", "CELoss", "X", "Y"]:
        assert name in nb, f"the data cell defines no {name}"
    # The class cell once, so that the namespace holds NN_1layer as Jupyter's would after it
    # (its top-level training run is repeated per seed by notebook_run).
    np.random.seed(0)
    run_cell(class_src, nb)
    run_cell(relu_src, nb)
    return nb, class_src


def parse_printed(text, epochs):
    """The `iteration: k, loss: v` lines, checked to be exactly k = 1..epochs."""
    lines = text.strip().split("\n")
    assert len(lines) == epochs, f"{len(lines)} printed lines, expected {epochs}"
    values = []
    for k, line in enumerate(lines, 1):
        m = PRINTED.fullmatch(line)
        assert m and int(m.group(1)) == k, f"printed line {k} is {line!r}"
        values.append(float(m.group(2)))
        # What the notebook prints is Python's repr of the float (checked, not assumed).
        assert m.group(2) == repr(values[-1]), line
    return lines, values


def notebook_run(nb, class_src, seed, epochs=100):
    """The training cell as the notebook has it, after np.random.seed(seed): its top-level
    `NN_1layer()` and `training(X, Y)` run, and what it prints is kept."""
    assert epochs == 100, "the cell trains with training's default n_epoch=100"
    ns = dict(nb)
    np.random.seed(seed)
    lines, history = parse_printed(run_cell(class_src, ns), epochs)
    return ns, lines, history, ns["my_NeuralNet"]


def make_2layer(nb):
    """The optional exercise, as a student who finished it would write it: the notebook's
    NN_1layer with a hidden layer, built from the notebook's own functions."""
    base, ReLU, dReLU = nb["NN_1layer"], nb["ReLU"], nb["dReLU"]

    class NN_2layer(base):
        def __init__(self, **kwargs):
            self.W_l1 = np.random.rand(4, 4)
            self.W_l2 = np.random.rand(3, 4)
            self.activation = nb["Softmax"]
            self.Loss = nb["CELoss"]
            self.learning_rate = 0.0001

        def Forward(self, X):
            Y_hat = []
            for x in X:
                h = ReLU(np.matmul(self.W_l1, x.flatten()))
                Y_hat.append(self.activation(np.matmul(self.W_l2, h)))
            return Y_hat

        def Backward(self, Y_hat, X, Y):
            up = Y_hat - Y
            local = X.reshape(-1, 4)
            Z1 = np.matmul(local, self.W_l1.T)
            H = ReLU(Z1)
            dW2 = np.matmul(up.T, H)
            dZ1 = np.matmul(up, self.W_l2) * dReLU(Z1)
            dW1 = np.matmul(dZ1.T, local)
            return dW1, dW2

        def training(self, X, Y, n_epoch=100):
            for k in range(n_epoch):
                dW1, dW2 = self.Backward(self.Forward(X), X, Y)
                self.W_l1 = self.W_l1 - dW1 * self.learning_rate
                self.W_l2 = self.W_l2 - dW2 * self.learning_rate
                print(f"iteration: {k + 1}, loss: {self.getLoss(X, Y)}")

        def pre_activations(self, X):
            return np.matmul(X.reshape(-1, 4), self.W_l1.T)

    return NN_2layer


# ---------------------------------------------------------------------------------------
# The general case, vectorised: any depth, activation, bias and reduction.


def init_weights(method, seed, layers):
    """np.random.seed(seed), then one draw per layer from the same stream."""
    np.random.seed(seed)
    ws = []
    for n_in, n_out in zip(layers[:-1], layers[1:]):
        if method == "numpy_rand":
            ws.append(np.random.rand(n_out, n_in))
        elif method == "xavier":
            a = math.sqrt(6.0 / (n_in + n_out))
            ws.append(np.random.uniform(-a, a, (n_out, n_in)))
        elif method == "he":
            a = math.sqrt(6.0 / n_in)
            ws.append(np.random.uniform(-a, a, (n_out, n_in)))
        else:
            raise ValueError(method)
    return ws


ACT = {
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(np.float64)),
    "sigmoid": (lambda z: 1.0 / (1.0 + np.exp(-z)), lambda z, a: a * (1.0 - a)),
    "tanh": (np.tanh, lambda z, a: 1.0 - a * a),
}


class Net:
    def __init__(self, layers, activation, bias, reduction, lr, weights, dtype=np.float64):
        self.f, self.df = ACT[activation]
        self.W = [w.astype(dtype) for w in weights]
        self.b = [np.zeros(w.shape[0], dtype=dtype) for w in weights] if bias else None
        self.reduction = reduction
        self.lr = dtype(lr)

    def forward(self, X):
        A, Z = [X], []
        for k, W in enumerate(self.W):
            z = np.matmul(A[-1], W.T)
            if self.b is not None:
                z = z + self.b[k]
            Z.append(z)
            if k < len(self.W) - 1:
                A.append(self.f(z))
        last = Z[-1]
        # Softmax per row with the row max subtracted, as the notebook's Softmax.
        e = np.exp(last - np.max(last, axis=1, keepdims=True))
        P = e / np.sum(e, axis=1, keepdims=True)
        return A, Z, P

    def loss(self, X, Y):
        _, _, P = self.forward(X)
        return np.mean(-np.sum(Y * np.log(P), axis=1))

    def gradients(self, X, Y):
        A, Z, P = self.forward(X)
        D = P - Y
        if self.reduction == "mean":
            D = D / len(X)
        gW, gb = [None] * len(self.W), [None] * len(self.W)
        for k in reversed(range(len(self.W))):
            gW[k] = np.matmul(D.T, A[k])
            gb[k] = np.sum(D, axis=0)
            if k > 0:
                D = np.matmul(D, self.W[k]) * self.df(Z[k - 1], A[k])
        return gW, (gb if self.b is not None else None)

    def step(self, X, Y):
        gW, gb = self.gradients(X, Y)
        for k in range(len(self.W)):
            self.W[k] -= self.lr * gW[k]
            if gb is not None:
                self.b[k] -= self.lr * gb[k]


# ---------------------------------------------------------------------------------------


def floats(a):
    """Nested lists of Python floats (json.dump then writes each as its repr)."""
    if a is None:
        return None
    if isinstance(a, list):
        return [floats(v) for v in a]
    return np.asarray(a, dtype=np.float64).tolist()


def check_finite(name, *arrays):
    for a in arrays:
        if a is None:
            continue
        for v in a if isinstance(a, list) else [a]:
            if not np.all(np.isfinite(v)):
                raise SystemExit(f"{name}: a non-finite value; the case is not a usable fixture")


class Data:
    """The notebook's X (6, 2, 2) and Y (6, 3), as arrays and as the fixture writes them."""

    def __init__(self, nb):
        self.X = np.asarray(nb["X"])
        self.Y = np.asarray(nb["Y"])
        assert self.X.shape == (6, 2, 2) and self.Y.shape == (6, 3)
        self.x = self.X.astype(np.float64)
        self.y = self.Y.astype(np.float64)
        self.flat = self.x.reshape(len(self.x), -1)


def notebook_1layer_case(nb, class_src, data, seed):
    """The notebook's own cell, for one seed."""
    name = f"1layer_seed{seed}"
    ns, printed, history, trained = notebook_run(nb, class_src, seed)
    np.random.seed(seed)
    net = ns["NN_1layer"]()
    w0 = net.W_l1.copy()
    loss0 = net.getLoss(data.X, data.Y)
    grad = net.Backward(net.Forward(data.X), data.X, data.Y)
    P = np.array(trained.Forward(data.X))
    check_against_vectorised(name, data, [4, 3], seed, [w0], [grad], history, [trained.W_l1])
    c = case_dict(
        name,
        "notebook",
        [4, 3],
        {"method": "numpy_rand", "seed": seed},
        "relu",
        False,
        "sum",
        trained.learning_rate,
        100,
        [w0],
        None,
        loss0,
        [grad],
        None,
        history,
        [trained.W_l1],
        None,
        P,
    )
    c["printed"] = printed
    c["extended_precision_rel_diff"] = extended_precision_diff(data.flat, data.y, c)
    return c


def notebook_2layer_case(nb, data, name, init, epochs=100, need_relu_cut=False):
    """The exercise's natural extension (see make_2layer), from numpy_rand or xavier weights."""
    NN_2layer = make_2layer(nb)
    np.random.seed(init["seed"])
    net = NN_2layer()
    if init["method"] != "numpy_rand":
        net.W_l1, net.W_l2 = init_weights(init["method"], init["seed"], [4, 4, 3])
    w0 = [net.W_l1.copy(), net.W_l2.copy()]
    loss0 = net.getLoss(data.X, data.Y)
    grads = list(net.Backward(net.Forward(data.X), data.X, data.Y))
    cut = [int(np.sum(net.pre_activations(data.X) <= 0))]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for _ in range(epochs):
            net.training(data.X, data.Y, n_epoch=1)
            cut.append(int(np.sum(net.pre_activations(data.X) <= 0)))
    # training(n_epoch=1) numbers each line 1; renumber as one run of `epochs` updates.
    text = "\n".join(
        re.sub(r"^iteration: 1,", f"iteration: {k},", line)
        for k, line in enumerate(out.getvalue().strip().split("\n"), 1)
    )
    printed, history = parse_printed(text, epochs)
    if need_relu_cut:
        # The point of this case: the ReLU derivative must matter, at the start and while
        # training, or a Backward without it would pass.
        assert cut[0] > 0 and min(cut) > 0, f"{name}: ReLU inputs <= 0 per epoch: {cut}"
    P = np.array(net.Forward(data.X))
    weights = [net.W_l1, net.W_l2]
    check_against_vectorised(name, data, [4, 4, 3], init, w0, grads, history, weights)
    c = case_dict(
        name,
        "notebook_extension",
        [4, 4, 3],
        init,
        "relu",
        False,
        "sum",
        net.learning_rate,
        epochs,
        w0,
        None,
        loss0,
        grads,
        None,
        history,
        weights,
        None,
        P,
    )
    c["printed"] = printed
    c["relu_inputs_cut"] = {
        "initial": cut[0],
        "min_over_training": min(cut),
        "of": int(data.x.shape[0] * 4),
    }
    c["extended_precision_rel_diff"] = extended_precision_diff(data.flat, data.y, c)
    return c


def check_against_vectorised(name, data, layers, init, w0, grads, history, final):
    """`Net` must reproduce the notebook's code on its own cases before it writes any other."""
    if not isinstance(init, dict):
        init = {"method": "numpy_rand", "seed": init}
    ref = Net(
        layers, "relu", False, "sum", 0.0001, init_weights(init["method"], init["seed"], layers)
    )
    assert all(np.array_equal(a, b) for a, b in zip(ref.W, w0)), name
    rg, _ = ref.gradients(data.flat, data.y)
    scale = max(float(np.max(np.abs(g))) for g in grads)
    for a, b in zip(rg, grads):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12 * scale), name
    got = []
    for _ in range(len(history)):
        ref.step(data.flat, data.y)
        got.append(ref.loss(data.flat, data.y))
    assert np.allclose(got, history, rtol=1e-10, atol=0), name
    assert all(np.allclose(a, b, rtol=1e-10, atol=0) for a, b in zip(ref.W, final)), name


def run_vectorised(X, Y, layers, init, activation, bias, reduction, lr, epochs, dtype):
    w0 = init_weights(init["method"], init["seed"], layers)
    net = Net(layers, activation, bias, reduction, lr, w0, dtype)
    X, Y = X.astype(dtype), Y.astype(dtype)
    initial_b = [b.copy() for b in net.b] if bias else None
    initial_loss = net.loss(X, Y)
    gW, gb = net.gradients(X, Y)
    history = []
    for _ in range(epochs):
        net.step(X, Y)
        history.append(net.loss(X, Y))
    _, _, P = net.forward(X)
    return (w0, initial_b, initial_loss, gW, gb, history, net.W, net.b, P)


def general_case(X, Y, name, layers, init, activation, bias, reduction, lr, epochs):
    """Vectorised NumPy (no notebook code exists for these settings); X is (M, n_in)."""
    out = run_vectorised(X, Y, layers, init, activation, bias, reduction, lr, epochs, np.float64)
    c = case_dict(name, "vectorised", layers, init, activation, bias, reduction, lr, epochs, *out)
    c["extended_precision_rel_diff"] = ext = extended_precision_diff(X, Y, c)
    # These cases are ours to choose: keep only trajectories whose digits are determined well
    # below the tests' 1e-9, so a harmless change of summation order cannot fail them.
    d = max(v for k, v in ext.items() if k != "initial_gradients")
    if d > 1e-11:
        raise SystemExit(
            f"{name}: f64 and extended precision differ by {d:.1e}; "
            "pick a better-conditioned case (another seed or a smaller rate)"
        )
    return c


def extended_precision_diff(X, Y, case):
    """Per quantity, the worst elementwise relative difference between the case's f64
    numbers and the same computation in x87 extended precision (np.longdouble, 64-bit
    mantissa): how many digits of the case are determined at all.

    Initial gradients can be poorly determined on the notebook's data: an entry built from
    p - 1 with p within 1e-12 of 1 keeps only a few digits, in NumPy as in any f64 code. Two
    f64 implementations still agree there when both round p alike (ours does: the golden
    test checks those entries at 1e-9 too), but a reader of a failure should know."""
    ld = run_vectorised(
        X,
        Y,
        case["layers"],
        case["init"],
        case["activation"],
        case["bias"],
        case["grad_reduction"],
        case["learning_rate"],
        case["epochs"],
        np.longdouble,
    )
    _, _, loss0, gW, gb, history, W, b, P = ld
    groups = {
        "initial_loss": [(case["initial_loss"], loss0)],
        "initial_gradients": [
            (case["initial_gradients"]["weights"], gW),
            (case["initial_gradients"]["biases"], gb),
        ],
        "loss_history": [(case["loss_history"], history)],
        "final_parameters": [(case["final_weights"], W), (case["final_biases"], b)],
        "final_probabilities": [(case["final_probabilities"], P)],
    }
    out = {}
    for name, pairs in groups.items():
        worst = 0.0
        for f64, ext in pairs:
            if f64 is None:
                continue
            for a, e in zip(flatten(f64), flatten(ext)):
                if a != e:
                    worst = max(worst, float(abs(a - e) / max(abs(a), abs(e))))
        out[name] = worst
    return out


def flatten(v):
    if isinstance(v, (list, tuple)):
        return [x for item in v for x in flatten(item)]
    if isinstance(v, np.ndarray):
        return list(v.ravel())
    return [v]


def case_dict(
    name,
    implementation,
    layers,
    init,
    activation,
    bias,
    reduction,
    lr,
    epochs,
    w0,
    b0,
    loss0,
    gW,
    gb,
    history,
    w1,
    b1,
    P,
):
    check_finite(name, loss0, history, *w1, *gW, P)
    return {
        "name": name,
        "layers": layers,
        "init": init,
        "activation": activation,
        "bias": bias,
        "grad_reduction": reduction,
        "learning_rate": lr,
        "epochs": epochs,
        "initial_weights": floats(list(w0)),
        "initial_biases": floats(list(b0)) if b0 is not None else None,
        "initial_loss": float(loss0),
        "initial_gradients": {
            "weights": floats(list(gW)),
            "biases": floats(list(gb)) if gb is not None else None,
        },
        "loss_history": [float(v) for v in history],
        "final_weights": floats(list(w1)),
        "final_biases": floats(list(b1)) if b1 is not None else None,
        "final_probabilities": floats(P),
        "final_classes": [int(c) for c in np.argmax(P, axis=1)],
        "implementation": implementation,
    }


def doc(dataset, cases, note, source):
    return {
        "generator": "tests/golden/generate.py",
        "notebook": source,
        "numpy_version": np.__version__,
        "note": note,
        "dataset": dataset,
        "cases": cases,
    }


def nr(seed):
    return {"method": "numpy_rand", "seed": seed}


NOTEBOOK_SEEDS = [0, 1, 7, 42, 123, 2024, 4294967295]


def notebook_json(nb, class_src, data, source):
    cases = [notebook_1layer_case(nb, class_src, data, s) for s in NOTEBOOK_SEEDS]
    cases += [notebook_2layer_case(nb, data, f"2layer_seed{s}", nr(s)) for s in [0, 1, 42]]
    cases.append(
        notebook_2layer_case(
            nb,
            data,
            "2layer_xavier_seed3_relu_cut",
            {"method": "xavier", "seed": 3},
            need_relu_cut=True,
        )
    )
    X, Y = data.flat, data.y
    cases += [
        general_case(X, Y, "1layer_bias_seed0", [4, 3], nr(0), "relu", True, "sum", 0.0001, 100),
        general_case(X, Y, "1layer_mean_seed1", [4, 3], nr(1), "relu", False, "mean", 0.001, 100),
        general_case(
            X, Y, "2layer_mean_bias_seed0", [4, 4, 3], nr(0), "relu", True, "mean", 0.0001, 100
        ),
        general_case(
            X,
            Y,
            "4layer_relu_bias_mean_xavier_seed3",
            [4, 8, 8, 8, 3],
            {"method": "xavier", "seed": 3},
            "relu",
            True,
            "mean",
            0.0001,
            100,
        ),
        general_case(
            X,
            Y,
            "2layer_he_seed5",
            [4, 6, 3],
            {"method": "he", "seed": 5},
            "relu",
            False,
            "sum",
            0.0001,
            100,
        ),
    ]
    dataset = {"x": data.X.tolist(), "y": data.Y.tolist(), "class_names": CLASS_NAMES}
    return doc(dataset, cases, "the notebook's X and Y, as the notebook uses them", source)


def variants_json(data, source):
    """Sigmoid and tanh on the raw pixels (-10..240) saturate: every hidden unit sits at 0 or
    1, the derivatives are ~1e-80, and the cases would test nothing but rounding. So these
    run on the notebook's X divided by 255 (written out in full in the file)."""
    xs = data.x / 255.0
    X, Y = xs.reshape(len(xs), -1), data.y
    cases = [
        general_case(
            X, Y, "2layer_sigmoid_seed0", [4, 4, 3], nr(0), "sigmoid", False, "sum", 0.5, 100
        ),
        general_case(
            X, Y, "2layer_sigmoid_bias_seed42", [4, 5, 3], nr(42), "sigmoid", True, "sum", 0.5, 100
        ),
        general_case(X, Y, "2layer_tanh_seed1", [4, 4, 3], nr(1), "tanh", False, "sum", 0.1, 100),
        general_case(
            X,
            Y,
            "2layer_tanh_bias_mean_seed4294967295",
            [4, 4, 3],
            nr(4294967295),
            "tanh",
            True,
            "mean",
            0.5,
            100,
        ),
        general_case(
            X,
            Y,
            "3layer_tanh_bias_mean_xavier_seed7",
            [4, 6, 5, 3],
            {"method": "xavier", "seed": 7},
            "tanh",
            True,
            "mean",
            0.5,
            100,
        ),
        general_case(
            X,
            Y,
            "3layer_sigmoid_he_seed4294967295",
            [4, 8, 6, 3],
            {"method": "he", "seed": 4294967295},
            "sigmoid",
            False,
            "sum",
            0.5,
            100,
        ),
        general_case(
            X, Y, "3layer_relu_bias_seed2", [4, 5, 4, 3], nr(2), "relu", True, "sum", 0.05, 100
        ),
    ]
    dataset = {"x": floats(xs), "y": data.Y.tolist(), "class_names": CLASS_NAMES}
    return doc(
        dataset,
        cases,
        "the notebook's X divided by 255, so sigmoid and tanh do not saturate",
        source,
    )


def large_json():
    """Nets big enough that every product takes linalg's gemm path (more than 4096
    multiply-adds; [64, 20, 12, 10]'s smallest is 80 x 12 x 10 = 9600), on data drawn from the
    legacy stream so the test can redraw it bit for bit instead of reading it:
    np.random.seed(S); x = np.random.rand(M, n_in); y = j % n_out."""
    S, M, n_in, n_out = 2024, 80, 64, 10
    np.random.seed(S)
    X = np.random.rand(M, n_in)
    Y = np.eye(n_out)[np.arange(M) % n_out]
    cases = [
        general_case(
            X,
            Y,
            "gemm_relu_bias_mean_xavier",
            [64, 16, 10],
            {"method": "xavier", "seed": 11},
            "relu",
            True,
            "mean",
            0.5,
            30,
        ),
        general_case(
            X,
            Y,
            "gemm_tanh_sum_he",
            [64, 20, 12, 10],
            {"method": "he", "seed": 12},
            "tanh",
            False,
            "sum",
            0.002,
            30,
        ),
    ]
    return {
        "generator": "tests/golden/generate.py",
        "numpy_version": np.__version__,
        "note": "the dataset is not written out: draw it as 'generated' says",
        "dataset": {
            "generated": {
                "method": "numpy_rand",
                "seed": S,
                "samples": M,
                "features": n_in,
                "classes": n_out,
                "labels": "class j % classes for sample j",
            }
        },
        "cases": cases,
    }


def init_json():
    cases = []
    plan = [
        ("numpy_rand", [4, 3], [0, 1, 42, 12345, 2147483648, 4294967295]),
        ("numpy_rand", [4, 4, 3], [0, 1, 42, 4294967295]),
        ("numpy_rand", [1, 1], [0, 4294967295]),
        ("numpy_rand", [3, 7, 2, 5], [5]),
        # 30*20 + 20*10 = 800 doubles = 1600 32-bit draws: more than the 624-word state,
        # so the generator's twist (regenerating the state) runs, twice.
        ("numpy_rand", [30, 20, 10], [0, 4294967295]),
        ("xavier", [4, 3], [0, 4294967295]),
        ("xavier", [4, 4, 3], [1]),
        ("xavier", [30, 20, 10], [42]),
        ("he", [4, 3], [0, 4294967295]),
        ("he", [4, 4, 3], [1]),
        ("he", [30, 20, 10], [42]),
    ]
    for method, layers, seeds in plan:
        for seed in seeds:
            ws = init_weights(method, seed, layers)
            cases.append(
                {
                    "name": f"{method}_{'x'.join(map(str, layers))}_seed{seed}",
                    "method": method,
                    "seed": seed,
                    "layers": layers,
                    "weights": floats(ws),
                }
            )
    return {
        "generator": "tests/golden/generate.py",
        "numpy_version": np.__version__,
        "cases": cases,
    }


def pyrepr_json():
    """Python's repr of floats, for `GET /loss?format=text`, which writes the notebook's
    `iteration: k, loss: v` lines as Python prints them: the edges of the fixed/exponent
    switch, subnormals, the extremes, and a spread of ordinary losses."""
    values = [
        0.0,
        1.0,
        2.0,
        0.5,
        0.1,
        1e-4,
        0.0001234,
        9.999999999999999e-05,
        1e-5,
        1.5e-5,
        1e-7,
        5e-324,
        2.2250738585072014e-308,
        1e-300,
        1e15,
        1e16,
        9999999999999998.0,
        1.2345678901234567e16,
        123456789012345.6,
        1.7976931348623157e308,
        1e22,
        1e21,
        55.125733648070806,
        0.052075476650793144,
        3.0e-05,
        4.9e-324,
        1 / 3,
        2 / 3,
        100.0,
        123456.789,
        0.30000000000000004,
    ]
    np.random.seed(7)
    values += [float(v) for v in np.exp(np.random.uniform(-40, 40, 40))]
    return {
        "generator": "tests/golden/generate.py",
        "python": sys.version.split()[0],
        "cases": [{"value": v, "repr": repr(v)} for v in values],
    }


def write(name, document):
    path = os.path.join(HERE, name)
    with open(path, "w") as f:
        json.dump(document, f, separators=(",", ":"))
        f.write("\n")
    # Guard the bit-for-bit promise: reading the file back gives the same doubles.
    with open(path) as f:
        assert json.load(f) == document, f"{name} does not round-trip"
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(document['cases'])} cases)")


def main(argv):
    path = notebook_path(argv[1] if len(argv) > 1 else None)
    source = os.path.basename(path)
    nb, class_src = load_notebook(path)
    data = Data(nb)
    write("notebook.json", notebook_json(nb, class_src, data, source))
    write("variants.json", variants_json(data, source))
    write("init.json", init_json())
    write("large.json", large_json())
    write("pyrepr.json", pyrepr_json())


if __name__ == "__main__":
    main(sys.argv)
