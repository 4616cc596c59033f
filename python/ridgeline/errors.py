"""The exceptions the package raises."""

from __future__ import annotations


class RidgelineError(RuntimeError):
    """A command or request failed; the message is the reason ridgeline gave."""


class SpecError(RidgelineError, ValueError):
    """A spec is invalid: ``field`` names where, as a TOML path (``search.space.lr.low``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class AuthError(RidgelineError, PermissionError):
    """The coordinator refused the token (or none was given where one is needed)."""
