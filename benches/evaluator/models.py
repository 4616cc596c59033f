"""The models of `benches/evaluator/compare.py`, as evaluator functions (``models:mlp``,
``models:gpt2``): the MLP of benches/landscape.rs on the shipped 10k MNIST and the GPT-2
6x256 of benches/models.rs (through Hugging Face ``transformers``, sdpa attention) on
2,048 byte tokens of Moby-Dick. Each returns ``(model, loss_fn, batches)``, one batch."""

import gzip
import os

import torch
from torch import nn

DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "data"
)


def mlp():
    with gzip.open(os.path.join(DATA, "mnist10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    with gzip.open(os.path.join(DATA, "mnist10k-labels-idx1-ubyte.gz")) as f:
        labels = f.read()
    x = (
        torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).view(-1, 784).float()
        / 255.0
    )
    y = torch.frombuffer(bytearray(labels[8:]), dtype=torch.uint8).long()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )
    return model, nn.functional.cross_entropy, [(x, y)]


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    with gzip.open(os.path.join(DATA, "moby-dick.txt.gz"), "rb") as f:
        text = f.read(8 * 256)
    ids = torch.tensor(list(text), dtype=torch.long).view(8, 256)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=256, n_positions=256, n_embd=256, n_layer=6, n_head=8, n_inner=1024
    )
    model = GPT2LMHeadModel(config)
    return model, lambda out, _y: out.loss, [({"input_ids": ids, "labels": ids}, ids)]
