"""An MLP scan by `ridgeline run` against the seed's loop in PyTorch, in one run.

The model: a 784-256-256-10 ReLU MLP trained for one epoch on the 10,000 MNIST digits by
Ridgeline (its checkpoint, input normalisation included). The scan: a 32 x 32 grid on
the training split (9,999 samples), filter-normalised random directions, tiles of 16,
the default chunks of samples, `ridgeline run --workers 2`, timed from process start to exit (coordinator, workers,
loading, assembly included). The peer: the loss-landscape loop in one PyTorch process
with 2 threads, float32, the same weights and the same directions (read from the scan's
directions.safetensors), one batch of as many samples per point (θ* + α·d₁ + β·d₂ under
`torch.no_grad()`, forward, cross-entropy, restore), timed over the grid alone. Prints
each round's rates and the ratio of the medians.

    cargo build --release
    python benches/landscape/mlp_vs_torch.py --ridgeline target/release/ridgeline [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mnist_mlp import ROOT, digits, mlp, spec_sections

GRID = 32

TRAIN = f"""
name = "mlp"
{spec_sections(0.0001)}[train]
epochs = 1
batch_size = 128
[search]
algorithm = "grid"
[search.space]
lr = {{ type = "choice", values = [0.001] }}
"""


def scan_spec(checkpoint: str) -> str:
    return f"""
name = "mlp-scan"
kind = "landscape"
{spec_sections(0.0001)}[landscape]
checkpoint = "{checkpoint}"
split = "train"
tile = 16
x = {{ min = -1.0, max = 1.0, points = {GRID} }}
y = {{ min = -1.0, max = 1.0, points = {GRID} }}
directions = {{ seed = 0 }}
"""


def mnist(samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits()
    return torch.from_numpy(x[:samples]), torch.from_numpy(y[:samples])


def torch_loop(checkpoint: str, directions: str, samples: int) -> tuple[float, float]:
    """Points per second of the seed's loop over the grid, and its lowest loss (on the
    first `samples` digits; Ridgeline's split leaves out one of the 10,000)."""
    torch.set_num_threads(2)
    w = load_file(os.path.join(checkpoint, "model.safetensors"))
    d = load_file(directions)
    x, y = mnist(samples)
    x = (x - torch.from_numpy(w["input.mean"])) * torch.from_numpy(w["input.scale"])
    model = mlp()
    names = {f"{2 * i}.{k}": f"layers.{i}.{k}" for i in range(3) for k in ("weight", "bias")}
    params = dict(model.named_parameters())
    base = {n: torch.from_numpy(w[r].copy()) for n, r in names.items()}
    dx = {n: torch.from_numpy(d[f"x.{r}"].copy()) for n, r in names.items()}
    dy = {n: torch.from_numpy(d[f"y.{r}"].copy()) for n, r in names.items()}
    axis = np.linspace(-1.0, 1.0, GRID)
    loss = torch.nn.CrossEntropyLoss()
    lowest = float("inf")
    with torch.no_grad():
        start = time.perf_counter()
        for b in axis:
            for a in axis:
                for n, p in params.items():
                    p.copy_(base[n] + float(a) * dx[n] + float(b) * dy[n])
                lowest = min(lowest, float(loss(model(x), y)))
        seconds = time.perf_counter() - start
        for n, p in params.items():
            p.copy_(base[n])
    return GRID * GRID / seconds, lowest


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ridgeline", default=os.path.join(ROOT, "target", "release", "ridgeline"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp()
    with open(os.path.join(work, "train.toml"), "w") as f:
        f.write(TRAIN)
    subprocess.run(
        [args.ridgeline, "run", "train.toml", "--out", "train"],
        cwd=work,
        check=True,
        capture_output=True,
    )
    checkpoint = os.path.dirname(
        next(
            os.path.join(r, f)
            for r, _, fs in os.walk(os.path.join(work, "train"))
            for f in fs
            if f == "model.safetensors"
        )
    )
    with open(os.path.join(work, "scan.toml"), "w") as f:
        f.write(scan_spec(checkpoint))
    ours, theirs = [], []
    for r in range(args.rounds):
        out = os.path.join(work, f"scan{r}")
        t = time.perf_counter()
        subprocess.run(
            [args.ridgeline, "run", "scan.toml", "--workers", "2", "--out", out],
            cwd=work,
            check=True,
            capture_output=True,
        )
        ours.append(GRID * GRID / (time.perf_counter() - t))
        sweep = next(os.scandir(os.path.join(out, "sweeps"))).path
        with open(os.path.join(sweep, "meta.json")) as f:
            meta = json.load(f)
        rate, lowest = torch_loop(
            checkpoint, os.path.join(sweep, "directions.safetensors"), int(meta["run"]["samples"])
        )
        theirs.append(rate)
        print(
            json.dumps(
                {
                    "round": r,
                    "ridgeline_points_per_s": round(ours[-1], 1),
                    "torch_points_per_s": round(rate, 1),
                    "samples": meta["run"]["samples"],
                    "torch_min_loss": round(lowest, 4),
                    "ridgeline_min_loss": round(meta["loss_min"], 4),
                }
            ),
            flush=True,
        )
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"MLP scan, ridgeline run (2 workers) / PyTorch loop (2 threads): {ratio:.2f}x")


if __name__ == "__main__":
    main()
