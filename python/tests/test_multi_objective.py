"""Multi-objective searches end to end: NSGA-II and multi-objective TPE through real
workers, the Pareto front, ranks and hypervolume checked against an independent numpy
computation, constraints, pareto.png, and the front across a coordinator restart."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import Cluster

import ridgeline
from ridgeline import RidgelineError


def spec(name: str, algorithm: str, n: int, function: str = "objectives:zdt1", **search) -> dict:
    return {
        "name": name,
        "trial": {"function": function, "python": sys.executable},
        "search": {
            "algorithm": algorithm,
            "metric": ["f1", "f2"],
            "mode": ["min", "min"],
            "num_samples": n,
            "seed": 5,
            "space": {f"x{k}": {"type": "uniform", "low": 0.0, "high": 1.0} for k in range(4)},
            **search,
        },
    }


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Rows no other row dominates (≤ everywhere, < somewhere), by brute force."""
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        le = np.all(points <= points[i], axis=1)
        lt = np.any(points < points[i], axis=1)
        keep[i] = not np.any(le & lt)
    return keep


def hypervolume_2d(points: np.ndarray, ref: np.ndarray) -> float:
    """The area dominated by `points` inside the box up to `ref`, by a sweep over f1."""
    pts = points[np.all(points < ref, axis=1)]
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    area, y = 0.0, ref[1]
    for x1, y1 in pts:
        if y1 < y:
            area += (ref[0] - x1) * (y - y1)
            y = y1
    return area


def test_nsga2_front_ranks_and_hypervolume(in_tests_folder, tmp_path):
    s = spec("zdt1-nsga2", "nsga2", 40, nsga2={"population_size": 10})
    sweep = ridgeline.run(s, out=tmp_path / "out", workers=2, progress=False)
    st = sweep.status()
    assert st["state"] == "completed" and st["objectives"] == ["f1", "f2"]
    df = sweep.trials()
    assert (df["state"] == "completed").all() and len(df) == 40
    values = df[["f1", "f2"]].to_numpy()
    on = non_dominated(values)
    # The rank column, the front and the status agree with the brute-force front.
    assert set(df.loc[df["pareto_rank"] == 0, "trial"]) == set(df.loc[on, "trial"])
    assert set(sweep.pareto()["trial"]) == set(df.loc[on, "trial"])
    assert {p["trial"] for p in st["pareto"]} == set(df.loc[on, "trial"])
    # Rank 1 is the front of what is left.
    rest = df[df["pareto_rank"] != 0]
    on1 = non_dominated(rest[["f1", "f2"]].to_numpy())
    assert set(rest.loc[rest["pareto_rank"] == 1, "trial"]) == set(rest.loc[on1, "trial"])
    # Reference point: the worst value of each objective, widened by 10 %.
    ref = np.array(st["reference_point"])
    np.testing.assert_allclose(ref, 1.1 * values.max(axis=0), rtol=1e-12)
    hv = sweep.hypervolume()
    assert list(hv["trial"]) == sorted(df["trial"])
    assert np.all(np.diff(hv["hypervolume"]) >= 0)
    want = hypervolume_2d(values[on], ref)
    assert hv["hypervolume"].iloc[-1] == pytest.approx(want, rel=1e-12)
    assert st["hypervolume"] == pytest.approx(want, rel=1e-12)
    # Generation 1 (trials 10..19) is bred from generation 0: crossover copies parents'
    # values exactly, so most of its coordinates occurred in generation 0.
    x = [f"x{k}" for k in range(4)]
    gen0 = set(df.loc[df["trial"] < 10, x].to_numpy().ravel())
    gen1 = df.loc[(df["trial"] >= 10) & (df["trial"] < 20), x].to_numpy().ravel()
    assert sum(v in gen0 for v in gen1) >= len(gen1) // 2
    # One best trial does not exist; the picture does.
    with pytest.raises(RidgelineError, match="no single best trial; see pareto"):
        sweep.best()
    png = Path(sweep.files()) / "pareto.png"
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert (width, height) == (720, 580)


def test_constrained_tpe_front_survives_a_coordinator_restart(in_tests_folder, tmp_path):
    c = Cluster(tmp_path / "cluster")
    try:
        s = spec("zdt1-tpe", "tpe", 24, function="objectives:zdt1_constrained")
        s["search"]["tpe"] = {"n_startup_trials": 8}
        sweep = c.client.submit(s)
        assert sweep.wait(progress=False, timeout=300)["state"] == "completed"
        before = sweep.status()
        df = sweep.trials()
        feasible = df["feasible"].fillna(False).to_numpy(dtype=bool)
        assert feasible.any() and not feasible.all()
        values = df[["f1", "f2"]].to_numpy()
        on = np.zeros(len(df), dtype=bool)
        on[feasible] = non_dominated(values[feasible])
        # Only feasible trials are on the front, and infeasible ones have no rank.
        assert {p["trial"] for p in before["pareto"]} == set(df.loc[on, "trial"])
        assert df.loc[~feasible, "pareto_rank"].isna().all()
        c.restart_coordinator()
        after = sweep.status()
        # Rebuilt from the stored trials: the same front, hypervolume and reference.
        assert after["pareto"] == before["pareto"]
        assert after["hypervolume"] == before["hypervolume"]
        assert after["reference_point"] == before["reference_point"]
        # The CLI's summary and results.csv say the same.
        line = c.cli("status", sweep.id).stdout
        assert f"Pareto front of {len(before['pareto'])} trials over f1, f2" in line
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(c.cli("results", sweep.id).stdout)))
        assert {int(r["trial"]) for r in rows if r["pareto_rank"] == "0"} == set(
            df.loc[on, "trial"]
        )
    finally:
        c.close()


def test_optimize_takes_several_metrics_and_a_tuple(in_tests_folder, tmp_path):
    from objectives import zdt1

    space = {f"x{k}": ridgeline.uniform(0.0, 1.0) for k in range(4)}
    sweep = ridgeline.optimize(
        zdt1,
        space,
        n_trials=12,
        metric=["f1", "f2"],
        algorithm="random",
        seed=2,
        out=tmp_path / "opt",
        workers=2,
        progress=False,
    )
    df = sweep.trials()
    assert len(df) == 12 and (df["state"] == "completed").all()
    # The tuple's values went to the objectives in order: f1 is x0.
    np.testing.assert_array_equal(df["f1"].to_numpy(), df["x0"].to_numpy())
    assert len(sweep.pareto()) >= 1


def test_a_multi_objective_spec_with_a_scheduler_is_refused(cluster):
    s = spec("mo-asha", "tpe", 4, scheduler={"type": "asha", "max_t": 3})
    with pytest.raises(
        ridgeline.SpecError, match="search.scheduler: early stopping ranks trials by one metric"
    ):
        cluster.client.submit(s)
