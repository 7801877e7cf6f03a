"""The utility table: per-source, per-benchmark scores, with their optional uncertainty.

The utility stage (:mod:`mixweave.utility`) writes it; the mixers, the report and ``mixweave utility
--method table`` read it here, so none of them imports another.

Accepted forms, all turned into a :class:`UtilityTable`:

- a mapping ``{source: {benchmark: score}}`` (plus an optional std mapping of the same shape);
- a pandas DataFrame in *wide* form (index = source, one column per benchmark) or *long* form
  (columns ``source``, ``benchmark``, ``score`` or ``mean``, optional ``std``, ``se``, ``ci_low``,
  ``ci_high``, ``n``);
- a file read by :func:`read_utility_table` (parquet or csv, long or wide).

Two spreads, not to be confused: ``std`` is the per-document (per-example, per-seed) spread of the
scores; ``se`` is the standard error of each mean, the uncertainty of the estimate. A long table
without ``se`` (written before it existed) gets ``se = std / sqrt(n)`` when it has ``std`` and
``n > 0`` everywhere; otherwise ``se`` is absent, and a log line says so.

Missing cells, NaN/inf scores or std, negative std/se and duplicate (source, benchmark) rows raise
InputError naming them. Optional columns (``se``, ``ci_low``/``ci_high``, ``n``) that are unknown
(NaN) in some cell are dropped whole, with a log line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mixweave.data.typed import is_number, name_list
from mixweave.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

OPTIONAL = ("std", "se", "ci_low", "ci_high", "n")
"""The optional per-cell arrays of a :class:`UtilityTable`, each ``[k, m]`` or None."""


@dataclass(frozen=True)
class UtilityTable:
    """Scores ``[k sources, m benchmarks]``, with optional arrays of the same shape: ``std`` (the
    per-document spread), ``se`` (standard error of the mean), ``ci_low``/``ci_high`` (the
    interval of the mean, e.g. the bootstrap's) and ``n`` (documents behind each mean)."""

    sources: tuple[str, ...]
    benchmarks: tuple[str, ...]
    scores: np.ndarray
    std: np.ndarray | None = None
    se: np.ndarray | None = None
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None
    n: np.ndarray | None = None

    def interval(self, z: float = 1.96) -> tuple[np.ndarray, np.ndarray, str] | None:
        """The confidence interval of each mean, ``(low, high, kind)``: the table's own interval
        (``kind`` 'ci', e.g. a percentile bootstrap) when it has one, else ``mean +- z * se``
        (``kind`` 'se'); None when neither is known (a std alone says nothing about the mean)."""
        if self.ci_low is not None and self.ci_high is not None:
            return self.ci_low, self.ci_high, "ci"
        if self.se is not None:
            return self.scores - z * self.se, self.scores + z * self.se, "se"
        return None

    def aligned(self, names: Sequence[str]) -> UtilityTable:
        """The rows for ``names``, in that order. Missing sources raise; extra ones are dropped."""
        missing = [n for n in names if n not in self.sources]
        if missing:
            raise InputError(f"the utility table has no scores for sources {name_list(missing)}; "
                             "re-run the utility stage for them or drop them from the mixture")
        extra = [s for s in self.sources if s not in set(names)]
        if extra:
            logger.warning("utility table: ignoring sources not in the mixture: %s", name_list(extra))
        rows = [self.sources.index(n) for n in names]
        extra = {k: None if getattr(self, k) is None else getattr(self, k)[rows] for k in OPTIONAL}
        return UtilityTable(tuple(names), self.benchmarks, self.scores[rows], **extra)

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{source: {benchmark: score}}`` with raw (unnormalised) scores."""
        return {s: {b: float(self.scores[i, j]) for j, b in enumerate(self.benchmarks)}
                for i, s in enumerate(self.sources)}


def _is_frame(obj: Any) -> bool:
    return hasattr(obj, "columns") and hasattr(obj, "to_numpy") and hasattr(obj, "index")


def _check_finite(table: UtilityTable, what: str = "scores") -> None:
    arrays = [("score", table.scores)] + [(k, getattr(table, k)) for k in ("std", "se") if getattr(table, k) is not None]
    for label, arr in arrays:
        bad = [f"{table.sources[i]}/{table.benchmarks[j]}" for i, j in zip(*np.nonzero(~np.isfinite(arr)))]
        if bad:
            raise InputError(f"utility {label} is missing, NaN or infinite for {name_list(bad)} "
                             "(source/benchmark); re-run the utility stage for them or drop them")
    for label in ("std", "se"):
        arr = getattr(table, label)
        if arr is not None and np.any(arr < 0):
            bad = [f"{table.sources[i]}/{table.benchmarks[j]}" for i, j in zip(*np.nonzero(arr < 0))]
            raise InputError(f"utility {label} is negative for {name_list(bad)} (source/benchmark)")


def _drop_unknown(table: UtilityTable) -> UtilityTable:
    """Optional arrays (se, ci_low/ci_high, n) with a NaN/inf cell dropped whole, with a log line:
    an unknown uncertainty is absent, never half-known."""
    drop = {}
    if table.std is not None and not np.any(np.isfinite(table.std)):
        logger.info("utility table: std is unknown (NaN) in every cell; ignoring the std column")
        drop["std"] = None
    for label in ("se", "ci_low", "ci_high", "n"):
        arr = getattr(table, label)
        if arr is not None and not np.all(np.isfinite(arr)):
            bad = [f"{table.sources[i]}/{table.benchmarks[j]}" for i, j in zip(*np.nonzero(~np.isfinite(arr)))]
            logger.info("utility table: %s is unknown for %s (source/benchmark); ignoring the %s column",
                        label, name_list(bad), label)
            drop[label] = None
    if "ci_low" in drop or "ci_high" in drop:
        drop.update(ci_low=None, ci_high=None)
    return replace(table, **drop) if drop else table


def _with_derived_se(table: UtilityTable, label: str) -> UtilityTable:
    """``se = std / sqrt(n)`` for a table without ``se`` (one written before the column existed)."""
    if table.se is not None:
        return table
    if table.std is not None and table.n is not None and np.all(table.n > 0):
        logger.info("%s table has no 'se' column: using se = std / sqrt(n)", label)
        return replace(table, se=table.std / np.sqrt(table.n))
    logger.info("%s table has no 'se' column%s: the standard error of its means is unknown (risk='se' "
                "is unavailable; UtiliMax falls back to risk='%s')", label,
                "" if table.std is None else " and no n > 0 to derive it from std",
                "diagonal" if table.std is not None else "identity")
    return table


def _from_mapping(scores: Mapping[str, Mapping[str, Any]], label: str = "utility") -> UtilityTable:
    if not scores:
        raise InputError(f"the {label} table is empty; give {{source: {{benchmark: score}}}}")
    sources = tuple(str(s) for s in scores)
    seen: dict[Any, None] = {}  # insertion-ordered set: O(1) per cell at 1,000 x 50
    for s, row in scores.items():
        if not isinstance(row, Mapping):
            raise InputError(f"{label} row for source {s!r} must be a mapping benchmark -> score, "
                             f"got {type(row).__name__}")
        seen.update(dict.fromkeys(row))
    benchmarks = [str(b) for b in seen]
    if not benchmarks:
        raise InputError(f"the {label} table names no benchmarks")
    missing = [f"{s}/{b}" for s, row in scores.items() for b in benchmarks if b not in row]
    if missing:
        raise InputError(f"the {label} table is missing source/benchmark cells {name_list(missing)}; "
                         "score every source on every benchmark or drop the benchmark")
    values = np.empty((len(sources), len(benchmarks)))
    for i, row in enumerate(scores.values()):
        for j, b in enumerate(benchmarks):
            v = row[b]
            values[i, j] = float(v) if is_number(v) else math.nan
    return UtilityTable(sources, tuple(benchmarks), values)


def _long_frame_to_mappings(df: Any) -> tuple[dict, dict[str, dict]]:
    score_col = "score" if "score" in df.columns else "mean" if "mean" in df.columns else None
    if score_col is None:
        raise InputError("a long utility table needs a 'score' (or 'mean') column next to "
                         f"'source' and 'benchmark'; found columns {list(map(str, df.columns))}")
    dup = df.duplicated(subset=["source", "benchmark"], keep=False)
    if dup.any():
        pairs = sorted({f"{s}/{b}" for s, b in df.loc[dup, ["source", "benchmark"]].itertuples(index=False)})
        raise InputError(f"the utility table has duplicate rows for {name_list(pairs)} "
                         "(source/benchmark); aggregate them first (e.g. mean over documents)")
    scores: dict[str, dict[str, Any]] = {}
    extra: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in OPTIONAL if c in df.columns}
    for rec in df.to_dict("records"):
        s, b = str(rec["source"]), str(rec["benchmark"])
        scores.setdefault(s, {})[b] = rec[score_col]
        for c, values in extra.items():
            values.setdefault(s, {})[b] = rec[c]
    return scores, extra


def _wide_frame_to_mapping(df: Any) -> dict:
    if "source" in df.columns:
        df = df.set_index("source")
    out: dict[str, dict[str, Any]] = {}
    for s, row in zip(df.index, df.to_dict("records")):
        if str(s) in out:
            raise InputError(f"the utility table lists source {s!r} twice; keep one row per source")
        out[str(s)] = {str(b): v for b, v in row.items()}
    return out


def _frame_to_table(df: Any, label: str) -> UtilityTable:
    if {"source", "benchmark"} <= set(map(str, df.columns)):
        scores, extra = _long_frame_to_mappings(df)
        table = _from_mapping(scores, label)
        if "std" in extra:
            table = _with_std(table, _from_mapping(extra["std"], f"{label} std"))
        # the other optional columns come from the same rows, so every cell exists
        more = {c: _from_mapping(v, f"{label} {c}").scores for c, v in extra.items() if c != "std"}
        table = _drop_unknown(replace(table, **more))
        return _with_derived_se(table, label)
    return _from_mapping(_wide_frame_to_mapping(df), label)


def _to_table(obj: Any, label: str) -> UtilityTable:
    if isinstance(obj, UtilityTable):
        return obj
    if _is_frame(obj):
        return _frame_to_table(obj, label)
    if isinstance(obj, Mapping):
        return _from_mapping(obj, label)
    raise InputError(f"{label} must be a DataFrame, a mapping {{source: {{benchmark: score}}}} or a "
                     f"UtilityTable, got {type(obj).__name__}")


def _with_std(table: UtilityTable, std: UtilityTable) -> UtilityTable:
    missing = [f"{s}/{b}" for s in table.sources for b in table.benchmarks
               if s not in std.sources or b not in std.benchmarks]
    if missing:
        raise InputError(f"the utility std table is missing source/benchmark cells {name_list(missing)}; "
                         "give a std for every score or leave the std table out")
    rows = [std.sources.index(s) for s in table.sources]
    cols = [std.benchmarks.index(b) for b in table.benchmarks]
    return replace(table, std=std.scores[np.ix_(rows, cols)])


def coerce_utility(utility: Any, utility_std: Any = None) -> UtilityTable:
    """Any accepted utility form (plus an optional std table) as a validated UtilityTable."""
    table = _to_table(utility, "utility")
    if utility_std is not None:
        if table.std is not None:
            raise ConfigError("std was given twice (a 'std' column in the utility table and "
                              "utility_std); keep one of them")
        table = _with_std(table, _to_table(utility_std, "utility std"))
    _check_finite(table)
    return table


def read_utility_table(path: str | Path) -> UtilityTable:
    """Read a utility table from parquet or csv.

    Long form: columns ``source``, ``benchmark``, ``score`` (or ``mean``), optional ``std``, ``se``,
    ``ci_low``/``ci_high``, ``n`` (``se`` derived from ``std`` and ``n`` when absent).
    Wide form: a ``source`` column (or the first column) and one column per benchmark.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"utility table {path} does not exist; run the utility stage or fix the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        else:
            raise InputError(f"utility table {path}: unknown format {suffix!r}; use .parquet or .csv")
    except (OSError, ValueError) as exc:  # pandas/pyarrow parse errors are ValueError subclasses
        raise InputError(f"utility table {path} cannot be read ({exc}); "
                         "rewrite it as parquet or csv") from exc
    columns = set(map(str, df.columns))
    if "source" not in columns and isinstance(df.index, pd.RangeIndex):
        df = df.set_index(df.columns[0])  # wide form whose first column names the sources
    return coerce_utility(df)
