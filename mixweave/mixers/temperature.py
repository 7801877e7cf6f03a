"""Temperature sampling (mT5 / XLM-R): flatten the size distribution with an exponent 1/tau.

Algorithm: ``p_i ∝ (n_i / N) ** (1 / tau)`` (tau = 1: proportional; tau -> inf: uniform; mT5 used
1/tau = 0.3). With an epoch cap, sources whose share would exceed ``E * n_i / B`` are pinned at the
cap and the excess is water-filled over the others in proportion to p. Cost: O(k log k).
Trade-off: one knob between proportional and uniform; as published it has no epoch cap, so small
sources can be repeated without bound unless a cap is given.
"""

from __future__ import annotations

import numpy as np

from mixweave.mixers.capping import water_fill


def temperature_weights(n_tokens: np.ndarray, tau: float,
                        weight_caps: np.ndarray | None = None) -> np.ndarray:
    """Temperature-scaled token shares, water-filled under ``weight_caps`` when given.

    Computed in log space so that huge counts and large tau neither overflow nor underflow.
    ``weight_caps`` must sum to at least 1 (the caller checks feasibility).
    """
    log_p = np.log(np.asarray(n_tokens, dtype=float)) / tau
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    if weight_caps is None or np.all(np.isinf(weight_caps)):
        return p
    return water_fill(p, np.asarray(weight_caps, dtype=float))
