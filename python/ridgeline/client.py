"""Submitting sweeps to a coordinator, following them and reading their results.

Every call goes through the bundled ``ridgeline`` binary, which speaks the
coordinator's gRPC API: specs given as dicts are validated by the same code as TOML
files (errors name the field the same way), and the token and TLS settings are the
CLI's (``RIDGELINE_TOKEN``, ``RIDGELINE_TLS_CA``, ``RIDGELINE_TLS_DOMAIN``, ...).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import pandas as pd

from . import _cli
from .errors import RidgelineError
from .frames import Surface, history_frame, load_surface, trials_frame
from .progress import Progress

SpecLike = Union[str, "os.PathLike[str]", Mapping[str, Any]]

FINAL = ("completed", "failed", "cancelled")


def spec_args(spec: SpecLike) -> "tuple[str, Optional[str]]":
    """The spec argument of a command and what goes on its stdin: a file's path, or ``-``
    and the dict as JSON (relative paths in it are taken from the current folder)."""
    if isinstance(spec, Mapping):
        return "-", json.dumps(spec)
    path = os.fspath(spec)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no spec file {path}")
    return path, None


class Sweep:
    """A sweep: its status, its results as DataFrames and arrays, its files.

    Returned by :meth:`Client.submit`, :meth:`Client.sweep` and :func:`ridgeline.run`.
    """

    def __init__(self, sweep_id: str) -> None:
        self.id = sweep_id
        self._files: Optional[str] = None

    def __repr__(self) -> str:
        return f"<ridgeline.Sweep {self.id}>"

    # What the two kinds of sweep (on a coordinator, or in a `run` folder) provide.
    def status(self) -> Dict[str, Any]:
        """The sweep's state and counts (``state``, ``total``, ``done``, ``running``,
        ``completed``, ``failed``, ``pruned``, ``best``, ``eta_s``, ...)."""
        raise NotImplementedError

    def results(self) -> Dict[str, Any]:
        """Every trial with its parameters, final metrics and history (results.json)."""
        raise NotImplementedError

    def files(self) -> str:
        """A local folder with the sweep's files (downloaded once when remote)."""
        raise NotImplementedError

    def wait(
        self, progress: bool = True, timeout: Optional[float] = None, poll_s: float = 0.5
    ) -> Dict[str, Any]:
        """Waits until the sweep ends and returns its final status (a finished run's
        sweep has ended already)."""
        return self.status()

    def cancel(self) -> None:
        """Cancels the sweep (only a sweep on a coordinator runs to be cancelled)."""
        raise RidgelineError(f"sweep {self.id} has finished: nothing to cancel")

    def resume(self) -> None:
        """Runs a cancelled search again from where it stopped (on a coordinator; for a
        run, call ``ridgeline.run`` with the same spec and ``out`` again)."""
        raise RidgelineError(
            f"sweep {self.id} ran with ridgeline.run: run the same spec with the same out "
            "to continue it"
        )

    # Built on those.
    def best(self) -> Optional[Dict[str, Any]]:
        """The best completed trial: ``{"trial", "value", "params"}``, or None. A search
        of several objectives has no best trial but a front: see :meth:`pareto`."""
        st = self.status()
        if len(st.get("objectives") or []) > 1:
            raise RidgelineError(
                f"sweep {self.id} has {len(st['objectives'])} objectives "
                f"({', '.join(st['objectives'])}): no single best trial; see pareto()"
            )
        best = st.get("best")
        return dict(best) if best else None

    def pareto(self) -> pd.DataFrame:
        """A multi-objective search's Pareto front: the feasible completed trials no
        other trial dominates, one row each as in :meth:`trials` (Optuna's
        ``study.best_trials``)."""
        df = self.trials()
        if "pareto_rank" not in df:
            raise RidgelineError(f"sweep {self.id} has one objective: see best()")
        return df[df["pareto_rank"] == 0].reset_index(drop=True)

    def lineage(self) -> pd.DataFrame:
        """A population-based-training sweep's lineage, one row per trial: ``trial``,
        ``round``, ``member``, ``parent`` (the trial whose checkpoint it started from;
        NA in round 0), ``exploited`` (whether that was another member's) and the
        sweep's metric at the trial's end."""
        r = self.results()
        rows = [t for t in r.get("trials", []) if "lineage" in t]
        if not rows:
            raise RidgelineError(f"sweep {self.id} is not a population based training")
        metric = r.get("metric")
        return pd.DataFrame(
            {
                "trial": pd.Series([int(t["trial"]) for t in rows], dtype="int64"),
                "round": pd.Series([int(t["lineage"]["round"]) for t in rows], dtype="int64"),
                "member": pd.Series([int(t["lineage"]["member"]) for t in rows], dtype="int64"),
                "parent": pd.Series([t["lineage"]["parent"] for t in rows], dtype="Int64"),
                "exploited": pd.Series([bool(t["lineage"]["exploited"]) for t in rows], dtype=bool),
                str(metric): pd.Series([t["metrics"].get(metric) for t in rows], dtype="float64"),
            }
        )

    def hypervolume(self) -> pd.DataFrame:
        """A multi-objective search's hypervolume after each feasible completed trial,
        in trial order (``trial``, ``hypervolume``), measured from the sweep's reference
        point (``status()["reference_point"]``)."""
        h = self.results().get("hypervolume_history")
        if h is None:
            raise RidgelineError(f"sweep {self.id} has one objective: no hypervolume")
        return pd.DataFrame(
            {
                "trial": pd.Series([int(r["trial"]) for r in h], dtype="int64"),
                "hypervolume": pd.Series([float(r["hypervolume"]) for r in h], dtype="float64"),
            }
        )

    def trials(self) -> pd.DataFrame:
        """One row per trial, as results.csv: trial, state, parameters, final metrics,
        epochs, duration_s, worker, attempts, interrupted, error (typed columns)."""
        return trials_frame(self.results())

    def history(self) -> pd.DataFrame:
        """Every report, long format: trial, step, metric, value."""
        return history_frame(self.results())

    def surface(self) -> Surface:
        """A finished scan's surface: axes, loss and accuracy arrays, meta.json."""
        return load_surface(self.files())

    def hessian(self) -> Dict[str, Any]:
        """A finished scan's hessian.json (eigenvalues, residuals, trace, density)."""
        path = os.path.join(self.files(), "hessian.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"sweep {self.id} has no hessian.json")
        with open(path) as f:
            return json.load(f)


class RemoteSweep(Sweep):
    """A sweep on a coordinator."""

    def __init__(self, client: "Client", sweep_id: str) -> None:
        super().__init__(sweep_id)
        self.client = client

    def _run(self, *args: str) -> str:
        return self.client._run(*args)

    def status(self) -> Dict[str, Any]:
        return json.loads(self._run("status", self.id, "--json"))

    def results(self) -> Dict[str, Any]:
        return json.loads(self._run("results", self.id, "--format", "json"))

    def wait(
        self,
        progress: bool = True,
        timeout: Optional[float] = None,
        poll_s: float = 0.5,
    ) -> Dict[str, Any]:
        """Waits until the sweep ends (completed, failed or cancelled) and returns its
        final status; with ``progress``, shows a progress bar (in a terminal and in
        Jupyter). Raises TimeoutError after ``timeout`` seconds."""
        bar = Progress(self.id) if progress else None
        start = time.monotonic()
        try:
            while True:
                st = self.status()
                if bar:
                    bar.update(st)
                if st["state"] in FINAL:
                    return st
                if timeout is not None and time.monotonic() - start > timeout:
                    raise TimeoutError(f"sweep {self.id} still {st['state']} after {timeout} s")
                time.sleep(poll_s)
        finally:
            if bar:
                bar.close()

    def cancel(self) -> None:
        """Cancels the sweep: nothing more is leased, running trials stop."""
        self._run("cancel", self.id)

    def resume(self) -> None:
        """Runs a cancelled search again from where it stopped."""
        self._run("resume", self.id)

    def extend(self, trials: int) -> None:
        """Adds ``trials`` trials to the search, running or ended; the sampler continues
        from its trials (an ended search runs again)."""
        self._run("extend", self.id, "--trials", str(int(trials)))

    def enqueue(self, *configurations: Dict[str, Any]) -> None:
        """Runs the given configurations next, one trial each (Optuna's
        ``enqueue_trial``); a parameter left out is drawn by the sampler."""
        if not configurations:
            raise ValueError("enqueue() takes at least one configuration")
        self.client._run(
            "enqueue", self.id, "-", stdin=json.dumps([dict(c) for c in configurations])
        )

    def delete(self) -> None:
        """Deletes the sweep, its database rows and its files on the coordinator."""
        self._run("delete", self.id)

    def logs(self, trial: int, attempt: Optional[int] = None) -> str:
        """A command (or function) trial's output: stdout and stderr, reports left out."""
        args = ["logs", self.id, str(int(trial))]
        if attempt is not None:
            args += ["--attempt", str(int(attempt))]
        return self._run(*args)

    def download(self, dir: Union[str, "os.PathLike[str]"]) -> Path:
        """Fetches the sweep's files (arrays, plots, checkpoints, logs, results) into
        ``dir``, resuming an earlier partial download; returns the folder."""
        out = Path(dir)
        self._run("download", self.id, "-o", str(out))
        return out

    def files(self) -> str:
        if self._files is None:
            st = self.status()
            if st["state"] not in FINAL:
                raise RidgelineError(f"sweep {self.id} is {st['state']}: wait() for it first")
            folder = tempfile.mkdtemp(prefix=f"ridgeline-{self.id}-")
            self.download(folder)
            self._files = folder
        return self._files


class FolderSweep(Sweep):
    """A sweep that ``ridgeline run`` finished: its results are files in ``--out``."""

    def __init__(self, out: Union[str, "os.PathLike[str]"], sweep_id: str) -> None:
        super().__init__(sweep_id)
        self.out = Path(out)
        self._files = str(self.out / "sweeps" / sweep_id)

    def files(self) -> str:
        assert self._files is not None
        return self._files

    def results(self) -> Dict[str, Any]:
        path = Path(self.files()) / "results.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: a scan has no trials; see surface() and hessian()")
        with open(path) as f:
            return json.load(f)

    def status(self) -> Dict[str, Any]:
        path = Path(self.files()) / "results.json"
        if path.exists():
            r = self.results()
            trials = r.get("trials", [])

            def count(state: str) -> int:
                return sum(1 for t in trials if t["state"] == state)

            best = next((t for t in trials if t["trial"] == r.get("best_trial")), None)
            return {
                "sweep_id": self.id,
                "kind": "search",
                "state": r.get("state"),
                "metric": r.get("metric"),
                "mode": r.get("mode"),
                "total": len(trials),
                **{s: count(s) for s in ("completed", "failed", "diverged", "pruned", "cancelled")},
                "best": best
                and {
                    "trial": best["trial"],
                    "value": best["metrics"].get(r.get("metric")),
                    "params": best["params"],
                },
                "objectives": r.get("objectives") or [r.get("metric")],
                "modes": r.get("modes") or [r.get("mode")],
                "pareto": [
                    {
                        "trial": t["trial"],
                        "values": [t["metrics"].get(o) for o in r.get("objectives") or []],
                        "params": t["params"],
                    }
                    for t in trials
                    if t.get("pareto_rank") == 0
                ],
                "hypervolume": r.get("hypervolume"),
                "reference_point": r.get("reference_point"),
            }
        meta_path = Path(self.files()) / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.files()} holds neither results.json nor meta.json")
        meta = json.loads(meta_path.read_text())
        return {
            "sweep_id": self.id,
            "kind": "landscape",
            "state": "completed",
            "meta": meta,
        }

    def logs(self, trial: int, attempt: Optional[int] = None) -> str:
        """A trial's output as the coordinator kept it (``trials/NNNNN/attempt-A.log``)."""
        folder = Path(self.files()) / "trials" / f"{int(trial):05}"
        logs = sorted(folder.glob("attempt-*.log"), key=lambda p: int(p.stem.split("-")[1]))
        if attempt is not None:
            logs = [p for p in logs if p.stem == f"attempt-{int(attempt)}"]
        if not logs:
            return ""
        return logs[-1].read_text(errors="replace")

    def download(self, dir: Union[str, "os.PathLike[str]"]) -> Path:
        """Copies the sweep's folder to ``dir``."""
        shutil.copytree(self.files(), dir, dirs_exist_ok=True)
        return Path(dir)


class Client:
    """A coordinator: ``Client("http://head:50051", token=...)``.

    ``token`` (or ``token_file``) is the coordinator's shared token; ``tls`` is the path
    of the CA certificate that signed the coordinator's (as the CLI's ``tls_ca``), or a
    dict of the CLI's TLS settings (``ca``, ``domain``, ``cert`` and ``key`` for mutual
    TLS); either makes the URL ``https://``. Without them the environment's
    ``RIDGELINE_*`` settings apply, as for the CLI.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:50051",
        token: Optional[str] = None,
        tls: Union[None, str, "os.PathLike[str]", Mapping[str, str]] = None,
        token_file: Optional[str] = None,
    ) -> None:
        if tls and url.startswith("http://"):
            url = "https://" + url[len("http://") :]
        self.url = url
        self._env: Dict[str, str] = {"RIDGELINE_COORDINATOR": url}
        if token is not None:
            self._env["RIDGELINE_TOKEN"] = token
        if token_file is not None:
            self._env["RIDGELINE_TOKEN_FILE"] = os.fspath(token_file)
        if isinstance(tls, (str, os.PathLike)):
            self._env["RIDGELINE_TLS_CA"] = os.fspath(tls)
        elif isinstance(tls, Mapping):
            for k, v in tls.items():
                self._env[f"RIDGELINE_TLS_{k.upper()}"] = os.fspath(v)

    def __repr__(self) -> str:
        return f"<ridgeline.Client {self.url}>"

    def _run(self, *args: str, stdin: Optional[str] = None) -> str:
        return _cli.run(args, env=self._env, stdin=stdin)

    def submit(self, spec: SpecLike) -> RemoteSweep:
        """Submits a spec (a TOML/YAML/JSON file, or a dict shaped like the TOML) and
        returns its sweep. An invalid spec raises :class:`ridgeline.SpecError` naming
        the field."""
        arg, stdin = spec_args(spec)
        out = self._run("submit", arg, stdin=stdin).strip().splitlines()
        if not out:
            raise RidgelineError("the coordinator returned no sweep id")
        return RemoteSweep(self, out[-1].strip())

    def sweeps(self) -> List[RemoteSweep]:
        """Every sweep the coordinator has, oldest first."""
        listed = json.loads(self._run("status", "--json"))
        return [RemoteSweep(self, s["sweep_id"]) for s in listed]

    def sweep(self, sweep_id: str) -> RemoteSweep:
        """The sweep with this id (raises when the coordinator has none)."""
        s = RemoteSweep(self, sweep_id)
        s.status()
        return s
