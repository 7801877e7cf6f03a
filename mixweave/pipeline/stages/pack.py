"""The ``pack`` stage: each source's EOS-joined stream in ICP order cut into windows of exactly S tokens.

Sources with at least ``order.distributed_min_docs`` documents are packed by Spark
(:mod:`mixweave.jobs.pack`: texts joined to the order by global index, tokenized per ordered
partition, exact window boundaries from prefix sums of per-partition token counts); smaller ones in
this process. Both write the same files byte for byte (``path`` in the manifest says which ran). The
Spark path's window metrics come from a sample of windows (``sampled: true`` in metrics.json) so
that no whole-source array is loaded. ``order.sink_token`` puts an attention-sink token at the start
of every window on both paths (:mod:`mixweave.retrieval.pack`); its id is in the manifest's windows
section and tokenizer, and the window metrics (computed from spans) never count it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from ...data.artifacts import (
    docs_files_by_source,
    knn_shards,
    load_embeddings,
    load_keep,
    load_knn,
    load_order,
    order_files,
    read_source_texts,
)
from ...data.manifest import require_manifest, write_json_atomic
from ...data.progress import Progress
from ...data.typed import to_plain
from ...data.windows import file_windows, window_file_name, windows_section, write_windows_files
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
    tokenizer = load_tokenizer(ctx.config.tokenizer.path, ctx.config.tokenizer.pattern, o.sink_token)
    sink_id = tokenizer.sink_id  # None without order.sink_token
    if (tokenizer.base_sha256 or tokenizer.sha256) != ingest_manifest["tokenizer"]["sha256"]:
        raise ConfigError("the tokenizer changed since ingest; re-run ingest (mixweave run --force --stage ingest)")
    dtype = np.dtype(tokenizer.info["dtype"])
    per_file = file_windows(o.seq_len + int(o.plus_one), o.pack_file_windows)
    per_source, started = {}, time.perf_counter()
    with Progress(len(sources), unit="source", label="pack") as progress:
        for source in sorted(sources):
            n_source = int(ingest_manifest["sources"].get(source, {}).get("n_docs", 0))
            seed = source_seed(ctx.config.seed, source)
            if n_source >= o.distributed_min_docs:
                from ...jobs.pack import run_spark_pack

                res = run_spark_pack(
                    ctx.spark(), source=source, order_paths=order_files(order_dir, source),
                    docs_files=docs_files_by_source(ingest_dir)[source], out_root=tmp, work_dir=tmp / f".{source}-pack",
                    tokenizer_path=ctx.config.tokenizer.path, tokenizer_pattern=ctx.config.tokenizer.pattern,
                    eos_id=tokenizer.eos_id, dtype=str(dtype), seq_len=o.seq_len, plus_one=o.plus_one,
                    shuffle=o.shuffle, seed=seed, part_docs=o.shard_rows, per_file=per_file, sink_id=sink_id)
                n_windows, files, n_docs = res["n_windows"], res["files"], res["n_docs"]
                dropped, stream_tokens, path = res["dropped_tokens"], res["stream_tokens"], "spark"
                metrics = sampled_window_quality(ctx, source, tmp, n_windows, per_file)
            else:
                order = load_order(order_dir, source)
                texts = read_source_texts(ingest_dir, source)
                tokens = tokenizer.encode_batch([texts[i] for i in order]) if order.size else []
                packed = pack_windows(tokens, np.arange(len(tokens)), seq_len=o.seq_len, eos_id=tokenizer.eos_id,
                                      plus_one=o.plus_one, shuffle=o.shuffle, seed=seed, dtype=dtype, sink_id=sink_id)
                spans = spans_table(packed)
                # spans refer to positions in the ordered list; map them back to the source's document index
                doc_index = pa.array(order[np.asarray(spans.column("doc").to_numpy())], pa.int64()) if len(spans) else pa.array([], pa.int64())
                spans = spans.set_column(spans.schema.get_field_index("doc"), "doc", doc_index)
                files = write_windows_files(tmp, source, packed.windows, spans, per_file=per_file)
                metrics = window_quality(ctx, source, order, packed)
                n_windows, n_docs, dropped, stream_tokens, path = (packed.n_windows, int(order.size), packed.dropped_tokens,
                                                                   packed.stream_tokens, "local")
            (tmp / "metrics").mkdir(exist_ok=True)
            write_json_atomic(tmp / "metrics" / f"{source}.json", metrics)
            per_source[source] = {"n_windows": int(n_windows), "n_tokens": int(n_windows * o.seq_len),
                                  "files": files, "dropped_tokens": int(dropped),
                                  "n_docs": int(n_docs), "stream_tokens": int(stream_tokens),
                                  "window_pairwise_cosine_mean": metrics.get("window_pairwise_cosine_mean"),
                                  "jump_rate": metrics.get("jump_rate"), "path": path}
            progress.update(1, docs=int(n_docs))
    section = windows_section(o.seq_len, o.plus_one, tokenizer.info, per_source)
    return StageResult(
        counts={"n_windows": sum(s["n_windows"] for s in per_source.values()),
                "n_tokens": sum(s["n_tokens"] for s in per_source.values())},
        timings={"pack_s": round(time.perf_counter() - started, 3)}, extra={"windows": section},
    )


SAMPLE_WINDOWS = 512
"""Windows (the first output rows: a random sample when windows are shuffled) behind the Spark path's metrics."""


def _rows_of_blocks(blocks: list[tuple[int, int, object]], idx: np.ndarray) -> list[np.ndarray]:
    """Rows ``idx`` (sorted global indices) gathered from ``(start, stop, array)`` row blocks."""
    out = []
    for start, stop, array in blocks:
        lo, hi = np.searchsorted(idx, [start, stop])
        if hi > lo:
            out.append(np.asarray(array[idx[lo:hi] - start]))
    return out


def sampled_window_quality(ctx: StageContext, source: str, pack_root: Path, n_windows: int, per_file: int) -> dict:
    """Window metrics of the Spark path from the first :data:`SAMPLE_WINDOWS` output windows: their
    spans, the embeddings and kNN rows of their documents only (memory-mapped rows, never a whole
    source). ``jump_rate`` = share of consecutive documents inside sampled windows that are not kNN
    neighbours (the order's jump rate measured where the windows cut it); the stream-order window
    metric needs every window and is left out. Marked ``sampled``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ...retrieval.metrics import edge_lookup, random_pair_cosines, window_metrics

    m = min(int(n_windows), SAMPLE_WINDOWS)
    if m == 0:
        return {"n_windows": int(n_windows), "sampled": True, "sample_windows": 0}
    tables = []
    for index in range(-(-m // per_file)):  # file b holds windows [b * per_file, (b + 1) * per_file)
        t = pq.read_table(pack_root / window_file_name("spans", source, index))
        tables.append(t.filter(pc.less(t.column("window_id"), m)))
    spans = pa.concat_tables(tables)
    sw = spans.column("window_id").to_numpy().astype(np.int64)
    sd_global = spans.column("doc").to_numpy().astype(np.int64)
    docs = np.unique(sd_global)
    sd = np.searchsorted(docs, sd_global)
    manifest = require_manifest(ctx.artifact("embed"), "embed")["embeddings"][source]
    blocks, start = [], 0
    for rel in manifest["files"]:
        arr = np.load(ctx.artifact("embed") / rel, mmap_mode="r")
        blocks.append((start, start + arr.shape[0], arr))
        start += arr.shape[0]
    X = np.concatenate(_rows_of_blocks(blocks, docs)).astype(np.float32)
    shards = knn_shards(ctx.artifact("knn"), source)
    I = np.concatenate(_rows_of_blocks([(s.start, s.stop, np.load(s.I, mmap_mode="r")) for s in shards], docs))
    D = np.concatenate(_rows_of_blocks([(s.start, s.stop, np.load(s.D, mmap_mode="r")) for s in shards], docs))
    pos = np.searchsorted(docs, np.maximum(I, 0)).clip(0, docs.size - 1)
    inside = (I >= 0) & (docs[pos] == I)  # neighbours among the sampled documents, renumbered
    I_local = np.where(inside, pos, -1).astype(np.int64)
    D_local = np.where(inside, D, 0).astype(np.float32)
    lookup = edge_lookup(I_local, D_local)
    pairs = random_pair_cosines(X, seed=ctx.config.seed)
    cos_floor = float(np.quantile(pairs, 0.9)) if pairs.size else 0.0
    metrics = window_metrics(X, sw, sd, np.arange(m), lookup, cos_floor)
    metrics.pop("adjacent_window_centroid_cosine_stream", None)
    same = sw[1:] == sw[:-1]
    is_edge, _ = lookup(sd[:-1][same], sd[1:][same])
    metrics.update({"n_windows": int(n_windows), "sampled": True, "sample_windows": m, "sample_docs": int(docs.size),
                    "jump_rate": float((~is_edge).mean()) if is_edge.size else 0.0})
    return finite_metrics(metrics)


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


def _pack_settings(c) -> dict:
    """The settings the pack depends on (the sink only when set, so packs without one keep their fingerprint)."""
    settings = {"seq_len": c.order.seq_len, "plus_one": c.order.plus_one, "shuffle": c.order.shuffle,
                "seed": c.seed, "tokenizer": to_plain(c.tokenizer), "file_windows": c.order.pack_file_windows}
    if c.order.sink_token is not None:
        settings["sink_token"] = c.order.sink_token
    return settings


STAGE = Stage("pack", ("ingest", "order", "knn", "dedup", "embed"), 1, _pack_settings,
              run_pack_stage, enabled=lambda c: c.order is not None, describe="EOS-joined stream cut into exact windows")
