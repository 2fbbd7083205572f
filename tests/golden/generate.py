#!/usr/bin/env python3
"""Writes the golden fixtures the core is checked against: notebook.json and init.json.

Run from the repository root:  python3 tests/golden/generate.py

The notebook cases run the course notebook's own code (its Softmax, CELoss, per-sample
Forward, the (P - Y)^T X Backward summed over samples, W -= lr * dW, the mean loss printed
after each update). The other cases (bias, sigmoid/tanh, mean reduction, deeper nets,
xavier/he starts) have no notebook code to copy, so they run a vectorised NumPy version of
the same algebra, `Net` below; it is checked against the notebook classes on the notebook
cases before anything is written.

Floats go through json.dump, which writes repr(float): the shortest string that reads back
to the same double, so every f64 survives bit for bit.
"""

import json
import math
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# The notebook's dataset, cat-dog-ship: six 2x2 images, classes cat=0, dog=1, ship=2.
X_RAW = [[[56, 231], [24, 1]], [[120, 30], [24, 0]], [[2, 5], [210, 190]],
         [[60, 220], [30, 2]], [[130, 40], [20, 3]], [[4, 10], [200, 180]]]
Y_RAW = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
CLASS_NAMES = ["cat", "dog", "ship"]

x = np.array(X_RAW, dtype=np.float64)
y = np.array(Y_RAW, dtype=np.float64)


# ---------------------------------------------------------------------------------------
# The notebook's code.

class Softmax:
    def forward(self, z):
        # The row max is subtracted so the two-layer cases do not overflow: their logits
        # reach the hundreds, and exp(800) is inf. Mathematically it changes nothing.
        e = np.exp(z - np.max(z))
        return e / np.sum(e)


class CELoss:
    def forward(self, p, t):
        return -np.sum(t * np.log(p))


class NN_1layer:
    """x -> Linear(4,3) -> Softmax -> CE, weights np.random.rand(3, 4)."""

    def __init__(self, seed, lr=0.0001):
        np.random.seed(seed)
        self.W = np.random.rand(3, 4)
        self.lr = lr
        self.softmax = Softmax()
        self.ce = CELoss()

    def Forward(self, xi):
        return self.softmax.forward(np.matmul(self.W, xi.flatten()))

    def predict(self, xs):
        return np.array([self.Forward(xi) for xi in xs])

    def loss(self, xs, ys):
        return np.mean([self.ce.forward(self.Forward(xi), yi) for xi, yi in zip(xs, ys)])

    def Backward(self, xs, ys):
        P = self.predict(xs)
        X = xs.reshape(len(xs), -1)
        # (P - Y)^T X: the SUM over samples of (p - y) x^T.
        return np.matmul((P - ys).T, X)

    def step(self, xs, ys):
        dW = self.Backward(xs, ys)
        self.W -= self.lr * dW


class NN_2layer:
    """The exercise: x -> Linear(4,4) -> ReLU -> Linear(4,3) -> Softmax -> CE."""

    def __init__(self, seed, lr=0.0001):
        np.random.seed(seed)
        self.W1 = np.random.rand(4, 4)
        self.W2 = np.random.rand(3, 4)
        self.lr = lr
        self.softmax = Softmax()
        self.ce = CELoss()

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
        self.W1 -= self.lr * dW1
        self.W2 -= self.lr * dW2


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
        for v in (a if isinstance(a, list) else [a]):
            if not np.all(np.isfinite(v)):
                raise SystemExit(f"{name}: a non-finite value; the case is not a usable fixture")


def notebook_case(name, layers, seed, epochs=100):
    net = NN_1layer(seed) if layers == [4, 3] else NN_2layer(seed)
    params = (lambda: [net.W]) if layers == [4, 3] else (lambda: [net.W1, net.W2])
    initial = [w.copy() for w in params()]
    initial_loss = net.loss(x, y)
    g = net.Backward(x, y)
    grads = [g] if layers == [4, 3] else list(g)
    history = []
    for k in range(epochs):
        net.step(x, y)
        loss = net.loss(x, y)
        history.append(loss)
        # What the notebook prints; not shown, kept for the reader of this script:
        # print(f"iteration: {k + 1}, loss: {loss}")
    P = net.predict(x)

    # Self-check: the vectorised Net must reproduce the notebook's code on its own cases.
    ref = Net(layers, "relu", False, "sum", 0.0001, init_weights("numpy_rand", seed, layers))
    assert all(np.array_equal(a, b) for a, b in zip(ref.W, initial)), name
    rg, _ = ref.gradients(x.reshape(6, -1), y)
    assert all(np.allclose(a, b, rtol=1e-12, atol=0) for a, b in zip(rg, grads)), name
    for k in range(epochs):
        ref.step(x.reshape(6, -1), y)
    assert all(np.allclose(a, b, rtol=1e-10, atol=0) for a, b in zip(ref.W, params())), name

    c = case_dict(name, "notebook", layers, {"method": "numpy_rand", "seed": seed}, "relu",
                     False, "sum", 0.0001, epochs, initial, None, initial_loss, grads, None,
                     history, params(), None, P)
    c["extended_precision_rel_diff"] = extended_precision_diff(x.reshape(6, -1), y, c)
    return c


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


def general_case(X, name, layers, init, activation, bias, reduction, lr, epochs, Y=y):
    """Vectorised NumPy (no notebook code exists for these settings); X is (M, n_in)."""
    out = run_vectorised(X, Y, layers, init, activation, bias, reduction, lr, epochs,
                         np.float64)
    c = case_dict(name, "vectorised", layers, init, activation, bias, reduction, lr, epochs,
                  *out)
    c["extended_precision_rel_diff"] = ext = extended_precision_diff(X, Y, c)
    # These cases are ours to choose: keep only trajectories whose digits are determined well
    # below the tests' 1e-9, so a harmless change of summation order cannot fail them.
    d = max(v for k, v in ext.items() if k != "initial_gradients")
    if d > 1e-11:
        raise SystemExit(f"{name}: f64 and extended precision differ by {d:.1e}; "
                         "pick a better-conditioned case (another seed or a smaller rate)")
    return c


def extended_precision_diff(X, Y, case):
    """Per quantity, the worst elementwise relative difference between the case's f64
    numbers and the same computation in x87 extended precision (np.longdouble, 64-bit
    mantissa): how many digits of the case are determined at all.

    Initial gradients can be poorly determined on the notebook's data: an entry built from
    p - 1 with p within 1e-12 of 1 keeps only a few digits, in NumPy as in any f64 code. Two
    f64 implementations still agree there when both round p alike (ours does: the golden
    test checks those entries at 1e-9 too), but a reader of a failure should know."""
    ld = run_vectorised(X, Y, case["layers"], case["init"], case["activation"], case["bias"],
                        case["grad_reduction"], case["learning_rate"], case["epochs"],
                        np.longdouble)
    _, _, loss0, gW, gb, history, W, b, P = ld
    groups = {
        "initial_loss": [(case["initial_loss"], loss0)],
        "initial_gradients": [(case["initial_gradients"]["weights"], gW),
                              (case["initial_gradients"]["biases"], gb)],
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


def case_dict(name, implementation, layers, init, activation, bias, reduction, lr, epochs, w0, b0, loss0,
              gW, gb, history, w1, b1, P):
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
        "initial_gradients": {"weights": floats(list(gW)),
                              "biases": floats(list(gb)) if gb is not None else None},
        "loss_history": [float(v) for v in history],
        "final_weights": floats(list(w1)),
        "final_biases": floats(list(b1)) if b1 is not None else None,
        "final_probabilities": floats(P),
        "final_classes": [int(c) for c in np.argmax(P, axis=1)],
        "implementation": implementation,
    }


def doc(dataset_x, cases, note):
    return {
        "generator": "tests/golden/generate.py",
        "numpy_version": np.__version__,
        "note": note,
        "dataset": {"x": dataset_x, "y": Y_RAW, "class_names": CLASS_NAMES},
        "cases": cases,
    }


def nr(seed):
    return {"method": "numpy_rand", "seed": seed}


def notebook_json():
    cases = []
    for seed in [0, 1, 42, 4294967295]:
        cases.append(notebook_case(f"1layer_seed{seed}", [4, 3], seed))
        cases.append(notebook_case(f"2layer_seed{seed}", [4, 4, 3], seed))
    X = x.reshape(6, -1)
    cases += [
        general_case(X, "1layer_bias_seed0", [4, 3], nr(0), "relu", True, "sum", 0.0001, 100),
        general_case(X, "1layer_mean_seed1", [4, 3], nr(1), "relu", False, "mean", 0.001, 100),
        general_case(X, "2layer_mean_bias_seed0", [4, 4, 3], nr(0), "relu", True, "mean",
                     0.0001, 100),
        general_case(X, "4layer_relu_bias_mean_xavier_seed3", [4, 8, 8, 8, 3],
                     {"method": "xavier", "seed": 3}, "relu", True, "mean", 0.0001, 100),
        general_case(X, "2layer_he_seed5", [4, 6, 3], {"method": "he", "seed": 5}, "relu",
                     False, "sum", 0.0001, 100),
    ]
    return doc(X_RAW, cases, "the notebook's cat-dog-ship, as the notebook uses it")


def variants_json():
    """Sigmoid and tanh on the raw pixels (0..231) saturate: every hidden unit sits at 0 or
    1, the derivatives are ~1e-80, and the cases would test nothing but rounding. So these
    run on cat-dog-ship divided by 255 (written out in full in the file)."""
    xs = x / 255.0
    X = xs.reshape(6, -1)
    cases = [
        general_case(X, "2layer_sigmoid_seed0", [4, 4, 3], nr(0), "sigmoid", False, "sum", 0.5,
                     100),
        general_case(X, "2layer_sigmoid_bias_seed42", [4, 5, 3], nr(42), "sigmoid", True,
                     "sum", 0.5, 100),
        general_case(X, "2layer_tanh_seed1", [4, 4, 3], nr(1), "tanh", False, "sum", 0.1, 100),
        general_case(X, "2layer_tanh_bias_mean_seed4294967295", [4, 4, 3], nr(4294967295),
                     "tanh", True, "mean", 0.5, 100),
        general_case(X, "3layer_tanh_bias_mean_xavier_seed7", [4, 6, 5, 3],
                     {"method": "xavier", "seed": 7}, "tanh", True, "mean", 0.5, 100),
        general_case(X, "3layer_sigmoid_he_seed4294967295", [4, 8, 6, 3],
                     {"method": "he", "seed": 4294967295}, "sigmoid", False, "sum", 0.5, 100),
        general_case(X, "3layer_relu_bias_seed2", [4, 5, 4, 3], nr(2), "relu", True, "sum",
                     0.05, 100),
    ]
    return doc(floats(xs), cases, "cat-dog-ship divided by 255, so sigmoid and tanh do not saturate")


def large_json():
    """Nets big enough that every product takes linalg's gemm path (more than 4096
    multiply-adds; [64, 20, 12, 10]'s smallest is 80 x 12 x 10 = 9600), on data drawn from the legacy stream so the test can redraw it bit for
    bit instead of reading it: np.random.seed(S); x = np.random.rand(M, n_in); y = j % n_out."""
    S, M, n_in, n_out = 2024, 80, 64, 10
    np.random.seed(S)
    X = np.random.rand(M, n_in)
    Y = np.eye(n_out)[np.arange(M) % n_out]
    cases = [
        general_case(X, "gemm_relu_bias_mean_xavier", [64, 16, 10],
                     {"method": "xavier", "seed": 11}, "relu", True, "mean", 0.5, 30, Y),
        general_case(X, "gemm_tanh_sum_he", [64, 20, 12, 10], {"method": "he", "seed": 12},
                     "tanh", False, "sum", 0.002, 30, Y),
    ]
    return {
        "generator": "tests/golden/generate.py",
        "numpy_version": np.__version__,
        "note": "the dataset is not written out: draw it as 'generated' says",
        "dataset": {"generated": {"method": "numpy_rand", "seed": S, "samples": M,
                                  "features": n_in, "classes": n_out,
                                  "labels": "class j % classes for sample j"}},
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
            cases.append({
                "name": f"{method}_{'x'.join(map(str, layers))}_seed{seed}",
                "method": method,
                "seed": seed,
                "layers": layers,
                "weights": floats(ws),
            })
    return {"generator": "tests/golden/generate.py", "numpy_version": np.__version__,
            "cases": cases}


def write(name, doc):
    path = os.path.join(HERE, name)
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    # Guard the bit-for-bit promise: reading the file back gives the same doubles.
    with open(path) as f:
        assert json.load(f) == doc, f"{name} does not round-trip"
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(doc['cases'])} cases)")


if __name__ == "__main__":
    write("notebook.json", notebook_json())
    write("variants.json", variants_json())
    write("init.json", init_json())
    write("large.json", large_json())
