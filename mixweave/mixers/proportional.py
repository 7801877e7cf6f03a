"""Proportional mixing: every source in proportion to its size.

Algorithm: ``w_i = n_i / sum(n)``. Cost: O(k).
Trade-off: the natural token distribution; every source sees the same number of epochs (B / N),
so no source is over-repeated, but small sources are nearly absent. Near-proportional mixes do well
when data-constrained and poorly when compute-constrained (Held et al. 2025).
"""

from __future__ import annotations

import numpy as np


def proportional_weights(n_tokens: np.ndarray) -> np.ndarray:
    """Token shares ``n_i / sum(n)``."""
    n_tokens = np.asarray(n_tokens, dtype=float)
    return n_tokens / n_tokens.sum()
