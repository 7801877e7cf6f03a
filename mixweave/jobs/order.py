"""Spark partitioned ordering: one task per coarse cluster (the order stage with ``partitions`` > 1).

The driver clusters the documents and orders the clusters
(:func:`mixweave.retrieval.partition.plan_partitions`: seeded spherical k-means on a sample,
nearest-centroid assignment, kNN majority-vote refinement, Algorithm 1 over the centroid graph),
cuts every cluster's kNN rows down to the cluster with local ids
(:func:`~mixweave.retrieval.partition.cluster_blocks`, the ``restrict_knn`` renumbering) and stages them as parquet, one row per cluster. Spark reads the
rows, hash-partitions them by cluster and each task runs Algorithm 1 on its clusters
(:func:`~mixweave.retrieval.partition.walk_cluster`) and returns the paths in global ids; the
driver concatenates them in cluster order. Every cluster's path is a pure function of its row, so
the result does not depend on the number of partitions or executors, and it equals the in-process
:func:`mixweave.retrieval.partition.partitioned_order` element for element.

On a real cluster ``work_dir`` must be on storage the executors can read (HDFS, S3, NFS); by
default it is a temporary folder on the driver, which is right for ``local[*]``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

LOG = logging.getLogger(__name__)

BLOCK_SCHEMA = pa.schema([
    ("cluster", pa.int64()), ("rank", pa.int64()), ("k", pa.int64()),
    ("members", pa.list_(pa.int64())), ("ids", pa.list_(pa.int32())), ("weights", pa.list_(pa.float32())),
])
PATH_SCHEMA = pa.schema([("cluster", pa.int64()), ("rank", pa.int64()), ("path", pa.list_(pa.int64()))])
STAGE_ENTRIES = 1 << 24
"""Rows of kNN entries per staged parquet row group (~128 MB of ids + weights)."""


def _list_array(values: np.ndarray, offsets: np.ndarray, value_type: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, type=value_type))


def stage_cluster_blocks(blocks, cluster_order: np.ndarray, path: Path) -> int:
    """Write one parquet row per non-empty cluster (in label order) to ``path``; returns the
    number of rows. Row groups hold about :data:`STAGE_ENTRIES` kNN entries."""
    import pyarrow.parquet as pq

    k = int(blocks.ids.shape[1])
    rank_of = {int(c): r for r, c in enumerate(cluster_order)}
    clusters = [c for c in range(blocks.offsets.size - 1) if blocks.offsets[c + 1] > blocks.offsets[c]]
    if sorted(rank_of) != clusters:
        raise RuntimeError("internal error: cluster order does not list the non-empty clusters")
    with pq.ParquetWriter(path, BLOCK_SCHEMA) as writer:
        start = 0
        while start < len(clusters):
            stop = start
            lo = int(blocks.offsets[clusters[start]])
            while stop < len(clusters) and (stop == start or (blocks.offsets[clusters[stop] + 1] - lo) * max(k, 1)
                                            <= STAGE_ENTRIES):
                stop += 1
            chunk = clusters[start:stop]
            hi = int(blocks.offsets[chunk[-1] + 1])
            row_offsets = np.array([blocks.offsets[c] for c in chunk] + [hi], np.int64) - lo
            writer.write_table(pa.table({
                "cluster": pa.array(chunk, pa.int64()),
                "rank": pa.array([rank_of[c] for c in chunk], pa.int64()),
                "k": pa.array([k] * len(chunk), pa.int64()),
                "members": _list_array(blocks.members[lo:hi], row_offsets, pa.int64()),
                "ids": _list_array(blocks.ids[lo:hi].reshape(-1), row_offsets * k, pa.int32()),
                "weights": _list_array(blocks.weights[lo:hi].reshape(-1), row_offsets * k, pa.float32()),
            }, schema=BLOCK_SCHEMA))
            start = stop
    return len(clusters)


def _row_values(column: pa.Array, i: int) -> np.ndarray:
    offsets = column.offsets.to_numpy()
    return column.values.to_numpy(zero_copy_only=False)[offsets[i]:offsets[i + 1]]


def _walk_clusters(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow task: Algorithm 1 on each staged cluster row."""
    from mixweave.retrieval.partition import walk_cluster

    for batch in batches:
        out_cluster, out_rank, paths = [], [], []
        cols = {name: batch.column(name) for name in ("cluster", "rank", "k", "members", "ids", "weights")}
        for i in range(batch.num_rows):
            k = int(cols["k"][i].as_py())
            members = _row_values(cols["members"], i)
            ids = _row_values(cols["ids"], i).reshape(members.size, k)
            weights = _row_values(cols["weights"], i).reshape(members.size, k)
            out_cluster.append(cols["cluster"][i].as_py())
            out_rank.append(cols["rank"][i].as_py())
            paths.append(walk_cluster(members, ids, weights))
        if not paths:
            continue
        offsets = np.concatenate([[0], np.cumsum([p.size for p in paths])])
        yield pa.RecordBatch.from_arrays([
            pa.array(out_cluster, pa.int64()), pa.array(out_rank, pa.int64()),
            pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(np.concatenate(paths), pa.int64())),
        ], schema=PATH_SCHEMA)


def run_partitioned_order(spark, X: np.ndarray, I: np.ndarray, D: np.ndarray, *, n_clusters: int, seed: int,
                          k_centroids: int = 10, train_size: int | None = None, niter: int = 20,
                          refine_rounds: int = 2, work_dir: str | Path | None = None,
                          n_tasks: int | None = None) -> tuple[np.ndarray, dict]:
    """Partitioned Algorithm 1 with one Spark task per cluster (module docstring).

    ``X`` float32 [N, d] unit rows, ``I``/``D`` the kNN arrays of the same documents; the other
    arguments as :func:`mixweave.retrieval.partition.partitioned_order`. ``work_dir`` holds the
    staged cluster rows (executor-readable on a cluster); ``n_tasks`` defaults to 4 x the default
    parallelism (at most one per cluster). Returns the order (int64 permutation of range(N), equal
    to ``partitioned_order`` with the same arguments) and an info dict (clusters, sizes, edge
    retention, tasks, timings).
    """
    from mixweave.retrieval.knn import check_knn
    from mixweave.retrieval.partition import cluster_blocks, plan_partitions

    from .ingest import spark_schema

    I, D = check_knn(I, D)
    n = I.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), {"n_docs": 0, "n_clusters": 0}
    t0 = time.perf_counter()
    plan = plan_partitions(X, n_clusters=n_clusters, seed=seed, k_centroids=k_centroids, train_size=train_size,
                           niter=niter, I=I, D=D, refine_rounds=refine_rounds)
    t_plan = time.perf_counter()
    blocks = cluster_blocks(I, D, plan.labels)
    with tempfile.TemporaryDirectory(prefix="mixweave-order-", dir=work_dir) as tmp:
        staged = Path(tmp) / "clusters.parquet"
        n_rows = stage_cluster_blocks(blocks, plan.cluster_order, staged)
        del blocks
        t1 = time.perf_counter()
        tasks = int(n_tasks or max(1, min(n_rows, 4 * spark.sparkContext.defaultParallelism)))
        frame = spark.read.parquet(str(staged)).repartition(tasks, "cluster")
        result = frame.mapInArrow(_walk_clusters, spark_schema(PATH_SCHEMA)).toArrow()
        t2 = time.perf_counter()
    if result.num_rows != n_rows:
        raise RuntimeError(f"partitioned order: {result.num_rows} of {n_rows} clusters came back")
    result = result.sort_by("rank")
    order = np.ascontiguousarray(result.column("path").combine_chunks().flatten().to_numpy(zero_copy_only=False),
                                 dtype=np.int64)
    if order.size != n or not (np.bincount(order, minlength=n) == 1).all():
        raise RuntimeError("internal error: the cluster paths do not form a permutation")
    info = dict(plan.info, plan_s=round(t_plan - t0, 4), stage_s=round(t1 - t_plan, 4), spark_s=round(t2 - t1, 4),
                spark_tasks=tasks)
    LOG.info("partitioned order (spark): N=%d clusters=%d tasks=%d in %.1fs", n, n_rows, tasks, t2 - t0)
    return order, info
