"""Spark semantic dedup over kNN shards: the driver holds shard metadata only, never a per-document array.

Algorithm (the in-process rule of :func:`mixweave.retrieval.dedup.semantic_dedup`, distributed):

1. **Edges.** One task per kNN shard reads its ``I``/``D`` files
   (:func:`~mixweave.retrieval.dedup.shard_pairs`: pairs with cosine >= threshold in global ids) and
   closes them inside the shard with union-find
   (:func:`~mixweave.retrieval.dedup.local_stars`: ``(component min, node)`` edges with the same
   components, one edge per node, so chains inside a shard cost nothing later). A pair listed from
   both of its shards is merged by a ``groupBy(a, b).max(cosine)``.
2. **Components.** Large-star / small-star (Kiveris et al. 2014) in Spark SQL on the star edges
   (:func:`star_round`: a window ``min`` per node for each step + ``distinct``); the edge set is
   ``localCheckpoint``-ed every round so the plan does not grow. They stop when the edges form a
   forest of stars centred on each component's smallest index, which the large-star window
   detects on the fly. O(log^2 n) rounds in the worst case, about log2 of the longest chain that
   crosses shards in practice. Once the edges left fit one task's budget (default: a kNN shard's
   entries, shard rows x k), one task closes them with union-find instead of more rounds: most
   dedup graphs are far smaller than the corpus, so they usually need no round at all. Every step
   is a set operation or a pure function of the edge set, so the result does not depend on
   partitioning.
   Then the removed documents are exactly the star leaves (``keep[i] = label(i) == i``), and
   documents without edges are kept.
3. **Write.** The leaves and the pairs (doc ids looked up for the pairs' documents only, one task
   per ingest file) are keyed by the shard of their (first) document, hash-partitioned by shard and sorted
   by (shard, a, b); one streaming pass per task writes ``<source>/keep-SSSSS.npy`` and
   ``<source>/pairs-SSSSS.parquet`` for every shard (:func:`write_dedup_shard`, also used by the
   in-process path, so both paths write the same bytes) and returns per-shard counts.

Memory: an edge task holds one kNN shard; a write task holds one shard's keep mask and pairs;
aggregations and joins are Spark's (they spill). The driver holds the shard list and counts.
``out_root`` must be on storage the executors can read and write (as for ``jobs/embed.py``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from ..errors import InputError
from .batches import grouped

LOG = logging.getLogger(__name__)

PAIRS_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("doc_id_a", pa.string()),
                          ("doc_id_b", pa.string()), ("cosine", pa.float32())])
SHARD_SCHEMA = pa.schema([("shard", pa.int64()), ("start", pa.int64()), ("stop", pa.int64()),
                          ("I", pa.string()), ("D", pa.string())])
EDGE_SCHEMA = pa.schema([("kind", pa.int32()), ("a", pa.int64()), ("b", pa.int64()), ("cosine", pa.float32())])
WANT_SCHEMA = pa.schema([("file", pa.int64()), ("idx", pa.int64())])
ID_SCHEMA = pa.schema([("idx", pa.int64()), ("doc_id", pa.string())])
STAR_SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.int64())])
DONE_SCHEMA = pa.schema([("shard", pa.int64()), ("n_docs", pa.int64()), ("kept", pa.int64()),
                         ("removed", pa.int64()), ("pairs", pa.int64())])
PAIR, STAR = 0, 1  # edge kinds: a duplicate pair (with its cosine), a star edge of the local closure
MARK, LEAF, ROW = 0, 1, 2  # writer row kinds: a shard's presence, a removed document, a pair


def keep_name(source: str, index: int) -> str:
    return f"{source}/keep-{index:05d}.npy"


def pairs_name(source: str, index: int) -> str:
    return f"{source}/pairs-{index:05d}.parquet"


def write_dedup_shard(root: Path, source: str, index: int, keep: np.ndarray, a: np.ndarray, b: np.ndarray,
                      doc_id_a, doc_id_b, cosine: np.ndarray) -> dict:
    """Write one shard's keep mask and its pairs (rows whose ``a`` is in the shard, sorted by
    (a, b)) under ``root``; returns the manifest's shard entry names. Both paths call this."""
    import pyarrow.parquet as pq

    (Path(root) / source).mkdir(parents=True, exist_ok=True)
    np.save(Path(root) / keep_name(source, index), np.ascontiguousarray(keep, dtype=bool))
    table = pa.table({
        "a": pa.array(np.asarray(a, np.int64), pa.int64()), "b": pa.array(np.asarray(b, np.int64), pa.int64()),
        "doc_id_a": pa.array(doc_id_a, pa.string()) if not isinstance(doc_id_a, pa.Array) else doc_id_a.cast(pa.string()),
        "doc_id_b": pa.array(doc_id_b, pa.string()) if not isinstance(doc_id_b, pa.Array) else doc_id_b.cast(pa.string()),
        "cosine": pa.array(np.asarray(cosine, np.float32), pa.float32()),
    }, schema=PAIRS_SCHEMA)
    pq.write_table(table, Path(root) / pairs_name(source, index), compression="zstd")
    return {"keep": keep_name(source, index), "pairs": pairs_name(source, index)}


# ------------------------------------------------------------------------------------ tasks
def _emit_edges(n_docs: int, threshold: float):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from mixweave.retrieval.dedup import local_stars, shard_pairs

        for batch in batches:
            for row in batch.to_pylist():
                I, D = np.load(row["I"]), np.load(row["D"])
                if I.shape[0] != row["stop"] - row["start"]:
                    raise InputError(f"kNN shard {row['I']} has {I.shape[0]} rows, the manifest says "
                                     f"{row['stop'] - row['start']}; rerun the knn stage")
                pairs, cos = shard_pairs(I, D, row["start"], n_docs, threshold)
                stars = local_stars(pairs)
                yield pa.RecordBatch.from_arrays([
                    pa.array(np.r_[np.full(len(pairs), PAIR), np.full(len(stars), STAR)].astype(np.int32)),
                    pa.array(np.r_[pairs[:, 0], stars[:, 0]].astype(np.int64)),
                    pa.array(np.r_[pairs[:, 1], stars[:, 1]].astype(np.int64)),
                    pa.array(np.r_[cos, np.zeros(len(stars), np.float32)].astype(np.float32)),
                ], schema=EDGE_SCHEMA)

    return run


def _file_of(starts: list[int]):
    """mapInArrow: tag each wanted document index with the ingest file that holds it."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        bounds = np.asarray(starts, np.int64)
        for batch in batches:
            idx = batch.column("idx").to_numpy().astype(np.int64)
            yield pa.RecordBatch.from_arrays([pa.array(np.searchsorted(bounds, idx, "right") - 1), pa.array(idx)],
                                             schema=WANT_SCHEMA)

    return run


def _look_up_ids(files: list[str], starts: list[int]):
    """mapInArrow over wanted indices sorted by (file, idx): read each file's doc_id column once
    and return the wanted rows only (memory: one ingest file's ids)."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        for rows in grouped(batches, "file"):
            file = int(rows.column("file")[0].as_py())
            idx = rows.column("idx").to_numpy().astype(np.int64)
            column = pq.read_table(files[file], columns=["doc_id"]).column("doc_id").combine_chunks()
            yield pa.RecordBatch.from_arrays([pa.array(idx), column.take(pa.array(idx - starts[file])).cast(pa.string())],
                                             schema=ID_SCHEMA)

    return run


def _write_shards(out_root: str, source: str, bounds: list[tuple[int, int]]):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for rows in grouped(batches, "shard"):
            current = int(rows.column("shard")[0].as_py())
            start, stop = bounds[current]
            keep = np.ones(stop - start, bool)
            kind = rows.column("kind").to_numpy()
            leaves = rows.filter(pa.array(kind == LEAF)).column("a").to_numpy().astype(np.int64) - start
            if leaves.size and (leaves.min() < 0 or leaves.max() >= keep.size or np.unique(leaves).size != leaves.size):
                raise RuntimeError(f"internal error: dedup leaves of shard {current} out of range or repeated")
            keep[leaves] = False
            pair_rows = rows.filter(pa.array(kind == ROW))
            a = pair_rows.column("a").to_numpy().astype(np.int64)
            b = pair_rows.column("b").to_numpy().astype(np.int64)
            cos = pair_rows.column("cosine").to_numpy().astype(np.float32)
            ida = pair_rows.column("doc_id_a").combine_chunks()
            idb = pair_rows.column("doc_id_b").combine_chunks()
            if ida.null_count or idb.null_count:
                raise InputError(f"dedup: a pair of shard {current} names a document the ingest files do not hold; "
                                 "rerun knn after ingest")
            write_dedup_shard(Path(out_root), source, current, keep, a, b, ida, idb, cos)
            yield pa.RecordBatch.from_pylist([{
                "shard": current, "n_docs": int(keep.size), "kept": int(keep.sum()), "removed": int((~keep).sum()),
                "pairs": int(len(a))}], schema=DONE_SCHEMA)

    return run


# ------------------------------------------------------------------------------ components
def _directed(E):
    from pyspark.sql import functions as F

    return (E.select(F.col("a").alias("u"), F.col("b").alias("v"))
            .unionAll(E.select(F.col("b").alias("u"), F.col("a").alias("v"))))


def star_round(E):
    """One large-star then small-star round on canonical edges ``(a, b)``, ``a < b``.

    Large-star: every node ``u`` links its larger neighbours to ``m(u)``, the minimum of ``u`` and
    its neighbours. Small-star: every node ``u`` links itself and its smaller neighbours to its
    smallest neighbour. Each is one shuffle (a window per node; windows spill), then one
    ``distinct``. The large-star window also marks, with a self-loop ``(u, u)``, every node that has
    a smaller neighbour and degree > 1: without such a node the input already is a forest of stars
    centred on each component's minimum, which both steps leave unchanged, so the caller stops
    when the output holds no self-loop (a narrow scan, no extra shuffle)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    u, v = F.col("u"), F.col("v")
    by_u = Window.partitionBy("u")
    D = _directed(E).withColumn("mv", F.min("v").over(by_u)).withColumn("deg", F.count(F.lit(1)).over(by_u))
    large = D.where(v > u).select(F.least(u, F.col("mv")).alias("a"), v.alias("b"))
    unsettled = D.where((F.col("mv") < u) & (F.col("deg") > 1)).select(u.alias("a"), u.alias("b"))
    L = _directed(large).where(v < u).withColumn("m", F.min("v").over(by_u))
    small = L.select(F.col("m").alias("a"), F.explode(F.array("v", "u")).alias("b")).where(F.col("a") != F.col("b"))
    return small.unionAll(unsettled).distinct()


def _close_in_one_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow on a single partition: union-find over all its edges -> ``(root, node)`` stars."""
    from mixweave.retrieval.dedup import local_stars

    parts = [(b.column("a").to_numpy(), b.column("b").to_numpy()) for b in batches if b.num_rows]
    pairs = np.stack([np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])], axis=1) \
        if parts else np.zeros((0, 2), np.int64)
    stars = local_stars(pairs)
    yield pa.RecordBatch.from_arrays([pa.array(stars[:, 0]), pa.array(stars[:, 1])], schema=STAR_SCHEMA)


def star_components(E, *, single_task_edges: int = 0, max_rounds: int = 200):
    """Connected components of the undirected edges ``E`` (a DataFrame of int64 ``a``, ``b``;
    any order, duplicates and self-loops allowed). Returns (edges ``(root, node)``, one per
    non-root node, root = smallest index of its component; info: large-star/small-star rounds run
    and whether the rest was closed in one task).

    Rounds of :func:`star_round` (``localCheckpoint`` after each so the plan does not grow; one
    small aggregation counts the edges and the unsettled marks) until the edges are stars, or
    until at most ``single_task_edges`` edges remain: those are closed by union-find in one task
    (memory ~16 bytes per edge, a bound set by the caller, never the source size)."""
    from pyspark.sql import functions as F

    from .ingest import spark_schema

    def counts(frame) -> tuple[int, int]:
        row = frame.agg(F.count(F.lit(1)).alias("n"),
                        F.sum(F.when(F.col("a") == F.col("b"), 1).otherwise(0)).alias("u")).first()
        return int(row["n"]), int(row["u"] or 0)

    E = (E.select(F.least("a", "b").alias("a"), F.greatest("a", "b").alias("b"))
         .where(F.col("a") != F.col("b")).distinct().localCheckpoint())
    n_edges, unsettled, rounds = *counts(E), 0
    while True:
        if n_edges - unsettled <= single_task_edges:
            stars = E.where(F.col("a") != F.col("b")).repartition(1) \
                .mapInArrow(_close_in_one_task, spark_schema(STAR_SCHEMA)).localCheckpoint()
            return stars, {"rounds": rounds, "one_task_edges": n_edges - unsettled}
        if rounds >= max_rounds:
            raise RuntimeError(f"internal error: connected components did not converge in {max_rounds} rounds")
        E = star_round(E.where(F.col("a") != F.col("b"))).localCheckpoint()
        rounds += 1
        n_edges, unsettled = counts(E)
        if not unsettled:  # the input of this round already was stars: it is its own output
            return E, {"rounds": rounds, "one_task_edges": 0}


# ----------------------------------------------------------------------------------- driver
@contextlib.contextmanager
def task_errors_as_one_line():
    """Re-raise a task's InputError as one line (Spark wraps it in a Java/Python traceback)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - anything else propagates unchanged
        found = re.search(r"(?:InputError|ConfigError): ([^\n]+)", str(exc))
        if found and not isinstance(exc, InputError):
            raise InputError(found.group(1).strip()) from None
        raise


def shard_layout(shards) -> int:
    """The shard size of a kNN shard list (``data.artifacts.KnnShard``), checked to be the fixed
    blocks of ``data.artifacts.shard_bounds``."""
    from ..data.artifacts import shard_bounds

    n = shards[-1].stop if shards else 0
    rows = max(1, shards[0].stop - shards[0].start) if shards else 1
    if [(s.start, s.stop) for s in shards] != shard_bounds(n, rows):
        raise InputError("the kNN manifest's shards are not fixed blocks of global document index; rerun the knn stage")
    return rows


def check_shard_files(shards) -> int:
    """Every shard's ``I``/``D`` file exists and holds its rows (``.npy`` headers only, O(shards));
    returns k (the widest shard's columns)."""
    k = 0
    for s in shards:
        for path in (s.I, s.D):
            try:
                shape = np.load(path, mmap_mode="r").shape
            except (OSError, ValueError) as exc:
                raise InputError(f"kNN shard file {path} cannot be read ({exc.__class__.__name__}); rerun the knn stage") from None
            if len(shape) != 2 or shape[0] != s.stop - s.start:
                raise InputError(f"kNN shard file {path} has shape {shape}, the manifest says {s.stop - s.start} rows; "
                                 "rerun the knn stage")
            k = max(k, int(shape[1]))
    return k


def run_distributed_dedup(spark, *, source: str, shards, docs_files: list[Path], threshold: float,
                          out_root: Path, n_tasks: int | None = None, single_task_edges: int | None = None) -> dict:
    """Semantic dedup of one source with Spark (module docstring). ``shards``: the source's
    :class:`~mixweave.data.artifacts.KnnShard` list; ``docs_files``: its ingest files in manifest
    order (for the pairs' doc ids). Writes ``keep-SSSSS.npy`` and ``pairs-SSSSS.parquet`` per shard
    under ``out_root/source``. ``single_task_edges``: close the components in one task once at
    most this many edges remain (default: a kNN shard's entry count, shard rows x k, so that task
    holds about what an edge task holds). Returns counts, the manifest's shard list and timings."""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from ..data.progress import spark_progress
    from .ingest import spark_schema

    if not -1.0 <= float(threshold) <= 1.0:
        from ..errors import ConfigError
        raise ConfigError(f"dedup cosine threshold must be in [-1, 1], got {threshold}")
    t0 = time.perf_counter()
    shard_rows = shard_layout(shards)
    k = check_shard_files(shards)
    if single_task_edges is None:
        single_task_edges = shard_rows * max(k, 1)
    n_docs = shards[-1].stop
    offsets, total = [], 0
    for path in docs_files:
        offsets.append({"path": str(Path(path).resolve()), "offset": total})
        total += pq.ParquetFile(path).metadata.num_rows
    if total != n_docs:
        raise InputError(f"dedup {source}: the kNN graph has {n_docs} documents, the ingest files {total}; "
                         "rerun embed and knn")
    bounds = [(s.start, s.stop) for s in shards]
    tasks = int(n_tasks or max(1, min(len(shards), 4 * spark.sparkContext.defaultParallelism)))
    shard_rows_table = pa.table({"shard": np.arange(len(shards), dtype=np.int64),
                                 "start": [s.start for s in shards], "stop": [s.stop for s in shards],
                                 "I": [str(Path(s.I).resolve()) for s in shards],
                                 "D": [str(Path(s.D).resolve()) for s in shards]}, schema=SHARD_SCHEMA)
    with spark_progress(spark, "dedup"), task_errors_as_one_line():
        frame = spark.createDataFrame(shard_rows_table.to_pandas()).repartition(tasks, "shard")
        edges = frame.mapInArrow(_emit_edges(int(n_docs), float(threshold)), spark_schema(EDGE_SCHEMA)).localCheckpoint()
        t_edges = time.perf_counter()
        stars, cc = star_components(edges.where(F.col("kind") == STAR).select("a", "b"),
                                    single_task_edges=int(single_task_edges))
        t_cc = time.perf_counter()
        pairs = edges.where(F.col("kind") == PAIR).groupBy("a", "b").agg(F.max("cosine").alias("cosine"))
        if offsets:  # doc ids of the pairs' documents only: one lookup task per ingest file, no shuffle of all ids
            paths, starts = [o["path"] for o in offsets], [o["offset"] for o in offsets]
            wanted = pairs.select(F.col("a").alias("idx")).unionAll(pairs.select(F.col("b").alias("idx"))).distinct()
            ids = (wanted.mapInArrow(_file_of(starts), spark_schema(WANT_SCHEMA))
                   .repartition(max(1, min(len(paths), tasks)), "file").sortWithinPartitions("file", "idx")
                   .mapInArrow(_look_up_ids(paths, starts), spark_schema(ID_SCHEMA)))
            pairs = (pairs.join(ids.select(F.col("idx").alias("a"), F.col("doc_id").alias("doc_id_a")), "a", "left")
                     .join(ids.select(F.col("idx").alias("b"), F.col("doc_id").alias("doc_id_b")), "b", "left"))
        else:
            pairs = pairs.withColumn("doc_id_a", F.lit(None).cast("string")).withColumn("doc_id_b", F.lit(None).cast("string"))
        none_f, none_s = F.lit(None).cast("float"), F.lit(None).cast("string")
        cols = ["shard", "kind", "a", "b", "cosine", "doc_id_a", "doc_id_b"]
        marks = spark.range(len(shards)).select(F.col("id").alias("shard"), F.lit(MARK).alias("kind"),
                                                F.lit(None).cast("long").alias("a"), F.lit(None).cast("long").alias("b"),
                                                none_f.alias("cosine"), none_s.alias("doc_id_a"), none_s.alias("doc_id_b"))
        leaves = stars.select(F.expr(f"b div {shard_rows}").alias("shard"), F.lit(LEAF).alias("kind"),
                              F.col("b").alias("a"), F.lit(None).cast("long").alias("b"), none_f.alias("cosine"),
                              none_s.alias("doc_id_a"), none_s.alias("doc_id_b"))
        rows = pairs.select(F.expr(f"a div {shard_rows}").alias("shard"), F.lit(ROW).alias("kind"), *cols[2:])
        written = (marks.select(*cols).unionAll(leaves.select(*cols)).unionAll(rows.select(*cols))
                   .repartition(tasks, "shard").sortWithinPartitions("shard", "kind", "a", "b")
                   .mapInArrow(_write_shards(str(Path(out_root).resolve()), source, bounds), spark_schema(DONE_SCHEMA))
                   .toArrow().sort_by("shard"))
    t_write = time.perf_counter()
    done = written.to_pylist()
    if [d["shard"] for d in done] != list(range(len(shards))):
        raise RuntimeError(f"dedup {source}: {len(done)} of {len(shards)} shards were written")
    entries = [{"start": s.start, "stop": s.stop, "keep": keep_name(source, i), "pairs": pairs_name(source, i)}
               for i, s in enumerate(shards)]
    kept = sum(d["kept"] for d in done)
    if sum(d["n_docs"] for d in done) != n_docs:
        raise RuntimeError(f"dedup {source}: the keep shards hold {sum(d['n_docs'] for d in done)} of {n_docs} documents")
    info = {"n_docs": int(n_docs), "kept": int(kept), "removed": int(n_docs - kept),
            "pairs": int(sum(d["pairs"] for d in done)), "shards": entries, "cc_rounds": cc["rounds"],
            "cc_one_task_edges": cc["one_task_edges"],
            "spark_tasks": tasks, "edges_s": round(t_edges - t0, 3), "components_s": round(t_cc - t_edges, 3),
            "write_s": round(t_write - t_cc, 3)}
    LOG.info("dedup %s (spark): %d docs, %d pairs, removed %d (%d component rounds, %d edges closed in one task), %.1fs",
             source, n_docs, info["pairs"], info["removed"], cc["rounds"], cc["one_task_edges"], t_write - t0)
    return info
