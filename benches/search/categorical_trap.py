"""The categorical trap: Ridgeline's TPE forms against Optuna's TPESampler (multivariate
and independent) on a mixed space whose best optimiser is one category, in one run.

    cargo build --release --example categorical_trap
    python3 -m venv /tmp/optuna && /tmp/optuna/bin/pip install optuna numpy
    /tmp/optuna/bin/python benches/search/categorical_trap.py [--trials 200] [--seeds 200]

Prints, per sampler: the seeds whose best trial has the wrong category, the median share
of the right category after the 10 start-up trials, and the final value's quartiles.
"""

import argparse
import json
import math
import os
import subprocess

import numpy as np
import optuna

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "target", "release", "examples", "categorical_trap")
BEST = {
    "sgd": (-1.5, 0.6),
    "adam": (-3.5, 0.0),
    "rmsprop": (-3.0, 0.4),
    "adagrad": (-2.0, 0.8),
}


def trap(p):
    c, b = BEST[p["opt"]]
    return (
        (math.log10(p["lr"]) - c) ** 2
        + 0.05 * (p["layers"] - 5) ** 2
        + 4 * (p["dropout"] - 0.2) ** 2
        + b
    )


def optuna_runs(multivariate, trials, seeds):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = []
    for seed in range(seeds):
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=multivariate)
        study = optuna.create_study(sampler=sampler)
        out: list = []

        def objective(t, out=out):
            p = {
                "lr": t.suggest_float("lr", 1e-5, 1e-1, log=True),
                "layers": t.suggest_int("layers", 1, 8),
                "opt": t.suggest_categorical("opt", list(BEST)),
                "dropout": t.suggest_float("dropout", 0.0, 0.5),
            }
            v = trap(p)
            out.append((p["opt"], v))
            return v

        study.optimize(objective, n_trials=trials)
        runs.append(out)
    return runs


def ridgeline_runs(form, trials, seeds):
    done = subprocess.run(
        [EXAMPLE, form, str(trials), str(seeds)],
        check=True,
        capture_output=True,
        text=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def summary(label, runs):
    wrong = sum(min(r, key=lambda t: t[1])[0] != "adam" for r in runs)
    share = [sum(o == "adam" for o, _ in r[10:]) / (len(r) - 10) for r in runs]
    q = np.percentile([min(v for _, v in r) for r in runs], [25, 50, 75])
    return (
        f"| {label} | {wrong}/{len(runs)} | {np.median(share):.2f} "
        f"| {q[0]:.5f} / {q[1]:.5f} / {q[2]:.5f} |"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=200)
    a = ap.parse_args()
    print(f"{a.trials} trials, {a.seeds} seeds")
    print(
        "| sampler | wrong category | right category after start-up (median share) | final value (quartiles) |"
    )
    print("| --- | --- | --- | --- |")
    for label, form in [
        ("Ridgeline tpe (default: choices on their own density)", "own"),
        ("Ridgeline tpe, joint_categorical = true (Optuna's form)", "joint"),
        ("Ridgeline tpe, multivariate = false", "univariate"),
    ]:
        print(summary(label, ridgeline_runs(form, a.trials, a.seeds)))
    print(
        summary(
            "Optuna TPESampler (multivariate, its default)",
            optuna_runs(True, a.trials, a.seeds),
        )
    )
    print(
        summary(
            "Optuna TPESampler(multivariate=False)",
            optuna_runs(False, a.trials, a.seeds),
        )
    )


if __name__ == "__main__":
    main()
