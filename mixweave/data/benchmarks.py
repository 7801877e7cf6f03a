"""The one reader of benchmark examples (``benchmarks.jsonl``), for utility estimation and eval.

A record is one JSON object per line: ``{benchmark, split, id, prompt, answer}``. It is usable when
``benchmark`` is a non-empty string and ``prompt`` is a string; ``answer`` is a string, a number
(kept as its text) or absent/null (read as ``""``); ``id`` defaults to the record's position among
the non-blank lines (0-based); ``split`` is optional.

Policy (the house rule): a bad record is skipped, counted by reason and warned about once per read
with the first place it happened; it never crashes the read. A source with no usable record at
all is an :class:`~mixweave.errors.InputError` that names the file and what to fix.

Skip reasons: ``invalid_utf8``, ``invalid_json``, ``not_an_object``, ``no_benchmark`` (missing,
empty or not a string), ``no_prompt`` (missing or not a string), ``bad_answer`` (not a string,
number or null).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixweave.errors import InputError

log = logging.getLogger(__name__)

RECORD_HELP = ("each line needs a JSON object with a non-empty string 'benchmark' and a string 'prompt' "
               "(and ideally 'answer', 'split', 'id')")
REASONS = ("invalid_utf8", "invalid_json", "not_an_object", "no_benchmark", "no_prompt", "bad_answer")


@dataclass(frozen=True)
class BenchmarkRecords:
    """The usable records of one read, and what was skipped.

    ``n_input = len(records) + sum(skipped.values())`` always holds (blank lines are not records)."""

    records: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)
    where: str = "benchmark records"
    first_skip: str | None = None
    """Where the first skipped record was (``file:line`` or ``record N``) and why."""

    @property
    def n_input(self) -> int:
        return len(self.records) + sum(self.skipped.values())


@dataclass(frozen=True)
class _Undecodable:
    reason: str


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check(rec: Any) -> str | None:
    """Why ``rec`` is unusable, or None."""
    if not isinstance(rec, Mapping):
        return "not_an_object"
    name = rec.get("benchmark")
    if not isinstance(name, str) or not name.strip():
        return "no_benchmark"
    if not isinstance(rec.get("prompt"), str):
        return "no_prompt"
    answer = rec.get("answer")
    if answer is not None and not isinstance(answer, str) and not _is_number(answer):
        return "bad_answer"
    return None


def _clean(rec: Mapping[str, Any], index: int) -> dict[str, Any]:
    out = dict(rec)
    out["id"] = str(out["id"]) if out.get("id") is not None else str(index)
    answer = out.get("answer")
    out["answer"] = "" if answer is None else answer if isinstance(answer, str) else str(answer)
    return out


def check_records(items: Iterable[tuple[str, Any]], where: str) -> BenchmarkRecords:
    """Validate ``(place, record-or-reason)`` pairs: a record (anything decoded) is checked, a
    string from :data:`REASONS` in place of a record marks one that could not be decoded.

    Skips are counted by reason and warned about once; no usable record raises InputError."""
    records: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    first: str | None = None
    for index, (place, rec) in enumerate(items):
        reason = rec.reason if isinstance(rec, _Undecodable) else _check(rec)
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            if first is None:
                first = f"{place} ({reason})"
            continue
        records.append(_clean(rec, index))
    result = BenchmarkRecords(records, skipped, where, first)
    if not records:
        if skipped:
            found = f"no usable benchmark record ({_counts(skipped)} skipped; first: {first})"
        else:
            found = "no benchmark records"
        raise InputError(f"{where} has {found}; {RECORD_HELP}")
    if skipped:
        log.warning("%s: skipped %d of %d benchmark records (%s; first: %s); %s", where, sum(skipped.values()),
                    result.n_input, _counts(skipped), first, RECORD_HELP)
    return result


def _counts(skipped: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "none"


def _file_items(path: Path) -> Iterable[tuple[str, Any]]:
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            place = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield place, _Undecodable("invalid_utf8")
                continue
            try:
                yield place, json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                yield place, _Undecodable("invalid_json")


def read_benchmark_records(source: str | Path | Iterable[Any]) -> BenchmarkRecords:
    """The usable records of a ``benchmarks.jsonl`` path (or of an iterable of record dicts), with
    the skip counts. A missing file or one without a usable record raises InputError."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"benchmarks file {path} does not exist; build the corpus (it writes "
                             "benchmarks.jsonl) or give the path of one")
        try:
            return check_records(_file_items(path), f"benchmarks file {path}")
        except OSError as exc:
            raise InputError(f"benchmarks file {path} cannot be read ({exc}); check the path and its "
                             "permissions") from exc
    return check_records(((f"record {i}", rec) for i, rec in enumerate(source)), "benchmark records")


def select_split(records: BenchmarkRecords, split: str | None) -> list[dict[str, Any]]:
    """The records of one ``split`` (None = all). No record of that split raises InputError that
    lists the splits there are."""
    if split is None:
        return list(records.records)
    chosen = [r for r in records.records if str(r.get("split", "")) == split]
    if not chosen:
        have = sorted({str(r.get("split")) for r in records.records})
        raise InputError(f"{records.where} has no benchmark records with split={split!r}; it has {have}")
    return chosen


def load_benchmarks(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Usable records of ``benchmarks.jsonl`` (optionally only one ``split``), bad ones skipped."""
    return select_split(read_benchmark_records(path), split)
