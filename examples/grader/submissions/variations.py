"""Correct, written the ways a course often sees: weights kept as np.matrix, Forward returning an
array, Backward returning nested lists (one layer) or a list (two layers), a helper method,
training's epoch count named `epochs`, the losses printed with fewer digits ('%.6f', '.10g'),
and the exercise's class named NN_2Layer with weights W1 and W2. Expected: full marks."""

import numpy as np


def Softmax(z):
    """Class probabilities from scores; the largest score is subtracted first, which changes
    nothing but keeps np.exp from overflowing."""
    shifted = np.exp(z - np.max(z))
    return shifted / shifted.sum()


def CELoss(Y_hat, labels):
    """Cross-entropy of each prediction against its one-hot label, averaged."""
    total = 0.0
    for probs, label in zip(Y_hat, labels):
        total += -np.sum(label * np.log(probs))
    return total / len(labels)


# Six 2x2 images and their one-hot labels: cat, dog, ship, cat, dog, ship.
X = np.array(
    [
        [[56, 231], [24, 1]],
        [[120, 30], [24, 0]],
        [[20, 31], [240, 100]],
        [[56, 201], [22, -10]],
        [[140, 27], [30, 10]],
        [[25, 30], [230, 110]],
    ]
)
Y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])


class NN_1layer:
    """Kept as np.matrix, gradients handed back as nested lists, rounded printing."""

    def __init__(self, **kwargs):
        self.W_l1 = np.matrix(np.random.rand(3, 4))
        self.activation = Softmax
        self.Loss = CELoss
        self.learning_rate = 0.0001

    def _column(self, sample):
        return np.matrix(sample.flatten()).T  # (4, 1)

    def Forward(self, X):
        # One (3, 1) matrix per sample: a different container, the same numbers.
        return np.array(
            [np.asarray(self.activation(self.W_l1 * self._column(x))).ravel() for x in X]
        )

    def getLoss(self, X, Y):
        return self.Loss(self.Forward(X), Y)

    def Backward(self, Y_hat, X, Y):
        grad = np.zeros((3, 4))
        for p, x, y in zip(Y_hat, X, Y):
            grad += np.outer(np.asarray(p).ravel() - y, x.flatten())
        return grad.tolist()

    def training(self, X, Y, epochs=100):
        for it in range(epochs):
            self.W_l1 = self.W_l1 - self.learning_rate * np.matrix(
                self.Backward(self.Forward(X), X, Y)
            )
            print("iteration: %d, loss: %.6f" % (it + 1, self.getLoss(X, Y)))


def ReLU(x):
    return np.maximum(x, 0)


def dReLU(x):
    return (x > 0).astype(float)


class NN_2Layer:
    """Named with a capital L, weights W1 and W2, Backward returning a list."""

    def __init__(self, **kwargs):
        self.W1 = np.random.rand(4, 4)
        self.W2 = np.random.rand(3, 4)
        self.learning_rate = 0.0001

    def hidden(self, X):
        return np.maximum(0, X.reshape(len(X), -1) @ self.W1.T)

    def Forward(self, X):
        Z = self.hidden(X) @ self.W2.T
        return [Softmax(z) for z in Z]

    def getLoss(self, X, Y):
        return CELoss(self.Forward(X), Y)

    def Backward(self, Y_hat, X, Y):
        inputs = X.reshape(len(X), -1)
        Z1 = inputs @ self.W1.T
        error = np.array(Y_hat) - Y
        dW2 = error.T @ np.maximum(0, Z1)
        dW1 = ((error @ self.W2) * (Z1 > 0)).T @ inputs
        return [dW1, dW2]

    def training(self, X, Y, n_epoch=100):
        for k in range(n_epoch):
            dW1, dW2 = self.Backward(self.Forward(X), X, Y)
            self.W1 = self.W1 - self.learning_rate * dW1
            self.W2 = self.W2 - self.learning_rate * dW2
            print(f"iteration: {k + 1}, loss: {self.getLoss(X, Y):.10g}")


np.random.seed(3)
NN_1layer().training(X, Y, 5)
