"""A progress bar for :meth:`Sweep.wait`: one redrawn line in a terminal, an updated
output in Jupyter, a line per change elsewhere (logs)."""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional


def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    get = getattr(shell, "get_ipython", None)
    return get is not None and get() is not None


def line(st: Dict[str, Any], width: int = 30) -> str:
    """``[#########.....] 12/40 trials  3 running  best val_loss=0.2100  eta 1m05s``."""
    total = max(int(st.get("total") or 0), 1)
    done = int(st.get("done") or 0)
    filled = int(width * min(done, total) / total)
    noun = "units" if st.get("kind") == "landscape" else "trials"
    text = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{st.get('total', 0)} {noun}"
    text += f"  {st.get('running', 0)} running"
    best = st.get("best")
    if best and best.get("value") is not None:
        label = "lowest" if st.get("kind") == "landscape" else "best"
        text += f"  {label} {st.get('metric')}={best['value']:.4f}"
    eta = st.get("eta_s")
    if eta is not None:
        m, s = divmod(int(eta), 60)
        text += f"  eta {m}m{s:02}s" if m else f"  eta {s}s"
    if st.get("state") not in (None, "running"):
        text += f"  {st['state']}"
    return text


class Progress:
    """Shows a sweep's status as it changes."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id
        self.jupyter = _in_jupyter()
        self.tty = sys.stderr.isatty()
        self.last: Optional[str] = None
        self.handle: Any = None

    def update(self, st: Dict[str, Any]) -> None:
        text = f"{self.sweep_id} {line(st)}"
        if text == self.last:
            return
        self.last = text
        if self.jupyter:
            from IPython.display import display

            if self.handle is None:
                self.handle = display({"text/plain": text}, raw=True, display_id=True)
            else:
                self.handle.update({"text/plain": text}, raw=True)
        elif self.tty:
            sys.stderr.write("\r\x1b[2K" + text)
            sys.stderr.flush()
        else:
            sys.stderr.write(text + "\n")

    def close(self) -> None:
        if self.tty and not self.jupyter and self.last is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()
