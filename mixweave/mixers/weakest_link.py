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

Target skill composition (``target_skills``, Compute-Optimal Scaling of Skills, Roberts et al.
2025): the worst benchmark is taken within each skill and the skills are combined by their target
shares t_s (normalised to sum 1):

    maximise    sum_s t_s * min_{j in s} (U^T w)_j  -  lam * w^T Sigma w

(one epigraph variable per skill; still a concave objective, a QP). A skill counts by its target
share however many benchmarks it has; a skill outside the target is ignored. With one skill this
is the program above; unset, the program above is solved unchanged.
"""

from __future__ import annotations

import numpy as np

from mixweave.mixers.convex import ConvexResult, finite_caps, run_program


def _weakest_link_program(utility: np.ndarray, caps: np.ndarray, risk_scale: np.ndarray,
                          groups: list[tuple[np.ndarray, float]] | None = None):
    """The program with the data as constants (see mixweave.mixers.convex on why not DPP)."""
    import cvxpy as cp

    w = cp.Variable(utility.shape[0], nonneg=True)
    risk = cp.sum_squares(cp.multiply(risk_scale, w))  # risk_scale = sqrt(lam * Sigma_ii)
    if groups is None:
        worst = cp.Variable()
        constraints = [utility.T @ w >= worst, cp.sum(w) == 1, w <= caps]
        return cp.Problem(cp.Maximize(worst - risk), constraints), w
    worst = cp.Variable(len(groups))  # per target skill, its worst benchmark
    constraints = [utility[:, cols].T @ w >= worst[g] for g, (cols, _) in enumerate(groups)]
    shares = np.array([share for _, share in groups])
    problem = cp.Problem(cp.Maximize(shares @ worst - risk), constraints + [cp.sum(w) == 1, w <= caps])
    return problem, w


def weakest_link_objective(weights: np.ndarray, utility: np.ndarray, risk_diag: np.ndarray,
                           lam: float, groups: list[tuple[np.ndarray, float]] | None = None) -> float:
    """The (maximised) weakest-link objective at ``weights`` (``groups``: per target skill, its
    benchmark columns and share)."""
    scores = utility.T @ weights
    fit = float(np.min(scores)) if groups is None else float(sum(t * np.min(scores[c]) for c, t in groups))
    return fit - lam * float(np.sum(risk_diag * weights**2))


def weakest_link_weights(utility: np.ndarray, weight_caps: np.ndarray, risk_diag: np.ndarray,
                         lam: float, solver: str | None = None,
                         groups: list[tuple[np.ndarray, float]] | None = None) -> ConvexResult:
    """Solve the weakest-link program for a normalised ``utility [k, m]``, ``weight_caps [k]``
    (inf = uncapped) and the diagonal of Sigma; ``groups``: a target skill composition as (benchmark
    columns, share) per skill (:func:`mixweave.mixers.utility_math.skill_groups`), None = the
    plain worst benchmark. The caller checks ``sum(weight_caps) >= 1``."""
    problem, w = _weakest_link_program(np.asarray(utility, dtype=float), finite_caps(weight_caps),
                                       np.sqrt(lam * np.asarray(risk_diag, dtype=float)), groups)
    return run_program(problem, w, weight_caps, solver, "weakest_link")
