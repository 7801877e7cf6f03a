"""The utility table: per-source, per-benchmark scores (and optional standard deviations).

The utility stage (:mod:`mixweave.utility`) writes it; the mixers, the report and ``mixweave utility
--method table`` read it here, so none of them imports another.

Accepted forms, all turned into a :class:`UtilityTable`:

- a mapping ``{source: {benchmark: score}}`` (plus an optional std mapping of the same shape);
- a pandas DataFrame in *wide* form (index = source, one column per benchmark) or *long* form
  (columns ``source``, ``benchmark``, ``score`` or ``mean``, optional ``std``);
- a file read by :func:`read_utility_table` (parquet or csv, long or wide).

Missing cells, NaN/inf scores, negative std and duplicate (source, benchmark) rows raise InputError
naming them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixweave.data.typed import is_number, name_list
from mixweave.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class UtilityTable:
    """Scores ``[k sources, m benchmarks]``, with an optional std table of the same shape."""

    sources: tuple[str, ...]
    benchmarks: tuple[str, ...]
    scores: np.ndarray
    std: np.ndarray | None = None

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
        return UtilityTable(tuple(names), self.benchmarks, self.scores[rows],
                            None if self.std is None else self.std[rows])

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{source: {benchmark: score}}`` with raw (unnormalised) scores."""
        return {s: {b: float(self.scores[i, j]) for j, b in enumerate(self.benchmarks)}
                for i, s in enumerate(self.sources)}


def _is_frame(obj: Any) -> bool:
    return hasattr(obj, "columns") and hasattr(obj, "to_numpy") and hasattr(obj, "index")


def _check_finite(table: UtilityTable, what: str = "scores") -> None:
    arrays = [("score", table.scores)] + ([("std", table.std)] if table.std is not None else [])
    for label, arr in arrays:
        bad = [f"{table.sources[i]}/{table.benchmarks[j]}" for i, j in zip(*np.nonzero(~np.isfinite(arr)))]
        if bad:
            raise InputError(f"utility {label} is missing, NaN or infinite for {name_list(bad)} "
                             "(source/benchmark); re-run the utility stage for them or drop them")
    if table.std is not None and np.any(table.std < 0):
        bad = [f"{table.sources[i]}/{table.benchmarks[j]}" for i, j in zip(*np.nonzero(table.std < 0))]
        raise InputError(f"utility std is negative for {name_list(bad)} (source/benchmark)")


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


def _long_frame_to_mappings(df: Any) -> tuple[dict, dict | None]:
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
    std: dict[str, dict[str, Any]] | None = {} if "std" in df.columns else None
    for rec in df.to_dict("records"):
        s, b = str(rec["source"]), str(rec["benchmark"])
        scores.setdefault(s, {})[b] = rec[score_col]
        if std is not None:
            std.setdefault(s, {})[b] = rec["std"]
    return scores, std


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
        scores, std = _long_frame_to_mappings(df)
        table = _from_mapping(scores, label)
        if std is not None:
            table = _with_std(table, _from_mapping(std, f"{label} std"))
        return table
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
    return UtilityTable(table.sources, table.benchmarks, table.scores, std.scores[np.ix_(rows, cols)])


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

    Long form: columns ``source``, ``benchmark``, ``score`` (or ``mean``), optional ``std``.
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
