"""Shared pieces for epoch caps: feasibility checks, capped water-filling, capped-simplex projection.

A cap of E epochs on a source of n tokens under budget B is the weight cap ``w <= E * n / B``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixweave.errors import InfeasibleError
from mixweave.mixers.mixture import fmt_tokens, name_list


def weight_caps(n_tokens: np.ndarray, max_epochs: np.ndarray, budget_tokens: float) -> np.ndarray:
    """Per-source weight caps ``max_epochs * n_tokens / budget`` (inf where uncapped)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(max_epochs), np.inf, max_epochs * n_tokens / budget_tokens)


def largest_feasible_budget(n_tokens: np.ndarray, max_epochs: np.ndarray) -> float:
    """The largest budget any mixture can spend without breaking a cap: ``sum(E_i * n_i)``."""
    return float(np.sum(max_epochs * n_tokens))


def check_total_capacity(names: Sequence[str], n_tokens: np.ndarray, max_epochs: np.ndarray,
                         budget_tokens: float) -> None:
    """Raise InfeasibleError when the budget needs more tokens than all capped sources hold."""
    capacity = largest_feasible_budget(n_tokens, max_epochs)
    if budget_tokens <= capacity * (1 + 1e-12):
        return
    detail = ", ".join(f"{n} ({fmt_tokens(t)} tokens x {e:g})"
                       for n, t, e in list(zip(names, n_tokens, max_epochs))[:8])
    if len(names) > 8:
        detail += f" and {len(names) - 8} more"
    fix = f"lower budget_tokens to at most {fmt_tokens(capacity)}"
    if np.all(max_epochs == max_epochs[0]):
        needed = budget_tokens / float(np.sum(n_tokens))
        fix += f", raise max_epochs to at least {needed:.4g}"
    raise InfeasibleError(
        f"budget_tokens={fmt_tokens(budget_tokens)} needs more data than the epoch caps allow: "
        f"sources {detail} hold at most {fmt_tokens(capacity)} tokens; {fix}, or add data")


def check_fixed_weights_fit(names: Sequence[str], weights: np.ndarray, n_tokens: np.ndarray,
                            max_epochs: np.ndarray, budget_tokens: float, method: str,
                            hint: str) -> None:
    """For methods whose weights do not depend on the caps: raise InfeasibleError naming every
    source whose epochs exceed its cap, and the largest budget these weights allow."""
    epochs = weights * budget_tokens / n_tokens
    over = epochs > max_epochs * (1 + 1e-12)
    if not np.any(over):
        return
    positive = weights > 0
    with np.errstate(over="ignore"):  # a tiny weight allows an unbounded budget (inf), not a min
        largest = float(np.min(max_epochs[positive] * n_tokens[positive] / weights[positive]))
    offenders = [f"{n} ({e:.4g} > {c:g} epochs)" for n, e, c, o in zip(names, epochs, max_epochs, over) if o]
    raise InfeasibleError(
        f"{method} weights break the epoch cap for sources {name_list(offenders)} at "
        f"budget_tokens={fmt_tokens(budget_tokens)}; these weights allow at most "
        f"{fmt_tokens(largest)} tokens: lower budget_tokens to that, raise max_epochs, or {hint}")


def water_fill(preference: np.ndarray, caps: np.ndarray, total: float = 1.0) -> np.ndarray:
    """Weights ``w_i = min(caps_i, t * preference_i)`` with ``sum(w) = total``.

    Capped water-filling: sources whose cap is below their proportional share are pinned at the
    cap and the excess is redistributed over the rest in proportion to ``preference``. Exact, in
    O(k log k) (one sort by ``caps / preference``). Requires ``sum(caps) >= total`` and
    ``preference > 0``.
    """
    preference = np.asarray(preference, dtype=float)
    caps = np.asarray(caps, dtype=float)
    w = np.empty_like(preference)
    order = np.argsort(caps / preference, kind="stable")
    remaining, pref_left = float(total), float(preference.sum())
    i = 0
    for i, idx in enumerate(order):
        share = remaining * preference[idx] / pref_left
        if caps[idx] >= share:
            break
        w[idx] = caps[idx]
        remaining -= caps[idx]
        pref_left -= preference[idx]
    else:  # every source capped: only possible when sum(caps) == total
        return w
    rest = order[i:]
    w[rest] = remaining * preference[rest] / preference[rest].sum()
    return w


def project_onto_capped_simplex(v: np.ndarray, caps: np.ndarray, iters: int = 200) -> np.ndarray:
    """Euclidean projection of ``v`` onto ``{w : sum(w) = 1, 0 <= w <= caps}``.

    ``w = clip(v - mu, 0, caps)`` with the shift ``mu`` found by bisection (the sum is monotone in
    mu). Used to clean solver output: tiny negative weights and cap overshoots of ~1e-9 vanish
    while the weights move by no more than the solver's own error.
    """
    v = np.asarray(v, dtype=float)
    caps = np.asarray(caps, dtype=float)
    finite_caps = np.where(np.isinf(caps), 1.0 + np.abs(v).max() + 1.0, caps)
    lo, hi = float(v.min() - 1.0), float(v.max())  # sum >= 1 at lo (if feasible), 0 at hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if np.clip(v - mid, 0.0, finite_caps).sum() > 1.0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-16 * max(1.0, abs(mid)):
            break
    w = np.clip(v - 0.5 * (lo + hi), 0.0, finite_caps)
    free = (w > 0) & (w < finite_caps)
    if free.any():  # put the last rounding residue on the free coordinates
        w[free] += (1.0 - w.sum()) / free.sum()
        w = np.clip(w, 0.0, finite_caps)
    return w


def clean_solver_weights(v: np.ndarray, caps: np.ndarray, rtol: float = 1e-7,
                         zero: float = 1e-9) -> np.ndarray:
    """Feasible weights from an interior-point solution that is feasible only to ~1e-8.

    Entries within ``rtol`` of their cap are set to the cap, entries below ``zero`` to 0, and the
    residual ``1 - sum`` is spread over the other entries in proportion to their size, so that
    binding constraints hold exactly. Falls back to the Euclidean projection if that would leave
    the feasible set.
    """
    v = np.asarray(v, dtype=float)
    caps = np.asarray(caps, dtype=float)
    w = np.where(v >= caps * (1 - rtol), caps, np.where(v < zero, 0.0, v))
    free = (w > 0) & (w < caps)
    if free.any() and w[free].sum() > 0:
        w[free] += (1.0 - w.sum()) * w[free] / w[free].sum()
    if np.all(w >= 0) and np.all(w <= caps) and abs(w.sum() - 1.0) <= 1e-12:
        return w
    return project_onto_capped_simplex(v, caps)
