"""Typed parameters of each mixing method, so a run config is validated whole at load time.

``mix.params`` in a run config is checked against the dataclass of its ``mix.method``: an unknown
key (``{tua: 0.7}``) or a value of the wrong type fails before any stage runs, with the dotted key
and the accepted keys. The solvers in :mod:`mixweave.mixers.api` still receive plain mappings (the
CLI's ``--param`` and the library API pass the same keys), and they keep their own range checks.
The utility table itself is not a parameter here: a run config names it with ``mix.utility`` or
gets it from the utility stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class NoParams:
    """proportional, uniform, unimax: nothing to set (the budget and epoch caps are mix keys)."""


@dataclass(frozen=True, kw_only=True)
class TemperatureParams:
    tau: float
    """Temperature: 1 = proportional, larger = flatter (mT5 used 3.33)."""


@dataclass(frozen=True, kw_only=True)
class ManualParams:
    weights: dict[str, float]
    """{source: weight}; normalised to sum 1."""


@dataclass(frozen=True, kw_only=True)
class UtilityParams:
    """Shared by UtiliMax and weakest-link; unset values are chosen and logged by the solver."""

    lam: float | Literal["n"] | None = None
    """Risk weight (>= 0), or 'n' for the number of sources."""
    risk: Literal["identity", "diagonal"] | None = None
    normalize: Literal["minmax", "max", "none"] | None = None
    solver: str | None = None
    """A cvxpy solver name (default CLARABEL when installed)."""


@dataclass(frozen=True, kw_only=True)
class UtiliMaxParams(UtilityParams):
    squared: bool | None = None
    """Squared L2 gap (a QP) instead of the unsquared one (an SOCP)."""


METHOD_PARAMS: dict[str, type] = {
    "proportional": NoParams,
    "temperature": TemperatureParams,
    "uniform": NoParams,
    "manual": ManualParams,
    "unimax": NoParams,
    "utilimax": UtiliMaxParams,
    "weakest_link": UtilityParams,
}


def method_key(method: str) -> str:
    """Canonical method name: case-insensitive, '-' and '_' the same."""
    return str(method).strip().lower().replace("-", "_")
