"""The ``order`` stage: the ICP traversal (the paper's Algorithm 1) per source, in process or as
Spark tasks over the shards.

Per source (its kept documents after dedup), one of:

* **local, global** (``order.partitions`` 0 or 1 on a source below ``order.distributed_min_docs``):
  Algorithm 1 over the whole kNN graph, one file ``order-00000.npy``;
* **local, partitioned** (``partitions`` >= 2, small source): ``retrieval.partition.partitioned_walk``
  in process, one file per cluster in walk order;
* **spark** (at least ``distributed_min_docs`` documents, ``partitions`` >= 2, or 0: then about
  one cluster per ``jobs.order.DOCS_PER_CLUSTER`` kept documents, logged and recorded as
  ``clusters_auto``): ``jobs.order.run_sharded_order`` reads the embed blocks and the kNN and keep
  shards in tasks; the driver holds metadata only. Same files as the local partitioned path for
  the same clusters (element for element); its metrics come from partial sums and samples
  (``metrics_sampled``).

The number of clusters is ``min(clusters, kept // 2)``; below 2 the global walk runs.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from ...data.artifacts import knn_shards, load_embeddings, load_keep, load_knn
from ...data.manifest import require_manifest, write_json_atomic
from ...data.progress import Progress
from ..runner import Stage, StageContext, StageResult, each_source

LOG = logging.getLogger(__name__)


def plan_clusters(n_docs: int, kept: int, partitions: int, distributed_min_docs: int) -> tuple[int, bool, bool]:
    """(clusters, distributed, auto) for a source of ``n_docs`` documents of which ``kept`` survive
    dedup: the distributed path for ``n_docs >= distributed_min_docs`` unless ``partitions`` is 1;
    ``partitions`` 0 there means about one cluster per ``DOCS_PER_CLUSTER`` kept documents."""
    from ...jobs.order import DOCS_PER_CLUSTER

    large = n_docs >= distributed_min_docs and partitions != 1
    auto = large and partitions == 0
    wanted = max(2, math.ceil(kept / DOCS_PER_CLUSTER)) if auto else partitions
    clusters = min(wanted, kept // 2)
    return clusters, large and clusters >= 2, auto


def run_order_stage(ctx: StageContext, tmp: Path) -> StageResult:
    o = ctx.config.order
    knn_dir, dedup_dir, embed_dir = ctx.artifact("knn"), ctx.artifact("dedup"), ctx.artifact("embed")
    sources = require_manifest(dedup_dir, "dedup")["dedup"]
    started = time.perf_counter()
    plans = {}
    for source in sorted(sources):
        n_docs = knn_shards(knn_dir, source)[-1].stop
        kept = sources[source].get("kept")
        if kept is None:  # older manifests: count shard by shard
            kept = sum(int(np.load(dedup_dir / s["keep"], mmap_mode="r").sum()) for s in sources[source]["shards"])
        plans[source] = (int(kept), *plan_clusters(n_docs, int(kept), o.partitions, o.distributed_min_docs))

    def one(source: str) -> dict:
        kept, n_clusters, distributed, auto = plans[source]
        (tmp / source).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if distributed:
            from ...jobs.order import run_sharded_order

            if auto:
                LOG.info("order %s: %d documents, order.partitions 0: %d clusters (about one per %s)",
                         source, kept, n_clusters, "50,000")
            info = run_sharded_order(ctx.spark(), embed_dir=embed_dir, knn_dir=knn_dir, dedup_dir=dedup_dir,
                                     source=source, out_dir=tmp / source, n_clusters=n_clusters,
                                     seed=ctx.config.seed, work_dir=tmp, max_cluster_docs=o.max_cluster_docs)
            files, metrics = info["files"], dict(info["metrics"])
            extra = {"path": "spark", "n_clusters": info["n_clusters"], "clusters_auto": auto,
                     "edge_retention": info["edge_retention"]}
        else:
            files, metrics, extra = _local_order(embed_dir, knn_dir, dedup_dir, source, n_clusters, ctx.config.seed,
                                                 tmp / source, max_cluster_docs=o.max_cluster_docs)
        seconds = time.perf_counter() - t0
        write_json_atomic(tmp / source / "metrics.json", finite_metrics(metrics))  # no timings: bytes stay reproducible
        metrics["traverse_s"] = round(seconds, 4)
        entry = finite_metrics({k: metrics.get(k) for k in (
            "n_docs", "traverse_s", "mean_adjacent_cosine", "random_order_mean_adjacent_cosine", "jump_rate",
            "random_order_jump_rate")})
        entry.update(extra, metrics_sampled=bool(metrics.get("metrics_sampled", False)))
        entry["files"] = [f"{source}/{name}" for name in files]
        return entry

    with Progress(len(sources), unit="source", label="order") as progress:
        per_source, at_once = each_source(ctx, sources, one, on_spark=lambda s: plans[s][2],
                                          done=lambda s, entry: progress.update(1, docs=int(entry["n_docs"])))
    return StageResult(counts={"n_docs": sum(e["n_docs"] for e in per_source.values())},
                       timings={"order_s": round(time.perf_counter() - started, 3), "spark_sources_at_once": at_once},
                       extra={"order": per_source})


def _local_order(embed_dir: Path, knn_dir: Path, dedup_dir: Path, source: str, n_clusters: int, seed: int,
                 out: Path, max_cluster_docs: int = 0) -> tuple[list[str], dict, dict]:
    """The in-process path: the whole source on the driver (small sources)."""
    from ...retrieval import order_metrics, restrict_knn, traverse
    from ...retrieval.partition import partitioned_walk

    I, D = load_knn(knn_dir, source)
    keep = load_keep(dedup_dir, source)
    kept_index = np.flatnonzero(keep)
    I_k, D_k = restrict_knn(I, D, keep)
    del I, D
    X_kept = load_embeddings(embed_dir, source)[kept_index] if kept_index.size > 2 else None
    extra: dict = {"path": "local"}
    if n_clusters >= 2:
        path, plan, info = partitioned_walk(X_kept, I_k, D_k, n_clusters=n_clusters, seed=seed,
                                            max_cluster_docs=max_cluster_docs)
        sizes = np.bincount(plan.labels)[plan.cluster_order]
        extra.update(n_clusters=int(sizes.size), edge_retention=info["edge_retention"])
    else:
        path = traverse(I_k, D_k) if kept_index.size else np.zeros(0, np.int64)
        sizes = np.array([path.size])
    order = kept_index[path].astype(np.int64)
    files = []
    for rank, (lo, hi) in enumerate(zip(np.r_[0, np.cumsum(sizes)[:-1]], np.cumsum(sizes))):
        files.append(f"order-{rank:05d}.npy")
        np.save(out / files[-1], order[lo:hi])
    metrics = {"n_docs": int(kept_index.size)}
    if X_kept is not None:
        metrics.update(order_metrics(X_kept, path, I_k, D_k, seed=seed))
    return files, metrics, extra


def finite_metrics(values: dict) -> dict:
    """Metrics ready for strict JSON: NaN and infinities become null."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}


STAGE = Stage("order", ("knn", "dedup", "embed"), 2,
              lambda c: {"seed": c.seed, "partitions": c.order.partitions,
                         "distributed_min_docs": c.order.distributed_min_docs,
                         **({"max_cluster_docs": c.order.max_cluster_docs} if c.order.max_cluster_docs else {})},
              run_order_stage, enabled=lambda c: c.order is not None, describe="ICP traversal (Algorithm 1) per source")
