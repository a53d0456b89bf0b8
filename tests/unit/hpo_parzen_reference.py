"""Prints Optuna's Parzen-estimator log densities for the cases of hpo_test.cpp's
HpoParzen.MatchesOptunasEstimator (values recorded there with Optuna 5.1.0).

    python3 -m venv --system-site-packages /tmp/optuna && /tmp/optuna/bin/pip install optuna==5.1.0
    /tmp/optuna/bin/python tests/unit/hpo_parzen_reference.py

Uses Optuna's private _ParzenEstimator with its TPESampler defaults (prior weight 1, magic clip,
no endpoints, default weights, univariate). For log floats Optuna's log_pdf is a density in
log x; hpcml's is in x, which differs by -log x (the ratio l/g is the same).
"""
import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import default_weights

PARAMETERS = _ParzenEstimatorParameters(prior_weight=1.0, consider_magic_clip=True, consider_endpoints=False,
                                        weights=default_weights, multivariate=False)
OBS30 = [float((k * 37) % 100) + 0.5 for k in range(30)]
CASES = [
    ("uniform", FloatDistribution(0, 100), [10, 20, 70], [5, 40, 99]),
    ("loguniform", FloatDistribution(1e-5, 10, log=True), [1e-4, 3e-3, 0.5], [2e-5, 0.01, 5]),
    ("int", IntDistribution(1, 200), [3, 4, 150], [1, 4, 100, 200]),
    ("log int", IntDistribution(1, 200, log=True), [3, 4, 150], [1, 4, 100, 200]),
    ("categorical", CategoricalDistribution(["a", "b", "c"]), [0, 0, 1], [0, 1, 2]),
    ("uniform, 30 observations", FloatDistribution(0, 100), OBS30, [1, 50, 77.7]),
    ("uniform, none", FloatDistribution(0, 100), [], [1, 50]),
]
for name, dist, obs, xs in CASES:
    pe = _ParzenEstimator({"x": np.array(obs, dtype=float)}, {"x": dist}, PARAMETERS)
    print(f"{name}: " + ", ".join("%.12g" % v for v in pe.log_pdf({"x": np.array(xs, dtype=float)})))
