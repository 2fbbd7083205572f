"""Wrong: both Backward methods average the gradient over the samples instead of summing it.

The true gradient of the mean loss is the average, but the notebook's Backward returns the
sum, (P - Y)^T X, and its learning rate is tuned for that. Expected to fail both Backward
tests and, since training uses Backward, both training tests.
"""

import numpy as np


def softmax(z):
    # Subtracting the maximum keeps exp finite: the two-layer net's logits on raw pixels
    # reach the hundreds.
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def cross_entropy(Z, Y):
    """Mean over samples of -sum(y * log softmax(z)), via log-softmax so log(0) never happens."""
    m = np.max(Z, axis=1, keepdims=True)
    log_p = Z - m - np.log(np.sum(np.exp(Z - m), axis=1, keepdims=True))
    return float(np.mean(-np.sum(Y * log_p, axis=1)))


class NN_1layer:
    def __init__(self, input_size, output_size, seed):
        np.random.seed(seed)
        self.W = np.random.rand(output_size, input_size)

    def Forward(self, x):
        return softmax(np.matmul(self.W, x.flatten()))

    def getLoss(self, X, Y):
        X = X.reshape(len(X), -1)
        return cross_entropy(X @ self.W.T, Y)

    def Backward(self, X, Y):
        X = X.reshape(len(X), -1)
        P = softmax(X @ self.W.T)
        return (P - Y).T @ X / len(X)

    def training(self, X, Y, epochs, lr):
        losses = []
        for k in range(1, epochs + 1):
            self.W -= lr * self.Backward(X, Y)
            loss = self.getLoss(X, Y)
            print(f"iteration: {k}, loss: {loss}")
            losses.append(loss)
        return losses


class NN_2layer:
    def __init__(self, input_size, hidden_size, output_size, seed):
        np.random.seed(seed)
        self.W1 = np.random.rand(hidden_size, input_size)
        self.W2 = np.random.rand(output_size, hidden_size)

    def Forward(self, x):
        h = np.maximum(0, np.matmul(self.W1, x.flatten()))
        return softmax(np.matmul(self.W2, h))

    def getLoss(self, X, Y):
        X = X.reshape(len(X), -1)
        H = np.maximum(0, X @ self.W1.T)
        return cross_entropy(H @ self.W2.T, Y)

    def Backward(self, X, Y):
        X = X.reshape(len(X), -1)
        Z1 = X @ self.W1.T
        H = np.maximum(0, Z1)
        P = softmax(H @ self.W2.T)
        dZ2 = P - Y
        dW2 = dZ2.T @ H / len(X)
        dZ1 = (dZ2 @ self.W2) * (Z1 > 0)
        dW1 = dZ1.T @ X / len(X)
        return dW1, dW2

    def training(self, X, Y, epochs, lr):
        losses = []
        for k in range(1, epochs + 1):
            dW1, dW2 = self.Backward(X, Y)
            self.W1 -= lr * dW1
            self.W2 -= lr * dW2
            loss = self.getLoss(X, Y)
            print(f"iteration: {k}, loss: {loss}")
            losses.append(loss)
        return losses
