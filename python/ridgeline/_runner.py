"""Runs a function trial: ``python -m ridgeline._runner module:function``.

A worker starts this for ``[trial] function = "module:function"``: the function gets the
trial's parameters as a dict and returns the sweep's metric (a number), a dict of
metrics, a tuple of one value per objective (several objectives), or None when it
reported everything itself with :func:`ridgeline.report`. An exception ends the trial
as failed, with the traceback on stderr (its last line is the reason the sweep shows).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from typing import Any, Callable, List, Mapping, Sequence

from . import trial


def load(reference: str) -> Callable[..., Any]:
    """The function a ``"module:function"`` or ``"file.py:function"`` reference names."""
    module_name, _, attr = reference.partition(":")
    if not attr:
        raise ValueError(f"expected 'module:function', got {reference!r}")
    if module_name.endswith(".py"):
        # A script: loaded under its own name, so its `if __name__ == "__main__":` part
        # (the code that submitted the sweep) does not run again.
        path = os.path.abspath(module_name)
        spec = importlib.util.spec_from_file_location("ridgeline_trial_script", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        sys.path.insert(0, os.path.dirname(path))
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{reference} is not callable")
    return target


def report_result(result: Any, metric: str, objectives: Sequence[str] = ()) -> None:
    """Reports what the function returned, at the step of its last report: a number
    (the sweep's metric), a dict of metrics, or (several objectives) a tuple or list of
    one value per objective, in the spec's order (as Optuna's multi-objective
    ``objective`` returns)."""
    step = trial._last_step
    if result is None:
        return
    if isinstance(result, Mapping):
        trial.report(step=step, **{str(k): v for k, v in result.items()})
    elif isinstance(result, (tuple, list)):
        if len(result) != len(objectives):
            raise ValueError(
                f"the function returned {len(result)} values; the sweep has "
                f"{len(objectives)} objective(s): {', '.join(objectives)}"
            )
        trial.report(step=step, **dict(zip(objectives, result)))
    else:
        trial.report(step=step, **{metric: result})


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m ridgeline._runner module:function\n")
        return 2
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    fn = load(argv[1])
    result = fn(trial.params())
    metric = os.environ.get("RIDGELINE_METRIC", "objective")
    objectives = json.loads(os.environ.get("RIDGELINE_OBJECTIVES", "[]")) or [metric]
    report_result(result, metric, objectives)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
