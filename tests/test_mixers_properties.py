"""Property-style checks over random instances: caps are never violated, the arithmetic holds."""

from __future__ import annotations

import numpy as np
import pytest

from mixweave.errors import InfeasibleError
from mixweave.mixers import solve
from mixweave.mixers.mixture import ZERO_WEIGHT

CAPPED_METHODS = [("unimax", {}), ("temperature", {"tau": 3.33}), ("utilimax", {}),
                  ("utilimax", {"squared": True, "lam": 0.1}), ("weakest_link", {"lam": 0.3})]


def random_problem(seed: int):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 25))
    names = [f"s{i}" for i in range(k)]
    sizes = dict(zip(names, map(float, np.round(10 ** rng.uniform(2, 10, size=k)))))
    cap = float(rng.choice([1.0, 2.0, 4.0, 8.0]))
    # from deeply compute-constrained to exactly data-constrained (the whole capacity)
    fraction = float(rng.choice([1e-4, 0.01, 0.3, 0.9, 1.0]))
    budget = fraction * cap * sum(sizes.values())
    utility = {n: {f"b{j}": float(rng.uniform(0, 1)) for j in range(3)} for n in names}
    return sizes, cap, budget, utility


def check_mixture(mix, sizes, cap, budget):
    w = np.array(list(mix.weights.values()))
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(w >= 0)
    for name, n in sizes.items():
        assert mix.target_tokens[name] == pytest.approx(mix.weights[name] * budget, rel=1e-12)
        assert mix.epochs[name] == pytest.approx(mix.target_tokens[name] / n, rel=1e-12)
        assert mix.epochs[name] <= cap * (1 + 1e-9), (name, mix.epochs[name])
        if mix.binding[name] == "epoch_cap":
            assert mix.epochs[name] == pytest.approx(cap, rel=1e-6)
        if mix.binding[name] == "nonneg":
            assert mix.weights[name] < ZERO_WEIGHT


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("method, extra", CAPPED_METHODS)
def test_caps_never_violated(seed, method, extra):
    sizes, cap, budget, utility = random_problem(seed)
    if method in ("utilimax", "weakest_link"):
        extra = {**extra, "utility": utility}
    mix = solve(sizes, budget, method, max_epochs=cap, **extra)
    check_mixture(mix, sizes, cap, budget)


@pytest.mark.parametrize("seed", range(15))
@pytest.mark.parametrize("method", ["unimax", "temperature", "utilimax", "weakest_link"])
def test_over_capacity_always_raises_with_the_capacity(seed, method):
    sizes, cap, _, utility = random_problem(1000 + seed)
    capacity = cap * sum(sizes.values())
    extra = {"tau": 2.0} if method == "temperature" else {}
    if method in ("utilimax", "weakest_link"):
        extra["utility"] = utility
    with pytest.raises(InfeasibleError, match=f"at most {int(round(capacity)):,}"):
        solve(sizes, capacity * 1.001, method, max_epochs=cap, **extra)


@pytest.mark.parametrize("seed", range(20))
def test_unimax_is_the_most_uniform_capped_mix(seed):
    """UniMax maximises the smallest weight among capped-feasible mixes: any uncapped source has
    a weight at least as large as every other source's weight."""
    sizes, cap, budget, _ = random_problem(2000 + seed)
    mix = solve(sizes, budget, "unimax", max_epochs=cap)
    free = [mix.weights[n] for n in sizes if mix.binding[n] == "budget_share"]
    if free:
        assert min(free) >= max(mix.weights.values()) * (1 - 1e-12)
        assert max(free) - min(free) <= 1e-12
