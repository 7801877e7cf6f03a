"""UtiliMax (Held et al. 2025): utility as close to 1 on every benchmark as the caps allow, plus risk.

Algorithm (a reconstruction; the paper's exact constants are unknown, see reference/mixtures.md §1):

    minimise    || U^T w - 1 ||_2  (or its square)  +  lam * w^T Sigma w
    subject to  sum(w) = 1,  w >= 0,  w_i * B <= E_i * n_i

U is the source x benchmark utility, normalised per benchmark; Sigma is I or diag(normalised
utility variance). Unsquared: an SOCP; squared: a QP (both CLARABEL). Cost: one interior-point
solve, roughly O(k^3) worst case, milliseconds for tens of sources; the program is cached per shape
and re-solved with new parameters (DPP). Trade-off: uses a utility signal that UniMax lacks; with
equal utilities and Sigma = I it reduces exactly to UniMax (water-filling), so the risk term is
what keeps it diverse. Only as good as its utility estimates.
"""

from __future__ import annotations

import functools

import numpy as np

from mixweave.mixers.convex import PROGRAM_LOCK, ConvexResult, finite_caps, run_program


@functools.lru_cache(maxsize=16)
def _utilimax_program(n_sources: int, n_benchmarks: int, squared: bool):
    import cvxpy as cp

    w = cp.Variable(n_sources, nonneg=True)
    utility = cp.Parameter((n_sources, n_benchmarks), name="utility")
    caps = cp.Parameter(n_sources, nonneg=True, name="weight_caps")
    risk_scale = cp.Parameter(n_sources, nonneg=True, name="risk_scale")  # sqrt(lam * Sigma_ii)
    gap = utility.T @ w - np.ones(n_benchmarks)
    fit = cp.sum_squares(gap) if squared else cp.norm(gap, 2)
    risk = cp.sum_squares(cp.multiply(risk_scale, w))
    problem = cp.Problem(cp.Minimize(fit + risk), [cp.sum(w) == 1, w <= caps])
    return problem, w, utility, caps, risk_scale


def utilimax_objective(weights: np.ndarray, utility: np.ndarray, risk_diag: np.ndarray,
                       lam: float, squared: bool) -> float:
    """The UtiliMax objective at ``weights`` (for reporting and brute-force checks)."""
    gap = utility.T @ weights - 1.0
    fit = float(gap @ gap) if squared else float(np.linalg.norm(gap))
    return fit + lam * float(np.sum(risk_diag * weights**2))


def utilimax_weights(utility: np.ndarray, weight_caps: np.ndarray, risk_diag: np.ndarray,
                     lam: float, squared: bool = False, solver: str | None = None) -> ConvexResult:
    """Solve UtiliMax for a normalised ``utility [k, m]``, ``weight_caps [k]`` (inf = uncapped)
    and the diagonal of Sigma. The caller checks ``sum(weight_caps) >= 1``."""
    k, m = utility.shape
    with PROGRAM_LOCK:
        problem, w, u_param, caps_param, scale_param = _utilimax_program(k, m, bool(squared))
        u_param.value = np.asarray(utility, dtype=float)
        caps_param.value = finite_caps(weight_caps)
        scale_param.value = np.sqrt(lam * np.asarray(risk_diag, dtype=float))
        return run_program(problem, w, weight_caps, solver, "utilimax")
