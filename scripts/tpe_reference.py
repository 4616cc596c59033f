"""Reference values of Optuna's Parzen estimator for Ridgeline's TPE tests.

Run with Optuna 5.0 (pip install optuna==5.0.0 numpy):
    python3 scripts/tpe_reference.py
and paste the printed numbers into coordinator/src/search/tpe/tests.rs (the
observations go to tpe/reference.rs). Both Optuna and Ridgeline evaluate the kernels of
log-uniform parameters on the log scale.
"""
import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import default_weights

space = {
    "a": FloatDistribution(-3.0, 5.0),
    "b": FloatDistribution(1e-4, 1.0, log=True),
    "c": IntDistribution(1, 1000),
    "d": CategoricalDistribution(["x", "y", "z"]),
}
# 30 observations (past 25, so the weights ramp), from a fixed generator. The integer
# range is wide enough that no two observations tie: numpy orders tied kernels in an
# unspecified way (its argsort is not stable), which Ridgeline need not copy.
rng = np.random.RandomState(0)
obs = {
    "a": rng.uniform(-3, 5, 30),
    "b": np.exp(rng.uniform(np.log(1e-4), 0, 30)),
    "c": rng.randint(1, 1001, 30).astype(float),
    "d": rng.randint(0, 3, 30).astype(float),
}
points = {
    "a": np.array([-2.5, 0.0, 1.3, 4.9]),
    "b": np.array([2e-4, 0.01, 0.3, 0.9]),
    "c": np.array([1.0, 300.0, 601.0, 1000.0]),
    "d": np.array([0.0, 2.0, 1.0, 1.0]),
}
for n in (0, 3, 30):
    params = _ParzenEstimatorParameters(1.0, True, False, default_weights, True)
    pe = _ParzenEstimator({k: v[:n] for k, v in obs.items()}, space, params)
    print(n, [float(x) for x in pe.log_pdf(points)])
print("obs a", [float(x) for x in obs["a"]])
print("obs b", [float(x) for x in obs["b"]])
print("obs c", [int(x) for x in obs["c"]])
print("obs d", [int(x) for x in obs["d"]])
