"""The ``knn`` stage: k nearest neighbours per source, written as I/D shards of global index.

A source with at least ``order.distributed_min_docs`` documents runs as a Spark job over its embed
blocks (``mixweave.jobs.knn``): the exact blocked join for flat/torch, and for auto up to
``retrieval.knn.EXACT_MAX_N`` documents; the offline-IVF join otherwise. The driver never loads
its vectors or kNN arrays. Smaller sources run FAISS in this process. Both write the same shards;
the manifest entry records ``path`` (spark|local), the method, nlist/nprobe, and recall@k on a
sample for approximate kNN. On the same data the exact join gives the same I as local flat and D
within 1e-6 (it rescores with float64 products; FAISS sums in float32).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ...data.artifacts import load_embeddings, shard_bounds, shard_file
from ...data.manifest import require_manifest
from ...data.progress import Progress
from ..runner import Stage, StageContext, StageResult, each_source

LOG = logging.getLogger(__name__)


def run_knn_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...data.artifacts import Blocks

    o = ctx.config.order
    embed_dir = ctx.artifact("embed")
    sources = require_manifest(embed_dir, "embed")["embeddings"]
    blocks = {s: Blocks.from_files([embed_dir / rel for rel in sources[s]["files"]]) for s in sources}
    started = time.perf_counter()

    def on_spark(source: str) -> bool:
        return blocks[source].n >= max(2, o.distributed_min_docs)

    def one(source: str) -> dict:
        if on_spark(source):
            return _knn_spark(ctx, tmp, source, blocks[source])
        return _knn_local(ctx, tmp, source, load_embeddings(embed_dir, source))

    with Progress(len(sources), unit="source", label="knn") as progress:
        per_source, at_once = each_source(ctx, sources, one, on_spark=on_spark,
                                          done=lambda s, entry: progress.update(1, docs=entry["n_docs"]))
    return StageResult(counts={"n_docs": sum(e["n_docs"] for e in per_source.values())},
                       timings={"knn_s": round(time.perf_counter() - started, 3), "spark_sources_at_once": at_once},
                       extra={"knn": per_source})


def _knn_local(ctx: StageContext, tmp: Path, source: str, X: np.ndarray) -> dict:
    """FAISS in this process (``retrieval.knn``), then cut into shards."""
    from ...retrieval import knn
    from ...retrieval.knn import choose_method, sampled_recall_at_k

    o = ctx.config.order
    n = X.shape[0]
    k = max(1, min(o.k, n - 1))
    if n < 2:
        I, D = np.full((n, 1), -1, np.int64), np.full((n, 1), -np.inf, np.float32)
        method = "none"
    else:
        method = choose_method(n, o.knn_method)[0]
        I, D = knn(X, k, method=o.knn_method, seed=ctx.config.seed, nlist=o.ivf_nlist or None,
                   nprobe=o.ivf_nprobe or None)
    entry = {"n_docs": n, "k": int(I.shape[1]), "method": method, "path": "local"}
    if method not in ("flat", "torch", "none") and o.knn_recall_sample > 0:
        entry["recall_at_k"] = round(sampled_recall_at_k(X, I, sample_size=o.knn_recall_sample,
                                                         seed=ctx.config.seed), 4)
    entry["shards"] = write_knn_shards(tmp, source, I, D, o.shard_rows)
    return entry


def _knn_spark(ctx: StageContext, tmp: Path, source: str, blocks) -> dict:
    """The Spark join (``jobs.knn.run_knn_join``): exact when the method resolves to flat/torch,
    the offline-IVF join otherwise (ivf, ivfpq and hnsw all take the IVF join on this path)."""
    from ...jobs.knn import run_knn_join
    from ...retrieval.knn import EXACT_MAX_N

    o = ctx.config.order
    n = blocks.n
    k = max(1, min(o.k, n - 1))
    # auto: exact up to the CPU threshold (the join runs on Spark's CPUs, whatever GPU the driver has)
    exact = o.knn_method in ("flat", "torch") or (o.knn_method == "auto" and n <= EXACT_MAX_N)
    info = run_knn_join(ctx.spark(), blocks, tmp / source, k=k, shard_rows=o.shard_rows,
                        mode="exact" if exact else "ivf", nlist=o.ivf_nlist, nprobe=o.ivf_nprobe, seed=ctx.config.seed,
                        recall_sample=0 if exact else o.knn_recall_sample)
    entry = {"n_docs": n, "k": k, "method": "exact_join" if exact else "ivf_join", "path": "spark",
             "nlist": info["nlist"], "nprobe": info["nprobe"]}
    if "recall_at_k" in info:
        entry["recall_at_k"] = round(info["recall_at_k"], 4)
    entry["timings"] = {key: info[key] for key in ("train_s", "join_s", "recall_s")}
    entry["shards"] = info["shards"]
    return entry


def write_knn_shards(root: Path, source: str, I: np.ndarray, D: np.ndarray, shard_rows: int) -> list[dict]:
    """``I``/``D`` cut into the source's shards (``data.artifacts.shard_bounds``) under
    ``root/source``; returns the manifest's shard list (paths relative to ``root``)."""
    (root / source).mkdir(parents=True, exist_ok=True)
    shards = []
    for index, (start, stop) in enumerate(shard_bounds(I.shape[0], shard_rows)):
        names = {key: f"{source}/{shard_file(key, index)}" for key in ("I", "D")}
        np.save(root / names["I"], np.ascontiguousarray(I[start:stop]))
        np.save(root / names["D"], np.ascontiguousarray(D[start:stop]))
        shards.append({"start": start, "stop": stop, **names})
    return shards


STAGE = Stage("knn", ("embed",), 4,  # 4: the IVF k-means sample capped at TRAIN_MAX_ROWS (other lists above ~65k docs)
              lambda c: {"k": c.order.k, "method": c.order.knn_method, "seed": c.seed, "shard_rows": c.order.shard_rows,
                         "ivf_nlist": c.order.ivf_nlist, "ivf_nprobe": c.order.ivf_nprobe,
                         "recall_sample": c.order.knn_recall_sample,
                         "distributed_min_docs": c.order.distributed_min_docs},
              run_knn_stage, enabled=lambda c: c.order is not None,
              describe="kNN per source (FAISS in process, or the Spark offline-IVF join)")
