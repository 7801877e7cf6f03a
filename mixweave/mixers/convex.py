"""Shared cvxpy plumbing for the utility-based mixers (UtiliMax, weakest-link).

Each solve builds its program with the data as constants. An earlier version cached one DPP program
per shape with ``cp.Parameter`` s for U, the caps and the risk scale, but a parameter matrix times
the weight variable makes cvxpy's first canonicalisation expensive: at 1,000 sources x 50
benchmarks the first solve took 0.6-4 s (one core) against ~0.08 s for the constant program, and a
warm DPP re-solve saved only ~0.03 s over it. Constants also mean no shared mutable state, so
concurrent solves need no lock. cvxpy is imported lazily so that ``import mixweave.mixers`` stays
cheap.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixweave.errors import ConfigError, InfeasibleError
from mixweave.mixers.capping import clean_solver_weights

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ConvexResult:
    """Weights after cleaning (exactly feasible, see clean_solver_weights), and how they were found."""

    weights: np.ndarray
    solver: str
    status: str


@functools.cache
def installed_solvers() -> tuple[str, ...]:
    """cvxpy's installed solvers, asked once a process: ``cp.installed_solvers()`` probes every solver
    it knows on each call (~2 ms), and a mix asked it up to three times a solve."""
    import cvxpy as cp

    return tuple(cp.installed_solvers())


def default_solver() -> str | None:
    """CLARABEL when installed (SOCP and QP, interior point), else cvxpy's own choice."""
    return "CLARABEL" if "CLARABEL" in installed_solvers() else None


def finite_caps(weight_caps: np.ndarray) -> np.ndarray:
    """Weight caps usable as a cvxpy parameter: an uncapped source is capped at 1 (its whole budget)."""
    return np.minimum(np.where(np.isinf(weight_caps), 1.0, weight_caps), 1.0)


def run_program(problem: Any, weights_var: Any, weight_caps: np.ndarray, solver: str | None,
                method: str) -> ConvexResult:
    """Solve a program, check its status, and clean the weights onto the feasible set."""
    import cvxpy as cp

    if solver is not None and solver not in installed_solvers():
        raise ConfigError(f"{method}: solver {solver!r} is not installed; use one of "
                          f"{', '.join(installed_solvers())} or leave solver unset")
    try:
        problem.solve(solver=solver)
    except cp.error.SolverError as exc:
        raise ConfigError(f"{method}: solver {solver or 'default'} failed ({exc}); "
                          "set solver='SCS' (or another installed solver) and retry") from exc
    status = problem.status
    used = problem.solver_stats.solver_name if problem.solver_stats else str(solver)
    if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        raise InfeasibleError(f"{method}: the solver ({used}) reports the caps infeasible; lower "
                              "budget_tokens or raise max_epochs")
    if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or weights_var.value is None:
        raise ConfigError(f"{method}: the solver ({used}) stopped with status {status!r}; "
                          "set solver='SCS' (or another installed solver) and retry")
    if status == cp.OPTIMAL_INACCURATE:
        logger.warning("%s: solver %s returned an inaccurate optimum; check the weights", method, used)
    weights = clean_solver_weights(np.asarray(weights_var.value, dtype=float), weight_caps)
    return ConvexResult(weights=weights, solver=used, status=status)
