"""A Hugging Face GPT-2 under a Ridgeline scan: random weights from a small config (nothing
is downloaded), byte-level tokens of the shipped Moby-Dick, the loss the model computes
itself (`labels=`). Runs unchanged on a GPU worker (the evaluator moves model and data to
the slot's device).

    pip install ./python torch transformers     # once, from the repository root
    ridgeline run examples/torch/gpt2-landscape.toml
"""

import gzip
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = os.path.join(HERE, "..", "data", "moby-dick.txt.gz")


def batches(windows: int = 8, context: int = 64, per_batch: int = 4):
    """`windows` windows of `context` bytes from the start of chapter 1, as token ids."""
    with gzip.open(TEXT, "rb") as f:
        data = f.read(windows * context)
    ids = torch.tensor(list(data), dtype=torch.long).view(windows, context)
    return [
        (
            {"input_ids": ids[i : i + per_batch], "labels": ids[i : i + per_batch]},
            ids[i : i + per_batch],
        )
        for i in range(0, windows, per_batch)
    ]


def model():
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=256,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def build():
    """What the evaluator calls: the model, its own loss, the batches."""
    return model(), lambda out, _targets: out.loss, batches()
