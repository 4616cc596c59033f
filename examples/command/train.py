#!/usr/bin/env python3
"""A training script that knows nothing about Ridgeline except two conventions:

* it reads its hyperparameters from the command line (Ridgeline fills `{lr}` etc.);
* it prints one line per epoch, `ridgeline: {"step": epoch, "val_loss": ...}`.

It trains a softmax regression on the UCI digits in pure Python (no numpy), and saves a
checkpoint to $RIDGELINE_TRIAL_DIR after every epoch: an attempt that is re-run (its
worker died) continues from the last saved epoch instead of starting over.
"""
import argparse
import gzip
import json
import math
import os
import random
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--l2", type=float, default=1e-4)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--limit", type=int, default=600, help="training samples used")
p.add_argument("--seed", type=int, default=0, help="batch order")
p.add_argument("--epoch-seconds", type=float, default=0.0, help="sleep per epoch (demos)")
p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data", "digits.csv.gz"))
a = p.parse_args()

rows = [line.split(",") for line in gzip.open(a.data, "rt") if line.strip()]
random.Random(0).shuffle(rows)
X = [[float(v) / 16.0 for v in r[:-1]] for r in rows]
Y = [int(r[-1]) for r in rows]
n_val = len(X) // 5
xv, yv, xt, yt = X[:n_val], Y[:n_val], X[n_val:][: a.limit], Y[n_val:][: a.limit]
D, K = len(X[0]), 10

ckpt = os.path.join(os.environ.get("RIDGELINE_TRIAL_DIR", "."), "checkpoint.json")
W, b, start = [[0.0] * D for _ in range(K)], [0.0] * K, 1
if os.path.exists(ckpt):
    with open(ckpt) as f:
        state = json.load(f)
    W, b, start = state["W"], state["b"], state["epoch"] + 1
    print(f"resuming from epoch {state['epoch']}", file=sys.stderr)


def probs(x):
    z = [sum(w * v for w, v in zip(W[k], x)) + b[k] for k in range(K)]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def evaluate(xs, ys):
    loss, right = 0.0, 0
    for x, y in zip(xs, ys):
        pr = probs(x)
        loss -= math.log(max(pr[y], 1e-300))
        right += max(range(K), key=lambda k: pr[k]) == y
    return loss / len(xs), right / len(xs)


rng = random.Random(a.seed)
for epoch in range(start, a.epochs + 1):
    order = list(range(len(xt)))
    rng.shuffle(order)
    total = 0.0
    for i in range(0, len(order), a.batch):
        batch = order[i : i + a.batch]
        gW = [[0.0] * D for _ in range(K)]
        gb = [0.0] * K
        for j in batch:
            pr = probs(xt[j])
            total -= math.log(max(pr[yt[j]], 1e-300))
            for k in range(K):
                g = pr[k] - (k == yt[j])
                gb[k] += g
                row = gW[k]
                for d, v in enumerate(xt[j]):
                    row[d] += g * v
        for k in range(K):
            b[k] -= a.lr * gb[k] / len(batch)
            for d in range(D):
                W[k][d] -= a.lr * (gW[k][d] / len(batch) + a.l2 * W[k][d])
    val_loss, val_acc = evaluate(xv, yv)
    print(f"epoch {epoch}: train loss {total / len(xt):.4f}")
    # One report per epoch: json.dumps writes NaN as NaN, which Ridgeline reads.
    print("ridgeline:", json.dumps({"step": epoch, "train_loss": total / len(xt),
                                    "val_loss": val_loss, "val_accuracy": val_acc}))
    with open(ckpt + ".tmp", "w") as f:
        json.dump({"W": W, "b": b, "epoch": epoch}, f)
    os.replace(ckpt + ".tmp", ckpt)
    time.sleep(a.epoch_seconds)
