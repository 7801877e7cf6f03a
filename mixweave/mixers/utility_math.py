"""Mixer math on a utility table: per-benchmark normalisation and the risk diagonal of UtiliMax.

Every uncertainty the mixers use is expressed in the normalised units of the value they optimise:
``std``, ``se`` and the interval of a cell are divided by (interval: mapped with) the same
per-benchmark scale as its score, so ``se / scale`` is the standard error of the normalised utility.

The table itself (:class:`~mixweave.data.utility_table.UtilityTable`) and its reading and
validation live in :mod:`mixweave.data.utility_table`.
"""

from __future__ import annotations

import numpy as np

from dataclasses import replace

from mixweave.data.utility_table import UtilityTable
from mixweave.errors import ConfigError, InputError

NORMALIZATIONS = ("minmax", "max", "none")
RISKS = ("identity", "diagonal", "se")


def normalize_utility(scores: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-benchmark normalisation; returns ``(normalised, scale)`` with ``scale`` per benchmark.

    ``minmax``: ``(u - min) / (max - min)``, so the best source scores 1 and the worst 0 on every
    benchmark (a benchmark on which all sources tie scores 1 everywhere). ``max``: ``u / max``
    (needs positive scores). ``none``: unchanged.
    """
    if how == "none":
        return scores.copy(), np.ones(scores.shape[1])
    if how == "minmax":
        lo, hi = scores.min(axis=0), scores.max(axis=0)
        scale = np.where(hi > lo, hi - lo, 1.0)
        return np.where(hi > lo, (scores - lo) / scale, 1.0), scale
    if how == "max":
        hi = scores.max(axis=0)
        if np.any(scores < 0) or np.any(hi <= 0):
            raise InputError("normalize='max' needs non-negative scores with a positive best score per "
                             "benchmark; use normalize='minmax'")
        return scores / hi, hi
    raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {how!r}")


def normalize_table_units(table: UtilityTable, how: str) -> tuple[UtilityTable, np.ndarray]:
    """``table`` in the units the mixer optimises: scores as :func:`normalize_utility`, ``std`` and
    ``se`` divided by the benchmark's scale, ``ci_low``/``ci_high`` mapped like the scores (``n``
    unchanged); returns ``(table, scale)``. Cost O(k m)."""
    normed, scale = normalize_utility(table.scores, how)
    offset = np.zeros_like(scale)  # normalised = (raw - offset) / scale
    if how == "minmax":
        lo, hi = table.scores.min(axis=0), table.scores.max(axis=0)
        offset = np.where(hi > lo, lo, lo - 1.0)  # all tied: every source scores 1

    def spread(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a / scale

    def value(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else (a - offset) / scale

    return replace(table, scores=normed, std=spread(table.std), se=spread(table.se),
                   ci_low=value(table.ci_low), ci_high=value(table.ci_high)), scale


def risk_diagonal(table: UtilityTable, scale: np.ndarray, risk: str) -> np.ndarray:
    """Diagonal of Sigma, per source: ones (``identity``), the mean over benchmarks of the
    normalised per-document variance ``(std_ij / scale_j) ** 2`` (``diagonal``), or of the
    normalised squared standard error ``(se_ij / scale_j) ** 2`` (``se``, the default when the
    table has standard errors).

    With ``se``, ``w^T Sigma w`` is the mean over benchmarks of the variance of the estimated
    mixture utility ``(U^T w)_j`` (independent errors): the risk term penalises leaning on
    estimates that are uncertain, not on sources whose documents merely vary. Cost O(k m)."""
    if risk == "identity":
        return np.ones(len(table.sources))
    if risk == "diagonal":
        if table.std is None:
            raise ConfigError("risk='diagonal' needs utility standard deviations: pass utility_std or a "
                              "long table with a 'std' column, or use risk='identity'")
        return np.mean((table.std / scale) ** 2, axis=1)
    if risk == "se":
        if table.se is None:
            raise ConfigError("risk='se' needs the standard error of each utility mean: a long table with an "
                              "'se' column (or 'std' and 'n'), as the utility stage writes; or use "
                              "risk='diagonal' (per-document std) or 'identity'")
        return np.mean((table.se / scale) ** 2, axis=1)
    raise ConfigError(f"risk must be one of {', '.join(RISKS)}, got {risk!r}")
