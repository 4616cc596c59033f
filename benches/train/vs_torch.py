"""The built-in trainer against a PyTorch training loop of the same model, in one run.

- ``mlp``: 784-256-256-10 ReLU MLP on the 10,000 MNIST digits (8,000 to train, 2,000 to
  validate, inputs scaled by their maximum), batches of 128, 5 epochs;
- ``cnn``: Ridgeline's default CNN (two blocks of 3x3 convolution without bias, batch
  norm, ReLU and 2x2 max-pooling, 16 and 32 channels, a linear head) on the same digits,
  batches of 128, 2 epochs;
- ``gpt2``: a GPT-2 of 2 blocks of width 128 (4 heads, MLP 512, byte vocabulary, 128
  tokens of context, no dropout) on the first 262,144 bytes of Moby-Dick (90 % to train
  in windows of 129 bytes overlapping by one, the rest to validate), batches of 32
  windows, 2 epochs.

AdamW (lr 1e-3, weight decay 0), batches shuffled every epoch, the validation loss and
accuracy after each epoch. Ridgeline: one trial of `ridgeline run --workers 1` (one
worker, both cores), its training span (the trial's `duration_s`). PyTorch: the usual
loop in one process with 2 threads, data already in tensors, timed over the epochs.
Prints each round's seconds per epoch, the final validation accuracies and the ratio of
the medians (PyTorch time / Ridgeline time: above 1 is Ridgeline faster).

    cargo build --release
    python benches/train/vs_torch.py [--models mlp,cnn,gpt2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import glob
import gzip
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
from mnist_mlp import DATA, ROOT, digits, mlp, spec_sections

EPOCHS = {"mlp": 5, "cnn": 2, "gpt2": 2}
TOKENS, CONTEXT = 262_144, 128

TRAIN = """[train]
epochs = {epochs}
batch_size = {batch}
optimizer = "adamw"
lr = 0.001
weight_decay = 0.0
[search]
algorithm = "grid"
[search.space]
seed = {{ type = "grid", values = [0] }}
"""


def spec(name: str) -> str:
    if name == "gpt2":
        sections = f"""[data]
path = "{DATA}/moby-dick.txt.gz"
tokenizer = "bytes"
context = {CONTEXT}
limit = {TOKENS}
val_fraction = 0.1
[model]
arch = "gpt2"
layers = 2
d_model = 128
heads = 4
d_ff = 512
"""
        batch = 32
    else:
        sections = spec_sections(0.2)
        if name == "cnn":
            sections = sections.replace("depth = 2\nwidth = 256\n", 'arch = "cnn"\n')
        batch = 128
    return f'name = "train"\n{sections}' + TRAIN.format(
        epochs=EPOCHS[name], batch=batch
    )


def ridgeline(binary: str, work: str, name: str, r: int) -> tuple[float, float]:
    """Seconds per epoch of the trial's span and its final val_accuracy."""
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write(spec(name))
    out = os.path.join(work, f"{name}{r}")
    subprocess.run(
        [binary, "run", path, "--workers", "1", "--out", out],
        check=True,
        capture_output=True,
    )
    with open(glob.glob(os.path.join(out, "sweeps", "*", "results.json"))[0]) as f:
        t = json.load(f)["trials"][0]
    return t["duration_s"] / EPOCHS[name], t["metrics"]["val_accuracy"]


def cnn() -> torch.nn.Sequential:
    def block(cin: int, cout: int) -> list[torch.nn.Module]:
        return [
            torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(cout),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        ]

    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 28, 28)),
        *block(1, 16),
        *block(16, 32),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 7 * 7, 10),
    )


def gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=256,
        n_positions=CONTEXT,
        n_embd=128,
        n_layer=2,
        n_head=4,
        n_inner=512,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=x).logits.flatten(0, 1)

    return Logits()


def data(name: str, seed: int) -> tuple[torch.Tensor, ...]:
    """Training inputs and targets, validation inputs and targets."""
    if name == "gpt2":
        with gzip.open(os.path.join(DATA, "moby-dick.txt.gz"), "rb") as f:
            ids = torch.tensor(list(f.read(TOKENS)), dtype=torch.long)
        split = round(TOKENS * 0.9)

        def windows(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            starts = range(0, len(part) - CONTEXT, CONTEXT)
            x = torch.stack([part[s : s + CONTEXT] for s in starts])
            y = torch.stack([part[s + 1 : s + CONTEXT + 1] for s in starts])
            return x, y

        xt, yt = windows(ids[:split])
        xv, yv = windows(ids[split:])
        return xt, yt.flatten(), xv, yv.flatten()
    x, y = digits()
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = torch.from_numpy(x[order] / x.max()), torch.from_numpy(y[order])
    return x[2000:], y[2000:], x[:2000], y[:2000]


def pytorch(name: str, seed: int) -> tuple[float, float]:
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    xt, yt, xv, yv = data(name, seed)
    model = {"mlp": mlp, "cnn": cnn, "gpt2": gpt2}[name]()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    loss = torch.nn.CrossEntropyLoss()
    batch = 32 if name == "gpt2" else 128
    # Targets per input row: one label, or a window's next tokens.
    per = len(yt) // len(xt)
    start = time.perf_counter()
    accuracy = 0.0
    for _ in range(EPOCHS[name]):
        model.train()
        for idx in torch.randperm(len(xt)).split(batch):
            opt.zero_grad()
            ys = yt.view(len(xt), per)[idx].flatten()
            loss(model(xt[idx]), ys).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            float(loss(out, yv))
            accuracy = float((out.argmax(1) == yv).float().mean())
    return (time.perf_counter() - start) / EPOCHS[name], accuracy


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--ridgeline", default=os.path.join(ROOT, "target", "release", "ridgeline")
    )
    ap.add_argument("--models", default="mlp,cnn,gpt2")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for name in args.models.split(","):
        ours, theirs = [], []
        with tempfile.TemporaryDirectory() as work:
            for r in range(args.rounds):
                s, acc = ridgeline(args.ridgeline, work, name, r)
                ps, pacc = pytorch(name, r)
                ours.append(s)
                theirs.append(ps)
                print(
                    json.dumps(
                        {
                            "model": name,
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
        print(
            f"{name} training, PyTorch time / Ridgeline time: {ratio:.2f}x", flush=True
        )


if __name__ == "__main__":
    main()
