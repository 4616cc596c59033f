"""PyTorch models scanned through a real coordinator and two real workers, each
starting its own evaluator processes, checked against the seed's own loop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_models

import ridgeline
from ridgeline.torch.evaluator import read_safetensors

GRID = {"min": -1.0, "max": 1.0, "points": 9}


def scan_spec(function: str, name: str) -> dict:
    return {
        "name": name,
        "kind": "landscape",
        "landscape": {
            "evaluator": {"python": function, "interpreter": sys.executable, "timeout": 120},
            "tile": 9,
            "x": GRID,
            "y": GRID,
            "directions": {"seed": 3},
        },
    }


def own_loop(
    dirs: dict, xs: np.ndarray, ys: np.ndarray, double: bool = False, build=torch_models.cnn
) -> np.ndarray:
    """The seed's loop: θ* + α·d1 + β·d2 per point under no_grad, then restore (in
    float64 throughout with `double`)."""
    model, loss_fn, batches = build()
    model.eval()
    if double:
        model = model.double()
        batches = [(x.double() if torch.is_floating_point(x) else x, y) for x, y in batches]
    tensors = {n: t for n, t in model.state_dict().items() if torch.is_floating_point(t)}
    base = {n: t.clone() for n, t in tensors.items()}
    out = np.empty((len(ys), len(xs)))
    with torch.no_grad():
        for i, b in enumerate(ys):
            for j, a in enumerate(xs):
                for n, t in tensors.items():
                    v = base[n].double() + float(a) * torch.from_numpy(dirs["x." + n]).double()
                    v = v + float(b) * torch.from_numpy(dirs["y." + n]).double()
                    t.copy_(v.to(t.dtype))
                total = sum(float(loss_fn(model(x), y)) * len(y) for x, y in batches)
                out[i, j] = total / sum(len(y) for _, y in batches)
                for n, t in tensors.items():
                    t.copy_(base[n])
    for n, t in tensors.items():
        assert torch.equal(t, base[n])
    return out


def test_a_pytorch_cnn_with_batchnorm_scans_as_its_own_loop(cluster, in_tests_folder, tmp_path):
    sweep = cluster.client.submit(scan_spec("torch_models:cnn", "torch-cnn"))
    final = sweep.wait(progress=False, timeout=600)
    assert final["state"] == "completed", final
    s = sweep.surface()
    assert s.loss.shape == (9, 9)
    assert s.meta["evaluator"] == "torch_models:cnn"
    folder = Path(sweep.files())
    dirs = read_safetensors(str(folder / "directions.safetensors"))
    # Batch-norm statistics and the ignored 1-D tensors get zero directions (biasbn).
    assert not dirs["x.1.running_mean"].any() and not dirs["x.0.bias"].any()
    assert dirs["x.0.weight"].any() and dirs["y.4.weight"].any()
    want = own_loop(dirs, s.x, s.y)
    rel = np.abs(s.loss - want) / np.abs(want)
    assert rel.max() <= 1e-6, rel.max()
    # The centre is θ* itself: the model's own loss.
    assert s.loss[4, 4] == want[4, 4]
    # Every tile was evaluated along the same directions, whichever worker's evaluator
    # drew them.
    digests = {t["metrics"]["directions_fnv48"] for t in sweep.results()["trials"]}
    assert len(digests) == 1, digests
    workers = {t["worker"] for t in sweep.results()["trials"]}
    # One worker, one process: the same surface bit for bit.
    alone = ridgeline.run(
        scan_spec("torch_models:cnn", "torch-cnn"), workers=1, out=tmp_path / "one", progress=False
    )
    assert alone.surface().loss.tobytes() == s.loss.tobytes(), workers


def test_a_small_pytorch_transformer_scans_as_its_own_loop(cluster, in_tests_folder, tmp_path):
    spec = scan_spec("torch_models:transformer", "torch-transformer")
    sweep = cluster.client.submit(spec)
    final = sweep.wait(progress=False, timeout=600)
    assert final["state"] == "completed", final
    s = sweep.surface()
    files = Path(sweep.files())
    dirs = read_safetensors(str(files / "directions.safetensors"))
    # Filter-normalised per row of the attention's packed projection, none for the
    # layer norms' 1-D tensors (biasbn).
    assert dirs["x.blocks.layers.0.self_attn.in_proj_weight"].shape == (96, 32)
    assert not dirs["x.norm.weight"].any()
    want = own_loop(dirs, s.x, s.y, build=torch_models.transformer)
    rel = np.abs(s.loss - want) / np.abs(want)
    assert rel.max() <= 1e-5, rel.max()
    assert len({t["metrics"]["directions_fnv48"] for t in sweep.results()["trials"]}) == 1
    # A one-worker run draws the directions afresh from the seed: the same bits, and the
    # same surface.
    alone = ridgeline.run(spec, workers=1, out=tmp_path / "one", progress=False)
    again = Path(alone.files()) / "directions.safetensors"
    assert again.read_bytes() == (files / "directions.safetensors").read_bytes()
    assert alone.surface().loss.tobytes() == s.loss.tobytes()


def test_an_evaluator_that_raises_fails_its_units_with_the_reason(cluster, in_tests_folder):
    sweep = cluster.client.submit(scan_spec("torch_models:broken", "torch-broken"))
    final = sweep.wait(progress=False, timeout=600)
    assert final["state"] == "failed", final
    errors = {t["error"] for t in sweep.results()["trials"] if t["state"] == "failed"}
    assert errors and all(
        "RuntimeError: no such checkpoint: /nowhere/model.pt" in e for e in errors
    ), errors


def test_a_hung_evaluator_is_stopped_and_its_unit_fails_saying_so(cluster, in_tests_folder):
    spec = scan_spec("torch_models:hangs", "torch-hangs")
    spec["landscape"]["evaluator"]["timeout"] = 3
    spec["landscape"]["x"] = spec["landscape"]["y"] = {"min": -1.0, "max": 1.0, "points": 3}
    sweep = cluster.client.submit(spec)
    final = sweep.wait(progress=False, timeout=300)
    assert final["state"] == "failed", final
    (trial,) = sweep.results()["trials"]
    assert "did not answer tile within 3 s" in trial["error"], trial["error"]
    assert trial["attempts"] >= 2, trial  # retried, each attempt with a fresh evaluator


def test_the_one_call_entry_gives_the_surface_of_the_seed_loop(in_tests_folder, tmp_path):
    import ridgeline.torch

    s = ridgeline.torch.landscape(
        torch_models.cnn,
        points=5,
        span=0.5,
        seed=3,
        workers=1,
        tile=25,
        out=tmp_path / "one-call",
        progress=False,
    )
    dirs = read_safetensors(
        str(
            tmp_path
            / "one-call"
            / "sweeps"
            / next(p.name for p in (tmp_path / "one-call" / "sweeps").iterdir())
            / "directions.safetensors"
        )
    )
    assert np.allclose(s.x, np.linspace(-0.5, 0.5, 5))
    want = own_loop(dirs, s.x, s.y)
    assert (np.abs(s.loss - want) / np.abs(want)).max() <= 1e-6


def _worker_name(trial: dict) -> str:
    """The name a worker was started with (results say "<id>-<name>")."""
    return str(trial["worker"] or "").split("-", 1)[-1]


def _kill_as_a_tile_starts(sweep, worker, kill) -> "tuple[int, list]":
    """Calls ``kill(evaluators)`` as worker ``w0`` (process ``worker``) starts a tile,
    once another tile has finished; returns that tile's trial and the evaluators. A
    worker between tiles, or whose share is done, holds nothing to lease again."""
    import time

    deadline = time.monotonic() + 120
    seen: set = set()
    while time.monotonic() < deadline:
        trials = sweep.results()["trials"]
        mine = {t["trial"] for t in trials if t["state"] == "running" and _worker_name(t) == "w0"}
        done = sum(t["state"] == "completed" for t in trials)
        evaluators = _children(worker.pid)
        fresh = mine - seen
        if fresh and evaluators and done >= 1:
            kill(evaluators)
            return min(fresh), evaluators
        seen |= mine
        time.sleep(0.05)
    raise AssertionError("worker w0 never started a tile with an evaluator after one finished")


def _ran_again(sweep, held: int) -> dict:
    """The tile leased when the fault struck ran again, to completion; returns it."""
    final = sweep.wait(progress=False, timeout=600)
    assert final["state"] == "completed", final
    again = next(t for t in sweep.results()["trials"] if t["trial"] == held)
    assert again["attempts"] >= 2 and again["state"] == "completed", again
    return again


def test_an_evaluator_killed_mid_scan_costs_a_retry_not_a_bit(cluster, in_tests_folder, tmp_path):
    import os
    import signal

    sweep = cluster.client.submit(scan_spec("torch_models:slow_cnn", "torch-kill"))
    held, _ = _kill_as_a_tile_starts(
        sweep, cluster.procs[1], lambda evaluators: os.kill(evaluators[0], signal.SIGKILL)
    )
    _ran_again(sweep, held)
    # The same surface, bit for bit, as the model scanned without a fault.
    alone = ridgeline.run(
        scan_spec("torch_models:cnn", "torch-cnn"), workers=1, out=tmp_path / "one", progress=False
    )
    assert alone.surface().loss.tobytes() == sweep.surface().loss.tobytes()


def test_a_worker_killed_mid_scan_costs_a_lease_not_a_bit(in_tests_folder, tmp_path):
    import signal
    import time

    from conftest import Cluster

    fast = {
        "RIDGELINE_LEASE_TTL_MS": "3000",
        "RIDGELINE_HEARTBEAT_INTERVAL_MS": "300",
        "RIDGELINE_EVALUATOR_IDLE_S": "2",
    }
    c = Cluster(tmp_path / "cluster", fast)
    try:
        sweep = c.client.submit(scan_spec("torch_models:slow_cnn", "torch-worker-kill"))
        victim = c.procs[1]
        held, children = _kill_as_a_tile_starts(
            sweep, victim, lambda _: victim.send_signal(signal.SIGKILL)
        )
        # The tile it held was leased again, to the other worker.
        assert _worker_name(_ran_again(sweep, held)) == "w1"
        # The dead worker's evaluators end with it (their stdin closes).
        gone = time.monotonic() + 30
        while any(_alive(p) for p in children) and time.monotonic() < gone:
            time.sleep(0.1)
        assert not any(_alive(p) for p in children), children
        # The other worker lives on; its evaluators, idle once the scan is done, are
        # stopped after RIDGELINE_EVALUATOR_IDLE_S.
        survivor = c.procs[2].pid
        while time.monotonic() < gone + 30 and _children(survivor):
            time.sleep(0.2)
        assert c.procs[2].poll() is None and not _children(survivor)
        alone = ridgeline.run(
            scan_spec("torch_models:cnn", "torch-cnn"),
            workers=1,
            out=tmp_path / "one",
            progress=False,
        )
        assert alone.surface().loss.tobytes() == sweep.surface().loss.tobytes()
    finally:
        c.close()


def _children(pid: int) -> list:
    """The live child processes of worker `pid` but its launcher (`ridgeline-spawn`,
    which every worker forks at start to start command trials): its evaluators."""
    import subprocess

    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True).stdout
    return [p for p in (int(x) for x in out.split()) if _alive(p) and _name(p) != "ridgeline-spawn"]


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_hugging_face_gpt2_example_centre_is_the_models_own_loss(tmp_path):
    """examples/torch: a transformers GPT-2 (random init, byte tokens of Moby-Dick)."""
    examples = Path(__file__).resolve().parent.parent.parent / "examples" / "torch"
    spec = {
        "name": "gpt2-moby-torch",
        "kind": "landscape",
        "landscape": {
            "evaluator": {
                "python": "gpt2_moby:build",
                "interpreter": sys.executable,
                "workdir": str(examples),
            },
            "tile": 9,
            "x": {"min": -1.0, "max": 1.0, "points": 3},
            "y": {"min": -1.0, "max": 1.0, "points": 3},
            "directions": {"seed": 0},
        },
    }
    run = ridgeline.run(spec, workers=1, out=tmp_path / "gpt2", progress=False)
    s = run.surface()
    # GPT-2's output layer is tied to its token embedding: one tensor, one direction.
    dirs = read_safetensors(str(Path(run.files()) / "directions.safetensors"))
    assert "x.transformer.wte.weight" in dirs and "x.lm_head.weight" not in dirs
    sys.path.insert(0, str(examples))
    try:
        import gpt2_moby
    finally:
        sys.path.remove(str(examples))
    model = gpt2_moby.model().eval()
    with torch.no_grad():
        data = gpt2_moby.batches()
        total = sum(float(model(**x).loss) * len(y) for x, y in data)
        want = total / sum(len(y) for _, y in data)
    assert abs(s.loss[1, 1] - want) <= 1e-6 * want, (s.loss[1, 1], want)
    # Random weights over 256 byte values: about ln 256 = 5.55 at the centre.
    assert 5.0 < want < 6.0
    assert np.isfinite(s.loss).all()


def test_float64_evaluation_is_the_float64_loop(in_tests_folder, tmp_path):
    spec = scan_spec("torch_models:cnn", "torch-cnn-f64")
    spec["landscape"]["evaluator"]["dtype"] = "float64"
    spec["landscape"]["x"] = spec["landscape"]["y"] = {"min": -1.0, "max": 1.0, "points": 3}
    sweep = ridgeline.run(spec, workers=1, out=tmp_path / "f64", progress=False)
    s = sweep.surface()
    dirs = read_safetensors(str(Path(sweep.files()) / "directions.safetensors"))
    f64 = own_loop(dirs, s.x, s.y, double=True)
    f32 = own_loop(dirs, s.x, s.y)
    assert (np.abs(s.loss - f64) / f64).max() <= 1e-12
    # The option changes what is computed: float32 differs in the last digits.
    assert (np.abs(s.loss - f32) / f32).max() > 1e-9


def dense_hessian(model: torch.nn.Module, loss_fn, batches, shift=None) -> np.ndarray:
    """The Hessian of the mean loss over all samples with respect to the parameters,
    by torch.autograd.functional.hessian in float64 (θ* + `shift` when given)."""
    from torch.func import functional_call

    model = model.double().eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    if shift is not None:
        theta = theta + torch.from_numpy(shift)
    buffers = dict(model.named_buffers())
    total = sum(len(y) for _, y in batches)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params = dict(
            zip(names, (c.view(s) for c, s in zip(flat.split([s.numel() for s in shapes]), shapes)))
        )
        out = 0
        for x, y in batches:
            out = out + loss_fn(functional_call(model, {**params, **buffers}, (x.double(),)), y) * (
                len(y) / total
            )
        return out

    return torch.autograd.functional.hessian(loss, theta).numpy()


def test_the_hessian_of_a_pytorch_model_is_its_dense_hessians(cluster, in_tests_folder):
    spec = scan_spec("torch_models:small", "torch-hessian")
    spec["landscape"]["evaluator"]["dtype"] = "float64"
    spec["landscape"]["x"] = spec["landscape"]["y"] = {"min": -1.0, "max": 1.0, "points": 3}
    spec["landscape"]["hessian"] = {
        "top_k": 3,
        "block": 4,
        "rounds": 40,
        "probes": 40,
        "shards": 3,
        "tolerance": 1e-7,
        "seed": 5,
        "density": {"probes": 3, "steps": 30},
    }
    spec["landscape"]["curvature"] = {"points": 3, "steps": 30, "probes": 20}
    sweep = cluster.client.submit(spec)
    final = sweep.wait(progress=False, timeout=900)
    assert final["state"] == "completed", final
    h = sweep.hessian()
    model, loss_fn, batches = torch_models.small()
    want = np.linalg.eigvalsh(dense_hessian(model, loss_fn, batches))
    assert h["parameters"] == len(want) == 1402
    # The top converges within 40 rounds; the bottom's cluster (-0.1456, -0.1434, ...)
    # need not: its residual says how far it is.
    assert all(t["converged"] for t in h["top_eigenvalues"]), h["top_eigenvalues"]
    # Each reported eigenvalue lies within its residual of the true one (plus rounding).
    for got, exact in zip(h["top_eigenvalues"], want[::-1]):
        assert abs(got["value"] - exact) <= got["residual"] + 1e-9 * abs(exact), (got, exact)
    assert abs(h["lambda_min"]["value"] - want[0]) <= h["lambda_min"]["residual"] + 1e-9, (
        h["lambda_min"],
        want[0],
    )
    assert want[0] < 0 < want[-1]  # tanh: both signs, so λmin means something
    tr = h["trace"]
    assert abs(tr["estimate"] - want.sum()) <= 3 * tr["std_error"], (tr, want.sum())
    slq = h["density"]["trace_estimate"]
    assert abs(slq["estimate"] - want.sum()) <= 3 * slq["std_error"] + 1e-6, (slq, want.sum())
    # Curvature at a corner of the sub-grid: the dense Hessian at θ* + α d₁ + β d₂.
    curv = json.loads((Path(sweep.files()) / "curvature.json").read_text())
    dirs = read_safetensors(str(Path(sweep.files()) / "directions.safetensors"))
    a, b = curv["x"][0], curv["y"][2]
    shift = np.concatenate(
        [
            (a * dirs["x." + n].astype(np.float64) + b * dirs["y." + n].astype(np.float64)).ravel()
            for n, _ in model.named_parameters()
        ]
    )
    model, loss_fn, batches = torch_models.small()
    at = np.linalg.eigvalsh(dense_hessian(model, loss_fn, batches, shift))
    k = 2 * 3 + 0  # row-major [y, x]
    assert abs(curv["lambda_max"][k] - at[-1]) <= curv["lambda_max_residual"][k] + 1e-9, (
        curv["lambda_max"][k],
        at[-1],
    )
    assert abs(curv["trace"][k] - at.sum()) <= 3 * curv["trace_std_error"][k], (curv, at.sum())
    # The point is away from θ*: its curvature is not the centre's.
    assert abs(at[-1] - want[-1]) > 1e-3 * abs(want[-1])


def test_target_and_file_directions_of_an_evaluator_scan(in_tests_folder, tmp_path):
    from ridgeline.torch.evaluator import write_safetensors

    # A random scan, then the same scan along its own directions read from a file: the
    # same surface bit for bit.
    spec = scan_spec("torch_models:cnn", "torch-random")
    spec["landscape"]["x"] = spec["landscape"]["y"] = {"min": -1.0, "max": 1.0, "points": 3}
    first = ridgeline.run(spec, workers=1, out=tmp_path / "random", progress=False)
    dirs_file = Path(first.files()) / "directions.safetensors"
    spec["landscape"]["directions"] = {"type": "file", "file": str(dirs_file)}
    again = ridgeline.run(spec, workers=1, out=tmp_path / "file", progress=False)
    assert again.surface().loss.tobytes() == first.surface().loss.tobytes()
    # Towards a target: another state_dict of the model (here its weights halved), saved
    # as safetensors; the 1-D scan interpolates, α = 1 being the target itself.
    model, loss_fn, batches = torch_models.cnn()
    target = {
        n: (t * 0.5 if n.endswith("weight") and t.dim() > 1 else t)
        for n, t in model.state_dict().items()
        if torch.is_floating_point(t)
    }
    write_safetensors(str(tmp_path / "target.safetensors"), target)
    line = scan_spec("torch_models:cnn", "torch-target")
    del line["landscape"]["y"]
    line["landscape"]["x"] = {"min": 0.0, "max": 1.0, "points": 5}
    line["landscape"]["directions"] = {"type": "target", "to": str(tmp_path / "target.safetensors")}
    s = ridgeline.run(line, workers=1, out=tmp_path / "target", progress=False).surface()
    model.eval()
    tensors = {n: t for n, t in model.state_dict().items() if torch.is_floating_point(t)}
    base = {n: t.clone() for n, t in tensors.items()}
    for alpha, got in zip(s.x, s.loss):
        with torch.no_grad():
            for n, t in tensors.items():
                d = target[n].double() - base[n].double()
                t.copy_((base[n].double() + float(alpha) * d).float())
            want = sum(float(loss_fn(model(x), y)) * len(y) for x, y in batches) / 96
        assert abs(got - want) <= 1e-6 * want, (alpha, got, want)
    # The ends are the two models: θ* at 0, the target at 1.
    assert s.loss[0] != s.loss[-1]


def test_points_per_pass_evaluates_several_points_in_one_pass_to_the_same_values(
    in_tests_folder, tmp_path
):
    spec = scan_spec("torch_models:cnn", "torch-stacked")
    spec["landscape"]["evaluator"]["dtype"] = "float64"
    spec["landscape"]["x"] = spec["landscape"]["y"] = {"min": -1.0, "max": 1.0, "points": 3}
    one = ridgeline.run(spec, workers=1, out=tmp_path / "one", progress=False).surface()
    # 4 points per pass: two full passes and a single point in each 9-point tile.
    spec["landscape"]["evaluator"]["points_per_pass"] = 4
    sweep = ridgeline.run(spec, workers=1, out=tmp_path / "four", progress=False)
    four = sweep.surface()
    dirs = read_safetensors(str(Path(sweep.files()) / "directions.safetensors"))
    want = own_loop(dirs, four.x, four.y, double=True)
    assert (np.abs(four.loss - want) / want).max() <= 1e-12
    assert (np.abs(four.loss - one.loss) / one.loss).max() <= 1e-12
    assert np.array_equal(four.accuracy, one.accuracy)
    assert np.isfinite(four.accuracy).all()


def test_the_mnist_resnet_example_scans_its_trained_model(tmp_path, monkeypatch):
    """examples/torch: a ResNet with BatchNorm trained by plain PyTorch, its surface and
    Hessian (the spec shrunk to a 3x3 grid and a few rounds)."""
    import tomllib

    examples = Path(__file__).resolve().parent.parent.parent / "examples" / "torch"
    monkeypatch.setenv("MNIST_RESNET_CHECKPOINT", str(tmp_path / "resnet.pt"))
    spec = tomllib.loads((examples / "mnist-resnet-landscape.toml").read_text())
    land = spec["landscape"]
    land["x"] = land["y"] = {"min": -1.0, "max": 1.0, "points": 3}
    land["tile"] = 9
    land["evaluator"].update(interpreter=sys.executable, workdir=str(examples))
    land["hessian"] = {"top_k": 1, "block": 1, "rounds": 4, "probes": 2, "shards": 2}
    del land["curvature"]
    sweep = ridgeline.run(spec, workers=2, out=tmp_path / "out", progress=False)
    s = sweep.surface()
    sys.path.insert(0, str(examples))
    try:
        import mnist_resnet
    finally:
        sys.path.remove(str(examples))
    model, loss_fn, batches = mnist_resnet.build()
    model.eval()
    with torch.no_grad():
        want = sum(float(loss_fn(model(x), y)) * len(y) for x, y in batches) / 2000
        acc = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches) / 2000
    assert s.loss[1, 1] == want
    assert s.accuracy[1, 1] == acc > 0.9  # trained: two epochs reach about 97 %
    assert s.loss.max() > 2 * want  # and the directions lead away from the minimum
    h = sweep.hessian()
    assert h["parameters"] == sum(p.numel() for p in model.parameters())
    assert h["top_eigenvalues"][0]["value"] > 0 and np.isfinite(h["trace"]["estimate"])


def test_geometry_of_a_torch_model_matches_its_full_hessian():
    """ridgeline.torch.geometry against the Hessian built by torch.autograd.functional
    over the flattened parameters: λmax within its residual (exact with as many Lanczos
    steps as parameters), the trace within 3 standard errors."""
    import ridgeline.torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Dropout(0.5), torch.nn.Linear(5, 3)
    ).double()
    model.train()
    x = torch.randn(40, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    batches = [(x[:15], y[:15]), (x[15:], y[15:])]
    loss_fn = torch.nn.functional.cross_entropy

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        params, at = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            params[n] = flat[at : at + k].reshape(s)
            at += k
        model.eval()
        out = torch.func.functional_call(model, params, (x,))
        return loss_fn(out, y)

    h = torch.autograd.functional.hessian(mean_loss, flat0).numpy()
    eig = np.linalg.eigvalsh(h)
    model.train()  # as a training function leaves it
    m = ridgeline.torch.geometry(model, loss_fn, batches, steps=8, probes=64, seed=1)
    assert model.training, "the model's mode is left as it was"
    assert abs(m["hessian_lambda_max"] - eig[-1]) <= m["hessian_lambda_max_residual"] + 1e-9
    assert abs(m["hessian_trace"] - np.trace(h)) <= 3 * m["hessian_trace_std_error"], (
        m,
        np.trace(h),
    )
    exact = ridgeline.torch.geometry(model, loss_fn, batches, steps=len(flat0), probes=2)
    assert exact["hessian_lambda_max"] == pytest.approx(eig[-1], rel=1e-8, abs=1e-10)
    assert exact["hessian_lambda_max_residual"] < 1e-6
