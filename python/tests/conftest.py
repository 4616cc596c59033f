"""Real processes for the Python package's tests: a coordinator (with a token) and two
workers started from the ``ridgeline`` binary the package installed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import ridgeline
from ridgeline import _cli

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DIGITS = REPO / "examples" / "data" / "digits.csv.gz"
TOKEN = "python-tests-token"


class Cluster:
    """A coordinator and its workers; ``client`` speaks to it with the right token."""

    def __init__(self, root: Path, env: "Dict[str, str] | None" = None) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.procs: List[subprocess.Popen] = []
        self.env = dict(os.environ, RIDGELINE_TOKEN=TOKEN, **(env or {}))
        self.env.pop("RIDGELINE_COORDINATOR", None)
        self.procs.append(self._coordinator("127.0.0.1:0", "w"))
        addr_file = self.data / "coordinator.addr"
        deadline = time.monotonic() + 30
        while not (addr_file.exists() and addr_file.read_text().strip()):
            if self.procs[0].poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(
                    "the coordinator did not start:\n" + (root / "coordinator.log").read_text()
                )
            time.sleep(0.05)
        self.url = "http://" + addr_file.read_text().strip()
        for i in range(2):
            self.procs.append(self._worker(i, "w"))
        self.client = ridgeline.Client(self.url, token=TOKEN)

    def _worker(self, i: int, log_mode: str) -> subprocess.Popen:
        wlog = open(self.root / f"worker{i}.log", log_mode)
        return subprocess.Popen(
            [
                _cli.binary(),
                "worker",
                "--coordinator",
                self.url,
                "--name",
                f"w{i}",
                "--trial-root",
                str(self.root / "trials"),
                "--metrics-listen",
                "off",
            ],
            env=self.env,
            stdout=wlog,
            stderr=subprocess.STDOUT,
        )

    def kill_worker(self, i: int) -> None:
        """Kills worker ``i`` (SIGKILL) and starts another in its place."""
        old = self.procs[1 + i]
        old.kill()
        old.wait()
        self.procs[1 + i] = self._worker(i, "a")

    def _coordinator(self, listen: str, log_mode: str) -> subprocess.Popen:
        log = open(self.root / "coordinator.log", log_mode)
        return subprocess.Popen(
            [
                _cli.binary(),
                "coordinator",
                "--listen",
                listen,
                "--data-dir",
                str(self.data),
                "--metrics-listen",
                "off",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def restart_coordinator(self) -> None:
        """Kills the coordinator (SIGKILL) and starts it again on the same address and
        data folder; the workers reconnect."""
        old = self.procs[0]
        old.kill()
        old.wait()
        self.procs[0] = self._coordinator(self.url.removeprefix("http://"), "a")
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client._run("status")
                return
            except Exception:
                if self.procs[0].poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    def cli(self, *args: str, cwd: "Path | None" = None) -> subprocess.CompletedProcess:
        """The CLI against this coordinator, as a user would type it."""
        return subprocess.run(
            [_cli.binary(), *args, "--coordinator", self.url],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=cwd,
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def in_tests_folder(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs the test in this folder, where workers import the objectives module from
    (a dict spec's relative paths and a function trial's imports start there)."""
    monkeypatch.chdir(HERE)
    monkeypatch.syspath_prepend(str(HERE))
    return HERE
