"""Results as DataFrames and arrays: pure conversions of what a sweep wrote.

``trials_frame`` and ``history_frame`` take the parsed ``results.json`` (``ridgeline
results SWEEP --format json``); ``load_surface`` reads a scan's folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import pandas as pd

#: The columns after parameters and metrics, as results.csv has them.
TAIL = ["epochs", "duration_s", "worker", "attempts", "interrupted", "error"]

STATES = [
    "pending",
    "running",
    "completed",
    "failed",
    "diverged",
    "cancelled",
    "pruned",
]


def _column(values: List[Any]) -> pd.Series:
    """A parameter column with the dtype its values have: int64 (nullable Int64 when a
    conditional parameter is absent), float64, bool, or category for strings."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="boolean" if len(present) < len(values) else bool)
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="Int64" if len(present) < len(values) else "int64")
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pd.Series([np.nan if v is None else float(v) for v in values], dtype="float64")
    return pd.Series([None if v is None else str(v) for v in values], dtype="category")


def trials_frame(results: Mapping[str, Any]) -> pd.DataFrame:
    """One row per trial, columns as in results.csv: ``trial``, ``state`` (category),
    each parameter (typed), each final metric (float64; NaN where not reported or not
    finite), then ``epochs`` (reports), ``duration_s`` (to the millisecond, as in
    results.csv), ``worker``, ``attempts``, ``interrupted`` and ``error``."""
    trials = list(results.get("trials", []))
    params = sorted({k for t in trials for k in t.get("params", {})})
    metrics = sorted({k for t in trials for k in t.get("metrics", {})})
    cols: Dict[str, pd.Series] = {
        "trial": pd.Series([int(t["trial"]) for t in trials], dtype="int64"),
        "state": pd.Series(pd.Categorical([t["state"] for t in trials], categories=STATES)),
    }
    for p in params:
        cols[p] = _column([t.get("params", {}).get(p) for t in trials])
    for m in metrics:
        vals = [t.get("metrics", {}).get(m) for t in trials]
        cols[m] = pd.Series([np.nan if v is None else float(v) for v in vals], dtype="float64")
    if any("feasible" in t for t in trials):
        # A search with constraints: whether each completed trial met them (NA otherwise).
        cols["feasible"] = pd.Series([t.get("feasible") for t in trials], dtype="boolean")
    if any("pareto_rank" in t for t in trials):
        # Several objectives: the non-domination rank among feasible completed trials
        # (0: on the Pareto front; NA for the others).
        cols["pareto_rank"] = pd.Series([t.get("pareto_rank") for t in trials], dtype="Int64")
    cols["epochs"] = pd.Series([len(t.get("history", [])) for t in trials], dtype="int64")
    cols["duration_s"] = pd.Series(
        [round(float(t.get("duration_s") or 0.0), 3) for t in trials], dtype="float64"
    )
    cols["worker"] = pd.Series([t.get("worker") or None for t in trials], dtype="object")
    cols["attempts"] = pd.Series([int(t.get("attempts", 0)) for t in trials], dtype="int64")
    cols["interrupted"] = pd.Series([int(t.get("interrupted", 0)) for t in trials], dtype="int64")
    cols["error"] = pd.Series([t.get("error") or None for t in trials], dtype="object")
    return pd.DataFrame(cols)


def history_frame(results: Mapping[str, Any]) -> pd.DataFrame:
    """Every report of every trial, long format: ``trial``, ``step``, ``metric``,
    ``value`` (NaN where the report was not finite), sorted by trial, step and metric."""
    rows = []
    for t in results.get("trials", []):
        for h in t.get("history", []):
            step = int(h["step"])
            for k, v in h.items():
                if k != "step":
                    rows.append((int(t["trial"]), step, k, np.nan if v is None else float(v)))
    frame = pd.DataFrame(rows, columns=["trial", "step", "metric", "value"])
    frame = frame.astype({"trial": "int64", "step": "int64", "value": "float64"})
    frame["metric"] = frame["metric"].astype("category")
    return frame.sort_values(["trial", "step", "metric"], kind="stable").reset_index(drop=True)


@dataclass
class Surface:
    """A scan's surface: ``loss[i, j]`` (and ``accuracy``) at ``(x[j], y[i])`` for 2-D
    scans, ``loss[j]`` at ``x[j]`` for 1-D ones; ``meta`` is meta.json."""

    x: np.ndarray
    y: Optional[np.ndarray]
    loss: np.ndarray
    accuracy: Optional[np.ndarray]
    meta: Dict[str, Any] = field(default_factory=dict)

    def to_xarray(self) -> Any:
        """An ``xarray.Dataset`` with ``loss`` (and ``accuracy``) over ``y``, ``x``
        (needs xarray installed)."""
        try:
            import xarray as xr
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("Surface.to_xarray() needs xarray: pip install xarray") from e
        dims = ("y", "x") if self.y is not None else ("x",)
        coords = {"x": self.x} if self.y is None else {"x": self.x, "y": self.y}
        data = {"loss": (dims, self.loss)}
        if self.accuracy is not None:
            data["accuracy"] = (dims, self.accuracy)
        return xr.Dataset(data, coords=coords, attrs={"meta": json.dumps(self.meta)})


def load_surface(folder: str) -> Surface:
    """Reads surface.npy, accuracy.npy, x.npy, y.npy and meta.json of a scan's folder."""

    def npy(name: str) -> Optional[np.ndarray]:
        path = os.path.join(folder, name)
        return np.load(path) if os.path.exists(path) else None

    loss = npy("surface.npy")
    x = npy("x.npy")
    if loss is None or x is None:
        raise FileNotFoundError(
            f"{folder} holds no surface.npy and x.npy: the sweep is not a surface scan, or "
            "it has not finished"
        )
    meta_path = os.path.join(folder, "meta.json")
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    return Surface(x=x, y=npy("y.npy"), loss=loss, accuracy=npy("accuracy.npy"), meta=meta)
