"""UtiliMax (Held et al. 2025): utility as close to 1 on every benchmark as the caps allow, plus risk.

Algorithm (a reconstruction from the paper; its exact constants are unknown, so the defaults here are ours):

    minimise    || U^T w - 1 ||_2  (or its square)  +  lam * w^T Sigma w
    subject to  sum(w) = 1,  w >= 0,  w_i * B <= E_i * n_i

U is the source x benchmark utility, normalised per benchmark; Sigma is diagonal: by default the
mean over benchmarks of each source's squared standard error of its utility mean, in the same
normalised units (``risk: se``; then w^T Sigma w is the variance of the estimated mixture utility,
so lam trades fit against trusting uncertain estimates), or the per-document variance
(``diagonal``), or I (``identity``). Unsquared: an SOCP; squared: a QP (both CLARABEL). Cost: one interior-point
solve, roughly O(k^3) worst case; ~0.1 s for 1,000 sources x 50 benchmarks on one core (see
bench/mixers.py). Trade-off: uses a utility signal that UniMax lacks; with equal utilities and
Sigma = I it reduces exactly to UniMax (water-filling), so the risk term is what keeps it diverse.
Only as good as its utility estimates.

Target skill composition (``target_skills``, Compute-Optimal Scaling of Skills, Roberts et al.
2025): each benchmark column j is weighted by ``a_j = m * t_s / n_s`` (m benchmarks, s = j's
skill, n_s benchmarks of skill s, t_s its target share), i.e. the fit term becomes

    || diag(sqrt(a)) (U^T w - 1) ||_2   (or its square)  =  sqrt(m * sum_s t_s * mean_{j in s} gap_j^2)

so each skill counts by its target share instead of by how many benchmarks it has
(:func:`mixweave.mixers.utility_math.skill_column_weights`); a skill outside the target weighs 0.
Unset, the program above is solved unchanged.
"""

from __future__ import annotations

import numpy as np

from mixweave.mixers.convex import ConvexResult, finite_caps, run_program


def _utilimax_program(utility: np.ndarray, caps: np.ndarray, risk_scale: np.ndarray,
                      squared: bool, column_weights: np.ndarray | None = None):
    """The program with the data as constants (see mixweave.mixers.convex on why not DPP)."""
    import cvxpy as cp

    n_sources, n_benchmarks = utility.shape
    w = cp.Variable(n_sources, nonneg=True)
    gap = utility.T @ w - np.ones(n_benchmarks)
    if column_weights is not None:  # target skill composition: sqrt(a_j) per benchmark
        gap = cp.multiply(np.sqrt(column_weights), gap)
    fit = cp.sum_squares(gap) if squared else cp.norm(gap, 2)
    risk = cp.sum_squares(cp.multiply(risk_scale, w))  # risk_scale = sqrt(lam * Sigma_ii)
    problem = cp.Problem(cp.Minimize(fit + risk), [cp.sum(w) == 1, w <= caps])
    return problem, w


def utilimax_objective(weights: np.ndarray, utility: np.ndarray, risk_diag: np.ndarray,
                       lam: float, squared: bool, column_weights: np.ndarray | None = None) -> float:
    """The UtiliMax objective at ``weights`` (for reporting and brute-force checks)."""
    gap = utility.T @ weights - 1.0
    if column_weights is not None:
        gap = np.sqrt(column_weights) * gap
    fit = float(gap @ gap) if squared else float(np.linalg.norm(gap))
    return fit + lam * float(np.sum(risk_diag * weights**2))


def utilimax_weights(utility: np.ndarray, weight_caps: np.ndarray, risk_diag: np.ndarray,
                     lam: float, squared: bool = False, solver: str | None = None,
                     column_weights: np.ndarray | None = None) -> ConvexResult:
    """Solve UtiliMax for a normalised ``utility [k, m]``, ``weight_caps [k]`` (inf = uncapped)
    and the diagonal of Sigma; ``column_weights [m]``: a target skill composition's a_j (None =
    every benchmark counts once). The caller checks ``sum(weight_caps) >= 1``."""
    problem, w = _utilimax_program(np.asarray(utility, dtype=float), finite_caps(weight_caps),
                                   np.sqrt(lam * np.asarray(risk_diag, dtype=float)), bool(squared),
                                   None if column_weights is None else np.asarray(column_weights, dtype=float))
    return run_program(problem, w, weight_caps, solver, "utilimax")
