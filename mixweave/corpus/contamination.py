"""Benchmark contamination check: word n-grams shared between benchmark examples and corpus
documents (13-grams of lowercased ``\\w+`` tokens by default, as in the GPT-3 decontamination)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["ContaminationChecker", "word_ngrams", "DEFAULT_NGRAM"]

DEFAULT_NGRAM = 13
_WORD_RE = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _informative(words: list[str], min_content: int) -> bool:
    """True if enough tokens are real words (3+ characters, not numbers): sequences such as
    ``0 1 2 3 ... a b c`` or punctuation-heavy code are too generic to signal contamination."""
    return sum(1 for w in words if len(w) >= 3 and not w.isdigit()) >= min_content


def word_ngrams(text: str, n: int = DEFAULT_NGRAM, min_content: int | None = None) -> set[str]:
    """The informative word n-grams of ``text`` (lowercased ``\\w+`` tokens joined by spaces);
    an n-gram needs ``min_content`` (default ``n // 3``) tokens of 3+ letters."""
    words = _words(text)
    need = n // 3 if min_content is None else min_content
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)
            if _informative(words[i:i + n], need)}


@dataclass
class _BenchmarkStats:
    examples: int = 0
    checkable: int = 0
    contaminated: set[str] = field(default_factory=set)
    docs: set[str] = field(default_factory=set)
    matches: list[dict[str, str]] = field(default_factory=list)


class ContaminationChecker:
    """Index benchmark examples once, then feed corpus documents; ``report()`` summarises.

    >>> checker = ContaminationChecker([{"benchmark": "b", "id": "1", "prompt": "x", "answer": ""}])
    >>> checker.add_document("d1", "web", "nothing in common")
    0
    >>> checker.report()["total_contaminated_examples"]
    0
    """

    def __init__(self, examples: Iterable[Mapping[str, str]], n: int = DEFAULT_NGRAM,
                 max_matches_per_benchmark: int = 5) -> None:
        self.n = n
        self.max_matches = max_matches_per_benchmark
        self._index: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._first_words: set[str] = set()
        self._stats: dict[str, _BenchmarkStats] = defaultdict(_BenchmarkStats)
        for example in examples:
            bench, key = example["benchmark"], example["id"]
            stats = self._stats[bench]
            stats.examples += 1
            grams = word_ngrams(f"{example['prompt']}\n{example.get('answer', '')}", n)
            if grams:
                stats.checkable += 1
            for gram in grams:
                self._index[gram].append((bench, key))
                self._first_words.add(gram.split(" ", 1)[0])
        self.docs_scanned = 0

    def add_document(self, doc_id: str, source: str, text: str) -> int:
        """Scan one corpus document; returns how many benchmark n-gram hits it has."""
        self.docs_scanned += 1
        words = _words(text)
        n, first, index = self.n, self._first_words, self._index
        hits = 0
        for i in range(len(words) - n + 1):
            if words[i] not in first:
                continue
            gram = " ".join(words[i:i + n])
            owners = index.get(gram)
            if not owners:
                continue
            hits += 1
            for bench, key in owners:
                stats = self._stats[bench]
                stats.contaminated.add(key)
                if doc_id not in stats.docs and len(stats.matches) < self.max_matches:
                    stats.matches.append({"id": key, "doc_id": doc_id, "source": source,
                                          "ngram": gram})
                stats.docs.add(doc_id)
        return hits

    def report(self) -> dict[str, Any]:
        """Counts per benchmark (examples, checkable, contaminated, matching docs) with up to
        ``max_matches_per_benchmark`` example matches each."""
        per_benchmark = {
            bench: {
                "examples": s.examples,
                "checkable_examples": s.checkable,
                "contaminated_examples": len(s.contaminated),
                "matching_docs": len(s.docs),
                "matches": s.matches,
            }
            for bench, s in sorted(self._stats.items())
        }
        return {
            "method": f"shared word {self.n}-grams (lowercased \\w+ tokens, at least "
                      f"{self.n // 3} of them words of 3+ letters) between a benchmark example "
                      f"(prompt + answer) and a corpus document",
            "ngram": self.n,
            "docs_scanned": self.docs_scanned,
            "benchmarks": per_benchmark,
            "total_contaminated_examples": sum(v["contaminated_examples"]
                                               for v in per_benchmark.values()),
        }
