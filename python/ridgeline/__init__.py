"""Ridgeline from Python: submit sweeps, follow them, read their results as DataFrames,
and write trials (programs or Python functions) that report metrics.

>>> import ridgeline
>>> sweep = ridgeline.optimize(objective, {"lr": ridgeline.loguniform(1e-4, 1e-1)}, n_trials=20)
>>> sweep.trials().sort_values("objective").head()

A coordinator: ``ridgeline.Client("http://head:50051", token=...)``; see docs/python.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The trial side is imported at once and stays light: a trial process (a function trial
# starts one per attempt) never pays for numpy and pandas unless it uses them.
from .errors import AuthError, RidgelineError, SpecError
from .trial import attempt, is_trial, params, report, stop_step, trial_dir, trial_id

if TYPE_CHECKING:
    from .client import Client, FolderSweep, RemoteSweep, Sweep
    from .frames import Surface
    from .local import choice, grid, loguniform, optimize, randint, run, uniform

_LAZY = {
    "Client": "client",
    "FolderSweep": "client",
    "RemoteSweep": "client",
    "Sweep": "client",
    "Surface": "frames",
    "choice": "local",
    "grid": "local",
    "loguniform": "local",
    "optimize": "local",
    "randint": "local",
    "run": "local",
    "uniform": "local",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ridgeline' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AuthError",
    "Client",
    "FolderSweep",
    "RemoteSweep",
    "RidgelineError",
    "SpecError",
    "Surface",
    "Sweep",
    "attempt",
    "choice",
    "grid",
    "is_trial",
    "loguniform",
    "optimize",
    "params",
    "randint",
    "report",
    "run",
    "stop_step",
    "trial_dir",
    "trial_id",
    "uniform",
]
