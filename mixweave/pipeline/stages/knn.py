"""The ``knn`` stage: FAISS k nearest neighbours per source, on the driver."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ...data.artifacts import load_embeddings
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
            (tmp / source).mkdir(parents=True, exist_ok=True)
            np.save(tmp / source / "I.npy", I)
            np.save(tmp / source / "D.npy", D)
            per_source[source] = entry
            progress.update(1, docs=n)
    return StageResult(counts={"n_docs": sum(e["n_docs"] for e in per_source.values())},
                       timings={"knn_s": round(time.perf_counter() - started, 3)}, extra={"knn": per_source})


STAGE = Stage("knn", ("embed",), 1, lambda c: {"k": c.order.k, "method": c.order.knn_method, "seed": c.seed},
              run_knn_stage, enabled=lambda c: c.order is not None, describe="FAISS kNN per source")
