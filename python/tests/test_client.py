"""The client against a real coordinator with two real workers: dict specs, waiting,
results as DataFrames equal to the CLI's files, scans' arrays, downloads, errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DIGITS, TOKEN, Cluster

import ridgeline

SEARCH = {
    "name": "py-quadratic",
    "trial": {"function": "objectives:quadratic"},
    "search": {
        "algorithm": "random",
        "metric": "loss",
        "num_samples": 6,
        "seed": 7,
        "space": {
            "x": {"type": "uniform", "low": -3.0, "high": 3.0},
            "y": {"type": "uniform", "low": -3.0, "high": 3.0},
            "k": {"type": "int", "low": 1, "high": 5},
            "opt": {"type": "choice", "values": ["adamw", "sgd"]},
        },
    },
}


def with_python(spec: dict) -> dict:
    """The spec with this interpreter for function trials (the one with ridgeline)."""
    import sys

    spec = json.loads(json.dumps(spec))
    spec["trial"]["python"] = sys.executable
    return spec


@pytest.fixture(scope="module")
def finished_search(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    import os

    here = Path(__file__).resolve().parent
    old = os.getcwd()
    os.chdir(here)
    try:
        sweep = cluster.client.submit(with_python(SEARCH))
    finally:
        os.chdir(old)
    final = sweep.wait(progress=False, timeout=300)
    return sweep, final


def test_a_dict_spec_runs_and_trials_equal_results_csv_cell_by_cell(cluster, finished_search):
    sweep, final = finished_search
    assert final["state"] == "completed", final
    assert final["completed"] == 6 and final["total"] == 6
    df = sweep.trials()
    cli = cluster.cli("results", sweep.id, "--format", "csv")
    assert cli.returncode == 0, cli.stderr
    csv = pd.read_csv(io.StringIO(cli.stdout), keep_default_na=False)
    assert list(df.columns) == list(csv.columns)
    assert len(df) == len(csv) == 6
    for col in csv.columns:
        for i in range(len(csv)):
            want, got = csv[col][i], df[col][i]
            if col in ("worker", "error") and want == "":
                assert got is None, (col, i, got)
            elif isinstance(want, str):
                assert str(got) == want, (col, i, got, want)
            else:
                assert got == want, (col, i, got, want)
    # Types: what the space and the metrics are.
    assert df["trial"].dtype == np.int64
    assert isinstance(df["state"].dtype, pd.CategoricalDtype)
    assert df["x"].dtype == np.float64 and df["loss"].dtype == np.float64
    assert df["k"].dtype == np.int64
    assert isinstance(df["opt"].dtype, pd.CategoricalDtype)
    assert set(df["opt"].cat.categories) <= {"adamw", "sgd"}
    assert df["attempts"].dtype == np.int64 and df["epochs"].dtype == np.int64
    # The returned value is the final metric: (x - 2)^2 + (y + 1)^2, recomputed here.
    for _, row in df.iterrows():
        assert row["loss"] == pytest.approx((row["x"] - 2) ** 2 + (row["y"] + 1) ** 2, rel=1e-12)
        assert row["x_seen"] == row["x"]
    best = sweep.best()
    assert best is not None
    assert best["value"] == df["loss"].min()
    assert best["trial"] == int(df.loc[df["loss"].idxmin(), "trial"])


def test_history_equals_results_json(cluster, finished_search):
    sweep, _ = finished_search
    cli = cluster.cli("results", sweep.id, "--format", "json")
    assert cli.returncode == 0, cli.stderr
    results = json.loads(cli.stdout)
    want = sorted(
        (t["trial"], h["step"], k, v)
        for t in results["trials"]
        for h in t["history"]
        for k, v in h.items()
        if k != "step"
    )
    h = sweep.history()
    got = sorted(zip(h["trial"], h["step"], h["metric"].astype(str), h["value"]))
    assert got == want
    assert list(h.columns) == ["trial", "step", "metric", "value"]
    # Steps 1..3 of every trial: 3 loss reports, the last one replaced by the return.
    assert sorted(set(h["step"])) == [1, 2, 3]


def test_status_listing_logs_and_lookup(cluster, finished_search):
    sweep, _ = finished_search
    st = sweep.status()
    assert st["sweep_id"] == sweep.id and st["metric"] == "loss" and st["mode"] == "min"
    assert sweep.id in [s.id for s in cluster.client.sweeps()]
    assert cluster.client.sweep(sweep.id).status()["completed"] == 6
    with pytest.raises(ridgeline.RidgelineError, match="unknown sweep"):
        cluster.client.sweep("no-such-sweep")
    assert isinstance(sweep.logs(0), str)


def test_errors_in_a_dict_spec_name_the_field_as_the_toml_does(cluster, tmp_path):
    bad = with_python(SEARCH)
    bad["search"]["space"]["x"] = {"type": "uniform", "low": 3.0, "high": -3.0}
    with pytest.raises(ridgeline.SpecError) as e:
        cluster.client.submit(bad)
    toml = tmp_path / "bad.toml"
    toml.write_text(
        'name = "bad"\n[trial]\nfunction = "objectives:quadratic"\n'
        '[search]\nalgorithm = "random"\nmetric = "loss"\n[search.space]\n'
        'x = { type = "uniform", low = 3.0, high = -3.0 }\n'
    )
    cli = cluster.cli("submit", str(toml))
    assert cli.returncode != 0
    assert f"{toml}: {e.value.field}: {e.value.reason}" in cli.stderr, (
        cli.stderr,
        e.value,
    )
    assert e.value.field == "search.space.x"
    # A misspelt key is named too.
    typo = with_python(SEARCH)
    typo["search"]["num_sample"] = 3
    with pytest.raises(ridgeline.SpecError) as e2:
        cluster.client.submit(typo)
    assert e2.value.field == "search.num_sample", e2.value


def test_a_bad_token_raises_auth_error(cluster):
    wrong = ridgeline.Client(cluster.url, token=TOKEN + "x")
    with pytest.raises(ridgeline.AuthError, match="wrong token"):
        wrong.sweeps()


@pytest.fixture(scope="module")
def finished_scan(cluster: Cluster):
    train = {
        "name": "py-digits",
        "data": {"path": str(DIGITS)},
        "model": {"arch": "mlp", "depth": 1, "width": 16},
        "train": {"epochs": 2, "batch_size": 64},
        "search": {
            "algorithm": "grid",
            "metric": "val_accuracy",
            "space": {"lr": {"type": "grid", "values": [0.01]}},
        },
    }
    search = cluster.client.submit(train)
    assert search.wait(progress=False, timeout=300)["state"] == "completed"
    scan = {
        "name": "py-scan",
        "kind": "landscape",
        "data": {"path": str(DIGITS)},
        "landscape": {
            "checkpoint": f"sweep:{search.id}/best",
            "split": "train",
            "tile": 8,
            "x": {"min": -1.0, "max": 1.0, "points": 5},
            "y": {"min": -1.0, "max": 1.0, "points": 4},
            "directions": {"seed": 3},
            "hessian": {"top_k": 1, "rounds": 4, "shards": 2},
        },
    }
    sweep = cluster.client.submit(scan)
    final = sweep.wait(progress=False, timeout=300)
    return sweep, final


def test_surface_is_surface_npy_bit_for_bit_and_download_equals_the_clis(
    cluster, finished_scan, tmp_path
):
    sweep, final = finished_scan
    assert final["state"] == "completed", final
    cli_dir = tmp_path / "cli"
    cli = cluster.cli("download", sweep.id, "-o", str(cli_dir))
    assert cli.returncode == 0, cli.stderr
    s = sweep.surface()
    want = np.load(cli_dir / "surface.npy")
    assert s.loss.dtype == want.dtype and s.loss.shape == want.shape == (4, 5)
    assert s.loss.tobytes() == want.tobytes()
    assert s.x.tobytes() == np.load(cli_dir / "x.npy").tobytes()
    assert s.y is not None and s.y.tobytes() == np.load(cli_dir / "y.npy").tobytes()
    assert np.allclose(s.x, np.linspace(-1, 1, 5)) and np.allclose(s.y, np.linspace(-1, 1, 4))
    # The centre of the plane is the trained model: the lowest loss is where meta says.
    assert s.meta["loss_min"] == float(np.nanmin(s.loss))
    hessian = sweep.hessian()
    assert hessian == json.loads((cli_dir / "hessian.json").read_text())
    py_dir = sweep.download(tmp_path / "py")
    files = lambda d: {  # noqa: E731
        str(p.relative_to(d)): p.read_bytes() for p in Path(d).rglob("*") if p.is_file()
    }
    assert files(py_dir) == files(cli_dir)
    try:
        ds = s.to_xarray()
    except ImportError:
        return
    assert ds["loss"].shape == (4, 5)
