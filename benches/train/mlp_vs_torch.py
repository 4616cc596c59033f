"""The built-in trainer against a PyTorch training loop of the same MLP, in one run.

784-256-256-10 ReLU MLP on the 10,000 MNIST digits (8,000 to train, 2,000 to validate,
inputs scaled by their maximum), AdamW (lr 1e-3, weight decay 0), batches of 128
shuffled every epoch, 5 epochs, the validation loss and accuracy after each. Ridgeline:
one trial of `ridgeline run --workers 1` (one worker, both cores), its training span
(the trial's `duration_s`). PyTorch: the usual loop in one process with 2 threads, data
already in tensors, timed over the epochs. Prints each round's seconds per epoch, the
final validation accuracies and the ratio of the medians (PyTorch time / Ridgeline time:
above 1 is Ridgeline faster).

    cargo build --release
    python benches/train/mlp_vs_torch.py [--ridgeline target/release/ridgeline] [--rounds 3]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mnist_mlp import ROOT, digits, mlp, spec_sections

EPOCHS = 5

SPEC = f"""
name = "train"
{spec_sections(0.2)}[train]
epochs = {EPOCHS}
batch_size = 128
optimizer = "adamw"
lr = 0.001
weight_decay = 0.0
[search]
algorithm = "grid"
[search.space]
seed = {{ type = "grid", values = [0] }}
"""


def ridgeline(binary: str, work: str, r: int) -> tuple[float, float]:
    """Seconds per epoch of the trial's span and its final val_accuracy."""
    spec = os.path.join(work, "train.toml")
    with open(spec, "w") as f:
        f.write(SPEC)
    out = os.path.join(work, f"out{r}")
    subprocess.run(
        [binary, "run", spec, "--workers", "1", "--out", out],
        check=True,
        capture_output=True,
    )
    with open(glob.glob(os.path.join(out, "sweeps", "*", "results.json"))[0]) as f:
        t = json.load(f)["trials"][0]
    return t["duration_s"] / EPOCHS, t["metrics"]["val_accuracy"]


def pytorch(seed: int) -> tuple[float, float]:
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    x, y = digits()
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = torch.from_numpy(x[order] / x.max()), torch.from_numpy(y[order])
    xv, yv, xt, yt = x[:2000], y[:2000], x[2000:], y[2000:]
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    loss = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    accuracy = 0.0
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(xt)).split(128):
            opt.zero_grad()
            loss(model(xt[idx]), yt[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            float(loss(out, yv))
            accuracy = float((out.argmax(1) == yv).float().mean())
    return (time.perf_counter() - start) / EPOCHS, accuracy


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ridgeline", default=os.path.join(ROOT, "target", "release", "ridgeline"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            s, acc = ridgeline(args.ridgeline, work, r)
            ps, pacc = pytorch(r)
            ours.append(s)
            theirs.append(ps)
            print(
                json.dumps(
                    {
                        "round": r,
                        "ridgeline_s_per_epoch": round(s, 3),
                        "torch_s_per_epoch": round(ps, 3),
                        "ridgeline_val_accuracy": round(acc, 4),
                        "torch_val_accuracy": round(pacc, 4),
                    }
                ),
                flush=True,
            )
    ratio = statistics.median(theirs) / statistics.median(ours)
    print(f"MLP training, PyTorch time / Ridgeline time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
