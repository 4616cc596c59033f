"""A trial as a Python function: softmax regression on UCI digits with numpy,
reporting validation loss and accuracy after every epoch (so ASHA can stop bad trials).

Used by notebook.ipynb and search.py; a worker imports it by name, which is why it lives
in a file and not in a notebook cell.
"""

import os

import numpy as np

import ridgeline

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "digits.csv.gz")


def load(seed=0):
    xy = np.loadtxt(DATA, delimiter=",")
    x, y = xy[:, :-1] / 16.0, xy[:, -1].astype(int)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def objective(params):
    """params: lr (float), l2 (float), batch (int), epochs (int, default 9)."""
    xt, yt, xv, yv = load()
    rng = np.random.default_rng(0)
    w = np.zeros((xt.shape[1], 10))
    b = np.zeros(10)
    lr, l2, batch = params["lr"], params["l2"], int(params["batch"])
    val_loss = float("nan")
    for epoch in range(1, int(params.get("epochs", 9)) + 1):
        for idx in np.array_split(rng.permutation(len(yt)), max(1, len(yt) // batch)):
            z = xt[idx] @ w + b
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(idx)), yt[idx]] -= 1.0
            w -= lr * (xt[idx].T @ p / len(idx) + l2 * w)
            b -= lr * p.mean(axis=0)
        z = xv @ w + b
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        val_loss = float(-logp[np.arange(len(yv)), yv].mean())
        acc = float((logp.argmax(axis=1) == yv).mean())
        ridgeline.report(step=epoch, val_loss=val_loss, val_accuracy=acc)
    return val_loss
