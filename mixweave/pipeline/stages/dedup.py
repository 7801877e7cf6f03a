"""The ``dedup`` stage: semantic near-duplicates from the kNN graph, one kept per component.

Sources with at least ``order.distributed_min_docs`` documents run as a Spark job over the kNN
shards (:func:`mixweave.jobs.dedup.run_distributed_dedup`: the driver holds shard metadata only);
smaller ones run :func:`mixweave.retrieval.semantic_dedup` in process. Both write, per kNN shard,
``<source>/keep-SSSSS.npy`` (bool) and ``<source>/pairs-SSSSS.parquet`` (the pairs whose first
document is in the shard: a, b, doc_id_a, doc_id_b, cosine, sorted by (a, b)), byte-identical on
the same data, and record which path ran (``"path": "spark" | "local"``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ...data.artifacts import docs_files_by_source, knn_shards, load_knn, read_source_column
from ...data.manifest import require_manifest
from ...data.progress import Progress
from ..runner import Stage, StageContext, StageResult, each_source

LOG = logging.getLogger(__name__)


def dedup_local(knn_dir: Path, source: str, docs_files: list[Path], threshold: float, tmp: Path) -> dict:
    """The in-process path for one source: whole kNN arrays, union-find, the same shard files."""
    from ...jobs.dedup import check_shard_files, shard_layout, write_dedup_shard
    from ...retrieval import semantic_dedup

    shards = knn_shards(knn_dir, source)
    shard_layout(shards)
    check_shard_files(shards)
    I, D = load_knn(knn_dir, source)
    result = semantic_dedup(I, D, threshold=threshold)
    ids = np.asarray(read_source_column(docs_files, "doc_id").to_pylist(), dtype=object)
    pairs = result.pairs.reshape(-1, 2)
    cuts = np.searchsorted(pairs[:, 0], [s.start for s in shards] + [shards[-1].stop])
    entries = []
    for index, shard in enumerate(shards):  # keep and pair shards follow the kNN shards
        a, b = pairs[cuts[index]:cuts[index + 1], 0], pairs[cuts[index]:cuts[index + 1], 1]
        names = write_dedup_shard(tmp, source, index, result.keep[shard.start:shard.stop], a, b,
                                  ids[a].tolist(), ids[b].tolist(), result.pair_cosine[cuts[index]:cuts[index + 1]])
        entries.append({"start": shard.start, "stop": shard.stop, **names})
    return {"n_docs": int(result.keep.size), "kept": int(result.keep.sum()), "removed": result.n_removed,
            "pairs": int(len(pairs)), "shards": entries}


def run_dedup_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...jobs.dedup import run_distributed_dedup

    o = ctx.config.order
    knn_dir = ctx.artifact("knn")
    ingest_dir = ctx.artifact("ingest")
    sources = require_manifest(knn_dir, "knn")["knn"]
    docs_files = docs_files_by_source(ingest_dir)
    shards = {source: knn_shards(knn_dir, source) for source in sources}

    def on_spark(source: str) -> bool:
        return shards[source][-1].stop >= o.distributed_min_docs

    def one(source: str) -> dict:
        if on_spark(source):
            info = run_distributed_dedup(ctx.spark(), source=source, shards=shards[source],
                                         docs_files=docs_files[source], threshold=o.dedup_cosine, out_root=tmp)
            return {"path": "spark", **info}
        return {"path": "local", **dedup_local(knn_dir, source, docs_files[source], o.dedup_cosine, tmp)}

    with Progress(len(sources), unit="source", label="dedup") as progress:
        per_source, at_once = each_source(ctx, sources, one, on_spark=on_spark,
                                          done=lambda s, entry: progress.update(1, docs=entry["n_docs"]))
    return StageResult(
        counts={k: sum(e[k] for e in per_source.values()) for k in ("n_docs", "kept", "removed", "pairs")},
        drops={s: {"semantic_duplicate": e["removed"]} for s, e in per_source.items()},
        timings={"spark_sources_at_once": at_once}, extra={"dedup": per_source, "threshold": o.dedup_cosine},
    )


STAGE = Stage("dedup", ("knn", "ingest"), 3, lambda c: {"dedup_cosine": c.order.dedup_cosine}, run_dedup_stage,
              enabled=lambda c: c.order is not None, describe="semantic near-duplicate removal")
