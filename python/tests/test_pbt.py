"""Population based training through real workers: each trial resumes from its
parent's checkpoint (copied into its folder by the worker, or for the built-in trainer
fetched from the coordinator), and neither killed workers nor a killed coordinator
decide a round twice or leave a copy half done."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from conftest import Cluster

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"

P, ROUNDS, INTERVAL = 4, 5, 3


def spec(name: str) -> dict:
    return {
        "name": name,
        "trial": {"function": "objectives:pbt_member", "python": sys.executable},
        "search": {
            "algorithm": "pbt",
            "metric": "score",
            "mode": "max",
            "num_samples": P,
            "seed": 3,
            "pbt": {"rounds": ROUNDS, "perturbation_interval": INTERVAL},
            "space": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1.0}},
        },
    }


def storm(c: Cluster, sweep) -> dict:
    """Kills a worker, the coordinator, the other worker, ... (5 kills) as the sweep
    runs, checking that no decided trial ever changes; returns the decisions."""
    decided: dict = {}
    kills = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        st = sweep.status()
        if st["state"] != "running":
            break
        # What was decided so far must never change.
        for t in sweep.results()["trials"]:
            p = t["params"]
            if t["trial"] in decided:
                assert decided[t["trial"]] == p, (t["trial"], decided[t["trial"]], p)
            decided[t["trial"]] = p
        if st["completed"] >= 2 + 3 * kills and kills < 5:
            if kills % 2 == 1:
                c.restart_coordinator()
            else:
                c.kill_worker((kills // 2) % 2)
            kills += 1
        time.sleep(0.2)
    final = sweep.wait(progress=False, timeout=600)
    assert final["state"] == "completed", final
    assert kills == 5
    return decided


def test_pbt_lineage_survives_a_kill_storm(in_tests_folder, tmp_path):
    fast = {"RIDGELINE_LEASE_TTL_MS": "2000", "RIDGELINE_HEARTBEAT_INTERVAL_MS": "200"}
    c = Cluster(tmp_path / "cluster", fast)
    try:
        sweep = c.client.submit(spec("pbt-storm"))
        decided = storm(c, sweep)
        trials = {t["trial"]: t for t in sweep.results()["trials"]}
        assert sorted(trials) == list(range(P * ROUNDS))
        for i, t in trials.items():
            assert t["state"] == "completed", t
            p = decided.get(i, t["params"])
            assert p == t["params"], (i, p, t["params"])
            r, m = divmod(i, P)
            m_ = t["metrics"]
            # Every trial trained its round's steps, from where its parent ended.
            assert m_["start_step"] == r * INTERVAL
            if r == 0:
                assert "pbt_parent" not in t["params"] and m_["start_score"] == 0.0
                continue
            parent = t["params"]["pbt_parent"]
            assert (r - 1) * P <= parent < r * P
            assert m_["start_score"] == trials[parent]["metrics"]["score"]
            if parent != (r - 1) * P + m:
                # Exploited: the parent was in the top quantile (1 of 4) of its round,
                # and this member's own previous trial in the bottom one.
                prev = [trials[k]["metrics"]["score"] for k in range((r - 1) * P, r * P)]
                assert trials[parent]["metrics"]["score"] == max(prev)
                assert trials[(r - 1) * P + m]["metrics"]["score"] == min(prev)
            else:
                assert t["params"]["lr"] == trials[parent]["params"]["lr"]
        # More trials would change the population: refused, by name.
        import pytest

        from ridgeline import RidgelineError

        with pytest.raises(RidgelineError, match="submit one with more rounds"):
            sweep.extend(2)
        # Each checkpoint's chain of trials is its lineage, copied complete each round.
        for i in range(P * (ROUNDS - 1), P * ROUNDS):
            state = json.loads(
                (c.root / "trials" / sweep.id / f"trial-{i:05}" / "state.json").read_text()
            )
            chain = [i]
            while "pbt_parent" in trials[chain[-1]]["params"]:
                chain.append(trials[chain[-1]]["params"]["pbt_parent"])
            assert state["trials"] == [str(k) for k in reversed(chain)]
            assert state["step"] == ROUNDS * INTERVAL
    finally:
        c.close()


def test_lineage_and_its_picture_from_a_local_run(in_tests_folder, tmp_path):
    import struct

    import ridgeline

    sweep = ridgeline.run(spec("pbt-local"), out=tmp_path / "out", workers=2, progress=False)
    lin = sweep.lineage()
    assert list(lin["trial"]) == list(range(P * ROUNDS))
    assert list(lin["round"]) == [i // P for i in range(P * ROUNDS)]
    assert lin.loc[lin["round"] == 0, "parent"].isna().all()
    later = lin[lin["round"] > 0]
    # A parent is of the round before; exploited exactly when it is another member's.
    assert ((later["parent"] // P) == later["round"] - 1).all()
    assert ((later["parent"] % P != later["member"]) == later["exploited"]).all()
    # One exploit per round with a quarter of 4 members.
    assert int(later["exploited"].sum()) == ROUNDS - 1
    png = (sweep.files() + "/pbt.png").encode()
    head = open(png, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (860, 540)


def builtin_spec() -> dict:
    """An MLP on 10,000 MNIST digits, a population of 4 in 4 rounds of 2 epochs: long
    enough (~1 s a trial) for the kills to land mid-trial."""
    return {
        "name": "pbt-builtin",
        "data": {
            "path": str(EXAMPLES / "data" / "mnist10k-images-idx3-ubyte.gz"),
            "labels": str(EXAMPLES / "data" / "mnist10k-labels-idx1-ubyte.gz"),
            "val_fraction": 0.2,
            "normalize": "max",
        },
        "model": {"depth": 2, "width": 128, "dropout": 0.1},
        "train": {"epochs": 8, "batch_size": 128, "optimizer": "sgd", "warmup": 10},
        "search": {
            "algorithm": "pbt",
            "metric": "val_accuracy",
            "mode": "max",
            "num_samples": P,
            "seed": 5,
            "pbt": {"rounds": 4, "perturbation_interval": 2},
            "space": {
                "lr": {"type": "loguniform", "low": 1e-3, "high": 0.3},
                "momentum": {"type": "uniform", "low": 0.0, "high": 0.95},
            },
        },
    }


def test_builtin_pbt_under_a_kill_storm_ends_as_an_undisturbed_run(in_tests_folder, tmp_path):
    """The built-in trainer resumes a round from its parent's weights, optimizer state
    and data order (fetched from the coordinator). Through 5 kills of workers and the
    coordinator, every trial ends bit for bit as in an undisturbed run: the same
    decisions, the same metrics, the same weights."""
    import ridgeline

    fast = {"RIDGELINE_LEASE_TTL_MS": "2000", "RIDGELINE_HEARTBEAT_INTERVAL_MS": "200"}
    c = Cluster(tmp_path / "cluster", fast)
    try:
        sweep = c.client.submit(builtin_spec())
        storm(c, sweep)
        stormy = {t["trial"]: t for t in sweep.results()["trials"]}
        files = Path(c.data / "sweeps" / sweep.id / "trials")
    finally:
        c.close()
    calm = ridgeline.run(builtin_spec(), out=tmp_path / "calm", workers=1, progress=False)
    quiet = {t["trial"]: t for t in calm.results()["trials"]}
    assert sorted(stormy) == sorted(quiet) == list(range(16))
    assert max(t["attempts"] for t in stormy.values()) >= 2, "no kill landed mid-trial"
    exploits = 0
    for i, t in stormy.items():
        q = quiet[i]
        assert (t["state"], t["params"], t["metrics"]) == (q["state"], q["params"], q["metrics"])
        # Each round trains its own two epochs of the schedule.
        r = i // P
        assert [h["step"] for h in t["history"]] == [2 * r + 1, 2 * r + 2], t["history"]
        ours = (files / f"{i:05}" / "model.safetensors").read_bytes()
        theirs = (Path(calm.files()) / "trials" / f"{i:05}" / "model.safetensors").read_bytes()
        assert ours == theirs, i
        exploits += r > 0 and t["params"]["pbt_parent"] % P != i % P
        # The state a later round resumes from is kept; the last round's is not needed.
        assert (files / f"{i:05}" / "train_state.safetensors").exists() == (r < 3)
    assert exploits == 3, "one exploit a round (a quarter of 4 members)"
    # Resuming is learning: the best member's accuracy rose over the rounds.
    best = max(range(12, 16), key=lambda i: stormy[i]["metrics"]["val_accuracy"])
    assert stormy[best]["metrics"]["val_accuracy"] > max(
        stormy[i]["metrics"]["val_accuracy"] for i in range(P)
    )
