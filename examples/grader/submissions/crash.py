"""Wrong: the two-layer Forward misspells a weight (self.w_l2). Expected to fail
NN_2layer.Forward (extra credit), and NN_2layer.getLoss and NN_2layer.training, which call
it; everything else is right."""

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
    """x -> Linear(4, 3) -> Softmax -> CELoss."""

    def __init__(self, **kwargs):
        self.W_l1 = np.random.rand(3, 4)  # (out, in)
        self.activation = Softmax
        self.Loss = CELoss
        self.learning_rate = 0.0001

    def Forward(self, X):
        return [self.activation(self.W_l1 @ sample.reshape(-1)) for sample in X]

    def getLoss(self, X, Y):
        return self.Loss(self.Forward(X), Y)

    def Backward(self, Y_hat, X, Y):
        # Softmax and cross-entropy together: dL/dz = p - y for each sample. The linear
        # layer then gives dL/dW = (dL/dz) x^T, and the six samples' terms are added up.
        error = np.asarray(Y_hat) - Y  # (6, 3)
        inputs = X.reshape(len(X), -1)  # (6, 4), each image read row by row
        return error.T @ inputs  # (3, 4)

    def training(self, X, Y, n_epoch=100):
        for k in range(1, n_epoch + 1):
            grad = self.Backward(self.Forward(X), X, Y)
            self.W_l1 = self.W_l1 - grad * self.learning_rate
            print(f"iteration: {k}, loss: {self.getLoss(X, Y)}")


def ReLU(x):
    return np.maximum(x, 0)


def dReLU(x):
    return (x > 0).astype(float)


class NN_2layer:
    """x -> Linear(4, 4) -> ReLU -> Linear(4, 3) -> Softmax -> CELoss."""

    def __init__(self, **kwargs):
        self.W_l1 = np.random.rand(4, 4)
        self.W_l2 = np.random.rand(3, 4)
        self.activation = Softmax
        self.Loss = CELoss
        self.learning_rate = 0.0001

    def Forward(self, X):
        out = []
        for sample in X:
            hidden = ReLU(self.W_l1 @ sample.reshape(-1))
            out.append(self.activation(self.w_l2 @ hidden))
        return out

    def getLoss(self, X, Y):
        return self.Loss(self.Forward(X), Y)

    def Backward(self, Y_hat, X, Y):
        inputs = X.reshape(len(X), -1)  # (6, 4)
        Z1 = inputs @ self.W_l1.T  # (6, 4) hidden pre-activations
        H = ReLU(Z1)
        error = np.asarray(Y_hat) - Y  # (6, 3)
        dW2 = error.T @ H  # (3, 4)
        dH = error @ self.W_l2  # (6, 4): back through the second layer
        dZ1 = dH * dReLU(Z1)  # ReLU passes the gradient only where Z1 > 0
        dW1 = dZ1.T @ inputs  # (4, 4)
        return dW1, dW2

    def training(self, X, Y, n_epoch=100):
        for k in range(1, n_epoch + 1):
            dW1, dW2 = self.Backward(self.Forward(X), X, Y)
            self.W_l1 = self.W_l1 - dW1 * self.learning_rate
            self.W_l2 = self.W_l2 - dW2 * self.learning_rate
            print(f"iteration: {k}, loss: {self.getLoss(X, Y)}")
