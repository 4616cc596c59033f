"""Reporting from training frameworks: a PyTorch Lightning callback and a Hugging Face
``Trainer`` callback that report each evaluation with :func:`ridgeline.report`.

Each framework is imported only when its callback is made, so the package never needs
it. Neither framework is installed where Ridgeline's CI runs: the callbacks are not
tested against them; :func:`numbers` (what they report) is.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from .trial import report


def numbers(metrics: Mapping[str, Any]) -> Dict[str, float]:
    """The numeric entries of a framework's metrics (floats, ints, one-element tensors
    and numpy scalars), as floats; strings, bools and larger tensors are left out."""
    out: Dict[str, float] = {}
    for name, v in metrics.items():
        if isinstance(v, bool) or isinstance(v, str):
            continue
        item = getattr(v, "item", None)
        numel = getattr(v, "numel", None)
        if callable(numel) and numel() != 1:
            continue
        try:
            out[str(name)] = float(item() if callable(item) else v)
        except (TypeError, ValueError):
            continue
    return out


def lightning_callback() -> Any:
    """A ``lightning.pytorch.Callback`` (or ``pytorch_lightning``'s) that reports
    ``trainer.callback_metrics`` after every validation, at ``step = epoch + 1``."""
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl

    class RidgelineReporter(pl.Callback):  # type: ignore[misc,unused-ignore]
        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if getattr(trainer, "sanity_checking", False) or not trainer.is_global_zero:
                return
            metrics = numbers(trainer.callback_metrics)
            if metrics:
                report(step=trainer.current_epoch + 1, **metrics)

    return RidgelineReporter()


def huggingface_callback() -> Any:
    """A ``transformers.TrainerCallback`` that reports the metrics of every evaluation
    (``eval_loss``, ...) at ``step = state.global_step``."""
    from transformers import TrainerCallback

    class RidgelineReporter(TrainerCallback):  # type: ignore[misc,unused-ignore]
        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero:
                return
            found = numbers(metrics or {})
            if found:
                report(step=int(state.global_step), **found)

    return RidgelineReporter()
