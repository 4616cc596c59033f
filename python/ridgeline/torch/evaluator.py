"""The evaluator process: ``python -m ridgeline.torch.evaluator module:function``.

It speaks the protocol the worker documents (``worker/src/landscape/evaluator.rs``): one
JSON object per line on stdin and stdout. The user's own prints go to stderr, so that
they never break the protocol. The model and its floating data are cast to
``RIDGELINE_DTYPE`` (``float32``, ``float64``, or ``model``: as they are). Points are set
as ``θ = θ* + x·d₁ + y·d₂``, computed in float64 from θ* and the (f32) directions and
rounded to each tensor's dtype, for every
floating tensor of the model's ``state_dict`` (parameters and BatchNorm buffers; the
directions are zero where a tensor is ignored). The model is in eval mode (BatchNorm
uses its running statistics, as the loss-landscape reference does) and evaluated under
``torch.no_grad()``; θ* is copied back after every point and checked bit for bit after
every tile.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import sys
import traceback
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

_DTYPES = {"F32": np.float32, "F64": np.float64}


def write_safetensors(path: str, tensors: Dict[str, torch.Tensor]) -> None:
    """Writes tensors as f32 safetensors (the format's header, then the raw bytes)."""
    header: Dict[str, Any] = {}
    blobs: List[bytes] = []
    offset = 0
    for name, t in tensors.items():
        data = t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """Reads an f32/f64 safetensors file into numpy arrays (no extra dependency)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out: Dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        out[name] = (
            np.frombuffer(raw[base + a : base + b], dtype=dtype).reshape(info["shape"]).copy()
        )
    return out


class Evaluator:
    """A model, its loss and data, and the directions: loss and accuracy at points."""

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        batches: Sequence[Tuple[Any, Any]],
        device: str = "cpu",
        dtype: str = "model",
        points_per_pass: int = 1,
    ) -> None:
        self.device = torch.device(device)
        self.points_per_pass = max(1, int(points_per_pass))
        cast = {"model": None, "float32": torch.float32, "float64": torch.float64}[dtype]
        self.model = model.to(self.device).eval()
        if cast is not None:
            self.model = self.model.to(cast)
        self.loss_fn = loss_fn
        self.batches = [(_to(x, self.device, cast), _to(y, self.device, cast)) for x, y in batches]
        if not self.batches:
            raise ValueError("the evaluator's function returned no data batches")
        # The state_dict's tensors share storage with the model's: writing them moves it.
        # A tied tensor (GPT-2's lm_head.weight is transformer.wte.weight) is scanned once,
        # under its first name: one direction for one storage.
        self.tensors: Dict[str, torch.Tensor] = {}
        seen = set()
        for n, t in self.model.state_dict().items():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
            if torch.is_floating_point(t) and key not in seen:
                seen.add(key)
                self.tensors[n] = t
        self.base = {n: t.detach().clone() for n, t in self.tensors.items()}
        self.dirs: List[Dict[str, torch.Tensor]] = []

    def parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def load_directions(self, arrays: Dict[str, np.ndarray], axes: int) -> None:
        dirs: List[Dict[str, torch.Tensor]] = []
        for prefix in ("x", "y")[:axes]:
            d = {}
            for name in self.tensors:
                key = f"{prefix}.{name}"
                if key not in arrays:
                    raise ValueError(f"the directions have no {key}")
                d[name] = torch.from_numpy(arrays[key]).to(self.device, torch.float64)
            dirs.append(d)
        self.dirs = dirs

    def trainable(self) -> List[torch.Tensor]:
        """The Hessian's parameters, in the order of its vectors: the model's
        ``parameters()`` that require gradients (BatchNorm statistics are buffers)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def at(self, coords: Sequence[float]) -> Iterator[None]:
        """The model at θ* + Σ cᵢ dᵢ inside the block, at θ* (copied back) after it."""
        if len(coords) not in (0, len(self.dirs)):
            raise ValueError(
                f"a point has {len(coords)} coordinates, the scan {len(self.dirs)} axes"
            )
        if not any(coords):
            yield
            return
        with torch.no_grad():
            for name, t in self.tensors.items():
                v = self.base[name].to(torch.float64)
                for c, d in zip(coords, self.dirs):
                    v = v + float(c) * d[name]
                t.copy_(v.to(t.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, t in self.tensors.items():
                    t.copy_(self.base[name])

    def point(self, coords: Sequence[float]) -> Tuple[float, float]:
        if len(coords) != len(self.dirs):
            raise ValueError(
                f"a point has {len(coords)} coordinates, the scan {len(self.dirs)} axes"
            )
        with self.at(coords):
            return self.evaluate()

    def tile(self, points: Sequence[Sequence[float]]) -> List[Tuple[float, float]]:
        """Loss and accuracy at each point: one at a time, or ``points_per_pass`` at once."""
        if self.points_per_pass == 1:
            return [self.point(p) for p in points]
        out: List[Tuple[float, float]] = []
        for i in range(0, len(points), self.points_per_pass):
            out.extend(self.stacked(points[i : i + self.points_per_pass]))
        return out

    @torch.no_grad()
    def stacked(self, points: Sequence[Sequence[float]]) -> List[Tuple[float, float]]:
        """Several points in one forward pass per batch: the tensors at every point
        stacked along a new first dimension (each computed as in :meth:`at`) and the
        model mapped over them with ``torch.func.vmap`` and ``functional_call``; the
        model's own tensors are not touched."""
        from torch.func import functional_call, vmap

        for p in points:
            if len(p) != len(self.dirs):
                raise ValueError(
                    f"a point has {len(p)} coordinates, the scan {len(self.dirs)} axes"
                )
        stacked: Dict[str, torch.Tensor] = {}
        for name, t in self.tensors.items():
            base = self.base[name].to(torch.float64)
            rows = []
            for p in points:
                v = base
                for c, d in zip(p, self.dirs):
                    v = v + float(c) * d[name]
                rows.append(v.to(t.dtype))
            stacked[name] = torch.stack(rows)
        # Integer buffers as they are; a tied tensor's other names follow its first
        # (functional_call ties them).
        fixed = {n: t for n, t in self.model.state_dict().items() if not torch.is_floating_point(t)}

        def one(params: Dict[str, torch.Tensor], x: Any, y: Any) -> Tuple[Any, Any]:
            both = {**params, **fixed}
            if isinstance(x, dict):
                out = functional_call(self.model, both, (), x)
            elif isinstance(x, (list, tuple)):
                out = functional_call(self.model, both, tuple(x))
            else:
                out = functional_call(self.model, both, (x,))
            logits = out.logits if hasattr(out, "logits") else out
            return self.loss_fn(out, y), logits

        mapped = vmap(one, in_dims=(0, None, None))
        totals = torch.zeros(len(points), dtype=torch.float64)
        correct = torch.zeros(len(points), dtype=torch.float64)
        count, classify = 0, True
        for x, y in self.batches:
            losses, logits = mapped(stacked, x, y)
            n = _batch_size(y)
            totals += losses.detach().to("cpu", torch.float64) * n
            count += n
            if classify and _class_scores(logits, y, points=True):
                correct += (logits.argmax(dim=2) == y).sum(dim=1).to("cpu", torch.float64)
            else:
                classify = False
        return [
            (float(t) / count, float(c) / count if classify else math.nan)
            for t, c in zip(totals, correct)
        ]

    def hvps(
        self, vectors: np.ndarray, shard: int, shards: int, coords: Sequence[float] = ()
    ) -> np.ndarray:
        """``H v`` for each row ``v`` of ``vectors``, where ``H`` is the Hessian of the
        mean loss over all batches with respect to :meth:`trainable`, restricted to the
        samples of batches ``[shard·B/shards, (shard+1)·B/shards)``: the shards' products
        sum to the whole data's. By double backward, one first-order graph per batch
        shared by all vectors; in the model's dtype, returned as float64."""
        params = self.trainable()
        n = sum(p.numel() for p in params)
        if vectors.ndim != 2 or vectors.shape[1] != n:
            raise ValueError(f"expected vectors of {n} entries, got shape {vectors.shape}")
        lo = shard * len(self.batches) // shards
        hi = (shard + 1) * len(self.batches) // shards
        if lo == hi:
            raise ValueError(
                f"shard {shard} of {shards} is empty: the evaluator has "
                f"{len(self.batches)} batches (landscape.hessian.shards ≤ batches)"
            )
        total = sum(_batch_size(y) for _, y in self.batches)
        out = np.zeros(vectors.shape, dtype=np.float64)
        dtype = params[0].dtype
        sizes = [p.numel() for p in params]
        vs = [
            [
                c.view_as(p)
                for c, p in zip(
                    torch.split(torch.from_numpy(row).to(self.device, dtype), sizes), params
                )
            ]
            for row in vectors
        ]
        with self.at(coords), torch.enable_grad():
            for x, y in self.batches[lo:hi]:
                loss = self.loss_fn(_call(self.model, x), y) * (_batch_size(y) / total)
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                used = [(g, i) for i, g in enumerate(grads) if g is not None]
                for k, v in enumerate(vs):
                    hv = torch.autograd.grad(
                        [g for g, _ in used],
                        [params[i] for _, i in used],
                        grad_outputs=[v[i] for _, i in used],
                        retain_graph=k + 1 < len(vs),
                        allow_unused=True,
                    )
                    full: List[Optional[torch.Tensor]] = [None] * len(params)
                    for (_, i), h in zip(used, hv):
                        full[i] = h
                    out[k] += (
                        torch.cat(
                            [
                                (h if h is not None else torch.zeros_like(p)).reshape(-1)
                                for h, p in zip(full, params)
                            ]
                        )
                        .to("cpu", torch.float64)
                        .numpy()
                    )
        return out

    @torch.no_grad()
    def evaluate(self) -> Tuple[float, float]:
        """Mean loss over the samples and accuracy (NaN unless outputs are class scores
        and targets class indices)."""
        total, correct, count = 0.0, 0, 0
        classify = True
        for x, y in self.batches:
            out = _call(self.model, x)
            n = _batch_size(y)
            total += float(self.loss_fn(out, y)) * n
            count += n
            logits = out.logits if hasattr(out, "logits") else out
            if classify and _class_scores(logits, y):
                correct += int((logits.argmax(dim=1) == y).sum())
            else:
                classify = False
        return total / count, (correct / count if classify else math.nan)

    def check_restored(self) -> None:
        for name, t in self.tensors.items():
            if not torch.equal(t, self.base[name]):
                raise RuntimeError(f"θ* was not restored exactly: {name} differs")


def _class_scores(logits: Any, y: Any, points: bool = False) -> bool:
    """Whether outputs are class scores [batch, classes] (with ``points``: a leading
    dimension of grid points) and targets class indices: accuracy means something."""
    return (
        isinstance(logits, torch.Tensor)
        and isinstance(y, torch.Tensor)
        and logits.dim() == (3 if points else 2)
        and y.dim() == 1
        and not torch.is_floating_point(y)
    )


def _to(v: Any, device: torch.device, cast: Any = None) -> Any:
    """On the device; floating tensors in `cast` when given (class indices stay ints)."""
    if isinstance(v, torch.Tensor):
        if cast is not None and torch.is_floating_point(v):
            return v.to(device, cast)
        return v.to(device)
    if isinstance(v, dict):
        return {k: _to(x, device, cast) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_to(x, device, cast) for x in v)
    return v


def _call(model: torch.nn.Module, x: Any) -> Any:
    if isinstance(x, dict):
        return model(**x)
    if isinstance(x, (list, tuple)):
        return model(*x)
    return model(x)


def _batch_size(y: Any) -> int:
    if isinstance(y, torch.Tensor):
        return int(y.shape[0]) if y.dim() > 0 else 1
    if isinstance(y, dict):
        return _batch_size(next(iter(y.values())))
    if isinstance(y, (list, tuple)):
        return _batch_size(y[0])
    return 1


def _number(v: float) -> Any:
    return v if math.isfinite(v) else None


def serve(ev: Evaluator, requests: Any, answer: Callable[[Dict[str, Any]], None]) -> None:
    """Answers the worker's requests until its stdin closes."""
    for line in requests:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "weights":
                write_safetensors(req["path"], ev.tensors)
                answer({"ok": True, "parameters": ev.parameters()})
            elif op == "directions":
                ev.load_directions(read_safetensors(req["path"]), int(req["axes"]))
                answer({"ok": True})
            elif op == "tile":
                values = ev.tile(req["points"])
                ev.check_restored()
                answer(
                    {
                        "loss": [_number(v[0]) for v in values],
                        "accuracy": [_number(v[1]) for v in values],
                    }
                )
            elif op == "hvp":
                n = sum(p.numel() for p in ev.trainable())
                vectors = np.fromfile(req["vectors"], dtype="<f8").reshape(-1, n)
                ev.hvps(
                    vectors, int(req["shard"]), int(req["shards"]), req.get("point", [])
                ).astype("<f8").tofile(req["out"])
                ev.check_restored()
                answer({"ok": True, "parameters": n})
            else:
                answer({"error": f"unknown op {op!r}"})
        except Exception:
            answer({"error": traceback.format_exc()})


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m ridgeline.torch.evaluator module:function\n")
        return 2
    # The protocol keeps the real stdout; the user's prints go to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def answer(obj: Dict[str, Any]) -> None:
        protocol.write(json.dumps(obj) + "\n")
        protocol.flush()

    from .._runner import load

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    built = load(argv[1])()
    if isinstance(built, dict):
        built = (built["model"], built["loss_fn"], built["batches"])
    model, loss_fn, batches = built
    ev = Evaluator(
        model,
        loss_fn,
        list(batches),
        os.environ.get("RIDGELINE_DEVICE", "cpu"),
        os.environ.get("RIDGELINE_DTYPE", "model"),
        int(os.environ.get("RIDGELINE_POINTS_PER_PASS", "1")),
    )
    answer(
        {
            "ready": True,
            "parameters": ev.parameters(),
            "trainable": sum(p.numel() for p in ev.trainable()),
        }
    )
    serve(ev, sys.stdin, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
