"""The study's statistics on synthetic numbers: t quantiles, the paired bootstrap against brute-force
enumeration, the exact sign test against hand values, and the verdict rule."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mixweave.pipeline.study_stats import (bootstrap_means, mean_interval, paired_bootstrap, sign_test, t_cdf,
                                           t_quantile, verdict)


@pytest.mark.parametrize("df,q", [(1, 12.706204736), (2, 4.302652730), (3, 3.182446305), (4, 2.776445105),
                                  (9, 2.262157163), (30, 2.042272456)])
def test_t_quantile_matches_tables(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)
    assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-9)
    assert t_cdf(-q, df) == pytest.approx(0.025, abs=1e-9)
    assert t_cdf(0.0, df) == pytest.approx(0.5)


def test_mean_interval_by_hand():
    r = mean_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, half = t_{.975,2} * 1 / sqrt(3)
    assert r["mean"] == 2.0 and r["sd"] == pytest.approx(1.0)
    assert r["half"] == pytest.approx(4.302652730 / math.sqrt(3), abs=1e-6)
    assert math.isnan(mean_interval([1.0])["half"])


def test_paired_bootstrap_is_the_enumerated_distribution():
    x = np.array([3.10, 3.05, 3.20])
    base = np.array([3.30, 3.12, 3.25])
    d = x - base
    brute = sorted(float(np.mean([d[i] for i in idx])) for idx in itertools.product(range(3), repeat=3))
    r = paired_bootstrap(x, base, alpha=0.05, n_boot=2000)
    assert r["exact_bootstrap"] and r["n_boot"] == 27
    assert r["diff"] == pytest.approx(d.mean())
    assert r["lo"] == pytest.approx(np.quantile(brute, 0.025))
    assert r["hi"] == pytest.approx(np.quantile(brute, 0.975))
    assert r["hi"] < 0  # every seed improved: the interval excludes zero below
    assert verdict(r["lo"], r["hi"], higher_is_better=False) == "better"
    assert verdict(r["lo"], r["hi"], higher_is_better=True) == "worse"
    # one seed of three against: the interval straddles zero
    r2 = paired_bootstrap([3.10, 3.05, 3.40], base)
    assert r2["lo"] < 0 < r2["hi"] and verdict(r2["lo"], r2["hi"], False) == "not significant"


def test_paired_bootstrap_sampled_when_many_seeds():
    rng = np.random.default_rng(1)
    base = rng.normal(size=8)
    x = base + 0.5 + 0.1 * rng.normal(size=8)
    means, exact = bootstrap_means(x - base, n_boot=4000, seed=3)
    assert not exact and means.size == 4000
    r = paired_bootstrap(x, base, n_boot=4000, seed=3)
    assert r["lo"] > 0.3 and r["hi"] < 0.7 and r["t_lo"] < r["diff"] < r["t_hi"]
    assert r == paired_bootstrap(x, base, n_boot=4000, seed=3)  # seeded: the same interval again


def test_sign_test_hand_values():
    assert sign_test([1, 2, 3])["p"] == pytest.approx(0.25)  # 2 * (1/2)^3: never below 5 % with 3 seeds
    assert sign_test([1, -2, 3])["p"] == pytest.approx(1.0)  # 2 * (1 + 3) / 8 -> capped at 1
    r = sign_test([1, 2, 3, 4, 5, 6, 7, -1, 0])  # n = 8 non-zero, k = 1: 2 * (1 + 8) / 256
    assert (r["n_pos"], r["n_neg"], r["n_zero"]) == (7, 1, 1)
    assert r["p"] == pytest.approx(2 * 9 / 256)
    assert sign_test([0, 0])["p"] == 1.0


def test_verdict_needs_finite_interval():
    assert verdict(float("nan"), 1.0, True) == "not significant"
    assert verdict(0.1, 0.2, True) == "better" and verdict(-0.2, -0.1, True) == "worse"
    assert verdict(-0.1, 0.2, False) == "not significant"
