"""The ``pack`` stage: each source's EOS-joined stream in ICP order cut into windows of exactly S tokens."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from ...data.artifacts import load_embeddings, load_keep, load_knn, load_order, read_source_texts
from ...data.manifest import require_manifest, write_json_atomic
from ...data.progress import Progress
from ...data.typed import to_plain
from ...data.windows import windows_section, write_windows_files
from ...errors import ConfigError
from ..runner import Stage, StageContext, StageResult
from .order import finite_metrics

LOG = logging.getLogger(__name__)


def run_pack_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...data.tokenizer import load_tokenizer
    from ...retrieval import pack_windows, spans_table
    from ...retrieval.pack import source_seed

    o = ctx.config.order
    ingest_dir, order_dir = ctx.artifact("ingest"), ctx.artifact("order")
    ingest_manifest = require_manifest(ingest_dir, "ingest")
    sources = require_manifest(order_dir, "order")["order"]
    tokenizer = load_tokenizer(ctx.config.tokenizer.path, ctx.config.tokenizer.pattern)
    if tokenizer.info["sha256"] != ingest_manifest["tokenizer"]["sha256"]:
        raise ConfigError("the tokenizer changed since ingest; re-run ingest (mixweave run --force --stage ingest)")
    dtype = np.dtype(tokenizer.info["dtype"])
    per_source, started = {}, time.perf_counter()
    with Progress(len(sources), unit="source", label="pack") as progress:
        for source in sorted(sources):
            order = load_order(order_dir, source)
            texts = read_source_texts(ingest_dir, source)
            tokens = tokenizer.encode_batch([texts[i] for i in order]) if order.size else []
            packed = pack_windows(tokens, np.arange(len(tokens)), seq_len=o.seq_len, eos_id=tokenizer.eos_id,
                                  plus_one=o.plus_one, shuffle=o.shuffle, seed=source_seed(ctx.config.seed, source), dtype=dtype)
            spans = spans_table(packed)
            # spans refer to positions in the ordered list; map them back to the source's document index
            doc_index = pa.array(order[np.asarray(spans.column("doc").to_numpy())], pa.int64()) if len(spans) else pa.array([], pa.int64())
            spans = spans.set_column(spans.schema.get_field_index("doc"), "doc", doc_index)
            files = write_windows_files(tmp, source, packed.windows, spans)
            metrics = window_quality(ctx, source, order, packed)
            (tmp / "metrics").mkdir(exist_ok=True)
            write_json_atomic(tmp / "metrics" / f"{source}.json", metrics)
            per_source[source] = {"n_windows": packed.n_windows, "n_tokens": int(packed.n_windows * o.seq_len),
                                  "files": files, "dropped_tokens": int(packed.dropped_tokens),
                                  "n_docs": int(order.size), "stream_tokens": int(packed.stream_tokens),
                                  "window_pairwise_cosine_mean": metrics.get("window_pairwise_cosine_mean"),
                                  "jump_rate": metrics.get("jump_rate")}
            progress.update(1, docs=int(order.size))
    section = windows_section(o.seq_len, o.plus_one, tokenizer.info, per_source)
    return StageResult(
        counts={"n_windows": sum(s["n_windows"] for s in per_source.values()),
                "n_tokens": sum(s["n_tokens"] for s in per_source.values())},
        timings={"pack_s": round(time.perf_counter() - started, 3)}, extra={"windows": section},
    )


def window_quality(ctx: StageContext, source: str, order: np.ndarray, packed) -> dict:
    """Order metrics including the window ones (coherence inside windows, diversity between
    adjacent windows) for one source; ``order`` holds source doc indices, ``packed`` was built
    from the ordered documents (span_doc = position in ``order``)."""
    import dataclasses

    from ...retrieval import order_metrics, restrict_knn

    keep = load_keep(ctx.artifact("dedup"), source)
    kept_index = np.flatnonzero(keep)
    if kept_index.size < 3 or packed.n_windows == 0:
        return {"n_docs": int(kept_index.size), "n_windows": packed.n_windows}
    I, D = load_knn(ctx.artifact("knn"), source)
    I_k, D_k = restrict_knn(I, D, keep)
    X = load_embeddings(ctx.artifact("embed"), source)[kept_index]
    path = np.searchsorted(kept_index, order)  # order in the kept numbering
    remapped = dataclasses.replace(packed, span_doc=path[packed.span_doc])
    metrics = order_metrics(X, path, I_k, D_k, packed=remapped, seed=ctx.config.seed)
    metrics["n_windows"] = packed.n_windows
    return finite_metrics(metrics)


STAGE = Stage("pack", ("ingest", "order", "knn", "dedup", "embed"), 1,
              lambda c: {"seq_len": c.order.seq_len, "plus_one": c.order.plus_one, "shuffle": c.order.shuffle,
                         "seed": c.seed, "tokenizer": to_plain(c.tokenizer)},
              run_pack_stage, enabled=lambda c: c.order is not None, describe="EOS-joined stream cut into exact windows")
