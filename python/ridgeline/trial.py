"""Inside a trial: its parameters, its folder, and reporting metrics.

A trial is a program (or a Python function) that a Ridgeline worker starts with its
parameters in the environment. These helpers read them and write the report protocol
(``ridgeline: {json}`` lines, see docs/search.md); outside a trial they work too, so
that the same script runs by hand: ``params()`` is empty and ``report()`` prints.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Optional, Union

Number = Union[int, float]
ParamValue = Union[int, float, str, bool]

_PREFIX = "ridgeline:"

# The step of the last report, so that a function trial's returned value is reported at
# the step it belongs to.
_last_step: Optional[int] = None


def is_trial() -> bool:
    """Whether this process runs as a Ridgeline trial (a worker started it)."""
    return "RIDGELINE_TRIAL_ID" in os.environ


def params() -> Dict[str, ParamValue]:
    """The trial's parameters, typed as the search space defines them: floats, ints,
    strings and bools (from ``RIDGELINE_PARAMS``). Empty outside a trial."""
    raw = os.environ.get("RIDGELINE_PARAMS")
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"RIDGELINE_PARAMS is not a JSON object: {raw[:200]}")
    return value


def trial_id() -> Optional[int]:
    """The trial's number in its sweep, or ``None`` outside a trial."""
    raw = os.environ.get("RIDGELINE_TRIAL_ID")
    return int(raw) if raw is not None else None


def attempt() -> int:
    """1 for a trial's first run, 2 for the next (after a worker died), ..."""
    return int(os.environ.get("RIDGELINE_ATTEMPT", "1"))


def trial_dir() -> str:
    """A folder for the trial's checkpoints, the same on every attempt: a re-run after a
    worker died finds what the last attempt saved there. The current folder outside a
    trial."""
    return os.environ.get("RIDGELINE_TRIAL_DIR", os.getcwd())


def stop_step() -> Optional[int]:
    """Population based training: the step this trial trains to (``RIDGELINE_STOP_STEP``).
    The trial resumes from the checkpoint in :func:`trial_dir` (its parent's, copied in
    by the worker), trains to this step, reports, saves its checkpoint there and
    returns; ``None`` outside a PBT trial."""
    v = os.environ.get("RIDGELINE_STOP_STEP")
    return int(v) if v else None


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        # numpy and torch scalars have __float__; anything else is a mistake.
        if hasattr(v, "__float__") and not isinstance(v, str):
            return float(v)
        raise TypeError(f"metric {name!r} must be a number, got {type(v).__name__}")
    return float(v)


def report_line(step: Optional[int] = None, **metrics: Any) -> str:
    """The report line :func:`report` writes (without a newline)."""
    if not metrics:
        raise ValueError("report() needs at least one metric, e.g. report(val_loss=0.2)")
    body: Dict[str, Any] = {}
    if step is not None:
        if isinstance(step, bool) or int(step) != step or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        body["step"] = int(step)
    for name, v in metrics.items():
        if name == "step":
            raise ValueError("step is the time attribute: pass it as report(step=...)")
        # json.dumps writes NaN and Infinity, which the protocol reads as such: a NaN
        # metric marks the trial diverged.
        body[name] = _number(name, v)
    return _PREFIX + " " + json.dumps(body)


def report(step: Optional[int] = None, **metrics: Any) -> None:
    """Reports metrics of the running trial: ``report(step=3, val_loss=0.21, acc=0.93)``.

    ``step`` is the time attribute schedulers (ASHA, median, Hyperband) prune on; without
    it reports are numbered 1, 2, 3, ... The sweep's metric reported NaN or infinite
    marks the trial diverged. The last value of each metric is the trial's final value.
    """
    global _last_step
    line = report_line(step, **metrics)
    _last_step = step if step is not None else None if _last_step is None else _last_step + 1
    path = os.environ.get("RIDGELINE_REPORT_FILE")
    if path:
        # The report file is read as it grows: one write per line, flushed.
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    else:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
