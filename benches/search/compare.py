"""Ridgeline's searchers and schedulers side by side with Optuna, in one run.

    cargo build --release --examples --bins
    python3 -m venv /tmp/optuna && /tmp/optuna/bin/pip install optuna==5.0.0 matplotlib
    /tmp/optuna/bin/python benches/search/compare.py [--quick]

Writes benches/search/out/{results.json, efficiency.png, table.md}. Parts:

1. Sample efficiency: best value found after n trials (median and quartiles over seeds)
   for Ridgeline `tpe` (multivariate, its default, and univariate), Ridgeline
   `random`, and Optuna's TPESampler with its defaults (multivariate since 5.0) and
   with `multivariate=False`, on Branin, Hartmann-6 and 10-D Rosenbrock (200 trials,
   20 seeds), and on the digits softmax regression of examples/command/train.py as a
   command trial (50 trials, 5 seeds: each trial trains for real).
2. Early stopping: the built-in MLP on 10k MNIST, the same 27 random trials with and
   without ASHA; best val_accuracy and total epochs of each.
3. Overhead: trials per second of trivial command trials through a coordinator and two
   worker processes, against Optuna with SQLite storage running the same command (and a
   Python function) in one process.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import optuna

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "ridgeline")
EXAMPLE = os.path.join(ROOT, "target", "release", "examples", "search_efficiency")
OUT = os.path.join(ROOT, "benches", "search", "out")
TRAIN = os.path.join(ROOT, "examples", "command", "train.py")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def branin(x):
    b, c, t = 5.1 / (4 * np.pi**2), 5 / np.pi, 1 / (8 * np.pi)
    return (x[1] - b * x[0] ** 2 + c * x[0] - 6) ** 2 + 10 * (1 - t) * np.cos(x[0]) + 10


A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
P = np.array([[0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886], [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
              [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650], [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381]])
ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x):
    x = np.asarray(x)
    return -float(np.sum(ALPHA * np.exp(-np.sum(A * (x - P) ** 2, axis=1))))


def rosenbrock10(x):
    x = np.asarray(x)
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


FUNCS = {
    "branin": (branin, [(-5, 10), (0, 15)]),
    "hartmann6": (hartmann6, [(0, 1)] * 6),
    "rosenbrock10": (rosenbrock10, [(-2.048, 2.048)] * 10),
}


def optuna_run(func, bounds, seed, budget, multivariate):
    kw = {} if multivariate is None else {"multivariate": multivariate}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, **kw))
    study.optimize(lambda t: func([t.suggest_float(f"x{i}", lo, hi) for i, (lo, hi) in enumerate(bounds)]),
                   n_trials=budget)
    return [t.value for t in study.trials]


def digits_spec(path, algorithm, seed, budget):
    text = open(os.path.join(ROOT, "examples", "command", "digits-tpe-asha.toml")).read()
    text = text.split("[search.scheduler]")[0]
    text = text.replace('"--epochs", "9"]', '"--epochs", "3"]')
    text = text.replace('workdir = "."', f'workdir = "{os.path.dirname(TRAIN)}"')
    text = text.replace('algorithm = "tpe"', f'algorithm = "{algorithm}"')
    text = text.replace("num_samples = 24", f"num_samples = {budget}")
    text = text.replace("max_concurrent = 4", "max_concurrent = 1")
    text = text.replace("seed = 1", f"seed = {seed}")
    open(path, "w").write(text)


def ridgeline_run(spec, out, workers=1):
    subprocess.run([BIN, "run", spec, "--workers", str(workers), "--out", out], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sweep = os.listdir(os.path.join(out, "sweeps"))[0]
    return json.load(open(os.path.join(out, "sweeps", sweep, "results.json")))


def digits_optuna(seed, budget, multivariate):
    def objective(t):
        lr = t.suggest_float("lr", 1e-3, 3.0, log=True)
        l2 = t.suggest_float("l2", 1e-6, 1e-1, log=True)
        batch = t.suggest_categorical("batch", [16, 32, 64])
        out = subprocess.run([sys.executable, TRAIN, "--lr", repr(lr), "--l2", repr(l2), "--batch", str(batch),
                              "--epochs", "3"], capture_output=True, text=True,
                             env={**os.environ, "RIDGELINE_TRIAL_DIR": tempfile.mkdtemp()}, check=True)
        last = [l for l in out.stdout.splitlines() if l.startswith("ridgeline:")][-1]
        return json.loads(last.split(":", 1)[1])["val_loss"]
    kw = {} if multivariate is None else {"multivariate": multivariate}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, **kw))
    study.optimize(objective, n_trials=budget)
    return [t.value for t in study.trials]


def best_so_far(values):
    return np.minimum.accumulate(np.asarray(values, dtype=float))


def efficiency(quick):
    return synthetic(quick) + digits(quick)


def synthetic(quick):
    budget, seeds = (60, 4) if quick else (200, 20)
    runs = []
    lines = subprocess.run([EXAMPLE, str(budget), str(seeds)], check=True, capture_output=True, text=True).stdout
    runs += [json.loads(l) for l in lines.splitlines()]
    for name, (func, bounds) in FUNCS.items():
        for label, mv in (("optuna-tpe", None), ("optuna-tpe-univariate", False)):
            for seed in range(seeds):
                t0 = time.time()
                v = optuna_run(func, bounds, seed, budget, mv)
                runs.append({"sampler": label, "function": name, "seed": seed, "values": v,
                             "seconds": time.time() - t0})
        print(f"  {name} done", file=sys.stderr)
    return runs


def digits(quick):
    runs = []
    dbudget, dseeds = (12, 2) if quick else (50, 5)
    tmp = tempfile.mkdtemp()
    for algorithm, label in (("tpe", "ridgeline-tpe"), ("random", "ridgeline-random")):
        for seed in range(dseeds):
            spec = os.path.join(tmp, f"{algorithm}-{seed}.toml")
            digits_spec(spec, algorithm, seed, dbudget)
            t0 = time.time()
            r = ridgeline_run(spec, os.path.join(tmp, f"{algorithm}-{seed}"))
            v = [t["metrics"]["val_loss"] for t in sorted(r["trials"], key=lambda t: t["trial"])]
            runs.append({"sampler": label, "function": "digits-command", "seed": seed, "values": v,
                         "seconds": time.time() - t0})
    for label, mv in (("optuna-tpe", None), ("optuna-tpe-univariate", False)):
        for seed in range(dseeds):
            t0 = time.time()
            runs.append({"sampler": label, "function": "digits-command", "seed": seed,
                         "values": digits_optuna(seed, dbudget, mv), "seconds": time.time() - t0})
    print("  digits done", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    return runs


def asha(quick):
    tmp = tempfile.mkdtemp()
    trials, epochs = (9, 3) if quick else (27, 9)
    base = f'''
name = "mnist-asha"
[data]
path = "{ROOT}/examples/data/mnist10k-images-idx3-ubyte.gz"
labels = "{ROOT}/examples/data/mnist10k-labels-idx1-ubyte.gz"
normalize = "max"
[model]
depth = 1
width = 128
[train]
epochs = {epochs}
batch_size = 128
[search]
algorithm = "random"
num_samples = {trials}
seed = 7
[search.space]
lr = {{ type = "loguniform", low = 1e-5, high = 1e-1 }}
width = {{ type = "choice", values = [16, 64, 256] }}
weight_decay = {{ type = "loguniform", low = 1e-6, high = 1e-1 }}
'''
    out = {}
    for label, extra in (("full", ""), ("asha", f'[search.scheduler]\ntype = "asha"\ngrace_period = 1\nreduction_factor = 3\nmax_t = {epochs}\n')):
        spec = os.path.join(tmp, f"{label}.toml")
        open(spec, "w").write(base + extra)
        t0 = time.time()
        r = ridgeline_run(spec, os.path.join(tmp, label), workers=2)
        seconds = time.time() - t0
        accs = [t["metrics"].get("val_accuracy") or 0 for t in r["trials"] if t["state"] == "completed"]
        out[label] = {
            "best_val_accuracy": max(accs),
            "epochs": sum(len(t["history"]) for t in r["trials"]),
            "pruned": sum(t["state"] == "pruned" for t in r["trials"]),
            "seconds": seconds,
            "best_trial": r["best_trial"],
        }
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def overhead(quick):
    n = 100 if quick else 500
    tmp = tempfile.mkdtemp()
    spec = os.path.join(tmp, "trivial.toml")
    open(spec, "w").write(f'''
name = "trivial"
[trial]
command = ["sh", "-c", "echo 'ridgeline: {{\\"loss\\": {{x}}}}'"]
[search]
algorithm = "random"
metric = "loss"
num_samples = {n}
[search.space]
x = {{ type = "uniform", low = 0.0, high = 1.0 }}
''')
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    coord = subprocess.Popen([BIN, "coordinator", "--listen", "127.0.0.1:0", "--data-dir", data,
                              "--metrics-listen", "off"], stderr=subprocess.DEVNULL)
    addr_file = os.path.join(data, "coordinator.addr")
    while not os.path.exists(addr_file) or not open(addr_file).read().endswith("\n"):
        time.sleep(0.05)
    url = "http://" + open(addr_file).read().strip()
    workers = [subprocess.Popen([BIN, "worker", "--coordinator", url, "--name", f"w{i}", "--metrics-listen", "off",
                                 "--trial-root", os.path.join(tmp, "trials")], stderr=subprocess.DEVNULL)
               for i in range(2)]
    time.sleep(1.0)
    t0 = time.time()
    subprocess.run([BIN, "submit", spec, "--coordinator", url, "--wait"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    ridgeline_s = time.time() - t0
    for p in workers + [coord]:
        p.terminate()
        p.wait()
    storage = f"sqlite:///{tmp}/optuna.db"

    def timed(objective):
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
        t0 = time.time()
        study.optimize(objective, n_trials=n)
        return time.time() - t0

    def command(t):
        x = t.suggest_float("x", 0, 1)
        out = subprocess.run(["sh", "-c", f"echo 'ridgeline: {{\"loss\": {x}}}'"], capture_output=True, text=True)
        return json.loads(out.stdout.split(":", 1)[1])["loss"]

    optuna_cmd_s = timed(command)
    optuna_fn_s = timed(lambda t: t.suggest_float("x", 0, 1))
    shutil.rmtree(tmp, ignore_errors=True)
    return {"trials": n, "ridgeline_2_workers_per_s": n / ridgeline_s,
            "optuna_sqlite_command_per_s": n / optuna_cmd_s, "optuna_sqlite_function_per_s": n / optuna_fn_s}


def table(runs):
    rows = []
    funcs = sorted({r["function"] for r in runs}, key=lambda f: list(FUNCS).index(f) if f in FUNCS else 9)
    samplers = ["ridgeline-tpe", "ridgeline-tpe-univariate", "optuna-tpe", "optuna-tpe-univariate", "ridgeline-random"]
    for f in funcs:
        for s in samplers:
            rs = [r for r in runs if r["function"] == f and r["sampler"] == s]
            if not rs:
                continue
            n = len(rs[0]["values"])
            for at in sorted({min(50, n), n}):
                best = [best_so_far(r["values"])[at - 1] for r in rs]
                q1, med, q3 = np.percentile(best, [25, 50, 75])
                rows.append((f, s, at, len(rs), med, q1, q3))
    return rows


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    funcs = [f for f in list(FUNCS) + ["digits-command"] if any(r["function"] == f for r in runs)]
    fig, axes = plt.subplots(1, len(funcs), figsize=(4.2 * len(funcs), 3.6))
    colors = {"ridgeline-tpe": "C0", "ridgeline-tpe-univariate": "C9", "optuna-tpe": "C1",
              "optuna-tpe-univariate": "C3", "ridgeline-random": "C7"}
    # Known minima: the plots show the gap to them (regret) on a log scale.
    optimum = {"branin": 0.397887, "hartmann6": -3.32237, "rosenbrock10": 0.0}
    for ax, f in zip(axes, funcs):
        for s, c in colors.items():
            rs = [r for r in runs if r["function"] == f and r["sampler"] == s]
            if not rs:
                continue
            curves = np.array([best_so_far(r["values"]) for r in rs]) - optimum.get(f, 0.0)
            x = np.arange(1, curves.shape[1] + 1)
            q1, med, q3 = np.percentile(curves, [25, 50, 75], axis=0)
            ax.plot(x, med, color=c, label=s, lw=1.4)
            ax.fill_between(x, q1, q3, color=c, alpha=0.15)
        ax.set_title(f"{f} ({len(rs)} seeds)" + (": best - optimum" if f in optimum else ": best val_loss"))
        ax.set_xlabel("trials")
        if f in optimum:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0.25, 0.45)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best so far (median, quartiles)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny budgets, to check the script")
    ap.add_argument("--only", choices=["efficiency", "digits", "asha", "overhead", "plot"])
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "results.json")
    res = json.load(open(path)) if os.path.exists(path) and a.only else {}
    if a.only in (None, "efficiency"):
        res["efficiency"] = efficiency(a.quick)
    if a.only == "digits":
        res["efficiency"] = [r for r in res["efficiency"] if r["function"] != "digits-command"] + digits(a.quick)
    if a.only in (None, "asha") and a.only != "plot":
        res["asha"] = asha(a.quick)
        print(json.dumps(res["asha"]), file=sys.stderr)
    if a.only in (None, "overhead"):
        res["overhead"] = overhead(a.quick)
        print(json.dumps(res["overhead"]), file=sys.stderr)
    json.dump(res, open(path, "w"))
    if "efficiency" in res:
        plot(res["efficiency"], os.path.join(OUT, "efficiency.png"))
        lines = ["| objective | sampler | trials | seeds | best: median | 25 % | 75 % |", "|---|---|---|---|---|---|---|"]
        for f, s, at, k, med, q1, q3 in table(res["efficiency"]):
            lines.append(f"| {f} | {s} | {at} | {k} | {med:.4g} | {q1:.4g} | {q3:.4g} |")
        open(os.path.join(OUT, "table.md"), "w").write("\n".join(lines) + "\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
