"""The ``order`` stage: the ICP traversal (the paper's Algorithm 1) per source, or per cluster as Spark tasks."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from ...data.artifacts import load_embeddings, load_keep, load_knn
from ...data.manifest import require_manifest, write_json_atomic
from ...data.progress import Progress
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def run_order_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...retrieval import order_metrics, restrict_knn, traverse

    knn_dir, dedup_dir, embed_dir = ctx.artifact("knn"), ctx.artifact("dedup"), ctx.artifact("embed")
    sources = require_manifest(dedup_dir, "dedup")["dedup"]
    per_source, started = {}, time.perf_counter()
    with Progress(len(sources), unit="source", label="order") as progress:
        for source in sorted(sources):
            I, D = load_knn(knn_dir, source)
            keep = load_keep(dedup_dir, source)
            kept_index = np.flatnonzero(keep)
            I_k, D_k = restrict_knn(I, D, keep)
            X_kept = load_embeddings(embed_dir, source)[kept_index] if kept_index.size > 2 else None
            t0 = time.perf_counter()
            n_clusters = min(ctx.config.order.partitions, kept_index.size // 2)
            if n_clusters >= 2:
                from ...jobs.order import run_partitioned_order

                (tmp / f".{source}-partitions").mkdir(parents=True, exist_ok=True)
                path, _ = run_partitioned_order(ctx.spark(), X_kept, I_k, D_k, n_clusters=n_clusters, seed=ctx.config.seed,
                                                work_dir=tmp / f".{source}-partitions")
                shutil.rmtree(tmp / f".{source}-partitions", ignore_errors=True)  # staging only, not an output
            else:
                path = traverse(I_k, D_k) if kept_index.size else np.zeros(0, np.int64)
            seconds = time.perf_counter() - t0
            order = kept_index[path]
            (tmp / source).mkdir(parents=True, exist_ok=True)
            np.save(tmp / source / "order-00000.npy", order.astype(np.int64))
            metrics = {"n_docs": int(kept_index.size)}
            if X_kept is not None:
                metrics.update(order_metrics(X_kept, path, I_k, D_k, seed=ctx.config.seed))
            write_json_atomic(tmp / source / "metrics.json", finite_metrics(metrics))  # no timings: bytes stay reproducible
            metrics["traverse_s"] = round(seconds, 4)
            per_source[source] = finite_metrics({k: metrics.get(k) for k in (
                "n_docs", "traverse_s", "mean_adjacent_cosine", "random_order_mean_adjacent_cosine", "jump_rate",
                "random_order_jump_rate")})
            per_source[source]["files"] = [f"{source}/order-00000.npy"]
            progress.update(1, docs=int(kept_index.size))
    return StageResult(counts={"n_docs": sum(e["n_docs"] for e in per_source.values())},
                       timings={"order_s": round(time.perf_counter() - started, 3)}, extra={"order": per_source})


def finite_metrics(values: dict) -> dict:
    """Metrics ready for strict JSON: NaN and infinities become null."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}


STAGE = Stage("order", ("knn", "dedup", "embed"), 2, lambda c: {"seed": c.seed, "partitions": c.order.partitions},
              run_order_stage, enabled=lambda c: c.order is not None, describe="ICP traversal (Algorithm 1) per source")
