"""The ``embed`` stage: sentence embeddings of every document, a Spark job over fixed row-group units."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ...data.artifacts import docs_files_by_source
from ...data.typed import to_plain
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def run_embed_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...jobs.embed import plan_units, run_embed

    o = ctx.config.order
    ingest_dir = ctx.artifact("ingest")
    files = docs_files_by_source(ingest_dir)
    units = plan_units(files, ingest_dir)
    started = time.perf_counter()
    run_embed(ctx.spark(), units=units, out_root=tmp, encoder=o.encoder, max_tokens=o.max_tokens,
                     batch_size=o.batch_size, torch_threads=o.torch_threads, device=o.device)
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
        timings={"embed_s": round(seconds, 3), "docs_per_s": round(n_docs / seconds, 1) if seconds else None},
        extra={"embeddings": per_source, "encoder": o.encoder},
    )


STAGE = Stage("embed", ("ingest",), 1,
              lambda c: {k: v for k, v in to_plain(c.order).items() if k in ("encoder", "max_tokens", "batch_size", "torch_threads")},
              run_embed_stage, enabled=lambda c: c.order is not None, describe="sentence embeddings (Spark)")
