"""The ``dedup`` stage: semantic near-duplicates from the kNN graph, one kept per component."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...data.artifacts import docs_files_by_source, knn_shards, load_knn, read_source_column
from ...data.manifest import require_manifest
from ...data.progress import Progress
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def run_dedup_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...retrieval import semantic_dedup

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
            ids_arr = np.asarray(read_source_column(docs_files[source], "doc_id").to_pylist(), dtype=object)
            (tmp / source).mkdir(parents=True, exist_ok=True)
            shards = []
            for index, shard in enumerate(knn_shards(knn_dir, source)):  # keep shards follow the kNN shards
                name = f"{source}/keep-{index:05d}.npy"
                np.save(tmp / name, np.ascontiguousarray(result.keep[shard.start:shard.stop]))
                shards.append({"start": shard.start, "stop": shard.stop, "keep": name})
            pairs = result.pairs.reshape(-1, 2) if result.pairs.size else np.zeros((0, 2), np.int64)
            pq.write_table(pa.table({
                "a": pa.array(pairs[:, 0], pa.int64()), "b": pa.array(pairs[:, 1], pa.int64()),
                "doc_id_a": pa.array(ids_arr[pairs[:, 0]].tolist() if len(pairs) else [], pa.string()),
                "doc_id_b": pa.array(ids_arr[pairs[:, 1]].tolist() if len(pairs) else [], pa.string()),
                "cosine": pa.array(np.asarray(result.pair_cosine, np.float32).reshape(-1)),
            }), tmp / source / "pairs.parquet", compression="zstd")
            removed = int((~result.keep).sum())
            per_source[source] = {"n_docs": int(result.keep.size), "kept": int(result.keep.sum()), "removed": removed,
                                  "pairs": int(len(pairs)),
                                  "shards": shards}
            drops[source] = {"semantic_duplicate": removed}
            progress.update(1, docs=int(result.keep.size))
    return StageResult(
        counts={k: sum(e[k] for e in per_source.values()) for k in ("n_docs", "kept", "removed", "pairs")},
        drops=drops, extra={"dedup": per_source, "threshold": o.dedup_cosine},
    )


STAGE = Stage("dedup", ("knn", "ingest"), 2, lambda c: {"dedup_cosine": c.order.dedup_cosine}, run_dedup_stage,
              enabled=lambda c: c.order is not None, describe="semantic near-duplicate removal")
