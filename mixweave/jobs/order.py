"""Spark partitioned ordering: one task per coarse cluster (the order stage's distributed path).

:func:`run_sharded_order` is the stage's path for large sources: it reads a source's embed blocks
and its kNN and keep shards in Spark tasks and writes one order file per cluster; the driver holds
metadata only (shard and cluster lists, the centroids, the k-means sample of 128 rows per
cluster, C-1 cluster-boundary pairs and 20,000 random pairs for the metrics), never X, I, D or an
array per document. Labels live in parquet under a work folder between the Spark steps.

:func:`run_partitioned_order` is the older driver-array form (the driver plans the clusters with
:func:`mixweave.retrieval.partition.plan_partitions` on X, I, D, cuts and stages the blocks as
parquet, tasks walk them); bench/icp.py times it. Both equal the in-process
:func:`mixweave.retrieval.partition.partitioned_order` element for element, whatever the number of
partitions or executors: every cluster's path is a pure function of its block, assignment and
votes are pure functions of a document's row, centroid sums are exact integers.

On a real cluster ``work_dir`` and the stage folders must be on storage the executors can read
(HDFS, S3, NFS); by default the work folder is a temporary folder on the driver, which is right
for ``local[*]``.
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


# ---------------------------------------------------------------------------------------------
# The sharded path: the driver never holds X, I, D or any per-document array.
# ---------------------------------------------------------------------------------------------

SHARD_SCHEMA = pa.schema([("shard", pa.int64()), ("start", pa.int64()), ("stop", pa.int64()),
                          ("I", pa.string()), ("D", pa.string()), ("keep", pa.string())])
LABEL_SCHEMA = pa.schema([("u", pa.int64()), ("label", pa.int64())])
EDGE_SCHEMA = pa.schema([("u", pa.int64()), ("j", pa.int32()), ("v", pa.int64()), ("w", pa.float32())])
CLUSTER_SCHEMA = pa.schema([
    ("cluster", pa.int64()), ("size", pa.int64()), ("first", pa.int64()), ("last", pa.int64()),
    ("sums", pa.list_(pa.int64())),
    ("adj_sum", pa.float64()), ("adj_bins", pa.list_(pa.int64())), ("adj_counts", pa.list_(pa.int64())),
    ("edge_w_sum", pa.float64()), ("jumps", pa.int64()),
    ("seg_head", pa.int64()), ("seg_tail", pa.int64()), ("seg_lengths", pa.list_(pa.int64())),
    ("seg_counts", pa.list_(pa.int64())),
    ("nn_sum", pa.float64()), ("nn_count", pa.int64()), ("in_cluster", pa.int64()), ("entries", pa.int64()),
])
ADJ_BINS = 2000
"""Histogram bins over [-1, 1] for the adjacent-cosine quantiles of the sharded path (width 0.001)."""
RANDOM_PAIRS = 20_000
DOCS_PER_CLUSTER = 50_000
"""Cluster count of a distributed source whose ``order.partitions`` is 0: about one per this many documents."""


def _task_error(exc: Exception) -> Exception:
    """A task's InputError/ConfigError as one line (Spark wraps it in a Java/Python traceback)."""
    import re

    from ..errors import InputError

    found = re.search(r"(?:InputError|ConfigError): ([^\n]+)", str(exc))
    return InputError(found.group(1).strip()) if found else exc


class EmbedRows:
    """Reads rows of one source's embedding blocks by global document index (metadata only: the
    blocks' paths and row ranges, read from each ``.npy`` header; rows come from memory maps)."""

    def __init__(self, paths: list[str], starts: list[int], stops: list[int], dim: int):
        self.paths, self.starts, self.stops, self.dim = list(paths), np.asarray(starts, np.int64), \
            np.asarray(stops, np.int64), int(dim)

    @classmethod
    def of(cls, embed_dir: Path, source: str) -> "EmbedRows":
        from ..data.manifest import require_manifest

        info = require_manifest(embed_dir, "embed")["embeddings"][source]
        paths, starts, stops, at = [], [], [], 0
        for rel in info["files"]:
            path = (Path(embed_dir) / rel).resolve()
            rows = int(np.load(path, mmap_mode="r").shape[0])
            paths.append(str(path))
            starts.append(at)
            stops.append(at + rows)
            at += rows
        return cls(paths, starts, stops, int(info["dim"]))

    @property
    def n(self) -> int:
        return int(self.stops[-1]) if self.stops.size else 0

    def take(self, idx: np.ndarray) -> np.ndarray:
        """float32 rows ``idx`` (ascending global indices)."""
        idx = np.asarray(idx, np.int64)
        out = np.empty((idx.size, self.dim), np.float32)
        block = np.searchsorted(self.stops, idx, side="right")
        for b in np.unique(block):
            sel = np.flatnonzero(block == b)
            out[sel] = np.load(self.paths[b], mmap_mode="r")[idx[sel] - self.starts[b]]
        return out

    def range(self, start: int, stop: int) -> np.ndarray:
        return self.take(np.arange(start, stop, dtype=np.int64))


def _assign_task(rows_reader: EmbedRows, centroids: np.ndarray):
    def run(batches):
        from mixweave.retrieval.knn import check_embeddings
        from mixweave.retrieval.partition import assign_nearest

        for batch in batches:
            for r in batch.to_pylist():
                kept = r["start"] + np.flatnonzero(np.load(r["keep"]))
                if kept.size == 0:
                    continue
                X = check_embeddings(rows_reader.take(kept))
                yield pa.RecordBatch.from_arrays([pa.array(kept), pa.array(assign_nearest(X, centroids))],
                                                 schema=LABEL_SCHEMA)
    return run


SCORE_SCHEMA = pa.schema([("u", pa.int64()), ("label", pa.int64()), ("score", pa.float64())])


def _score_task(rows_reader: EmbedRows, directions: dict):
    """Rows ``(u, label)`` of oversized clusters -> their projection on the cluster's split direction."""
    def run(batches):
        from mixweave.retrieval.partition import split_scores

        for batch in batches:
            u = batch.column("u").to_numpy(zero_copy_only=False).astype(np.int64)
            label = batch.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
            score = np.empty(u.size, np.float64)
            for c in np.unique(label):
                at = np.flatnonzero(label == c)
                score[at] = split_scores(rows_reader.take(u[at]), directions[int(c)])
            yield pa.RecordBatch.from_arrays([pa.array(u), pa.array(label), pa.array(score)], schema=SCORE_SCHEMA)
    return run


def _split_labels(spark, labels_path: str, rows_reader: EmbedRows, max_cluster_docs: int, out_path: str) -> tuple[str, int]:
    """:func:`~mixweave.retrieval.partition.split_oversized` on the labels parquet: cluster sizes
    (one row per cluster) to the driver, the split plan, the sample rows of each oversized cluster
    (every ``stride``-th member by ``u``: about ``SPLIT_SAMPLE`` rows each) read on the driver for
    the direction, then tasks score the members and a window ranks them by (score, u) within their
    cluster (Spark's sort, spilling): the same labels as in process. Returns (labels path, clusters split)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from ..retrieval.partition import split_direction, split_plan
    from .ingest import spark_schema

    labels = spark.read.parquet(labels_path)
    sizes = {int(r["label"]): int(r["count"]) for r in labels.groupBy("label").count().collect()}
    plan = split_plan(sizes, max_cluster_docs)
    if not plan:
        return labels_path, 0
    plan_frame = spark.createDataFrame(pa.table({
        "label": [p[0] for p in plan], "size": [p[1] for p in plan], "pieces": [p[2] for p in plan],
        "stride": [p[3] for p in plan], "base": [p[4] for p in plan]}).to_pandas())
    big = labels.join(F.broadcast(plan_frame), "label")
    ranked = big.withColumn("r", F.row_number().over(Window.partitionBy("label").orderBy("u")) - 1)
    sample = ranked.filter(F.col("r") % F.col("stride") == 0).select("label", "u").toArrow()
    s_label = sample.column("label").to_numpy().astype(np.int64)
    s_u = sample.column("u").to_numpy().astype(np.int64)
    directions = {}
    for label, *_ in plan:
        u = np.sort(s_u[s_label == label])
        directions[label] = split_direction(rows_reader.take(u))
    scored = big.select("u", "label").mapInArrow(_score_task(rows_reader, directions), spark_schema(SCORE_SCHEMA)) \
        .join(F.broadcast(plan_frame), "label")
    rank = F.row_number().over(Window.partitionBy("label").orderBy("score", "u")) - 1
    pieces = scored.withColumn("r", rank).select("u", (F.col("base") + F.expr("(r * pieces) div size")).alias("label"))
    rest = labels.join(F.broadcast(plan_frame.select("label")), "label", "left_anti").select("u", "label")
    rest.unionByName(pieces).write.parquet(out_path)
    return out_path, len(plan)


def _edges_task(batches):
    """kNN entries ``(u, j, v, w)`` of the kept rows ``u`` of each shard (valid ids only; whether
    ``v`` is kept is settled by the join with the labels, which only kept documents have)."""
    for batch in batches:
        for r in batch.to_pylist():
            keep = np.load(r["keep"]).astype(bool)
            I, D = np.load(r["I"], mmap_mode="r"), np.load(r["D"], mmap_mode="r")
            rows = np.flatnonzero(keep)
            I, D = np.asarray(I[rows], np.int64), np.asarray(D[rows], np.float32)
            valid = I >= 0
            u = np.repeat(rows + r["start"], I.shape[1]).reshape(I.shape)[valid]
            j = np.broadcast_to(np.arange(I.shape[1], dtype=np.int32), I.shape)[valid]
            yield pa.RecordBatch.from_arrays([pa.array(u), pa.array(j), pa.array(I[valid]), pa.array(D[valid])],
                                             schema=EDGE_SCHEMA)


def _list_parts(column: pa.Array, *fields: str) -> tuple[np.ndarray, ...]:
    """(offsets, field arrays...) of a list<struct> column (null lists are empty)."""
    lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(lengths.size + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = column.flatten()
    return (offsets, *(values.field(f).to_numpy(zero_copy_only=False) for f in fields))


def _vote_task(changed_acc):
    def run(batches):
        yield from _vote_batches(batches, changed_acc)
    return run


def _vote_batches(batches, changed_acc):
    """One refinement round for each row ``(u, label, nb)`` (``nb``: neighbours sorted by j);
    ``changed_acc`` counts the documents that moved (a retried task may count twice: only 0 is read)."""
    from mixweave.retrieval.partition import vote_labels

    for batch in batches:
        u = batch.column("u").to_numpy(zero_copy_only=False)
        cur = batch.column("label").to_numpy(zero_copy_only=False)
        offsets, v, lv, w = _list_parts(batch.column("nb"), "v", "lv", "w")
        row = np.repeat(np.arange(u.size), np.diff(offsets))
        other = v != u[row]  # self matches do not vote
        offsets = np.r_[0, np.cumsum(np.bincount(row[other], minlength=u.size))]
        new = vote_labels(offsets, lv[other], w[other], cur)
        changed_acc.add(int((new != cur).sum()))
        yield pa.RecordBatch.from_arrays([pa.array(u, pa.int64()), pa.array(new)], schema=LABEL_SCHEMA)


def _cluster_runs(batches, key: str):
    """Group rows sorted by ``key`` (``sortWithinPartitions``) into one table per key value, across
    batch boundaries; memory: one group."""
    pending: list[pa.RecordBatch] = []
    current = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        keys = batch.column(key).to_numpy(zero_copy_only=False)
        cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
        starts = np.r_[0, cuts]
        stops = np.r_[cuts, keys.size]
        for lo, hi in zip(starts, stops):
            value = int(keys[lo])
            if current is not None and value != current:
                yield current, pa.Table.from_batches(pending)
                pending = []
            current = value
            pending.append(batch.slice(lo, hi - lo))
    if pending:
        yield current, pa.Table.from_batches(pending)


def _walk_task(rows_reader: EmbedRows, k: int, out_dir: str):
    """Per cluster (rows sorted by (cluster, u)): the restricted kNN block with local ids (as
    ``partition.cluster_blocks``), Algorithm 1 on it, the path written to ``out_dir/cluster-C.npy``;
    returns the cluster's centroid sums and its share of the order metrics."""
    def run(batches):
        from mixweave.retrieval.metrics import edge_lookup, segment_lengths
        from mixweave.retrieval.partition import centroid_sums
        from mixweave.retrieval.traverse import traverse

        for cluster, table in _cluster_runs(batches, "cluster"):
            batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
            members = batch.column("u").to_numpy(zero_copy_only=False).astype(np.int64)
            offsets, v, lv, w = _list_parts(batch.column("nb"), "v", "lv", "w")
            m = members.size
            row = np.repeat(np.arange(m), np.diff(offsets))
            same = lv == cluster
            ids = np.full((m, k), -1, np.int32)
            weights = np.full((m, k), -np.inf, np.float32)
            r_same = row[same]
            slot = np.arange(r_same.size) - np.r_[0, np.cumsum(np.bincount(r_same, minlength=m))][r_same]
            ids[r_same, slot] = np.searchsorted(members, v[same]).astype(np.int32)
            weights[r_same, slot] = w[same]
            local = traverse(ids, weights)
            path = members[local]
            np.save(Path(out_dir) / f"cluster-{cluster}.npy", path)
            # metrics: adjacent cosines, kNN-edge pairs and segments inside the cluster
            X = rows_reader.take(members)
            adj = np.einsum("ij,ij->i", X[local[:-1]], X[local[1:]]) if m > 1 else np.zeros(0, np.float32)
            bins, counts = np.unique(np.clip(((adj.astype(np.float64) + 1.0) * ADJ_BINS / 2).astype(np.int64),
                                             0, ADJ_BINS - 1), return_counts=True)
            is_edge, ew = edge_lookup(ids.astype(np.int64), weights)(local[:-1], local[1:])
            seg = segment_lengths(is_edge)
            lengths, seg_counts = np.unique(seg[1:-1], return_counts=True)
            other = v != members[row]
            best = np.full(m, -np.inf)
            np.maximum.at(best, row[other], w[other].astype(np.float64))
            found = np.isfinite(best)
            sums = centroid_sums(X, np.zeros(m, np.int64), 1)[0]
            yield pa.RecordBatch.from_pylist([{
                "cluster": cluster, "size": m, "first": int(path[0]), "last": int(path[-1]), "sums": sums.tolist(),
                "adj_sum": float(adj.astype(np.float64).sum()), "adj_bins": bins.tolist(), "adj_counts": counts.tolist(),
                "edge_w_sum": float(ew.astype(np.float64).sum()), "jumps": int((~is_edge).sum()),
                "seg_head": int(seg[0]), "seg_tail": int(seg[-1]), "seg_lengths": lengths.tolist(),
                "seg_counts": seg_counts.tolist(),
                "nn_sum": float(best[found].sum()), "nn_count": int(found.sum()),
                "in_cluster": int((same & other).sum()), "entries": int(other.sum()),
            }], schema=CLUSTER_SCHEMA)
    return run


class _KeptIndex:
    """Kept-numbering position -> global index, through the keep shards (loaded one at a time)."""

    def __init__(self, shards: list[dict], kept_counts: np.ndarray):
        self.shards = shards
        self.offsets = np.r_[0, np.cumsum(kept_counts)].astype(np.int64)

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def to_global(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, np.int64)
        out = np.empty(positions.size, np.int64)
        shard = np.searchsorted(self.offsets, positions, side="right") - 1
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            kept = np.flatnonzero(np.load(self.shards[s]["keep"]))
            out[sel] = self.shards[s]["start"] + kept[positions[sel] - self.offsets[s]]
        return out


def _knn_rows(shards: list[dict], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """kNN rows (I, D) of the global indices ``idx``, read from the shards' memory maps."""
    idx = np.asarray(idx, np.int64)
    starts = np.array([s["start"] for s in shards], np.int64)
    shard = np.searchsorted(starts, idx, side="right") - 1
    I_out, D_out = None, None
    for s in np.unique(shard):
        sel = np.flatnonzero(shard == s)
        I = np.load(shards[s]["I"], mmap_mode="r")
        D = np.load(shards[s]["D"], mmap_mode="r")
        if I_out is None:
            I_out = np.full((idx.size, I.shape[1]), -1, np.int64)
            D_out = np.full((idx.size, I.shape[1]), -np.inf, np.float32)
        I_out[sel] = I[idx[sel] - shards[s]["start"]]
        D_out[sel] = D[idx[sel] - shards[s]["start"]]
    return I_out, D_out


def _pair_edges(shards: list[dict], a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each pair (a, b) of kept documents is an edge of the symmetrised kNN graph, and its
    weight (the larger listed cosine), from the two kNN rows (both ends kept: no restriction needed)."""
    Ia, Da = _knn_rows(shards, a)
    Ib, Db = _knn_rows(shards, b)
    wa = np.where(Ia == b[:, None], Da, -np.inf).max(axis=1, initial=-np.inf)
    wb = np.where(Ib == a[:, None], Db, -np.inf).max(axis=1, initial=-np.inf)
    w = np.maximum(wa, wb)
    hit = np.isfinite(w) & (a != b)
    return hit, np.where(hit, w, 0).astype(np.float32)


def run_sharded_order(spark, *, embed_dir: Path, knn_dir: Path, dedup_dir: Path, source: str, out_dir: Path,
                      n_clusters: int, seed: int, k_centroids: int = 10, train_size: int | None = None,
                      niter: int = 20, refine_rounds: int = 2, work_dir: str | Path | None = None,
                      n_tasks: int | None = None, max_cluster_docs: int = 0) -> dict:
    """Partitioned Algorithm 1 of one source from its shards (embed blocks, kNN and keep shards),
    every per-document step a Spark task:

    1. the driver counts the kept documents per keep shard (one shard in memory), maps the k-means sample
       (:func:`~mixweave.retrieval.partition.kmeans_sample`, positions in the kept numbering, so the
       same rows as in-process) to global indices, reads only those embedding rows and trains the
       centroids (bounded: 128 rows per cluster);
    2. tasks assign each kept document of their shard to its nearest centroid (labels go to parquet
       under ``work_dir``);
    3. each refinement round joins the kNN entries (tasks read the kNN shards) with the labels,
       groups them by document (neighbours sorted by position j) and votes
       (:func:`~mixweave.retrieval.partition.vote_labels`); removed documents have no label, so the
       join drops them as ``restrict_knn`` does, and global ids keep the kept numbering's order;
       with ``max_cluster_docs`` clusters above it are cut into slabs (:func:`_split_labels`);
    4. a shuffle by cluster brings each cluster's documents (ascending) and in-cluster neighbours
       together; a task builds the block (``cluster_blocks``), walks it, writes the path and returns
       its centroid sums (exact integers) and metric partial sums;
    5. the driver orders the clusters (Algorithm 1 over the centroid graph), renames the files to
       ``order-RRRRR.npy`` by rank and computes the cluster-boundary pairs and a seeded sample of
       random pairs from a bounded number of rows.

    Output equals ``partitioned_order`` on the kept documents element for element, whatever the
    number of tasks. Returns an info dict with ``files`` (names in traversal order), ``n_docs``,
    the plan info and ``metrics`` (``metrics_sampled``: random-order figures from
    :data:`RANDOM_PAIRS` pairs, quantiles from a 0.001-wide histogram).
    """
    from pyspark.sql import functions as F

    from ..data.artifacts import knn_shards
    from ..data.manifest import require_manifest
    from ..errors import InputError
    from ..retrieval.knn import check_embeddings
    from ..retrieval.partition import centroids_from_sums, kmeans_sample, train_centroids
    from ..retrieval.traverse import order_clusters
    from .ingest import spark_schema

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    knn = knn_shards(Path(knn_dir), source)
    keep_info = require_manifest(Path(dedup_dir), "dedup")["dedup"][source]["shards"]
    if [(s.start, s.stop) for s in knn] != [(int(s["start"]), int(s["stop"])) for s in keep_info]:
        raise InputError(f"order {source}: the dedup shards do not match the kNN shards; rerun dedup")
    shards = [{"shard": i, "start": s.start, "stop": s.stop, "I": str(Path(s.I).resolve()),
               "D": str(Path(s.D).resolve()), "keep": str((Path(dedup_dir) / d["keep"]).resolve())}
              for i, (s, d) in enumerate(zip(knn, keep_info))]
    rows_reader = EmbedRows.of(Path(embed_dir), source)
    if rows_reader.n != (knn[-1].stop if knn else 0):
        raise InputError(f"order {source}: {rows_reader.n} embedding rows but {knn[-1].stop} kNN rows; rerun knn")
    k = int(np.load(knn[0].I, mmap_mode="r").shape[1]) if knn else 0
    tasks = int(n_tasks or max(1, min(len(shards), 4 * spark.sparkContext.defaultParallelism)))
    shard_frame = spark.createDataFrame(pa.Table.from_pylist(shards, schema=SHARD_SCHEMA).to_pandas()) \
        .repartition(tasks, "shard")
    counts = [int(np.load(s["keep"], mmap_mode="r").sum()) for s in shards]  # one shard in memory at a time
    kept = _KeptIndex(shards, np.asarray(counts, np.int64))
    n = kept.n
    info: dict = {"n_docs": n, "n_clusters_requested": int(n_clusters), "spark_tasks": tasks}
    if n == 0:
        np.save(out_dir / "order-00000.npy", np.zeros(0, np.int64))
        return dict(info, n_clusters=0, files=["order-00000.npy"], metrics={"n_docs": 0})
    c = int(min(n_clusters, n))
    if c < 2:
        raise InputError(f"order {source}: the sharded path needs at least 2 clusters, got {c}")
    sample = kmeans_sample(n, c, seed=seed, train_size=train_size)
    train_rows = kept.to_global(np.arange(n) if sample is None else sample)
    centroids = train_centroids(check_embeddings(rows_reader.take(train_rows)), c, seed=seed, niter=niter)
    del train_rows
    t_train = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="mixweave-order-", dir=work_dir) as tmp:
        try:
            labels_path = str(Path(tmp) / "labels-0")
            shard_frame.mapInArrow(_assign_task(rows_reader, centroids), spark_schema(LABEL_SCHEMA)) \
                .write.parquet(labels_path)
            t_assign = time.perf_counter()
            edges = shard_frame.mapInArrow(_edges_task, spark_schema(EDGE_SCHEMA))
            rounds_run = 0
            for r in range(int(refine_rounds)):
                labels = spark.read.parquet(labels_path)
                nb = (edges.join(labels.select(F.col("u").alias("v"), F.col("label").alias("lv")), "v")
                      .groupBy("u").agg(F.array_sort(F.collect_list(F.struct("j", "v", "lv", "w"))).alias("nb")))
                next_path = str(Path(tmp) / f"labels-{r + 1}")
                changed = spark.sparkContext.accumulator(0)
                labels.join(nb, "u", "left") \
                    .mapInArrow(_vote_task(changed), spark_schema(LABEL_SCHEMA)).write.parquet(next_path)
                rounds_run += 1
                changed = changed.value
                labels_path = next_path
                if changed == 0:
                    break
            labels_path, clusters_split = _split_labels(spark, labels_path, rows_reader, max_cluster_docs,
                                                        str(Path(tmp) / "labels-split"))
            t_refine = time.perf_counter()
            labels = spark.read.parquet(labels_path).select("u", F.col("label").alias("cluster"))
            nb = (edges.join(labels.select(F.col("u").alias("v"), F.col("cluster").alias("lv")), "v")
                  .groupBy("u").agg(F.array_sort(F.collect_list(F.struct("j", "v", "lv", "w"))).alias("nb")))
            clusters_dir = out_dir / ".clusters"
            clusters_dir.mkdir(parents=True, exist_ok=True)
            result = (labels.join(nb, "u", "left").repartition(tasks, "cluster").sortWithinPartitions("cluster", "u")
                      .mapInArrow(_walk_task(rows_reader, k, str(clusters_dir.resolve())), spark_schema(CLUSTER_SCHEMA))
                      .toArrow().sort_by("cluster"))
        except Exception as exc:  # noqa: BLE001 - a task's InputError becomes one line, the rest propagates
            raise _task_error(exc) from None
    t_walk = time.perf_counter()

    res = result.to_pydict()
    labels_found = np.asarray(res["cluster"], np.int64)
    sizes = np.asarray(res["size"], np.int64)
    if sizes.sum() != n:
        raise RuntimeError(f"order {source}: the cluster walks cover {sizes.sum()} of {n} documents")
    cents = centroids_from_sums(np.asarray(res["sums"], np.int64).reshape(labels_found.size, -1))
    rank_order = order_clusters(cents, k=k_centroids)  # positions into labels_found, in walk order
    files = []
    for rank, pos in enumerate(rank_order):
        name = f"order-{rank:05d}.npy"
        (clusters_dir / f"cluster-{labels_found[pos]}.npy").rename(out_dir / name)
        files.append(name)
    clusters_dir.rmdir()
    t_order = time.perf_counter()
    metrics = _sharded_metrics(res, rank_order, rows_reader, shards, kept, n, seed)
    entries = int(np.sum(res["entries"]))
    info.update({
        "n_clusters": int(labels_found.size),
        "cluster_size_min": int(sizes.min()), "cluster_size_median": float(np.median(sizes)),
        "cluster_size_max": int(sizes.max()), "k_centroids": int(k_centroids), "refine_rounds": int(refine_rounds),
        "refine_rounds_run": rounds_run, "max_cluster_docs": int(max_cluster_docs),
        **({"clusters_split": clusters_split} if clusters_split else {}), "seed": int(seed),
        "edge_retention": round(float(np.sum(res["in_cluster"]) / entries) if entries else 1.0, 6),
        "kmeans_train_s": round(t_train - t0, 4), "assign_s": round(t_assign - t_train, 4),
        "refine_s": round(t_refine - t_assign, 4), "walk_s": round(t_walk - t_refine, 4),
        "order_clusters_s": round(t_order - t_walk, 4), "metrics_s": round(time.perf_counter() - t_order, 4),
        "files": files, "metrics": metrics,
    })
    LOG.info("partitioned order (sharded spark): N=%d clusters=%d tasks=%d in %.1fs", n, labels_found.size, tasks,
             time.perf_counter() - t0)
    return info


def _sharded_metrics(res: dict, rank_order: np.ndarray, rows_reader: EmbedRows, shards: list[dict],
                     kept: _KeptIndex, n: int, seed: int, short_segment: int = 4) -> dict:
    """``retrieval.order_metrics`` from the clusters' partial sums, the C-1 boundary pairs and a seeded
    random-pair sample (the same pairs as ``random_pair_cosines``): means, path objective, jump rate
    and segments are exact (up to float summation order); quantiles come from the histogram; the
    random-order figures are estimates from the pairs."""
    from mixweave.retrieval.metrics import random_pairs

    firsts = np.asarray(res["first"], np.int64)[rank_order]
    lasts = np.asarray(res["last"], np.int64)[rank_order]
    a, b = lasts[:-1], firsts[1:]
    bound_edge, bound_w = _pair_edges(shards, a, b) if a.size else (np.zeros(0, bool), np.zeros(0, np.float32))
    if a.size:
        sort_a, sort_b = np.argsort(a), np.argsort(b)
        Xa, Xb = np.empty((a.size, rows_reader.dim), np.float32), np.empty((b.size, rows_reader.dim), np.float32)
        Xa[sort_a], Xb[sort_b] = rows_reader.take(a[sort_a]), rows_reader.take(b[sort_b])
        bound_cos = np.einsum("ij,ij->i", Xa, Xb)
    else:
        bound_cos = np.zeros(0, np.float32)
    pairs = max(n - 1, 1)
    adj_sum = float(np.sum(res["adj_sum"]) + bound_cos.astype(np.float64).sum())
    hist = np.zeros(ADJ_BINS, np.int64)
    for bins, counts in zip(res["adj_bins"], res["adj_counts"]):
        np.add.at(hist, np.asarray(bins, np.int64), np.asarray(counts, np.int64))
    np.add.at(hist, np.clip(((bound_cos.astype(np.float64) + 1.0) * ADJ_BINS / 2).astype(np.int64), 0, ADJ_BINS - 1), 1)
    jumps = int(np.sum(res["jumps"]) + (~bound_edge).sum())
    edge_w = float(np.sum(res["edge_w_sum"]) + bound_w.astype(np.float64).sum())
    seg = _merge_segments(res, rank_order, bound_edge)
    nn_count = int(np.sum(res["nn_count"]))
    ceiling = float(np.sum(res["nn_sum"]) / nn_count) if nn_count else 0.0
    # random pairs: random_pair_cosines' draw over the kept numbering
    pa_, pb_ = random_pairs(n, RANDOM_PAIRS, seed)
    uniq, inverse = np.unique(np.r_[pa_, pb_], return_inverse=True)
    g = kept.to_global(uniq)
    X = rows_reader.take(g)
    ga, gb = g[inverse[:RANDOM_PAIRS]], g[inverse[RANDOM_PAIRS:]]
    pair_cos = np.einsum("ij,ij->i", X[inverse[:RANDOM_PAIRS]], X[inverse[RANDOM_PAIRS:]]).astype(np.float32)
    pair_edge, _ = _pair_edges(shards, ga, gb)
    mean_adj = adj_sum / pairs if n > 1 else float("nan")

    def quantile(q: float) -> float:
        if n < 2:
            return float("nan")
        pos = np.searchsorted(np.cumsum(hist), q * (n - 1), side="left")
        return float(-1.0 + (pos + 0.5) * 2.0 / ADJ_BINS)

    return {
        "n_docs": n, "coverage": 1.0, "metrics_sampled": True,
        "mean_adjacent_cosine": mean_adj,
        "p10_adjacent_cosine": quantile(0.1), "p50_adjacent_cosine": quantile(0.5),
        "random_order_mean_adjacent_cosine": float(pair_cos.mean()) if n > 1 else float("nan"),
        "nn_ceiling": ceiling,
        "ratio_to_ceiling": float(mean_adj / ceiling) if n > 1 and ceiling > 0 else float("nan"),
        "path_objective": edge_w / pairs,
        "jump_rate": float(jumps / (n - 1)) if n > 1 else 0.0,
        "random_order_jump_rate": float((~pair_edge).mean()) if n > 1 else 0.0,
        **seg, "short_segment": short_segment,
        "random_pair_cosine_p90": float(np.quantile(pair_cos, 0.9)),
    }


def _merge_segments(res: dict, rank_order: np.ndarray, bound_edge: np.ndarray, short_segment: int = 4) -> dict:
    """Segment statistics of the whole order from each cluster's head run, tail run and inner runs
    (a run continues across a cluster boundary that is a kNN edge)."""
    from collections import Counter

    hist: Counter = Counter()
    open_run = 0
    for rank, pos in enumerate(rank_order):
        size, head, tail = res["size"][pos], res["seg_head"][pos], res["seg_tail"][pos]
        if rank == 0 or not bound_edge[rank - 1]:
            if open_run:
                hist[open_run] += 1
            open_run = 0
        open_run += head
        if head < size:  # more than one run inside the cluster
            hist[open_run] += 1
            hist.update(dict(zip(res["seg_lengths"][pos], res["seg_counts"][pos])))
            open_run = tail
    if open_run:
        hist[open_run] += 1
    lengths = np.array(sorted(hist), np.int64)
    counts = np.array([hist[x] for x in lengths], np.int64)
    total = int(counts.sum())
    cum = np.cumsum(counts)

    def at(i: int) -> int:
        return int(lengths[np.searchsorted(cum, i, side="right")])

    median = at(total // 2) if total % 2 else (at(total // 2 - 1) + at(total // 2)) / 2
    n = int((lengths * counts).sum())
    return {"n_segments": total, "segment_length_median": float(median), "segment_length_max": int(lengths.max()),
            "share_docs_in_short_segments": float((lengths * counts)[lengths < short_segment].sum() / n)}
