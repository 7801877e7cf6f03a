"""Small real inputs for tests, benchmarks and smoke runs: a pack artifact, mixture.json and
benchmarks.jsonl built from real text, offline.

Text comes from a corpus folder laid out like ``mixweave corpus build`` writes it
(``<source>/*.jsonl`` with a ``text`` field, plus ``benchmarks.jsonl``), or -- when none is given
or found -- from the Python standard library on this machine: ``code`` (stdlib module sources) and
``docs`` (the reference-manual topics that ship in ``pydoc_data``). Texts are tokenised with the
default GPT-2 tokenizer (or a small byte-level BPE trained on them), packed with
:func:`mixweave.retrieval.pack.pack_windows`, and given a fixed-weight mixture written by
:func:`build_mixture_manifest` (the trainer sits below the mixers, so it does not call them).
"""

from __future__ import annotations

import json
import logging
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mixweave.errors import InputError

log = logging.getLogger(__name__)

STDLIB_CODE_DIRS = ("json", "email", "http", "logging", "asyncio", "concurrent", "importlib", "xml", "urllib",
                    "unittest", "multiprocessing", "sqlite3", "ctypes", "tomllib", "wsgiref", "zoneinfo")
HELDOUT_CODE = ("textwrap.py", "difflib.py", "fractions.py", "statistics.py", "heapq.py", "bisect.py")


@dataclass(frozen=True)
class SampleInputs:
    pack_dir: Path
    mixture_path: Path
    benchmarks_path: Path
    tokens: dict[str, int]


def _corpus_texts(corpus_dir: Path, limit_chars: int, sources: Sequence[str] | None) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for folder in sorted(p for p in corpus_dir.iterdir() if p.is_dir()):
        if sources is not None and folder.name not in sources:
            continue
        docs, size = [], 0
        for file in sorted(folder.glob("*.jsonl")):
            for line in file.read_text(encoding="utf-8").splitlines():
                if size >= limit_chars:
                    break
                text = json.loads(line).get("text") or ""
                if text:
                    docs.append(text)
                    size += len(text)
        if docs:
            texts[folder.name] = docs
    return texts


def _stdlib_texts(limit_chars: int) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    import pydoc_data.topics as topics

    root = Path(sysconfig.get_paths()["stdlib"])
    code, size = [], 0
    for sub in STDLIB_CODE_DIRS:
        for file in sorted((root / sub).rglob("*.py")):
            if size >= limit_chars or "test" in file.parts[-2:]:
                continue
            text = file.read_text(encoding="utf-8", errors="replace")
            code.append(text)
            size += len(text)
    keys = sorted(topics.topics)
    docs, size, heldout_docs = [], 0, []
    for i, key in enumerate(keys):
        if i % 8 == 7:
            heldout_docs.append(topics.topics[key])
        elif size < limit_chars:
            docs.append(topics.topics[key])
            size += len(topics.topics[key])
    bench = []
    for name in HELDOUT_CODE:
        text = (root / name).read_text(encoding="utf-8")
        for j, block in enumerate(text.split("\ndef ")[1:5]):
            block = "def " + block[:1200]
            cut = max(1, len(block) // 3)
            bench.append({"benchmark": "stdlib_code", "split": "dev", "id": f"{name}:{j}",
                          "prompt": block[:cut], "answer": block[cut:]})
    for j, text in enumerate(heldout_docs):
        text = text[:1500]
        cut = max(1, len(text) // 3)
        bench.append({"benchmark": "python_docs", "split": "dev", "id": f"topic:{j}",
                      "prompt": text[:cut], "answer": text[cut:]})
    return {"code": code, "docs": docs}, bench


def sample_mixture(stats_sources: Mapping[str, Mapping[str, Any]], budget_tokens: float, *,
                   weights: Mapping[str, float] | None, max_epochs: float | None, seq_len: int,
                   tokenizer: Mapping[str, Any], seed: int, order: Mapping[str, Any] | None = None) -> dict:
    """A validated mixture.json dict with fixed ``weights`` (default equal) over ``stats_sources``."""
    from types import SimpleNamespace

    from mixweave.data.mixture_manifest import build_mixture_manifest

    names = list(stats_sources)
    w = {n: 1.0 / len(names) for n in names} if weights is None else {n: float(weights[n]) for n in names}
    total_w = sum(w.values())
    w = {n: v / total_w for n, v in w.items()}
    n_tokens = {n: float(stats_sources[n]["n_tokens"]) for n in names}
    target = {n: w[n] * budget_tokens for n in names}
    epochs = {n: target[n] / n_tokens[n] for n in names}
    binding = {n: "epoch_cap" if max_epochs is not None and abs(epochs[n] - max_epochs) < 1e-9 else "none"
               for n in names}
    mixture = SimpleNamespace(method="manual", params={"weights": w, "max_epochs": max_epochs}, solver="closed_form",
                              status="optimal", objective=None, budget_tokens=budget_tokens, n_tokens=n_tokens,
                              weights=w, target_tokens=target, epochs=epochs,
                              max_epochs={n: max_epochs for n in names}, binding=binding, utility={})
    return build_mixture_manifest(mixture, {"sources": stats_sources}, seq_len=seq_len, tokenizer=tokenizer,
                                  seed=seed, order=order)


def train_bpe_tokenizer(texts: Sequence[str], path: str | Path, vocab_size: int) -> Path:
    """A byte-level BPE ``tokenizer.json`` with ``vocab_size`` ids (incl. ``<|endoftext|>``) trained on
    ``texts`` with Hugging Face ``tokenizers``: a small real vocabulary for fast CPU training tests."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def build_sample_inputs(out_dir: str | Path, *, seq_len: int = 64, plus_one: bool = False,
                        corpus_dir: str | Path | None = None, sources: Sequence[str] | None = None,
                        max_chars_per_source: int = 400_000, vocab_size: int | None = None,
                        budget_tokens: float | None = None, weights: Mapping[str, float] | None = None,
                        max_epochs: float | None = 4.0, seed: int = 0) -> SampleInputs:
    """Write ``out_dir/pack`` (pack artifact), ``out_dir/mixture.json`` and
    ``out_dir/benchmarks.jsonl``; ``sources`` picks corpus sub-folders (default all);
    ``vocab_size``: train a byte-level BPE of that size on the texts instead of using GPT-2;
    ``budget_tokens`` defaults to the pack's total tokens; ``weights`` default to equal shares."""
    from mixweave.data.mixture_manifest import write_mixture_manifest
    from mixweave.data.tokenizer import load_tokenizer
    from mixweave.data.windows import write_pack_artifact
    from mixweave.retrieval.pack import pack_windows

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bench: list[dict[str, str]] = []
    texts: dict[str, list[str]] = {}
    if corpus_dir is not None and Path(corpus_dir).is_dir():
        texts = _corpus_texts(Path(corpus_dir), max_chars_per_source, sources)
        bench_file = Path(corpus_dir) / "benchmarks.jsonl"
        if bench_file.is_file():
            from mixweave.data.benchmarks import read_benchmark_records

            bench = list(read_benchmark_records(bench_file).records)
    if not texts:
        texts, bench = _stdlib_texts(max_chars_per_source)
    if vocab_size is None:
        tok = load_tokenizer()
    else:
        all_texts = [t for docs in texts.values() for t in docs]
        tok = load_tokenizer(str(train_bpe_tokenizer(all_texts, out / "tokenizer" / "tokenizer.json", vocab_size)))
    info = tok.info
    dtype = np.uint16 if info["dtype"] == "uint16" else np.int32
    windows, stats_sources = {}, {}
    for i, (name, docs) in enumerate(sorted(texts.items())):
        ids = tok.encode_batch(docs)
        packed = pack_windows(ids, np.arange(len(ids)), seq_len=seq_len, eos_id=tok.eos_id, plus_one=plus_one,
                              seed=seed + i, dtype=dtype)
        if packed.n_windows == 0:
            raise InputError(f"source {name} has too little text for one window of {seq_len} tokens")
        windows[name] = packed.windows
        stats_sources[name] = {"n_tokens": packed.n_windows * seq_len, "n_docs": len(docs), "paths": [name]}
    pack_dir = write_pack_artifact(out / "pack", windows, seq_len=seq_len, plus_one=plus_one, tokenizer=info)
    total = sum(s["n_tokens"] for s in stats_sources.values())
    budget = float(total if budget_tokens is None else budget_tokens)
    manifest = sample_mixture(stats_sources, budget, weights=weights, max_epochs=max_epochs, seq_len=seq_len,
                              tokenizer=info, seed=seed, order={"method": "sample", "windows": str(pack_dir)})
    mixture_path = write_mixture_manifest(out / "mixture.json", manifest)
    bench_path = out / "benchmarks.jsonl"
    bench_path.write_text("".join(json.dumps(r) + "\n" for r in bench), encoding="utf-8")
    log.info("sample inputs in %s: %s", out, {n: s["n_tokens"] for n, s in stats_sources.items()})
    return SampleInputs(pack_dir=Path(pack_dir), mixture_path=Path(mixture_path), benchmarks_path=bench_path,
                        tokens={n: s["n_tokens"] for n, s in stats_sources.items()})
