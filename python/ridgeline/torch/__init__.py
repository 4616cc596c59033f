"""PyTorch models under Ridgeline's scans: the evaluator a worker starts for
``[landscape.evaluator] python = "module:function"`` (``ridgeline.torch.evaluator``).

The function takes no arguments and returns ``(model, loss_fn, batches)``: a
``torch.nn.Module``, a function ``loss_fn(outputs, targets)`` giving the batch's mean
loss, and a list of ``(inputs, targets)`` batches (tensors, or tuples/dicts of tensors
passed to the model as ``model(*inputs)`` / ``model(**inputs)``). torch is imported only
under this package, never by the rest of ``ridgeline``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional, Union


def landscape(
    build: Callable[[], Any],
    points: int = 51,
    span: float = 1.0,
    seed: int = 0,
    workers: Optional[int] = None,
    coordinator: Optional[str] = None,
    token: Optional[str] = None,
    tile: int = 64,
    out: Union[str, "os.PathLike[str]"] = "ridgeline-out",
    interpreter: Optional[str] = None,
    name: Optional[str] = None,
    progress: bool = True,
) -> Any:
    """The loss surface of the model ``build()`` returns, in one call: a ``points`` x
    ``points`` grid over ``[-span, span]^2`` along two filter-normalised random
    directions drawn from ``seed``, evaluated by ``workers`` local worker processes (or
    by a coordinator's workers when ``coordinator`` is given). ``build`` takes no
    arguments and returns ``(model, loss_fn, batches)`` (see this package's docstring);
    it must be defined in a file (a worker process imports it). Returns the
    :class:`ridgeline.Surface`.
    """
    from ..client import Client
    from ..local import function_reference, run

    axis = {"min": -float(span), "max": float(span), "points": int(points)}
    spec = {
        "name": name or getattr(build, "__name__", "landscape"),
        "kind": "landscape",
        "landscape": {
            "evaluator": {
                "python": function_reference(build),
                "interpreter": interpreter or sys.executable,
            },
            "tile": int(tile),
            "x": axis,
            "y": axis,
            "directions": {"seed": int(seed)},
        },
    }
    if coordinator is None:
        return run(spec, workers=workers, out=out, progress=progress).surface()
    sweep = Client(coordinator, token=token).submit(spec)
    sweep.wait(progress=progress)
    return sweep.surface()


def geometry(
    model: Any,
    loss_fn: Callable[[Any, Any], Any],
    batches: Any,
    steps: int = 20,
    probes: int = 20,
    seed: int = 0,
    device: Optional[str] = None,
) -> "dict[str, float]":
    """The Hessian's top eigenvalue and trace of a trained model's mean loss over
    ``batches``, with their errors, as the metrics ``hessian_lambda_max``,
    ``hessian_lambda_max_residual``, ``hessian_trace``, ``hessian_trace_std_error``
    (what ``[train.geometry]`` reports for built-in trials): report them from a function
    trial to optimise flatness (see :mod:`ridgeline.torch.curvature`)."""
    from .curvature import geometry as measure

    return measure(model, loss_fn, batches, steps=steps, probes=probes, seed=seed, device=device)
