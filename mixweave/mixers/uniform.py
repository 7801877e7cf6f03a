"""Uniform mixing: every source gets the same share.

Algorithm: ``w_i = 1 / k``. Cost: O(k).
Trade-off: maximal diversity, blind to size: small sources are repeated B / (k * n_i) times, so the
epoch cap fails first on the smallest source (UniMax is the capped version of this).
"""

from __future__ import annotations

import numpy as np


def uniform_weights(n_sources: int) -> np.ndarray:
    """``1 / k`` for each of ``k`` sources."""
    return np.full(n_sources, 1.0 / n_sources)
