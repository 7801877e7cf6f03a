"""Weakest-link mixing: maximise the worst benchmark's utility, minus a diversity/risk penalty.

Algorithm:

    maximise    min_j (U^T w)_j  -  lam * w^T Sigma w
    subject to  sum(w) = 1,  w >= 0,  w_i * B <= E_i * n_i

written with an epigraph variable t (maximise t - risk subject to U^T w >= t): a convex QP
(CLARABEL). Cost: one interior-point solve, as UtiliMax; the program is cached per shape (DPP).
Trade-off: protects the benchmark the mixture serves worst (max-min fairness) where UtiliMax
minimises the overall distance to the ideal; it ignores how much better than the worst the other
benchmarks are. With equal utilities and Sigma = I it reduces to UniMax.
"""

from __future__ import annotations

import functools

import numpy as np

from mixweave.mixers.convex import PROGRAM_LOCK, ConvexResult, finite_caps, run_program


@functools.lru_cache(maxsize=16)
def _weakest_link_program(n_sources: int, n_benchmarks: int):
    import cvxpy as cp

    w = cp.Variable(n_sources, nonneg=True)
    worst = cp.Variable()
    utility = cp.Parameter((n_sources, n_benchmarks), name="utility")
    caps = cp.Parameter(n_sources, nonneg=True, name="weight_caps")
    risk_scale = cp.Parameter(n_sources, nonneg=True, name="risk_scale")  # sqrt(lam * Sigma_ii)
    risk = cp.sum_squares(cp.multiply(risk_scale, w))
    constraints = [utility.T @ w >= worst, cp.sum(w) == 1, w <= caps]
    problem = cp.Problem(cp.Maximize(worst - risk), constraints)
    return problem, w, utility, caps, risk_scale


def weakest_link_objective(weights: np.ndarray, utility: np.ndarray, risk_diag: np.ndarray,
                           lam: float) -> float:
    """The (maximised) weakest-link objective at ``weights``."""
    return float(np.min(utility.T @ weights)) - lam * float(np.sum(risk_diag * weights**2))


def weakest_link_weights(utility: np.ndarray, weight_caps: np.ndarray, risk_diag: np.ndarray,
                         lam: float, solver: str | None = None) -> ConvexResult:
    """Solve the weakest-link program for a normalised ``utility [k, m]``, ``weight_caps [k]``
    (inf = uncapped) and the diagonal of Sigma. The caller checks ``sum(weight_caps) >= 1``."""
    k, m = utility.shape
    with PROGRAM_LOCK:
        problem, w, u_param, caps_param, scale_param = _weakest_link_program(k, m)
        u_param.value = np.asarray(utility, dtype=float)
        caps_param.value = finite_caps(weight_caps)
        scale_param.value = np.sqrt(lam * np.asarray(risk_diag, dtype=float))
        return run_program(problem, w, weight_caps, solver, "weakest_link")
