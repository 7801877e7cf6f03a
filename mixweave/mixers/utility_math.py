"""Mixer math on a utility table: per-benchmark normalisation and the risk diagonal of UtiliMax.

The table itself (:class:`~mixweave.data.utility_table.UtilityTable`) and its reading and
validation live in :mod:`mixweave.data.utility_table`.
"""

from __future__ import annotations

import numpy as np

from mixweave.data.utility_table import UtilityTable
from mixweave.errors import ConfigError, InputError

NORMALIZATIONS = ("minmax", "max", "none")
RISKS = ("identity", "diagonal")


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


def risk_diagonal(table: UtilityTable, scale: np.ndarray, risk: str) -> np.ndarray:
    """Diagonal of Sigma: ones (``identity``) or the mean over benchmarks of the normalised
    variance ``(std_ij / scale_j) ** 2`` (``diagonal``)."""
    if risk == "identity":
        return np.ones(len(table.sources))
    if risk == "diagonal":
        if table.std is None:
            raise ConfigError("risk='diagonal' needs utility standard deviations: pass utility_std or a "
                              "long table with a 'std' column, or use risk='identity'")
        return np.mean((table.std / scale) ** 2, axis=1)
    raise ConfigError(f"risk must be one of {', '.join(RISKS)}, got {risk!r}")
