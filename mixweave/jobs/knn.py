"""Spark kNN: the offline-IVF join over a source's embed blocks, writing the kNN shards directly.

Data flow (module :mod:`mixweave.retrieval.ivf_join` holds every algorithm):

1. Driver: a seeded, bounded sample of rows read from the embed blocks by global index
   (memory-mapped, ``train_sample``), FAISS k-means (``train_centroids``); the centroids are
   broadcast. The exact mode skips this: its lists are blocks of ``list_rows`` global indices.
2. Tasks, one group of embed blocks each: ``assign_lists`` -> one row (list, id, member) per probed
   list.
3. Shuffle by list, sorted by (list, id); a task streams its lists one at a time, gathers the
   vectors of the list's queries and members from the embed blocks (memory-mapped) and runs
   ``search_list`` -> one partial top-k row (shard, id, I, D) per (query, list).
4. Shuffle by shard, sorted by (shard, id); a task merges each shard's partials
   (``merge_partials``) and writes ``<source>/I-SSSSS.npy`` and ``D-SSSSS.npy`` straight into the
   stage folder. The driver receives one small row per shard.

Every step is a pure function of its list or shard, and the kernels give the same bytes however
rows are grouped (see ``ivf_join``), so the shards equal :func:`ivf_join_knn` /
:func:`exact_join_knn` byte for byte, on any number of partitions. The driver holds the sample,
the centroids and per-shard metadata; a task holds one embed block, one list (its ids, then its
vectors in query blocks) or one shard's partials (``shard_rows x nprobe x k``).

Recall@k (:func:`sampled_recall`): a second job searches a seeded sample of queries exactly against
every block (one running top-k per task), the driver merges the tasks' partials and compares them
with the rows of the written shards.

A block that is not finite unit vectors of the source's dimension fails its task with
:data:`BAD_INPUT`; the driver reports it as one ``InputError`` line. The exact mode's lists hold every
query (it is O(N^2) work, for tests and small sources): a task buffers the ids of all documents.

On a real cluster the embed and stage folders must be on storage the executors can read.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from ..data.artifacts import Blocks, RowReader
from .batches import grouped

LOG = logging.getLogger(__name__)

BLOCK_SCHEMA = pa.schema([("block", pa.int64()), ("path", pa.string()), ("start", pa.int64()), ("stop", pa.int64())])
PROBE_SCHEMA = pa.schema([("list", pa.int64()), ("id", pa.int64()), ("member", pa.bool_())])
PARTIAL_SCHEMA = pa.schema([("shard", pa.int64()), ("id", pa.int64()),
                            ("I", pa.list_(pa.int64())), ("D", pa.list_(pa.float32()))])
DONE_SCHEMA = pa.schema([("shard", pa.int64()), ("start", pa.int64()), ("stop", pa.int64()), ("rows", pa.int64())])


def _list_column(rows: np.ndarray, value_type: pa.DataType) -> pa.Array:
    n, k = rows.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32)),
                                    pa.array(rows.reshape(-1), type=value_type))


def _list_values(column: pa.ChunkedArray | pa.Array, k: int, dtype) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, k)


BAD_INPUT = "MIXWEAVE-BAD-EMBEDDINGS: "
"""Prefix of the error a task raises on a bad embed block; the driver turns it into one InputError line."""


def check_block(X: np.ndarray, path: str, start: int, dim: int) -> None:
    """Raise (with :data:`BAD_INPUT`) unless the block is float [rows, dim], finite and unit-norm."""
    from mixweave.retrieval.knn import NORM_TOLERANCE

    name = Path(path).name
    if X.ndim != 2 or X.shape[1] != dim:
        raise ValueError(f"{BAD_INPUT}embed block {name} has shape {X.shape}, expected [rows, {dim}]; "
                         "re-run the embed stage")
    norms = np.linalg.norm(np.asarray(X, np.float64), axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > NORM_TOLERANCE))
    if bad.size:
        raise ValueError(f"{BAD_INPUT}embed block {name}: {bad.size} rows are not finite unit vectors (document "
                         f"{start + int(bad[0])} has norm {norms[bad[0]]:.4f}); re-run the embed stage")


def _assign_task(blocks: Blocks, centroids_bc, nprobe: int, list_rows: int, dim: int):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from mixweave.retrieval.ivf_join import assign_lists, block_lists

        centroids = centroids_bc.value if centroids_bc is not None else None
        for batch in batches:
            for b in batch.column("block").to_pylist():
                start, stop = int(blocks.starts[b]), int(blocks.starts[b + 1])
                ids = np.arange(start, stop, dtype=np.int64)
                X = np.load(blocks.paths[b])
                check_block(X, blocks.paths[b], start, dim)
                if centroids is None:
                    probes = block_lists(ids, list_rows, blocks.n)
                else:
                    probes = assign_lists(X, centroids, nprobe)
                member = np.zeros(probes.shape, bool)
                member[:, 0] = True
                yield pa.RecordBatch.from_arrays([
                    pa.array(probes.reshape(-1)), pa.array(np.repeat(ids, probes.shape[1])), pa.array(member.reshape(-1)),
                ], schema=PROBE_SCHEMA)

    return run


def _search_task(blocks: Blocks, k: int, shard_rows: int, query_block: int):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from mixweave.retrieval.ivf_join import search_list

        reader = RowReader(blocks)
        for group in grouped(batches, "list"):
            q_ids = group.column("id").to_numpy()
            m_ids = q_ids[group.column("member").to_numpy(zero_copy_only=False)]
            if m_ids.size == 0:
                continue  # nobody lives in this list: its queries get nothing from it
            M = reader.rows(m_ids)
            for lo in range(0, q_ids.size, query_block):
                q = q_ids[lo:lo + query_block]
                I, D = search_list(q, reader.rows(q), m_ids, M, k, query_block=query_block)
                yield pa.RecordBatch.from_arrays([pa.array(q // shard_rows), pa.array(q), _list_column(I, pa.int64()),
                                                  _list_column(D, pa.float32())], schema=PARTIAL_SCHEMA)

    return run


def _reduce_task(out_dir: str, n: int, k: int, shard_rows: int):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from mixweave.data.artifacts import shard_file
        from mixweave.retrieval.ivf_join import merge_partials

        for group in grouped(batches, "shard"):
            shard = int(group.column("shard")[0].as_py())
            start, stop = shard * shard_rows, min(n, (shard + 1) * shard_rows)
            q, I, D = merge_partials(group.column("id").to_numpy(), _list_values(group.column("I"), k, np.int64),
                                     _list_values(group.column("D"), k, np.float32), k)
            if not np.array_equal(q, np.arange(start, stop)):
                raise RuntimeError(f"knn shard {shard}: {q.size} of {stop - start} rows came back")
            for key, values in (("I", I), ("D", D)):
                target = Path(out_dir) / shard_file(key, shard)
                partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                with open(partial, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(values))
                os.replace(partial, target)
            yield pa.RecordBatch.from_pylist([{"shard": shard, "start": start, "stop": stop, "rows": stop - start}],
                                             schema=DONE_SCHEMA)

    return run


def _block_frame(spark, blocks: Blocks, n_tasks: int):
    table = pa.table({"block": pa.array(np.arange(len(blocks.paths), dtype=np.int64)),
                      "path": pa.array(blocks.paths, pa.string()),
                      "start": pa.array(blocks.starts[:-1]), "stop": pa.array(blocks.starts[1:])}, schema=BLOCK_SCHEMA)
    return spark.createDataFrame(table.to_pandas()).repartitionByRange(max(1, min(n_tasks, len(blocks.paths))), "block")


def run_knn_join(spark, blocks: Blocks, out_dir: Path, *, k: int, shard_rows: int, mode: str = "ivf",
                 nlist: int = 0, nprobe: int = 0, seed: int = 0, train_size: int | None = None, niter: int = 20,
                 list_rows: int | None = None, recall_sample: int = 1000, n_tasks: int | None = None,
                 query_block: int | None = None) -> dict:
    """The kNN shards of one source (module docstring) written into ``out_dir`` as
    ``I-SSSSS.npy``/``D-SSSSS.npy`` on ``data.artifacts.shard_bounds(N, shard_rows)``.

    ``mode``: ``"ivf"`` (the offline-IVF join with ``nlist``/``nprobe``, 0 = auto; equals
    ``ivf_join_knn`` with the same settings) or ``"exact"`` (the blocked join over lists of
    ``list_rows`` rows, default ``shard_rows``; equals ``exact_join_knn``). ``n_tasks`` sets the
    tasks of every step (default 4 x the default parallelism). ``recall_sample`` > 0 records
    recall@k against exact search on that many seeded queries. Returns an info dict: ``shards``
    (start, stop, I, D relative to ``out_dir``'s parent), ``nlist``, ``nprobe``, ``recall_at_k``,
    timings."""
    from mixweave.data.artifacts import shard_bounds, shard_file
    from mixweave.data.progress import spark_progress
    from mixweave.errors import ConfigError, InputError
    from mixweave.retrieval.ivf_join import QUERY_BLOCK, resolve_nlist, resolve_nprobe, train_centroids, train_sample

    from .ingest import spark_schema

    n = blocks.n
    if n < 2:
        raise ConfigError(f"the kNN join needs at least 2 documents, got {n}")
    if mode not in ("ivf", "exact"):
        raise ConfigError(f"knn join mode must be 'ivf' or 'exact', got {mode!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = int(n_tasks or 4 * spark.sparkContext.defaultParallelism)
    qb = int(query_block or QUERY_BLOCK)
    t0 = time.perf_counter()
    info: dict = {"mode": mode}
    centroids_bc = None
    list_rows = int(list_rows or shard_rows)
    dim = int(np.load(blocks.paths[0], mmap_mode="r").shape[-1])
    if mode == "ivf":
        nl = resolve_nlist(n, nlist)
        npr = resolve_nprobe(nl, nprobe)
        sample = train_sample(n, nl, seed=seed, train_size=train_size)
        centroids = train_centroids(RowReader(blocks, mapped=False).rows(sample), nl, seed=seed, niter=niter)
        centroids_bc = spark.sparkContext.broadcast(centroids)
        info.update(nlist=nl, nprobe=npr, train_rows=int(sample.size))
    else:
        nl = npr = -(-n // list_rows)
        info.update(nlist=nl, nprobe=npr, list_rows=list_rows)
    t_train = time.perf_counter()
    n_shards = len(shard_bounds(n, shard_rows))
    probes = _block_frame(spark, blocks, tasks).mapInArrow(_assign_task(blocks, centroids_bc, npr, list_rows, dim),
                                                           spark_schema(PROBE_SCHEMA))
    partials = (probes.repartition(max(1, min(tasks, nl)), "list").sortWithinPartitions("list", "id")
                .mapInArrow(_search_task(blocks, k, shard_rows, qb), spark_schema(PARTIAL_SCHEMA)))
    done_frame = (partials.repartition(max(1, min(tasks, n_shards)), "shard").sortWithinPartitions("shard", "id")
                  .mapInArrow(_reduce_task(str(out_dir.resolve()), n, k, shard_rows), spark_schema(DONE_SCHEMA)))
    try:
        with spark_progress(spark, "knn"):
            done = done_frame.toArrow().sort_by("shard")
    except Exception as exc:  # noqa: BLE001 - a task's error arrives wrapped by py4j/pyspark
        text = str(exc)
        if BAD_INPUT not in text:
            raise
        raise InputError(text[text.index(BAD_INPUT) + len(BAD_INPUT):].splitlines()[0]) from None
    if centroids_bc is not None:
        centroids_bc.unpersist()
    if done.num_rows != n_shards or done.column("shard").to_pylist() != list(range(n_shards)):
        raise RuntimeError(f"knn join: {done.num_rows} of {n_shards} shards were written")
    t_join = time.perf_counter()
    name = out_dir.name
    info["shards"] = [{"start": int(s), "stop": int(e), "I": f"{name}/{shard_file('I', i)}",
                       "D": f"{name}/{shard_file('D', i)}"} for i, (s, e) in enumerate(shard_bounds(n, shard_rows))]
    if recall_sample > 0:
        info["recall_at_k"] = sampled_recall(spark, blocks, out_dir, k=k, shard_rows=shard_rows,
                                             sample_size=recall_sample, seed=seed, n_tasks=tasks)
    info.update(train_s=round(t_train - t0, 3), join_s=round(t_join - t_train, 3),
                recall_s=round(time.perf_counter() - t_join, 3), spark_tasks=tasks)
    LOG.info("knn join (spark, %s): N=%d nlist=%d nprobe=%d shards=%d in %.1fs", mode, n, nl, npr, n_shards,
             time.perf_counter() - t0)
    return info


def _exact_sample_task(blocks: Blocks, sample: np.ndarray, Q_bc, k: int):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from mixweave.retrieval.ivf_join import merge_partials, search_list

        Q = Q_bc.value
        I = np.full((sample.size, k), -1, np.int64)
        D = np.full((sample.size, k), -np.inf, np.float32)
        seen = False
        for batch in batches:
            for b in batch.column("block").to_pylist():
                ids = np.arange(blocks.starts[b], blocks.starts[b + 1], dtype=np.int64)
                pI, pD = search_list(sample, Q, ids, np.load(blocks.paths[b]), k)
                _, I, D = merge_partials(np.concatenate([sample, sample]), np.concatenate([I, pI]),
                                         np.concatenate([D, pD]), k)
                seen = True
        if seen:
            yield pa.RecordBatch.from_arrays([pa.array(np.zeros(sample.size, np.int64)), pa.array(sample),
                                              _list_column(I, pa.int64()), _list_column(D, pa.float32())],
                                             schema=PARTIAL_SCHEMA)

    return run


def sampled_recall(spark, blocks: Blocks, knn_dir: Path, *, k: int, shard_rows: int, sample_size: int = 1000,
                   seed: int = 0, n_tasks: int | None = None) -> float:
    """Recall@k of the kNN shards in ``knn_dir`` against exact search for a seeded sample of
    queries (the sample of ``retrieval.knn.sampled_recall_at_k``). Exact top-k: one Spark task per
    group of embed blocks keeps a running top-k of the sample (memory sample x (k + block)), the
    driver merges one partial per task. Cost O(sample x N x d) spread over the tasks."""
    from mixweave.data.artifacts import shard_file
    from mixweave.retrieval.ivf_join import merge_partials
    from mixweave.retrieval.knn import recall_at_k

    from .ingest import spark_schema

    n = blocks.n
    sample = np.sort(np.random.default_rng(seed).choice(n, size=min(n, sample_size), replace=False)).astype(np.int64)
    Q_bc = spark.sparkContext.broadcast(RowReader(blocks, mapped=False).rows(sample))
    tasks = int(n_tasks or 4 * spark.sparkContext.defaultParallelism)
    parts = (_block_frame(spark, blocks, tasks).mapInArrow(_exact_sample_task(blocks, sample, Q_bc, k),
                                                           spark_schema(PARTIAL_SCHEMA)).toArrow())
    Q_bc.unpersist()
    _, I_exact, _ = merge_partials(parts.column("id").to_numpy(), _list_values(parts.column("I"), k, np.int64),
                                   _list_values(parts.column("D"), k, np.float32), k)
    I_found = np.empty((sample.size, k), np.int64)
    shards = sample // shard_rows
    for s in np.unique(shards):
        at = np.flatnonzero(shards == s)
        I_found[at] = np.load(Path(knn_dir) / shard_file("I", int(s)), mmap_mode="r")[sample[at] - s * shard_rows]
    return float(recall_at_k(I_found, I_exact))
