"""Weakest-link mixing: maximise the worst benchmark's utility, minus a diversity/risk penalty.

Algorithm:

    maximise    min_j (U^T w)_j  -  lam * w^T Sigma w
    subject to  sum(w) = 1,  w >= 0,  w_i * B <= E_i * n_i

Sigma as in UtiliMax (default: diag of the normalised squared standard errors of the utility
means, :func:`mixweave.mixers.utility_math.risk_diagonal`),
written with an epigraph variable t (maximise t - risk subject to U^T w >= t): a convex QP
(CLARABEL). Cost: one interior-point solve, as UtiliMax (~0.1 s for 1,000 x 50 on one core).
Trade-off: protects the benchmark the mixture serves worst (max-min fairness) where UtiliMax
minimises the overall distance to the ideal; it ignores how much better than the worst the other
benchmarks are. With equal utilities and Sigma = I it reduces to UniMax.
"""

from __future__ import annotations

import numpy as np

from mixweave.mixers.convex import ConvexResult, finite_caps, run_program


def _weakest_link_program(utility: np.ndarray, caps: np.ndarray, risk_scale: np.ndarray):
    """The program with the data as constants (see mixweave.mixers.convex on why not DPP)."""
    import cvxpy as cp

    w = cp.Variable(utility.shape[0], nonneg=True)
    worst = cp.Variable()
    risk = cp.sum_squares(cp.multiply(risk_scale, w))  # risk_scale = sqrt(lam * Sigma_ii)
    constraints = [utility.T @ w >= worst, cp.sum(w) == 1, w <= caps]
    problem = cp.Problem(cp.Maximize(worst - risk), constraints)
    return problem, w


def weakest_link_objective(weights: np.ndarray, utility: np.ndarray, risk_diag: np.ndarray,
                           lam: float) -> float:
    """The (maximised) weakest-link objective at ``weights``."""
    return float(np.min(utility.T @ weights)) - lam * float(np.sum(risk_diag * weights**2))


def weakest_link_weights(utility: np.ndarray, weight_caps: np.ndarray, risk_diag: np.ndarray,
                         lam: float, solver: str | None = None) -> ConvexResult:
    """Solve the weakest-link program for a normalised ``utility [k, m]``, ``weight_caps [k]``
    (inf = uncapped) and the diagonal of Sigma. The caller checks ``sum(weight_caps) >= 1``."""
    problem, w = _weakest_link_program(np.asarray(utility, dtype=float), finite_caps(weight_caps),
                                       np.sqrt(lam * np.asarray(risk_diag, dtype=float)))
    return run_program(problem, w, weight_caps, solver, "weakest_link")
