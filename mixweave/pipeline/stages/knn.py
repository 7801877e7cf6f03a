"""The ``knn`` stage: FAISS k nearest neighbours per source, on the driver."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ...data.artifacts import load_embeddings, shard_bounds, shard_file
from ...data.manifest import require_manifest
from ...data.progress import Progress
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def run_knn_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...retrieval import knn
    from ...retrieval.knn import choose_method, sampled_recall_at_k

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
                entry["recall_at_k"] = round(sampled_recall_at_k(X, I, seed=ctx.config.seed), 4)
            entry["shards"] = write_knn_shards(tmp, source, I, D, o.shard_rows)
            per_source[source] = entry
            progress.update(1, docs=n)
    return StageResult(counts={"n_docs": sum(e["n_docs"] for e in per_source.values())},
                       timings={"knn_s": round(time.perf_counter() - started, 3)}, extra={"knn": per_source})


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


STAGE = Stage("knn", ("embed",), 2,
              lambda c: {"k": c.order.k, "method": c.order.knn_method, "seed": c.seed, "shard_rows": c.order.shard_rows},
              run_knn_stage, enabled=lambda c: c.order is not None, describe="FAISS kNN per source")
