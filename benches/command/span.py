"""The cost of a trivial command trial, in one run on this machine.

- bare: the trial's program, `sh -c "echo 'ridgeline: {"loss": X}'"`, started with
  `os.posix_spawn` and waited for (stdout to a pipe, read to its end), per process;
- span: the same program as a Ridgeline trial, from the worker's start of the unit to
  its end (trial folder, supervisor, containment, report, teardown: the trials'
  `duration_s`), median over 500 trials of `ridgeline run --workers 1` (one trial at a
  time, as the bare loop runs); also with `--workers 2`, where on two cores the two
  trials' programs, supervisors and workers share the CPUs;
- throughput: those 500 trials end to end (coordinator, leases, commits included)
  against Optuna's ask/tell loop running the same command with `subprocess.run`, in
  memory and on SQLite (where optuna is installed).

    cargo build --release
    python benches/command/span.py [--ridgeline target/release/ridgeline] [--trials 500]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMAND = "echo 'ridgeline: {\"loss\": %s}'"


def bare(n: int) -> float:
    """Seconds per posix_spawn + read + wait of the program."""
    times = []
    for i in range(n):
        r, w = os.pipe()
        t = time.perf_counter()
        pid = os.posix_spawn(
            "/bin/sh",
            ["sh", "-c", COMMAND % (i / n)],
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_CLOSE, r)],
        )
        os.close(w)
        while os.read(r, 4096):
            pass
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - t)
        os.close(r)
    return statistics.median(times)


def ridgeline(binary: str, trials: int, work: str, workers: int) -> tuple[float, float]:
    """Trials per second of `ridgeline run`, and the median trial span in seconds."""
    spec = os.path.join(work, "trivial.toml")
    # The command as a TOML string, `{x}` the parameter.
    command = COMMAND.replace('"', '\\"') % "{x}"
    with open(spec, "w") as f:
        f.write(
            f"""name = "trivial"
[trial]
command = "{command}"
[search]
algorithm = "random"
num_samples = {trials}
metric = "loss"
mode = "min"
seed = 1
[search.space]
x = {{ type = "uniform", low = 0.0, high = 1.0 }}
"""
        )
    out = os.path.join(work, f"out-{workers}")
    t = time.perf_counter()
    subprocess.run(
        [binary, "run", spec, "--workers", str(workers), "--out", out],
        check=True,
        capture_output=True,
    )
    rate = trials / (time.perf_counter() - t)
    with open(glob.glob(os.path.join(out, "sweeps", "*", "results.json"))[0]) as f:
        results = json.load(f)
    assert all(r["state"] == "completed" for r in results["trials"]), "a trivial trial failed"
    return rate, statistics.median(r["duration_s"] for r in results["trials"])


def optuna_rate(trials: int, storage: str | None) -> float | None:
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(t: optuna.Trial) -> float:
        x = t.suggest_float("x", 0.0, 1.0)
        out = subprocess.run(["sh", "-c", COMMAND % x], capture_output=True, text=True, check=True)
        return float(json.loads(out.stdout.split("ridgeline: ", 1)[1])["loss"])

    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=1))
    t = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return trials / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ridgeline", default=os.path.join(ROOT, "target", "release", "ridgeline"))
    ap.add_argument("--trials", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        b = bare(args.trials)
        _, span = ridgeline(args.ridgeline, args.trials, work, 1)
        rate, span2 = ridgeline(args.ridgeline, args.trials, work, 2)
        memory = optuna_rate(args.trials, None)
        sqlite = optuna_rate(args.trials, f"sqlite:///{work}/optuna.db")
    print(
        json.dumps(
            {
                "bare_ms": round(b * 1e3, 3),
                "span_ms": round(span * 1e3, 3),
                "span_2_workers_ms": round(span2 * 1e3, 3),
                "ridgeline_trials_per_s": round(rate, 1),
                "optuna_memory_trials_per_s": memory and round(memory, 1),
                "optuna_sqlite_trials_per_s": sqlite and round(sqlite, 1),
            }
        )
    )
    print(
        f"trivial command trial: span / bare fork+exec = {span / b:.2f}x"
        f" ({span2 / b:.2f}x with two trials at a time on this machine's {os.cpu_count()} CPUs)"
    )
    if memory:
        print(
            f"trials/s: ridgeline run / Optuna in memory = {rate / memory:.2f}x; / Optuna SQLite = {rate / sqlite:.2f}x"
        )


if __name__ == "__main__":
    main()
