"""In-Context Pretraining stages: embed -> knn -> dedup -> order -> pack, per source.

Ordering is per source (mixing happens after packing, DESIGN.md). ``embed`` is a Spark job over
fixed row-group units; ``knn``, ``dedup``, ``order`` and ``pack`` call the pure cores of
:mod:`mixweave.retrieval` per source on the driver (FAISS and the numba traversal use every core
there). Departure from DESIGN's scaling table, stated here and in the README: the per-cluster
distributed traversal and executor-side IVF search are not wired yet; a source must fit the
driver's memory as float32 [N, 384] plus its kNN arrays (~1.7 KB per document at k=20).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import to_plain
from ..data.manifest import artifact_files, require_manifest, write_json_atomic
from ..data.progress import Progress
from ..data.windows import windows_section, write_windows_files
from ..errors import ConfigError
from .runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def docs_files_by_source(ingest_dir: Path) -> dict[str, list[Path]]:
    manifest = require_manifest(ingest_dir, "ingest")
    files = {p.as_posix(): p for p in artifact_files(ingest_dir, ".parquet")}
    out: dict[str, list[Path]] = {}
    for name, info in manifest["sources"].items():
        out[name] = [files[(ingest_dir / rel).resolve().as_posix()] for rel in info["files"]]
    return out


def load_embeddings(embed_dir: Path, source: str) -> np.ndarray:
    manifest = require_manifest(embed_dir, "embed")
    info = manifest["embeddings"][source]
    blocks = [np.load(embed_dir / rel) for rel in info["files"]]
    if not blocks:
        return np.zeros((0, int(info["dim"])), np.float32)
    return np.concatenate(blocks).astype(np.float32, copy=False)


def read_source_texts(ingest_dir: Path, source: str) -> list[str]:
    texts: list[str] = []
    for path in docs_files_by_source(ingest_dir)[source]:
        texts.extend(pq.read_table(path, columns=["text"]).column("text").to_pylist())
    return texts


# ------------------------------------------------------------------------------------------ embed
def run_embed_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ..jobs.embed import plan_units, run_embed

    o = ctx.config.order
    ingest_dir = ctx.artifact("ingest")
    files = docs_files_by_source(ingest_dir)
    units = plan_units(files, ingest_dir)
    started = time.perf_counter()
    run_embed(ctx.spark(), units=units, out_root=tmp, encoder=o.encoder, max_tokens=o.max_tokens,
                     batch_size=o.batch_size, torch_threads=o.torch_threads, device=o.device)
    seconds = time.perf_counter() - started
    per_source = {}
    for source in sorted(files):
        mine = [u["out_file"] for u in units if u["source"] == source]
        rows = sum(np.load(tmp / f, mmap_mode="r").shape[0] for f in mine)
        dim = int(np.load(tmp / mine[0], mmap_mode="r").shape[1]) if mine else 0
        per_source[source] = {"files": mine, "n_docs": int(rows), "dim": dim}
    n_docs = sum(s["n_docs"] for s in per_source.values())
    return StageResult(
        counts={"n_docs": n_docs, "units": len(units)},
        timings={"embed_s": round(seconds, 3), "docs_per_s": round(n_docs / seconds, 1) if seconds else None},
        extra={"embeddings": per_source, "encoder": o.encoder},
    )


# -------------------------------------------------------------------------------------------- knn
def run_knn_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ..retrieval import knn
    from ..retrieval.knn import choose_method, recall_at_k

    o = ctx.config.order
    embed_dir = ctx.artifact("embed")
    sources = require_manifest(embed_dir, "embed")["embeddings"]
    per_source, started = {}, time.perf_counter()
    with Progress(len(sources), unit="source", label="knn") as progress:
        for source in sorted(sources):
            X = load_embeddings(embed_dir, source)
            n = X.shape[0]
            k = max(1, min(o.k, n - 1))
            if n < 2:
                I, D = np.full((n, 1), -1, np.int64), np.full((n, 1), -np.inf, np.float32)
                method = "none"
            else:
                method = choose_method(n, o.knn_method)[0]
                I, D = knn(X, k, method=o.knn_method, seed=ctx.config.seed)
            entry = {"n_docs": n, "k": int(I.shape[1]), "method": method}
            if method not in ("flat", "torch", "none"):
                sample = np.random.default_rng(ctx.config.seed).choice(n, size=min(n, 1000), replace=False)
                exact = (X[sample] @ X.T)
                exact[np.arange(sample.size), sample] = -np.inf
                I_exact = np.argsort(-exact, axis=1, kind="stable")[:, : I.shape[1]]
                entry["recall_at_k"] = round(recall_at_k(I[sample], I_exact), 4)
            (tmp / source).mkdir(parents=True, exist_ok=True)
            np.save(tmp / source / "I.npy", I)
            np.save(tmp / source / "D.npy", D)
            per_source[source] = entry
            progress.update(1, docs=n)
    return StageResult(counts={"n_docs": sum(e["n_docs"] for e in per_source.values())},
                       timings={"knn_s": round(time.perf_counter() - started, 3)}, extra={"knn": per_source})


def load_knn(knn_dir: Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    require_manifest(knn_dir, "knn")
    return np.load(knn_dir / source / "I.npy"), np.load(knn_dir / source / "D.npy")


# ------------------------------------------------------------------------------------------ dedup
def run_dedup_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ..retrieval import semantic_dedup

    o = ctx.config.order
    knn_dir = ctx.artifact("knn")
    ingest_dir = ctx.artifact("ingest")
    sources = require_manifest(knn_dir, "knn")["knn"]
    docs_files = docs_files_by_source(ingest_dir)
    per_source, drops = {}, {}
    with Progress(len(sources), unit="source", label="dedup") as progress:
        for source in sorted(sources):
            I, D = load_knn(knn_dir, source)
            result = semantic_dedup(I, D, threshold=o.dedup_cosine)
            ids = []
            for path in docs_files[source]:
                ids.extend(pq.read_table(path, columns=["doc_id"]).column("doc_id").to_pylist())
            ids_arr = np.asarray(ids, dtype=object)
            (tmp / source).mkdir(parents=True, exist_ok=True)
            np.save(tmp / source / "keep.npy", result.keep)
            pairs = result.pairs.reshape(-1, 2) if result.pairs.size else np.zeros((0, 2), np.int64)
            pq.write_table(pa.table({
                "a": pa.array(pairs[:, 0], pa.int64()), "b": pa.array(pairs[:, 1], pa.int64()),
                "doc_id_a": pa.array(ids_arr[pairs[:, 0]].tolist() if len(pairs) else [], pa.string()),
                "doc_id_b": pa.array(ids_arr[pairs[:, 1]].tolist() if len(pairs) else [], pa.string()),
                "cosine": pa.array(np.asarray(result.pair_cosine, np.float32).reshape(-1)),
            }), tmp / source / "pairs.parquet", compression="zstd")
            removed = int((~result.keep).sum())
            per_source[source] = {"n_docs": int(result.keep.size), "kept": int(result.keep.sum()), "removed": removed,
                                  "pairs": int(len(pairs))}
            drops[source] = {"semantic_duplicate": removed}
            progress.update(1, docs=int(result.keep.size))
    return StageResult(
        counts={k: sum(e[k] for e in per_source.values()) for k in ("n_docs", "kept", "removed", "pairs")},
        drops=drops, extra={"dedup": per_source, "threshold": o.dedup_cosine},
    )


# ------------------------------------------------------------------------------------------ order
def run_order_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ..retrieval import order_metrics, restrict_knn, traverse

    knn_dir, dedup_dir, embed_dir = ctx.artifact("knn"), ctx.artifact("dedup"), ctx.artifact("embed")
    sources = require_manifest(dedup_dir, "dedup")["dedup"]
    per_source, started = {}, time.perf_counter()
    with Progress(len(sources), unit="source", label="order") as progress:
        for source in sorted(sources):
            I, D = load_knn(knn_dir, source)
            keep = np.load(dedup_dir / source / "keep.npy")
            kept_index = np.flatnonzero(keep)
            I_k, D_k = restrict_knn(I, D, keep)
            X_kept = load_embeddings(embed_dir, source)[kept_index] if kept_index.size > 2 else None
            t0 = time.perf_counter()
            n_clusters = min(ctx.config.order.partitions, kept_index.size // 2)
            if n_clusters >= 2:
                from ..jobs.order import run_partitioned_order

                (tmp / f".{source}-partitions").mkdir(parents=True, exist_ok=True)
                path, _ = run_partitioned_order(ctx.spark(), X_kept, I_k, D_k, n_clusters=n_clusters, seed=ctx.config.seed,
                                                work_dir=tmp / f".{source}-partitions")
                shutil.rmtree(tmp / f".{source}-partitions", ignore_errors=True)  # staging only, not an output
            else:
                path = traverse(I_k, D_k) if kept_index.size else np.zeros(0, np.int64)
            seconds = time.perf_counter() - t0
            order = kept_index[path]
            (tmp / source).mkdir(parents=True, exist_ok=True)
            np.save(tmp / source / "order.npy", order.astype(np.int64))
            metrics = {"n_docs": int(kept_index.size)}
            if X_kept is not None:
                metrics.update(order_metrics(X_kept, path, I_k, D_k, seed=ctx.config.seed))
            write_json_atomic(tmp / source / "metrics.json", _finite(metrics))  # no timings: bytes stay reproducible
            metrics["traverse_s"] = round(seconds, 4)
            per_source[source] = _finite({k: metrics.get(k) for k in (
                "n_docs", "traverse_s", "mean_adjacent_cosine", "random_order_mean_adjacent_cosine", "jump_rate",
                "random_order_jump_rate")})
            progress.update(1, docs=int(kept_index.size))
    return StageResult(counts={"n_docs": sum(e["n_docs"] for e in per_source.values())},
                       timings={"order_s": round(time.perf_counter() - started, 3)}, extra={"order": per_source})


def _finite(values: dict) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}


# ------------------------------------------------------------------------------------------- pack
def run_pack_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ..data.tokenizer import load_tokenizer
    from ..retrieval import pack_windows, spans_table
    from ..retrieval.pack import source_seed

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
            order = np.load(order_dir / source / "order.npy")
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

    from ..retrieval import order_metrics, restrict_knn

    keep = np.load(ctx.artifact("dedup") / source / "keep.npy")
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
    return _finite(metrics)


def icp_stages() -> list[Stage]:
    enabled = lambda c: c.order is not None  # noqa: E731
    order_cfg = lambda c: to_plain(c.order)  # noqa: E731
    return [
        Stage("embed", ("ingest",), 1,
              lambda c: {k: v for k, v in order_cfg(c).items() if k in ("encoder", "max_tokens", "batch_size", "torch_threads")},
              run_embed_stage, enabled=enabled, describe="sentence embeddings (Spark)"),
        Stage("knn", ("embed",), 1, lambda c: {"k": c.order.k, "method": c.order.knn_method, "seed": c.seed},
              run_knn_stage, enabled=enabled, describe="FAISS kNN per source"),
        Stage("dedup", ("knn", "ingest"), 1, lambda c: {"dedup_cosine": c.order.dedup_cosine}, run_dedup_stage,
              enabled=enabled, describe="semantic near-duplicate removal"),
        Stage("order", ("knn", "dedup", "embed"), 1, lambda c: {"seed": c.seed, "partitions": c.order.partitions},
              run_order_stage, enabled=enabled,
              describe="ICP traversal (Algorithm 1) per source"),
        Stage("pack", ("ingest", "order", "knn", "dedup", "embed"), 1,
              lambda c: {"seq_len": c.order.seq_len, "plus_one": c.order.plus_one, "shuffle": c.order.shuffle,
                         "seed": c.seed, "tokenizer": to_plain(c.tokenizer)},
              run_pack_stage, enabled=enabled, describe="EOS-joined stream cut into exact windows"),
    ]
