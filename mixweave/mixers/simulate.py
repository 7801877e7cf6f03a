"""Simulated data constraints (as in Levanter's ``target_budget`` / ``experiment_budget``).

A small experiment with ``experiment_budget`` tokens trains on a nested subset of each source,
``ratio = experiment_budget / target_budget`` of it, so that with the full run's weights it repeats
every source exactly as often as the full run would. Subsets are nested: each is a prefix of one
fixed, seeded order of the source, so the subset for a smaller experiment is contained in the
subset for a larger one.

Token level (no document lengths): ``floor(ratio * n_tokens)`` tokens (and ``floor(ratio * n_docs)``
documents when n_docs is known). Document level (``doc_lengths`` given): documents are taken in the
order of a permutation seeded by ``(seed, crc32(source name))`` until the subset holds at least
``floor(ratio * total tokens)`` tokens. Cost: O(n_docs) per source. Trade-off: a whole-document
subset overshoots the token goal by less than one document.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixweave.errors import ConfigError, InfeasibleError, InputError
from mixweave.mixers.mixture import Mixture, check_budget, coerce_sources, fmt_tokens, name_list

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatedSubset:
    """One source's subset for the experiment.

    ``n_tokens``: tokens in the subset; ``fraction``: subset tokens / source tokens; ``n_docs``:
    documents in the subset when known; ``doc_indices``: the chosen documents (a prefix of the
    seeded permutation, in that order) when document lengths were given; ``epochs``: how often
    the experiment repeats the subset under ``mixture``'s weights (= the full run's epochs).
    """

    name: str
    n_tokens: int
    fraction: float
    n_docs: int | None = None
    doc_indices: np.ndarray | None = None
    epochs: float | None = None


def doc_permutation(n_docs: int, name: str, seed: int) -> np.ndarray:
    """The fixed order in which a source's documents enter simulated subsets."""
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])
    return rng.permutation(n_docs)


def _doc_level(name: str, lengths: Any, ratio: float, seed: int) -> tuple[int, int, np.ndarray, float]:
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.size == 0 or not np.issubdtype(lengths.dtype, np.number) \
            or not np.all(np.isfinite(lengths)) or np.any(lengths < 0):
        raise InputError(f"doc_lengths[{name!r}] must be a non-empty 1-D array of token counts >= 0")
    total = float(lengths.sum())
    order = doc_permutation(len(lengths), name, seed)
    cumulative = np.cumsum(lengths[order])
    goal = math.floor(ratio * total)
    count = 0 if goal <= 0 else int(np.searchsorted(cumulative, goal, side="left")) + 1
    subset_tokens = int(cumulative[count - 1]) if count else 0
    return subset_tokens, count, order[:count], total


def simulate_data_constraints(sources: Mapping[str, Any], target_budget: float,
                              experiment_budget: float, mixture: Mixture | None = None, *,
                              doc_lengths: Mapping[str, Any] | None = None,
                              seed: int = 0) -> dict[str, SimulatedSubset]:
    """Per-source nested subsets so a run of ``experiment_budget`` tokens sees the epochs of a run
    of ``target_budget`` tokens. ``mixture`` (solved at ``target_budget``) adds the epochs."""
    records = coerce_sources(sources)
    target = check_budget(target_budget)
    experiment = check_budget(experiment_budget)
    if experiment > target:
        raise ConfigError(f"experiment_budget ({fmt_tokens(experiment)}) exceeds target_budget "
                          f"({fmt_tokens(target)}); a simulation needs experiment_budget <= target_budget")
    if mixture is not None:
        if set(mixture.weights) != set(records):
            raise ConfigError("the mixture was solved for sources "
                              f"{name_list(list(mixture.weights))}, not {name_list(list(records))}")
        if not math.isclose(mixture.budget_tokens, target, rel_tol=1e-9):
            raise ConfigError(f"the mixture was solved for budget_tokens={fmt_tokens(mixture.budget_tokens)} "
                              f"but target_budget={fmt_tokens(target)}; solve it at the target budget")
    doc_lengths = doc_lengths or {}
    unknown = [n for n in doc_lengths if n not in records]
    if unknown:
        raise InputError(f"doc_lengths names unknown sources {name_list(unknown)}")
    ratio = experiment / target
    out: dict[str, SimulatedSubset] = {}
    empty: list[tuple[str, float]] = []
    for name, rec in records.items():
        if name in doc_lengths:
            tokens, n_docs, indices, total = _doc_level(name, doc_lengths[name], ratio, seed)
            if not math.isclose(total, rec.n_tokens, rel_tol=1e-6):
                logger.warning("simulate: doc_lengths of %s sum to %s tokens, stats say %s; "
                               "using the lengths", name, fmt_tokens(total), fmt_tokens(rec.n_tokens))
        else:
            total, indices = rec.n_tokens, None
            tokens = math.floor(ratio * total)
            n_docs = None if rec.n_docs is None else math.floor(ratio * rec.n_docs)
        weight = 1.0 if mixture is None else mixture.weights[name]
        if tokens == 0 and weight > 0:
            empty.append((name, total))
        epochs = None
        if mixture is not None and tokens > 0:
            epochs = weight * experiment / tokens
        out[name] = SimulatedSubset(name=name, n_tokens=int(tokens), fraction=tokens / total,
                                    n_docs=n_docs, doc_indices=indices, epochs=epochs)
    if empty:
        need = max(target / total for _, total in empty)
        raise InfeasibleError(f"sources {name_list([n for n, _ in empty])} get no data at "
                              f"experiment_budget={fmt_tokens(experiment)}; raise experiment_budget to "
                              f"at least {fmt_tokens(math.ceil(need))} or drop them from the mixture")
    return out
