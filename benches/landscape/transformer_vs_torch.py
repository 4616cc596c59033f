"""Transformer scans by `ridgeline run` against the seed's loop in PyTorch, in one run.

Models, built by Hugging Face ``transformers`` with seeded random weights and saved as
Hugging Face folders (``config.json`` + ``model.safetensors``); Ridgeline scans the same
``model.safetensors`` beside a ``model.json`` (a Ridgeline checkpoint, so that the
coordinator writes the directions where the PyTorch loop can read them):

- ``gpt2``: the GPT-2 layout of benches/models.rs (6 x 256, 8 heads, MLP 1,024, byte
  vocabulary);
- ``llama``: the Llama layout at the same size (RMSNorm, RoPE, SwiGLU 704, grouped-query
  attention with 4 key/value heads, untied output);
- ``smollm2``: SmolLM2-135M's shape (30 x 576, 9 heads, 3 key/value heads, SwiGLU
  1,536, 49,152-token vocabulary, tied): the real weights are not reachable from this
  machine, and random ones cost the same per point.

The scan: 2,048 tokens of Moby-Dick (8 windows of 256 bytes), filter-normalised random
directions, 8 x 8 points (3 x 3 for smollm2), `ridgeline run --workers W`, timed from
process start to exit (coordinator, workers, loading, directions, assembly included),
and the grid alone: that time less a run of the same scan at one point.
The peer: the loss-landscape loop in one PyTorch process with 2 threads, float32, sdpa
attention, the same weights, tokens and directions (read from the scan's
``directions.safetensors``): θ* + α·d₁ + β·d₂ under ``torch.no_grad()``, one forward of
the 8 windows, cross-entropy of the next tokens, restore; timed over the grid alone.
Rounds alternate the two; the losses at every point are compared. Prints each round's
rates and the ratio of the medians.

    cargo build --release
    python benches/landscape/transformer_vs_torch.py [--models gpt2,llama,smollm2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXT = os.path.join(ROOT, "examples", "data", "moby-dick.txt.gz")
CONTEXT, WINDOWS = 256, 8
GRIDS = {"gpt2": 8, "llama": 8, "smollm2": 3}


def build(name: str, folder: str) -> None:
    """Saves the model as a Hugging Face folder with Ridgeline's ``model.json``."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if name == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=256,
                n_positions=CONTEXT,
                n_embd=256,
                n_layer=6,
                n_head=8,
                n_inner=1024,
            )
        )
    else:
        shape = {
            "llama": {
                "vocab_size": 256,
                "hidden_size": 256,
                "num_hidden_layers": 6,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "intermediate_size": 704,
                "tie_word_embeddings": False,
            },
            "smollm2": {
                "vocab_size": 49152,
                "hidden_size": 576,
                "num_hidden_layers": 30,
                "num_attention_heads": 9,
                "num_key_value_heads": 3,
                "intermediate_size": 1536,
                "tie_word_embeddings": True,
                "rope_theta": 100000.0,
            },
        }[name]
        model = LlamaForCausalLM(
            LlamaConfig(max_position_embeddings=2048, rms_norm_eps=1e-5, **shape)
        )
    model.save_pretrained(folder, safe_serialization=True)
    c = model.config
    arch = "gpt2" if name == "gpt2" else "llama"
    shape = {
        "arch": arch,
        "vocab": c.vocab_size,
        "context": c.n_positions if arch == "gpt2" else c.max_position_embeddings,
        "d_model": c.hidden_size,
        "layers": c.num_hidden_layers,
        "heads": c.num_attention_heads,
        "kv_heads": c.num_attention_heads if arch == "gpt2" else c.num_key_value_heads,
        "d_ff": c.n_inner if arch == "gpt2" else c.intermediate_size,
        "norm_eps": c.layer_norm_epsilon if arch == "gpt2" else c.rms_norm_eps,
        "rope_theta": 10000.0 if arch == "gpt2" else rope_theta(c),
        "tie_embeddings": bool(c.tie_word_embeddings),
    }
    with open(os.path.join(folder, "model.json"), "w") as f:
        json.dump(shape, f)


def rope_theta(config) -> float:
    """RoPE's base (``transformers`` 5 keeps it in ``rope_parameters``)."""
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def tokens() -> torch.Tensor:
    """The scan's tokens: the first 8 windows of 257 bytes, overlapping by one."""
    with gzip.open(TEXT, "rb") as f:
        text = f.read(CONTEXT * WINDOWS + 1)
    return torch.tensor(list(text), dtype=torch.long)


def scan_spec(name: str, checkpoint: str) -> str:
    points = GRIDS[name]
    # smollm2's 538 MB checkpoint is more than a submission carries: the workers read it
    # where it is, and draw the directions themselves.
    shared = "true" if name == "smollm2" else "false"
    return f"""
name = "{name}-scan"
kind = "landscape"
[data]
path = "{TEXT}"
tokenizer = "bytes"
context = {CONTEXT}
val_fraction = 0.5
[landscape]
checkpoint = "{checkpoint}"
shared_checkpoint = {shared}
split = "train"
tokens = {CONTEXT * WINDOWS}
x = {{ min = -1.0, max = 1.0, points = {points} }}
y = {{ min = -1.0, max = 1.0, points = {points} }}
directions = {{ seed = 0 }}
"""


def torch_loop(
    name: str, folder: str, directions: str | None
) -> tuple[float, list[float]]:
    """Points per second of the seed's loop over the grid, and its losses (x fastest).
    Without Ridgeline's directions (smollm2), along filter-normalised ones of its own."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa")
    model.eval()
    dirs = load_file(directions) if directions else own_directions(model)
    # The tensors the directions cover (a tied lm_head under its first name).
    tensors = {n: t for n, t in model.state_dict().items() if f"x.{n}" in dirs}
    base = {n: t.clone() for n, t in tensors.items()}
    dx = {n: torch.from_numpy(dirs[f"x.{n}"]) for n in tensors}
    dy = {n: torch.from_numpy(dirs[f"y.{n}"]) for n in tensors}
    ids = tokens()
    x = ids[:-1].view(WINDOWS, CONTEXT)
    y = ids[1:].reshape(-1)
    axis = np.linspace(-1.0, 1.0, GRIDS[name])
    losses = []
    with torch.no_grad():
        start = time.perf_counter()
        for b in axis:
            for a in axis:
                for n, t in tensors.items():
                    t.copy_(base[n] + float(a) * dx[n] + float(b) * dy[n])
                logits = model(input_ids=x).logits
                losses.append(
                    float(
                        torch.nn.functional.cross_entropy(logits.view(y.numel(), -1), y)
                    )
                )
        seconds = time.perf_counter() - start
        for n, t in tensors.items():
            t.copy_(base[n])
    return len(losses) / seconds, losses


def own_directions(model) -> dict:
    """Filter-normalised random directions (zero for biases and norms), as Ridgeline's
    default; only their cost matters here. A tied tensor gets one, under its first
    name."""
    g = torch.Generator().manual_seed(0)
    out, seen = {}, set()
    for n, t in model.state_dict().items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        for axis in "xy":
            d = torch.zeros_like(t)
            if t.dim() > 1:
                d = torch.randn(t.shape, generator=g)
                d *= t.norm(dim=1, keepdim=True) / (d.norm(dim=1, keepdim=True) + 1e-10)
            out[f"{axis}.{n}"] = d.numpy()
    return out


def ridgeline(args: argparse.Namespace, work: str, spec: str, out: str) -> float:
    """Seconds of one `ridgeline run`, from process start to exit."""
    start = time.perf_counter()
    subprocess.run(
        [args.ridgeline, "run", spec, "--workers", str(args.workers), "--out", out],
        cwd=work,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--ridgeline", default=os.path.join(ROOT, "target", "release", "ridgeline")
    )
    ap.add_argument("--models", default="gpt2,llama,smollm2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    work = tempfile.mkdtemp()
    for name in args.models.split(","):
        folder = os.path.join(work, name)
        build(name, folder)
        with open(os.path.join(work, f"{name}.toml"), "w") as f:
            f.write(scan_spec(name, folder))
        # The same scan of one point: what starting, loading and drawing directions
        # cost, so that the grid alone can be set beside the loop's grid alone.
        with open(os.path.join(work, f"{name}-one.toml"), "w") as f:
            f.write(
                scan_spec(name, folder).replace(f"points = {GRIDS[name]}", "points = 1")
            )
        points = GRIDS[name] ** 2
        ours, grid, theirs = [], [], []
        for r in range(args.rounds):
            out = os.path.join(work, f"{name}-scan{r}")
            seconds = ridgeline(args, work, f"{name}.toml", out)
            one = ridgeline(args, work, f"{name}-one.toml", out + "-one")
            ours.append(points / seconds)
            grid.append((points - 1) / (seconds - one))
            sweep = next(os.scandir(os.path.join(out, "sweeps"))).path
            surface = np.load(os.path.join(sweep, "surface.npy")).reshape(-1)
            directions = os.path.join(sweep, "directions.safetensors")
            shared = not os.path.exists(directions)
            rate, losses = torch_loop(name, folder, None if shared else directions)
            theirs.append(rate)
            # Along different directions only the centre, θ* itself, is the same point.
            pick = [len(losses) // 2] if shared else slice(None)
            want = np.array(losses)[pick]
            gap = float(np.max(np.abs(surface[pick] - want) / np.abs(want)))
            print(
                json.dumps(
                    {
                        "model": name,
                        "round": r,
                        "ridgeline_points_per_s": round(ours[-1], 3),
                        "ridgeline_grid_points_per_s": round(grid[-1], 3),
                        "one_point_run_s": round(one, 2),
                        "torch_points_per_s": round(rate, 3),
                        "largest_relative_loss_gap": float(f"{gap:.2g}"),
                    }
                ),
                flush=True,
            )
        theirs_rate = statistics.median(theirs)
        print(
            f"{name} scan, ridgeline run ({args.workers} worker(s)) / PyTorch loop "
            f"(2 threads, sdpa), grid alone: {statistics.median(grid) / theirs_rate:.2f}x; "
            f"ridgeline from process start: {statistics.median(ours) / theirs_rate:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
