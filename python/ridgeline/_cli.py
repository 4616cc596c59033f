"""The bundled ``ridgeline`` binary: finding it and running it.

The Python client speaks to coordinators through the same binary the shell uses, so a
spec given as a dict is validated by the same code as a TOML file, and tokens and TLS
are taken the same way (``RIDGELINE_TOKEN``, ``RIDGELINE_TLS_CA``, ...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from typing import Mapping, Optional, Sequence

from .errors import AuthError, RidgelineError, SpecError


def binary() -> str:
    """The path of the ``ridgeline`` binary: ``$RIDGELINE_BIN``, else the one installed
    with this package (the environment's scripts folder), else the first on ``PATH``."""
    given = os.environ.get("RIDGELINE_BIN")
    if given:
        return given
    schemes = [sysconfig.get_default_scheme()] if hasattr(sysconfig, "get_default_scheme") else []
    schemes.append(f"{os.name}_user")
    for scheme in schemes:
        try:
            folder = sysconfig.get_path("scripts", scheme)
        except KeyError:
            continue
        candidate = os.path.join(folder, "ridgeline")
        if os.access(candidate, os.X_OK):
            return candidate
    beside = os.path.join(os.path.dirname(sys.executable), "ridgeline")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("ridgeline")
    if found:
        return found
    raise RidgelineError(
        "the ridgeline binary was not found: install this package with pip (it carries "
        "the binary) or set RIDGELINE_BIN"
    )


def error_from(stderr: str, args: Sequence[str]) -> RidgelineError:
    """The exception a failed command's stderr describes."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    message = next((line[len("error: ") :] for line in lines if line.startswith("error: ")), "")
    if not message:
        message = lines[-1] if lines else f"ridgeline {' '.join(args[:1])} failed"
    # A spec read from standard input is named "-": its errors start "-: field: why".
    if message.startswith("-: "):
        field, _, reason = message[3:].partition(": ")
        return SpecError(field, reason)
    if any(("wrong token" in line or "requires a token" in line) for line in lines):
        return AuthError(message)
    return RidgelineError(message)


def run(
    args: Sequence[str],
    env: Optional[Mapping[str, str]] = None,
    stdin: Optional[str] = None,
    cwd: Optional[str] = None,
) -> str:
    """Runs ``ridgeline ARGS`` and returns its stdout; a non-zero exit raises the error
    it printed."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    done = subprocess.run(
        [binary(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
    )
    if done.returncode != 0:
        raise error_from(done.stderr, args)
    return done.stdout
