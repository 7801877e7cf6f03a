"""UniMax (Chung et al., ICLR 2023): the most uniform mix that repeats no source more than N times.

Algorithm, as published: visit sources in ascending order of size; each gets
``min(remaining budget / sources left, N * n_i)`` tokens; the budget left over moves on to the
larger sources; weights are the budgets normalised. Cost: O(k log k): one sort and one cumulative
sum, vectorised (no Python loop per source; see unimax_token_budgets).
Trade-off: no utility signal at all, only sizes and the cap; strong when compute-constrained (close
to uniform), degrades gracefully to proportional-like as the budget approaches N * sum(n).
Pitfall: sorting *descending* (as rishabhranawat/DataMixer does) breaks the cap after normalising.
"""

from __future__ import annotations

import numpy as np


def unimax_token_budgets(n_tokens: np.ndarray, budget_tokens: float,
                         max_epochs: float | np.ndarray) -> np.ndarray:
    """Per-source token budgets of the published UniMax loop, computed without a Python loop.

    ``max_epochs`` may be one N or one cap per source (inf = uncapped); sources are visited in
    ascending order of their capped size ``c_i = N_i * n_i`` (= ascending size when N is shared).

    Closed form of the loop: once a source receives the equal share ``remaining / sources left``
    (because its capped size is at least that share), the share stays the same for every later
    source, and later sources are no smaller, so they all receive it too. With ``c`` sorted
    ascending and ``C_i = c_0 + ... + c_{i-1}``, source ``i`` is still capped iff
    ``C_i + (L - i) * c_i < B``; the left side is non-decreasing in ``i``, so the first source that
    takes the share is found with one ``searchsorted``. Cost: one sort and one cumulative sum.

    When the budget exceeds ``sum(c)`` every source is capped and the budgets sum to less than
    ``budget_tokens``; normalising them would then break the cap, so callers must check
    feasibility first.
    """
    n_tokens = np.asarray(n_tokens, dtype=float)
    capped_sizes = np.broadcast_to(np.asarray(max_epochs, dtype=float), n_tokens.shape) * n_tokens
    order = np.argsort(capped_sizes)  # ties get equal budgets, so a stable sort is not needed
    c = capped_sizes[order]
    count = len(c)
    before = np.concatenate(([0.0], np.cumsum(c[:-1])))  # C_i (inf after an uncapped source)
    level = before + (count - np.arange(count)) * c  # the budget at which source i takes the share
    first_share = int(np.searchsorted(level, float(budget_tokens), side="left"))
    sorted_budgets = c.copy()
    if first_share < count:
        sorted_budgets[first_share:] = (budget_tokens - before[first_share]) / (count - first_share)
    budgets = np.empty_like(n_tokens)
    budgets[order] = sorted_budgets
    return budgets


def unimax_weights(n_tokens: np.ndarray, budget_tokens: float,
                   max_epochs: float | np.ndarray) -> np.ndarray:
    """UniMax sampling weights: the per-source budgets divided by their sum."""
    budgets = unimax_token_budgets(n_tokens, budget_tokens, max_epochs)
    return budgets / budgets.sum()
