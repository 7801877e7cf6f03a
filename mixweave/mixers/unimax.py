"""UniMax (Chung et al., ICLR 2023): the most uniform mix that repeats no source more than N times.

Algorithm, as published: visit sources in ascending order of size; each gets
``min(remaining budget / sources left, N * n_i)`` tokens; the budget left over moves on to the
larger sources; weights are the budgets normalised. Cost: O(k log k) (one sort).
Trade-off: no utility signal at all, only sizes and the cap; strong when compute-constrained (close
to uniform), degrades gracefully to proportional-like as the budget approaches N * sum(n).
Pitfall: sorting *descending* (as rishabhranawat/DataMixer does) breaks the cap after normalising.
"""

from __future__ import annotations

import numpy as np


def unimax_token_budgets(n_tokens: np.ndarray, budget_tokens: float,
                         max_epochs: float | np.ndarray) -> np.ndarray:
    """Per-source token budgets of the published UniMax loop.

    ``max_epochs`` may be one N or one cap per source (inf = uncapped); sources are visited in
    ascending order of their capped size ``N_i * n_i`` (= ascending size when N is shared). When the
    budget exceeds ``sum(N_i * n_i)`` the budgets sum to less than ``budget_tokens``; normalising
    them would then break the cap, so callers must check feasibility first.
    """
    n_tokens = np.asarray(n_tokens, dtype=float)
    capped_sizes = np.broadcast_to(np.asarray(max_epochs, dtype=float), n_tokens.shape) * n_tokens
    order = np.argsort(capped_sizes, kind="stable")
    budgets = np.empty_like(n_tokens)
    remaining = float(budget_tokens)
    for position, idx in enumerate(order):
        share = remaining / (len(order) - position)
        budgets[idx] = min(share, capped_sizes[idx])
        remaining -= budgets[idx]
    return budgets


def unimax_weights(n_tokens: np.ndarray, budget_tokens: float,
                   max_epochs: float | np.ndarray) -> np.ndarray:
    """UniMax sampling weights: the per-source budgets divided by their sum."""
    budgets = unimax_token_budgets(n_tokens, budget_tokens, max_epochs)
    return budgets / budgets.sum()
