"""Embedding-similarity utility: a cheap CPU estimator with no LLM (the demo's default).

For a document d and a benchmark with example embeddings B, the document's score is the mean of
its top-k cosine similarities to the benchmark's examples; a source's utility for the benchmark
is the mean of its sampled documents' scores (with std, bootstrap interval and n, like MEDU's
table). Scores are then normalised per benchmark (:func:`~.aggregate.normalize_table`) because raw
cosine levels differ between benchmarks (short multiple-choice items vs code).

Cost: one encoder pass over the sampled documents and the benchmark examples (the first
``max_tokens`` tokens of each; all-MiniLM-L6-v2 reads 254) plus a ``[docs x examples]`` matrix
product. Trade-off: it measures topical and stylistic closeness to the test items, not whether a
document teaches the skill, and it can reward near-copies of test items (check contamination).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mixweave.errors import ConfigError, InputError

log = logging.getLogger(__name__)


def topk_mean_similarity(doc_emb: np.ndarray, bench_emb: np.ndarray, k: int) -> np.ndarray:
    """Per document: mean of its ``k`` largest cosine similarities to the rows of ``bench_emb``
    (``k`` is clipped to the number of examples). Inputs are L2-normalised. O(D x E x dim)."""
    if k < 1:
        raise ConfigError(f"top_k must be >= 1, got {k}")
    if doc_emb.shape[0] == 0 or bench_emb.shape[0] == 0:
        return np.zeros(doc_emb.shape[0], dtype=np.float64)
    sims = doc_emb.astype(np.float32) @ bench_emb.astype(np.float32).T
    k = min(k, sims.shape[1])
    top = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k:]
    return top.astype(np.float64).mean(axis=1)


def example_text(ex: Mapping[str, Any]) -> str:
    """What a benchmark example looks like to the encoder: its prompt, then its answer."""
    return f"{ex.get('prompt', '')}\n{ex.get('answer', '')}".strip()


def embedding_document_scores(docs: Any, examples: Mapping[str, Sequence[Mapping[str, Any]]], *,
                              encoder: Any = "default", top_k: int = 5, max_tokens: int = 256,
                              batch_size: int = 32, device: str | None = None, backend: str = "auto",
                              doc_emb: np.ndarray | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row ``{source, doc_id, benchmark, score}`` per (document, benchmark), plus cost info.

    ``docs``: a pyarrow Table with doc_id, source, text. ``encoder``: a loaded encoder
    (:func:`~mixweave.retrieval.encoders.load_encoder`) or a local model path / "default".
    ``backend``: the runtime a path is loaded with, lossless only
    (:func:`~mixweave.retrieval.encoder_backends.resolve_lossless_backend`; ``auto``: torch on CUDA,
    the fp32 OpenVINO export on CPU, which reads the same vectors to float32 rounding without
    importing torch). ``doc_emb``: the documents' embeddings made earlier with the same encoder and
    ``max_tokens`` (rows aligned with ``docs``); then only the benchmark examples are encoded."""
    from mixweave.retrieval.encoder_backends import resolve_lossless_backend
    from mixweave.retrieval.encoders import embed_texts, encoder_backend, load_encoder

    t0 = time.perf_counter()
    if encoder is None or isinstance(encoder, str):
        model = load_encoder(encoder, device, backend=resolve_lossless_backend(backend, device))
    else:
        model = encoder
    t_load = time.perf_counter() - t0
    texts = [str(t) for t in docs.column("text").to_pylist()]
    sources = [str(s) for s in docs.column("source").to_pylist()]
    ids = [str(i) for i in docs.column("doc_id").to_pylist()]
    names = sorted(examples)
    ex_texts = [example_text(e) for b in names for e in examples[b]]
    t1 = time.perf_counter()
    reused = doc_emb is not None
    ex_emb = embed_texts(model, ex_texts, max_tokens=max_tokens, batch_size=batch_size)
    if reused:
        doc_emb = _checked_doc_emb(doc_emb, len(texts), ex_emb.shape[1])
    else:
        doc_emb = embed_texts(model, texts, max_tokens=max_tokens, batch_size=batch_size)
    t_embed = time.perf_counter() - t1
    rows: list[dict[str, Any]] = []
    lo = 0
    for b in names:
        hi = lo + len(examples[b])
        scores = topk_mean_similarity(doc_emb, ex_emb[lo:hi], top_k)
        lo = hi
        rows.extend({"source": s, "doc_id": d, "benchmark": b, "score": float(x)}
                    for s, d, x in zip(sources, ids, scores))
    n_tokens = _count_tokens(model, texts + ex_texts, max_tokens)
    info = {"encoder": str(encoder) if isinstance(encoder, str) or encoder is None else type(encoder).__name__,
            "encoder_backend": encoder_backend(model), "encoder_params": _param_count(model),
            "top_k": top_k, "max_tokens": max_tokens,
            "n_docs": len(texts), "n_examples": len(ex_texts), "tokens_in": n_tokens,
            "doc_embeddings": "reused" if reused else "encoded",
            "wall_s": {"load": round(t_load, 3), "embed": round(t_embed, 3),
                       "total": round(time.perf_counter() - t0, 3)}}
    return rows, info


def _checked_doc_emb(doc_emb: Any, n_docs: int, dim: int) -> np.ndarray:
    """``doc_emb`` as float32 [n_docs, dim], or InputError when it does not fit the documents."""
    arr = np.asarray(doc_emb, dtype=np.float32)
    if arr.shape != (n_docs, dim) or not np.all(np.isfinite(arr)):
        raise InputError(f"precomputed document embeddings have shape {arr.shape} (or non-finite values), "
                         f"expected ({n_docs}, {dim}) finite values from the same encoder; re-run the embed "
                         "stage or let the utility stage encode the documents")
    return arr


def _param_count(model: Any) -> int | None:
    """The encoder's parameters: the torch module's, or an export's model folder's (safetensors header)."""
    if hasattr(model, "parameters"):
        return int(sum(p.numel() for p in model.parameters()))
    if hasattr(model, "model_dir"):
        from mixweave.retrieval.encoder_backends import encoder_param_count

        return encoder_param_count(model.model_dir)
    return None


def _count_tokens(model: Any, texts: Sequence[str], max_tokens: int) -> int | None:
    """Tokens the encoder actually read (each text capped at its truncation length)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return None
    if hasattr(model, "encode_batch"):  # a PooledEncoder: a `tokenizers.Tokenizer`, cut as embed_texts cuts
        from mixweave.retrieval.encoder_backends import encode_truncated
        from mixweave.retrieval.encoders import truncation_length

        special = int(model.special_tokens)
        encodings = encode_truncated(tok, list(texts), truncation_length(model, max_tokens))
        return int(sum(max(0, len(e.ids) - special) for e in encodings))
    cap = min(max_tokens, int(getattr(model, "max_seq_length", max_tokens)))
    try:
        enc = tok(list(texts), add_special_tokens=False, truncation=True, max_length=cap)
        lengths = [len(ids) for ids in enc["input_ids"]]
    except Exception:  # noqa: BLE001 - counting is best effort; tokenizer APIs vary
        return None
    return int(sum(min(n, cap) for n in lengths))
