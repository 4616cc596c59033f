"""The curvature of a trained PyTorch model, as a trial's metrics: what ``[train.geometry]``
gives built-in trials, for a function trial that trains its own model.

    metrics = ridgeline.torch.geometry(model, loss_fn, batches[:4])
    ridgeline.report(step=epochs, val_loss=val_loss, **metrics)

and ``metric = ["val_loss", "hessian_trace"]`` trades accuracy against flatness on a
Pareto front. The Hessian is that of the mean loss over ``batches`` with respect to the
parameters that require gradients, at the model's weights; its products are exact
(double backward, :meth:`Evaluator.hvps`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .evaluator import Evaluator


def geometry(
    model: torch.nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    batches: Sequence[Tuple[Any, Any]],
    steps: int = 20,
    probes: int = 20,
    seed: int = 0,
    device: Optional[str] = None,
) -> Dict[str, float]:
    """The Hessian's largest eigenvalue (``steps`` Lanczos steps with full
    reorthogonalisation) and its trace (``probes`` Hutchinson probes with Rademacher
    vectors), with their errors, named as built-in trials report them:
    ``hessian_lambda_max`` ± ``hessian_lambda_max_residual`` (the Ritz residual ‖H y − θ
    y‖, which bounds the distance from θ to an eigenvalue) and ``hessian_trace`` ±
    ``hessian_trace_std_error``. The model is evaluated in eval mode (dropout off,
    BatchNorm on its running statistics) and left in the mode it was in, on its device
    (``device`` defaults to where its parameters are)."""
    if steps < 1 or probes < 1:
        raise ValueError(f"steps and probes must be at least 1, got {steps} and {probes}")
    was_training = model.training
    try:
        if device is None:
            device = str(next(model.parameters()).device)
        ev = Evaluator(model, loss_fn, batches, device=device)
        n = sum(p.numel() for p in ev.trainable())
        rng = np.random.default_rng(seed)

        def hvp(vs: np.ndarray) -> np.ndarray:
            return ev.hvps(vs, shard=0, shards=1)

        lam, residual = _lanczos_top(hvp, n, min(steps, n), rng)
        z = rng.choice([-1.0, 1.0], size=(probes, n))
        quad = np.einsum("ij,ij->i", z, hvp(z))
        err = float(quad.std(ddof=1) / np.sqrt(probes)) if probes > 1 else float("nan")
        return {
            "hessian_lambda_max": lam,
            "hessian_lambda_max_residual": residual,
            "hessian_trace": float(quad.mean()),
            "hessian_trace_std_error": err,
        }
    finally:
        model.train(was_training)


def _lanczos_top(
    hvp: Callable[[np.ndarray], np.ndarray], n: int, steps: int, rng: np.random.Generator
) -> Tuple[float, float]:
    """The largest Ritz value of ``steps`` Lanczos steps from a random start, and its
    residual |β_k s_k| (the last Lanczos coefficient times the Ritz vector's last entry)."""
    v = rng.standard_normal(n)
    basis = [v / np.linalg.norm(v)]
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        w = hvp(basis[j][None, :])[0]
        alphas.append(float(w @ basis[j]))
        # Full reorthogonalisation (twice), so that a small basis stays a basis.
        for _ in range(2):
            for b in basis:
                w -= (w @ b) * b
        beta = float(np.linalg.norm(w))
        betas.append(beta)
        if j + 1 == steps or beta <= 1e-12 * max(1.0, abs(alphas[-1])):
            break
        basis.append(w / beta)
    k = len(alphas)
    t = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    theta, s = np.linalg.eigh(t)
    return float(theta[-1]), float(abs(betas[k - 1] * s[-1, -1]))
