"""RegMix (Liu et al., ICLR 2025): regress a proxy loss on mixture weights, pick the predicted best.

Algorithm. (1) Sample candidate mixtures around the token-share prior with the rules of the
official ``mixture_config/synthesize_mixture.py``: the prior is tempered (``p ** 0.5``,
renormalised), each draw is a Dirichlet(prior_t * s) with the concentration s chosen uniformly from
15 log-spaced values in [0.1, 5]; a draw is rejected when any weight exceeds 15x the *untempered*
prior (a repetition guard), weights below 2e-4 are zeroed, the rest renormalised and rounded to
multiples of 2e-4; candidates closer than 1e-5 (L1) are de-duplicated. (2) One tiny proxy per
candidate is trained (the driver, :mod:`mixweave.mixers.learned`) and a target loss measured.
(3) A regressor maps weights -> loss: ``linear`` (ridge), ``quadratic`` (ridge on degree-2
features) or ``gbm`` (scikit-learn's HistGradientBoostingRegressor, the stand-in for the paper's
LightGBM). (4) Many mixtures are simulated from the same sampler, the ``top_k`` with the lowest
predicted loss are averaged: that is the mixture (then made feasible under the epoch caps).

Cost: numpy/scikit-learn, milliseconds to seconds (100k simulated mixtures); the proxies dominate.
Trade-off: optimises one measured loss, not utility; the regression needs many proxies when
sources are many (the paper ran 512 for 17 domains), and a linear fit favours corner mixtures that
the top-k average only partly smooths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mixweave.errors import ConfigError

PRIOR_TEMPERATURE = 0.5
MIN_CONCENTRATION = 0.1
MAX_CONCENTRATION = 5.0
N_CONCENTRATIONS = 15
MAX_USAGE = 15.0
MIN_WEIGHT = 2e-4
DEDUP_L1 = 1e-5

Regressor = Literal["linear", "quadratic", "gbm"]


def tempered_prior(prior: np.ndarray, temperature: float = PRIOR_TEMPERATURE) -> np.ndarray:
    """``prior ** temperature`` renormalised (the official script applies it when temperature < 1)."""
    p = np.asarray(prior, dtype=np.float64)
    p = p / p.sum()
    if temperature < 1.0:
        p = p ** temperature
        p = p / p.sum()
    return p


def concentrations(n: int = N_CONCENTRATIONS, low: float = MIN_CONCENTRATION,
                   high: float = MAX_CONCENTRATION) -> np.ndarray:
    return np.logspace(np.log10(low), np.log10(high), n)


def _draw(prior_t: np.ndarray, n: int, rng: np.random.Generator, grid: np.ndarray) -> np.ndarray:
    """``n`` Dirichlet draws, each with a concentration picked uniformly from ``grid``."""
    which = rng.integers(0, len(grid), size=n)
    out = np.empty((n, prior_t.size))
    for j, s in enumerate(grid):
        rows = np.flatnonzero(which == j)
        if rows.size:
            out[rows] = rng.dirichlet(prior_t * s, size=rows.size)
    return out


def _clean(draws: np.ndarray, prior: np.ndarray, max_usage: float, min_weight: float) -> np.ndarray:
    bound = np.minimum(prior * max_usage, 1.0)
    ok = np.all(draws <= bound, axis=1) & np.all(np.isfinite(draws), axis=1)
    w = draws[ok]
    w = np.where(w < min_weight, 0.0, w)
    s = w.sum(axis=1)
    w = w[s > 0] / s[s > 0, None]
    w = np.round(w / min_weight) * min_weight
    s = w.sum(axis=1)
    return w[s > 0] / s[s > 0, None]


def _dedup(w: np.ndarray, threshold: float = DEDUP_L1) -> np.ndarray:
    if len(w) == 0:
        return w
    order = np.lexsort(w.T)
    kept = [w[order[0]]]
    for i in order[1:]:
        if np.abs(w[i] - kept[-1]).sum() > threshold:
            kept.append(w[i])
    return np.stack(kept)


def sample_mixtures(prior: np.ndarray, n: int, *, seed: int = 42, temperature: float = PRIOR_TEMPERATURE,
                    max_usage: float = MAX_USAGE, min_weight: float = MIN_WEIGHT, dedup: bool = True,
                    oversample: int = 100) -> np.ndarray:
    """``[n, k]`` candidate mixtures by the official rules (module docstring), rows summing to 1.

    Draws ``oversample * n`` candidates (the script's SAMPLE_MULTIPLIER), keeps the accepted and
    de-duplicated ones and picks ``n`` of them at random; raises ConfigError when fewer survive."""
    prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 1 or prior.size < 2 or np.any(prior <= 0):
        raise ConfigError("regmix needs at least two sources, each with tokens")
    if n < 1:
        raise ConfigError(f"regmix: the number of mixtures must be >= 1, got {n}")
    prior = prior / prior.sum()
    rng = np.random.default_rng(seed)
    draws = _draw(tempered_prior(prior, temperature), oversample * n, rng, concentrations())
    w = _clean(draws, prior, max_usage, min_weight)
    if dedup:
        w = _dedup(w)
    if len(w) < n:
        raise ConfigError(f"regmix: only {len(w)} distinct mixtures of {oversample * n} draws pass the "
                          f"{max_usage:g}x-prior bound; ask for fewer proxies")
    return w[np.sort(rng.choice(len(w), size=n, replace=False))]


def simulate_mixtures(prior: np.ndarray, n: int, *, seed: int = 42, temperature: float = PRIOR_TEMPERATURE,
                      max_usage: float = MAX_USAGE, min_weight: float = MIN_WEIGHT) -> np.ndarray:
    """``n`` draws of the same sampler, the accepted ones kept (no de-duplication, no re-draws):
    the search space of the predicted minimiser."""
    prior = np.asarray(prior, dtype=np.float64)
    prior = prior / prior.sum()
    rng = np.random.default_rng(seed)
    return _clean(_draw(tempered_prior(prior, temperature), int(n), rng, concentrations()), prior, max_usage,
                  min_weight)


def _features(w: np.ndarray, kind: str) -> np.ndarray:
    if kind != "quadratic":
        return w
    i, j = np.triu_indices(w.shape[1])
    return np.hstack([w, w[:, i] * w[:, j]])


@dataclass
class FittedRegressor:
    kind: str
    model: Any

    def predict(self, w: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(_features(np.asarray(w, dtype=np.float64), self.kind)), dtype=np.float64)


def fit_regressor(weights: np.ndarray, target: np.ndarray, kind: Regressor = "linear", *,
                  seed: int = 0, alpha: float = 1e-4) -> FittedRegressor:
    """Fit weights ``[m, k]`` -> target loss ``[m]``. ``linear``/``quadratic``: ridge with penalty
    ``alpha`` (scaled by the number of rows); ``gbm``: HistGradientBoostingRegressor (lr 0.05, 300
    iterations, leaves of at least 2 rows), seeded."""
    x = np.asarray(weights, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ConfigError(f"regmix: need at least two (mixture, loss) pairs to fit, got {len(y)}")
    if not np.all(np.isfinite(y)):
        raise ConfigError("regmix: a proxy's target loss is not finite; lower the proxies' lr or check the data")
    if kind in ("linear", "quadratic"):
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=alpha * len(x)).fit(_features(x, kind), y)
    elif kind == "gbm":
        from sklearn.ensemble import HistGradientBoostingRegressor

        model = HistGradientBoostingRegressor(learning_rate=0.05, max_iter=300, min_samples_leaf=2,
                                              early_stopping=False, random_state=seed).fit(x, y)
    else:
        raise ConfigError(f"regmix: regressor {kind!r} is not one of linear, quadratic, gbm")
    return FittedRegressor(kind, model)


def predict_and_average(model: FittedRegressor, prior: np.ndarray, *, n_simulate: int = 100_000,
                        top_k: int = 128, seed: int = 42, **sampler: Any) -> tuple[np.ndarray, dict[str, float]]:
    """Simulate ``n_simulate`` mixtures (:func:`simulate_mixtures`), predict
    their loss and average the ``top_k`` lowest: returns (weights, {predicted_best, predicted_mean_top_k,
    predicted_at_average, n_simulated})."""
    sims = simulate_mixtures(prior, n_simulate, seed=seed, **sampler)
    if len(sims) == 0:
        raise ConfigError(f"regmix: none of {n_simulate} simulated mixtures passes the usage bound; raise n_simulate")
    pred = model.predict(sims)
    k = max(1, min(int(top_k), len(sims)))
    best = np.argsort(pred, kind="stable")[:k]
    w = sims[best].mean(axis=0)
    w = w / w.sum()
    return w, {"predicted_best": float(pred[best[0]]), "predicted_mean_top_k": float(pred[best].mean()),
               "predicted_at_average": float(model.predict(w[None])[0]), "n_simulated": int(len(sims)),
               "top_k": int(k)}
