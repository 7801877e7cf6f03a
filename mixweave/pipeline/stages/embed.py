"""The ``embed`` stage: sentence embeddings of every document over fixed row-group units: a Spark job
for runs of at least ``order.embed_distributed_min_docs`` documents, smaller runs in this process (no
JVM; the same units, encoder threads and bytes).

The fingerprint holds the encoder settings, the resolved backend (``auto`` -> torch on CUDA, the
CPU default otherwise) and the cache key of its export (model folder sha256 + recipe), so a
changed model, backend or export recipe re-runs the stage; the manifest records them and, for the
lossy backends, their measured agreement with torch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ...data.artifacts import docs_files_by_source
from ...data.typed import to_plain
from ...retrieval.encoder_backends import resolve_backend
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def run_embed_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...jobs.embed import plan_units, run_embed, run_embed_in_process

    o = ctx.config.order
    ingest_dir = ctx.artifact("ingest")
    files = docs_files_by_source(ingest_dir)
    units = plan_units(files, ingest_dir)
    on_spark = sum(u["stop"] - u["start"] for u in units) >= o.embed_distributed_min_docs
    started = time.perf_counter()
    backend = resolve_backend(o.encoder_backend, o.device)
    settings = dict(units=units, out_root=tmp, encoder=o.encoder, max_tokens=o.max_tokens, batch_size=o.batch_size,
                    torch_threads=o.torch_threads, device=o.device, backend=backend)
    done = run_embed(ctx.spark(), **settings) if on_spark else run_embed_in_process(**settings)
    seconds = time.perf_counter() - started
    per_source = {}
    for source in sorted(files):
        mine = [u["out_file"] for u in units if u["source"] == source]
        rows = sum(np.load(tmp / f, mmap_mode="r").shape[0] for f in mine)
        dim = int(np.load(tmp / mine[0], mmap_mode="r").shape[1]) if mine else 0
        per_source[source] = {"files": mine, "n_docs": int(rows), "dim": dim}
    n_docs = sum(s["n_docs"] for s in per_source.values())
    return StageResult(
        counts={"n_docs": n_docs, "units": len(units)},
        timings={"embed_s": round(seconds, 3), "docs_per_s": round(n_docs / seconds, 1) if seconds else None,
                 "encoder_s": done["encoder_seconds"], "slowest_unit_s": done["slowest_unit_s"]},
        extra={"embeddings": per_source, "encoder": o.encoder, "path": "spark" if on_spark else "in_process",
               **encoder_identity(o)},
    )


def encoder_identity(o) -> dict:
    """Resolved backend, export cache key and (lossy backends) measured quality vs torch."""
    from ...retrieval.encoder_backends import MEASURED_QUALITY, export_key
    from ...retrieval.encoders import resolve_encoder_path

    backend = resolve_backend(o.encoder_backend, o.device)
    out = {"backend": backend, "export": export_key(resolve_encoder_path(o.encoder).resolve(), backend)}
    if backend in MEASURED_QUALITY:
        out["quality_vs_torch"] = MEASURED_QUALITY[backend]
    return out


STAGE = Stage("embed", ("ingest",), 1,
              lambda c: {k: v for k, v in to_plain(c.order).items()
                         if k in ("encoder", "encoder_backend", "max_tokens", "batch_size", "torch_threads")},
              run_embed_stage, extra_fingerprint=lambda c: encoder_identity(c.order) if c.order is not None else None,
              enabled=lambda c: c.order is not None, describe="sentence embeddings")
