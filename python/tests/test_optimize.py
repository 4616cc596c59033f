"""``ridgeline.optimize`` and function trials on this machine (the embedded mode), and
the report protocol from Python."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import objectives
import pytest

import ridgeline
from ridgeline import _cli
from ridgeline.trial import report_line

SPACE = {"lr": ridgeline.loguniform(1e-4, 1.0)}
ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 3, "max_t": 9}


def test_tpe_with_asha_prunes_and_finds_what_the_cli_finds(in_tests_folder, tmp_path):
    sweep = ridgeline.optimize(
        objectives.learning_curve,
        SPACE,
        n_trials=14,
        metric="val_loss",
        algorithm="tpe",
        scheduler=ASHA,
        workers=2,
        max_concurrent=1,
        seed=5,
        out=tmp_path / "py",
        progress=False,
    )
    df = sweep.trials()
    assert len(df) == 14
    states = df["state"].value_counts()
    assert states["pruned"] > 0 and states["completed"] > 0, states
    assert states.get("failed", 0) == 0
    # The same spec through the CLI (trials one at a time: TPE's suggestion for trial i
    # depends only on trials 0..i-1, so the runs agree trial by trial).
    spec = {
        "name": "learning_curve",
        "trial": {
            "function": "objectives:learning_curve",
            "python": sys.executable,
            "workdir": str(in_tests_folder),
        },
        "search": {
            "algorithm": "tpe",
            "metric": "val_loss",
            "mode": "min",
            "num_samples": 14,
            "max_concurrent": 1,
            "seed": 5,
            "space": SPACE,
            "scheduler": ASHA,
        },
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    cli = subprocess.run(
        [
            _cli.binary(),
            "run",
            str(path),
            "--workers",
            "2",
            "--out",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
        cwd=in_tests_folder,
    )
    assert cli.returncode == 0, cli.stderr
    other = ridgeline.FolderSweep(tmp_path / "cli", sweep_id_of(tmp_path / "cli"))
    assert other.best() == sweep.best()
    assert list(other.trials()["lr"]) == list(df["lr"])
    # Pruned trials stopped at a rung: their histories end before step 9.
    h = sweep.history()
    last = h.groupby("trial")["step"].max()
    for t in df.loc[df["state"] == "pruned", "trial"]:
        assert last[t] < 9
    for t in df.loc[df["state"] == "completed", "trial"]:
        assert last[t] == 9


def sweep_id_of(out):
    (only,) = [p.name for p in (out / "sweeps").iterdir()]
    return only


def random_search(fn, n: int, out) -> ridgeline.FolderSweep:
    """``n`` random trials of ``fn`` over x in [0, 1), on as many local workers."""
    return ridgeline.optimize(
        fn,
        {"x": ridgeline.uniform(0, 1)},
        n_trials=n,
        algorithm="random",
        workers=n,
        out=out,
        progress=False,
    )


def test_a_function_that_raises_fails_with_its_traceback_and_nan_diverges(
    in_tests_folder, tmp_path
):
    bad = random_search(objectives.raises, 2, tmp_path / "raises")
    df = bad.trials()
    assert list(df["state"]) == ["failed", "failed"]
    for err, x in zip(df["error"], df["x"]):
        assert f"ValueError: boom at x={x:.3f}" in err, err
    assert "boom" in bad.logs(0)
    nan = random_search(objectives.nan, 2, tmp_path / "nan")
    assert list(nan.trials()["state"]) == ["diverged", "diverged"]


def test_report_round_trips_every_metric_type(in_tests_folder, tmp_path):
    sweep = random_search(objectives.every_type, 1, tmp_path / "types")
    h = sweep.history()
    got = {(int(s), str(m)): v for s, m, v in zip(h["step"], h["metric"], h["value"])}
    exact = {
        (1, "i"): 3.0,
        (1, "f"): 0.1,
        (1, "big"): 1e300,
        (1, "tiny"): 5e-324,
        (1, "neg"): -2.5,
        (2, "f32"): float(np.float32(0.1)),
        (2, "f64"): 1 / 3,
        (2, "i64"): 7.0,
    }
    for k, v in exact.items():
        assert got[k] == v, (k, got[k], v)
    # Non-finite values travel; results carry them as missing, NaN here.
    for k in [(3, "inf"), (3, "ninf"), (3, "other_nan")]:
        assert math.isnan(got[k])
    assert list(sweep.trials()["state"]) == ["completed"]


def test_report_lines_are_the_protocol():
    assert report_line(step=3, val_loss=0.25) == 'ridgeline: {"step": 3, "val_loss": 0.25}'
    assert report_line(a=float("nan")) == 'ridgeline: {"a": NaN}'
    with pytest.raises(TypeError, match="must be a number"):
        report_line(a="high")
    with pytest.raises(ValueError, match="step"):
        report_line(step=-1, a=1.0)
    with pytest.raises(ValueError, match="at least one metric"):
        report_line(step=1)


def test_the_trial_side_reads_the_environment(monkeypatch, tmp_path):
    assert not ridgeline.is_trial() and ridgeline.params() == {}
    monkeypatch.setenv("RIDGELINE_TRIAL_ID", "4")
    monkeypatch.setenv("RIDGELINE_PARAMS", '{"lr": 0.001, "layers": 4, "opt": "sgd", "bn": true}')
    monkeypatch.setenv("RIDGELINE_TRIAL_DIR", str(tmp_path))
    report_file = tmp_path / "reports"
    monkeypatch.setenv("RIDGELINE_REPORT_FILE", str(report_file))
    assert ridgeline.is_trial() and ridgeline.trial_id() == 4
    p = ridgeline.params()
    assert p == {"lr": 0.001, "layers": 4, "opt": "sgd", "bn": True}
    assert type(p["layers"]) is int and type(p["bn"]) is bool
    assert ridgeline.trial_dir() == str(tmp_path)
    ridgeline.report(step=1, loss=0.5)
    assert report_file.read_text() == 'ridgeline: {"step": 1, "loss": 0.5}\n'


def test_a_notebook_function_is_refused_with_the_way_out():
    from ridgeline.local import function_reference

    with pytest.raises(ValueError, match="not a lambda"):
        function_reference(lambda p: 0.0)
    assert function_reference(objectives.quadratic) == f"{objectives.__file__}:quadratic"
    assert function_reference(ridgeline.trial.report) == "ridgeline.trial:report"


def test_the_package_runs_its_own_binary():
    """Installed with pip, the module finds the binary the wheel put beside the
    interpreter (unless RIDGELINE_BIN points elsewhere, as in a development tree)."""
    import os

    if "RIDGELINE_BIN" in os.environ:
        assert _cli.binary() == os.environ["RIDGELINE_BIN"]
        return
    binary = os.path.realpath(_cli.binary())
    assert binary.startswith(os.path.realpath(sys.prefix)), (binary, sys.prefix)
    assert "site-packages" in ridgeline.__file__, ridgeline.__file__
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("ridgeline ")


def test_framework_metrics_become_numbers():
    from ridgeline.integrations import numbers

    class OneElement:  # what a scalar tensor offers
        def numel(self):
            return 1

        def item(self):
            return 0.25

    class Many(OneElement):
        def numel(self):
            return 3

    got = numbers(
        {
            "eval_loss": 0.5,
            "epoch": 2,
            "t": OneElement(),
            "v": Many(),
            "np": np.float32(1.5),
            "name": "x",
            "flag": True,
            "nan": float("nan"),
        }
    )
    assert got.pop("nan") != got.get("nan", 0.0)  # NaN kept (it marks divergence)
    assert got == {"eval_loss": 0.5, "epoch": 2.0, "t": 0.25, "np": 1.5}


def test_optimize_runs_given_configurations_first_and_starts_warm(in_tests_folder, tmp_path):
    space = {"x": ridgeline.uniform(-3.0, 3.0), "y": ridgeline.uniform(-3.0, 3.0)}
    given = [{"x": 2.0, "y": -1.0}, {"x": -2.0}]
    first = ridgeline.optimize(
        objectives.quadratic,
        space,
        n_trials=12,
        metric="loss",
        algorithm="random",
        enqueue=given,
        seed=1,
        workers=1,
        out=tmp_path / "out",
        progress=False,
    )
    df = first.trials().sort_values("trial")
    assert (df["x"].iloc[0], df["y"].iloc[0]) == (2.0, -1.0)
    assert df["x"].iloc[1] == -2.0 and -3.0 <= df["y"].iloc[1] < 3.0
    assert first.best()["trial"] == 0  # the exact optimum was given
    warm = ridgeline.optimize(
        objectives.quadratic,
        space,
        n_trials=1,
        metric="loss",
        algorithm="tpe",
        seed=2,
        warm_start=first,
        workers=1,
        out=tmp_path / "out",
        name="warm",
        progress=False,
    )
    assert warm.status()["total"] == 1

    # The sampler learnt from the 12 trials (past its 10 start-up trials): its first
    # suggestion is nearer the optimum (2, -1) than most of the source's trials.
    def dist(x: float, y: float) -> float:
        return (x - 2.0) ** 2 + (y + 1.0) ** 2

    p = warm.trials().iloc[0]
    source = sorted(dist(x, y) for x, y in zip(df["x"], df["y"]))
    assert dist(p["x"], p["y"]) < source[3], (p, source)
