"""Sweeps on this machine: :func:`run` (the embedded mode, as ``ridgeline run``) and
:func:`optimize` (a search over a Python function in one call, as Optuna's
``study.optimize``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from . import _cli
from .client import FolderSweep, SpecLike, Sweep, spec_args
from .errors import RidgelineError

_SWEEP_LINE = re.compile(r"^sweep (\S+): ")


def run(
    spec: SpecLike,
    workers: Optional[int] = None,
    out: Union[str, "os.PathLike[str]"] = "ridgeline-out",
    fresh: bool = False,
    progress: bool = True,
    device: Optional[str] = None,
) -> FolderSweep:
    """Runs a sweep on this machine (an embedded coordinator and ``workers`` local
    workers, as ``ridgeline run``) and returns it once it has ended.

    ``spec`` is a spec file or a dict shaped like the TOML. Running the same spec again
    with the same ``out`` continues it (finished trials are kept); ``fresh=True`` starts a
    new sweep. Trials that fail do not raise: see ``sweep.trials()``'s ``state`` and
    ``error`` columns. With ``progress``, the run's lines go to stderr as they come.
    """
    arg, stdin = spec_args(spec)
    args = ["run", arg, "--out", os.fspath(out), "--allow-failures"]
    if workers is not None:
        args += ["--workers", str(int(workers))]
    if fresh:
        args.append("--fresh")
    if device is not None:
        args += ["--device", device]
    proc = subprocess.Popen(
        [_cli.binary(), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err_lines: List[str] = []
    sweep_ids: List[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for text in proc.stderr:
            err_lines.append(text)
            m = _SWEEP_LINE.match(text)
            if m:
                sweep_ids.append(m.group(1))
            if progress:
                sys.stderr.write(text)
                sys.stderr.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        if stdin is not None:
            proc.stdin.write(stdin)
        proc.stdin.close()
        stdout = proc.stdout.read()
        proc.wait()
    except BaseException:
        # Ctrl-C in Python: the run is interrupted as by Ctrl-C in a shell (its sweep is
        # kept, and the same call continues it).
        proc.terminate()
        proc.wait()
        raise
    reader.join()
    if proc.returncode != 0:
        raise _cli.error_from("".join(err_lines), args)
    if not sweep_ids:
        raise RidgelineError("ridgeline run named no sweep:\n" + "".join(err_lines[-20:]))
    if progress and stdout:
        sys.stdout.write(stdout)
    return FolderSweep(out, sweep_ids[-1])


def function_reference(fn: Callable[..., Any]) -> str:
    """How a worker finds ``fn``: ``"package.module:qualname"`` for a package's function,
    ``"/abs/path/file.py:name"`` for one of the script being run or of a module file."""
    qual = getattr(fn, "__qualname__", "")
    module = getattr(fn, "__module__", None)
    if not qual or "<" in qual or module is None:
        raise ValueError(
            f"{fn!r} cannot be found by a worker: give a function defined at the top level "
            "of a module or script (not a lambda or a nested function)"
        )
    if module == "__main__":
        main = sys.modules["__main__"]
        path = getattr(main, "__file__", None)
        if path is None:
            raise ValueError(
                f"{qual} is defined in a notebook or an interactive session, where a worker "
                "process cannot import it: put it in a .py file next to the notebook and "
                "import it from there"
            )
        return f"{os.path.abspath(path)}:{qual}"
    loaded = sys.modules.get(module)
    path = getattr(loaded, "__file__", None)
    if "." not in module and path is not None and path.endswith(".py"):
        # A module next to the script (not an installed package): found by its file, so
        # that workers in another folder import it too.
        return f"{os.path.abspath(path)}:{qual}"
    return f"{module}:{qual}"


def optimize(
    objective: Callable[[Dict[str, Any]], Any],
    space: Mapping[str, Any],
    n_trials: int,
    metric: Union[str, Sequence[str]] = "objective",
    mode: Union[str, Sequence[str]] = "min",
    algorithm: str = "tpe",
    scheduler: Optional[Mapping[str, Any]] = None,
    workers: Optional[int] = None,
    max_concurrent: Optional[int] = None,
    seed: Optional[int] = None,
    out: Union[str, "os.PathLike[str]"] = "ridgeline-out",
    name: Optional[str] = None,
    timeout: Optional[Union[float, str]] = None,
    python: Optional[str] = None,
    fresh: bool = False,
    progress: bool = True,
    enqueue: Optional[Sequence[Mapping[str, Any]]] = None,
    warm_start: Optional[Union[str, Sweep]] = None,
) -> FolderSweep:
    """Searches ``space`` for the parameters that minimise (``mode="max"``: maximise)
    what ``objective(params)`` returns, running trials in ``workers`` worker processes.

    ``objective`` gets a dict of parameters and returns the metric (a number) or a dict
    of metrics that holds ``metric``; it may call :func:`ridgeline.report` with a
    ``step`` to report as it goes, which lets ``scheduler`` (e.g.
    ``{"type": "asha", "max_t": 9}``) stop bad trials early. ``space`` maps names to
    distributions (``ridgeline.uniform(0, 1)``, ``ridgeline.loguniform(1e-4, 1e-1)``,
    ``ridgeline.randint(1, 8)``, ``ridgeline.choice([...])``) or to the TOML's dicts.
    Each trial runs in a fresh Python process (``python``, default this interpreter)
    in the current folder.

    Several objectives: ``metric=["loss", "latency"]`` and ``mode=["min", "min"]`` (one
    per metric); ``objective`` then returns a tuple in that order (or a dict), trials are
    ranked by Pareto dominance (``algorithm="tpe"`` or ``"nsga2"``), and the result is
    a front (:meth:`Sweep.pareto`, :meth:`Sweep.hypervolume`, ``pareto.png``).

    ``enqueue`` lists configurations the first trials run with (Optuna's
    ``enqueue_trial``, Ray Tune's ``points_to_evaluate``; counted in ``n_trials``).
    ``warm_start`` (a sweep, or its id, of the same ``out``) lets TPE learn from that
    sweep's trials before its first suggestion.
    """
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    several = not isinstance(metric, str)
    if several and isinstance(mode, str):
        mode = [mode] * len(list(metric))
    search: Dict[str, Any] = {
        "algorithm": algorithm,
        "metric": list(metric) if several else metric,
        "mode": list(mode) if not isinstance(mode, str) else mode,
        "num_samples": int(n_trials),
        "space": {k: dict(v) for k, v in space.items()},
    }
    if scheduler is not None:
        search["scheduler"] = dict(scheduler)
    if max_concurrent is not None:
        search["max_concurrent"] = int(max_concurrent)
    if seed is not None:
        search["seed"] = int(seed)
    if enqueue:
        search["enqueue"] = [dict(c) for c in enqueue]
    if warm_start is not None:
        ref = warm_start.id if isinstance(warm_start, Sweep) else str(warm_start)
        search["warm_start"] = ref if ref.startswith("sweep:") else f"sweep:{ref}"
    trial: Dict[str, Any] = {
        "function": function_reference(objective),
        "python": python or sys.executable,
    }
    if timeout is not None:
        trial["timeout"] = timeout
    spec = {
        "name": name or getattr(objective, "__name__", "objective"),
        "trial": trial,
        "search": search,
    }
    return run(spec, workers=workers, out=out, fresh=fresh, progress=progress)


# Distributions, named as Ray Tune names them; each is the TOML's inline table.
def uniform(low: float, high: float) -> Dict[str, Any]:
    """A real number uniform in [low, high)."""
    return {"type": "uniform", "low": float(low), "high": float(high)}


def loguniform(low: float, high: float) -> Dict[str, Any]:
    """A real number whose logarithm is uniform in [ln low, ln high)."""
    return {"type": "loguniform", "low": float(low), "high": float(high)}


def randint(low: int, high: int) -> Dict[str, Any]:
    """An integer in [low, high] (both ends included)."""
    return {"type": "int", "low": int(low), "high": int(high)}


def choice(values: List[Any]) -> Dict[str, Any]:
    """One of ``values`` (numbers, strings or bools)."""
    return {"type": "choice", "values": list(values)}


def grid(values: List[Any]) -> Dict[str, Any]:
    """Every one of ``values``, with ``algorithm="grid"``."""
    return {"type": "grid", "values": list(values)}
