"""MEDU (Model Estimated Data Utility): describe -> merge -> rate, over any :class:`Backend`.

1. *describe*: a benchmark's dev examples are shuffled (seeded) and cut into chunks; the LLM
   writes a three-part description per chunk (kind of test; languages, skills, knowledge; ideal
   training data).
2. *merge*: the chunk descriptions are merged pairwise in a seeded tree (:func:`merge_plan`) until
   one per benchmark remains; all benchmarks advance one tree level per batched LLM call.
3. *rate*: every sampled document is rated against every benchmark's description on five levels
   (Great..Useless -> 5..1), either by free-text reasoning ending in ``Final Score: <level>``
   (``generate``, the paper's way) or by the expected level under the next-token label
   probabilities at a fixed answer slot (``logprob``: one forward pass, no decoding).

Every LLM result goes through the :class:`~mixweave.utility.cache.ResultCache`, committed
per batch: a crash or a re-run never asks the backend again for finished work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixweave.errors import ConfigError, MixweaveError
from mixweave.utility.backend import Backend
from mixweave.utility.cache import ResultCache, rating_key, text_hash
from mixweave.utility.prompts import ANSWER_PREFIX, PromptSet, defuse, format_examples
from mixweave.utility.scoring import LABELS, SCORES, expected_score, parse_final_score

log = logging.getLogger(__name__)

MODES = ("generate", "logprob")


class BackendError(MixweaveError):
    """The LLM backend could not produce a result that the pipeline cannot do without."""


@dataclass(frozen=True, kw_only=True)
class MeduOptions:
    """Settings of the MEDU pipeline (all of them change cache keys where they change answers)."""

    mode: str = "generate"
    """generate: reasoning + ``Final Score:`` (paper); logprob: expected level, one forward pass."""
    max_doc_tokens: int = 2048
    """Documents are cut to this many tokens (backend tokenizer) inside the rating prompt."""
    examples_per_chunk: int = 8
    max_chunks: int = 8
    """At most this many chunks (so describe calls) per benchmark; the rest of the dev set is unused."""
    max_example_chars: int = 2000
    describe_max_tokens: int = 512
    rate_max_tokens: int = 512
    temperature: float = 0.1
    seed: int = 0
    batch_size: int = 64
    """Prompts per backend call and per cache commit (a crash loses at most one batch)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("max_doc_tokens", "examples_per_chunk", "max_chunks", "max_example_chars",
                     "describe_max_tokens", "rate_max_tokens", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"temperature must be in [0, 2], got {self.temperature}")


@dataclass
class Usage:
    """LLM work of one phase: calls and tokens, split into fresh work and cache hits."""

    prompts: int = 0
    cached: int = 0
    failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens_in: int = 0
    cached_tokens_out: int = 0
    backend_calls: int = 0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, other: Usage) -> None:
        for name in ("prompts", "cached", "failed", "tokens_in", "tokens_out", "cached_tokens_in",
                     "cached_tokens_out", "backend_calls", "wall_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors[: max(0, 50 - len(self.errors))])

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("prompts", "cached", "failed", "tokens_in", "tokens_out",
                                           "cached_tokens_in", "cached_tokens_out", "backend_calls")}
        d["wall_s"] = round(self.wall_s, 3)
        d["errors"] = list(self.errors[:20])
        return d


# -- pure pieces -------------------------------------------------------------------------------
def chunk_examples(examples: Sequence[Mapping[str, Any]], per_chunk: int, max_chunks: int,
                   seed: int) -> list[list[Mapping[str, Any]]]:
    """Seeded shuffle of a benchmark's examples, cut into at most ``max_chunks`` chunks of
    ``per_chunk``. Examples are first sorted by id so the result does not depend on file order."""
    ordered = sorted(examples, key=lambda e: str(e.get("id", "")))
    perm = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in perm]
    return [shuffled[i:i + per_chunk] for i in range(0, len(shuffled), per_chunk)][:max_chunks]


@dataclass(frozen=True)
class MergePlan:
    """A seeded pairwise merge tree over ``n`` leaves. Leaves are nodes ``0..n-1``; merge number
    ``m`` creates node ``n + m``. ``levels[l]`` lists ``(left, right, out)`` merges that can run
    together; an odd node out at a level is carried up unchanged. ``root`` is the final node."""

    n: int
    levels: tuple[tuple[tuple[int, int, int], ...], ...]
    root: int


def merge_plan(n: int, seed: int) -> MergePlan:
    """Shuffle the ``n`` leaves with ``seed``, then pair neighbours level by level until one node
    is left: exactly ``n - 1`` merges in ``ceil(log2 n)`` levels (each level is one batched LLM
    call, so depth, not merge count, sets the latency)."""
    if n < 1:
        raise ValueError("merge_plan needs at least one description")
    current = [int(i) for i in np.random.default_rng(seed).permutation(n)]
    levels: list[tuple[tuple[int, int, int], ...]] = []
    next_id = n
    while len(current) > 1:
        merges, carried = [], []
        for i in range(0, len(current) - 1, 2):
            merges.append((current[i], current[i + 1], next_id))
            carried.append(next_id)
            next_id += 1
        if len(current) % 2:
            carried.append(current[-1])
        levels.append(tuple(merges))
        current = carried
    return MergePlan(n, tuple(levels), current[0])


# -- cached batched LLM calls ------------------------------------------------------------------
def _cached_generate(backend: Backend, cache: ResultCache, jobs: list[dict[str, Any]], *, kind: str,
                     prompt_id: str, max_tokens: int, temperature: float, seed: int,
                     batch_size: int) -> tuple[dict[str, str], Usage]:
    """Generate text for ``jobs`` ({key, prompt, subject, benchmark}), cache first; ``{key: text}``."""
    usage = Usage(prompts=len(jobs))
    t0 = time.perf_counter()
    found = cache.get_many([j["key"] for j in jobs])
    texts: dict[str, str] = {}
    for j in jobs:
        if j["key"] in found:
            v = found[j["key"]]
            texts[j["key"]] = v["text"]
            usage.cached += 1
            usage.cached_tokens_in += v["tokens_in"]
            usage.cached_tokens_out += v["tokens_out"]
    todo = [j for j in jobs if j["key"] not in found]
    for lo in range(0, len(todo), batch_size):
        batch = todo[lo:lo + batch_size]
        usage.backend_calls += 1
        results = backend.generate([j["prompt"] for j in batch], max_tokens=max_tokens,
                                   temperature=temperature, seed=seed)
        rows = []
        for j, r in zip(batch, results):
            usage.tokens_in += r.tokens_in
            usage.tokens_out += r.tokens_out
            if r.error:
                usage.failed += 1
                usage.errors.append(r.error)
                continue
            texts[j["key"]] = r.text
            rows.append((j["key"], {"kind": kind, "model": backend.model_id, "prompt": prompt_id,
                                    "subject": j["subject"], "benchmark": j["benchmark"]},
                         {"text": r.text, "tokens_in": r.tokens_in, "tokens_out": r.tokens_out}))
        cache.put_many(rows)
    usage.wall_s = time.perf_counter() - t0
    return texts, usage


def describe_benchmarks(backend: Backend, examples: Mapping[str, Sequence[Mapping[str, Any]]],
                        prompts: PromptSet, opts: MeduOptions,
                        cache: ResultCache) -> tuple[dict[str, str], dict[str, Any]]:
    """One merged three-part description per benchmark; ``(descriptions, info)``.

    Cost: ``sum_b chunks_b`` describe prompts plus ``chunks_b - 1`` merges per benchmark, in
    ``1 + max_b ceil(log2 chunks_b)`` batched calls. Raises BackendError if any step fails after
    the backend's retries (finished steps stay cached)."""
    gen = {"max_tokens": opts.describe_max_tokens, "temperature": opts.temperature, "seed": opts.seed}
    extra = {**gen, "per_chunk": opts.examples_per_chunk, "max_chars": opts.max_example_chars}
    describe_id, merge_id = prompts.ident("describe"), prompts.ident("merge")
    leaves: dict[str, list[str]] = {}
    jobs = []
    for bench in sorted(examples):
        chunks = chunk_examples(examples[bench], opts.examples_per_chunk, opts.max_chunks, opts.seed)
        if not chunks:
            raise ConfigError(f"benchmark {bench!r} has no examples; add dev examples or drop it")
        leaves[bench] = []
        for chunk in chunks:
            block = format_examples(list(chunk), opts.max_example_chars)
            subject = text_hash(block)
            key = rating_key(kind="describe", model=backend.model_id, prompt=describe_id, subject=subject,
                             benchmark=bench, extra=extra)
            leaves[bench].append(key)
            jobs.append({"key": key, "subject": subject, "benchmark": bench,
                         "prompt": prompts.render("describe", benchmark=bench, examples=block)})
    texts, usage = _cached_generate(backend, cache, jobs, kind="describe", prompt_id=describe_id,
                                    batch_size=opts.batch_size, **gen)
    _raise_missing(jobs, texts, "describe", usage)
    nodes = {b: {i: texts[k] for i, k in enumerate(keys)} for b, keys in leaves.items()}
    plans = {b: merge_plan(len(keys), opts.seed) for b, keys in leaves.items()}
    depth = max((len(p.levels) for p in plans.values()), default=0)
    for level in range(depth):
        jobs = []
        for bench, plan in plans.items():
            for left, right, out in plan.levels[level] if level < len(plan.levels) else ():
                a, b = nodes[bench][left], nodes[bench][right]
                subject = text_hash(a + "\x00" + b)
                key = rating_key(kind="merge", model=backend.model_id, prompt=merge_id, subject=subject,
                                 benchmark=bench, extra=gen)
                jobs.append({"key": key, "subject": subject, "benchmark": bench, "out": out,
                             "prompt": prompts.render("merge", benchmark=bench, description_a=defuse(a),
                                                      description_b=defuse(b))})
        merged, u = _cached_generate(backend, cache, jobs, kind="merge", prompt_id=merge_id,
                                     batch_size=opts.batch_size, **gen)
        _raise_missing(jobs, merged, "merge", u)
        usage.add(u)
        for j in jobs:
            nodes[j["benchmark"]][j["out"]] = merged[j["key"]]
    descriptions = {b: nodes[b][plans[b].root].strip() for b in plans}
    for b, text in descriptions.items():
        if not text:
            log.warning("benchmark %s: the model wrote an empty description; ratings will be uninformed", b)
    info = {"chunks": {b: len(k) for b, k in leaves.items()},
            "merges": {b: plans[b].n - 1 for b in plans}, "usage": usage.as_dict()}
    return descriptions, info


def _raise_missing(jobs: list[dict[str, Any]], texts: Mapping[str, str], step: str, usage: Usage) -> None:
    missing = [j["benchmark"] for j in jobs if j["key"] not in texts]
    if missing:
        first = " ".join(str(usage.errors[0]).split())[:300] if usage.errors else "none recorded"
        raise BackendError(f"the LLM backend failed {len(missing)} of {len(jobs)} {step} requests (benchmarks "
                           f"{sorted(set(missing))}) after its retries; first error: {first}; check the server, "
                           "model and backend_options, then re-run (finished work is cached)")


def rate_documents(backend: Backend, docs: Sequence[Mapping[str, Any]], descriptions: Mapping[str, str],
                   prompts: PromptSet, opts: MeduOptions, cache: ResultCache) -> tuple[list[dict[str, Any]], Usage]:
    """Rate every document against every benchmark description; one row per (document, benchmark).

    Row: ``source, doc_id, benchmark, score`` (None = unparseable or failed), ``label``,
    ``tokens_in, tokens_out, cached, error``. Cost per rating: one prompt of about
    ``max_doc_tokens + |description| + 400`` tokens in, and up to ``rate_max_tokens`` out
    (``generate``) or none (``logprob``). Batches of ``batch_size`` are committed to the cache."""
    mode = opts.mode
    template = "rate_generate" if mode == "generate" else "rate_logprob"
    prompt_id = f"{prompts.ident(template)}:{mode}"
    extra: dict[str, Any] = {"max_doc_tokens": opts.max_doc_tokens}
    if mode == "generate":
        extra.update(max_tokens=opts.rate_max_tokens, temperature=opts.temperature, seed=opts.seed)
    bench_ids = {b: f"{b}:{text_hash(d)[:16]}" for b, d in descriptions.items()}
    framed: dict[str, str] = {}
    jobs: list[dict[str, Any]] = []
    n_cut = 0
    for doc in docs:
        doc_hash = text_hash(str(doc["text"]))
        for bench in sorted(descriptions):
            key = rating_key(kind="rate", model=backend.model_id, prompt=prompt_id, subject=doc_hash,
                             benchmark=bench_ids[bench], extra=extra)
            jobs.append({"key": key, "doc": doc, "doc_hash": doc_hash, "benchmark": bench})
    usage = Usage(prompts=len(jobs))
    t0 = time.perf_counter()
    found = cache.get_many([j["key"] for j in jobs])
    todo = [j for j in jobs if j["key"] not in found]
    log.info("rating %d (document, benchmark) pairs in %s mode: %d cached, %d to do", len(jobs), mode,
             len(jobs) - len(todo), len(todo))
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for lo in range(0, len(todo), opts.batch_size):
        batch = todo[lo:lo + opts.batch_size]
        texts = []
        for j in batch:
            if j["doc_hash"] not in framed:
                cut, _, was_cut = backend.truncate(str(j["doc"]["text"]), opts.max_doc_tokens)
                n_cut += was_cut
                framed[j["doc_hash"]] = defuse(cut)
            texts.append(prompts.render(template, description=defuse(descriptions[j["benchmark"]]),
                                        document=framed[j["doc_hash"]]))
        usage.backend_calls += 1
        rows = []
        if mode == "generate":
            outs = backend.generate(texts, max_tokens=opts.rate_max_tokens, temperature=opts.temperature,
                                    seed=opts.seed)
        else:
            outs = backend.label_probs(texts, LABELS, answer_prefix=ANSWER_PREFIX)
        for j, r in zip(batch, outs):
            usage.tokens_in += r.tokens_in
            usage.tokens_out += r.tokens_out
            if r.error:
                usage.failed += 1
                usage.errors.append(r.error)
                errors[j["key"]] = r.error
                continue
            value = _rating_value(r, mode)
            results[j["key"]] = value
            rows.append((j["key"], {"kind": "rate", "model": backend.model_id, "prompt": prompt_id,
                                    "subject": j["doc_hash"], "benchmark": bench_ids[j["benchmark"]]}, value))
        cache.put_many(rows)
    usage.wall_s = time.perf_counter() - t0
    if n_cut:
        log.info("%d of %d rated documents were cut to %d tokens", n_cut, len(framed), opts.max_doc_tokens)
    out = []
    for j in jobs:
        cached = j["key"] in found
        v = found.get(j["key"]) or results.get(j["key"])
        if cached:
            usage.cached += 1
            usage.cached_tokens_in += v["tokens_in"]
            usage.cached_tokens_out += v["tokens_out"]
        out.append({"source": str(j["doc"]["source"]), "doc_id": str(j["doc"]["doc_id"]),
                    "benchmark": j["benchmark"], "score": None if v is None else v["score"],
                    "label": None if v is None else v.get("label"),
                    "tokens_in": 0 if v is None else v["tokens_in"], "tokens_out": 0 if v is None else v["tokens_out"],
                    "cached": cached, "error": errors.get(j["key"])})
    return out, usage


def _rating_value(result: Any, mode: str) -> dict[str, Any]:
    """The cached value of one finished rating (score None = unparseable)."""
    if mode == "generate":
        parsed = parse_final_score(result.text)
        return {"score": None if parsed is None else float(parsed[0]),
                "label": None if parsed is None else parsed[1],
                "answer": result.text[-4000:], "tokens_in": result.tokens_in, "tokens_out": result.tokens_out}
    es = expected_score(result.probs, LABELS)
    top = None if es is None else LABELS[int(np.argmax(result.probs))]
    return {"score": None if es is None else float(es[0]), "label": top,
            "probs": [float(p) for p in result.probs], "mass": 0.0 if es is None else float(es[1]),
            "tokens_in": result.tokens_in, "tokens_out": result.tokens_out}


__all__ = ["MODES", "SCORES", "BackendError", "MeduOptions", "MergePlan", "Usage", "chunk_examples",
           "describe_benchmarks", "merge_plan", "rate_documents"]
