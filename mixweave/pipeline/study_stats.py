"""Statistics of a study: intervals over seeds and paired comparisons against a baseline (pure numpy).

A study trains one proxy per candidate x order x seed; seed ``s`` fixes the model initialisation
and the data order for every candidate, so candidate and baseline runs of one seed are a *pair*.

* :func:`mean_interval` -- mean over seeds +- the Student-t half-interval ``t_{1-a/2, n-1} sd / sqrt(n)``
  (the t quantile from the closed-form CDF for integer degrees of freedom, inverted by bisection).
  With 3 seeds t is 4.30: intervals are wide, and that is the honest width.
* :func:`paired_bootstrap` -- the paired differences ``d_s = x_s - baseline_s``; their mean and a
  percentile bootstrap interval of that mean, resampling *seeds* with replacement. When ``n^n``
  resamples are no more than ``n_boot`` (n <= 4 seeds at the default 2000) every resample is
  enumerated once (the exact bootstrap distribution, deterministic); otherwise ``n_boot`` seeded
  draws. Cost O(min(n^n, n_boot) * n). With few seeds the percentile interval is optimistic (it
  cannot be wider than the range of the d_s).
* :func:`sign_test` -- exact two-sided binomial sign test over the non-zero d_s. Its smallest
  possible p is ``2 / 2^n``: 0.25 with 3 seeds, so with 3 seeds it can never reject at 5 %.
* :func:`verdict` -- "better" only when the bootstrap interval excludes zero on the side of the
  metric's direction (below zero for losses and bits per byte, above for accuracy), "worse" when
  it excludes zero on the other side, else "not significant".
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np


def t_cdf(x: float, df: int) -> float:
    """CDF of Student's t with integer ``df`` >= 1 (Abramowitz & Stegun 26.7.3/26.7.4 finite series)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be an integer >= 1, got {df}")
    theta = math.atan2(x, math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:  # A(t|v) = 2/pi (theta + sin cos (1 + 2/3 cos^2 + ... ))
        total, term = 0.0, 0.0
        if df > 1:
            term = c
            total = term
            for k in range(1, (df - 3) // 2 + 1):
                term *= c * c * (2 * k) / (2 * k + 1)
                total += term
        a = 2 / math.pi * (theta + s * total)
    else:  # A = sin (1 + 1/2 cos^2 + 1.3/(2.4) cos^4 + ...)
        term, total = 1.0, 1.0
        for k in range(1, (df - 2) // 2 + 1):
            term *= c * c * (2 * k - 1) / (2 * k)
            total += term
        a = s * total
    return 0.5 + 0.5 * a  # A is P(|T| < |x|) signed with x


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t (bisection on :func:`t_cdf`, 1e-10 absolute)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return 0.5 * (lo + hi)


def mean_interval(values: Sequence[float], alpha: float = 0.05) -> dict:
    """{mean, sd, n, half, lo, hi}: the Student-t interval of the mean over seeds (half = nan when n < 2)."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "sd": math.nan, "n": n, "half": math.nan, "lo": math.nan, "hi": math.nan}
    sd = float(x.std(ddof=1))
    half = t_quantile(1 - alpha / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "half": half, "lo": mean - half, "hi": mean + half}


def bootstrap_means(d: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[np.ndarray, bool]:
    """Means of the seed resamples of ``d`` and whether they are the exact (enumerated) distribution."""
    d = np.asarray(d, dtype=np.float64)
    n = d.size
    if n == 0:
        return np.zeros(0), True
    if n ** n <= n_boot:
        idx = np.array(list(itertools.product(range(n), repeat=n)), dtype=np.int64)
        return d[idx].mean(axis=1), True
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    return d[idx].mean(axis=1), False


def sign_test(d: Sequence[float]) -> dict:
    """Exact two-sided sign test of median(d) = 0: {n_pos, n_neg, n_zero, p} (zeros dropped)."""
    d = np.asarray(d, dtype=np.float64)
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    n = pos + neg
    if n == 0:
        return {"n_pos": 0, "n_neg": 0, "n_zero": int(d.size), "p": 1.0}
    k = min(pos, neg)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return {"n_pos": pos, "n_neg": neg, "n_zero": int(d.size) - n, "p": min(1.0, 2 * tail)}


def paired_bootstrap(x: Sequence[float], baseline: Sequence[float], *, alpha: float = 0.05, n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """Paired comparison of ``x`` against ``baseline`` (same seeds, same order): the mean difference,
    its percentile bootstrap interval over seeds, the paired t interval and the sign test."""
    x, b = np.asarray(x, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if x.shape != b.shape:
        raise ValueError(f"paired samples need the same seeds: {x.shape} vs {b.shape}")
    d = x - b
    means, exact = bootstrap_means(d, n_boot, seed)
    lo, hi = (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))) if means.size else (
        math.nan, math.nan)
    t = mean_interval(d, alpha)
    return {"diff": float(d.mean()) if d.size else math.nan, "lo": lo, "hi": hi, "exact_bootstrap": exact,
            "n_boot": int(means.size), "t_lo": t["lo"], "t_hi": t["hi"], "n": int(d.size),
            "diffs": [float(v) for v in d], **{f"sign_{k}": v for k, v in sign_test(d).items()}}


def verdict(lo: float, hi: float, higher_is_better: bool) -> str:
    """'better' | 'worse' | 'not significant' from an interval of (candidate - baseline)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "not significant"
    if (lo > 0 and higher_is_better) or (hi < 0 and not higher_is_better):
        return "better"
    if (hi < 0 and higher_is_better) or (lo > 0 and not higher_is_better):
        return "worse"
    return "not significant"
