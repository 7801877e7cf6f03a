"""Per-document scores -> the source x benchmark utility table (long form), and its normalisation.

Output columns (:data:`TABLE_COLUMNS`): ``source, benchmark, mean, std, se, ci_low, ci_high, n,
n_unparseable``. ``mean``/``std`` are over the parsed scores (``std`` with ddof=1; 0 for n=1): ``std``
is the per-document spread, ``se = std / sqrt(n)`` the standard error of the mean (the uncertainty
of the estimate, what UtiliMax's default risk uses); the interval ``ci_low..ci_high`` is a
percentile bootstrap of the mean (the same uncertainty without a normality assumption). ``n``
counts parsed scores and
``n_unparseable`` the answers that could not be parsed. Failed requests (no answer at all) are
counted in the cost report, not here. A cell with n=0 has NaN statistics (and is warned about):
the mixers refuse it, which is the right outcome for a source nobody could rate.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mixweave.errors import ConfigError

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("source", "benchmark", "mean", "std", "se", "ci_low", "ci_high", "n", "n_unparseable")
NORMALIZATIONS = ("minmax", "max", "zscore", "none")


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values``: ``std(ddof=1) / sqrt(n)``; 0 for n=1 (as ``std``),
    NaN for n=0. Cost O(n). Trade-off: the normal-theory SE; the bootstrap interval beside it
    needs no normality but is too narrow for n < ~10 all the same."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan
    if v.size == 1:
        return 0.0
    return float(v.std(ddof=1) / math.sqrt(v.size))


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample ``values`` with replacement ``n_boot``
    times, take the ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled means.

    Cost O(n_boot x n) time, done in blocks of ~4M draws (memory stays bounded). Trade-off: no
    normality assumption (scores are 1..5 and skewed), but the interval is too narrow for n < ~10.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1 or np.all(v == v[0]):
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    block = max(1, 4_000_000 // v.size)
    for lo in range(0, n_boot, block):
        hi = min(n_boot, lo + block)
        means[lo:hi] = v[rng.integers(0, v.size, size=(hi - lo, v.size))].mean(axis=1)
    q = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(q[0]), float(q[1])


def _cell_seed(seed: int, source: str, benchmark: str) -> int:
    """A per-cell seed, so a cell's interval does not depend on which other cells exist."""
    h = hashlib.blake2b(f"{seed}\x1f{source}\x1f{benchmark}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


def aggregate_scores(rows: Iterable[Mapping[str, Any]], *, n_boot: int = 2000, alpha: float = 0.05,
                     seed: int = 0, sources: Sequence[str] | None = None,
                     benchmarks: Sequence[str] | None = None) -> Any:
    """``rows`` of ``{source, benchmark, score}`` (score None = unparseable; rows with an
    ``error`` are skipped) -> a pyarrow Table with :data:`TABLE_COLUMNS`, sorted by source then
    benchmark. ``sources``/``benchmarks`` force cells to exist (n=0) even without rows.

    Cost: O(rows + cells x n_boot x n)."""
    import pyarrow as pa

    if not 0 < alpha < 1 or n_boot < 1:
        raise ConfigError(f"alpha must be in (0, 1) and n_boot >= 1 (got {alpha}, {n_boot})")
    cells: dict[tuple[str, str], list[float]] = {}
    bad: dict[tuple[str, str], int] = {}
    for s in sources or ():
        for b in benchmarks or ():
            cells.setdefault((s, b), [])
            bad.setdefault((s, b), 0)
    for r in rows:
        if r.get("error"):
            continue
        key = (str(r["source"]), str(r["benchmark"]))
        cells.setdefault(key, [])
        bad.setdefault(key, 0)
        score = r.get("score")
        if score is None or (isinstance(score, float) and not math.isfinite(score)):
            bad[key] += 1
        else:
            cells[key].append(float(score))
    out: dict[str, list[Any]] = {c: [] for c in TABLE_COLUMNS}
    empty = []
    for key in sorted(cells):
        v = np.asarray(cells[key], dtype=np.float64)
        n = int(v.size)
        mean = float(v.mean()) if n else math.nan
        std = float(v.std(ddof=1)) if n > 1 else (0.0 if n == 1 else math.nan)
        se = standard_error(v)
        lo, hi = bootstrap_ci(v, n_boot=n_boot, alpha=alpha, seed=_cell_seed(seed, *key))
        if n == 0:
            empty.append(f"{key[0]}/{key[1]}")
        for col, val in zip(TABLE_COLUMNS, (key[0], key[1], mean, std, se, lo, hi, n, bad[key])):
            out[col].append(val)
    if empty:
        log.warning("no parsed scores for %d source/benchmark cells (%s%s): their statistics are NaN",
                    len(empty), ", ".join(empty[:5]), ", ..." if len(empty) > 5 else "")
    return pa.table({
        "source": pa.array(out["source"], pa.string()),
        "benchmark": pa.array(out["benchmark"], pa.string()),
        **{c: pa.array(out[c], pa.float64()) for c in ("mean", "std", "se", "ci_low", "ci_high")},
        "n": pa.array(out["n"], pa.int64()),
        "n_unparseable": pa.array(out["n_unparseable"], pa.int64()),
    })


def normalize_table(table: Any, how: str) -> tuple[Any, dict[str, dict[str, float]]]:
    """Per-benchmark affine normalisation of ``mean``, ``ci_low``, ``ci_high`` (``std`` and ``se``
    divided by the same scale, so both stay in the units of the value):
    ``minmax`` maps the worst source's mean to 0 and the best to 1 (all tied -> 1, as the mixers
    do); ``max`` divides by the best source's mean (needs non-negative means with a positive best);
    ``zscore`` centres the means on 0 with unit spread across sources; ``none`` leaves them.
    Returns ``(table, {benchmark: {offset, scale}})`` with ``normalised = (raw - offset) / scale``.

    Trade-off: an affine map keeps the order of sources and the width of intervals relative to the
    spread, but the numbers only compare sources *within* one benchmark."""
    import pyarrow as pa

    if how not in NORMALIZATIONS:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {how!r}")
    if how == "none" or table.num_rows == 0:
        return table, {}
    bench = np.asarray(table.column("benchmark").to_pylist(), dtype=object)
    spreads = [c for c in ("std", "se") if c in table.column_names]
    cols = {c: table.column(c).to_numpy(zero_copy_only=False).astype(np.float64).copy()
            for c in ("mean", "ci_low", "ci_high", *spreads)}
    params: dict[str, dict[str, float]] = {}
    for b in sorted(set(bench.tolist())):
        m = bench == b
        means = cols["mean"][m]
        finite = means[np.isfinite(means)]
        if finite.size == 0:
            continue
        if how == "minmax":
            lo, hi = float(finite.min()), float(finite.max())
            offset, scale = (lo, hi - lo) if hi > lo else (lo - 1.0, 1.0)
        elif how == "max":
            hi = float(finite.max())
            if hi <= 0 or float(finite.min()) < 0:
                raise ConfigError(f"normalize='max' needs non-negative means with a positive best one; benchmark "
                                  f"{b!r} has means in [{float(finite.min()):.4g}, {hi:.4g}]; use 'minmax'")
            offset, scale = 0.0, hi
        else:
            offset = float(finite.mean())
            sd = float(finite.std())
            scale = sd if sd > 0 else 1.0
        params[b] = {"offset": offset, "scale": scale}
        for c in ("mean", "ci_low", "ci_high"):
            cols[c][m] = (cols[c][m] - offset) / scale
        for c in spreads:
            cols[c][m] = cols[c][m] / scale
    new = table
    for c, arr in cols.items():
        new = new.set_column(new.schema.get_field_index(c), c, pa.array(arr, pa.float64()))
    return new, params
