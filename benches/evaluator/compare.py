"""Evaluator scans through a real coordinator against the seed's own PyTorch loop, in one
run on this machine (issue 24's benchmark; figures in docs/performance.md):

- ``loop``: one Python process, the loss-landscape loop (θ* + α·d₁ + β·d₂ per point
  under ``torch.no_grad()``, evaluate, restore θ*), all cores' threads;
- ``ridgeline run`` with a ``[landscape.evaluator]`` spec on one worker (one evaluator
  with all cores' threads) and on two (one thread each): leasing, tiles over the line
  protocol, restores and assembly included.

Both are timed from process start (Python, torch and the model's set-up included: what a
user waits for), and the loop's grid alone as well. Its values are checked against
Ridgeline's surface, computed with Ridgeline's directions.

    python benches/evaluator/compare.py --ridgeline target/release/ridgeline [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GRIDS = {"mlp": (16, 16), "gpt2": (8, 8)}


def loop(model_name: str, points: int, directions: str, threads: int) -> None:
    """The seed's loop over the grid; prints a JSON line (values, grid seconds)."""
    import numpy as np
    import torch

    sys.path.insert(0, HERE)
    import models
    from ridgeline.torch.evaluator import read_safetensors

    torch.set_num_threads(threads)
    model, loss_fn, batches = getattr(models, model_name)()
    model.eval()
    dirs = read_safetensors(directions)
    # The tensors the directions cover (a tied one, GPT-2's lm_head, under its first name).
    tensors = {n: t for n, t in model.state_dict().items() if f"x.{n}" in dirs}
    base = {n: t.clone() for n, t in tensors.items()}
    d = [{n: torch.from_numpy(dirs[f"{k}.{n}"]) for n in tensors} for k in "xy"]
    axis = np.linspace(-1.0, 1.0, points)
    start = time.perf_counter()
    values = []
    with torch.no_grad():
        for b in axis:
            for a in axis:
                for n, t in tensors.items():
                    t.copy_(base[n] + float(a) * d[0][n] + float(b) * d[1][n])
                total = sum(
                    float(loss_fn(_call(model, x), y)) * _rows(y) for x, y in batches
                )
                values.append(total / sum(_rows(y) for _, y in batches))
                for n, t in tensors.items():
                    t.copy_(base[n])
    print(json.dumps({"grid_s": time.perf_counter() - start, "values": values}))


def _call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _rows(y) -> int:
    return int(y.shape[0])


def spec(model_name: str, points: int, tile: int, per_pass: int = 1) -> dict:
    axis = {"min": -1.0, "max": 1.0, "points": points}
    return {
        "name": f"bench-{model_name}",
        "kind": "landscape",
        "landscape": {
            "evaluator": {
                "python": f"models:{model_name}",
                "interpreter": sys.executable,
                "workdir": HERE,
                "points_per_pass": per_pass,
            },
            "tile": tile,
            "x": axis,
            "y": axis,
            "directions": {"seed": 1},
        },
    }


def ridgeline_run(
    binary: str, model_name: str, workers: int, out: str, per_pass: int = 1
) -> float:
    """Seconds of `ridgeline run` (NaN when it failed, e.g. a model vmap cannot map)."""
    points, tile = GRIDS[model_name]
    start = time.perf_counter()
    done = subprocess.run(
        [binary, "run", "-", "--workers", str(workers), "--out", out, "--fresh"],
        input=json.dumps(spec(model_name, points, tile, per_pass)),
        check=False,
        text=True,
        capture_output=True,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-2000:])
        return float("nan")
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ridgeline", required=True)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--models", default="mlp,gpt2")
    ap.add_argument("--points-per-pass", type=int, default=8)
    args = ap.parse_args()
    import numpy as np

    cores = os.cpu_count() or 1
    rows = []
    for name in args.models.split(","):
        points = GRIDS[name][0]
        n = points * points
        times: dict = {"loop": [], "loop_grid": [], "one": [], "two": [], "stacked": []}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                # Alternated, so that a slower moment of the machine hits every column.
                times["one"].append(
                    ridgeline_run(args.ridgeline, name, 1, f"{tmp}/one")
                )
                start = time.perf_counter()
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "loop",
                        name,
                        str(points),
                        f"{tmp}/one/{_sweep_dir(tmp + '/one')}/directions.safetensors",
                        str(cores),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                times["loop"].append(time.perf_counter() - start)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                times["loop_grid"].append(result["grid_s"])
                times["two"].append(
                    ridgeline_run(args.ridgeline, name, 2, f"{tmp}/two")
                )
                times["stacked"].append(
                    ridgeline_run(
                        args.ridgeline, name, 1, f"{tmp}/pp", args.points_per_pass
                    )
                )
            surface = np.load(f"{tmp}/one/{_sweep_dir(tmp + '/one')}/surface.npy")
            loop_values = np.array(result["values"]).reshape(points, points)
            rel = float(np.max(np.abs(surface - loop_values) / np.abs(loop_values)))
        med = {k: float(np.median(v)) for k, v in times.items()}
        rows.append((name, n, med, rel))
    print(f"cores: {cores}, rounds: {args.rounds} (medians)")
    pp = args.points_per_pass
    print(
        "| model | points | loop (process) | loop (grid only) | ridgeline, 1 worker | 2 workers "
        f"| 1 worker, {pp} points per pass | 1 worker / loop | 2 workers / loop "
        f"| {pp} per pass / loop | overhead per point, 1 worker | max rel. difference |"
    )
    print("| --- " * 12 + "|")
    for name, n, m, rel in rows:
        rate = {k: n / v for k, v in m.items()}
        print(
            f"| {name} | {n} | {m['loop']:.2f} s ({rate['loop']:.1f}/s) | {m['loop_grid']:.2f} s "
            f"({rate['loop_grid']:.1f}/s) | {m['one']:.2f} s ({rate['one']:.1f}/s) | "
            f"{m['two']:.2f} s ({rate['two']:.1f}/s) | {m['stacked']:.2f} s "
            f"({rate['stacked']:.1f}/s) | {m['loop'] / m['one']:.2f}x | "
            f"{m['loop'] / m['two']:.2f}x | {m['loop'] / m['stacked']:.2f}x | "
            f"{1000 * (m['one'] - m['loop']) / n:.2f} ms | {rel:.1e} |"
        )
    return 0


def _sweep_dir(out: str) -> str:
    """The sweep's folder under a run's --out (the one holding surface.npy)."""
    for root, _dirs, files in os.walk(out):
        if "surface.npy" in files:
            return os.path.relpath(root, out)
    raise FileNotFoundError(f"no surface.npy under {out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "loop":
        loop(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        sys.exit(0)
    sys.exit(main())
