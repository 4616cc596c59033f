"""TPE with ASHA over digits_objective.objective, in two local worker processes:

    pip install ./python        # once, from the repository root
    python examples/python/search.py
"""

import ridgeline
from digits_objective import objective

if __name__ == "__main__":
    space = {
        "lr": ridgeline.loguniform(1e-3, 3.0),
        "l2": ridgeline.loguniform(1e-6, 1e-1),
        "batch": ridgeline.choice([16, 32, 64]),
    }
    asha = {"type": "asha", "grace_period": 1, "reduction_factor": 3, "max_t": 9}
    sweep = ridgeline.optimize(
        objective, space, n_trials=24, metric="val_loss", scheduler=asha, workers=2, seed=1,
        out="ridgeline-out",
    )
    df = sweep.trials()
    print(df.groupby("state", observed=True).size().to_string())
    print(df.sort_values("val_loss").head(5)[["trial", "lr", "l2", "batch", "val_loss", "val_accuracy"]])
