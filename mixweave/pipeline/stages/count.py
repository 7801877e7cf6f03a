"""The ``count`` stage: per-source docs, tokens, bytes, bytes per token and length histogram -> stats.json."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ...data.manifest import require_manifest, write_json_atomic
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


STATS_SCHEMA_VERSION = 1


def run_count_stage(ctx: StageContext, tmp: Path) -> StageResult:
    """stats.json: per-source docs, tokens, bytes, bytes per token and log2 token-length histogram.

    ``bytes_per_token`` = n_bytes / n_tokens of the source's ingested documents (UTF-8 bytes of the
    text per tokenizer token; None for a source without tokens): what turns a byte budget
    (``mix.unit: bytes``, Byte Latent Transformer) into tokens and back.

    Ingest already computes these from the exact rows it wrote (``summarize`` in the ingest job),
    so this stage projects the ingest manifest instead of re-reading every document; `mixweave
    verify` is what checks the files against that manifest."""
    started = time.perf_counter()
    ingest_dir = ctx.artifact("ingest")
    ingest_manifest = require_manifest(ingest_dir, "ingest")
    keys = ("paths", "n_docs", "n_tokens", "n_bytes", "n_quarantined", "quarantine_reasons", "length_histogram")
    stats_sources = {
        name: {**{k: info[k] for k in keys},
               "files": [os.path.relpath(ingest_dir / f, ctx.artifact("count")) for f in info["files"]]}
        for name, info in ingest_manifest["sources"].items()
    }
    for entry in stats_sources.values():
        entry["bytes_per_token"] = entry["n_bytes"] / entry["n_tokens"] if entry["n_tokens"] else None
    stats = {
        "schema_version": STATS_SCHEMA_VERSION,
        "tokenizer": ingest_manifest["tokenizer"],
        "sources": stats_sources,
        "totals": {k: sum(s[k] for s in stats_sources.values()) for k in ("n_docs", "n_tokens", "n_bytes", "n_quarantined")},
    }
    write_json_atomic(tmp / "stats.json", stats)
    return StageResult(counts=stats["totals"], timings={"count_s": round(time.perf_counter() - started, 3)})


STAGE = Stage("count", ("ingest",), 1, lambda c: {}, run_count_stage,
              describe="per-source docs, tokens, bytes, length histogram -> stats.json")
