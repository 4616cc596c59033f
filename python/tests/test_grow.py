"""Searches that grow: configurations enqueued in the spec and while running, trials
added to an ended search across a coordinator restart, and a warm start from another
sweep; through a real coordinator and real workers."""

from __future__ import annotations

import json

from conftest import Cluster
from test_client import SEARCH, with_python


def spec(name: str, **search) -> dict:
    s = with_python(SEARCH)
    s["name"] = name
    s["search"].update({"algorithm": "tpe", **search})
    return s


def params_of(sweep) -> dict:
    return {t["trial"]: t["params"] for t in sweep.results()["trials"]}


def test_enqueued_trials_run_as_given_and_extend_goes_on_after_a_restart(in_tests_folder, tmp_path):
    c = Cluster(tmp_path / "cluster")
    try:
        first = {"x": 2.0, "y": -1.0, "k": 3, "opt": "sgd"}
        sweep = c.client.submit(spec("grow", num_samples=4, enqueue=[first, {"x": 0.5}], seed=11))
        assert sweep.wait(progress=False, timeout=300)["state"] == "completed"
        p = params_of(sweep)
        assert sorted(p) == [0, 1, 2, 3]
        assert p[0] == first
        assert p[1]["x"] == 0.5 and set(p[1]) == {"x", "y", "k", "opt"}
        # The exact optimum was given: it is the best.
        assert sweep.best()["trial"] == 0 and sweep.best()["value"] == 0.0
        # While ended: one configuration to run next, then two more sampled trials.
        later = {"x": -2.5, "y": 1.5, "k": 1, "opt": "adamw"}
        sweep.enqueue(later)
        sweep.extend(2)
        assert sweep.wait(progress=False, timeout=300)["state"] == "completed"
        p = params_of(sweep)
        assert sorted(p) == list(range(7)) and p[4] == later
        assert sweep.status()["total"] == 7
        # kill -9 of the coordinator: the grown spec and the numbering survive.
        c.restart_coordinator()
        sweep.extend(2)
        final = sweep.wait(progress=False, timeout=300)
        assert final["state"] == "completed" and final["total"] == 9
        p = params_of(sweep)
        assert sorted(p) == list(range(9)) and p[0] == first and p[4] == later
        # Never a trial run twice: every sampled configuration is new.
        seen = [json.dumps(v, sort_keys=True) for v in p.values()]
        assert len(set(seen)) == len(seen)
        # Wrong configurations are refused by name, and nothing is added.
        import subprocess

        from ridgeline import _cli

        out = subprocess.run(
            [_cli.binary(), "enqueue", sweep.id, "-", "--coordinator", c.url],
            input='{"x": 99.0}',
            env=c.env,
            capture_output=True,
            text=True,
        )
        assert out.returncode != 0 and "configuration 0.x" in out.stderr, out.stderr
        assert sweep.status()["total"] == 9
    finally:
        c.close()


def test_a_warm_start_learns_from_another_sweep(cluster, in_tests_folder):
    # A random search: its trials are a function of its seed alone (not of the order in
    # which two workers' results came in), so what the warm sweep learns is fixed.
    source = cluster.client.submit(spec("warm-source", algorithm="random", num_samples=12, seed=3))
    assert source.wait(progress=False, timeout=300)["state"] == "completed"
    tpe = {"n_startup_trials": 5}
    cold = cluster.client.submit(spec("cold", num_samples=1, seed=5, tpe=tpe))
    warm = cluster.client.submit(
        spec("warm", num_samples=1, seed=5, tpe=tpe, warm_start=f"sweep:{source.id}")
    )
    for s in (cold, warm):
        assert s.wait(progress=False, timeout=300)["state"] == "completed"
    # Same seed: the cold sweep's first trial is a random draw; the warm one's comes
    # from the model of the source's 12 trials, so it differs, and lies nearer the
    # optimum (2, -1) than the source's median trial.
    c0, w0 = params_of(cold)[0], params_of(warm)[0]
    assert c0 != w0
    dist = lambda q: (q["x"] - 2.0) ** 2 + (q["y"] + 1.0) ** 2  # noqa: E731
    source_d = sorted(dist(q) for q in params_of(source).values())
    assert dist(w0) < source_d[len(source_d) // 2], (w0, source_d)


def constrained(name: str, **search) -> dict:
    """A TPE search of objectives.constrained with latency ≤ 0, its unconstrained (and
    infeasible) optimum enqueued as trial 0."""
    s = spec(name, constraints={"latency": {"max": 0.0}}, enqueue=[{"x": 2.0, "y": -1.0}], **search)
    s["trial"]["function"] = "objectives:constrained"
    return s


def test_the_best_trial_is_the_best_feasible_one(cluster, in_tests_folder):
    sweep = cluster.client.submit(constrained("constrained", num_samples=16, seed=4))
    assert sweep.wait(progress=False, timeout=300)["state"] == "completed"
    trials = sweep.results()["trials"]
    feasible = [
        t for t in trials if t["metrics"]["latency"] <= 0.0 and t["metrics"]["constraint_y"] <= 0.0
    ]
    # Trial 0 is the unconstrained optimum (loss 0) and infeasible: not the best.
    assert trials[0]["metrics"]["loss"] == 0.0
    best = sweep.best()
    assert best["trial"] != 0 and feasible
    want = min(feasible, key=lambda t: (t["metrics"]["loss"], t["trial"]))
    assert (best["trial"], best["value"]) == (want["trial"], want["metrics"]["loss"])
    # results.json, results.csv and the DataFrame say which trials were feasible.
    ok = {t["trial"] for t in feasible}
    assert {t["trial"] for t in trials if t["feasible"]} == ok
    df = sweep.trials()
    assert set(df.loc[df["feasible"].fillna(False), "trial"]) == ok
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(cluster.cli("results", sweep.id).stdout)))
    assert {int(r["trial"]) for r in rows if r["feasible"] == "true"} == ok
    assert all(r["feasible"] in ("true", "false") for r in rows)
    # A bound without a side, or upside down, is refused by name.
    bad = with_python(SEARCH)
    bad["search"]["constraints"] = {"latency": {"min": 1.0, "max": 0.0}}
    import pytest

    from ridgeline import SpecError

    with pytest.raises(SpecError, match="search.constraints.latency: min 1 is above max 0"):
        cluster.client.submit(bad)


def test_constraints_survive_a_coordinator_restart(in_tests_folder, tmp_path):
    c = Cluster(tmp_path / "cluster")
    try:
        sweep = c.client.submit(constrained("constrained-restart", num_samples=6, seed=9))
        assert sweep.wait(progress=False, timeout=300)["state"] == "completed"
        c.restart_coordinator()
        # The restarted coordinator replays the trials with their violations; the sweep
        # grows and its best is still the best feasible trial.
        sweep.extend(4)
        assert sweep.wait(progress=False, timeout=300)["state"] == "completed"
        trials = sweep.results()["trials"]
        assert len(trials) == 10 and not trials[0]["feasible"]
        feasible = [t for t in trials if t["feasible"]]
        best = sweep.best()
        if feasible:
            want = min(feasible, key=lambda t: (t["metrics"]["loss"], t["trial"]))
            assert (best["trial"], best["value"]) == (want["trial"], want["metrics"]["loss"])
        else:
            assert best is None
    finally:
        c.close()
