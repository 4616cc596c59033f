"""Population based training through real workers: each trial resumes from its
parent's checkpoint (copied into its folder by the worker), and neither killed workers
nor a killed coordinator decide a round twice or leave a copy half done."""

from __future__ import annotations

import json
import sys
import time

from conftest import Cluster

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


def test_pbt_lineage_survives_a_kill_storm(in_tests_folder, tmp_path):
    fast = {"RIDGELINE_LEASE_TTL_MS": "2000", "RIDGELINE_HEARTBEAT_INTERVAL_MS": "200"}
    c = Cluster(tmp_path / "cluster", fast)
    try:
        sweep = c.client.submit(spec("pbt-storm"))
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
                # A worker, the coordinator, the other worker, ... killed mid-run.
                if kills % 2 == 1:
                    c.restart_coordinator()
                else:
                    c.kill_worker((kills // 2) % 2)
                kills += 1
            time.sleep(0.2)
        final = sweep.wait(progress=False, timeout=600)
        assert final["state"] == "completed", final
        assert kills == 5
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
