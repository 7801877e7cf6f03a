"""Multi-phase mixtures: a sequence of (budget, weights-or-method) phases under one epoch cap.

Algorithm: solve the phases in order; each phase sees, per source, the epochs the earlier phases
left (``max_epochs - epochs used so far``), so the cap holds for the whole run, not per phase.
The combined mixture is the token-weighted sum of the phases. Cost: one solve per phase.
Trade-off: greedy in phase order (an early phase can use up a small source that a later phase
wanted); put the phase whose mix matters most first, or give explicit weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mixweave.errors import ConfigError, InfeasibleError
from mixweave.mixers.api import DEFAULT_MAX_EPOCHS, method_spec, solve_with_caps
from mixweave.mixers.mixture import (Mixture, binding_labels, caps_as_dict, coerce_sources,
                                     resolve_max_epochs)

logger = logging.getLogger(__name__)

PhaseItem = tuple[float, Mapping[str, float] | str | tuple[str, Mapping[str, Any]]]


def _parse_phase(index: int, item: Any) -> tuple[float, str, dict[str, Any]]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ConfigError(f"phase {index}: expected (budget_tokens, weights | method | "
                          f"(method, params)), got {item!r}")
    budget, what = item
    if isinstance(what, Mapping):
        return budget, "manual", {"weights": dict(what)}
    if isinstance(what, str):
        return budget, what, {}
    if isinstance(what, (tuple, list)) and len(what) == 2 and isinstance(what[1], Mapping):
        return budget, what[0], dict(what[1])
    raise ConfigError(f"phase {index}: the second item must be a weights mapping, a method name or "
                      f"(method, params), got {what!r}")


def solve_phases(sources: Mapping[str, Any], phases: Sequence[PhaseItem], *,
                 max_epochs: float | Mapping[str, float] | None = None,
                 **params: Any) -> tuple[Mixture, list[Mixture]]:
    """Solve each phase under the epochs the earlier phases left; return (combined, per phase).

    ``params`` are shared settings handed to every phase whose method accepts them (e.g. a utility
    table); a phase's own ``(method, params)`` override them. ``max_epochs`` caps the whole run.
    """
    if not phases:
        raise ConfigError("no phases given; pass a list of (budget_tokens, weights-or-method) items")
    records = coerce_sources(sources)
    names = tuple(records)
    parsed = [_parse_phase(i, item) for i, item in enumerate(phases)]
    specs = [method_spec(method) for _, method, _ in parsed]
    if max_epochs is None and any(spec.capped_by_definition for spec in specs):
        max_epochs = DEFAULT_MAX_EPOCHS
        logger.info("phases: max_epochs not set, using %g for the whole run", max_epochs)
    caps = resolve_max_epochs(max_epochs, names)
    used = np.zeros(len(names))
    solved: list[Mixture] = []
    for index, ((budget, _, own), spec) in enumerate(zip(parsed, specs)):
        shared = {k: v for k, v in params.items() if k in spec.params}
        remaining = np.maximum(caps - used, 0.0)
        try:
            phase = solve_with_caps(records, budget, spec.name, remaining, {**shared, **own})
        except InfeasibleError as exc:
            if index == 0:
                raise
            raise InfeasibleError(f"phase {index}: {exc} (its caps are the epochs that phases "
                                  f"0..{index - 1} left; give earlier phases less of those sources)") from exc
        used += np.array([phase.epochs[n] for n in names])
        solved.append(phase)
    return combine_phases(solved, caps_as_dict(names, caps)), solved


def combine_phases(phases: Sequence[Mixture], max_epochs: Mapping[str, float | None]) -> Mixture:
    """The whole run as one Mixture: budgets and target tokens add up, weights = target / budget."""
    names = phases[0].sources
    budget = float(sum(p.budget_tokens for p in phases))
    target = np.array([sum(p.target_tokens[n] for p in phases) for n in names])
    n_tokens = np.array([phases[0].n_tokens[n] for n in names])
    weights = target / budget
    caps = np.array([np.inf if max_epochs[n] is None else max_epochs[n] for n in names])
    binding = binding_labels(weights, caps * n_tokens / budget)
    statuses = {p.status for p in phases}
    return Mixture(
        method="phased",
        params={"phases": [{"method": p.method, "budget_tokens": p.budget_tokens} for p in phases]},
        budget_tokens=budget,
        n_tokens=dict(phases[0].n_tokens),
        weights=dict(zip(names, map(float, weights))),
        target_tokens=dict(zip(names, map(float, target))),
        epochs=dict(zip(names, map(float, target / n_tokens))),
        max_epochs=dict(max_epochs),
        binding=dict(zip(names, binding)),
        solver="+".join(dict.fromkeys(p.solver for p in phases)),
        status="optimal" if statuses == {"optimal"} else "optimal_inaccurate",
        objective=None,
        n_docs=dict(phases[0].n_docs),
        paths=dict(phases[0].paths),
        utility=next((dict(p.utility) for p in phases if p.utility), {}),
    )
