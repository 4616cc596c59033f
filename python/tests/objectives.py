"""Objectives the tests' function trials run (imported by worker processes)."""

import math

import ridgeline


def quadratic(p):
    """(x - 2)^2 + (y + 1)^2, reported at steps 1..3 with a decaying offset."""
    base = (p["x"] - 2.0) ** 2 + (p["y"] + 1.0) ** 2
    for step in (1, 2, 3):
        ridgeline.report(step=step, loss=base + 1.0 / step)
    return {"loss": base, "x_seen": p["x"]}


def learning_curve(p):
    """A curve over 9 steps whose level depends on lr: ASHA stops the bad ones."""
    lr = p["lr"]
    level = (math.log10(lr) + 2.0) ** 2
    for step in range(1, 10):
        ridgeline.report(step=step, val_loss=level + 1.0 / step)
    return level + 1.0 / 9


def raises(p):
    raise ValueError(f"boom at x={p['x']:.3f}")


def nan(p):
    return float("nan")


def every_type(p):
    """Metrics of each type the protocol takes: ints, floats, numpy scalars, non-finite."""
    import numpy as np

    ridgeline.report(step=1, i=3, f=0.1, big=1e300, tiny=5e-324, neg=-2.5)
    ridgeline.report(step=2, f32=np.float32(0.1), f64=np.float64(1 / 3), i64=np.int64(7))
    ridgeline.report(step=3, inf=float("inf"), ninf=float("-inf"), other_nan=float("nan"))
    # A non-finite final value of any metric marks a trial diverged: end on finite ones.
    ridgeline.report(step=4, inf=1.0, ninf=-1.0, other_nan=0.0)
    return 1.0


def constrained(p):
    """The quadratic with a bound on `latency` (x + y, in the spec) and a constraint of
    its own (y ≤ -0.5): its unconstrained optimum (2, -1) has latency 1."""
    x, y = p["x"], p["y"]
    return {"loss": (x - 2.0) ** 2 + (y + 1.0) ** 2, "latency": x + y, "constraint_y": y + 0.5}


def zdt1(p):
    """ZDT1 over x0..x3: two objectives, returned as a tuple in the spec's order."""
    x = [p[f"x{k}"] for k in range(4)]
    g = 1.0 + 9.0 * sum(x[1:]) / 3.0
    return x[0], g * (1.0 - math.sqrt(x[0] / g))


def zdt1_constrained(p):
    """ZDT1 with a constraint of its own: x0 ≥ 0.2 is feasible (`constraint_x0` ≤ 0)."""
    f1, f2 = zdt1(p)
    return {"f1": f1, "f2": f2, "constraint_x0": 0.2 - p["x0"]}


PBT_STEPS = 15


def pbt_member(p):
    """A PBT member on a toy whose best learning rate decays from 1e-1 to 1e-3 over
    PBT_STEPS steps. Its checkpoint, state.json in the trial folder, holds the step, the
    score so far and the trials it came through; it trains to ridgeline.stop_step(),
    reporting each step, and saves. What it started from is kept per trial (a later
    attempt of the same trial reports the same), so the test can check the lineage."""
    import json
    import os
    import time
    from pathlib import Path

    folder = Path(ridgeline.trial_dir())
    ckpt = folder / "state.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "score": 0.0}
    me = str(ridgeline.trial_id())
    start = state.setdefault("start", {}).setdefault(me, [state["step"], state["score"]])
    lr = p["lr"]
    for step in range(state["step"] + 1, ridgeline.stop_step() + 1):
        target = -1.0 - 2.0 * step / PBT_STEPS
        state["score"] += math.exp(-((math.log10(lr) - target) ** 2) / 0.5)
        state["step"] = step
        time.sleep(0.05)
        ridgeline.report(step=step, score=state["score"])
    if me not in state.setdefault("trials", []):
        state["trials"].append(me)
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, ckpt)
    return {"score": state["score"], "start_step": start[0], "start_score": start[1]}


def gated(p):
    """Waits for the file ``p["gate"]`` to exist, then reports a loss at steps 1..3: a
    sweep that stays running until a test lets it go."""
    import os
    import time

    while not os.path.exists(p["gate"]):
        time.sleep(0.05)
    base = (p["x"] - 0.3) ** 2
    for step in (1, 2, 3):
        ridgeline.report(step=step, loss=base + 1.0 / step)
    return {"loss": base}
