"""What the MNIST-MLP benches share: the data, the spec sections Ridgeline reads it
with, and the same 784-256-256-10 ReLU MLP in PyTorch."""

from __future__ import annotations

import gzip
import os

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "examples", "data")


def spec_sections(val_fraction: float) -> str:
    """`[data]` (the 10,000 digits, scaled by their maximum) and `[model]`."""
    return f"""[data]
path = "{DATA}/mnist10k-images-idx3-ubyte.gz"
labels = "{DATA}/mnist10k-labels-idx1-ubyte.gz"
normalize = "max"
val_fraction = {val_fraction}
[model]
depth = 2
width = 256
"""


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 images as float32 `[n, 784]` (raw 0-255) and their labels as int64."""
    with gzip.open(os.path.join(DATA, "mnist10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 784).astype(np.float32)
    with gzip.open(os.path.join(DATA, "mnist10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read()[8:], dtype=np.uint8).astype(np.int64)
    return x, y


def mlp() -> torch.nn.Sequential:
    """784-256-256-10 with ReLU; parameter `2i.weight` is Ridgeline's `layers.i.weight`."""
    return torch.nn.Sequential(
        torch.nn.Linear(784, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )
