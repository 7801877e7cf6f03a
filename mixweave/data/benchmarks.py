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

from mixweave.errors import ConfigError, InputError

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


# -- skills (Compute-Optimal Scaling of Skills, Roberts et al. 2025) ---------------------------------

#: The skill tags a benchmark may carry.
SKILLS = ("knowledge", "reasoning", "code", "math", "multilingual")
#: Default tags of the benchmarks mixweave ships (mixweave.corpus.benchmarks.BENCHMARKS).
DEFAULT_SKILLS = {"mmlu": "knowledge", "arc_easy": "reasoning", "arc_challenge": "reasoning",
                  "humaneval": "code", "mbpp": "code", "gsm8k": "math"}
#: Total variation above which the report warns that the validation set's skill composition is far
#: from the target composition (half the L1 distance between the two share vectors; 0.2 = a fifth
#: of the validation set would have to move to another skill).
FAR_FROM_TARGET = 0.2


def check_skill(skill: Any, where: str) -> str:
    """``skill`` when it is one of :data:`SKILLS`, else one ConfigError line naming ``where``."""
    if skill not in SKILLS:
        raise ConfigError(f"{where}: skill {skill!r} is not one of {', '.join(SKILLS)}")
    return skill


def record_skills(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``{benchmark: skill}`` from records that carry a ``skill`` field (a benchmark whose records
    disagree is an InputError naming both tags)."""
    out: dict[str, str] = {}
    for rec in records:
        skill = rec.get("skill")
        if skill is None:
            continue
        name = rec["benchmark"]
        check_skill(skill, f"benchmark record of {name}")
        if out.setdefault(name, skill) != skill:
            raise InputError(f"benchmark {name}: its records carry two skills, {out[name]!r} and {skill!r}; "
                             "tag every record of one benchmark with one skill")
    return out


def benchmark_skills(benchmarks: Iterable[str], overrides: Mapping[str, str] | None = None,
                     records: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The skill of each benchmark: the run config's ``benchmark_skills`` first, then the records'
    ``skill`` field (:func:`record_skills`), then :data:`DEFAULT_SKILLS`; None when untagged."""
    out = {}
    for name in benchmarks:
        skill = (overrides or {}).get(name) or (records or {}).get(name) or DEFAULT_SKILLS.get(name)
        out[name] = None if skill is None else check_skill(skill, f"benchmark_skills.{name}")
    return out


def skill_composition(skills: Mapping[str, str | None]) -> dict[str, float]:
    """Share of the benchmarks per skill (each benchmark, i.e. each utility column, counts once, as
    it does in the mixers' programs); untagged benchmarks count under ``untagged``."""
    counts: dict[str, int] = {}
    for skill in skills.values():
        counts[skill or "untagged"] = counts.get(skill or "untagged", 0) + 1
    total = sum(counts.values())
    return {s: n / total for s, n in sorted(counts.items())} if total else {}


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Half the L1 distance between two compositions (missing skills count 0): 0 = equal, 1 = disjoint."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def configured_skills(overrides: Mapping[str, str] | None, benchmarks_path: str | Path | None) -> dict[str, str]:
    """The tags a run sets: the ``skill`` fields of its benchmarks file's records (when the file is
    there), overridden by the run config's ``benchmark_skills``; defaults are applied later."""
    tags = record_skills(read_benchmark_records(benchmarks_path).records) \
        if benchmarks_path and Path(benchmarks_path).is_file() else {}
    for name, skill in (overrides or {}).items():
        tags[name] = check_skill(skill, f"benchmark_skills.{name}")
    return tags
