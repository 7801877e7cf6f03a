"""The ``ingest`` stage: read sources, normalise, tokenise, quarantine bad records (a Spark job)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ...data.typed import to_plain
from ..config import RunConfig
from ..runner import Stage, StageContext, StageResult

LOG = logging.getLogger(__name__)


def ingest_config_slice(config: RunConfig) -> dict:
    return {"sources": to_plain(config.sources), "tokenizer": to_plain(config.tokenizer), "ingest": to_plain(config.ingest)}


def input_files_fingerprint(config: RunConfig) -> list:
    """Size and mtime of every input file, so an edited input re-runs ingest.

    Files under the run's out folder (and in any mixweave stage folder) are not inputs, exactly as
    in :func:`run_ingest_stage`, so a run's own output never changes its ingest fingerprint.
    """
    from ...jobs.ingest import SourceSpec, expand_sources

    specs = {n: SourceSpec(n, s.paths, s.text_field, s.id_field) for n, s in config.sources.items()}
    rows = []
    for f in expand_sources(specs, exclude=(str(Path(config.out).resolve()),)):
        try:
            st = os.stat(f["path"])
            rows.append([f["path"], st.st_size, st.st_mtime_ns])
        except OSError:  # a dangling symlink: quarantined at ingest; its presence still counts
            rows.append([f["path"], None, None])
    return rows


def run_ingest_stage(ctx: StageContext, tmp: Path) -> StageResult:
    from ...data.tokenizer import load_tokenizer
    from ...jobs.ingest import SourceSpec, run_ingest

    config = ctx.config
    tokenizer = load_tokenizer(config.tokenizer.path, config.tokenizer.pattern)
    specs = {n: SourceSpec(n, s.paths, s.text_field, s.id_field) for n, s in config.sources.items()}
    # a run never reads its own output: not the run folder, nor this stage's (possibly pinned) folder
    exclude = tuple(str(p.resolve()) for p in (ctx.out, ctx.artifact("ingest"), tmp))
    stats = run_ingest(
        ctx.spark(), sources=specs, out_root=tmp, tokenizer_path=config.tokenizer.path,
        tokenizer_pattern=config.tokenizer.pattern, max_doc_bytes=config.ingest.max_doc_bytes,
        target_file_mb=config.ingest.target_file_mb, partitions=config.spark.partitions, exclude=exclude,
    )
    drops = {name: s["quarantine_reasons"] for name, s in stats["sources"].items()}
    counts = dict(stats["totals"])
    counts["input_equals_kept_plus_quarantined"] = counts["n_input"] == counts["n_docs"] + counts["n_quarantined"]
    return StageResult(
        counts=counts, drops=drops, timings=stats["timings"],
        extra={"tokenizer": tokenizer.info, "sources": stats["sources"], "input_bytes": stats["input_bytes"],
               "n_files_read": stats["n_files_read"], "spark_master": ctx.spark().sparkContext.master},
    )


STAGE = Stage("ingest", (), 1, ingest_config_slice, run_ingest_stage, extra_fingerprint=input_files_fingerprint,
              describe="read sources, normalise, tokenise, quarantine bad records")
